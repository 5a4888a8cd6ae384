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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use crate::cloudshell::{self, Client};
use crate::state::db::{self, Action, AuditRow, Change, Database, Intent, Outcome, Owner, Pending, Settlement};
use crate::state::{self, Counts, Managed};

/// Where a run's state is read from, and written to.
#[derive(Debug)]
pub struct Journal {
    source: Source,
    run_id: String,
    /// Time spent in the database, in microseconds (opening it included), for the report.
    spent_us: AtomicU64,
    /// The managed users: as the daemon kept them from its last run (taken by the ledger), then as the ledger
    /// hands them back, saved, for the daemon to keep.
    users: Mutex<Option<Managed>>,
    /// The database's `data_version` when the run opened it (`None`: not known).
    version_at_open: Option<i64>,
    /// An intent's outcome was recorded: that writes managed users' rows besides the ledger's write.
    settled: AtomicBool,
    /// Anything was written.
    wrote: AtomicBool,
    /// Opened as the daemon's last run left it: the same file, and nobody else wrote to it since.
    as_left: bool,
    /// The daemon's last run left a database in this state directory that is no longer there (deleted, or
    /// replaced by another file moved into its place): this one was opened anew. A file written over in place is
    /// the same file, written by another process (`as_left` false).
    replaced: bool,
}

/// What the daemon keeps of its state from one run to the next: the open database, and the managed users as
/// the last run left them. A run takes them only while the database is the same file and nobody else has
/// written to it since (SQLite's `data_version`, which this connection's own writes never move): then its
/// checks at open (the schema, `quick_check`) and its 100,000 rows need no second read. Anything else (another
/// process, `sqlite3` by hand, the file replaced or moved, another state directory after a reload) means the
/// database is opened and read again as by a one-shot run.
#[derive(Debug, Default)]
pub struct KeptDatabase {
    slot: Mutex<Option<KeptState>>,
    /// How many runs took the managed users kept here (for tests and the benchmark).
    reused: AtomicU64,
}

#[derive(Debug)]
struct KeptState {
    dir: PathBuf,
    database: Database,
    /// `data_version` after the run that kept it.
    version: i64,
    /// The managed users, when they are what the database holds.
    users: Option<Managed>,
}

impl KeptDatabase {
    /// How many runs took the managed users kept here.
    pub fn reused(&self) -> u64 {
        self.reused.load(Ordering::Relaxed)
    }

    fn slot(&self) -> MutexGuard<'_, Option<KeptState>> {
        self.slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
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
        let version = database.data_version().ok();
        Ok(Journal::new(Source::Database(Mutex::new(database)), run_id, started, version, None))
    }

    /// [`Journal::open`] for the daemon: the database and managed users `kept` from its last run, when the
    /// database is still as that run left it, else opened and read again.
    pub fn open_kept(dir: &Path, owner: &Owner, run_id: &str, kept: &KeptDatabase) -> Result<Journal, db::Error> {
        let started = Instant::now();
        let taken = kept.slot().take();
        let replaced = taken.as_ref().is_some_and(|state| state.dir == dir && !state.database.is_still_there());
        if let Some(state) = taken
            && state.dir == dir
            && state.database.is_still_there()
            && state.database.data_version().ok() == Some(state.version)
        {
            if state.users.is_some() {
                kept.reused.fetch_add(1, Ordering::Relaxed);
            }
            let source = Source::Database(Mutex::new(state.database));
            let journal = Journal::new(source, run_id, started, Some(state.version), state.users);
            return Ok(Journal { as_left: true, ..journal });
        }
        Ok(Journal { replaced, ..Journal::open(dir, owner, run_id)? })
    }

    /// What the daemon keeps of this run's state for the next: the database, and the managed users when they
    /// are what it holds (the ledger saved them, no intent's outcome wrote rows besides, and nobody else wrote
    /// to the database during the run). Nothing for a dry run's state. The write-ahead log is checkpointed
    /// first, so that `state.db` alone holds everything between runs, as when a run closes it.
    pub fn keep(self, dir: &Path, kept: &KeptDatabase) {
        let Source::Database(database) = self.source else { return };
        let database = database.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner());
        if self.wrote.load(Ordering::Relaxed)
            && let Err(e) = database.checkpoint()
        {
            tracing::warn!(error = %e, "state.db write-ahead log not checkpointed");
        }
        let Ok(version) = database.data_version() else { return };
        let users = self.users.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner());
        let untouched = self.version_at_open == Some(version) && !self.settled.load(Ordering::Relaxed);
        let users = users.filter(|_| untouched);
        *kept.slot() = Some(KeptState { dir: dir.to_path_buf(), database, version, users });
    }

    /// The managed users the daemon kept from its last run, if the database is as that run left them.
    pub fn take_kept_users(&self) -> Option<Managed> {
        self.users.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take()
    }

    /// The managed users as this run saved them, for the daemon to keep ([`Journal::keep`]).
    pub fn keep_users(&self, users: Managed) {
        *self.users.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(users);
    }

    fn new(source: Source, run_id: &str, started: Instant, version: Option<i64>, users: Option<Managed>) -> Journal {
        let spent_us = AtomicU64::new(started.elapsed().as_micros() as u64);
        Journal {
            source,
            run_id: run_id.to_string(),
            spent_us,
            users: Mutex::new(users),
            version_at_open: version,
            settled: AtomicBool::new(false),
            wrote: AtomicBool::new(false),
            as_left: false,
            replaced: false,
        }
    }

    /// Whether the database the daemon's last run left in this state directory is gone or replaced (this one
    /// was opened anew): what it recorded, and the directory model kept beside it, may not match.
    pub fn replaced(&self) -> bool {
        self.replaced
    }

    /// Whether the database is as the daemon's last run left it: the same file, and no other process (a
    /// one-shot `sync`, an `accept-*` command, `sqlite3` by hand) wrote to it since.
    pub fn as_left(&self) -> bool {
        self.as_left
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
        Ok(Journal::new(source, run_id, started, None, None))
    }

    /// The database, to write to.
    fn writing(&self) -> Result<MutexGuard<'_, Database>, db::Error> {
        self.wrote.store(true, Ordering::Relaxed);
        self.database()
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
        self.load_managed_sharing(&())
    }

    /// The managed users, sharing the usernames `names` knows ([`Database::load_managed_sharing`]).
    pub fn load_managed_sharing(&self, names: &dyn state::Names) -> Result<Managed, state::Error> {
        self.timed(|| match &self.source {
            Source::Files(dir) => state::load_managed(dir),
            Source::Database(_) => Ok(self.database()?.load_managed_sharing(names)?),
        })
    }

    /// Writes the managed users that differ between `before` and `after` (the tests' way to set a state up; a
    /// run writes through its ledger, [`Journal::save_users`]).
    #[cfg(test)]
    pub fn save_managed(&self, before: &Managed, after: &Managed) -> Result<(), db::Error> {
        self.timed(|| self.writing()?.save_managed(before, after))
    }

    /// Writes `writes`.
    pub fn save_users(&self, writes: db::UserWrites<'_>) -> Result<(), db::Error> {
        self.timed(|| self.writing()?.save_users(writes))
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
        self.timed(|| self.writing()?.save_counts(before, after))
    }

    /// Records `intents` before their calls are sent; their ids. An error means no call may be sent.
    pub fn intend(&self, intents: &[Intent]) -> Result<Vec<i64>, db::Error> {
        self.timed(|| self.writing()?.intend(&self.run_id, &now(), intents))
    }

    /// Records the outcomes of intents. A failure is logged and returned: the intents stay, and the next run
    /// settles them by reading back.
    pub fn settle(&self, settled: &[Settlement<'_>]) -> Result<(), db::Error> {
        if !settled.is_empty() {
            self.settled.store(true, Ordering::Relaxed);
        }
        let written = self.timed(|| self.writing().and_then(|mut d| d.settle(&self.run_id, &now(), settled)));
        if let Err(e) = &written {
            tracing::error!(error = %e, "outcome not recorded; the next run reads it back from CloudShell");
        }
        written
    }

    /// Takes the directory model the last one-shot run stored ([`db::Database::take_kept_model`]): `None`
    /// when there is none to use.
    pub fn take_kept_model(&self) -> Result<db::Taken, db::Error> {
        self.timed(|| self.writing()?.take_kept_model())
    }

    /// Whether another connection (another process, `sqlite3` by hand) wrote to the database since this run
    /// opened it: SQLite's `data_version`, which this connection's own writes never move. Unknown counts as
    /// written.
    pub fn written_by_others(&self) -> bool {
        let now = self.timed(|| self.database().ok().and_then(|d| d.data_version().ok()));
        now.is_none() || now != self.version_at_open
    }

    /// Stores this one-shot run's directory model for the next, the body parts equal to `taken`'s left as they
    /// are; or, with `None`, deletes the one stored. The run's last write.
    pub fn store_kept_model(
        &self,
        model: Option<&db::StoredModel>,
        taken: Option<&db::StoredModel>,
    ) -> Result<(), db::Error> {
        self.timed(|| match model {
            Some(model) => self.writing()?.store_kept_model(model, taken),
            None => self.writing()?.drop_kept_model(),
        })
    }

    /// [`Journal::store_kept_model`] for a model whose body parts are encoded as they are written.
    pub fn store_kept_model_parts(
        &self,
        model: &db::ModelToStore<'_>,
        taken: Option<&db::StoredModel>,
    ) -> Result<(), db::Error> {
        self.timed(|| self.writing()?.store_kept_model_parts(model, taken))
    }

    /// Marks the database as the last run left it: a one-shot run that took a stored model knows it is (any
    /// other write since would have deleted it).
    pub fn mark_as_left(&mut self) {
        self.as_left = true;
    }

    /// Appends rows to the audit trail.
    pub fn record(&self, rows: &[AuditRow]) -> Result<(), db::Error> {
        self.timed(|| self.writing()?.record(rows))
    }

    /// Deletes the audit rows from before `before` (RFC 3339, UTC); how many.
    pub fn prune(&self, before: &str) -> Result<usize, db::Error> {
        self.timed(|| self.writing()?.prune(before))
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
    pub fn save_rematched(&self, writes: db::UserWrites<'_>) -> Result<(), db::Error> {
        self.timed(|| self.writing()?.save_rematched(writes))
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
        self.timed(|| self.writing()?.add_known_groups(groups, &now()))
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

    /// The intents whose outcome is not known yet, if any (`None`: none), with the CloudShell ids of the users
    /// whose activation they changed.
    pub fn unsettled_users(&self) -> Result<Option<Vec<i64>>, db::Error> {
        let pending = self.pending()?;
        let users =
            pending.iter().filter(|p| matches!(p.intent.change, Change::Deactivate { .. } | Change::Reactivate));
        Ok((!pending.is_empty()).then(|| users.map(|p| p.intent.cloudshell_id).collect()))
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
    use crate::sync::ledger::{Keeper, Ledger};
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

    /// One daemon run on `dir`: the journal opened through `kept`, the ledger loaded, `step` applied, saved,
    /// and everything handed back to `kept`; the managed users as the run left them.
    fn daemon_run(dir: &Path, kept: &KeptDatabase, step: impl FnOnce(&mut Ledger<'_>, &Journal)) -> Managed {
        let journal = Journal::open_kept(dir, &Owner::for_tests(), "r", kept).unwrap();
        let mut ledger = Ledger::load(&journal);
        step(&mut ledger, &journal);
        ledger.save(&mut crate::report::Report::new("r".into(), false));
        let users = ledger.users().unwrap().clone();
        ledger.keep();
        journal.keep(dir, kept);
        users
    }

    fn alice_key() -> Username {
        Username::new("alice").unwrap()
    }

    fn streak(ledger: &mut Ledger<'_>) {
        ledger.amend(Keeper::Leavers, |m| {
            m.users.get_mut(&alice_key()).unwrap().leaver_runs += 1;
            true
        });
    }

    #[test]
    fn the_daemon_keeps_the_users_between_runs_and_reads_them_again_after_any_other_write() {
        let dir = tempfile::tempdir().unwrap();
        let wal = dir.path().join("state.db-wal");
        let kept = KeptDatabase::default();
        let mut alice = Managed::default();
        alice.seen(&Username::new("Alice").unwrap(), Some(1), "t1");
        daemon_run(dir.path(), &kept, |l, _| l.update(Keeper::Leavers, alice.users.clone().into_iter().collect()));
        assert_eq!(kept.reused(), 0, "the first run reads the database");
        let after = daemon_run(dir.path(), &kept, |l, _| streak(l));
        assert_eq!(kept.reused(), 1, "kept after a run that wrote");
        assert!(std::fs::metadata(&wal).map_or(true, |m| m.len() == 0), "the write-ahead log checkpointed");
        let fresh = Journal::open_read_only(dir.path(), "r").unwrap();
        assert_eq!(after, fresh.load_managed().unwrap(), "what is kept is what the database holds");
        drop(fresh);
        daemon_run(dir.path(), &kept, |_, _| {});
        daemon_run(dir.path(), &kept, |_, _| {});
        assert_eq!(kept.reused(), 3, "and after runs that wrote nothing");

        // Positive control: a row changed by hand between runs (another connection, as `sqlite3`) is read again.
        let other = rusqlite::Connection::open(dir.path().join(db::FILE_NAME)).unwrap();
        other.execute("UPDATE managed_users SET leaver_runs = 7 WHERE folded = 'alice'", []).unwrap();
        let read = daemon_run(dir.path(), &kept, |_, _| {});
        assert_eq!(kept.reused(), 3, "not taken from memory");
        assert_eq!(read.users[&alice_key()].leaver_runs, 7);
        daemon_run(dir.path(), &kept, |_, _| {});
        assert_eq!(kept.reused(), 4, "kept again after that read");

        // Another process writing during a run: nothing kept after it.
        let during = daemon_run(dir.path(), &kept, |l, _| {
            other
                .execute("INSERT INTO managed_users (folded, username, first_seen, last_seen) VALUES ('bob', 'Bob', 't', 't')", [])
                .unwrap();
            streak(l);
        });
        assert_eq!((kept.reused(), during.users.len()), (5, 1), "taken at its start; its copy missed bob");
        let next = daemon_run(dir.path(), &kept, |_, _| {});
        assert_eq!(kept.reused(), 5, "read again");
        assert_eq!((next.users.len(), next.users[&alice_key()].leaver_runs), (2, 8), "{next:?}");

        // A run that recorded an intent's outcome (which writes managed rows itself): read again after it.
        daemon_run(dir.path(), &kept, |_, journal| {
            let intent =
                Intent { change: Change::Reactivate, username: alice_key(), cloudshell_id: 1, reason: "r".into() };
            let ids = journal.intend(std::slice::from_ref(&intent)).unwrap();
            let settled = Settlement { id: ids[0], intent: &intent, outcome: Outcome::Done, result: "ok".into() };
            journal.settle(&[settled]).unwrap();
        });
        assert_eq!(kept.reused(), 6);
        daemon_run(dir.path(), &kept, |_, _| {});
        assert_eq!(kept.reused(), 6, "read again");

        // A run whose ledger did not save (a dry run's, a failed write): nothing kept.
        let journal = Journal::open_kept(dir.path(), &Owner::for_tests(), "r", &kept).unwrap();
        Ledger::load(&journal).keep();
        journal.keep(dir.path(), &kept);
        assert_eq!(kept.reused(), 7, "taken");
        daemon_run(dir.path(), &kept, |_, _| {});
        assert_eq!(kept.reused(), 7, "then read again");

        // Another database at the path (the file moved aside, a new one made) is another database.
        drop(other);
        for name in ["state.db", "state.db-wal", "state.db-shm"] {
            let _ = std::fs::rename(dir.path().join(name), dir.path().join(format!("{name}.aside")));
        }
        let fresh = daemon_run(dir.path(), &kept, |_, _| {});
        assert!(fresh.users.is_empty(), "{fresh:?}");
        assert_eq!(kept.reused(), 7);
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
