//! CloudShell group membership, decided as a pure function: which users to add to and remove from each
//! mapped CloudShell group, given the directory snapshot's outcome for every mapped directory group and what
//! CloudShell holds. No I/O; every rule is tested here with plain tables.
//!
//! The rules:
//! - a CloudShell group's wanted members are the union of the effective members of every directory group
//!   mapped to it, matched to CloudShell users case-insensitively by username;
//! - removals (only with `remove_from_groups`) are current members who came from the directory (`DomainName`
//!   set), are not admins, and are in none of those directory groups; local users and admins never are;
//! - a CloudShell group any of whose directory groups failed to enumerate, or was held by the shrink guard,
//!   gets additions only;
//! - in a change read (the daemon between full reads), a removal is only of a user whose departure from one of
//!   the group's directory groups the change reads reported ([`DirectoryGroup::Reported`]); anyone else not
//!   wanted waits for the next full read;
//! - more planned removals in all than `max_removals_per_run` hold every removal (additions still go ahead);
//!   so do removals that would take the last 24 hours past `max_removals_per_day` (only with a record of the
//!   last 24 hours, `Limits::removed_last_24h`; [`super::budget`]);
//! - a CloudShell group that does not exist is an error for it, never created.

use std::collections::{HashMap, HashSet};

use crate::cloudshell;
use crate::config::Mapping;
use crate::group_name::GroupName;
use crate::sync::activation::protection;
use crate::sync::budget;
use crate::username::Username;

/// What the import step knows of one directory group.
#[derive(Clone, Debug)]
pub enum DirectoryGroup<'a> {
    /// Enumerated and not held: its effective members, and the usernames left out as ambiguous in the
    /// directory (never removed on this group's account, since they may be members).
    Members { members: Vec<&'a Username>, ambiguous: Vec<&'a Username> },
    /// Could not be enumerated, or held by the shrink guard: nothing may be removed on its account.
    Unknown { why: String },
    /// Its members as read, which are added, but not known to be all of them: nothing may be removed on its
    /// account.
    Additions { members: Vec<&'a Username>, ambiguous: Vec<&'a Username>, why: String },
    /// Its members as a change read resolved them, and `gone`: the members seen in it since the last full
    /// read who are not now (departures the change reads reported). Only they may be removed on its account.
    Reported { members: Vec<&'a Username>, ambiguous: Vec<&'a Username>, gone: Vec<&'a Username> },
}

/// The limits on membership writes.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub remove_from_groups: bool,
    pub max_removals_per_run: usize,
    pub max_removals_per_day: usize,
    /// Removals in the last 24 hours, by the audit trail (`None`: no record, the per-run limit only).
    pub removed_last_24h: Option<usize>,
}

/// A user to add or remove. `id` is `None` for a wanted member not (yet) in CloudShell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub username: Username,
    pub id: Option<i64>,
}

/// What to do about one CloudShell group.
#[derive(Clone, Debug)]
pub struct GroupChange {
    /// The CloudShell group's name as configured.
    pub name: String,
    /// Its id; `None` when CloudShell has no such group.
    pub id: Option<i64>,
    /// The directory groups mapped to it.
    pub fed_by: Vec<GroupName>,
    /// Members before the run.
    pub current: usize,
    /// Wanted members missing from it, sorted by username.
    pub add: Vec<Placement>,
    /// Members to take out, sorted by username (empty when removals are off, unsafe, or held).
    pub remove: Vec<Placement>,
    /// Why removals are off for this group although `remove_from_groups` is on.
    pub additions_only: Option<String>,
    /// Removals that were planned but are held by `max_removals_per_run`.
    pub held_removals: Vec<Placement>,
}

/// The membership plan of one run.
#[derive(Clone, Debug)]
pub struct MembershipPlan {
    /// One entry per CloudShell group, in the order the mappings first name them.
    pub groups: Vec<GroupChange>,
    /// Set when the planned removals exceed `max_removals_per_run`: every removal is held.
    pub removals_held: Option<RemovalsHeld>,
}

/// Why removals are held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemovalsHeld {
    pub planned: usize,
    pub limit: usize,
    /// Held by the daily budget: the removals in the last 24 hours (`None`: by `max_removals_per_run`).
    pub last_24h: Option<usize>,
}

/// What CloudShell holds: every user, every group, and the current members of each mapped group (by group
/// id; a group missing from the map could not be read and gets no change at all).
pub struct CloudShell<'a> {
    pub users: &'a [cloudshell::User],
    pub groups: &'a [cloudshell::Group],
    pub members: &'a HashMap<i64, Vec<cloudshell::User>>,
}

/// The CloudShell group of this name (as configured: compared case-insensitively, trimmed), if any.
pub fn find_group<'g>(groups: &'g [cloudshell::Group], name: &str) -> Option<&'g cloudshell::Group> {
    groups.iter().find(|g| g.name.trim().eq_ignore_ascii_case(name.trim()))
}

/// The CloudShell groups the mappings name, each once (case-insensitively), with the directory groups that
/// feed it (each once, as [`GroupName`] compares them), in the order the mappings first name them.
pub fn cloudshell_groups(mappings: &[Mapping]) -> Vec<(String, Vec<GroupName>)> {
    let mut out: Vec<(String, Vec<GroupName>)> = Vec::new();
    for m in mappings {
        for c in &m.cloudshell_groups {
            match out.iter_mut().find(|(name, _)| name.trim().eq_ignore_ascii_case(c.trim())) {
                Some((_, fed_by)) => {
                    if !fed_by.contains(&m.directory_group) {
                        fed_by.push(m.directory_group.clone());
                    }
                }
                None => out.push((c.clone(), vec![m.directory_group.clone()])),
            }
        }
    }
    out
}

/// Plans every mapped CloudShell group. `directory` gives each directory group's outcome by configured
/// name (as [`GroupName`] compares them); a directory group it lacks counts as unknown.
pub fn plan(
    mappings: &[Mapping],
    directory: &HashMap<GroupName, DirectoryGroup<'_>>,
    cloudshell: &CloudShell<'_>,
    limits: Limits,
) -> MembershipPlan {
    let ids: HashMap<&Username, i64> =
        cloudshell.users.iter().filter_map(|u| Some((u.username.as_ref()?, u.id?))).collect();
    let mut groups = Vec::new();
    for (name, fed_by) in cloudshell_groups(mappings) {
        let found = find_group(cloudshell.groups, &name);
        let current: Option<&Vec<cloudshell::User>> = found.and_then(|g| cloudshell.members.get(&g.id));
        let mut wanted: HashSet<&Username> = HashSet::new();
        let mut keep: HashSet<&Username> = HashSet::new();
        let mut unknown: Vec<String> = Vec::new();
        // With a change read: the only users that may be removed (the departures reported).
        let mut reported: Option<HashSet<&Username>> = None;
        for d in &fed_by {
            match directory.get(d) {
                Some(DirectoryGroup::Members { members, ambiguous }) => {
                    wanted.extend(members.iter().copied());
                    keep.extend(ambiguous.iter().copied());
                }
                Some(DirectoryGroup::Reported { members, ambiguous, gone }) => {
                    wanted.extend(members.iter().copied());
                    keep.extend(ambiguous.iter().copied());
                    reported.get_or_insert_with(HashSet::new).extend(gone.iter().copied());
                }
                Some(DirectoryGroup::Unknown { why }) => unknown.push(format!("{d:?} {why}")),
                Some(DirectoryGroup::Additions { members, ambiguous, why }) => {
                    wanted.extend(members.iter().copied());
                    keep.extend(ambiguous.iter().copied());
                    unknown.push(format!("{d:?} {why}"));
                }
                None => unknown.push(format!("{d:?} was not read")),
            }
        }
        let (Some(group), Some(current)) = (found, current) else {
            groups.push(GroupChange {
                name,
                id: found.map(|g| g.id),
                fed_by,
                current: 0,
                add: Vec::new(),
                remove: Vec::new(),
                additions_only: None,
                held_removals: Vec::new(),
            });
            continue;
        };
        let present: HashSet<&Username> = current.iter().filter_map(|u| u.username.as_ref()).collect();
        let mut add: Vec<Placement> = wanted
            .iter()
            .filter(|u| !present.contains(**u))
            .map(|u| Placement { username: (*u).clone(), id: ids.get(*u).copied() })
            .collect();
        add.sort_by(|a, b| a.username.cmp(&b.username));
        let additions_only = (!unknown.is_empty()).then(|| unknown.join("; "));
        let mut remove: Vec<Placement> = Vec::new();
        if limits.remove_from_groups && additions_only.is_none() {
            for u in current {
                let Some(username) = &u.username else { continue };
                // Not `sync.leavers.protect`: a removal from a group leaves the account as it is.
                let protected = protection(u, username.as_str(), None).is_some();
                let departed = reported.as_ref().is_none_or(|r| r.contains(username));
                if !protected && !wanted.contains(username) && !keep.contains(username) && departed {
                    remove.push(Placement { username: username.clone(), id: u.id });
                }
            }
        }
        remove.sort_by(|a, b| a.username.cmp(&b.username));
        groups.push(GroupChange {
            name,
            id: Some(group.id),
            fed_by,
            current: current.len(),
            add,
            remove,
            additions_only: additions_only.filter(|_| limits.remove_from_groups),
            held_removals: Vec::new(),
        });
    }
    let planned: usize = groups.iter().map(|g| g.remove.len()).sum();
    let removals_held = if planned > limits.max_removals_per_run {
        Some(RemovalsHeld { planned, limit: limits.max_removals_per_run, last_24h: None })
    } else {
        limits.removed_last_24h.and_then(|last_24h| {
            let daily = budget::held(planned, last_24h, budget::removal_limit(limits.max_removals_per_day))?;
            Some(RemovalsHeld { planned, limit: daily.limit, last_24h: Some(last_24h) })
        })
    };
    if removals_held.is_some() {
        for g in &mut groups {
            g.held_removals = std::mem::take(&mut g.remove);
        }
    }
    MembershipPlan { groups, removals_held }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(name: &str) -> Username {
        Username::new(name).unwrap()
    }

    fn user(id: i64, name: &str, from_directory: bool, admin: bool) -> cloudshell::User {
        cloudshell::User {
            id: Some(id),
            username: Username::new(name),
            is_active: Some(true),
            is_admin: Some(admin),
            domain_name: from_directory.then(|| "EXAMPLE".into()),
            group_ids: None,
        }
    }

    fn mapping(directory: &str, cloudshell: &[&str]) -> Mapping {
        Mapping {
            directory_group: GroupName::new(directory),
            cloudshell_groups: cloudshell.iter().map(|c| c.to_string()).collect(),
        }
    }

    /// CloudShell: users alice(1) bob(2) carol(3) dave(4, local) erin(5, admin from the directory);
    /// groups Lab(10) holding bob, dave, erin, carol; Ops(11) empty.
    struct World {
        users: Vec<cloudshell::User>,
        groups: Vec<cloudshell::Group>,
        members: HashMap<i64, Vec<cloudshell::User>>,
    }

    fn world() -> World {
        let users = vec![
            user(1, "alice", true, false),
            user(2, "Bob", true, false),
            user(3, "carol", true, false),
            user(4, "dave", false, false),
            user(5, "erin", true, true),
        ];
        let lab = vec![users[1].clone(), users[3].clone(), users[4].clone(), users[2].clone()];
        World {
            groups: vec![
                cloudshell::Group { id: 10, name: "Lab".into() },
                cloudshell::Group { id: 11, name: "Ops".into() },
            ],
            members: HashMap::from([(10, lab), (11, vec![])]),
            users,
        }
    }

    fn plan_with(
        w: &World,
        mappings: &[Mapping],
        directory: &[(&str, Result<Vec<Username>, &str>)],
        limits: Limits,
    ) -> MembershipPlan {
        let names: Vec<(String, Result<Vec<Username>, String>)> =
            directory.iter().map(|(n, r)| (n.to_string(), r.clone().map_err(str::to_string))).collect();
        let outcomes: HashMap<GroupName, DirectoryGroup<'_>> = names
            .iter()
            .map(|(n, r)| {
                let outcome = match r {
                    Ok(members) => DirectoryGroup::Members { members: members.iter().collect(), ambiguous: vec![] },
                    Err(why) => DirectoryGroup::Unknown { why: why.clone() },
                };
                (GroupName::new(n), outcome)
            })
            .collect();
        plan(mappings, &outcomes, &CloudShell { users: &w.users, groups: &w.groups, members: &w.members }, limits)
    }

    const REMOVE: Limits = Limits {
        remove_from_groups: true,
        max_removals_per_run: 100,
        max_removals_per_day: 500,
        removed_last_24h: None,
    };
    const KEEP: Limits = Limits { remove_from_groups: false, ..REMOVE };

    fn names(p: &[Placement]) -> Vec<&str> {
        p.iter().map(|p| p.username.as_str()).collect()
    }

    #[test]
    fn wanted_members_missing_are_added_matched_case_insensitively() {
        let w = world();
        let p = plan_with(
            &w,
            &[mapping("Eng", &["lab", "Ops"])],
            &[("eng", Ok(vec![u("ALICE"), u("bob"), u("zoe")]))],
            KEEP,
        );
        let lab = &p.groups[0];
        assert_eq!((lab.name.as_str(), lab.id, lab.current), ("lab", Some(10), 4));
        assert_eq!(names(&lab.add), ["ALICE", "zoe"], "bob is there as Bob");
        assert_eq!(lab.add[0].id, Some(1));
        assert_eq!(lab.add[1].id, None, "zoe is not in CloudShell (yet)");
        assert!(lab.remove.is_empty(), "removals are off");
        assert_eq!(names(&p.groups[1].add), ["ALICE", "bob", "zoe"]);
    }

    #[test]
    fn only_directory_users_who_are_not_admins_and_belong_nowhere_are_removed() {
        let w = world();
        let p = plan_with(&w, &[mapping("Eng", &["Lab"])], &[("Eng", Ok(vec![u("bob")]))], REMOVE);
        let lab = &p.groups[0];
        assert_eq!(names(&lab.remove), ["carol"], "dave is local, erin an admin, bob wanted");
        assert_eq!(lab.remove[0].id, Some(3));
        assert!(p.removals_held.is_none());
    }

    #[test]
    fn a_username_ambiguous_in_the_directory_is_never_removed() {
        let w = world();
        let (bob, carol) = (u("bob"), u("carol"));
        let outcomes = HashMap::from([(
            GroupName::new("Eng"),
            DirectoryGroup::Members { members: vec![&bob], ambiguous: vec![&carol] },
        )]);
        let cs = CloudShell { users: &w.users, groups: &w.groups, members: &w.members };
        let p = plan(&[mapping("Eng", &["Lab"])], &outcomes, &cs, REMOVE);
        assert!(p.groups[0].remove.is_empty(), "carol may be a member: kept, not added");
        assert!(p.groups[0].add.is_empty());
    }

    #[test]
    fn a_cloudshell_group_fed_by_several_directory_groups_wants_their_union() {
        let w = world();
        let mappings = [mapping("Eng", &["Lab"]), mapping("Ops", &["lab", "Ops"])];
        let p =
            plan_with(&w, &mappings, &[("Eng", Ok(vec![u("bob")])), ("Ops", Ok(vec![u("carol"), u("alice")]))], REMOVE);
        assert_eq!(p.groups.len(), 2, "Lab once");
        assert_eq!(p.groups[0].fed_by, [GroupName::new("Eng"), GroupName::new("Ops")]);
        assert_eq!(names(&p.groups[0].add), ["alice"]);
        assert!(p.groups[0].remove.is_empty(), "carol is wanted through Ops");
        assert_eq!(names(&p.groups[1].add), ["alice", "carol"]);
    }

    /// In a change read only a reported departure is removed: carol (gone from Eng, reported) is removed, the
    /// positive control; Bob, not wanted either but gone before the change reads, waits for a full read.
    #[test]
    fn in_a_change_read_only_a_reported_departure_is_removed() {
        let w = world();
        let (alice, bob, carol) = (u("alice"), u("bob"), u("carol"));
        let reported = |gone| {
            HashMap::from([(
                GroupName::new("Eng"),
                DirectoryGroup::Reported { members: vec![&alice], ambiguous: vec![], gone },
            )])
        };
        let cs = CloudShell { users: &w.users, groups: &w.groups, members: &w.members };
        let p = plan(&[mapping("Eng", &["Lab"])], &reported(vec![&carol]), &cs, REMOVE);
        assert_eq!(names(&p.groups[0].add), ["alice"]);
        assert_eq!(names(&p.groups[0].remove), ["carol"]);
        assert_eq!(p.groups[0].additions_only, None);
        let p = plan(&[mapping("Eng", &["Lab"])], &reported(vec![]), &cs, REMOVE);
        assert!(p.groups[0].remove.is_empty(), "nobody reported gone: nobody removed");
        let p = plan(&[mapping("Eng", &["Lab"])], &reported(vec![&bob, &carol]), &cs, REMOVE);
        assert_eq!(names(&p.groups[0].remove), ["Bob", "carol"]);
    }

    #[test]
    fn a_failed_or_held_directory_group_means_additions_only() {
        let w = world();
        let mappings = [mapping("Eng", &["Lab"]), mapping("Broken", &["Lab"])];
        for outcome in [Err("failed to enumerate"), Err("is held by the shrink guard")] {
            let p = plan_with(&w, &mappings, &[("Eng", Ok(vec![u("alice")])), ("Broken", outcome)], REMOVE);
            let lab = &p.groups[0];
            assert_eq!(names(&lab.add), ["alice"], "additions still made");
            assert!(lab.remove.is_empty(), "bob and carol stay: Broken may hold them");
            assert!(lab.additions_only.as_deref().unwrap().contains("Broken"), "{:?}", lab.additions_only);
        }
        let p = plan_with(&w, &[mapping("Unread", &["Lab"])], &[], REMOVE);
        assert!(p.groups[0].remove.is_empty() && p.groups[0].additions_only.is_some(), "a group not read is unknown");
    }

    /// A mapping names its directory group as `GroupName` compares it (caseIgnoreMatch): inner runs of
    /// spaces are one space, so it finds the outcome of the group read under the listed spelling.
    #[test]
    fn a_mapping_finds_its_directory_group_whatever_its_case_and_runs_of_spaces() {
        let w = world();
        let p = plan_with(&w, &[mapping("OPS   eu ", &["Lab"])], &[("Ops EU", Ok(vec![u("alice"), u("bob")]))], REMOVE);
        let lab = &p.groups[0];
        assert_eq!(lab.additions_only, None, "read, not unknown");
        assert_eq!(names(&lab.add), ["alice"]);
        assert_eq!(names(&lab.remove), ["carol"]);
        assert_eq!(lab.fed_by[0].as_str(), "OPS   eu ", "shown as configured");
    }

    #[test]
    fn more_removals_than_the_limit_hold_every_removal_but_no_addition() {
        let w = world();
        let mappings = [mapping("Eng", &["Lab"])];
        let limits = |max| Limits { max_removals_per_run: max, ..REMOVE };
        let p = plan_with(&w, &mappings, &[("Eng", Ok(vec![u("alice")]))], limits(1));
        assert_eq!(p.removals_held, Some(RemovalsHeld { planned: 2, limit: 1, last_24h: None }));
        assert!(p.groups[0].remove.is_empty());
        assert_eq!(names(&p.groups[0].held_removals), ["Bob", "carol"]);
        assert_eq!(names(&p.groups[0].add), ["alice"]);
        let p = plan_with(&w, &mappings, &[("Eng", Ok(vec![u("alice")]))], limits(2));
        assert_eq!((p.removals_held, p.groups[0].remove.len()), (None, 2), "exactly the limit is allowed");
    }

    #[test]
    fn removals_that_would_take_the_last_24_hours_past_max_removals_per_day_are_all_held() {
        let w = world();
        let mappings = [mapping("Eng", &["Lab"])];
        let limits = |last_24h| Limits { max_removals_per_day: 10, removed_last_24h: last_24h, ..REMOVE };
        let p = plan_with(&w, &mappings, &[("Eng", Ok(vec![u("alice")]))], limits(Some(8)));
        assert_eq!((p.removals_held, p.groups[0].remove.len()), (None, 2), "8 + 2 is exactly the budget");
        let p = plan_with(&w, &mappings, &[("Eng", Ok(vec![u("alice")]))], limits(Some(9)));
        assert_eq!(p.removals_held, Some(RemovalsHeld { planned: 2, limit: 10, last_24h: Some(9) }), "one over");
        assert!(p.groups[0].remove.is_empty());
        assert_eq!(names(&p.groups[0].held_removals), ["Bob", "carol"]);
        assert_eq!(names(&p.groups[0].add), ["alice"], "additions still made");
        let p = plan_with(&w, &mappings, &[("Eng", Ok(vec![u("alice")]))], limits(None));
        assert_eq!(p.groups[0].remove.len(), 2, "no record: the per-run limit only");
        let p = plan_with(&w, &mappings, &[("Eng", Ok(vec![u("bob"), u("carol")]))], limits(Some(99)));
        assert_eq!(p.removals_held, None, "nothing to remove: nothing held");
    }

    #[test]
    fn a_cloudshell_group_that_does_not_exist_or_could_not_be_read_gets_no_change() {
        let w = world();
        let p = plan_with(&w, &[mapping("Eng", &["Nowhere", "Lab"])], &[("Eng", Ok(vec![u("alice")]))], REMOVE);
        assert_eq!((p.groups[0].id, p.groups[0].add.len()), (None, 0));
        assert_eq!(names(&p.groups[1].add), ["alice"]);
        let mut unread = world();
        unread.members.remove(&10);
        let p = plan_with(&unread, &[mapping("Eng", &["Lab"])], &[("Eng", Ok(vec![u("alice")]))], REMOVE);
        assert_eq!((p.groups[0].id, p.groups[0].add.len(), p.groups[0].remove.len()), (Some(10), 0, 0));
    }
}
