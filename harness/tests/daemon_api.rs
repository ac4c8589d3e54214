//! The harness's stand-in for containerd's gRPC API (harness/src/shim/api.rs, served at every shim's `-address`)
//! against a real, private containerd 1.6.20 and 1.7.24: the same requests (the ones runwasi's shim layer makes on
//! Create, plus the refusals before any lookup) sent to both, answered with the same status code and message.
//!
//! Skips with a printed reason (not a pass) when not root or when a daemon is not installed.
mod daemon;

use std::time::Duration;

use daemon::{run_tests, Daemon, Lab, NotStarted, Verdict};
use shimcompat::shim::api::{self, code, key_request, ApiStub};

const DEADLINE: Duration = Duration::from_secs(10);

/// (method, namespace given?, field 1 of the request)
fn requests(namespace: &str) -> Vec<(&'static str, Option<String>, String)> {
    let ns = || Some(namespace.to_string());
    vec![
        (api::CONTAINERS_GET, ns(), format!("absent-{}", std::process::id())),
        (api::CONTAINERS_GET, None, "absent".into()),
        (api::CONTAINERS_GET, ns(), String::new()),
        (api::IMAGES_GET, ns(), "docker.io/library/absent:latest".into()),
        (api::IMAGES_GET, None, "docker.io/library/absent:latest".into()),
        (api::CONTENT_INFO, ns(), format!("sha256:{}", "0".repeat(64))),
        (api::CONTENT_INFO, ns(), "not-a-digest".into()),
        (api::CONTENT_INFO, ns(), "sha256:abc".into()),
        (api::CONTENT_INFO, ns(), format!("md5:{}", "0".repeat(32))),
        (api::CONTENT_READ, ns(), format!("sha256:{}", "0".repeat(64))),
    ]
}

fn compare(daemon: Daemon) -> Verdict {
    let test = daemon.label();
    let mut lab = match Lab::start(daemon) {
        Ok(lab) => lab,
        Err(NotStarted::Skip(reason)) => return Verdict::Skip(reason),
        Err(NotStarted::Failed(reason)) => return Verdict::Fail(reason),
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let stub_path = lab.path("api-stub.sock");
    let rows = runtime.block_on(async {
        let stub = ApiStub::serve(&stub_path).expect("serving the stand-in");
        let mut rows = Vec::new();
        for (method, namespace, key) in requests(lab.namespace()) {
            let body = key_request(&key);
            let real = api::unary(&lab.grpc_socket(), method, namespace.as_deref(), &body, DEADLINE).await;
            let ours = api::unary(&stub_path, method, namespace.as_deref(), &body, DEADLINE).await;
            rows.push((method, namespace, key, real, ours));
        }
        let recorded = stub.calls().len();
        stub.stop();
        (rows, recorded)
    });
    let notes = lab.cleanup();
    let (rows, recorded) = rows;
    let show = |answer: &Result<(u32, String), String>| match answer {
        Ok((c, message)) => format!("{} {message:?}", code::name(*c)),
        Err(e) => format!("no gRPC answer: {e}"),
    };
    let mut differ = Vec::new();
    println!("{test}: containerd's API, real daemon vs shimcompat's stand-in");
    for (method, namespace, key, real, ours) in &rows {
        let same = real.is_ok() && real == ours;
        println!(
            "  {} {method}({key:?}) ns={}\n      containerd: {}\n      stand-in:   {}",
            if same { "same" } else { "DIFF" },
            namespace.as_deref().unwrap_or("(none)"),
            show(real),
            show(ours)
        );
        if !same {
            differ.push(format!("{method}({key:?}): containerd {} / stand-in {}", show(real), show(ours)));
        }
    }
    if recorded != rows.len() {
        differ.push(format!("the stand-in recorded {recorded} calls for {} requests", rows.len()));
    }
    if !notes.is_empty() {
        differ.push(format!("lab cleanup: {}", notes.join("; ")));
    }
    if differ.is_empty() {
        Verdict::Pass
    } else {
        Verdict::Fail(differ.join("\n"))
    }
}

fn main() {
    run_tests(&[
        ("daemon_api::stand_in_answers_as_containerd_1_6", || compare(Daemon::V1_6)),
        ("daemon_api::stand_in_answers_as_containerd_1_7", || compare(Daemon::V1_7)),
    ])
}
