//! Bundles and fifos: what containerd prepares before it runs a shim's `start`.
//!
//! Laid out as containerd lays it out (core/runtime/v2/bundle.go): `<state>/io.containerd.runtime.v2.task/<ns>/<id>`
//! (0700; the directory is named after the task id, as the runc shim's `delete` requires), with `config.json` (built
//! with oci-spec types), `rootfs/` (0711), the `work` link to `<root>/io.containerd.runtime.v2.task/<ns>/<id>`, and
//! the `log` fifo, opened for reading before `start` and drained into a per-case log file.
//!
//! The root filesystem is what every image container gets: `root.path = "rootfs"` and, in Create, an overlay mount
//! whose lower dir is the run's shared payload tree and whose upper and work dirs are the container's own (as the
//! overlay snapshotter prepares them). The shim mounts it. Without root no shim can mount, so the harness falls
//! back to what `ctr run --rootfs DIR` sends: an absolute, read-only `root.path` and no mounts.
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::sys::stat::Mode;
use oci_spec::runtime::{Process, Root, Spec};
use tokio::io::AsyncReadExt;

/// The payload, built static by build.rs and embedded so the harness binary is self-contained.
pub static PAYLOAD: &[u8] = include_bytes!(env!("SHIMCOMPAT_PAYLOAD"));

/// At most this much of one shim's log is kept in the work dir.
pub const LOG_CAP: usize = 16 << 20;

/// Where the payload lives inside the container.
pub const PAYLOAD_PATH: &str = "/payload";

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("{context}: {source}")]
    Spec { context: String, source: oci_spec::OciSpecError },
}

fn io_error(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BundleError {
    let context = context.into();
    move |source| BundleError::Io { context, source }
}

/// Writes the shared rootfs: the payload and the mount points a runtime needs in a read-only root.
pub fn prepare_rootfs(dir: &Path) -> Result<(), BundleError> {
    for sub in ["proc", "dev", "sys", "tmp", "etc"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(io_error(format!("creating {}", dir.join(sub).display())))?;
    }
    let payload = dir.join(PAYLOAD_PATH.trim_start_matches('/'));
    std::fs::write(&payload, PAYLOAD).map_err(io_error(format!("writing {}", payload.display())))?;
    std::fs::set_permissions(&payload, std::fs::Permissions::from_mode(0o755))
        .map_err(io_error(format!("chmod {}", payload.display())))?;
    // Rootfs dirs must be traversable by any uid a runtime may map.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).map_err(io_error("chmod rootfs"))?;
    Ok(())
}

/// What a case wants its container to be; turned into `config.json`.
#[derive(Debug, Clone, Default)]
pub struct ContainerConfig {
    /// Payload steps (see fixtures/payload): the container runs `/payload <steps...>`.
    pub steps: Vec<String>,
    pub terminal: bool,
    pub annotations: BTreeMap<String, String>,
    pub env: Vec<String>,
    /// `linux.resources.memory`: the limit in bytes and, when set, `swap` (memory+swap) equal to it so that the
    /// container cannot page out to get round the limit.
    pub memory: Option<MemoryLimit>,
}

/// A memory limit for `linux.resources.memory`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLimit {
    pub limit: i64,
    /// memory+swap (the OCI `swap` field); `None` leaves it unset (v1 hosts without swap accounting, where runc
    /// fails on a swap limit it cannot write).
    pub swap: Option<i64>,
}

impl ContainerConfig {
    pub fn new(steps: &[&str]) -> ContainerConfig {
        ContainerConfig { steps: steps.iter().map(|s| s.to_string()).collect(), ..Default::default() }
    }

    pub fn terminal(mut self, terminal: bool) -> Self {
        self.terminal = terminal;
        self
    }

    pub fn memory(mut self, memory: MemoryLimit) -> Self {
        self.memory = Some(memory);
        self
    }

    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.into(), value.into());
        self
    }
}

/// The process spec for the payload with `steps`; also what Exec sends (as JSON).
pub fn payload_process(steps: &[String], terminal: bool, extra_env: &[String]) -> Process {
    let mut process = Process::default();
    let mut args = vec![PAYLOAD_PATH.to_string()];
    args.extend(steps.iter().cloned());
    process.set_args(Some(args));
    // youki needs PATH in the spec's env; HOME keeps runtimes from guessing.
    let mut env = vec!["PATH=/usr/bin:/bin".to_string(), "HOME=/".to_string()];
    env.extend(extra_env.iter().cloned());
    process.set_env(Some(env));
    // Go's specs.Process has `terminal,omitempty`: containerd never sends `"terminal": false`.
    process.set_terminal(terminal.then_some(true));
    process.set_cwd("/".into());
    process
}

/// How a container gets its root filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootfsForm {
    /// `root.path = "rootfs"` and an overlay mount in Create (every image container; needs root).
    Overlay,
    /// An absolute `root.path` to the shared tree, read-only, and no mounts (`ctr run --rootfs`).
    Absolute(PathBuf),
}

/// Builds `config.json` for a container.
pub fn build_spec(config: &ContainerConfig, rootfs: &RootfsForm, cgroups_path: &str) -> Spec {
    let mut spec = Spec::default();
    spec.set_hostname(Some("shimcompat".into()));
    let mut root = Root::default();
    match rootfs {
        RootfsForm::Overlay => {
            root.set_path(PathBuf::from("rootfs"));
            root.set_readonly(Some(false));
        }
        RootfsForm::Absolute(path) => {
            root.set_path(path.clone());
            root.set_readonly(Some(true));
        }
    }
    spec.set_root(Some(root));
    spec.set_process(Some(payload_process(&config.steps, config.terminal, &config.env)));
    spec.set_annotations(Some(config.annotations.clone().into_iter().collect()));
    if let Some(linux) = spec.linux_mut() {
        linux.set_cgroups_path(Some(PathBuf::from(cgroups_path)));
        if let Some(memory) = config.memory {
            let mut limits = oci_spec::runtime::LinuxMemory::default();
            limits.set_limit(Some(memory.limit));
            limits.set_swap(memory.swap);
            let mut resources = linux.resources().clone().unwrap_or_default();
            resources.set_memory(Some(limits));
            linux.set_resources(Some(resources));
        }
    }
    spec
}

/// A bundle on disk, with its log fifo drained into `log_file`.
pub struct Bundle {
    pub id: String,
    pub dir: PathBuf,
    pub spec: Spec,
    pub log_file: PathBuf,
    /// The `work` link's target.
    pub work: PathBuf,
    /// The container's overlay upper and work dirs (`<snapshot>/fs`, `<snapshot>/work`), when it has any.
    pub snapshot: Option<PathBuf>,
    /// `--keep`: `remove` detaches what is mounted but leaves the files for inspection.
    pub keep: bool,
    drain: Option<tokio::task::JoinHandle<()>>,
}

/// The overlay mount containerd's overlay snapshotter hands Create for a one-layer image: lower = the image's
/// layer, upper and work = the container's active snapshot.
pub fn overlay_mount(lower: &Path, snapshot: &Path) -> containerd_shim_protos::api::Mount {
    containerd_shim_protos::api::Mount {
        type_: "overlay".into(),
        source: "overlay".into(),
        options: vec![
            "index=off".into(),
            format!("workdir={}", snapshot.join("work").display()),
            format!("upperdir={}", snapshot.join("fs").display()),
            format!("lowerdir={}", lower.display()),
        ],
        ..Default::default()
    }
}

impl Bundle {
    /// Creates `<parent>/<id>` (0700) with config.json, rootfs/ (0711), the `work` link to `<work_parent>/<id>`
    /// and the log fifo, and starts draining the fifo; with `snapshot`, also the overlay's upper and work dirs.
    /// Must run inside a tokio runtime.
    pub fn create(
        parent: &Path,
        work_parent: &Path,
        id: &str,
        spec: Spec,
        log_file: PathBuf,
        snapshot: Option<PathBuf>,
    ) -> Result<Bundle, BundleError> {
        let dir = parent.join(id);
        for (path, mode) in [(parent, 0o711), (work_parent, 0o711)] {
            std::fs::create_dir_all(path).map_err(io_error(format!("creating {}", path.display())))?;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
        }
        std::fs::create_dir(&dir).map_err(io_error(format!("creating {}", dir.display())))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io_error(format!("chmod {}", dir.display())))?;
        std::fs::create_dir(dir.join("rootfs")).map_err(io_error(format!("creating {}/rootfs", dir.display())))?;
        std::fs::set_permissions(dir.join("rootfs"), std::fs::Permissions::from_mode(0o711))
            .map_err(io_error(format!("chmod {}/rootfs", dir.display())))?;
        spec.save(dir.join("config.json")).map_err(|source| BundleError::Spec {
            context: format!("writing {}/config.json", dir.display()),
            source,
        })?;
        // containerd links `work` to a per-task directory under its root; the runc shim puts criu's work dir there.
        let work = work_parent.join(id);
        std::fs::create_dir_all(&work).map_err(io_error(format!("creating {}", work.display())))?;
        let _ = std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o711));
        std::os::unix::fs::symlink(&work, dir.join("work"))
            .map_err(io_error(format!("linking {}/work", dir.display())))?;
        if let Some(snapshot) = &snapshot {
            for sub in ["fs", "work"] {
                std::fs::create_dir_all(snapshot.join(sub))
                    .map_err(io_error(format!("creating {}", snapshot.join(sub).display())))?;
            }
            let _ = std::fs::set_permissions(snapshot.join("fs"), std::fs::Permissions::from_mode(0o755));
        }
        let log = dir.join("log");
        nix::unistd::mkfifo(&log, Mode::from_bits_truncate(0o700))
            .map_err(|e| BundleError::Io { context: format!("mkfifo {}", log.display()), source: e.into() })?;
        // Read-write, as containerd does: the fifo never reports EOF to us and the shim's open never blocks.
        let mut reader = tokio::net::unix::pipe::OpenOptions::new()
            .read_write(true)
            .open_receiver(&log)
            .map_err(io_error(format!("opening {}", log.display())))?;
        let mut sink = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_file)
            .map_err(io_error(format!("opening {}", log_file.display())))?;
        let drain = tokio::spawn(async move {
            use std::io::Write;
            let mut chunk = vec![0u8; 16384];
            let mut written = 0usize;
            let mut marked = false;
            // Past the cap the fifo is still drained (a shim blocked on its log would hang), but nothing is kept.
            while let Ok(n) = reader.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                if written < LOG_CAP {
                    let room = (LOG_CAP - written).min(n);
                    if sink.write_all(&chunk[..room]).is_err() {
                        break;
                    }
                    written += room;
                } else if !marked {
                    marked = true;
                    let _ = writeln!(sink, "\n[shimcompat: log cut at {LOG_CAP} bytes; the rest was read and dropped]");
                }
            }
        });
        Ok(Bundle { id: id.to_string(), dir, spec, log_file, work, snapshot, keep: false, drain: Some(drain) })
    }

    /// The last `lines` lines of the shim's log, for evidence: read from its last 64 KiB, each line cut to 1 KiB.
    pub fn log_tail(&self, lines: usize) -> String {
        use std::io::{Read, Seek, SeekFrom};
        const TAIL: u64 = 64 * 1024;
        let mut bytes = Vec::new();
        if let Ok(mut file) = std::fs::File::open(&self.log_file) {
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            if file.seek(SeekFrom::Start(len.saturating_sub(TAIL))).is_ok() {
                let _ = file.take(TAIL).read_to_end(&mut bytes);
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        let all: Vec<String> = text.lines().map(|l| crate::shim::launch::clip(l, 1024)).collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// What containerd's bundle.Delete does after the shim's Delete and Shutdown (runtime/v2/bundle.go, 1.6-2.x):
    /// unmount the whole stack at `<bundle>/rootfs` (umount, no flags, until nothing is mounted there), then remove
    /// the bundle. A rootfs the shim left mounted is therefore no leak under containerd (rootfs::unmounted_by_delete
    /// checks the shim's own Delete); what containerd cannot unmount (a busy rootfs, a mount below it or elsewhere in
    /// the bundle) is detached here and returned, as [`Bundle::remove`] does.
    pub fn delete_as_containerd(&mut self) -> Vec<String> {
        unmount_rootfs_as_containerd(&self.dir);
        self.remove()
    }

    /// Stops draining and removes the directory, its work dir and its snapshot. Nothing is ever removed through a
    /// mount (see `fstree`): whatever is still mounted under them is detached first and returned (a shim that leaves
    /// its rootfs mounted after Delete leaks it), as is anything that had to be left in place.
    pub fn remove(&mut self) -> Vec<String> {
        if let Some(drain) = self.drain.take() {
            drain.abort();
        }
        let mut found = Vec::new();
        let trees = [Some(&self.dir), Some(&self.work), self.snapshot.as_ref()];
        if self.keep {
            return trees.into_iter().flatten().flat_map(|tree| crate::fstree::detach_all(tree)).collect();
        }
        for tree in trees.into_iter().flatten() {
            let removal = crate::fstree::remove_tree(tree);
            found.extend(removal.detached.iter().cloned());
            found.extend(removal.kept.iter().map(|k| format!("kept {k}")));
        }
        found
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        if let Some(drain) = self.drain.take() {
            drain.abort();
        }
    }
}

/// containerd's `mount.UnmountAll(<bundle>/rootfs, 0)` in bundle.Delete: plain umount until nothing is mounted there
/// (a busy mount, or one with mounts below it, stays, and containerd's Delete then fails).
pub fn unmount_rootfs_as_containerd(bundle_dir: &Path) {
    let rootfs = bundle_dir.join("rootfs");
    for _ in 0..64 {
        if nix::mount::umount2(&rootfs, nix::mount::MntFlags::empty()).is_err() {
            break;
        }
    }
}

/// One stdio fifo on the harness side.
pub struct FifoReader {
    pub path: PathBuf,
    /// Read-write until the shim has opened its side, so an early read never sees a false EOF.
    holder: Option<tokio::net::unix::pipe::Receiver>,
    reader: Option<tokio::net::unix::pipe::Receiver>,
    collected: Vec<u8>,
}

impl FifoReader {
    pub fn create(path: PathBuf) -> Result<FifoReader, BundleError> {
        nix::unistd::mkfifo(&path, Mode::from_bits_truncate(0o600))
            .map_err(|e| BundleError::Io { context: format!("mkfifo {}", path.display()), source: e.into() })?;
        let holder = tokio::net::unix::pipe::OpenOptions::new()
            .read_write(true)
            .open_receiver(&path)
            .map_err(io_error(format!("opening {}", path.display())))?;
        Ok(FifoReader { path, holder: Some(holder), reader: None, collected: Vec::new() })
    }

    /// Call once the shim has opened the fifo (after Create or Start): from then on EOF means the writer closed.
    pub fn seal(&mut self) -> Result<(), BundleError> {
        if self.reader.is_none() {
            let reader = tokio::net::unix::pipe::OpenOptions::new()
                .open_receiver(&self.path)
                .map_err(io_error(format!("opening {}", self.path.display())))?;
            self.reader = Some(reader);
            self.holder = None;
        }
        Ok(())
    }

    /// Reads until EOF or the deadline; returns everything read so far and whether EOF was seen.
    pub async fn read_to_eof(&mut self, timeout: std::time::Duration) -> (Vec<u8>, bool) {
        let _ = self.seal();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut eof = false;
        if let Some(reader) = self.reader.as_mut() {
            let mut chunk = vec![0u8; 65536];
            loop {
                match tokio::time::timeout_at(deadline, reader.read(&mut chunk)).await {
                    Ok(Ok(0)) => {
                        eof = true;
                        break;
                    }
                    Ok(Ok(n)) => self.collected.extend_from_slice(&chunk[..n]),
                    Ok(Err(_)) | Err(_) => break,
                }
            }
        }
        (self.collected.clone(), eof)
    }

    /// Reads until `needle` has appeared or the deadline passes.
    pub async fn read_until(&mut self, needle: &[u8], timeout: std::time::Duration) -> (Vec<u8>, bool) {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut chunk = vec![0u8; 65536];
        loop {
            if contains(&self.collected, needle) {
                return (self.collected.clone(), true);
            }
            let source = match (self.reader.as_mut(), self.holder.as_mut()) {
                (Some(reader), _) => reader,
                (None, Some(holder)) => holder,
                (None, None) => return (self.collected.clone(), false),
            };
            match tokio::time::timeout_at(deadline, source.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return (self.collected.clone(), contains(&self.collected, needle)),
                Ok(Ok(n)) => self.collected.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// The harness's write side of a stdin fifo.
pub struct FifoWriter {
    pub path: PathBuf,
    writer: Option<tokio::net::unix::pipe::Sender>,
}

impl FifoWriter {
    pub fn create(path: PathBuf) -> Result<FifoWriter, BundleError> {
        nix::unistd::mkfifo(&path, Mode::from_bits_truncate(0o600))
            .map_err(|e| BundleError::Io { context: format!("mkfifo {}", path.display()), source: e.into() })?;
        // Read-write so the open does not need a reader yet (the shim opens its side during Create/Start).
        let writer = tokio::net::unix::pipe::OpenOptions::new()
            .read_write(true)
            .open_sender(&path)
            .map_err(io_error(format!("opening {}", path.display())))?;
        Ok(FifoWriter { path, writer: Some(writer) })
    }

    pub async fn write(&mut self, data: &[u8], timeout: std::time::Duration) -> Result<(), String> {
        use tokio::io::AsyncWriteExt;
        let writer = self.writer.as_mut().ok_or("stdin already closed")?;
        tokio::time::timeout(timeout, writer.write_all(data))
            .await
            .map_err(|_| format!("writing {} bytes to stdin did not finish within {timeout:?}", data.len()))?
            .map_err(|e| format!("writing to stdin: {e}"))
    }

    /// Closes the harness's end (as a client does before CloseIO).
    pub fn close(&mut self) {
        self.writer = None;
    }
}

/// Stdio for one process, in the bundle's `io/` directory.
#[derive(Default)]
pub struct ProcessIo {
    pub stdin: Option<FifoWriter>,
    pub stdout: Option<FifoReader>,
    pub stderr: Option<FifoReader>,
}

/// Which stdio streams a process gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoSpec {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

impl IoSpec {
    pub const NULL: IoSpec = IoSpec { stdin: false, stdout: false, stderr: false };
    /// stdout and stderr: containerd's cio always sets both (the Go runc shim fails Create on an empty stderr path
    /// next to a stdout path), so a case that wants stdout gets stderr too.
    pub const OUT: IoSpec = IoSpec { stdin: false, stdout: true, stderr: true };
    pub const ALL: IoSpec = IoSpec { stdin: true, stdout: true, stderr: true };
}

impl ProcessIo {
    pub fn create(dir: &Path, name: &str, spec: IoSpec) -> Result<ProcessIo, BundleError> {
        std::fs::create_dir_all(dir).map_err(io_error(format!("creating {}", dir.display())))?;
        Ok(ProcessIo {
            stdin: if spec.stdin { Some(FifoWriter::create(dir.join(format!("{name}-stdin")))?) } else { None },
            stdout: if spec.stdout { Some(FifoReader::create(dir.join(format!("{name}-stdout")))?) } else { None },
            stderr: if spec.stderr { Some(FifoReader::create(dir.join(format!("{name}-stderr")))?) } else { None },
        })
    }

    pub fn paths(&self) -> (String, String, String) {
        let show = |p: Option<&PathBuf>| p.map(|p| p.display().to_string()).unwrap_or_default();
        (
            show(self.stdin.as_ref().map(|f| &f.path)),
            show(self.stdout.as_ref().map(|f| &f.path)),
            show(self.stderr.as_ref().map(|f| &f.path)),
        )
    }

    /// Marks the shim's side as opened (see FifoReader::seal).
    pub fn seal(&mut self) {
        if let Some(stdout) = self.stdout.as_mut() {
            let _ = stdout.seal();
        }
        if let Some(stderr) = self.stderr.as_mut() {
            let _ = stderr.seal();
        }
    }
}
