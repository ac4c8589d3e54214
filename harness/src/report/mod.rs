//! The results model: one canonical schema, written as JSON, and the console summary's counts.
pub mod baseline;
pub mod certify;
pub mod console;
pub mod html;
pub mod junit;
pub mod markdown;
pub mod matrix;
pub mod stream;
pub mod writers;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cases::Level;
use crate::context::Verdict;
use crate::profile::Line;
use crate::select::Planned;

pub const SCHEMA: &str = "shimcompat.report/v2";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    Fail {
        message: String,
    },
    Skip {
        reason: String,
    },
    Waived {
        reason: String,
        message: String,
    },
    /// Failed, then passed on a retry (`--retries`): never counted as a pass; `message` is the first failure.
    Flaky {
        message: String,
        attempts: u32,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrialResult {
    pub name: String,
    pub candidate: String,
    /// The containerd line the harness behaved as.
    pub containerd: Line,
    pub case: String,
    pub area: String,
    pub level: Level,
    #[serde(flatten)]
    pub outcome: Outcome,
    #[serde(with = "millis")]
    pub duration: Duration,
    /// How much of `duration` the trial spent waiting on the shim: its `start` and every Task API call (overlapping
    /// calls each count). The rest is the harness's (and the runtime's) own.
    #[serde(default, with = "millis", rename = "shim_ms")]
    pub shim_time: Duration,
    /// What the case checks, and where containerd relies on it (for this line).
    #[serde(default)]
    pub summary: String,
    #[serde(default)]
    pub reference: String,
    #[serde(default)]
    pub features: Vec<String>,
    /// For a failure (or a waived one): the shims' events and log tails at the time, apart from the message.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub evidence: String,
    /// The run was being interrupted when this trial finished (its outcome is then the harness's doing).
    #[serde(skip)]
    pub interrupted: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CandidateReport {
    pub name: String,
    /// The containerd line it ran under (one entry per candidate and line).
    pub containerd: Line,
    /// Which release that line's profile models, and whether it was checked against a running daemon.
    pub profile: String,
    /// Whether that containerd line can use the shim at all, and why not.
    pub verdict: Option<Verdict>,
    pub runtime: Option<String>,
    pub binary: Option<String>,
    /// False when the shim was given by path: the result does not certify a runtime name.
    pub certified_by_name: bool,
    /// Why it could not run here, if it could not.
    pub unavailable: Option<String>,
    /// sha256 of the shim binary that ran.
    #[serde(default)]
    pub sha256: Option<String>,
    /// What the shim prints for `-v`.
    #[serde(default)]
    pub version: Option<String>,
    /// The OCI runtime named in the runc options (`BinaryName`), for runc-family shims.
    #[serde(default)]
    pub oci_runtime: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub schema: String,
    pub tool_version: String,
    /// `git describe` of the tree the tool was built from ("unknown" outside a checkout).
    #[serde(default)]
    pub git_revision: String,
    /// A hash of the catalogue (case ids, levels, features, faults): two reports with one hash ran the same cases.
    #[serde(default)]
    pub catalogue: String,
    /// The host the run was on.
    #[serde(default)]
    pub host: Option<crate::host::HostFingerprint>,
    /// The command line, as given.
    #[serde(default)]
    pub command_line: Vec<String>,
    /// Unix time (seconds) the run started and finished.
    #[serde(default)]
    pub started_at: u64,
    #[serde(default)]
    pub finished_at: u64,
    pub candidates: Vec<CandidateReport>,
    pub results: Vec<TrialResult>,
    pub filtered_out: usize,
    #[serde(with = "millis")]
    pub duration: Duration,
    /// Processes found running after every teardown (killed by the harness).
    pub stragglers: Vec<String>,
    /// The signal that stopped the run early (trials in flight then are skipped as interrupted, trials not yet
    /// started are not listed); `None` for a run that finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interrupted: Option<String>,
    /// Selected trials that never ran (interrupted, or stopped by --max-fail).
    #[serde(default)]
    pub not_run: usize,
    /// Why the run stopped starting trials before the end (--max-fail / --fail-fast).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_early: Option<String>,
    /// Where `--keep` kept the run's bundles and logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_dir: Option<String>,
    /// What a reporter could not write (a file writer's error); not part of the JSON.
    #[serde(skip)]
    pub output_errors: Vec<String>,
    /// Waivers whose case passed in this run (the divergence they accept is gone): one line each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stale_waivers: Vec<String>,
}

/// Which failures make a run fail (`--fail-on`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum FailOn {
    /// Only a MUST case failing
    Must,
    /// A MUST or SHOULD case failing
    Should,
    /// Any case failing (MAY too)
    #[default]
    Any,
}

/// The exit codes of `shimcompat run` (and `baseline`), as `--help` and README list them.
pub mod exit {
    /// Every selected trial ran and nothing failed at the `--fail-on` level; nothing was left running.
    pub const OK: u8 = 0;
    /// A case failed at the `--fail-on` level, or something was left after teardown.
    pub const FAILED: u8 = 1;
    /// Bad input: a flag, a candidate file, a runtime name that cannot run, a report of another schema.
    pub const USAGE: u8 = 2;
    /// Nothing ran (no trial selected, or every one skipped), or a candidate named by `--candidate` could not run
    /// here; `--allow-empty` accepts it.
    pub const EMPTY: u8 = 3;
    /// Interrupted by SIGINT, SIGTERM or SIGHUP (the partial report is written).
    pub const INTERRUPTED: u8 = 130;
    /// stdout was closed (the partial report is written).
    pub const STDOUT_CLOSED: u8 = 141;
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub waived: usize,
    pub flaky: usize,
}

impl Report {
    pub fn new(plans: &[Planned]) -> Report {
        let candidates = plans
            .iter()
            .map(|plan| match plan {
                Planned::Ready(target) => CandidateReport {
                    name: target.candidate.name.clone(),
                    containerd: target.profile.line,
                    profile: target.profile.describe(),
                    verdict: target.verdict(),
                    runtime: target.candidate.runtime.clone(),
                    binary: Some(target.binary.display().to_string()),
                    certified_by_name: target.candidate.certified_by_name(),
                    unavailable: None,
                    // Filled in by `add_binary_facts` for a run (hashing a debug-built shim takes a while).
                    sha256: None,
                    version: None,
                    oci_runtime: target.candidate.runc_options.as_ref().map(|o| {
                        if o.binary_name.is_empty() {
                            "runc (default)".to_string()
                        } else {
                            o.binary_name.clone()
                        }
                    }),
                },
                Planned::Unavailable { candidate, reason, line } => CandidateReport {
                    name: candidate.name.clone(),
                    containerd: *line,
                    profile: line.profile().describe(),
                    verdict: None,
                    runtime: candidate.runtime.clone(),
                    binary: None,
                    certified_by_name: candidate.certified_by_name(),
                    unavailable: Some(reason.clone()),
                    sha256: None,
                    version: None,
                    oci_runtime: None,
                },
            })
            .collect();
        Report {
            schema: SCHEMA.into(),
            tool_version: env!("CARGO_PKG_VERSION").into(),
            git_revision: env!("SHIMCOMPAT_GIT_REVISION").into(),
            catalogue: catalogue_hash(),
            host: None,
            command_line: std::env::args().collect(),
            started_at: unix_now(),
            finished_at: 0,
            candidates,
            results: Vec::new(),
            filtered_out: 0,
            duration: Duration::ZERO,
            stragglers: Vec::new(),
            interrupted: None,
            stale_waivers: Vec::new(),
            output_errors: Vec::new(),
            work_dir: None,
            not_run: 0,
            stopped_early: None,
        }
    }

    pub fn counts(&self) -> Counts {
        let mut counts = Counts::default();
        for result in &self.results {
            match result.outcome {
                Outcome::Pass => counts.passed += 1,
                Outcome::Fail { .. } => counts.failed += 1,
                Outcome::Skip { .. } => counts.skipped += 1,
                Outcome::Waived { .. } => counts.waived += 1,
                Outcome::Flaky { .. } => counts.flaky += 1,
            }
        }
        counts
    }

    /// The sha256 and `-v` output of every candidate binary that ran.
    pub fn add_binary_facts(&mut self) {
        for candidate in self.candidates.iter_mut().filter(|c| c.unavailable.is_none()) {
            if let Some(binary) = &candidate.binary {
                let (sha256, version) = binary_facts(std::path::Path::new(binary));
                candidate.sha256 = sha256;
                candidate.version = version;
            }
        }
    }

    /// The exit code under a `--fail-on` policy. `named_unavailable`: a candidate the user named one by one could
    /// not run here.
    pub fn exit_code(&self, fail_on: FailOn, allow_empty: bool, named_unavailable: bool) -> u8 {
        match self.interrupted.as_deref() {
            Some("SIGPIPE") => return exit::STDOUT_CLOSED,
            Some(_) => return exit::INTERRUPTED,
            None => {}
        }
        let counts_at = |level: Level| match fail_on {
            FailOn::Any => true,
            FailOn::Should => level != Level::May,
            FailOn::Must => level == Level::Must,
        };
        let failed = self.results.iter().any(|r| matches!(r.outcome, Outcome::Fail { .. }) && counts_at(r.level));
        if failed || !self.stragglers.is_empty() {
            return exit::FAILED;
        }
        let counts = self.counts();
        let nothing_ran = counts.passed + counts.failed + counts.waived + counts.flaky == 0;
        if (nothing_ran || named_unavailable) && !allow_empty {
            return exit::EMPTY;
        }
        exit::OK
    }

    /// Nothing failed and nothing was left running.
    pub fn success(&self) -> bool {
        self.counts().failed == 0 && self.stragglers.is_empty() && self.interrupted.is_none()
    }
}

/// Several reports as one (`shimcompat report A.json B.json`). Reports from different hosts keep their hosts apart:
/// each candidate of host N is renamed `<name> (host N)` (so a case skipped on one host is never merged into a
/// pass of another), and the hosts are listed in order in `hosts`.
pub fn merge(reports: Vec<Report>) -> (Report, Vec<Option<crate::host::HostFingerprint>>) {
    let mut hosts: Vec<Option<crate::host::HostFingerprint>> = Vec::new();
    for report in &reports {
        if !hosts.contains(&report.host) {
            hosts.push(report.host.clone());
        }
    }
    let several = hosts.len() > 1;
    let mut merged: Option<Report> = None;
    for mut report in reports {
        if several {
            let n = hosts.iter().position(|h| *h == report.host).unwrap_or(0) + 1;
            for candidate in &mut report.candidates {
                candidate.name = format!("{} (host {n})", candidate.name);
            }
            for result in &mut report.results {
                result.candidate = format!("{} (host {n})", result.candidate);
                result.name = format!("{} (host {n})", result.name);
            }
        }
        match merged.as_mut() {
            None => merged = Some(report),
            Some(all) => {
                all.candidates.extend(report.candidates);
                all.results.extend(report.results);
                all.stragglers.extend(report.stragglers);
                all.stale_waivers.extend(report.stale_waivers);
                all.duration += report.duration;
                all.filtered_out += report.filtered_out;
                all.started_at = all.started_at.min(report.started_at);
                all.finished_at = all.finished_at.max(report.finished_at);
                if all.catalogue != report.catalogue {
                    all.catalogue = format!("{} + {}", all.catalogue, report.catalogue);
                }
                if all.interrupted.is_none() {
                    all.interrupted = report.interrupted;
                }
            }
        }
    }
    let mut merged = merged.expect("merge of no reports");
    if several {
        merged.host = None;
    }
    (merged, hosts)
}

/// A binary's sha256 and `-v` output, computed once per file version per process (a debug build of the mock is
/// 150 MB, and the self-test makes hundreds of reports).
fn binary_facts(path: &std::path::Path) -> (Option<String>, Option<String>) {
    type Facts = (Option<String>, Option<String>);
    /// A binary as seen on disk: path, size, modification time.
    type Seen = (std::path::PathBuf, u64, std::time::SystemTime);
    static CACHE: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<Seen, Facts>>> =
        std::sync::OnceLock::new();
    let Ok(meta) = std::fs::metadata(path) else { return (None, None) };
    let key = (path.to_path_buf(), meta.len(), meta.modified().unwrap_or(std::time::UNIX_EPOCH));
    let cache = CACHE.get_or_init(Default::default);
    if let Some(found) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return found.clone();
    }
    let facts = (crate::host::sha256_of(path), crate::host::version_of(path, "-v"));
    cache.lock().unwrap_or_else(|p| p.into_inner()).insert(key, facts.clone());
    facts
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The first 16 hex digits of a sha256 over every case's id, level (and per-line levels), features and fault.
pub fn catalogue_hash() -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    let mut cases = crate::cases::catalogue();
    cases.sort_by_key(|c| c.id);
    for case in cases {
        hasher.update(format!("{}|{}|{}|{}|", case.id, case.level, case.features.join(","), case.breaks_with));
        for (line, level, _) in case.per_line {
            hasher.update(format!("{line}:{level}|"));
        }
        hasher.update(b"\n");
    }
    hex::encode(hasher.finalize())[..16].to_string()
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(duration.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(deserializer)?))
    }
}
