//! The daily budgets end to end: the real binary, a real slapd and the simulator. Deactivations
//! (`sync.leavers.max_per_day`) and removals from CloudShell groups (`sync.max_removals_per_day`) spread over
//! several runs, each under its per-run limit, are held by the run that would take the last 24 hours past the
//! budget; the report and the status say what is left; rows older than 24 hours do not count.

mod common;

use std::path::{Path, PathBuf};

use chrono::{SecondsFormat, Utc};
use cloudshell_ldap_sync::state::db::{Action, AuditRow, Database, Owner};
use common::{Directory, Env, GROUPS, PEOPLE, Stack};
use serde_json::{Value, json};

/// `Team`: u01..u10.
fn directory() -> Directory {
    let mut d = Directory::new();
    let team: Vec<String> = (1..=10).map(|n| d.user(&format!("u{n:02}"))).collect();
    d.group("Team", &team);
    d
}

/// Deactivations: per run at most 2 and no percentage, so that only `max_per_day = 3` can hold.
const LEAVERS: &str = "action = \"deactivate\"\nmax_per_run = 2\nmax_percent = 100\nmax_per_day = 3\n\
                       max_percent_per_day = 100";

/// `Team` feeds `Lab Users`; removals per run at most 2, so that only `max_removals_per_day = 3` can hold.
const REMOVALS: &str = "remove_from_groups = true\nmax_removals_per_run = 2\nmax_removals_per_day = 3\n\n\
                        [[sync.mapping]]\ndirectory_group = \"Team\"\ncloudshell_groups = [\"Lab Users\"]\n";

impl Env {
    fn start() -> Env {
        Env(Stack::start(&directory(), |_| {}))
    }

    fn state(&self) -> PathBuf {
        self.files.path("state")
    }

    /// A config syncing `Team` with `sync_extra` in `[sync]`, `leavers` in `[sync.leavers]` and a state
    /// directory. The shrink guard is off, so that the budgets are what holds.
    fn config(&self, sync_extra: &str, leavers: &str) -> PathBuf {
        let sections =
            format!("[sync.leavers]\n{leavers}\n\n[monitor]\nstate_directory = \"{}\"\n", self.state().display());
        let sync = format!("max_shrink_percent = 100\n{sync_extra}");
        self.files.config(&self.slapd.url(), &self.sim.url(), &["Team"], &sync, &sections)
    }

    fn leave(&self, user: &str) {
        self.slapd.modify(&format!(
            "dn: cn=Team,{GROUPS}\nchangetype: modify\ndelete: member\nmember: uid={user},{PEOPLE}\n\n"
        ));
    }

    async fn active(&self, username: &str) -> bool {
        self.sim.is_active(username).await
    }

    fn status(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.state().join("status.json")).unwrap()).unwrap()
    }

    /// Appends `deactivated` rows `hours` ago to the audit trail, through the library.
    fn deactivated_ago(&self, config: &Path, hours: i64, count: usize) {
        let owner = Owner::of(&cloudshell_ldap_sync::config::load(config).unwrap());
        let mut db = Database::open(&self.state(), &owner).unwrap();
        let at = (Utc::now() - chrono::Duration::hours(hours)).to_rfc3339_opts(SecondsFormat::Secs, true);
        let rows: Vec<AuditRow> = (0..count)
            .map(|n| AuditRow {
                run_id: "earlier".into(),
                at: at.clone(),
                action: Action::Deactivated,
                username: Some(format!("old{n}")),
                group: None,
                reason: "left every configured group".into(),
                result: "ok".into(),
            })
            .collect();
        db.record(&rows).unwrap();
    }
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array().unwrap_or_else(|| panic!("not a list: {v}")).iter().map(|s| s.as_str().unwrap()).collect()
}

#[tokio::test]
async fn deactivations_over_several_runs_are_held_by_the_run_that_would_pass_max_per_day() {
    let env = Env::start();
    let config = env.config("", LEAVERS);
    assert_eq!(common::sync_json(&config, &[]).0, 0, "every member managed");

    // Two runs within the budget: 2, then 1 (3 = max_per_day): deactivated.
    env.leave("u01");
    env.leave("u02");
    let (code, report, stderr) = common::sync_json(&config, &[]);
    assert_eq!(code, 0, "{report}\n{stderr}");
    assert_eq!(strings(&report["leavers"]["deactivated"]), ["u01", "u02"]);
    let budget = &report["budgets"]["deactivations"];
    assert_eq!(
        (&budget["last_24h"], &budget["limit"], &budget["left"], &budget["by"]),
        (&json!(2), &json!(3), &json!(1), &json!("sync.leavers.max_per_day")),
        "{report}"
    );
    env.leave("u03");
    let (code, report, _) = common::sync_json(&config, &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(strings(&report["leavers"]["deactivated"]), ["u03"], "exactly the budget: the positive control");
    assert!(!env.active("u03").await);
    assert_eq!(report["budgets"]["deactivations"]["left"], 0);

    // The third run's one leaver would make 4 in 24 hours: held, though one is under max_per_run.
    env.leave("u04");
    let (code, report, stderr) = common::sync_json(&config, &[]);
    assert_eq!(code, 4, "{report}\n{stderr}");
    let leavers = &report["leavers"];
    assert_eq!((&leavers["status"], &leavers["held"]), (&json!("held"), &json!(true)));
    let held_by = leavers["held_by"].as_str().unwrap();
    assert_eq!(
        held_by,
        "1 to deactivate, with 3 deactivated in the last 24 hours more than sync.leavers.max_per_day allows (3)",
        "{report}"
    );
    assert!(strings(&leavers["deactivated"]).is_empty());
    assert!(env.active("u04").await, "held: still active");
    assert!(stderr.contains("deactivations held") && stderr.contains("max_per_day"), "{stderr}");

    // The status file and the status command say what is left.
    let status = env.status();
    assert_eq!(status["last_run"]["budgets"]["deactivations"]["left"], 0, "{status}");
    assert_eq!(status["last_run"]["budgets"]["deactivations"]["last_24h"], 3, "{status}");
    let out = common::cli(&["status", "--config", config.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("daily budgets: deactivations 0 of 3 left (3 in the last 24 h; sync.leavers.max_per_day, "),
        "{text}"
    );
    // The audit trail names the key too.
    let history = common::cli(&["history", "--json", "--config", config.to_str().unwrap()]);
    let history = String::from_utf8_lossy(&history.stdout);
    assert!(history.contains("more than sync.leavers.max_per_day allows (3)"), "{history}");
}

#[tokio::test]
async fn deactivations_older_than_24_hours_do_not_count_and_those_within_do() {
    let env = Env::start();
    let config = env.config("", LEAVERS);
    assert_eq!(common::sync_json(&config, &[]).0, 0);
    // Three a little more than a day ago: out of the window.
    env.deactivated_ago(&config, 25, 3);
    env.leave("u01");
    let (code, report, stderr) = common::sync_json(&config, &[]);
    assert_eq!(code, 0, "{report}\n{stderr}");
    assert_eq!(strings(&report["leavers"]["deactivated"]), ["u01"], "the old rows do not count");
    assert_eq!(report["budgets"]["deactivations"]["last_24h"], 1, "{report}");
    // Two a little less than a day ago: 1 + 2 = the budget, so the next leaver is held.
    env.deactivated_ago(&config, 23, 2);
    env.leave("u02");
    let (code, report, _) = common::sync_json(&config, &[]);
    assert_eq!(code, 4, "{report}");
    let held_by = report["leavers"]["held_by"].as_str().unwrap();
    assert!(
        held_by.contains("with 3 deactivated in the last 24 hours") && held_by.contains("max_per_day"),
        "{held_by}"
    );
    assert!(env.active("u02").await);
}

#[tokio::test]
async fn the_daily_percentage_is_of_the_managed_users_active_in_cloudshell() {
    let env = Env::start();
    // 20 % of the 10 managed users active: 2 a day.
    let leavers = "action = \"deactivate\"\nmax_percent = 100\nmax_per_day = 100\nmax_percent_per_day = 20";
    let config = env.config("", leavers);
    assert_eq!(common::sync_json(&config, &[]).0, 0);
    env.leave("u01");
    env.leave("u02");
    let (code, report, _) = common::sync_json(&config, &[]);
    assert_eq!(code, 0, "2 of 10 is 20 %: {report}");
    let budget = &report["budgets"]["deactivations"];
    // After the run, 8 managed users are active: 20 % of them is 1, and 2 are used.
    assert_eq!((&budget["managed_active"], &budget["limit"], &budget["left"]), (&json!(8), &json!(1), &json!(0)));
    assert_eq!(budget["by"], "sync.leavers.max_percent_per_day");
    env.leave("u03");
    let (code, report, _) = common::sync_json(&config, &[]);
    assert_eq!(code, 4, "{report}");
    let held_by = report["leavers"]["held_by"].as_str().unwrap();
    assert!(held_by.contains("sync.leavers.max_percent_per_day allows (1)"), "{held_by}");
}

#[tokio::test]
async fn removals_over_several_runs_are_held_by_the_run_that_would_pass_max_removals_per_day() {
    let env = Env::start();
    let config = env.config(REMOVALS, "action = \"report\"");
    let (code, report, _) = common::sync_json(&config, &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(env.sim.group_members("Lab Users").await.len(), 10, "{report}");

    env.leave("u01");
    env.leave("u02");
    let (code, report, stderr) = common::sync_json(&config, &[]);
    assert_eq!(code, 0, "{report}\n{stderr}");
    let removals = &report["budgets"]["removals"];
    assert_eq!((&removals["last_24h"], &removals["left"]), (&json!(2), &json!(1)), "{report}");
    env.leave("u03");
    let (code, report, _) = common::sync_json(&config, &[]);
    assert_eq!(code, 0, "3 = max_removals_per_day: the positive control: {report}");
    assert!(!env.sim.group_members("Lab Users").await.contains(&"u03".to_string()));

    env.leave("u04");
    let (code, report, stderr) = common::sync_json(&config, &[]);
    assert_eq!(code, 4, "{report}\n{stderr}");
    assert_eq!(
        report["removals_held"],
        json!({"planned": 1, "limit": 3, "by": "sync.max_removals_per_day", "last_24h": 3}),
        "{report}"
    );
    let lab = &report["memberships"][0];
    assert_eq!((&lab["status"], &lab["held_removals"]), (&json!("held"), &json!(["u04"])), "{lab}");
    assert!(env.sim.group_members("Lab Users").await.contains(&"u04".to_string()), "held: still a member");
    assert!(stderr.contains("membership removals held") && stderr.contains("max_removals_per_day"), "{stderr}");
    assert_eq!(env.status()["last_run"]["budgets"]["removals"]["left"], 0);
    let out = common::cli(&["sync", "--config", config.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("removals held: 1 planned, with 3 in the last 24 hours more than sync.max_removals_per_day = 3"),
        "{text}"
    );
    assert!(text.contains("daily budgets: ") && text.contains("removals from CloudShell groups 0 of 3 left"), "{text}");
}
