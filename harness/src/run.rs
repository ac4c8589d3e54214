//! candidate x case -> trials -> outcomes, with the libtest command line users know from `cargo test`: a name
//! filter, `--list`, `--skip`, `--exact`, `--test-threads`, `--format terse`.
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cases::{self, Case, CaseError};
use crate::context::{Ctx, RunEnv, Target, Verdict};
use crate::report::stream::{Reporter, RunEvent};
use crate::report::{Outcome, Report, TrialResult};
use crate::select::Planned;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    #[default]
    Pretty,
    Terse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ColorWhen {
    #[default]
    Auto,
    Always,
    Never,
}

pub(crate) fn stdout_is_terminal() -> bool {
    // SAFETY: isatty has no preconditions.
    unsafe { libc::isatty(1) == 1 }
}

/// The libtest-compatible part of the command line.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TestArgs {
    /// Run only trials whose name contains one of these strings (`candidate::area::case`)
    pub filters: Vec<String>,
    /// List the trials instead of running them
    #[arg(long)]
    pub list: bool,
    /// Skip trials whose name contains this string (repeatable)
    #[arg(long, value_name = "FILTER")]
    pub skip: Vec<String>,
    /// Filters and --skip match whole trial names
    #[arg(long)]
    pub exact: bool,
    /// Trials run in parallel, 1-1024 (default: twice the number of CPUs, as a trial mostly waits on its shim;
    /// never more than there are trials)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub test_threads: Option<u16>,
    /// Output format
    #[arg(long, value_enum, default_value = "pretty")]
    pub format: Format,
    /// Same as --format terse
    #[arg(short, long)]
    pub quiet: bool,
    /// Run a failing trial up to N more times (0-10); one that then passes is `flaky`, never counted as a pass
    #[arg(long, value_name = "N", default_value = "0", value_parser = clap::value_parser!(u8).range(0..=10))]
    pub retries: u8,
    /// Stop starting trials after N failures (trials in flight finish; the rest are not run)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_fail: Option<u32>,
    /// Same as --max-fail 1
    #[arg(long, conflicts_with = "max_fail")]
    pub fail_fast: bool,
    /// Colour: auto (on a terminal, unless NO_COLOR is set), always, never
    #[arg(long, value_enum, value_name = "WHEN", default_value = "auto")]
    pub color: ColorWhen,
    /// Accepted for libtest compatibility; shimcompat never captures case output
    #[arg(long, hide = true)]
    pub nocapture: bool,
}

impl TestArgs {
    fn selects(&self, name: &str) -> bool {
        let matches = |pattern: &String| if self.exact { name == pattern } else { name.contains(pattern.as_str()) };
        (self.filters.is_empty() || self.filters.iter().any(matches)) && !self.skip.iter().any(matches)
    }

    pub fn format(&self) -> Format {
        if self.quiet {
            Format::Terse
        } else {
            self.format
        }
    }
}

struct Trial {
    name: String,
    case_index: usize,
    planned: usize,
}

/// How a run is set up, apart from what is run.
#[derive(Debug, Clone, Default)]
pub struct RunConfig {
    /// Base directory for the run's work dir (default: the system temp dir).
    pub work_base: Option<PathBuf>,
    /// Keep the work dir (bundles, shim logs) afterwards.
    pub keep: bool,
    /// Pass -debug to shims (containerd does at log level debug).
    pub shim_debug: bool,
}

/// What a run (or a bench) holds while it uses the host: its work and socket directories, registered so that a
/// later run can clean up after a killed one; the harness as subreaper with its reaper thread; the interrupt
/// handler; and a snapshot of the host to tell what the run left.
pub struct Session {
    pub env: Arc<RunEnv>,
    host_watch: crate::leaks::HostWatch,
}

impl Session {
    pub fn open(
        work_base: Option<&std::path::Path>,
        keep: bool,
        shim_debug: bool,
    ) -> Result<Session, crate::context::EnvError> {
        // What earlier runs that were killed left: found by their records, removed now, said.
        for line in crate::registry::describe(&crate::registry::clean_stale()) {
            eprintln!("note: {line}");
        }
        let host_watch = crate::leaks::HostWatch::capture();
        let mut env = RunEnv::create(work_base, keep)?;
        env.shim_debug = shim_debug;
        let env = Arc::new(env);
        // Shims daemonize (their `start` exits and the server is orphaned); as a subreaper the harness inherits and
        // reaps them, as init would under containerd, so a run leaves no zombies behind.
        // First, before any thread exists: the signals must be blocked in every thread but the one that waits.
        install_interrupt_cleanup(env.clone());
        crate::process::become_subreaper();
        crate::process::reaper::start();
        FINISH.store(RUNNING, std::sync::atomic::Ordering::SeqCst);
        Ok(Session { env, host_watch })
    }

    /// The main thread finishes the run, unless the signal thread already gave up waiting and took over (then
    /// this parks until that thread exits the process). Another run of this process that finished first left
    /// MAIN_FINISHES: that is no reason to stop.
    pub fn main_finishes(&self) {
        let taken = FINISH.compare_exchange(
            RUNNING,
            MAIN_FINISHES,
            std::sync::atomic::Ordering::SeqCst,
            std::sync::atomic::Ordering::SeqCst,
        );
        if taken == Err(SIGNAL_FINISHES) {
            loop {
                std::thread::park();
            }
        }
    }

    /// Ends the session: whatever is still running from its bundles is killed (a teardown hole), its directories
    /// and the namespaces' runtime state are removed; returns what had to be killed or appeared on the host.
    pub fn close(&self, plans: &[Planned]) -> Vec<String> {
        let env = &self.env;
        let stragglers = crate::process::processes_naming(std::slice::from_ref(&env.workdir));
        let mut killed = Vec::new();
        for pid in stragglers {
            if let Some(line) = crate::process::kill_pid(pid) {
                killed.push(line);
            }
        }
        killed.extend(env.cleanup());
        remove_state_namespaces(plans, env);
        killed.extend(self.host_watch.appeared(&[env.workdir.clone(), env.sockets.clone()]));
        crate::process::reap_orphans();
        crate::process::cgroup::remove_cgroup_parents();
        killed
    }
}

/// Runs (or lists) the trials; returns the report. Every reporter gets the run's events as they happen (the
/// console prints them, file writers render the finished report); with none the run is silent (library callers
/// such as the self-test read the report instead). What a reporter could not do is in `report.output_errors`.
pub fn run(
    mut plans: Vec<Planned>,
    args: &TestArgs,
    config: &RunConfig,
    reporters: &mut [Box<dyn Reporter>],
) -> Result<Report, crate::context::EnvError> {
    let (work_base, keep, silent) = (config.work_base.clone(), config.keep, reporters.is_empty());
    let reporters = Mutex::new(reporters);
    let output_errors = Mutex::new(Vec::<String>::new());
    let emit = |event: &RunEvent<'_>| {
        for reporter in reporters.lock().unwrap_or_else(|p| p.into_inner()).iter_mut() {
            if let Err(e) = reporter.event(event) {
                output_errors.lock().unwrap_or_else(|p| p.into_inner()).push(e);
            }
        }
    };
    let emit = &emit;
    let catalogue = Arc::new(cases::catalogue());
    let total = plans.len() * catalogue.len();
    let mut trials = Vec::new();
    for (planned, plan) in plans.iter().enumerate() {
        for (case_index, case) in catalogue.iter().enumerate() {
            let name = format!("{}::{}", plan.label(), case.id);
            if args.selects(&name) {
                trials.push(Trial { name, case_index, planned });
            }
        }
    }
    let filtered_out = total - trials.len();
    if args.list {
        let report = Report::new(&plans);
        for trial in &trials {
            crate::outln!("{}: test", trial.name);
        }
        if args.format() == Format::Pretty {
            crate::outln!("\n{} tests, 0 benchmarks", trials.len());
        }
        return Ok(report);
    }
    let session = Session::open(work_base.as_deref(), keep, config.shim_debug)?;
    let env = session.env.clone();
    // What each containerd line makes of each candidate: decided once, before any case runs.
    for plan in plans.iter() {
        if let Planned::Ready(target) = plan {
            if trials.iter().any(|t| plans_match(&plans, t.planned, target)) {
                let verdict = judge(target, &env);
                *target.verdict.lock().unwrap_or_else(|p| p.into_inner()) = Some(verdict);
            }
        }
    }
    // As non-root, a shim whose `start` is refused by the host (it wants /run/containerd/s, cgroups, mounts) is a
    // host problem, not the shim's: its trials are skipped with the reason, as a candidate file's `needs.root` does.
    for plan in plans.iter_mut() {
        if let Some(reason) = non_root_refusal(plan) {
            let Planned::Ready(target) = &*plan else { continue };
            *plan = Planned::Unavailable { candidate: target.candidate.clone(), reason, line: target.profile.line };
        }
    }
    emit(&RunEvent::Started { plans: &plans, trials: trials.len() });
    let started = Instant::now();
    let started_at = crate::report::unix_now();
    let threads = args.test_threads.map(usize::from).unwrap_or_else(default_threads).clamp(1, trials.len().max(1));
    let total = trials.len();
    let queue = Arc::new(Mutex::new(trials.into_iter().collect::<VecDeque<_>>()));
    let results = Arc::new(Mutex::new(Vec::<TrialResult>::new()));
    let plans = Arc::new(plans);
    let max_fail = if args.fail_fast { Some(1) } else { args.max_fail };
    let failures = std::sync::atomic::AtomicU32::new(0);
    let (failures, retries) = (&failures, args.retries);
    let in_flight: Mutex<std::collections::BTreeMap<String, Instant>> = Mutex::new(Default::default());
    let workers_done = std::sync::atomic::AtomicBool::new(false);
    let (in_flight, workers_done) = (&in_flight, &workers_done);
    std::thread::scope(|scope| {
        // On a terminal, a trial still running after 30 s is named once (libtest does the same at 60 s).
        if !silent && stdout_is_terminal() {
            scope.spawn(move || {
                let mut told = std::collections::BTreeSet::new();
                while !workers_done.load(std::sync::atomic::Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(250));
                    let slow: Vec<String> = in_flight
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .iter()
                        .filter(|(name, since)| since.elapsed() > slow_notice() && !told.contains(*name))
                        .map(|(name, _)| name.clone())
                        .collect();
                    for name in slow {
                        emit(&RunEvent::SlowTrial { name: &name, seconds: slow_notice().as_secs() });
                        told.insert(name);
                    }
                }
            });
        }
        let mut workers = Vec::new();
        for _ in 0..threads {
            let (queue, results, plans, catalogue, env) =
                (queue.clone(), results.clone(), plans.clone(), catalogue.clone(), env.clone());
            workers.push(scope.spawn(move || loop {
                if crate::context::STOPPING.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                if max_fail.is_some_and(|max| failures.load(std::sync::atomic::Ordering::SeqCst) >= max) {
                    break;
                }
                let Some(trial) = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front() else { break };
                let case = &catalogue[trial.case_index];
                in_flight.lock().unwrap_or_else(|p| p.into_inner()).insert(trial.name.clone(), Instant::now());
                let mut result = run_trial(&trial.name, case, &plans[trial.planned], &env);
                // Retries: a failure that then passes is flaky (reported apart); one that keeps failing stays failed.
                let mut attempts = 1;
                while matches!(result.outcome, Outcome::Fail { .. })
                    && attempts <= u32::from(retries)
                    && !result.interrupted
                {
                    attempts += 1;
                    let again = run_trial(&trial.name, case, &plans[trial.planned], &env);
                    if matches!(again.outcome, Outcome::Pass) {
                        let Outcome::Fail { message } = std::mem::replace(&mut result.outcome, Outcome::Pass) else {
                            unreachable!()
                        };
                        result.outcome = Outcome::Flaky { message, attempts };
                        result.duration += again.duration;
                        break;
                    }
                }
                if matches!(result.outcome, Outcome::Fail { .. }) {
                    failures.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&trial.name);
                emit(&RunEvent::TrialFinished { result: &result, total });
                results.lock().unwrap_or_else(|p| p.into_inner()).push(result);
            }));
        }
        let panics: Vec<_> = workers.into_iter().filter_map(|w| w.join().err()).collect();
        // The watcher stops first, so that a worker's panic reaches the caller instead of hanging the scope.
        workers_done.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(panic) = panics.into_iter().next() {
            std::panic::resume_unwind(panic);
        }
    });
    let stopped_after = max_fail.filter(|max| failures.load(std::sync::atomic::Ordering::SeqCst) >= *max);
    session.main_finishes();
    let interrupted = interrupted_by();
    if interrupted.is_some() {
        // Every trial thread has returned: nothing new can start now. Kill what is left of the run before the
        // usual teardown below removes its files.
        kill_run_processes(&env);
    }
    let killed = session.close(&plans);
    let mut report = Report::new(&plans);
    let mut results = std::mem::take(&mut *results.lock().unwrap_or_else(|p| p.into_inner()));
    results.sort_by(|a, b| a.name.cmp(&b.name));
    report.results = results;
    // A waiver whose case passed accepts a divergence that is gone: say so, so the candidate file can lose it.
    for result in report.results.iter().filter(|r| matches!(r.outcome, Outcome::Pass)) {
        let waiver = plans.iter().find_map(|plan| match plan {
            Planned::Ready(target)
                if target.candidate.name == result.candidate && target.profile.line == result.containerd =>
            {
                target.candidate.waiver(&result.case)
            }
            _ => None,
        });
        if let Some(waiver) = waiver {
            report.stale_waivers.push(format!(
                "{}: the waiver for {} ({}) is stale: the case passed",
                result.name, result.case, waiver.reason
            ));
        }
    }
    report.filtered_out = filtered_out;
    report.duration = started.elapsed();
    report.stragglers = killed;
    report.interrupted = interrupted;
    report.not_run = total.saturating_sub(report.results.len());
    if let (Some(max), true) = (stopped_after, report.not_run > 0) {
        report.stopped_early =
            Some(format!("stopped after {max} failure(s) (--max-fail/--fail-fast): {} trials not run", report.not_run));
    }
    report.host = Some(host_fingerprint());
    report.add_binary_facts();
    report.started_at = started_at;
    report.finished_at = crate::report::unix_now();
    report.work_dir = env.keep.then(|| env.workdir.display().to_string());
    emit(&RunEvent::Finished { report: &report });
    report.output_errors = std::mem::take(&mut *output_errors.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(report)
}

/// Why a ready plan cannot run here as non-root: its verdict failed at `start` on a permission error.
fn non_root_refusal(plan: &Planned) -> Option<String> {
    let Planned::Ready(target) = plan else { return None };
    if crate::host::is_root() {
        return None;
    }
    let verdict = target.verdict()?;
    let reason = verdict.reason.as_deref().filter(|_| !verdict.usable)?;
    let denied = ["permission denied", "operation not permitted", "Permission denied", "Operation not permitted"];
    (reason.contains("shim start failed") && denied.iter().any(|d| reason.contains(d))).then(|| {
        format!(
            "needs root here: `start` as uid {} was refused by the host ({reason}); containerd runs shims as root",
            nix::unistd::geteuid()
        )
    })
}

/// The host as doctor describes it, taken once per process (it runs `containerd --version`).
fn host_fingerprint() -> crate::host::HostFingerprint {
    static HOST: std::sync::OnceLock<crate::host::HostFingerprint> = std::sync::OnceLock::new();
    HOST.get_or_init(crate::host::fingerprint).clone()
}

/// A trial running longer than this is named on a terminal (`SHIMCOMPAT_SLOW_NOTICE` seconds overrides it).
const SLOW_NOTICE: Duration = Duration::from_secs(30);

fn slow_notice() -> Duration {
    std::env::var("SHIMCOMPAT_SLOW_NOTICE")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(SLOW_NOTICE)
}

/// A failure's evidence is cut to this many bytes.
const EVIDENCE_CAP: usize = 64 * 1024;

/// A failure message is cut to this many bytes (before the evidence, which is bounded on its own).
const MESSAGE_CAP: usize = 16 * 1024;

fn run_trial(name: &str, case: &Case, plan: &Planned, env: &Arc<RunEnv>) -> TrialResult {
    let started = Instant::now();
    let (candidate, (outcome, evidence, shim_time)) = match plan {
        Planned::Unavailable { candidate, reason, .. } => {
            (candidate.name.clone(), (Outcome::Skip { reason: reason.clone() }, String::new(), Duration::ZERO))
        }
        // A line that cannot use the shim still runs every case: each then fails where containerd would, in its words.
        Planned::Ready(target) => (target.candidate.name.clone(), run_ready(case, target, env)),
    };
    let interrupted = crate::context::STOPPING.load(std::sync::atomic::Ordering::SeqCst);
    // A trial in flight when the signal came failed because the harness stopped it, not because of the shim.
    let outcome = match (outcome, interrupted_by()) {
        (Outcome::Fail { .. }, Some(signal)) if interrupted => {
            Outcome::Skip { reason: format!("interrupted by {signal} before it finished") }
        }
        (outcome, _) => outcome,
    };
    TrialResult {
        name: name.to_string(),
        candidate,
        containerd: plan.line(),
        case: case.id.to_string(),
        area: case.area().to_string(),
        level: case.level_for(plan.line()),
        outcome,
        duration: started.elapsed(),
        shim_time,
        summary: case.summary.to_string(),
        reference: case
            .per_line
            .iter()
            .find(|(line, ..)| *line == plan.line())
            .map(|(.., r)| *r)
            .unwrap_or(case.reference)
            .to_string(),
        features: case.features.iter().map(|f| f.to_string()).collect(),
        evidence,
        interrupted,
    }
}

/// The longest a case may take before the harness gives up on it (teardown still runs).
const CASE_LIMIT: Duration = Duration::from_secs(60);

/// Runs a case on a ready target: its outcome, for a failure the evidence (events, shim log tail), and the time
/// it spent waiting on shims.
fn run_ready(case: &Case, target: &Arc<Target>, env: &Arc<RunEnv>) -> (Outcome, String, Duration) {
    if let Some(feature) = case.features.iter().find(|f| !target.supports(f)) {
        return (
            Outcome::Skip { reason: format!("candidate declares feature `{feature}` unsupported") },
            String::new(),
            Duration::ZERO,
        );
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            return (
                Outcome::Fail { message: format!("harness: cannot start a tokio runtime: {e}") },
                String::new(),
                Duration::ZERO,
            )
        }
    };
    let outcome = runtime.block_on(async {
        let mut ctx = Ctx::new(env.clone(), target.clone(), case.id);
        let limit = target.timeout(CASE_LIMIT);
        let result = match tokio::time::timeout(limit, (case.run)(&mut ctx)).await {
            Ok(result) => result,
            Err(_) => Err(CaseError::Fail(format!("the case did not finish within {limit:?}"))),
        };
        let evidence = if matches!(result, Err(CaseError::Fail(_))) { ctx.evidence() } else { String::new() };
        ctx.teardown().await;
        let waited = ctx.waited_on_shims();
        let leaked = hygiene(&ctx);
        let result = match (result, leaked.is_empty()) {
            (result, true) => result,
            (Ok(()) | Err(CaseError::Skip(_)), false) => Err(CaseError::Fail(format!(
                "hygiene: after teardown (Delete, Shutdown, exit) the shim left behind:\n  {}",
                leaked.join("\n  ")
            ))),
            (Err(CaseError::Fail(message)), false) => {
                Err(CaseError::Fail(format!("{message}\nand after teardown, left behind:\n  {}", leaked.join("\n  "))))
            }
        };
        let (outcome, evidence) = match result {
            Ok(()) => (Outcome::Pass, String::new()),
            Err(CaseError::Skip(reason)) => (Outcome::Skip { reason }, String::new()),
            // Whatever a shim made a case quote (its output, its errors, its log) stays readable.
            Err(CaseError::Fail(message)) => (
                Outcome::Fail { message: crate::shim::launch::clip(&message, MESSAGE_CAP) },
                crate::shim::launch::clip(&evidence, EVIDENCE_CAP),
            ),
        };
        (outcome, evidence, waited)
    });
    // Drop the runtime so tasks it owns (drains, servers) end before the next trial on this thread.
    runtime.shutdown_timeout(Duration::from_millis(200));
    match (outcome, target.candidate.waiver(case.id)) {
        ((Outcome::Fail { message }, evidence, waited), Some(waiver)) => {
            (Outcome::Waived { reason: waiver.reason.clone(), message }, evidence, waited)
        }
        (outcome, _) => outcome,
    }
}

/// On SIGINT, SIGTERM or SIGHUP the run stops at once but leaves nothing behind: every process of the run (found by
/// its marker) is killed and the work and socket directories are removed, then the harness exits 130.
fn install_interrupt_cleanup(env: Arc<RunEnv>) {
    use nix::sys::signal::{SigSet, Signal};
    *current_run().lock().unwrap_or_else(|p| p.into_inner()) = Some(env);
    static INSTALLED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    INSTALLED.get_or_init(|| {
        let mut signals = SigSet::empty();
        for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
            signals.add(signal);
        }
        // Blocked here, before the trial threads exist, so that only the waiting thread receives them.
        if signals.thread_block().is_err() {
            return;
        }
        std::thread::spawn(move || {
            let Ok(signal) = signals.wait() else { return };
            let Some(env) = current_run().lock().unwrap_or_else(|p| p.into_inner()).clone() else {
                std::process::exit(130);
            };
            eprintln!("\nshimcompat: {signal:?}: stopping; killing this run's shims and containers");
            let _ = INTERRUPTED.set(format!("{signal:?}"));
            crate::context::STOPPING.store(true, std::sync::atomic::Ordering::SeqCst);
            // Unblock the trials in flight (their shims die, their RPCs fail, no new shim is launched); the main
            // thread does the final sweep once every trial thread has returned. Should that take too long, do it here.
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && FINISH.load(std::sync::atomic::Ordering::SeqCst) == RUNNING {
                for pid in crate::process::run_processes(&env.nonce) {
                    crate::process::kill_pid(pid);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if FINISH
                .compare_exchange(
                    RUNNING,
                    SIGNAL_FINISHES,
                    std::sync::atomic::Ordering::SeqCst,
                    std::sync::atomic::Ordering::SeqCst,
                )
                .is_ok()
            {
                eprintln!("shimcompat: the trials in flight did not stop within 10s: exiting without a report");
                finish_interrupted(&env);
            }
        });
    });
}

/// The run an interruption applies to (runs in one process are sequential).
fn current_run() -> &'static Mutex<Option<Arc<RunEnv>>> {
    static CURRENT: std::sync::OnceLock<Mutex<Option<Arc<RunEnv>>>> = std::sync::OnceLock::new();
    CURRENT.get_or_init(Default::default)
}

/// After an interruption: kill every process of the run until none is left, remove its files, exit 130.
fn finish_interrupted(env: &RunEnv) -> ! {
    kill_run_processes(env);
    // Labs held by the threads that did not return (the bench's private containerd) are never dropped.
    for line in crate::lab::sweep_live_labs() {
        eprintln!("left after teardown: {line}");
    }
    for line in env.cleanup() {
        eprintln!("left after teardown: {line}");
    }
    crate::process::cgroup::remove_run_cgroups(&env.nonce);
    crate::process::cgroup::remove_cgroup_parents();
    std::process::exit(130);
}

/// stdout went away (the reader of a pipe exited): stop the run as an interrupt would, once.
pub fn stdout_closed() {
    if INTERRUPTED.set("SIGPIPE".into()).is_ok() {
        eprintln!("shimcompat: stdout was closed: stopping; killing this run's shims and containers");
    }
    crate::context::STOPPING.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// The signal that interrupted the run, if one did.
fn interrupted_by() -> Option<String> {
    INTERRUPTED.get().cloned()
}

static INTERRUPTED: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Who finishes an interrupted run: the main thread once every trial thread has returned (summary, report, exit
/// 130), or the signal thread if that takes more than 10 s (cleanup, exit 130, no report).
static FINISH: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(RUNNING);
const RUNNING: u8 = 0;
const MAIN_FINISHES: u8 = 1;
const SIGNAL_FINISHES: u8 = 2;

/// The runtime makes a directory for the run's namespace (runc's root, runwasi's `<state_root>/<ns>`); once the
/// run's containers are gone it goes too, if nothing else is in it (runs may share the namespace).
fn remove_state_namespaces(plans: &[Planned], env: &RunEnv) {
    for plan in plans {
        if let Planned::Ready(target) = plan {
            if let Some(state) = target.runtime_state(env) {
                let _ = std::fs::remove_dir(state);
            }
        }
    }
}

/// Kills every process of the run until none is left (or 5 s have passed).
fn kill_run_processes(env: &RunEnv) {
    let mut quiet = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while quiet < 3 && Instant::now() < deadline {
        let found = crate::process::run_processes(&env.nonce);
        quiet = if found.is_empty() { quiet + 1 } else { 0 };
        for pid in found {
            crate::process::kill_pid(pid);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    crate::process::cgroup::remove_run_cgroups(&env.nonce);
}

/// What teardown had to force, and what is still there after it.
pub(crate) fn hygiene(ctx: &Ctx) -> Vec<String> {
    let mut leaked = Vec::new();
    for report in &ctx.reports {
        for line in &report.killed {
            leaked.push(format!("process still running after Shutdown (SIGKILLed): {line}"));
        }
        for line in &report.left_after_shutdown {
            leaked.push(format!(
                "process still running after the shim exited (before containerd's delete action): {line}"
            ));
        }
        for line in &report.delete_action_hung {
            leaked.push(format!("containerd's `delete` action after the disconnect hung: {line}"));
        }
        for mount in &report.mounts_left {
            leaked.push(format!("mount left under the bundle after Delete, Shutdown and containerd's own unmount of <bundle>/rootfs: {mount}"));
        }
        if let Some(socket) = &report.socket_removed {
            leaked.push(format!("socket left after the shim exited: {}", socket.display()));
        }
        for id in &report.swept_containers {
            leaked.push(format!("runtime container left (swept with delete -f): {id}"));
        }
    }
    leaked.extend(ctx.probe.check());
    leaked
}

fn plans_match(plans: &[Planned], index: usize, target: &Arc<Target>) -> bool {
    matches!(&plans[index], Planned::Ready(other) if Arc::ptr_eq(other, target))
}

/// Whether the target's containerd line can use the shim at all: `start` read and dialled as that line does, and
/// the Task service it speaks answering a Create (a trivial container, then deleted).
pub fn judge(target: &Arc<Target>, env: &Arc<RunEnv>) -> Verdict {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            return Verdict {
                usable: false,
                reason: Some(format!("harness: cannot start a tokio runtime: {e}")),
                reply: None,
            }
        }
    };
    let verdict = runtime.block_on(async {
        let mut ctx = Ctx::new(env.clone(), target.clone(), "verdict::probe");
        let config = crate::bundle::ContainerConfig::new(&["exit", "0"]);
        let verdict = match ctx.launch(&config).await {
            Err(error) => Verdict { usable: false, reason: Some(first_line(&error)), reply: None },
            Ok(shim) => {
                let reply = format!(
                    "{} reply, version {}, Task API {} ({})",
                    shim.reply.form,
                    shim.reply.version,
                    shim.reply.api,
                    shim.reply.api.service()
                );
                match ctx.create(&shim, crate::bundle::IoSpec::NULL).await {
                    Ok(_) => Verdict { usable: true, reason: None, reply: Some(reply) },
                    Err(error) => match ctx.last_create_error.as_ref().filter(|e| unknown_service(e)) {
                        Some(rpc) => Verdict {
                            usable: false,
                            reason: Some(format!(
                                "the shim does not serve {}, the Task service containerd {} speaks to it (it answered Create with {rpc})",
                                shim.reply.api.service(),
                                target.profile.line
                            )),
                            reply: Some(reply),
                        },
                        // Reachable, but no container can be created as this containerd creates them (e.g. the OCI
                        // runtime refuses the config.json this line writes).
                        None => Verdict {
                            usable: false,
                            reason: Some(format!(
                                "Create of a trivial container (config.json as containerd {} writes it) fails: {}",
                                target.profile.line,
                                first_line(&error)
                            )),
                            reply: Some(reply),
                        },
                    },
                }
            }
        };
        ctx.teardown().await;
        let _ = ctx.probe.check();
        // The probe runs alone (before any trial, one candidate at a time; `doctor` too): the namespace directory
        // its shim made under the candidate's state_root can go if it is empty.
        if let Some(state) = &ctx.probe.runtime_state {
            let _ = std::fs::remove_dir(state);
        }
        verdict
    });
    runtime.shutdown_timeout(Duration::from_millis(200));
    verdict
}

fn first_line(error: &CaseError) -> String {
    match error {
        CaseError::Fail(message) | CaseError::Skip(message) => message.lines().next().unwrap_or("").to_string(),
    }
}

/// A status that means "no such service": Go ttrpc answers UNIMPLEMENTED "service X", Rust ttrpc INVALID_ARGUMENT
/// "X service does not exist".
fn unknown_service(error: &crate::shim::task::RpcError) -> bool {
    use containerd_shim_protos::ttrpc::Code;
    match error {
        crate::shim::task::RpcError::Status { code, message, .. } => {
            (*code == Code::UNIMPLEMENTED && message.contains("service"))
                || (*code == Code::INVALID_ARGUMENT && message.contains("service does not exist"))
        }
        _ => false,
    }
}

/// Trials in parallel by default: twice the CPUs. About half of a trial is spent waiting on its shim (the `run`
/// summary's "waiting on shims" share), so one trial per CPU left a 2-core host a quarter idle; the self-test
/// runs every candidate's catalogue at 8 on 2 cores.
fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).saturating_mul(2)
}
