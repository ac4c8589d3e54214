//! The run as a stream of events, and the reporters that consume them (model: cargo-nextest's run / report split).
//! The runner emits events as they happen; the console prints them, file writers render the finished report.
//! `main.rs` only picks reporters from the flags.
use crate::report::{Report, TrialResult};
use crate::select::Planned;

pub enum RunEvent<'a> {
    /// Every candidate's verdict is known and `trials` trials are about to run.
    Started { plans: &'a [Planned], trials: usize },
    /// One trial finished (retries included).
    TrialFinished { result: &'a TrialResult, total: usize },
    /// A trial has been running for over `seconds` (emitted on a terminal only).
    SlowTrial { name: &'a str, seconds: u64 },
    /// The run is over (interrupted or not) and its report complete.
    Finished { report: &'a Report },
}

/// A consumer of a run's events. An error is kept in the report's `output_errors` (the run goes on).
pub trait Reporter: Send {
    fn event(&mut self, event: &RunEvent<'_>) -> Result<(), String>;
}
