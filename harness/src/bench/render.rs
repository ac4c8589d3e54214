//! The bench report as console text or Markdown, and the comparison of two bench reports.
use std::fmt::Write as _;

use super::{BenchReport, CandidateBench, OpDist};

/// A duration in µs for people: `850µs`, `12.3ms`, `1.25s`.
pub fn human(us: u64) -> String {
    if us < 1_000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        format!("{:.1}ms", us as f64 / 1e3)
    } else {
        format!("{:.2}s", us as f64 / 1e6)
    }
}

/// Rows of text cells, rendered as aligned columns (console) or a pipe table (Markdown).
struct Table {
    head: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(head: &[&str]) -> Table {
        Table { head: head.iter().map(|h| h.to_string()).collect(), rows: Vec::new() }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn console(&self) -> String {
        let mut widths: Vec<usize> = self.head.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let parts: Vec<String> = cells
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let pad = widths[i].saturating_sub(c.chars().count());
                    // First column left-aligned, figures right-aligned.
                    if i == 0 {
                        format!("{c}{}", " ".repeat(pad))
                    } else {
                        format!("{}{c}", " ".repeat(pad))
                    }
                })
                .collect();
            format!("  {}\n", parts.join("  ").trim_end())
        };
        let mut out = line(&self.head);
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }

    fn markdown(&self) -> String {
        let mut out = format!("| {} |\n|{}\n", self.head.join(" | "), "---|".repeat(self.head.len()));
        for row in &self.rows {
            let _ = writeln!(out, "| {} |", row.join(" | "));
        }
        out
    }
}

fn ops_table(ops: &[OpDist]) -> Table {
    let mut table = Table::new(&["operation", "n", "p50", "p90", "p99", "max"]);
    for op in ops {
        let d = &op.dist;
        table.row(vec![
            op.op.clone(),
            d.samples.to_string(),
            human(d.p50_us),
            human(d.p90_us),
            human(d.p99_us),
            human(d.max_us),
        ]);
    }
    table
}

/// The sections of one candidate, as (title, table) and notes.
fn sections(c: &CandidateBench) -> (Vec<(String, Table)>, Vec<String>) {
    let mut tables = Vec::new();
    if !c.ops.is_empty() {
        tables.push(("latency, one shim per lifecycle".to_string(), ops_table(&c.ops)));
    }
    if !c.grouped_ops.is_empty() {
        tables.push(("latency, every container in one grouped shim".to_string(), ops_table(&c.grouped_ops)));
    }
    if !c.references.is_empty() {
        let mut table =
            Table::new(&["reference (same run, interleaved)", "n", "p50", "p90", "p99", "run_to_exit p50 / this"]);
        for r in &c.references {
            table.row(vec![
                r.what.clone(),
                r.dist.samples.to_string(),
                human(r.dist.p50_us),
                human(r.dist.p90_us),
                human(r.dist.p99_us),
                format!("{:.2}x", r.lifecycle_ratio),
            ]);
        }
        tables.push(("references".to_string(), table));
    }
    if !c.throughput.is_empty() {
        let mut table = Table::new(&["mode", "at once", "lifecycles", "seconds", "lifecycles/s"]);
        for t in &c.throughput {
            table.row(vec![
                t.mode.clone(),
                t.concurrency.to_string(),
                t.lifecycles.to_string(),
                format!("{:.2}", t.seconds),
                format!("{:.1}", t.per_second),
            ]);
        }
        tables.push(("throughput".to_string(), table));
    }
    if !c.density.is_empty() {
        let mut table = Table::new(&[
            "mode",
            "containers",
            "shims",
            "shim RSS",
            "shim PSS",
            "under shims (procs)",
            "under PSS",
            "PSS/container",
        ]);
        for d in &c.density {
            table.row(vec![
                d.mode.clone(),
                d.containers.to_string(),
                d.shim_processes.to_string(),
                kib(d.shim.rss_kib),
                kib(d.shim.pss_kib),
                d.under_processes.to_string(),
                kib(d.under.pss_kib),
                kib(d.pss_per_container_kib),
            ]);
        }
        tables.push(("density (RSS/PSS from smaps_rollup)".to_string(), table));
    }
    if let Some(soak) = &c.soak {
        let mut table = Table::new(&[
            "after",
            "shim fds",
            "shim threads",
            "shim RSS",
            "host mounts",
            "run cgroups",
            "shim sockets",
        ]);
        let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
        for s in &soak.samples {
            table.row(vec![
                s.after.to_string(),
                opt(s.shim_fds),
                opt(s.shim_threads),
                s.shim_rss_kib.map(kib).unwrap_or_else(|| "-".into()),
                s.host_mounts.to_string(),
                s.run_cgroups.to_string(),
                s.shim_sockets.to_string(),
            ]);
        }
        let g = &soak.growth_per_100;
        let f = |v: Option<f64>| v.map(|v| format!("{v:+.1}")).unwrap_or_else(|| "-".into());
        table.row(vec![
            "growth/100".into(),
            f(g.shim_fds),
            f(g.shim_threads),
            g.shim_rss_kib.map(|v| format!("{v:+.0}KiB")).unwrap_or_else(|| "-".into()),
            format!("{:+.1}", g.host_mounts),
            format!("{:+.1}", g.run_cgroups),
            format!("{:+.1}", g.shim_sockets),
        ]);
        tables.push((format!("soak, {} lifecycles {} in {:.1}s", soak.lifecycles, soak.mode, soak.seconds), table));
    }
    let mut notes = Vec::new();
    notes.extend(c.skipped.iter().map(|s| format!("not measured: {s}")));
    notes.extend(c.errors.iter().map(|e| format!("ERROR: {e}")));
    notes.extend(c.leftovers.iter().map(|l| format!("LEFT BEHIND: {l}")));
    (tables, notes)
}

fn kib(value: u64) -> String {
    if value >= 10 * 1024 {
        format!("{:.1}MiB", value as f64 / 1024.0)
    } else {
        format!("{value}KiB")
    }
}

fn title(c: &CandidateBench) -> String {
    format!(
        "{}@{} ({}{})",
        c.name,
        c.containerd,
        c.binary,
        c.version.as_deref().map(|v| format!(", {}", v.lines().next().unwrap_or(""))).unwrap_or_default()
    )
}

pub fn console(report: &BenchReport) -> String {
    let mut out = String::new();
    for c in &report.candidates {
        let _ = writeln!(out, "\n{}", title(c));
        let (tables, notes) = sections(c);
        for (name, table) in tables {
            let _ = writeln!(out, " {name}:");
            out.push_str(&table.console());
        }
        for note in notes {
            let _ = writeln!(out, " {note}");
        }
    }
    let _ =
        writeln!(out, "\nhost: {} {} ({}, {} cores)", report.host.os, report.host.kernel, report.host.cgroup, cores());
    out
}

fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

pub fn markdown(report: &BenchReport) -> String {
    let mut out = format!(
        "# shimcompat bench\n\nshimcompat {} ({}), host {} {} ({}){}\n",
        report.tool_version,
        report.git_revision,
        report.host.os,
        report.host.kernel,
        report.host.cgroup,
        if report.host.kvm { ", KVM" } else { "" }
    );
    for c in &report.candidates {
        let _ = writeln!(out, "\n## {}\n", title(c));
        let (tables, notes) = sections(c);
        for (name, table) in tables {
            let _ = writeln!(out, "**{name}**\n");
            out.push_str(&table.markdown());
            out.push('\n');
        }
        for note in notes {
            let _ = writeln!(out, "- {note}");
        }
    }
    out.push_str("\nOperations:\n\n");
    for (op, what) in super::lifecycle::op::LEGEND {
        let _ = writeln!(out, "- `{op}`: {what}");
    }
    out
}

fn esc(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

impl Table {
    fn html(&self) -> String {
        let mut out = String::from("<table><tr>");
        for h in &self.head {
            let _ = write!(out, "<th>{}</th>", esc(h));
        }
        out.push_str("</tr>");
        for row in &self.rows {
            out.push_str("<tr>");
            for cell in row {
                let _ = write!(out, "<td>{}</td>", esc(cell));
            }
            out.push_str("</tr>");
        }
        out.push_str("</table>\n");
        out
    }
}

/// Latency per operation as an SVG on a log scale: a bar to p50, a lighter one on to p90, a tick at p99, a dot at
/// the maximum.
fn latency_svg(ops: &[OpDist], title: &str) -> String {
    let (label_w, plot_w, row_h, top) = (130.0, 560.0, 22.0, 28.0);
    let height = top + row_h * ops.len() as f64 + 30.0;
    let min = 10f64.log10();
    let max_us = ops.iter().map(|o| o.dist.max_us).max().unwrap_or(1).max(1000) as f64;
    let max = (max_us.log10()).ceil();
    let x = |us: u64| label_w + ((us.max(10) as f64).log10() - min) / (max - min) * plot_w;
    let mut svg = format!(
        "<svg class=\"latency\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" role=\"img\"><title>{}</title>",
        label_w + plot_w + 50.0,
        esc(title)
    );
    let _ = write!(svg, "<text x=\"0\" y=\"16\" class=\"t\">{}</text>", esc(title));
    let mut decade = 10u64;
    while (decade as f64).log10() <= max {
        let at = x(decade);
        let _ = write!(
            svg,
            "<line x1=\"{at:.1}\" x2=\"{at:.1}\" y1=\"{top}\" y2=\"{:.1}\" class=\"grid\"/><text x=\"{at:.1}\" y=\"{:.1}\" class=\"axis\">{}</text>",
            height - 24.0,
            height - 8.0,
            human(decade)
        );
        decade *= 10;
    }
    for (i, op) in ops.iter().enumerate() {
        let y = top + row_h * i as f64;
        let d = &op.dist;
        let _ = write!(
            svg,
            "<g class=\"op\" data-op=\"{}\"><text x=\"{:.1}\" y=\"{:.1}\" class=\"label\">{}</text>\
             <rect class=\"p90\" x=\"{label_w}\" y=\"{:.1}\" width=\"{:.1}\" height=\"12\"/>\
             <rect class=\"p50\" x=\"{label_w}\" y=\"{:.1}\" width=\"{:.1}\" height=\"12\"/>\
             <line class=\"p99\" x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\"/>\
             <circle class=\"max\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\"/>\
             <title>{}: p50 {} p90 {} p99 {} max {} (n={})</title></g>",
            esc(&op.op),
            label_w - 6.0,
            y + 11.0,
            esc(&op.op),
            y + 2.0,
            (x(d.p90_us) - label_w).max(1.0),
            y + 2.0,
            (x(d.p50_us) - label_w).max(1.0),
            x(d.p99_us),
            x(d.p99_us),
            y,
            y + 16.0,
            x(d.max_us),
            y + 8.0,
            esc(&op.op),
            human(d.p50_us),
            human(d.p90_us),
            human(d.p99_us),
            human(d.max_us),
            d.samples
        );
    }
    svg.push_str("</svg>");
    svg
}

/// A self-contained page (no network): per candidate the latency charts, then every table.
pub fn html(report: &BenchReport) -> String {
    let mut body = String::new();
    for c in &report.candidates {
        let _ = write!(body, "<section class=\"candidate\"><h2>{}</h2>", esc(&title(c)));
        if !c.ops.is_empty() {
            body.push_str(&latency_svg(&c.ops, "latency, one shim per lifecycle"));
        }
        if !c.grouped_ops.is_empty() {
            body.push_str(&latency_svg(&c.grouped_ops, "latency, one grouped shim"));
        }
        let (tables, notes) = sections(c);
        for (name, table) in tables {
            let _ = write!(body, "<h3>{}</h3>{}", esc(&name), table.html());
        }
        if !notes.is_empty() {
            body.push_str("<ul class=\"notes\">");
            for note in notes {
                let _ = write!(body, "<li>{}</li>", esc(&note));
            }
            body.push_str("</ul>");
        }
        body.push_str("</section>\n");
    }
    let mut legend = String::from("<ul class=\"legend\">");
    for (op, what) in super::lifecycle::op::LEGEND {
        let _ = write!(legend, "<li><code>{}</code>: {}</li>", esc(op), esc(what));
    }
    legend.push_str("</ul>");
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>shimcompat bench</title><style>\
         body{{font:14px system-ui,sans-serif;margin:2em;color:#222}} table{{border-collapse:collapse;margin:.5em 0 1em}}\
         td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}} td:first-child,th:first-child{{text-align:left}}\
         svg .p50{{fill:#2b6cb0}} svg .p90{{fill:#90cdf4}} svg .p99{{stroke:#c53030;stroke-width:2}} svg .max{{fill:#c53030}}\
         svg .grid{{stroke:#e2e8f0}} svg .axis{{font-size:11px;text-anchor:middle;fill:#555}} svg .label{{font-size:12px;text-anchor:end}}\
         svg .t{{font-weight:600}} .notes li{{color:#744210}}</style></head><body>\
         <h1>shimcompat bench</h1><p id=\"host\">shimcompat {} ({}); host {} {} ({}{})</p>\
         <p>Bars: p50 dark, p90 light, p99 red tick, maximum red dot; log scale.</p>{body}<h2>Operations</h2>{legend}</body></html>\n",
        esc(&report.tool_version),
        esc(&report.git_revision),
        esc(&report.host.os),
        esc(&report.host.kernel),
        esc(&report.host.cgroup),
        if report.host.kvm { ", KVM" } else { "" }
    )
}

/// One figure that moved between two bench reports.
#[derive(Debug, Clone)]
pub struct Change {
    pub label: String,
    pub what: String,
    pub before: f64,
    pub after: f64,
    pub regression: bool,
}

/// Compares `after` with `before`: a latency percentile (p50, p90, p99) that grew, a throughput that fell, or a
/// per-container PSS that grew by more than `threshold` (a fraction: 0.25 is 25 %) is a regression. Latencies that
/// stay under `floor_us` either side are not compared (microsecond noise).
pub fn compare(before: &BenchReport, after: &BenchReport, threshold: f64, floor_us: u64) -> (Vec<Change>, Vec<String>) {
    let mut changes = Vec::new();
    let mut notes = Vec::new();
    for now in &after.candidates {
        let label = format!("{}@{}", now.name, now.containerd);
        let Some(base) = before.candidates.iter().find(|b| b.name == now.name && b.containerd == now.containerd) else {
            notes.push(format!("{label}: not in the baseline"));
            continue;
        };
        for (mode, then_ops, now_ops) in [("", &base.ops, &now.ops), ("grouped ", &base.grouped_ops, &now.grouped_ops)]
        {
            for op in now_ops {
                let Some(old) = then_ops.iter().find(|o| o.op == op.op) else { continue };
                for (p, a, b) in [
                    ("p50", old.dist.p50_us, op.dist.p50_us),
                    ("p90", old.dist.p90_us, op.dist.p90_us),
                    ("p99", old.dist.p99_us, op.dist.p99_us),
                ] {
                    if a.max(b) < floor_us {
                        continue;
                    }
                    let grew = b as f64 > a as f64 * (1.0 + threshold);
                    let fell = (b as f64) < a as f64 * (1.0 - threshold);
                    if grew || fell {
                        changes.push(Change {
                            label: label.clone(),
                            what: format!("{mode}{} {p} (µs)", op.op),
                            before: a as f64,
                            after: b as f64,
                            regression: grew,
                        });
                    }
                }
            }
        }
        for t in &now.throughput {
            let Some(old) = base.throughput.iter().find(|o| o.mode == t.mode && o.concurrency == t.concurrency) else {
                continue;
            };
            let fell = t.per_second < old.per_second * (1.0 - threshold);
            let rose = t.per_second > old.per_second * (1.0 + threshold);
            if fell || rose {
                changes.push(Change {
                    label: label.clone(),
                    what: format!("throughput {} x{} (lifecycles/s)", t.mode, t.concurrency),
                    before: old.per_second,
                    after: t.per_second,
                    regression: fell,
                });
            }
        }
        for d in &now.density {
            let Some(old) = base.density.iter().find(|o| o.mode == d.mode && o.containers == d.containers) else {
                continue;
            };
            let (a, b) = (old.pss_per_container_kib as f64, d.pss_per_container_kib as f64);
            if b > a * (1.0 + threshold) || b < a * (1.0 - threshold) {
                changes.push(Change {
                    label: label.clone(),
                    what: format!("PSS per container, {} x{} (KiB)", d.mode, d.containers),
                    before: a,
                    after: b,
                    regression: b > a,
                });
            }
        }
        if let (Some(old), Some(new)) = (&base.soak, &now.soak) {
            // A leak is growth where the baseline had none: one more fd or thread per 100 lifecycles.
            for (what, a, b) in [
                ("soak shim fds growth/100", old.growth_per_100.shim_fds, new.growth_per_100.shim_fds),
                ("soak shim threads growth/100", old.growth_per_100.shim_threads, new.growth_per_100.shim_threads),
                (
                    "soak host mounts growth/100",
                    Some(old.growth_per_100.host_mounts),
                    Some(new.growth_per_100.host_mounts),
                ),
            ] {
                if let (Some(a), Some(b)) = (a, b) {
                    if b >= a + 1.0 {
                        changes.push(Change {
                            label: label.clone(),
                            what: what.into(),
                            before: a,
                            after: b,
                            regression: true,
                        });
                    }
                }
            }
        }
        if !now.errors.is_empty() && base.errors.is_empty() {
            notes.push(format!("{label}: REGRESSION: {} failed lifecycle(s), the baseline had none", now.errors.len()));
        }
    }
    (changes, notes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::stats::Dist;

    fn report(p50: u64, per_second: f64) -> BenchReport {
        let dist = Dist { samples: 10, p50_us: p50, p90_us: p50, p99_us: p50, max_us: p50, mean_us: p50 };
        BenchReport {
            schema: crate::bench::SCHEMA.into(),
            tool_version: "0".into(),
            git_revision: "x".into(),
            host: crate::host::fingerprint(),
            command: Vec::new(),
            started_at: 0,
            finished_at: 0,
            candidates: vec![CandidateBench {
                name: "c".into(),
                containerd: crate::profile::Line::V1_6,
                binary: "/bin/c".into(),
                version: None,
                ops: vec![OpDist { op: "create".into(), dist }],
                grouped_ops: Vec::new(),
                references: Vec::new(),
                throughput: vec![crate::bench::Throughput {
                    mode: "per-shim".into(),
                    concurrency: 1,
                    lifecycles: 10,
                    seconds: 1.0,
                    per_second,
                }],
                density: Vec::new(),
                soak: None,
                skipped: Vec::new(),
                errors: Vec::new(),
                leftovers: Vec::new(),
            }],
        }
    }

    #[test]
    fn slower_is_a_regression_faster_is_not() {
        let (changes, _) = compare(&report(10_000, 10.0), &report(20_000, 5.0), 0.25, 1_000);
        assert_eq!(changes.len(), 4, "{changes:?}");
        assert!(changes.iter().all(|c| c.regression));
        let (changes, _) = compare(&report(20_000, 5.0), &report(10_000, 10.0), 0.25, 1_000);
        assert!(!changes.is_empty() && changes.iter().all(|c| !c.regression), "{changes:?}");
    }

    #[test]
    fn within_threshold_or_under_floor_is_no_change() {
        let (changes, _) = compare(&report(10_000, 10.0), &report(11_000, 9.0), 0.25, 1_000);
        assert!(changes.is_empty(), "{changes:?}");
        let (changes, _) = compare(&report(100, 10.0), &report(900, 10.0), 0.25, 1_000);
        assert!(changes.is_empty(), "{changes:?}");
    }

    #[test]
    fn tables_render() {
        let text = console(&report(1_500, 10.0));
        assert!(text.contains("create") && text.contains("1.5ms"), "{text}");
        let md = markdown(&report(1_500, 10.0));
        assert!(md.contains("| create | 10 | 1.5ms |"), "{md}");
        let page = html(&report(1_500, 10.0));
        assert!(page.contains("<g class=\"op\" data-op=\"create\">") && page.contains("<td>1.5ms</td>"), "{page}");
    }
}
