//! The operator's commands beside the sync itself: `status` as a monitoring check, shell completions, the
//! manual page, `--version`. The real binary.

mod common;

use common::{Directory, Env, Stack};
use serde_json::Value;

const SUBCOMMANDS: [&str; 5] = ["sync", "run", "check", "status", "completions"];

fn team() -> Directory {
    let mut d = Directory::new();
    let alice = d.user("alice");
    d.group("Team", &[alice]);
    d
}

fn status(config: &std::path::Path, json: bool) -> (i32, String, String) {
    let mut args = vec!["status", "--config", config.to_str().unwrap()];
    if json {
        args.push("--json");
    }
    let out = common::cli(&args);
    let code = out.status.code().expect("exited");
    (code, String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string())
}

#[tokio::test]
async fn status_reports_the_last_run_and_serves_as_a_monitoring_check() {
    let env = Env(Stack::start(&team(), |_| {}));
    let state = env.files.path("state");
    let sections = format!("[monitor]\nstate_directory = \"{}\"\n", state.display());
    let config = env.files.config(&env.slapd.url(), &env.sim.url(), &["Team"], "", &sections);

    let (code, _, stderr) = status(&config, false);
    assert_eq!(code, 2, "no status file yet: {stderr}");
    assert!(stderr.contains("status.json"), "{stderr}");

    assert_eq!(common::sync_json(&config, &[]).0, 0);
    let (code, text, _) = status(&config, false);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains(": ok, finished ") && text.contains("1 imported"), "{text}");
    assert!(text.contains("group \"Team\": ok, members 1"), "{text}");
    assert!(text.ends_with("state: OK\n"), "{text}");
    let (code, json, _) = status(&config, true);
    let json: Value = serde_json::from_str(&json).unwrap();
    assert_eq!((code, &json["healthy"]), (0, &Value::Bool(true)), "{json}");
    assert_eq!(json["status"]["last_run"]["result"], "ok");

    // A run that did not end ok fails the check.
    let broken = env.files.config(&env.slapd.url(), &env.sim.url(), &["Team", "Nowhere"], "", &sections);
    assert_eq!(common::sync_json(&broken, &[]).0, 3);
    let (code, text, _) = status(&config, false);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("NOT OK"), "{text}");

    // A run long past: stale (the default schedule runs every 15 minutes).
    let file = state.join("status.json");
    let mut old: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    old["last_run"]["result"] = "ok".into();
    old["last_run"]["finished_at"] = "2026-01-01T00:00:00Z".into();
    std::fs::write(&file, old.to_string()).unwrap();
    let (code, text, _) = status(&config, false);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("STALE") && text.contains("15 min each"), "{text}");

    // A damaged file is named as such, not taken for "no run yet".
    std::fs::write(&file, "{\"last_run\": ").unwrap();
    let (code, _, stderr) = status(&config, false);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("is not one this version reads") && !stderr.contains("no run has finished"), "{stderr}");
}

#[test]
fn status_needs_no_password_to_read_the_status_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::write(
        &config,
        format!(
            "[ldap]\nurl = \"ldap://127.0.0.1:1\"\nbind_dn = \"cn=x\"\nbind_password_file = \"/nonexistent/pw\"\n\
             base_dn = \"dc=x\"\n\n[cloudshell]\nurl = \"http://127.0.0.1:1\"\npassword_file = \"/nonexistent/pw\"\n\n\
             [sync]\ngroups = [\"Team\"]\n\n[monitor]\nstate_directory = \"{}\"\n",
            state.display()
        ),
    )
    .unwrap();
    let (code, _, stderr) = status(&config, false);
    assert_eq!(code, 2, "no status file: {stderr}");
    assert!(!stderr.contains("/nonexistent/pw"), "the passwords were not read: {stderr}");
    assert!(
        common::cli(&["sync", "--config", config.to_str().unwrap()]).status.code() == Some(2),
        "sync does read them"
    );
}

#[test]
fn status_fails_when_the_next_run_is_overdue() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::write(
        &config,
        format!(
            "[ldap]\nurl = \"ldap://127.0.0.1:1\"\nbind_dn = \"cn=x\"\nbind_password_env = \"X\"\nbase_dn = \"dc=x\"\n\n\
             [cloudshell]\nurl = \"http://127.0.0.1:1\"\npassword_env = \"X\"\n\n\
             [sync]\ngroups = [\"Team\"]\nrun_timeout = \"10m\"\n\n\
             [schedule]\ncron = \"0 0 7 * * *\"\n\n[monitor]\nstate_directory = \"{}\"\n",
            state.display()
        ),
    )
    .unwrap();
    let ago = |minutes: u64| {
        let t = std::time::SystemTime::now() - std::time::Duration::from_secs(minutes * 60);
        humantime::format_rfc3339_seconds(t).to_string()
    };
    // The daily run finished an hour ago and announced the next for `due`.
    let write_status = |due: &str| {
        let status = serde_json::json!({
            "last_run": {
                "run_id": "r1", "started_at": ago(61), "finished_at": ago(60), "result": "ok", "duration_ms": 1000,
                "imported": 0, "failed": 0, "groups": []
            },
            "last_success_at": ago(60),
            "next_run": due,
        });
        std::fs::write(state.join("status.json"), status.to_string()).unwrap();
    };

    // Due 12 minutes ago: a run may still be under way (10 minutes of run_timeout and 5 more).
    write_status(&ago(12));
    let (code, text, _) = status(&config, false);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("(due 12 min ago)") && text.ends_with("state: OK\n"), "{text}");

    // Due 20 minutes ago: overdue, long before two daily periods make it stale.
    let due = ago(20);
    write_status(&due);
    let (code, text, _) = status(&config, false);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains(&format!("state: OVERDUE: overdue since {due}")), "{text}");
    let (code, json, _) = status(&config, true);
    let json: Value = serde_json::from_str(&json).unwrap();
    assert_eq!((code, &json["healthy"], &json["health"]["overdue"]), (1, &Value::Bool(false), &Value::Bool(true)));
    assert_eq!(json["health"]["overdue_since"], due.as_str());
}

#[test]
fn completions_for_every_shell_name_every_command() {
    for shell in ["bash", "zsh", "fish"] {
        let out = common::cli(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let script = String::from_utf8_lossy(&out.stdout);
        for sub in SUBCOMMANDS {
            assert!(script.contains(sub), "{shell} completion lacks {sub}");
        }
        assert!(script.contains("config") && script.contains("dry-run"), "{shell}: the options too");
    }
}

#[test]
fn the_manual_page_and_the_version() {
    let out = common::cli(&["man"]);
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(page.starts_with(".ie") && page.contains(".TH cloudshell-ldap-sync 1"), "{page}");
    for sub in SUBCOMMANDS {
        assert!(page.contains(sub), "the manual lacks {sub}");
    }
    let out = common::cli(&["--version"]);
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(version.starts_with(&format!("cloudshell-ldap-sync {}", env!("CARGO_PKG_VERSION"))), "{version}");
    // Built from a git checkout here: the commit is named.
    assert!(version.contains("(commit "), "{version}");
}

#[test]
fn a_configuration_or_password_that_is_not_a_regular_file_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let text = |password: &str| {
        format!(
            "[ldap]\nurl = \"ldap://127.0.0.1:1\"\nbind_dn = \"cn=x\"\nbind_password_file = \"{password}\"\n\
             base_dn = \"dc=x\"\n\n[cloudshell]\nurl = \"http://127.0.0.1:1\"\npassword_env = \"X\"\n\n\
             [sync]\ngroups = [\"Team\"]\n"
        )
    };
    let started = std::time::Instant::now();
    // A password "file" that never ends.
    std::fs::write(&config, text("/dev/zero")).unwrap();
    let out = common::cli(&["check", "--config", config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("/dev/zero") && stderr.contains("a device, not a regular file"), "{stderr}");
    // A configuration that is a FIFO nobody writes to.
    let fifo = dir.path().join("fifo.toml");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let out = common::cli(&["sync", "--config", fifo.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("a FIFO, not a regular file"), "{stderr}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "neither read hangs nor fills memory");
}
