//! The commands that read and edit `state.db` by hand: `history` (the audit trail, as a table or JSON, by user
//! and time) and `accept-shrink` (forgets the shrink guard's recorded counts). The real binary, on a database
//! seeded through the library; a configuration whose password files do not exist, as neither command reads one.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use chrono::{SecondsFormat, Utc};
use cloudshell_ldap_sync::state::Counts;
use cloudshell_ldap_sync::state::db::{Action, AuditRow, Database, Owner};
use serde_json::Value;

/// A configuration for `groups` keeping its state in `state` (`None`: no `[monitor] state_directory`), with
/// password files that do not exist.
fn config(dir: &Path, state: Option<&Path>, groups: &[&str]) -> PathBuf {
    let monitor = state.map(|s| format!("[monitor]\nstate_directory = \"{}\"\n", s.display())).unwrap_or_default();
    let text = format!(
        "[ldap]\nurl = \"ldap://127.0.0.1:1\"\nbind_dn = \"cn=x\"\nbind_password_file = \"/nonexistent/pw\"\n\
         base_dn = \"dc=x\"\n\n[cloudshell]\nurl = \"http://127.0.0.1:1\"\npassword_file = \"/nonexistent/pw\"\n\n\
         [sync]\ngroups = {}\n\n{monitor}",
        serde_json::to_string(groups).unwrap()
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn owner() -> Owner {
    Owner {
        config_path: "/etc/cloudshell-ldap-sync/config.toml".into(),
        directory_urls: vec!["ldap://127.0.0.1:1".into()],
        base_dn: "dc=x".into(),
        user_filter: "(objectClass=person)".into(),
        username_attribute: "uid".into(),
        cloudshell_url: "http://127.0.0.1:1/".into(),
    }
}

/// The binary with `args` and `--config config`, no `$STATE_DIRECTORY`: its exit code, stdout and stderr.
fn run(config: &Path, args: &[&str]) -> (i32, String, String) {
    let out: Output = Command::new(common::binary())
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("STATE_DIRECTORY")
        .env_remove("CLOUDSHELL_LDAP_SYNC_CONFIG")
        .env_remove("RUST_LOG")
        .output()
        .expect("running cloudshell-ldap-sync");
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    (out.status.code().expect("exited"), text(&out.stdout), text(&out.stderr))
}

/// `days` ago, as the rows' times are written.
fn ago(days: i64) -> String {
    (Utc::now() - chrono::Duration::days(days)).to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn row(days_ago: i64, run: &str, user: Option<&str>, action: Action, group: Option<&str>, reason: &str) -> AuditRow {
    AuditRow {
        run_id: run.into(),
        at: ago(days_ago),
        action,
        username: user.map(Into::into),
        group: group.map(Into::into),
        reason: reason.into(),
        result: "ok".into(),
    }
}

/// A state directory whose audit trail follows alice from import to reactivation, with bob beside her.
fn seeded(dir: &Path) -> PathBuf {
    let state = dir.join("state");
    let mut db = Database::open(&state, &owner()).unwrap();
    db.record(&[
        row(10, "run-a", None, Action::GroupImported, Some("Engineering"), "configured group"),
        row(10, "run-a", Some("Alice"), Action::Imported, Some("Engineering"), "member of Engineering"),
        row(9, "run-b", Some("bob"), Action::AddedToGroup, Some("Lab Users"), "member of Engineering"),
        row(5, "run-c", Some("alice"), Action::Deactivated, None, "left every configured group"),
        row(1, "run-d", Some("ALICE"), Action::Reactivated, None, "back in Engineering"),
    ])
    .unwrap();
    state
}

#[test]
fn history_shows_every_row_as_an_aligned_table_without_reading_a_password() {
    let dir = tempfile::tempdir().unwrap();
    let state = seeded(dir.path());
    let config = config(dir.path(), Some(&state), &["Engineering"]);
    // The service's user owns its state; `history` is run by root, as the runbook says.
    use std::os::unix::fs::MetadataExt;
    let root = std::fs::metadata(&config).unwrap().uid() == 0;
    let service = if root { 65534 } else { std::fs::metadata(&state).unwrap().uid() };
    for path in [state.clone(), state.join("state.db")] {
        std::os::unix::fs::chown(&path, Some(service), Some(service)).unwrap();
    }
    let before = std::fs::read(state.join("state.db")).unwrap();
    let (code, text, stderr) = run(&config, &["history"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("/nonexistent/pw"), "no password read: {stderr}");
    assert_eq!(std::fs::read(state.join("state.db")).unwrap(), before, "nothing written");
    for entry in std::fs::read_dir(&state).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().to_string();
        assert!(["state.db", "state.db-wal", "state.db-shm"].contains(&name.as_str()), "{name} made, no lock taken");
        // A read-only connection leaves these behind, and the service must write them: SQLite, run as root, gives
        // the files it makes to the database's owner.
        let owner = entry.metadata().unwrap();
        assert_eq!((owner.uid(), owner.gid()), (service, service), "{name} is the service's");
    }
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "a heading and five rows: {text}");
    let heading: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(heading, ["TIME", "RUN", "USER", "ACTION", "GROUP", "REASON", "RESULT"]);
    // Aligned: each column starts where its heading does.
    let column = |heading: &str| lines[0].find(heading).unwrap();
    for line in &lines[1..] {
        assert_eq!(&line[column("RUN")..column("RUN") + 4], "run-", "{text}");
        assert!(line.ends_with(" ok"), "{line}");
    }
    let group_import = lines[1];
    assert!(group_import.starts_with(&ago(10)[..10]), "oldest first: {text}");
    assert_eq!(&group_import[column("USER")..column("USER") + 2], "- ", "no user: {text}");
    assert!(group_import.contains("group imported") && group_import.contains("Engineering"), "{text}");
    let deactivated = lines[4];
    assert!(deactivated.contains("deactivated") && deactivated.contains("left every configured group"), "{text}");
    assert_eq!(&deactivated[column("GROUP")..column("GROUP") + 2], "- ", "no group: {text}");
    assert!(lines[5].contains("ALICE") && lines[5].contains("reactivated") && lines[5].contains("back in Engineering"));
}

#[test]
fn history_takes_a_user_in_any_case_and_a_since_and_prints_json() {
    let dir = tempfile::tempdir().unwrap();
    let state = seeded(dir.path());
    let config = config(dir.path(), Some(&state), &["Engineering"]);

    let (code, text, stderr) = run(&config, &["history", "aLiCe"]);
    assert_eq!(code, 0, "{stderr}");
    let actions: Vec<&str> = text.lines().skip(1).map(|l| l.split("  ").find(|c| c.ends_with("ed")).unwrap()).collect();
    assert_eq!(actions, ["imported", "deactivated", "reactivated"], "alice's rows only, whatever their case: {text}");

    let (code, json, stderr) = run(&config, &["history", "alice", "--json", "--since", "7d"]);
    assert_eq!(code, 0, "{stderr}");
    let json: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["state_database"], state.join("state.db").display().to_string());
    let entries = json["entries"].as_array().unwrap();
    let got: Vec<(&str, &str, &str)> = entries
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["run_id"].as_str().unwrap(), e["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        [("deactivated", "run-c", "left every configured group"), ("reactivated", "run-d", "back in Engineering")],
        "the last 7 days only"
    );
    assert_eq!(entries[0]["username"], "alice");
    assert_eq!(entries[0]["group"], Value::Null);
    let at = entries[0]["at"].as_str().unwrap();
    assert!(at > ago(6).as_str() && at < ago(4).as_str() && at.ends_with('Z'), "{at}");
    assert_eq!(entries[0]["result"], "ok");

    let (code, json, _) = run(&config, &["history", "--json"]);
    let json: Value = serde_json::from_str(&json).unwrap();
    assert_eq!((code, json["entries"].as_array().unwrap().len()), (0, 5));

    let (code, text, _) = run(&config, &["history", "--since", "12h"]);
    assert_eq!(code, 0, "nothing in the last 12 hours");
    assert!(text.starts_with("no history since ") && text.contains(&state.join("state.db").display().to_string()));
    let (code, text, _) = run(&config, &["history", "carol"]);
    assert_eq!(code, 0);
    assert_eq!(text, format!("no history for \"carol\" in {}\n", state.join("state.db").display()));
    let (code, json, _) = run(&config, &["history", "carol", "--json"]);
    assert_eq!((code, serde_json::from_str::<Value>(&json).unwrap()["entries"].clone()), (0, Value::Array(vec![])));
}

#[test]
fn history_without_a_usable_state_database_exits_2_saying_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let config = config(dir.path(), Some(&state), &["Engineering"]);
    let database = state.join("state.db").display().to_string();

    let (code, text, stderr) = run(&config, &["history"]);
    assert_eq!((code, text.as_str()), (2, ""), "{stderr}");
    assert!(stderr.contains(&format!("no state database {database}:")), "{stderr}");
    assert!(stderr.contains("no run has recorded anything there yet"), "{stderr}");

    std::fs::write(state.join("state.db"), vec![0x5a; 8192]).unwrap();
    let (code, _, stderr) = run(&config, &["history", "--json"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains(&format!("{database} is damaged")) && stderr.contains("move it aside"), "{stderr}");

    std::fs::remove_file(state.join("state.db")).unwrap();
    let newer = rusqlite::Connection::open(state.join("state.db")).unwrap();
    newer.execute_batch("CREATE TABLE future (x); PRAGMA user_version = 99;").unwrap();
    drop(newer);
    let (code, _, stderr) = run(&config, &["history"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("schema version 99") && stderr.contains("newer cloudshell-ldap-sync"), "{stderr}");

    // No state directory configured (nor $STATE_DIRECTORY): the default one, named as such.
    let default = Path::new("/var/lib/cloudshell-ldap-sync/state.db");
    if !default.exists() {
        let config = self::config(dir.path(), None, &["Engineering"]);
        let (code, _, stderr) = run(&config, &["history"]);
        assert_eq!(code, 2, "{stderr}");
        assert!(stderr.contains(&format!("no state database {}", default.display())), "{stderr}");
        assert!(stderr.contains("[monitor] state_directory is not set, nor $STATE_DIRECTORY"), "{stderr}");
        assert!(stderr.contains(&format!("set [monitor] state_directory in {}", config.display())), "{stderr}");
    }
}

#[test]
fn a_bad_since_or_a_blank_username_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let state = seeded(dir.path());
    let config = config(dir.path(), Some(&state), &["Engineering"]);
    let (code, text, stderr) = run(&config, &["history", "--since", "a month"]);
    assert_eq!((code, text.as_str()), (2, ""), "{stderr}");
    assert!(stderr.contains("\"a month\" is not a duration like \"30d\""), "with an example: {stderr}");
    let (code, _, stderr) = run(&config, &["history", "--since", "99999999999years"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--since") && !stderr.contains("panicked"), "{stderr}");
    let (code, _, stderr) = run(&config, &["history", "  "]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("a username is not blank"), "{stderr}");
}

/// A state database recording `counts`.
fn with_counts(dir: &Path, counts: &[(&str, usize)]) -> PathBuf {
    let state = dir.join("state");
    let mut db = Database::open(&state, &owner()).unwrap();
    let mut recorded = Counts::default();
    for (group, members) in counts {
        recorded.record(group, *members);
    }
    db.save_counts(&Counts::default(), &recorded).unwrap();
    state
}

fn counts(state: &Path) -> Vec<(String, usize)> {
    let db = Database::open_read_only(state).unwrap().unwrap();
    let mut counts: Vec<_> = db.load_counts().unwrap().by_group().into_iter().collect();
    counts.sort();
    counts
}

#[test]
fn accept_shrink_forgets_the_named_groups_counts_or_every_one() {
    let dir = tempfile::tempdir().unwrap();
    let state = with_counts(dir.path(), &[("Team", 10), ("Ops (EU)", 5), ("Old", 3)]);
    let config = config(dir.path(), Some(&state), &["Team", "ops (eu)", "Lab"]);

    // Named as the directory compares names; a group with no count said so.
    let (code, text, stderr) = run(&config, &["accept-shrink", "TEAM", "Lab"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("/nonexistent/pw"), "no password read: {stderr}");
    assert_eq!(
        text,
        "group \"Lab\": no recorded count\n\
         group \"Team\": forgot its recorded count (10 members); the next good run's count becomes the reference\n"
    );
    assert_eq!(counts(&state), [("Old".to_string(), 3), ("Ops (EU)".to_string(), 5)]);

    let (code, text, stderr) = run(&config, &["accept-shrink", "Nowhere"]);
    assert_eq!((code, text.as_str()), (2, ""), "{stderr}");
    assert!(stderr.contains("\"Nowhere\" is not a configured group"), "{stderr}");
    assert!(stderr.contains("the configured groups are \"Team\", \"ops (eu)\", \"Lab\""), "{stderr}");
    assert_eq!(counts(&state).len(), 2, "nothing forgotten");

    // A run in progress holds the lock: nothing forgotten.
    {
        let _run = cloudshell_ldap_sync::lock::acquire_for_run(Some(&state), &config).unwrap();
        let (code, text, stderr) = run(&config, &["accept-shrink"]);
        assert_eq!((code, text.as_str()), (1, ""), "{stderr}");
        assert!(stderr.contains("a run is in progress") && stderr.contains("try again"), "{stderr}");
        assert_eq!(counts(&state).len(), 2, "nothing forgotten");
    }

    let (code, text, stderr) = run(&config, &["accept-shrink"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(text.contains("group \"Ops (EU)\": forgot its recorded count (5 members)"), "{text}");
    assert!(text.contains("group \"Old\": forgot its recorded count (3 members)"), "every recorded one: {text}");
    assert_eq!(counts(&state), []);
    let (code, text, _) = run(&config, &["accept-shrink"]);
    assert_eq!((code, text.as_str()), (0, "no recorded count: nothing to forget\n"));
}

#[test]
fn accept_shrink_without_a_state_database_exits_2_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::write(state.join("groups.json"), r#"{"groups": {}}"#).unwrap();
    let config = config(dir.path(), Some(&state), &["Team"]);
    let (code, _, stderr) = run(&config, &["accept-shrink", "Team"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains(&format!("no state database {}", state.join("state.db").display())), "{stderr}");
    assert!(stderr.contains("groups.json") && stderr.contains("deleting that file accepts a shrink"), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(&state).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, ["groups.json"], "no database, no lock file created");
}

#[test]
fn history_of_a_trail_with_no_row_yet_says_so_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let state = with_counts(dir.path(), &[]);
    let config = config(dir.path(), Some(&state), &["Team"]);
    let (code, text, stderr) = run(&config, &["history"]);
    assert_eq!((code, text), (0, format!("no history in {}\n", state.join("state.db").display())), "{stderr}");
}
