//! Destructive actions only on what was read and understood, end to end (the real binary, slapd restarted with
//! changed ACLs, the simulator): a member this program knew that the directory hides now is never a leaver and
//! never removed; a change to what identifies a user holds every deactivation and removal until accepted; a
//! second configuration never works on another's state. Each with a positive control: the real leaver is still
//! deactivated and removed once the rule no longer holds.

mod common;

use std::path::PathBuf;

use common::{Directory, Env, GROUPS, PEOPLE, Stack};
use serde_json::{Value, json};

/// `Team`: alice, bob and the nested group `Inner` (carol, dave). `Other`: erin. frank is in no group yet.
fn directory() -> Directory {
    let mut d = Directory::new();
    let [alice, bob, carol, dave, erin] = ["alice", "bob", "carol", "dave", "erin"].map(|u| d.user(u));
    d.user("frank");
    let inner = d.group("Inner", &[carol, dave]);
    d.group("Team", &[alice, bob, inner]);
    d.group("Other", &[erin]);
    d
}

impl Env {
    fn start() -> Env {
        Env(Stack::start(&directory(), |_| {}))
    }

    fn state(&self) -> PathBuf {
        self.files.path("state")
    }

    /// Both groups; `Team` placed in `Lab Users` with removals on; leavers deactivated. Every limit raised (the
    /// shrink guard's too), so that the rule under test is what holds. `ldap_extra` goes into `[ldap]`.
    fn config_named(&self, name: &str, groups: &[&str], ldap_extra: &str) -> PathBuf {
        let sync = "max_shrink_percent = 100\nremove_from_groups = true\nmax_removals_per_run = 100\n\n\
                    [[sync.mapping]]\ndirectory_group = \"Team\"\ncloudshell_groups = [\"Lab Users\"]\n";
        let sections = format!(
            "[sync.leavers]\naction = \"deactivate\"\nmax_percent = 100\nmax_per_run = 100\nmax_percent_per_day = 100\n\n\
             [monitor]\nstate_directory = \"{}\"\n",
            self.state().display()
        );
        let path = self.files.config(&self.slapd.url(), &self.sim.url(), groups, sync, &sections);
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("timeout = \"5s\"\n", &format!("timeout = \"5s\"\n{ldap_extra}\n"));
        let named = self.files.path(name);
        std::fs::write(&named, text).unwrap();
        named
    }

    fn config(&self) -> PathBuf {
        self.config_named("config.toml", &["Team", "Other"], "")
    }

    fn member(&self, change: &str, group: &str, dn: &str) {
        self.slapd.modify(&format!("dn: cn={group},{GROUPS}\nchangetype: modify\n{change}: member\nmember: {dn}\n\n"));
    }

    async fn active(&self, username: &str) -> bool {
        self.sim.is_active(username).await
    }

    async fn lab_users(&self) -> Vec<String> {
        self.sim.group_members("Lab Users").await
    }
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array().map(|a| a.iter().map(|s| s.as_str().unwrap()).collect()).unwrap_or_default()
}

fn user_dn(uid: &str) -> String {
    format!("uid={uid},{PEOPLE}")
}

/// The reproduction from the issue: a nested group hidden from the service account read as if its members had
/// left. Now they are unresolved: nobody deactivated, nobody removed, exit 3.
#[tokio::test]
async fn a_nested_group_hidden_from_the_service_account_makes_nobody_a_leaver_and_removes_nobody() {
    let mut env = Env::start();
    let config = env.config();
    let (code, report, _) = common::sync_json(&config, &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(env.lab_users().await, ["alice", "bob", "carol", "dave"]);

    let inner = format!("cn=Inner,{GROUPS}");
    env.0.slapd.restart_with_acl(&format!("access to dn.base=\"{inner}\" by * none"));
    let (code, report, stderr) = common::sync_json(&config, &[]);
    assert_eq!(code, 3, "{report}\n{stderr}");
    let unresolved = report["unresolved"].as_array().unwrap_or_else(|| panic!("{report}"));
    assert_eq!(unresolved.len(), 1, "{report}");
    assert_eq!((unresolved[0]["group"].as_str(), unresolved[0]["dn"].as_str()), (Some("Team"), Some(inner.as_str())));
    assert!(stderr.contains("member unresolved"), "{stderr}");
    assert_eq!(common::report_group(&report, "Team")["status"], "partial", "{report}");
    assert!(report["leavers"]["skipped"].as_str().unwrap().contains("unresolved"), "{report}");
    assert!(env.active("carol").await && env.active("dave").await, "nobody deactivated");
    assert_eq!(env.lab_users().await, ["alice", "bob", "carol", "dave"], "nobody removed");

    // The control: readable again, and Inner really taken out of Team: carol and dave are leavers now.
    env.0.slapd.restart_with_acl("");
    env.member("delete", "Team", &inner);
    let (code, report, _) = common::sync_json(&config, &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(strings(&report["leavers"]["deactivated"]), ["carol", "dave"], "{report}");
    assert_eq!(env.lab_users().await, ["alice", "bob"]);
}

/// A managed user's own entry hidden, then only its username attribute: unresolved both times. A user the
/// program never managed that cannot be read stays a warning.
#[tokio::test]
async fn a_managed_users_entry_or_username_hidden_is_unresolved_never_a_leaver() {
    let mut env = Env::start();
    let config = env.config();
    assert_eq!(common::sync_json(&config, &[]).0, 0);
    let bob = user_dn("bob");
    for rule in
        [format!("access to dn.base=\"{bob}\" by * none"), format!("access to dn.base=\"{bob}\" attrs=uid by * none")]
    {
        env.0.slapd.restart_with_acl(&rule);
        let (code, report, stderr) = common::sync_json(&config, &[]);
        assert_eq!(code, 3, "{rule}: {report}\n{stderr}");
        let unresolved = &report["unresolved"][0];
        assert_eq!(
            (unresolved["dn"].as_str(), unresolved["username"].as_str()),
            (Some(bob.as_str()), Some("bob")),
            "{report}"
        );
        assert!(env.active("bob").await, "{rule}");
        assert!(env.lab_users().await.contains(&"bob".to_string()), "{rule}");
    }

    // frank, never managed, listed in Team while hidden: a skipped member, as before; the run goes on.
    env.0.slapd.restart_with_acl("");
    env.member("add", "Team", &user_dn("frank"));
    let frank = user_dn("frank");
    env.0.slapd.restart_with_acl(&format!("access to dn.base=\"{frank}\" by * none"));
    // The control: bob really leaves; with nothing unresolved he is deactivated and removed.
    env.member("delete", "Team", &bob);
    let (code, report, stderr) = common::sync_json(&config, &[]);
    assert_eq!(code, 0, "{report}\n{stderr}");
    assert!(report.get("unresolved").is_none(), "{report}");
    assert!(stderr.contains("member skipped"), "{stderr}");
    assert_eq!(strings(&report["leavers"]["deactivated"]), ["bob"], "{report}");
    assert!(!env.lab_users().await.contains(&"bob".to_string()));
}

/// A change to what identifies a user holds every deactivation and removal (the imports run) until accepted;
/// then the records are matched again and the real leaver is deactivated.
#[tokio::test]
async fn a_changed_identity_setting_holds_deactivations_and_removals_until_accepted() {
    let env = Env::start();
    let config = env.config();
    assert_eq!(common::sync_json(&config, &[]).0, 0);
    env.member("delete", "Team", &user_dn("bob"));
    env.member("add", "Other", &user_dn("frank"));
    let changed =
        env.config_named("config.toml", &["Team", "Other"], "user_filter = \"(&(objectClass=inetOrgPerson)(uid=*))\"");

    let (code, report, stderr) = common::sync_json(&changed, &[]);
    assert_eq!(code, 4, "{report}\n{stderr}");
    let said = strings(&report["identity_changed"]).join(" ");
    assert!(said.contains("user filter was"), "{report}");
    assert!(stderr.contains("identity changed"), "{stderr}");
    assert!(env.active("bob").await, "not deactivated");
    assert!(env.lab_users().await.contains(&"bob".to_string()), "not removed");
    assert!(env.sim.usernames().await.contains(&"frank".to_string()), "imports still run");
    assert!(report["leavers"]["skipped"].as_str().unwrap().contains("accept-identity"), "{report}");

    let out = common::cli(&["accept-identity", "--config", changed.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("accepted: user filter was"), "{out:?}");
    let (code, report, stderr) = common::sync_json(&changed, &[]);
    assert_eq!(code, 0, "{report}\n{stderr}");
    assert_eq!(report["rematch"]["no_longer_managed"], json!(["bob"]), "bob is a member of nothing now: {report}");
    // bob was matched to no member, so he is no longer managed: never deactivated by the match itself.
    assert!(env.active("bob").await);
    // The control: a real leaver after the acceptance is deactivated and removed.
    env.member("delete", "Team", &user_dn("alice"));
    let (code, report, _) = common::sync_json(&changed, &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(strings(&report["leavers"]["deactivated"]), ["alice"], "{report}");
    assert!(!env.lab_users().await.contains(&"alice".to_string()));
    let out = common::cli(&["accept-identity", "--config", changed.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to accept"), "{out:?}");
}

/// Two configurations on one state directory: the second is refused, naming both, until it is accepted (the
/// first configuration moved), after which the first is refused.
#[tokio::test]
async fn a_second_configuration_on_the_same_state_is_refused_naming_both() {
    let env = Env::start();
    let first = env.config();
    assert_eq!(common::sync_json(&first, &[]).0, 0);
    let second = env.config_named("other.toml", &["Other"], "");
    let (code, report, _) = common::sync_json(&second, &[]);
    assert_eq!(code, 1, "{report}");
    let error = report["error"].as_str().unwrap();
    assert!(
        error.contains("config.toml") && error.contains("other.toml") && error.contains("accept-identity"),
        "{error}"
    );
    assert!(env.active("alice").await, "the first configuration's users are not the second's leavers");
    assert_eq!(common::sync_json(&first, &[]).0, 0, "the owner runs as before");

    assert!(common::cli(&["accept-identity", "--config", second.to_str().unwrap()]).status.success());
    let (code, report, _) = common::sync_json(&second, &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(common::sync_json(&first, &[]).0, 1, "now the first is the other configuration");
}

/// Two hosts, each with its own state, are not supported: the first deactivates a user who moved to the
/// second's groups as its leaver. The second cannot undo what it did not do, but says so loudly every run.
#[tokio::test]
async fn a_member_made_inactive_by_another_host_is_reported_loudly_every_run() {
    let env = Env::start();
    let config = |name: &str, group: &str| {
        let sections = format!(
            "[sync.leavers]\naction = \"deactivate\"\nmax_percent = 100\nmax_percent_per_day = 100\n\n\
             [monitor]\nstate_directory = \"{}\"\n",
            env.files.path(&format!("state-{name}")).display()
        );
        let path = env.files.config(&env.slapd.url(), &env.sim.url(), &[group], "max_shrink_percent = 100", &sections);
        let named = env.files.path(&format!("{name}.toml"));
        std::fs::rename(&path, &named).unwrap();
        named
    };
    let (a, b) = (config("a", "Team"), config("b", "Other"));
    assert_eq!(common::sync_json(&a, &[]).0, 0);
    let (code, report, _) = common::sync_json(&b, &[]);
    assert_eq!(code, 0, "{report}");
    assert!(report.get("inactive_members").is_none(), "the control: every member active: {report}");

    env.member("delete", "Team", &user_dn("alice"));
    env.member("add", "Other", &user_dn("alice"));
    let (_, report, _) = common::sync_json(&a, &[]);
    assert_eq!(strings(&report["leavers"]["deactivated"]), ["alice"], "host a's leaver: {report}");
    for _ in 0..2 {
        let (code, report, stderr) = common::sync_json(&b, &[]);
        assert_eq!(code, 0, "{report}");
        assert_eq!(report["inactive_members"], json!(["alice"]), "{report}");
        assert!(stderr.contains("members inactive in cloudshell, not deactivated by this program"), "{stderr}");
    }
}

/// The reproduction from the issue: `username_attribute` changed. Every deactivation and removal is held,
/// naming the setting (the control for the same hold is the user filter test above).
#[tokio::test]
async fn a_changed_username_attribute_holds_every_deactivation_and_removal() {
    let env = Env::start();
    assert_eq!(common::sync_json(&env.config(), &[]).0, 0);
    env.member("delete", "Team", &user_dn("bob"));
    // cn holds the same names as uid in this directory, so the imports have nothing to do.
    let changed = env.config_named("config.toml", &["Team", "Other"], "username_attribute = \"cn\"");
    let (code, report, _) = common::sync_json(&changed, &[]);
    assert_eq!(code, 4, "{report}");
    assert_eq!(report["identity_changed"], json!([r#"username attribute was "uid" and is now "cn""#]), "{report}");
    assert!(env.active("bob").await && env.lab_users().await.contains(&"bob".to_string()));
    let lab = report["memberships"][0]["additions_only"].as_str().unwrap_or_default();
    assert!(lab.contains("accept-identity"), "{report}");
}
