//! I/O: the container's stdio arrives through the fifos the caller created.
use super::util::{read_all, read_until, run_to_exit, started, stdout_of, wait_exit};
use super::{fail, Case, CaseError, CaseResult};
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
        case!("io::file_uri_output", Should, [],
            breaks_with: "file-uri-no-create",
            ref: "runc shim process/io.go createIO: a `file://` stdout (ctr run --log-uri file:///path) is created with its directory and both streams appended to it",
            "stdout and stderr given as one `file://` URI whose file does not exist yet: the shim creates it and, once Delete has returned (as `ctr run --rm` returns), every line of both streams is in it, also stderr written after the process closed its stdout",
            file_uri_output),
        case!("io::binary_logger", Should, [],
            breaks_with: "logger-left-running",
            ref: "runc shim process/io.go NewBinaryIO and runtime/v2/logging: a `binary://` stdout starts the logging binary with stdout on fd 3, stderr on fd 4, readiness on fd 5, CONTAINER_ID and CONTAINER_NAMESPACE set (nerdctl logs every container this way); the process's Delete stops it",
            "with `binary://shimcompat?log-driver=DIR` the logger starts before the process, gets the container id and namespace, receives stdout and stderr apart, and is gone after Delete",
            binary_logger),
        case!("io::stdout_without_stderr", Should, [],
            breaks_with: "stdout-needs-stderr",
            ref: "runc shim pkg/process/io.go: each stdio path is optional (withConditionalIO); containerd's cio leaves stderr empty only with a terminal, other clients may send any subset",
            "Create with a stdout fifo and an empty stderr (no terminal) either runs the process with its stdout in the fifo, or fails with an error; either way nothing is left behind",
            stdout_without_stderr),
        case!("io::stdin_only", Should, [],
            breaks_with: "stdin-only-ignored",
            ref: "runc shim pkg/process/io.go: null IO only when all three paths are empty; a stdin path alone is still connected",
            "a process given only a stdin fifo (no stdout, no stderr) reads what is written there: it sees exactly that input, then EOF after CloseIO, and exits 0",
            stdin_only),
    ]
}

/// What the output cases write: two stdout lines around one stderr line.
const OUTPUT_STEPS: [&str; 6] = ["echo", "out one", "err", "err one", "echo", "out two"];

/// Polls until `path` holds `want` (as `check` judges), or the exit deadline passes; returns what it last held.
async fn poll_file(ctx: &Ctx, path: &std::path::Path, check: impl Fn(&str) -> bool) -> (bool, String) {
    poll_file_within(ctx.timeout(deadline::EXIT), path, check).await
}

async fn poll_file_within(
    within: std::time::Duration,
    path: &std::path::Path,
    check: impl Fn(&str) -> bool,
) -> (bool, String) {
    let mut last = String::new();
    let ok = super::util::poll_until(within, || {
        last = std::fs::read_to_string(path).unwrap_or_default();
        check(&last)
    })
    .await;
    (ok, last)
}

/// What the `file://` case writes: stdout ends (the process closes it) before the last stderr line, as a process
/// may close one stream and go on with the other; each stream must still land whole in the shared file.
const FILE_STEPS: [&str; 11] =
    ["echo", "out one", "err", "err one", "echo", "out two", "close-stdout", "sleep", "0.05", "err", "err two"];

async fn file_uri_output(ctx: &mut Ctx) -> CaseResult {
    let shim = ctx.launch(&ContainerConfig::new(&FILE_STEPS)).await?;
    let path = shim.bundle_dir().join("container.log");
    ensure!(!path.exists(), "harness bug: {} exists before Create", path.display());
    let uri = format!("file://{}", path.display());
    let task = ctx.create_with_outputs(&shim, IoSpec::NULL, &uri, &uri).await?;
    ctx.start_process(&shim, &task.id, "").await?;
    let waited = wait_exit(ctx, &shim, &task.id, "").await?;
    ensure!(waited.exit_status == 0, "payload should exit 0, Wait says {}", waited.exit_status);
    // As `ctr run --rm --log-uri file://...` does before its user reads the log: Delete. The runc shim's Delete
    // waits for the process's output copies to finish (2 s at most), so what is not in the file shortly after
    // Delete returned is lost; the case does not wait out the exit deadline for it.
    shim.task.delete(&task.id, "").await?;
    shim.note_deleted(&task.id);
    let after_delete = ctx.timeout(std::time::Duration::from_secs(1));
    // The two streams are copied apart: their lines may interleave either way, each stream stays in order.
    let want = ["err one", "err two", "out one", "out two"];
    let in_order = |lines: &[&str], prefix: &str| {
        let stream: Vec<&str> = lines.iter().filter(|l| l.starts_with(prefix)).copied().collect();
        let expected: Vec<&str> = want.iter().filter(|l| l.starts_with(prefix)).copied().collect();
        stream == expected
    };
    let (whole, held) = poll_file_within(after_delete, &path, |text| {
        let mut lines: Vec<&str> = text.lines().collect();
        let ordered = in_order(&lines, "out") && in_order(&lines, "err");
        lines.sort();
        ordered && lines == want && text.ends_with('\n')
    })
    .await;
    if !path.exists() {
        return Err(fail(format!(
            "{uri}: the shim did not create the file (Create and Start succeeded, the payload exited 0)"
        )));
    }
    ensure!(
        whole,
        "{uri} should hold stdout \"out one\", \"out two\" and stderr \"err one\", \"err two\" (each stream in order; the \
         process closed its stdout before writing \"err two\"); {after_delete:?} after Delete returned it holds {held:?}"
    );
    Ok(())
}

async fn binary_logger(ctx: &mut Ctx) -> CaseResult {
    let Some(driver) = crate::host::shimcompat_binary() else {
        return Err(CaseError::Skip(
            "the `shimcompat` binary (the logging binary of this case) is not found next to the running executable"
                .into(),
        ));
    };
    let shim = ctx.launch(&ContainerConfig::new(&OUTPUT_STEPS)).await?;
    let dir = shim.bundle_dir().join("logger");
    let uri = crate::shim::logdriver::uri(&driver, &dir);
    let task = ctx.create_with_outputs(&shim, IoSpec::NULL, &uri, &uri).await?;
    // Ready before Create returned: the logger wrote its pid and env before closing fd 5.
    let pid: Option<i32> = std::fs::read_to_string(dir.join("pid")).ok().and_then(|p| p.trim().parse().ok());
    let Some(pid) = pid else {
        return Err(fail(format!(
            "Create returned, but the logging binary never ran (no {}): with a `binary://` stdout the shim starts it and waits for it to be ready",
            dir.join("pid").display()
        )));
    };
    let result = logger_contract(ctx, &shim, &task.id, &dir, pid).await;
    if crate::cases::util::is_process(pid as u32) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
    result
}

async fn logger_contract(
    ctx: &mut Ctx,
    shim: &crate::shim::instance::Shim,
    id: &str,
    dir: &std::path::Path,
    pid: i32,
) -> CaseResult {
    let env = std::fs::read_to_string(dir.join("env")).unwrap_or_default();
    let want_env = format!("CONTAINER_ID={id}\nCONTAINER_NAMESPACE={}\n", ctx.env.namespace);
    ensure!(env == want_env, "the logging binary's environment should carry {want_env:?}; it had {env:?}");
    ctx.start_process(shim, id, "").await?;
    let waited = wait_exit(ctx, shim, id, "").await?;
    ensure!(waited.exit_status == 0, "payload should exit 0, Wait says {}", waited.exit_status);
    let (out_ok, out) = poll_file(ctx, &dir.join("stdout"), |t| t == "out one\nout two\n").await;
    let (err_ok, err) = poll_file(ctx, &dir.join("stderr"), |t| t == "err one\n").await;
    ensure!(
        out_ok && err_ok,
        "the logger should read stdout \"out one\\nout two\\n\" on fd 3 and stderr \"err one\\n\" on fd 4; it read stdout {out:?} and stderr {err:?}"
    );
    shim.task.delete(id, "").await?;
    shim.note_deleted(id);
    let gone =
        super::util::poll_until(ctx.timeout(deadline::TEARDOWN), || !crate::cases::util::is_process(pid as u32)).await;
    ensure!(gone, "the logging binary (pid {pid}) still runs after the process's Delete: the shim must stop it (the runc shim sends SIGTERM, then SIGKILL)");
    Ok(())
}

async fn stdout_without_stderr(ctx: &mut Ctx) -> CaseResult {
    let config = ContainerConfig::new(&["echo", "only stdout", "err", "to nowhere"]);
    let shim = ctx.launch(&config).await?;
    let io = IoSpec { stdin: false, stdout: true, stderr: false };
    let mut task = match ctx.create(&shim, io).await {
        Ok(task) => task,
        // Refusing the shape is allowed; the teardown checks that the refusal left nothing behind.
        Err(_) if ctx.last_create_error.is_some() => return Ok(()),
        Err(e) => return Err(e),
    };
    ctx.start_process(&shim, &task.id, "").await?;
    let waited = wait_exit(ctx, &shim, &task.id, "").await?;
    ensure!(waited.exit_status == 0, "payload should exit 0, Wait says {}", waited.exit_status);
    let output = stdout_of(ctx, &mut task).await?;
    ensure!(
        output == "only stdout\n",
        "Create took a stdout fifo without stderr, so stdout must arrive there: it was {output:?}"
    );
    Ok(())
}

async fn stdin_only(ctx: &mut Ctx) -> CaseResult {
    let input = "through stdin alone\n";
    let (shim, mut task) =
        started(ctx, &ContainerConfig::new(&["expect", input]), IoSpec { stdin: true, stdout: false, stderr: false })
            .await?;
    let stdin = task.io.stdin.as_mut().ok_or_else(|| fail("harness bug: no stdin fifo"))?;
    stdin.write(input.as_bytes(), ctx.timeout(deadline::RPC)).await.map_err(fail)?;
    stdin.close();
    shim.task.close_io(&task.id, "").await?;
    let waited = wait_exit(ctx, &shim, &task.id, "").await?;
    ensure!(
        waited.exit_status == 0,
        "the process should read exactly {input:?} on stdin, then EOF, and exit 0; Wait says {} (3: its stdin held something else, e.g. nothing)",
        waited.exit_status
    );
    Ok(())
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
    let (_shim, _task, waited) =
        run_to_exit(ctx, &["echo", "nobody reads this", "err", "nor this", "exit", "0"]).await?;
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
        return Err(fail(format!(
            "output differs from what the payload wrote at byte {k}: got {:?}, expected {:?}",
            output[k] as char,
            expected(k) as char
        )));
    }
    ensure!(waited.exit_status == 0, "the payload should exit 0 after writing; Wait says {}", waited.exit_status);
    Ok(())
}
