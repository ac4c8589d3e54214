//! I/O: the container's stdio arrives through the fifos the caller created.
use super::util::{read_all, read_until, run_to_exit, started, stdout_of, wait_exit};
use super::{fail, Case, CaseResult};
use crate::bundle::{ContainerConfig, IoSpec};
use crate::context::{deadline, Ctx};
use crate::{case, ensure};

pub fn cases() -> Vec<Case> {
    vec![
        case!("io::stdout_through_fifo", Must, [],
            breaks_with: "drop-stdout",
            ref: "runtime-v2.md I/O: the caller creates fifos and passes their paths in Create",
            "what the container writes to stdout arrives whole through the stdout fifo, then EOF",
            stdout_through_fifo),
        case!("io::stdin_closeio_ends_cat", Must, [],
            breaks_with: "closeio-noop",
            ref: "task.proto CloseIORequest.stdin; docker/ctr close their stdin fifo, then call CloseIO (runc shim holds its own writer until CloseIO)",
            "input written to the stdin fifo reaches the init (`cat` echoes it); closing the fifo and CloseIO end its input, so it exits 0",
            stdin_closeio_ends_cat),
        case!("io::stderr_apart_from_stdout", Must, [],
            breaks_with: "stderr-to-stdout",
            ref: "task.proto CreateTaskRequest stdout/stderr are separate fifos (docker logs and CRI tag each stream)",
            "stderr arrives on the stderr fifo and stdout on the stdout fifo, neither mixed into the other",
            stderr_apart_from_stdout),
        case!("io::terminal_is_a_tty", Must, ["terminal"],
            breaks_with: "terminal-ignored",
            ref: "task.proto CreateTaskRequest.terminal (ctr run -t, docker run -t): the process gets a pty, relayed to the stdout fifo",
            "with terminal=true the init's stdin and stdout are a tty, and its output arrives on the stdout fifo",
            terminal_is_a_tty),
        case!("io::resize_pty", Must, ["terminal"],
            breaks_with: "resize-noop",
            ref: "task.proto ResizePtyRequest; ctr/docker resize the console after Start and on SIGWINCH",
            "ResizePty on a running terminal task sets its window size: the payload then reads 45 rows, 123 columns",
            resize_pty),
        case!("io::null_io", Must, [],
            breaks_with: "null-io-fails",
            ref: "cio.NullIO: containerd sends empty stdin/stdout/stderr paths (CRI pause containers, ctr run --null-io)",
            "a task created with all three stdio paths empty runs, writes into the void, and exits 0",
            null_io),
        case!("io::ten_mib_whole", Must, [],
            breaks_with: "stdout-truncate",
            ref: "runtime-v2.md I/O; a shim must copy output without loss or deadlock however much there is",
            "10 MiB written to stdout arrive whole and in order, then EOF, and Wait returns 0",
            ten_mib_whole),
    ]
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

async fn stdin_closeio_ends_cat(ctx: &mut Ctx) -> CaseResult {
    let (shim, mut task) = started(ctx, &ContainerConfig::new(&["cat"]), IoSpec::ALL).await?;
    let stdin = task.io.stdin.as_mut().ok_or_else(|| fail("harness bug: no stdin fifo"))?;
    stdin.write(b"through the stdin fifo\n", ctx.timeout(deadline::RPC)).await.map_err(fail)?;
    read_until(ctx, &mut task.io, "through the stdin fifo\n", "cat echoing its stdin").await?;
    if let Some(stdin) = task.io.stdin.as_mut() {
        stdin.close();
    }
    shim.task.close_io(&task.id, "").await?;
    let waited = wait_exit(ctx, &shim, &task.id, "").await?;
    ensure!(waited.exit_status == 0, "cat should exit 0 at the end of its input; Wait says {}", waited.exit_status);
    let output = stdout_of(ctx, &mut task).await?;
    ensure!(output == "through the stdin fifo\n", "cat's stdout should be exactly its input; it was {output:?}");
    Ok(())
}

async fn stderr_apart_from_stdout(ctx: &mut Ctx) -> CaseResult {
    let config = ContainerConfig::new(&["echo", "for stdout", "err", "for stderr", "echo", "stdout again"]);
    let (shim, mut task) = started(ctx, &config, IoSpec::OUT).await?;
    let stdout = read_all(ctx, task.io.stdout.as_mut(), "stdout").await?;
    let stderr = read_all(ctx, task.io.stderr.as_mut(), "stderr").await?;
    wait_exit(ctx, &shim, &task.id, "").await?;
    let (stdout, stderr) = (String::from_utf8_lossy(&stdout), String::from_utf8_lossy(&stderr));
    ensure!(
        stdout == "for stdout\nstdout again\n" && stderr == "for stderr\n",
        "expected stdout \"for stdout\\nstdout again\\n\" and stderr \"for stderr\\n\"; got stdout {stdout:?} and stderr {stderr:?}"
    );
    Ok(())
}

/// Parses the payload's `tty stdin=B stdout=B rows=R cols=C` line.
pub(crate) fn tty_report(output: &str) -> Option<(bool, bool, u32, u32)> {
    let line = output.lines().find(|l| l.trim_start().starts_with("tty "))?;
    let field = |name: &str| line.split_whitespace().find_map(|kv| kv.strip_prefix(name)).map(|v| v.trim().to_string());
    Some((
        field("stdin=")? == "true",
        field("stdout=")? == "true",
        field("rows=")?.parse().ok()?,
        field("cols=")?.parse().ok()?,
    ))
}

async fn terminal_is_a_tty(ctx: &mut Ctx) -> CaseResult {
    let config = ContainerConfig::new(&["tty", "echo", "after the check"]).terminal(true);
    let (shim, mut task) = started(ctx, &config, IoSpec::OUT).await?;
    let output = read_until(ctx, &mut task.io, "after the check", "the payload reporting its terminal").await?;
    wait_exit(ctx, &shim, &task.id, "").await?;
    let report = tty_report(&output).ok_or_else(|| fail(format!("no `tty ...` line on stdout: {output:?}")))?;
    ensure!(
        report.0 && report.1,
        "with terminal=true the payload's stdin/stdout should be a tty; it reports stdin={} stdout={} (output {output:?})",
        report.0,
        report.1
    );
    Ok(())
}

async fn resize_pty(ctx: &mut Ctx) -> CaseResult {
    // `cat` holds the payload until the harness sends EOF (^D on a tty), after the resize.
    let config = ContainerConfig::new(&["ready", "cat", "tty", "echo", "done"]).terminal(true);
    let (shim, mut task) = started(ctx, &config, IoSpec::ALL).await?;
    read_until(ctx, &mut task.io, "ready", "the payload starting on its terminal").await?;
    shim.task.resize_pty(&task.id, "", 123, 45).await?;
    let stdin = task.io.stdin.as_mut().ok_or_else(|| fail("harness bug: no stdin fifo"))?;
    stdin.write(b"\x04", ctx.timeout(deadline::RPC)).await.map_err(fail)?;
    let output = read_until(ctx, &mut task.io, "done", "the payload reporting its window size after ^D").await?;
    let report = tty_report(&output).ok_or_else(|| fail(format!("no `tty ...` line on stdout: {output:?}")))?;
    ensure!(
        (report.2, report.3) == (45, 123),
        "after ResizePty width=123 height=45 the payload reads rows={} cols={} (output {output:?})",
        report.2,
        report.3
    );
    Ok(())
}

async fn null_io(ctx: &mut Ctx) -> CaseResult {
    let (_shim, _task, waited) = run_to_exit(ctx, &["echo", "nobody reads this", "err", "nor this", "exit", "0"]).await?;
    ensure!(waited.exit_status == 0, "a task with null stdio should exit 0; Wait says {}", waited.exit_status);
    Ok(())
}

async fn ten_mib_whole(ctx: &mut Ctx) -> CaseResult {
    const SIZE: usize = 10 << 20;
    let (shim, mut task) = started(ctx, &ContainerConfig::new(&["bytes", &SIZE.to_string()]), IoSpec::OUT).await?;
    let output = read_all(ctx, task.io.stdout.as_mut(), "stdout").await?;
    let waited = wait_exit(ctx, &shim, &task.id, "").await?;
    ensure!(output.len() == SIZE, "the payload wrote {SIZE} bytes; {} arrived", output.len());
    let expected = |k: usize| b'a' + ((k % 4096) % 26) as u8;
    if let Some(k) = output.iter().enumerate().position(|(k, byte)| *byte != expected(k)) {
        return Err(fail(format!("output differs from what the payload wrote at byte {k}: got {:?}, expected {:?}", output[k] as char, expected(k) as char)));
    }
    ensure!(waited.exit_status == 0, "the payload should exit 0 after writing; Wait says {}", waited.exit_status);
    Ok(())
}
