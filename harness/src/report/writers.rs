//! File writers: each renders the finished report (JSON, JUnit, Markdown appended, HTML, one badge per candidate).
use std::path::PathBuf;

use super::stream::{Reporter, RunEvent};
use super::Report;

/// What a writer renders, and where.
pub enum Writer {
    Json(PathBuf),
    Junit(PathBuf),
    /// Appended to (as `$GITHUB_STEP_SUMMARY` wants).
    Markdown(PathBuf),
    Html(PathBuf),
    /// `<dir>/<candidate>@<line>.json`, shields.io endpoint badges.
    BadgeDir(PathBuf),
}

impl Writer {
    fn write(&self, report: &Report) -> Result<(), String> {
        let failed = |path: &std::path::Path, e: &dyn std::fmt::Display| format!("writing {}: {e}", path.display());
        match self {
            Writer::Json(path) => {
                let json = serde_json::to_vec_pretty(report).map_err(|e| failed(path, &e))?;
                std::fs::write(path, json).map_err(|e| failed(path, &e))
            }
            Writer::Junit(path) => {
                let xml = super::junit::render(report).map_err(|e| failed(path, &e))?;
                std::fs::write(path, xml).map_err(|e| failed(path, &e))
            }
            Writer::Markdown(path) => {
                use std::io::Write;
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .and_then(|mut file| file.write_all(super::markdown::render(report).as_bytes()))
                    .map_err(|e| failed(path, &e))
            }
            Writer::Html(path) => std::fs::write(path, super::html::render(report)).map_err(|e| failed(path, &e)),
            Writer::BadgeDir(dir) => {
                for (index, candidate) in report.candidates.iter().enumerate() {
                    let Some(badge) = super::certify::badge(report, index) else { continue };
                    let path = dir.join(format!("{}@{}.json", candidate.name, candidate.containerd));
                    std::fs::create_dir_all(dir)
                        .and_then(|_| std::fs::write(&path, badge.to_string()))
                        .map_err(|e| failed(&path, &e))?;
                }
                Ok(())
            }
        }
    }

    /// The file it will write (a badge directory: none), to be checked before the run.
    pub fn file(&self) -> Option<&std::path::Path> {
        match self {
            Writer::Json(p) | Writer::Junit(p) | Writer::Markdown(p) | Writer::Html(p) => Some(p),
            Writer::BadgeDir(_) => None,
        }
    }
}

impl Reporter for Writer {
    fn event(&mut self, event: &RunEvent<'_>) -> Result<(), String> {
        match event {
            RunEvent::Finished { report } => self.write(report),
            _ => Ok(()),
        }
    }
}
