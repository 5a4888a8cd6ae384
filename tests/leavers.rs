//! Users who left, end to end: the real binary, a real slapd and the simulator. Only managed users, only
//! after a complete run, only within limits, and undone when they come back.

mod common;

use std::path::PathBuf;

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

    /// A config syncing `groups`, with `leavers` lines in `[sync.leavers]` and a state directory.
    fn config(&self, groups: &[&str], leavers: &str) -> PathBuf {
        self.config_at(&self.slapd.url(), groups, leavers)
    }

    /// The same against the directory at `ldap_url` (the file is rewritten: one config per environment).
    fn config_at(&self, ldap_url: &str, groups: &[&str], leavers: &str) -> PathBuf {
        let sections =
            format!("[sync.leavers]\n{leavers}\n\n[monitor]\nstate_directory = \"{}\"\n", self.state().display());
        // The shrink guard is the first line of defence; off here, so that each test shows the leaver rules.
        self.files.config(ldap_url, &self.sim.url(), groups, "max_shrink_percent = 100", &sections)
    }

    fn leave(&self, group: &str, user: &str) {
        self.slapd.modify(&format!(
            "dn: cn={group},{GROUPS}\nchangetype: modify\ndelete: member\nmember: uid={user},{PEOPLE}\n\n"
        ));
    }

    fn join(&self, group: &str, user: &str) {
        self.slapd.modify(&format!(
            "dn: cn={group},{GROUPS}\nchangetype: modify\nadd: member\nmember: uid={user},{PEOPLE}\n\n"
        ));
    }

    /// Whether CloudShell holds `username` as an active user.
    async fn active(&self, username: &str) -> bool {
        self.sim.is_active(username).await
    }

    async fn puts(&self) -> usize {
        self.sim.calls().await.iter().filter(|c| c["method"] == "PUT" && c["path"] != "/Api/Auth/Login").count()
    }
}

/// `deactivate`, with the percentages raised: 20 % of this directory's four users is none (the daily budget).
const DEACTIVATE: &str = "action = \"deactivate\"\nmax_percent = 100\nmax_percent_per_day = 100";

fn leavers(report: &Value) -> &Value {
    report.get("leavers").unwrap_or_else(|| panic!("no leavers in {report}"))
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array().unwrap_or_else(|| panic!("not a list: {v}")).iter().map(|s| s.as_str().unwrap()).collect()
}

#[tokio::test]
async fn a_member_who_leaves_is_deactivated_kept_and_reactivated_when_back() {
    let env = Env::start();
    let config = env.config(&["Team", "Other"], DEACTIVATE);
    let (code, report, _) = common::sync_json(&config, &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(leavers(&report)["managed"], 4);

    env.leave("Team", "bob");
    let (code, report, stderr) = common::sync_json(&config, &[]);
    assert_eq!(code, 0, "{report}\n{stderr}");
    assert_eq!(strings(&leavers(&report)["deactivated"]), ["bob"]);
    assert!(!env.active("bob").await, "deactivated");
    assert!(env.sim.usernames().await.contains(&"bob".to_string()), "kept in CloudShell");
    assert!(env.active("alice").await);
    assert!(stderr.contains("user deactivated"), "{stderr}");
    assert_eq!(report["api_calls"]["edit_user"], 1);
    let status: Value =
        serde_json::from_str(&std::fs::read_to_string(env.state().join("status.json")).unwrap()).unwrap();
    assert_eq!(status["last_run"]["leavers"]["deactivated"], 1, "{status}");

    // A third run does not touch bob again.
    let (_, report, _) = common::sync_json(&config, &[]);
    assert_eq!(report["api_calls"]["edit_user"], 0, "{report}");

    env.join("Team", "bob");
    let (code, report, stderr) = common::sync_json(&config, &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(strings(&leavers(&report)["reactivated"]), ["bob"]);
    assert!(env.active("bob").await, "reactivated");
    assert!(stderr.contains("user reactivated"), "{stderr}");
}

#[tokio::test]
async fn a_step_whose_deactivations_all_fail_is_failed_and_partial_when_some_took_effect() {
    let env = Env::start();
    let config = env.config(&["Team", "Other"], DEACTIVATE);
    assert_eq!(common::sync_json(&config, &[]).0, 0);
    // The user update answers 503 to the first attempt and to each of the 3 retries: one user's worth.
    let fail_one = json!({"fail": {"count": 4, "status": 503, "method": "PUT", "path_contains": "/api/v1/users/"}});

    env.leave("Team", "bob");
    env.sim.set_faults(fail_one.clone()).await;
    let (code, report, stderr) = common::sync_json(&config, &[]);
    assert_eq!(code, 3, "{report}\n{stderr}");
    let step = leavers(&report);
    assert_eq!(step["status"], "failed", "nothing took effect, as for a group: {step}");
    assert_eq!(step["failures"][0]["username"], "bob");
    assert!(env.active("bob").await);

    env.leave("Team", "carol");
    env.sim.set_faults(fail_one).await;
    let (code, report, _) = common::sync_json(&config, &[]);
    assert_eq!(code, 3, "{report}");
    let step = leavers(&report);
    assert_eq!(step["status"], "partial", "{step}");
    assert_eq!((step["failures"][0]["username"].as_str(), strings(&step["deactivated"])), (Some("bob"), vec!["carol"]));

    // The faults spent, the next run deactivates bob.
    let (code, report, _) = common::sync_json(&config, &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(strings(&leavers(&report)["deactivated"]), ["bob"]);
}

#[tokio::test]
async fn with_three_runs_of_grace_a_leaver_is_deactivated_on_the_third_and_coming_back_resets_it() {
    let env = Env::start();
    let config = env.config(&["Team"], &format!("{DEACTIVATE}\ngrace_runs = 3"));
    assert_eq!(common::sync_json(&config, &[]).0, 0);
    env.leave("Team", "carol");
    for run in 1..=2 {
        let (_, report, _) = common::sync_json(&config, &[]);
        assert_eq!(leavers(&report)["leavers"][0]["runs"], run, "{report}");
        assert_eq!(leavers(&report)["leavers"][0]["standing"], "waiting");
        assert!(env.active("carol").await, "not before the third run");
    }
    env.join("Team", "carol");
    common::sync_json(&config, &[]);
    env.leave("Team", "carol");
    for _ in 1..=2 {
        common::sync_json(&config, &[]);
        assert!(env.active("carol").await, "the count started again");
    }
    let (_, report, _) = common::sync_json(&config, &[]);
    assert_eq!(strings(&leavers(&report)["deactivated"]), ["carol"], "{report}");
    assert!(!env.active("carol").await);
}

#[tokio::test]
async fn users_never_seen_in_a_configured_group_are_never_touched() {
    let env = Env::start();
    env.sim.add_directory_users(&["handmade"], &[], false).await;
    env.sim.add_local_users(&["localla"], &[]).await;
    env.sim.add_directory_users(&["boss"], &[], true).await;
    let config = env.config(&["Team"], DEACTIVATE);
    common::sync_json(&config, &[]);
    let (code, report, _) = common::sync_json(&config, &[]);
    assert_eq!(code, 0, "{report}");
    assert!(leavers(&report)["leavers"].as_array().unwrap().is_empty(), "{report}");
    for u in ["handmade", "localla", "boss", "admin"] {
        assert!(env.active(u).await, "{u}");
    }
    assert_eq!(env.puts().await, 0);
}

#[tokio::test]
async fn more_leavers_than_the_limits_hold_every_deactivation() {
    for (limits, by) in [("max_per_run = 1\nmax_percent = 100", "max_per_run"), ("max_percent = 40", "max_percent")] {
        let env = Env::start();
        let config = env.config(&["Team", "Other"], &format!("action = \"deactivate\"\n{limits}"));
        assert_eq!(common::sync_json(&config, &[]).0, 0);
        env.leave("Team", "alice");
        env.leave("Team", "bob");
        let (code, report, stderr) = common::sync_json(&config, &[]);
        assert_eq!(code, 4, "{limits}: {report}");
        let l = leavers(&report);
        assert_eq!((l["held"].as_bool(), strings(&l["candidates"])), (Some(true), vec!["alice", "bob"]), "{l}");
        assert!(l["held_by"].as_str().unwrap().contains(by), "{l}");
        assert!(env.active("alice").await && env.active("bob").await, "nobody deactivated");
        assert_eq!(env.puts().await, 0);
        assert!(stderr.contains("deactivations held"), "{stderr}");
    }
}

#[tokio::test]
async fn a_configured_group_that_fails_means_nobody_is_deactivated() {
    let env = Env::start();
    assert_eq!(common::sync_json(&env.config(&["Team", "Other"], DEACTIVATE), &[]).0, 0);
    env.leave("Team", "bob");
    // Other vanishes from the directory: dave looks gone, and bob did leave; neither is acted on.
    env.slapd.modify(&format!("dn: cn=Other,{GROUPS}\nchangetype: delete\n\n"));
    let (code, report, _) = common::sync_json(&env.config(&["Team", "Other"], DEACTIVATE), &[]);
    assert_eq!(code, 3, "{report}");
    assert!(leavers(&report)["skipped"].as_str().unwrap().contains("not a complete run"), "{report}");
    assert!(env.active("bob").await && env.active("dave").await);
    assert_eq!(env.puts().await, 0);
}

#[tokio::test]
async fn an_unreachable_directory_for_a_whole_run_deactivates_nobody_then_or_after() {
    let env = Env::start();
    let config = env.config(&["Team", "Other"], DEACTIVATE);
    assert_eq!(common::sync_json(&config, &[]).0, 0);
    let dead = format!("ldap://127.0.0.1:{}", common::free_port());
    let (code, report, _) = common::sync_json(&env.config_at(&dead, &["Team", "Other"], DEACTIVATE), &[]);
    assert_eq!(code, 1, "{report}");
    assert!(report.get("leavers").is_none(), "the run never got that far: {report}");
    let (code, report, _) = common::sync_json(&env.config(&["Team", "Other"], DEACTIVATE), &[]);
    assert_eq!(code, 0, "{report}");
    assert!(leavers(&report)["leavers"].as_array().unwrap().is_empty(), "everyone is back: {report}");
    assert_eq!(env.puts().await, 0);
}

#[tokio::test]
async fn lost_state_deactivates_nobody_and_a_damaged_database_fails_the_run_before_any_write() {
    let env = Env::start();
    let config = env.config(&["Team", "Other"], DEACTIVATE);
    assert_eq!(common::sync_json(&config, &[]).0, 0);
    env.leave("Team", "bob");
    for file in ["state.db", "state.db-wal", "state.db-shm"] {
        let _ = std::fs::remove_file(env.state().join(file));
    }
    let (code, report, _) = common::sync_json(&config, &[]);
    assert_eq!(code, 0, "{report}");
    assert!(env.active("bob").await, "losing state never causes a deactivation");
    assert_eq!(leavers(&report)["managed"], 3, "bob is not managed any more");

    // Damaged: refused whole, with how to recover; nothing written anywhere.
    let db = env.state().join("state.db");
    let mut bytes = std::fs::read(&db).unwrap();
    bytes[..16].copy_from_slice(b"not a database!\0");
    std::fs::write(&db, &bytes).unwrap();
    env.join("Team", "erin-never");
    env.sim.clear_calls().await;
    let (code, report, stderr) = common::sync_json(&config, &[]);
    assert_eq!(code, 1, "{report}");
    let error = report["error"].as_str().unwrap();
    assert!(error.contains("state.db") && error.contains("move it aside"), "{error}");
    assert!(stderr.contains("state file unreadable"), "{stderr}");
    assert!(env.sim.calls().await.is_empty(), "no call at all: {report}");
    assert_eq!(std::fs::read(&db).unwrap(), bytes, "the damaged file is left as it was");
}

#[tokio::test]
async fn action_report_lists_leavers_and_writes_nothing() {
    let env = Env::start();
    let config = env.config(&["Team"], "action = \"report\"");
    assert_eq!(common::sync_json(&config, &[]).0, 0);
    env.leave("Team", "bob");
    let (code, report, stderr) = common::sync_json(&config, &[]);
    assert_eq!(code, 0, "{report}");
    let l = leavers(&report);
    assert_eq!((l["action"].as_str(), strings(&l["candidates"])), (Some("report"), vec!["bob"]));
    assert_eq!(l["leavers"][0]["since"].as_str().map(|s| s.len()), Some(20), "a timestamp: {l}");
    assert!(strings(&l["deactivated"]).is_empty());
    assert!(env.active("bob").await);
    assert_eq!(env.puts().await, 0, "zero PUT");
    assert!(stderr.contains("leaver found"), "{stderr}");

    // A dry run of `deactivate` shows what it would do, and writes nothing either.
    let config = env.config(&["Team"], DEACTIVATE);
    let out = common::cli(&["sync", "--dry-run", "--config", config.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("leavers (deactivate) planned") && text.contains("bob candidate"), "{text}");
    assert_eq!(env.puts().await, 0);
}

#[tokio::test]
async fn a_group_held_by_the_shrink_guard_makes_the_run_incomplete() {
    let env = Env::start();
    let sections =
        format!("[sync.leavers]\n{DEACTIVATE}\n\n[monitor]\nstate_directory = \"{}\"\n", env.state().display());
    let config =
        env.files.config(&env.slapd.url(), &env.sim.url(), &["Team", "Other"], "max_shrink_percent = 50", &sections);
    assert_eq!(common::sync_json(&config, &[]).0, 0);
    env.leave("Team", "alice");
    env.leave("Team", "bob");
    let (code, report, _) = common::sync_json(&config, &[]);
    assert_eq!(code, 4, "Team shrank 3 -> 1: held\n{report}");
    assert!(leavers(&report)["skipped"].as_str().unwrap().contains("\"Team\""), "{report}");
    assert!(env.active("alice").await && env.active("bob").await);
    assert_eq!(env.puts().await, 0);
}

#[tokio::test]
async fn a_directory_cut_off_between_group_searches_means_nobody_is_deactivated() {
    // 55 groups of one user each: two group searches (50 names a filter).
    let mut d = Directory::new();
    let names: Vec<String> = (0..55).map(|n| format!("G{n:02}")).collect();
    let stays = d.user("stays");
    for (n, name) in names.iter().enumerate() {
        let user = d.user(&format!("m{n:02}"));
        // A groupOfNames keeps at least one member: G00 holds a second.
        let members = if n == 0 { vec![user, stays.clone()] } else { vec![user] };
        d.group(name, &members);
    }
    let env = Env(Stack::start(&d, |_| {}));
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    assert_eq!(common::sync_json(&env.config(&all, DEACTIVATE), &[]).0, 0);
    // m00 leaves G00, which the first search reads; the second search is cut off.
    env.leave("G00", "m00");
    let counting = common::CutProxy::counting(env.slapd.port);
    assert_eq!(common::sync_json(&env.config_at(&counting.url(), &all[..50], DEACTIVATE), &["--dry-run"]).0, 0);
    let proxy = common::CutProxy::start(env.slapd.port, counting.forwarded());

    let (code, report, _) = common::sync_json(&env.config_at(&proxy.url(), &all, DEACTIVATE), &[]);

    assert_eq!(code, 3, "{report}");
    assert_eq!(report["groups"][54]["error_kind"], "search", "{report}");
    assert!(leavers(&report)["skipped"].as_str().unwrap().contains("not a complete run"), "{report}");
    assert!(env.active("m00").await, "m00 did leave, but this run cannot know who else did");
    assert_eq!(env.puts().await, 0);
}
