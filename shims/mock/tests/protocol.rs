//! How `start` answers each kind of caller, the two Task service names, the address file, and the trace.
mod common;

use std::time::Duration;

use common::*;
use containerd_shim_protos::api;
use containerd_shim_protos::bootstrap_api::BootstrapResult;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::oci::Options;
use containerd_shim_protos::ttrpc;
use serde_json::json;

/// One unary call by service name (there is no generated v2 client).
async fn call<Req: Message, Resp: Message>(
    address: &str,
    service: &str,
    method: &str,
    req: &Req,
) -> ttrpc::Result<Resp> {
    let client = ttrpc::r#async::Client::connect(address).await?;
    let request = ttrpc::Request {
        service: service.to_string(),
        method: method.to_string(),
        payload: req.write_to_bytes().unwrap(),
        timeout_nano: Duration::from_secs(5).as_nanos() as i64,
        ..Default::default()
    };
    let response = client.request(request).await?;
    if let Some(status) = response.status.as_ref() {
        if status.code() != ttrpc::Code::OK {
            return Err(ttrpc::Error::RpcStatus(status.clone()));
        }
    }
    Ok(Resp::parse_from_bytes(&response.payload).unwrap())
}

async fn connect_pid(address: &str, service: &str, id: &str) -> ttrpc::Result<i32> {
    let req = api::ConnectRequest { id: id.to_string(), ..Default::default() };
    let resp: api::ConnectResponse = call(address, service, "Connect", &req).await?;
    Ok(resp.shim_pid as i32)
}

async fn shutdown(address: &str, service: &str, id: &str) {
    let req = api::ShutdownRequest { id: id.to_string(), ..Default::default() };
    let _: ttrpc::Result<containerd_shim_protos::protobuf::well_known_types::empty::Empty> =
        call(address, service, "Shutdown", &req).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn legacy_callers_get_a_plain_address_and_v2() {
    let world = World::new().await;
    let options = Any {
        type_url: "containerd.runc.v1.Options".into(),
        value: Options { binary_name: "runc".into(), ..Default::default() }.write_to_bytes().unwrap(),
        ..Default::default()
    }
    .write_to_bytes()
    .unwrap();
    // containerd 1.6 (empty stdin, no MAX_SHIM_VERSION) and 1.7 (options Any, MAX_SHIM_VERSION=2).
    for (id, stdin, env) in [("leg16", Vec::new(), vec![]), ("leg17", options, vec![("MAX_SHIM_VERSION", "2")])] {
        let bundle = world.bundle(id, &config(&["/bin/true"], json!({}), false));
        let (status, stdout, stderr) = world.run_start_with(id, &bundle, stdin, &env);
        assert!(status.success(), "{stderr}");
        // containerd 1.6 reads stdout and stderr combined as the address.
        assert!(stderr.is_empty(), "start printed on stderr: {stderr:?}");
        let address = String::from_utf8(stdout).unwrap();
        assert!(
            address.starts_with("unix:///run/containerd/s/") && !address.contains(char::is_whitespace),
            "not a plain address: {address:?}"
        );
        let written = std::fs::read_to_string(bundle.join("address")).unwrap();
        assert_eq!(written, address, "address file");
        let pid = connect_pid(&address, "containerd.task.v2.Task", id).await.expect("v2 Connect");
        world.track(pid);
        assert_eq!(connect_pid(&address, "containerd.task.v3.Task", id).await.unwrap(), pid);
        shutdown(&address, "containerd.task.v2.Task", id).await;
        let socket = address.trim_start_matches("unix://").to_string();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while pid_alive(pid) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!pid_alive(pid), "shim did not exit on Shutdown");
        assert!(!std::path::Path::new(&socket).exists(), "socket left behind");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bootstrap_callers_get_v3_and_both_names_serve() {
    let world = World::new().await;
    let bundle = world.bundle("boot1", &config(&["/bin/true"], json!({}), false));
    let shim = world.start("boot1", &bundle).await;
    assert_eq!(std::fs::read_to_string(bundle.join("address")).unwrap(), shim.address);
    let v2 = connect_pid(&shim.address, "containerd.task.v2.Task", "boot1").await.expect("v2 served too");
    assert_eq!(v2, shim.pid);
    // A second start of the same group prints the live address and writes it in its own bundle.
    let group = json!({"io.containerd.runc.v2.group": "pod9"});
    let a = world.bundle("ga9", &config(&["/bin/true"], group.clone(), false));
    let b = world.bundle("gb9", &config(&["/bin/true"], group, false));
    let first = world.start("ga9", &a).await;
    let (status, stdout, stderr) = world.run_start("gb9", &b);
    assert!(status.success(), "{stderr}");
    let second = BootstrapResult::parse_from_bytes(&stdout).unwrap();
    assert_eq!(second.address, first.address);
    assert_eq!(std::fs::read_to_string(b.join("address")).unwrap(), first.address);
}

#[tokio::test(flavor = "multi_thread")]
async fn trace_records_invocations_and_rpcs() {
    let world = World::new().await;
    let trace = world.dir.join("trace.jsonl");
    let trace_str = trace.display().to_string();
    let bundle = world.bundle("tr1", &config(&["/bin/true"], json!({}), false));
    let (status, stdout, stderr) = world.run_start_with(
        "tr1",
        &bundle,
        world.bootstrap_params("tr1"),
        &[("SHIMCOMPAT_MOCK_TRACE", &trace_str), ("MAX_SHIM_VERSION", "2")],
    );
    assert!(status.success(), "{stderr}");
    let result = BootstrapResult::parse_from_bytes(&stdout).unwrap();
    let pid = connect_pid(&result.address, "containerd.task.v3.Task", "tr1").await.unwrap();
    world.track(pid);
    let mut create = create_req("tr1", &bundle);
    create.stdout = "file:///tmp/x.log".into();
    create.rootfs.push(api::Mount {
        type_: "overlay".into(),
        source: "overlay".into(),
        options: vec!["lowerdir=/a:/b".into(), "ro".into()],
        ..Default::default()
    });
    // Fails (not mounted here) but is recorded first.
    let _: ttrpc::Result<api::CreateTaskResponse> =
        call(&result.address, "containerd.task.v2.Task", "Create", &create).await;
    shutdown(&result.address, "containerd.task.v3.Task", "tr1").await;
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let start = &lines[0];
    assert_eq!(start["kind"], "exec");
    assert_eq!(start["action"], "start");
    assert_eq!(start["stdin"]["form"], "bootstrap-params");
    assert_eq!(start["env"]["MAX_SHIM_VERSION"], "2");
    assert!(start["env"]["PATH"].is_null(), "values only for containerd's variables");
    assert!(start["env"].as_object().unwrap().contains_key("PATH"));
    assert_eq!(lines[1]["action"], "server");
    let rpcs: Vec<&serde_json::Value> = lines.iter().filter(|l| l["kind"] == "rpc").collect();
    let methods: Vec<&str> = rpcs.iter().map(|l| l["method"].as_str().unwrap()).collect();
    assert_eq!(methods, ["Connect", "Create", "Shutdown"]);
    let create = rpcs[1];
    assert_eq!(create["service"], "containerd.task.v2.Task");
    assert!(create["timeout_nano"].as_i64().unwrap() > 0);
    assert_eq!(create["fields"]["bundle"], "absolute");
    assert_eq!(create["fields"]["stdout"], "uri:file");
    assert_eq!(create["fields"]["rootfs"]["count"], 1);
    assert_eq!(create["fields"]["rootfs"]["items"][0]["type"], "overlay");
    assert_eq!(create["fields"]["rootfs"]["items"][0]["options"]["items"], json!(["lowerdir", "ro"]));
}
