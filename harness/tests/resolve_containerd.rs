//! Differential check of the runtime-name model against a real containerd (the installed one; 1.6.20 on the
//! reference host).
//!
//! A private containerd runs from a temporary directory: its own root, state, sockets and opt directory, a chosen
//! working directory, a PATH of two temporary directories, and its binary hard-linked (or copied) into a temporary
//! `bin/` so that "next to containerd" is a directory the test controls (a symlink would not do: containerd's
//! `os.Executable()` resolves symlinks). Recorder shims — shell scripts that append `$0` and their arguments to a
//! file and exit 1 — sit in those places under many binary names. For every name in `ROWS`, `ctr run` asks containerd
//! to start a task; the test then compares which file ran (or which error ctr printed) with the model's prediction
//! for the same containerd, cache included, since one containerd answers all rows in order.
//!
//! Skips with a printed reason when not root or when containerd/ctr are not installed. Leaves nothing behind: it kills
//! containerd (and any process still running from the temporary directory) by pid, removes the directory, and removes
//! only those /run/containerd entries the legacy v1 runtime created for this test.
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use shimcompat::resolve::containerd::{self, Cache, Env, Outcome, Place, Plan, Version};
use shimcompat::resolve::gopath;
use shimcompat::resolve::host::{self, HostProbe};

const NAMESPACE: &str = "shimcompat-resolve";
const CTR_DEADLINE: Duration = Duration::from_secs(20);
const START_DEADLINE: Duration = Duration::from_secs(15);

/// Where containerd 1.6 is expected to take the file from (checked only when the installed containerd is 1.6, so that
/// the lab keeps exercising what each row is meant to exercise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// containerd's working directory (the name's own directory for plain names).
    Cwd,
    /// The name's directory part under the working directory.
    NameDir,
    /// PATH entry (0: opt plugin's bin, 1: p1, 2: p2).
    Path(usize),
    ContainerdDir,
    Cache,
    /// 1.6's empty-path fallback to the working directory (containerd#6464).
    CwdBug,
    Absolute,
    LegacyV1,
    Refused,
}

/// `(name, where 1.6 takes it from, whether the exec itself fails)`. `{lab}` is replaced by the lab directory.
const ROWS: &[(&str, Via, bool)] = &[
    ("io.containerd.cwdonly.v1", Via::Cwd, false),
    ("io.containerd.shadow.v1", Via::Cwd, false),
    ("io.containerd.opt.v1", Via::Path(0), false),
    ("io.containerd.optp1.v1", Via::Path(0), false),
    ("io.containerd.p1.v1", Via::Path(1), false),
    ("io.containerd.p2.v1", Via::Path(2), false),
    ("io.containerd.both.v1", Via::Path(1), false),
    ("io.containerd.pnoexec.v1", Via::Path(2), false),
    ("io.containerd.pdir.v1", Via::Path(2), false),
    ("io.containerd.self.v1", Via::ContainerdDir, false),
    ("io.containerd.selfnoexec.v1", Via::ContainerdDir, true),
    ("io.containerd.noexec.v1", Via::Cwd, true),
    ("io.containerd.dir.v1", Via::Cwd, true),
    ("io.containerd.nothere.v1", Via::Refused, false),
    ("runc", Via::Refused, false),
    ("RUNC", Via::Refused, false),
    ("myshim", Via::Refused, false),
    ("", Via::Refused, false),
    ("io\\containerd.runc.v2", Via::Path(1), false),
    ("io.containerd.runc.v2", Via::Cache, false),
    ("runc.v2", Via::Cache, false),
    ("x.io.containerd.runc.v2", Via::Cache, false),
    (" io.containerd.runc.v2", Via::Cache, false),
    (".io.containerd.runc.v2", Via::Cache, false),
    ("io.containerd.runtime.v1.linux", Via::LegacyV1, false),
    ("io.containerd.runc.v1", Via::Refused, false),
    ("io.containerd.kata.v2", Via::Refused, false),
    ("io.containerd.runsc.v1", Via::Refused, false),
    ("io.containerd.realfake.v42", Via::Path(2), false),
    ("io.containerd.my-shim", Via::Path(2), false),
    ("foo.v2", Via::Refused, false),
    ("a.b", Via::Path(2), false),
    ("a.b.c.d.e", Via::Path(2), false),
    ("a.", Via::Path(2), false),
    // Binary name `containerd-shim--` (the reference table says `---`): found as the directory of that name in cwd.
    ("a..", Via::Cwd, true),
    (".", Via::Cache, true),
    ("..", Via::Cache, true),
    ("...", Via::Cache, true),
    ("io.containerd..v2", Via::Path(2), false),
    (".v2", Via::Cache, false),
    ("sub/io.containerd.seed.v1", Via::NameDir, false),
    ("io.containerd.seed.v1", Via::Cache, false),
    ("my/io.containerd.runc.v2", Via::Cache, false),
    ("./x", Via::CwdBug, true),
    ("../x", Via::Cache, true),
    ("./y", Via::Cwd, false),
    ("./containerd-shim-runc-v2", Via::CwdBug, true),
    ("./fake/containerd-shim-runc-v2", Via::CwdBug, true),
    ("fake/containerd-shim-runc-v2", Via::Refused, false),
    ("/path/to/runc", Via::Refused, false),
    ("/path/to/io.containerd.runc.v2", Via::Refused, false),
    ("{lab}/p2/containerd-shim-p2-v1", Via::Absolute, false),
    ("{lab}/p2/../p2//containerd-shim-p2-v1", Via::Absolute, false),
    ("{lab}/abs/my-runtime", Via::Absolute, false),
    ("{lab}/cwd/containerd-shim-noexec-v1", Via::Absolute, true),
    ("io.containerd.my shim.v2", Via::Path(2), false),
    ("io.containerd.runc.v2 ", Via::Refused, false),
    ("io.containerd.ランタイム.v2", Via::Path(2), false),
    ("io.containerd.$(id).v2", Via::Path(2), false),
    ("IO.CONTAINERD.KATA.V2", Via::Refused, false),
    ("io.containerd.{300a}.v2", Via::Refused, false),
    ("io.containerd.q\"uote.v1", Via::Refused, false),
    ("io.containerd.t\tab.v1", Via::Refused, false),
];

#[test]
fn containerd_resolves_runtime_names_as_modelled() {
    let started = Instant::now();
    let (containerd_binary, ctr) = match prerequisites() {
        Ok(found) => found,
        Err(reason) => {
            println!("SKIPPED resolve_containerd: {reason}");
            eprintln!("SKIPPED resolve_containerd: {reason}");
            return;
        }
    };
    let version_output =
        host::version_output(&containerd_binary, Duration::from_secs(10)).expect("containerd --version");
    let version = match Version::from_version_output(&version_output) {
        Ok(version) => version,
        Err(error) => {
            println!("SKIPPED resolve_containerd: {error}");
            eprintln!("SKIPPED resolve_containerd: {error}");
            return;
        }
    };

    let mut lab = Lab::create(&containerd_binary).expect("lab set up");
    lab.start_containerd().unwrap_or_else(|error| panic!("{error}\n--- containerd log ---\n{}", lab.log()));

    let env = Env {
        cwd: lab.path("cwd"),
        path: lab.inherited_path(),
        opt_dir: Some(lab.path("opt")),
        containerd_dir: Some(lab.path("bin")),
        probe: &HostProbe,
    };
    let mut cache = Cache::new();
    let mut disagreements = Vec::new();
    let mut report = String::new();
    for (index, (template, via, exec_fails)) in ROWS.iter().enumerate() {
        let name = template.replace("{lab}", &lab.root_text()).replace("{300a}", &"a".repeat(300));
        let resolution = containerd::lookup_cached(&name, version, &env, &mut cache);
        let observed = lab.run_task(&ctr, &name, &format!("r{index}"));
        let verdict = compare(&resolution, &observed);
        let shape = if version == Version::V1_6 { check_shape(&resolution, *via, *exec_fails) } else { Ok(()) };
        let line = format!(
            "{:>2} {:<42} model: {:<60} real: {}",
            index,
            gopath::quote(&name).chars().take(42).collect::<String>(),
            describe_model(&resolution).chars().take(60).collect::<String>(),
            observed.describe()
        );
        report.push_str(&line);
        report.push('\n');
        if let Err(why) = verdict.and(shape) {
            disagreements.push(format!("{line}\n     -> {why}"));
        }
    }
    let elapsed = started.elapsed();
    lab.stop();
    let leftovers = lab.cleanup();
    println!("containerd {version} ({}), {} names, {elapsed:.2?}\n{report}", version_output.trim(), ROWS.len());
    assert!(leftovers.is_empty(), "left behind: {leftovers:#?}");
    assert!(disagreements.is_empty(), "the model and containerd {version} disagree:\n{}", disagreements.join("\n"));
}

fn prerequisites() -> Result<(PathBuf, PathBuf), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("needs root to run containerd".to_owned());
    }
    let path = std::env::var("PATH").unwrap_or_default();
    let with_sbin = format!("{path}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    let containerd = host::look_path("containerd", &with_sbin).ok_or("containerd is not installed")?;
    let ctr = host::look_path("ctr", &with_sbin).ok_or("ctr is not installed")?;
    Ok((containerd, ctr))
}

/// What containerd did for one name.
#[derive(Debug)]
struct Observed {
    /// `$0` of every recorder that ran.
    ran: Vec<String>,
    /// ctr's exit status and stderr.
    success: bool,
    stderr: String,
}

impl Observed {
    fn describe(&self) -> String {
        if let Some(first) = self.ran.first() {
            return format!("ran {first}");
        }
        let message = self.stderr.trim().trim_start_matches("ctr: ");
        format!("error: {}", message.chars().take(110).collect::<String>())
    }
}

fn describe_model(resolution: &containerd::Resolution) -> String {
    match &resolution.outcome {
        Outcome::Runs { path, exec_error: None, .. } => format!("runs {path}"),
        Outcome::Runs { exec_error: Some(error), .. } => format!("exec fails: {error}"),
        Outcome::Fails { error } => format!("refused: {error}"),
    }
}

/// The model's prediction against what happened.
fn compare(resolution: &containerd::Resolution, observed: &Observed) -> Result<(), String> {
    if observed.success {
        return Err("ctr succeeded, but every reachable shim here is a recorder that exits 1".to_owned());
    }
    match &resolution.outcome {
        Outcome::Runs { path, exec_error: None, .. } => {
            if observed.ran != [path.clone()] {
                return Err(format!(
                    "expected {path} to run (once), recorded {:?}; ctr: {}",
                    observed.ran,
                    observed.stderr.trim()
                ));
            }
        }
        Outcome::Runs { exec_error: Some(_), .. } | Outcome::Fails { .. } => {
            if !observed.ran.is_empty() {
                return Err(format!("expected nothing to run, recorded {:?}", observed.ran));
            }
            let expected = resolution.wrapped_error().unwrap_or_default();
            if !observed.stderr.contains(&expected) {
                return Err(format!("expected ctr's error to contain {expected:?}, got {:?}", observed.stderr.trim()));
            }
        }
    }
    Ok(())
}

/// Guards the lab itself: each row must exercise the step it was written for (on 1.6, the reference host).
fn check_shape(resolution: &containerd::Resolution, via: Via, exec_fails: bool) -> Result<(), String> {
    let place = resolution.chosen_step().map(|step| &step.place);
    let matches = match (via, place) {
        (Via::Refused, None) => true,
        (Via::Cwd, Some(Place::NameDirectory { dir })) => dir == ".",
        (Via::NameDir, Some(Place::NameDirectory { dir })) => dir != ".",
        (Via::Path(want), Some(Place::PathEntry { index, .. }))
            if !matches!(resolution.plan, Plan::LegacyV1 { .. }) =>
        {
            *index == want
        }
        (Via::ContainerdDir, Some(Place::ContainerdDirectory)) => true,
        (Via::Cache, Some(Place::Cache)) => true,
        (Via::CwdBug, Some(Place::WorkingDirectoryFallback)) => true,
        (Via::Absolute, Some(Place::AbsolutePath)) => true,
        (Via::LegacyV1, Some(Place::PathEntry { .. })) => matches!(resolution.plan, Plan::LegacyV1 { .. }),
        _ => false,
    };
    let fails = matches!(resolution.outcome, Outcome::Runs { exec_error: Some(_), .. });
    if !matches || (via != Via::Refused && fails != exec_fails) {
        return Err(format!("lab row meant {via:?} (exec fails: {exec_fails}); the model took {place:?}"));
    }
    Ok(())
}

/// The temporary directory, the private containerd, and everything to undo.
struct Lab {
    root: PathBuf,
    containerd: Option<Child>,
    /// /run/containerd and /run/containerd/s did not exist before: remove them if empty at the end.
    created_run_dirs: Vec<PathBuf>,
    task_ids: Vec<String>,
}

impl Lab {
    fn create(containerd_binary: &Path) -> std::io::Result<Lab> {
        let base = fs::canonicalize(std::env::temp_dir())?;
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let root = base.join(format!("shimcompat-resolve-{}-{nanos}", std::process::id()));
        fs::create_dir(&root)?;
        let created_run_dirs =
            ["/run/containerd", "/run/containerd/s"].iter().map(PathBuf::from).filter(|dir| !dir.exists()).collect();
        let lab = Lab { root, containerd: None, created_run_dirs, task_ids: Vec::new() };
        lab.populate(containerd_binary)?;
        Ok(lab)
    }

    fn path(&self, relative: &str) -> String {
        self.root.join(relative).to_string_lossy().into_owned()
    }

    fn root_text(&self) -> String {
        self.root.to_string_lossy().into_owned()
    }

    fn inherited_path(&self) -> String {
        format!("{}:{}", self.path("p1"), self.path("p2"))
    }

    fn record_file(&self) -> PathBuf {
        self.root.join("record")
    }

    fn populate(&self, containerd_binary: &Path) -> std::io::Result<()> {
        for dir in [
            "cwd",
            "cwd/sub",
            "cwd/containerd-shim-dir-v1",
            "cwd/containerd-shim--",
            "opt/bin",
            "p1",
            "p2",
            "bin",
            "abs",
            "real",
            "rootfs",
            "fifo",
            "root",
            "state",
            "runc-v1",
        ] {
            fs::create_dir_all(self.root.join(dir))?;
        }
        let recorders = [
            "cwd/containerd-shim-cwdonly-v1",
            "cwd/containerd-shim-shadow-v1",
            "cwd/containerd-shim--/y",
            "cwd/sub/containerd-shim-seed-v1",
            "opt/bin/containerd-shim-opt-v1",
            "opt/bin/containerd-shim-optp1-v1",
            "p1/containerd-shim-p1-v1",
            "p1/containerd-shim-both-v1",
            "p1/containerd-shim-shadow-v1",
            "p1/containerd-shim-optp1-v1",
            "p1/containerd-shim-seed-v1",
            "p1/containerd-shim-runc-v2",
            "p1/containerd-shim",
            "p2/containerd-shim-p2-v1",
            "p2/containerd-shim-both-v1",
            "p2/containerd-shim-pnoexec-v1",
            "p2/containerd-shim-pdir-v1",
            "p2/containerd-shim-containerd-my-shim",
            "p2/containerd-shim-a-b",
            "p2/containerd-shim-d-e",
            "p2/containerd-shim-a-",
            "p2/containerd-shim--v2",
            "p2/containerd-shim-my shim-v2",
            "p2/containerd-shim-ランタイム-v2",
            "p2/containerd-shim-$(id)-v2",
            "bin/containerd-shim-self-v1",
            "abs/my-runtime",
            "real/shim",
        ];
        let script =
            format!("#!/bin/sh\nprintf '%s\\t%s\\n' \"$0\" \"$*\" >> '{}'\nexit 1\n", self.record_file().display());
        for recorder in recorders {
            write_mode(&self.root.join(recorder), script.as_bytes(), 0o755)?;
        }
        for inert in
            ["cwd/containerd-shim-noexec-v1", "p1/containerd-shim-pnoexec-v1", "bin/containerd-shim-selfnoexec-v1"]
        {
            write_mode(&self.root.join(inert), script.as_bytes(), 0o644)?;
        }
        fs::create_dir(self.root.join("p1/containerd-shim-pdir-v1"))?;
        std::os::unix::fs::symlink(self.root.join("real/shim"), self.root.join("p2/containerd-shim-realfake-v42"))?;

        // A link, not a symlink: containerd's os.Executable() must report this directory.
        let real_binary = fs::canonicalize(containerd_binary)?;
        let target = self.root.join("bin/containerd");
        if fs::hard_link(&real_binary, &target).is_err() {
            fs::copy(&real_binary, &target)?;
        }

        let config = format!(
            "version = 2\nroot = {root:?}\nstate = {state:?}\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = {grpc:?}\n[ttrpc]\n  address = {ttrpc:?}\n[debug]\n  address = {debug:?}\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = {opt:?}\n\
             [plugins.\"io.containerd.runtime.v1.linux\"]\n  runtime_root = {runc_v1:?}\n",
            root = self.path("root"),
            state = self.path("state"),
            grpc = self.path("c.sock"),
            ttrpc = self.path("c.ttrpc"),
            debug = self.path("d.sock"),
            opt = self.path("opt"),
            runc_v1 = self.path("runc-v1"),
        );
        fs::write(self.root.join("config.toml"), config)
    }

    fn start_containerd(&mut self) -> Result<(), String> {
        let log = fs::File::create(self.root.join("containerd.log")).map_err(|e| e.to_string())?;
        let log_err = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(self.root.join("bin/containerd"))
            .arg("--config")
            .arg(self.root.join("config.toml"))
            .current_dir(self.root.join("cwd"))
            .env_clear()
            .env("PATH", self.inherited_path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|error| format!("starting containerd: {error}"))?;
        self.containerd = Some(child);
        let socket = self.root.join("c.sock");
        let started = Instant::now();
        loop {
            if UnixStream::connect(&socket).is_ok() {
                return Ok(());
            }
            if let Some(child) = self.containerd.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("containerd exited early: {status}"));
                }
            }
            if started.elapsed() > START_DEADLINE {
                return Err("containerd did not open its socket in time".to_owned());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(self.root.join("containerd.log")).unwrap_or_default()
    }

    fn run_task(&mut self, ctr: &Path, name: &str, id: &str) -> Observed {
        let _ = fs::remove_file(self.record_file());
        self.task_ids.push(id.to_owned());
        let mut child = Command::new(ctr)
            .arg("--address")
            .arg(self.root.join("c.sock"))
            .args(["--namespace", NAMESPACE, "run", "--rm", "--runtime", name, "--fifo-dir"])
            .arg(self.root.join("fifo"))
            .arg("--rootfs")
            .arg(self.root.join("rootfs"))
            .args([id, "/payload"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ctr starts");
        let started = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if started.elapsed() < CTR_DEADLINE => std::thread::sleep(Duration::from_millis(5)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
            }
        };
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            use std::io::Read as _;
            let _ = pipe.read_to_string(&mut stderr);
        }
        if status.is_none() {
            stderr.push_str("\n(ctr timed out)");
        }
        let ran = fs::read_to_string(self.record_file())
            .unwrap_or_default()
            .lines()
            .map(|line| line.split('\t').next().unwrap_or_default().to_owned())
            .collect();
        Observed { ran, success: status.is_some_and(|status| status.success()), stderr }
    }

    fn stop(&mut self) {
        let Some(mut child) = self.containerd.take() else { return };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Undoes everything; returns what could not be undone or should not have been there.
    fn cleanup(&mut self) -> Vec<String> {
        self.stop();
        let mut leftovers = Vec::new();
        for pid in processes_under(&self.root) {
            leftovers.push(format!("process {pid} still ran from the lab (killed)"));
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        for mount_point in mounts_under(&self.root) {
            leftovers.push(format!("mount {mount_point} (detached)"));
            let _ = nix::mount::umount2(mount_point.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        // The legacy v1 runtime puts its shim socket at /run/containerd/s/<sha256(address/ns/id)>.
        for address in [self.path("c.sock"), self.path("c.ttrpc")] {
            for id in &self.task_ids {
                let digest = Sha256::digest(format!("{address}/{NAMESPACE}/{id}").as_bytes());
                let socket = PathBuf::from(format!("/run/containerd/s/{}", hex::encode(digest)));
                if socket.exists() {
                    leftovers.push(format!("socket {} (removed)", socket.display()));
                    let _ = fs::remove_file(&socket);
                }
            }
        }
        for dir in self.created_run_dirs.iter().rev() {
            // Only if still empty: another containerd may have started using it meanwhile.
            let _ = fs::remove_dir(dir);
        }
        if let Err(error) = fs::remove_dir_all(&self.root) {
            leftovers.push(format!("{}: {error}", self.root.display()));
        }
        leftovers
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.root.exists() {
            let _ = self.cleanup();
        }
    }
}

fn write_mode(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let mut file = fs::File::create(path)?;
    file.write_all(contents)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

fn processes_under(root: &Path) -> Vec<i32> {
    let needle = root.to_string_lossy().into_owned();
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != std::process::id() as i32)
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .map(|cmdline| String::from_utf8_lossy(&cmdline).contains(&needle))
                .unwrap_or(false)
        })
        .collect()
}

fn mounts_under(root: &Path) -> Vec<String> {
    let needle = root.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|mount_point| mount_point.starts_with(&needle))
        .map(str::to_owned)
        .collect()
}
