//! Kill: signals reach the task and its exit status says which signal ended it.
use containerd_shim_protos::ttrpc::Code;
use containerd_shim_protos::types::task::Status;

use super::util::{created, expect_status, read_until, run_to_exit, started, wait_exit};
use super::{expect_code, Case, CaseResult};
use crate::bundle::{ContainerConfig, IoSpec};
use crate::context::{deadline, Ctx};
use crate::{case, ensure};

pub fn cases() -> Vec<Case> {
    vec![
        case!("kill::sigkill_gives_137", Must, [],
            breaks_with: "kill-noop",
            ref: "runtime-v2.md Kill; exit status of a signalled process is 128+signal (runc shim reaper)",
            "Kill SIGKILL ends a running task and Wait reports 137",
            sigkill_gives_137),
        case!("kill::sigterm_gives_143", Must, [],
            breaks_with: "kill-noop",
            ref: "runtime-v2.md Kill; `docker stop`/CRI StopContainer send SIGTERM first",
            "Kill SIGTERM reaches a task whose init handles SIGTERM (a pid-namespace init ignores unhandled SIGTERM) and Wait reports 143",
            sigterm_gives_143),
        case!("kill::trapped_signal_own_status", Must, [],
            breaks_with: "wrong-exit-status",
            ref: "runtime-v2.md Kill; the exit status is the process's own when it handles the signal (runc shim reaper)",
            "a signal the payload traps (SIGUSR1, handler exits 42) makes Wait report 42, not 128+10",
            trapped_signal_own_status),
        case!("kill::all_reaches_children", Must, [],
            breaks_with: "kill-all-ignored",
            ref: "task.proto KillRequest.all (runc kill --all); containerd sets it when the pid namespace is shared or on cleanup",
            "Kill with all=true signals every process of the container: the init's children die of SIGTERM although the init ignores it",
            all_reaches_children),
        case!("kill::created_task", Must, [],
            breaks_with: "kill-created-noop",
            ref: "runc shim createdState.Kill; containerd kills a created task whose start was abandoned, and waits for it",
            "Kill SIGKILL of a created, never started task ends it: Wait returns 137 and State says STOPPED",
            created_task),
        case!("kill::exited_task_not_found", Should, [],
            breaks_with: "kill-exited-ok",
            ref: "runc shim: \"process already finished\" is NotFound; CRI StopContainer treats NotFound as already stopped",
            "Kill of a task that has already exited gives NotFound",
            exited_task_not_found),
        case!("kill::unknown_exec_not_found", Should, ["exec"],
            breaks_with: "kill-unknown-exec-ok",
            ref: "runc shim Container.Process: \"process does not exist <id>\" (NotFound)",
            "Kill naming an exec id the task never had gives NotFound, and the task is untouched",
            unknown_exec_not_found),
    ]
}

async fn kill_and_expect(ctx: &mut Ctx, steps: &[&str], signal: i32, expected: u32) -> CaseResult {
    let (shim, mut task) = started(ctx, &ContainerConfig::new(steps), IoSpec::OUT).await?;
    // Signal only once the payload is running its steps (handlers installed).
    let reader = task.io.stdout.as_mut().ok_or_else(|| super::fail("harness bug: no stdout"))?;
    let (seen, ready) = reader.read_until(b"ready\n", ctx.timeout(crate::context::deadline::EXIT)).await;
    ensure!(ready, "payload never printed \"ready\"; stdout: {:?}", String::from_utf8_lossy(&seen));
    shim.task.kill(&task.id, "", signal as u32, false).await?;
    let waited = wait_exit(ctx, &shim, &task.id, "").await?;
    ensure!(
        waited.exit_status == expected,
        "after Kill with signal {signal}, Wait returned exit_status {}, expected {expected} (128+{signal})",
        waited.exit_status
    );
    Ok(())
}

async fn sigkill_gives_137(ctx: &mut Ctx) -> CaseResult {
    kill_and_expect(ctx, &["ready", "forever"], libc::SIGKILL, 137).await
}

async fn sigterm_gives_143(ctx: &mut Ctx) -> CaseResult {
    // The handler exits 128+15, as tini or a shell `trap` does for a namespace init.
    kill_and_expect(ctx, &["trap", "15", "143", "ready", "forever"], libc::SIGTERM, 143).await
}

async fn trapped_signal_own_status(ctx: &mut Ctx) -> CaseResult {
    kill_and_expect(ctx, &["trap", "10", "42", "ready", "forever"], libc::SIGUSR1, 42).await
}

async fn all_reaches_children(ctx: &mut Ctx) -> CaseResult {
    // The children are forked before the init ignores SIGTERM, so only they die of it; each says so on stdout,
    // which works even where the container's processes are invisible from the host (gVisor).
    let config = ContainerConfig::new(&["spawn-report", "2", "ignore", "15", "ready", "forever"]);
    let (shim, mut task) = started(ctx, &config, IoSpec::OUT).await?;
    read_until(ctx, &mut task.io, "ready\n", "the payload forking its children").await?;
    shim.task.kill(&task.id, "", libc::SIGTERM as u32, true).await?;
    // Nothing else prints after "ready", so both reports arrive back to back.
    let reader = task.io.stdout.as_mut().ok_or_else(|| super::fail("harness bug: no stdout"))?;
    let (seen, both) = reader.read_until(b"child-term\nchild-term\n", ctx.timeout(deadline::EXIT)).await;
    let text = String::from_utf8_lossy(&seen).into_owned();
    ensure!(
        both,
        "after Kill SIGTERM with all=true, {} of the init's 2 children reported SIGTERM; stdout: {text:?}",
        text.matches("child-term\n").count()
    );
    let state = shim.task.state(&task.id, "").await?;
    expect_status(&state, Status::RUNNING, "the init (ignoring SIGTERM) after Kill all=true")
}

async fn created_task(ctx: &mut Ctx) -> CaseResult {
    let (shim, task) = created(ctx, &ContainerConfig::new(&["forever"]), IoSpec::NULL).await?;
    shim.task.kill(&task.id, "", libc::SIGKILL as u32, false).await?;
    let waited = wait_exit(ctx, &shim, &task.id, "").await?;
    ensure!(
        waited.exit_status == 137,
        "Kill SIGKILL of a created task: Wait returned exit_status {}, expected 137",
        waited.exit_status
    );
    let state = shim.task.state(&task.id, "").await?;
    expect_status(&state, Status::STOPPED, "a created task after Kill SIGKILL")
}

async fn exited_task_not_found(ctx: &mut Ctx) -> CaseResult {
    let (shim, task, _) = run_to_exit(ctx, &["exit", "0"]).await?;
    expect_code(
        shim.task.kill(&task.id, "", libc::SIGKILL as u32, false).await,
        Code::NOT_FOUND,
        "Kill of an exited task",
    )
}

async fn unknown_exec_not_found(ctx: &mut Ctx) -> CaseResult {
    let (shim, task) = started(ctx, &ContainerConfig::new(&["forever"]), IoSpec::NULL).await?;
    expect_code(
        shim.task.kill(&task.id, "never-added", libc::SIGKILL as u32, false).await,
        Code::NOT_FOUND,
        "Kill of an unknown exec id",
    )?;
    let state = shim.task.state(&task.id, "").await?;
    expect_status(&state, Status::RUNNING, "the task after Kill of an unknown exec")
}
