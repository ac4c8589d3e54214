//! shimcompat: a conformance suite for containerd shims, driven at the shim boundary.
//!
//! The path a run takes: candidate -> resolve -> host -> bundle -> shim -> cases -> report (see shared/design.md).
pub mod bench;
pub mod bundle;
pub mod candidate;
pub mod cases;
pub mod context;
pub mod doctor;
pub mod fstree;
pub mod host;
pub mod lab;
pub mod leaks;
pub mod process;
pub mod profile;
pub mod registry;
pub mod report;
pub mod resolve;
pub mod run;
pub mod select;
pub mod shim;

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
