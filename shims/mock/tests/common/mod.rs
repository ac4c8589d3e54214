//! Drives the real mock binary the way containerd does: bundle with config.json and a drained `log` fifo, an
//! events server on TTRPC_ADDRESS, `start` with protobuf BootstrapParams (private socket_dir), ttrpc Task client.
#![allow(dead_code)]
use std::fs;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use containerd_shim_protos::api::{self, Empty};
use containerd_shim_protos::bootstrap_api::{BootstrapParams, BootstrapResult};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageFull};
use containerd_shim_protos::shim_async::{create_events, Client, Events, TaskClient};
use containerd_shim_protos::ttrpc::{self, r#async::Server, r#async::TtrpcContext};
use serde_json::json;

pub const NS: &str = "mocktest";
pub const BIN: &str = env!("CARGO_BIN_EXE_containerd-shim-mock-v1");
static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(Duration::from_secs(10).as_nanos() as i64)
}

pub fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
}

/// A container config running `args` with root "/" (host binaries, no rootfs needed).
pub fn config(args: &[&str], annotations: serde_json::Value, terminal: bool) -> serde_json::Value {
    json!({
        "ociVersion": "1.0.2",
        "root": {"path": "/"},
        "process": {
            "terminal": terminal,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/usr/bin:/bin", "MOCKTEST=1"],
            "cwd": "/"
        },
        "annotations": annotations,
    })
}

#[derive(Default)]
pub struct Collector {
    pub events: Mutex<Vec<(String, Any)>>,
}

#[async_trait]
impl Events for Collector {
    async fn forward(&self, _ctx: &TtrpcContext, req: api::ForwardRequest) -> ttrpc::Result<Empty> {
        let envelope = req.envelope();
        self.events.lock().unwrap().push((envelope.topic.clone(), envelope.event().clone()));
        Ok(Empty::new())
    }
}

/// Drains a fifo in a thread until stopped; keeps what it read.
pub struct Drain {
    pub data: Arc<Mutex<Vec<u8>>>,
    pub eof: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Drain {
    /// `until_eof`: stop at the first EOF after some writer has been seen (stdio); otherwise run until dropped (log).
    pub fn new(path: &Path, until_eof: bool) -> Drain {
        let file = fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path).expect("open fifo");
        let data = Arc::new(Mutex::new(Vec::new()));
        let eof = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (d, e, s) = (data.clone(), eof.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut file = file;
            let mut buf = [0u8; 8192];
            let mut seen_data = false;
            while !s.load(Ordering::SeqCst) {
                // poll suppresses HUP until a writer has come and gone.
                let mut pfd =
                    libc::pollfd { fd: std::os::fd::AsRawFd::as_raw_fd(&file), events: libc::POLLIN, revents: 0 };
                let n = unsafe { libc::poll(&mut pfd, 1, 50) };
                if n <= 0 {
                    continue;
                }
                match file.read(&mut buf) {
                    Ok(0) => {
                        if until_eof {
                            e.store(true, Ordering::SeqCst);
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Ok(n) => {
                        seen_data = true;
                        d.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
            let _ = seen_data;
        });
        Drain { data, eof, stop }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data.lock().unwrap()).into_owned()
    }

    pub fn wait_eof(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.eof.load(Ordering::SeqCst) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

impl Drop for Drain {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// One test world: a temp dir with bundles, a socket dir, an events server; shims started in it are killed and
/// everything is removed on drop, also when the test fails.
pub struct World {
    pub dir: PathBuf,
    pub events_path: PathBuf,
    pub collector: Arc<Collector>,
    server: Option<Server>,
    pub address_flag: String,
    logs: Mutex<Vec<Drain>>,
    shim_pids: Mutex<Vec<i32>>,
    bundles: Mutex<Vec<(String, PathBuf)>>,
}

impl World {
    pub async fn new() -> World {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = PathBuf::from(format!("/tmp/mk{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("s")).unwrap();
        let events_path = dir.join("ev.sock");
        let collector = Arc::new(Collector::default());
        let mut server = Server::new()
            .bind(&format!("unix://{}", events_path.display()))
            .expect("bind events")
            .register_service(create_events(collector.clone() as Arc<dyn Events + Send + Sync>));
        server.start().await.expect("events server");
        World {
            address_flag: format!("/tmp/mock-test-{}-{n}/containerd.sock", std::process::id()),
            dir,
            events_path,
            collector,
            server: Some(server),
            logs: Mutex::new(Vec::new()),
            shim_pids: Mutex::new(Vec::new()),
            bundles: Mutex::new(Vec::new()),
        }
    }

    /// A bundle dir named after the id, with config.json and a drained log fifo.
    pub fn bundle(&self, id: &str, config: &serde_json::Value) -> PathBuf {
        let bundle = self.dir.join("b").join(id);
        fs::create_dir_all(&bundle).unwrap();
        fs::write(bundle.join("config.json"), config.to_string()).unwrap();
        mkfifo(&bundle.join("log"));
        self.logs.lock().unwrap().push(Drain::new(&bundle.join("log"), false));
        self.bundles.lock().unwrap().push((id.to_string(), bundle.clone()));
        bundle
    }

    pub fn fifo(&self, name: &str) -> PathBuf {
        let path = self.dir.join(name);
        mkfifo(&path);
        path
    }

    pub fn log_text(&self) -> String {
        self.logs.lock().unwrap().iter().map(|d| d.text()).collect::<Vec<_>>().join("\n")
    }

    /// The BootstrapParams containerd 2.3+ would send for `id` (private socket dir).
    pub fn bootstrap_params(&self, id: &str) -> Vec<u8> {
        BootstrapParams {
            instance_id: id.to_string(),
            namespace: NS.to_string(),
            containerd_ttrpc_address: self.events_path.display().to_string(),
            containerd_grpc_address: self.address_flag.clone(),
            socket_dir: Some(self.dir.join("s").display().to_string()),
            ..Default::default()
        }
        .write_to_bytes()
        .unwrap()
    }

    /// Kills this pid when the world is dropped.
    pub fn track(&self, pid: i32) {
        self.shim_pids.lock().unwrap().push(pid);
    }

    /// Runs `start` in the bundle with BootstrapParams; returns (exit status, stdout, stderr).
    pub fn run_start(&self, id: &str, bundle: &Path) -> (std::process::ExitStatus, Vec<u8>, String) {
        self.run_start_with(id, bundle, self.bootstrap_params(id), &[])
    }

    /// Runs `start` in the bundle with the given stdin and extra environment.
    pub fn run_start_with(
        &self,
        id: &str,
        bundle: &Path,
        stdin: Vec<u8>,
        env: &[(&str, &str)],
    ) -> (std::process::ExitStatus, Vec<u8>, String) {
        let mut child = Command::new(BIN)
            .args([
                "-namespace",
                NS,
                "-address",
                &self.address_flag,
                "-publish-binary",
                "/bin/true",
                "-id",
                id,
                "start",
            ])
            .current_dir(bundle)
            .env("TTRPC_ADDRESS", &self.events_path)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn start");
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&stdin).unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("start did not finish in time");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let out = child.wait_with_output().unwrap();
        (out.status, out.stdout, String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// Starts a shim for `id` and connects to it.
    pub async fn start(&self, id: &str, bundle: &Path) -> Shim {
        let (status, stdout, stderr) = self.run_start(id, bundle);
        assert!(status.success(), "start failed: {stderr}");
        let result = BootstrapResult::parse_from_bytes(&stdout).expect("BootstrapResult on stdout");
        assert_eq!(result.version, 3);
        assert_eq!(result.protocol, "ttrpc");
        let client = Client::connect(&result.address).await.expect("connect to shim");
        let task = TaskClient::new(client);
        let connect = task
            .connect(ctx(), &api::ConnectRequest { id: id.to_string(), ..Default::default() })
            .await
            .expect("Connect");
        self.shim_pids.lock().unwrap().push(connect.shim_pid as i32);
        Shim { address: result.address, task, pid: connect.shim_pid as i32 }
    }

    pub fn topics(&self) -> Vec<String> {
        self.collector.events.lock().unwrap().iter().map(|(t, _)| t.clone()).collect()
    }

    pub fn events_of<M: MessageFull>(&self, topic: &str) -> Vec<M> {
        self.collector
            .events
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| t == topic)
            .map(|(_, any)| {
                assert_eq!(any.type_url, M::descriptor().full_name());
                M::parse_from_bytes(&any.value).unwrap()
            })
            .collect()
    }

    pub async fn wait_for_events(&self, topic: &str, count: usize) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.topics().iter().filter(|t| *t == topic).count() >= count {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    /// Runs the `delete` action for a bundle; returns (status, stdout).
    pub fn run_delete(&self, id: &str, bundle: &Path) -> (std::process::ExitStatus, Vec<u8>) {
        let out = Command::new(BIN)
            .args(["-namespace", NS, "-address", &self.address_flag, "-publish-binary", "/bin/true", "-id", id])
            .args(["-bundle", &bundle.display().to_string(), "delete"])
            .current_dir(bundle)
            .env("TTRPC_ADDRESS", &self.events_path)
            .stdin(Stdio::null())
            .output()
            .expect("run delete");
        (out.status, out.stdout)
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for pid in self.shim_pids.lock().unwrap().iter() {
            if *pid > 1 {
                unsafe { libc::kill(*pid, libc::SIGKILL) };
            }
        }
        // The delete action kills whatever the mock recorded for each bundle.
        for (id, bundle) in self.bundles.lock().unwrap().iter() {
            if bundle.join("mock-pids").exists() {
                let _ = self.run_delete(id, bundle);
            }
        }
        if let Some(mut server) = self.server.take() {
            let _ = block_on_current(async move { server.shutdown().await });
        }
        self.logs.lock().unwrap().clear();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn block_on_current<F: std::future::Future>(future: F) -> Option<F::Output> {
    // Drop runs inside the (multi-thread) test runtime.
    let handle = tokio::runtime::Handle::try_current().ok()?;
    Some(tokio::task::block_in_place(move || handle.block_on(future)))
}

pub struct Shim {
    pub address: String,
    pub task: TaskClient,
    pub pid: i32,
}

impl Shim {
    pub fn alive(&self) -> bool {
        pid_alive(self.pid)
    }

    pub async fn wait_gone(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !self.alive() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    pub fn socket_path(&self) -> PathBuf {
        PathBuf::from(self.address.strip_prefix("unix://").unwrap_or(&self.address))
    }
}

pub fn is_zombie(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        .unwrap_or(true)
}

pub fn pid_alive(pid: i32) -> bool {
    (unsafe { libc::kill(pid, 0) } == 0) && !is_zombie(pid)
}

pub fn create_req(id: &str, bundle: &Path) -> api::CreateTaskRequest {
    api::CreateTaskRequest { id: id.to_string(), bundle: bundle.display().to_string(), ..Default::default() }
}

pub fn code_of(e: &ttrpc::Error) -> ttrpc::Code {
    match e {
        ttrpc::Error::RpcStatus(status) => status.code(),
        other => panic!("not a status error: {other:?}"),
    }
}

pub fn exec_spec(args: &[&str]) -> Any {
    let process = json!({
        "user": {"uid": 0, "gid": 0},
        "args": args,
        "env": ["PATH=/usr/bin:/bin"],
        "cwd": "/",
    });
    Any {
        type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".to_string(),
        value: process.to_string().into_bytes(),
        ..Default::default()
    }
}
