//! The model resolved again after a change read, group by group ([`Kept::resolve`]).
//!
//! A change read changes a few entries; resolving every configured group again from the whole model costs as
//! much as it did after the full read (at 100,000 users and a million member values, about 0.25 s). So the
//! model keeps its last resolve ([`Last`]: each configured group's outcome, the group entries that outcome came
//! through, and the user index), and each part of the model marks what a read changes in it ([`Marks`]: the
//! DNs of the entries changed, added or gone, before and after, and the names they held and hold). The next
//! resolve takes again only the configured groups a marked change may touch, and keeps the others' outcomes:
//! - a group whose last outcome is an error (it is cheap, and its cause may be anywhere), and one with as many
//!   nested groups as `ldap.max_nesting_depth` (at the cap, what the walk reads below it depends on the other
//!   configured groups, which may reach a group sooner);
//! - a group whose configured name a changed group held or holds (which group a name means, or whether it is
//!   ambiguous, may have changed);
//! - a group one of whose group entries (itself, and every group its members came through) changed or went,
//!   or holds a member value naming a changed entry;
//! - a group holding a member value that names no kept entry exactly (a dangling one, or one written otherwise
//!   than the entry's DN) when that value names a changed entry by its normalised DN, or when an entry was added,
//!   removed or renamed (a dangling value may now name one; what the model can compare may have changed);
//! - a group holding a user whose username a changed user held or holds (a collision may have begun or ended).
//!
//! The user index is kept when no user changed; when users were only added, each created after every kept
//! one (new hires: in the index's order they come last), they are appended to it
//! ([`Kept::user_index_appended`]); otherwise it is made again, sharing every unchanged user with the last. A
//! group the patch's walk reaches that holds a configured name is read as the search by name reads it (as in a
//! resolve of the whole model, where it is found by name first). Whatever the patch cannot answer (the
//! method reads Active Directory's objects, whose order the model does not know; in-chain nesting, which goes
//! through every group), and any question it could answer otherwise than a resolve of the whole model, is
//! answered by resolving the whole model: a walk stopped at the depth cap (a walk from every configured group
//! reads further), and a walk whose answer could depend on whether it sweeps every group, which depends on
//! every configured group (`Kept::walk_settled`: a group came in ranges, or a member value naming no kept entry
//! is outside the groups' base or one the model cannot compare). `tests/changes_model.rs` checks the patched
//! snapshot equal to a full read's after random changes of every kind.

use std::sync::Arc;

use rustc_hash::FxHashSet as HashSet;

use super::{Dn, Dns, Group, Id, Kept, NeedsFullRead, User};
use crate::group_name::GroupName;
use crate::ldap::changes::syncrepl::EntryUuid;
use crate::ldap::dn::DnKey;
use crate::ldap::model::{self, UserIndex};
use crate::ldap::{Coverage, GroupOutcome, Nesting, Settings, Snapshot};
use crate::username;

/// What changed in one part of the model since it was last resolved.
#[derive(Clone, Debug, Default)]
pub(super) struct Marks {
    /// The DNs of the entries changed, added or gone, before and after.
    ids: Vec<Id>,
    /// The same, normalised: a member value may name one of them written otherwise.
    keys: Vec<DnKey>,
    /// The names those entries held and hold: usernames, or group names.
    names: Vec<Box<str>>,
    /// Whether an entry was added, removed or renamed (an entry DN appeared or went).
    moved: bool,
    /// The entries added (not kept before), and whether a kept entry changed or went: with added entries
    /// alone, the user index may be the last one with them appended ([`Kept::user_index_appended`]).
    pub(super) added: Vec<EntryUuid>,
    pub(super) replaced: bool,
}

impl Marks {
    /// Marks an entry as it was or as it is now; `moved`: its DN is not what it was.
    pub(super) fn mark<E: Dn + Named>(&mut self, entry: &E, dns: &Dns, moved: bool) {
        self.ids.push(entry.dn());
        self.keys.push(DnKey::new(dns.get(entry.dn())));
        self.names.extend(entry.names().iter().cloned());
        self.moved |= moved;
    }
}

/// The names a kept entry answers to.
pub(super) trait Named {
    fn names(&self) -> &[Box<str>];
}

impl Named for User {
    /// The username values (none when they are not UTF-8).
    fn names(&self) -> &[Box<str>] {
        match &self.names {
            Some(Ok(values)) => values,
            _ => &[],
        }
    }
}

impl Named for Group {
    fn names(&self) -> &[Box<str>] {
        &self.names
    }
}

/// What the settings and the server decide in a resolve: a resolve for other ones is not patched.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Key {
    names: Vec<GroupName>,
    settings: String,
    served_by: String,
    active_directory: Option<bool>,
}

impl Key {
    fn of(s: &Settings, names: &[GroupName], served_by: &str, active_directory: Option<bool>) -> Key {
        let settings = format!(
            "{:?}",
            (
                (&s.base_dn, &s.user_filter, &s.group_filter),
                (&s.username_attribute, &s.group_name_attribute, &s.member_attribute),
                (s.nesting, s.include_disabled, s.max_nesting_depth, s.member_range_size),
            )
        );
        Key { names: names.to_vec(), settings, served_by: served_by.to_string(), active_directory }
    }
}

/// The last resolve of the model, for the next to patch.
#[derive(Clone)]
pub(super) struct Last {
    key: Key,
    outcomes: Vec<GroupOutcome>,
    /// For each configured group, the group entries its outcome came through; `None` for an error.
    closures: Vec<Option<Box<[EntryUuid]>>>,
    users: Arc<UserIndex>,
}

impl std::fmt::Debug for Last {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Last").field("groups", &self.outcomes.len()).field("users", &self.users.users.len()).finish()
    }
}

/// A snapshot resolved from the model.
#[derive(Debug)]
pub struct Resolved {
    /// Its coverage is [`Coverage::Full`] and its searches 0: the caller says what the read covered and made.
    pub snapshot: Snapshot,
    /// How many configured groups were resolved for it; the others kept their last outcome.
    pub resolved: usize,
}

impl Kept {
    /// The configured groups resolved from the model, as [`crate::ldap::resolve`] resolves
    /// [`Kept::entries`]: after an earlier resolve for the same settings and names, only the groups that what
    /// changed since may touch are resolved again (see the module doc), the others keep their outcome.
    pub fn resolve(&mut self, s: &Settings, names: &[GroupName]) -> Result<Resolved, NeedsFullRead> {
        self.resolve_sharing(s, names, None)
    }

    /// [`Kept::resolve`], taking each user a full read beside the model read (`known`) holds alike rather than
    /// a new copy, when no earlier resolve of the model holds it: the model and that read's snapshot then hold
    /// one copy of each member (100,000 users: about 10 MB), and the state's records, which share the
    /// snapshot's names, are the model's.
    pub fn resolve_sharing(
        &mut self,
        s: &Settings,
        names: &[GroupName],
        known: Option<&model::KnownUsers>,
    ) -> Result<Resolved, NeedsFullRead> {
        let marks = (self.users.marks.take(), self.groups.marks.take());
        let mut last = self.last.take();
        let active_directory = self.answerable(s, names)?;
        let key = Key::of(s, names, &self.served_by, active_directory);
        let patched = match (&mut last, marks) {
            (Some(last), (Some(users), Some(groups))) if last.key == key && self.patchable(s, active_directory) => {
                self.patch(s, names, last, [&users, &groups]).ok()
            }
            _ => None,
        };
        let (last, resolved) = match patched {
            Some(patched) => patched,
            None => {
                let earlier = last.as_ref().map(|l| l.users.earlier()).or(known.map(model::KnownUsers::earlier));
                let users = Arc::new(self.user_index(s, earlier));
                let entries = self.entries_with(s, names, None, active_directory, users.clone())?;
                let outcomes = crate::ldap::resolve(&entries, s, names).groups;
                let closures = self.closures(s, &outcomes);
                (Last { key, outcomes, closures, users }, names.len())
            }
        };
        let snapshot = Snapshot {
            groups: last.outcomes.clone(),
            users_seen: last.users.users.len(),
            searches: 0,
            served_by: self.served_by.clone(),
            coverage: Coverage::Full,
        };
        self.last = Some(Arc::new(last));
        self.users.marks = Some(Marks::default());
        self.groups.marks = Some(Marks::default());
        Ok(Resolved { snapshot, resolved })
    }

    /// Whether the users of the last resolve are exactly the ones a full read made (`known`): the same DNs with
    /// the same usernames, as many (no user missing, none kept that the read did not find).
    pub fn users_are(&self, known: &model::KnownUsers) -> bool {
        self.last.as_ref().is_some_and(|last| known.are(&last.users.users))
    }

    /// Whether a resolve may be patched: not for a model of Active Directory's objects (whose order of entries
    /// the model does not know), nor with in-chain nesting (it goes through every group).
    fn patchable(&self, s: &Settings, active_directory: Option<bool>) -> bool {
        let mode = model::nesting_mode(s.nesting, active_directory, &self.served_by);
        !self.source.reads_objects() && matches!(mode, Ok(Nesting::Recursive | Nesting::Off))
    }

    /// The last resolve with the groups that `marks` (the users', the groups') may touch resolved again, and
    /// how many those are.
    fn patch(
        &self,
        s: &Settings,
        names: &[GroupName],
        last: &mut Arc<Last>,
        marks: [&Marks; 2],
    ) -> Result<(Last, usize), NeedsFullRead> {
        let entry = self.entry_dns();
        let recursive = model::nesting_mode(s.nesting, last.key.active_directory, &self.served_by);
        if matches!(recursive, Ok(Nesting::Recursive)) && !self.walk_settled(s, &entry) {
            return Err(NeedsFullRead::NotRead); // answered by the whole model
        }
        let users = match marks[0].ids.is_empty() {
            true => last.users.clone(),
            false => {
                // The last index itself when nothing else holds the last resolve (taken, not copied); it then
                // holds the index made here, for sharing its users should the whole model be resolved after all.
                let owned = Arc::get_mut(last);
                let appended = match (marks[0].replaced, owned) {
                    (false, Some(owned)) => self.user_index_appended(s, &mut owned.users, &marks[0].added),
                    (false, None) => self.user_index_appended(s, &mut last.users.clone(), &marks[0].added),
                    (true, _) => None,
                };
                let users = Arc::new(appended.unwrap_or_else(|| self.user_index(s, Some(last.users.earlier()))));
                if let Some(owned) = Arc::get_mut(last) {
                    owned.users = users.clone();
                }
                users
            }
        };
        let again = self.touched(last, names, marks, &entry);
        let (mut outcomes, mut closures) = (last.outcomes.clone(), last.closures.clone());
        if !again.is_empty() {
            let entries = self.entries_with(s, names, Some(&again), last.key.active_directory, users.clone())?;
            let wanted: Vec<GroupName> = again.iter().map(|&i| names[i].clone()).collect();
            let fresh = crate::ldap::resolve(&entries, s, &wanted).groups;
            let fresh_closures = self.closures(s, &fresh);
            for ((&i, outcome), closure) in again.iter().zip(fresh).zip(fresh_closures) {
                (outcomes[i], closures[i]) = (outcome, closure);
            }
        }
        Ok((Last { key: last.key.clone(), outcomes, closures, users }, again.len()))
    }

    /// The group entries each outcome came through (its sources), by UUID; `None` for an error, and for a
    /// group with as many nested groups as `ldap.max_nesting_depth` (they may go that deep, where what the
    /// walk shared by every configured group reads depends on the others: such a group is always resolved
    /// again, and a walk from it alone then stops at the cap and resolves the whole model).
    fn closures(&self, s: &Settings, outcomes: &[GroupOutcome]) -> Vec<Option<Box<[EntryUuid]>>> {
        let by_dn: rustc_hash::FxHashMap<&str, EntryUuid> =
            self.groups.entries.iter().map(|(uuid, g)| (self.dns.get(g.dn), *uuid)).collect();
        let closure = |o: &GroupOutcome| {
            let group = o.result.as_ref().ok().filter(|g| g.sources.len() <= s.max_nesting_depth)?;
            group.sources.iter().map(|source| by_dn.get(source.dn.as_str()).copied()).collect()
        };
        outcomes.iter().map(closure).collect()
    }

    /// By DN id: whether the DN is a kept entry's.
    fn entry_dns(&self) -> Vec<bool> {
        let mut entry = vec![false; self.dns.texts.len()];
        let dns = self.users.entries.values().map(|u| u.dn).chain(self.groups.entries.values().map(|g| g.dn));
        dns.for_each(|id| entry[id.0 as usize] = true);
        entry
    }

    /// Whether the walk of member groups answers alike from any configured groups it starts from: it sweeps
    /// every group or not depending on all of them (`Walk::wants_sweep`), and the sweep reads every group and
    /// sets aside a member DN under the base it did not find without asking whether the model can compare it.
    /// So no group came in ranges, and every member value that names no kept entry exactly is under the
    /// groups' base and comparable: then it is neither a user nor a group, swept or not (`entry`: by DN id,
    /// whether it is a kept entry's).
    fn walk_settled(&self, s: &Settings, entry: &[bool]) -> bool {
        let mut loose = vec![false; entry.len()];
        for group in self.groups.entries.values() {
            let Some(members) = &group.members else { return false };
            members.iter().filter(|m| !entry[m.0 as usize]).for_each(|m| loose[m.0 as usize] = true);
        }
        if !loose.contains(&true) {
            return true;
        }
        let (base, forms) = (DnKey::new(&self.query.groups_base), self.forms(s));
        let benign = |(id, _): (usize, &bool)| {
            let dn = self.dns.get(Id(id as u32));
            DnKey::new(dn).is_within(&base) && super::comparable(dn, &forms)
        };
        loose.iter().enumerate().filter(|(_, l)| **l).all(benign)
    }

    /// The configured groups (indexes into `names`) that `marks` may touch, in order (`entry`: by DN id,
    /// whether it is a kept entry's).
    fn touched(&self, last: &Last, names: &[GroupName], [users, groups]: [&Marks; 2], entry: &[bool]) -> Vec<usize> {
        let mut hit = vec![false; self.dns.texts.len()];
        for id in users.ids.iter().chain(&groups.ids) {
            if let Some(h) = hit.get_mut(id.0 as usize) {
                *h = true;
            }
        }
        self.hit_namesakes(&users.names, &mut hit);
        let moved = users.moved || groups.moved;
        let keys: HashSet<&DnKey> = users.keys.iter().chain(&groups.keys).collect();
        // A member value naming a changed entry, or naming no entry exactly when it may name one otherwise.
        let touches = |m: &Id| {
            let i = m.0 as usize;
            hit[i] || (!entry[i] && (moved || keys.contains(&DnKey::new(self.dns.get(*m)))))
        };
        let group_names: HashSet<GroupName> = groups.names.iter().map(|n| GroupName::new(n)).collect();
        let through = |uuid: &EntryUuid| match self.groups.entries.get(uuid) {
            None => true,
            Some(g) => hit[g.dn.0 as usize] || g.members.as_ref().is_none_or(|members| members.iter().any(touches)),
        };
        let again = |i: usize| match &last.closures[i] {
            None => true,
            Some(closure) => group_names.contains(&names[i]) || closure.iter().any(through),
        };
        (0..names.len()).filter(|&i| again(i)).collect()
    }

    /// Marks in `hit` the users holding a username in `changed` (one a changed user held or holds).
    fn hit_namesakes(&self, changed: &[Box<str>], hit: &mut [bool]) {
        if changed.is_empty() {
            return;
        }
        let folded: HashSet<String> = changed.iter().map(|n| username::fold(n.trim())).collect();
        // A folded ASCII name is as long as the name: most values are told apart by their length alone.
        let lengths: HashSet<usize> = folded.iter().map(String::len).collect();
        let namesake = |v: &str| {
            let v = v.trim();
            (!v.is_ascii() || lengths.contains(&v.len())) && folded.contains(&username::fold(v))
        };
        for user in self.users.entries.values() {
            if user.names().iter().any(|v| namesake(v)) {
                hit[user.dn.0 as usize] = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{changed, deletes, gdn, group, kept, udn};
    use super::*;
    use crate::ldap::changes::kept::Part;
    use crate::ldap::changes::syncrepl::ChangedEntry;
    use crate::ldap::model::tests::settings;

    fn names(names: &[&str]) -> Vec<GroupName> {
        names.iter().map(|n| GroupName::new(n)).collect()
    }

    fn user(n: u8, uid: &str, username: &str) -> ChangedEntry {
        changed(n, &udn(uid), &[("uid", &[username])])
    }

    /// Resolves `k` by [`Kept::resolve`] and checks the snapshot against a resolve of the whole model; returns
    /// how many groups were resolved.
    fn resolved(k: &mut Kept, s: &Settings, names: &[GroupName]) -> usize {
        let whole = crate::ldap::resolve(&k.entries(s, names).expect("entries"), s, names);
        let resolved = k.resolve(s, names).expect("resolves");
        assert_eq!(resolved.snapshot.users_seen, whole.users_seen);
        let outcomes = |s: &Snapshot| s.groups.iter().map(|g| (g.name.clone(), g.result.clone())).collect::<Vec<_>>();
        assert_eq!(outcomes(&resolved.snapshot), outcomes(&whole));
        resolved.resolved
    }

    /// Team (10: alice, Inner), Inner (11: bob), Solo (12: carol); users alice (1), bob (2), carol (3).
    fn three_groups() -> Kept {
        let mut k = kept();
        k.apply(Part::Users, &deletes("u2", vec![user(3, "carol", "carol")], &[]));
        k.apply(Part::Groups, &deletes("g2", vec![group(12, "Solo", &[&udn("carol")])], &[]));
        k
    }

    #[test]
    fn only_the_groups_a_change_touches_are_resolved_again() {
        let s = settings(Nesting::Recursive);
        let configured = names(&["Team", "Inner", "Solo"]);
        let mut k = three_groups();
        assert_eq!(resolved(&mut k, &s, &configured), 3, "the first resolve is of the whole model");
        assert_eq!(resolved(&mut k, &s, &configured), 0, "nothing changed: every outcome kept");
        // Solo gains alice: Solo alone.
        k.apply(Part::Groups, &deletes("g3", vec![group(12, "Solo", &[&udn("carol"), &udn("alice")])], &[]));
        assert_eq!(resolved(&mut k, &s, &configured), 1);
        // Bob's username changes: Inner, and Team through it.
        k.apply(Part::Users, &deletes("u3", vec![user(2, "bob", "robert")], &[]));
        assert_eq!(resolved(&mut k, &s, &configured), 2);
        // Carol is deleted: Solo, whose member value now names nothing.
        k.apply(Part::Users, &deletes("u4", vec![], &[3]));
        assert_eq!(resolved(&mut k, &s, &configured), 1);
        // Another setting: the whole model again.
        let off = settings(Nesting::Off);
        assert_eq!(resolved(&mut k, &off, &configured), 3);
    }

    /// Users created after every kept one are appended to the last user index, which is then what a build from
    /// every user gives; a user that sorts among the others makes the index again.
    #[test]
    fn users_created_last_are_appended_to_the_last_user_index() {
        let s = settings(Nesting::Recursive);
        let configured = names(&["Team", "Inner", "Solo"]);
        let mut k = three_groups();
        resolved(&mut k, &s, &configured);
        // zed: a time-based UUID, created after the others (whose test UUIDs carry no time), joins Solo.
        k.apply(Part::Users, &deletes("u3", vec![user(20, "zed", "zed")], &[]));
        k.apply(Part::Groups, &deletes("g3", vec![group(12, "Solo", &[&udn("carol"), &udn("zed")])], &[]));
        let added = |k: &Kept| k.users.marks.clone().expect("marks").added;
        let last = k.last.clone().expect("a last resolve");
        let appended = k.user_index_appended(&s, &mut last.users.clone(), &added(&k)).expect("appended");
        let dns = |i: &UserIndex| i.users.iter().map(|u| u.dn.clone()).collect::<Vec<_>>();
        let whole = dns(&k.user_index(&s, None));
        assert_eq!(dns(&appended), whole);
        assert_eq!(whole.last().map(|dn| &**dn), Some(udn("zed").as_str()));
        assert_eq!(resolved(&mut k, &s, &configured), 1, "Solo");
        // aaa sorts first (no time in its UUID, and its DN first): the index is made again.
        k.apply(Part::Users, &deletes("u4", vec![user(4, "aaa", "aaa")], &[]));
        let last = k.last.clone().expect("a last resolve");
        assert!(k.user_index_appended(&s, &mut last.users.clone(), &added(&k)).is_none());
        resolved(&mut k, &s, &configured);
        // A kept user changed: not appended either (the patch makes the index again).
        k.apply(Part::Users, &deletes("u5", vec![user(2, "bob", "robert")], &[]));
        assert!(k.users.marks.as_ref().is_some_and(|m| m.replaced));
        resolved(&mut k, &s, &configured);
    }

    /// When nothing else holds the last resolve (a daemon's change runs), users created last are appended to
    /// its index itself, not to a copy of it: every earlier user is the same copy, the new ones come last, and
    /// the answer is a resolve of the whole model's (checked by `resolved`).
    #[test]
    fn users_created_last_are_appended_to_the_last_index_itself_when_nothing_else_holds_it() {
        let s = settings(Nesting::Recursive);
        let configured = names(&["Team", "Inner", "Solo"]);
        let mut k = three_groups();
        resolved(&mut k, &s, &configured);
        let users = |k: &Kept| k.last.as_ref().expect("a last resolve").users.users.clone();
        let before = users(&k);
        k.apply(Part::Users, &deletes("u3", vec![user(20, "zed", "zed"), user(21, "yan", "yan")], &[]));
        k.apply(Part::Groups, &deletes("g3", vec![group(12, "Solo", &[&udn("carol"), &udn("yan")])], &[]));
        assert_eq!(resolved(&mut k, &s, &configured), 1, "Solo");
        let after = users(&k);
        assert_eq!(after.len(), before.len() + 2);
        assert!(before.iter().zip(&after).all(|(a, b)| Arc::ptr_eq(a, b)), "the earlier users, shared");
        let last: Vec<&str> = after[before.len()..].iter().map(|u| u.username.as_str()).collect();
        assert_eq!(last, ["zed", "yan"]);
        // The next change run goes on from that index: a member added to Team alone.
        k.apply(
            Part::Groups,
            &deletes("g4", vec![group(10, "Team", &[&udn("alice"), &gdn("Inner"), &udn("zed")])], &[]),
        );
        assert_eq!(resolved(&mut k, &s, &configured), 1, "Team");
    }

    /// The last index is taken (left empty) for the users created last only when nothing else holds it, and
    /// copied (left whole) when something does; both give the same index.
    #[test]
    fn the_last_index_is_taken_only_when_nothing_else_holds_it() {
        let s = settings(Nesting::Recursive);
        let mut k = three_groups();
        resolved(&mut k, &s, &names(&["Team", "Inner", "Solo"]));
        k.apply(Part::Users, &deletes("u3", vec![user(20, "zed", "zed")], &[]));
        let added = k.users.marks.clone().expect("marks").added;
        let mut index = k.last.as_ref().expect("a last resolve").users.clone();
        let copied = k.user_index_appended(&s, &mut index, &added).expect("appended");
        assert_eq!(index.users.len(), 3, "held by the last resolve too: copied, left whole");
        k.last = None;
        let taken = k.user_index_appended(&s, &mut index, &added).expect("appended");
        assert!(index.users.is_empty(), "held nowhere else: taken");
        let dns = |i: &UserIndex| i.users.iter().map(|u| u.dn.clone()).collect::<Vec<_>>();
        assert_eq!(dns(&taken), dns(&copied));
        assert_eq!(dns(&taken).len(), 4);
    }

    #[test]
    fn a_username_taken_by_a_user_elsewhere_resolves_the_group_of_its_first_holder_again() {
        let s = settings(Nesting::Recursive);
        let configured = names(&["Team", "Inner", "Solo"]);
        let mut k = three_groups();
        resolved(&mut k, &s, &configured);
        // Carol (in Solo only) takes the name "bob": bob in Inner (and so in Team) is now a collision.
        k.apply(Part::Users, &deletes("u3", vec![user(3, "carol", "BOB")], &[]));
        assert_eq!(resolved(&mut k, &s, &configured), 3);
        let snapshot = k.resolve(&s, &configured).expect("resolves").snapshot;
        let inner = snapshot.groups[1].result.as_ref().expect("Inner");
        assert!(inner.members.is_empty() && inner.collisions.len() == 1, "{inner:?}");
    }

    #[test]
    fn a_nested_group_configured_by_its_second_name_reads_as_in_a_resolve_of_the_whole_model() {
        // Inner holds two names, the configured one second: found by name, it is "Inner"; read by the walk
        // alone, it would be "Inner-old" in Team's sources.
        let s = settings(Nesting::Recursive);
        let configured = names(&["Team", "Inner"]);
        let mut k = kept();
        let inner =
            changed(11, "cn=Inner,ou=groups,dc=x", &[("cn", &["Inner-old", "Inner"]), ("member", &[&udn("bob")])]);
        k.apply(Part::Groups, &deletes("g2", vec![inner], &[]));
        resolved(&mut k, &s, &configured);
        // Team alone changes: resolved again, Inner's outcome kept.
        let team = group(10, "Team", &[&udn("alice"), &udn("bob"), "cn=Inner,ou=groups,dc=x"]);
        k.apply(Part::Groups, &deletes("g3", vec![team], &[]));
        assert_eq!(resolved(&mut k, &s, &configured), 1);
        let snapshot = k.resolve(&s, &configured).expect("resolves").snapshot;
        let team = snapshot.groups[0].result.as_ref().expect("Team");
        assert_eq!(team.sources.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(), ["Team", "Inner"]);
    }

    #[test]
    fn a_member_value_the_model_cannot_compare_is_left_to_a_resolve_of_the_whole_model() {
        // Team's 66 dangling member groups make the walk sweep every group, which sets Odd's member aside as
        // neither without asking whether the model can compare it (an OID for `cn`: it cannot).
        let s = settings(Nesting::Recursive);
        let configured = names(&["Team", "Odd"]);
        let gone: Vec<String> = (0..66).map(|n| format!("cn=gone{n},ou=groups,dc=x")).collect();
        let gone: Vec<&str> = gone.iter().map(String::as_str).collect();
        let mut k = kept();
        let odd = group(12, "Odd", &["2.5.4.3=ghost,ou=groups,dc=x", &udn("alice")]);
        k.apply(Part::Groups, &deletes("g2", vec![group(10, "Team", &gone), odd], &[]));
        assert!(k.entries(&s, &configured).is_ok());
        assert_eq!(resolved(&mut k, &s, &configured), 2);
        // Team keeps 62 of them: no sweep, and a resolve of the whole model asks for a full read for Odd's member,
        // which a patch of Team alone would not have walked.
        k.apply(Part::Groups, &deletes("g3", vec![group(10, "Team", &gone[..62])], &[]));
        let whole = k.entries(&s, &configured).err();
        assert!(matches!(whole, Some(NeedsFullRead::UncomparableMember { .. })), "{whole:?}");
        assert_eq!(k.resolve(&s, &configured).err(), whole);
        // The control: with members it can compare, the same change is a patch of Team alone.
        let mut k = kept();
        let odd = group(12, "Odd", &["cn=ghost,ou=groups,dc=x", &udn("alice")]);
        k.apply(Part::Groups, &deletes("g2", vec![group(10, "Team", &gone), odd], &[]));
        resolved(&mut k, &s, &configured);
        k.apply(Part::Groups, &deletes("g3", vec![group(10, "Team", &gone[..62])], &[]));
        assert_eq!(resolved(&mut k, &s, &configured), 1);
    }

    #[test]
    fn a_group_as_deep_as_the_cap_is_resolved_with_every_configured_group() {
        // Team > Mid > Inner, at the cap of 2: Inner's dangling member is set aside only because Ops, configured
        // too, reaches Inner sooner. Ops lets Inner go: Team is too deep now, which only the whole model tells.
        let s = Settings { max_nesting_depth: 2, ..settings(Nesting::Recursive) };
        let configured = names(&["Team", "Ops"]);
        let inner = "cn=Inner,ou=groups,dc=x";
        let mut k = kept();
        let groups = vec![
            group(10, "Team", &["cn=Mid,ou=groups,dc=x"]),
            group(11, "Inner", &[&udn("bob"), "cn=gone,ou=groups,dc=x"]),
            group(12, "Ops", &[inner]),
            group(13, "Mid", &[inner]),
        ];
        k.apply(Part::Groups, &deletes("g2", groups, &[]));
        resolved(&mut k, &s, &configured);
        let team = |k: &mut Kept| k.resolve(&s, &configured).expect("resolves").snapshot.groups[0].result.clone();
        assert!(team(&mut k).is_ok());
        k.apply(Part::Groups, &deletes("g3", vec![group(12, "Ops", &[&udn("alice")])], &[]));
        assert_eq!(resolved(&mut k, &s, &configured), 2);
        assert!(matches!(team(&mut k), Err(crate::ldap::Error::TooDeep { .. })));
    }

    #[test]
    fn a_member_value_written_otherwise_than_its_entry_follows_the_entry() {
        let s = settings(Nesting::Recursive);
        let configured = names(&["Team", "Solo"]);
        let mut k = three_groups();
        // Solo names carol as UID=CAROL: not her entry's DN as written, the same DN.
        let loose = udn("carol").replace("uid=carol", "UID=CAROL");
        k.apply(Part::Groups, &deletes("g3", vec![group(12, "Solo", &[&loose])], &[]));
        resolved(&mut k, &s, &configured);
        // Her username changes: Solo follows, Team does not need to.
        k.apply(Part::Users, &deletes("u3", vec![user(3, "carol", "caroline")], &[]));
        assert_eq!(resolved(&mut k, &s, &configured), 1);
        let snapshot = k.resolve(&s, &configured).expect("resolves").snapshot;
        let solo = snapshot.groups[1].result.as_ref().expect("Solo");
        assert_eq!(solo.members[0].username.as_str(), "caroline");
    }
}
