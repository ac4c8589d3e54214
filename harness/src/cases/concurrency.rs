//! Concurrency: containerd and CRI call one shim from many goroutines at once (exec probes, `docker exec` and
//! status polling side by side); every call must be answered as if alone.
use std::sync::Arc;

use containerd_shim_protos::types::task::Status;

use super::util::{exec_io, started};
use super::{fail, Case, CaseError, CaseResult};
use crate::bundle::{ContainerConfig, IoSpec};
use crate::context::{deadline, Ctx};
use crate::shim::instance::Shim;
use crate::{case, ensure};

pub fn cases() -> Vec<Case> {
    vec![
        case!("concurrency::parallel_execs", Must, ["exec"],
            breaks_with: "concurrent-exec-fails",
            ref: "CRI runs liveness/readiness probes as concurrent ExecSync calls on one task (containerd calls the shim from many goroutines)",
            "eight Exec+Start+Wait sequences issued at once on one task all succeed, each reporting its own exit status",
            parallel_execs),
        case!("concurrency::state_during_execs", Must, ["exec"],
            breaks_with: "concurrent-exec-fails",
            ref: "kubelet status polling (State) runs alongside exec probes on the same shim",
            "State calls interleaved with eight concurrent execs all answer RUNNING with the init pid, and every exec completes",
            state_during_execs),
    ]
}

const EXECS: u32 = 8;

/// Exec+Start+Wait of `exit <n>` for n in 1..=EXECS, all at once; returns (exec id, exit status or error).
async fn run_execs(ctx: &Ctx, shim: &Arc<Shim>, id: &str) -> Result<Vec<(String, Result<u32, String>)>, CaseError> {
    let mut handles = Vec::new();
    for n in 1..=EXECS {
        let exec_id = format!("par{n}");
        let io = exec_io(shim, &exec_id, IoSpec::NULL)?;
        let code = n.to_string();
        let request = ctx.exec_request(id, &exec_id, &["exit", &code], false, &io);
        let client = shim.task.clone();
        let (id, timeout) = (id.to_string(), ctx.timeout(deadline::EXIT));
        handles.push((
            exec_id.clone(),
            tokio::spawn(async move {
                client.exec(&request).await.map_err(|e| e.to_string())?;
                client.start(&id, &exec_id).await.map_err(|e| e.to_string())?;
                client.wait(&id, &exec_id, timeout).await.map(|w| w.exit_status).map_err(|e| e.to_string())
            }),
        ));
    }
    let mut results = Vec::new();
    for (exec_id, handle) in handles {
        let result = handle.await.map_err(|e| fail(format!("exec task {exec_id}: {e}")))?;
        results.push((exec_id, result));
    }
    Ok(results)
}

fn check_execs(results: &[(String, Result<u32, String>)]) -> CaseResult {
    let wrong: Vec<String> = results
        .iter()
        .enumerate()
        .filter(|(n, (_, result))| result.as_ref().ok() != Some(&(*n as u32 + 1)))
        .map(|(n, (exec_id, result))| format!("  {exec_id} (exits {}): {result:?}", n + 1))
        .collect();
    ensure!(
        wrong.is_empty(),
        "of {EXECS} concurrent execs, these did not report their own exit status:\n{}",
        wrong.join("\n")
    );
    Ok(())
}

async fn parallel_execs(ctx: &mut Ctx) -> CaseResult {
    let (shim, task) = started(ctx, &ContainerConfig::new(&["forever"]), IoSpec::NULL).await?;
    let results = run_execs(ctx, &shim, &task.id).await?;
    check_execs(&results)
}

async fn state_during_execs(ctx: &mut Ctx) -> CaseResult {
    let (shim, task) = started(ctx, &ContainerConfig::new(&["forever"]), IoSpec::NULL).await?;
    let pollers: Vec<_> = (0..4)
        .map(|_| {
            let (client, id) = (shim.task.clone(), task.id.clone());
            tokio::spawn(async move {
                let mut answers = Vec::new();
                for _ in 0..10 {
                    answers.push(
                        client
                            .state(&id, "")
                            .await
                            .map(|s| (s.status.enum_value().ok(), s.pid))
                            .map_err(|e| e.to_string()),
                    );
                }
                answers
            })
        })
        .collect();
    let results = run_execs(ctx, &shim, &task.id).await?;
    let mut wrong = Vec::new();
    for poller in pollers {
        for answer in poller.await.map_err(|e| fail(format!("State poller: {e}")))? {
            if answer != Ok((Some(Status::RUNNING), task.pid)) {
                wrong.push(format!("{answer:?}"));
            }
        }
    }
    ensure!(
        wrong.is_empty(),
        "{} of 40 State calls made during the execs did not answer RUNNING with the init pid {}: {}",
        wrong.len(),
        task.pid,
        wrong.join(", ")
    );
    check_execs(&results)
}
