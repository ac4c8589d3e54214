//! From what the user asked for (a runtime name, a binary, candidate files) to planned candidates: resolved to a
//! binary and checked against the host, or unavailable with the reason and the install hint.
use std::path::PathBuf;
use std::sync::Arc;

use crate::candidate::{Candidate, MOCK_RUNTIME};
use crate::context::Target;
use crate::host;
use crate::run::Planned;

#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    NotInstalled(String),
}

/// containerd's binary name for a runtime name: the last two dot-separated parts, `containerd-shim-<a>-<b>`.
pub fn shim_binary_name(name: &str) -> Option<String> {
    let parts: Vec<&str> = name.split('.').collect();
    (parts.len() >= 2).then(|| format!("containerd-shim-{}-{}", parts[parts.len() - 2], parts[parts.len() - 1]))
}

/// Docker's gate for names a user may pass: names only, never paths (moby 547da0d575).
pub fn check_runtime_name(name: &str) -> Result<(), SelectError> {
    if name.starts_with('/') || name.contains('/') {
        return Err(SelectError::Refused(format!(
            "--runtime {name:?} is a path: Docker refuses runtime names that containerd would treat as a path \
             (absolute or containing `/`), since they would let an API user run any binary as the shim \
             (moby 547da0d575). Pass a runtime name like io.containerd.runc.v2, or use --runtime-binary PATH \
             to test a binary by path (such a run is not certified by name)"
        )));
    }
    if shim_binary_name(name).is_none() {
        return Err(SelectError::Refused(format!(
            "--runtime {name:?} is not a runtime name: containerd needs at least one `.` \
             (e.g. io.containerd.runc.v2 becomes containerd-shim-runc-v2)"
        )));
    }
    Ok(())
}

/// Resolves a runtime name to a shim binary as containerd does (PATH, then next to the daemon binary, which for
/// shimcompat standing in for containerd is its own directory: that is where the bundled mock is built).
pub fn resolve_runtime(name: &str) -> Result<PathBuf, SelectError> {
    check_runtime_name(name)?;
    let binary = shim_binary_name(name).unwrap_or_default();
    if let Some(found) = host::which(&binary) {
        return Ok(found);
    }
    for dir in host::bundled_dirs() {
        let candidate = dir.join(&binary);
        if host::is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    let hint = if name == MOCK_RUNTIME {
        " (the bundled mock is built by `cargo build` next to the shimcompat binary)".to_string()
    } else {
        String::new()
    };
    Err(SelectError::NotInstalled(format!(
        "runtime {name:?}: binary {binary} not found on PATH or next to shimcompat{hint}"
    )))
}

/// Plans one candidate: resolves its binary and checks what it needs from the host.
pub fn plan(candidate: Candidate, faults: Option<&str>) -> Planned {
    let unavailable = |candidate: Candidate, reason: String| {
        let reason = if candidate.install.is_empty() { reason } else { format!("{reason}; install: {}", candidate.install) };
        Planned::Unavailable { candidate, reason }
    };
    let binary = match (&candidate.runtime, &candidate.runtime_binary) {
        (Some(name), _) => match resolve_runtime(name) {
            Ok(path) => path,
            Err(e) => return unavailable(candidate, e.to_string()),
        },
        (None, Some(path)) => {
            if !host::is_executable(path) {
                let reason = format!("{} is not an executable file", path.display());
                return unavailable(candidate, reason);
            }
            path.clone()
        }
        (None, None) => return unavailable(candidate, "no runtime name or binary".into()),
    };
    if let Some(reason) = missing_needs(&candidate) {
        return unavailable(candidate, reason);
    }
    Planned::Ready(Arc::new(Target::new(candidate, binary, faults.map(str::to_string))))
}

/// The first thing the host lacks for this candidate.
pub fn missing_needs(candidate: &Candidate) -> Option<String> {
    let needs = &candidate.needs;
    if needs.root && !host::is_root() {
        return Some("needs root".into());
    }
    if needs.kvm && !host::kvm_usable() {
        return Some("no usable /dev/kvm".into());
    }
    if let Some(wanted) = &needs.cgroup {
        let layout = host::cgroup_layout().to_string();
        if !wanted.split('|').any(|w| w.trim() == layout) {
            return Some(format!("needs cgroup layout {wanted}, this host is {layout}"));
        }
    }
    for binary in &needs.binaries {
        if host::which(binary).is_none() {
            return Some(format!("{binary} not on PATH"));
        }
    }
    if let Some(probe) = &needs.probe {
        let ok = std::process::Command::new("sh")
            .arg("-c")
            .arg(probe)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            return Some(format!("host probe failed: {probe}"));
        }
    }
    None
}
