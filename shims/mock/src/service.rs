//! The Task service: containers as plain process groups, with faults applied per container.
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use containerd_shim::asynchronous::monitor::{monitor_subscribe, Subscription};
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::monitor::{Subject, Topic};
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::Context;
use containerd_shim_protos::api;
use containerd_shim_protos::cgroups::metrics::{
    BlkIOStat, CPUStat, CPUUsage, MemoryEntry, MemoryStat, Metrics, PidsStat, Throttle,
};
use containerd_shim_protos::events::task::{
    TaskCheckpointed, TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::empty::Empty;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::{Message, MessageDyn, MessageField, MessageFull};
use containerd_shim_protos::shim::oci::ProcessDetails;
use containerd_shim_protos::shim_async::Task;
use containerd_shim_protos::topics;
use containerd_shim_protos::ttrpc::{self, r#async::TtrpcContext, Code};
use log::{info, warn};
use oci_spec::runtime::{Process, Spec};
use tokio::sync::{mpsc, watch};

use crate::cgroup::MemoryCgroup;
use crate::faults::{unimplemented_rpcs, Fault, Faults};
use crate::proc::{self, cstring, Launch};
use crate::stdio::{self, IoHandles, IoRequest};

const STDOUT_TRUNCATE_LIMIT: u64 = 1 << 20;
pub const PIDS_FILE: &str = "mock-pids";

#[derive(Clone, Copy, Debug)]
struct ExitInfo {
    status: u32,
    at: SystemTime,
}

pub fn timestamp(at: SystemTime) -> Timestamp {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut ts = Timestamp::new();
    ts.seconds = since.as_secs() as i64;
    ts.nanos = since.subsec_nanos() as i32;
    ts
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Created,
    Running,
    Stopped,
}

struct Proc {
    exec_id: String,
    pid: i32,
    phase: Phase,
    exit: Option<ExitInfo>,
    exit_tx: watch::Sender<Option<ExitInfo>>,
    stdin: String,
    stdout: String,
    stderr: String,
    terminal: bool,
    /// Write end of the start gate of a created init.
    gate: Option<OwnedFd>,
    io: IoHandles,
    /// An exec's process spec, kept from Exec until Start.
    spec: Option<Process>,
    waits: usize,
}

impl Proc {
    fn new(exec_id: &str, stdin: &str, stdout: &str, stderr: &str, terminal: bool) -> Proc {
        Proc {
            exec_id: exec_id.to_string(),
            pid: 0,
            phase: Phase::Created,
            exit: None,
            exit_tx: watch::channel(None).0,
            stdin: stdin.to_string(),
            stdout: stdout.to_string(),
            stderr: stderr.to_string(),
            terminal,
            gate: None,
            io: IoHandles::default(),
            spec: None,
            waits: 0,
        }
    }

    fn record_exit(&mut self, info: ExitInfo) {
        self.exit = Some(info);
        self.phase = Phase::Stopped;
        self.exit_tx.send_replace(Some(info));
        // The process is gone: stop feeding its stdin (the caller may keep its fifo open forever).
        self.io.stdin_close.take();
    }
}

struct Container {
    id: String,
    bundle: String,
    root: PathBuf,
    /// Start time (clock ticks since boot) of the init, to recognise the container's processes later.
    init_start_time: u64,
    faults: Faults,
    unimplemented: BTreeSet<String>,
    init: Proc,
    execs: BTreeMap<String, Proc>,
    paused: bool,
    annotations: HashMap<String, String>,
    /// events-out-of-order: TaskCreate waits here until TaskStart has been queued.
    held_create: Option<TaskCreate>,
    /// The init's TaskExit waits here until every running exec has exited (as the runc shim does).
    pending_init_exit: Option<TaskExit>,
    /// Delete of a created task is killing the init: its exit is not an event.
    deleting: bool,
    /// Create mounted its rootfs mounts at `<bundle>/rootfs`; Delete unmounts them.
    rootfs_mounted: bool,
    /// The container's memory cgroup, when its spec sets a memory limit; Delete removes it.
    memory: Option<Arc<MemoryCgroup>>,
    /// The cgroup's OOM-kill count already reported with /tasks/oom.
    oom_reported: u64,
}

impl Container {
    fn event_id(&self) -> String {
        if self.faults.has(Fault::EventWrongContainerId) {
            format!("{}-wrong", self.id)
        } else {
            self.id.clone()
        }
    }

    fn event_pid(&self, pid: i32) -> u32 {
        pid as u32 + self.faults.has(Fault::EventWrongPid) as u32
    }

    fn running_exec_pids(&self) -> Vec<i32> {
        self.execs.values().filter(|e| e.phase == Phase::Running && e.pid > 0).map(|e| e.pid).collect()
    }

    fn exit_event(&self, process: &Proc, info: ExitInfo) -> TaskExit {
        let id = if process.exec_id.is_empty() { self.id.clone() } else { process.exec_id.clone() };
        TaskExit {
            container_id: self.event_id(),
            id,
            pid: self.event_pid(process.pid),
            exit_status: info.status,
            exited_at: if self.faults.has(Fault::ExitEventNoExitedAt) {
                MessageField::none()
            } else {
                MessageField::some(timestamp(info.at))
            },
            ..Default::default()
        }
    }

    /// The /tasks/oom event due when the kernel has OOM-killed in the container's cgroup since the last one (one
    /// event per check, however many kills, as the runc shim's watcher publishes).
    fn oom_event(&mut self) -> Option<TaskOOM> {
        let kills = self.memory.as_ref()?.oom_kills();
        if kills <= self.oom_reported {
            return None;
        }
        self.oom_reported = kills;
        if self.faults.has(Fault::NoOomEvent) {
            warn!("no-oom-event: not publishing /tasks/oom for {}", self.id);
            return None;
        }
        Some(TaskOOM { container_id: self.event_id(), ..Default::default() })
    }

    fn process(&self, exec_id: &str) -> Option<&Proc> {
        if exec_id.is_empty() {
            Some(&self.init)
        } else {
            self.execs.get(exec_id)
        }
    }

    fn process_mut(&mut self, exec_id: &str) -> Option<&mut Proc> {
        if exec_id.is_empty() {
            Some(&mut self.init)
        } else {
            self.execs.get_mut(exec_id)
        }
    }

    /// Signals every process of the container: the group, plus execs outside it (terminal execs lead their own
    /// session).
    fn signal_all(&self, signal: i32) -> Result<(), nix::errno::Errno> {
        let group = if self.init.phase != Phase::Stopped {
            // The leader is alive (or an unreaped zombie), so the group id is still ours: signal it atomically.
            proc::send_signal(-self.init.pid, signal)
        } else {
            // The leader is gone and its pid may be recycled: only processes verified to be ours are signalled.
            let members = self.group_members();
            let sent = members.iter().filter(|pid| proc::send_signal(**pid, signal).is_ok()).count();
            if sent > 0 {
                Ok(())
            } else {
                Err(nix::errno::Errno::ESRCH)
            }
        };
        let mut any = group.is_ok();
        for pid in self.running_exec_pids() {
            any |= proc::send_signal(pid, signal).is_ok();
        }
        match group {
            Err(e) if !any => Err(e),
            _ => Ok(()),
        }
    }

    /// Live members of the container's process group, started no earlier than its init (a recycled group id
    /// cannot qualify).
    fn group_members(&self) -> Vec<i32> {
        proc::group_members(self.init.pid)
            .into_iter()
            .filter(|(_, stat)| stat.start_time >= self.init_start_time)
            .map(|(pid, _)| pid)
            .collect()
    }

    fn live_pids(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        if self.init.phase != Phase::Stopped && proc::is_alive(self.init.pid) {
            pids.push(self.init.pid);
        }
        for pid in self.group_members() {
            if !pids.contains(&pid) {
                pids.push(pid);
            }
        }
        for pid in self.running_exec_pids() {
            if !pids.contains(&pid) && proc::is_alive(pid) {
                pids.push(pid);
            }
        }
        pids
    }
}

type Event = (&'static str, Box<dyn MessageDyn>);

#[derive(Default)]
struct State {
    containers: HashMap<String, Container>,
    /// Faults of containers already deleted, for errors about them later.
    deleted: HashMap<String, Faults>,
    /// Every fault seen on this shim (start config and all containers): shim-wide behaviour and unknown ids.
    seen: Faults,
}

struct Inner {
    namespace: String,
    /// The `-id` the shim was started with: the task of its first bundle.
    shim_id: String,
    state: Mutex<State>,
    events: mpsc::UnboundedSender<Event>,
    exit: Arc<ExitSignal>,
    start_unimplemented: BTreeSet<String>,
    exec_in_flight: AtomicUsize,
    leave_socket: Arc<AtomicBool>,
    disconnect_watch: Once,
    sockets_before_serving: HashSet<String>,
}

#[derive(Clone)]
pub struct TaskService {
    inner: Arc<Inner>,
}

pub struct RpcError {
    code: Code,
    message: String,
}

fn rpc_err(code: Code, message: impl Into<String>) -> RpcError {
    RpcError { code, message: message.into() }
}

fn not_found_container(id: &str) -> RpcError {
    rpc_err(Code::NOT_FOUND, format!("container not created: {id}"))
}

fn not_found_process(exec_id: &str) -> RpcError {
    rpc_err(Code::NOT_FOUND, format!("process does not exist {exec_id}"))
}

type R<T> = Result<T, RpcError>;

/// Reads a bundle's config.json.
pub fn load_spec(bundle: &Path) -> Result<Spec, String> {
    let path = bundle.join("config.json");
    Spec::load(&path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Where the shim's events go.
pub enum Publisher {
    /// containerd's ttrpc events service at TTRPC_ADDRESS, as current shims publish.
    Remote(RemotePublisher),
    /// `<publish-binary> --address A publish --topic T --namespace N` with the event `Any` on stdin, as shims
    /// published before the ttrpc publisher existed (mode SHIMCOMPAT_MOCK_PUBLISH=binary).
    Binary { binary: String, address: String },
}

impl Publisher {
    async fn publish(&self, topic: &str, namespace: &str, event: Box<dyn MessageDyn>) -> Result<(), String> {
        match self {
            Publisher::Remote(remote) => {
                remote.publish(Context::default(), topic, namespace, event).await.map_err(|e| e.to_string())
            }
            Publisher::Binary { binary, address } => {
                let any = containerd_shim::util::convert_to_any(event).map_err(|e| e.to_string())?;
                let input = any.write_to_bytes().map_err(|e| e.to_string())?;
                publish_by_binary(binary, address, topic, namespace, input).await
            }
        }
    }
}

/// Runs the publish binary once and waits for it (through the shim's reaper, which collects every child).
async fn publish_by_binary(
    binary: &str,
    address: &str,
    topic: &str,
    namespace: &str,
    input: Vec<u8>,
) -> Result<(), String> {
    use std::process::{Command, Stdio};
    let mut exits = monitor_subscribe(Topic::Pid).await.map_err(|e| format!("subscribe to exits: {e}"))?;
    let spawned = Command::new(binary)
        .args(["--address", address, "publish", "--topic", topic, "--namespace", namespace])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn();
    let result = match spawned {
        Err(e) => Err(format!("run {binary}: {e}")),
        Ok(mut child) => {
            let pid = child.id() as i32;
            if let Some(mut stdin) = child.stdin.take() {
                let _ = stdin.write_all(&input);
            }
            // The reaper collects it; std must not.
            drop(child);
            let waited = tokio::time::timeout(Duration::from_secs(10), async {
                while let Some(exit) = exits.rx.recv().await {
                    if matches!(exit.subject, Subject::Pid(p) if p == pid) {
                        return Some(exit.exit_code);
                    }
                }
                None
            })
            .await;
            match waited {
                Ok(Some(0)) => Ok(()),
                Ok(Some(code)) => Err(format!("{binary} publish exited with {code}")),
                Ok(None) => Err(format!("{binary} publish: its exit was not seen")),
                Err(_) => Err(format!("{binary} publish did not exit within 10s")),
            }
        }
    };
    let _ = containerd_shim::asynchronous::monitor::monitor_unsubscribe(exits.id).await;
    result
}

pub struct ServiceConfig {
    pub namespace: String,
    pub shim_id: String,
    pub exit: Arc<ExitSignal>,
    pub start_faults: Faults,
    pub start_unimplemented: BTreeSet<String>,
    pub leave_socket: Arc<AtomicBool>,
}

impl TaskService {
    pub async fn new(config: ServiceConfig, publisher: Publisher) -> TaskService {
        let (events, mut queue) = mpsc::unbounded_channel::<Event>();
        // One queue, one publishing task: events reach containerd in the order they were queued.
        let namespace = config.namespace.clone();
        tokio::spawn(async move {
            while let Some((topic, event)) = queue.recv().await {
                if let Err(e) = publisher.publish(topic, &namespace, event).await {
                    warn!("publish {topic}: {e}");
                }
            }
        });
        let inner = Arc::new(Inner {
            namespace: config.namespace.clone(),
            shim_id: config.shim_id.clone(),
            state: Mutex::new(State { seen: config.start_faults, ..Default::default() }),
            events,
            exit: config.exit,
            start_unimplemented: config.start_unimplemented,
            exec_in_flight: AtomicUsize::new(0),
            leave_socket: config.leave_socket,
            disconnect_watch: Once::new(),
            sockets_before_serving: socket_links(),
        });
        let service = TaskService { inner };
        // Subscribe before any child exists so that no exit can be missed.
        match monitor_subscribe(Topic::Pid).await {
            Ok(subscription) => {
                tokio::spawn(service.clone().reap_loop(subscription));
            }
            Err(e) => warn!("subscribe to exits: {e}"),
        }
        service
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn publish(&self, topic: &'static str, event: impl MessageDyn) {
        let _ = self.inner.events.send((topic, Box::new(event)));
    }

    async fn reap_loop(self, mut subscription: Subscription) {
        while let Some(event) = subscription.rx.recv().await {
            if let Subject::Pid(pid) = event.subject {
                self.on_exit(pid, event.exit_code);
            }
        }
    }

    fn on_exit(&self, pid: i32, code: i32) {
        let mut st = self.lock();
        let at = SystemTime::now();
        for container in st.containers.values_mut() {
            let faults = container.faults;
            let mut status = (code as u32) & 0xff;
            if faults.has(Fault::WrongExitStatus) {
                status = (status + 1) % 256;
            }
            if container.init.pid == pid && container.init.phase != Phase::Stopped {
                // An OOM kill is counted before its SIGKILL is sent: reading the count now puts /tasks/oom first.
                if let Some(oom) = container.oom_event() {
                    self.publish(topics::TASK_OOM_EVENT_TOPIC, oom);
                }
                let info = ExitInfo { status, at };
                container.init.record_exit(info);
                let was_paused = std::mem::replace(&mut container.paused, false);
                // Without a pid namespace nothing else kills the rest of the container: do what the kernel does
                // when a container's init dies (not under kill-all-ignored, which would hide that fault).
                if !faults.has(Fault::KillAllIgnored) {
                    let _ = container.signal_all(libc::SIGKILL);
                }
                if was_paused {
                    let _ = container.signal_all(libc::SIGCONT);
                }
                if !container.deleting && !faults.has(Fault::NoExitEvent) {
                    let event = container.exit_event(&container.init, info);
                    if container.running_exec_pids().is_empty() {
                        self.publish(topics::TASK_EXIT_EVENT_TOPIC, event);
                    } else {
                        container.pending_init_exit = Some(event);
                    }
                }
                info!("container {} init {pid} exited {status}", container.id);
                return;
            }
            let Some(exec_id) = container
                .execs
                .iter()
                .find(|(_, e)| e.pid == pid && e.phase == Phase::Running)
                .map(|(id, _)| id.clone())
            else {
                continue;
            };
            if faults.has(Fault::ExecExitStatusZero) {
                status = 0;
            }
            if let Some(oom) = container.oom_event() {
                self.publish(topics::TASK_OOM_EVENT_TOPIC, oom);
            }
            let info = ExitInfo { status, at };
            let event = {
                let exec = container.execs.get_mut(&exec_id).expect("found above");
                exec.record_exit(info);
                container.exit_event(&container.execs[&exec_id], info)
            };
            self.publish(topics::TASK_EXIT_EVENT_TOPIC, event);
            if container.running_exec_pids().is_empty() {
                if let Some(init_exit) = container.pending_init_exit.take() {
                    self.publish(topics::TASK_EXIT_EVENT_TOPIC, init_exit);
                }
            }
            info!("container {} exec {exec_id} ({pid}) exited {status}", container.id);
            return;
        }
    }

    /// Faults that apply to a request naming `id`, and whether the RPC is switched off. Crashes the shim on an
    /// unknown id when asked to.
    fn prologue(&self, rpc: &str, id: &str, names_container: bool) -> (Faults, R<()>) {
        self.watch_first_connection();
        let st = self.lock();
        let (faults, switched_off) = match st.containers.get(id) {
            Some(c) => (c.faults, c.unimplemented.contains(rpc)),
            None => {
                let faults = st.deleted.get(id).copied().unwrap_or_default().union(st.seen);
                if names_container && faults.has(Fault::CrashOnUnknownId) {
                    eprintln!("mock: crash-on-unknown-id: {rpc} named unknown container {id:?}");
                    std::process::exit(2);
                }
                (faults, false)
            }
        };
        let switched_off = switched_off || self.inner.start_unimplemented.contains(rpc);
        let gate = if switched_off {
            Err(rpc_err(Code::UNIMPLEMENTED, format!("{rpc} is not implemented by this mock configuration")))
        } else {
            Ok(())
        };
        (faults, gate)
    }

    fn finish<T>(&self, rpc: &str, faults: Faults, result: R<T>) -> ttrpc::Result<T> {
        let e = match result {
            Ok(value) => return Ok(value),
            Err(e) => e,
        };
        let (code, message) = match e.code {
            Code::NOT_FOUND if faults.has(Fault::NotfoundAsUnknown) => (Code::UNKNOWN, e.message),
            Code::ALREADY_EXISTS if faults.has(Fault::AlreadyexistsAsUnknown) => (Code::UNKNOWN, e.message),
            Code::UNIMPLEMENTED if faults.has(Fault::UnimplementedAsNotfound) => {
                (Code::NOT_FOUND, format!("/containerd.task.v3.Task/{rpc} is not supported"))
            }
            code => (code, e.message),
        };
        info!("{rpc}: {code:?} {message}");
        Err(ttrpc::Error::RpcStatus(ttrpc::get_status(code, message)))
    }

    /// exit-on-disconnect: find the first client's connection and exit when it closes.
    fn watch_first_connection(&self) {
        let faults = self.lock().seen;
        let exit_on_disconnect = faults.has(Fault::ExitOnDisconnect);
        if !exit_on_disconnect && !faults.has(Fault::ReconnectForgetsTasks) {
            return;
        }
        self.inner.disconnect_watch.call_once(|| {
            let connections: Vec<(i32, String)> = socket_fds()
                .into_iter()
                .filter(|(fd, link)| !self.inner.sockets_before_serving.contains(link) && !is_listening(*fd))
                .collect();
            let service = self.clone();
            std::thread::spawn(move || {
                watch_connections(connections);
                if exit_on_disconnect {
                    info!("exit-on-disconnect: first client connection closed");
                    service.inner.exit.signal();
                } else {
                    service.forget_other_tasks();
                }
            });
        });
    }

    /// Fault reconnect-forgets-tasks: keeps only the task the shim was started for, without its execs.
    fn forget_other_tasks(&self) {
        let own = self.inner.shim_id.clone();
        let mut st = self.lock();
        let forgotten: Vec<String> = st.containers.keys().filter(|id| **id != own).cloned().collect();
        st.containers.retain(|id, _| *id == own);
        let mut execs = 0;
        if let Some(container) = st.containers.get_mut(&own) {
            execs = container.execs.len();
            container.execs.clear();
        }
        warn!(
            "reconnect-forgets-tasks: first connection closed; forgot tasks {forgotten:?} and {execs} exec(s) of {own}"
        );
    }

    fn record_pid(bundle: &str, pid: i32, pgid: i32, role: &str) {
        let start_time = proc::proc_stat(pid).map(|s| s.start_time).unwrap_or(0);
        let line = format!("{pid} {start_time} {pgid} {role}\n");
        let file = fs::OpenOptions::new().create(true).append(true).open(Path::new(bundle).join(PIDS_FILE));
        if let Err(e) = file.and_then(|mut f| f.write_all(line.as_bytes())) {
            warn!("record pid {pid} in {bundle}: {e}");
        }
    }

    /// Publishes /tasks/oom for OOM kills that end no process of the shim's own (a payload's child), checking the
    /// cgroup's count every 100 ms until the container is deleted. Exits check the count themselves first.
    fn watch_oom(&self, id: &str, memory: Arc<MemoryCgroup>) {
        let service = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let mut st = service.lock();
                let Some(container) = st.containers.get_mut(&id) else { return };
                if !container.memory.as_ref().is_some_and(|m| Arc::ptr_eq(m, &memory)) {
                    return;
                }
                if let Some(oom) = container.oom_event() {
                    service.publish(topics::TASK_OOM_EVENT_TOPIC, oom);
                }
            }
        });
    }

    fn do_create(&self, req: &api::CreateTaskRequest) -> R<(Faults, api::CreateTaskResponse)> {
        if req.id.is_empty() {
            return Err(rpc_err(Code::INVALID_ARGUMENT, "container id is empty"));
        }
        let mut st = self.lock();
        if st.containers.contains_key(&req.id) {
            return Err(rpc_err(Code::ALREADY_EXISTS, format!("container {} already exists", req.id)));
        }
        if req.bundle.is_empty() {
            return Err(rpc_err(Code::INVALID_ARGUMENT, "bundle path is empty"));
        }
        let bundle = PathBuf::from(&req.bundle);
        let spec = load_spec(&bundle).map_err(|e| rpc_err(Code::INVALID_ARGUMENT, e))?;
        let faults = Faults::from_annotations(spec.annotations().as_ref())
            .map_err(|name| rpc_err(Code::INVALID_ARGUMENT, format!("unknown mock fault `{name}`")))?;
        if !req.checkpoint.is_empty() {
            return Err(rpc_err(Code::UNIMPLEMENTED, "the mock cannot restore from a checkpoint"));
        }
        let process =
            spec.process().clone().ok_or_else(|| rpc_err(Code::INVALID_ARGUMENT, "config.json has no process"))?;
        let root = match spec.root() {
            Some(root) if root.path().is_absolute() => root.path().clone(),
            Some(root) => bundle.join(root.path()),
            None => bundle.join("rootfs"),
        };
        if faults.has(Fault::NullIoFails) && req.stdin.is_empty() && req.stdout.is_empty() && req.stderr.is_empty() {
            return Err(rpc_err(Code::UNKNOWN, "null-io-fails: refusing a task without stdio"));
        }
        let terminal = req.terminal && !faults.has(Fault::TerminalIgnored);
        let io_request = IoRequest {
            stdin: &req.stdin,
            stdout: &req.stdout,
            stderr: if req.terminal { "" } else { &req.stderr },
            terminal,
            drop_stdout: faults.has(Fault::DropStdout),
            stderr_to_stdout: faults.has(Fault::StderrToStdout),
            stdout_limit: faults.has(Fault::StdoutTruncate).then_some(STDOUT_TRUNCATE_LIMIT),
            file_no_create: faults.has(Fault::FileUriNoCreate),
            leave_logger: faults.has(Fault::LoggerLeftRunning),
            stdout_needs_stderr: faults.has(Fault::StdoutNeedsStderr),
            stdin_needs_output: faults.has(Fault::StdinOnlyIgnored),
        };
        let (gate_read, gate_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| rpc_err(Code::INTERNAL, format!("gate pipe: {e}")))?;
        let runtime_state =
            runtime_options(req.options.as_ref(), faults)?.map(|root| root.join(&self.inner.namespace).join(&req.id));
        let memory = MemoryCgroup::create(&spec, &self.inner.namespace, &req.id)
            .map_err(|e| rpc_err(Code::FAILED_PRECONDITION, e))?
            .map(Arc::new);
        let rootfs_mounted = !req.rootfs.is_empty();
        if rootfs_mounted {
            if let Err(e) = mount_rootfs(&bundle, &req.rootfs, faults) {
                if let Some(memory) = &memory {
                    memory.remove();
                }
                return Err(e);
            }
        }
        let mut process = process;
        if faults.has(Fault::EnvFromShim) {
            process.set_env(Some(std::env::vars().map(|(k, v)| format!("{k}={v}")).collect()));
        }
        let launched =
            spawn_process(&root, &process, &io_request, None, Some(gate_read), &self.inner.namespace, &req.id);
        let (pid, io) = match launched {
            Ok(launched) => launched,
            Err(e) => {
                if rootfs_mounted {
                    unmount_rootfs(&bundle);
                }
                if let Some(memory) = &memory {
                    memory.remove();
                }
                return Err(e);
            }
        };
        Self::record_pid(&req.bundle, pid, pid, "init");
        // The child waits on its gate, before exec: it joins the cgroup before the payload runs.
        if let Some(memory) = &memory {
            if let Err(e) = memory.add(pid) {
                // Closing the gate makes the child _exit(137) without running anything.
                drop(gate_write);
                memory.remove();
                if rootfs_mounted {
                    unmount_rootfs(&bundle);
                }
                return Err(rpc_err(Code::UNKNOWN, format!("placing init {pid} in its memory cgroup: {e}")));
            }
        }
        if let Some(state) = &runtime_state {
            write_runtime_state(&bundle, state, &req.id, pid);
        }

        let mut init = Proc::new("", &req.stdin, &req.stdout, &req.stderr, req.terminal);
        init.pid = pid;
        init.gate = Some(gate_write);
        init.io = io;
        let container = Container {
            id: req.id.clone(),
            bundle: req.bundle.clone(),
            root,
            init_start_time: proc::proc_stat(pid).map(|s| s.start_time).unwrap_or(0),
            faults,
            unimplemented: unimplemented_rpcs(spec.annotations().as_ref()),
            init,
            execs: BTreeMap::new(),
            paused: false,
            annotations: spec.annotations().clone().unwrap_or_default(),
            held_create: None,
            pending_init_exit: None,
            deleting: false,
            rootfs_mounted,
            memory: memory.clone(),
            oom_reported: 0,
        };
        let event = TaskCreate {
            container_id: container.event_id(),
            bundle: req.bundle.clone(),
            rootfs: req.rootfs.clone(),
            io: MessageField::some(TaskIO {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
                ..Default::default()
            }),
            checkpoint: req.checkpoint.clone(),
            pid: pid as u32,
            ..Default::default()
        };
        let mut container = container;
        if faults.has(Fault::EventsOutOfOrder) {
            container.held_create = Some(event);
        } else {
            self.publish(topics::TASK_CREATE_EVENT_TOPIC, event);
        }
        st.seen = st.seen.union(faults);
        st.deleted.remove(&req.id);
        st.containers.insert(req.id.clone(), container);
        drop(st);
        if let Some(memory) = memory {
            self.watch_oom(&req.id, memory);
        }
        info!("created {} pid {pid} faults {:?}", req.id, faults.names());
        let pid = pid as u32 + faults.has(Fault::CreateWrongPid) as u32;
        Ok((faults, api::CreateTaskResponse { pid, ..Default::default() }))
    }
}

/// Mounts Create's rootfs mounts at `<bundle>/rootfs`, as the runc shim does before `runc create`.
fn mount_rootfs(bundle: &Path, mounts: &[api::Mount], faults: Faults) -> R<()> {
    let euid = unsafe { libc::geteuid() };
    let target = bundle.join("rootfs");
    if euid != 0 {
        return Err(rpc_err(
            Code::FAILED_PRECONDITION,
            format!(
                "cannot mount the {} rootfs mount(s) at {}: mounting needs root and the mock runs as uid {euid}",
                mounts.len(),
                target.display()
            ),
        ));
    }
    fs::create_dir_all(&target).map_err(|e| rpc_err(Code::UNKNOWN, format!("create {}: {e}", target.display())))?;
    for mount in mounts {
        let at =
            if mount.target.is_empty() { target.clone() } else { target.join(mount.target.trim_start_matches('/')) };
        if mount.type_ != "overlay" && faults.has(Fault::RootfsBindRefused) {
            unmount_rootfs(bundle);
            return Err(rpc_err(
                Code::INVALID_ARGUMENT,
                format!("unsupported rootfs mount type {:?} (only overlay)", mount.type_),
            ));
        }
        let lower = mount
            .options
            .iter()
            .find_map(|o| o.strip_prefix("lowerdir="))
            .map(|l| l.split(':').next().unwrap_or(l).to_string());
        let mounted = match lower {
            Some(lower) if mount.type_ == "overlay" && faults.has(Fault::RootfsBindLower) => {
                containerd_shim::mount::mount_rootfs(Some("bind"), Some(&lower), &["rbind".to_string()], &at)
            }
            _ => containerd_shim::mount::mount_rootfs(
                Some(mount.type_.as_str()),
                Some(mount.source.as_str()),
                &mount.options,
                &at,
            ),
        };
        if let Err(e) = mounted {
            if faults.has(Fault::RootfsPartialLeft) {
                leave_submount(&target);
            } else {
                unmount_rootfs(bundle);
            }
            return Err(rpc_err(
                Code::UNKNOWN,
                format!("mount {} {} at {}: {e}", mount.type_, mount.source, at.display()),
            ));
        }
    }
    Ok(())
}

/// Type URLs of the runtime options containerd sends: the runc shim's, and CRI's for every other runtime
/// (pkg/cri getRuntimeOptionsType).
const RUNC_OPTIONS_URL: &str = "containerd.runc.v1.Options";
const RUNTIME_OPTIONS_URL: &str = "runtimeoptions.v1.Options";
/// Where Create recorded the runtime state dir it made (for Delete and the `delete` action).
pub const RUNTIME_STATE_FILE: &str = "mock-runtime-state";

/// Reads Create's options: `containerd.runc.v1.Options.root` is where a runc-family shim keeps its runtime's state
/// (the mock keeps a state file there, as runc does); CRI's `runtimeoptions.v1.Options` carry nothing the mock uses.
fn runtime_options(options: Option<&Any>, faults: Faults) -> R<Option<PathBuf>> {
    let Some(options) = options.filter(|o| !o.type_url.is_empty()) else {
        return Ok(None);
    };
    let url = options.type_url.rsplit('/').next().unwrap_or(&options.type_url);
    if url != RUNC_OPTIONS_URL && faults.has(Fault::RuntimeOptionsRefused) {
        return Err(rpc_err(Code::INVALID_ARGUMENT, format!("unknown runtime options type {:?}", options.type_url)));
    }
    match url {
        RUNC_OPTIONS_URL => {
            let parsed = containerd_shim_protos::shim::oci::Options::parse_from_bytes(&options.value)
                .map_err(|e| rpc_err(Code::INVALID_ARGUMENT, format!("decode {RUNC_OPTIONS_URL}: {e}")))?;
            Ok((!parsed.root.is_empty() && !faults.has(Fault::RuncRootIgnored)).then(|| PathBuf::from(parsed.root)))
        }
        RUNTIME_OPTIONS_URL => Ok(None),
        _ => Ok(None),
    }
}

/// `<root>/<namespace>/<id>/state.json`, as runc keeps one, and a note in the bundle of where it is.
fn write_runtime_state(bundle: &Path, state: &Path, id: &str, pid: i32) {
    let written = fs::create_dir_all(state)
        .and_then(|_| fs::write(state.join("state.json"), format!("{{\"id\":{id:?},\"init_process_pid\":{pid}}}\n")))
        .and_then(|_| fs::write(bundle.join(RUNTIME_STATE_FILE), state.as_os_str().as_encoded_bytes()));
    if let Err(e) = written {
        warn!("write runtime state {}: {e}", state.display());
    }
}

/// Removes the runtime state dir Create made, if any.
pub fn remove_runtime_state(bundle: &Path) {
    let note = bundle.join(RUNTIME_STATE_FILE);
    if let Ok(state) = fs::read_to_string(&note) {
        let _ = fs::remove_dir_all(state.trim());
        let _ = fs::remove_file(note);
    }
}

/// Unmounts everything at or under `<bundle>/rootfs` (lazily: a process being killed may still hold it).
/// The `rootfs-partial-left` fault: what was mounted stays, with a tmpfs on its `/tmp` as a shim preparing the
/// rootfs' own mounts in the host's namespace would leave. containerd's cleanup (umount of `<bundle>/rootfs` until
/// nothing is left) cannot remove a mount that has another below it, so this outlives the bundle.
fn leave_submount(rootfs: &Path) {
    let tmp = rootfs.join("tmp");
    if let Err(e) = fs::create_dir_all(&tmp).and_then(|_| {
        nix::mount::mount(Some("tmpfs"), &tmp, Some("tmpfs"), nix::mount::MsFlags::empty(), None::<&str>)
            .map_err(std::io::Error::from)
    }) {
        warn!("fault rootfs-partial-left: mounting tmpfs at {}: {e}", tmp.display());
    }
}

pub fn unmount_rootfs(bundle: &Path) {
    let target = bundle.join("rootfs");
    let Some(target) = target.to_str() else { return };
    if let Err(e) = containerd_shim::mount::umount_recursive(Some(target), libc::MNT_DETACH) {
        warn!("unmount {target}: {e}");
    }
}

/// Resolves and launches a process of a container. For an init, `gate` holds it before exec until Start.
fn spawn_process(
    root: &Path,
    process: &Process,
    io_request: &IoRequest,
    pgid: Option<i32>,
    gate: Option<OwnedFd>,
    namespace: &str,
    container_id: &str,
) -> R<(i32, IoHandles)> {
    let args = process.args().clone().unwrap_or_default();
    let Some(arg0) = args.first() else {
        return Err(rpc_err(Code::INVALID_ARGUMENT, "process.args is empty"));
    };
    let env = process.env().clone().unwrap_or_default();
    let exe = proc::resolve_executable(root, arg0, &env).ok_or_else(|| {
        rpc_err(
            Code::UNKNOWN,
            format!("exec: {arg0:?}: executable file not found under {} (or in $PATH)", root.display()),
        )
    })?;
    let in_root = process.cwd().strip_prefix("/").unwrap_or(process.cwd());
    let cwd_exists = root.join(in_root).is_dir();
    // As root the process runs inside its root, as an OCI runtime would run it (no namespaces though); without
    // root the mock cannot chroot and runs it from the host's view of the root.
    let chroot = unsafe { libc::geteuid() } == 0 && root != Path::new("/");
    let (exe, cwd) = if chroot {
        let inside = Path::new("/").join(exe.strip_prefix(root).unwrap_or(&exe));
        let cwd = if cwd_exists { Path::new("/").join(in_root) } else { PathBuf::from("/") };
        (inside, cwd)
    } else if cwd_exists {
        (exe, root.join(in_root))
    } else {
        (exe, root.to_path_buf())
    };
    let invalid = |e: String| rpc_err(Code::INVALID_ARGUMENT, e);
    let (child_io, handles) =
        stdio::setup(io_request, namespace, container_id).map_err(|e| rpc_err(Code::UNKNOWN, e.to_string()))?;
    let launch = Launch {
        root: if chroot { Some(cstring(root.as_os_str().as_bytes()).map_err(invalid)?) } else { None },
        exe: cstring(exe.as_os_str().as_bytes()).map_err(invalid)?,
        argv: args.iter().map(|a| cstring(a.as_bytes())).collect::<Result<_, _>>().map_err(invalid)?,
        envp: env.iter().map(|e| cstring(e.as_bytes())).collect::<Result<_, _>>().map_err(invalid)?,
        cwd: cstring(cwd.as_os_str().as_bytes()).map_err(invalid)?,
        stdin: child_io.stdin,
        stdout: child_io.stdout,
        stderr: child_io.stderr,
        controlling_tty: child_io.tty,
        pgid,
        gate,
    };
    let pid = proc::launch(&launch).map_err(|e| rpc_err(Code::UNKNOWN, format!("fork: {e}")))?;
    // Closes the shim's copies of the child's ends: the caller's EOF must depend on the process alone.
    drop(launch);
    Ok((pid, handles))
}

/// `socket:[inode]` links of this process's open fds.
fn socket_fds() -> Vec<(i32, String)> {
    let Ok(entries) = fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let e = e.ok()?;
            let fd: i32 = e.file_name().to_str()?.parse().ok()?;
            let link = fs::read_link(e.path()).ok()?.to_string_lossy().into_owned();
            link.starts_with("socket:").then_some((fd, link))
        })
        .collect()
}

fn socket_links() -> HashSet<String> {
    socket_fds().into_iter().map(|(_, link)| link).collect()
}

fn is_listening(fd: i32) -> bool {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    let r = unsafe {
        libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_ACCEPTCONN, &mut value as *mut _ as *mut libc::c_void, &mut len)
    };
    r == 0 && value != 0
}

/// Returns once any of the given connections is closed by either side.
fn watch_connections(connections: Vec<(i32, String)>) {
    if connections.is_empty() {
        return;
    }
    loop {
        for (fd, link) in &connections {
            let still_ours = fs::read_link(format!("/proc/self/fd/{fd}"))
                .map(|l| l.to_string_lossy() == link.as_str())
                .unwrap_or(false);
            if !still_ours {
                return;
            }
            let mut pollfd = libc::pollfd { fd: *fd, events: libc::POLLRDHUP, revents: 0 };
            let n = unsafe { libc::poll(&mut pollfd, 1, 0) };
            if n > 0 && pollfd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Marks an Exec/Start(exec) as in flight for concurrent-exec-fails.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(counter: &'a AtomicUsize) -> (InFlight<'a>, bool) {
        let before = counter.fetch_add(1, Ordering::SeqCst);
        (InFlight(counter), before > 0)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn status_of(phase: Phase, paused: bool) -> api::Status {
    match phase {
        Phase::Created => api::Status::CREATED,
        Phase::Running if paused => api::Status::PAUSED,
        Phase::Running => api::Status::RUNNING,
        Phase::Stopped => api::Status::STOPPED,
    }
}

fn signal_error(e: nix::errno::Errno) -> RpcError {
    match e {
        nix::errno::Errno::ESRCH => rpc_err(Code::NOT_FOUND, "process already finished"),
        nix::errno::Errno::EINVAL => rpc_err(Code::INVALID_ARGUMENT, "invalid signal"),
        e => rpc_err(Code::UNKNOWN, format!("kill: {e}")),
    }
}

/// leak-process: a process outside every container group, left running on purpose.
fn leak_process() {
    // A real process of the shim's (it inherits the shim's environment), in a session of its own so that nothing
    // aimed at the container's process group reaches it, and left running when the task is deleted.
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new("sleep");
    command
        .arg("3600")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    match command.spawn() {
        Ok(child) => warn!("leak-process: left pid {} behind", child.id()),
        Err(e) => warn!("leak-process: could not leave a process behind: {e}"),
    }
}

impl TaskService {
    fn do_start(&self, req: &api::StartRequest) -> R<api::StartResponse> {
        let mut st = self.lock();
        let container = st.containers.get_mut(&req.id).ok_or_else(|| not_found_container(&req.id))?;
        let faults = container.faults;
        let pid = if req.exec_id.is_empty() {
            match container.init.phase {
                Phase::Running => return Err(rpc_err(Code::FAILED_PRECONDITION, "cannot start a running process")),
                Phase::Stopped => return Err(rpc_err(Code::FAILED_PRECONDITION, "cannot start a stopped process")),
                Phase::Created => {}
            }
            let gate = container.init.gate.take();
            let released = gate.is_some_and(|gate| nix::unistd::write(&gate, b"g") == Ok(1));
            if !released {
                return Err(rpc_err(Code::FAILED_PRECONDITION, "the created process is gone"));
            }
            container.init.phase = Phase::Running;
            let pid = container.init.pid;
            self.publish(
                topics::TASK_START_EVENT_TOPIC,
                TaskStart { container_id: container.event_id(), pid: container.event_pid(pid), ..Default::default() },
            );
            if let Some(create) = container.held_create.take() {
                self.publish(topics::TASK_CREATE_EVENT_TOPIC, create);
            }
            pid
        } else {
            let init_running = container.init.phase == Phase::Running;
            let init_pid = container.init.pid;
            let root = container.root.clone();
            let bundle = container.bundle.clone();
            let memory = container.memory.clone();
            let exec = container.execs.get_mut(&req.exec_id).ok_or_else(|| not_found_process(&req.exec_id))?;
            if exec.phase != Phase::Created {
                return Err(rpc_err(Code::FAILED_PRECONDITION, format!("process {} already started", req.exec_id)));
            }
            if !init_running && !faults.has(Fault::ExecStoppedOk) {
                return Err(rpc_err(Code::FAILED_PRECONDITION, format!("container {} is not running", req.id)));
            }
            let spec = exec.spec.clone().ok_or_else(|| rpc_err(Code::INTERNAL, "exec has no spec"))?;
            let terminal =
                exec.terminal && !faults.has(Fault::TerminalIgnored) && !faults.has(Fault::ExecTerminalIgnored);
            let io_request = IoRequest {
                stdin: &exec.stdin,
                stdout: &exec.stdout,
                stderr: if exec.terminal { "" } else { &exec.stderr },
                terminal,
                drop_stdout: faults.has(Fault::ExecDropStdout) || faults.has(Fault::DropStdout),
                stderr_to_stdout: faults.has(Fault::StderrToStdout),
                stdout_limit: faults.has(Fault::StdoutTruncate).then_some(STDOUT_TRUNCATE_LIMIT),
                file_no_create: faults.has(Fault::FileUriNoCreate),
                leave_logger: faults.has(Fault::LoggerLeftRunning),
                stdout_needs_stderr: faults.has(Fault::StdoutNeedsStderr),
                stdin_needs_output: faults.has(Fault::StdinOnlyIgnored),
            };
            // In a memory cgroup, the exec waits on a gate of its own until it has joined the cgroup.
            let (gate_read, gate_write) = match &memory {
                Some(_) => {
                    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                        .map_err(|e| rpc_err(Code::INTERNAL, format!("gate pipe: {e}")))?;
                    (Some(read), Some(write))
                }
                None => (None, None),
            };
            let (pid, io) =
                spawn_process(&root, &spec, &io_request, Some(init_pid), gate_read, &self.inner.namespace, &req.id)?;
            if let (Some(memory), Some(gate)) = (&memory, gate_write) {
                let joined = memory.add(pid);
                // Without the byte (the gate closed when `gate` drops) the child _exits(137) before exec.
                let released = joined.is_ok() && nix::unistd::write(&gate, b"g") == Ok(1);
                if !released {
                    drop(gate);
                    let why = joined.err().unwrap_or_else(|| "the exec's start gate closed".into());
                    return Err(rpc_err(
                        Code::UNKNOWN,
                        format!("placing exec {} ({pid}) in the memory cgroup: {why}", req.exec_id),
                    ));
                }
            }
            exec.pid = pid;
            exec.io = io;
            exec.phase = Phase::Running;
            Self::record_pid(
                &bundle,
                pid,
                proc::proc_stat(pid).map(|s| s.pgrp).unwrap_or(pid),
                &format!("exec:{}", req.exec_id),
            );
            if !faults.has(Fault::ExecEventsMissing) {
                let event = TaskExecStarted {
                    container_id: container.event_id(),
                    exec_id: req.exec_id.clone(),
                    pid: pid as u32,
                    ..Default::default()
                };
                self.publish(topics::TASK_EXEC_STARTED_EVENT_TOPIC, event);
            }
            pid
        };
        let pid = pid as u32 + faults.has(Fault::StartWrongPid) as u32;
        Ok(api::StartResponse { pid, ..Default::default() })
    }

    fn do_exec(&self, req: &api::ExecProcessRequest) -> R<()> {
        let mut st = self.lock();
        let container = st.containers.get_mut(&req.id).ok_or_else(|| not_found_container(&req.id))?;
        let faults = container.faults;
        if req.exec_id.is_empty() {
            return Err(rpc_err(Code::INVALID_ARGUMENT, "exec id is empty"));
        }
        if container.execs.contains_key(&req.exec_id) && !faults.has(Fault::ExecDupOk) {
            return Err(rpc_err(Code::ALREADY_EXISTS, format!("id {}", req.exec_id)));
        }
        if container.init.phase != Phase::Running && !faults.has(Fault::ExecStoppedOk) {
            return Err(rpc_err(Code::FAILED_PRECONDITION, format!("container {} is not running", req.id)));
        }
        let spec_any = req.spec.as_ref().ok_or_else(|| rpc_err(Code::INVALID_ARGUMENT, "exec spec is missing"))?;
        let spec: Process = serde_json::from_slice(&spec_any.value)
            .map_err(|e| rpc_err(Code::INVALID_ARGUMENT, format!("exec spec is not a JSON process: {e}")))?;
        if spec.args().as_ref().is_none_or(|a| a.is_empty()) {
            return Err(rpc_err(Code::INVALID_ARGUMENT, "exec spec has no args"));
        }
        if spec.env().is_none() && faults.has(Fault::ExecNeedsEnv) {
            return Err(rpc_err(Code::INVALID_ARGUMENT, "exec spec is not a JSON process: missing field `env`"));
        }
        let mut exec = Proc::new(&req.exec_id, &req.stdin, &req.stdout, &req.stderr, req.terminal);
        exec.spec = Some(spec);
        container.execs.insert(req.exec_id.clone(), exec);
        if !faults.has(Fault::ExecEventsMissing) {
            let event = TaskExecAdded {
                container_id: container.event_id(),
                exec_id: req.exec_id.clone(),
                ..Default::default()
            };
            self.publish(topics::TASK_EXEC_ADDED_EVENT_TOPIC, event);
        }
        Ok(())
    }

    fn do_state(&self, req: &api::StateRequest) -> R<api::StateResponse> {
        let st = self.lock();
        let container = st.containers.get(&req.id).ok_or_else(|| not_found_container(&req.id))?;
        let faults = container.faults;
        let process = container.process(&req.exec_id).ok_or_else(|| not_found_process(&req.exec_id))?;
        let mut status = status_of(process.phase, container.paused);
        if req.exec_id.is_empty() && status == api::Status::CREATED && faults.has(Fault::CreateStateRunning) {
            status = api::Status::RUNNING;
        }
        let pid = if !req.exec_id.is_empty() && faults.has(Fault::ExecStateInitPid) {
            container.init.pid
        } else if req.exec_id.is_empty() && faults.has(Fault::StateWrongPid) && process.pid > 0 {
            process.pid + 1
        } else {
            process.pid
        };
        let exited_at = match process.exit {
            Some(exit) if !faults.has(Fault::StateNoExitedAt) => MessageField::some(timestamp(exit.at)),
            _ => MessageField::none(),
        };
        Ok(api::StateResponse {
            id: if req.exec_id.is_empty() { container.id.clone() } else { req.exec_id.clone() },
            bundle: container.bundle.clone(),
            pid: pid as u32,
            status: status.into(),
            stdin: process.stdin.clone(),
            stdout: process.stdout.clone(),
            stderr: process.stderr.clone(),
            terminal: process.terminal,
            exit_status: process.exit.map(|e| e.status).unwrap_or(0),
            exited_at,
            ..Default::default()
        })
    }

    async fn do_wait(&self, req: &api::WaitRequest) -> R<api::WaitResponse> {
        let receiver = {
            let mut st = self.lock();
            let container = st.containers.get_mut(&req.id).ok_or_else(|| not_found_container(&req.id))?;
            let faults = container.faults;
            let process = container.process_mut(&req.exec_id).ok_or_else(|| not_found_process(&req.exec_id))?;
            let returns_early = if req.exec_id.is_empty() {
                faults.has(Fault::WaitCreatedReturns)
            } else {
                faults.has(Fault::WaitCreatedReturns) || faults.has(Fault::ExecWaitCreatedReturns)
            };
            if process.phase == Phase::Created && returns_early {
                return Ok(api::WaitResponse {
                    exit_status: 0,
                    exited_at: MessageField::some(timestamp(SystemTime::now())),
                    ..Default::default()
                });
            }
            process.waits += 1;
            let hang = (process.exit.is_some() && faults.has(Fault::WaitLateHangs))
                || (process.waits > 1 && faults.has(Fault::WaitOnce));
            if hang {
                None
            } else {
                Some(process.exit_tx.subscribe())
            }
        };
        let Some(mut receiver) = receiver else {
            std::future::pending::<()>().await;
            unreachable!()
        };
        let exit = receiver.wait_for(Option::is_some).await.map(|exit| *exit);
        match exit {
            Ok(exit) => {
                let exit = exit.expect("waited for Some");
                Ok(api::WaitResponse {
                    exit_status: exit.status,
                    exited_at: MessageField::some(timestamp(exit.at)),
                    ..Default::default()
                })
            }
            Err(_) => Err(rpc_err(Code::NOT_FOUND, format!("{} was deleted before it exited", req.id))),
        }
    }

    fn do_kill(&self, req: &api::KillRequest) -> R<()> {
        let st = self.lock();
        let container = st.containers.get(&req.id).ok_or_else(|| not_found_container(&req.id))?;
        let faults = container.faults;
        let signal = req.signal as i32;
        if req.exec_id.is_empty() {
            if faults.has(Fault::KillNoop) {
                return Ok(());
            }
            match container.init.phase {
                Phase::Stopped if faults.has(Fault::KillExitedOk) => Ok(()),
                Phase::Stopped => Err(rpc_err(Code::NOT_FOUND, "process already finished")),
                Phase::Created if faults.has(Fault::KillCreatedNoop) => Ok(()),
                Phase::Running if req.all && !faults.has(Fault::KillAllIgnored) => {
                    container.signal_all(signal).map_err(signal_error)
                }
                Phase::Created | Phase::Running => proc::send_signal(container.init.pid, signal).map_err(signal_error),
            }
        } else {
            let Some(exec) = container.execs.get(&req.exec_id) else {
                if faults.has(Fault::KillUnknownExecOk) {
                    return Ok(());
                }
                return Err(not_found_process(&req.exec_id));
            };
            if faults.has(Fault::ExecKillNoop) {
                return Ok(());
            }
            match exec.phase {
                Phase::Created => Err(rpc_err(Code::FAILED_PRECONDITION, "process not started")),
                Phase::Stopped if faults.has(Fault::KillExitedOk) => Ok(()),
                Phase::Stopped => Err(rpc_err(Code::NOT_FOUND, "process already finished")),
                Phase::Running => proc::send_signal(exec.pid, signal).map_err(signal_error),
            }
        }
    }

    async fn do_delete(&self, req: &api::DeleteRequest) -> R<api::DeleteResponse> {
        if !req.exec_id.is_empty() {
            return self.delete_exec(req);
        }
        // A created (or, with delete-paused-ok, paused) init is killed first and its exit awaited.
        let receiver = {
            let mut st = self.lock();
            let Some(container) = st.containers.get_mut(&req.id) else {
                let faults = st.deleted.get(&req.id).copied().unwrap_or_default().union(st.seen);
                if faults.has(Fault::DeleteUnknownOk) {
                    return Ok(api::DeleteResponse::default());
                }
                return Err(not_found_container(&req.id));
            };
            let faults = container.faults;
            if container.paused && !faults.has(Fault::DeletePausedOk) {
                return Err(rpc_err(Code::FAILED_PRECONDITION, "cannot delete a paused process"));
            }
            match container.init.phase {
                Phase::Running if container.paused => {
                    let _ = container.signal_all(libc::SIGKILL);
                    let _ = container.signal_all(libc::SIGCONT);
                    Some(container.init.exit_tx.subscribe())
                }
                Phase::Running if faults.has(Fault::DeleteRunningSucceeds) => {
                    let container = st.containers.remove(&req.id).expect("present");
                    st.deleted.insert(req.id.clone(), faults);
                    warn!("delete-running-succeeds: forgot running {} (pid {})", req.id, container.init.pid);
                    return Ok(api::DeleteResponse { pid: container.init.pid as u32, ..Default::default() });
                }
                Phase::Running => {
                    return Err(rpc_err(Code::FAILED_PRECONDITION, "cannot delete a running process"));
                }
                Phase::Created => {
                    container.deleting = true;
                    // Closing the gate makes the blocked child _exit(137), like runc init losing its exec fifo.
                    container.init.gate.take();
                    Some(container.init.exit_tx.subscribe())
                }
                Phase::Stopped => None,
            }
        };
        if let Some(mut receiver) = receiver {
            let exited = matches!(
                tokio::time::timeout(Duration::from_secs(5), receiver.wait_for(Option::is_some)).await,
                Ok(Ok(_))
            );
            if !exited {
                let pid = self.lock().containers.get(&req.id).map(|c| c.init.pid);
                if let Some(pid) = pid {
                    let _ = proc::send_signal(pid, libc::SIGKILL);
                    let _ = tokio::time::timeout(Duration::from_secs(2), receiver.wait_for(Option::is_some)).await;
                }
            }
        }
        let container = {
            let mut st = self.lock();
            let container = st.containers.remove(&req.id).ok_or_else(|| not_found_container(&req.id))?;
            st.deleted.insert(req.id.clone(), container.faults);
            container
        };
        let faults = container.faults;
        let _ = container.signal_all(libc::SIGKILL);
        if let Some(memory) = container.memory.clone() {
            // Waits (bounded) for the killed processes to leave the cgroup, off the executor.
            let _ = tokio::task::spawn_blocking(move || memory.remove()).await;
        }
        container.init.io.stop_logger();
        for exec in container.execs.values() {
            exec.io.stop_logger();
        }
        if container.rootfs_mounted && !faults.has(Fault::RootfsLeftMounted) {
            unmount_rootfs(Path::new(&container.bundle));
        }
        remove_runtime_state(Path::new(&container.bundle));
        if let Some(create) = container.held_create.clone() {
            self.publish(topics::TASK_CREATE_EVENT_TOPIC, create);
        }
        if let Some(init_exit) = container.pending_init_exit.clone() {
            self.publish(topics::TASK_EXIT_EVENT_TOPIC, init_exit);
        }
        let exit = container.init.exit.unwrap_or(ExitInfo { status: 137, at: SystemTime::now() });
        self.publish(
            topics::TASK_DELETE_EVENT_TOPIC,
            TaskDelete {
                container_id: container.event_id(),
                pid: container.init.pid as u32,
                exit_status: exit.status,
                exited_at: MessageField::some(timestamp(exit.at)),
                ..Default::default()
            },
        );
        if faults.has(Fault::LeakProcess) {
            leak_process();
        }
        info!("deleted {}", req.id);
        if faults.has(Fault::DeleteWrongStatus) {
            return Ok(api::DeleteResponse { exited_at: MessageField::some(timestamp(exit.at)), ..Default::default() });
        }
        Ok(api::DeleteResponse {
            pid: container.init.pid as u32,
            exit_status: exit.status,
            exited_at: MessageField::some(timestamp(exit.at)),
            ..Default::default()
        })
    }

    fn delete_exec(&self, req: &api::DeleteRequest) -> R<api::DeleteResponse> {
        let mut st = self.lock();
        let Some(container) = st.containers.get_mut(&req.id) else {
            let faults = st.deleted.get(&req.id).copied().unwrap_or_default().union(st.seen);
            if faults.has(Fault::DeleteUnknownOk) {
                return Ok(api::DeleteResponse::default());
            }
            return Err(not_found_container(&req.id));
        };
        let faults = container.faults;
        let Some(exec) = container.execs.get(&req.exec_id) else {
            if faults.has(Fault::DeleteUnknownOk) {
                return Ok(api::DeleteResponse::default());
            }
            return Err(not_found_process(&req.exec_id));
        };
        match exec.phase {
            Phase::Running => return Err(rpc_err(Code::FAILED_PRECONDITION, "cannot delete a running process")),
            Phase::Stopped if faults.has(Fault::ExecDeleteRefused) => {
                return Err(rpc_err(Code::FAILED_PRECONDITION, "exec-delete-refused"));
            }
            Phase::Stopped | Phase::Created => {}
        }
        let exec = container.execs.remove(&req.exec_id).expect("present");
        exec.io.stop_logger();
        if faults.has(Fault::DeleteWrongStatus) {
            return Ok(api::DeleteResponse::default());
        }
        Ok(api::DeleteResponse {
            pid: exec.pid as u32,
            exit_status: exec.exit.map(|e| e.status).unwrap_or(0),
            exited_at: exec.exit.map(|e| timestamp(e.at)).into(),
            ..Default::default()
        })
    }

    fn do_pids(&self, req: &api::PidsRequest) -> R<api::PidsResponse> {
        let st = self.lock();
        let container = st.containers.get(&req.id).ok_or_else(|| not_found_container(&req.id))?;
        let exec_of: HashMap<i32, String> = container
            .execs
            .values()
            .filter(|e| e.phase == Phase::Running)
            .map(|e| (e.pid, e.exec_id.clone()))
            .collect();
        let mut pids = container.live_pids();
        if container.faults.has(Fault::PidsInitOnly) {
            pids.retain(|pid| *pid == container.init.pid);
        }
        let processes = pids
            .into_iter()
            .map(|pid| {
                let info = exec_of.get(&pid).and_then(|exec_id| {
                    let details = ProcessDetails { exec_id: exec_id.clone(), ..Default::default() };
                    Some(Any {
                        type_url: ProcessDetails::descriptor().full_name().to_string(),
                        value: details.write_to_bytes().ok()?,
                        ..Default::default()
                    })
                });
                api::ProcessInfo { pid: pid as u32, info: info.into(), ..Default::default() }
            })
            .collect();
        Ok(api::PidsResponse { processes, ..Default::default() })
    }

    fn do_pause(&self, req: &api::PauseRequest, pause: bool) -> R<()> {
        let mut st = self.lock();
        let container = st.containers.get_mut(&req.id).ok_or_else(|| not_found_container(&req.id))?;
        let faults = container.faults;
        if faults.has(Fault::PauseNoop) {
            return Ok(());
        }
        if pause {
            match container.init.phase {
                Phase::Created => return Err(rpc_err(Code::FAILED_PRECONDITION, "cannot pause task in created state")),
                Phase::Stopped => return Err(rpc_err(Code::FAILED_PRECONDITION, "cannot pause task in stopped state")),
                Phase::Running if container.paused => {
                    return Err(rpc_err(Code::FAILED_PRECONDITION, "task is already paused"))
                }
                Phase::Running => {}
            }
            container.signal_all(libc::SIGSTOP).map_err(signal_error)?;
            container.paused = true;
            if !faults.has(Fault::NoPauseEvents) {
                self.publish(
                    topics::TASK_PAUSED_EVENT_TOPIC,
                    TaskPaused { container_id: container.event_id(), ..Default::default() },
                );
            }
        } else {
            if !container.paused {
                return Err(rpc_err(Code::FAILED_PRECONDITION, "cannot resume a task that is not paused"));
            }
            container.signal_all(libc::SIGCONT).map_err(signal_error)?;
            container.paused = false;
            if !faults.has(Fault::NoPauseEvents) {
                self.publish(
                    topics::TASK_RESUMED_EVENT_TOPIC,
                    TaskResumed { container_id: container.event_id(), ..Default::default() },
                );
            }
        }
        Ok(())
    }

    fn do_stats(&self, req: &api::StatsRequest) -> R<api::StatsResponse> {
        let st = self.lock();
        let container = st.containers.get(&req.id).ok_or_else(|| not_found_container(&req.id))?;
        let stats = if container.faults.has(Fault::StatsGarbage) {
            Any {
                type_url: "shimcompat.mock/Garbage".to_string(),
                value: vec![0xff, 0xff, 0xff, 0xff, 0x07, 0x00],
                ..Default::default()
            }
        } else {
            let pids = container.live_pids();
            let (rss, cpu_ns) =
                pids.iter().map(|pid| proc::usage(*pid)).fold((0u64, 0u64), |(m, c), (pm, pc)| (m + pm, c + pc));
            let metrics = Metrics {
                pids: MessageField::some(PidsStat { current: pids.len() as u64, limit: 0, ..Default::default() }),
                // Every message present, as a cgroup v1 runtime fills them: clients such as dockerd read
                // memory.swap, cpu.throttling, blkio without checking for absence.
                memory: MessageField::some(MemoryStat {
                    rss,
                    usage: MessageField::some(MemoryEntry { usage: rss, ..Default::default() }),
                    swap: MessageField::some(MemoryEntry::default()),
                    kernel: MessageField::some(MemoryEntry::default()),
                    kernel_tcp: MessageField::some(MemoryEntry::default()),
                    ..Default::default()
                }),
                cpu: MessageField::some(CPUStat {
                    usage: MessageField::some(CPUUsage { total: cpu_ns, per_cpu: vec![cpu_ns], ..Default::default() }),
                    throttling: MessageField::some(Throttle::default()),
                    ..Default::default()
                }),
                blkio: MessageField::some(BlkIOStat::default()),
                ..Default::default()
            };
            Any {
                type_url: Metrics::descriptor().full_name().to_string(),
                value: metrics.write_to_bytes().map_err(|e| rpc_err(Code::INTERNAL, e.to_string()))?,
                ..Default::default()
            }
        };
        Ok(api::StatsResponse { stats: MessageField::some(stats), ..Default::default() })
    }

    fn do_update(&self, req: &api::UpdateTaskRequest) -> R<()> {
        let mut st = self.lock();
        let container = st.containers.get_mut(&req.id).ok_or_else(|| not_found_container(&req.id))?;
        if container.faults.has(Fault::UpdateFails) {
            return Err(rpc_err(Code::UNKNOWN, "update-fails: update refused"));
        }
        container.annotations.extend(req.annotations.clone());
        Ok(())
    }

    fn do_checkpoint(&self, req: &api::CheckpointTaskRequest) -> R<()> {
        let st = self.lock();
        let container = st.containers.get(&req.id).ok_or_else(|| not_found_container(&req.id))?;
        if req.path.is_empty() {
            return Err(rpc_err(Code::INVALID_ARGUMENT, "checkpoint path is empty"));
        }
        if container.faults.has(Fault::CheckpointEmpty) {
            return Ok(());
        }
        let description = serde_json::json!({
            "id": container.id,
            "bundle": container.bundle,
            "pid": container.init.pid,
            "status": format!("{:?}", status_of(container.init.phase, container.paused)),
            "exit_status": container.init.exit.map(|e| e.status),
            "execs": container.execs.keys().collect::<Vec<_>>(),
            "annotations": container.annotations,
        });
        let dir = Path::new(&req.path);
        fs::create_dir_all(dir)
            .and_then(|_| fs::write(dir.join("mock-checkpoint.json"), description.to_string()))
            .map_err(|e| rpc_err(Code::UNKNOWN, format!("write checkpoint in {}: {e}", req.path)))?;
        self.publish(
            topics::TASK_CHECKPOINTED_EVENT_TOPIC,
            TaskCheckpointed { container_id: container.event_id(), checkpoint: req.path.clone(), ..Default::default() },
        );
        Ok(())
    }

    fn do_resize(&self, req: &api::ResizePtyRequest) -> R<()> {
        let st = self.lock();
        let container = st.containers.get(&req.id).ok_or_else(|| not_found_container(&req.id))?;
        let process = container.process(&req.exec_id).ok_or_else(|| not_found_process(&req.exec_id))?;
        if req.width == 0 && req.height == 0 && container.faults.has(Fault::ResizeZeroRefused) {
            return Err(rpc_err(Code::INVALID_ARGUMENT, "invalid window size 0x0"));
        }
        if container.faults.has(Fault::ResizeNoop)
            || (!req.exec_id.is_empty() && container.faults.has(Fault::ExecResizeNoop))
        {
            return Ok(());
        }
        if let Some(master) = &process.io.pty_master {
            stdio::resize(master, req.width, req.height).map_err(|e| rpc_err(Code::UNKNOWN, e.to_string()))?;
        }
        Ok(())
    }

    fn do_close_io(&self, req: &api::CloseIORequest) -> R<()> {
        let mut st = self.lock();
        let container = st.containers.get_mut(&req.id).ok_or_else(|| not_found_container(&req.id))?;
        let faults = container.faults;
        let process = container.process_mut(&req.exec_id).ok_or_else(|| not_found_process(&req.exec_id))?;
        if process.terminal && faults.has(Fault::CloseioTerminalFails) {
            return Err(rpc_err(
                Code::FAILED_PRECONDITION,
                format!("process {:?} has a terminal: no stdin pipe to close", req.exec_id),
            ));
        }
        if req.stdin && !faults.has(Fault::CloseioNoop) {
            if let Some(close) = process.io.stdin_close.take() {
                let _ = close.send(());
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Task for TaskService {
    async fn state(&self, _ctx: &TtrpcContext, req: api::StateRequest) -> ttrpc::Result<api::StateResponse> {
        let (faults, gate) = self.prologue("State", &req.id, true);
        self.finish("State", faults, gate.and_then(|_| self.do_state(&req)))
    }

    async fn create(&self, _ctx: &TtrpcContext, req: api::CreateTaskRequest) -> ttrpc::Result<api::CreateTaskResponse> {
        let (faults, gate) = self.prologue("Create", &req.id, false);
        if let Err(e) = gate {
            return self.finish("Create", faults, Err(e));
        }
        match self.do_create(&req) {
            Ok((faults, response)) => self.finish("Create", faults, Ok(response)),
            Err(e) => self.finish("Create", faults, Err(e)),
        }
    }

    async fn start(&self, _ctx: &TtrpcContext, req: api::StartRequest) -> ttrpc::Result<api::StartResponse> {
        let (faults, gate) = self.prologue("Start", &req.id, true);
        if let Err(e) = gate {
            return self.finish("Start", faults, Err(e));
        }
        if req.exec_id.is_empty() {
            if faults.has(Fault::StartHangs) && self.lock().containers.contains_key(&req.id) {
                warn!("start-hangs: never answering Start({})", req.id);
                std::future::pending::<()>().await;
            }
            return self.finish("Start", faults, self.do_start(&req));
        }
        let (_in_flight, concurrent) = InFlight::enter(&self.inner.exec_in_flight);
        if faults.has(Fault::ConcurrentExecFails) {
            if concurrent {
                return self.finish("Start", faults, Err(rpc_err(Code::UNAVAILABLE, "another exec is in flight")));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        self.finish("Start", faults, self.do_start(&req))
    }

    async fn delete(&self, _ctx: &TtrpcContext, req: api::DeleteRequest) -> ttrpc::Result<api::DeleteResponse> {
        let (faults, gate) = self.prologue("Delete", &req.id, true);
        if let Err(e) = gate {
            return self.finish("Delete", faults, Err(e));
        }
        let result = self.do_delete(&req).await;
        self.finish("Delete", faults, result)
    }

    async fn pids(&self, _ctx: &TtrpcContext, req: api::PidsRequest) -> ttrpc::Result<api::PidsResponse> {
        let (faults, gate) = self.prologue("Pids", &req.id, true);
        self.finish("Pids", faults, gate.and_then(|_| self.do_pids(&req)))
    }

    async fn pause(&self, _ctx: &TtrpcContext, req: api::PauseRequest) -> ttrpc::Result<Empty> {
        let (faults, gate) = self.prologue("Pause", &req.id, true);
        self.finish("Pause", faults, gate.and_then(|_| self.do_pause(&req, true)).map(|_| Empty::new()))
    }

    async fn resume(&self, _ctx: &TtrpcContext, req: api::ResumeRequest) -> ttrpc::Result<Empty> {
        let (faults, gate) = self.prologue("Resume", &req.id, true);
        let as_pause = api::PauseRequest { id: req.id.clone(), ..Default::default() };
        self.finish("Resume", faults, gate.and_then(|_| self.do_pause(&as_pause, false)).map(|_| Empty::new()))
    }

    async fn checkpoint(&self, _ctx: &TtrpcContext, req: api::CheckpointTaskRequest) -> ttrpc::Result<Empty> {
        let (faults, gate) = self.prologue("Checkpoint", &req.id, true);
        self.finish("Checkpoint", faults, gate.and_then(|_| self.do_checkpoint(&req)).map(|_| Empty::new()))
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> ttrpc::Result<Empty> {
        let (faults, gate) = self.prologue("Kill", &req.id, true);
        self.finish("Kill", faults, gate.and_then(|_| self.do_kill(&req)).map(|_| Empty::new()))
    }

    async fn exec(&self, _ctx: &TtrpcContext, req: api::ExecProcessRequest) -> ttrpc::Result<Empty> {
        let (faults, gate) = self.prologue("Exec", &req.id, true);
        if let Err(e) = gate {
            return self.finish("Exec", faults, Err(e));
        }
        let (_in_flight, concurrent) = InFlight::enter(&self.inner.exec_in_flight);
        if faults.has(Fault::ConcurrentExecFails) {
            if concurrent {
                return self.finish("Exec", faults, Err(rpc_err(Code::UNAVAILABLE, "another exec is in flight")));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        self.finish("Exec", faults, self.do_exec(&req).map(|_| Empty::new()))
    }

    async fn resize_pty(&self, _ctx: &TtrpcContext, req: api::ResizePtyRequest) -> ttrpc::Result<Empty> {
        let (faults, gate) = self.prologue("ResizePty", &req.id, true);
        self.finish("ResizePty", faults, gate.and_then(|_| self.do_resize(&req)).map(|_| Empty::new()))
    }

    async fn close_io(&self, _ctx: &TtrpcContext, req: api::CloseIORequest) -> ttrpc::Result<Empty> {
        let (faults, gate) = self.prologue("CloseIO", &req.id, true);
        self.finish("CloseIO", faults, gate.and_then(|_| self.do_close_io(&req)).map(|_| Empty::new()))
    }

    async fn update(&self, _ctx: &TtrpcContext, req: api::UpdateTaskRequest) -> ttrpc::Result<Empty> {
        let (faults, gate) = self.prologue("Update", &req.id, true);
        self.finish("Update", faults, gate.and_then(|_| self.do_update(&req)).map(|_| Empty::new()))
    }

    async fn wait(&self, _ctx: &TtrpcContext, req: api::WaitRequest) -> ttrpc::Result<api::WaitResponse> {
        let (faults, gate) = self.prologue("Wait", &req.id, true);
        if let Err(e) = gate {
            return self.finish("Wait", faults, Err(e));
        }
        let result = self.do_wait(&req).await;
        self.finish("Wait", faults, result)
    }

    async fn stats(&self, _ctx: &TtrpcContext, req: api::StatsRequest) -> ttrpc::Result<api::StatsResponse> {
        let (faults, gate) = self.prologue("Stats", &req.id, true);
        self.finish("Stats", faults, gate.and_then(|_| self.do_stats(&req)))
    }

    async fn connect(&self, _ctx: &TtrpcContext, req: api::ConnectRequest) -> ttrpc::Result<api::ConnectResponse> {
        // Like runc: an unknown id is not an error here, the task pid is just 0.
        let (faults, gate) = self.prologue("Connect", &req.id, false);
        let task_pid = self
            .lock()
            .containers
            .get(&req.id)
            .map(|c| c.init.pid as u32 + c.faults.has(Fault::ConnectWrongTaskPid) as u32)
            .unwrap_or(0);
        let shim_pid = std::process::id() + faults.has(Fault::ConnectWrongPid) as u32;
        let response = api::ConnectResponse { shim_pid, task_pid, version: "mock".to_string(), ..Default::default() };
        self.finish("Connect", faults, gate.map(|_| response))
    }

    async fn shutdown(&self, _ctx: &TtrpcContext, req: api::ShutdownRequest) -> ttrpc::Result<Empty> {
        let (faults, gate) = self.prologue("Shutdown", &req.id, false);
        if let Err(e) = gate {
            return self.finish("Shutdown", faults, Err(e));
        }
        let st = self.lock();
        let faults = st.containers.values().fold(st.seen, |all, c| all.union(c.faults));
        if faults.has(Fault::ShutdownIgnored) {
            warn!("shutdown-ignored: staying up");
            return Ok(Empty::new());
        }
        if !st.containers.is_empty() && !faults.has(Fault::ShutdownWithTaskExits) {
            info!("shutdown: {} container(s) left, staying up", st.containers.len());
            return Ok(Empty::new());
        }
        self.inner.leave_socket.store(faults.has(Fault::ShutdownLeavesSocket), Ordering::SeqCst);
        info!("shutdown: exiting");
        self.inner.exit.signal();
        Ok(Empty::new())
    }
}
