//! The state database end to end (the real binary, slapd, the simulator): what this program did survives a
//! lost answer and a crash at any point, is migrated from the JSON files of earlier versions, and a database
//! it cannot trust stops the run before anything is sent.

mod common;

use std::path::PathBuf;

use cloudshell_ldap_sync::state::db::{Action, Database, Filter};
use cloudshell_ldap_sync::username::Username;
use common::{Directory, Env, GROUPS, PEOPLE, Stack};
use serde_json::{Value, json};

/// `Team`: alice, bob, carol. `Other`: dave.
fn directory() -> Directory {
    common::team_and_other()
}

impl Env {
    fn start() -> Env {
        Env(Stack::start(&directory(), |_| {}))
    }

    fn state(&self) -> PathBuf {
        self.files.path("state")
    }

    /// Both groups, leavers deactivated (limits raised: the rules under test are the state's), a state directory.
    fn config(&self) -> PathBuf {
        let sections = format!(
            "[sync.leavers]\naction = \"deactivate\"\nmax_percent = 100\nmax_percent_per_day = 100\n\n[monitor]\nstate_directory = \"{}\"\n",
            self.state().display()
        );
        self.files.config(&self.slapd.url(), &self.sim.url(), &["Team", "Other"], "max_shrink_percent = 100", &sections)
    }

    fn member(&self, change: &str, group: &str, user: &str) {
        self.slapd.modify(&format!(
            "dn: cn={group},{GROUPS}\nchangetype: modify\n{change}: member\nmember: uid={user},{PEOPLE}\n\n"
        ));
    }

    async fn active(&self, username: &str) -> bool {
        self.sim.is_active(username).await
    }

    fn database(&self) -> Database {
        Database::open_read_only(&self.state()).unwrap().expect("a state.db")
    }

    /// The audit rows about `username`, as (action, result).
    fn history(&self, username: &str) -> Vec<(Action, String)> {
        let user = Username::new(username).unwrap();
        let rows = self.database().history(&Filter { username: Some(&user), since: None }).unwrap();
        rows.into_iter().map(|r| (r.action, r.result)).collect()
    }
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array().unwrap_or_else(|| panic!("not a list: {v}")).iter().map(|s| s.as_str().unwrap()).collect()
}

/// The reproduction from the issue: CloudShell applies the deactivation and the answer is lost on every retry.
/// Before state.db, the user was recorded as not deactivated and never reactivated on return.
#[tokio::test]
async fn a_deactivation_whose_answer_was_lost_is_read_back_as_done_and_undone_on_return() {
    let env = Env::start();
    let config = env.config();
    assert_eq!(common::sync_json(&config, &[]).0, 0);
    env.member("delete", "Team", "bob");
    // Every PUT to a user takes effect, and its connection is cut before the answer: each retry too.
    env.sim.set_faults(json!({"reset": {"count": 20, "method": "PUT", "path_contains": "/api/v1/users/"}})).await;
    let (code, report, stderr) = common::sync_json(&config, &[]);
    assert_eq!(code, 3, "{report}\n{stderr}");
    assert!(!env.active("bob").await, "CloudShell applied it");
    let failure = &report["leavers"]["failures"][0];
    assert_eq!(failure["username"], "bob", "{report}");
    assert!(failure["reason"].as_str().unwrap().contains("the next run reads back"), "{failure}");
    let pending = env.database().pending().unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert!(pending[0].answer_lost && pending[0].intent.username.as_str() == "bob");

    env.sim.clear_faults().await;
    let (code, report, stderr) = common::sync_json(&config, &[]);
    assert_eq!(code, 0, "{report}\n{stderr}");
    assert!(stderr.contains("intent settled"), "{stderr}");
    assert!(env.database().pending().unwrap().is_empty());
    let bob = env.history("bob");
    let (action, result) = bob.last().unwrap();
    assert_eq!(*action, Action::Deactivated);
    assert!(result.starts_with("ok (its answer was lost; read back: inactive)"), "{result}");
    assert_eq!(report["api_calls"]["edit_user"], 0, "nothing sent again: {report}");
    assert!(report["state_ms"].is_u64(), "the time spent in the state database is reported: {report}");

    // Back: reactivated, because the record says this program deactivated him.
    env.member("add", "Team", "bob");
    let (code, report, _) = common::sync_json(&config, &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(strings(&report["leavers"]["reactivated"]), ["bob"]);
    assert!(env.active("bob").await);
    assert_eq!(env.history("bob").last().unwrap(), &(Action::Reactivated, "ok".to_string()));
}

/// users.json and groups.json as earlier versions wrote them (the same serialisation): a dry run reads them and
/// creates nothing; the first run that writes migrates them and acts on what they held.
#[tokio::test]
async fn the_json_state_of_earlier_versions_is_migrated_on_the_first_run_that_writes() {
    let env = Env::start();
    let config = env.config();
    assert_eq!(common::sync_json(&config, &[]).0, 0);
    env.member("delete", "Team", "bob");
    let (code, report, _) = common::sync_json(&config, &[]);
    assert_eq!((code, strings(&report["leavers"]["deactivated"])), (0, vec!["bob"]), "{report}");
    // Turn the state back into the files an earlier version kept.
    let db = env.database();
    let (managed, counts) = (db.load_managed().unwrap(), db.load_counts().unwrap());
    drop(db);
    assert!(managed.users[&Username::new("bob").unwrap()].deactivated);
    for name in ["state.db", "state.db-wal", "state.db-shm"] {
        let _ = std::fs::remove_file(env.state().join(name));
    }
    cloudshell_ldap_sync::state::save_managed(&env.state(), &managed).unwrap();
    cloudshell_ldap_sync::state::save(&env.state(), &counts).unwrap();
    let users_json = std::fs::read(env.state().join("users.json")).unwrap();
    env.member("add", "Team", "bob");

    let (code, report, _) = common::sync_json(&config, &["--dry-run"]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["leavers"]["managed"], 4, "read from users.json: {report}");
    assert!(!env.state().join("state.db").exists(), "a dry run creates no database");
    assert_eq!(std::fs::read(env.state().join("users.json")).unwrap(), users_json);

    let (code, report, stderr) = common::sync_json(&config, &[]);
    assert_eq!(code, 0, "{report}\n{stderr}");
    assert!(stderr.contains("state file migrated"), "{stderr}");
    assert_eq!(strings(&report["leavers"]["reactivated"]), ["bob"], "the migrated record: {report}");
    assert!(env.active("bob").await);
    for name in ["users.json", "groups.json"] {
        assert!(!env.state().join(name).exists(), "{name}");
        assert!(env.state().join(format!("{name}.migrated")).exists(), "{name} kept aside");
    }
    // Other's count is unchanged since: its row is the migrated one, its time as the file had it.
    let now = serde_json::to_value(env.database().load_counts().unwrap()).unwrap();
    let then = serde_json::to_value(&counts).unwrap();
    assert_eq!(now["groups"]["Other"], then["groups"]["Other"], "the shrink guard's counts came across");
    assert_eq!(
        (now["groups"]["Team"]["members"].as_u64(), then["groups"]["Team"]["members"].as_u64()),
        (Some(3), Some(2))
    );
}

/// A database written by a newer version, or damaged: refused before anything is read or sent, left as it is.
#[tokio::test]
async fn a_database_from_a_newer_version_stops_the_run_before_anything_is_sent() {
    let env = Env::start();
    let config = env.config();
    std::fs::create_dir_all(env.state()).unwrap();
    let path = env.state().join("state.db");
    let connection = rusqlite::Connection::open(&path).unwrap();
    connection.execute_batch("CREATE TABLE later (x); PRAGMA user_version = 99;").unwrap();
    drop(connection);
    let before = std::fs::read(&path).unwrap();
    for extra in [&[][..], &["--dry-run"][..]] {
        let (code, report, _) = common::sync_json(&config, extra);
        assert_eq!(code, 1, "{extra:?}: {report}");
        let error = report["error"].as_str().unwrap();
        assert!(error.contains("schema version 99") && error.contains("newer cloudshell-ldap-sync"), "{error}");
        assert!(env.sim.calls().await.is_empty(), "nothing sent, not even a login");
    }
    assert_eq!(std::fs::read(&path).unwrap(), before);
    // The positive control: without it, the same configuration runs.
    std::fs::remove_file(&path).unwrap();
    let (code, report, _) = common::sync_json(&config, &[]);
    assert_eq!(code, 0, "{report}");
    assert!(!env.sim.calls().await.is_empty());
}

/// Starts `sync` and kills it (SIGKILL) while CloudShell holds its deactivation call: held before the call takes
/// effect (`applied = false`: a crash between the intent and the call) or after (`applied = true`: a crash
/// between the call and its outcome).
async fn kill_during_a_deactivation(env: &Env, config: &std::path::Path, applied: bool) {
    let hold = json!({"count": 1, "delay_ms": 120_000, "method": "PUT", "path_contains": "/api/v1/users/",
                      "before_processing": !applied});
    env.sim.set_faults(json!({ "slow": hold })).await;
    env.sim.clear_calls().await;
    let mut child = std::process::Command::new(common::binary())
        .args(["sync", "--json", "--config"])
        .arg(config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        let calls = env.sim.calls().await;
        let held = calls.iter().any(|c| c["method"] == "PUT" && c["state"] == "in_flight");
        if held {
            break;
        }
        assert!(started.elapsed().as_secs() < 60, "the deactivation never reached CloudShell: {calls:?}");
        assert!(child.try_wait().unwrap().is_none(), "sync ended before its deactivation: {calls:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    env.sim.clear_faults().await;
}

#[tokio::test]
async fn a_crash_before_or_after_the_call_takes_effect_is_settled_from_cloudshell_at_the_next_run() {
    let env = Env::start();
    let config = env.config();
    assert_eq!(common::sync_json(&config, &[]).0, 0);

    // Killed between the intent and the call: nothing happened in CloudShell.
    env.member("delete", "Team", "bob");
    kill_during_a_deactivation(&env, &config, false).await;
    assert!(env.active("bob").await, "the call never took effect");
    let pending = env.database().pending().unwrap();
    assert_eq!((pending.len(), pending[0].answer_lost), (1, false), "{pending:?}");
    let (code, report, stderr) = common::sync_json(&config, &[]);
    assert_eq!(code, 0, "{report}\n{stderr}");
    let bob = env.history("bob");
    assert_eq!(bob[bob.len() - 2].0, Action::Deactivated);
    assert!(
        bob[bob.len() - 2].1.starts_with("not applied (the run that sent it ended first; read back: active)"),
        "{bob:?}"
    );
    // The control: still a leaver, so deactivated now, for real.
    assert_eq!(strings(&report["leavers"]["deactivated"]), ["bob"], "{report}");
    assert_eq!(bob.last().unwrap(), &(Action::Deactivated, "ok".to_string()));
    assert!(!env.active("bob").await);
    env.member("add", "Team", "bob");
    assert_eq!(strings(&common::sync_json(&config, &[]).1["leavers"]["reactivated"]), ["bob"]);

    // Killed between the call and its outcome: CloudShell applied it; the user comes back before the next run.
    env.member("delete", "Team", "bob");
    kill_during_a_deactivation(&env, &config, true).await;
    assert!(!env.active("bob").await, "the call took effect");
    env.member("add", "Team", "bob");
    let (code, report, stderr) = common::sync_json(&config, &[]);
    assert_eq!(code, 0, "{report}\n{stderr}");
    assert!(env.database().pending().unwrap().is_empty());
    let bob = env.history("bob");
    assert!(bob[bob.len() - 2].1.starts_with("ok (the run that sent it ended first; read back: inactive)"), "{bob:?}");
    assert_eq!(strings(&report["leavers"]["reactivated"]), ["bob"], "reactivated on return: {report}");
    assert!(env.active("bob").await);
}

/// At the end of a run, audit rows older than `monitor.history_retention` (400 days by default) are pruned.
#[tokio::test]
async fn history_older_than_the_retention_is_pruned_at_the_end_of_a_run() {
    let env = Env::start();
    let config = env.config();
    assert_eq!(common::sync_json(&config, &[]).0, 0);
    let text = std::fs::read_to_string(&config).unwrap();
    let parsed = cloudshell_ldap_sync::config::parse(&config, &text, &|_| Some("x".into())).unwrap();
    let mut db = Database::open(&env.state(), &cloudshell_ldap_sync::state::db::Owner::of(&parsed)).unwrap();
    let row = |at: &str, user: &str| cloudshell_ldap_sync::state::db::AuditRow {
        run_id: "old".into(),
        at: at.into(),
        action: Action::Imported,
        username: Some(user.into()),
        group: Some("Team".into()),
        reason: "member of Team, missing from CloudShell".into(),
        result: "ok".into(),
    };
    let recent =
        humantime::format_rfc3339_seconds(std::time::SystemTime::now() - std::time::Duration::from_secs(86400));
    db.record(&[row("2020-01-01T00:00:00Z", "erin"), row(&recent.to_string(), "frank")]).unwrap();
    drop(db);
    let (code, report, stderr) = common::sync_json(&config, &[]);
    assert_eq!(code, 0, "{report}");
    assert!(stderr.contains("audit trail pruned"), "{stderr}");
    assert!(env.history("erin").is_empty(), "older than 400 days: pruned");
    assert_eq!(env.history("frank").len(), 1, "a day old: kept");
}

/// `history` for one user through their import, placement, deactivation with removal, and return: what was done,
/// when, in which run and why, as text and as JSON.
#[tokio::test]
async fn history_tells_one_users_story_from_import_to_return() {
    let env = Env::start();
    let mapping = "max_shrink_percent = 100\nremove_from_groups = true\n\n[[sync.mapping]]\ndirectory_group = \"Team\"\ncloudshell_groups = [\"Lab Users\"]\n";
    let sections = format!(
        "[sync.leavers]\naction = \"deactivate\"\nmax_percent = 100\nmax_percent_per_day = 100\n\n[monitor]\nstate_directory = \"{}\"\n",
        env.state().display()
    );
    let config = env.files.config(&env.slapd.url(), &env.sim.url(), &["Team", "Other"], mapping, &sections);
    let run = |expected: &str| {
        let (code, report, stderr) = common::sync_json(&config, &[]);
        assert_eq!(code, 0, "{report}\n{stderr}");
        assert_eq!(report["result"], expected);
        report["run_id"].as_str().unwrap().to_string()
    };
    let first = run("ok");
    env.member("delete", "Team", "bob");
    let second = run("ok");
    assert!(!env.active("bob").await);
    env.member("add", "Team", "bob");
    let third = run("ok");
    assert!(env.active("bob").await);

    let out = common::cli(&["history", "BOB", "--json", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let story: Vec<(&str, &str, &str, &str, &str)> = json["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let field = |k: &str| e[k].as_str().unwrap_or("-");
            (field("run_id"), field("action"), field("group"), field("reason"), field("result"))
        })
        .collect();
    let expected = [
        (first.as_str(), "imported", "Team", "member of Team, missing from CloudShell", "ok"),
        (first.as_str(), "added_to_group", "Lab Users", "member of Team", "ok"),
        (
            second.as_str(),
            "removed_from_group",
            "Lab Users",
            "in none of the directory groups mapped to Lab Users (Team)",
            "ok",
        ),
        (second.as_str(), "deactivated", "-", "left every configured group", "ok"),
        (third.as_str(), "added_to_group", "Lab Users", "member of Team", "ok"),
        (third.as_str(), "reactivated", "-", "back in Team", "ok"),
    ];
    let mut sorted = story.clone();
    sorted.sort_by_key(|(run, action, ..)| (*run == third, *run == second, *action));
    let mut wanted = expected.to_vec();
    wanted.sort_by_key(|(run, action, ..)| (*run == third, *run == second, *action));
    assert_eq!(sorted, wanted, "{json:#}");
    assert!(json["entries"].as_array().unwrap().iter().all(|e| e["username"] == "bob"), "{json:#}");

    let out = common::cli(&["history", "bob", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    for words in [
        "imported",
        "added to group",
        "removed from group",
        "deactivated",
        "reactivated",
        "back in Team",
        "left every configured group",
    ] {
        assert!(text.contains(words), "{words:?} in:\n{text}");
    }
    assert_eq!(text.lines().filter(|l| l.contains(" bob ")).count(), 6, "{text}");
}
