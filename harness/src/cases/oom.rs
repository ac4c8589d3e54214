//! OOM: a container over its memory limit is killed by the kernel, and the shim tells containerd so with
//! `/tasks/oom` before the exit.
use super::util::{created, wait_exit};
use super::{fail, Case, CaseError, CaseResult};
use crate::bundle::{ContainerConfig, IoSpec, MemoryLimit};
use crate::context::{deadline, Ctx};
use crate::shim::events::{render, Payload};
use crate::{case, ensure};

pub fn cases() -> Vec<Case> {
    vec![case!("oom::event_before_exit", Should, ["oom"],
            breaks_with: "no-oom-event",
            ref: "CRI's event monitor sets Reason \"OOMKilled\" only on TaskOOM (pkg/cri/server/events.go, containerd 1.6/1.7; else the exit reads \"Error\"); Docker marks an exit OOMKilled only when TaskOOM came before its TaskExit (moby libcontainerd/remote/client.go); the runc shim's OOM watcher publishes TaskOOM{container_id} (pkg/oom)",
            "a container whose init allocates 256 MiB under a 32 MiB memory limit (swap limited too), once Start has returned, is killed (Wait: 137), and /tasks/oom naming the container arrives before the init's /tasks/exit",
            event_before_exit)]
}

/// The limit the case gives the container, and what the payload asks for: eight times the limit.
const LIMIT_MIB: i64 = 32;
const ALLOC_MIB: &str = "256";

async fn event_before_exit(ctx: &mut Ctx) -> CaseResult {
    let host = crate::host::memory_limits()
        .map_err(|why| CaseError::Skip(format!("this host cannot set a memory limit: {why}")))?;
    let limit = LIMIT_MIB << 20;
    // The init allocates only when told to, after Start has returned: a shim watches the task's memory cgroup from
    // Start on (the Go runc shim adds it to its OOM epoller after `runc start`), so an allocation racing Start would
    // make the verdict a coin toss (seen: the Go shim missed the event in 2 of 4 fresh-host runs that way).
    let config = ContainerConfig::new(&["expect", "go", "alloc", ALLOC_MIB, "exit", "0"])
        .memory(MemoryLimit { limit, swap: host.swap.then_some(limit) });
    let (shim, mut task) = created(ctx, &config, IoSpec::ALL).await?;
    // As `ctr run` does: the Wait races the Start.
    let waiting = wait_exit(ctx, &shim, &task.id, "");
    let go = async {
        ctx.start_process(&shim, &task.id, "").await?;
        let stdin = task.io.stdin.as_mut().ok_or_else(|| fail("harness bug: no stdin fifo"))?;
        stdin.write(b"go", ctx.timeout(deadline::RPC)).await.map_err(fail)?;
        stdin.close();
        shim.task.close_io(&task.id, "").await?;
        Ok::<(), CaseError>(())
    };
    let (waited, started) = tokio::join!(waiting, go);
    started?;
    let waited = waited?;
    let swap =
        if host.swap { "memory+swap limited to the same" } else { "swap not limited: no swap accounting on this host" };
    ensure!(
        waited.exit_status == 137,
        "the init allocating {ALLOC_MIB} MiB under linux.resources.memory.limit = {LIMIT_MIB} MiB ({swap}) exited with status {}, \
         expected 137 (killed by the OOM killer){}",
        waited.exit_status,
        if waited.exit_status == 0 { ": the limit was not applied" } else { "" }
    );
    let id = task.id.clone();
    let is_oom = |e: &crate::shim::events::Event| e.topic == "/tasks/oom";
    let is_init_exit = |e: &crate::shim::events::Event| matches!(&e.payload, Payload::Exit(x) if e.topic == "/tasks/exit" && x.id == id);
    let (_, events) = shim
        .events
        .wait_until(ctx.timeout(deadline::EVENT), |events| events.iter().any(is_oom) && events.iter().any(is_init_exit))
        .await;
    let oom = events.iter().position(is_oom).ok_or_else(|| {
        fail(format!(
            "the init was killed (137) over its memory limit, but no /tasks/oom arrived within {:?} \
             (CRI would report the exit as \"Error\", not \"OOMKilled\")\nall events:\n{}",
            ctx.timeout(deadline::EVENT),
            render(&events)
        ))
    })?;
    let event = &events[oom];
    ensure!(
        matches!(event.payload, Payload::Oom(_)),
        "/tasks/oom carries type {}, not containerd.events.TaskOOM: {}",
        event.type_url,
        event.summary()
    );
    ensure!(
        event.container_id() == Some(task.id.as_str()),
        "/tasks/oom names container {:?}, expected {:?} (CRI looks the container up by TaskOOM.container_id)\nall events:\n{}",
        event.container_id(),
        task.id,
        render(&events)
    );
    let exit = events.iter().position(is_init_exit).ok_or_else(|| {
        fail(format!(
            "no /tasks/exit for the init arrived within {:?}\nall events:\n{}",
            ctx.timeout(deadline::EVENT),
            render(&events)
        ))
    })?;
    ensure!(
        oom < exit,
        "/tasks/oom arrived after the init's /tasks/exit (Docker records an exit as OOMKilled only when TaskOOM came first)\nall events:\n{}",
        render(&events)
    );
    Ok(())
}
