//! Active Directory for real: a Samba AD domain controller, provisioned once for this whole file (its ports
//! are fixed), seeded over ldaps with AD-style names, nested groups, a group over 1,500 members and disabled
//! accounts. The checks run in one test, in sections, so that the DC is provisioned once and always stopped.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use cloudshell_ldap_sync::group_name::GroupName;
use cloudshell_ldap_sync::ldap::{self, Nesting, Settings, Snapshot};
use common::{AD_ADMIN, AD_BASE, AD_PASSWORD, Daemon, Files, SambaDc, Sim, ad_group, ad_user};
use serde_json::{Value, json};

const BIG: usize = 1600;

fn settings(dc: &SambaDc) -> Settings {
    common::ad_settings(dc, AD_BASE)
}

/// Staff: alice, bob, carol, dave, "Porter, James" (jporter), mallory (disabled), and big0000..big1599.
/// Engineering ⊃ {alice, Platform}; Platform ⊃ {bob, SRE}; SRE ⊃ {carol, mallory, Engineering} (a cycle);
/// Ops ⊃ {"Porter, James", dave}; Big ⊃ the 1,600 big users and mallory.
fn seed(dc: &SambaDc) {
    let mut ldif = format!(
        "dn: OU=Staff,{AD_BASE}\nobjectClass: organizationalUnit\nou: Staff\n\n\
         dn: OU=Groups,{AD_BASE}\nobjectClass: organizationalUnit\nou: Groups\n\n"
    );
    let mut dn = std::collections::HashMap::new();
    for (cn, sam, disabled) in [
        ("alice", "alice", false),
        ("bob", "bob", false),
        ("carol", "carol", false),
        ("dave", "dave", false),
        ("Porter, James", "jporter", false),
        ("mallory", "mallory", true),
    ] {
        let (d, l) = ad_user(cn, sam, disabled);
        ldif.push_str(&l);
        dn.insert(sam, d);
    }
    let mut big: Vec<String> = Vec::new();
    for n in 0..BIG {
        let (d, l) = ad_user(&format!("big{n:04}"), &format!("big{n:04}"), false);
        ldif.push_str(&l);
        big.push(d);
    }
    big.push(dn["mallory"].clone());
    // Groups are added first without nested members, then nested by modification (the cycle needs both).
    let (eng, l) = ad_group("Engineering", &[dn["alice"].clone()]);
    ldif.push_str(&l);
    let (platform, l) = ad_group("Platform", &[dn["bob"].clone()]);
    ldif.push_str(&l);
    let (sre, l) = ad_group("SRE", &[dn["carol"].clone(), dn["mallory"].clone()]);
    ldif.push_str(&l);
    ldif.push_str(&ad_group("Ops", &[dn["jporter"].clone(), dn["dave"].clone()]).1);
    ldif.push_str(&ad_group("Big", &big).1);
    dc.add(&ldif);
    let nest =
        |group: &str, member: &str| format!("dn: {group}\nchangetype: modify\nadd: member\nmember: {member}\n\n");
    dc.modify(&(nest(&eng, &platform) + &nest(&platform, &sre) + &nest(&sre, &eng)));
}

fn members(snap: &Snapshot, name: &str) -> BTreeSet<String> {
    let g = snap.groups.iter().find(|g| g.name == name).unwrap();
    let group = g.result.as_ref().unwrap_or_else(|e| panic!("{name}: {e}"));
    group.members.iter().map(|m| m.username.to_string()).collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

async fn snapshot(s: &Settings, groups: &[&str]) -> Snapshot {
    let groups: Vec<GroupName> = groups.iter().map(|g| GroupName::new(g)).collect();
    ldap::snapshot(s, &groups).await.unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_directory_end_to_end() {
    let started = Instant::now();
    let mut dc = SambaDc::start();
    seed(&dc);
    eprintln!("Samba AD DC provisioned, started and seeded in {:.1} s", started.elapsed().as_secs_f64());

    nested_members_by_recursion_and_in_chain_agree(&dc).await;
    disabled_accounts_are_left_out_unless_included(&dc).await;
    range_retrieval_reads_every_member(&dc).await;
    tls_needs_the_right_ca_and_plain_binds_are_refused(&dc).await;
    sync_end_to_end_against_active_directory(&dc).await;
    watching_active_directory_by_change_notifications(&mut dc).await;
    usn_change_reads_for_an_account_without_dirsync(&dc).await;
    eprintln!("Active Directory suite: {:.1} s in all", started.elapsed().as_secs_f64());
}

async fn nested_members_by_recursion_and_in_chain_agree(dc: &SambaDc) {
    let groups = ["Engineering", "Ops", "Big", "SRE"];
    let recursive = snapshot(&settings(dc), &groups).await;
    assert_eq!(members(&recursive, "Engineering"), set(&["alice", "bob", "carol"]), "nested, cycle-safe, no mallory");
    assert_eq!(members(&recursive, "Ops"), set(&["dave", "jporter"]));
    assert_eq!(members(&recursive, "Big").len(), BIG);
    let in_chain = snapshot(&Settings { nesting: Nesting::InChain, ..settings(dc) }, &groups).await;
    let auto = snapshot(&Settings { nesting: Nesting::Auto, ..settings(dc) }, &groups).await;
    for name in groups {
        assert_eq!(members(&in_chain, name), members(&recursive, name), "IN_CHAIN and recursion differ on {name}");
        assert_eq!(members(&auto, name), members(&recursive, name), "auto differs on {name}");
    }
    // Disabled accounts are kept by name, nested ones included, the same way in both.
    for snap in [&recursive, &in_chain] {
        for (name, disabled) in [("Engineering", vec!["mallory"]), ("Ops", vec![]), ("Big", vec!["mallory"])] {
            let g = snap.groups.iter().find(|g| g.name == name).unwrap().result.as_ref().unwrap();
            let found: Vec<&str> = g.disabled.iter().map(|m| m.username.as_str()).collect();
            assert_eq!(found, disabled, "{name}");
        }
    }
    // In chain: one search per configured group instead of one read per nested group.
    assert!(in_chain.searches <= 2 + groups.len() + 1, "{} searches", in_chain.searches);
    let jp =
        recursive.groups[1].result.as_ref().unwrap().members.iter().find(|m| m.username.as_str() == "jporter").cloned();
    let jp = jp.expect("jporter");
    assert_eq!(ldap::DnKey::new(&jp.dn), ldap::DnKey::new(&format!("CN=Porter\\, James,OU=Staff,{AD_BASE}")));
}

async fn disabled_accounts_are_left_out_unless_included(dc: &SambaDc) {
    let excluded = snapshot(&settings(dc), &["SRE"]).await;
    assert_eq!(members(&excluded, "SRE"), set(&["alice", "bob", "carol"]), "SRE nests Engineering");
    let sre = excluded.groups[0].result.as_ref().unwrap();
    assert_eq!(sre.disabled_members, 1);
    assert_eq!(sre.skipped_members, 0, "a disabled member is not a dangling one");
    let included = snapshot(&Settings { include_disabled: true, ..settings(dc) }, &["SRE"]).await;
    assert!(members(&included, "SRE").contains("mallory"));
}

async fn range_retrieval_reads_every_member(dc: &SambaDc) {
    // Samba does not force ranges: ask for windows of 100 values, as AD does past 1,500.
    let ranged = snapshot(&Settings { member_range_size: Some(100), ..settings(dc) }, &["Big", "Ops"]).await;
    assert_eq!(members(&ranged, "Big").len(), BIG);
    assert_eq!(members(&ranged, "Ops"), set(&["dave", "jporter"]));
    assert!(ranged.searches >= BIG / 100, "{} searches: the range loop ran", ranged.searches);
}

async fn tls_needs_the_right_ca_and_plain_binds_are_refused(dc: &SambaDc) {
    // Without the DC's CA: a clear certificate error naming the key to set.
    let err = ldap::snapshot(&Settings { ca_file: None, ..settings(dc) }, &[GroupName::new("Ops")]).await.unwrap_err();
    assert!(err.to_string().contains("ldap.ca_file"), "{err}");
    // With another CA: refused too.
    let other = tempfile::tempdir().unwrap();
    let other_ca = {
        let mut d = common::Directory::new();
        d.user("x");
        let s = common::Slapd::start_tls(&d);
        let ca = other.path().join("other-ca.pem");
        std::fs::copy(s.ca_file(), &ca).unwrap();
        ca
    };
    let err = ldap::snapshot(&Settings { ca_file: Some(other_ca), ..settings(dc) }, &[GroupName::new("Ops")])
        .await
        .unwrap_err();
    assert!(matches!(err, ldap::Error::Connect { .. }), "{err}");
    assert!(err.to_string().to_lowercase().contains("certificate"), "{err}");
    // StartTLS with the CA works; a plain simple bind is refused by AD with a hint.
    let starttls = Settings { urls: vec![dc.ldap_url()], starttls: true, ..settings(dc) };
    assert_eq!(members(&snapshot(&starttls, &["Ops"]).await, "Ops"), set(&["dave", "jporter"]));
    let plain = Settings { urls: vec![dc.ldap_url()], ..settings(dc) };
    let err = ldap::snapshot(&plain, &[GroupName::new("Ops")]).await.unwrap_err();
    assert!(err.to_string().contains("strongerAuthRequired") && err.to_string().contains("ldaps://"), "{err}");
}

/// A simulator whose directory is this DC, as CloudShell's would be.
fn ad_sim_for(dc: &SambaDc) -> Sim {
    Sim::for_ad(dc, 2000)
}

/// The shipped Active Directory example, pointed at this DC and `sim`, with `sync_extra` added to `[sync]`.
fn ad_config(dc: &SambaDc, sim: &Sim, files: &Files, name: &str, sync_extra: &str) -> std::path::PathBuf {
    std::fs::write(files.path("ldap-password"), AD_PASSWORD).unwrap();
    let config =
        common::ad_example(dc, sim, AD_ADMIN, &files.path("ldap-password"), &files.path("cs-password")).replace(
            "[\"CloudShell Users\", \"Lab Admins\"]",
            &format!("[\"Engineering\", \"Ops\", \"Big\"]\nmax_imports_per_run = 5000\n{sync_extra}"),
        ) + &format!(
            "\n[sync.leavers]\naction = \"deactivate\"\n\n[monitor]\nstate_directory = \"{}\"\n",
            files.path(&format!("state-{name}")).display()
        );
    let path = files.path(&format!("{name}.toml"));
    std::fs::write(&path, config).unwrap();
    path
}

/// A configuration's text with no percentage limit on leavers: Ops is small, and one leaver is more than the
/// shipped percentages allow.
fn without_leaver_limits(text: &str) -> String {
    text.replace("action = \"deactivate\"\n", "action = \"deactivate\"\nmax_percent = 100\nmax_percent_per_day = 100\n")
}

/// `check`'s exit code and output for a configuration.
fn check(path: &std::path::Path) -> (Option<i32>, String) {
    let out = common::cli(&["check", "--config", path.to_str().unwrap()]);
    (out.status.code(), String::from_utf8_lossy(&out.stdout).to_string())
}

/// CloudShell's users by username: (active, present).
async fn cloudshell_users(sim: &Sim) -> std::collections::BTreeMap<String, bool> {
    let state = sim.state().await;
    state["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["Username"].as_str().unwrap().to_string(), u["IsActive"].as_bool().unwrap_or(true)))
        .collect()
}

fn calls(report: &Value) -> (u64, u64, u64) {
    let c = &report["api_calls"];
    (c["import_group"].as_u64().unwrap(), c["import_user"].as_u64().unwrap(), c["edit_user"].as_u64().unwrap())
}

async fn sync_end_to_end_against_active_directory(dc: &SambaDc) {
    let files = Files::new();

    // per_user: a group holding a disabled account is imported member by member; mallory is never imported.
    let sim = ad_sim_for(dc);
    let path = ad_config(dc, &sim, &files, "per-user", "disabled_accounts = \"per_user\"");
    let (code, report, stderr) = common::sync_json(&path, &[]);
    assert_eq!(code, 0, "result {}\n{stderr}", report["result"]);
    assert!(stderr.contains("nested groups: the directory is Active Directory"), "auto picked IN_CHAIN:\n{stderr}");
    let users = cloudshell_users(&sim).await;
    assert_eq!(users.len(), 1 + 3 + 2 + BIG, "admin, Engineering's 3, Ops' 2, Big's 1600");
    assert!(!users.contains_key("mallory"), "a disabled account is never imported");
    assert!(users.contains_key("jporter") && users.contains_key("big1599"));
    let state = sim.state().await;
    let imported: &Value =
        &state["users"].as_array().unwrap().iter().find(|u| u["Username"] == "jporter").unwrap().clone();
    assert!(imported["ImportedSid"].as_str().unwrap().starts_with("S-1-5-21-"), "{imported}");
    assert_eq!(common::report_group(&report, "Big")["imported"], BIG);
    assert!(stderr.contains("group holds disabled accounts, importing its members one by one"), "{stderr}");
    assert!(report.get("disabled_accounts").is_none(), "{report}");
    let per_user_calls = calls(&report);
    assert!(per_user_calls.1 >= BIG as u64, "one call per Big member: {per_user_calls:?}");
    eprintln!(
        "per_user on {} users (1 disabled): import_group, import_user, edit_user = {per_user_calls:?}",
        users.len()
    );

    // import_then_deactivate (the default with a state directory): Big is imported by its name, mallory with
    // it, then deactivated.
    let sim = ad_sim_for(dc);
    let path = ad_config(dc, &sim, &files, "default", "");
    let (code, report, stderr) = common::sync_json(&path, &[]);
    assert_eq!(code, 0, "result {}\n{stderr}", report["result"]);
    let users = cloudshell_users(&sim).await;
    assert_eq!(users.len(), 1 + 3 + 2 + BIG + 1, "mallory imported with Big");
    assert!(!users["mallory"], "and deactivated");
    assert!(users.iter().filter(|(name, _)| *name != "mallory").all(|(_, active)| *active), "the rest active");
    assert_eq!(common::report_group(&report, "Big")["imported"], BIG, "mallory is not counted as imported");
    assert_eq!(report["disabled_accounts"]["deactivated"], json!(["mallory"]), "{}", report["disabled_accounts"]);
    assert_eq!(report["totals"]["disabled_deactivated"], 1);
    assert!(stderr.contains("user deactivated") && stderr.contains("disabled in the directory"), "{stderr}");
    let by_name_calls = calls(&report);
    assert!(by_name_calls.0 <= 3 && by_name_calls.1 <= 2 && by_name_calls.2 == 1, "{by_name_calls:?}");
    eprintln!("import_then_deactivate on the same: import_group, import_user, edit_user = {by_name_calls:?}");

    let (code, report, _) = common::sync_json(&path, &[]);
    assert_eq!((code, report["totals"]["imported"].as_u64()), (0, Some(0)), "a second run imports nothing");
    assert_eq!(calls(&report), (0, 0, 0), "and changes nothing: {report}");
    assert_eq!(
        report["leavers"]["managed"],
        1 + 3 + 2 + BIG - 1 + 1,
        "every effective member is managed, and mallory: {}",
        report["leavers"]
    );
    assert_eq!(report["leavers"]["leavers"], json!([]), "mallory is not a leaver: {}", report["leavers"]);

    // dave's account is disabled in AD: deactivated at once, as a disabled account (not after the leavers' grace).
    let uac = |value: u32| {
        format!(
            "dn: CN=dave,OU=Staff,{AD_BASE}\nchangetype: modify\nreplace: userAccountControl\nuserAccountControl: {value}\n\n"
        )
    };
    dc.modify(&uac(546));
    let (code, report, stderr) = common::sync_json(&path, &[]);
    assert_eq!(code, 0, "{report}\n{stderr}");
    assert_eq!(report["disabled_accounts"]["deactivated"], json!(["dave"]), "{}", report["disabled_accounts"]);
    assert_eq!(report["leavers"]["deactivated"], json!([]), "{}", report["leavers"]);
    assert!(!cloudshell_users(&sim).await["dave"], "disabled in Active Directory, inactive in CloudShell");

    // Enabled again: reactivated on the next run.
    dc.modify(&uac(544));
    let (code, report, stderr) = common::sync_json(&path, &[]);
    assert_eq!(code, 0, "{report}\n{stderr}");
    assert_eq!(report["disabled_accounts"]["reactivated"], json!(["dave"]), "{}", report["disabled_accounts"]);
    assert!(cloudshell_users(&sim).await["dave"]);
}

/// Watching Active Directory, which has no content sync: by its change notifications. The server announces
/// every object that changes; one that is no configured user or group (an OU's description) starts no run,
/// while a new hire added to Ops is imported and placed in Ops' mapped CloudShell group by a run the change
/// started, without waiting for the schedule (once a year here). Samba looks for changed objects every 5 seconds, so each wait allows for that.
async fn watching_active_directory_by_change_notifications(dc: &mut SambaDc) {
    let files = Files::new();
    let sim = ad_sim_for(dc);
    let path = ad_config(dc, &sim, &files, "watch", "");
    let text = std::fs::read_to_string(&path).unwrap().replace("[\"Engineering\", \"Ops\", \"Big\"]", "[\"Ops\"]")
        + "\n[schedule]\ncron = \"0 0 0 1 1 *\"\nrun_on_start = true\nwatch = true\nwatch_delay = \"200ms\"\n"
        + "\n[[sync.mapping]]\ndirectory_group = \"Ops\"\ncloudshell_groups = [\"Lab Users\"]\n";
    let text = without_leaver_limits(&text);
    std::fs::write(&path, &text).unwrap();
    let (code, out) = check(&path);
    assert!(out.contains("watch: the server offers change notifications"), "{out}");
    assert!(out.contains("change reads: dirsync (Active Directory)") && out.contains(AD_BASE), "{out}");
    assert_eq!(code, Some(0), "{out}");
    // Content sync named: Active Directory has none, and check says that auto would watch.
    let syncrepl = files.path("watch-syncrepl.toml");
    std::fs::write(&syncrepl, text.replace("change_detection = \"auto\"", "change_detection = \"syncrepl\"")).unwrap();
    let (code, out) = check(&syncrepl);
    assert!(out.contains("watch: FAILED") && out.contains("change_detection = \"auto\" to watch by them"), "{out}");
    assert_ne!(code, Some(0), "{out}");

    let daemon = Daemon::spawn(&path, files.path("daemon-watch.log"), &[]);
    daemon.wait_for("run finished", 1, Duration::from_secs(60));
    daemon.wait_for("watching the directory", 1, Duration::from_secs(30));
    assert_eq!(daemon.fields_of("watching the directory")[0]["method"], "change notifications", "{}", daemon.log());

    dc.modify(&format!(
        "dn: OU=Groups,{AD_BASE}\nchangetype: modify\nreplace: description\ndescription: not a group\n\n"
    ));
    std::thread::sleep(Duration::from_secs(12));
    assert_eq!(daemon.count("run finished"), 1, "an OU changed, no run:\n{}", daemon.log());

    let (erin, ldif) = ad_user("erin", "erin", false);
    dc.add(&ldif);
    dc.modify(&format!("dn: CN=Ops,OU=Groups,{AD_BASE}\nchangetype: modify\nadd: member\nmember: {erin}\n\n"));
    let changed = Instant::now();
    while !cloudshell_users(&sim).await.contains_key("erin") {
        assert!(changed.elapsed() < Duration::from_secs(30), "erin not imported within 30 s:\n{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let imported_after = changed.elapsed();
    // The import shows before the run's last line: wait for that run's end.
    while !daemon.fields_of("run finished").iter().any(|r| r["imported"].as_u64() >= Some(1) && r["trigger"] == "watch")
    {
        assert!(changed.elapsed() < Duration::from_secs(60), "no watch run imported erin:\n{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let placed = sim.group_members("Lab Users").await;
    assert!(placed.contains(&"erin".to_string()), "placed in Ops' mapped group: {placed:?}\n{}", daemon.log());
    let triggers: Vec<Value> = daemon.fields_of("run finished").iter().map(|r| r["trigger"].clone()).collect();
    assert!(triggers.len() >= 2 && triggers[1..].iter().all(|t| t == "watch"), "{triggers:?}\n{}", daemon.log());
    // The daemon's own binds and reads make no change the server announces: no run follows on its own. (Erin's
    // entry and her membership are two writes: a look of Samba's between them makes two runs, so the count is
    // taken once a look has passed since.)
    std::thread::sleep(Duration::from_secs(6));
    let runs = daemon.count("run finished");
    std::thread::sleep(Duration::from_secs(12));
    assert_eq!(daemon.count("run finished"), runs, "a run started with nothing changed:\n{}", daemon.log());
    // With "auto", Active Directory's runs read what changed by DirSync: the run at start reads in full and keeps
    // the model, the watch's runs read changes. Content sync is never asked of it (Samba ends the connection on
    // an unknown critical control, with a message the LDAP library panicked on).
    let reads = daemon.fields_of("directory read");
    assert_eq!((reads[0]["mode"].as_str(), reads[0]["method"].as_str()), (Some("full"), Some("dirsync")), "{reads:?}");
    let later: Vec<_> = reads[1..].iter().map(|r| (r["mode"].as_str(), r["method"].as_str())).collect();
    assert!(!later.is_empty() && later.iter().all(|r| *r == (Some("changes"), Some("dirsync"))), "{reads:?}");
    assert_eq!(daemon.count("change reads unavailable, every run reads in full"), 0, "{}", daemon.log());
    assert!(!daemon.log().contains("panicked"), "{}", daemon.log());
    // A leaver learnt from a DirSync change read: erin taken out of Ops, her only configured group, is deactivated
    // by the run the change starts, which reads changes; nobody else is.
    let inactive = |users: &std::collections::BTreeMap<String, bool>| -> Vec<String> {
        users.iter().filter(|(_, active)| !**active).map(|(name, _)| name.clone()).collect()
    };
    let mut before = inactive(&cloudshell_users(&sim).await);
    let read_before = daemon.count("directory read");
    dc.modify(&format!("dn: CN=Ops,OU=Groups,{AD_BASE}\nchangetype: modify\ndelete: member\nmember: {erin}\n\n"));
    let removed = Instant::now();
    while cloudshell_users(&sim).await.get("erin") != Some(&false) {
        assert!(removed.elapsed() < Duration::from_secs(40), "erin not deactivated within 40 s:\n{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    before.push("erin".to_string());
    before.sort();
    assert_eq!(inactive(&cloudshell_users(&sim).await), before, "only erin deactivated");
    let reads = daemon.fields_of("directory read");
    assert!(reads.len() > read_before, "{}", daemon.log());
    assert!(reads[read_before..].iter().all(|r| r["mode"] == "changes" && r["method"] == "dirsync"), "{reads:?}");
    eprintln!("Active Directory watch: erin deactivated {:.1} s after leaving Ops", removed.elapsed().as_secs_f64());
    // The domain controller restarted: the watch goes down and says so, comes back by itself, and a run catches
    // up on what changed while none watched.
    let (finished, watching, down) =
        (daemon.count("run finished"), daemon.count("watching the directory"), daemon.count("watch down"));
    let began = Instant::now();
    dc.restart();
    daemon.wait_for("watch down", down + 1, Duration::from_secs(60));
    daemon.wait_for("watching the directory", watching + 1, Duration::from_secs(120));
    daemon.wait_for("run finished", finished + 1, Duration::from_secs(60));
    assert_eq!(daemon.fields_of("run finished").last().unwrap()["trigger"], "watch", "{}", daemon.log());
    eprintln!("Active Directory watch: caught up {:.1} s after the restart began", began.elapsed().as_secs_f64());
    eprintln!("Active Directory watch: erin imported {:.1} s after the change", imported_after.as_secs_f64());
}

/// A bind account without the "Replicating Directory Changes" right, allowed to read CN=Deleted Objects:
/// `auto` reads what changed by `uSNChanged` (check says so, and why not DirSync). One-shot runs on a state
/// directory: the first reads in full and keeps the model; a new hire added to Ops is imported by a change read;
/// that hire deleted from the directory is a leaver the change read saw (a tombstone), deactivated, and nobody
/// else. The same account without the grant, with `usn` named: check fails, naming the grant.
async fn usn_change_reads_for_an_account_without_dirsync(dc: &SambaDc) {
    const PASSWORD: &str = "Usn-Reader-Passw0rd!";
    common::create_ad_account("usnsync", PASSWORD);
    dc.allow_deleted_objects("usnsync");
    common::create_ad_account("usnplain", PASSWORD);
    let files = Files::new();
    let sim = ad_sim_for(dc);
    let path = ad_config(dc, &sim, &files, "usn", "");
    std::fs::write(files.path("ldap-password"), PASSWORD).unwrap();
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("[\"Engineering\", \"Ops\", \"Big\"]", "[\"Ops\"]")
        .replace(AD_ADMIN, "usnsync@ad.example.org");
    let text = without_leaver_limits(&text);
    std::fs::write(&path, &text).unwrap();
    let (code, out) = check(&path);
    assert!(out.contains("change reads: usn (Active Directory) (DirSync cannot be used:"), "{out}");
    assert!(out.contains("Replicating Directory Changes"), "why not DirSync: {out}");
    assert_eq!(code, Some(0), "{out}");
    let plain = files.path("usn-plain.toml");
    let named =
        text.replace("usnsync@", "usnplain@").replace("change_detection = \"auto\"", "change_detection = \"usn\"");
    std::fs::write(&plain, named).unwrap();
    let (code, out) = check(&plain);
    assert!(
        out.contains(
            "change reads: FAILED: ldap.change_detection = \"usn\", but the bind account cannot read CN=Deleted Objects"
        ),
        "{out}"
    );
    assert!(out.contains("/G DOMAIN\\account:LCRP"), "{out}");
    assert_ne!(code, Some(0), "{out}");

    let read_of = |report: &Value| (report["read"]["mode"].clone(), report["read"]["method"].clone());
    let took = |what: &str, report: &Value| {
        let ms = |key: &str| report[key].as_u64().unwrap_or_default();
        eprintln!("usn one-shot run, {what}: cycle {} ms, directory {} ms", ms("duration_ms"), ms("directory_ms"));
    };
    let (code, report, stderr) = common::sync_json(&path, &[]);
    took("full read, model built", &report);
    assert_eq!(code, 0, "{report}\n{stderr}");
    assert_eq!(read_of(&report), (json!("full"), json!("usn")), "{}", report["read"]);
    assert!(stderr.contains("change reads by uSNChanged instead"), "{stderr}");

    let (uma, ldif) = ad_user("uma", "uma", false);
    dc.add(&ldif);
    dc.modify(&format!("dn: CN=Ops,OU=Groups,{AD_BASE}\nchangetype: modify\nadd: member\nmember: {uma}\n\n"));
    let (code, report, stderr) = common::sync_json(&path, &[]);
    assert_eq!(code, 0, "{report}\n{stderr}");
    assert_eq!(read_of(&report), (json!("changes"), json!("usn")), "{}", report["read"]);
    assert_eq!(cloudshell_users(&sim).await.get("uma"), Some(&true), "the new hire imported: {report}");
    took("a new hire added to Ops", &report);

    let inactive = |users: &std::collections::BTreeMap<String, bool>| -> Vec<String> {
        users.iter().filter(|(_, active)| !**active).map(|(name, _)| name.clone()).collect()
    };
    let mut before = inactive(&cloudshell_users(&sim).await);
    dc.modify(&format!("dn: {uma}\nchangetype: delete\n\n"));
    let (code, report, stderr) = common::sync_json(&path, &[]);
    assert_eq!(code, 0, "{report}\n{stderr}");
    assert_eq!(read_of(&report), (json!("changes"), json!("usn")), "{}", report["read"]);
    assert_eq!(report["leavers"]["deactivated"], json!(["uma"]), "{}", report["leavers"]);
    took("that hire deleted", &report);
    let (code, report, stderr) = common::sync_json(&path, &[]);
    assert_eq!((code, read_of(&report)), (0, (json!("changes"), json!("usn"))), "{report}\n{stderr}");
    took("nothing changed", &report);
    before.push("uma".to_string());
    before.sort();
    assert_eq!(inactive(&cloudshell_users(&sim).await), before, "only uma deactivated");

    // DirSync named for the same account, which lacks its right: check fails naming the right, and runs read in
    // full (never "no changes"), saying why at error level (in a state directory of its own).
    let named = files.path("dirsync-named.toml");
    let state = files.path("state-usn").display().to_string();
    let dirsync = text
        .replace("change_detection = \"auto\"", "change_detection = \"dirsync\"")
        .replace(&state, &files.path("state-dirsync-named").display().to_string());
    assert_ne!(dirsync, text);
    std::fs::write(&named, dirsync).unwrap();
    let (code, out) = check(&named);
    assert!(out.contains("change reads: FAILED: ldap.change_detection = \"dirsync\", but"), "{out}");
    assert!(out.contains("Replicating Directory Changes"), "{out}");
    assert_ne!(code, Some(0), "{out}");
    for run in 0..2 {
        let (code, report, stderr) = common::sync_json(&named, &[]);
        assert_eq!(code, 0, "run {run}: {report}\n{stderr}");
        assert_eq!(read_of(&report), (json!("full"), json!(null)), "run {run}: {}", report["read"]);
        // The error-level event names the method it was asked for (the info-level one, for "auto", does not).
        assert!(
            stderr.contains("change reads unavailable, every run reads in full (ldap.change_detection ="),
            "run {run}: {stderr}"
        );
    }
}
