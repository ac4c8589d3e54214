//! The conformance catalogue. Each case has a stable id `area::name`, a level (MUST/SHOULD/MAY), the features it
//! needs, a one-line reference to where the behaviour is specified, the mock fault that proves it can fail, and the
//! check itself.
use std::future::Future;
use std::pin::Pin;

use containerd_shim_protos::ttrpc::Code;

use crate::context::Ctx;
use crate::shim::task::{code_name, RpcError};

pub mod checkpoint;
pub mod cli;
pub mod concurrency;
pub mod delete;
pub mod errors;
pub mod events;
pub mod exec;
pub mod hygiene;
pub mod io;
pub mod kill;
pub mod lifecycle;
pub mod names;
pub mod oom;
pub mod options;
pub mod pause;
pub mod reconnect;
pub mod rootfs;
pub mod shutdown;
pub mod stats;
pub mod update;
pub mod util;
pub mod wait;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum Level {
    #[serde(rename = "MUST")]
    Must,
    #[serde(rename = "SHOULD")]
    Should,
    #[serde(rename = "MAY")]
    May,
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Level::Must => "MUST",
            Level::Should => "SHOULD",
            Level::May => "MAY",
        })
    }
}

// Defined with the case context, which returns them too; cases name them from here.
pub use crate::context::{fail, CaseError};

pub type CaseResult = Result<(), CaseError>;
pub type CaseFuture<'a> = Pin<Box<dyn Future<Output = CaseResult> + Send + 'a>>;
pub type CaseFn = for<'a> fn(&'a mut Ctx) -> CaseFuture<'a>;

pub struct Case {
    /// `area::name`.
    pub id: &'static str,
    pub level: Level,
    /// Features the case needs; a candidate that declares one unsupported skips the case.
    pub features: &'static [&'static str],
    /// Where the behaviour is specified.
    pub reference: &'static str,
    /// What the case checks, in one line.
    pub summary: &'static str,
    /// The mock fault (shims/mock/FAULTS.md) under which this case must fail.
    pub breaks_with: &'static str,
    /// Where a containerd line relies on the behaviour differently: its own level and reference.
    pub per_line: &'static [(crate::profile::Line, Level, &'static str)],
    pub run: CaseFn,
}

impl Case {
    pub fn area(&self) -> &'static str {
        self.id.split("::").next().unwrap_or(self.id)
    }

    /// The level under `line` (the case's own unless that line relies on it differently).
    pub fn level_for(&self, line: crate::profile::Line) -> Level {
        self.per_line.iter().find(|(l, _, _)| *l == line).map(|(_, level, _)| *level).unwrap_or(self.level)
    }
}

/// Builds a `Case`, wrapping an `async fn(&mut Ctx) -> CaseResult`.
#[macro_export]
macro_rules! case {
    ($id:literal, $level:ident, [$($feature:literal),*], breaks_with: $fault:literal, ref: $reference:literal, $summary:literal, $check:path) => {
        $crate::cases::Case {
            id: $id,
            level: $crate::cases::Level::$level,
            features: &[$($feature),*],
            reference: $reference,
            summary: $summary,
            breaks_with: $fault,
            per_line: &[],
            run: {
                fn run(ctx: &mut $crate::context::Ctx) -> $crate::cases::CaseFuture<'_> {
                    Box::pin($check(ctx))
                }
                run
            },
        }
    };
}

/// A case whose level or reference depends on the containerd line: `lines: [(V1_6, Must, "ref"), ...]`.
#[macro_export]
macro_rules! case_per_line {
    ($id:literal, $level:ident, [$($feature:literal),*], breaks_with: $fault:literal, ref: $reference:literal,
     lines: [$(($line:ident, $line_level:ident, $line_ref:literal)),* $(,)?], $summary:literal, $check:path) => {{
        let mut case = $crate::case!($id, $level, [$($feature),*], breaks_with: $fault, ref: $reference, $summary, $check);
        case.per_line = &[$(($crate::profile::Line::$line, $crate::cases::Level::$line_level, $line_ref)),*];
        case
    }};
}

/// Every case, in catalogue order.
pub fn catalogue() -> Vec<Case> {
    let mut all = Vec::new();
    all.extend(lifecycle::cases());
    all.extend(exec::cases());
    all.extend(kill::cases());
    all.extend(wait::cases());
    all.extend(delete::cases());
    all.extend(io::cases());
    all.extend(rootfs::cases());
    all.extend(pause::cases());
    all.extend(errors::cases());
    all.extend(events::cases());
    all.extend(oom::cases());
    all.extend(shutdown::cases());
    all.extend(cli::cases());
    all.extend(reconnect::cases());
    all.extend(concurrency::cases());
    all.extend(stats::cases());
    all.extend(update::cases());
    all.extend(checkpoint::cases());
    all.extend(options::cases());
    all.extend(names::cases());
    all.extend(hygiene::cases());
    all
}

/// Fails the case with a formatted message unless the condition holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err($crate::cases::CaseError::Fail(format!($($arg)+)));
        }
    };
}

/// Asserts that an RPC failed with `code`.
pub fn expect_code<T: std::fmt::Debug>(result: Result<T, RpcError>, code: Code, what: &str) -> CaseResult {
    match result {
        Err(RpcError::Status { code: got, .. }) if got == code => Ok(()),
        Err(RpcError::Status { code: got, message, .. }) => {
            Err(fail(format!("{what}: expected status {}, got {} ({message})", code_name(code), code_name(got))))
        }
        Err(other) => Err(fail(format!("{what}: expected status {}, got {other}", code_name(code)))),
        Ok(reply) => {
            Err(fail(format!("{what}: expected status {}, but the call succeeded: {}", code_name(code), brief(&reply))))
        }
    }
}

/// Asserts that an RPC was refused (any status), e.g. where containerd only relies on refusal.
pub fn expect_refused<T: std::fmt::Debug>(result: Result<T, RpcError>, what: &str) -> Result<Code, CaseError> {
    match result {
        Err(RpcError::Status { code, .. }) => Ok(code),
        Err(other) => Err(fail(format!("{what}: expected a refusal, got {other}"))),
        Ok(reply) => Err(fail(format!("{what}: expected a refusal, but the call succeeded: {}", brief(&reply)))),
    }
}

/// A reply for a failure message: its Debug form without protobuf bookkeeping fields.
pub fn brief<T: std::fmt::Debug>(reply: &T) -> String {
    let text = format!("{reply:?}")
        .replace(", special_fields: SpecialFields { unknown_fields: UnknownFields { fields: None }, cached_size: CachedSize { size: 0 } }", "")
        .replace(" special_fields: SpecialFields { unknown_fields: UnknownFields { fields: None }, cached_size: CachedSize { size: 0 } }", "");
    if text.chars().count() > 300 {
        format!("{}...", text.chars().take(300).collect::<String>())
    } else {
        text
    }
}

/// `shimcompat list`: the catalogue with level, features, the fault that breaks each case, and its reference.
pub fn print_catalogue(json: bool) {
    let all = catalogue();
    if json {
        let rows: Vec<serde_json::Value> = all
            .iter()
            .map(|c| {
                serde_json::json!({
                    "id": c.id, "level": c.level, "features": c.features, "breaks_with": c.breaks_with,
                    "reference": c.reference, "summary": c.summary,
                    "per_line": c.per_line.iter().map(|(line, level, reference)| serde_json::json!({
                        "containerd": line, "level": level, "reference": reference,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        crate::outln!("{}", serde_json::to_string_pretty(&rows).unwrap_or_default());
        return;
    }
    let width = all.iter().map(|c| c.id.len()).max().unwrap_or(10);
    crate::outln!(
        "{:<width$}  {:<6}  {:<22}  {:<28}  reference",
        "case",
        "level",
        "features",
        "breaks with (mock fault)"
    );
    for case in &all {
        let features = if case.features.is_empty() { "-".to_string() } else { case.features.join(",") };
        crate::outln!(
            "{:<width$}  {:<6}  {:<22}  {:<28}  {}",
            case.id,
            case.level.to_string(),
            features,
            case.breaks_with,
            case.reference
        );
        for (line, level, reference) in case.per_line {
            crate::outln!(
                "{:<width$}  {:<6}  {:<22}  {:<28}  {}",
                format!("  under containerd {line}"),
                level.to_string(),
                "",
                "",
                reference
            );
        }
    }
    let musts = all.iter().filter(|c| c.level == Level::Must).count();
    crate::outln!(
        "\n{} cases ({} MUST, {} SHOULD, {} MAY)",
        all.len(),
        musts,
        all.iter().filter(|c| c.level == Level::Should).count(),
        all.iter().filter(|c| c.level == Level::May).count()
    );
}
