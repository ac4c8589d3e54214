//! Shutdown: the shim exits once it has no tasks left.
use containerd_shim_protos::types::task::Status;

use super::util::{expect_status, hold, is_process, poll_until, run_to_exit, started};
use super::{Case, CaseError, CaseResult};
use crate::bundle::{ContainerConfig, IoSpec};
use crate::context::{deadline, Ctx};
use crate::process::wait_gone;
use crate::shim::launch;
use crate::{case, ensure};

pub fn cases() -> Vec<Case> {
    vec![
        case!("shutdown::after_delete_exits", Must, [],
            breaks_with: "shutdown-ignored",
            ref: "runtime-v2.md Shutdown; containerd sends Delete then Shutdown and waits (shim.go shimTask.delete)",
            "Shutdown after the last Delete makes the shim process exit",
            after_delete_exits),
        case!("shutdown::live_task_keeps_serving", Must, ["multi-task"],
            breaks_with: "shutdown-with-task-exits",
            ref: "runc shim Shutdown: \"return out if the shim is still servicing containers\"; containerd sends Shutdown after each Delete, also to grouped shims",
            "Shutdown while a task is still running leaves the shim up and serving, and the task running",
            live_task_keeps_serving),
        case!("shutdown::socket_removed", Should, [],
            breaks_with: "shutdown-leaves-socket",
            ref: "runc shim: shutdown callback shim.RemoveSocket(address); a stale socket file is left in /run/containerd/s otherwise",
            "a shim that exits after Delete and Shutdown removes its socket file",
            socket_removed),
    ]
}

async fn after_delete_exits(ctx: &mut Ctx) -> CaseResult {
    let (shim, task, _) = run_to_exit(ctx, &["exit", "0"]).await?;
    shim.task.delete(&task.id, "").await?;
    shim.note_deleted(&task.id);
    // The reply may race with the connection closing; containerd tolerates ErrClosed here.
    let _ = shim.task.shutdown(&task.id, false).await;
    let pid = shim.shim_pid();
    let limit = ctx.timeout(deadline::TEARDOWN + std::time::Duration::from_secs(2));
    ensure!(wait_gone(pid, limit).await, "shim pid {pid} still running {limit:?} after Shutdown with no tasks left");
    Ok(())
}

async fn live_task_keeps_serving(ctx: &mut Ctx) -> CaseResult {
    let (shim, task) = started(ctx, &ContainerConfig::new(&["forever"]), IoSpec::NULL).await?;
    let hold = hold(&shim, &task.id).await;
    // An error reply is acceptable (the shim may refuse); exiting is not.
    let reply = shim.task.shutdown(&task.id, false).await;
    let pid = shim.shim_pid();
    let exited = poll_until(hold, || !is_process(pid)).await;
    let reply = match &reply {
        Ok(empty) => format!("answered {}", super::brief(empty)),
        Err(e) => format!("answered {e}"),
    };
    ensure!(!exited, "the shim (pid {pid}) exited after Shutdown ({reply}) although its task was still running");
    let state = shim.task.state(&task.id, "").await?;
    expect_status(&state, Status::RUNNING, "the task after a Shutdown that must not take effect")?;
    ensure!(is_process(task.pid), "the init pid {} is gone after Shutdown", task.pid);
    Ok(())
}

async fn socket_removed(ctx: &mut Ctx) -> CaseResult {
    let (shim, task, _) = run_to_exit(ctx, &["exit", "0"]).await?;
    let Some(socket) = launch::socket_path(&shim.reply.address) else {
        return Err(CaseError::Skip(format!(
            "the shim listens on an abstract socket ({}): there is no file to remove",
            shim.reply.address
        )));
    };
    ensure!(socket.exists(), "harness: the shim's socket {} does not exist while it serves", socket.display());
    shim.task.delete(&task.id, "").await?;
    shim.note_deleted(&task.id);
    let _ = shim.task.shutdown(&task.id, false).await;
    let pid = shim.shim_pid();
    let limit = ctx.timeout(deadline::TEARDOWN);
    ensure!(wait_gone(pid, limit).await, "shim pid {pid} still running {limit:?} after Shutdown with no tasks left");
    ensure!(!socket.exists(), "the shim exited but left its socket file {}", socket.display());
    Ok(())
}
