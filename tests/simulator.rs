//! The simulator against the reference (`docs/cloudshell-api.md`): answer shapes, pagination, import
//! semantics, case-insensitivity and fault injection, over plain HTTP.

mod common;

use common::{Directory, Sim, Slapd};
use reqwest::StatusCode;
use serde_json::{Value, json};

struct Api {
    base: String,
    http: reqwest::Client,
    token: String,
}

impl Api {
    async fn login(sim: &Sim) -> Api {
        let http = reqwest::Client::new();
        let r = http
            .put(format!("{}/Api/Auth/Login", sim.url()))
            .json(&json!({"Username": "admin", "Password": "admin", "Domain": "Global"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let token: Value = r.json().await.unwrap();
        Api { base: sim.url(), http, token: token.as_str().expect("the token is a bare JSON string").to_string() }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("Authorization", format!("Basic {}", self.token));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() })
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    async fn import(&self, body: Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::POST, "/api/v1/integrations/IdentityManagement/users", Some(body)).await
    }
}

fn names(list: &Value, key: &str) -> Vec<String> {
    list.as_array().unwrap().iter().map(|v| v[key].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn login_answers_a_bare_string_token_and_refuses_bad_credentials() {
    let sim = Sim::start(Default::default());
    let http = reqwest::Client::new();
    // Lower-case path, lower-case field names and a trailing comma, as Quali's own examples have.
    let r = http
        .put(format!("{}/api/auth/login", sim.url()))
        .header("Content-Type", "application/json")
        .body(r#"{"username": "admin", "password": "admin", "domain": "Global", "Token": null,}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let token: Value = r.json().await.unwrap();
    assert!(token.as_str().is_some_and(|t| t.len() >= 16), "{token}");

    let r = http
        .put(format!("{}/Api/Auth/Login", sim.url()))
        .json(&json!({"Username": "admin", "Password": "wrong", "Domain": "Global"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let body: Value = r.json().await.unwrap();
    assert!(body["Message"].is_string());
    // The call log never holds the password.
    let calls = sim.calls().await;
    assert_eq!(calls[0]["body"]["password"], "***");
}

#[tokio::test]
async fn every_call_needs_a_live_token_with_either_scheme() {
    let sim = Sim::start(Default::default());
    let api = Api::login(&sim).await;
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/users", sim.url());
    assert_eq!(http.get(&url).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let wrong = http.get(&url).header("Authorization", "Basic nope").send().await.unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    for scheme in ["Basic", "Bearer", "bearer"] {
        let r = http.get(&url).header("Authorization", format!("{scheme} {}", api.token)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "scheme {scheme}");
    }
    let calls = sim.calls().await;
    let schemes: Vec<&str> = calls.iter().filter_map(|c| c["auth_scheme"].as_str()).collect();
    assert_eq!(schemes, ["Basic", "Basic", "Bearer", "bearer"]);
}

#[tokio::test]
async fn users_list_in_the_documented_shape() {
    let sim = Sim::start(cloudshell_sim::Config { existing_users: vec!["jdoe".into()], ..Default::default() });
    let api = Api::login(&sim).await;
    let (status, body) = api.get("/API/V1/Users").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["Cursor"], Value::Null);
    let users = body["Users"].as_array().unwrap();
    assert_eq!(users.len(), 2);
    let jdoe = users.iter().find(|u| u["Username"] == "jdoe").unwrap();
    // Every field of the documented User object is present, nulls written out.
    for field in [
        "Id",
        "Sid",
        "Username",
        "Email",
        "IsActive",
        "IsAdmin",
        "GroupIds",
        "TimeZoneInfoId",
        "MaxReservationDuration",
        "MaxConcurrentReservations",
        "MaxScheduledSandboxes",
        "MaxOwnedBlueprints",
        "MaxSavedSandboxes",
        "DomainRoles",
        "DomainName",
        "ImportedSid",
    ] {
        assert!(jdoe.as_object().unwrap().contains_key(field), "missing {field}");
    }
    assert!(jdoe["Id"].is_i64());
    assert_eq!(jdoe["GroupIds"], json!([1]));
    assert_eq!(jdoe["DomainName"], Value::Null);
    let admin = users.iter().find(|u| u["Username"] == "admin").unwrap();
    assert_eq!(admin["GroupIds"], json!([-1, 1]));
}

#[tokio::test]
async fn pagination_follows_cursors_and_refuses_limits_over_250() {
    let existing: Vec<String> = (0..120).map(|n| format!("user{n:03}")).collect();
    let sim = Sim::start(cloudshell_sim::Config { existing_users: existing, ..Default::default() });
    let api = Api::login(&sim).await;

    let (status, body) = api.get("/api/v1/users?paginationProperties.limit=251").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["Message"].as_str().unwrap().contains("250"));
    assert_eq!(api.get("/api/v1/users?paginationProperties.limit=0").await.0, StatusCode::BAD_REQUEST);
    assert_eq!(api.get("/api/v1/users?paginationProperties.cursor=%21%21").await.0, StatusCode::BAD_REQUEST);

    // Default page size is 50.
    let (_, first) = api.get("/api/v1/users").await;
    assert_eq!(first["Users"].as_array().unwrap().len(), 50);
    assert!(first["Cursor"].is_string());

    // Pages of 50 cover all 121 users exactly once, in name order.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => "/api/v1/users?paginationProperties.limit=50".to_string(),
            Some(c) => {
                format!("/api/v1/users?paginationProperties.limit=50&paginationProperties.cursor={}", urlencode(c))
            }
        };
        let (status, page) = api.get(&path).await;
        assert_eq!(status, StatusCode::OK);
        seen.extend(names(&page["Users"], "Username"));
        match page["Cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let mut expected: Vec<String> = (0..120).map(|n| format!("user{n:03}")).collect();
    expected.insert(0, "admin".into());
    assert_eq!(seen, expected);

    // Descending order, sort by Id and a substring filter.
    let (_, desc) = api.get("/api/v1/users?paginationProperties.limit=2&paginationProperties.sort-order=-1").await;
    assert_eq!(names(&desc["Users"], "Username"), ["user119", "user118"]);
    let (_, by_id) = api.get("/api/v1/users?paginationProperties.limit=2&paginationProperties.sort-by=Id").await;
    assert_eq!(names(&by_id["Users"], "Username"), ["admin", "user000"]);
    let (_, filtered) = api.get("/api/v1/users?paginationProperties.filter=ER11").await;
    assert_eq!(filtered["Users"].as_array().unwrap().len(), 10);
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn users_can_be_read_edited_and_deleted() {
    let sim = Sim::start(cloudshell_sim::Config { existing_users: vec!["jdoe".into()], ..Default::default() });
    let api = Api::login(&sim).await;
    let (_, list) = api.get("/api/v1/users?paginationProperties.filter=jdoe").await;
    let id = list["Users"][0]["Id"].as_i64().unwrap();

    let (status, user) = api.get(&format!("/api/v1/users/{id}")).await;
    assert_eq!((status, user["Username"].as_str()), (StatusCode::OK, Some("jdoe")));

    // PUT changes only the fields present.
    let (status, edited) =
        api.send(reqwest::Method::PUT, &format!("/api/v1/users/{id}"), Some(json!({"IsActive": false}))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(edited["IsActive"], false);
    assert_eq!(edited["MaxReservationDuration"], 1440);
    let (status, _) =
        api.send(reqwest::Method::PUT, &format!("/api/v1/users/{id}"), Some(json!({"Username": "other"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "the username cannot be changed");
    assert_eq!(api.get(&format!("/api/v1/users/{id}")).await.1["Username"], "jdoe");

    let (status, _) = api.send(reqwest::Method::DELETE, &format!("/api/v1/users/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(api.get(&format!("/api/v1/users/{id}")).await.0, StatusCode::NOT_FOUND);
    assert_eq!(api.get("/api/v1/users/abc").await.0, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn cloudshell_groups_list_and_change_their_users() {
    let sim = Sim::start(cloudshell_sim::Config { existing_users: vec!["jdoe".into()], ..Default::default() });
    let api = Api::login(&sim).await;
    let (status, groups) = api.get("/api/v1/groups").await;
    assert_eq!(status, StatusCode::OK);
    let everyone = groups["Groups"].as_array().unwrap().iter().find(|g| g["Name"] == "Everyone").unwrap();
    for field in ["ParentIds", "Sid", "Name", "Description", "ViewOnly", "groupType", "groupRole", "Id"] {
        assert!(everyone.as_object().unwrap().contains_key(field), "missing {field}");
    }
    assert_eq!(everyone["Id"], 1);

    let jdoe_id = api.get("/api/v1/users?paginationProperties.filter=jdoe").await.1["Users"][0]["Id"].clone();
    let (status, answer) = api
        .send(reqwest::Method::POST, "/api/v1/groups/2/Users", Some(json!({"Users": [{"Id": jdoe_id}, {"Id": 999}]})))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "some entries failed: 202");
    assert_eq!(answer["Errors"].as_array().unwrap().len(), 1, "user 999 does not exist");
    assert_eq!(answer["Errors"][0]["Id"], 999, "the entry names the user id");
    assert_eq!(names(&api.get("/api/v1/groups/2/users").await.1["Users"], "Username"), ["jdoe"]);
    let (status, _) =
        api.send(reqwest::Method::DELETE, "/api/v1/groups/2/Users", Some(json!({"Users": [{"Id": jdoe_id}]}))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(api.get("/api/v1/groups/2/users").await.1["Users"].as_array().unwrap().is_empty());
    assert_eq!(api.get("/api/v1/groups/77/users").await.0, StatusCode::NOT_FOUND);
    let (status, _) =
        api.send(reqwest::Method::POST, "/api/v1/groups/77/Users", Some(json!({"Users": [{"Id": jdoe_id}]}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "an unknown group");
}

#[tokio::test]
async fn groups_and_directory_users_can_be_set_up_and_group_ids_left_out() {
    let sim = Sim::start(cloudshell_sim::Config { groups: vec!["Engineering".into()], ..Default::default() });
    sim.add_directory_users(&["dana"], &["Engineering"], true).await;
    let api = Api::login(&sim).await;
    let groups = api.get("/api/v1/groups").await.1;
    let engineering = groups["Groups"].as_array().unwrap().iter().find(|g| g["Name"] == "Engineering").unwrap();
    let id = engineering["Id"].as_i64().unwrap();
    let dana = &api.get(&format!("/api/v1/groups/{id}/Users")).await.1["Users"][0];
    assert_eq!((dana["Username"].as_str(), dana["IsAdmin"].as_bool()), (Some("dana"), Some(true)));
    assert_eq!(dana["DomainName"], "EXAMPLE", "a directory user");
    assert!(dana["GroupIds"].as_array().unwrap().contains(&json!(id)));

    sim.omit_group_ids(true).await;
    for path in ["/api/v1/users", &format!("/api/v1/groups/{id}/Users")] {
        let users = api.get(path).await.1;
        assert!(users["Users"].as_array().unwrap().iter().all(|u| u.get("GroupIds").is_none()), "{path}: {users}");
    }
}

#[tokio::test]
async fn users_can_be_deactivated_created_again_and_have_fields_left_out() {
    let sim = Sim::start(cloudshell_sim::Config::default());
    sim.add_directory_users(&["ann", "ben"], &[], false).await;
    let api = Api::login(&sim).await;
    let user = |users: &Value, name: &str| {
        users["Users"].as_array().unwrap().iter().find(|u| u["Username"] == name).cloned().unwrap()
    };
    let before = api.get("/api/v1/users").await.1;
    let ann_id = user(&before, "ann")["Id"].as_i64().unwrap();

    let changed = sim.change_users(json!({"usernames": ["ann"], "is_active": false})).await;
    assert_eq!((changed[0]["IsActive"].as_bool(), changed[0]["Id"].as_i64()), (Some(false), Some(ann_id)));
    let changed = sim.change_users(json!({"usernames": ["ann"], "recreate": true, "domain_name": "EXAMPLE"})).await;
    assert_eq!(changed[0]["IsActive"], true, "a new user");
    assert_ne!(changed[0]["Id"].as_i64(), Some(ann_id), "a new id");
    assert_eq!(api.get(&format!("/api/v1/users/{ann_id}")).await.0, StatusCode::NOT_FOUND, "the old one is gone");

    sim.change_users(json!({"usernames": ["ben"], "omit_fields": ["IsActive", "isadmin"]})).await;
    let users = api.get("/api/v1/users").await.1;
    let ben = user(&users, "ben");
    assert!(ben.get("IsActive").is_none() && ben.get("IsAdmin").is_none() && ben["Id"].is_i64(), "{ben}");
    assert!(user(&users, "ann").get("IsActive").is_some(), "only ben's");
    let one = api.get(&format!("/api/v1/users/{}", ben["Id"])).await.1;
    assert!(one.get("IsActive").is_none(), "{one}");
    let state = sim.state().await;
    assert!(state["users"].as_array().unwrap().iter().all(|u| u.get("IsActive").is_some()), "not in the state");
    sim.change_users(json!({"usernames": ["ben"], "omit_fields": []})).await;
    assert!(user(&api.get("/api/v1/users").await.1, "ben").get("IsActive").is_some(), "put back");
}

/// A small directory: `Team` holds alice, Bob and the nested group `Inner` (carol); `Big` has 5 members.
fn directory() -> Directory {
    let mut d = Directory::new();
    let alice = d.user("alice");
    let bob = d.user("Bob");
    let carol = d.user("carol");
    let inner = d.group("Inner", std::slice::from_ref(&carol));
    d.group("Team", &[alice, bob, inner]);
    let big = d.users("big", 5);
    d.group("Big", &big);
    let odd = d.user("odd");
    d.group("Ops (EU) *", &[odd]);
    d
}

#[tokio::test]
async fn identity_management_lists_external_groups_and_their_direct_users() {
    let slapd = Slapd::start(&directory());
    let sim = Sim::with_directory(&slapd, |_| {});
    let api = Api::login(&sim).await;

    let (status, groups) = api.get("/api/v1/integrations/IdentityManagement/groups").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(names(&groups["Groups"], "Name"), ["Big", "Inner", "Ops (EU) *", "Team"]);
    assert_eq!(groups["Groups"][3]["DistinguishedName"], "cn=Team,ou=groups,dc=example,dc=org");

    let (status, users) = api.get("/api/v1/integrations/IdentityManagement/groups/Team/users").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(names(&users["Users"], "Username"), ["alice", "Bob"], "direct members only");
    let alice = &users["Users"][0];
    assert!(alice["Id"].is_string(), "an external user's Id is a string");
    assert_eq!(alice["Email"], "alice@example.org");
    assert_eq!(alice["DistinguishedName"], "uid=alice,ou=people,dc=example,dc=org");
    assert_eq!(alice["DomainName"], "EXAMPLE");

    let (status, odd) = api.get("/api/v1/integrations/IdentityManagement/groups/Ops%20%28EU%29%20%2A/users").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(names(&odd["Users"], "Username"), ["odd"]);
    assert_eq!(api.get("/api/v1/integrations/IdentityManagement/groups/Nope/users").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn group_import_creates_direct_members_and_leaves_existing_users_alone() {
    let slapd = Slapd::start(&directory());
    // "BOB" exists already, in another case.
    let sim = Sim::with_directory(&slapd, |c| c.existing_users = vec!["BOB".into()]);
    let api = Api::login(&sim).await;

    let (status, answer) = api.import(json!({"GroupName": "Team"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(names(&answer["Users"], "Username"), ["alice"], "only users created are listed");
    assert_eq!(answer["Errors"], json!([]));
    let alice = &answer["Users"][0];
    assert_eq!(alice["GroupIds"], json!([1]));
    assert_eq!(alice["DomainName"], "EXAMPLE");
    assert!(alice["ImportedSid"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(alice["Email"], "alice@example.org");
    // carol is only a member through the nested group Inner: not imported.
    assert_eq!(sim.usernames().await, ["admin", "BOB", "alice"]);

    // Importing again creates nobody and is not an error.
    let (status, again) = api.import(json!({"GroupName": "Team"})).await;
    assert_eq!((status, again["Users"].clone()), (StatusCode::OK, json!([])));
}

#[tokio::test]
async fn group_import_refuses_groups_over_the_limit_and_unknown_groups() {
    let slapd = Slapd::start(&directory());
    let sim = Sim::with_directory(&slapd, |c| c.group_import_limit = 4);
    let api = Api::login(&sim).await;
    let (status, body) = api.import(json!({"GroupName": "Big"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["Message"].as_str().unwrap().contains("limit"), "{body}");
    assert_eq!(sim.usernames().await, ["admin"]);

    assert_eq!(api.import(json!({"GroupName": "Nope"})).await.0, StatusCode::NOT_FOUND);
    assert_eq!(api.import(json!({"GroupName": "Big", "UserName": "big00000"})).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(api.import(json!({"AllowUpdate": true})).await.0, StatusCode::BAD_REQUEST);

    // The limit can be raised at run time.
    sim.set_faults(json!({"group_import_limit": 5})).await;
    assert_eq!(api.import(json!({"GroupName": "Big"})).await.0, StatusCode::OK);
    assert_eq!(sim.usernames().await.len(), 6);
}

#[tokio::test]
async fn group_import_with_failing_members_answers_202_with_errors() {
    let slapd = Slapd::start(&directory());
    let sim = Sim::with_directory(&slapd, |_| {});
    sim.set_faults(json!({"fail_import_users": ["big00001", "big00003"]})).await;
    let api = Api::login(&sim).await;
    let (status, answer) = api.import(json!({"GroupName": "Big"})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(names(&answer["Users"], "Username"), ["big00000", "big00002", "big00004"]);
    assert_eq!(names(&answer["Errors"], "Name"), ["big00001", "big00003"]);
    assert!(answer["Errors"][0]["Message"].is_string());
}

#[tokio::test]
async fn user_import_creates_once_then_answers_409_case_insensitively() {
    let slapd = Slapd::start(&directory());
    let sim = Sim::with_directory(&slapd, |c| c.existing_users = vec!["ALICE".into()]);
    let api = Api::login(&sim).await;
    let (status, answer) = api.import(json!({"UserName": "carol"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(names(&answer["Users"], "Username"), ["carol"]);
    assert_eq!(api.import(json!({"UserName": "carol"})).await.0, StatusCode::CONFLICT);
    assert_eq!(api.import(json!({"UserName": "CAROL"})).await.0, StatusCode::CONFLICT);
    assert_eq!(api.import(json!({"UserName": "alice"})).await.0, StatusCode::CONFLICT, "ALICE exists");
    assert_eq!(api.import(json!({"UserName": "nobody"})).await.0, StatusCode::NOT_FOUND);
    // Field names bind case-insensitively.
    assert_eq!(api.import(json!({"username": "big00000"})).await.0, StatusCode::OK);
    assert_eq!(sim.usernames().await, ["admin", "ALICE", "carol", "big00000"]);
}

#[tokio::test]
async fn faults_fail_calls_corrupt_answers_and_expire_tokens() {
    let sim = Sim::start(Default::default());
    let api = Api::login(&sim).await;

    sim.set_faults(json!({"fail": {"count": 2, "status": 503, "path_contains": "/users"}})).await;
    assert_eq!(api.get("/api/v1/groups").await.0, StatusCode::OK, "path filter");
    assert_eq!(api.get("/api/v1/users").await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(api.get("/api/v1/users").await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(api.get("/api/v1/users").await.0, StatusCode::OK);

    sim.set_faults(json!({"malformed": {"count": 1}})).await;
    let text = api
        .http
        .get(format!("{}/api/v1/users", sim.url()))
        .header("Authorization", format!("Basic {}", api.token))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");

    sim.set_faults(json!({"expire_tokens": true})).await;
    assert_eq!(api.get("/api/v1/users").await.0, StatusCode::UNAUTHORIZED);

    sim.set_faults(json!({"token_lifetime_calls": 2})).await;
    let api = Api::login(&sim).await;
    assert_eq!(api.get("/api/v1/users").await.0, StatusCode::OK);
    assert_eq!(api.get("/api/v1/users").await.0, StatusCode::OK);
    assert_eq!(api.get("/api/v1/users").await.0, StatusCode::UNAUTHORIZED);

    let injected: Vec<Value> = sim.calls().await.into_iter().map(|c| c["injected"].clone()).collect();
    assert_eq!(injected.iter().filter(|i| *i == "status 503").count(), 2);
    assert_eq!(injected.iter().filter(|i| *i == "malformed").count(), 1);
}

/// Deactivates jdoe through a caller that gives up after 600 ms while the simulator holds the call 2 s (a slow
/// rule, held before or after the call takes effect); returns jdoe's `IsActive` and the call's log state seen
/// while it was held, then the same once the hold is over.
async fn deactivate_and_hang_up(before_processing: bool) -> [(Value, Value); 2] {
    let sim = Sim::start(cloudshell_sim::Config { existing_users: vec!["jdoe".into()], ..Default::default() });
    let api = Api::login(&sim).await;
    let (_, list) = api.get("/api/v1/users?paginationProperties.filter=jdoe").await;
    let id = list["Users"][0]["Id"].as_i64().unwrap();
    let path = format!("/api/v1/users/{id}");
    sim.set_faults(
        json!({"slow": {"count": 1, "delay_ms": 2000, "method": "PUT", "before_processing": before_processing}}),
    )
    .await;
    let impatient = reqwest::Client::builder().timeout(std::time::Duration::from_millis(600)).build().unwrap();
    let request = impatient
        .put(format!("{}{path}", sim.url()))
        .header("Authorization", format!("Basic {}", api.token))
        .json(&json!({"IsActive": false}))
        .send();
    let seen = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        (api.get(&path).await.1["IsActive"].clone(), sim.calls_to("PUT", &path).await[0]["state"].clone())
    };
    let (answer, held) = tokio::join!(request, seen);
    assert!(answer.is_err_and(|e| e.is_timeout()), "the caller gives up before the answer");
    // Past the hold: a call still running (not dropped with its caller) would have taken effect and ended by now.
    tokio::time::sleep(std::time::Duration::from_millis(2000)).await;
    let after = (api.get(&path).await.1["IsActive"].clone(), sim.calls_to("PUT", &path).await[0]["state"].clone());
    [held, after]
}

#[tokio::test]
async fn a_call_held_before_processing_that_its_caller_abandons_never_takes_effect() {
    let [held, after] = deactivate_and_hang_up(true).await;
    assert_eq!(held, (json!(true), json!("in_flight")), "held before the change");
    assert_eq!(after, (json!(true), json!("aborted")), "the caller went away: nothing changed");
}

#[tokio::test]
async fn a_call_held_after_processing_that_its_caller_abandons_stays_applied() {
    let [held, after] = deactivate_and_hang_up(false).await;
    assert_eq!(held, (json!(false), json!("in_flight")), "changed, the answer held back");
    assert_eq!(after, (json!(false), json!("aborted")), "the caller went away: the change stays");
}
