//! The decision, as a pure function: directory snapshot + CloudShell users + policy → [`Plan`]. No I/O, so
//! every rule is tested here with plain tables.

use std::collections::HashSet;

use crate::ldap::{self, Collision, Member, Snapshot};
use crate::username::Username;

/// Limits on what one run may write.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// More planned user imports than this hold every write.
    pub max_imports_per_run: usize,
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
    pub missing: Vec<Username>,
    /// The missing members this group imports: those not already claimed by an earlier group.
    pub to_import: Vec<Member>,
    /// Members left out because their username is ambiguous in the directory.
    pub collisions: Vec<Collision>,
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
pub fn plan<'a>(snapshot: &Snapshot, cloudshell_users: impl IntoIterator<Item = &'a Username>, policy: Policy) -> Plan {
    let existing: HashSet<&Username> = cloudshell_users.into_iter().collect();
    let mut claimed: HashSet<Username> = HashSet::new();
    let mut groups = Vec::with_capacity(snapshot.groups.len());
    for outcome in &snapshot.groups {
        let group = match &outcome.result {
            Err(error) => {
                groups.push(GroupPlan::Failed { name: outcome.name.clone(), error: error.clone() });
                continue;
            }
            Ok(group) => group,
        };
        let missing: Vec<&Member> = group.members.iter().filter(|m| !existing.contains(&m.username)).collect();
        let to_import: Vec<Member> =
            missing.iter().filter(|m| claimed.insert(m.username.clone())).map(|m| (*m).clone()).collect();
        groups.push(GroupPlan::Ready(ReadyGroup {
            name: outcome.name.clone(),
            group: group.clone(),
            missing: missing.iter().map(|m| m.username.clone()).collect(),
            to_import,
            collisions: group.collisions.clone(),
        }));
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
                members: members.iter().map(|m| member(m)).collect(),
                sources: vec![Source {
                    name: name.to_string(),
                    dn: format!("cn={name},dc=x"),
                    direct_members: members.iter().map(|m| u(m)).collect(),
                }],
                collisions: vec![],
                skipped_members: 0,
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
        Snapshot { groups, users_seen: 0, searches: 0 }
    }

    fn run(groups: Vec<GroupOutcome>, existing: &[&str], limit: usize) -> Plan {
        let existing: Vec<Username> = existing.iter().map(|e| u(e)).collect();
        plan(&snapshot(groups), &existing, Policy { max_imports_per_run: limit })
    }

    fn ready(plan: &Plan, n: usize) -> &ReadyGroup {
        match &plan.groups[n] {
            GroupPlan::Ready(g) => g,
            other => panic!("{other:?}"),
        }
    }

    fn names(members: &[Member]) -> Vec<&str> {
        members.iter().map(|m| m.username.as_str()).collect()
    }

    #[test]
    fn imports_members_missing_from_cloudshell_case_insensitively() {
        let p = run(vec![group("Team", &["alice", "Bob", "carol"])], &["admin", "BOB"], 100);
        let team = ready(&p, 0);
        assert_eq!(names(&team.to_import), ["alice", "carol"]);
        assert_eq!(team.missing, [u("alice"), u("carol")]);
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
    fn more_imports_than_the_limit_hold_the_plan() {
        let p = run(vec![group("A", &["a", "b"]), group("B", &["c"])], &[], 2);
        assert_eq!(p.held, Some(Held { planned: 3, limit: 2 }));
        let p = run(vec![group("A", &["a", "b"]), group("B", &["c"])], &[], 3);
        assert_eq!(p.held, None, "exactly the limit is allowed");
        let p = run(vec![group("A", &["a"])], &["a"], 0);
        assert_eq!(p.held, None, "a limit of 0 holds only when something would be imported");
    }
}
