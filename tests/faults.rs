//! The fault matrix, end to end: the real binary against slapd and the simulator's fault injection. Each case
//! checks what CloudShell ends up holding, the exit code, the calls made, and that no group was read as empty.

mod common;

use std::path::PathBuf;

use common::{CutProxy, Directory, Env, GROUPS, PEOPLE, Stack, report_group, sync_json};
use serde_json::{Value, json};

const IMPORT: &str = "/api/v1/integrations/IdentityManagement/users";
const EVERYONE: [&str; 6] = ["admin", "alice", "bob", "carol", "dave", "erin"];

/// `Team`: alice, bob and nested `Inner` (carol, dave). `Other`: erin. `Big`: big00000..big00004.
/// `Shrinking`: s0..s5.
fn directory() -> Directory {
    let mut d = Directory::new();
    let alice = d.user("alice");
    let bob = d.user("bob");
    let carol = d.user("carol");
    let dave = d.user("dave");
    let inner = d.group("Inner", &[carol, dave]);
    d.group("Team", &[alice, bob, inner]);
    let erin = d.user("erin");
    d.group("Other", &[erin]);
    let big = d.users("big", 5);
    d.group("Big", &big);
    let shrinking: Vec<String> = (0..7).map(|n| d.user(&format!("s{n}"))).collect();
    d.group("Shrinking", &shrinking[..6]);
    d
}

impl Env {
    fn start(d: &Directory, change: impl FnOnce(&mut cloudshell_sim::Config)) -> Env {
        Env(Stack::start(d, change))
    }

    /// A config syncing `Other` with `state` as the state directory.
    fn config_with_state(&self, state: &std::path::Path) -> PathBuf {
        let sections = format!("[monitor]\nstate_directory = \"{}\"\n", state.display());
        self.files.config(&self.slapd.url(), &self.sim.url(), &["Other"], "", &sections)
    }

    fn config(&self, ldap_url: &str, groups: &[&str], cloudshell_extra: &str, sync_extra: &str) -> PathBuf {
        let path = self.files.config(ldap_url, &self.sim.url(), groups, sync_extra, "");
        let text = std::fs::read_to_string(&path).unwrap().replace("[sync]", &format!("{cloudshell_extra}\n[sync]"));
        std::fs::write(&path, text).unwrap();
        path
    }

    async fn users(&self) -> Vec<String> {
        let mut u = self.sim.usernames().await;
        u.sort();
        u
    }

    async fn imports(&self) -> Vec<Value> {
        self.sim.calls_to("POST", IMPORT).await
    }

    async fn import_bodies(&self) -> Vec<Value> {
        self.imports().await.into_iter().map(|c| c["body"].clone()).collect()
    }
}

/// No group reported ok with zero members: a failed read is never taken for an empty group.
fn assert_none_read_as_empty(report: &Value) {
    for g in report["groups"].as_array().unwrap() {
        if g["status"] == "ok" || g["status"] == "planned" {
            assert!(g["members"].as_u64().unwrap() > 0, "group read as empty: {g}");
        } else {
            assert!(g["error"].is_string() || g["failed"].as_u64().unwrap() > 0, "a failure without a cause: {g}");
        }
    }
}

#[tokio::test]
async fn a_burst_of_503s_is_retried_and_the_run_completes() {
    let env = Env::start(&directory(), |_| {});
    env.sim.set_faults(json!({"fail": {"count": 3, "status": 503, "method": "POST"}})).await;
    let config = env.config(&env.slapd.url(), &["Team", "Other"], "", "");
    let (code, report, stderr) = sync_json(&config, &[]);
    assert_eq!(code, 0, "{report}\n{stderr}");
    assert_eq!(env.users().await, EVERYONE);
    let statuses: Vec<u64> = env.imports().await.iter().map(|c| c["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [503, 503, 503, 200, 200, 200], "Team retried 3 times, then Inner and Other");
    assert!(stderr.contains("cloudshell call failed, retrying"), "{stderr}");
    assert_none_read_as_empty(&report);
}

#[tokio::test]
async fn a_429_waits_for_retry_after() {
    let env = Env::start(&directory(), |_| {});
    env.sim
        .set_faults(json!({"fail": {"count": 1, "status": 429, "headers": {"Retry-After": "2"}, "method": "POST"}}))
        .await;
    let config = env.config(&env.slapd.url(), &["Other"], "", "");
    let (code, report, _) = sync_json(&config, &[]);
    assert_eq!(code, 0, "{report}");
    let calls = env.imports().await;
    assert_eq!(calls.len(), 2);
    let gap = calls[1]["at_ms"].as_u64().unwrap() - calls[0]["at_ms"].as_u64().unwrap();
    assert!(gap >= 2000, "retried after {gap} ms, Retry-After said 2 s");
    assert_eq!(env.users().await, ["admin", "erin"]);
}

#[tokio::test]
async fn an_answer_slower_than_the_timeout_is_checked_before_importing_again() {
    let env = Env::start(&directory(), |_| {});
    // Team's group import is done, but its answer comes after the 1 s timeout.
    env.sim.set_faults(json!({"slow": {"count": 1, "delay_ms": 2500, "method": "POST"}})).await;
    let config = env.config(&env.slapd.url(), &["Team"], "", "").to_path_buf();
    std::fs::write(&config, std::fs::read_to_string(&config).unwrap().replace("timeout = \"10s\"", "timeout = \"1s\""))
        .unwrap();
    let (code, report, stderr) = sync_json(&config, &[]);
    assert_eq!(code, 0, "{report}\n{stderr}");
    assert_eq!(env.users().await, ["admin", "alice", "bob", "carol", "dave"]);
    // Team once (answer lost), the user list read again, then Inner for the nested members: nobody twice.
    assert_eq!(env.import_bodies().await, [json!({"GroupName": "Team"}), json!({"GroupName": "Inner"})]);
    assert_eq!(report["api_calls"]["list_users"], 2);
    assert!(stderr.contains("group import failed"), "{stderr}");
}

/// After the imports the run knows the new users from CloudShell's answers (each import answers with the
/// users it created); one whose answer was lost is looked up by name, so that it is managed (with its id)
/// in the same run, and nobody is listed twice.
#[tokio::test]
async fn a_user_whose_import_answer_was_lost_is_looked_up_after_the_imports() {
    let env = Env::start(&directory(), |_| {});
    // Big's group import refused (one by one then), and the first user import's answer cut after it took effect.
    env.sim
        .set_faults(json!({
            "fail": {"count": 1, "status": 400, "method": "POST"},
            "reset": {"count": 1, "method": "POST"}
        }))
        .await;
    let state = env.files.path("state");
    let sections = format!("[monitor]\nstate_directory = \"{}\"\n", state.display());
    let config = env.files.config(&env.slapd.url(), &env.sim.url(), &["Big"], "", &sections);
    let (code, report, stderr) = sync_json(&config, &[]);
    assert_eq!(code, 0, "{report}\n{stderr}");
    assert!(stderr.contains("checking before importing again"), "an answer was lost: {stderr}");
    let big: Vec<String> = (0..5).map(|n| format!("big{n:05}")).collect();
    let users = env.users().await;
    assert!(big.iter().all(|u| users.contains(u)), "{users:?}");
    // Listed once in full; then by name: the lost answer's check, and the same user once the imports are done.
    let lists: Vec<String> = env
        .sim
        .calls_to("GET", "/api/v1/users")
        .await
        .iter()
        .map(|c| c["query"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(lists.len(), 3, "{lists:?}");
    assert!(!lists[0].contains("filter"), "{lists:?}");
    assert!(lists[1..].iter().all(|q| q.contains("paginationProperties.filter=big")), "{lists:?}");
    assert_eq!(lists[1], lists[2], "the same user: {lists:?}");
    // Every one of them managed with CloudShell's id, the lost one included.
    let db = cloudshell_ldap_sync::state::db::Database::open_read_only(&state).unwrap().expect("state.db");
    let managed = db.load_managed().unwrap();
    let ids: Vec<(String, Option<i64>)> = big
        .iter()
        .map(|u| (u.clone(), managed.users.values().find(|m| m.username.as_str() == u).and_then(|m| m.id)))
        .collect();
    assert!(ids.iter().all(|(_, id)| id.is_some()), "{ids:?}");
}

#[tokio::test]
async fn a_cloudshell_slower_than_the_timeout_everywhere_fails_the_run_without_writing() {
    let env = Env::start(&directory(), |_| {});
    env.sim.set_faults(json!({"latency_ms": 3000})).await;
    let config = env.config(&env.slapd.url(), &["Team"], "retries = 1\nretry_deadline = \"5s\"\n", "");
    std::fs::write(&config, std::fs::read_to_string(&config).unwrap().replace("timeout = \"10s\"", "timeout = \"1s\""))
        .unwrap();
    let (code, report, _) = sync_json(&config, &[]);
    assert_eq!(code, 1, "{report}");
    assert!(report["error"].as_str().unwrap().contains("did not answer"), "{report}");
    assert!(env.imports().await.is_empty());
    assert_eq!(env.users().await, ["admin"]);
}

#[tokio::test]
async fn tokens_expiring_every_few_calls_do_not_stop_the_run() {
    let env = Env::start(&directory(), |c| c.group_import_limit = 3);
    env.sim.set_faults(json!({"token_lifetime_calls": 2})).await;
    let config = env.config(&env.slapd.url(), &["Team", "Other", "Big"], "", "");
    let (code, report, _) = sync_json(&config, &[]);
    assert_eq!(code, 0, "{report}");
    let users = env.users().await;
    assert_eq!(users.len(), 11, "{users:?}");
    assert_eq!(report["totals"]["failed"], 0, "{report}");
    assert!(report["api_calls"]["login"].as_u64().unwrap() >= 4, "{report}");
}

#[tokio::test]
async fn malformed_answers_are_read_again_or_verified() {
    let env = Env::start(&directory(), |_| {});
    // The first user page is truncated (read again), and Team's import answer is garbage (verified by listing).
    env.sim.set_faults(json!({"malformed": {"count": 1, "path_contains": "/api/v1/users"}})).await;
    env.sim.set_faults(json!({"malformed": {"count": 1, "path_contains": "IdentityManagement"}})).await;
    let config = env.config(&env.slapd.url(), &["Team"], "", "");
    let (code, report, stderr) = sync_json(&config, &[]);
    assert_eq!(code, 0, "{report}\n{stderr}");
    assert_eq!(env.users().await, ["admin", "alice", "bob", "carol", "dave"]);
    assert_eq!(env.import_bodies().await, [json!({"GroupName": "Team"}), json!({"GroupName": "Inner"})]);
    assert!(stderr.contains("cloudshell user page unreadable, reading it again"), "{stderr}");
}

#[tokio::test]
async fn a_refused_large_group_falls_back_to_users() {
    let env = Env::start(&directory(), |c| c.group_import_limit = 3);
    let config = env.config(&env.slapd.url(), &["Big"], "", "");
    let (code, report, _) = sync_json(&config, &[]);
    assert_eq!(code, 0, "{report}");
    let calls = env.imports().await;
    assert_eq!(calls[0]["status"], 400);
    assert_eq!(calls.len(), 6, "one refused group import, five user imports");
    assert_eq!(env.users().await.len(), 6);
}

#[tokio::test]
async fn a_connection_reset_is_verified_not_assumed() {
    let env = Env::start(&directory(), |_| {});
    env.sim.set_faults(json!({"reset": {"count": 1, "method": "POST", "after_processing": true}})).await;
    let config = env.config(&env.slapd.url(), &["Team", "Other"], "", "");
    let (code, report, _) = sync_json(&config, &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(env.users().await, EVERYONE);
    assert_eq!(
        env.import_bodies().await,
        [json!({"GroupName": "Team"}), json!({"GroupName": "Inner"}), json!({"GroupName": "Other"})]
    );
}

/// 55 groups of one user each: the group search goes in two filters (50 + 5).
fn many_groups() -> (Directory, Vec<String>) {
    let mut d = Directory::new();
    let mut names = Vec::new();
    for n in 0..55 {
        let u = d.user(&format!("m{n:02}"));
        let name = format!("G{n:02}");
        d.group(&name, &[u]);
        names.push(name);
    }
    (d, names)
}

#[tokio::test]
async fn slapd_going_away_between_groups_fails_only_the_unread_groups() {
    let (d, names) = many_groups();
    let env = Env::start(&d, |_| {});
    let first: Vec<&str> = names[..50].iter().map(String::as_str).collect();
    let all: Vec<&str> = names.iter().map(String::as_str).collect();

    // Measure what the directory sends for the bind, the users and the first 50 groups...
    let counting = CutProxy::counting(env.slapd.port);
    let (code, _, _) = sync_json(&env.config(&counting.url(), &first, "", ""), &["--dry-run"]);
    assert_eq!(code, 0);
    let first_chunk = counting.forwarded();
    // ...then cut the directory off right there, in a run that needs a second group search.
    let proxy = CutProxy::start(env.slapd.port, first_chunk);
    let (code, report, _) = sync_json(&env.config(&proxy.url(), &all, "", ""), &[]);
    assert_eq!(code, 3, "{report}");
    for name in &names[..50] {
        assert_eq!(report_group(&report, name)["status"], "ok", "{name}");
    }
    for name in &names[50..] {
        let g = report_group(&report, name);
        assert_eq!((g["status"].as_str(), g["error_kind"].as_str()), (Some("failed"), Some("search")), "{g}");
    }
    assert_eq!(env.imports().await.len(), 50, "imports for the groups read, none for the others");
    assert_none_read_as_empty(&report);
}

#[tokio::test]
async fn slapd_going_away_during_the_paged_search_writes_nothing() {
    let mut d = directory();
    d.users("filler", 1500);
    let env = Env::start(&d, |_| {});
    let proxy = CutProxy::start(env.slapd.port, 40_000);
    let (code, report, _) = sync_json(&env.config(&proxy.url(), &["Team", "Other"], "", ""), &[]);
    assert_eq!(code, 1, "{report}");
    for name in ["Team", "Other"] {
        assert_eq!(report_group(&report, name)["error_kind"], "search");
    }
    assert!(env.imports().await.is_empty(), "nothing written (CloudShell's user list was only read)");
    assert_eq!(env.users().await, ["admin"]);
    assert_none_read_as_empty(&report);
}

#[tokio::test]
async fn the_second_directory_serves_when_the_first_is_down() {
    let env = Env::start(&directory(), |_| {});
    let down = format!("ldap://127.0.0.1:{}", common::free_port());
    let urls = format!("[\"{down}\", \"{}\"]", env.slapd.url());
    let config = env.config("PLACEHOLDER", &["Other"], "", "");
    std::fs::write(&config, std::fs::read_to_string(&config).unwrap().replace("\"PLACEHOLDER\"", &urls)).unwrap();
    let (code, report, stderr) = sync_json(&config, &[]);
    assert_eq!(code, 0, "{report}\n{stderr}");
    assert!(stderr.contains("directory failover"), "{stderr}");
    assert_eq!(report["directory_url"].as_str(), Some(env.slapd.url().as_str()));
    // A one-shot run without a state directory reads in full, and says so.
    let read = &report["read"];
    assert_eq!((read["mode"].as_str(), read["method"].is_null()), (Some("full"), true), "{read}");
    assert_eq!(read["reason"], "a one-shot run without a state directory, or a dry run, reads in full", "{read}");
    assert!(stderr.contains(&format!("directory connected url={}", env.slapd.url())), "{stderr}");
    assert_eq!(env.users().await, ["admin", "erin"]);
}

#[tokio::test]
async fn a_group_shrinking_past_the_guard_is_held_until_the_state_is_reset() {
    let env = Env::start(&directory(), |_| {});
    let state = env.files.path("state");
    let config = env.config(&env.slapd.url(), &["Shrinking", "Other"], "", "");
    let text =
        std::fs::read_to_string(&config).unwrap() + &format!("[monitor]\nstate_directory = \"{}\"\n", state.display());
    std::fs::write(&config, text).unwrap();
    let (code, _, _) = sync_json(&config, &[]);
    assert_eq!(code, 0);
    assert_eq!(env.users().await.len(), 8, "admin, erin, s0..s5");

    // Five of six members vanish (a broken filter, a half-replicated directory), and a new one appears.
    let mut change = String::new();
    for n in 0..5 {
        change.push_str(&format!(
            "dn: cn=Shrinking,{GROUPS}\nchangetype: modify\ndelete: member\nmember: uid=s{n},{PEOPLE}\n\n"
        ));
    }
    change.push_str(&format!("dn: cn=Shrinking,{GROUPS}\nchangetype: modify\nadd: member\nmember: uid=s6,{PEOPLE}\n"));
    env.slapd.modify(&change);
    env.sim.clear_calls().await;

    let (code, report, stderr) = sync_json(&config, &[]);
    assert_eq!(code, 4, "{report}");
    let g = report_group(&report, "Shrinking");
    assert_eq!(
        (g["status"].as_str(), g["error_kind"].as_str(), g["members"].as_u64()),
        (Some("held"), Some("shrink_guard"), Some(2))
    );
    assert!(g["error"].as_str().unwrap().contains("from 6 to 2"), "{g}");
    assert!(stderr.contains("group membership shrank, writes held"), "{stderr}");
    assert_eq!(report_group(&report, "Other")["status"], "ok");
    assert!(env.imports().await.is_empty(), "s6 is not imported while the group is held");

    // Still held on the next run: the held count never becomes the reference.
    assert_eq!(sync_json(&config, &[]).0, 4);
    // The command the report names accepts the new membership.
    let error = g["error"].as_str().unwrap();
    assert!(error.contains("cloudshell-ldap-sync accept-shrink Shrinking"), "{error}");
    let out = common::cli(&["accept-shrink", "Shrinking", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let (code, report, _) = sync_json(&config, &[]);
    assert_eq!(code, 0, "{report}");
    assert!(env.users().await.contains(&"s6".to_string()));
    assert_eq!(sync_json(&config, &[]).0, 0, "and the guard is back, at 2");
}

#[tokio::test]
async fn a_state_directory_other_users_may_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::start(&directory(), |_| {});
    let state = env.files.path("shared-state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
    let config = env.config_with_state(&state);
    let (code, report, _) = sync_json(&config, &[]);
    assert_eq!(code, 1, "{report}");
    assert!(report["error"].as_str().unwrap().contains("writable by other users"), "{report}");
    assert!(env.imports().await.is_empty(), "nothing written");
}

/// Runs `sync --json` with the state directory `state` first prepared by `prepare` (a shell snippet given the
/// directory as `$1`) in a private mount namespace: how a read-only or full state directory is made, since root
/// ignores permission bits. Root is needed (scripts/test runs as root in CI).
fn sync_in_mount_namespace(
    state: &std::path::Path,
    prepare: &str,
    config: &std::path::Path,
) -> (Option<i32>, String, String) {
    let script = format!(r#"{prepare} && shift && exec "$@""#);
    let out = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script, "sh"])
        .arg(state)
        .args([common::binary(), "sync", "--json", "--config"])
        .arg(config)
        .output()
        .expect("unshare (util-linux) runs");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !stderr.contains("unshare:") && !stderr.contains("mount:"),
        "this test mounts in a private mount namespace and needs root (scripts/test runs as root in CI): {stderr}"
    );
    (out.status.code(), String::from_utf8_lossy(&out.stdout).to_string(), stderr)
}

#[tokio::test]
async fn a_state_directory_that_cannot_be_written_fails_the_run_before_any_write() {
    let env = Env::start(&directory(), |_| {});
    let state = env.files.path("state");
    std::fs::create_dir(&state).unwrap();
    let config = env.config_with_state(&state);

    // Read-only (a read-only bind mount): the run lock cannot even be taken.
    let read_only = r#"mount --bind "$1" "$1" && mount -o remount,bind,ro "$1""#;
    let (code, _, stderr) = sync_in_mount_namespace(&state, read_only, &config);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("run.lock") && stderr.contains("Read-only file system"), "{stderr}");

    // Full (a tiny tmpfs, filled): the lock is taken (an empty file), the probe write is not.
    let full =
        r#"mount -t tmpfs -o size=16k,mode=0755 tmpfs "$1" && { cat /dev/zero > "$1/filler" 2>/dev/null; true; }"#;
    let (code, stdout, stderr) = sync_in_mount_namespace(&state, full, &config);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    assert_eq!(code, Some(1), "{report}\n{stderr}");
    let error = report["error"].as_str().unwrap();
    assert!(error.contains("cannot write the state directory") && error.contains("No space left"), "{error}");
    assert!(stderr.contains("state directory unwritable"), "{stderr}");

    assert!(env.imports().await.is_empty(), "nothing written while the guard cannot keep its state");
    // The same directory, writable: the run goes ahead and keeps its counts.
    let (code, report, _) = sync_json(&config, &[]);
    assert_eq!(code, 0, "{report}");
    assert!(state.join("state.db").exists());
}
