//! I/O: the container's stdio arrives through the fifos the caller created.
use super::util::{started, stdout_of, wait_exit};
use super::{Case, CaseResult};
use crate::bundle::{ContainerConfig, IoSpec};
use crate::context::Ctx;
use crate::{case, ensure};

pub fn cases() -> Vec<Case> {
    vec![case!("io::stdout_through_fifo", Must, [],
        breaks_with: "drop-stdout",
        ref: "runtime-v2.md I/O: the caller creates fifos and passes their paths in Create",
        "what the container writes to stdout arrives whole through the stdout fifo, then EOF",
        stdout_through_fifo)]
}

async fn stdout_through_fifo(ctx: &mut Ctx) -> CaseResult {
    let config = ContainerConfig::new(&["echo", "hello from the payload", "echo", "second line"]);
    let (shim, mut task) = started(ctx, &config, IoSpec::OUT).await?;
    let waited = wait_exit(ctx, &shim, &task.id, "").await?;
    ensure!(waited.exit_status == 0, "payload should exit 0, Wait says {}", waited.exit_status);
    let output = stdout_of(ctx, &mut task).await?;
    ensure!(output == "hello from the payload\nsecond line\n", "stdout was {output:?}");
    Ok(())
}
