//! CloudShell group membership end to end: the real binary, a real slapd and the simulator. Directory
//! groups mapped to CloudShell groups; members placed, leavers taken out only when asked, never the wrong
//! users, never on partial data.

mod common;

use std::path::PathBuf;

use common::{Directory, Env, GROUPS, PEOPLE, Stack};
use serde_json::{Value, json};

/// `Eng`: alice, bob and nested `EngInner` (carol, dave). `Ops`: erin, frank.
fn directory() -> Directory {
    let mut d = Directory::new();
    let [alice, bob, carol, dave, erin, frank] = ["alice", "bob", "carol", "dave", "erin", "frank"].map(|u| d.user(u));
    let inner = d.group("EngInner", &[carol, dave]);
    d.group("Eng", &[alice, bob, inner]);
    d.group("Ops", &[erin, frank]);
    d
}

/// `Eng` feeds `Lab Users` and `Engineering`; `Ops` feeds `Lab Users`.
const MAPPINGS: &str = r#"
[[sync.mapping]]
directory_group = "Eng"
cloudshell_groups = ["Lab Users", "Engineering"]

[[sync.mapping]]
directory_group = "Ops"
cloudshell_groups = ["Lab Users"]
"#;

impl Env {
    /// The stack with CloudShell groups `Lab Users` (built in) and `Engineering`; bob exists already.
    async fn start() -> Env {
        let env = Env(Stack::start(&directory(), |c| c.groups = vec!["Engineering".into()]));
        env.sim.add_directory_users(&["bob"], &[], false).await;
        env
    }

    /// A config with `sync_keys` in `[sync]` (before the mappings) and `mappings`.
    fn config(&self, sync_keys: &str, mappings: &str) -> PathBuf {
        // A state directory: removals need one (their shrink guard is kept there).
        let state = format!("[monitor]\nstate_directory = \"{}\"\n", self.files.path("state").display());
        self.files.config(&self.slapd.url(), &self.sim.url(), &[], &format!("{sync_keys}\n{mappings}"), &state)
    }

    /// The membership calls made so far: (method, path).
    async fn membership_calls(&self) -> Vec<(String, String)> {
        self.sim
            .calls()
            .await
            .into_iter()
            .filter(|c| c["method"] != "GET" && c["path"].as_str().is_some_and(|p| p.starts_with("/api/v1/groups/")))
            .map(|c| (c["method"].as_str().unwrap().to_string(), c["path"].as_str().unwrap().to_string()))
            .collect()
    }

    /// gina, a new hire in `Ops`.
    fn hire_gina(&self) {
        self.slapd.modify(&format!(
            "dn: uid=gina,{PEOPLE}\nchangetype: add\nobjectClass: inetOrgPerson\nuid: gina\ncn: gina\nsn: gina\n\n\
             dn: cn=Ops,{GROUPS}\nchangetype: modify\nadd: member\nmember: uid=gina,{PEOPLE}\n\n"
        ));
    }

    fn leave(&self, group: &str, user: &str) {
        self.slapd.modify(&format!(
            "dn: cn={group},{GROUPS}\nchangetype: modify\ndelete: member\nmember: uid={user},{PEOPLE}\n\n"
        ));
    }
}

fn membership<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["memberships"]
        .as_array()
        .unwrap_or_else(|| panic!("no memberships in {report}"))
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("no membership entry for {name} in {report}"))
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect()
}

#[tokio::test]
async fn effective_members_are_placed_in_every_mapped_group_in_the_run_that_imports_them() {
    let env = Env::start().await;
    let config = env.config("", MAPPINGS);

    let (code, report, stderr) = common::sync_json(&config, &[]);

    assert_eq!(code, 0, "{report}\n{stderr}");
    assert_eq!(env.sim.group_members("Lab Users").await, ["alice", "bob", "carol", "dave", "erin", "frank"]);
    assert_eq!(env.sim.group_members("Engineering").await, ["alice", "bob", "carol", "dave"], "nested members too");
    let lab = membership(&report, "Lab Users");
    assert_eq!(
        (lab["status"].as_str(), lab["added"].as_u64(), lab["removed"].as_u64()),
        (Some("ok"), Some(6), Some(0))
    );
    assert_eq!(strings(&lab["fed_by"]), ["Eng", "Ops"]);
    assert_eq!(report["api_calls"]["add_to_group"], 2, "one batch per CloudShell group");
    assert_eq!(report["api_calls"]["remove_from_group"], 0);
    assert_eq!(report["api_calls"]["list_users"], 1, "the new users' ids from the imports' answers, not a second list");
    assert_eq!(
        strings(&report["groups"].as_array().unwrap().iter().map(|g| g["name"].clone()).collect::<Value>()),
        ["Eng", "Ops"]
    );
    assert!(stderr.contains("member added to group"), "{stderr}");

    env.sim.clear_calls().await;
    let (code, report, _) = common::sync_json(&config, &[]);
    assert_eq!(code, 0, "{report}");
    assert!(env.membership_calls().await.is_empty(), "a second run makes no membership call");
    assert_eq!(
        (membership(&report, "Lab Users")["added"].as_u64(), membership(&report, "Lab Users")["members"].as_u64()),
        (Some(0), Some(6))
    );
}

#[tokio::test]
async fn a_member_who_leaves_the_directory_group_leaves_the_cloudshell_group_only_when_asked() {
    let env = Env::start().await;
    assert_eq!(common::sync_json(&env.config("", MAPPINGS), &[]).0, 0);
    env.leave("Ops", "frank");

    let (code, report, _) = common::sync_json(&env.config("", MAPPINGS), &[]);
    assert_eq!(code, 0, "{report}");
    assert!(env.sim.group_members("Lab Users").await.contains(&"frank".to_string()), "without remove_from_groups");
    assert!(env.membership_calls().await.iter().all(|(m, _)| m != "DELETE"));

    let (code, report, stderr) = common::sync_json(&env.config("remove_from_groups = true", MAPPINGS), &[]);
    assert_eq!(code, 0, "{report}\n{stderr}");
    assert!(!env.sim.group_members("Lab Users").await.contains(&"frank".to_string()));
    assert!(env.sim.usernames().await.contains(&"frank".to_string()), "frank stays in CloudShell");
    assert_eq!(strings(&membership(&report, "Lab Users")["removed_users"]), ["frank"]);
    assert_eq!(report["api_calls"]["remove_from_group"], 1);
    assert!(stderr.contains("member removed from group"), "{stderr}");
}

#[tokio::test]
async fn local_users_and_admins_in_a_mapped_group_are_never_removed() {
    let env = Env::start().await;
    env.sim.add_local_users(&["localla"], &["Lab Users"]).await;
    env.sim.add_directory_users(&["boss"], &["Lab Users"], true).await;
    env.sim.add_directory_users(&["stray"], &["Lab Users"], false).await;

    let (code, report, _) = common::sync_json(&env.config("remove_from_groups = true", MAPPINGS), &[]);

    assert_eq!(code, 0, "{report}");
    let members = env.sim.group_members("Lab Users").await;
    assert!(members.contains(&"localla".to_string()) && members.contains(&"boss".to_string()), "{members:?}");
    assert!(!members.contains(&"stray".to_string()), "a directory user in no mapped group is removed");
    assert_eq!(strings(&membership(&report, "Lab Users")["removed_users"]), ["stray"]);
}

#[tokio::test]
async fn a_directory_group_that_fails_to_enumerate_stops_removals_from_the_groups_it_feeds() {
    let env = Env::start().await;
    env.sim.add_directory_users(&["stray"], &["Lab Users", "Engineering"], false).await;
    let mappings =
        format!("{MAPPINGS}\n[[sync.mapping]]\ndirectory_group = \"Vanished\"\ncloudshell_groups = [\"Lab Users\"]\n");

    let (code, report, _) = common::sync_json(&env.config("remove_from_groups = true", &mappings), &[]);

    assert_eq!(code, 3, "a group that failed to enumerate: partial\n{report}");
    let lab = membership(&report, "Lab Users");
    assert!(env.sim.group_members("Lab Users").await.contains(&"stray".to_string()), "nothing removed: {lab}");
    assert_eq!(lab["added"], 6, "additions still made");
    assert!(lab["additions_only"].as_str().unwrap().contains("Vanished"), "{lab}");
    assert!(!env.sim.group_members("Engineering").await.contains(&"stray".to_string()), "Engineering is complete");
}

#[tokio::test]
async fn more_removals_than_the_limit_hold_every_removal_but_make_the_additions() {
    let env = Env::start().await;
    env.sim.add_directory_users(&["s1", "s2", "s3"], &["Lab Users"], false).await;

    let (code, report, stderr) =
        common::sync_json(&env.config("remove_from_groups = true\nmax_removals_per_run = 2", MAPPINGS), &[]);

    assert_eq!(code, 4, "{report}\n{stderr}");
    assert_eq!(report["removals_held"], json!({"planned": 3, "limit": 2}));
    let members = env.sim.group_members("Lab Users").await;
    assert!(["s1", "s2", "s3", "alice", "frank"].iter().all(|u| members.contains(&u.to_string())), "{members:?}");
    assert_eq!(report["api_calls"]["remove_from_group"], 0);
    assert_eq!(membership(&report, "Lab Users")["status"], "held");
    assert!(stderr.contains("membership removals held"), "{stderr}");
}

#[tokio::test]
async fn a_mapped_cloudshell_group_that_does_not_exist_fails_alone() {
    let env = Env::start().await;
    let mappings = "[[sync.mapping]]\ndirectory_group = \"Eng\"\ncloudshell_groups = [\"Nowhere\", \"Engineering\"]\n";

    let (code, report, stderr) = common::sync_json(&env.config("", mappings), &[]);

    assert_eq!(code, 3, "{report}");
    let nowhere = membership(&report, "Nowhere");
    assert_eq!(nowhere["status"], "failed");
    assert!(nowhere["error"].as_str().unwrap().contains("never creates"), "{nowhere}");
    assert_eq!(env.sim.group_members("Engineering").await, ["alice", "bob", "carol", "dave"]);
    assert!(stderr.contains("cloudshell group not found"), "{stderr}");
    assert!(!env.sim.state().await["groups"].as_array().unwrap().iter().any(|g| g["Name"] == "Nowhere"));
}

#[tokio::test]
async fn errors_in_an_add_answer_are_retried_alone_once_then_reported() {
    let env = Env::start().await;
    // The first add answers 202 naming erin (frank goes in); alone, she goes in too.
    let rule = |count| json!({"fail_membership": {"usernames": ["erin"], "count": count}});
    env.sim.set_faults(rule(1)).await;
    let mappings = "[[sync.mapping]]\ndirectory_group = \"Ops\"\ncloudshell_groups = [\"Engineering\"]\n";
    let (code, report, _) = common::sync_json(&env.config("", mappings), &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(env.sim.group_members("Engineering").await, ["erin", "frank"]);
    assert_eq!(report["api_calls"]["add_to_group"], 2, "the batch, then the named user alone");

    // Named twice: reported failed by name, the run partial.
    let env = Env::start().await;
    env.sim.set_faults(rule(2)).await;
    let (code, report, _) = common::sync_json(&env.config("", mappings), &[]);
    assert_eq!(code, 3, "{report}");
    let eng = membership(&report, "Engineering");
    assert_eq!(eng["status"], "partial");
    assert_eq!(eng["failures"][0]["username"], "erin");
    assert!(eng["failures"][0]["reason"].as_str().unwrap().contains("injected membership failure"), "{eng}");
    assert_eq!(env.sim.group_members("Engineering").await, ["frank"]);
}

#[tokio::test]
async fn a_lost_add_answer_is_checked_by_reading_the_group_not_repeated() {
    let env = Env::start().await;
    env.sim.set_faults(json!({"reset": {"count": 1, "method": "POST", "path_contains": "/api/v1/groups/"}})).await;
    let mappings = "[[sync.mapping]]\ndirectory_group = \"Ops\"\ncloudshell_groups = [\"Engineering\"]\n";

    let (code, report, stderr) = common::sync_json(&env.config("", mappings), &[]);

    assert_eq!(code, 0, "{report}\n{stderr}");
    assert_eq!(env.sim.group_members("Engineering").await, ["erin", "frank"]);
    assert_eq!(report["api_calls"]["add_to_group"], 1, "the change took effect: not sent again");
    assert!(report["api_calls"]["list_group_users"].as_u64().unwrap() >= 1, "the group was read to check");
    assert!(stderr.contains("membership change answer lost"), "{stderr}");
}

#[tokio::test]
async fn a_burst_of_503s_on_a_removal_is_retried() {
    let env = Env::start().await;
    env.sim.add_directory_users(&["stray"], &["Engineering"], false).await;
    env.sim.set_faults(json!({"fail": {"count": 2, "status": 503, "method": "DELETE"}})).await;
    let mappings = "[[sync.mapping]]\ndirectory_group = \"Ops\"\ncloudshell_groups = [\"Engineering\"]\n";

    let (code, report, _) = common::sync_json(&env.config("remove_from_groups = true", mappings), &[]);

    assert_eq!(code, 0, "{report}");
    assert_eq!(env.sim.group_members("Engineering").await, ["erin", "frank"]);
    assert_eq!(report["api_calls"]["remove_from_group"], 3, "two 503s, then done");
}

#[tokio::test]
async fn a_dry_run_prints_the_plan_and_writes_nothing() {
    let env = Env::start().await;
    env.sim.add_directory_users(&["stray"], &["Engineering"], false).await;
    let config = env.config("remove_from_groups = true", MAPPINGS);
    env.sim.clear_calls().await;

    let out = common::cli(&["sync", "--dry-run", "--config", config.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);

    assert_eq!(out.status.code(), Some(0), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("cloudshell group \"Engineering\""), "{text}");
    assert!(text.contains("would add: alice, bob, carol, dave"), "{text}");
    assert!(text.contains("would remove: stray"), "{text}");
    assert!(env.membership_calls().await.is_empty());
    assert!(
        env.sim.calls().await.iter().all(|c| c["method"] == "GET" || c["path"] == "/Api/Auth/Login"),
        "no write at all"
    );
    let (_, report, _) = common::sync_json(&config, &["--dry-run"]);
    assert_eq!(strings(&membership(&report, "Engineering")["planned_remove"]), ["stray"]);
    assert_eq!(membership(&report, "Engineering")["status"], "planned");
}

#[tokio::test]
async fn a_server_that_leaves_out_group_ids_is_read_group_by_group() {
    let env = Env::start().await;
    env.sim.omit_group_ids(true).await;
    let config = env.config("remove_from_groups = true", MAPPINGS);

    let (code, report, _) = common::sync_json(&config, &[]);

    assert_eq!(code, 0, "{report}");
    assert_eq!(env.sim.group_members("Engineering").await, ["alice", "bob", "carol", "dave"]);
    assert_eq!(report["api_calls"]["list_group_users"], 2, "each mapped group read once");
    env.sim.clear_calls().await;
    let (code, report, _) = common::sync_json(&config, &[]);
    assert_eq!(code, 0, "{report}");
    assert!(env.membership_calls().await.is_empty(), "nothing to change, nothing removed by mistake");
}

#[tokio::test]
async fn errors_that_name_nobody_are_settled_by_reading_the_group() {
    let env = Env::start().await;
    // A 202 whose entry names no user (and a server that did nothing): the group is read to see who is missing.
    let body = json!({"Errors": ["something went wrong"]}).to_string();
    let fail = json!({"count": 1, "status": 202, "body": body, "method": "POST", "path_contains": "/api/v1/groups/"});
    env.sim.set_faults(json!({ "fail": fail })).await;
    let mappings = "[[sync.mapping]]\ndirectory_group = \"Ops\"\ncloudshell_groups = [\"Engineering\"]\n";

    let (code, report, _) = common::sync_json(&env.config("", mappings), &[]);

    assert_eq!(code, 0, "{report}");
    assert_eq!(env.sim.group_members("Engineering").await, ["erin", "frank"]);
    assert_eq!(report["api_calls"]["add_to_group"], 3, "the batch, then each still missing alone");
    assert!(report["api_calls"]["list_group_users"].as_u64().unwrap() >= 1);
}

#[tokio::test]
async fn check_names_each_mapped_group_and_the_status_file_keeps_the_memberships() {
    let env = Env::start().await;
    let mappings =
        format!("{MAPPINGS}\n[[sync.mapping]]\ndirectory_group = \"Ops\"\ncloudshell_groups = [\"Nowhere\"]\n");
    let state = env.files.path("state");
    let config = env.files.config(
        &env.slapd.url(),
        &env.sim.url(),
        &[],
        &mappings,
        &format!("[monitor]\nstate_directory = \"{}\"\n", state.display()),
    );

    let out = common::cli(&["check", "--config", config.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "a missing CloudShell group is a problem\n{text}");
    assert!(text.contains("cloudshell group \"Lab Users\": id 2, 0 members (mapped from Eng, Ops)"), "{text}");
    assert!(text.contains("cloudshell group \"Nowhere\": MISSING (mapped from Ops)"), "{text}");
    assert!(env.membership_calls().await.is_empty(), "check changes nothing");
    assert_eq!(env.sim.calls_to("PUT", "/Api/Auth/Login").await.len(), 1, "one login for the probe and the groups");

    let (code, _, _) = common::sync_json(&config, &[]);
    assert_eq!(code, 3);
    let status: Value = serde_json::from_str(&std::fs::read_to_string(state.join("status.json")).unwrap()).unwrap();
    let lab = status["last_run"]["memberships"].as_array().unwrap().iter().find(|m| m["name"] == "Lab Users").unwrap();
    assert_eq!(
        (lab["status"].as_str(), lab["added"].as_u64(), lab["members"].as_u64()),
        (Some("ok"), Some(6), Some(6))
    );
}

#[tokio::test]
async fn a_run_held_by_the_import_limit_changes_no_membership_and_says_so() {
    let env = Env::start().await;
    let (code, report, _) = common::sync_json(&env.config("max_imports_per_run = 2", MAPPINGS), &[]);
    assert_eq!(code, 4, "{report}");
    assert!(env.membership_calls().await.is_empty());
    let lab = membership(&report, "Lab Users");
    assert_eq!(lab["status"], "held");
    assert!(lab["error"].as_str().unwrap().contains("max_imports_per_run"), "{lab}");
}

/// A removal is sent only when a second read of the directory, made after the plan, agrees with it. The run's
/// read sees frank gone from `Ops` and dave from `EngInner`; while the run imports a new hire (its call held),
/// frank is added back, as a rename or a change racing the read would look. frank is left alone in `Lab Users`,
/// reported with why and recorded in the audit trail; dave, the control, is removed from both groups in the same
/// run. The next run finds frank where he is: nothing to remove.
#[tokio::test]
async fn a_removal_the_directory_disagrees_with_just_before_the_call_is_left_alone() {
    let env = Env::start().await;
    let config = env.config("remove_from_groups = true", MAPPINGS);
    assert_eq!(common::sync_json(&config, &[]).0, 0);
    env.leave("EngInner", "dave");
    env.leave("Ops", "frank");
    // gina, a new hire in `Ops`: the run imports her, and that call is held.
    env.hire_gina();
    let run = common::sync_held_at_import(&env.sim, &config).await;
    env.slapd.modify(&format!("dn: cn=Ops,{GROUPS}\nchangetype: modify\nadd: member\nmember: uid=frank,{PEOPLE}\n\n"));
    let (code, report, stderr) = run.await.unwrap();

    assert_eq!(code, 0, "left alone is not a failure: {report}\n{stderr}");
    let lab = membership(&report, "Lab Users");
    assert_eq!(strings(&lab["removed_users"]), ["dave"], "the control: {lab}");
    let reason = "a member of a mapped directory group again when the directory was read again before removing: \
                  the next run decides";
    assert_eq!(lab["left_alone"], json!([{"username": "frank", "reason": reason}]), "{lab}");
    assert_eq!(env.sim.group_members("Lab Users").await, ["alice", "bob", "carol", "erin", "frank", "gina"]);
    assert_eq!(env.sim.group_members("Engineering").await, ["alice", "bob", "carol"], "the control");
    assert!(stderr.contains("removal not confirmed by a second read"), "{stderr}");
    let history = common::history_json(&config, "frank");
    assert!(history.contains("removal not sent: a member of a mapped directory group again"), "{history}");

    let (code, report, _) = common::sync_json(&config, &[]);
    assert_eq!(code, 0, "{report}");
    let lab = membership(&report, "Lab Users");
    assert!(strings(&lab["planned_remove"]).is_empty() && lab.get("left_alone").is_none(), "{lab}");
    assert_eq!(env.sim.group_members("Lab Users").await, ["alice", "bob", "carol", "erin", "frank", "gina"]);
}

/// A second read that cannot be made (the directory gone between the run's read and its removals) sends no
/// removal: each CloudShell group that had one says why and is not `ok` (exit 3). (gina's import fails too: the
/// simulator resolves the group from the same slapd.) The control is the test above: the same removal of dave, with the directory there, is sent.
#[tokio::test]
async fn no_removal_is_sent_when_the_directory_cannot_be_read_again() {
    let mut env = Env::start().await;
    let config = env.config("remove_from_groups = true", MAPPINGS);
    assert_eq!(common::sync_json(&config, &[]).0, 0);
    env.leave("EngInner", "dave");
    env.hire_gina();
    let run = common::sync_held_at_import(&env.sim, &config).await;
    env.0.slapd.kill();
    let (code, report, stderr) = run.await.unwrap();

    assert_eq!(code, 3, "{report}\n{stderr}");
    for name in ["Lab Users", "Engineering"] {
        let line = membership(&report, name);
        assert_eq!(line["status"], "failed", "{line}");
        assert_eq!(line["removed"], 0, "{line}");
        let why = line["additions_only"].as_str().unwrap_or_default();
        assert!(why.starts_with("removals not sent: the directory could not be read again"), "{line}");
    }
    assert!(env.sim.group_members("Engineering").await.contains(&"dave".to_string()));
    assert!(stderr.contains("directory not read again, nobody deactivated or removed"), "{stderr}");
}
