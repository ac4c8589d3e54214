//! What a case works with: the run's environment (work dir, shared rootfs, the resolved candidate) and the case's
//! own context, which launches shims, creates containers and guarantees teardown.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use containerd_shim_protos::api::{CreateTaskRequest, ExecProcessRequest};
use containerd_shim_protos::protobuf::{well_known_types::any::Any, Message};
use containerd_shim_protos::shim::oci::Options;

use crate::bundle::{self, Bundle, ContainerConfig, IoSpec, ProcessIo, RootfsForm};
use crate::candidate::Candidate;
use crate::profile::{Line, Profile};
use crate::shim::events::EventSink;
use crate::shim::instance::{RuntimeSweep, Shim, TeardownReport};
use crate::shim::launch::{self, LaunchSpec};
use crate::shim::task::{RpcResult, TaskClient};

/// Why a case did not pass.
#[derive(Debug)]
pub enum CaseError {
    /// The shim did not behave as containerd expects: what was expected, what came back.
    Fail(String),
    /// Not applicable to this candidate or host (with the reason). Never counted as a pass.
    Skip(String),
}

impl From<crate::shim::task::RpcError> for CaseError {
    fn from(error: crate::shim::task::RpcError) -> Self {
        CaseError::Fail(error.to_string())
    }
}

pub fn fail(message: impl Into<String>) -> CaseError {
    CaseError::Fail(message.into())
}

/// The mock's fault annotation (shims/mock/FAULTS.md).
pub const FAULT_ANNOTATION: &str = "io.shimcompat.mock.faults";

/// The same faults for binary-level actions that read no bundle (`-v`), passed in the environment.
pub const MOCK_FAULTS_ENV: &str = "SHIMCOMPAT_MOCK_FAULTS";

/// Set when the run is interrupted: no new shim is launched after it.
pub static STOPPING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// One run's shared state: created once, torn down once.
pub struct RunEnv {
    pub workdir: PathBuf,
    /// How containers get their root filesystem: overlay mounts in Create as root, else an absolute root.path.
    pub rootfs_form: RootfsForm,
    /// Short directory for sockets (shim sockets are `<dir>/<64 hex>`; sun_path holds ~107 bytes).
    pub sockets: PathBuf,
    pub rootfs: PathBuf,
    pub namespace: String,
    /// Short, unique per run: part of every container id so concurrent runs never collide.
    pub nonce: String,
    pub keep: bool,
    /// `-debug` on `start` (containerd passes it when it logs at debug level).
    pub shim_debug: bool,
    counter: AtomicU64,
    /// Every shim socket of the run (shims that ignore socket_dir put theirs in /run/containerd/s), so that an
    /// interrupted run can remove them.
    pub shim_sockets: std::sync::Mutex<Vec<PathBuf>>,
    /// The run's tracking cgroup, as root (see leaks::Tracking).
    pub tracking: Option<crate::process::cgroup::Tracking>,
    /// The run's record in the host's registry, held while it runs (see registry.rs).
    registration: std::sync::Mutex<Option<crate::registry::Registration>>,
}

#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("creating the work directory under {0}: {1}")]
    Workdir(String, std::io::Error),
    #[error(transparent)]
    Bundle(#[from] bundle::BundleError),
    #[error(
        "no directory for the run's sockets: a shim socket is <dir>/scs-<nonce>/s/<64 hex> and must fit a socket \
         address ({SUN_PATH_MAX} bytes), but the work dir {0}, $TMPDIR ({1}) and /tmp are all too long or not writable"
    )]
    SocketDir(String, String),
}

/// What a socket address holds (sun_path is 108 bytes with the final NUL).
pub const SUN_PATH_MAX: usize = 107;

/// The longest name the run puts under its socket dir: `s/<64 hex>` (a shim socket as containerd names it).
const LONGEST_SOCKET: usize = "/scs-000000/s/".len() + 64;

/// Where the run's sockets go: under the work dir if a shim socket's path fits there, else under $TMPDIR, else
/// /tmp (containerd keeps its sockets short the same way, in /run/containerd/s).
fn socket_base(work_base: &Path) -> Option<PathBuf> {
    let fits = |dir: &Path| dir.is_absolute() && dir.as_os_str().len() + LONGEST_SOCKET <= SUN_PATH_MAX;
    let absolute = |dir: &Path| {
        if dir.is_absolute() {
            dir.to_path_buf()
        } else {
            std::env::current_dir().unwrap_or_default().join(dir)
        }
    };
    [absolute(work_base), std::env::temp_dir(), PathBuf::from("/tmp")].into_iter().find(|dir| fits(dir) && dir.is_dir())
}

/// Free space a memory-backed work dir must have to be chosen by default (a run's bundles, overlay upper dirs and
/// logs take a few MiB; a container's 64 MiB /dev/shm is passed over).
const TMPFS_MIN_FREE: u64 = 512 << 20;

/// Where the work directory goes by default: `$TMPDIR` if set, else a memory-backed file system (containerd keeps
/// its bundles in its state dir, `/run/containerd`, a tmpfs on most hosts): `$XDG_RUNTIME_DIR`, `/run` (root) or
/// `/dev/shm` when it is a writable tmpfs that allows exec and has room; else `/tmp`. On a disk, creating and
/// removing every trial's bundle cost about 0.3 s of a 2.5 s mock catalogue here.
pub fn default_work_base() -> PathBuf {
    if std::env::var_os("TMPDIR").is_some_and(|d| !d.is_empty()) {
        return std::env::temp_dir();
    }
    let runtime_dir = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()).map(PathBuf::from);
    let root_run = crate::host::is_root().then(|| PathBuf::from("/run"));
    runtime_dir
        .into_iter()
        .chain(root_run)
        .chain(std::iter::once(PathBuf::from("/dev/shm")))
        .find(|dir| usable_tmpfs(dir))
        .unwrap_or_else(std::env::temp_dir)
}

/// A directory on a tmpfs this process can write to, that allows exec (the payload runs from the rootfs when
/// there is no overlay) and has `TMPFS_MIN_FREE` free.
fn usable_tmpfs(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else { return false };
    // SAFETY: statfs/statvfs write into the zeroed structs given, from a NUL-terminated path.
    let (fs, vfs) = unsafe {
        let mut fs: libc::statfs = std::mem::zeroed();
        let mut vfs: libc::statvfs = std::mem::zeroed();
        if libc::statfs(path.as_ptr(), &mut fs) != 0 || libc::statvfs(path.as_ptr(), &mut vfs) != 0 {
            return false;
        }
        (fs, vfs)
    };
    let writable = nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK).is_ok();
    // fsblkcnt_t and c_ulong are u64 here, narrower on 32-bit targets.
    #[allow(clippy::unnecessary_cast)]
    let free = (vfs.f_bavail as u64).saturating_mul(vfs.f_frsize as u64);
    fs.f_type == libc::TMPFS_MAGIC
        && writable
        && vfs.f_flag & libc::ST_NOEXEC == 0
        && vfs.f_flag & libc::ST_RDONLY == 0
        && free >= TMPFS_MIN_FREE
}

impl RunEnv {
    /// Creates a private work directory (short: socket paths must stay under ~108 bytes) and the shared rootfs.
    pub fn create(base: Option<&Path>, keep: bool) -> Result<RunEnv, EnvError> {
        let base = base.map(Path::to_path_buf).unwrap_or_else(default_work_base);
        // Shims run in their bundle: every path handed to them must be absolute.
        let base = if base.is_absolute() { base } else { std::env::current_dir().unwrap_or_default().join(base) };
        let nonce = format!("{:x}", (std::process::id() as u64) << 16 ^ now_nanos() & 0xffff_ffff);
        let nonce = nonce[nonce.len().saturating_sub(6)..].to_string();
        let workdir = base.join(format!("shimcompat-{nonce}"));
        std::fs::create_dir_all(&workdir).map_err(|e| EnvError::Workdir(base.display().to_string(), e))?;
        for sub in ["b", "logs"] {
            std::fs::create_dir_all(workdir.join(sub)).map_err(|e| EnvError::Workdir(base.display().to_string(), e))?;
        }
        let sockets = socket_base(&base)
            .ok_or_else(|| EnvError::SocketDir(base.display().to_string(), std::env::temp_dir().display().to_string()))?
            .join(format!("scs-{nonce}"));
        for sub in ["e", "s"] {
            std::fs::create_dir_all(sockets.join(sub))
                .map_err(|e| EnvError::Workdir(sockets.display().to_string(), e))?;
        }
        let rootfs = workdir.join("rootfs");
        bundle::prepare_rootfs(&rootfs)?;
        let nonce_for_tracking = nonce.clone();
        let rootfs_form =
            if crate::host::is_root() { RootfsForm::Overlay } else { RootfsForm::Absolute(rootfs.clone()) };
        let tracking = crate::process::cgroup::Tracking::create(&nonce_for_tracking);
        let registration = crate::registry::Registration::create(&crate::registry::Record {
            pid: std::process::id(),
            nonce: nonce_for_tracking.clone(),
            workdir: workdir.clone(),
            sockets: sockets.clone(),
            tracking: tracking.as_ref().map(|t| t.root.clone()),
            keep,
        });
        Ok(RunEnv {
            workdir,
            rootfs_form,
            sockets,
            rootfs,
            namespace: "shimcompat".into(),
            nonce,
            keep,
            shim_debug: false,
            counter: AtomicU64::new(0),
            shim_sockets: Default::default(),
            tracking,
            registration: std::sync::Mutex::new(registration),
        })
    }

    pub fn next(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// `<state>/io.containerd.runtime.v2.task/<ns>`: where bundles go, as containerd lays them out.
    pub fn bundle_parent(&self) -> PathBuf {
        self.workdir.join("state").join("io.containerd.runtime.v2.task").join(&self.namespace)
    }

    /// `<root>/io.containerd.runtime.v2.task/<ns>`: the targets of the bundles' `work` links.
    pub fn work_parent(&self) -> PathBuf {
        self.workdir.join("root").join("io.containerd.runtime.v2.task").join(&self.namespace)
    }

    /// Where runc-style runtimes keep state for this run (so the harness can sweep it).
    pub fn runtime_root(&self) -> PathBuf {
        self.workdir.join("runtime")
    }

    /// Removes the run's sockets and (unless kept) its work dir, never through a mount; returns what it found
    /// still mounted there (detached now) or had to leave, one line each.
    pub fn cleanup(&self) -> Vec<String> {
        for socket in self.shim_sockets.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = crate::fstree::remove_socket(socket);
        }
        let mut found: Vec<String> = match &self.tracking {
            Some(tracking) => {
                tracking.remove().into_iter().map(|l| format!("process {l} (in the run's tracking cgroup)")).collect()
            }
            None => Vec::new(),
        };
        found.extend(crate::fstree::remove_tree(&self.sockets).lines());
        if !self.keep {
            found.extend(crate::fstree::remove_tree(&self.workdir).lines());
        } else {
            // Kept for inspection, but nothing stays mounted in it.
            found.extend(crate::fstree::detach_all(&self.workdir).into_iter().map(|m| format!("mount {m} (detached)")));
        }
        if let Some(registration) = self.registration.lock().unwrap_or_else(|p| p.into_inner()).take() {
            registration.finish();
        }
        found
    }

    /// A shim socket of the run: removed at the end, and recorded so that a later clean-up finds it should this
    /// run be killed.
    pub fn note_shim_socket(&self, socket: &Path) {
        self.shim_sockets.lock().unwrap_or_else(|p| p.into_inner()).push(socket.to_path_buf());
        if let Some(registration) = self.registration.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            registration.add_socket(socket);
        }
    }
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// The candidate as resolved for this run, under one containerd profile.
#[derive(Debug)]
pub struct Target {
    pub candidate: Candidate,
    pub binary: PathBuf,
    /// Faults injected into every bundle (mutation testing of the harness against the mock).
    pub faults: Option<String>,
    /// The containerd line the harness behaves as.
    pub profile: &'static Profile,
    /// Whether the candidate's `start` reply is usable by this containerd line, once probed.
    pub verdict: std::sync::Mutex<Option<Verdict>>,
}

/// Whether a containerd line can use the candidate at all: its `start` reply parsed and dialled as that line does.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Verdict {
    pub usable: bool,
    /// Why not, in the words of what failed (containerd's own where it has them).
    pub reason: Option<String>,
    /// What `start` answered (form, version, Task API), when it answered.
    pub reply: Option<String>,
}

impl Target {
    pub fn new(candidate: Candidate, binary: PathBuf, faults: Option<String>, line: Line) -> Target {
        Target { candidate, binary, faults, profile: line.profile(), verdict: Default::default() }
    }

    /// `<candidate>@<line>`: the prefix of every trial of this target.
    pub fn label(&self) -> String {
        format!("{}@{}", self.candidate.name, self.profile.line)
    }

    pub fn verdict(&self) -> Option<Verdict> {
        self.verdict.lock().unwrap_or_else(|p| p.into_inner()).clone()
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

    /// Where the candidate's runtime keeps per-container state for `namespace`: the runc root's namespace directory
    /// for a runc-family candidate, else `<state_root>/<namespace>` if the candidate file names one.
    pub fn runtime_state(&self, env: &RunEnv) -> Option<PathBuf> {
        self.sweep(env)
            .map(|sweep| sweep.state_root(&env.namespace))
            .or_else(|| self.candidate.state_root.as_ref().map(|root| root.join(&env.namespace)))
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

/// The harness's own bounds, before the candidate's scale (what goes on the wire is the profile's).
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
    /// The pid Create returned.
    pub pid: u32,
    /// The pid Connect returned right after Create: the one containerd reports for the task.
    pub connect_pid: u32,
    pub io: ProcessIo,
    /// How long the Create call took, and the Connect right after it (for `shimcompat bench`).
    pub create_rpc: Duration,
    pub connect_rpc: Duration,
}

/// The pids containerd learns when it starts a process: Start's reply, and State's (the one it reports).
#[derive(Debug, Clone, Copy)]
pub struct StartedPids {
    pub start: u32,
    pub state: u32,
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
    /// The last refused Create (the verdict probe tells "no such service" from other refusals).
    pub last_create_error: Option<crate::shim::task::RpcError>,
    /// Sockets of shims abandoned before they were usable: removed with them.
    abandoned_sockets: Vec<PathBuf>,
    /// containerd's gRPC API at `grpc_address` (shim/api.rs), served from the case's first `start` on.
    api: Option<crate::shim::api::ApiStub>,
    /// The runtime options sent in `start`'s stdin and in Create (the candidate's; a case may replace them
    /// before it launches, as a containerd configured differently would send).
    pub options: Option<Any>,
    /// Time the case spent waiting on its shims: their `start`, and every Task API call (see `waited_on_shims`).
    shim_time: Duration,
}

impl Ctx {
    pub fn new(env: Arc<RunEnv>, target: Arc<Target>, case_id: &str) -> Ctx {
        let grpc_address = env.sockets.join(format!("grpc-{}.sock", env.next())).display().to_string();
        let marker = format!("{}-{}", env.nonce, env.next());
        let options = target.options_any(&env);
        let probe = crate::leaks::Probe {
            marker: marker.clone(),
            runtime_state: target.runtime_state(&env),
            cgroup: env.tracking.as_ref().and_then(|t| t.trial(&marker)),
            ..Default::default()
        };
        Ctx {
            env,
            target,
            case_id: case_id.into(),
            grpc_address,
            shims: Vec::new(),
            reports: Vec::new(),
            marker,
            probe,
            last_create_error: None,
            abandoned_sockets: Vec::new(),
            api: None,
            options,
            shim_time: Duration::ZERO,
        }
    }

    /// Time spent waiting on the case's shims so far: each `start` (to the address) and every Task API call,
    /// teardown's included once it has run (overlapping calls each count). The rest of a case's time is the
    /// harness's own (bundles, fifos, reading output, sleeps, teardown's process checks) or the runtime's.
    pub fn waited_on_shims(&self) -> Duration {
        self.shim_time + self.shims.iter().map(|s| s.timings.start + s.task.busy()).sum::<Duration>()
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
        let mut spec = bundle::build_spec(&config, &self.env.rootfs_form, &format!("/{}/{id}", self.env.namespace));
        spec.set_version(self.target.profile.oci_version.to_string());
        let log = self.env.workdir.join("logs").join(format!("{id}.log"));
        let snapshot =
            (self.env.rootfs_form == RootfsForm::Overlay).then(|| self.env.workdir.join("snapshots").join(id));
        let mut bundle = Bundle::create(&self.env.bundle_parent(), &self.env.work_parent(), id, spec, log, snapshot)
            .map_err(|e| fail(format!("preparing the bundle: {e}")))?;
        bundle.keep = self.env.keep;
        Ok(bundle)
    }

    /// `SHIMCOMPAT_TRIAL=<marker>`.
    pub fn marker_env(&self) -> String {
        format!("{}={}", crate::process::MARKER_VAR, self.marker)
    }

    /// Records what a bundle brings into the world, for the leak check (call for every bundle handed to a shim).
    pub fn track(&mut self, bundle_dir: &Path, id: &str) {
        self.probe.bundle_dirs.push(bundle_dir.to_path_buf());
        self.probe.container_ids.push(id.to_string());
    }

    /// Serves containerd's API at the case's `-address` (once per case): a shim may dial it from `start` on.
    pub fn serve_api(&mut self) -> Result<(), CaseError> {
        if self.api.is_none() {
            let stub = crate::shim::api::ApiStub::serve(Path::new(&self.grpc_address))
                .map_err(|e| fail(format!("starting containerd's API for the shim's -address: {e}")))?;
            self.api = Some(stub);
        }
        Ok(())
    }

    /// The calls shims of this case made to containerd's API.
    pub fn api_calls(&self) -> Vec<crate::shim::api::ApiCall> {
        self.api.as_ref().map(|api| api.calls()).unwrap_or_default()
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
            options: self.options.clone(),
            profile: self.target.profile,
            debug: self.env.shim_debug,
            publish_binary: crate::host::shimcompat_binary()
                .or_else(|| std::env::current_exe().ok())
                .unwrap_or_else(|| PathBuf::from("/bin/true")),
            timeout: self.timeout(deadline::START),
            cgroup: self.probe.cgroup.clone(),
            env: candidate
                .env
                .iter()
                .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
                .chain(std::iter::once((crate::process::MARKER_VAR.to_string(), self.marker.clone())))
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
        self.serve_api()?;
        let bundle = self.bundle(id, config)?;
        self.track(&bundle.dir, id);
        let events_path = self.env.sockets.join("e").join(format!("{}.sock", self.env.next()));
        let events = Arc::new(
            EventSink::serve(&events_path).await.map_err(|e| fail(format!("starting the events server: {e}")))?,
        );
        let spec = self.launch_spec(id, &bundle.dir, &events_path);
        // Noted before `start`: a `start` that fails after making its socket leaves it there (removed at the end).
        for socket in launch::predicted_sockets(&spec) {
            self.env.note_shim_socket(&socket);
        }
        let began = std::time::Instant::now();
        let reply = match launch::start(&spec).await {
            Ok(reply) => reply,
            Err(error) => {
                let tail = bundle.log_tail(20);
                // A reply this containerd cannot read may still name a live server's socket (containerd leaks it).
                if let launch::LaunchError::RefusedByProfile { address: Some(address), .. } = &error {
                    if let Some(socket) = launch::socket_path(address) {
                        self.env.note_shim_socket(&socket);
                        self.abandoned_sockets.push(socket);
                    }
                }
                self.abandon(bundle, &events).await;
                return Err(fail(format!("shim start failed: {error}\nshim log:\n{tail}")));
            }
        };
        let started = began.elapsed();
        // From here the shim has a socket, whatever happens next.
        if let Some(socket) = launch::socket_path(&reply.address) {
            self.env.note_shim_socket(&socket);
            self.probe.sockets.push(socket);
        }
        let began = std::time::Instant::now();
        let task = match TaskClient::connect(
            &reply.address,
            reply.api,
            &self.env.namespace,
            self.timeout(deadline::RPC),
            self.target.profile,
        )
        .await
        {
            Ok(task) => task,
            Err(error) => {
                let tail = bundle.log_tail(20);
                self.abandon(bundle, &events).await;
                if let Some(socket) = launch::socket_path(&reply.address) {
                    let _ = crate::fstree::remove_socket(&socket);
                }
                return Err(fail(format!(
                    "connecting to {} as containerd {} would (Task API {}): {error}\nshim log:\n{tail}",
                    reply.address, self.target.profile.line, reply.api
                )));
            }
        };
        let dial = began.elapsed();
        let shim = Arc::new(Shim {
            launch: spec,
            reply,
            task,
            events,
            bundles: std::sync::Mutex::new(vec![bundle]),
            connect: Default::default(),
            live_ids: Default::default(),
            timings: crate::shim::instance::LaunchTimings { start: started, dial },
        });
        self.shims.push(shim.clone());
        Ok(shim)
    }

    /// Cleans up after a shim that never became usable.
    async fn abandon(&mut self, mut bundle: Bundle, events: &EventSink) {
        let killed: Vec<String> = crate::process::processes_in(std::slice::from_ref(&bundle.dir))
            .into_iter()
            .filter_map(crate::process::kill_pid)
            .collect();
        if let Some(sweep) = self.target.sweep(&self.env) {
            sweep.sweep(std::slice::from_ref(&bundle.id)).await;
        }
        events.stop().await;
        // The server is gone (killed above): its socket goes too.
        for socket in std::mem::take(&mut self.abandoned_sockets) {
            let _ = crate::fstree::remove_socket(&socket);
        }
        let mounts_left = bundle.remove();
        self.reports.push(TeardownReport { killed, mounts_left, ..Default::default() });
    }

    /// Creates the shim's own container with the given stdio.
    pub async fn create(&mut self, shim: &Shim, io: IoSpec) -> Result<Task, CaseError> {
        let id = shim.id().to_string();
        let bundle_dir = shim.bundle_dir();
        self.create_in(shim, &id, &bundle_dir, io).await
    }

    pub async fn create_in(&mut self, shim: &Shim, id: &str, bundle_dir: &Path, io: IoSpec) -> Result<Task, CaseError> {
        self.create_with_rootfs(shim, id, bundle_dir, io, None).await
    }

    /// Create with the given rootfs mounts instead of the run's own (None: the overlay mount of the bundle's
    /// snapshot where the run mounts rootfs, else none).
    pub async fn create_with_rootfs(
        &mut self,
        shim: &Shim,
        id: &str,
        bundle_dir: &Path,
        io: IoSpec,
        rootfs: Option<Vec<containerd_shim_protos::api::Mount>>,
    ) -> Result<Task, CaseError> {
        self.create_shaped(shim, id, bundle_dir, io, rootfs, None).await
    }

    /// Creates the shim's own container with stdout and stderr given as URIs (`file://`, `binary://`) instead of
    /// fifos, as `ctr run --log-uri` and nerdctl send them (both streams the same URI); stdin as `io` says.
    pub async fn create_with_outputs(
        &mut self,
        shim: &Shim,
        io: IoSpec,
        stdout: &str,
        stderr: &str,
    ) -> Result<Task, CaseError> {
        let id = shim.id().to_string();
        let bundle_dir = shim.bundle_dir();
        let io = IoSpec { stdout: false, stderr: false, ..io };
        self.create_shaped(shim, &id, &bundle_dir, io, None, Some((stdout.to_string(), stderr.to_string()))).await
    }

    async fn create_shaped(
        &mut self,
        shim: &Shim,
        id: &str,
        bundle_dir: &Path,
        io: IoSpec,
        rootfs: Option<Vec<containerd_shim_protos::api::Mount>>,
        outputs: Option<(String, String)>,
    ) -> Result<Task, CaseError> {
        let (terminal, snapshot) = {
            let bundles = shim.bundles.lock().unwrap_or_else(|p| p.into_inner());
            let bundle = bundles.iter().find(|b| b.id == id);
            (
                bundle.and_then(|b| b.spec.process().as_ref().and_then(|p| p.terminal())).unwrap_or(false),
                bundle.and_then(|b| b.snapshot.clone()),
            )
        };
        let mut process_io = ProcessIo::create(&bundle_dir.join("io"), "init", io)
            .map_err(|e| fail(format!("creating stdio fifos: {e}")))?;
        let (stdin, mut stdout, mut stderr) = process_io.paths();
        if let Some((out, err)) = outputs {
            (stdout, stderr) = (out, err);
        }
        let rootfs = rootfs.unwrap_or_else(|| {
            snapshot.map(|snapshot| bundle::overlay_mount(&self.env.rootfs, &snapshot)).into_iter().collect()
        });
        let request = CreateTaskRequest {
            id: id.into(),
            bundle: bundle_dir.display().to_string(),
            rootfs,
            terminal,
            stdin,
            stdout,
            stderr: if terminal { String::new() } else { stderr },
            options: self.options.clone().into(),
            ..Default::default()
        };
        let began = std::time::Instant::now();
        let reply = match shim.task.create(&request).await {
            Ok(reply) => reply,
            Err(error) => {
                // containerd's TaskManager.Create: a failed Create is followed by a Delete on a background context
                // with the cleanup deadline (teardown then shuts the shim down and runs the `delete` action).
                let _ = shim.task.delete_after_failed_create(id).await;
                self.last_create_error = Some(error.clone());
                return Err(fail(format!("{error}\nshim log:\n{}", shim.log_tail(20))));
            }
        };
        let create_rpc = began.elapsed();
        shim.note_created(id);
        if io.stdout || io.stderr {
            process_io.seal();
        }
        // services/tasks Create: the pid it reports is PID(), i.e. Connect's task_pid, asked right after Create.
        let began = std::time::Instant::now();
        let connect = shim.task.connect_rpc(id).await.map_err(|e| {
            fail(format!(
                "Connect right after Create failed (containerd {} asks Connect for the task pid it reports: services/tasks Create -> PID): {e}",
                self.target.profile.line
            ))
        })?;
        let connect_rpc = began.elapsed();
        shim.record_connect(&connect);
        Ok(Task {
            id: id.into(),
            pid: reply.pid,
            connect_pid: connect.task_pid,
            io: process_io,
            create_rpc,
            connect_rpc,
        })
    }

    /// Start as containerd's tasks service does it: Start, then State for the pid it reports (local.go Start).
    pub async fn start_process(&self, shim: &Shim, id: &str, exec_id: &str) -> RpcResult<StartedPids> {
        if !exec_id.is_empty() {
            // The tasks service looks an exec up (State) before every operation on it (Task.Process).
            shim.task.state(id, exec_id).await?;
        }
        let started = shim.task.start(id, exec_id).await?;
        let state = shim.task.state(id, exec_id).await?;
        Ok(StartedPids { start: started.pid, state: state.pid })
    }

    /// Wait on a process as containerd's runtime does: for the init, Connect first (shimTask.Wait calls PID()); for an
    /// exec, the State lookup the tasks service makes first.
    pub async fn wait_process(
        &self,
        shim: &Shim,
        id: &str,
        exec_id: &str,
    ) -> RpcResult<containerd_shim_protos::api::WaitResponse> {
        if exec_id.is_empty() {
            let connect = shim.task.connect_rpc(id).await?;
            shim.record_connect(&connect);
        } else {
            shim.task.state(id, exec_id).await?;
        }
        shim.task.wait(id, exec_id, self.timeout(deadline::EXIT)).await
    }

    /// Exec request for the payload with `steps`.
    pub fn exec_request(
        &self,
        id: &str,
        exec_id: &str,
        steps: &[&str],
        terminal: bool,
        io: &ProcessIo,
    ) -> ExecProcessRequest {
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
        let calls = self.api_calls();
        if !calls.is_empty() {
            let lines: Vec<String> = calls.iter().take(30).map(|c| c.summary()).collect();
            out.push_str(&format!(
                "containerd API calls at -address ({}):\n{}\n",
                calls.len(),
                indent(&lines.join("\n"), "  ")
            ));
        }
        for shim in &self.shims {
            let rpcs = shim.task.transcript();
            let shown = &rpcs[rpcs.len().saturating_sub(30)..];
            out.push_str(&format!(
                "shim {} (pid {}, {} at {}, task API {}):\n  rpcs{}:\n{}\n  events:\n{}\n  log tail:\n{}\n",
                shim.id(),
                shim.shim_pid(),
                shim.reply.form,
                shim.reply.address,
                shim.reply.api,
                if shown.len() < rpcs.len() {
                    format!(" (last {} of {})", shown.len(), rpcs.len())
                } else {
                    String::new()
                },
                indent(&shown.join("\n"), "    "),
                {
                    // The last 50 events: a flood must not flood the evidence too.
                    let events = shim.events.snapshot();
                    let skipped = events.len().saturating_sub(50) + shim.events.dropped();
                    let mut text = crate::shim::events::render(&events[events.len().saturating_sub(50)..]);
                    if skipped > 0 {
                        text = format!("  ({skipped} earlier or dropped events not shown)\n{text}");
                    }
                    text.replace('\n', "\n  ")
                },
                indent(&shim.log_tail(15), "    ")
            ));
        }
        out
    }

    /// Tears down every shim the case launched, as containerd would; always runs, pass or fail. First every shim
    /// is stopped (Delete, Shutdown, exit), then what is still running of the case is noted, then containerd's
    /// `delete` action runs for every bundle of a shim that went (where this line runs it after a disconnect),
    /// and last whatever did not go by itself is forced.
    pub async fn teardown(&mut self) {
        let sweep = self.target.sweep(&self.env);
        let grace = self.timeout(deadline::TEARDOWN);
        let shims = std::mem::take(&mut self.shims);
        let mut gone = Vec::new();
        for shim in &shims {
            gone.push(shim.stop(grace).await);
        }
        self.shim_time += shims.iter().map(|s| s.timings.start + s.task.busy()).sum::<Duration>();
        let mut report = TeardownReport::default();
        if self.target.profile.delete_action_on_disconnect && gone.iter().any(|g| *g) {
            // Processes killed just before (a SIGKILLed container still exiting) get a moment to finish dying.
            let settle = std::time::Instant::now() + Duration::from_millis(300);
            let mut left = crate::process::marked_processes(&self.marker);
            while !left.is_empty() && std::time::Instant::now() < settle {
                tokio::time::sleep(Duration::from_millis(10)).await;
                left = crate::process::marked_processes(&self.marker);
            }
            for leftover in left {
                report.left_after_shutdown.push(format!("pid {leftover} ({})", crate::process::cmdline(leftover)));
            }
            for (shim, gone) in shims.iter().zip(&gone) {
                if *gone {
                    shim.delete_actions(&mut report).await;
                }
            }
        }
        for shim in &shims {
            shim.force_cleanup(sweep.as_ref(), &mut report).await;
        }
        self.reports.push(report);
    }
}

fn indent(text: &str, prefix: &str) -> String {
    if text.is_empty() {
        return format!("{prefix}(empty)");
    }
    text.lines().map(|l| format!("{prefix}{l}")).collect::<Vec<_>>().join("\n")
}
