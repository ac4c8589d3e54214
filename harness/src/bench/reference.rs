//! What a candidate's lifecycle is compared with in the same run: the floor (the candidate's OCI runtime running
//! the same payload with no shim at all: `<runtime> run`) and containerd itself (`ctr run --rm` of the payload image
//! through a private containerd, the daemon's own Go runc v2 shim underneath).
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bundle::{ContainerConfig, RootfsForm};
use crate::context::{RunEnv, Target};

pub enum Reference {
    /// `<runtime> --root R run --bundle B <id>` of `/payload exit 0`.
    Floor { runtime: PathBuf, shown: String, root: PathBuf, bundles: PathBuf, rootfs: PathBuf, next: usize },
}

impl Reference {
    pub fn what(&self) -> String {
        match self {
            Reference::Floor { shown, .. } => format!("bare `{shown} run` (no shim)"),
        }
    }

    /// One timed run.
    pub fn once(&mut self) -> Result<Duration, String> {
        match self {
            Reference::Floor { runtime, root, bundles, rootfs, next, .. } => {
                *next += 1;
                let id = format!("floor-{next}");
                let dir = bundles.join(&id);
                std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                let config = ContainerConfig::new(&["exit", "0"]);
                let spec = crate::bundle::build_spec(
                    &config,
                    &RootfsForm::Absolute(rootfs.clone()),
                    &format!("/shimcompat/{id}"),
                );
                spec.save(dir.join("config.json")).map_err(|e| format!("writing config.json: {e}"))?;
                let mut command = std::process::Command::new(&*runtime);
                command
                    .arg("--root")
                    .arg(&*root)
                    .args(["run", "--bundle"])
                    .arg(&dir)
                    .arg(&id)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped());
                let began = Instant::now();
                let output = crate::reaper::spawn_std(&mut command)
                    .and_then(|child| {
                        let pid = child.id();
                        let output = child.wait_with_output();
                        crate::reaper::release(pid);
                        output
                    })
                    .map_err(|e| format!("{}: {e}", runtime.display()))?;
                let took = began.elapsed();
                let _ = std::fs::remove_dir_all(&dir);
                if !output.status.success() {
                    // Whatever it left is swept: a failed run may leave its state.
                    let _ = crate::reaper::status(
                        std::process::Command::new(&*runtime)
                            .arg("--root")
                            .arg(&*root)
                            .args(["delete", "-f", &id])
                            .stdout(Stdio::null())
                            .stderr(Stdio::null()),
                    );
                    return Err(format!(
                        "`{} run` failed ({}): {}",
                        runtime.display(),
                        output.status,
                        String::from_utf8_lossy(&output.stderr).trim()
                    ));
                }
                Ok(took)
            }
        }
    }
}

/// The references this host has for `target`; an Err says why one is not there.
pub fn available(target: &Arc<Target>, env: &Arc<RunEnv>) -> Vec<Result<Reference, String>> {
    vec![floor(target, env)]
}

fn floor(target: &Arc<Target>, env: &Arc<RunEnv>) -> Result<Reference, String> {
    let Some(options) = &target.candidate.runc_options else {
        return Err("floor (bare OCI runtime run): the candidate names no OCI runtime (no [runc_options])".into());
    };
    let name = if options.binary_name.is_empty() { "runc".to_string() } else { options.binary_name.clone() };
    let runtime = if name.contains('/') { Some(PathBuf::from(&name)) } else { crate::host::which(&name) };
    let Some(runtime) = runtime.filter(|p| crate::host::is_executable(p)) else {
        return Err(format!("floor: the OCI runtime {name} is not installed"));
    };
    if !crate::host::is_root() {
        return Err("floor: running an OCI runtime directly needs root".into());
    }
    let shown = name.rsplit('/').next().unwrap_or(&name).to_string();
    Ok(Reference::Floor {
        runtime,
        shown,
        root: env.workdir.join("floor-root"),
        bundles: env.workdir.join("floor"),
        rootfs: env.rootfs.clone(),
        next: 0,
    })
}
