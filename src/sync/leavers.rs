//! Users who left, decided as a pure function. Called only for a *complete* run (every configured group
//! enumerated and not held, CloudShell's user list read, nothing interrupted); any other run leaves the
//! managed users untouched.
//!
//! The rules:
//! - a managed user is one seen as an effective member of a configured group in an earlier complete run
//!   (`state::Managed`); only managed users can be leavers;
//! - a managed user who is now an effective member of no configured group is a leaver (gone from the
//!   directory and disabled accounts included: they are effective members of nothing); a username that is
//!   ambiguous in the directory is neither seen nor a leaver this run;
//! - in a change read (the daemon between full reads), only a departure the change reads reported counts: a
//!   managed user seen as a member since the last full read and not now (`Seen::reported`); any other
//!   absent managed user waits, uncounted, for the next full read;
//! - a leaver is acted on after `grace_runs` consecutive complete runs and `grace_period` since the streak
//!   began (`leaver_since`), both; coming back resets them;
//! - never admins, users matching `protect`, local users (`DomainName` null), users already inactive, or users
//!   whose `IsAdmin` or `IsActive` CloudShell did not say (`super::activation::protection`);
//! - more to deactivate than `max_per_run`, or than `max_percent` of the managed users, holds them all; so
//!   does taking the deactivations of the last 24 hours (this program's, leavers and disabled accounts) past
//!   `max_per_day`, or past `max_percent_per_day` of the managed users active in CloudShell now
//!   ([`super::budget`]; only with a record of the last 24 hours, `Seen::last_24h`);
//! - a user this program deactivated who is an effective member again is reactivated (with `reactivate`), only
//!   when CloudShell lists the same id this program deactivated (`super::activation::returning`); another
//!   account under the name is left alone and reported, and so is one whose flags CloudShell did not say;
//! - a user deactivated for being disabled in the directory is the disabled-accounts step's
//!   (`super::disabled`): neither a leaver nor reactivated here.

// Keys are usernames from this run's own reads: FxHash (a million memberships hashed a run) is enough.
use rustc_hash::FxHashSet as HashSet;
use std::borrow::Cow;

use crate::cloudshell;
use crate::config::LeaverPolicy;
use crate::report::{ProtectedLine, Standing};
use crate::state::{Changes, Managed, ManagedUser, Stamp};
use crate::sync::activation::{Returning, Target, protection, returning};
use crate::sync::budget;
use crate::username::{NameIndex, Username};

/// A managed user who is a leaver in this run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leaver {
    pub username: Username,
    pub id: Option<i64>,
    /// Consecutive complete runs as a leaver, this one included.
    pub runs: u32,
    pub since: Option<String>,
    pub standing: Standing,
    /// Why a protected leaver is never deactivated (`Some` exactly when protected).
    pub reason: Option<&'static str>,
}

/// Why deactivations are held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub planned: usize,
    pub limit: usize,
    /// Which limit: `max_per_run`, `max_percent`, `max_per_day` or `max_percent_per_day`.
    pub by: &'static str,
    /// A daily budget's: the deactivations in the last 24 hours.
    pub last_24h: Option<usize>,
}

/// The leaver step of one complete run.
#[derive(Clone, Debug)]
pub struct LeaverPlan {
    /// The managed users this run changes or adds, as it leaves them before the writes' outcomes are recorded.
    pub changes: Changes,
    /// How many users are managed after this run.
    pub managed: usize,
    /// Every leaver, sorted by username.
    pub leavers: Vec<Leaver>,
    /// The candidates to deactivate (empty when held).
    pub deactivate: Vec<Target>,
    /// Users this program deactivated who are back.
    pub reactivate: Vec<Target>,
    /// Users this program deactivated who are back and are not reactivated, with why.
    pub left_alone: Vec<ProtectedLine>,
    /// In a change read: managed users absent whose departure no change read reported, sorted: they wait for
    /// the next full read, uncounted.
    pub unreported: Vec<Username>,
    pub held: Option<Held>,
}

/// What the run saw.
pub struct Seen<'a> {
    /// The effective members of every configured group: the run's own set, borrowed (a copy is 1 MB at
    /// 100,000 members).
    pub members: Cow<'a, HashSet<&'a Username>>,
    /// Usernames left out as ambiguous in the directory: neither seen nor leavers.
    pub ambiguous: HashSet<&'a Username>,
    /// Every CloudShell user (after this run's imports), by name.
    pub users: &'a UsersByName<'a>,
    /// This run's time, as written into the state.
    pub now: &'a str,
    /// Deactivations in the last 24 hours, by the audit trail (`None`: no record, the per-run limits only).
    pub last_24h: Option<usize>,
    /// In a change read: the users whose departure the change reads reported (members seen since the last
    /// full read who are not now); only they can be leavers. `None`: a full read, where any absence counts.
    pub reported: Option<&'a HashSet<Username>>,
}

/// CloudShell's users by username: their positions in the list, found by the hash of the folded name (four bytes
/// a user, where a map of references held sixteen: 1.5 MB less at 100,000 users, while the managed users are
/// loaded). A name listed twice finds its last user. Made at the first lookup, once in a run: the disabled-account
/// and leaver steps share it, and a run whose steps look nobody up makes none.
pub struct UsersByName<'a> {
    users: &'a [cloudshell::User],
    index: std::sync::OnceLock<NameIndex>,
}

/// The list itself, for the steps that go through it.
impl std::ops::Deref for UsersByName<'_> {
    type Target = [cloudshell::User];

    fn deref(&self) -> &[cloudshell::User] {
        self.users
    }
}

impl<'a> UsersByName<'a> {
    pub fn new(users: &'a [cloudshell::User]) -> UsersByName<'a> {
        UsersByName { users, index: std::sync::OnceLock::new() }
    }

    pub fn get(&self, username: &Username) -> Option<&'a cloudshell::User> {
        let users = self.users;
        // Sized once (this runs for every CloudShell user).
        let index = self.index.get_or_init(|| NameIndex::new(users.len(), |n| users[n].username.as_ref()));
        index.find(username.folded(), |n| users[n].username.as_ref()).map(|n| &users[n])
    }
}

/// Plans the leaver step.
pub fn plan(managed: &Managed, seen: &Seen<'_>, policy: &LeaverPolicy) -> LeaverPlan {
    let by_name = seen.users;
    let mut changes = Changes::new();
    let mut reactivate = Vec::new();
    let mut left_alone = Vec::new();
    // The managed users among the members: when that is all of them, nobody managed is a leaver.
    let mut managed_members = 0;
    for member in seen.members.iter() {
        let current = managed.users.get(member);
        managed_members += usize::from(current.is_some());
        let Some(user) = by_name.get(member) else { continue }; // not in CloudShell (yet): not managed yet
        // Most members are seen as they were: nothing to copy.
        let deactivated_here = |e: &ManagedUser| e.deactivated && !e.disabled_in_directory;
        if current.is_some_and(|e| e.seen_already(member, user.id, seen.now) && !deactivated_here(e)) {
            continue;
        }
        // The id this program deactivated, before `see` takes the one listed now.
        let recorded = current.and_then(|e| e.id);
        let mut entry = current.cloned().unwrap_or_else(|| ManagedUser::new((*member).clone(), seen.now));
        entry.see(member, user.id, seen.now);
        // Deactivated for being disabled in the directory: the disabled-accounts step reactivates them.
        if deactivated_here(&entry) {
            match returning(user, recorded) {
                Returning::Active => entry.deactivated = false, // someone made them active already
                Returning::Reactivate(id) if policy.reactivate => {
                    reactivate.push(Target { username: entry.username.clone(), id })
                }
                Returning::Reactivate(_) => {}
                Returning::Another(reason) => {
                    entry.deactivated = false;
                    left_alone.push(ProtectedLine { username: entry.username.to_string(), reason });
                }
                Returning::Unknown(reason) => {
                    // Keep the id this program deactivated, for the run that can read the user.
                    entry.id = recorded;
                    left_alone.push(ProtectedLine { username: entry.username.to_string(), reason });
                }
            }
        }
        if current != Some(&entry) {
            changes.insert(entry);
        }
    }
    let mut leavers = Vec::new();
    let mut unreported = Vec::new();
    let everyone_seen = managed_members == managed.users.len();
    for (key, entry) in managed.users.iter().filter(|_| !everyone_seen) {
        if seen.members.contains(key) || seen.ambiguous.contains(key) || entry.disabled_in_directory {
            continue;
        }
        if seen.reported.is_some_and(|reported| !reported.contains(key)) {
            unreported.push(entry.username.clone());
            continue;
        }
        let entry = changes.get_or_insert_with(key, || entry.clone());
        entry.leaver_runs += 1;
        entry.leaver_since.get_or_insert_with(|| Stamp::from(seen.now));
        let user = by_name.get(&entry.username);
        let (standing, reason) = standing(user, entry, seen.now, policy);
        let id = user.and_then(|u| u.id).or(entry.id);
        leavers.push(Leaver {
            username: entry.username.clone(),
            id,
            runs: entry.leaver_runs,
            since: entry.leaver_since.as_deref().map(str::to_string),
            standing,
            reason,
        });
    }
    leavers.sort_by(|a, b| a.username.cmp(&b.username));
    let candidates: Vec<Target> = leavers
        .iter()
        .filter(|l| l.standing == Standing::Candidate)
        .filter_map(|l| Some(Target { username: l.username.clone(), id: l.id? }))
        .collect();
    let planned = candidates.len();
    let count = managed.users.len() + changes.keys().filter(|k| !managed.users.contains_key(k)).count();
    let percent_limit = count * usize::from(policy.max_percent) / 100;
    let held = if planned > policy.max_per_run {
        Some(Held { planned, limit: policy.max_per_run, by: "max_per_run", last_24h: None })
    } else if planned * 100 > count * usize::from(policy.max_percent) {
        Some(Held { planned, limit: percent_limit, by: "max_percent", last_24h: None })
    } else {
        // Nothing to deactivate is never held: the managed users active in CloudShell (a pass over all of them
        // and over CloudShell's users) are counted only for a run that deactivates.
        seen.last_24h.filter(|_| planned > 0).and_then(|last_24h| {
            let active = budget::managed_active(managed, &changes, &seen.members, seen.users);
            let daily = budget::held(planned, last_24h, budget::deactivation_limit(policy, active))?;
            Some(Held { planned, limit: daily.limit, by: daily.key, last_24h: Some(last_24h) })
        })
    };
    let deactivate = if held.is_some() { Vec::new() } else { candidates };
    reactivate.sort_by(|a, b| a.username.cmp(&b.username));
    left_alone.sort_by_cached_key(|l| l.username.to_lowercase());
    unreported.sort();
    LeaverPlan { changes, managed: count, leavers, deactivate, reactivate, left_alone, unreported, held }
}

/// A leaver's standing, and why when protected, from the CloudShell user under their name (if any).
fn standing(
    user: Option<&cloudshell::User>,
    entry: &mut ManagedUser,
    now: &str,
    policy: &LeaverPolicy,
) -> (Standing, Option<&'static str>) {
    match user {
        None => (Standing::Gone, None),
        Some(u) if u.is_active == Some(false) => (Standing::Inactive, None),
        Some(u) => match protection(u, entry.username.as_str(), Some(policy)) {
            Some(why) => (Standing::Protected, Some(why)),
            None if u.id.is_none() => (Standing::Gone, None),
            None if entry.leaver_runs < policy.grace_runs => (Standing::Waiting, None),
            None if within_grace_period(&mut entry.leaver_since, now, policy.grace_period) => (Standing::Waiting, None),
            None => (Standing::Candidate, None),
        },
    }
}

/// Whether a leaver streak that began at `since` is still within `period` at `now`. A beginning that is not a
/// time (a hand-edited state) starts the period again now, rather than being taken as long ago.
fn within_grace_period(since: &mut Option<Stamp>, now: &str, period: std::time::Duration) -> bool {
    if period.is_zero() {
        return false;
    }
    let Ok(now_at) = humantime::parse_rfc3339(now) else { return true }; // this run's own time: always one
    match since.as_deref().map(humantime::parse_rfc3339) {
        Some(Ok(began)) => now_at.duration_since(began).map_or(true, |elapsed| elapsed < period),
        _ => {
            *since = Some(Stamp::from(now));
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LeaverAction;
    use crate::sync::activation::{ANOTHER_ACCOUNT, IS_ACTIVE_UNKNOWN, IS_ADMIN_UNKNOWN};

    fn policy(grace_runs: u32, max_per_run: usize, max_percent: u8, protect: &[&str]) -> LeaverPolicy {
        LeaverPolicy {
            grace_runs,
            max_per_run,
            max_percent,
            ..LeaverPolicy::for_tests(LeaverAction::Deactivate, protect)
        }
    }

    fn user(id: i64, name: &str, active: bool, admin: bool, from_directory: bool) -> cloudshell::User {
        cloudshell::User {
            id: Some(id),
            username: Username::new(name),
            is_active: Some(active),
            is_admin: Some(admin),
            domain_name: from_directory.then(|| "EXAMPLE".into()),
            group_ids: None,
        }
    }

    fn names(v: &[Username]) -> Cow<'_, HashSet<&Username>> {
        Cow::Owned(v.iter().collect())
    }

    #[test]
    fn cloudshell_users_are_found_as_usernames_compare_a_name_listed_twice_by_its_last_user() {
        let blank = cloudshell::User { username: None, ..user(4, "x", true, false, true) };
        let users = [
            user(1, "bob", true, false, true),
            blank,
            user(2, "Bob", true, false, true),
            user(3, "al", true, false, true),
        ];
        let by_name = UsersByName::new(&users);
        let id = |name: &str| by_name.get(&Username::new(name).unwrap()).and_then(|u| u.id);
        assert_eq!([id("BOB"), id("al"), id("carol"), id("x")], [Some(2), Some(3), None, None]);
    }

    fn u(names: &[&str]) -> Vec<Username> {
        names.iter().map(|n| Username::new(n).unwrap()).collect()
    }

    /// Runs `plan` with `members` seen, returning the plan; `managed` becomes its `next`.
    fn step(managed: &mut Managed, members: &[&str], users: &[cloudshell::User], policy: &LeaverPolicy) -> LeaverPlan {
        let members = u(members);
        let seen = Seen {
            members: names(&members),
            ambiguous: HashSet::default(),
            users: &UsersByName::new(users),
            now: "t",
            last_24h: None,
            reported: None,
        };
        let p = plan(managed, &seen, policy);
        *managed = managed.with(&p.changes);
        p
    }

    fn standing(p: &LeaverPlan, name: &str) -> Option<Standing> {
        p.leavers.iter().find(|l| l.username.as_str() == name).map(|l| l.standing)
    }

    fn protected(p: &LeaverPlan, name: &str) -> Option<(Standing, Option<&'static str>)> {
        p.leavers.iter().find(|l| l.username.as_str() == name).map(|l| (l.standing, l.reason))
    }

    fn target(name: &str, id: i64) -> Target {
        Target { username: Username::new(name).unwrap(), id }
    }

    fn key(name: &str) -> Username {
        Username::new(name).unwrap()
    }

    /// As many members as managed users, one of them new: the managed user who is no longer a member is still
    /// a leaver (the pass over the managed users is skipped only when every one of them is a member), and is
    /// deactivated (the positive control); when every managed user is a member, nobody is.
    #[test]
    fn a_new_member_does_not_hide_a_leaver_of_the_same_count() {
        let users =
            [user(1, "alice", true, false, true), user(2, "bob", true, false, true), user(3, "cy", true, false, true)];
        let mut m = Managed::default();
        step(&mut m, &["alice", "bob"], &users, &policy(1, 20, 100, &[]));
        let p = step(&mut m, &["alice", "bob"], &users, &policy(1, 20, 100, &[]));
        assert!(p.leavers.is_empty() && p.deactivate.is_empty());
        let p = step(&mut m, &["alice", "cy"], &users, &policy(1, 20, 100, &[]));
        assert_eq!(p.deactivate, [target("bob", 2)]);
    }

    /// In a change read only the reported departures count: an absent managed user the change reads did not
    /// report is neither counted nor deactivated, and is listed as waiting; the reported one is deactivated (the
    /// positive control).
    #[test]
    fn in_a_change_read_only_a_reported_departure_is_a_leaver() {
        let users =
            [user(1, "alice", true, false, true), user(2, "bob", true, false, true), user(3, "cy", true, false, true)];
        let mut m = Managed::default();
        step(&mut m, &["alice", "bob", "cy"], &users, &policy(1, 20, 100, &[]));
        let members = u(&["alice"]);
        let reported: HashSet<Username> = u(&["bob"]).into_iter().collect();
        let seen = Seen {
            members: names(&members),
            ambiguous: HashSet::default(),
            users: &UsersByName::new(&users),
            now: "t",
            last_24h: None,
            reported: Some(&reported),
        };
        let p = plan(&m, &seen, &policy(1, 100, 100, &[]));
        assert_eq!(p.deactivate, [target("bob", 2)]);
        assert_eq!(p.unreported, u(&["cy"]));
        assert_eq!(standing(&p, "cy"), None, "not a leaver in this run");
        assert!(!p.changes.contains_key(&key("cy")), "not counted: its leaver streak is left as it was");
        let full = Seen { reported: None, ..seen };
        let p = plan(&m, &full, &policy(1, 100, 100, &[]));
        assert_eq!(p.deactivate, [target("bob", 2), target("cy", 3)], "a full read counts every absence");
    }

    #[test]
    fn only_users_seen_in_a_complete_run_are_managed_and_only_they_can_leave() {
        let users = [
            user(1, "alice", true, false, true),
            user(2, "Bob", true, false, true),
            user(3, "handmade", true, false, true),
        ];
        let mut m = Managed::default();
        let p = step(&mut m, &["alice", "bob", "zoe"], &users, &policy(1, 20, 100, &[]));
        let mut keys: Vec<&str> = m.users.keys().map(Username::folded).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["alice", "bob"], "zoe is not in CloudShell: not managed yet");
        assert_eq!(m.users[&key("bob")].username.as_str(), "bob");
        assert!(p.leavers.is_empty(), "handmade was never seen: never a leaver");
        let p = step(&mut m, &["alice"], &users, &policy(1, 20, 100, &[]));
        assert_eq!(p.deactivate, [target("bob", 2)]);
        assert_eq!(standing(&p, "handmade"), None);
    }

    #[test]
    fn grace_counts_consecutive_complete_runs_and_coming_back_resets_it() {
        let users = [user(1, "alice", true, false, true), user(2, "bob", true, false, true)];
        let pol = policy(3, 20, 100, &[]);
        let mut m = Managed::default();
        step(&mut m, &["alice", "bob"], &users, &pol);
        assert_eq!(standing(&step(&mut m, &["alice"], &users, &pol), "bob"), Some(Standing::Waiting));
        assert_eq!(standing(&step(&mut m, &["alice"], &users, &pol), "bob"), Some(Standing::Waiting));
        step(&mut m, &["alice", "bob"], &users, &pol); // back: reset
        assert_eq!(m.users[&key("bob")].leaver_runs, 0);
        step(&mut m, &["alice"], &users, &pol);
        step(&mut m, &["alice"], &users, &pol);
        let p = step(&mut m, &["alice"], &users, &pol);
        assert_eq!((standing(&p, "bob"), p.deactivate.len()), (Some(Standing::Candidate), 1), "the third run in a row");
        assert_eq!(p.leavers[0].runs, 3);
    }

    #[test]
    fn admins_protected_names_local_users_and_inactive_users_are_never_deactivated() {
        let users = [
            user(1, "boss", true, true, true),
            user(2, "svc-backup", true, false, true),
            user(3, "localla", true, false, false),
            user(4, "asleep", false, false, true),
            user(5, "alice", true, false, true),
        ];
        let pol = policy(1, 20, 100, &["SVC-*"]);
        let mut m = Managed::default();
        step(&mut m, &["boss", "svc-backup", "localla", "asleep", "alice"], &users, &pol);
        let p = step(&mut m, &[], &users, &pol);
        assert_eq!(protected(&p, "boss"), Some((Standing::Protected, Some("an administrator"))));
        assert_eq!(protected(&p, "svc-backup"), Some((Standing::Protected, Some("sync.leavers.protect"))));
        assert_eq!(protected(&p, "localla"), Some((Standing::Protected, Some("a local user"))));
        assert_eq!(protected(&p, "asleep"), Some((Standing::Inactive, None)));
        assert_eq!(p.deactivate, [target("alice", 5)]);
        let p = step(&mut m, &[], &users[..4], &pol);
        assert_eq!(standing(&p, "alice"), Some(Standing::Gone), "deleted from CloudShell");
    }

    #[test]
    fn too_many_leavers_hold_every_deactivation() {
        let users: Vec<cloudshell::User> = (0..20).map(|n| user(n, &format!("u{n:02}"), true, false, true)).collect();
        let all: Vec<&str> = users.iter().filter_map(|u| u.username.as_ref()).map(Username::as_str).collect();
        let run = |pol: LeaverPolicy, left: usize| {
            let mut m = Managed::default();
            step(&mut m, &all, &users, &pol);
            step(&mut m, &all[left..], &users, &pol)
        };
        let p = run(policy(1, 2, 100, &[]), 3);
        assert_eq!(p.held, Some(Held { planned: 3, limit: 2, by: "max_per_run", last_24h: None }));
        assert!(p.deactivate.is_empty());
        assert_eq!(run(policy(1, 3, 100, &[]), 3).deactivate.len(), 3, "exactly the limit is allowed");
        let p = run(policy(1, 20, 10, &[]), 3);
        assert_eq!(
            p.held,
            Some(Held { planned: 3, limit: 2, by: "max_percent", last_24h: None }),
            "3 of 20 is over 10 %"
        );
        assert_eq!(run(policy(1, 20, 10, &[]), 2).deactivate.len(), 2, "2 of 20 is 10 %");
    }

    /// 20 managed users, `left` of them leavers this run, with `last_24h` deactivations already made.
    fn daily(pol: &LeaverPolicy, left: usize, last_24h: Option<usize>, users: &[cloudshell::User]) -> LeaverPlan {
        let all: Vec<&str> = users.iter().filter_map(|u| u.username.as_ref()).map(Username::as_str).collect();
        let mut m = Managed::default();
        step(&mut m, &all, users, pol);
        let members = u(&all[left..]);
        let seen = Seen {
            members: names(&members),
            ambiguous: HashSet::default(),
            users: &UsersByName::new(users),
            now: "t",
            last_24h,
            reported: None,
        };
        plan(&m, &seen, pol)
    }

    #[test]
    fn deactivations_that_would_take_the_last_24_hours_past_max_per_day_hold_them_all() {
        let users: Vec<cloudshell::User> = (0..20).map(|n| user(n, &format!("u{n:02}"), true, false, true)).collect();
        let pol = LeaverPolicy { max_per_day: 5, max_percent_per_day: 100, ..policy(1, 20, 100, &[]) };
        assert_eq!(daily(&pol, 3, Some(2), &users).deactivate.len(), 3, "2 + 3 is exactly the budget");
        let p = daily(&pol, 3, Some(3), &users);
        assert_eq!(p.held, Some(Held { planned: 3, limit: 5, by: "max_per_day", last_24h: Some(3) }), "one over");
        assert!(p.deactivate.is_empty(), "all or nothing");
        assert_eq!(daily(&pol, 3, None, &users).deactivate.len(), 3, "no record: the per-run limits only");
        assert_eq!(daily(&pol, 0, Some(50), &users).held, None, "nothing to deactivate: nothing held");
        let per_run = LeaverPolicy { max_per_run: 2, ..pol.clone() };
        assert_eq!(daily(&per_run, 3, Some(3), &users).held.map(|h| h.by), Some("max_per_run"), "per run first");
    }

    #[test]
    fn the_daily_percentage_is_of_the_managed_users_active_in_cloudshell_now() {
        // 20 managed, 10 of them inactive in CloudShell (not leavers): 20 % of the 10 active is 2.
        let mut users: Vec<cloudshell::User> =
            (0..20).map(|n| user(n, &format!("u{n:02}"), true, false, true)).collect();
        let pol = LeaverPolicy { max_per_day: 100, max_percent_per_day: 20, ..policy(1, 20, 100, &[]) };
        assert_eq!(daily(&pol, 3, Some(1), &users).deactivate.len(), 3, "20 % of 20 is 4: 1 + 3 fits");
        for u in &mut users[10..] {
            u.is_active = Some(false);
        }
        let p = daily(&pol, 3, Some(0), &users);
        assert_eq!(p.held, Some(Held { planned: 3, limit: 2, by: "max_percent_per_day", last_24h: Some(0) }));
        assert_eq!(daily(&pol, 2, Some(0), &users).deactivate.len(), 2, "2 of 10 active is 20 %");
        assert_eq!(daily(&pol, 2, Some(1), &users).held.map(|h| h.limit), Some(2), "1 + 2 is one over");
    }

    #[test]
    fn a_user_this_program_deactivated_is_reactivated_when_back() {
        let mut users = vec![user(1, "alice", true, false, true), user(2, "bob", true, false, true)];
        let pol = policy(1, 20, 100, &[]);
        let mut m = Managed::default();
        step(&mut m, &["alice", "bob"], &users, &pol);
        step(&mut m, &["alice"], &users, &pol);
        m.users.get_mut(&key("bob")).unwrap().deactivated = true; // the apply step records this
        users[1].is_active = Some(false);
        let p = step(&mut m, &["alice"], &users, &pol);
        assert_eq!((standing(&p, "bob"), p.deactivate.len()), (Some(Standing::Inactive), 0), "not twice");
        let p = step(&mut m, &["alice", "bob"], &users, &pol);
        assert_eq!(p.reactivate, [target("bob", 2)]);
        let no = LeaverPolicy { reactivate: false, ..pol.clone() };
        assert!(step(&mut m.clone(), &["alice", "bob"], &users, &no).reactivate.is_empty());
        // Inactive but not by this program: left alone.
        users[0].is_active = Some(false);
        assert!(step(&mut m, &["alice", "bob"], &users, &pol).reactivate.iter().all(|t| t.username != key("alice")));
    }

    #[test]
    fn a_leaver_whose_active_or_admin_flag_is_unknown_is_never_deactivated() {
        let users = [
            cloudshell::User { is_active: None, ..user(1, "noactive", true, false, true) },
            cloudshell::User { is_admin: None, ..user(2, "noadmin", true, false, true) },
            user(3, "alice", true, false, true),
        ];
        let pol = policy(1, 20, 100, &[]);
        let mut m = Managed::default();
        step(&mut m, &["noactive", "noadmin", "alice"], &users, &pol);
        let p = step(&mut m, &[], &users, &pol);
        assert_eq!(protected(&p, "noactive"), Some((Standing::Protected, Some(IS_ACTIVE_UNKNOWN))));
        assert_eq!(protected(&p, "noadmin"), Some((Standing::Protected, Some(IS_ADMIN_UNKNOWN))));
        assert_eq!(p.deactivate, [target("alice", 3)], "the control: a known leaver is deactivated");
    }

    #[test]
    fn a_user_back_under_another_account_or_unknown_flags_is_left_alone_and_reported() {
        let pol = policy(1, 20, 100, &[]);
        let mut m = Managed::default();
        let users = [user(1, "alice", true, false, true), user(2, "bob", true, false, true)];
        step(&mut m, &["alice", "bob"], &users, &pol);
        for name in ["alice", "bob"] {
            m.users.get_mut(&key(name)).unwrap().deactivated = true; // deactivated by this program as leavers
        }
        // alice is deleted and created again (a new id, inactive); bob's IsActive is not said.
        let back = [
            user(11, "alice", false, false, true),
            cloudshell::User { is_active: None, ..user(2, "bob", false, false, true) },
        ];
        let p = step(&mut m, &["alice", "bob"], &back, &pol);
        assert!(p.reactivate.is_empty(), "{p:?}");
        let left: Vec<(&str, &str)> = p.left_alone.iter().map(|l| (l.username.as_str(), l.reason)).collect();
        assert_eq!(left, [("alice", ANOTHER_ACCOUNT), ("bob", IS_ACTIVE_UNKNOWN)]);
        let (alice, bob) = (&m.users[&key("alice")], &m.users[&key("bob")]);
        assert_eq!((alice.deactivated, alice.id), (false, Some(11)), "the new account is not this program's");
        assert_eq!((bob.deactivated, bob.id), (true, Some(2)), "kept for a run that can read bob");
        // The next run: alice stays alone; bob read inactive, the same id: the control, reactivated.
        let p = step(&mut m, &["alice", "bob"], &[back[0].clone(), user(2, "bob", false, false, true)], &pol);
        assert_eq!(p.reactivate, [target("bob", 2)]);
        assert!(p.left_alone.is_empty(), "reported once: {p:?}");
    }

    #[test]
    fn grace_period_holds_a_leaver_until_that_long_after_the_streak_began() {
        let users = [user(1, "alice", true, false, true), user(2, "bob", true, false, true)];
        let pol = LeaverPolicy { grace_period: std::time::Duration::from_secs(3600), ..policy(2, 20, 100, &[]) };
        let at = |members: &[&str], m: &mut Managed, now: &str| {
            let members = u(members);
            let seen = Seen {
                members: names(&members),
                ambiguous: HashSet::default(),
                users: &UsersByName::new(&users),
                now,
                last_24h: None,
                reported: None,
            };
            let p = plan(m, &seen, &pol);
            *m = m.with(&p.changes);
            p
        };
        let mut m = Managed::default();
        at(&["alice", "bob"], &mut m, "2026-01-01T00:00:00Z");
        let p = at(&["alice"], &mut m, "2026-01-01T00:00:00Z");
        assert_eq!(p.leavers[0].since.as_deref(), Some("2026-01-01T00:00:00Z"));
        let p = at(&["alice"], &mut m, "2026-01-01T00:59:59Z");
        assert_eq!((standing(&p, "bob"), p.leavers[0].runs), (Some(Standing::Waiting), 2), "runs done, not the time");
        let p = at(&["alice"], &mut m, "2026-01-01T01:00:00Z");
        assert_eq!(p.deactivate, [target("bob", 2)], "an hour after the streak began");

        // Time alone is not enough either: grace_runs still counts.
        let mut m = Managed::default();
        at(&["alice", "bob"], &mut m, "2026-01-01T00:00:00Z");
        let p = at(&["alice"], &mut m, "2026-01-02T00:00:00Z");
        assert_eq!(standing(&p, "bob"), Some(Standing::Waiting));

        // A beginning that is not a time starts the period again.
        let bob = m.users.get_mut(&key("bob")).unwrap();
        bob.leaver_since = Some("garbage".into());
        let p = at(&["alice"], &mut m, "2026-01-03T00:00:00Z");
        assert_eq!(standing(&p, "bob"), Some(Standing::Waiting));
        assert_eq!(m.users[&key("bob")].leaver_since.as_deref(), Some("2026-01-03T00:00:00Z"));
    }

    #[test]
    fn an_ambiguous_username_is_neither_seen_nor_a_leaver() {
        let users = [user(1, "alice", true, false, true), user(2, "dup", true, false, true)];
        let pol = policy(1, 20, 100, &[]);
        let mut m = Managed::default();
        step(&mut m, &["alice", "dup"], &users, &pol);
        let members = u(&["alice"]);
        let dup = u(&["dup"]);
        let seen = Seen {
            members: names(&members),
            ambiguous: names(&dup).into_owned(),
            users: &UsersByName::new(&users),
            now: "t2",
            last_24h: None,
            reported: None,
        };
        let p = plan(&m, &seen, &pol);
        assert!(p.leavers.is_empty() && p.deactivate.is_empty());
        assert_eq!(m.with(&p.changes).users[&key("dup")].last_seen, "t", "not seen either");
    }
}
