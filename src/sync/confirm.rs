//! The second read before a destructive call. A run plans from the directory as its read saw it, but a read is
//! not an instant: a user renamed or moved while it ran can be seen by the users search under the old DN and by
//! a group under the new one, and so look like a member of nothing; a member can be added back after the read.
//! So a deactivation (a leaver's, or a disabled account's) or a removal from a mapped CloudShell group is sent
//! only when a second read of every configured group, made after the plan and before the first such call,
//! agrees with it: the leaver is still an effective member of no configured group (nor a name left out as
//! ambiguous), the disabled account still a disabled member of one, the user removed still in none of the
//! directory groups mapped to that CloudShell group. A user it does not confirm is left alone this run,
//! reported with why, and decided again by the next run.
//!
//! The second read is made once per run, only when something is to be deactivated or removed, and always in
//! full, whatever the run's method (a change read's model included): it is the reference. When it cannot be
//! made (the directory unreachable, a stop), nobody is deactivated or removed in this run; when a configured
//! group fails in it, no leaver is deactivated (their step needs a complete run) and nobody is removed on that
//! group's account, while a disabled account shown disabled by a group read is. Imports, additions and
//! reactivations never wait for it.

// Keys are usernames and group names from this run's own reads and configuration: FxHash is enough.
use std::sync::Arc;

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use crate::group_name::GroupName;
use crate::ldap;
use crate::report::ProtectedLine;
use crate::sync::activation::Target;
use crate::sync::membership::Placement;
use crate::username::Username;

pub use crate::report::second_read::{MEMBER_AGAIN, MEMBER_AGAIN_IN_GROUP, NOT_DISABLED, NOT_READ_AGAIN};

/// Deactivation targets split into those a second read confirms and those left alone, with why.
pub type Split = (Vec<Target>, Vec<ProtectedLine>);

/// Why the second read cannot confirm anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unread {
    /// The run was asked to stop before or while it read.
    Stopped,
    /// The directory could not be read (or, for deactivations, not every configured group), and why.
    Failed(String),
}

impl std::fmt::Display for Unread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unread::Stopped => f.write_str("the run was asked to stop"),
            Unread::Failed(why) => f.write_str(why),
        }
    }
}

/// A configured group as the second read found it: its effective members (sorted by username, shared with the
/// read) and the usernames left out of it as ambiguous; `None` when it failed.
type Found = Option<(Arc<[Arc<ldap::Member>]>, Vec<Username>)>;

/// What the second read found: who is in the configured groups, and who is there disabled.
#[derive(Debug, Default)]
pub struct Reread {
    /// The effective members of every configured group read.
    members: HashSet<Username>,
    /// The usernames left out of a configured group as ambiguous.
    ambiguous: HashSet<Username>,
    /// The disabled accounts among the members of every configured group read.
    disabled: HashSet<Username>,
    /// Each configured group, for the removals from the mapped CloudShell groups it feeds.
    groups: HashMap<GroupName, Found>,
    /// The configured groups that failed, and why: no leaver's deactivation rests on a read missing one.
    failed: Vec<String>,
}

impl Reread {
    /// The second read's findings.
    pub fn of(snapshot: &ldap::Snapshot) -> Reread {
        let mut reread = Reread::default();
        for g in &snapshot.groups {
            let group = match &g.result {
                Ok(group) => group,
                Err(e) => {
                    reread.failed.push(format!("{:?} could not be read: {e}", g.name));
                    reread.groups.insert(GroupName::new(&g.name), None);
                    continue;
                }
            };
            reread.members.extend(group.members.iter().map(|m| m.username.clone()));
            reread.ambiguous.extend(group.collisions.iter().map(|c| c.username.clone()));
            reread.disabled.extend(group.disabled.iter().map(|m| m.username.clone()));
            // What `keeps` searches in: sorted by username, as every nesting mode makes them.
            debug_assert!(group.members.is_sorted_by(|a, b| a.username <= b.username), "{:?} unsorted", g.name);
            let ambiguous = group.collisions.iter().map(|c| c.username.clone()).collect();
            reread.groups.insert(GroupName::new(&g.name), Some((group.members.clone(), ambiguous)));
        }
        reread
    }

    /// Whether every configured group was read again; else why not.
    pub fn whole(&self) -> Result<(), String> {
        if self.failed.is_empty() { Ok(()) } else { Err(self.failed.join("; ")) }
    }

    /// Why the removal of `user` from a CloudShell group fed by `fed_by` is not confirmed, if it is not: one of
    /// those directory groups was not read again (a group the read does not know counts so), or holds the user
    /// (or left the name out as ambiguous).
    fn keeps(&self, fed_by: &[GroupName], user: &Username) -> Option<&'static str> {
        let mut reason = None;
        for g in fed_by {
            match self.groups.get(g) {
                Some(Some((members, ambiguous))) => {
                    if members.binary_search_by(|m| m.username.cmp(user)).is_ok() || ambiguous.contains(user) {
                        reason = reason.or(Some(MEMBER_AGAIN_IN_GROUP));
                    }
                }
                Some(None) | None => return Some(NOT_READ_AGAIN),
            }
        }
        reason
    }

    /// The removals from a CloudShell group fed by `fed_by` split into those the second read confirms (the
    /// user in none of those directory groups, each read again) and those left alone.
    pub fn removals(&self, fed_by: &[GroupName], removals: Vec<Placement>) -> (Vec<Placement>, Vec<ProtectedLine>) {
        let mut kept = Vec::with_capacity(removals.len());
        let mut alone = Vec::new();
        for p in removals {
            match self.keeps(fed_by, &p.username) {
                None => kept.push(p),
                Some(reason) => {
                    tracing::warn!(username = %p.username, reason, "removal not confirmed by a second read");
                    alone.push(ProtectedLine { username: p.username.to_string(), reason });
                }
            }
        }
        (kept, alone)
    }

    /// `leavers` split into those the second read confirms (a member of nothing, nor a name left out as
    /// ambiguous: as the leaver plan sees them) and those left alone; every configured group must have been read
    /// again, as the leaver step needs a complete run.
    pub fn leavers(&self, leavers: Vec<Target>) -> Result<Split, String> {
        self.whole()?;
        Ok(split(leavers, |u| !self.members.contains(u) && !self.ambiguous.contains(u), MEMBER_AGAIN))
    }

    /// `accounts` split into those the second read confirms (still disabled in a configured group read again,
    /// and not an enabled member of one under the same name) and those left alone. As the disabled-account step,
    /// this needs only the groups read: being disabled is the account's, whichever group shows it.
    pub fn disabled(&self, accounts: Vec<Target>) -> Result<Split, String> {
        Ok(split(accounts, |u| self.disabled.contains(u) && !self.members.contains(u), NOT_DISABLED))
    }
}

fn split(targets: Vec<Target>, confirmed: impl Fn(&Username) -> bool, reason: &'static str) -> Split {
    let (kept, alone): (Vec<Target>, Vec<Target>) = targets.into_iter().partition(|t| confirmed(&t.username));
    for t in &alone {
        tracing::warn!(username = %t.username, reason, "deactivation not confirmed by a second read");
    }
    (kept, alone.into_iter().map(|t| ProtectedLine { username: t.username.to_string(), reason }).collect())
}

/// A rule of [`Reread`] for deactivation targets.
pub type Rule = fn(&Reread, Vec<Target>) -> Result<Split, String>;

/// The run's second read, made at most once, when a step first asks for it.
pub struct Confirmation<'a> {
    /// The directory and the groups to read again (`None` only in tests, which give the read's findings).
    source: Option<(&'a ldap::Settings, &'a [GroupName])>,
    stop: &'a CancellationToken,
    read: OnceCell<Result<Reread, Unread>>,
    /// How long the second read took, once made.
    took_ms: std::sync::OnceLock<u64>,
}

impl<'a> Confirmation<'a> {
    pub fn new(settings: &'a ldap::Settings, groups: &'a [GroupName], stop: &'a CancellationToken) -> Self {
        Confirmation { source: Some((settings, groups)), stop, read: OnceCell::new(), took_ms: Default::default() }
    }

    /// The second read's findings, read now if no step asked before.
    pub async fn reread(&self) -> &Result<Reread, Unread> {
        let source = self.source;
        self.read
            .get_or_init(|| async move {
                let Some((settings, groups)) = source else {
                    return Err(Unread::Failed("no directory to read again".into()));
                };
                let started = std::time::Instant::now();
                let found = read(settings, groups, self.stop).await;
                let _ = self.took_ms.set(started.elapsed().as_millis() as u64);
                found
            })
            .await
    }

    /// `targets` split by `rule` into those the second read confirms and those left alone (nothing read for no
    /// target); `Err` says why nobody may be deactivated.
    pub async fn confirm(&self, targets: Vec<Target>, rule: Rule) -> Result<Split, Unread> {
        if targets.is_empty() {
            return Ok((targets, Vec::new()));
        }
        let found = self.reread().await.as_ref().map_err(Clone::clone)?;
        rule(found, targets).map_err(Unread::Failed)
    }

    /// How long the second read took, when one was made.
    pub fn took_ms(&self) -> Option<u64> {
        self.took_ms.get().copied()
    }

    /// A confirmation whose second read found `found` (for tests of the steps).
    #[cfg(test)]
    pub fn found(found: Result<Reread, Unread>, stop: &'a CancellationToken) -> Self {
        Confirmation { source: None, stop, read: OnceCell::new_with(Some(found)), took_ms: Default::default() }
    }
}

async fn read(settings: &ldap::Settings, groups: &[GroupName], stop: &CancellationToken) -> Result<Reread, Unread> {
    let snapshot = tokio::select! {
        biased;
        _ = stop.cancelled() => return Err(Unread::Stopped),
        read = ldap::snapshot(settings, groups) => read.map_err(|e| {
            tracing::error!(error = %e, "directory not read again, nobody deactivated or removed");
            Unread::Failed(e.to_string())
        })?,
    };
    let reread = Reread::of(&snapshot);
    match reread.whole() {
        Ok(()) => tracing::info!(members = reread.members.len(), "directory read again before acting"),
        Err(e) => tracing::error!(error = %e, "directory read again, not whole"),
    }
    Ok(reread)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn name(u: &str) -> Username {
        Username::new(u).unwrap()
    }

    fn target(u: &str, id: i64) -> Target {
        Target { username: name(u), id }
    }

    /// A second read that found `members` (a name starting with `?` left out as ambiguous) and `disabled`,
    /// every group read.
    pub(crate) fn reread(members: &[&str], disabled: &[&str]) -> Reread {
        let names = |list: &[&str], ambiguous: bool| -> HashSet<Username> {
            list.iter().filter(|u| u.starts_with('?') == ambiguous).map(|u| name(u.trim_start_matches('?'))).collect()
        };
        Reread {
            members: names(members, false),
            ambiguous: names(members, true),
            disabled: names(disabled, false),
            groups: HashMap::default(),
            failed: Vec::new(),
        }
    }

    #[test]
    fn a_leaver_found_in_a_group_again_is_left_alone_and_the_others_are_confirmed() {
        let found = reread(&["Bob", "carol", "?dave"], &["erin"]);
        let targets = ["alice", "bob", "dave", "erin"].iter().enumerate().map(|(i, u)| target(u, i as i64)).collect();
        let (confirmed, alone) = found.leavers(targets).unwrap();
        // The control: alice, in no group, is still deactivated; erin, only disabled in one, is a member of
        // nothing as the leaver rules see it. dave's name is ambiguous in a group: not a leaver there either.
        assert_eq!(confirmed.iter().map(|t| t.id).collect::<Vec<_>>(), [0, 3]);
        let alone: Vec<(&str, &str)> = alone.iter().map(|l| (l.username.as_str(), l.reason)).collect();
        assert_eq!(alone, [("bob", MEMBER_AGAIN), ("dave", MEMBER_AGAIN)]);
    }

    #[test]
    fn a_disabled_account_is_confirmed_only_while_still_disabled_in_a_group() {
        let found = reread(&["dave", "?carol"], &["carol", "dave"]);
        let (confirmed, alone) =
            found.disabled(vec![target("carol", 3), target("dave", 4), target("frank", 6)]).unwrap();
        // carol, still disabled, is the control (an ambiguous name elsewhere does not matter, as in the plan);
        // dave is an enabled member under the name too; frank is no longer read as disabled anywhere.
        assert_eq!(confirmed.iter().map(|t| t.id).collect::<Vec<_>>(), [3]);
        let alone: Vec<(&str, &str)> = alone.iter().map(|l| (l.username.as_str(), l.reason)).collect();
        assert_eq!(alone, [("dave", NOT_DISABLED), ("frank", NOT_DISABLED)]);
    }

    #[test]
    fn a_removal_is_confirmed_only_while_the_user_is_in_none_of_the_groups_feeding_it() {
        use crate::sync::plan::tests::{failed, group, snapshot};
        let groups = vec![group("A", &["alice", "Bob"]), group("B", &["carol"]), failed("C")];
        let found = Reread::of(&snapshot(groups));
        let placement = |u: &str| Placement { username: name(u), id: Some(1) };
        let fed_by = [GroupName::new("a")];
        let (confirmed, alone) = found.removals(&fed_by, vec![placement("bob"), placement("carol")]);
        // The control: carol, a member of B only, is removed from the group A feeds.
        assert_eq!(confirmed.iter().map(|p| p.username.as_str()).collect::<Vec<_>>(), ["carol"]);
        assert_eq!(alone.len(), 1);
        assert_eq!((alone[0].username.as_str(), alone[0].reason), ("bob", MEMBER_AGAIN_IN_GROUP));
        // A group the second read failed to read, or does not know, holds everyone: nothing removed on its
        // account.
        for fed_by in [[GroupName::new("B"), GroupName::new("C")], [GroupName::new("B"), GroupName::new("Z")]] {
            let (confirmed, alone) = found.removals(&fed_by, vec![placement("alice")]);
            assert!(confirmed.is_empty());
            assert_eq!(alone[0].reason, NOT_READ_AGAIN);
        }
    }

    #[test]
    fn a_group_that_failed_to_read_again_stops_the_leavers_not_the_disabled_accounts() {
        use crate::sync::plan::tests::{failed, group, snapshot};
        let whole = Reread::of(&snapshot(vec![group("A", &["alice"]), group("B", &["bob"])]));
        assert_eq!(whole.whole(), Ok(()), "the control");
        assert_eq!(whole.leavers(vec![target("alice", 1), target("zoe", 9)]).unwrap().0.len(), 1, "the control");
        let mut a = group("A", &["alice"]);
        if let Ok(g) = &mut a.result {
            g.disabled = vec![Arc::new(ldap::Member { username: name("dis"), dn: "uid=dis".into() })];
        }
        let partial = Reread::of(&snapshot(vec![a, failed("B")]));
        let error = partial.leavers(vec![target("zoe", 9)]).unwrap_err();
        assert!(error.starts_with("\"B\" could not be read"), "{error}");
        // Being disabled is the account's: a group that shows it is enough.
        assert_eq!(partial.disabled(vec![target("dis", 4)]).unwrap().0.len(), 1);
    }
}
