//! Reaping orphans promptly. Shims daemonize, so the harness makes itself a subreaper (as init is under
//! containerd) and inherits every orphan: shim servers, and after a shim is SIGKILLed, its runtime's processes.
//! Init reaps them at once, and some runtimes depend on it (`runsc delete --force` waits for its sandbox to be
//! reaped). A reaper thread does the same for every exited child the harness did not spawn itself; the harness's
//! own children are registered at spawn time (under the same lock the reaper takes) and left to their waiter.
use std::collections::BTreeSet;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// The harness's own children (the reaper leaves them to their waiter); spawners insert under this lock.
pub(crate) fn registry() -> &'static Mutex<BTreeSet<u32>> {
    owned()
}

fn owned() -> &'static Mutex<BTreeSet<u32>> {
    static OWNED: OnceLock<Mutex<BTreeSet<u32>>> = OnceLock::new();
    OWNED.get_or_init(Default::default)
}

/// The harness blocks SIGHUP/SIGINT/SIGTERM in every thread (its signal thread takes them); a child must not inherit
/// that mask, or SIGTERM never reaches a shim or its containers. containerd starts shims with an empty mask; so does
/// every spawn here. Runs between fork and exec, so it only makes the async-signal-safe sigprocmask call.
fn empty_mask() -> std::io::Result<()> {
    // SAFETY: sigemptyset/sigprocmask on a local set, allowed after fork.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        if libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Spawns a child the caller will wait for, hidden from the reaper.
pub fn spawn_tokio(command: &mut tokio::process::Command) -> std::io::Result<tokio::process::Child> {
    // SAFETY: empty_mask is async-signal-safe.
    unsafe {
        command.pre_exec(empty_mask);
    }
    let mut owned = owned().lock().unwrap_or_else(|p| p.into_inner());
    let child = command.spawn()?;
    if let Some(pid) = child.id() {
        owned.insert(pid);
    }
    Ok(child)
}

/// Same for std children.
pub fn spawn_std(command: &mut std::process::Command) -> std::io::Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    // SAFETY: empty_mask is async-signal-safe.
    unsafe {
        command.pre_exec(empty_mask);
    }
    let mut owned = owned().lock().unwrap_or_else(|p| p.into_inner());
    let child = command.spawn()?;
    owned.insert(child.id());
    Ok(child)
}

/// The caller has waited for `pid` (or given up on it): it is no longer the caller's.
pub fn release(pid: u32) {
    owned().lock().unwrap_or_else(|p| p.into_inner()).remove(&pid);
}

/// Runs `command` to completion and returns its output, with the child registered meanwhile.
pub async fn output(command: &mut tokio::process::Command) -> std::io::Result<std::process::Output> {
    command.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let child = spawn_tokio(command)?;
    let pid = child.id();
    let result = child.wait_with_output().await;
    if let Some(pid) = pid {
        release(pid);
    }
    result
}

/// std equivalent of `status()`.
pub fn status(command: &mut std::process::Command) -> std::io::Result<std::process::ExitStatus> {
    let mut child = spawn_std(command)?;
    let result = child.wait();
    release(child.id());
    result
}

fn zombie_children() -> Vec<u32> {
    let me = std::process::id();
    let mut children = BTreeSet::new();
    // Children of every thread (orphans are re-parented to one of the subreaper's threads).
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{me}/task")) {
        for task in tasks.flatten() {
            if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
                children.extend(list.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
            }
        }
    }
    children
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|stat| stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')))
                .unwrap_or(false)
        })
        .collect()
}

/// Starts the reaper thread (once per process).
pub fn start() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        std::thread::spawn(|| loop {
            {
                let owned = owned().lock().unwrap_or_else(|p| p.into_inner());
                for pid in zombie_children() {
                    if !owned.contains(&pid) {
                        super::reap(pid);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        });
    });
}
