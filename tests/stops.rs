//! Stop requests that stop: SIGTERM during a slow directory read, during a retry wait, a second SIGTERM during
//! a call that hangs, and `sync.run_timeout`. The real binary against a real slapd and the simulator.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Directory, Env, Stack};
use serde_json::{Value, json};

const IMPORT: &str = "/api/v1/integrations/IdentityManagement/users";

/// `Team`: alice, bob. `Big`: big00000..big00004.
fn directory() -> Directory {
    let mut d = Directory::new();
    let alice = d.user("alice");
    let bob = d.user("bob");
    d.group("Team", &[alice, bob]);
    let big = d.users("big", 5);
    d.group("Big", &big);
    d
}

impl Env {
    fn start(change: impl FnOnce(&mut cloudshell_sim::Config)) -> Env {
        Env(Stack::start(&directory(), change))
    }

    /// A config for `groups` with `sync_extra` in `[sync]` and every `(from, to)` replacement made.
    fn config(&self, groups: &[&str], sync_extra: &str, replace: &[(&str, &str)]) -> PathBuf {
        let path = self.files.config(&self.slapd.url(), &self.sim.url(), groups, sync_extra, "");
        let mut text = std::fs::read_to_string(&path).unwrap();
        for (from, to) in replace {
            assert!(text.contains(from), "{from:?} not in the config");
            text = text.replacen(from, to, 1);
        }
        std::fs::write(&path, text).unwrap();
        path
    }

    async fn wait_for_import(&self, state: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.sim.calls_to("POST", IMPORT).await.iter().any(|c| c["state"] == state) {
            assert!(Instant::now() < deadline, "no import call {state}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn spawn_sync(config: &std::path::Path) -> Child {
    Command::new(common::binary())
        .args(["sync", "--json", "--config", config.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn sigterm(child: &Child) {
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
}

/// Waits for `child` to exit within `limit`; its exit code, report, logs and how long it took.
fn exit_within(mut child: Child, limit: Duration) -> (i32, Value, String, Duration) {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("still running {limit:?} after the signal:\n{}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = started.elapsed();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}): {}\n{stderr}", String::from_utf8_lossy(&out.stdout)));
    (out.status.code().expect("exited, not killed"), report, stderr, took)
}

#[tokio::test]
async fn sigterm_while_the_directory_does_not_answer_ends_the_run_at_once_and_writes_nothing() {
    let env = Env::start(|_| {});
    // The kernel accepts the connection; slapd never answers the bind. ldap.timeout is a minute.
    let config = env.config(&["Team"], "", &[("timeout = \"5s\"", "timeout = \"60s\"")]);
    env.slapd.freeze(true);
    let child = spawn_sync(&config);
    std::thread::sleep(Duration::from_millis(1500));
    sigterm(&child);
    let result = exit_within(child, Duration::from_secs(5));
    env.slapd.freeze(false);
    let (code, report, stderr, took) = result;
    assert!(took < Duration::from_secs(3), "the stop took {took:?}");
    assert_eq!((code, report["result"].as_str()), (1, Some("failed")), "{report}\n{stderr}");
    assert_eq!(report["interrupted"], true);
    assert!(report["error"].as_str().unwrap().contains("asked to stop while reading"), "{report}");
    assert!(stderr.contains("run stopped during the reads, nothing written"), "{stderr}");
    assert!(env.sim.calls_to("POST", IMPORT).await.is_empty());
}

#[tokio::test]
async fn sigterm_while_a_directory_search_hangs_ends_the_run_at_once_and_writes_nothing() {
    let env = Env::start(|_| {});
    // The bind is answered; the users search hangs after its first 300 bytes.
    let proxy = common::CutProxy::stalling(env.slapd.port, 300);
    let path = env.files.config(&proxy.url(), &env.sim.url(), &["Team"], "", "");
    let text = std::fs::read_to_string(&path).unwrap().replacen("timeout = \"5s\"", "timeout = \"60s\"", 1);
    std::fs::write(&path, text).unwrap();
    let child = spawn_sync(&path);
    let deadline = Instant::now() + Duration::from_secs(20);
    while proxy.forwarded() < 300 {
        assert!(Instant::now() < deadline, "the search never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    sigterm(&child);
    let (code, report, stderr, took) = exit_within(child, Duration::from_secs(5));
    assert!(took < Duration::from_secs(3), "the stop took {took:?}");
    assert!(stderr.contains("directory connected"), "the bind was done: {stderr}");
    assert_eq!((code, report["result"].as_str()), (1, Some("failed")), "{report}\n{stderr}");
    assert!(report["error"].as_str().unwrap().contains("asked to stop while reading"), "{report}");
    assert!(env.sim.calls_to("POST", IMPORT).await.is_empty());
}

#[tokio::test]
async fn sigterm_during_a_retry_wait_ends_the_wait_and_starts_no_retry() {
    let env = Env::start(|_| {});
    // Team's import answers 503 with a 20 s Retry-After, three times over.
    let rule = json!({"count": 3, "status": 503, "headers": {"Retry-After": "20"}, "method": "POST"});
    env.sim.set_faults(json!({ "fail": rule })).await;
    let config = env.config(&["Team"], "", &[("timeout = \"10s\"", "timeout = \"10s\"\nretry_deadline = \"5m\"")]);
    let child = spawn_sync(&config);
    env.wait_for_import("done").await;
    std::thread::sleep(Duration::from_millis(300));
    sigterm(&child);
    let (code, report, stderr, took) = exit_within(child, Duration::from_secs(5));
    assert!(took < Duration::from_secs(3), "the stop took {took:?}");
    assert_eq!(code, 3, "{report}\n{stderr}");
    assert_eq!(report["interrupted"], true, "{report}");
    assert!(stderr.contains("cloudshell call not retried: the run was asked to stop"), "{stderr}");
    assert_eq!(env.sim.calls_to("POST", IMPORT).await.len(), 1, "no retry, and no fallback, after the stop");
}

#[tokio::test]
async fn sigterm_drops_a_call_still_waiting_for_its_turn_under_max_requests_per_second() {
    // Big is imported member by member, one request every 2 s.
    let env = Env::start(|c| c.group_import_limit = 3);
    let paced = [("timeout = \"10s\"", "timeout = \"10s\"\nconcurrency = 1\nmax_requests_per_second = 0.5")];
    let config = env.config(&["Big"], "", &paced);
    let child = spawn_sync(&config);
    let deadline = Instant::now() + Duration::from_secs(30);
    let user_imports = || async {
        let calls = env.sim.calls_to("POST", IMPORT).await;
        calls.into_iter().filter(|c| c["body"].get("UserName").is_some()).collect::<Vec<Value>>()
    };
    while !user_imports().await.iter().any(|c| c["state"] == "done") {
        assert!(Instant::now() < deadline, "no user import");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The next import now waits for its turn (2 s after the last): the stop drops it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    sigterm(&child);
    let (code, report, stderr, took) = exit_within(child, Duration::from_secs(10));
    assert!(took < Duration::from_millis(1500), "the stop took {took:?}: the waiting call was sent");
    assert_eq!(code, 3, "{report}\n{stderr}");
    assert_eq!(user_imports().await.len(), 1, "no call sent after the stop");
}

#[tokio::test]
async fn a_second_sigterm_abandons_the_call_under_way_and_the_run_still_reports() {
    let env = Env::start(|_| {});
    env.sim.set_faults(json!({"slow": {"count": 1, "delay_ms": 30000, "method": "POST"}})).await;
    let config = env.config(&["Team"], "", &[("timeout = \"10s\"", "timeout = \"60s\"")]);
    let mut child = spawn_sync(&config);
    env.wait_for_import("in_flight").await;
    sigterm(&child);
    // The first request lets the call finish: still running a second later.
    std::thread::sleep(Duration::from_secs(1));
    assert!(child.try_wait().unwrap().is_none(), "the first SIGTERM lets the call under way finish");
    sigterm(&child);
    let (code, report, stderr, took) = exit_within(child, Duration::from_secs(5));
    assert!(took < Duration::from_secs(3), "the second stop took {took:?}");
    assert_eq!(code, 3, "{report}\n{stderr}");
    assert_eq!(report["interrupted"], true, "{report}");
    let team = common::report_group(&report, "Team");
    assert_eq!((team["imported"].as_u64(), team["status"].as_str()), (Some(0), Some("skipped")), "{report}");
    assert!(stderr.contains("abandoned: the run was asked to stop"), "{stderr}");
    assert!(stderr.contains("second stop request: calls in flight abandoned"), "{stderr}");
    assert_eq!(env.sim.calls_to("POST", IMPORT).await.len(), 1, "nothing started after the stop");
}

#[tokio::test]
async fn run_timeout_stops_a_long_run_as_if_asked() {
    // Big is imported member by member (the simulator refuses groups over 3), each answer a second late: the
    // reads end after about 2 s, the five imports would take 5 s more.
    let env = Env::start(|c| c.group_import_limit = 3);
    env.sim.set_faults(json!({"latency_ms": 1000})).await;
    let one_at_a_time = [("timeout = \"10s\"", "timeout = \"10s\"\nconcurrency = 1")];
    let config = env.config(&["Big"], "run_timeout = \"4s\"", &one_at_a_time);
    let child = spawn_sync(&config);
    let (code, report, stderr, took) = exit_within(child, Duration::from_secs(20));
    assert_eq!((report["run_timeout_reached"].as_bool(), report["interrupted"].as_bool()), (Some(true), Some(true)));
    assert!(stderr.contains("run deadline reached (sync.run_timeout), stopping as if asked"), "{stderr}");
    // Normally during the imports (partial, exit 3); on a machine slow enough to be still reading, nothing
    // was written (failed, exit 1). Either way, stopped.
    assert!(code == 3 || code == 1, "{report}\n{stderr}");
    let users = env.sim.calls_to("POST", IMPORT).await.into_iter().filter(|c| c["body"].get("UserName").is_some());
    let attempted = users.count();
    assert!(attempted < 5, "the run stopped before the end: {attempted} imports\n{report}");
    assert!(took < Duration::from_secs(8), "took {took:?}");
    if code == 3 {
        let imported = common::report_group(&report, "Big")["imported"].as_u64().unwrap() as usize;
        assert_eq!(imported, attempted, "every call made is in the report: {report}");
    }
}
