//! `state.db`: the state directory's SQLite database (bundled SQLite, no system library), which is to replace
//! `users.json` and `groups.json`. It owns the schema and its migrations, the refusal of a database it cannot
//! trust (a newer schema, a damaged file), the one-time import of the JSON files, the record of which
//! configuration owns the database, and the rows for the managed users, the shrink guard's counts, the audit
//! trail and the intents of destructive calls.
//!
//! Durability first: WAL with `synchronous = FULL`, so a committed row survives a crash or a power cut. A
//! database this program cannot read is never written: a newer schema is refused before anything is written,
//! a damaged file before anything is created beside it. No secret is ever stored here.
//!
//! It does not decide anything: the sync steps still read and write the JSON files until they are switched over.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use arcstr::ArcStr;

use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, params};

use super::{Counts, GroupCount, Managed, ManagedUser};
use crate::username::Username;

mod audit;
mod kept_model;
mod refold;
pub use audit::{Action, AuditRow, Change, Filter, Intent, Outcome, Pending, Settlement};
pub use kept_model::{ModelToStore, Part, StoredModel, Taken};
/// The database's name in the state directory.
pub const FILE_NAME: &str = "state.db";

/// What a migrated JSON file is renamed to: its name with this suffix.
pub const MIGRATED_SUFFIX: &str = ".migrated";

/// The schema, one migration per version: `MIGRATIONS[n]` takes a database from version `n` to `n + 1`. Append
/// only: a released migration is never edited.
const MIGRATIONS: &[&str] = &[
    // 1: the owner, the managed users (`users.json`), the shrink guard's counts (`groups.json`), the audit
    // trail and the intents of destructive calls.
    "CREATE TABLE owner (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        config_path TEXT NOT NULL,
        directory_urls TEXT NOT NULL,
        base_dn TEXT NOT NULL,
        user_filter TEXT NOT NULL,
        username_attribute TEXT NOT NULL,
        cloudshell_url TEXT NOT NULL,
        recorded_at TEXT NOT NULL
    );
    CREATE TABLE managed_users (
        folded TEXT PRIMARY KEY NOT NULL,
        username TEXT NOT NULL,
        cloudshell_id INTEGER,
        first_seen TEXT NOT NULL,
        last_seen TEXT NOT NULL,
        leaver_runs INTEGER NOT NULL DEFAULT 0,
        leaver_since TEXT,
        deactivated INTEGER NOT NULL DEFAULT 0,
        disabled_in_directory INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    CREATE TABLE group_counts (
        group_name TEXT PRIMARY KEY NOT NULL,
        members INTEGER NOT NULL,
        updated_at TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL,
        at TEXT NOT NULL,
        action TEXT NOT NULL,
        username TEXT,
        folded TEXT,
        group_name TEXT,
        reason TEXT NOT NULL,
        result TEXT NOT NULL
    );
    CREATE INDEX audit_by_user ON audit (folded, at);
    CREATE INDEX audit_by_time ON audit (at);
    CREATE TABLE intents (
        id INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL,
        at TEXT NOT NULL,
        action TEXT NOT NULL CHECK (action IN ('deactivate', 'reactivate', 'remove_from_group')),
        username TEXT NOT NULL,
        cloudshell_id INTEGER NOT NULL,
        disabled_in_directory INTEGER NOT NULL DEFAULT 0,
        group_name TEXT,
        group_id INTEGER,
        reason TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('intended', 'unknown'))
    );
    CREATE INDEX intents_by_state ON intents (state);",
    // 2: what tells a member the directory hides from one it no longer has: each managed user's DN, and the
    // DNs of the groups seen nested in configured groups; and the owner's identity change accepted, awaiting
    // the run that matches the managed users again.
    "ALTER TABLE managed_users ADD COLUMN dn TEXT;
    ALTER TABLE owner ADD COLUMN rematch_pending INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE known_groups (
        dn_key TEXT PRIMARY KEY NOT NULL,
        dn TEXT NOT NULL,
        seen_at TEXT NOT NULL
    ) WITHOUT ROWID;",
    // 3: the directory model a one-shot `sync` keeps for change reads from one run to the next (the daemon keeps
    // it in memory): its head (the settings it was read for, its cookies, the last run's outcome) and its body
    // (the entries, and CloudShell's users as that run left them), each part with its digest, which the head
    // repeats. The head stands for the state as the run that stored it left it: any write to another table, or to
    // the body, by any process, deletes it, so that the next run reads in full rather than trusting a model that
    // no longer matches the ledger.
    "CREATE TABLE kept_model (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        program TEXT NOT NULL,
        configuration TEXT NOT NULL,
        saved_at TEXT NOT NULL,
        full_read_at TEXT NOT NULL,
        head BLOB NOT NULL,
        directory_digest TEXT NOT NULL,
        cloudshell_digest TEXT NOT NULL
    );
    CREATE TABLE kept_model_body (
        part TEXT PRIMARY KEY NOT NULL CHECK (part IN ('directory', 'cloudshell')),
        bytes BLOB NOT NULL,
        digest TEXT NOT NULL
    );
    CREATE TRIGGER kept_model_after_owner_insert AFTER INSERT ON owner BEGIN DELETE FROM kept_model; END;
    CREATE TRIGGER kept_model_after_owner_update AFTER UPDATE ON owner BEGIN DELETE FROM kept_model; END;
    CREATE TRIGGER kept_model_after_owner_delete AFTER DELETE ON owner BEGIN DELETE FROM kept_model; END;
    CREATE TRIGGER kept_model_after_managed_users_insert AFTER INSERT ON managed_users BEGIN DELETE FROM kept_model; END;
    CREATE TRIGGER kept_model_after_managed_users_update AFTER UPDATE ON managed_users BEGIN DELETE FROM kept_model; END;
    CREATE TRIGGER kept_model_after_managed_users_delete AFTER DELETE ON managed_users BEGIN DELETE FROM kept_model; END;
    CREATE TRIGGER kept_model_after_group_counts_insert AFTER INSERT ON group_counts BEGIN DELETE FROM kept_model; END;
    CREATE TRIGGER kept_model_after_group_counts_update AFTER UPDATE ON group_counts BEGIN DELETE FROM kept_model; END;
    CREATE TRIGGER kept_model_after_group_counts_delete AFTER DELETE ON group_counts BEGIN DELETE FROM kept_model; END;
    CREATE TRIGGER kept_model_after_audit_insert AFTER INSERT ON audit BEGIN DELETE FROM kept_model; END;
    CREATE TRIGGER kept_model_after_audit_update AFTER UPDATE ON audit BEGIN DELETE FROM kept_model; END;
    CREATE TRIGGER kept_model_after_audit_delete AFTER DELETE ON audit BEGIN DELETE FROM kept_model; END;
    CREATE TRIGGER kept_model_after_intents_insert AFTER INSERT ON intents BEGIN DELETE FROM kept_model; END;
    CREATE TRIGGER kept_model_after_intents_update AFTER UPDATE ON intents BEGIN DELETE FROM kept_model; END;
    CREATE TRIGGER kept_model_after_intents_delete AFTER DELETE ON intents BEGIN DELETE FROM kept_model; END;
    CREATE TRIGGER kept_model_after_known_groups_insert AFTER INSERT ON known_groups BEGIN DELETE FROM kept_model; END;
    CREATE TRIGGER kept_model_after_known_groups_update AFTER UPDATE ON known_groups BEGIN DELETE FROM kept_model; END;
    CREATE TRIGGER kept_model_after_known_groups_delete AFTER DELETE ON known_groups BEGIN DELETE FROM kept_model; END;
    CREATE TRIGGER kept_model_after_kept_model_body_insert AFTER INSERT ON kept_model_body BEGIN DELETE FROM kept_model; END;
    CREATE TRIGGER kept_model_after_kept_model_body_update AFTER UPDATE ON kept_model_body BEGIN DELETE FROM kept_model; END;
    CREATE TRIGGER kept_model_after_kept_model_body_delete AFTER DELETE ON kept_model_body BEGIN DELETE FROM kept_model; END;",
    // 4: a body part's bytes moved to the row's end, so that a part is written into room made for it: SQLite
    // makes the zeros of room made (a zeroblob) in memory, the whole row, when another column follows it. Any
    // stored model goes: the next run reads in full.
    "DELETE FROM kept_model;
    DELETE FROM kept_model_body;
    ALTER TABLE kept_model_body DROP COLUMN bytes;
    ALTER TABLE kept_model_body ADD COLUMN bytes BLOB NOT NULL DEFAULT x'';",
];

/// The schema version this program writes: the number of migrations it knows.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// The connection's page cache, as `PRAGMA cache_size` takes it (negative: in KiB).
const CACHE_KIB: i64 = -512;

/// What recovering from a database that cannot be used costs, for the messages that say how.
const RECOVERY: &str = "move it aside (with its -wal and -shm files, if any) and a new one is created on the next \
                        start; the managed users and the shrink guard's counts it held are then lost: nobody is a \
                        leaver until seen again in a complete run, and users this program deactivated are no \
                        longer reactivated by it";

/// A database that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unsafe state directory: {0}")]
    Unsafe(std::io::Error),
    #[error("cannot create the state directory {dir}: {source}")]
    Directory { dir: PathBuf, source: std::io::Error },
    #[error("cannot open {path}: {source}")]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error(
        "{path} has schema version {found}, newer than this program knows (version {known}): it was written by a \
         newer cloudshell-ldap-sync; nothing was written to it; run that version, or {RECOVERY}"
    )]
    Newer { path: PathBuf, found: u32, known: u32 },
    #[error(
        "{path} has schema version {found}, older than this program's (version {known}); a sync run without \
         --dry-run migrates it"
    )]
    Older { path: PathBuf, found: u32, known: u32 },
    #[error("{path} is damaged ({detail}); {RECOVERY}")]
    Damaged { path: PathBuf, detail: String },
    #[error("the state in {dir} is read only in a dry run")]
    ReadOnly { dir: PathBuf },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: rusqlite::Error },
    #[error("cannot migrate {path} into {FILE_NAME}: {source}; nothing was migrated")]
    Migrate { path: PathBuf, source: super::Error },
    #[error("{FILE_NAME} holds the migrated {path}, which could not be renamed aside: {source}; rename it by hand")]
    RenameAside { path: PathBuf, source: std::io::Error },
}

/// Which configuration owns a database: what decides which users and groups it describes. Never a secret (the
/// configuration refuses URLs that carry credentials).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub config_path: String,
    pub directory_urls: Vec<String>,
    pub base_dn: String,
    pub user_filter: String,
    pub username_attribute: String,
    pub cloudshell_url: String,
}

impl Owner {
    /// The owner that `config` makes. The configuration's path is made absolute (symlinks resolved), so that
    /// `-c config.toml` and `-c /etc/.../config.toml` name one configuration.
    pub fn of(config: &crate::config::Config) -> Owner {
        let path = std::fs::canonicalize(&config.path).unwrap_or_else(|_| config.path.clone());
        Owner {
            config_path: path.display().to_string(),
            directory_urls: config.ldap.urls.clone(),
            base_dn: config.ldap.base_dn.clone(),
            user_filter: config.ldap.user_filter.clone(),
            username_attribute: config.ldap.username_attribute.clone(),
            cloudshell_url: config.cloudshell.url.to_string(),
        }
    }

    /// How `current` differs from this (recorded) owner, field by field; empty when it does not.
    pub fn differences(&self, current: &Owner) -> Vec<OwnerDifference> {
        let fields = [
            ("config path", &self.config_path, &current.config_path),
            ("directory URLs", &self.directory_urls.join(" "), &current.directory_urls.join(" ")),
            ("base DN", &self.base_dn, &current.base_dn),
            ("user filter", &self.user_filter, &current.user_filter),
            ("username attribute", &self.username_attribute, &current.username_attribute),
            ("CloudShell URL", &self.cloudshell_url, &current.cloudshell_url),
        ];
        fields
            .into_iter()
            .filter(|(_, recorded, current)| recorded != current)
            .map(|(field, recorded, current)| OwnerDifference {
                field,
                recorded: recorded.clone(),
                current: current.clone(),
            })
            .collect()
    }

    /// How `current` identifies users differently from this (recorded) owner: the settings that decide which
    /// directory entry is which CloudShell user (base DN, user filter, username attribute, CloudShell's URL, and
    /// the directory itself: no server host in common, so that a scheme, port or added replica is not a
    /// change). Empty when users are identified as before. A change of the configuration's path is not one of
    /// them (see [`Owner::other_configuration`]).
    pub fn identity_changes(&self, current: &Owner) -> Vec<OwnerDifference> {
        let hosts = |urls: &[String]| -> Vec<String> {
            urls.iter()
                .map(|u| match url::Url::parse(u) {
                    Ok(parsed) => parsed.host_str().unwrap_or(u).to_ascii_lowercase(),
                    Err(_) => u.to_ascii_lowercase(),
                })
                .collect()
        };
        let (was, is) = (hosts(&self.directory_urls), hosts(&current.directory_urls));
        let same_directory = was.iter().any(|h| is.contains(h));
        self.differences(current)
            .into_iter()
            .filter(|d| d.field != "config path" && (d.field != "directory URLs" || !same_directory))
            .collect()
    }

    /// An owner for tests (no configuration to load): the values `state::db`'s own tests assert on.
    #[cfg(test)]
    pub(crate) fn for_tests() -> Owner {
        Owner {
            config_path: "/etc/cloudshell-ldap-sync/config.toml".into(),
            directory_urls: vec!["ldaps://dc1.example.org".into(), "ldaps://dc2.example.org".into()],
            base_dn: "dc=example,dc=org".into(),
            user_filter: "(objectClass=person)".into(),
            username_attribute: "uid".into(),
            cloudshell_url: "https://cloudshell.example.org/".into(),
        }
    }

    /// Whether `current` is another configuration file than the one that made the database: its path.
    pub fn other_configuration(&self, current: &Owner) -> bool {
        self.config_path != current.config_path
    }
}

/// One field in which the current configuration differs from the database's owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerDifference {
    pub field: &'static str,
    pub recorded: String,
    pub current: String,
}

impl fmt::Display for OwnerDifference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} was {:?} and is now {:?}", self.field, self.recorded, self.current)
    }
}

/// An open `state.db`, its schema current.
#[derive(Debug)]
pub struct Database {
    path: PathBuf,
    connection: Connection,
    /// The file it opened (see [`Database::is_still_there`]).
    file: Option<FileId>,
}

impl Database {
    /// Opens the database in the state directory `dir`, creating both when missing. A new database records
    /// `owner` and takes in the `users.json` and `groups.json` beside it (in the transaction that creates its
    /// schema), which are then renamed aside (`users.json.migrated`). A newer schema or a damaged file is
    /// refused without writing anything.
    pub fn open(dir: &Path, owner: &Owner) -> Result<Database, Error> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Directory { dir: dir.to_path_buf(), source })?;
        super::check_directory(dir).map_err(Error::Unsafe)?;
        let path = dir.join(FILE_NAME);
        let found = if path.exists() {
            // Read-only first: nothing is written to a database this program cannot use.
            let connection = connect(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
            check(&path, &connection, true)?
        } else {
            0
        };
        // Read before anything is written: a JSON file that cannot be used stops the migration whole, and leaves
        // no database behind.
        let imported = if found == 0 { Some(read_json(dir)?) } else { None };
        let mut connection = connect(&path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE)?;
        let open = |source| Error::Open { path: path.clone(), source };
        connection.busy_timeout(std::time::Duration::from_secs(10)).map_err(open)?;
        // Again, through the connection that writes: another process may have created or migrated it since. The
        // pages were checked a moment ago (when the file was there): the version alone, since quick_check reads
        // every page (about 20 ms at 100,000 managed users).
        let found = check(&path, &connection, found == 0)?;
        let write = |source| Error::Write { path: path.clone(), source };
        let mode: String = connection.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0)).map_err(write)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Damaged { path, detail: format!("its journal mode stays {mode:?}, not WAL") });
        }
        connection.pragma_update(None, "synchronous", "FULL").map_err(write)?;
        // A page cache of 512 KiB, not SQLite's 2 MB: a run reads the managed users' table from end to end (12 MB
        // at 100,000 users, more than either holds), so the larger cache saved no read and held 2 MB of the
        // run's peak.
        connection.pragma_update(None, "cache_size", CACHE_KIB).map_err(write)?;
        if found < SCHEMA_VERSION {
            migrate(&path, &mut connection, found, imported.filter(|_| found == 0), owner)?;
        }
        let transaction = connection.transaction().map_err(write)?;
        refold::refold(&transaction).and_then(|_| transaction.commit()).map_err(write)?;
        let file = file_id(&path);
        Ok(Database { path, connection, file })
    }

    /// Opens the database in `dir` to read only, for a dry run or `history`: `None` when there is none. Nothing
    /// is created, migrated or written. A database at an older schema than this program's is refused (a run
    /// that writes migrates it), as are a newer one and a damaged one.
    pub fn open_read_only(dir: &Path) -> Result<Option<Database>, Error> {
        let path = dir.join(FILE_NAME);
        if !path.exists() {
            return Ok(None);
        }
        let connection = connect(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let found = check(&path, &connection, true)?;
        if found < SCHEMA_VERSION {
            return Err(Error::Older { path, found, known: SCHEMA_VERSION });
        }
        let file = file_id(&path);
        Ok(Some(Database { path, connection, file }))
    }

    /// Where the database is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read_error(&self) -> impl Fn(rusqlite::Error) -> Error + use<> {
        let path = self.path.clone();
        move |source| Error::Damaged { path: path.clone(), detail: source.to_string() }
    }

    fn write_error(&self) -> impl Fn(rusqlite::Error) -> Error + use<> {
        let path = self.path.clone();
        move |source| Error::Write { path: path.clone(), source }
    }

    /// The configuration recorded as the owner.
    pub fn owner(&self) -> Result<Owner, Error> {
        let owner = self
            .connection
            .query_row(
                "SELECT config_path, directory_urls, base_dn, user_filter, username_attribute, cloudshell_url \
                 FROM owner WHERE id = 1",
                [],
                |row| {
                    let urls: String = row.get(1)?;
                    Ok(Owner {
                        config_path: row.get(0)?,
                        directory_urls: serde_json::from_str(&urls).unwrap_or_else(|_| vec![urls]),
                        base_dn: row.get(2)?,
                        user_filter: row.get(3)?,
                        username_attribute: row.get(4)?,
                        cloudshell_url: row.get(5)?,
                    })
                },
            )
            .optional()
            .map_err(self.read_error())?;
        owner.ok_or_else(|| Error::Damaged { path: self.path.clone(), detail: "it records no owner".into() })
    }

    /// How the configuration `current` differs from the recorded owner; empty when it is the owner.
    pub fn owner_differences(&self, current: &Owner) -> Result<Vec<OwnerDifference>, Error> {
        Ok(self.owner()?.differences(current))
    }

    /// The managed users.
    pub fn load_managed(&self) -> Result<Managed, Error> {
        self.load_managed_sharing(&())
    }

    /// The managed users, each username `names` knows (written as the record's) shared rather than made.
    pub fn load_managed_sharing(&self, names: &dyn super::Names) -> Result<Managed, Error> {
        let mut statement = self
            .connection
            .prepare(
                "SELECT folded, username, cloudshell_id, first_seen, last_seen, leaver_runs, leaver_since, \
                 deactivated, disabled_in_directory, dn FROM managed_users",
            )
            .map_err(self.read_error())?;
        // The times, shared: a handful of distinct ones among 100,000 rows.
        let mut stamps = super::Stamps::default();
        let rows = statement
            .query_map([], |row| {
                let text = |n: usize| {
                    row.get_ref(n)?.as_str().map_err(|e| {
                        rusqlite::Error::FromSqlConversionFailure(n, rusqlite::types::Type::Text, Box::new(e))
                    })
                };
                let username = text(1)?;
                // One name built per row, or none (the fold is not free at 100,000 rows): the row's key is its
                // fold, as written and kept so by `refold` when the database is opened.
                // A key that is not text (foreign content) is nobody known: the name is made, as before.
                let folded = row.get_ref(0)?.as_str().ok();
                let known = folded.and_then(|folded| names.get(folded)).filter(|(k, _)| k.as_str() == username.trim());
                let mut user = |username| -> rusqlite::Result<ManagedUser> {
                    let leaver_since = match row.get_ref(6)? {
                        rusqlite::types::ValueRef::Null => None,
                        _ => Some(stamps.get(text(6)?)),
                    };
                    Ok(ManagedUser {
                        username,
                        id: row.get(2)?,
                        first_seen: stamps.get(text(3)?),
                        last_seen: stamps.get(text(4)?),
                        leaver_runs: row.get(5)?,
                        leaver_since,
                        deactivated: row.get(7)?,
                        disabled_in_directory: row.get(8)?,
                        // The member's DN when it is the one recorded (it is, unless the entry moved).
                        dn: match row.get_ref(9)? {
                            rusqlite::types::ValueRef::Null => None,
                            _ => {
                                let dn = text(9)?;
                                Some(match known {
                                    Some((_, shared)) if **shared == *dn => shared.clone(),
                                    _ => ArcStr::from(dn),
                                })
                            }
                        },
                    })
                };
                match known.map(|(name, _)| name.clone()).or_else(|| Username::new(username)) {
                    Some(username) => Ok(Ok(user(username)?)),
                    None => {
                        let key = folded.unwrap_or_default();
                        Ok(Err(format!("the managed user {key:?} has no username")))
                    }
                }
            })
            .map_err(self.read_error())?;
        // Sized first: grown as rows come, the last growth would hold the old records beside the new ones, the
        // run's peak of memory at 100,000 users. With room for new hires (150 kB at 100,000 users): a run that
        // adds a day of them then copies no record to make room for them.
        let count: i64 = self
            .connection
            .query_row("SELECT count(*) FROM managed_users", [], |row| row.get(0))
            .map_err(self.read_error())?;
        let count = count.max(0) as usize;
        let mut users = super::ManagedUsers::with_capacity(count + crate::room_for_new_hires(count));
        for row in rows {
            let user =
                row.map_err(self.read_error())?.map_err(|detail| Error::Damaged { path: self.path.clone(), detail })?;
            users.insert(user);
        }
        Ok(Managed { users, ..Managed::default() })
    }

    /// Writes the managed users that differ between `before` (as read) and `after`: changed and new ones
    /// written, gone ones deleted, the others untouched. One transaction. (The tests' way to set a state up; a run
    /// writes what its ledger says, [`Database::save_users`].)
    #[cfg(test)]
    pub fn save_managed(&mut self, before: &Managed, after: &Managed) -> Result<(), Error> {
        self.save_users(UserWrites::between(before, after))
    }

    /// Writes `writes`. One transaction.
    pub fn save_users(&mut self, writes: UserWrites<'_>) -> Result<(), Error> {
        let path = self.path.clone();
        let write = |source| Error::Write { path: path.clone(), source };
        let transaction = self.connection.transaction().map_err(write)?;
        write_users(&transaction, writes).map_err(write)?;
        transaction.commit().map_err(write)
    }

    /// SQLite's `data_version`: it moves on whenever another connection (another process, `sqlite3` by hand)
    /// commits a change to the database, and never for this connection's own writes. The daemon keeps its
    /// connection, and what it read through it, from one run to the next only while it stays the same.
    pub fn data_version(&self) -> Result<i64, Error> {
        self.connection.query_row("PRAGMA data_version", [], |row| row.get(0)).map_err(self.read_error())
    }

    /// Copies the write-ahead log into the database and empties it (as closing the last connection does).
    pub fn checkpoint(&self) -> Result<(), Error> {
        self.connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).map_err(self.write_error())
    }

    /// Whether the file at this database's path is still the one it opened (not removed, replaced or moved
    /// aside since).
    pub fn is_still_there(&self) -> bool {
        self.file.is_some() && file_id(&self.path) == self.file
    }

    /// The shrink guard's counts.
    pub fn load_counts(&self) -> Result<Counts, Error> {
        let mut statement = self
            .connection
            .prepare("SELECT group_name, members, updated_at FROM group_counts")
            .map_err(self.read_error())?;
        let rows = statement
            .query_map([], |row| {
                let members: i64 = row.get(1)?;
                Ok((row.get::<_, String>(0)?, members, row.get::<_, String>(2)?))
            })
            .map_err(self.read_error())?;
        let mut groups = BTreeMap::new();
        for row in rows {
            let (group, members, updated_at) = row.map_err(self.read_error())?;
            let members = usize::try_from(members).map_err(|_| Error::Damaged {
                path: self.path.clone(),
                detail: format!("group {group:?} has {members} members"),
            })?;
            groups.insert(group, GroupCount { members, updated_at });
        }
        Ok(Counts { groups })
    }

    /// Writes the counts that differ between `before` (as read) and `after`. One transaction.
    pub fn save_counts(&mut self, before: &Counts, after: &Counts) -> Result<(), Error> {
        let path = self.path.clone();
        let write = |source| Error::Write { path: path.clone(), source };
        let transaction = self.connection.transaction().map_err(write)?;
        write_counts(&transaction, before, after).map_err(write)?;
        transaction.commit().map_err(write)
    }

    /// Records `owner` as the database's owner, in place of the one recorded, and marks the managed users to be
    /// matched again by the next complete run (`cloudshell-ldap-sync accept-identity`).
    pub fn accept_owner(&mut self, owner: &Owner) -> Result<(), Error> {
        let write = self.write_error();
        let transaction = self.connection.transaction().map_err(&write)?;
        record_owner(&transaction, owner).map_err(&write)?;
        transaction.execute("UPDATE owner SET rematch_pending = 1 WHERE id = 1", []).map_err(&write)?;
        transaction.commit().map_err(&write)
    }

    /// Whether an accepted identity change awaits the run that matches the managed users again.
    pub fn rematch_pending(&self) -> Result<bool, Error> {
        let pending = self
            .connection
            .query_row("SELECT rematch_pending FROM owner WHERE id = 1", [], |row| row.get::<_, bool>(0))
            .optional()
            .map_err(self.read_error())?;
        Ok(pending.unwrap_or(false))
    }

    /// Writes the managed users (as [`Database::save_users`]) and clears the pending match, in one transaction.
    pub fn save_rematched(&mut self, writes: UserWrites<'_>) -> Result<(), Error> {
        let write = self.write_error();
        let transaction = self.connection.transaction().map_err(&write)?;
        write_users(&transaction, writes).map_err(&write)?;
        transaction.execute("UPDATE owner SET rematch_pending = 0 WHERE id = 1", []).map_err(&write)?;
        transaction.commit().map_err(&write)
    }

    /// The DNs (normalised keys) of the groups seen nested in configured groups.
    pub fn known_groups(&self) -> Result<std::collections::HashSet<String>, Error> {
        let mut statement = self.connection.prepare("SELECT dn_key FROM known_groups").map_err(self.read_error())?;
        let rows = statement.query_map([], |row| row.get::<_, String>(0)).map_err(self.read_error())?;
        rows.collect::<Result<_, _>>().map_err(self.read_error())
    }

    /// Adds the groups (normalised key, DN) not yet known, seen at `at`. One transaction.
    pub fn add_known_groups(&mut self, groups: &[(String, String)], at: &str) -> Result<(), Error> {
        let write = self.write_error();
        let transaction = self.connection.transaction().map_err(&write)?;
        {
            let mut insert = transaction
                .prepare_cached("INSERT OR IGNORE INTO known_groups (dn_key, dn, seen_at) VALUES (?1, ?2, ?3)")
                .map_err(&write)?;
            for (key, dn) in groups {
                insert.execute(params![key, dn, at]).map_err(&write)?;
            }
        }
        transaction.commit().map_err(&write)
    }

    /// Forgets the shrink guard's counts of `groups` (every group's when empty), so that the next good run's
    /// counts become the reference; the names of the groups forgotten.
    pub fn forget_counts(&mut self, groups: &[String]) -> Result<Vec<String>, Error> {
        let before = self.load_counts()?;
        let mut after = before.clone();
        after.groups.retain(|name, _| !(groups.is_empty() || groups.iter().any(|g| g == name)));
        let forgotten = before.groups.keys().filter(|g| !after.groups.contains_key(*g)).cloned().collect();
        self.save_counts(&before, &after)?;
        Ok(forgotten)
    }

    #[cfg(test)]
    fn count(&self, table: &str) -> i64 {
        self.connection.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| row.get(0)).unwrap()
    }
}

/// Opens the database file at `path`, never through a symlink. Its directory may be one (systemd's
/// `DynamicUser=` makes `/var/lib/NAME` a link to `/var/lib/private/NAME`), and SQLite's "no symlink" refuses a
/// link anywhere in the path: the directory is resolved first, the file itself must not be a link.
fn connect(path: &Path, flags: OpenFlags) -> Result<Connection, Error> {
    let flags = flags | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_NOFOLLOW;
    let real = match (path.parent().map(std::fs::canonicalize), path.file_name()) {
        (Some(Ok(dir)), Some(name)) => dir.join(name),
        _ => path.to_path_buf(),
    };
    Connection::open_with_flags(&real, flags).map_err(|source| Error::Open { path: path.to_path_buf(), source })
}

/// The schema version of the database at `path`, once it is known to be a sound database this program can
/// use: not newer than it knows, and passing SQLite's `quick_check`.
/// The database files whose pages this process has checked, as they were then (inode, size, modification
/// time): the daemon checks its database again only when the file changed since (a run that wrote, a
/// checkpoint, or anyone else), not at every run (about 20 ms a run at 100,000 managed users). SQLite also
/// reports a damaged page on any read of it.
static CHECKED: std::sync::Mutex<Vec<(PathBuf, FileStamp)>> = std::sync::Mutex::new(Vec::new());

/// What says a file is the one checked, unchanged.
type FileStamp = (u64, u64, Option<std::time::SystemTime>);

fn stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.ino(), meta.len(), meta.modified().ok()))
}

fn check(path: &Path, connection: &Connection, pages: bool) -> Result<u32, Error> {
    let damaged = |e: rusqlite::Error| Error::Damaged { path: path.to_path_buf(), detail: e.to_string() };
    let found: u32 = connection.query_row("PRAGMA user_version", [], |row| row.get(0)).map_err(damaged)?;
    if found > SCHEMA_VERSION {
        return Err(Error::Newer { path: path.to_path_buf(), found, known: SCHEMA_VERSION });
    }
    let checked = || CHECKED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let now = stamp(path);
    if !pages || (now.is_some() && checked().iter().any(|(p, s)| p == path && Some(*s) == now)) {
        return Ok(found);
    }
    let mut statement = connection.prepare("PRAGMA quick_check").map_err(damaged)?;
    let problems: Vec<String> = statement
        .query_map([], |row| row.get::<_, String>(0))
        .and_then(|rows| rows.collect::<Result<_, _>>())
        .map_err(damaged)?;
    if problems != ["ok"] {
        let detail = format!("SQLite's quick_check found: {}", problems.join("; "));
        return Err(Error::Damaged { path: path.to_path_buf(), detail });
    }
    if let Some(now) = now {
        let mut checked = checked();
        checked.retain(|(p, _)| p != path);
        checked.push((path.to_path_buf(), now));
    }
    Ok(found)
}

/// Brings the schema from version `found` to [`SCHEMA_VERSION`] in one transaction; a new database (version 0)
/// also records `owner` and takes in what was `imported` from the JSON files in that transaction, which are
/// renamed aside once it is committed.
fn migrate(
    path: &Path,
    connection: &mut Connection,
    found: u32,
    imported: Option<(Managed, Counts, Vec<PathBuf>)>,
    owner: &Owner,
) -> Result<(), Error> {
    let write = |source| Error::Write { path: path.to_path_buf(), source };
    let transaction = connection.transaction().map_err(write)?;
    for migration in &MIGRATIONS[found as usize..] {
        transaction.execute_batch(migration).map_err(write)?;
    }
    transaction.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(write)?;
    if let Some((managed, counts, _)) = &imported {
        record_owner(&transaction, owner).map_err(write)?;
        write_users(&transaction, UserWrites::between(&Managed::default(), managed)).map_err(write)?;
        write_counts(&transaction, &Counts::default(), counts).map_err(write)?;
    }
    transaction.commit().map_err(write)?;
    for json in imported.into_iter().flat_map(|(_, _, files)| files) {
        let mut aside = json.clone().into_os_string();
        aside.push(MIGRATED_SUFFIX);
        std::fs::rename(&json, &aside).map_err(|source| Error::RenameAside { path: json.clone(), source })?;
        tracing::info!(file = %json.display(), database = %path.display(), "state file migrated");
    }
    Ok(())
}

/// The managed users and counts in the JSON files of `dir`, and which of the files there are.
fn read_json(dir: &Path) -> Result<(Managed, Counts, Vec<PathBuf>), Error> {
    let users = dir.join(super::USERS_FILE);
    let groups = super::path(dir);
    let managed = super::load_managed(dir).map_err(|source| Error::Migrate { path: users.clone(), source })?;
    let counts = super::load(dir).map_err(|source| Error::Migrate { path: groups.clone(), source })?;
    let present = [users, groups].into_iter().filter(|p| p.exists()).collect();
    Ok((managed, counts, present))
}

fn record_owner(transaction: &Transaction, owner: &Owner) -> rusqlite::Result<()> {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let urls = serde_json::to_string(&owner.directory_urls).expect("a list of strings serialises");
    transaction.execute(
        "INSERT OR REPLACE INTO owner (id, config_path, directory_urls, base_dn, user_filter, username_attribute, \
         cloudshell_url, recorded_at) VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            owner.config_path,
            urls,
            owner.base_dn,
            owner.user_filter,
            owner.username_attribute,
            owner.cloudshell_url,
            now
        ],
    )?;
    Ok(())
}

/// What tells one file from another: its device and inode.
type FileId = (u64, u64);

fn file_id(path: &Path) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// A write of managed users: the records to write, as they are now, and the users whose records go. References
/// into the run's own records: a run that moves every user's `last_seen` on (the first of a day) writes
/// 100,000 records without copying them.
#[derive(Debug, Default)]
pub struct UserWrites<'a> {
    pub write: Vec<&'a ManagedUser>,
    pub delete: Vec<&'a Username>,
}

impl<'a> UserWrites<'a> {
    /// What makes `before` (as read) into `after`: `after`'s users that differ from `before`'s, and `before`'s
    /// users that `after` lacks.
    pub fn between(before: &'a Managed, after: &'a Managed) -> UserWrites<'a> {
        let write = after.users.values().filter(|user| before.users.get(&user.username) != Some(*user)).collect();
        let delete = before.users.keys().filter(|key| !after.users.contains_key(key)).collect();
        UserWrites { write, delete }
    }
}

fn write_users(transaction: &Transaction, writes: UserWrites<'_>) -> rusqlite::Result<()> {
    let mut upsert = transaction.prepare_cached(
        "INSERT OR REPLACE INTO managed_users (folded, username, cloudshell_id, first_seen, last_seen, leaver_runs, \
         leaver_since, deactivated, disabled_in_directory, dn) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    // In key order: rows inserted in the table's own order fill its pages one after another (a first run
    // writes 100,000 of them; in the map's order they took twice as long).
    let UserWrites { write: mut changed, delete: gone } = writes;
    changed.sort_unstable_by(|a, b| a.username.cmp(&b.username));
    for user in changed {
        upsert.execute(params![
            user.username.folded(),
            user.username.as_str(),
            user.id,
            user.first_seen.as_str(),
            user.last_seen.as_str(),
            user.leaver_runs,
            user.leaver_since.as_deref(),
            user.deactivated,
            user.disabled_in_directory,
            user.dn.as_deref()
        ])?;
    }
    let mut delete = transaction.prepare_cached("DELETE FROM managed_users WHERE folded = ?1")?;
    for key in gone {
        delete.execute([key.folded()])?;
    }
    Ok(())
}

fn write_counts(transaction: &Transaction, before: &Counts, after: &Counts) -> rusqlite::Result<()> {
    let mut upsert = transaction
        .prepare_cached("INSERT OR REPLACE INTO group_counts (group_name, members, updated_at) VALUES (?1, ?2, ?3)")?;
    for (group, count) in &after.groups {
        if before.groups.get(group) == Some(count) {
            continue;
        }
        let members = i64::try_from(count.members).unwrap_or(i64::MAX);
        upsert.execute(params![group, members, count.updated_at])?;
    }
    let mut delete = transaction.prepare_cached("DELETE FROM group_counts WHERE group_name = ?1")?;
    for group in before.groups.keys().filter(|group| !after.groups.contains_key(*group)) {
        delete.execute([group])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> Owner {
        Owner::for_tests()
    }

    fn alice(now: &str) -> Managed {
        let mut m = Managed::default();
        m.seen(&Username::new("Alice").unwrap(), Some(4), now);
        m
    }

    /// Every file in `dir`, with its contents.
    fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
            .collect()
    }

    #[test]
    fn creates_a_wal_database_at_the_current_schema_and_reopens_it() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let mut db = Database::open(&state, &owner()).unwrap();
        assert_eq!(db.path(), state.join(FILE_NAME));
        let version: u32 = db.connection.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let mode: String = db.connection.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
        let synchronous: i64 = db.connection.query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap();
        assert_eq!(synchronous, 2, "FULL");
        let cache: i64 = db.connection.query_row("PRAGMA cache_size", [], |r| r.get(0)).unwrap();
        assert_eq!(cache, CACHE_KIB, "512 KiB");
        for table in ["owner", "managed_users", "group_counts", "audit", "intents"] {
            let rows = if table == "owner" { 1 } else { 0 };
            assert_eq!(db.count(table), rows, "{table}");
        }
        assert_eq!(db.load_managed().unwrap(), Managed::default());
        db.save_managed(&Managed::default(), &alice("t1")).unwrap();
        let mut counts = Counts::default();
        counts.record("Ops (EU)", 12);
        db.save_counts(&Counts::default(), &counts).unwrap();
        drop(db);

        let db = Database::open(&state, &owner()).unwrap();
        assert_eq!(db.load_managed().unwrap(), alice("t1"));
        assert_eq!(db.load_managed().unwrap().users.values().next().unwrap().username.as_str(), "Alice");
        assert_eq!(db.load_counts().unwrap(), counts);
        assert_eq!(db.owner().unwrap(), owner());
    }

    /// A record whose key is not text (written by another tool) loads by its username, sharing or not.
    #[test]
    fn a_record_whose_key_is_not_text_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Database::open(dir.path(), &owner()).unwrap();
        db.save_managed(&Managed::default(), &alice("t1")).unwrap();
        db.connection.execute("UPDATE managed_users SET folded = X'FF00'", []).unwrap();
        assert_eq!(db.load_managed().unwrap(), alice("t1"));
        struct Everyone(Username, ArcStr);
        impl super::super::Names for Everyone {
            fn get(&self, _: &str) -> Option<(&Username, &ArcStr)> {
                Some((&self.0, &self.1))
            }
        }
        let names = Everyone(Username::new("Alice").unwrap(), ArcStr::from("uid=alice"));
        assert_eq!(db.load_managed_sharing(&names).unwrap(), alice("t1"));
    }

    /// Each distinct time is held once however many records carry it (100,000 records, a handful of times).
    #[test]
    fn a_load_shares_equal_times_between_records() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Database::open(dir.path(), &owner()).unwrap();
        let mut managed = Managed::default();
        for name in ["ann", "bob", "cy"] {
            managed.seen(&Username::new(name).unwrap(), None, "2026-12-03T10:00:00Z");
        }
        managed.seen(&Username::new("dan").unwrap(), None, "2026-12-04T10:00:00Z");
        db.save_managed(&Managed::default(), &managed).unwrap();
        let read = db.load_managed().unwrap();
        assert_eq!(read, managed);
        let user = |name: &str| &read.users[&Username::new(name).unwrap()];
        assert!(user("ann").first_seen.shares(&user("bob").first_seen));
        assert!(user("ann").first_seen.shares(&user("cy").last_seen), "first and last seen alike");
        assert!(!user("ann").first_seen.shares(&user("dan").first_seen), "another time");
    }

    #[test]
    fn only_the_rows_that_changed_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Database::open(dir.path(), &owner()).unwrap();
        let mut before = alice("t1");
        before.seen(&Username::new("bob").unwrap(), None, "t1");
        before.seen(&Username::new("carol").unwrap(), None, "t1");
        db.save_managed(&Managed::default(), &before).unwrap();
        // A row changed behind the program's back stays as it is unless this run changed that user.
        db.connection.execute("UPDATE managed_users SET first_seen = 'kept' WHERE folded = 'bob'", []).unwrap();
        let mut after = before.clone();
        after.users.get_mut(&Username::new("ALICE").unwrap()).unwrap().deactivated = true;
        after.users.remove(&Username::new("carol").unwrap());
        db.save_managed(&before, &after).unwrap();
        let read = db.load_managed().unwrap();
        assert!(read.users[&Username::new("alice").unwrap()].deactivated);
        assert_eq!(read.users[&Username::new("bob").unwrap()].first_seen, "kept", "unchanged: not rewritten");
        assert!(!read.users.contains_key(&Username::new("carol").unwrap()), "gone: deleted");

        let mut counts = Counts::default();
        counts.record("a", 1);
        counts.record("b", 2);
        db.save_counts(&Counts::default(), &counts).unwrap();
        db.connection.execute("UPDATE group_counts SET updated_at = 'kept' WHERE group_name = 'a'", []).unwrap();
        let mut next = counts.clone();
        next.record("b", 3);
        db.save_counts(&counts, &next).unwrap();
        let read = db.load_counts().unwrap();
        assert_eq!(read.groups["a"].updated_at, "kept");
        assert_eq!(read.by_group()["b"], 3);
    }

    #[test]
    fn a_newer_schema_is_refused_naming_both_versions_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let connection = Connection::open(&path).unwrap();
        connection.execute_batch("CREATE TABLE future (x); PRAGMA user_version = 99;").unwrap();
        drop(connection);
        std::fs::write(dir.path().join(super::super::USERS_FILE), r#"{"version": 1, "users": {}}"#).unwrap();
        let before = snapshot(dir.path());
        let e = Database::open(dir.path(), &owner()).unwrap_err();
        assert!(matches!(e, Error::Newer { found: 99, known: SCHEMA_VERSION, .. }), "{e:?}");
        let message = e.to_string();
        assert!(message.contains("schema version 99") && message.contains(&format!("(version {SCHEMA_VERSION})")));
        assert!(message.contains("nothing was written") && message.contains("move it aside"), "{message}");
        assert_eq!(snapshot(dir.path()), before, "no file written, created or renamed");
    }

    #[test]
    fn a_damaged_file_is_refused_with_how_to_recover() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let before = snapshot(dir.path());
        let e = Database::open(dir.path(), &owner()).unwrap_err();
        assert!(matches!(e, Error::Damaged { .. }), "{e:?}");
        let message = e.to_string();
        assert!(message.starts_with(&format!("{} is damaged (", path.display())), "{message}");
        assert!(message.contains("move it aside") && message.contains("managed users"), "{message}");
        assert!(message.contains("no longer reactivated"), "what is lost: {message}");
        assert_eq!(snapshot(dir.path()), before);
    }

    #[test]
    fn a_database_failing_its_quick_check_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Database::open(dir.path(), &owner()).unwrap();
        let mut many = Managed::default();
        for n in 0..2000 {
            many.seen(&Username::new(&format!("user{n}")).unwrap(), Some(n), "t0");
        }
        db.save_managed(&Managed::default(), &many).unwrap();
        db.connection.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode = DELETE;").unwrap();
        drop(db);
        // A valid header and schema, and pages of garbage in the table.
        let path = dir.path().join(FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        let page = 4096;
        assert!(bytes.len() > 8 * page, "{}", bytes.len());
        for byte in &mut bytes[3 * page..6 * page] {
            *byte = 0xa5;
        }
        std::fs::write(&path, &bytes).unwrap();
        let e = Database::open(dir.path(), &owner()).unwrap_err();
        assert!(matches!(e, Error::Damaged { .. }), "{e:?}");
        assert!(e.to_string().contains("move it aside"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "not written");
    }

    /// `users.json` and `groups.json` exactly as this program has written them.
    #[test]
    fn migrates_the_json_files_on_first_open_and_renames_them_aside() {
        let dir = tempfile::tempdir().unwrap();
        let users = r#"{
  "version": 1,
  "users": {
    "alice": {
      "username": "Alice",
      "id": 4,
      "first_seen": "2026-01-02T03:04:05Z",
      "last_seen": "2026-03-02T03:04:05Z",
      "leaver_runs": 2,
      "leaver_since": "2026-03-01T03:04:05Z",
      "deactivated": false
    },
    "bob": {
      "username": "bob",
      "id": null,
      "first_seen": "t0",
      "last_seen": "t0",
      "leaver_runs": 0,
      "deactivated": true,
      "disabled_in_directory": true
    }
  }
}"#;
        let groups = r#"{
  "groups": {
    "Ops (EU)": {
      "members": 12,
      "updated_at": "2026-03-02T03:04:05Z"
    }
  }
}"#;
        std::fs::write(dir.path().join("users.json"), users).unwrap();
        std::fs::write(dir.path().join("groups.json"), groups).unwrap();
        let expected_users = super::super::load_managed(dir.path()).unwrap();
        let expected_counts = super::super::load(dir.path()).unwrap();
        assert_eq!(expected_users.users.len(), 2);

        let db = Database::open(dir.path(), &owner()).unwrap();
        assert_eq!(db.load_managed().unwrap(), expected_users);
        let bob = &db.load_managed().unwrap().users[&Username::new("BOB").unwrap()];
        assert!(bob.deactivated && bob.disabled_in_directory && bob.id.is_none());
        assert_eq!(db.load_counts().unwrap(), expected_counts);
        assert_eq!(db.load_counts().unwrap().by_group()["Ops (EU)"], 12);
        for (name, text) in [("users.json", users), ("groups.json", groups)] {
            assert!(!dir.path().join(name).exists(), "{name} renamed aside");
            let aside = dir.path().join(format!("{name}.migrated"));
            assert_eq!(std::fs::read_to_string(aside).unwrap(), text, "{name} kept as it was");
        }
        drop(db);
        // Reopened: nothing migrated twice, the rows kept.
        let db = Database::open(dir.path(), &owner()).unwrap();
        assert_eq!(db.load_managed().unwrap(), expected_users);
    }

    #[test]
    fn a_json_file_that_cannot_be_used_stops_the_migration_whole() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("groups.json"), r#"{"groups": {"g": {"members": 1, "updated_at": "t"}}}"#)
            .unwrap();
        std::fs::write(dir.path().join("users.json"), "{").unwrap();
        let e = Database::open(dir.path(), &owner()).unwrap_err();
        assert!(matches!(e, Error::Migrate { .. }), "{e:?}");
        assert!(e.to_string().contains("users.json") && e.to_string().contains("nothing was migrated"), "{e}");
        assert!(dir.path().join("groups.json").exists() && dir.path().join("users.json").exists());
        assert!(!dir.path().join(FILE_NAME).exists(), "no database left behind");
        // Once the file is fixed, the next open migrates both.
        std::fs::write(dir.path().join("users.json"), r#"{"version": 1, "users": {}}"#).unwrap();
        let db = Database::open(dir.path(), &owner()).unwrap();
        assert_eq!(db.load_counts().unwrap().by_group()["g"], 1);
        assert!(dir.path().join("groups.json.migrated").exists());
    }

    #[test]
    fn records_its_owner_once_and_reports_how_a_configuration_differs() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path(), &owner()).unwrap();
        assert_eq!(db.owner_differences(&owner()).unwrap(), []);
        drop(db);
        let other = Owner {
            base_dn: "dc=other,dc=org".into(),
            directory_urls: vec!["ldaps://dc1.example.org".into()],
            ..owner()
        };
        // Another configuration opening it does not take it over.
        let db = Database::open(dir.path(), &other).unwrap();
        assert_eq!(db.owner().unwrap(), owner());
        let differences = db.owner_differences(&other).unwrap();
        let fields: Vec<_> = differences.iter().map(|d| d.field).collect();
        assert_eq!(fields, ["directory URLs", "base DN"]);
        assert_eq!(differences[1].to_string(), r#"base DN was "dc=example,dc=org" and is now "dc=other,dc=org""#);
    }

    #[test]
    fn the_owner_never_records_a_secret() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::config::parse(
            Path::new("/etc/c.toml"),
            r#"
[ldap]
url = "ldaps://dc1.example.org"
bind_dn = "cn=reader,dc=example,dc=org"
bind_password_env = "LDAP_PW"
base_dn = "dc=example,dc=org"

[cloudshell]
url = "https://cloudshell.example.org"
password_env = "CS_PW"

[sync]
groups = ["Team"]
"#,
            &|name| Some(format!("{name}-secret-42")),
        )
        .unwrap();
        let owner = Owner::of(&config);
        assert_eq!(owner.config_path, "/etc/c.toml");
        assert_eq!(owner.directory_urls, ["ldaps://dc1.example.org"]);
        assert_eq!(owner.cloudshell_url, "https://cloudshell.example.org/");
        assert_eq!(owner.base_dn, "dc=example,dc=org");
        drop(Database::open(dir.path(), &owner).unwrap());
        let bytes: Vec<u8> = snapshot(dir.path()).into_values().flatten().collect();
        let text = String::from_utf8_lossy(&bytes);
        for secret in ["LDAP_PW-secret-42", "CS_PW-secret-42"] {
            assert!(!text.contains(secret), "{secret} stored");
        }
        assert!(text.contains("cloudshell.example.org"), "the check above reads the stored text");
    }

    #[test]
    fn an_identity_change_is_a_setting_that_says_who_is_who_and_another_path_is_another_configuration() {
        let recorded = owner();
        let fields =
            |current: &Owner| -> Vec<&str> { recorded.identity_changes(current).iter().map(|d| d.field).collect() };
        assert!(fields(&owner()).is_empty());
        let replica = Owner {
            directory_urls: vec!["ldap://DC1.example.org:389".into(), "ldaps://dc9.example.org".into()],
            ..owner()
        };
        assert!(fields(&replica).is_empty(), "another scheme, port or an added replica is the same directory");
        let elsewhere = Owner { directory_urls: vec!["ldaps://other.example.net".into()], ..owner() };
        assert_eq!(fields(&elsewhere), ["directory URLs"]);
        let renamed =
            Owner { username_attribute: "mail".into(), cloudshell_url: "https://cs2.example.org/".into(), ..owner() };
        assert_eq!(fields(&renamed), ["username attribute", "CloudShell URL"]);
        let moved = Owner { config_path: "/srv/other.toml".into(), ..owner() };
        assert!(
            fields(&moved).is_empty()
                && recorded.other_configuration(&moved)
                && !recorded.other_configuration(&owner())
        );
    }

    /// A database of schema version 1 (as the first release of state.db wrote it) is brought to the current one
    /// in place, its rows kept.
    #[test]
    fn a_version_1_database_is_migrated_in_place_keeping_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let connection = Connection::open(&path).unwrap();
        connection.execute_batch(MIGRATIONS[0]).unwrap();
        connection
            .execute_batch(
                "PRAGMA user_version = 1;
                 INSERT INTO owner VALUES (1, '/etc/c.toml', '[\"ldap://dc1\"]', 'dc=x', '(uid=*)', 'uid', 'http://cs/', 't');
                 INSERT INTO managed_users (folded, username, cloudshell_id, first_seen, last_seen, deactivated)
                     VALUES ('bob', 'Bob', 7, 't0', 't1', 1);",
            )
            .unwrap();
        drop(connection);
        let mut db = Database::open(dir.path(), &owner()).unwrap();
        let version: u32 = db.connection.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let bob = &db.load_managed().unwrap().users[&Username::new("bob").unwrap()];
        assert!(bob.deactivated && bob.id == Some(7) && bob.dn.is_none(), "{bob:?}");
        assert_eq!(db.owner().unwrap().config_path, "/etc/c.toml", "the owner is kept, not replaced");
        assert!(!db.rematch_pending().unwrap());
        db.accept_owner(&owner()).unwrap();
        assert!(db.rematch_pending().unwrap() && db.owner().unwrap() == owner());
        db.add_known_groups(&[("cn=a".into(), "cn=A".into())], "t").unwrap();
        db.add_known_groups(&[("cn=a".into(), "cn=A".into())], "t").unwrap();
        assert_eq!(db.known_groups().unwrap().len(), 1);
    }

    /// A database of schema version 3 holding a stored model: the migration moves the body's bytes to the row's
    /// end and lets the model go (the next run reads in full); a model stored after it is taken whole.
    #[test]
    fn a_version_3_database_moves_the_models_bytes_last_and_lets_the_model_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let connection = Connection::open(&path).unwrap();
        MIGRATIONS[..3].iter().for_each(|m| connection.execute_batch(m).unwrap());
        connection
            .execute_batch(
                "PRAGMA user_version = 3;
                 INSERT INTO owner VALUES (1, '/etc/c.toml', '[\"ldap://dc1\"]', 'dc=x', '(uid=*)', 'uid', 'http://cs/', 't', 0);
                 INSERT INTO kept_model_body (part, bytes, digest) VALUES ('directory', x'01', 'd'), ('cloudshell', x'02', 'c');
                 INSERT INTO kept_model VALUES (1, 'p', 'c', 't', 't', x'00', 'd', 'c');",
            )
            .unwrap();
        drop(connection);
        let mut db = Database::open(dir.path(), &owner()).unwrap();
        let count = |db: &Database, table: &str| -> i64 {
            db.connection.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0)).unwrap()
        };
        assert_eq!((count(&db, "kept_model"), count(&db, "kept_model_body")), (0, 0));
        let columns: Vec<String> = db
            .connection
            .prepare("SELECT name FROM pragma_table_info('kept_model_body')")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(columns, ["part", "digest", "bytes"]);
        let model =
            StoredModel { program: "p".into(), directory: vec![7; 70_000], cloudshell: vec![8], ..Default::default() };
        db.store_kept_model(&model, None).unwrap();
        let Taken::Model(taken) = db.take_kept_model().unwrap() else { panic!("a model") };
        assert_eq!((taken.directory, taken.cloudshell), (model.directory, model.cloudshell));
    }

    /// As systemd's `DynamicUser=` lays it out: the state directory a link to the real one.
    #[test]
    fn a_state_directory_that_is_a_symlink_is_used_through_it() {
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("private");
        std::fs::create_dir(&private).unwrap();
        let link = dir.path().join("state");
        std::os::unix::fs::symlink(&private, &link).unwrap();
        let mut db = Database::open(&link, &owner()).unwrap();
        db.save_managed(&Managed::default(), &alice("t")).unwrap();
        drop(db);
        assert!(private.join(FILE_NAME).exists());
        assert_eq!(Database::open_read_only(&link).unwrap().unwrap().load_managed().unwrap(), alice("t"));
    }

    #[test]
    fn an_intent_takes_only_its_two_states() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path(), &owner()).unwrap();
        let insert = |state: &str| {
            db.connection.execute(
                "INSERT INTO intents (run_id, at, action, username, cloudshell_id, reason, state) \
                 VALUES ('r1', 't', 'deactivate', 'bob', 3, 'left', ?1)",
                [state],
            )
        };
        insert("intended").unwrap();
        insert("unknown").unwrap();
        let e = insert("done").unwrap_err();
        assert!(e.to_string().contains("CHECK constraint failed"), "{e}");
        assert_eq!(db.count("intents"), 2);
    }

    #[test]
    fn a_state_directory_others_may_write_or_a_symlinked_database_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = Database::open(dir.path(), &owner()).unwrap_err();
        assert!(matches!(e, Error::Unsafe(_)) && e.to_string().contains("writable by other users"), "{e}");
        assert!(!dir.path().join(FILE_NAME).exists());

        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        drop(Database::open(&elsewhere, &owner()).unwrap());
        std::os::unix::fs::symlink(elsewhere.join(FILE_NAME), dir.path().join(FILE_NAME)).unwrap();
        let e = Database::open(dir.path(), &owner()).unwrap_err();
        assert!(matches!(e, Error::Open { .. }), "{e:?}");
        assert!(e.to_string().starts_with(&format!("cannot open {}", dir.path().join(FILE_NAME).display())), "{e}");
    }

    /// A sound file whose content breaks a rule of its schema: SQLite's `quick_check` reports it.
    #[test]
    fn a_database_whose_rows_break_its_schema_is_refused_naming_what_quick_check_found() {
        let dir = tempfile::tempdir().unwrap();
        drop(Database::open(dir.path(), &owner()).unwrap());
        let connection = Connection::open(dir.path().join(FILE_NAME)).unwrap();
        connection.execute("INSERT INTO group_counts VALUES ('g', 1, 't')", []).unwrap();
        connection
            .execute_batch(
                "PRAGMA writable_schema = ON;
                 UPDATE sqlite_schema SET sql = replace(sql, 'updated_at TEXT NOT NULL', 'updated_at TEXT')
                     WHERE name = 'group_counts';",
            )
            .unwrap();
        drop(connection);
        let connection = Connection::open(dir.path().join(FILE_NAME)).unwrap();
        connection.execute("UPDATE group_counts SET updated_at = NULL", []).unwrap();
        connection
            .execute_batch(
                "PRAGMA writable_schema = ON;
                 UPDATE sqlite_schema SET sql = replace(sql, 'updated_at TEXT', 'updated_at TEXT NOT NULL')
                     WHERE name = 'group_counts';",
            )
            .unwrap();
        drop(connection);
        let e = Database::open(dir.path(), &owner()).unwrap_err();
        assert!(matches!(e, Error::Damaged { .. }), "{e:?}");
        assert!(e.to_string().contains("quick_check found: NULL value in group_counts.updated_at"), "{e}");
    }
}
