//! Steps many cases share: launch-create-start, wait for an exit, read a process's output.
use std::sync::Arc;

use containerd_shim_protos::api::{StateResponse, WaitResponse};
use containerd_shim_protos::types::task::Status;

use super::{fail, CaseError};
use crate::bundle::{ContainerConfig, IoSpec};
use crate::context::{deadline, Ctx, Task};
use crate::shim::instance::Shim;

/// Launches a shim for `config` and creates its container.
pub async fn created(ctx: &mut Ctx, config: &ContainerConfig, io: IoSpec) -> Result<(Arc<Shim>, Task), CaseError> {
    let shim = ctx.launch(config).await?;
    let task = ctx.create(&shim, io).await?;
    Ok((shim, task))
}

/// Launches, creates and starts; checks nothing beyond the calls succeeding.
pub async fn started(ctx: &mut Ctx, config: &ContainerConfig, io: IoSpec) -> Result<(Arc<Shim>, Task), CaseError> {
    let (shim, task) = created(ctx, config, io).await?;
    shim.task.start(&task.id, "").await?;
    Ok((shim, task))
}

/// Waits for a process to exit, with the exit deadline.
pub async fn wait_exit(ctx: &Ctx, shim: &Shim, id: &str, exec_id: &str) -> Result<WaitResponse, CaseError> {
    Ok(shim.task.wait(id, exec_id, ctx.timeout(deadline::EXIT)).await?)
}

/// Runs the payload with `steps` to completion and returns the Wait reply.
pub async fn run_to_exit(ctx: &mut Ctx, steps: &[&str]) -> Result<(Arc<Shim>, Task, WaitResponse), CaseError> {
    let (shim, task) = started(ctx, &ContainerConfig::new(steps), IoSpec::NULL).await?;
    let waited = wait_exit(ctx, &shim, &task.id, "").await?;
    Ok((shim, task, waited))
}

pub fn status_name(state: &StateResponse) -> String {
    match state.status.enum_value() {
        Ok(status) => format!("{status:?}"),
        Err(raw) => format!("unknown status {raw}"),
    }
}

pub fn expect_status(state: &StateResponse, want: Status, what: &str) -> Result<(), CaseError> {
    if state.status.enum_value() == Ok(want) {
        Ok(())
    } else {
        Err(fail(format!("{what}: expected status {want:?}, State says {}", status_name(state))))
    }
}

/// Reads stdout of a process until EOF.
pub async fn stdout_of(ctx: &Ctx, task: &mut Task) -> Result<String, CaseError> {
    let timeout = ctx.timeout(deadline::EXIT);
    let reader = task.io.stdout.as_mut().ok_or_else(|| fail("harness bug: no stdout fifo"))?;
    let (bytes, eof) = reader.read_to_eof(timeout).await;
    if !eof {
        return Err(fail(format!(
            "stdout fifo not closed within {timeout:?} after the process exited; got {} bytes: {:?}",
            bytes.len(),
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
        )));
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// True when `pid` names a live process (not a thread, not a zombie).
pub fn is_process(pid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return false };
    let tgid = status.lines().find_map(|l| l.strip_prefix("Tgid:")).map(|v| v.trim().parse::<u32>().ok());
    tgid == Some(Some(pid)) && crate::shim::instance::pid_alive(pid)
}
