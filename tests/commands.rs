//! The operator's commands beside the sync itself: `status` as a monitoring check, shell completions (driven in
//! bash, loaded in zsh and fish), the manual pages, `--version`, and the conventions every command shares
//! (`-c`, `$CLOUDSHELL_LDAP_SYNC_CONFIG`, `-v`/`-q`, `NO_COLOR`, `check --json`, `--detailed-exitcode`). The real
//! binary.

mod common;

use std::process::{Command, Output};

use common::{Directory, Env, Stack};
use serde_json::Value;

const SUBCOMMANDS: [&str; 7] = ["sync", "run", "check", "status", "history", "accept-shrink", "completions"];

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
fn the_manual_page_and_the_version() {
    let out = common::cli(&["man"]);
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(page.starts_with(".ie") && page.contains(".TH cloudshell-ldap-sync 1"), "{page}");
    for sub in SUBCOMMANDS {
        assert!(page.contains(&roff(sub)), "the manual lacks {sub}");
    }
    let out = common::cli(&["--version"]);
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(version.starts_with(&format!("cloudshell-ldap-sync {}", env!("CARGO_PKG_VERSION"))), "{version}");
    // Built from a git checkout here: the commit is named.
    assert!(version.contains("(commit "), "{version}");
}

/// `text` as roff writes it: every `-` escaped.
fn roff(text: &str) -> String {
    text.replace('-', "\\-")
}

#[test]
fn every_page_the_manual_names_exists_and_documents_every_option() {
    let dir = tempfile::tempdir().unwrap();
    let out = cli_env(&["man", "--out-dir", dir.path().to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let page = |name: &str| {
        std::fs::read_to_string(dir.path().join(name)).unwrap_or_else(|e| panic!("{name} was not written: {e}"))
    };
    let main = page("cloudshell-ldap-sync.1");
    // Every page the main page names, as `cloudshell\-ldap\-sync\-<command>(1)`, was written.
    let named: Vec<String> = main
        .split("cloudshell\\-ldap\\-sync\\-")
        .skip(1)
        .filter_map(|rest| rest.split_once("(1)").map(|(command, _)| command.replace("\\-", "-")))
        .filter(|command| command.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
        .collect();
    assert!(named.len() >= 5, "{named:?}");
    for command in &named {
        page(&format!("cloudshell-ldap-sync-{command}.1"));
    }
    let written = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(written, 1 + named.len(), "one page per command the main page names: {named:?}");
    // Every option of every visible command is on its page; the global ones on the main page too.
    let command = cloudshell_ldap_sync::cli::command();
    for option in command.get_arguments().filter_map(|a| a.get_long()) {
        assert!(main.contains(&format!("\\fB{}\\fR", roff(&format!("--{option}")))), "main page: --{option}");
    }
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = sub.get_name();
        assert!(named.iter().any(|n| n == name), "the main page names {name}'s page: {named:?}");
        let text = page(&format!("cloudshell-ldap-sync-{name}.1"));
        assert!(text.starts_with(".ie") && text.contains(&format!(".TH cloudshell-ldap-sync-{name} 1")), "{text}");
        let options = sub.get_arguments().chain(command.get_arguments().filter(|a| a.is_global_set()));
        for arg in options {
            if let Some(long) = arg.get_long() {
                assert!(text.contains(&roff(&format!("--{long}"))), "{name}'s page lacks --{long}:\n{text}");
            }
            if let Some(short) = arg.get_short() {
                assert!(text.contains(&format!("\\fB\\-{short}\\fR")), "{name}'s page lacks -{short}:\n{text}");
            }
        }
        assert!(text.contains("cloudshell\\-ldap\\-sync\\fR(1)"), "{name}'s page points at the main page");
    }
    assert!(!named.iter().any(|n| n == "man" || n == "help"), "no page for hidden or built-in commands: {named:?}");
    // What the command line cannot say: the environment and the exit codes.
    for needle in ["CLOUDSHELL_LDAP_SYNC_CONFIG", "NO_COLOR", "RUST_LOG", "\\fB6\\fR"] {
        assert!(main.contains(needle), "the main page lacks {needle}");
    }
    // `man` alone prints the main page, as scripts did before.
    assert_eq!(String::from_utf8(cli_env(&["man"], &[]).stdout).unwrap(), main);
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

/// The binary with `args`, the environment cleared of what the tests set here, then `env` added.
fn cli_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(common::binary());
    command.args(args).env_remove("RUST_LOG").env_remove("CLOUDSHELL_LDAP_SYNC_CONFIG").env_remove("NO_COLOR");
    command.envs(env.iter().copied()).output().expect("running cloudshell-ldap-sync")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn the_configuration_comes_from_the_option_then_the_environment_then_the_default() {
    // `status` names the file it could not read: which file each way of naming one picked.
    let read = |args: &[&str], env: &[(&str, &str)]| {
        let out = cli_env(args, env);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        stderr(&out)
    };
    let env = [("CLOUDSHELL_LDAP_SYNC_CONFIG", "/nonexistent/env.toml")];
    assert!(read(&["status", "--config", "/nonexistent/flag.toml"], &env).contains("/nonexistent/flag.toml"));
    assert!(read(&["-c", "/nonexistent/flag.toml", "status"], &env).contains("/nonexistent/flag.toml"));
    assert!(read(&["status", "-c/nonexistent/flag.toml"], &env).contains("/nonexistent/flag.toml"));
    assert!(read(&["status"], &env).contains("/nonexistent/env.toml"));
    assert!(read(&["check"], &env).contains("/nonexistent/env.toml"), "every command");
    if !std::path::Path::new("/etc/cloudshell-ldap-sync/config.toml").exists() {
        let empty = [("CLOUDSHELL_LDAP_SYNC_CONFIG", "")];
        assert!(read(&["status"], &empty).contains("/etc/cloudshell-ldap-sync/config.toml"), "empty is unset");
        assert!(read(&["status"], &[]).contains("/etc/cloudshell-ldap-sync/config.toml"));
    }
}

#[tokio::test]
async fn a_dry_run_tells_by_its_exit_code_whether_changes_are_planned() {
    let env = Env(Stack::start(&team(), |_| {}));
    let config = env.files.config(&env.slapd.url(), &env.sim.url(), &["Team"], "", "");
    let config = config.to_str().unwrap();
    let dry = |extra: &[&str]| {
        let mut args = vec!["sync", "--dry-run", "-c", config];
        args.extend_from_slice(extra);
        let out = cli_env(&args, &[]);
        (out.status.code().unwrap(), String::from_utf8_lossy(&out.stdout).to_string(), stderr(&out))
    };
    // alice is missing in CloudShell.
    let (code, text, logs) = dry(&["--detailed-exitcode"]);
    assert_eq!(code, 6, "{text}{logs}");
    assert_eq!(dry(&[]).0, 0, "without the option a good dry run still exits 0");
    let (code, report, _) = common::sync_json(std::path::Path::new(config), &["--dry-run", "--detailed-exitcode"]);
    assert_eq!((code, report["result"].as_str()), (6, Some("ok")), "{report}");

    assert_eq!(common::sync_json(std::path::Path::new(config), &[]).0, 0, "the real run imports alice");
    let (code, text, logs) = dry(&["--detailed-exitcode"]);
    assert_eq!(code, 0, "nothing left to do: {text}{logs}");

    // Other outcomes keep their codes: a group that cannot be read is partial (3), not "changes planned".
    let broken = env.files.config(&env.slapd.url(), &env.sim.url(), &["Team", "Nowhere"], "", "");
    let (code, _, _) = common::sync_json(&broken, &["--dry-run", "--detailed-exitcode"]);
    assert_eq!(code, 3);
    // Only a dry run has a plan to tell of.
    let out = cli_env(&["sync", "--detailed-exitcode", "-c", config], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--dry-run"), "{}", stderr(&out));
}

#[tokio::test]
async fn verbose_and_quiet_move_the_log_level_and_rust_log_still_decides() {
    let env = Env(Stack::start(&team(), |_| {}));
    let config = env.files.config(&env.slapd.url(), &env.sim.url(), &["Team"], "", "");
    let config = config.to_str().unwrap();
    let logs = |args: &[&str], env: &[(&str, &str)]| {
        let mut all = vec!["sync", "--dry-run", "-c", config];
        all.extend_from_slice(args);
        let out = cli_env(&all, env);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        stderr(&out)
    };
    let levels = |text: &str| -> Vec<&str> {
        let mut found: Vec<&str> = ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"]
            .into_iter()
            .filter(|l| text.contains(&format!(" {l} ")))
            .collect();
        found.dedup();
        found
    };
    let default = logs(&[], &[]);
    assert!(levels(&default).contains(&"INFO") && !levels(&default).contains(&"DEBUG"), "{default}");
    let verbose = logs(&["-v"], &[]);
    assert!(levels(&verbose).contains(&"DEBUG"), "{verbose}");
    assert_eq!(logs(&["-vq"], &[]).lines().count(), default.lines().count(), "-q takes back a -v");
    let quiet = logs(&["-q"], &[]);
    assert!(!levels(&quiet).contains(&"INFO"), "{quiet}");
    let rust_log = logs(&["-q"], &[("RUST_LOG", "info")]);
    assert!(levels(&rust_log).contains(&"INFO"), "RUST_LOG wins over -q: {rust_log}");
}

#[tokio::test]
async fn check_json_is_one_object_with_every_probe() {
    let env = Env(Stack::start(&team(), |_| {}));
    let good = env.files.config(&env.slapd.url(), &env.sim.url(), &["Team"], "", "");
    let out = cli_env(&["check", "--json", "-c", good.to_str().unwrap()], &[]);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&out)));
    assert_eq!(out.status.code(), Some(0), "{json}");
    assert_eq!((&json["ok"], &json["problems"]), (&Value::Bool(true), &Value::from(0)), "{json}");
    assert_eq!(json["config"], good.to_str().unwrap());
    let checks = json["checks"].as_array().unwrap();
    let kinds: Vec<&str> = checks.iter().map(|c| c["kind"].as_str().unwrap()).collect();
    let probes: Vec<&str> = kinds.iter().copied().filter(|k| *k != "config_warning").collect();
    assert_eq!(probes, ["config", "state_directory", "directory", "group", "change_reads", "cloudshell"], "{json}");
    assert!(kinds.contains(&"config_warning"), "plain ldap:// and http:// are warned of: {json}");
    let team = checks.iter().find(|c| c["kind"] == "group").unwrap();
    assert_eq!((&team["name"], &team["ok"]), (&Value::from("Team"), &Value::Bool(true)), "{json}");
    assert!(team["message"].as_str().unwrap().contains("1 members"), "{json}");

    let broken = env.files.config(&env.slapd.url(), &env.sim.url(), &["Team", "Nowhere"], "", "");
    let out = cli_env(&["check", "--json", "-c", broken.to_str().unwrap()], &[]);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{json}");
    assert_eq!((&json["ok"], &json["problems"]), (&Value::Bool(false), &Value::from(1)), "{json}");
    let nowhere = json["checks"].as_array().unwrap().iter().find(|c| c["name"] == "Nowhere").expect("{json}");
    assert_eq!((&nowhere["kind"], &nowhere["ok"]), (&Value::from("group"), &Value::Bool(false)), "{json}");
    // The text form says the same, one line each.
    let out = cli_env(&["check", "-c", broken.to_str().unwrap()], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("  group \"Nowhere\": FAILED: ") && text.ends_with("1 problem(s) found\n"), "{text}");
}

#[test]
fn no_color_keeps_colours_off_a_terminal() {
    // A terminal for the binary: `script` (util-linux) runs it on a pseudo-terminal. A usage error is coloured
    // there (clap), unless NO_COLOR is set.
    let on_a_terminal = |no_color: Option<&str>| {
        let command = format!("{} sync --no-such-option", common::binary());
        let mut script = Command::new("script");
        script.args(["-qec", &command, "/dev/null"]).env_remove("NO_COLOR").env("TERM", "xterm");
        if let Some(v) = no_color {
            script.env("NO_COLOR", v);
        }
        let out = script.output().expect("script (util-linux) runs a command on a pseudo-terminal");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let coloured = on_a_terminal(None);
    assert!(coloured.contains("--no-such-option") && coloured.contains("\u{1b}["), "{coloured:?}");
    let plain = on_a_terminal(Some("1"));
    assert!(plain.contains("--no-such-option") && !plain.contains("\u{1b}["), "{plain:?}");
}

/// Runs `script` in bash with the bash completion script loaded, and returns its stdout.
fn in_bash(script: &str) -> String {
    let completion = cli_env(&["completions", "bash"], &[]);
    assert_eq!(completion.status.code(), Some(0));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cloudshell-ldap-sync.bash");
    std::fs::write(&file, &completion.stdout).unwrap();
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c"])
        .arg(format!("set -e\nsource {}\n{script}", file.display()))
        .output()
        .expect("bash");
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// What bash's completion offers for the words typed (the last one being completed), as the shell calls it:
/// the function `complete -p` names, with the command, the word and the word before it.
fn bash_offers(words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let script = format!(
        "COMP_WORDS=({words})\nCOMP_CWORD={cword}\nCOMP_LINE=\"${{COMP_WORDS[*]}}\"\nCOMP_POINT=${{#COMP_LINE}}\n\
         function=$(complete -p cloudshell-ldap-sync | sed -E 's/.* -F ([^ ]+) .*/\\1/')\n\
         \"$function\" cloudshell-ldap-sync \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        words = quoted.join(" "),
        cword = words.len() - 1,
    );
    in_bash(&script).lines().filter(|l| !l.is_empty()).map(str::to_string).collect()
}

#[test]
fn bash_completes_each_commands_options_and_offers_no_hidden_command() {
    let offers = bash_offers(&["cloudshell-ldap-sync", "sync", "--"]);
    for option in ["--dry-run", "--json", "--detailed-exitcode", "--config", "--verbose", "--quiet", "--log-format"] {
        assert!(offers.iter().any(|o| o == option), "sync --<TAB> lacks {option}: {offers:?}");
    }
    assert!(!offers.iter().any(|o| o == "--out-dir"), "{offers:?}");
    let offers = bash_offers(&["cloudshell-ldap-sync", "check", "--"]);
    assert!(offers.iter().any(|o| o == "--json") && !offers.iter().any(|o| o == "--dry-run"), "{offers:?}");
    let offers = bash_offers(&["cloudshell-ldap-sync", "--config", "x", "status", "--j"]);
    assert_eq!(offers, ["--json"], "after a global option too");
    let offers = bash_offers(&["cloudshell-ldap-sync", "history", "--"]);
    assert!(["--since", "--json", "--config"].iter().all(|o| offers.iter().any(|x| x == o)), "{offers:?}");
    let offers = bash_offers(&["cloudshell-ldap-sync", "accept-shrink", "--"]);
    assert!(offers.iter().any(|o| o == "--config") && !offers.iter().any(|o| o == "--json"), "{offers:?}");
    let offers = bash_offers(&["cloudshell-ldap-sync", "completions", ""]);
    assert!(["bash", "zsh", "fish"].iter().all(|s| offers.iter().any(|o| o == s)), "{offers:?}");

    let commands = bash_offers(&["cloudshell-ldap-sync", ""]);
    for command in SUBCOMMANDS {
        assert!(commands.iter().any(|c| c == command), "{command}: {commands:?}");
    }
    assert!(!commands.iter().any(|c| c == "man"), "the hidden command is not offered: {commands:?}");
    assert!(!bash_offers(&["cloudshell-ldap-sync", "help", ""]).iter().any(|c| c == "man"));
}

/// The path to `shell`; a clear failure when it is not installed (scripts/test installs zsh and fish as root).
fn shell(name: &str) -> String {
    let found = Command::new("sh").arg("-c").arg(format!("command -v {name}")).output().expect("sh");
    let path = String::from_utf8_lossy(&found.stdout).trim().to_string();
    assert!(!path.is_empty(), "{name} is not installed: apt-get install -y {name} (scripts/test does this as root)");
    path
}

/// Writes `shell`'s completion script into `dir` as `file`, checking it offers no hidden command.
fn completion_file(shell: &str, dir: &std::path::Path, file: &str) -> std::path::PathBuf {
    let out = cli_env(&["completions", shell], &[]);
    assert_eq!(out.status.code(), Some(0), "{shell}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("out-dir"), "{shell}: no hidden command");
    let path = dir.join(file);
    std::fs::write(&path, &out.stdout).unwrap();
    path
}

#[test]
fn zsh_loads_its_completion_script_for_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let script = completion_file("zsh", dir.path(), "_cloudshell-ldap-sync");
    let out = Command::new(shell("zsh"))
        .args(["-f", "-c"])
        .arg(format!(
            "autoload -Uz compinit && compinit -u -d {dir}/zcompdump && source {script} && \
             print -r -- $_comps[cloudshell-ldap-sync] && whence -f _cloudshell-ldap-sync",
            dir = dir.path().display(),
            script = script.display()
        ))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(text.starts_with("_cloudshell-ldap-sync\n"), "registered for the command: {text}");
    assert!(text.contains("--dry-run") && text.contains("--detailed-exitcode"), "{text}");
    let file = std::fs::read_to_string(&script).unwrap();
    assert!(file.contains("'sync:") && !file.contains("'man:"), "no hidden command: {file}");
}

#[test]
fn fish_completes_each_commands_options_and_offers_no_hidden_command() {
    let dir = tempfile::tempdir().unwrap();
    let script = completion_file("fish", dir.path(), "cloudshell-ldap-sync.fish");
    // fish completes a command line itself (`complete -C`): the candidates, one a line, a tab before the help.
    let offers = |line: &str| -> Vec<String> {
        let out = Command::new(shell("fish"))
            .args(["--no-config", "-c"])
            .arg(format!("source {}; complete -C '{line}'", script.display()))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines().map(|l| l.split('\t').next().unwrap_or_default().to_string()).collect()
    };
    let sync = offers("cloudshell-ldap-sync sync --");
    for option in ["--dry-run", "--detailed-exitcode", "--config"] {
        assert!(sync.iter().any(|o| o == option), "{option}: {sync:?}");
    }
    let commands = offers("cloudshell-ldap-sync ");
    assert!(commands.iter().any(|c| c == "sync") && !commands.iter().any(|c| c == "man"), "{commands:?}");
}
