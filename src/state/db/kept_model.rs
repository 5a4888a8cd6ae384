//! The directory model a one-shot `sync` keeps in `state.db` for change reads (`sync::changes`): a head row and
//! the body's two parts. The database neither reads nor checks what they hold; it keeps them, and its triggers
//! delete the head whenever another table is written (see the migration that made them).

use rusqlite::{OptionalExtension, params};

use super::{Database, Error};

/// A stored model as the database holds it: the head's row and the body's parts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredModel {
    /// The program (and its version) that stored it.
    pub program: String,
    /// The fingerprint of the configuration it was read with.
    pub configuration: String,
    /// When the full read it was built from began (RFC 3339).
    pub full_read_at: String,
    pub head: Vec<u8>,
    /// The entries (`directory`) and CloudShell's users as the run left them (`cloudshell`).
    pub directory: Vec<u8>,
    pub cloudshell: Vec<u8>,
}

/// The body's parts, by name.
const PARTS: [&str; 2] = ["directory", "cloudshell"];

impl StoredModel {
    fn part(&self, name: &str) -> &[u8] {
        if name == PARTS[0] { &self.directory } else { &self.cloudshell }
    }
}

impl Database {
    /// Takes the stored model: reads it and deletes its head in one transaction, so that a run that ends
    /// before storing another (a crash, a failure) leaves none, and the next run reads in full. `None` when
    /// there is no head, or no body for it.
    pub fn take_kept_model(&mut self) -> Result<Option<StoredModel>, Error> {
        let (read, write) = (self.read_error(), self.write_error());
        let transaction = self.connection.transaction().map_err(&write)?;
        let head = transaction
            .query_row("SELECT program, configuration, full_read_at, head FROM kept_model WHERE id = 1", [], |row| {
                Ok(StoredModel {
                    program: row.get(0)?,
                    configuration: row.get(1)?,
                    full_read_at: row.get(2)?,
                    head: row.get(3)?,
                    ..StoredModel::default()
                })
            })
            .optional()
            .map_err(&read)?;
        let Some(mut model) = head else { return Ok(None) };
        let mut parts = [None, None];
        for (slot, name) in parts.iter_mut().zip(PARTS) {
            let query = "SELECT bytes FROM kept_model_body WHERE part = ?1";
            *slot = transaction.query_row(query, [name], |row| row.get::<_, Vec<u8>>(0)).optional().map_err(&read)?;
        }
        transaction.execute("DELETE FROM kept_model", []).map_err(&write)?;
        transaction.commit().map_err(&write)?;
        let [Some(directory), Some(cloudshell)] = parts else { return Ok(None) };
        (model.directory, model.cloudshell) = (directory, cloudshell);
        Ok(Some(model))
    }

    /// Stores `model` as the kept one, in one transaction; a body part equal to the one in `taken` (what
    /// [`Database::take_kept_model`] returned this run) is not written again. Written last in a run: any other
    /// write after it would delete the head.
    pub fn store_kept_model(&mut self, model: &StoredModel, taken: Option<&StoredModel>) -> Result<(), Error> {
        let write = self.write_error();
        let transaction = self.connection.transaction().map_err(&write)?;
        for name in PARTS {
            if taken.is_some_and(|t| t.part(name) == model.part(name)) {
                let present: Option<i64> = transaction
                    .query_row("SELECT 1 FROM kept_model_body WHERE part = ?1", [name], |row| row.get(0))
                    .optional()
                    .map_err(&write)?;
                if present.is_some() {
                    continue;
                }
            }
            transaction
                .execute(
                    "INSERT OR REPLACE INTO kept_model_body (part, bytes) VALUES (?1, ?2)",
                    params![name, model.part(name)],
                )
                .map_err(&write)?;
        }
        let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        transaction
            .execute(
                "INSERT OR REPLACE INTO kept_model (id, program, configuration, saved_at, full_read_at, head) \
                 VALUES (1, ?1, ?2, ?3, ?4, ?5)",
                params![model.program, model.configuration, now, model.full_read_at, model.head],
            )
            .map_err(&write)?;
        transaction.commit().map_err(&write)
    }

    /// Deletes the stored model, head and body (a run that reads in full and keeps no model).
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
            full_read_at: "2026-12-03T00:00:00Z".into(),
            head: vec![1, 2],
            directory: directory.to_vec(),
            cloudshell: vec![9],
        }
    }

    #[test]
    fn a_stored_model_is_taken_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = open(dir.path());
        assert_eq!(db.take_kept_model().unwrap(), None, "none stored yet");
        db.store_kept_model(&model(b"d"), None).unwrap();
        assert_eq!(db.take_kept_model().unwrap(), Some(model(b"d")));
        assert_eq!(db.take_kept_model().unwrap(), None, "taken: a run that stores nothing leaves none");
        // Stored again with the body unchanged: the body is kept, the head written.
        db.store_kept_model(&model(b"d"), Some(&model(b"d"))).unwrap();
        assert_eq!(db.take_kept_model().unwrap(), Some(model(b"d")));
        db.store_kept_model(&model(b"e"), Some(&model(b"d"))).unwrap();
        assert_eq!(db.take_kept_model().unwrap(), Some(model(b"e")), "a changed body is written");
        db.store_kept_model(&model(b"e"), None).unwrap();
        db.drop_kept_model().unwrap();
        assert_eq!(db.take_kept_model().unwrap(), None);
    }

    #[test]
    fn any_other_write_to_the_state_deletes_the_stored_head() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = open(dir.path());
        let writes: [&str; 6] = [
            "UPDATE owner SET recorded_at = 'x'",
            "INSERT INTO group_counts (group_name, members, updated_at) VALUES ('g', 1, 'x')",
            "DELETE FROM group_counts",
            "INSERT INTO audit (run_id, at, action, reason, result) VALUES ('r', 'x', 'held', 'r', 'ok')",
            "INSERT INTO known_groups (dn_key, dn, seen_at) VALUES ('k', 'k', 'x')",
            "INSERT INTO managed_users (folded, username, first_seen, last_seen) VALUES ('a', 'a', 'x', 'x')",
        ];
        for write in writes {
            db.store_kept_model(&model(b"d"), None).unwrap();
            db.connection.execute(write, []).unwrap();
            assert_eq!(db.take_kept_model().unwrap(), None, "after {write}");
        }
        // The control: with no other write, the model is there to take.
        db.store_kept_model(&model(b"d"), None).unwrap();
        assert!(db.take_kept_model().unwrap().is_some());
    }
}
