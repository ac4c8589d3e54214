//! `shimcompat resolve NAME`: explains what Docker and containerd do with a runtime name on this host.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use super::containerd::{self, VersionError};
use super::docker;
use super::explain::{self, Selection};
use super::gopath;
use super::host::{self, HostProbe};

const VERSION_DEADLINE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Explain how a runtime name becomes a shim binary: Docker's verdict per version, the binary name per containerd
/// version, and every place containerd would look on this host, in order.
///
/// Exit status: 0 when the selected containerd would start an executable file, 1 when it would not.
#[derive(Debug, Clone, clap::Args)]
pub struct ResolveArgs {
    /// Runtime name as given to `docker run --runtime` or `ctr run --runtime`
    #[arg(value_name = "NAME", allow_hyphen_values = true)]
    pub name: String,
    /// containerd version to model (1.6, 1.7, 2) [default: the installed containerd's, else 2.x]
    #[arg(long, value_name = "VERSION", value_parser = parse_containerd_version)]
    pub containerd: Option<containerd::Version>,
    /// dockerd version to model (20.10, 23, 24, 25, ..., 28, 29) [default: `dockerd --version`, else 28+]
    #[arg(long, value_name = "VERSION", value_parser = parse_docker_version)]
    pub docker: Option<docker::Version>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// containerd's working directory (systemd starts it in /)
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub containerd_cwd: String,
    /// The PATH containerd inherits [default: this process's PATH]
    #[arg(long, value_name = "PATH")]
    pub path: Option<String>,
    /// The containerd binary (its directory is searched last) [default: `containerd` on PATH]
    #[arg(long, value_name = "PATH")]
    pub containerd_binary: Option<PathBuf>,
    /// containerd's opt plugin path; `<DIR>/bin` goes first on containerd's PATH
    #[arg(long, value_name = "DIR", default_value = "/opt/containerd")]
    pub opt_dir: String,
    /// The opt plugin is disabled in containerd's config (its bin dir is not on PATH)
    #[arg(long)]
    pub no_opt: bool,
}

fn parse_containerd_version(text: &str) -> Result<containerd::Version, String> {
    containerd::Version::parse(text).map_err(|error| error.to_string())
}

fn parse_docker_version(text: &str) -> Result<docker::Version, String> {
    docker::Version::parse(text).map_err(|error| error.to_string())
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("--containerd-cwd must be an absolute path (containerd's working directory), not `{0}`")]
    RelativeCwd(String),
    #[error("--containerd-binary {}: {message}", path.display())]
    ContainerdBinary { path: PathBuf, message: String },
    #[error(
        "the installed containerd ({}) says `{output}`: {error}; pass --containerd 1.6, 1.7 or 2 to choose a model",
        binary.display()
    )]
    UnsupportedContainerd { binary: PathBuf, output: String, error: VersionError },
    #[error("cannot write the explanation: {0}")]
    Output(#[from] std::io::Error),
    #[error("cannot encode the explanation as JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Runs the subcommand, printing to stdout.
pub fn run(args: &ResolveArgs) -> Result<ExitCode, ResolveError> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    run_to(args, &mut out)
}

/// Runs the subcommand, printing to `out`.
pub fn run_to(args: &ResolveArgs, out: &mut dyn Write) -> Result<ExitCode, ResolveError> {
    let explanation = build(args)?;
    match args.format {
        Format::Text => out.write_all(explain::render_text(&explanation).as_bytes())?,
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, &explanation)?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    Ok(if explanation.starts_a_binary() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Gathers the host facts the flags leave open and explains the name.
pub fn build(args: &ResolveArgs) -> Result<explain::Explanation, ResolveError> {
    if !gopath::is_abs(&args.containerd_cwd) {
        return Err(ResolveError::RelativeCwd(args.containerd_cwd.clone()));
    }
    let own_path = std::env::var_os("PATH").map(|path| path.to_string_lossy().into_owned()).unwrap_or_default();
    let inherited_path = args.path.clone().unwrap_or_else(|| own_path.clone());

    let containerd_binary = match &args.containerd_binary {
        Some(path) => {
            if let Err(error) = std::fs::metadata(path) {
                return Err(ResolveError::ContainerdBinary { path: path.clone(), message: error.to_string() });
            }
            Some(path.clone())
        }
        None => host::look_path("containerd", &own_path),
    };
    // containerd's os.Executable() is /proc/self/exe: symlinks resolved.
    let containerd_dir = containerd_binary
        .as_deref()
        .and_then(|binary| std::fs::canonicalize(binary).ok())
        .and_then(|real| real.parent().map(Path::to_path_buf))
        .map(|dir| dir.to_string_lossy().into_owned());

    let (containerd_version, containerd_selection) = match (args.containerd, &containerd_binary) {
        (Some(version), _) => (version, Selection::Flag),
        (None, Some(binary)) => match host::version_output(binary, VERSION_DEADLINE) {
            Ok(output) => match containerd::Version::from_version_output(&output) {
                Ok(version) => (version, Selection::Installed { output }),
                Err(error @ VersionError::Unsupported(_)) => {
                    return Err(ResolveError::UnsupportedContainerd {
                        binary: binary.clone(),
                        output: output.trim().to_owned(),
                        error,
                    })
                }
                Err(error) => (containerd::Version::NEWEST, Selection::Newest { reason: error.to_string() }),
            },
            Err(reason) => (containerd::Version::NEWEST, Selection::Newest { reason }),
        },
        (None, None) => (
            containerd::Version::NEWEST,
            Selection::Newest { reason: "no containerd on PATH (pass --containerd-binary or --containerd)".to_owned() },
        ),
    };

    let (docker_version, docker_selection) = match args.docker {
        Some(version) => (version, Selection::Flag),
        None => detect_dockerd(&own_path),
    };

    let containerd_binary_text = containerd_binary.as_ref().map(|path| path.to_string_lossy().into_owned());
    let request = explain::Request {
        name: &args.name,
        docker_version,
        docker_selection,
        containerd_version,
        containerd_selection,
        cwd: gopath::clean(&args.containerd_cwd),
        inherited_path,
        opt_dir: (!args.no_opt).then(|| args.opt_dir.clone()),
        containerd_binary: containerd_binary_text,
        containerd_dir,
        probe: &HostProbe,
    };
    Ok(explain::explain(&request))
}

/// The daemon's version decides the gate; the `docker` CLI's version is the client's and says nothing about it.
fn detect_dockerd(own_path: &str) -> (docker::Version, Selection) {
    let Some(dockerd) = host::look_path("dockerd", own_path) else {
        let client_note = if host::look_path("docker", own_path).is_some() {
            " (a docker CLI is installed, but its version is the client's, not the daemon's; pass --docker)"
        } else {
            ""
        };
        return (docker::Version::NEWEST, Selection::Newest { reason: format!("no dockerd on PATH{client_note}") });
    };
    match host::version_output(&dockerd, VERSION_DEADLINE) {
        Ok(output) => match docker::Version::from_version_output(&output) {
            Ok(version) => (version, Selection::Installed { output }),
            Err(error) => (docker::Version::NEWEST, Selection::Newest { reason: error.to_string() }),
        },
        Err(reason) => (docker::Version::NEWEST, Selection::Newest { reason }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ResolveArgs,
    }

    fn parse(argv: &[&str]) -> Result<ResolveArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("resolve").chain(argv.iter().copied())).map(|cli| cli.args)
    }

    #[test]
    fn flags_parse() {
        let args = parse(&["io.containerd.kata.v2", "--containerd", "1.7", "--docker", "24.0.7", "--format", "json"])
            .expect("parses");
        assert_eq!(args.containerd, Some(containerd::Version::V1_7));
        assert_eq!(args.docker, Some(docker::Version::V23_24));
        assert_eq!(args.format, Format::Json);
        assert_eq!(args.containerd_cwd, "/");
        assert!(parse(&["x", "--containerd", "1.5"]).is_err());
        assert!(parse(&["x", "--docker", "banana"]).is_err());
        assert_eq!(parse(&["-weird.v1"]).expect("hyphen names are names").name, "-weird.v1");
        assert_eq!(parse(&[""]).expect("empty name parses").name, "");
    }

    #[test]
    fn relative_cwd_is_refused() {
        let args =
            parse(&["io.containerd.runc.v2", "--containerd-cwd", "srv", "--containerd", "1.6", "--docker", "28"])
                .expect("parses");
        let error = build(&args).unwrap_err();
        assert!(error.to_string().contains("--containerd-cwd must be an absolute path"), "{error}");
    }

    #[test]
    fn missing_containerd_binary_is_an_error() {
        let args = parse(&["io.containerd.runc.v2", "--containerd-binary", "/nonexistent/containerd"]).expect("parses");
        let error = build(&args).unwrap_err();
        assert!(error.to_string().starts_with("--containerd-binary /nonexistent/containerd: "), "{error}");
    }

    #[test]
    fn explains_against_the_host_with_given_facts() {
        let args = parse(&[
            "io.containerd.nonexistent-shimcompat.v9",
            "--containerd",
            "2",
            "--docker",
            "28",
            "--path",
            "/nonexistent-a:/nonexistent-b",
            "--no-opt",
            "--format",
            "json",
        ])
        .expect("parses");
        let mut out = Vec::new();
        let code = run_to(&args, &mut out).expect("runs");
        assert_eq!(code, ExitCode::from(1));
        let json: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(json["lookup"]["outcome"]["kind"], "fails");
        assert_eq!(json["host"]["path_entries"], serde_json::json!(["/nonexistent-a", "/nonexistent-b"]));
        assert_eq!(
            json["lookup"]["outcome"]["error"],
            "runtime \"io.containerd.nonexistent-shimcompat.v9\" binary not installed \
             \"containerd-shim-nonexistent-shimcompat-v9\": file does not exist"
        );
    }
}
