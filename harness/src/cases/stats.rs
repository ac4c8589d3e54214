//! Stats (MAY): `ctr task metrics`, CRI ContainerStats and the kubelet read cgroup metrics through it.
use containerd_shim_protos::cgroups::metrics::Metrics as MetricsV1;
use containerd_shim_protos::cgroups_v2::metrics::Metrics as MetricsV2;
use containerd_shim_protos::protobuf::Message;

use super::util::{started, unimplemented_skip};
use super::{fail, Case, CaseResult};
use crate::bundle::{ContainerConfig, IoSpec};
use crate::context::Ctx;
use crate::{case, ensure};

pub fn cases() -> Vec<Case> {
    vec![case!("stats::returns_metrics", May, ["stats"],
        breaks_with: "stats-garbage",
        ref: "task.proto StatsResponse.stats: an Any of io.containerd.cgroups.v1.Metrics or io.containerd.cgroups.v2.Metrics (containerd decodes it by type URL)",
        "Stats of a running task returns cgroup Metrics of a type containerd knows, which decode and count the task's processes",
        returns_metrics)]
}

async fn returns_metrics(ctx: &mut Ctx) -> CaseResult {
    let (shim, task) = started(ctx, &ContainerConfig::new(&["forever"]), IoSpec::NULL).await?;
    let reply = match shim.task.stats(&task.id).await {
        Ok(reply) => reply,
        Err(error) => return Err(unimplemented_skip("Stats", &error).unwrap_or_else(|| error.into())),
    };
    let any = reply.stats.as_ref().ok_or_else(|| fail("StatsResponse.stats is empty"))?;
    let name = any.type_url.rsplit('/').next().unwrap_or_default();
    let (processes, any_section) = match name {
        "io.containerd.cgroups.v1.Metrics" => {
            let metrics = MetricsV1::parse_from_bytes(&any.value)
                .map_err(|e| fail(format!("Stats says {} but the value does not decode: {e}", any.type_url)))?;
            let any_section = metrics.pids.is_some() || metrics.cpu.is_some() || metrics.memory.is_some();
            (metrics.pids.as_ref().map(|p| p.current), any_section)
        }
        "io.containerd.cgroups.v2.Metrics" => {
            let metrics = MetricsV2::parse_from_bytes(&any.value)
                .map_err(|e| fail(format!("Stats says {} but the value does not decode: {e}", any.type_url)))?;
            let any_section = metrics.pids.is_some() || metrics.cpu.is_some() || metrics.memory.is_some();
            (metrics.pids.as_ref().map(|p| p.current), any_section)
        }
        _ => {
            return Err(fail(format!(
                "Stats returned type {:?} ({} bytes); containerd knows io.containerd.cgroups.v1.Metrics and io.containerd.cgroups.v2.Metrics",
                any.type_url,
                any.value.len()
            )))
        }
    };
    ensure!(any_section, "Stats returned {name} with no pids, cpu or memory section");
    if let Some(current) = processes {
        ensure!(current >= 1, "Stats says the running task has {current} processes");
    }
    Ok(())
}
