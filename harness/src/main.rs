//! The `shimcompat` command: parses and dispatches only.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shimcompat::candidate::Candidate;
use shimcompat::run::{Planned, TestArgs};
use shimcompat::select;

#[derive(Parser)]
#[command(name = "shimcompat", version, about = "Conformance suite for containerd shims, driven at the shim boundary")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the conformance suite (default candidate: the bundled mock shim)
    Run(RunArgs),
    /// List the catalogue: each case with its level, features, reference and the mock fault that breaks it
    List {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Print the host fingerprint and, per candidate, whether it is installed and how it bootstraps
    Doctor {
        /// Candidate files to examine (default: shims/candidates if present, else the mock)
        #[arg(long, value_name = "DIR")]
        candidates: Option<PathBuf>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// A runtime name, resolved as containerd does (e.g. io.containerd.runc.v2). Names only: no paths
    #[arg(long, value_name = "NAME", conflicts_with_all = ["runtime_binary", "candidates", "candidate"])]
    runtime: Option<String>,
    /// A shim binary by path, for shim development; the run is marked as not certified by name
    #[arg(long, value_name = "PATH", conflicts_with_all = ["candidates", "candidate"])]
    runtime_binary: Option<PathBuf>,
    /// Run every candidate file (*.toml) in this directory
    #[arg(long, value_name = "DIR", conflicts_with = "candidate")]
    candidates: Option<PathBuf>,
    /// Run this candidate file (repeatable)
    #[arg(long, value_name = "FILE")]
    candidate: Vec<PathBuf>,
    /// Inject these mock faults into every bundle (for testing the harness against the bundled mock)
    #[arg(long, value_name = "LIST")]
    faults: Option<String>,
    /// Base directory for the run's bundles and sockets (default: the system temp dir)
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Keep the work directory (bundles, shim logs) after the run
    #[arg(long)]
    keep: bool,
    /// Write the results as JSON (schema shimcompat.report/v1)
    #[arg(long, value_name = "FILE")]
    report_json: Option<PathBuf>,
    #[command(flatten)]
    test: TestArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run(args),
        Command::List { json } => {
            shimcompat::cases::print_catalogue(json);
            ExitCode::SUCCESS
        }
        Command::Doctor { candidates, json } => doctor(candidates, json),
    }
}

fn usage_error(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

fn run(args: RunArgs) -> ExitCode {
    let mut candidates = Vec::new();
    let explicit = args.runtime.is_some() || args.runtime_binary.is_some();
    if let Some(name) = &args.runtime {
        if let Err(e) = select::check_runtime_name(name) {
            return usage_error(e);
        }
        candidates.push(Candidate::for_runtime(name));
    } else if let Some(path) = &args.runtime_binary {
        candidates.push(Candidate::for_binary(path));
    } else if let Some(dir) = &args.candidates {
        match Candidate::load_dir(dir) {
            Ok(found) => candidates = found,
            Err(e) => return usage_error(e),
        }
    } else if !args.candidate.is_empty() {
        for file in &args.candidate {
            match Candidate::load(file) {
                Ok(candidate) => candidates.push(candidate),
                Err(e) => return usage_error(e),
            }
        }
    } else {
        candidates.push(Candidate::mock());
    }
    if args.faults.is_some() && candidates.iter().any(|c| c.runtime.as_deref() != Some(shimcompat::candidate::MOCK_RUNTIME)) {
        return usage_error("--faults only applies to the bundled mock shim (io.containerd.mock.v1)");
    }
    let plans: Vec<Planned> = candidates.into_iter().map(|c| select::plan(c, args.faults.as_deref())).collect();
    if explicit {
        // A shim the user named explicitly must exist: a skip would hide a typo.
        if let Some(Planned::Unavailable { reason, .. }) = plans.first() {
            return usage_error(reason);
        }
        if args.runtime_binary.is_some() {
            eprintln!("note: shim given by path: this run is not certified by name");
        }
    }
    for plan in &plans {
        if let Planned::Unavailable { candidate, reason } = plan {
            println!("candidate {} skipped: {reason}", candidate.name);
        }
    }
    let config = shimcompat::run::RunConfig { work_base: args.work_dir.clone(), keep: args.keep, silent: false };
    let report = match shimcompat::run::run(plans, &args.test, &config) {
        Ok(report) => report,
        Err(e) => return usage_error(e),
    };
    if let Some(path) = &args.report_json {
        let written = serde_json::to_vec_pretty(&report)
            .map_err(|e| e.to_string())
            .and_then(|json| std::fs::write(path, json).map_err(|e| e.to_string()));
        if let Err(e) = written {
            return usage_error(format!("writing {}: {e}", path.display()));
        }
    }
    if report.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn doctor(dir: Option<PathBuf>, json: bool) -> ExitCode {
    let dir = dir.or_else(|| Some(PathBuf::from("shims/candidates")).filter(|d| d.is_dir()));
    let candidates = match &dir {
        Some(dir) => match Candidate::load_dir(dir) {
            Ok(found) => found,
            Err(e) => return usage_error(e),
        },
        None => vec![Candidate::mock()],
    };
    let (host, rows) = shimcompat::doctor::examine(candidates, None);
    if json {
        let value = serde_json::json!({ "host": host, "candidates": rows });
        println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
    } else {
        shimcompat::doctor::print(&host, &rows);
    }
    ExitCode::SUCCESS
}
