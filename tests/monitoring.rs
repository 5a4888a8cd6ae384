//! The monitoring that ships in `monitoring/`: the alert rules pass `promtool check rules` and their unit tests
//! (`promtool test rules monitoring/tests/*.yml`, one file per alert), every alert carries a summary, a description
//! and a runbook section that exists in `docs/runbook.md`, the Grafana dashboard is provisioning-ready and its
//! queries are valid PromQL, and every metric the rules and the dashboard name is one a running daemon exports. End
//! to end, a real Prometheus scraping the daemon fires the "runs failing" alert when CloudShell refuses the login.
//! `promtool` and `prometheus` come with Debian's `prometheus` package (scripts/test installs it when run as root).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Directory, Env, Stack, repo_path};
use serde_json::Value;

const INSTALL_HINT: &str = "is not installed: run `apt-get install -y prometheus` \
                            (scripts/test does this when run as root)";

/// `program` (`promtool`, `prometheus`) on `PATH`, or a failure saying how to install it.
fn on_path(program: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{program} {INSTALL_HINT}"))
}

fn promtool() -> PathBuf {
    on_path("promtool")
}

/// Runs promtool in `monitoring/` and fails with its output unless it succeeds.
fn run_promtool(args: &[&str]) -> String {
    let out = Command::new(promtool()).args(args).current_dir(repo_path("monitoring")).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

fn rules() -> String {
    std::fs::read_to_string(repo_path("monitoring/alerts.yml")).unwrap()
}

/// The unit test files, `monitoring/tests/*.yml`, by name.
fn unit_test_files() -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(repo_path("monitoring/tests"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .map(|p| (format!("tests/{}", p.file_name().unwrap().to_str().unwrap()), std::fs::read_to_string(&p).unwrap()))
        .collect();
    files.sort();
    files
}

/// One alert of the rules file: its name and its lines, up to the next alert.
struct Alert {
    name: String,
    text: String,
}

/// The alerts, split on `- alert:` lines (the file is ours and keeps one alert per such line).
fn alerts() -> Vec<Alert> {
    let text = rules();
    let mut alerts: Vec<Alert> = Vec::new();
    for line in text.lines() {
        if let Some(name) = line.trim_start().strip_prefix("- alert:") {
            alerts.push(Alert { name: name.trim().to_string(), text: String::new() });
        } else if let Some(a) = alerts.last_mut() {
            a.text.push_str(line);
            a.text.push('\n');
        }
    }
    assert!(alerts.len() >= 6, "expected the six alerts of monitoring/alerts.yml, found {}", alerts.len());
    alerts
}

/// The value of `key:` in an alert's text, unquoted.
fn annotation<'a>(alert: &'a Alert, key: &str) -> Option<&'a str> {
    alert.text.lines().find_map(|l| l.trim_start().strip_prefix(&format!("{key}:"))).map(|v| v.trim().trim_matches('"'))
}

/// The metric names a PromQL text names: every `cloudshell_ldap_sync_...` identifier.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("cloudshell_ldap_sync_") {
        let tail = &rest[at..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// The series names in a Prometheus text exposition, without labels.
fn series_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

/// `Team`: alice, bob; `Leavers`: carol.
fn directory() -> Directory {
    let mut d = Directory::new();
    let alice = d.user("alice");
    let bob = d.user("bob");
    d.group("Team", &[alice, bob]);
    let carol = d.user("carol");
    d.group("Leavers", &[carol]);
    d
}

impl Env {
    fn start() -> Env {
        Env(Stack::start(&directory(), |_| {}))
    }

    /// A daemon configuration running every second and serving `/metrics` on `port`: `Team` synced and mapped to
    /// CloudShell's `Lab Users`, leavers reported, so that every kind of metric is exported after a run.
    fn config(&self, port: u16) -> PathBuf {
        let sections = format!(
            "[[sync.mapping]]\ndirectory_group = \"Team\"\ncloudshell_groups = [\"Lab Users\"]\n\n\
             [sync.leavers]\naction = \"report\"\n\n\
             [schedule]\ncron = \"* * * * * *\"\nrun_on_start = true\n\n\
             [monitor]\nstate_directory = \"{}\"\nlisten = \"127.0.0.1:{port}\"\n",
            self.files.path("state").display()
        );
        self.files.config(&self.slapd.url(), &self.sim.url(), &["Team"], "", &sections)
    }
}

/// A child process killed on drop; its output in a file.
struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    fn spawn(command: &mut Command, log: PathBuf) -> Process {
        let file = std::fs::File::create(&log).unwrap();
        let child = command.stdout(Stdio::null()).stderr(file).spawn().unwrap();
        Process { child, log }
    }

    fn daemon(config: &Path, log: PathBuf) -> Process {
        let mut command = Command::new(common::binary());
        command
            .args(["run", "--log-format", "json", "--config", config.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("STATE_DIRECTORY");
        Process::spawn(&mut command, log)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `url` until `done` holds for its body (a JSON answer or text), at most `within`.
async fn wait_for_answer(
    url: &str,
    within: Duration,
    done: impl Fn(&str) -> bool,
    context: impl Fn() -> String,
) -> String {
    let deadline = Instant::now() + within;
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(answer) = reqwest::get(url).await {
            last = answer.text().await.unwrap_or_default();
            if done(&last) {
                return last;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{url} did not answer as expected within {within:?}; last answer:\n{last}\n{}", context());
}

#[test]
fn the_alert_rules_pass_promtool_check() {
    let out = run_promtool(&["check", "rules", "alerts.yml"]);
    assert!(out.contains(&format!("SUCCESS: {} rules found", alerts().len())), "{out}");
}

#[test]
fn every_alert_fires_and_stays_quiet_as_its_promtool_unit_test_expects() {
    let files = unit_test_files();
    let mut args = vec!["test", "rules"];
    args.extend(files.iter().map(|(name, _)| name.as_str()));
    let out = run_promtool(&args);
    assert_eq!(out.matches("SUCCESS").count(), files.len(), "{out}");
    // A unit test per alert, each expecting it to fire at least once.
    for alert in alerts() {
        let tested = files.iter().any(|(_, text)| {
            text.split(&format!("alertname: {}\n", alert.name)).skip(1).any(|after| {
                after
                    .trim_start()
                    .strip_prefix("exp_alerts:")
                    .is_some_and(|a| a.trim_start().starts_with("- exp_labels"))
            })
        });
        assert!(tested, "no file in monitoring/tests/ expects {} to fire", alert.name);
    }
}

#[test]
fn every_alert_has_a_summary_a_description_and_a_runbook_section() {
    let runbook = std::fs::read_to_string(repo_path("docs/runbook.md")).unwrap();
    let readme = std::fs::read_to_string(repo_path("README.md")).unwrap();
    let anchors: BTreeSet<String> = runbook
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(|h| {
            h.to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-')
                .collect::<String>()
                .replace(' ', "-")
        })
        .collect();
    for alert in alerts() {
        for key in ["summary", "description", "runbook_url"] {
            assert!(annotation(&alert, key).is_some_and(|v| !v.is_empty()), "{} has no {key}", alert.name);
        }
        let url = annotation(&alert, "runbook_url").unwrap();
        let (page, anchor) = url.split_once('#').unwrap_or_else(|| panic!("{}: {url} names no section", alert.name));
        assert_eq!(page, "docs/runbook.md", "{}", alert.name);
        assert!(anchors.contains(anchor), "{}: docs/runbook.md has no section #{anchor} ({anchors:?})", alert.name);
        assert!(alert.text.contains("severity:"), "{} has no severity", alert.name);
        assert!(readme.contains(&format!("| `{}` |", alert.name)), "the README's alert table lacks {}", alert.name);
    }
}

#[tokio::test]
async fn every_metric_the_rules_and_the_dashboard_name_is_one_a_running_daemon_exports() {
    let mut env = Env::start();
    let port = common::free_port();
    let daemon = Process::daemon(&env.config(port), env.files.path("daemon.log"));
    let url = format!("http://127.0.0.1:{port}/metrics");
    let ok = |m: &str| m.contains("cloudshell_ldap_sync_last_run_result{result=\"ok\"} 1");
    let after_ok = wait_for_answer(&url, Duration::from_secs(30), ok, || daemon.log()).await;
    // Failures are counted only once there is one: the directory goes away.
    env.0.slapd.kill();
    let failed = |m: &str| m.contains("cloudshell_ldap_sync_failures_total{kind=\"fatal\"}");
    let after_failure = wait_for_answer(&url, Duration::from_secs(30), failed, || daemon.log()).await;
    let exported: BTreeSet<String> = series_names(&after_ok).into_iter().chain(series_names(&after_failure)).collect();
    for (file, text) in [("monitoring/alerts.yml", rules()), ("monitoring/dashboard.json", dashboard_text())] {
        let used = metric_names(&text);
        assert!(used.len() >= 6, "{file}: {used:?}");
        let unknown: Vec<_> = used.difference(&exported).collect();
        assert!(unknown.is_empty(), "{file} names metrics the daemon does not export: {unknown:?}\n{after_failure}");
    }
    // The check itself sees a misspelt name.
    assert!(!exported.contains("cloudshell_ldap_sync_run_total"));

    // The schedule's period, from the start and after a reload (what "no success for two periods" measures by).
    assert!(after_ok.contains("\ncloudshell_ldap_sync_schedule_period_seconds 1.0\n"), "{after_ok}");
    let config = env.files.path("config.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace("cron = \"* * * * * *\"", "cron = \"0 */5 * * * *\"");
    std::fs::write(&config, text).unwrap();
    let hup = Command::new("kill").args(["-HUP", &daemon.child.id().to_string()]).status().unwrap();
    assert!(hup.success());
    let reloaded = |m: &str| m.contains("\ncloudshell_ldap_sync_schedule_period_seconds 300.0\n");
    wait_for_answer(&url, Duration::from_secs(30), reloaded, || daemon.log()).await;
}

fn dashboard_text() -> String {
    std::fs::read_to_string(repo_path("monitoring/dashboard.json")).unwrap()
}

/// The dashboard's PromQL: every panel target and every query variable, with Grafana's variables replaced by what
/// Prometheus takes.
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    let panels = dashboard["panels"].as_array().unwrap();
    let targets = panels.iter().flat_map(|p| p["targets"].as_array().into_iter().flatten()).map(|t| &t["expr"]);
    let variables = dashboard["templating"]["list"].as_array().unwrap().iter().map(|v| &v["definition"]);
    targets
        .chain(variables)
        .filter_map(|e| e.as_str())
        .map(|e| {
            let e = e.replace("$__rate_interval", "1m").replace("$job", ".*").replace("$instance", ".*");
            // label_values(metric, label) is Grafana's: Prometheus is asked for the metric.
            match e.strip_prefix("label_values(") {
                Some(rest) => rest.rsplit_once(',').unwrap().0.to_string(),
                None => e,
            }
        })
        .collect()
}

#[tokio::test]
async fn the_dashboard_is_provisioning_ready_and_each_query_is_valid_promql() {
    let dashboard: Value = serde_json::from_str(&dashboard_text()).expect("monitoring/dashboard.json is JSON");
    assert_eq!(dashboard["uid"], "cloudshell-ldap-sync", "a fixed uid, so that provisioning updates it in place");
    assert!(dashboard.get("id").is_none(), "no database id: provisioning assigns one");
    let panels = dashboard["panels"].as_array().unwrap();
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{}: the datasource is the variable", panel["title"]);
        assert!(panel["targets"].as_array().is_some_and(|t| !t.is_empty()), "{} has no query", panel["title"]);
    }
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for wanted in ["Runs by result", "API latency by kind (p95)", "Leavers by standing", "Holds", "Members per group"] {
        assert!(titles.contains(&wanted), "no panel {wanted:?}: {titles:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let (prometheus, port) = prometheus(dir.path(), common::free_port());
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() >= 20, "{queries:?}");
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/api/v1/query");
    wait_for_answer(
        &format!("http://127.0.0.1:{port}/-/ready"),
        Duration::from_secs(30),
        |a| a.contains("Ready"),
        || prometheus.log(),
    )
    .await;
    for query in queries {
        let answer = client.get(url::Url::parse_with_params(&url, [("query", &query)]).unwrap()).send().await.unwrap();
        let status = answer.status();
        let body = answer.text().await.unwrap();
        assert!(status.is_success() && body.contains("\"status\":\"success\""), "{query}: {status} {body}");
    }
}

/// Prometheus on a free port with its storage in `dir`, scraping `target` every second and evaluating
/// `monitoring/alerts.yml` every second.
fn prometheus(dir: &Path, target: u16) -> (Process, u16) {
    let port = common::free_port();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: cloudshell-ldap-sync\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n",
            repo_path("monitoring/alerts.yml").display()
        ),
    )
    .unwrap();
    let mut command = Command::new(on_path("prometheus"));
    command.current_dir(dir).args([
        format!("--config.file={}", config.display()),
        format!("--storage.tsdb.path={}", dir.join("data").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--log.level=warn".into(),
    ]);
    (Process::spawn(&mut command, dir.join("prometheus.log")), port)
}

/// The alerts Prometheus holds: (name, state).
fn alert_states(answer: &str) -> Vec<(String, String)> {
    let answer: Value = serde_json::from_str(answer).unwrap_or(Value::Null);
    answer["data"]["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| (a["labels"]["alertname"].as_str().unwrap_or("").into(), a["state"].as_str().unwrap_or("").into()))
        .collect()
}

#[tokio::test]
async fn a_real_prometheus_fires_runs_failing_when_cloudshell_refuses_the_login() {
    let env = Env::start();
    let port = common::free_port();
    let config = env.config(port);
    std::fs::write(env.files.path("cs-password"), "not-the-admin-password").unwrap();
    let daemon = Process::daemon(&config, env.files.path("daemon.log"));
    let (prometheus, prometheus_port) = prometheus(env.files.dir.path(), port);
    let context = || format!("daemon:\n{}\nprometheus:\n{}", daemon.log(), prometheus.log());
    let answer = wait_for_answer(
        &format!("http://127.0.0.1:{prometheus_port}/api/v1/alerts"),
        Duration::from_secs(60),
        |a| alert_states(a).contains(&("CloudShellLdapSyncRunsFailing".into(), "firing".into())),
        context,
    )
    .await;
    let alerts = alert_states(&answer);
    // With a one-second schedule "no success for two periods" is on its way (pending for its 5 minutes); nothing
    // else is: the daemon is up and nothing is held.
    let firing: Vec<_> = alerts.iter().filter(|(_, state)| state == "firing").map(|(name, _)| name.as_str()).collect();
    assert_eq!(firing, ["CloudShellLdapSyncRunsFailing"], "{answer}");
    for quiet in ["CloudShellLdapSyncDown", "CloudShellLdapSyncHeld"] {
        assert!(alerts.iter().all(|(name, _)| name != quiet), "{quiet}: {answer}");
    }
    assert!(daemon.log().contains("cloudshell unavailable"), "the login was refused: {}", daemon.log());
}
