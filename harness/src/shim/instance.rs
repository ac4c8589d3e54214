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
            if crate::shim::launch::remove_socket(&path) {
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

pub fn pid_alive(pid: u32) -> bool {
    // A zombie is gone for our purposes: it runs nothing and holds no sockets.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit(')').next().map(|rest| !rest.trim_start().starts_with('Z')).unwrap_or(true),
        Err(_) => false,
    }
}

/// Waits until `pid` has exited (or is a zombie), at most `timeout`; reaps it if it is ours. The exit is seen the
/// moment it happens through a pidfd (Linux 5.3+), so a figure built on it (bench's `shutdown_to_exit`) is not
/// rounded up to a polling interval; without pidfds it polls every 2 ms.
pub async fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    if let Some(pidfd) = PidFd::open(pid) {
        // Readable once the process has exited; a zombie counts as gone (pid_alive), so check after each wake-up.
        // SAFETY: the AsyncFd owns the pidfd and is the only user of it until it is dropped.
        if let Ok(watch) =
            unsafe { tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
        {
            loop {
                if !pid_alive(pid) {
                    reap(pid);
                    return true;
                }
                match tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), watch.readable()).await {
                    Ok(Ok(mut guard)) => {
                        if pid_alive(pid) {
                            // Woken without an exit (should not happen): wait for the next readiness.
                            guard.clear_ready();
                        }
                    }
                    Ok(Err(_)) => break,
                    Err(_) => return !pid_alive(pid),
                }
            }
        }
    }
    loop {
        if !pid_alive(pid) {
            reap(pid);
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Blocking form of [`wait_gone`] for threads without a runtime: waits until `pid` has exited (seen at once through
/// a pidfd, else polled every 2 ms), `deadline` passes or `stop()` says so (checked at least every 100 ms). Returns
/// whether it exited; does not reap.
pub fn wait_exit_blocking(pid: u32, deadline: Instant, stop: impl Fn() -> bool) -> bool {
    let pidfd = PidFd::open(pid);
    loop {
        if !pid_alive(pid) {
            return true;
        }
        let now = Instant::now();
        if now >= deadline || stop() {
            return false;
        }
        let slice = (deadline - now).min(Duration::from_millis(100));
        match &pidfd {
            Some(fd) => {
                use std::os::fd::AsRawFd;
                let mut poll = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
                // SAFETY: poll on one descriptor we own, with a local pollfd.
                unsafe { libc::poll(&mut poll, 1, slice.as_millis().max(1) as libc::c_int) };
            }
            None => std::thread::sleep(slice.min(Duration::from_millis(2))),
        }
    }
}

/// A pidfd (pidfd_open(2)): becomes readable when the process exits.
struct PidFd(std::os::fd::OwnedFd);

impl PidFd {
    fn open(pid: u32) -> Option<PidFd> {
        use std::os::fd::FromRawFd;
        if pid == 0 || pid > i32::MAX as u32 {
            return None;
        }
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            return None;
        }
        // SAFETY: fd is a descriptor this process just got and owns alone.
        Some(PidFd(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) }))
    }
}

impl std::os::fd::AsRawFd for PidFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

/// Whether `pid` is a live process running in one of `dirs` (a shim runs in its bundle); a pid Connect misreported
/// is not ours to kill.
fn is_shim_of(pid: u32, dirs: &[PathBuf]) -> bool {
    pid_alive(pid) && std::fs::read_link(format!("/proc/{pid}/cwd")).map(|cwd| dirs.contains(&cwd)).unwrap_or(false)
}

pub fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " ").trim().to_string())
        .unwrap_or_default()
}

/// SIGKILLs `pid` if it is alive; returns a description of what was killed.
pub fn kill_pid(pid: u32) -> Option<String> {
    if !pid_alive(pid) {
        return None;
    }
    let line = format!("pid {pid} ({})", cmdline(pid));
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
    std::thread::sleep(Duration::from_millis(5));
    reap(pid);
    Some(line)
}

/// Every live process whose working directory is one of `dirs` (shims run in their bundle).
pub fn processes_in(dirs: &[PathBuf]) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let me = std::process::id();
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/cwd"))
                .map(|cwd| dirs.iter().any(|d| cwd == *d || cwd.starts_with(d)))
                .unwrap_or(false)
        })
        .filter(|pid| pid_alive(*pid))
        .collect()
}

/// Whether an argument of the process is one of `dirs` or a path under it (`--root=DIR/...` counts): gVisor's
/// sandbox and gofer run with their cwd elsewhere, and are only recognisable by the bundle and root they were given.
fn names_dir(pid: u32, dirs: &[PathBuf]) -> bool {
    let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    raw.split(|b| *b == 0).filter(|a| !a.is_empty()).any(|arg| {
        let arg = String::from_utf8_lossy(arg);
        let value = arg.split_once('=').map(|(_, v)| v).unwrap_or(&arg);
        let path = std::path::Path::new(value);
        dirs.iter().any(|d| path == d.as_path() || path.starts_with(d))
    })
}

/// Processes that name one of `dirs` in their arguments (gVisor's `runsc-sandbox`/`runsc-gofer` with `--bundle`
/// and `--root`, whose cwd is elsewhere), besides those running in them.
pub fn processes_naming(dirs: &[PathBuf]) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let me = std::process::id();
    let mut pids: Vec<u32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me && names_dir(*pid, dirs) && pid_alive(*pid))
        .collect();
    pids.extend(processes_in(dirs));
    pids.sort_unstable();
    pids.dedup();
    pids
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
                if tokio::time::timeout(Duration::from_secs(10), crate::reaper::output(&mut command)).await.is_ok() {
                    swept.push(id.clone());
                }
            }
        }
        swept
    }
}

/// Makes this process the reaper of orphaned descendants (daemonized shims).
pub fn become_subreaper() {
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
}

/// Reaps `pid` if it is a zombie child of ours; harmless otherwise.
pub fn reap(pid: u32) {
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), Some(nix::sys::wait::WaitPidFlag::WNOHANG));
}

/// Reaps every exited child; only safe when no tokio-managed child is still running (end of a run).
pub fn reap_orphans() {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}
