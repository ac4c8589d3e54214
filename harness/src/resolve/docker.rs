//! Docker's gate for runtime names (`docker run --runtime NAME`, `HostConfig.Runtime`), per dockerd release line.
//!
//! Upstream code this models (read, not copied), see shared/reference/runtime-names.md §1:
//! - ≤20.10: `daemon/daemon_unix.go verifyPlatformContainerSettings`: only stock or configured names, else
//!   `Unknown runtime specified <name>`;
//! - 23.0 (moby 547da0d575, "support other containerd runtimes (MVP)"): a name that is neither stock nor configured
//!   goes to containerd verbatim if `IsPermissibleC8dRuntimeName` holds: not absolute, no `/`, and containerd's
//!   `shim.BinaryName` is non-empty (vendored 1.6 in 23/24: one dot suffices, a leading dot passes; vendored 1.7 in
//!   25–27: a leading dot fails); 28.0 (moby 7a92f21445) checks locally with the same outcome as 25–27;
//! - otherwise `unknown or invalid runtime name: <name>` (HTTP 400).
//!
//! Linux only: dockerd on Windows has no gate (see the reference, §4.3).
use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use super::containerd::{self, Version as ContainerdVersion};
use super::gopath::{self, Platform};

/// dockerd release lines with distinct runtime-name handling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize)]
pub enum Version {
    /// 20.10 and older: no pass-through.
    #[serde(rename = "20.10")]
    V20_10,
    /// 23.x and 24.x: pass-through, gate with containerd 1.6's `BinaryName` (leading dot allowed). `runtimeType` in
    /// daemon.json arrived in 24.0; [`DaemonRuntimes`] validation assumes 24.
    #[serde(rename = "23-24")]
    V23_24,
    /// 25.x–27.x: gate with containerd 1.7's `BinaryName` (leading dot refused); `Get("")` returns the default.
    #[serde(rename = "25-27")]
    V25_27,
    /// 28.0 and later (docker-v29, master): local `strings.Cut` check, same outcome as 25–27.
    #[serde(rename = "28+")]
    V28Plus,
}

impl Version {
    pub const ALL: [Version; 4] = [Version::V20_10, Version::V23_24, Version::V25_27, Version::V28Plus];
    pub const NEWEST: Version = Version::V28Plus;

    pub fn label(self) -> &'static str {
        match self {
            Version::V20_10 => "20.10",
            Version::V23_24 => "23-24",
            Version::V25_27 => "25-27",
            Version::V28Plus => "28+",
        }
    }

    /// Parses `20.10`, `19.03.15`, `23`, `24.0.7`, `25-27`, `28+`, `29.1.0`. 21.x/22.x were never released; 22.06
    /// pre-releases carried the pass-through and map to 23-24.
    pub fn parse(text: &str) -> Result<Version, DockerVersionError> {
        let trimmed = text.trim();
        match trimmed {
            "23-24" => return Ok(Version::V23_24),
            "25-27" => return Ok(Version::V25_27),
            "28+" => return Ok(Version::V28Plus),
            _ => {}
        }
        let (major, _) = containerd::parse_major_minor(trimmed.trim_end_matches('+'))
            .ok_or_else(|| DockerVersionError(text.to_owned()))?;
        Ok(match major {
            0..=20 => Version::V20_10,
            21..=24 => Version::V23_24,
            25..=27 => Version::V25_27,
            _ => Version::V28Plus,
        })
    }

    /// Extracts the version from `dockerd --version` output, e.g. `Docker version 24.0.7, build 311b9ff`.
    pub fn from_version_output(output: &str) -> Result<Version, DockerVersionError> {
        let token = output
            .split_whitespace()
            .map(|token| token.trim_end_matches(','))
            .find(|token| token.contains('.') && containerd::parse_major_minor(token).is_some())
            .ok_or_else(|| DockerVersionError(output.trim().to_owned()))?;
        Version::parse(token)
    }

    /// The containerd `BinaryName` rules the gate borrows (vendored containerd).
    fn vendored_containerd(self) -> Option<ContainerdVersion> {
        match self {
            Version::V20_10 => None,
            Version::V23_24 => Some(ContainerdVersion::V1_6),
            Version::V25_27 | Version::V28Plus => Some(ContainerdVersion::V1_7),
        }
    }

    fn unknown_runtime_message(self, name: &str) -> String {
        match self {
            Version::V20_10 => format!("Unknown runtime specified {name}"),
            _ => format!("unknown or invalid runtime name: {name}"),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read a Docker version from `{0}` (expected e.g. 20.10, 24.0.7, 28)")]
pub struct DockerVersionError(pub String);

/// The shim dockerd's stock runtimes use.
pub const RUNC_V2_SHIM: &str = "io.containerd.runc.v2";

/// What dockerd does with a runtime name at container create/start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Verdict {
    /// Empty name: dockerd substitutes its default runtime.
    Default,
    /// A built-in name: containerd gets `shim` with Docker's runc options (BinaryName runc, Root, SystemdCgroup).
    Stock { shim: String },
    /// A name from daemon.json / `--add-runtime`: containerd gets `shim` (with `runc_binary` as the runc options'
    /// BinaryName for path runtimes).
    Configured { shim: String, runc_binary: Option<String> },
    /// Passed to containerd verbatim with no runtime options.
    Implicit { shim: String },
    /// Refused with `message` (HTTP 400 from 23.0 on).
    Rejected { message: String },
}

impl Verdict {
    /// The runtime name containerd receives, if dockerd gets that far.
    pub fn containerd_name(&self) -> Option<&str> {
        match self {
            Verdict::Stock { shim } | Verdict::Configured { shim, .. } | Verdict::Implicit { shim } => Some(shim),
            Verdict::Default | Verdict::Rejected { .. } => None,
        }
    }

    pub fn short(&self) -> &'static str {
        match self {
            Verdict::Default => "default",
            Verdict::Stock { .. } => "stock",
            Verdict::Configured { .. } => "configured",
            Verdict::Implicit { .. } => "implicit",
            Verdict::Rejected { .. } => "rejected",
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Verdict::Default => "the daemon's default runtime is substituted".to_owned(),
            Verdict::Stock { shim } => format!("built-in: containerd gets {shim} with Docker's runc options"),
            Verdict::Configured { shim, runc_binary: Some(binary) } => {
                format!("configured: containerd gets {shim} with runc BinaryName {binary}")
            }
            Verdict::Configured { shim, runc_binary: None } => format!("configured: containerd gets {shim}"),
            Verdict::Implicit { shim } => format!("passed to containerd verbatim as {shim}, with no runtime options"),
            Verdict::Rejected { message } => message.clone(),
        }
    }
}

/// Stock (built-in) runtime names and the shim each maps to.
pub fn stock_runtimes(version: Version) -> &'static [(&'static str, &'static str)] {
    match version {
        Version::V20_10 => &[
            ("runc", RUNC_V2_SHIM),
            (RUNC_V2_SHIM, RUNC_V2_SHIM),
            (containerd::LEGACY_V1_RUNTIME, containerd::LEGACY_V1_RUNTIME),
        ],
        _ => &[("runc", RUNC_V2_SHIM), (RUNC_V2_SHIM, RUNC_V2_SHIM)],
    }
}

fn stock_shim(name: &str, version: Version) -> Option<&'static str> {
    stock_runtimes(version).iter().find(|(stock, _)| *stock == name).map(|(_, shim)| *shim)
}

/// `isPermissibleC8dRuntimeName` of that release: may an unconfigured name go to containerd verbatim? Always false
/// for 20.10, which has no pass-through.
pub fn permissible(name: &str, version: Version) -> bool {
    match version {
        Version::V20_10 => false,
        Version::V23_24 | Version::V25_27 => {
            let Some(vendored) = version.vendored_containerd() else { return false };
            !gopath::is_abs(name)
                && !name.contains('/')
                && containerd::shim_binary_name(name, vendored, Platform::Linux).is_some()
        }
        Version::V28Plus => {
            if gopath::is_abs(name) || name.contains('/') {
                return false;
            }
            matches!(name.split_once('.'), Some((prefix, _)) if !prefix.is_empty())
        }
    }
}

/// dockerd's verdict on a name a user passes with `--runtime`, with no runtimes configured in daemon.json.
pub fn gate(name: &str, version: Version) -> Verdict {
    gate_with(name, version, &DaemonRuntimes::default())
}

/// dockerd's verdict with the given daemon runtime configuration (configured names bypass the gate: only the admin
/// writes daemon.json).
pub fn gate_with(name: &str, version: Version, config: &DaemonRuntimes) -> Verdict {
    if name.is_empty() {
        // verifyPlatformContainerSettings and getLibcontainerdCreateOptions substitute the default first (23/24's
        // getRuntime("") alone would refuse it; 25+ Get("") returns the default).
        return Verdict::Default;
    }
    let configured = config.runtimes.get(name).map(|runtime| runtime.verdict(name));
    let stock = stock_shim(name, version).map(|shim| Verdict::Stock { shim: shim.to_owned() });
    // 25+ writes user entries after the stock ones (a daemon.json `io.containerd.runc.v2` overrides the alias;
    // from code reading, unverified); 23/24 wrote the stock entries last.
    let known = if version >= Version::V25_27 { configured.or(stock) } else { stock.or(configured) };
    if let Some(verdict) = known {
        return verdict;
    }
    if permissible(name, version) {
        Verdict::Implicit { shim: name.to_owned() }
    } else {
        Verdict::Rejected { message: version.unknown_runtime_message(name) }
    }
}

/// Why the harness refuses a `--runtime` value: it certifies a shim by the name users give Docker and containerd, so
/// the name must be one current Docker passes to containerd.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GateError {
    #[error(
        "runtime name is empty: dockerd would substitute its default runtime, and containerd refuses an empty name \
         (\"no runtime name\"); pass a name such as io.containerd.runc.v2"
    )]
    Empty,
    #[error(
        "runtime name `{name}` is a path: Docker refuses names containerd would treat as a path (moby 547da0d575; \
         dockerd answers \"unknown or invalid runtime name: {name}\"); use --runtime-binary PATH to test a binary by \
         path (the run is then not certified by name)"
    )]
    Path { name: String },
    #[error(
        "runtime name `{name}` is Docker's alias for io.containerd.runc.v2 (with Docker's runc options), not a name \
         containerd knows (\"invalid runtime name runc, …\"); use --runtime io.containerd.runc.v2"
    )]
    DockerAlias { name: String },
    #[error(
        "runtime name `{name}` has no `.`: containerd derives no shim binary from it (\"invalid runtime name {name}, \
         …\") and dockerd answers \"unknown or invalid runtime name: {name}\"; use the form io.containerd.NAME.VERSION, \
         which runs containerd-shim-NAME-VERSION"
    )]
    NoDot { name: String },
    #[error(
        "runtime name `{name}` starts with `.`: dockerd 25+ answers \"unknown or invalid runtime name: {name}\" and \
         containerd 1.7+ refuses it (only dockerd 23-24 and containerd 1.6 accept it); use the form \
         io.containerd.NAME.VERSION"
    )]
    LeadingDot { name: String },
}

/// Refuses `--runtime` values current Docker would not pass to containerd (the 25+/28+ gate), most importantly
/// paths, with Docker's wording and what to do instead.
pub fn check_user_runtime_name(name: &str) -> Result<(), GateError> {
    if name.is_empty() {
        return Err(GateError::Empty);
    }
    if gopath::is_abs(name) || name.contains('/') {
        return Err(GateError::Path { name: name.to_owned() });
    }
    if name == "runc" {
        return Err(GateError::DockerAlias { name: name.to_owned() });
    }
    if !name.contains('.') {
        return Err(GateError::NoDot { name: name.to_owned() });
    }
    if !permissible(name, Version::NEWEST) {
        return Err(GateError::LeadingDot { name: name.to_owned() });
    }
    Ok(())
}

/// One entry of daemon.json `runtimes` (or `--add-runtime NAME=PATH`, which sets only `path`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ConfiguredRuntime {
    /// Legacy form: an OCI runtime binary for the runc v2 shim.
    pub path: Option<String>,
    #[serde(rename = "runtimeArgs")]
    pub args: Vec<String>,
    /// 24+: the containerd runtime (shim) name, used verbatim; may be a path (only the admin writes it).
    #[serde(rename = "runtimeType")]
    pub runtime_type: Option<String>,
    /// 24+: whether `options` is set.
    pub options: bool,
}

impl ConfiguredRuntime {
    fn verdict(&self, name: &str) -> Verdict {
        match (&self.runtime_type, &self.path) {
            (Some(runtime_type), _) => Verdict::Configured { shim: runtime_type.clone(), runc_binary: None },
            // With runtimeArgs dockerd writes a wrapper script and hands that to runc's options instead.
            (None, Some(path)) if !self.args.is_empty() => Verdict::Configured {
                shim: RUNC_V2_SHIM.to_owned(),
                runc_binary: Some(format!(
                    "<data-root>/runtimes/{name}.<hash>, a wrapper running `{path} {}`",
                    self.args.join(" ")
                )),
            },
            (None, path) => Verdict::Configured { shim: RUNC_V2_SHIM.to_owned(), runc_binary: path.clone() },
        }
    }
}

/// The runtime part of a daemon configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DaemonRuntimes {
    pub runtimes: BTreeMap<String, ConfiguredRuntime>,
    /// `--default-runtime` / `default-runtime`.
    pub default_runtime: Option<String>,
}

/// A daemon configuration dockerd refuses (at start or reload), with dockerd's wording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("runtime name 'runc' is reserved")]
    Reserved,
    #[error("invalid runtime argument: {0}")]
    InvalidRuntimeArgument(String),
    #[error("runtime '{0}' was already defined")]
    AlreadyDefined(String),
    #[error("runtime {0}: either a runtimeType or a path must be configured")]
    NeitherPathNorType(String),
    #[error("runtime {0}: cannot configure both path and runtimeType for the same runtime")]
    BothPathAndType(String),
    #[error("runtime {0}: options cannot be used with a path runtime")]
    OptionsWithPath(String),
    #[error("runtime {0}: args cannot be used with a runtimeType runtime")]
    ArgsWithType(String),
    #[error("specified default runtime '{0}' does not exist")]
    UnknownDefault(String),
}

impl DaemonRuntimes {
    /// `--add-runtime NAME=PATH`: both sides trimmed, NAME lower-cased, `runc` reserved, duplicates refused.
    pub fn add_runtime_flag(&mut self, argument: &str) -> Result<(), ConfigError> {
        let (name, path) =
            argument.split_once('=').ok_or_else(|| ConfigError::InvalidRuntimeArgument(argument.to_owned()))?;
        let (name, path) = (name.trim(), path.trim());
        if name.is_empty() || path.is_empty() {
            return Err(ConfigError::InvalidRuntimeArgument(argument.to_owned()));
        }
        let name = name.to_lowercase();
        if name == "runc" {
            return Err(ConfigError::Reserved);
        }
        if self.runtimes.contains_key(&name) {
            return Err(ConfigError::AlreadyDefined(name));
        }
        self.runtimes.insert(name, ConfiguredRuntime { path: Some(path.to_owned()), ..Default::default() });
        Ok(())
    }

    /// What dockerd checks at start-up and reload (v24+ field rules; 20.10 and 23 only know `path`).
    pub fn validate(&self, version: Version) -> Result<(), ConfigError> {
        for (name, runtime) in &self.runtimes {
            if name == "runc" {
                return Err(ConfigError::Reserved);
            }
            if version >= Version::V23_24 {
                if runtime.path.is_none() && runtime.runtime_type.is_none() {
                    return Err(ConfigError::NeitherPathNorType(name.clone()));
                }
                if runtime.path.is_some() {
                    if runtime.runtime_type.is_some() {
                        return Err(ConfigError::BothPathAndType(name.clone()));
                    }
                    if runtime.options {
                        return Err(ConfigError::OptionsWithPath(name.clone()));
                    }
                }
                if runtime.runtime_type.is_some() && !runtime.args.is_empty() {
                    return Err(ConfigError::ArgsWithType(name.clone()));
                }
            }
        }
        if let Some(default) = self.default_runtime.as_deref().filter(|d| !d.is_empty()) {
            let known = stock_shim(default, version).is_some() || self.runtimes.contains_key(default);
            if !known && !permissible(default, version) {
                return Err(ConfigError::UnknownDefault(default.to_owned()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_parsing() {
        assert_eq!(Version::parse("20.10"), Ok(Version::V20_10));
        assert_eq!(Version::parse("19.03.15"), Ok(Version::V20_10));
        assert_eq!(Version::parse("24.0.7"), Ok(Version::V23_24));
        assert_eq!(Version::parse("25"), Ok(Version::V25_27));
        assert_eq!(Version::parse("28+"), Ok(Version::V28Plus));
        assert_eq!(Version::parse("29.1.0"), Ok(Version::V28Plus));
        assert!(Version::parse("docker").is_err());
        assert_eq!(Version::from_version_output("Docker version 24.0.7, build 311b9ff\n"), Ok(Version::V23_24));
        assert_eq!(Version::from_version_output("Docker version 20.10.24+dfsg1, build 5d6db84"), Ok(Version::V20_10));
    }

    #[test]
    fn moby_get_runtime_unit_test_vectors() {
        // daemon/runtime_unix_test.go TestGetRuntime (25+ form).
        let v = Version::V25_27;
        assert_eq!(gate("runc", v), Verdict::Stock { shim: RUNC_V2_SHIM.into() });
        assert_eq!(
            gate("io.containerd.my-shim.v42", v),
            Verdict::Implicit { shim: "io.containerd.my-shim.v42".into() }
        );
        assert_eq!(gate("io.containerd.my-shim", v), Verdict::Implicit { shim: "io.containerd.my-shim".into() });
        for rejected in ["myshim", "/path/to/runc", "/path/to/io.containerd.runc.v2", "my/io.containerd.runc.v2"] {
            assert_eq!(
                gate(rejected, v),
                Verdict::Rejected { message: format!("unknown or invalid runtime name: {rejected}") }
            );
        }
        assert_eq!(gate("", v), Verdict::Default);
    }

    #[test]
    fn permissible_differs_only_on_leading_dot() {
        for name in [".v2", ".", "..", "...", ".io.containerd.runc.v2"] {
            assert!(permissible(name, Version::V23_24), "{name}");
            assert!(!permissible(name, Version::V25_27), "{name}");
            assert!(!permissible(name, Version::V28Plus), "{name}");
        }
        for name in ["a.", "a..", "io.containerd..v2", "io\\containerd.runc.v2", "io.containerd.my shim.v2"] {
            for v in [Version::V23_24, Version::V25_27, Version::V28Plus] {
                assert!(permissible(name, v), "{name} {v}");
            }
            assert!(!permissible(name, Version::V20_10));
        }
    }

    #[test]
    fn harness_refuses_paths_with_dockers_reason() {
        let error = check_user_runtime_name("./x").unwrap_err();
        assert!(matches!(error, GateError::Path { .. }));
        let text = error.to_string();
        assert!(text.contains("runtime name `./x` is a path"));
        assert!(text.contains("moby 547da0d575"));
        assert!(text.contains("unknown or invalid runtime name: ./x"));
        assert!(text.contains("--runtime-binary PATH"));
        assert!(matches!(check_user_runtime_name("/usr/bin/containerd-shim-runc-v2"), Err(GateError::Path { .. })));
        assert!(matches!(check_user_runtime_name("my/io.containerd.runc.v2"), Err(GateError::Path { .. })));
        assert_eq!(check_user_runtime_name(""), Err(GateError::Empty));
        assert!(matches!(check_user_runtime_name("runc"), Err(GateError::DockerAlias { .. })));
        assert!(matches!(check_user_runtime_name("myshim"), Err(GateError::NoDot { .. })));
        assert!(matches!(check_user_runtime_name(".v2"), Err(GateError::LeadingDot { .. })));
        assert_eq!(check_user_runtime_name("io.containerd.kata.v2"), Ok(()));
        assert_eq!(check_user_runtime_name("io.containerd.runc.v2"), Ok(()));
    }

    #[test]
    fn moby_setup_runtimes_unit_test_vectors() {
        let v = Version::V25_27;
        let one = |runtime: ConfiguredRuntime| DaemonRuntimes {
            runtimes: BTreeMap::from([("myruntime".to_owned(), runtime)]),
            default_runtime: None,
        };
        let path = || Some("/bin/true".to_owned());
        let kind = || Some("io.containerd.runc.v2".to_owned());
        let args = || vec!["--version".to_owned()];
        let cases = [
            (ConfiguredRuntime::default(), "either a runtimeType or a path must be configured"),
            (
                ConfiguredRuntime { args: args(), ..Default::default() },
                "either a runtimeType or a path must be configured",
            ),
            (
                ConfiguredRuntime { options: true, ..Default::default() },
                "either a runtimeType or a path must be configured",
            ),
            (ConfiguredRuntime { path: path(), runtime_type: kind(), ..Default::default() }, "cannot configure both"),
            (
                ConfiguredRuntime { path: path(), options: true, ..Default::default() },
                "options cannot be used with a path runtime",
            ),
            (
                ConfiguredRuntime { runtime_type: kind(), args: args(), ..Default::default() },
                "args cannot be used with a runtimeType runtime",
            ),
            (ConfiguredRuntime { path: path(), args: args(), options: true, ..Default::default() }, "options cannot"),
            (
                ConfiguredRuntime { runtime_type: kind(), options: true, args: args(), ..Default::default() },
                "args cannot",
            ),
            (
                ConfiguredRuntime { path: path(), args: args(), runtime_type: kind(), options: true },
                "cannot configure both",
            ),
        ];
        for (runtime, want) in cases {
            let error = one(runtime.clone()).validate(v).unwrap_err().to_string();
            assert!(error.contains(want), "{runtime:?}: {error}");
            assert!(error.starts_with("runtime myruntime: "), "{error}");
        }
        let mut config = DaemonRuntimes::default();
        config.runtimes.insert("runc".into(), ConfiguredRuntime { path: path(), ..Default::default() });
        assert_eq!(config.validate(v), Err(ConfigError::Reserved));
        for (default, ok) in [("runc", true), ("io.containerd.runc.v2", true), ("notdefined", false)] {
            let config = DaemonRuntimes { default_runtime: Some(default.into()), ..Default::default() };
            assert_eq!(config.validate(v).is_ok(), ok, "{default}");
        }
        let mut config = DaemonRuntimes::default();
        config.runtimes.insert("some-runtime".into(), ConfiguredRuntime { path: path(), ..Default::default() });
        config.default_runtime = Some("some-runtime".into());
        assert_eq!(config.validate(v), Ok(()));
    }
}
