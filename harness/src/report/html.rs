//! A self-contained HTML report (no script, no network): the certification statement per candidate, a matrix of
//! candidates x areas coloured by outcome, every case's details (failures with their message and evidence), and
//! case durations per candidate as an inline SVG chart.
use std::collections::BTreeMap;

use super::{certify, Outcome, Report, TrialResult};

fn esc(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn word(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Pass => "pass",
        Outcome::Fail { .. } => "fail",
        Outcome::Skip { .. } => "skip",
        Outcome::Waived { .. } => "waived",
        Outcome::Flaky { .. } => "flaky",
    }
}

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin:.5em 0}\
td,th{border:1px solid #bbb;padding:.25em .5em;font-size:90%}th{background:#eee}\
.pass{background:#c8f0c8}.fail{background:#f6b8b8}.skip{background:#e4e4e4}.waived{background:#f7e3a1}\
.flaky{background:#f3c98b}.mixed{background:linear-gradient(90deg,#f6b8b8 50%,#c8f0c8 50%)}\
pre{white-space:pre-wrap;background:#f6f6f6;padding:.5em;max-height:30em;overflow:auto}\
.statement{font-family:monospace;background:#f0f4ff;padding:.4em;margin:.2em 0}summary{cursor:pointer}";

pub fn render(report: &Report) -> String {
    let mut out = String::new();
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>shimcompat report</title>");
    out.push_str(&format!("<style>{STYLE}</style></head><body>\n<h1>shimcompat report</h1>\n"));
    if let Some(host) = &report.host {
        out.push_str(&format!(
            "<p id=\"host\">Host: {}, kernel {} ({}), cgroup {}, KVM {}, containerd {}</p>\n",
            esc(&host.os),
            esc(&host.kernel),
            esc(&host.arch),
            esc(&host.cgroup),
            if host.kvm { "usable" } else { "absent" },
            esc(host.containerd.as_deref().unwrap_or("not installed"))
        ));
    }
    if let Some(signal) = &report.interrupted {
        out.push_str(&format!("<p><strong>Interrupted by {}</strong>: partial results.</p>\n", esc(signal)));
    }
    out.push_str("<h2>Certification</h2>\n<div id=\"statements\">\n");
    for index in 0..report.candidates.len() {
        let candidate = &report.candidates[index];
        match certify::statement(report, index) {
            Some(statement) => out.push_str(&format!("<div class=\"statement\">{}</div>\n", esc(&statement))),
            None => out.push_str(&format!(
                "<div class=\"statement\">{}@{}: not run here: {}</div>\n",
                esc(&candidate.name),
                candidate.containerd,
                esc(candidate.unavailable.as_deref().unwrap_or(""))
            )),
        }
    }
    out.push_str("</div>\n");

    // Matrix: rows candidate@line, columns areas; a cell is the worst outcome in it, with counts.
    let mut areas: Vec<&str> = report.results.iter().map(|r| r.area.as_str()).collect();
    areas.sort_unstable();
    areas.dedup();
    out.push_str("<h2>Matrix</h2>\n<table id=\"matrix\"><tr><th>candidate</th>");
    for area in &areas {
        out.push_str(&format!("<th>{}</th>", esc(area)));
    }
    out.push_str("</tr>\n");
    for candidate in &report.candidates {
        let label = format!("{}@{}", candidate.name, candidate.containerd);
        out.push_str(&format!("<tr><th>{}</th>", esc(&label)));
        for area in &areas {
            let trials: Vec<&TrialResult> = report
                .results
                .iter()
                .filter(|r| r.candidate == candidate.name && r.containerd == candidate.containerd && r.area == *area)
                .collect();
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for trial in &trials {
                *counts.entry(word(&trial.outcome)).or_default() += 1;
            }
            let class = ["fail", "flaky", "waived", "pass", "skip"]
                .into_iter()
                .find(|w| counts.contains_key(w))
                .unwrap_or("skip");
            let class = if class == "fail" && counts.contains_key("pass") { "mixed" } else { class };
            let text: Vec<String> = counts.iter().map(|(w, n)| format!("{n} {w}")).collect();
            out.push_str(&format!("<td class=\"{class}\">{}</td>", esc(&text.join(", "))));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");

    out.push_str("<h2>Case durations</h2>\n");
    out.push_str(&durations_chart(report));

    out.push_str("<h2>Cases</h2>\n<div id=\"cases\">\n");
    for trial in &report.results {
        let outcome = word(&trial.outcome);
        let detail = match &trial.outcome {
            Outcome::Pass => String::new(),
            Outcome::Skip { reason } => format!("<p>skipped: {}</p>", esc(reason)),
            Outcome::Waived { reason, message } => format!("<p>waived: {}</p><pre>{}</pre>", esc(reason), esc(message)),
            Outcome::Fail { message } => format!("<pre>{}</pre>", esc(message)),
            Outcome::Flaky { message, attempts } => {
                format!("<p>flaky: passed on attempt {attempts}; first failure:</p><pre>{}</pre>", esc(message))
            }
        };
        let evidence = if trial.evidence.is_empty() {
            String::new()
        } else {
            format!("<p>evidence:</p><pre>{}</pre>", esc(&trial.evidence))
        };
        out.push_str(&format!(
            "<details class=\"case\"{}><summary class=\"{outcome}\">{} ({}) {outcome}, {} ms</summary><p>{}</p><p>reference: {}</p>{detail}{evidence}</details>\n",
            if outcome == "fail" { " open" } else { "" },
            esc(&trial.name),
            trial.level,
            trial.duration.as_millis(),
            esc(&trial.summary),
            esc(&trial.reference),
        ));
    }
    out.push_str("</div>\n");
    if !report.stragglers.is_empty() {
        out.push_str("<h2>Left after teardown</h2>\n<ul>");
        for line in &report.stragglers {
            out.push_str(&format!("<li>{}</li>", esc(line)));
        }
        out.push_str("</ul>\n");
    }
    out.push_str(&format!(
        "<p><small>shimcompat {} (git {}), catalogue {}, {} trials in {:.1} s</small></p>\n</body></html>\n",
        esc(&report.tool_version),
        esc(&report.git_revision),
        esc(&report.catalogue),
        report.results.len(),
        report.duration.as_secs_f64()
    ));
    out
}

/// Horizontal bars: for each candidate and line, its cases' durations sorted, longest first (at most 40 shown).
fn durations_chart(report: &Report) -> String {
    let mut out = String::new();
    let max = report.results.iter().map(|r| r.duration.as_millis()).max().unwrap_or(1).max(1) as f64;
    for candidate in &report.candidates {
        let mut trials: Vec<&TrialResult> = report
            .results
            .iter()
            .filter(|r| r.candidate == candidate.name && r.containerd == candidate.containerd)
            .collect();
        if trials.is_empty() {
            continue;
        }
        trials.sort_by_key(|r| std::cmp::Reverse(r.duration));
        trials.truncate(40);
        let height = trials.len() * 16 + 20;
        out.push_str(&format!(
            "<h3>{}@{}</h3>\n<svg class=\"chart\" width=\"900\" height=\"{height}\" xmlns=\"http://www.w3.org/2000/svg\">\n",
            esc(&candidate.name),
            candidate.containerd
        ));
        for (row, trial) in trials.iter().enumerate() {
            let y = row * 16 + 4;
            let width = (trial.duration.as_millis() as f64 / max * 500.0).max(1.0);
            let colour = match word(&trial.outcome) {
                "pass" => "#5cb85c",
                "fail" => "#d9534f",
                "flaky" => "#f0ad4e",
                "waived" => "#e6c84c",
                _ => "#999",
            };
            out.push_str(&format!(
                "<text x=\"0\" y=\"{}\" font-size=\"11\">{}</text><rect x=\"340\" y=\"{y}\" width=\"{width:.1}\" height=\"12\" fill=\"{colour}\"/><text x=\"{:.1}\" y=\"{}\" font-size=\"11\">{} ms</text>\n",
                y + 10,
                esc(&trial.case),
                345.0 + width,
                y + 10,
                trial.duration.as_millis()
            ));
        }
        out.push_str("</svg>\n");
    }
    out
}
