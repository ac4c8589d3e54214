//! The basic lifecycle containerd drives for every container: Connect, Create, Start, Wait, State.
use containerd_shim_protos::types::task::Status;

use super::util::{created, expect_status, is_process, run_to_exit, started, status_name, stdout_of, wait_exit};
use super::{Case, CaseResult};
use crate::bundle::{ContainerConfig, IoSpec};
use crate::context::Ctx;
use crate::{case, ensure};

pub fn cases() -> Vec<Case> {
    vec![
        case!("lifecycle::connect_returns_shim_pid", Should, [],
            breaks_with: "connect-wrong-pid",
            ref: "task.proto ConnectResponse.shim_pid; containerd 1.6-2.x read only task_pid (runtime/v2/shim.go PID), `ctr shim` and tools read shim_pid",
            "Connect returns the pid of the serving shim process (a live process running in the bundle)",
            connect_returns_shim_pid),
        case!("lifecycle::connect_after_create_gives_task_pid", Must, [],
            breaks_with: "connect-wrong-task-pid",
            ref: "services/tasks Create reports PID() = Connect.task_pid, asked right after Create (1.6-2.x); ctr/CRI/Docker see that pid",
            "Connect right after Create returns task_pid = the live init process of the task (the pid containerd reports for it)",
            connect_after_create_gives_task_pid),
        case!("lifecycle::state_after_start_gives_init_pid", Must, [],
            breaks_with: "state-wrong-pid",
            ref: "services/tasks Start reports State's pid after Start, never StartResponse.pid (1.6-2.x local.go Start)",
            "State right after Start says RUNNING with the pid of the live init (the pid containerd reports as started)",
            state_after_start_gives_init_pid),
        case!("lifecycle::create_gives_created_and_pid", Must, [],
            breaks_with: "create-wrong-pid",
            ref: "runtime-v2.md Create; runc shim Create returns the init pid in CREATED state",
            "Create returns a live pid; State then says CREATED with that pid",
            create_gives_created_and_pid),
        case!("lifecycle::state_after_create_is_created", Must, [],
            breaks_with: "create-state-running",
            ref: "api/types/task Status CREATED; containerd maps it to `created` for ctr/CRI",
            "State of a created, never started task is CREATED, not RUNNING",
            state_after_create_is_created),
        case!("lifecycle::start_gives_running_same_pid", Should, [],
            breaks_with: "start-wrong-pid",
            ref: "task.proto StartResponse.pid; containerd 1.6-2.x never read it (they take State's pid), other clients of the Task API do",
            "Start returns the pid Create returned, and State says RUNNING",
            start_gives_running_same_pid),
        case!("lifecycle::start_replies", Must, [],
            breaks_with: "start-hangs",
            ref: "runtime-v2.md: every RPC is bounded by containerd's context deadline",
            "Start replies within the deadline and the payload runs",
            start_replies),
        case!("lifecycle::init_gets_process_env", Must, [],
            breaks_with: "env-from-shim",
            ref: "OCI runtime spec config.md process.env: the environment of the process; containerd's clients put the image's Env and the user's there (ctr --env, docker -e, CRI envs), and nothing of the shim's own environment belongs in it",
            "the init's environment is config.json's process.env: a variable set there is seen with its value, and one from the shim's own environment (TTRPC_ADDRESS, which containerd gives every shim) is not",
            init_gets_process_env),
        case!("lifecycle::wait_exit_status_0", Must, [],
            breaks_with: "wrong-exit-status",
            ref: "task.proto WaitResponse.exit_status; containerd reports it as the container's exit code",
            "Wait returns exit status 0 for a payload that exits 0",
            wait_exit_status_0),
        case!("lifecycle::wait_exit_status_3", Must, [],
            breaks_with: "wrong-exit-status",
            ref: "task.proto WaitResponse.exit_status",
            "Wait returns exit status 3 for a payload that exits 3",
            wait_exit_status_3),
        case!("lifecycle::wait_exit_status_255", Must, [],
            breaks_with: "wrong-exit-status",
            ref: "task.proto WaitResponse.exit_status (u32; 255 must not wrap or sign-extend)",
            "Wait returns exit status 255 for a payload that exits 255",
            wait_exit_status_255),
        case!("lifecycle::state_after_exit_is_stopped", Must, [],
            breaks_with: "state-no-exited-at",
            ref: "task.proto StateResponse exit_status/exited_at; ctr/CRI read them after exit",
            "State after exit is STOPPED with the exit status and a non-zero exited_at",
            state_after_exit_is_stopped),
    ]
}

async fn connect_returns_shim_pid(ctx: &mut Ctx) -> CaseResult {
    // containerd connects once the task exists (Create, then Connect for the task pid).
    let (shim, _task) = created(ctx, &ContainerConfig::new(&["exit", "0"]), IoSpec::NULL).await?;
    let pid = shim.shim_pid();
    ensure!(pid > 0, "Connect returned shim_pid 0");
    ensure!(is_process(pid), "Connect's shim_pid {pid} is not a live process (not a thread, not a zombie)");
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
    ensure!(
        cwd == shim.bundle_dir(),
        "Connect's shim_pid {pid} ({}) does not run in the bundle {} (its cwd is {}): it is not the shim serving this task",
        crate::process::cmdline(pid),
        shim.bundle_dir().display(),
        cwd.display()
    );
    // The pid must be the serving process: a second connection's Connect must agree.
    let again = shim.task.connect_rpc(shim.id()).await?;
    ensure!(again.shim_pid == pid, "two Connect calls disagree on shim_pid: {pid} then {}", again.shim_pid);
    Ok(())
}

async fn connect_after_create_gives_task_pid(ctx: &mut Ctx) -> CaseResult {
    let (shim, task) = created(ctx, &ContainerConfig::new(&["forever"]), IoSpec::NULL).await?;
    // ctx.create asked Connect right after Create, as containerd does.
    ensure!(
        task.connect_pid > 0,
        "Connect after Create returned task_pid 0: containerd would report pid 0 for the task"
    );
    ensure!(
        task.connect_pid == task.pid,
        "Connect after Create returned task_pid {}, Create returned pid {}: containerd reports Connect's",
        task.connect_pid,
        task.pid
    );
    // (A created init is the runtime's `runc init`, which does not carry the container's environment yet.)
    ensure!(is_process(task.connect_pid), "Connect's task_pid {} is not a live process", task.connect_pid);
    let _ = shim;
    Ok(())
}

async fn state_after_start_gives_init_pid(ctx: &mut Ctx) -> CaseResult {
    let (shim, task) = created(ctx, &ContainerConfig::new(&["forever"]), IoSpec::NULL).await?;
    let pids = ctx.start_process(&shim, &task.id, "").await?;
    let state = shim.task.state(&task.id, "").await?;
    expect_status(&state, Status::RUNNING, "State after Start")?;
    ensure!(
        pids.state == task.pid,
        "State after Start reports pid {}, the init Create returned is {}: containerd would report the wrong pid as started",
        pids.state,
        task.pid
    );
    ensure!(is_process(pids.state), "State's pid {} after Start is not a live process", pids.state);
    Ok(())
}

async fn create_gives_created_and_pid(ctx: &mut Ctx) -> CaseResult {
    let (shim, task) = created(ctx, &ContainerConfig::new(&["exit", "0"]), IoSpec::NULL).await?;
    ensure!(task.pid > 0, "Create returned pid 0");
    ensure!(is_process(task.pid), "Create returned pid {} which is not a live process", task.pid);
    let state = shim.task.state(&task.id, "").await?;
    ensure!(state.pid == task.pid, "Create returned pid {} but State reports pid {}", task.pid, state.pid);
    Ok(())
}

async fn state_after_create_is_created(ctx: &mut Ctx) -> CaseResult {
    let (shim, task) = created(ctx, &ContainerConfig::new(&["exit", "0"]), IoSpec::NULL).await?;
    let state = shim.task.state(&task.id, "").await?;
    expect_status(&state, Status::CREATED, "after Create")?;
    ensure!(state.id == task.id, "State.id is {:?}, expected the container id {:?}", state.id, task.id);
    Ok(())
}

async fn start_gives_running_same_pid(ctx: &mut Ctx) -> CaseResult {
    let (shim, task) = created(ctx, &ContainerConfig::new(&["forever"]), IoSpec::NULL).await?;
    let started = shim.task.start(&task.id, "").await?;
    ensure!(started.pid == task.pid, "Create returned pid {} but Start returned pid {}", task.pid, started.pid);
    let state = shim.task.state(&task.id, "").await?;
    expect_status(&state, Status::RUNNING, "after Start")?;
    ensure!(state.pid == task.pid, "State after Start reports pid {}, Create said {}", state.pid, task.pid);
    Ok(())
}

async fn start_replies(ctx: &mut Ctx) -> CaseResult {
    let (shim, mut task) = started(ctx, &ContainerConfig::new(&["echo", "started"]), IoSpec::OUT).await?;
    let output = super::util::stdout_of(ctx, &mut task).await?;
    ensure!(output == "started\n", "after Start the payload should print \"started\\n\"; stdout was {output:?}");
    let _ = shim;
    Ok(())
}

async fn wait_exit_status(ctx: &mut Ctx, status: u32) -> CaseResult {
    let code = status.to_string();
    let (_shim, _task, waited) = run_to_exit(ctx, &["exit", &code]).await?;
    ensure!(waited.exit_status == status, "payload exited {status}; Wait returned exit_status {}", waited.exit_status);
    ensure!(waited.exited_at.seconds > 0, "Wait returned no exited_at");
    Ok(())
}

async fn wait_exit_status_0(ctx: &mut Ctx) -> CaseResult {
    wait_exit_status(ctx, 0).await
}

async fn wait_exit_status_3(ctx: &mut Ctx) -> CaseResult {
    wait_exit_status(ctx, 3).await
}

async fn wait_exit_status_255(ctx: &mut Ctx) -> CaseResult {
    wait_exit_status(ctx, 255).await
}

async fn state_after_exit_is_stopped(ctx: &mut Ctx) -> CaseResult {
    let (shim, task, waited) = run_to_exit(ctx, &["exit", "7"]).await?;
    let state = shim.task.state(&task.id, "").await?;
    expect_status(&state, Status::STOPPED, "after exit")?;
    ensure!(state.exit_status == 7, "payload exited 7; State says exit_status {}", state.exit_status);
    ensure!(
        state.exited_at.as_ref().map(|t| t.seconds).unwrap_or(0) > 0,
        "State of a stopped task has no exited_at (status {})",
        status_name(&state)
    );
    ensure!(
        state.exited_at.as_ref().map(|t| (t.seconds, t.nanos))
            == waited.exited_at.as_ref().map(|t| (t.seconds, t.nanos)),
        "State.exited_at {:?} differs from Wait's exited_at {:?}",
        state.exited_at.as_ref().map(|t| (t.seconds, t.nanos)),
        waited.exited_at.as_ref().map(|t| (t.seconds, t.nanos))
    );
    Ok(())
}

async fn init_gets_process_env(ctx: &mut Ctx) -> CaseResult {
    let mut config = ContainerConfig::new(&["env", "SHIMCOMPAT_ENV_PROBE", "env", "TTRPC_ADDRESS", "exit", "0"]);
    config.env.push("SHIMCOMPAT_ENV_PROBE=set in process.env".into());
    let (shim, mut task) = started(ctx, &config, IoSpec::OUT).await?;
    let waited = wait_exit(ctx, &shim, &task.id, "").await?;
    let output = stdout_of(ctx, &mut task).await?;
    let expected = "env SHIMCOMPAT_ENV_PROBE=set in process.env\nenv TTRPC_ADDRESS unset\n";
    ensure!(
        output == expected,
        "the init printed {output:?}, expected {expected:?}: {}",
        if output.contains("TTRPC_ADDRESS=") {
            "it runs with the shim's own environment, not config.json's process.env"
        } else {
            "its environment is not config.json's process.env"
        }
    );
    ensure!(
        waited.exit_status == 0,
        "the init printed its environment as expected but Wait says exit status {}, not 0",
        waited.exit_status
    );
    Ok(())
}
