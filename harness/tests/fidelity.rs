//! Differential fidelity test: what a REAL containerd sends a shim against what the harness sends under that
//! containerd's profile (`--containerd 1.6|1.7`). The running daemon is the judge (harness/src/profile.rs).
//!
//! 1. containerd: for 1.6.20 and 1.7.24, a private daemon (harness/tests/daemon) runs with SHIMCOMPAT_MOCK_TRACE in
//!    its environment (containerd passes it on to shims) and the mock installed as `io.containerd.mock.v1`; a fixed
//!    ctr script runs: `ctr run --rm IMAGE fid-rm /payload echo hi`; `ctr run -d IMAGE fid-exec /payload forever`,
//!    `ctr task ls` until RUNNING, `ctr task exec --exec-id e1 fid-exec /payload echo x`, `ctr task kill -s SIGKILL`,
//!    `ctr task ls` until STOPPED, `ctr task rm`, `ctr c rm`.
//! 2. harness: the library runs the mock candidate (the trace variable in its `env`) under profile 1.6, then 1.7, for
//!    CASES (its verdict probe, a plain create, runs first and is recorded too), with `-debug` as the lab's
//!    debug-level containerd passes it.
//! 3. Both traces (shims/mock/README.md, one JSON line per invocation and per RPC) are reduced to SHAPES, never
//!    values, and compared per line:
//!    - `start` and `delete` invocations: argv flags in order (values as placeholders: `<ns>`, `<id>`, the form of
//!      -address, -publish-binary absolute and existing, -bundle equal to the cwd), cwd laid out as
//!      `<state>/io.containerd.runtime.v2.task/<ns>/<id>`, each variable containerd sets (set or not, value form:
//!      TTRPC_ADDRESS a path without scheme, GRPC_ADDRESS = -address, NAMESPACE = -namespace, MAX_SHIM_VERSION and
//!      GOMAXPROCS literally), stdin form and type URL;
//!    - every RPC method both sides sent: the set of wire forms (service, metadata keys, timeout_nano rounded to
//!      seconds) and, field by field, the set of value forms (which fields are set, path forms, type URLs, mount
//!      types and option keys in order, JSON keys of an Exec's process);
//!    - order: one container's run to exit (`ctr run --rm` / lifecycle::wait_exit_status_0) as method labels
//!      split at anchors (Create, Delete, Shutdown, the actions) with the calls between two anchors compared as a
//!      multiset, because ctr's Wait goroutine races Start; and an exec's calls around its Start (what comes
//!      between Exec and Start, duplicates collapsed, and the call right after Start), its Wait left out (it races).
//!
//!    Deliberate differences are listed in `deliberate` and PRESENCE_BY_CASE, with the reason, and printed. Anything
//!    else that differs fails the test, with a table of containerd's shape against the harness's.
//!
//! Skips, with the reason printed (never a silent pass), when not root, when a daemon is not installed (each daemon
//! on its own), or when the mock is not built. Traces are removed afterwards unless SHIMCOMPAT_FIDELITY_KEEP is set.
mod daemon;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use daemon::{mock_binary, Daemon, Lab, NotStarted};
use serde_json::Value;
use shimcompat::candidate::Candidate;
use shimcompat::profile::Line;
use shimcompat::report::Outcome;
use shimcompat::run::{self, RunConfig, TestArgs};
use shimcompat::select;
use shimcompat::select::Planned;

const MOCK: &str = "io.containerd.mock.v1";
const TRACE: &str = "SHIMCOMPAT_MOCK_TRACE";

/// Prints where `cargo test` shows it even for a passing test (libtest captures print!, not raw stderr), and into
/// the captured output too.
fn announce(text: &str) {
    use std::io::Write as _;
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "{}", text.trim_end());
    println!("{}", text.trim_end());
}

fn read_trace(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// Records what containerd sends for the ctr script. Err(reason) = skip.
fn record_containerd(daemon: Daemon, mock: &Path, dir: &Path) -> Result<Result<Vec<Value>, String>, String> {
    let trace = dir.join(format!("containerd-{}.jsonl", daemon.label().replace(' ', "-")));
    let trace_text = trace.display().to_string();
    let mut lab = match Lab::start_with(daemon, &[(TRACE, trace_text.as_str())]) {
        Ok(lab) => lab,
        Err(NotStarted::Skip(reason)) => return Err(reason),
        Err(NotStarted::Failed(reason)) => return Ok(Err(reason)),
    };
    let result = (|| -> Result<(), String> {
        lab.install_shim("containerd-shim-mock-v1", mock).map_err(|e| format!("linking the mock: {e}"))?;
        let image = lab.import_payload_image()?;
        let rm = lab.new_id("fid-rm");
        let out = lab.ctr(&["run", "--rm", "--runtime", MOCK, image, &rm, "/payload", "echo", "hi"]).ok()?;
        if out.stdout != "hi\n" {
            return Err(format!("ctr run --rm printed {:?}", out.stdout));
        }
        let ex = lab.new_id("fid-exec");
        lab.ctr(&["run", "-d", "--runtime", MOCK, image, &ex, "/payload", "forever"]).ok()?;
        lab.wait_status(&ex, "RUNNING", Duration::from_secs(5))?;
        let out = lab.ctr(&["task", "exec", "--exec-id", "e1", &ex, "/payload", "echo", "x"]).ok()?;
        if out.stdout != "x\n" {
            return Err(format!("ctr task exec printed {:?}", out.stdout));
        }
        lab.ctr(&["task", "kill", "-s", "SIGKILL", &ex]).ok()?;
        lab.wait_status(&ex, "STOPPED", Duration::from_secs(5))?;
        lab.ctr(&["task", "rm", &ex]).ok()?;
        lab.ctr(&["container", "rm", &ex]).ok()?;
        // A containerd restart with a running task: the reload (address file, Connect with the load deadline, and
        // on 1.7 Pids) is what reconnect::task_intact does on the harness's side.
        let live = lab.new_id("fid-restart");
        lab.ctr(&["run", "-d", "--runtime", MOCK, image, &live, "/payload", "forever"]).ok()?;
        lab.wait_status(&live, "RUNNING", Duration::from_secs(5))?;
        lab.restart()?;
        lab.wait_status(&live, "RUNNING", Duration::from_secs(10))?;
        lab.ctr(&["task", "kill", "-s", "SIGKILL", &live]).ok()?;
        lab.wait_status(&live, "STOPPED", Duration::from_secs(5))?;
        lab.ctr(&["task", "rm", &live]).ok()?;
        lab.ctr(&["container", "rm", &live]).ok()?;
        // The shim's `delete` action runs asynchronously after the disconnect.
        let started = std::time::Instant::now();
        while !lab.shim_pids().is_empty() && started.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(300));
        Ok(())
    })();
    drop(lab);
    Ok(result.map(|_| read_trace(&trace)))
}

/// The harness cases matching the ctr script.
const CASES: &[&str] = &[
    "lifecycle::wait_exit_status_0",
    "io::stdin_closeio_ends_cat",
    "exec::stdout_through_fifo",
    "exec::stdin_through_fifo",
    "exec::delete_exited",
    "kill::sigkill_gives_137",
    "reconnect::task_intact",
];

/// Records what the harness sends under `line` for CASES (and its verdict probe).
fn record_harness(line: Line, dir: &Path) -> Result<Vec<Value>, String> {
    let trace = dir.join(format!("harness-{}.jsonl", line.label()));
    let mut candidate = Candidate::mock();
    candidate.env.push(format!("{TRACE}={}", trace.display()));
    let plan = match select::plan(candidate, None, line) {
        Planned::Unavailable { reason, .. } => return Err(reason),
        ready => ready,
    };
    let label = plan.label();
    let filters = CASES.iter().map(|case| format!("{label}::{case}")).collect();
    let args = TestArgs { filters, exact: true, test_threads: Some(1), ..TestArgs::default() };
    // The lab's containerd logs at debug level, so it passes -debug: the harness does the same.
    let config = RunConfig { work_base: Some(dir.to_path_buf()), keep: false, shim_debug: true };
    let report = run::run(vec![plan], &args, &config, &mut []).map_err(|e| e.to_string())?;
    let not_passed: Vec<String> = report
        .results
        .iter()
        .filter(|r| r.outcome != Outcome::Pass)
        .map(|r| format!("{}: {:?}", r.name, r.outcome))
        .collect();
    if report.results.len() != CASES.len() || !not_passed.is_empty() {
        return Err(format!(
            "the harness run of {CASES:?} under {line}: {} results, not passed: {not_passed:#?}",
            report.results.len()
        ));
    }
    Ok(read_trace(&trace))
}

// ---------------------------------------------------------------------------------------------------------------
// Shapes.

/// Names containerd sets for a shim (the mock records their values; every other name only as present).
const CONTAINERD_ENV: &[&str] = &[
    "TTRPC_ADDRESS",
    "GRPC_ADDRESS",
    "NAMESPACE",
    "MAX_SHIM_VERSION",
    "SCHED_CORE",
    "GOMAXPROCS",
    "OTEL_SERVICE_NAME",
];

/// Flags of the shim command line that take no value.
const BOOL_FLAGS: &[&str] = &["-debug", "-v", "-version", "-info"];

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "(absent)".into(),
        other => other.to_string(),
    }
}

fn path_form(value: &str) -> String {
    if value.is_empty() {
        "empty".into()
    } else if let Some((scheme, _)) = value.split_once("://") {
        format!("uri:{scheme}")
    } else if value.starts_with('/') {
        "absolute".into()
    } else {
        "relative".into()
    }
}

fn flag_value<'a>(argv: &'a [String], flag: &str) -> Option<&'a str> {
    argv.iter().position(|a| a == flag).and_then(|i| argv.get(i + 1)).map(String::as_str)
}

fn argv_of(line: &Value) -> Vec<String> {
    line["argv"].as_array().map(|a| a.iter().map(text).collect()).unwrap_or_default()
}

/// The shape of an `exec` line (one invocation of the shim binary), as key -> value form.
fn exec_shape(line: &Value) -> BTreeMap<String, String> {
    let argv = argv_of(line);
    let cwd = line["cwd"].as_str().unwrap_or_default().to_string();
    let namespace = flag_value(&argv, "-namespace").unwrap_or_default().to_string();
    let id = flag_value(&argv, "-id").unwrap_or_default().to_string();
    let address = flag_value(&argv, "-address").unwrap_or_default().to_string();
    let mut shape = BTreeMap::new();
    shape.insert("argv[0]".into(), path_form(argv.first().map(String::as_str).unwrap_or_default()));
    let mut tokens = Vec::new();
    let mut rest = argv.iter().skip(1).peekable();
    while let Some(token) = rest.next() {
        tokens.push(token.clone());
        if !token.starts_with('-') || BOOL_FLAGS.contains(&token.as_str()) {
            continue;
        }
        let Some(value) = rest.next() else { break };
        tokens.push(match token.as_str() {
            "-namespace" => "<ns>".into(),
            "-id" => "<id>".into(),
            "-address" => format!("<{}>", path_form(value)),
            "-publish-binary" => {
                let exists = Path::new(value).is_file();
                format!("<{},{}>", path_form(value), if exists { "exists" } else { "missing" })
            }
            "-bundle" if *value == cwd => "<bundle = cwd>".into(),
            "-bundle" => format!("<{} != cwd>", path_form(value)),
            _ => "<value>".into(),
        });
    }
    shape.insert("argv".into(), tokens.join(" "));
    let layout = format!("/io.containerd.runtime.v2.task/{namespace}/{id}");
    shape.insert(
        "cwd".into(),
        if cwd.starts_with('/') && cwd.ends_with(&layout) {
            "<state>/io.containerd.runtime.v2.task/<ns>/<id>".into()
        } else {
            cwd
        },
    );
    for name in CONTAINERD_ENV {
        let value = line["env"].get(*name).and_then(Value::as_str);
        let form = match (*name, value) {
            (_, None) => "(unset)".to_string(),
            ("TTRPC_ADDRESS", Some(v)) => path_form(v),
            ("GRPC_ADDRESS", Some(v)) if v == address => "= -address".into(),
            ("GRPC_ADDRESS", Some(v)) => format!("{} (not -address)", path_form(v)),
            ("NAMESPACE", Some(v)) if v == namespace => "= -namespace".into(),
            ("NAMESPACE", Some(_)) => "set (not -namespace)".into(),
            ("OTEL_SERVICE_NAME", Some(_)) => "set".into(),
            (_, Some(v)) => v.to_string(),
        };
        shape.insert(format!("env.{name}"), form);
    }
    let stdin = &line["stdin"];
    let mut form = text(&stdin["form"]);
    if let Some(url) = stdin["type_url"].as_str() {
        form.push_str(&format!(" {url}"));
    }
    shape.insert("stdin".into(), form);
    shape
}

/// Flattens a request's field shape (shims/mock/src/trace.rs) into key -> value; `len` of an Any is a value and
/// is left out.
fn flatten(prefix: &str, value: &Value, out: &mut BTreeMap<String, String>) {
    let key = |name: &str| if prefix.is_empty() { name.to_string() } else { format!("{prefix}.{name}") };
    match value {
        Value::Object(map) if map.contains_key("count") && map.contains_key("items") => {
            let items = map["items"].as_array().cloned().unwrap_or_default();
            if items.iter().all(|i| !i.is_object()) {
                out.insert(prefix.to_string(), items.iter().map(text).collect::<Vec<_>>().join(","));
            } else {
                out.insert(format!("{prefix}.count"), items.len().to_string());
                for (i, item) in items.iter().enumerate() {
                    flatten(&format!("{prefix}[{i}]"), item, out);
                }
            }
        }
        Value::Object(map) if map.contains_key("count") && map.contains_key("keys") => {
            out.insert(prefix.to_string(), text(&map["keys"]));
        }
        Value::Object(map) => {
            for (name, inner) in map {
                if name == "len" {
                    continue;
                }
                flatten(&key(name), inner, out);
            }
        }
        Value::Array(items) => {
            out.insert(prefix.to_string(), items.iter().map(text).collect::<Vec<_>>().join(","));
        }
        other => {
            out.insert(prefix.to_string(), text(other));
        }
    }
}

fn method(line: &Value) -> String {
    text(&line["method"])
}

fn is_exec_call(line: &Value) -> bool {
    line["fields"].get("exec_id").is_some()
}

fn timeout_secs(line: &Value) -> i64 {
    (line["timeout_nano"].as_i64().unwrap_or(0) as f64 / 1e9).round() as i64
}

/// How an RPC goes on the wire: service, metadata keys, deadline rounded to seconds.
fn wire(line: &Value) -> String {
    let service = text(&line["service"]);
    let keys: Vec<String> = line["metadata"].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default();
    format!(
        "{} metadata [{}] timeout {}s",
        service.trim_start_matches("containerd.task."),
        keys.join(","),
        timeout_secs(line)
    )
}

/// A label for order comparisons: method, `[exec]` for an exec's call, `(Ns)` when it carries a deadline.
fn label(line: &Value) -> String {
    if line["kind"] == "exec" {
        return format!("<{} action>", text(&line["action"]));
    }
    let mut label = method(line);
    if is_exec_call(line) {
        label.push_str("[exec]");
    }
    let secs = timeout_secs(line);
    if secs > 0 {
        label.push_str(&format!("({secs}s)"));
    }
    label
}

// ---------------------------------------------------------------------------------------------------------------
// Traces, per container.

/// One recorded side: its lines per container id, in trace order (rpc lines found by the server's pid).
struct Side {
    by_id: BTreeMap<String, Vec<Value>>,
    /// Lines left out as deliberate differences, with the reason.
    dropped: Vec<(String, String)>,
}

impl Side {
    fn new(lines: Vec<Value>, harness: bool) -> Side {
        let mut pid_to_id = BTreeMap::new();
        for line in lines.iter().filter(|l| l["kind"] == "exec") {
            if let Some(id) = flag_value(&argv_of(line), "-id") {
                pid_to_id.insert(line["pid"].as_i64().unwrap_or(0), id.to_string());
            }
        }
        let mut by_id: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        let mut dropped = Vec::new();
        for line in lines {
            let id = match line["kind"].as_str() {
                Some("exec") if line["action"] == "server" => continue,
                Some("exec") => flag_value(&argv_of(&line), "-id").map(str::to_string),
                _ => pid_to_id.get(&line["pid"].as_i64().unwrap_or(0)).cloned(),
            };
            let Some(id) = id else { continue };
            let calls = by_id.entry(id.clone()).or_default();
            if harness {
                if let Some(reason) = deliberate(calls, &line) {
                    dropped.push((format!("{id}: {}", label(&line)), reason.to_string()));
                    calls.push(serde_json::json!({"kind": "dropped", "line": line}));
                    continue;
                }
            }
            calls.push(line);
        }
        for calls in by_id.values_mut() {
            calls.retain(|l| l["kind"] != "dropped");
        }
        Side { by_id, dropped }
    }

    fn lines(&self) -> impl Iterator<Item = &Value> {
        self.by_id.values().flatten()
    }

    fn ids_with(&self, prefix: &str) -> Vec<&String> {
        self.by_id.keys().filter(|id| id.starts_with(prefix)).collect()
    }
}

/// Harness lines that differ from containerd on purpose, with the reason; left out of every comparison (and
/// listed in the output).
fn deliberate(before: &[Value], line: &Value) -> Option<&'static str> {
    let kill_all = |l: &Value| l["method"] == "Kill" && l["fields"]["all"] == true;
    if kill_all(line) {
        return Some(
            "the harness's teardown SIGKILLs (all=true) every task a case left, whatever its state, so that nothing \
             survives a case; ctr only does that for `task rm -f`",
        );
    }
    if line["method"] == "Wait"
        && !is_exec_call(line)
        && before.last().is_some_and(|l| l["kind"] == "dropped" && kill_all(&l["line"]))
    {
        return Some("the teardown's Wait for its own SIGKILL (part of the teardown kill, issued without the Connect a containerd Wait has)");
    }
    None
}

/// Request fields whose PRESENCE is the case's choice (only their form is compared), with the reason.
const PRESENCE_BY_CASE: &[(&str, &str, &str)] = &[
    ("Create", "stdin", "which stdio streams exist is the case's choice (IoSpec); ctr always makes three fifos"),
    ("Create", "stdout", "as stdin"),
    ("Create", "stderr", "as stdin"),
    ("Exec", "stdin", "as Create's stdin"),
    ("Exec", "stdout", "as Create's stdin"),
    ("Exec", "stderr", "as Create's stdin"),
    ("*", "exec_id", "whether a call is about the init or an exec is the case's (or ctr command's) choice"),
];

// ---------------------------------------------------------------------------------------------------------------
// Comparison.

#[derive(Default)]
struct Table {
    rows: Vec<(String, String, String, String, bool)>,
    notes: Vec<String>,
}

impl Table {
    fn row(&mut self, area: &str, key: &str, containerd: String, harness: String) {
        let same = containerd == harness;
        self.rows.push((area.into(), key.into(), containerd, harness, same));
    }

    fn differences(&self) -> usize {
        self.rows.iter().filter(|r| !r.4).count()
    }

    fn render(&self, title: &str) -> String {
        let width =
            |f: fn(&(String, String, String, String, bool)) -> usize| self.rows.iter().map(f).max().unwrap_or(0);
        let (a, k) = (width(|r| r.0.len()).max(4), width(|r| r.1.len()).max(3));
        let c = width(|r| r.2.len()).clamp(10, 70);
        let mut out = format!("{title}\n  {:<a$}  {:<k$}  {:<c$}  harness\n", "area", "key", "containerd");
        for (area, key, containerd, harness, same) in &self.rows {
            let mark = if *same { "  " } else { "≠ " };
            out.push_str(&format!("{mark}{area:<a$}  {key:<k$}  {containerd:<c$}  {harness}\n"));
        }
        for note in &self.notes {
            out.push_str(&format!("  note: {note}\n"));
        }
        out
    }
}

fn set_text(values: &BTreeSet<String>) -> String {
    values.iter().cloned().collect::<Vec<_>>().join(" | ")
}

/// Key-by-key comparison of shapes: for every key, the set of value forms seen on each side.
fn compare_shapes(
    table: &mut Table,
    area: &str,
    containerd: &[BTreeMap<String, String>],
    harness: &[BTreeMap<String, String>],
    presence_free: &[&str],
) {
    let keys: BTreeSet<&String> = containerd.iter().chain(harness).flat_map(|s| s.keys()).collect();
    for key in keys {
        let values = |shapes: &[BTreeMap<String, String>]| -> BTreeSet<String> {
            let mut set: BTreeSet<String> =
                shapes.iter().map(|s| s.get(key).cloned().unwrap_or_else(|| "(absent)".into())).collect();
            if presence_free.contains(&key.as_str()) {
                set.remove("(absent)");
                if set.is_empty() {
                    set.insert("(never set)".into());
                }
            }
            set
        };
        table.row(area, key, set_text(&values(containerd)), set_text(&values(harness)));
    }
}

fn compare_exec_lines(table: &mut Table, containerd: &Side, harness: &Side) {
    for action in ["start", "delete"] {
        let shapes = |side: &Side| -> Vec<BTreeMap<String, String>> {
            side.lines().filter(|l| l["kind"] == "exec" && l["action"] == action).map(exec_shape).collect()
        };
        let (c, h) = (shapes(containerd), shapes(harness));
        if c.is_empty() || h.is_empty() {
            table.row(&format!("`{action}` action"), "invocations", c.len().to_string(), h.len().to_string());
            continue;
        }
        compare_shapes(table, &format!("`{action}` action"), &c, &h, &[]);
    }
}

fn compare_rpcs(table: &mut Table, containerd: &Side, harness: &Side) {
    let methods =
        |side: &Side| -> BTreeSet<String> { side.lines().filter(|l| l["kind"] == "rpc").map(method).collect() };
    let (cm, hm) = (methods(containerd), methods(harness));
    for only in cm.symmetric_difference(&hm) {
        let who = if cm.contains(only) { "containerd's script" } else { "the harness's cases" };
        table.notes.push(format!("{only}: sent only by {who} this run, not compared"));
    }
    for m in cm.intersection(&hm) {
        fn calls<'a>(side: &'a Side, m: &str) -> Vec<&'a Value> {
            side.lines().filter(|l| l["kind"] == "rpc" && method(l) == m).collect()
        }
        let (c, h) = (calls(containerd, m), calls(harness, m));
        let wires = |calls: &[&Value]| -> BTreeSet<String> { calls.iter().map(|l| wire(l)).collect() };
        table.row(&format!("rpc {m}"), "wire", set_text(&wires(&c)), set_text(&wires(&h)));
        let shapes = |calls: &[&Value]| -> Vec<BTreeMap<String, String>> {
            calls
                .iter()
                .map(|l| {
                    let mut out = BTreeMap::new();
                    flatten("", &l["fields"], &mut out);
                    out
                })
                .collect()
        };
        let presence: Vec<&str> =
            PRESENCE_BY_CASE.iter().filter(|(pm, _, _)| pm == m || *pm == "*").map(|(_, f, _)| *f).collect();
        compare_shapes(table, &format!("rpc {m}"), &shapes(&c), &shapes(&h), &presence);
    }
}

/// Splits a sequence of labels at anchors (calls that never race: Create, Delete, Shutdown and the actions) and
/// sorts inside each segment: calls between two anchors are compared as a multiset, because containerd issues some
/// of them concurrently (ctr's Wait goroutine races Start).
fn segments(labels: &[String]) -> Vec<String> {
    let anchor = |l: &str| {
        l.starts_with('<') || ["Create", "Delete", "Shutdown"].iter().any(|a| l.starts_with(a) && !l.contains("[exec]"))
    };
    let mut out = Vec::new();
    let mut window: Vec<String> = Vec::new();
    let flush = |window: &mut Vec<String>, out: &mut Vec<String>| {
        if !window.is_empty() {
            window.sort();
            out.push(format!("{{{}}}", window.join(", ")));
            window.clear();
        }
    };
    for l in labels {
        if anchor(l) {
            flush(&mut window, &mut out);
            out.push(l.clone());
        } else {
            window.push(l.clone());
        }
    }
    flush(&mut window, &mut out);
    out
}

fn labels(calls: &[Value]) -> Vec<String> {
    calls.iter().map(label).collect()
}

/// An exec's own calls around its Start, Wait left out (ctr's Wait goroutine races the Start, so it lands anywhere)
/// and duplicates collapsed (how many State calls containerd makes in between varies with that race):
/// `Exec[exec] {what comes between} Start[exec] <the next call>`.
fn exec_order(calls: &[Value]) -> Option<String> {
    // CloseIO comes from ctr's own stdin reaching EOF (racing the rest; not every run): a client matter.
    let exec: Vec<String> = calls
        .iter()
        .filter(|l| l["kind"] == "rpc" && is_exec_call(l) && l["method"] != "CloseIO" && l["method"] != "Wait")
        .map(label)
        .collect();
    let from = exec.iter().position(|l| l == "Exec[exec]")?;
    let start = exec.iter().position(|l| l == "Start[exec]")?;
    let between: BTreeSet<&String> = exec.get(from + 1..start).unwrap_or_default().iter().collect();
    let between: Vec<&str> = between.into_iter().map(String::as_str).collect();
    let next = exec.get(start + 1).map(String::as_str).unwrap_or("(nothing)");
    Some(format!("Exec[exec] {{{}}} Start[exec] {next}", between.join(", ")))
}

fn compare_order(table: &mut Table, containerd: &Side, harness: &Side) {
    let one = |side: &Side, prefix: &str| side.ids_with(prefix).first().map(|id| side.by_id[*id].clone());
    match (one(containerd, "fid-rm"), harness.ids_with("lifecycle-")) {
        (Some(c), h) if !h.is_empty() => {
            let c_seq = segments(&labels(&c));
            for id in h {
                table.row(
                    "order",
                    "run to exit (`ctr run --rm` / lifecycle::wait_exit_status_0)",
                    c_seq.join(" "),
                    segments(&labels(&harness.by_id[id])).join(" "),
                );
            }
        }
        _ => table.row("order", "run to exit", "(missing)".into(), "(missing)".into()),
    }
    match one(containerd, "fid-exec").and_then(|c| exec_order(&c)) {
        Some(c) => {
            for id in harness.ids_with("exec-") {
                let h = exec_order(&harness.by_id[id]).unwrap_or_else(|| "(no Exec/Start)".into());
                table.row("order", "exec around its Start (`ctr task exec` / exec::*)", c.clone(), h);
            }
        }
        None => table.row("order", "exec", "(missing)".into(), String::new()),
    }
    table.notes.push(
        "order of the kill (`ctr task kill` / kill::sigkill_gives_137) is not compared: ctr loads the task per command \
         (Tasks.Get: State 2s) before its Kill, a client matter; the Kill itself is compared by shape above"
            .into(),
    );
    table.notes.push(
        "order: calls between anchors (Create, Delete, Shutdown, the actions) are compared as a multiset ({...}, sorted): \
         ctr's Wait goroutine races Start"
            .into(),
    );
}

#[test]
fn containerd_vs_harness() {
    let mock = match mock_binary() {
        Ok(path) => path,
        Err(reason) => return announce(&format!("SKIPPED fidelity: {reason}")),
    };
    if !nix::unistd::geteuid().is_root() {
        return announce("SKIPPED fidelity: needs root to run containerd");
    }
    let dir = std::env::temp_dir().join(format!("shimcompat-fidelity-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creating the trace directory");
    // Every daemon first: the harness's run makes this process a child subreaper, which the daemons' shims must
    // not be reparented to.
    let mut recorded = Vec::new();
    for (daemon, line) in [(Daemon::V1_6, Line::V1_6), (Daemon::V1_7, Line::V1_7)] {
        match record_containerd(daemon, &mock, &dir) {
            Err(reason) => announce(&format!("SKIPPED fidelity::{}: {reason}", daemon.label())),
            Ok(Err(error)) => panic!("fidelity::{}: the ctr script failed: {error}", daemon.label()),
            Ok(Ok(lines)) => recorded.push((daemon, line, lines)),
        }
    }
    let mut failures = Vec::new();
    for (daemon, line, lines) in recorded {
        let harness = record_harness(line, &dir).unwrap_or_else(|e| panic!("fidelity: harness under {line}: {e}"));
        let (c, h) = (Side::new(lines, false), Side::new(harness, true));
        let mut table = Table::default();
        compare_exec_lines(&mut table, &c, &h);
        compare_rpcs(&mut table, &c, &h);
        compare_order(&mut table, &c, &h);
        let mut out = table.render(&format!(
            "fidelity: {} (the real daemon) vs the harness under --containerd {line}: {} difference(s)",
            daemon.label(),
            table.differences()
        ));
        out.push_str("  deliberate (harness lines left out):\n");
        let mut reasons: BTreeMap<&String, Vec<&String>> = BTreeMap::new();
        for (what, reason) in &h.dropped {
            reasons.entry(reason).or_default().push(what);
        }
        for (reason, what) in reasons {
            out.push_str(&format!("    {} line(s): {reason}\n", what.len()));
        }
        for (m, field, reason) in PRESENCE_BY_CASE {
            out.push_str(&format!("    {m}.{field}: presence not compared, only its form: {reason}\n"));
        }
        out.push_str("    values are never compared: ids, paths (forms only), the harness's own -address and events socket, -publish-binary (its own executable), environment variables containerd does not set\n");
        announce(&out);
        if table.differences() > 0 {
            let rows: Vec<String> = table
                .rows
                .iter()
                .filter(|r| !r.4)
                .map(|(area, key, c, h, _)| format!("  {area} / {key}:\n    containerd: {c}\n    harness:    {h}"))
                .collect();
            failures.push(format!("{} vs --containerd {line}:\n{}", daemon.label(), rows.join("\n")));
        }
    }
    if std::env::var_os("SHIMCOMPAT_FIDELITY_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        announce(&format!("fidelity: traces kept in {}", dir.display()));
    }
    assert!(failures.is_empty(), "the harness does not send what containerd sends:\n{}", failures.join("\n"));
}
