//! The daemon's small persistent state in the state directory:
//! - `groups.json`: each group's member count at the last good run, which the shrink guard compares against.
//!   Deleting it disables the guard for one run, after which it is written again.
//! - `users.json`: the managed users (every user seen as an effective member of a configured group in a
//!   complete run), which alone can become leavers. Versioned. Deleting it makes nobody a leaver until users
//!   are seen again: losing state can never cause a deactivation.
//!
//! Also the atomic file write (temp file, fsync, rename) that the status file shares.
//!
//! [`db`] (`state.db`) is to replace both files: it migrates them on its first open.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::username::Username;

pub mod db;
mod managed_users;

pub use managed_users::ManagedUsers;

pub const FILE_NAME: &str = "groups.json";

/// Writes `bytes` to `path` atomically (a temp file in the same directory, synced, then renamed over it),
/// creating the directory if needed. The temp file has a random name and is created exclusively
/// (`O_EXCL`, never through a symlink), so whoever can write the directory cannot make this write land
/// elsewhere. A directory that others may write is refused.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    check_directory(dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut file = tempfile::Builder::new().prefix(&format!(".{name}.")).suffix(".tmp").tempfile_in(dir)?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    // Removed on failure by its drop; renamed over `path` on success.
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Refuses a state directory that users other than its owner may write: they could plant files there (or
/// replace the state) for a run as root to trust.
pub fn check_directory(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o022 != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{} is writable by other users (mode {:o}); the state directory must not be: chmod go-w it",
                dir.display(),
                mode & 0o7777
            ),
        ));
    }
    Ok(())
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
struct GroupCount {
    members: usize,
    updated_at: String,
}

/// The last good member counts.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counts {
    groups: BTreeMap<String, GroupCount>,
}

impl Counts {
    /// Counts by configured group name.
    pub fn by_group(&self) -> HashMap<String, usize> {
        self.groups.iter().map(|(k, v)| (k.clone(), v.members)).collect()
    }

    /// Records a group's count from a good run; `updated_at` says when it last changed, so an unchanged count
    /// is an unchanged row.
    pub fn record(&mut self, group: &str, members: usize) {
        if self.groups.get(group).is_some_and(|c| c.members == members) {
            return;
        }
        let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        self.groups.insert(group.to_string(), GroupCount { members, updated_at: now });
    }
}

pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// A state file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a state file ({source}); delete it to start afresh")]
    Corrupt { path: PathBuf, source: serde_json::Error },
    #[error("{path} is version {found}, this program reads version {expected}; delete it to start afresh")]
    Version { path: PathBuf, found: u32, expected: u32 },
    #[error("unsafe state directory: {0}")]
    Unsafe(std::io::Error),
    #[error(transparent)]
    Database(Box<db::Error>),
    #[error(
        "cannot write the state directory {dir}: {source}; the shrink guard and the managed users are kept there, \
         so nothing is written anywhere until it can be (check its mount, owner and free space)"
    )]
    Unwritable { dir: PathBuf, source: std::io::Error },
}

impl From<db::Error> for Error {
    fn from(e: db::Error) -> Error {
        Error::Database(Box::new(e))
    }
}

/// Proves that the state directory can be written, before a run writes anything elsewhere: a read-only or
/// full state directory would otherwise turn the shrink guard off silently. Creates it when missing.
pub fn check_writable(dir: &Path) -> Result<(), Error> {
    let unwritable = |source| Error::Unwritable { dir: dir.to_path_buf(), source };
    std::fs::create_dir_all(dir).map_err(unwritable)?;
    check_directory(dir).map_err(Error::Unsafe)?;
    let mut probe = tempfile::Builder::new().prefix(".probe.").tempfile_in(dir).map_err(unwritable)?;
    probe.write_all(b"probe").and_then(|()| probe.as_file().sync_all()).map_err(unwritable)?;
    Ok(())
}

pub const USERS_FILE: &str = "users.json";

/// The version of `users.json` this program writes and reads.
const USERS_VERSION: u32 = 1;

/// A user this program manages.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ManagedUser {
    /// As written in the directory.
    pub username: Username,
    /// CloudShell's id.
    pub id: Option<i64>,
    pub first_seen: Stamp,
    /// The last complete run in which the user was an effective member, to the day: it is moved on at most once
    /// a day (UTC), so that a run in which nothing changed rewrites no record.
    pub last_seen: Stamp,
    /// Consecutive complete runs in which the user was a leaver (0: not a leaver).
    #[serde(default)]
    pub leaver_runs: u32,
    /// When the current leaver streak began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaver_since: Option<Stamp>,
    /// This program deactivated the user (and so may reactivate them).
    #[serde(default)]
    pub deactivated: bool,
    /// The directory entry's DN when last seen: how a member the directory no longer shows is told from one
    /// it hides (see `sync::unresolved`). `None` in records from before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dn: Option<arcstr::ArcStr>,
    /// ... because the account is disabled in the directory (`sync.disabled_accounts =
    /// "import_then_deactivate"`): the disabled-accounts step, not the leaver step, reactivates them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled_in_directory: bool,
}

/// A time as the state writes it (RFC 3339, UTC; compared as written, never parsed here), in a shared string:
/// 100,000 managed users' records hold a handful of distinct times (the runs that first saw them, the days they
/// were last seen), and a load keeps each distinct one once ([`Stamps`]) rather than a string a field. One
/// pointer wide (a shared `String`, not a shared `str`): three in each of 100,000 records.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp(Arc<String>);

impl Stamp {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the two hold one shared string (not merely equal ones).
    #[cfg(test)]
    pub fn shares(&self, other: &Stamp) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl std::ops::Deref for Stamp {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Stamp {
    fn from(text: &str) -> Stamp {
        Stamp(Arc::new(text.to_string()))
    }
}

/// Hashes and compares as the text (a `String`'s hash is its `str`'s): how [`Stamps`] finds one by text.
impl std::borrow::Borrow<str> for Stamp {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for Stamp {
    fn eq(&self, other: &str) -> bool {
        *self.0 == *other
    }
}

impl PartialEq<&str> for Stamp {
    fn eq(&self, other: &&str) -> bool {
        *self.0 == **other
    }
}

impl std::fmt::Debug for Stamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.0, f)
    }
}

impl Serialize for Stamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Stamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Stamp, D::Error> {
        String::deserialize(d).map(|text| Stamp::from(text.as_str()))
    }
}

/// Equal times read as one [`Stamp`]: how a load of the managed users shares them.
#[derive(Default)]
pub struct Stamps(rustc_hash::FxHashSet<Stamp>);

impl Stamps {
    /// `text` as a stamp, shared with every equal one this made before.
    pub fn get(&mut self, text: &str) -> Stamp {
        if let Some(known) = self.0.get(text) {
            return known.clone();
        }
        let made = Stamp::from(text);
        self.0.insert(made.clone());
        made
    }
}

impl ManagedUser {
    /// A user managed from `now` on: not yet seen in a run, no leaver streak, not deactivated.
    pub fn new(username: Username, now: &str) -> ManagedUser {
        ManagedUser {
            username,
            id: None,
            first_seen: Stamp::from(now),
            last_seen: Stamp::default(),
            leaver_runs: 0,
            leaver_since: None,
            deactivated: false,
            disabled_in_directory: false,
            dn: None,
        }
    }
}

/// Usernames and DNs a load of the managed users may share rather than make: the members a run read (most
/// managed users are), so that 100,000 records hold no second copy of their names or DNs and the load folds
/// none of the names.
pub trait Names {
    /// The username whose folded form is `folded`, with the DN of the entry that has it, if known.
    fn get(&self, folded: &str) -> Option<(&Username, &arcstr::ArcStr)>;
}

/// No names to share.
impl Names for () {
    fn get(&self, _: &str) -> Option<(&Username, &arcstr::ArcStr)> {
        None
    }
}

/// Every managed user, by username (written as the case-folded username, see [`folded_keys`]).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Managed {
    pub version: u32,
    #[serde(with = "folded_keys")]
    pub users: ManagedUsers,
}

/// The managed users' keys in `users.json`: each username's case-folded form, as this program has always
/// written them. A key that is not a username (blank) makes the file unusable, like any foreign content; a
/// record is kept under its own username (the key's name as written).
mod folded_keys {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serializer};

    use super::ManagedUser;
    use crate::username::Username;

    pub fn serialize<S: Serializer>(users: &super::ManagedUsers, s: S) -> Result<S::Ok, S::Error> {
        // Sorted by the folded form, so the keys come out in the order they always did.
        let sorted: BTreeMap<&Username, &ManagedUser> = users.iter().collect();
        s.collect_map(sorted.into_iter().map(|(key, user)| (key.folded(), user)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<super::ManagedUsers, D::Error> {
        let read = BTreeMap::<String, ManagedUser>::deserialize(d)?;
        read.into_iter()
            .map(|(key, user)| match Username::new(&key) {
                Some(key) => Ok((key, user)),
                None => Err(serde::de::Error::custom(format!("{key:?} is not a username"))),
            })
            .collect()
    }
}

impl Default for Managed {
    fn default() -> Self {
        Managed { version: USERS_VERSION, users: ManagedUsers::default() }
    }
}

impl Managed {
    /// Records `username` as seen now (CloudShell id `id`, when known): managed from now on if it was not,
    /// with no leaver streak. Returns the entry for the caller's own fields.
    pub fn seen(&mut self, username: &Username, id: Option<i64>, now: &str) -> &mut ManagedUser {
        if !self.users.contains_key(username) {
            self.users.insert(ManagedUser::new(username.clone(), now));
        }
        let entry = self.users.get_mut(username).expect("inserted");
        entry.see(username, id, now);
        entry
    }

    /// The managed users with `changes` made (a run's ledger makes them in place).
    #[cfg(test)]
    pub fn with(&self, changes: &Changes) -> Managed {
        let mut next = self.clone();
        for user in changes.values() {
            next.users.insert(user.clone());
        }
        next
    }
}

/// Managed users a step changed or added, as it leaves them (a step removes nobody). Packed as the managed users
/// are: the first run of a day changes every one (their `last_seen`), and a sorted map of 100,000 copies was
/// that run's peak of memory.
pub type Changes = ManagedUsers;

impl ManagedUser {
    /// Records the user as seen now (see [`Managed::seen`]).
    pub fn see(&mut self, username: &Username, id: Option<i64>, now: &str) {
        if self.username.as_str() != username.as_str() {
            self.username = username.clone();
        }
        self.id = id.or(self.id);
        if last_seen_stale(&self.last_seen, now) {
            self.last_seen = Stamp::from(now);
        }
        (self.leaver_runs, self.leaver_since) = (0, None);
    }

    /// Whether [`ManagedUser::see`] would change nothing.
    pub fn seen_already(&self, username: &Username, id: Option<i64>, now: &str) -> bool {
        self.username.as_str() == username.as_str()
            && id.is_none_or(|id| self.id == Some(id))
            && !last_seen_stale(&self.last_seen, now)
            && self.leaver_runs == 0
            && self.leaver_since.is_none()
    }
}

/// Whether `last_seen` is to be moved on to `now`: another day (UTC), or never seen. The times are RFC 3339 in
/// UTC, so the day is their first ten characters: compared, not parsed (this runs for every managed user).
fn last_seen_stale(last_seen: &str, now: &str) -> bool {
    match (last_seen.get(..10), now.get(..10)) {
        (Some(then), Some(today)) => then != today,
        _ => true,
    }
}

/// Reads the managed users; a missing file is nobody managed, an unreadable or foreign one an error.
pub fn load_managed(dir: &Path) -> Result<Managed, Error> {
    let path = dir.join(USERS_FILE);
    let text = match crate::files::read_text_if_present(&path, crate::files::STATE_MAX) {
        Ok(Some(text)) => text,
        Ok(None) => return Ok(Managed::default()),
        Err(source) => return Err(Error::Read { path, source }),
    };
    #[derive(Deserialize)]
    struct Version {
        version: u32,
    }
    let found =
        serde_json::from_str::<Version>(&text).map_err(|source| Error::Corrupt { path: path.clone(), source })?;
    if found.version != USERS_VERSION {
        return Err(Error::Version { path, found: found.version, expected: USERS_VERSION });
    }
    serde_json::from_str(&text).map_err(|source| Error::Corrupt { path, source })
}

/// Writes the managed users atomically.
pub fn save_managed(dir: &Path, managed: &Managed) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(managed).map_err(std::io::Error::other)?;
    write_atomic(&dir.join(USERS_FILE), text.as_bytes())
}

/// Reads the counts; a missing file is an empty state, an unreadable one an error naming it. A state
/// directory other users may write is refused.
pub fn load(dir: &Path) -> Result<Counts, Error> {
    if dir.exists() {
        check_directory(dir).map_err(Error::Unsafe)?;
    }
    let path = path(dir);
    match crate::files::read_text_if_present(&path, crate::files::STATE_MAX) {
        Ok(Some(text)) => serde_json::from_str(&text).map_err(|source| Error::Corrupt { path, source }),
        Ok(None) => Ok(Counts::default()),
        Err(source) => Err(Error::Read { path, source }),
    }
}

pub fn save(dir: &Path, counts: &Counts) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(counts).map_err(std::io::Error::other)?;
    write_atomic(&path(dir), text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_round_trip_and_a_missing_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), Counts::default());
        let mut c = Counts::default();
        c.record("Ops (EU)", 12);
        save(dir.path(), &c).unwrap();
        assert_eq!(load(dir.path()).unwrap().by_group(), HashMap::from([("Ops (EU)".to_string(), 12)]));
        std::fs::write(path(dir.path()), "{").unwrap();
        let e = load(dir.path()).unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{e:?}");
        assert!(e.to_string().contains("delete it to start afresh"), "{e}");
    }

    #[test]
    fn a_time_in_a_record_is_one_pointer_wide() {
        // Three in each of 100,000 records: a shared `str` would be two words each (2.4 MB more at 100,000).
        assert_eq!(std::mem::size_of::<Stamp>(), std::mem::size_of::<usize>());
        assert_eq!(std::mem::size_of::<Option<Stamp>>(), std::mem::size_of::<usize>());
        let mut stamps = Stamps::default();
        let (a, b) = (stamps.get("2026-12-01T10:00:00Z"), stamps.get("2026-12-01T10:00:00Z"));
        assert!(a.shares(&b) && a == "2026-12-01T10:00:00Z");
        assert!(!a.shares(&stamps.get("2026-12-02T10:00:00Z")));
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn the_records_a_full_read_holds_100_000_of_each_are_as_small_as_measured() {
        // BENCHMARKS.md ("A full read's memory cut further"): a name two words, a DN or a domain one.
        use std::mem::size_of;
        assert_eq!(size_of::<ManagedUser>(), 72, "a managed user's record");
        assert_eq!(size_of::<crate::ldap::Member>(), 24, "a member");
        assert_eq!(size_of::<crate::cloudshell::User>(), 64, "a CloudShell user");
    }

    #[test]
    fn last_seen_moves_on_at_most_daily_so_a_steady_run_changes_no_record() {
        let mut m = Managed::default();
        let alice = Username::new("alice").unwrap();
        m.seen(&alice, Some(1), "2026-12-01T10:00:00Z");
        let seen = |m: &Managed| m.users[&alice].last_seen.clone();
        m.seen(&alice, Some(1), "2026-12-01T23:59:59Z");
        assert_eq!(seen(&m), "2026-12-01T10:00:00Z", "the same day: unchanged");
        m.seen(&alice, Some(1), "2026-12-02T00:00:00Z");
        assert_eq!(seen(&m), "2026-12-02T00:00:00Z", "the next day");
        m.users.get_mut(&alice).unwrap().last_seen = Stamp::default();
        m.seen(&alice, Some(1), "2026-12-02T10:00:01Z");
        assert_eq!(seen(&m), "2026-12-02T10:00:01Z", "never seen before");
    }

    #[test]
    fn managed_users_round_trip_and_a_missing_file_is_nobody() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_managed(dir.path()).unwrap(), Managed::default());
        let mut m = Managed::default();
        let alice = Username::new("Alice").unwrap();
        m.users.insert(ManagedUser { id: Some(4), last_seen: "t1".into(), ..ManagedUser::new(alice, "t0") });
        save_managed(dir.path(), &m).unwrap();
        let read = load_managed(dir.path()).unwrap();
        assert_eq!(read, m);
        assert_eq!(read.users.values().next().map(|u| u.username.as_str()), Some("Alice"), "as written");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp file left behind");
    }

    /// The file as this program has always written it: keys folded, usernames as written.
    #[test]
    fn managed_users_are_written_by_folded_username_as_before() {
        let dir = tempfile::tempdir().unwrap();
        let text = r#"{
  "version": 1,
  "users": {
    "alice": {
      "username": "Alice",
      "id": 4,
      "first_seen": "t0",
      "last_seen": "t1",
      "leaver_runs": 2,
      "leaver_since": "t1",
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
        std::fs::write(dir.path().join(USERS_FILE), text).unwrap();
        let read = load_managed(dir.path()).unwrap();
        assert_eq!(read.users[&Username::new("ALICE").unwrap()].username.as_str(), "Alice");
        save_managed(dir.path(), &read).unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join(USERS_FILE)).unwrap(), text);
    }

    #[test]
    fn a_corrupt_or_foreign_users_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(USERS_FILE);
        let blank =
            r#"{"version": 1, "users": {" ": {"username": "x", "id": null, "first_seen": "", "last_seen": ""}}}"#;
        for (text, corrupt) in [
            ("{\"version\": 1, \"users\": {", true),
            ("[]", true),
            ("{\"version\": 9, \"users\": {}}", false),
            (blank, true),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = load_managed(dir.path()).unwrap_err();
            assert_eq!(matches!(e, Error::Corrupt { .. }), corrupt, "{text}: {e}");
            assert!(e.to_string().contains("users.json") && e.to_string().contains("delete it"), "{e}");
        }
    }

    #[test]
    fn a_planted_symlink_never_redirects_a_state_write() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        // The temp name this module used to use, predictable from the pid.
        let planted = state.join(format!(".groups.json.{}.tmp", std::process::id()));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        save(&state, &Counts::default()).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(load(&state).unwrap(), Counts::default());
    }

    #[test]
    fn a_state_directory_others_may_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o775, 0o777, 0o1777] {
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode)).unwrap();
            let e = save(dir.path(), &Counts::default()).unwrap_err();
            assert!(e.to_string().contains("writable by other users"), "{mode:o}: {e}");
        }
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        save(dir.path(), &Counts::default()).unwrap();
    }
}
