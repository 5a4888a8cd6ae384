//! `check` against a real slapd and the simulator, for configurations that are valid and would still import
//! nobody (a wrong username attribute, a base DN that does not exist, a group nobody is in), and for the state
//! directory a run by hand shares with the service. Also the one `user skipped` line a run logs for every
//! entry it cannot use. The real binary.

mod common;

use std::os::unix::fs::PermissionsExt;
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

fn state_section(dir: &Path) -> String {
    format!("[monitor]\nstate_directory = \"{}\"\n", dir.display())
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

    // Outside every naming context the server holds.
    let path = env.config_with(&["Team"], "", "");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(&format!("base_dn = \"{BASE_DN}\""), "base_dn = \"dc=nowhere,dc=test\"");
    std::fs::write(&path, text).unwrap();
    let (code, text) = check(&path);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("ldap.base_dn \"dc=nowhere,dc=test\""), "{text}");
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

#[tokio::test]
async fn a_state_directory_others_can_write_fails_check_naming_it_and_chmod() {
    let env = Env::start(&directory());
    let state = env.files.path("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
    let config = env.config_with(&["Team"], "", &state_section(&state));
    let (code, text) = check(&config);
    assert_eq!(code, Some(1), "{text}");
    let line = text.lines().find(|l| l.starts_with("state directory ")).unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains(state.to_str().unwrap()) && line.contains("mode 777"), "{line}");
    assert!(line.contains(&format!("chmod go-w {}", state.display())), "{line}");

    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let (code, text) = check(&config);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains(&format!("state directory {}: ok (mode 700)", state.display())), "{text}");
}

#[tokio::test]
async fn with_the_state_directory_named_a_dry_run_plans_as_the_service_and_deactivate_passes_check() {
    let env = Env::start(&directory());
    let state = env.files.path("state");
    let sections = format!("[sync.leavers]\naction = \"deactivate\"\n\n{}", state_section(&state));
    let config = env.config_with(&["Team"], "", &sections);
    let (code, text) = check(&config);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("not created yet"), "{text}");
    // The daemon's mode: the group is imported by name and its disabled account deactivated.
    let (code, report, stderr) = common::sync_json(&config, &["--dry-run"]);
    assert_eq!(code, 0, "{report}\n{stderr}");
    assert_eq!(report["disabled_accounts"]["mode"], "import_then_deactivate", "{report}");
    assert_eq!(report["disabled_accounts"]["planned"][0], "dis", "{report}");
    assert!(!state.exists(), "a dry run creates nothing");

    // Without it (and no $STATE_DIRECTORY, as in a root shell): member by member, as before.
    let bare = env.config_with(&["Team"], "", "");
    let out = std::process::Command::new(common::binary())
        .args(["sync", "--dry-run", "--json", "--config", bare.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .env_remove("STATE_DIRECTORY")
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report.get("disabled_accounts").is_none(), "{report}");
    let (_, text) = check(&bare);
    assert!(text.contains("state directory: none"), "{text}");
}

#[tokio::test]
async fn check_reads_the_state_database_and_fails_on_a_damaged_one() {
    let env = Env::start(&directory());
    let state = env.files.path("state");
    // The percentage raised: 20 % of Team's one enabled member is none (the daily budget holds dis).
    let sections =
        format!("[sync.leavers]\naction = \"report\"\nmax_percent_per_day = 100\n\n{}", state_section(&state));
    let config = env.config_with(&["Team"], "", &sections);
    assert_eq!(common::sync_json(&config, &[]).0, 0);
    let (code, text) = check(&config);
    assert_eq!(code, Some(0), "{text}");
    let db = state.join("state.db");
    let line = format!("state database {}: ok (", db.display());
    assert!(text.contains(&line), "{text}");
    assert!(text.contains("managed users, 1 recorded group counts, 0 calls to read back"), "{text}");

    let mut bytes = std::fs::read(&db).unwrap();
    bytes[..16].copy_from_slice(b"garbage garbage\0");
    std::fs::write(&db, &bytes).unwrap();
    let (code, text) = check(&config);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(&format!("state database {}: FAILED: ", db.display())) && text.contains("move it aside"),
        "{text}"
    );
    assert_eq!(std::fs::read(&db).unwrap(), bytes, "check writes nothing");
}

/// `check` says how the daemon will read between full reads: content sync where the server lists it (slapd with
/// syncprov), none without it (passing with `auto`, failing with an explicit `syncrepl`), and off when set so.
#[tokio::test]
async fn check_says_whether_the_daemon_reads_only_what_changed() {
    let with = Env(Stack::start_on(common::Slapd::start_with_syncprov(&directory()), |_| {}));
    let (code, out) = check(&with.config_with(&["Team"], "", ""));
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("change reads: the server offers content sync (RFC 4533)") && out.contains("every 6h"),
        "{out}"
    );

    let without = Env::start(&directory());
    let (code, out) = check(&without.config_with(&["Team"], "", ""));
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("change reads: none: the server does not offer content sync (OpenLDAP: the syncprov overlay)"),
        "{out}"
    );
    let (code, out) = check(&without.config_with(&["Team"], "change_detection = \"syncrepl\"", ""));
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("change reads: FAILED: ldap.change_detection = \"syncrepl\""), "{out}");
    let (code, out) = check(&with.config_with(&["Team"], "change_detection = \"off\"", ""));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("change reads: off"), "{out}");
}

/// With `modify_timestamp`, `check` says how it reads and what it cannot see, and fails when the sampled users
/// come without `entryUUID` (an access rule hides it from the bind account).
#[tokio::test]
async fn check_says_whether_modify_timestamp_reads_can_work() {
    let mut env = Env::start(&directory());
    let stamps = "change_detection = \"modify_timestamp\"\nmodify_timestamp_margin = \"2m\"";
    let config = env.config_with(&["Team"], stamps, "");
    let (code, out) = check(&config);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("change reads: modify_timestamp:") && out.contains("at most 2m"), "{out}");
    assert!(out.contains("leavers and removals from CloudShell groups wait for a full read"), "{out}");
    env.0.slapd.restart_with_acl("access to attrs=entryUUID by * none");
    let (code, out) = check(&config);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("change reads: FAILED: ldap.change_detection = \"modify_timestamp\""), "{out}");
    assert!(out.contains("came without entryUUID or modifyTimestamp"), "{out}");
}

/// With `[schedule] watch = true`, `check` says whether the server can announce its changes: it can with
/// content sync (the control), and the check fails without it, or with a method that cannot push.
#[tokio::test]
async fn check_says_whether_the_daemon_can_watch() {
    let watch = "[schedule]\nwatch = true\nwatch_delay = \"500ms\"\n";
    let with = Env(Stack::start_on(common::Slapd::start_with_syncprov(&directory()), |_| {}));
    let (code, out) = check(&with.config_with(&["Team"], "", watch));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("watch: the server offers content sync") && out.contains("500ms"), "{out}");
    let (code, out) = check(&with.config_with(&["Team"], "change_detection = \"modify_timestamp\"", watch));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("watch: FAILED") && out.contains("\"modify_timestamp\" cannot announce changes"), "{out}");
    let without = Env::start(&directory());
    let (code, out) = check(&without.config_with(&["Team"], "", watch));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("watch: FAILED") && out.contains("syncprov"), "{out}");
    let (_, out) = check(&without.config_with(&["Team"], "", ""));
    assert!(!out.contains("watch:"), "no line without watch = true: {out}");
}

/// slapd lists content sync in its root DSE wherever the syncprov module is loaded, even when the database holding
/// the base DN lacks the overlay: `check` tries a content-sync read as a run would, and says it was refused rather
/// than that the daemon reads what changed; the runs agree (every one reads in full). With the overlay, the
/// other test's positive control says it reads what changed.
#[tokio::test]
async fn check_tries_content_sync_where_the_root_dse_lists_it() {
    let mut d = Directory::new();
    let alice = d.user("alice");
    d.group("Team", &[alice]);
    let env = Env(Stack::start_on(common::Slapd::start_with_syncprov_module_only(&d), |_| {}));
    let (code, out) = check(&env.config_with(&["Team"], "", ""));
    assert_eq!(code, Some(0), "auto falls back to full reads: {out}");
    assert!(
        out.contains(
            "change reads: none: the server lists content sync but refused a content-sync read of ldap.base_dn"
        ) && out.contains("the syncprov overlay is missing on the database holding"),
        "{out}"
    );
    assert!(!out.contains("the server offers content sync"), "{out}");
    let (code, out) = check(&env.config_with(&["Team"], "change_detection = \"syncrepl\"", ""));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("change reads: FAILED: ldap.change_detection = \"syncrepl\", but the server lists"), "{out}");
    let watch = "[schedule]\nwatch = true\n";
    let (code, out) = check(&env.config_with(&["Team"], "", watch));
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("watch: FAILED: schedule.watch = true, but the server lists content sync and refused"),
        "{out}"
    );

    let state = env.files.path("state");
    let config = env.config_with(&["Team"], "", &state_section(&state));
    for run in 0..2 {
        let out = common::cli(&["sync", "--json", "--config", config.to_str().unwrap()]);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("run {run}: {e}: {}", String::from_utf8_lossy(&out.stderr)));
        assert_eq!(report["result"], "ok", "run {run}: {report}");
        assert_eq!(report["read"]["mode"], "full", "run {run}: {report}");
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(log.contains("the syncprov overlay is missing on the database holding"), "run {run}: {log}");
    }
}
