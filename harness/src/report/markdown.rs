//! Markdown from a report, for `$GITHUB_STEP_SUMMARY` and PR comments: one row per candidate and containerd line
//! (the verdict, counts, MUST failures), then each failure with its level and first line, then what was waived
//! and what teardown had to remove.
use super::{Outcome, Report};
use crate::cases::Level;

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

pub fn render(report: &Report) -> String {
    render_hosts(report, &[])
}

/// With the hosts of a merged report listed first (`(host N)` in a candidate's name is the N-th).
pub fn render_hosts(report: &Report, hosts: &[Option<crate::host::HostFingerprint>]) -> String {
    let mut out = String::from("## shimcompat results\n\n");
    let describe = |host: &Option<crate::host::HostFingerprint>| match host {
        Some(h) => format!(
            "{}, kernel {} ({}), cgroup {}, KVM {}",
            h.os,
            h.kernel,
            h.arch,
            h.cgroup,
            if h.kvm { "usable" } else { "absent" }
        ),
        None => "unknown host".to_string(),
    };
    if hosts.len() > 1 {
        for (n, host) in hosts.iter().enumerate() {
            out.push_str(&format!("- host {}: {}\n", n + 1, describe(host)));
        }
        out.push('\n');
    } else if let Some(host) = report.host.as_ref() {
        out.push_str(&format!("Host: {}\n\n", describe(&Some(host.clone()))));
    }
    if let Some(signal) = &report.interrupted {
        out.push_str(&format!("**Interrupted by {signal}**: partial results.\n\n"));
    }
    out.push_str("| candidate | containerd | verdict | passed | failed | MUST failed | skipped | waived | flaky |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|\n");
    for candidate in &report.candidates {
        let mine: Vec<_> = report
            .results
            .iter()
            .filter(|r| r.candidate == candidate.name && r.containerd == candidate.containerd)
            .collect();
        let count = |f: &dyn Fn(&Outcome) -> bool| mine.iter().filter(|r| f(&r.outcome)).count();
        let must_failed =
            mine.iter().filter(|r| r.level == Level::Must && matches!(r.outcome, Outcome::Fail { .. })).count();
        let verdict = match (&candidate.unavailable, &candidate.verdict) {
            (Some(reason), _) => format!("not run here: {reason}"),
            (None, Some(v)) if v.usable => "usable".to_string(),
            (None, Some(v)) => format!("**not usable**: {}", v.reason.as_deref().unwrap_or("")),
            (None, None) => String::new(),
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            cell(&candidate.name),
            candidate.containerd,
            cell(&verdict),
            count(&|o| matches!(o, Outcome::Pass)),
            count(&|o| matches!(o, Outcome::Fail { .. })),
            must_failed,
            count(&|o| matches!(o, Outcome::Skip { .. })),
            count(&|o| matches!(o, Outcome::Waived { .. })),
            count(&|o| matches!(o, Outcome::Flaky { .. })),
        ));
    }
    let statements: Vec<String> =
        (0..report.candidates.len()).filter_map(|i| super::certify::statement(report, i)).collect();
    if !statements.is_empty() {
        out.push_str("\n### Certification\n\n");
        for statement in statements {
            out.push_str(&format!("- {}\n", cell(&statement)));
        }
    }
    let failures: Vec<_> = report.results.iter().filter(|r| matches!(r.outcome, Outcome::Fail { .. })).collect();
    if !failures.is_empty() {
        out.push_str("\n### Failures\n\n| trial | level | first line |\n|---|---|---|\n");
        for trial in failures {
            if let Outcome::Fail { message } = &trial.outcome {
                out.push_str(&format!(
                    "| `{}` | {} | {} |\n",
                    trial.name,
                    trial.level,
                    cell(message.lines().next().unwrap_or(""))
                ));
            }
        }
    }
    let waived: Vec<_> = report.results.iter().filter(|r| matches!(r.outcome, Outcome::Waived { .. })).collect();
    if !waived.is_empty() {
        out.push_str("\n### Waived\n\n");
        for trial in waived {
            if let Outcome::Waived { reason, .. } = &trial.outcome {
                out.push_str(&format!("- `{}`: {}\n", trial.name, cell(reason)));
            }
        }
    }
    if !report.stragglers.is_empty() {
        out.push_str("\n### Left after teardown\n\n");
        for line in &report.stragglers {
            out.push_str(&format!("- {}\n", cell(line)));
        }
    }
    out.push_str(&format!(
        "\nshimcompat {}, {} trials in {:.1} s\n",
        report.tool_version,
        report.results.len(),
        report.duration.as_secs_f64()
    ));
    out
}
