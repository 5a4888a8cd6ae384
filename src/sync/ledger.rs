//! The managed users of one run (kept in the state database, through the run's [`Journal`]): read once before
//! the steps that keep them, handed to the disabled-account step and then to the leaver step, and written once
//! after both. The leaver step sees what the disabled-account step recorded in the same run.
//!
//! The write rule: only the users a step changed in this run are written (flags, ids, when last seen, the
//! leaver streaks' `leaver_runs` and `leaver_since`), never in a dry run (no step hands back a record in one).
//! A deactivation or reactivation is also recorded on its own as it happens, with its intent
//! ([`super::activation::activate`]); this write is for the rest.

use crate::ldap::Member;
use crate::report::{GroupStatus, Report};
use crate::state::db::UserWrites;
use crate::state::{self, Changes, Managed, ManagedUser};
use crate::sync::journal::Journal;
use crate::username::{NameIndex, Username};
use rustc_hash::FxHashMap as HashMap;
use std::sync::Arc;

/// A step that keeps managed users: the one a failed write is reported against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keeper {
    DisabledAccounts,
    Leavers,
    /// The DNs recorded from the members read (`super::unresolved::record_dns`): no step's own.
    Directory,
    /// The records matched again after an accepted identity change (`super::rematch`).
    Rematch,
}

/// The managed users for one run.
#[derive(Debug)]
pub struct Ledger<'a> {
    journal: &'a Journal,
    /// As read, then as the steps leave them (changed in place); `Err` when they cannot be used: every step
    /// that needs them fails (nothing deactivated).
    users: Result<Managed, state::Error>,
    /// The users a step changed, and whether each was read (`false`: added in this run): what the write writes
    /// or deletes. Not what they were: the first run of a day changes every user (their `last_seen`), and a
    /// copy of 100,000 records held until the write was the run's peak of memory.
    touched: HashMap<Username, bool>,
    /// The steps that changed `users` in this run.
    changed_by: Vec<Keeper>,
    /// The database holds `users` as they are now: nothing to write, or written.
    saved: bool,
}

impl<'a> Ledger<'a> {
    /// The managed users: those the daemon kept from its last run when the database is as that run left it
    /// ([`Journal::take_kept_users`]), else read from the run's state.
    pub fn load(journal: &'a Journal) -> Ledger<'a> {
        Ledger::load_sharing(journal, &[])
    }

    /// [`Ledger::load`], a load from the state sharing the usernames of `members` (the members the run read).
    pub fn load_sharing(journal: &'a Journal, members: &[Arc<Member>]) -> Ledger<'a> {
        let users = match journal.take_kept_users() {
            Some(users) => Ok(users),
            None if members.is_empty() => journal.load_managed(),
            None => journal.load_managed_sharing(&MemberNames::new(members)),
        };
        Ledger { journal, users, touched: HashMap::default(), changed_by: Vec::new(), saved: false }
    }

    /// Where the run records what it does.
    pub fn journal(&self) -> &'a Journal {
        self.journal
    }

    /// The managed users, or why they cannot be used.
    pub fn users(&self) -> Result<&Managed, &state::Error> {
        self.users.as_ref()
    }

    /// Takes the users `step` changed or added, as it leaves them, after its writes' outcomes are recorded.
    pub fn update(&mut self, step: Keeper, changes: Changes) {
        let Ok(users) = &mut self.users else { return };
        // Room made once: the first run of a day changes every user (their `last_seen`), and a map grown by
        // doubling holds its old table beside the new one.
        self.touched.reserve(changes.len());
        let mut changed = false;
        for (key, user) in changes {
            match users.users.get_mut(&key) {
                Some(current) if *current == user => continue,
                Some(current) => {
                    self.touched.entry(key).or_insert(true);
                    *current = user;
                }
                None => {
                    self.touched.entry(key).or_insert(false);
                    users.users.insert(user);
                }
            }
            changed = true;
        }
        if changed {
            self.changed_by.push(step);
        }
    }

    /// Lets `step` change the managed users in place; `change` says whether it changed anything. For the rare
    /// steps that may change many (a match after an identity change, the DNs first recorded): it compares every
    /// user.
    pub fn amend(&mut self, step: Keeper, change: impl FnOnce(&mut Managed) -> bool) {
        let Ok(users) = &mut self.users else { return };
        let before = users.clone();
        if !change(users) {
            return;
        }
        for (key, user) in before.users.iter() {
            if users.users.get(key) != Some(user) {
                self.touched.entry(key.clone()).or_insert(true);
            }
        }
        for key in users.users.keys().filter(|key| !before.users.contains_key(key)) {
            self.touched.entry(key.clone()).or_insert(false);
        }
        self.changed_by.push(step);
    }

    /// [`Ledger::amend`] for a step that changes only the users `keys` names: it compares those alone rather
    /// than copying every user (a run recording the DNs of 1,000 new hires need not copy 100,000 records).
    pub fn amend_users(&mut self, step: Keeper, keys: &[Username], change: impl FnOnce(&mut Managed) -> bool) {
        let Ok(users) = &mut self.users else { return };
        let before: Vec<Option<ManagedUser>> = keys.iter().map(|key| users.users.get(key).cloned()).collect();
        let count = users.users.len();
        if !change(users) {
            return;
        }
        debug_assert_eq!(count, users.users.len(), "a step amending some users adds or removes none");
        for (key, original) in keys.iter().zip(before) {
            if users.users.get(key) != original.as_ref() {
                self.touched.entry(key.clone()).or_insert(original.is_some());
            }
        }
        self.changed_by.push(step);
    }

    /// Whether `step` changed the managed users in this run.
    pub fn changed_by(&self, step: Keeper) -> bool {
        self.changed_by.contains(&step)
    }

    /// Writes the managed users a step changed (clearing a pending match when this run matched them again). A
    /// failed write fails every step whose changes it loses, in `report`, and is logged.
    pub fn save(&mut self, report: &mut Report) {
        let Ok(users) = &self.users else { return };
        if self.changed_by.is_empty() {
            self.saved = true;
            return;
        }
        // The users changed, as they are now (not copied), and those read and gone. A user a later step took
        // back to what was read is written as read.
        let mut writes = UserWrites::default();
        for (key, &read) in &self.touched {
            match users.users.get(key) {
                Some(now) => writes.write.push(now),
                None if read => writes.delete.push(key),
                None => {}
            }
        }
        let written = if self.changed_by(Keeper::Rematch) {
            self.journal.save_rematched(writes)
        } else {
            self.journal.save_users(writes)
        };
        let e = match written {
            Ok(()) => {
                self.saved = true;
                return;
            }
            Err(e) => e,
        };
        tracing::error!(error = %e, "state file not written");
        let error = format!("managed users not saved: {e}");
        if let (Some(step), true) = (report.disabled_accounts.as_mut(), self.changed_by(Keeper::DisabledAccounts)) {
            (step.status, step.error) = (GroupStatus::Failed, Some(error.clone()));
        }
        if let (Some(step), true) = (report.leavers.as_mut(), self.changed_by(Keeper::Leavers)) {
            (step.status, step.error) = (GroupStatus::Failed, Some(error));
        }
    }

    /// Hands the managed users back to the journal, for the daemon to keep until its next run, when this run
    /// saved them (the journal decides whether they are kept: [`Journal::keep_users`]).
    pub fn keep(self) {
        if let (true, Ok(users)) = (self.saved, self.users) {
            self.journal.keep_users(users);
        }
    }
}

/// The members' usernames by folded form, found through their list (no copy of the names).
struct MemberNames<'m> {
    members: &'m [Arc<Member>],
    index: NameIndex,
}

impl<'m> MemberNames<'m> {
    fn new(members: &'m [Arc<Member>]) -> MemberNames<'m> {
        MemberNames { members, index: NameIndex::new(members.len(), |n| Some(&members[n].username)) }
    }
}

impl state::Names for MemberNames<'_> {
    fn get(&self, folded: &str) -> Option<(&Username, &arcstr::ArcStr)> {
        let members = self.members;
        let member = &members[self.index.find(folded, |n| Some(&members[n].username))?];
        Some((&member.username, &member.dn))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{DisabledReport, LeaversReport};
    use crate::state::ManagedUser;
    use crate::state::db::Owner;
    use crate::username::Username;

    fn alice(now: &str) -> Managed {
        let mut m = Managed::default();
        m.seen(&Username::new("Alice").unwrap(), Some(1), now);
        m
    }

    fn journal(dir: &std::path::Path) -> Journal {
        Journal::open(dir, &Owner::for_tests(), "r").unwrap()
    }

    #[test]
    fn a_save_writes_every_user_changed_and_deletes_those_gone() {
        let dir = tempfile::tempdir().unwrap();
        let j = journal(dir.path());
        let mut report = Report::new("r".into(), false);
        let mut read = Managed::default();
        for name in ["alice", "bob", "carol", "dan"] {
            read.seen(&Username::new(name).unwrap(), None, "day1");
        }
        let mut ledger = Ledger::load(&j);
        ledger.update(Keeper::Leavers, read.users.clone().into_iter().collect());
        ledger.save(&mut report);
        // The next day: every user seen again (each record changed), then one gone, one added and gone in the
        // run, and one changed by a step and taken back by the next.
        let mut ledger = Ledger::load(&j);
        let mut next = read.clone();
        for name in ["alice", "bob", "carol"] {
            next.seen(&Username::new(name).unwrap(), None, "day2");
        }
        next.seen(&Username::new("erin").unwrap(), None, "day2");
        ledger.update(Keeper::Leavers, next.users.clone().into_iter().collect());
        ledger.amend(Keeper::Directory, |m| {
            let gone = [Username::new("bob").unwrap(), Username::new("erin").unwrap()];
            gone.iter().for_each(|name| drop(m.users.remove(name)));
            true
        });
        let dan = read.users[&Username::new("dan").unwrap()].clone();
        ledger.update(
            Keeper::DisabledAccounts,
            Changes::from_iter([(dan.username.clone(), ManagedUser { id: Some(4), ..dan.clone() })]),
        );
        ledger.update(Keeper::Leavers, Changes::from_iter([(dan.username.clone(), dan)]));
        ledger.save(&mut report);
        assert!(report.error.is_none(), "written");
        let mut expected = next;
        for name in ["bob", "erin"] {
            expected.users.remove(&Username::new(name).unwrap());
        }
        assert_eq!(Ledger::load(&j).users().unwrap(), &expected);
        assert_eq!(expected.users[&Username::new("alice").unwrap()].last_seen.as_str(), "day2", "moved on");
    }

    #[test]
    fn written_when_a_step_changed_it_and_not_at_all_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let mut report = Report::new("r".into(), false);
        let j = journal(dir.path());
        let mut ledger = Ledger::load(&j);
        assert_eq!(ledger.users().unwrap(), &Managed::default(), "a new state is nobody managed");
        ledger.update(Keeper::DisabledAccounts, Changes::new());
        assert!(!ledger.changed_by(Keeper::DisabledAccounts), "nothing changed");
        ledger.save(&mut report);

        ledger.update(Keeper::Leavers, alice("t1").users.into_iter().collect());
        assert!(ledger.changed_by(Keeper::Leavers) && !ledger.changed_by(Keeper::DisabledAccounts));
        ledger.save(&mut report);
        assert_eq!(Ledger::load(&j).users().unwrap(), &alice("t1"));

        // A leaver streak alone is a change.
        let mut streak = alice("t1");
        let entry: &mut ManagedUser = streak.users.get_mut(&Username::new("alice").unwrap()).unwrap();
        (entry.leaver_runs, entry.leaver_since) = (1, Some("t2".into()));
        let mut ledger = Ledger::load(&j);
        ledger.update(Keeper::Leavers, streak.users.clone().into_iter().collect());
        ledger.save(&mut report);
        assert_eq!(Ledger::load(&j).users().unwrap(), &streak);
        assert!(report.error.is_none(), "no step failed");
    }

    /// Amending some users writes what amending them among all does: the users changed, and only those.
    #[test]
    fn amending_some_users_writes_them_as_amending_all_would() {
        let dir = tempfile::tempdir().unwrap();
        let j = journal(dir.path());
        let mut everyone = alice("t1");
        for name in ["bob", "carol"] {
            everyone.seen(&Username::new(name).unwrap(), None, "t1");
        }
        let mut ledger = Ledger::load(&j);
        ledger.update(Keeper::Leavers, everyone.users.clone().into_iter().collect());
        ledger.save(&mut Report::new("r".into(), false));
        let (bob, carol) = (Username::new("bob").unwrap(), Username::new("carol").unwrap());
        let set_dn = |m: &mut Managed| {
            m.users.get_mut(&bob).unwrap().dn = Some("uid=bob".into());
            true
        };
        let mut ledger = Ledger::load(&j);
        ledger.amend_users(Keeper::Directory, &[bob.clone(), carol.clone()], set_dn);
        assert!(ledger.changed_by(Keeper::Directory));
        assert_eq!(ledger.touched.keys().collect::<Vec<_>>(), [&bob], "carol, named but unchanged, is not written");
        ledger.save(&mut Report::new("r".into(), false));
        everyone.users.get_mut(&bob).unwrap().dn = Some("uid=bob".into());
        assert_eq!(Ledger::load(&j).users().unwrap(), &everyone);
    }

    /// A load sharing the members' names reads what a plain load reads, each name shared where the member's is
    /// written as the record's.
    #[test]
    fn a_load_shares_the_names_and_dns_of_members_written_as_the_records() {
        let dir = tempfile::tempdir().unwrap();
        let j = journal(dir.path());
        let mut everyone = alice("t1");
        for name in ["bob", "Carol", "dan"] {
            everyone.seen(&Username::new(name).unwrap(), None, "t1");
        }
        // bob recorded at the DN read, Alice at another (her entry moved since).
        everyone.users.get_mut(&Username::new("bob").unwrap()).unwrap().dn = Some("uid=bob".into());
        everyone.users.get_mut(&Username::new("alice").unwrap()).unwrap().dn = Some("uid=moved".into());
        let mut ledger = Ledger::load(&j);
        ledger.update(Keeper::Leavers, everyone.users.clone().into_iter().collect());
        ledger.save(&mut Report::new("r".into(), false));
        // bob and Alice as recorded, carol written otherwise in the directory, dan no member, erin no record.
        let members: Vec<Arc<Member>> = ["bob", "Alice", "carol", "erin"]
            .iter()
            .map(|n| Arc::new(Member { username: Username::new(n).unwrap(), dn: format!("uid={n}").into() }))
            .collect();
        let shared = Ledger::load_sharing(&j, &members);
        let read = shared.users().unwrap();
        assert_eq!(read, Ledger::load(&j).users().unwrap());
        assert_eq!(read, &everyone);
        let name = |n: &str| read.users[&Username::new(n).unwrap()].username.as_str().as_ptr();
        let member = |k: usize| members[k].username.as_str().as_ptr();
        assert!(name("bob") == member(0) && name("alice") == member(1), "shared");
        assert!(name("carol") != member(2), "written otherwise: made, as recorded");
        assert_eq!(read.users[&Username::new("carol").unwrap()].username.as_str(), "Carol");
        let dn = |n: &str| read.users[&Username::new(n).unwrap()].dn.clone().unwrap();
        assert!(arcstr::ArcStr::ptr_eq(&dn("bob"), &members[0].dn), "the DN read, shared");
        assert_eq!((&*dn("alice"), arcstr::ArcStr::ptr_eq(&dn("alice"), &members[1].dn)), ("uid=moved", false));
    }

    #[test]
    fn a_failed_write_fails_the_steps_whose_changes_it_loses() {
        let dir = tempfile::tempdir().unwrap();
        state::save_managed(dir.path(), &Managed::default()).unwrap();
        // A dry run's state (the JSON files, read only) takes no write.
        let j = Journal::open_read_only(dir.path(), "r").unwrap();
        let mut ledger = Ledger::load(&j);
        ledger.update(Keeper::Leavers, alice("t1").users.into_iter().collect());
        let mut report = Report::new("r".into(), false);
        report.disabled_accounts = Some(DisabledReport::new("import_then_deactivate"));
        report.leavers = Some(LeaversReport::new("deactivate"));
        ledger.save(&mut report);
        let leavers = report.leavers.unwrap();
        assert_eq!(leavers.status, GroupStatus::Failed);
        assert!(leavers.error.unwrap().starts_with("managed users not saved: "));
        let disabled = report.disabled_accounts.unwrap();
        assert_eq!((disabled.status, disabled.error), (GroupStatus::Ok, None), "its part was not changed");
    }
}
