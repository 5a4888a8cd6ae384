//! The status file (`status.json` in the state directory): the last run and the next one, for monitoring
//! that reads files. Written atomically (a temp file renamed over the old one), so a reader never sees half.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::report::Report;

pub const FILE_NAME: &str = "status.json";

/// One group's line in the status file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupStatus {
    pub name: String,
    pub status: String,
    pub members: usize,
    pub missing: usize,
    pub imported: usize,
    pub failed: usize,
}

/// One mapped CloudShell group's line in the status file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MembershipStatus {
    pub name: String,
    pub status: String,
    pub members: usize,
    pub added: usize,
    pub removed: usize,
    pub failed: usize,
}

/// The last run, as the status file records it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LastRun {
    pub run_id: String,
    pub started_at: String,
    pub finished_at: String,
    pub result: String,
    pub duration_ms: u64,
    pub imported: usize,
    pub failed: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub groups: Vec<GroupStatus>,
    /// Mapped CloudShell groups (absent without mappings, and in files written before they existed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub memberships: Vec<MembershipStatus>,
    /// The leaver step (absent with `action = "ignore"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leavers: Option<LeaversStatus>,
}

/// The leaver step in the status file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LeaversStatus {
    pub action: String,
    pub status: String,
    pub managed: usize,
    pub leavers: usize,
    pub candidates: usize,
    pub deactivated: usize,
    pub reactivated: usize,
    pub held: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The whole status file.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Status {
    pub last_run: Option<LastRun>,
    /// When a run last ended `ok`.
    pub last_success_at: Option<String>,
    /// When the daemon runs next (absent for a one-shot `sync`).
    pub next_run: Option<String>,
}

impl Status {
    /// The status after `report`, keeping the last success time of `previous`.
    pub fn after(previous: Option<&Status>, report: &Report, next_run: Option<String>) -> Status {
        let finished_at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let ok = report.result == crate::report::RunResult::Ok;
        Status {
            last_success_at: if ok {
                Some(finished_at.clone())
            } else {
                previous.and_then(|p| p.last_success_at.clone())
            },
            last_run: Some(LastRun {
                run_id: report.run_id.clone(),
                started_at: report.started_at.clone(),
                finished_at,
                result: report.result.as_str().to_string(),
                duration_ms: report.duration_ms,
                imported: report.totals.imported,
                failed: report.totals.failed,
                error: report.error.clone(),
                groups: report
                    .groups
                    .iter()
                    .map(|g| GroupStatus {
                        name: g.name.clone(),
                        status: g.status.as_str().to_string(),
                        members: g.members,
                        missing: g.missing,
                        imported: g.imported,
                        failed: g.failed,
                    })
                    .collect(),
                memberships: report
                    .memberships
                    .iter()
                    .map(|m| MembershipStatus {
                        name: m.name.clone(),
                        status: m.status.as_str().to_string(),
                        members: m.members,
                        added: m.added,
                        removed: m.removed,
                        failed: m.failed,
                    })
                    .collect(),
                leavers: report.leavers.as_ref().map(|l| LeaversStatus {
                    action: l.action.to_string(),
                    status: l.status.as_str().to_string(),
                    managed: l.managed,
                    leavers: l.leavers.len(),
                    candidates: l.candidates.len(),
                    deactivated: l.deactivated.len(),
                    reactivated: l.reactivated.len(),
                    held: l.held,
                    skipped: l.skipped.clone(),
                    error: l.error.clone(),
                }),
            }),
            next_run,
        }
    }
}

/// After a run: writes the status that follows `report` into `dir` (logging, not failing, when it cannot)
/// and returns it. `previous` is the last status known (for the last success time); `None` reads it from
/// the file. Both `sync` and the daemon record their runs through here.
pub fn record(dir: &Path, previous: Option<&Status>, report: &Report, next_run: Option<String>) -> Status {
    let from_file;
    let previous = match previous {
        Some(p) => Some(p),
        None => {
            from_file = read(dir);
            from_file.as_ref()
        }
    };
    let status = Status::after(previous, report, next_run);
    match write(dir, &status) {
        Ok(path) => tracing::debug!(path = %path.display(), "status file written"),
        Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "status file not written"),
    }
    status
}

/// Reads the status file in `dir`, if there is a readable one.
pub fn read(dir: &Path) -> Option<Status> {
    let text = std::fs::read_to_string(dir.join(FILE_NAME)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Writes `status` to `dir/status.json` atomically, creating `dir` if needed.
pub fn write(dir: &Path, status: &Status) -> std::io::Result<PathBuf> {
    let path = dir.join(FILE_NAME);
    let mut text = serde_json::to_string_pretty(status).map_err(std::io::Error::other)?;
    text.push('\n');
    crate::state::write_atomic(&path, text.as_bytes())?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_atomically_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let status = Status { last_run: None, last_success_at: Some("2026-11-25T10:00:00Z".into()), next_run: None };
        let path = write(&dir.path().join("state"), &status).unwrap();
        assert_eq!(path, dir.path().join("state/status.json"));
        assert_eq!(read(&dir.path().join("state")), Some(status));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("state")).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp file left behind");
        assert_eq!(read(dir.path()), None);
    }
}
