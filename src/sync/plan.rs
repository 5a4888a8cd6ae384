//! The decision, as a pure function: directory snapshot + CloudShell users + policy → [`Plan`]. No I/O, so
//! every rule is tested here with plain tables.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::ldap::{self, Collision, Member, Snapshot};
use crate::username::Username;

/// Limits on what one run may write.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// More planned user imports than this hold every write.
    pub max_imports_per_run: usize,
    /// A group whose membership shrank by more than this percentage since its last good count is held.
    pub max_shrink_percent: u8,
    /// Each group's member count at the last good run (by configured name); empty disables the guard.
    pub last_good: HashMap<String, usize>,
}

/// A membership drop the guard stopped: a sign of a broken filter or a half-replicated directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shrink {
    pub previous: usize,
    pub now: usize,
}

/// Whether going from `previous` to `now` members shrinks by more than `max_percent`.
fn shrank_too_much(previous: usize, now: usize, max_percent: u8) -> bool {
    previous > now && (previous - now) * 100 > previous * usize::from(max_percent)
}

/// What to do about one configured group.
#[derive(Clone, Debug)]
pub enum GroupPlan {
    /// Enumeration failed: the group is skipped, never read as empty.
    Failed { name: String, error: ldap::Error },
    /// Enumerated.
    Ready(ReadyGroup),
}

impl GroupPlan {
    pub fn name(&self) -> &str {
        match self {
            GroupPlan::Failed { name, .. } => name,
            GroupPlan::Ready(g) => &g.name,
        }
    }
}

/// An enumerated group and what it lacks in CloudShell.
#[derive(Clone, Debug)]
pub struct ReadyGroup {
    /// The configured name.
    pub name: String,
    pub group: ldap::Group,
    /// Members missing in CloudShell (compared case-insensitively).
    pub missing: Vec<Arc<Member>>,
    /// The missing members this group imports: those not already claimed by an earlier group.
    pub to_import: Vec<Arc<Member>>,
    /// Members left out because their username is ambiguous in the directory.
    pub collisions: Vec<Collision>,
    /// Set when the shrink guard holds this group: nothing is imported for it.
    pub shrink: Option<Shrink>,
}

impl ReadyGroup {
    /// Whether this group needs an import call at all.
    pub fn needs_import(&self) -> bool {
        !self.to_import.is_empty()
    }
}

/// The plan of one run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// In the configured order.
    pub groups: Vec<GroupPlan>,
    /// Distinct users to import, over all groups.
    pub planned_imports: usize,
    /// Set when the plan exceeds `max_imports_per_run`: nothing may be written.
    pub held: Option<Held>,
}

/// Why a plan is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    pub planned: usize,
    pub limit: usize,
}

/// Computes the plan.
pub fn plan<'a>(snapshot: Snapshot, cloudshell_users: impl IntoIterator<Item = &'a Username>, policy: Policy) -> Plan {
    let existing: HashSet<&Username> = cloudshell_users.into_iter().collect();
    let mut claimed: HashSet<Username> = HashSet::new();
    let mut groups = Vec::with_capacity(snapshot.groups.len());
    for outcome in snapshot.groups {
        let group = match outcome.result {
            Err(error) => {
                groups.push(GroupPlan::Failed { name: outcome.name, error });
                continue;
            }
            Ok(group) => group,
        };
        let missing: Vec<&Arc<Member>> = group.members.iter().filter(|m| !existing.contains(&m.username)).collect();
        let shrink = policy
            .last_good
            .get(&outcome.name)
            .filter(|&&previous| shrank_too_much(previous, group.members.len(), policy.max_shrink_percent))
            .map(|&previous| Shrink { previous, now: group.members.len() });
        let to_import: Vec<Arc<Member>> = if shrink.is_some() {
            Vec::new()
        } else {
            missing.iter().filter(|m| claimed.insert(m.username.clone())).map(|m| (*m).clone()).collect()
        };
        let missing: Vec<Arc<Member>> = missing.into_iter().cloned().collect();
        let collisions = group.collisions.clone();
        groups.push(GroupPlan::Ready(ReadyGroup { name: outcome.name, group, missing, to_import, collisions, shrink }));
    }
    let planned_imports = claimed.len();
    let held = (planned_imports > policy.max_imports_per_run)
        .then_some(Held { planned: planned_imports, limit: policy.max_imports_per_run });
    Plan { groups, planned_imports, held }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ldap::{Group, GroupOutcome, Source};

    fn u(name: &str) -> Username {
        Username::new(name).unwrap()
    }

    fn member(name: &str) -> Member {
        Member { username: u(name), dn: format!("uid={name},ou=people,dc=x"), display_name: None, email: None }
    }

    fn group(name: &str, members: &[&str]) -> GroupOutcome {
        GroupOutcome {
            name: name.to_string(),
            result: Ok(Group {
                name: name.to_string(),
                dn: format!("cn={name},dc=x"),
                members: members.iter().map(|m| Arc::new(member(m))).collect(),
                sources: vec![Source {
                    name: name.to_string(),
                    dn: format!("cn={name},dc=x"),
                    direct_members: members.iter().map(|m| Arc::new(member(m))).collect(),
                    disabled_members: 0,
                }],
                collisions: vec![],
                skipped_members: 0,
                disabled_members: 0,
            }),
        }
    }

    fn failed(name: &str) -> GroupOutcome {
        GroupOutcome {
            name: name.to_string(),
            result: Err(ldap::Error::Search {
                url: "ldap://x".into(),
                operation: "the group search".into(),
                reason: "connection reset".into(),
            }),
        }
    }

    fn snapshot(groups: Vec<GroupOutcome>) -> Snapshot {
        Snapshot { groups, users_seen: 0, searches: 0, served_by: "ldap://x".into() }
    }

    fn run(groups: Vec<GroupOutcome>, existing: &[&str], limit: usize) -> Plan {
        let existing: Vec<Username> = existing.iter().map(|e| u(e)).collect();
        plan(snapshot(groups), &existing, Policy { max_imports_per_run: limit, ..Default::default() })
    }

    fn ready(plan: &Plan, n: usize) -> &ReadyGroup {
        match &plan.groups[n] {
            GroupPlan::Ready(g) => g,
            other => panic!("{other:?}"),
        }
    }

    fn names(members: &[Arc<Member>]) -> Vec<&str> {
        members.iter().map(|m| m.username.as_str()).collect()
    }

    #[test]
    fn imports_members_missing_from_cloudshell_case_insensitively() {
        let p = run(vec![group("Team", &["alice", "Bob", "carol"])], &["admin", "BOB"], 100);
        let team = ready(&p, 0);
        assert_eq!(names(&team.to_import), ["alice", "carol"]);
        assert_eq!(team.missing.iter().map(|m| m.username.clone()).collect::<Vec<_>>(), [u("alice"), u("carol")]);
        assert!(team.needs_import());
        assert_eq!(p.planned_imports, 2);
        assert!(p.held.is_none());
    }

    #[test]
    fn groups_with_nothing_missing_need_no_call() {
        let p = run(vec![group("Team", &["alice"]), group("Empty", &[])], &["ALICE"], 100);
        assert!(!ready(&p, 0).needs_import());
        assert!(!ready(&p, 1).needs_import());
        assert_eq!(p.planned_imports, 0);
    }

    #[test]
    fn users_in_several_groups_are_imported_once() {
        let p =
            run(vec![group("A", &["alice", "bob"]), group("B", &["Bob", "carol"]), group("C", &["alice"])], &[], 100);
        assert_eq!(names(&ready(&p, 0).to_import), ["alice", "bob"]);
        assert_eq!(names(&ready(&p, 1).to_import), ["carol"]);
        assert_eq!(ready(&p, 1).missing.len(), 2, "B still reports both as missing");
        assert!(!ready(&p, 2).needs_import(), "C's member is claimed by A");
        assert_eq!(p.planned_imports, 3);
    }

    #[test]
    fn failed_groups_are_skipped_never_read_as_empty() {
        let p = run(vec![failed("Broken"), group("Team", &["alice"])], &[], 100);
        assert!(matches!(&p.groups[0], GroupPlan::Failed { name, .. } if name == "Broken"));
        assert_eq!(names(&ready(&p, 1).to_import), ["alice"]);
        assert_eq!(p.planned_imports, 1);
    }

    #[test]
    fn a_group_shrinking_past_the_guard_is_held_and_the_others_go_on() {
        let policy = |pct: u8| Policy {
            max_imports_per_run: 100,
            max_shrink_percent: pct,
            last_good: HashMap::from([("A".to_string(), 10), ("B".to_string(), 2)]),
        };
        let groups = || {
            vec![
                group("A", &["a1", "a2", "a3", "a4"]), // 10 -> 4: shrank 60 %
                group("B", &["b1"]),                   // 2 -> 1: shrank 50 %
                group("C", &["c1"]),                   // never seen: no guard
            ]
        };
        let p = plan(snapshot(groups()), &[], policy(50));
        assert_eq!(ready(&p, 0).shrink, Some(Shrink { previous: 10, now: 4 }));
        assert!(!ready(&p, 0).needs_import(), "a held group imports nothing");
        assert_eq!(ready(&p, 1).shrink, None, "exactly the limit is allowed");
        assert_eq!(names(&ready(&p, 1).to_import), ["b1"]);
        assert_eq!(names(&ready(&p, 2).to_import), ["c1"]);
        assert_eq!(p.planned_imports, 2);
        assert_eq!(
            plan(snapshot(groups()), &[], policy(100))
                .groups
                .iter()
                .filter(|g| matches!(g, GroupPlan::Ready(r) if r.shrink.is_some()))
                .count(),
            0
        );
        assert!(ready(&plan(snapshot(groups()), &[], policy(0)), 1).shrink.is_some(), "0 % holds any shrink");
        let grown = Policy { last_good: HashMap::from([("A".to_string(), 1)]), ..policy(0) };
        assert_eq!(ready(&plan(snapshot(groups()), &[], grown), 0).shrink, None, "growth is never held");
    }

    #[test]
    fn more_imports_than_the_limit_hold_the_plan() {
        let p = run(vec![group("A", &["a", "b"]), group("B", &["c"])], &[], 2);
        assert_eq!(p.held, Some(Held { planned: 3, limit: 2 }));
        let p = run(vec![group("A", &["a", "b"]), group("B", &["c"])], &[], 3);
        assert_eq!(p.held, None, "exactly the limit is allowed");
        let p = run(vec![group("A", &["a"])], &["a"], 0);
        assert_eq!(p.held, None, "a limit of 0 holds only when something would be imported");
    }
}
