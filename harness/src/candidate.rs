//! What is tested: a shim named by its runtime name (or, for shim development only, a binary path), the runtime
//! options containerd would send it, what it needs from the host, the features it declares unsupported, waivers,
//! and a timeout scale. Candidate files live in `shims/candidates/*.toml`; the schema is this module's types.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A candidate file (`shims/candidates/<name>.toml`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Candidate {
    /// Short name used in trial names (`<name>::area::case`) and reports. Defaults to the file stem.
    #[serde(default)]
    pub name: String,
    /// One line for reports.
    #[serde(default)]
    pub description: String,
    /// The runtime name containerd would be given (`io.containerd.runc.v2`). Resolved by containerd's rules.
    #[serde(default)]
    pub runtime: Option<String>,
    /// A shim binary by path: for shim development only; such runs are not certified by name.
    #[serde(default)]
    pub runtime_binary: Option<PathBuf>,
    /// The file the runtime name must resolve to on this host (names::resolves_to_tested_binary), if it matters.
    #[serde(default)]
    pub expect_binary: Option<PathBuf>,
    /// `containerd.runc.v1.Options` sent with Create (and at start), for shims built on the runc shim.
    #[serde(default)]
    pub runc_options: Option<RuncOptions>,
    /// What the candidate needs from the host; a missing need skips the whole candidate with the reason.
    #[serde(default)]
    pub needs: Needs,
    /// Features the candidate does not support: cases needing them are skipped (not applicable), never passed.
    #[serde(default)]
    pub unsupported: BTreeSet<String>,
    /// Known divergences accepted for this candidate: reported as waived, apart from passes.
    #[serde(default)]
    pub waivers: Vec<Waiver>,
    /// Multiplies every deadline (VM-based shims are slower).
    #[serde(default = "one")]
    pub timeout_scale: f64,
    /// How to install it, shown when it is missing.
    #[serde(default)]
    pub install: String,
    /// Extra environment for the shim (e.g. PATH so it finds its OCI runtime).
    #[serde(default)]
    pub env: Vec<String>,
    /// Where a shim that is not a runc-shim keeps its runtime state, as `<state_root>/<namespace>/<container id>`
    /// (runwasi: `/run/containerd/<engine>`): a container's entry left there after teardown is a leak. For runc
    /// options the runtime's `root` is used instead.
    #[serde(default)]
    pub state_root: Option<PathBuf>,
    /// For a shim not built on the runc shim: the `ConfigPath` containerd's CRI sends it in
    /// `runtimeoptions.v1.Options` when its runtime has an `options` table (Kata: its configuration.toml).
    /// Default: an empty file the harness writes (options::runtime_options_accepted).
    #[serde(default)]
    pub runtime_config_path: Option<PathBuf>,
    /// The candidate file it was loaded from (for errors), if any.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuncOptions {
    /// The OCI runtime binary (`runc`, `crun`, a path).
    #[serde(default)]
    pub binary_name: String,
    /// The runtime's state root; empty means a private directory per run, so the harness can sweep it.
    #[serde(default)]
    pub root: String,
    #[serde(default)]
    pub systemd_cgroup: bool,
    #[serde(default)]
    pub no_pivot_root: bool,
    #[serde(default)]
    pub no_new_keyring: bool,
    #[serde(default)]
    pub shim_cgroup: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Needs {
    #[serde(default)]
    pub root: bool,
    #[serde(default)]
    pub kvm: bool,
    /// `v1`, `v2`, `hybrid`, or a list of acceptable layouts separated by `|`.
    #[serde(default)]
    pub cgroup: Option<String>,
    /// Binaries that must be on PATH (e.g. the OCI runtime).
    #[serde(default)]
    pub binaries: Vec<String>,
    /// A command that must succeed (e.g. a probe that the OCI runtime accepts this host's cgroup layout).
    #[serde(default)]
    pub probe: Option<String>,
    /// What a failed probe means, for the skip reason.
    #[serde(default)]
    pub probe_reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Waiver {
    /// Case id (`area::name`).
    pub case: String,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CandidateError {
    #[error("reading candidate file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("candidate file {path}: {source}")]
    Parse { path: String, source: toml::de::Error },
    #[error("candidate file {path}: {problem}")]
    Invalid { path: String, problem: String },
    #[error("no candidate files (*.toml) in {0}")]
    Empty(String),
}

impl Candidate {
    /// The built-in candidate for a runtime name given on the command line.
    pub fn for_runtime(name: &str) -> Candidate {
        let short = name.strip_prefix("io.containerd.").unwrap_or(name).replace('.', "-");
        let runc_options = is_runc_shim_name(name).then(RuncOptions::default);
        Candidate { name: short, runtime: Some(name.into()), runc_options, ..Candidate::blank() }
    }

    /// The built-in candidate for a binary path (development only).
    pub fn for_binary(path: &Path) -> Candidate {
        let stem = path.file_name().and_then(|n| n.to_str()).unwrap_or("shim").to_string();
        let runc_options = stem.starts_with("containerd-shim-runc-").then(RuncOptions::default);
        Candidate { name: stem, runtime_binary: Some(path.into()), runc_options, ..Candidate::blank() }
    }

    /// The bundled mock shim: the default candidate.
    pub fn mock() -> Candidate {
        Candidate {
            name: "mock".into(),
            description: "the bundled mock shim (runs the payload as a plain child process)".into(),
            runtime: Some(MOCK_RUNTIME.into()),
            ..Candidate::blank()
        }
    }

    fn blank() -> Candidate {
        Candidate {
            name: String::new(),
            description: String::new(),
            runtime: None,
            runtime_binary: None,
            runc_options: None,
            expect_binary: None,
            needs: Needs::default(),
            unsupported: BTreeSet::new(),
            waivers: Vec::new(),
            timeout_scale: 1.0,
            install: String::new(),
            env: Vec::new(),
            state_root: None,
            runtime_config_path: None,
            source: None,
        }
    }

    pub fn load(path: &Path) -> Result<Candidate, CandidateError> {
        let shown = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|source| CandidateError::Read { path: shown.clone(), source })?;
        let mut candidate: Candidate =
            toml::from_str(&text).map_err(|source| CandidateError::Parse { path: shown.clone(), source })?;
        if candidate.name.is_empty() {
            candidate.name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("candidate").to_string();
        }
        let invalid = |problem: String| CandidateError::Invalid { path: shown.clone(), problem };
        match (&candidate.runtime, &candidate.runtime_binary) {
            (Some(_), Some(_)) => return Err(invalid("set `runtime` or `runtime_binary`, not both".into())),
            (None, None) => return Err(invalid("set `runtime` (a runtime name) or `runtime_binary` (a path)".into())),
            _ => {}
        }
        if let Some(runtime) = &candidate.runtime {
            if runtime.contains('/') {
                return Err(invalid(format!(
                    "runtime {runtime:?} is a path; Docker refuses path-like runtime names (moby 547da0d575): use \
                     `runtime_binary` for a binary by path (not certified by name)"
                )));
            }
        }
        if !(candidate.timeout_scale > 0.0 && candidate.timeout_scale <= 100.0) {
            return Err(invalid(format!("timeout_scale {} is not in (0, 100]", candidate.timeout_scale)));
        }
        // A relative runtime_binary is relative to the file (the shim itself runs in its bundle).
        if let Some(binary) = candidate.runtime_binary.as_mut() {
            if binary.is_relative() {
                let joined = path.parent().unwrap_or(Path::new(".")).join(&*binary);
                *binary = joined.canonicalize().unwrap_or(joined);
            }
        }
        // A runtime binary given as ./path in the file is relative to the file (wrappers shipped beside it).
        if let Some(options) = candidate.runc_options.as_mut() {
            if options.binary_name.starts_with("./") {
                let dir = path.parent().unwrap_or(Path::new("."));
                let joined = dir.join(&options.binary_name);
                options.binary_name = joined.canonicalize().unwrap_or(joined).display().to_string();
            }
        }
        if candidate.name.contains("::") || candidate.name.contains(char::is_whitespace) {
            return Err(invalid(format!("name {:?} may not contain `::` or spaces", candidate.name)));
        }
        // The same default as `--runtime NAME` / `--runtime-binary PATH` (so a minimal file and the flag get one
        // verdict): a runc-shim name gets `containerd.runc.v1.Options` with every field at its zero value.
        if candidate.runc_options.is_none() && candidate.default_runc_options() {
            candidate.runc_options = Some(RuncOptions::default());
        }
        candidate.source = Some(path.to_path_buf());
        Ok(candidate)
    }

    /// Loads every `*.toml` in `dir`, sorted by file name.
    pub fn load_dir(dir: &Path) -> Result<Vec<Candidate>, CandidateError> {
        let shown = dir.display().to_string();
        let entries = std::fs::read_dir(dir).map_err(|source| CandidateError::Read { path: shown.clone(), source })?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        if paths.is_empty() {
            return Err(CandidateError::Empty(shown));
        }
        paths.iter().map(|p| Candidate::load(p)).collect()
    }

    /// Whether a run of this candidate certifies a runtime *name* (it does not when given a binary path).
    pub fn certified_by_name(&self) -> bool {
        self.runtime.is_some()
    }

    /// Whether this candidate's shim is the runc shim by its name (runtime name, or binary file name), and so gets
    /// zero-valued runc options when none are given.
    fn default_runc_options(&self) -> bool {
        let by_name = self.runtime.as_deref().is_some_and(is_runc_shim_name);
        let by_file = self
            .runtime_binary
            .as_deref()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("containerd-shim-runc-"));
        by_name || by_file
    }

    /// How errors name it: its file, or its name for a built-in candidate.
    pub fn origin(&self) -> String {
        match &self.source {
            Some(path) => format!("candidate file {}", path.display()),
            None => format!("candidate {}", self.name),
        }
    }

    pub fn waiver(&self, case_id: &str) -> Option<&Waiver> {
        self.waivers.iter().find(|w| w.case == case_id)
    }
}

pub const MOCK_RUNTIME: &str = "io.containerd.mock.v1";

/// Runtime names whose shim is the runc shim (Go or Rust) and so takes `containerd.runc.v1.Options`.
pub fn is_runc_shim_name(name: &str) -> bool {
    matches!(name, "io.containerd.runc.v2" | "io.containerd.runc.v1" | "io.containerd.runc.v2-rs")
}
