//! Latency distributions (hdrhistogram, microseconds) and what the bench reads from /proc about a process.
use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// One operation's distribution, as reported: sample count and percentiles in microseconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Dist {
    pub samples: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub mean_us: u64,
}

/// Histograms by operation name, in the order operations were first recorded.
#[derive(Default)]
pub struct Recorder {
    order: Vec<String>,
    histograms: BTreeMap<String, Histogram<u64>>,
}

impl Recorder {
    pub fn record(&mut self, op: &str, took: Duration) {
        if !self.histograms.contains_key(op) {
            // 1 µs .. 10 min at 3 significant digits: every operation a shim can take without hanging the bench.
            let Ok(histogram) = Histogram::new_with_bounds(1, 600_000_000, 3) else { return };
            self.histograms.insert(op.to_string(), histogram);
            self.order.push(op.to_string());
        }
        if let Some(histogram) = self.histograms.get_mut(op) {
            let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).clamp(1, 600_000_000);
            let _ = histogram.record(micros);
        }
    }

    pub fn merge(&mut self, other: Recorder) {
        for op in other.order {
            if let Some(theirs) = other.histograms.get(&op) {
                match self.histograms.get_mut(&op) {
                    Some(mine) => {
                        let _ = mine.add(theirs);
                    }
                    None => {
                        self.histograms.insert(op.clone(), theirs.clone());
                        self.order.push(op);
                    }
                }
            }
        }
    }

    /// (operation, distribution) in recording order.
    pub fn dists(&self) -> Vec<(String, Dist)> {
        self.order.iter().filter_map(|op| self.histograms.get(op).map(|h| (op.clone(), dist(h)))).collect()
    }
}

fn dist(h: &Histogram<u64>) -> Dist {
    Dist {
        samples: h.len(),
        p50_us: h.value_at_quantile(0.50),
        p90_us: h.value_at_quantile(0.90),
        p99_us: h.value_at_quantile(0.99),
        max_us: h.max(),
        mean_us: h.mean().round() as u64,
    }
}

/// Memory of a process from /proc/<pid>/smaps_rollup, in KiB (None: gone or unreadable).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Memory {
    pub rss_kib: u64,
    pub pss_kib: u64,
}

impl std::ops::AddAssign for Memory {
    fn add_assign(&mut self, other: Memory) {
        self.rss_kib += other.rss_kib;
        self.pss_kib += other.pss_kib;
    }
}

pub fn memory(pid: u32) -> Option<Memory> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some(Memory { rss_kib: field("Rss:")?, pss_kib: field("Pss:")? })
}

/// Open file descriptors of a process.
pub fn fds(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

/// Threads of a process (/proc/<pid>/status).
pub fn threads(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|v| v.trim().parse().ok())
}

/// Every live descendant of `roots` (not the roots), from one walk of /proc.
pub fn descendants(roots: &[u32]) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
            // pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after the last ')'.
            let mut rest = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace()).into_iter().flatten();
            let state = rest.next().unwrap_or("");
            if state == "Z" {
                continue;
            }
            if let Some(ppid) = rest.next().and_then(|p| p.parse::<u32>().ok()) {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut found: Vec<u32> = Vec::new();
    let mut frontier: Vec<u32> = roots.to_vec();
    while let Some(parent) = frontier.pop() {
        for (pid, _) in parent_of.iter().filter(|(_, ppid)| *ppid == parent) {
            if !found.contains(pid) && !roots.contains(pid) {
                found.push(*pid);
                frontier.push(*pid);
            }
        }
    }
    found
}

/// Mount points on the host (lines of /proc/self/mountinfo).
pub fn host_mounts() -> u64 {
    std::fs::read_to_string("/proc/self/mountinfo").map(|t| t.lines().count() as u64).unwrap_or(0)
}

/// Entries in a directory (0 when it does not exist).
pub fn entries(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir).map(|d| d.count() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_ordered_and_counted() {
        let mut recorder = Recorder::default();
        for ms in 1..=100u64 {
            recorder.record("op", Duration::from_millis(ms));
        }
        let (name, dist) = recorder.dists().remove(0);
        assert_eq!(name, "op");
        assert_eq!(dist.samples, 100);
        assert!(dist.p50_us <= dist.p90_us && dist.p90_us <= dist.p99_us && dist.p99_us <= dist.max_us);
        // 3 significant digits: within 0.1 % of the exact value.
        assert!((49_950..=50_050).contains(&dist.p50_us), "{dist:?}");
        assert!((99_900..=100_100).contains(&dist.max_us), "{dist:?}");
    }

    #[test]
    fn merge_adds_samples() {
        let (mut a, mut b) = (Recorder::default(), Recorder::default());
        a.record("x", Duration::from_millis(1));
        b.record("x", Duration::from_millis(3));
        b.record("y", Duration::from_millis(2));
        a.merge(b);
        let dists = a.dists();
        assert_eq!(dists.iter().map(|(n, d)| (n.as_str(), d.samples)).collect::<Vec<_>>(), [("x", 2), ("y", 1)]);
    }

    #[test]
    fn own_process_is_readable() {
        let me = std::process::id();
        let memory = memory(me).expect("smaps_rollup of this process");
        assert!(memory.rss_kib > 0 && memory.pss_kib > 0);
        assert!(fds(me).unwrap_or(0) >= 3);
        assert!(threads(me).unwrap_or(0) >= 1);
    }
}
