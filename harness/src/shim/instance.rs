//! A running shim as a case sees it: launched, connected, with its events sink and bundle, and a teardown that
//! leaves nothing behind whatever state the shim is in.
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use containerd_shim_protos::api::ConnectResponse;

use super::events::EventSink;
use super::launch::{self, LaunchSpec, StartReply};
use super::task::TaskClient;
use crate::bundle::Bundle;
use crate::process::{kill_pid, pid_alive, processes_in, processes_naming, reap, wait_gone};

pub struct Shim {
    pub launch: LaunchSpec,
    pub reply: StartReply,
    pub task: TaskClient,
    pub events: Arc<EventSink>,
    /// Bundles of every container this shim was asked to create (the first is the one it was started for).
    pub bundles: Mutex<Vec<Bundle>>,
    /// The first Connect reply (containerd calls Connect after Create, for the task pid): the shim's pid.
    pub connect: Mutex<Option<ConnectResponse>>,
    /// Ids created through this shim and not yet deleted by the case; teardown deletes them.
    pub live_ids: Mutex<Vec<String>>,
    /// How long `start` and the dial to its address took (for `shimcompat bench`).
    pub timings: LaunchTimings,
}

/// The two halves of bringing a shim up, as the harness measured them.
#[derive(Debug, Default, Clone, Copy)]
pub struct LaunchTimings {
    /// From spawning `<shim> start` to its address read from stdout (the process exited).
    pub start: Duration,
    /// Dialling that address as the containerd line does (ttrpc connection ready).
    pub dial: Duration,
}

/// What teardown did, for the hygiene report.
#[derive(Debug, Default, Clone)]
pub struct TeardownReport {
    /// Processes that had to be SIGKILLed (pid and command line).
    pub killed: Vec<String>,
    /// Processes of the case still running once the shim had gone, before containerd's `delete` action ran.
    pub left_after_shutdown: Vec<String>,
    /// The `delete` action containerd runs after the disconnect, when it did not finish in time (a hang).
    pub delete_action_hung: Vec<String>,
    /// Mounts still under a bundle when it was removed (detached then).
    pub mounts_left: Vec<String>,
    pub socket_removed: Option<PathBuf>,
    pub swept_containers: Vec<String>,
}

impl Shim {
    pub fn id(&self) -> &str {
        &self.launch.id
    }

    /// The shim pid from Connect, or 0 while no Connect has been made.
    pub fn shim_pid(&self) -> u32 {
        self.connect_reply().map(|c| c.shim_pid).unwrap_or(0)
    }

    pub fn connect_reply(&self) -> Option<ConnectResponse> {
        self.connect.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Remembers the first Connect reply.
    pub fn record_connect(&self, reply: &ConnectResponse) {
        let mut known = self.connect.lock().unwrap_or_else(|p| p.into_inner());
        if known.is_none() {
            *known = Some(reply.clone());
        }
    }

    pub fn bundle_dir(&self) -> PathBuf {
        self.launch.bundle.clone()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.bundles.lock().unwrap_or_else(|p| p.into_inner()).first().map(|b| b.log_tail(lines)).unwrap_or_default()
    }

    pub fn note_created(&self, id: &str) {
        self.live_ids.lock().unwrap_or_else(|p| p.into_inner()).push(id.to_string());
    }

    pub fn note_deleted(&self, id: &str) {
        self.live_ids.lock().unwrap_or_else(|p| p.into_inner()).retain(|known| known != id);
    }

    /// containerd's end of one task in a shim that goes on serving others (shimTask.delete, 1.6-2.x), once the task
    /// was deleted: Shutdown (the shim stays while it has tasks), the `delete` action for that bundle when the
    /// task's connection closes (where the profile runs it, with the cleanup deadline), then bundle.Delete: the
    /// rootfs unmounted and the bundle removed. Returns what containerd could not clean: a hung `delete` action,
    /// mounts that had to be detached.
    pub async fn release_task(&self, id: &str, delete_action: bool) -> Vec<String> {
        let mut left = Vec::new();
        // containerd only logs a failed Shutdown here.
        let _ = self.task.shutdown_after_delete(id).await;
        let bundle = {
            let mut bundles = self.bundles.lock().unwrap_or_else(|p| p.into_inner());
            // The shim's own first bundle stays: the shim runs in it.
            let at = bundles.iter().position(|b| b.id == id).filter(|at| *at > 0);
            at.map(|at| bundles.remove(at))
        };
        let Some(mut bundle) = bundle else { return left };
        if delete_action {
            let spec = LaunchSpec { id: id.to_string(), bundle: bundle.dir.clone(), ..self.launch.clone() };
            if let Err(error @ launch::LaunchError::DeleteTimeout { .. }) = launch::delete_action(&spec).await {
                left.push(format!("{id}: {error}"));
            }
        }
        left.extend(bundle.delete_as_containerd().into_iter().map(|m| format!("{id}: mount {m}")));
        left
    }

    /// containerd's teardown, first phase: for each task State and Delete, then Shutdown (with the shutdown
    /// deadline), and wait for the process to go. Returns whether the shim and everything running in its bundles
    /// went by themselves.
    pub async fn stop(&self, grace: Duration) -> bool {
        let ids: Vec<String> = self.live_ids.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let quick = self.task.with_timeout(grace);
        for id in &ids {
            // Stop it first: a running task cannot be deleted. The client checks the status before it deletes.
            let _ = quick.kill(id, "", libc::SIGKILL as u32, true).await;
            let _ = quick.wait(id, "", grace).await;
            // The tasks service reads the state before a Delete (Tasks.Get / task.Delete): the task-state deadline.
            let _ = quick.state_for_service(id, "").await;
            let _ = quick.delete(id, "").await;
        }
        let _ = quick.shutdown_after_delete(self.id()).await;
        // Wait for the shim to go: the pid Connect gave, and anything running in our bundles (the shim runs there;
        // Connect may have misreported its pid, and a hung `start` runs there too).
        let dirs = self.bundle_dirs();
        let pid = self.shim_pid();
        let deadline = Instant::now() + grace;
        if pid > 0 && is_shim_of(pid, &dirs) {
            // The exit is seen when it happens (pidfd), not at the next poll.
            wait_gone(pid, grace).await;
        }
        loop {
            let pid_gone = pid == 0 || !pid_alive(pid) || !is_shim_of(pid, &dirs);
            if pid_gone && processes_in(&dirs).is_empty() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn bundle_dirs(&self) -> Vec<PathBuf> {
        self.bundles.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|b| b.dir.clone()).collect()
    }

    /// Second phase, once the shim has gone: the `delete` action for each of its bundles, as containerd runs it
    /// when a shim's connection closes (with the cleanup timeout; a failure is only logged by containerd, a hang is
    /// a leak).
    pub async fn delete_actions(&self, report: &mut TeardownReport) {
        let bundles: Vec<(String, PathBuf)> = self
            .bundles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|b| (b.id.clone(), b.dir.clone()))
            .collect();
        for (id, dir) in bundles {
            let spec = LaunchSpec { id: id.clone(), bundle: dir, ..self.launch.clone() };
            // containerd only logs what the action answers, or that it failed; a hang is what counts.
            if let Err(error @ launch::LaunchError::DeleteTimeout { .. }) = launch::delete_action(&spec).await {
                report.delete_action_hung.push(format!("{id}: {error}"))
            }
        }
    }

    /// Last phase: force what did not go by itself, remove the socket, sweep the runtime, remove the bundles.
    pub async fn force_cleanup(&self, runtime_sweep: Option<&RuntimeSweep>, report: &mut TeardownReport) {
        let dirs = self.bundle_dirs();
        let pid = self.shim_pid();
        if pid > 0 && is_shim_of(pid, &dirs) {
            if let Some(line) = kill_pid(pid) {
                report.killed.push(format!("shim {line}"));
            }
        }
        for line in processes_naming(&dirs).into_iter().filter_map(kill_pid) {
            report.killed.push(line);
        }
        reap(pid);
        if let Some(path) = launch::socket_path(&self.reply.address) {
            if crate::fstree::remove_socket(&path) {
                report.socket_removed = Some(path);
            }
        }
        if let Some(sweep) = runtime_sweep {
            let all_ids: Vec<String> =
                self.bundles.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|b| b.id.clone()).collect();
            report.swept_containers.extend(sweep.sweep(&all_ids).await);
        }
        self.events.stop().await;
        for bundle in self.bundles.lock().unwrap_or_else(|p| p.into_inner()).iter_mut() {
            report.mounts_left.extend(bundle.delete_as_containerd());
        }
    }
}

/// Whether `pid` is a live process running in one of `dirs` (a shim runs in its bundle); a pid Connect misreported
/// is not ours to kill.
fn is_shim_of(pid: u32, dirs: &[PathBuf]) -> bool {
    pid_alive(pid) && std::fs::read_link(format!("/proc/{pid}/cwd")).map(|cwd| dirs.contains(&cwd)).unwrap_or(false)
}

/// Removes runtime containers a shim left behind (a failed Create can leave one in `created` with a live
/// `runc init`). Only runc-style runtimes (`<binary> --root R list/delete -f`) are swept.
#[derive(Debug, Clone)]
pub struct RuntimeSweep {
    pub binary: String,
    pub root: PathBuf,
}

impl RuntimeSweep {
    /// The runtime's state directory for the shim's namespace.
    pub fn state_root(&self, namespace: &str) -> PathBuf {
        self.root.join(namespace)
    }

    /// Deletes (forcibly) the containers with the given ids that the runtime still knows about; returns their ids.
    /// Runtimes lay out their state differently (runc: `<root>/<id>/`, runsc: `<root>/<id>_sandbox:<id>.state`),
    /// so any entry of the root naming the id counts.
    pub async fn sweep(&self, ids: &[String]) -> Vec<String> {
        let mut swept = Vec::new();
        let Ok(namespaces) = std::fs::read_dir(&self.root) else { return swept };
        for namespace in namespaces.flatten() {
            let root = namespace.path();
            let entries: Vec<String> = std::fs::read_dir(&root)
                .map(|e| e.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            for id in ids {
                if !entries.iter().any(|entry| entry == id || entry.contains(id.as_str())) {
                    continue;
                }
                let mut command = tokio::process::Command::new(&self.binary);
                command
                    .arg("--root")
                    .arg(&root)
                    .args(["delete", "-f", id])
                    .stdin(std::process::Stdio::null())
                    .kill_on_drop(true);
                if tokio::time::timeout(Duration::from_secs(10), crate::process::reaper::output(&mut command))
                    .await
                    .is_ok()
                {
                    swept.push(id.clone());
                }
            }
        }
        swept
    }
}
