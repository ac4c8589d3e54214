//! Events: what the shim publishes to containerd, in order, with payloads matching the RPC replies.
use super::util::{run_to_exit};
use super::{fail, Case, CaseResult};
use crate::context::{deadline, Ctx};
use crate::shim::events::{render, Payload};
use crate::{case, ensure};

pub fn cases() -> Vec<Case> {
    vec![case!("events::lifecycle_order", Must, ["events"],
        breaks_with: "no-exit-event",
        ref: "runtime-v2.md Events: create -> start -> exit -> delete; containerd's task service relies on /tasks/exit",
        "events arrive create, start, exit, delete in that order with matching container id, pid and exit status",
        lifecycle_order)]
}

async fn lifecycle_order(ctx: &mut Ctx) -> CaseResult {
    let (shim, task, waited) = run_to_exit(ctx, &["exit", "4"]).await?;
    let deleted = shim.task.delete(&task.id, "").await?;
    shim.note_deleted(&task.id);
    let want = ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"];
    let (_, events) = shim
        .events
        .wait_until(ctx.timeout(deadline::EVENT), |events| want.iter().all(|t| events.iter().any(|e| e.topic == *t)))
        .await;
    let mine: Vec<_> = events.iter().filter(|e| want.contains(&e.topic.as_str())).collect();
    let topics: Vec<&str> = mine.iter().map(|e| e.topic.as_str()).collect();
    // A shim may repeat an exit (containerd tolerates duplicates); order is what matters.
    let mut order: Vec<&str> = Vec::new();
    for topic in &topics {
        if order.last() != Some(topic) {
            order.push(topic);
        }
    }
    ensure!(order == want, "event order is {order:?}, expected {want:?}\nall events:\n{}", render(&events));
    for event in &mine {
        ensure!(
            event.container_id() == Some(task.id.as_str()),
            "{} names container {:?}, expected {:?}",
            event.topic,
            event.container_id(),
            task.id
        );
        ensure!(event.namespace == ctx.env.namespace, "{} has namespace {:?}, expected {:?}", event.topic, event.namespace, ctx.env.namespace);
        match &event.payload {
            Payload::Create(e) => ensure!(e.pid == task.pid, "TaskCreate.pid {} != Create's pid {}", e.pid, task.pid),
            Payload::Start(e) => ensure!(e.pid == task.pid, "TaskStart.pid {} != init pid {}", e.pid, task.pid),
            Payload::Exit(e) => {
                ensure!(e.pid == task.pid, "TaskExit.pid {} != init pid {}", e.pid, task.pid);
                ensure!(e.exit_status == waited.exit_status, "TaskExit.exit_status {} != Wait's {}", e.exit_status, waited.exit_status);
                ensure!(e.id == task.id, "TaskExit.id {:?} should be the container id {:?} for the init", e.id, task.id);
            }
            Payload::Delete(e) => {
                ensure!(e.pid == deleted.pid, "TaskDelete.pid {} != Delete's {}", e.pid, deleted.pid);
                ensure!(e.exit_status == deleted.exit_status, "TaskDelete.exit_status {} != Delete's {}", e.exit_status, deleted.exit_status);
            }
            other => return Err(fail(format!("unexpected payload for {}: {other:?}", event.topic))),
        }
    }
    Ok(())
}
