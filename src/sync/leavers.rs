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
//! - a leaver is acted on after `grace_runs` consecutive complete runs; coming back resets the count;
//! - never admins, users matching `protect`, local users (`DomainName` null), or users already inactive;
//! - more to deactivate than `max_per_run`, or than `max_percent` of the managed users, holds them all;
//! - a user this program deactivated who is an effective member again is reactivated (with `reactivate`);
//! - a user deactivated for being disabled in the directory is the disabled-accounts step's
//!   (`super::disabled`): neither a leaver nor reactivated here.

use std::collections::{HashMap, HashSet};

use crate::cloudshell;
use crate::config::LeaverPolicy;
use crate::report::Standing;
use crate::state::Managed;
use crate::sync::activation::{Target, protection};
use crate::username::Username;

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
    /// Which limit: `max_per_run` or `max_percent`.
    pub by: &'static str,
}

/// The leaver step of one complete run.
#[derive(Clone, Debug)]
pub struct LeaverPlan {
    /// The managed users after this run, before the writes' outcomes are recorded.
    pub next: Managed,
    /// Every leaver, sorted by username.
    pub leavers: Vec<Leaver>,
    /// The candidates to deactivate (empty when held).
    pub deactivate: Vec<Target>,
    /// Users this program deactivated who are back.
    pub reactivate: Vec<Target>,
    pub held: Option<Held>,
}

/// What the run saw.
pub struct Seen<'a> {
    /// The effective members of every configured group.
    pub members: HashSet<&'a Username>,
    /// Usernames left out as ambiguous in the directory: neither seen nor leavers.
    pub ambiguous: HashSet<&'a Username>,
    /// Every CloudShell user (after this run's imports).
    pub users: &'a [cloudshell::User],
    /// This run's time, as written into the state.
    pub now: &'a str,
}

/// Plans the leaver step.
pub fn plan(managed: &Managed, seen: &Seen<'_>, policy: &LeaverPolicy) -> LeaverPlan {
    let by_name: HashMap<&Username, &cloudshell::User> =
        seen.users.iter().filter_map(|u| Some((u.username.as_ref()?, u))).collect();
    let mut next = managed.clone();
    let mut reactivate = Vec::new();
    for member in &seen.members {
        let Some(user) = by_name.get(*member) else { continue }; // not in CloudShell (yet): not managed yet
        let entry = next.seen(member, user.id, seen.now);
        // Deactivated for being disabled in the directory: the disabled-accounts step reactivates them.
        if entry.deactivated && !entry.disabled_in_directory {
            match (user.is_active, user.id) {
                (true, _) => entry.deactivated = false, // someone made them active already
                (false, Some(id)) if policy.reactivate => {
                    reactivate.push(Target { username: entry.username.clone(), id })
                }
                _ => {}
            }
        }
    }
    let mut leavers = Vec::new();
    for (key, entry) in next.users.iter_mut() {
        if seen.members.contains(key) || seen.ambiguous.contains(key) || entry.disabled_in_directory {
            continue;
        }
        entry.leaver_runs += 1;
        entry.leaver_since.get_or_insert_with(|| seen.now.to_string());
        let user = by_name.get(&entry.username).copied();
        let (standing, reason) = match user {
            None => (Standing::Gone, None),
            Some(u) if !u.is_active => (Standing::Inactive, None),
            Some(u) => match protection(u, entry.username.as_str(), Some(policy)) {
                Some(why) => (Standing::Protected, Some(why)),
                None if u.id.is_none() => (Standing::Gone, None),
                None if entry.leaver_runs < policy.grace_runs => (Standing::Waiting, None),
                None => (Standing::Candidate, None),
            },
        };
        let id = user.and_then(|u| u.id).or(entry.id);
        leavers.push(Leaver {
            username: entry.username.clone(),
            id,
            runs: entry.leaver_runs,
            since: entry.leaver_since.clone(),
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
    let percent_limit = next.users.len() * usize::from(policy.max_percent) / 100;
    let held = if planned > policy.max_per_run {
        Some(Held { planned, limit: policy.max_per_run, by: "max_per_run" })
    } else if planned * 100 > next.users.len() * usize::from(policy.max_percent) {
        Some(Held { planned, limit: percent_limit, by: "max_percent" })
    } else {
        None
    };
    let deactivate = if held.is_some() { Vec::new() } else { candidates };
    reactivate.sort_by(|a, b| a.username.cmp(&b.username));
    LeaverPlan { next, leavers, deactivate, reactivate, held }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LeaverAction;

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
            is_active: active,
            is_admin: admin,
            domain_name: from_directory.then(|| "EXAMPLE".into()),
            group_ids: None,
        }
    }

    fn names(v: &[Username]) -> HashSet<&Username> {
        v.iter().collect()
    }

    fn u(names: &[&str]) -> Vec<Username> {
        names.iter().map(|n| Username::new(n).unwrap()).collect()
    }

    /// Runs `plan` with `members` seen, returning the plan; `managed` becomes its `next`.
    fn step(managed: &mut Managed, members: &[&str], users: &[cloudshell::User], policy: &LeaverPolicy) -> LeaverPlan {
        let members = u(members);
        let seen = Seen { members: names(&members), ambiguous: HashSet::new(), users, now: "t" };
        let p = plan(managed, &seen, policy);
        *managed = p.next.clone();
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

    #[test]
    fn only_users_seen_in_a_complete_run_are_managed_and_only_they_can_leave() {
        let users = [
            user(1, "alice", true, false, true),
            user(2, "Bob", true, false, true),
            user(3, "handmade", true, false, true),
        ];
        let mut m = Managed::default();
        let p = step(&mut m, &["alice", "bob", "zoe"], &users, &policy(1, 20, 100, &[]));
        let keys: Vec<&str> = m.users.keys().map(Username::folded).collect();
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
        assert_eq!(p.held, Some(Held { planned: 3, limit: 2, by: "max_per_run" }));
        assert!(p.deactivate.is_empty());
        assert_eq!(run(policy(1, 3, 100, &[]), 3).deactivate.len(), 3, "exactly the limit is allowed");
        let p = run(policy(1, 20, 10, &[]), 3);
        assert_eq!(p.held, Some(Held { planned: 3, limit: 2, by: "max_percent" }), "3 of 20 is over 10 %");
        assert_eq!(run(policy(1, 20, 10, &[]), 2).deactivate.len(), 2, "2 of 20 is 10 %");
    }

    #[test]
    fn a_user_this_program_deactivated_is_reactivated_when_back() {
        let mut users = vec![user(1, "alice", true, false, true), user(2, "bob", true, false, true)];
        let pol = policy(1, 20, 100, &[]);
        let mut m = Managed::default();
        step(&mut m, &["alice", "bob"], &users, &pol);
        step(&mut m, &["alice"], &users, &pol);
        m.users.get_mut(&key("bob")).unwrap().deactivated = true; // the apply step records this
        users[1].is_active = false;
        let p = step(&mut m, &["alice"], &users, &pol);
        assert_eq!((standing(&p, "bob"), p.deactivate.len()), (Some(Standing::Inactive), 0), "not twice");
        let p = step(&mut m, &["alice", "bob"], &users, &pol);
        assert_eq!(p.reactivate, [target("bob", 2)]);
        let no = LeaverPolicy { reactivate: false, ..pol.clone() };
        assert!(step(&mut m.clone(), &["alice", "bob"], &users, &no).reactivate.is_empty());
        // Inactive but not by this program: left alone.
        users[0].is_active = false;
        assert!(step(&mut m, &["alice", "bob"], &users, &pol).reactivate.iter().all(|t| t.username != key("alice")));
    }

    #[test]
    fn an_ambiguous_username_is_neither_seen_nor_a_leaver() {
        let users = [user(1, "alice", true, false, true), user(2, "dup", true, false, true)];
        let pol = policy(1, 20, 100, &[]);
        let mut m = Managed::default();
        step(&mut m, &["alice", "dup"], &users, &pol);
        let members = u(&["alice"]);
        let dup = u(&["dup"]);
        let seen = Seen { members: names(&members), ambiguous: names(&dup), users: &users, now: "t2" };
        let p = plan(&m, &seen, &pol);
        assert!(p.leavers.is_empty() && p.deactivate.is_empty());
        assert_eq!(p.next.users[&key("dup")].last_seen, "t", "not seen either");
    }
}
