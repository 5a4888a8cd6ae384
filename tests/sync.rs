//! The product's main job end to end: the real binary against a real slapd and the simulator.

mod common;

use std::path::PathBuf;
use std::process::Output;

use common::{Directory, Env, Stack};
use serde_json::{Value, json};

const IMPORT: &str = "/api/v1/integrations/IdentityManagement/users";

/// `Team`: alice, Bob and nested `Inner` (carol, dave). `Other`: erin, alice. `Synced`: JPorter.
/// `Big`: big00000..big00004. `Ghostly`: ghost (a user whose import CloudShell fails).
fn directory() -> Directory {
    let mut d = Directory::new();
    let alice = d.user("alice");
    let bob = d.user("Bob");
    let carol = d.user("carol");
    let dave = d.user("dave");
    let erin = d.user("erin");
    let jporter = d.user("JPorter");
    let inner = d.group("Inner", &[carol, dave]);
    d.group("Team", &[alice.clone(), bob, inner]);
    d.group("Other", &[erin, alice]);
    d.group("Synced", &[jporter]);
    let big = d.users("big", 5);
    d.group("Big", &big);
    let ghost = d.user("ghost");
    let fine = d.user("fine");
    d.group("Ghostly", &[ghost, fine]);
    d
}

impl Env {
    fn start(change: impl FnOnce(&mut cloudshell_sim::Config)) -> Env {
        Env(Stack::start(&directory(), |c| {
            c.existing_users = vec!["jporter".into(), "BOB".into()];
            change(c);
        }))
    }

    /// Writes a config for `groups`, with `extra` lines appended to `[sync]`, and returns its path.
    fn config(&self, groups: &[&str], ldap_url: Option<&str>, extra: &str) -> PathBuf {
        let ldap_url = ldap_url.map(str::to_string).unwrap_or_else(|| self.slapd.url());
        self.files.config(&ldap_url, &self.sim.url(), groups, extra, "")
    }

    fn run(&self, args: &[&str]) -> Output {
        common::cli(args)
    }

    fn sync_json(&self, config: &std::path::Path, extra: &[&str]) -> (i32, Value, String) {
        common::sync_json(config, extra)
    }

    async fn import_bodies(&self) -> Vec<Value> {
        self.sim.calls_to("POST", IMPORT).await.into_iter().map(|c| c["body"].clone()).collect()
    }

    async fn writes(&self) -> Vec<Value> {
        self.sim
            .calls()
            .await
            .into_iter()
            .filter(|c| {
                !(c["method"] == "GET"
                    || (c["method"] == "PUT" && c["path"].as_str().unwrap().eq_ignore_ascii_case("/Api/Auth/Login")))
            })
            .collect()
    }
}

use common::report_group as group;

#[tokio::test]
async fn first_run_imports_exactly_the_missing_effective_members_and_a_second_run_nothing() {
    let env = Env::start(|_| {});
    let config = env.config(&["Team", "Other", "Synced"], None, "");
    let (code, report, stderr) = env.sync_json(&config, &[]);
    assert_eq!(code, 0, "{report}\n{stderr}");
    assert_eq!(report["result"], "ok");
    let mut users = env.sim.usernames().await;
    users.sort_by_key(|u| u.to_lowercase());
    assert_eq!(users, ["admin", "alice", "BOB", "carol", "dave", "erin", "jporter"], "Bob and JPorter not duplicated");
    // Group by group; the nested group is imported by its own name (one call for carol and dave); Synced
    // and Other's alice (already imported with Team) need nothing beyond erin.
    assert_eq!(
        env.import_bodies().await,
        [json!({"GroupName": "Team"}), json!({"GroupName": "Inner"}), json!({"GroupName": "Other"})]
    );
    let team = group(&report, "Team");
    assert_eq!(
        (team["members"].as_u64(), team["missing"].as_u64(), team["imported"].as_u64()),
        (Some(4), Some(3), Some(3))
    );
    assert_eq!(group(&report, "Synced")["missing"], 0);
    assert_eq!(
        report["totals"],
        json!({"members": 6, "missing": 4, "imported": 4, "failed": 0, "disabled_deactivated": 0})
    );
    assert_eq!(report["api_calls"]["import_group"], 3);
    assert_eq!(report["api_calls"]["import_user"], 0);
    assert!(stderr.contains("run finished"), "{stderr}");
    assert!(stderr.contains("user imported"), "{stderr}");

    env.sim.clear_calls().await;
    let (code, report, _) = env.sync_json(&config, &[]);
    assert_eq!((code, report["totals"]["imported"].as_u64()), (0, Some(0)));
    assert!(env.import_bodies().await.is_empty(), "a second run makes no import call");
}

#[tokio::test]
async fn a_dry_run_makes_no_write_call() {
    let env = Env::start(|_| {});
    let config = env.config(&["Team", "Other"], None, "");
    let out = env.run(&["sync", "--dry-run", "--config", config.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("dry run") && stdout.contains("would import: alice, carol, dave"), "{stdout}");
    let (code, report, _) = env.sync_json(&config, &["--dry-run"]);
    assert_eq!(code, 0);
    assert_eq!((report["dry_run"].as_bool(), group(&report, "Team")["status"].as_str()), (Some(true), Some("planned")));
    assert_eq!(group(&report, "Other")["planned"], json!(["erin"]));
    assert!(env.writes().await.is_empty(), "{:?}", env.writes().await);
    assert_eq!(env.sim.usernames().await, ["admin", "jporter", "BOB"]);
}

#[tokio::test]
async fn a_group_above_the_import_limit_falls_back_and_ends_complete() {
    let env = Env::start(|c| c.group_import_limit = 3);
    let config = env.config(&["Big"], None, "");
    let (code, report, stderr) = env.sync_json(&config, &[]);
    assert_eq!(code, 0, "{report}\n{stderr}");
    assert!(stderr.contains("group import refused"), "{stderr}");
    let users = env.sim.usernames().await;
    for n in 0..5 {
        assert!(users.contains(&format!("big{n:05}")), "{users:?}");
    }
    assert_eq!(report["api_calls"]["import_group"], 1);
    assert_eq!(report["api_calls"]["import_user"], 5);
    assert_eq!(group(&report, "Big")["imported"], 5);
}

#[tokio::test]
async fn a_202_with_error_entries_exits_3_naming_the_failed_users() {
    let env = Env::start(|_| {});
    env.sim.set_faults(json!({"fail_import_users": ["ghost"]})).await;
    let config = env.config(&["Ghostly", "Other"], None, "");
    let (code, report, _) = env.sync_json(&config, &[]);
    assert_eq!(code, 3, "{report}");
    assert_eq!(report["result"], "partial");
    let ghostly = group(&report, "Ghostly");
    assert_eq!(ghostly["status"], "partial");
    assert_eq!(ghostly["failures"][0]["username"], "ghost");
    assert_eq!(ghostly["imported_users"], json!(["fine"]));
    assert_eq!(group(&report, "Other")["status"], "ok");
    assert!(env.sim.usernames().await.contains(&"erin".to_string()));
}

#[tokio::test]
async fn an_unreachable_directory_exits_1_without_writing() {
    let env = Env::start(|_| {});
    let port = common::free_port();
    let config = env.config(&["Team"], Some(&format!("ldap://127.0.0.1:{port}")), "");
    let (code, report, stderr) = env.sync_json(&config, &[]);
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["result"], "failed");
    assert!(report["error"].as_str().unwrap().contains(&format!("127.0.0.1:{port}")), "{report}");
    assert!(stderr.contains("directory unavailable"), "{stderr}");
    assert!(env.sim.calls().await.is_empty(), "CloudShell is not even contacted");
}

#[tokio::test]
async fn a_bad_cloudshell_password_exits_1_without_writing_or_echoing_it() {
    let env = Env::start(|_| {});
    let config = env.config(&["Team"], None, "");
    std::fs::write(env.files.path("cs-password"), "Wr0ng-Secret!").unwrap();
    let out = env.run(&["sync", "--config", config.to_str().unwrap()]);
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("refused the login"), "{all}");
    assert!(!all.contains("Wr0ng-Secret!"), "{all}");
    assert!(env.writes().await.is_empty());
}

#[tokio::test]
async fn an_unknown_config_key_exits_2_naming_the_key_and_line() {
    let env = Env::start(|_| {});
    let config = env.config(&["Team"], None, "max_import_per_run = 5");
    let out = env.run(&["sync", "--config", config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "config.toml:15:1: key sync.max_import_per_run: not a key of [sync]; did you mean max_imports_per_run?"
        ),
        "{stderr}"
    );
    assert!(env.sim.calls().await.is_empty());
}

#[tokio::test]
async fn a_group_missing_from_the_directory_fails_alone_and_the_others_sync() {
    let env = Env::start(|_| {});
    let config = env.config(&["No Such Group", "Other"], None, "");
    let (code, report, stderr) = env.sync_json(&config, &[]);
    assert_eq!(code, 3, "{report}");
    let missing = group(&report, "No Such Group");
    assert_eq!((missing["status"].as_str(), missing["error_kind"].as_str()), (Some("failed"), Some("group_not_found")));
    assert!(stderr.contains("group enumeration failed"), "{stderr}");
    assert_eq!(group(&report, "Other")["imported"], 2);
    assert_eq!(env.import_bodies().await, [json!({"GroupName": "Other"})]);
}

#[tokio::test]
async fn more_planned_imports_than_the_limit_exit_4_without_writing() {
    let env = Env::start(|_| {});
    let config = env.config(&["Team", "Other"], None, "max_imports_per_run = 3");
    let (code, report, stderr) = env.sync_json(&config, &[]);
    assert_eq!(code, 4, "{report}");
    assert_eq!(report["result"], "held");
    assert_eq!(report["held"], json!({"planned": 4, "limit": 3}));
    assert!(stderr.contains("import limit exceeded, writes held"), "{stderr}");
    assert!(env.writes().await.is_empty());
}

#[tokio::test]
async fn check_reports_groups_and_login_and_writes_nothing() {
    let env = Env::start(|_| {});
    let config = env.config(&["Team", "Big"], None, "");
    let out = env.run(&["check", "--config", config.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("group \"Team\": 4 members (1 nested groups, 0 disabled left out)"), "{stdout}");
    assert!(stdout.contains("group \"Big\": 5 members"), "{stdout}");
    assert!(stdout.contains("logged in as \"admin\""), "{stdout}");

    let config = env.config(&["Team", "Nope"], None, "");
    let out = env.run(&["check", "--config", config.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("group \"Nope\": FAILED: group \"Nope\" not found"), "{stdout}");
    assert!(env.writes().await.is_empty());
}

#[tokio::test]
async fn sigterm_stops_a_sync_between_calls_and_reports_it() {
    let env = Env::start(|c| c.group_import_limit = 3);
    env.sim.set_faults(json!({"latency_ms": 500})).await;
    let config = env.config(&["Big"], None, "");
    std::fs::write(
        &config,
        std::fs::read_to_string(&config).unwrap().replace("timeout = \"10s\"", "timeout = \"10s\"\nconcurrency = 1"),
    )
    .unwrap();
    let child = std::process::Command::new(common::binary())
        .args(["sync", "--json", "--config", config.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the first per-user import to be in flight, then ask the run to stop.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let calls = env.sim.calls_to("POST", "/api/v1/integrations/IdentityManagement/users").await;
        if calls.iter().any(|c| c["body"].get("UserName").is_some() && c["state"] == "in_flight") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no user import started: {calls:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let out = child.wait_with_output().unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(3), "{report}");
    assert_eq!((report["interrupted"].as_bool(), report["result"].as_str()), (Some(true), Some("partial")));
    assert_eq!(group(&report, "Big")["status"], "skipped");
    let users: Vec<Value> = env
        .sim
        .calls_to("POST", "/api/v1/integrations/IdentityManagement/users")
        .await
        .into_iter()
        .filter(|c| c["body"].get("UserName").is_some())
        .collect();
    assert_eq!(users.len(), 1, "no call after the stop request: {users:?}");
    assert_eq!((users[0]["state"].as_str(), users[0]["status"].as_u64()), (Some("done"), Some(200)));
}

#[tokio::test]
async fn json_logs_carry_the_run_id_and_the_group_with_each_event() {
    let env = Env::start(|_| {});
    let config = env.config(&["Other"], None, "");
    let (code, report, stderr) = env.sync_json(&config, &["--log-format", "json"]);
    assert_eq!(code, 0, "{report}");
    let lines: Vec<Value> =
        stderr.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    let imported = lines.iter().find(|l| l["fields"]["message"] == "user imported").expect("a user imported event");
    assert_eq!(imported["fields"]["group"], "Other");
    assert!(imported["fields"]["username"] == "alice" || imported["fields"]["username"] == "erin", "{imported}");
    assert_eq!(imported["span"]["run_id"], report["run_id"], "{imported}");
    assert_eq!(imported["span"]["group"], "Other");
    let finished = lines.iter().find(|l| l["fields"]["message"] == "run finished").expect("a summary event");
    assert_eq!(finished["span"]["run_id"], report["run_id"]);
    assert_eq!(finished["fields"]["imported"], 2);
}

#[tokio::test]
async fn two_syncs_started_together_never_run_at_once() {
    let env = Env::start(|_| {});
    // Every answer takes 200 ms, so the first run is still going when the second starts.
    env.sim.set_faults(json!({"latency_ms": 200})).await;
    let state = env.files.path("state");
    let sections = format!("[monitor]\nstate_directory = \"{}\"\n", state.display());
    let config = env.files.config(&env.slapd.url(), &env.sim.url(), &["Team", "Other"], "", &sections);
    let start = || {
        std::process::Command::new(common::binary())
            .args(["sync", "--json", "--config", config.to_str().unwrap()])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (first, second) = (start(), start());
    let outs = [first.wait_with_output().unwrap(), second.wait_with_output().unwrap()];

    let mut codes: Vec<i32> = outs.iter().map(|o| o.status.code().unwrap()).collect();
    codes.sort();
    assert_eq!(codes, [0, 5], "one ran, the other was refused");
    let refused = outs.iter().find(|o| o.status.code() == Some(5)).unwrap();
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("another cloudshell-ldap-sync run holds") && message.contains("run.lock"), "{message}");
    assert!(refused.stdout.is_empty(), "the refused run reports nothing");
    let bodies = env.import_bodies().await;
    let mut unique = bodies.clone();
    unique.dedup();
    assert_eq!(bodies.len(), unique.len(), "nobody imported twice: {bodies:?}");
    let ran = outs.iter().find(|o| o.status.code() == Some(0)).unwrap();
    let report: Value = serde_json::from_slice(&ran.stdout).unwrap();
    assert_eq!(report["totals"]["imported"], 4, "alice, carol, dave and erin, counted once: {report}");
}

#[tokio::test]
async fn a_user_created_by_someone_else_meanwhile_is_already_present_not_imported() {
    // Big's five members are imported one by one (over the group import limit of 1).
    let env = Env::start(|c| c.group_import_limit = 1);
    // CloudShell's user list is read, then answered late; meanwhile an administrator creates big00002.
    env.sim
        .set_faults(json!({"slow": {"count": 1, "delay_ms": 1500, "method": "GET", "path_contains": "/api/v1/users"}}))
        .await;
    let config = env.config(&["Big"], None, "");
    let run = tokio::task::spawn_blocking(move || common::sync_json(&config, &[]));
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    env.sim.add_users(&["big00002"]).await;
    let (code, report, stderr) = run.await.unwrap();

    assert_eq!(code, 0, "{report}\n{stderr}");
    let big = group(&report, "Big");
    assert_eq!((big["imported"].as_u64(), big["already_present"].as_u64()), (Some(4), Some(1)), "{big}");
    assert!(!big["imported_users"].as_array().unwrap().contains(&json!("big00002")), "{big}");
    assert_eq!(report["totals"]["imported"], 4);
    assert!(stderr.contains("user already present"), "{stderr}");
}

#[tokio::test]
async fn usernames_holding_control_characters_are_skipped_never_logged_raw_nor_sent() {
    let mut d = directory();
    let people = common::PEOPLE;
    let odd = [
        ("ctrl-newline", "evil\nINFO forged: admin imported"),
        ("ctrl-ansi", "\u{1b}[31mred"),
        ("ctrl-nul", "nul\0byte"),
    ];
    let mut members = Vec::new();
    for (cn, uid) in odd {
        members.push(d.user_at(&format!("cn={cn},{people}"), uid, cn));
    }
    members.push(d.user("plain"));
    d.group("Odd", &members);
    let env = Env(Stack::start(&d, |_| {}));
    let config = env.config(&["Odd"], None, "");

    let (code, report, stderr) = env.sync_json(&config, &[]);

    assert_eq!(code, 0, "{report}\n{stderr}");
    assert_eq!(group(&report, "Odd")["members"], 1, "only plain: {report}");
    assert_eq!(env.sim.usernames().await, ["admin", "plain"]);
    assert_eq!(stderr.matches("username holds a control character").count(), 3, "{stderr}");
    assert!(
        !stderr.contains("forged: admin imported\n") && !stderr.contains('\u{1b}') && !stderr.contains('\0'),
        "{stderr}"
    );
}

#[tokio::test]
async fn dangling_members_are_logged_once_per_group_with_every_control_character_escaped() {
    let mut d = directory();
    let people = common::PEOPLE;
    let plain = d.user("plain");
    let mut members = vec![plain];
    // A reference to a deleted entry whose DN would forge a log line and recolour the terminal, and 79 more.
    // (slapd refuses a NUL in a DN; usernames with one are tested above.)
    members.push(format!("cn=ghost\nINFO forged: admin imported\u{1b}[2J\r,{people}"));
    members.extend((0..79).map(|n| format!("uid=gone{n},{people}")));
    d.group("Haunted", &members);
    let env = Env(Stack::start(&d, |_| {}));
    let config = env.config(&["Haunted"], None, "");

    let (code, report, stderr) = env.sync_json(&config, &[]);

    assert_eq!(code, 0, "{report}\n{stderr}");
    assert_eq!(group(&report, "Haunted")["members"], 1, "{report}");
    let skipped: Vec<&str> = stderr.lines().filter(|l| l.contains("member skipped")).collect();
    assert_eq!(skipped.len(), 1, "one event for the group, not 80: {stderr}");
    assert!(skipped[0].contains("count=80") && skipped[0].contains("sample="), "{}", skipped[0]);
    assert!(skipped[0].contains("cn=ghost\\nINFO forged"), "shown escaped: {}", skipped[0]);
    assert!(!stderr.lines().any(|l| l.starts_with("INFO forged")), "{stderr}");
    assert!(!stderr.contains('\u{1b}') && !stderr.contains('\r'), "{stderr:?}");
}
