//! End to end through Docker: dockerd 26.1.5 (Debian 13) on a private containerd (1.7.24, else 1.6.20), the payload
//! image loaded with `docker load`, and a fixed script of docker operations run with `--runtime io.containerd.runc.v2`
//! (the reference) and `--runtime io.containerd.mock.v1`. Docker hands such a name to containerd verbatim, and
//! containerd resolves it on its own PATH (the lab's `shims/` first). A runtime given as an absolute path must be
//! refused by Docker ("unknown or invalid runtime name"). Passes when the mock's per-step outcomes equal runc's.
//!
//! Skips with a printed reason when not root, when dockerd/docker or containerd are not installed, or when the mock
//! shim is not built.
mod daemon;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use daemon::docker::Docker;
use daemon::image::{write_payload_archive, DOCKER_IMAGE};
use daemon::{mock_binary, run_tests, Comparison, Daemon, Lab, NotStarted, StepCell, Verdict};

const REFERENCE: &str = "io.containerd.runc.v2";
const MOCK: &str = "io.containerd.mock.v1";
const SHORT: Duration = Duration::from_secs(20);

type Step = fn(&Run) -> Result<String, String>;

const STEPS: &[(&str, Step)] = &[
    ("run_rm_echo", run_rm_echo),
    ("exit_status", exit_status),
    ("stdin_cat", stdin_cat),
    ("run_tty", run_tty),
    ("detached_exec", detached_exec),
    ("stop_trapped", stop_trapped),
    ("pause_top_stats", pause_top_stats),
    ("path_runtime_refused", path_runtime_refused),
];

struct Run<'a> {
    lab: &'a Lab,
    docker: &'a Docker,
    runtime: &'a str,
    /// The shim binary behind `runtime`, for the by-path refusal.
    binary: PathBuf,
    tag: &'a str,
}

impl Run<'_> {
    fn name(&self, step: &str) -> String {
        let name = self.lab.new_id(&format!("{}-{step}", self.tag));
        name
    }

    /// `docker run FLAGS --runtime R --network none IMAGE /payload STEPS...`
    fn run_args(&self, flags: &[&str], steps: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = vec!["run".into()];
        args.extend(flags.iter().map(|s| s.to_string()));
        args.extend([
            "--runtime".into(),
            self.runtime.into(),
            "--network".into(),
            "none".into(),
            DOCKER_IMAGE.into(),
            "/payload".into(),
        ]);
        args.extend(steps.iter().map(|s| s.to_string()));
        args
    }

    fn docker(&self, args: &[String]) -> daemon::Output {
        self.docker.docker(&refs(args))
    }

    fn remove(&self, name: &str) {
        let _ = self.docker.docker(&["rm", "-f", name]);
    }
}

fn refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

fn expect(condition: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if condition {
        Ok(())
    } else {
        Err(what())
    }
}

fn run_rm_echo(run: &Run) -> Result<String, String> {
    let out = run.docker(&run.run_args(&["--rm"], &["echo", "hi"])).ok()?;
    expect(out.stdout == "hi\n", || format!("stdout {:?}, expected \"hi\\n\"", out.stdout))?;
    Ok("printed hi".into())
}

fn exit_status(run: &Run) -> Result<String, String> {
    let out = run.docker(&run.run_args(&["--rm"], &["exit", "3"]));
    expect(out.code == Some(3), || format!("expected docker to exit 3: {}", out.describe()))?;
    Ok("docker exited 3".into())
}

fn stdin_cat(run: &Run) -> Result<String, String> {
    let input = b"through stdin\nand back\n";
    let args = run.run_args(&["--rm", "-i"], &["cat"]);
    let out = run.docker.docker_with(&refs(&args), Some(input), SHORT).ok()?;
    expect(out.stdout.as_bytes() == input, || format!("stdout {:?}, expected the input back", out.stdout))?;
    Ok("stdin echoed".into())
}

fn run_tty(run: &Run) -> Result<String, String> {
    let args = run.run_args(&["--rm", "-it"], &["sleep", "0.5", "tty", "echo", "hi"]);
    let out = run.docker.docker_tty(&refs(&args), SHORT);
    let text = out.stdout.replace('\r', "");
    expect(out.success(), || out.describe())?;
    expect(text.contains("tty stdin=true stdout=true rows=24 cols=80") && text.contains("hi\n"), || {
        format!("terminal showed {text:?}")
    })?;
    Ok("a 24x80 terminal".into())
}

fn detached_exec(run: &Run) -> Result<String, String> {
    let name = run.name("exec");
    let result: Result<String, String> = (|| {
        run.docker(&run.run_args(&["-d", "--name", &name], &["forever"])).ok()?;
        let out = run.docker.docker(&["exec", &name, "/payload", "echo", "inexec"]).ok()?;
        expect(out.stdout == "inexec\n", || format!("exec stdout {:?}", out.stdout))?;
        let out = run.docker.docker(&["exec", &name, "/payload", "exit", "5"]);
        expect(out.code == Some(5), || format!("expected exec to exit 5: {}", out.describe()))?;
        let out = run.docker.docker_tty(&["exec", "-it", &name, "/payload", "sleep", "0.5", "tty"], SHORT);
        let text = out.stdout.replace('\r', "");
        expect(out.success() && text.contains("tty stdin=true stdout=true rows=24 cols=80"), || {
            format!("exec -it: {} showed {text:?}", out.describe())
        })?;
        let state = run.docker.docker(&["inspect", "-f", "{{.State.Status}}", &name]).ok()?;
        expect(state.stdout.trim() == "running", || format!("after the execs: {}", state.stdout.trim()))?;
        run.docker.docker(&["rm", "-f", &name]).ok()?;
        Ok("exec output, exit 5, exec -it".to_owned())
    })();
    if result.is_err() {
        run.remove(&name);
    }
    result
}

fn stop_trapped(run: &Run) -> Result<String, String> {
    let name = run.name("stop");
    let result: Result<String, String> = (|| {
        run.docker(&run.run_args(&["-d", "--name", &name], &["trap", "15", "7", "forever"])).ok()?;
        run.docker.docker(&["stop", "-t", "10", &name]).ok()?;
        let code = run.docker.docker(&["inspect", "-f", "{{.State.ExitCode}}", &name]).ok()?;
        expect(code.stdout.trim() == "7", || format!("exit code after docker stop: {:?}", code.stdout.trim()))?;
        run.docker.docker(&["rm", &name]).ok()?;
        Ok("SIGTERM trapped: exit 7".to_owned())
    })();
    if result.is_err() {
        run.remove(&name);
    }
    result
}

fn pause_top_stats(run: &Run) -> Result<String, String> {
    let name = run.name("pause");
    let result: Result<String, String> = (|| {
        run.docker(&run.run_args(&["-d", "--name", &name], &["forever"])).ok()?;
        run.docker.docker(&["pause", &name]).ok()?;
        let state = run.docker.docker(&["inspect", "-f", "{{.State.Status}}", &name]).ok()?;
        expect(state.stdout.trim() == "paused", || format!("after docker pause: {}", state.stdout.trim()))?;
        run.docker.docker(&["unpause", &name]).ok()?;
        let top = run.docker.docker(&["top", &name]).ok()?;
        expect(top.stdout.contains("/payload forever"), || format!("docker top: {:?}", top.stdout))?;
        let stats = run.docker.docker(&["stats", "--no-stream", "--format", "{{.MemUsage}}", &name]).ok()?;
        expect(!stats.stdout.trim().is_empty() && !stats.stdout.contains("0B / 0B"), || {
            format!("docker stats: {:?}", stats.stdout)
        })?;
        run.docker.docker(&["rm", "-f", &name]).ok()?;
        Ok(format!("paused, top, stats {}", stats.stdout.trim()))
    })();
    if result.is_err() {
        let _ = run.docker.docker(&["unpause", &name]);
        run.remove(&name);
    }
    result
}

fn path_runtime_refused(run: &Run) -> Result<String, String> {
    let path = run.binary.to_string_lossy().into_owned();
    let args = vec!["run", "--rm", "--runtime", &path, "--network", "none", DOCKER_IMAGE, "/payload", "echo", "hi"];
    let out = run.docker.docker(&args);
    let refused = !out.success() && out.stderr.contains("unknown or invalid runtime name");
    expect(refused, || format!("expected Docker to refuse a runtime path: {}", out.describe()))?;
    Ok("refused: unknown or invalid runtime name".into())
}

/// Nothing of the step left: docker containers, tasks in dockerd's namespace, shims, mounts under the lab.
fn leftovers(lab: &Lab, docker: &Docker) -> Vec<String> {
    let started = Instant::now();
    loop {
        lab.record_sockets();
        let mut found = Vec::new();
        let containers = docker.docker(&["ps", "-aq"]).stdout;
        if !containers.trim().is_empty() {
            found.push(format!("docker containers {:?}", containers.split_whitespace().collect::<Vec<_>>()));
        }
        let tasks = lab.ctr_in(docker.namespace(), &["task", "ls", "-q"]).stdout;
        if !tasks.trim().is_empty() {
            found.push(format!("tasks {:?}", tasks.split_whitespace().collect::<Vec<_>>()));
        }
        for pid in lab.shim_pids() {
            found.push(format!("shim process {pid} ({})", daemon::cmdline(pid).join(" ")));
        }
        let data_root = docker.data_root().to_string_lossy().into_owned();
        for mount in lab.mounts().into_iter().filter(|m| *m != data_root) {
            found.push(format!("mount {mount}"));
        }
        if found.is_empty() || started.elapsed() > Duration::from_secs(3) {
            return found;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sweep(lab: &Lab, docker: &Docker) {
    let containers = docker.docker(&["ps", "-aq"]).stdout;
    for id in containers.split_whitespace() {
        let _ = docker.docker(&["unpause", id]);
        let _ = docker.docker(&["rm", "-f", id]);
    }
    for id in lab.ctr_in(docker.namespace(), &["task", "ls", "-q"]).stdout.split_whitespace() {
        let _ = lab.ctr_in(docker.namespace(), &["task", "kill", "-a", "-s", "SIGKILL", id]);
        let _ = lab.ctr_in(docker.namespace(), &["task", "rm", "-f", id]);
    }
    for pid in lab.shim_pids() {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
    for socket in lab.leftover_sockets() {
        let _ = std::fs::remove_file(socket);
    }
    // What dockerd could not unmount (the step has failed already): container root filesystems.
    let data_root = docker.data_root().to_string_lossy().into_owned();
    for mount in lab.mounts().into_iter().filter(|m| *m != data_root) {
        let _ = nix::mount::umount2(mount.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
}

fn run_script(
    lab: &Lab,
    docker: &mut Docker,
    runtime: &str,
    binary: PathBuf,
    tag: &str,
) -> Vec<(Result<String, String>, Duration)> {
    let mut outcomes = Vec::new();
    for (_, step) in STEPS {
        let started = Instant::now();
        let run = Run { lab, docker, runtime, binary: binary.clone(), tag };
        let mut result = step(&run);
        if let Some(status) = docker.exited() {
            // dockerd died during the step: say so (with its panic), start it again for the next steps.
            let why = docker.panic_excerpt().unwrap_or_else(|| docker.log_tail(5));
            let relaunched =
                docker.launch(lab).err().map(|e| format!("; could not start it again: {e}")).unwrap_or_default();
            let text = format!("dockerd exited ({status}) during the step: {why}{relaunched}");
            result = match result {
                Ok(_) => Err(text),
                Err(error) => Err(format!("{text}; the step saw: {error}")),
            };
        }
        let docker = &*docker;
        let left = leftovers(lab, docker);
        if !left.is_empty() {
            sweep(lab, docker);
            let text = format!("left behind after the step: {}", left.join("; "));
            result = match result {
                Ok(_) => Err(text),
                Err(error) => Err(format!("{error}; {text}")),
            };
        }
        outcomes.push((result, started.elapsed()));
    }
    outcomes
}

fn main() {
    run_tests(&[("daemon_docker::docker_script", docker_script)])
}

fn docker_script() -> Verdict {
    let test = "dockerd 26";
    let mock = match mock_binary() {
        Ok(path) => path,
        Err(reason) => return Verdict::Skip(reason),
    };
    // dockerd 26 with the containerd it is packaged with; 1.6 where 1.7 is absent.
    let daemon = if Daemon::V1_7.binaries().is_ok() { Daemon::V1_7 } else { Daemon::V1_6 };
    let lab = match Lab::start(daemon) {
        Ok(lab) => lab,
        Err(NotStarted::Skip(reason)) => return Verdict::Skip(reason),
        Err(NotStarted::Failed(reason)) => return Verdict::Fail(reason),
    };
    lab.install_shim("containerd-shim-mock-v1", &mock).expect("linking the mock shim");
    let mut docker = match Docker::start(&lab) {
        Ok(docker) => docker,
        Err(NotStarted::Skip(reason)) => return Verdict::Skip(reason),
        Err(NotStarted::Failed(reason)) => return Verdict::Fail(reason),
    };
    let archive = lab.path("payload-image.tar");
    write_payload_archive(&archive).expect("writing the image archive");
    let loaded = docker.docker(&["load", "-i", &archive.to_string_lossy()]);
    if !(loaded.success() && loaded.stdout.contains(DOCKER_IMAGE)) {
        return Verdict::Fail(format!("{test}: docker load: {}", loaded.describe()));
    }

    let started = Instant::now();
    let reference = run_script(&lab, &mut docker, REFERENCE, lab.binaries.runc_shim.clone(), "runc");
    let candidate = run_script(&lab, &mut docker, MOCK, mock.clone(), "mock");
    let elapsed = started.elapsed();
    let version = docker.docker(&["version", "-f", "client {{.Client.Version}}, server {{.Server.Version}}"]).stdout;
    let dockerd_log = docker.log_tail(20);
    docker.stop();
    let containerd_log = lab.log_tail(20);
    let mut lab = lab;
    let notes = lab.cleanup();

    let cells = |outcomes: &[(Result<String, String>, Duration)]| -> Vec<StepCell> {
        outcomes
            .iter()
            .map(|o| StepCell {
                error: o.0.as_ref().err().cloned(),
                cell: format!("{} ({} ms)", if o.0.is_ok() { "ok" } else { "FAIL" }, o.1.as_millis()),
            })
            .collect()
    };
    let names: Vec<&str> = STEPS.iter().map(|(name, _)| *name).collect();
    let comparison = Comparison::new(
        format!("{test}: docker {} on {}, {elapsed:.1?}", version.trim(), daemon.label()),
        &names,
        (REFERENCE, &cells(&reference)),
        (MOCK, &cells(&candidate)),
    );
    println!("{}", comparison.table);
    comparison.verdict(
        test,
        REFERENCE,
        MOCK,
        &notes,
        &format!("--- dockerd log (tail) ---\n{dockerd_log}\n--- containerd log (tail) ---\n{containerd_log}"),
    )
}
