//! `shimcompat log-driver DIR`: a logging binary for `binary://` stdio, written to containerd's logging contract
//! (runtime/v2/logging): the shim starts it with the container's stdout on fd 3 and stderr on fd 4, an fd 5 it
//! closes once ready, and `CONTAINER_ID` / `CONTAINER_NAMESPACE` in its environment. It records what it was given,
//! so a case can check the shim kept to that contract:
//!   DIR/stdout, DIR/stderr  everything read from fd 3 and fd 4, in order
//!   DIR/env                 `CONTAINER_ID=...` and `CONTAINER_NAMESPACE=...` (one line each, `unset` if absent)
//!   DIR/pid                 its own pid (written before it signals ready)
//!   DIR/done                written after both streams reached EOF, just before it exits
//! A shim stops its logger with SIGTERM at Delete: the driver then finishes copying what is left and exits 0.
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The name the driver is invoked with: `binary:///path/to/shimcompat?log-driver=DIR`, as a shim turns the query into
/// arguments (`log-driver DIR`).
pub const SUBCOMMAND: &str = "log-driver";

/// The `binary://` URI that runs `shimcompat` (at `binary`) as a log driver writing into `dir`. One query key, so
/// the argument order does not depend on the shim's map order.
pub fn uri(binary: &Path, dir: &Path) -> String {
    format!("binary://{}?{SUBCOMMAND}={}", binary.display(), percent_encode(&dir.display().to_string()))
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

extern "C" fn on_term(_: libc::c_int) {}

fn is_open(fd: i32) -> bool {
    (unsafe { libc::fcntl(fd, libc::F_GETFD) }) >= 0
}

fn copy(fd: i32, to: PathBuf) -> std::thread::JoinHandle<Result<(), String>> {
    std::thread::spawn(move || {
        let mut out = File::create(&to).map_err(|e| format!("creating {}: {e}", to.display()))?;
        let mut from = unsafe { File::from_raw_fd(fd) };
        let mut buffer = [0u8; 65536];
        loop {
            match from.read(&mut buffer) {
                Ok(0) => return Ok(()),
                Ok(n) => out.write_all(&buffer[..n]).map_err(|e| format!("writing {}: {e}", to.display()))?,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("reading fd {fd}: {e}")),
            }
        }
    })
}

/// Entry point; `args` are the arguments after `log-driver`.
pub fn run(args: &[String]) -> ExitCode {
    let Some(dir) = args.first().filter(|d| !d.is_empty()).map(PathBuf::from) else {
        eprintln!("shimcompat log-driver: usage: shimcompat log-driver DIR (run by a shim for binary:// stdio)");
        return ExitCode::from(2);
    };
    for fd in [3, 4, 5] {
        if !is_open(fd) {
            eprintln!("shimcompat log-driver: fd {fd} is not open: a shim starts a logging binary with stdout on fd 3, stderr on fd 4 and the ready pipe on fd 5");
            return ExitCode::from(2);
        }
    }
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("shimcompat log-driver: creating {}: {e}", dir.display());
        return ExitCode::from(1);
    }
    let var = |name: &str| format!("{name}={}\n", std::env::var(name).unwrap_or_else(|_| "unset".into()));
    let env = format!("{}{}", var("CONTAINER_ID"), var("CONTAINER_NAMESPACE"));
    let written = std::fs::write(dir.join("env"), env)
        .and_then(|_| std::fs::write(dir.join("pid"), std::process::id().to_string()));
    if let Err(e) = written {
        eprintln!("shimcompat log-driver: writing into {}: {e}", dir.display());
        return ExitCode::from(1);
    }
    // SIGTERM (the shim's stop at Delete) must not cut the copy short: the streams end with EOF once the shim and
    // the container have closed their ends.
    unsafe { libc::signal(libc::SIGTERM, on_term as extern "C" fn(libc::c_int) as libc::sighandler_t) };
    let stdout = copy(3, dir.join("stdout"));
    let stderr = copy(4, dir.join("stderr"));
    // Ready: close fd 5 (containerd's logging.Run does the same).
    unsafe { libc::close(5) };
    let mut status = ExitCode::SUCCESS;
    for (name, handle) in [("stdout", stdout), ("stderr", stderr)] {
        match handle.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                eprintln!("shimcompat log-driver: {name}: {e}");
                status = ExitCode::from(1);
            }
            Err(_) => status = ExitCode::from(1),
        }
    }
    let _ = std::fs::write(dir.join("done"), "");
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_has_one_query_key_and_encodes_the_dir() {
        let uri = uri(Path::new("/usr/bin/shimcompat"), Path::new("/tmp/a b/logs"));
        assert_eq!(uri, "binary:///usr/bin/shimcompat?log-driver=/tmp/a%20b/logs");
    }
}
