//! The `start` action and the server, answering each caller in the form it asked for.
//!
//! containerd 2.3+ sends protobuf `BootstrapParams` on stdin and reads a protobuf `BootstrapResult` (version 3).
//! Older callers (stdin empty or a marshalled options `Any`) read a plain address: containerd 1.6 takes its combined
//! stdout and stderr, trimmed, as the address, and 1.7 rejects any JSON reply with a version above 2. So a legacy
//! caller gets the bare address, nothing else on either stream, and the server speaks v2 to it. The server
//! registers the one Task implementation under both `containerd.task.v2.Task` and `containerd.task.v3.Task`.
//!
//! Like the runc shim, `start` writes the address to `<bundle>/address` (containerd 1.6/1.7 reconnect from it after
//! a restart), and a second `start` for a live group prints that group's address and writes it in its own bundle.
use std::collections::HashMap;
use std::io::{IsTerminal, Read, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::SystemTime;

use containerd_shim::asynchronous::monitor::monitor_notify_by_pid;
use containerd_shim::asynchronous::Shim;
use containerd_shim::bootstrap::{BootstrapParams, BootstrapResult, Extension, LogLevel};
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Config, Flags, StartOpts};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Enum, EnumOrUnknown, Message};
use containerd_shim_protos::shim::oci::Options;
use containerd_shim_protos::shim_async::create_task;
use containerd_shim_protos::ttrpc::r#async::transport::Listener;
use containerd_shim_protos::ttrpc::r#async::{Server, Service};
use log::{debug, info, warn};

use crate::faults::{Fault, Faults, FAULTS_ANNOTATION};
use crate::service::{load_spec, Publisher};
use crate::{trace, MockShim, RUNTIME_ID};

pub const TASK_V2: &str = "containerd.task.v2.Task";
/// How the server publishes events: `ttrpc` (default: containerd's events service at TTRPC_ADDRESS) or `binary`
/// (exec the -publish-binary for each event, as older shims do).
pub const PUBLISH_MODE_ENV: &str = "SHIMCOMPAT_MOCK_PUBLISH";
pub const TASK_V3: &str = "containerd.task.v3.Task";
const GROUP_LABELS: [&str; 2] = ["io.containerd.runc.v2.group", "io.kubernetes.cri.sandbox-id"];
/// Same bound as containerd and the crate.
const MAX_INPUT_SIZE: u64 = 10 << 20;

/// How the caller of `start` spoke, which decides the reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    /// containerd 2.3+: BootstrapParams in, BootstrapResult (version 3) out.
    Bootstrap,
    /// containerd 1.x-2.2: flags, environment, maybe an options Any on stdin; a plain address out.
    Legacy,
}

fn read_stdin() -> Result<Vec<u8>, String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Ok(Vec::new());
    }
    let mut input = Vec::new();
    stdin.lock().take(MAX_INPUT_SIZE).read_to_end(&mut input).map_err(|e| format!("read stdin: {e}"))?;
    Ok(input)
}

/// The crate's detection (containerd `pkg/shim` compatibility layer): BootstrapParams naming this shim is the new
/// protocol; empty input, or an options Any (which also decodes as BootstrapParams, with the type URL landing in
/// `instance_id` and nothing beyond the two identity fields), is the legacy one.
fn parse_start_input(input: &[u8], flags: &Flags) -> Result<(BootstrapParams, Protocol), String> {
    let bootstrap = if input.is_empty() {
        None
    } else {
        match BootstrapParams::parse_from_bytes(input) {
            Ok(params) if params.instance_id == flags.id && params.namespace == flags.namespace => Some(params),
            Ok(params) => {
                let identity_only = BootstrapParams {
                    instance_id: params.instance_id.clone(),
                    namespace: params.namespace.clone(),
                    ..Default::default()
                };
                if params != identity_only {
                    return Err(format!(
                        "bootstrap params for {}/{} do not match command line arguments {}/{}",
                        params.namespace, params.instance_id, flags.namespace, flags.id
                    ));
                }
                None
            }
            Err(_) => None,
        }
    };
    let (mut params, protocol) = match bootstrap {
        Some(params) => (params, Protocol::Bootstrap),
        None => {
            let mut params = BootstrapParams {
                instance_id: flags.id.clone(),
                namespace: flags.namespace.clone(),
                containerd_ttrpc_address: std::env::var("TTRPC_ADDRESS").unwrap_or_default(),
                containerd_grpc_address: flags.address.clone(),
                containerd_binary: flags.publish_binary.clone(),
                ..Default::default()
            };
            if params.containerd_grpc_address.is_empty() {
                params.containerd_grpc_address = std::env::var("GRPC_ADDRESS").unwrap_or_default();
            }
            if let Ok(any) = Any::parse_from_bytes(input) {
                if !any.type_url.is_empty() {
                    params.extensions.push(Extension { value: Some(any).into(), ..Default::default() });
                }
            }
            (params, Protocol::Legacy)
        }
    };
    if flags.debug && params.log_level.value() > LogLevel::LOG_LEVEL_DEBUG.value() {
        params.log_level = EnumOrUnknown::new(LogLevel::LOG_LEVEL_DEBUG);
    }
    if params.containerd_ttrpc_address.is_empty() {
        return Err(match protocol {
            Protocol::Bootstrap => "bootstrap params carry no containerd TTRPC address".into(),
            Protocol::Legacy => "TTRPC_ADDRESS environment variable is not set".into(),
        });
    }
    Ok((params, protocol))
}

/// The group this container's shim serves (the runc shim's grouping annotations, else the task id), and the
/// faults `start` itself honours.
fn grouping(id: &str) -> Result<(String, Faults), String> {
    // Like the runc shim, start needs ./config.json: its annotations choose the group.
    let annotations = match load_spec(Path::new(".")) {
        Ok(spec) => spec.annotations().clone().unwrap_or_default(),
        // A bundle whose config.json does not parse (binary-level fault, so it comes from the environment).
        Err(_) if Faults::from_env().has(Fault::StartAcceptsBrokenBundle) => Default::default(),
        Err(e) => return Err(format!("cannot start the mock shim: {e}")),
    };
    let faults = annotations
        .get(FAULTS_ANNOTATION)
        .map(|v| Faults::parse_lenient(v))
        .unwrap_or_default()
        .union(Faults::from_env());
    let mut grouping = GROUP_LABELS
        .iter()
        .find_map(|label| annotations.get(*label).filter(|v| !v.is_empty()).cloned())
        .unwrap_or_else(|| id.to_string());
    if faults.has(Fault::StartNewAddress) {
        let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos();
        grouping = format!("{grouping}-{}-{nanos}", std::process::id());
    }
    Ok((grouping, faults))
}

/// The mock works without root: where the caller gave no socket directory (containerd 1.x-2.2 never do) and
/// `/run/containerd/s` cannot be written, the socket goes to a directory under the temp dir instead (same name).
fn writable_socket_address(address: String) -> String {
    let path = Path::new(socket_path(&address));
    let Some(dir) = path.parent() else { return address };
    let usable =
        std::fs::create_dir_all(dir).is_ok() && nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).is_ok();
    if usable {
        return address;
    }
    let fallback = std::env::temp_dir().join(format!("containerd-mock-s-{}", nix::unistd::getuid()));
    let _ = std::fs::create_dir_all(&fallback);
    match path.file_name() {
        Some(name) => format!("unix://{}", fallback.join(name).display()),
        None => address,
    }
}

fn socket_path(address: &str) -> &str {
    address.strip_prefix("unix://").unwrap_or(address)
}

fn socket_serving(address: &str) -> bool {
    std::os::unix::net::UnixStream::connect(socket_path(address)).is_ok()
}

/// Writes `address` in the working directory (the bundle), replacing it atomically.
fn write_address_file(address: &str) -> std::io::Result<()> {
    let temp = format!(".address.{}", std::process::id());
    std::fs::write(&temp, address)?;
    std::fs::rename(&temp, "address")
}

/// Re-executes the binary as the server and waits until it is serving. The server closes its stdout when ready
/// (the crate's protocol); what it wrote there before is its startup error.
fn spawn_server(opts: &StartOpts, address: &str) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("current exe: {e}"))?;
    let mut command = Command::new(exe);
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null()).args([
        "-namespace",
        &opts.namespace,
        "-id",
        &opts.id,
        "-address",
        &opts.address,
        "-socket",
        address,
    ]);
    if opts.debug {
        command.arg("-debug");
    }
    // As the runc shim's server is started: with the binary it was given, for shims that publish through it.
    if !opts.publish_binary.is_empty() {
        command.args(["-publish-binary", &opts.publish_binary]);
    }
    if !opts.ttrpc_address.is_empty() {
        command.env("TTRPC_ADDRESS", &opts.ttrpc_address);
    }
    let mut child = command.spawn().map_err(|e| format!("spawn shim server: {e}"))?;
    let shim_cgroup = opts.extension::<Options>().ok().flatten().map(|o| o.shim_cgroup).unwrap_or_default();
    if let Err(e) = containerd_shim::cgroup::set_cgroup_and_oom_score(child.id(), &shim_cgroup) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("confine shim server: {e}"));
    }
    let mut said = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = stdout.read_to_string(&mut said);
    }
    if !said.trim().is_empty() {
        let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
        return Err(format!("shim server failed ({status}): {}", said.trim()));
    }
    // The server stays running (or has joined a live group and exited 0); nobody here waits for it.
    Ok(())
}

/// The `start` action. Prints only the reply on stdout and nothing on stderr unless it fails.
pub fn start(args: &[String], flags: &Flags) -> Result<(), String> {
    let input = read_stdin()?;
    trace::exec("start", args, trace::stdin_shape(Some(&input), &flags.id, &flags.namespace));
    let (params, protocol) = parse_start_input(&input, flags)?;
    let opts = StartOpts::from(params);
    let (grouping, faults) = grouping(&opts.id)?;
    let address = writable_socket_address(opts.socket_address(&grouping));
    if !socket_serving(&address) {
        spawn_server(&opts, &address)?;
    }
    if !faults.has(Fault::NoAddressFile) {
        write_address_file(&address).map_err(|e| format!("write address file: {e}"))?;
    }
    let reply = match protocol {
        // What the containerd-shim crate answers every legacy caller: containerd 1.6 and 1.7 cannot read it.
        Protocol::Legacy if faults.has(Fault::StartReplyJsonV3) => {
            format!(r#"{{"version":3,"address":"{address}","protocol":"ttrpc"}}"#).into_bytes()
        }
        Protocol::Legacy => address.into_bytes(),
        Protocol::Bootstrap => {
            BootstrapResult { version: 3, address, protocol: "ttrpc".to_string(), ..Default::default() }
                .write_to_bytes()
                .map_err(|e| format!("encode BootstrapResult: {e}"))?
        }
    };
    if faults.has(Fault::StartStderrNoise) {
        // A log line on stderr while `start` runs: containerd reads stdout and stderr combined.
        eprintln!(
            "time=\"{}\" level=info msg=\"mock: starting\"",
            SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs()
        );
    }
    let mut stdout = std::io::stdout();
    stdout.write_all(&reply).and_then(|_| stdout.flush()).map_err(|e| format!("write stdout: {e}"))
}

/// The Task service under both names.
fn task_services(task: crate::service::TaskService, v3_only: bool) -> HashMap<String, Service> {
    let mut services = HashMap::new();
    let names: &[&str] = if v3_only { &[TASK_V3] } else { &[TASK_V2, TASK_V3] };
    for name in names {
        let generated = create_task(Arc::new(task.clone()));
        if let Some(service) = generated.into_values().next() {
            services.insert(name.to_string(), service);
        }
    }
    trace::wrap(services)
}

fn listen(socket: &str) -> std::io::Result<UnixListener> {
    let path = Path::new(socket_path(socket));
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    UnixListener::bind(path)
}

/// The crate's readiness signal: stdout (the pipe `start` reads) becomes stderr (the log).
fn signal_started() {
    unsafe {
        libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO);
    }
}

async fn reap(mut signals: Vec<tokio::signal::unix::Signal>) {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let mut chld = signals.pop().expect("SIGCHLD stream");
    let others = signals;
    for mut other in others {
        // SIGTERM, SIGINT and SIGPIPE are received and ignored, as the crate does.
        tokio::spawn(async move { while other.recv().await.is_some() {} });
    }
    while chld.recv().await.is_some() {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, status)) => {
                    let _ = monitor_notify_by_pid(pid.as_raw(), status).await;
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    let _ = monitor_notify_by_pid(pid.as_raw(), 128 + sig as i32).await;
                }
                Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => break,
                Ok(_) => {}
                Err(e) => {
                    debug!("waitpid: {e}");
                    break;
                }
            }
        }
    }
}

/// Server mode (`-socket`): what the crate's `run` does, with the Task service registered under both names.
pub async fn serve(flags: Flags) -> Result<(), String> {
    use tokio::signal::unix::{signal, SignalKind};
    // Before any child exists, so no exit is missed.
    let signals = [libc::SIGTERM, libc::SIGINT, libc::SIGPIPE, libc::SIGCHLD]
        .iter()
        .map(|s| signal(SignalKind::from_raw(*s)))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| format!("signal setup: {e}"))?;
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(format!("set subreaper: {}", std::io::Error::last_os_error()));
    }
    let mut config = Config::default();
    containerd_shim::logger::init(flags.debug, &config.default_log_level, &flags.namespace, &flags.id)
        .map_err(|e| e.to_string())?;
    let ttrpc_address = std::env::var("TTRPC_ADDRESS").map_err(|_| "TTRPC_ADDRESS is not set".to_string())?;
    let mut shim = MockShim::new(RUNTIME_ID, &flags, &mut config).await;
    let task = match std::env::var(PUBLISH_MODE_ENV).as_deref() {
        // Publish as older shims do: exec the -publish-binary for every event, no ttrpc connection of our own.
        Ok("binary") => {
            if flags.publish_binary.is_empty() {
                return Err(format!("{PUBLISH_MODE_ENV}=binary, but `start` was given no -publish-binary"));
            }
            let publisher = Publisher::Binary { binary: flags.publish_binary.clone(), address: flags.address.clone() };
            shim.task_service(publisher).await
        }
        Ok("") | Ok("ttrpc") | Err(_) => {
            let publisher = RemotePublisher::new(&ttrpc_address)
                .await
                .map_err(|e| format!("connect to containerd events at {ttrpc_address}: {e}"))?;
            shim.create_task_service(publisher).await
        }
        Ok(other) => {
            return Err(format!(
                "{PUBLISH_MODE_ENV}={other:?}: the publish modes are `ttrpc` (the default) and `binary`"
            ))
        }
    };
    let listener = match listen(&flags.socket) {
        Ok(listener) => listener,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            // Another server of this group won the race: if it serves, join it.
            for _ in 0..200 {
                if socket_serving(&flags.socket) {
                    write_address_file(&flags.socket).map_err(|e| format!("write address file: {e}"))?;
                    signal_started();
                    return Ok(());
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            let _ = std::fs::remove_file(socket_path(&flags.socket));
            listen(&flags.socket).map_err(|e| format!("listen on {}: {e}", flags.socket))?
        }
        Err(e) => return Err(format!("listen on {}: {e}", flags.socket)),
    };
    let listener = Listener::try_from(listener).map_err(|e| format!("ttrpc listener: {e}"))?;
    let mut server = Server::new()
        .add_listener(listener)
        .register_service(task_services(task, crate::cwd_faults().0.has(Fault::ServeV3Only)));
    server.start().await.map_err(|e| format!("start ttrpc server: {e}"))?;
    signal_started();
    info!("mock shim {} serving {TASK_V2} and {TASK_V3} on {}", flags.id, flags.socket);
    tokio::spawn(reap(signals));
    shim.wait().await;
    info!("shutting down");
    if let Err(e) = server.shutdown().await {
        warn!("server shutdown: {e}");
    }
    Ok(())
}
