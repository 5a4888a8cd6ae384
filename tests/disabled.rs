//! Disabled directory accounts, end to end: the real binary, a real slapd holding accounts marked disabled the
//! way Active Directory marks them (`userAccountControl`), and the simulator, whose group import takes every
//! direct member as CloudShell's does. `import_then_deactivate` (the default with a state directory) imports
//! by group name and deactivates the disabled accounts; `per_user` imports member by member.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::{Directory, Env, PEOPLE, Stack};
use serde_json::{Value, json};

const ENABLED: usize = 500;
const DISABLED: usize = 50;

/// `Staff`: staff000..staff499 enabled and off00..off49 disabled. `Team`: alice and dis (disabled).
fn directory() -> Directory {
    let mut d = Directory::new();
    let mut staff: Vec<String> = (0..ENABLED).map(|n| d.user(&format!("staff{n:03}"))).collect();
    staff.extend((0..DISABLED).map(|n| d.disabled_user(&format!("off{n:02}"))));
    d.group("Staff", &staff);
    let team = vec![d.user("alice"), d.disabled_user("dis")];
    d.group("Team", &team);
    d
}

impl Env {
    fn start() -> Env {
        Env(Stack::start(&directory(), |_| {}))
    }

    fn state(&self) -> PathBuf {
        self.files.path("state")
    }

    /// A config syncing `groups` with `sync_extra` in `[sync]` and a state directory.
    fn config(&self, groups: &[&str], sync_extra: &str) -> PathBuf {
        // The daily percentage raised: 20 % of Team's one enabled member is none, and a dry run sees Staff's
        // members before their import creates them.
        let sections = format!(
            "[sync.leavers]\nmax_percent_per_day = 100\n\n[monitor]\nstate_directory = \"{}\"\n",
            self.state().display()
        );
        self.files.config(&self.slapd.url(), &self.sim.url(), groups, sync_extra, &sections)
    }

    /// CloudShell's users: username → active.
    async fn users(&self) -> BTreeMap<String, bool> {
        let state = self.sim.state().await;
        let users = state["users"].as_array().unwrap().iter();
        users.map(|u| (u["Username"].as_str().unwrap().to_string(), u["IsActive"] == json!(true))).collect()
    }

    fn set_disabled(&self, uid: &str, disabled: bool) {
        let flag = if disabled { 514 } else { 512 };
        self.slapd.modify(&format!(
            "dn: uid={uid},{PEOPLE}\nchangetype: modify\nreplace: userAccountControl\nuserAccountControl: {flag}\n\n"
        ));
    }

    fn managed(&self) -> Value {
        // As users.json wrote them: the same serialisation.
        let db = cloudshell_ldap_sync::state::db::Database::open_read_only(&self.state()).unwrap().expect("state.db");
        serde_json::to_value(db.load_managed().unwrap()).unwrap()
    }
}

/// (import_group, import_user, edit_user) calls of a run.
fn calls(report: &Value) -> (u64, u64, u64) {
    let c = &report["api_calls"];
    (c["import_group"].as_u64().unwrap(), c["import_user"].as_u64().unwrap(), c["edit_user"].as_u64().unwrap())
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array().unwrap_or_else(|| panic!("not a list: {v}")).iter().map(|s| s.as_str().unwrap()).collect()
}

#[tokio::test]
async fn a_group_with_disabled_accounts_is_imported_by_name_and_they_are_deactivated_then_reactivated() {
    let env = Env::start();
    let config = env.config(&["Staff"], "");

    let (code, report, stderr) = common::sync_json(&config, &[]);

    assert_eq!(code, 0, "{report}\n{stderr}");
    assert_eq!(calls(&report), (1, 0, DISABLED as u64), "one group import and one deactivation each: {report}");
    let users = env.users().await;
    assert_eq!(users.len(), 1 + ENABLED + DISABLED, "admin, the enabled and the disabled");
    assert!((0..ENABLED).all(|n| users[&format!("staff{n:03}")]), "every enabled member active");
    assert!((0..DISABLED).all(|n| !users[&format!("off{n:02}")]), "every disabled one inactive");
    let step = &report["disabled_accounts"];
    assert_eq!((step["mode"].as_str(), step["status"].as_str()), (Some("import_then_deactivate"), Some("ok")));
    assert_eq!(strings(&step["deactivated"]).len(), DISABLED, "{step}");
    assert_eq!(report["totals"]["disabled_deactivated"], DISABLED);
    assert_eq!(report["totals"]["imported"], ENABLED, "the disabled are not counted as imported");
    let deactivated =
        stderr.lines().filter(|l| l.contains("user deactivated") && l.contains("reason=\"disabled in the directory\""));
    assert_eq!(deactivated.count(), DISABLED, "{stderr}");
    let managed = env.managed();
    assert_eq!(managed["users"]["off07"]["disabled_in_directory"], true, "{}", managed["users"]["off07"]);

    // Nothing changed: no call.
    let (code, report, _) = common::sync_json(&config, &[]);
    assert_eq!((code, calls(&report)), (0, (0, 0, 0)), "{report}");
    assert_eq!(report["leavers"]["leavers"], json!([]), "a disabled account is not a leaver: {}", report["leavers"]);

    // Enabled again in the directory: reactivated on the next run.
    env.set_disabled("off07", false);
    let (code, report, stderr) = common::sync_json(&config, &[]);
    assert_eq!(code, 0, "{report}\n{stderr}");
    assert_eq!(strings(&report["disabled_accounts"]["reactivated"]), ["off07"]);
    assert!(env.users().await["off07"]);
    assert!(
        stderr.lines().any(|l| l.contains("user reactivated") && l.contains("reason=\"enabled in the directory\"")),
        "{stderr}"
    );
    assert_eq!(env.managed()["users"]["off07"]["disabled_in_directory"], Value::Null, "an ordinary member again");
}

#[tokio::test]
async fn a_disabled_account_already_active_in_cloudshell_is_deactivated_only_with_import_then_deactivate() {
    let env = Env::start();
    // Imported by hand before this program ever ran.
    env.sim.add_directory_users(&["dis"], &[], false).await;

    let per_user = env.config(&["Team"], "disabled_accounts = \"per_user\"");
    let (code, report, stderr) = common::sync_json(&per_user, &[]);
    assert_eq!(code, 0, "{report}\n{stderr}");
    assert_eq!(calls(&report), (0, 1, 0), "alice alone, member by member: {report}");
    assert!(stderr.contains("group holds disabled accounts, importing its members one by one"), "{stderr}");
    assert!(report.get("disabled_accounts").is_none(), "{report}");
    assert!(env.users().await["dis"], "per_user leaves it as it is");

    let default = env.config(&["Team"], "");
    let (code, report, _) = common::sync_json(&default, &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(calls(&report), (0, 0, 1), "{report}");
    assert_eq!(strings(&report["disabled_accounts"]["deactivated"]), ["dis"]);
    assert!(!env.users().await["dis"]);
    let dis = &env.managed()["users"]["dis"];
    assert_eq!((dis["deactivated"].as_bool(), dis["disabled_in_directory"].as_bool()), (Some(true), Some(true)));
}

#[tokio::test]
async fn a_dry_run_shows_the_group_import_and_the_deactivations_it_would_make() {
    let env = Env::start();
    env.sim.add_directory_users(&["dis"], &[], false).await;
    let config = env.config(&["Staff", "Team"], "");
    let (code, report, stderr) = common::sync_json(&config, &["--dry-run"]);
    assert_eq!(code, 0, "{report}\n{stderr}");
    assert_eq!(calls(&report), (0, 0, 0));
    let planned = strings(&report["disabled_accounts"]["planned"]);
    assert_eq!(planned.len(), DISABLED + 1, "the 50 the Staff import would create, and dis: {planned:?}");
    assert!(planned.contains(&"dis") && planned.contains(&"off49"), "{planned:?}");
    assert_eq!(report["disabled_accounts"]["status"], "planned");
    let staff = common::report_group(&report, "Staff");
    assert_eq!((staff["status"].as_str(), staff["missing"].as_u64()), (Some("planned"), Some(ENABLED as u64)));
    let out = common::cli(&["sync", "--dry-run", "--config", config.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("disabled accounts (import_then_deactivate) planned") && text.contains("would deactivate: dis"),
        "{text}"
    );
    assert_eq!(env.users().await.len(), 2, "nothing written");
}

#[tokio::test]
async fn more_deactivations_than_the_cap_hold_them_and_the_imports_stand() {
    let env = Env::start();
    let config = env.config(&["Staff"], "max_disabled_deactivations_per_run = 10");
    let (code, report, stderr) = common::sync_json(&config, &[]);
    assert_eq!(code, 4, "{report}\n{stderr}");
    assert_eq!(calls(&report).2, 0, "nobody deactivated");
    let step = &report["disabled_accounts"];
    assert_eq!(step["status"], "held");
    assert!(step["held_by"].as_str().unwrap().contains("50 disabled accounts to deactivate"), "{step}");
    assert_eq!(common::report_group(&report, "Staff")["imported"], ENABLED, "the imports stand");
    assert!(stderr.contains("deactivations of disabled accounts held"), "{stderr}");
}

#[tokio::test]
async fn a_failing_deactivation_makes_the_run_partial_and_the_imports_stand() {
    let env = Env::start();
    let config = env.config(&["Team"], "");
    // The user update answers 503 to the first attempt and to each of the 3 retries.
    env.sim
        .set_faults(json!({"fail": {"count": 4, "status": 503, "method": "PUT", "path_contains": "/api/v1/users/"}}))
        .await;
    let (code, report, stderr) = common::sync_json(&config, &[]);
    assert_eq!(code, 3, "{report}\n{stderr}");
    let step = &report["disabled_accounts"];
    assert_eq!(step["status"], "failed", "{step}");
    assert_eq!(step["failures"][0]["username"], "dis");
    assert!(step["failures"][0]["reason"].as_str().unwrap().contains("deactivation failed"), "{step}");
    let users = env.users().await;
    assert!(users["alice"], "the enabled import stands");
    assert!(users["dis"], "imported with Team, and still active");

    // The fault spent, the next run deactivates it.
    let (code, report, _) = common::sync_json(&config, &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(strings(&report["disabled_accounts"]["deactivated"]), ["dis"]);
}

#[tokio::test]
async fn without_a_state_directory_groups_with_disabled_accounts_are_imported_member_by_member() {
    let env = Env::start();
    let config = env.files.config(&env.slapd.url(), &env.sim.url(), &["Team"], "", "");
    let (code, report, stderr) = common::sync_json(&config, &[]);
    assert_eq!(code, 0, "{report}\n{stderr}");
    assert_eq!(calls(&report), (0, 1, 0), "{report}");
    assert!(stderr.contains("no state directory: groups holding disabled accounts are imported member by member"));
    assert!(!env.users().await.contains_key("dis"));
}
