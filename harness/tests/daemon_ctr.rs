//! End to end through a real, private containerd: a fixed script of `ctr` operations run with the Go runc v2 shim
//! (`io.containerd.runc.v2`, the reference) and with the bundled mock shim (`io.containerd.mock.v1`), on
//! containerd 1.6.20 and 1.7.24 (the script itself is harness/tests/daemon/script.rs). Each step is a named function that returns Ok (what it saw) or Err (what happened,
//! with ctr's output); after every step the lab must be clean (no task, container, shim process, mount, shim socket
//! or bundle left), else the step fails and the lab is swept. The test prints both columns and passes when the
//! mock's per-step outcomes equal runc's.
//!
//! Skips with a printed reason (not a pass) when not root, when a daemon is not installed, or when the mock shim is
//! not built.
mod daemon;

use std::time::Instant;

use daemon::script::{run_script, STEPS};
use daemon::{mock_binary, run_tests, Daemon, Lab, NotStarted, Verdict};

const REFERENCE: &str = "io.containerd.runc.v2";
const MOCK: &str = "io.containerd.mock.v1";
const SHORT: std::time::Duration = std::time::Duration::from_secs(10);

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
        // As the note below says: where the reference shim fails a step (e.g. the Go shim's racy loss of stderr in
        // a file:// log, results/findings.toml), the step says nothing about the mock's fidelity.
        let judged = r.result.is_ok();
        let mark = match (same, judged) {
            (true, _) => "",
            (false, true) => "  <- differs",
            (false, false) => "  (reference fails: not judged)",
        };
        table.push_str(&format!("  {:<26} {:<24} {:<24}{}\n", name, r.cell(), m.cell(), mark));
        if !same && judged {
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
    let unjudged = reference.iter().filter(|o| o.result.is_err()).count();
    if unjudged * 2 > reference.len() {
        return Verdict::Fail(format!("{test}: the reference shim fails {unjudged} of {} steps: the host cannot judge the mock\n{table}", reference.len()));
    }
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
