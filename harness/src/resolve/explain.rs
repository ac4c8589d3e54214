//! Puts the Docker and containerd models together for one name on one host: verdicts per version, binary names,
//! the lookup order with what is found where, the file that would run, and which files shadow which.
use std::fmt::Write as _;

use serde::Serialize;

use super::containerd::{self, Env, Outcome, Place, Plan, Probe, Probed, Resolution};
use super::docker::{self, Verdict};
use super::gopath;

/// How a version was chosen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Selection {
    /// Given on the command line.
    Flag,
    /// Read from the installed daemon's `--version`.
    Installed { output: String },
    /// Nothing installed (or readable): the newest release line is assumed.
    Newest { reason: String },
}

impl Selection {
    fn describe(&self) -> String {
        match self {
            Selection::Flag => "chosen on the command line".to_owned(),
            Selection::Installed { output } => format!("installed: {}", output.trim()),
            Selection::Newest { reason } => format!("newest assumed: {reason}"),
        }
    }
}

/// The containerd process the lookup is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostFacts {
    /// containerd's working directory.
    pub cwd: String,
    /// The PATH containerd inherits.
    pub inherited_path: String,
    /// containerd's opt plugin path (its `bin` goes first on PATH); `None`: plugin disabled.
    pub opt_dir: Option<String>,
    /// containerd's PATH entries after start-up.
    pub path_entries: Vec<String>,
    /// The containerd binary as found or given.
    pub containerd_binary: Option<String>,
    /// Its directory as containerd's `os.Executable()` sees it (symlinks resolved).
    pub containerd_dir: Option<String>,
}

/// What to explain.
pub struct Request<'a> {
    pub name: &'a str,
    pub docker_version: docker::Version,
    pub docker_selection: Selection,
    pub containerd_version: containerd::Version,
    pub containerd_selection: Selection,
    pub cwd: String,
    pub inherited_path: String,
    pub opt_dir: Option<String>,
    pub containerd_binary: Option<String>,
    pub containerd_dir: Option<String>,
    pub probe: &'a dyn Probe,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DockerRow {
    pub version: docker::Version,
    pub verdict: Verdict,
    pub selected: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BinaryNameRow {
    pub version: containerd::Version,
    pub plan: Plan,
    /// The binary name searched for, if the version searches by name.
    pub binary_name: Option<String>,
    /// One line on what this version does with the name.
    pub summary: String,
    pub selected: bool,
}

/// A step of the lookup, named for display.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepRef {
    /// Index into `lookup.steps`.
    pub step: usize,
    pub place: String,
    pub path: String,
}

/// `winner` comes first in containerd's order and is taken; `shadowed` would have been taken without it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shadow {
    pub winner: StepRef,
    pub shadowed: StepRef,
    /// Both paths are the same file (a symlink or hard link, e.g. /bin → /usr/bin): no real shadowing.
    pub same_file: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    pub name: String,
    pub docker_version: docker::Version,
    pub docker_selection: Selection,
    pub docker: Vec<DockerRow>,
    pub containerd_version: containerd::Version,
    pub containerd_selection: Selection,
    pub binary_names: Vec<BinaryNameRow>,
    pub host: HostFacts,
    pub lookup: Resolution,
    pub shadowing: Vec<Shadow>,
    pub warnings: Vec<String>,
    pub notes: Vec<String>,
}

impl Explanation {
    /// containerd (the selected version) would start an executable file for this name.
    pub fn starts_a_binary(&self) -> bool {
        matches!(self.lookup.outcome, Outcome::Runs { exec_error: None, .. })
    }
}

pub fn explain(request: &Request<'_>) -> Explanation {
    let env = Env {
        cwd: request.cwd.clone(),
        path: request.inherited_path.clone(),
        opt_dir: request.opt_dir.clone(),
        containerd_dir: request.containerd_dir.clone(),
        probe: request.probe,
    };
    let lookup = containerd::lookup(request.name, request.containerd_version, &env);
    let docker_rows: Vec<DockerRow> = docker::Version::ALL
        .iter()
        .map(|&version| DockerRow {
            version,
            verdict: docker::gate(request.name, version),
            selected: version == request.docker_version,
        })
        .collect();
    let binary_names = containerd::Version::ALL
        .iter()
        .map(|&version| binary_name_row(request.name, version, version == request.containerd_version))
        .collect();
    let shadowing = shadowing(&lookup, request.probe);
    let mut explanation = Explanation {
        name: request.name.to_owned(),
        docker_version: request.docker_version,
        docker_selection: request.docker_selection.clone(),
        docker: docker_rows,
        containerd_version: request.containerd_version,
        containerd_selection: request.containerd_selection.clone(),
        binary_names,
        host: HostFacts {
            cwd: request.cwd.clone(),
            inherited_path: request.inherited_path.clone(),
            opt_dir: request.opt_dir.clone(),
            path_entries: env.path_entries(),
            containerd_binary: request.containerd_binary.clone(),
            containerd_dir: request.containerd_dir.clone(),
        },
        lookup,
        shadowing,
        warnings: Vec::new(),
        notes: Vec::new(),
    };
    add_warnings(&mut explanation);
    explanation
}

fn binary_name_row(name: &str, version: containerd::Version, selected: bool) -> BinaryNameRow {
    let plan = containerd::plan(name, version);
    let (binary_name, summary) = match &plan {
        Plan::Empty => (None, "refused: no runtime name".to_owned()),
        Plan::AbsolutePath { path } => (None, format!("absolute path: runs {path} as given")),
        Plan::LegacyV1 { shim } => (None, format!("legacy v1 runtime plugin: runs `{shim}` from PATH")),
        Plan::Search { binary_name, name_dir } if name_dir == "." => (Some(binary_name.clone()), binary_name.clone()),
        Plan::Search { binary_name, name_dir } => {
            (Some(binary_name.clone()), format!("{binary_name} (first looked for under `{name_dir}/`)"))
        }
        Plan::Invalid { error } => (None, format!("refused: {error}")),
    };
    BinaryNameRow { version, plan, binary_name, summary, selected }
}

fn step_ref(resolution: &Resolution, step: usize) -> StepRef {
    let entry = &resolution.steps[step];
    StepRef { step, place: entry.place.describe(), path: entry.path.clone() }
}

fn shadowing(resolution: &Resolution, _probe: &dyn Probe) -> Vec<Shadow> {
    let Outcome::Runs { step: winner, .. } = resolution.outcome else {
        return Vec::new();
    };
    let winner_id = resolution.steps[winner].found.id();
    resolution
        .steps
        .iter()
        .enumerate()
        .skip(winner + 1)
        .filter(|(_, step)| step.accepts && step.found.exists() && is_file_step(&step.place))
        .map(|(index, step)| Shadow {
            winner: step_ref(resolution, winner),
            shadowed: step_ref(resolution, index),
            same_file: winner_id.is_some() && winner_id == step.found.id()
                || gopath::clean(&resolution.steps[winner].path) == gopath::clean(&step.path),
        })
        .collect()
}

fn is_file_step(place: &Place) -> bool {
    !matches!(place, Place::Cache | Place::WorkingDirectoryFallback)
}

fn add_warnings(explanation: &mut Explanation) {
    let lookup = &explanation.lookup;
    let mut warnings = Vec::new();
    let mut notes = Vec::new();

    if let Outcome::Runs { path, step, exec_error: Some(error) } = &lookup.outcome {
        let place = lookup.steps[*step].place.describe();
        let what = lookup.steps[*step].found.describe();
        warnings.push(format!(
            "containerd would pick {path} ({what}) from {place}: that step only checks that something exists, and the \
             exec fails: {error}"
        ));
    }
    for shadow in explanation.shadowing.iter().filter(|shadow| !shadow.same_file) {
        warnings.push(format!(
            "{} ({}) wins; {} ({}) is shadowed",
            shadow.winner.path, shadow.winner.place, shadow.shadowed.path, shadow.shadowed.place
        ));
    }
    for step in &lookup.steps {
        let skipped_by_lookpath = matches!(step.place, Place::PathEntry { .. } | Place::LookPathRelative)
            && step.found.exists()
            && !step.accepts;
        if skipped_by_lookpath {
            warnings.push(format!(
                "{} ({}) is present but LookPath skips it: {}",
                step.path,
                step.place.describe(),
                match step.found {
                    Probed::Directory { .. } => "a directory",
                    _ => "not executable",
                }
            ));
        }
    }

    let selected_docker = explanation.docker.iter().find(|row| row.selected).map(|row| row.verdict.clone());
    if let Some(verdict) = &selected_docker {
        match verdict {
            Verdict::Implicit { shim } => {
                if let Some(binary) =
                    containerd::shim_binary_name(shim, explanation.containerd_version, gopath::Platform::Linux)
                {
                    if binary == "containerd-shim-runc-v2" && shim != docker::RUNC_V2_SHIM {
                        notes.push(format!(
                            "dockerd passes {shim} with no runtime options: it runs the runc v2 shim without Docker's \
                             runc options (no SystemdCgroup, no Root; runc comes from the shim's PATH)"
                        ));
                    }
                }
                if let Some(error) = lookup.wrapped_error() {
                    warnings.push(format!(
                        "dockerd {} accepts the name but containerd {} would fail: failed to create task for \
                         container: {error}",
                        explanation.docker_version, explanation.containerd_version
                    ));
                }
            }
            Verdict::Stock { shim } if shim != &explanation.name => notes.push(format!(
                "`{}` is a Docker alias: containerd receives {shim}; the lookup above is for the name itself, as a \
                 containerd client such as ctr would pass it",
                explanation.name
            )),
            _ => {}
        }
    }
    if !matches!(lookup.plan, Plan::AbsolutePath { .. } | Plan::Empty) {
        notes.push(
            "containerd caches the first resolution of each binary name for its lifetime: if these files changed \
             since containerd started, a running containerd may still use its earlier answer"
                .to_owned(),
        );
    }
    notes.extend(lookup.notes.iter().cloned());
    explanation.warnings = warnings;
    explanation.notes = notes;
}

/// The human-readable form printed by `shimcompat resolve`.
pub fn render_text(explanation: &Explanation) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write_text(explanation, &mut out);
    out
}

fn write_text(e: &Explanation, out: &mut String) -> std::fmt::Result {
    writeln!(out, "runtime name {}", gopath::quote(&e.name))?;
    writeln!(out)?;
    writeln!(
        out,
        "Docker, `docker run --runtime {}` (selected: dockerd {}, {}):",
        e.name,
        e.docker_version,
        e.docker_selection.describe()
    )?;
    for row in &e.docker {
        let marker = if row.selected { "*" } else { " " };
        writeln!(out, "  {marker} {:<6} {:<9} {}", row.version.label(), row.verdict.short(), row.verdict.describe())?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "containerd, binary name (selected: containerd {}, {}):",
        e.containerd_version,
        e.containerd_selection.describe()
    )?;
    for row in &e.binary_names {
        let marker = if row.selected { "*" } else { " " };
        writeln!(out, "  {marker} {:<4} {}", row.version.label(), row.summary)?;
    }
    writeln!(out)?;
    writeln!(out, "containerd {} on this host:", e.containerd_version)?;
    writeln!(out, "  working directory  {}", e.host.cwd)?;
    let entries: Vec<String> = e
        .host
        .path_entries
        .iter()
        .map(|entry| if entry.is_empty() { "(empty = .)".to_owned() } else { entry.clone() })
        .collect();
    writeln!(
        out,
        "  PATH               {}",
        if entries.is_empty() { "(empty)".to_owned() } else { entries.join(":") }
    )?;
    if let Some(opt) = &e.host.opt_dir {
        writeln!(out, "                     (first entry added by containerd's opt plugin, path {opt})")?;
    }
    match (&e.host.containerd_binary, &e.host.containerd_dir) {
        (Some(binary), Some(dir)) => writeln!(out, "  containerd binary  {binary} (its directory: {dir})")?,
        (None, Some(dir)) => writeln!(out, "  containerd dir     {dir}")?,
        _ => writeln!(out, "  containerd binary  not found (pass --containerd-binary)")?,
    }
    if !e.lookup.steps.is_empty() {
        writeln!(out, "  order:")?;
        let chosen = match e.lookup.outcome {
            Outcome::Runs { step, .. } => Some(step),
            Outcome::Fails { .. } => None,
        };
        for (index, step) in e.lookup.steps.iter().enumerate() {
            let is_chosen = chosen == Some(index);
            let marker = if is_chosen { "->" } else { "  " };
            let suffix = if is_chosen {
                "  <- chosen"
            } else if !step.reached {
                "  (not reached)"
            } else {
                ""
            };
            writeln!(out, "  {marker} {:>2}. {}", index + 1, step.place.describe())?;
            writeln!(out, "         {}: {}{suffix}", step.path, step.found.describe())?;
        }
    }
    match &e.lookup.outcome {
        Outcome::Runs { path, exec_error: None, .. } => writeln!(out, "  result: runs {path}")?,
        Outcome::Runs { path, exec_error: Some(error), .. } => {
            writeln!(out, "  result: tries to run {path}, which fails: {error}")?
        }
        Outcome::Fails { .. } => {
            let error = e.lookup.wrapped_error().unwrap_or_default();
            writeln!(out, "  result: refused: {error}")?
        }
    }
    writeln!(out)?;
    let (aliases, real): (Vec<&Shadow>, Vec<&Shadow>) = e.shadowing.iter().partition(|shadow| shadow.same_file);
    if real.is_empty() {
        writeln!(out, "shadowing: none")?;
    } else {
        writeln!(out, "shadowing:")?;
        // One line per shadowed file, however many paths reach it (e.g. /usr/bin and /bin on merged-/usr systems).
        let mut groups: Vec<(String, Vec<&Shadow>)> = Vec::new();
        for shadow in &real {
            let key = match e.lookup.steps[shadow.shadowed.step].found.id() {
                Some((device, inode)) => format!("{device}:{inode}"),
                None => shadow.shadowed.path.clone(),
            };
            match groups.iter_mut().find(|(existing, _)| *existing == key) {
                Some((_, members)) => members.push(shadow),
                None => groups.push((key, vec![shadow])),
            }
        }
        for (_, members) in groups {
            let first = members[0];
            let reached: Vec<String> =
                members.iter().map(|m| format!("{} ({})", m.shadowed.path, m.shadowed.place)).collect();
            writeln!(
                out,
                "  {} ({}) wins; shadowed: {}",
                first.winner.path,
                first.winner.place,
                reached.join(", also as ")
            )?;
        }
    }
    for alias in aliases {
        writeln!(out, "  (also reachable, same file: {} via {})", alias.shadowed.path, alias.shadowed.place)?;
    }
    let shadow_lines: Vec<&String> = e.warnings.iter().filter(|w| !w.contains(" is shadowed")).collect();
    if !shadow_lines.is_empty() {
        writeln!(out)?;
        writeln!(out, "warnings:")?;
        for warning in shadow_lines {
            writeln!(out, "  - {warning}")?;
        }
    }
    if !e.notes.is_empty() {
        writeln!(out)?;
        writeln!(out, "notes:")?;
        for note in &e.notes {
            writeln!(out, "  - {note}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::containerd::FakeFs;

    fn request<'a>(name: &'a str, fs: &'a FakeFs) -> Request<'a> {
        Request {
            name,
            docker_version: docker::Version::V28Plus,
            docker_selection: Selection::Newest { reason: "dockerd not found".into() },
            containerd_version: containerd::Version::V1_6,
            containerd_selection: Selection::Flag,
            cwd: "/".into(),
            inherited_path: "/usr/local/bin:/usr/bin:/bin".into(),
            opt_dir: Some("/opt/containerd".into()),
            containerd_binary: Some("/usr/bin/containerd".into()),
            containerd_dir: Some("/usr/bin".into()),
            probe: fs,
        }
    }

    #[test]
    fn cwd_shadows_usr_bin() {
        let fs = FakeFs::new()
            .exe("/usr/bin/containerd-shim-runc-v2")
            .alias("/bin/containerd-shim-runc-v2", "/usr/bin/containerd-shim-runc-v2")
            .exe("/containerd-shim-runc-v2");
        let e = explain(&request("io.containerd.runc.v2", &fs));
        assert_eq!(e.lookup.chosen(), Some("/containerd-shim-runc-v2"));
        let real: Vec<&Shadow> = e.shadowing.iter().filter(|s| !s.same_file).collect();
        assert_eq!(real.len(), 3, "{:#?}", e.shadowing);
        assert!(real.iter().all(|s| s.winner.path == "/containerd-shim-runc-v2"));
        assert!(real.iter().any(|s| s.shadowed.path == "/usr/bin/containerd-shim-runc-v2"));
        let text = render_text(&e);
        assert!(
            text.contains(
                "/containerd-shim-runc-v2 (containerd's working directory) wins; shadowed: /usr/bin/containerd-shim-runc-v2 \
                 (PATH[2] /usr/bin), also as /bin/containerd-shim-runc-v2 (PATH[3] /bin), also as \
                 /usr/bin/containerd-shim-runc-v2 (next to the containerd binary)"
            ),
            "{text}"
        );
        assert!(e.starts_a_binary());
    }

    #[test]
    fn same_file_through_symlinked_dirs_is_not_shadowing() {
        let fs = FakeFs::new()
            .exe("/usr/bin/containerd-shim-runc-v2")
            .alias("/bin/containerd-shim-runc-v2", "/usr/bin/containerd-shim-runc-v2");
        let e = explain(&request("io.containerd.runc.v2", &fs));
        assert_eq!(e.lookup.chosen(), Some("/usr/bin/containerd-shim-runc-v2"));
        assert!(e.shadowing.iter().all(|s| s.same_file), "{:#?}", e.shadowing);
        assert!(!e.warnings.iter().any(|w| w.contains("is shadowed")));
    }

    #[test]
    fn non_executable_in_cwd_breaks_the_real_shim() {
        let fs = FakeFs::new().file("/containerd-shim-kata-v2", false).exe("/usr/local/bin/containerd-shim-kata-v2");
        let e = explain(&request("io.containerd.kata.v2", &fs));
        assert!(!e.starts_a_binary());
        assert!(e.warnings.iter().any(|w| w.contains("only checks that something exists")), "{:#?}", e.warnings);
        assert!(e
            .warnings
            .iter()
            .any(|w| w.contains("/usr/local/bin/containerd-shim-kata-v2") && w.contains("shadowed")));
    }

    #[test]
    fn docker_and_binary_rows() {
        let fs = FakeFs::new();
        let e = explain(&request(".v2", &fs));
        let verdicts: Vec<&str> = e.docker.iter().map(|row| row.verdict.short()).collect();
        assert_eq!(verdicts, ["rejected", "implicit", "rejected", "rejected"]);
        assert_eq!(e.binary_names[0].binary_name.as_deref(), Some("containerd-shim--v2"));
        assert_eq!(e.binary_names[1].binary_name, None);
        let json = serde_json::to_value(&e).expect("serializes");
        assert_eq!(json["docker"][1]["version"], "23-24");
        assert_eq!(json["lookup"]["outcome"]["kind"], "fails");
    }
}
