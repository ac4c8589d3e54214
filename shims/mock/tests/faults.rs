//! Each fault does what FAULTS.md says (the harness's own self-test checks that cases fail under them).
mod common;

use std::time::Duration;

use common::*;
use containerd_shim_protos::api;
use containerd_shim_protos::events::task::{TaskExit, TaskStart};
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::ttrpc::Code;
use serde_json::json;

fn faults(list: &str) -> serde_json::Value {
    json!({ "io.shimcompat.mock.faults": list })
}

fn sreq(id: &str) -> api::StartRequest {
    api::StartRequest { id: id.into(), ..Default::default() }
}
fn wreq(id: &str, exec_id: &str) -> api::WaitRequest {
    api::WaitRequest { id: id.into(), exec_id: exec_id.into(), ..Default::default() }
}
fn dreq(id: &str, exec_id: &str) -> api::DeleteRequest {
    api::DeleteRequest { id: id.into(), exec_id: exec_id.into(), ..Default::default() }
}
fn kreq(id: &str, exec_id: &str, signal: u32, all: bool) -> api::KillRequest {
    api::KillRequest { id: id.into(), exec_id: exec_id.into(), signal, all, ..Default::default() }
}
fn streq(id: &str, exec_id: &str) -> api::StateRequest {
    api::StateRequest { id: id.into(), exec_id: exec_id.into(), ..Default::default() }
}
fn ereq(id: &str, exec_id: &str, args: &[&str]) -> api::ExecProcessRequest {
    api::ExecProcessRequest {
        id: id.into(),
        exec_id: exec_id.into(),
        spec: Some(exec_spec(args)).into(),
        ..Default::default()
    }
}

async fn expect_hang<T: std::fmt::Debug>(future: impl std::future::Future<Output = T>) {
    let r = tokio::time::timeout(Duration::from_millis(400), future).await;
    assert!(r.is_err(), "expected no answer, got {r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_fault_and_error_code_remaps() {
    let world = World::new().await;
    let bundle = world.bundle("bad", &config(&["/bin/true"], faults("kill-noop,no-such-fault"), false));
    let shim = world.start("bad", &bundle).await;
    let e = shim.task.create(ctx(), &create_req("bad", &bundle)).await.unwrap_err();
    assert_eq!(code_of(&e), Code::INVALID_ARGUMENT);
    assert!(format!("{e:?}").contains("no-such-fault"));

    let annotations = json!({
        "io.shimcompat.mock.faults": "notfound-as-unknown,alreadyexists-as-unknown,unimplemented-as-notfound",
        "io.shimcompat.mock.unimplemented": "Checkpoint",
    });
    let bundle = world.bundle("remap", &config(&["/bin/sh", "-c", "sleep 1000"], annotations, false));
    shim.task.create(ctx(), &create_req("remap", &bundle)).await.unwrap();
    let e = shim.task.create(ctx(), &create_req("remap", &bundle)).await.unwrap_err();
    assert_eq!(code_of(&e), Code::UNKNOWN, "AlreadyExists remapped");
    let e = shim.task.state(ctx(), &streq("remap", "nope")).await.unwrap_err();
    assert_eq!(code_of(&e), Code::UNKNOWN, "NotFound remapped");
    let e = shim
        .task
        .checkpoint(
            ctx(),
            &api::CheckpointTaskRequest { id: "remap".into(), path: "/tmp/x".into(), ..Default::default() },
        )
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), Code::NOT_FOUND, "Unimplemented remapped: {e:?}");
    shim.task.kill(ctx(), &kreq("remap", "", 9, false)).await.unwrap();
    shim.task.wait(ctx(), &wreq("remap", "")).await.unwrap();
    shim.task.delete(ctx(), &dreq("remap", "")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_faults() {
    let world = World::new().await;
    let list = "exec-dup-ok,exec-exit-status-zero,exec-state-init-pid,pids-init-only,exec-events-missing,\
                exec-delete-refused,kill-unknown-exec-ok,kill-exited-ok";
    let id = "ex";
    let bundle = world.bundle(id, &config(&["/bin/sh", "-c", "sleep 1000"], faults(list), false));
    let shim = world.start(id, &bundle).await;
    let created = shim.task.create(ctx(), &create_req(id, &bundle)).await.unwrap();
    shim.task.start(ctx(), &sreq(id)).await.unwrap();
    shim.task.exec(ctx(), &ereq(id, "e1", &["/bin/sh", "-c", "sleep 1000"])).await.unwrap();
    shim.task.exec(ctx(), &ereq(id, "e1", &["/bin/sh", "-c", "exit 7"])).await.expect("exec-dup-ok");
    let exec_pid = shim
        .task
        .start(ctx(), &api::StartRequest { id: id.into(), exec_id: "e1".into(), ..Default::default() })
        .await
        .unwrap()
        .pid;
    let state = shim.task.state(ctx(), &streq(id, "e1")).await.unwrap();
    assert_eq!(state.pid, created.pid, "exec-state-init-pid");
    assert_ne!(exec_pid, created.pid);
    let pids = shim.task.pids(ctx(), &api::PidsRequest { id: id.into(), ..Default::default() }).await.unwrap();
    assert_eq!(pids.processes.iter().map(|p| p.pid).collect::<Vec<_>>(), [created.pid], "pids-init-only");
    assert_eq!(shim.task.wait(ctx(), &wreq(id, "e1")).await.unwrap().exit_status, 0, "exec-exit-status-zero");
    shim.task.kill(ctx(), &kreq(id, "e1", 9, false)).await.expect("kill-exited-ok");
    shim.task.kill(ctx(), &kreq(id, "nope", 9, false)).await.expect("kill-unknown-exec-ok");
    let e = shim.task.delete(ctx(), &dreq(id, "e1")).await.unwrap_err();
    assert_eq!(code_of(&e), Code::FAILED_PRECONDITION, "exec-delete-refused");
    shim.task.kill(ctx(), &kreq(id, "", 9, false)).await.unwrap();
    shim.task.wait(ctx(), &wreq(id, "")).await.unwrap();
    shim.task.delete(ctx(), &dreq(id, "")).await.unwrap();
    assert!(world.wait_for_events("/tasks/delete", 1).await);
    let topics = world.topics();
    assert!(!topics.iter().any(|t| t.starts_with("/tasks/exec-")), "exec-events-missing: {topics:?}");

    // exec-kill-noop, exec-stopped-ok and exec-drop-stdout on a second container.
    let id = "ex2";
    let bundle = world.bundle(
        id,
        &config(&["/bin/sh", "-c", "sleep 1000"], faults("exec-kill-noop,exec-stopped-ok,exec-drop-stdout"), false),
    );
    shim.task.create(ctx(), &create_req(id, &bundle)).await.unwrap();
    shim.task.start(ctx(), &sreq(id)).await.unwrap();
    let out = world.fifo("ex2out");
    let drain = Drain::new(&out, true);
    let mut exec = ereq(id, "echo", &["/bin/echo", "hidden"]);
    exec.stdout = out.display().to_string();
    shim.task.exec(ctx(), &exec).await.unwrap();
    shim.task
        .start(ctx(), &api::StartRequest { id: id.into(), exec_id: "echo".into(), ..Default::default() })
        .await
        .unwrap();
    shim.task.wait(ctx(), &wreq(id, "echo")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(drain.text(), "", "exec-drop-stdout");
    shim.task.exec(ctx(), &ereq(id, "sl", &["/bin/sleep", "1000"])).await.unwrap();
    shim.task
        .start(ctx(), &api::StartRequest { id: id.into(), exec_id: "sl".into(), ..Default::default() })
        .await
        .unwrap();
    shim.task.kill(ctx(), &kreq(id, "sl", 9, false)).await.unwrap();
    expect_hang(shim.task.wait(ctx(), &wreq(id, "sl"))).await;
    shim.task.kill(ctx(), &kreq(id, "", 9, false)).await.unwrap();
    shim.task.wait(ctx(), &wreq(id, "")).await.unwrap();
    shim.task.exec(ctx(), &ereq(id, "late", &["/bin/true"])).await.expect("exec-stopped-ok");
    shim.task.delete(ctx(), &dreq(id, "")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn wait_and_kill_faults() {
    let world = World::new().await;
    let id = "w1";
    let bundle = world.bundle(
        id,
        &config(&["/bin/sh", "-c", "sleep 1000"], faults("wait-once,wait-created-returns,kill-created-noop"), false),
    );
    let shim = world.start(id, &bundle).await;
    shim.task.create(ctx(), &create_req(id, &bundle)).await.unwrap();
    let w = shim.task.wait(ctx(), &wreq(id, "")).await.expect("wait-created-returns");
    assert_eq!(w.exit_status, 0);
    shim.task.kill(ctx(), &kreq(id, "", 9, false)).await.unwrap();
    let state = shim.task.state(ctx(), &streq(id, "")).await.unwrap();
    assert_eq!(state.status.enum_value(), Ok(api::Status::CREATED), "kill-created-noop");
    shim.task.start(ctx(), &sreq(id)).await.unwrap();
    let first = {
        let task = shim.task.clone();
        tokio::spawn(async move { task.wait(ctx(), &wreq("w1", "")).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = {
        let task = shim.task.clone();
        tokio::spawn(async move { task.wait(ctx(), &wreq("w1", "")).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    shim.task.kill(ctx(), &kreq(id, "", 9, false)).await.unwrap();
    assert_eq!(first.await.unwrap().unwrap().exit_status, 137);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!second.is_finished(), "wait-once: the second waiter must hang");
    second.abort();
    shim.task.delete(ctx(), &dreq(id, "")).await.unwrap();

    let id = "w2";
    let bundle = world.bundle(
        id,
        &config(&["/bin/sh", "-c", "sleep 1000 & exec sleep 1000"], faults("wait-late-hangs,kill-all-ignored"), false),
    );
    let created = shim.task.create(ctx(), &create_req(id, &bundle)).await.unwrap();
    shim.task.start(ctx(), &sreq(id)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let child = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| {
            *pid != created.pid as i32
                && std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|s| s.rsplit(')').next()?.split_whitespace().nth(2)?.parse::<u32>().ok())
                    == Some(created.pid)
        })
        .expect("the init's child");
    shim.task.kill(ctx(), &kreq(id, "", 9, true)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let state = shim.task.state(ctx(), &streq(id, "")).await.unwrap();
    assert_eq!(state.status.enum_value(), Ok(api::Status::STOPPED));
    assert!(pid_alive(child), "kill-all-ignored: the init's child must survive");
    expect_hang(shim.task.wait(ctx(), &wreq(id, ""))).await;
    shim.task.delete(ctx(), &dreq(id, "")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!pid_alive(child), "Delete cleans up what is left of the container");
}

#[tokio::test(flavor = "multi_thread")]
async fn stdio_faults() {
    let world = World::new().await;
    let shim_bundle = world.bundle("io0", &config(&["/bin/true"], json!({}), false));
    let shim = world.start("io0", &shim_bundle).await;

    // stderr-to-stdout
    let id = "io1";
    let bundle =
        world.bundle(id, &config(&["/bin/sh", "-c", "echo out; echo err >&2"], faults("stderr-to-stdout"), false));
    let (out, err) = (world.fifo("o1"), world.fifo("e1"));
    let (out_drain, err_drain) = (Drain::new(&out, true), Drain::new(&err, true));
    let mut req = create_req(id, &bundle);
    req.stdout = out.display().to_string();
    req.stderr = err.display().to_string();
    shim.task.create(ctx(), &req).await.unwrap();
    shim.task.start(ctx(), &sreq(id)).await.unwrap();
    shim.task.wait(ctx(), &wreq(id, "")).await.unwrap();
    assert!(out_drain.wait_eof(Duration::from_secs(5)));
    assert_eq!(out_drain.text(), "out\nerr\n");
    assert_eq!(err_drain.text(), "");
    shim.task.delete(ctx(), &dreq(id, "")).await.unwrap();

    // stdout-truncate: 2 MiB written, 1 MiB arrives, then EOF.
    let id = "io2";
    let bundle =
        world.bundle(id, &config(&["/bin/sh", "-c", "head -c 2097152 /dev/zero"], faults("stdout-truncate"), false));
    let out = world.fifo("o2");
    let out_drain = Drain::new(&out, true);
    let mut req = create_req(id, &bundle);
    req.stdout = out.display().to_string();
    shim.task.create(ctx(), &req).await.unwrap();
    shim.task.start(ctx(), &sreq(id)).await.unwrap();
    assert_eq!(shim.task.wait(ctx(), &wreq(id, "")).await.unwrap().exit_status, 0);
    assert!(out_drain.wait_eof(Duration::from_secs(5)));
    assert_eq!(out_drain.data.lock().unwrap().len(), 1 << 20);
    shim.task.delete(ctx(), &dreq(id, "")).await.unwrap();

    // terminal-ignored + resize-noop: plain pipes despite terminal=true.
    let id = "io3";
    let bundle = world.bundle(
        id,
        &config(
            &["/bin/sh", "-c", "test -t 1 && echo tty || echo notty"],
            faults("terminal-ignored,resize-noop"),
            true,
        ),
    );
    let out = world.fifo("o3");
    let out_drain = Drain::new(&out, true);
    let mut req = create_req(id, &bundle);
    req.terminal = true;
    req.stdout = out.display().to_string();
    shim.task.create(ctx(), &req).await.unwrap();
    shim.task
        .resize_pty(ctx(), &api::ResizePtyRequest { id: id.into(), width: 10, height: 10, ..Default::default() })
        .await
        .unwrap();
    shim.task.start(ctx(), &sreq(id)).await.unwrap();
    shim.task.wait(ctx(), &wreq(id, "")).await.unwrap();
    assert!(out_drain.wait_eof(Duration::from_secs(5)));
    assert_eq!(out_drain.text(), "notty\n");
    shim.task.delete(ctx(), &dreq(id, "")).await.unwrap();

    // closeio-noop: cat keeps running after CloseIO while the caller holds its writer.
    let id = "io4";
    let bundle = world.bundle(id, &config(&["/bin/cat"], faults("closeio-noop,null-io-fails"), false));
    let e = shim.task.create(ctx(), &create_req(id, &bundle)).await.unwrap_err();
    assert_eq!(code_of(&e), Code::UNKNOWN, "null-io-fails");
    let input = world.fifo("i4");
    let _writer = std::fs::OpenOptions::new().read(true).write(true).open(&input).unwrap();
    let mut req = create_req(id, &bundle);
    req.stdin = input.display().to_string();
    shim.task.create(ctx(), &req).await.unwrap();
    shim.task.start(ctx(), &sreq(id)).await.unwrap();
    shim.task.close_io(ctx(), &api::CloseIORequest { id: id.into(), stdin: true, ..Default::default() }).await.unwrap();
    expect_hang(shim.task.wait(ctx(), &wreq(id, ""))).await;
    shim.task.kill(ctx(), &kreq(id, "", 9, false)).await.unwrap();
    shim.task.wait(ctx(), &wreq(id, "")).await.unwrap();
    shim.task.delete(ctx(), &dreq(id, "")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn event_faults() {
    let world = World::new().await;
    let list = "events-out-of-order,event-wrong-pid,exit-event-no-exited-at,no-pause-events";
    let id = "ev1";
    let bundle = world.bundle(id, &config(&["/bin/sh", "-c", "sleep 1000"], faults(list), false));
    let shim = world.start(id, &bundle).await;
    let created = shim.task.create(ctx(), &create_req(id, &bundle)).await.unwrap();
    shim.task.start(ctx(), &sreq(id)).await.unwrap();
    shim.task.pause(ctx(), &api::PauseRequest { id: id.into(), ..Default::default() }).await.unwrap();
    shim.task.resume(ctx(), &api::ResumeRequest { id: id.into(), ..Default::default() }).await.unwrap();
    shim.task.kill(ctx(), &kreq(id, "", 9, false)).await.unwrap();
    shim.task.wait(ctx(), &wreq(id, "")).await.unwrap();
    shim.task.delete(ctx(), &dreq(id, "")).await.unwrap();
    assert!(world.wait_for_events("/tasks/delete", 1).await);
    assert_eq!(world.topics(), ["/tasks/start", "/tasks/create", "/tasks/exit", "/tasks/delete"]);
    let start: Vec<TaskStart> = world.events_of("/tasks/start");
    assert_eq!(start[0].pid, created.pid + 1);
    let exit: Vec<TaskExit> = world.events_of("/tasks/exit");
    assert_eq!(exit[0].pid, created.pid + 1);
    assert!(exit[0].exited_at.is_none());

    let id = "ev2";
    let bundle = world.bundle(id, &config(&["/bin/true"], faults("event-wrong-container-id,no-exit-event"), false));
    shim.task.create(ctx(), &create_req(id, &bundle)).await.unwrap();
    shim.task.start(ctx(), &sreq(id)).await.unwrap();
    shim.task.wait(ctx(), &wreq(id, "")).await.unwrap();
    shim.task.delete(ctx(), &dreq(id, "")).await.unwrap();
    assert!(world.wait_for_events("/tasks/delete", 2).await);
    let start: Vec<TaskStart> = world.events_of("/tasks/start");
    assert_eq!(start[1].container_id, "ev2-wrong");
    assert_eq!(world.events_of::<TaskExit>("/tasks/exit").len(), 1, "no-exit-event");
}

#[tokio::test(flavor = "multi_thread")]
async fn pause_stats_update_checkpoint_faults() {
    let world = World::new().await;
    let id = "p1";
    let list = "pause-noop,stats-garbage,update-fails,checkpoint-empty";
    let bundle = world.bundle(id, &config(&["/bin/sh", "-c", "sleep 1000"], faults(list), false));
    let shim = world.start(id, &bundle).await;
    shim.task.create(ctx(), &create_req(id, &bundle)).await.unwrap();
    shim.task.start(ctx(), &sreq(id)).await.unwrap();
    shim.task.pause(ctx(), &api::PauseRequest { id: id.into(), ..Default::default() }).await.unwrap();
    let state = shim.task.state(ctx(), &streq(id, "")).await.unwrap();
    assert_eq!(state.status.enum_value(), Ok(api::Status::RUNNING), "pause-noop");
    let stats = shim.task.stats(ctx(), &api::StatsRequest { id: id.into(), ..Default::default() }).await.unwrap();
    assert_ne!(stats.stats.type_url, "io.containerd.cgroups.v1.Metrics");
    let e = shim.task.update(ctx(), &api::UpdateTaskRequest { id: id.into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(code_of(&e), Code::UNKNOWN);
    let dir = world.dir.join("ckpt1");
    let ck = api::CheckpointTaskRequest { id: id.into(), path: dir.display().to_string(), ..Default::default() };
    shim.task.checkpoint(ctx(), &ck).await.unwrap();
    assert!(!dir.join("mock-checkpoint.json").exists());

    // Normal Checkpoint and Stats, and delete-paused-ok, on a second container.
    let id2 = "p2";
    let bundle2 = world.bundle(id2, &config(&["/bin/sh", "-c", "sleep 1000"], faults("delete-paused-ok"), false));
    let created = shim.task.create(ctx(), &create_req(id2, &bundle2)).await.unwrap();
    shim.task.start(ctx(), &sreq(id2)).await.unwrap();
    let dir = world.dir.join("ckpt2");
    let ck = api::CheckpointTaskRequest { id: id2.into(), path: dir.display().to_string(), ..Default::default() };
    shim.task.checkpoint(ctx(), &ck).await.unwrap();
    assert!(std::fs::read_to_string(dir.join("mock-checkpoint.json")).unwrap().contains("\"p2\""));
    let e = shim
        .task
        .checkpoint(ctx(), &api::CheckpointTaskRequest { id: id2.into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), Code::INVALID_ARGUMENT);
    let stats = shim.task.stats(ctx(), &api::StatsRequest { id: id2.into(), ..Default::default() }).await.unwrap();
    let metrics = containerd_shim_protos::cgroups::metrics::Metrics::parse_from_bytes(&stats.stats.value).unwrap();
    assert!(metrics.pids.current >= 1, "{}", metrics.pids.current);
    shim.task.pause(ctx(), &api::PauseRequest { id: id2.into(), ..Default::default() }).await.unwrap();
    shim.task.delete(ctx(), &dreq(id2, "")).await.expect("delete-paused-ok");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!pid_alive(created.pid as i32));
    assert!(world.wait_for_events("/tasks/checkpointed", 1).await);

    shim.task.kill(ctx(), &kreq(id, "", 9, false)).await.unwrap();
    shim.task.wait(ctx(), &wreq(id, "")).await.unwrap();
    shim.task.delete(ctx(), &dreq(id, "")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_exec_fails() {
    let world = World::new().await;
    let id = "cx";
    let bundle = world.bundle(id, &config(&["/bin/sh", "-c", "sleep 1000"], faults("concurrent-exec-fails"), false));
    let shim = world.start(id, &bundle).await;
    shim.task.create(ctx(), &create_req(id, &bundle)).await.unwrap();
    shim.task.start(ctx(), &sreq(id)).await.unwrap();
    let (req_a, req_b) = (ereq(id, "a", &["/bin/true"]), ereq(id, "b", &["/bin/true"]));
    let (a, b) = tokio::join!(shim.task.exec(ctx(), &req_a), shim.task.exec(ctx(), &req_b));
    let failures: Vec<_> = [a, b].into_iter().filter_map(Result::err).collect();
    assert_eq!(failures.len(), 1);
    assert_eq!(code_of(&failures[0]), Code::UNAVAILABLE);
    shim.task.kill(ctx(), &kreq(id, "", 9, false)).await.unwrap();
    shim.task.wait(ctx(), &wreq(id, "")).await.unwrap();
    shim.task.delete(ctx(), &dreq(id, "")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn shim_level_faults() {
    let world = World::new().await;

    // crash-on-unknown-id (from the start-time config.json)
    let bundle = world.bundle("cr", &config(&["/bin/true"], faults("crash-on-unknown-id"), false));
    let shim = world.start("cr", &bundle).await;
    assert!(shim.task.state(ctx(), &streq("nope", "")).await.is_err());
    assert!(shim.wait_gone(Duration::from_secs(5)).await, "crash-on-unknown-id");

    // exit-on-disconnect
    let bundle = world.bundle("dc", &config(&["/bin/true"], faults("exit-on-disconnect"), false));
    let shim = world.start("dc", &bundle).await;
    let pid = shim.pid;
    drop(shim.task);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while pid_alive(pid) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!pid_alive(pid), "exit-on-disconnect");

    // shutdown-with-task-exits + shutdown-leaves-socket: exits with a live task, which is left running.
    let bundle = world.bundle(
        "sd",
        &config(&["/bin/sh", "-c", "sleep 1000"], faults("shutdown-with-task-exits,shutdown-leaves-socket"), false),
    );
    let shim = world.start("sd", &bundle).await;
    let created = shim.task.create(ctx(), &create_req("sd", &bundle)).await.unwrap();
    shim.task.start(ctx(), &sreq("sd")).await.unwrap();
    let _ = shim.task.shutdown(ctx(), &api::ShutdownRequest { id: "sd".into(), ..Default::default() }).await;
    assert!(shim.wait_gone(Duration::from_secs(5)).await);
    assert!(shim.socket_path().exists(), "shutdown-leaves-socket");
    assert!(pid_alive(created.pid as i32), "shutdown-with-task-exits kills nothing");
    let (_, stdout) = world.run_delete("sd", &bundle);
    assert_eq!(api::DeleteResponse::parse_from_bytes(&stdout).unwrap().exit_status, 137);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!pid_alive(created.pid as i32), "the delete action kills it");

    // shutdown-ignored
    let bundle = world.bundle("si", &config(&["/bin/true"], faults("shutdown-ignored"), false));
    let shim = world.start("si", &bundle).await;
    shim.task.shutdown(ctx(), &api::ShutdownRequest { id: "si".into(), ..Default::default() }).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(shim.alive(), "shutdown-ignored");

    // start-new-address
    let group = json!({"io.containerd.runc.v2.group": "g", "io.shimcompat.mock.faults": "start-new-address"});
    let bundle_a = world.bundle("na", &config(&["/bin/true"], group.clone(), false));
    let bundle_b = world.bundle("nb", &config(&["/bin/true"], group, false));
    let first = world.start("na", &bundle_a).await;
    let second = world.start("nb", &bundle_b).await;
    assert_ne!(first.address, second.address);
    assert_ne!(first.pid, second.pid);
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_action_and_leak_faults() {
    let world = World::new().await;
    // delete-action-garbage
    let bundle = world.bundle("dg", &config(&["/bin/true"], faults("delete-action-garbage"), false));
    let (status, stdout) = world.run_delete("dg", &bundle);
    assert!(status.success());
    assert!(api::DeleteResponse::parse_from_bytes(&stdout).is_err());

    // delete-action-leaves-process
    let id = "dl";
    let bundle =
        world.bundle(id, &config(&["/bin/sh", "-c", "sleep 1000"], faults("delete-action-leaves-process"), false));
    let shim = world.start(id, &bundle).await;
    let created = shim.task.create(ctx(), &create_req(id, &bundle)).await.unwrap();
    shim.task.start(ctx(), &sreq(id)).await.unwrap();
    unsafe { libc::kill(shim.pid, libc::SIGKILL) };
    assert!(shim.wait_gone(Duration::from_secs(5)).await);
    let (_, stdout) = world.run_delete(id, &bundle);
    assert_eq!(api::DeleteResponse::parse_from_bytes(&stdout).unwrap().pid, created.pid);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(pid_alive(created.pid as i32), "delete-action-leaves-process");
    unsafe { libc::kill(-(created.pid as i32), libc::SIGKILL) };

    // leak-process
    let id = "lk";
    let bundle = world.bundle(id, &config(&["/bin/true"], faults("leak-process"), false));
    let shim = world.start(id, &bundle).await;
    shim.task.create(ctx(), &create_req(id, &bundle)).await.unwrap();
    shim.task.start(ctx(), &sreq(id)).await.unwrap();
    shim.task.wait(ctx(), &wreq(id, "")).await.unwrap();
    shim.task.delete(ctx(), &dreq(id, "")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let leaked: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s.rsplit(')').next()?.split_whitespace().nth(1)?.parse::<i32>().ok())
                == Some(shim.pid)
                && pid_alive(*pid)
        })
        .collect();
    for pid in &leaked {
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    assert_eq!(leaked.len(), 1, "leak-process leaves one process: {leaked:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn record_env_logs_invocations() {
    let world = World::new().await;
    let record = world.dir.join("record.txt");
    let bundle = world.bundle("rec", &config(&["/bin/true"], json!({}), false));
    let out = std::process::Command::new(BIN)
        .args(["-namespace", NS, "-address", &world.address_flag, "-id", "rec", "-bundle"])
        .arg(&bundle)
        .arg("delete")
        .current_dir(&bundle)
        .env("SHIMCOMPAT_MOCK_RECORD", &record)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = std::fs::read_to_string(&record).unwrap();
    assert!(text.starts_with("delete argv0="), "{text}");
    assert!(text.contains(" id=rec "), "{text}");
    assert!(text.contains(&format!("cwd={}", bundle.display())), "{text}");
}
