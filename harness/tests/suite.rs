//! The harness's own test: the suite on the bundled mock (all pass), under every mock fault (exactly the expected
//! cases fail), on the Go runc v2 shim where installed (all pass, or a visible skip with the reason), and nothing of
//! any run left running afterwards.
//!
//! A custom harness (`harness = false`) so that a skip prints its reason in plain `cargo test` output.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use shimcompat::candidate::{Candidate, MOCK_RUNTIME};
use shimcompat::cases;
use shimcompat::profile::Line;
use shimcompat::report::{Outcome, Report};
use shimcompat::run::{self, RunConfig, TestArgs};
use shimcompat::select;
use shimcompat::select::Planned;

enum Verdict {
    Pass,
    Fail(String),
    Skip(String),
}

struct SelfTest {
    base: PathBuf,
    filters: Vec<String>,
    results: Vec<(String, Verdict, f64)>,
}

impl SelfTest {
    fn check(&mut self, name: &str, body: impl FnOnce(&Path) -> Verdict) {
        if !self.filters.is_empty() && !self.filters.iter().any(|f| name.contains(f.as_str())) {
            return;
        }
        let started = Instant::now();
        let verdict = body(&self.base);
        let seconds = started.elapsed().as_secs_f64();
        match &verdict {
            Verdict::Pass => println!("test {name} ... ok ({seconds:.1}s)"),
            Verdict::Fail(_) => println!("test {name} ... FAILED ({seconds:.1}s)"),
            Verdict::Skip(reason) => println!("test {name} ... skipped: {reason}"),
        }
        self.results.push((name.to_string(), verdict, seconds));
    }
}

fn mock_candidate() -> Candidate {
    let mut candidate = Candidate::mock();
    // The mock answers in milliseconds; shorter deadlines keep hanging faults cheap.
    candidate.timeout_scale = 0.3;
    // names::resolves_to_tested_binary: the bundled mock is what a run must reach.
    candidate.expect_binary = select::resolve_runtime(MOCK_RUNTIME).ok();
    candidate
}

/// Faults of the host rather than of the mock (`host:` prefix), for cases about what a runtime name reaches:
/// applied around one run, undone afterwards.
struct HostFault {
    candidate: Candidate,
    restore_path: Option<std::ffi::OsString>,
    shadow_dir: Option<PathBuf>,
}

impl HostFault {
    fn apply(fault: &str, base: &Path) -> Result<HostFault, String> {
        let mut candidate = mock_candidate();
        let mock = select::resolve_runtime(MOCK_RUNTIME).map_err(|e| e.to_string())?;
        match fault {
            // A second copy of the mock first on PATH: containerd now reaches it, and it shadows the bundled one.
            "host:shadow-on-path" => {
                let dir = base.join("shadow");
                std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
                std::fs::copy(&mock, dir.join(mock.file_name().unwrap_or_default())).map_err(|e| e.to_string())?;
                let old = std::env::var_os("PATH").unwrap_or_default();
                let mut paths = vec![dir.clone()];
                paths.extend(std::env::split_paths(&old));
                std::env::set_var("PATH", std::env::join_paths(paths).map_err(|e| e.to_string())?);
                Ok(HostFault { candidate, restore_path: Some(old), shadow_dir: Some(dir) })
            }
            // The candidate named by an absolute path: containerd runs it, Docker refuses it.
            "host:path-name" => {
                candidate.runtime = Some(mock.display().to_string());
                Ok(HostFault { candidate, restore_path: None, shadow_dir: None })
            }
            other => Err(format!("unknown host fault {other}")),
        }
    }
}

impl Drop for HostFault {
    fn drop(&mut self) {
        if let Some(path) = self.restore_path.take() {
            std::env::set_var("PATH", path);
        }
        if let Some(dir) = self.shadow_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Trials in flight in a mutation run (SHIMCOMPAT_MUTATION_THREADS overrides it): as in a clean run, except under
/// the faults that leave most trials waiting out a deadline doing nothing, which get 32. Measured in the debug
/// build on 2 cores: start-hangs 46 s at 8, 15 s at 32; wait-late-hangs 35 / 17 s; kill-noop 30 / 14 s;
/// shutdown-ignored 15 / 8 s; leak-process 14 / 7 s; wait-once 13 / 9 s. The other 75 took 293 s at 8 and 416 s at
/// 32 (CPU-bound, every /proc scan longer with more processes about), so they stay at 8. Only the speed depends on
/// this list.
const MUTATION_THREADS: u16 = 8;
const WAITING_FAULTS: &[&str] =
    &["start-hangs", "wait-late-hangs", "kill-noop", "shutdown-ignored", "leak-process", "wait-once"];

fn mutation_threads(fault: &str) -> u16 {
    if let Some(threads) = std::env::var("SHIMCOMPAT_MUTATION_THREADS").ok().and_then(|t| t.parse().ok()) {
        return threads;
    }
    if WAITING_FAULTS.contains(&fault) {
        32
    } else {
        MUTATION_THREADS
    }
}

fn run_quiet(plan: Planned, filters: Vec<String>, exact: bool, base: &Path) -> Result<Report, String> {
    run_quiet_with(plan, filters, exact, base, 8)
}

fn run_quiet_with(
    plan: Planned,
    filters: Vec<String>,
    exact: bool,
    base: &Path,
    threads: u16,
) -> Result<Report, String> {
    let args = TestArgs { filters, exact, test_threads: Some(threads), ..TestArgs::default() };
    let config = RunConfig { work_base: Some(base.to_path_buf()), keep: false, shim_debug: false };
    run::run(vec![plan], &args, &config, &mut []).map_err(|e| e.to_string())
}

fn failed(report: &Report) -> BTreeSet<String> {
    report.results.iter().filter(|r| matches!(r.outcome, Outcome::Fail { .. })).map(|r| r.case.clone()).collect()
}

fn not_passed(report: &Report) -> Vec<String> {
    report
        .results
        .iter()
        .filter(|r| r.outcome != Outcome::Pass)
        .map(|r| match &r.outcome {
            Outcome::Fail { message } => format!("{} FAILED: {}", r.name, first_lines(message, 12)),
            Outcome::Skip { reason } => format!("{} skipped: {reason}", r.name),
            Outcome::Waived { reason, .. } => format!("{} waived: {reason}", r.name),
            Outcome::Flaky { message, attempts } => {
                format!("{} flaky (attempt {attempts}): {}", r.name, first_lines(message, 6))
            }
            Outcome::Pass => unreachable!(),
        })
        .collect()
}

fn first_lines(text: &str, n: usize) -> String {
    text.lines().take(n).collect::<Vec<_>>().join("\n        ")
}

/// The lines real candidates are compared with their baselines under: the daemon line here and the newest
/// (modelled) one.
const REAL_LINES: [Line; 2] = [Line::V1_6, Line::V2x];

/// The line the mutation table was measured under: containerd 1.6, the daemon the mock is checked against here.
const MUTATION_LINE: Line = Line::V1_6;

fn mock_plan(faults: Option<&str>) -> Result<Planned, String> {
    mock_plan_under(faults, MUTATION_LINE)
}

/// Faults of behaviour only runc-family shims have (they act on `containerd.runc.v1.Options`): measured with the mock
/// given runc options, as containerd would send a runc-family shim.
const RUNC_FAMILY_FAULTS: &[&str] = &["runc-root-ignored"];

/// Cases only a runc-family candidate runs (the plain mock skips them as not applicable; the mock with runc
/// options runs them, see mock::clean_mock_with_runc_options).
const RUNC_FAMILY_CASES: &[&str] = &["options::runc_root_honoured"];

/// The mock as a runc-family shim: containerd sends it containerd.runc.v1.Options.
fn mock_with_runc_options() -> Candidate {
    let mut candidate = mock_candidate();
    candidate.runc_options = Some(Default::default());
    candidate
}

fn mock_plan_under(faults: Option<&str>, line: Line) -> Result<Planned, String> {
    let candidate = match faults {
        Some(fault) if RUNC_FAMILY_FAULTS.contains(&fault) => mock_with_runc_options(),
        _ => mock_candidate(),
    };
    match select::plan(candidate, faults, line) {
        Planned::Unavailable { reason, .. } => {
            Err(format!("the bundled mock is not built ({reason}); run `cargo test --workspace`"))
        }
        ready => Ok(ready),
    }
}

/// Cases a fault breaks besides those that name it in `breaks_with`: a fault is rarely that surgical (a wrong exit
/// status shows in every case that checks one). Asserted exactly, in both directions.
fn also_breaks() -> BTreeMap<&'static str, &'static [&'static str]> {
    shimcompat_selftest_table::ALSO_BREAKS.iter().copied().collect()
}

mod shimcompat_selftest_table {
    include!("suite/mutations.rs");
}

fn may_break() -> BTreeMap<&'static str, &'static [&'static str]> {
    shimcompat_selftest_table::MAY_BREAK.iter().copied().collect()
}

/// Merges one run's observation (fault -> cases broken besides the named ones) into the JSON at `path` and writes
/// the Rust table next to it.
fn accumulate_observed(
    path: &str,
    observed: &BTreeMap<String, BTreeSet<String>>,
    faults: &BTreeMap<&str, BTreeSet<String>>,
    all_ids: &BTreeSet<String>,
) {
    #[derive(serde::Serialize, serde::Deserialize, Default)]
    struct Accumulated {
        runs: u32,
        must: BTreeMap<String, BTreeSet<String>>,
        may: BTreeMap<String, BTreeSet<String>>,
    }
    let mut acc: Accumulated =
        std::fs::read_to_string(path).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
    for (fault, seen) in observed {
        let must = acc.must.get(fault).cloned();
        let (new_must, mut new_may) = match must {
            None if acc.runs == 0 => (seen.clone(), BTreeSet::new()),
            None => (BTreeSet::new(), seen.clone()),
            Some(must) => {
                let kept: BTreeSet<String> = must.intersection(seen).cloned().collect();
                let varied: BTreeSet<String> = must.symmetric_difference(seen).cloned().collect();
                (kept, varied)
            }
        };
        new_may.extend(acc.may.get(fault).cloned().unwrap_or_default());
        new_may.retain(|c| !new_must.contains(c));
        acc.must.insert(fault.clone(), new_must);
        acc.may.insert(fault.clone(), new_may);
    }
    acc.runs += 1;
    let _ = std::fs::write(path, serde_json::to_string_pretty(&acc).unwrap_or_default());
    let render = |name: &str, table: &BTreeMap<String, BTreeSet<String>>, compact: bool| {
        let mut text = format!("pub const {name}: &[(&str, &[&str])] = &[\n");
        for (fault, cases) in table.iter().filter(|(_, c)| !c.is_empty()) {
            let everything_else = compact
                && faults
                    .get(fault.as_str())
                    .is_some_and(|named| all_ids.difference(named).all(|id| cases.contains(id)));
            if everything_else {
                text.push_str(&format!("    (\"{fault}\", &[\"*\"]),\n"));
            } else {
                let items: Vec<String> = cases.iter().map(|c| format!("\"{c}\"")).collect();
                text.push_str(&format!("    (\"{fault}\", &[\n        {},\n    ]),\n", items.join(",\n        ")));
            }
        }
        text.push_str("];\n");
        text
    };
    let rust = format!(
        "// Generated by the self-test from {} runs (SHIMCOMPAT_MUTATIONS_OUT; see suite.rs), then reviewed.\n\
         // ALSO_BREAKS: cases a fault breaks besides those naming it in `breaks_with`, in every run (\"*\": every case).\n\
         // MAY_BREAK: cases it broke in some runs only (timing-dependent damage): allowed, not required.\n{}\n{}",
        acc.runs,
        render("ALSO_BREAKS", &acc.must, true),
        render("MAY_BREAK", &acc.may, false)
    );
    let _ = std::fs::write(format!("{path}.rs"), rust);
}

/// Processes of a run: anything whose cwd, executable or command line lies under the test's work base (shims run
/// in their bundle; container processes, `runc init` included, have their cwd in the run's rootfs).
fn leftovers(base: &Path) -> Vec<String> {
    let base = base.display().to_string();
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me && shimcompat::process::pid_alive(*pid))
        .filter_map(|pid| {
            let cwd =
                std::fs::read_link(format!("/proc/{pid}/cwd")).map(|p| p.display().to_string()).unwrap_or_default();
            let exe =
                std::fs::read_link(format!("/proc/{pid}/exe")).map(|p| p.display().to_string()).unwrap_or_default();
            let cmdline = shimcompat::process::cmdline(pid);
            (cwd.starts_with(&base) || exe.starts_with(&base) || cmdline.contains(&base))
                .then(|| format!("pid {pid}: {cmdline} (cwd {cwd})"))
        })
        .collect()
}

fn main() {
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    // Where `run` puts its work dir by default (a tmpfs where there is one), so the self-test measures what users get.
    let base = shimcompat::context::default_work_base().join(format!("shimcompat-selftest-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&base) {
        eprintln!("cannot create {}: {e}", base.display());
        std::process::exit(1);
    }
    let mut suite = SelfTest { base: base.clone(), filters, results: Vec::new() };
    let catalogue = cases::catalogue();

    for line in Line::ALL {
        suite.check(&format!("mock::clean_mock_passes_every_case_under_{}", line.label().replace('.', "_")), |base| {
            let plan = match mock_plan_under(None, line) {
                Ok(plan) => plan,
                Err(e) => return Verdict::Fail(e),
            };
            match run_quiet(plan, Vec::new(), false, base) {
                Err(e) => Verdict::Fail(e),
                Ok(report) => {
                    // A case this line does not rely on (its per-line level is MAY) may skip as not applicable.
                    let not_applicable = |r: &shimcompat::report::TrialResult| {
                        matches!(r.outcome, Outcome::Skip { .. })
                            && (RUNC_FAMILY_CASES.contains(&r.case.as_str())
                                || catalogue.iter().any(|c| c.id == r.case && c.level_for(line) == cases::Level::May && c.level != cases::Level::May))
                    };
                    let relevant = Report { results: report.results.iter().filter(|r| !not_applicable(r)).cloned().collect(), ..report.clone() };
                    let problems = not_passed(&relevant);
                    if problems.is_empty() && report.results.len() == catalogue.len() && report.stragglers.is_empty() {
                        Verdict::Pass
                    } else {
                        Verdict::Fail(format!(
                            "{} of {} cases did not pass on the clean mock under containerd {line}:\n    {}\nstragglers: {:?}",
                            problems.len(),
                            report.results.len(),
                            problems.join("\n    "),
                            report.stragglers
                        ))
                    }
                }
            }
        });
    }

    // The cases the plain mock skips as runc-family only pass on the mock given runc options (the `options` area; the
    // case for non-runc shims' options is not applicable there).
    // Issue 9, item 10: a shim that publishes by exec'ing the -publish-binary (as shims did before the ttrpc
    // publisher) gets its events to the harness. In this mode the mock never connects to the events server, so every
    // event the cases see came through `shimcompat --address A publish`.
    suite.check("mock::events_through_publish_binary", |base| {
        let mut candidate = mock_candidate();
        candidate.env.push("SHIMCOMPAT_MOCK_PUBLISH=binary".into());
        let plan = match select::plan(candidate, None, MUTATION_LINE) {
            Planned::Unavailable { reason, .. } => {
                return Verdict::Fail(format!("the bundled mock is not built ({reason})"))
            }
            ready => ready,
        };
        let filters = vec!["events::".into(), "lifecycle::".into(), "oom::".into()];
        let report = match run_quiet(plan, filters, false, base) {
            Ok(report) => report,
            Err(e) => return Verdict::Fail(e),
        };
        let problems: Vec<String> = not_passed(&report).into_iter().filter(|p| !p.contains(" skipped: ")).collect();
        let events_cases =
            report.results.iter().filter(|r| r.case.starts_with("events::") && r.outcome == Outcome::Pass).count();
        if problems.is_empty() && events_cases >= 5 {
            Verdict::Pass
        } else {
            Verdict::Fail(format!(
                "publishing through -publish-binary, not passed: {problems:?} ({events_cases} events cases passed)"
            ))
        }
    });

    suite.check("mock::clean_mock_with_runc_options", |base| {
        let plan = match select::plan(mock_with_runc_options(), None, MUTATION_LINE) {
            Planned::Unavailable { reason, .. } => {
                return Verdict::Fail(format!("the bundled mock is not built ({reason})"))
            }
            ready => ready,
        };
        let report = match run_quiet(plan, vec!["options::".into()], false, base) {
            Ok(report) => report,
            Err(e) => return Verdict::Fail(e),
        };
        let problems: Vec<String> = not_passed(&report)
            .into_iter()
            .filter(|p| !p.contains("::options::runtime_options_accepted skipped"))
            .collect();
        let ran_family_cases = RUNC_FAMILY_CASES
            .iter()
            .all(|id| report.results.iter().any(|r| r.case == *id && r.outcome == Outcome::Pass));
        if problems.is_empty() && ran_family_cases {
            Verdict::Pass
        } else {
            Verdict::Fail(format!(
                "with runc options, not passed: {problems:?} (runc-family cases passed: {ran_family_cases})"
            ))
        }
    });

    // Shims a containerd line cannot use at all (every case would fail at `start`): the line's verdict says so and
    // names the cause in that containerd's terms; the same shim is usable where that containerd would take it.
    let verdicts: [(&str, Line, Option<&str>); 6] = [
        ("start-reply-json-v3", Line::V1_6, Some("dials `start`'s whole output")),
        ("start-reply-json-v3", Line::V1_7, Some("unsupported shim version (3): not implemented")),
        ("start-reply-json-v3", Line::V2_0, None),
        ("start-stderr-noise", Line::V1_6, Some("stdout and stderr combined")),
        ("serve-v3-only", Line::V1_6, Some("does not serve containerd.task.v2.Task")),
        ("serve-v3-only", Line::V2x, None),
    ];
    for (fault, line, cause) in verdicts {
        suite.check(&format!("verdict::{fault}_under_{}", line.label().replace('.', "_")), |base| {
            let plan = match mock_plan_under(Some(fault), line) {
                Ok(plan) => plan,
                Err(e) => return Verdict::Fail(e),
            };
            let report = match run_quiet(plan, vec!["lifecycle::wait_exit_status_0".into()], false, base) {
                Ok(report) => report,
                Err(e) => return Verdict::Fail(e),
            };
            let Some(verdict) = report.candidates.first().and_then(|c| c.verdict.clone()) else {
                return Verdict::Fail("the report carries no verdict".into());
            };
            let passed = report.results.iter().all(|r| r.outcome == Outcome::Pass);
            match (cause, verdict.usable) {
                (None, true) if passed => Verdict::Pass,
                (None, _) => Verdict::Fail(format!(
                    "expected usable under containerd {line} and passing: {verdict:?}; {:?}",
                    not_passed(&report)
                )),
                (Some(cause), false) if verdict.reason.as_deref().unwrap_or("").contains(cause) && !passed => {
                    Verdict::Pass
                }
                (Some(cause), _) => Verdict::Fail(format!(
                    "expected NOT usable under containerd {line} with a reason naming {cause:?}; got {verdict:?}"
                )),
            }
        });
    }

    // Every fault named by some case: the full catalogue under it fails exactly the expected set.
    let mut faults: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for case in &catalogue {
        faults.entry(case.breaks_with).or_default().insert(case.id.to_string());
    }
    let also = also_breaks();
    let all_ids: BTreeSet<String> = catalogue.iter().map(|c| c.id.to_string()).collect();
    let observed = std::sync::Mutex::new(BTreeMap::<String, BTreeSet<String>>::new());
    let may = may_break();
    for (fault, named) in &faults {
        let mut expected = named.clone();
        for entry in also.get(fault).copied().unwrap_or_default() {
            if *entry == "*" {
                expected.extend(all_ids.iter().cloned());
            } else {
                expected.insert(entry.to_string());
            }
        }
        // Cases a fault breaks only sometimes (its damage depends on timing, e.g. whether a Wait arrives before or
        // after an exit): allowed to fail, not required to.
        let mut allowed = expected.clone();
        for entry in may.get(fault).copied().unwrap_or_default() {
            if *entry == "*" {
                allowed.extend(all_ids.iter().cloned());
            } else {
                allowed.insert(entry.to_string());
            }
        }
        suite.check(&format!("mutation::{fault}"), |base| {
            let host_fault = if fault.starts_with("host:") {
                match HostFault::apply(fault, base) {
                    Ok(applied) => Some(applied),
                    Err(e) => return Verdict::Fail(e),
                }
            } else {
                None
            };
            // A mismatch is retried once with the same fault: damage that depends on timing varies between runs, a
            // real change of behaviour does not. Both runs must agree with the table for a failure to be hidden.
            let mut attempts = Vec::new();
            for _ in 0..2 {
                let plan = match &host_fault {
                    Some(applied) => select::plan(applied.candidate.clone(), None, MUTATION_LINE),
                    None => match mock_plan(Some(fault)) {
                        Ok(plan) => plan,
                        Err(e) => return Verdict::Fail(e),
                    },
                };
                let report = match run_quiet_with(plan, Vec::new(), false, base, mutation_threads(fault)) {
                    Ok(report) => report,
                    Err(e) => return Verdict::Fail(e),
                };
                let got = failed(&report);
                if attempts.is_empty() {
                    observed.lock().unwrap().insert(fault.to_string(), got.difference(named).cloned().collect());
                }
                if expected.is_subset(&got) && got.is_subset(&allowed) {
                    if !attempts.is_empty() {
                        println!("    (mutation::{fault}: first run differed from the table, the retry matched)");
                    }
                    return Verdict::Pass;
                }
                let missing: Vec<String> = expected.difference(&got).cloned().collect();
                let extra: Vec<String> = got.difference(&allowed).cloned().collect();
                let messages: Vec<String> = report
                    .results
                    .iter()
                    .filter(|r| extra.contains(&r.case))
                    .filter_map(|r| match &r.outcome {
                        Outcome::Fail { message } => Some(format!("{}: {}", r.case, first_lines(message, 3))),
                        _ => None,
                    })
                    .collect();
                attempts.push(format!(
                    "under fault {fault}: expected to fail but passed: {missing:?}; failed unexpectedly: {extra:?}\n    {}",
                    messages.join("\n    ")
                ));
            }
            Verdict::Fail(attempts.join("\n  retry: "))
        });
    }

    // For maintainers: SHIMCOMPAT_MUTATIONS_OUT=FILE accumulates what several runs observed (FILE, JSON) and writes
    // FILE.rs: cases every run saw break go to ALSO_BREAKS, cases only some runs saw to MAY_BREAK. Review it, then
    // commit it as tests/suite/mutations.rs when cases are added.
    if let Ok(path) = std::env::var("SHIMCOMPAT_MUTATIONS_OUT") {
        accumulate_observed(&path, &observed.lock().unwrap(), &faults, &all_ids);
    }

    // Every real candidate installed here runs the whole catalogue and must reproduce its committed baseline
    // (outcomes, not timings): a change is either a regression or a baseline to regenerate (`shimcompat baseline`).
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let candidates = Candidate::load_dir(&root.join("shims/candidates")).unwrap_or_default();
    for (candidate, line) in candidates
        .into_iter()
        .filter(|c| c.runtime.as_deref() != Some(MOCK_RUNTIME))
        .flat_map(|c| REAL_LINES.iter().map(move |line| (c.clone(), *line)))
    {
        let name = candidate.name.clone();
        suite.check(&format!("real::{name}_matches_baseline_under_{}", line.label().replace('.', "_")), |base| {
            if !nix::unistd::geteuid().is_root() {
                return Verdict::Skip("needs root (real shims create namespaces and cgroups)".into());
            }
            let plan = select::plan(candidate, None, line);
            if let Planned::Unavailable { reason, .. } = &plan {
                return Verdict::Skip(reason.clone());
            }
            let baseline_path =
                root.join("results/baselines").join(shimcompat::report::baseline::file_name(&name, line));
            let baseline = match shimcompat::report::baseline::load(&baseline_path) {
                Ok(baseline) => baseline,
                Err(e) => return Verdict::Fail(format!("no committed baseline ({e}); run `shimcompat baseline`")),
            };
            let report = match run_quiet(plan, Vec::new(), false, base) {
                Ok(report) => report,
                Err(e) => return Verdict::Fail(e),
            };
            let outcomes = shimcompat::report::baseline::outcomes_of(&report, &name, line);
            let mut changes = shimcompat::report::baseline::compare(&baseline.outcomes, &outcomes);
            if changes.is_empty() && report.stragglers.is_empty() {
                return Verdict::Pass;
            }
            // Rerun the cases that changed once: a real shim's outcome that flips only under load is reported as
            // flaky on stdout, one that changes again is a failure.
            let changed: Vec<String> = changes.iter().map(|c| format!("{name}@{line}::{}", c.case)).collect();
            let retry_plan = select::plan(
                Candidate::load_dir(&root.join("shims/candidates"))
                    .unwrap_or_default()
                    .into_iter()
                    .find(|c| c.name == name)
                    .unwrap_or_else(|| Candidate::for_runtime("io.containerd.runc.v2")),
                None,
                line,
            );
            if let Ok(retry) = run_quiet(retry_plan, changed.clone(), true, base) {
                let retried = shimcompat::report::baseline::outcomes_of(&retry, &name, line);
                let wanted: Vec<_> =
                    baseline.outcomes.iter().filter(|o| changes.iter().any(|c| c.case == o.case)).cloned().collect();
                if shimcompat::report::baseline::compare(&wanted, &retried).is_empty() && report.stragglers.is_empty() {
                    println!(
                        "    (real::{name}: {} flaky on the first run, as the baseline on the retry)",
                        changed.join(", ")
                    );
                    return Verdict::Pass;
                }
                changes = shimcompat::report::baseline::compare(&wanted, &retried);
            }
            let lines: Vec<String> = changes
                .iter()
                .map(|change| {
                    let detail = report
                        .results
                        .iter()
                        .find(|r| r.case == change.case)
                        .map(|r| match &r.outcome {
                            Outcome::Fail { message } => format!("\n        {}", first_lines(message, 6)),
                            _ => String::new(),
                        })
                        .unwrap_or_default();
                    format!("{change}{detail}")
                })
                .collect();
            Verdict::Fail(format!(
                "outcomes differ from {}:\n    {}\nstragglers: {:?}",
                baseline_path.display(),
                lines.join("\n    "),
                report.stragglers
            ))
        });
    }

    suite.check("hygiene::nothing_left_running", |base| {
        let left = leftovers(base);
        if left.is_empty() {
            Verdict::Pass
        } else {
            Verdict::Fail(format!("left running after the runs:\n    {}", left.join("\n    ")))
        }
    });

    let _ = std::fs::remove_dir_all(&base);
    let failures: Vec<&(String, Verdict, f64)> =
        suite.results.iter().filter(|(_, v, _)| matches!(v, Verdict::Fail(_))).collect();
    if !failures.is_empty() {
        println!("\nfailures:");
        for (name, verdict, _) in &failures {
            if let Verdict::Fail(message) = verdict {
                println!("\n---- {name} ----\n    {message}");
            }
        }
    }
    let skipped = suite.results.iter().filter(|(_, v, _)| matches!(v, Verdict::Skip(_))).count();
    println!(
        "\ntest result: {}. {} passed; {} failed; {} skipped\n",
        if failures.is_empty() { "ok" } else { "FAILED" },
        suite.results.len() - failures.len() - skipped,
        failures.len(),
        skipped
    );
    std::process::exit(if failures.is_empty() { 0 } else { 101 });
}
