//! Managed users keyed by an earlier fold, keyed again by today's. Before usernames were NFC-normalised
//! (`crate::username`), a row's key was its name lower-cased only: a name stored in NFD (`josé` as `e` and a
//! combining accent) had a key no lookup makes any more, so its row would neither be found nor deleted and a
//! second row would be written beside it. ASCII keys never change, so only rows whose name is not ASCII are
//! read. Done on every open that writes, before anything else reads the rows: cheap (those rows only), and
//! a database written by an earlier version at any time is keyed again the first time it is opened.

use rusqlite::{OptionalExtension, Transaction, params};

use crate::username::Username;

/// One row's key and the columns that decide which of two rows for one user is kept.
struct Row {
    folded: String,
    deactivated: bool,
    last_seen: String,
}

/// Keys again every managed user whose key is not today's fold of it, with that user's audit rows (so that
/// `history --user` finds them). Two rows that are now one user: the one whose user this program deactivated
/// is kept (so that it can still reactivate them), else the one already under the new key, else the one seen
/// last; the other is deleted and named in a `managed users merged` event. Returns how many rows changed.
pub(super) fn refold(transaction: &Transaction) -> rusqlite::Result<usize> {
    let stale: Vec<(String, String)> = {
        let mut statement = transaction.prepare(
            "SELECT folded FROM managed_users WHERE length(CAST(folded AS BLOB)) != length(folded) \
             OR length(CAST(username AS BLOB)) != length(username)",
        )?;
        let keys = statement.query_map([], |row| row.get::<_, String>(0))?;
        let mut stale = Vec::new();
        for key in keys {
            let key = key?;
            if let Some(new) = Username::new(&key).map(|u| u.folded().to_string())
                && new != key
            {
                stale.push((key, new));
            }
        }
        stale
    };
    let read = |key: &str| -> rusqlite::Result<Option<Row>> {
        transaction
            .query_row("SELECT folded, deactivated, last_seen FROM managed_users WHERE folded = ?1", [key], |row| {
                Ok(Row { folded: row.get(0)?, deactivated: row.get(1)?, last_seen: row.get(2)? })
            })
            .optional()
    };
    let mut changed = 0;
    for (old, new) in stale {
        let Some(stale_row) = read(&old)? else { continue };
        if let Some(current) = read(&new)? {
            let keep_stale = match (stale_row.deactivated, current.deactivated) {
                (true, false) => true,
                (false, true) => false,
                _ => stale_row.last_seen > current.last_seen,
            };
            let dropped = if keep_stale { &current.folded } else { &stale_row.folded };
            tracing::warn!(key = %new, dropped = %dropped, "managed users merged");
            transaction.execute("DELETE FROM managed_users WHERE folded = ?1", [dropped])?;
            changed += 1;
            if !keep_stale {
                transaction.execute("UPDATE audit SET folded = ?1 WHERE folded = ?2", params![new, old])?;
                continue;
            }
        }
        transaction.execute("UPDATE managed_users SET folded = ?1 WHERE folded = ?2", params![new, old])?;
        transaction.execute("UPDATE audit SET folded = ?1 WHERE folded = ?2", params![new, old])?;
        changed += 1;
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::super::{Database, Owner};
    use crate::username::Username;

    fn owner() -> Owner {
        Owner::for_tests()
    }

    /// A row as an earlier version wrote it: the name lower-cased, not normalised.
    fn insert(db: &Database, key: &str, username: &str, deactivated: bool, last_seen: &str) {
        db.connection
            .execute(
                "INSERT INTO managed_users (folded, username, cloudshell_id, first_seen, last_seen, deactivated) \
                 VALUES (?1, ?2, 7, 't0', ?3, ?4)",
                rusqlite::params![key, username, last_seen, deactivated],
            )
            .unwrap();
    }

    fn keys(db: &Database) -> Vec<(String, bool)> {
        let mut statement =
            db.connection.prepare("SELECT folded, deactivated FROM managed_users ORDER BY folded").unwrap();
        statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
    }

    const NFD: &str = "jose\u{301}";
    const NFC: &str = "jos\u{e9}";

    #[test]
    fn a_row_keyed_by_the_old_fold_is_found_and_kept_under_the_new_key_with_its_audit_rows() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path(), &owner()).unwrap();
        insert(&db, NFD, "Jose\u{301}", true, "t1");
        insert(&db, "alice", "Alice", false, "t1");
        db.connection
            .execute(
                "INSERT INTO audit (run_id, at, action, username, folded, reason, result) \
                 VALUES ('r', 't1', 'deactivated', ?1, ?2, 'left', 'ok')",
                ["Jose\u{301}", NFD],
            )
            .unwrap();
        drop(db);
        let db = Database::open(dir.path(), &owner()).unwrap();
        assert_eq!(keys(&db), [("alice".to_string(), false), (NFC.to_string(), true)], "ASCII keys unchanged");
        let managed = db.load_managed().unwrap();
        let user = &managed.users[&Username::new(NFC).unwrap()];
        assert_eq!((user.username.as_str(), user.deactivated), ("Jose\u{301}", true), "the name as written");
        let folded: String = db.connection.query_row("SELECT folded FROM audit", [], |r| r.get(0)).unwrap();
        assert_eq!(folded, NFC);
        // Written back under the new key: one row, not a second beside the old one.
        let mut after = managed.clone();
        after.users.get_mut(&Username::new(NFD).unwrap()).unwrap().last_seen = "t2".into();
        let mut db = db;
        db.save_managed(&managed, &after).unwrap();
        assert_eq!(keys(&db).len(), 2);
    }

    #[test]
    fn two_rows_that_are_now_one_user_keep_the_one_this_program_deactivated() {
        for stale_deactivated in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let db = Database::open(dir.path(), &owner()).unwrap();
            insert(&db, NFD, NFD, stale_deactivated, "t1");
            insert(&db, NFC, NFC, !stale_deactivated, "t2");
            drop(db);
            let db = Database::open(dir.path(), &owner()).unwrap();
            assert_eq!(keys(&db), [(NFC.to_string(), true)], "stale row deactivated: {stale_deactivated}");
        }
    }
}
