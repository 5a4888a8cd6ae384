//! Disabled directory accounts in CloudShell (`sync.disabled_accounts = "import_then_deactivate"`).
//!
//! CloudShell's import by group name takes every direct member of the group, disabled accounts included. In
//! this mode a group holding disabled accounts is still imported by its name (one call instead of one per
//! member), and this step then deactivates, in CloudShell, every disabled account of the enumerated groups
//! that is active there — whether the import created it or it was there before — and records it as managed
//! (`disabled_in_directory` in `users.json`). An account enabled again in the directory (an effective member
//! once more) is reactivated. A disabled account cannot log in to CloudShell anyway (CloudShell authenticates
//! against the directory), so the moment between the import and the deactivation grants nothing.
//!
//! Unlike leavers, this acts on what the directory says positively (this account is disabled), never on an
//! absence, so it runs in partial runs too, for the groups that were enumerated; groups that failed or are
//! held by the shrink guard are left out. Admins, local users, `sync.leavers.protect` matches and users whose
//! `IsActive` or `IsAdmin` CloudShell did not say are never deactivated (nor reactivated, nor is an account
//! created again under the name: `super::activation::returning`); more deactivations than
//! `sync.max_disabled_deactivations_per_run` hold them all (the imports stand; the leavers' per-run limits do
//! not count these). The daily budget is shared with the leavers (`sync.leavers.max_per_day`,
//! `max_percent_per_day`, [`super::budget`]): deactivations that would take the last 24 hours past it are all
//! held too.

// Keys are usernames from this run's own reads: FxHash (a million memberships hashed a run) is enough.
use rustc_hash::FxHashSet as HashSet;
use std::borrow::Cow;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::cloudshell::{self, Client};
use crate::config::LeaverPolicy;
use crate::ldap::Member;
use crate::report::{DisabledReport, GroupStatus, ProtectedLine};
use crate::state::db::Action;
use crate::state::{Changes, Managed, ManagedUser};
use crate::sync::activation::{self, Activation, Reasons, Returning, Target, protection, returning};
use crate::sync::budget;
use crate::sync::confirm::{Confirmation, Reread, Unread};
use crate::sync::leavers::UsersByName;
use crate::sync::ledger::{Keeper, Ledger};
use crate::sync::plan::{GroupPlan, Plan};
use crate::username::Username;

/// The reason logged with a deactivation by this step.
pub const DEACTIVATED_BECAUSE: &str = "disabled in the directory";
/// The reason logged with a reactivation by this step.
pub const REACTIVATED_BECAUSE: &str = "enabled in the directory";
/// Why this step changes users, as logged and in the audit trail.
fn audit_reason(_: &Target, active: bool) -> String {
    if active { "enabled again in the directory" } else { "disabled in the directory" }.to_string()
}

const REASONS: Reasons<'static> = Reasons {
    deactivate: DEACTIVATED_BECAUSE,
    reactivate: REACTIVATED_BECAUSE,
    audit: &audit_reason,
    disabled_in_directory: true,
};

/// What the run saw, for the plan.
pub struct Seen<'a> {
    /// The disabled accounts of the enumerated (and not held) groups, each once.
    pub disabled: Vec<&'a Arc<Member>>,
    /// The effective members of those groups: the run's own set, borrowed, when no group is held (a copy is
    /// 1 MB at 100,000 members).
    pub members: Cow<'a, HashSet<&'a Username>>,
    /// Every configured group was enumerated and none is held.
    pub complete: bool,
    /// Every CloudShell user (after this run's imports), by name.
    pub users: &'a UsersByName<'a>,
    /// This run's time, as written into the state.
    pub now: &'a str,
    /// Deactivations in the last 24 hours, by the audit trail (`None`: no record, the per-run limit only).
    pub last_24h: Option<usize>,
    /// A dry run: the members its imports would create, active once created, so counted in the daily
    /// percentage as the run that writes counts them (0 there: it reads the users after its imports).
    pub importing: usize,
}

/// The step's plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DisabledPlan {
    /// Disabled accounts active in CloudShell (empty when held).
    pub deactivate: Vec<Target>,
    /// Accounts this step deactivated that are enabled again and inactive in CloudShell.
    pub reactivate: Vec<Target>,
    /// Disabled accounts left active on purpose.
    pub protected: Vec<ProtectedLine>,
    /// Accounts this step deactivated, enabled again, that are not reactivated (another account under the name,
    /// or one whose flags CloudShell did not say), with why.
    pub left_alone: Vec<ProtectedLine>,
    /// `(planned, limit)` when the deactivations are held by the per-run limit.
    pub held: Option<(usize, usize)>,
    /// When they are held by the daily budget.
    pub held_today: Option<budget::DailyHeld>,
    /// The managed users this run changes, as it leaves them before the writes' outcomes are recorded.
    pub changes: Changes,
}

/// Plans the step. `limit`: `sync.max_disabled_deactivations_per_run`.
pub fn plan(managed: &Managed, seen: &Seen<'_>, protect: &LeaverPolicy, limit: usize) -> DisabledPlan {
    let by_name = seen.users;
    let mut changes = Changes::new();
    let mut deactivate = Vec::new();
    let mut protected = Vec::new();
    let mut disabled_keys: HashSet<&Username> = HashSet::default();
    for account in &seen.disabled {
        // Another entry with the same username is enabled and a member: that one is the CloudShell user.
        if seen.members.contains(&account.username) || !disabled_keys.insert(&account.username) {
            continue;
        }
        let Some(user) = by_name.get(&account.username) else { continue }; // not in CloudShell: nothing to do
        // An unknown `IsActive` is protected, never deactivated (`protection` says why).
        match (protection(user, account.username.as_str(), Some(protect)), user.is_active, user.id) {
            (_, Some(false), _) => {} // already inactive (by whoever)
            (Some(reason), _, _) => protected.push(ProtectedLine { username: account.username.to_string(), reason }),
            (None, Some(true), Some(id)) => deactivate.push(Target { username: account.username.clone(), id }),
            _ => {} // without an id
        }
    }
    let mut reactivate = Vec::new();
    let mut left_alone = Vec::new();
    for (key, entry) in managed.users.iter().filter(|(_, e)| e.disabled_in_directory) {
        let mut change = |change: &dyn Fn(&mut ManagedUser)| {
            change(changes.get_or_insert_with(key, || entry.clone()));
        };
        if seen.members.contains(key) {
            let Some(user) = by_name.get(&entry.username) else { continue };
            match returning(user, entry.id) {
                Returning::Active => change(&|e| (e.deactivated, e.disabled_in_directory) = (false, false)),
                Returning::Reactivate(id) => reactivate.push(Target { username: entry.username.clone(), id }),
                Returning::Another(reason) => {
                    change(&|e| (e.deactivated, e.disabled_in_directory) = (false, false));
                    left_alone.push(ProtectedLine { username: entry.username.to_string(), reason });
                }
                Returning::Unknown(reason) => {
                    left_alone.push(ProtectedLine { username: entry.username.to_string(), reason })
                }
            }
        } else if seen.complete && !disabled_keys.contains(key) {
            // Neither disabled in nor a member of any configured group any more: an ordinary managed user
            // again (a leaver, already inactive; reactivated by the leaver step should they come back).
            change(&|e| e.disabled_in_directory = false);
        }
    }
    deactivate.sort_by(|a, b| a.username.cmp(&b.username));
    reactivate.sort_by(|a, b| a.username.cmp(&b.username));
    protected.sort_by_cached_key(|p| p.username.to_lowercase());
    left_alone.sort_by_cached_key(|p| p.username.to_lowercase());
    let held = (deactivate.len() > limit).then(|| (std::mem::take(&mut deactivate).len(), limit));
    // As for leavers: counted only when there is something to deactivate (nothing is never held).
    let held_today = seen.last_24h.filter(|_| !deactivate.is_empty()).and_then(|last_24h| {
        let active = budget::managed_active(managed, &Changes::new(), &seen.members, seen.users) + seen.importing;
        budget::held(deactivate.len(), last_24h, budget::deactivation_limit(protect, active))
    });
    if held_today.is_some() {
        deactivate.clear();
    }
    DisabledPlan { deactivate, reactivate, protected, left_alone, held, held_today, changes }
}

/// Records a deactivation this step made.
fn record_deactivated(managed: &Managed, changes: &mut Changes, t: &Target, now: &str) {
    let entry = changes.get_or_insert_with(&t.username, || match managed.users.get(&t.username) {
        Some(entry) => entry.clone(),
        None => ManagedUser::new(t.username.clone(), now),
    });
    entry.see(&t.username, Some(t.id), now);
    (entry.deactivated, entry.disabled_in_directory) = (true, true);
}

/// What the step needs of the run.
pub struct Run<'a> {
    pub plan: &'a Plan,
    /// CloudShell's users after this run's imports (before them, in a dry run), by name.
    pub users: &'a UsersByName<'a>,
    /// Every configured group enumerated, none held, nothing interrupted.
    pub complete: bool,
    pub dry_run: bool,
    pub stop: &'a CancellationToken,
    /// This run's time, as written into the managed users.
    pub now: &'a str,
    /// The second read every deactivation waits for ([`super::confirm`]).
    pub confirm: &'a Confirmation<'a>,
    /// The effective members' usernames ([`super::budget::members`]), made once for the run's steps.
    pub members: &'a HashSet<&'a Username>,
}

/// Runs the step (only with `import_then_deactivate`) on the run's managed users, handing them back to
/// `ledger` with what it did recorded.
pub async fn disabled_step(
    client: &Client,
    protect: &LeaverPolicy,
    limit: usize,
    ledger: &mut Ledger<'_>,
    run: Run<'_>,
) -> DisabledReport {
    let mut report = DisabledReport::new(crate::config::DisabledAccounts::ImportThenDeactivate.as_str());
    let managed = match ledger.users() {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(error = %e, "state file unreadable");
            report.status = GroupStatus::Failed;
            report.error = Some(format!("disabled accounts not deactivated: {e}"));
            return report;
        }
    };
    let last_24h = match ledger.journal().count_last_day(Action::Deactivated) {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::error!(error = %e, "daily budget unreadable");
            report.status = GroupStatus::Failed;
            report.error = Some(format!("disabled accounts not deactivated: the daily budget: {e}"));
            return report;
        }
    };
    let mut seen = seen(run.plan, run.members, run.users, (run.complete, run.now, last_24h));
    if run.dry_run {
        seen.importing = importing(run.plan, run.users);
    }
    let planned = plan(managed, &seen, protect, limit);
    record_plan(&planned, &mut report);
    if run.dry_run {
        report.planned = planned.deactivate.iter().map(|t| t.username.to_string()).collect();
        report.planned.extend(created_by_imports(run.plan, run.users));
        report.planned.sort_by_cached_key(|u| u.to_lowercase());
        report.planned.dedup();
        if report.status == GroupStatus::Ok && !(report.planned.is_empty() && planned.reactivate.is_empty()) {
            report.status = GroupStatus::Planned;
        }
        return report;
    }
    let deactivate = confirmed(run.confirm, planned.deactivate, &mut report).await;
    let reactivate = &planned.reactivate;
    let done = activation::activate(client, &deactivate, reactivate, &REASONS, Some(ledger.journal()), run.stop).await;
    let mut changes = planned.changes;
    for (t, active) in done.changed() {
        if !active {
            record_deactivated(managed, &mut changes, t, run.now);
        } else if let Some(entry) = managed.users.get(&t.username) {
            let entry = changes.get_or_insert_with(&t.username, || entry.clone());
            (entry.deactivated, entry.disabled_in_directory) = (false, false);
        }
    }
    report.status = done.status(report.status);
    report.deactivated = Activation::usernames(&done.deactivated);
    report.reactivated = Activation::usernames(&done.reactivated);
    report.left_alone.extend(super::leave::left_alone(&done));
    report.failures = done.failures;
    ledger.update(Keeper::DisabledAccounts, changes);
    report
}

/// The disabled accounts the second read confirms ([`super::confirm`]), the others left alone in the report;
/// none when it cannot be made, the step failed (or skipped, when the run was asked to stop) saying why.
async fn confirmed(confirm: &Confirmation<'_>, accounts: Vec<Target>, report: &mut DisabledReport) -> Vec<Target> {
    match confirm.confirm(accounts, Reread::disabled).await {
        Ok((confirmed, alone)) => {
            report.left_alone.extend(alone);
            confirmed
        }
        Err(why) => {
            report.status = if why == Unread::Stopped { GroupStatus::Skipped } else { GroupStatus::Failed };
            report.error = Some(format!(
                "disabled accounts not deactivated: the directory could not be read again to confirm them ({why}); the next run reads again"
            ));
            Vec::new()
        }
    }
}

/// Records the plan in the report and the logs: the disabled accounts left active, and whether the
/// deactivations are held.
fn record_plan(planned: &DisabledPlan, report: &mut DisabledReport) {
    report.protected = planned.protected.clone();
    report.left_alone = planned.left_alone.clone();
    for l in &planned.left_alone {
        tracing::warn!(username = %l.username, reason = l.reason, "account enabled again left alone");
    }
    for p in &planned.protected {
        tracing::info!(username = %p.username, reason = p.reason, "disabled account left active");
    }
    if let Some((planned, limit)) = planned.held {
        tracing::warn!(planned, limit, "deactivations of disabled accounts held");
        report.held_by = Some(format!(
            "{planned} disabled accounts to deactivate, more than sync.max_disabled_deactivations_per_run ({limit})"
        ));
        report.status = GroupStatus::Held;
    }
    if let Some(h) = planned.held_today {
        tracing::warn!(
            planned = h.planned,
            limit = h.limit,
            last_24h = h.last_24h,
            by = h.key,
            "deactivations of disabled accounts held"
        );
        report.held_by = Some(format!(
            "{} disabled accounts to deactivate, with {} deactivated in the last 24 hours more than sync.leavers.{} ({})",
            h.planned, h.last_24h, h.key, h.limit
        ));
        report.status = GroupStatus::Held;
    }
}

/// What the run saw of the groups the step may act on: enumerated and not held.
fn seen<'a>(
    plan: &'a Plan,
    every_member: &'a HashSet<&'a Username>,
    users: &'a UsersByName<'a>,
    (complete, now, last_24h): (bool, &'a str, Option<usize>),
) -> Seen<'a> {
    let mut disabled = Vec::new();
    let ready = || plan.groups.iter().filter_map(|g| if let GroupPlan::Ready(r) = g { Some(r) } else { None });
    // The members of the groups the shrink guard does not hold: every member, each once, when it holds none.
    let every_group = ready().all(|r| r.shrink.is_none());
    let mut members = if every_group { Cow::Borrowed(every_member) } else { Cow::Owned(HashSet::default()) };
    for r in ready().filter(|r| r.shrink.is_none()) {
        disabled.extend(r.group.disabled.iter());
        if let Cow::Owned(members) = &mut members {
            members.extend(r.group.members.iter().map(|m| &m.username));
        }
    }
    Seen { disabled, members, complete, users, now, last_24h, importing: 0 }
}

/// Dry run: how many members (each once) the planned imports would create.
fn importing(plan: &Plan, users: &[cloudshell::User]) -> usize {
    let present: HashSet<&Username> = users.iter().filter_map(|u| u.username.as_ref()).collect();
    let mut created: HashSet<&Username> = HashSet::default();
    for g in &plan.groups {
        if let GroupPlan::Ready(r) = g
            && r.shrink.is_none()
        {
            created.extend(r.missing.iter().map(|m| &m.username).filter(|u| !present.contains(u)));
        }
    }
    created.len()
}

/// Dry run: the disabled accounts a planned group import would create (then to be deactivated).
fn created_by_imports(plan: &Plan, users: &[cloudshell::User]) -> Vec<String> {
    let present: HashSet<&Username> = users.iter().filter_map(|u| u.username.as_ref()).collect();
    let mut created = Vec::new();
    for g in &plan.groups {
        if let GroupPlan::Ready(r) = g
            && r.shrink.is_none()
            && r.by_name
            && r.needs_import()
        {
            created.extend(
                r.group.disabled.iter().filter(|m| !present.contains(&m.username)).map(|m| m.username.to_string()),
            );
        }
    }
    created
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LeaverAction;
    use crate::state::ManagedUser;

    fn policy(protect: &[&str]) -> LeaverPolicy {
        LeaverPolicy { reactivate: false, ..LeaverPolicy::for_tests(LeaverAction::Report, protect) }
    }

    fn member(name: &str) -> Arc<Member> {
        Arc::new(Member { username: Username::new(name).unwrap(), dn: format!("uid={name},dc=x").into() })
    }

    fn user(id: i64, name: &str, active: bool) -> cloudshell::User {
        cloudshell::User {
            id: Some(id),
            username: Username::new(name),
            domain_name: Some("EXAMPLE".into()),
            is_active: Some(active),
            is_admin: Some(false),
            group_ids: None,
        }
    }

    fn key(name: &str) -> Username {
        Username::new(name).unwrap()
    }

    fn flagged(name: &str, id: i64) -> (Username, ManagedUser) {
        let entry = ManagedUser {
            id: Some(id),
            deactivated: true,
            disabled_in_directory: true,
            ..ManagedUser::new(key(name), "")
        };
        (key(name), entry)
    }

    fn names(targets: &[Target]) -> Vec<&str> {
        targets.iter().map(|t| t.username.as_str()).collect()
    }

    #[test]
    fn active_disabled_accounts_are_deactivated_and_the_protected_left_alone() {
        let accounts = [member("dis"), member("Off"), member("gone"), member("boss"), member("local"), member("svc-x")];
        let users = vec![
            user(1, "dis", true),
            user(2, "off", false),
            cloudshell::User { is_admin: Some(true), ..user(4, "boss", true) },
            cloudshell::User { domain_name: None, ..user(5, "local", true) },
            user(6, "svc-x", true),
            user(7, "both", true),
        ];
        let both = member("both");
        let seen = Seen {
            disabled: accounts.iter().chain([&both]).collect(),
            members: Cow::Owned(HashSet::from_iter([&both.username])),
            complete: true,
            users: &UsersByName::new(&users),
            now: "t1",
            last_24h: None,
            importing: 0,
        };
        let p = plan(&Managed::default(), &seen, &policy(&["svc-*"]), 10);
        assert_eq!(names(&p.deactivate), ["dis"], "off is inactive, gone is not in CloudShell, both is a member");
        let protected: Vec<(&str, &str)> = p.protected.iter().map(|p| (p.username.as_str(), p.reason)).collect();
        assert_eq!(
            protected,
            [("boss", "an administrator"), ("local", "a local user"), ("svc-x", "sync.leavers.protect")]
        );
        assert!(p.reactivate.is_empty() && p.held.is_none());

        let held = plan(&Managed::default(), &seen, &policy(&["svc-*"]), 0);
        assert_eq!((held.deactivate.len(), held.held), (0, Some((1, 0))));
    }

    #[test]
    fn disabled_accounts_share_the_daily_budget_and_are_held_all_together_past_it() {
        // Members m0..m9 active in CloudShell; d0..d2 disabled and active.
        let mut users: Vec<cloudshell::User> = (0..10).map(|n| user(n, &format!("m{n}"), true)).collect();
        users.extend((0..3).map(|n| user(100 + n, &format!("d{n}"), true)));
        let members: Vec<Username> = (0..10).map(|n| key(&format!("m{n}"))).collect();
        let disabled: Vec<Arc<Member>> = (0..3).map(|n| member(&format!("d{n}"))).collect();
        let run = |pol: &LeaverPolicy, last_24h| {
            let seen = Seen {
                disabled: disabled.iter().collect(),
                members: Cow::Owned(members.iter().collect()),
                complete: true,
                users: &UsersByName::new(&users),
                now: "t",
                last_24h,
                importing: 0,
            };
            plan(&Managed::default(), &seen, pol, 10)
        };
        let pol = LeaverPolicy { max_per_day: 5, max_percent_per_day: 100, ..policy(&[]) };
        assert_eq!(run(&pol, Some(2)).deactivate.len(), 3, "2 + 3 is exactly max_per_day");
        let p = run(&pol, Some(3));
        let held = budget::DailyHeld { planned: 3, last_24h: 3, limit: 5, key: "max_per_day" };
        assert_eq!((p.deactivate.len(), p.held_today), (0, Some(held)), "one over: all held");
        assert_eq!(run(&pol, None).deactivate.len(), 3, "no record: the per-run limit only");
        // The denominator: the 10 members active in CloudShell (managed from this run on), not the disabled ones.
        let pct = LeaverPolicy { max_per_day: 100, max_percent_per_day: 30, ..policy(&[]) };
        assert_eq!(run(&pct, Some(0)).deactivate.len(), 3, "30 % of 10 is 3");
        let p = run(&pct, Some(1));
        assert_eq!(p.held_today.map(|h| (h.limit, h.key)), Some((3, "max_percent_per_day")));
        // A dry run counts the members its imports would create, as the run that writes will.
        let dry = Seen {
            disabled: disabled.iter().collect(),
            members: Cow::Owned(members.iter().collect()),
            complete: true,
            users: &UsersByName::new(&users[8..]),
            now: "t",
            last_24h: Some(0),
            importing: 8,
        };
        assert_eq!(plan(&Managed::default(), &dry, &pct, 10).deactivate.len(), 3, "2 listed + 8 to import: 3");
        let before = Seen { importing: 0, ..dry };
        assert!(plan(&Managed::default(), &before, &pct, 10).held_today.is_some(), "30 % of 2 is none");
    }

    #[test]
    fn an_account_enabled_again_is_reactivated_only_when_this_step_deactivated_it() {
        let users = vec![user(1, "back", false), user(2, "manual", false), user(3, "already", true)];
        let (back, manual, already) = (member("back"), member("manual"), member("already"));
        let managed =
            Managed { users: [flagged("back", 1), flagged("already", 3)].into_iter().collect(), ..Default::default() };
        let seen = Seen {
            disabled: vec![],
            members: Cow::Owned(HashSet::from_iter([&back.username, &manual.username, &already.username])),
            complete: true,
            users: &UsersByName::new(&users),
            now: "t2",
            last_24h: None,
            importing: 0,
        };
        let p = plan(&managed, &seen, &policy(&[]), 10);
        assert_eq!(names(&p.reactivate), ["back"], "manual was deactivated by someone else");
        let already = &managed.with(&p.changes).users[&key("already")];
        assert!(!already.deactivated && !already.disabled_in_directory, "someone made them active already");
    }

    #[test]
    fn unknown_flags_and_another_account_are_left_alone_and_reported() {
        use crate::sync::activation::{ANOTHER_ACCOUNT, IS_ACTIVE_UNKNOWN};
        // Disabled: "dis" is deactivated (the control), "noflag" has no IsActive: protected, never deactivated.
        let (dis, noflag) = (member("dis"), member("noflag"));
        let users = vec![user(1, "dis", true), cloudshell::User { is_active: None, ..user(2, "noflag", true) }];
        let seen = Seen {
            disabled: vec![&dis, &noflag],
            members: Cow::default(),
            complete: true,
            users: &UsersByName::new(&users),
            now: "t",
            last_24h: None,
            importing: 0,
        };
        let p = plan(&Managed::default(), &seen, &policy(&[]), 10);
        assert_eq!(names(&p.deactivate), ["dis"]);
        assert_eq!(p.protected, [ProtectedLine { username: "noflag".into(), reason: IS_ACTIVE_UNKNOWN }]);

        // Enabled again: "back" is the same account (the control), "new" was created again with another id.
        let users = vec![user(1, "back", false), user(30, "new", false)];
        let (back, new) = (member("back"), member("new"));
        let managed =
            Managed { users: [flagged("back", 1), flagged("new", 3)].into_iter().collect(), ..Default::default() };
        let members = Cow::Owned(HashSet::from_iter([&back.username, &new.username]));
        let seen = Seen {
            disabled: vec![],
            members,
            complete: true,
            users: &UsersByName::new(&users),
            now: "t",
            last_24h: None,
            importing: 0,
        };
        let p = plan(&managed, &seen, &policy(&[]), 10);
        assert_eq!(names(&p.reactivate), ["back"]);
        assert_eq!(p.left_alone, [ProtectedLine { username: "new".into(), reason: ANOTHER_ACCOUNT }]);
        let new = &managed.with(&p.changes).users[&key("new")];
        assert!(!new.deactivated && !new.disabled_in_directory, "the record was of another account");
    }

    #[test]
    fn a_flagged_account_gone_from_every_group_goes_back_to_the_leaver_rules_in_a_complete_run_only() {
        let users = vec![user(1, "away", false)];
        let by_name = UsersByName::new(&users);
        let managed = Managed { users: [flagged("away", 1)].into_iter().collect(), ..Default::default() };
        let seen = |complete| Seen {
            disabled: vec![],
            members: Cow::default(),
            complete,
            users: &by_name,
            now: "t3",
            last_24h: None,
            importing: 0,
        };
        let p = plan(&managed, &seen(false), &policy(&[]), 10);
        assert!(
            managed.with(&p.changes).users[&key("away")].disabled_in_directory,
            "an incomplete run proves no absence"
        );
        let p = plan(&managed, &seen(true), &policy(&[]), 10);
        let away = &managed.with(&p.changes).users[&key("away")];
        assert!(away.deactivated && !away.disabled_in_directory);
    }

    /// The members the step counts are those of the groups the shrink guard does not hold; with none held,
    /// every member once (the plan's own list).
    #[test]
    fn the_members_seen_are_those_of_the_groups_the_shrink_guard_does_not_hold() {
        use crate::sync::plan::tests::{group, snapshot};
        let planned = |last_good: &[(&str, usize)]| {
            let last_good = last_good.iter().map(|(g, n)| (g.to_string(), *n)).collect();
            let policy = crate::sync::plan::Policy {
                max_imports_per_run: 100,
                max_shrink_percent: 50,
                last_good,
                ..Default::default()
            };
            crate::sync::plan::plan(snapshot(vec![group("A", &["a", "b"]), group("B", &["b", "c"])]), &[], policy)
        };
        let members = |plan: &Plan| {
            let mut names: Vec<String> =
                seen(plan, &crate::sync::budget::members(plan), &UsersByName::new(&[]), (true, "t", None))
                    .members
                    .iter()
                    .map(|u| u.to_string())
                    .collect();
            names.sort();
            names
        };
        assert_eq!(members(&planned(&[])), ["a", "b", "c"]);
        // B had 10 members: shrunk to 2, held; its own members are not counted, a (only in A) and b (in A too) are.
        assert_eq!(members(&planned(&[("B", 10)])), ["a", "b"]);
        assert_eq!(members(&planned(&[("A", 10), ("B", 10)])), Vec::<String>::new());
    }

    #[test]
    fn a_deactivation_is_recorded_as_managed_and_disabled() {
        let mut changes = Changes::new();
        record_deactivated(&Managed::default(), &mut changes, &Target { username: key("Dis"), id: 9 }, "t4");
        let e = &changes[&key("dis")];
        assert_eq!((e.username.as_str(), e.id, e.deactivated, e.disabled_in_directory), ("Dis", Some(9), true, true));
        assert_eq!(e.first_seen, "t4");
    }
}
