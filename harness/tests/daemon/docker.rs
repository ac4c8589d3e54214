//! A private dockerd (Debian 13's docker.io 26.1.5) on a lab's containerd.
//!
//! `dockerd --containerd <lab socket> --data-root/--exec-root/--pidfile` in the lab, its API on a socket in the lab,
//! no iptables, no bridge, no userland proxy, its own containerd namespaces. dockerd creates `/run/docker` (and
//! network namespace files under it): unmounted and removed at drop when it did not exist before.
use std::fs;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{is_executable, mounts_under, run_command, run_on_pty, Lab, NotStarted, Output};

const DOCKERD: &str = "/var/cache/shimcompat/trixie/x/usr/sbin/dockerd";
/// Where the docker client may be: Debian 13's docker-cli (fetched with docker.io by .ci/run), then the host's.
const DOCKER_CLIENTS: [&str; 3] =
    ["/var/cache/shimcompat/trixie/x/usr/bin/docker", "/usr/bin/docker", "/usr/local/bin/docker"];
pub const DOCKER_DEADLINE: Duration = Duration::from_secs(30);

pub struct Docker {
    pub dockerd: PathBuf,
    pub client: PathBuf,
    root: PathBuf,
    child: Option<Child>,
    run_docker_existed: bool,
    docker_cgroup_existed: bool,
    namespace: String,
    runc: PathBuf,
}

impl Docker {
    /// Starts dockerd on `lab`'s containerd. Skips when dockerd or a docker client is not installed.
    pub fn start(lab: &Lab) -> Result<Docker, NotStarted> {
        if !is_executable(Path::new(DOCKERD)) {
            return Err(NotStarted::Skip(format!("dockerd 26 is not installed ({DOCKERD} missing; install: .ci/run)")));
        }
        let client = DOCKER_CLIENTS.iter().map(PathBuf::from).find(|p| is_executable(p)).ok_or_else(|| {
            NotStarted::Skip(format!(
                "no docker client (looked at {DOCKER_CLIENTS:?}; install: .ci/run fetches docker-cli)"
            ))
        })?;
        let root = lab.path("docker");
        for dir in ["data", "exec", "tmp"] {
            fs::create_dir_all(root.join(dir)).map_err(|e| NotStarted::Failed(e.to_string()))?;
        }
        fs::write(root.join("daemon.json"), "{}").map_err(|e| NotStarted::Failed(e.to_string()))?;
        let namespace = format!("{}-moby", lab.namespace());
        let mut docker = Docker {
            dockerd: PathBuf::from(DOCKERD),
            client,
            root: root.clone(),
            child: None,
            run_docker_existed: Path::new("/run/docker").exists(),
            docker_cgroup_existed: Path::new("/sys/fs/cgroup/memory/docker").exists()
                || Path::new("/sys/fs/cgroup/docker").exists(),
            namespace: namespace.clone(),
            runc: lab.binaries.runc.clone(),
        };
        docker.launch(lab).map_err(NotStarted::Failed)?;
        Ok(docker)
    }

    /// Starts dockerd (again) with the same directories; waits until it answers.
    pub fn launch(&mut self, lab: &Lab) -> Result<(), String> {
        let root = self.root.clone();
        let namespace = self.namespace.clone();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(root.join("dockerd.log"))
            .map_err(|e| e.to_string())?;
        let log_err = log.try_clone().map_err(|e| e.to_string())?;
        let mut command = Command::new(DOCKERD);
        command
            .arg("--containerd")
            .arg(lab.grpc_socket())
            .args([
                "--containerd-namespace",
                &namespace,
                "--containerd-plugins-namespace",
                &format!("{namespace}-plugins"),
            ])
            .arg("--config-file")
            .arg(root.join("daemon.json"))
            .arg("--data-root")
            .arg(root.join("data"))
            .arg("--exec-root")
            .arg(root.join("exec"))
            .arg("--pidfile")
            .arg(root.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", self.socket().display()))
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none", "--userland-proxy=false"])
            .current_dir(&root)
            .env_clear()
            .env(
                "PATH",
                format!("{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", lab.shims_dir().display()),
            )
            .env("TMPDIR", root.join("tmp"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        command.process_group(0);
        let _ = fs::remove_file(root.join("dockerd.pid"));
        self.child = Some(command.spawn().map_err(|e| format!("starting dockerd: {e}"))?);
        let started = Instant::now();
        loop {
            if UnixStream::connect(self.socket()).is_ok() && self.docker(&["version"]).success() {
                return Ok(());
            }
            if let Some(status) = self.exited() {
                return Err(format!("dockerd exited early: {status}\n{}", self.log_tail(30)));
            }
            if started.elapsed() > Duration::from_secs(30) {
                return Err(format!("dockerd did not answer in time\n{}", self.log_tail(30)));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// dockerd's exit status if it has exited (crashed) since it was started.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(Some(status))) => Some(status.to_string()),
            None => Some("not running".to_owned()),
            _ => None,
        }
    }

    /// The first lines of the last Go panic in dockerd's log, if any.
    pub fn panic_excerpt(&self) -> Option<String> {
        let log = fs::read_to_string(self.root.join("dockerd.log")).unwrap_or_default();
        let at = log.rfind("panic: ")?;
        Some(log[at..].lines().take(8).collect::<Vec<_>>().join(" | "))
    }

    /// dockerd's data root (dockerd keeps it bind-mounted onto itself while it runs).
    pub fn data_root(&self) -> PathBuf {
        self.root.join("data")
    }

    pub fn socket(&self) -> PathBuf {
        self.root.join("docker.sock")
    }

    /// dockerd's containerd namespace (containers' tasks live there).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let log = fs::read_to_string(self.root.join("dockerd.log")).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.client);
        command.arg("-H").arg(format!("unix://{}", self.socket().display())).args(args);
        command.env("DOCKER_CONFIG", self.root.join("client")).env("TMPDIR", self.root.join("tmp"));
        command
    }

    pub fn docker(&self, args: &[&str]) -> Output {
        self.docker_with(args, None, DOCKER_DEADLINE)
    }

    pub fn docker_with(&self, args: &[&str], stdin: Option<&[u8]>, deadline: Duration) -> Output {
        run_command(self.command(args), format!("docker {}", args.join(" ")), stdin, deadline)
    }

    /// On a pseudo-terminal of 24x80 (for `-t`/`-it`).
    pub fn docker_tty(&self, args: &[&str], deadline: Duration) -> Output {
        run_on_pty(self.command(args), format!("docker {}", args.join(" ")), deadline)
    }

    /// Stops dockerd (SIGTERM, then SIGKILL) and removes what it created outside the lab.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(15) {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // dockerd bind-mounts its data root onto itself (and unmounts it on a clean exit).
        let mut mounts = mounts_under(&self.root);
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for mount in mounts {
            let _ = nix::mount::umount2(mount.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        // Containers dockerd left (runc state of its namespace): thawed and killed by runc.
        super::runc_delete_all(&self.runc, &PathBuf::from("/run/containerd/runc").join(&self.namespace));
        if !self.run_docker_existed {
            let mut mounts = mounts_under(Path::new("/run/docker"));
            mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
            for mount in mounts {
                let _ = nix::mount::umount2(mount.as_str(), nix::mount::MntFlags::MNT_DETACH);
            }
            let _ = fs::remove_dir_all("/run/docker");
        }
        if !self.docker_cgroup_existed {
            super::remove_cgroups("docker");
        }
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        self.stop();
    }
}
