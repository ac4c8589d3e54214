//! Launching a shim the way one containerd line does (crate::profile): `<shim> -namespace NS -address A
//! -publish-binary B -id ID [-debug] start` in the bundle, with that line's environment and stdin (the options `Any`,
//! or BootstrapParams on 2.3+), its output read as that line reads it (stdout and stderr combined; a plain address,
//! JSON up to the line's version, or protobuf), and the Task service it would then dial. Also the `delete` action
//! containerd runs after a shim disconnects.
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use containerd_shim_protos::api::DeleteResponse;
use containerd_shim_protos::bootstrap_api::{BootstrapParams, BootstrapResult, Extension, LogLevel};
use containerd_shim_protos::protobuf::{well_known_types::any::Any, Message};
use tokio::io::AsyncReadExt;

use super::cgspawn;
use super::task::TaskApi;
use crate::profile::{EnvVar, Profile, StartOutput, StartStdin, CONTAINERD_ENV};

/// How a shim's `start` answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum BootstrapForm {
    /// A bare address (containerd 1.x shims, Kata).
    Plain,
    /// `{"version":N,"address":...,"protocol":...}` (containerd 2.0-2.2 shims, Rust shim crate to legacy callers).
    Json,
    /// A protobuf `BootstrapResult` (containerd 2.3+ shims, Rust shim crate to bootstrap callers).
    Protobuf,
}

impl std::fmt::Display for BootstrapForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BootstrapForm::Plain => "plain",
            BootstrapForm::Json => "json",
            BootstrapForm::Protobuf => "protobuf",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartReply {
    pub form: BootstrapForm,
    pub version: i32,
    pub protocol: String,
    /// As printed by the shim.
    pub raw_address: String,
    /// With a scheme, ready for the ttrpc client (`unix:///path` or `unix://@abstract`).
    pub address: String,
    pub api: TaskApi,
}

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("cannot run {binary}: {source}")]
    Spawn { binary: String, source: std::io::Error },
    #[error("`{binary} start` did not finish within {timeout:?} (killed); stderr: {stderr}")]
    StartTimeout { binary: String, timeout: Duration, stderr: String },
    /// `output` is stdout and stderr as the profile's containerd reads them (combined, or `stdout: ...; stderr: ...`).
    #[error("`{binary} start` exited with {status}; output: {output}")]
    StartFailed { binary: String, status: String, output: String },
    #[error("`start` output is not an address: {0}")]
    BadStartOutput(String),
    #[error("shim reports bootstrap version {0}, newer than the Task API v3 containerd speaks")]
    UnsupportedVersion(i32),
    /// What containerd of this line would answer to the reply (e.g. 1.7: "unsupported shim version (3)").
    #[error("containerd {line} cannot use this shim: {reason}")]
    RefusedByProfile {
        line: crate::profile::Line,
        reason: String,
        /// The socket the refused reply named, if it named one (the server behind it is still running).
        address: Option<String>,
    },
    #[error("shim reports protocol {0:?}; only ttrpc is supported")]
    UnsupportedProtocol(String),
    #[error("`{binary} delete` did not finish within {timeout:?} (killed)")]
    DeleteTimeout { binary: String, timeout: Duration },
    #[error("`{binary} delete` exited with {status}; stderr: {stderr}")]
    DeleteFailed { binary: String, status: String, stderr: String },
    #[error("`delete` output is not a DeleteResponse ({len} bytes): {detail}")]
    BadDeleteOutput { len: usize, detail: String },
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
}

/// Everything containerd would pass a shim it launches.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub binary: PathBuf,
    pub id: String,
    pub namespace: String,
    pub bundle: PathBuf,
    /// The `-address` value: only hashed into the socket name, so a unique fake keeps shims apart.
    pub grpc_address: String,
    /// The events server socket path (no scheme), exported as `TTRPC_ADDRESS`.
    pub ttrpc_address: PathBuf,
    /// Where shims honouring `BootstrapParams.socket_dir` put their socket.
    pub socket_dir: Option<PathBuf>,
    /// Runtime options (`containerd.runc.v1.Options` for runc shims), sent as a bootstrap extension.
    pub options: Option<Any>,
    /// The containerd line being emulated: environment, stdin, how the output is read.
    pub profile: &'static Profile,
    pub debug: bool,
    /// The `-publish-binary` value: containerd passes its own executable; the harness passes itself, whose
    /// `publish` command forwards an event to the events server as containerd's would.
    pub publish_binary: PathBuf,
    pub timeout: Duration,
    /// Extra environment (e.g. PATH for the OCI runtime).
    pub env: Vec<(String, String)>,
    /// The trial's tracking cgroup: the shim process is moved into it before it execs (see leaks::Tracking).
    pub cgroup: Option<PathBuf>,
}

impl LaunchSpec {
    fn command(&self, action: &str) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.binary);
        command
            .arg("-namespace")
            .arg(&self.namespace)
            .arg("-address")
            .arg(&self.grpc_address)
            .arg("-publish-binary")
            .arg(&self.publish_binary)
            .arg("-id")
            .arg(&self.id);
        if action == "delete" {
            // binary.Delete passes -bundle; -debug at debug level from 1.7 on (1.6.20 never passes it).
            command.arg("-bundle").arg(&self.bundle);
            if self.debug && self.profile.line != crate::profile::Line::V1_6 {
                command.arg("-debug");
            }
        } else if self.debug {
            command.arg("-debug");
        }
        command.arg(action).current_dir(&self.bundle);
        // containerd's own environment plus what this line adds; nothing of the harness's own that would look like
        // a variable this line does not set.
        for var in CONTAINERD_ENV {
            command.env_remove(var.name());
        }
        for var in self.profile.env {
            let value = match var {
                EnvVar::GoMaxProcs => "2".to_string(),
                EnvVar::TtrpcAddress => self.ttrpc_address.display().to_string(),
                EnvVar::GrpcAddress => self.grpc_address.clone(),
                EnvVar::Namespace => self.namespace.clone(),
                EnvVar::MaxShimVersion => "2".to_string(),
            };
            command.env(var.name(), value);
        }
        command
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        command
    }

    /// The migration fallback for hosts where clone3 cannot start a child into the cgroup: the child writes itself
    /// into the trial's cgroup between fork and exec (a cgroup migration, several ms of waiting).
    fn move_into_cgroup(command: &mut tokio::process::Command, cgroup: &Path) {
        if let Ok(procs) = CString::new(cgroup.join("cgroup.procs").as_os_str().as_bytes()) {
            // SAFETY: open/write/close only, all async-signal-safe, on a path built before the fork.
            unsafe {
                command.pre_exec(move || {
                    let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd >= 0 {
                        // "0" is the writing process itself.
                        libc::write(fd, b"0\n".as_ptr().cast(), 2);
                        libc::close(fd);
                    }
                    Ok(())
                });
            }
        }
    }

    /// What goes on the shim's stdin for `start`.
    pub fn start_stdin(&self) -> Result<Vec<u8>, LaunchError> {
        let encode = |what: &str, e: containerd_shim_protos::protobuf::Error| LaunchError::Io {
            context: format!("encoding {what} for `start`'s stdin"),
            source: std::io::Error::other(e.to_string()),
        };
        let name = self.binary.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let legacy_binary = self.profile.legacy_stdin_binaries.iter().any(|b| name.contains(b));
        if self.profile.start_stdin == StartStdin::OptionsAny || legacy_binary {
            return match &self.options {
                Some(any) => any.write_to_bytes().map_err(|e| encode("the runtime options", e)),
                None => Ok(Vec::new()),
            };
        }
        let mut params = BootstrapParams::new();
        params.instance_id = self.id.clone();
        params.namespace = self.namespace.clone();
        params.log_level = if self.debug { LogLevel::LOG_LEVEL_DEBUG } else { LogLevel::LOG_LEVEL_INFO }.into();
        params.containerd_version = format!("{} (shimcompat)", self.profile.release);
        params.containerd_ttrpc_address = self.ttrpc_address.display().to_string();
        params.containerd_grpc_address = self.grpc_address.clone();
        params.containerd_binary = self.publish_binary.display().to_string();
        params.socket_dir = self.socket_dir.as_ref().map(|d| d.display().to_string());
        if let Some(options) = &self.options {
            let mut extension = Extension::new();
            extension.value = Some(options.clone()).into();
            params.extensions.push(extension);
        }
        params.write_to_bytes().map_err(|e| encode("BootstrapParams", e))
    }
}

/// At most this much of a helper's stdout or stderr is kept (the rest is read and counted, so the helper never
/// blocks on a full pipe). A `start` or `delete` reply is a few hundred bytes; more than this is a broken shim.
pub const OUTPUT_CAP: usize = 1 << 20;

/// Quoted helper output in an error message is cut to this many bytes.
const QUOTE_CAP: usize = 4096;

/// What arrived on one pipe: the first `OUTPUT_CAP` bytes, and how many there were in all.
#[derive(Debug, Default)]
struct Captured {
    bytes: Vec<u8>,
    total: usize,
}

impl Captured {
    fn over_cap(&self) -> bool {
        self.total > OUTPUT_CAP
    }
}

/// `text` cut to `max` bytes (on a char boundary) with the size said, for quoting output in messages.
pub fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes in all)", &text[..end], text.len())
}

/// Output bytes as a quoted, clipped string.
fn quoted(bytes: &[u8], total: usize) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(QUOTE_CAP)]);
    if total > QUOTE_CAP {
        format!("{:?}... ({total} bytes in all)", text.trim())
    } else {
        format!("{:?}", text.trim())
    }
}

/// Output of a finished helper process.
struct Finished {
    status: std::process::ExitStatus,
    stdout: Captured,
    stderr: Captured,
}

enum RunOutcome {
    Finished(Finished),
    /// What the helper wrote before it was killed, quoted and clipped.
    TimedOut {
        stderr: String,
    },
}

/// Hands a child back to the reaper when its waiter is done with it, however that ends.
struct Release(Option<u32>);

impl Drop for Release {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            crate::process::reaper::release(pid);
        }
    }
}

/// Copies a pipe into a shared buffer until EOF, so that what arrived is available even if a forked server keeps
/// the pipe open after the helper process exited.
type Collected = (std::sync::Arc<std::sync::Mutex<Captured>>, Option<tokio::task::JoinHandle<()>>);

fn collect<R: tokio::io::AsyncRead + Unpin + Send + 'static>(pipe: Option<R>) -> Collected {
    let buffer = std::sync::Arc::new(std::sync::Mutex::new(Captured::default()));
    let mut reader = None;
    if let Some(mut pipe) = pipe {
        let sink = buffer.clone();
        reader = Some(tokio::spawn(async move {
            let mut chunk = [0u8; 8192];
            while let Ok(n) = pipe.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                let mut captured = sink.lock().unwrap_or_else(|p| p.into_inner());
                let room = OUTPUT_CAP.saturating_sub(captured.bytes.len()).min(n);
                captured.bytes.extend_from_slice(&chunk[..room]);
                captured.total += n;
            }
        }));
    }
    (buffer, reader)
}

/// Waits briefly for a pipe's EOF, then returns what arrived.
async fn finish_collect(collected: Collected) -> Captured {
    let (buffer, reader) = collected;
    if let Some(reader) = reader {
        let abort = reader.abort_handle();
        if tokio::time::timeout(Duration::from_millis(500), reader).await.is_err() {
            abort.abort();
        }
    }
    take(&buffer)
}

fn take(buffer: &std::sync::Mutex<Captured>) -> Captured {
    std::mem::take(&mut *buffer.lock().unwrap_or_else(|p| p.into_inner()))
}

/// How a helper's output is captured.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Capture {
    /// stdout and stderr apart (containerd's `delete`: cmd.Stdout and cmd.Stderr are two buffers).
    Separate,
    /// One pipe on both fds, as Go's CombinedOutput gives (containerd's `start`); it all lands in `stdout`.
    Combined,
}

async fn run_with_deadline(
    mut command: tokio::process::Command,
    cgroup: Option<&Path>,
    stdin: Vec<u8>,
    timeout: Duration,
    binary: &Path,
    capture: Capture,
) -> Result<RunOutcome, LaunchError> {
    let spawn_error = |source| LaunchError::Spawn { binary: binary.display().to_string(), source };
    if let Some(cgroup) = cgroup {
        let output = match capture {
            Capture::Combined => cgspawn::Output::Combined,
            Capture::Separate => cgspawn::Output::Separate,
        };
        match cgspawn::spawn(&command, cgroup, output) {
            Ok(child) => return finish_run(Spawned::IntoCgroup(child), stdin, timeout, binary).await,
            Err(cgspawn::SpawnError::Failed(source)) => return Err(spawn_error(source)),
            Err(cgspawn::SpawnError::Unsupported(_)) => LaunchSpec::move_into_cgroup(&mut command, cgroup),
        }
    }
    let mut combined_reader = None;
    if capture == Capture::Combined {
        let io_error = |source: std::io::Error| LaunchError::Io { context: "creating the output pipe".into(), source };
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| io_error(e.into()))?;
        let write_again = write.try_clone().map_err(io_error)?;
        command.stdout(Stdio::from(write)).stderr(Stdio::from(write_again));
        combined_reader = Some(tokio::net::unix::pipe::Receiver::from_owned_fd(read).map_err(io_error)?);
    }
    let child = crate::process::reaper::spawn_tokio(&mut command).map_err(spawn_error)?;
    // The command holds our copies of the pipe's write end: drop it so the pipe reaches EOF with the child.
    drop(command);
    finish_run(Spawned::Tokio(child, combined_reader), stdin, timeout, binary).await
}

/// A helper started by [`run_with_deadline`]: by tokio, or straight into the trial's cgroup.
enum Spawned {
    /// With the combined output pipe, when stdout and stderr share one.
    Tokio(tokio::process::Child, Option<tokio::net::unix::pipe::Receiver>),
    IntoCgroup(cgspawn::CgroupChild),
}

impl Spawned {
    async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        match self {
            Spawned::Tokio(child, _) => child.wait().await,
            Spawned::IntoCgroup(child) => child.wait().await,
        }
    }

    async fn kill(&mut self) {
        match self {
            Spawned::Tokio(child, _) => {
                let _ = child.kill().await;
            }
            Spawned::IntoCgroup(child) => {
                child.kill();
                let _ = child.wait().await;
            }
        }
    }
}

/// Feeds stdin, collects the output and waits for the helper within `timeout`.
async fn finish_run(
    mut child: Spawned,
    stdin: Vec<u8>,
    timeout: Duration,
    binary: &Path,
) -> Result<RunOutcome, LaunchError> {
    let pid = match &child {
        Spawned::Tokio(child, _) => child.id(),
        Spawned::IntoCgroup(child) => Some(child.id()),
    };
    let _release = Release(pid);
    let feed = |pipe: Box<dyn tokio::io::AsyncWrite + Unpin + Send>| {
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let mut pipe = pipe;
            // A shim may not read stdin at all; a broken pipe is not an error.
            let _ = pipe.write_all(&stdin).await;
            let _ = pipe.shutdown().await;
        })
    };
    let (stdout, stderr) = match &mut child {
        Spawned::Tokio(process, combined) => {
            if let Some(pipe) = process.stdin.take() {
                feed(Box::new(pipe));
            }
            match combined.take() {
                Some(reader) => (collect(Some(reader)), collect(None::<tokio::process::ChildStderr>)),
                None => (collect(process.stdout.take()), collect(process.stderr.take())),
            }
        }
        Spawned::IntoCgroup(process) => {
            if let Some(pipe) = process.stdin.take() {
                feed(Box::new(pipe));
            }
            (collect(process.stdout.take()), collect(process.stderr.take()))
        }
    };
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => {
            // A forked server may hold the pipes open forever, so EOF is awaited only briefly.
            let (stdout, stderr) = tokio::join!(finish_collect(stdout), finish_collect(stderr));
            Ok(RunOutcome::Finished(Finished { status, stdout, stderr }))
        }
        Ok(Err(source)) => Err(LaunchError::Io { context: format!("waiting for {}", binary.display()), source }),
        Err(_) => {
            if let Some(pid) = pid {
                // The helper runs in its own process group: take down anything it forked before hanging.
                let _ =
                    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
            }
            child.kill().await;
            let (err, out) = (take(&stderr.0), take(&stdout.0));
            let mut seen = quoted(&err.bytes, err.total);
            if out.total > 0 {
                seen.push_str(&format!("; stdout {}", quoted(&out.bytes, out.total)));
            }
            Ok(RunOutcome::TimedOut { stderr: seen })
        }
    }
}

/// Runs `start` and reads its reply as the spec's containerd line does.
pub async fn start(spec: &LaunchSpec) -> Result<StartReply, LaunchError> {
    let binary = spec.binary.display().to_string();
    let capture = if spec.profile.combined_output { Capture::Combined } else { Capture::Separate };
    let outcome = run_with_deadline(
        spec.command("start"),
        spec.cgroup.as_deref(),
        spec.start_stdin()?,
        spec.timeout,
        &spec.binary,
        capture,
    )
    .await?;
    let finished = match outcome {
        RunOutcome::Finished(finished) => finished,
        RunOutcome::TimedOut { stderr } => {
            return Err(LaunchError::StartTimeout { binary, timeout: spec.timeout, stderr })
        }
    };
    let (out, err) = (&finished.stdout, &finished.stderr);
    if !finished.status.success() {
        let output = if spec.profile.combined_output {
            quoted(&out.bytes, out.total)
        } else {
            format!("stdout {}; stderr {}", quoted(&out.bytes, out.total), quoted(&err.bytes, err.total))
        };
        return Err(LaunchError::StartFailed { binary, status: finished.status.to_string(), output });
    }
    if out.over_cap() || err.over_cap() {
        return Err(LaunchError::BadStartOutput(format!(
            "{} bytes on stdout and {} on stderr, over the harness's {} byte cap (a reply is a few hundred bytes); it \
             begins {}",
            out.total,
            err.total,
            OUTPUT_CAP,
            preview(&out.bytes)
        )));
    }
    parse_start_output(&out.bytes, spec.profile)
}

/// A short, printable rendering of a reply for error messages.
fn preview(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(160)]).into_owned();
    if bytes.len() > 160 {
        format!("{text:?}... ({} bytes)", bytes.len())
    } else {
        format!("{text:?}")
    }
}

/// `{version, address, protocol}` as Go's json.Unmarshal fills it (unknown fields ignored, missing ones zero).
#[derive(serde::Deserialize)]
struct JsonReply {
    #[serde(default)]
    version: i32,
    #[serde(default)]
    address: String,
    #[serde(default)]
    protocol: String,
}

/// Parses `start`'s output as the profile's containerd does (the profile says whether stderr is mixed in).
pub fn parse_start_output(output: &[u8], profile: &Profile) -> Result<StartReply, LaunchError> {
    let line = profile.line;
    let named = named_address(output);
    let refused = |reason: String| LaunchError::RefusedByProfile { line, reason, address: named.clone() };
    let max_version = match profile.start_output {
        StartOutput::CombinedAddress => {
            // 1.6 dials strings.TrimSpace(output) as it is: no JSON, no protobuf.
            let trimmed = String::from_utf8_lossy(output).trim().to_string();
            if output.first() == Some(&0x08) || trimmed.starts_with('{') {
                return Err(refused(format!(
                    "containerd {line} dials `start`'s whole output (stdout and stderr combined, trimmed) as the socket \
                     address and reads no bootstrap reply; the shim printed {} (a {} bootstrap reply): `dial unix \
                     {trimmed}` fails",
                    preview(output),
                    if trimmed.starts_with('{') { "JSON" } else { "protobuf" }
                )));
            }
            return plain(&trimmed, profile, output);
        }
        StartOutput::CombinedJson { max_version } => max_version,
        StartOutput::CombinedProtobuf { max_version } => {
            if output.first() == Some(&0x08) {
                if let Ok(result) = BootstrapResult::parse_from_bytes(output) {
                    if !result.address.is_empty() {
                        if result.version > max_version {
                            return Err(refused(format!(
                                "unsupported shim version ({}): not implemented",
                                result.version
                            )));
                        }
                        return finish(BootstrapForm::Protobuf, result.version, result.protocol, result.address);
                    }
                }
            }
            max_version
        }
    };
    let trimmed = String::from_utf8_lossy(output).trim().to_string();
    match serde_json::from_str::<JsonReply>(&trimmed) {
        Ok(reply) if reply.version >= 2 => {
            if reply.version > max_version {
                // containerd's own words (parseStartResponse).
                return Err(refused(format!(
                    "unsupported shim version ({}): not implemented (containerd {line} accepts bootstrap version {max_version} at most; \
                     the shim printed {})",
                    reply.version,
                    preview(output)
                )));
            }
            finish(BootstrapForm::Json, reply.version, reply.protocol, reply.address)
        }
        // Not JSON, or JSON below version 2: the whole output is the address (legacy shims).
        _ => plain(&trimmed, profile, output),
    }
}

/// The address a reply names in any of the three forms, whether or not the line can read it (for cleanup).
fn named_address(output: &[u8]) -> Option<String> {
    if let Ok(result) = BootstrapResult::parse_from_bytes(output) {
        if result.address.starts_with("unix://") {
            return Some(result.address);
        }
    }
    let text = String::from_utf8_lossy(output);
    if let Some(start) = text.find('{') {
        if let Ok(reply) = serde_json::from_str::<JsonReply>(text[start..].trim()) {
            if !reply.address.is_empty() {
                return Some(normalize_address(&reply.address));
            }
        }
    }
    text.split_whitespace().find(|word| word.starts_with("unix://")).map(str::to_string)
}

fn plain(trimmed: &str, profile: &Profile, output: &[u8]) -> Result<StartReply, LaunchError> {
    if trimmed.is_empty() {
        return Err(LaunchError::BadStartOutput("empty".into()));
    }
    if trimmed.contains(char::is_whitespace) || trimmed.contains('\0') || trimmed.starts_with('{') {
        let mixed = if profile.combined_output {
            " (containerd reads stdout and stderr combined: anything the shim writes to stderr during `start` becomes part of the address)"
        } else {
            ""
        };
        return Err(LaunchError::RefusedByProfile {
            line: profile.line,
            reason: format!("`start` printed {} which is not a socket address{mixed}", preview(output)),
            address: named_address(output),
        });
    }
    finish(BootstrapForm::Plain, 2, "ttrpc".into(), trimmed.into())
}

fn finish(form: BootstrapForm, version: i32, protocol: String, raw: String) -> Result<StartReply, LaunchError> {
    let api = TaskApi::from_bootstrap_version(version).ok_or(LaunchError::UnsupportedVersion(version))?;
    if raw.is_empty() {
        return Err(LaunchError::BadStartOutput(format!("a {form} reply without an address")));
    }
    let protocol = if protocol.is_empty() { "ttrpc".to_string() } else { protocol };
    if protocol != "ttrpc" {
        return Err(LaunchError::UnsupportedProtocol(protocol));
    }
    Ok(StartReply { form, version, protocol, address: normalize_address(&raw), raw_address: raw, api })
}

/// Gives an address the scheme the Rust ttrpc client needs. In Go's shim code an address without `unix://` names an
/// abstract socket, so it becomes `unix://@name`.
pub fn normalize_address(raw: &str) -> String {
    if raw.contains("://") {
        raw.to_string()
    } else {
        format!("unix://@{}", raw.trim_start_matches('@'))
    }
}

/// The filesystem path behind a `unix://` address, if it is not abstract.
pub fn socket_path(address: &str) -> Option<PathBuf> {
    let rest = address.strip_prefix("unix://")?;
    (!rest.starts_with('@')).then(|| PathBuf::from(rest))
}

/// Where a shim built on containerd's shim library puts its socket for this launch: `<dir>/<sha256 of
/// "<-address>/<namespace>/<id>">` (Go: shim.SocketAddress; rust-extensions: socket_address), with `<dir>`
/// /run/containerd/s, or the bootstrap's socket_dir where the shim honours it. Known before `start` runs, so a
/// socket a failed `start` leaves behind is found too.
pub fn predicted_sockets(spec: &LaunchSpec) -> Vec<PathBuf> {
    use sha2::{Digest, Sha256};
    let key = format!("{}/{}/{}", spec.grpc_address.trim_end_matches('/'), spec.namespace, spec.id);
    let name = hex::encode(Sha256::digest(key.as_bytes()));
    let mut dirs = vec![PathBuf::from(crate::leaks::CONTAINERD_SOCKET_DIR)];
    dirs.extend(spec.socket_dir.iter().cloned());
    dirs.into_iter().map(|d| d.join(&name)).collect()
}

/// Runs `<shim> ... -bundle B delete` and decodes its `DeleteResponse`.
pub async fn delete_action(spec: &LaunchSpec) -> Result<DeleteResponse, LaunchError> {
    let binary = spec.binary.display().to_string();
    let timeout = spec.profile.cleanup_timeout;
    match run_with_deadline(
        spec.command("delete"),
        spec.cgroup.as_deref(),
        Vec::new(),
        timeout,
        &spec.binary,
        Capture::Separate,
    )
    .await?
    {
        RunOutcome::TimedOut { .. } => Err(LaunchError::DeleteTimeout { binary, timeout }),
        RunOutcome::Finished(finished) if !finished.status.success() => Err(LaunchError::DeleteFailed {
            binary,
            status: finished.status.to_string(),
            stderr: quoted(&finished.stderr.bytes, finished.stderr.total),
        }),
        RunOutcome::Finished(finished) if finished.stdout.over_cap() => Err(LaunchError::BadDeleteOutput {
            len: finished.stdout.total,
            detail: format!("over the harness's {OUTPUT_CAP} byte cap"),
        }),
        RunOutcome::Finished(finished) => DeleteResponse::parse_from_bytes(&finished.stdout.bytes)
            .map_err(|e| LaunchError::BadDeleteOutput { len: finished.stdout.total, detail: e.to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Line;

    fn parse(output: &[u8], line: Line) -> Result<StartReply, LaunchError> {
        parse_start_output(output, line.profile())
    }

    #[test]
    fn plain_address_with_newline() {
        for line in Line::ALL {
            let reply = parse(b"unix:///run/containerd/s/abc\n", line).unwrap();
            assert_eq!((reply.form, reply.api), (BootstrapForm::Plain, TaskApi::V2), "{line}");
            assert_eq!(reply.address, "unix:///run/containerd/s/abc");
        }
    }

    #[test]
    fn json_v3_per_line() {
        let json = br#"{"version":3,"address":"unix:///s/x","protocol":"ttrpc"}"#;
        // 1.6 dials the JSON text itself; 1.7 refuses version 3 in containerd's words; 2.x takes it.
        let refused = parse(json, Line::V1_6).unwrap_err().to_string();
        assert!(refused.contains("dials `start`'s whole output") && refused.contains("JSON"), "{refused}");
        let refused = parse(json, Line::V1_7).unwrap_err().to_string();
        assert!(refused.contains("unsupported shim version (3): not implemented"), "{refused}");
        for line in [Line::V2_0, Line::V2x] {
            let reply = parse(json, line).unwrap();
            assert_eq!((reply.form, reply.api), (BootstrapForm::Json, TaskApi::V3));
        }
    }

    #[test]
    fn json_v2_is_accepted_from_1_7() {
        let json = br#"{"version":2,"address":"unix:///s/x","protocol":"ttrpc"}"#;
        assert!(parse(json, Line::V1_6).is_err());
        for line in [Line::V1_7, Line::V2_0, Line::V2x] {
            assert_eq!(parse(json, line).unwrap().api, TaskApi::V2);
        }
    }

    #[test]
    fn json_without_version_is_taken_as_a_plain_address() {
        // containerd (1.7+) takes JSON below version 2 as the address itself, which is then not dialable.
        let error = parse(br#"{"address":"unix:///s/x"}"#, Line::V2x).unwrap_err().to_string();
        assert!(error.contains("not a socket address"), "{error}");
    }

    #[test]
    fn stderr_noise_breaks_the_address() {
        let error = parse(b"time=... level=info msg=starting\nunix:///s/x\n", Line::V1_6).unwrap_err().to_string();
        assert!(error.contains("stdout and stderr combined"), "{error}");
    }

    #[test]
    fn protobuf_v3_only_from_2_3() {
        let mut result = BootstrapResult::new();
        result.version = 3;
        result.address = "unix:///s/y".into();
        result.protocol = "ttrpc".into();
        let bytes = result.write_to_bytes().unwrap();
        let reply = parse(&bytes, Line::V2x).unwrap();
        assert_eq!(
            (reply.form, reply.api, reply.address.as_str()),
            (BootstrapForm::Protobuf, TaskApi::V3, "unix:///s/y")
        );
        assert!(parse(&bytes, Line::V1_6).is_err());
        assert!(parse(&bytes, Line::V2_0).is_err());
    }

    #[test]
    fn version_four_refused() {
        let error = parse(br#"{"version":4,"address":"unix:///s/x","protocol":"ttrpc"}"#, Line::V2x).unwrap_err();
        assert!(matches!(error, LaunchError::RefusedByProfile { .. }), "{error}");
    }

    #[test]
    fn grpc_refused() {
        assert!(matches!(
            parse(br#"{"version":3,"address":"unix:///s/x","protocol":"grpc"}"#, Line::V2x),
            Err(LaunchError::UnsupportedProtocol(_))
        ));
    }

    #[test]
    fn abstract_addresses() {
        assert_eq!(normalize_address("/containerd-shim/ns/id/shim.sock"), "unix://@/containerd-shim/ns/id/shim.sock");
        assert_eq!(socket_path("unix://@x"), None);
        assert_eq!(socket_path("unix:///a/b"), Some(PathBuf::from("/a/b")));
    }
}
