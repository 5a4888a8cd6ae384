//! The daemon (`run`) as systemd runs it: the real binary on a schedule against slapd and the simulator,
//! driven by signals. Its logs are JSON lines (`--log-format json`); the tests match events by their message
//! and fields, not by wording within a line.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Daemon, Directory, Env, PEOPLE, Stack};
use serde_json::{Value, json};

const IMPORT: &str = "/api/v1/integrations/IdentityManagement/users";
const NEVER: &str = "0 0 0 1 1 *"; // once a year: only run_on_start and SIGUSR1 trigger runs
/// Team's members placed in the CloudShell group `Lab Users`.
const TEAM_TO_LAB_USERS: &str = "[[sync.mapping]]\ndirectory_group = \"Team\"\ncloudshell_groups = [\"Lab Users\"]\n";
/// Leavers deactivated, with no percentage limit in the way of a directory this small.
const DEACTIVATE_LEAVERS: &str =
    "[sync.leavers]\naction = \"deactivate\"\nmax_percent = 100\nmax_percent_per_day = 100\n";

/// `Team`: alice, bob. `Other`: erin. `Big`: big00000..big00004.
fn directory() -> Directory {
    let mut d = Directory::new();
    let alice = d.user("alice");
    let bob = d.user("bob");
    d.group("Team", &[alice, bob]);
    let erin = d.user("erin");
    d.group("Other", &[erin]);
    let big = d.users("big", 5);
    d.group("Big", &big);
    d
}

impl Env {
    fn start(change: impl FnOnce(&mut cloudshell_sim::Config)) -> Env {
        Env(Stack::start(&directory(), change))
    }

    /// With the `syncprov` overlay: the daemon reads what changed between full reads.
    fn with_content_sync() -> Env {
        Env(Stack::start_on(common::Slapd::start_with_syncprov(&directory()), |_| {}))
    }

    /// The daemon on `config`, once its run at start has finished.
    fn daemon_started(&self, config: &Path) -> Daemon {
        let daemon = self.daemon(config);
        daemon.wait_for("run finished", 1, Duration::from_secs(20));
        daemon
    }

    fn config(&self, groups: &[&str], cron: &str, sync_extra: &str, more: &str) -> PathBuf {
        let state = self.files.path("state");
        let sections = format!(
            "[schedule]\ncron = \"{cron}\"\nrun_on_start = true\n\n[monitor]\nstate_directory = \"{}\"\n{more}",
            state.display()
        );
        self.files.config(&self.slapd.url(), &self.sim.url(), groups, sync_extra, &sections)
    }

    fn status(&self) -> Option<Value> {
        let text = std::fs::read_to_string(self.files.path("state/status.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn daemon(&self, config: &Path) -> Daemon {
        Daemon::spawn(config, self.files.path("daemon.log"), &[])
    }
}

async fn wait_until<F: std::future::Future<Output = bool>>(what: &str, within: Duration, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not happen within {within:?}");
}

#[tokio::test]
async fn runs_on_a_one_second_schedule_and_imports_a_member_added_between_cycles() {
    let env = Env::start(|_| {});
    let port = common::free_port();
    let config = env.config(&["Team"], "* * * * * *", "", &format!("listen = \"127.0.0.1:{port}\"\n"));
    let mut daemon = env.daemon(&config);

    daemon.wait_for("run finished", 1, Duration::from_secs(20));
    assert_eq!(env.sim.usernames().await, ["admin", "alice", "bob"]);

    // A new hire joins Team in the directory between cycles.
    env.add_person("newhire");
    env.change_members("Team", &["newhire"], &[]);
    wait_until("the new hire's import", Duration::from_secs(20), || async {
        env.sim.usernames().await.contains(&"newhire".to_string())
    })
    .await;
    // The import is seen before its run's `run finished` line may be logged: that run is the second at least.
    let runs_then = daemon.count("run finished").max(2);
    daemon.wait_for("run finished", runs_then + 1, Duration::from_secs(10));
    assert!(daemon.count("run finished") >= 3, "several cycles:\n{}", daemon.log());

    let status = env.status().expect("status file written");
    assert_eq!(status["last_run"]["result"], "ok", "{status}");
    assert_eq!(status["last_run"]["groups"][0]["name"], "Team");
    assert_eq!(status["last_run"]["groups"][0]["members"], 3, "{status}");
    assert!(status["last_success_at"].is_string() && status["next_run"].is_string(), "{status}");

    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("cloudshell_ldap_sync_group_members{group=\"Team\"} 3"), "{metrics}");
    assert!(metrics.contains("cloudshell_ldap_sync_imports_total 3"), "{metrics}");
    assert!(metrics.contains("cloudshell_ldap_sync_last_success_timestamp_seconds"), "{metrics}");
    assert!(
        metrics.contains("cloudshell_ldap_sync_api_request_duration_seconds_count{call=\"import_group\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("cloudshell_ldap_sync_runs_total{result=\"ok\"}"), "{metrics}");
    let health = reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.json::<Value>().await.unwrap()["last_result"], "ok");

    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(15)), 0);
}

#[tokio::test]
async fn a_tick_during_a_run_is_skipped_and_runs_never_overlap() {
    let env = Env::start(|_| {});
    // Every answer takes 700 ms and a run waits for several in turn (the user list, then each group's import):
    // longer than a second, however fast the machine, so a tick of the every-second schedule falls inside it.
    env.sim.set_faults(json!({"latency_ms": 700})).await;
    let config = env.config(&["Team", "Other"], "* * * * * *", "", "");
    let mut daemon = env.daemon(&config);
    daemon.wait_for("tick skipped, a run is in progress", 1, Duration::from_secs(60));
    daemon.wait_for("run finished", 2, Duration::from_secs(60));
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(30)), 0);
    // Every run that started finished before the next one started, and every skipped tick came during a run.
    let mut open = false;
    for event in daemon.events() {
        match event["fields"]["message"].as_str() {
            Some("run triggered") => {
                assert!(!open, "two runs overlap:\n{}", daemon.log());
                open = true;
            }
            Some("run finished") => open = false,
            Some("tick skipped, a run is in progress") => {
                assert!(open, "a tick skipped with no run:\n{}", daemon.log())
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn sigterm_during_a_run_lets_the_call_in_flight_finish_and_writes_nothing_after() {
    // Big is above the import limit: five per-user imports, one at a time, each taking 600 ms.
    let env = Env::start(|c| c.group_import_limit = 3);
    env.sim.set_faults(json!({"latency_ms": 600})).await;
    let config = env.config(&["Big"], NEVER, "", "").to_path_buf();
    std::fs::write(
        &config,
        std::fs::read_to_string(&config).unwrap().replace("timeout = \"10s\"", "timeout = \"10s\"\nconcurrency = 1"),
    )
    .unwrap();
    let mut daemon = env.daemon(&config);

    // Wait for the second per-user import to be in flight, then ask the daemon to stop.
    wait_until("a per-user import in flight", Duration::from_secs(30), || async {
        let calls = env.sim.calls_to("POST", IMPORT).await;
        let users: Vec<&Value> = calls.iter().filter(|c| c["body"].get("UserName").is_some()).collect();
        users.len() == 2 && users[1]["state"] == "in_flight"
    })
    .await;
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(15)), 0, "{}", daemon.log());

    tokio::time::sleep(Duration::from_millis(800)).await;
    let calls = env.sim.calls_to("POST", IMPORT).await;
    let users: Vec<&Value> = calls.iter().filter(|c| c["body"].get("UserName").is_some()).collect();
    assert_eq!(users.len(), 2, "no import after the stop request: {users:?}");
    assert!(
        users.iter().all(|c| c["state"] == "done" && c["status"] == 200),
        "the call in flight completed: {users:?}"
    );
    assert_eq!(env.sim.usernames().await.len(), 3, "admin and the two imported");
    assert_eq!(daemon.count("group import interrupted"), 1, "{}", daemon.log());
    assert_eq!(env.status().unwrap()["last_run"]["result"], "partial");
}

#[tokio::test]
async fn sighup_keeps_the_old_config_when_the_new_one_is_broken_and_uses_a_good_one() {
    let env = Env::start(|_| {});
    let config = env.config(&["Other"], NEVER, "", "");
    let good = std::fs::read_to_string(&config).unwrap();
    let mut daemon = env.daemon(&config);
    daemon.wait_for("run finished", 1, Duration::from_secs(20));
    assert_eq!(env.sim.usernames().await, ["admin", "erin"]);

    // A broken file: the daemon says why and keeps running on the old configuration.
    std::fs::write(&config, good.replace("[sync]", "[sync]\nbogus = 1")).unwrap();
    daemon.signal("HUP");
    daemon.wait_for("configuration reload failed, keeping the previous configuration", 1, Duration::from_secs(10));
    assert!(daemon.log().contains("bogus"), "the reason is logged:\n{}", daemon.log());
    daemon.signal("USR1");
    daemon.wait_for("run finished", 2, Duration::from_secs(20));
    assert_eq!(env.status().unwrap()["last_run"]["groups"][0]["name"], "Other");

    // A good file with another group list: the next run uses it.
    std::fs::write(&config, good.replace("groups = [\"Other\"]", "groups = [\"Team\"]")).unwrap();
    daemon.signal("HUP");
    daemon.wait_for("configuration reloaded", 1, Duration::from_secs(10));
    daemon.signal("USR1");
    daemon.wait_for("run finished", 3, Duration::from_secs(20));
    assert_eq!(env.status().unwrap()["last_run"]["groups"][0]["name"], "Team");
    assert_eq!(env.sim.usernames().await, ["admin", "erin", "alice", "bob"]);
    let groups: Vec<Value> =
        env.sim.calls_to("POST", IMPORT).await.into_iter().map(|c| c["body"]["GroupName"].clone()).collect();
    assert_eq!(groups, [json!("Other"), json!("Team")]);

    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(15)), 0);
}

#[tokio::test]
async fn tells_systemd_it_is_ready_and_how_each_run_went() {
    let env = Env::start(|_| {});
    let config = env.config(&["Team"], NEVER, "", "");
    let socket_path = env.files.path("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut daemon =
        Daemon::spawn(&config, env.files.path("daemon.log"), &[("NOTIFY_SOCKET", socket_path.to_str().unwrap())]);
    let mut messages = Vec::new();
    let mut buf = [0u8; 4096];
    while !messages.iter().any(|m: &String| m.contains("STATUS=last run")) {
        let n = socket.recv(&mut buf).unwrap_or_else(|e| panic!("no notification ({e}); got {messages:?}"));
        messages.push(String::from_utf8_lossy(&buf[..n]).to_string());
    }
    assert!(messages[0].contains("READY=1"), "{messages:?}");
    assert!(messages.last().unwrap().contains("STATUS=last run ok: 2 imported, 0 failed; next run"), "{messages:?}");
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(15)), 0);
    let n = socket.recv(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
}

#[tokio::test]
async fn a_daemon_run_waits_its_turn_while_another_process_holds_the_run_lock() {
    let env = Env::start(|_| {});
    let config = env.config(&["Team"], NEVER, "", "");
    std::fs::create_dir_all(env.files.path("state")).unwrap();
    // A `sync` typed by hand is running, with none of the daemon's state directory (as under systemd, where only
    // the daemon has $STATE_DIRECTORY): the lock on the configuration's directory keeps them apart.
    let held = cloudshell_ldap_sync::lock::acquire_for_run(None, &config).unwrap();
    let mut daemon = env.daemon(&config);
    daemon.wait_for("run skipped, another run holds the lock", 1, Duration::from_secs(10));
    assert!(env.sim.calls_to("POST", IMPORT).await.is_empty(), "nothing imported beside the other run");
    assert!(env.status().is_none(), "a skipped run is not a run");
    drop(held);
    daemon.signal("USR1");
    daemon.wait_for("run finished", 1, Duration::from_secs(10));
    assert_eq!(env.sim.calls_to("POST", IMPORT).await.len(), 1, "its turn came");
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(10)), 0);
}

#[tokio::test]
async fn a_flood_of_idle_connections_to_the_monitoring_endpoint_starves_neither_it_nor_the_sync() {
    let env = Env::start(|_| {});
    let port = common::free_port();
    let config = env.config(&["Team"], NEVER, "", &format!("listen = \"127.0.0.1:{port}\"\n"));
    // 128 descriptors in all: fewer than the connections below.
    let file = std::fs::File::create(env.files.path("daemon.log")).unwrap();
    let child = Command::new("sh")
        .args(["-c", "ulimit -n 128 && exec \"$0\" run --log-format json --config \"$1\""])
        .arg(env!("CARGO_BIN_EXE_cloudshell-ldap-sync"))
        .arg(&config)
        .env("RUST_LOG", "info")
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .unwrap();
    let daemon = Daemon { child, log: env.files.path("daemon.log") };
    daemon.wait_for("run finished", 1, Duration::from_secs(20));

    let idle: Vec<std::net::TcpStream> =
        (0..300).filter_map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).ok()).collect();
    assert!(idle.len() >= 200, "the flood connected: {}", idle.len());
    // A connection past the limit is told why before it is closed (the first 32 wait 3 s for their headers).
    let mut late = idle.last().unwrap();
    late.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut late, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 503 ") && answer.ends_with("at its connection limit\n"), "{answer:?}");
    std::thread::sleep(Duration::from_millis(500));
    let fds = std::fs::read_dir(format!("/proc/{}/fd", daemon.child.id())).unwrap().count();
    assert!(fds < 80, "the daemon holds {fds} descriptors under the flood");

    // A run now needs descriptors of its own: the directory connection, CloudShell's.
    env.sim.clear_calls().await;
    daemon.signal("USR1");
    daemon.wait_for("run finished", 2, Duration::from_secs(20));
    let log = daemon.log();
    assert!(!log.contains("Too many open files"), "{log}");
    let finished: Vec<Value> =
        daemon.events().into_iter().filter(|e| e["fields"]["message"] == "run finished").collect();
    assert!(finished.len() == 2 && finished.iter().all(|e| e["fields"]["result"] == "ok"), "{log}");

    // Connections past the limit are closed at once, the idle ones held after 3 s without headers: a probe
    // repeated every 200 ms gets through within seconds, while the flood still holds its sockets.
    let started = Instant::now();
    let probe = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
    let url = format!("http://127.0.0.1:{port}/healthz");
    loop {
        match probe.get(&url).send().await {
            Ok(answer) if answer.status() == 200 => break,
            other => assert!(
                started.elapsed() < Duration::from_secs(10),
                "no answer after {:?}: {other:?}",
                started.elapsed()
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        daemon.count("monitoring endpoint at its connection limit, closing new connections") > 0,
        "{}",
        daemon.log()
    );
    drop(idle);
}

/// The daemon keeps the managed users in memory from one run to the next instead of reading `state.db` again,
/// and still acts on them: a leaver is deactivated by the next run (the positive control). A record removed by
/// hand between runs (`sqlite3`, another process) is seen by that run: that user is no leaver.
#[tokio::test]
async fn the_managed_users_kept_between_runs_are_acted_on_and_a_record_removed_by_hand_is_seen() {
    let env = Env::start(|_| {});
    let leavers = DEACTIVATE_LEAVERS;
    let config = env.config(&["Team", "Other"], NEVER, "", leavers);
    let daemon = env.daemon_started(&config);
    assert_eq!(env.sim.usernames().await, ["admin", "alice", "bob", "erin"]);

    // bob and erin leave their groups (alice takes erin's place in Other, which cannot be empty); erin's record
    // is removed by hand before the next run.
    for (group, change) in
        [("Team", "delete: member\nmember: uid=bob"), ("Other", "replace: member\nmember: uid=alice")]
    {
        env.slapd.modify(&format!("dn: cn={group},{}\nchangetype: modify\n{change},{PEOPLE}\n", common::GROUPS));
    }
    let db = rusqlite::Connection::open(env.files.path("state/state.db")).unwrap();
    assert_eq!(db.execute("DELETE FROM managed_users WHERE folded = 'erin'", []).unwrap(), 1);
    drop(db);
    daemon.signal("USR1");
    daemon.wait_for("run finished", 2, Duration::from_secs(20));
    assert!(!env.sim.is_active("bob").await, "the leaver is deactivated:\n{}", daemon.log());
    assert!(env.sim.is_active("erin").await, "no longer managed, so no leaver:\n{}", daemon.log());
    assert!(env.sim.is_active("alice").await);
}

/// The `directory read` events logged so far: (mode, method, reason).
fn reads(daemon: &Daemon) -> Vec<(String, Value, String)> {
    let read =
        |f: &Value| (f["mode"].as_str().unwrap_or_default().to_string(), f["method"].clone(), f["reason"].to_string());
    daemon.fields_of("directory read").iter().map(read).collect()
}

/// With OpenLDAP's content sync, the daemon reads only what changed between full reads: a new hire added to a
/// group is imported by a change read, and a member whose removal it reports is a leaver there and then
/// (deactivated: the positive control). The full read that follows finds nothing more to do.
#[tokio::test]
async fn between_full_reads_the_daemon_reads_only_what_changed_and_acts_on_the_leavers_it_reports() {
    let env = Env::with_content_sync();
    let leavers = DEACTIVATE_LEAVERS;
    let config = env.config(&["Team", "Other"], NEVER, "full_sync_every = \"4s\"", leavers);
    let daemon = env.daemon_started(&config);
    let started = Instant::now();
    assert_eq!(reads(&daemon)[0].0, "full", "{:?}", reads(&daemon));
    assert_eq!(reads(&daemon)[0].1, "syncrepl", "the model built at the full read");

    // A new hire joins Team, bob leaves it.
    env.add_person("newhire");
    env.change_members("Team", &["newhire"], &["bob"]);
    daemon.signal("USR1");
    daemon.wait_for("run finished", 2, Duration::from_secs(20));
    let read = &daemon.events().into_iter().filter(|e| e["fields"]["message"] == "directory read").nth(1).unwrap();
    assert_eq!(read["fields"]["mode"], "changes", "{read}");
    assert!(
        read["fields"]["changed_groups"].as_u64() >= Some(1) && read["fields"]["changed_users"].as_u64() >= Some(1)
    );
    // Only Team, which the changes touch, is resolved again; Other keeps its last outcome (the full read resolved
    // both: the control).
    let resolved = |n: usize| daemon.fields_of("directory read")[n]["resolved_groups"].clone();
    assert_eq!((resolved(0), resolved(1)), (json!(2), json!(1)), "{:?}", daemon.fields_of("directory read"));
    assert!(env.sim.usernames().await.contains(&"newhire".to_string()), "imported by the change read");
    assert!(!env.sim.is_active("bob").await, "the leaver the change read reported:\n{}", daemon.log());
    assert!(env.sim.is_active("alice").await && env.sim.is_active("erin").await && env.sim.is_active("newhire").await);

    // Once sync.full_sync_every has passed, a full read, with nothing more to change.
    std::thread::sleep(Duration::from_secs(4).saturating_sub(started.elapsed()));
    env.sim.clear_calls().await;
    daemon.signal("USR1");
    daemon.wait_for("run finished", 3, Duration::from_secs(20));
    let third = &reads(&daemon)[2];
    assert_eq!(third.0, "full", "{third:?}");
    assert!(third.2.contains("full_sync_every"), "{third:?}");
    // The model kept is brought up to date and verified by the full read, not read whole again (the first full
    // read, without one, built it).
    let model = |n: usize| daemon.fields_of("directory read")[n]["model"].clone();
    assert_eq!((model(0), model(2)), (json!("built"), json!("verified")), "{:?}", daemon.fields_of("directory read"));
    assert_eq!(writes(&env).await, Vec::<Value>::new());
    assert!(!env.sim.is_active("bob").await);

    // The verified model reads the changes after it as a model read whole does: alice leaves Team, and the next
    // change read reports her departure, a leaver there and then (the positive control of the verified model).
    env.change_members("Team", &[], &["alice"]);
    daemon.signal("USR1");
    daemon.wait_for("run finished", 4, Duration::from_secs(20));
    let fourth = &reads(&daemon)[3];
    assert_eq!(fourth.0, "changes", "{fourth:?}");
    assert!(!env.sim.is_active("alice").await, "the departure after the verified full read:\n{}", daemon.log());
    assert!(env.sim.is_active("erin").await && env.sim.is_active("newhire").await);
}

/// A change read acts only on the departures it reports: a managed user already gone at the last full read and
/// still waiting there (`grace_runs = 2`) is not counted again by change reads, and waits for the next full
/// read (where the positive control deactivates them); a member whose removal a change read reports counts
/// from there, run after run, and is deactivated by the second change read.
#[tokio::test]
async fn a_change_read_counts_only_the_departures_it_reports() {
    let env = Env::with_content_sync();
    let leavers =
        "[sync.leavers]\naction = \"deactivate\"\ngrace_runs = 2\nmax_percent = 100\nmax_percent_per_day = 100\n";
    let config = env.config(&["Team", "Big"], NEVER, "full_sync_every = \"3s\"", leavers);
    let daemon = env.daemon_started(&config);
    let remove = |group: &str, uid: &str| env.change_members(group, &[], &[uid]);
    // bob leaves before the second full read, which counts his first run as a leaver.
    remove("Team", "bob");
    std::thread::sleep(Duration::from_secs(3));
    daemon.signal("USR1");
    daemon.wait_for("run finished", 2, Duration::from_secs(20));
    let full_at = Instant::now();
    assert_eq!(reads(&daemon)[1].0, "full");
    assert!(env.sim.is_active("bob").await, "waiting: grace_runs = 2");

    remove("Big", "big00000");
    for n in 3..=4 {
        daemon.signal("USR1");
        daemon.wait_for("run finished", n, Duration::from_secs(20));
        assert_eq!(reads(&daemon)[n - 1].0, "changes", "{:?}", reads(&daemon));
    }
    assert!(!env.sim.is_active("big00000").await, "reported gone, two runs:\n{}", daemon.log());
    assert!(env.sim.is_active("bob").await, "gone before the change reads: waits for a full read");

    std::thread::sleep(Duration::from_secs(3).saturating_sub(full_at.elapsed()));
    daemon.signal("USR1");
    daemon.wait_for("run finished", 5, Duration::from_secs(20));
    assert_eq!(reads(&daemon)[4].0, "full");
    assert!(!env.sim.is_active("bob").await, "deactivated at the full read:\n{}", daemon.log());
    assert!(env.sim.is_active("alice").await && env.sim.is_active("big00001").await);
}

/// By `modifyTimestamp` (`ldap.change_detection = "modify_timestamp"`, a slapd without `syncprov`): a change
/// read imports a new hire (the positive control), but cannot see a deletion, so it counts no departure: bob,
/// taken out of Team, waits and is logged as waiting, and the next full read deactivates him (the leaver
/// rule's own positive control).
#[tokio::test]
async fn by_modify_timestamp_a_change_read_imports_new_hires_and_leavers_wait_for_a_full_read() {
    let env = Env::start(|_| {});
    let leavers = DEACTIVATE_LEAVERS;
    let config = env.config(&["Team", "Other"], NEVER, "full_sync_every = \"4s\"", leavers);
    let stamps = "[ldap]\nchange_detection = \"modify_timestamp\"\nmodify_timestamp_margin = \"1s\"\n";
    std::fs::write(&config, std::fs::read_to_string(&config).unwrap().replace("[ldap]\n", stamps)).unwrap();
    let daemon = env.daemon_started(&config);
    let started = Instant::now();
    assert_eq!((reads(&daemon)[0].0.as_str(), &reads(&daemon)[0].1), ("full", &json!("modify_timestamp")));

    env.add_person("newhire");
    env.change_members("Team", &["newhire"], &["bob"]);
    daemon.signal("USR1");
    daemon.wait_for("run finished", 2, Duration::from_secs(20));
    assert_eq!((reads(&daemon)[1].0.as_str(), &reads(&daemon)[1].1), ("changes", &json!("modify_timestamp")));
    assert!(env.sim.usernames().await.contains(&"newhire".to_string()), "imported by the change read");
    assert!(env.sim.is_active("bob").await, "no departure from a modifyTimestamp read:\n{}", daemon.log());
    let waiting = daemon.fields_of("leavers wait for a full read");
    assert_eq!(waiting.len(), 1, "{}", daemon.log());
    assert_eq!(waiting[0]["username"], "bob");

    std::thread::sleep(Duration::from_secs(4).saturating_sub(started.elapsed()));
    daemon.signal("USR1");
    daemon.wait_for("run finished", 3, Duration::from_secs(20));
    assert_eq!(reads(&daemon)[2].0, "full");
    assert!(!env.sim.is_active("bob").await, "deactivated at the full read:\n{}", daemon.log());
    assert!(env.sim.is_active("alice").await && env.sim.is_active("newhire").await);
}

/// Without content sync on the server (`auto`), every run reads in full and the reason is logged once; with
/// `change_detection = "off"` every run reads in full and says so.
#[tokio::test]
async fn without_content_sync_every_run_reads_in_full_and_says_why_once() {
    let env = Env::start(|_| {});
    let config = env.config(&["Team"], NEVER, "", "");
    let daemon = env.daemon_started(&config);
    daemon.signal("USR1");
    daemon.wait_for("run finished", 2, Duration::from_secs(20));
    let modes: Vec<String> = reads(&daemon).into_iter().map(|r| r.0).collect();
    assert_eq!(modes, ["full", "full"]);
    assert_eq!(daemon.count("change reads unavailable, every run reads in full"), 1, "{}", daemon.log());
    let why = daemon
        .events()
        .into_iter()
        .find(|e| e["fields"]["message"] == "change reads unavailable, every run reads in full");
    assert!(why.unwrap()["fields"]["reason"].as_str().unwrap().contains("syncprov"), "names what is missing");
    drop(daemon);

    let off = env.config(&["Team"], NEVER, "", "");
    let text = std::fs::read_to_string(&off).unwrap().replace("[ldap]\n", "[ldap]\nchange_detection = \"off\"\n");
    std::fs::write(&off, text).unwrap();
    let daemon = Daemon::spawn(&off, env.files.path("daemon-off.log"), &[]);
    daemon.wait_for("run finished", 1, Duration::from_secs(20));
    assert!(reads(&daemon)[0].2.contains("change_detection = \\\"off\\\""), "{:?}", reads(&daemon));
    assert_eq!(daemon.count("change reads unavailable, every run reads in full"), 0);
}

/// The model a change read brought up to date is kept only when that run ended `ok`: after a run whose import
/// failed, the next run reads in full (and imports the new hire then).
#[tokio::test]
async fn after_a_run_that_did_not_end_ok_the_next_reads_in_full() {
    let env = Env::with_content_sync();
    let config = env.config(&["Team"], NEVER, "", "");
    let daemon = env.daemon_started(&config);
    env.add_person("newhire");
    env.change_members("Team", &["newhire"], &[]);
    env.sim.set_faults(json!({"fail": {"count": 1000, "status": 500, "method": "POST"}})).await;
    daemon.signal("USR1");
    daemon.wait_for("run finished", 2, Duration::from_secs(30));
    let second = daemon.events().into_iter().filter(|e| e["fields"]["message"] == "run finished").nth(1).unwrap();
    assert_ne!(second["fields"]["result"], "ok", "{second}");
    assert_eq!(reads(&daemon)[1].0, "changes");
    env.sim.clear_faults().await;
    daemon.signal("USR1");
    daemon.wait_for("run finished", 3, Duration::from_secs(20));
    let third = &reads(&daemon)[2];
    assert_eq!(third.0, "full", "{third:?}");
    assert!(third.2.contains("did not end ok"), "{third:?}");
    assert!(env.sim.usernames().await.contains(&"newhire".to_string()));
    assert_eq!(reads(&daemon)[2].1, "syncrepl", "a new model built");
}

/// A change read places new members in their mapped CloudShell group and removes only the members whose
/// departure it reported (bob, removed from Team: the positive control). `handadded`, put in the CloudShell
/// group by hand after the full read and wanted by no directory group, is no departure: it stays until the next
/// full read removes it.
#[tokio::test]
async fn a_change_read_removes_from_mapped_groups_only_the_departures_it_reports() {
    let env = Env::with_content_sync();
    let mapping = TEAM_TO_LAB_USERS;
    let config = env.config(&["Team"], NEVER, "remove_from_groups = true\nfull_sync_every = \"4s\"", mapping);
    let daemon = env.daemon_started(&config);
    let started = Instant::now();
    assert_eq!(env.sim.group_members("Lab Users").await, ["alice", "bob"]);
    env.sim.add_directory_users(&["handadded"], &["Lab Users"], false).await;

    env.add_person("newhire");
    env.change_members("Team", &["newhire"], &["bob"]);
    daemon.signal("USR1");
    daemon.wait_for("run finished", 2, Duration::from_secs(20));
    assert_eq!(reads(&daemon)[1].0, "changes", "{:?}", reads(&daemon));
    assert_eq!(
        env.sim.group_members("Lab Users").await,
        ["alice", "handadded", "newhire"],
        "newhire added, bob removed, handadded waits:\n{}",
        daemon.log()
    );

    std::thread::sleep(Duration::from_secs(4).saturating_sub(started.elapsed()));
    daemon.signal("USR1");
    daemon.wait_for("run finished", 3, Duration::from_secs(20));
    assert_eq!(reads(&daemon)[2].0, "full");
    assert_eq!(env.sim.group_members("Lab Users").await, ["alice", "newhire"], "removed at the full read");
}

/// A member who leaves a mapped group but stays in another configured group is no leaver, and is read again
/// before the change run removes her from the mapped CloudShell group: alice, made an admin by hand since the
/// daemon last read her, stays (an admin is never removed). The control: bob, who left the same way and is no
/// admin, is removed (carol stays in Team: a group entry needs a member). A quiet run first reads again the users the run at start placed, so that the change run's
/// only read of alice is the one before removing.
#[tokio::test]
async fn a_change_run_reads_again_whom_it_would_remove_from_a_mapped_group() {
    let env = Env::with_content_sync();
    env.add_person("carol");
    env.change_members("Team", &["carol"], &[]);
    env.change_members("Other", &["alice", "bob"], &[]);
    let mapping = TEAM_TO_LAB_USERS;
    let sync = "remove_from_groups = true\nmax_shrink_percent = 100\nfull_sync_every = \"1h\"";
    let config = env.config(&["Team", "Other"], NEVER, sync, mapping);
    let daemon = env.daemon_started(&config);
    assert_eq!(env.sim.group_members("Lab Users").await, ["alice", "bob", "carol"]);
    daemon.signal("USR1");
    daemon.wait_for("run finished", 2, Duration::from_secs(20));

    env.sim.change_users(json!({"usernames": ["alice"], "is_admin": true})).await;
    env.change_members("Team", &[], &["alice", "bob"]);
    env.sim.clear_calls().await;
    daemon.signal("USR1");
    daemon.wait_for("run finished", 3, Duration::from_secs(20));
    assert_eq!(reads(&daemon)[2].0, "changes", "{:?}", reads(&daemon));
    assert_eq!(user_reads(&env).await.0, 0, "the kept list, not a new listing");
    assert_eq!(
        env.sim.group_members("Lab Users").await,
        ["alice", "carol"],
        "bob removed, alice an admin now:\n{}",
        daemon.log()
    );
    assert!(env.sim.is_active("alice").await && env.sim.is_active("bob").await, "members of Other: no leavers");
}

/// When a change run cannot read again the users whose departure it reported, nobody leaves and nobody is
/// removed in that run: what CloudShell says of them now decides, and nothing was read. The control: once the
/// reads by id work again, the full read after `full_sync_every` deactivates the leaver and removes him from the
/// mapped group.
#[tokio::test]
async fn a_change_run_that_cannot_read_its_departures_again_acts_on_none_of_them() {
    let env = Env::with_content_sync();
    let mapping = TEAM_TO_LAB_USERS;
    let leavers = DEACTIVATE_LEAVERS;
    let sync = "remove_from_groups = true\nmax_shrink_percent = 100\nfull_sync_every = \"6s\"";
    let config = env.config(&["Team", "Other"], NEVER, sync, &format!("{mapping}{leavers}"));
    let daemon = env.daemon_started(&config);
    let started = Instant::now();
    assert_eq!(env.sim.group_members("Lab Users").await, ["alice", "bob"]);
    daemon.signal("USR1");
    daemon.wait_for("run finished", 2, Duration::from_secs(20));

    let by_id = json!({"fail": {"count": 1000, "status": 500, "path_contains": "/api/v1/users/", "method": "GET"}});
    env.sim.set_faults(by_id).await;
    env.change_members("Team", &[], &["bob"]);
    daemon.signal("USR1");
    daemon.wait_for("run finished", 3, Duration::from_secs(20));
    assert_eq!(reads(&daemon)[2].0, "changes", "{:?}", reads(&daemon));
    let warned = daemon.fields_of("users who left could not be read again: no leaver and no removal this run");
    assert_eq!(warned.len(), 1, "{}", daemon.log());
    assert!(env.sim.is_active("bob").await, "not deactivated on a record not read:\n{}", daemon.log());
    assert_eq!(env.sim.group_members("Lab Users").await, ["alice", "bob"], "nor removed");

    env.sim.clear_faults().await;
    std::thread::sleep(Duration::from_secs(6).saturating_sub(started.elapsed()));
    daemon.signal("USR1");
    daemon.wait_for("run finished", 4, Duration::from_secs(20));
    assert_eq!(reads(&daemon)[3].0, "full", "{:?}", reads(&daemon));
    assert!(!env.sim.is_active("bob").await, "the control: the leaver, at the full read:\n{}", daemon.log());
    assert_eq!(env.sim.group_members("Lab Users").await, ["alice"]);
}

/// The requests for CloudShell's users made since the calls were last cleared: (lists in full, lookups by
/// name, reads by id).
async fn user_reads(env: &Env) -> (usize, Vec<String>, usize) {
    let calls = env.sim.calls().await;
    let gets = calls.iter().filter(|c| c["method"] == "GET");
    let (mut listed, mut named, mut by_id) = (0, Vec::new(), 0);
    for c in gets {
        let (path, query) = (c["path"].as_str().unwrap_or_default(), c["query"].as_str().unwrap_or_default());
        if path.eq_ignore_ascii_case("/api/v1/users") {
            match query.split('&').find_map(|kv| kv.strip_prefix("paginationProperties.filter=")) {
                Some(name) => named.push(name.to_string()),
                None if !query.contains("paginationProperties.cursor") => listed += 1,
                None => {}
            }
        } else if path.to_ascii_lowercase().starts_with("/api/v1/users/") {
            by_id += 1;
        }
    }
    named.sort();
    (listed, named, by_id)
}

/// The calls that change something in CloudShell (a login is not one), since the calls were last cleared.
async fn writes(env: &Env) -> Vec<Value> {
    let calls = env.sim.calls().await.into_iter();
    calls
        .filter(|c| {
            c["method"] != "GET" && !c["path"].as_str().unwrap_or_default().eq_ignore_ascii_case("/Api/Auth/Login")
        })
        .collect()
}

/// `handmade` created in CloudShell by hand (as at a first login), then `newhire` and `handmade` added to the
/// directory and to Team.
async fn hire_newhire_and_handmade(env: &Env) {
    env.sim.add_directory_users(&["handmade"], &[], false).await;
    for uid in ["newhire", "handmade"] {
        env.add_person(uid);
    }
    env.change_members("Team", &["newhire", "handmade"], &[]);
}

/// Between full reads, CloudShell's user list is not read again: the daemon keeps the last one, reads again by
/// id only the users it changed (here: placed in a mapped group), and imports the members it finds missing,
/// looking up by name afterwards only those the imports' answers do not name (`handmade`, created in CloudShell
/// by hand, is found existing by its import, looked up and placed; `newhire` is imported and placed by the id
/// its import answered with: the positive control). CloudShell holds 1,000 more users, so that a list costs
/// 5 pages: reading more users one by one than that lists them instead.
#[tokio::test]
async fn a_change_run_reads_only_the_cloudshell_users_it_needs() {
    let env = Env::with_content_sync();
    let others: Vec<String> = (0..1000).map(|n| format!("local{n:04}")).collect();
    env.sim.add_local_users(&others.iter().map(String::as_str).collect::<Vec<_>>(), &[]).await;
    let mapping = TEAM_TO_LAB_USERS;
    let config = env.config(&["Team"], NEVER, "full_sync_every = \"1h\"", mapping);
    let daemon = env.daemon_started(&config);
    assert_eq!(user_reads(&env).await.0, 1, "the first run lists every user once: its imports name the new ones");
    assert_eq!(env.sim.group_members("Lab Users").await, ["alice", "bob"]);

    // Nothing changed: the two users placed by the first run are read again by id, nothing is listed.
    env.sim.clear_calls().await;
    daemon.signal("USR1");
    daemon.wait_for("run finished", 2, Duration::from_secs(20));
    assert_eq!(reads(&daemon)[1].0, "changes");
    assert_eq!(user_reads(&env).await, (0, vec![], 2), "{:?}", env.sim.calls().await);
    // Nothing changed, nothing written: not one read of a user.
    env.sim.clear_calls().await;
    daemon.signal("USR1");
    daemon.wait_for("run finished", 3, Duration::from_secs(20));
    assert_eq!(user_reads(&env).await, (0, vec![], 0), "{:?}", env.sim.calls().await);
    assert_eq!(writes(&env).await, Vec::<Value>::new(), "nothing written");

    hire_newhire_and_handmade(&env).await;
    env.sim.clear_calls().await;
    daemon.signal("USR1");
    daemon.wait_for("run finished", 4, Duration::from_secs(20));
    let (listed, named, _) = user_reads(&env).await;
    assert_eq!(listed, 0, "{:?}", env.sim.calls().await);
    assert_eq!(named, ["handmade"], "the one user no import answer named");
    let imports: Vec<Value> =
        writes(&env).await.into_iter().filter(|c| c["path"].as_str().unwrap().contains("Identity")).collect();
    let bodies: Vec<&Value> = imports.iter().map(|c| &c["body"]).collect();
    assert_eq!(bodies, [&json!({"GroupName": "Team"}), &json!({"UserName": "handmade"})], "{imports:?}");
    assert_eq!(imports[1]["status"], 409, "handmade exists: {imports:?}");
    let present = daemon.events().into_iter().rfind(|e| e["fields"]["message"] == "user already present").unwrap();
    assert_eq!(present["fields"]["username"], "handmade", "{present}");
    assert!(env.sim.usernames().await.contains(&"newhire".to_string()));
    assert_eq!(env.sim.group_members("Lab Users").await, ["alice", "bob", "handmade", "newhire"]);
    let finished = daemon.events().into_iter().rfind(|e| e["fields"]["message"] == "run finished").unwrap();
    assert_eq!(finished["fields"]["result"], "ok", "{finished}");

    // The users it placed are read again by id, and not added a second time.
    env.sim.clear_calls().await;
    daemon.signal("USR1");
    daemon.wait_for("run finished", 5, Duration::from_secs(20));
    assert_eq!(user_reads(&env).await, (0, vec![], 2), "{:?}", env.sim.calls().await);
    assert_eq!(writes(&env).await, Vec::<Value>::new(), "nothing written again");
}

/// The users a full read imported are in the list the next change run starts from, from the imports' answers,
/// even where the run itself needs no id (no mapping, leavers ignored, disabled accounts imported one by one):
/// the change run imports only the new hire, and imports nobody twice.
#[tokio::test]
async fn the_users_a_run_imported_are_in_the_list_the_next_change_run_keeps() {
    let env = Env::with_content_sync();
    let sync = "full_sync_every = \"1h\"\ndisabled_accounts = \"per_user\"\n[sync.leavers]\naction = \"ignore\"";
    let config = env.config(&["Team"], NEVER, sync, "");
    let daemon = env.daemon_started(&config);
    assert_eq!(reads(&daemon)[0].0, "full");
    assert!(env.sim.usernames().await.contains(&"alice".to_string()), "the first run imported Team");
    env.add_person("newhire");
    env.change_members("Team", &["newhire"], &[]);
    env.sim.clear_calls().await;
    daemon.signal("USR1");
    daemon.wait_for("run finished", 2, Duration::from_secs(20));
    assert_eq!(reads(&daemon)[1].0, "changes");
    let bodies: Vec<Value> = writes(&env).await.into_iter().map(|c| c["body"].clone()).collect();
    assert_eq!(bodies, [json!({"GroupName": "Team"})], "newhire only, by the group");
    assert!(env.sim.usernames().await.contains(&"newhire".to_string()));
    assert_eq!(daemon.count("user already present"), 0);
}

/// The import limit counts the users CloudShell does not have: where a plan made from the kept list would be
/// held, its missing members are looked up first. `handmade`, created in CloudShell by hand since the list was
/// read, does not count, and the run goes ahead (`newhire` imported: the positive control); one more new hire
/// than the limit is still held (the negative control).
#[tokio::test]
async fn a_change_run_the_import_limit_would_hold_looks_its_missing_members_up_first() {
    let env = Env::with_content_sync();
    env.sim.add_directory_users(&["alice", "bob"], &[], false).await;
    // 1,000 more users, so that two lookups cost fewer requests than a list (5 pages).
    let others: Vec<String> = (0..1000).map(|n| format!("local{n:04}")).collect();
    env.sim.add_local_users(&others.iter().map(String::as_str).collect::<Vec<_>>(), &[]).await;
    let config = env.config(&["Team"], NEVER, "full_sync_every = \"1h\"\nmax_imports_per_run = 1", "");
    let daemon = env.daemon_started(&config);
    hire_newhire_and_handmade(&env).await;
    env.sim.clear_calls().await;
    daemon.signal("USR1");
    daemon.wait_for("run finished", 2, Duration::from_secs(20));
    assert_eq!(reads(&daemon)[1].0, "changes");
    let finished = daemon.events().into_iter().rfind(|e| e["fields"]["message"] == "run finished").unwrap();
    assert_eq!(finished["fields"]["result"], "ok", "{finished}");
    assert_eq!(user_reads(&env).await.1, ["handmade", "newhire"], "looked up before importing");
    assert!(env.sim.usernames().await.contains(&"newhire".to_string()));
    assert_eq!(daemon.count("import limit exceeded, writes held"), 0);

    for uid in ["second", "third"] {
        env.add_person(uid);
    }
    env.change_members("Team", &["second", "third"], &[]);
    daemon.signal("USR1");
    daemon.wait_for("run finished", 3, Duration::from_secs(20));
    assert_eq!(daemon.count("import limit exceeded, writes held"), 1);
    assert!(!env.sim.usernames().await.contains(&"second".to_string()), "held: nothing imported");
}

/// A change read that cannot be used (here: the first `ldap.url` went down, and the next server, a replica, is not
/// the one the model was read from) falls back to a full read, and CloudShell's users are then listed in full too,
/// not taken from the last run.
#[tokio::test]
async fn a_change_read_that_falls_back_to_a_full_read_lists_every_cloudshell_user() {
    let mut env = Env::with_content_sync();
    let replica = common::Slapd::start_with_syncprov(&directory());
    let others: Vec<String> = (0..1000).map(|n| format!("local{n:04}")).collect();
    env.sim.add_local_users(&others.iter().map(String::as_str).collect::<Vec<_>>(), &[]).await;
    let config = env.config(&["Team"], NEVER, "full_sync_every = \"1h\"", "");
    let text = std::fs::read_to_string(&config).unwrap();
    let (first, next) = (env.slapd.url(), replica.url());
    let both = text.replace(&format!("url = \"{first}\""), &format!("url = [\"{first}\", \"{next}\"]"));
    assert_ne!(text, both);
    std::fs::write(&config, both).unwrap();
    let daemon = env.daemon_started(&config);
    // The control: a change read on the same server takes the kept list.
    env.sim.clear_calls().await;
    daemon.signal("USR1");
    daemon.wait_for("run finished", 2, Duration::from_secs(20));
    assert_eq!((reads(&daemon)[1].0.as_str(), user_reads(&env).await.0), ("changes", 0));

    env.0.slapd.kill();
    env.sim.clear_calls().await;
    daemon.signal("USR1");
    daemon.wait_for("run finished", 3, Duration::from_secs(20));
    let third = &reads(&daemon)[2];
    assert_eq!(third.0, "full", "{third:?}");
    assert!(third.2.contains("the directory server changed"), "{third:?}");
    assert_eq!(user_reads(&env).await, (1, vec![], 0), "{:?}", env.sim.calls().await);
    assert_eq!(daemon.count("change read not usable, reading in full"), 1);
}

/// A change read the server refuses (here: slapd restarted without `syncprov`, as a replica without content sync
/// behind the same URL would answer) is never read as "nothing changed": the run falls back to a full read, and a
/// new hire added meanwhile is imported. The control: the run before read changes.
#[tokio::test]
async fn a_change_read_the_server_refuses_falls_back_to_a_full_read() {
    let mut env = Env::with_content_sync();
    let config = env.config(&["Team"], NEVER, "full_sync_every = \"1h\"", "");
    let daemon = env.daemon_started(&config);
    daemon.signal("USR1");
    daemon.wait_for("run finished", 2, Duration::from_secs(20));
    assert_eq!(reads(&daemon)[1].0, "changes", "the control: {:?}", reads(&daemon));
    env.add_person("newhire");
    env.change_members("Team", &["newhire"], &[]);
    env.0.slapd.restart_without_syncprov();
    daemon.signal("USR1");
    daemon.wait_for("run finished", 3, Duration::from_secs(20));
    assert_read_in_full_and_ok(&daemon, 3, "the change read failed");
    assert!(env.sim.usernames().await.contains(&"newhire".to_string()), "{}", daemon.log());
}

/// The directory restored from a backup behind the same URL: the daemon's cookie is newer than anything the restored
/// slapd knows, which refuses it (unwillingToPerform: "consumer state is newer than provider"), and the run reads in
/// full, saying why. What the restore took away (a hire added after the backup, imported by a change read: the
/// control) is then a leaver candidate, as only a full read can tell.
#[tokio::test]
async fn a_directory_restored_from_a_backup_refuses_the_cookie_and_the_run_reads_in_full() {
    let mut env = Env::with_content_sync();
    let config = env.config(&["Team"], NEVER, "full_sync_every = \"1h\"", "");
    let daemon = env.daemon_started(&config);
    let backup = env.0.slapd.back_up();
    env.add_person("later");
    env.change_members("Team", &["later"], &[]);
    daemon.signal("USR1");
    daemon.wait_for("run finished", 2, Duration::from_secs(20));
    assert_eq!(reads(&daemon)[1].0, "changes", "the control: {:?}", reads(&daemon));
    assert!(env.sim.usernames().await.contains(&"later".to_string()), "{}", daemon.log());
    env.0.slapd.restore(&backup);
    daemon.signal("USR1");
    daemon.wait_for("run finished", 3, Duration::from_secs(20));
    assert_read_in_full_and_ok(&daemon, 3, "newer than provider");
    assert_eq!(env.status().unwrap()["last_run"]["leavers"]["candidates"], 1);
    let found: Vec<Value> = daemon.fields_of("leaver found").iter().map(|f| f["username"].clone()).collect();
    assert_eq!(found, [json!("later")], "{}", daemon.log());
}

/// That the daemon's `n`th run read the directory in full, for a reason containing `why`, and ended ok.
fn assert_read_in_full_and_ok(daemon: &Daemon, n: usize, why: &str) {
    let (mode, _, reason) = &reads(daemon)[n - 1];
    assert_eq!(mode, "full", "{reason}");
    assert!(reason.contains(why), "{reason}");
    assert_eq!(finished_runs(daemon)[n - 1]["result"], "ok", "{}", daemon.log());
}

/// The `run finished` events so far.
fn finished_runs(daemon: &Daemon) -> Vec<Value> {
    daemon.fields_of("run finished")
}

/// After a run that left nothing to do, a run that reads no change ends there: not one CloudShell call, and its
/// outcome is the last one's (the status file's groups as before). A change read that finds a new hire is not
/// such a run (the positive control: imported).
#[tokio::test]
async fn a_run_that_reads_no_change_after_a_run_that_left_nothing_to_do_calls_nothing() {
    let env = Env::with_content_sync();
    let mapping = TEAM_TO_LAB_USERS;
    let config = env.config(&["Team", "Big"], NEVER, "full_sync_every = \"1h\"", mapping);
    let daemon = env.daemon_started(&config);
    // The second run reads no change, but the first imported: it decides again, and imports nothing.
    daemon.signal("USR1");
    daemon.wait_for("run finished", 2, Duration::from_secs(20));
    assert_eq!(reads(&daemon)[1].2, "\"the changes since the last run\"", "the first run wrote");
    // The second read back by id the users the first placed, and wrote nothing: the third ends at once.
    env.sim.clear_calls().await;
    daemon.signal("USR1");
    daemon.wait_for("run finished", 3, Duration::from_secs(20));
    assert_eq!(env.sim.calls().await, Vec::<Value>::new(), "not even a login:\n{}", daemon.log());
    let third = &reads(&daemon)[2];
    assert!(third.2.contains("nothing changed since the last run"), "{third:?}");
    let run = &finished_runs(&daemon)[2];
    assert_eq!((run["result"].as_str(), run["members"].as_u64()), (Some("ok"), Some(7)), "{run}");
    let status = env.status().unwrap();
    let groups = status["last_run"]["groups"].as_array().unwrap();
    assert_eq!(groups.iter().map(|g| g["members"].as_u64().unwrap()).collect::<Vec<_>>(), [2, 5], "{status}");

    // An attribute the sync does not read changed: no change either.
    env.slapd
        .modify(&format!("dn: uid=alice,{PEOPLE}\nchangetype: modify\nreplace: description\ndescription: desk 4\n"));
    daemon.signal("USR1");
    daemon.wait_for("run finished", 4, Duration::from_secs(20));
    assert!(reads(&daemon)[3].2.contains("nothing changed since the last run"), "{:?}", reads(&daemon));
    assert_eq!(env.sim.calls().await, Vec::<Value>::new());

    env.add_person("newhire");
    env.change_members("Team", &["newhire"], &[]);
    daemon.signal("USR1");
    daemon.wait_for("run finished", 5, Duration::from_secs(20));
    assert_eq!(reads(&daemon)[4].2, "\"the changes since the last run\"");
    assert!(env.sim.usernames().await.contains(&"newhire".to_string()));
}

/// A run that left something waiting is no reason to stop: with `grace_runs = 2`, a leaver the change read
/// reported waits one run, and the next run, which reads no change, deactivates them (without this, a quiet
/// directory would keep them active). A configuration reloaded on SIGHUP is a reason to decide again too: a
/// group added to `groups` is imported at the next run although the directory did not change.
#[tokio::test]
async fn a_run_with_something_waiting_or_a_new_configuration_decides_again() {
    let env = Env::with_content_sync();
    let leavers =
        "[sync.leavers]\naction = \"deactivate\"\ngrace_runs = 2\nmax_percent = 100\nmax_percent_per_day = 100\n";
    let config = env.config(&["Team"], NEVER, "full_sync_every = \"1h\"", leavers);
    let daemon = env.daemon_started(&config);
    env.change_members("Team", &[], &["bob"]);
    daemon.signal("USR1");
    daemon.wait_for("run finished", 2, Duration::from_secs(20));
    assert!(env.sim.is_active("bob").await, "waiting: grace_runs = 2");
    daemon.signal("USR1");
    daemon.wait_for("run finished", 3, Duration::from_secs(20));
    assert_eq!(reads(&daemon)[2].2, "\"the changes since the last run\"", "decided again");
    assert!(!env.sim.is_active("bob").await, "deactivated at the second run:\n{}", daemon.log());
    // The run after a run that wrote decides again (it reads bob back by id); the one after that ends at once.
    for n in [4, 5] {
        daemon.signal("USR1");
        daemon.wait_for("run finished", n, Duration::from_secs(20));
    }
    assert_eq!(reads(&daemon)[3].2, "\"the changes since the last run\"");
    assert!(reads(&daemon)[4].2.contains("nothing changed since the last run"), "{:?}", reads(&daemon));

    let text = std::fs::read_to_string(&config).unwrap();
    let two = text.replace("groups = [\"Team\"]", "groups = [\"Team\", \"Other\"]");
    assert_ne!(text, two);
    std::fs::write(&config, two).unwrap();
    daemon.signal("HUP");
    daemon.wait_for("configuration reloaded", 1, Duration::from_secs(20));
    env.sim.clear_calls().await;
    daemon.signal("USR1");
    daemon.wait_for("run finished", 6, Duration::from_secs(20));
    assert!(env.sim.usernames().await.contains(&"erin".to_string()), "Other imported:\n{}", daemon.log());
    assert!(user_reads(&env).await.0 >= 1, "CloudShell's users listed again after a reload");
}

/// A reload that changed the configuration makes the next run read in full: the members seen since the last
/// full read, and its outcome, were read for the old one. With `Other` dropped from `groups`, erin (a member of
/// `Other` only) is a leaver, decided by a full read (deactivated: the positive control), not a departure a change
/// read would report although no directory change made it. The control: a reload of the same file keeps change
/// reads (and makes the next run decide again, after runs that ended at once).
#[tokio::test]
async fn a_reload_that_changed_the_configuration_makes_the_next_run_read_in_full() {
    let env = Env::with_content_sync();
    let config = env.config(&["Team", "Other"], NEVER, "full_sync_every = \"1h\"", DEACTIVATE_LEAVERS);
    let daemon = env.daemon_started(&config);
    for n in [2, 3] {
        daemon.signal("USR1");
        daemon.wait_for("run finished", n, Duration::from_secs(20));
    }
    assert!(reads(&daemon)[2].2.contains("nothing changed since the last run"), "{:?}", reads(&daemon));
    // The same file reloaded: the next run still reads changes, and decides again (listing CloudShell's users)
    // rather than ending with the last outcome.
    env.sim.clear_calls().await;
    daemon.signal("HUP");
    daemon.wait_for("configuration reloaded", 1, Duration::from_secs(20));
    daemon.signal("USR1");
    daemon.wait_for("run finished", 4, Duration::from_secs(20));
    assert_eq!(reads(&daemon)[3].0, "changes", "the control, the same file reloaded: {:?}", reads(&daemon));
    assert_eq!(reads(&daemon)[3].2, "\"the changes since the last run\"", "decided again");
    assert!(user_reads(&env).await.0 >= 1, "CloudShell's users listed again after a reload");
    assert!(env.sim.is_active("erin").await);

    let text = std::fs::read_to_string(&config).unwrap();
    let team = text.replace(r#"groups = ["Team","Other"]"#, r#"groups = ["Team"]"#);
    assert_ne!(text, team);
    std::fs::write(&config, team).unwrap();
    daemon.signal("HUP");
    daemon.wait_for("configuration reloaded", 2, Duration::from_secs(20));
    daemon.signal("USR1");
    daemon.wait_for("run finished", 5, Duration::from_secs(20));
    let (mode, _, reason) = &reads(&daemon)[4];
    assert_eq!(mode, "full", "{reason}");
    assert!(reason.contains("the configuration changed"), "{reason}");
    assert!(!env.sim.is_active("erin").await, "a leaver, deactivated by the full read:\n{}", daemon.log());
    assert!(env.sim.is_active("alice").await && env.sim.is_active("bob").await, "{}", daemon.log());
}

/// `state.db` written by another process since the last run (here: a managed user's record deleted by hand)
/// makes the next run decide again although nothing changed in the directory: the record is written back.
/// The control: the run before, with the state as the daemon left it, ended at once.
#[tokio::test]
async fn state_written_by_another_process_makes_the_next_run_decide_again() {
    let env = Env::with_content_sync();
    let leavers = DEACTIVATE_LEAVERS;
    let config = env.config(&["Team"], NEVER, "full_sync_every = \"1h\"", leavers);
    let daemon = env.daemon_started(&config);
    for n in [2, 3] {
        env.sim.clear_calls().await;
        daemon.signal("USR1");
        daemon.wait_for("run finished", n, Duration::from_secs(20));
    }
    assert!(reads(&daemon)[2].2.contains("nothing changed since the last run"), "{:?}", reads(&daemon));
    assert_eq!(user_reads(&env).await.0, 0, "the control: a run without a reload keeps CloudShell's users");
    let managed = || {
        let db = rusqlite::Connection::open(env.files.path("state/state.db")).unwrap();
        db.query_row("SELECT count(*) FROM managed_users WHERE folded = 'bob'", [], |r| r.get::<_, i64>(0)).unwrap()
    };
    assert_eq!(managed(), 1);
    let db = rusqlite::Connection::open(env.files.path("state/state.db")).unwrap();
    assert_eq!(db.execute("DELETE FROM managed_users WHERE folded = 'bob'", []).unwrap(), 1);
    drop(db);
    daemon.signal("USR1");
    daemon.wait_for("run finished", 4, Duration::from_secs(20));
    assert_eq!(reads(&daemon)[3].2, "\"the changes since the last run\"", "decided again");
    assert_eq!(managed(), 1, "bob is managed again:\n{}", daemon.log());
}

/// `state.db` deleted since the last run (or another file moved into its place) makes the next run read the directory
/// in full: the members seen since the last full read, which change reads act on, were recorded beside the database
/// that went. The run ends ok and records the managed users in the new database. The control: the run before, with the
/// database in place, read changes.
#[tokio::test]
async fn state_db_deleted_makes_the_next_run_read_in_full() {
    let env = Env::with_content_sync();
    let config = env.config(&["Team"], NEVER, "full_sync_every = \"1h\"", DEACTIVATE_LEAVERS);
    let daemon = env.daemon_started(&config);
    daemon.signal("USR1");
    daemon.wait_for("run finished", 2, Duration::from_secs(20));
    assert_eq!(reads(&daemon)[1].0, "changes", "the control: {:?}", reads(&daemon));
    for file in ["state.db", "state.db-wal", "state.db-shm"] {
        let _ = std::fs::remove_file(env.files.path("state").join(file));
    }
    daemon.signal("USR1");
    daemon.wait_for("run finished", 3, Duration::from_secs(20));
    assert_read_in_full_and_ok(&daemon, 3, "state.db was deleted or replaced");
    let db = rusqlite::Connection::open(env.files.path("state/state.db")).unwrap();
    let managed: i64 = db.query_row("SELECT count(*) FROM managed_users", [], |r| r.get(0)).unwrap();
    assert_eq!(managed, 2, "alice and bob managed in the new database");
}

/// Before a change read deactivates anyone, it reads them again by id: big00000, made a CloudShell admin after
/// the full read, leaves Big and is protected as a full read would find; big00001, who leaves with them, is
/// deactivated (the positive control). A group that then shrinks past `max_shrink_percent` since the last full
/// read is held by the shrink guard in a change read too: big00002 and big00003 stay active.
#[tokio::test]
async fn a_change_read_protects_on_fresh_records_and_the_shrink_guard_holds_it() {
    let env = Env::with_content_sync();
    let leavers = DEACTIVATE_LEAVERS;
    let config = env.config(&["Big"], NEVER, "full_sync_every = \"1h\"", leavers);
    let daemon = env.daemon_started(&config);
    let remove = |uids: &[&str]| env.change_members("Big", &[], uids);
    env.sim.change_users(json!({"usernames": ["big00000"], "is_admin": true})).await;
    remove(&["big00000", "big00001"]);
    daemon.signal("USR1");
    daemon.wait_for("run finished", 2, Duration::from_secs(20));
    assert_eq!(reads(&daemon)[1].0, "changes");
    assert!(!env.sim.is_active("big00001").await, "the control:\n{}", daemon.log());
    assert!(env.sim.is_active("big00000").await, "an admin now: protected:\n{}", daemon.log());

    remove(&["big00002", "big00003"]);
    daemon.signal("USR1");
    daemon.wait_for("run finished", 3, Duration::from_secs(20));
    assert_eq!(reads(&daemon)[2].0, "changes");
    let run = &finished_runs(&daemon)[2];
    assert_eq!(run["result"], "held", "{run}");
    assert!(env.sim.is_active("big00002").await && env.sim.is_active("big00003").await, "{}", daemon.log());
}

/// A configuration reloaded while a run goes on is a reason to decide again too: the run (held in its directory
/// read by a frozen slapd) ends with the old configuration, and the next run, with a group added, imports it
/// although nothing changed in the directory.
#[tokio::test]
async fn a_reload_during_a_run_makes_the_next_run_decide_again() {
    let env = Env::with_content_sync();
    let config = env.config(&["Team"], NEVER, "full_sync_every = \"1h\"", "");
    let daemon = env.daemon_started(&config);
    for n in [2, 3] {
        daemon.signal("USR1");
        daemon.wait_for("run finished", n, Duration::from_secs(20));
    }
    assert!(reads(&daemon)[2].2.contains("nothing changed since the last run"), "{:?}", reads(&daemon));

    env.slapd.freeze(true);
    daemon.signal("USR1");
    daemon.wait_for("run started", 4, Duration::from_secs(20));
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("groups = [\"Team\"]", "groups = [\"Team\", \"Other\"]")).unwrap();
    daemon.signal("HUP");
    daemon.wait_for("configuration reloaded", 1, Duration::from_secs(20));
    env.slapd.freeze(false);
    daemon.wait_for("run finished", 4, Duration::from_secs(30));
    assert!(!env.sim.usernames().await.contains(&"erin".to_string()), "the run began with the old configuration");
    env.sim.clear_calls().await;
    daemon.signal("USR1");
    daemon.wait_for("run finished", 5, Duration::from_secs(20));
    assert!(env.sim.usernames().await.contains(&"erin".to_string()), "Other imported:\n{}", daemon.log());
    // CloudShell's users as that run left them rest on the old configuration too: listed again.
    assert!(user_reads(&env).await.0 >= 1, "CloudShell's users listed again:\n{}", daemon.log());
}

/// A run with an intent still unsettled does not end at once: the removal whose answer was lost, and whose
/// group could not be read back then, is settled by the next run once CloudShell answers, although nothing
/// changed in the directory (a quiet end would leave it pending).
#[tokio::test]
async fn a_pending_intent_keeps_the_next_run_from_ending_at_once() {
    let env = Env::with_content_sync();
    let mapping = TEAM_TO_LAB_USERS;
    let config = env.config(&["Team"], NEVER, "remove_from_groups = true\nfull_sync_every = \"1h\"", mapping);
    let daemon = env.daemon_started(&config);
    let state = env.sim.state().await;
    let lab = state["groups"].as_array().unwrap().iter().find(|g| g["Name"] == "Lab Users").unwrap()["Id"].clone();
    let group_users = format!("groups/{lab}/users");
    let pending = || {
        let db = rusqlite::Connection::open(env.files.path("state/state.db")).unwrap();
        db.query_row("SELECT count(*) FROM intents", [], |r| r.get::<_, i64>(0)).unwrap()
    };

    // bob leaves Team: his removal takes effect, its answer is cut, and the group cannot be read back.
    env.change_members("Team", &[], &["bob"]);
    env.sim
        .set_faults(json!({
            "reset": {"count": 1, "method": "DELETE", "path_contains": group_users},
            "fail": {"count": 1000, "status": 503, "method": "GET", "path_contains": group_users}
        }))
        .await;
    for n in [2, 3] {
        daemon.signal("USR1");
        daemon.wait_for("run finished", n, Duration::from_secs(30));
    }
    assert_eq!(env.sim.group_members("Lab Users").await, ["alice"]);
    assert_eq!(pending(), 1, "unsettled:\n{}", daemon.log());
    let third = &finished_runs(&daemon)[2];
    assert_eq!(third["result"], "ok", "{third}");

    env.sim.clear_faults().await;
    daemon.signal("USR1");
    daemon.wait_for("run finished", 4, Duration::from_secs(20));
    assert_eq!(
        reads(&daemon)[3].2,
        "\"the changes since the last run\"",
        "decided again: {:?} {:?}",
        reads(&daemon),
        finished_runs(&daemon)
    );
    assert_eq!(pending(), 0, "settled:\n{}", daemon.log());
}

/// With `[schedule] watch = true`: the config of `env` with the watch on and a short delay.
fn watching(env: &Env, groups: &[&str], more: &str) -> PathBuf {
    let config = env.config(groups, NEVER, "", more);
    let text = std::fs::read_to_string(&config).unwrap();
    let text =
        text.replacen("run_on_start = true\n", "run_on_start = true\nwatch = true\nwatch_delay = \"200ms\"\n", 1);
    std::fs::write(&config, text).unwrap();
    config
}

/// The triggers of the finished runs, in order.
fn triggers(daemon: &Daemon) -> Vec<String> {
    daemon.fields_of("run finished").iter().map(|f| f["trigger"].as_str().unwrap_or("?").to_string()).collect()
}

/// Watching (content sync's refreshAndPersist): a member added to a group is imported without waiting for the
/// schedule (once a year here), by a run the change started; its report and log say `watch`. The control:
/// before the change, no run but the one at start.
#[tokio::test]
async fn watching_a_new_member_is_imported_without_waiting_for_the_schedule() {
    let env = Env::with_content_sync();
    let config = watching(&env, &["Team"], "");
    env.add_person("newhire"); // before the watch: only the membership change is announced
    let daemon = env.daemon_started(&config);
    daemon.wait_for("watching the directory", 1, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(triggers(&daemon), ["start"], "nothing announced, nothing run:\n{}", daemon.log());
    env.change_members("Team", &["newhire"], &[]);
    daemon.wait_for("run finished", 2, Duration::from_secs(20));
    assert_eq!(triggers(&daemon)[1], "watch", "{}", daemon.log());
    assert!(env.sim.usernames().await.contains(&"newhire".to_string()), "imported:\n{}", daemon.log());
    assert_eq!(reads(&daemon)[1].0, "changes", "{:?}", reads(&daemon));
}

/// How runs read does not matter to the watch: with `ldap.change_detection = "off"` (every run reads in full),
/// a change content sync announces still starts a run, which reads in full. Before, "off" left the daemon
/// without a watch.
#[tokio::test]
async fn with_change_reads_off_the_watch_still_starts_runs_that_read_in_full() {
    let env = Env::with_content_sync();
    let config = watching(&env, &["Team"], "");
    let text = std::fs::read_to_string(&config).unwrap().replace("[ldap]\n", "[ldap]\nchange_detection = \"off\"\n");
    std::fs::write(&config, text).unwrap();
    env.add_person("newhire"); // before the watch: only the membership change is announced
    let daemon = env.daemon_started(&config);
    daemon.wait_for("watching the directory", 1, Duration::from_secs(20));
    env.change_members("Team", &["newhire"], &[]);
    daemon.wait_for("run finished", 2, Duration::from_secs(20));
    assert_eq!(triggers(&daemon)[1], "watch", "{}", daemon.log());
    assert!(env.sim.usernames().await.contains(&"newhire".to_string()), "imported:\n{}", daemon.log());
    assert_eq!(reads(&daemon)[1].0, "full", "{:?}", reads(&daemon));
}

/// slapd down under a watching daemon: the watch goes down and says why (log, `watch_up` 0, `/healthz`, the
/// status file after a run), comes back with backoff once slapd is back (`watch_up` 1), and a run follows its
/// return (what changed meanwhile was not announced); a member added after that is imported by the watch
/// again, and the time from the change to CloudShell's answer is measured.
#[tokio::test]
async fn a_watch_dropped_by_slapd_says_so_comes_back_and_catches_up() {
    let mut env = Env::with_content_sync();
    let port = common::free_port();
    let config = watching(&env, &["Team"], &format!("listen = \"127.0.0.1:{port}\"\n"));
    env.add_person("newhire"); // before the watch: only the membership change is announced
    let daemon = env.daemon_started(&config);
    daemon.wait_for("watching the directory", 1, Duration::from_secs(20));
    let metrics =
        || async move { reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await.unwrap().text().await.unwrap() };
    let health = || async move {
        reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await.unwrap().json::<Value>().await.unwrap()
    };
    assert!(metrics().await.contains("cloudshell_ldap_sync_watch_up 1"));
    assert_eq!(health().await["watch"]["up"], true);

    env.0.slapd.kill();
    daemon.wait_for("watch down", 1, Duration::from_secs(20));
    assert!(metrics().await.contains("cloudshell_ldap_sync_watch_up 0"));
    let down = health().await;
    assert_eq!(down["watch"]["up"], false, "{down}");
    assert!(down["watch"]["reason"].is_string(), "{down}");
    daemon.signal("USR1");
    daemon.wait_for("run finished", 2, Duration::from_secs(30));
    // The status file is written just after the run's `run finished` event.
    let written = || async { env.status().is_some_and(|s| s["watch"]["up"] == false) };
    wait_until("the status file saying the watch is down", Duration::from_secs(10), written).await;
    let status = env.status().expect("the status file");
    assert!(status["watch"]["reason"].is_string(), "{status}");

    env.0.slapd.restart_with_acl("");
    daemon.wait_for("watching the directory", 2, Duration::from_secs(30));
    daemon.wait_for("run finished", 3, Duration::from_secs(20));
    assert_eq!(triggers(&daemon)[2], "watch", "a run follows the watch's return:\n{}", daemon.log());
    assert!(metrics().await.contains("cloudshell_ldap_sync_watch_up 1"));
    env.change_members("Team", &["newhire"], &[]);
    daemon.wait_for("run finished", 4, Duration::from_secs(20));
    assert!(env.sim.usernames().await.contains(&"newhire".to_string()), "{}", daemon.log());
    let text = metrics().await;
    assert!(text.contains("cloudshell_ldap_sync_runs_started_total{trigger=\"watch\"} 2"), "{text}");
    assert!(text.contains("cloudshell_ldap_sync_change_to_cloudshell_seconds_count 1"), "{text}");
}

/// SIGHUP starts the watch again with the new configuration: `watch = false` ends it (a change then starts no
/// run), `watch = true` brings it back (the control: a change starts a run again).
#[tokio::test]
async fn a_reload_ends_or_starts_the_watch_as_the_new_configuration_says() {
    let env = Env::with_content_sync();
    let config = watching(&env, &["Team"], "");
    let daemon = env.daemon_started(&config);
    daemon.wait_for("watching the directory", 1, Duration::from_secs(20));
    let watched = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, watched.replace("watch = true", "watch = false")).unwrap();
    daemon.signal("HUP");
    daemon.wait_for("configuration reloaded", 1, Duration::from_secs(10));
    env.change_members("Team", &[], &["bob"]);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(daemon.count("run triggered"), 1, "no watch, no run:\n{}", daemon.log());

    // Watching again: a run catches up on what changed while nothing watched (bob's removal), unasked.
    std::fs::write(&config, &watched).unwrap();
    daemon.signal("HUP");
    daemon.wait_for("watching the directory", 2, Duration::from_secs(10));
    daemon.wait_for("run finished", 2, Duration::from_secs(20));
    assert_eq!(triggers(&daemon)[1], "watch", "{}", daemon.log());
    env.change_members("Team", &["bob"], &[]);
    daemon.wait_for("run finished", 3, Duration::from_secs(20));
    assert_eq!(triggers(&daemon)[2], "watch", "{}", daemon.log());
}

/// A run a change started, skipped because another process holds the run lock (a `sync` typed by hand), is
/// tried again after `watch_delay` until it can run: the new member is imported once the lock is let go,
/// without the schedule or a signal.
#[tokio::test]
async fn a_watch_run_skipped_for_the_run_lock_is_tried_again() {
    let env = Env::with_content_sync();
    let config = watching(&env, &["Team"], "");
    let daemon = env.daemon_started(&config);
    daemon.wait_for("watching the directory", 1, Duration::from_secs(20));
    let held = cloudshell_ldap_sync::lock::acquire_for_run(None, &config).unwrap();
    env.add_person("newhire");
    env.change_members("Team", &["newhire"], &[]);
    daemon.wait_for("run skipped, another run holds the lock", 1, Duration::from_secs(10));
    drop(held);
    wait_until("the new hire imported", Duration::from_secs(20), || async {
        env.sim.usernames().await.contains(&"newhire".to_string())
    })
    .await;
    // The import shows before its run's `run finished` line may be written.
    daemon.wait_for("run finished", 2, Duration::from_secs(10));
    assert_eq!(daemon.count("run finished"), 2, "the run at start and the one tried again:\n{}", daemon.log());
}

/// A storm of changes (2,000 modifications in a few seconds) becomes a bounded number of runs, each covering
/// everything announced before it began; the last of them leaves the new hire imported.
#[tokio::test]
async fn a_storm_of_changes_becomes_a_few_runs() {
    let env = Env::with_content_sync();
    let config = watching(&env, &["Team"], "");
    let daemon = env.daemon_started(&config);
    daemon.wait_for("watching the directory", 1, Duration::from_secs(20));
    let storm: String = (0..2000)
        .map(|n| format!("dn: uid=alice,{PEOPLE}\nchangetype: modify\nreplace: description\ndescription: desk {n}\n\n"))
        .collect();
    let started = Instant::now();
    env.slapd.modify(&storm);
    env.add_person("newhire");
    env.change_members("Team", &["newhire"], &[]);
    wait_until("the new hire imported", Duration::from_secs(30), || async {
        env.sim.usernames().await.contains(&"newhire".to_string())
    })
    .await;
    let lasted = started.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    // At most one run per watch_delay (200 ms) while changes keep coming, one after, and the one at start.
    let (runs, most) = (daemon.count("run triggered"), 3 + (lasted.as_millis() / 200) as usize);
    assert!(runs >= 2 && runs <= most, "{runs} runs in {lasted:?} for 2,002 changes:\n{:?}", triggers(&daemon));
    eprintln!("{runs} runs in {lasted:?}");
}

/// SIGTERM while watching: the daemon stops at once (the watch does not hold it), exit code 0.
#[tokio::test]
async fn sigterm_while_watching_stops_at_once() {
    let env = Env::with_content_sync();
    let config = watching(&env, &["Team"], "");
    let mut daemon = env.daemon_started(&config);
    daemon.wait_for("watching the directory", 1, Duration::from_secs(20));
    let asked = Instant::now();
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(10)), 0, "{}", daemon.log());
    assert!(asked.elapsed() < Duration::from_secs(3), "took {:?}", asked.elapsed());
}

/// A server that refused the watch is tried again each minute: slapd without `syncprov` refuses content sync,
/// and the daemon says so once; restarted with it (as a failover to a replica that has it would look), the
/// watch is up within about a minute, a run catches up on what changed while none watched, and a change it
/// announces starts a run.
#[tokio::test]
async fn a_server_that_refused_the_watch_is_tried_again_each_minute() {
    let mut env = Env::start(|_| {});
    let config = watching(&env, &["Team"], "");
    env.add_person("newhire"); // before the watch: only the membership change is announced
    let daemon = env.daemon_started(&config);
    daemon.wait_for("watch unavailable, runs follow the schedule only", 1, Duration::from_secs(20));
    env.0.slapd.restart_with_syncprov();
    daemon.wait_for("watching the directory", 1, Duration::from_secs(80));
    assert_eq!(daemon.count("watch unavailable, runs follow the schedule only"), 1, "said once:\n{}", daemon.log());
    daemon.wait_for("run finished", 2, Duration::from_secs(20));
    env.change_members("Team", &["newhire"], &[]);
    daemon.wait_for("run finished", 3, Duration::from_secs(20));
    assert_eq!(triggers(&daemon), ["start", "watch", "watch"], "{}", daemon.log());
    assert!(env.sim.usernames().await.contains(&"newhire".to_string()), "imported:\n{}", daemon.log());
}

/// Watching needs content sync: without `syncprov` (`auto`) the daemon says so once and runs on its schedule;
/// with `modify_timestamp`, which cannot announce anything, likewise.
#[tokio::test]
async fn without_content_sync_the_watch_is_unavailable_and_says_why() {
    let env = Env::start(|_| {});
    let config = watching(&env, &["Team"], "");
    let daemon = env.daemon_started(&config);
    daemon.wait_for("watch unavailable, runs follow the schedule only", 1, Duration::from_secs(20));
    let why = daemon.fields_of("watch unavailable, runs follow the schedule only");
    assert!(why[0]["reason"].as_str().unwrap().contains("syncprov"), "{why:?}");
    daemon.signal("USR1");
    daemon.wait_for("run finished", 2, Duration::from_secs(20));
    assert_eq!(daemon.count("watch unavailable, runs follow the schedule only"), 1);
    assert_eq!(daemon.count("watching the directory"), 0);
    drop(daemon);

    let stamps = watching(&env, &["Team"], "");
    let text = std::fs::read_to_string(&stamps)
        .unwrap()
        .replace("[ldap]\n", "[ldap]\nchange_detection = \"modify_timestamp\"\n");
    std::fs::write(&stamps, text).unwrap();
    let daemon = Daemon::spawn(&stamps, env.files.path("daemon-stamps.log"), &[]);
    daemon.wait_for("watch unavailable, runs follow the schedule only", 1, Duration::from_secs(20));
    let why = daemon.fields_of("watch unavailable, runs follow the schedule only");
    assert!(why[0]["reason"].as_str().unwrap().contains("modify_timestamp"), "{why:?}");
}
