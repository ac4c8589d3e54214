//! The Task API client: containerd's side of `containerd.task.v2.Task` / `containerd.task.v3.Task`.
//!
//! The two services are identical on the wire apart from the package name, so one client speaks both by naming the
//! service per request (there is no generated v2 client in containerd-shim-protos 0.12). Every call has a deadline,
//! and a status reply comes back typed so cases can assert on the code.
use std::time::Duration;

use containerd_shim_protos::api::*;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::ttrpc::{self, asynchronous::Client, Code};

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
    timeout: Duration,
}

pub type RpcResult<T> = Result<T, RpcError>;

impl TaskClient {
    pub async fn connect(address: &str, api: TaskApi, namespace: &str, timeout: Duration) -> RpcResult<TaskClient> {
        let client = tokio::time::timeout(timeout, Client::connect(address))
            .await
            .map_err(|_| RpcError::Timeout { method: "connect", timeout })?
            .map_err(|e| RpcError::Transport { method: "connect", detail: format!("{address}: {e}") })?;
        Ok(TaskClient { client, api, namespace: namespace.to_string(), timeout })
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

    /// One unary call with the client's deadline.
    pub async fn call<Req: Message, Resp: Message>(&self, method: &'static str, request: &Req) -> RpcResult<Resp> {
        self.call_with(method, request, self.timeout).await
    }

    pub async fn call_with<Req: Message, Resp: Message>(
        &self,
        method: &'static str,
        request: &Req,
        timeout: Duration,
    ) -> RpcResult<Resp> {
        let payload = request
            .write_to_bytes()
            .map_err(|e| RpcError::Decode { method, detail: format!("encoding the request: {e}") })?;
        let mut namespace = ttrpc::proto::KeyValue::new();
        namespace.key = "containerd-namespace-ttrpc".into();
        namespace.value = self.namespace.clone();
        let wire = ttrpc::Request {
            service: self.api.service().into(),
            method: method.into(),
            payload,
            timeout_nano: timeout.as_nanos() as i64,
            metadata: vec![namespace],
            ..Default::default()
        };
        // The ttrpc client enforces timeout_nano on the reply; the outer timeout also bounds the send.
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
        let request =
            ResizePtyRequest { id: id.into(), exec_id: exec_id.into(), width, height, ..Default::default() };
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
}
