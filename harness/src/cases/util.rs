//! Steps many cases share: launch-create-start, wait for an exit, read a process's output.
use std::sync::Arc;

use containerd_shim_protos::api::{StateResponse, WaitResponse};
use containerd_shim_protos::types::task::Status;

use super::{fail, CaseError};
use crate::bundle::{ContainerConfig, IoSpec, ProcessIo};
use crate::context::{deadline, Ctx, Task};
use crate::shim::instance::Shim;

/// Launches a shim for `config` and creates its container.
pub async fn created(ctx: &mut Ctx, config: &ContainerConfig, io: IoSpec) -> Result<(Arc<Shim>, Task), CaseError> {
    let shim = ctx.launch(config).await?;
    let task = ctx.create(&shim, io).await?;
    Ok((shim, task))
}

/// Launches, creates and starts (Start, then State, as containerd's tasks service does); checks nothing beyond the
/// calls succeeding.
pub async fn started(ctx: &mut Ctx, config: &ContainerConfig, io: IoSpec) -> Result<(Arc<Shim>, Task), CaseError> {
    let (shim, task) = created(ctx, config, io).await?;
    ctx.start_process(&shim, &task.id, "").await?;
    Ok((shim, task))
}

/// Waits for a process to exit as containerd does (for the init, Connect first), with the exit deadline.
pub async fn wait_exit(ctx: &Ctx, shim: &Shim, id: &str, exec_id: &str) -> Result<WaitResponse, CaseError> {
    Ok(ctx.wait_process(shim, id, exec_id).await?)
}

/// Runs the payload with `steps` to completion and returns the Wait reply. As `ctr run` does, the Wait (Connect,
/// then Wait) is issued together with the Start (Start, then State), racing it.
pub async fn run_to_exit(ctx: &mut Ctx, steps: &[&str]) -> Result<(Arc<Shim>, Task, WaitResponse), CaseError> {
    let (shim, task) = created(ctx, &ContainerConfig::new(steps), IoSpec::NULL).await?;
    let (waited, started) = tokio::join!(wait_exit(ctx, &shim, &task.id, ""), ctx.start_process(&shim, &task.id, ""));
    started?;
    let waited = waited?;
    Ok((shim, task, waited))
}

pub fn status_name(state: &StateResponse) -> String {
    match state.status.enum_value() {
        Ok(status) => format!("{status:?}"),
        Err(raw) => format!("unknown status {raw}"),
    }
}

pub fn expect_status(state: &StateResponse, want: Status, what: &str) -> Result<(), CaseError> {
    if state.status.enum_value() == Ok(want) {
        Ok(())
    } else {
        Err(fail(format!("{what}: expected status {want:?}, State says {}", status_name(state))))
    }
}

/// Reads stdout of a process until EOF.
pub async fn stdout_of(ctx: &Ctx, task: &mut Task) -> Result<String, CaseError> {
    let timeout = ctx.timeout(deadline::EXIT);
    let reader = task.io.stdout.as_mut().ok_or_else(|| fail("harness bug: no stdout fifo"))?;
    let (bytes, eof) = reader.read_to_eof(timeout).await;
    if !eof {
        return Err(fail(format!(
            "stdout fifo not closed within {timeout:?} after the process exited; got {} bytes: {:?}",
            bytes.len(),
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
        )));
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// True when `pid` names a live process (not a thread, not a zombie).
pub fn is_process(pid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return false };
    let tgid = status.lines().find_map(|l| l.strip_prefix("Tgid:")).map(|v| v.trim().parse::<u32>().ok());
    tgid == Some(Some(pid)) && crate::process::pid_alive(pid)
}

/// A timestamp as (seconds, nanos); (0, 0) when unset.
pub fn stamp(
    at: &containerd_shim_protos::protobuf::MessageField<
        containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp,
    >,
) -> (i64, i32) {
    at.as_ref().map(|t| (t.seconds, t.nanos)).unwrap_or((0, 0))
}

/// Stdio fifos for an exec, in the bundle's `io/` directory next to the init's.
pub fn exec_io(shim: &Shim, exec_id: &str, io: IoSpec) -> Result<ProcessIo, CaseError> {
    ProcessIo::create(&shim.bundle_dir().join("io"), exec_id, io)
        .map_err(|e| fail(format!("creating exec stdio fifos: {e}")))
}

/// Exec + Start of the payload with `steps` in task `id`; returns the pid Start gave and the exec's stdio.
pub async fn exec_started(
    ctx: &Ctx,
    shim: &Shim,
    id: &str,
    exec_id: &str,
    steps: &[&str],
    io: IoSpec,
) -> Result<(u32, ProcessIo), CaseError> {
    let mut process_io = exec_io(shim, exec_id, io)?;
    let request = ctx.exec_request(id, exec_id, steps, false, &process_io);
    shim.task.exec(&request).await?;
    let started = ctx.start_process(shim, id, exec_id).await?;
    // The shim has opened its side of the fifos by now: from here on EOF means the process's side closed.
    process_io.seal();
    Ok((started.start, process_io))
}

/// Reads a process's stdout until `needle` appears, failing with what did arrive.
pub async fn read_until(ctx: &Ctx, io: &mut ProcessIo, needle: &str, what: &str) -> Result<String, CaseError> {
    let timeout = ctx.timeout(deadline::EXIT);
    let reader = io.stdout.as_mut().ok_or_else(|| fail("harness bug: no stdout fifo"))?;
    let (seen, found) = reader.read_until(needle.as_bytes(), timeout).await;
    let seen = String::from_utf8_lossy(&seen).into_owned();
    if !found {
        return Err(fail(format!(
            "{what}: {needle:?} did not appear on stdout within {timeout:?}; stdout so far: {seen:?}"
        )));
    }
    Ok(seen)
}

/// Reads one of a process's output fifos until EOF.
pub async fn read_all(
    ctx: &Ctx,
    reader: Option<&mut crate::bundle::FifoReader>,
    what: &str,
) -> Result<Vec<u8>, CaseError> {
    let timeout = ctx.timeout(deadline::EXIT);
    let reader = reader.ok_or_else(|| fail(format!("harness bug: no {what} fifo")))?;
    let (bytes, eof) = reader.read_to_eof(timeout).await;
    if !eof {
        return Err(fail(format!(
            "{what} fifo not closed within {timeout:?}; got {} bytes: {:?}",
            bytes.len(),
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
        )));
    }
    Ok(bytes)
}

/// Pids the shim's Pids RPC lists for task `id`.
pub async fn pids_of(shim: &Shim, id: &str) -> Result<Vec<u32>, CaseError> {
    Ok(shim.task.pids(id).await?.processes.iter().map(|p| p.pid).collect())
}

/// Live child processes of `parent` (host pids, from /proc).
pub fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|stat| {
                stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
            }) == Some(parent)
        })
        .filter(|pid| is_process(*pid))
        .collect()
}

/// Polls `check` every 10 ms until it holds or `timeout` passes; returns whether it held.
pub async fn poll_until(timeout: std::time::Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// How long a "does not return early" check watches: long enough to catch a premature reply, short enough to keep
/// cases fast. The most [`hold`] gives.
pub const HOLD: std::time::Duration = std::time::Duration::from_millis(400);
/// The least [`hold`] gives.
pub const MIN_HOLD: std::time::Duration = std::time::Duration::from_millis(50);

/// How long to watch for something that must NOT happen (a Wait returning early, output while paused, the shim
/// exiting): 20 times what a State round trip to this shim takes right now, between MIN_HOLD and HOLD. A shim
/// that does the wrong thing at once does it well within that; a slow shim (gVisor, a VM) gets the longer window.
pub async fn hold(shim: &crate::shim::instance::Shim, id: &str) -> std::time::Duration {
    let asked = std::time::Instant::now();
    let _ = shim.task.state(id, "").await;
    (asked.elapsed() * 20).clamp(MIN_HOLD, HOLD)
}

/// Closes, from the harness side, every connection this process has to the unix socket at `address` (a client
/// going away, as containerd does when it restarts). Returns how many connections were shut down.
pub fn drop_connections(address: &str) -> usize {
    let wanted: Vec<u8> = match address.strip_prefix("unix://") {
        Some(rest) if rest.starts_with('@') => {
            let mut name = vec![0u8];
            name.extend_from_slice(&rest.as_bytes()[1..]);
            name
        }
        Some(rest) => rest.as_bytes().to_vec(),
        None => return 0,
    };
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else { return 0 };
    let mut closed = 0;
    for entry in entries.flatten() {
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let is_socket =
            std::fs::read_link(entry.path()).map(|l| l.to_string_lossy().starts_with("socket:")).unwrap_or(false);
        if is_socket && peer_name(fd).as_deref() == Some(wanted.as_slice()) {
            // shutdown(2), not close(2): the fd stays owned by the client, which sees EOF and winds down.
            if unsafe { libc::shutdown(fd, libc::SHUT_RDWR) } == 0 {
                closed += 1;
            }
        }
    }
    closed
}

/// The address the peer of a connected unix socket is bound to (path bytes; abstract names start with NUL).
fn peer_name(fd: i32) -> Option<Vec<u8>> {
    let mut address: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    let rc = unsafe { libc::getpeername(fd, &mut address as *mut _ as *mut libc::sockaddr, &mut len) };
    if rc != 0 || address.sun_family != libc::AF_UNIX as libc::sa_family_t {
        return None;
    }
    let header = std::mem::size_of::<libc::sa_family_t>();
    let n = (len as usize).saturating_sub(header).min(address.sun_path.len());
    let mut bytes: Vec<u8> = address.sun_path[..n].iter().map(|c| *c as u8).collect();
    if bytes.first() != Some(&0) {
        // A filesystem path is NUL-terminated within the length the kernel reports.
        if let Some(end) = bytes.iter().position(|b| *b == 0) {
            bytes.truncate(end);
        }
    }
    Some(bytes)
}

/// The skip an optional RPC (MAY) earns when the shim answers that it does not implement it.
pub fn unimplemented_skip(method: &str, error: &crate::shim::task::RpcError) -> Option<CaseError> {
    (error.code() == Some(containerd_shim_protos::ttrpc::Code::UNIMPLEMENTED))
        .then(|| CaseError::Skip(format!("the shim does not implement {method}: {error}")))
}

/// Whether `pid` belongs to this case: every shim it launched and every container process carries the case's marker
/// in its environment. Checked before the harness signals a pid a shim reported (a wrong pid must never hit a
/// stranger).
pub fn carries_marker(ctx: &Ctx, pid: u32) -> bool {
    let needle = ctx.marker_env();
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|env| env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()))
        .unwrap_or(false)
}
