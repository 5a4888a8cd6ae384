//! The directory model a one-shot `sync` keeps in `state.db` for change reads (`sync::changes`): a head row and
//! the body's two parts, each part with a digest the head repeats. The database does not read what they hold;
//! it keeps them, checks each part against its digest when it is taken, and its triggers delete the head
//! whenever another table or the body is written (see the migration that made them).

use std::hash::Hasher;
use std::io::{Seek, Write};

use rusqlite::blob::ZeroBlob;
use rusqlite::{MAIN_DB, OptionalExtension, params};

use super::{Database, Error};

/// A stored model as the database holds it: the head's row and the body's parts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredModel {
    /// The program (and its version) that stored it.
    pub program: String,
    /// The fingerprint of the configuration it was read with.
    pub configuration: String,
    /// When it was stored (RFC 3339; set by [`Database::store_kept_model`]).
    pub saved_at: String,
    /// When the full read it was built from began (RFC 3339).
    pub full_read_at: String,
    pub head: Vec<u8>,
    /// The entries (`directory`) and CloudShell's users as the run left them (`cloudshell`).
    pub directory: Vec<u8>,
    pub cloudshell: Vec<u8>,
}

/// What [`Database::take_kept_model`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Taken {
    /// No model stored (or its head deleted since).
    None,
    Model(StoredModel),
    /// A model whose parts do not match the digests its head holds: why.
    Unusable(String),
}

/// The body's parts, by name.
const PARTS: [&str; 2] = ["directory", "cloudshell"];

impl StoredModel {
    fn part(&self, name: &str) -> &[u8] {
        if name == PARTS[0] { &self.directory } else { &self.cloudshell }
    }
}

/// A part's digest: SipHash (std's, fixed keys) over its bytes. Against a damaged page or a hand edit that still
/// decodes, not against an attacker (who could write the state directory anyway).
fn digest(bytes: &[u8]) -> String {
    let mut measure = Measure::default();
    measure.write_all(bytes).expect("measuring does not fail");
    measure.digest()
}

/// A body part to store: its bytes, or how to encode them. An encoded part is written straight into the room
/// made for it in its row: a model's body takes 17 MB at 100,000 users, which a buffer, then SQLite's copy of a
/// blob bound to an insert, held at the peak of the run storing it.
#[derive(Clone, Copy)]
pub enum Part<'a> {
    Bytes(&'a [u8]),
    Encoded(&'a dyn Fn(&mut dyn Write) -> std::io::Result<()>),
}

impl Part<'_> {
    fn write_to(&self, to: &mut dyn Write) -> std::io::Result<()> {
        match self {
            Part::Bytes(bytes) => to.write_all(bytes),
            Part::Encoded(encode) => encode(to),
        }
    }

    /// Its length and its digest ([`digest`]), and whether it is exactly `taken` (found without holding it), in
    /// one pass.
    fn measure(&self, taken: Option<&[u8]>) -> std::io::Result<(u64, String, bool)> {
        let mut measure = Measure { same: taken.map(|bytes| Same { bytes, at: 0, same: true }), ..Measure::default() };
        self.write_to(&mut measure)?;
        let same = measure.same.as_ref().is_some_and(|s| s.same && s.at == s.bytes.len());
        Ok((measure.length, measure.digest(), same))
    }
}

/// A model to store, as [`StoredModel`] with its body parts given as [`Part`]s.
pub struct ModelToStore<'a> {
    pub program: String,
    pub configuration: String,
    pub full_read_at: String,
    pub head: Vec<u8>,
    pub directory: Part<'a>,
    pub cloudshell: Part<'a>,
}

impl<'a> ModelToStore<'a> {
    fn part(&self, name: &str) -> Part<'a> {
        if name == PARTS[0] { self.directory } else { self.cloudshell }
    }
}

impl StoredModel {
    /// The model to store, its parts its bytes.
    pub fn to_store(&self) -> ModelToStore<'_> {
        ModelToStore {
            program: self.program.clone(),
            configuration: self.configuration.clone(),
            full_read_at: self.full_read_at.clone(),
            head: self.head.clone(),
            directory: Part::Bytes(&self.directory),
            cloudshell: Part::Bytes(&self.cloudshell),
        }
    }
}

/// Counts and digests what is written to it, and compares it with bytes when given them.
#[derive(Default)]
struct Measure<'b> {
    hasher: std::hash::DefaultHasher,
    length: u64,
    same: Option<Same<'b>>,
}

impl Measure<'_> {
    fn digest(&self) -> String {
        format!("{:016x}-{}", self.hasher.finish(), self.length)
    }
}

impl Write for Measure<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.hasher.write(buf);
        self.length += buf.len() as u64;
        if let Some(same) = &mut self.same {
            same.write_all(buf)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Compares what is written to it with `bytes`, from the start.
struct Same<'b> {
    bytes: &'b [u8],
    at: usize,
    same: bool,
}

impl Write for Same<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let end = self.at + buf.len();
        self.same = self.same && self.bytes.get(self.at..end) == Some(buf);
        self.at = end;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An error writing a part, as the database's writes report one.
fn io_error(e: std::io::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

impl Database {
    /// Takes the stored model: reads it and deletes its head in one transaction, so that a run that ends
    /// before storing another (a crash, a failure) leaves none, and the next run reads in full. Each body part
    /// must match the digest the head holds for it.
    pub fn take_kept_model(&mut self) -> Result<Taken, Error> {
        let (read, write) = (self.read_error(), self.write_error());
        let transaction = self.connection.transaction().map_err(&write)?;
        let query = "SELECT program, configuration, saved_at, full_read_at, head, directory_digest, \
                     cloudshell_digest FROM kept_model WHERE id = 1";
        let head = transaction
            .query_row(query, [], |row| {
                let model = StoredModel {
                    program: row.get(0)?,
                    configuration: row.get(1)?,
                    saved_at: row.get(2)?,
                    full_read_at: row.get(3)?,
                    head: row.get(4)?,
                    ..StoredModel::default()
                };
                Ok((model, [row.get::<_, String>(5)?, row.get::<_, String>(6)?]))
            })
            .optional()
            .map_err(&read)?;
        let Some((mut model, digests)) = head else { return Ok(Taken::None) };
        let mut parts: [Option<(Vec<u8>, String)>; 2] = [None, None];
        for (slot, name) in parts.iter_mut().zip(PARTS) {
            let query = "SELECT bytes, digest FROM kept_model_body WHERE part = ?1";
            *slot =
                transaction.query_row(query, [name], |row| Ok((row.get(0)?, row.get(1)?))).optional().map_err(&read)?;
        }
        transaction.execute("DELETE FROM kept_model", []).map_err(&write)?;
        transaction.commit().map_err(&write)?;
        let [Some(directory), Some(cloudshell)] = parts else {
            return Ok(Taken::Unusable("a part of its body is missing".into()));
        };
        for ((name, (bytes, stored)), wanted) in PARTS.iter().zip([&directory, &cloudshell]).zip(&digests) {
            if stored != wanted || digest(bytes) != *wanted {
                return Ok(Taken::Unusable(format!("its {name} part does not match the digest its head holds")));
            }
        }
        (model.directory, model.cloudshell) = (directory.0, cloudshell.0);
        Ok(Taken::Model(model))
    }

    /// Stores `model` as the kept one, in one transaction; a body part equal to the one in `taken` (what
    /// [`Database::take_kept_model`] returned this run) is not written again. Written last in a run: any other
    /// write after it would delete the head.
    pub fn store_kept_model(&mut self, model: &StoredModel, taken: Option<&StoredModel>) -> Result<(), Error> {
        self.store_kept_model_parts(&model.to_store(), taken)
    }

    /// [`Database::store_kept_model`], the parts encoded as they are written: each is encoded once for its length
    /// and digest (and to compare it with `taken`'s), then, unless it is `taken`'s, into the room made for it in
    /// its row.
    pub fn store_kept_model_parts(
        &mut self,
        model: &ModelToStore<'_>,
        taken: Option<&StoredModel>,
    ) -> Result<(), Error> {
        let write = self.write_error();
        let measure = |part: Part<'_>, taken| part.measure(taken).map_err(|e| write(io_error(e)));
        // Measured before the transaction, which then holds the write lock only to write. Bytes are compared as
        // they are (a quiet run's parts are the ones it took: no digest to make).
        let mut measured = Vec::new();
        for name in PARTS {
            let (part, taken) = (model.part(name), taken.map(|t| t.part(name)));
            measured.push(match (part, taken) {
                (Part::Bytes(bytes), Some(taken)) => (None, bytes == taken),
                _ => measure(part, taken).map(|(length, digest, same)| (Some((length, digest)), same))?,
            });
        }
        let transaction = self.connection.transaction().map_err(&write)?;
        let mut digests = Vec::new();
        for (name, (measured, same)) in PARTS.into_iter().zip(measured) {
            let part = model.part(name);
            if same {
                let present: Option<String> = transaction
                    .query_row("SELECT digest FROM kept_model_body WHERE part = ?1", [name], |row| row.get(0))
                    .optional()
                    .map_err(&write)?;
                if let Some(present) = present {
                    digests.push(present);
                    continue;
                }
            }
            let (length, digest) = match measured {
                Some(measured) => measured,
                None => measure(part, None).map(|(length, digest, _)| (length, digest))?,
            };
            // Room made, then the part written into it. The column is the row's last, so SQLite does not make the
            // row's zeros in memory (it still writes zero pages, which the part then overwrites: about the part's
            // size more written to the WAL).
            transaction
                .execute(
                    "INSERT OR REPLACE INTO kept_model_body (part, digest, bytes) VALUES (?1, ?2, ?3)",
                    params![name, digest, ZeroBlob(length)],
                )
                .map_err(&write)?;
            let row = transaction.last_insert_rowid();
            let mut blob = transaction.blob_open(MAIN_DB, c"kept_model_body", c"bytes", row, false).map_err(&write)?;
            part.write_to(&mut blob).map_err(|e| write(io_error(e)))?;
            // Encoded again, it must fill its room exactly (a longer one fails at the room's end).
            let filled = blob.stream_position().map_err(|e| write(io_error(e)))?;
            if filled != length {
                let e = std::io::Error::other(format!("its {name} part came out {filled} bytes, measured {length}"));
                return Err(write(io_error(e)));
            }
            digests.push(digest);
        }
        let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        transaction
            .execute(
                "INSERT OR REPLACE INTO kept_model (id, program, configuration, saved_at, full_read_at, head, \
                 directory_digest, cloudshell_digest) VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    model.program,
                    model.configuration,
                    now,
                    model.full_read_at,
                    model.head,
                    digests[0],
                    digests[1]
                ],
            )
            .map_err(&write)?;
        transaction.commit().map_err(&write)
    }

    /// Deletes the stored model, head and body (a run that keeps no model).
    pub fn drop_kept_model(&mut self) -> Result<(), Error> {
        let write = self.write_error();
        let transaction = self.connection.transaction().map_err(&write)?;
        transaction.execute("DELETE FROM kept_model", []).map_err(&write)?;
        transaction.execute("DELETE FROM kept_model_body", []).map_err(&write)?;
        transaction.commit().map_err(&write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::db::Owner;

    fn open(dir: &std::path::Path) -> Database {
        Database::open(dir, &Owner::for_tests()).unwrap()
    }

    fn model(directory: &[u8]) -> StoredModel {
        StoredModel {
            program: "p 1".into(),
            configuration: "c".into(),
            saved_at: String::new(),
            full_read_at: "2026-12-03T00:00:00Z".into(),
            head: vec![1, 2],
            directory: directory.to_vec(),
            cloudshell: vec![9],
        }
    }

    /// The model taken, its `saved_at` checked and cleared for comparison.
    fn take(db: &mut Database) -> Option<StoredModel> {
        match db.take_kept_model().unwrap() {
            Taken::None => None,
            Taken::Model(m) => {
                assert!(humantime::parse_rfc3339(&m.saved_at).is_ok(), "{}", m.saved_at);
                Some(StoredModel { saved_at: String::new(), ..m })
            }
            Taken::Unusable(why) => panic!("unusable: {why}"),
        }
    }

    #[test]
    fn a_stored_model_is_taken_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = open(dir.path());
        assert_eq!(take(&mut db), None, "none stored yet");
        db.store_kept_model(&model(b"d"), None).unwrap();
        assert_eq!(take(&mut db), Some(model(b"d")));
        assert_eq!(take(&mut db), None, "taken: a run that stores nothing leaves none");
        // Stored again with the body unchanged: the body is kept, the head written.
        db.store_kept_model(&model(b"d"), Some(&model(b"d"))).unwrap();
        assert_eq!(take(&mut db), Some(model(b"d")));
        db.store_kept_model(&model(b"e"), Some(&model(b"d"))).unwrap();
        assert_eq!(take(&mut db), Some(model(b"e")), "a changed body is written");
        db.store_kept_model(&model(b"e"), None).unwrap();
        db.drop_kept_model().unwrap();
        assert_eq!(take(&mut db), None);
    }

    /// A part encoded as it is written is stored as its bytes would be, however the encoder cuts them (here in
    /// pieces of 7 bytes, across the writer's 64 KiB buffer), and taken back whole. One equal to the part taken
    /// this run is left in its row; a changed one is written again.
    #[test]
    fn a_part_encoded_as_it_is_written_is_stored_as_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = open(dir.path());
        let big: Vec<u8> = (0..200_000u32).map(|n| (n % 251) as u8).collect();
        let (whole, small) = (model(&big), model(b"d"));
        let in_pieces = |to: &mut dyn Write| big.chunks(7).try_for_each(|piece| to.write_all(piece));
        let encoded = ModelToStore { directory: Part::Encoded(&in_pieces), ..whole.to_store() };
        let row = |db: &Database| -> i64 {
            db.connection
                .query_row("SELECT rowid FROM kept_model_body WHERE part = 'directory'", [], |r| r.get(0))
                .unwrap()
        };
        db.store_kept_model_parts(&encoded, None).unwrap();
        let written = row(&db);
        assert_eq!(take(&mut db), Some(whole.clone()));
        db.store_kept_model_parts(&encoded, Some(&whole)).unwrap();
        assert_eq!(row(&db), written, "equal to the part taken: left in its row");
        assert_eq!(take(&mut db), Some(whole.clone()));
        // The control: a changed part is written again.
        db.store_kept_model_parts(&encoded, Some(&small)).unwrap();
        assert_ne!(row(&db), written);
        assert_eq!(take(&mut db), Some(whole.clone()));
        // An encoder that fails is an error, and its transaction changes nothing: the model stored before stays.
        db.store_kept_model(&small, None).unwrap();
        let failing = |_: &mut dyn Write| Err(std::io::Error::other("no"));
        let broken = ModelToStore { directory: Part::Encoded(&failing), ..whole.to_store() };
        assert!(db.store_kept_model_parts(&broken, None).is_err());
        assert_eq!(take(&mut db), Some(small.clone()));
        // So does one whose second encoding is shorter than its first (it would leave zeros under the digest).
        db.store_kept_model(&small, None).unwrap();
        let calls = std::cell::Cell::new(0);
        let shrinking = |to: &mut dyn Write| {
            calls.set(calls.get() + 1);
            to.write_all(if calls.get() == 1 { b"longer" } else { b"short" })
        };
        let shrunk = ModelToStore { directory: Part::Encoded(&shrinking), ..whole.to_store() };
        let e = db.store_kept_model_parts(&shrunk, None).unwrap_err();
        assert!(e.to_string().contains("came out 5 bytes, measured 6"), "{e}");
        assert_eq!(take(&mut db), Some(small));
    }

    #[test]
    fn a_body_that_does_not_match_its_digest_is_unusable() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = open(dir.path());
        // Past the trigger that deletes the head on a write to the body, as a damaged page would be.
        db.connection.execute_batch("DROP TRIGGER kept_model_after_kept_model_body_update").unwrap();
        db.store_kept_model(&model(b"directory"), None).unwrap();
        db.connection.execute("UPDATE kept_model_body SET bytes = x'00' WHERE part = 'directory'", []).unwrap();
        let taken = db.take_kept_model().unwrap();
        assert!(matches!(&taken, Taken::Unusable(why) if why.contains("directory part")), "{taken:?}");
        // The control: stored again, it is taken whole.
        db.store_kept_model(&model(b"directory"), None).unwrap();
        assert_eq!(take(&mut db), Some(model(b"directory")));
    }

    #[test]
    fn any_other_write_to_the_state_or_to_the_body_deletes_the_stored_head() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = open(dir.path());
        let writes = [
            "UPDATE owner SET recorded_at = 'x'",
            "INSERT INTO group_counts (group_name, members, updated_at) VALUES ('g', 1, 'x')",
            "DELETE FROM group_counts",
            "INSERT INTO audit (run_id, at, action, reason, result) VALUES ('r', 'x', 'held', 'r', 'ok')",
            "INSERT INTO intents (run_id, at, action, username, cloudshell_id, reason, state) \
             VALUES ('r', 'x', 'deactivate', 'a', 1, 'r', 'intended')",
            "INSERT INTO known_groups (dn_key, dn, seen_at) VALUES ('k', 'k', 'x')",
            "INSERT INTO managed_users (folded, username, first_seen, last_seen) VALUES ('a', 'a', 'x', 'x')",
            "UPDATE managed_users SET last_seen = last_seen",
            "UPDATE kept_model_body SET digest = digest",
        ];
        for write in writes {
            db.store_kept_model(&model(b"d"), None).unwrap();
            db.connection.execute(write, []).unwrap();
            assert_eq!(take(&mut db), None, "after {write}");
        }
        // The control: with no other write, the model is there to take.
        db.store_kept_model(&model(b"d"), None).unwrap();
        assert!(take(&mut db).is_some());
    }

    /// Every table but the head's own has the three triggers that delete the head: a table added later without
    /// them fails here.
    #[test]
    fn every_other_table_deletes_the_head_when_written() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        let names = |sql: &str| -> Vec<String> {
            let mut statement = db.connection.prepare(sql).unwrap();
            statement.query_map([], |row| row.get(0)).unwrap().map(Result::unwrap).collect()
        };
        let tables =
            names("SELECT name FROM sqlite_schema WHERE type = 'table' AND name != 'kept_model' ORDER BY name");
        assert!(tables.len() >= 7, "{tables:?}");
        for table in tables {
            for op in ["INSERT", "UPDATE", "DELETE"] {
                let found = names(&format!(
                    "SELECT sql FROM sqlite_schema WHERE type = 'trigger' AND tbl_name = '{table}' \
                     AND sql LIKE '%AFTER {op} ON {table} BEGIN DELETE FROM kept_model; END%'"
                ));
                assert_eq!(found.len(), 1, "{table} has no {op} trigger deleting the stored head");
            }
        }
    }
}
