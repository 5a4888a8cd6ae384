//! Long work is not silent: a paged read that lasts longer than its interval logs `read progress` (the
//! directory slowed down by a proxy that holds its answers back, CloudShell by the simulator's latency), and `check` against a
//! server that accepts and never answers ends within its short wait, naming what did not answer.

mod common;

use std::time::{Duration, Instant};

use cloudshell_ldap_sync::cloudshell::{self, Client};
use cloudshell_ldap_sync::group_name::GroupName;
use cloudshell_ldap_sync::ldap;
use common::{Directory, Files, Silent, Sim, Slapd};
use serde_json::json;

/// The log lines `read progress` events made while `f` ran, on this thread (tests run on one thread).
async fn progress_lines<F: std::future::Future>(f: F) -> (F::Output, Vec<String>) {
    let (output, text) = common::logged(f).await;
    (output, text.lines().filter(|l| l.contains("read progress")).map(str::to_string).collect())
}

fn members(snapshot: &ldap::Snapshot) -> usize {
    snapshot.groups[0].result.as_ref().map(|g| g.members.len()).unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn a_directory_read_longer_than_the_interval_logs_progress_and_a_fast_one_does_not() {
    let mut d = Directory::new();
    let people = d.users("slow", 40);
    d.group("Slow", &people);
    let slapd = Slapd::start(&d);
    let groups = [GroupName::new("Slow")];
    let s = ldap::Settings { page_size: 10, ..common::ldap_settings(&slapd.url()) };

    // At the default interval, a read of 40 entries says nothing more than it did.
    let (snapshot, lines) = progress_lines(ldap::snapshot(&s, &groups)).await;
    assert_eq!(members(&snapshot.unwrap()), 40);
    assert!(lines.is_empty(), "{lines:?}");

    // Through a proxy that holds each of slapd's answers back 150 ms: the users search's first entry comes at
    // least that late, past a 100 ms interval.
    let slow = SlowProxy::start(slapd.port, Duration::from_millis(150));
    let every = Duration::from_millis(100);
    let s = ldap::Settings { page_size: 10, progress_every: every, ..common::ldap_settings(&slow.url()) };
    let (snapshot, lines) = progress_lines(ldap::snapshot(&s, &groups)).await;
    assert_eq!(members(&snapshot.unwrap()), 40);
    let users = lines.iter().find(|l| l.contains("operation=the users search"));
    let first = users.unwrap_or_else(|| panic!("no read progress of the users search: {lines:?}"));
    for field in ["source=\"directory\"", "pages=1", "entries=1", "elapsed_s=0"] {
        assert!(first.contains(field), "{field}: {first}");
    }
}

/// A TCP proxy to a local port that holds back every chunk the server sends by `delay`: a slow directory.
struct SlowProxy {
    port: u16,
}

impl SlowProxy {
    fn start(target: u16, delay: Duration) -> SlowProxy {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let (Ok(client), Ok(server)) = (client, std::net::TcpStream::connect(("127.0.0.1", target))) else {
                    return;
                };
                let (mut from_client, mut to_server) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || std::io::copy(&mut from_client, &mut to_server));
                let (mut from_server, mut to_client) = (server, client);
                std::thread::spawn(move || {
                    let mut buf = [0u8; 65536];
                    while let Ok(n @ 1..) = from_server.read(&mut buf) {
                        std::thread::sleep(delay);
                        if to_client.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to_client.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        SlowProxy { port }
    }

    fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }
}

#[tokio::test]
async fn a_cloudshell_list_longer_than_the_interval_logs_progress() {
    let sim = Sim::start(cloudshell_sim::Config::default());
    let names: Vec<String> = (0..300).map(|n| format!("user{n:04}")).collect();
    sim.add_users(&names.iter().map(String::as_str).collect::<Vec<_>>()).await;
    // Every answer takes 150 ms: the first page comes after the 100 ms interval.
    sim.set_faults(json!({"latency_ms": 150})).await;
    let settings =
        cloudshell::Settings { progress_every: Duration::from_millis(100), ..common::cloudshell_settings(&sim.url()) };
    let client = Client::new(settings).unwrap();

    let (users, lines) = progress_lines(client.list_users()).await;

    assert!(users.unwrap().len() >= 300);
    let first = lines.first().expect("a read progress line");
    for field in ["source=\"cloudshell\"", "operation=list_users", "pages=1", "entries=250", "elapsed_s=0"] {
        assert!(first.contains(field), "{field}: {first}");
    }
    // One line per interval at most: the second page came 150 ms later, past the next one.
    assert!(lines.len() <= 2, "{lines:?}");
}

#[test]
fn check_against_servers_that_never_answer_ends_within_its_short_wait_and_names_them() {
    let silent = Silent::start();
    let url = format!("127.0.0.1:{}", silent.port);
    let files = Files::new();
    let config = files.config(&format!("ldap://{url}"), &format!("http://{url}"), &["Team"], "", "");
    // A 2 s wait for each, and retries that would make the directory's alone take 4 x 2 s.
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text
        .replace("timeout = \"5s\"", "timeout = \"2s\"\nconnect_retries = 3")
        .replace("timeout = \"10s\"", "timeout = \"2s\"");
    std::fs::write(&config, text).unwrap();

    let started = Instant::now();
    let out = common::cli(&["check", "--config", config.to_str().unwrap()]);
    let took = started.elapsed();

    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    // Two waits of 2 s, with room for a loaded machine; before, the directory's retries alone took 4 x 2 s plus
    // their pauses, then CloudShell 2 s more (11 s).
    assert!(took < Duration::from_secs(8), "check took {took:?}: {stdout}\n{stderr}");
    // Before each wait, what it waits for; after it, what did not answer.
    let connecting = stderr.find("connecting to the directory").unwrap_or_else(|| panic!("{stderr}"));
    let logging_in = stderr.find("logging in to cloudshell").unwrap_or_else(|| panic!("{stderr}"));
    assert!(connecting < logging_in, "{stderr}");
    assert!(stderr.contains(&format!("url=ldap://{url}")) && stderr.contains("timeout=2s"), "{stderr}");
    assert!(
        stdout.contains(&format!("directory ldap://{url}: FAILED: the directory at ldap://{url} did not answer bind")),
        "{stdout}"
    );
    assert!(stdout.contains("did not answer PUT /Api/Auth/Login within 2s"), "{stdout}");
    assert_eq!(stderr.matches("directory connection failed").count(), 1, "no retry: {stderr}");
}
