//! The test side of the private-containerd lab (`mod daemon;` from a test file): the lab itself is the library's
//! [`shimcompat::lab`], re-exported here, so that `daemon::Lab`, `daemon::image` and the helpers read as before; what
//! stays here is test machinery: the libtest-style runner of the `harness = false` binaries ([`run_tests`],
//! [`run_dyn_tests`]), the side-by-side [`Comparison`] of daemon_ctr and daemon_docker, the ctr script
//! ([`script`]) and the private dockerd ([`docker`], daemon_docker's only).
#![allow(dead_code)]

pub mod docker;
pub mod script;

// Everything public in the lab, its `image` module included (an explicit `pub use` of it would be unused, and
// so an error under clippy, in the test binaries that do not name it).
pub use shimcompat::lab::*;

use std::sync::{Arc, Mutex};
use std::time::Instant;

/// A test's outcome under [`run_tests`].
pub enum Verdict {
    Pass,
    /// Not run, with the reason; never counted as a pass.
    Skip(String),
    Fail(String),
}

/// A test of a `harness = false` binary: its name and body.
pub type NamedTest = (&'static str, fn() -> Verdict);

/// The main of a `harness = false` test binary: runs `tests` in parallel (filtered by the non-flag arguments, as
/// libtest does; `--exact` and `--list` understood), prints libtest-style lines with skips and their reasons, and
/// exits 1 when a test failed (a panic counts as a failure).
pub fn run_tests(tests: &[NamedTest]) -> ! {
    let tests = tests.iter().map(|(name, test)| (name.to_string(), Box::new(*test) as DynTest)).collect();
    run_dyn_tests(tests, usize::MAX)
}

/// A test made at run time (e.g. one per candidate file).
pub type DynTest = Box<dyn FnOnce() -> Verdict + Send + 'static>;

/// [`run_tests`] for tests named and made at run time, at most `parallel` at a time (in the order given); results
/// are printed in that order.
pub fn run_dyn_tests(tests: Vec<(String, DynTest)>, parallel: usize) -> ! {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let exact = args.iter().any(|a| a == "--exact");
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let total = tests.len();
    let selected: Vec<(String, DynTest)> = tests
        .into_iter()
        .filter(|(name, _)| {
            filters.is_empty()
                || filters.iter().any(|f| if exact { name == f.as_str() } else { name.contains(f.as_str()) })
        })
        .collect();
    if args.iter().any(|a| a == "--list") {
        for (name, _) in &selected {
            println!("{name}: test");
        }
        std::process::exit(0);
    }
    println!("\nrunning {} tests", selected.len());
    let started = Instant::now();
    let names: Vec<String> = selected.iter().map(|(name, _)| name.clone()).collect();
    let count = selected.len();
    let queue = Arc::new(Mutex::new(selected.into_iter().enumerate().collect::<std::collections::VecDeque<_>>()));
    let (sender, receiver) = std::sync::mpsc::channel::<(usize, Verdict)>();
    let workers: Vec<_> = (0..parallel.clamp(1, count.max(1)))
        .map(|_| {
            let queue = queue.clone();
            let sender = sender.clone();
            std::thread::spawn(move || loop {
                let Some((index, (_, test))) = queue.lock().unwrap().pop_front() else { return };
                // Each test on its own thread, so that a panic is caught as that test's failure.
                let verdict = std::thread::spawn(test).join().unwrap_or_else(|panic| {
                    let text = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "panicked".to_owned());
                    Verdict::Fail(text)
                });
                let _ = sender.send((index, verdict));
            })
        })
        .collect();
    drop(sender);
    let mut verdicts: Vec<Option<Verdict>> = (0..count).map(|_| None).collect();
    for (index, verdict) in receiver {
        verdicts[index] = Some(verdict);
    }
    for worker in workers {
        let _ = worker.join();
    }
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    let mut failures = Vec::new();
    for (name, verdict) in names.iter().zip(verdicts) {
        match verdict.unwrap_or_else(|| Verdict::Fail("the test did not report".to_owned())) {
            Verdict::Pass => {
                passed += 1;
                println!("test {name} ... ok");
            }
            Verdict::Skip(reason) => {
                skipped += 1;
                println!("test {name} ... skipped: {reason}");
            }
            Verdict::Fail(why) => {
                failed += 1;
                println!("test {name} ... FAILED");
                failures.push((name, why));
            }
        }
    }
    if !failures.is_empty() {
        println!("\nfailures:");
        for (name, why) in &failures {
            println!("\n---- {name} ----\n{why}");
        }
    }
    println!(
        "\ntest result: {}. {passed} passed; {failed} failed; {skipped} skipped; {} filtered out; finished in {:.2}s\n",
        if failed == 0 { "ok" } else { "FAILED" },
        total - count,
        started.elapsed().as_secs_f64()
    );
    std::process::exit(if failed == 0 { 0 } else { 1 })
}

/// One step of an end-to-end script in one column: its error, if it failed, and the table cell.
pub struct StepCell {
    pub error: Option<String>,
    pub cell: String,
}

/// The reference (Go) shim and the candidate side by side, step by step, as daemon_ctr and daemon_docker print and
/// judge them. A step the reference fails on this host (e.g. the Go shim's racy loss of stderr in a file:// log, or
/// `docker stats` reading 0B / 0B where hugetlb is mounted nowhere) says nothing about the candidate: it is marked
/// "(reference fails: not judged)"; when the reference fails more than half the steps the host cannot judge at all.
pub struct Comparison {
    pub table: String,
    pub differences: Vec<String>,
    unjudged: usize,
    steps: usize,
}

impl Comparison {
    /// `header` is the table's first line; `reference` and `candidate` are (column name, cells in step order).
    pub fn new(
        header: String,
        steps: &[&str],
        reference: (&str, &[StepCell]),
        candidate: (&str, &[StepCell]),
    ) -> Comparison {
        let mut table = format!("{header}\n  {:<26} {:<24} {:<24}\n", "step", reference.0, candidate.0);
        let mut differences = Vec::new();
        let mut details = String::new();
        for (index, name) in steps.iter().enumerate() {
            let (r, c) = (&reference.1[index], &candidate.1[index]);
            let same = r.error.is_none() == c.error.is_none();
            let judged = r.error.is_none();
            let mark = match (same, judged) {
                (true, _) => "",
                (false, true) => "  <- differs",
                (false, false) => "  (reference fails: not judged)",
            };
            table.push_str(&format!("  {:<26} {:<24} {:<24}{}\n", name, r.cell, c.cell, mark));
            if !same && judged {
                differences.push(name.to_string());
            }
            for (column, step) in [(reference.0, r), (candidate.0, c)] {
                if let Some(error) = &step.error {
                    details.push_str(&format!("  {name} [{column}]: {error}\n"));
                }
            }
        }
        if !details.is_empty() {
            table.push_str("failures:\n");
            table.push_str(&details);
        }
        let unjudged = reference.1.iter().filter(|s| s.error.is_some()).count();
        if unjudged > 0 {
            table.push_str(
                "note: a step the reference fails is not judged by this test (both columns may fail it alike)\n",
            );
        }
        Comparison { table, differences, unjudged, steps: steps.len() }
    }

    /// The verdict: the host cannot judge when the reference fails most steps; the lab's clean-up notes fail; then
    /// every judged difference fails, with `logs` (daemon log tails) appended.
    pub fn verdict(&self, test: &str, reference: &str, candidate: &str, notes: &[String], logs: &str) -> Verdict {
        if self.unjudged * 2 > self.steps {
            return Verdict::Fail(format!(
                "{test}: the reference shim fails {} of {} steps: the host cannot judge the {candidate}\n{}",
                self.unjudged, self.steps, self.table
            ));
        }
        if !notes.is_empty() {
            return Verdict::Fail(format!("{test}: the lab's clean-up had to undo: {notes:#?}"));
        }
        if !self.differences.is_empty() {
            return Verdict::Fail(format!(
                "{test}: {candidate} differs from {reference} in {:?}\n{}\n{logs}",
                self.differences, self.table
            ));
        }
        Verdict::Pass
    }
}
