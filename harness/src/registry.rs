//! Runs on this host, so that what a killed run left behind can be found and removed later.
//!
//! Every run writes `<registry>/<nonce>.run` (its pid, work dir, socket dir and tracking cgroup) and holds an
//! exclusive `flock` on it while it lives; shim sockets outside the run's own directories (a shim that ignores
//! `socket_dir` puts its socket in /run/containerd/s) are appended to `<nonce>.sockets`. A run that ends normally
//! removes both. A record nobody holds the lock on belongs to a run that was killed (SIGKILL, OOM, a host reboot
//! leaves none): `clean_stale` kills what that run's marks still find (the marker in the environment, the tracking
//! cgroup, container cgroups named after its nonce, thawing frozen ones first) and removes its files, never through
//! a mount. `shimcompat clean` runs it; so does every `run` before it starts, saying what it removed.
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Record {
    pub pid: u32,
    pub nonce: String,
    pub workdir: PathBuf,
    pub sockets: PathBuf,
    pub tracking: Option<PathBuf>,
    /// Whether the work dir was to be kept (`--keep`): a killed kept run keeps it.
    pub keep: bool,
}

/// A live run's registration: the locked record file.
#[derive(Debug)]
pub struct Registration {
    file: std::fs::File,
    path: PathBuf,
}

/// Where records go: /run/shimcompat as root, else $XDG_RUNTIME_DIR/shimcompat or $TMPDIR/shimcompat-<uid>;
/// `SHIMCOMPAT_REGISTRY` overrides it (tests that kill a run keep their records apart from other runs).
pub fn dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SHIMCOMPAT_REGISTRY").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if crate::host::is_root() {
        return PathBuf::from("/run/shimcompat");
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(runtime) => PathBuf::from(runtime).join("shimcompat"),
        None => std::env::temp_dir().join(format!("shimcompat-{}", nix::unistd::geteuid())),
    }
}

fn lock(file: &std::fs::File, wait: bool) -> bool {
    let flags = if wait { libc::LOCK_EX } else { libc::LOCK_EX | libc::LOCK_NB };
    // SAFETY: flock on an fd we own.
    unsafe { libc::flock(file.as_raw_fd(), flags) == 0 }
}

impl Registration {
    /// Records a run and holds the lock until the registration is dropped. A registry that cannot be written only
    /// costs the later clean-up, so it is not an error (None).
    pub fn create(record: &Record) -> Option<Registration> {
        let dir = dir();
        std::fs::create_dir_all(&dir).ok()?;
        let path = dir.join(format!("{}.run", record.nonce));
        let mut file =
            std::fs::OpenOptions::new().create(true).truncate(true).write(true).read(true).open(&path).ok()?;
        if !lock(&file, false) {
            return None;
        }
        file.write_all(serde_json::to_string(record).ok()?.as_bytes()).ok()?;
        Some(Registration { file, path })
    }

    /// Notes a shim socket outside the run's directories, for a later clean-up.
    pub fn add_socket(&self, socket: &Path) {
        if let Ok(mut file) =
            std::fs::OpenOptions::new().create(true).append(true).open(self.path.with_extension("sockets"))
        {
            let _ = writeln!(file, "{}", socket.display());
        }
    }

    /// The run ended and cleaned up after itself.
    pub fn finish(self) {
        let _ = std::fs::remove_file(self.path.with_extension("sockets"));
        let _ = std::fs::remove_file(&self.path);
        drop(self.file);
    }
}

/// What one stale run left, as removed now.
#[derive(Debug, Default)]
pub struct Cleaned {
    pub record: Option<Record>,
    pub lines: Vec<String>,
}

/// Finds the records of runs that are gone and removes what they left. Records of live runs are not touched.
pub fn clean_stale() -> Vec<Cleaned> {
    let Ok(entries) = std::fs::read_dir(dir()) else { return Vec::new() };
    let mut paths: Vec<PathBuf> =
        entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "run")).collect();
    paths.sort();
    let mut cleaned = Vec::new();
    for path in paths {
        let Ok(file) = std::fs::OpenOptions::new().read(true).write(true).open(&path) else { continue };
        if !lock(&file, false) {
            continue; // a live run holds it
        }
        let record: Option<Record> = std::fs::read_to_string(&path).ok().and_then(|t| serde_json::from_str(&t).ok());
        let mut lines = Vec::new();
        if let Some(record) = &record {
            lines = clean_run(record, &path.with_extension("sockets"));
        }
        let _ = std::fs::remove_file(path.with_extension("sockets"));
        let _ = std::fs::remove_file(&path);
        cleaned.push(Cleaned { record, lines });
    }
    cleaned
}

fn clean_run(record: &Record, sockets_file: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    let nonce = &record.nonce;
    // Frozen containers cannot die: thaw every container cgroup of the run first.
    for cgroup in crate::process::cgroup::run_cgroups(nonce) {
        let _ = std::fs::write(cgroup.join("freezer.state"), "THAWED");
        let _ = std::fs::write(cgroup.join("cgroup.freeze"), "0");
    }
    for _ in 0..3 {
        let found = crate::process::run_processes(nonce);
        if found.is_empty() {
            break;
        }
        for pid in found {
            if let Some(line) = crate::process::kill_pid(pid) {
                lines.push(format!("process {line}"));
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    if let Some(tracking) = &record.tracking {
        if tracking.exists() {
            for line in crate::process::cgroup::remove_tracking_tree(tracking) {
                lines.push(format!("process {line} (in the run's tracking cgroup)"));
            }
            if !tracking.exists() {
                lines.push(format!("cgroup {}", tracking.display()));
            }
        }
    }
    for cgroup in crate::process::cgroup::run_cgroups(nonce) {
        if std::fs::remove_dir(&cgroup).is_ok() {
            lines.push(format!("cgroup {}", cgroup.display()));
        }
    }
    crate::process::cgroup::remove_cgroup_parents();
    for socket in std::fs::read_to_string(sockets_file).unwrap_or_default().lines() {
        if crate::fstree::remove_socket(Path::new(socket)) {
            lines.push(format!("socket {socket}"));
        }
    }
    for (dir, wanted) in [(&record.sockets, true), (&record.workdir, !record.keep)] {
        if wanted && dir.exists() {
            let removal = crate::fstree::remove_tree(dir);
            lines.extend(removal.lines());
            lines.push(format!("directory {}", dir.display()));
        }
    }
    lines
}

/// Records of runs that are gone, without cleaning them (for `doctor`).
pub fn stale() -> Vec<Record> {
    records(false).into_iter().map(|(record, _)| record).collect()
}

/// Every readable record whose run is alive (`live`) or gone, with the sockets it noted. A shared lock is refused
/// while a live run holds its exclusive one; the probe's own lock goes with the file.
fn records(live: bool) -> Vec<(Record, Vec<PathBuf>)> {
    let Ok(entries) = std::fs::read_dir(dir()) else { return Vec::new() };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "run"))
        .filter_map(|path| {
            let file = std::fs::File::open(&path).ok()?;
            // SAFETY: flock on an fd we own.
            let free = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) == 0 };
            if free == live {
                return None;
            }
            let record: Record = serde_json::from_str(&std::fs::read_to_string(&path).ok()?).ok()?;
            let sockets = std::fs::read_to_string(path.with_extension("sockets"))
                .unwrap_or_default()
                .lines()
                .map(PathBuf::from)
                .collect();
            Some((record, sockets))
        })
        .collect()
}

/// One line per stale run cleaned, for the console.
pub fn describe(cleaned: &[Cleaned]) -> Vec<String> {
    let mut out = Vec::new();
    for run in cleaned {
        match &run.record {
            Some(record) => {
                out.push(format!(
                    "an earlier run (pid {}, {}) was killed; removed what it left:",
                    record.pid,
                    record.workdir.display()
                ));
                if run.lines.is_empty() {
                    out.push("    nothing".into());
                }
                out.extend(run.lines.iter().map(|l| format!("    {l}")));
            }
            None => out.push("an unreadable run record (removed)".into()),
        }
    }
    out
}

/// Records of runs that are alive now (their lock is held), with the shim sockets they noted.
pub fn live() -> Vec<(Record, Vec<PathBuf>)> {
    records(true)
}
