//! What a case works with: the run's environment (work dir, shared rootfs, the resolved candidate) and the case's
//! own context, which launches shims, creates containers and guarantees teardown.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use containerd_shim_protos::api::{CreateTaskRequest, ExecProcessRequest};
use containerd_shim_protos::protobuf::{well_known_types::any::Any, Message};
use containerd_shim_protos::shim::oci::Options;

use crate::bundle::{self, Bundle, ContainerConfig, IoSpec, ProcessIo};
use crate::candidate::{Bootstrap, Candidate};
use crate::cases::{fail, CaseError};
use crate::shim::events::EventSink;
use crate::shim::instance::{RuntimeSweep, Shim, TeardownReport};
use crate::shim::launch::{self, LaunchSpec};
use crate::shim::task::TaskClient;

/// The mock's fault annotation (shims/mock/FAULTS.md).
pub const FAULT_ANNOTATION: &str = "io.shimcompat.mock.faults";

/// The same faults for binary-level actions that read no bundle (`-v`), passed in the environment.
pub const MOCK_FAULTS_ENV: &str = "SHIMCOMPAT_MOCK_FAULTS";

/// Set when the run is interrupted: no new shim is launched after it.
pub static STOPPING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// One run's shared state: created once, torn down once.
pub struct RunEnv {
    pub workdir: PathBuf,
    /// Short directory for sockets (shim sockets are `<dir>/<64 hex>`; sun_path holds ~107 bytes).
    pub sockets: PathBuf,
    pub rootfs: PathBuf,
    pub namespace: String,
    /// Short, unique per run: part of every container id so concurrent runs never collide.
    pub nonce: String,
    pub keep: bool,
    counter: AtomicU64,
    /// Every shim socket of the run (shims that ignore socket_dir put theirs in /run/containerd/s), so that an
    /// interrupted run can remove them.
    pub shim_sockets: std::sync::Mutex<Vec<PathBuf>>,
}

#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("creating the work directory under {0}: {1}")]
    Workdir(String, std::io::Error),
    #[error(transparent)]
    Bundle(#[from] bundle::BundleError),
}

impl RunEnv {
    /// Creates a private work directory (short: socket paths must stay under ~108 bytes) and the shared rootfs.
    pub fn create(base: Option<&Path>, keep: bool) -> Result<RunEnv, EnvError> {
        let base = base.map(Path::to_path_buf).unwrap_or_else(std::env::temp_dir);
        let nonce = format!("{:x}", (std::process::id() as u64) << 16 ^ now_nanos() & 0xffff_ffff);
        let nonce = nonce[nonce.len().saturating_sub(6)..].to_string();
        let workdir = base.join(format!("shimcompat-{nonce}"));
        std::fs::create_dir_all(&workdir).map_err(|e| EnvError::Workdir(base.display().to_string(), e))?;
        for sub in ["b", "logs"] {
            std::fs::create_dir_all(workdir.join(sub)).map_err(|e| EnvError::Workdir(base.display().to_string(), e))?;
        }
        let sockets = std::env::temp_dir().join(format!("scs-{nonce}"));
        for sub in ["e", "s"] {
            std::fs::create_dir_all(sockets.join(sub)).map_err(|e| EnvError::Workdir(sockets.display().to_string(), e))?;
        }
        let rootfs = workdir.join("rootfs");
        bundle::prepare_rootfs(&rootfs)?;
        Ok(RunEnv {
            workdir,
            sockets,
            rootfs,
            namespace: "shimcompat".into(),
            nonce,
            keep,
            counter: AtomicU64::new(0),
            shim_sockets: Default::default(),
        })
    }

    pub fn next(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Where runc-style runtimes keep state for this run (so the harness can sweep it).
    pub fn runtime_root(&self) -> PathBuf {
        self.workdir.join("runtime")
    }

    pub fn cleanup(&self) {
        for socket in self.shim_sockets.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = std::fs::remove_file(socket);
        }
        let _ = std::fs::remove_dir_all(&self.sockets);
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.workdir);
        }
    }
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// The candidate as resolved for this run.
#[derive(Debug)]
pub struct Target {
    pub candidate: Candidate,
    pub binary: PathBuf,
    /// Faults injected into every bundle (mutation testing of the harness against the mock).
    pub faults: Option<String>,
    /// The stdin form `start` accepted, once known (see Candidate::bootstrap), and why params were refused.
    pub bootstrap: std::sync::Mutex<Option<(Bootstrap, Option<String>)>>,
}

impl Target {
    pub fn new(candidate: Candidate, binary: PathBuf, faults: Option<String>) -> Target {
        let known = candidate.bootstrap.map(|mode| (mode, None));
        Target { candidate, binary, faults, bootstrap: std::sync::Mutex::new(known) }
    }

    /// The bootstrap form to use: the candidate's, or what an earlier start in this run found.
    pub fn bootstrap_mode(&self) -> Option<Bootstrap> {
        self.bootstrap.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|(mode, _)| *mode)
    }

    fn learn_bootstrap(&self, mode: Bootstrap, refusal: Option<String>) {
        let mut known = self.bootstrap.lock().unwrap_or_else(|p| p.into_inner());
        if known.is_none() {
            *known = Some((mode, refusal));
        }
    }

    pub fn timeout(&self, base: Duration) -> Duration {
        base.mul_f64(self.candidate.timeout_scale)
    }

    pub fn supports(&self, feature: &str) -> bool {
        !self.candidate.unsupported.contains(feature)
    }

    /// The runtime sweep for runc-style OCI runtimes.
    pub fn sweep(&self, env: &RunEnv) -> Option<RuntimeSweep> {
        let options = self.candidate.runc_options.as_ref()?;
        let binary = if options.binary_name.is_empty() { "runc".to_string() } else { options.binary_name.clone() };
        let root = if options.root.is_empty() { env.runtime_root() } else { PathBuf::from(&options.root) };
        Some(RuntimeSweep { binary, root })
    }

    /// The runtime options Any sent with Create and at start.
    pub fn options_any(&self, env: &RunEnv) -> Option<Any> {
        let options = self.candidate.runc_options.as_ref()?;
        let mut message = Options::new();
        message.binary_name = options.binary_name.clone();
        message.root =
            if options.root.is_empty() { env.runtime_root().display().to_string() } else { options.root.clone() };
        message.systemd_cgroup = options.systemd_cgroup;
        message.no_pivot_root = options.no_pivot_root;
        message.no_new_keyring = options.no_new_keyring;
        message.shim_cgroup = options.shim_cgroup.clone();
        let mut any = Any::new();
        any.type_url = "containerd.runc.v1.Options".into();
        any.value = message.write_to_bytes().ok()?;
        Some(any)
    }
}

/// Deadlines the harness uses, before the candidate's scale.
pub mod deadline {
    use std::time::Duration;
    pub const RPC: Duration = Duration::from_secs(10);
    pub const START: Duration = Duration::from_secs(10);
    pub const EXIT: Duration = Duration::from_secs(10);
    pub const EVENT: Duration = Duration::from_secs(5);
    pub const TEARDOWN: Duration = Duration::from_secs(3);
}

/// A container created through a shim: its id, init pid and the harness side of its stdio.
pub struct Task {
    pub id: String,
    pub pid: u32,
    pub io: ProcessIo,
}

/// One case's context.
pub struct Ctx {
    pub env: Arc<RunEnv>,
    pub target: Arc<Target>,
    pub case_id: String,
    /// Unique per case: shims launched by this case share it, so grouping works within a case only.
    pub grpc_address: String,
    shims: Vec<Arc<Shim>>,
    pub reports: Vec<TeardownReport>,
    /// Put in the environment of every shim and container process of this case (see leaks.rs).
    pub marker: String,
    /// Everything the case created, for the leak check after teardown.
    pub probe: crate::leaks::Probe,
}

impl Ctx {
    pub fn new(env: Arc<RunEnv>, target: Arc<Target>, case_id: &str) -> Ctx {
        let grpc_address = env.sockets.join(format!("grpc-{}.sock", env.next())).display().to_string();
        let marker = format!("{}-{}", env.nonce, env.next());
        let probe = crate::leaks::Probe {
            marker: marker.clone(),
            runtime_state: target.sweep(&env).map(|sweep| sweep.state_root(&env.namespace)),
            ..Default::default()
        };
        Ctx { env, target, case_id: case_id.into(), grpc_address, shims: Vec::new(), reports: Vec::new(), marker, probe }
    }

    pub fn timeout(&self, base: Duration) -> Duration {
        self.target.timeout(base)
    }

    /// A fresh container id, readable in evidence and valid for containerd (`[A-Za-z0-9]+([._-][A-Za-z0-9]+)*`).
    pub fn new_id(&self) -> String {
        let area = self.case_id.split("::").next().unwrap_or("case");
        format!("{area}-{}-{}", self.env.next(), self.env.nonce)
    }

    /// Writes a bundle for `config` (with the run's faults) and returns it with its id.
    pub fn bundle(&self, id: &str, config: &ContainerConfig) -> Result<Bundle, CaseError> {
        let mut config = config.clone();
        if let Some(faults) = &self.target.faults {
            config.annotations.insert(FAULT_ANNOTATION.into(), faults.clone());
        }
        config.env.push(self.marker_env());
        let spec = bundle::build_spec(&config, &self.env.rootfs, &format!("/shimcompat/{id}"));
        let log = self.env.workdir.join("logs").join(format!("{id}.log"));
        let bundle = Bundle::create(&self.env.workdir.join("b"), id, spec, log)
            .map_err(|e| fail(format!("preparing the bundle: {e}")))?;
        Ok(bundle)
    }

    /// `SHIMCOMPAT_TRIAL=<marker>`.
    pub fn marker_env(&self) -> String {
        format!("{}={}", crate::leaks::MARKER_VAR, self.marker)
    }

    /// Records what a bundle brings into the world, for the leak check (call for every bundle handed to a shim).
    pub fn track(&mut self, bundle_dir: &Path, id: &str) {
        self.probe.bundle_dirs.push(bundle_dir.to_path_buf());
        self.probe.container_ids.push(id.to_string());
    }

    pub fn launch_spec(&self, id: &str, bundle_dir: &Path, events: &Path) -> LaunchSpec {
        let candidate = &self.target.candidate;
        LaunchSpec {
            binary: self.target.binary.clone(),
            id: id.into(),
            namespace: self.env.namespace.clone(),
            bundle: bundle_dir.to_path_buf(),
            grpc_address: self.grpc_address.clone(),
            ttrpc_address: events.to_path_buf(),
            socket_dir: Some(self.env.sockets.join("s")),
            options: self.target.options_any(&self.env),
            bootstrap_params: self.target.bootstrap_mode() != Some(Bootstrap::Legacy),
            debug: false,
            timeout: self.timeout(deadline::START),
            env: candidate
                .env
                .iter()
                .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
                .chain(std::iter::once((crate::leaks::MARKER_VAR.to_string(), self.marker.clone())))
                .collect(),
        }
    }

    /// Prepares a bundle, starts the shim for it and connects; the shim is torn down when the case ends.
    pub async fn launch(&mut self, config: &ContainerConfig) -> Result<Arc<Shim>, CaseError> {
        let id = self.new_id();
        self.launch_with_id(&id, config).await
    }

    pub async fn launch_with_id(&mut self, id: &str, config: &ContainerConfig) -> Result<Arc<Shim>, CaseError> {
        if STOPPING.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(fail("the run was interrupted"));
        }
        let bundle = self.bundle(id, config)?;
        self.track(&bundle.dir, id);
        let events_path = self.env.sockets.join("e").join(format!("{}.sock", self.env.next()));
        let events = Arc::new(
            EventSink::serve(&events_path).await.map_err(|e| fail(format!("starting the events server: {e}")))?,
        );
        let mut spec = self.launch_spec(id, &bundle.dir, &events_path);
        let probing = self.target.bootstrap_mode().is_none();
        let mut started = launch::start(&spec).await;
        if probing {
            match &started {
                Ok(_) => self.target.learn_bootstrap(Bootstrap::Params, None),
                Err(launch::LaunchError::StartFailed { stderr, .. }) => {
                    // A shim that predates BootstrapParams reads stdin as an options Any and fails on them.
                    let refusal = stderr.clone();
                    crate::shim::instance::processes_in(std::slice::from_ref(&bundle.dir))
                        .into_iter()
                        .for_each(|pid| drop(crate::shim::instance::kill_pid(pid)));
                    spec.bootstrap_params = false;
                    started = launch::start(&spec).await;
                    if started.is_ok() {
                        self.target.learn_bootstrap(Bootstrap::Legacy, Some(refusal));
                    }
                }
                Err(_) => {}
            }
        }
        let reply = match started {
            Ok(reply) => reply,
            Err(error) => {
                let tail = bundle.log_tail(20);
                self.abandon(bundle, &events).await;
                return Err(fail(format!("shim start failed: {error}\nshim log:\n{tail}")));
            }
        };
        let task = match TaskClient::connect(&reply.address, reply.api, &self.env.namespace, self.timeout(deadline::RPC)).await {
            Ok(task) => task,
            Err(error) => {
                let tail = bundle.log_tail(20);
                self.abandon(bundle, &events).await;
                return Err(fail(format!("connecting to {}: {error}\nshim log:\n{tail}", reply.address)));
            }
        };
        let connect = match task.connect_rpc(id).await {
            Ok(connect) => connect,
            Err(error) => {
                // Keep the shim for teardown (kill by cwd), but report.
                let tail = bundle.log_tail(20);
                self.abandon(bundle, &events).await;
                return Err(fail(format!("Connect failed: {error}\nshim log:\n{tail}")));
            }
        };
        if let Some(socket) = launch::socket_path(&reply.address) {
            self.env.shim_sockets.lock().unwrap_or_else(|p| p.into_inner()).push(socket.clone());
            self.probe.sockets.push(socket);
        }
        let shim = Arc::new(Shim {
            launch: spec,
            reply,
            task,
            events,
            bundles: std::sync::Mutex::new(vec![bundle]),
            connect,
            live_ids: Default::default(),
        });
        self.shims.push(shim.clone());
        Ok(shim)
    }

    /// Cleans up after a shim that never became usable.
    async fn abandon(&mut self, mut bundle: Bundle, events: &EventSink) {
        let killed: Vec<String> = crate::shim::instance::processes_in(std::slice::from_ref(&bundle.dir))
            .into_iter()
            .filter_map(crate::shim::instance::kill_pid)
            .collect();
        if let Some(sweep) = self.target.sweep(&self.env) {
            sweep.sweep(std::slice::from_ref(&bundle.id)).await;
        }
        events.stop().await;
        bundle.remove();
        self.reports.push(TeardownReport { killed, ..Default::default() });
    }

    /// Creates the shim's own container with the given stdio.
    pub async fn create(&mut self, shim: &Shim, io: IoSpec) -> Result<Task, CaseError> {
        let id = shim.id().to_string();
        let bundle_dir = shim.bundle_dir();
        self.create_in(shim, &id, &bundle_dir, io).await
    }

    pub async fn create_in(&mut self, shim: &Shim, id: &str, bundle_dir: &Path, io: IoSpec) -> Result<Task, CaseError> {
        let terminal = {
            let bundles = shim.bundles.lock().unwrap_or_else(|p| p.into_inner());
            bundles.iter().find(|b| b.id == id).and_then(|b| b.spec.process().as_ref().and_then(|p| p.terminal())).unwrap_or(false)
        };
        let mut process_io = ProcessIo::create(&bundle_dir.join("io"), "init", io)
            .map_err(|e| fail(format!("creating stdio fifos: {e}")))?;
        let (stdin, stdout, stderr) = process_io.paths();
        let request = CreateTaskRequest {
            id: id.into(),
            bundle: bundle_dir.display().to_string(),
            terminal,
            stdin,
            stdout,
            stderr: if terminal { String::new() } else { stderr },
            options: self.target.options_any(&self.env).into(),
            ..Default::default()
        };
        let reply = shim.task.create(&request).await.map_err(|e| fail(format!("{e}\nshim log:\n{}", shim.log_tail(20))))?;
        shim.note_created(id);
        if io.stdout || io.stderr {
            process_io.seal();
        }
        Ok(Task { id: id.into(), pid: reply.pid, io: process_io })
    }

    /// Exec request for the payload with `steps`.
    pub fn exec_request(&self, id: &str, exec_id: &str, steps: &[&str], terminal: bool, io: &ProcessIo) -> ExecProcessRequest {
        let steps: Vec<String> = steps.iter().map(|s| s.to_string()).collect();
        let process = bundle::payload_process(&steps, terminal, &[self.marker_env()]);
        let mut spec = Any::new();
        spec.type_url = "types.containerd.io/opencontainers/runtime-spec/1/Process".into();
        spec.value = serde_json::to_vec(&process).unwrap_or_default();
        let (stdin, stdout, stderr) = io.paths();
        ExecProcessRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            terminal,
            stdin,
            stdout,
            stderr: if terminal { String::new() } else { stderr },
            spec: Some(spec).into(),
            ..Default::default()
        }
    }

    /// Evidence for a failure: each shim's events and the tail of its log.
    pub fn evidence(&self) -> String {
        let mut out = String::new();
        for shim in &self.shims {
            out.push_str(&format!(
                "shim {} (pid {}, {} at {}, task API {}):\n  events:\n{}\n  log tail:\n{}\n",
                shim.id(),
                shim.shim_pid(),
                shim.reply.form,
                shim.reply.address,
                shim.reply.api,
                crate::shim::events::render(&shim.events.snapshot()).replace('\n', "\n  "),
                indent(&shim.log_tail(15), "    ")
            ));
        }
        out
    }

    /// Tears down every shim the case launched; always runs, pass or fail.
    pub async fn teardown(&mut self) {
        let sweep = self.target.sweep(&self.env);
        let grace = self.timeout(deadline::TEARDOWN);
        for shim in std::mem::take(&mut self.shims) {
            let report = shim.teardown(sweep.as_ref(), grace).await;
            self.reports.push(report);
        }
    }
}

fn indent(text: &str, prefix: &str) -> String {
    if text.is_empty() {
        return format!("{prefix}(empty)");
    }
    text.lines().map(|l| format!("{prefix}{l}")).collect::<Vec<_>>().join("\n")
}
