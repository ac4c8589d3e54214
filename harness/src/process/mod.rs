//! Processes as the harness finds them on the host: liveness and command lines from /proc, the scans that find
//! what a run started (by working directory, by arguments, by the trial marker in the environment), killing and
//! reaping (the harness is a subreaper, as init is under containerd), and waits for an exit through pidfds.
//! Everything here reads or signals the host; nothing in it knows about shims, cases or reports.
use std::path::PathBuf;
use std::time::Duration;

pub mod cgroup;
pub mod reaper;
mod wait;

pub use wait::{wait_exit_blocking, wait_gone};

pub const MARKER_VAR: &str = "SHIMCOMPAT_TRIAL";

pub fn pid_alive(pid: u32) -> bool {
    // A zombie is gone for our purposes: it runs nothing and holds no sockets.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit(')').next().map(|rest| !rest.trim_start().starts_with('Z')).unwrap_or(true),
        Err(_) => false,
    }
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
                    env.split(|b| *b == 0).any(|kv| {
                        if prefix {
                            kv.starts_with(needle.as_bytes())
                        } else {
                            kv == needle.as_bytes()
                        }
                    })
                })
                .unwrap_or(false)
        })
        .filter(|pid| pid_alive(*pid))
        .collect()
}
