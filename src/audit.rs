//! The audit rows of a finished run's non-destructive writes and of its holds, read from its report: the
//! group imports, the users they imported (or failed to), the additions to mapped CloudShell groups, and one
//! row per safety limit that held writes, and one per user whose deactivation or removal from a CloudShell group
//! a second read of the directory did not confirm (few: only users read in a group again). Pure: it reads the report and writes nothing.
//!
//! It must not produce rows for deactivations, reactivations or removals from CloudShell groups, nor for
//! their failures: those are recorded through intents written around each call, so a crash between the call
//! and the report cannot lose them. Every reason and result is in words for an operator reading one person's
//! `history` ("why do I have access?", "why was I not deactivated?").

use std::collections::HashSet;

use crate::report::second_read;
use crate::report::{
    DisabledReport, Failure, GroupReport, GroupStatus, HeldReport, LeaversReport, MembershipReport, ProtectedLine,
    Report, SHRINK_GUARD,
};
use crate::state::db::{Action, AuditRow};
use crate::username::Username;

/// The audit rows of `report`'s writes and holds, each with its run id and `at` (RFC 3339, UTC). A dry run
/// wrote nothing: no rows. A run whose every write was held by the import limit has one row, its hold. A hold
/// is one row however many users it concerns: a held mass departure repeats every run, and must not write
/// thousands of rows each time.
pub fn rows(report: &Report, at: &str) -> Vec<AuditRow> {
    if report.dry_run {
        return Vec::new();
    }
    let mut rows = Rows { run_id: &report.run_id, at, rows: Vec::new() };
    if let Some(held) = &report.held {
        rows.held(None, every_write_held(held));
        return rows.rows;
    }
    for g in &report.groups {
        rows.group(g);
    }
    if let Some(held) = &report.removals_held {
        rows.held(None, removals_held(held));
    }
    for m in &report.memberships {
        rows.membership(m);
    }
    if let Some(l) = &report.leavers {
        rows.leavers(l);
    }
    if let Some(d) = &report.disabled_accounts {
        rows.disabled(d);
    }
    if !report.identity_changed.is_empty() {
        let why = format!(
            "the configuration identifies users differently from the one that made the state database ({}); \
             accept with cloudshell-ldap-sync accept-identity",
            report.identity_changed.join("; ")
        );
        rows.held(None, why);
    }
    rows.rows
}

/// The rows so far, with what every row carries.
struct Rows<'a> {
    run_id: &'a str,
    at: &'a str,
    rows: Vec<AuditRow>,
}

impl Rows<'_> {
    fn push(&mut self, action: Action, username: Option<&str>, group: Option<&str>, reason: String, result: String) {
        self.rows.push(AuditRow {
            run_id: self.run_id.to_string(),
            at: self.at.to_string(),
            action,
            username: username.map(str::to_string),
            group: group.map(str::to_string),
            reason,
            result,
        });
    }

    fn held(&mut self, group: Option<&str>, reason: String) {
        self.push(Action::Held, None, group, reason, "held".to_string());
    }

    /// A directory group: its hold by the shrink guard, or its import and the users it imported.
    fn group(&mut self, g: &GroupReport) {
        if g.status == GroupStatus::Held {
            if g.error_kind == Some(SHRINK_GUARD) {
                let why = g.error.clone().unwrap_or_else(|| "held by the shrink guard".to_string());
                self.held(Some(&g.name), why);
            }
            return;
        }
        // Only the users this group was to import were attempted: the other failures (ambiguous usernames)
        // are no import, and repeat every run whether or not the user is in CloudShell.
        let planned = usernames(&g.planned);
        let failures: Vec<&Failure> = g.failures.iter().filter(|f| planned.contains(&f.username)).collect();
        if let Some(result) = import_result(g, &failures) {
            self.push(Action::GroupImported, None, Some(&g.name), missing(g.planned.len()), result);
        }
        let reason = format!("member of {}, missing from CloudShell", g.name);
        for user in &g.imported_users {
            self.push(Action::Imported, Some(user), Some(&g.name), reason.clone(), "ok".to_string());
        }
        for f in failures {
            self.push(Action::Imported, Some(f.username.as_str()), Some(&g.name), reason.clone(), failed(&f.reason));
        }
    }

    /// A mapped CloudShell group: the users added to it, or who could not be. Its removals are not ours.
    fn membership(&mut self, m: &MembershipReport) {
        let reason = format!("member of {}", m.fed_by.join(" or "));
        for user in &m.added_users {
            self.push(Action::AddedToGroup, Some(user), Some(&m.name), reason.clone(), "ok".to_string());
        }
        let to_add = usernames(&m.planned_add);
        for f in m.failures.iter().filter(|f| to_add.contains(&f.username)) {
            self.push(
                Action::AddedToGroup,
                Some(f.username.as_str()),
                Some(&m.name),
                reason.clone(),
                failed(&f.reason),
            );
        }
        self.unconfirmed(&m.left_alone, Some(&m.name), "removal not sent");
    }

    /// The leaver step's hold (`held_by` alone, with `action = "report"`, says what would be held: nothing is).
    fn leavers(&mut self, l: &LeaversReport) {
        if l.held {
            let why = l.held_by.as_deref().unwrap_or("more leavers to deactivate than sync.leavers allows");
            self.held(None, format!("leavers: {why}; no leaver was deactivated"));
        }
        self.unconfirmed(&l.left_alone, None, "leaver not deactivated");
    }

    fn disabled(&mut self, d: &DisabledReport) {
        if let Some(why) = &d.held_by {
            self.held(None, format!("{why}; no disabled account was deactivated"));
        }
        self.unconfirmed(&d.left_alone, None, "disabled account not deactivated");
    }

    /// A deactivation or removal (from `group`) the second read did not confirm (`sync::confirm`): held for that
    /// user.
    fn unconfirmed(&mut self, left_alone: &[ProtectedLine], group: Option<&str>, what: &str) {
        for line in second_read::lines(left_alone) {
            let why = format!("{what}: {}", line.reason);
            self.push(Action::Held, Some(&line.username), group, why, "held".to_string());
        }
    }
}

/// What a group's import came to, or `None` when it was not attempted (nothing to import, or the run was
/// asked to stop before it).
fn import_result(g: &GroupReport, failures: &[&Failure]) -> Option<String> {
    let (imported, present, failed) = (g.imported_users.len(), g.already_present, failures.len());
    if g.planned.is_empty() || (g.status == GroupStatus::Skipped && imported + present + failed == 0) {
        return None;
    }
    let mut done = format!("{imported} imported");
    if present > 0 {
        done.push_str(&format!(", {present} already there (created by someone else)"));
    }
    Some(if g.status == GroupStatus::Skipped {
        let rest = g.planned.len().saturating_sub(imported + present + failed);
        format!("stopped: {done}, {failed} failed, {rest} not attempted (the run was asked to stop)")
    } else if failed == 0 {
        format!("ok: {done}")
    } else if imported + present > 0 {
        format!("partial: {done}, {failed} failed")
    } else {
        let first = failures[0];
        let more = if failed > 1 { format!(" (and {} more)", failed - 1) } else { String::new() };
        format!("failed: {}: {}{more}", first.username, first.reason)
    })
}

fn every_write_held(h: &HeldReport) -> String {
    format!("{} imports planned, more than sync.max_imports_per_run ({}); every write held", h.planned, h.limit)
}

fn removals_held(h: &HeldReport) -> String {
    match (h.by, h.last_24h) {
        (Some(key), Some(last_24h)) => format!(
            "{} removals from CloudShell groups planned, with {last_24h} in the last 24 hours more than {key} ({}); \
             nobody was removed",
            h.planned, h.limit
        ),
        _ => format!(
            "{} removals from CloudShell groups planned, more than sync.max_removals_per_run ({}); nobody was removed",
            h.planned, h.limit
        ),
    }
}

fn missing(n: usize) -> String {
    if n == 1 { "1 member missing from CloudShell".to_string() } else { format!("{n} members missing from CloudShell") }
}

fn failed(reason: &str) -> String {
    format!("failed: {reason}")
}

/// Names from a report's list, compared as usernames are (case-insensitively).
fn usernames(names: &[String]) -> HashSet<Username> {
    names.iter().filter_map(|n| Username::new(n)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group_name::GroupName;
    use crate::report::{Imports, LeaverLine, Placed, Standing};

    const AT: &str = "2026-12-02T06:00:00Z";

    fn user(name: &str) -> Username {
        Username::new(name).unwrap()
    }

    fn failure(name: &str, reason: &str) -> Failure {
        Failure { username: user(name), reason: reason.to_string() }
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|n| n.to_string()).collect()
    }

    /// A group whose import was attempted: `planned` to import, `imported` of them, `failures` among them.
    fn group(name: &str, planned: &[&str], imported: &[&str], failures: Vec<Failure>) -> GroupReport {
        let imports = Imports { imported: imported.iter().map(|n| user(n)).collect(), failures, ..Default::default() };
        let counts = (planned.len() + 5, planned.len());
        GroupReport::enumerated(name, counts, names(planned), vec![], imports, GroupStatus::Ok)
    }

    fn report(edit: impl FnOnce(&mut Report)) -> Report {
        let mut r = Report::new("run-7".into(), false);
        edit(&mut r);
        r.finish(0, 0);
        r
    }

    /// A row as (action, username, group, reason, result).
    type Line<'a> = (Action, Option<&'a str>, Option<&'a str>, &'a str, &'a str);

    /// The rows as lines, for comparing whole tables.
    fn table(rows: &[AuditRow]) -> Vec<Line<'_>> {
        rows.iter()
            .map(|r| (r.action, r.username.as_deref(), r.group.as_deref(), r.reason.as_str(), r.result.as_str()))
            .collect()
    }

    #[test]
    fn a_group_import_writes_one_group_row_and_one_row_per_user() {
        let r = report(|r| {
            let mut eng = group("Engineering", &["alice", "bob", "carol"], &["alice", "Bob"], vec![]);
            // An ambiguous username is left out before any import: no row, it would repeat every run.
            eng.failures = vec![failure("dave", "username is ambiguous in the directory"), failure("carol", "refused")];
            r.groups = vec![
                eng,
                group("Ops", &["erin"], &["erin"], vec![]),
                group("Sales", &["frank", "grace"], &[], vec![failure("frank", "refused"), failure("grace", "gone")]),
                group("Up to date", &[], &[], vec![]),
            ];
        });
        let rows = rows(&r, AT);
        let eng_reason = "member of Engineering, missing from CloudShell";
        let sales_reason = "member of Sales, missing from CloudShell";
        assert_eq!(
            table(&rows),
            [
                (
                    Action::GroupImported,
                    None,
                    Some("Engineering"),
                    "3 members missing from CloudShell",
                    "partial: 2 imported, 1 failed"
                ),
                (Action::Imported, Some("alice"), Some("Engineering"), eng_reason, "ok"),
                (Action::Imported, Some("Bob"), Some("Engineering"), eng_reason, "ok"),
                (Action::Imported, Some("carol"), Some("Engineering"), eng_reason, "failed: refused"),
                (Action::GroupImported, None, Some("Ops"), "1 member missing from CloudShell", "ok: 1 imported"),
                (Action::Imported, Some("erin"), Some("Ops"), "member of Ops, missing from CloudShell", "ok"),
                (
                    Action::GroupImported,
                    None,
                    Some("Sales"),
                    "2 members missing from CloudShell",
                    "failed: frank: refused (and 1 more)"
                ),
                (Action::Imported, Some("frank"), Some("Sales"), sales_reason, "failed: refused"),
                (Action::Imported, Some("grace"), Some("Sales"), sales_reason, "failed: gone"),
            ]
        );
        assert!(rows.iter().all(|row| row.run_id == "run-7" && row.at == AT), "every row carries the run and time");
    }

    #[test]
    fn a_group_import_counts_users_someone_else_created_as_already_there() {
        let imports = Imports { already_present: vec![user("bob")], ..Default::default() };
        let g = GroupReport::enumerated("Team", (2, 1), names(&["bob"]), vec![], imports, GroupStatus::Ok);
        let rows = rows(&report(|r| r.groups = vec![g]), AT);
        assert_eq!(
            table(&rows),
            [(
                Action::GroupImported,
                None,
                Some("Team"),
                "1 member missing from CloudShell",
                "ok: 0 imported, 1 already there (created by someone else)"
            )],
            "nobody was imported by this run: no user row"
        );
    }

    #[test]
    fn a_group_stopped_midway_says_so_and_one_never_started_writes_nothing() {
        let stopped = |imported: &[&str]| {
            let imports = Imports {
                imported: imported.iter().map(|n| user(n)).collect(),
                not_attempted: 3 - imported.len(),
                ..Default::default()
            };
            GroupReport::enumerated("Team", (3, 3), names(&["a", "b", "c"]), vec![], imports, GroupStatus::Ok)
        };
        let never =
            GroupReport::enumerated("Later", (1, 1), names(&["z"]), vec![], Imports::default(), GroupStatus::Skipped);
        let r = report(|r| r.groups = vec![stopped(&["a"]), never]);
        assert_eq!(r.groups[0].status, GroupStatus::Skipped);
        assert_eq!(
            table(&rows(&r, AT)),
            [
                (
                    Action::GroupImported,
                    None,
                    Some("Team"),
                    "3 members missing from CloudShell",
                    "stopped: 1 imported, 0 failed, 2 not attempted (the run was asked to stop)"
                ),
                (Action::Imported, Some("a"), Some("Team"), "member of Team, missing from CloudShell", "ok"),
            ]
        );
    }

    #[test]
    fn additions_to_a_cloudshell_group_are_rows_and_removals_are_not() {
        let fed_by = [GroupName::new("Engineering"), GroupName::new("Ops")];
        let mut m = MembershipReport::new("Lab Users", Some(4), &fed_by, 10);
        m.planned_add = names(&["alice", "bob"]);
        m.planned_remove = names(&["zed", "yan"]);
        let m = m.settle(Some(Placed {
            added: vec![user("alice")],
            removed: vec![user("yan")],
            failures: vec![failure("BOB", "refused"), failure("zed", "refused")],
            not_attempted: 0,
        }));
        let rows = rows(&report(|r| r.memberships = vec![m]), AT);
        let reason = "member of Engineering or Ops";
        assert_eq!(
            table(&rows),
            [
                (Action::AddedToGroup, Some("alice"), Some("Lab Users"), reason, "ok"),
                (Action::AddedToGroup, Some("BOB"), Some("Lab Users"), reason, "failed: refused"),
            ],
            "the removal of yan and the failed removal of zed are recorded through their intents"
        );
    }

    #[test]
    fn each_hold_is_one_row_however_many_users_it_holds() {
        let r = report(|r| {
            r.groups = vec![GroupReport::shrank("Engineering", 100, 10, 0), group("Ops", &[], &[], vec![])];
            r.removals_held = Some(HeldReport::per_run(700, 100));
            let mut leavers = LeaversReport::new("deactivate");
            leavers.held = true;
            leavers.held_by = Some("3000 to deactivate, more than sync.leavers.max_per_run allows (20)".into());
            leavers.status = GroupStatus::Held;
            leavers.candidates = (0..3000).map(|i| format!("u{i}")).collect();
            leavers.leavers = (0..3000)
                .map(|i| LeaverLine {
                    username: format!("u{i}"),
                    standing: Standing::Candidate,
                    reason: None,
                    runs: 3,
                    since: None,
                })
                .collect();
            r.leavers = Some(leavers);
            let mut disabled = DisabledReport::new("import_then_deactivate");
            disabled.held_by = Some(
                "40 disabled accounts to deactivate, more than sync.max_disabled_deactivations_per_run (10)".into(),
            );
            disabled.status = GroupStatus::Held;
            r.disabled_accounts = Some(disabled);
        });
        let rows = rows(&r, AT);
        let shrink = r.groups[0].error.clone().unwrap();
        assert!(shrink.contains("shrank from 100 to 10"), "{shrink}");
        assert_eq!(
            table(&rows),
            [
                (Action::Held, None, Some("Engineering"), shrink.as_str(), "held"),
                (
                    Action::Held,
                    None,
                    None,
                    "700 removals from CloudShell groups planned, more than sync.max_removals_per_run (100); \
                     nobody was removed",
                    "held"
                ),
                (
                    Action::Held,
                    None,
                    None,
                    "leavers: 3000 to deactivate, more than sync.leavers.max_per_run allows (20); \
                     no leaver was deactivated",
                    "held"
                ),
                (
                    Action::Held,
                    None,
                    None,
                    "40 disabled accounts to deactivate, more than sync.max_disabled_deactivations_per_run (10); \
                     no disabled account was deactivated",
                    "held"
                ),
            ]
        );
    }

    #[test]
    fn a_removal_hold_by_the_daily_budget_names_its_key_and_the_last_24_hours() {
        let held =
            HeldReport { by: Some("sync.max_removals_per_day"), last_24h: Some(8), ..HeldReport::per_run(3, 10) };
        let rows = rows(&report(|r| r.removals_held = Some(held)), AT);
        assert_eq!(
            table(&rows),
            [(
                Action::Held,
                None,
                None,
                "3 removals from CloudShell groups planned, with 8 in the last 24 hours more than \
                 sync.max_removals_per_day (10); nobody was removed",
                "held"
            )]
        );
    }

    #[test]
    fn leavers_only_reported_hold_nothing() {
        let mut leavers = LeaversReport::new("report");
        leavers.held_by = Some("with action = \"deactivate\" this would be held: 30 to deactivate".into());
        let r = report(|r| r.leavers = Some(leavers));
        assert!(rows(&r, AT).is_empty(), "with action = \"report\" nothing is held");
    }

    #[test]
    fn a_run_held_by_the_import_limit_is_one_held_row() {
        let r = report(|r| {
            r.held = Some(HeldReport::per_run(5000, 1000));
            let held = GroupReport::enumerated(
                "Engineering",
                (6000, 5000),
                names(&["a", "b"]),
                vec![failure("dave", "username is ambiguous in the directory")],
                Imports::default(),
                GroupStatus::Held,
            );
            // An ambiguous username makes a held group's line partial: the run's hold, not the line, says
            // that nothing was written.
            assert_eq!(held.status, GroupStatus::Partial);
            r.groups = vec![held];
            let mut m = MembershipReport::new("Lab Users", None, &[GroupName::new("Engineering")], 0);
            m.status = GroupStatus::Held;
            r.memberships = vec![m];
        });
        assert_eq!(r.result, crate::report::RunResult::Held);
        assert_eq!(
            table(&rows(&r, AT)),
            [(
                Action::Held,
                None,
                None,
                "5000 imports planned, more than sync.max_imports_per_run (1000); every write held",
                "held"
            )]
        );
    }

    #[test]
    fn a_deactivation_or_removal_the_second_read_did_not_confirm_is_a_held_row_for_that_user() {
        let line = |username: &str, reason| ProtectedLine { username: username.into(), reason };
        let mut leavers = LeaversReport::new("deactivate");
        // The control: a user left alone for another reason (through an intent, or in words already) is no row.
        leavers.left_alone = vec![line("bob", second_read::MEMBER_AGAIN), line("dave", "already inactive")];
        let mut disabled = DisabledReport::new("import_then_deactivate");
        disabled.left_alone = vec![line("erin", second_read::NOT_DISABLED)];
        let mut lab = MembershipReport::new("Lab Users", Some(7), &[GroupName::new("Engineering")], 3);
        lab.left_alone = vec![line("frank", second_read::MEMBER_AGAIN_IN_GROUP)];
        let r = report(|r| {
            (r.leavers, r.disabled_accounts) = (Some(leavers), Some(disabled));
            r.memberships = vec![lab];
        });
        let written = rows(&r, AT);
        let got: Vec<(Action, Option<&str>, Option<&str>, &str)> =
            written.iter().map(|w| (w.action, w.username.as_deref(), w.group.as_deref(), w.reason.as_str())).collect();
        let frank = format!("removal not sent: {}", second_read::MEMBER_AGAIN_IN_GROUP);
        let bob = format!("leaver not deactivated: {}", second_read::MEMBER_AGAIN);
        let erin = format!("disabled account not deactivated: {}", second_read::NOT_DISABLED);
        let held = Action::Held;
        assert_eq!(
            got,
            [
                (held, Some("frank"), Some("Lab Users"), frank.as_str()),
                (held, Some("bob"), None, bob.as_str()),
                (held, Some("erin"), None, erin.as_str())
            ]
        );
    }

    #[test]
    fn a_dry_run_writes_no_rows() {
        let mut r = Report::new("dry".into(), true);
        r.groups = vec![group("Engineering", &["alice"], &["alice"], vec![failure("bob", "refused")])];
        r.held = Some(HeldReport::per_run(5000, 1000));
        r.removals_held = Some(HeldReport::per_run(7, 3));
        let mut m = MembershipReport::new("Lab Users", Some(1), &[GroupName::new("Engineering")], 0);
        m.added_users = names(&["alice"]);
        r.memberships = vec![m];
        let mut d = DisabledReport::new("import_then_deactivate");
        d.held_by = Some("held".into());
        r.disabled_accounts = Some(d);
        r.finish(0, 0);
        assert!(rows(&r, AT).is_empty());
    }
}
