//! How containerd 1.6, 1.7 and 2.x turn a runtime name into the shim binary it executes.
//!
//! Upstream code this models (read, not copied):
//! - name → binary: `runtime/v2/shim/util.go BinaryName/BinaryPath` (1.6, 1.7), `pkg/shim/util.go` (2.x);
//! - resolution: `(*ShimManager).resolveRuntimePath` in `runtime/v2/manager.go` (1.6, 1.7) and
//!   `core/runtime/v2/shim_manager.go` (2.x);
//! - routing: `services/tasks/local.go getRuntime` sends `io.containerd.runtime.v1.linux` to the legacy v1 runtime
//!   in 1.6/1.7; 2.x has only the v2 runtime;
//! - PATH: the `io.containerd.internal.v1.opt` plugin prepends `<opt path>/bin` (default `/opt/containerd/bin`) to
//!   containerd's own PATH at start-up, before any shim is resolved.
//!
//! Resolution of a name that is not absolute (all versions; 1.7+ first rejects any `/`):
//! 1. the in-memory cache, keyed by binary name, filled by the first successful resolution, never invalidated;
//! 2. `os.Stat(filepath.Abs(filepath.Join(filepath.Dir(name), binary)))`: for a plain name, containerd's working
//!    directory; any file type is accepted, executable or not;
//! 3. `exec.LookPath(binary)` on containerd's PATH (executable regular files only; an empty entry means `.`);
//! 4. only when LookPath reports "not found": `os.Stat` next to containerd's own executable (`os.Executable()`, which on
//!    Linux is `/proc/self/exe`, symlinks resolved);
//! 5. otherwise `runtime "<name>" binary not installed "<binary>": file does not exist`.
//!
//! containerd 1.6 quirk (containerd#6464, observed on 1.6.20): a binary name containing `/` (from `./x`, `../x`, …)
//! makes LookPath fail with a path error rather than "not found", so neither step 4 nor the error runs; containerd keeps
//! an empty path, `filepath.Abs("")` turns it into its working directory, caches that, and the exec fails with
//! "permission denied".
use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use super::gopath::{self, Platform};

/// containerd release lines with distinct name handling. 1.6.0 through 1.6.x behave alike here (1.6.21 only fixed the
/// client side of `WithRuntimePath`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize)]
pub enum Version {
    #[serde(rename = "1.6")]
    V1_6,
    #[serde(rename = "1.7")]
    V1_7,
    #[serde(rename = "2.x")]
    V2,
}

impl Version {
    pub const ALL: [Version; 3] = [Version::V1_6, Version::V1_7, Version::V2];
    pub const NEWEST: Version = Version::V2;

    pub fn label(self) -> &'static str {
        match self {
            Version::V1_6 => "1.6",
            Version::V1_7 => "1.7",
            Version::V2 => "2.x",
        }
    }

    /// Parses `1.6`, `1.6.20`, `v1.7.3`, `1.6.20~ds1`, `2`, `2.0`, `2.x`, `v2.1.0-rc.1`.
    pub fn parse(text: &str) -> Result<Version, VersionError> {
        let (major, minor) = parse_major_minor(text).ok_or_else(|| VersionError::Unparsable(text.to_owned()))?;
        match (major, minor) {
            (1, Some(6)) => Ok(Version::V1_6),
            (1, Some(7)) => Ok(Version::V1_7),
            (2.., _) => Ok(Version::V2),
            (1, Some(minor)) if minor < 6 => Err(VersionError::Unsupported(text.to_owned())),
            (0, _) => Err(VersionError::Unsupported(text.to_owned())),
            _ => Err(VersionError::Unparsable(text.to_owned())),
        }
    }

    /// Extracts the version from `containerd --version` output, e.g.
    /// `containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3` or
    /// `containerd github.com/containerd/containerd/v2 v2.0.0 207ad711eabd375a01713109a8a197d197ff6542`.
    pub fn from_version_output(output: &str) -> Result<Version, VersionError> {
        let token = output
            .split_whitespace()
            .find(|token| parse_major_minor(token).is_some() && token.trim_start_matches('v').contains('.'))
            .ok_or_else(|| VersionError::Unparsable(output.trim().to_owned()))?;
        Version::parse(token)
    }

    /// The example containerd puts in its "invalid runtime name" message.
    fn invalid_name_example(self) -> &'static str {
        match self {
            Version::V1_6 | Version::V1_7 => "io.containerd.runc.v1",
            Version::V2 => "io.containerd.runc.v2",
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

pub(crate) fn parse_major_minor(text: &str) -> Option<(u32, Option<u32>)> {
    let text = text.trim().trim_start_matches('v');
    let mut parts = text.split(['.', '~', '-', '+']);
    let major: u32 = parts.next()?.parse().ok()?;
    let minor = match parts.next() {
        None | Some("x") | Some("X") => None,
        Some(minor) => Some(minor.parse().ok()?),
    };
    Some((major, minor))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("cannot read a version from `{0}` (expected e.g. 1.6, 1.7.13, 2.0)")]
    Unparsable(String),
    #[error("containerd {0} is not modelled: only 1.6, 1.7 and 2.x are (1.5 and older resolve names differently)")]
    Unsupported(String),
}

/// The runtime name containerd 1.6/1.7 route to the legacy v1 runtime plugin instead of a v2 shim.
pub const LEGACY_V1_RUNTIME: &str = "io.containerd.runtime.v1.linux";
/// The shim the legacy v1 runtime starts (its `shim` setting; this is the default).
pub const LEGACY_V1_SHIM: &str = "containerd-shim";
/// What containerd's container store answers for an empty runtime name; it rejects the container before any task
/// (and so before `resolveRuntimePath`, which would say "no runtime name") is created.
pub const EMPTY_NAME_CREATE_ERROR: &str = "container.Runtime.Name must be set";

/// Why a name yields no shim binary name. `Display` is containerd's wording where containerd has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NameError {
    #[error("no runtime name")]
    Empty,
    #[error("{path} is an absolute path: containerd runs it as-is and derives no binary name")]
    AbsolutePath { path: String },
    #[error("invalid runtime name {name}, correct runtime name should be either format like `{example}` or a full path to the binary")]
    Invalid { name: String, example: &'static str },
}

/// What containerd does with a name before touching the file system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Plan {
    /// Rejected: empty name.
    Empty,
    /// `filepath.IsAbs(name)`: stat it, run it as given (not cleaned, not cached).
    AbsolutePath { path: String },
    /// 1.6/1.7: the legacy v1 runtime plugin runs `containerd-shim` found on PATH.
    LegacyV1 { shim: String },
    /// Search for `binary_name`, first in `name_dir` (relative to containerd's working directory).
    Search { binary_name: String, name_dir: String },
    /// Rejected by name.
    Invalid { error: NameError },
}

/// `BinaryName` as upstream writes it: `containerd-shim-<second to last>-<last>` of the name split on every `.`,
/// or `None` where upstream returns "" (no dot; from 1.7 also a leading dot). No other validation: empty components,
/// `/`, spaces and any Unicode are copied through.
pub fn shim_binary_name(name: &str, version: Version, platform: Platform) -> Option<String> {
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() < 2 {
        return None;
    }
    if version >= Version::V1_7 && parts[0].is_empty() {
        return None;
    }
    let suffix = if platform == Platform::Windows { ".exe" } else { "" };
    Some(format!("containerd-shim-{}-{}{suffix}", parts[parts.len() - 2], parts[parts.len() - 1]))
}

/// The shim binary name containerd derives from `name` on Linux, or why it derives none (with containerd's wording).
/// For `io.containerd.runtime.v1.linux` this is what `BinaryName` returns (`containerd-shim-v1-linux`), which only 2.x
/// uses; 1.6/1.7 route that name to the legacy runtime (see [`plan`]).
pub fn binary_name(name: &str, version: Version) -> Result<String, NameError> {
    match plan(name, version) {
        Plan::Search { binary_name, .. } => Ok(binary_name),
        Plan::LegacyV1 { .. } => shim_binary_name(name, version, Platform::Linux).ok_or_else(|| invalid(name, version)),
        Plan::Empty => Err(NameError::Empty),
        Plan::AbsolutePath { path } => Err(NameError::AbsolutePath { path }),
        Plan::Invalid { error } => Err(error),
    }
}

fn invalid(name: &str, version: Version) -> NameError {
    NameError::Invalid { name: name.to_owned(), example: version.invalid_name_example() }
}

/// What containerd on Linux does with `name` before it looks at any file.
pub fn plan(name: &str, version: Version) -> Plan {
    plan_for(name, version, Platform::Linux)
}

/// [`plan`] for a platform. On Windows the binary name gets `.exe`, `filepath.IsAbs` needs a drive letter or UNC
/// prefix, and the directory part of a name may be split at `\` (containerd's `/` check does not catch `\`). These
/// Windows outcomes come from reading the code only; nothing here ran on Windows.
pub fn plan_for(name: &str, version: Version, platform: Platform) -> Plan {
    if name.is_empty() {
        return Plan::Empty;
    }
    if version < Version::V2 && name == LEGACY_V1_RUNTIME && platform == Platform::Linux {
        return Plan::LegacyV1 { shim: LEGACY_V1_SHIM.to_owned() };
    }
    if gopath::is_abs_for(name, platform) {
        return Plan::AbsolutePath { path: name.to_owned() };
    }
    if version >= Version::V1_7 && name.contains('/') {
        return Plan::Invalid { error: invalid(name, version) };
    }
    match shim_binary_name(name, version, platform) {
        Some(binary_name) => Plan::Search { binary_name, name_dir: gopath::dir_for(name, platform) },
        None => Plan::Invalid { error: invalid(name, version) },
    }
}

/// Why `stat` failed, with Go's text for the errno.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StatError {
    NotFound,
    NotADirectory,
    NameTooLong,
    PermissionDenied,
    TooManySymlinks,
    InvalidArgument,
    Other(String),
}

impl StatError {
    /// The text Go's `syscall.Errno.Error()` gives, which containerd embeds in its messages.
    pub fn go_text(&self) -> &str {
        match self {
            StatError::NotFound => "no such file or directory",
            StatError::NotADirectory => "not a directory",
            StatError::NameTooLong => "file name too long",
            StatError::PermissionDenied => "permission denied",
            StatError::TooManySymlinks => "too many levels of symbolic links",
            StatError::InvalidArgument => "invalid argument",
            StatError::Other(text) => text,
        }
    }
}

/// Identity of a file (device, inode), to tell one file reached by two paths from two different files.
pub type FileId = (u64, u64);

/// What `stat` (following symlinks, like Go's `os.Stat`) says about a path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Probed {
    Missing {
        error: StatError,
    },
    Directory {
        id: Option<FileId>,
    },
    /// Any non-directory. `executable`: some execute bit is set (Go 1.19's `findExecutable` test; containerd runs as
    /// root, so the bit is all that matters).
    File {
        executable: bool,
        id: Option<FileId>,
    },
}

impl Probed {
    pub fn exists(&self) -> bool {
        !matches!(self, Probed::Missing { .. })
    }

    /// Whether `exec.LookPath` accepts it: a non-directory with an execute bit.
    pub fn is_executable_file(&self) -> bool {
        matches!(self, Probed::File { executable: true, .. })
    }

    pub fn id(&self) -> Option<FileId> {
        match self {
            Probed::Missing { .. } => None,
            Probed::Directory { id } | Probed::File { id, .. } => *id,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Probed::Missing { error } => format!("absent ({})", error.go_text()),
            Probed::Directory { .. } => "a directory".to_owned(),
            Probed::File { executable: true, .. } => "executable file".to_owned(),
            Probed::File { executable: false, .. } => "file, not executable".to_owned(),
        }
    }
}

/// A `stat`-like view of a file system: the real host ([`super::host::HostProbe`]) or a fake ([`FakeFs`]).
pub trait Probe {
    fn stat(&self, path: &str) -> Probed;
}

/// The facts about a containerd process that decide what a name resolves to.
pub struct Env<'a> {
    /// containerd's working directory (`/` under systemd).
    pub cwd: String,
    /// The PATH containerd inherited from whoever started it.
    pub path: String,
    /// The path of containerd's `opt` plugin (default `/opt/containerd`), whose `bin` directory the plugin puts first
    /// on containerd's PATH; `None` when the plugin is disabled.
    pub opt_dir: Option<String>,
    /// The directory of containerd's executable as `os.Executable()` reports it (symlinks resolved); `None` if unknown.
    pub containerd_dir: Option<String>,
    pub probe: &'a dyn Probe,
}

impl Env<'_> {
    /// containerd's PATH after start-up (see [`effective_path`]).
    pub fn effective_path(&self) -> String {
        effective_path(&self.path, self.opt_dir.as_deref())
    }

    /// Entries of containerd's PATH as Go's `filepath.SplitList` yields them (an empty entry means `.`).
    pub fn path_entries(&self) -> Vec<String> {
        gopath::split_list(&self.effective_path())
    }
}

/// containerd's PATH after its `opt` plugin prepended `<opt_dir>/bin` to the PATH it inherited (`opt_dir: None` when
/// the plugin is disabled). Note an inherited empty PATH leaves a trailing empty entry, which Go reads as `.`.
pub fn effective_path(inherited: &str, opt_dir: Option<&str>) -> String {
    match opt_dir {
        Some(opt) => format!("{}:{inherited}", gopath::join(&[opt, "bin"])),
        None => inherited.to_owned(),
    }
}

/// containerd's `runtimePaths` cache: binary name → absolute path, filled by the first successful resolution and kept
/// for the life of the process. One `Cache` stands for one running containerd.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Cache {
    entries: BTreeMap<String, String>,
}

impl Cache {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, binary_name: &str) -> Option<&str> {
        self.entries.get(binary_name).map(String::as_str)
    }

    /// Seeds an entry, as a containerd that already resolved the name would have it.
    pub fn insert(&mut self, binary_name: impl Into<String>, path: impl Into<String>) {
        self.entries.insert(binary_name.into(), path.into());
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A place containerd looks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Place {
    /// An earlier resolution of the same binary name.
    Cache,
    /// The name itself, an absolute path.
    AbsolutePath,
    /// The name's directory part relative to containerd's working directory (`.`: the working directory itself).
    NameDirectory { dir: String },
    /// 1.6, binary name containing `/`: LookPath checks that relative path against the working directory.
    LookPathRelative,
    /// 1.6 bug fallback: LookPath failed with a path error, the empty path became the working directory.
    WorkingDirectoryFallback,
    /// An entry of containerd's PATH (`index` from 0). `from_opt`: added by containerd's opt plugin.
    PathEntry { index: usize, entry: String, from_opt: bool },
    /// Next to containerd's own executable.
    ContainerdDirectory,
}

impl Place {
    pub fn describe(&self) -> String {
        match self {
            Place::Cache => "containerd's cache".to_owned(),
            Place::AbsolutePath => "the name, an absolute path".to_owned(),
            Place::NameDirectory { dir } if dir == "." => "containerd's working directory".to_owned(),
            Place::NameDirectory { dir } => {
                format!("the name's directory `{dir}` under containerd's working directory")
            }
            Place::LookPathRelative => "LookPath of the binary name as a relative path".to_owned(),
            Place::WorkingDirectoryFallback => {
                "empty path → containerd's working directory (containerd#6464)".to_owned()
            }
            Place::PathEntry { index, entry, from_opt: true } => {
                format!("PATH[{index}] {entry} (containerd's opt plugin)")
            }
            Place::PathEntry { index, entry, .. } if entry.is_empty() => {
                format!("PATH[{index}] (empty entry, means .)")
            }
            Place::PathEntry { index, entry, .. } => format!("PATH[{index}] {entry}"),
            Place::ContainerdDirectory => "next to the containerd binary".to_owned(),
        }
    }
}

/// One place in the order, what is there, and whether containerd would take it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    pub place: Place,
    /// Absolute path probed.
    pub path: String,
    pub found: Probed,
    /// This step would pick what it found (stat-only steps take any file; LookPath only executable files).
    pub accepts: bool,
    /// containerd gets this far for this name (no earlier step picked a file, and the step's condition holds).
    pub reached: bool,
}

/// Where the resolution ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// containerd executes `path` (index `step` in `steps`). `exec_error`: what the exec will fail with when the file
    /// cannot be executed (Go's wording), `None` when it can.
    Runs { path: String, step: usize, exec_error: Option<String> },
    /// containerd refuses; `error` is its message (without the `failed to start shim: failed to resolve runtime
    /// path: ` prefix that `wrapped_error` adds).
    Fails { error: String },
}

/// The whole story of one name on one containerd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resolution {
    pub name: String,
    pub version: Version,
    pub plan: Plan,
    pub steps: Vec<Step>,
    pub outcome: Outcome,
    /// Binary name → path this resolution stored in containerd's cache.
    pub cached: Option<(String, String)>,
    pub notes: Vec<String>,
}

impl Resolution {
    /// The file containerd would execute, if any.
    pub fn chosen(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::Runs { path, .. } => Some(path),
            Outcome::Fails { .. } => None,
        }
    }

    pub fn chosen_step(&self) -> Option<&Step> {
        match &self.outcome {
            Outcome::Runs { step, .. } => self.steps.get(*step),
            Outcome::Fails { .. } => None,
        }
    }

    /// The error a containerd client (ctr, dockerd) sees, minus the gRPC `: unknown` suffix; `None` if a file runs
    /// and can be executed.
    pub fn wrapped_error(&self) -> Option<String> {
        match (&self.plan, &self.outcome) {
            (Plan::Empty, _) => Some(format!("{EMPTY_NAME_CREATE_ERROR}: invalid argument")),
            (_, Outcome::Fails { error }) if matches!(self.plan, Plan::LegacyV1 { .. }) => Some(error.clone()),
            (_, Outcome::Fails { error }) => {
                Some(format!("failed to start shim: failed to resolve runtime path: {error}"))
            }
            (_, Outcome::Runs { exec_error: Some(error), .. }) => {
                Some(format!("failed to start shim: start failed: : {error}"))
            }
            (_, Outcome::Runs { exec_error: None, .. }) => None,
        }
    }
}

/// Resolves `name` as a freshly started containerd would (empty cache).
pub fn lookup(name: &str, version: Version, env: &Env<'_>) -> Resolution {
    lookup_cached(name, version, env, &mut Cache::new())
}

/// Resolves `name` against a containerd whose cache is `cache`, updating the cache as containerd would.
pub fn lookup_cached(name: &str, version: Version, env: &Env<'_>, cache: &mut Cache) -> Resolution {
    let plan = plan(name, version);
    let mut resolution = Resolution {
        name: name.to_owned(),
        version,
        plan: plan.clone(),
        steps: Vec::new(),
        outcome: Outcome::Fails { error: String::new() },
        cached: None,
        notes: Vec::new(),
    };
    match plan {
        Plan::Empty => {
            resolution.outcome = Outcome::Fails { error: NameError::Empty.to_string() };
            resolution.notes.push(format!(
                "containerd's container store rejects an empty runtime name before any task exists: \
                 \"{EMPTY_NAME_CREATE_ERROR}: invalid argument\""
            ));
        }
        Plan::Invalid { error } => {
            resolution.outcome = Outcome::Fails { error: error.to_string() };
            if version >= Version::V1_7 && name.contains('/') {
                resolution.notes.push(
                    "containerd 1.7+ refuses names containing `/` that are not absolute (1.6 searched the name's \
                     directory; containerd#6464)"
                        .to_owned(),
                );
            }
        }
        Plan::AbsolutePath { path } => resolve_absolute(&mut resolution, &path, env),
        Plan::LegacyV1 { shim } => resolve_legacy(&mut resolution, &shim, env),
        Plan::Search { binary_name, name_dir } => {
            resolve_search(&mut resolution, &binary_name, &name_dir, env, cache);
        }
    }
    add_version_notes(&mut resolution);
    resolution
}

fn resolve_absolute(resolution: &mut Resolution, path: &str, env: &Env<'_>) {
    let found = env.probe.stat(path);
    let accepts = found.exists();
    resolution.steps.push(Step {
        place: Place::AbsolutePath,
        path: path.to_owned(),
        found: found.clone(),
        accepts,
        reached: true,
    });
    resolution.outcome = match &found {
        Probed::Missing { error } => {
            Outcome::Fails { error: format!("invalid custom binary path: stat {path}: {}", error.go_text()) }
        }
        _ => Outcome::Runs { path: path.to_owned(), step: 0, exec_error: exec_error(path, &found) },
    };
    resolution.notes.push("absolute names are executed as given and never cached".to_owned());
}

fn resolve_legacy(resolution: &mut Resolution, shim: &str, env: &Env<'_>) {
    resolution.notes.push(format!(
        "containerd {} routes {LEGACY_V1_RUNTIME} to the legacy v1 runtime plugin (deprecated since 1.4, logs a \
         warning), which starts `{shim}` (its `shim` setting) through exec.Command: PATH only, no working-directory \
         or next-to-containerd step, no cache",
        resolution.version
    ));
    let mut chosen: Option<usize> = None;
    for (index, entry) in env.path_entries().iter().enumerate() {
        let directory = if entry.is_empty() { "." } else { entry.as_str() };
        let relative = gopath::join(&[directory, shim]);
        let path = gopath::abs(&env.cwd, &relative);
        let found = env.probe.stat(&path);
        let accepts = found.is_executable_file();
        resolution.steps.push(Step {
            place: Place::PathEntry { index, entry: entry.clone(), from_opt: index == 0 && env.opt_dir.is_some() },
            path: path.clone(),
            found,
            accepts,
            reached: chosen.is_none(),
        });
        if chosen.is_none() && accepts {
            chosen = Some(resolution.steps.len() - 1);
            if !gopath::is_abs(&relative) {
                // Go 1.19+ exec.Command refuses a PATH hit relative to the working directory (exec.ErrDot).
                resolution.outcome = Outcome::Fails {
                    error: format!(
                        "exec: {}: cannot run executable found relative to current directory",
                        gopath::quote(shim)
                    ),
                };
                return;
            }
        }
    }
    resolution.outcome = match chosen {
        Some(step) => Outcome::Runs { path: resolution.steps[step].path.clone(), step, exec_error: None },
        None => Outcome::Fails { error: format!("exec: {}: executable file not found in $PATH", gopath::quote(shim)) },
    };
}

fn resolve_search(resolution: &mut Resolution, binary: &str, name_dir: &str, env: &Env<'_>, cache: &mut Cache) {
    let steps = &mut resolution.steps;
    let mut chosen: Option<usize> = None;

    if let Some(path) = cache.get(binary) {
        let found = env.probe.stat(path);
        steps.push(Step { place: Place::Cache, path: path.to_owned(), found, accepts: true, reached: true });
        chosen = Some(0);
    }

    // BinaryPath: the name's directory joined with the binary name, made absolute against containerd's cwd.
    let path = gopath::abs(&env.cwd, &gopath::join(&[name_dir, binary]));
    let found = env.probe.stat(&path);
    let accepts = found.exists();
    let reached = chosen.is_none();
    steps.push(Step { place: Place::NameDirectory { dir: name_dir.to_owned() }, path, found, accepts, reached });
    if reached && accepts {
        chosen = Some(steps.len() - 1);
    }

    let opt_entries = usize::from(env.opt_dir.is_some());
    // Whether LookPath ends in exec.ErrNotFound, the only case where containerd tries its own directory.
    let mut lookpath_not_found = true;
    if binary.contains('/') {
        // LookPath treats a name with `/` as a path relative to the working directory and never reports "not found".
        lookpath_not_found = false;
        let path = gopath::abs(&env.cwd, binary);
        let found = env.probe.stat(&path);
        let accepts = found.is_executable_file();
        let reached = chosen.is_none();
        steps.push(Step { place: Place::LookPathRelative, path, found, accepts, reached });
        if reached {
            if accepts {
                chosen = Some(steps.len() - 1);
            } else {
                let cwd = gopath::clean(&env.cwd);
                let found = env.probe.stat(&cwd);
                steps.push(Step {
                    place: Place::WorkingDirectoryFallback,
                    path: cwd,
                    found,
                    accepts: true,
                    reached: true,
                });
                chosen = Some(steps.len() - 1);
            }
        }
    } else {
        for (index, entry) in env.path_entries().iter().enumerate() {
            let directory = if entry.is_empty() { "." } else { entry.as_str() };
            // A hit in a relative entry comes back relative (with exec.ErrDot, which containerd ignores) and is
            // made absolute against the working directory.
            let path = gopath::abs(&env.cwd, &gopath::join(&[directory, binary]));
            let found = env.probe.stat(&path);
            let accepts = found.is_executable_file();
            let reached = chosen.is_none();
            let place = Place::PathEntry { index, entry: entry.clone(), from_opt: index < opt_entries };
            steps.push(Step { place, path, found, accepts, reached });
            if reached && accepts {
                chosen = Some(steps.len() - 1);
                lookpath_not_found = false;
            }
        }
    }

    match &env.containerd_dir {
        Some(containerd_dir) => {
            let path = gopath::join(&[containerd_dir, binary]);
            let found = env.probe.stat(&path);
            let accepts = found.exists();
            let reached = chosen.is_none() && lookpath_not_found;
            steps.push(Step { place: Place::ContainerdDirectory, path, found, accepts, reached });
            if reached && accepts {
                chosen = Some(steps.len() - 1);
            }
        }
        None => resolution
            .notes
            .push("containerd's own directory is unknown, so the next-to-containerd step was not checked".to_owned()),
    }

    let Some(step) = chosen else {
        resolution.outcome = Outcome::Fails {
            error: format!(
                "runtime {} binary not installed {}: file does not exist",
                gopath::quote(&resolution.name),
                gopath::quote(binary)
            ),
        };
        return;
    };
    let path = gopath::abs(&env.cwd, &resolution.steps[step].path);
    if resolution.steps[step].place != Place::Cache {
        cache.insert(binary, path.clone());
        resolution.cached = Some((binary.to_owned(), path.clone()));
    }
    if resolution.steps[step].place == Place::WorkingDirectoryFallback {
        resolution.notes.push(format!(
            "containerd 1.6 bug (containerd#6464): the binary name `{binary}` contains `/`, so exec.LookPath fails \
             with a path error instead of \"not found\"; containerd keeps an empty path, which filepath.Abs turns \
             into its working directory; it caches that under `{binary}` and tries to execute the directory"
        ));
    }
    let found = resolution.steps[step].found.clone();
    let exec_error = exec_error(&path, &found);
    resolution.outcome = Outcome::Runs { path, step, exec_error };
}

/// What Go's exec reports when containerd runs `path` (Go 1.19 wording, the toolchain of the Debian and upstream 1.6
/// builds); `None` when the file can be executed.
fn exec_error(path: &str, found: &Probed) -> Option<String> {
    match found {
        Probed::File { executable: true, .. } => None,
        Probed::Directory { .. } | Probed::File { executable: false, .. } => {
            if path == "/" {
                // exec.Command runs LookPath on names equal to their base name; "/" is one.
                Some("exec: \"/\": permission denied".to_owned())
            } else {
                Some(format!("fork/exec {path}: permission denied"))
            }
        }
        Probed::Missing { error } => Some(format!("fork/exec {path}: {}", error.go_text())),
    }
}

fn add_version_notes(resolution: &mut Resolution) {
    let name = resolution.name.as_str();
    let version = resolution.version;
    if version < Version::V2 && (name.starts_with("io.containerd.runtime.v1.") || name == "io.containerd.runc.v1") {
        resolution.notes.push(format!("containerd {version} logs a deprecation warning for {name}"));
    }
    if version == Version::V2 && name == LEGACY_V1_RUNTIME {
        resolution.notes.push(
            "containerd 2.x has no v1 runtime: the name is resolved like any shim name (containerd-shim-v1-linux)"
                .to_owned(),
        );
    }
    if version == Version::V2 && name == "io.containerd.runc.v1" {
        resolution.notes.push("containerd 2.x no longer ships containerd-shim-runc-v1".to_owned());
    }
    if version == Version::V1_6 && name.contains('/') && !gopath::is_abs(name) {
        resolution.notes.push(
            "containerd 1.7+ rejects this name (`/` without being absolute); 1.6 searches its directory part"
                .to_owned(),
        );
    }
    if version == Version::V1_6 && name.starts_with('.') && !name.contains('/') {
        resolution.notes.push("containerd 1.7+ rejects names starting with `.`; 1.6 accepts them".to_owned());
    }
}

/// An in-memory file system for tests and what-if explanations. Paths are absolute and compared after cleaning;
/// every ancestor of an entry exists as a directory. Mimics Linux: a component over 255 bytes gives ENAMETOOLONG,
/// a NUL byte EINVAL (Go's answer), a file used as a directory ENOTDIR.
#[derive(Debug, Clone, Default)]
pub struct FakeFs {
    entries: BTreeMap<String, FakeEntry>,
    next_id: u64,
}

#[derive(Debug, Clone, Copy)]
enum FakeEntry {
    Directory(u64),
    File { executable: bool, id: u64 },
}

impl FakeFs {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an executable file.
    pub fn exe(self, path: &str) -> Self {
        self.file(path, true)
    }

    pub fn file(mut self, path: &str, executable: bool) -> Self {
        self.next_id += 1;
        let id = self.next_id;
        self.entries.insert(gopath::clean(path), FakeEntry::File { executable, id });
        self
    }

    pub fn dir(mut self, path: &str) -> Self {
        self.next_id += 1;
        let id = self.next_id;
        self.entries.insert(gopath::clean(path), FakeEntry::Directory(id));
        self
    }

    /// Makes `alias` another name of `target` (like a symlink or hard link: same file identity).
    pub fn alias(mut self, alias: &str, target: &str) -> Self {
        if let Some(entry) = self.entries.get(&gopath::clean(target)).copied() {
            self.entries.insert(gopath::clean(alias), entry);
        }
        self
    }
}

impl Probe for FakeFs {
    fn stat(&self, path: &str) -> Probed {
        if path.contains('\0') {
            return Probed::Missing { error: StatError::InvalidArgument };
        }
        if path.split('/').any(|component| component.len() > 255) {
            return Probed::Missing { error: StatError::NameTooLong };
        }
        let path = gopath::clean(path);
        if path == "/" {
            return Probed::Directory { id: Some((0, 0)) };
        }
        if let Some(entry) = self.entries.get(&path) {
            return match *entry {
                FakeEntry::Directory(id) => Probed::Directory { id: Some((0, id)) },
                FakeEntry::File { executable, id } => Probed::File { executable, id: Some((0, id)) },
            };
        }
        let mut ancestor = gopath::dir(&path);
        while ancestor != "/" {
            if let Some(FakeEntry::File { .. }) = self.entries.get(&ancestor) {
                return Probed::Missing { error: StatError::NotADirectory };
            }
            ancestor = gopath::dir(&ancestor);
        }
        let prefix = format!("{path}/");
        if self.entries.keys().any(|key| key.starts_with(&prefix)) {
            return Probed::Directory { id: None };
        }
        Probed::Missing { error: StatError::NotFound }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(fs: &'a FakeFs, cwd: &str, path: &str, containerd_dir: &str) -> Env<'a> {
        Env {
            cwd: cwd.to_owned(),
            path: path.to_owned(),
            opt_dir: None,
            containerd_dir: Some(containerd_dir.to_owned()),
            probe: fs,
        }
    }

    #[test]
    fn version_parsing() {
        assert_eq!(Version::parse("1.6"), Ok(Version::V1_6));
        assert_eq!(Version::parse("1.6.20~ds1"), Ok(Version::V1_6));
        assert_eq!(Version::parse("v1.7.13"), Ok(Version::V1_7));
        assert_eq!(Version::parse("2"), Ok(Version::V2));
        assert_eq!(Version::parse("2.x"), Ok(Version::V2));
        assert_eq!(Version::parse("v2.1.0-rc.1"), Ok(Version::V2));
        assert!(matches!(Version::parse("1.5.9"), Err(VersionError::Unsupported(_))));
        assert!(matches!(Version::parse("banana"), Err(VersionError::Unparsable(_))));
        assert_eq!(
            Version::from_version_output(
                "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3\n"
            ),
            Ok(Version::V1_6)
        );
        assert_eq!(
            Version::from_version_output("containerd github.com/containerd/containerd/v2 v2.0.0 207ad711ea\n"),
            Ok(Version::V2)
        );
    }

    #[test]
    fn order_cwd_then_path_then_containerd_dir() {
        let fs = FakeFs::new()
            .exe("/usr/bin/containerd-shim-x-v1")
            .exe("/usr/local/bin/containerd-shim-x-v1")
            .exe("/containerd-shim-x-v1");
        let mut e = env(&fs, "/", "/usr/local/bin:/usr/bin", "/usr/bin");
        e.opt_dir = Some("/opt/containerd".into());
        for version in Version::ALL {
            let r = lookup("io.containerd.x.v1", version, &e);
            assert_eq!(r.chosen(), Some("/containerd-shim-x-v1"), "{version}");
            assert_eq!(r.steps.len(), 5);
            assert!(r.steps[1..].iter().all(|s| !s.reached));
        }
        let fs = FakeFs::new().exe("/usr/bin/containerd-shim-x-v1").exe("/usr/local/bin/containerd-shim-x-v1");
        let mut e = env(&fs, "/", "/usr/local/bin:/usr/bin", "/usr/bin");
        e.opt_dir = Some("/opt/containerd".into());
        let r = lookup("io.containerd.x.v1", Version::V1_7, &e);
        assert_eq!(r.chosen(), Some("/usr/local/bin/containerd-shim-x-v1"));
        assert!(matches!(r.steps[1].place, Place::PathEntry { index: 0, from_opt: true, .. }));
        let fs = FakeFs::new().exe("/srv/ctd/containerd-shim-x-v1");
        let e = env(&fs, "/", "/usr/bin", "/srv/ctd");
        let r = lookup("io.containerd.x.v1", Version::V2, &e);
        assert_eq!(r.chosen(), Some("/srv/ctd/containerd-shim-x-v1"));
        assert!(matches!(r.chosen_step().map(|s| &s.place), Some(Place::ContainerdDirectory)));
    }

    #[test]
    fn stat_steps_accept_anything_lookpath_only_executables() {
        let fs = FakeFs::new().file("/work/containerd-shim-x-v1", false).exe("/usr/bin/containerd-shim-x-v1");
        let e = env(&fs, "/work", "/usr/bin", "/usr/bin");
        let r = lookup("io.containerd.x.v1", Version::V1_6, &e);
        assert_eq!(
            r.outcome,
            Outcome::Runs {
                path: "/work/containerd-shim-x-v1".into(),
                step: 0,
                exec_error: Some("fork/exec /work/containerd-shim-x-v1: permission denied".into())
            }
        );
        let fs = FakeFs::new().file("/a/containerd-shim-x-v1", false).exe("/b/containerd-shim-x-v1");
        let e = env(&fs, "/", "/a:/b", "/usr/bin");
        assert_eq!(lookup("io.containerd.x.v1", Version::V1_6, &e).chosen(), Some("/b/containerd-shim-x-v1"));
        let fs = FakeFs::new().dir("/a/containerd-shim-x-v1").file("/usr/bin/containerd-shim-x-v1", false);
        let e = env(&fs, "/", "/a", "/usr/bin");
        let r = lookup("io.containerd.x.v1", Version::V2, &e);
        assert_eq!(r.chosen(), Some("/usr/bin/containerd-shim-x-v1"));
        assert!(matches!(r.outcome, Outcome::Runs { exec_error: Some(_), .. }));
    }

    #[test]
    fn empty_and_relative_path_entries_resolve_against_cwd() {
        let fs = FakeFs::new().exe("/work/bin/containerd-shim-x-v1");
        let e = env(&fs, "/work", "bin", "/usr/bin");
        assert_eq!(lookup("io.containerd.x.v1", Version::V1_6, &e).chosen(), Some("/work/bin/containerd-shim-x-v1"));
        assert_eq!(gopath::split_list(&effective_path("", Some("/opt/containerd"))), vec!["/opt/containerd/bin", ""]);
    }

    #[test]
    fn cache_is_keyed_by_binary_name_and_kept() {
        let fs = FakeFs::new().exe("/srv/my/containerd-shim-foo-v2").exe("/usr/bin/containerd-shim-foo-v2");
        let e = env(&fs, "/srv", "/usr/bin", "/usr/bin");
        let mut cache = Cache::new();
        let first = lookup_cached("my/io.containerd.foo.v2", Version::V1_6, &e, &mut cache);
        assert_eq!(first.chosen(), Some("/srv/my/containerd-shim-foo-v2"));
        assert_eq!(first.cached, Some(("containerd-shim-foo-v2".into(), "/srv/my/containerd-shim-foo-v2".into())));
        let second = lookup_cached("io.containerd.foo.v2", Version::V1_6, &e, &mut cache);
        assert_eq!(second.chosen(), Some("/srv/my/containerd-shim-foo-v2"));
        assert_eq!(second.steps[0].place, Place::Cache);
        assert_eq!(second.cached, None);
        let fresh = lookup("io.containerd.foo.v2", Version::V1_6, &e);
        assert_eq!(fresh.chosen(), Some("/usr/bin/containerd-shim-foo-v2"));
        // Errors and absolute paths are not cached.
        let mut cache = Cache::new();
        lookup_cached("io.containerd.nope.v2", Version::V1_6, &e, &mut cache);
        lookup_cached("/usr/bin/containerd-shim-foo-v2", Version::V1_6, &e, &mut cache);
        assert!(cache.is_empty());
    }

    #[test]
    fn slash_in_binary_name_on_1_6() {
        let fs = FakeFs::new().exe("/srv/containerd-shim--/y");
        let e = env(&fs, "/srv", "/usr/bin", "/usr/bin");
        let mut cache = Cache::new();
        let r = lookup_cached("./x", Version::V1_6, &e, &mut cache);
        assert_eq!(
            r.outcome,
            Outcome::Runs {
                path: "/srv".into(),
                step: 2,
                exec_error: Some("fork/exec /srv: permission denied".into())
            }
        );
        assert_eq!(cache.get("containerd-shim--/x"), Some("/srv"));
        assert!(r.steps.last().is_some_and(|s| !s.reached), "next-to-containerd is not reached");
        let r = lookup_cached("./y", Version::V1_6, &e, &mut cache);
        assert_eq!(r.chosen(), Some("/srv/containerd-shim--/y"));
        let e = env(&fs, "/", "/usr/bin", "/usr/bin");
        let r = lookup("./x", Version::V1_6, &e);
        assert_eq!(
            r.wrapped_error().as_deref(),
            Some("failed to start shim: start failed: : exec: \"/\": permission denied")
        );
    }

    #[test]
    fn legacy_v1_runs_containerd_shim_from_path() {
        let fs = FakeFs::new().exe("/usr/bin/containerd-shim").exe("/containerd-shim");
        let e = env(&fs, "/", "/usr/local/bin:/usr/bin", "/usr/bin");
        let r = lookup(LEGACY_V1_RUNTIME, Version::V1_6, &e);
        assert_eq!(r.chosen(), Some("/usr/bin/containerd-shim"));
        let r = lookup(LEGACY_V1_RUNTIME, Version::V2, &e);
        assert!(matches!(r.plan, Plan::Search { ref binary_name, .. } if binary_name == "containerd-shim-v1-linux"));
        let fs = FakeFs::new();
        let e = env(&fs, "/", "/usr/bin", "/usr/bin");
        let r = lookup(LEGACY_V1_RUNTIME, Version::V1_7, &e);
        assert_eq!(
            r.outcome,
            Outcome::Fails { error: "exec: \"containerd-shim\": executable file not found in $PATH".into() }
        );
    }

    #[test]
    fn windows_naming() {
        assert_eq!(
            shim_binary_name("io.containerd.runhcs.v1", Version::V2, Platform::Windows).as_deref(),
            Some("containerd-shim-runhcs-v1.exe")
        );
        assert_eq!(
            plan_for("C:\\shims\\io.containerd.runc.v2", Version::V2, Platform::Windows),
            Plan::AbsolutePath { path: "C:\\shims\\io.containerd.runc.v2".into() }
        );
        assert_eq!(
            plan_for("io\\containerd.runc.v2", Version::V1_7, Platform::Windows),
            Plan::Search { binary_name: "containerd-shim-runc-v2.exe".into(), name_dir: "io".into() }
        );
    }
}
