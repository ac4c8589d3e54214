//! `shimcompat doctor`: the host fingerprint and, per candidate, whether it can run here and how it speaks.
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::candidate::Candidate;
use crate::context::{RunEnv, Verdict};
use crate::host::{self, fingerprint, sha256_of, version_of, HostFingerprint};
use crate::profile::Line;
use crate::select;
use crate::select::Planned;

#[derive(Debug, Serialize)]
pub struct LineVerdict {
    pub containerd: Line,
    pub profile: String,
    #[serde(flatten)]
    pub verdict: Verdict,
}

#[derive(Debug, Serialize)]
pub struct CandidateDoctor {
    pub name: String,
    pub runtime: Option<String>,
    pub installed: bool,
    pub path: Option<String>,
    pub version: Option<String>,
    pub sha256: Option<String>,
    /// Per containerd line: can that containerd use the shim (its `start` reply read as that line reads it, the
    /// Task service it speaks answering), and what `start` answered.
    pub verdicts: Vec<LineVerdict>,
    /// The OCI runtime the candidate's runc options name, with its version.
    pub oci_runtime: Option<String>,
    pub missing: Option<String>,
    pub probe_error: Option<String>,
}

pub fn examine(candidates: Vec<Candidate>, work_base: Option<&Path>) -> (HostFingerprint, Vec<CandidateDoctor>) {
    let env = RunEnv::create(work_base, false).ok().map(Arc::new);
    if env.is_some() {
        crate::process::become_subreaper();
        crate::process::reaper::start();
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
            verdicts: Vec::new(),
            oci_runtime,
            missing: None,
            probe_error: None,
        };
        for line in Line::ALL {
            match select::plan(candidate.clone(), None, line) {
                Planned::Unavailable { reason, .. } => {
                    row.missing = Some(reason);
                    break;
                }
                Planned::Ready(target) => match &env {
                    Some(env) => {
                        let verdict = crate::run::judge(&target, env);
                        row.verdicts.push(LineVerdict {
                            containerd: line,
                            profile: line.profile().describe(),
                            verdict,
                        });
                    }
                    None => {
                        row.probe_error = Some("cannot create a work directory".into());
                        break;
                    }
                },
            }
        }
        rows.push(row);
    }
    if let Some(env) = env {
        for line in env.cleanup() {
            eprintln!("left after the probes: {line}");
        }
        crate::process::reap_orphans();
        crate::process::cgroup::remove_cgroup_parents();
    }
    (fingerprint(), rows)
}

pub fn print(host: &HostFingerprint, rows: &[CandidateDoctor]) {
    crate::outln!("host");
    crate::outln!("  os:        {}", host.os);
    crate::outln!("  kernel:    {} ({})", host.kernel, host.arch);
    crate::outln!(
        "  cgroup:    {}{}",
        host.cgroup,
        if host.cgroup2_controllers.is_empty() {
            String::new()
        } else {
            format!(" (cgroup2 controllers: {})", host.cgroup2_controllers)
        }
    );
    crate::outln!("  kvm:       {}", if host.kvm { "usable" } else { "absent or not usable" });
    crate::outln!("  root:      {}", if host.root { "yes" } else { "no" });
    let stale = crate::registry::stale();
    if !stale.is_empty() {
        crate::outln!(
            "  leftovers: {} killed run(s) left things behind (`shimcompat clean` removes them):",
            stale.len()
        );
        for record in &stale {
            crate::outln!("             pid {} at {}", record.pid, record.workdir.display());
        }
    }
    crate::outln!("  containerd: {}", host.containerd.as_deref().unwrap_or("not installed"));
    for row in rows {
        crate::outln!("\ncandidate {} ({})", row.name, row.runtime.as_deref().unwrap_or("by path"));
        match &row.path {
            Some(path) => {
                crate::outln!("  installed: {path}");
                crate::outln!("  version:   {}", row.version.as_deref().unwrap_or("(no answer to -v)"));
                crate::outln!("  sha256:    {}", row.sha256.as_deref().unwrap_or("?"));
            }
            None => crate::outln!("  installed: no"),
        }
        if let Some(oci) = &row.oci_runtime {
            crate::outln!("  OCI runtime: {oci}");
        }
        for line in &row.verdicts {
            let judged = if line.containerd.profile().judged_by_daemon() { "" } else { " (modelled from source)" };
            match (&line.verdict.usable, &line.verdict.reason) {
                (true, _) => crate::outln!(
                    "  containerd {}{judged}: usable: {}",
                    line.containerd,
                    line.verdict.reply.as_deref().unwrap_or("")
                ),
                (false, reason) => {
                    crate::outln!(
                        "  containerd {}{judged}: NOT usable: {}",
                        line.containerd,
                        reason.as_deref().unwrap_or("")
                    )
                }
            }
        }
        if let Some(missing) = &row.missing {
            crate::outln!("  missing:   {missing}");
        }
        if let Some(error) = &row.probe_error {
            crate::outln!("  start probe failed: {error}");
        }
        if row.missing.is_none() && row.probe_error.is_none() {
            let usable: Vec<String> =
                row.verdicts.iter().filter(|v| v.verdict.usable).map(|v| v.containerd.to_string()).collect();
            crate::outln!(
                "  ready:     yes (usable by containerd {})",
                if usable.is_empty() { "none".into() } else { usable.join(", ") }
            );
        }
    }
}
