//! Container stdio the way the runc shim does it: the caller made the fifos, the shim opens them.
//! stdout/stderr fifos go straight to the process (so the caller sees EOF exactly when the process and its
//! children are gone); stdin is copied through a pipe the shim can close (CloseIO); a terminal is a pty whose
//! master the shim copies. stdout's URI scheme decides where both output streams go (runc shim `createIO`): a
//! path or `fifo://` as above, `file:///path` (created, both streams appended), `binary:///path?args` (a logging
//! binary reading stdout on fd 3 and stderr on fd 4, signalling readiness on fd 5).
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, warn};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::oneshot;

/// What the caller asked for, after faults have been applied.
pub struct IoRequest<'a> {
    pub stdin: &'a str,
    pub stdout: &'a str,
    pub stderr: &'a str,
    pub terminal: bool,
    pub drop_stdout: bool,
    pub stderr_to_stdout: bool,
    /// Copy at most this many bytes of stdout to the fifo (the rest is drained and discarded).
    pub stdout_limit: Option<u64>,
    /// Fault file-uri-no-create: open a `file://` target without creating it.
    pub file_no_create: bool,
    /// Fault logger-left-running: never stop the `binary://` logger, and keep its pipes open.
    pub leave_logger: bool,
    /// Fault stdout-needs-stderr: a stdout fifo without a stderr path is dropped.
    pub stdout_needs_stderr: bool,
    /// Fault stdin-only-ignored: with neither stdout nor stderr, the process gets no stdin either (null IO).
    pub stdin_needs_output: bool,
}

/// The child's ends; dropped (closed in the shim) right after the fork.
pub struct ChildStdio {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub tty: bool,
}

/// What the shim keeps: a way to close stdin, the pty master for resizes, the logging binary.
#[derive(Default)]
pub struct IoHandles {
    pub stdin_close: Option<oneshot::Sender<()>>,
    pub pty_master: Option<Arc<AsyncFd<OwnedFd>>>,
    /// Pid of the `binary://` logger (0: none).
    logger: AtomicI32,
    /// Fault logger-left-running.
    leave_logger: bool,
}

impl IoHandles {
    /// Ends the logging binary as the runc shim does when the process is deleted: SIGTERM, time to flush, then
    /// SIGKILL. Returns once it is gone.
    pub fn stop_logger(&self) {
        if self.leave_logger {
            warn!("logger-left-running: not stopping the logging binary");
            return;
        }
        let pid = self.logger.swap(0, Ordering::SeqCst);
        if pid <= 0 {
            return;
        }
        let _ = crate::proc::send_signal(pid, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while crate::proc::is_alive(pid) {
            if Instant::now() > deadline {
                warn!("logger {pid} ignored SIGTERM; killing it");
                let _ = crate::proc::send_signal(pid, libc::SIGKILL);
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for IoHandles {
    fn drop(&mut self) {
        self.stop_logger();
    }
}

fn dev_null() -> io::Result<OwnedFd> {
    Ok(OpenOptions::new().read(true).write(true).open("/dev/null")?.into())
}

fn strip_scheme(path: &str) -> &str {
    path.strip_prefix("fifo://").or_else(|| path.strip_prefix("file://")).unwrap_or(path)
}

/// Opens an output path: a fifo read-write (never blocks on a missing reader), anything else for appending
/// without creating it.
fn open_output(path: &str) -> io::Result<File> {
    let path = strip_scheme(path);
    let is_fifo = std::fs::metadata(path)?.file_type().is_fifo();
    if is_fifo {
        OpenOptions::new().read(true).write(true).open(path)
    } else {
        OpenOptions::new().append(true).open(path)
    }
}

fn open_stdin_fifo(path: &str) -> io::Result<pipe::Receiver> {
    // Read-write, as the runc shim holds a writer of its own: the caller closing its end is not EOF for the
    // process; CloseIO is. Non-blocking: the open must not wait for the caller. tokio only takes fifos here.
    let file = OpenOptions::new().read(true).write(true).custom_flags(libc::O_NONBLOCK).open(strip_scheme(path))?;
    pipe::Receiver::from_file(file)
}

fn cloexec_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    Ok((read, write))
}

fn annotate<'a>(what: &'a str, path: &'a str) -> impl Fn(io::Error) -> io::Error + 'a {
    move |e| io::Error::new(e.kind(), format!("open {what} {path}: {e}"))
}

/// Decodes %XX escapes (and `+` in a query) of a URI part.
fn percent_decode(text: &str, plus_is_space: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `binary:///path?k=v&flag`: the logger's path and its arguments (each key, then its value, as the runc shim's
/// NewBinaryCmd builds them).
fn binary_command(uri: &str) -> (String, Vec<String>) {
    let rest = uri.strip_prefix("binary://").unwrap_or(uri);
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut args = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        args.push(percent_decode(key, true));
        args.push(percent_decode(value, true));
    }
    (percent_decode(path, false), args)
}

/// Moves an fd to a number >= 10 (close-on-exec), so the child can dup2 it onto 3, 4 or 5 without clobbering.
fn high_fd(fd: OwnedFd) -> io::Result<OwnedFd> {
    use std::os::fd::FromRawFd;
    let raw = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Starts a `binary://` logger and waits until it is ready. Returns the write ends for the process's stdout and
/// stderr, and the logger's pid.
fn start_logger(uri: &str, namespace: &str, id: &str) -> io::Result<(File, File, i32)> {
    use std::os::unix::process::CommandExt;
    let (path, args) = binary_command(uri);
    let (out_read, out_write) = cloexec_pipe()?;
    let (err_read, err_write) = cloexec_pipe()?;
    let (ready_read, ready_write) = cloexec_pipe()?;
    let child_fds = [high_fd(out_read)?, high_fd(err_read)?, high_fd(ready_write)?];
    let raw: Vec<i32> = child_fds.iter().map(|fd| fd.as_raw_fd()).collect();
    let mut command = std::process::Command::new(&path);
    command
        .args(&args)
        .env_clear()
        .env("CONTAINER_ID", id)
        .env("CONTAINER_NAMESPACE", namespace)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    unsafe {
        command.pre_exec(move || {
            for (target, fd) in raw.iter().enumerate() {
                if libc::dup2(*fd, 3 + target as i32) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = command.spawn().map_err(|e| io::Error::new(e.kind(), format!("start logging binary {path}: {e}")))?;
    let pid = child.id() as i32;
    // The shim's reaper collects it; std must not.
    drop(child);
    drop(child_fds);
    // Ready when the logger writes a byte or closes fd 5.
    let mut pfd = libc::pollfd { fd: ready_read.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let n = unsafe { libc::poll(&mut pfd, 1, 10_000) };
    if n <= 0 {
        let _ = crate::proc::send_signal(pid, libc::SIGKILL);
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("logging binary {path} did not become ready within 10s"),
        ));
    }
    let mut byte = [0u8; 1];
    let _ = nix::unistd::read(ready_read.as_raw_fd(), &mut byte);
    Ok((File::from(out_write), File::from(err_write), pid))
}

/// Opens `file:///path` for appending, creating it and its directory (unless `no_create`: fault
/// file-uri-no-create).
fn open_file_uri(uri: &str, no_create: bool) -> io::Result<File> {
    let path = percent_decode(uri.strip_prefix("file://").unwrap_or(uri), false);
    if no_create {
        return OpenOptions::new().append(true).open(&path);
    }
    if let Some(dir) = std::path::Path::new(&path).parent() {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new().create(true).append(true).mode(0o644).open(&path)
}

/// Where stdout and stderr go: (stdout, stderr), `None` for /dev/null. stdout's scheme decides for both.
fn outputs(
    req: &IoRequest,
    namespace: &str,
    id: &str,
    handles: &mut IoHandles,
) -> io::Result<(Option<File>, Option<File>)> {
    let scheme = req.stdout.split_once("://").map(|(s, _)| s).unwrap_or("");
    let (out, err) = match scheme {
        "binary" => {
            let (out, err, pid) = start_logger(req.stdout, namespace, id)?;
            handles.logger.store(pid, Ordering::SeqCst);
            if req.leave_logger {
                // The bug this models: the shim keeps copies of the write ends, so the logger never sees EOF.
                std::mem::forget(out.try_clone()?);
                std::mem::forget(err.try_clone()?);
            }
            (Some(out), Some(err))
        }
        "file" => {
            let out = open_file_uri(req.stdout, req.file_no_create).map_err(annotate("stdout", req.stdout))?;
            let err = out.try_clone()?;
            (Some(out), Some(err))
        }
        "" | "fifo" => {
            let dropped = req.stdout_needs_stderr && req.stderr.is_empty() && !req.terminal;
            if dropped {
                warn!("stdout-needs-stderr: no stderr path, dropping stdout");
            }
            let out = if req.stdout.is_empty() || req.drop_stdout || dropped {
                None
            } else {
                Some(open_output(req.stdout).map_err(annotate("stdout", req.stdout))?)
            };
            let err = if req.stderr.is_empty() || req.terminal {
                None
            } else {
                Some(open_output(req.stderr).map_err(annotate("stderr", req.stderr))?)
            };
            (out, err)
        }
        other => return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("unknown STDIO scheme {other}"))),
    };
    let out = if req.drop_stdout { None } else { out };
    Ok((out, err))
}

pub fn setup(req: &IoRequest, namespace: &str, id: &str) -> io::Result<(ChildStdio, IoHandles)> {
    let mut handles = IoHandles::default();
    handles.leave_logger = req.leave_logger;
    let (out, err) = outputs(req, namespace, id, &mut handles)?;
    if req.terminal {
        return setup_terminal(req, out, handles);
    }

    let null_io = req.stdin_needs_output && req.stdout.is_empty() && req.stderr.is_empty();
    if null_io {
        warn!("stdin-only-ignored: no output streams, treating the process as null IO");
    }
    let stdin = if req.stdin.is_empty() || null_io {
        dev_null()?
    } else {
        let fifo = open_stdin_fifo(req.stdin).map_err(annotate("stdin", req.stdin))?;
        let (read, write) = cloexec_pipe()?;
        let sender = pipe::Sender::from_owned_fd(write)?;
        let (close_tx, close_rx) = oneshot::channel();
        handles.stdin_close = Some(close_tx);
        tokio::spawn(copy_stdin(fifo, sender, close_rx));
        read
    };

    let stdout = match out {
        None => dev_null()?,
        Some(fifo) => match req.stdout_limit {
            None => fifo.into(),
            Some(limit) => {
                let (read, write) = cloexec_pipe()?;
                let from = pipe::Receiver::from_owned_fd(read)?;
                tokio::spawn(copy_limited(from, fifo, limit));
                write
            }
        },
    };

    let stderr = if req.stderr_to_stdout {
        stdout.try_clone()?
    } else {
        match err {
            None => dev_null()?,
            Some(file) => file.into(),
        }
    };

    Ok((ChildStdio { stdin, stdout, stderr, tty: false }, handles))
}

fn setup_terminal(req: &IoRequest, stdout: Option<File>, handles: IoHandles) -> io::Result<(ChildStdio, IoHandles)> {
    let pty = nix::pty::openpty(None, None).map_err(io::Error::from)?;
    for fd in [pty.master.as_raw_fd(), pty.slave.as_raw_fd()] {
        unsafe {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
    unsafe {
        let flags = libc::fcntl(pty.master.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(pty.master.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    // SAFETY: the master is an OwnedFd moved into the AsyncFd, so it stays open while registered.
    let master = Arc::new(unsafe { AsyncFd::register(pty.master) }.map_err(|e| e.into_parts().1)?);
    let mut handles = handles;
    handles.pty_master = Some(master.clone());
    if !req.stdin.is_empty() {
        let fifo = open_stdin_fifo(req.stdin).map_err(annotate("stdin", req.stdin))?;
        let (close_tx, close_rx) = oneshot::channel();
        handles.stdin_close = Some(close_tx);
        tokio::spawn(copy_to_master(fifo, master.clone(), close_rx));
    }
    tokio::spawn(copy_from_master(master, stdout, req.stdout_limit));

    let slave = pty.slave;
    let child = ChildStdio { stdin: slave.try_clone()?, stdout: slave.try_clone()?, stderr: slave, tty: true };
    Ok((child, handles))
}

async fn copy_stdin(mut from: pipe::Receiver, mut to: pipe::Sender, mut close: oneshot::Receiver<()>) {
    let mut buf = vec![0u8; 32 * 1024];
    // CloseIO ends the input as the runc shim's does: it drops the shim's own writer, so what the caller wrote
    // before is still delivered, then the process sees EOF. The fifo is open read-write here, so "drained" is
    // "nothing left to read right now".
    let mut closing = false;
    loop {
        let n = if closing {
            // A plain read(2): tokio's try_read answers WouldBlock until its reactor has seen the fd readable.
            match nix::unistd::read(from.as_raw_fd(), &mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
            }
        } else {
            tokio::select! {
                _ = &mut close => { closing = true; continue }
                read = from.read(&mut buf) => match read {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) => { debug!("stdin read: {e}"); break }
                },
            }
        };
        if let Err(e) = to.write_all(&buf[..n]).await {
            debug!("stdin write: {e}");
            break;
        }
    }
    // Dropping `to` closes the process's stdin.
}

/// Copies a pipe to an output file, keeping only the first `limit` bytes; the rest is read and discarded so the
/// writer never blocks.
async fn copy_limited(mut from: pipe::Receiver, to: File, limit: u64) {
    let mut copied = 0u64;
    let mut buf = vec![0u8; 32 * 1024];
    let mut to = match make_async_writer(to) {
        Ok(to) => Some(to),
        Err(e) => {
            warn!("stdout copy: {e}");
            None
        }
    };
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let keep = (limit.saturating_sub(copied) as usize).min(n);
        if keep > 0 {
            if let Some(writer) = to.as_mut() {
                if writer.write_all(&buf[..keep]).await.is_err() {
                    to = None;
                }
            }
            copied += keep as u64;
        }
        if copied >= limit {
            // Close the fifo now: the caller sees EOF after exactly `limit` bytes.
            to = None;
        }
    }
    drop(to);
}

/// An async writer over an output file: tokio's pipe sender for fifos, a blocking file otherwise.
enum AsyncOut {
    Fifo(pipe::Sender),
    File(tokio::fs::File),
}

impl AsyncOut {
    async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            AsyncOut::Fifo(sender) => sender.write_all(data).await,
            AsyncOut::File(file) => {
                file.write_all(data).await?;
                file.flush().await
            }
        }
    }
}

fn make_async_writer(file: File) -> io::Result<AsyncOut> {
    if file.metadata()?.file_type().is_fifo() {
        Ok(AsyncOut::Fifo(pipe::Sender::from_file(file)?))
    } else {
        Ok(AsyncOut::File(tokio::fs::File::from_std(file)))
    }
}

async fn copy_to_master(mut from: pipe::Receiver, master: Arc<AsyncFd<OwnedFd>>, mut close: oneshot::Receiver<()>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = tokio::select! {
            _ = &mut close => break,
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
        };
        if !copy_chunk(&buf[..n], &master, &mut close).await {
            return;
        }
    }
    // The terminal's input has ended (CloseIO, or the client's end closed): as the runc shim shuts its console
    // down, the terminal is hung up, and the processes reading it get SIGHUP.
    // SAFETY: TIOCSIG on a pty master takes the signal number by value.
    let signalled = unsafe { libc::ioctl(master.get_ref().as_raw_fd(), libc::TIOCSIG, libc::SIGHUP) } == 0;
    if !signalled {
        // No foreground process group on the terminal (the process has it as stdio, not as its controlling
        // terminal): end its input the way a terminal user does, with EOF (^D in canonical mode).
        let (_never, mut open) = oneshot::channel::<()>();
        copy_chunk(b"\x04", &master, &mut open).await;
    }
}

/// Writes one chunk of input to the pty master; false when the copy must stop.
async fn copy_chunk(chunk: &[u8], master: &AsyncFd<OwnedFd>, close: &mut oneshot::Receiver<()>) -> bool {
    let mut data = chunk;
    while !data.is_empty() {
        let mut guard = tokio::select! {
            _ = &mut *close => return false,
            guard = master.writable() => match guard { Ok(g) => g, Err(_) => return false },
        };
        match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(io::Error::from)) {
            Ok(Ok(written)) => data = &data[written..],
            Ok(Err(_)) => return false,
            Err(_would_block) => continue,
        }
    }
    true
}

async fn copy_from_master(master: Arc<AsyncFd<OwnedFd>>, to: Option<File>, limit: Option<u64>) {
    let mut to = match to.map(make_async_writer) {
        Some(Ok(w)) => Some(w),
        Some(Err(e)) => {
            warn!("terminal output: {e}");
            None
        }
        None => None,
    };
    let limit = limit.unwrap_or(u64::MAX);
    let mut copied = 0u64;
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let Ok(mut guard) = master.readable().await else {
            break;
        };
        let n = match guard.try_io(|fd| nix::unistd::read(fd.get_ref().as_raw_fd(), &mut buf).map_err(io::Error::from))
        {
            // EIO: every holder of the slave is gone.
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => n,
            Err(_would_block) => continue,
        };
        let keep = (limit.saturating_sub(copied) as usize).min(n);
        if keep > 0 {
            if let Some(writer) = to.as_mut() {
                if writer.write_all(&buf[..keep]).await.is_err() {
                    to = None;
                }
            }
            copied += keep as u64;
        }
        if copied >= limit {
            to = None;
        }
    }
}

/// Sets the terminal size on a pty master.
pub fn resize(master: &AsyncFd<OwnedFd>, width: u32, height: u32) -> io::Result<()> {
    let size = libc::winsize {
        ws_row: height.min(u16::MAX as u32) as u16,
        ws_col: width.min(u16::MAX as u32) as u16,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let r = unsafe { libc::ioctl(master.get_ref().as_raw_fd(), libc::TIOCSWINSZ, &size) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
