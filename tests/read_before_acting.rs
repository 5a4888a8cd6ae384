//! Deactivations and reactivations rest only on what CloudShell said, end to end (the binary, slapd and the
//! simulator, `action = "deactivate"` and no limit in the way): a user whose `IsActive` is not said is never
//! changed, as a leaver or as a disabled account; a user found already inactive is not taken for this program's
//! deactivation, so never reactivated; only the CloudShell id this program deactivated is reactivated;
//! `grace_period` waits in time; a deactivation the directory, read again just before it, no longer agrees
//! with is not sent. Each test has its control: a real leaver still deactivated (or reactivated).

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
    let history = common::history_json(&config, "bob");
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

/// `uid=<user>`'s account disabled (`userAccountControl` 514) or enabled (512).
fn account(env: &Env, user: &str, disabled: bool) {
    let flag = if disabled { 514 } else { 512 };
    env.slapd.modify(&format!(
        "dn: uid={user},{PEOPLE}\nchangetype: modify\nreplace: userAccountControl\nuserAccountControl: {flag}\n\n"
    ));
}

/// A deactivation is sent only when a second read of the directory, made after the run's plan, agrees with
/// it. The run's read sees bob and carol gone from `Team` and dis and dis2 disabled; while the run imports a
/// new hire (its call held), bob is added back and dis2 enabled again, as a rename or a change racing the read
/// would look. bob and dis2 are left alone, reported with why and recorded in the audit trail; the controls,
/// carol (a real leaver) and dis (still disabled), are deactivated in the same run. The next run finds bob and
/// dis2 where they are: nobody to deactivate.
#[tokio::test]
async fn a_deactivation_the_directory_disagrees_with_just_before_the_call_is_left_alone() {
    let mut d = Directory::new();
    let team = ["alice", "bob", "carol", "dis", "dis2"].map(|u| d.user(u));
    d.user("erin");
    d.group("Team", &team);
    let env = Env(Stack::start(&d, |_| {}));
    // The accounts carry the flag from the start, enabled: the test only changes its value.
    for u in ["dis", "dis2"] {
        env.slapd.modify(&format!(
            "dn: uid={u},{PEOPLE}\nchangetype: modify\nadd: objectClass\nobjectClass: accountControl\n-\n\
             add: userAccountControl\nuserAccountControl: 512\n\n"
        ));
    }
    let config = config(&env, DEACTIVATE);
    assert_eq!(common::sync_json(&config, &[]).0, 0);
    membership(&env, "delete", "bob");
    membership(&env, "delete", "carol");
    membership(&env, "add", "erin");
    account(&env, "dis", true);
    account(&env, "dis2", true);
    let run = common::sync_held_at_import(&env.sim, &config).await;
    membership(&env, "add", "bob");
    account(&env, "dis2", false);
    let (code, report, stderr) = run.await.unwrap();

    assert_eq!(code, 0, "left alone is not a failure: {report}\n{stderr}");
    let step = leavers(&report);
    // The run's own read: dis2, disabled there and left alone by the disabled-account step, is a member of
    // nothing to the leaver rules, and the second read finds an enabled member.
    assert_eq!(strings(&step["candidates"]), ["bob", "carol", "dis2"], "the run's own read: {step}");
    assert_eq!(strings(&step["deactivated"]), ["carol"], "the control: {step}");
    let member_again =
        "a member again when the directory was read again before deactivating: the next run decides".to_string();
    assert_eq!(left_alone(step), [("bob".into(), member_again.clone()), ("dis2".into(), member_again)]);
    let disabled = &report["disabled_accounts"];
    assert_eq!(strings(&disabled["deactivated"]), ["dis"], "the control: {disabled}");
    let alone = left_alone(disabled);
    assert_eq!(alone.len(), 1, "{disabled}");
    assert_eq!(alone[0].0, "dis2");
    assert!(
        alone[0].1.starts_with("not disabled in a configured group when the directory was read again"),
        "{alone:?}"
    );
    assert!(active(&env, "bob").await && active(&env, "dis2").await && active(&env, "erin").await);
    assert!(!active(&env, "carol").await && !active(&env, "dis").await);
    for u in ["bob", "dis2"] {
        assert_eq!(puts_to(&env, &user(&env, u).await["Id"]).await, 0, "{u} is never written");
    }
    assert!(stderr.contains("directory read again before acting"), "{stderr}");
    assert!(stderr.contains("deactivation not confirmed by a second read"), "{stderr}");
    let history = common::history_json(&config, "bob");
    assert!(history.contains("leaver not deactivated: a member again"), "{history}");

    let (code, report, _) = common::sync_json(&config, &[]);
    assert_eq!(code, 0, "{report}");
    assert!(strings(&leavers(&report)["candidates"]).is_empty(), "{report}");
    assert!(strings(&report["disabled_accounts"]["deactivated"]).is_empty(), "{report}");
    assert!(active(&env, "bob").await && active(&env, "dis2").await);
}

/// A second read that cannot be made whole (here a configured group gone between the run's read and the
/// deactivation) deactivates nobody: the leaver step fails saying why (exit 3), and the next run, with the group
/// back, deactivates the leaver (the control).
#[tokio::test]
async fn a_second_read_that_cannot_be_made_deactivates_nobody() {
    let mut d = Directory::new();
    let team = ["alice", "bob", "carol"].map(|u| d.user(u));
    d.user("erin");
    d.group("Team", &team);
    d.group("Other", &[team[0].clone()]);
    let env = Env(Stack::start(&d, |_| {}));
    let state = env.files.path("state");
    let sections = format!(
        "[sync.leavers]\n{DEACTIVATE}\nmax_percent_per_day = 100\n\n[monitor]\nstate_directory = \"{}\"\n",
        state.display()
    );
    let config =
        env.files.config(&env.slapd.url(), &env.sim.url(), &["Team", "Other"], "max_shrink_percent = 100", &sections);
    assert_eq!(common::sync_json(&config, &[]).0, 0);
    membership(&env, "delete", "carol");
    membership(&env, "add", "erin");
    let run = common::sync_held_at_import(&env.sim, &config).await;
    let other = format!("dn: cn=Other,{GROUPS}\nchangetype: modrdn\nnewrdn: cn=Renamed\ndeleteoldrdn: 1\n\n");
    env.slapd.modify(&other);
    let (code, report, stderr) = run.await.unwrap();

    assert_eq!(code, 3, "{report}\n{stderr}");
    let step = leavers(&report);
    assert_eq!(strings(&step["candidates"]), ["carol"], "{step}");
    assert!(strings(&step["deactivated"]).is_empty(), "{step}");
    assert_eq!(step["status"], "failed");
    let error = step["error"].as_str().unwrap();
    assert!(error.starts_with("nobody deactivated: the directory could not be read again"), "{error}");
    assert!(error.contains("\"Other\""), "names the group: {error}");
    assert!(active(&env, "carol").await);

    env.slapd.modify(&format!("dn: cn=Renamed,{GROUPS}\nchangetype: modrdn\nnewrdn: cn=Other\ndeleteoldrdn: 1\n\n"));
    let (code, report, _) = common::sync_json(&config, &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(strings(&leavers(&report)["deactivated"]), ["carol"], "the control: {report}");
    assert!(!active(&env, "carol").await);
}
