//! Events: what the shim publishes to containerd, in order, with payloads matching the RPC replies.
use containerd_shim_protos::api::{DeleteResponse, WaitResponse};

use super::util::{exec_started, run_to_exit, stamp, started, wait_exit};
use super::{fail, Case, CaseError, CaseResult};
use crate::bundle::{ContainerConfig, IoSpec};
use crate::context::{deadline, Ctx, Task};
use crate::shim::events::{render, Event, Payload};
use crate::{case, ensure};

pub fn cases() -> Vec<Case> {
    vec![
        case!("events::lifecycle_order", Must, ["events"],
            breaks_with: "no-exit-event",
            ref: "runtime-v2.md Events: create -> start -> exit -> delete; containerd's task service relies on /tasks/exit",
            "events arrive create, start, exit, delete in that order with matching container id, pid and exit status",
            lifecycle_order),
        case!("events::exec_order", Must, ["events", "exec"],
            breaks_with: "exec-events-missing",
            ref: "runtime-v2.md Events: exec-added after create, exec-started after exec-added, the exec's exit after exec-started",
            "an exec's life publishes exec-added, exec-started and its exit, between the init's start and the init's exit and delete",
            exec_order),
        case!("events::full_order", Should, ["events", "exec", "pause"],
            breaks_with: "events-out-of-order",
            ref: "runtime-v2.md Events (ordering MUST; paused/resumed SHOULD); the runc shim forwards every event through one FIFO",
            "create, start, exec-added, exec-started, exec exit, paused, resumed, init exit, delete arrive in exactly the order they happened",
            full_order),
        case!("events::container_and_exec_ids", Must, ["events", "exec"],
            breaks_with: "event-wrong-container-id",
            ref: "events/task.proto container_id, exec_id, TaskExit.id; CRI looks the container up by TaskExit.id, so an init exit must carry the container id",
            "every event names the container; exec events name the exec id; TaskExit.id is the exec id for an exec and the container id for the init",
            container_and_exec_ids),
        case!("events::exit_has_exited_at", Must, ["events"],
            breaks_with: "exit-event-no-exited-at",
            ref: "events/task.proto TaskExit.exited_at; CRI records it as the container's FinishedAt",
            "/tasks/exit carries a non-zero exited_at equal to the one Wait returned",
            exit_has_exited_at),
        case!("events::pids_match_rpcs", Must, ["events", "exec"],
            breaks_with: "event-wrong-pid",
            ref: "events/task.proto pid fields; Docker finds an exec by the pid in its TaskExit (daemon ProcessEvent)",
            "the pids in create, start, exec-started, both exits and delete are the pids the RPCs returned",
            pids_match_rpcs),
    ]
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
        ensure!(
            event.namespace == ctx.env.namespace,
            "{} has namespace {:?}, expected {:?}",
            event.topic,
            event.namespace,
            ctx.env.namespace
        );
        match &event.payload {
            Payload::Create(e) => ensure!(e.pid == task.pid, "TaskCreate.pid {} != Create's pid {}", e.pid, task.pid),
            Payload::Start(e) => ensure!(e.pid == task.pid, "TaskStart.pid {} != init pid {}", e.pid, task.pid),
            Payload::Exit(e) => {
                ensure!(e.pid == task.pid, "TaskExit.pid {} != init pid {}", e.pid, task.pid);
                ensure!(
                    e.exit_status == waited.exit_status,
                    "TaskExit.exit_status {} != Wait's {}",
                    e.exit_status,
                    waited.exit_status
                );
                ensure!(
                    e.id == task.id,
                    "TaskExit.id {:?} should be the container id {:?} for the init",
                    e.id,
                    task.id
                );
            }
            Payload::Delete(e) => {
                ensure!(e.pid == deleted.pid, "TaskDelete.pid {} != Delete's {}", e.pid, deleted.pid);
                ensure!(
                    e.exit_status == deleted.exit_status,
                    "TaskDelete.exit_status {} != Delete's {}",
                    e.exit_status,
                    deleted.exit_status
                );
            }
            other => return Err(fail(format!("unexpected payload for {}: {other:?}", event.topic))),
        }
    }
    Ok(())
}

/// What one run of the exec scenario returned: the RPC replies to hold events against.
struct ExecRun {
    task: Task,
    exec_pid: u32,
    exec_wait: WaitResponse,
    init_wait: WaitResponse,
    deleted: DeleteResponse,
    events: Vec<Event>,
}

const EXEC_ID: &str = "evexec";

/// Init runs; an exec runs and exits 2; (optionally Pause and Resume;) the init is killed, waited for and deleted.
/// Returns once the delete event has arrived or the event deadline passed.
async fn exec_scenario(ctx: &mut Ctx, pause: bool) -> Result<ExecRun, CaseError> {
    let (shim, task) = started(ctx, &ContainerConfig::new(&["forever"]), IoSpec::NULL).await?;
    let (exec_pid, _io) = exec_started(ctx, &shim, &task.id, EXEC_ID, &["exit", "2"], IoSpec::NULL).await?;
    let exec_wait = wait_exit(ctx, &shim, &task.id, EXEC_ID).await?;
    if pause {
        shim.task.pause(&task.id).await?;
        let resumed = shim.task.resume(&task.id).await;
        if resumed.is_err() {
            // Best effort again, so teardown can kill the task.
            let _ = shim.task.resume(&task.id).await;
        }
        resumed?;
    }
    shim.task.kill(&task.id, "", libc::SIGKILL as u32, false).await?;
    let init_wait = wait_exit(ctx, &shim, &task.id, "").await?;
    let deleted = shim.task.delete(&task.id, "").await?;
    shim.note_deleted(&task.id);
    let (_, events) = shim
        .events
        .wait_until(ctx.timeout(deadline::EVENT), |events| events.iter().any(|e| e.topic == "/tasks/delete"))
        .await;
    Ok(ExecRun { task, exec_pid, exec_wait, init_wait, deleted, events })
}

/// A label per event (`exit:<id>`, `exec-added:<exec>` ...), with runs of the same label collapsed: a repeated exit is
/// tolerated (containerd says duplicates are possible), its order is not.
fn labels(events: &[Event], task_id: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for event in events {
        let topic = event.topic.trim_start_matches("/tasks/");
        let label = match &event.payload {
            Payload::Exit(e) if e.id == task_id => "exit:init".to_string(),
            Payload::Exit(e) => format!("exit:{}", e.id),
            Payload::ExecAdded(e) => format!("{topic}:{}", e.exec_id),
            Payload::ExecStarted(e) => format!("{topic}:{}", e.exec_id),
            _ => topic.to_string(),
        };
        if out.last() != Some(&label) {
            out.push(label);
        }
    }
    out
}

async fn exec_order(ctx: &mut Ctx) -> CaseResult {
    let run = exec_scenario(ctx, false).await?;
    let got = labels(&run.events, &run.task.id);
    let want = ["create", "start", "exec-added:evexec", "exec-started:evexec", "exit:evexec", "exit:init", "delete"];
    ensure!(got == want, "event order is {got:?}, expected {want:?}\nall events:\n{}", render(&run.events));
    for event in &run.events {
        if let Payload::Exit(exit) = &event.payload {
            let (who, waited) = if exit.id == EXEC_ID { ("exec", &run.exec_wait) } else { ("init", &run.init_wait) };
            ensure!(
                exit.exit_status == waited.exit_status,
                "the {who}'s /tasks/exit says exit_status {}, Wait said {}",
                exit.exit_status,
                waited.exit_status
            );
        }
    }
    Ok(())
}

async fn full_order(ctx: &mut Ctx) -> CaseResult {
    let run = exec_scenario(ctx, true).await?;
    let got = labels(&run.events, &run.task.id);
    let want = [
        "create",
        "start",
        "exec-added:evexec",
        "exec-started:evexec",
        "exit:evexec",
        "paused",
        "resumed",
        "exit:init",
        "delete",
    ];
    ensure!(got == want, "event order is {got:?}, expected {want:?}\nall events:\n{}", render(&run.events));
    Ok(())
}

async fn container_and_exec_ids(ctx: &mut Ctx) -> CaseResult {
    let run = exec_scenario(ctx, false).await?;
    let id = run.task.id.as_str();
    ensure!(!run.events.is_empty(), "no events arrived");
    for event in &run.events {
        ensure!(
            event.container_id() == Some(id),
            "{} names container {:?}, expected {id:?}\nall events:\n{}",
            event.topic,
            event.container_id(),
            render(&run.events)
        );
        match &event.payload {
            Payload::ExecAdded(e) => {
                ensure!(e.exec_id == EXEC_ID, "/tasks/exec-added names exec {:?}, expected {EXEC_ID:?}", e.exec_id)
            }
            Payload::ExecStarted(e) => {
                ensure!(e.exec_id == EXEC_ID, "/tasks/exec-started names exec {:?}, expected {EXEC_ID:?}", e.exec_id)
            }
            Payload::Exit(e) => ensure!(
                e.id == EXEC_ID || e.id == id,
                "/tasks/exit has id {:?}: it must be the exec id {EXEC_ID:?} or, for the init, the container id {id:?}",
                e.id
            ),
            _ => {}
        }
    }
    let exits: Vec<&str> = run
        .events
        .iter()
        .filter_map(|e| match &e.payload {
            Payload::Exit(x) => Some(x.id.as_str()),
            _ => None,
        })
        .collect();
    ensure!(
        exits.contains(&EXEC_ID) && exits.contains(&id),
        "expected one /tasks/exit with id {EXEC_ID:?} (the exec) and one with id {id:?} (the init); got ids {exits:?}"
    );
    Ok(())
}

async fn exit_has_exited_at(ctx: &mut Ctx) -> CaseResult {
    let (shim, _task, waited) = run_to_exit(ctx, &["exit", "0"]).await?;
    let event = shim
        .events
        .wait_for_topic("/tasks/exit", ctx.timeout(deadline::EVENT))
        .await
        .ok_or_else(|| fail(format!("no /tasks/exit arrived\nall events:\n{}", render(&shim.events.snapshot()))))?;
    let Payload::Exit(exit) = &event.payload else {
        return Err(fail(format!("/tasks/exit carries {:?} (type {}), not a TaskExit", event.payload, event.type_url)));
    };
    ensure!(stamp(&exit.exited_at).0 > 0, "/tasks/exit has no exited_at: {}", event.summary());
    ensure!(
        stamp(&exit.exited_at) == stamp(&waited.exited_at),
        "/tasks/exit says exited_at {:?}, Wait said {:?}",
        stamp(&exit.exited_at),
        stamp(&waited.exited_at)
    );
    Ok(())
}

async fn pids_match_rpcs(ctx: &mut Ctx) -> CaseResult {
    let run = exec_scenario(ctx, false).await?;
    let (init, exec) = (run.task.pid, run.exec_pid);
    let mut checked = Vec::new();
    for event in &run.events {
        let (got, want) = match &event.payload {
            Payload::Create(e) => (e.pid, init),
            Payload::Start(e) => (e.pid, init),
            Payload::ExecStarted(e) => (e.pid, exec),
            Payload::Exit(e) if e.id == EXEC_ID => (e.pid, exec),
            Payload::Exit(e) => (e.pid, init),
            Payload::Delete(e) => (e.pid, run.deleted.pid),
            _ => continue,
        };
        ensure!(
            got == want,
            "{} carries pid {got}, but the RPCs said {want} (init {init}, exec {exec})\nall events:\n{}",
            event.topic,
            render(&run.events)
        );
        checked.push(event.topic.as_str());
    }
    for topic in ["/tasks/create", "/tasks/start", "/tasks/exec-started", "/tasks/exit", "/tasks/delete"] {
        ensure!(checked.contains(&topic), "no {topic} event arrived to check\nall events:\n{}", render(&run.events));
    }
    Ok(())
}
