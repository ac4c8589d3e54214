//! containerd profiles: how one containerd release line drives a shim, as data plus a few small functions.
//!
//! A certificate says *which containerd* a shim works with, so the harness behaves exactly like that release: the
//! `start` invocation and how its output is read, the Task service it then dials, the metadata and deadline each RPC
//! carries, the order of calls, the bundle it prepares and the cleanup it does. Everything that differs between lines
//! lives here, each fact with the upstream source it comes from (`docs/containerd-profiles.md` has the table). Lines
//! with a daemon on the reference host (1.6.20, 1.7.24) are checked against the running daemon by the fidelity test
//! (`harness/tests/fidelity.rs`); where the daemon and this file disagree, the daemon wins and this file is wrong.
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A containerd release line, as `--containerd` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Line {
    #[serde(rename = "1.6")]
    V1_6,
    #[serde(rename = "1.7")]
    V1_7,
    /// 2.0 to 2.2: legacy stdin, JSON or plain `start` reply, Task API v2 or v3.
    #[serde(rename = "2.0")]
    V2_0,
    /// 2.3 and later: BootstrapParams on stdin, protobuf BootstrapResult accepted.
    #[serde(rename = "2.x")]
    V2x,
}

impl Line {
    pub const ALL: [Line; 4] = [Line::V1_6, Line::V1_7, Line::V2_0, Line::V2x];

    pub fn label(self) -> &'static str {
        match self {
            Line::V1_6 => "1.6",
            Line::V1_7 => "1.7",
            Line::V2_0 => "2.0",
            Line::V2x => "2.x",
        }
    }

    pub fn parse(text: &str) -> Option<Line> {
        match text.trim().trim_start_matches('v') {
            "1.6" => Some(Line::V1_6),
            "1.7" => Some(Line::V1_7),
            "2.0" | "2.1" | "2.2" => Some(Line::V2_0),
            "2.x" | "2" => Some(Line::V2x),
            other => {
                // A full version (`1.6.20`, `2.3.1`) picks its line.
                let mut parts = other.split('.');
                let major: u32 = parts.next()?.parse().ok()?;
                let minor: u32 = parts.next()?.parse().ok()?;
                match (major, minor) {
                    (1, 6) => Some(Line::V1_6),
                    (1, 7) => Some(Line::V1_7),
                    (2, 0..=2) => Some(Line::V2_0),
                    (2, _) => Some(Line::V2x),
                    _ => None,
                }
            }
        }
    }

    /// The line of an installed containerd (`containerd --version` output), if it is one we model.
    pub fn of_version_output(output: &str) -> Option<Line> {
        output.split_whitespace().filter_map(|word| word.strip_prefix('v').or(Some(word))).find_map(|word| {
            let digits = word.chars().next()?.is_ascii_digit() && word.contains('.');
            digits.then(|| Line::parse(word)).flatten()
        })
    }

    /// The runtime-name rules of this line (crate::resolve models 1.6, 1.7 and 2.x).
    pub fn resolve_version(self) -> crate::resolve::containerd::Version {
        use crate::resolve::containerd::Version;
        match self {
            Line::V1_6 => Version::V1_6,
            Line::V1_7 => Version::V1_7,
            Line::V2_0 | Line::V2x => Version::V2,
        }
    }

    pub fn profile(self) -> &'static Profile {
        match self {
            Line::V1_6 => &V1_6,
            Line::V1_7 => &V1_7,
            Line::V2_0 => &V2_0,
            Line::V2x => &V2_X,
        }
    }
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// What the profile was checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Judge {
    /// A running daemon of this line on the reference host (the fidelity test records both sides).
    Daemon,
    /// Read from source only: no daemon of this line can be installed on the reference host.
    Source,
}

/// What goes on `start`'s stdin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartStdin {
    /// The marshalled runtime options `Any` when the runtime has options, else nothing (Go's nil stdin: /dev/null).
    OptionsAny,
    /// A protobuf `BootstrapParams` (the options travel as an extension).
    BootstrapParams,
}

/// How `start`'s output is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOutput {
    /// stdout and stderr combined, trimmed, dialled as the address (1.6: `strings.TrimSpace(CombinedOutput())`).
    CombinedAddress,
    /// stdout and stderr combined and trimmed; JSON `{version,address,protocol}` if it decodes (version above
    /// `max_version` refused), else the plain address.
    CombinedJson { max_version: i32 },
    /// As `CombinedJson`, but a protobuf `BootstrapResult` is tried first.
    CombinedProtobuf { max_version: i32 },
}

/// Why containerd makes a call: the same RPC carries a different deadline depending on who issues it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// On behalf of a client request (`ctr`, CRI, Docker): the request's own context, which has no deadline.
    Client,
    /// The tasks service reading a task's state (`ctr task ls`, Get, Start's pid): `io.containerd.timeout.task.state`.
    TaskState,
    /// The Shutdown after a Delete: `io.containerd.timeout.shim.shutdown`.
    ShutdownAfterDelete,
    /// Cleaning up after a failed Create (Delete, then Shutdown): `io.containerd.timeout.shim.cleanup`, on a
    /// background context.
    CleanupAfterFailedCreate,
    /// Reconnecting after a restart (the Connect that checks the shim is alive): `io.containerd.timeout.shim.load`.
    Reload,
    /// The Pids 1.7+ asks right after the reload Connect (no deadline).
    ReloadCheck,
}

/// How one RPC goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallShape {
    /// `timeout_nano` in the request; `None` means the request carries no deadline (the harness still bounds it).
    pub deadline: Option<Duration>,
    /// Whether the `containerd-namespace-ttrpc` metadata header is sent.
    pub namespace_header: bool,
}

/// One containerd line's way of driving a shim.
#[derive(Debug)]
pub struct Profile {
    pub line: Line,
    /// The release the profile was taken from.
    pub release: &'static str,
    pub judge: Judge,
    /// Environment variables containerd adds to its own for `start` and `delete`, in order, with their sources.
    pub env: &'static [EnvVar],
    pub start_stdin: StartStdin,
    /// Shims that still get the legacy options `Any` on a BootstrapParams line (base name contains one of these).
    pub legacy_stdin_binaries: &'static [&'static str],
    pub start_output: StartOutput,
    /// `start`'s stdout and stderr are read as one stream (Go's `cmd.CombinedOutput()`).
    pub combined_output: bool,
    /// The highest Task API version containerd dials (v2 for a plain address or JSON version 2, v3 for version 3).
    pub max_task_api: i32,
    /// `io.containerd.timeout.shim.load` (reload), `.cleanup` (the `delete` action, cleanup after a failed Create)
    /// and `.shutdown` (the Shutdown after Delete).
    pub load_timeout: Duration,
    pub cleanup_timeout: Duration,
    pub shutdown_timeout: Duration,
    /// `io.containerd.timeout.task.state`: State calls made by the tasks service.
    pub state_timeout: Duration,
    /// Request-path calls carry the `containerd-namespace-ttrpc` metadata header (1.6.20 and 1.7.24, recorded: no; 2.x,
    /// from source: yes, unverified). The reload after a restart always carries it (recorded on 1.6.20 and 1.7.24).
    pub namespace_header: bool,
    /// The Delete after a failed Create carries the namespace header (1.7+ `cleanup.Background`; 1.6 uses
    /// `context.Background()`).
    pub failed_create_cleanup_keeps_namespace: bool,
    /// The shim's `delete` action runs whenever the connection to a shim closes (after a Shutdown too), with the
    /// cleanup timeout.
    pub delete_action_on_disconnect: bool,
    /// On restart, the address is read back from the bundle's `address` file (1.x) or `bootstrap.json` (2.x).
    pub reload_from: ReloadFrom,
    /// After reconnecting, containerd lists the task's pids and drops the shim as leaked when that fails or is empty
    /// (1.7+ `loadShims`, no sandbox).
    pub reload_checks_pids: bool,
    /// `ociVersion` of the config.json this containerd writes (OCI runtimes check it: crun 1.8 refuses anything but
    /// 1.0.x).
    pub oci_version: &'static str,
    /// What each fact is based on, line by line.
    pub sources: &'static [(&'static str, &'static str)],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadFrom {
    AddressFile,
    BootstrapJson,
}

/// An environment variable containerd sets for a shim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvVar {
    /// `GOMAXPROCS=2`.
    GoMaxProcs,
    /// `TTRPC_ADDRESS=<events socket path>` (no scheme).
    TtrpcAddress,
    /// `GRPC_ADDRESS=<the -address value>`.
    GrpcAddress,
    /// `NAMESPACE=<ns>`.
    Namespace,
    /// `MAX_SHIM_VERSION=2` (still 2 on 2.x although 2.x accepts version 3).
    MaxShimVersion,
}

impl EnvVar {
    pub fn name(self) -> &'static str {
        match self {
            EnvVar::GoMaxProcs => "GOMAXPROCS",
            EnvVar::TtrpcAddress => "TTRPC_ADDRESS",
            EnvVar::GrpcAddress => "GRPC_ADDRESS",
            EnvVar::Namespace => "NAMESPACE",
            EnvVar::MaxShimVersion => "MAX_SHIM_VERSION",
        }
    }
}

/// Names containerd sets for shims in any line; a profile that lacks one must not leak it from the harness's own
/// environment either.
pub const CONTAINERD_ENV: [EnvVar; 5] =
    [EnvVar::GoMaxProcs, EnvVar::TtrpcAddress, EnvVar::GrpcAddress, EnvVar::Namespace, EnvVar::MaxShimVersion];

impl Profile {
    /// How a call goes on the wire when issued by `caller` (in every line it depends on the caller, not the RPC).
    pub fn call(&self, caller: Caller) -> CallShape {
        let deadline = match caller {
            Caller::Client => None,
            Caller::TaskState => Some(self.state_timeout),
            Caller::ShutdownAfterDelete => Some(self.shutdown_timeout),
            Caller::CleanupAfterFailedCreate => Some(self.cleanup_timeout),
            Caller::Reload => Some(self.load_timeout),
            Caller::ReloadCheck => None,
        };
        // From source, the tasks service's contexts carry the namespace (its gRPC interceptor re-applies it with
        // namespaces.WithNamespace, which sets the ttrpc header) and 1.6's cleanup after a failed Create does not;
        // but the running 1.6.20 and 1.7.24 daemons send no ttrpc metadata at all (fidelity test), and the daemon
        // wins: `namespace_header` is false for them.
        let namespace_header = match caller {
            // The reload runs on a context made with namespaces.WithNamespace (loadShims), which the 1.6.20 and
            // 1.7.24 daemons do send as the ttrpc header (recorded), unlike their request-path calls.
            Caller::Reload | Caller::ReloadCheck => true,
            Caller::CleanupAfterFailedCreate => self.namespace_header && self.failed_create_cleanup_keeps_namespace,
            _ => self.namespace_header,
        };
        CallShape { deadline, namespace_header }
    }

    pub fn judged_by_daemon(&self) -> bool {
        self.judge == Judge::Daemon
    }

    /// One line for reports: which containerd this is and what it was checked against.
    pub fn describe(&self) -> String {
        match self.judge {
            Judge::Daemon => {
                format!("containerd {} (profile of {}, checked against the running daemon)", self.line, self.release)
            }
            Judge::Source => format!(
                "containerd {} (profile of {}, modelled from source: no {} daemon is obtainable on the reference host)",
                self.line, self.release, self.line
            ),
        }
    }
}

const COMMON_TIMEOUTS: (Duration, Duration, Duration, Duration) =
    (Duration::from_secs(5), Duration::from_secs(5), Duration::from_secs(3), Duration::from_secs(2));

pub static V1_6: Profile = Profile {
    line: Line::V1_6,
    release: "1.6.20",
    judge: Judge::Daemon,
    env: &[EnvVar::GoMaxProcs, EnvVar::TtrpcAddress],
    start_stdin: StartStdin::OptionsAny,
    legacy_stdin_binaries: &[],
    start_output: StartOutput::CombinedAddress,
    combined_output: true,
    max_task_api: 2,
    load_timeout: COMMON_TIMEOUTS.0,
    cleanup_timeout: COMMON_TIMEOUTS.1,
    shutdown_timeout: COMMON_TIMEOUTS.2,
    state_timeout: COMMON_TIMEOUTS.3,
    namespace_header: false,
    failed_create_cleanup_keeps_namespace: false,
    delete_action_on_disconnect: true,
    reload_from: ReloadFrom::AddressFile,
    reload_checks_pids: false,
    oci_version: "1.0.2-dev",
    sources: &[
        ("ociVersion", "read from the config.json the reference host's containerd 1.6.20 (Debian 12) writes: 1.0.2-dev"),
        ("argv", "runtime/v2/binary.go Start (-id, -debug at debug level, start) after runtime/v2/shim/util.go Command (-namespace, -address, -publish-binary os.Executable())"),
        ("env", "runtime/v2/shim/util.go Command: os.Environ() + GOMAXPROCS=2 + TTRPC_ADDRESS (+ SCHED_CORE=1 when configured)"),
        ("stdin", "runtime/v2/shim/util.go Command: proto.Marshal(opts) when the runtime has options, else nil"),
        ("output", "runtime/v2/binary.go Start: strings.TrimSpace(cmd.CombinedOutput()) dialled with client.AnonDialer"),
        ("task api", "runtime/v2/shim.go: task.NewTaskClient (containerd.task.v2.Task only)"),
        ("deadlines", "runtime/v2/shim.go (load 5s, cleanup 5s, shutdown 3s), services/tasks/local.go (task.state 2s)"),
        ("order", "services/tasks/local.go Create then PID() = Connect.task_pid; Start then State for the pid; runtime/v2/shim.go Wait calls PID() first"),
        ("cleanup", "runtime/v2/manager.go startShim onClose -> cleanupAfterDeadShim -> binary.Delete (the delete action) on every disconnect; TaskManager.Create: failed Create -> shim.delete with a background 5s context"),
        ("reload", "runtime/v2/shim.go loadShim: <bundle>/address, then PID() (Connect) within the load timeout"),
        ("mounts", "runtime/v2/shim.go shimTask.Create: rootfs mounts as type, source, options (no target); snapshots/overlay: index=off, workdir, upperdir, lowerdir"),
    ],
};

pub static V1_7: Profile = Profile {
    line: Line::V1_7,
    release: "1.7.24",
    judge: Judge::Daemon,
    env: &[EnvVar::GoMaxProcs, EnvVar::TtrpcAddress, EnvVar::GrpcAddress, EnvVar::Namespace, EnvVar::MaxShimVersion],
    start_stdin: StartStdin::OptionsAny,
    legacy_stdin_binaries: &[],
    start_output: StartOutput::CombinedJson { max_version: 2 },
    combined_output: true,
    max_task_api: 2,
    load_timeout: COMMON_TIMEOUTS.0,
    cleanup_timeout: COMMON_TIMEOUTS.1,
    shutdown_timeout: COMMON_TIMEOUTS.2,
    state_timeout: COMMON_TIMEOUTS.3,
    namespace_header: false,
    failed_create_cleanup_keeps_namespace: true,
    delete_action_on_disconnect: true,
    reload_from: ReloadFrom::AddressFile,
    reload_checks_pids: true,
    oci_version: "1.2.0",
    sources: &[
        ("ociVersion", "read from the config.json Debian 13's containerd 1.7.24 writes: 1.2.0 (built with Debian's runtime-spec; upstream 1.7.24 vendors runtime-spec 1.1.0)"),
        ("argv", "runtime/v2/binary.go Start + runtime/v2/shim/util.go Command (same order as 1.6)"),
        ("env", "runtime/v2/shim/util.go Command: + GRPC_ADDRESS, NAMESPACE, MAX_SHIM_VERSION=2"),
        ("stdin", "runtime/v2/shim/util.go Command: proto.Marshal(opts) when the runtime has options"),
        ("output", "runtime/v2/shim.go parseStartResponse: JSON with version <= 2, else ErrNotImplemented \"unsupported shim version (N)\"; not JSON: the plain address"),
        ("task api", "runtime/v2/bridge.go / shim.go: v2 client for version 2"),
        ("deadlines", "runtime/v2/shim.go (load 5s, cleanup 5s, shutdown 3s), services/tasks/local.go (task.state 2s)"),
        ("order", "services/tasks/local.go Create then PID() = Connect; Start then State; shim.go Wait calls PID() first"),
        ("cleanup", "runtime/v2/shim_manager.go startShim onClose -> cleanupAfterDeadShim -> binary.Delete"),
        ("reload", "runtime/v2/shim.go loadShim: <bundle>/address"),
    ],
};

pub static V2_0: Profile = Profile {
    line: Line::V2_0,
    release: "2.0-2.2",
    judge: Judge::Source,
    env: &[EnvVar::GoMaxProcs, EnvVar::TtrpcAddress, EnvVar::GrpcAddress, EnvVar::Namespace, EnvVar::MaxShimVersion],
    start_stdin: StartStdin::OptionsAny,
    legacy_stdin_binaries: &[],
    start_output: StartOutput::CombinedJson { max_version: 3 },
    combined_output: true,
    max_task_api: 3,
    load_timeout: COMMON_TIMEOUTS.0,
    cleanup_timeout: COMMON_TIMEOUTS.1,
    shutdown_timeout: COMMON_TIMEOUTS.2,
    state_timeout: COMMON_TIMEOUTS.3,
    namespace_header: true,
    failed_create_cleanup_keeps_namespace: true,
    delete_action_on_disconnect: true,
    reload_from: ReloadFrom::BootstrapJson,
    reload_checks_pids: true,
    oci_version: "1.2.0",
    sources: &[
        ("argv", "core/runtime/v2/binary.go Start + pkg/shim/util.go Command"),
        ("ociVersion", "vendored opencontainers/runtime-spec v1.2.0 (go.mod, 2.0): specs.Version"),
        ("env", "pkg/shim/util.go Command: GOMAXPROCS, TTRPC_ADDRESS, GRPC_ADDRESS, NAMESPACE, MAX_SHIM_VERSION=2"),
        ("stdin", "pkg/shim/util.go Command: proto.Marshal(opts)"),
        ("output", "core/runtime/v2/shim.go parseStartResponse: JSON (version 2 or 3) or the plain address"),
        ("task api", "core/runtime/v2/bridge.go: v2 shims through ttrpcV2Bridge, v3 native"),
        ("reload", "core/runtime/v2/shim.go: bootstrap.json (an address file is migrated)"),
    ],
};

pub static V2_X: Profile = Profile {
    line: Line::V2x,
    release: "2.3",
    judge: Judge::Source,
    env: &[EnvVar::GoMaxProcs, EnvVar::TtrpcAddress, EnvVar::GrpcAddress, EnvVar::Namespace, EnvVar::MaxShimVersion],
    start_stdin: StartStdin::BootstrapParams,
    legacy_stdin_binaries: &["shim-runc-v1", "shim-runhcs-v1"],
    start_output: StartOutput::CombinedProtobuf { max_version: 3 },
    combined_output: true,
    max_task_api: 3,
    load_timeout: COMMON_TIMEOUTS.0,
    cleanup_timeout: COMMON_TIMEOUTS.1,
    shutdown_timeout: COMMON_TIMEOUTS.2,
    state_timeout: COMMON_TIMEOUTS.3,
    namespace_header: true,
    failed_create_cleanup_keeps_namespace: true,
    delete_action_on_disconnect: true,
    reload_from: ReloadFrom::BootstrapJson,
    reload_checks_pids: true,
    oci_version: "1.2.0",
    sources: &[
        ("stdin", "pkg/shim/util.go Command (v2.3): protobuf BootstrapParams (api/runtime/bootstrap/v1), runtime options as an extension; binaries named *shim-runc-v1* / *shim-runhcs-v1* still get the options Any"),
        ("not modelled", "2.2+ runs `<shim> -info` once per runtime name before the first Create (task_manager.go loadShimInfo); its failure is only logged, so it cannot change a verdict; BootstrapParams.socket_dir is a private directory, not /run/containerd/s, to keep a run's sockets apart"),
        ("output", "core/runtime/v2/shim.go parseStartResponse (v2.3): protobuf BootstrapResult, else JSON, else plain; version <= 3"),
        ("task api", "core/runtime/v2/bridge.go: v2 through the bridge, v3 native"),
        ("reload", "core/runtime/v2/shim.go: bootstrap.json"),
    ],
};

/// The line used when none is asked for: the installed containerd's, else the newest.
pub fn default_line() -> (Line, String) {
    let path = std::env::var("PATH").unwrap_or_default();
    match crate::resolve::host::look_path("containerd", &path) {
        None => (Line::V2x, "no containerd on PATH: the newest line".into()),
        Some(binary) => match crate::resolve::host::version_output(&binary, Duration::from_secs(5)) {
            Ok(output) => match Line::of_version_output(&output) {
                Some(line) => (line, format!("the installed containerd ({})", output.trim())),
                None => {
                    (Line::V2x, format!("installed containerd not recognised ({}): the newest line", output.trim()))
                }
            },
            Err(reason) => (Line::V2x, format!("{}: {reason}: the newest line", binary.display())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse() {
        assert_eq!(Line::parse("1.6"), Some(Line::V1_6));
        assert_eq!(Line::parse("1.6.20"), Some(Line::V1_6));
        assert_eq!(Line::parse("v1.7.24"), Some(Line::V1_7));
        assert_eq!(Line::parse("2.1.4"), Some(Line::V2_0));
        assert_eq!(Line::parse("2.3.0"), Some(Line::V2x));
        assert_eq!(Line::parse("2.x"), Some(Line::V2x));
        assert_eq!(Line::parse("1.5"), None);
        assert_eq!(Line::parse("banana"), None);
    }

    #[test]
    fn version_output() {
        assert_eq!(
            Line::of_version_output("containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3"),
            Some(Line::V1_6)
        );
        assert_eq!(Line::of_version_output("containerd containerd.io v1.7.24 88bf19b2"), Some(Line::V1_7));
    }

    #[test]
    fn deadlines_follow_the_caller() {
        let p = Line::V1_6.profile();
        assert_eq!(p.call(Caller::Client).deadline, None);
        assert_eq!(p.call(Caller::TaskState).deadline, Some(Duration::from_secs(2)));
        assert_eq!(p.call(Caller::ShutdownAfterDelete).deadline, Some(Duration::from_secs(3)));
        let cleanup = p.call(Caller::CleanupAfterFailedCreate);
        assert_eq!((cleanup.deadline, cleanup.namespace_header), (Some(Duration::from_secs(5)), false));
        // Recorded from the 1.6.20 and 1.7.24 daemons: no metadata on request-path calls, the header on the reload.
        assert!(!Line::V1_7.profile().call(Caller::Client).namespace_header);
        assert!(Line::V1_6.profile().call(Caller::Reload).namespace_header);
        assert!(Line::V2x.profile().call(Caller::Client).namespace_header);
    }
}
