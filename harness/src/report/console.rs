//! The console reporter: libtest-like lines as trials finish, then the failures and the summary.
use std::io::Write;

use super::stream::{Reporter, RunEvent};
use super::{Outcome, Report, TrialResult};
use crate::cases::Level;
use crate::run::{stdout_is_terminal, ColorWhen, Format};
use crate::select::Planned;

pub struct Console {
    format: Format,
    printed: usize,
}

impl Console {
    /// Colour is decided here once: `always`, `never`, or on a terminal unless NO_COLOR is set.
    pub fn new(format: Format, color: ColorWhen) -> Console {
        let colour = match color {
            ColorWhen::Always => true,
            ColorWhen::Never => false,
            ColorWhen::Auto => stdout_is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        };
        COLOR.store(colour, std::sync::atomic::Ordering::Relaxed);
        Console { format, printed: 0 }
    }
}

impl Reporter for Console {
    fn event(&mut self, event: &RunEvent<'_>) -> Result<(), String> {
        match event {
            RunEvent::Started { plans, trials } => {
                print_verdicts(plans);
                crate::outln!("\nrunning {trials} tests");
            }
            RunEvent::TrialFinished { result, total } => print_result(result, self.format, &mut self.printed, *total),
            RunEvent::SlowTrial { name, seconds } => {
                crate::outln!("test {name} has been running for over {seconds} seconds")
            }
            RunEvent::Finished { report } => {
                if self.format == Format::Terse {
                    crate::outln!();
                }
                print_summary(report);
            }
        }
        Ok(())
    }
}

/// Whether console output is coloured, decided once per run.
static COLOR: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn paint(text: &str, code: &str) -> String {
    if COLOR.load(std::sync::atomic::Ordering::Relaxed) {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

fn print_verdicts(plans: &[Planned]) {
    for plan in plans {
        let Planned::Ready(target) = plan else { continue };
        let Some(verdict) = target.verdict() else { continue };
        let judged = if target.profile.judged_by_daemon() { "" } else { " [modelled from source]" };
        match (&verdict.usable, &verdict.reason) {
            (true, _) => crate::outln!(
                "{} under containerd {}{judged}: usable ({})",
                target.candidate.name,
                target.profile.line,
                verdict.reply.as_deref().unwrap_or("")
            ),
            (false, reason) => crate::outln!(
                "{} under containerd {}{judged}: NOT usable: {}",
                target.candidate.name,
                target.profile.line,
                reason.as_deref().unwrap_or("")
            ),
        }
    }
}

fn print_result(result: &TrialResult, format: Format, printed: &mut usize, total: usize) {
    let mut out = std::io::stdout().lock();
    let terminal = stdout_is_terminal();
    let millis = result.duration.as_secs_f64() * 1000.0;
    match format {
        Format::Pretty => {
            let verdict = match &result.outcome {
                Outcome::Pass => paint("ok", "32"),
                Outcome::Fail { .. } => paint("FAILED", "31"),
                Outcome::Skip { reason } => format!("{}: {reason}", paint("skipped", "33")),
                Outcome::Waived { reason, .. } => format!("{}: {reason}", paint("waived", "33")),
                Outcome::Flaky { attempts, .. } => {
                    paint(&format!("FLAKY (failed, then passed on attempt {attempts})"), "35")
                }
            };
            *printed += 1;
            // A progress counter on a terminal; plain libtest-like lines in a pipe.
            let progress = if terminal { format!(" [{}/{total}]", *printed) } else { String::new() };
            crate::console::check(writeln!(out, "test {} ... {verdict} ({millis:.0} ms){progress}", result.name));
        }
        Format::Terse => {
            let mark = match result.outcome {
                Outcome::Pass => '.',
                Outcome::Fail { .. } => 'F',
                Outcome::Skip { .. } => 's',
                Outcome::Waived { .. } => 'w',
                Outcome::Flaky { .. } => 'f',
            };
            crate::console::check(write!(out, "{mark}"));
            *printed += 1;
            if (*printed).is_multiple_of(88) {
                let _ = writeln!(out);
            }
        }
    }
    crate::console::check(out.flush());
}

fn print_summary(report: &Report) {
    let failures: Vec<&TrialResult> =
        report.results.iter().filter(|r| matches!(r.outcome, Outcome::Fail { .. })).collect();
    if !failures.is_empty() {
        crate::outln!("\nfailures:\n");
        let catalogue = crate::cases::catalogue();
        for failure in &failures {
            if let Outcome::Fail { message } = &failure.outcome {
                crate::outln!("---- {} ({}) ----", failure.name, failure.level);
                // What the case checks and where containerd relies on it, so a vendor can act on the failure.
                if let Some(case) = catalogue.iter().find(|c| c.id == failure.case) {
                    let reference = case
                        .per_line
                        .iter()
                        .find(|(line, ..)| *line == failure.containerd)
                        .map(|(.., r)| *r)
                        .unwrap_or(case.reference);
                    crate::outln!("checks: {}\nreference: {reference}", case.summary);
                }
                if failure.evidence.is_empty() {
                    crate::outln!("{message}\n");
                } else {
                    crate::outln!("{message}\n--- evidence ---\n{}\n", failure.evidence);
                }
            }
        }
        crate::outln!("failures:");
        for failure in &failures {
            crate::outln!("    {}", failure.name);
        }
    }
    let flaky: Vec<&TrialResult> =
        report.results.iter().filter(|r| matches!(r.outcome, Outcome::Flaky { .. })).collect();
    if !flaky.is_empty() {
        crate::outln!("\nflaky (failed, then passed on a retry; not counted as passes):");
        for trial in &flaky {
            if let Outcome::Flaky { message, attempts } = &trial.outcome {
                crate::outln!(
                    "    {} (attempt {attempts}; first failure: {})",
                    trial.name,
                    message.lines().next().unwrap_or("")
                );
            }
        }
    }
    if let Some(stopped) = &report.stopped_early {
        crate::outln!("\n{stopped}");
    }
    let waived: Vec<&TrialResult> =
        report.results.iter().filter(|r| matches!(r.outcome, Outcome::Waived { .. })).collect();
    if !waived.is_empty() {
        crate::outln!("\nwaived:");
        for trial in &waived {
            if let Outcome::Waived { reason, .. } = &trial.outcome {
                crate::outln!("    {} ({reason})", trial.name);
            }
        }
    }
    if !report.stale_waivers.is_empty() {
        crate::outln!("\nstale waivers (remove them from the candidate file):");
        for line in &report.stale_waivers {
            crate::outln!("    {line}");
        }
    }
    if !report.stragglers.is_empty() {
        crate::outln!("\nleft after teardown (a harness or shim hole; each line says what was done about it):");
        for line in &report.stragglers {
            crate::outln!("    {line}");
        }
    }
    for candidate in report.candidates.iter().filter(|c| !c.certified_by_name && c.unavailable.is_none()) {
        crate::outln!(
            "\nnote: {} was given by path ({}): these results do not certify a runtime name",
            candidate.name,
            candidate.binary.as_deref().unwrap_or("?")
        );
    }
    let statements: Vec<String> =
        (0..report.candidates.len()).filter_map(|i| crate::report::certify::statement(report, i)).collect();
    if !statements.is_empty() {
        crate::outln!();
        for statement in statements {
            crate::outln!("certification: {statement}");
        }
    }
    print_time(report);
    if let Some(signal) = &report.interrupted {
        crate::outln!(
            "\ninterrupted by {signal}: trials in flight are skipped as interrupted, trials not started are not listed"
        );
    }
    let counts = report.counts();
    let must_failed = failures.iter().filter(|r| r.level == Level::Must).count();
    let flaky = if counts.flaky > 0 { format!("{} flaky; ", counts.flaky) } else { String::new() };
    crate::outln!(
        "\ntest result: {}. {} passed; {} failed ({} MUST); {} skipped; {} waived; {flaky}{} filtered out; finished in {:.2}s\n",
        if report.success() { paint("ok", "32") } else { paint("FAILED", "31") },
        counts.passed,
        counts.failed,
        must_failed,
        counts.skipped,
        counts.waived,
        report.filtered_out,
        report.duration.as_secs_f64()
    );
}

/// Where the run's time went: trial time against wall time, how much of it was spent waiting on shims, and the
/// slowest trials with their share.
fn print_time(report: &Report) {
    let ran: Vec<&TrialResult> = report.results.iter().filter(|r| !matches!(r.outcome, Outcome::Skip { .. })).collect();
    if ran.len() < 2 {
        return;
    }
    let total: std::time::Duration = ran.iter().map(|r| r.duration).sum();
    let shim: std::time::Duration = ran.iter().map(|r| r.shim_time.min(r.duration)).sum();
    let share = |part: std::time::Duration, of: std::time::Duration| {
        (part.as_secs_f64() / of.as_secs_f64().max(1e-9) * 100.0).round()
    };
    crate::outln!(
        "\ntime: {} trials took {:.2}s together ({:.2}s wall); {:.2}s of it ({}%) waiting on shims (`start` and Task API calls, overlapping ones each counted), the rest the harness's and the runtimes'",
        ran.len(),
        total.as_secs_f64(),
        report.duration.as_secs_f64(),
        shim.as_secs_f64(),
        share(shim, total)
    );
    let mut slowest = ran.clone();
    slowest.sort_by_key(|r| std::cmp::Reverse(r.duration));
    let lines: Vec<String> = slowest
        .iter()
        .take(5)
        .map(|r| {
            format!(
                "{} {}ms (shims {}%)",
                r.name,
                r.duration.as_millis(),
                share(r.shim_time.min(r.duration), r.duration)
            )
        })
        .collect();
    crate::outln!("slowest: {}", lines.join(", "));
}
