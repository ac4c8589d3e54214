//! What a case left behind after its teardown: processes, sockets, mounts, cgroups, runtime state.
//!
//! Attribution uses a marker in the environment: every shim a case launches gets `SHIMCOMPAT_TRIAL=<marker>`, and so
//! does every container process (config.json and exec specs), so whatever a shim spawned — the OCI runtime,
//! `runc init`, container processes, a stray fork — carries it, even after it has been re-parented.
use std::path::PathBuf;

pub const MARKER_VAR: &str = "SHIMCOMPAT_TRIAL";

/// Everything needed to look for one case's leftovers.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    pub marker: String,
    pub bundle_dirs: Vec<PathBuf>,
    pub container_ids: Vec<String>,
    pub sockets: Vec<PathBuf>,
    /// `<runtime root>/<namespace>` of a runc-style runtime.
    pub runtime_state: Option<PathBuf>,
}

/// Live processes carrying `marker` in their environment.
pub fn marked_processes(marker: &str) -> Vec<u32> {
    marked_where(&format!("{MARKER_VAR}={marker}"), false)
}

/// Live processes of a whole run (markers are `<run nonce>-<n>`).
pub fn run_processes(nonce: &str) -> Vec<u32> {
    marked_where(&format!("{MARKER_VAR}={nonce}-"), true)
}

fn marked_where(needle: &str, prefix: bool) -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| {
                    env.split(|b| *b == 0).any(|kv| if prefix { kv.starts_with(needle.as_bytes()) } else { kv == needle.as_bytes() })
                })
                .unwrap_or(false)
        })
        .filter(|pid| crate::shim::instance::pid_alive(*pid))
        .collect()
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
            if let Some(line) = crate::shim::instance::kill_pid(pid) {
                found.push(format!("process {line}"));
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
                    found.push(format!("runtime state {}", dir.display()));
                }
            }
        }
        found
    }
}

/// Removes the cgroups of a whole run (container ids end in `-<run nonce>`), once its processes are gone.
pub fn remove_run_cgroups(nonce: &str) {
    let suffix = format!("-{nonce}");
    let Ok(controllers) = std::fs::read_dir("/sys/fs/cgroup") else { return };
    for controller in controllers.flatten() {
        let Ok(groups) = std::fs::read_dir(controller.path().join("shimcompat")) else { continue };
        for group in groups.flatten() {
            if group.file_name().to_string_lossy().ends_with(&suffix) {
                let _ = std::fs::remove_dir(group.path());
            }
        }
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
