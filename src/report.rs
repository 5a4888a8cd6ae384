//! The run report: what a sync run found and did, as JSON (`sync --json`, shape in `shared/interface.md`)
//! and as text for a person. It holds names and counts, never a secret.

use std::fmt::Write as _;

use serde::Serialize;

use crate::cli::exit;
use crate::cloudshell::CallCounts;

/// The outcome of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunResult {
    /// Every group enumerated and every needed import succeeded (or, dry, was planned).
    Ok,
    /// Some groups or users failed; the rest were synced.
    Partial,
    /// The run could not proceed; nothing was written.
    Failed,
    /// A safety limit stopped every write.
    Held,
}

impl RunResult {
    /// The process exit code for this result.
    pub fn exit_code(self) -> u8 {
        match self {
            RunResult::Ok => exit::OK,
            RunResult::Partial => exit::PARTIAL,
            RunResult::Failed => exit::FATAL,
            RunResult::Held => exit::HELD,
        }
    }
}

/// One group's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupStatus {
    /// Nothing was missing, or everything missing was imported.
    Ok,
    /// Dry run: imports planned.
    Planned,
    /// Some members could not be imported.
    Partial,
    /// The group could not be enumerated (or nothing could be imported).
    Failed,
    /// Writes were held by a safety limit.
    Held,
    /// The run was asked to stop before this group's imports were all attempted.
    Skipped,
}

/// A user that could not be imported, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub username: String,
    pub reason: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct GroupReport {
    pub name: String,
    pub status: GroupStatus,
    /// Effective members in the directory.
    pub members: usize,
    /// Members missing in CloudShell before the run.
    pub missing: usize,
    pub imported: usize,
    pub failed: usize,
    /// Why the group failed as a whole.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<&'static str>,
    /// Users this group imports (planned, in a dry run).
    pub planned: Vec<String>,
    pub imported_users: Vec<String>,
    pub failures: Vec<Failure>,
}

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Totals {
    pub members: usize,
    pub missing: usize,
    pub imported: usize,
    pub failed: usize,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct HeldReport {
    pub planned: usize,
    pub limit: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub run_id: String,
    pub result: RunResult,
    pub dry_run: bool,
    pub started_at: String,
    pub duration_ms: u64,
    /// Time spent reading the directory.
    pub directory_ms: u64,
    /// The directory server that served the run (of `ldap.url`'s list).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub directory_url: Option<String>,
    /// The run was asked to stop (SIGTERM) and some imports were not attempted.
    pub interrupted: bool,
    /// Why the run could not proceed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<HeldReport>,
    pub groups: Vec<GroupReport>,
    pub totals: Totals,
    pub api_calls: CallCounts,
}

impl Report {
    /// The report as one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a report always serialises")
    }

    /// The report for a person: one line per group, then the totals.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let mode = if self.dry_run { " (dry run: nothing written)" } else { "" };
        let result = format!("{:?}", self.result).to_lowercase();
        let _ = writeln!(out, "run {}: {result} (exit {}){mode}", self.run_id, self.result.exit_code());
        if let Some(e) = &self.error {
            let _ = writeln!(out, "  error: {e}");
        }
        if let Some(h) = &self.held {
            let _ = writeln!(
                out,
                "  held: {} imports planned, more than sync.max_imports_per_run = {}; nothing was written",
                h.planned, h.limit
            );
        }
        for g in &self.groups {
            let _ = writeln!(
                out,
                "  {:<30} {:<8} members {:>6}  missing {:>5}  imported {:>5}  failed {:>5}",
                format!("{:?}", g.name),
                format!("{:?}", g.status).to_lowercase(),
                g.members,
                g.missing,
                g.imported,
                g.failed
            );
            if let Some(e) = &g.error {
                let _ = writeln!(out, "      error: {e}");
            }
            if self.dry_run && !g.planned.is_empty() {
                let _ = writeln!(out, "      would import: {}", preview(&g.planned));
            }
            for f in g.failures.iter().take(20) {
                let _ = writeln!(out, "      failed {}: {}", f.username, f.reason);
            }
            if g.failures.len() > 20 {
                let _ = writeln!(out, "      ... and {} more failures", g.failures.len() - 20);
            }
        }
        let t = &self.totals;
        let _ = writeln!(
            out,
            "  total: members {}  missing {}  imported {}  failed {}  (group imports {}, user imports {}, {} ms)",
            t.members,
            t.missing,
            t.imported,
            t.failed,
            self.api_calls.import_group,
            self.api_calls.import_user,
            self.duration_ms
        );
        out
    }
}

fn preview(names: &[String]) -> String {
    let shown: Vec<&str> = names.iter().take(10).map(String::as_str).collect();
    if names.len() > 10 { format!("{}, ... ({} in all)", shown.join(", "), names.len()) } else { shown.join(", ") }
}
