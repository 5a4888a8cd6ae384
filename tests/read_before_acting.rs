//! Deactivations and reactivations rest only on what CloudShell said, end to end (the binary, slapd and the
//! simulator, `action = "deactivate"` and no limit in the way): a user whose `IsActive` is not said is never
//! changed, as a leaver or as a disabled account; a user found already inactive is not taken for this program's
//! deactivation, so never reactivated; only the CloudShell id this program deactivated is reactivated;
//! `grace_period` waits in time. Each test has its control: a real leaver still deactivated (or reactivated).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{Directory, Env, GROUPS, PEOPLE, Stack};
use serde_json::{Value, json};

const DEACTIVATE: &str = "action = \"deactivate\"\nmax_percent = 100";

/// `Team`: alice, bob, carol, dave.
fn start() -> Env {
    let mut d = Directory::new();
    let members = ["alice", "bob", "carol", "dave"].map(|u| d.user(u));
    d.group("Team", &members);
    Env(Stack::start(&d, |_| {}))
}

/// A config syncing `Team` with `leavers` lines in `[sync.leavers]`, a state directory and no shrink guard in
/// the way.
fn config(env: &Env, leavers: &str) -> PathBuf {
    let state = env.files.path("state");
    // The daily percentage raised too: a handful of users cannot pass its default of 20 %.
    let sections = format!(
        "[sync.leavers]\n{leavers}\nmax_percent_per_day = 100\n\n[monitor]\nstate_directory = \"{}\"\n",
        state.display()
    );
    env.files.config(&env.slapd.url(), &env.sim.url(), &["Team"], "max_shrink_percent = 100", &sections)
}

fn membership(env: &Env, change: &str, user: &str) {
    env.slapd.modify(&format!(
        "dn: cn=Team,{GROUPS}\nchangetype: modify\n{change}: member\nmember: uid={user},{PEOPLE}\n\n"
    ));
}

/// The user as CloudShell holds it (every field, whatever the API leaves out).
async fn user(env: &Env, username: &str) -> Value {
    let state = env.sim.state().await;
    let found = state["users"].as_array().unwrap().iter().find(|u| u["Username"] == username).cloned();
    found.unwrap_or_else(|| panic!("{username} is not in CloudShell"))
}

async fn active(env: &Env, username: &str) -> bool {
    user(env, username).await["IsActive"] == json!(true)
}

/// The PUTs to user `id` so far.
async fn puts_to(env: &Env, id: &Value) -> usize {
    env.sim.calls_to("PUT", &format!("/api/v1/users/{id}")).await.len()
}

fn leavers(report: &Value) -> &Value {
    report.get("leavers").unwrap_or_else(|| panic!("no leavers in {report}"))
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array().unwrap_or_else(|| panic!("not a list: {v}")).iter().map(|s| s.as_str().unwrap()).collect()
}

/// `(username, reason)` of the step's `left_alone` lines.
fn left_alone(step: &Value) -> Vec<(String, String)> {
    let lines = step.get("left_alone").and_then(Value::as_array).cloned().unwrap_or_default();
    lines.iter().map(|l| (l["username"].as_str().unwrap().into(), l["reason"].as_str().unwrap().into())).collect()
}

#[tokio::test]
async fn a_user_whose_is_active_is_not_said_is_never_deactivated_and_is_reported() {
    let env = start();
    let config = config(&env, DEACTIVATE);
    assert_eq!(common::sync_json(&config, &[]).0, 0);
    let bob_id = user(&env, "bob").await["Id"].clone();
    env.sim.change_users(json!({"usernames": ["bob"], "omit_fields": ["IsActive"]})).await;
    membership(&env, "delete", "bob");
    membership(&env, "delete", "carol");

    let (code, report, stderr) = common::sync_json(&config, &[]);

    assert_eq!(code, 0, "{report}\n{stderr}");
    let step = leavers(&report);
    assert_eq!(strings(&step["deactivated"]), ["carol"], "the control: a known leaver is deactivated: {step}");
    let bob = step["leavers"].as_array().unwrap().iter().find(|l| l["username"] == "bob").unwrap();
    assert_eq!(
        (bob["standing"].as_str(), bob["reason"].as_str()),
        (Some("protected"), Some("IsActive unknown in CloudShell"))
    );
    assert!(active(&env, "bob").await && !active(&env, "carol").await);
    assert_eq!(puts_to(&env, &bob_id).await, 0, "bob is never written");
    let text = common::cli(&["sync", "--dry-run", "--config", config.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("bob protected (IsActive unknown in CloudShell)"), "{text}");
}

#[tokio::test]
async fn a_user_found_already_inactive_is_not_taken_over_and_not_reactivated_when_back() {
    let env = start();
    let config = config(&env, DEACTIVATE);
    assert_eq!(common::sync_json(&config, &[]).0, 0);
    let bob_id = user(&env, "bob").await["Id"].clone();
    // dave: an administrator deactivates him before the run. bob: while the run is about to (its read of him
    // is held until the test has deactivated him, after the run listed him active).
    env.sim.change_users(json!({"usernames": ["dave"], "is_active": false})).await;
    for u in ["bob", "carol", "dave"] {
        membership(&env, "delete", u);
    }
    let bob_path = format!("/api/v1/users/{bob_id}");
    let hold = json!({"slow": {
        "count": 1, "delay_ms": 1500, "method": "GET", "path_contains": bob_path, "before_processing": true
    }});
    env.sim.set_faults(hold).await;
    let run = tokio::task::spawn_blocking({
        let config = config.clone();
        move || common::sync_json(&config, &[])
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while env.sim.calls_to("GET", &bob_path).await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the run never read bob");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    env.sim.change_users(json!({"usernames": ["bob"], "is_active": false})).await;
    let (code, report, stderr) = run.await.unwrap();

    assert_eq!(code, 0, "left alone is not a failure: {report}\n{stderr}");
    let step = leavers(&report);
    assert_eq!(strings(&step["deactivated"]), ["carol"], "the control: {step}");
    assert_eq!(left_alone(step), [("bob".into(), "already inactive: not deactivated by this program".into())]);
    let dave = step["leavers"].as_array().unwrap().iter().find(|l| l["username"] == "dave").unwrap();
    assert_eq!(dave["standing"], "inactive", "{step}");
    assert_eq!(puts_to(&env, &bob_id).await, 0, "read inactive: nothing sent");
    assert!(stderr.contains("user left alone"), "{stderr}");
    let history = common::cli(&["history", "bob", "--json", "--config", config.to_str().unwrap()]);
    let history = String::from_utf8_lossy(&history.stdout);
    assert!(history.contains("left alone: already inactive"), "{history}");

    for u in ["bob", "carol", "dave"] {
        membership(&env, "add", u);
    }
    let (code, report, _) = common::sync_json(&config, &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(strings(&leavers(&report)["reactivated"]), ["carol"], "only this program's deactivation is undone");
    assert!(!active(&env, "bob").await && !active(&env, "dave").await, "an administrator's decision stands");
    assert!(active(&env, "carol").await);
}

#[tokio::test]
async fn an_account_created_again_under_the_name_is_not_reactivated_and_is_reported() {
    let env = start();
    let config = config(&env, DEACTIVATE);
    assert_eq!(common::sync_json(&config, &[]).0, 0);
    membership(&env, "delete", "bob");
    membership(&env, "delete", "carol");
    let (_, report, _) = common::sync_json(&config, &[]);
    assert_eq!(strings(&leavers(&report)["deactivated"]), ["bob", "carol"], "{report}");
    // bob's account is deleted and created again (a new id), deactivated on purpose by an administrator.
    let old_id = user(&env, "bob").await["Id"].clone();
    let body = json!({"usernames": ["bob"], "recreate": true, "domain_name": "EXAMPLE", "is_active": false});
    let new_id = env.sim.change_users(body).await[0]["Id"].clone();
    assert_ne!(old_id, new_id);
    membership(&env, "add", "bob");
    membership(&env, "add", "carol");

    let (code, report, stderr) = common::sync_json(&config, &[]);

    assert_eq!(code, 0, "{report}\n{stderr}");
    let step = leavers(&report);
    assert_eq!(strings(&step["reactivated"]), ["carol"], "the control: the same account is reactivated: {step}");
    let alone = left_alone(step);
    assert_eq!(alone.len(), 1, "{step}");
    assert_eq!(alone[0].0, "bob");
    assert!(alone[0].1.contains("another CloudShell account"), "{alone:?}");
    assert!(!active(&env, "bob").await);
    assert_eq!(puts_to(&env, &new_id).await, 0, "the new account is never written");
    let (_, report, _) = common::sync_json(&config, &[]);
    assert!(left_alone(leavers(&report)).is_empty() && !active(&env, "bob").await, "said once, still alone");
}

#[tokio::test]
async fn a_leaver_waits_for_grace_period_as_well_as_grace_runs() {
    let env = start();
    let config = config(&env, &format!("{DEACTIVATE}\ngrace_period = \"2s\""));
    assert_eq!(common::sync_json(&config, &[]).0, 0);
    membership(&env, "delete", "carol");

    let (code, report, _) = common::sync_json(&config, &[]);
    assert_eq!(code, 0, "{report}");
    let step = leavers(&report);
    assert_eq!(
        (step["leavers"][0]["standing"].as_str(), step["leavers"][0]["runs"].as_u64()),
        (Some("waiting"), Some(1))
    );
    assert!(active(&env, "carol").await, "grace_runs = 1 is spent, 2 s are not");

    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (code, report, _) = common::sync_json(&config, &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(strings(&leavers(&report)["deactivated"]), ["carol"], "the period is over: {report}");
    assert!(!active(&env, "carol").await);
}

#[tokio::test]
async fn a_disabled_account_whose_is_active_is_not_said_is_never_deactivated_and_is_reported() {
    let mut d = Directory::new();
    let members = [d.user("alice"), d.disabled_user("dis"), d.disabled_user("dis2")];
    d.group("Team", &members);
    let env = Env(Stack::start(&d, |_| {}));
    let body = json!({"usernames": ["dis2"], "domain_name": "EXAMPLE", "omit_fields": ["IsActive"]});
    env.sim.change_users(body).await;
    let config = config(&env, "action = \"report\"");

    let (code, report, stderr) = common::sync_json(&config, &[]);

    assert_eq!(code, 0, "{report}\n{stderr}");
    let step = &report["disabled_accounts"];
    assert_eq!(strings(&step["deactivated"]), ["dis"], "the control: a known disabled account is deactivated: {step}");
    assert_eq!(step["protected"], json!([{"username": "dis2", "reason": "IsActive unknown in CloudShell"}]));
    assert!(active(&env, "dis2").await && !active(&env, "dis").await);
}
