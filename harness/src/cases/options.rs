//! Runtime options: what containerd sends a shim about its runtime, in `start`'s stdin and in Create.options.
//! runc-family shims get `containerd.runc.v1.Options` (BinaryName, Root, SystemdCgroup) and must honour them; every
//! other shim gets CRI's `runtimeoptions.v1.Options` (`config_path`) when its runtime has an `options` table, and
//! must not fail on them.
use std::path::PathBuf;

use containerd_shim_protos::protobuf::well_known_types::any::Any;

use super::util::{created, run_to_exit};
use super::{fail, Case, CaseError, CaseResult};
use crate::bundle::{ContainerConfig, IoSpec};
use crate::context::Ctx;
use crate::{case, ensure};

/// The type URL containerd gives CRI's options for runtimes that are not runc (gogo-registered name).
pub const RUNTIME_OPTIONS_URL: &str = "runtimeoptions.v1.Options";

pub fn cases() -> Vec<Case> {
    vec![
        case!("options::runtime_options_accepted", Must, ["options"],
            breaks_with: "runtime-options-refused",
            ref: "containerd CRI getRuntimeOptionsType: a runtime that is not runc gets runtimeoptions.v1.Options {type_url, config_path} from its `options` table (pkg/cri/server/helpers.go, 1.6/1.7; internal/cri/config 2.x), sent in `start`'s stdin and CreateTaskRequest.options (Kata reads config_path)",
            "a shim that is not runc-family starts and runs a task when `start`'s stdin and Create.options carry runtimeoptions.v1.Options with a config_path",
            runtime_options_accepted),
        case!("options::runc_root_honoured", Must, ["options"],
            breaks_with: "runc-root-ignored",
            ref: "containerd.runc.v1.Options.root: the runc shim runs its runtime with --root <Root>/<namespace> (process.NewRunc); CRI and Docker set Root per runtime, and containerd's cleanup of a dead shim looks there",
            "a runc-family shim given containerd.runc.v1.Options with a Root keeps its runtime's state for the container under <Root>/<namespace>",
            runc_root_honoured),
    ]
}

/// `runtimeoptions.v1.Options` on the wire: field 1 type_url, field 2 config_path (both strings).
pub fn runtime_options_any(type_url: &str, config_path: &str) -> Any {
    fn field(number: u8, text: &str, out: &mut Vec<u8>) {
        if text.is_empty() {
            return;
        }
        out.push(number << 3 | 2);
        let mut len = text.len();
        while len >= 0x80 {
            out.push((len as u8 & 0x7f) | 0x80);
            len >>= 7;
        }
        out.push(len as u8);
        out.extend_from_slice(text.as_bytes());
    }
    let mut value = Vec::new();
    field(1, type_url, &mut value);
    field(2, config_path, &mut value);
    let mut any = Any::new();
    any.type_url = RUNTIME_OPTIONS_URL.into();
    any.value = value;
    any
}

async fn runtime_options_accepted(ctx: &mut Ctx) -> CaseResult {
    if ctx.target.candidate.runc_options.is_some() {
        return Err(CaseError::Skip(
            "a runc-family candidate: containerd sends it containerd.runc.v1.Options, never runtimeoptions (see options::runc_root_honoured)".into(),
        ));
    }
    let config_path = match &ctx.target.candidate.runtime_config_path {
        Some(path) => path.clone(),
        None => {
            let path = ctx.env.workdir.join("runtime-options").join("config.toml");
            let written = std::fs::create_dir_all(path.parent().unwrap_or(&ctx.env.workdir)).and_then(|_| {
                std::fs::write(&path, "# written by shimcompat: the runtime's options table had no settings\n")
            });
            written.map_err(|e| fail(format!("harness: writing {}: {e}", path.display())))?;
            path
        }
    };
    ctx.options = Some(runtime_options_any("", &config_path.display().to_string()));
    let (_shim, _task, waited) = run_to_exit(ctx, &["exit", "0"]).await.map_err(|e| match e {
        CaseError::Fail(message) => fail(format!(
            "with runtimeoptions.v1.Options {{config_path: {}}} in `start`'s stdin and Create.options: {message}",
            config_path.display()
        )),
        skip => skip,
    })?;
    ensure!(waited.exit_status == 0, "the task run with runtime options exited {}, expected 0", waited.exit_status);
    Ok(())
}

async fn runc_root_honoured(ctx: &mut Ctx) -> CaseResult {
    let Some(options) = ctx.target.candidate.runc_options.as_ref() else {
        return Err(CaseError::Skip(
            "not a runc-family candidate: containerd sends it no containerd.runc.v1.Options (see options::runtime_options_accepted)".into(),
        ));
    };
    let root = if options.root.is_empty() { ctx.env.runtime_root() } else { PathBuf::from(&options.root) };
    let (_shim, task) = created(ctx, &ContainerConfig::new(&["forever"]), IoSpec::NULL).await?;
    let dir = root.join(&ctx.env.namespace);
    let entries: Vec<String> = std::fs::read_dir(&dir)
        .map(|e| e.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    ensure!(
        entries.iter().any(|entry| entry.contains(task.id.as_str())),
        "after Create with containerd.runc.v1.Options root={}, nothing under {} names container {} (entries: {entries:?}): \
         the shim did not run its runtime with --root <Root>/<namespace>",
        root.display(),
        dir.display(),
        task.id
    );
    Ok(())
}
