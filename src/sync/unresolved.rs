//! Unresolved members, decided as a pure function: a member DN a configured group lists (at any nesting level)
//! that this run could not read as a user or a group, and that this program knew before: a managed user's
//! recorded DN, or a group seen nested in a configured group in an earlier run. The directory no longer shows
//! it (an ACL change, an entry hidden from the service account, a username attribute made unreadable, an entry
//! deleted without being removed from its groups): absence here proves nothing.
//!
//! An unresolved member is never a leaver and never removed: the run is not complete (the leaver step is
//! skipped), the CloudShell groups its directory group feeds get additions only, and the group's line is
//! partial (exit 3). A member DN this program never knew stays what it was: a `member skipped` warning.

use std::collections::{HashMap, HashSet};

use arcstr::ArcStr;

use crate::ldap::dn::DnKey;
use crate::state::Managed;
use crate::sync::plan::{GroupPlan, Plan};
use crate::username::Username;

/// One unresolved member of a configured group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unresolved {
    /// The configured group that lists it (directly or through a nested group).
    pub group: String,
    /// As the directory wrote it.
    pub dn: String,
    /// The managed user it was, when it was one.
    pub username: Option<Username>,
    /// Why it matters, in words.
    pub reason: &'static str,
}

/// Why a managed user's DN that cannot be read is unresolved.
pub const USER: &str = "a managed user's entry that cannot be read now (hidden from the service account, its \
                        username unreadable, or deleted without being removed from the group)";
/// Why a known nested group's DN that cannot be read is unresolved.
pub const GROUP: &str = "a group nested here before that cannot be read now: its members cannot be known";

/// The unresolved members of the groups `plan` read: `managed` gives the users' recorded DNs, `known_groups`
/// the normalised DNs of groups seen nested before.
pub fn find(plan: &Plan, managed: &Managed, known_groups: &HashSet<String>) -> Vec<Unresolved> {
    let unreadable = |g: &GroupPlan| matches!(g, GroupPlan::Ready(r) if !r.group.unreadable.is_empty());
    if !plan.groups.iter().any(unreadable) {
        // The usual run: nothing to look up (and 100,000 DNs not parsed).
        return Vec::new();
    }
    // In username order, so that of two records with one DN the same one is named every run.
    let mut records: Vec<&crate::state::ManagedUser> = managed.users.values().collect();
    records.sort_unstable_by(|a, b| a.username.cmp(&b.username));
    let users: HashMap<DnKey, &Username> =
        records.into_iter().filter_map(|u| Some((DnKey::new(u.dn.as_deref()?), &u.username))).collect();
    let mut found = Vec::new();
    for g in &plan.groups {
        let GroupPlan::Ready(ready) = g else { continue };
        for dn in &ready.group.unreadable {
            let key = DnKey::new(dn);
            let (username, reason) = match users.get(&key) {
                Some(u) => (Some((*u).clone()), USER),
                None if known_groups.contains(key.as_str()) => (None, GROUP),
                None => continue,
            };
            found.push(Unresolved { group: ready.name.clone(), dn: dn.clone(), username, reason });
        }
    }
    found
}

/// The groups seen nested in configured groups in this run (normalised DN, DN), to be known from now on.
pub fn nested_groups(plan: &Plan) -> Vec<(String, String)> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for g in &plan.groups {
        let GroupPlan::Ready(ready) = g else { continue };
        for source in ready.group.sources.iter().skip(1) {
            let key = DnKey::new(&source.dn).as_str().to_string();
            if seen.insert(key.clone()) {
                out.push((key, source.dn.clone()));
            }
        }
    }
    out
}

/// The managed users whose DN this run read differently from the record (a member of a group `plan` read),
/// with the DN read: what to record. Read-only, so that a run in which no DN changed copies no record.
pub fn dns_to_record(managed: &Managed, plan: &Plan) -> Vec<(Username, ArcStr)> {
    // Each member once: a user in many groups is one record (a million memberships, 100,000 users).
    let mut changed = Vec::new();
    for member in &plan.distinct {
        if let Some(entry) = managed.users.get(&member.username)
            && entry.dn.as_deref() != Some(&*member.dn)
        {
            changed.push((member.username.clone(), member.dn.clone()));
        }
    }
    changed
}

/// Records the DNs [`dns_to_record`] found. Returns whether any record changed.
pub fn record_dns(managed: &mut Managed, dns: Vec<(Username, ArcStr)>) -> bool {
    let mut changed = false;
    for (username, dn) in dns {
        if let Some(entry) = managed.users.get_mut(&username) {
            entry.dn = Some(dn);
            changed = true;
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::plan::tests::{group, snapshot};
    use crate::sync::plan::{self, Policy};

    fn planned(groups: Vec<crate::ldap::GroupOutcome>) -> Plan {
        plan::plan(snapshot(groups), &[], Policy { max_imports_per_run: 100, ..Policy::default() })
    }

    fn with_unreadable(mut outcome: crate::ldap::GroupOutcome, dns: &[&str]) -> crate::ldap::GroupOutcome {
        if let Ok(g) = &mut outcome.result {
            g.unreadable = dns.iter().map(|d| d.to_string()).collect();
        }
        outcome
    }

    #[test]
    fn only_a_dn_known_before_is_unresolved_and_a_never_known_one_stays_a_warning() {
        let team = with_unreadable(
            group("Team", &["a"]),
            &["UID=Bob,ou=People,dc=x", "cn=Hidden,ou=groups,dc=x", "uid=never,dc=x"],
        );
        let plan = planned(vec![team]);
        let mut managed = Managed::default();
        let bob = Username::new("bob").unwrap();
        managed.seen(&bob, Some(2), "t").dn = Some("uid=bob,ou=people,dc=x".into());
        managed.seen(&Username::new("carol").unwrap(), Some(3), "t"); // no DN recorded: cannot be matched
        let known: HashSet<String> = [DnKey::new("cn=hidden,ou=Groups,dc=x").as_str().to_string()].into();
        let found = find(&plan, &managed, &known);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!((found[0].username.as_ref(), found[0].reason, found[0].group.as_str()), (Some(&bob), USER, "Team"));
        assert_eq!(
            (found[1].username.as_ref(), found[1].reason, found[1].dn.as_str()),
            (None, GROUP, "cn=Hidden,ou=groups,dc=x")
        );
        // The control: nothing unreadable, nothing unresolved.
        assert!(find(&planned(vec![group("Team", &["a"])]), &managed, &known).is_empty());
    }

    #[test]
    fn a_managed_users_dn_is_recorded_from_the_members_read() {
        let plan = planned(vec![group("Team", &["a", "b"])]);
        let mut managed = Managed::default();
        managed.seen(&Username::new("a").unwrap(), Some(1), "t");
        let dns = dns_to_record(&managed, &plan);
        assert!(record_dns(&mut managed, dns));
        let dn = managed.users[&Username::new("a").unwrap()].dn.clone().unwrap();
        assert!(dn.starts_with("uid=a,"), "{dn}");
        assert!(dns_to_record(&managed, &plan).is_empty(), "unchanged the second time");
        assert_eq!(managed.users.len(), 1, "only managed users are recorded");
    }
}
