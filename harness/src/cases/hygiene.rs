//! Hygiene: once containerd has deleted a task and shut its shim down, nothing of either may remain on the host:
//! no process the shim spawned, no socket, no mount, no cgroup, no runtime state. The runner checks this after
//! every case; this case drives the whole sequence itself, with the processes a real workload leaves (children of
//! the init, an exec), and checks before the runner's teardown could mask anything.
use std::time::Duration;

use super::util::{exec_started, read_until, started, wait_exit};
use super::{Case, CaseResult};
use crate::bundle::{ContainerConfig, IoSpec};
use crate::context::{deadline, Ctx};
use crate::process::wait_gone;
use crate::{case, ensure};

pub fn cases() -> Vec<Case> {
    vec![case!("hygiene::nothing_left_after_shutdown", Must, ["exec"],
        breaks_with: "leak-process",
        ref: "runtime-v2.md Shutdown/Delete; containerd removes the bundle (bundle.Delete unmounts <bundle>/rootfs first) and expects the shim and its processes gone (shim.go shimTask.delete, cleanupAfterDeadShim)",
        "after Kill, Delete and Shutdown of a task with child processes and an exec, the shim exits and leaves no process, socket, mount, cgroup or runtime state",
        nothing_left_after_shutdown)]
}

async fn nothing_left_after_shutdown(ctx: &mut Ctx) -> CaseResult {
    let config = ContainerConfig::new(&["spawn", "2", "ready", "forever"]);
    let (shim, mut task) = started(ctx, &config, IoSpec::OUT).await?;
    read_until(ctx, &mut task.io, "ready\n", "the payload forking its children").await?;
    let (_exec_pid, _exec_io) = exec_started(ctx, &shim, &task.id, "worker", &["forever"], IoSpec::NULL).await?;
    // What containerd does to stop and remove a task, then its shim.
    shim.task.kill(&task.id, "", libc::SIGKILL as u32, true).await?;
    wait_exit(ctx, &shim, &task.id, "worker").await?;
    wait_exit(ctx, &shim, &task.id, "").await?;
    shim.task.delete(&task.id, "worker").await?;
    shim.task.delete(&task.id, "").await?;
    shim.note_deleted(&task.id);
    let _ = shim.task.shutdown(&task.id, false).await;
    let pid = shim.shim_pid();
    let limit = ctx.timeout(deadline::TEARDOWN + Duration::from_secs(2));
    ensure!(wait_gone(pid, limit).await, "the shim (pid {pid}) is still running {limit:?} after Delete and Shutdown");
    // A runtime may still be finishing its own cleanup (processes reaped, cgroups removed): give it a moment, then
    // look once (the check removes what it finds, so it must not be repeated).
    let marker = ctx.marker.clone();
    super::util::poll_until(Duration::from_secs(1), || crate::process::marked_processes(&marker).is_empty()).await;
    // containerd then removes the bundle, unmounting <bundle>/rootfs itself first (a rootfs the shim left mounted
    // is rootfs::unmounted_by_delete's finding, not a leak containerd keeps).
    crate::bundle::unmount_rootfs_as_containerd(&shim.bundle_dir());
    let leaked = ctx.probe.check();
    ensure!(
        leaked.is_empty(),
        "left behind after Delete, Shutdown and containerd's unmount of <bundle>/rootfs:\n  {}",
        leaked.join("\n  ")
    );
    Ok(())
}
