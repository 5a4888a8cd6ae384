//! Carrying out one CloudShell group's membership changes: additions, then removals, in batches. Entries
//! an answer names as failed are tried alone once, then reported; an answer that was lost is never repeated
//! blindly: the group's members are read again and only what is still to do is sent, once more.

use std::collections::{HashMap, HashSet};

use tokio_util::sync::CancellationToken;

use crate::cloudshell::{self, Client, Error, MembershipChange, MembershipFailure};
use crate::config::SyncPolicy;
use crate::group_name::GroupName;
use crate::report::{Failure, GroupStatus, HeldReport, MembershipReport, Placed, ProtectedLine};
use crate::state::db::{self, Intent, Outcome, Settlement};
use crate::sync::confirm::{self, Confirmation};
use crate::sync::journal::Journal;
use crate::sync::membership::{self, CloudShell, DirectoryGroup, GroupChange, Limits, Placement};
use crate::sync::plan::{GroupPlan, Plan};
use crate::username::Username;

/// The membership step of a run: every mapped CloudShell group's report line, and the removals hold.
pub struct Placements {
    pub groups: Vec<MembershipReport>,
    pub removals_held: Option<HeldReport>,
}

/// What the membership step reads before it plans.
pub struct Reads<'a> {
    /// Every CloudShell user, after this run's imports.
    pub users: &'a [cloudshell::User],
    /// Every CloudShell group, as listed alongside the users.
    pub groups: Result<Vec<cloudshell::Group>, Error>,
}

/// How the membership step runs.
pub struct Run<'a> {
    /// Plan only; write nothing.
    pub dry_run: bool,
    /// Where each removal is recorded as intended before it is sent, and settled after.
    pub journal: Option<&'a Journal>,
    pub stop: &'a CancellationToken,
    /// Directory groups with unresolved members (`super::unresolved`), and why removals on their account are
    /// held: additions only.
    pub unresolved: &'a HashSet<GroupName>,
    /// Why every removal is held in this run (an identity change not yet accepted), if so.
    pub removals_held_by: Option<&'a str>,
    /// In a change read: by mapped directory group, its departures the change reads reported, the only users
    /// that may be removed on its account (`None`: a full read, or nothing tracked).
    pub departures: Option<&'a rustc_hash::FxHashMap<GroupName, rustc_hash::FxHashSet<Username>>>,
    /// The second read every removal waits for ([`super::confirm`]).
    pub confirm: &'a Confirmation<'a>,
}

/// Plans and carries out the membership changes of every mapped CloudShell group (nothing is written in a
/// dry run). Runs after the imports, so users created by this run are placed in the same run.
pub async fn place_members(
    client: &Client,
    sync: &SyncPolicy,
    plan: &Plan,
    reads: Reads<'_>,
    run: Run<'_>,
) -> Placements {
    let Run { dry_run, journal, stop, unresolved, removals_held_by, departures, confirm } = run;
    let targets = membership::cloudshell_groups(&sync.mappings);
    let groups = match reads.groups {
        Ok(g) => g,
        Err(e) => {
            tracing::error!(error = %e, "cloudshell groups unreadable");
            let why = format!("cannot list CloudShell's groups: {e}");
            let groups =
                targets.iter().map(|(n, f)| MembershipReport::new(n, None, f, 0).failed(why.clone())).collect();
            return Placements { groups, removals_held: None };
        }
    };
    let users = reads.users;
    let (members, unreadable) = current_members(client, &groups, &targets, users).await;
    let mut outcomes = directory_outcomes(plan, departures);
    for (name, outcome) in outcomes.iter_mut() {
        if unresolved.contains(name) {
            *outcome = DirectoryGroup::Unknown { why: "has unresolved members".to_string() };
        }
    }
    let (remove_from_groups, removed_last_24h) = removals_today(sync, journal);
    let limits = Limits {
        remove_from_groups: remove_from_groups && removals_held_by.is_none(),
        max_removals_per_run: sync.max_removals_per_run,
        max_removals_per_day: sync.max_removals_per_day,
        removed_last_24h,
    };
    let cloudshell = CloudShell { users, groups: &groups, members: &members };
    let mut planned = membership::plan(&sync.mappings, &outcomes, &cloudshell, limits);
    let mut checks = if dry_run { HashMap::new() } else { confirmed(confirm, &mut planned.groups).await };
    if let Some(held) = planned.removals_held {
        let by = if held.last_24h.is_some() { "max_removals_per_day" } else { "max_removals_per_run" };
        tracing::warn!(
            planned = held.planned,
            limit = held.limit,
            by,
            last_24h = held.last_24h,
            "membership removals held"
        );
    }
    let mut lines = Vec::with_capacity(planned.groups.len());
    for change in &planned.groups {
        let line = match planned_line(change, &unreadable, removals_held_by, sync) {
            Ok(line) => line,
            Err(failed) => {
                lines.push(*failed);
                continue;
            }
        };
        let checked = checks.remove(&change.name).unwrap_or_default();
        let line = checked.before(line);
        let placed = if dry_run {
            None
        } else {
            let span = tracing::info_span!("cloudshell_group", group = %change.name);
            Some(
                tracing::Instrument::instrument(
                    apply_change(client, change, sync.membership_batch_size, journal, stop),
                    span,
                )
                .await,
            )
        };
        lines.push(checked.after(line.settle(placed)));
    }
    Placements {
        groups: lines,
        removals_held: planned.removals_held.map(|h| HeldReport {
            planned: h.planned,
            limit: h.limit,
            by: h.last_24h.map(|_| "sync.max_removals_per_day"),
            last_24h: h.last_24h,
        }),
    }
}

/// A CloudShell group's line as planned, or its failed line when it cannot be changed at all (no such group in
/// CloudShell, its members unreadable).
fn planned_line(
    change: &GroupChange,
    unreadable: &HashMap<i64, String>,
    removals_held_by: Option<&str>,
    sync: &SyncPolicy,
) -> Result<MembershipReport, Box<MembershipReport>> {
    let line = MembershipReport::new(&change.name, change.id, &change.fed_by, change.current);
    let Some(id) = change.id else {
        tracing::error!(group = %change.name, "cloudshell group not found");
        return Err(Box::new(line.failed(format!(
            "no CloudShell group {:?}: create it in CloudShell (this program never creates groups)",
            change.name
        ))));
    };
    if let Some(e) = unreadable.get(&id) {
        return Err(Box::new(line.failed(format!("cannot read its members: {e}"))));
    }
    let mut line = line;
    line.planned_add = change.add.iter().map(|p| p.username.to_string()).collect();
    line.planned_remove = change.remove.iter().map(|p| p.username.to_string()).collect();
    line.held_removals = change.held_removals.iter().map(|p| p.username.to_string()).collect();
    line.additions_only = change.additions_only.clone();
    if let (Some(why), true) = (removals_held_by, sync.remove_from_groups) {
        line.additions_only = Some(why.to_string());
    }
    tracing::info!(group = %change.name, add = change.add.len(), remove = change.remove.len(), held = change.held_removals.len(), "cloudshell group planned");
    Ok(line)
}

/// What the second read made of one CloudShell group's removals.
#[derive(Default)]
struct Checked {
    /// Removals it did not confirm, with why.
    left_alone: Vec<ProtectedLine>,
    /// Why none was sent, when it could not be made (`stopped`: the run was asked to stop).
    unsent: Option<(String, bool)>,
}

impl Checked {
    /// The line before its changes are made: what was left alone, and why removals were not sent.
    fn before(&self, mut line: MembershipReport) -> MembershipReport {
        line.left_alone = self.left_alone.clone();
        if let Some((why, _)) = &self.unsent {
            line.additions_only = Some(why.clone());
        }
        line
    }

    /// The settled line: not `ok` when removals were left unsent for want of a read (`skipped` on a stop).
    fn after(&self, mut line: MembershipReport) -> MembershipReport {
        let unread = self.left_alone.iter().any(|l| l.reason == confirm::NOT_READ_AGAIN);
        match &self.unsent {
            Some((_, true)) => line.status = GroupStatus::Skipped,
            _ if !(unread || self.unsent.is_some()) => {}
            _ => {
                line.status = match line.status {
                    GroupStatus::Ok | GroupStatus::Held if line.added + line.removed > 0 => GroupStatus::Partial,
                    GroupStatus::Ok | GroupStatus::Held => GroupStatus::Failed,
                    other => other,
                }
            }
        }
        line
    }
}

/// Each CloudShell group's removals that the second read confirms ([`super::confirm`]); the others are taken
/// out of `groups` and returned, by group, with why. When it cannot be made, every removal is taken out.
async fn confirmed(confirm: &Confirmation<'_>, groups: &mut [GroupChange]) -> HashMap<String, Checked> {
    let mut checks = HashMap::new();
    if groups.iter().all(|g| g.remove.is_empty()) {
        return checks;
    }
    let found = confirm.reread().await;
    for g in groups.iter_mut().filter(|g| !g.remove.is_empty()) {
        let removals = std::mem::take(&mut g.remove);
        let checked = match found {
            Ok(found) => {
                let (kept, left_alone) = found.removals(&g.fed_by, removals);
                g.remove = kept;
                Checked { left_alone, unsent: None }
            }
            Err(why) => {
                let stopped = *why == confirm::Unread::Stopped;
                let why = format!(
                    "removals not sent: the directory could not be read again to confirm them ({why}); the next run reads again"
                );
                Checked { left_alone: Vec::new(), unsent: Some((why, stopped)) }
            }
        };
        checks.insert(g.name.clone(), checked);
    }
    checks
}

/// Whether removals may be made, and the removals of the last 24 hours (`None` without a journal: no record,
/// the per-run limit only). A count that cannot be read turns removals off for the run (logged): the budget
/// is unknown.
fn removals_today(sync: &SyncPolicy, journal: Option<&Journal>) -> (bool, Option<usize>) {
    let Some(journal) = journal.filter(|_| sync.remove_from_groups) else { return (sync.remove_from_groups, None) };
    match journal.count_last_day(db::Action::RemovedFromGroup) {
        Ok(n) => (true, Some(n)),
        Err(e) => {
            tracing::error!(error = %e, "daily budget unreadable, no removal this run");
            (false, None)
        }
    }
}

/// The lines of a run whose every write is held (the import limit): each mapped CloudShell group, held.
pub fn held(sync: &SyncPolicy, why: &str) -> Vec<MembershipReport> {
    membership::cloudshell_groups(&sync.mappings)
        .iter()
        .map(|(name, fed_by)| {
            let mut line = MembershipReport::new(name, None, fed_by, 0);
            line.status = crate::report::GroupStatus::Held;
            line.error = Some(why.to_string());
            line
        })
        .collect()
}

/// Each mapped directory group's outcome, for the membership plan. In a change read, a group whose departures
/// were tracked removes only those; any other gets additions only.
fn directory_outcomes<'a>(
    plan: &'a Plan,
    departures: Option<&'a rustc_hash::FxHashMap<GroupName, rustc_hash::FxHashSet<Username>>>,
) -> HashMap<GroupName, DirectoryGroup<'a>> {
    plan.groups
        .iter()
        .map(|g| {
            let r = match g {
                GroupPlan::Failed { error, .. } => {
                    let why = format!("failed to enumerate ({})", error.kind());
                    return (GroupName::new(g.name()), DirectoryGroup::Unknown { why });
                }
                GroupPlan::Ready(r) if r.shrink.is_some() => {
                    let why = "is held by the shrink guard".to_string();
                    return (GroupName::new(g.name()), DirectoryGroup::Unknown { why });
                }
                GroupPlan::Ready(r) => r,
            };
            let members = r.group.members.iter().map(|m| &m.username).collect();
            let ambiguous = r.collisions.iter().map(|c| &c.username).collect();
            let outcome = match plan.coverage {
                crate::ldap::Coverage::Full => DirectoryGroup::Members { members, ambiguous },
                // In a change read, only the departures it reported are removed.
                crate::ldap::Coverage::Changes => match departures.and_then(|d| d.get(&GroupName::new(&r.name))) {
                    Some(gone) => DirectoryGroup::Reported { members, ambiguous, gone: gone.iter().collect() },
                    None => DirectoryGroup::Additions {
                        members,
                        ambiguous,
                        why: "was read as the changes since the last run (removals wait for a full read)".to_string(),
                    },
                },
            };
            (GroupName::new(g.name()), outcome)
        })
        .collect()
}

/// The current members of each mapped CloudShell group that exists: from the users' `GroupIds` when every
/// user carries them, else by reading each group. Groups whose read failed are returned apart.
async fn current_members(
    client: &Client,
    groups: &[cloudshell::Group],
    targets: &[(String, Vec<GroupName>)],
    users: &[cloudshell::User],
) -> (HashMap<i64, Vec<cloudshell::User>>, HashMap<i64, String>) {
    let ids: Vec<i64> =
        targets.iter().filter_map(|(name, _)| membership::find_group(groups, name).map(|g| g.id)).collect();
    let mut members: HashMap<i64, Vec<cloudshell::User>> = HashMap::new();
    let mut unreadable = HashMap::new();
    if users.iter().all(|u| u.group_ids.is_some()) {
        for id in ids {
            let of: Vec<cloudshell::User> =
                users.iter().filter(|u| u.group_ids.as_ref().is_some_and(|g| g.contains(&id))).cloned().collect();
            members.insert(id, of);
        }
    } else {
        for id in ids {
            match client.group_users(id).await {
                Ok(Some(of)) => {
                    members.insert(id, of);
                }
                Ok(None) => {
                    unreadable.insert(id, "the group vanished while it was being read".to_string());
                }
                Err(e) => {
                    unreadable.insert(id, e.to_string());
                }
            }
        }
    }
    (members, unreadable)
}

/// Which way a change goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    Add,
    Remove,
}

impl Direction {
    async fn send(self, client: &Client, group: i64, ids: &[i64]) -> Result<MembershipChange, Error> {
        match self {
            Direction::Add => client.add_to_group(group, ids).await,
            Direction::Remove => client.remove_from_group(group, ids).await,
        }
    }

    /// Whether a user with this state still needs the change.
    fn still_needed(self, present: bool) -> bool {
        match self {
            Direction::Add => !present,
            Direction::Remove => present,
        }
    }
}

/// Applies `change` (which must name an existing group). Never fails as a whole: each user's outcome is
/// recorded. `stop` is checked between calls. With a `journal`, each batch of removals is recorded as intended
/// before it is sent (not sent when that fails) and each removal's outcome after.
pub async fn apply_change(
    client: &Client,
    change: &GroupChange,
    batch: usize,
    journal: Option<&Journal>,
    stop: &CancellationToken,
) -> Placed {
    let mut placed = Placed::default();
    let Some(group) = change.id else {
        return placed;
    };
    let name = change.name.as_str();
    let mut additions: Vec<(Username, i64)> = Vec::new();
    for p in &change.add {
        match p.id {
            Some(id) => additions.push((p.username.clone(), id)),
            None => {
                let reason = "not in CloudShell: its import did not succeed".to_string();
                tracing::warn!(group = name, username = %p.username, reason = %reason, "membership change failed");
                placed.failures.push(Failure { username: p.username.clone(), reason });
            }
        }
    }
    let removals: Vec<(Username, i64)> =
        change.remove.iter().filter_map(|p: &Placement| Some((p.username.clone(), p.id?))).collect();
    let mut gone = false;
    for (direction, users) in [(Direction::Add, additions), (Direction::Remove, removals)] {
        for (n, chunk) in users.chunks(batch.max(1)).enumerate() {
            if gone {
                // Every later user is reported too, never dropped silently.
                fail_all(name, chunk, "the CloudShell group is gone", &mut placed);
            } else if stop.is_cancelled() {
                placed.not_attempted += users.len() - n * batch.max(1);
                tracing::warn!(group = name, not_attempted = placed.not_attempted, "membership changes interrupted");
                break;
            } else if direction == Direction::Remove
                && let Some(journal) = journal
            {
                let removal = Removal { journal, group: (name, group), fed_by: &change.fed_by };
                gone = !remove_recorded(client, removal, chunk, &mut placed).await;
            } else if !send_batch(client, name, group, direction, chunk, &mut placed).await {
                gone = true;
            }
        }
    }
    placed
}

/// A batch of removals to record.
struct Removal<'a> {
    journal: &'a Journal,
    /// The CloudShell group's name and id.
    group: (&'a str, i64),
    /// The directory groups mapped to it, for the reason.
    fed_by: &'a [GroupName],
}

/// [`send_batch`] for removals, recorded: the batch's intents before it is sent (nothing sent when they cannot
/// be written), each removal's outcome after. A removal that failed is left for the next run to read back,
/// since its answer may have been lost after it took effect.
async fn remove_recorded(
    client: &Client,
    removal: Removal<'_>,
    chunk: &[(Username, i64)],
    placed: &mut Placed,
) -> bool {
    let (name, group) = removal.group;
    let fed_by: Vec<&str> = removal.fed_by.iter().map(GroupName::as_str).collect();
    let reason = format!("in none of the directory groups mapped to {name} ({})", fed_by.join(", "));
    let intents: Vec<Intent> = chunk
        .iter()
        .map(|(username, id)| Intent {
            change: db::Change::RemoveFromGroup { group: name.to_string(), group_id: group },
            username: username.clone(),
            cloudshell_id: *id,
            reason: reason.clone(),
        })
        .collect();
    let ids = match removal.journal.intend(&intents) {
        Ok(ids) => ids,
        Err(e) => {
            tracing::error!(group = name, error = %e, "removals not sent: their intents could not be recorded");
            return fail_all(name, chunk, &format!("not sent: its intent could not be recorded: {e}"), placed);
        }
    };
    let removed_before = placed.removed.len();
    let more = send_batch(client, name, group, Direction::Remove, chunk, placed).await;
    let removed = &placed.removed[removed_before..];
    let settled: Vec<Settlement> = intents
        .iter()
        .zip(ids)
        .map(|(intent, id)| {
            let (outcome, result) = if removed.contains(&intent.username) {
                (Outcome::Done, "ok".to_string())
            } else if !more {
                (Outcome::Gone, "the CloudShell group is gone".to_string())
            } else {
                (Outcome::Unknown, String::new())
            };
            Settlement { id, intent, outcome, result }
        })
        .collect();
    // A failure is logged; the intents then stay, and the next run reads the outcomes back.
    let _ = removal.journal.settle(&settled);
    more
}

/// Sends one batch and settles each user's outcome. Returns `false` when the group is gone (no point in
/// sending more).
async fn send_batch(
    client: &Client,
    name: &str,
    group: i64,
    direction: Direction,
    chunk: &[(Username, i64)],
    placed: &mut Placed,
) -> bool {
    let ids: Vec<i64> = chunk.iter().map(|(_, id)| *id).collect();
    let retry: Vec<&(Username, i64)> = match direction.send(client, group, &ids).await {
        Ok(MembershipChange::Done { failures }) if failures.is_empty() => Vec::new(),
        Ok(MembershipChange::Done { failures }) => {
            let named = |(u, id): &(Username, i64)| failures.iter().any(|f| names(f, u, *id));
            if failures.iter().all(|f| chunk.iter().any(|(u, id)| names(f, u, *id))) {
                chunk.iter().filter(|e| named(e)).collect()
            } else {
                // Entries that name nobody we sent: look at the group to see who is still to do.
                match still_to_do(client, group, direction, chunk).await {
                    Ok(rest) => rest,
                    Err(e) => return fail_all(name, chunk, &e.to_string(), placed),
                }
            }
        }
        Ok(MembershipChange::GroupNotFound { message }) => {
            tracing::warn!(group = name, message = %message, "cloudshell group not found");
            fail_all(name, chunk, &format!("the CloudShell group is gone: {message}"), placed);
            return false;
        }
        Ok(MembershipChange::Refused { message }) => {
            return fail_all(name, chunk, &format!("CloudShell refused the change: {message}"), placed);
        }
        Err(e) if e.may_have_taken_effect() => {
            // The change may have happened: read the group before sending anything again.
            tracing::warn!(group = name, error = %e, "membership change answer lost, reading the group again");
            match still_to_do(client, group, direction, chunk).await {
                Ok(rest) if rest.is_empty() => Vec::new(),
                Ok(rest) => {
                    let again: Vec<(Username, i64)> = rest.iter().map(|e| (*e).clone()).collect();
                    let done: Vec<&(Username, i64)> = chunk.iter().filter(|e| !rest.contains(e)).collect();
                    record_done(name, direction, done, placed);
                    return settle_after_check(client, name, group, direction, &again, placed).await;
                }
                Err(check) => return fail_all(name, chunk, &format!("{e}; reading the group again: {check}"), placed),
            }
        }
        Err(e) => return fail_all(name, chunk, &e.to_string(), placed),
    };
    record_done(name, direction, chunk.iter().filter(|e| !retry.contains(e)).collect(), placed);
    for entry in retry {
        // Once alone, then reported.
        let outcome = direction.send(client, group, &[entry.1]).await;
        settle_alone(name, direction, entry, outcome, placed);
    }
    true
}

/// After a lost answer and a re-read: the rest once more as a batch, then reported.
async fn settle_after_check(
    client: &Client,
    name: &str,
    group: i64,
    direction: Direction,
    rest: &[(Username, i64)],
    placed: &mut Placed,
) -> bool {
    let ids: Vec<i64> = rest.iter().map(|(_, id)| *id).collect();
    match entries_failed(direction.send(client, group, &ids).await) {
        Ok(failures) => {
            for entry in rest {
                match failures.iter().find(|f| names(f, &entry.0, entry.1)) {
                    None => record_done(name, direction, vec![entry], placed),
                    Some(f) => fail_one(name, &entry.0, &f.message, placed),
                }
            }
            true
        }
        Err(reason) => fail_all(name, rest, &reason, placed),
    }
}

/// A membership call's outcome as the entries it says failed, or why the whole call failed.
fn entries_failed(outcome: Result<MembershipChange, Error>) -> Result<Vec<MembershipFailure>, String> {
    match outcome {
        Ok(MembershipChange::Done { failures }) => Ok(failures),
        Ok(MembershipChange::GroupNotFound { message } | MembershipChange::Refused { message }) => Err(message),
        Err(e) => Err(e.to_string()),
    }
}

fn settle_alone(
    name: &str,
    direction: Direction,
    entry: &(Username, i64),
    outcome: Result<MembershipChange, Error>,
    placed: &mut Placed,
) {
    let reason = match entries_failed(outcome) {
        Ok(failures) if failures.is_empty() => return record_done(name, direction, vec![entry], placed),
        Ok(failures) => failures.into_iter().map(|f| f.message).collect::<Vec<_>>().join("; "),
        Err(reason) => reason,
    };
    fail_one(name, &entry.0, &reason, placed);
}

/// Whether an `Errors` entry is about this user (by id, or by username).
fn names(f: &MembershipFailure, username: &Username, id: i64) -> bool {
    f.id == Some(id) || f.name.as_deref().and_then(Username::new).is_some_and(|n| &n == username)
}

/// The entries of `chunk` the group still needs changed, by reading its members.
async fn still_to_do<'c>(
    client: &Client,
    group: i64,
    direction: Direction,
    chunk: &'c [(Username, i64)],
) -> Result<Vec<&'c (Username, i64)>, Error> {
    let members = client.group_users(group).await?.unwrap_or_default();
    let present: HashSet<i64> = members.iter().filter_map(|u| u.id).collect();
    Ok(chunk.iter().filter(|(_, id)| direction.still_needed(present.contains(id))).collect())
}

fn record_done(name: &str, direction: Direction, done: Vec<&(Username, i64)>, placed: &mut Placed) {
    for (username, _) in done {
        match direction {
            Direction::Add => {
                tracing::info!(group = name, username = %username, "member added to group");
                placed.added.push(username.clone());
            }
            Direction::Remove => {
                tracing::info!(group = name, username = %username, "member removed from group");
                placed.removed.push(username.clone());
            }
        }
    }
}

fn fail_one(name: &str, username: &Username, reason: &str, placed: &mut Placed) {
    tracing::warn!(group = name, username = %username, reason = %reason, "membership change failed");
    placed.failures.push(Failure { username: username.clone(), reason: reason.to_string() });
}

/// Records every entry as failed; returns `true` (the group may still take other batches).
fn fail_all(name: &str, entries: &[(Username, i64)], reason: &str, placed: &mut Placed) -> bool {
    for (username, _) in entries {
        fail_one(name, username, reason, placed);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CloudShell group's line after the second read: `ok` when it only left alone users it found in a
    /// feeding group again (the control); not `ok` when removals went unsent for want of a read, `skipped` on a
    /// stop.
    #[test]
    fn a_line_whose_removals_went_unsent_for_want_of_a_read_is_not_ok() {
        let settled = |added: usize| {
            let mut line = MembershipReport::new("Lab", Some(1), &[], 3);
            line.added = added;
            line
        };
        let alone =
            |reason| Checked { left_alone: vec![ProtectedLine { username: "bob".into(), reason }], unsent: None };
        assert_eq!(alone(confirm::MEMBER_AGAIN_IN_GROUP).after(settled(0)).status, GroupStatus::Ok);
        assert_eq!(alone(confirm::NOT_READ_AGAIN).after(settled(0)).status, GroupStatus::Failed);
        assert_eq!(alone(confirm::NOT_READ_AGAIN).after(settled(2)).status, GroupStatus::Partial);
        let unsent = |stopped| Checked { left_alone: Vec::new(), unsent: Some(("why".into(), stopped)) };
        assert_eq!(unsent(false).after(settled(0)).status, GroupStatus::Failed);
        assert_eq!(unsent(true).after(settled(2)).status, GroupStatus::Skipped);
        assert_eq!(unsent(false).before(settled(0)).additions_only.as_deref(), Some("why"));
    }
}
