//! Runtime names: the candidate's name passes Docker's gate, resolves on this host (by containerd's rules, with
//! shimcompat standing where containerd stands) to the binary that is tested, follows containerd's
//! `containerd-shim-<name>-<version>` naming in every containerd line, is not shadowed, and the binary answers `-v`.
//! These cases launch no shim; they check what a user's `docker run --runtime NAME` would reach.
use std::time::Duration;

use super::{fail, Case, CaseError, CaseResult};
use crate::context::Ctx;
use crate::resolve::docker::{Verdict, Version as DockerVersion};
use crate::{case, ensure};

pub fn cases() -> Vec<Case> {
    vec![
        case!("names::passes_docker_gate", Must, ["names"],
            breaks_with: "host:path-name",
            ref: "moby daemon/runtime_unix.go isPermissibleC8dRuntimeName (23.0+): names containerd treats as paths are refused",
            "the runtime name is one dockerd 23-24 and 25+ pass to containerd (`docker run --runtime NAME` works)",
            passes_docker_gate),
        case!("names::same_binary_name_in_every_containerd", Must, ["names"],
            breaks_with: "host:path-name",
            ref: "containerd runtime/v2 BinaryName (1.6) / pkg/shim BinaryName (1.7, 2.x): containerd-shim-<a>-<b>",
            "containerd 1.6, 1.7 and 2.x derive the same binary name, and it is the tested binary's file name",
            same_binary_name),
        case!("names::resolves_to_tested_binary", Must, ["names"],
            breaks_with: "host:shadow-on-path",
            ref: "containerd runtime/v2 manager resolveRuntimePath: cwd, then PATH (opt plugin first), then next to containerd",
            "containerd's lookup on this host runs an executable file, the one the suite tests (and the one the candidate expects)",
            resolves_to_tested_binary),
        case!("names::not_shadowed", Should, ["names"],
            breaks_with: "host:shadow-on-path",
            ref: "containerd resolveRuntimePath takes the first match and caches it for the daemon's life",
            "no other file of the same binary name sits later in containerd's lookup order (a user may mean that one)",
            not_shadowed),
        case!("names::answers_version", Should, ["names"],
            breaks_with: "version-fails",
            ref: "containerd pkg/shim flags -v / -version (runtime-v2.md); ctr and operators use it to identify a shim",
            "`<shim> -v` exits 0 within 5 s and prints a version",
            answers_version),
    ]
}

fn name_of(ctx: &Ctx) -> Result<String, CaseError> {
    ctx.target
        .candidate
        .runtime
        .clone()
        .ok_or_else(|| CaseError::Skip("shim given by path: not certified by name, nothing to resolve".into()))
}

async fn passes_docker_gate(ctx: &mut Ctx) -> CaseResult {
    let name = name_of(ctx)?;
    let explanation = crate::select::explain_runtime_for(&name, Some(ctx.target.profile.line));
    for row in &explanation.docker {
        if row.version == DockerVersion::V20_10 {
            continue; // before 23.0 Docker passed no shim names through at all
        }
        ensure!(
            matches!(row.verdict, Verdict::Stock { .. } | Verdict::Implicit { .. }),
            "dockerd {} refuses `--runtime {name}`: {:?}",
            row.version,
            row.verdict
        );
    }
    Ok(())
}

async fn same_binary_name(ctx: &mut Ctx) -> CaseResult {
    let name = name_of(ctx)?;
    let explanation = crate::select::explain_runtime_for(&name, Some(ctx.target.profile.line));
    let names: Vec<(String, Option<String>)> =
        explanation.binary_names.iter().map(|row| (row.version.to_string(), row.binary_name.clone())).collect();
    let first = names.first().and_then(|(_, n)| n.clone());
    for (version, binary) in &names {
        ensure!(
            binary.is_some() && *binary == first,
            "containerd {version} derives {binary:?} from {name}, others {first:?}: the name does not work across containerd lines"
        );
    }
    let tested = ctx.target.binary.file_name().and_then(|n| n.to_str()).unwrap_or("").to_string();
    ensure!(
        first.as_deref() == Some(tested.as_str()),
        "containerd looks for {first:?} but the tested binary is named {tested:?}"
    );
    Ok(())
}

fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

async fn resolves_to_tested_binary(ctx: &mut Ctx) -> CaseResult {
    let name = name_of(ctx)?;
    let explanation = crate::select::explain_runtime_for(&name, Some(ctx.target.profile.line));
    let lookup = &explanation.lookup;
    let chosen = lookup.chosen().ok_or_else(|| {
        fail(format!(
            "containerd {} would not start {name}: {}",
            explanation.containerd_version,
            lookup.wrapped_error().unwrap_or_default()
        ))
    })?;
    if let Some(error) = lookup.wrapped_error() {
        return Err(fail(format!("containerd would run {chosen}, but: {error}")));
    }
    let chosen = std::path::Path::new(chosen);
    ensure!(
        same_file(chosen, &ctx.target.binary),
        "containerd would run {} but the suite tested {}",
        chosen.display(),
        ctx.target.binary.display()
    );
    if let Some(expected) = &ctx.target.candidate.expect_binary {
        ensure!(
            same_file(chosen, expected),
            "the candidate expects {} but containerd's lookup on this host reaches {} ({})",
            expected.display(),
            chosen.display(),
            lookup.chosen_step().map(|s| s.place.describe()).unwrap_or_default()
        );
    }
    Ok(())
}

async fn not_shadowed(ctx: &mut Ctx) -> CaseResult {
    let name = name_of(ctx)?;
    let explanation = crate::select::explain_runtime_for(&name, Some(ctx.target.profile.line));
    let real: Vec<String> = explanation
        .shadowing
        .iter()
        .filter(|s| !s.same_file)
        .map(|s| format!("{} ({}) shadows {} ({})", s.winner.path, s.winner.place, s.shadowed.path, s.shadowed.place))
        .collect();
    ensure!(real.is_empty(), "{}", real.join("; "));
    Ok(())
}

async fn answers_version(ctx: &mut Ctx) -> CaseResult {
    let mut command = tokio::process::Command::new(&ctx.target.binary);
    command.arg("-v").stdin(std::process::Stdio::null()).kill_on_drop(true);
    if let Some(faults) = &ctx.target.faults {
        command.env(crate::context::MOCK_FAULTS_ENV, faults);
    }
    let output = tokio::time::timeout(Duration::from_secs(5), crate::process::reaper::output(&mut command))
        .await
        .map_err(|_| fail(format!("`{} -v` did not finish within 5 s", ctx.target.binary.display())))?
        .map_err(|e| fail(format!("cannot run {}: {e}", ctx.target.binary.display())))?;
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    ensure!(output.status.success(), "`-v` exited with {}: {}", output.status, text.trim());
    ensure!(!text.trim().is_empty(), "`-v` printed nothing");
    Ok(())
}
