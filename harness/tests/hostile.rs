//! Hostile and broken shims against the harness itself (issue 13). Each test runs the real `shimcompat` binary on a
//! small shell-script shim (most wrap the bundled mock and misbehave around it) and checks what the user and the
//! host get: no file lost, no hang, nothing left behind, an error that names the cause. docs/hostile.md is the table
//! these tests keep true.
//!
//! Tests that need root (mounts) skip with the reason where it is missing; so does one that needs /usr/bin/python3.
mod daemon;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use daemon::{NamedTest, Verdict};

const SHIMCOMPAT: &str = env!("CARGO_BIN_EXE_shimcompat");
/// One lifecycle case: enough to get a shim through start, Connect, Create, Start, Wait, Delete, Shutdown.
const ONE_CASE: &str = "lifecycle::wait_exit_status_0";

fn mock() -> PathBuf {
    Path::new(SHIMCOMPAT).with_file_name("containerd-shim-mock-v1")
}

fn is_root() -> bool {
    shimcompat::host::is_root()
}

/// A private directory for one test, removed (never through a mount) by `Scratch::drop`.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("hostile-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("w")).expect("creating the test dir");
        Scratch(dir)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }

    fn work_dir(&self) -> PathBuf {
        self.0.join("w")
    }

    /// Writes an executable script shim.
    fn script(&self, name: &str, body: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, format!("#!/bin/bash\n{body}")).expect("writing the script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod the script");
        path
    }

    /// What the run left in its work dir (the run's own `shimcompat-*` directory must be gone).
    fn leftovers(&self) -> Vec<String> {
        let mut left: Vec<String> = std::fs::read_dir(self.work_dir())
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        left.extend(shimcompat::fstree::mounts_under(&self.0).into_iter().map(|m| format!("mount {m}")));
        left
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let removal = shimcompat::fstree::remove_tree(&self.0);
        if !removal.detached.is_empty() {
            eprintln!("hostile: detached {:?} while removing the test dir", removal.detached);
        }
    }
}

struct Ran {
    status: std::process::ExitStatus,
    stdout: String,
    stderr: String,
    took: Duration,
    /// Peak RSS of the shimcompat process (kB), from wait4.
    max_rss_kb: i64,
}

impl Ran {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }

    fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    fn describe(&self) -> String {
        let clip =
            |s: &str| if s.len() > 3000 { format!("{}... ({} bytes)", &s[..3000], s.len()) } else { s.to_string() };
        format!(
            "exit {:?} after {:.1}s; stdout:\n{}\nstderr:\n{}",
            self.code(),
            self.took.as_secs_f64(),
            clip(&self.stdout),
            clip(&self.stderr)
        )
    }
}

/// Runs shimcompat with a deadline (killed past it: a hang is a failure, reported as such).
fn shimcompat(args: &[&str], env: &[(&str, &str)], deadline: Duration) -> Result<Ran, String> {
    let dir = std::env::temp_dir();
    let out_path = dir.join(format!("hostile-out-{}-{:?}", std::process::id(), std::thread::current().id()));
    let err_path = out_path.with_extension("err");
    let out = std::fs::File::create(&out_path).map_err(|e| e.to_string())?;
    let err = std::fs::File::create(&err_path).map_err(|e| e.to_string())?;
    let mut command = Command::new(SHIMCOMPAT);
    command.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
    for (k, v) in env {
        command.env(k, v);
    }
    let started = Instant::now();
    let child = command.spawn().map_err(|e| format!("cannot run {SHIMCOMPAT}: {e}"))?;
    let pid = child.id() as i32;
    let (status, rusage) = loop {
        let mut status = 0;
        // SAFETY: wait4 on our own child, writing into locals.
        let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut rusage) };
        if rc == pid {
            break (std::process::ExitStatus::from_raw(status), rusage);
        }
        if rc < 0 {
            return Err(format!("wait4: {}", std::io::Error::last_os_error()));
        }
        if started.elapsed() > deadline {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            std::thread::sleep(Duration::from_secs(5));
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
            return Err(format!(
                "shimcompat {args:?} did not finish within {deadline:?} (a hang); stdout so far:\n{stdout}"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    let ran = Ran {
        status,
        stdout: read(&out_path),
        stderr: read(&err_path),
        took: started.elapsed(),
        max_rss_kb: rusage.ru_maxrss,
    };
    let _ = std::fs::remove_file(&out_path);
    let _ = std::fs::remove_file(&err_path);
    Ok(ran)
}

fn run_case(
    scratch: &Scratch,
    shim: &Path,
    filter: &str,
    env: &[(&str, &str)],
    deadline: Duration,
) -> Result<Ran, String> {
    let work = scratch.work_dir();
    shimcompat(
        &["run", "--runtime-binary", &shim.display().to_string(), "--work-dir", &work.display().to_string(), filter],
        env,
        deadline,
    )
}

/// Live processes with an argument containing `needle` (zombies are gone for this purpose).
fn processes_with_arg(needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = state.rsplit(')').next().map(|r| r.trim_start().starts_with('Z')).unwrap_or(true);
            !zombie && cmdline.split(|b| *b == 0).any(|arg| String::from_utf8_lossy(arg).contains(needle))
        })
        .collect()
}

macro_rules! check {
    ($cond:expr, $($why:tt)+) => {
        if !$cond {
            return Verdict::Fail(format!($($why)+));
        }
    };
}

macro_rules! ran {
    ($result:expr) => {
        match $result {
            Ok(ran) => ran,
            Err(e) => return Verdict::Fail(e),
        }
    };
}

/// A shim that bind mounts a directory of the host into its bundle, its bundle's rootfs and the run's log dir and
/// never unmounts it: teardown must detach those mounts, say so, and not delete one file of the mounts' source.
fn bind_mount_left_in_the_bundle() -> Verdict {
    if !is_root() {
        return Verdict::Skip("needs root to bind mount".into());
    }
    let scratch = Scratch::new("bind");
    let precious = scratch.path("precious");
    std::fs::create_dir_all(precious.join("sub")).expect("mkdir");
    let files = [("a", "first"), ("sub/b", "second")];
    for (name, text) in files {
        std::fs::write(precious.join(name), text).expect("writing a precious file");
    }
    // The bundle is <work>/state/io.containerd.runtime.v2.task/<ns>/<id>; the run's dir is four levels up.
    let shim = scratch.script(
        "containerd-shim-bindleak-v1",
        &format!(
            "if [ \"${{@: -1}}\" = start ]; then\n  \
               run=$(cd ../../../.. && pwd)\n  \
               mkdir -p leak rootfs/leak \"$run/logs/leak\" || exit 9\n  \
               for d in leak rootfs/leak \"$run/logs/leak\"; do mount --bind {} \"$d\" || exit 9; done\n\
             fi\nexec {} \"$@\"\n",
            precious.display(),
            mock().display()
        ),
    );
    let ran = ran!(run_case(&scratch, &shim, ONE_CASE, &[], Duration::from_secs(120)));
    for (name, text) in files {
        let now = std::fs::read_to_string(precious.join(name)).unwrap_or_else(|e| format!("<{e}>"));
        check!(
            now == text,
            "DATA LOSS: {} is now {now:?} after the run\n{}",
            precious.join(name).display(),
            ran.describe()
        );
    }
    check!(ran.code() == Some(1), "the leaked mounts must fail the case (exit 1)\n{}", ran.describe());
    check!(
        ran.stdout.contains("mount left under the bundle"),
        "the hygiene failure must name the mount\n{}",
        ran.describe()
    );
    check!(
        ran.stdout.contains("/logs/leak (detached)"),
        "the mount outside any bundle (in the run's log dir) must be reported as detached\n{}",
        ran.describe()
    );
    let left = scratch.leftovers();
    check!(left.is_empty(), "the run left {left:?}\n{}", ran.describe());
    Verdict::Pass
}

/// The harness blocks SIGHUP/SIGINT/SIGTERM for its signal thread; the shims it starts must not inherit that mask
/// (under containerd they start with none, and SIGTERM must reach them and their containers).
fn shims_start_with_no_blocked_signals() -> Verdict {
    let scratch = Scratch::new("sigmask");
    let seen = scratch.path("sigblk");
    // bash builtins only: a forked reader would report its own mask.
    let shim = scratch.script(
        "containerd-shim-sigmask-v1",
        &format!(
            "while read -r key value; do [ \"$key\" = SigBlk: ] && echo \"${{@: -1}} $value\" >> {}; done < /proc/self/status\n\
             exec {} \"$@\"\n",
            seen.display(),
            mock().display()
        ),
    );
    let ran = ran!(run_case(&scratch, &shim, ONE_CASE, &[], Duration::from_secs(120)));
    check!(ran.code() == Some(0), "the wrapped mock must pass\n{}", ran.describe());
    let lines = std::fs::read_to_string(&seen).unwrap_or_default();
    check!(lines.lines().any(|l| l.starts_with("start ")), "the shim never recorded its mask at `start`: {lines:?}");
    for line in lines.lines() {
        let mask = line.split_whitespace().nth(1).unwrap_or("");
        check!(
            mask.chars().all(|c| c == '0'),
            "a shim started with blocked signals: {line} (SigBlk; containerd blocks none)"
        );
    }
    Verdict::Pass
}

/// 200 MB from `start`: the harness keeps a bounded part, says how much there was, and stays small.
fn huge_start_output() -> Verdict {
    let scratch = Scratch::new("huge");
    let shim = scratch.script("containerd-shim-huge-v1", "head -c 200000000 /dev/zero | tr '\\0' a\nexit 0\n");
    let ran = ran!(run_case(&scratch, &shim, ONE_CASE, &[], Duration::from_secs(120)));
    check!(ran.code() == Some(1), "must fail the case\n{}", ran.describe());
    check!(
        ran.stdout.contains("200000000 bytes on stdout"),
        "the error must say how much `start` wrote\n{}",
        ran.describe()
    );
    check!(ran.stdout.len() < 256 * 1024, "the output quotes {} bytes of the shim's reply", ran.stdout.len());
    // Before the cap: about 1 GB.
    check!(
        ran.max_rss_kb < 200 * 1024,
        "shimcompat peaked at {} MB RSS reading 200 MB of `start` output",
        ran.max_rss_kb / 1024
    );
    let left = scratch.leftovers();
    check!(left.is_empty(), "the run left {left:?}");
    Verdict::Pass
}

/// A shim that writes one 40 MB line to its log: the harness keeps 16 MiB (with a marker), keeps draining so the
/// shim never blocks, and stays small.
fn log_flood() -> Verdict {
    let scratch = Scratch::new("logflood");
    let shim = scratch.script(
        "containerd-shim-logflood-v1",
        &format!(
            "[ \"${{@: -1}}\" = start ] && head -c 40000000 /dev/zero | tr '\\0' x > log\nexec {} \"$@\"\n",
            mock().display()
        ),
    );
    let work = scratch.work_dir().display().to_string();
    let ran = ran!(shimcompat(
        &["run", "--runtime-binary", &shim.display().to_string(), "--work-dir", &work, "--keep", ONE_CASE],
        &[],
        Duration::from_secs(120)
    ));
    check!(ran.code() == Some(0), "the flooding shim otherwise works: the case must pass\n{}", ran.describe());
    let logs: Vec<PathBuf> = std::fs::read_dir(scratch.work_dir())
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|run| std::fs::read_dir(run.path().join("logs")).into_iter().flatten().flatten().map(|e| e.path()))
        .collect();
    check!(!logs.is_empty(), "--keep kept no shim log\n{}", ran.describe());
    let biggest = logs.iter().filter_map(|p| std::fs::metadata(p).ok().map(|m| (m.len(), p.clone()))).max();
    let Some((size, path)) = biggest else { return Verdict::Fail("no readable shim log".into()) };
    check!(size <= 16 * 1024 * 1024 + 4096, "{} is {size} bytes: over the 16 MiB cap", path.display());
    let tail = std::fs::read(&path)
        .map(|b| String::from_utf8_lossy(&b[b.len().saturating_sub(200)..]).into_owned())
        .unwrap_or_default();
    check!(tail.contains("log cut at"), "the cut must be marked: ...{tail}");
    check!(ran.max_rss_kb < 200 * 1024, "shimcompat peaked at {} MB RSS", ran.max_rss_kb / 1024);
    Verdict::Pass
}

/// An address naming a regular file: Connect fails, and the harness must not delete the file it named.
fn address_naming_a_file_is_not_deleted() -> Verdict {
    let scratch = Scratch::new("victim");
    let victim = scratch.path("victim");
    std::fs::write(&victim, "keep me").expect("writing the victim");
    let shim = scratch.script("containerd-shim-victim-v1", &format!("echo unix://{}\nexit 0\n", victim.display()));
    let ran = ran!(run_case(&scratch, &shim, ONE_CASE, &[], Duration::from_secs(120)));
    check!(ran.code() == Some(1), "must fail the case\n{}", ran.describe());
    check!(ran.stdout.contains("connecting to"), "the failure must name the Connect\n{}", ran.describe());
    check!(
        std::fs::read_to_string(&victim).ok().as_deref() == Some("keep me"),
        "DATA LOSS: the harness removed {} (the shim's address)\n{}",
        victim.display(),
        ran.describe()
    );
    Verdict::Pass
}

/// An address nothing listens on: Connect fails at once, naming the address.
fn address_never_listens() -> Verdict {
    let scratch = Scratch::new("nolisten");
    let address = scratch.path("nobody.sock");
    let shim = scratch.script("containerd-shim-nolisten-v1", &format!("echo unix://{}\nexit 0\n", address.display()));
    let ran = ran!(run_case(&scratch, &shim, ONE_CASE, &[], Duration::from_secs(120)));
    check!(ran.code() == Some(1), "must fail the case\n{}", ran.describe());
    check!(
        ran.stdout.contains(&format!("connecting to unix://{}", address.display())),
        "the failure must name the address\n{}",
        ran.describe()
    );
    check!(ran.took < Duration::from_secs(30), "took {:?}", ran.took);
    Verdict::Pass
}

/// A server that accepts and closes at once: Connect fails; the server is killed and its socket removed.
fn server_that_closes_at_once() -> Verdict {
    let python = Path::new("/usr/bin/python3");
    if !python.exists() {
        return Verdict::Skip("needs /usr/bin/python3 for the socket server".into());
    }
    let scratch = Scratch::new("closer");
    let socket = scratch.path("s.sock");
    let server = "import os, socket, sys\n\
                  path = sys.argv[1]\n\
                  s = socket.socket(socket.AF_UNIX)\n\
                  s.bind(path)\n\
                  s.listen(16)\n\
                  if os.fork():\n    print('unix://' + path, flush=True)\n    os._exit(0)\n\
                  os.setsid()\n\
                  for fd in (0, 1, 2):\n    os.close(fd)\n\
                  while True:\n    c, _ = s.accept()\n    c.close()\n";
    std::fs::write(scratch.path("server.py"), server).expect("writing the server");
    let shim = scratch.script(
        "containerd-shim-closer-v1",
        &format!(
            "[ \"${{@: -1}}\" = start ] || exit 0\nexec {} {} {}\n",
            python.display(),
            scratch.path("server.py").display(),
            socket.display()
        ),
    );
    let ran = ran!(run_case(&scratch, &shim, ONE_CASE, &[], Duration::from_secs(120)));
    check!(ran.code() == Some(1), "must fail the case\n{}", ran.describe());
    check!(ran.stdout.contains("connection failed"), "the failure must name the connection\n{}", ran.describe());
    check!(ran.stdout.contains("socket left after the shim exited"), "the socket must be reported\n{}", ran.describe());
    check!(!socket.exists(), "the server's socket {} was left behind\n{}", socket.display(), ran.describe());
    let alive = processes_with_arg(&scratch.path("server.py").display().to_string());
    check!(alive.is_empty(), "the server is still running: pids {alive:?}\n{}", ran.describe());
    Verdict::Pass
}

/// A `needs.probe` that never ends: the candidate is skipped after the probe deadline, and the probe is killed.
fn probe_that_sleeps() -> Verdict {
    let scratch = Scratch::new("probe");
    let marker = format!("31.{}", std::process::id());
    let file = scratch.path("sleepy.toml");
    std::fs::write(
        &file,
        format!(
            "description = \"a probe that never ends\"\nruntime_binary = \"{}\"\n[needs]\nprobe = \"sleep {marker} & sleep {marker}\"\n",
            mock().display()
        ),
    )
    .expect("writing the candidate");
    let ran = ran!(shimcompat(
        &["run", "--candidate", &file.display().to_string(), "--work-dir", &scratch.work_dir().display().to_string()],
        &[("SHIMCOMPAT_PROBE_DEADLINE", "1")],
        Duration::from_secs(60),
    ));
    check!(ran.all().contains("did not finish within 1s"), "the skip must say the probe timed out\n{}", ran.describe());
    check!(ran.took < Duration::from_secs(30), "took {:?}", ran.took);
    std::thread::sleep(Duration::from_millis(200));
    let sleepers = processes_with_arg(&marker);
    check!(sleepers.is_empty(), "the probe's processes outlived it: {sleepers:?}");
    Verdict::Pass
}

/// A shim that double-forks a child which calls setsid, clears its environment and changes to `/`: neither the
/// marker nor the cwd check sees it; the trial's tracking cgroup does. The case fails naming it, and it is killed.
fn escaped_double_fork() -> Verdict {
    if !is_root() {
        return Verdict::Skip("needs root: tracking by cgroup is a root-only feature".into());
    }
    if shimcompat::process::cgroup::cgroup2_mount().is_none() {
        return Verdict::Skip("no cgroup2 mount on this host to track shims by".into());
    }
    let scratch = Scratch::new("escape");
    let marker = format!("3600.{}", std::process::id());
    let shim = scratch.script(
        "containerd-shim-escape-v1",
        &format!(
            "if [ \"${{@: -1}}\" = start ]; then\n  \
               ( setsid env -i /bin/sh -c 'cd / && exec sleep {marker}' </dev/null >/dev/null 2>&1 & )\n\
             fi\nexec {} \"$@\"\n",
            mock().display()
        ),
    );
    // --keep leaves the work dir, whose name gives the run's nonce (and so its tracking cgroup's name).
    let work = scratch.work_dir().display().to_string();
    let ran = ran!(shimcompat(
        &["run", "--runtime-binary", &shim.display().to_string(), "--work-dir", &work, "--keep", ONE_CASE],
        &[],
        Duration::from_secs(120)
    ));
    std::thread::sleep(Duration::from_millis(200));
    let escaped = processes_with_arg(&marker);
    for pid in &escaped {
        // SAFETY: killing a process this test made a shim start.
        unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
    }
    check!(escaped.is_empty(), "the escaped child outlived the run: pids {escaped:?}\n{}", ran.describe());
    check!(ran.code() == Some(1), "the escape must fail the case (exit 1)\n{}", ran.describe());
    check!(
        ran.stdout.contains("found by the trial's cgroup") && ran.stdout.contains(&marker),
        "the hygiene failure must name the escaped process\n{}",
        ran.describe()
    );
    let kept: Vec<String> = std::fs::read_dir(scratch.work_dir())
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    let Some(nonce) = kept.iter().find_map(|n| n.strip_prefix("shimcompat-")) else {
        return Verdict::Fail(format!("--keep kept no work dir: {kept:?}"));
    };
    let tracking = shimcompat::process::cgroup::cgroup2_mount()
        .unwrap()
        .join(format!("{}{nonce}", shimcompat::process::cgroup::TRACKING_PREFIX));
    check!(!tracking.exists(), "the run's tracking cgroup {} was left", tracking.display());
    Verdict::Pass
}

/// Ctrl-C in the middle of a run: the trials in flight are skipped as interrupted (not failed), the summary and the
/// JSON report are still written, the exit code is 130, and nothing of the run is left.
fn interrupted_run() -> Verdict {
    let scratch = Scratch::new("sigint");
    let report = scratch.path("report.json");
    let work = scratch.work_dir().display().to_string();
    let out = std::fs::File::create(scratch.path("stdout")).expect("stdout file");
    let mut child = match Command::new(SHIMCOMPAT)
        .args(["run", "--work-dir", &work, "--report-json", &report.display().to_string()])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => return Verdict::Fail(format!("cannot run {SHIMCOMPAT}: {e}")),
    };
    // Wait until trials are running (the first result line), then interrupt.
    let started = Instant::now();
    while !std::fs::read_to_string(scratch.path("stdout")).unwrap_or_default().contains("\ntest ") {
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            return Verdict::Fail("no trial started within 60s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let interrupted = Instant::now();
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        if interrupted.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            return Verdict::Fail("shimcompat did not exit within 30s of SIGINT".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = interrupted.elapsed();
    let stdout = std::fs::read_to_string(scratch.path("stdout")).unwrap_or_default();
    check!(status.code() == Some(130), "exit {status} after SIGINT (want 130)\n{stdout}");
    check!(stdout.contains("interrupted by SIGINT"), "the summary must say the run was interrupted\n{stdout}");
    check!(stdout.contains("test result: FAILED"), "the summary line must be printed\n{stdout}");
    let json = std::fs::read_to_string(&report).unwrap_or_default();
    check!(json.contains("\"interrupted\": \"SIGINT\""), "the JSON report must be written and say so: {json:.300}");
    check!(
        !stdout.lines().any(|l| l.starts_with("test ") && !l.starts_with("test result") && l.contains("FAILED")),
        "a trial the harness stopped is not a shim failure\n{stdout}"
    );
    let left = scratch.leftovers();
    check!(left.is_empty(), "the interrupted run left {left:?}");
    let running = processes_in(&scratch.0);
    check!(running.is_empty(), "processes of the interrupted run are still running: {running:?}");
    eprintln!("hostile::interrupted_run: exited {:.2}s after SIGINT", took.as_secs_f64());
    Verdict::Pass
}

/// SIGKILL of the harness mid-run leaves shims, containers and files (nothing can run in a killed process);
/// `shimcompat clean` finds them by the run's record and marks, removes them and says what it removed.
fn killed_run_then_clean() -> Verdict {
    let scratch = Scratch::new("sigkill");
    let registry = scratch.path("registry");
    let registry_text = registry.display().to_string();
    let work = scratch.work_dir().display().to_string();
    let out = std::fs::File::create(scratch.path("stdout")).expect("stdout file");
    let mut child = match Command::new(SHIMCOMPAT)
        .args(["run", "--work-dir", &work, "--test-threads", "2"])
        .env("SHIMCOMPAT_REGISTRY", &registry)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => return Verdict::Fail(format!("cannot run {SHIMCOMPAT}: {e}")),
    };
    let pid = child.id();
    let started = Instant::now();
    // Killed while trials run: after a few results, so that shims and containers are live.
    while std::fs::read_to_string(scratch.path("stdout")).unwrap_or_default().matches("\ntest ").count() < 3 {
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            return Verdict::Fail("no trial finished within 60s".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    let before = scratch.leftovers();
    check!(!before.is_empty(), "the killed run left nothing to clean (the test proves nothing): work dir empty");
    let ran = ran!(shimcompat(&["clean"], &[("SHIMCOMPAT_REGISTRY", registry_text.as_str())], Duration::from_secs(60)));
    check!(ran.code() == Some(0), "clean must succeed\n{}", ran.describe());
    check!(
        ran.stdout.contains(&format!("an earlier run (pid {pid},")) && ran.stdout.contains("directory "),
        "clean must name the killed run and what it removed\n{}",
        ran.describe()
    );
    std::thread::sleep(Duration::from_millis(200));
    let left = scratch.leftovers();
    check!(left.is_empty(), "after clean, still there: {left:?}\n{}", ran.describe());
    let running = processes_in(&scratch.0);
    check!(running.is_empty(), "after clean, processes of the killed run still run: {running:?}\n{}", ran.describe());
    let again =
        ran!(shimcompat(&["clean"], &[("SHIMCOMPAT_REGISTRY", registry_text.as_str())], Duration::from_secs(60)));
    check!(again.stdout.contains("nothing to clean"), "a second clean must find nothing\n{}", again.describe());
    Verdict::Pass
}

/// A shim that mounts a tmpfs outside its bundle and leaves a stray file in /run/containerd/s: the run reports both
/// (and fails); it removes neither, since nothing proves they are the run's.
fn mount_outside_and_stray_file() -> Verdict {
    if !is_root() {
        return Verdict::Skip("needs root to mount and to write /run/containerd/s".into());
    }
    let scratch = Scratch::new("outside");
    let outside = scratch.path("outside");
    std::fs::create_dir_all(&outside).expect("mkdir");
    let stray = PathBuf::from(format!("/run/containerd/s/shimcompat-hostile-stray-{}", std::process::id()));
    let shim = scratch.script(
        "containerd-shim-outside-v1",
        &format!(
            "if [ \"${{@: -1}}\" = start ]; then\n  \
               mountpoint -q {out} || mount -t tmpfs hostile {out} || exit 9\n  \
               mkdir -p /run/containerd/s && : > {stray}\n\
             fi\nexec {} \"$@\"\n",
            mock().display(),
            out = outside.display(),
            stray = stray.display()
        ),
    );
    let ran = run_case(&scratch, &shim, ONE_CASE, &[], Duration::from_secs(120));
    let mounted = shimcompat::fstree::mounts_under(&outside);
    let _ = nix::mount::umount2(&outside, nix::mount::MntFlags::MNT_DETACH);
    let stray_existed = stray.exists();
    let _ = std::fs::remove_file(&stray);
    let ran = ran!(ran);
    check!(
        !mounted.is_empty(),
        "the shim's mount was not there after the run: the test proves nothing\n{}",
        ran.describe()
    );
    check!(stray_existed, "the stray file was not there after the run: the test proves nothing\n{}", ran.describe());
    check!(ran.code() == Some(1), "what the shim left must fail the run (exit 1)\n{}", ran.describe());
    check!(
        ran.stdout.contains(&format!("mount {} appeared during the run", outside.display())),
        "the mount outside the bundle must be reported\n{}",
        ran.describe()
    );
    check!(
        ran.stdout.contains(&format!("file {} appeared during the run", stray.display())),
        "the stray file must be reported\n{}",
        ran.describe()
    );
    Verdict::Pass
}

/// `shimcompat run | head -1`: the reader goes away; the run stops as on an interrupt (no panic), cleans up and
/// exits 141 as a process killed by SIGPIPE would.
fn stdout_closed_mid_run() -> Verdict {
    use std::io::BufRead;
    let scratch = Scratch::new("pipe");
    let work = scratch.work_dir().display().to_string();
    let mut child = match Command::new(SHIMCOMPAT)
        .args(["run", "--work-dir", &work])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => return Verdict::Fail(format!("cannot run {SHIMCOMPAT}: {e}")),
    };
    let mut reader = std::io::BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut first = String::new();
    let _ = reader.read_line(&mut first);
    drop(reader);
    let closed = Instant::now();
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        if closed.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            return Verdict::Fail("shimcompat did not stop within 90s of its stdout closing".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        use std::io::Read;
        let _ = pipe.read_to_string(&mut stderr);
    }
    check!(!stderr.contains("panicked"), "a closed stdout must not panic the harness:\n{stderr}");
    check!(status.code() == Some(141), "exit {status} after stdout closed (want 141)\n{stderr}");
    let left = scratch.leftovers();
    check!(left.is_empty(), "the run left {left:?}");
    let running = processes_in(&scratch.0);
    check!(running.is_empty(), "processes of the run are still running: {running:?}");
    Verdict::Pass
}

/// Live processes whose working directory is under `dir`.
fn processes_in(dir: &Path) -> Vec<u32> {
    shimcompat::process::processes_in(&[dir.to_path_buf()])
}

/// A long $TMPDIR and a long --work-dir: sockets must still fit a socket address (they go where they fit), so the
/// mock passes; before, nearly every case failed with "path must be shorter than SUN_LEN".
fn long_tmpdir_and_work_dir() -> Verdict {
    let scratch = Scratch::new("longpath");
    let long = scratch.path(&"d".repeat(120));
    std::fs::create_dir_all(&long).expect("mkdir the long dir");
    let long_text = long.display().to_string();
    let ran = ran!(shimcompat(
        &["run", "--work-dir", &long_text, ONE_CASE],
        &[("TMPDIR", long_text.as_str())],
        Duration::from_secs(120)
    ));
    check!(ran.code() == Some(0), "the mock must pass with a long TMPDIR and work dir\n{}", ran.describe());
    check!(ran.stdout.contains("1 passed"), "one case must have run\n{}", ran.describe());
    Verdict::Pass
}

/// Bad input gets a clear error naming the cause and exit 2, before anything runs.
fn bad_input() -> Verdict {
    let scratch = Scratch::new("badinput");
    let work = scratch.work_dir().display().to_string();
    let candidate = |file: &str, body: &str| {
        let path = scratch.path(file);
        std::fs::write(&path, format!("runtime_binary = \"{}\"\n{body}", mock().display()))
            .expect("writing a candidate");
        path.display().to_string()
    };
    let waiver = candidate("waiver.toml", "[[waivers]]\ncase = \"exec::no_such_case\"\nreason = \"typo\"\n");
    let feature = candidate("feature.toml", "unsupported = [\"exex\"]\n");
    let twin_a = candidate("twin-a.toml", "name = \"twin\"\n");
    let twin_b = candidate("twin-b.toml", "name = \"twin\"\n");
    let baseline = concat!(env!("CARGO_MANIFEST_DIR"), "/../results/baselines");
    let foreign = scratch.path("foreign.json");
    std::fs::write(&foreign, r#"{"schema": "someone.else/v1", "results": []}"#).expect("writing foreign json");
    let foreign = foreign.display().to_string();
    let probes: Vec<(Vec<&str>, &str)> = vec![
        (vec!["run", "--work-dir", &work, "--faults", "no-such-fault"], "\"no-such-fault\" is not a mock fault"),
        (
            vec!["run", "--work-dir", &work, "--candidate", &waiver],
            "waiver.toml:3: the waiver for \"exec::no_such_case\" names no case",
        ),
        (
            vec!["run", "--work-dir", &work, "--candidate", &feature],
            "feature.toml:2: unsupported feature \"exex\" is needed by no case",
        ),
        (
            vec!["run", "--work-dir", &work, "--candidate", &twin_a, "--candidate", &twin_b],
            "two candidates are named \"twin\"",
        ),
        (vec!["compare", baseline, &foreign], "not a report of schema shimcompat.report/v2"),
    ];
    for (args, expected) in probes {
        let ran = ran!(shimcompat(&args, &[], Duration::from_secs(30)));
        check!(ran.code() == Some(2), "{args:?} must be a usage error (exit 2)\n{}", ran.describe());
        check!(ran.stderr.contains(expected), "{args:?}: the error must say {expected:?}\n{}", ran.describe());
        check!(!ran.stdout.contains("running "), "{args:?}: nothing may run\n{}", ran.describe());
    }
    let left = scratch.leftovers();
    check!(left.is_empty(), "bad input left {left:?}");
    Verdict::Pass
}

/// As non-root, a shim whose `start` the host refuses (the Go runc shim's "mkdir /run/containerd/s: permission
/// denied") is a host problem: its trials are skipped saying it needs root, not failed one by one.
fn non_root_host_refusal() -> Verdict {
    if !is_root() {
        return Verdict::Skip("needs root to run shimcompat as another user".into());
    }
    if which("setpriv").is_none() {
        return Verdict::Skip("needs setpriv (util-linux) to drop to uid 65534".into());
    }
    let dirs_ok = Path::new(SHIMCOMPAT)
        .ancestors()
        .skip(1)
        .all(|d| std::fs::metadata(d).map(|m| m.permissions().mode() & 0o001 != 0).unwrap_or(false));
    if !dirs_ok {
        return Verdict::Skip(format!(
            "uid 65534 cannot reach {SHIMCOMPAT} (a directory above it is not world-searchable)"
        ));
    }
    let scratch = Scratch::new("nonroot");
    let _ = std::fs::set_permissions(&scratch.0, std::fs::Permissions::from_mode(0o777));
    let _ = std::fs::set_permissions(scratch.work_dir(), std::fs::Permissions::from_mode(0o777));
    let shim = scratch.script(
        "containerd-shim-nonroot-v1",
        &format!(
            "mkdir -p /run/containerd/s/shimcompat-nonroot-probe-$$ || exit 1\nexec {} \"$@\"\n",
            mock().display()
        ),
    );
    let work = scratch.work_dir().display().to_string();
    let shim_text = shim.display().to_string();
    let mut args = vec!["--reuid", "65534", "--regid", "65534", "--clear-groups", SHIMCOMPAT];
    args.extend(["run", "--runtime-binary", &shim_text, "--work-dir", &work, "lifecycle::"]);
    let out = Command::new("setpriv")
        .args(&args)
        .env("TMPDIR", &work)
        .env_remove("XDG_RUNTIME_DIR")
        .stdin(Stdio::null())
        .output();
    let out = match out {
        Ok(out) => out,
        Err(e) => return Verdict::Fail(format!("cannot run setpriv: {e}")),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let shown = format!("exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status.code());
    check!(!stdout.contains("FAILED ("), "a host refusal must not fail trials one by one\n{shown}");
    check!(stdout.contains("skipped: needs root here"), "the trials must be skipped saying root is needed\n{shown}");
    check!(stdout.contains("Permission denied"), "the skip must quote the host's refusal\n{shown}");
    Verdict::Pass
}

fn which(name: &str) -> Option<PathBuf> {
    shimcompat::host::which(name)
}

/// The exit policy (issue 10): --fail-on, an empty run, --allow-empty, a --candidate that cannot run here; and
/// --junit read back by a standard XML parser.
fn exit_policy_and_junit() -> Verdict {
    let scratch = Scratch::new("policy");
    let work = scratch.work_dir().display().to_string();
    // kill::exited_task_not_found is a SHOULD case; kill-exited-ok breaks it.
    let should_fault = ["run", "-q", "--work-dir", &work, "--faults", "kill-exited-ok", "kill::exited_task_not_found"];
    for (policy, want) in [("any", 1), ("should", 1), ("must", 0)] {
        let mut args = should_fault.to_vec();
        args.extend(["--fail-on", policy]);
        let ran = ran!(shimcompat(&args, &[], Duration::from_secs(60)));
        check!(
            ran.code() == Some(want),
            "a SHOULD failure under --fail-on {policy} must exit {want}\n{}",
            ran.describe()
        );
    }
    let ran =
        ran!(shimcompat(&["run", "-q", "--work-dir", &work, "no_such_case_anywhere"], &[], Duration::from_secs(60)));
    check!(
        ran.code() == Some(3) && ran.stderr.contains("nothing ran"),
        "an empty run must exit 3 saying so\n{}",
        ran.describe()
    );
    let ran = ran!(shimcompat(
        &["run", "-q", "--work-dir", &work, "--allow-empty", "no_such_case_anywhere"],
        &[],
        Duration::from_secs(60)
    ));
    check!(ran.code() == Some(0), "--allow-empty must accept an empty run\n{}", ran.describe());
    let absent = scratch.path("absent.toml");
    std::fs::write(&absent, "runtime = \"io.containerd.absent.v1\"\n").expect("writing the candidate");
    let ran = ran!(shimcompat(
        &["run", "-q", "--work-dir", &work, "--candidate", &absent.display().to_string()],
        &[],
        Duration::from_secs(60)
    ));
    check!(ran.code() == Some(3), "a --candidate that cannot run here must exit 3\n{}", ran.describe());

    let junit = scratch.path("junit.xml");
    let ran = ran!(shimcompat(
        &[
            "run",
            "-q",
            "--work-dir",
            &work,
            "--faults",
            "kill-exited-ok",
            "--junit",
            &junit.display().to_string(),
            "kill::"
        ],
        &[],
        Duration::from_secs(120)
    ));
    check!(ran.code() == Some(1), "the faulty run must fail\n{}", ran.describe());
    let python = Path::new("/usr/bin/python3");
    if !python.exists() {
        return Verdict::Skip("exit policy checked; the JUnit check needs /usr/bin/python3 (xml.etree)".into());
    }
    let script = "import sys, xml.etree.ElementTree as ET\n\
                  root = ET.parse(sys.argv[1]).getroot()\n\
                  cases = root.findall('.//testcase')\n\
                  failed = [c.get('name') for c in cases if c.find('failure') is not None]\n\
                  print(root.tag, len(root.findall('testsuite')), len(cases), ','.join(failed))\n";
    let out = Command::new(python).arg("-c").arg(script).arg(&junit).output();
    let out = match out {
        Ok(out) => out,
        Err(e) => return Verdict::Fail(format!("cannot run python3: {e}")),
    };
    let parsed = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let fields: Vec<&str> = parsed.split(' ').collect();
    check!(
        out.status.success(),
        "python's XML parser refused the JUnit file: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    check!(
        fields.first() == Some(&"testsuites") && fields.get(1) == Some(&"1"),
        "want one testsuite under testsuites: {parsed}"
    );
    let failed = fields.get(3).copied().unwrap_or("");
    check!(
        failed.split(',').any(|c| c == "kill::exited_task_not_found"),
        "the failing case must be a <failure>: {parsed}"
    );
    let listed: usize = fields.get(2).and_then(|n| n.parse().ok()).unwrap_or(0);
    let expected = ran.stdout.matches(['.', 'F', 's', 'w']).count();
    check!(listed > 1, "the JUnit file lists {listed} test cases: {parsed} (terse marks seen: {expected})");
    Verdict::Pass
}

/// `compare` of a filtered run against the committed mock baseline: the cases not run are not regressions.
fn compare_filtered_run() -> Verdict {
    let scratch = Scratch::new("compare");
    let work = scratch.work_dir().display().to_string();
    let report = scratch.path("report.json").display().to_string();
    let ran = ran!(shimcompat(
        &["run", "-q", "--containerd", "1.6", "--work-dir", &work, "--report-json", &report, "kill::"],
        &[],
        Duration::from_secs(120)
    ));
    check!(ran.code() == Some(0), "the mock must pass kill::\n{}", ran.describe());
    let baseline = concat!(env!("CARGO_MANIFEST_DIR"), "/../results/baselines/mock@1.6.json");
    let compared = ran!(shimcompat(&["compare", baseline, &report], &[], Duration::from_secs(30)));
    check!(compared.code() == Some(0), "a filtered run must not be a regression\n{}", compared.describe());
    check!(
        compared.stdout.contains("absent from the report (not run"),
        "the cases not run must be said\n{}",
        compared.describe()
    );
    check!(!compared.stdout.contains("REGRESSION"), "no regression expected\n{}", compared.describe());
    Verdict::Pass
}

/// The JSON report of a run with a failure, a skip and a waiver matches docs/report.schema.json (checked by a small
/// validator for the keywords the schema uses: type, required, properties, items, enum), and each outcome carries
/// the fields it must.
fn report_matches_schema() -> Verdict {
    let scratch = Scratch::new("schema");
    let work = scratch.work_dir().display().to_string();
    let report_path = scratch.path("report.json");
    let candidate = scratch.path("waiving.toml");
    std::fs::write(
        &candidate,
        format!(
            "runtime = \"{}\"\nunsupported = [\"exec\"]\n[[waivers]]\ncase = \"kill::exited_task_not_found\"\nreason = \"known\"\n",
            shimcompat::candidate::MOCK_RUNTIME
        ),
    )
    .expect("writing the candidate");
    let ran = ran!(shimcompat(
        &[
            "run",
            "-q",
            "--work-dir",
            &work,
            "--candidate",
            &candidate.display().to_string(),
            "--faults",
            "kill-exited-ok,kill-all-ignored",
            "--report-json",
            &report_path.display().to_string(),
            "kill::",
        ],
        &[],
        Duration::from_secs(120)
    ));
    check!(ran.code() == Some(1), "the faulty run must fail\n{}", ran.describe());
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../../docs/report.schema.json")).expect("docs/report.schema.json is JSON");
    let report: serde_json::Value = match std::fs::read_to_string(&report_path).map(|t| serde_json::from_str(&t)) {
        Ok(Ok(report)) => report,
        other => return Verdict::Fail(format!("no JSON report: {other:?}")),
    };
    let mut problems = Vec::new();
    validate(&schema, &report, "$", &mut problems);
    check!(problems.is_empty(), "the report does not match the schema:\n  {}", problems.join("\n  "));
    let results = report["results"].as_array().cloned().unwrap_or_default();
    let with = |outcome: &str| results.iter().filter(|r| r["outcome"] == outcome).cloned().collect::<Vec<_>>();
    for (outcome, fields) in
        [("fail", &["message", "evidence"][..]), ("skip", &["reason"][..]), ("waived", &["reason", "message"][..])]
    {
        let found = with(outcome);
        check!(!found.is_empty(), "the run was meant to have a {outcome} outcome: {}", ran.describe());
        for result in found {
            for field in fields {
                check!(result[*field].is_string(), "a {outcome} result lacks {field}: {result}");
            }
        }
    }
    Verdict::Pass
}

/// `shimcompat report` merges reports: two hosts stay apart (a row per host), and each format renders.
fn report_merges_hosts() -> Verdict {
    let scratch = Scratch::new("merge");
    let work = scratch.work_dir().display().to_string();
    let first = scratch.path("a.json");
    let ran = ran!(shimcompat(
        &[
            "run",
            "-q",
            "--work-dir",
            &work,
            "--faults",
            "kill-exited-ok",
            "--report-json",
            &first.display().to_string(),
            "kill::"
        ],
        &[],
        Duration::from_secs(120)
    ));
    check!(ran.code() == Some(1), "the faulty run must fail\n{}", ran.describe());
    // The same report as another host would have written it.
    let mut other: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&first).unwrap_or_default()).unwrap_or_default();
    other["host"]["kernel"] = serde_json::Value::String("9.9.9-other-host".into());
    let second = scratch.path("b.json");
    std::fs::write(&second, other.to_string()).expect("writing the second report");
    let (a, b) = (first.display().to_string(), second.display().to_string());
    let md = ran!(shimcompat(&["report", &a, &b], &[], Duration::from_secs(30)));
    check!(md.code() == Some(0), "report must render\n{}", md.describe());
    check!(
        md.stdout.contains("host 2: ")
            && md.stdout.contains("9.9.9-other-host")
            && md.stdout.contains("| mock (host 1) |")
            && md.stdout.contains("| mock (host 2) |"),
        "the merged Markdown must keep the hosts apart\n{}",
        md.stdout
    );
    let junit = ran!(shimcompat(&["report", "--format", "junit", &a, &b], &[], Duration::from_secs(30)));
    check!(
        junit.stdout.matches("<testsuite ").count() == 2,
        "two testsuites expected in the merged JUnit\n{}",
        junit.stdout
    );
    let json = ran!(shimcompat(&["report", "--format", "json", &a], &[], Duration::from_secs(30)));
    check!(
        json.stdout.contains("\"schema\": \"shimcompat.report/v2\""),
        "the JSON must keep the schema\n{}",
        json.describe()
    );
    let bad = ran!(shimcompat(
        &["report", &scratch.path("missing.json").display().to_string()],
        &[],
        Duration::from_secs(30)
    ));
    check!(
        bad.code() == Some(2) && bad.stderr.contains("missing.json"),
        "a missing report must be a usage error naming it\n{}",
        bad.describe()
    );
    Verdict::Pass
}

/// --retries turns a failure that then passes into `flaky` (not a pass); --fail-fast stops starting trials after
/// the first failure; --rerun-failed runs exactly what failed in a report.
fn retries_fail_fast_rerun() -> Verdict {
    let scratch = Scratch::new("retries");
    let work = scratch.work_dir().display().to_string();
    // `start` number 2 fails (number 1 is the verdict probe, 2 the trial, 3 its retry).
    let count = scratch.path("starts");
    let shim = scratch.script(
        "containerd-shim-flaky-v1",
        &format!(
            "if [ \"${{@: -1}}\" = start ]; then\n  n=$(( $(cat {c} 2>/dev/null || echo 0) + 1 )); echo $n > {c}\n  \
               [ $n = 2 ] && {{ echo 'flaky start' >&2; exit 1; }}\n\
             fi\nexec {} \"$@\"\n",
            mock().display(),
            c = count.display()
        ),
    );
    let report = scratch.path("flaky.json").display().to_string();
    let ran = ran!(shimcompat(
        &[
            "run",
            "--runtime-binary",
            &shim.display().to_string(),
            "--work-dir",
            &work,
            "--retries",
            "1",
            "--report-json",
            &report,
            ONE_CASE
        ],
        &[],
        Duration::from_secs(120)
    ));
    check!(
        ran.stdout.contains("FLAKY (failed, then passed on attempt 2)"),
        "the retried trial must be flaky\n{}",
        ran.describe()
    );
    check!(
        ran.stdout.contains("1 flaky") || ran.stdout.contains("flaky (failed, then passed"),
        "the summary must list it\n{}",
        ran.describe()
    );
    let json = std::fs::read_to_string(&report).unwrap_or_default();
    check!(json.contains("\"outcome\": \"flaky\""), "the report must say flaky: {json:.400}");

    let stopped = scratch.path("stopped.json").display().to_string();
    let ran = ran!(shimcompat(
        &[
            "run",
            "-q",
            "--work-dir",
            &work,
            "--faults",
            "create-wrong-pid",
            "--fail-fast",
            "--test-threads",
            "1",
            "--report-json",
            &stopped
        ],
        &[],
        Duration::from_secs(300)
    ));
    check!(ran.code() == Some(1), "a fail-fast run with a failure exits 1\n{}", ran.describe());
    check!(ran.stdout.contains("stopped after 1 failure(s)"), "the summary must say it stopped\n{}", ran.describe());
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&stopped).unwrap_or_default()).unwrap_or_default();
    let failed: Vec<String> = report["results"]
        .as_array()
        .map(|r| {
            r.iter().filter(|t| t["outcome"] == "fail").filter_map(|t| t["name"].as_str().map(String::from)).collect()
        })
        .unwrap_or_default();
    check!(failed.len() == 1, "fail-fast with one thread must stop at one failure: {failed:?}");
    check!(report["not_run"].as_u64().unwrap_or(0) > 0, "trials must have been left unrun: {}", report["not_run"]);

    let rerun = ran!(shimcompat(
        &["run", "--work-dir", &work, "--faults", "create-wrong-pid", "--rerun-failed", &stopped],
        &[],
        Duration::from_secs(120)
    ));
    check!(
        rerun.stdout.contains("running 1 tests") && rerun.stdout.contains(&format!("test {} ...", failed[0])),
        "--rerun-failed must run exactly the failed trial\n{}",
        rerun.describe()
    );
    Verdict::Pass
}

/// The HTML report opened in a real browser (headless Chromium): it parses into the matrix, the certification
/// statement and the failing case opened with its evidence, and renders to a non-trivial screenshot.
fn html_report_in_chromium() -> Verdict {
    let Some(chromium) = ["chromium", "chromium-browser", "google-chrome"].into_iter().find_map(which) else {
        return Verdict::Skip("no chromium on PATH (.ci/run installs Debian's chromium)".into());
    };
    let scratch = Scratch::new("html");
    let work = scratch.work_dir().display().to_string();
    let html = scratch.path("report.html");
    let ran = ran!(shimcompat(
        &[
            "run",
            "-q",
            "--work-dir",
            &work,
            "--faults",
            "kill-exited-ok",
            "--html",
            &html.display().to_string(),
            "kill::"
        ],
        &[],
        Duration::from_secs(120)
    ));
    check!(ran.code() == Some(1), "the faulty run must fail\n{}", ran.describe());
    let url = format!("file://{}", html.display());
    let profile = format!("--user-data-dir={}", scratch.path("chromium").display());
    let headless = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", profile.as_str()];
    let dom = Command::new(&chromium).args(headless).arg("--dump-dom").arg(&url).stderr(Stdio::null()).output();
    let dom = match dom {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        Ok(out) => return Verdict::Fail(format!("chromium --dump-dom exited {}", out.status)),
        Err(e) => return Verdict::Fail(format!("cannot run {}: {e}", chromium.display())),
    };
    check!(
        dom.contains("id=\"matrix\"") && dom.contains("<td class=\"mixed\">"),
        "the matrix must render with the kill area mixed:\n{dom:.2000}"
    );
    check!(
        dom.contains("passes 5/5 MUST, 1/2 SHOULD under containerd"),
        "the certification statement must be there:\n{dom:.2000}"
    );
    check!(
        dom.contains("<details class=\"case\" open=\"\"><summary class=\"fail\">mock@") && dom.contains("evidence:"),
        "the failing case must be open with its evidence:\n{dom:.3000}"
    );
    let png = scratch.path("report.png");
    let shot = Command::new(&chromium)
        .args(headless)
        .arg("--window-size=1400,1200")
        .arg(format!("--screenshot={}", png.display()))
        .arg(&url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    check!(shot.map(|s| s.success()).unwrap_or(false), "chromium --screenshot failed");
    let bytes = std::fs::read(&png).unwrap_or_default();
    check!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 20_000,
        "the screenshot is {} bytes (want a PNG over 20 kB)",
        bytes.len()
    );
    Verdict::Pass
}

/// On a terminal (a pty from `script`): colour, a progress counter and a notice for a slow trial; with NO_COLOR no
/// colour; in a pipe neither colour nor counter.
fn terminal_output() -> Verdict {
    let Some(script) = which("script") else {
        return Verdict::Skip("needs script (util-linux) for a pty".into());
    };
    let scratch = Scratch::new("tty");
    let work = scratch.work_dir().display().to_string();
    // `start` takes 2 s: the trial is slow enough for a 1 s notice.
    let shim = scratch.script(
        "containerd-shim-slow-v1",
        &format!("[ \"${{@: -1}}\" = start ] && sleep 2\nexec {} \"$@\"\n", mock().display()),
    );
    let command = format!("{SHIMCOMPAT} run --runtime-binary {} --work-dir {work} {ONE_CASE}", shim.display());
    let on_tty = |no_color: bool| {
        let mut run = Command::new(&script);
        run.args(["-qec", &command, "/dev/null"]).env("SHIMCOMPAT_SLOW_NOTICE", "1").stdin(Stdio::null());
        if no_color {
            run.env("NO_COLOR", "1");
        } else {
            run.env_remove("NO_COLOR");
        }
        run.output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default()
    };
    let coloured = on_tty(false);
    check!(coloured.contains("\x1b[32mok\x1b[0m"), "a terminal must get colour:\n{coloured}");
    check!(coloured.contains("[1/1]"), "a terminal must get the progress counter:\n{coloured}");
    check!(coloured.contains("has been running for over 1 seconds"), "a slow trial must be named:\n{coloured}");
    let plain = on_tty(true);
    check!(!plain.contains("\x1b["), "NO_COLOR must turn colour off:\n{plain}");
    let piped = ran!(shimcompat(
        &["run", "--runtime-binary", &shim.display().to_string(), "--work-dir", &work, ONE_CASE],
        &[],
        Duration::from_secs(60)
    ));
    check!(
        !piped.stdout.contains("\x1b[") && !piped.stdout.contains("[1/1]"),
        "a pipe gets plain lines:\n{}",
        piped.stdout
    );
    Verdict::Pass
}

/// The JSON Schema keywords docs/report.schema.json uses.
fn validate(schema: &serde_json::Value, value: &serde_json::Value, at: &str, problems: &mut Vec<String>) {
    use serde_json::Value;
    let type_name = |v: &Value| match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    if let Some(wanted) = schema.get("type") {
        let names: Vec<&str> = match wanted {
            Value::String(one) => vec![one.as_str()],
            Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let actual = type_name(value);
        if !names.iter().any(|n| *n == actual || (*n == "number" && actual == "integer")) {
            problems.push(format!("{at}: is {actual}, schema wants {names:?}"));
            return;
        }
    }
    if let Some(Value::Array(allowed)) = schema.get("enum") {
        if !allowed.contains(value) {
            problems.push(format!("{at}: {value} is not one of {allowed:?}"));
        }
    }
    if let (Some(Value::Array(required)), Value::Object(object)) = (schema.get("required"), value) {
        for key in required.iter().filter_map(Value::as_str) {
            if !object.contains_key(key) {
                problems.push(format!("{at}: lacks required {key:?}"));
            }
        }
    }
    if let (Some(Value::Object(properties)), Value::Object(object)) = (schema.get("properties"), value) {
        for (key, sub) in properties {
            if let Some(field) = object.get(key) {
                validate(sub, field, &format!("{at}.{key}"), problems);
            }
        }
        for key in object.keys() {
            if !properties.contains_key(key) {
                problems.push(format!("{at}: {key:?} is not in the schema (document it there)"));
            }
        }
    }
    if let (Some(items), Value::Array(array)) = (schema.get("items"), value) {
        for (index, item) in array.iter().enumerate() {
            validate(items, item, &format!("{at}[{index}]"), problems);
        }
    }
}

/// A thread count nobody can mean is a usage error, not a hang.
fn absurd_test_threads() -> Verdict {
    let scratch = Scratch::new("threads");
    let ran = ran!(shimcompat(
        &["run", "--test-threads", "18446744073709551615", "--work-dir", &scratch.work_dir().display().to_string()],
        &[],
        Duration::from_secs(30),
    ));
    check!(ran.code() == Some(2), "must be a usage error (exit 2)\n{}", ran.describe());
    check!(ran.stderr.contains("--test-threads"), "the error must name the flag\n{}", ran.describe());
    let ran = ran!(shimcompat(&["run", "--test-threads", "0"], &[], Duration::from_secs(30)));
    check!(ran.code() == Some(2), "0 threads must be a usage error\n{}", ran.describe());
    Verdict::Pass
}

fn main() {
    // One at a time: a run reports mounts and files that appear on the host while it runs, which another test's
    // hostile shim would make.
    let tests: &[NamedTest] = &[
        ("hostile::bind_mount_left_in_the_bundle", bind_mount_left_in_the_bundle),
        ("hostile::shims_start_with_no_blocked_signals", shims_start_with_no_blocked_signals),
        ("hostile::huge_start_output", huge_start_output),
        ("hostile::address_naming_a_file_is_not_deleted", address_naming_a_file_is_not_deleted),
        ("hostile::log_flood", log_flood),
        ("hostile::address_never_listens", address_never_listens),
        ("hostile::server_that_closes_at_once", server_that_closes_at_once),
        ("hostile::probe_that_sleeps", probe_that_sleeps),
        ("hostile::absurd_test_threads", absurd_test_threads),
        ("hostile::bad_input", bad_input),
        ("hostile::non_root_host_refusal", non_root_host_refusal),
        ("hostile::escaped_double_fork", escaped_double_fork),
        ("hostile::interrupted_run", interrupted_run),
        ("hostile::long_tmpdir_and_work_dir", long_tmpdir_and_work_dir),
        ("hostile::killed_run_then_clean", killed_run_then_clean),
        ("hostile::mount_outside_and_stray_file", mount_outside_and_stray_file),
        ("hostile::stdout_closed_mid_run", stdout_closed_mid_run),
        ("hostile::exit_policy_and_junit", exit_policy_and_junit),
        ("hostile::compare_filtered_run", compare_filtered_run),
        ("hostile::report_matches_schema", report_matches_schema),
        ("hostile::report_merges_hosts", report_merges_hosts),
        ("hostile::retries_fail_fast_rerun", retries_fail_fast_rerun),
        ("hostile::html_report_in_chromium", html_report_in_chromium),
        ("hostile::terminal_output", terminal_output),
    ];
    let tests = tests.iter().map(|(name, test)| (name.to_string(), Box::new(*test) as daemon::DynTest)).collect();
    daemon::run_dyn_tests(tests, 1);
}
