//! Shutdown: the shim exits once it has no tasks left.
use super::util::run_to_exit;
use super::{Case, CaseResult};
use crate::context::{deadline, Ctx};
use crate::shim::instance::wait_gone;
use crate::{case, ensure};

pub fn cases() -> Vec<Case> {
    vec![case!("shutdown::after_delete_exits", Must, [],
        breaks_with: "shutdown-ignored",
        ref: "runtime-v2.md Shutdown; containerd sends Delete then Shutdown and waits (shim.go shimTask.delete)",
        "Shutdown after the last Delete makes the shim process exit",
        after_delete_exits)]
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
