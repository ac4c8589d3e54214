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
use daemon::{mock_binary, run_tests, Comparison, Daemon, Lab, NotStarted, StepCell, Verdict};

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
    let image =
        lab.import_payload_image().unwrap_or_else(|error| panic!("{test}: importing the payload image: {error}"));
    let started = Instant::now();
    let reference = run_script(&mut lab, REFERENCE, image, "runc");
    let candidate = run_script(&mut lab, MOCK, image, "mock");
    let elapsed = started.elapsed();
    let log_tail = lab.log_tail(30);
    let notes = lab.cleanup();

    let cells = |outcomes: &[daemon::script::Outcome]| -> Vec<StepCell> {
        outcomes
            .iter()
            .map(|o| StepCell { error: o.result.as_ref().err().map(|e| e.to_string()), cell: o.cell() })
            .collect()
    };
    let names: Vec<&str> = STEPS.iter().map(|(name, _)| *name).collect();
    let comparison = Comparison::new(
        format!("{test}: {} (namespace {}), {elapsed:.1?}", version.trim(), lab.namespace()),
        &names,
        (REFERENCE, &cells(&reference)),
        (MOCK, &cells(&candidate)),
    );
    println!("{}", comparison.table);
    comparison.verdict(test, REFERENCE, MOCK, &notes, &format!("--- containerd log (tail) ---\n{log_tail}"))
}

fn main() {
    run_tests(&[
        ("daemon_ctr::ctr_script_containerd_1_6", || script_on(Daemon::V1_6)),
        ("daemon_ctr::ctr_script_containerd_1_7", || script_on(Daemon::V1_7)),
    ])
}
