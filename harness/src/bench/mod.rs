//! `shimcompat bench`: a shim's speed, latency, density and leaks, measured at the shim boundary.
//!
//! Four phases per candidate, each on fresh shims driven exactly as the run's cases drive them (the same `Ctx`,
//! containerd line profile, teardown and leak check):
//! - **latency**: N lifecycles (lifecycle.rs), every operation recorded in an hdrhistogram; interleaved one for one
//!   with the references (a private containerd's `ctr run --rm`, the bare OCI runtime's `run`) where they exist, so
//!   that noise on the host hits both sides alike;
//! - **throughput**: lifecycles per second with 1, 2, 4, ... running at once (one shim each), and in one grouped
//!   shim where the candidate supports grouping;
//! - **density**: RSS and PSS (/proc/<pid>/smaps_rollup) of the shims, and of everything running under them
//!   (runtime processes, container inits), as 1, 10, 50, 100 containers are held;
//! - **soak**: K lifecycles through one long-lived grouped shim (or K shims when the candidate cannot group),
//!   sampling the shim's fds, threads and RSS and the host's mounts, run cgroups and shim sockets, with the growth
//!   per 100 lifecycles.
//!
//! Numbers are reported, never asserted: the only verdicts are errors (a lifecycle that failed) and leftovers.
pub mod lifecycle;
pub mod reference;
pub mod render;
pub mod stats;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::context::{Ctx, RunEnv, Target};
use crate::select::Planned;
use stats::{Dist, Memory, Recorder};

pub const SCHEMA: &str = "shimcompat.bench/v1";

/// What to measure and how much.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Lifecycles for the latency distributions.
    pub samples: usize,
    /// Concurrency levels for throughput.
    pub concurrency: Vec<usize>,
    /// Lifecycles per concurrency level, per concurrent worker.
    pub per_worker: usize,
    /// Container counts held for density.
    pub density: Vec<usize>,
    /// Lifecycles in the soak (0: no soak).
    pub soak: usize,
    /// Run the references (ctr run --rm through a private containerd; bare OCI runtime run) alongside.
    pub references: bool,
    pub work_base: Option<PathBuf>,
}

impl BenchConfig {
    pub fn full() -> BenchConfig {
        BenchConfig {
            samples: 100,
            concurrency: vec![1, 2, 4, 8],
            per_worker: 10,
            density: vec![1, 10, 50, 100],
            soak: 1000,
            references: true,
            work_base: None,
        }
    }

    /// A minute or less on any candidate: enough to see that every phase works.
    pub fn quick() -> BenchConfig {
        BenchConfig {
            samples: 10,
            concurrency: vec![1, 2],
            per_worker: 3,
            density: vec![1, 5],
            soak: 50,
            references: true,
            work_base: None,
        }
    }
}

/// The bench's results model (`shimcompat.bench/v1`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchReport {
    pub schema: String,
    pub tool_version: String,
    pub git_revision: String,
    pub host: crate::host::HostFingerprint,
    pub command: Vec<String>,
    pub started_at: u64,
    pub finished_at: u64,
    pub candidates: Vec<CandidateBench>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CandidateBench {
    pub name: String,
    pub containerd: crate::profile::Line,
    pub binary: String,
    pub version: Option<String>,
    /// Latency of each operation, one shim per lifecycle.
    pub ops: Vec<OpDist>,
    /// The same in one grouped shim (empty when the candidate does not support grouping).
    pub grouped_ops: Vec<OpDist>,
    pub references: Vec<ReferenceDist>,
    pub throughput: Vec<Throughput>,
    pub density: Vec<DensityPoint>,
    pub soak: Option<Soak>,
    /// Phases or references that could not run, with the reason.
    pub skipped: Vec<String>,
    /// Lifecycles that failed (the bench goes on with the next phase after 3 in one phase).
    pub errors: Vec<String>,
    /// What a lifecycle left behind (processes, mounts, sockets, runtime state), as the run's leak check finds it.
    pub leftovers: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OpDist {
    pub op: String,
    #[serde(flatten)]
    pub dist: Dist,
}

/// A reference measured in the same run, interleaved with the candidate's lifecycles.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReferenceDist {
    /// e.g. "ctr run --rm (containerd 1.6.20, io.containerd.runc.v2)".
    pub what: String,
    #[serde(flatten)]
    pub dist: Dist,
    /// The candidate's `run_to_exit` p50 (ctr run --rm's sequence straight at the shim) over this reference's p50.
    pub lifecycle_ratio: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Throughput {
    /// "per-shim" (one shim per container) or "grouped" (every container in one shim).
    pub mode: String,
    pub concurrency: usize,
    pub lifecycles: usize,
    pub seconds: f64,
    pub per_second: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DensityPoint {
    pub mode: String,
    pub containers: usize,
    pub shim_processes: usize,
    pub shim: Memory,
    /// Everything running under the shims: the runtime's processes and the container inits.
    pub under: Memory,
    pub under_processes: usize,
    /// (shim + under) PSS per container.
    pub pss_per_container_kib: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Soak {
    pub mode: String,
    pub lifecycles: usize,
    pub seconds: f64,
    pub samples: Vec<SoakSample>,
    /// Change per 100 lifecycles from the sample after the first tenth (warm-up) to the last.
    pub growth_per_100: SoakGrowth,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SoakSample {
    pub after: usize,
    /// The long-lived shim's (grouped soak only).
    pub shim_fds: Option<u64>,
    pub shim_threads: Option<u64>,
    pub shim_rss_kib: Option<u64>,
    pub host_mounts: u64,
    pub run_cgroups: u64,
    pub shim_sockets: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SoakGrowth {
    pub shim_fds: Option<f64>,
    pub shim_threads: Option<f64>,
    pub shim_rss_kib: Option<f64>,
    pub host_mounts: f64,
    pub run_cgroups: f64,
    pub shim_sockets: f64,
}

/// Progress on stderr (a long bench must show it is alive).
fn progress(text: &str) {
    eprintln!("bench: {text}");
}

fn stopping() -> bool {
    crate::context::STOPPING.load(std::sync::atomic::Ordering::SeqCst)
}

/// Benchmarks every ready plan. An unavailable plan is an error before anything runs (a bench of nothing is no
/// result).
pub fn bench(plans: Vec<Planned>, config: &BenchConfig) -> Result<BenchReport, String> {
    let started_at = crate::report::unix_now();
    let session = crate::run::Session::open(config.work_base.as_deref(), false, false).map_err(|e| e.to_string())?;
    let env = session.env.clone();
    let mut candidates = Vec::new();
    for plan in &plans {
        let Planned::Ready(target) = plan else { continue };
        let verdict = crate::run::judge(target, &env);
        if !verdict.usable {
            let reason = verdict.reason.clone().unwrap_or_default();
            session.close(&plans);
            return Err(format!("{}: containerd {} cannot use this shim: {reason}", plan.label(), target.profile.line));
        }
        *target.verdict.lock().unwrap_or_else(|p| p.into_inner()) = Some(verdict);
        candidates.push(bench_target(target, &env, config));
        if stopping() {
            break;
        }
    }
    session.main_finishes();
    if stopping() {
        // As an interrupted run does: every process of the session goes before its files do.
        for pid in crate::process::run_processes(&env.nonce) {
            crate::process::kill_pid(pid);
        }
    }
    let leftovers = session.close(&plans);
    if let Some(last) = candidates.last_mut() {
        last.leftovers.extend(leftovers.into_iter().map(|l| format!("at the end of the bench: {l}")));
    }
    Ok(BenchReport {
        schema: SCHEMA.into(),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        git_revision: env!("SHIMCOMPAT_GIT_REVISION").into(),
        host: crate::host::fingerprint(),
        command: std::env::args().collect(),
        started_at,
        finished_at: crate::report::unix_now(),
        candidates,
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime")
}

/// The run's leak check for one finished context.
fn check(ctx: &Ctx, into: &mut Vec<String>) {
    for line in crate::run::hygiene(ctx) {
        if into.len() < 20 {
            into.push(line);
        }
    }
}

fn bench_target(target: &Arc<Target>, env: &Arc<RunEnv>, config: &BenchConfig) -> CandidateBench {
    let label = format!("{}@{}", target.candidate.name, target.profile.line);
    let exec = target.supports("exec");
    let grouping = target.supports("grouping");
    let mut out = CandidateBench {
        name: target.candidate.name.clone(),
        containerd: target.profile.line,
        binary: target.binary.display().to_string(),
        version: crate::host::version_of(&target.binary, "-v"),
        ops: Vec::new(),
        grouped_ops: Vec::new(),
        references: Vec::new(),
        throughput: Vec::new(),
        density: Vec::new(),
        soak: None,
        skipped: Vec::new(),
        errors: Vec::new(),
        leftovers: Vec::new(),
    };
    if !exec {
        out.skipped.push("exec_start, exec_exit: the candidate declares exec unsupported".into());
    }
    // Latency, interleaved with the references.
    let mut references = Vec::new();
    if config.references {
        for found in reference::available(target, env) {
            match found {
                Ok(reference) => references.push((reference, Recorder::default(), (0usize, String::new()))),
                Err(why) => out.skipped.push(why),
            }
        }
    } else {
        out.skipped.push("references: not asked for (--no-references)".into());
    }
    progress(&format!("{label}: latency, {} lifecycles (one shim each)", config.samples));
    let mut recorder = Recorder::default();
    let rt = runtime();
    let mut errors = 0;
    for i in 0..config.samples {
        if stopping() || errors >= 3 {
            break;
        }
        let result = rt.block_on(async {
            let mut ctx = Ctx::new(env.clone(), target.clone(), "bench::lifecycle");
            let result = lifecycle::per_shim(&mut ctx, &mut recorder, exec).await;
            ctx.teardown().await;
            check(&ctx, &mut out.leftovers);
            result
        });
        if let Err(e) = result {
            errors += 1;
            out.errors.push(format!("latency lifecycle {}: {}", i + 1, first_line(&e)));
        }
        let result = rt.block_on(async {
            let mut ctx = Ctx::new(env.clone(), target.clone(), "bench::run_to_exit");
            let result = lifecycle::run_to_exit(&mut ctx, &mut recorder).await;
            ctx.teardown().await;
            check(&ctx, &mut out.leftovers);
            result
        });
        if let Err(e) = result {
            errors += 1;
            out.errors.push(format!("run-to-exit lifecycle {}: {}", i + 1, first_line(&e)));
        }
        for (reference, recorded, failed) in references.iter_mut() {
            match reference.once() {
                Ok(took) => recorded.record("run", took),
                Err(e) => {
                    failed.0 += 1;
                    if failed.1.is_empty() {
                        failed.1 = e;
                    }
                }
            }
        }
        if (i + 1) % 25 == 0 {
            progress(&format!("{label}: latency {}/{}", i + 1, config.samples));
        }
    }
    out.ops = op_dists(&recorder);
    let lifecycle_p50 = out.ops.iter().find(|o| o.op == lifecycle::op::RUN_TO_EXIT).map(|o| o.dist.p50_us);
    for (reference, recorded, failed) in references.iter_mut() {
        // A reference run that failed is not the candidate's failure: it is named, with how often, not counted.
        if failed.0 > 0 {
            out.skipped.push(format!(
                "reference {}: {} of {} runs failed (not in its distribution); the first: {}",
                reference.what(),
                failed.0,
                config.samples,
                failed.1.lines().next().unwrap_or_default()
            ));
        }
        if let Some((_, dist)) = recorded.dists().into_iter().next() {
            let ratio = lifecycle_p50.map(|l| l as f64 / dist.p50_us.max(1) as f64).unwrap_or(0.0);
            out.references.push(ReferenceDist { what: reference.what(), dist, lifecycle_ratio: round2(ratio) });
        }
    }
    drop(references);
    if grouping && !stopping() {
        progress(&format!("{label}: latency, {} lifecycles in one grouped shim", config.samples));
        let mut recorder = Recorder::default();
        rt.block_on(async {
            let mut ctx = Ctx::new(env.clone(), target.clone(), "bench::grouped");
            match lifecycle::group(&mut ctx).await {
                Ok(group) => {
                    let mut errors = 0;
                    for i in 0..config.samples {
                        if stopping() || errors >= 3 {
                            break;
                        }
                        if let Err(e) = lifecycle::grouped(&mut ctx, &group, &mut recorder, exec).await {
                            errors += 1;
                            out.errors.push(format!("grouped lifecycle {}: {}", i + 1, first_line(&e)));
                        }
                    }
                }
                Err(e) => out.errors.push(format!("grouped shim: {}", first_line(&e))),
            }
            ctx.teardown().await;
            check(&ctx, &mut out.leftovers);
        });
        out.grouped_ops = op_dists(&recorder);
    } else if !grouping {
        out.skipped
            .push("grouped latency, throughput, density and soak: the candidate declares grouping unsupported".into());
    }
    throughput(target, env, config, exec, grouping, &mut out);
    density(target, env, config, grouping, &mut out);
    soak(target, env, config, exec, grouping, &mut out);
    out
}

fn op_dists(recorder: &Recorder) -> Vec<OpDist> {
    let dists = recorder.dists();
    // Lifecycle order, whatever order the first lifecycle recorded them in.
    lifecycle::op::LEGEND
        .iter()
        .filter_map(|(op, _)| dists.iter().find(|(name, _)| name == op))
        .map(|(op, dist)| OpDist { op: op.clone(), dist: dist.clone() })
        .collect()
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

fn first_line(error: &crate::cases::CaseError) -> String {
    match error {
        crate::cases::CaseError::Fail(m) | crate::cases::CaseError::Skip(m) => m.lines().next().unwrap_or("").into(),
    }
}

/// Lifecycles per second at each concurrency level: `c` lifecycles in flight at once on one runtime thread (the
/// harness's side of each is a few RPCs; the shims, runtimes and containers run in parallel).
fn throughput(
    target: &Arc<Target>,
    env: &Arc<RunEnv>,
    config: &BenchConfig,
    exec: bool,
    grouping: bool,
    out: &mut CandidateBench,
) {
    let label = format!("{}@{}", target.candidate.name, target.profile.line);
    let modes: &[&str] = if grouping { &["per-shim", "grouped"] } else { &["per-shim"] };
    for mode in modes {
        for &c in &config.concurrency {
            if stopping() {
                return;
            }
            let n = c * config.per_worker;
            progress(&format!("{label}: throughput {mode}, {n} lifecycles, {c} at a time"));
            let rt = runtime();
            let local = tokio::task::LocalSet::new();
            let grouped = *mode == "grouped";
            let (seconds, done, errors, leftovers) = local.block_on(&rt, async {
                let mut owner = Ctx::new(env.clone(), target.clone(), "bench::throughput");
                let group = if grouped {
                    match lifecycle::group(&mut owner).await {
                        Ok(group) => Some(Arc::new(group)),
                        Err(e) => {
                            owner.teardown().await;
                            return (0.0, 0, vec![format!("grouped shim: {}", first_line(&e))], Vec::new());
                        }
                    }
                } else {
                    None
                };
                let began = Instant::now();
                let mut handles = Vec::new();
                let per_worker = config.per_worker;
                for _ in 0..c {
                    let (env, target, group, grpc) =
                        (env.clone(), target.clone(), group.clone(), owner.grpc_address.clone());
                    handles.push(tokio::task::spawn_local(async move {
                        let (mut done, mut errors, mut leftovers) = (0usize, Vec::new(), Vec::new());
                        let mut ctxs = Vec::new();
                        for _ in 0..per_worker {
                            if stopping() || errors.len() >= 3 {
                                break;
                            }
                            let mut scratch = Recorder::default();
                            let mut ctx = Ctx::new(env.clone(), target.clone(), "bench::throughput");
                            let result = match &group {
                                Some(group) => {
                                    // The group's shim is found by its -address: the owner's.
                                    ctx.grpc_address = grpc.clone();
                                    lifecycle::grouped(&mut ctx, group, &mut scratch, exec).await
                                }
                                None => lifecycle::per_shim(&mut ctx, &mut scratch, exec).await,
                            };
                            ctx.teardown().await;
                            match result {
                                Ok(()) => done += 1,
                                Err(e) => errors.push(first_line(&e)),
                            }
                            if group.is_none() {
                                check(&ctx, &mut leftovers);
                            } else {
                                ctxs.push(ctx);
                            }
                        }
                        (done, errors, leftovers, ctxs)
                    }));
                }
                let (mut done, mut errors, mut leftovers, mut ctxs) = (0, Vec::new(), Vec::new(), Vec::new());
                for handle in handles {
                    if let Ok((d, e, l, c)) = handle.await {
                        done += d;
                        errors.extend(e);
                        leftovers.extend(l);
                        ctxs.extend(c);
                    }
                }
                let seconds = began.elapsed().as_secs_f64();
                owner.teardown().await;
                check(&owner, &mut leftovers);
                // Grouped containers' bundles belonged to the group's shim: checked once it is gone.
                for ctx in &ctxs {
                    check(ctx, &mut leftovers);
                }
                (seconds, done, errors, leftovers)
            });
            out.errors.extend(errors.into_iter().take(3).map(|e| format!("throughput {mode} x{c}: {e}")));
            out.leftovers.extend(leftovers);
            if done > 0 {
                out.throughput.push(Throughput {
                    mode: mode.to_string(),
                    concurrency: c,
                    lifecycles: done,
                    seconds: round3(seconds),
                    per_second: round2(done as f64 / seconds.max(1e-6)),
                });
            }
        }
    }
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

/// Memory as containers are held: one shim each, and all in one grouped shim.
fn density(target: &Arc<Target>, env: &Arc<RunEnv>, config: &BenchConfig, grouping: bool, out: &mut CandidateBench) {
    let label = format!("{}@{}", target.candidate.name, target.profile.line);
    let mut levels = config.density.clone();
    levels.sort_unstable();
    levels.dedup();
    let Some(&most) = levels.last() else { return };
    let modes: &[&str] = if grouping { &["per-shim", "grouped"] } else { &["per-shim"] };
    for mode in modes {
        if stopping() {
            return;
        }
        progress(&format!("{label}: density {mode}, holding up to {most} containers"));
        let rt = runtime();
        rt.block_on(async {
            let mut ctx = Ctx::new(env.clone(), target.clone(), "bench::density");
            let mut shims: Vec<Arc<crate::shim::instance::Shim>> = Vec::new();
            let mut tasks = Vec::new();
            let group = if *mode == "grouped" {
                match lifecycle::group(&mut ctx).await {
                    Ok(group) => {
                        shims.push(group.shim.clone());
                        Some(group)
                    }
                    Err(e) => {
                        out.errors.push(format!("density grouped: {}", first_line(&e)));
                        None
                    }
                }
            } else {
                None
            };
            if *mode == "grouped" && group.is_none() {
                ctx.teardown().await;
                return;
            }
            'levels: for &level in &levels {
                while tasks.len() < level {
                    if stopping() {
                        break 'levels;
                    }
                    let held = hold_one(&mut ctx, group.as_ref()).await;
                    match held {
                        Ok((shim, task)) => {
                            if group.is_none() {
                                shims.push(shim);
                            }
                            tasks.push(task);
                        }
                        Err(e) => {
                            out.errors.push(format!(
                                "density {mode} container {}: {}",
                                tasks.len() + 1,
                                first_line(&e)
                            ));
                            break 'levels;
                        }
                    }
                }
                // A moment for what the containers' start set off (runtime processes exiting) to settle.
                tokio::time::sleep(Duration::from_millis(200)).await;
                out.density.push(measure_density(mode, level, &shims));
            }
            ctx.teardown().await;
            check(&ctx, &mut out.leftovers);
        });
    }
}

/// Starts one more container (its init waiting forever) and returns its shim and task.
async fn hold_one(
    ctx: &mut Ctx,
    group: Option<&lifecycle::Group>,
) -> Result<(Arc<crate::shim::instance::Shim>, crate::context::Task), crate::cases::CaseError> {
    let config = crate::bundle::ContainerConfig::new(&["ready", "forever"]);
    let (shim, mut task) = match group {
        Some(group) => {
            let (id, dir) = crate::cases::cli::join_group(ctx, &group.shim, &group.name, &["ready", "forever"]).await?;
            let task = ctx.create_in(&group.shim, &id, &dir, crate::bundle::IoSpec::OUT).await?;
            (group.shim.clone(), task)
        }
        None => {
            let shim = ctx.launch(&config).await?;
            let task = ctx.create(&shim, crate::bundle::IoSpec::OUT).await?;
            (shim, task)
        }
    };
    ctx.start_process(&shim, &task.id, "").await?;
    crate::cases::util::read_until(ctx, &mut task.io, "ready\n", "a held container starting").await?;
    Ok((shim, task))
}

fn measure_density(mode: &str, containers: usize, shims: &[Arc<crate::shim::instance::Shim>]) -> DensityPoint {
    let pids: Vec<u32> = shims.iter().map(|s| s.shim_pid()).filter(|p| *p > 0).collect();
    let mut shim = Memory::default();
    for pid in &pids {
        shim += stats::memory(*pid).unwrap_or_default();
    }
    let below = stats::descendants(&pids);
    let mut under = Memory::default();
    for pid in &below {
        under += stats::memory(*pid).unwrap_or_default();
    }
    DensityPoint {
        mode: mode.into(),
        containers,
        shim_processes: pids.len(),
        shim,
        under,
        under_processes: below.len(),
        pss_per_container_kib: (shim.pss_kib + under.pss_kib) / containers.max(1) as u64,
    }
}

/// K lifecycles, sampled ten times: through one grouped shim where the candidate groups, else one shim each.
fn soak(
    target: &Arc<Target>,
    env: &Arc<RunEnv>,
    config: &BenchConfig,
    exec: bool,
    grouping: bool,
    out: &mut CandidateBench,
) {
    if config.soak == 0 || stopping() {
        return;
    }
    let label = format!("{}@{}", target.candidate.name, target.profile.line);
    let mode = if grouping { "grouped" } else { "per-shim" };
    progress(&format!("{label}: soak, {} lifecycles ({mode})", config.soak));
    let every = (config.soak / 10).max(1);
    let rt = runtime();
    let began = Instant::now();
    let sample = |after: usize, shim: Option<u32>| SoakSample {
        after,
        shim_fds: shim.and_then(stats::fds),
        shim_threads: shim.and_then(stats::threads),
        shim_rss_kib: shim.and_then(stats::memory).map(|m| m.rss_kib),
        host_mounts: stats::host_mounts(),
        run_cgroups: crate::process::cgroup::run_cgroups(&env.nonce).len() as u64,
        shim_sockets: stats::entries(&env.sockets.join("s"))
            + stats::entries(std::path::Path::new("/run/containerd/s")),
    };
    let mut samples = Vec::new();
    let mut done = 0;
    rt.block_on(async {
        let mut owner = Ctx::new(env.clone(), target.clone(), "bench::soak");
        let group = if grouping {
            match lifecycle::group(&mut owner).await {
                Ok(group) => Some(group),
                Err(e) => {
                    out.errors.push(format!("soak grouped shim: {}", first_line(&e)));
                    owner.teardown().await;
                    return;
                }
            }
        } else {
            None
        };
        let shim_pid = group.as_ref().map(|g| g.shim.shim_pid());
        samples.push(sample(0, shim_pid));
        let mut errors = 0;
        let mut workers = Vec::new();
        for i in 0..config.soak {
            if stopping() || errors >= 3 {
                break;
            }
            let mut scratch = Recorder::default();
            let mut ctx = Ctx::new(env.clone(), target.clone(), "bench::soak");
            let result = match &group {
                Some(group) => {
                    ctx.grpc_address = owner.grpc_address.clone();
                    lifecycle::grouped(&mut ctx, group, &mut scratch, exec).await
                }
                None => lifecycle::per_shim(&mut ctx, &mut scratch, exec).await,
            };
            ctx.teardown().await;
            if group.is_some() {
                workers.push(ctx);
            } else {
                check(&ctx, &mut out.leftovers);
            }
            match result {
                Ok(()) => done += 1,
                Err(e) => {
                    errors += 1;
                    out.errors.push(format!("soak lifecycle {}: {}", i + 1, first_line(&e)));
                }
            }
            if (i + 1) % every == 0 {
                samples.push(sample(i + 1, shim_pid));
                progress(&format!("{label}: soak {}/{}", i + 1, config.soak));
            }
        }
        owner.teardown().await;
        check(&owner, &mut out.leftovers);
        for ctx in &workers {
            check(ctx, &mut out.leftovers);
        }
    });
    let seconds = began.elapsed().as_secs_f64();
    // Growth after warm-up: from the first sample after the first tenth (caches, lazily started goroutines and
    // threads) to the last; with fewer than three samples, from the start.
    let from = if samples.len() >= 3 { samples.get(1) } else { samples.first() };
    let growth = match (from, samples.last()) {
        (Some(first), Some(last)) if last.after > first.after => {
            let per = 100.0 / (last.after - first.after) as f64;
            let grew = |a: u64, b: u64| round2((b as f64 - a as f64) * per);
            let grew_opt = |a: Option<u64>, b: Option<u64>| a.zip(b).map(|(a, b)| grew(a, b));
            SoakGrowth {
                shim_fds: grew_opt(first.shim_fds, last.shim_fds),
                shim_threads: grew_opt(first.shim_threads, last.shim_threads),
                shim_rss_kib: grew_opt(first.shim_rss_kib, last.shim_rss_kib),
                host_mounts: grew(first.host_mounts, last.host_mounts),
                run_cgroups: grew(first.run_cgroups, last.run_cgroups),
                shim_sockets: grew(first.shim_sockets, last.shim_sockets),
            }
        }
        _ => SoakGrowth::default(),
    };
    out.soak =
        Some(Soak { mode: mode.into(), lifecycles: done, seconds: round3(seconds), samples, growth_per_100: growth });
}
