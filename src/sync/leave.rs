//! The leaver step of a run: takes the run's managed users ([`super::ledger`]), asks
//! [`super::leavers::plan`] who left, deactivates (or only reports) them, reactivates those who came back, and
//! hands the managed users back for the run to save. It acts only on a complete run; an unreadable state file
//! fails this step alone (nothing deactivated), never the imports.

// Keys are usernames from this run's own reads: FxHash (a million memberships hashed a run) is enough.
use rustc_hash::FxHashSet as HashSet;
use std::borrow::Cow;

use tokio_util::sync::CancellationToken;

use crate::cloudshell::Client;
use crate::config::{LeaverAction, LeaverPolicy};
use crate::report::{GroupStatus, LeaverLine, LeaversReport, ProtectedLine, Standing};
use crate::state::db::Action;
use crate::sync::activation::{self, Activation, Reasons, Target};
use crate::sync::confirm::{Confirmation, Reread, Unread};
use crate::sync::leavers::{self, LeaverPlan, Seen, UsersByName};
use crate::sync::ledger::{Keeper, Ledger};
use crate::sync::plan::{GroupPlan, Plan};
use crate::username::Username;

/// What the step needs of the run.
pub struct Run<'a> {
    pub plan: &'a Plan,
    /// CloudShell's users after this run's imports, by name.
    pub users: &'a UsersByName<'a>,
    /// `Err(why)` when the run is not complete: the step is skipped.
    pub complete: Result<(), String>,
    pub dry_run: bool,
    pub stop: &'a CancellationToken,
    /// This run's time, as written into the managed users.
    pub now: &'a str,
    /// In a change read: the departures the change reads reported ([`super::leavers::Seen::reported`]).
    pub reported: Option<&'a HashSet<Username>>,
    /// The second read every deactivation waits for ([`super::confirm`]).
    pub confirm: &'a Confirmation<'a>,
    /// The effective members' usernames ([`super::budget::members`]), made once for the run's steps.
    pub members: &'a HashSet<&'a Username>,
}

/// Whether a run that got as far as the imports is complete: every configured group enumerated and not held,
/// and nothing interrupted. Only then is a user's absence a departure; in a change read, only the departures
/// the change reads reported ([`Run::reported`]).
pub fn completeness(plan: &Plan, interrupted: bool) -> Result<(), String> {
    if interrupted {
        return Err("the run was asked to stop".into());
    }
    let incomplete: Vec<&str> = plan
        .groups
        .iter()
        .filter(|g| !matches!(g, GroupPlan::Ready(r) if r.shrink.is_none()))
        .map(|g| g.name())
        .collect();
    match incomplete.as_slice() {
        [] => Ok(()),
        names => Err(format!("not a complete run: {} could not be used (failed or held)", quote(names))),
    }
}

fn quote(names: &[&str]) -> String {
    names.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ")
}

/// Why this step changes users, as logged; in the audit trail, a reactivated user's reason names a group they
/// are back in.
fn reasons<'a>(audit: &'a (dyn Fn(&activation::Target, bool) -> String + Sync)) -> Reasons<'a> {
    Reasons {
        deactivate: "left the configured groups",
        reactivate: "back in the configured groups",
        audit,
        disabled_in_directory: false,
    }
}

/// The audit trail's reason for a leaver's change: "left every configured group", or "back in <group>" (the
/// first configured group the user is an effective member of).
fn audit_reason(plan: &Plan, t: &activation::Target, active: bool) -> String {
    if !active {
        return "left every configured group".to_string();
    }
    let group = plan.groups.iter().find_map(|g| match g {
        GroupPlan::Ready(r) if r.group.members.iter().any(|m| m.username == t.username) => Some(r.name.as_str()),
        _ => None,
    });
    match group {
        Some(name) => format!("back in {name}"),
        None => "back in a configured group".to_string(),
    }
}

/// Runs the step on the run's managed users (`None` without a state directory); `None` with
/// `action = "ignore"`.
pub async fn leaver_step(
    client: &Client,
    policy: &LeaverPolicy,
    ledger: Option<&mut Ledger<'_>>,
    run: Run<'_>,
) -> Option<LeaversReport> {
    if policy.action == LeaverAction::Ignore {
        return None;
    }
    let mut report = LeaversReport::new(policy.action.as_str());
    let Some(ledger) = ledger else {
        return Some(skipped(report, "no state directory: managed users cannot be tracked".into()));
    };
    if let Err(why) = run.complete {
        return Some(skipped(report, format!("{why}; nobody is a leaver in an incomplete run")));
    }
    let managed = match ledger.users() {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(error = %e, "state file unreadable");
            report.status = GroupStatus::Failed;
            report.error = Some(format!("leaver step failed, nobody deactivated: {e}"));
            return Some(report);
        }
    };
    // The daily budget counts the deactivations of the last 24 hours, the disabled-account step's in this run
    // included; one that cannot be counted deactivates nobody.
    let last_24h = match ledger.journal().count_last_day(Action::Deactivated) {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::error!(error = %e, "daily budget unreadable");
            report.status = GroupStatus::Failed;
            report.error = Some(format!("leaver step failed, nobody deactivated: the daily budget: {e}"));
            return Some(report);
        }
    };
    let (members, ambiguous) = (Cow::Borrowed(run.members), ambiguous(run.plan));
    let seen = Seen { members, ambiguous, users: run.users, now: run.now, last_24h, reported: run.reported };
    let planned = leavers::plan(managed, &seen, policy);
    record_plan(&planned, policy, &mut report);
    if run.dry_run {
        if report.status == GroupStatus::Ok && (!planned.deactivate.is_empty() || !planned.reactivate.is_empty()) {
            report.status = GroupStatus::Planned;
        }
        return Some(report);
    }
    let mut changes = planned.changes;
    if policy.action == LeaverAction::Deactivate {
        let audit = |t: &activation::Target, active: bool| audit_reason(run.plan, t, active);
        let reasons = reasons(&audit);
        let deactivate = confirmed(run.confirm, planned.deactivate, &mut report).await;
        let reactivate = &planned.reactivate;
        let done =
            activation::activate(client, &deactivate, reactivate, &reasons, Some(ledger.journal()), run.stop).await;
        for (t, active) in done.changed() {
            if !changes.contains_key(&t.username)
                && let Some(entry) = managed.users.get(&t.username)
            {
                changes.insert(entry.clone());
            }
            if let Some(entry) = changes.get_mut(&t.username) {
                entry.deactivated = !active;
            }
        }
        report.status = done.status(report.status);
        report.deactivated = Activation::usernames(&done.deactivated);
        report.reactivated = Activation::usernames(&done.reactivated);
        report.left_alone.extend(left_alone(&done));
        report.failures = done.failures;
    }
    ledger.update(Keeper::Leavers, changes);
    Some(report)
}

/// The leavers the second read confirms ([`super::confirm`]), the others left alone in the report; none when
/// it cannot be made, the step failed (or skipped, when the run was asked to stop) saying why.
async fn confirmed(confirm: &Confirmation<'_>, leavers: Vec<Target>, report: &mut LeaversReport) -> Vec<Target> {
    match confirm.confirm(leavers, Reread::leavers).await {
        Ok((confirmed, alone)) => {
            report.left_alone.extend(alone);
            return confirmed;
        }
        Err(Unread::Stopped) => {
            report.status = GroupStatus::Skipped;
            report.skipped =
                Some("nobody deactivated: the run was asked to stop before the directory was read again".into());
        }
        Err(Unread::Failed(why)) => {
            report.status = GroupStatus::Failed;
            report.error = Some(format!(
                "nobody deactivated: the directory could not be read again to confirm the leavers ({why}); the next run reads again"
            ));
        }
    }
    Vec::new()
}

/// The users `done` left alone, for the report.
pub(crate) fn left_alone(done: &Activation) -> impl Iterator<Item = ProtectedLine> + '_ {
    done.left_alone.iter().map(|(t, reason)| ProtectedLine { username: t.username.to_string(), reason })
}

/// The report of a step that did not run, saying why.
fn skipped(mut report: LeaversReport, why: String) -> LeaversReport {
    tracing::info!(reason = %why, "leaver step skipped");
    report.skipped = Some(why);
    report
}

/// Records the plan in the report and the logs: every leaver with its standing, the candidates, and
/// whether the deactivations are held.
fn record_plan(planned: &LeaverPlan, policy: &LeaverPolicy, report: &mut LeaversReport) {
    report.managed = planned.managed;
    report.left_alone = planned.left_alone.clone();
    if let Some(first) = planned.unreported.first() {
        let sample: Vec<&str> = planned.unreported.iter().take(5).map(Username::as_str).collect();
        tracing::info!(count = planned.unreported.len(), username = %first, sample = ?sample, "leavers wait for a full read");
        report.waiting_for_full_read = planned.unreported.iter().map(ToString::to_string).collect();
    }
    for l in &planned.left_alone {
        tracing::warn!(username = %l.username, reason = l.reason, "user back in the configured groups left alone");
    }
    for l in &planned.leavers {
        tracing::info!(username = %l.username, runs = l.runs, standing = l.standing.as_str(), "leaver found");
        report.leavers.push(LeaverLine {
            username: l.username.to_string(),
            standing: l.standing,
            reason: l.reason,
            runs: l.runs,
            since: l.since.clone(),
        });
        if l.standing == Standing::Candidate {
            report.candidates.push(l.username.to_string());
        }
    }
    let Some(held) = &planned.held else { return };
    let why = match held.last_24h {
        Some(last_24h) => format!(
            "{} to deactivate, with {last_24h} deactivated in the last 24 hours more than sync.leavers.{} allows ({})",
            held.planned, held.by, held.limit
        ),
        None => format!("{} to deactivate, more than sync.leavers.{} allows ({})", held.planned, held.by, held.limit),
    };
    if policy.action == LeaverAction::Deactivate {
        tracing::warn!(
            planned = held.planned,
            limit = held.limit,
            by = held.by,
            last_24h = held.last_24h,
            "deactivations held"
        );
        report.held = true;
        report.held_by = Some(why);
        report.status = GroupStatus::Held;
    } else {
        // `report` writes nothing, so nothing is held; say what `deactivate` would do.
        report.held_by = Some(format!("with action = \"deactivate\" this would be held: {why}"));
    }
}

/// The usernames left out as ambiguous.
fn ambiguous(plan: &Plan) -> HashSet<&Username> {
    let mut ambiguous = HashSet::default();
    for g in &plan.groups {
        if let GroupPlan::Ready(r) = g {
            ambiguous.extend(r.collisions.iter().map(|c| &c.username));
        }
    }
    ambiguous
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::cloudshell;
    use crate::sync::confirm;
    use crate::sync::plan::tests::{failed, group, snapshot};
    use crate::sync::plan::{self, Policy};

    fn planned(groups: Vec<crate::ldap::GroupOutcome>, last_good: &[(&str, usize)]) -> Plan {
        let last_good: HashMap<String, usize> = last_good.iter().map(|(g, n)| (g.to_string(), *n)).collect();
        let policy = Policy { max_imports_per_run: 100, max_shrink_percent: 50, last_good, ..Policy::default() };
        plan::plan(snapshot(groups), &[], policy)
    }

    #[test]
    fn only_a_read_of_every_group_with_nothing_interrupted_is_complete() {
        // The positive control: a full read of every group, nothing stopped, is complete, so leavers are acted on.
        // (A change read is complete too: its leavers are only the departures it reported, `Run::reported`.)
        let whole = planned(vec![group("A", &["a"]), group("B", &["b"])], &[("A", 1)]);
        assert!(whole.coverage.is_full());
        assert_eq!(completeness(&whole, false), Ok(()));
        assert!(completeness(&whole, true).unwrap_err().contains("asked to stop"));
        let one_failed = planned(vec![group("A", &["a"]), failed("B")], &[]);
        assert!(completeness(&one_failed, false).unwrap_err().contains("\"B\""));
        let one_held = planned(vec![group("A", &["a"]), group("B", &["b"])], &[("A", 10)]);
        assert!(completeness(&one_held, false).unwrap_err().contains("\"A\" could not be used"));
    }

    /// A listener that accepts no connection until asked, and a client for it: whether a step sent anything.
    fn cloudshell() -> (std::net::TcpListener, Client) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        (listener, Client::new(cloudshell::Settings::for_tests(&url)).unwrap())
    }

    /// alice (a member of `A`) and bob (a member of nothing), both managed, active in CloudShell.
    fn alice_and_bob() -> (Plan, [cloudshell::User; 2], LeaverPolicy) {
        let user = |id: i64, name: &str| cloudshell::User {
            id: Some(id),
            username: Username::new(name),
            is_active: Some(true),
            is_admin: Some(false),
            domain_name: Some("EXAMPLE".into()),
            group_ids: None,
        };
        let policy = LeaverPolicy {
            max_per_run: 10,
            max_percent: 100,
            ..LeaverPolicy::for_tests(LeaverAction::Deactivate, &[])
        };
        (planned(vec![group("A", &["alice"])], &[]), [user(1, "alice"), user(2, "bob")], policy)
    }

    /// The step on `users`, all managed since an earlier run, with a second read that found `found`.
    async fn step(
        client: &Client,
        (plan, users, policy): &(Plan, [cloudshell::User; 2], LeaverPolicy),
        journal: &crate::sync::journal::Journal,
        found: Result<Reread, confirm::Unread>,
    ) -> LeaversReport {
        let mut managed = crate::state::Managed::default();
        for u in users {
            managed.seen(u.username.as_ref().unwrap(), u.id, "t0");
        }
        journal.save_managed(&crate::state::Managed::default(), &managed).unwrap();
        let stop = CancellationToken::new();
        let confirm = Confirmation::found(found, &stop);
        let members = crate::sync::budget::members(plan);
        let run = Run {
            plan,
            users: &UsersByName::new(users),
            complete: Ok(()),
            dry_run: false,
            stop: &stop,
            now: "t1",
            reported: None,
            confirm: &confirm,
            members: &members,
        };
        let mut ledger = crate::sync::ledger::Ledger::load(journal);
        leaver_step(client, policy, Some(&mut ledger), run).await.unwrap()
    }

    fn journal(dir: &tempfile::TempDir) -> crate::sync::journal::Journal {
        crate::sync::journal::Journal::open(dir.path(), &crate::state::db::Owner::for_tests(), "r").unwrap()
    }

    /// A daily budget that cannot be counted (the audit trail unreadable) deactivates nobody: the step fails
    /// before any call. The control: with the audit trail readable, bob's deactivation is sent.
    #[tokio::test]
    async fn a_daily_budget_that_cannot_be_counted_deactivates_nobody() {
        let (listener, client) = cloudshell();
        let run = alice_and_bob();
        let confirms = || Ok(confirm::tests::reread(&["alice"], &[]));

        let dir = tempfile::tempdir().unwrap();
        let unreadable = journal(&dir);
        rusqlite::Connection::open(dir.path().join("state.db")).unwrap().execute("DROP TABLE audit", []).unwrap();
        let report = step(&client, &run, &unreadable, confirms()).await;
        assert_eq!(report.status, GroupStatus::Failed);
        assert!(report.error.as_deref().unwrap().contains("nobody deactivated: the daily budget"), "{report:?}");
        assert!(report.deactivated.is_empty() && report.failures.is_empty());
        assert!(listener.accept().is_err(), "nothing was sent");

        let dir = tempfile::tempdir().unwrap();
        let report = step(&client, &run, &journal(&dir), confirms()).await;
        assert_eq!(report.candidates, ["bob"]);
        assert!(listener.accept().is_ok(), "the control: bob's deactivation is sent");
    }

    /// A leaver is deactivated only when the second read confirms it: one that finds bob in a group again
    /// leaves him alone, one that could not be made deactivates nobody, the step failed saying why, and one
    /// given up for a stop skips the step; none sends anything. The control: a second read that confirms sends bob's deactivation.
    #[tokio::test]
    async fn a_leaver_the_second_read_does_not_confirm_is_not_deactivated() {
        let (listener, client) = cloudshell();
        let run = alice_and_bob();

        let dir = tempfile::tempdir().unwrap();
        let report = step(&client, &run, &journal(&dir), Ok(confirm::tests::reread(&["alice", "bob"], &[]))).await;
        assert_eq!((report.status, report.candidates.as_slice()), (GroupStatus::Ok, ["bob".to_string()].as_slice()));
        assert_eq!(report.left_alone.len(), 1, "{report:?}");
        assert_eq!(
            (report.left_alone[0].username.as_str(), report.left_alone[0].reason),
            ("bob", confirm::MEMBER_AGAIN)
        );
        assert!(report.deactivated.is_empty() && listener.accept().is_err(), "nothing was sent");

        let dir = tempfile::tempdir().unwrap();
        let report = step(
            &client,
            &run,
            &journal(&dir),
            Err(confirm::Unread::Failed("\"A\" could not be read: timeout".into())),
        )
        .await;
        assert_eq!(report.status, GroupStatus::Failed);
        let error = report.error.as_deref().unwrap();
        assert!(error.contains("nobody deactivated") && error.contains("\"A\" could not be read: timeout"), "{error}");
        assert!(report.deactivated.is_empty() && listener.accept().is_err(), "nothing was sent");

        let dir = tempfile::tempdir().unwrap();
        let report = step(&client, &run, &journal(&dir), Err(confirm::Unread::Stopped)).await;
        assert_eq!(report.status, GroupStatus::Skipped, "a stop is no failure");
        assert!(report.skipped.as_deref().unwrap().contains("asked to stop") && report.error.is_none());
        assert!(report.deactivated.is_empty() && listener.accept().is_err(), "nothing was sent");

        let dir = tempfile::tempdir().unwrap();
        let report = step(&client, &run, &journal(&dir), Ok(confirm::tests::reread(&["alice"], &[]))).await;
        assert!(report.left_alone.is_empty() && report.error.is_none(), "{report:?}");
        assert!(listener.accept().is_ok(), "the control: bob's deactivation is sent");
    }
}
