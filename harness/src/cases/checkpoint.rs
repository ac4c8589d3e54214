//! Checkpoint (MAY): `ctr task checkpoint` writes the task's image (runc: CRIU) into the given directory.
use containerd_shim_protos::api::CheckpointTaskRequest;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::oci::CheckpointOptions;
use containerd_shim_protos::types::task::Status;

use super::util::{expect_status, started, unimplemented_skip};
use super::{fail, Case, CaseError, CaseResult};
use crate::bundle::{ContainerConfig, IoSpec};
use crate::context::Ctx;
use crate::{case, ensure};

pub fn cases() -> Vec<Case> {
    vec![case!("checkpoint::writes_image", May, ["checkpoint"],
        breaks_with: "checkpoint-empty",
        ref: "task.proto CheckpointTaskRequest path/options (containerd.runc.v1.CheckpointOptions); containerd archives what the shim wrote there",
        "Checkpoint of a running task (leaving it running) succeeds and writes a non-empty image into the requested directory",
        writes_image)]
}

/// Why this host cannot checkpoint a runc container, if it cannot: runc checkpoints through CRIU, which must be
/// installed and pass `criu check` (it fails on kernels it does not know, e.g. on their vDSO layout).
async fn criu_unusable() -> Option<String> {
    let Some(criu) = crate::host::which("criu") else {
        return Some("CRIU is not installed (runc checkpoints through it)".into());
    };
    let mut command = tokio::process::Command::new(&criu);
    command.arg("check").kill_on_drop(true);
    let check = crate::process::reaper::output(&mut command);
    match tokio::time::timeout(std::time::Duration::from_secs(10), check).await {
        Ok(Ok(output)) if output.status.success() => None,
        Ok(Ok(output)) => {
            let text = String::from_utf8_lossy(&output.stderr).into_owned() + &String::from_utf8_lossy(&output.stdout);
            let errors: Vec<&str> = text
                .lines()
                .filter(|l| l.contains("Error") && !l.contains("exited, status"))
                .map(str::trim)
                .take(2)
                .collect();
            Some(format!("`{} check` fails on this host ({}): {}", criu.display(), output.status, errors.join("; ")))
        }
        Ok(Err(e)) => Some(format!("cannot run {}: {e}", criu.display())),
        Err(_) => Some(format!("`{} check` did not finish within 10s", criu.display())),
    }
}

async fn writes_image(ctx: &mut Ctx) -> CaseResult {
    if ctx.target.candidate.runc_options.is_some() {
        if let Some(reason) = criu_unusable().await {
            return Err(CaseError::Skip(format!("host capability missing: {reason}")));
        }
    }
    let (shim, task) = started(ctx, &ContainerConfig::new(&["forever"]), IoSpec::NULL).await?;
    let image = shim.bundle_dir().join("checkpoint");
    // An explicit work path: the runc shim's default is <bundle>/work/criu-work, under the `work` link containerd
    // makes in every bundle (which the harness's bundles do not have).
    let work = shim.bundle_dir().join("criu-work");
    std::fs::create_dir_all(&work).map_err(|e| fail(format!("creating {}: {e}", work.display())))?;
    let options = CheckpointOptions {
        exit: false,
        image_path: image.display().to_string(),
        work_path: work.display().to_string(),
        ..Default::default()
    };
    let mut any = Any::new();
    any.type_url = "containerd.runc.v1.CheckpointOptions".into();
    any.value = options.write_to_bytes().map_err(|e| fail(format!("encoding CheckpointOptions: {e}")))?;
    let request = CheckpointTaskRequest {
        id: task.id.clone(),
        path: image.display().to_string(),
        options: Some(any).into(),
        ..Default::default()
    };
    if let Err(error) = shim.task.checkpoint(&request).await {
        if let Some(skip) = unimplemented_skip("Checkpoint", &error) {
            return Err(skip);
        }
        return Err(fail(format!("{error}\n{}", criu_errors(&[&work, &image, &shim.bundle_dir()]))));
    }
    let entries: Vec<String> = std::fs::read_dir(&image)
        .map(|dir| dir.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    ensure!(!entries.is_empty(), "Checkpoint succeeded but wrote nothing into {}", image.display());
    let state = shim.task.state(&task.id, "").await?;
    expect_status(&state, Status::RUNNING, "the task after a Checkpoint that leaves it running")
}

/// The error lines of any CRIU log in `dirs`, for evidence (the shim's reply names the log but not its content).
fn criu_errors(dirs: &[&std::path::Path]) -> String {
    let mut out = String::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("log") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let errors: Vec<&str> =
                text.lines().filter(|l| l.contains("Error") || l.contains("rror (")).take(10).collect();
            if !errors.is_empty() {
                out.push_str(&format!("{}:\n  {}\n", path.display(), errors.join("\n  ")));
            }
        }
    }
    out
}
