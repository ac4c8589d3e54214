//! End to end through a real, private containerd: a fixed script of `ctr` operations run with the Go runc v2 shim
//! (`io.containerd.runc.v2`, the reference) and with the bundled mock shim (`io.containerd.mock.v1`), on
//! containerd 1.6.20 and 1.7.24. Each step is a named function that returns Ok (what it saw) or Err (what happened,
//! with ctr's output); after every step the lab must be clean (no task, container, shim process, mount, shim socket
//! or bundle left), else the step fails and the lab is swept. The test prints both columns and passes when the
//! mock's per-step outcomes equal runc's.
//!
//! Skips with a printed reason (not a pass) when not root, when a daemon is not installed, or when the mock shim is
//! not built.
mod daemon;

use std::fs;
use std::time::{Duration, Instant};

use daemon::{mock_binary, run_tests, Daemon, Lab, NotStarted, Verdict};

const REFERENCE: &str = "io.containerd.runc.v2";
const MOCK: &str = "io.containerd.mock.v1";
const GROUP_LABEL: &str = "io.containerd.runc.v2.group";
const SETTLE: Duration = Duration::from_secs(5);
const SHORT: Duration = Duration::from_secs(10);

type Step = fn(&mut Run) -> Result<String, String>;

/// The script, in order.
const STEPS: &[(&str, Step)] = &[
    ("run_rm_echo", run_rm_echo),
    ("exit_status", exit_status),
    ("stdin_cat", stdin_cat),
    ("run_tty", run_tty),
    ("detached_exec", detached_exec),
    ("kill_sigterm_trapped", kill_sigterm_trapped),
    ("kill_sigkill_status", kill_sigkill_status),
    ("pause_resume_ps_metrics", pause_resume_ps_metrics),
    ("log_uri_file", log_uri_file),
    ("log_uri_binary", log_uri_binary),
    ("restart_running_task", restart_running_task),
    ("group_two_containers", group_two_containers),
];

/// One column's context: the lab, the runtime under test, the image.
struct Run<'a> {
    lab: &'a mut Lab,
    runtime: &'a str,
    image: &'a str,
    tag: &'a str,
}

impl Run<'_> {
    fn id(&self, step: &str) -> String {
        self.lab.new_id(&format!("{}-{}", self.tag, step.replace('_', "-")))
    }

    /// `ctr run [flags] --runtime R IMAGE ID /payload STEPS...`
    fn run_args(&self, flags: &[&str], id: &str, steps: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = vec!["run".into()];
        args.extend(flags.iter().map(|s| s.to_string()));
        args.extend(["--runtime".into(), self.runtime.into(), self.image.into(), id.into(), "/payload".into()]);
        args.extend(steps.iter().map(|s| s.to_string()));
        args
    }

    fn ctr(&self, args: &[String]) -> daemon::Output {
        self.lab.ctr(&refs(args))
    }

    /// Starts a detached task and waits for RUNNING.
    fn detached(&self, id: &str, flags: &[&str], steps: &[&str]) -> Result<(), String> {
        let mut all = vec!["-d"];
        all.extend_from_slice(flags);
        self.ctr(&self.run_args(&all, id, steps)).ok()?;
        self.lab.wait_status(id, "RUNNING", SETTLE)
    }

    /// SIGKILL, STOPPED, `task rm`, `container rm`: the end of every detached task.
    fn finish(&self, id: &str) -> Result<(), String> {
        self.lab.ctr(&["task", "kill", "-s", "SIGKILL", id]).ok()?;
        self.lab.wait_status(id, "STOPPED", SETTLE)?;
        let removed = self.lab.ctr(&["task", "rm", id]);
        if removed.timed_out || self.lab.task_status(id)?.is_some() {
            return Err(format!("task still there after {}", removed.describe()));
        }
        self.lab.ctr(&["container", "rm", id]).ok()?;
        Ok(())
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

/// Stdout without the terminal's carriage returns.
fn clean(text: &str) -> String {
    text.replace('\r', "")
}

fn run_rm_echo(run: &mut Run) -> Result<String, String> {
    let id = run.id("echo");
    let out = run.ctr(&run.run_args(&["--rm"], &id, &["echo", "hi"])).ok()?;
    expect(out.stdout == "hi\n", || format!("stdout {:?}, expected \"hi\\n\" ({})", out.stdout, out.describe()))?;
    Ok("printed hi".into())
}

fn exit_status(run: &mut Run) -> Result<String, String> {
    let id = run.id("exit");
    let out = run.ctr(&run.run_args(&["--rm"], &id, &["exit", "3"]));
    expect(out.code == Some(3), || format!("expected ctr to exit 3: {}", out.describe()))?;
    Ok("ctr exited 3".into())
}

fn stdin_cat(run: &mut Run) -> Result<String, String> {
    let id = run.id("cat");
    let input = b"through stdin\nand back\n";
    let args = run.run_args(&["--rm"], &id, &["cat"]);
    let out = run.lab.ctr_stdin_until(&refs(&args), input, "and back\n", SHORT).ok()?;
    expect(out.stdout.as_bytes() == input, || format!("stdout {:?}, expected the input back", out.stdout))?;
    Ok("stdin echoed".into())
}

fn run_tty(run: &mut Run) -> Result<String, String> {
    let id = run.id("tty");
    // ctr sets the console size once the task has started: the payload looks after a pause.
    let args = run.run_args(&["--rm", "-t"], &id, &["sleep", "0.5", "tty", "echo", "hi"]);
    let out = run.lab.ctr_tty(&refs(&args), SHORT);
    let text = clean(&out.stdout);
    expect(out.success(), || out.describe())?;
    expect(text.contains("tty stdin=true stdout=true rows=24 cols=80"), || format!("terminal showed {text:?}"))?;
    expect(text.contains("hi\n"), || format!("terminal showed {text:?}"))?;
    Ok("a 24x80 terminal".into())
}

fn detached_exec(run: &mut Run) -> Result<String, String> {
    let id = run.id("exec");
    let result: Result<String, String> = (|| {
        run.detached(&id, &[], &["forever"])?;
        let out = run.lab.ctr(&["task", "exec", "--exec-id", "x1", &id, "/payload", "echo", "inexec"]).ok()?;
        expect(out.stdout == "inexec\n", || format!("exec stdout {:?}", out.stdout))?;
        let out = run.lab.ctr(&["task", "exec", "--exec-id", "x2", &id, "/payload", "exit", "5"]);
        expect(out.code == Some(5), || format!("expected exec to exit 5: {}", out.describe()))?;
        let out = run.lab.ctr_tty(&["task", "exec", "-t", "--exec-id", "x3", &id, "/payload", "sleep", "0.5", "tty"], SHORT);
        let text = clean(&out.stdout);
        expect(out.success() && text.contains("tty stdin=true stdout=true rows=24 cols=80"), || {
            format!("exec -t: {} showed {text:?}", out.describe())
        })?;
        run.lab.wait_status(&id, "RUNNING", SETTLE)?;
        Ok("exec output, exit 5, exec -t".to_owned())
    })();
    result.and_then(|note| run.finish(&id).map(|_| note))
}

fn kill_sigterm_trapped(run: &mut Run) -> Result<String, String> {
    let id = run.id("term");
    let args = run.run_args(&["--rm"], &id, &["trap", "15", "7", "echo", "ready", "forever"]);
    let mut foreground = run.lab.ctr_background(&refs(&args))?;
    if !foreground.wait_for_output("ready", SHORT) {
        let out = foreground.wait(Duration::from_secs(1));
        return Err(format!("the task never printed ready: {}", out.describe()));
    }
    let kill = run.lab.ctr(&["task", "kill", &id]);
    let out = foreground.wait(SHORT);
    kill.ok()?;
    expect(out.code == Some(7), || format!("SIGTERM to a task trapping it with status 7: {}", out.describe()))?;
    Ok("ctr run exited 7".into())
}

fn kill_sigkill_status(run: &mut Run) -> Result<String, String> {
    let id = run.id("kill");
    run.detached(&id, &[], &["ignore", "15", "forever"])?;
    let result: Result<String, String> = (|| {
        run.lab.ctr(&["task", "kill", &id]).ok()?;
        std::thread::sleep(Duration::from_millis(300));
        let status = run.lab.task_status(&id)?;
        expect(status.as_deref() == Some("RUNNING"), || format!("after an ignored SIGTERM: {status:?}"))?;
        run.lab.ctr(&["task", "kill", "-s", "SIGKILL", &id]).ok()?;
        run.lab.wait_status(&id, "STOPPED", SETTLE)?;
        let removed = run.lab.ctr(&["task", "rm", &id]);
        expect(!removed.timed_out && run.lab.task_status(&id)?.is_none(), || removed.describe())?;
        // ctr task rm warns "task ID exit with non-zero exit code N" (and exits 0).
        expect(removed.success() && removed.stderr.contains("exit code 137"), || format!("task rm after SIGKILL: {}", removed.describe()))?;
        run.lab.ctr(&["container", "rm", &id]).ok()?;
        Ok("ignored SIGTERM, SIGKILL: STOPPED, status 137".to_owned())
    })();
    if result.is_err() {
        let _ = run.finish(&id);
    }
    result
}

fn pause_resume_ps_metrics(run: &mut Run) -> Result<String, String> {
    let id = run.id("pause");
    run.detached(&id, &[], &["forever"])?;
    let result: Result<String, String> = (|| {
        run.lab.ctr(&["task", "pause", &id]).ok()?;
        run.lab.wait_status(&id, "PAUSED", SETTLE)?;
        let ps = run.lab.ctr(&["task", "ps", &id]).ok()?;
        let pids: Vec<&str> = ps.stdout.lines().skip(1).filter_map(|l| l.split_whitespace().next()).collect();
        expect(pids.len() == 1 && pids[0].parse::<u32>().is_ok(), || format!("task ps: {:?}", ps.stdout))?;
        let metrics = run.lab.ctr(&["task", "metrics", &id]).ok()?;
        expect(metrics.stdout.contains("METRIC") || metrics.stdout.contains('{'), || format!("task metrics: {:?}", metrics.stdout))?;
        run.lab.ctr(&["task", "resume", &id]).ok()?;
        run.lab.wait_status(&id, "RUNNING", SETTLE)?;
        Ok(format!("PAUSED, ps [{}], metrics, RUNNING", pids.join(" ")))
    })();
    result.and_then(|note| run.finish(&id).map(|_| note)).or_else(|error| {
        let _ = run.lab.ctr(&["task", "resume", &id]);
        let _ = run.finish(&id);
        Err(error)
    })
}

/// Waits for `path` to hold every one of `lines` (loggers finish asynchronously).
fn wait_file(path: &std::path::Path, lines: &[&str]) -> Result<(), String> {
    let started = Instant::now();
    loop {
        let text = fs::read_to_string(path).unwrap_or_default();
        if lines.iter().all(|line| text.lines().any(|l| l == *line)) {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(3) {
            return Err(format!("{} holds {text:?}, expected lines {lines:?}", path.display()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn log_uri_file(run: &mut Run) -> Result<String, String> {
    let id = run.id("logfile");
    let file = run.lab.path("logs").join(format!("{id}.log"));
    let uri = format!("file://{}", file.display());
    let out = run.ctr(&run.run_args(&["--rm", "--log-uri", &uri], &id, &["echo", "tofile", "err", "toerr"])).ok()?;
    expect(out.stdout.is_empty(), || format!("with --log-uri ctr printed {:?}", out.stdout))?;
    wait_file(&file, &["tofile", "toerr"])?;
    Ok("stdout and stderr in the file".into())
}

fn log_uri_binary(run: &mut Run) -> Result<String, String> {
    let id = run.id("logbin");
    let dir = run.lab.path("logs");
    let logger = run.lab.path("logger.sh");
    // containerd's binary logging protocol: stdout on fd 3, stderr on fd 4; closing fd 5 says "ready".
    let script = format!(
        "#!/bin/sh\nexec 5>&-\ncat <&3 >'{dir}/'\"$CONTAINER_ID\".out &\ncat <&4 >'{dir}/'\"$CONTAINER_ID\".err &\n\
         echo \"$CONTAINER_NAMESPACE $*\" >'{dir}/'\"$CONTAINER_ID\".env\nwait\n",
        dir = dir.display()
    );
    daemon::write_mode(&logger, script.as_bytes(), 0o755).map_err(|e| e.to_string())?;
    let uri = format!("binary://{}", logger.display());
    run.ctr(&run.run_args(&["--rm", "--log-uri", &uri], &id, &["echo", "tobin", "err", "tobinerr"])).ok()?;
    wait_file(&dir.join(format!("{id}.out")), &["tobin"])?;
    wait_file(&dir.join(format!("{id}.err")), &["tobinerr"])?;
    let env = fs::read_to_string(dir.join(format!("{id}.env"))).unwrap_or_default();
    expect(env.starts_with(run.lab.namespace()), || format!("the logger's CONTAINER_NAMESPACE and arguments: {env:?}"))?;
    Ok("stdout on fd 3, stderr on fd 4".into())
}

fn restart_running_task(run: &mut Run) -> Result<String, String> {
    let id = run.id("restart");
    run.detached(&id, &[], &["forever"])?;
    let shims = run.lab.shim_pids();
    run.lab.restart()?;
    let result: Result<String, String> = (|| {
        run.lab.wait_status(&id, "RUNNING", SETTLE)?;
        let after = run.lab.shim_pids();
        expect(after == shims, || format!("shim processes {shims:?} before the restart, {after:?} after"))?;
        Ok("RUNNING after the restart, same shim".to_owned())
    })();
    let finished = run.finish(&id);
    let note = result?;
    finished?;
    Ok(note)
}

fn group_two_containers(run: &mut Run) -> Result<String, String> {
    let first = run.id("group");
    let second = run.id("group");
    let group = format!("{}-group", run.tag);
    run.lab.remember_id(&group);
    let annotation = format!("{GROUP_LABEL}={group}");
    let result: Result<String, String> = (|| {
        run.detached(&first, &["--annotation", &annotation], &["forever"])?;
        run.detached(&second, &["--annotation", &annotation], &["forever"])?;
        let shims = run.lab.shim_pids();
        let (a, b) = (run.lab.shim_address(&first), run.lab.shim_address(&second));
        expect(a.is_some() && a == b, || format!("shim addresses {a:?} and {b:?}"))?;
        expect(shims.len() == 1, || format!("{} shim processes for two grouped containers: {shims:?}", shims.len()))?;
        run.finish(&first)?;
        let status = run.lab.task_status(&second)?;
        expect(status.as_deref() == Some("RUNNING"), || format!("the second container after the first was removed: {status:?}"))?;
        expect(run.lab.shim_pids() == shims, || "the shared shim went away with the first container".to_owned())?;
        run.finish(&second)?;
        Ok("one shim for both".to_owned())
    })();
    if result.is_err() {
        let _ = run.finish(&first);
        let _ = run.finish(&second);
    }
    result
}

/// One step's outcome in one column.
struct Outcome {
    result: Result<String, String>,
    took: Duration,
}

impl Outcome {
    fn cell(&self) -> String {
        match &self.result {
            Ok(_) => format!("ok ({} ms)", self.took.as_millis()),
            Err(_) => format!("FAIL ({} ms)", self.took.as_millis()),
        }
    }
}

fn run_script(lab: &mut Lab, runtime: &str, image: &str, tag: &str) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    for (name, step) in STEPS {
        let started = Instant::now();
        let mut result = {
            let mut run = Run { lab, runtime, image, tag };
            step(&mut run)
        };
        let left = lab.leftovers(Duration::from_secs(3));
        if !left.is_empty() {
            lab.sweep();
            let still = lab.leftovers(Duration::from_secs(2));
            let mut text = format!("left behind after the step: {}", left.join("; "));
            if !still.is_empty() {
                text.push_str(&format!("; still there after a sweep: {}", still.join("; ")));
            }
            result = match result {
                Ok(_) => Err(text),
                Err(error) => Err(format!("{error}; {text}")),
            };
        }
        if lab.containerd_pid().is_none() {
            // A failed restart: bring the daemon back for the next steps.
            if let Err(error) = lab.restart() {
                result = Err(format!("{:?}; containerd could not be started again: {error}", result));
            }
        }
        let _ = name;
        outcomes.push(Outcome { result, took: started.elapsed() });
    }
    outcomes
}

fn script_on(daemon: Daemon) -> Verdict {
    let test = daemon.label();
    let mock = match mock_binary() {
        Ok(path) => path,
        Err(reason) => return Verdict::Skip(reason),
    };
    let mut lab = match Lab::start(daemon) {
        Ok(lab) => lab,
        Err(NotStarted::Skip(reason)) => return Verdict::Skip(reason),
        Err(NotStarted::Failed(reason)) => return Verdict::Fail(reason),
    };
    lab.install_shim("containerd-shim-mock-v1", &mock).expect("linking the mock shim");
    let mut command = std::process::Command::new(&lab.binaries.containerd);
    command.arg("--version");
    let version = daemon::run_command(command, "containerd --version".into(), None, SHORT).stdout;
    let image = lab.import_payload_image().unwrap_or_else(|error| panic!("{test}: importing the payload image: {error}"));
    let started = Instant::now();
    let reference = run_script(&mut lab, REFERENCE, image, "runc");
    let candidate = run_script(&mut lab, MOCK, image, "mock");
    let elapsed = started.elapsed();
    let log_tail = lab.log_tail(30);
    let notes = lab.cleanup();

    let mut table = format!(
        "{test}: {} (namespace {}), {elapsed:.1?}\n  {:<26} {:<24} {:<24}\n",
        version.trim(),
        lab.namespace(),
        "step",
        REFERENCE,
        MOCK
    );
    let mut differences = Vec::new();
    let mut details = String::new();
    for (index, (name, _)) in STEPS.iter().enumerate() {
        let (r, m) = (&reference[index], &candidate[index]);
        let same = r.result.is_ok() == m.result.is_ok();
        table.push_str(&format!("  {:<26} {:<24} {:<24}{}\n", name, r.cell(), m.cell(), if same { "" } else { "  <- differs" }));
        if !same {
            differences.push(*name);
        }
        for (column, outcome) in [(REFERENCE, r), (MOCK, m)] {
            if let Err(error) = &outcome.result {
                details.push_str(&format!("  {name} [{column}]: {error}\n"));
            }
        }
    }
    if !details.is_empty() {
        table.push_str("failures:\n");
        table.push_str(&details);
    }
    if reference.iter().any(|o| o.result.is_err()) {
        table.push_str("note: a step the reference fails is not judged by this test (both columns may fail it alike)\n");
    }
    println!("{table}");
    if !notes.is_empty() {
        return Verdict::Fail(format!("{test}: the lab's clean-up had to undo: {notes:#?}"));
    }
    if !differences.is_empty() {
        return Verdict::Fail(format!(
            "{test}: {MOCK} differs from {REFERENCE} in {differences:?}\n{table}\n--- containerd log (tail) ---\n{log_tail}"
        ));
    }
    Verdict::Pass
}

fn main() {
    run_tests(&[
        ("daemon_ctr::ctr_script_containerd_1_6", || script_on(Daemon::V1_6)),
        ("daemon_ctr::ctr_script_containerd_1_7", || script_on(Daemon::V1_7)),
    ])
}
