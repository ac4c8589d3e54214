//! What this machine offers: root, KVM, the cgroup layout, binaries on PATH (used to skip candidates with a
//! reason), the host fingerprint a report carries, and what an installed binary is (its version line, sha256).
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};

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

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct HostFingerprint {
    pub kernel: String,
    pub arch: String,
    pub os: String,
    pub cgroup: String,
    pub cgroup2_controllers: String,
    pub kvm: bool,
    pub root: bool,
    pub containerd: Option<String>,
}

pub fn fingerprint() -> HostFingerprint {
    let uname = nix::sys::utsname::uname().ok();
    let os = std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string()))
        .unwrap_or_default();
    HostFingerprint {
        kernel: uname.as_ref().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default(),
        arch: uname.as_ref().map(|u| u.machine().to_string_lossy().into_owned()).unwrap_or_default(),
        os,
        cgroup: cgroup_layout().to_string(),
        cgroup2_controllers: ["/sys/fs/cgroup/unified/cgroup.controllers", "/sys/fs/cgroup/cgroup.controllers"]
            .iter()
            .find_map(|p| std::fs::read_to_string(p).ok())
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        kvm: kvm_usable(),
        root: is_root(),
        containerd: which("containerd").and_then(|p| version_of(&p, "--version")),
    }
}

/// The first line a binary prints for a version flag (bounded in time).
pub fn version_of(binary: &Path, flag: &str) -> Option<String> {
    let mut command = std::process::Command::new(binary);
    command
        .arg(flag)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = crate::process::reaper::spawn_std(&mut command).ok()?;
    let pid = child.id();
    let result = finish_version(&mut child);
    crate::process::reaper::release(pid);
    let output = result?;
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    // Go shims print "<binary>:\n  Version: X\n  Revision: Y"; keep what identifies the build.
    let useful: Vec<&str> = lines.iter().copied().filter(|l| !l.ends_with(':')).take(2).collect();
    (!useful.is_empty()).then(|| useful.join("; "))
}

fn finish_version(child: &mut std::process::Child) -> Option<std::process::Output> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                use std::io::Read;
                let mut stdout = Vec::new();
                let mut stderr = Vec::new();
                if let Some(mut pipe) = child.stdout.take() {
                    let _ = pipe.read_to_end(&mut stdout);
                }
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = pipe.read_to_end(&mut stderr);
                }
                return Some(std::process::Output { status, stdout, stderr });
            }
            Ok(None) if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

pub fn sha256_of(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    Some(hex::encode(Sha256::digest(&bytes)))
}
