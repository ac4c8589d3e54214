//! `shimcompat doctor`: the host fingerprint and, per candidate, whether it can run here and how it speaks.
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::bundle::ContainerConfig;
use crate::candidate::Candidate;
use crate::context::{Ctx, RunEnv, Target};
use crate::host;
use crate::run::Planned;
use crate::select;

#[derive(Debug, Serialize)]
pub struct HostFingerprint {
    pub kernel: String,
    pub arch: String,
    pub os: String,
    pub cgroup: String,
    pub cgroup2_controllers: String,
    pub kvm: bool,
    pub root: bool,
    pub containerd: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct CandidateDoctor {
    pub name: String,
    pub runtime: Option<String>,
    pub installed: bool,
    pub path: Option<String>,
    pub version: Option<String>,
    pub sha256: Option<String>,
    /// `plain`, `json` or `protobuf`, from a real `start`.
    pub bootstrap_form: Option<String>,
    /// What `start` accepted on stdin: `params` or `legacy`.
    pub bootstrap_stdin: Option<String>,
    pub task_api: Option<String>,
    /// The OCI runtime the candidate's runc options name, with its version.
    pub oci_runtime: Option<String>,
    pub missing: Option<String>,
    pub probe_error: Option<String>,
}

pub fn fingerprint() -> HostFingerprint {
    let uname = nix::sys::utsname::uname().ok();
    let os = std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string()))
        .unwrap_or_default();
    HostFingerprint {
        kernel: uname.as_ref().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default(),
        arch: uname.as_ref().map(|u| u.machine().to_string_lossy().into_owned()).unwrap_or_default(),
        os,
        cgroup: host::cgroup_layout().to_string(),
        cgroup2_controllers: ["/sys/fs/cgroup/unified/cgroup.controllers", "/sys/fs/cgroup/cgroup.controllers"]
            .iter()
            .find_map(|p| std::fs::read_to_string(p).ok())
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        kvm: host::kvm_usable(),
        root: host::is_root(),
        containerd: host::which("containerd").and_then(|p| version_of(&p, "--version")),
    }
}

/// The first line a binary prints for a version flag (bounded in time).
pub fn version_of(binary: &Path, flag: &str) -> Option<String> {
    let mut command = std::process::Command::new(binary);
    command.arg(flag).stdin(std::process::Stdio::null()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = crate::reaper::spawn_std(&mut command).ok()?;
    let pid = child.id();
    let result = finish_version(&mut child);
    crate::reaper::release(pid);
    let output = result?;
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    // Go shims print "<binary>:\n  Version: X\n  Revision: Y"; keep what identifies the build.
    let useful: Vec<&str> = lines.iter().copied().filter(|l| !l.ends_with(':')).take(2).collect();
    (!useful.is_empty()).then(|| useful.join("; "))
}

fn finish_version(child: &mut std::process::Child) -> Option<std::process::Output> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                use std::io::Read;
                let mut stdout = Vec::new();
                let mut stderr = Vec::new();
                if let Some(mut pipe) = child.stdout.take() {
                    let _ = pipe.read_to_end(&mut stdout);
                }
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = pipe.read_to_end(&mut stderr);
                }
                return Some(std::process::Output { status, stdout, stderr });
            }
            Ok(None) if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

pub fn sha256_of(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    Some(hex::encode(Sha256::digest(&bytes)))
}

/// Starts the candidate once (trivial container, never created) to learn its bootstrap form and Task API version.
fn probe(target: Arc<Target>, env: Arc<RunEnv>) -> Result<(String, String, String), String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let result = runtime.block_on(async {
        let mut ctx = Ctx::new(env, target.clone(), "doctor::probe");
        let launched = ctx.launch(&ContainerConfig::new(&["exit", "0"])).await;
        let answer = match &launched {
            Ok(shim) => Ok((
                shim.reply.form.to_string(),
                format!("{} ({})", shim.reply.api, shim.reply.api.service()),
                match target.bootstrap_mode() {
                    Some(crate::candidate::Bootstrap::Legacy) => "legacy (BootstrapParams refused)".to_string(),
                    _ => "params".to_string(),
                },
            )),
            Err(crate::cases::CaseError::Fail(message)) | Err(crate::cases::CaseError::Skip(message)) => {
                Err(message.lines().next().unwrap_or("").to_string())
            }
        };
        ctx.teardown().await;
        answer
    });
    runtime.shutdown_timeout(Duration::from_millis(200));
    result
}

pub fn examine(candidates: Vec<Candidate>, work_base: Option<&Path>) -> (HostFingerprint, Vec<CandidateDoctor>) {
    let env = RunEnv::create(work_base, false).ok().map(Arc::new);
    if env.is_some() {
        crate::shim::instance::become_subreaper();
        crate::reaper::start();
    }
    let mut rows = Vec::new();
    for candidate in candidates {
        let name = candidate.name.clone();
        let runtime = candidate.runtime.clone();
        let located = match (&candidate.runtime, &candidate.runtime_binary) {
            (Some(runtime), _) => select::resolve_runtime(runtime).map_err(|e| e.to_string()),
            (None, Some(path)) if host::is_executable(path) => Ok(path.clone()),
            (None, Some(path)) => Err(format!("{} is not an executable file", path.display())),
            (None, None) => Err("no runtime".into()),
        };
        let oci_runtime = candidate.runc_options.as_ref().map(|o| {
            let name = if o.binary_name.is_empty() { "runc".to_string() } else { o.binary_name.clone() };
            let path = if name.contains('/') { Some(std::path::PathBuf::from(&name)) } else { host::which(&name) };
            match path {
                Some(path) => {
                    // A wrapper script answers for the runtime it wraps.
                    let version = version_of(&path, "--version").unwrap_or_else(|| "no version".into());
                    format!("{} ({version})", path.display())
                }
                None => format!("{name} (not on PATH)"),
            }
        });
        let mut row = CandidateDoctor {
            name,
            runtime,
            installed: located.is_ok(),
            path: located.as_ref().ok().map(|p| p.display().to_string()),
            version: located.as_ref().ok().and_then(|p| version_of(p, "-v")),
            sha256: located.as_ref().ok().and_then(|p| sha256_of(p)),
            bootstrap_form: None,
            bootstrap_stdin: None,
            task_api: None,
            oci_runtime,
            missing: None,
            probe_error: None,
        };
        match select::plan(candidate, None) {
            Planned::Unavailable { reason, .. } => row.missing = Some(reason),
            Planned::Ready(target) => match &env {
                Some(env) => match probe(target, env.clone()) {
                    Ok((form, api, stdin)) => {
                        row.bootstrap_form = Some(form);
                        row.task_api = Some(api);
                        row.bootstrap_stdin = Some(stdin);
                    }
                    Err(e) => row.probe_error = Some(e),
                },
                None => row.probe_error = Some("cannot create a work directory".into()),
            },
        }
        rows.push(row);
    }
    if let Some(env) = env {
        env.cleanup();
        crate::shim::instance::reap_orphans();
        crate::leaks::remove_cgroup_parents();
    }
    (fingerprint(), rows)
}

pub fn print(host: &HostFingerprint, rows: &[CandidateDoctor]) {
    println!("host");
    println!("  os:        {}", host.os);
    println!("  kernel:    {} ({})", host.kernel, host.arch);
    println!(
        "  cgroup:    {}{}",
        host.cgroup,
        if host.cgroup2_controllers.is_empty() { String::new() } else { format!(" (cgroup2 controllers: {})", host.cgroup2_controllers) }
    );
    println!("  kvm:       {}", if host.kvm { "usable" } else { "absent or not usable" });
    println!("  root:      {}", if host.root { "yes" } else { "no" });
    println!("  containerd: {}", host.containerd.as_deref().unwrap_or("not installed"));
    for row in rows {
        println!("\ncandidate {} ({})", row.name, row.runtime.as_deref().unwrap_or("by path"));
        match &row.path {
            Some(path) => {
                println!("  installed: {path}");
                println!("  version:   {}", row.version.as_deref().unwrap_or("(no answer to -v)"));
                println!("  sha256:    {}", row.sha256.as_deref().unwrap_or("?"));
            }
            None => println!("  installed: no"),
        }
        if let Some(oci) = &row.oci_runtime {
            println!("  OCI runtime: {oci}");
        }
        if let (Some(form), Some(api)) = (&row.bootstrap_form, &row.task_api) {
            println!("  bootstrap: {form} reply, stdin {}", row.bootstrap_stdin.as_deref().unwrap_or("?"));
            println!("  task API:  {api}");
        }
        if let Some(missing) = &row.missing {
            println!("  missing:   {missing}");
        }
        if let Some(error) = &row.probe_error {
            println!("  start probe failed: {error}");
        }
        if row.missing.is_none() && row.probe_error.is_none() {
            println!("  ready:     yes");
        }
    }
}
