//! What this machine offers: root, KVM, the cgroup layout, binaries on PATH. Used to skip candidates with a reason.
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupLayout {
    V1,
    V2,
    Hybrid,
    Unknown,
}

impl std::fmt::Display for CgroupLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CgroupLayout::V1 => "v1",
            CgroupLayout::V2 => "v2",
            CgroupLayout::Hybrid => "hybrid",
            CgroupLayout::Unknown => "unknown",
        })
    }
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// KVM is usable when /dev/kvm opens read-write.
pub fn kvm_usable() -> bool {
    std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok()
}

pub fn cgroup_layout() -> CgroupLayout {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v1 = false;
    let mut v2_root = false;
    let mut v2_elsewhere = false;
    for line in mounts.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let mount_point = left.split_whitespace().nth(4).unwrap_or("");
        let fstype = right.split_whitespace().next().unwrap_or("");
        match fstype {
            "cgroup" => v1 = true,
            "cgroup2" if mount_point == "/sys/fs/cgroup" => v2_root = true,
            "cgroup2" => v2_elsewhere = true,
            _ => {}
        }
    }
    match (v1, v2_root, v2_elsewhere) {
        (false, true, _) => CgroupLayout::V2,
        (true, _, true) => CgroupLayout::Hybrid,
        (true, _, false) => CgroupLayout::V1,
        _ => CgroupLayout::Unknown,
    }
}

/// The first executable named `name` on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| is_executable(p))
}

pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// Directories that hold shimcompat's own binaries (the bundled mock shim is built next to `shimcompat`): the
/// directory of the running executable and, for test binaries in `target/*/deps`, its parent.
pub fn bundled_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            dirs.push(dir.to_path_buf());
            if dir.file_name().is_some_and(|n| n == "deps") {
                if let Some(parent) = dir.parent() {
                    dirs.push(parent.to_path_buf());
                }
            }
        }
    }
    dirs
}

/// The `shimcompat` executable: the running one, or (for the test binaries in `target/*/deps`) the one built next to
/// them. It is the `-publish-binary` a shim is given and the logging binary of the `binary://` cases.
pub fn shimcompat_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    if exe.file_name().is_some_and(|n| n == "shimcompat") {
        return Some(exe);
    }
    bundled_dirs().into_iter().map(|d| d.join("shimcompat")).find(|p| is_executable(p))
}

/// Whether a container on this host can be given a memory limit, and whether swap can be limited with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLimits {
    /// The OCI `swap` (memory+swap) can be set: cgroup v2 (runc ignores a `memory.swap.max` it cannot write when
    /// asked for 0), or v1 with swap accounting (`memory.memsw.limit_in_bytes`).
    pub swap: bool,
}

/// Where a runtime on this host can set `linux.resources.memory.limit`: as root, with a memory controller (the v1
/// hierarchy at /sys/fs/cgroup/memory, else `memory` among the v2 root's controllers). `Err` says why not.
pub fn memory_limits() -> Result<MemoryLimits, String> {
    if !is_root() {
        return Err(format!(
            "setting a memory limit needs root (creating a cgroup); running as uid {}",
            nix::unistd::geteuid()
        ));
    }
    let v1 = Path::new("/sys/fs/cgroup/memory");
    if v1.join("memory.limit_in_bytes").exists() || v1.join("tasks").exists() {
        return Ok(MemoryLimits { swap: v1.join("memory.memsw.limit_in_bytes").exists() });
    }
    let controllers = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").unwrap_or_default();
    if controllers.split_whitespace().any(|c| c == "memory") {
        return Ok(MemoryLimits { swap: true });
    }
    Err(format!(
        "no memory controller on this host (cgroup layout {}: neither /sys/fs/cgroup/memory nor `memory` in /sys/fs/cgroup/cgroup.controllers)",
        cgroup_layout()
    ))
}
