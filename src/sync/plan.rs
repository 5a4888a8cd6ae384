//! The decision, as a pure function: directory snapshot + CloudShell users + policy → [`Plan`]. No I/O, so
//! every rule is tested here with plain tables.

use std::collections::{BTreeSet, HashMap};

use std::hash::BuildHasher;

use rustc_hash::{FxBuildHasher, FxHashMap, FxHashSet};
use std::sync::Arc;

use crate::cloudshell;
use crate::config::{DisabledAccounts, SyncPolicy};
use crate::ldap::{self, Collision, Member, Snapshot, Source};
use crate::username::Username;

/// A nested group is imported by its own name only when that one call covers at least this many members
/// still missing; for fewer, per-user imports cost the same and say more.
pub const MIN_NESTED_COVER: usize = 2;

/// Limits on what one run may write.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// More planned user imports than this hold every write.
    pub max_imports_per_run: usize,
    /// A group whose membership shrank by more than this percentage since its last good count is held.
    pub max_shrink_percent: u8,
    /// Each group's member count at the last good run (by configured name); empty disables the guard.
    pub last_good: HashMap<String, usize>,
    /// Whether a group holding disabled accounts may be imported by name (they are deactivated afterwards).
    pub disabled_accounts: DisabledAccounts,
}

impl Policy {
    /// The policy of `sync`, with the shrink guard's reference counts and the disabled-accounts mode in force.
    pub fn new(sync: &SyncPolicy, last_good: HashMap<String, usize>, disabled_accounts: DisabledAccounts) -> Policy {
        Policy {
            max_imports_per_run: sync.max_imports_per_run,
            max_shrink_percent: sync.max_shrink_percent,
            last_good,
            disabled_accounts,
        }
    }
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
    /// Whether to import the group by its name first. Not when it directly holds entries this program
    /// refused, nor (with `disabled_accounts = "per_user"`) disabled accounts, which CloudShell's group import
    /// would bring in: its members are then imported one by one.
    pub by_name: bool,
    /// Whether CloudShell's group imports may take disabled accounts in, to be deactivated afterwards
    /// (`import_then_deactivate`); else groups holding them are never imported by name.
    pub imports_disabled: bool,
}

impl ReadyGroup {
    /// Whether this group needs an import call at all.
    pub fn needs_import(&self) -> bool {
        !self.to_import.is_empty()
    }
}

/// Whether importing the nested group `source` by its name is worth a call, with `still` the members yet
/// to import: only when CloudShell would take in nobody it must not ([`importable_by_name`]) and the call
/// covers at least [`MIN_NESTED_COVER`] of them. Asked afresh before each call, since earlier calls shrink
/// `still`.
pub fn nested_worth_importing(source: &Source, still: &BTreeSet<Username>, imports_disabled: bool) -> bool {
    importable_by_name(source, imports_disabled)
        && source.direct_members.iter().filter(|m| still.contains(&m.username)).count() >= MIN_NESTED_COVER
}

/// Whether a group may be imported by its name: CloudShell's group import takes every direct member, so
/// never when some are entries this program refused (a username with control characters), and not when some
/// are disabled accounts unless those are deactivated afterwards (`imports_disabled`).
fn importable_by_name(source: &Source, imports_disabled: bool) -> bool {
    source.unusable_members == 0 && (imports_disabled || source.disabled_members == 0)
}

/// The plan of one run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// In the configured order.
    pub groups: Vec<GroupPlan>,
    /// Distinct users to import, over all groups.
    pub planned_imports: usize,
    /// Distinct effective members over all enumerated groups.
    pub members: usize,
    /// Those members, each once (the first record seen, in the configured order of the groups): what the steps
    /// after the imports go through, rather than every membership again.
    pub distinct: Vec<Arc<Member>>,
    /// Distinct members missing in CloudShell over all enumerated groups.
    pub missing: usize,
    /// Set when the plan exceeds `max_imports_per_run`: nothing may be written.
    pub held: Option<Held>,
    /// What the snapshot behind this plan covered: the steps that act on a user's absence ask it.
    pub coverage: ldap::Coverage,
}

impl Plan {
    /// The distinct members missing in CloudShell, over all enumerated groups.
    pub fn missing_names(&self) -> Vec<Username> {
        let mut seen = FxHashSet::default();
        let missing = self.groups.iter().filter_map(|g| match g {
            GroupPlan::Ready(r) => Some(r.missing.iter()),
            GroupPlan::Failed { .. } => None,
        });
        missing.flatten().filter(|m| seen.insert(m.username.folded())).map(|m| m.username.clone()).collect()
    }

    /// The snapshot this plan was made from, for planning again: `users_seen`, `searches` and `served_by` as
    /// that snapshot had them.
    pub fn into_snapshot(self, (users_seen, searches, served_by): (usize, usize, String)) -> Snapshot {
        let groups = self.groups.into_iter().map(|g| match g {
            GroupPlan::Failed { name, error } => ldap::GroupOutcome { name, result: Err(error) },
            GroupPlan::Ready(r) => ldap::GroupOutcome { name: r.name, result: Ok(r.group) },
        });
        Snapshot { groups: groups.collect(), users_seen, searches, served_by, coverage: self.coverage }
    }
}

/// Why a plan is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    pub planned: usize,
    pub limit: usize,
}

/// Each distinct directory user of a snapshot, numbered on first sight. A snapshot shares one `Arc<Member>`
/// per user across every group, so a membership is recognised by its pointer (a cheap integer hash) and the
/// username is hashed and compared once per user rather than once per membership (a million times in a large
/// directory). Two entries folding to one username (which the directory side reports as a collision) still
/// get one number, through the username.
struct Interner {
    by_pointer: FxHashMap<*const Member, u32>,
    /// Numbers by folded username, compared through `users` (no copy of the names).
    by_name: hashbrown::HashTable<u32>,
    /// By number: the first member record seen, and whether CloudShell has the user.
    users: Vec<Arc<Member>>,
    present: Vec<bool>,
}

impl Interner {
    fn with_capacity(users: usize) -> Interner {
        Interner {
            by_pointer: FxHashMap::with_capacity_and_hasher(users, FxBuildHasher),
            by_name: hashbrown::HashTable::with_capacity(users),
            users: Vec::with_capacity(users),
            present: Vec::with_capacity(users),
        }
    }

    fn number(&mut self, member: &Arc<Member>, existing: &FxHashSet<&str>) -> u32 {
        if let Some(&n) = self.by_pointer.get(&Arc::as_ptr(member)) {
            return n;
        }
        let folded = member.username.folded();
        let hash = FxBuildHasher.hash_one(folded);
        let users = &self.users;
        let n = match self.by_name.find(hash, |&n| users[n as usize].username.folded() == folded) {
            Some(&n) => n,
            None => {
                let n = self.users.len() as u32;
                self.users.push(member.clone());
                self.present.push(existing.contains(folded));
                let users = &self.users;
                self.by_name.insert_unique(hash, n, |&m| FxBuildHasher.hash_one(users[m as usize].username.folded()));
                n
            }
        };
        self.by_pointer.insert(Arc::as_ptr(member), n);
        n
    }
}

/// Computes the plan from the directory `snapshot` and every CloudShell user.
pub fn plan(snapshot: Snapshot, cloudshell_users: &[cloudshell::User], policy: Policy) -> Plan {
    // The keys are usernames and pointers from this run's own reads; a directory author able to craft
    // colliding usernames could at worst slow one run down, so a fast non-cryptographic hasher is fine here.
    let mut existing: FxHashSet<&str> = FxHashSet::with_capacity_and_hasher(cloudshell_users.len(), FxBuildHasher);
    existing.extend(cloudshell_users.iter().filter_map(|u| u.username.as_ref()).map(Username::folded));
    // Sized once for the users the directory holds (at most every membership): no rehashing while planning.
    let memberships: usize =
        snapshot.groups.iter().filter_map(|g| g.result.as_ref().ok()).map(|g| g.members.len()).sum();
    let mut interner = Interner::with_capacity(snapshot.users_seen.min(memberships));
    // By number: claimed for import by an earlier group; missing in some group.
    let (mut claimed, mut missing_somewhere): (Vec<bool>, Vec<bool>) = (Vec::new(), Vec::new());
    let mut groups = Vec::with_capacity(snapshot.groups.len());
    // Either coverage resolves every configured group whole (a change read from the kept model, which a lost
    // change can only make larger), so the guard compares both with the last good count; only a full read's
    // counts become the reference (`sync::save_counts`).
    for outcome in snapshot.groups {
        let group = match outcome.result {
            Err(error) => {
                groups.push(GroupPlan::Failed { name: outcome.name, error });
                continue;
            }
            Ok(group) => group,
        };
        let mut missing: Vec<(u32, Arc<Member>)> = Vec::new();
        for m in group.members.iter() {
            let n = interner.number(m, &existing);
            if !interner.present[n as usize] {
                missing.push((n, m.clone()));
            }
        }
        let shrink = (policy.last_good.get(&outcome.name))
            .filter(|&&previous| shrank_too_much(previous, group.members.len(), policy.max_shrink_percent))
            .map(|&previous| Shrink { previous, now: group.members.len() });
        let known = interner.present.len();
        claimed.resize(known, false);
        missing_somewhere.resize(known, false);
        let mut to_import = Vec::new();
        for (n, m) in &missing {
            missing_somewhere[*n as usize] = true;
            if shrink.is_none() && !std::mem::replace(&mut claimed[*n as usize], true) {
                to_import.push(m.clone());
            }
        }
        let missing: Vec<Arc<Member>> = missing.into_iter().map(|(_, m)| m).collect();
        let collisions = group.collisions.clone();
        let imports_disabled = policy.disabled_accounts == DisabledAccounts::ImportThenDeactivate;
        let by_name = group.sources.first().is_none_or(|root| importable_by_name(root, imports_disabled));
        groups.push(GroupPlan::Ready(ReadyGroup {
            name: outcome.name,
            group,
            missing,
            to_import,
            collisions,
            shrink,
            by_name,
            imports_disabled,
        }));
    }
    let planned_imports = claimed.iter().filter(|&&c| c).count();
    let held = (planned_imports > policy.max_imports_per_run)
        .then_some(Held { planned: planned_imports, limit: policy.max_imports_per_run });
    let members = interner.present.len();
    let missing = missing_somewhere.iter().filter(|&&m| m).count();
    Plan { groups, planned_imports, members, missing, held, coverage: snapshot.coverage, distinct: interner.users }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ldap::{Group, GroupOutcome, Source};

    fn u(name: &str) -> Username {
        Username::new(name).unwrap()
    }

    fn member(name: &str) -> Member {
        Member { username: u(name), dn: format!("uid={name},ou=people,dc=x").into() }
    }

    pub(crate) fn group(name: &str, members: &[&str]) -> GroupOutcome {
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
                    unusable_members: 0,
                }],
                collisions: vec![],
                skipped_members: 0,
                unreadable: vec![],
                disabled_members: 0,
                disabled: vec![],
            }),
        }
    }

    pub(crate) fn failed(name: &str) -> GroupOutcome {
        GroupOutcome {
            name: name.to_string(),
            result: Err(ldap::Error::Search {
                url: "ldap://x".into(),
                operation: "the group search".into(),
                reason: "connection reset".into(),
            }),
        }
    }

    pub(crate) fn snapshot(groups: Vec<GroupOutcome>) -> Snapshot {
        Snapshot { groups, users_seen: 0, searches: 0, served_by: "ldap://x".into(), coverage: ldap::Coverage::Full }
    }

    fn cloudshell_user(name: &str) -> cloudshell::User {
        cloudshell::User {
            id: Some(7),
            username: Username::new(name),
            is_active: Some(true),
            is_admin: Some(false),
            domain_name: Some("EXAMPLE".into()),
            group_ids: Some(Box::new([1])),
        }
    }

    fn run(groups: Vec<GroupOutcome>, existing: &[&str], limit: usize) -> Plan {
        let existing: Vec<cloudshell::User> = existing.iter().map(|e| cloudshell_user(e)).collect();
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
            ..Policy::default()
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

    fn with_sources(name: &str, sources: Vec<(&str, Vec<&str>, usize)>) -> GroupOutcome {
        let mut g = group(name, &[]);
        let group = g.result.as_mut().unwrap();
        group.sources = sources
            .into_iter()
            .map(|(n, members, disabled)| Source {
                name: n.to_string(),
                dn: format!("cn={n},dc=x"),
                direct_members: members.iter().map(|m| Arc::new(member(m))).collect(),
                disabled_members: disabled,
                unusable_members: 0,
            })
            .collect();
        let mut all: Vec<Arc<Member>> = group.sources.iter().flat_map(|s| s.direct_members.iter().cloned()).collect();
        all.sort_by(|a, b| a.username.cmp(&b.username));
        group.members = all.into();
        g
    }

    #[test]
    fn a_group_directly_holding_disabled_accounts_is_not_imported_by_name() {
        let groups = vec![
            with_sources("Clean", vec![("Clean", vec!["a"], 0)]),
            with_sources("Mixed", vec![("Mixed", vec!["b"], 2)]),
            with_sources("NestedDisabled", vec![("NestedDisabled", vec!["c"], 0), ("Inner", vec!["d"], 1)]),
        ];
        let mut groups = groups;
        let mut refused = with_sources("Refused", vec![("Refused", vec!["e"], 0)]);
        refused.result.as_mut().unwrap().sources[0].unusable_members = 1;
        groups.push(refused);
        let p = run(groups.clone(), &[], 100);
        assert!(ready(&p, 0).by_name);
        assert!(!ready(&p, 1).by_name, "CloudShell's group import would bring the disabled accounts in");
        assert!(ready(&p, 2).by_name, "only the group's own direct members count");
        assert!(!ready(&p, 3).by_name, "nor an entry refused for its username");
        assert!(!ready(&p, 1).imports_disabled);

        // import_then_deactivate: disabled accounts no longer stop a group import; refused entries still do.
        let policy = Policy {
            max_imports_per_run: 100,
            disabled_accounts: DisabledAccounts::ImportThenDeactivate,
            ..Default::default()
        };
        let p = plan(snapshot(groups), &[], policy);
        let by_name: Vec<bool> = (0..4).map(|n| ready(&p, n).by_name).collect();
        assert_eq!(by_name, [true, true, true, false]);
        assert!(ready(&p, 1).imports_disabled);
    }

    #[test]
    fn a_nested_group_is_worth_a_call_when_it_covers_two_missing_members_and_no_disabled_one() {
        let still = |names: &[&str]| names.iter().map(|n| u(n)).collect::<BTreeSet<Username>>();
        let source = |members: &[&str], disabled| Source {
            name: "Inner".into(),
            dn: "cn=Inner,dc=x".into(),
            direct_members: members.iter().map(|m| Arc::new(member(m))).collect(),
            disabled_members: disabled,
            unusable_members: 0,
        };
        for (members, disabled, missing, imports_disabled, worth) in [
            (vec!["a", "b", "c"], 0, vec!["a", "b"], false, true),
            (vec!["a", "b", "c"], 0, vec!["A", "x"], false, false),
            (vec!["a", "b"], 1, vec!["a", "b"], false, false),
            (vec!["a", "b"], 1, vec!["a", "b"], true, true),
            (vec![], 0, vec!["a", "b"], true, false),
            (vec!["a", "b", "c"], 0, vec!["a", "b", "c"], false, true),
        ] {
            assert_eq!(
                nested_worth_importing(&source(&members, disabled), &still(&missing), imports_disabled),
                worth,
                "{members:?} disabled {disabled} missing {missing:?} imports_disabled {imports_disabled}"
            );
        }
        assert_eq!(MIN_NESTED_COVER, 2);
    }

    #[test]
    fn totals_count_distinct_members_and_missing_over_all_groups() {
        let p = run(vec![group("A", &["a", "b"]), group("B", &["B", "c"]), failed("C")], &["c"], 100);
        assert_eq!((p.members, p.missing, p.planned_imports), (3, 2, 2));
    }

    #[test]
    fn cloudshell_users_match_case_insensitively_whatever_else_they_carry() {
        let mut local = cloudshell_user("Alice");
        local.domain_name = None;
        local.group_ids = None;
        let p = plan(
            snapshot(vec![group("A", &["alice", "bob"])]),
            &[local],
            Policy { max_imports_per_run: 9, ..Default::default() },
        );
        assert_eq!(names(&ready(&p, 0).to_import), ["bob"]);
    }
}
