//! Tracking a run's processes by cgroup, and removing the cgroups its containers were given.
use std::path::PathBuf;

/// Tracking what shims start by a cgroup, which a process cannot shed by clearing its environment, changing
/// directory, calling setsid or double-forking (the marker and the cwd check miss such a process). As root, every
/// run gets `<cgroup2 mount>/shimcompat-run-<nonce>` and every trial a child of it; a shim's `start` (and `delete`)
/// starts in the trial's (shim::cgspawn; where clone3 cannot, it moves itself in before it execs). It holds no
/// controllers and limits nothing: it only lists processes.
/// A runtime that puts its container in a cgroup of its own moves the container out, which is fine: containers are
/// tracked by their cgroupsPath and the marker. Without root, or without a cgroup2 mount, there is no tracking.
#[derive(Debug)]
pub struct Tracking {
    pub root: PathBuf,
}

/// Prefix of a run's tracking cgroup.
pub const TRACKING_PREFIX: &str = "shimcompat-run-";

/// The cgroup2 mount point, if there is one (/sys/fs/cgroup on a v2 host, /sys/fs/cgroup/unified on a hybrid one).
pub fn cgroup2_mount() -> Option<PathBuf> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    table.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let point = left.split_whitespace().nth(4)?;
        (right.split_whitespace().next()? == "cgroup2").then(|| PathBuf::from(point))
    })
}

impl Tracking {
    pub fn create(nonce: &str) -> Option<Tracking> {
        if !nix::unistd::geteuid().is_root() {
            return None;
        }
        let root = cgroup2_mount()?.join(format!("{TRACKING_PREFIX}{nonce}"));
        std::fs::create_dir(&root).ok()?;
        Some(Tracking { root })
    }

    /// A trial's cgroup (created now).
    pub fn trial(&self, marker: &str) -> Option<PathBuf> {
        let dir = self.root.join(marker);
        std::fs::create_dir(&dir).ok().map(|_| dir)
    }

    /// Kills what is left in any trial's cgroup and removes them all; one line per process killed.
    pub fn remove(&self) -> Vec<String> {
        remove_tracking_tree(&self.root)
    }
}

/// Live pids in a cgroup.
pub fn cgroup_pids(dir: &std::path::Path) -> Vec<u32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .filter(|pid| super::pid_alive(*pid))
        .collect()
}

/// Kills every process in `dir` (a tracking cgroup) and its children, then removes them, retrying for up to a
/// second while killed processes finish exiting. Returns one line per process killed.
pub fn remove_tracking_tree(dir: &std::path::Path) -> Vec<String> {
    let mut killed = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    if let Ok(children) = std::fs::read_dir(dir) {
        dirs.extend(children.flatten().filter(|c| c.path().is_dir()).map(|c| c.path()));
    }
    for d in &dirs {
        for pid in cgroup_pids(d) {
            if let Some(line) = super::kill_pid(pid) {
                killed.push(line);
            }
        }
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    for d in dirs.iter().rev() {
        while std::fs::remove_dir(d).is_err() && d.exists() && std::time::Instant::now() < deadline {
            super::reap_orphans();
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    killed
}

/// cgroup directories for `/shimcompat/<id>` (the cgroupsPath the harness gives every container).
pub fn cgroups_for(id: &str) -> Vec<PathBuf> {
    let Ok(controllers) = std::fs::read_dir("/sys/fs/cgroup") else { return Vec::new() };
    controllers
        .filter_map(|c| c.ok())
        .map(|c| c.path().join("shimcompat").join(id))
        .chain(std::iter::once(PathBuf::from("/sys/fs/cgroup/shimcompat").join(id)))
        .filter(|p| p.is_dir())
        .collect()
}

/// The container cgroups of a whole run (container ids end in `-<run nonce>`; the harness gives every container
/// the cgroupsPath `/shimcompat/<id>`), in every v1 controller, the unified hierarchy and a v2 root.
pub fn run_cgroups(nonce: &str) -> Vec<PathBuf> {
    let suffix = format!("-{nonce}");
    let mut parents: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .map(|d| d.flatten().map(|c| c.path().join("shimcompat")).collect())
        .unwrap_or_default();
    parents.push(PathBuf::from("/sys/fs/cgroup/shimcompat"));
    let mut found = Vec::new();
    for parent in parents {
        let Ok(groups) = std::fs::read_dir(&parent) else { continue };
        for group in groups.flatten() {
            if group.file_name().to_string_lossy().ends_with(&suffix) && group.path().is_dir() {
                found.push(group.path());
            }
        }
    }
    found
}

/// Removes the cgroups of a whole run, once its processes are gone.
pub fn remove_run_cgroups(nonce: &str) {
    for cgroup in run_cgroups(nonce) {
        let _ = std::fs::remove_dir(cgroup);
    }
}

/// Removes the empty `/shimcompat` cgroup parents runtimes created for the run's containers.
pub fn remove_cgroup_parents() {
    let Ok(controllers) = std::fs::read_dir("/sys/fs/cgroup") else { return };
    for controller in controllers.flatten() {
        let _ = std::fs::remove_dir(controller.path().join("shimcompat"));
    }
    let _ = std::fs::remove_dir("/sys/fs/cgroup/shimcompat");
}
