//! The managed users matched again after an accepted identity change (`cloudshell-ldap-sync accept-identity`),
//! decided as a pure function. The settings that say which directory entry is which CloudShell user changed,
//! so the records keyed by the old usernames would all look like leavers. Each record is instead matched to a
//! member of this run: by its recorded DN first, else by its CloudShell id (the CloudShell user of that id is
//! a member under its username); a matched record follows the member's username now. A record matched to no
//! member is no longer managed: reported, never deactivated.

use std::collections::HashMap;

use crate::cloudshell;
use crate::ldap::dn::DnKey;
use crate::state::Managed;
use crate::sync::plan::{GroupPlan, Plan};
use crate::username::Username;

/// What matching the records again found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rematched {
    /// The records after matching: each matched one under its member's username.
    pub next: Managed,
    /// Records now under another username: (was, now).
    pub renamed: Vec<(Username, Username)>,
    /// Records matched to no member: no longer managed.
    pub dropped: Vec<Username>,
}

/// Matches every record of `managed` to a member of the groups `plan` read, given CloudShell's `users`.
pub fn rematch(managed: &Managed, plan: &Plan, users: &[cloudshell::User]) -> Rematched {
    let mut by_dn: HashMap<DnKey, &Username> = HashMap::new();
    let mut members: HashMap<&Username, ()> = HashMap::new();
    for g in &plan.groups {
        let GroupPlan::Ready(ready) = g else { continue };
        for m in ready.group.members.iter() {
            by_dn.insert(DnKey::new(&m.dn), &m.username);
            members.insert(&m.username, ());
        }
    }
    let by_id: HashMap<i64, &Username> = users
        .iter()
        .filter_map(|u| Some((u.id?, u.username.as_ref()?)))
        .filter(|(_, n)| members.contains_key(n))
        .collect();
    let mut out = Rematched::default();
    // In username order: which of two records that match one user is kept, and the report's order, do not
    // depend on the map's.
    let mut records: Vec<(&Username, &crate::state::ManagedUser)> = managed.users.iter().collect();
    records.sort_unstable_by(|a, b| a.0.cmp(b.0));
    for (key, record) in records {
        let by_record_dn = record.dn.as_deref().and_then(|dn| by_dn.get(&DnKey::new(dn)));
        let found = by_record_dn.or_else(|| record.id.and_then(|id| by_id.get(&id)));
        let Some(now) = found else {
            out.dropped.push(record.username.clone());
            continue;
        };
        let now = (*now).clone();
        if &now != key {
            out.renamed.push((record.username.clone(), now.clone()));
        }
        let mut moved = record.clone();
        moved.username = now.clone();
        out.next.users.insert(moved);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::plan::tests::{group, snapshot};
    use crate::sync::plan::{self, Policy};

    fn u(name: &str) -> Username {
        Username::new(name).unwrap()
    }

    #[test]
    fn records_follow_their_members_by_dn_then_by_cloudshell_id_and_the_rest_are_dropped() {
        // The plan's members: "a@x" (uid=a@x,...) and "b@x".
        let plan = plan::plan(snapshot(vec![group("Team", &["a@x", "b@x"])]), &[], Policy::default());
        let dn_of = |name: &str| match &plan.groups[0] {
            GroupPlan::Ready(r) => r.group.members.iter().find(|m| m.username.as_str() == name).unwrap().dn.clone(),
            GroupPlan::Failed { .. } => unreachable!(),
        };
        let mut managed = Managed::default();
        let entry = managed.seen(&u("a"), Some(1), "t");
        (entry.dn, entry.deactivated) = (Some(dn_of("a@x").to_uppercase().into()), true);
        managed.seen(&u("b"), Some(2), "t");
        managed.seen(&u("gone"), Some(3), "t");
        let users = [cloudshell::User {
            id: Some(2),
            username: Username::new("b@x"),
            is_active: Some(true),
            is_admin: Some(false),
            domain_name: Some("X".into()),
            group_ids: None,
        }];
        let r = rematch(&managed, &plan, &users);
        assert_eq!(r.renamed, [(u("a"), u("a@x")), (u("b"), u("b@x"))]);
        assert_eq!(r.dropped, [u("gone")], "matched to nobody: no longer managed, never a leaver");
        assert!(r.next.users[&u("a@x")].deactivated, "the record's flags follow it");
        assert_eq!(r.next.users.len(), 2);
    }
}
