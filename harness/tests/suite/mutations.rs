// Faults that break more cases than the ones naming them in `breaks_with` (see suite.rs).
// Each entry is a claim checked in both directions by the self-test. "*" means every case.
pub const ALSO_BREAKS: &[(&str, &[&str])] = &[
    ("create-wrong-pid", &[
        "delete::stopped_returns_pid_and_status",
        "events::lifecycle_order",
        "lifecycle::start_gives_running_same_pid",
    ]),
    ("delete-wrong-status", &[
        "events::lifecycle_order",
    ]),
    ("drop-stdout", &[
        "kill::sigkill_gives_137",
        "kill::sigterm_gives_143",
        "lifecycle::start_replies",
    ]),
    ("kill-noop", &[
        "delete::running_refused",
        "delete::unknown_id_not_found",
        "lifecycle::create_gives_created_and_pid",
        "lifecycle::start_gives_running_same_pid",
        "lifecycle::state_after_create_is_created",
    ]),
    ("shutdown-ignored", &["*"]),
    ("start-hangs", &[
        "delete::running_refused",
        "delete::second_delete_not_found",
        "delete::stopped_returns_pid_and_status",
        "events::lifecycle_order",
        "io::stdout_through_fifo",
        "kill::sigkill_gives_137",
        "kill::sigterm_gives_143",
        "lifecycle::start_gives_running_same_pid",
        "lifecycle::state_after_exit_is_stopped",
        "lifecycle::wait_exit_status_0",
        "lifecycle::wait_exit_status_255",
        "lifecycle::wait_exit_status_3",
        "shutdown::after_delete_exits",
    ]),
    ("wrong-exit-status", &[
        "delete::stopped_returns_pid_and_status",
        "io::stdout_through_fifo",
        "kill::sigkill_gives_137",
        "kill::sigterm_gives_143",
        "lifecycle::state_after_exit_is_stopped",
    ]),
];

pub const MAY_BREAK: &[(&str, &[&str])] = &[];
