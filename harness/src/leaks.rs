//! What a case left behind after its teardown: processes, sockets, mounts, cgroups, runtime state.
//!
//! Attribution uses a marker in the environment: every shim a case launches gets `SHIMCOMPAT_TRIAL=<marker>`, and so
//! does every container process (config.json and exec specs), so whatever a shim spawned — the OCI runtime,
//! `runc init`, container processes, a stray fork — carries it, even after it has been re-parented.
use std::path::PathBuf;

use crate::process::marked_processes;

/// Everything needed to look for one case's leftovers.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    pub marker: String,
    pub bundle_dirs: Vec<PathBuf>,
    pub container_ids: Vec<String>,
    pub sockets: Vec<PathBuf>,
    /// `<runtime root>/<namespace>` of a runc-style runtime.
    pub runtime_state: Option<PathBuf>,
    /// The trial's tracking cgroup (see [`Tracking`]): every shim it launched starts in it.
    pub cgroup: Option<PathBuf>,
}

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
        if !crate::host::is_root() {
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
        .filter(|pid| crate::process::pid_alive(*pid))
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
            if let Some(line) = crate::process::kill_pid(pid) {
                killed.push(line);
            }
        }
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    for d in dirs.iter().rev() {
        while std::fs::remove_dir(d).is_err() && d.exists() && std::time::Instant::now() < deadline {
            crate::process::reap_orphans();
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    killed
}

/// Mount points at or under any of `dirs`.
pub fn mounts_under(dirs: &[PathBuf]) -> Vec<String> {
    dirs.iter().flat_map(|d| crate::fstree::mounts_under(d)).collect()
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

impl Probe {
    /// Everything still present, one line each. Leaked processes are killed after being listed.
    pub fn check(&self) -> Vec<String> {
        let mut found = Vec::new();
        for pid in marked_processes(&self.marker) {
            if let Some(line) = crate::process::kill_pid(pid) {
                found.push(format!("process {line}"));
            }
        }
        if let Some(cgroup) = &self.cgroup {
            for line in remove_tracking_tree(cgroup) {
                found.push(format!("process {line} (found by the trial's cgroup: it had shed the marker)"));
            }
        }
        for socket in &self.sockets {
            // Only a socket counts (and goes): the path is the shim's word.
            if crate::shim::launch::remove_socket(socket) {
                found.push(format!("socket {}", socket.display()));
            }
        }
        for mount in mounts_under(&self.bundle_dirs) {
            found.push(format!("mount {mount}"));
            let _ = nix::mount::umount2(mount.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        for id in &self.container_ids {
            for cgroup in cgroups_for(id) {
                found.push(format!("cgroup {}", cgroup.display()));
                let _ = std::fs::remove_dir(&cgroup);
            }
            if let Some(state) = &self.runtime_state {
                let dir = state.join(id);
                if dir.exists() {
                    // Listed, then removed (its processes went above): nothing of the case outlives the run.
                    found.push(format!("runtime state {}", dir.display()));
                    let _ = std::fs::remove_dir_all(&dir);
                }
            }
        }
        found
    }
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

/// Where a shim that ignores `socket_dir` puts its socket (containerd's own socket directory).
pub const CONTAINERD_SOCKET_DIR: &str = "/run/containerd/s";

/// Where other container software on the host mounts as it runs containers (Docker, a host containerd's own
/// bundles and snapshots, the kubelet, network namespaces): mounts appearing there during a run are not counted.
const OTHER_DAEMONS: &[&str] = &[
    "/var/lib/docker",
    "/run/docker",
    "/var/lib/containerd",
    "/run/containerd/io.containerd.runtime.v1.linux",
    "/run/containerd/io.containerd.runtime.v2.task",
    "/run/containerd/io.containerd.grpc.v1.cri",
    "/var/lib/kubelet",
    "/run/netns",
    "/var/run/netns",
    "/run/user",
];

/// The host as a run found it, to tell at the end what appeared outside the run's own directories: mounts (a shim
/// that mounts outside its bundle) and files in /run/containerd/s (a shim that leaves a stray file there). The run's
/// own mounts and sockets, and those of other shimcompat runs alive at the time, are not counted.
#[derive(Debug, Default)]
pub struct HostWatch {
    mount_ids: std::collections::BTreeSet<u64>,
    socket_dir: std::collections::BTreeSet<std::ffi::OsString>,
}

fn mount_table() -> Vec<(u64, String)> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let id = fields.next()?.parse().ok()?;
            let point = fields.nth(3)?;
            Some((id, point.replace("\\040", " ")))
        })
        .collect()
}

fn socket_dir_names() -> std::collections::BTreeSet<std::ffi::OsString> {
    std::fs::read_dir(CONTAINERD_SOCKET_DIR).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default()
}

impl HostWatch {
    pub fn capture() -> HostWatch {
        HostWatch { mount_ids: mount_table().into_iter().map(|(id, _)| id).collect(), socket_dir: socket_dir_names() }
    }

    /// What appeared since `capture` and is still there, outside `own` (the run's directories and sockets) and
    /// outside every live shimcompat run's; one line each. Nothing is removed: it may not be the run's.
    pub fn appeared(&self, own: &[PathBuf]) -> Vec<String> {
        let mut theirs: Vec<PathBuf> = own.to_vec();
        for (record, sockets) in crate::registry::live() {
            theirs.push(record.workdir);
            theirs.push(record.sockets);
            theirs.extend(sockets);
        }
        let excluded = |path: &std::path::Path| theirs.iter().any(|t| path.starts_with(t));
        let mut found = Vec::new();
        for (id, point) in mount_table() {
            let path = std::path::Path::new(&point);
            if !self.mount_ids.contains(&id) && !excluded(path) && !OTHER_DAEMONS.iter().any(|d| path.starts_with(d)) {
                found.push(format!("mount {point} appeared during the run, outside its directories (left mounted: not provably the run's)"));
            }
        }
        for name in socket_dir_names() {
            let path = std::path::Path::new(CONTAINERD_SOCKET_DIR).join(&name);
            // A socket something still listens on belongs to a live shim, and every process of this run is gone
            // by now: another containerd's shim on this host. A dead socket or any other file is a leftover.
            let live = std::os::unix::net::UnixStream::connect(&path).is_ok();
            if !self.socket_dir.contains(&name) && !excluded(&path) && !live {
                found.push(format!(
                    "file {} appeared during the run (left in place: not provably the run's)",
                    path.display()
                ));
            }
        }
        found
    }
}
