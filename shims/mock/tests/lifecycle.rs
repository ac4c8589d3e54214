//! The mock's normal behaviour, end to end through the real binary.
mod common;

use std::time::Duration;

use common::*;
use containerd_shim_protos::api;
use containerd_shim_protos::events::task::{TaskCreate, TaskDelete, TaskExit, TaskStart};
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::oci::ProcessDetails;
use containerd_shim_protos::ttrpc::Code;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn run_to_exit_with_events_and_shutdown() {
    let world = World::new().await;
    let id = "life1";
    let bundle = world.bundle(id, &config(&["/bin/sh", "-c", "echo hi; echo oops >&2; exit 3"], json!({}), false));
    let stdout = world.fifo("out");
    let stderr = world.fifo("err");
    let out = Drain::new(&stdout, true);
    let err = Drain::new(&stderr, true);
    let shim = world.start(id, &bundle).await;

    let mut req = create_req(id, &bundle);
    req.stdout = stdout.display().to_string();
    req.stderr = stderr.display().to_string();
    let created = shim.task.create(ctx(), &req).await.expect("Create");
    assert!(created.pid > 0);
    assert!(pid_alive(created.pid as i32), "created task must have a live pid");

    let state = shim.task.state(ctx(), &api::StateRequest { id: id.into(), ..Default::default() }).await.unwrap();
    assert_eq!(state.status.enum_value(), Ok(api::Status::CREATED));
    assert_eq!(state.pid, created.pid);
    assert_eq!(state.bundle, bundle.display().to_string());
    assert!(out.text().is_empty(), "payload must not run before Start");

    let started = shim.task.start(ctx(), &api::StartRequest { id: id.into(), ..Default::default() }).await.unwrap();
    assert_eq!(started.pid, created.pid);
    let waited = shim.task.wait(ctx(), &api::WaitRequest { id: id.into(), ..Default::default() }).await.unwrap();
    assert_eq!(waited.exit_status, 3);
    assert!(waited.exited_at.is_some());
    assert!(out.wait_eof(Duration::from_secs(5)), "stdout fifo must see EOF after exit");
    assert!(err.wait_eof(Duration::from_secs(5)));
    assert_eq!(out.text(), "hi\n");
    assert_eq!(err.text(), "oops\n");

    let state = shim.task.state(ctx(), &api::StateRequest { id: id.into(), ..Default::default() }).await.unwrap();
    assert_eq!(state.status.enum_value(), Ok(api::Status::STOPPED));
    assert_eq!(state.exit_status, 3);
    assert!(state.exited_at.is_some());

    // Kill of an exited process is NotFound; Delete returns the exit; a second Delete is NotFound.
    let e =
        shim.task.kill(ctx(), &api::KillRequest { id: id.into(), signal: 9, ..Default::default() }).await.unwrap_err();
    assert_eq!(code_of(&e), Code::NOT_FOUND);
    let deleted = shim.task.delete(ctx(), &api::DeleteRequest { id: id.into(), ..Default::default() }).await.unwrap();
    assert_eq!((deleted.pid, deleted.exit_status), (created.pid, 3));
    let e = shim.task.delete(ctx(), &api::DeleteRequest { id: id.into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(code_of(&e), Code::NOT_FOUND);

    assert!(world.wait_for_events("/tasks/delete", 1).await);
    assert_eq!(world.topics(), ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"]);
    let create: Vec<TaskCreate> = world.events_of("/tasks/create");
    assert_eq!((create[0].container_id.as_str(), create[0].pid), (id, created.pid));
    assert_eq!(create[0].io.stdout, stdout.display().to_string());
    let start: Vec<TaskStart> = world.events_of("/tasks/start");
    assert_eq!(start[0].pid, created.pid);
    let exit: Vec<TaskExit> = world.events_of("/tasks/exit");
    assert_eq!((exit[0].id.as_str(), exit[0].pid, exit[0].exit_status), (id, created.pid, 3));
    assert!(exit[0].exited_at.is_some());
    let delete: Vec<TaskDelete> = world.events_of("/tasks/delete");
    assert_eq!(delete[0].exit_status, 3);

    // Unimplemented-free API: an unknown id is NotFound everywhere.
    let e = shim.task.state(ctx(), &api::StateRequest { id: "nope".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(code_of(&e), Code::NOT_FOUND);

    let socket = shim.socket_path();
    assert!(socket.exists());
    let _ = shim.task.shutdown(ctx(), &api::ShutdownRequest { id: id.into(), ..Default::default() }).await;
    assert!(shim.wait_gone(Duration::from_secs(5)).await, "shim must exit after Shutdown with no containers");
    assert!(!socket.exists(), "socket must be removed on exit");
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_stdin_closeio_pids_kill_all() {
    let world = World::new().await;
    let id = "exec1";
    // The init forks a child into its group, then waits.
    let bundle = world.bundle(id, &config(&["/bin/sh", "-c", "sleep 1000 & wait"], json!({}), false));
    let shim = world.start(id, &bundle).await;
    let created = shim.task.create(ctx(), &create_req(id, &bundle)).await.expect("Create");
    shim.task.start(ctx(), &api::StartRequest { id: id.into(), ..Default::default() }).await.unwrap();

    let stdin = world.fifo("in");
    let stdout = world.fifo("xout");
    let out = Drain::new(&stdout, true);
    // Keep a writer open on stdin the whole time: CloseIO must still end `cat`.
    let mut writer = std::fs::OpenOptions::new().read(true).write(true).open(&stdin).unwrap();
    let exec = api::ExecProcessRequest {
        id: id.into(),
        exec_id: "cat1".into(),
        stdin: stdin.display().to_string(),
        stdout: stdout.display().to_string(),
        spec: Some(exec_spec(&["cat"])).into(),
        ..Default::default()
    };
    shim.task.exec(ctx(), &exec).await.expect("Exec");
    let e = shim.task.exec(ctx(), &exec).await.unwrap_err();
    assert_eq!(code_of(&e), Code::ALREADY_EXISTS);
    let exec_pid = shim
        .task
        .start(ctx(), &api::StartRequest { id: id.into(), exec_id: "cat1".into(), ..Default::default() })
        .await
        .unwrap()
        .pid;
    use std::io::Write;
    writer.write_all(b"through stdin\n").unwrap();

    // The init forks its child asynchronously: give it a moment to appear.
    let mut pids = api::PidsResponse::default();
    for _ in 0..100 {
        pids = shim.task.pids(ctx(), &api::PidsRequest { id: id.into(), ..Default::default() }).await.unwrap();
        if pids.processes.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let listed: Vec<u32> = pids.processes.iter().map(|p| p.pid).collect();
    assert!(listed.contains(&created.pid) && listed.contains(&exec_pid), "{listed:?}");
    assert!(listed.len() >= 3, "the init's forked child is part of the container: {listed:?}");
    let exec_info = pids.processes.iter().find(|p| p.pid == exec_pid).unwrap();
    assert_eq!(exec_info.info.type_url, "containerd.runc.v1.ProcessDetails");
    assert_eq!(ProcessDetails::parse_from_bytes(&exec_info.info.value).unwrap().exec_id, "cat1");

    let state = shim
        .task
        .state(ctx(), &api::StateRequest { id: id.into(), exec_id: "cat1".into(), ..Default::default() })
        .await
        .unwrap();
    assert_eq!((state.id.as_str(), state.pid), ("cat1", exec_pid));

    shim.task
        .close_io(
            ctx(),
            &api::CloseIORequest { id: id.into(), exec_id: "cat1".into(), stdin: true, ..Default::default() },
        )
        .await
        .unwrap();
    let waited = shim
        .task
        .wait(ctx(), &api::WaitRequest { id: id.into(), exec_id: "cat1".into(), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(waited.exit_status, 0);
    assert!(out.wait_eof(Duration::from_secs(5)));
    assert_eq!(out.text(), "through stdin\n");
    let deleted = shim
        .task
        .delete(ctx(), &api::DeleteRequest { id: id.into(), exec_id: "cat1".into(), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(deleted.pid, exec_pid);

    let members: Vec<u32> = listed.iter().copied().filter(|p| *p != exec_pid).collect();
    shim.task
        .kill(ctx(), &api::KillRequest { id: id.into(), signal: 9, all: true, ..Default::default() })
        .await
        .unwrap();
    let waited = shim.task.wait(ctx(), &api::WaitRequest { id: id.into(), ..Default::default() }).await.unwrap();
    assert_eq!(waited.exit_status, 137);
    tokio::time::sleep(Duration::from_millis(200)).await;
    for pid in members {
        assert!(!pid_alive(pid as i32), "kill all left {pid} alive");
    }
    shim.task.delete(ctx(), &api::DeleteRequest { id: id.into(), ..Default::default() }).await.unwrap();
    assert!(world.wait_for_events("/tasks/delete", 1).await);
    assert_eq!(
        world.topics(),
        [
            "/tasks/create",
            "/tasks/start",
            "/tasks/exec-added",
            "/tasks/exec-started",
            "/tasks/exit",
            "/tasks/exit",
            "/tasks/delete"
        ]
    );
    drop(writer);
}

#[tokio::test(flavor = "multi_thread")]
async fn created_task_kill_delete_and_pause() {
    let world = World::new().await;
    let id = "cr1";
    let bundle = world.bundle(id, &config(&["/bin/sh", "-c", "sleep 1000"], json!({}), false));
    let shim = world.start(id, &bundle).await;
    let created = shim.task.create(ctx(), &create_req(id, &bundle)).await.unwrap();
    // Pause of a created task is refused; Wait on it blocks until it is killed.
    let e = shim.task.pause(ctx(), &api::PauseRequest { id: id.into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(code_of(&e), Code::FAILED_PRECONDITION);
    let waiter = {
        let task = shim.task.clone();
        tokio::spawn(
            async move { task.wait(ctx(), &api::WaitRequest { id: "cr1".into(), ..Default::default() }).await },
        )
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished());
    shim.task.kill(ctx(), &api::KillRequest { id: id.into(), signal: 15, ..Default::default() }).await.unwrap();
    assert_eq!(waiter.await.unwrap().unwrap().exit_status, 143);
    let deleted = shim.task.delete(ctx(), &api::DeleteRequest { id: id.into(), ..Default::default() }).await.unwrap();
    assert_eq!((deleted.pid, deleted.exit_status), (created.pid, 143));

    // A second container in the same shim: pause, refuse delete, resume, kill, delete.
    let id2 = "cr2";
    let bundle2 = world.bundle(id2, &config(&["/bin/sh", "-c", "sleep 1000"], json!({}), false));
    shim.task.create(ctx(), &create_req(id2, &bundle2)).await.unwrap();
    shim.task.start(ctx(), &api::StartRequest { id: id2.into(), ..Default::default() }).await.unwrap();
    shim.task.pause(ctx(), &api::PauseRequest { id: id2.into(), ..Default::default() }).await.unwrap();
    let state = shim.task.state(ctx(), &api::StateRequest { id: id2.into(), ..Default::default() }).await.unwrap();
    assert_eq!(state.status.enum_value(), Ok(api::Status::PAUSED));
    let e = shim.task.delete(ctx(), &api::DeleteRequest { id: id2.into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(code_of(&e), Code::FAILED_PRECONDITION);
    shim.task.resume(ctx(), &api::ResumeRequest { id: id2.into(), ..Default::default() }).await.unwrap();
    let stats = shim.task.stats(ctx(), &api::StatsRequest { id: id2.into(), ..Default::default() }).await.unwrap();
    assert_eq!(stats.stats.type_url, "io.containerd.cgroups.v1.Metrics");
    // Shutdown with a container left is OK and the shim stays.
    shim.task.shutdown(ctx(), &api::ShutdownRequest { id: id.into(), ..Default::default() }).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(shim.alive());
    shim.task.kill(ctx(), &api::KillRequest { id: id2.into(), signal: 9, ..Default::default() }).await.unwrap();
    shim.task.wait(ctx(), &api::WaitRequest { id: id2.into(), ..Default::default() }).await.unwrap();
    shim.task.delete(ctx(), &api::DeleteRequest { id: id2.into(), ..Default::default() }).await.unwrap();
    assert!(world.wait_for_events("/tasks/resumed", 1).await);
    assert!(world.topics().contains(&"/tasks/paused".to_string()));
}

#[tokio::test(flavor = "multi_thread")]
async fn terminal_gets_a_pty_and_resizes() {
    let world = World::new().await;
    let id = "tty1";
    let script = "read line; stty size; test -t 1 && echo is-a-tty; exit 0";
    let bundle = world.bundle(id, &config(&["/bin/sh", "-c", script], json!({}), true));
    let stdin = world.fifo("tin");
    let stdout = world.fifo("tout");
    let out = Drain::new(&stdout, true);
    let mut writer = std::fs::OpenOptions::new().read(true).write(true).open(&stdin).unwrap();
    let shim = world.start(id, &bundle).await;
    let mut req = create_req(id, &bundle);
    req.terminal = true;
    req.stdin = stdin.display().to_string();
    req.stdout = stdout.display().to_string();
    shim.task.create(ctx(), &req).await.unwrap();
    shim.task
        .resize_pty(ctx(), &api::ResizePtyRequest { id: id.into(), width: 77, height: 22, ..Default::default() })
        .await
        .unwrap();
    shim.task.start(ctx(), &api::StartRequest { id: id.into(), ..Default::default() }).await.unwrap();
    use std::io::Write;
    writer.write_all(b"go\n").unwrap();
    let waited = shim.task.wait(ctx(), &api::WaitRequest { id: id.into(), ..Default::default() }).await.unwrap();
    assert_eq!(waited.exit_status, 0);
    assert!(out.wait_eof(Duration::from_secs(5)), "terminal output must end with EOF");
    let text = out.text();
    assert!(text.contains("22 77"), "{text:?}");
    assert!(text.contains("is-a-tty"), "{text:?}");
    shim.task.delete(ctx(), &api::DeleteRequest { id: id.into(), ..Default::default() }).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn start_groups_and_fails_cleanly() {
    let world = World::new().await;
    let group = json!({"io.containerd.runc.v2.group": "pod1"});
    let bundle_a = world.bundle("ga", &config(&["/bin/true"], group.clone(), false));
    let bundle_b = world.bundle("gb", &config(&["/bin/true"], group, false));
    let shim = world.start("ga", &bundle_a).await;
    let (status, stdout, stderr) = world.run_start("gb", &bundle_b);
    assert!(status.success(), "{stderr}");
    let second = containerd_shim_protos::bootstrap_api::BootstrapResult::parse_from_bytes(&stdout).unwrap();
    assert_eq!(second.address, shim.address, "same group, same shim");

    let empty = world.dir.join("b").join("noconfig");
    std::fs::create_dir_all(&empty).unwrap();
    let (status, stdout, stderr) = world.run_start("noconfig", &empty);
    assert!(!status.success());
    assert!(stdout.is_empty());
    assert!(stderr.contains("config.json"), "{stderr}");

    let version = std::process::Command::new(BIN).arg("-v").output().unwrap();
    assert!(version.status.success());
    assert!(String::from_utf8_lossy(&version.stdout).contains("version"));
    let version =
        std::process::Command::new(BIN).arg("-v").env("SHIMCOMPAT_MOCK_FAULTS", "version-fails").output().unwrap();
    assert!(!version.status.success(), "version-fails");
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_action_kills_what_a_dead_shim_left() {
    let world = World::new().await;
    let id = "dead1";
    let bundle = world.bundle(id, &config(&["/bin/sh", "-c", "sleep 1000 & wait"], json!({}), false));
    let shim = world.start(id, &bundle).await;
    let created = shim.task.create(ctx(), &create_req(id, &bundle)).await.unwrap();
    shim.task.start(ctx(), &api::StartRequest { id: id.into(), ..Default::default() }).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let group: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s.rsplit(')').next()?.split_whitespace().nth(2)?.parse::<u32>().ok())
                == Some(created.pid)
        })
        .collect();
    assert!(group.len() >= 2, "{group:?}");
    unsafe { libc::kill(shim.pid, libc::SIGKILL) };
    assert!(shim.wait_gone(Duration::from_secs(5)).await);
    let (status, stdout) = world.run_delete(id, &bundle);
    assert!(status.success());
    let response = api::DeleteResponse::parse_from_bytes(&stdout).expect("DeleteResponse on stdout");
    assert_eq!((response.pid, response.exit_status), (created.pid, 137));
    assert!(response.exited_at.is_some());
    tokio::time::sleep(Duration::from_millis(200)).await;
    for pid in group {
        assert!(!pid_alive(pid), "{pid} survived the delete action");
    }
}
