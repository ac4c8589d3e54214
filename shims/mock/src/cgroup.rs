//! Memory cgroups, for containers whose spec sets `linux.resources.memory.limit` (and only for those: every other
//! container stays a plain process group, as before).
//!
//! The cgroup is `<memory hierarchy>/<cgroupsPath>` (`/<namespace>/<id>` when the spec has none), as runc's cgroupfs
//! driver places it: v1 at /sys/fs/cgroup/memory (also on a hybrid host), else the v2 unified hierarchy at
//! /sys/fs/cgroup. The limit is written before any process joins; processes join while they are still held before
//! exec (the init on its start gate, an exec on a gate of its own), so the payload never runs outside it. OOM kills
//! are counted by the kernel (v1 `memory.oom_control`, v2 `memory.events`: `oom_kill`), which raises the count
//! before it sends the SIGKILL; the service reads the count before it publishes an exit, so /tasks/oom comes first.
//! Only the container's own directory is removed at Delete and by the `delete` action; parent directories stay,
//! as runc leaves them (a concurrent create may be using them).
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use oci_spec::runtime::Spec;

const V1_ROOT: &str = "/sys/fs/cgroup/memory";
const V2_ROOT: &str = "/sys/fs/cgroup";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

#[derive(Debug)]
pub struct MemoryCgroup {
    pub dir: PathBuf,
    version: Version,
}

/// The memory limit and memory+swap limit the spec asks for, when it sets a (positive) limit.
pub fn requested(spec: &Spec) -> Option<(i64, Option<i64>)> {
    let memory = spec.linux().as_ref()?.resources().as_ref()?.memory().as_ref()?;
    let limit = memory.limit().filter(|l| *l > 0)?;
    Some((limit, memory.swap().filter(|s| *s > 0)))
}

fn host_version() -> Result<Version, String> {
    let v1 = Path::new(V1_ROOT);
    if v1.join("memory.limit_in_bytes").exists() {
        return Ok(Version::V1);
    }
    let controllers = std::fs::read_to_string(Path::new(V2_ROOT).join("cgroup.controllers")).unwrap_or_default();
    if controllers.split_whitespace().any(|c| c == "memory") {
        return Ok(Version::V2);
    }
    Err("this host has no memory cgroup controller (no /sys/fs/cgroup/memory, no `memory` in /sys/fs/cgroup/cgroup.controllers)".into())
}

/// `cgroupsPath` relative to the hierarchy's root; `/<namespace>/<id>` when the spec names none (or names a systemd
/// `slice:prefix:name`, which the mock does not drive). Refuses `..`, so nothing outside the hierarchy is touched.
fn relative_path(spec: &Spec, namespace: &str, id: &str) -> Result<PathBuf, String> {
    let given = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone());
    let path = match given {
        Some(p) if !p.as_os_str().is_empty() && !p.to_string_lossy().contains(':') => p,
        _ => Path::new(namespace).join(id),
    };
    let mut relative = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => relative.push(part),
            Component::RootDir | Component::CurDir => {}
            _ => return Err(format!("cgroupsPath {} leaves the cgroup hierarchy", path.display())),
        }
    }
    if relative.as_os_str().is_empty() {
        return Err(format!("cgroupsPath {} names the root cgroup", path.display()));
    }
    Ok(relative)
}

fn write(dir: &Path, file: &str, value: &str) -> Result<(), String> {
    std::fs::write(dir.join(file), value).map_err(|e| format!("writing {value:?} to {}: {e}", dir.join(file).display()))
}

impl MemoryCgroup {
    /// The cgroup a container of `spec` has (or would have), without touching anything; `None` when the spec sets
    /// no memory limit or the host has no memory controller.
    pub fn locate(spec: &Spec, namespace: &str, id: &str) -> Option<MemoryCgroup> {
        requested(spec)?;
        let version = host_version().ok()?;
        let relative = relative_path(spec, namespace, id).ok()?;
        let root = if version == Version::V1 { V1_ROOT } else { V2_ROOT };
        Some(MemoryCgroup { dir: Path::new(root).join(relative), version })
    }

    /// Creates the container's cgroup with the spec's limits. `Ok(None)` when the spec sets no memory limit.
    pub fn create(spec: &Spec, namespace: &str, id: &str) -> Result<Option<MemoryCgroup>, String> {
        let Some((limit, swap)) = requested(spec) else { return Ok(None) };
        let euid = unsafe { libc::geteuid() };
        if euid != 0 {
            return Err(format!(
                "linux.resources.memory.limit is set ({limit} bytes), but the mock runs as uid {euid} and cannot create a cgroup"
            ));
        }
        let version = host_version()?;
        let relative = relative_path(spec, namespace, id)?;
        let root = Path::new(if version == Version::V1 { V1_ROOT } else { V2_ROOT });
        let cgroup = MemoryCgroup { dir: root.join(&relative), version };
        if let Err(e) = cgroup.make_dirs(root, &relative).and_then(|_| cgroup.set_limits(limit, swap)) {
            cgroup.remove();
            return Err(e);
        }
        Ok(Some(cgroup))
    }

    fn make_dirs(&self, root: &Path, relative: &Path) -> Result<(), String> {
        let mut dir = root.to_path_buf();
        for part in relative.components() {
            if self.version == Version::V2 {
                // A v2 child has the memory controller only where every ancestor delegates it.
                write(&dir, "cgroup.subtree_control", "+memory")?;
            }
            dir.push(part);
            match std::fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(format!("creating cgroup {}: {e}", dir.display())),
            }
        }
        Ok(())
    }

    fn set_limits(&self, limit: i64, swap: Option<i64>) -> Result<(), String> {
        match self.version {
            Version::V1 => {
                write(&self.dir, "memory.limit_in_bytes", &limit.to_string())?;
                let memsw = self.dir.join("memory.memsw.limit_in_bytes").exists();
                match swap {
                    Some(swap) if memsw => write(&self.dir, "memory.memsw.limit_in_bytes", &swap.to_string())?,
                    // No memory+swap limit to write: keep the container from paging out round its limit.
                    _ => write(&self.dir, "memory.swappiness", "0")?,
                }
            }
            Version::V2 => {
                write(&self.dir, "memory.max", &limit.to_string())?;
                if self.dir.join("memory.swap.max").exists() {
                    // OCI swap is memory+swap; v2 limits swap alone. Unset: no swap at all, as for v1 swappiness 0.
                    let swap_only = swap.map(|s| (s - limit).max(0)).unwrap_or(0);
                    write(&self.dir, "memory.swap.max", &swap_only.to_string())?;
                }
            }
        }
        Ok(())
    }

    /// Moves `pid` (a process still held before exec) into the cgroup.
    pub fn add(&self, pid: i32) -> Result<(), String> {
        write(&self.dir, "cgroup.procs", &pid.to_string())
    }

    /// How many processes the kernel's OOM killer has killed in this cgroup (0 when it cannot be read).
    pub fn oom_kills(&self) -> u64 {
        let file = if self.version == Version::V1 { "memory.oom_control" } else { "memory.events" };
        std::fs::read_to_string(self.dir.join(file))
            .unwrap_or_default()
            .lines()
            .find_map(|line| line.strip_prefix("oom_kill ")?.trim().parse().ok())
            .unwrap_or(0)
    }

    fn procs(&self) -> Vec<i32> {
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Kills whatever is still in the cgroup and removes its directory, waiting (at most 2 s) for the processes to
    /// leave it. Blocking: call it off the async executor. Returns whether the directory is gone.
    pub fn remove(&self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            if !self.dir.exists() {
                return true;
            }
            for pid in self.procs() {
                if pid > 1 {
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            match std::fs::remove_dir(&self.dir) {
                Ok(()) => return true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return true,
                Err(e) if Instant::now() >= deadline => {
                    log::warn!("removing cgroup {}: {e} (still in it: {:?})", self.dir.display(), self.procs());
                    return false;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Spec {
        serde_json::from_str(json).expect("a spec")
    }

    #[test]
    fn limit_and_path_from_the_spec() {
        let with = spec(
            r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"linux":{"cgroupsPath":"/shimcompat/c1","resources":{"memory":{"limit":33554432,"swap":33554432}}}}"#,
        );
        assert_eq!(requested(&with), Some((32 << 20, Some(32 << 20))));
        assert_eq!(relative_path(&with, "ns", "c1").unwrap(), PathBuf::from("shimcompat/c1"));
        let without = spec(r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"linux":{}}"#);
        assert_eq!(requested(&without), None);
        assert_eq!(relative_path(&without, "ns", "c1").unwrap(), PathBuf::from("ns/c1"));
        let escaping =
            spec(r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"linux":{"cgroupsPath":"/a/../../etc"}}"#);
        assert!(relative_path(&escaping, "ns", "c1").is_err());
    }
}
