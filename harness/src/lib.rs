//! shimcompat: a conformance suite for containerd shims, driven at the shim boundary.
//!
//! The path a run takes: candidate -> resolve -> host -> bundle -> shim -> cases -> report (see shared/design.md).
pub mod bundle;
pub mod candidate;
pub mod cases;
pub mod context;
pub mod doctor;
pub mod fstree;
pub mod host;
pub mod leaks;
pub mod profile;
pub mod reaper;
pub mod registry;
pub mod report;
pub mod resolve;
pub mod run;
pub mod select;
pub mod shim;
