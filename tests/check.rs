//! `check` against a real slapd and the simulator, for configurations that are valid and would still import
//! nobody (a wrong username attribute, a base DN that does not exist, a group nobody is in). Also the one
//! `user skipped` line a run logs for every entry it cannot use. The real binary.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{BASE_DN, Directory, Env, PEOPLE, Stack};

/// `Team`: alice and dis (disabled the way Active Directory marks it). `Empty`: nobody.
fn directory() -> Directory {
    let mut d = Directory::new();
    let team = vec![d.user("alice"), d.disabled_user("dis")];
    d.group("Team", &team);
    d.group("Empty", &[]);
    d
}

impl Env {
    fn start(directory: &Directory) -> Env {
        Env(Stack::start(directory, |_| {}))
    }

    /// A config for `groups`, with `ldap_extra` lines in `[ldap]` and `sections` after `[sync]`.
    fn config_with(&self, groups: &[&str], ldap_extra: &str, sections: &str) -> PathBuf {
        let path = self.files.config(&self.slapd.url(), &self.sim.url(), groups, "", sections);
        let text = std::fs::read_to_string(&path).unwrap();
        // `timeout = "5s"` is the [ldap] table's (the [cloudshell] one is 10s).
        assert!(text.contains("timeout = \"5s\"\n"), "{text}");
        std::fs::write(&path, text.replacen("timeout = \"5s\"\n", &format!("timeout = \"5s\"\n{ldap_extra}\n"), 1))
            .unwrap();
        path
    }
}

fn check(config: &Path) -> (Option<i32>, String) {
    let out: Output = common::cli(&["check", "--config", config.to_str().unwrap()]);
    let text =
        format!("{}\n--- stderr\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text)
}

#[tokio::test]
async fn a_username_attribute_no_entry_carries_fails_check_with_the_attribute_meant() {
    let env = Env::start(&directory());
    // Active Directory's attribute against OpenLDAP: before, `0 users`, every group `0 members`, exit 0.
    let config = env.config_with(&["Team"], "username_attribute = \"sAMAccountName\"", "");
    let (code, text) = check(&config);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("no user entry carries ldap.username_attribute \"sAMAccountName\""), "{text}");
    assert!(text.contains("did you mean uid?"), "{text}");
    assert!(text.contains("cn, ") && text.contains("objectClass"), "the attributes the entries have: {text}");

    let right = env.config_with(&["Team"], "username_attribute = \"uid\"", "");
    let (code, text) = check(&right);
    assert_eq!(code, Some(0), "{text}");
}

#[tokio::test]
async fn a_user_filter_nothing_matches_fails_check() {
    let env = Env::start(&directory());
    let config = env.config_with(&["Team"], "user_filter = \"(&(objectCategory=person)(objectClass=user))\"", "");
    let (code, text) = check(&config);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("matches ldap.user_filter") && text.contains("nobody would be imported"), "{text}");
}

#[tokio::test]
async fn a_base_dn_that_does_not_exist_fails_check_naming_ldap_base_dn_once() {
    let env = Env::start(&directory());
    let wrong = format!("ou=staff,{BASE_DN}");
    let path = env.config_with(&["Team", "Empty"], "", "");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(&format!("base_dn = \"{BASE_DN}\""), &format!("base_dn = \"{wrong}\""));
    std::fs::write(&path, text).unwrap();
    let (code, text) = check(&path);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains(&format!("ldap.base_dn \"{wrong}\" does not exist")), "{text}");
    assert!(text.contains(&format!("the nearest entry that exists is \"{BASE_DN}\"")), "{text}");
    // Before: `0 users`, then noSuchObject once per group.
    assert_eq!(text.matches("noSuchObject").count(), 1, "{text}");
    assert!(!text.contains("group \""), "no group can be read under a base that is not there: {text}");
}

#[tokio::test]
async fn a_group_nobody_is_in_fails_check_while_the_directory_holds_users() {
    let env = Env::start(&directory());
    let config = env.config_with(&["Team", "Empty"], "", "");
    let (code, text) = check(&config);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("group \"Team\": 1 members (0 nested groups, 1 disabled left out)"), "{text}");
    let empty = text.lines().find(|l| l.contains("group \"Empty\"")).unwrap_or_else(|| panic!("{text}"));
    assert!(empty.contains("0 members") && empty.contains("FAILED: no user entry is in it"), "{empty}");
    assert!(text.contains("1 problem(s) found"), "{text}");
}

#[tokio::test]
async fn three_hundred_entries_without_a_username_are_one_user_skipped_line() {
    let mut d = directory();
    for n in 0..300 {
        d.raw(&format!("dn: cn=nameless{n:03},{PEOPLE}\nobjectClass: inetOrgPerson\ncn: nameless{n:03}\nsn: x\n\n"));
    }
    let env = Env::start(&d);
    let config = env.config_with(&["Team"], "", "");
    let (code, report, stderr) = common::sync_json(&config, &["--dry-run"]);
    assert_eq!(code, 0, "{report}\n{stderr}");
    let skipped: Vec<&str> = stderr.lines().filter(|l| l.contains("user skipped")).collect();
    assert_eq!(skipped.len(), 1, "one line, not one per entry: {stderr}");
    let line = skipped[0];
    assert!(line.contains("count=300") && line.contains("attribute=uid"), "{line}");
    assert!(line.contains("cn=nameless000") && line.contains("no username attribute"), "{line}");
    assert_eq!(line.matches("cn=nameless").count(), 5, "the first 5 as examples: {line}");
    // Some users are usable: `check` has nothing against the configuration.
    assert_eq!(check(&config).0, Some(0));
}
