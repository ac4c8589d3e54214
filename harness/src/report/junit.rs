//! JUnit XML from a report (quick-junit): one testsuite per candidate and containerd line, one testcase per case.
//! A failure carries the first line of the message as `message` and the whole message (with evidence) as its text;
//! skipped and waived trials are `<skipped>` with their reason (a waiver is not a pass). Level, the candidate's
//! runtime and binary, the containerd profile and the verdict are properties.
use quick_junit::{NonSuccessKind, Property, TestCase, TestCaseStatus, TestSuite};

use super::{Outcome, Report};

pub fn render(report: &Report) -> Result<String, String> {
    let mut junit = quick_junit::Report::new("shimcompat");
    junit.set_time(report.duration);
    for candidate in &report.candidates {
        let name = format!("{}@{}", candidate.name, candidate.containerd);
        let mut suite = TestSuite::new(name.clone());
        suite.add_property(Property::new("containerd", candidate.containerd.to_string()));
        suite.add_property(Property::new("profile", candidate.profile.clone()));
        if let Some(runtime) = &candidate.runtime {
            suite.add_property(Property::new("runtime", runtime.clone()));
        }
        if let Some(binary) = &candidate.binary {
            suite.add_property(Property::new("binary", binary.clone()));
        }
        suite.add_property(Property::new("certified_by_name", candidate.certified_by_name.to_string()));
        if let Some(reason) = &candidate.unavailable {
            suite.add_property(Property::new("unavailable", reason.clone()));
        }
        if let Some(verdict) = &candidate.verdict {
            let text = match (&verdict.usable, &verdict.reason) {
                (true, _) => "usable".to_string(),
                (false, Some(reason)) => format!("not usable: {reason}"),
                (false, None) => "not usable".to_string(),
            };
            suite.add_property(Property::new("verdict", text));
        }
        let mut time = std::time::Duration::ZERO;
        for trial in
            report.results.iter().filter(|r| r.candidate == candidate.name && r.containerd == candidate.containerd)
        {
            let status = match &trial.outcome {
                Outcome::Pass => TestCaseStatus::success(),
                Outcome::Fail { message } => {
                    let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    status.set_message(message.lines().next().unwrap_or("failed").to_string());
                    status.set_type(trial.level.to_string());
                    status.set_description(with_evidence(message, &trial.evidence));
                    status
                }
                Outcome::Skip { reason } => {
                    let mut status = TestCaseStatus::skipped();
                    status.set_message(reason.clone());
                    status
                }
                Outcome::Flaky { .. } => TestCaseStatus::success(),
                Outcome::Waived { reason, message } => {
                    let mut status = TestCaseStatus::skipped();
                    status.set_message(format!("waived: {reason}"));
                    status.set_type("waived");
                    status.set_description(with_evidence(message, &trial.evidence));
                    status
                }
            };
            let status = match (&trial.outcome, status) {
                // Passed on a retry: a success with its failed run recorded (JUnit's flakyFailure).
                (Outcome::Flaky { message, .. }, _) => {
                    let mut rerun = quick_junit::TestRerun::new(NonSuccessKind::Failure);
                    rerun.set_message(message.lines().next().unwrap_or("failed").to_string());
                    rerun.set_description(with_evidence(message, &trial.evidence));
                    TestCaseStatus::Success { flaky_runs: vec![rerun] }
                }
                (_, status) => status,
            };
            let mut case = TestCase::new(trial.case.clone(), status);
            case.set_classname(format!("{name}::{}", trial.area));
            case.set_time(trial.duration);
            case.add_property(Property::new("level", trial.level.to_string()));
            time += trial.duration;
            suite.add_test_case(case);
        }
        suite.set_time(time);
        junit.add_test_suite(suite);
    }
    junit.to_string().map_err(|e| e.to_string())
}

fn with_evidence(message: &str, evidence: &str) -> String {
    if evidence.is_empty() {
        message.to_string()
    } else {
        format!("{message}\n--- evidence ---\n{evidence}")
    }
}
