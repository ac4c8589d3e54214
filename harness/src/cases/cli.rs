//! The shim binary's own commands, as containerd runs them: `start` (grouping: the same group reuses the running
//! shim), `delete` (cleanup after a shim that died), and `start` on a bundle it cannot use.
use std::sync::Arc;
use std::time::Duration;

use containerd_shim_protos::api::DeleteResponse;

use super::util::{carries_marker, is_process, poll_until, started, wait_exit};
use super::{fail, Case, CaseError, CaseResult};
use crate::bundle::{ContainerConfig, IoSpec};
use crate::context::{deadline, Ctx, Task};
use crate::process::{kill_pid, processes_in, wait_gone};
use crate::shim::events::EventSink;
use crate::shim::instance::Shim;
use crate::shim::launch::{self, LaunchError};
use crate::{case, ensure};

/// How a pod's containers reach one shim: containerd's CRI puts the sandbox id in every container's spec under this
/// annotation, and shims group by it (the runc shims after their own `io.containerd.runc.v2.group`, runwasi's shim
/// layer only by this one, Kata by it too). CRI's annotation rather than runc's, so every grouping shim is tested.
pub(crate) const GROUP_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";

pub fn cases() -> Vec<Case> {
    vec![
        case!("cli::start_reply_readable_by_this_containerd", Must, ["cli"],
            breaks_with: "start-reply-json-v3",
            ref: "1.6: strings.TrimSpace(CombinedOutput) dialled as the address (runtime/v2/binary.go Start); 1.7: JSON up to version 2, else \"unsupported shim version\" (runtime/v2/shim.go parseStartResponse); 2.x: protobuf, JSON up to 3, plain",
            "`start` (argv, environment and stdin as this containerd sends them) prints a reply this containerd reads, and the Task service it names answers Connect after Create",
            start_reply_readable_by_this_containerd),
        case!("cli::start_same_group_same_address", Should, ["cli", "grouping"],
            breaks_with: "start-new-address",
            ref: "runc shim manager StartShim: a live socket for the group is reused (`start` prints its address); CRI groups a pod's containers this way",
            "a second `start` for another container of the same group prints the running shim's address, and that shim then runs the second container",
            start_same_group_same_address),
        case!("cli::delete_after_sigkill_answers", Must, ["cli"],
            breaks_with: "delete-action-garbage",
            ref: "runtime-v2.md `delete`; containerd cleanupAfterDeadShim publishes /tasks/exit from the DeleteResponse the `delete` action prints",
            "after the shim was SIGKILLed, `<shim> -bundle B delete` prints a DeleteResponse: exit status 137, an exited_at, and the init pid (or 0)",
            delete_after_sigkill_answers),
        case!("cli::delete_after_sigkill_cleans_up", Must, ["cli"],
            breaks_with: "delete-action-leaves-process",
            ref: "runtime-v2.md `delete`: cleans up the container of a dead shim (runc shim: runc delete --force); nothing else would",
            "after the shim was SIGKILLed, the `delete` action leaves no container process running",
            delete_after_sigkill_cleans_up),
        case!("cli::start_broken_bundle_fails_cleanly", Should, ["cli", "grouping"],
            breaks_with: "start-accepts-broken-bundle",
            ref: "runc shim `start` reads config.json (readSpec) and fails without spawning a server; containerd reports the start error",
            "`start` in a bundle whose config.json does not parse exits non-zero within the deadline, prints no address and leaves no process",
            start_broken_bundle_fails_cleanly),
        case!("cli::delete_action_after_shutdown", Must, ["cli"],
            breaks_with: "delete-action-fails-when-gone",
            ref: "containerd 1.6-2.x run the `delete` action whenever a shim's connection closes, also after a normal Delete and Shutdown (runtime/v2 shim onClose -> cleanupAfterDeadShim, 5 s timeout); the runc shim's Cleanup answers even when runc has nothing left to delete",
            "after a normal Delete and Shutdown, `<shim> -id ID -bundle B delete` exits 0 within containerd's 5 s and prints a valid DeleteResponse (or nothing)",
            delete_action_after_shutdown),
        case!("cli::delete_action_spares_group", Must, ["cli", "grouping"],
            breaks_with: "delete-action-kills-group",
            ref: "containerd runs the `delete` action for a grouped container when its connection closes after its Delete, while the shim still serves the group (runtime/v2 cleanupAfterDeadShim per task); the runc shim's Cleanup touches only that container (runc delete --force ID)",
            "in a grouped shim, the `delete` action for a deleted container leaves the group's other running container and its shim serving",
            delete_action_spares_group),
    ]
}

async fn start_reply_readable_by_this_containerd(ctx: &mut Ctx) -> CaseResult {
    // ctx.launch runs `start` exactly as the profile's containerd does and reads the reply as it does; a reply that
    // containerd would not understand fails there with containerd's own words.
    let (shim, task) = super::util::created(ctx, &ContainerConfig::new(&["exit", "0"]), IoSpec::NULL).await?;
    ensure!(
        task.connect_pid > 0,
        "the shim answered Connect after Create with task_pid 0 over {}",
        shim.reply.api.service()
    );
    Ok(())
}

async fn start_same_group_same_address(ctx: &mut Ctx) -> CaseResult {
    let group = format!("group-{}", ctx.new_id());
    let shim = ctx.launch(&ContainerConfig::new(&["forever"]).annotation(GROUP_ANNOTATION, &group)).await?;
    let first = ctx.create(&shim, IoSpec::NULL).await?;
    shim.task.start(&first.id, "").await?;
    let (second_id, second_dir) = join_group(ctx, &shim, &group, &["exit", "5"]).await?;
    let second = ctx.create_in(&shim, &second_id, &second_dir, IoSpec::NULL).await?;
    shim.task.start(&second.id, "").await?;
    let waited = wait_exit(ctx, &shim, &second.id, "").await?;
    ensure!(waited.exit_status == 5, "the grouped container exited 5; Wait says {}", waited.exit_status);
    let state = shim.task.state(&first.id, "").await?;
    super::util::expect_status(
        &state,
        containerd_shim_protos::types::task::Status::RUNNING,
        "the group's first container",
    )
}

/// Runs `start` for a new container of `group` (as CRI does for a pod's next container) and requires the group's
/// running shim to answer; returns the new container's id and bundle (owned by `shim` from here).
/// Starts the shim for one more bundle in `group`; the group's shim must answer with its own address.
pub(crate) async fn join_group(
    ctx: &mut Ctx,
    shim: &Shim,
    group: &str,
    steps: &[&str],
) -> Result<(String, std::path::PathBuf), CaseError> {
    let second_id = ctx.new_id();
    let bundle = ctx.bundle(&second_id, &ContainerConfig::new(steps).annotation(GROUP_ANNOTATION, group))?;
    ctx.track(&bundle.dir, &second_id);
    let second_dir = bundle.dir.clone();
    // The shim owns the bundle from here: teardown removes it and stops anything running in it.
    shim.bundles.lock().unwrap_or_else(|p| p.into_inner()).push(bundle);
    let spec = ctx.launch_spec(&second_id, &second_dir, &shim.launch.ttrpc_address);
    let reply = launch::start(&spec).await.map_err(|e| fail(format!("the second `start` (same group) failed: {e}")))?;
    if reply.address != shim.reply.address {
        // A second shim is serving: stop it before failing.
        let killed: Vec<String> =
            processes_in(std::slice::from_ref(&second_dir)).into_iter().filter_map(kill_pid).collect();
        if let Some(path) = launch::socket_path(&reply.address) {
            let _ = crate::fstree::remove_socket(&path);
        }
        return Err(fail(format!(
            "the second `start` for group {group:?} printed {:?}, but the group's shim serves {:?} (killed the new shim: {killed:?})",
            reply.address, shim.reply.address
        )));
    }
    Ok((second_id, second_dir))
}

async fn delete_action_after_shutdown(ctx: &mut Ctx) -> CaseResult {
    let (shim, task, _waited) = super::util::run_to_exit(ctx, &["exit", "0"]).await?;
    // containerd's normal end of a task: Delete, then Shutdown; the shim exits and its connection closes.
    shim.task.delete(&task.id, "").await?;
    shim.note_deleted(&task.id);
    let _ = shim.task.shutdown_after_delete(shim.id()).await;
    let pid = shim.shim_pid();
    wait_gone(pid, ctx.timeout(deadline::TEARDOWN)).await;
    let line = ctx.target.profile.line;
    match launch::delete_action(&shim.launch).await {
        Ok(_) => Ok(()),
        Err(error) => Err(fail(format!(
            "containerd {line} runs the `delete` action when the connection closes, also after a normal Delete and Shutdown; here it failed: {error}"
        ))),
    }
}

async fn delete_action_spares_group(ctx: &mut Ctx) -> CaseResult {
    let group = format!("group-{}", ctx.new_id());
    let shim = ctx.launch(&ContainerConfig::new(&["exit", "0"]).annotation(GROUP_ANNOTATION, &group)).await?;
    let first = ctx.create(&shim, IoSpec::NULL).await?;
    let (waited, started) = tokio::join!(wait_exit(ctx, &shim, &first.id, ""), ctx.start_process(&shim, &first.id, ""));
    started?;
    waited?;
    let (second_id, second_dir) = join_group(ctx, &shim, &group, &["forever"]).await?;
    let second = ctx.create_in(&shim, &second_id, &second_dir, IoSpec::NULL).await?;
    ctx.start_process(&shim, &second.id, "").await?;
    // The first container goes as containerd ends it: Delete, Shutdown (the shim stays: it still serves the
    // second), then the `delete` action for the first when its connection closes.
    shim.task.delete(&first.id, "").await?;
    shim.note_deleted(&first.id);
    let _ = shim.task.shutdown_after_delete(&first.id).await;
    let action = launch::delete_action(&shim.launch).await;
    let state = shim.task.state(&second.id, "").await.map_err(|e| {
        fail(format!(
            "after the `delete` action for the group's deleted container {} ({}), State of the group's running container failed: {e}",
            first.id,
            match &action {
                Ok(_) => "it answered".to_string(),
                Err(e) => format!("it failed: {e}"),
            }
        ))
    })?;
    super::util::expect_status(
        &state,
        containerd_shim_protos::types::task::Status::RUNNING,
        "the group's other container after the `delete` action",
    )?;
    shim.task.kill(&second.id, "", libc::SIGKILL as u32, false).await?;
    let waited = wait_exit(ctx, &shim, &second.id, "").await?;
    ensure!(
        waited.exit_status == 137,
        "after the `delete` action, Kill SIGKILL of the group's other container gave Wait {}, expected 137",
        waited.exit_status
    );
    Ok(())
}

/// Starts a task, SIGKILLs its shim, and runs the `delete` action as containerd does for a shim it lost.
async fn sigkill_then_delete(
    ctx: &mut Ctx,
) -> Result<(Arc<Shim>, Task, Result<DeleteResponse, LaunchError>), CaseError> {
    let (shim, task) = started(ctx, &ContainerConfig::new(&["forever"]), IoSpec::NULL).await?;
    let pid = shim.shim_pid();
    ensure!(
        is_process(pid) && carries_marker(ctx, pid),
        "Connect's shim_pid {pid} is not a live process launched by this case ({}); not signalling it",
        crate::process::cmdline(pid)
    );
    kill_pid(pid);
    ensure!(wait_gone(pid, ctx.timeout(deadline::TEARDOWN)).await, "the shim pid {pid} survived SIGKILL");
    shim.note_deleted(&task.id);
    let response = launch::delete_action(&shim.launch).await;
    // containerd removes what a dead shim left; the socket file is no part of what these cases check.
    if let Some(path) = launch::socket_path(&shim.reply.address) {
        let _ = crate::fstree::remove_socket(&path);
    }
    Ok((shim, task, response))
}

async fn delete_after_sigkill_answers(ctx: &mut Ctx) -> CaseResult {
    let (_shim, task, response) = sigkill_then_delete(ctx).await?;
    let response = response.map_err(|e| fail(format!("`delete` after the shim died: {e}")))?;
    ensure!(
        response.exit_status == 137,
        "`delete` killed the container of a dead shim; its DeleteResponse says exit_status {}, expected 137 (128+SIGKILL)",
        response.exit_status
    );
    ensure!(
        response.exited_at.as_ref().map(|t| t.seconds).unwrap_or(0) > 0,
        "`delete`'s DeleteResponse has no exited_at"
    );
    ensure!(
        response.pid == task.pid || response.pid == 0,
        "`delete`'s DeleteResponse names pid {}; the init pid was {} (0 is allowed: Kata reports none)",
        response.pid,
        task.pid
    );
    Ok(())
}

async fn delete_after_sigkill_cleans_up(ctx: &mut Ctx) -> CaseResult {
    let (_shim, task, response) = sigkill_then_delete(ctx).await?;
    let gone = poll_until(ctx.timeout(deadline::EXIT), || !is_process(task.pid)).await;
    if !gone {
        // Nobody else will stop it: the shim is dead.
        if carries_marker(ctx, task.pid) {
            kill_pid(task.pid);
        }
        return Err(fail(format!(
            "after `delete` ({}), the container's init pid {} was still running {:?} later (the harness killed it)",
            match &response {
                Ok(r) => format!("answered exit_status {}", r.exit_status),
                Err(e) => format!("failed: {e}"),
            },
            task.pid,
            ctx.timeout(deadline::EXIT)
        )));
    }
    response.map_err(|e| fail(format!("`delete` after the shim died: {e}")))?;
    Ok(())
}

async fn start_broken_bundle_fails_cleanly(ctx: &mut Ctx) -> CaseResult {
    let id = ctx.new_id();
    let mut bundle = ctx.bundle(&id, &ContainerConfig::new(&["forever"]))?;
    ctx.track(&bundle.dir, &id);
    // Not JSON from its first byte (a decoder that stops after one value must fail too), though the annotations
    // are still there to read for a mock that fakes acceptance.
    let config = bundle.dir.join("config.json");
    let text = std::fs::read_to_string(&config).map_err(|e| fail(format!("reading {}: {e}", config.display())))?;
    std::fs::write(&config, format!("!{text}")).map_err(|e| fail(format!("writing {}: {e}", config.display())))?;
    let events_path = ctx.env.sockets.join("e").join(format!("{}.sock", ctx.env.next()));
    let events = EventSink::serve(&events_path).await.map_err(|e| fail(format!("starting the events server: {e}")))?;
    ctx.serve_api()?;
    let mut spec = ctx.launch_spec(&id, &bundle.dir, &events_path);
    // The mock cannot read its faults from a config.json that does not parse: give them in the environment too.
    if let Some(faults) = &ctx.target.faults {
        spec.env.push((crate::context::MOCK_FAULTS_ENV.to_string(), faults.clone()));
    }
    let started = launch::start(&spec).await;
    let outcome = check_broken_start(ctx, &bundle.dir, started).await;
    events.stop().await;
    bundle.remove();
    outcome
}

async fn check_broken_start(
    ctx: &Ctx,
    dir: &std::path::Path,
    started: Result<launch::StartReply, LaunchError>,
) -> CaseResult {
    let dirs = [dir.to_path_buf()];
    // A `start` that failed may still have a child going away; give it a moment, then insist.
    let quiet = poll_until(ctx.timeout(Duration::from_secs(1)), || processes_in(&dirs).is_empty()).await;
    let killed: Vec<String> = processes_in(&dirs).into_iter().filter_map(kill_pid).collect();
    match started {
        Ok(reply) => {
            if let Some(path) = launch::socket_path(&reply.address) {
                let _ = crate::fstree::remove_socket(&path);
            }
            Err(fail(format!(
                "`start` with an unparseable config.json succeeded and printed {:?} (processes killed afterwards: {killed:?})",
                reply.address
            )))
        }
        Err(LaunchError::StartFailed { .. }) => {
            ensure!(quiet, "`start` failed as it should, but left processes running in the bundle: {killed:?}");
            Ok(())
        }
        Err(other) => {
            Err(fail(format!("`start` with an unparseable config.json should exit non-zero at once; instead: {other}")))
        }
    }
}
