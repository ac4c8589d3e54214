//! Starting a shim's `start` or `delete` straight into the trial's tracking cgroup (clone3 with
//! CLONE_INTO_CGROUP, Linux 5.7+, cgroup2), instead of the child writing itself into `cgroup.procs` between fork and
//! exec. That write is a cgroup migration, which waits for an RCU grace period: measured here at 2-17 ms per spawn
//! (cgroup2 on a v1 hybrid host), sleeping, on every `start` and `delete` of every trial, which made the harness
//! look slower than the shims it drives and inflated bench's `start` figure. containerd itself does neither: its
//! shims start in containerd's cgroup. Where clone3 or CLONE_INTO_CGROUP is refused, the caller falls back to the
//! migration (the same tracking, slower).
//!
//! The child runs only async-signal-safe system calls on data prepared before the clone (no allocation: another
//! thread may hold the allocator's lock at clone time): dup2 of its pipes, chdir, setpgid, SIGPIPE back to its
//! default, an empty signal mask (as containerd starts shims), execve; an exec failure goes back as errno on a
//! close-on-exec pipe, as std's spawn does.
use std::ffi::{CString, OsString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;

use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;

const CLONE_PIDFD: u64 = 0x1000;
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// The kernel's `struct clone_args` up to `cgroup` (CLONE_ARGS_SIZE_VER2, 88 bytes).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Why a spawn into the cgroup did not happen.
#[derive(Debug)]
pub enum SpawnError {
    /// This kernel (or this cgroup) does not take CLONE_INTO_CGROUP: use the migration instead.
    Unsupported(std::io::Error),
    /// The spawn itself failed (the binary could not be executed, no pipes, ...).
    Failed(std::io::Error),
}

/// How the child's stdout and stderr are captured.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Two pipes.
    Separate,
    /// One pipe on both (Go's CombinedOutput).
    Combined,
}

/// A child started into a cgroup. Killed (SIGKILL) if dropped before it was waited for, as tokio's
/// `kill_on_drop` does; the harness's reaper then reaps it.
pub struct CgroupChild {
    pid: u32,
    pidfd: AsyncFd<OwnedFd>,
    pub stdin: Option<pipe::Sender>,
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
    status: Option<ExitStatus>,
}

impl CgroupChild {
    pub fn id(&self) -> u32 {
        self.pid
    }

    /// Waits for the child to exit and reaps it.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        loop {
            let mut raw = 0;
            // SAFETY: waitpid on our own child with a local status word.
            let reaped = unsafe { libc::waitpid(self.pid as libc::pid_t, &mut raw, libc::WNOHANG) };
            if reaped == self.pid as libc::pid_t {
                let status = ExitStatus::from_raw(raw);
                self.status = Some(status);
                return Ok(status);
            }
            if reaped < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mut guard = self.pidfd.readable().await?;
            guard.clear_ready();
        }
    }

    /// SIGKILL, if it has not been reaped yet.
    pub fn kill(&mut self) {
        if self.status.is_none() {
            // SAFETY: a signal to our own unreaped child (its pid cannot have been reused).
            unsafe {
                libc::kill(self.pid as libc::pid_t, libc::SIGKILL);
            }
        }
    }
}

impl Drop for CgroupChild {
    fn drop(&mut self) {
        self.kill();
    }
}

fn cstring(bytes: &[u8]) -> std::io::Result<CString> {
    CString::new(bytes).map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "a NUL byte in an argument"))
}

fn pipe_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)
}

/// The environment `command` gives its child: ours, with its changes applied.
fn environment(command: &std::process::Command) -> std::io::Result<Vec<CString>> {
    let mut vars: std::collections::BTreeMap<OsString, OsString> = std::env::vars_os().collect();
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => vars.insert(key.to_os_string(), value.to_os_string()),
            None => vars.remove(key),
        };
    }
    vars.into_iter()
        .map(|(k, v)| {
            let mut pair = k.as_bytes().to_vec();
            pair.push(b'=');
            pair.extend_from_slice(v.as_bytes());
            cstring(&pair)
        })
        .collect()
}

/// Starts `command` (program, arguments, environment changes and working directory are taken from it; it is not
/// spawned itself) in its own process group, inside `cgroup`, with piped stdin and the output captured as
/// `output` says. The pid is registered with the reaper before the lock that guards it is released.
pub fn spawn(command: &tokio::process::Command, cgroup: &Path, output: Output) -> Result<CgroupChild, SpawnError> {
    let failed = SpawnError::Failed;
    let command = command.as_std();
    let program = cstring(command.get_program().as_bytes()).map_err(failed)?;
    let mut argv = vec![program.clone()];
    for arg in command.get_args() {
        argv.push(cstring(arg.as_bytes()).map_err(failed)?);
    }
    let envp = environment(command).map_err(failed)?;
    let cwd = command.get_current_dir().map(|d| cstring(d.as_os_str().as_bytes())).transpose().map_err(failed)?;
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|a| a.as_ptr()).collect();
    envp_ptrs.push(std::ptr::null());

    let dir = cstring(cgroup.as_os_str().as_bytes()).map_err(failed)?;
    // SAFETY: open of a NUL-terminated path; the descriptor is owned below.
    let cgroup_fd = unsafe { libc::open(dir.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if cgroup_fd < 0 {
        return Err(SpawnError::Unsupported(std::io::Error::last_os_error()));
    }
    // SAFETY: a descriptor just opened and owned by nobody else.
    let cgroup_fd = unsafe { OwnedFd::from_raw_fd(cgroup_fd) };
    let (stdin_read, stdin_write) = pipe_pair().map_err(failed)?;
    let (out_read, out_write) = pipe_pair().map_err(failed)?;
    let err_pipe = match output {
        Output::Separate => Some(pipe_pair().map_err(failed)?),
        Output::Combined => None,
    };
    let (exec_read, exec_write) = pipe_pair().map_err(failed)?;
    let child_fds: [RawFd; 3] = [
        stdin_read.as_raw_fd(),
        out_write.as_raw_fd(),
        err_pipe.as_ref().map_or(out_write.as_raw_fd(), |(_, w)| w.as_raw_fd()),
    ];
    let exec_write_fd = exec_write.as_raw_fd();
    let cwd_ptr = cwd.as_ref().map(|c| c.as_ptr());

    let mut pidfd: libc::c_int = -1;
    let args = CloneArgs {
        flags: CLONE_PIDFD | CLONE_INTO_CGROUP,
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup_fd.as_raw_fd() as u64,
        ..Default::default()
    };
    let registry = crate::process::reaper::registry();
    let mut owned = registry.lock().unwrap_or_else(|p| p.into_inner());
    // SAFETY: clone3 without CLONE_VM is a fork; the child branch below only makes async-signal-safe system calls
    // on memory prepared before the call, then execs or exits.
    let pid = unsafe { libc::syscall(libc::SYS_clone3, &args as *const CloneArgs, std::mem::size_of::<CloneArgs>()) };
    if pid == 0 {
        // SAFETY: the child: raw system calls only, no allocation, no locks; never returns.
        unsafe { child_exec(&child_fds, cwd_ptr, &program, &argv_ptrs, &envp_ptrs, exec_write_fd) }
    }
    if pid < 0 {
        let error = std::io::Error::last_os_error();
        drop(owned);
        return Err(match error.raw_os_error() {
            Some(libc::ENOSYS | libc::EINVAL | libc::E2BIG | libc::EOPNOTSUPP | libc::EBADF) => {
                SpawnError::Unsupported(error)
            }
            _ => SpawnError::Failed(error),
        });
    }
    let pid = pid as u32;
    owned.insert(pid);
    drop(owned);
    // SAFETY: the kernel gave us this pidfd for the child just created.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    // The child's ends are its own now.
    drop((stdin_read, out_write, exec_write));
    let err_read = err_pipe.map(|(read, write)| {
        drop(write);
        read
    });
    // EOF: the exec happened (the pipe closed on exec); four bytes: the errno of a failed exec.
    let mut errno = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        // SAFETY: read into a local buffer from a descriptor we own.
        let n = unsafe { libc::read(exec_read.as_raw_fd(), errno[got..].as_mut_ptr().cast(), 4 - got) };
        if n == 0 {
            break;
        }
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        got += n as usize;
    }
    let mut child = CgroupChild {
        pid,
        // SAFETY: the AsyncFd owns the pidfd and is its only user until dropped.
        pidfd: unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
            .map_err(|e| failed(e.into_parts().1))?,
        stdin: None,
        stdout: None,
        stderr: None,
        status: None,
    };
    if got == 4 {
        let error = std::io::Error::from_raw_os_error(i32::from_ne_bytes(errno));
        let mut raw = 0;
        // SAFETY: reaping our own child, which exits at once after a failed exec.
        unsafe { libc::waitpid(pid as libc::pid_t, &mut raw, 0) };
        child.status = Some(ExitStatus::from_raw(raw));
        crate::process::reaper::release(pid);
        return Err(SpawnError::Failed(error));
    }
    child.stdin = Some(pipe::Sender::from_owned_fd(stdin_write).map_err(failed)?);
    child.stdout = Some(pipe::Receiver::from_owned_fd(out_read).map_err(failed)?);
    if let Some(read) = err_read {
        child.stderr = Some(pipe::Receiver::from_owned_fd(read).map_err(failed)?);
    }
    Ok(child)
}

/// The child side of [`spawn`].
///
/// # Safety
/// Only to be called in the child of a fork-like clone: it execs or exits.
unsafe fn child_exec(
    fds: &[RawFd; 3],
    cwd: Option<*const libc::c_char>,
    program: &CString,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    exec_write: RawFd,
) -> ! {
    let fail = |_: ()| -> ! {
        let errno = *libc::__errno_location();
        let bytes = errno.to_ne_bytes();
        libc::write(exec_write, bytes.as_ptr().cast(), 4);
        libc::_exit(127)
    };
    for (target, fd) in fds.iter().enumerate() {
        let target = target as RawFd;
        if *fd == target {
            // Already in place: only the close-on-exec flag must go.
            if libc::fcntl(target, libc::F_SETFD, 0) < 0 {
                fail(());
            }
        } else if libc::dup2(*fd, target) < 0 {
            fail(());
        }
    }
    if let Some(cwd) = cwd {
        if libc::chdir(cwd) < 0 {
            fail(());
        }
    }
    if libc::setpgid(0, 0) < 0 {
        fail(());
    }
    // Rust ignores SIGPIPE; an ignored signal stays ignored across exec, and a shim expects the default.
    libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    let mut empty: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut empty);
    libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    libc::execve(program.as_ptr(), argv.as_ptr(), envp.as_ptr());
    fail(())
}
