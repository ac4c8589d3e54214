//! Update (MAY): `ctr task update`, CRI UpdateContainerResources change a running task's resources.
use std::path::PathBuf;

use containerd_shim_protos::api::UpdateTaskRequest;
use containerd_shim_protos::protobuf::well_known_types::any::Any;

use super::util::{started, unimplemented_skip};
use super::{Case, CaseResult};
use crate::bundle::{ContainerConfig, IoSpec};
use crate::context::Ctx;
use crate::{case, ensure};

pub fn cases() -> Vec<Case> {
    vec![case!("update::resources_applied", May, ["update"],
        breaks_with: "update-fails",
        ref: "task.proto UpdateTaskRequest.resources: JSON LinuxResources with type URL types.containerd.io/opencontainers/runtime-spec/1/LinuxResources (runc update)",
        "Update with new CPU shares on a running task succeeds, and where the task's cgroup is visible the new value is in it",
        resources_applied)]
}

const SHARES: u64 = 512;

async fn resources_applied(ctx: &mut Ctx) -> CaseResult {
    let (shim, task) = started(ctx, &ContainerConfig::new(&["forever"]), IoSpec::NULL).await?;
    let mut resources = Any::new();
    resources.type_url = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into();
    resources.value = serde_json::json!({ "cpu": { "shares": SHARES } }).to_string().into_bytes();
    let request = UpdateTaskRequest { id: task.id.clone(), resources: Some(resources).into(), ..Default::default() };
    if let Err(error) = shim.task.update(&request).await {
        return Err(unimplemented_skip("Update", &error).unwrap_or_else(|| error.into()));
    }
    // The harness gives every container cgroupsPath /shimcompat/<id>; a VM-based shim's cgroup is not on this host.
    let cgroup = format!("shimcompat/{}", task.id);
    let v1 =
        ["cpu", "cpu,cpuacct"].iter().map(|c| PathBuf::from("/sys/fs/cgroup").join(c).join(&cgroup).join("cpu.shares"));
    if let Some(file) = v1.into_iter().find(|f| f.exists()) {
        let value = std::fs::read_to_string(&file).unwrap_or_default();
        ensure!(
            value.trim() == SHARES.to_string(),
            "Update set cpu shares {SHARES}, but {} says {:?}",
            file.display(),
            value.trim()
        );
    }
    let v2 = PathBuf::from("/sys/fs/cgroup").join(&cgroup).join("cpu.weight");
    if v2.exists() {
        // runc's conversion of shares to cgroup v2 weight.
        let weight = 1 + ((SHARES - 2) * 9999) / 262142;
        let value = std::fs::read_to_string(&v2).unwrap_or_default();
        ensure!(
            value.trim() == weight.to_string(),
            "Update set cpu shares {SHARES} (weight {weight}), but {} says {:?}",
            v2.display(),
            value.trim()
        );
    }
    Ok(())
}
