//! The shipped systemd units: hardened to an exposure of 2.0 or lower by `systemd-analyze security`, with the
//! settings the daemon relies on.

use std::path::Path;
use std::process::Command;

const INSTALL_HINT: &str =
    "systemd-analyze is missing: run `apt-get install -y systemd` (scripts/test does this as root)";

fn unit(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd").join(name)).unwrap()
}

/// The overall exposure `systemd-analyze security --offline=true` gives a unit file.
fn exposure(name: &str) -> f64 {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd").join(name);
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&path)
        .output()
        .expect(INSTALL_HINT);
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    let score =
        line.split(':').nth(1).and_then(|rest| rest.split_whitespace().next()).expect("a score after the colon");
    score.parse().unwrap_or_else(|e| panic!("{score:?} in {line:?}: {e}"))
}

#[test]
fn the_daemon_unit_is_hardened_to_an_exposure_of_at_most_2() {
    let score = exposure("cloudshell-ldap-sync.service");
    assert!(score <= 2.0, "exposure {score}");
}

#[test]
fn the_oneshot_unit_is_hardened_to_an_exposure_of_at_most_2() {
    let score = exposure("cloudshell-ldap-sync-oneshot.service");
    assert!(score <= 2.0, "exposure {score}");
}

#[test]
fn the_units_carry_what_the_daemon_relies_on() {
    let daemon = unit("cloudshell-ldap-sync.service");
    for line in [
        "Type=notify",
        "DynamicUser=yes",
        "StateDirectory=cloudshell-ldap-sync",
        "LoadCredential=ldap-password:",
        "LoadCredential=cloudshell-password:",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "ExecStart=/usr/bin/cloudshell-ldap-sync run --config",
        "WatchdogSec=",
    ] {
        assert!(daemon.contains(line), "daemon unit lacks {line}");
    }
    let oneshot = unit("cloudshell-ldap-sync-oneshot.service");
    assert!(oneshot.contains("Type=oneshot") && oneshot.contains("cloudshell-ldap-sync sync --config"));
    let timer = unit("cloudshell-ldap-sync.timer");
    assert!(timer.contains("Unit=cloudshell-ldap-sync-oneshot.service") && timer.contains("OnCalendar="));
    // The credential names are the ones the configuration falls back to.
    let example = unit("../config/example.toml");
    assert!(example.contains("$CREDENTIALS_DIRECTORY/ldap-password"));
    assert!(example.contains("$CREDENTIALS_DIRECTORY/cloudshell-password"));
}

/// The value of `key=` in the unit's `[Service]` section.
fn service_value(text: &str, key: &str) -> Option<String> {
    let service = text.split("[Service]").nth(1)?.split("\n[").next()?;
    service.lines().find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_string))
}

#[test]
fn both_service_units_bound_memory_threads_and_descriptors() {
    for name in ["cloudshell-ldap-sync.service", "cloudshell-ldap-sync-oneshot.service"] {
        let text = unit(name);
        let value = |key: &str| service_value(&text, key).unwrap_or_else(|| panic!("{name}: no {key}= in [Service]"));
        assert_eq!(value("MemoryMax"), "1G", "{name}");
        assert_eq!(value("MemoryHigh"), "768M", "{name}");
        // One runtime thread and at most 16 for blocking work (the runtime's own cap), with room to spare.
        assert!(value("TasksMax").parse::<u32>().unwrap() >= 2 * 17, "{name}");
        // Every monitoring connection and every CloudShell connection at once, and then some.
        let nofile: usize = value("LimitNOFILE").parse().unwrap();
        assert!(nofile >= 2 * (cloudshell_ldap_sync::monitor::MAX_CONNECTIONS + 64 + 16), "{name}: {nofile}");
    }
}

#[test]
fn the_oneshot_unit_outlasts_the_runs_own_deadline() {
    // Before: TimeoutStartSec=1h, so systemd cut a run at one hour that sync.run_timeout (6h) would let go on.
    let text = unit("cloudshell-ldap-sync-oneshot.service");
    let value = |key: &str| {
        let v = service_value(&text, key).unwrap_or_else(|| panic!("oneshot: no {key}= in [Service]"));
        humantime::parse_duration(&v).unwrap_or_else(|e| panic!("oneshot: {key}={v}: {e}"))
    };
    // The configuration the package installs, whose run_timeout is the default (a unit test in config says so).
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.toml");
    let config = cloudshell_ldap_sync::config::load_without_secrets(&example).unwrap_or_else(|e| panic!("{e}"));
    let (start, stop) = (value("TimeoutStartSec"), value("TimeoutStopSec"));
    assert!(start >= config.sync.run_timeout + stop, "TimeoutStartSec {start:?} within run_timeout + stop");
    // The stop allowance covers the longest call the run may be finishing.
    assert!(stop >= config.cloudshell.timeout.max(config.ldap.timeout), "TimeoutStopSec {stop:?}");
}
