//! Kill: signals reach the task and its exit status says which signal ended it.
use super::util::{started, wait_exit};
use super::{Case, CaseResult};
use crate::bundle::{ContainerConfig, IoSpec};
use crate::context::Ctx;
use crate::{case, ensure};

pub fn cases() -> Vec<Case> {
    vec![
        case!("kill::sigkill_gives_137", Must, [],
            breaks_with: "kill-noop",
            ref: "runtime-v2.md Kill; exit status of a signalled process is 128+signal (runc shim reaper)",
            "Kill SIGKILL ends a running task and Wait reports 137",
            sigkill_gives_137),
        case!("kill::sigterm_gives_143", Must, [],
            breaks_with: "kill-noop",
            ref: "runtime-v2.md Kill; `docker stop`/CRI StopContainer send SIGTERM first",
            "Kill SIGTERM reaches a task whose init handles SIGTERM (a pid-namespace init ignores unhandled SIGTERM) and Wait reports 143",
            sigterm_gives_143),
    ]
}

async fn kill_and_expect(ctx: &mut Ctx, steps: &[&str], signal: i32, expected: u32) -> CaseResult {
    let (shim, mut task) = started(ctx, &ContainerConfig::new(steps), IoSpec::OUT).await?;
    // Signal only once the payload is running its steps (handlers installed).
    let reader = task.io.stdout.as_mut().ok_or_else(|| super::fail("harness bug: no stdout"))?;
    let (seen, ready) = reader.read_until(b"ready\n", ctx.timeout(crate::context::deadline::EXIT)).await;
    ensure!(ready, "payload never printed \"ready\"; stdout: {:?}", String::from_utf8_lossy(&seen));
    shim.task.kill(&task.id, "", signal as u32, false).await?;
    let waited = wait_exit(ctx, &shim, &task.id, "").await?;
    ensure!(
        waited.exit_status == expected,
        "after Kill with signal {signal}, Wait returned exit_status {}, expected {expected} (128+{signal})",
        waited.exit_status
    );
    Ok(())
}

async fn sigkill_gives_137(ctx: &mut Ctx) -> CaseResult {
    kill_and_expect(ctx, &["ready", "forever"], libc::SIGKILL, 137).await
}

async fn sigterm_gives_143(ctx: &mut Ctx) -> CaseResult {
    // The handler exits 128+15, as tini or a shell `trap` does for a namespace init.
    kill_and_expect(ctx, &["trap", "15", "143", "ready", "forever"], libc::SIGTERM, 143).await
}
