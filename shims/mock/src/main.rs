//! containerd-shim-mock-v1: shimcompat's bundled mock shim (runtime `io.containerd.mock.v1`).
//!
//! Runs each container's process as a plain child process group (no namespaces; chrooted into the container's
//! root when run as root, which also mounts Create's rootfs mounts), serves `containerd.task.v2.Task` and
//! `containerd.task.v3.Task` (the same implementation under both names), and misbehaves on request: see FAULTS.md.
//!
//! `start` and the server are this file's own (the crate's `run` serves v3 only and always answers a legacy
//! caller in JSON, which containerd 1.x cannot read); `delete`, `-info` and the rest go through the crate's `run`.
mod cgroup;
mod faults;
mod proc;
mod service;
mod start;
mod stdio;
mod trace;

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use containerd_shim::asynchronous::{run, ExitSignal, Shim};
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Config, DeleteResponse, Error, Flags, StartOpts};
use containerd_shim_protos::protobuf::MessageField;
use log::{info, warn};

use crate::faults::{unimplemented_rpcs, Fault, Faults, FAULTS_ANNOTATION};
use crate::service::{load_spec, timestamp, Publisher, ServiceConfig, TaskService, PIDS_FILE};

pub const RUNTIME_ID: &str = "io.containerd.mock.v1";
const RECORD_ENV: &str = "SHIMCOMPAT_MOCK_RECORD";

pub struct MockShim {
    id: String,
    namespace: String,
    socket: String,
    bundle: PathBuf,
    exit: Arc<ExitSignal>,
    leave_socket: Arc<AtomicBool>,
}

/// Faults named in ./config.json (the bundle `start` and the server run in); unknown names are left for Create
/// to report.
pub(crate) fn cwd_faults() -> (Faults, BTreeSet<String>) {
    let (faults, unimplemented) = match load_spec(Path::new(".")) {
        Ok(spec) => {
            let annotations = spec.annotations().as_ref();
            let faults = annotations
                .and_then(|a| a.get(FAULTS_ANNOTATION))
                .map(|v| Faults::parse_lenient(v))
                .unwrap_or_default();
            (faults, unimplemented_rpcs(annotations))
        }
        Err(_) => (Faults::default(), BTreeSet::new()),
    };
    (faults.union(Faults::from_env()), unimplemented)
}

#[async_trait]
impl Shim for MockShim {
    type T = TaskService;

    async fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        let bundle = if args.bundle.is_empty() {
            std::env::current_dir().unwrap_or_default()
        } else {
            PathBuf::from(&args.bundle)
        };
        MockShim {
            id: args.id.clone(),
            namespace: args.namespace.clone(),
            socket: args.socket.clone(),
            bundle,
            exit: Arc::new(ExitSignal::default()),
            leave_socket: Arc::new(AtomicBool::new(false)),
        }
    }

    async fn start_shim(&mut self, _opts: StartOpts) -> Result<String, Error> {
        // main() handles `start` itself (start.rs): the crate's reply form does not suit containerd 1.x.
        Err(Error::InvalidArgument("start is handled by the mock's own start action".into()))
    }

    async fn delete_shim(&mut self) -> Result<DeleteResponse, Error> {
        let faults = load_spec(&self.bundle)
            .ok()
            .and_then(|spec| spec.annotations().as_ref()?.get(FAULTS_ANNOTATION).map(|v| Faults::parse_lenient(v)))
            .unwrap_or_default()
            .union(Faults::from_env());
        if faults.has(Fault::DeleteActionGarbage) {
            let mut stdout = std::io::stdout();
            let _ = stdout.write_all(b"\xff\xff\xff\xffmock: this is not a DeleteResponse\n");
            let _ = stdout.flush();
            std::process::exit(0);
        }
        if faults.has(Fault::DeleteActionFailsWhenGone) && !bundle_has_live_process(&self.bundle) {
            eprintln!("mock: delete: container {} not found", self.id);
            std::process::exit(1);
        }
        if faults.has(Fault::DeleteActionKillsGroup) {
            kill_by_cwd(&self.bundle);
        }
        let kill = !faults.has(Fault::DeleteActionLeavesProcess);
        let init_pid = cleanup_bundle(&self.bundle, kill);
        if kill {
            // Create mounted the rootfs mounts here; a shim that died before Delete left them.
            service::unmount_rootfs(&self.bundle);
            service::remove_runtime_state(&self.bundle);
            // And the memory cgroup Create made for a spec with a memory limit (whatever is left in it is killed).
            let spec = load_spec(&self.bundle).ok();
            let cgroup = spec.and_then(|spec| cgroup::MemoryCgroup::locate(&spec, &self.namespace, &self.id));
            if let Some(cgroup) = cgroup {
                if !cgroup.remove() {
                    warn!("delete: cgroup {} could not be removed", cgroup.dir.display());
                }
            }
        }
        Ok(DeleteResponse {
            pid: init_pid.unwrap_or(0) as u32,
            exit_status: 137,
            exited_at: MessageField::some(timestamp(SystemTime::now())),
            ..Default::default()
        })
    }

    async fn wait(&mut self) {
        self.exit.wait().await;
        // The crate removes the socket only when an `address` file names it; the runc shim always removes it.
        if !self.leave_socket.load(Ordering::SeqCst) {
            let path = self.socket.strip_prefix("unix://").unwrap_or(&self.socket);
            if let Err(e) = std::fs::remove_file(path) {
                warn!("remove socket {path}: {e}");
            }
        }
        // A hung handler (start-hangs, wait-once) may hold up the server's graceful shutdown; do not linger.
        std::thread::spawn(|| {
            std::thread::sleep(Duration::from_secs(3));
            std::process::exit(0);
        });
        info!("mock shim {} ({}) exiting", self.id, self.namespace);
    }

    async fn create_task_service(&self, publisher: RemotePublisher) -> TaskService {
        self.task_service(Publisher::Remote(publisher)).await
    }
}

impl MockShim {
    /// The Task service, publishing through `publisher`.
    async fn task_service(&self, publisher: Publisher) -> TaskService {
        let (start_faults, start_unimplemented) = cwd_faults();
        let leave_socket = self.leave_socket.clone();
        if start_faults.has(Fault::ShutdownLeavesSocket) {
            leave_socket.store(true, Ordering::SeqCst);
        }
        let config = ServiceConfig {
            namespace: self.namespace.clone(),
            shim_id: self.id.clone(),
            exit: self.exit.clone(),
            start_faults,
            start_unimplemented,
            leave_socket,
        };
        TaskService::new(config, publisher).await
    }
}

/// Panics, startup errors and other stderr output of the server belong in the bundle's `log` fifo, which the caller
/// drains (the crate's spawn gives the server /dev/null).
fn redirect_stderr_to_log() {
    use std::os::fd::AsRawFd;
    let log = std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open("log");
    if let Ok(log) = log {
        unsafe {
            let flags = libc::fcntl(log.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(log.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK);
            libc::dup2(log.as_raw_fd(), libc::STDERR_FILENO);
        }
    }
}

/// The `delete` action: kill what the mock started for this bundle (as recorded in mock-pids, verified by start
/// time so a recycled pid is never hit). Returns the init pid.
/// Whether a process recorded in the bundle (by Create or Exec) is still the one recorded.
fn bundle_has_live_process(bundle: &Path) -> bool {
    let records = std::fs::read_to_string(bundle.join(PIDS_FILE)).unwrap_or_default();
    records.lines().any(|line| {
        let mut fields = line.split_whitespace();
        let pid = fields.next().and_then(|f| f.parse::<i32>().ok());
        let start_time = fields.next().and_then(|f| f.parse::<u64>().ok());
        matches!((pid, start_time), (Some(pid), Some(start)) if pid > 1 && proc::proc_stat(pid).is_some_and(|s| s.start_time == start))
    })
}

/// delete-action-kills-group: SIGKILL to every process whose working directory is the bundle (the shim serving a
/// group runs in its first container's bundle).
fn kill_by_cwd(bundle: &Path) {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else { return };
    for pid in entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()) {
        if pid != me && std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == bundle) {
            let _ = proc::send_signal(pid as i32, libc::SIGKILL);
        }
    }
}

fn cleanup_bundle(bundle: &Path, kill: bool) -> Option<i32> {
    let records = std::fs::read_to_string(bundle.join(PIDS_FILE)).unwrap_or_default();
    let mut init_pid = None;
    for line in records.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(pid), Some(start_time), Some(pgid), Some(role)) = (
            fields.first().and_then(|f| f.parse::<i32>().ok()),
            fields.get(1).and_then(|f| f.parse::<u64>().ok()),
            fields.get(2).and_then(|f| f.parse::<i32>().ok()),
            fields.get(3),
        ) else {
            continue;
        };
        if *role == "init" {
            init_pid = Some(pid);
        }
        if !kill || pid <= 1 || pgid <= 1 {
            continue;
        }
        if proc::proc_stat(pid).is_some_and(|s| s.start_time == start_time) {
            let _ = proc::send_signal(pid, libc::SIGKILL);
        }
        // The group outlives its leader when the payload forked; members started after the leader are ours.
        let me = std::process::id() as i32;
        for (member, stat) in proc::group_members(pgid) {
            if member != me && stat.start_time >= start_time {
                let _ = proc::send_signal(member, libc::SIGKILL);
            }
        }
    }
    if kill {
        let _ = std::fs::remove_file(bundle.join(PIDS_FILE));
    }
    init_pid
}

/// SHIMCOMPAT_MOCK_RECORD: one line per invocation, for the name-resolution cases.
fn record_invocation(args: &[String]) {
    let Ok(path) = std::env::var(RECORD_ENV) else {
        return;
    };
    if path.is_empty() {
        return;
    }
    let flags = containerd_shim::parse(args.get(1..).unwrap_or_default()).ok();
    let action = match flags.as_ref().map(|f| f.action.as_str()) {
        Some("") | None if flags.as_ref().is_some_and(|f| f.version) => "version",
        Some("") | None => "server",
        Some(action) => action,
    };
    let line = format!(
        "{action} argv0={} exe={} id={} cwd={}\n",
        args.first().map(String::as_str).unwrap_or(""),
        std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_default(),
        flags.as_ref().map(|f| f.id.as_str()).unwrap_or(""),
        std::env::current_dir().map(|p| p.display().to_string()).unwrap_or_default(),
    );
    if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = file.write_all(line.as_bytes());
    }
}

fn action_of(flags: Option<&Flags>) -> &str {
    match flags {
        Some(f) if f.version => "version",
        Some(f) if f.info => "info",
        Some(f) if f.action.is_empty() => "server",
        Some(f) => f.action.as_str(),
        None => "invalid",
    }
}

fn main() {
    let args: Vec<String> = std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect();
    let flags = containerd_shim::parse(args.get(1..).unwrap_or_default()).ok();
    let action = action_of(flags.as_ref()).to_string();
    // Only the server serves many calls at once; `start`, `delete` and `version` are one short step each, and a
    // multi-threaded runtime (a worker per core) would cost each of them more than the step itself.
    let runtime = if action == "server" {
        tokio::runtime::Builder::new_multi_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    };
    match runtime {
        Ok(runtime) => runtime.block_on(act(args, flags, action)),
        Err(e) => {
            eprintln!("{RUNTIME_ID}: cannot start a tokio runtime: {e}");
            std::process::exit(1);
        }
    }
}

async fn act(args: Vec<String>, flags: Option<Flags>, action: String) {
    record_invocation(&args);
    if action != "start" {
        // `start` records itself once it has read its stdin.
        let stdin = if trace::enabled() && action != "info" { trace::peek_stdin() } else { None };
        let (id, namespace) = flags.as_ref().map(|f| (f.id.as_str(), f.namespace.as_str())).unwrap_or_default();
        trace::exec(&action, &args, trace::stdin_shape(stdin.as_deref(), id, namespace));
    }
    match (action.as_str(), flags) {
        ("version", _) => {
            // The crate parses -v/-version but does nothing with them.
            if Faults::from_env().has(Fault::VersionFails) {
                eprintln!("mock: version-fails");
                std::process::exit(1);
            }
            println!(
                "{}: runtime {RUNTIME_ID}, version {} (shimcompat mock, containerd-shim 0.12)",
                args.first()
                    .map(|a| Path::new(a).file_name().unwrap_or_default().to_string_lossy().into_owned())
                    .unwrap_or_default(),
                env!("CARGO_PKG_VERSION")
            );
        }
        ("start", Some(flags)) => {
            if let Err(e) = start::start(&args, &flags) {
                eprintln!("{RUNTIME_ID}: {e}");
                std::process::exit(1);
            }
        }
        ("server", Some(flags)) if !flags.socket.is_empty() => {
            // Panics and other stderr output of the server belong in the bundle's `log` fifo, which the caller
            // drains.
            redirect_stderr_to_log();
            if let Err(e) = start::serve(flags).await {
                // Before readiness stdout is the pipe `start` reads, which reports it; after, it is the log.
                let mut stdout = std::io::stdout();
                let _ = writeln!(stdout, "{RUNTIME_ID}: {e}");
                let _ = stdout.flush();
                std::process::exit(1);
            }
        }
        _ => run::<MockShim>(RUNTIME_ID, None).await,
    }
}
