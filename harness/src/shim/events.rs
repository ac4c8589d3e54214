//! The events sink: the `containerd.services.events.ttrpc.v1.Events` server a shim publishes to.
//!
//! Every envelope is recorded in arrival order with its decoded payload, and cases wait on the record with a
//! deadline. One sink serves one shim, so attribution needs no filtering by namespace.
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use containerd_shim_protos::api::{Empty, ForwardRequest};
use containerd_shim_protos::events::task::*;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim_async::{create_events, Events};
use containerd_shim_protos::ttrpc::{self, asynchronous::Server};
use tokio::sync::Notify;

/// A decoded event payload. Unknown or undecodable ones are kept raw so that nothing a shim sent is lost.
#[derive(Debug, Clone)]
pub enum Payload {
    Create(TaskCreate),
    Start(TaskStart),
    Exit(TaskExit),
    Delete(TaskDelete),
    ExecAdded(TaskExecAdded),
    ExecStarted(TaskExecStarted),
    Paused(TaskPaused),
    Resumed(TaskResumed),
    Checkpointed(TaskCheckpointed),
    Oom(TaskOOM),
    Other { type_url: String, bytes: Vec<u8>, error: Option<String> },
}

#[derive(Debug, Clone)]
pub struct Event {
    pub topic: String,
    pub namespace: String,
    pub type_url: String,
    pub payload: Payload,
    pub received: Instant,
}

impl Event {
    /// The container id the payload names, when it names one.
    pub fn container_id(&self) -> Option<&str> {
        Some(match &self.payload {
            Payload::Create(e) => &e.container_id,
            Payload::Start(e) => &e.container_id,
            Payload::Exit(e) => &e.container_id,
            Payload::Delete(e) => &e.container_id,
            Payload::ExecAdded(e) => &e.container_id,
            Payload::ExecStarted(e) => &e.container_id,
            Payload::Paused(e) => &e.container_id,
            Payload::Resumed(e) => &e.container_id,
            Payload::Checkpointed(e) => &e.container_id,
            Payload::Oom(e) => &e.container_id,
            Payload::Other { .. } => return None,
        })
    }

    /// A one-line rendering for evidence.
    pub fn summary(&self) -> String {
        let detail = match &self.payload {
            Payload::Create(e) => format!("container_id={} pid={}", e.container_id, e.pid),
            Payload::Start(e) => format!("container_id={} pid={}", e.container_id, e.pid),
            Payload::Exit(e) => format!(
                "container_id={} id={} pid={} exit_status={} exited_at={}",
                e.container_id,
                e.id,
                e.pid,
                e.exit_status,
                e.exited_at.as_ref().map(|t| t.seconds).unwrap_or(0)
            ),
            Payload::Delete(e) => {
                format!("container_id={} pid={} exit_status={}", e.container_id, e.pid, e.exit_status)
            }
            Payload::ExecAdded(e) => format!("container_id={} exec_id={}", e.container_id, e.exec_id),
            Payload::ExecStarted(e) => format!("container_id={} exec_id={} pid={}", e.container_id, e.exec_id, e.pid),
            Payload::Paused(e) => format!("container_id={}", e.container_id),
            Payload::Resumed(e) => format!("container_id={}", e.container_id),
            Payload::Checkpointed(e) => format!("container_id={}", e.container_id),
            Payload::Oom(e) => format!("container_id={}", e.container_id),
            Payload::Other { type_url, error, .. } => format!("type_url={type_url} {}", error.as_deref().unwrap_or("")),
        };
        format!("{} {}", self.topic, detail)
    }
}

/// At most this many events are kept per events server.
pub const EVENT_CAP: usize = 10_000;

/// An undecodable or unknown event keeps at most this many bytes of its payload.
const PAYLOAD_CAP: usize = 1024;

#[derive(Default)]
struct Record {
    events: Mutex<Vec<Event>>,
    dropped: std::sync::atomic::AtomicUsize,
    changed: Notify,
}

struct Sink(Arc<Record>);

fn decode<M: Message>(bytes: &[u8], wrap: fn(M) -> Payload, type_url: &str) -> Payload {
    match M::parse_from_bytes(bytes) {
        Ok(message) => wrap(message),
        Err(e) => Payload::Other {
            type_url: type_url.into(),
            bytes: bytes[..bytes.len().min(PAYLOAD_CAP)].to_vec(),
            error: Some(e.to_string()),
        },
    }
}

fn decode_payload(type_url: &str, bytes: &[u8]) -> Payload {
    // containerd uses the bare proto name; tolerate a type.googleapis.com/ prefix when decoding.
    let name = type_url.rsplit('/').next().unwrap_or(type_url);
    match name {
        "containerd.events.TaskCreate" => decode(bytes, Payload::Create, type_url),
        "containerd.events.TaskStart" => decode(bytes, Payload::Start, type_url),
        "containerd.events.TaskExit" => decode(bytes, Payload::Exit, type_url),
        "containerd.events.TaskDelete" => decode(bytes, Payload::Delete, type_url),
        "containerd.events.TaskExecAdded" => decode(bytes, Payload::ExecAdded, type_url),
        "containerd.events.TaskExecStarted" => decode(bytes, Payload::ExecStarted, type_url),
        "containerd.events.TaskPaused" => decode(bytes, Payload::Paused, type_url),
        "containerd.events.TaskResumed" => decode(bytes, Payload::Resumed, type_url),
        "containerd.events.TaskCheckpointed" => decode(bytes, Payload::Checkpointed, type_url),
        "containerd.events.TaskOOM" => decode(bytes, Payload::Oom, type_url),
        _ => Payload::Other {
            type_url: type_url.into(),
            bytes: bytes[..bytes.len().min(PAYLOAD_CAP)].to_vec(),
            error: None,
        },
    }
}

#[async_trait]
impl Events for Sink {
    async fn forward(&self, _ctx: &ttrpc::r#async::TtrpcContext, request: ForwardRequest) -> ttrpc::Result<Empty> {
        let envelope = request.envelope.into_option().unwrap_or_default();
        let any = envelope.event.into_option().unwrap_or_default();
        let event = Event {
            topic: envelope.topic,
            namespace: envelope.namespace,
            payload: decode_payload(&any.type_url, &any.value),
            type_url: any.type_url,
            received: Instant::now(),
        };
        {
            // A shim that floods events cannot grow the harness without bound: past the cap they are counted only
            // (a case that needs an event after that fails, which is the flood's doing).
            let mut events = self.0.events.lock().unwrap_or_else(|p| p.into_inner());
            if events.len() < EVENT_CAP {
                events.push(event);
            } else {
                self.0.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        self.0.changed.notify_waiters();
        Ok(Empty::new())
    }
}

/// A running events server and what it has received.
pub struct EventSink {
    record: Arc<Record>,
    server: tokio::sync::Mutex<Option<Server>>,
    /// The socket path, without scheme: what goes into `TTRPC_ADDRESS`.
    pub path: std::path::PathBuf,
}

#[derive(Debug, thiserror::Error)]
#[error("events server on {path}: {detail}")]
pub struct EventServerError {
    pub path: String,
    pub detail: String,
}

impl EventSink {
    pub async fn serve(path: &std::path::Path) -> Result<EventSink, EventServerError> {
        let record = Arc::new(Record::default());
        let fail = |detail: String| EventServerError { path: path.display().to_string(), detail };
        let _ = std::fs::remove_file(path);
        let mut server = Server::new()
            .bind(&format!("unix://{}", path.display()))
            .map_err(|e| fail(e.to_string()))?
            .register_service(create_events(Arc::new(Sink(record.clone()))));
        server.start().await.map_err(|e| fail(e.to_string()))?;
        Ok(EventSink { record, server: tokio::sync::Mutex::new(Some(server)), path: path.to_path_buf() })
    }

    /// Events received past [`EVENT_CAP`] and not kept.
    pub fn dropped(&self) -> usize {
        self.record.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Everything received so far, in arrival order.
    pub fn snapshot(&self) -> Vec<Event> {
        self.record.events.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits until `done` holds for the events received so far, or the deadline passes; returns the events either
    /// way together with whether the condition was met.
    pub async fn wait_until(&self, timeout: Duration, done: impl Fn(&[Event]) -> bool) -> (bool, Vec<Event>) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.record.changed.notified();
            let events = self.snapshot();
            if done(&events) {
                return (true, events);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let events = self.snapshot();
                return (done(&events), events);
            }
        }
    }

    /// Waits until an event with `topic` arrives; returns it.
    pub async fn wait_for_topic(&self, topic: &str, timeout: Duration) -> Option<Event> {
        let (found, events) = self.wait_until(timeout, |events| events.iter().any(|e| e.topic == topic)).await;
        found.then(|| events.into_iter().find(|e| e.topic == topic)).flatten()
    }

    pub async fn stop(&self) {
        if let Some(mut server) = self.server.lock().await.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), server.shutdown()).await;
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Renders a list of events for a failure message.
pub fn render(events: &[Event]) -> String {
    if events.is_empty() {
        return "  (no events)".into();
    }
    events.iter().map(|e| format!("  {}", e.summary())).collect::<Vec<_>>().join("\n")
}

/// `shimcompat --address A publish --topic T --namespace N`, with the event `Any` on stdin: what a shim that
/// publishes through `-publish-binary` runs (containerd's own `publish` command forwards to its events service).
/// The event goes to the events server named by `TTRPC_ADDRESS` (the shim's environment, inherited), as an envelope
/// stamped now. Exit status 0 when the server took it.
pub fn publish_command(args: &[String]) -> std::process::ExitCode {
    use std::io::Read;
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag || a.trim_start_matches('-') == flag.trim_start_matches('-'))
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let (Some(topic), Some(namespace)) = (value("--topic"), value("--namespace")) else {
        eprintln!("shimcompat publish: --topic and --namespace are required");
        return std::process::ExitCode::from(2);
    };
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        eprintln!("shimcompat publish: reading the event from stdin: {e}");
        return std::process::ExitCode::from(1);
    }
    let any = match containerd_shim_protos::protobuf::well_known_types::any::Any::parse_from_bytes(&input) {
        Ok(any) => any,
        Err(e) => {
            eprintln!("shimcompat publish: stdin is not a protobuf Any ({} bytes): {e}", input.len());
            return std::process::ExitCode::from(1);
        }
    };
    let Some(address) = std::env::var_os("TTRPC_ADDRESS") else {
        eprintln!("shimcompat publish: no TTRPC_ADDRESS in the environment: nowhere to forward the event");
        return std::process::ExitCode::from(1);
    };
    let address = address.to_string_lossy().into_owned();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("shimcompat publish: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async move {
        let url = if address.contains("://") { address.clone() } else { format!("unix://{address}") };
        let client = ttrpc::asynchronous::Client::connect(&url).await.map_err(|e| format!("{url}: {e}"))?;
        let events = containerd_shim_protos::shim_async::EventsClient::new(client);
        let mut envelope = containerd_shim_protos::shim::event::Envelope::new();
        envelope.timestamp =
            Some(containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp::now()).into();
        envelope.namespace = namespace;
        envelope.topic = topic;
        envelope.event = Some(any).into();
        let request = ForwardRequest { envelope: Some(envelope).into(), ..Default::default() };
        events
            .forward(ttrpc::context::with_timeout(Duration::from_secs(5).as_nanos() as i64), &request)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shimcompat publish: forwarding the event: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
