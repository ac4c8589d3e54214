//! shimcompat: a conformance suite for containerd shims, driven at the shim boundary.
//!
//! The path a run takes: candidate -> resolve -> host -> bundle -> shim -> cases -> report (see shared/design.md);
//! the modules below are declared in that order.
// Modules in the order a run goes through them (tests/architecture.rs holds every module to using only those
// listed before it, bar the back-edges it names and counts down):
// the host and its processes and files,
pub mod process;
pub mod host;
pub mod fstree;
// what is tested: runtime names as containerd resolves them, containerd's profiles, candidate files,
pub mod resolve;
pub mod profile;
pub mod candidate;
// the run's registration and what it may leave behind,
pub mod registry;
pub mod leaks;
// what a shim is given and how it is driven (and real daemons to compare with),
pub mod bundle;
pub mod shim;
pub mod lab;
// cases and their context,
pub mod context;
pub mod cases;
// selecting what runs, running it, reporting it,
pub mod select;
pub mod run;
pub mod report;
// and the commands built on a run.
pub mod doctor;
pub mod bench;

/// `println!` for the console: when stdout is closed (`shimcompat run | head`), a run stops as an interrupt would
/// (trials in flight skipped, everything cleaned up, exit 141) instead of panicking and leaving shims behind.
#[macro_export]
macro_rules! outln {
    () => { $crate::console::line(format_args!("")) };
    ($($arg:tt)*) => { $crate::console::line(format_args!($($arg)*)) };
}

pub mod console {
    use std::io::Write;

    /// Writes one line to stdout; a write error (the reader went away) stops the run in progress.
    pub fn line(args: std::fmt::Arguments) {
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{args}").and_then(|_| out.flush()).is_err() {
            crate::run::stdout_closed();
        }
    }

    /// The same for output already formatted; returns false once stdout is gone.
    pub fn check(result: std::io::Result<()>) {
        if result.is_err() {
            crate::run::stdout_closed();
        }
    }
}
