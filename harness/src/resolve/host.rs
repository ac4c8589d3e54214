//! The real host behind the model: `stat` through std, finding and asking the installed daemons.
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::containerd::{Probe, Probed, StatError};
use super::gopath;

/// `os.Stat` on this machine (follows symlinks).
#[derive(Debug, Clone, Copy, Default)]
pub struct HostProbe;

impl Probe for HostProbe {
    fn stat(&self, path: &str) -> Probed {
        match std::fs::metadata(path) {
            Ok(metadata) => {
                let id = Some((metadata.dev(), metadata.ino()));
                if metadata.is_dir() {
                    Probed::Directory { id }
                } else {
                    Probed::File { executable: metadata.permissions().mode() & 0o111 != 0, id }
                }
            }
            Err(error) => Probed::Missing { error: stat_error(&error) },
        }
    }
}

fn stat_error(error: &std::io::Error) -> StatError {
    match error.raw_os_error() {
        Some(libc::ENOENT) => StatError::NotFound,
        Some(libc::ENOTDIR) => StatError::NotADirectory,
        Some(libc::ENAMETOOLONG) => StatError::NameTooLong,
        Some(libc::EACCES) => StatError::PermissionDenied,
        Some(libc::ELOOP) => StatError::TooManySymlinks,
        Some(libc::EINVAL) => StatError::InvalidArgument,
        // std refuses paths with NUL bytes itself; Go's os.Stat answers EINVAL.
        None if error.kind() == std::io::ErrorKind::InvalidInput => StatError::InvalidArgument,
        _ => {
            // Go's errno texts are the C library's, starting lower-case.
            let text = error.to_string();
            let text = text.split(" (os error").next().unwrap_or(&text).to_owned();
            let mut characters = text.chars();
            let lowered = match characters.next() {
                Some(first) => first.to_lowercase().chain(characters).collect(),
                None => text,
            };
            StatError::Other(lowered)
        }
    }
}

/// `exec.LookPath(program)` against a PATH value: the first executable regular file.
pub fn look_path(program: &str, path_var: &str) -> Option<PathBuf> {
    gopath::split_list(path_var).into_iter().find_map(|entry| {
        let directory = if entry.is_empty() { ".".to_owned() } else { entry };
        let candidate = Path::new(&directory).join(program);
        HostProbe.stat(&candidate.to_string_lossy()).is_executable_file().then_some(candidate)
    })
}

/// Runs `program --version` and returns its stdout, or why not. Gives up after `deadline`.
pub fn version_output(program: &Path, deadline: Duration) -> Result<String, String> {
    let mut command = Command::new(program);
    command.arg("--version").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null());
    // Registered with the harness's reaper, which must not reap a child its waiter is about to wait for.
    let mut child = crate::process::reaper::spawn_std(&mut command)
        .map_err(|error| format!("cannot run {} --version: {error}", program.display()))?;
    let pid = child.id();
    let result = wait_version(&mut child, program, deadline);
    crate::process::reaper::release(pid);
    result
}

fn wait_version(child: &mut std::process::Child, program: &Path, deadline: Duration) -> Result<String, String> {
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let mut output = String::new();
                if let Some(mut stdout) = child.stdout.take() {
                    stdout
                        .read_to_string(&mut output)
                        .map_err(|error| format!("reading {}: {error}", program.display()))?;
                }
                if !status.success() {
                    return Err(format!("{} --version exited with {status}", program.display()));
                }
                return Ok(output);
            }
            Ok(None) if started.elapsed() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{} --version did not answer within {deadline:?}", program.display()));
            }
            Err(error) => return Err(format!("waiting for {} --version: {error}", program.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_the_real_file_system() {
        assert!(matches!(HostProbe.stat("/"), Probed::Directory { id: Some(_) }));
        assert!(HostProbe.stat("/bin/sh").is_executable_file());
        assert_eq!(HostProbe.stat("/nonexistent-shimcompat"), Probed::Missing { error: StatError::NotFound });
        assert_eq!(HostProbe.stat("/bin/sh/x"), Probed::Missing { error: StatError::NotADirectory });
        let long = format!("/{}", "a".repeat(300));
        assert_eq!(HostProbe.stat(&long), Probed::Missing { error: StatError::NameTooLong });
        assert_eq!(HostProbe.stat("/a\0b"), Probed::Missing { error: StatError::InvalidArgument });
        assert!(look_path("sh", "/nonexistent:/bin").is_some());
        assert!(look_path("sh", "").is_none());
    }
}
