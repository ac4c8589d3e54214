//! Launching a shim the way containerd does: `<shim> -namespace NS -address A -publish-binary B -id ID start` in the
//! bundle, BootstrapParams on stdin together with the legacy flags and environment, and the address parsed from
//! whichever of the three forms the shim prints. Also the `delete` action containerd runs after losing a shim.
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use containerd_shim_protos::api::DeleteResponse;
use containerd_shim_protos::bootstrap_api::{BootstrapParams, BootstrapResult, Extension, LogLevel};
use containerd_shim_protos::protobuf::{well_known_types::any::Any, Message};
use tokio::io::AsyncReadExt;

use super::task::TaskApi;

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
    #[error("`{binary} start` exited with {status}; stdout: {stdout:?}; stderr: {stderr}")]
    StartFailed { binary: String, status: String, stdout: String, stderr: String },
    #[error("`start` output is not an address: {0}")]
    BadStartOutput(String),
    #[error("shim reports bootstrap version {0}, newer than the Task API v3 containerd speaks")]
    UnsupportedVersion(i32),
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
    /// Whether to send `BootstrapParams` on stdin (containerd 2.3+) or the legacy options `Any` only.
    pub bootstrap_params: bool,
    pub debug: bool,
    pub timeout: Duration,
    /// Extra environment (e.g. PATH for the OCI runtime).
    pub env: Vec<(String, String)>,
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
            .arg("/bin/true")
            .arg("-id")
            .arg(&self.id);
        if action == "delete" {
            command.arg("-bundle").arg(&self.bundle);
        }
        if self.debug {
            command.arg("-debug");
        }
        command
            .arg(action)
            .current_dir(&self.bundle)
            .env("GOMAXPROCS", "2")
            .env("TTRPC_ADDRESS", &self.ttrpc_address)
            .env("GRPC_ADDRESS", &self.grpc_address)
            .env("NAMESPACE", &self.namespace)
            .env("MAX_SHIM_VERSION", "2")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        command
    }

    /// What goes on the shim's stdin for `start`.
    pub fn start_stdin(&self) -> Vec<u8> {
        if !self.bootstrap_params {
            return match &self.options {
                Some(any) => any.write_to_bytes().unwrap_or_default(),
                None => Vec::new(),
            };
        }
        let mut params = BootstrapParams::new();
        params.instance_id = self.id.clone();
        params.namespace = self.namespace.clone();
        params.log_level = if self.debug { LogLevel::LOG_LEVEL_DEBUG } else { LogLevel::LOG_LEVEL_INFO }.into();
        params.containerd_version = "shimcompat".into();
        params.containerd_ttrpc_address = self.ttrpc_address.display().to_string();
        params.containerd_grpc_address = self.grpc_address.clone();
        params.containerd_binary = "/bin/true".into();
        params.socket_dir = self.socket_dir.as_ref().map(|d| d.display().to_string());
        if let Some(options) = &self.options {
            let mut extension = Extension::new();
            extension.value = Some(options.clone()).into();
            params.extensions.push(extension);
        }
        params.write_to_bytes().unwrap_or_default()
    }
}

/// Output of a finished helper process.
struct Finished {
    status: std::process::ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

enum RunOutcome {
    Finished(Finished),
    TimedOut { stderr: Vec<u8> },
}

/// Hands a child back to the reaper when its waiter is done with it, however that ends.
struct Release(Option<u32>);

impl Drop for Release {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            crate::reaper::release(pid);
        }
    }
}

/// Copies a pipe into a shared buffer until EOF, so that what arrived is available even if a forked server keeps
/// the pipe open after the helper process exited.
type Collected = (std::sync::Arc<std::sync::Mutex<Vec<u8>>>, Option<tokio::task::JoinHandle<()>>);

fn collect<R: tokio::io::AsyncRead + Unpin + Send + 'static>(pipe: Option<R>) -> Collected {
    let buffer = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut reader = None;
    if let Some(mut pipe) = pipe {
        let sink = buffer.clone();
        reader = Some(tokio::spawn(async move {
            let mut chunk = [0u8; 8192];
            while let Ok(n) = pipe.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(&chunk[..n]);
            }
        }));
    }
    (buffer, reader)
}

/// Waits briefly for a pipe's EOF, then returns what arrived.
async fn finish_collect(collected: Collected) -> Vec<u8> {
    let (buffer, reader) = collected;
    if let Some(reader) = reader {
        let abort = reader.abort_handle();
        if tokio::time::timeout(Duration::from_millis(500), reader).await.is_err() {
            abort.abort();
        }
    }
    take(&buffer)
}

fn take(buffer: &std::sync::Mutex<Vec<u8>>) -> Vec<u8> {
    std::mem::take(&mut *buffer.lock().unwrap_or_else(|p| p.into_inner()))
}

async fn run_with_deadline(
    mut command: tokio::process::Command,
    stdin: Vec<u8>,
    timeout: Duration,
    binary: &Path,
) -> Result<RunOutcome, LaunchError> {
    let mut child = crate::reaper::spawn_tokio(&mut command)
        .map_err(|source| LaunchError::Spawn { binary: binary.display().to_string(), source })?;
    let pid = child.id();
    let _release = Release(pid);
    if let Some(mut pipe) = child.stdin.take() {
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            // A shim may not read stdin at all; a broken pipe is not an error.
            let _ = pipe.write_all(&stdin).await;
            let _ = pipe.shutdown().await;
        });
    }
    let stdout = collect(child.stdout.take());
    let stderr = collect(child.stderr.take());
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
                let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
            }
            let _ = child.kill().await;
            Ok(RunOutcome::TimedOut { stderr: take(&stderr.0) })
        }
    }
}

/// Runs `start` and parses its reply.
pub async fn start(spec: &LaunchSpec) -> Result<StartReply, LaunchError> {
    let binary = spec.binary.display().to_string();
    let outcome = run_with_deadline(spec.command("start"), spec.start_stdin(), spec.timeout, &spec.binary).await?;
    let finished = match outcome {
        RunOutcome::Finished(finished) => finished,
        RunOutcome::TimedOut { stderr } => {
            return Err(LaunchError::StartTimeout {
                binary,
                timeout: spec.timeout,
                stderr: String::from_utf8_lossy(&stderr).into(),
            })
        }
    };
    if !finished.status.success() {
        return Err(LaunchError::StartFailed {
            binary,
            status: finished.status.to_string(),
            stdout: String::from_utf8_lossy(&finished.stdout).into(),
            stderr: String::from_utf8_lossy(&finished.stderr).trim().into(),
        });
    }
    parse_start_output(&finished.stdout)
}

/// Parses `start` stdout as containerd HEAD does: protobuf `BootstrapResult`, then JSON, then a plain address.
pub fn parse_start_output(stdout: &[u8]) -> Result<StartReply, LaunchError> {
    if stdout.first() == Some(&0x08) {
        if let Ok(result) = BootstrapResult::parse_from_bytes(stdout) {
            if !result.address.is_empty() {
                return finish(BootstrapForm::Protobuf, result.version, result.protocol, result.address);
            }
        }
    }
    let text = String::from_utf8_lossy(stdout);
    let trimmed = text.trim();
    if trimmed.starts_with('{') {
        #[derive(serde::Deserialize)]
        struct JsonReply {
            #[serde(default)]
            version: i32,
            #[serde(default)]
            address: String,
            #[serde(default)]
            protocol: String,
        }
        if let Ok(reply) = serde_json::from_str::<JsonReply>(trimmed) {
            // containerd treats a JSON reply without version >= 2 as a plain address; so do we.
            if reply.version >= 2 && !reply.address.is_empty() {
                return finish(BootstrapForm::Json, reply.version, reply.protocol, reply.address);
            }
        }
    }
    if trimmed.is_empty() {
        return Err(LaunchError::BadStartOutput("empty".into()));
    }
    if trimmed.contains(char::is_whitespace) || trimmed.contains('\0') {
        return Err(LaunchError::BadStartOutput(format!("{trimmed:?}")));
    }
    finish(BootstrapForm::Plain, 2, "ttrpc".into(), trimmed.into())
}

fn finish(form: BootstrapForm, version: i32, protocol: String, raw: String) -> Result<StartReply, LaunchError> {
    let api = TaskApi::from_bootstrap_version(version).ok_or(LaunchError::UnsupportedVersion(version))?;
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

/// Runs `<shim> ... -bundle B delete` and decodes its `DeleteResponse`.
pub async fn delete_action(spec: &LaunchSpec) -> Result<DeleteResponse, LaunchError> {
    let binary = spec.binary.display().to_string();
    match run_with_deadline(spec.command("delete"), Vec::new(), spec.timeout, &spec.binary).await? {
        RunOutcome::TimedOut { .. } => Err(LaunchError::DeleteTimeout { binary, timeout: spec.timeout }),
        RunOutcome::Finished(finished) if !finished.status.success() => Err(LaunchError::DeleteFailed {
            binary,
            status: finished.status.to_string(),
            stderr: String::from_utf8_lossy(&finished.stderr).trim().into(),
        }),
        RunOutcome::Finished(finished) => DeleteResponse::parse_from_bytes(&finished.stdout)
            .map_err(|e| LaunchError::BadDeleteOutput { len: finished.stdout.len(), detail: e.to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_address_with_newline() {
        let reply = parse_start_output(b"unix:///run/containerd/s/abc\n").unwrap();
        assert_eq!(reply.form, BootstrapForm::Plain);
        assert_eq!(reply.api, TaskApi::V2);
        assert_eq!(reply.address, "unix:///run/containerd/s/abc");
    }

    #[test]
    fn json_v3() {
        let reply = parse_start_output(br#"{"version":3,"address":"unix:///s/x","protocol":"ttrpc"}"#).unwrap();
        assert_eq!((reply.form, reply.api), (BootstrapForm::Json, TaskApi::V3));
    }

    #[test]
    fn json_without_version_is_an_error_as_address() {
        // containerd would treat it as a plain address; it contains spaces/quotes only if formatted so.
        let reply = parse_start_output(br#"{"address":"unix:///s/x"}"#).unwrap();
        assert_eq!(reply.form, BootstrapForm::Plain);
    }

    #[test]
    fn protobuf_v3() {
        let mut result = BootstrapResult::new();
        result.version = 3;
        result.address = "unix:///s/y".into();
        result.protocol = "ttrpc".into();
        let reply = parse_start_output(&result.write_to_bytes().unwrap()).unwrap();
        assert_eq!((reply.form, reply.api, reply.address.as_str()), (BootstrapForm::Protobuf, TaskApi::V3, "unix:///s/y"));
    }

    #[test]
    fn version_four_refused() {
        assert!(matches!(
            parse_start_output(br#"{"version":4,"address":"unix:///s/x","protocol":"ttrpc"}"#),
            Err(LaunchError::UnsupportedVersion(4))
        ));
    }

    #[test]
    fn grpc_refused() {
        assert!(matches!(
            parse_start_output(br#"{"version":3,"address":"unix:///s/x","protocol":"grpc"}"#),
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
