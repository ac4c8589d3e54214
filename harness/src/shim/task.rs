//! The Task API client: containerd's side of `containerd.task.v2.Task` / `containerd.task.v3.Task`.
//!
//! The two services are identical on the wire apart from the package name, so one client speaks both by naming the
//! service per request (there is no generated v2 client in containerd-shim-protos 0.12). What goes on the wire with
//! each request (the `timeout_nano` deadline, the namespace header) is what the emulated containerd line sends for
//! that call (crate::profile); the harness bounds every call locally as well, so a hung shim never hangs a run. A
//! status reply comes back typed so cases can assert on the code.
use std::time::Duration;

use containerd_shim_protos::api::*;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::ttrpc::{self, asynchronous::Client, Code};

use crate::profile::{Caller, Profile};

/// Which Task service the shim serves, from the version its `start` reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TaskApi {
    V2,
    V3,
}

impl TaskApi {
    pub fn from_bootstrap_version(version: i32) -> Option<TaskApi> {
        match version {
            ..=2 => Some(TaskApi::V2),
            3 => Some(TaskApi::V3),
            _ => None,
        }
    }

    pub fn service(self) -> &'static str {
        match self {
            TaskApi::V2 => "containerd.task.v2.Task",
            TaskApi::V3 => "containerd.task.v3.Task",
        }
    }
}

impl std::fmt::Display for TaskApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TaskApi::V2 => "v2",
            TaskApi::V3 => "v3",
        })
    }
}

/// A failed RPC, typed so that a case can tell "the shim said NotFound" from "the shim never answered".
#[derive(Debug, Clone, thiserror::Error)]
pub enum RpcError {
    #[error("{method}: shim replied {} ({}): {message}", code_name(*.code), *.code as i32)]
    Status { method: &'static str, code: Code, message: String },
    #[error("{method}: no reply within {timeout:?}")]
    Timeout { method: &'static str, timeout: Duration },
    #[error("{method}: connection failed: {detail}")]
    Transport { method: &'static str, detail: String },
    #[error("{method}: reply does not decode: {detail}")]
    Decode { method: &'static str, detail: String },
}

impl RpcError {
    /// The status code, when the shim answered with a status.
    pub fn code(&self) -> Option<Code> {
        match self {
            RpcError::Status { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// The gRPC-style name of a status code (`NOT_FOUND`), as containerd's errdefs would print it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::OK => "OK",
        Code::CANCELLED => "CANCELLED",
        Code::UNKNOWN => "UNKNOWN",
        Code::INVALID_ARGUMENT => "INVALID_ARGUMENT",
        Code::DEADLINE_EXCEEDED => "DEADLINE_EXCEEDED",
        Code::NOT_FOUND => "NOT_FOUND",
        Code::ALREADY_EXISTS => "ALREADY_EXISTS",
        Code::PERMISSION_DENIED => "PERMISSION_DENIED",
        Code::RESOURCE_EXHAUSTED => "RESOURCE_EXHAUSTED",
        Code::FAILED_PRECONDITION => "FAILED_PRECONDITION",
        Code::ABORTED => "ABORTED",
        Code::OUT_OF_RANGE => "OUT_OF_RANGE",
        Code::UNIMPLEMENTED => "UNIMPLEMENTED",
        Code::INTERNAL => "INTERNAL",
        Code::UNAVAILABLE => "UNAVAILABLE",
        Code::DATA_LOSS => "DATA_LOSS",
        Code::UNAUTHENTICATED => "UNAUTHENTICATED",
    }
}

/// A connection to one shim's Task service.
#[derive(Clone)]
pub struct TaskClient {
    client: Client,
    api: TaskApi,
    namespace: String,
    /// The harness's own bound on every call (never sent: the wire deadline is the profile's).
    timeout: Duration,
    profile: &'static Profile,
    /// Every call made on this connection (shared by its clones), for a failure's evidence.
    transcript: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<String>>>,
    /// Time spent in calls on this connection, in nanoseconds (shared by its clones; overlapping calls each count).
    busy: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

pub type RpcResult<T> = Result<T, RpcError>;

/// The transcript keeps this many calls (the last ones).
const TRANSCRIPT_CAP: usize = 200;

impl TaskClient {
    pub async fn connect(
        address: &str,
        api: TaskApi,
        namespace: &str,
        timeout: Duration,
        profile: &'static Profile,
    ) -> RpcResult<TaskClient> {
        let client = tokio::time::timeout(timeout, Client::connect(address))
            .await
            .map_err(|_| RpcError::Timeout { method: "connect", timeout })?
            .map_err(|e| RpcError::Transport { method: "connect", detail: format!("{address}: {e}") })?;
        Ok(TaskClient {
            client,
            api,
            namespace: namespace.to_string(),
            timeout,
            profile,
            transcript: Default::default(),
            busy: Default::default(),
        })
    }

    pub fn profile(&self) -> &'static Profile {
        self.profile
    }

    pub fn api(&self) -> TaskApi {
        self.api
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The same connection with another default deadline (for calls that legitimately block, such as Wait).
    pub fn with_timeout(&self, timeout: Duration) -> TaskClient {
        TaskClient { timeout, ..self.clone() }
    }

    /// One unary call as containerd makes it for a client request, bounded by the client's deadline.
    pub async fn call<Req: Message + std::fmt::Debug, Resp: Message + std::fmt::Debug>(
        &self,
        method: &'static str,
        request: &Req,
    ) -> RpcResult<Resp> {
        self.call_as(method, request, Caller::Client, self.timeout).await
    }

    /// A client-request call with another local bound (for calls that legitimately block, such as Wait).
    pub async fn call_with<Req: Message + std::fmt::Debug, Resp: Message + std::fmt::Debug>(
        &self,
        method: &'static str,
        request: &Req,
        timeout: Duration,
    ) -> RpcResult<Resp> {
        self.call_as(method, request, Caller::Client, timeout).await
    }

    /// One unary call shaped as containerd shapes it for `caller`, bounded locally by `timeout` (or by the wire
    /// deadline, when that is shorter: containerd gives up then, and so does the harness).
    pub async fn call_as<Req: Message + std::fmt::Debug, Resp: Message + std::fmt::Debug>(
        &self,
        method: &'static str,
        request: &Req,
        caller: Caller,
        timeout: Duration,
    ) -> RpcResult<Resp> {
        let started = std::time::Instant::now();
        let result = self.call_raw(method, request, caller, timeout).await;
        let outcome = match &result {
            Ok(reply) => format!("ok {}", short(&format!("{reply:?}"))),
            Err(RpcError::Status { code, message, .. }) => format!("{code:?}: {}", short(message)),
            Err(error) => short(&error.to_string()),
        };
        let took = started.elapsed();
        self.busy.fetch_add(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX), std::sync::atomic::Ordering::Relaxed);
        let line = format!("{method}({}) -> {outcome} [{} ms]", short(&format!("{request:?}")), took.as_millis());
        let mut transcript = self.transcript.lock().unwrap_or_else(|p| p.into_inner());
        if transcript.len() == TRANSCRIPT_CAP {
            transcript.pop_front();
        }
        transcript.push_back(line);
        result
    }

    /// Time spent waiting on calls on this connection so far (overlapping calls each count).
    pub fn busy(&self) -> Duration {
        Duration::from_nanos(self.busy.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// The calls made on this connection so far, one line each (method, short request, reply or status, time).
    pub fn transcript(&self) -> Vec<String> {
        self.transcript.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect()
    }

    async fn call_raw<Req: Message, Resp: Message>(
        &self,
        method: &'static str,
        request: &Req,
        caller: Caller,
        timeout: Duration,
    ) -> RpcResult<Resp> {
        let payload = request
            .write_to_bytes()
            .map_err(|e| RpcError::Decode { method, detail: format!("encoding the request: {e}") })?;
        let shape = self.profile.call(caller);
        let mut metadata = Vec::new();
        if shape.namespace_header {
            let mut namespace = ttrpc::proto::KeyValue::new();
            namespace.key = "containerd-namespace-ttrpc".into();
            namespace.value = self.namespace.clone();
            metadata.push(namespace);
        }
        let timeout = shape.deadline.map_or(timeout, |wire| wire.min(timeout));
        let wire = ttrpc::Request {
            service: self.api.service().into(),
            method: method.into(),
            payload,
            timeout_nano: shape.deadline.map_or(0, |d| d.as_nanos() as i64),
            metadata,
            ..Default::default()
        };
        // The ttrpc client enforces timeout_nano on the reply; the outer timeout bounds calls without one.
        let reply = tokio::time::timeout(timeout + Duration::from_millis(200), self.client.request(wire))
            .await
            .map_err(|_| RpcError::Timeout { method, timeout })?;
        match reply {
            Ok(response) => Resp::parse_from_bytes(&response.payload)
                .map_err(|e| RpcError::Decode { method, detail: e.to_string() }),
            Err(ttrpc::Error::RpcStatus(status)) => {
                let code = status.code.enum_value().unwrap_or(Code::UNKNOWN);
                if code == Code::DEADLINE_EXCEEDED && status.message.contains("timeout") {
                    return Err(RpcError::Timeout { method, timeout });
                }
                Err(RpcError::Status { method, code, message: status.message })
            }
            // The client's own deadline comes back as a local error, not a status.
            Err(other) if other.to_string().contains("deadline") => Err(RpcError::Timeout { method, timeout }),
            Err(other) => Err(RpcError::Transport { method, detail: other.to_string() }),
        }
    }

    pub async fn connect_rpc(&self, id: &str) -> RpcResult<ConnectResponse> {
        self.call("Connect", &ConnectRequest { id: id.into(), ..Default::default() }).await
    }

    pub async fn create(&self, request: &CreateTaskRequest) -> RpcResult<CreateTaskResponse> {
        self.call("Create", request).await
    }

    pub async fn start(&self, id: &str, exec_id: &str) -> RpcResult<StartResponse> {
        self.call("Start", &StartRequest { id: id.into(), exec_id: exec_id.into(), ..Default::default() }).await
    }

    pub async fn state(&self, id: &str, exec_id: &str) -> RpcResult<StateResponse> {
        self.call("State", &StateRequest { id: id.into(), exec_id: exec_id.into(), ..Default::default() }).await
    }

    /// State as the tasks service reads it (`ctr task ls`, Get): with containerd's task-state deadline.
    pub async fn state_for_service(&self, id: &str, exec_id: &str) -> RpcResult<StateResponse> {
        let request = StateRequest { id: id.into(), exec_id: exec_id.into(), ..Default::default() };
        self.call_as("State", &request, Caller::TaskState, self.timeout).await
    }

    pub async fn wait(&self, id: &str, exec_id: &str, timeout: Duration) -> RpcResult<WaitResponse> {
        let request = WaitRequest { id: id.into(), exec_id: exec_id.into(), ..Default::default() };
        self.call_with("Wait", &request, timeout).await
    }

    pub async fn kill(&self, id: &str, exec_id: &str, signal: u32, all: bool) -> RpcResult<Empty> {
        let request = KillRequest { id: id.into(), exec_id: exec_id.into(), signal, all, ..Default::default() };
        self.call("Kill", &request).await
    }

    pub async fn delete(&self, id: &str, exec_id: &str) -> RpcResult<DeleteResponse> {
        self.call("Delete", &DeleteRequest { id: id.into(), exec_id: exec_id.into(), ..Default::default() }).await
    }

    pub async fn exec(&self, request: &ExecProcessRequest) -> RpcResult<Empty> {
        self.call("Exec", request).await
    }

    pub async fn pids(&self, id: &str) -> RpcResult<PidsResponse> {
        self.call("Pids", &PidsRequest { id: id.into(), ..Default::default() }).await
    }

    pub async fn close_io(&self, id: &str, exec_id: &str) -> RpcResult<Empty> {
        let request = CloseIORequest { id: id.into(), exec_id: exec_id.into(), stdin: true, ..Default::default() };
        self.call("CloseIO", &request).await
    }

    pub async fn resize_pty(&self, id: &str, exec_id: &str, width: u32, height: u32) -> RpcResult<Empty> {
        let request = ResizePtyRequest { id: id.into(), exec_id: exec_id.into(), width, height, ..Default::default() };
        self.call("ResizePty", &request).await
    }

    pub async fn pause(&self, id: &str) -> RpcResult<Empty> {
        self.call("Pause", &PauseRequest { id: id.into(), ..Default::default() }).await
    }

    pub async fn resume(&self, id: &str) -> RpcResult<Empty> {
        self.call("Resume", &ResumeRequest { id: id.into(), ..Default::default() }).await
    }

    pub async fn stats(&self, id: &str) -> RpcResult<StatsResponse> {
        self.call("Stats", &StatsRequest { id: id.into(), ..Default::default() }).await
    }

    pub async fn update(&self, request: &UpdateTaskRequest) -> RpcResult<Empty> {
        self.call("Update", request).await
    }

    pub async fn checkpoint(&self, request: &CheckpointTaskRequest) -> RpcResult<Empty> {
        self.call("Checkpoint", request).await
    }

    pub async fn shutdown(&self, id: &str, now: bool) -> RpcResult<Empty> {
        self.call("Shutdown", &ShutdownRequest { id: id.into(), now, ..Default::default() }).await
    }

    /// The Shutdown containerd sends after deleting a task (`waitShutdown`: the shim-shutdown deadline).
    pub async fn shutdown_after_delete(&self, id: &str) -> RpcResult<Empty> {
        let request = ShutdownRequest { id: id.into(), ..Default::default() };
        self.call_as("Shutdown", &request, Caller::ShutdownAfterDelete, self.timeout).await
    }

    /// The Delete containerd sends after a failed Create (background context, cleanup deadline, no namespace).
    pub async fn delete_after_failed_create(&self, id: &str) -> RpcResult<DeleteResponse> {
        let request = DeleteRequest { id: id.into(), ..Default::default() };
        self.call_as("Delete", &request, Caller::CleanupAfterFailedCreate, self.timeout).await
    }

    /// The Pids containerd 1.7+ asks right after reloading a shim (no deadline, the reload's namespace header).
    pub async fn pids_on_reload(&self, id: &str) -> RpcResult<PidsResponse> {
        self.call_as("Pids", &PidsRequest { id: id.into(), ..Default::default() }, Caller::ReloadCheck, self.timeout)
            .await
    }

    /// The Connect containerd makes when it reloads a shim after a restart (load deadline).
    pub async fn connect_on_reload(&self, id: &str) -> RpcResult<ConnectResponse> {
        let request = ConnectRequest { id: id.into(), ..Default::default() };
        self.call_as("Connect", &request, Caller::Reload, self.timeout).await
    }
}

/// A request or reply rendered on one line without protobuf's bookkeeping fields, cut to 160 bytes.
fn short(text: &str) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    crate::shim::launch::clip(&without_special_fields(&one_line), 160)
}

/// Drops every `, special_fields: SpecialFields { ... }` (balanced braces) from a Debug rendering.
fn without_special_fields(text: &str) -> String {
    const MARK: &str = "special_fields: SpecialFields {";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(MARK) {
        let head = rest[..at].trim_end_matches(' ').trim_end_matches(',');
        out.push_str(head);
        let mut depth = 0usize;
        let mut end = rest.len();
        for (i, c) in rest[at..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = at + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out.replace("{ }", "{}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn transcript_lines_drop_protobuf_bookkeeping() {
        let text = "StartRequest { id: \"x\", exec_id: \"\", special_fields: SpecialFields { unknown_fields: UnknownFields { fields: None }, cached_size: CachedSize { size: 3 } } }";
        assert_eq!(super::without_special_fields(text), "StartRequest { id: \"x\", exec_id: \"\" }");
        let empty = "Empty { special_fields: SpecialFields { unknown_fields: UnknownFields { fields: None }, cached_size: CachedSize { size: 0 } } }";
        assert_eq!(super::without_special_fields(empty), "Empty {}");
    }
}
