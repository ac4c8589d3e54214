//! Launching container processes without namespaces, and reading /proc.
//!
//! Processes are started with a raw fork: the child may have to block (a created task waits for Start, like
//! `runc init` on its exec fifo), and std's `Command::spawn` waits until the child has exec'd. Between fork and
//! exec the child only makes async-signal-safe calls on data prepared before the fork.
use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Everything the child needs, prepared before the fork.
pub struct Launch {
    /// chroot here first (as root); `exe` and `cwd` are then paths inside it.
    pub root: Option<CString>,
    pub exe: CString,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    pub cwd: CString,
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    /// The child gets a new session and this fd (a pty slave) as controlling terminal.
    pub controlling_tty: bool,
    /// Process group to join; `None` makes the child lead a new group.
    pub pgid: Option<i32>,
    /// Read end of the start gate: the child waits for one byte before exec; EOF without it means `_exit(137)`.
    pub gate: Option<OwnedFd>,
}

pub fn cstring(bytes: &[u8]) -> Result<CString, String> {
    CString::new(bytes).map_err(|_| "string contains a NUL byte".to_string())
}

/// Forks and execs; returns the child's pid. The fds in `launch` are closed in the parent when it is dropped.
pub fn launch(launch: &Launch) -> std::io::Result<i32> {
    let mut argv: Vec<*const libc::c_char> = launch.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = launch.envp.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    let stdio = [launch.stdin.as_raw_fd(), launch.stdout.as_raw_fd(), launch.stderr.as_raw_fd()];
    let gate = launch.gate.as_ref().map(|g| g.as_raw_fd()).unwrap_or(-1);
    let pgid = launch.pgid.unwrap_or(0);

    // SAFETY: the child below only calls async-signal-safe functions on memory prepared above.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid == 0 {
        unsafe { child(launch, &stdio, gate, pgid, &argv, &envp) }
    }
    if !launch.controlling_tty {
        // Also from the parent, so the group exists before anyone signals it (the classic setpgid race).
        unsafe {
            if libc::setpgid(pid, pgid) != 0 {
                libc::setpgid(pid, 0);
            }
        }
    }
    Ok(pid)
}

unsafe fn child(
    launch: &Launch,
    stdio: &[RawFd; 3],
    gate: RawFd,
    pgid: i32,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> ! {
    // The shim has signal handlers (tokio) and ignores SIGPIPE; the payload must start with defaults.
    for sig in 1..libc::SIGRTMAX() {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
    let mut empty: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut empty);
    libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());

    if launch.controlling_tty {
        libc::setsid();
        libc::ioctl(stdio[0], libc::TIOCSCTTY as _, 0);
    } else if libc::setpgid(0, pgid) != 0 {
        libc::setpgid(0, 0);
    }
    for (target, fd) in stdio.iter().enumerate() {
        if *fd == target as RawFd {
            let flags = libc::fcntl(*fd, libc::F_GETFD);
            libc::fcntl(*fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
        } else if libc::dup2(*fd, target as RawFd) < 0 {
            libc::_exit(126);
        }
    }
    // Nothing else of the shim's may leak into the payload (other containers' fifos and gates, sockets).
    libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC);
    if let Some(root) = &launch.root {
        if libc::chroot(root.as_ptr()) != 0 {
            libc::_exit(126);
        }
    }
    libc::chdir(launch.cwd.as_ptr());
    if gate >= 0 {
        let mut byte = 0u8;
        loop {
            let n = libc::read(gate, &mut byte as *mut u8 as *mut libc::c_void, 1);
            if n == 1 {
                break;
            }
            if n < 0 && *libc::__errno_location() == libc::EINTR {
                continue;
            }
            libc::_exit(137);
        }
    }
    libc::execve(launch.exe.as_ptr(), argv.as_ptr(), envp.as_ptr());
    libc::_exit(127)
}

/// Resolves `arg0` inside `root` like an OCI runtime: a name with a slash is taken relative to the root, a bare
/// name is searched on the process's PATH inside the root.
pub fn resolve_executable(root: &Path, arg0: &str, env: &[String]) -> Option<PathBuf> {
    let inside = |p: &str| root.join(p.trim_start_matches('/'));
    if arg0.contains('/') {
        let candidate = inside(arg0);
        return is_executable(&candidate).then_some(candidate);
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| inside(dir).join(arg0))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    let Ok(c_path) = cstring(path.as_os_str().as_bytes()) else {
        return false;
    };
    let is_file = fs::metadata(path).map(|m| m.is_file()).unwrap_or(false);
    is_file && unsafe { libc::access(c_path.as_ptr(), libc::X_OK) } == 0
}

/// Fields of /proc/<pid>/stat that identify a process over time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    pub state: char,
    pub pgrp: i32,
    pub start_time: u64,
}

pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses; fields resume after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// Live (non-zombie) processes whose process group is `pgid`.
pub fn group_members(pgid: i32) -> Vec<(i32, ProcStat)> {
    // An empty group answers ESRCH to a null signal: no need to read every process's stat (a full scan cost about
    // 1.2 ms on a quiet host, and the `delete` action asks for every bundle).
    // SAFETY: signal 0 only checks for existence and permission.
    if pgid <= 1 || (unsafe { libc::kill(-pgid, 0) } != 0 && nix::errno::Errno::last() == nix::errno::Errno::ESRCH) {
        return Vec::new();
    }
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| Some((pid, proc_stat(pid)?)))
        .filter(|(_, stat)| stat.pgrp == pgid && stat.state != 'Z' && stat.state != 'X')
        .collect()
}

/// Resident memory (bytes) and CPU time (ns) of a process, from /proc; zeros when it is gone.
pub fn usage(pid: i32) -> (u64, u64) {
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(0) as u64;
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let rss = fs::read_to_string(format!("/proc/{pid}/statm"))
        .ok()
        .and_then(|t| t.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0)
        * page;
    let cpu = fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|text| {
            let rest = &text[text.rfind(')')? + 1..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // utime and stime: fields 14 and 15 of stat, 12 and 13 after the command name.
            let user: u64 = fields.get(11)?.parse().ok()?;
            let system: u64 = fields.get(12)?.parse().ok()?;
            Some((user + system) * 1_000_000_000 / ticks)
        })
        .unwrap_or(0);
    (rss, cpu)
}

pub fn is_alive(pid: i32) -> bool {
    pid > 0 && proc_stat(pid).is_some_and(|s| s.state != 'Z' && s.state != 'X')
}

/// Sends `signal` to `pid` (or, if negative, to a group); returns the errno on failure.
pub fn send_signal(pid: i32, signal: i32) -> Result<(), nix::errno::Errno> {
    let r = unsafe { libc::kill(pid, signal) };
    if r == 0 {
        Ok(())
    } else {
        Err(nix::errno::Errno::last())
    }
}
