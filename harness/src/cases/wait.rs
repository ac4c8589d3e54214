//! Wait: blocks until the process exits, answers every waiter, and answers at once after the exit.
use std::time::Duration;

use containerd_shim_protos::types::task::Status;

use super::util::{created, exec_started, hold, poll_until, read_until, stamp, started, HOLD};
use super::{fail, Case, CaseError, CaseResult};
use crate::bundle::{ContainerConfig, IoSpec};
use crate::context::{deadline, Ctx};
use crate::shim::task::TaskClient;
use crate::{case, ensure};

pub fn cases() -> Vec<Case> {
    vec![
        case!("wait::concurrent_waiters_same_status", Must, [],
            breaks_with: "wait-once",
            ref: "task.proto Wait; containerd and CRI wait on one task from several places (task.Wait per client, exit monitor)",
            "four concurrent Waits on a running task all block until it is killed, then all return 137 with the same exited_at",
            concurrent_waiters_same_status),
        case!("wait::after_exit_returns_at_once", Must, [],
            breaks_with: "wait-late-hangs",
            ref: "runc shim Wait: p.Wait() returns once the exit is recorded; containerd waits again after a restart",
            "Wait issued after the task has exited returns at once with its exit status and exited_at",
            after_exit_returns_at_once),
        case!("wait::created_blocks_until_killed", Must, [],
            breaks_with: "wait-created-returns",
            ref: "CRI and ctr call task.Wait before task.Start; Wait on a created init blocks until it exits (runc shim)",
            "Wait on a created, never started task does not return until the task is killed, then reports 137",
            created_blocks_until_killed),
        case!("wait::exec_after_exit_returns_at_once", Must, ["exec"],
            breaks_with: "wait-late-hangs",
            ref: "task.proto WaitRequest.exec_id; CRI ExecSync may wait after the exec already exited",
            "Wait on an exec id after that exec exited returns at once with its own exit status",
            exec_after_exit_returns_at_once),
        case!("wait::init_wait_before_start_gets_status", Must, [],
            breaks_with: "wait-created-returns",
            ref: "ctr run and CRI StartContainer call task.Wait (Connect, then Wait) before task.Start (containerd task.go: Wait's channel is set up first); the runc shim's Wait blocks on the process's exit",
            "a Wait issued on the created init before its Start returns the init's real exit status (5) once it exits",
            init_wait_before_start_gets_status),
        case!("wait::exec_wait_before_start_gets_status", Must, ["exec"],
            breaks_with: "exec-wait-created-returns",
            ref: "CRI ExecSync and docker exec set up the exec's Wait before its Start (containerd process.Wait, then process.Start), concurrently; the runc shim's exec Wait blocks until the exec exits",
            "a Wait on a created exec issued before (and racing) its Start returns the exec's real exit status (7), not a placeholder",
            exec_wait_before_start_gets_status),
    ]
}

/// The deadline for a Wait that must answer "at once": generous for a loaded host, far below a hang.
fn at_once(ctx: &Ctx) -> Duration {
    ctx.timeout(Duration::from_secs(2))
}

fn spawn_wait(
    client: &TaskClient,
    id: &str,
    exec_id: &str,
    timeout: Duration,
) -> tokio::task::JoinHandle<Result<containerd_shim_protos::api::WaitResponse, crate::shim::task::RpcError>> {
    let client = client.clone();
    let (id, exec_id) = (id.to_string(), exec_id.to_string());
    tokio::spawn(async move { client.wait(&id, &exec_id, timeout).await })
}

async fn concurrent_waiters_same_status(ctx: &mut Ctx) -> CaseResult {
    let (shim, mut task) = started(ctx, &ContainerConfig::new(&["ready", "forever"]), IoSpec::OUT).await?;
    read_until(ctx, &mut task.io, "ready\n", "the payload starting").await?;
    let timeout = ctx.timeout(deadline::EXIT) + HOLD;
    let hold = hold(&shim, &task.id).await;
    let waiters: Vec<_> = (0..4).map(|_| spawn_wait(&shim.task, &task.id, "", timeout)).collect();
    tokio::time::sleep(hold).await;
    let early = waiters.iter().filter(|w| w.is_finished()).count();
    ensure!(early == 0, "{early} of 4 Waits returned while the task was still running");
    shim.task.kill(&task.id, "", libc::SIGKILL as u32, false).await?;
    let mut replies = Vec::new();
    for (n, waiter) in waiters.into_iter().enumerate() {
        let reply = waiter.await.map_err(|e| fail(format!("waiter {n}: {e}")))?;
        replies.push(reply.map_err(|e| fail(format!("waiter {n} of 4: {e}")))?);
    }
    for (n, reply) in replies.iter().enumerate() {
        ensure!(reply.exit_status == 137, "waiter {n} of 4 got exit_status {}, expected 137", reply.exit_status);
        ensure!(
            stamp(&reply.exited_at) == stamp(&replies[0].exited_at) && stamp(&reply.exited_at).0 > 0,
            "waiters disagree on exited_at: waiter 0 got {:?}, waiter {n} got {:?}",
            stamp(&replies[0].exited_at),
            stamp(&reply.exited_at)
        );
    }
    Ok(())
}

/// Polls State until the process reports STOPPED (so the next Wait arrives after the exit).
async fn until_stopped(ctx: &Ctx, client: &TaskClient, id: &str, exec_id: &str) -> Result<(), CaseError> {
    let deadline = tokio::time::Instant::now() + ctx.timeout(deadline::EXIT);
    loop {
        let state = client.state(id, exec_id).await?;
        if state.status.enum_value() == Ok(Status::STOPPED) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(fail(format!(
                "the process never reached STOPPED; State says {}",
                super::util::status_name(&state)
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn after_exit_returns_at_once(ctx: &mut Ctx) -> CaseResult {
    let (shim, task) = started(ctx, &ContainerConfig::new(&["exit", "6"]), IoSpec::NULL).await?;
    until_stopped(ctx, &shim.task, &task.id, "").await?;
    let state = shim.task.state(&task.id, "").await?;
    let waited = shim.task.wait(&task.id, "", at_once(ctx)).await?;
    ensure!(
        waited.exit_status == 6,
        "Wait after the exit returned exit_status {}, the payload exited 6",
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

async fn created_blocks_until_killed(ctx: &mut Ctx) -> CaseResult {
    let (shim, task) = created(ctx, &ContainerConfig::new(&["forever"]), IoSpec::NULL).await?;
    let hold = hold(&shim, &task.id).await;
    let waiter = spawn_wait(&shim.task, &task.id, "", ctx.timeout(deadline::EXIT) + HOLD);
    let finished_early = poll_until(hold, || waiter.is_finished()).await;
    if finished_early {
        let reply = waiter.await.map_err(|e| fail(e.to_string()))?;
        return Err(fail(format!(
            "Wait on a created, never started task returned before anything killed it: {reply:?}"
        )));
    }
    shim.task.kill(&task.id, "", libc::SIGKILL as u32, false).await?;
    let reply = waiter.await.map_err(|e| fail(e.to_string()))??;
    ensure!(
        reply.exit_status == 137,
        "Wait on the killed created task returned exit_status {}, expected 137",
        reply.exit_status
    );
    Ok(())
}

async fn exec_after_exit_returns_at_once(ctx: &mut Ctx) -> CaseResult {
    let (shim, task) = started(ctx, &ContainerConfig::new(&["forever"]), IoSpec::NULL).await?;
    exec_started(ctx, &shim, &task.id, "quick", &["exit", "4"], IoSpec::NULL).await?;
    until_stopped(ctx, &shim.task, &task.id, "quick").await?;
    let waited = shim.task.wait(&task.id, "quick", at_once(ctx)).await?;
    ensure!(
        waited.exit_status == 4,
        "Wait on the exited exec returned exit_status {}, it exited 4",
        waited.exit_status
    );
    ensure!(stamp(&waited.exited_at).0 > 0, "Wait on the exited exec returned no exited_at");
    Ok(())
}

/// containerd's order for a process it starts (ctr run, CRI, docker exec): the lookup its Wait makes (Connect for
/// the init, State for an exec), then the Wait, in flight before the Start is sent. "In flight" is what the shim
/// itself reports, not a timer: a State sent on the same connection after the Wait was written answers only once
/// the shim has read the Wait, and only then does the Start go out.
async fn wait_issued_before_start(
    ctx: &Ctx,
    shim: &crate::shim::instance::Shim,
    id: &str,
    exec_id: &str,
) -> Result<containerd_shim_protos::api::WaitResponse, CaseError> {
    if exec_id.is_empty() {
        let connect = shim.task.connect_rpc(id).await?;
        shim.record_connect(&connect);
    } else {
        shim.task.state(id, exec_id).await?;
    }
    // join! polls the Wait first, so its request is queued on the connection before the State's.
    let wait = shim.task.wait(id, exec_id, ctx.timeout(deadline::EXIT));
    let start_after = async {
        shim.task.state(id, exec_id).await?;
        ctx.start_process(shim, id, exec_id).await
    };
    let (waited, started) = tokio::join!(wait, start_after);
    started?;
    Ok(waited?)
}

async fn init_wait_before_start_gets_status(ctx: &mut Ctx) -> CaseResult {
    let (shim, task) = created(ctx, &ContainerConfig::new(&["exit", "5"]), IoSpec::NULL).await?;
    let waited = wait_issued_before_start(ctx, &shim, &task.id, "").await?;
    ensure!(
        waited.exit_status == 5,
        "Wait issued before Start returned exit_status {}; the init exited 5",
        waited.exit_status
    );
    Ok(())
}

async fn exec_wait_before_start_gets_status(ctx: &mut Ctx) -> CaseResult {
    let (shim, task) = started(ctx, &ContainerConfig::new(&["forever"]), IoSpec::NULL).await?;
    let io = super::util::exec_io(&shim, "early", IoSpec::NULL)?;
    let request = ctx.exec_request(&task.id, "early", &["exit", "7"], false, &io);
    shim.task.exec(&request).await?;
    let waited = wait_issued_before_start(ctx, &shim, &task.id, "early").await?;
    ensure!(
        waited.exit_status == 7,
        "Wait on the exec issued before its Start returned exit_status {}; the exec exited 7",
        waited.exit_status
    );
    Ok(())
}
