//! The `ctr` script of daemon_ctr.rs as a library: each step is a named function that returns Ok (what it saw) or
//! Err (what happened, with ctr's output); [`run_steps`] runs a list of them and, after every step, checks that the
//! lab is clean (no task, container, shim process, mount, shim socket or bundle left), else fails the step and
//! sweeps the lab.
use std::fs;
use std::time::{Duration, Instant};

use super::Lab;

pub const GROUP_LABEL: &str = "io.containerd.runc.v2.group";
pub const SETTLE: Duration = Duration::from_secs(5);
pub const SHORT: Duration = Duration::from_secs(10);

pub type Step = fn(&mut Run) -> Result<String, String>;

/// The script, in order.
pub const STEPS: &[(&str, Step)] = &[
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
pub struct Run<'a> {
    pub lab: &'a mut Lab,
    pub runtime: &'a str,
    /// Flags every `ctr run` of the script gets before `--runtime` (e.g. `--runc-binary crun`).
    pub run_flags: &'a [String],
    pub image: &'a str,
    pub tag: &'a str,
}

impl Run<'_> {
    pub fn id(&self, step: &str) -> String {
        self.lab.new_id(&format!("{}-{}", self.tag, step.replace('_', "-")))
    }

    /// `ctr run [flags] --runtime R IMAGE ID /payload STEPS...`
    pub fn run_args(&self, flags: &[&str], id: &str, steps: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = vec!["run".into()];
        args.extend(flags.iter().map(|s| s.to_string()));
        args.extend(self.run_flags.iter().cloned());
        args.extend(["--runtime".into(), self.runtime.into(), self.image.into(), id.into(), "/payload".into()]);
        args.extend(steps.iter().map(|s| s.to_string()));
        args
    }

    pub fn ctr(&self, args: &[String]) -> super::Output {
        self.lab.ctr(&refs(args))
    }

    /// Starts a detached task and waits for RUNNING.
    pub fn detached(&self, id: &str, flags: &[&str], steps: &[&str]) -> Result<(), String> {
        let mut all = vec!["-d"];
        all.extend_from_slice(flags);
        self.ctr(&self.run_args(&all, id, steps)).ok()?;
        self.lab.wait_status(id, "RUNNING", SETTLE)
    }

    /// SIGKILL, STOPPED, `task rm`, `container rm`: the end of every detached task.
    pub fn finish(&self, id: &str) -> Result<(), String> {
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

pub fn refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

pub fn expect(condition: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if condition {
        Ok(())
    } else {
        Err(what())
    }
}

/// Stdout without the terminal's carriage returns.
pub fn clean(text: &str) -> String {
    text.replace('\r', "")
}

pub fn run_rm_echo(run: &mut Run) -> Result<String, String> {
    let id = run.id("echo");
    let out = run.ctr(&run.run_args(&["--rm"], &id, &["echo", "hi"])).ok()?;
    expect(out.stdout == "hi\n", || format!("stdout {:?}, expected \"hi\\n\" ({})", out.stdout, out.describe()))?;
    Ok("printed hi".into())
}

pub fn exit_status(run: &mut Run) -> Result<String, String> {
    let id = run.id("exit");
    let out = run.ctr(&run.run_args(&["--rm"], &id, &["exit", "3"]));
    expect(out.code == Some(3), || format!("expected ctr to exit 3: {}", out.describe()))?;
    Ok("ctr exited 3".into())
}

pub fn stdin_cat(run: &mut Run) -> Result<String, String> {
    let id = run.id("cat");
    let input = b"through stdin\nand back\n";
    let args = run.run_args(&["--rm"], &id, &["cat"]);
    let out = run.lab.ctr_stdin_until(&refs(&args), input, "and back\n", SHORT).ok()?;
    expect(out.stdout.as_bytes() == input, || format!("stdout {:?}, expected the input back", out.stdout))?;
    Ok("stdin echoed".into())
}

pub fn run_tty(run: &mut Run) -> Result<String, String> {
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

pub fn detached_exec(run: &mut Run) -> Result<String, String> {
    let id = run.id("exec");
    let result: Result<String, String> = (|| {
        run.detached(&id, &[], &["forever"])?;
        let out = run.lab.ctr(&["task", "exec", "--exec-id", "x1", &id, "/payload", "echo", "inexec"]).ok()?;
        expect(out.stdout == "inexec\n", || format!("exec stdout {:?}", out.stdout))?;
        let out = run.lab.ctr(&["task", "exec", "--exec-id", "x2", &id, "/payload", "exit", "5"]);
        expect(out.code == Some(5), || format!("expected exec to exit 5: {}", out.describe()))?;
        let out =
            run.lab.ctr_tty(&["task", "exec", "-t", "--exec-id", "x3", &id, "/payload", "sleep", "0.5", "tty"], SHORT);
        let text = clean(&out.stdout);
        expect(out.success() && text.contains("tty stdin=true stdout=true rows=24 cols=80"), || {
            format!("exec -t: {} showed {text:?}", out.describe())
        })?;
        run.lab.wait_status(&id, "RUNNING", SETTLE)?;
        Ok("exec output, exit 5, exec -t".to_owned())
    })();
    result.and_then(|note| run.finish(&id).map(|_| note))
}

pub fn kill_sigterm_trapped(run: &mut Run) -> Result<String, String> {
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

pub fn kill_sigkill_status(run: &mut Run) -> Result<String, String> {
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
        expect(removed.success() && removed.stderr.contains("exit code 137"), || {
            format!("task rm after SIGKILL: {}", removed.describe())
        })?;
        run.lab.ctr(&["container", "rm", &id]).ok()?;
        Ok("ignored SIGTERM, SIGKILL: STOPPED, status 137".to_owned())
    })();
    if result.is_err() {
        let _ = run.finish(&id);
    }
    result
}

pub fn pause_resume_ps_metrics(run: &mut Run) -> Result<String, String> {
    let id = run.id("pause");
    run.detached(&id, &[], &["forever"])?;
    let result: Result<String, String> = (|| {
        run.lab.ctr(&["task", "pause", &id]).ok()?;
        run.lab.wait_status(&id, "PAUSED", SETTLE)?;
        let ps = run.lab.ctr(&["task", "ps", &id]).ok()?;
        let pids: Vec<&str> = ps.stdout.lines().skip(1).filter_map(|l| l.split_whitespace().next()).collect();
        expect(pids.len() == 1 && pids[0].parse::<u32>().is_ok(), || format!("task ps: {:?}", ps.stdout))?;
        let metrics = run.lab.ctr(&["task", "metrics", &id]).ok()?;
        expect(metrics.stdout.contains("METRIC") || metrics.stdout.contains('{'), || {
            format!("task metrics: {:?}", metrics.stdout)
        })?;
        run.lab.ctr(&["task", "resume", &id]).ok()?;
        run.lab.wait_status(&id, "RUNNING", SETTLE)?;
        Ok(format!("PAUSED, ps [{}], metrics, RUNNING", pids.join(" ")))
    })();
    result.and_then(|note| run.finish(&id).map(|_| note)).inspect_err(|_error| {
        let _ = run.lab.ctr(&["task", "resume", &id]);
        let _ = run.finish(&id);
    })
}

/// Waits for `path` to hold every one of `lines` (loggers finish asynchronously).
pub fn wait_file(path: &std::path::Path, lines: &[&str]) -> Result<(), String> {
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

pub fn log_uri_file(run: &mut Run) -> Result<String, String> {
    let id = run.id("logfile");
    let file = run.lab.path("logs").join(format!("{id}.log"));
    let uri = format!("file://{}", file.display());
    let out = run.ctr(&run.run_args(&["--rm", "--log-uri", &uri], &id, &["echo", "tofile", "err", "toerr"])).ok()?;
    expect(out.stdout.is_empty(), || format!("with --log-uri ctr printed {:?}", out.stdout))?;
    wait_file(&file, &["tofile", "toerr"])?;
    Ok("stdout and stderr in the file".into())
}

pub fn log_uri_binary(run: &mut Run) -> Result<String, String> {
    let id = run.id("logbin");
    let dir = run.lab.path("logs");
    let logger = run.lab.path("logger.sh");
    // containerd's binary logging protocol: stdout on fd 3, stderr on fd 4; closing fd 5 says "ready".
    let script = format!(
        "#!/bin/sh\nexec 5>&-\ncat <&3 >'{dir}/'\"$CONTAINER_ID\".out &\ncat <&4 >'{dir}/'\"$CONTAINER_ID\".err &\n\
         echo \"$CONTAINER_NAMESPACE $*\" >'{dir}/'\"$CONTAINER_ID\".env\nwait\n",
        dir = dir.display()
    );
    super::write_mode(&logger, script.as_bytes(), 0o755).map_err(|e| e.to_string())?;
    let uri = format!("binary://{}", logger.display());
    run.ctr(&run.run_args(&["--rm", "--log-uri", &uri], &id, &["echo", "tobin", "err", "tobinerr"])).ok()?;
    wait_file(&dir.join(format!("{id}.out")), &["tobin"])?;
    wait_file(&dir.join(format!("{id}.err")), &["tobinerr"])?;
    let env = fs::read_to_string(dir.join(format!("{id}.env"))).unwrap_or_default();
    expect(env.starts_with(run.lab.namespace()), || {
        format!("the logger's CONTAINER_NAMESPACE and arguments: {env:?}")
    })?;
    Ok("stdout on fd 3, stderr on fd 4".into())
}

pub fn restart_running_task(run: &mut Run) -> Result<String, String> {
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

pub fn group_two_containers(run: &mut Run) -> Result<String, String> {
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
        expect(status.as_deref() == Some("RUNNING"), || {
            format!("the second container after the first was removed: {status:?}")
        })?;
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
pub struct Outcome {
    pub result: Result<String, String>,
    pub took: Duration,
}

impl Outcome {
    pub fn cell(&self) -> String {
        match &self.result {
            Ok(_) => format!("ok ({} ms)", self.took.as_millis()),
            Err(_) => format!("FAIL ({} ms)", self.took.as_millis()),
        }
    }
}

/// Runs the whole script (STEPS) with `runtime`.
pub fn run_script(lab: &mut Lab, runtime: &str, image: &str, tag: &str) -> Vec<Outcome> {
    run_steps(lab, STEPS, runtime, &[], image, tag)
}

/// Runs `steps` in order with `runtime` (each `ctr run` also gets `run_flags`), checking after each step that the lab
/// is clean: what is left fails the step and is swept. Ids are prefixed with `tag`.
pub fn run_steps(
    lab: &mut Lab,
    steps: &[(&str, Step)],
    runtime: &str,
    run_flags: &[String],
    image: &str,
    tag: &str,
) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    for (_, step) in steps {
        let started = Instant::now();
        let mut result = {
            let mut run = Run { lab, runtime, run_flags, image, tag };
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
        outcomes.push(Outcome { result, took: started.elapsed() });
    }
    outcomes
}
