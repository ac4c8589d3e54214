//! Baselines: one candidate's outcomes under one containerd line on a reference host, committed under
//! `results/baselines/<candidate>@<line>.json`, compared by outcome (never by timing) with later runs.
use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Outcome, Report};
use crate::cases::Level;
use crate::context::Verdict;
use crate::host::HostFingerprint;
use crate::profile::Line;

pub const SCHEMA: &str = "shimcompat.baseline/v2";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Baseline {
    pub schema: String,
    pub candidate: BaselineCandidate,
    /// The containerd line the harness behaved as.
    pub containerd: Line,
    pub profile: String,
    pub verdict: Option<Verdict>,
    pub host: serde_json::Value,
    pub outcomes: Vec<CaseOutcome>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BaselineCandidate {
    pub name: String,
    pub description: String,
    pub runtime: Option<String>,
    pub binary: Option<String>,
    pub version: Option<String>,
    pub oci_runtime: Option<String>,
    pub certified_by_name: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CaseOutcome {
    pub case: String,
    pub area: String,
    pub level: Level,
    /// pass, fail, skip or waived.
    pub outcome: String,
    /// The first line of the failure message or the skip/waiver reason.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

pub fn outcome_word(outcome: &Outcome) -> (&'static str, String) {
    match outcome {
        Outcome::Pass => ("pass", String::new()),
        Outcome::Fail { message } => ("fail", message.lines().next().unwrap_or("").to_string()),
        Outcome::Skip { reason } => ("skip", reason.clone()),
        Outcome::Waived { reason, .. } => ("waived", reason.clone()),
        Outcome::Flaky { message, .. } => ("flaky", message.lines().next().unwrap_or("").to_string()),
    }
}

/// A candidate's outcomes under one containerd line in a report, sorted by case.
pub fn outcomes_of(report: &Report, candidate: &str, line: Line) -> Vec<CaseOutcome> {
    let mut outcomes: Vec<CaseOutcome> = report
        .results
        .iter()
        .filter(|r| r.candidate == candidate && r.containerd == line)
        .map(|r| {
            let (word, detail) = outcome_word(&r.outcome);
            CaseOutcome { case: r.case.clone(), area: r.area.clone(), level: r.level, outcome: word.into(), detail }
        })
        .collect();
    outcomes.sort_by(|a, b| a.case.cmp(&b.case));
    outcomes
}

/// One baseline per candidate that ran (candidates skipped as a whole get none).
pub fn from_report(
    report: &Report,
    host: &HostFingerprint,
    describe: &dyn Fn(&str) -> BaselineCandidate,
) -> Vec<Baseline> {
    let host = serde_json::to_value(host).unwrap_or_default();
    report
        .candidates
        .iter()
        .filter(|c| c.unavailable.is_none())
        .map(|c| Baseline {
            schema: SCHEMA.into(),
            candidate: describe(&c.name),
            containerd: c.containerd,
            profile: c.profile.clone(),
            verdict: c.verdict.clone(),
            host: host.clone(),
            outcomes: outcomes_of(report, &c.name, c.containerd),
        })
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("{path}: {detail}")]
    Io { path: String, detail: String },
}

pub fn load(path: &Path) -> Result<Baseline, BaselineError> {
    let fail = |detail: String| BaselineError::Io { path: path.display().to_string(), detail };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| fail(e.to_string()))
}

pub fn load_dir(dir: &Path) -> Result<Vec<Baseline>, BaselineError> {
    let fail = |detail: String| BaselineError::Io { path: dir.display().to_string(), detail };
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| fail(e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    paths.iter().map(|p| load(p)).collect()
}

pub fn save(baseline: &Baseline, dir: &Path) -> Result<(), BaselineError> {
    let path = dir.join(file_name(&baseline.candidate.name, baseline.containerd));
    let fail = |detail: String| BaselineError::Io { path: path.display().to_string(), detail };
    std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
    let json = serde_json::to_string_pretty(baseline).map_err(|e| fail(e.to_string()))?;
    std::fs::write(&path, json + "\n").map_err(|e| fail(e.to_string()))
}

/// `<candidate>@<line>.json`.
pub fn file_name(candidate: &str, line: Line) -> String {
    format!("{candidate}@{line}.json")
}

/// A difference between two runs of the same candidate, by outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub case: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

impl Change {
    /// A pass that no longer passes, or a case that vanished.
    pub fn is_regression(&self) -> bool {
        self.before.as_deref() == Some("pass") && self.after.as_deref() != Some("pass")
    }
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} -> {}",
            self.case,
            self.before.as_deref().unwrap_or("(absent)"),
            self.after.as_deref().unwrap_or("(absent)")
        )
    }
}

/// Outcome changes from `before` to `after` (timings and messages are not compared).
pub fn compare(before: &[CaseOutcome], after: &[CaseOutcome]) -> Vec<Change> {
    let old: BTreeMap<&str, &str> = before.iter().map(|o| (o.case.as_str(), o.outcome.as_str())).collect();
    let new: BTreeMap<&str, &str> = after.iter().map(|o| (o.case.as_str(), o.outcome.as_str())).collect();
    let mut cases: Vec<&str> = old.keys().chain(new.keys()).copied().collect();
    cases.sort();
    cases.dedup();
    cases
        .into_iter()
        .filter(|case| old.get(case) != new.get(case))
        .map(|case| Change {
            case: case.to_string(),
            before: old.get(case).map(|s| s.to_string()),
            after: new.get(case).map(|s| s.to_string()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(case: &str, word: &str) -> CaseOutcome {
        CaseOutcome {
            case: case.into(),
            area: "a".into(),
            level: Level::Must,
            outcome: word.into(),
            detail: String::new(),
        }
    }

    #[test]
    fn compare_finds_regressions_and_ignores_details() {
        let mut before = vec![outcome("a::x", "pass"), outcome("a::y", "fail"), outcome("a::z", "pass")];
        before[1].detail = "pid 10".into();
        let mut after = vec![outcome("a::x", "fail"), outcome("a::y", "fail"), outcome("a::w", "pass")];
        after[1].detail = "pid 11".into();
        let changes = compare(&before, &after);
        let shown: Vec<String> = changes.iter().map(|c| c.to_string()).collect();
        assert_eq!(shown, vec!["a::w: (absent) -> pass", "a::x: pass -> fail", "a::z: pass -> (absent)"]);
        assert_eq!(changes.iter().filter(|c| c.is_regression()).count(), 2);
    }
}
