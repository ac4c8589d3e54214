//! The certification statement and the badge for one candidate under one containerd line.
//!
//! "<name> sha256:<12 hex> passes <p>/<n> MUST, <p>/<n> SHOULD (<w> waived), <p>/<n> MAY under containerd <line>
//! on <os> <kernel> (<arch>), shimcompat <version> (git <revision>), catalogue <hash>"
//! Skipped cases are not counted on either side; flaky and waived ones are counted as run but not passed.
use super::{Outcome, Report};
use crate::cases::Level;
use crate::profile::Line;

/// Passed and counted cases at one level.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    pub passed: usize,
    pub counted: usize,
    pub waived: usize,
}

pub fn tally(report: &Report, candidate: &str, line: Line, level: Level) -> Tally {
    let mut tally = Tally::default();
    for result in report.results.iter().filter(|r| r.candidate == candidate && r.containerd == line && r.level == level)
    {
        match result.outcome {
            Outcome::Pass => {
                tally.passed += 1;
                tally.counted += 1;
            }
            Outcome::Fail { .. } | Outcome::Flaky { .. } => tally.counted += 1,
            Outcome::Waived { .. } => {
                tally.waived += 1;
                tally.counted += 1;
            }
            Outcome::Skip { .. } => {}
        }
    }
    tally
}

fn part(level: Level, t: Tally) -> String {
    let waived = if t.waived > 0 { format!(" ({} waived)", t.waived) } else { String::new() };
    format!("{}/{} {level}{waived}", t.passed, t.counted)
}

/// One sentence per candidate and line that ran; `None` for a candidate that did not run here.
pub fn statement(report: &Report, index: usize) -> Option<String> {
    let candidate = report.candidates.get(index)?;
    if candidate.unavailable.is_some() {
        return None;
    }
    // MUST always (0/0 says no MUST case ran); SHOULD and MAY where any ran.
    let levels: Vec<String> = [Level::Must, Level::Should, Level::May]
        .into_iter()
        .map(|l| (l, tally(report, &candidate.name, candidate.containerd, l)))
        .filter(|(l, t)| *l == Level::Must || t.counted > 0)
        .map(|(l, t)| part(l, t))
        .collect();
    let binary = match &candidate.sha256 {
        Some(sha) => format!("sha256:{}", &sha[..sha.len().min(12)]),
        None => candidate.binary.clone().unwrap_or_default(),
    };
    let host = report.host.as_ref().map(|h| format!(" on {} {} ({})", h.os, h.kernel, h.arch)).unwrap_or_default();
    let by_path = if candidate.certified_by_name { "" } else { " [given by path: not certified by name]" };
    Some(format!(
        "{} {binary} passes {} under containerd {}{host}, shimcompat {} (git {}), catalogue {}{by_path}",
        candidate.name,
        levels.join(", "),
        candidate.containerd,
        report.tool_version,
        report.git_revision,
        report.catalogue
    ))
}

/// A shields.io endpoint badge (https://shields.io/badges/endpoint-badge) for one candidate and line.
pub fn badge(report: &Report, index: usize) -> Option<serde_json::Value> {
    let candidate = report.candidates.get(index)?;
    if candidate.unavailable.is_some() {
        return None;
    }
    let must = tally(report, &candidate.name, candidate.containerd, Level::Must);
    let should = tally(report, &candidate.name, candidate.containerd, Level::Should);
    let color = if must.passed + must.waived < must.counted {
        "red"
    } else if should.passed + should.waived < should.counted {
        "yellow"
    } else {
        "brightgreen"
    };
    Some(serde_json::json!({
        "schemaVersion": 1,
        "label": format!("containerd {}", candidate.containerd),
        "message": format!("{}/{} MUST, {}/{} SHOULD", must.passed, must.counted, should.passed, should.counted),
        "color": color,
    }))
}
