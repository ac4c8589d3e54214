//! Runtime name → shim binary, by containerd's rules, and Docker's gate for names a user may pass.
//!
//! - [`containerd`]: how containerd 1.6, 1.7 and 2.x derive a binary name and where they look for it (working
//!   directory, PATH, next to containerd; the cache), with containerd's error wording;
//! - [`docker`]: which names dockerd 20.10, 23–24, 25–27 and 28+ accept for `--runtime` and what it passes on;
//!   [`docker::check_user_runtime_name`] is the harness's own gate for `--runtime`;
//! - [`explain`] and [`cli`]: `shimcompat resolve NAME`;
//! - [`host`]: the real file system and installed daemons behind the model; [`gopath`]: Go path semantics.
//!
//! Sources and test vectors: shared/reference/runtime-names.md. Checked against a running containerd 1.6.20 by
//! tests/resolve_containerd.rs.
pub mod cli;
pub mod containerd;
pub mod docker;
pub mod explain;
pub mod gopath;
pub mod host;

#[cfg(test)]
mod vectors;

pub use cli::{ResolveArgs, ResolveError};
