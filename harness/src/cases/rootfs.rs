//! Rootfs mounts: containerd hands the container's snapshot to Create as mounts (`CreateTaskRequest.rootfs`), and
//! the shim mounts them at `<bundle>/rootfs` before the process starts and unmounts them in Delete. Every image
//! container runs this way (the overlay snapshotter's one-layer mount; the native snapshotter's bind mount).
//! Mounting needs root: without it these cases skip, saying so.
use std::path::{Path, PathBuf};

use containerd_shim_protos::api::Mount;

use super::util::{poll_until, wait_exit};
use super::{fail, Case, CaseError, CaseResult};
use crate::bundle::{overlay_mount, ContainerConfig, IoSpec, RootfsForm};
use crate::context::{deadline, Ctx};
use crate::shim::instance::Shim;
use crate::{case, ensure};

pub fn cases() -> Vec<Case> {
    vec![
        case!("rootfs::overlay_mounted_before_start", Must, ["rootfs"],
            breaks_with: "rootfs-bind-lower",
            ref: "runc shim NewContainer: mount.All(r.Rootfs, <bundle>/rootfs) before runc create; containerd's overlay snapshotter gives one overlay mount (lowerdir = image layers, upperdir = the container's)",
            "the process runs from the overlay mounted at <bundle>/rootfs: it sees the lower dir's payload, and what it writes lands in the upper dir, not in the image's layer",
            overlay_mounted_before_start),
        case!("rootfs::unmounted_by_delete", Should, ["rootfs"],
            breaks_with: "rootfs-left-mounted",
            ref: "runc shim init Delete: mount.UnmountAll(<bundle>/rootfs); Kata's Delete does the same. SHOULD, not MUST: containerd's bundle.Delete, right after Delete and Shutdown (shim.go shimTask.delete), unmounts the rootfs stack itself before removing the bundle, so a shim that leaves it works under containerd (the harness's teardown does as containerd does)",
            "after Delete of an exited task, nothing is mounted at or under <bundle>/rootfs",
            unmounted_by_delete),
        case!("rootfs::bind_mount", Must, ["rootfs"],
            breaks_with: "rootfs-bind-refused",
            ref: "containerd's native snapshotter (ctr run --snapshotter native, and hosts without overlay) gives a bind mount {type: bind, options: [rbind, rw]}; the runc shim mounts any mount type (mount.All)",
            "a Create whose rootfs is one rbind mount runs the process from the bound directory, writes landing in it",
            bind_mount),
        case!("rootfs::failed_mount_fails_cleanly", Must, ["rootfs"],
            breaks_with: "rootfs-partial-left",
            ref: "runc shim NewContainer: a failed rootfs mount fails Create (\"failed to mount rootfs component\") and the deferred UnmountAll removes the mounts done so far; containerd then Deletes and removes the bundle (bundle.Delete: UnmountAll of <bundle>/rootfs, which cannot remove a mount with submounts)",
            "a Create whose second rootfs mount cannot be done (its lowerdir is missing) fails with an error, and leaves no container process and nothing mounted at <bundle>/rootfs that containerd's own unmount of it cannot remove",
            failed_mount_fails_cleanly),
    ]
}

/// Skips unless this run mounts rootfs (as root, the overlay form).
fn needs_mounts(ctx: &Ctx) -> CaseResult {
    match &ctx.env.rootfs_form {
        RootfsForm::Overlay => Ok(()),
        RootfsForm::Absolute(_) => Err(CaseError::Skip(
            "this run cannot mount rootfs (not root): containers get an absolute root.path and no mounts, as `ctr run --rootfs` does".into(),
        )),
    }
}

/// The container's snapshot dir (its overlay `fs` and `work` dirs), made by the harness for each bundle.
fn snapshot_of(shim: &Shim, id: &str) -> Result<PathBuf, CaseError> {
    shim.bundles
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find(|b| b.id == id)
        .and_then(|b| b.snapshot.clone())
        .ok_or_else(|| fail("harness bug: the bundle has no snapshot dir"))
}

/// A directory holding a copy of the run's rootfs (the payload hard-linked), as the native snapshotter prepares one.
fn copy_of_rootfs(from: &Path, to: &Path) -> Result<(), CaseError> {
    let copy = || -> std::io::Result<()> {
        std::fs::create_dir_all(to)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            let target = to.join(entry.file_name());
            if entry.file_type()?.is_dir() {
                std::fs::create_dir_all(&target)?;
            } else {
                std::fs::hard_link(entry.path(), &target)?;
            }
        }
        std::fs::set_permissions(to, std::os::unix::fs::PermissionsExt::from_mode(0o755))
    };
    copy().map_err(|e| fail(format!("harness: copying {} to {}: {e}", from.display(), to.display())))
}

fn bind(source: &Path) -> Mount {
    Mount {
        type_: "bind".into(),
        source: source.display().to_string(),
        options: vec!["rbind".into(), "rw".into()],
        ..Default::default()
    }
}

/// Starts the created task and waits for its exit as `ctr run` does (Wait racing Start).
async fn run_created(ctx: &Ctx, shim: &Shim, id: &str) -> Result<u32, CaseError> {
    let (waited, started) = tokio::join!(wait_exit(ctx, shim, id, ""), ctx.start_process(shim, id, ""));
    started?;
    Ok(waited?.exit_status)
}

async fn overlay_mounted_before_start(ctx: &mut Ctx) -> CaseResult {
    needs_mounts(ctx)?;
    let name = format!("probe-{}", ctx.marker);
    let text = "written in the container";
    let config = ContainerConfig::new(&["write", &format!("/{name}"), text, "exit", "0"]);
    let shim = ctx.launch(&config).await?;
    let task = ctx.create(&shim, IoSpec::NULL).await?;
    let status = run_created(ctx, &shim, &task.id).await?;
    let in_lower = ctx.env.rootfs.join(&name);
    if in_lower.exists() {
        let _ = std::fs::remove_file(&in_lower);
        return Err(fail(format!(
            "the container's write reached the image's layer ({}): the rootfs was not the overlay Create named",
            in_lower.display()
        )));
    }
    ensure!(
        status == 0,
        "the payload could not write /{name} in its rootfs (exit status {status}; 125 is the payload's own failure)"
    );
    let in_upper = snapshot_of(&shim, &task.id)?.join("fs").join(&name);
    let written = std::fs::read_to_string(&in_upper).map_err(|e| {
        fail(format!("the container wrote /{name}, but the overlay's upper dir has no {} ({e})", in_upper.display()))
    })?;
    ensure!(written == text, "{} holds {written:?}, the container wrote {text:?}", in_upper.display());
    Ok(())
}

async fn unmounted_by_delete(ctx: &mut Ctx) -> CaseResult {
    needs_mounts(ctx)?;
    let shim = ctx.launch(&ContainerConfig::new(&["exit", "0"])).await?;
    let task = ctx.create(&shim, IoSpec::NULL).await?;
    run_created(ctx, &shim, &task.id).await?;
    let rootfs = shim.bundle_dir().join("rootfs");
    shim.task.delete(&task.id, "").await?;
    shim.note_deleted(&task.id);
    // A lazy unmount is fine: what counts is that the mount table no longer has it.
    let dirs = [rootfs.clone()];
    let gone = poll_until(ctx.timeout(deadline::TEARDOWN), || crate::leaks::mounts_under(&dirs).is_empty()).await;
    let left = crate::leaks::mounts_under(&dirs);
    ensure!(
        gone,
        "after Delete, still mounted under {}: {left:?} (containerd's bundle.Delete unmounts it next; a mount below it or a busy one would make that fail and leak)",
        rootfs.display()
    );
    Ok(())
}

async fn bind_mount(ctx: &mut Ctx) -> CaseResult {
    needs_mounts(ctx)?;
    let text = "written through the bind mount";
    let config = ContainerConfig::new(&["write", "/probe", text, "exit", "0"]);
    let shim = ctx.launch(&config).await?;
    let id = shim.id().to_string();
    let source = snapshot_of(&shim, &id)?.join("native");
    copy_of_rootfs(&ctx.env.rootfs, &source)?;
    let task = ctx.create_with_rootfs(&shim, &id, &shim.bundle_dir(), IoSpec::NULL, Some(vec![bind(&source)])).await?;
    let status = run_created(ctx, &shim, &task.id).await?;
    ensure!(
        status == 0,
        "the payload, started from a bind-mounted rootfs, exited {status} (125: it could not write /probe)"
    );
    let written = std::fs::read_to_string(source.join("probe"))
        .map_err(|e| fail(format!("the container wrote /probe, but the bind mount's source has no probe ({e})")))?;
    ensure!(written == text, "{} holds {written:?}, the container wrote {text:?}", source.join("probe").display());
    Ok(())
}

async fn failed_mount_fails_cleanly(ctx: &mut Ctx) -> CaseResult {
    needs_mounts(ctx)?;
    let shim = ctx.launch(&ContainerConfig::new(&["forever"])).await?;
    let id = shim.id().to_string();
    let snapshot = snapshot_of(&shim, &id)?;
    let good = snapshot.join("native");
    copy_of_rootfs(&ctx.env.rootfs, &good)?;
    // The second mount names a lower dir that does not exist: mount(2) fails with ENOENT.
    let bad = overlay_mount(&snapshot.join("no-such-layer"), &snapshot);
    let created =
        ctx.create_with_rootfs(&shim, &id, &shim.bundle_dir(), IoSpec::NULL, Some(vec![bind(&good), bad])).await;
    // containerd removes the bundle after a failed Create (runtime v2 bundle.Delete: umount <bundle>/rootfs until
    // nothing is left, then remove the directory): only what survives that is the shim's leak.
    crate::bundle::unmount_rootfs_as_containerd(&shim.bundle_dir());
    let rootfs = shim.bundle_dir().join("rootfs");
    let left = crate::leaks::mounts_under(std::slice::from_ref(&rootfs));
    // The shim itself stays (it serves until Shutdown); anything else of this case is the container's.
    let shim_binary = ctx.target.binary.canonicalize().unwrap_or_else(|_| ctx.target.binary.clone());
    let is_shim =
        |pid: u32| std::fs::read_link(format!("/proc/{pid}/exe")).map(|exe| exe == shim_binary).unwrap_or(false);
    let running: Vec<String> = crate::process::marked_processes(&ctx.marker)
        .into_iter()
        .filter(|pid| !is_shim(*pid))
        .map(|pid| format!("{pid} {}", crate::process::cmdline(pid)))
        .collect();
    ensure!(
        created.is_err(),
        "Create succeeded although its second rootfs mount cannot be done (overlay lowerdir {} is missing)",
        snapshot.join("no-such-layer").display()
    );
    ensure!(
        left.is_empty(),
        "after the failed Create and containerd's unmount of {} (until nothing was left), still mounted there: {left:?}",
        rootfs.display()
    );
    ensure!(running.is_empty(), "after the failed Create (and containerd's Delete), still running: {running:?}");
    Ok(())
}
