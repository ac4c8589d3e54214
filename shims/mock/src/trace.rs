//! SHIMCOMPAT_MOCK_TRACE: a record of how the mock was driven, for a differential test against containerd.
//!
//! When the variable names a file, every invocation appends one `exec` line and the server appends one `rpc` line
//! per request, before the request is handled (a hanging RPC is still recorded). Each line is one JSON object
//! written with a single `write` on an `O_APPEND` descriptor, so lines from concurrent shims never interleave.
//! The schema is in README.md.
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

use async_trait::async_trait;
use containerd_shim_protos::api;
use containerd_shim_protos::bootstrap_api::BootstrapParams;
use containerd_shim_protos::protobuf::reflect::{ReflectFieldRef, ReflectValueRef};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageDyn};
use containerd_shim_protos::ttrpc::{
    self,
    r#async::{MethodHandler, Service, TtrpcContext},
};
use serde_json::{json, Map, Value};

pub const TRACE_ENV: &str = "SHIMCOMPAT_MOCK_TRACE";

/// Variables containerd sets for a shim; their values are recorded. Every other name is recorded without its value
/// (the rest of the environment is containerd's own, inherited).
pub const CONTAINERD_ENV: &[&str] = &[
    "TTRPC_ADDRESS",
    "GRPC_ADDRESS",
    "NAMESPACE",
    "MAX_SHIM_VERSION",
    "SCHED_CORE",
    "GOMAXPROCS",
    "OTEL_SERVICE_NAME",
];

/// String fields of the Task API that hold paths or URIs: their form is recorded, never their value.
const PATH_FIELDS: &[&str] = &[
    "bundle",
    "stdin",
    "stdout",
    "stderr",
    "path",
    "checkpoint",
    "parent_checkpoint",
    "source",
    "target",
    "work_path",
    "image_path",
    "parent_path",
];

fn trace_path() -> Option<String> {
    std::env::var(TRACE_ENV).ok().filter(|p| !p.is_empty())
}

pub fn enabled() -> bool {
    trace_path().is_some()
}

/// Appends one line (one `write` call on an O_APPEND descriptor).
fn append(line: &Value) {
    let Some(path) = trace_path() else { return };
    let mut text = line.to_string();
    text.push('\n');
    let file = std::fs::OpenOptions::new().create(true).append(true).mode(0o644).open(path);
    if let Ok(mut file) = file {
        let _ = file.write(text.as_bytes());
    }
}

/// The form of a path or URI: `absolute`, `relative`, `uri:<scheme>` (`uri:file`, `uri:binary`, `uri:fifo`), or
/// `empty`.
pub fn path_form(value: &str) -> String {
    if value.is_empty() {
        "empty".into()
    } else if let Some((scheme, _)) = value.split_once("://") {
        format!("uri:{scheme}")
    } else if value.starts_with('/') {
        "absolute".into()
    } else {
        "relative".into()
    }
}

/// How `start`'s stdin looked: empty, a BootstrapParams meant for this shim, a legacy options Any, or other bytes.
pub fn stdin_shape(input: Option<&[u8]>, id: &str, namespace: &str) -> Value {
    let Some(input) = input else {
        return json!({"len": null, "form": "unread"});
    };
    if input.is_empty() {
        return json!({"len": 0, "form": "empty"});
    }
    if let Ok(params) = BootstrapParams::parse_from_bytes(input) {
        let identity_only = BootstrapParams {
            instance_id: params.instance_id.clone(),
            namespace: params.namespace.clone(),
            ..Default::default()
        };
        let matches = params.instance_id == id && params.namespace == namespace;
        if matches || params != identity_only {
            let extensions: Vec<String> =
                params.extensions.iter().filter_map(|e| e.value.as_ref().map(|a| a.type_url.clone())).collect();
            return json!({
                "len": input.len(),
                "form": "bootstrap-params",
                "type_url": extensions.first(),
                "fields": shape(&params),
            });
        }
    }
    if let Ok(any) = Any::parse_from_bytes(input) {
        if !any.type_url.is_empty() {
            return json!({"len": input.len(), "form": "options-any", "type_url": any.type_url});
        }
    }
    json!({"len": input.len(), "form": "other"})
}

fn environment() -> Map<String, Value> {
    std::env::vars_os()
        .map(|(name, value)| {
            let name = name.to_string_lossy().into_owned();
            let value = if CONTAINERD_ENV.contains(&name.as_str()) {
                Value::String(value.to_string_lossy().into_owned())
            } else {
                Value::Null
            };
            (name, value)
        })
        .collect()
}

/// One `exec` line: an invocation of the binary.
pub fn exec(action: &str, argv: &[String], stdin: Value) {
    if !enabled() {
        return;
    }
    let cwd = std::env::current_dir().map(|p| p.display().to_string()).unwrap_or_default();
    append(&json!({
        "kind": "exec",
        "pid": std::process::id(),
        "action": action,
        "argv": argv,
        "cwd": cwd,
        "env": environment(),
        "stdin": stdin,
    }));
}

/// Reads whatever is already on stdin (pipe or file) without waiting for a writer that never comes: for the trace
/// of actions that do not otherwise read stdin.
pub fn peek_stdin() -> Option<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let stdin = std::io::stdin();
    let fd = stdin.as_raw_fd();
    if unsafe { libc::isatty(fd) } == 1 {
        return None;
    }
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        if unsafe { libc::poll(&mut pfd, 1, 100) } <= 0 {
            return Some(data);
        }
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            return Some(data);
        }
        data.extend_from_slice(&buf[..n as usize]);
    }
}

/// The shape of a message: which fields are set (non-default), with path forms, Any type URLs, mount types and
/// option keys, counts of repeated fields and map keys. Values are kept only where they are protocol constants
/// (booleans, enums, a Kill's signal, a Mount's type).
pub fn shape(message: &dyn MessageDyn) -> Value {
    let descriptor = message.descriptor_dyn();
    let full_name = descriptor.full_name().to_string();
    if full_name == "google.protobuf.Any" {
        let type_url = descriptor
            .field_by_name("type_url")
            .map(|f| match f.get_singular_field_or_default(message) {
                ReflectValueRef::String(s) => s.to_string(),
                _ => String::new(),
            })
            .unwrap_or_default();
        let len = descriptor
            .field_by_name("value")
            .map(|f| match f.get_singular_field_or_default(message) {
                ReflectValueRef::Bytes(b) => b.len(),
                _ => 0,
            })
            .unwrap_or_default();
        return json!({"type_url": type_url, "len": len});
    }
    if full_name == "google.protobuf.Timestamp" {
        return json!("set");
    }
    let mut fields = Map::new();
    for field in descriptor.fields() {
        let name = field.name().to_string();
        let value = match field.get_reflect(message) {
            ReflectFieldRef::Optional(optional) => match optional.value() {
                Some(value) => scalar_shape(&full_name, &name, value),
                None => continue,
            },
            ReflectFieldRef::Repeated(repeated) => {
                if repeated.is_empty() {
                    continue;
                }
                let items: Vec<Value> =
                    (0..repeated.len()).map(|i| scalar_shape(&full_name, &name, repeated.get(i))).collect();
                json!({"count": items.len(), "items": items})
            }
            ReflectFieldRef::Map(map) => {
                if map.is_empty() {
                    continue;
                }
                let keys: Vec<Value> = map
                    .into_iter()
                    .map(|(k, _)| match k {
                        ReflectValueRef::String(s) => Value::String(s.to_string()),
                        other => Value::String(format!("{other:?}")),
                    })
                    .collect();
                json!({"count": keys.len(), "keys": keys})
            }
        };
        if value.is_null() {
            continue;
        }
        fields.insert(name, value);
    }
    Value::Object(fields)
}

fn scalar_shape(message: &str, field: &str, value: ReflectValueRef) -> Value {
    let is_mount = message == "containerd.types.Mount";
    match value {
        ReflectValueRef::String("") => Value::Null,
        ReflectValueRef::String(s) if is_mount && field == "type" => json!(s),
        // Mount options: the key only (`lowerdir` of `lowerdir=/a:/b`, `ro`).
        ReflectValueRef::String(s) if is_mount && field == "options" => {
            json!(s.split_once('=').map(|(k, _)| k).unwrap_or(s))
        }
        ReflectValueRef::String(s) if PATH_FIELDS.contains(&field) => json!(path_form(s)),
        ReflectValueRef::String(_) => json!("set"),
        ReflectValueRef::Bytes([]) => Value::Null,
        ReflectValueRef::Bytes(b) => json!({"bytes": b.len()}),
        ReflectValueRef::Bool(false) => Value::Null,
        ReflectValueRef::Bool(true) => json!(true),
        ReflectValueRef::Enum(descriptor, number) => {
            if number == 0 {
                return Value::Null;
            }
            match descriptor.value_by_number(number) {
                Some(v) => json!(v.name()),
                None => json!(number),
            }
        }
        ReflectValueRef::Message(m) => shape(&*m),
        ReflectValueRef::U32(0) | ReflectValueRef::U64(0) | ReflectValueRef::I32(0) | ReflectValueRef::I64(0) => {
            Value::Null
        }
        ReflectValueRef::U32(n) if field == "signal" => json!(n),
        ReflectValueRef::F32(0.0) => Value::Null,
        ReflectValueRef::F64(0.0) => Value::Null,
        _ => json!("set"),
    }
}

/// Decodes a request payload by method name (the 17 Task RPCs) and returns its shape.
fn request_shape(method: &str, payload: &[u8]) -> Value {
    fn decode<M: Message + MessageDyn>(payload: &[u8]) -> Value {
        match M::parse_from_bytes(payload) {
            Ok(m) => shape(&m),
            Err(e) => json!({"undecodable": e.to_string()}),
        }
    }
    match method {
        "State" => decode::<api::StateRequest>(payload),
        "Create" => decode::<api::CreateTaskRequest>(payload),
        "Start" => decode::<api::StartRequest>(payload),
        "Delete" => decode::<api::DeleteRequest>(payload),
        "Pids" => decode::<api::PidsRequest>(payload),
        "Pause" => decode::<api::PauseRequest>(payload),
        "Resume" => decode::<api::ResumeRequest>(payload),
        "Checkpoint" => decode::<api::CheckpointTaskRequest>(payload),
        "Kill" => decode::<api::KillRequest>(payload),
        "Exec" => exec_shape(payload),
        "ResizePty" => decode::<api::ResizePtyRequest>(payload),
        "CloseIO" => decode::<api::CloseIORequest>(payload),
        "Update" => decode::<api::UpdateTaskRequest>(payload),
        "Wait" => decode::<api::WaitRequest>(payload),
        "Stats" => decode::<api::StatsRequest>(payload),
        "Connect" => decode::<api::ConnectRequest>(payload),
        "Shutdown" => decode::<api::ShutdownRequest>(payload),
        _ => json!({"len": payload.len()}),
    }
}

/// Exec's spec is a JSON runtime-spec Process inside an Any: also record which of its keys are present.
fn exec_shape(payload: &[u8]) -> Value {
    let Ok(request) = api::ExecProcessRequest::parse_from_bytes(payload) else {
        return json!({"undecodable": true});
    };
    let mut value = shape(&request);
    let process = request.spec.as_ref().and_then(|spec| serde_json::from_slice::<Value>(&spec.value).ok());
    if let (Some(Value::Object(process)), Some(Value::Object(spec_shape))) = (process, value.get_mut("spec")) {
        let keys: Vec<&String> = process.keys().collect();
        spec_shape.insert("process_keys".into(), json!(keys));
        if let Some(Value::Bool(terminal)) = process.get("terminal") {
            spec_shape.insert("terminal".into(), json!(terminal));
        }
    }
    value
}

fn rpc(service: &str, method: &str, ctx: &TtrpcContext, payload: &[u8]) {
    let metadata: BTreeMap<&String, &Vec<String>> = ctx.metadata.iter().collect();
    append(&json!({
        "kind": "rpc",
        "pid": std::process::id(),
        "service": service,
        "method": method,
        "metadata": metadata,
        "timeout_nano": ctx.timeout_nano,
        "fields": request_shape(method, payload),
    }));
}

/// Records a request, then hands it to the generated handler.
struct Traced {
    service: String,
    method: String,
    inner: Box<dyn MethodHandler + Send + Sync>,
}

#[async_trait]
impl MethodHandler for Traced {
    async fn handler(&self, ctx: TtrpcContext, req: ttrpc::Request) -> ttrpc::Result<ttrpc::Response> {
        rpc(&self.service, &self.method, &ctx, &req.payload);
        self.inner.handler(ctx, req).await
    }
}

/// Wraps every method of the services when tracing is on.
pub fn wrap(services: HashMap<String, Service>) -> HashMap<String, Service> {
    if !enabled() {
        return services;
    }
    services
        .into_iter()
        .map(|(service_name, service)| {
            let methods = service
                .methods
                .into_iter()
                .map(|(method, inner)| {
                    let traced = Traced { service: service_name.clone(), method: method.clone(), inner };
                    (method, Box::new(traced) as Box<dyn MethodHandler + Send + Sync>)
                })
                .collect();
            let streams = service.streams;
            (service_name, Service { methods, streams })
        })
        .collect()
}
