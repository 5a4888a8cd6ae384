//! A run's hold on the state directory's database (`state.db`, [`crate::state::db`]): where its steps read the
//! managed users and the shrink guard's counts, and record what they do.
//!
//! A run that writes opens the database for writing before it reads anything else, so a database it cannot
//! use (damaged, newer) fails the run before any write. A dry run opens it read-only, or, before the first
//! run that writes has migrated them, reads the JSON files it replaces; it never creates, migrates or writes.
//!
//! Each destructive call is recorded as intended before it is sent and settled after ([`Journal::intend`],
//! [`Journal::settle`]). At the start of the next run, the intents a crash or a lost answer left without an
//! outcome are settled by reading back from CloudShell ([`settle_pending`]), before any step reads the
//! managed users.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use crate::cloudshell::{self, Client};
use crate::state::db::{
    self, Action, AuditRow, Change, Database, Generation, Intent, Outcome, Owner, Pending, Saved, Settlement,
};
use crate::state::{self, Counts, Managed};

/// Where a run's state is read from, and written to.
#[derive(Debug)]
pub struct Journal {
    source: Source,
    run_id: String,
    /// Time spent in the database, in microseconds (opening it included), for the report.
    spent_us: AtomicU64,
}

#[derive(Debug)]
enum Source {
    /// The database: writable, or read-only in a dry run.
    Database(Mutex<Database>),
    /// A dry run before the first run that writes: the JSON files in this directory, read only.
    Files(PathBuf),
}

impl Journal {
    /// Opens the state in `dir` for a run that writes: the database, created (and the JSON files migrated)
    /// when missing. `owner` is recorded in a new database.
    pub fn open(dir: &Path, owner: &Owner, run_id: &str) -> Result<Journal, db::Error> {
        let started = Instant::now();
        let database = Database::open(dir, owner)?;
        Ok(Journal::new(Source::Database(Mutex::new(database)), run_id, started))
    }

    fn new(source: Source, run_id: &str, started: Instant) -> Journal {
        let spent_us = AtomicU64::new(started.elapsed().as_micros() as u64);
        Journal { source, run_id: run_id.to_string(), spent_us }
    }

    /// Time spent in the database so far, in milliseconds.
    pub fn spent_ms(&self) -> u64 {
        self.spent_us.load(Ordering::Relaxed) / 1000
    }

    /// `f`'s result, its time added to the time spent.
    fn timed<T>(&self, f: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let result = f();
        self.spent_us.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        result
    }

    /// Opens the state in `dir` for a dry run: nothing is created, migrated or written.
    pub fn open_read_only(dir: &Path, run_id: &str) -> Result<Journal, db::Error> {
        let started = Instant::now();
        let source = match Database::open_read_only(dir)? {
            Some(database) => Source::Database(Mutex::new(database)),
            None => Source::Files(dir.to_path_buf()),
        };
        Ok(Journal::new(source, run_id, started))
    }

    /// The database, for one statement or transaction: never held across an `await`. A panic while it was held
    /// cannot leave it half-written (SQLite rolls an unfinished transaction back), so a poisoned lock is taken
    /// as it is.
    fn database(&self) -> Result<MutexGuard<'_, Database>, db::Error> {
        match &self.source {
            Source::Database(d) => Ok(d.lock().unwrap_or_else(|poisoned| poisoned.into_inner())),
            Source::Files(dir) => Err(db::Error::ReadOnly { dir: dir.clone() }),
        }
    }

    /// The managed users.
    pub fn load_managed(&self) -> Result<Managed, state::Error> {
        self.timed(|| match &self.source {
            Source::Files(dir) => state::load_managed(dir),
            Source::Database(_) => Ok(self.database()?.load_managed()?),
        })
    }

    /// Writes the managed users that differ between `before` and `after`; their generation before and after.
    pub fn save_managed(&self, before: &Managed, after: &Managed) -> Result<Saved, db::Error> {
        self.timed(|| self.database()?.save_managed(before, after))
    }

    /// The managed users' generation (`None` when the state is the JSON files, or a database before schema
    /// version 3).
    pub fn generation(&self) -> Result<Option<Generation>, db::Error> {
        match &self.source {
            Source::Files(_) => Ok(None),
            Source::Database(_) => self.timed(|| self.database()?.generation()),
        }
    }

    /// The database's path (`None` when the state is the JSON files).
    pub fn database_path(&self) -> Option<PathBuf> {
        match &self.source {
            Source::Files(_) => None,
            Source::Database(_) => self.database().ok().map(|d| d.path().to_path_buf()),
        }
    }

    /// The shrink guard's counts.
    pub fn load_counts(&self) -> Result<Counts, state::Error> {
        self.timed(|| match &self.source {
            Source::Files(dir) => state::load(dir),
            Source::Database(_) => Ok(self.database()?.load_counts()?),
        })
    }

    /// Writes the counts that differ between `before` and `after`.
    pub fn save_counts(&self, before: &Counts, after: &Counts) -> Result<(), db::Error> {
        self.timed(|| self.database()?.save_counts(before, after))
    }

    /// Records `intents` before their calls are sent; their ids. An error means no call may be sent.
    pub fn intend(&self, intents: &[Intent]) -> Result<Vec<i64>, db::Error> {
        self.timed(|| self.database()?.intend(&self.run_id, &now(), intents))
    }

    /// Records the outcomes of intents. A failure is logged and returned: the intents stay, and the next run
    /// settles them by reading back.
    pub fn settle(&self, settled: &[Settlement<'_>]) -> Result<(), db::Error> {
        let written = self.timed(|| self.database().and_then(|mut d| d.settle(&self.run_id, &now(), settled)));
        if let Err(e) = &written {
            tracing::error!(error = %e, "outcome not recorded; the next run reads it back from CloudShell");
        }
        written
    }

    /// Appends rows to the audit trail.
    pub fn record(&self, rows: &[AuditRow]) -> Result<(), db::Error> {
        self.timed(|| self.database()?.record(rows))
    }

    /// Deletes the audit rows from before `before` (RFC 3339, UTC); how many.
    pub fn prune(&self, before: &str) -> Result<usize, db::Error> {
        self.timed(|| self.database()?.prune(before))
    }

    /// The configuration recorded as the owner (`None` before the first run that writes).
    pub fn owner(&self) -> Result<Option<Owner>, db::Error> {
        match &self.source {
            Source::Files(_) => Ok(None),
            Source::Database(_) => self.timed(|| self.database()?.owner().map(Some)),
        }
    }

    /// Whether an accepted identity change awaits the run that matches the managed users again.
    pub fn rematch_pending(&self) -> Result<bool, db::Error> {
        match &self.source {
            Source::Files(_) => Ok(false),
            Source::Database(_) => self.timed(|| self.database()?.rematch_pending()),
        }
    }

    /// Writes the managed users matched again, and clears the pending match, in one transaction.
    pub fn save_rematched(&self, before: &Managed, after: &Managed) -> Result<Saved, db::Error> {
        self.timed(|| self.database()?.save_rematched(before, after))
    }

    /// The normalised DNs of the groups seen nested in configured groups before (none before the first run
    /// that writes).
    pub fn known_groups(&self) -> Result<std::collections::HashSet<String>, db::Error> {
        match &self.source {
            Source::Files(_) => Ok(Default::default()),
            Source::Database(_) => self.timed(|| self.database()?.known_groups()),
        }
    }

    /// Records the groups (normalised DN, DN) seen nested in configured groups that were not known.
    pub fn add_known_groups(&self, groups: &[(String, String)]) -> Result<(), db::Error> {
        if groups.is_empty() {
            return Ok(());
        }
        self.timed(|| self.database()?.add_known_groups(groups, &now()))
    }

    /// How many `action`s (deactivations, removals from groups) took effect in the last 24 hours, by the audit
    /// trail, calls whose outcome is not known yet included: what the daily budgets count. None recorded when
    /// the state is the JSON files (a dry run before the first run that writes).
    pub fn count_last_day(&self, action: Action) -> Result<usize, db::Error> {
        let since = std::time::SystemTime::now() - std::time::Duration::from_secs(24 * 60 * 60);
        let since = humantime::format_rfc3339_seconds(since).to_string();
        match &self.source {
            Source::Files(_) => Ok(0),
            Source::Database(_) => self.timed(|| self.database()?.count_since(action, &since)),
        }
    }

    /// The intents whose outcome is not known (none when the state is the JSON files).
    fn pending(&self) -> Result<Vec<Pending>, db::Error> {
        match &self.source {
            Source::Files(_) => Ok(Vec::new()),
            Source::Database(_) => self.timed(|| self.database()?.pending()),
        }
    }
}

/// Now, as the state records times.
fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// Settles the intents an earlier run left without an outcome, by reading back from CloudShell: `users` is
/// CloudShell's user list read in this run (each user's `IsActive`); a removal's group is read now. A group that
/// cannot be read leaves its removals pending (logged): nothing relies on them. `Err` when the outcomes cannot
/// be recorded: the run must not go on to read the managed users.
pub async fn settle_pending(journal: &Journal, client: &Client, users: &[cloudshell::User]) -> Result<(), db::Error> {
    let pending = journal.pending()?;
    if pending.is_empty() {
        return Ok(());
    }
    let mut settled = Vec::with_capacity(pending.len());
    for p in &pending {
        let outcome = match &p.intent.change {
            Change::Deactivate { .. } | Change::Reactivate => Some(read_back_user(&p.intent, users)),
            Change::RemoveFromGroup { group_id, .. } => match client.group_users(*group_id).await {
                Ok(Some(members)) => Some(read_back_removal(&p.intent, &members)),
                Ok(None) => Some((Outcome::Gone, "the CloudShell group is gone".to_string())),
                Err(e) => {
                    tracing::warn!(group = %p.intent.change.group().unwrap_or_default(), error = %e, "removal left unsettled: its group could not be read back");
                    None
                }
            },
        };
        let Some((outcome, found)) = outcome else { continue };
        let lost = if p.answer_lost { "its answer was lost" } else { "the run that sent it ended first" };
        let result = match outcome {
            Outcome::Done => format!("ok ({lost}; read back: {found})"),
            Outcome::Failed => format!("not applied ({lost}; read back: {found})"),
            _ => format!("{found} ({lost})"),
        };
        tracing::info!(username = %p.intent.username, action = p.intent.change.action().as_str(), run = %p.run_id, result = %result, "intent settled");
        settled.push(Settlement { id: p.id, intent: &p.intent, outcome, result });
    }
    journal.settle(&settled)
}

/// A deactivation's or a reactivation's outcome from the user as listed now.
fn read_back_user(intent: &Intent, users: &[cloudshell::User]) -> (Outcome, String) {
    let Some(user) = users.iter().find(|u| u.id == Some(intent.cloudshell_id)) else {
        return (Outcome::Gone, "no longer in CloudShell".into());
    };
    let wanted_active = intent.change == Change::Reactivate;
    match user.is_active {
        // Nothing to rely on: the intent stays for a later read.
        None => (Outcome::Unknown, "IsActive unknown".to_string()),
        Some(active) if active == wanted_active => (Outcome::Done, active_words(active).to_string()),
        Some(active) => (Outcome::Failed, active_words(active).to_string()),
    }
}

fn active_words(active: bool) -> &'static str {
    if active { "active" } else { "inactive" }
}

/// A removal's outcome from the group's members as read now.
fn read_back_removal(intent: &Intent, members: &[cloudshell::User]) -> (Outcome, String) {
    if members.iter().any(|u| u.id == Some(intent.cloudshell_id)) {
        (Outcome::Failed, "still a member".into())
    } else {
        (Outcome::Done, "not a member".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::username::Username;

    fn user(id: i64, active: bool) -> cloudshell::User {
        cloudshell::User {
            id: Some(id),
            username: Username::new(&format!("u{id}")),
            is_active: Some(active),
            is_admin: Some(false),
            domain_name: Some("EXAMPLE".into()),
            group_ids: None,
        }
    }

    fn intent(change: Change, id: i64) -> Intent {
        Intent { change, username: Username::new(&format!("u{id}")).unwrap(), cloudshell_id: id, reason: "r".into() }
    }

    #[test]
    fn a_user_read_back_settles_by_its_active_flag_and_by_id() {
        let users = [user(1, false), user(2, true)];
        let deactivate = Change::Deactivate { disabled_in_directory: false };
        for (change, id, expected) in [
            (deactivate.clone(), 1, Outcome::Done),
            (deactivate.clone(), 2, Outcome::Failed),
            (deactivate, 3, Outcome::Gone),
            (Change::Reactivate, 2, Outcome::Done),
            (Change::Reactivate, 1, Outcome::Failed),
        ] {
            assert_eq!(read_back_user(&intent(change.clone(), id), &users).0, expected, "{change:?} {id}");
        }
        let unknown = [cloudshell::User { is_active: None, ..user(1, false) }];
        for change in [Change::Deactivate { disabled_in_directory: false }, Change::Reactivate] {
            assert_eq!(read_back_user(&intent(change.clone(), 1), &unknown).0, Outcome::Unknown, "{change:?}");
        }
    }

    #[test]
    fn a_removal_read_back_is_done_once_the_user_is_no_member() {
        let removal = intent(Change::RemoveFromGroup { group: "Lab".into(), group_id: 9 }, 1);
        assert_eq!(read_back_removal(&removal, &[user(1, true)]).0, Outcome::Failed);
        assert_eq!(read_back_removal(&removal, &[user(2, true)]).0, Outcome::Done);
    }

    #[test]
    fn a_dry_run_before_the_first_migration_reads_the_json_files_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut managed = Managed::default();
        managed.seen(&Username::new("alice").unwrap(), Some(1), "t");
        state::save_managed(dir.path(), &managed).unwrap();
        let journal = Journal::open_read_only(dir.path(), "r").unwrap();
        assert_eq!(journal.load_managed().unwrap(), managed);
        assert!(journal.load_counts().unwrap().by_group().is_empty());
        assert!(matches!(journal.intend(&[]), Err(db::Error::ReadOnly { .. })));
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["users.json"], "no database created");
    }
}
