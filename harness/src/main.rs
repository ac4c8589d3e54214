//! The `shimcompat` command: parses and dispatches only.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shimcompat::candidate::Candidate;
use shimcompat::profile::Line;
use shimcompat::run::TestArgs;
use shimcompat::select;
use shimcompat::select::Planned;

#[derive(Parser)]
#[command(name = "shimcompat", version, about = "Conformance suite for containerd shims, driven at the shim boundary")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the `run` variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the conformance suite (default candidate: the bundled mock shim)
    Run(RunArgs),
    /// List the catalogue: each case with its level, features, reference and the mock fault that breaks it
    List {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Run every candidate under every containerd line and write results/baselines/<candidate>@<line>.json and
    /// results/MATRIX.md
    Baseline {
        /// containerd lines (default: all)
        #[arg(long, value_name = "LINE", default_value = "all")]
        containerd: String,
        /// Candidate files
        #[arg(long, value_name = "DIR", default_value = "shims/candidates")]
        candidates: PathBuf,
        /// Results directory (baselines/, findings.toml, MATRIX.md)
        #[arg(long, value_name = "DIR", default_value = "results")]
        results: PathBuf,
        /// Only regenerate MATRIX.md from the committed baselines, without running anything
        #[arg(long)]
        matrix_only: bool,
        #[command(flatten)]
        test: TestArgs,
    },
    /// Compare a run's JSON report (from `run --report-json`) with committed baselines, by outcome; or two bench
    /// reports (from `bench --json`), by percentile, throughput and memory. Exit 1 on a regression
    Compare {
        /// A baseline file or a directory of them (for a bench report: the earlier bench report)
        baseline: PathBuf,
        /// A report written by `shimcompat run --report-json` or `shimcompat bench --json`
        report: PathBuf,
        /// Bench reports only: how much a figure may move before it counts, in percent
        #[arg(long, value_name = "PCT", default_value_t = 25.0)]
        threshold: f64,
        /// Bench reports only: latencies below this many microseconds on both sides are not compared
        #[arg(long, value_name = "US", default_value_t = 1000)]
        floor_us: u64,
    },
    /// Measure a shim at the shim boundary: per-operation latency (p50/p90/p99/max), throughput at rising
    /// concurrency, memory per container held, and a soak for leaks; side by side with the bare OCI runtime and a
    /// private containerd's `ctr run --rm` where they are installed. Numbers are reported, not judged: exit 1 only
    /// when a lifecycle failed or left something behind
    Bench(BenchArgs),
    /// Render one or more JSON reports (from `run --report-json`) as Markdown, JUnit or merged JSON; reports from
    /// different hosts keep each host apart
    Report {
        /// Reports written by `shimcompat run --report-json`
        #[arg(required = true)]
        reports: Vec<PathBuf>,
        /// Output format
        #[arg(long, value_enum, default_value = "md")]
        format: ReportFormat,
        /// Write here instead of stdout
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Explain how a runtime name becomes a shim binary: Docker's verdict per version, containerd's lookup on this host
    Resolve(shimcompat::resolve::ResolveArgs),
    /// Remove what earlier runs that were killed (SIGKILL, OOM) left behind: their shims, containers, cgroups,
    /// sockets and work dirs, found by their marks. Runs that are still running are not touched. `run` does this
    /// too before it starts
    Clean,
    /// Print the host fingerprint and, per candidate, whether it is installed and how it bootstraps
    Doctor {
        /// Candidate files to examine (default: shims/candidates if present, else the mock)
        #[arg(long, value_name = "DIR", conflicts_with_all = ["candidate", "runtime"])]
        candidates: Option<PathBuf>,
        /// Examine this candidate file only (repeatable)
        #[arg(long, value_name = "FILE", conflicts_with = "runtime")]
        candidate: Vec<PathBuf>,
        /// Examine the shim containerd would run for this runtime name (as `run --runtime NAME` would)
        #[arg(long, value_name = "NAME")]
        runtime: Option<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

const RUN_EXIT_CODES: &str = "Exit codes:
  0    every selected trial ran; no failure at the --fail-on level; nothing left after teardown
  1    a case failed at the --fail-on level, or something was left after teardown
  2    bad input (a flag, a candidate file, a runtime that cannot run here, an unwritable output path)
  3    nothing ran (no trial selected, or every one skipped), or a --candidate file's shim cannot run here
       (--allow-empty: exit 0 instead)
  130  interrupted by SIGINT, SIGTERM or SIGHUP (summary and reports of what ran are still written)
  141  stdout was closed (e.g. `run | head`); reports are still written";

#[derive(Clone, Copy, clap::ValueEnum)]
enum ReportFormat {
    Md,
    Junit,
    Json,
    Html,
}

#[derive(clap::Args)]
#[command(after_help = RUN_EXIT_CODES)]
struct RunArgs {
    /// A runtime name, resolved as containerd does (e.g. io.containerd.runc.v2). Names only: no paths
    #[arg(long, value_name = "NAME", conflicts_with_all = ["runtime_binary", "candidates", "candidate"])]
    runtime: Option<String>,
    /// A shim binary by path, for shim development; the run is marked as not certified by name
    #[arg(long, value_name = "PATH", conflicts_with_all = ["candidates", "candidate"])]
    runtime_binary: Option<PathBuf>,
    /// Run every candidate file (*.toml) in this directory
    #[arg(long, value_name = "DIR", conflicts_with = "candidate")]
    candidates: Option<PathBuf>,
    /// Run this candidate file (repeatable)
    #[arg(long, value_name = "FILE")]
    candidate: Vec<PathBuf>,
    /// Inject these mock faults into every bundle (for testing the harness against the bundled mock)
    #[arg(long, value_name = "LIST")]
    faults: Option<String>,
    /// Base directory for the run's bundles, logs and (when the path is short enough for a socket address) sockets;
    /// default: $TMPDIR if set, else a tmpfs with room ($XDG_RUNTIME_DIR, /run as root, /dev/shm), else /tmp.
    /// Sockets go under $TMPDIR or /tmp when DIR is too long for them
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Keep the work directory (bundles, shim logs) after the run
    #[arg(long)]
    keep: bool,
    /// Write the results as JSON (schema shimcompat.report/v2)
    #[arg(long, value_name = "FILE")]
    report_json: Option<PathBuf>,
    /// Write the results as JUnit XML (one testsuite per candidate and containerd line)
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Write a Markdown summary (e.g. to $GITHUB_STEP_SUMMARY; appended to, as GitHub expects)
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
    /// Write a self-contained HTML report (matrix, per-case details with evidence, durations chart)
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Write a shields.io endpoint badge per candidate and line here (<candidate>@<line>.json)
    #[arg(long, value_name = "DIR")]
    badge_dir: Option<PathBuf>,
    /// Which failures make the run fail (exit 1): must (MUST cases only), should (MUST and SHOULD), any
    #[arg(long, value_enum, value_name = "LEVEL", default_value = "any")]
    fail_on: shimcompat::report::FailOn,
    /// Exit 0 (not 3) when nothing ran or a candidate named with --candidate could not run here
    #[arg(long)]
    allow_empty: bool,
    /// Run only the trials that failed (or were flaky) in this report (from --report-json)
    #[arg(long, value_name = "REPORT")]
    rerun_failed: Option<PathBuf>,
    /// Behave as this containerd line: 1.6, 1.7, 2.0 (2.0-2.2), 2.x (2.3+), a comma-separated list, or `all`
    /// (default: the installed containerd's line, else the newest)
    #[arg(long, value_name = "LINE")]
    containerd: Option<String>,
    /// Pass -debug to the shim's `start`, as containerd does when it logs at debug level
    #[arg(long)]
    shim_debug: bool,
    #[command(flatten)]
    test: TestArgs,
}

#[derive(clap::Args)]
struct BenchArgs {
    /// A runtime name, resolved as containerd does (default: the bundled mock shim)
    #[arg(long, value_name = "NAME", conflicts_with = "candidate")]
    runtime: Option<String>,
    /// A candidate file (repeatable)
    #[arg(long, value_name = "FILE")]
    candidate: Vec<PathBuf>,
    /// Behave as this containerd line (default: the installed containerd's line, else the newest)
    #[arg(long, value_name = "LINE")]
    containerd: Option<String>,
    /// Small counts (10 lifecycles, concurrency 1 and 2, density 1 and 5, soak 50): every phase in a minute or less
    #[arg(long)]
    quick: bool,
    /// Lifecycles for the latency distributions (default 100; --quick 10)
    #[arg(long, value_name = "N")]
    samples: Option<usize>,
    /// Concurrency levels for throughput (default 1,2,4,8; --quick 1,2)
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    concurrency: Option<Vec<usize>>,
    /// Lifecycles per concurrent worker at each level (default 10; --quick 3)
    #[arg(long, value_name = "N")]
    per_worker: Option<usize>,
    /// Container counts held for density (default 1,10,50,100; --quick 1,5)
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    density: Option<Vec<usize>>,
    /// Lifecycles in the soak, 0 for none (default 1000; --quick 50)
    #[arg(long, value_name = "N")]
    soak: Option<usize>,
    /// Do not run the references (bare OCI runtime, ctr run --rm through a private containerd)
    #[arg(long)]
    no_references: bool,
    /// Write the results as JSON (schema shimcompat.bench/v1)
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write the results as Markdown (appended to, as $GITHUB_STEP_SUMMARY expects)
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
    /// Write a self-contained HTML page (latency charts per operation, every table)
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Base directory for bundles, logs and sockets (default: as for `run`: $TMPDIR, else a tmpfs, else /tmp)
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
}

/// `--containerd` to lines: `all`, a list, or the default (installed containerd's line, else the newest).
fn lines(arg: Option<&str>) -> Result<Vec<Line>, String> {
    let Some(arg) = arg else {
        let (line, why) = shimcompat::profile::default_line();
        eprintln!("note: behaving as containerd {line} ({why}); choose with --containerd 1.6|1.7|2.0|2.x|all");
        return Ok(vec![line]);
    };
    if arg.trim() == "all" {
        return Ok(Line::ALL.to_vec());
    }
    let mut found = Vec::new();
    for part in arg.split(',') {
        let line = Line::parse(part).ok_or_else(|| {
            format!("--containerd {part:?}: not a containerd line shimcompat models (1.6, 1.7, 2.0, 2.x or all)")
        })?;
        if !found.contains(&line) {
            found.push(line);
        }
    }
    Ok(found)
}

fn main() -> ExitCode {
    // containerd hands shims its own binary as -publish-binary and they run `<it> --address A publish --topic T
    // --namespace N` with the event on stdin; shimcompat passes itself and forwards the event to the events server.
    let raw: Vec<String> = std::env::args().collect();
    if raw.iter().skip(1).any(|a| a == "publish") && raw.get(1).is_some_and(|a| a == "--address" || a == "-address") {
        return shimcompat::shim::events::publish_command(&raw[1..]);
    }
    // `binary://` stdio in the io cases names shimcompat itself as the logging binary (see shim/logdriver.rs).
    if raw.get(1).is_some_and(|a| a == shimcompat::shim::logdriver::SUBCOMMAND) {
        return shimcompat::shim::logdriver::run(&raw[2..]);
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run(args),
        Command::List { json } => {
            shimcompat::cases::print_catalogue(json);
            ExitCode::SUCCESS
        }
        Command::Doctor { candidates, candidate, runtime, json } => doctor(candidates, candidate, runtime, json),
        Command::Clean => {
            let cleaned = shimcompat::registry::clean_stale();
            if cleaned.is_empty() {
                shimcompat::outln!(
                    "nothing to clean: no killed run left a record in {}",
                    shimcompat::registry::dir().display()
                );
            }
            for line in shimcompat::registry::describe(&cleaned) {
                shimcompat::outln!("{line}");
            }
            shimcompat::process::reap_orphans();
            ExitCode::SUCCESS
        }
        Command::Resolve(args) => match shimcompat::resolve::cli::run(&args) {
            Ok(code) => code,
            Err(e) => usage_error(e),
        },
        Command::Baseline { containerd, candidates, results, matrix_only, test } => match lines(Some(&containerd)) {
            Ok(lines) => baseline(&candidates, &results, matrix_only, &test, &lines),
            Err(e) => usage_error(e),
        },
        Command::Compare { baseline, report, threshold, floor_us } => {
            if is_bench_report(&report) {
                compare_bench(&baseline, &report, threshold, floor_us)
            } else {
                compare(&baseline, &report)
            }
        }
        Command::Bench(args) => bench(args),
        Command::Report { reports, format, output } => render_reports(&reports, format, output.as_deref()),
    }
}

fn usage_error(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

fn run(mut args: RunArgs) -> ExitCode {
    if let Some(path) = &args.rerun_failed {
        let report = match read_report(path) {
            Ok(report) => report,
            Err(e) => return usage_error(format!("--rerun-failed {}: {e}", path.display())),
        };
        use shimcompat::report::Outcome;
        let failed: Vec<String> = report
            .results
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Fail { .. } | Outcome::Flaky { .. }))
            .map(|r| r.name.clone())
            .collect();
        if failed.is_empty() {
            shimcompat::outln!("nothing failed in {}: nothing to rerun", path.display());
            return ExitCode::from(if args.allow_empty { 0 } else { shimcompat::report::exit::EMPTY });
        }
        eprintln!("note: rerunning the {} trial(s) that failed in {}", failed.len(), path.display());
        args.test.filters = failed;
        args.test.exact = true;
    }
    let mut candidates = Vec::new();
    let explicit = args.runtime.is_some() || args.runtime_binary.is_some();
    if let Some(name) = &args.runtime {
        if let Err(e) = select::check_runtime_name(name) {
            return usage_error(e);
        }
        candidates.push(Candidate::for_runtime(name));
    } else if let Some(path) = &args.runtime_binary {
        // The shim runs in its bundle, so a relative path must be made absolute here.
        match path.canonicalize() {
            Ok(absolute) => candidates.push(Candidate::for_binary(&absolute)),
            Err(e) => return usage_error(format!("--runtime-binary {}: {e}", path.display())),
        }
    } else if let Some(dir) = &args.candidates {
        match Candidate::load_dir(dir) {
            Ok(found) => candidates = found,
            Err(e) => return usage_error(e),
        }
    } else if !args.candidate.is_empty() {
        for file in &args.candidate {
            match Candidate::load(file) {
                Ok(candidate) => candidates.push(candidate),
                Err(e) => return usage_error(e),
            }
        }
    } else {
        candidates.push(Candidate::mock());
    }
    if args.faults.is_some()
        && candidates.iter().any(|c| c.runtime.as_deref() != Some(shimcompat::candidate::MOCK_RUNTIME))
    {
        return usage_error("--faults only applies to the bundled mock shim (io.containerd.mock.v1)");
    }
    if let Some(faults) = &args.faults {
        if let Err(e) = select::check_faults(faults) {
            return usage_error(e);
        }
    }
    if let Err(e) = select::check_candidates(&candidates) {
        return usage_error(e);
    }
    let lines = match lines(args.containerd.as_deref()) {
        Ok(lines) => lines,
        Err(e) => return usage_error(e),
    };
    let mut plans: Vec<Planned> = Vec::new();
    for candidate in candidates {
        for line in &lines {
            plans.push(select::plan(candidate.clone(), args.faults.as_deref(), *line));
        }
    }
    if explicit {
        // A shim the user named explicitly must exist: a skip would hide a typo.
        if let Some(Planned::Unavailable { reason, .. }) = plans.first() {
            return usage_error(reason);
        }
        if args.runtime_binary.is_some() {
            eprintln!("note: shim given by path: this run is not certified by name");
        }
    }
    for plan in &plans {
        if let Planned::Unavailable { reason, .. } = plan {
            shimcompat::outln!("candidate {} skipped: {reason}", plan.label());
        }
    }
    use shimcompat::report::writers::Writer;
    let writers: Vec<Writer> = [
        args.report_json.clone().map(Writer::Json),
        args.junit.clone().map(Writer::Junit),
        args.markdown.clone().map(Writer::Markdown),
        args.html.clone().map(Writer::Html),
        args.badge_dir.clone().map(Writer::BadgeDir),
    ]
    .into_iter()
    .flatten()
    .collect();
    // Output files are opened before anything runs: a bad path must not cost the run's results.
    for path in writers.iter().filter_map(Writer::file) {
        if let Err(e) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            return usage_error(format!("cannot write {}: {e}", path.display()));
        }
    }
    let named_unavailable =
        !args.candidate.is_empty() && plans.iter().any(|p| matches!(p, Planned::Unavailable { .. }));
    let config =
        shimcompat::run::RunConfig { work_base: args.work_dir.clone(), keep: args.keep, shim_debug: args.shim_debug };
    let mut reporters: Vec<Box<dyn shimcompat::report::stream::Reporter>> =
        vec![Box::new(shimcompat::report::console::Console::new(args.test.format(), args.test.color))];
    reporters.extend(writers.into_iter().map(|w| Box::new(w) as Box<dyn shimcompat::report::stream::Reporter>));
    let report = match shimcompat::run::run(plans, &args.test, &config, &mut reporters) {
        Ok(report) => report,
        Err(e) => return usage_error(e),
    };
    if !report.output_errors.is_empty() {
        return usage_error(report.output_errors.join("; "));
    }
    if args.keep {
        eprintln!("kept: {} (bundles, config.json, shim logs)", report.work_dir.as_deref().unwrap_or("?"));
    }
    let code = report.exit_code(args.fail_on, args.allow_empty, named_unavailable);
    use shimcompat::report::exit;
    match code {
        exit::EMPTY if named_unavailable => {
            eprintln!("error: a candidate named with --candidate cannot run here (exit 3; --allow-empty accepts it)")
        }
        exit::EMPTY => {
            eprintln!("error: nothing ran: no trial selected, or every one skipped (exit 3; --allow-empty accepts it)")
        }
        exit::OK if !report.success() && report.interrupted.is_none() => {
            eprintln!(
                "note: exit 0 under --fail-on {}: no failure at that level",
                format!("{:?}", args.fail_on).to_lowercase()
            )
        }
        _ => {}
    }
    ExitCode::from(code)
}

fn doctor(dir: Option<PathBuf>, files: Vec<PathBuf>, runtime: Option<String>, json: bool) -> ExitCode {
    let candidates = if let Some(name) = &runtime {
        if let Err(e) = select::check_runtime_name(name) {
            return usage_error(e);
        }
        vec![Candidate::for_runtime(name)]
    } else if !files.is_empty() {
        let mut found = Vec::new();
        for file in &files {
            match Candidate::load(file) {
                Ok(candidate) => found.push(candidate),
                Err(e) => return usage_error(e),
            }
        }
        found
    } else {
        let dir = dir.or_else(|| Some(PathBuf::from("shims/candidates")).filter(|d| d.is_dir()));
        match &dir {
            Some(dir) => match Candidate::load_dir(dir) {
                Ok(found) => found,
                Err(e) => return usage_error(e),
            },
            None => vec![Candidate::mock()],
        }
    };
    if let Err(e) = select::check_candidates(&candidates) {
        return usage_error(e);
    }
    let (host, rows) = shimcompat::doctor::examine(candidates, None);
    if json {
        let value = serde_json::json!({ "host": host, "candidates": rows });
        shimcompat::outln!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
    } else {
        shimcompat::doctor::print(&host, &rows);
    }
    ExitCode::SUCCESS
}

fn baseline(
    dir: &std::path::Path,
    results: &std::path::Path,
    matrix_only: bool,
    test: &TestArgs,
    lines: &[Line],
) -> ExitCode {
    use shimcompat::report::{baseline, matrix};
    let baselines_dir = results.join("baselines");
    let candidates = match Candidate::load_dir(dir) {
        Ok(found) => found,
        Err(e) => return usage_error(e),
    };
    if let Err(e) = select::check_candidates(&candidates) {
        return usage_error(e);
    }
    let mut unavailable = Vec::new();
    if !matrix_only {
        let plans: Vec<Planned> = candidates
            .iter()
            .flat_map(|c| lines.iter().map(move |line| select::plan(c.clone(), None, *line)))
            .collect();
        for plan in &plans {
            if let Planned::Unavailable { reason, .. } = plan {
                shimcompat::outln!("candidate {} skipped: {reason}", plan.label());
            }
        }
        let config = shimcompat::run::RunConfig::default();
        let mut reporters: Vec<Box<dyn shimcompat::report::stream::Reporter>> =
            vec![Box::new(shimcompat::report::console::Console::new(test.format(), test.color))];
        let report = match shimcompat::run::run(plans, test, &config, &mut reporters) {
            Ok(report) => report,
            Err(e) => return usage_error(e),
        };
        let host = shimcompat::host::fingerprint();
        let describe = |name: &str| {
            let candidate = candidates.iter().find(|c| c.name == name);
            let entry = report.candidates.iter().find(|c| c.name == name);
            let binary = entry.and_then(|e| e.binary.clone());
            baseline::BaselineCandidate {
                name: name.to_string(),
                description: candidate.map(|c| c.description.clone()).unwrap_or_default(),
                runtime: candidate.and_then(|c| c.runtime.clone()),
                version: binary.as_deref().and_then(|b| shimcompat::host::version_of(std::path::Path::new(b), "-v")),
                binary,
                oci_runtime: candidate.and_then(|c| c.runc_options.as_ref()).map(|o| {
                    let name = if o.binary_name.is_empty() { "runc".to_string() } else { o.binary_name.clone() };
                    let path =
                        if name.contains('/') { Some(PathBuf::from(&name)) } else { shimcompat::host::which(&name) };
                    let version =
                        path.as_deref().and_then(|p| shimcompat::host::version_of(p, "--version")).unwrap_or_default();
                    // Paths differ per checkout; the wrapper's name and the runtime's version identify it.
                    let shown = name.rsplit('/').next().unwrap_or(&name).to_string();
                    format!("{shown} ({version})")
                }),
                certified_by_name: candidate.is_some_and(|c| c.certified_by_name()),
            }
        };
        for written in baseline::from_report(&report, &host, &describe) {
            if let Err(e) = baseline::save(&written, &baselines_dir) {
                return usage_error(e);
            }
            shimcompat::outln!(
                "wrote {}/{}",
                baselines_dir.display(),
                baseline::file_name(&written.candidate.name, written.containerd)
            );
        }
        unavailable =
            report.candidates.iter().filter_map(|c| c.unavailable.clone().map(|r| (c.name.clone(), r))).collect();
        unavailable.dedup();
    }
    let baselines = match baseline::load_dir(&baselines_dir) {
        Ok(found) => found,
        Err(e) => return usage_error(e),
    };
    let findings = match matrix::load_findings(&results.join("findings.toml")) {
        Ok(found) => found,
        Err(e) => return usage_error(e),
    };
    unavailable.retain(|(name, _)| !baselines.iter().any(|b| &b.candidate.name == name));
    let text = matrix::render(&baselines, &findings, &unavailable);
    if let Err(e) = std::fs::write(results.join("MATRIX.md"), text) {
        return usage_error(format!("writing {}/MATRIX.md: {e}", results.display()));
    }
    shimcompat::outln!("wrote {}/MATRIX.md", results.display());
    ExitCode::SUCCESS
}

fn compare(baseline_path: &std::path::Path, report_path: &std::path::Path) -> ExitCode {
    use shimcompat::report::{baseline, Report};
    let baselines = if baseline_path.is_dir() {
        baseline::load_dir(baseline_path)
    } else {
        baseline::load(baseline_path).map(|b| vec![b])
    };
    let baselines = match baselines {
        Ok(found) => found,
        Err(e) => return usage_error(e),
    };
    let report: Report = match read_report(report_path) {
        Ok(report) => report,
        Err(e) => return usage_error(format!("{}: {e}", report_path.display())),
    };
    let mut regressions = 0;
    let mut compared = 0;
    for candidate in &report.candidates {
        let label = format!("{}@{}", candidate.name, candidate.containerd);
        let Some(base) =
            baselines.iter().find(|b| b.candidate.name == candidate.name && b.containerd == candidate.containerd)
        else {
            shimcompat::outln!("{label}: no baseline");
            continue;
        };
        compared += 1;
        let outcomes = baseline::outcomes_of(&report, &candidate.name, candidate.containerd);
        let mut changes = baseline::compare(&base.outcomes, &outcomes);
        // A baseline case the report lacks was not run (a filtered or interrupted run) or is no longer in the
        // catalogue: either way the report says nothing about it, so it is no regression.
        let partial = report.filtered_out > 0 || report.interrupted.is_some();
        let absent = changes.iter().filter(|c| c.after.is_none()).count();
        changes.retain(|c| c.after.is_some());
        if absent > 0 {
            let why =
                if partial { "not run: the run was filtered or interrupted" } else { "no longer in the catalogue" };
            shimcompat::outln!("{label}: {absent} baseline case(s) absent from the report ({why}): not compared");
        }
        if changes.is_empty() {
            shimcompat::outln!("{label}: same outcomes as the baseline ({} cases compared)", outcomes.len());
        }
        for change in &changes {
            let mark = if change.is_regression() { "REGRESSION" } else { "changed" };
            shimcompat::outln!("{label}: {mark} {change}");
            regressions += usize::from(change.is_regression());
        }
    }
    if compared == 0 {
        return usage_error("no candidate of the report has a baseline");
    }
    if regressions > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// A `run --report-json` file of this tool's schema; another schema (or a baseline, or another tool's JSON) is
/// refused by name rather than misread.
fn read_report(path: &std::path::Path) -> Result<shimcompat::report::Report, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))?;
    let schema = value.get("schema").and_then(|s| s.as_str()).unwrap_or("").to_string();
    if schema != shimcompat::report::SCHEMA {
        return Err(format!(
            "not a report of schema {} (its schema is {}); give the JSON `shimcompat run --report-json` writes",
            shimcompat::report::SCHEMA,
            if schema.is_empty() { "missing".to_string() } else { format!("{schema:?}") }
        ));
    }
    serde_json::from_value(value).map_err(|e| format!("a {schema} report that does not parse: {e}"))
}

fn render_reports(paths: &[PathBuf], format: ReportFormat, output: Option<&std::path::Path>) -> ExitCode {
    let mut reports = Vec::new();
    for path in paths {
        match read_report(path) {
            Ok(report) => reports.push(report),
            Err(e) => return usage_error(format!("{}: {e}", path.display())),
        }
    }
    let (merged, hosts) = shimcompat::report::merge(reports);
    let text = match format {
        ReportFormat::Md => shimcompat::report::markdown::render_hosts(&merged, &hosts),
        ReportFormat::Junit => match shimcompat::report::junit::render(&merged) {
            Ok(xml) => xml,
            Err(e) => return usage_error(format!("rendering JUnit: {e}")),
        },
        ReportFormat::Json => serde_json::to_string_pretty(&merged).unwrap_or_default(),
        ReportFormat::Html => shimcompat::report::html::render(&merged),
    };
    match output {
        Some(path) => {
            if let Err(e) = std::fs::write(path, text) {
                return usage_error(format!("writing {}: {e}", path.display()));
            }
        }
        None => shimcompat::outln!("{text}"),
    }
    ExitCode::SUCCESS
}

fn bench(args: BenchArgs) -> ExitCode {
    let candidates = if let Some(name) = &args.runtime {
        if let Err(e) = select::check_runtime_name(name) {
            return usage_error(e);
        }
        vec![Candidate::for_runtime(name)]
    } else if !args.candidate.is_empty() {
        let mut found = Vec::new();
        for file in &args.candidate {
            match Candidate::load(file) {
                Ok(candidate) => found.push(candidate),
                Err(e) => return usage_error(e),
            }
        }
        found
    } else {
        vec![Candidate::mock()]
    };
    if let Err(e) = select::check_candidates(&candidates) {
        return usage_error(e);
    }
    let lines = match lines(args.containerd.as_deref()) {
        Ok(lines) => lines,
        Err(e) => return usage_error(e),
    };
    let mut plans = Vec::new();
    for candidate in candidates {
        for line in &lines {
            let plan = select::plan(candidate.clone(), None, *line);
            // A bench of a shim that cannot run here is no result: say why and stop.
            if let Planned::Unavailable { reason, .. } = &plan {
                return usage_error(format!("{}: {reason}", plan.label()));
            }
            plans.push(plan);
        }
    }
    let mut config =
        if args.quick { shimcompat::bench::BenchConfig::quick() } else { shimcompat::bench::BenchConfig::full() };
    config.samples = args.samples.unwrap_or(config.samples);
    config.concurrency = args.concurrency.clone().unwrap_or(config.concurrency);
    config.per_worker = args.per_worker.unwrap_or(config.per_worker);
    config.density = args.density.clone().unwrap_or(config.density);
    config.soak = args.soak.unwrap_or(config.soak);
    config.references = !args.no_references;
    config.work_base = args.work_dir.clone();
    if config.samples == 0 || config.concurrency.contains(&0) || config.per_worker == 0 || config.density.contains(&0) {
        return usage_error("--samples, --per-worker, --concurrency and --density take counts of 1 or more");
    }
    for path in [&args.json, &args.markdown, &args.html].into_iter().flatten() {
        if let Err(e) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            return usage_error(format!("cannot write {}: {e}", path.display()));
        }
    }
    let report = match shimcompat::bench::bench(plans, &config) {
        Ok(report) => report,
        Err(e) => return usage_error(e),
    };
    shimcompat::outln!("{}", shimcompat::bench::render::console(&report));
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).unwrap_or_default();
        if let Err(e) = std::fs::write(path, text + "\n") {
            return usage_error(format!("writing {}: {e}", path.display()));
        }
    }
    if let Some(path) = &args.html {
        if let Err(e) = std::fs::write(path, shimcompat::bench::render::html(&report)) {
            return usage_error(format!("writing {}: {e}", path.display()));
        }
    }
    if let Some(path) = &args.markdown {
        use std::io::Write;
        let written = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(shimcompat::bench::render::markdown(&report).as_bytes()));
        if let Err(e) = written {
            return usage_error(format!("writing {}: {e}", path.display()));
        }
    }
    let failed = report.candidates.iter().any(|c| !c.errors.is_empty() || !c.leftovers.is_empty());
    if shimcompat::context::STOPPING.load(std::sync::atomic::Ordering::SeqCst) {
        return ExitCode::from(130);
    }
    ExitCode::from(u8::from(failed))
}

fn is_bench_report(path: &std::path::Path) -> bool {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| v.get("schema").and_then(|s| s.as_str()) == Some(shimcompat::bench::SCHEMA))
}

fn read_bench(path: &std::path::Path) -> Result<shimcompat::bench::BenchReport, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
    if value.get("schema").and_then(|s| s.as_str()) != Some(shimcompat::bench::SCHEMA) {
        return Err(format!("{}: not a bench report (schema {})", path.display(), shimcompat::bench::SCHEMA));
    }
    serde_json::from_value(value).map_err(|e| format!("{}: a bench report that does not parse: {e}", path.display()))
}

fn compare_bench(before: &std::path::Path, after: &std::path::Path, threshold: f64, floor_us: u64) -> ExitCode {
    if !(0.0..=1000.0).contains(&threshold) {
        return usage_error("--threshold is a percentage between 0 and 1000");
    }
    let (before, after) = match (read_bench(before), read_bench(after)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return usage_error(e),
    };
    let (changes, notes) = shimcompat::bench::render::compare(&before, &after, threshold / 100.0, floor_us);
    for note in &notes {
        shimcompat::outln!("{note}");
    }
    if changes.is_empty() {
        shimcompat::outln!("no figure moved by more than {threshold}%");
    }
    for change in &changes {
        shimcompat::outln!(
            "{}: {} {}: {} -> {} ({:+.0}%)",
            change.label,
            if change.regression { "REGRESSION" } else { "improved" },
            change.what,
            change.before,
            change.after,
            (change.after / change.before.max(1e-9) - 1.0) * 100.0
        );
    }
    let regressed = changes.iter().any(|c| c.regression) || notes.iter().any(|n| n.contains("REGRESSION"));
    ExitCode::from(u8::from(regressed))
}
