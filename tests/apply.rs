//! `apply`'s fallbacks, in process: a real slapd, the simulator in the test process, and the library's own
//! snapshot, plan and apply called directly, so each case shows exactly which calls one group costs.

mod common;

use std::time::Duration;

use cloudshell_ldap_sync::cloudshell::{CallKind, Client};
use cloudshell_ldap_sync::group_name::GroupName;
use cloudshell_ldap_sync::ldap;
use cloudshell_ldap_sync::report::Imports;
use cloudshell_ldap_sync::sync::apply::apply_group;
use cloudshell_ldap_sync::sync::plan::{self, GroupPlan, Policy, ReadyGroup};
use common::{Directory, Sim, Slapd};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Reads `group` from `slapd`, lists the simulator's users and plans, as a run does.
async fn ready_group(slapd: &Slapd, client: &Client, group: &str) -> ReadyGroup {
    let snapshot = ldap::snapshot(&common::ldap_settings(&slapd.url()), &[GroupName::new(group)]).await.unwrap();
    let users = client.list_users().await.unwrap();
    let plan = plan::plan(snapshot, &users, Policy { max_imports_per_run: 1000, ..Default::default() });
    match plan.groups.into_iter().next() {
        Some(GroupPlan::Ready(ready)) => ready,
        other => panic!("{group} was not enumerated: {other:?}"),
    }
}

async fn apply(client: &Client, group: &ReadyGroup) -> Imports {
    apply_group(client, group, 4, &CancellationToken::new()).await
}

fn imported(imports: &Imports) -> Vec<String> {
    let mut names: Vec<String> = imports.imported.iter().map(|u| u.to_string()).collect();
    names.sort();
    names
}

/// The import calls the simulator saw, as the body each carried.
async fn import_bodies(sim: &Sim) -> Vec<serde_json::Value> {
    sim.calls_to("POST", "/api/v1/integrations/IdentityManagement/users")
        .await
        .into_iter()
        .map(|c| c["body"].clone())
        .collect()
}

#[tokio::test]
async fn a_refused_group_falls_back_to_a_nested_group_then_to_users() {
    let mut d = Directory::new();
    let inner_members = d.users("inner", 2);
    let inner = d.group("Inner", &inner_members);
    let mut team_members = d.users("team", 3);
    team_members.push(inner);
    d.group("Team", &team_members);
    let slapd = Slapd::start(&d);
    // Team has 3 direct users, over the limit of 2; Inner's 2 are within it.
    let sim = Sim::with_directory(&slapd, |c| c.group_import_limit = 2);
    let client = Client::new(common::cloudshell_settings(&sim.url())).unwrap();
    let team = ready_group(&slapd, &client, "Team").await;
    assert!(team.by_name);
    sim.clear_calls().await;

    let imports = apply(&client, &team).await;

    assert!(imports.failures.is_empty(), "{:?}", imports.failures);
    assert_eq!(imported(&imports), ["inner00000", "inner00001", "team00000", "team00001", "team00002"]);
    let bodies = import_bodies(&sim).await;
    assert_eq!(bodies[0], json!({"GroupName": "Team"}), "{bodies:?}");
    assert_eq!(bodies[1], json!({"GroupName": "Inner"}), "the nested group covers two: one call");
    let mut users: Vec<&str> = bodies[2..].iter().map(|b| b["UserName"].as_str().unwrap()).collect();
    users.sort();
    assert_eq!(users, ["team00000", "team00001", "team00002"], "the rest one by one");
    let calls = client.calls();
    assert_eq!((calls.get(CallKind::ImportGroup), calls.get(CallKind::ImportUser)), (2, 3));
}

#[tokio::test]
async fn errors_in_a_group_import_answer_are_retried_alone_then_reported_by_name() {
    let mut d = Directory::new();
    let members = d.users("m", 3);
    d.group("Mixed", &members);
    let slapd = Slapd::start(&d);
    let sim = Sim::with_directory(&slapd, |_| {});
    sim.set_faults(json!({"fail_import_users": ["m00001"]})).await;
    let client = Client::new(common::cloudshell_settings(&sim.url())).unwrap();
    let group = ready_group(&slapd, &client, "Mixed").await;
    sim.clear_calls().await;

    let imports = apply(&client, &group).await;

    assert_eq!(imported(&imports), ["m00000", "m00002"]);
    assert_eq!(imports.failures.len(), 1, "{:?}", imports.failures);
    assert_eq!(imports.failures[0].username.as_str(), "m00001");
    assert!(imports.failures[0].reason.contains("500"), "{}", imports.failures[0].reason);
    let bodies = import_bodies(&sim).await;
    assert_eq!(bodies, [json!({"GroupName": "Mixed"}), json!({"UserName": "m00001"})]);
    assert_eq!(sim.usernames().await.len(), 3, "admin and the two that could be imported");
}

#[tokio::test]
async fn a_lost_group_import_answer_is_checked_by_listing_not_repeated() {
    let mut d = Directory::new();
    let members = d.users("late", 4);
    d.group("Late", &members);
    let slapd = Slapd::start(&d);
    let sim = Sim::with_directory(&slapd, |_| {});
    let settings = cloudshell_ldap_sync::cloudshell::Settings {
        timeout: Duration::from_millis(700),
        ..common::cloudshell_settings(&sim.url())
    };
    let client = Client::new(settings).unwrap();
    let group = ready_group(&slapd, &client, "Late").await;
    // The import takes effect, but its answer comes after the client gave up on it.
    sim.set_faults(json!({"slow": {"count": 1, "delay_ms": 1500, "path_contains": "IdentityManagement"}})).await;
    sim.clear_calls().await;

    let imports = apply(&client, &group).await;

    assert!(imports.failures.is_empty(), "{:?}", imports.failures);
    assert_eq!(imported(&imports), ["late00000", "late00001", "late00002", "late00003"]);
    assert_eq!(import_bodies(&sim).await, [json!({"GroupName": "Late"})], "nobody imported twice");
    assert_eq!(client.calls().get(CallKind::ListUsers), 2, "one listing before, one to verify");
}

#[tokio::test]
async fn a_stop_request_before_the_per_user_imports_leaves_them_not_attempted() {
    let mut d = Directory::new();
    let members = d.users("s", 3);
    d.group("Stopped", &members);
    let slapd = Slapd::start(&d);
    let sim = Sim::with_directory(&slapd, |c| c.group_import_limit = 1);
    let client = Client::new(common::cloudshell_settings(&sim.url())).unwrap();
    let group = ready_group(&slapd, &client, "Stopped").await;
    let stop = CancellationToken::new();
    stop.cancel();
    sim.clear_calls().await;

    let imports = apply_group(&client, &group, 4, &stop).await;

    assert_eq!((imports.imported.len(), imports.not_attempted), (0, 3));
    // The run checks the stop before it enters a group; inside, the fallbacks check it before each call.
    assert_eq!(import_bodies(&sim).await, [json!({"GroupName": "Stopped"})], "no per-user call after the stop");
}

/// A change for CloudShell group `id` adding `users` (name, CloudShell id).
fn change(id: i64, users: &[(&str, i64)]) -> cloudshell_ldap_sync::sync::membership::GroupChange {
    use cloudshell_ldap_sync::sync::membership::{GroupChange, Placement};
    use cloudshell_ldap_sync::username::Username;
    GroupChange {
        name: "Lab Users".into(),
        id: Some(id),
        fed_by: vec![GroupName::new("Team")],
        current: 0,
        add: users.iter().map(|(n, id)| Placement { username: Username::new(n).unwrap(), id: Some(*id) }).collect(),
        remove: Vec::new(),
        additions_only: None,
        held_removals: Vec::new(),
    }
}

#[tokio::test]
async fn membership_changes_go_in_batches_of_the_configured_size() {
    let sim = Sim::start(cloudshell_sim::Config {
        existing_users: vec!["u1".into(), "u2".into(), "u3".into()],
        ..Default::default()
    });
    let client = Client::new(common::cloudshell_settings(&sim.url())).unwrap();
    let ids: Vec<(String, i64)> = client
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .filter_map(|u| Some((u.username?.to_string(), u.id?)))
        .filter(|(name, _)| name.starts_with('u'))
        .collect();
    let users: Vec<(&str, i64)> = ids.iter().map(|(n, id)| (n.as_str(), *id)).collect();

    let placed = cloudshell_ldap_sync::sync::place::apply_change(
        &client,
        &change(2, &users),
        2,
        None,
        &CancellationToken::new(),
    )
    .await;

    assert_eq!((placed.added.len(), placed.failures.len()), (3, 0));
    let adds = sim.calls_to("POST", "/api/v1/groups/2/Users").await;
    let sizes: Vec<usize> = adds.iter().map(|c| c["body"]["Users"].as_array().unwrap().len()).collect();
    assert_eq!(sizes, [2, 1]);
    assert_eq!(sim.group_members("Lab Users").await, ["u1", "u2", "u3"]);
}

#[tokio::test]
async fn a_cloudshell_group_deleted_before_the_change_fails_its_users_and_stops() {
    let sim =
        Sim::start(cloudshell_sim::Config { existing_users: vec!["u1".into(), "u2".into()], ..Default::default() });
    let client = Client::new(common::cloudshell_settings(&sim.url())).unwrap();

    let placed = cloudshell_ldap_sync::sync::place::apply_change(
        &client,
        &change(99, &[("u1", 2), ("u2", 3)]),
        1,
        None,
        &CancellationToken::new(),
    )
    .await;

    assert_eq!(placed.added.len(), 0);
    assert_eq!(placed.failures.len(), 2, "both reported, none dropped");
    assert!(placed.failures.iter().all(|f| f.reason.contains("gone")), "{:?}", placed.failures);
    assert_eq!(
        sim.calls_to("POST", "/api/v1/groups/99/Users").await.len(),
        1,
        "the first batch learns it; no more calls"
    );
}
