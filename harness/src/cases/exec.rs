//! Exec: additional processes in a running container (`ctr task exec`, `docker exec`, CRI ExecSync and probes).
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::oci::ProcessDetails;
use containerd_shim_protos::ttrpc::Code;
use containerd_shim_protos::types::task::Status;

use super::util::{exec_io, exec_started, expect_status, read_all, read_until, run_to_exit, stamp, started, wait_exit};
use super::{expect_code, expect_refused, fail, Case, CaseResult};
use crate::bundle::{ContainerConfig, IoSpec};
use crate::context::{deadline, Ctx};
use crate::{case, ensure};

pub fn cases() -> Vec<Case> {
    vec![
        case!("exec::runs_with_own_exit_status", Must, ["exec"],
            breaks_with: "exec-exit-status-zero",
            ref: "runtime-v2.md Exec/Start with exec_id; task.proto WaitRequest.exec_id (CRI ExecSync reports the exec's exit code)",
            "an exec started in a running task runs, Wait on its exec id returns its own exit status (7), and the init keeps running",
            runs_with_own_exit_status),
        case!("exec::stdout_through_fifo", Must, ["exec"],
            breaks_with: "exec-drop-stdout",
            ref: "task.proto ExecProcessRequest stdout; runtime-v2.md I/O (the caller creates the exec's fifos)",
            "what an exec writes to stdout arrives whole through its own stdout fifo, then EOF",
            stdout_through_fifo),
        case!("exec::stdin_through_fifo", Must, ["exec"],
            breaks_with: "closeio-noop",
            ref: "task.proto ExecProcessRequest stdin, CloseIORequest exec_id (docker exec -i closes its fifo, then CloseIO)",
            "an exec's stdin reaches it through its fifo (echoed back by `cat`), and closing the fifo plus CloseIO on the exec ends it",
            stdin_through_fifo),
        case!("exec::duplicate_id_refused", Must, ["exec"],
            breaks_with: "exec-dup-ok",
            ref: "runc shim Exec: ReserveProcess refuses a duplicate exec id (AlreadyExists \"id <exec>\")",
            "a second Exec with an exec id already in use is refused and does not replace the first exec",
            duplicate_id_refused),
        case!("exec::in_stopped_task_refused", Must, ["exec"],
            breaks_with: "exec-stopped-ok",
            ref: "runc shim: stoppedState.Exec \"cannot exec in a stopped state\"; an exec needs the container's namespaces",
            "Exec (or, at the latest, its Start) in a task whose init has exited is refused, and nothing runs",
            in_stopped_task_refused),
        case!("exec::delete_exited", Must, ["exec"],
            breaks_with: "exec-delete-refused",
            ref: "task.proto DeleteRequest.exec_id; containerd deletes every exec after it exits (process.Delete)",
            "Delete of an exited exec returns its pid and exit status, and the exec is gone afterwards",
            delete_exited),
        case!("exec::kill_reaches_exec", Must, ["exec"],
            breaks_with: "exec-kill-noop",
            ref: "task.proto KillRequest.exec_id (ctr task kill --exec-id; CRI ExecSync timeout kills the exec)",
            "Kill SIGKILL with an exec id ends that exec (Wait says 137) and leaves the init running",
            kill_reaches_exec),
        case!("exec::state_of_exec", Must, ["exec"],
            breaks_with: "exec-state-init-pid",
            ref: "task.proto StateRequest.exec_id; containerd's process.Status reads it",
            "State with an exec id describes the exec: its own pid and RUNNING, then STOPPED with its exit status",
            state_of_exec),
        case!("exec::pids_lists_init_and_execs", Must, ["exec"],
            breaks_with: "pids-init-only",
            ref: "task.proto PidsResponse (every process of the container; `docker top` and `ctr task ps` list them)",
            "Pids lists the init and a running exec; an entry carrying ProcessDetails names the right exec id",
            pids_lists_init_and_execs),
        case!("exec::terminal_gets_a_pty", Must, ["exec", "terminal"],
            breaks_with: "exec-terminal-ignored",
            ref: "task.proto ExecProcessRequest.terminal; `docker exec -it` and `kubectl exec -it` send terminal=true with an empty stderr (runc shim: runc exec --console-socket)",
            "an Exec with terminal=true and no stderr gets a pty: its stdin and stdout are a tty, its output arrives on the stdout fifo",
            terminal_gets_a_pty),
        case!("exec::resize_exec_pty", Must, ["exec", "terminal"],
            breaks_with: "exec-resize-noop",
            ref: "task.proto ResizePtyRequest.exec_id; docker and CRI resize an exec's console after its Start and on every client SIGWINCH (runc shim Resize looks the process up by exec id)",
            "ResizePty with an exec id sets that exec's window size (the exec reads it back)",
            resize_exec_pty),
        case!("exec::resize_zero_accepted", Should, ["exec", "terminal"],
            breaks_with: "resize-zero-refused",
            ref: "task.proto ResizePtyRequest width/height are plain uint32; the runc shim hands any size to the console (TIOCSWINSZ takes 0x0), which clients send before they know the terminal's size",
            "ResizePty 0x0 on a terminal exec returns OK, and a later real resize still takes effect",
            resize_zero_accepted),
        case!("exec::closeio_on_terminal_exec", Should, ["exec", "terminal"],
            breaks_with: "closeio-terminal-fails",
            ref: "CRI execInternal and docker exec -it close an exec's stdin when the client's stream ends, then CloseIO (containerd process.CloseIO WithStdinCloser) and wait for the exec; the runc shim then shuts the console down, hanging the terminal up (the Go shim's exec exits 129, SIGHUP)",
            "CloseIO on a running terminal exec whose client closed stdin succeeds, and the exec reading its terminal ends (EOF or hangup) without being killed",
            closeio_on_terminal_exec),
        case!("exec::spec_without_env", Must, ["exec"],
            breaks_with: "exec-needs-env",
            ref: "runtime-spec Process.env is optional (Go `env,omitempty`): containerd passes the exec's Process JSON as the client built it, without `env` when its list is empty",
            "an Exec whose process spec has no `env` (only args, the container's user and cwd) runs and exits 0 with its output",
            spec_without_env),
    ]
}

async fn runs_with_own_exit_status(ctx: &mut Ctx) -> CaseResult {
    let (shim, task) = started(ctx, &ContainerConfig::new(&["forever"]), IoSpec::NULL).await?;
    let (pid, _io) = exec_started(ctx, &shim, &task.id, "e7", &["exit", "7"], IoSpec::NULL).await?;
    ensure!(pid > 0 && pid != task.pid, "Start of the exec returned pid {pid}; the init's pid is {}", task.pid);
    let waited = wait_exit(ctx, &shim, &task.id, "e7").await?;
    ensure!(
        waited.exit_status == 7,
        "the exec exited 7; Wait on its exec id returned exit_status {}",
        waited.exit_status
    );
    ensure!(stamp(&waited.exited_at).0 > 0, "Wait on the exec returned no exited_at");
    let state = shim.task.state(&task.id, "").await?;
    expect_status(&state, Status::RUNNING, "the init after its exec exited")?;
    Ok(())
}

async fn stdout_through_fifo(ctx: &mut Ctx) -> CaseResult {
    let (shim, task) = started(ctx, &ContainerConfig::new(&["forever"]), IoSpec::NULL).await?;
    let steps = ["echo", "out of the exec", "echo", "second line"];
    let (_pid, mut io) = exec_started(ctx, &shim, &task.id, "out", &steps, IoSpec::OUT).await?;
    let output = read_all(ctx, io.stdout.as_mut(), "exec stdout").await?;
    let output = String::from_utf8_lossy(&output);
    ensure!(output == "out of the exec\nsecond line\n", "the exec's stdout was {output:?}");
    let waited = wait_exit(ctx, &shim, &task.id, "out").await?;
    ensure!(waited.exit_status == 0, "the exec should exit 0, Wait says {}", waited.exit_status);
    Ok(())
}

async fn stdin_through_fifo(ctx: &mut Ctx) -> CaseResult {
    let (shim, task) = started(ctx, &ContainerConfig::new(&["forever"]), IoSpec::NULL).await?;
    let (_pid, mut io) = exec_started(ctx, &shim, &task.id, "cat", &["cat"], IoSpec::ALL).await?;
    let stdin = io.stdin.as_mut().ok_or_else(|| fail("harness bug: no stdin fifo"))?;
    stdin.write(b"ping through stdin\n", ctx.timeout(deadline::RPC)).await.map_err(fail)?;
    read_until(ctx, &mut io, "ping through stdin\n", "the exec's cat echoing its stdin").await?;
    // As docker does: close the client's end of the fifo, then tell the shim.
    if let Some(stdin) = io.stdin.as_mut() {
        stdin.close();
    }
    shim.task.close_io(&task.id, "cat").await?;
    let waited = wait_exit(ctx, &shim, &task.id, "cat").await?;
    ensure!(waited.exit_status == 0, "cat should exit 0 at end of input; Wait says {}", waited.exit_status);
    let output = read_all(ctx, io.stdout.as_mut(), "exec stdout").await?;
    let output = String::from_utf8_lossy(&output);
    ensure!(output == "ping through stdin\n", "cat's stdout should be exactly its input; it was {output:?}");
    Ok(())
}

async fn duplicate_id_refused(ctx: &mut Ctx) -> CaseResult {
    let (shim, task) = started(ctx, &ContainerConfig::new(&["forever"]), IoSpec::NULL).await?;
    let mut first_io = exec_io(&shim, "twin", IoSpec::OUT)?;
    let first = ctx.exec_request(&task.id, "twin", &["echo", "the first exec", "exit", "0"], false, &first_io);
    shim.task.exec(&first).await?;
    let null = exec_io(&shim, "twin-second", IoSpec::NULL)?;
    let second = ctx.exec_request(&task.id, "twin", &["echo", "the second exec", "exit", "9"], false, &null);
    expect_refused(shim.task.exec(&second).await, "a second Exec with exec id \"twin\"")?;
    shim.task.start(&task.id, "twin").await?;
    first_io.seal();
    let output = read_all(ctx, first_io.stdout.as_mut(), "the first exec's stdout").await?;
    let waited = wait_exit(ctx, &shim, &task.id, "twin").await?;
    ensure!(
        waited.exit_status == 0 && output == b"the first exec\n",
        "after the refused duplicate, exec \"twin\" should still be the first one (stdout \"the first exec\\n\", exit 0); \
         it printed {:?} and exited {}",
        String::from_utf8_lossy(&output),
        waited.exit_status
    );
    Ok(())
}

async fn in_stopped_task_refused(ctx: &mut Ctx) -> CaseResult {
    let (shim, task, _) = run_to_exit(ctx, &["exit", "0"]).await?;
    let mut io = exec_io(&shim, "late", IoSpec::OUT)?;
    let request = ctx.exec_request(&task.id, "late", &["echo", "ran in a stopped task"], false, &io);
    if shim.task.exec(&request).await.is_err() {
        return Ok(());
    }
    match shim.task.start(&task.id, "late").await {
        Err(_) => Ok(()),
        Ok(started) => {
            io.seal();
            let (output, _) = match io.stdout.as_mut() {
                Some(reader) => reader.read_to_eof(ctx.timeout(deadline::EVENT)).await,
                None => (Vec::new(), false),
            };
            Err(fail(format!(
                "Exec and Start of an exec in a stopped task both succeeded (pid {}); the exec printed {:?}",
                started.pid,
                String::from_utf8_lossy(&output)
            )))
        }
    }
}

async fn delete_exited(ctx: &mut Ctx) -> CaseResult {
    let (shim, task) = started(ctx, &ContainerConfig::new(&["forever"]), IoSpec::NULL).await?;
    let (pid, _io) = exec_started(ctx, &shim, &task.id, "gone", &["exit", "3"], IoSpec::NULL).await?;
    let waited = wait_exit(ctx, &shim, &task.id, "gone").await?;
    let deleted = shim.task.delete(&task.id, "gone").await?;
    ensure!(deleted.pid == pid, "Delete of the exec returned pid {}, its Start said {pid}", deleted.pid);
    ensure!(deleted.exit_status == 3, "the exec exited 3; Delete returned exit_status {}", deleted.exit_status);
    ensure!(
        stamp(&deleted.exited_at) == stamp(&waited.exited_at),
        "Delete's exited_at {:?} differs from Wait's {:?}",
        stamp(&deleted.exited_at),
        stamp(&waited.exited_at)
    );
    expect_code(shim.task.state(&task.id, "gone").await, Code::NOT_FOUND, "State of the deleted exec")?;
    let state = shim.task.state(&task.id, "").await?;
    expect_status(&state, Status::RUNNING, "the init after Delete of its exec")
}

async fn kill_reaches_exec(ctx: &mut Ctx) -> CaseResult {
    let (shim, task) = started(ctx, &ContainerConfig::new(&["forever"]), IoSpec::NULL).await?;
    let (_pid, mut io) = exec_started(ctx, &shim, &task.id, "victim", &["ready", "forever"], IoSpec::OUT).await?;
    read_until(ctx, &mut io, "ready\n", "the exec starting").await?;
    shim.task.kill(&task.id, "victim", libc::SIGKILL as u32, false).await?;
    let waited = wait_exit(ctx, &shim, &task.id, "victim").await?;
    ensure!(
        waited.exit_status == 137,
        "after Kill SIGKILL of the exec, Wait returned exit_status {}, expected 137",
        waited.exit_status
    );
    let state = shim.task.state(&task.id, "").await?;
    expect_status(&state, Status::RUNNING, "the init after its exec was killed")
}

async fn state_of_exec(ctx: &mut Ctx) -> CaseResult {
    let (shim, task) = started(ctx, &ContainerConfig::new(&["forever"]), IoSpec::NULL).await?;
    let (pid, mut io) = exec_started(ctx, &shim, &task.id, "probe", &["ready", "forever"], IoSpec::OUT).await?;
    read_until(ctx, &mut io, "ready\n", "the exec starting").await?;
    let state = shim.task.state(&task.id, "probe").await?;
    expect_status(&state, Status::RUNNING, "State of a running exec")?;
    ensure!(
        state.pid == pid && pid != task.pid,
        "State of the exec reports pid {}; its Start returned {pid} (the init is {})",
        state.pid,
        task.pid
    );
    shim.task.kill(&task.id, "probe", libc::SIGKILL as u32, false).await?;
    wait_exit(ctx, &shim, &task.id, "probe").await?;
    let state = shim.task.state(&task.id, "probe").await?;
    expect_status(&state, Status::STOPPED, "State of an exited exec")?;
    ensure!(state.exit_status == 137, "State of the killed exec says exit_status {}, expected 137", state.exit_status);
    ensure!(stamp(&state.exited_at).0 > 0, "State of the exited exec has no exited_at");
    Ok(())
}

async fn pids_lists_init_and_execs(ctx: &mut Ctx) -> CaseResult {
    let (shim, task) = started(ctx, &ContainerConfig::new(&["forever"]), IoSpec::NULL).await?;
    let (pid, mut io) = exec_started(ctx, &shim, &task.id, "listed", &["ready", "forever"], IoSpec::OUT).await?;
    read_until(ctx, &mut io, "ready\n", "the exec starting").await?;
    let reply = shim.task.pids(&task.id).await?;
    let pids: Vec<u32> = reply.processes.iter().map(|p| p.pid).collect();
    ensure!(pids.contains(&task.pid), "Pids {pids:?} does not list the init pid {}", task.pid);
    ensure!(pids.contains(&pid), "Pids {pids:?} does not list the running exec's pid {pid}");
    for process in &reply.processes {
        let Some(info) = process.info.as_ref() else { continue };
        if !info.type_url.ends_with("ProcessDetails") {
            continue;
        }
        let details = ProcessDetails::parse_from_bytes(&info.value).map_err(|e| {
            fail(format!("Pids entry {} carries a ProcessDetails that does not decode: {e}", process.pid))
        })?;
        if process.pid == pid {
            ensure!(
                details.exec_id == "listed",
                "Pids entry for the exec (pid {pid}) names exec id {:?}, expected \"listed\"",
                details.exec_id
            );
        } else if process.pid == task.pid {
            ensure!(
                details.exec_id.is_empty(),
                "Pids entry for the init (pid {}) names exec id {:?}",
                task.pid,
                details.exec_id
            );
        }
    }
    Ok(())
}

/// Exec + Start of the payload on a terminal (stderr empty, as docker and CRI send it).
async fn terminal_exec(
    ctx: &Ctx,
    shim: &crate::shim::instance::Shim,
    id: &str,
    exec_id: &str,
    steps: &[&str],
    io: IoSpec,
) -> Result<crate::bundle::ProcessIo, crate::cases::CaseError> {
    let mut process_io = exec_io(shim, exec_id, io)?;
    let request = ctx.exec_request(id, exec_id, steps, true, &process_io);
    shim.task.exec(&request).await?;
    ctx.start_process(shim, id, exec_id).await?;
    process_io.seal();
    Ok(process_io)
}

async fn terminal_gets_a_pty(ctx: &mut Ctx) -> CaseResult {
    let (shim, task) = started(ctx, &ContainerConfig::new(&["forever"]), IoSpec::NULL).await?;
    let mut io = terminal_exec(ctx, &shim, &task.id, "tty", &["tty", "echo", "after the check"], IoSpec::OUT).await?;
    let output = read_until(ctx, &mut io, "after the check", "the exec reporting its terminal").await?;
    wait_exit(ctx, &shim, &task.id, "tty").await?;
    let report = super::io::tty_report(&output)
        .ok_or_else(|| fail(format!("no `tty ...` line on the exec's stdout: {output:?}")))?;
    ensure!(
        report.0 && report.1,
        "an exec with terminal=true should have a tty for stdin and stdout; it reports stdin={} stdout={} (output {output:?})",
        report.0,
        report.1
    );
    Ok(())
}

async fn resize_exec_pty(ctx: &mut Ctx) -> CaseResult {
    let (shim, task) = started(ctx, &ContainerConfig::new(&["forever"]), IoSpec::NULL).await?;
    // `cat` holds the exec until the harness sends EOF (^D on a tty), after the resize.
    let steps = ["ready", "cat", "tty", "echo", "done"];
    let mut io = terminal_exec(ctx, &shim, &task.id, "sized", &steps, IoSpec::ALL).await?;
    read_until(ctx, &mut io, "ready", "the exec starting on its terminal").await?;
    shim.task.resize_pty(&task.id, "sized", 97, 31).await?;
    let stdin = io.stdin.as_mut().ok_or_else(|| fail("harness bug: no stdin fifo"))?;
    stdin.write(b"\x04", ctx.timeout(deadline::RPC)).await.map_err(fail)?;
    let output = read_until(ctx, &mut io, "done", "the exec reporting its window size after ^D").await?;
    wait_exit(ctx, &shim, &task.id, "sized").await?;
    let report = super::io::tty_report(&output)
        .ok_or_else(|| fail(format!("no `tty ...` line on the exec's stdout: {output:?}")))?;
    ensure!(
        (report.2, report.3) == (31, 97),
        "after ResizePty exec_id=\"sized\" width=97 height=31 the exec reads rows={} cols={} (output {output:?})",
        report.2,
        report.3
    );
    Ok(())
}

async fn closeio_on_terminal_exec(ctx: &mut Ctx) -> CaseResult {
    let (shim, task) = started(ctx, &ContainerConfig::new(&["forever"]), IoSpec::NULL).await?;
    let mut io =
        terminal_exec(ctx, &shim, &task.id, "shell", &["ready", "cat", "echo", "input ended"], IoSpec::ALL).await?;
    read_until(ctx, &mut io, "ready", "the exec starting on its terminal").await?;
    if let Some(stdin) = io.stdin.as_mut() {
        stdin.close();
    }
    shim.task
        .close_io(&task.id, "shell")
        .await
        .map_err(|e| fail(format!("CloseIO on a terminal exec (after its client closed stdin) failed: {e}")))?;
    match wait_exit(ctx, &shim, &task.id, "shell").await {
        Ok(_) => Ok(()),
        Err(e) => {
            let _ = shim.task.kill(&task.id, "shell", libc::SIGKILL as u32, false).await;
            Err(fail(format!(
                "after its client closed stdin and CloseIO, the terminal exec (`cat` on its tty) did not end: {}",
                match e {
                    super::CaseError::Fail(m) | super::CaseError::Skip(m) => m,
                }
            )))
        }
    }
}

async fn spec_without_env(ctx: &mut Ctx) -> CaseResult {
    let (shim, task) = started(ctx, &ContainerConfig::new(&["forever"]), IoSpec::NULL).await?;
    let mut io = exec_io(&shim, "bare", IoSpec::OUT)?;
    let mut request = ctx.exec_request(&task.id, "bare", &["echo", "ran without env", "exit", "0"], false, &io);
    let spec = request.spec.as_mut().ok_or_else(|| fail("harness bug: exec request without a spec"))?;
    let mut process: serde_json::Value =
        serde_json::from_slice(&spec.value).map_err(|e| fail(format!("harness bug: exec spec: {e}")))?;
    if let Some(fields) = process.as_object_mut() {
        fields.remove("env");
        fields.entry("user").or_insert_with(|| serde_json::json!({"uid": 0, "gid": 0}));
    }
    spec.value = serde_json::to_vec(&process).map_err(|e| fail(format!("harness bug: exec spec: {e}")))?;
    let shown = process.to_string();
    shim.task
        .exec(&request)
        .await
        .map_err(|e| fail(format!("Exec of a process spec without `env` ({shown}) was refused: {e}")))?;
    ctx.start_process(&shim, &task.id, "bare").await?;
    io.seal();
    let output = read_all(ctx, io.stdout.as_mut(), "exec stdout").await?;
    let waited = wait_exit(ctx, &shim, &task.id, "bare").await?;
    ensure!(
        waited.exit_status == 0 && output == b"ran without env\n",
        "an exec without `env` should print \"ran without env\" and exit 0; it printed {:?} and exited {}",
        String::from_utf8_lossy(&output),
        waited.exit_status
    );
    Ok(())
}

async fn resize_zero_accepted(ctx: &mut Ctx) -> CaseResult {
    let (shim, task) = started(ctx, &ContainerConfig::new(&["forever"]), IoSpec::NULL).await?;
    let steps = ["ready", "cat", "tty", "echo", "done"];
    let mut io = terminal_exec(ctx, &shim, &task.id, "unsized", &steps, IoSpec::ALL).await?;
    read_until(ctx, &mut io, "ready", "the exec starting on its terminal").await?;
    shim.task
        .resize_pty(&task.id, "unsized", 0, 0)
        .await
        .map_err(|e| fail(format!("ResizePty width=0 height=0 on a terminal exec failed: {e}")))?;
    shim.task.resize_pty(&task.id, "unsized", 80, 24).await?;
    let stdin = io.stdin.as_mut().ok_or_else(|| fail("harness bug: no stdin fifo"))?;
    stdin.write(b"\x04", ctx.timeout(deadline::RPC)).await.map_err(fail)?;
    let output = read_until(ctx, &mut io, "done", "the exec reporting its window size after ^D").await?;
    wait_exit(ctx, &shim, &task.id, "unsized").await?;
    let report = super::io::tty_report(&output)
        .ok_or_else(|| fail(format!("no `tty ...` line on the exec's stdout: {output:?}")))?;
    ensure!(
        (report.2, report.3) == (24, 80),
        "after ResizePty 0x0 then 80x24 the exec reads rows={} cols={}",
        report.2,
        report.3
    );
    Ok(())
}
