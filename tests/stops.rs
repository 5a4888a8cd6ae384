//! Stop requests that stop: SIGTERM during a slow directory read, during a retry wait, a second SIGTERM during
//! a call that hangs, and `sync.run_timeout`. The real binary against a real slapd and the simulator.
//!
//! A loaded machine must not fail them: each asserts that the stop came before an event that would otherwise
//! have come (a timeout, a retry, a call's turn, a slow answer), with the time measured against that event's own
//! wait and half of it to spare, and matches log events by their message in `--log-format json`, not by wording
//! within a line.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Directory, Env, Stack};
use serde_json::{Value, json};

const IMPORT: &str = "/api/v1/integrations/IdentityManagement/users";

/// `Team`: alice, bob. `Big`: big00000..big00004. `Many`: many00000..many00015.
fn directory() -> Directory {
    let mut d = Directory::new();
    let alice = d.user("alice");
    let bob = d.user("bob");
    d.group("Team", &[alice, bob]);
    let big = d.users("big", 5);
    d.group("Big", &big);
    let many = d.users("many", 16);
    d.group("Many", &many);
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

/// A `sync --json` of the binary, its logs as JSON lines in a file that can be read while it runs.
struct Sync {
    child: Child,
    log: PathBuf,
}

fn spawn_sync(config: &Path) -> Sync {
    let log = config.with_file_name("sync.log");
    let child = Command::new(common::binary())
        .args(["sync", "--json", "--log-format", "json", "--config", config.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Sync { child, log }
}

impl Sync {
    fn events(&self) -> Events {
        Events::read(&self.log)
    }

    /// Waits for an event with this message: the run has got that far.
    fn wait_for(&self, message: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.events().has(message) {
            assert!(Instant::now() < deadline, "no {message:?} event: {:?}", self.events());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// JSON log lines.
#[derive(Debug)]
struct Events(Vec<Value>);

impl Events {
    /// The events logged so far (a line still being written is left out).
    fn read(log: &Path) -> Events {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        Events(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
    }

    fn has(&self, message: &str) -> bool {
        self.0.iter().any(|e| e["fields"]["message"] == message)
    }

    /// Whether an event carries an `error` field saying this.
    fn has_error(&self, says: &str) -> bool {
        self.0.iter().any(|e| e["fields"]["error"].as_str().is_some_and(|error| error.contains(says)))
    }
}

fn sigterm(sync: &Sync) {
    Command::new("kill").args(["-TERM", &sync.child.id().to_string()]).status().unwrap();
}

/// Waits for the run to exit within `limit`; its exit code, report, log events and how long it took.
fn exit_within(sync: Sync, limit: Duration) -> (i32, Value, Events, Duration) {
    let Sync { mut child, log } = sync;
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running {limit:?} after the signal:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = started.elapsed();
    let out = child.wait_with_output().unwrap();
    let events = Events::read(&log);
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}): {}\n{events:?}", String::from_utf8_lossy(&out.stdout)));
    (out.status.code().expect("exited, not killed"), report, events, took)
}

#[tokio::test]
async fn sigterm_while_the_directory_does_not_answer_ends_the_run_at_once_and_writes_nothing() {
    let env = Env::start(|_| {});
    // The kernel accepts the connection; slapd never answers the bind. ldap.timeout is a minute.
    let config = env.config(&["Team"], "", &[("timeout = \"5s\"", "timeout = \"60s\"")]);
    env.slapd.freeze(true);
    let sync = spawn_sync(&config);
    sync.wait_for("run started");
    // Connecting and binding now (on a loaded machine perhaps not yet: the stop is honoured either way).
    std::thread::sleep(Duration::from_millis(300));
    sigterm(&sync);
    let result = exit_within(sync, Duration::from_secs(50));
    env.slapd.freeze(false);
    let (code, report, events, took) = result;
    // Without the stop, the run would wait for the 60 s ldap.timeout.
    assert!(took < Duration::from_secs(30), "the stop took {took:?}: it waited for the timeout");
    assert_eq!((code, report["result"].as_str()), (1, Some("failed")), "{report}\n{events:?}");
    assert_eq!(report["interrupted"], true);
    assert!(report["error"].as_str().unwrap().contains("asked to stop while reading"), "{report}");
    assert!(events.has("run stopped during the reads, nothing written"), "{events:?}");
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
    let sync = spawn_sync(&path);
    let deadline = Instant::now() + Duration::from_secs(60);
    while proxy.forwarded() < 300 {
        assert!(Instant::now() < deadline, "the search never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    sigterm(&sync);
    let (code, report, events, took) = exit_within(sync, Duration::from_secs(50));
    // Without the stop, the run would wait for the 60 s ldap.timeout.
    assert!(took < Duration::from_secs(30), "the stop took {took:?}: it waited for the timeout");
    assert!(events.has("directory connected"), "the bind was done: {events:?}");
    assert_eq!((code, report["result"].as_str()), (1, Some("failed")), "{report}\n{events:?}");
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
    let sync = spawn_sync(&config);
    env.wait_for_import("done").await;
    std::thread::sleep(Duration::from_millis(300));
    sigterm(&sync);
    let (code, report, events, took) = exit_within(sync, Duration::from_secs(15));
    // Without the stop, the run would wait out the 20 s Retry-After.
    assert!(took < Duration::from_secs(10), "the stop took {took:?}: it waited for the retry");
    assert_eq!(code, 3, "{report}\n{events:?}");
    assert_eq!(report["interrupted"], true, "{report}");
    assert!(events.has("cloudshell call not retried: the run was asked to stop"), "{events:?}");
    assert_eq!(env.sim.calls_to("POST", IMPORT).await.len(), 1, "no retry, and no fallback, after the stop");
}

#[tokio::test]
async fn sigterm_drops_a_call_still_waiting_for_its_turn_under_max_requests_per_second() {
    // Many is imported member by member, one request every 2 s: its 16 imports are all under way at once, each
    // waiting for its turn, the last 30 s after the first.
    let env = Env::start(|c| c.group_import_limit = 3);
    let paced = [("timeout = \"10s\"", "timeout = \"10s\"\nconcurrency = 16\nmax_requests_per_second = 0.5")];
    let config = env.config(&["Many"], "", &paced);
    let sync = spawn_sync(&config);
    let deadline = Instant::now() + Duration::from_secs(60);
    let user_imports = || async {
        let calls = env.sim.calls_to("POST", IMPORT).await;
        calls.into_iter().filter(|c| c["body"].get("UserName").is_some()).collect::<Vec<Value>>()
    };
    while user_imports().await.is_empty() {
        assert!(Instant::now() < deadline, "no user import");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The other 15 now wait for their turns: the stop drops them.
    sigterm(&sync);
    let (code, report, events, took) = exit_within(sync, Duration::from_secs(40));
    assert!(took < Duration::from_secs(15), "the stop took {took:?}: it waited for the calls' turns");
    assert_eq!(code, 3, "{report}\n{events:?}");
    // Sent: the first, and any whose turn came before the stop was seen (one every 2 s); waiting calls sent
    // anyway would make 16.
    let sent = user_imports().await.len();
    assert!(sent < 8, "{sent} imports: calls waiting for their turn were sent after the stop");
    let imported = common::report_group(&report, "Many")["imported"].as_u64().unwrap() as usize;
    assert_eq!(imported, sent, "every call made is in the report: {report}");
}

#[tokio::test]
async fn a_second_sigterm_abandons_the_call_under_way_and_the_run_still_reports() {
    let env = Env::start(|_| {});
    env.sim.set_faults(json!({"slow": {"count": 1, "delay_ms": 30000, "method": "POST"}})).await;
    let config = env.config(&["Team"], "", &[("timeout = \"10s\"", "timeout = \"60s\"")]);
    let mut sync = spawn_sync(&config);
    env.wait_for_import("in_flight").await;
    sigterm(&sync);
    // The first request lets the call finish: the stop is seen, and the run still goes on.
    sync.wait_for("stop requested");
    std::thread::sleep(Duration::from_millis(500));
    assert!(sync.child.try_wait().unwrap().is_none(), "the first SIGTERM lets the call under way finish");
    sigterm(&sync);
    let (code, report, events, took) = exit_within(sync, Duration::from_secs(25));
    // Without the second stop, the run would wait for the call's 30 s answer.
    assert!(took < Duration::from_secs(15), "the second stop took {took:?}: it waited for the answer");
    assert_eq!(code, 3, "{report}\n{events:?}");
    assert_eq!(report["interrupted"], true, "{report}");
    let team = common::report_group(&report, "Team");
    assert_eq!((team["imported"].as_u64(), team["status"].as_str()), (Some(0), Some("skipped")), "{report}");
    assert!(events.has_error("abandoned: the run was asked to stop"), "{events:?}");
    assert!(events.has("second stop request: calls in flight abandoned"), "{events:?}");
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
    let sync = spawn_sync(&config);
    let (code, report, events, _) = exit_within(sync, Duration::from_secs(60));
    assert_eq!((report["run_timeout_reached"].as_bool(), report["interrupted"].as_bool()), (Some(true), Some(true)));
    assert!(events.has("run deadline reached (sync.run_timeout), stopping as if asked"), "{events:?}");
    // Normally during the imports (partial, exit 3); on a machine slow enough to be still reading, nothing
    // was written (failed, exit 1). Either way, stopped: not every import was made.
    assert!(code == 3 || code == 1, "{report}\n{events:?}");
    let users = env.sim.calls_to("POST", IMPORT).await.into_iter().filter(|c| c["body"].get("UserName").is_some());
    let attempted = users.count();
    assert!(attempted < 5, "the run stopped before the end: {attempted} imports\n{report}");
    if code == 3 {
        let imported = common::report_group(&report, "Big")["imported"].as_u64().unwrap() as usize;
        assert_eq!(imported, attempted, "every call made is in the report: {report}");
    }
}
