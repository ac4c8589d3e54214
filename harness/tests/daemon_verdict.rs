//! Real containerd agrees with the verdict. For every candidate file in `shims/candidates` but the mock (daemon_ctr
//! covers it) and for containerd 1.6.20 and 1.7.24, the harness's per-line verdict (`shimcompat::run::judge`: can
//! that containerd line use the shim at all) is set against what that containerd really does with the shim, driven
//! by `ctr` on a private daemon (harness/tests/daemon/):
//!
//! - usable: the first steps of the ctr script (`run --rm` echo with its output checked; `run -d`, `task exec`
//!   three ways, SIGKILL, `task rm`, `container rm`) and a look at the options the shim received must all pass (a
//!   failed step is run once more; one that then passes is printed as FLAKY, the verdict being about whether
//!   containerd can use the shim at all);
//! - not usable: `ctr run` must fail; ctr's error is printed next to the verdict's reason.
//!
//! The shim is linked into the lab under the file name containerd derives from the runtime name
//! (`io.containerd.runc.v2-rs` -> `containerd-shim-runc-v2-rs`), pointing at the binary the harness planned (so under
//! containerd 1.7 `io.containerd.runc.v2` is the host's 1.6.20 shim, as the harness judges it); a `runtime_binary`
//! candidate is given to ctr by absolute path. The candidate's runc options go the way ctr can send them: ctr sends
//! runc options only for the exact name `io.containerd.runc.v2` (`--runc-binary`, `--runc-root`,
//! `--runc-systemd-cgroup`; for any other name or a path it refuses those flags and sends no options at all), so a
//! candidate of another name whose options ask for anything but the shim's default runc is skipped as not
//! reproducible with ctr. What the shim got is read back from the bundle (`options.json`, written by the Go runc
//! shim at Create) and printed.
//!
//! The verdict is computed in a child process of this test binary (`--judge-child FILE LINE`), one at a time: the
//! harness makes itself a subreaper and reaps every child it did not spawn, which must not happen to the ctr and
//! containerd processes of the labs. A dead shim socket in /run/containerd/s that the verdict names (the harness does
//! not record the socket of a `start` reply the line refuses) is removed by the child, and said so.
//!
//! Skips with a printed reason (not a pass): not root, a daemon not installed, or a candidate the harness cannot plan
//! here (not installed, host needs unmet: e.g. crun on a hybrid host with controllers on cgroup2).
mod daemon;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use daemon::script::{detached_exec, run_rm_echo, run_steps, Outcome, Run, Step};
use daemon::{ctr_form, run_dyn_tests, Daemon, DynTest, Lab, NotStarted, Verdict};
use shimcompat::candidate::{Candidate, MOCK_RUNTIME};
use shimcompat::context::Verdict as LineVerdict;
use shimcompat::profile::Line;
use shimcompat::select::Planned;

const CANDIDATES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shims/candidates");
const JUDGE_CHILD: &str = "--judge-child";
const VERDICT_MARK: &str = "VERDICT ";
const NOTE_MARK: &str = "NOTE ";
/// The only runtime name for which ctr sends runc options.
/// Labs at a time (each is a containerd with its own shims and containers).
const PARALLEL: usize = 4;

/// What a usable candidate must get through.
/// Each with the candidate-file feature it needs (a candidate declaring that feature unsupported skips the step).
const USABLE_STEPS: &[(&str, Option<&str>, Step)] = &[
    ("run_rm_echo", None, run_rm_echo),
    ("detached_exec", Some("exec"), detached_exec),
    ("received_options", None, received_options),
];

fn line_of(daemon: Daemon) -> Line {
    match daemon {
        Daemon::V1_6 => Line::V1_6,
        Daemon::V1_7 => Line::V1_7,
    }
}

fn line_named(label: &str) -> Option<Line> {
    match label {
        "1.6" => Some(Line::V1_6),
        "1.7" => Some(Line::V1_7),
        _ => None,
    }
}

/// `--judge-child FILE LINE`: plans the candidate and prints its verdict (JSON after VERDICT_MARK), as `doctor` does:
/// a work directory, the subreaper and the reaper for the probe, everything cleaned up after it.
fn judge_child(file: &str, line: &str) -> ! {
    let line = line_named(line).unwrap_or_else(|| panic!("unknown line {line:?}"));
    let candidate = Candidate::load(Path::new(file)).unwrap_or_else(|e| panic!("{e}"));
    let target = match shimcompat::select::plan(candidate, None, line) {
        Planned::Ready(target) => target,
        Planned::Unavailable { reason, .. } => panic!("unavailable: {reason}"),
    };
    let env =
        Arc::new(shimcompat::context::RunEnv::create(None, false).unwrap_or_else(|e| panic!("work directory: {e}")));
    shimcompat::process::become_subreaper();
    shimcompat::process::reaper::start();
    let verdict = shimcompat::run::judge(&target, &env);
    env.cleanup();
    shimcompat::process::reap_orphans();
    shimcompat::process::cgroup::remove_cgroup_parents();
    for socket in dead_sockets_named(&format!("{:?} {:?}", verdict.reason, verdict.reply)) {
        if std::fs::remove_file(&socket).is_ok() {
            println!(
                "{NOTE_MARK}the harness's probe left {} behind (the socket of a start reply this line refuses is never \
                 recorded for clean-up: context.rs launch_with_id); removed",
                socket.display()
            );
        }
    }
    println!("{VERDICT_MARK}{}", serde_json::to_string(&verdict).expect("verdict as JSON"));
    std::process::exit(0)
}

/// Shim sockets in /run/containerd/s named in `text` that exist and that nothing listens on.
fn dead_sockets_named(text: &str) -> Vec<PathBuf> {
    const DIR: &str = "/run/containerd/s/";
    let mut found = Vec::new();
    for (at, _) in text.match_indices(DIR) {
        let name: String = text[at + DIR.len()..].chars().take_while(char::is_ascii_hexdigit).collect();
        if name.len() != 64 {
            continue;
        }
        let path = PathBuf::from(format!("{DIR}{name}"));
        let refused = matches!(std::os::unix::net::UnixStream::connect(&path), Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused);
        if refused && !found.contains(&path) {
            found.push(path);
        }
    }
    found
}

/// The verdict of `file` under `line` and the child's notes, from a child process; one judge at a time.
fn judge(file: &Path, line: Line) -> Result<(LineVerdict, Vec<String>), String> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut command = std::process::Command::new(&exe);
    command.arg(JUDGE_CHILD).arg(file).arg(line.label());
    let shown = format!("{} {JUDGE_CHILD} {} {}", exe.display(), file.display(), line.label());
    let out = daemon::run_command(command, shown, None, Duration::from_secs(90));
    let json = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix(VERDICT_MARK))
        .ok_or_else(|| format!("no verdict: {}", out.describe()))?;
    let notes = out.stdout.lines().filter_map(|l| l.strip_prefix(NOTE_MARK)).map(str::to_owned).collect();
    let verdict = serde_json::from_str(json).map_err(|e| format!("verdict {json:?}: {e}"))?;
    Ok((verdict, notes))
}

thread_local! {
    /// The BinaryName `received_options` must find (set per test thread before the steps run).
    static EXPECT_BINARY_NAME: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// `run -d`, then reads `<bundle>/options.json` (the Go runc shim writes the runc options it got there at Create),
/// checks its BinaryName against what ctr was asked to send, and removes the task.
fn received_options(run: &mut Run) -> Result<String, String> {
    let id = run.id("options");
    let mut args: Vec<String> = vec!["run".into(), "-d".into()];
    args.extend(run.run_flags.iter().cloned());
    args.extend([
        "--runtime".into(),
        run.runtime.into(),
        run.image.into(),
        id.clone(),
        "/payload".into(),
        "forever".into(),
    ]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    run.lab.ctr(&refs).ok()?;
    let result: Result<String, String> = (|| {
        run.lab.wait_status(&id, "RUNNING", Duration::from_secs(5))?;
        let bundle = run.lab.bundles_dir().join(&id);
        let Ok(text) = std::fs::read_to_string(bundle.join("options.json")) else {
            return Ok("no options.json in the bundle".to_owned());
        };
        let seen = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("binary_name").and_then(|b| b.as_str()).map(str::to_owned))
            .unwrap_or_default();
        if let Some(expected) = EXPECT_BINARY_NAME.with(|e| e.borrow().clone()) {
            if seen != expected {
                return Err(format!("options.json {}: BinaryName {seen:?}, expected {expected:?}", text.trim()));
            }
        }
        Ok(format!("options.json {}", text.trim()))
    })();
    let finished = finish(run, &id);
    let note = result?;
    finished?;
    Ok(note)
}

fn finish(run: &Run, id: &str) -> Result<(), String> {
    run.lab.ctr(&["task", "kill", "-s", "SIGKILL", id]).ok()?;
    run.lab.wait_status(id, "STOPPED", Duration::from_secs(5))?;
    run.lab.ctr(&["task", "rm", id]);
    run.lab.ctr(&["container", "rm", id]).ok()?;
    Ok(())
}

/// `ctr run --rm ... echo hi`, which must fail: Ok(ctr's error), Err when it ran.
fn run_must_fail(run: &mut Run) -> Result<String, String> {
    let id = run.id("refused");
    let args = run.run_args(&["--rm"], &id, &["echo", "hi"]);
    let out = run.ctr(&args);
    if out.success() {
        return Err(format!("ctr ran it: {}", out.describe()));
    }
    Ok(ctr_error(&out))
}

/// ctr's error line ("ctr: ..."), else its whole account.
fn ctr_error(out: &daemon::Output) -> String {
    out.stderr.lines().rev().find(|l| l.starts_with("ctr: ")).map(str::to_owned).unwrap_or_else(|| out.describe())
}

fn describe_verdict(verdict: &LineVerdict) -> String {
    if verdict.usable {
        format!("usable ({})", verdict.reply.as_deref().unwrap_or("no reply recorded"))
    } else {
        format!("NOT usable: {}", verdict.reason.as_deref().unwrap_or("no reason given"))
    }
}

fn agree(file: PathBuf, daemon: Daemon) -> Verdict {
    let line = line_of(daemon);
    let candidate = match Candidate::load(&file) {
        Ok(candidate) => candidate,
        Err(error) => return Verdict::Fail(error.to_string()),
    };
    let title = format!("{} under {}", candidate.name, daemon.label());
    let target = match shimcompat::select::plan(candidate.clone(), None, line) {
        Planned::Ready(target) => target,
        Planned::Unavailable { reason, .. } => return Verdict::Skip(format!("{title}: {reason}")),
    };
    if let Err(reason) = daemon.binaries() {
        return Verdict::Skip(reason);
    }
    if !nix::unistd::geteuid().is_root() {
        return Verdict::Skip("needs root to run containerd".into());
    }
    let form = match ctr_form(&candidate, &target.binary, daemon) {
        Ok(form) => form,
        Err(reason) => return Verdict::Skip(format!("{title}: {reason}")),
    };
    let (verdict, judge_notes) = match judge(&file, line) {
        Ok(judged) => judged,
        Err(error) => return Verdict::Fail(format!("{title}: the harness's verdict: {error}")),
    };
    let env: Vec<(String, String)> =
        candidate.env.iter().filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut lab = match Lab::start_with(daemon, &env_refs) {
        Ok(lab) => lab,
        Err(NotStarted::Skip(reason)) => return Verdict::Skip(reason),
        Err(NotStarted::Failed(reason)) => return Verdict::Fail(format!("{title}: {reason}")),
    };
    let shim = match &form.link {
        Some((file_name, binary)) => {
            if let Err(error) = lab.install_shim(file_name, binary) {
                return Verdict::Fail(format!("{title}: linking {file_name}: {error}"));
            }
            format!("{} linked as {file_name}", binary.display())
        }
        None => format!("{} by path", target.binary.display()),
    };
    let image = match lab.import_payload_image() {
        Ok(image) => image,
        Err(error) => return Verdict::Fail(format!("{title}: importing the payload image: {error}")),
    };
    let tag = candidate.name.clone();
    let started = Instant::now();
    let mut report = format!(
        "{title}: {}\n  shim: {shim}; ctr run {}--runtime {}\n  receives: {}\n  verdict: {}\n",
        lab_version(&lab),
        form.flags.iter().map(|f| format!("{f} ")).collect::<String>(),
        form.runtime,
        form.receives,
        describe_verdict(&verdict)
    );
    for note in &judge_notes {
        report.push_str(&format!("  harness: {note}\n"));
    }
    let mut disagreement = None;
    if verdict.usable {
        EXPECT_BINARY_NAME.with(|e| *e.borrow_mut() = form.expect_binary_name.clone());
        // A step needing a feature the candidate declares unsupported is not run (and says so): "usable" claims
        // the lifecycle, not features the candidate file rules out (runwasi has no Exec).
        let mut steps: Vec<(&str, Step)> = Vec::new();
        for (name, feature, step) in USABLE_STEPS {
            match feature.filter(|f| candidate.unsupported.contains(*f)) {
                Some(feature) => {
                    report.push_str(&format!("  {name:<18} not run: the candidate declares `{feature}` unsupported\n"))
                }
                None => steps.push((name, *step)),
            }
        }
        let outcomes = run_steps(&mut lab, &steps, &form.runtime, &form.flags, image, &tag);
        report.push_str(&steps_report(&steps, &outcomes));
        // A failed step is run once more: one success shows that this containerd can use the shim (what the verdict
        // claims); the failed attempt stays in the output, marked FLAKY (e.g. an exec's output lost now and then).
        let mut failed = Vec::new();
        for (step, outcome) in steps.iter().zip(&outcomes) {
            if outcome.result.is_ok() {
                continue;
            }
            let again = run_steps(&mut lab, std::slice::from_ref(step), &form.runtime, &form.flags, image, &tag);
            report.push_str(&steps_report(std::slice::from_ref(step), &again).replacen("  ", "  again: ", 1));
            match again[0].result.is_ok() {
                true => report.push_str(&format!("  FLAKY: {} failed once and passed when run again\n", step.0)),
                false => failed.push(step.0),
            }
        }
        if !failed.is_empty() {
            disagreement = Some(format!("the verdict says usable, but through ctr {failed:?} failed"));
        }
    } else {
        let outcome = {
            let started = Instant::now();
            let mut run = Run { lab: &mut lab, runtime: &form.runtime, run_flags: &form.flags, image, tag: &tag };
            Outcome { result: run_must_fail(&mut run), took: started.elapsed() }
        };
        match &outcome.result {
            Ok(error) => report.push_str(&format!(
                "  ctr run failed as the verdict says ({} ms): {error}\n",
                outcome.took.as_millis()
            )),
            Err(ran) => {
                report.push_str(&format!("  ctr run SUCCEEDED ({} ms): {ran}\n", outcome.took.as_millis()));
                disagreement = Some("the verdict says not usable, but ctr ran the container".to_owned());
            }
        }
        // What containerd and the shim leave after a refused start is theirs, not a disagreement: noted and swept.
        let left = lab.leftovers(Duration::from_secs(3));
        if !left.is_empty() {
            report.push_str(&format!("  left behind by the failed start (swept): {}\n", left.join("; ")));
            lab.sweep();
        }
    }
    report.push_str(&format!(
        "  took {:.1?}; {}\n",
        started.elapsed(),
        if disagreement.is_some() { "DISAGREE" } else { "agree" }
    ));
    let still = lab.leftovers(Duration::from_secs(2));
    let log_tail = lab.log_tail(25);
    let notes = lab.cleanup();
    println!("{report}");
    if let Some(what) = disagreement {
        return Verdict::Fail(format!("{title}: {what}\n{report}--- containerd log (tail) ---\n{log_tail}"));
    }
    if !still.is_empty() || !notes.is_empty() {
        return Verdict::Fail(format!("{title}: left behind: {still:?}; the lab's clean-up had to undo: {notes:#?}"));
    }
    Verdict::Pass
}

fn lab_version(lab: &Lab) -> String {
    let mut command = std::process::Command::new(&lab.binaries.containerd);
    command.arg("--version");
    daemon::run_command(command, "containerd --version".into(), None, Duration::from_secs(10)).stdout.trim().to_owned()
}

fn steps_report(steps: &[(&str, Step)], outcomes: &[Outcome]) -> String {
    let mut text = String::new();
    for ((name, _), outcome) in steps.iter().zip(outcomes) {
        match &outcome.result {
            Ok(note) => text.push_str(&format!("  {name:<18} ok ({} ms): {note}\n", outcome.took.as_millis())),
            Err(error) => text.push_str(&format!("  {name:<18} FAIL ({} ms): {error}\n", outcome.took.as_millis())),
        }
    }
    text
}

/// The candidate files but the mock, sorted.
fn candidate_files() -> Result<Vec<PathBuf>, String> {
    let dir = Path::new(CANDIDATES);
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> =
        entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "toml")).collect();
    files.sort();
    files.retain(|file| match Candidate::load(file) {
        Ok(candidate) => candidate.runtime.as_deref() != Some(MOCK_RUNTIME),
        Err(_) => true,
    });
    Ok(files)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(JUDGE_CHILD) {
        judge_child(&args[2], &args[3]);
    }
    let files = match candidate_files() {
        Ok(files) => files,
        Err(error) => {
            let tests: Vec<(String, DynTest)> =
                vec![("daemon_verdict::candidates".into(), Box::new(move || Verdict::Fail(error)))];
            run_dyn_tests(tests, 1)
        }
    };
    let mut tests: Vec<(String, DynTest)> = Vec::new();
    for file in files {
        let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("candidate").to_owned();
        for daemon in [Daemon::V1_6, Daemon::V1_7] {
            let file = file.clone();
            let name = format!("daemon_verdict::{stem}::containerd_{}", line_of(daemon).label().replace('.', "_"));
            tests.push((name, Box::new(move || agree(file, daemon))));
        }
    }
    run_dyn_tests(tests, PARALLEL)
}
