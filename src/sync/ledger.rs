//! The managed users of one run (kept in the state database, through the run's [`Journal`]): read once before
//! the steps that keep them, handed to the disabled-account step and then to the leaver step, and written once
//! after both. The leaver step sees what the disabled-account step recorded in the same run.
//!
//! The write rule: only the users a step changed in this run are written (flags, ids, when last seen, the
//! leaver streaks' `leaver_runs` and `leaver_since`), never in a dry run (no step hands back a record in one).
//! A deactivation or reactivation is also recorded on its own as it happens, with its intent
//! ([`super::activation::activate`]); this write is for the rest.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::report::{GroupStatus, Report};
use crate::state::db::Generation;
use crate::state::{self, Changes, Managed, ManagedUser};
use crate::sync::journal::Journal;
use crate::username::Username;
use rustc_hash::FxHashMap as HashMap;

/// The managed users a daemon keeps in memory between runs, with the generation of the database rows they
/// were read from or written to (`state.db` moves it on with every change to those rows, whoever makes it). A
/// run takes them out when the database is still at that generation, instead of reading 100,000 rows again,
/// and puts them back only when it knows they are what the database holds: nobody wrote the rows between its
/// read and its own write. Anything else (a run that failed, panicked or was a dry run, a change by another
/// process or by hand, another database at the path) leaves nothing kept, and the next run reads the rows.
#[derive(Debug, Default)]
pub struct Kept {
    slot: Mutex<Option<KeptUsers>>,
    /// How many runs took the users from here, not from the database (for tests and the benchmark).
    reused: AtomicU64,
}

#[derive(Debug)]
struct KeptUsers {
    path: PathBuf,
    generation: Generation,
    users: Managed,
}

impl Kept {
    /// How many runs took the managed users kept here.
    pub fn reused(&self) -> u64 {
        self.reused.load(Ordering::Relaxed)
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<KeptUsers>> {
        self.slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The users kept for the database at `path` at `generation`; nothing is kept afterwards either way.
    fn take(&self, path: &std::path::Path, generation: &Generation) -> Option<Managed> {
        let kept = self.slot().take()?;
        (kept.path == path && kept.generation == *generation).then(|| {
            self.reused.fetch_add(1, Ordering::Relaxed);
            kept.users
        })
    }

    fn put(&self, path: PathBuf, generation: Generation, users: Managed) {
        *self.slot() = Some(KeptUsers { path, generation, users });
    }
}

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
    /// What each user a step changed was as read (`None`: added in this run): what the write compares.
    originals: HashMap<Username, Option<ManagedUser>>,
    /// The steps that changed `users` in this run.
    changed_by: Vec<Keeper>,
    /// Where the users are kept between runs (the daemon's), and the generation they were read at.
    kept: Option<&'a Kept>,
    read_at: Option<Generation>,
    /// The generation the database holds the users at after this run's save, once it is known to be exactly
    /// them: what [`Ledger::keep`] keeps them with.
    saved_at: Option<Generation>,
}

impl<'a> Ledger<'a> {
    /// Reads the managed users kept in the run's state.
    pub fn load(journal: &'a Journal) -> Ledger<'a> {
        Ledger::load_kept(journal, None)
    }

    /// Takes the managed users from `kept` when the database is still at the generation they were kept with,
    /// else reads them from the run's state.
    pub fn load_kept(journal: &'a Journal, kept: Option<&'a Kept>) -> Ledger<'a> {
        // A generation that cannot be read means a read, and nothing kept after the run.
        let read_at = journal.generation().ok().flatten();
        let path = journal.database_path();
        let reused = match (kept, &path, &read_at) {
            (Some(kept), Some(path), Some(at)) => kept.take(path, at),
            _ => None,
        };
        let users = match reused {
            Some(users) => Ok(users),
            None => journal.load_managed(),
        };
        Ledger { journal, users, originals: HashMap::default(), changed_by: Vec::new(), kept, read_at, saved_at: None }
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
        let mut changed = false;
        for (key, user) in changes {
            match users.users.get_mut(&key) {
                Some(current) if *current == user => continue,
                Some(current) => {
                    self.originals.entry(key).or_insert_with(|| Some(current.clone()));
                    *current = user;
                }
                None => {
                    self.originals.entry(key.clone()).or_insert(None);
                    users.users.insert(key, user);
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
        for (key, user) in &before.users {
            if users.users.get(key) != Some(user) {
                self.originals.entry(key.clone()).or_insert_with(|| Some(user.clone()));
            }
        }
        for key in users.users.keys().filter(|key| !before.users.contains_key(*key)) {
            self.originals.entry(key.clone()).or_insert(None);
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
            // Nothing to write: the users are what was read, if nobody wrote the rows since.
            let now = self.journal.generation().ok().flatten();
            self.saved_at = now.filter(|now| Some(now) == self.read_at.as_ref());
            return;
        }
        // The users changed, as read and as they are now.
        let (mut before, mut after) = (Managed::default(), Managed::default());
        for (key, original) in &self.originals {
            if let Some(original) = original {
                before.users.insert(key.clone(), original.clone());
            }
            if let Some(now) = users.users.get(key) {
                after.users.insert(key.clone(), now.clone());
            }
        }
        let written = if self.changed_by(Keeper::Rematch) {
            self.journal.save_rematched(&before, &after)
        } else {
            self.journal.save_managed(&before, &after)
        };
        let e = match written {
            Ok(saved) => {
                // The rows are `users` when they were still as read when this write began.
                self.saved_at = saved.after.filter(|_| saved.before.is_some() && saved.before == self.read_at);
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

    /// Keeps the managed users for the next run, when this run saved them and they are what the database
    /// holds ([`Kept`]).
    pub fn keep(self) {
        let (Some(kept), Some(at), Some(path)) = (self.kept, self.saved_at, self.journal.database_path()) else {
            return;
        };
        if let Ok(users) = self.users {
            kept.put(path, at, users);
        }
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

    /// One daemon run: the ledger loaded through `kept`, `step` applied, saved and kept.
    fn daemon_run(j: &Journal, kept: &Kept, step: impl FnOnce(&mut Ledger<'_>)) -> Managed {
        let mut ledger = Ledger::load_kept(j, Some(kept));
        step(&mut ledger);
        ledger.save(&mut Report::new("r".into(), false));
        let users = ledger.users().unwrap().clone();
        ledger.keep();
        users
    }

    #[test]
    fn the_daemon_keeps_the_users_between_runs_and_reads_them_again_after_any_other_write() {
        let dir = tempfile::tempdir().unwrap();
        let j = journal(dir.path());
        let kept = Kept::default();
        let streak = |m: &mut Managed| {
            m.users.get_mut(&Username::new("alice").unwrap()).unwrap().leaver_runs += 1;
            true
        };
        daemon_run(&j, &kept, |l| l.update(Keeper::Leavers, alice("t1").users.into_iter().collect()));
        assert_eq!(kept.reused(), 0, "the first run reads the database");
        // Kept after a run that wrote, and after one that wrote nothing.
        let after = daemon_run(&j, &kept, |l| l.amend(Keeper::Leavers, streak));
        assert_eq!(kept.reused(), 1);
        assert_eq!(after, Ledger::load(&j).users().unwrap().clone(), "what is kept is what the database holds");
        daemon_run(&j, &kept, |_| {});
        let unchanged = daemon_run(&j, &kept, |_| {});
        assert_eq!(kept.reused(), 3);
        assert_eq!(unchanged.users[&Username::new("alice").unwrap()].leaver_runs, 1);

        // Positive control: a row changed by hand between runs is read again, and seen.
        let other = rusqlite::Connection::open(dir.path().join(state::db::FILE_NAME)).unwrap();
        other.execute("UPDATE managed_users SET leaver_runs = 7 WHERE folded = 'alice'", []).unwrap();
        let read = daemon_run(&j, &kept, |_| {});
        assert_eq!(kept.reused(), 3, "not taken from memory");
        assert_eq!(read.users[&Username::new("alice").unwrap()].leaver_runs, 7);

        // A write during the run, before its own (an intent settled, another process): nothing kept after it.
        let during = daemon_run(&j, &kept, |l| {
            other
                .execute("INSERT INTO managed_users (folded, username, first_seen, last_seen) VALUES ('bob', 'Bob', 't', 't')", [])
                .unwrap();
            l.amend(Keeper::Leavers, streak);
        });
        assert_eq!(kept.reused(), 4, "taken at its start");
        assert_eq!(during.users.len(), 1, "the run's copy missed it");
        let next = daemon_run(&j, &kept, |_| {});
        assert_eq!(kept.reused(), 4, "read again");
        assert_eq!(next.users.len(), 2, "{next:?}");
        assert_eq!(next.users[&Username::new("alice").unwrap()].leaver_runs, 8);

        // A run that did not save (a dry run, a panic) keeps nothing.
        let mut ledger = Ledger::load_kept(&j, Some(&kept));
        ledger.amend(Keeper::Leavers, streak);
        ledger.keep();
        assert_eq!(kept.reused(), 5, "taken");
        daemon_run(&j, &kept, |_| {});
        assert_eq!(kept.reused(), 5, "then read again");
        daemon_run(&j, &kept, |_| {});
        assert_eq!(kept.reused(), 6, "and kept after that run");
        assert_eq!(Ledger::load(&j).users().unwrap().users[&Username::new("alice").unwrap()].leaver_runs, 8);

        // Another database at the same path is another database.
        drop(j);
        drop(other);
        for name in ["state.db", "state.db-wal", "state.db-shm"] {
            let _ = std::fs::remove_file(dir.path().join(name));
        }
        let j = journal(dir.path());
        let fresh = daemon_run(&j, &kept, |_| {});
        assert!(fresh.users.is_empty(), "{fresh:?}");
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
