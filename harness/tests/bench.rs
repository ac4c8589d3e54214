//! `shimcompat bench --quick` on the bundled mock: every phase runs and its figures are plausible (non-zero, ordered
//! percentiles, one sample per lifecycle, no growth in the soak), and `compare` tells a slower report from the same
//! one. Figures are never held to a speed here: that is what the bench measures, not what a test asserts.
use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn shimcompat() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shimcompat"))
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("shimcompat-bench-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn ops<'a>(candidate: &'a Value, key: &str) -> Vec<(&'a str, &'a Value)> {
    candidate[key]
        .as_array()
        .map(|a| a.iter().map(|o| (o["op"].as_str().unwrap_or(""), o)).collect())
        .unwrap_or_default()
}

fn u(value: &Value, key: &str) -> u64 {
    value[key].as_u64().unwrap_or_else(|| panic!("{key} missing or not a number in {value}"))
}

#[test]
fn quick_bench_on_the_mock_is_plausible() {
    let dir = scratch("quick");
    let json = dir.join("bench.json");
    let markdown = dir.join("bench.md");
    let html = dir.join("bench.html");
    let out = shimcompat()
        .args(["bench", "--quick", "--containerd", "1.6", "--json"])
        .arg(&json)
        .arg("--markdown")
        .arg(&markdown)
        .arg("--html")
        .arg(&html)
        .output()
        .expect("running shimcompat bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench --quick failed ({}):\n{stdout}\n{stderr}", out.status);
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).expect("bench.json")).expect("JSON");
    assert_eq!(report["schema"], "shimcompat.bench/v1");
    let candidate = &report["candidates"][0];
    assert_eq!(candidate["name"], "mock");
    assert_eq!(candidate["errors"].as_array().map(Vec::len), Some(0), "{candidate}");
    assert_eq!(candidate["leftovers"].as_array().map(Vec::len), Some(0), "{candidate}");

    // Latency: every operation of the lifecycle, one sample per lifecycle (--quick: 10), ordered percentiles.
    let per_shim = ops(candidate, "ops");
    let names: Vec<&str> = per_shim.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        [
            "start",
            "dial",
            "create",
            "connect",
            "start_rpc",
            "first_output",
            "exec_start",
            "exec_exit",
            "kill",
            "kill_to_exit",
            "delete",
            "shutdown_to_exit",
            "lifecycle",
            "run_to_exit"
        ]
    );
    let grouped = ops(candidate, "grouped_ops");
    assert!(grouped.iter().any(|(n, _)| *n == "lifecycle"), "the mock groups: {candidate}");
    // Each grouped container is released as containerd does it (Shutdown, `delete` action, bundle removed).
    assert!(grouped.iter().any(|(n, _)| *n == "release"), "grouped containers released: {candidate}");
    let mut part_sum = 0;
    for (name, op) in per_shim.iter().chain(grouped.iter()) {
        assert_eq!(u(op, "samples"), 10, "{name}");
        let (p50, p90, p99, max) = (u(op, "p50_us"), u(op, "p90_us"), u(op, "p99_us"), u(op, "max_us"));
        assert!(p50 > 0 && p50 <= p90 && p90 <= p99 && p99 <= max, "{name}: {op}");
        if ["start", "create", "start_rpc", "kill", "delete"].contains(name) {
            part_sum += p50;
        }
    }
    // The whole is more than some of its parts.
    let lifecycle = per_shim.iter().find(|(n, _)| *n == "lifecycle").map(|(_, o)| u(o, "p50_us")).unwrap_or(0);
    assert!(lifecycle >= part_sum / 2, "lifecycle p50 {lifecycle} µs against parts {part_sum} µs");

    // Throughput: both modes at concurrency 1 and 2, every lifecycle done (3 per worker).
    let throughput = candidate["throughput"].as_array().expect("throughput");
    for mode in ["per-shim", "grouped"] {
        for c in [1, 2] {
            let row = throughput
                .iter()
                .find(|t| t["mode"] == mode && t["concurrency"] == c)
                .unwrap_or_else(|| panic!("no throughput row {mode} x{c}: {throughput:?}"));
            assert_eq!(u(row, "lifecycles"), 3 * c, "{row}");
            assert!(row["per_second"].as_f64().unwrap_or(0.0) > 0.0, "{row}");
        }
    }

    // Density: 1 and 5 containers, a shim each or one for all; memory read for each.
    let density = candidate["density"].as_array().expect("density");
    for (mode, containers, shims) in [("per-shim", 1, 1), ("per-shim", 5, 5), ("grouped", 1, 1), ("grouped", 5, 1)] {
        let row = density
            .iter()
            .find(|d| d["mode"] == mode && d["containers"] == containers)
            .unwrap_or_else(|| panic!("no density row {mode} x{containers}: {density:?}"));
        assert_eq!(u(row, "shim_processes"), shims, "{row}");
        // The mock runs each container's init as its child; the grouped shim's own container adds one.
        assert!(u(row, "under_processes") >= containers, "{row}");
        assert!(u(&row["shim"], "pss_kib") > 0 && u(&row["shim"], "rss_kib") >= u(&row["shim"], "pss_kib"), "{row}");
        assert!(u(row, "pss_per_container_kib") > 0, "{row}");
    }

    // Soak: 50 lifecycles in the grouped mock, 11 samples, and the mock leaks nothing.
    let soak = &candidate["soak"];
    assert_eq!(soak["mode"], "grouped");
    assert_eq!(u(soak, "lifecycles"), 50);
    assert_eq!(soak["samples"].as_array().map(Vec::len), Some(11));
    let growth = &soak["growth_per_100"];
    for key in ["shim_fds", "shim_threads", "host_mounts", "run_cgroups", "shim_sockets"] {
        assert_eq!(growth[key].as_f64(), Some(0.0), "soak growth of {key}: {soak}");
    }

    // The mock names no OCI runtime: no floor, and the report says why.
    let skipped = candidate["skipped"].to_string();
    assert!(skipped.contains("floor") && skipped.contains("no [runc_options]"), "{skipped}");
    assert!(stdout.contains("latency, one shim per lifecycle") && stdout.contains("soak, 50 lifecycles"), "{stdout}");
    let md = std::fs::read_to_string(&markdown).expect("bench.md");
    assert!(md.contains("| start | 10 |") && md.contains("`run_to_exit`"), "{md}");

    html_renders_in_chromium(&dir, &html);
    compare_tells_slower_from_same(&dir, &json, &report);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The HTML page in a real browser: both latency charts with a bar group per operation. Without chromium (.ci/run
/// installs Debian's) this part says so and checks the file's text only.
fn html_renders_in_chromium(dir: &Path, html: &Path) {
    let page = std::fs::read_to_string(html).expect("bench.html");
    // Self-contained: charts inline, nothing fetched.
    assert!(page.contains("<svg class=\"latency\""), "{page:.2000}");
    assert!(!page.contains("src=\"http") && !page.contains("href=\"http"), "{page:.2000}");
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].into_iter().find(|p| Path::new(p).exists());
    let Some(chromium) = chromium else {
        eprintln!("note: no chromium: the bench HTML was not opened in a browser");
        return;
    };
    let profile = format!("--user-data-dir={}", dir.join("chromium").display());
    let dom = Command::new(chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", &profile, "--dump-dom"])
        .arg(format!("file://{}", html.display()))
        .stderr(std::process::Stdio::null())
        .output()
        .expect("running chromium");
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert_eq!(dom.matches("<svg class=\"latency\"").count(), 2, "two charts (per shim, grouped):\n{dom:.2000}");
    assert_eq!(dom.matches("data-op=\"lifecycle\"").count(), 2, "{dom:.2000}");
    assert!(dom.contains("<h3>soak, 50 lifecycles grouped"), "{dom:.3000}");
}

/// `compare` of a report with itself finds nothing; with a copy whose create is three times slower, a regression.
fn compare_tells_slower_from_same(dir: &Path, json: &Path, report: &Value) {
    let same = shimcompat().arg("compare").arg(json).arg(json).output().expect("compare");
    let text = String::from_utf8_lossy(&same.stdout);
    assert!(same.status.success() && text.contains("no figure moved"), "{}: {text}", same.status);
    let mut slower = report.clone();
    for op in slower["candidates"][0]["ops"].as_array_mut().expect("ops") {
        if op["op"] == "create" {
            for key in ["p50_us", "p90_us", "p99_us"] {
                op[key] = Value::from(u(op, key) * 3 + 2_000);
            }
        }
    }
    let slower_path = dir.join("slower.json");
    std::fs::write(&slower_path, slower.to_string()).expect("slower.json");
    let out = shimcompat().arg("compare").arg(json).arg(&slower_path).output().expect("compare");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("REGRESSION create p50"), "{text}");
}

#[test]
fn bad_input_is_refused_before_anything_runs() {
    for (args, says) in [
        (&["bench", "--samples", "0"][..], "counts of 1 or more"),
        (&["bench", "--candidate", "/nonexistent/shim.toml"][..], "/nonexistent/shim.toml"),
        (&["bench", "--containerd", "9.9"][..], "not a containerd line"),
        (&["bench", "--runtime", "/usr/bin/containerd-shim-runc-v2"][..], "path"),
    ] {
        let out = shimcompat().args(args).output().expect("shimcompat");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

/// Every process whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        let line = String::from_utf8_lossy(&raw).replace('\0', " ");
        if line.contains(needle) {
            found.push(format!("{pid}: {line}"));
        }
    }
    found
}

/// SIGINT while a `ctr run --rm` reference is in flight: the bench exits 130 at once, and its private containerd,
/// the shims and containers it started, the lab's mounts and directory are all gone.
#[test]
fn interrupt_during_the_ctr_reference_leaves_nothing() {
    if !nix::unistd::geteuid().is_root() || !Path::new("/usr/bin/containerd").exists() {
        println!("skipped: needs root and containerd 1.6 (/usr/bin/containerd) for the `ctr run --rm` reference");
        return;
    }
    let dir = scratch("interrupt");
    let err = std::fs::File::create(dir.join("stderr")).expect("stderr file");
    let mut child = shimcompat()
        .args(["bench", "--quick", "--containerd", "1.6", "--samples", "200", "--work-dir"])
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(err)
        .spawn()
        .expect("running shimcompat bench");
    // The lab is named after the bench's pid: shimcompat-e2e-16-<pid>-<n>.
    let lab = format!("shimcompat-e2e-16-{}-", child.id());
    let started = std::time::Instant::now();
    let mut seen = false;
    while started.elapsed() < std::time::Duration::from_secs(60) && child.try_wait().ok().flatten().is_none() {
        if processes_mentioning(&lab).iter().any(|p| p.contains(" --rm ")) {
            seen = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT);
    let interrupted = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if interrupted.elapsed() > std::time::Duration::from_secs(20) {
            let _ = child.kill();
            panic!("bench still running 20 s after SIGINT");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let stderr = std::fs::read_to_string(dir.join("stderr")).unwrap_or_default();
    assert!(seen, "no `ctr run --rm` of the lab {lab}* was seen within 60 s:\n{stderr}");
    assert_eq!(status.code(), Some(130), "exit after SIGINT:\n{stderr}");
    std::thread::sleep(std::time::Duration::from_millis(200));
    let left = processes_mentioning(&lab);
    assert!(left.is_empty(), "still running after the interrupted bench: {left:?}\n{stderr}");
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mounts: Vec<&str> = mountinfo.lines().filter(|l| l.contains(&lab)).collect();
    assert!(mounts.is_empty(), "mounts left: {mounts:?}");
    let dirs: Vec<String> = std::fs::read_dir(std::env::temp_dir())
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(&lab))
        .collect();
    assert!(dirs.is_empty(), "lab directories left: {dirs:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
