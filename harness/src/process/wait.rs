//! Waiting for a process to exit: through a pidfd (Linux 5.3+), so the exit is seen when it happens, else by
//! polling.
use std::time::{Duration, Instant};

use super::{pid_alive, reap};

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
