//! Pause and Resume (`ctr task pause`, `docker pause`): the task freezes, thaws, and says so in State and events.
use containerd_shim_protos::types::task::Status;

use super::util::{expect_status, hold, read_until, started};
use super::{expect_refused, fail, Case, CaseResult};
use crate::bundle::{ContainerConfig, IoSpec};
use crate::context::{deadline, Ctx, Task};
use crate::shim::events::{render, Payload};
use crate::shim::instance::Shim;
use crate::{case, ensure};

pub fn cases() -> Vec<Case> {
    vec![
        case!("pause::paused_then_running", Must, ["pause"],
            breaks_with: "pause-noop",
            ref: "task.proto Pause/Resume, Status PAUSED; runc shim uses runc pause/resume (cgroup freezer)",
            "after Pause, State says PAUSED and the task stops consuming input; after Resume, State says RUNNING and the input is processed",
            paused_then_running),
        case!("pause::events", Should, ["pause", "events"],
            breaks_with: "no-pause-events",
            ref: "runtime-v2.md Events: /tasks/paused and /tasks/resumed are SHOULD; runc shim publishes both",
            "Pause publishes /tasks/paused and Resume /tasks/resumed, in that order, naming the container",
            pause_events),
        case!("pause::delete_paused_refused", Should, ["pause"],
            breaks_with: "delete-paused-ok",
            ref: "runc shim pausedState.Delete: \"cannot delete a paused process\"; containerd resumes or kills first",
            "Delete of a paused task is refused and the task stays PAUSED",
            delete_paused_refused),
    ]
}

/// Runs `body`; if it fails, resumes the task so that teardown can kill it (a frozen task cannot die of SIGKILL).
async fn resuming_on_failure(shim: &Shim, id: &str, result: CaseResult) -> CaseResult {
    if result.is_err() {
        let _ = shim.task.resume(id).await;
    }
    result
}

async fn paused_then_running(ctx: &mut Ctx) -> CaseResult {
    let (shim, mut task) = started(ctx, &ContainerConfig::new(&["cat"]), IoSpec::ALL).await?;
    let result = pause_and_resume_cat(ctx, &shim, &mut task).await;
    resuming_on_failure(&shim, &task.id, result).await
}

async fn pause_and_resume_cat(ctx: &Ctx, shim: &Shim, task: &mut Task) -> CaseResult {
    let write_timeout = ctx.timeout(deadline::RPC);
    let stdin = task.io.stdin.as_mut().ok_or_else(|| fail("harness bug: no stdin fifo"))?;
    stdin.write(b"before the pause\n", write_timeout).await.map_err(fail)?;
    read_until(ctx, &mut task.io, "before the pause\n", "cat echoing its input before Pause").await?;

    let hold = hold(shim, &task.id).await;
    shim.task.pause(&task.id).await?;
    let state = shim.task.state(&task.id, "").await?;
    expect_status(&state, Status::PAUSED, "after Pause")?;
    let stdin = task.io.stdin.as_mut().ok_or_else(|| fail("harness bug: no stdin fifo"))?;
    stdin.write(b"while paused\n", write_timeout).await.map_err(fail)?;
    let stdout = task.io.stdout.as_mut().ok_or_else(|| fail("harness bug: no stdout fifo"))?;
    let (seen, echoed) = stdout.read_until(b"while paused\n", hold).await;
    ensure!(
        !echoed,
        "the task echoed input while PAUSED: a paused task must not run (stdout {:?})",
        String::from_utf8_lossy(&seen)
    );

    shim.task.resume(&task.id).await?;
    let state = shim.task.state(&task.id, "").await?;
    expect_status(&state, Status::RUNNING, "after Resume")?;
    read_until(ctx, &mut task.io, "while paused\n", "cat processing the input it got while paused, after Resume")
        .await?;
    Ok(())
}

async fn pause_events(ctx: &mut Ctx) -> CaseResult {
    let (shim, task) = started(ctx, &ContainerConfig::new(&["forever"]), IoSpec::NULL).await?;
    shim.task.pause(&task.id).await?;
    let resumed = shim.task.resume(&task.id).await;
    resuming_on_failure(&shim, &task.id, resumed.map(drop).map_err(Into::into)).await?;
    let want = ["/tasks/paused", "/tasks/resumed"];
    let (_, events) = shim
        .events
        .wait_until(ctx.timeout(deadline::EVENT), |events| want.iter().all(|t| events.iter().any(|e| e.topic == *t)))
        .await;
    let mine: Vec<_> = events.iter().filter(|e| want.contains(&e.topic.as_str())).collect();
    let topics: Vec<&str> = mine.iter().map(|e| e.topic.as_str()).collect();
    ensure!(
        topics == want,
        "expected events {want:?} after Pause and Resume; got {topics:?}\nall events:\n{}",
        render(&events)
    );
    for event in mine {
        ensure!(
            matches!(event.payload, Payload::Paused(_) | Payload::Resumed(_)),
            "{} carries {:?} (type {}), expected TaskPaused/TaskResumed",
            event.topic,
            event.payload,
            event.type_url
        );
        ensure!(
            event.container_id() == Some(task.id.as_str()),
            "{} names container {:?}, expected {:?}",
            event.topic,
            event.container_id(),
            task.id
        );
    }
    Ok(())
}

async fn delete_paused_refused(ctx: &mut Ctx) -> CaseResult {
    let (shim, task) = started(ctx, &ContainerConfig::new(&["forever"]), IoSpec::NULL).await?;
    shim.task.pause(&task.id).await?;
    let result = delete_refused_while_paused(&shim, &task.id).await;
    resuming_on_failure(&shim, &task.id, result).await
}

async fn delete_refused_while_paused(shim: &Shim, task_id: &str) -> CaseResult {
    let refused = expect_refused(shim.task.delete(task_id, "").await, "Delete of a paused task");
    if refused.is_err() {
        shim.note_deleted(task_id);
    }
    refused?;
    let state = shim.task.state(task_id, "").await?;
    expect_status(&state, Status::PAUSED, "after the refused Delete")?;
    // A frozen task cannot die of SIGKILL until thawed: leave it running for teardown.
    shim.task.resume(task_id).await?;
    Ok(())
}
