//! The fault catalogue: named misbehaviours switched on per container by the annotation
//! `io.shimcompat.mock.faults` (comma-separated). FAULTS.md documents the same list; a unit test keeps them in step.
use std::collections::{BTreeSet, HashMap};

pub const FAULTS_ANNOTATION: &str = "io.shimcompat.mock.faults";
/// Not a fault: RPC names (e.g. `Pause,Checkpoint`) the mock answers with Unimplemented, as a shim without that
/// optional feature would. Lets cases about optional features and the Unimplemented code run against the mock.
/// Faults for binary-level actions that read no bundle (`-v`); also added to the start-time faults of `start`,
/// `delete` and the server (which inherit the environment).
pub const FAULTS_ENV: &str = "SHIMCOMPAT_MOCK_FAULTS";
pub const UNIMPLEMENTED_ANNOTATION: &str = "io.shimcompat.mock.unimplemented";

macro_rules! faults {
    ($($variant:ident = $name:literal,)*) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Fault { $($variant,)* }

        impl Fault {
            pub const ALL: &'static [Fault] = &[$(Fault::$variant,)*];

            pub fn name(self) -> &'static str {
                match self { $(Fault::$variant => $name,)* }
            }

            pub fn from_name(name: &str) -> Option<Fault> {
                match name { $($name => Some(Fault::$variant),)* _ => None }
            }
        }
    };
}

faults! {
    ConnectWrongPid = "connect-wrong-pid",
    CreateWrongPid = "create-wrong-pid",
    CreateStateRunning = "create-state-running",
    StartWrongPid = "start-wrong-pid",
    StartHangs = "start-hangs",
    WrongExitStatus = "wrong-exit-status",
    StateNoExitedAt = "state-no-exited-at",
    KillNoop = "kill-noop",
    DeleteRunningSucceeds = "delete-running-succeeds",
    DeleteUnknownOk = "delete-unknown-ok",
    DeleteWrongStatus = "delete-wrong-status",
    DropStdout = "drop-stdout",
    NoExitEvent = "no-exit-event",
    NoOomEvent = "no-oom-event",
    EventsOutOfOrder = "events-out-of-order",
    EventWrongPid = "event-wrong-pid",
    ShutdownIgnored = "shutdown-ignored",
    ExecExitStatusZero = "exec-exit-status-zero",
    ExecDropStdout = "exec-drop-stdout",
    ExecDupOk = "exec-dup-ok",
    ExecStoppedOk = "exec-stopped-ok",
    ExecDeleteRefused = "exec-delete-refused",
    ExecKillNoop = "exec-kill-noop",
    ExecStateInitPid = "exec-state-init-pid",
    PidsInitOnly = "pids-init-only",
    KillAllIgnored = "kill-all-ignored",
    KillUnknownExecOk = "kill-unknown-exec-ok",
    KillCreatedNoop = "kill-created-noop",
    KillExitedOk = "kill-exited-ok",
    WaitOnce = "wait-once",
    WaitLateHangs = "wait-late-hangs",
    WaitCreatedReturns = "wait-created-returns",
    CloseioNoop = "closeio-noop",
    StderrToStdout = "stderr-to-stdout",
    TerminalIgnored = "terminal-ignored",
    ResizeNoop = "resize-noop",
    NullIoFails = "null-io-fails",
    StdoutTruncate = "stdout-truncate",
    PauseNoop = "pause-noop",
    NoPauseEvents = "no-pause-events",
    DeletePausedOk = "delete-paused-ok",
    NotfoundAsUnknown = "notfound-as-unknown",
    AlreadyexistsAsUnknown = "alreadyexists-as-unknown",
    UnimplementedAsNotfound = "unimplemented-as-notfound",
    CrashOnUnknownId = "crash-on-unknown-id",
    ExecEventsMissing = "exec-events-missing",
    EventWrongContainerId = "event-wrong-container-id",
    ExitEventNoExitedAt = "exit-event-no-exited-at",
    StartNewAddress = "start-new-address",
    DeleteActionLeavesProcess = "delete-action-leaves-process",
    DeleteActionGarbage = "delete-action-garbage",
    ExitOnDisconnect = "exit-on-disconnect",
    ShutdownWithTaskExits = "shutdown-with-task-exits",
    ShutdownLeavesSocket = "shutdown-leaves-socket",
    LeakProcess = "leak-process",
    ConcurrentExecFails = "concurrent-exec-fails",
    StatsGarbage = "stats-garbage",
    UpdateFails = "update-fails",
    CheckpointEmpty = "checkpoint-empty",
    VersionFails = "version-fails",
    StartAcceptsBrokenBundle = "start-accepts-broken-bundle",
    ConnectWrongTaskPid = "connect-wrong-task-pid",
    StateWrongPid = "state-wrong-pid",
    NoAddressFile = "no-address-file",
    StartReplyJsonV3 = "start-reply-json-v3",
    StartStderrNoise = "start-stderr-noise",
    ServeV3Only = "serve-v3-only",
    RootfsBindLower = "rootfs-bind-lower",
    RootfsLeftMounted = "rootfs-left-mounted",
    RootfsBindRefused = "rootfs-bind-refused",
    RootfsPartialLeft = "rootfs-partial-left",
    ExecTerminalIgnored = "exec-terminal-ignored",
    ExecResizeNoop = "exec-resize-noop",
    ResizeZeroRefused = "resize-zero-refused",
    CloseioTerminalFails = "closeio-terminal-fails",
    ExecNeedsEnv = "exec-needs-env",
    EnvFromShim = "env-from-shim",
    ExecWaitCreatedReturns = "exec-wait-created-returns",
    DeleteActionFailsWhenGone = "delete-action-fails-when-gone",
    DeleteActionKillsGroup = "delete-action-kills-group",
    RuntimeOptionsRefused = "runtime-options-refused",
    RuncRootIgnored = "runc-root-ignored",
    FileUriNoCreate = "file-uri-no-create",
    LoggerLeftRunning = "logger-left-running",
    StdoutNeedsStderr = "stdout-needs-stderr",
    StdinOnlyIgnored = "stdin-only-ignored",
    ReconnectForgetsTasks = "reconnect-forgets-tasks",
}

/// A set of faults (a bit per fault; the catalogue is well under 128 entries).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults(u128);

impl Faults {
    pub fn has(self, fault: Fault) -> bool {
        self.0 & (1u128 << fault as u32) != 0
    }

    pub fn with(self, fault: Fault) -> Faults {
        Faults(self.0 | (1u128 << fault as u32))
    }

    pub fn union(self, other: Faults) -> Faults {
        Faults(self.0 | other.0)
    }

    pub fn names(self) -> Vec<&'static str> {
        Fault::ALL.iter().filter(|f| self.has(**f)).map(|f| f.name()).collect()
    }

    /// Parses the fault annotation; `Err` carries the first unknown name.
    pub fn parse(value: &str) -> Result<Faults, String> {
        let mut faults = Faults::default();
        for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match Fault::from_name(name) {
                Some(fault) => faults = faults.with(fault),
                None => return Err(name.to_string()),
            }
        }
        Ok(faults)
    }

    /// Like `parse`, but skips unknown names (used where there is nobody to report them to, e.g. at `start`).
    pub fn parse_lenient(value: &str) -> Faults {
        value.split(',').filter_map(|name| Fault::from_name(name.trim())).fold(Faults::default(), Faults::with)
    }

    /// Faults named in SHIMCOMPAT_MOCK_FAULTS. Unknown names are ignored (there is no request to fail), so a
    /// typo shows up as a fault with no effect rather than as a spurious failure.
    pub fn from_env() -> Faults {
        std::env::var(FAULTS_ENV).map(|v| Faults::parse_lenient(&v)).unwrap_or_default()
    }

    pub fn from_annotations(annotations: Option<&HashMap<String, String>>) -> Result<Faults, String> {
        match annotations.and_then(|a| a.get(FAULTS_ANNOTATION)) {
            Some(value) => Faults::parse(value),
            None => Ok(Faults::default()),
        }
    }
}

/// RPC names listed in the unimplemented annotation, as written (`Pause`, `Checkpoint`, ...).
pub fn unimplemented_rpcs(annotations: Option<&HashMap<String, String>>) -> BTreeSet<String> {
    annotations
        .and_then(|a| a.get(UNIMPLEMENTED_ANNOTATION))
        .map(|value| value.split(',').map(str::trim).filter(|n| !n.is_empty()).map(str::to_string).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_names_and_reject_unknown() {
        let faults = Faults::parse(" kill-noop,wait-once ,,").unwrap();
        assert!(faults.has(Fault::KillNoop));
        assert!(faults.has(Fault::WaitOnce));
        assert!(!faults.has(Fault::StartHangs));
        assert_eq!(Faults::parse("kill-noop,kil-noop"), Err("kil-noop".to_string()));
        assert_eq!(Faults::parse_lenient("kill-noop,bogus"), Faults::default().with(Fault::KillNoop));
    }

    #[test]
    fn faults_md_documents_every_fault() {
        let doc = include_str!("../FAULTS.md");
        for fault in Fault::ALL {
            let line = format!("- `{}` — ", fault.name());
            assert!(doc.contains(&line), "FAULTS.md lacks a line starting {line:?}");
        }
        assert!(Fault::ALL.len() < 128);
    }
}
