//! The managed users of one run (`users.json`, kept by `crate::state`): read once before the steps that keep
//! them, handed to the disabled-account step and then to the leaver step, and written once after both. The
//! leaver step sees what the disabled-account step recorded in the same run, not the file it wrote.
//!
//! The write rule: the record is written when a step changed it in this run (flags, ids, when last seen, the
//! leaver streaks' `leaver_runs` and `leaver_since`), never otherwise and never in a dry run (no step hands
//! back a record in one). An unchanged record holds nothing the file does not.

use std::path::{Path, PathBuf};

use crate::report::{GroupStatus, Report};
use crate::state::{self, Managed};

/// A step that keeps managed users: the one a failed write is reported against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keeper {
    DisabledAccounts,
    Leavers,
}

/// The managed users for one run.
#[derive(Debug)]
pub struct Ledger {
    dir: PathBuf,
    /// As read, then as the steps left them; `Err` when the file cannot be used: every step that needs it
    /// fails (nothing deactivated), the imports do not.
    users: Result<Managed, state::Error>,
    /// The steps that changed `users` in this run.
    changed_by: Vec<Keeper>,
}

impl Ledger {
    /// Reads the managed users kept in the state directory `dir`.
    pub fn load(dir: &Path) -> Ledger {
        Ledger { dir: dir.to_path_buf(), users: state::load_managed(dir), changed_by: Vec::new() }
    }

    /// The managed users, or why they cannot be used.
    pub fn users(&self) -> Result<&Managed, &state::Error> {
        self.users.as_ref()
    }

    /// Takes the managed users as `step` leaves them, after its writes' outcomes are recorded.
    pub fn update(&mut self, step: Keeper, next: Managed) {
        if let Ok(users) = &mut self.users
            && *users != next
        {
            *users = next;
            self.changed_by.push(step);
        }
    }

    /// Whether `step` changed the managed users in this run.
    pub fn changed_by(&self, step: Keeper) -> bool {
        self.changed_by.contains(&step)
    }

    /// Writes the managed users when a step changed them. A failed write fails every step whose changes it
    /// loses, in `report`, and is logged.
    pub fn save(&self, report: &mut Report) {
        let Err(e) = self.write() else { return };
        let dir = self.dir.display();
        // Deactivations not recorded could not be undone by reactivation: say so loudly.
        tracing::error!(dir = %dir, error = %e, "state file not written");
        let error = format!("managed users not saved in {dir}: {e}");
        if let (Some(step), true) = (report.disabled_accounts.as_mut(), self.changed_by(Keeper::DisabledAccounts)) {
            (step.status, step.error) = (GroupStatus::Failed, Some(error.clone()));
        }
        if let (Some(step), true) = (report.leavers.as_mut(), self.changed_by(Keeper::Leavers)) {
            (step.status, step.error) = (GroupStatus::Failed, Some(error));
        }
    }

    /// Writes the managed users when a step changed them; nothing to write is `Ok`.
    fn write(&self) -> std::io::Result<()> {
        match &self.users {
            Ok(users) if !self.changed_by.is_empty() => state::save_managed(&self.dir, users),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{DisabledReport, LeaversReport};
    use crate::state::ManagedUser;
    use crate::username::Username;

    fn alice(now: &str) -> Managed {
        let mut m = Managed::default();
        m.seen(&Username::new("Alice").unwrap(), Some(1), now);
        m
    }

    #[test]
    fn written_once_when_a_step_changed_it_and_not_at_all_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let mut report = Report::new("r".into(), false);
        let mut ledger = Ledger::load(dir.path());
        assert_eq!(ledger.users().unwrap(), &Managed::default(), "a missing file is nobody managed");
        ledger.update(Keeper::DisabledAccounts, Managed::default());
        ledger.save(&mut report);
        assert!(!dir.path().join(state::USERS_FILE).exists(), "nothing changed: nothing written");

        ledger.update(Keeper::Leavers, alice("t1"));
        assert!(ledger.changed_by(Keeper::Leavers) && !ledger.changed_by(Keeper::DisabledAccounts));
        ledger.save(&mut report);
        let read = Ledger::load(dir.path());
        assert_eq!(read.users().unwrap(), &alice("t1"));

        // A leaver streak alone is a change.
        let mut streak = alice("t1");
        let entry: &mut ManagedUser = streak.users.get_mut(&Username::new("alice").unwrap()).unwrap();
        (entry.leaver_runs, entry.leaver_since) = (1, Some("t2".into()));
        let mut ledger = Ledger::load(dir.path());
        ledger.update(Keeper::Leavers, streak.clone());
        ledger.save(&mut report);
        assert_eq!(Ledger::load(dir.path()).users().unwrap(), &streak);
    }

    #[test]
    fn an_unreadable_file_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(state::USERS_FILE);
        std::fs::write(&path, "{").unwrap();
        let mut ledger = Ledger::load(dir.path());
        assert!(ledger.users().unwrap_err().to_string().contains("users.json"));
        ledger.update(Keeper::Leavers, alice("t1"));
        ledger.save(&mut Report::new("r".into(), false));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{");
    }

    #[test]
    fn a_failed_write_fails_the_steps_whose_changes_it_loses() {
        let dir = tempfile::tempdir().unwrap();
        let not_a_directory = dir.path().join("file");
        std::fs::write(&not_a_directory, "").unwrap();
        let mut ledger = Ledger::load(&dir.path().join("missing"));
        ledger.dir = not_a_directory;
        ledger.update(Keeper::Leavers, alice("t1"));
        let mut report = Report::new("r".into(), false);
        report.disabled_accounts = Some(DisabledReport::new("import_then_deactivate"));
        report.leavers = Some(LeaversReport::new("deactivate"));
        ledger.save(&mut report);
        let leavers = report.leavers.unwrap();
        assert_eq!(leavers.status, GroupStatus::Failed);
        assert!(leavers.error.unwrap().starts_with("managed users not saved in "));
        let disabled = report.disabled_accounts.unwrap();
        assert_eq!((disabled.status, disabled.error), (GroupStatus::Ok, None), "its part was not changed");
    }
}
