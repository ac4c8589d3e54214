//! From what the user asked for (a runtime name, a binary, candidate files) to planned candidates: resolved to a
//! binary and checked against the host, or unavailable with the reason and the install hint.
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::resolve::{self, explain::Explanation, explain::Selection};

use crate::candidate::{Candidate, MOCK_RUNTIME};
use crate::context::Target;
use crate::host;
use crate::profile::Line;

#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    NotInstalled(String),
}

/// The Docker gate for `--runtime` (names only, never paths; see resolve::docker::check_user_runtime_name).
pub fn check_runtime_name(name: &str) -> Result<(), SelectError> {
    resolve::docker::check_user_runtime_name(name).map_err(|e| SelectError::Refused(format!("--runtime: {e}")))
}

/// containerd's rules for the installed containerd (or the newest, when none is installed).
fn containerd_rules() -> (resolve::containerd::Version, Selection) {
    static RULES: OnceLock<(resolve::containerd::Version, Selection)> = OnceLock::new();
    RULES
        .get_or_init(|| {
            let path = std::env::var("PATH").unwrap_or_default();
            let newest = resolve::containerd::Version::NEWEST;
            match resolve::host::look_path("containerd", &path) {
                None => (newest, Selection::Newest { reason: "no containerd on PATH".into() }),
                Some(binary) => match resolve::host::version_output(&binary, Duration::from_secs(5)) {
                    Ok(output) => match resolve::containerd::Version::from_version_output(&output) {
                        Ok(version) => (version, Selection::Installed { output }),
                        Err(e) => (newest, Selection::Newest { reason: e.to_string() }),
                    },
                    Err(reason) => (newest, Selection::Newest { reason }),
                },
            }
        })
        .clone()
}

/// How containerd would resolve `name` if shimcompat were the containerd process: working directory `/` (as under
/// systemd), the opt plugin's `/opt/containerd/bin` first, then this PATH, then next to the daemon's own binary,
/// which for shimcompat is where `cargo build` puts the bundled mock. Docker's verdicts are the current gate's.
pub fn explain_runtime(name: &str) -> Explanation {
    explain_runtime_for(name, None)
}

/// As explain_runtime, with the rules of a given containerd line (the one the run behaves as) instead of the
/// installed containerd's.
pub fn explain_runtime_for(name: &str, line: Option<Line>) -> Explanation {
    let (containerd_version, containerd_selection) = match line {
        Some(line) => (line.resolve_version(), Selection::Flag),
        None => containerd_rules(),
    };
    let own = host::bundled_dirs().last().map(|d| d.display().to_string());
    let request = resolve::explain::Request {
        name,
        docker_version: resolve::docker::Version::NEWEST,
        docker_selection: Selection::Newest { reason: "the gate of current Docker".into() },
        containerd_version,
        containerd_selection,
        cwd: "/".into(),
        inherited_path: std::env::var("PATH").unwrap_or_default(),
        opt_dir: Some("/opt/containerd".into()),
        containerd_binary: std::env::current_exe().ok().map(|p| p.display().to_string()),
        containerd_dir: own,
        probe: &resolve::host::HostProbe,
    };
    resolve::explain::explain(&request)
}

/// Resolves a runtime name to a shim binary as containerd does (see explain_runtime).
pub fn resolve_runtime(name: &str) -> Result<PathBuf, SelectError> {
    resolve_runtime_for(name, None)
}

/// Resolves a runtime name as the given containerd line does.
pub fn resolve_runtime_for(name: &str, line: Option<Line>) -> Result<PathBuf, SelectError> {
    let explanation = explain_runtime_for(name, line);
    match (&explanation.lookup.outcome, explanation.lookup.wrapped_error()) {
        (resolve::containerd::Outcome::Runs { path, exec_error: None, .. }, _) => Ok(PathBuf::from(path)),
        (_, error) => {
            let hint = if name == MOCK_RUNTIME {
                " (the bundled mock is built by `cargo build` next to the shimcompat binary)"
            } else {
                ""
            };
            Err(SelectError::NotInstalled(format!(
                "runtime {name:?}: containerd {} would not start it: {}{hint}",
                explanation.containerd_version,
                error.unwrap_or_else(|| "no file found".into())
            )))
        }
    }
}

/// Plans one candidate under one containerd line: resolves its binary and checks what it needs from the host.
pub fn plan(candidate: Candidate, faults: Option<&str>, line: Line) -> Planned {
    let unavailable = |candidate: Candidate, reason: String| {
        let reason =
            if candidate.install.is_empty() { reason } else { format!("{reason}; install: {}", candidate.install) };
        Planned::Unavailable { candidate, reason, line }
    };
    let binary = match (&candidate.runtime, &candidate.runtime_binary) {
        (Some(name), _) => match resolve_runtime_for(name, Some(line)) {
            Ok(path) => path,
            Err(e) => return unavailable(candidate, e.to_string()),
        },
        (None, Some(path)) => {
            if !host::is_executable(path) {
                let reason = format!("{} is not an executable file", path.display());
                return unavailable(candidate, reason);
            }
            path.clone()
        }
        (None, None) => return unavailable(candidate, "no runtime name or binary".into()),
    };
    if let Some(reason) = missing_needs(&candidate) {
        return unavailable(candidate, reason);
    }
    Planned::Ready(Arc::new(Target::new(candidate, binary, faults.map(str::to_string), line)))
}

/// The first thing the host lacks for this candidate.
pub fn missing_needs(candidate: &Candidate) -> Option<String> {
    let needs = &candidate.needs;
    if needs.root && !host::is_root() {
        return Some("needs root".into());
    }
    if needs.kvm && !host::kvm_usable() {
        return Some("no usable /dev/kvm".into());
    }
    if let Some(wanted) = &needs.cgroup {
        let layout = host::cgroup_layout().to_string();
        if !wanted.split('|').any(|w| w.trim() == layout) {
            return Some(format!("needs cgroup layout {wanted}, this host is {layout}"));
        }
    }
    for binary in &needs.binaries {
        if host::which(binary).is_none() {
            return Some(format!("{binary} not on PATH"));
        }
    }
    if let Some(probe) = &needs.probe {
        if let Err(why) = run_probe(probe) {
            return Some(match &needs.probe_reason {
                Some(reason) => format!("{reason} (probe {why}: {probe})"),
                None => format!("host probe {why}: {probe}"),
            });
        }
    }
    None
}

/// How long a candidate's `needs.probe` may take (`SHIMCOMPAT_PROBE_DEADLINE` seconds overrides it).
pub const PROBE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(20);

fn probe_deadline() -> std::time::Duration {
    std::env::var("SHIMCOMPAT_PROBE_DEADLINE")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(std::time::Duration::from_secs_f64)
        .unwrap_or(PROBE_DEADLINE)
}

/// Runs a probe with `sh -c` in its own process group, with a deadline; whatever it started is killed with it, and
/// it dies with the harness. Err says why it did not succeed ("failed (exit 1)", "did not finish within 20s", ...).
fn run_probe(probe: &str) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new("sh");
    command
        .arg("-c")
        .arg(probe)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0);
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = crate::process::reaper::spawn_std(&mut command).map_err(|e| format!("could not run ({e})"))?;
    let pid = child.id();
    let deadline = probe_deadline();
    let started = std::time::Instant::now();
    let outcome = loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => break Ok(()),
            Ok(Some(status)) => break Err(format!("failed ({status})")),
            Ok(None) if started.elapsed() >= deadline => {
                break Err(format!("did not finish within {}s", deadline.as_secs_f64()));
            }
            Ok(None) => std::thread::sleep(std::time::Duration::from_millis(20)),
            Err(e) => break Err(format!("could not be waited for ({e})")),
        }
    };
    // The group goes whether the probe finished or not: nothing it started outlives it.
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
    let _ = child.wait();
    crate::process::reaper::release(pid);
    outcome
}

/// The mock's fault names, as shims/mock/FAULTS.md lists them (a unit test in the mock keeps that file in step with
/// its fault enum).
pub fn known_faults() -> Vec<&'static str> {
    const FAULTS_MD: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../shims/mock/FAULTS.md"));
    FAULTS_MD
        .lines()
        .filter_map(|line| line.strip_prefix("- `"))
        .filter_map(|rest| rest.split_once('`').map(|(name, _)| name))
        .collect()
}

/// `--faults`: every name must be a mock fault (an unknown one would make every Create fail, not test anything).
pub fn check_faults(list: &str) -> Result<(), String> {
    let known = known_faults();
    let names: Vec<&str> = list.split(',').map(str::trim).filter(|n| !n.is_empty()).collect();
    if names.is_empty() {
        return Err("--faults: the list is empty".into());
    }
    for name in names {
        if !known.contains(&name) {
            let near: Vec<&str> =
                known.iter().copied().filter(|k| k.contains(name) || name.contains(k)).take(5).collect();
            return Err(format!(
                "--faults: {name:?} is not a mock fault (see shims/mock/FAULTS.md; {} known){}",
                known.len(),
                if near.is_empty() { String::new() } else { format!("; did you mean {}?", near.join(", ")) }
            ));
        }
    }
    Ok(())
}

/// What candidate files may say that only the catalogue can check: every `unsupported` entry names a feature some
/// case needs, every waiver names a case, and no two candidates share a name (their trials and baselines would
/// collide).
pub fn check_candidates(candidates: &[Candidate]) -> Result<(), String> {
    let catalogue = crate::cases::catalogue();
    let mut features: Vec<&str> = catalogue.iter().flat_map(|c| c.features.iter().copied()).collect();
    features.sort_unstable();
    features.dedup();
    let mut seen = std::collections::BTreeSet::new();
    for candidate in candidates {
        if !seen.insert(candidate.name.as_str()) {
            let first = candidates.iter().find(|c| c.name == candidate.name).map(Candidate::origin).unwrap_or_default();
            return Err(format!(
                "two candidates are named {:?} ({first} and {}): trial names and baselines would collide (set `name` in one file)",
                candidate.name,
                candidate.origin()
            ));
        }
        for feature in &candidate.unsupported {
            if !features.contains(&feature.as_str()) {
                return Err(format!(
                    "{}: unsupported feature {feature:?} is needed by no case (features: {})",
                    at_line(candidate, feature),
                    features.join(", ")
                ));
            }
        }
        for waiver in &candidate.waivers {
            if !catalogue.iter().any(|c| c.id == waiver.case) {
                return Err(format!(
                    "{}: the waiver for {:?} names no case (case ids are `area::name`, as `run --list` shows \
                     after the candidate's `<name>@<line>::`)",
                    at_line(candidate, &waiver.case),
                    waiver.case
                ));
            }
        }
    }
    Ok(())
}

/// `candidate file F:N` where line N of the file holds `"value"` (the first such line), else the origin alone.
fn at_line(candidate: &Candidate, value: &str) -> String {
    let quoted = format!("{value:?}");
    let line = candidate
        .source
        .as_ref()
        .and_then(|path| std::fs::read_to_string(path).ok())
        .and_then(|text| text.lines().position(|l| l.contains(&quoted)).map(|n| n + 1));
    match (line, &candidate.source) {
        (Some(n), Some(path)) => format!("candidate file {}:{n}", path.display()),
        _ => candidate.origin(),
    }
}

/// A candidate under one containerd line, ready to run, or the reason it cannot run here.
// One per candidate and line, made once: not worth a box for the candidate record.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Planned {
    Ready(Arc<Target>),
    Unavailable { candidate: crate::candidate::Candidate, reason: String, line: Line },
}

impl Planned {
    pub fn name(&self) -> &str {
        match self {
            Planned::Ready(target) => &target.candidate.name,
            Planned::Unavailable { candidate, .. } => &candidate.name,
        }
    }

    pub fn line(&self) -> Line {
        match self {
            Planned::Ready(target) => target.profile.line,
            Planned::Unavailable { line, .. } => *line,
        }
    }

    /// `<candidate>@<line>`: the prefix of its trial names.
    pub fn label(&self) -> String {
        format!("{}@{}", self.name(), self.line())
    }
}
