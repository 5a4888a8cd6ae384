//! Usernames end to end: the real binary, a real slapd and the simulator. A name written in another Unicode
//! normalisation is the same user; an entry whose username attribute holds several names is ambiguous and
//! never acted on by name. Each test has a control: a real leaver is still deactivated in the same run.

mod common;

use std::path::PathBuf;

use common::{Directory, Env, GROUPS, PEOPLE, Stack};
use serde_json::{Value, json};

/// `josé` as one precomposed `é` (NFC) and as `e` with a combining acute accent (NFD).
const JOSE_NFC: &str = "jos\u{e9}";
const JOSE_NFD: &str = "jose\u{301}";

/// The leaver rules on their own: every leaver deactivated at once, no limit, no shrink guard.
const DEACTIVATE: &str = "action = \"deactivate\"\nmax_percent = 100\nmax_per_run = 100\nmax_percent_per_day = 100";

impl Env {
    /// `Team`: alice, bob, josé (named by `cn`, so that its `uid` can be rewritten), carol.
    fn start_names() -> Env {
        let mut d = Directory::new();
        let [alice, bob, carol] = ["alice", "bob", "carol"].map(|u| d.user(u));
        let jose = d.user_at(&format!("cn=Jose Test,{PEOPLE}"), JOSE_NFC, "Jose Test");
        d.user("dave");
        d.group("Team", &[alice, bob, jose, carol]);
        Env(Stack::start(&d, |_| {}))
    }

    fn names_config(&self) -> PathBuf {
        self.names_config_with("")
    }

    /// The same with `sync_keys` added to `[sync]`.
    fn names_config_with(&self, sync_keys: &str) -> PathBuf {
        let state = self.files.path("state");
        let sections =
            format!("[sync.leavers]\n{DEACTIVATE}\n\n[monitor]\nstate_directory = \"{}\"\n", state.display());
        self.files.config(
            &self.slapd.url(),
            &self.sim.url(),
            &["Team"],
            &format!("max_shrink_percent = 100\n{sync_keys}"),
            &sections,
        )
    }

    fn set_uid(&self, dn: &str, values: &[&str]) {
        let mut ldif = format!("dn: {dn}\nchangetype: modify\nreplace: uid\n");
        for v in values {
            ldif.push_str(&common::ldif_line("uid", v));
        }
        ldif.push('\n');
        self.slapd.modify(&ldif);
    }

    fn leave_team(&self, user: &str) {
        self.slapd.modify(&format!(
            "dn: cn=Team,{GROUPS}\nchangetype: modify\ndelete: member\nmember: uid={user},{PEOPLE}\n\n"
        ));
    }

    fn join_team(&self, user: &str) {
        self.slapd
            .modify(&format!("dn: cn=Team,{GROUPS}\nchangetype: modify\nadd: member\nmember: uid={user},{PEOPLE}\n\n"));
    }

    /// Each CloudShell user's `IsActive`, by username as CloudShell holds it.
    async fn activity(&self) -> Vec<(String, Value)> {
        let state = self.sim.state().await;
        let users = state["users"].as_array().unwrap();
        users.iter().map(|u| (u["Username"].as_str().unwrap().to_string(), u["IsActive"].clone())).collect()
    }

    /// CloudShell's usernames, sorted, each as CloudShell holds it.
    async fn usernames(&self) -> Vec<String> {
        let mut names = self.sim.usernames().await;
        names.sort();
        names
    }

    async fn is_active(&self, username: &str) -> bool {
        let activity = self.activity().await;
        let found = activity.iter().find(|(name, _)| name == username);
        found.unwrap_or_else(|| panic!("{username} is not in CloudShell: {activity:?}")).1 == json!(true)
    }
}

/// `Team` placed in CloudShell's `Lab Users`, and its leavers taken out of it.
const REMOVE_FROM_LAB_USERS: &str = "remove_from_groups = true\nmax_removals_per_run = 100\n\n\
                                     [[sync.mapping]]\ndirectory_group = \"Team\"\ncloudshell_groups = [\"Lab Users\"]";

fn strings(v: &Value) -> Vec<&str> {
    v.as_array().unwrap_or_else(|| panic!("not a list: {v}")).iter().map(|s| s.as_str().unwrap()).collect()
}

#[tokio::test]
async fn a_name_the_directory_now_writes_in_nfd_is_the_managed_user_cloudshell_holds_in_nfc() {
    let env = Env::start_names();
    let config = env.names_config();
    let (code, report, stderr) = common::sync_json(&config, &[]);
    assert_eq!(code, 0, "{report}\n{stderr}");
    assert_eq!(report["leavers"]["managed"], 4, "{report}");
    assert_eq!(env.usernames().await, ["admin", "alice", "bob", "carol", JOSE_NFC], "CloudShell holds josé in NFC");

    // The directory now writes josé in NFD (as a Mac does); bob leaves: the control.
    env.set_uid(&format!("cn=Jose Test,{PEOPLE}"), &[JOSE_NFD]);
    env.leave_team("bob");
    let (code, report, stderr) = common::sync_json(&config, &[]);
    assert_eq!(code, 0, "{report}\n{stderr}");
    let team = common::report_group(&report, "Team");
    assert_eq!((team["members"].as_u64(), team["missing"].as_u64()), (Some(3), Some(0)), "{team}");
    assert_eq!(report["api_calls"]["import_group"], 0, "nothing to import: {report}");
    assert_eq!(report["api_calls"]["import_user"], 0, "nothing to import: {report}");
    assert_eq!(strings(&report["leavers"]["deactivated"]), ["bob"], "the control: {report}");
    assert!(!env.is_active("bob").await);
    assert!(env.is_active(JOSE_NFC).await, "josé is not a leaver");
    assert_eq!(env.usernames().await, ["admin", "alice", "bob", "carol", JOSE_NFC], "josé not imported again");

    // And it stays so: a third run changes nothing.
    let (code, report, _) = common::sync_json(&config, &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["api_calls"]["edit_user"], 0, "{report}");
    assert!(env.is_active(JOSE_NFC).await);
}

#[tokio::test]
async fn a_user_with_two_uid_values_is_ambiguous_never_deactivated_and_never_imported_by_name() {
    let env = Env::start_names();
    let config = env.names_config_with(REMOVE_FROM_LAB_USERS);
    let (code, report, stderr) = common::sync_json(&config, &[]);
    assert_eq!(code, 0, "{report}\n{stderr}");
    assert!(env.is_active("carol").await, "carol is managed");
    assert_eq!(env.sim.group_members("Lab Users").await, ["alice", "bob", "carol", JOSE_NFC]);

    // carol's entry gains a second name, sent first; bob leaves (the control); dave joins, to be imported.
    let carol = format!("uid=carol,{PEOPLE}");
    env.set_uid(&carol, &["carol-x", "carol"]);
    env.leave_team("bob");
    env.join_team("dave");
    let (code, report, stderr) = common::sync_json(&config, &[]);
    assert_eq!(code, 3, "an ambiguous member makes the group partial: {report}\n{stderr}");
    let team = common::report_group(&report, "Team");
    let failures = team["failures"].as_array().unwrap();
    let named: Vec<&str> = failures.iter().map(|f| f["username"].as_str().unwrap()).collect();
    assert_eq!(named, ["carol-x", "carol"], "ambiguous under each name: {team}");
    let reason = failures[0]["reason"].as_str().unwrap();
    assert!(reason.contains(&carol) && reason.contains(r#"("carol-x", "carol")"#), "{reason}");
    assert!(stderr.contains("username collision"), "{stderr}");

    // Never a leaver, never imported by either name, and its group not imported by name (CloudShell would
    // take the first value); the control is deactivated and dave imported by his name.
    assert_eq!(strings(&report["leavers"]["deactivated"]), ["bob"], "{report}");
    assert!(!env.is_active("bob").await);
    assert!(env.is_active("carol").await, "carol is not deactivated");
    assert_eq!(strings(&team["imported_users"]), ["dave"], "{team}");
    assert_eq!(report["api_calls"]["import_group"], 0, "no import by group name: {report}");
    let names = env.sim.usernames().await;
    assert!(!names.iter().any(|n| n == "carol-x"), "{names:?}");
    // Never removed from the mapped group either; bob, who left, is.
    assert_eq!(env.sim.group_members("Lab Users").await, ["alice", "carol", "dave", JOSE_NFC], "{report}");
}
