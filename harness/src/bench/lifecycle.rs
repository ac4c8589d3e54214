//! One container's lifecycle through a shim, as containerd drives it, with every step timed.
//!
//! Per-shim form (what `ctr run` does without grouping): `start` -> dial -> Create (+ Connect, which containerd
//! asks right after Create for the task pid) -> Start (+ State) -> first byte on stdout -> Exec + Start of a second
//! process and its exit -> Kill SIGKILL of the init with a Wait already pending -> Delete -> Shutdown -> the shim
//! process gone. Grouped form (CRI's sandbox grouping): the same from `start` on, except that `start` answers with
//! the group's running shim and no Shutdown follows: the shim lives on for the next container.
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::stats::Recorder;
use crate::bundle::{ContainerConfig, IoSpec};
use crate::cases::{fail, CaseError};
use crate::context::{deadline, Ctx, Task};
use crate::shim::instance::Shim;

/// The init: says it is up, then runs until killed.
const INIT: &[&str] = &["ready", "forever"];
pub const EXEC_ID: &str = "bench-exec";

/// Operation names, in lifecycle order (the report keeps this order).
pub mod op {
    pub const START: &str = "start";
    pub const DIAL: &str = "dial";
    pub const CREATE: &str = "create";
    pub const CONNECT: &str = "connect";
    pub const START_RPC: &str = "start_rpc";
    pub const FIRST_OUTPUT: &str = "first_output";
    pub const EXEC_START: &str = "exec_start";
    pub const EXEC_EXIT: &str = "exec_exit";
    pub const KILL: &str = "kill";
    pub const KILL_TO_EXIT: &str = "kill_to_exit";
    pub const DELETE: &str = "delete";
    pub const SHUTDOWN: &str = "shutdown_to_exit";
    pub const LIFECYCLE: &str = "lifecycle";
    pub const RUN_TO_EXIT: &str = "run_to_exit";
    pub const RELEASE: &str = "release";
    /// What each measures, for the report's legend.
    pub const LEGEND: &[(&str, &str)] = &[
        (START, "`<shim> start` spawned until its address was read (the process exited)"),
        (DIAL, "dial of that address until the ttrpc connection is ready"),
        (CREATE, "Create RPC"),
        (CONNECT, "Connect RPC right after Create (containerd asks it for the task pid)"),
        (START_RPC, "Start RPC of the init"),
        (FIRST_OUTPUT, "Start sent until the init's first line arrived on the stdout fifo"),
        (EXEC_START, "Exec + Start of a second process (with the State lookups containerd makes)"),
        (EXEC_EXIT, "Wait on that exec until it returned (the exec exits at once)"),
        (KILL, "Kill SIGKILL RPC of the init"),
        (KILL_TO_EXIT, "Kill sent until the pending Wait returned"),
        (DELETE, "Delete RPC of the init"),
        (SHUTDOWN, "Shutdown sent until the shim process was gone"),
        (LIFECYCLE, "the whole lifecycle, from `start` to the shim gone (grouped: to Delete)"),
        (
            RELEASE,
            "grouped only, after Delete: Shutdown (the shim stays), the `delete` action for the bundle where the \
             profile runs it, the rootfs unmounted and the bundle removed, as containerd's shimTask.delete",
        ),
        (
            RUN_TO_EXIT,
            "what `ctr run --rm` asks of a shim, from `start` to the shim gone: Create, Start with a Wait, Delete, \
             Shutdown; the payload exits at once (the references' ratio is against this)",
        ),
    ];
}

fn timed<T>(recorder: &mut Recorder, op: &str, began: Instant, value: T) -> T {
    recorder.record(op, began.elapsed());
    value
}

/// One lifecycle in its own shim, recorded into `recorder`. The shim is gone when it returns Ok (teardown follows
/// in the caller either way).
pub async fn per_shim(ctx: &mut Ctx, recorder: &mut Recorder, exec: bool) -> Result<(), CaseError> {
    let whole = Instant::now();
    let shim = ctx.launch(&ContainerConfig::new(INIT)).await?;
    recorder.record(op::START, shim.timings.start);
    recorder.record(op::DIAL, shim.timings.dial);
    let task = ctx.create(&shim, IoSpec::OUT).await?;
    run_container(ctx, &shim, task, recorder, exec).await?;
    let began = Instant::now();
    shutdown(&shim).await?;
    let pid = shim.shim_pid();
    if pid > 0 && !crate::process::wait_gone(pid, ctx.timeout(deadline::TEARDOWN)).await {
        return Err(fail(format!("the shim (pid {pid}) was still running {:?} after Shutdown", deadline::TEARDOWN)));
    }
    recorder.record(op::SHUTDOWN, began.elapsed());
    recorder.record(op::LIFECYCLE, whole.elapsed());
    Ok(())
}

/// The Shutdown containerd sends after the last Delete (shimTask.Shutdown): a connection the shim closes before
/// its reply reaches the client (ttrpc's ErrClosed; "early eof" here) counts as done, as it does for containerd;
/// whether the shim then exits is checked by the caller.
async fn shutdown(shim: &crate::shim::instance::Shim) -> Result<(), CaseError> {
    match shim.task.shutdown_after_delete(shim.id()).await {
        Ok(_) | Err(crate::shim::task::RpcError::Transport { .. }) => Ok(()),
        Err(other) => Err(other.into()),
    }
}

/// A group's running shim, for grouped lifecycles.
pub struct Group {
    pub name: String,
    pub shim: Arc<Shim>,
}

/// Launches the shim of a new group and starts its own container, which runs until the group is torn down (as a
/// CRI sandbox's pause container does); the bench's containers join it.
pub async fn group(ctx: &mut Ctx) -> Result<Group, CaseError> {
    let name = format!("bench-{}", ctx.new_id());
    let config = ContainerConfig::new(INIT).annotation(crate::cases::cli::GROUP_ANNOTATION, &name);
    let shim = ctx.launch(&config).await?;
    let mut task = ctx.create(&shim, IoSpec::OUT).await?;
    ctx.start_process(&shim, &task.id, "").await?;
    crate::cases::util::read_until(ctx, &mut task.io, "ready\n", "the group's own container starting").await?;
    Ok(Group { name, shim })
}

/// One lifecycle of a new container in the group's shim (its `start` must answer with the group's address).
pub async fn grouped(ctx: &mut Ctx, group: &Group, recorder: &mut Recorder, exec: bool) -> Result<(), CaseError> {
    let whole = Instant::now();
    let began = Instant::now();
    let (id, dir) = crate::cases::cli::join_group(ctx, &group.shim, &group.name, INIT).await?;
    recorder.record(op::START, began.elapsed());
    let task = ctx.create_in(&group.shim, &id, &dir, IoSpec::OUT).await?;
    run_container(ctx, &group.shim, task, recorder, exec).await?;
    recorder.record(op::LIFECYCLE, whole.elapsed());
    let began = Instant::now();
    let left = group.shim.release_task(&id, ctx.target.profile.delete_action_on_disconnect).await;
    recorder.record(op::RELEASE, began.elapsed());
    if !left.is_empty() {
        return Err(fail(format!(
            "after the grouped container's Delete, containerd could not clean up: {}",
            left.join("; ")
        )));
    }
    Ok(())
}

/// From a created init to its Delete.
async fn run_container(
    ctx: &mut Ctx,
    shim: &Shim,
    mut task: Task,
    recorder: &mut Recorder,
    exec: bool,
) -> Result<(), CaseError> {
    recorder.record(op::CREATE, task.create_rpc);
    recorder.record(op::CONNECT, task.connect_rpc);
    let id = task.id.clone();
    let began = Instant::now();
    shim.task.start(&id, "").await?;
    recorder.record(op::START_RPC, began.elapsed());
    crate::cases::util::read_until(ctx, &mut task.io, "ready\n", "the init starting").await?;
    recorder.record(op::FIRST_OUTPUT, began.elapsed());
    if exec {
        let began = Instant::now();
        let (_pid, _io) =
            crate::cases::util::exec_started(ctx, shim, &id, EXEC_ID, &["exit", "0"], IoSpec::NULL).await?;
        recorder.record(op::EXEC_START, began.elapsed());
        let began = Instant::now();
        let waited = ctx.wait_process(shim, &id, EXEC_ID).await?;
        timed(recorder, op::EXEC_EXIT, began, ());
        if waited.exit_status != 0 {
            return Err(fail(format!("the exec exited {}, expected 0", waited.exit_status)));
        }
        shim.task.delete(&id, EXEC_ID).await?;
    }
    // The Wait is pending before the Kill is sent, as containerd's client waits before it kills.
    let wait = ctx.wait_process(shim, &id, "");
    let kill = async {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let began = Instant::now();
        let result = shim.task.kill(&id, "", libc::SIGKILL as u32, false).await;
        (began, began.elapsed(), result)
    };
    let (waited, (kill_began, kill_took, killed)) = tokio::join!(wait, kill);
    killed?;
    recorder.record(op::KILL, kill_took);
    let waited = waited?;
    recorder.record(op::KILL_TO_EXIT, kill_began.elapsed());
    if waited.exit_status != 128 + libc::SIGKILL as u32 {
        return Err(fail(format!("the init exited {} after SIGKILL, expected 137", waited.exit_status)));
    }
    let began = Instant::now();
    shim.task.delete(&id, "").await?;
    recorder.record(op::DELETE, began.elapsed());
    shim.note_deleted(&id);
    Ok(())
}

/// `ctr run --rm`'s sequence straight at the shim: launch, Create (+ Connect), Start raced by the Wait, Delete,
/// Shutdown, the shim gone; the payload exits 0 at once.
pub async fn run_to_exit(ctx: &mut Ctx, recorder: &mut Recorder) -> Result<(), CaseError> {
    let whole = Instant::now();
    let (shim, task, waited) = crate::cases::util::run_to_exit(ctx, &["exit", "0"]).await?;
    if waited.exit_status != 0 {
        return Err(fail(format!("the payload exited {}, expected 0", waited.exit_status)));
    }
    shim.task.delete(&task.id, "").await?;
    shim.note_deleted(&task.id);
    shutdown(&shim).await?;
    let pid = shim.shim_pid();
    if pid > 0 && !crate::process::wait_gone(pid, ctx.timeout(deadline::TEARDOWN)).await {
        return Err(fail(format!("the shim (pid {pid}) was still running {:?} after Shutdown", deadline::TEARDOWN)));
    }
    recorder.record(op::RUN_TO_EXIT, whole.elapsed());
    Ok(())
}
