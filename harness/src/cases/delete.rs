//! Delete: what it returns for a stopped task, and what it refuses.
use containerd_shim_protos::ttrpc::Code;
use containerd_shim_protos::types::task::Status;

use super::util::{expect_status, run_to_exit, started};
use super::{expect_code, expect_refused, Case, CaseResult};
use crate::bundle::{ContainerConfig, IoSpec};
use crate::context::Ctx;
use crate::{case, ensure};

pub fn cases() -> Vec<Case> {
    vec![
        case!("delete::stopped_returns_pid_and_status", Must, [],
            breaks_with: "delete-wrong-status",
            ref: "task.proto DeleteResponse pid/exit_status/exited_at; containerd publishes them in /tasks/delete",
            "Delete of a stopped task returns its pid, exit status and exited_at",
            stopped_returns_pid_and_status),
        case!("delete::running_refused", Must, [],
            breaks_with: "delete-running-succeeds",
            ref: "runc shim Delete: \"cannot delete a running process\"; containerd kills before deleting",
            "Delete of a running task is refused and the task keeps running",
            running_refused),
        case!("delete::unknown_id_not_found", Must, ["multi-task"],
            breaks_with: "delete-unknown-ok",
            ref: "errdefs NotFound (code 5) for an unknown container; containerd ignores NotFound on cleanup",
            "Delete of an id the shim never created gives NotFound",
            unknown_id_not_found),
        case!("delete::second_delete_not_found", Must, [],
            breaks_with: "delete-unknown-ok",
            ref: "runc shim: a deleted container is gone (\"container not created\", NotFound)",
            "A second Delete of the same task gives NotFound",
            second_delete_not_found),
    ]
}

async fn stopped_returns_pid_and_status(ctx: &mut Ctx) -> CaseResult {
    let (shim, task, waited) = run_to_exit(ctx, &["exit", "5"]).await?;
    let deleted = shim.task.delete(&task.id, "").await?;
    shim.note_deleted(&task.id);
    ensure!(deleted.pid == task.pid, "Delete returned pid {}, the init pid is {}", deleted.pid, task.pid);
    ensure!(deleted.exit_status == 5, "payload exited 5; Delete returned exit_status {}", deleted.exit_status);
    ensure!(
        deleted.exited_at.seconds == waited.exited_at.seconds,
        "Delete's exited_at ({}) differs from Wait's ({})",
        deleted.exited_at.seconds,
        waited.exited_at.seconds
    );
    Ok(())
}

async fn running_refused(ctx: &mut Ctx) -> CaseResult {
    let (shim, task) = started(ctx, &ContainerConfig::new(&["forever"]), IoSpec::NULL).await?;
    expect_refused(shim.task.delete(&task.id, "").await, "Delete of a running task")?;
    let state = shim.task.state(&task.id, "").await?;
    expect_status(&state, Status::RUNNING, "after the refused Delete")?;
    ensure!(crate::process::pid_alive(task.pid), "the init pid {} is gone after a refused Delete", task.pid);
    Ok(())
}

async fn unknown_id_not_found(ctx: &mut Ctx) -> CaseResult {
    let shim = ctx.launch(&ContainerConfig::new(&["exit", "0"])).await?;
    let _task = ctx.create(&shim, IoSpec::NULL).await?;
    expect_code(shim.task.delete("no-such-container", "").await, Code::NOT_FOUND, "Delete of an unknown id")
}

async fn second_delete_not_found(ctx: &mut Ctx) -> CaseResult {
    let (shim, task, _) = run_to_exit(ctx, &["exit", "0"]).await?;
    shim.task.delete(&task.id, "").await?;
    shim.note_deleted(&task.id);
    expect_code(shim.task.delete(&task.id, "").await, Code::NOT_FOUND, "second Delete of the same task")
}
