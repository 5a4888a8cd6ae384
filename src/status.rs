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
    /// What is left of the daily budgets, as the report says (absent when it does not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budgets: Option<crate::report::Budgets>,
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
    /// How the daemon's watch on the directory stood when the run ended (absent without `[schedule] watch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch: Option<crate::monitor::WatchState>,
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
                budgets: report.budgets.clone(),
            }),
            next_run,
            watch: None,
        }
    }
}

/// After a run: writes the status that follows `report` into `dir` (logging, not failing, when it cannot)
/// and returns it. `previous` is the last status known (for the last success time); `None` reads it from
/// the file. `watch`: how the daemon's watch stood as the run ended. Both `sync` and the daemon record their runs through here.
pub fn record(
    dir: &Path,
    previous: Option<&Status>,
    report: &Report,
    next_run: Option<String>,
    watch: Option<crate::monitor::WatchState>,
) -> Status {
    let from_file;
    let previous = match previous {
        Some(p) => Some(p),
        None => {
            // Unusable (damaged, say): the last success time starts over from this run.
            from_file = load(dir).ok();
            from_file.as_ref()
        }
    };
    let status = Status { watch, ..Status::after(previous, report, next_run) };
    match write(dir, &status) {
        Ok(path) => tracing::debug!(path = %path.display(), "status file written"),
        Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "status file not written"),
    }
    status
}

/// How the last run looks to a monitoring check (`cloudshell-ldap-sync status`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Health {
    /// The last run's result was `ok`.
    pub last_run_ok: bool,
    /// The last run finished more than two schedule periods ago (or never finished at all).
    pub stale: bool,
    /// The next run the daemon announced is past due by more than [`overdue_margin`]: no run has finished
    /// since it should have started.
    pub overdue: bool,
    /// When the overdue run was due (the status file's `next_run`), while it is overdue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overdue_since: Option<String>,
    /// Seconds since the last run finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_seconds: Option<i64>,
    /// The schedule's period around then, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period_seconds: Option<i64>,
    /// Seconds since the next run was due, when it is in the past.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_run_due_seconds_ago: Option<i64>,
}

impl Health {
    /// Whether a monitoring check passes: the last run was ok, is not stale, and the next one is not overdue.
    pub fn healthy(&self) -> bool {
        self.last_run_ok && !self.stale && !self.overdue
    }
}

/// How long past its `next_run` a run may go unrecorded before it is overdue: `sync.run_timeout` plus five
/// minutes. The status file is written when a run ends, so while a run is under way its `next_run` is already
/// in the past; a run that started on time has stopped by `run_timeout` (it stops as if asked to), and five
/// minutes cover the calls it finishes on the way out and a late start. Later than that, no run started or
/// the daemon died in one: it is not running to its schedule.
pub fn overdue_margin(run_timeout: std::time::Duration) -> chrono::Duration {
    chrono::Duration::from_std(run_timeout).unwrap_or(chrono::Duration::days(30)) + chrono::Duration::minutes(5)
}

/// Judges `status` at `now` against `schedule`: stale when the last run finished more than two periods ago
/// (the period being the gap between the schedule's two occurrences after that run); overdue when its
/// `next_run` is past by more than [`overdue_margin`] of `run_timeout`.
pub fn assess(
    status: &Status,
    schedule: &crate::schedule::Schedule,
    run_timeout: std::time::Duration,
    now: chrono::DateTime<chrono::Utc>,
) -> Health {
    let parse = |t: &str| chrono::DateTime::parse_from_rfc3339(t).ok().map(|t| t.with_timezone(&chrono::Utc));
    let next_due = status.next_run.as_deref().and_then(parse).filter(|due| *due < now);
    let overdue = next_due.is_some_and(|due| now - due > overdue_margin(run_timeout));
    let overdue_since = status.next_run.clone().filter(|_| overdue);
    let next_run_due_seconds_ago = next_due.map(|due| (now - due).num_seconds());
    let Some(last) = &status.last_run else {
        return Health {
            last_run_ok: false,
            stale: true,
            overdue,
            overdue_since,
            age_seconds: None,
            period_seconds: None,
            next_run_due_seconds_ago,
        };
    };
    let finished = parse(&last.finished_at);
    let period = finished.and_then(|f| {
        let first = schedule.next_after(f)?;
        let second = schedule.next_after(first)?;
        Some(second - first)
    });
    let age = finished.map(|f| now - f);
    let stale = match (age, period) {
        (Some(age), Some(period)) => age > period * 2,
        (Some(_), None) => false, // a schedule that never fires again: nothing to be late for
        (None, _) => true,
    };
    Health {
        last_run_ok: last.result == crate::report::RunResult::Ok.as_str(),
        stale,
        overdue,
        overdue_since,
        age_seconds: age.map(|a| a.num_seconds()),
        period_seconds: period.map(|p| p.num_seconds()),
        next_run_due_seconds_ago,
    }
}

/// The status for a person: the last run, its groups, the last success, the next run, and the verdict.
pub fn to_text(status: &Status, health: &Health) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    match &status.last_run {
        None => {
            let _ = writeln!(out, "last run: none recorded");
        }
        Some(r) => {
            let ago = health.age_seconds.map(|s| format!(" ({} ago)", human(s))).unwrap_or_default();
            let _ = writeln!(
                out,
                "last run {}: {}, finished {}{ago}, {} imported, {} failed, {} ms",
                r.run_id, r.result, r.finished_at, r.imported, r.failed, r.duration_ms
            );
            if let Some(e) = &r.error {
                let _ = writeln!(out, "  error: {e}");
            }
            for g in &r.groups {
                let _ = writeln!(
                    out,
                    "  group {:?}: {}, members {}, missing {}, imported {}, failed {}",
                    g.name, g.status, g.members, g.missing, g.imported, g.failed
                );
            }
            for m in &r.memberships {
                let _ = writeln!(
                    out,
                    "  cloudshell group {:?}: {}, members {}, added {}, removed {}, failed {}",
                    m.name, m.status, m.members, m.added, m.removed, m.failed
                );
            }
            if let Some(l) = &r.leavers {
                let _ = writeln!(
                    out,
                    "  leavers ({}): {}, managed {}, leavers {}, deactivated {}, reactivated {}{}",
                    l.action,
                    l.status,
                    l.managed,
                    l.leavers,
                    l.deactivated,
                    l.reactivated,
                    l.skipped.as_deref().or(l.error.as_deref()).map(|w| format!(" ({w})")).unwrap_or_default()
                );
            }
            if let Some(b) = &r.budgets {
                let _ = writeln!(out, "  daily budgets: {}", b.to_text());
            }
        }
    }
    let _ = writeln!(out, "last success: {}", status.last_success_at.as_deref().unwrap_or("never"));
    let due = health.next_run_due_seconds_ago.map(|s| format!(" (due {} ago)", human(s))).unwrap_or_default();
    let _ = writeln!(out, "next run: {}{due}", status.next_run.as_deref().unwrap_or("not scheduled (one-shot sync)"));
    if let Some(w) = &status.watch {
        let state = match (w.up, &w.reason) {
            (true, _) => "up".to_string(),
            (false, reason) => format!("DOWN ({})", reason.as_deref().unwrap_or("no reason given")),
        };
        let _ = writeln!(out, "watch: {state} since {}", w.since);
    }
    // Stale keeps its verdict (monitoring may match on it); an overdue run is named after it, or on its own.
    let overdue = health.overdue_since.as_ref().map(|since| {
        format!(
            "overdue since {since}, when the next run was due, and no run has finished since: is the daemon \
             running? (systemctl status cloudshell-ldap-sync)"
        )
    });
    let verdict = match (health.last_run_ok, health.stale, overdue) {
        (_, true, overdue) => format!(
            "STALE: no run finished in the last two schedule periods{}{}",
            health.period_seconds.map(|p| format!(" ({} each)", human(p))).unwrap_or_default(),
            overdue.map(|o| format!("; {o}")).unwrap_or_default()
        ),
        (_, false, Some(overdue)) => format!("OVERDUE: {overdue}"),
        (true, false, None) => "OK".to_string(),
        (false, false, None) => "NOT OK: the last run did not end ok".to_string(),
    };
    let _ = writeln!(out, "state: {verdict}");
    out
}

/// A duration in seconds, for a person.
fn human(seconds: i64) -> String {
    match seconds.abs() {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86_400),
    }
}

/// Why the status file cannot be used: each says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(
        "no status file {}: no run has finished yet, or [monitor] state_directory points elsewhere",
        .0.display()
    )]
    Missing(PathBuf),
    #[error("cannot read the status file {}: {source}{}", path.display(), unreadable_hint(source))]
    Unreadable { path: PathBuf, source: std::io::Error },
    #[error("the status file {} is not one this version reads ({source}): the next run writes it again", path.display())]
    Corrupt { path: PathBuf, source: serde_json::Error },
}

fn unreadable_hint(e: &std::io::Error) -> &'static str {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        " (the shipped units keep their state directory readable by root alone: run this as root, or watch \
         /healthz or /metrics from [monitor] listen)"
    } else {
        ""
    }
}

/// Reads `dir/status.json`, saying why when it cannot.
pub fn load(dir: &Path) -> Result<Status, ReadError> {
    let path = dir.join(FILE_NAME);
    let text = match crate::files::read_text_if_present(&path, crate::files::STATE_MAX) {
        Ok(Some(text)) => text,
        Ok(None) => return Err(ReadError::Missing(path)),
        Err(source) => return Err(ReadError::Unreadable { path, source }),
    };
    serde_json::from_str(&text).map_err(|source| ReadError::Corrupt { path, source })
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
    use crate::schedule::Schedule;

    #[test]
    fn a_status_file_that_cannot_be_used_says_why() {
        // Before, all three were "no readable status file: no run has finished yet".
        let dir = tempfile::tempdir().unwrap();
        let e = load(dir.path()).unwrap_err();
        assert!(matches!(e, ReadError::Missing(_)) && e.to_string().contains("no run has finished yet"), "{e}");
        std::fs::write(dir.path().join(FILE_NAME), "{").unwrap();
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("status.json is not one this version reads") && e.contains("next run writes"), "{e}");
        // Root reads anything, so the refusal a monitoring user meets is made up here.
        let path = dir.path().join(FILE_NAME);
        let denied = ReadError::Unreadable { path: path.clone(), source: std::io::ErrorKind::PermissionDenied.into() };
        assert!(denied.to_string().contains("run this as root, or watch /healthz"), "{denied}");
        let other = ReadError::Unreadable { path, source: std::io::Error::other("disk on fire") };
        assert!(other.to_string().ends_with("disk on fire"), "{other}");
    }

    fn status(result: &str, finished_at: &str) -> Status {
        Status {
            last_run: Some(LastRun {
                run_id: "r1".into(),
                started_at: finished_at.into(),
                finished_at: finished_at.into(),
                result: result.into(),
                duration_ms: 1200,
                imported: 3,
                failed: 0,
                error: None,
                groups: vec![],
                memberships: vec![],
                leavers: None,
                budgets: None,
            }),
            last_success_at: Some(finished_at.into()),
            next_run: Some("2026-11-30T07:15:00Z".into()),
            watch: None,
        }
    }

    const HOUR: std::time::Duration = std::time::Duration::from_secs(3600);

    fn at(s: &str) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&chrono::Utc)
    }

    #[test]
    fn a_run_is_stale_after_two_schedule_periods_and_unhealthy_unless_ok() {
        let every_15 = Schedule::parse("0 */15 * * * *", "UTC").unwrap();
        let s = status("ok", "2026-11-30T07:00:00Z");
        let h = assess(&s, &every_15, HOUR, at("2026-11-30T07:29:00Z"));
        assert_eq!((h.stale, h.healthy(), h.age_seconds, h.period_seconds), (false, true, Some(1740), Some(900)));
        let h = assess(&s, &every_15, HOUR, at("2026-11-30T07:31:00Z"));
        assert!(h.stale && !h.healthy(), "31 min > 2 x 15 min");
        let h = assess(&status("partial", "2026-11-30T07:00:00Z"), &every_15, HOUR, at("2026-11-30T07:01:00Z"));
        assert_eq!((h.stale, h.healthy()), (false, false));
        let never = Status::default();
        assert!(assess(&never, &every_15, HOUR, at("2026-11-30T07:01:00Z")).stale);
    }

    #[test]
    fn a_next_run_past_due_by_more_than_the_run_timeout_and_five_minutes_is_overdue() {
        // Once a day at 07:00; the last run finished at 07:00 and announced the next for 07:00 the day after.
        let daily = Schedule::parse("0 0 7 * * *", "UTC").unwrap();
        let mut s = status("ok", "2026-11-30T07:00:00Z");
        s.next_run = Some("2026-12-01T07:00:00Z".into());
        // A run under way may take up to the run timeout (an hour here) before it records itself.
        let h = assess(&s, &daily, HOUR, at("2026-12-01T08:05:00Z"));
        assert_eq!((h.overdue, h.healthy(), h.next_run_due_seconds_ago), (false, true, Some(3900)));
        let text = to_text(&s, &h);
        assert!(text.contains("next run: 2026-12-01T07:00:00Z (due 65 min ago)") && text.ends_with("state: OK\n"));
        // Past that, nothing started or the daemon died in the run: overdue, a day and more before it is stale.
        let h = assess(&s, &daily, HOUR, at("2026-12-01T08:06:00Z"));
        assert_eq!((h.overdue, h.stale, h.healthy()), (true, false, false));
        assert_eq!(h.overdue_since.as_deref(), Some("2026-12-01T07:00:00Z"));
        let text = to_text(&s, &h);
        assert!(text.contains("state: OVERDUE: overdue since 2026-12-01T07:00:00Z"), "{text}");
        // Before it is due, and without a next run (one-shot syncs), nothing is overdue.
        assert!(!assess(&s, &daily, HOUR, at("2026-12-01T06:00:00Z")).overdue);
        s.next_run = None;
        assert!(!assess(&s, &daily, HOUR, at("2026-12-09T06:00:00Z")).overdue);
        assert_eq!(overdue_margin(HOUR), chrono::Duration::minutes(65));
    }

    #[test]
    fn the_text_says_when_what_and_the_verdict() {
        let every_15 = Schedule::parse("0 */15 * * * *", "UTC").unwrap();
        let s = status("ok", "2026-11-30T07:00:00Z");
        let text = to_text(&s, &assess(&s, &every_15, HOUR, at("2026-11-30T07:05:00Z")));
        assert!(text.contains("last run r1: ok, finished 2026-11-30T07:00:00Z (5 min ago), 3 imported"), "{text}");
        assert!(text.contains("next run: 2026-11-30T07:15:00Z") && text.ends_with("state: OK\n"), "{text}");
        let text = to_text(&s, &assess(&s, &every_15, HOUR, at("2026-11-30T09:00:00Z")));
        assert!(text.contains("STALE") && text.contains("15 min each"), "{text}");
        assert!(text.contains("; overdue since 2026-11-30T07:15:00Z"), "stale and overdue: {text}");
    }

    #[test]
    fn the_daily_budgets_left_are_in_the_file_and_the_text() {
        use crate::report::{Budget, Budgets};
        let every_15 = Schedule::parse("0 */15 * * * *", "UTC").unwrap();
        let mut s = status("held", "2026-11-30T07:00:00Z");
        let budget = |last_24h, limit, by: &str, managed_active| Budget {
            last_24h,
            limit,
            left: limit - last_24h,
            by: by.into(),
            managed_active,
        };
        s.last_run.as_mut().unwrap().budgets = Some(Budgets {
            deactivations: Some(budget(7, 10, "sync.leavers.max_percent_per_day", Some(50))),
            removals: Some(budget(3, 500, "sync.max_removals_per_day", None)),
        });
        let text = to_text(&s, &assess(&s, &every_15, HOUR, at("2026-11-30T07:05:00Z")));
        assert!(
            text.contains(
                "  daily budgets: deactivations 3 of 10 left (7 in the last 24 h; sync.leavers.max_percent_per_day, \
                 50 managed users active in CloudShell); removals from CloudShell groups 497 of 500 left (3 in the \
                 last 24 h; sync.max_removals_per_day)\n"
            ),
            "{text}"
        );
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &s).unwrap();
        assert_eq!(load(dir.path()).unwrap(), s, "read back whole");
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap()).unwrap();
        assert_eq!(json["last_run"]["budgets"]["deactivations"]["left"], 3, "{json}");
        assert!(json["last_run"]["budgets"]["removals"].get("managed_active").is_none(), "{json}");
    }

    #[test]
    fn the_watch_as_the_run_ended_is_in_the_file_and_the_text() {
        use crate::monitor::WatchState;
        let every_15 = Schedule::parse("0 */15 * * * *", "UTC").unwrap();
        let mut s = status("ok", "2026-11-30T07:00:00Z");
        let now = at("2026-11-30T07:05:00Z");
        assert!(!to_text(&s, &assess(&s, &every_15, HOUR, now)).contains("watch:"), "none without a watch");
        let down = Some("the connection was closed".to_string());
        s.watch = Some(WatchState { up: false, reason: down, since: "2026-11-30T06:58:00Z".into() });
        let text = to_text(&s, &assess(&s, &every_15, HOUR, now));
        assert!(text.contains("watch: DOWN (the connection was closed) since 2026-11-30T06:58:00Z\n"), "{text}");
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &s).unwrap();
        assert_eq!(load(dir.path()).unwrap(), s, "read back whole");
        s.watch = Some(WatchState { up: true, reason: None, since: "2026-11-30T07:01:00Z".into() });
        let text = to_text(&s, &assess(&s, &every_15, HOUR, now));
        assert!(text.contains("watch: up since 2026-11-30T07:01:00Z\n"), "{text}");
    }

    #[test]
    fn writes_atomically_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let status = Status {
            last_run: None,
            last_success_at: Some("2026-11-25T10:00:00Z".into()),
            next_run: None,
            watch: None,
        };
        let path = write(&dir.path().join("state"), &status).unwrap();
        assert_eq!(path, dir.path().join("state/status.json"));
        assert_eq!(load(&dir.path().join("state")).unwrap(), status);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("state")).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp file left behind");
        assert!(matches!(load(dir.path()), Err(ReadError::Missing(_))));
    }
}
