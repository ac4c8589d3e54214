//! containerd's gRPC API at the shim's `-address`, as the harness stands in for it.
//!
//! containerd passes a shim `-address <containerd.sock>` (and `GRPC_ADDRESS`): its own client API, plain gRPC over
//! HTTP/2. Most shims only hash it into their socket name, but some dial it: runwasi's shim layer asks
//! `Containers/Get` for the container it is creating (then `Images/Get` and `Content/Info`/`Read` to look for wasm
//! layers) and fails Create when nothing answers there. So a case's `-address` is a live socket served here.
//!
//! What is modelled: containerd's answers for objects it does not hold (the harness has no metadata store), with the
//! status code and message containerd gives; harness/tests/daemon_api.rs sends the same requests to a real private
//! containerd and to this server and requires equal answers. A method not modelled gets UNIMPLEMENTED with a message
//! that says so; every call is recorded (method, namespace, answer) for the evidence of a failed trial.
//!
//! The wire format needs no generated code: every modelled request carries its key as protobuf field 1 (a string),
//! and every modelled answer is a trailers-only error, so this is a small HTTP/2 server (the h2 crate) and a small
//! unary client (for the comparison test and `doctor`).
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

/// gRPC status codes used here: ttrpc's `Code` (the same numbering as google.rpc.Code), as plain numbers on the wire.
pub mod code {
    use containerd_shim_protos::protobuf::Enum;
    use containerd_shim_protos::ttrpc::Code;

    pub const INVALID_ARGUMENT: u32 = Code::INVALID_ARGUMENT as u32;
    pub const NOT_FOUND: u32 = Code::NOT_FOUND as u32;
    pub const FAILED_PRECONDITION: u32 = Code::FAILED_PRECONDITION as u32;
    pub const UNIMPLEMENTED: u32 = Code::UNIMPLEMENTED as u32;

    /// The name containerd's errdefs print (shim::task::code_name).
    pub fn name(code: u32) -> &'static str {
        i32::try_from(code).ok().and_then(Code::from_i32).map(crate::shim::task::code_name).unwrap_or("(unknown code)")
    }
}

/// The header containerd's clients put the namespace in.
pub const NAMESPACE_HEADER: &str = "containerd-namespace";

/// The methods modelled, with what names the object in field 1 of the request.
pub const CONTAINERS_GET: &str = "/containerd.services.containers.v1.Containers/Get";
pub const IMAGES_GET: &str = "/containerd.services.images.v1.Images/Get";
pub const CONTENT_INFO: &str = "/containerd.services.content.v1.Content/Info";
pub const CONTENT_READ: &str = "/containerd.services.content.v1.Content/Read";

/// A request body above this is not read further (a modelled request is a few hundred bytes).
const BODY_CAP: usize = 1 << 20;
/// Calls kept per server.
const CALL_CAP: usize = 1000;

/// One call a shim made to the API, and the answer it got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiCall {
    pub method: String,
    pub namespace: Option<String>,
    /// Field 1 of the request (the container id, image name or digest), when it is a string.
    pub key: Option<String>,
    pub code: u32,
    pub message: String,
}

impl ApiCall {
    pub fn summary(&self) -> String {
        let short = self.method.rsplit('.').next().unwrap_or(&self.method);
        format!(
            "{short}({}) ns={} -> {} {:?}",
            self.key.as_deref().unwrap_or(""),
            self.namespace.as_deref().unwrap_or("(none)"),
            code::name(self.code),
            self.message
        )
    }
}

/// containerd's answer to `method` for an object it does not hold. The messages are containerd's own
/// (errdefs.ErrNotFound wrapped by each store, namespaces.NamespaceRequired), checked against a real daemon.
pub fn answer(method: &str, namespace: Option<&str>, key: Option<&str>) -> (u32, String) {
    let modelled = [CONTAINERS_GET, IMAGES_GET, CONTENT_INFO, CONTENT_READ];
    if !modelled.contains(&method) {
        return (
            code::UNIMPLEMENTED,
            format!(
                "shimcompat stands in for containerd's API only for objects it does not hold ({}); {method} is not modelled",
                modelled.join(", ")
            ),
        );
    }
    let key = key.unwrap_or("");
    let Some(namespace) = namespace.filter(|n| !n.is_empty()) else {
        return (code::FAILED_PRECONDITION, "namespace is required: failed precondition".into());
    };
    match method {
        // An empty id is looked up like any other (no validation before the store).
        CONTAINERS_GET => (code::NOT_FOUND, format!("container \"{key}\" in namespace \"{namespace}\": not found")),
        IMAGES_GET => (code::NOT_FOUND, format!("image \"{key}\": not found")),
        _ if valid_digest(key) => (code::NOT_FOUND, format!("content digest {key}: not found")),
        _ => (code::INVALID_ARGUMENT, format!("{key:?} failed validation")),
    }
}

/// OCI digest syntax as containerd checks it before a content lookup (algorithm and hex length).
fn valid_digest(text: &str) -> bool {
    let Some((algorithm, hex)) = text.split_once(':') else { return false };
    let length = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return false,
    };
    hex.len() == length && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Field 1 of a protobuf message, when it is length-delimited UTF-8.
pub fn field_one(message: &[u8]) -> Option<String> {
    let mut at = 0;
    while at < message.len() {
        let tag = varint(message, &mut at)?;
        let (field, wire) = (tag >> 3, tag & 7);
        match wire {
            0 => {
                varint(message, &mut at)?;
            }
            1 => at += 8,
            2 => {
                let length = varint(message, &mut at)? as usize;
                let value = message.get(at..at.checked_add(length)?)?;
                if field == 1 {
                    return String::from_utf8(value.to_vec()).ok();
                }
                at += length;
            }
            5 => at += 4,
            _ => return None,
        }
    }
    None
}

fn varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// A message with `key` as field 1 (string): every modelled request.
pub fn key_request(key: &str) -> Vec<u8> {
    let mut out = vec![0x0a];
    let mut length = key.len();
    loop {
        let byte = (length & 0x7f) as u8;
        length >>= 7;
        if length == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(key.as_bytes());
    out
}

/// gRPC's length-prefixed frame around one message.
fn frame(message: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(message.len() + 5);
    out.push(0);
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    Bytes::from(out)
}

/// grpc-message is percent-encoded outside printable ASCII (and `%` itself).
fn encode_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for byte in message.bytes() {
        if (0x20..0x7f).contains(&byte) && byte != b'%' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn decode_message(encoded: &str) -> String {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Some(byte) = encoded.get(i + 1..i + 3).and_then(|hex| u8::from_str_radix(hex, 16).ok()) {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Debug, thiserror::Error)]
#[error("containerd API stand-in on {path}: {detail}")]
pub struct ApiServerError {
    pub path: String,
    pub detail: String,
}

/// A running stand-in and the calls it has answered.
pub struct ApiStub {
    pub path: PathBuf,
    calls: Arc<Mutex<Vec<ApiCall>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ApiStub {
    /// Binds `path` and serves it on the current tokio runtime (call from within one).
    pub fn serve(path: &Path) -> Result<ApiStub, ApiServerError> {
        let fail = |detail: String| ApiServerError { path: path.display().to_string(), detail };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| fail(format!("creating {}: {e}", parent.display())))?;
        }
        let _ = crate::fstree::remove_socket(path);
        let listener = tokio::net::UnixListener::bind(path).map_err(|e| fail(e.to_string()))?;
        let calls: Arc<Mutex<Vec<ApiCall>>> = Default::default();
        let record = calls.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(connection(stream, record.clone()));
            }
        });
        Ok(ApiStub { path: path.to_path_buf(), calls, task })
    }

    /// Every call answered so far, in arrival order.
    pub fn calls(&self) -> Vec<ApiCall> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Stops accepting and removes the socket (connections already open end with their shim).
    pub fn stop(&self) {
        self.task.abort();
        let _ = crate::fstree::remove_socket(&self.path);
    }
}

impl Drop for ApiStub {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn connection(stream: tokio::net::UnixStream, calls: Arc<Mutex<Vec<ApiCall>>>) {
    let Ok(mut connection) = h2::server::handshake(stream).await else { return };
    while let Some(Ok((request, respond))) = connection.accept().await {
        tokio::spawn(call(request, respond, calls.clone()));
    }
}

async fn call(
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    calls: Arc<Mutex<Vec<ApiCall>>>,
) {
    let method = request.uri().path().to_string();
    let namespace = request.headers().get(NAMESPACE_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string);
    let mut body = request.into_body();
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        let Ok(chunk) = chunk else { break };
        let _ = body.flow_control().release_capacity(chunk.len());
        if data.len() < BODY_CAP {
            data.extend_from_slice(&chunk);
        }
    }
    // One message: the 5-byte gRPC prefix, then the protobuf.
    let key = data.get(5..).and_then(field_one);
    let (code, message) = answer(&method, namespace.as_deref(), key.as_deref());
    let response = http::Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .header("grpc-status", code.to_string())
        .header("grpc-message", encode_message(&message))
        .body(());
    if let Ok(response) = response {
        let _ = respond.send_response(response, true);
    }
    let mut calls = calls.lock().unwrap_or_else(|p| p.into_inner());
    if calls.len() < CALL_CAP {
        calls.push(ApiCall { method, namespace, key, code, message });
    }
}

/// One unary call to a containerd API socket (a real daemon's or a stand-in's): the status code and message of
/// the answer. `Err` when the socket does not answer gRPC at all.
pub async fn unary(
    socket: &Path,
    method: &str,
    namespace: Option<&str>,
    message: &[u8],
    timeout: Duration,
) -> Result<(u32, String), String> {
    let work = async {
        let stream = tokio::net::UnixStream::connect(socket).await.map_err(|e| format!("connecting: {e}"))?;
        let (client, connection) = h2::client::handshake(stream).await.map_err(|e| format!("HTTP/2 handshake: {e}"))?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut client = client.ready().await.map_err(|e| format!("HTTP/2: {e}"))?;
        let mut builder = http::Request::builder()
            .method("POST")
            .uri(format!("http://localhost{method}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        if let Some(namespace) = namespace {
            builder = builder.header(NAMESPACE_HEADER, namespace);
        }
        let request = builder.body(()).map_err(|e| e.to_string())?;
        let (response, mut send) = client.send_request(request, false).map_err(|e| format!("sending: {e}"))?;
        send.send_data(frame(message), true).map_err(|e| format!("sending: {e}"))?;
        let response = response.await.map_err(|e| format!("reading the answer: {e}"))?;
        let status = |headers: &http::HeaderMap| {
            headers.get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u32>().ok()).map(|code| {
                let message = headers.get("grpc-message").and_then(|v| v.to_str().ok()).unwrap_or("");
                (code, decode_message(message))
            })
        };
        if let Some(found) = status(response.headers()) {
            driver.abort();
            return Ok(found);
        }
        let mut body = response.into_body();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(|e| format!("reading the answer: {e}"))?;
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        let trailers = body.trailers().await.map_err(|e| format!("reading the trailers: {e}"))?;
        driver.abort();
        trailers.as_ref().and_then(status).ok_or_else(|| "an answer without grpc-status".to_string())
    };
    tokio::time::timeout(timeout, work).await.map_err(|_| format!("no answer within {timeout:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_one_reads_what_key_request_writes() {
        for key in ["", "c1", &"x".repeat(300)] {
            assert_eq!(field_one(&key_request(key)).as_deref(), Some(key));
        }
        // Field 1 after another field; a truncated message has none.
        let mut message = vec![0x10, 0x96, 0x01];
        message.extend(key_request("after"));
        assert_eq!(field_one(&message).as_deref(), Some("after"));
        assert_eq!(field_one(&[0x0a, 5, b'a']), None);
    }

    #[test]
    fn messages_round_trip_through_percent_encoding() {
        for message in ["container \"a\" in namespace \"b\": not found", "100% é\n", "%"] {
            assert_eq!(decode_message(&encode_message(message)), message);
        }
    }

    #[test]
    fn unmodelled_methods_say_so() {
        let (code, message) = answer("/containerd.services.leases.v1.Leases/Create", Some("ns"), None);
        assert_eq!(code, code::UNIMPLEMENTED);
        assert!(message.contains("not modelled"), "{message}");
    }

    #[tokio::test]
    async fn serves_and_records_over_a_socket() {
        let dir = std::env::temp_dir().join(format!("shimcompat-api-{}", std::process::id()));
        let path = dir.join("api.sock");
        let stub = ApiStub::serve(&path).unwrap();
        let got = unary(&path, CONTAINERS_GET, Some("ns1"), &key_request("c1"), Duration::from_secs(5)).await;
        assert_eq!(got, Ok((code::NOT_FOUND, "container \"c1\" in namespace \"ns1\": not found".into())));
        let calls = stub.calls();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].key.as_deref(), Some("c1"));
        stub.stop();
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
