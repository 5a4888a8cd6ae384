//! The CloudShell client against the simulator: every call, re-login, import outcomes, schemes, rude answers.

mod common;

use std::time::Duration;

use cloudshell_ldap_sync::cloudshell::{AuthScheme, Client, Error, GroupImport, ImportFailure, Settings, UserImport};
use cloudshell_ldap_sync::username::{SharedNames, Username};
use common::{Directory, Sim, Slapd};
use secrecy::SecretString;
use serde_json::json;

fn settings(sim: &Sim) -> Settings {
    common::cloudshell_settings(&sim.url())
}

fn client(sim: &Sim) -> Client {
    Client::new(settings(sim)).unwrap()
}

fn many_users(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("user{i:04}")).collect()
}

/// `Team`: alice, bob and the nested group `Inner` (carol). `Big`: big00000..big00004.
fn directory() -> Directory {
    let mut d = Directory::new();
    let alice = d.user("alice");
    let bob = d.user("bob");
    let carol = d.user("carol");
    let inner = d.group("Inner", std::slice::from_ref(&carol));
    d.group("Team", &[alice, bob, inner]);
    let big = d.users("big", 5);
    d.group("Big", &big);
    d
}

#[tokio::test]
async fn lists_every_user_across_pages_of_250() {
    let sim = Sim::start(cloudshell_sim::Config { existing_users: many_users(600), ..Default::default() });
    let users = client(&sim).list_users().await.unwrap();
    assert_eq!(users.len(), 601);
    let mut names: Vec<&str> = users.iter().filter_map(|u| u.username.as_ref()).map(|n| n.as_str()).collect();
    names.dedup();
    assert_eq!(names.len(), 601, "no user twice");
    assert!(users.iter().all(|u| u.id.is_some() && u.is_active == Some(true)));

    let pages = sim.calls_to("GET", "/api/v1/users").await;
    assert_eq!(pages.len(), 3);
    assert!(pages.iter().all(|c| { c["query"].as_str().unwrap().contains("paginationProperties.limit=250") }));
    assert!(pages[1]["query"].as_str().unwrap().contains("paginationProperties.cursor="));
    assert_eq!(sim.calls_to("PUT", "/Api/Auth/Login").await.len(), 1, "one login, token reused");
}

#[tokio::test]
async fn a_list_sharing_names_gives_its_users_the_copies_made_before_it() {
    let sim = Sim::start(cloudshell_sim::Config { existing_users: many_users(300), ..Default::default() });
    let shared = SharedNames::default();
    // What the directory read beside the list made first: "USER0001" is written otherwise in CloudShell.
    let made = ["user0000", "USER0001"].map(|n| shared.share(&Username::new(n).unwrap()));
    let text = |name: &Username| name.as_str().as_ptr();
    let users = client(&sim).list_users_sharing(Some(&shared)).await.unwrap();
    let name = |users: &[cloudshell_ldap_sync::cloudshell::User], name: &str| {
        let user = users.iter().find(|u| u.username.as_ref().is_some_and(|n| n.as_str() == name));
        user.and_then(|u| u.username.clone()).unwrap_or_else(|| panic!("{name} not listed"))
    };
    assert_eq!(users.len(), 301);
    assert_eq!(text(&name(&users, "user0000")), text(&made[0]), "the copy made before");
    assert_ne!(text(&name(&users, "user0001")), text(&made[1]), "written otherwise: its own text");
    let later = shared.share(&Username::new("user0299").unwrap());
    assert_eq!(text(&later), text(&name(&users, "user0299")), "held for later");
    // A list not sharing makes its own.
    let plain = client(&sim).list_users().await.unwrap();
    assert_eq!(plain.len(), 301);
    assert_ne!(text(&name(&plain, "user0000")), text(&made[0]));
}

#[tokio::test]
async fn logs_in_again_when_the_token_expires_mid_run() {
    let sim = Sim::start(cloudshell_sim::Config { existing_users: many_users(600), ..Default::default() });
    // Each token serves one call: every page after the first meets a 401 first.
    sim.set_faults(json!({"token_lifetime_calls": 1})).await;
    let users = client(&sim).list_users().await.unwrap();
    assert_eq!(users.len(), 601);
    assert_eq!(sim.calls_to("PUT", "/Api/Auth/Login").await.len(), 3);
    let statuses: Vec<u64> =
        sim.calls_to("GET", "/api/v1/users").await.iter().map(|c| c["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [200, 401, 200, 401, 200]);
}

#[tokio::test]
async fn retries_only_once_after_a_401() {
    let sim = Sim::start(Default::default());
    let c = client(&sim);
    c.login().await.unwrap();
    sim.set_faults(json!({"fail": {"count": 5, "status": 401, "path_contains": "/api/v1/users"}})).await;
    let err = c.list_users().await.unwrap_err();
    assert!(matches!(err, Error::Status { status: 401, .. }), "{err}");
    assert_eq!(sim.calls_to("GET", "/api/v1/users").await.len(), 2);
    assert_eq!(sim.calls_to("PUT", "/Api/Auth/Login").await.len(), 2);
}

#[tokio::test]
async fn sends_the_token_with_the_configured_scheme() {
    let sim = Sim::start(Default::default());
    client(&sim).list_users().await.unwrap();
    let bearer = Client::new(Settings { auth_scheme: AuthScheme::Bearer, ..settings(&sim) }).unwrap();
    bearer.list_users().await.unwrap();
    let schemes: Vec<String> = sim
        .calls_to("GET", "/api/v1/users")
        .await
        .iter()
        .map(|c| c["auth_scheme"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(schemes, ["Basic", "Bearer"]);
}

#[tokio::test]
async fn a_refused_login_names_the_user_and_never_the_password() {
    let sim = Sim::start(Default::default());
    let c = Client::new(Settings { password: SecretString::from("wrong-pass-123"), ..settings(&sim) }).unwrap();
    let err = c.list_users().await.unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(matches!(err, Error::LoginRefused { status: 401, .. }), "{text}");
    assert!(text.contains("\"admin\"") && text.contains("Global"), "{text}");
    assert!(!text.contains("wrong-pass-123"), "{text}");
    assert!(sim.calls_to("GET", "/api/v1/users").await.is_empty());
}

#[tokio::test]
async fn imports_a_group_and_reports_the_users_created() {
    let slapd = Slapd::start(&directory());
    let sim = Sim::with_directory(&slapd, |c| c.existing_users = vec!["BOB".into()]);
    let outcome = client(&sim).import_group("Team").await.unwrap();
    let GroupImport::Done { created, failures } = outcome else { panic!("{outcome:?}") };
    let names: Vec<&str> = created.iter().filter_map(|u| u.username.as_ref()).map(|n| n.as_str()).collect();
    assert_eq!(names, ["alice"]);
    assert_eq!(created[0].domain_name.as_deref(), Some("EXAMPLE"));
    assert!(failures.is_empty());
    let calls = sim.calls_to("POST", "/api/v1/integrations/IdentityManagement/users").await;
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["body"], json!({"GroupName": "Team"}));
}

#[tokio::test]
async fn a_202_yields_the_failed_members_by_name() {
    let slapd = Slapd::start(&directory());
    let sim = Sim::with_directory(&slapd, |_| {});
    sim.set_faults(json!({"fail_import_users": ["big00002"]})).await;
    let outcome = client(&sim).import_group("Big").await.unwrap();
    let GroupImport::Done { created, failures } = outcome else { panic!("{outcome:?}") };
    assert_eq!(created.len(), 4);
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].name.as_deref(), Some("big00002"));
    assert!(!failures[0].message.is_empty());
}

#[tokio::test]
async fn reads_error_entries_of_any_shape() {
    let sim = Sim::start(Default::default());
    let body = json!({"Users": [], "Errors": ["plain text", {"user": "x", "error": "boom"}, 7]}).to_string();
    sim.set_faults(json!({"fail": {"count": 1, "status": 202, "body": body, "path_contains": "IdentityManagement"}}))
        .await;
    let outcome = client(&sim).import_group("Anything").await.unwrap();
    assert_eq!(
        outcome,
        GroupImport::Done {
            created: vec![],
            failures: vec![
                ImportFailure { name: None, message: "plain text".into() },
                ImportFailure { name: Some("x".into()), message: "boom".into() },
                ImportFailure { name: None, message: "7".into() },
            ],
        }
    );
}

#[tokio::test]
async fn a_group_over_the_limit_is_refused_and_an_unknown_group_not_found() {
    let slapd = Slapd::start(&directory());
    let sim = Sim::with_directory(&slapd, |c| c.group_import_limit = 3);
    let c = client(&sim);
    match c.import_group("Big").await.unwrap() {
        GroupImport::Refused { message } => assert!(message.contains("limit of 3"), "{message}"),
        other => panic!("{other:?}"),
    }
    match c.import_group("No Such Group").await.unwrap() {
        GroupImport::NotFound { message } => {
            assert!(message.contains("No Such Group"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(sim.usernames().await, ["admin"]);
}

#[tokio::test]
async fn imports_a_user_and_takes_409_as_already_there() {
    let slapd = Slapd::start(&directory());
    let sim = Sim::with_directory(&slapd, |_| {});
    let c = client(&sim);
    match c.import_user("carol").await.unwrap() {
        UserImport::Created(user) => assert_eq!(user.username.as_ref().map(|n| n.as_str()), Some("carol")),
        other => panic!("{other:?}"),
    }
    assert_eq!(c.import_user("CAROL").await.unwrap(), UserImport::AlreadyExists);
    assert!(matches!(c.import_user("nobody").await.unwrap(), UserImport::NotFound { .. }));
    let bodies: Vec<_> = sim
        .calls_to("POST", "/api/v1/integrations/IdentityManagement/users")
        .await
        .into_iter()
        .map(|c| c["body"].clone())
        .collect();
    assert_eq!(bodies, [json!({"UserName": "carol"}), json!({"UserName": "CAROL"}), json!({"UserName": "nobody"})]);
}

#[tokio::test]
async fn a_500_with_html_or_an_empty_body_is_a_status_error_with_an_excerpt() {
    let sim = Sim::start(Default::default());
    let c = client(&sim);
    c.login().await.unwrap();
    let html = "<html><body><h1>500 Internal Server Error</h1>\n<p>IIS says no</p></body></html>";
    sim.set_faults(json!({"fail": {"count": 1, "status": 500, "body": html, "content_type": "text/html"}})).await;
    let err = c.list_users().await.unwrap_err();
    match &err {
        Error::Status { status, path, body_excerpt, .. } => {
            assert_eq!((*status, path.as_str()), (500, "/api/v1/users"));
            assert!(body_excerpt.contains("500 Internal Server Error") && !body_excerpt.contains('\n'));
        }
        other => panic!("{other:?}"),
    }
    sim.set_faults(json!({"fail": {"count": 1, "status": 500, "body": ""}})).await;
    let err = c.import_group("x").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "CloudShell answered POST /api/v1/integrations/IdentityManagement/users with status 500: (empty body)"
    );
}

#[tokio::test]
async fn a_malformed_answer_is_a_decode_error() {
    let sim = Sim::start(cloudshell_sim::Config { existing_users: many_users(3), ..Default::default() });
    let c = client(&sim);
    c.login().await.unwrap();
    sim.set_faults(json!({"malformed": {"count": 1, "path_contains": "/api/v1/users"}})).await;
    let err = c.list_users().await.unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err}");
    assert!(err.to_string().contains("GET /api/v1/users"), "{err}");
}

#[tokio::test]
async fn a_slow_server_is_a_timeout_and_a_closed_port_a_connect_error() {
    let sim = Sim::start(Default::default());
    sim.set_faults(json!({"latency_ms": 1500})).await;
    let c = Client::new(Settings { timeout: Duration::from_millis(300), ..settings(&sim) }).unwrap();
    let err = c.login().await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("PUT /Api/Auth/Login"), "{err}");

    let port = common::free_port();
    let closed =
        Client::new(Settings { url: format!("http://127.0.0.1:{port}").parse().unwrap(), ..settings(&sim) }).unwrap();
    let err = closed.list_users().await.unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err}");
    assert!(err.to_string().contains("cannot reach CloudShell"), "{err}");
}

#[tokio::test]
async fn errors_never_quote_the_token_or_the_password() {
    let sim = Sim::start(Default::default());
    let c = client(&sim);
    c.login().await.unwrap();
    let tokens = sim.state().await["tokens"].clone();
    let token = tokens[0].as_str().expect("one live token").to_string();
    // A server that echoes the credentials back in its error page.
    let body = format!("bad request from admin, password admin, token {token}");
    sim.set_faults(json!({"fail": {"count": 1, "status": 418, "body": body}})).await;
    let err = c.list_users().await.unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(err.to_string().ends_with("bad request from ***, password ***, token ***"), "{err}");
    assert!(!text.contains(&token), "{text}");
}

fn with_retries(sim: &Sim, retries: u32) -> Client {
    Client::new(Settings { retries, ..settings(sim) }).unwrap()
}

fn at_ms(calls: &[serde_json::Value]) -> Vec<u64> {
    calls.iter().map(|c| c["at_ms"].as_u64().unwrap()).collect()
}

#[tokio::test]
async fn answers_of_the_wrong_shape_are_decode_errors_not_panics() {
    let sim = Sim::start(Default::default());
    let c = client(&sim);
    c.login().await.unwrap();
    for body in [
        r#"{"Users": "nope", "Cursor": null}"#,
        "[]",
        r#"{"Users": [{"Id": 1}], "Cursor": null}"#,
        r#"{"Users": [], "Cursor": 17}"#,
        "null",
    ] {
        sim.set_faults(json!({"fail": {"count": 1, "status": 200, "body": body, "path_contains": "/api/v1/users"}}))
            .await;
        let err = c.list_users().await.unwrap_err();
        assert!(matches!(err, Error::Decode { .. }), "{body}: {err}");
    }
    for status in [302, 418, 204] {
        sim.set_faults(json!({"fail": {"count": 1, "status": status, "body": "", "path_contains": "/api/v1/users"}}))
            .await;
        let err = c.list_users().await.unwrap_err();
        assert_eq!(err.status(), Some(status), "{err}");
    }
    sim.set_faults(json!({"fail": {"count": 1, "status": 200, "body": "{\"Users\": 3}", "path_contains": "Identity"}}))
        .await;
    assert!(matches!(c.import_group("x").await.unwrap_err(), Error::Decode { .. }));
}

#[tokio::test]
async fn a_login_answer_that_is_not_a_token_is_refused_without_quoting_it() {
    let sim = Sim::start(Default::default());
    for body in [r#"{"token": "sekrit-token-1"}"#, "\"\"", "sekrit-token-2"] {
        sim.set_faults(json!({"fail": {"count": 1, "status": 200, "body": body, "path_contains": "Login"}})).await;
        let err = client(&sim).login().await.unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(matches!(err, Error::Decode { .. }), "{text}");
        assert!(!text.contains("sekrit"), "{text}");
    }
}

#[tokio::test]
async fn retries_a_burst_of_503s_then_succeeds() {
    let sim = Sim::start(Default::default());
    sim.set_faults(json!({"fail": {"count": 2, "status": 503, "path_contains": "/api/v1/users"}})).await;
    assert_eq!(with_retries(&sim, 3).list_users().await.unwrap().len(), 1);
    let statuses: Vec<u64> =
        sim.calls_to("GET", "/api/v1/users").await.iter().map(|c| c["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [503, 503, 200]);

    // More failures than retries: the last answer is the error, after 1 + retries calls.
    sim.clear_calls().await;
    sim.set_faults(json!({"fail": {"count": 10, "status": 502, "path_contains": "/api/v1/users"}})).await;
    let err = with_retries(&sim, 2).list_users().await.unwrap_err();
    assert_eq!(err.status(), Some(502));
    assert_eq!(sim.calls_to("GET", "/api/v1/users").await.len(), 3);
}

#[tokio::test]
async fn honours_retry_after_on_429_within_the_deadline() {
    let sim = Sim::start(Default::default());
    let c = with_retries(&sim, 3);
    c.login().await.unwrap();
    sim.set_faults(
        json!({"fail": {"count": 1, "status": 429, "headers": {"Retry-After": "1"}, "path_contains": "/api/v1/users"}}),
    )
    .await;
    c.list_users().await.unwrap();
    let calls = sim.calls_to("GET", "/api/v1/users").await;
    let times = at_ms(&calls);
    assert_eq!(calls.len(), 2);
    assert!(times[1] - times[0] >= 1000, "waited {} ms, Retry-After said 1 s", times[1] - times[0]);

    // A Retry-After beyond the retry deadline is not waited for.
    sim.clear_calls().await;
    sim.set_faults(json!({"fail": {"count": 1, "status": 429, "headers": {"Retry-After": "3600"}, "path_contains": "/api/v1/users"}}))
        .await;
    let err = c.list_users().await.unwrap_err();
    assert_eq!(err.status(), Some(429));
    assert_eq!(sim.calls_to("GET", "/api/v1/users").await.len(), 1);
}

#[tokio::test]
async fn a_lost_user_import_answer_is_checked_before_importing_again() {
    let slapd = Slapd::start(&directory());
    let sim = Sim::with_directory(&slapd, |_| {});
    // The import is done, but its answer comes after the client's timeout.
    sim.set_faults(json!({"slow": {"count": 1, "delay_ms": 2000, "path_contains": "IdentityManagement"}})).await;
    let c = Client::new(Settings { retries: 3, timeout: Duration::from_millis(700), ..settings(&sim) }).unwrap();
    assert_eq!(c.import_user("carol").await.unwrap(), UserImport::PresentAfterLostAnswer);
    let imports = sim.calls_to("POST", "/api/v1/integrations/IdentityManagement/users").await;
    assert_eq!(imports.len(), 1, "no second import: {imports:?}");
    let checks = sim.calls_to("GET", "/api/v1/users").await;
    assert_eq!(checks.len(), 1);
    assert!(checks[0]["query"].as_str().unwrap().contains("paginationProperties.filter=carol"));
    assert_eq!(sim.usernames().await, ["admin", "carol"]);

    // Cut before it took effect: the check finds nobody, so the import is made again, once.
    sim.clear_calls().await;
    sim.set_faults(json!({"reset": {"count": 1, "after_processing": false, "path_contains": "IdentityManagement"}}))
        .await;
    assert!(matches!(c.import_user("alice").await.unwrap(), UserImport::Created(_)));
    assert_eq!(sim.calls_to("POST", "/api/v1/integrations/IdentityManagement/users").await.len(), 2);
    assert_eq!(sim.usernames().await, ["admin", "carol", "alice"]);
}

#[tokio::test]
async fn a_cut_group_import_is_reported_as_possibly_done() {
    let slapd = Slapd::start(&directory());
    let sim = Sim::with_directory(&slapd, |_| {});
    sim.set_faults(json!({"reset": {"count": 1, "path_contains": "IdentityManagement"}})).await;
    let err = with_retries(&sim, 3).import_group("Team").await.unwrap_err();
    assert!(err.may_have_taken_effect(), "{err}");
    assert_eq!(
        sim.calls_to("POST", "/api/v1/integrations/IdentityManagement/users").await.len(),
        1,
        "not repeated blindly"
    );
    assert_eq!(sim.usernames().await, ["admin", "alice", "bob"], "it did take effect");
}

#[tokio::test]
async fn caps_the_request_rate() {
    let sim = Sim::start(cloudshell_sim::Config { existing_users: many_users(2000), ..Default::default() });
    let c = Client::new(Settings { max_requests_per_second: 20.0, ..settings(&sim) }).unwrap();
    c.list_users().await.unwrap();
    let times = at_ms(&sim.calls().await);
    assert_eq!(times.len(), 10, "a login and nine pages");
    // Sent 50 ms apart; the simulator stamps arrival, so on a busy machine a request held up in transit
    // arrives close to the next one: single gaps prove nothing. Unpaced, the ten calls arrive within a few
    // milliseconds of each other; paced, no four of them can (three sends span 150 ms, and one late arrival
    // takes at most one gap away).
    let span = times[9] - times[0];
    assert!(span >= 9 * 50 - 100, "ten requests at 20/s span at least ~450 ms, got {span}: {times:?}");
    for four in times.windows(4) {
        assert!(four[3] - four[0] >= 50, "four requests within {} ms at 20/s: {times:?}", four[3] - four[0]);
    }
}

/// .NET's JSON escaping: `+ < > & '` and every non-ASCII character as `\uXXXX`.
fn dotnet_escaped(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '+' | '<' | '>' | '&' | '\'' => out.push_str(&format!("\\u{:04X}", c as u32)),
            c if !c.is_ascii() => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

#[tokio::test]
async fn a_server_echoing_the_password_or_the_token_never_gets_them_into_errors_or_reports() {
    let password = "Pa\"ss\\wörd+<>&'";
    let slapd = Slapd::start(&directory());
    let sim = Sim::with_directory(&slapd, |c| c.admin_password = password.into());
    let c = Client::new(Settings { password: SecretString::from(password), ..settings(&sim) }).unwrap();
    c.login().await.unwrap();
    let token = sim.state().await["tokens"][0].as_str().unwrap().to_string();
    let json_escaped = serde_json::to_string(password).unwrap();
    let json_escaped = json_escaped.trim_matches('"');
    let echoes = [password.to_string(), json_escaped.to_string(), dotnet_escaped(password), token.clone()];
    let shown = |text: &str| -> Option<String> {
        let leaked = ["ss\\wörd", "ss\\\\w", "ss\\\\u005Cw", "w\\u00f6rd", "u002B", &token];
        leaked.iter().find(|l| text.contains(**l)).map(|l| format!("{l:?} leaked in {text}"))
    };
    for echo in &echoes {
        let body = format!("{{\"Message\": \"request from admin with {echo} refused\"}}");
        // A 400 on a user import: the message is reported.
        sim.set_faults(
            json!({"fail": {"count": 1, "status": 400, "body": body, "path_contains": "IdentityManagement"}}),
        )
        .await;
        match c.import_user("alice").await.unwrap() {
            UserImport::Refused { message } => {
                assert_eq!(shown(&message), None);
                assert!(message.contains("***") && message.contains("refused"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        // A 500 (retries off): the error quotes the body.
        sim.set_faults(
            json!({"fail": {"count": 1, "status": 500, "body": body, "path_contains": "IdentityManagement"}}),
        )
        .await;
        let e = c.import_user("alice").await.unwrap_err().to_string();
        assert_eq!(shown(&e), None);
        // A 202 with an error entry echoing it: the failure is reported.
        let entry = json!({"Users": [], "Errors": [{"Name": "bob", "Message": format!("bob: {echo}")}]}).to_string();
        sim.set_faults(
            json!({"fail": {"count": 1, "status": 202, "body": entry, "path_contains": "IdentityManagement"}}),
        )
        .await;
        match c.import_group("Team").await.unwrap() {
            GroupImport::Done { failures, .. } => {
                assert_eq!(failures.len(), 1);
                assert_eq!(shown(&failures[0].message), None);
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn a_retry_that_would_end_past_the_deadline_is_not_started() {
    let sim = Sim::start(cloudshell_sim::Config::default());
    // Every user page answers after the 1 s timeout; reading is safe to repeat, so it is retried...
    sim.set_faults(json!({"slow": {"count": 5, "delay_ms": 1500, "method": "GET"}})).await;
    let c = Client::new(Settings {
        retries: 5,
        timeout: Duration::from_secs(1),
        retry_deadline: Duration::from_millis(2000),
        ..settings(&sim)
    })
    .unwrap();
    c.login().await.unwrap();
    let started = std::time::Instant::now();
    let e = c.list_users().await.unwrap_err();
    let took = started.elapsed();
    // ...but a second attempt (a wait of up to 250 ms, then up to 1 s) would end past 2 s: not started.
    assert!(matches!(e, Error::Timeout { .. }), "{e}");
    assert!(took < Duration::from_millis(1900), "the call stays within retry_deadline: took {took:?}");
    assert_eq!(sim.calls_to("GET", "/api/v1/users").await.len(), 1);
}

#[tokio::test]
async fn a_redirect_is_never_followed_and_names_its_target() {
    // Where a hostile or misconfigured server would send the password: nothing may ever connect here.
    let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    elsewhere.set_nonblocking(true).unwrap();
    let target = format!("http://{}/steal", elsewhere.local_addr().unwrap());
    let sim = Sim::start(cloudshell_sim::Config::default());
    for (status, path) in [(307, "/Api/Auth/Login"), (302, "/Api/Auth/Login"), (308, "/api/v1/users")] {
        sim.set_faults(
            json!({"fail": {"count": 1, "status": status, "headers": {"Location": target}, "path_contains": path}}),
        )
        .await;
        let e = client(&sim).list_users().await.unwrap_err();
        assert!(matches!(e, Error::Redirect { status: s, .. } if s == status), "{status}: {e:?}");
        let text = e.to_string();
        assert!(text.contains(&target) && text.contains("not followed") && text.contains("cloudshell.url"), "{text}");
        assert!(!e.may_have_taken_effect());
    }
    assert!(
        matches!(elsewhere.accept(), Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "nothing was sent to the redirect's target"
    );
}

#[tokio::test]
async fn an_answer_larger_than_the_limit_or_a_page_larger_than_asked_is_refused() {
    let sim = Sim::start(cloudshell_sim::Config { existing_users: many_users(100), ..Default::default() });
    let small = Client::new(Settings { max_answer_bytes: 1024, ..settings(&sim) }).unwrap();
    let e = small.list_users().await.unwrap_err();
    assert!(matches!(e, Error::TooLarge { limit: 1024, .. }), "{e:?}");
    assert!(e.to_string().contains("cloudshell.max_answer_mib"), "{e}");

    // 300 users on a page when 250 were asked for.
    let users: Vec<serde_json::Value> =
        (0..300).map(|n| json!({"Id": n + 10, "Username": format!("x{n}"), "IsActive": true})).collect();
    let body = json!({"Users": users, "Cursor": null}).to_string();
    sim.set_faults(
        json!({"fail": {"count": 1, "status": 200, "body": body, "method": "GET", "path_contains": "/api/v1/users"}}),
    )
    .await;
    let e = client(&sim).list_users().await.unwrap_err();
    assert!(e.to_string().contains("a page of 300 items when 250 were asked for"), "{e}");
}

#[tokio::test]
async fn a_huge_retry_after_is_a_failed_call_not_a_panic() {
    let sim = Sim::start(cloudshell_sim::Config::default());
    let huge = u64::MAX.to_string();
    let rule = json!({"count": 3, "status": 503, "headers": {"Retry-After": huge}, "method": "GET"});
    sim.set_faults(json!({ "fail": rule })).await;
    let e = client(&sim).list_users().await.unwrap_err();
    assert_eq!(e.status(), Some(503), "{e}");
    assert_eq!(sim.calls_to("GET", "/api/v1/users").await.len(), 1, "a wait past retry_deadline is not started");
}

/// A server whose user list never ends: every page names a new cursor.
async fn endless_pages() -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use axum::routing::{get, put};
    use std::sync::atomic::{AtomicU64, Ordering};
    let pages = std::sync::Arc::new(AtomicU64::new(0));
    let counter = pages.clone();
    let app = axum::Router::new().route("/Api/Auth/Login", put(|| async { axum::Json("a-token") })).route(
        "/api/v1/users",
        get(move || {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            async move { axum::Json(json!({"Users": [], "Cursor": format!("cursor-{n}")})) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, pages)
}

#[tokio::test]
async fn a_list_whose_cursors_never_end_stops_at_the_stop_request() {
    let (url, pages) = endless_pages().await;
    let stops = cloudshell_ldap_sync::stop::Stops::default();
    let c = Client::new(common::cloudshell_settings(&url)).unwrap().with_stops(stops.clone());
    let check = tokio::spawn(async move { c.user_exists("alice").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = pages.load(std::sync::atomic::Ordering::Relaxed);
    assert!(before > 5, "the loop runs: {before} pages");
    stops.stop.cancel();
    let e = tokio::time::timeout(Duration::from_secs(2), check).await.expect("ended within 2 s").unwrap().unwrap_err();
    assert!(matches!(e, Error::Abandoned { .. }), "{e:?}");
    let after = pages.load(std::sync::atomic::Ordering::Relaxed);
    assert!(after <= before + 1, "at most the page under way after the stop: {before} then {after}");
}

#[tokio::test]
async fn a_lost_user_import_answer_is_not_checked_once_the_run_is_stopping() {
    let sim = Sim::start(cloudshell_sim::Config::default());
    sim.set_faults(json!({"slow": {"count": 1, "delay_ms": 3000, "method": "POST"}})).await;
    let stops = cloudshell_ldap_sync::stop::Stops::default();
    let c = Client::new(Settings { timeout: Duration::from_secs(1), retries: 3, ..settings(&sim) })
        .unwrap()
        .with_stops(stops.clone());
    c.login().await.unwrap();
    sim.clear_calls().await;
    let import = tokio::spawn(async move { c.import_user("alice").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    stops.stop.cancel();
    // The answer is lost (timeout) after the stop: the existence check would be a new call, so it is not made.
    let e = import.await.unwrap().unwrap_err();
    assert!(matches!(e, Error::Timeout { sent: true, .. }), "{e:?}");
    assert!(sim.calls_to("GET", "/api/v1/users").await.is_empty(), "no call after the stop");
}

/// Deactivation and reactivation read the user first and send nothing back when it is already as asked or its
/// `IsActive` is not said; the control: a user read as the opposite is changed with one PUT.
#[tokio::test]
async fn set_active_sends_nothing_for_a_user_already_so_or_without_is_active() {
    use cloudshell_ldap_sync::cloudshell::SetActive;
    let sim = Sim::start(cloudshell_sim::Config::default());
    let users = sim.change_users(json!({"usernames": ["ann", "ben", "cal"], "domain_name": "EXAMPLE"})).await;
    let id = |n: usize| users[n]["Id"].as_i64().unwrap();
    sim.change_users(json!({"usernames": ["ben"], "is_active": false})).await;
    sim.change_users(json!({"usernames": ["cal"], "omit_fields": ["IsActive"]})).await;
    let client = client(&sim);

    assert_eq!(client.set_active(id(0), false).await.unwrap(), SetActive::Changed);
    assert_eq!(client.set_active(id(1), false).await.unwrap(), SetActive::Already);
    assert_eq!(client.set_active(id(2), false).await.unwrap(), SetActive::Unknown);
    assert_eq!(client.set_active(id(2), true).await.unwrap(), SetActive::Unknown);
    assert_eq!(client.set_active(999, false).await.unwrap(), SetActive::Gone);

    let puts: Vec<String> = sim
        .calls()
        .await
        .iter()
        .filter(|c| c["method"] == "PUT" && c["path"] != "/Api/Auth/Login")
        .map(|c| c["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(puts, [format!("/api/v1/users/{}", id(0))], "only ann's change is sent");
    let state = sim.state().await;
    let active: Vec<bool> = ["ann", "ben", "cal"]
        .map(|n| state["users"].as_array().unwrap().iter().find(|u| u["Username"] == n).unwrap()["IsActive"] == true)
        .to_vec();
    assert_eq!(active, [false, false, true]);
}

/// `find_user` takes the list's filter for the substring match it is, and answers only the user of that exact
/// name (case-insensitively): `user0001` is found among the 600 names containing it, on a later page when the
/// filter matches more than a page (`user`); a name that only others contain is no user.
#[tokio::test]
async fn find_user_answers_only_the_user_of_that_exact_name_across_pages() {
    let mut existing = many_users(600);
    existing.push("Al".into());
    let sim = Sim::start(cloudshell_sim::Config { existing_users: existing, ..Default::default() });
    let client = client(&sim);
    let found = client.find_user("USER0001").await.unwrap().expect("user0001 exists");
    assert_eq!(found.username.as_ref().map(|n| n.as_str()), Some("user0001"));
    assert!(found.id.is_some());
    assert_eq!(
        client.find_user("al").await.unwrap().and_then(|u| u.username).map(|n| n.to_string()),
        Some("Al".into())
    );
    assert!(client.find_user("user000").await.unwrap().is_none(), "only contained in others' names");
    assert!(client.find_user("nobody").await.unwrap().is_none());
    // `user` matches all 600: the exact name is on no page, and every page is read.
    assert!(client.find_user("user").await.unwrap().is_none());
    let queries: Vec<String> = sim
        .calls_to("GET", "/api/v1/users")
        .await
        .iter()
        .map(|c| c["query"].as_str().unwrap().to_string())
        .filter(|q| q.contains("paginationProperties.filter=user&") || q.ends_with("paginationProperties.filter=user"))
        .collect();
    assert_eq!(queries.len(), 3, "{queries:?}");
}

/// `get_user` reads one user by id; an id CloudShell does not have is `None`, not an error.
#[tokio::test]
async fn get_user_reads_one_user_by_id_and_a_missing_one_is_none() {
    let sim = Sim::start(cloudshell_sim::Config { existing_users: many_users(3), ..Default::default() });
    let client = client(&sim);
    let listed = client.list_users().await.unwrap();
    let user = listed.iter().find(|u| u.username.as_ref().is_some_and(|n| n.as_str() == "user0002")).unwrap();
    let read = client.get_user(user.id.unwrap()).await.unwrap().expect("the user");
    assert_eq!(&read, user);
    assert_eq!(client.get_user(999_999).await.unwrap(), None);
}
