//! Reconnect: containerd restarts and connects again to the shims it finds; the shim must have kept serving.
use containerd_shim_protos::types::task::Status;

use super::cli::{join_group, GROUP_ANNOTATION};
use super::util::{
    drop_connections, exec_started, expect_status, hold, is_process, poll_until, read_until, stamp, started,
};
use super::{fail, Case, CaseError, CaseResult};
use crate::bundle::{ContainerConfig, IoSpec};
use crate::context::{deadline, Ctx, Task};
use crate::profile::ReloadFrom;
use crate::shim::instance::Shim;
use crate::shim::task::TaskClient;
use crate::{case, case_per_line, ensure};

pub fn cases() -> Vec<Case> {
    vec![
        case_per_line!("reconnect::address_file_names_the_socket", Must, [],
            breaks_with: "no-address-file",
            ref: "containerd 1.x reloads a shim after a restart from <bundle>/address, which the shim writes at start (runtime/v2/shim.go loadShim; the runc shim's manager writes it)",
            lines: [
                (V2_0, May, "containerd 2.x writes bootstrap.json itself after start and reloads from it; the shim's address file is only migrated when bootstrap.json is missing"),
                (V2x, May, "containerd 2.x writes bootstrap.json itself after start and reloads from it; the shim's address file is only migrated when bootstrap.json is missing"),
            ],
            "after `start`, <bundle>/address holds the address `start` printed, readable as this containerd reads it on restart",
            address_file_names_the_socket),
        case_per_line!("reconnect::task_intact", Must, [],
            breaks_with: "exit-on-disconnect",
            ref: "runtime-v2.md: shims outlive containerd; on restart containerd 1.6 reads <bundle>/address, reconnects and calls Connect within 5 s (runtime/v2/shim.go loadShim)",
            lines: [
                (V1_7, Must, "containerd 1.7 reloads from <bundle>/address, Connect within 5 s, then Pids: a failing or empty Pids drops the shim as leaked (runtime/v2/manager.go loadShims)"),
                (V2_0, Must, "containerd 2.x reloads from bootstrap.json, Connect within 5 s, then Pids (core/runtime/v2/shim_load.go)"),
                (V2x, Must, "containerd 2.x reloads from bootstrap.json, Connect within 5 s, then Pids (core/runtime/v2/shim_load.go)"),
            ],
            "after the client's connection is dropped, a new connection to the same address finds the shim and its running task unchanged",
            task_intact),
        case!("reconnect::every_task_intact", Should, ["grouping", "exec"],
            breaks_with: "reconnect-forgets-tasks",
            ref: "containerd reloads every shim after a restart (1.x from <bundle>/address, 2.x from bootstrap.json) and goes on with every task and exec it knew; CRI groups a pod's containers in one shim (the io.kubernetes.cri.sandbox-id annotation), so one socket serves them all",
            "a grouped shim with two containers and a running exec, after every connection is dropped and one made again: the first container and its exec RUNNING with their pids, the second container (which exited meanwhile) STOPPED with its status",
            every_task_intact),
        case!("reconnect::exit_while_disconnected", Must, [],
            breaks_with: "exit-on-disconnect",
            ref: "containerd reconnecting after a restart learns of exits it missed through State and Wait (the events went to the old containerd)",
            "a task that exits while no client is connected is reported STOPPED with its status by State and Wait on a new connection",
            exit_while_disconnected),
    ]
}

async fn address_file_names_the_socket(ctx: &mut Ctx) -> CaseResult {
    let profile = ctx.target.profile;
    if profile.reload_from != ReloadFrom::AddressFile {
        return Err(CaseError::Skip(format!(
            "containerd {} reloads from bootstrap.json, which it writes itself: the shim's address file is not read",
            profile.line
        )));
    }
    let (shim, _task) = started(ctx, &ContainerConfig::new(&["forever"]), IoSpec::NULL).await?;
    let file = shim.bundle_dir().join("address");
    let written = std::fs::read(&file).map_err(|e| {
        fail(format!(
            "{} was not written ({e}): containerd {} could not reload this shim after a restart",
            file.display(),
            profile.line
        ))
    })?;
    let reply = crate::shim::launch::parse_start_output(&written, profile).map_err(|e| {
        fail(format!("{} does not hold an address containerd {} can dial: {e}", file.display(), profile.line))
    })?;
    ensure!(
        reply.address == shim.reply.address,
        "{} names {:?}, but `start` printed {:?}",
        file.display(),
        reply.address,
        shim.reply.address
    );
    Ok(())
}

/// Drops the harness's connection to the shim (as a restarting containerd does).
/// Drops every connection to the shim; returns how long `reconnect` then watches for the shim exiting (see
/// util::hold, measured while still connected).
async fn disconnect(shim: &Shim) -> Result<std::time::Duration, CaseError> {
    let hold = hold(shim, shim.id()).await;
    let dropped = drop_connections(&shim.reply.address);
    ensure!(dropped > 0, "harness: found no connection to {} to drop", shim.reply.address);
    Ok(hold)
}

/// Opens the payload's `line` gate (a line on its stdin, which the shim copies with no client connected) so that it
/// exits now, and waits for its stdout to close, which the shim does once the process is gone. A shim that never
/// closes it costs the exit deadline, no more: the caller then polls State for the exit as before.
async fn exit_now(ctx: &Ctx, io: &mut crate::bundle::ProcessIo) -> CaseResult {
    let stdin = io.stdin.as_mut().ok_or_else(|| fail("harness bug: no stdin fifo"))?;
    stdin.write(b"go\n", ctx.timeout(deadline::RPC)).await.map_err(fail)?;
    if let Some(stdout) = io.stdout.as_mut() {
        stdout.read_to_eof(ctx.timeout(deadline::EXIT)).await;
    }
    Ok(())
}

/// After `disconnect`: checks the shim stays up, and connects again the way the profile's containerd reloads a shim
/// after a restart: from `<bundle>/address`, which the shim wrote (1.x), or from what containerd recorded at start
/// (2.x `bootstrap.json`); then Connect within the load timeout, and (1.7+) Pids.
async fn reconnect(ctx: &Ctx, shim: &Shim, hold: std::time::Duration) -> Result<TaskClient, CaseError> {
    let pid = shim.shim_pid();
    let died = poll_until(hold, || !is_process(pid)).await;
    ensure!(
        !died,
        "the shim (pid {pid}) exited when its client disconnected; containerd could not reconnect after a restart"
    );
    let profile = ctx.target.profile;
    let (address, api) = match profile.reload_from {
        ReloadFrom::BootstrapJson => (shim.reply.address.clone(), shim.reply.api),
        ReloadFrom::AddressFile => {
            let file = shim.bundle_dir().join("address");
            let written = std::fs::read(&file).map_err(|e| {
                fail(format!(
                    "containerd {} reloads a shim after a restart from {} (runtime/v2/shim.go loadShim), which the shim \
                     did not write ({e}): the running task would be lost",
                    profile.line,
                    file.display()
                ))
            })?;
            let reply = crate::shim::launch::parse_start_output(&written, profile).map_err(|e| {
                fail(format!("{} does not hold an address containerd {} can dial: {e}", file.display(), profile.line))
            })?;
            (reply.address, reply.api)
        }
    };
    let client = TaskClient::connect(&address, api, &ctx.env.namespace, ctx.timeout(deadline::RPC), profile)
        .await
        .map_err(|e| fail(format!("connecting again to {address}: {e}")))?;
    let connect = client.connect_on_reload(shim.id()).await?;
    ensure!(
        connect.shim_pid == pid,
        "Connect on the new connection says shim_pid {}, before it was {pid}",
        connect.shim_pid
    );
    Ok(client)
}

/// containerd 1.7+ checks a reloaded shim's task with Pids and treats it as leaked when that fails or is empty.
async fn pids_after_reload(ctx: &Ctx, client: &TaskClient, task: &Task) -> CaseResult {
    if !ctx.target.profile.reload_checks_pids {
        return Ok(());
    }
    let pids = client.pids_on_reload(&task.id).await.map_err(|e| {
        fail(format!(
            "containerd {} lists a reloaded task's pids and drops the shim as leaked when that fails: {e}",
            ctx.target.profile.line
        ))
    })?;
    ensure!(
        !pids.processes.is_empty(),
        "containerd {} drops a reloaded shim as leaked when Pids lists no process; Pids of the running task is empty",
        ctx.target.profile.line
    );
    Ok(())
}

/// What teardown would do, over the new connection (teardown's own client is the dropped one).
async fn finish(ctx: &Ctx, shim: &Shim, client: &TaskClient, task: &Task) -> CaseResult {
    let _ = client.kill(&task.id, "", libc::SIGKILL as u32, true).await;
    client.wait(&task.id, "", ctx.timeout(deadline::EXIT)).await?;
    client.delete(&task.id, "").await?;
    shim.note_deleted(&task.id);
    let _ = client.shutdown_after_delete(shim.id()).await;
    Ok(())
}

async fn task_intact(ctx: &mut Ctx) -> CaseResult {
    let (shim, mut task) = started(ctx, &ContainerConfig::new(&["ready", "forever"]), IoSpec::OUT).await?;
    read_until(ctx, &mut task.io, "ready\n", "the payload starting").await?;
    let hold = disconnect(&shim).await?;
    let client = reconnect(ctx, &shim, hold).await?;
    pids_after_reload(ctx, &client, &task).await?;
    let connect = client.connect_rpc(&task.id).await?;
    ensure!(
        connect.task_pid == task.pid,
        "Connect on the new connection says task_pid {}, the init is {}",
        connect.task_pid,
        task.pid
    );
    let state = client.state(&task.id, "").await?;
    expect_status(&state, Status::RUNNING, "the task seen through the new connection")?;
    ensure!(state.pid == task.pid, "State through the new connection says pid {}, the init is {}", state.pid, task.pid);
    ensure!(is_process(task.pid), "the init pid {} is gone after the reconnect", task.pid);
    finish(ctx, &shim, &client, &task).await
}

async fn exit_while_disconnected(ctx: &mut Ctx) -> CaseResult {
    // The container ends on its own while nobody listens (its exit event goes to a containerd that is gone). It
    // is not signalled from outside: that would need its pid to be a host process, which it is not under gVisor.
    let config = ContainerConfig::new(&["ready", "line", "exit", "9"]);
    let (shim, mut task) = started(ctx, &config, IoSpec::ALL).await?;
    read_until(ctx, &mut task.io, "ready\n", "the payload starting").await?;
    let hold = disconnect(&shim).await?;
    exit_now(ctx, &mut task.io).await?;
    let client = reconnect(ctx, &shim, hold).await?;
    let deadline = tokio::time::Instant::now() + ctx.timeout(deadline::EXIT);
    let state = loop {
        let state = client.state(&task.id, "").await?;
        if state.status.enum_value() == Ok(Status::STOPPED) || tokio::time::Instant::now() >= deadline {
            break state;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    let checked = async {
        expect_status(&state, Status::STOPPED, "a task that exited while no client was connected")?;
        ensure!(state.exit_status == 9, "State says exit_status {} for an init that exited 9", state.exit_status);
        let waited = client.wait(&task.id, "", ctx.timeout(deadline::RPC)).await?;
        ensure!(
            waited.exit_status == 9,
            "Wait on the new connection says exit_status {}, expected 9",
            waited.exit_status
        );
        ensure!(
            stamp(&waited.exited_at) == stamp(&state.exited_at),
            "Wait's exited_at {:?} differs from State's {:?}",
            stamp(&waited.exited_at),
            stamp(&state.exited_at)
        );
        Ok(())
    }
    .await;
    // Clean up over the new connection whatever the verdict (teardown's own connection is the dropped one).
    let finished = finish(ctx, &shim, &client, &task).await;
    checked.and(finished)
}

async fn every_task_intact(ctx: &mut Ctx) -> CaseResult {
    let group = format!("group-{}", ctx.new_id());
    let shim = ctx.launch(&ContainerConfig::new(&["ready", "forever"]).annotation(GROUP_ANNOTATION, &group)).await?;
    let mut first = ctx.create(&shim, IoSpec::OUT).await?;
    ctx.start_process(&shim, &first.id, "").await?;
    read_until(ctx, &mut first.io, "ready\n", "the first container starting").await?;
    let (exec_pid, mut exec_io) =
        exec_started(ctx, &shim, &first.id, "kept", &["ready", "forever"], IoSpec::OUT).await?;
    read_until(ctx, &mut exec_io, "ready\n", "the exec starting").await?;
    let (second_id, second_dir) = join_group(ctx, &shim, &group, &["ready", "line", "exit", "9"]).await?;
    let mut second = ctx.create_in(&shim, &second_id, &second_dir, IoSpec::ALL).await?;
    ctx.start_process(&shim, &second.id, "").await?;
    read_until(ctx, &mut second.io, "ready\n", "the second container starting").await?;
    let hold = disconnect(&shim).await?;
    // The second container exits while nobody is connected.
    exit_now(ctx, &mut second.io).await?;
    let client = reconnect(ctx, &shim, hold).await?;
    let checked = async {
        pids_after_reload(ctx, &client, &first).await?;
        let state = client.state(&first.id, "").await?;
        expect_status(&state, Status::RUNNING, "the group's first container through the new connection")?;
        ensure!(
            state.pid == first.pid,
            "State of the first container says pid {}, its init is {}",
            state.pid,
            first.pid
        );
        let exec = client
            .state(&first.id, "kept")
            .await
            .map_err(|e| fail(format!("State of the running exec \"kept\" through the new connection: {e}")))?;
        expect_status(&exec, Status::RUNNING, "the running exec through the new connection")?;
        ensure!(exec.pid == exec_pid, "State of the exec says pid {}, its Start said {exec_pid}", exec.pid);
        let deadline = tokio::time::Instant::now() + ctx.timeout(deadline::EXIT);
        let stopped = loop {
            let state = client.state(&second.id, "").await.map_err(|e| {
                fail(format!("State of the group's second container {} through the new connection: {e}", second.id))
            })?;
            if state.status.enum_value() == Ok(Status::STOPPED) || tokio::time::Instant::now() >= deadline {
                break state;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        };
        expect_status(
            &stopped,
            Status::STOPPED,
            "the group's second container, which exited while no client was connected",
        )?;
        ensure!(
            stopped.exit_status == 9,
            "State of the second container says exit_status {}, its init exited 9",
            stopped.exit_status
        );
        let waited = client.wait(&second.id, "", ctx.timeout(deadline::RPC)).await?;
        ensure!(
            waited.exit_status == 9,
            "Wait on the second container says exit_status {}, expected 9",
            waited.exit_status
        );
        Ok(())
    }
    .await;
    // Clean up over the new connection whatever the verdict: the second container, then the first (and its exec).
    let _ = client.kill(&second.id, "", libc::SIGKILL as u32, true).await;
    let _ = client.wait(&second.id, "", ctx.timeout(deadline::EXIT)).await;
    if client.delete(&second.id, "").await.is_ok() {
        shim.note_deleted(&second.id);
    }
    let finished = finish(ctx, &shim, &client, &first).await;
    checked.and(finished)
}
