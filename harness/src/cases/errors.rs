//! Error codes: containerd turns ttrpc status codes into errdefs errors (NotFound, AlreadyExists, FailedPrecondition,
//! NotImplemented) and branches on them, so the code matters as much as the refusal.
use containerd_shim_protos::api::{CheckpointTaskRequest, Empty, StateRequest, UpdateTaskRequest};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::ttrpc::Code;
use containerd_shim_protos::types::task::Status;

use super::util::{exec_io, expect_status, started, wait_exit};
use super::{expect_code, fail, Case, CaseResult};
use crate::bundle::{ContainerConfig, IoSpec};
use crate::context::Ctx;
use crate::shim::instance::Shim;
use crate::shim::task::{code_name, RpcError};
use crate::{case, ensure};

/// The mock's switch for answering RPCs with Unimplemented (shims/mock/FAULTS.md); other shims ignore it.
const MOCK_UNIMPLEMENTED: &str = "io.shimcompat.mock.unimplemented";

pub fn cases() -> Vec<Case> {
    vec![
        case!("errors::unknown_container_not_found", Must, ["multi-task"],
            breaks_with: "notfound-as-unknown",
            ref: "runc shim getContainer: NotFound \"container not created\"; containerd treats NotFound as \"task gone\" (shim Delete cleanup, tasks Get, CRI StopContainer's Kill, task metrics' Stats)",
            "State, Start, Delete, Kill, Wait and Stats naming a container id the shim does not know answer NotFound (Stats may answer Unimplemented)",
            unknown_container_not_found),
        case!("errors::unknown_exec_not_found", Must, ["exec"],
            breaks_with: "notfound-as-unknown",
            ref: "runc shim Container.Process: NotFound \"process does not exist\"; containerd's tasks Get passes NotFound through, CRI ignores NotFound when deleting an exec",
            "State, Start, Wait and Delete naming an exec id the task does not have answer NotFound",
            unknown_exec_not_found),
        case!("errors::every_rpc_not_found", Should, ["exec"],
            breaks_with: "notfound-as-unknown",
            ref: "errdefs: a missing object is NotFound (code 5) whichever RPC names it; runc shim maps Container.Process and getContainer errors to NotFound",
            "every Task RPC naming an unknown container or an unknown exec id answers NotFound (optional RPCs may answer Unimplemented)",
            every_rpc_not_found),
        case!("errors::already_exists_code", Should, ["exec"],
            breaks_with: "alreadyexists-as-unknown",
            ref: "runc shim Exec: errdefs.ErrAlreadyExists \"id <exec>\" (code 6)",
            "a duplicate exec id is refused with AlreadyExists, not a generic error",
            already_exists_code),
        case!("errors::failed_precondition_code", Should, ["exec"],
            breaks_with: "exec-stopped-ok",
            ref: "runc shim: Kill of an exec never started is FailedPrecondition (\"process not created\"); Start of an exec once the init is gone is FailedPrecondition",
            "Kill of an added but unstarted exec, and Start of an exec after its init exited, answer FailedPrecondition",
            failed_precondition_code),
        case!("errors::unimplemented_code", Should, [],
            breaks_with: "unimplemented-as-notfound",
            ref: "ttrpc: an unknown method is Unimplemented (12); containerd maps it to ErrNotImplemented, while NotFound would mean \"no such task\" (the Rust codegen default answers NotFound)",
            "an unknown Task method answers Unimplemented, and an optional RPC (Stats, Update) on a live task never answers NotFound",
            unimplemented_code),
        case!("errors::unknown_id_never_crashes", Must, ["multi-task"],
            breaks_with: "crash-on-unknown-id",
            ref: "containerd may ask a shim about ids it does not hold (restore, grouped shims, races with delete); a shim serves several containers",
            "every RPC with an unknown container id is answered, and the shim keeps serving its own task afterwards",
            unknown_id_never_crashes),
    ]
}

/// The optional RPCs a shim may not implement: an Unimplemented answer is acceptable for them.
const OPTIONAL: &[&str] = &["Pause", "Resume", "ResizePty", "Stats", "Update", "Checkpoint"];

fn resources_any() -> Any {
    let mut any = Any::new();
    any.type_url = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into();
    any.value = b"{}".to_vec();
    any
}

/// Calls every RPC that names a container with `id` (and `exec_id` where the RPC takes one); returns each method
/// with its result, replies reduced to `()`.
async fn call_all(
    ctx: &Ctx,
    shim: &Shim,
    id: &str,
    exec_id: &str,
) -> Result<Vec<(&'static str, Result<(), RpcError>)>, super::CaseError> {
    let task = &shim.task;
    let quick = ctx.timeout(std::time::Duration::from_secs(2));
    let null = exec_io(shim, &format!("probe-{}", ctx.env.next()), IoSpec::NULL)?;
    let exec = ctx.exec_request(id, if exec_id.is_empty() { "probe" } else { exec_id }, &["exit", "0"], false, &null);
    let update = UpdateTaskRequest { id: id.into(), resources: Some(resources_any()).into(), ..Default::default() };
    let checkpoint = CheckpointTaskRequest {
        id: id.into(),
        path: shim.bundle_dir().join("checkpoint-unknown").display().to_string(),
        ..Default::default()
    };
    let mut results: Vec<(&'static str, Result<(), RpcError>)> = vec![
        ("State", task.state(id, exec_id).await.map(drop)),
        ("Start", task.start(id, exec_id).await.map(drop)),
        ("Wait", task.wait(id, exec_id, quick).await.map(drop)),
        ("Kill", task.kill(id, exec_id, libc::SIGKILL as u32, false).await.map(drop)),
        ("CloseIO", task.close_io(id, exec_id).await.map(drop)),
        ("ResizePty", task.resize_pty(id, exec_id, 80, 24).await.map(drop)),
        ("Delete", task.delete(id, exec_id).await.map(drop)),
    ];
    if exec_id.is_empty() {
        results.extend([
            ("Exec", task.exec(&exec).await.map(drop)),
            ("Pids", task.pids(id).await.map(drop)),
            ("Pause", task.pause(id).await.map(drop)),
            ("Resume", task.resume(id).await.map(drop)),
            ("Stats", task.stats(id).await.map(drop)),
            ("Update", task.update(&update).await.map(drop)),
            ("Checkpoint", task.checkpoint(&checkpoint).await.map(drop)),
        ]);
    }
    Ok(results)
}

fn describe(result: &Result<(), RpcError>) -> String {
    match result {
        Ok(()) => "OK".into(),
        Err(RpcError::Status { code, message, .. }) => format!("{} ({message})", code_name(*code)),
        Err(other) => other.to_string(),
    }
}

/// Checks that each result of the methods in `only` (all when empty) is NotFound, or Unimplemented for an optional
/// RPC; lists every divergence.
fn all_not_found(results: &[(&'static str, Result<(), RpcError>)], what: &str, only: &[&str]) -> CaseResult {
    let wrong: Vec<String> = results
        .iter()
        .filter(|(method, _)| only.is_empty() || only.contains(method))
        .filter(|(method, result)| {
            let code = result.as_ref().err().and_then(RpcError::code);
            !(code == Some(Code::NOT_FOUND) || (OPTIONAL.contains(method) && code == Some(Code::UNIMPLEMENTED)))
        })
        .map(|(method, result)| format!("  {method}: {}", describe(result)))
        .collect();
    ensure!(
        wrong.is_empty(),
        "{what}: expected NOT_FOUND from every RPC; these answered otherwise:\n{}",
        wrong.join("\n")
    );
    Ok(())
}

async fn unknown_container_not_found(ctx: &mut Ctx) -> CaseResult {
    let (shim, task) = started(ctx, &ContainerConfig::new(&["forever"]), IoSpec::NULL).await?;
    let unknown = format!("{}-unknown", task.id);
    let results = call_all(ctx, &shim, &unknown, "").await?;
    let relied_on = ["State", "Start", "Delete", "Kill", "Wait", "Stats"];
    all_not_found(&results, &format!("RPCs naming the unknown container {unknown:?}"), &relied_on)
}

async fn unknown_exec_not_found(ctx: &mut Ctx) -> CaseResult {
    let (shim, task) = started(ctx, &ContainerConfig::new(&["forever"]), IoSpec::NULL).await?;
    let results = call_all(ctx, &shim, &task.id, "no-such-exec").await?;
    let relied_on = ["State", "Start", "Delete", "Wait"];
    all_not_found(&results, "RPCs naming the unknown exec id \"no-such-exec\"", &relied_on)?;
    let state = shim.task.state(&task.id, "").await?;
    expect_status(&state, Status::RUNNING, "the task after RPCs about an unknown exec")
}

async fn every_rpc_not_found(ctx: &mut Ctx) -> CaseResult {
    let (shim, task) = started(ctx, &ContainerConfig::new(&["forever"]), IoSpec::NULL).await?;
    let unknown = format!("{}-unknown", task.id);
    let mut wrong = Vec::new();
    let containers = call_all(ctx, &shim, &unknown, "").await?;
    if let Err(super::CaseError::Fail(message)) =
        all_not_found(&containers, &format!("the unknown container {unknown:?}"), &[])
    {
        wrong.push(message);
    }
    let execs = call_all(ctx, &shim, &task.id, "no-such-exec").await?;
    if let Err(super::CaseError::Fail(message)) = all_not_found(&execs, "the unknown exec id \"no-such-exec\"", &[]) {
        wrong.push(message);
    }
    ensure!(wrong.is_empty(), "{}", wrong.join("\n"));
    let state = shim.task.state(&task.id, "").await?;
    expect_status(&state, Status::RUNNING, "the task after RPCs about unknown ids")
}

async fn already_exists_code(ctx: &mut Ctx) -> CaseResult {
    let (shim, task) = started(ctx, &ContainerConfig::new(&["forever"]), IoSpec::NULL).await?;
    let null = exec_io(&shim, "same", IoSpec::NULL)?;
    let request = ctx.exec_request(&task.id, "same", &["exit", "0"], false, &null);
    shim.task.exec(&request).await?;
    expect_code(shim.task.exec(&request).await, Code::ALREADY_EXISTS, "a second Exec with exec id \"same\"")
}

async fn failed_precondition_code(ctx: &mut Ctx) -> CaseResult {
    let (shim, task) = started(ctx, &ContainerConfig::new(&["forever"]), IoSpec::NULL).await?;
    let null = exec_io(&shim, "pending", IoSpec::NULL)?;
    shim.task.exec(&ctx.exec_request(&task.id, "pending", &["echo", "too late"], false, &null)).await?;
    expect_code(
        shim.task.kill(&task.id, "pending", libc::SIGKILL as u32, false).await,
        Code::FAILED_PRECONDITION,
        "Kill of an exec that was added but never started",
    )?;
    shim.task.kill(&task.id, "", libc::SIGKILL as u32, false).await?;
    wait_exit(ctx, &shim, &task.id, "").await?;
    expect_code(
        shim.task.start(&task.id, "pending").await,
        Code::FAILED_PRECONDITION,
        "Start of an exec after the init exited",
    )
}

async fn unimplemented_code(ctx: &mut Ctx) -> CaseResult {
    // On the mock, Stats and Update answer Unimplemented here; other shims ignore the annotation.
    let config = ContainerConfig::new(&["forever"]).annotation(MOCK_UNIMPLEMENTED, "Stats,Update");
    let (shim, task) = started(ctx, &config, IoSpec::NULL).await?;
    let request = StateRequest { id: task.id.clone(), ..Default::default() };
    let unknown: Result<Empty, RpcError> = shim.task.call("NoSuchMethod", &request).await;
    expect_code(unknown, Code::UNIMPLEMENTED, "a call to the unknown method NoSuchMethod of the Task service")?;
    let update =
        UpdateTaskRequest { id: task.id.clone(), resources: Some(resources_any()).into(), ..Default::default() };
    let results =
        [("Stats", shim.task.stats(&task.id).await.map(drop)), ("Update", shim.task.update(&update).await.map(drop))];
    for (method, result) in &results {
        if result.as_ref().err().and_then(RpcError::code) == Some(Code::NOT_FOUND) {
            return Err(fail(format!(
                "{method} on the live task {:?} answered {}: the task exists, so NotFound tells containerd it is gone; \
                 a shim without {method} must answer UNIMPLEMENTED",
                task.id,
                describe(result)
            )));
        }
    }
    Ok(())
}

async fn unknown_id_never_crashes(ctx: &mut Ctx) -> CaseResult {
    let (shim, task) = started(ctx, &ContainerConfig::new(&["forever"]), IoSpec::NULL).await?;
    let unknown = format!("{}-unknown", task.id);
    let results = call_all(ctx, &shim, &unknown, "").await?;
    let connect = shim.task.connect_rpc(&unknown).await.map(drop);
    let unanswered: Vec<String> = results
        .iter()
        .chain(std::iter::once(&("Connect", connect)))
        .filter(|(_, result)| matches!(result, Err(e) if e.code().is_none()))
        .map(|(method, result)| format!("  {method}: {}", describe(result)))
        .collect();
    let alive = super::util::is_process(shim.shim_pid());
    ensure!(
        unanswered.is_empty() && alive,
        "RPCs naming the unknown container {unknown:?} went unanswered (shim pid {} {}):\n{}",
        shim.shim_pid(),
        if alive { "still running" } else { "is gone" },
        unanswered.join("\n")
    );
    let state = shim.task.state(&task.id, "").await?;
    expect_status(&state, Status::RUNNING, "the shim's own task after RPCs about an unknown id")
}
