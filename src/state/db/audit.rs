//! The audit trail and the intents of destructive calls, in `state.db`.
//!
//! An intent is written (committed, synced) before its call is sent; the call's outcome settles it: the
//! intent is deleted, its audit row written and, for a deactivation or a reactivation that took effect, the
//! managed user's record changed, all in one transaction. An outcome this program could not learn (the answer
//! was lost) leaves the intent in place, marked `unknown`, for the next run to settle by reading back from
//! CloudShell. So every intent in the table is one whose outcome is not yet known.

use rusqlite::params;
use serde::Serialize;

use super::{Database, Error};
use crate::username::Username;

/// What a row of the audit trail records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A group import call (`{"GroupName": ...}`).
    GroupImported,
    /// A user now in CloudShell through this program's import (by group or by name).
    Imported,
    AddedToGroup,
    RemovedFromGroup,
    Deactivated,
    Reactivated,
    /// A safety limit held writes.
    Held,
}

impl Action {
    const ALL: [Action; 7] = [
        Action::GroupImported,
        Action::Imported,
        Action::AddedToGroup,
        Action::RemovedFromGroup,
        Action::Deactivated,
        Action::Reactivated,
        Action::Held,
    ];

    /// As stored and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::GroupImported => "group_imported",
            Action::Imported => "imported",
            Action::AddedToGroup => "added_to_group",
            Action::RemovedFromGroup => "removed_from_group",
            Action::Deactivated => "deactivated",
            Action::Reactivated => "reactivated",
            Action::Held => "held",
        }
    }

    /// In words, for people.
    pub fn words(self) -> &'static str {
        match self {
            Action::GroupImported => "group imported",
            Action::Imported => "imported",
            Action::AddedToGroup => "added to group",
            Action::RemovedFromGroup => "removed from group",
            Action::Deactivated => "deactivated",
            Action::Reactivated => "reactivated",
            Action::Held => "held",
        }
    }

    fn parse(text: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == text)
    }
}

/// One row of the audit trail: a write this program made, or a hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditRow {
    pub run_id: String,
    /// RFC 3339, UTC, seconds.
    pub at: String,
    pub action: Action,
    /// The user, as the directory writes the name; `None` for a group import or a hold.
    pub username: Option<String>,
    /// The directory group (imports) or the CloudShell group (placement), if any.
    pub group: Option<String>,
    /// Why, in words.
    pub reason: String,
    /// What came of it, in words: `ok`, `failed: ...`, `held`, ...
    pub result: String,
}

/// A destructive change to one CloudShell user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// `IsActive = false`; `disabled_in_directory` when for a disabled directory account.
    Deactivate { disabled_in_directory: bool },
    /// `IsActive = true`.
    Reactivate,
    /// Out of a CloudShell group.
    RemoveFromGroup { group: String, group_id: i64 },
}

impl Change {
    /// The CloudShell group of a removal.
    pub fn group(&self) -> Option<&str> {
        match self {
            Change::RemoveFromGroup { group, .. } => Some(group),
            _ => None,
        }
    }

    /// The audit action its outcome is recorded as.
    pub fn action(&self) -> Action {
        match self {
            Change::Deactivate { .. } => Action::Deactivated,
            Change::Reactivate => Action::Reactivated,
            Change::RemoveFromGroup { .. } => Action::RemovedFromGroup,
        }
    }
}

/// A destructive call about to be sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Intent {
    pub change: Change,
    pub username: Username,
    pub cloudshell_id: i64,
    /// Why, in words, for the audit row.
    pub reason: String,
}

/// An intent whose outcome is not known, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    pub id: i64,
    /// The run that wrote it, and when.
    pub run_id: String,
    pub at: String,
    pub intent: Intent,
    /// Its call was sent and the answer lost (`unknown`), rather than never known to be sent (`intended`).
    pub answer_lost: bool,
}

/// What became of an intent's call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It took effect.
    Done,
    /// It did not; nothing changed in CloudShell.
    Failed,
    /// The user (or group) is no longer in CloudShell.
    Gone,
    /// Nothing was sent: the user read was already inactive (not this program's deactivation, so the record
    /// is not changed) or its `IsActive` unknown.
    LeftAlone,
    /// Not known: the intent stays for the next run to read back.
    Unknown,
}

/// An intent's outcome, with the audit row's `result` in words.
#[derive(Clone, Debug)]
pub struct Settlement<'a> {
    pub id: i64,
    pub intent: &'a Intent,
    pub outcome: Outcome,
    pub result: String,
}

/// Which audit rows to read.
#[derive(Clone, Debug, Default)]
pub struct Filter<'a> {
    /// Rows about this user only (compared case-insensitively).
    pub username: Option<&'a Username>,
    /// Rows at or after this time (RFC 3339, UTC).
    pub since: Option<&'a str>,
}

impl Database {
    /// Records `intents` (one transaction, synced) before their calls are sent; their ids, in order. An error
    /// means none is recorded, and none of their calls may be sent.
    pub fn intend(&mut self, run_id: &str, at: &str, intents: &[Intent]) -> Result<Vec<i64>, Error> {
        let write = self.write_error();
        let transaction = self.connection.transaction().map_err(&write)?;
        let mut ids = Vec::with_capacity(intents.len());
        {
            let mut insert = transaction
                .prepare_cached(
                    "INSERT INTO intents (run_id, at, action, username, cloudshell_id, disabled_in_directory, \
                     group_name, group_id, reason, state) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'intended')",
                )
                .map_err(&write)?;
            for intent in intents {
                let (action, disabled, group, group_id) = match &intent.change {
                    Change::Deactivate { disabled_in_directory } => ("deactivate", *disabled_in_directory, None, None),
                    Change::Reactivate => ("reactivate", false, None, None),
                    Change::RemoveFromGroup { group, group_id } => {
                        ("remove_from_group", false, Some(group.as_str()), Some(*group_id))
                    }
                };
                insert
                    .execute(params![
                        run_id,
                        at,
                        action,
                        intent.username.as_str(),
                        intent.cloudshell_id,
                        disabled,
                        group,
                        group_id,
                        intent.reason
                    ])
                    .map_err(&write)?;
                ids.push(transaction.last_insert_rowid());
            }
        }
        transaction.commit().map_err(&write)?;
        Ok(ids)
    }

    /// Records the outcomes of intents, in one transaction: each known outcome deletes its intent and writes its
    /// audit row (`run_id`, `at`), and a deactivation or a reactivation that took effect changes the managed
    /// user's record; an unknown one marks its intent `unknown`.
    pub fn settle(&mut self, run_id: &str, at: &str, settled: &[Settlement<'_>]) -> Result<(), Error> {
        let write = self.write_error();
        let transaction = self.connection.transaction().map_err(&write)?;
        for s in settled {
            let intent = s.intent;
            if s.outcome == Outcome::Unknown {
                transaction.execute("UPDATE intents SET state = 'unknown' WHERE id = ?1", [s.id]).map_err(&write)?;
                continue;
            }
            transaction.execute("DELETE FROM intents WHERE id = ?1", [s.id]).map_err(&write)?;
            let group = match &intent.change {
                Change::RemoveFromGroup { group, .. } => Some(group.clone()),
                _ => None,
            };
            let row = AuditRow {
                run_id: run_id.to_string(),
                at: at.to_string(),
                action: intent.change.action(),
                username: Some(intent.username.to_string()),
                group,
                reason: intent.reason.clone(),
                result: s.result.clone(),
            };
            insert_audit(&transaction, &row).map_err(&write)?;
            if s.outcome != Outcome::Done {
                continue;
            }
            match &intent.change {
                Change::Deactivate { disabled_in_directory } => transaction
                    .execute(
                        "INSERT INTO managed_users (folded, username, cloudshell_id, first_seen, last_seen, \
                         deactivated, disabled_in_directory) VALUES (?1, ?2, ?3, ?4, ?4, 1, ?5) \
                         ON CONFLICT (folded) DO UPDATE SET cloudshell_id = excluded.cloudshell_id, \
                         deactivated = 1, disabled_in_directory = excluded.disabled_in_directory",
                        params![
                            intent.username.folded(),
                            intent.username.as_str(),
                            intent.cloudshell_id,
                            at,
                            disabled_in_directory
                        ],
                    )
                    .map_err(&write)?,
                Change::Reactivate => transaction
                    .execute(
                        "UPDATE managed_users SET deactivated = 0, disabled_in_directory = 0 WHERE folded = ?1",
                        [intent.username.folded()],
                    )
                    .map_err(&write)?,
                Change::RemoveFromGroup { .. } => 0,
            };
        }
        transaction.commit().map_err(&write)
    }

    /// The intents whose outcome is not known, oldest first.
    pub fn pending(&self) -> Result<Vec<Pending>, Error> {
        let read = self.read_error();
        let mut statement = self
            .connection
            .prepare(
                "SELECT id, run_id, at, action, username, cloudshell_id, disabled_in_directory, group_name, \
                 group_id, reason, state FROM intents ORDER BY id",
            )
            .map_err(&read)?;
        let rows = statement
            .query_map([], |row| {
                let action: String = row.get(3)?;
                let username: String = row.get(4)?;
                let change = match action.as_str() {
                    "deactivate" => Some(Change::Deactivate { disabled_in_directory: row.get(6)? }),
                    "reactivate" => Some(Change::Reactivate),
                    _ => match (row.get::<_, Option<String>>(7)?, row.get::<_, Option<i64>>(8)?) {
                        (Some(group), Some(group_id)) => Some(Change::RemoveFromGroup { group, group_id }),
                        _ => None,
                    },
                };
                let intent = match (change, Username::new(&username)) {
                    (Some(change), Some(username)) => {
                        Some(Intent { change, username, cloudshell_id: row.get(5)?, reason: row.get(9)? })
                    }
                    _ => None,
                };
                let state: String = row.get(10)?;
                Ok(intent.map(|intent| Pending {
                    id: row.get(0).unwrap_or_default(),
                    run_id: row.get(1).unwrap_or_default(),
                    at: row.get(2).unwrap_or_default(),
                    intent,
                    answer_lost: state == "unknown",
                }))
            })
            .map_err(&read)?;
        let mut pending = Vec::new();
        for row in rows {
            let Some(p) = row.map_err(&read)? else {
                return Err(Error::Damaged {
                    path: self.path.clone(),
                    detail: "an intent names no user, or a removal no group".into(),
                });
            };
            pending.push(p);
        }
        Ok(pending)
    }

    /// Appends rows to the audit trail, in one transaction.
    pub fn record(&mut self, rows: &[AuditRow]) -> Result<(), Error> {
        if rows.is_empty() {
            return Ok(());
        }
        let write = self.write_error();
        let transaction = self.connection.transaction().map_err(&write)?;
        for row in rows {
            insert_audit(&transaction, row).map_err(&write)?;
        }
        transaction.commit().map_err(&write)
    }

    /// The audit rows `filter` selects, oldest first.
    pub fn history(&self, filter: &Filter<'_>) -> Result<Vec<AuditRow>, Error> {
        let read = self.read_error();
        let mut statement = self
            .connection
            .prepare(
                "SELECT run_id, at, action, username, group_name, reason, result FROM audit \
                 WHERE (?1 IS NULL OR folded = ?1) AND (?2 IS NULL OR at >= ?2) ORDER BY at, id",
            )
            .map_err(&read)?;
        let folded = filter.username.map(Username::folded);
        let rows = statement
            .query_map(params![folded, filter.since], |row| {
                let action: String = row.get(2)?;
                Ok(Action::parse(&action).map(|action| AuditRow {
                    run_id: row.get(0).unwrap_or_default(),
                    at: row.get(1).unwrap_or_default(),
                    action,
                    username: row.get(3).unwrap_or_default(),
                    group: row.get(4).unwrap_or_default(),
                    reason: row.get(5).unwrap_or_default(),
                    result: row.get(6).unwrap_or_default(),
                }))
            })
            .map_err(&read)?;
        let mut found = Vec::new();
        for row in rows {
            match row.map_err(&read)? {
                Some(row) => found.push(row),
                None => {
                    return Err(Error::Damaged {
                        path: self.path.clone(),
                        detail: "an audit row has an action this program does not know".into(),
                    });
                }
            }
        }
        Ok(found)
    }

    /// How many `action`s (deactivations, removals from groups) took effect at or after `since` (RFC 3339,
    /// UTC), by the audit trail (a `result` starting `ok`, read-backs included), plus the intents of that kind
    /// written since whose outcome is not known yet: a call that may have taken effect counts as done. What the
    /// daily budgets are counted from.
    pub fn count_since(&self, action: Action, since: &str) -> Result<usize, Error> {
        let read = self.read_error();
        let intended = match action {
            Action::Deactivated => "deactivate",
            Action::Reactivated => "reactivate",
            Action::RemovedFromGroup => "remove_from_group",
            _ => "",
        };
        let count: i64 = self
            .connection
            .query_row(
                "SELECT (SELECT count(*) FROM audit WHERE action = ?1 AND at >= ?2 AND substr(result, 1, 2) = 'ok') \
                 + (SELECT count(*) FROM intents WHERE action = ?3 AND at >= ?2)",
                params![action.as_str(), since, intended],
                |row| row.get(0),
            )
            .map_err(&read)?;
        Ok(usize::try_from(count).unwrap_or_default())
    }

    /// Deletes the audit rows from before `before` (RFC 3339, UTC); how many.
    pub fn prune(&mut self, before: &str) -> Result<usize, Error> {
        let write = self.write_error();
        self.connection.execute("DELETE FROM audit WHERE at < ?1", [before]).map_err(write)
    }
}

fn insert_audit(transaction: &rusqlite::Transaction, row: &AuditRow) -> rusqlite::Result<()> {
    let folded = row.username.as_deref().and_then(Username::new).map(|u| u.folded().to_string());
    transaction
        .prepare_cached(
            "INSERT INTO audit (run_id, at, action, username, folded, group_name, reason, result) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![
            row.run_id,
            row.at,
            row.action.as_str(),
            row.username,
            folded,
            row.group,
            row.reason,
            row.result
        ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Managed;

    fn open(dir: &std::path::Path) -> Database {
        Database::open(dir, &super::super::Owner::for_tests()).unwrap()
    }

    fn u(name: &str) -> Username {
        Username::new(name).unwrap()
    }

    fn intent(change: Change, name: &str, id: i64) -> Intent {
        Intent { change, username: u(name), cloudshell_id: id, reason: format!("why {name}") }
    }

    #[test]
    fn an_intent_is_pending_until_a_known_outcome_settles_it_with_its_audit_row_and_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = open(dir.path());
        let mut managed = Managed::default();
        managed.seen(&u("Bob"), Some(7), "t0");
        db.save_managed(&Managed::default(), &managed).unwrap();
        let intents = [
            intent(Change::Deactivate { disabled_in_directory: false }, "Bob", 7),
            intent(Change::Deactivate { disabled_in_directory: true }, "Dora", 9),
            intent(Change::RemoveFromGroup { group: "Lab Users".into(), group_id: 3 }, "Eve", 11),
            intent(Change::Reactivate, "Finn", 12),
        ];
        let ids = db.intend("r1", "t1", &intents).unwrap();
        let pending = db.pending().unwrap();
        assert_eq!(pending.iter().map(|p| p.id).collect::<Vec<_>>(), ids);
        assert_eq!(pending.iter().map(|p| p.intent.clone()).collect::<Vec<_>>(), intents);
        assert!(pending.iter().all(|p| !p.answer_lost && p.run_id == "r1" && p.at == "t1"));

        let settle = |i: usize, outcome, result: &str| Settlement {
            id: ids[i],
            intent: &intents[i],
            outcome,
            result: result.into(),
        };
        db.settle(
            "r1",
            "t2",
            &[
                settle(0, Outcome::Done, "ok"),
                settle(1, Outcome::Done, "ok"),
                settle(2, Outcome::Unknown, ""),
                settle(3, Outcome::Failed, "failed: 503"),
            ],
        )
        .unwrap();
        let pending = db.pending().unwrap();
        assert_eq!(pending.len(), 1);
        assert!(pending[0].answer_lost && pending[0].intent == intents[2], "{pending:?}");

        let managed = db.load_managed().unwrap();
        let bob = &managed.users[&u("bob")];
        assert!(bob.deactivated && !bob.disabled_in_directory && bob.first_seen == "t0", "{bob:?}");
        let dora = &managed.users[&u("dora")];
        assert!(dora.deactivated && dora.disabled_in_directory && dora.id == Some(9), "new record: {dora:?}");
        assert!(!managed.users.contains_key(&u("finn")), "a failed reactivation changes no record");

        let rows = db.history(&Filter::default()).unwrap();
        let summary: Vec<_> = rows.iter().map(|r| (r.action, r.username.as_deref(), r.result.as_str())).collect();
        assert_eq!(
            summary,
            [
                (Action::Deactivated, Some("Bob"), "ok"),
                (Action::Deactivated, Some("Dora"), "ok"),
                (Action::Reactivated, Some("Finn"), "failed: 503")
            ]
        );
        assert_eq!((rows[0].reason.as_str(), rows[0].run_id.as_str(), rows[0].at.as_str()), ("why Bob", "r1", "t2"));

        // Read back later: the removal took effect.
        let p = &db.pending().unwrap()[0];
        db.settle(
            "r2",
            "t3",
            &[Settlement { id: p.id, intent: &p.intent, outcome: Outcome::Done, result: "ok".into() }],
        )
        .unwrap();
        assert!(db.pending().unwrap().is_empty());
        let eve = db.history(&Filter { username: Some(&u("EVE")), since: None }).unwrap();
        assert_eq!(eve.len(), 1);
        assert_eq!(
            (eve[0].action, eve[0].group.as_deref(), eve[0].run_id.as_str()),
            (Action::RemovedFromGroup, Some("Lab Users"), "r2")
        );
    }

    #[test]
    fn a_reactivation_that_took_effect_clears_both_flags() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = open(dir.path());
        let mut managed = Managed::default();
        let entry = managed.seen(&u("carol"), Some(5), "t0");
        (entry.deactivated, entry.disabled_in_directory) = (true, true);
        db.save_managed(&Managed::default(), &managed).unwrap();
        let i = intent(Change::Reactivate, "Carol", 5);
        let id = db.intend("r1", "t1", std::slice::from_ref(&i)).unwrap()[0];
        db.settle("r1", "t1", &[Settlement { id, intent: &i, outcome: Outcome::Done, result: "ok".into() }]).unwrap();
        let carol = &db.load_managed().unwrap().users[&u("carol")];
        assert!(!carol.deactivated && !carol.disabled_in_directory);
    }

    /// A deactivation that found the user already inactive writes its audit row and settles its intent, and
    /// records nothing: the user is not this program's to reactivate. The control: a done one records it.
    #[test]
    fn a_deactivation_left_alone_settles_without_recording_the_user_as_deactivated() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = open(dir.path());
        let mut managed = Managed::default();
        managed.seen(&u("dan"), Some(4), "t0");
        managed.seen(&u("ed"), Some(6), "t0");
        db.save_managed(&Managed::default(), &managed).unwrap();
        let intents = [
            intent(Change::Deactivate { disabled_in_directory: false }, "dan", 4),
            intent(Change::Deactivate { disabled_in_directory: false }, "ed", 6),
        ];
        let ids = db.intend("r1", "t1", &intents).unwrap();
        let settled = [
            Settlement { id: ids[0], intent: &intents[0], outcome: Outcome::LeftAlone, result: "left alone".into() },
            Settlement { id: ids[1], intent: &intents[1], outcome: Outcome::Done, result: "ok".into() },
        ];
        db.settle("r1", "t1", &settled).unwrap();
        assert!(db.pending().unwrap().is_empty());
        let managed = db.load_managed().unwrap();
        assert!(!managed.users[&u("dan")].deactivated && managed.users[&u("ed")].deactivated);
        let dan = db.history(&Filter { username: Some(&u("dan")), since: None }).unwrap();
        assert_eq!((dan.len(), dan[0].result.as_str()), (1, "left alone"));
    }

    #[test]
    fn history_filters_by_user_and_time_and_pruning_drops_the_old_rows() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = open(dir.path());
        let row = |at: &str, user: Option<&str>, action| AuditRow {
            run_id: "r".into(),
            at: at.into(),
            action,
            username: user.map(Into::into),
            group: Some("Engineering".into()),
            reason: "member of Engineering".into(),
            result: "ok".into(),
        };
        db.record(&[
            row("2026-01-01T00:00:00Z", Some("Alice"), Action::Imported),
            row("2026-02-01T00:00:00Z", None, Action::GroupImported),
            row("2026-03-01T00:00:00Z", Some("alice"), Action::AddedToGroup),
            row("2026-03-02T00:00:00Z", Some("bob"), Action::Imported),
        ])
        .unwrap();
        let alice = u("ALICE");
        fn of(db: &Database, filter: Filter<'_>) -> Vec<String> {
            db.history(&filter).unwrap().iter().map(|r| r.at.clone()).collect()
        }
        assert_eq!(
            of(&db, Filter { username: Some(&alice), since: None }),
            ["2026-01-01T00:00:00Z", "2026-03-01T00:00:00Z"]
        );
        assert_eq!(
            of(&db, Filter { username: None, since: Some("2026-02-01T00:00:00Z") }),
            ["2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z", "2026-03-02T00:00:00Z"]
        );
        assert_eq!(db.prune("2026-03-01T00:00:00Z").unwrap(), 2);
        assert_eq!(of(&db, Filter::default()), ["2026-03-01T00:00:00Z", "2026-03-02T00:00:00Z"]);
    }

    #[test]
    fn count_since_takes_what_took_effect_in_the_window_and_the_calls_not_yet_known() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = open(dir.path());
        let row = |at: &str, action, result: &str| AuditRow {
            run_id: "r".into(),
            at: at.into(),
            action,
            username: Some("u".into()),
            group: None,
            reason: "why".into(),
            result: result.into(),
        };
        db.record(&[
            row("2026-12-01T05:59:59Z", Action::Deactivated, "ok"),
            row("2026-12-01T06:00:00Z", Action::Deactivated, "ok"),
            row("2026-12-01T07:00:00Z", Action::Deactivated, "ok (its answer was lost; read back: inactive)"),
            row("2026-12-01T07:00:00Z", Action::Deactivated, "failed: 503"),
            row("2026-12-01T07:00:00Z", Action::Deactivated, "not applied (its answer was lost; read back: active)"),
            row("2026-12-01T07:00:00Z", Action::Reactivated, "ok"),
            row("2026-12-01T07:00:00Z", Action::RemovedFromGroup, "ok"),
        ])
        .unwrap();
        let since = "2026-12-01T06:00:00Z";
        assert_eq!(
            db.count_since(Action::Deactivated, since).unwrap(),
            2,
            "the older row and the failures do not count"
        );
        assert_eq!(db.count_since(Action::RemovedFromGroup, since).unwrap(), 1);
        let removal = intent(Change::RemoveFromGroup { group: "Lab".into(), group_id: 3 }, "eve", 11);
        db.intend("r2", "2026-12-01T08:00:00Z", std::slice::from_ref(&removal)).unwrap();
        db.intend("r0", "2026-11-30T08:00:00Z", &[removal]).unwrap();
        assert_eq!(db.count_since(Action::RemovedFromGroup, since).unwrap(), 2, "an outcome not known yet counts");
        assert_eq!(db.count_since(Action::Deactivated, since).unwrap(), 2);
    }

    #[test]
    fn a_read_only_open_creates_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Database::open_read_only(dir.path()).unwrap().is_none());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing created");
        let mut db = open(dir.path());
        db.record(&[AuditRow {
            run_id: "r".into(),
            at: "t".into(),
            action: Action::Held,
            username: None,
            group: None,
            reason: "limit".into(),
            result: "held".into(),
        }])
        .unwrap();
        drop(db);
        let mut db = Database::open_read_only(dir.path()).unwrap().unwrap();
        assert_eq!(db.history(&Filter::default()).unwrap().len(), 1);
        assert!(matches!(db.prune("u"), Err(Error::Write { .. })), "read only");
    }

    #[test]
    fn forgetting_counts_takes_the_named_groups_or_all() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = open(dir.path());
        let mut counts = crate::state::Counts::default();
        for g in ["a", "b", "c"] {
            counts.record(g, 10);
        }
        db.save_counts(&Default::default(), &counts).unwrap();
        assert_eq!(db.forget_counts(&["b".into(), "zz".into()]).unwrap(), ["b"]);
        assert_eq!(db.load_counts().unwrap().by_group().len(), 2);
        assert_eq!(db.forget_counts(&[]).unwrap(), ["a", "c"]);
        assert!(db.load_counts().unwrap().by_group().is_empty());
    }
}
