//! A private containerd for end-to-end tests (harness/tests/daemon/ re-exports it) and for `shimcompat bench`.
//!
//! [`Lab::start`] runs containerd 1.6.20 (the host's packages) or 1.7.24 (Debian 13's binaries, unpacked under
//! `/var/cache/shimcompat/trixie/x` by `.ci/run`) from a temporary directory: its own root, state, grpc/ttrpc/debug
//! sockets, opt directory and legacy runtime root, the CRI plugin disabled, a unique namespace, and an environment
//! whose `PATH` starts with the lab's `shims/` directory, where a test links the shims it wants containerd to find by
//! name ([`Lab::install_shim`]). The daemon's own Go runc v2 shim is linked there too, so each containerd runs the
//! shim of its own release, and `runc` is the host's (Debian 13's runc needs glibc 2.38).
//!
//! `ctr` always gets `--address`, `--namespace` and (for `run`/`task exec`) `--fifo-dir` inside the lab; every call
//! has a deadline. [`Lab::restart`] stops containerd with SIGTERM, leaving shims alive, and starts it again on the
//! same directories. Dropping the lab kills everything it started (containerd, shims, containers: by pid, by
//! command line, root or working directory under the lab, and through `runc delete -f` for the runc state of the
//! lab's namespace), unmounts everything mounted under the lab, removes the shim sockets in `/run/containerd/s` the
//! lab's shims created, runc's state directory for the namespace, the namespace's cgroups, and the lab itself.
pub mod image;

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write as _};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sha2::{Digest, Sha256};

pub use crate::host::is_executable;

/// How long one ctr call may take unless told otherwise.
pub const CTR_DEADLINE: Duration = Duration::from_secs(15);
const START_DEADLINE: Duration = Duration::from_secs(20);
const TRIXIE: &str = "/var/cache/shimcompat/trixie/x";
/// The system's directories, after the lab's `shims/`, on containerd's PATH.
const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Labs alive in this process: only the last one removes shared, empty directories such as /run/containerd/s.
static LIVE_LABS: AtomicUsize = AtomicUsize::new(0);
/// The roots of the labs alive in this process, for [`sweep_live_labs`].
static LIVE_ROOTS: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());
static SEQUENCE: AtomicUsize = AtomicUsize::new(0);

/// A containerd release this host can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Daemon {
    /// Debian 12's containerd 1.6.20: /usr/bin/containerd, /usr/bin/ctr (`apt-get install -y containerd runc`).
    V1_6,
    /// Debian 13's containerd 1.7.24, unpacked under /var/cache/shimcompat/trixie/x (see `.ci/run`).
    V1_7,
}

/// Where a daemon's binaries are.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub containerd: PathBuf,
    pub ctr: PathBuf,
    /// The Go runc v2 shim of the same release.
    pub runc_shim: PathBuf,
    /// The OCI runtime the runc shim runs (the host's runc for both releases).
    pub runc: PathBuf,
}

impl Daemon {
    /// Every release the lab knows, oldest first.
    pub const ALL: [Daemon; 2] = [Daemon::V1_6, Daemon::V1_7];

    /// The releases whose binaries are installed here (see [`Daemon::binaries`]), oldest first.
    /// The daemon that is this containerd line, if the lab can run one.
    pub fn for_line(line: crate::profile::Line) -> Option<Daemon> {
        match line {
            crate::profile::Line::V1_6 => Some(Daemon::V1_6),
            crate::profile::Line::V1_7 => Some(Daemon::V1_7),
            _ => None,
        }
    }

    pub fn available() -> Vec<Daemon> {
        Daemon::ALL.into_iter().filter(|daemon| daemon.binaries().is_ok()).collect()
    }

    /// A short name for messages and reports ("containerd 1.6").
    pub fn label(self) -> &'static str {
        match self {
            Daemon::V1_6 => "containerd 1.6",
            Daemon::V1_7 => "containerd 1.7",
        }
    }

    /// The binaries, or why this daemon cannot run here (the reason a test prints when it skips).
    pub fn binaries(self) -> Result<Binaries, String> {
        let (dir, install) = match self {
            Daemon::V1_6 => (PathBuf::from("/usr/bin"), "apt-get install -y containerd runc"),
            Daemon::V1_7 => (
                PathBuf::from(TRIXIE).join("usr/bin"),
                ".ci/run (Debian 13 packages into /var/cache/shimcompat/trixie)",
            ),
        };
        let binaries = Binaries {
            containerd: dir.join("containerd"),
            ctr: dir.join("ctr"),
            runc_shim: dir.join("containerd-shim-runc-v2"),
            runc: PathBuf::from("/usr/sbin/runc"),
        };
        for file in [&binaries.containerd, &binaries.ctr, &binaries.runc_shim, &binaries.runc] {
            if !is_executable(file) {
                return Err(format!(
                    "{} is not installed ({} missing; install: {install})",
                    self.label(),
                    file.display()
                ));
            }
        }
        Ok(binaries)
    }

    /// What this daemon's `containerd --version` prints (e.g. `containerd github.com/containerd/containerd 1.6.20
    /// ...`), or why it cannot say.
    pub fn version(self) -> Result<String, String> {
        self.binaries()?.version()
    }
}

impl Binaries {
    /// `containerd --version`, trimmed.
    pub fn version(&self) -> Result<String, String> {
        let mut command = Command::new(&self.containerd);
        command.arg("--version");
        let shown = format!("{} --version", self.containerd.display());
        let out = run_command(command, shown, None, Duration::from_secs(10)).ok()?;
        Ok(out.stdout.trim().to_owned())
    }
}

/// Why a lab was not started: a reason to skip, or a failure.
#[derive(Debug)]
pub enum NotStarted {
    Skip(String),
    Failed(String),
}

impl std::fmt::Display for NotStarted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotStarted::Skip(reason) => write!(f, "skipped: {reason}"),
            NotStarted::Failed(reason) => write!(f, "failed: {reason}"),
        }
    }
}

/// What a ctr (or docker) call did.
#[derive(Debug, Clone)]
pub struct Output {
    /// The command line, for messages.
    pub command: String,
    /// Exit code; None when killed by a signal or timed out.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// `Ok(self)` on exit status 0, otherwise a description.
    pub fn ok(self) -> Result<Output, String> {
        if self.success() {
            Ok(self)
        } else {
            Err(self.describe())
        }
    }

    /// A one-paragraph account: command, status, and what it printed.
    pub fn describe(&self) -> String {
        let status = match (self.timed_out, self.code) {
            (true, _) => "timed out (killed)".to_owned(),
            (false, Some(code)) => format!("exit {code}"),
            (false, None) => "killed by a signal".to_owned(),
        };
        let mut text = format!("`{}`: {status}", self.command);
        for (name, stream) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            let stream = stream.trim();
            if !stream.is_empty() {
                let tail: String = stream.chars().rev().take(600).collect::<Vec<_>>().into_iter().rev().collect();
                text.push_str(&format!("; {name}: {}", tail.replace('\n', " | ")));
            }
        }
        text
    }
}

/// A running private containerd and everything to undo.
pub struct Lab {
    pub daemon: Daemon,
    pub binaries: Binaries,
    root: PathBuf,
    namespace: String,
    containerd: Option<Child>,
    /// Extra environment for containerd (and so for the shims it starts).
    env: Vec<(String, String)>,
    /// Every container id handed out, for socket clean-up.
    ids: Mutex<BTreeSet<String>>,
    /// Shim sockets seen in bundles' `address` files.
    sockets: Mutex<BTreeSet<PathBuf>>,
    /// Directories that did not exist before this lab and may be removed at the end if empty.
    shared_dirs: Vec<PathBuf>,
    /// Extra clean-up registered with [`Lab::on_cleanup`], run (last first) before the lab's own.
    cleanups: Mutex<Vec<Box<dyn FnOnce() + Send>>>,
}

impl Lab {
    /// Starts `daemon` in a new lab. Skips (with the reason) when not root or when the daemon is not installed.
    pub fn start(daemon: Daemon) -> Result<Lab, NotStarted> {
        Lab::start_with(daemon, &[])
    }

    /// Like [`Lab::start`], with extra environment for containerd (inherited by the shims it starts).
    pub fn start_with(daemon: Daemon, env: &[(&str, &str)]) -> Result<Lab, NotStarted> {
        if !nix::unistd::geteuid().is_root() {
            return Err(NotStarted::Skip("needs root to run containerd".to_owned()));
        }
        let binaries = daemon.binaries().map_err(NotStarted::Skip)?;
        let sequence = SEQUENCE.fetch_add(1, Ordering::SeqCst);
        let base = fs::canonicalize(std::env::temp_dir()).map_err(|e| NotStarted::Failed(e.to_string()))?;
        let tag = match daemon {
            Daemon::V1_6 => "16",
            Daemon::V1_7 => "17",
        };
        let name = format!("shimcompat-e2e-{tag}-{}-{sequence}", std::process::id());
        let root = base.join(&name);
        let shared_dirs = ["/run/containerd", "/run/containerd/s", "/run/containerd/runc"]
            .iter()
            .map(PathBuf::from)
            .filter(|dir| !dir.exists())
            .collect();
        LIVE_LABS.fetch_add(1, Ordering::SeqCst);
        LIVE_ROOTS.lock().unwrap_or_else(|p| p.into_inner()).insert(root.clone());
        let mut lab = Lab {
            daemon,
            binaries,
            root,
            namespace: name,
            containerd: None,
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ids: Mutex::new(BTreeSet::new()),
            sockets: Mutex::new(BTreeSet::new()),
            shared_dirs,
            cleanups: Mutex::new(Vec::new()),
        };
        lab.populate().map_err(|e| NotStarted::Failed(format!("preparing {}: {e}", lab.root.display())))?;
        lab.start_containerd()
            .map_err(|e| NotStarted::Failed(format!("{e}\n--- containerd log ---\n{}", lab.log_tail(40))))?;
        Ok(lab)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// containerd's grpc socket (what ctr and dockerd connect to, and what shims get as `-address`).
    pub fn grpc_socket(&self) -> PathBuf {
        self.path("c.sock")
    }

    pub fn ttrpc_socket(&self) -> PathBuf {
        self.path("c.ttrpc")
    }

    /// The directory first on containerd's PATH.
    pub fn shims_dir(&self) -> PathBuf {
        self.path("shims")
    }

    /// containerd's state directory for v2 tasks of the lab's namespace: one bundle per task id.
    pub fn bundles_dir(&self) -> PathBuf {
        self.path("state/io.containerd.runtime.v2.task").join(&self.namespace)
    }

    /// The runc shim's default runc root for the lab's namespace (outside the lab: cleaned at drop).
    pub fn runc_root(&self) -> PathBuf {
        PathBuf::from("/run/containerd/runc").join(&self.namespace)
    }

    /// A fresh container id, remembered for clean-up.
    pub fn new_id(&self, prefix: &str) -> String {
        let mut ids = self.ids.lock().unwrap();
        let id = format!("{prefix}-{}", ids.len());
        ids.insert(id.clone());
        id
    }

    /// Remembers an id chosen elsewhere (e.g. by dockerd), or a group name that shims key their socket on, for
    /// clean-up.
    pub fn remember_id(&self, id: &str) {
        self.ids.lock().unwrap().insert(id.to_owned());
    }

    /// Registers `cleanup` to run when the lab is cleaned up (last registered first), before containerd is stopped.
    pub fn on_cleanup(&self, cleanup: impl FnOnce() + Send + 'static) {
        self.cleanups.lock().unwrap().push(Box::new(cleanup));
    }

    /// Links `binary` into the lab's `shims/` directory as `file_name` (e.g. `containerd-shim-mock-v1`), so that
    /// containerd finds it first by runtime name. Do it before the name's first use: containerd caches lookups.
    pub fn install_shim(&self, file_name: &str, binary: &Path) -> std::io::Result<()> {
        let link = self.shims_dir().join(file_name);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(binary, link)
    }

    fn populate(&self) -> std::io::Result<()> {
        fs::create_dir(&self.root)?;
        for dir in ["shims", "opt", "root", "state", "fifo", "runc-v1", "logs", "tmp"] {
            fs::create_dir_all(self.root.join(dir))?;
        }
        // The daemon's own runc shim (and its v1 twin, if any): 1.7's sits in a directory whose runc cannot run.
        self.install_shim("containerd-shim-runc-v2", &self.binaries.runc_shim)?;
        let config = format!(
            "version = 2\nroot = {root:?}\nstate = {state:?}\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = {grpc:?}\n[ttrpc]\n  address = {ttrpc:?}\n[debug]\n  address = {debug:?}\n  level = \"debug\"\n\
             [plugins]\n  [plugins.\"io.containerd.internal.v1.opt\"]\n    path = {opt:?}\n\
             \x20 [plugins.\"io.containerd.runtime.v1.linux\"]\n    runtime_root = {runc_v1:?}\n",
            root = self.path("root"),
            state = self.path("state"),
            grpc = self.grpc_socket(),
            ttrpc = self.ttrpc_socket(),
            debug = self.path("d.sock"),
            opt = self.path("opt"),
            runc_v1 = self.path("runc-v1"),
        );
        fs::write(self.root.join("config.toml"), config)
    }

    fn containerd_path(&self) -> String {
        format!("{}:{SYSTEM_PATH}", self.shims_dir().display())
    }

    fn start_containerd(&mut self) -> Result<(), String> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join("containerd.log"))
            .map_err(|e| e.to_string())?;
        let log_err = log.try_clone().map_err(|e| e.to_string())?;
        let _ = fs::remove_file(self.grpc_socket());
        let mut command = Command::new(&self.binaries.containerd);
        command
            .arg("--config")
            .arg(self.root.join("config.toml"))
            .current_dir(&self.root)
            .env_clear()
            .env("PATH", self.containerd_path())
            .env("TMPDIR", self.path("tmp"))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        // Its own process group: a Ctrl-C aimed at the test does not reach it first.
        command.process_group(0);
        let child = spawn_owned(&mut command)
            .map_err(|error| format!("starting {}: {error}", self.binaries.containerd.display()))?;
        self.containerd = Some(child);
        let started = Instant::now();
        loop {
            if UnixStream::connect(self.grpc_socket()).is_ok() {
                return Ok(());
            }
            if let Some(child) = self.containerd.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    crate::process::reaper::release(child.id());
                    self.containerd = None;
                    return Err(format!("containerd exited early: {status}"));
                }
            }
            if started.elapsed() > START_DEADLINE {
                return Err("containerd did not open its socket in time".to_owned());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// containerd's pid while it runs.
    pub fn containerd_pid(&self) -> Option<i32> {
        self.containerd.as_ref().map(|child| child.id() as i32)
    }

    /// Stops containerd with SIGTERM (shims keep running) and starts it again on the same directories.
    pub fn restart(&mut self) -> Result<(), String> {
        self.record_sockets();
        self.stop_containerd(Signal::SIGTERM, Duration::from_secs(10))?;
        self.start_containerd().map_err(|e| format!("{e}\n--- containerd log ---\n{}", self.log_tail(40)))
    }

    fn stop_containerd(&mut self, signal: Signal, grace: Duration) -> Result<(), String> {
        let Some(mut child) = self.containerd.take() else { return Ok(()) };
        let _ = kill(Pid::from_raw(child.id() as i32), signal);
        let started = Instant::now();
        while started.elapsed() < grace {
            if let Ok(Some(_)) = child.try_wait() {
                crate::process::reaper::release(child.id());
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        crate::process::reaper::release(child.id());
        Err(format!("containerd did not exit within {grace:?} of {signal}; killed"))
    }

    /// containerd's log (stdout and stderr, all runs).
    pub fn log(&self) -> String {
        fs::read_to_string(self.root.join("containerd.log")).unwrap_or_default()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn ctr_command(&self, args: &[&str]) -> Command {
        self.ctr_command_in(&self.namespace, args)
    }

    fn ctr_command_in(&self, namespace: &str, args: &[&str]) -> Command {
        let mut command = Command::new(&self.binaries.ctr);
        command.arg("--address").arg(self.grpc_socket()).args(["--namespace", namespace]);
        // --fifo-dir belongs to `run` and `task exec`/`task start`/`task attach`; put it right after the subcommand.
        let fifo_at = match args {
            ["run", ..] => Some(1),
            ["task" | "t" | "tasks", "exec" | "start" | "attach", ..] => Some(2),
            _ => None,
        };
        match fifo_at {
            Some(at) => {
                command.args(&args[..at]).arg("--fifo-dir").arg(self.path("fifo")).args(&args[at..]);
            }
            None => {
                command.args(args);
            }
        }
        command.env("TMPDIR", self.path("tmp"));
        // A lab started with the run's marker (the bench's `ctr run --rm` reference) marks its clients too, so that
        // an interrupted run finds and kills a hung ctr with everything else of the run.
        if let Some((key, value)) = self.env.iter().find(|(key, _)| key == crate::process::MARKER_VAR) {
            command.env(key, value);
        }
        command
    }

    fn render(&self, args: &[&str]) -> String {
        format!("ctr {}", args.join(" "))
    }

    /// Runs ctr with stdin from /dev/null and the default deadline.
    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_with(args, None, CTR_DEADLINE)
    }

    /// Runs ctr, writing `stdin` (then EOF) to it when given, else /dev/null.
    pub fn ctr_with(&self, args: &[&str], stdin: Option<&[u8]>, deadline: Duration) -> Output {
        let command = self.ctr_command(args);
        run_command(command, self.render(args), stdin, deadline)
    }

    /// The wall time of one `ctr run --rm FLAGS IMAGE <fresh id> ARGS...` (stdin /dev/null; FLAGS such as `--runtime`), from
    /// spawning ctr to its exit, for benchmarks. The id comes from [`Lab::new_id`], so the lab's clean-up finds what
    /// a failed run leaves. Err, with ctr's output, when ctr does not exit 0 within `deadline`.
    pub fn run_rm_timed(
        &self,
        flags: &[&str],
        image: &str,
        args: &[&str],
        deadline: Duration,
    ) -> Result<Duration, String> {
        let id = self.new_id("bench");
        let mut all = vec!["run", "--rm"];
        all.extend_from_slice(flags);
        all.extend([image, id.as_str()]);
        all.extend_from_slice(args);
        let command = self.ctr_command(&all);
        let started = Instant::now();
        let (out, exited) = Background::spawn(command, self.render(&all))?.wait_timed(deadline);
        if let Err(error) = out.ok() {
            // A run killed at the deadline leaves its task running: removed, so that the next run starts clean.
            self.remove_container(&id);
            return Err(error);
        }
        Ok(exited.duration_since(started))
    }

    /// containerd's version as its binary reports it ([`Binaries::version`]).
    pub fn containerd_version(&self) -> Result<String, String> {
        self.binaries.version()
    }

    /// Runs ctr in another namespace (e.g. dockerd's), stdin /dev/null, the default deadline.
    pub fn ctr_in(&self, namespace: &str, args: &[&str]) -> Output {
        run_command(
            self.ctr_command_in(namespace, args),
            format!("ctr -n {namespace} {}", args.join(" ")),
            None,
            CTR_DEADLINE,
        )
    }

    /// Runs ctr writing `stdin`, holding stdin open until stdout contains `close_after` (or the deadline), then
    /// closing it. (ctr closes the task's stdin on EOF only once the task exists: an early EOF is lost.)
    pub fn ctr_stdin_until(&self, args: &[&str], stdin: &[u8], close_after: &str, deadline: Duration) -> Output {
        let mut background = match Background::spawn_with(self.ctr_command(args), self.render(args), true) {
            Ok(background) => background,
            Err(error) => {
                return Output {
                    command: self.render(args),
                    code: None,
                    stdout: String::new(),
                    stderr: error,
                    timed_out: false,
                }
            }
        };
        let mut pipe = background.child.stdin.take();
        if let Some(pipe) = pipe.as_mut() {
            let _ = pipe.write_all(stdin);
            let _ = pipe.flush();
        }
        background.wait_for_output(close_after, deadline);
        drop(pipe);
        background.wait(deadline)
    }

    /// Runs ctr on a pseudo-terminal of 24 rows and 80 columns (for `-t`); the output is what the terminal got.
    pub fn ctr_tty(&self, args: &[&str], deadline: Duration) -> Output {
        let command = self.ctr_command(args);
        run_on_pty(command, self.render(args), deadline)
    }

    /// Starts ctr in the background (stdin /dev/null); read its output with [`Background::stdout_so_far`].
    pub fn ctr_background(&self, args: &[&str]) -> Result<Background, String> {
        Background::spawn(self.ctr_command(args), self.render(args))
    }

    /// The status column of `ctr task ls` for `id` (RUNNING, STOPPED, PAUSED, CREATED...), None when not listed.
    pub fn task_status(&self, id: &str) -> Result<Option<String>, String> {
        let out = self.ctr(&["task", "ls"]).ok()?;
        Ok(out
            .stdout
            .lines()
            .skip(1)
            .map(|line| line.split_whitespace().collect::<Vec<_>>())
            .find(|fields| fields.first() == Some(&id))
            .and_then(|fields| fields.get(2).map(|s| s.to_string())))
    }

    /// Polls `ctr task ls` until `id` has `status` (Ok) or the deadline passes (Err with the last status seen).
    pub fn wait_status(&self, id: &str, status: &str, deadline: Duration) -> Result<(), String> {
        let started = Instant::now();
        loop {
            let seen = self.task_status(id)?;
            if seen.as_deref() == Some(status) {
                return Ok(());
            }
            if started.elapsed() > deadline {
                return Err(format!("task {id}: expected {status} within {deadline:?}, `ctr task ls` shows {seen:?}"));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Ids listed by `ctr task ls -q` / `ctr container ls -q`.
    pub fn tasks(&self) -> Vec<String> {
        self.ctr(&["task", "ls", "-q"]).stdout.lines().map(str::to_owned).filter(|l| !l.is_empty()).collect()
    }

    pub fn containers(&self) -> Vec<String> {
        self.ctr(&["container", "ls", "-q"]).stdout.lines().map(str::to_owned).filter(|l| !l.is_empty()).collect()
    }

    /// The `address` file of each live bundle (the shim's socket), remembered for clean-up.
    pub fn record_sockets(&self) {
        self.record_sockets_in(&self.bundles_dir());
        // Other namespaces (dockerd's) have their own bundle directories.
        if let Ok(namespaces) = fs::read_dir(self.path("state/io.containerd.runtime.v2.task")) {
            for namespace in namespaces.flatten() {
                if namespace.path() != self.bundles_dir() {
                    self.record_sockets_in(&namespace.path());
                }
            }
        }
    }

    fn record_sockets_in(&self, bundles: &Path) {
        let mut sockets = self.sockets.lock().unwrap();
        // A shim started by the containerd-shim crate carries its socket as `-socket unix://...`.
        for pid in self.shim_pids() {
            let args = cmdline(pid);
            if let Some(at) = args.iter().position(|a| a == "-socket") {
                if let Some(socket) = args.get(at + 1) {
                    sockets.insert(PathBuf::from(socket.trim_start_matches("unix://")));
                }
            }
        }
        let Ok(entries) = fs::read_dir(bundles) else { return };
        for entry in entries.flatten() {
            if let Ok(address) = fs::read_to_string(entry.path().join("address")) {
                let path = address.trim().trim_start_matches("unix://").to_owned();
                if !path.is_empty() {
                    sockets.insert(PathBuf::from(path));
                }
            }
        }
    }

    /// The shim socket named in `id`'s bundle, if its `address` file is there.
    pub fn shim_address(&self, id: &str) -> Option<String> {
        fs::read_to_string(self.bundles_dir().join(id).join("address")).ok().map(|s| s.trim().to_owned())
    }

    /// Shim processes started for this lab: their command line carries `-address <the lab's grpc socket>`.
    pub fn shim_pids(&self) -> Vec<i32> {
        let address = self.grpc_socket().to_string_lossy().into_owned();
        let containerd = self.containerd_pid();
        processes()
            .into_iter()
            .filter(|pid| Some(*pid) != containerd)
            .filter(|pid| cmdline(*pid).windows(2).any(|pair| pair[0] == "-address" && pair[1] == address))
            .collect()
    }

    /// Mount points under the lab.
    pub fn mounts(&self) -> Vec<String> {
        mounts_under(&self.root)
    }

    /// Shim sockets in /run/containerd/s that this lab's ids hash to (either address form) or that bundles named.
    pub fn leftover_sockets(&self) -> Vec<PathBuf> {
        let mut found: BTreeSet<PathBuf> =
            self.sockets.lock().unwrap().iter().filter(|p| p.exists()).cloned().collect();
        for address in [self.grpc_socket(), self.ttrpc_socket()] {
            for id in self.ids.lock().unwrap().iter() {
                for key in [id.clone(), format!("{id}.v3")] {
                    let digest = Sha256::digest(format!("{}/{}/{key}", address.display(), self.namespace).as_bytes());
                    let socket = PathBuf::from(format!("/run/containerd/s/{}", hex::encode(digest)));
                    if socket.exists() {
                        found.insert(socket);
                    }
                }
            }
        }
        found.into_iter().collect()
    }

    /// What is left of earlier work: tasks, containers, shim processes, mounts, sockets, bundles. Waits up to
    /// `grace` for shims to go away (they exit asynchronously after the last delete).
    pub fn leftovers(&self, grace: Duration) -> Vec<String> {
        let started = Instant::now();
        loop {
            self.record_sockets();
            let mut found = Vec::new();
            let tasks = self.tasks();
            if !tasks.is_empty() {
                found.push(format!("tasks {tasks:?}"));
            }
            let containers = self.containers();
            if !containers.is_empty() {
                found.push(format!("containers {containers:?}"));
            }
            for pid in self.shim_pids() {
                found.push(format!("shim process {pid} ({})", cmdline(pid).join(" ")));
            }
            for mount in self.mounts() {
                found.push(format!("mount {mount}"));
            }
            for socket in self.leftover_sockets() {
                found.push(format!("socket {}", socket.display()));
            }
            if let Ok(entries) = fs::read_dir(self.bundles_dir()) {
                let bundles: Vec<String> =
                    entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
                if !bundles.is_empty() {
                    found.push(format!("bundles {bundles:?}"));
                }
            }
            if found.is_empty() || started.elapsed() >= grace {
                return found;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Removes every task and container of the namespace through ctr (SIGKILL, delete -f, container rm), then
    /// kills stray shims and container processes, and removes their sockets. For use between steps.
    pub fn sweep(&self) {
        self.record_sockets();
        for id in self.tasks() {
            let _ = self.ctr_with(&["task", "kill", "-a", "-s", "SIGKILL", &id], None, Duration::from_secs(5));
            let _ = self.ctr_with(&["task", "rm", "-f", &id], None, Duration::from_secs(5));
        }
        for id in self.containers() {
            let _ = self.ctr_with(&["container", "rm", &id], None, Duration::from_secs(5));
        }
        self.kill_strays();
        self.runc_cleanup();
        for socket in self.leftover_sockets() {
            let _ = fs::remove_file(socket);
        }
    }

    /// SIGKILL to `id`'s task, `task rm -f`, `container rm`, whichever of them applies (best effort).
    fn remove_container(&self, id: &str) {
        if self.tasks().iter().any(|task| task == id) {
            let _ = self.ctr_with(&["task", "kill", "-a", "-s", "SIGKILL", id], None, Duration::from_secs(5));
            let _ = self.ctr_with(&["task", "rm", "-f", id], None, Duration::from_secs(5));
        }
        if self.containers().iter().any(|container| container == id) {
            let _ = self.ctr_with(&["container", "rm", id], None, Duration::from_secs(5));
        }
    }

    /// Kills shims and container processes of this lab (not containerd).
    fn kill_strays(&self) {
        for _ in 0..3 {
            let mut pids = self.shim_pids();
            pids.extend(processes_rooted_under(&self.root));
            pids.retain(|pid| Some(*pid) != self.containerd_pid() && *pid != std::process::id() as i32);
            if pids.is_empty() {
                return;
            }
            for pid in pids {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `runc delete -f` for every container in the namespace's runc root (thaws paused ones).
    fn runc_cleanup(&self) {
        runc_delete_all(&self.binaries.runc, &self.runc_root());
    }

    /// Undoes everything; returns what had to be undone that should not have been there.
    pub fn cleanup(&mut self) -> Vec<String> {
        let mut notes = Vec::new();
        self.record_sockets();
        let cleanups: Vec<_> = std::mem::take(&mut *self.cleanups.lock().unwrap());
        for cleanup in cleanups.into_iter().rev() {
            cleanup();
        }
        let _ = self.stop_containerd(Signal::SIGKILL, Duration::from_secs(5));
        // runc first: a paused container ignores SIGKILL until thawed.
        self.runc_cleanup();
        notes.extend(kill_processes_of(&self.root));
        self.runc_cleanup();
        let _ = fs::remove_dir_all(self.runc_root());
        let _ = fs::remove_dir(PathBuf::from("/run/containerd/runc").join(format!("{}-moby", self.namespace)));
        // Shims keep per-namespace state under /run/containerd/<runtime>/<namespace> (runc's root above, runwasi's
        // /run/containerd/<shim name>/): the lab's namespaces are its own, so whatever is left there goes.
        for runtime in fs::read_dir("/run/containerd").into_iter().flatten().flatten() {
            for namespace in [self.namespace.clone(), format!("{}-moby", self.namespace)] {
                let dir = runtime.path().join(namespace);
                if dir.is_dir() {
                    let _ = fs::remove_dir_all(&dir);
                }
            }
        }
        notes.extend(unmount_under(&self.root));
        for socket in self.leftover_sockets() {
            notes.push(format!("socket {} removed", socket.display()));
            let _ = fs::remove_file(&socket);
        }
        remove_cgroups(&self.namespace);
        if LIVE_LABS.load(Ordering::SeqCst) == 1 {
            for dir in self.shared_dirs.iter().rev() {
                let _ = fs::remove_dir(dir);
            }
        }
        if let Err(error) = fs::remove_dir_all(&self.root) {
            notes.push(format!("removing {}: {error}", self.root.display()));
        }
        notes
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.root.exists() {
            let _ = self.cleanup();
        }
        LIVE_ROOTS.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.root);
        LIVE_LABS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// SIGKILLs every process whose command line mentions `root` or whose root or cwd is under it (containerd, its
/// shims, ctr, the containers in their overlay rootfs), until none is left (5 rounds at most).
fn kill_processes_of(root: &Path) -> Vec<String> {
    let mut notes = Vec::new();
    for _ in 0..5 {
        let mut pids: Vec<i32> = processes_mentioning(root);
        pids.extend(processes_rooted_under(root));
        pids.retain(|pid| *pid != std::process::id() as i32);
        pids.sort();
        pids.dedup();
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            notes.push(format!("process {pid} ({}) killed", cmdline(pid).join(" ")));
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    notes
}

/// Detaches every mount under `root`, deepest first.
fn unmount_under(root: &Path) -> Vec<String> {
    let mut mounts = mounts_under(root);
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    mounts
        .into_iter()
        .map(|mount| {
            let _ = nix::mount::umount2(mount.as_str(), nix::mount::MntFlags::MNT_DETACH);
            format!("mount {mount} unmounted")
        })
        .collect()
}

/// The last resort of an interrupted run whose threads did not return in time (the [`Lab`]s they hold will
/// never be dropped): for every lab still alive in this process, kill its containerd, shims and containers,
/// detach its mounts and remove its directory. What the per-namespace runtime state outside the lab (runc's root
/// under /run/containerd/runc) holds is left to a later lab's clean-up of the same name, which never comes: it is
/// named in the notes instead.
pub fn sweep_live_labs() -> Vec<String> {
    let roots: Vec<PathBuf> = LIVE_ROOTS.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect();
    let mut notes = Vec::new();
    for root in roots {
        notes.extend(kill_processes_of(&root));
        notes.extend(unmount_under(&root));
        if let Some(namespace) = root.file_name() {
            let runc_root = PathBuf::from("/run/containerd/runc").join(namespace);
            if runc_root.exists() {
                let _ = fs::remove_dir_all(&runc_root);
                notes.push(format!("runtime state {} removed", runc_root.display()));
            }
        }
        if let Err(error) = fs::remove_dir_all(&root) {
            notes.push(format!("removing {}: {error}", root.display()));
        }
    }
    notes
}

/// A command running in the background, its stdout and stderr collected by threads.
pub struct Background {
    pub command: String,
    child: Child,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Background {
    pub fn spawn(command: Command, shown: String) -> Result<Background, String> {
        Background::spawn_with(command, shown, false)
    }

    fn spawn_with(mut command: Command, shown: String, piped_stdin: bool) -> Result<Background, String> {
        command
            .stdin(if piped_stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = spawn_owned(&mut command).map_err(|e| format!("{shown}: {e}"))?;
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        if let Some(pipe) = child.stdout.take() {
            readers.push(collect(pipe, stdout.clone()));
        }
        if let Some(pipe) = child.stderr.take() {
            readers.push(collect(pipe, stderr.clone()));
        }
        Ok(Background { command: shown, child, stdout, stderr, readers })
    }

    pub fn stdout_so_far(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    /// Waits until stdout contains `text`, the process exits, or the deadline passes.
    pub fn wait_for_output(&mut self, text: &str, deadline: Duration) -> bool {
        let started = Instant::now();
        while started.elapsed() < deadline {
            if self.stdout_so_far().contains(text) {
                return true;
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                return self.stdout_so_far().contains(text);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// Waits for the exit (killing it after `deadline`).
    pub fn wait(mut self, deadline: Duration) -> Output {
        let (status, timed_out) = wait_deadline(&mut self.child, deadline);
        self.output(status, timed_out)
    }

    /// Like [`Background::wait`], also saying when the process exited, as a blocking wait sees it (not to the 5 ms of
    /// `wait`'s polling): for timings.
    pub fn wait_timed(mut self, deadline: Duration) -> (Output, Instant) {
        let (status, timed_out, exited) = wait_deadline_exact(&mut self.child, deadline);
        (self.output(status, timed_out), exited)
    }

    fn output(&mut self, status: Option<ExitStatus>, timed_out: bool) -> Output {
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        let stdout = String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned();
        let stderr = String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned();
        Output { command: self.command.clone(), code: status.and_then(|s| s.code()), stdout, stderr, timed_out }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        crate::process::reaper::release(self.child.id());
    }
}

/// Spawns a child this module waits for itself, registered with the harness's reaper (which runs in `run` and
/// `bench` and reaps every other exited child): unregistered, a lab's ctr could be reaped by it between the exit and
/// the lab's own wait, which then has no status ("killed by a signal": 1 in 50 `ctr run --rm` references here).
/// The pid is released after the wait ([`crate::process::reaper::release`]).
fn spawn_owned(command: &mut Command) -> std::io::Result<Child> {
    let mut owned = crate::process::reaper::registry().lock().unwrap_or_else(|p| p.into_inner());
    let child = command.spawn()?;
    owned.insert(child.id());
    Ok(child)
}

fn collect(mut pipe: impl Read + Send + 'static, into: Arc<Mutex<Vec<u8>>>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buffer = [0u8; 8192];
        loop {
            match pipe.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => into.lock().unwrap().extend_from_slice(&buffer[..n]),
            }
        }
    })
}

/// Waits for `child` up to `deadline`, then kills it. Returns (status, timed out).
fn wait_deadline(child: &mut Child, deadline: Duration) -> (Option<ExitStatus>, bool) {
    let started = Instant::now();
    let waited = loop {
        match child.try_wait() {
            Ok(Some(status)) => break (Some(status), false),
            Ok(None) if started.elapsed() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break (None, true);
            }
        }
    };
    crate::process::reaper::release(child.id());
    waited
}

/// Blocks until `child` exits, notes the instant, then reaps it; a watchdog thread SIGKILLs it at `deadline`. The
/// exit is awaited without reaping (`waitid` with `WNOWAIT`), so the watchdog cannot signal a reused pid. Returns
/// (status, timed out, when it exited).
fn wait_deadline_exact(child: &mut Child, deadline: Duration) -> (Option<ExitStatus>, bool, Instant) {
    use nix::sys::wait::{waitid, Id, WaitPidFlag};
    let pid = Pid::from_raw(child.id() as i32);
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        let expired = matches!(stopped.recv_timeout(deadline), Err(std::sync::mpsc::RecvTimeoutError::Timeout));
        if expired {
            let _ = kill(pid, Signal::SIGKILL);
        }
        expired
    });
    while let Err(nix::errno::Errno::EINTR) = waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {}
    let exited = Instant::now();
    let _ = stop.send(());
    let timed_out = watchdog.join().unwrap_or(false);
    let status = child.wait().ok();
    crate::process::reaper::release(child.id());
    (status.filter(|_| !timed_out), timed_out, exited)
}

/// Runs a command to completion with a deadline; stdin is `stdin` then EOF, or /dev/null.
pub fn run_command(command: Command, shown: String, stdin: Option<&[u8]>, deadline: Duration) -> Output {
    let mut background = match Background::spawn_with(command, shown.clone(), stdin.is_some()) {
        Ok(background) => background,
        Err(error) => {
            return Output {
                command: shown,
                code: None,
                stdout: String::new(),
                stderr: format!("cannot run: {error}"),
                timed_out: false,
            }
        }
    };
    if let (Some(data), Some(mut pipe)) = (stdin, background.child.stdin.take()) {
        let data = data.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&data);
        });
    }
    background.wait(deadline)
}

/// Runs a command with stdin, stdout and stderr on a new pseudo-terminal (24x80); collects what the terminal shows.
pub fn run_on_pty(mut command: Command, shown: String, deadline: Duration) -> Output {
    let failed = |why: String| Output {
        command: shown.clone(),
        code: None,
        stdout: String::new(),
        stderr: why,
        timed_out: false,
    };
    let size = nix::pty::Winsize { ws_row: 24, ws_col: 80, ws_xpixel: 0, ws_ypixel: 0 };
    let pty = match nix::pty::openpty(Some(&size), None) {
        Ok(pty) => pty,
        Err(error) => return failed(format!("openpty: {error}")),
    };
    let slave: OwnedFd = pty.slave;
    let dup = |fd: &OwnedFd| fd.try_clone().map(Stdio::from);
    let (Ok(i), Ok(o), Ok(e)) = (dup(&slave), dup(&slave), dup(&slave)) else { return failed("dup pty".to_owned()) };
    command.stdin(i).stdout(o).stderr(e);
    // A session with the pty as controlling terminal, as a shell would give it.
    unsafe {
        command.pre_exec(move || {
            libc::setsid();
            libc::ioctl(0, libc::TIOCSCTTY, 0);
            Ok(())
        });
    }
    let mut child = match spawn_owned(&mut command) {
        Ok(child) => child,
        Err(error) => return failed(format!("cannot run: {error}")),
    };
    drop(slave);
    drop(command);
    let master = fs::File::from(pty.master);
    let collected = Arc::new(Mutex::new(Vec::new()));
    let reader = collect(master, collected.clone());
    let (status, timed_out) = wait_deadline(&mut child, deadline);
    // The reader ends on EIO once every slave copy is closed; the container may hold one briefly.
    let started = Instant::now();
    while !reader.is_finished() && started.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let stdout = String::from_utf8_lossy(&collected.lock().unwrap()).into_owned();
    Output { command: shown, code: status.and_then(|s| s.code()), stdout, stderr: String::new(), timed_out }
}

/// Writes `contents` to `path` with `mode`.
pub fn write_mode(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let mut file = fs::File::create(path)?;
    file.write_all(contents)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

pub fn processes() -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    entries.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok()).collect()
}

pub fn cmdline(pid: i32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect()
        })
        .unwrap_or_default()
}

/// Processes whose command line mentions `root`.
pub fn processes_mentioning(root: &Path) -> Vec<i32> {
    let needle = root.to_string_lossy().into_owned();
    processes().into_iter().filter(|pid| cmdline(*pid).iter().any(|arg| arg.contains(&needle))).collect()
}

/// Processes whose root or working directory is under `root` (container processes in an overlay rootfs).
pub fn processes_rooted_under(root: &Path) -> Vec<i32> {
    processes()
        .into_iter()
        .filter(|pid| {
            ["root", "cwd"].iter().any(|link| {
                fs::read_link(format!("/proc/{pid}/{link}")).map(|target| target.starts_with(root)).unwrap_or(false)
            })
        })
        .collect()
}

pub fn mounts_under(root: &Path) -> Vec<String> {
    let needle = root.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|mount_point| mount_point.starts_with(&needle))
        .map(str::to_owned)
        .collect()
}

/// `runc --root ROOT delete -f ID` for every container under `root`, then removes `root`.
pub fn runc_delete_all(runc: &Path, root: &Path) {
    let Ok(entries) = fs::read_dir(root) else { return };
    for entry in entries.flatten() {
        let id = entry.file_name().to_string_lossy().into_owned();
        let mut command = Command::new(runc);
        command.arg("--root").arg(root).args(["delete", "-f", &id]);
        let _ = run_command(command, format!("runc delete -f {id}"), None, Duration::from_secs(10));
    }
    let _ = fs::remove_dir(root);
}

/// Removes `/sys/fs/cgroup/<controller>/<name>` and what is below it (deepest first), in every hierarchy.
pub fn remove_cgroups(name: &str) {
    let Ok(controllers) = fs::read_dir("/sys/fs/cgroup") else { return };
    for controller in controllers.flatten() {
        let dir = controller.path().join(name);
        if dir.is_dir() {
            remove_cgroup_tree(&dir);
        }
    }
}

fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup_tree(&entry.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

/// The bundled mock shim, if built: `SHIMCOMPAT_MOCK_BINARY`, else `containerd-shim-mock-v1` where cargo builds it
/// next to shimcompat (the running executable's directory and, for a test binary in `target/*/deps`, its parent:
/// [`crate::host::bundled_dirs`]).
pub fn mock_binary() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("SHIMCOMPAT_MOCK_BINARY") {
        let path = PathBuf::from(path);
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(format!("SHIMCOMPAT_MOCK_BINARY={} is not executable", path.display()))
        };
    }
    let candidates: Vec<PathBuf> =
        crate::host::bundled_dirs().into_iter().map(|dir| dir.join("containerd-shim-mock-v1")).collect();
    if let Some(path) = candidates.iter().find(|path| is_executable(path)) {
        return Ok(path.clone());
    }
    let looked: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
    Err(format!("the mock shim is not built ({} missing; `cargo build -p containerd-shim-mock`?)", looked.join(", ")))
}

/// The only runtime name ctr sends runc options for (`--runc-binary`, `--runc-root`, `--runc-systemd-cgroup`).
pub const CTR_RUNC_OPTIONS_NAME: &str = "io.containerd.runc.v2";

/// How ctr is told about the candidate: the `--runtime` value, the lab link (file name, target) if any, the flags for
/// the runc options and what the shim receives; or why ctr cannot reproduce the candidate.
pub struct CtrForm {
    pub runtime: String,
    pub link: Option<(String, PathBuf)>,
    pub flags: Vec<String>,
    /// The runc options the shim receives through ctr, in words.
    pub receives: String,
    /// The BinaryName that `options.json` must show (None: not checked).
    pub expect_binary_name: Option<String>,
}

pub fn ctr_form(candidate: &crate::candidate::Candidate, binary: &Path, daemon: Daemon) -> Result<CtrForm, String> {
    let (runtime, link) = match (&candidate.runtime, &candidate.runtime_binary) {
        (Some(name), _) => {
            let version = match daemon {
                Daemon::V1_6 => crate::resolve::containerd::Version::V1_6,
                Daemon::V1_7 => crate::resolve::containerd::Version::V1_7,
            };
            let file =
                crate::resolve::containerd::binary_name(name, version).map_err(|e| format!("runtime {name:?}: {e}"))?;
            (name.clone(), Some((file, binary.to_path_buf())))
        }
        (None, Some(path)) => (path.display().to_string(), None),
        (None, None) => return Err("no runtime name or binary".into()),
    };
    let Some(options) = &candidate.runc_options else {
        return Ok(CtrForm {
            runtime,
            link,
            flags: Vec::new(),
            receives: "no runc options (none in the candidate)".into(),
            expect_binary_name: None,
        });
    };
    let mut unsendable = Vec::new();
    if options.no_pivot_root {
        unsendable.push("no_pivot_root");
    }
    if options.no_new_keyring {
        unsendable.push("no_new_keyring");
    }
    if !options.shim_cgroup.is_empty() {
        unsendable.push("shim_cgroup");
    }
    if !unsendable.is_empty() {
        return Err(format!("ctr has no flag for runc options {unsendable:?}: not reproducible with ctr"));
    }
    if runtime == CTR_RUNC_OPTIONS_NAME {
        let mut flags = Vec::new();
        let mut words = Vec::new();
        if !options.binary_name.is_empty() {
            flags.extend(["--runc-binary".to_owned(), options.binary_name.clone()]);
            words.push(format!("BinaryName {:?}", options.binary_name));
        }
        if !options.root.is_empty() {
            flags.extend(["--runc-root".to_owned(), options.root.clone()]);
            words.push(format!("Root {:?}", options.root));
        }
        if options.systemd_cgroup {
            flags.push("--runc-systemd-cgroup".to_owned());
            words.push("SystemdCgroup".to_owned());
        }
        let receives = format!(
            "runc options {{{}}} (ctr {}); the harness sends the same with a private Root",
            words.join(", "),
            if flags.is_empty() { "sends the default options".to_owned() } else { flags.join(" ") }
        );
        let expect = Some(options.binary_name.clone());
        return Ok(CtrForm { runtime, link, flags, receives, expect_binary_name: expect });
    }
    // ctr: "specifying runc-binary and runc-systemd-cgroup is only supported for "io.containerd.runc.v2" runtime".
    let default_runtime = options.binary_name.is_empty() || options.binary_name == "runc";
    if !default_runtime || options.systemd_cgroup || !options.root.is_empty() {
        return Err(format!(
            "ctr sends runc options only for {CTR_RUNC_OPTIONS_NAME} and refuses --runc-binary/--runc-root/--runc-systemd-cgroup \
             for {runtime}: the candidate's options ({options:?}) are not reproducible with ctr"
        ));
    }
    Ok(CtrForm {
        runtime: runtime.clone(),
        link,
        flags: Vec::new(),
        receives: format!(
            "no runc options: ctr sends them only for {CTR_RUNC_OPTIONS_NAME} (it refuses --runc-binary for {runtime}), so the \
             shim runs its default runc, which is what the candidate's binary_name {:?} asks for; the harness sends the options",
            options.binary_name
        ),
        expect_binary_name: Some(String::new()),
    })
}
