//! What a candidate's lifecycle is compared with in the same run: the floor (the candidate's OCI runtime running
//! the same payload with no shim at all: `<runtime> run`) and containerd itself (`ctr run --rm` of the payload image
//! through a private containerd, the daemon's own Go runc v2 shim underneath).
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bundle::{ContainerConfig, RootfsForm};
use crate::context::{RunEnv, Target};

/// The longest a bare runtime `run` of `/payload exit 0` may take.
const FLOOR_LIMIT: Duration = Duration::from_secs(30);

pub enum Reference {
    /// `<runtime> --root R run --bundle B <id>` of `/payload exit 0`.
    Floor { runtime: PathBuf, shown: String, root: PathBuf, bundles: PathBuf, rootfs: PathBuf, next: usize },
    /// `ctr run --rm --runtime <the candidate>` through a private containerd of the target's line.
    Ctr { lab: Box<crate::lab::Lab>, flags: Vec<String>, image: String, what: String },
}

impl Reference {
    pub fn what(&self) -> String {
        match self {
            Reference::Floor { shown, .. } => format!("bare `{shown} run` (no shim)"),
            Reference::Ctr { what, .. } => what.clone(),
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
                let stderr_path = dir.join("stderr");
                let stderr =
                    std::fs::File::create(&stderr_path).map_err(|e| format!("{}: {e}", stderr_path.display()))?;
                let mut command = std::process::Command::new(&*runtime);
                command
                    .arg("--root")
                    .arg(&*root)
                    .args(["run", "--bundle"])
                    .arg(&dir)
                    .arg(&id)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(stderr);
                let began = Instant::now();
                let mut child = crate::process::reaper::spawn_std(&mut command)
                    .map_err(|e| format!("{}: {e}", runtime.display()))?;
                let pid = child.id();
                // Bounded, and given up on an interrupt, so that the bench always gets to clean up after itself.
                let exited = crate::process::wait_exit_blocking(pid, began + FLOOR_LIMIT, || {
                    crate::context::STOPPING.load(std::sync::atomic::Ordering::SeqCst)
                });
                let took = began.elapsed();
                if !exited {
                    let _ = child.kill();
                }
                let status = child.wait();
                crate::process::reaper::release(pid);
                let status = status.map_err(|e| format!("{}: {e}", runtime.display()))?;
                let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                let _ = std::fs::remove_dir_all(&dir);
                if !exited || !status.success() {
                    // Whatever it left is swept: a killed or failed run may leave its state.
                    force_delete(runtime, root, &id);
                }
                if !exited {
                    let stopped = crate::context::STOPPING.load(std::sync::atomic::Ordering::SeqCst);
                    return Err(format!(
                        "`{} run` of a payload that exits at once did not finish within {FLOOR_LIMIT:?}{}",
                        runtime.display(),
                        if stopped { " (interrupted)" } else { "" }
                    ));
                }
                if !status.success() {
                    return Err(format!("`{} run` failed ({status}): {}", runtime.display(), stderr.trim()));
                }
                Ok(took)
            }
            Reference::Ctr { lab, flags, image, .. } => {
                let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
                lab.run_rm_timed(&flags, image, &["/payload", "exit", "0"], Duration::from_secs(30))
            }
        }
    }
}

/// `<runtime> --root R delete -f <id>`, output discarded.
fn force_delete(runtime: &std::path::Path, root: &std::path::Path, id: &str) {
    let _ = crate::process::reaper::status(
        std::process::Command::new(runtime)
            .arg("--root")
            .arg(root)
            .args(["delete", "-f", id])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
}

/// The references this host has for `target`; an Err says why one is not there.
pub fn available(target: &Arc<Target>, env: &Arc<RunEnv>) -> Vec<Result<Reference, String>> {
    vec![floor(target, env), ctr(target, env)]
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

/// The candidate through a private containerd of the target's line, told about the candidate as the daemon
/// tests tell it (lab::ctr_form: linked by the file name the line looks up, the runc options ctr can send); one
/// warm-up run (a fresh daemon's first container costs 2-4 times the next) is not counted.
///
/// containerd, ctr and the container carry the run's marker (`<nonce>-ctr`): an interrupt kills them with the
/// run's other processes, so a hung `ctr run` cannot hold the bench past it (the lab's clean-up then removes the
/// rest, or `lab::sweep_live_labs` does when the bench thread does not return in time).
fn ctr(target: &Arc<Target>, run: &RunEnv) -> Result<Reference, String> {
    let line = target.profile.line;
    let daemon = crate::lab::Daemon::for_line(line)
        .ok_or_else(|| format!("ctr run --rm: the bench starts containerd 1.6 and 1.7 only, not {line}"))?;
    let form = crate::lab::ctr_form(&target.candidate, &target.binary, daemon)
        .map_err(|e| format!("ctr run --rm ({}): {e}", daemon.label()))?;
    let marker = format!("{}-ctr", run.nonce);
    let mut env: Vec<(&str, &str)> = target.candidate.env.iter().filter_map(|kv| kv.split_once('=')).collect();
    env.push((crate::process::MARKER_VAR, &marker));
    let lab =
        crate::lab::Lab::start_with(daemon, &env).map_err(|e| format!("ctr run --rm ({}): {e}", daemon.label()))?;
    if let Some((file_name, binary)) = &form.link {
        lab.install_shim(file_name, binary).map_err(|e| format!("ctr run --rm: linking {file_name}: {e}"))?;
    }
    let image = lab.import_payload_image().map_err(|e| format!("ctr run --rm: importing the payload image: {e}"))?;
    let mut flags = form.flags.clone();
    flags.extend(["--runtime".to_string(), form.runtime.clone()]);
    flags.extend(["--env".to_string(), format!("{}={marker}", crate::process::MARKER_VAR)]);
    // `containerd github.com/containerd/containerd 1.6.20~ds1 <revision>`: the version is the third word.
    let version = lab
        .containerd_version()
        .ok()
        .and_then(|v| v.split_whitespace().nth(2).map(|w| format!("containerd {w}")))
        .unwrap_or_else(|| daemon.label().to_string());
    let mut reference = Reference::Ctr {
        what: format!("ctr run --rm ({version})"),
        flags,
        image: image.to_string(),
        lab: Box::new(lab),
    };
    reference.once().map_err(|e| format!("ctr run --rm: the warm-up run failed: {e}"))?;
    Ok(reference)
}
