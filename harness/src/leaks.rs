//! What a case left behind after its teardown: processes, sockets, mounts, cgroups, runtime state.
//!
//! Attribution uses a marker in the environment: every shim a case launches gets `SHIMCOMPAT_TRIAL=<marker>`, and so
//! does every container process (config.json and exec specs), so whatever a shim spawned — the OCI runtime,
//! `runc init`, container processes, a stray fork — carries it, even after it has been re-parented.
use std::path::PathBuf;

use crate::process::cgroup::{cgroups_for, remove_tracking_tree};
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

/// Mount points at or under any of `dirs`.
pub fn mounts_under(dirs: &[PathBuf]) -> Vec<String> {
    dirs.iter().flat_map(|d| crate::fstree::mounts_under(d)).collect()
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
            if crate::fstree::remove_socket(socket) {
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
