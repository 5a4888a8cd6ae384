//! One-shot `sync` runs (the shipped timer's) keep the directory model in `state.db` and read only what changed
//! between full reads: the real binary against slapd with content sync and the simulator. What they act on is
//! what the daemon's change reads act on; what makes them read in full (no model stored, a run that did not end
//! ok, the configuration changed, the state written by anyone else, a stored model that cannot be used) is each
//! shown here with its control.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Directory, Env, Rng, Stack, sync_json};
use serde_json::{Value, json};

const IMPORT: &str = "/api/v1/integrations/IdentityManagement/users";

/// `Team`: alice, bob. `Other`: erin.
fn directory() -> Directory {
    let mut d = Directory::new();
    let alice = d.user("alice");
    let bob = d.user("bob");
    d.group("Team", &[alice, bob]);
    let erin = d.user("erin");
    d.group("Other", &[erin]);
    d
}

impl Env {
    fn with_content_sync() -> Env {
        Env(Stack::start_on(common::Slapd::start_with_syncprov(&directory()), |_| {}))
    }

    /// Team and Other, with a state directory and leavers deactivated (but `svc-*`); `sync_extra` in `[sync]`.
    fn config(&self, sync_extra: &str) -> PathBuf {
        let leavers = "[sync.leavers]\naction = \"deactivate\"\nmax_percent = 100\nmax_percent_per_day = 100\n\
                       protect = [\"svc-*\"]\n";
        let sections = format!("[monitor]\nstate_directory = \"{}\"\n{leavers}", self.state().display());
        self.files.config(&self.slapd.url(), &self.sim.url(), &["Team", "Other"], sync_extra, &sections)
    }

    fn state(&self) -> PathBuf {
        self.files.path("state")
    }

    /// The calls made to CloudShell (logins apart); with `writes`, only those that change something.
    async fn calls(&self, writes: bool) -> Vec<Value> {
        let login = |c: &Value| c["path"].as_str().unwrap_or_default().eq_ignore_ascii_case("/Api/Auth/Login");
        let calls = self.sim.calls().await.into_iter().filter(|c| !login(c));
        calls.filter(|c| !writes || c["method"] != "GET").collect()
    }
}

/// The run's `read`, after checking it ended with `code`.
fn run(config: &Path, code: i32) -> (Value, Value) {
    let (got, report, stderr) = sync_json(config, &[]);
    assert_eq!(got, code, "{report}\n{stderr}");
    (report["read"].clone(), report)
}

fn mode(read: &Value) -> (&str, &str) {
    (read["mode"].as_str().unwrap_or("?"), read["method"].as_str().unwrap_or("none"))
}

/// Runs SQL on the state database, as an operator with `sqlite3` would.
fn sql(state: &Path, statement: &str) {
    let db = rusqlite::Connection::open(state.join("state.db")).unwrap();
    db.execute_batch(statement).unwrap();
}

/// A one-shot run stores its model; the next reads only what changed: with nothing changed it calls nothing
/// and reports the last run's outcome; a new hire is imported and a member taken out of Team (the positive
/// control) is deactivated by a change read, as in the daemon; a dry run reads in full and leaves the stored
/// model for the next run.
#[tokio::test]
async fn a_one_shot_run_reads_only_what_changed_since_the_last_one() {
    let env = Env::with_content_sync();
    let config = env.config("");
    let (read, first) = run(&config, 0);
    assert_eq!(mode(&read), ("full", "syncrepl"), "{read}");
    assert!(read["reason"].as_str().unwrap().contains("no directory model stored"), "{read}");
    assert_eq!(env.sim.usernames().await, ["admin", "alice", "bob", "erin"]);

    // The first run imported: the second reads the changes since (none) and decides again.
    let (read, second) = run(&config, 0);
    assert_eq!(mode(&read), ("changes", "syncrepl"), "{read}");
    assert_eq!(read["reason"], "the changes since the last run", "{read}");
    assert_eq!((second["totals"]["imported"].clone(), first["totals"]["imported"].clone()), (json!(0), json!(3)));
    // The second left nothing to do: the third, with nothing changed, ends with its outcome.
    env.sim.clear_calls().await;
    let (read, quiet) = run(&config, 0);
    assert_eq!(mode(&read), ("changes", "syncrepl"), "{read}");
    assert_eq!(read["reason"], "nothing changed since the last run, which left nothing to do", "{read}");
    assert_eq!(read["cloudshell_users"], "kept", "{read}");
    assert_eq!(env.calls(false).await, Vec::<Value>::new(), "no CloudShell call");
    assert_eq!((quiet["groups"].clone(), quiet["totals"]["members"].clone()), (second["groups"].clone(), json!(3)));
    assert_eq!((quiet["leavers"].clone(), quiet["result"].clone()), (second["leavers"].clone(), json!("ok")));

    // A dry run reads in full and takes nothing: the next run still reads only what changed.
    let (_, dry, _) = sync_json(&config, &["--dry-run"]);
    assert_eq!(mode(&dry["read"]).0, "full", "{dry}");

    env.add_person("newhire");
    env.change_members("Team", &["newhire"], &["bob"]);
    let (read, changed) = run(&config, 0);
    assert_eq!(mode(&read), ("changes", "syncrepl"), "{read}");
    assert!(read["changed_groups"].as_u64() >= Some(1) && read["changed_users"].as_u64() >= Some(1), "{read}");
    assert!(env.sim.usernames().await.contains(&"newhire".to_string()), "imported by the change read");
    assert_eq!(changed["leavers"]["deactivated"], json!(["bob"]), "{changed}");
    assert!(!env.sim.is_active("bob").await, "the leaver the change read reported");
    for kept in ["alice", "erin", "newhire"] {
        assert!(env.sim.is_active(kept).await, "{kept} stays active");
    }
    let imports = env.sim.calls_to("POST", IMPORT).await;
    assert_eq!(imports.len(), 1, "one group import, for Team: {imports:?}");

    // And the run after reads the changes since that one: nothing.
    env.sim.clear_calls().await;
    let (read, _) = run(&config, 0);
    assert_eq!(mode(&read).0, "changes", "{read}");
    assert_eq!(env.calls(true).await, Vec::<Value>::new());
}

/// A run that did not end ok leaves no model: the next reads in full (and imports the new hire then). So does
/// a change of configuration, any write to the state by another process, and a stored model that cannot be
/// decoded; each time the report says why, and each time the run after reads only what changed again (the
/// control that the model is stored again).
#[tokio::test]
async fn a_one_shot_run_reads_in_full_when_the_stored_model_cannot_be_trusted() {
    let env = Env::with_content_sync();
    let config = env.config("");
    let reason = |read: &Value| read["reason"].as_str().unwrap_or_default().to_string();
    assert_eq!(mode(&run(&config, 0).0).0, "full");

    env.add_person("newhire");
    env.change_members("Team", &["newhire"], &[]);
    env.sim.set_faults(json!({"fail": {"count": 1000, "status": 500, "method": "POST"}})).await;
    let (read, failed) = run(&config, 3);
    assert_eq!(mode(&read).0, "changes", "{read}");
    assert_ne!(failed["result"], "ok");
    env.sim.clear_faults().await;
    let (read, _) = run(&config, 0);
    assert_eq!(mode(&read).0, "full", "{read}");
    assert!(reason(&read).contains("the last run did not end ok"), "{read}");
    assert!(env.sim.usernames().await.contains(&"newhire".to_string()));
    assert_eq!(mode(&run(&config, 0).0).0, "changes");

    // The configuration changed.
    let changed = env.config("full_sync_every = \"12h\"");
    let (read, _) = run(&changed, 0);
    assert!(reason(&read).contains("configuration changed"), "{read}");
    assert_eq!(mode(&run(&changed, 0).0).0, "changes");

    // Another process wrote to the state (here by hand).
    sql(&env.state(), "UPDATE managed_users SET last_seen = last_seen WHERE folded = 'alice'");
    let (read, _) = run(&changed, 0);
    assert!(reason(&read).contains("no directory model stored"), "{read}");
    assert_eq!(mode(&run(&changed, 0).0).0, "changes");

    // The stored body written by hand: the head goes with it.
    sql(&env.state(), "UPDATE kept_model_body SET bytes = x'00ff' WHERE part = 'directory'");
    let (read, _) = run(&changed, 0);
    assert!(reason(&read).contains("no directory model stored") && mode(&read).0 == "full", "{read}");
    assert_eq!(mode(&run(&changed, 0).0).0, "changes");

    // A model stored by another version of the program.
    sql(&env.state(), "UPDATE kept_model SET program = 'cloudshell-ldap-sync 0.0.1, model format 0'");
    let (read, _) = run(&changed, 0);
    assert!(reason(&read).contains("stored by cloudshell-ldap-sync 0.0.1") && mode(&read).0 == "full", "{read}");
    assert_eq!(mode(&run(&changed, 0).0).0, "changes");

    // A run held by a safety limit (a new hire past max_imports_per_run = 0) keeps no model either.
    env.add_person("heldhire");
    env.change_members("Other", &["heldhire"], &[]);
    let held = env.config("full_sync_every = \"12h\"\nmax_imports_per_run = 0");
    let (read, report) = run(&held, 4);
    assert!(reason(&read).contains("configuration changed") && report["result"] == "held", "{report}");
    let (read, report) = run(&held, 4);
    assert!(reason(&read).contains("no directory model stored"), "after a held run: {read}");
    assert_eq!(report["result"], "held");
    // (Each config call writes the same file.)
    let changed = env.config("full_sync_every = \"12h\"");
    let (read, _) = run(&changed, 0);
    assert_eq!(mode(&read).0, "full", "{read}");
    assert!(env.sim.usernames().await.contains(&"heldhire".to_string()));

    // sync.full_sync_every passed: the stored model, brought up to date by a change read (a new hire since), is
    // verified by the full read rather than read whole again; the next run reads the changes since from it. The
    // control: the run before, after the configuration changed, built it.
    // (5 s: the run after it begins well within that.)
    let soon = env.config("full_sync_every = \"5s\"");
    let (read, _) = run(&soon, 0);
    assert_eq!((mode(&read).0, &read["model"]), ("full", &json!("built")), "{read}");
    std::thread::sleep(Duration::from_millis(5100));
    env.add_person("laterhire");
    env.change_members("Other", &["laterhire"], &[]);
    let (read, _) = run(&soon, 0);
    assert!(reason(&read).contains("full_sync_every") && mode(&read).0 == "full", "{read}");
    assert_eq!(read["model"], "verified", "{read}");
    assert!(env.sim.usernames().await.contains(&"laterhire".to_string()));
    let (read, _) = run(&soon, 0);
    assert_eq!((mode(&read).0, &read["model"]), ("changes", &Value::Null), "{read}");

    // "0s": every run reads in full, and no model is built or stored.
    let always = env.config("full_sync_every = \"0s\"");
    for _ in 0..2 {
        let (read, _) = run(&always, 0);
        assert_eq!(mode(&read), ("full", "none"), "{read}");
        assert!(reason(&read).contains("\"0s\""), "{read}");
    }
    let db = rusqlite::Connection::open(env.state().join("state.db")).unwrap();
    let stored: i64 = db.query_row("SELECT count(*) FROM kept_model_body", [], |r| r.get(0)).unwrap();
    assert_eq!(stored, 0, "no model stored");
}

// ------------------------------------------------------------------ the proof, end to end

/// The groups of the end-to-end proof: G0-G3 configured (G0 mapped to `Lab Users`), G4 not, nested in G1 or not.
const PROOF_GROUPS: [&str; 5] = ["G0", "G1", "G2", "G3", "G4"];

/// What the proof's directory holds: the people, and the members of each group besides `anchor` (who stays in
/// every group: `groupOfNames` needs a member).
struct World {
    people: Vec<String>,
    members: [std::collections::BTreeSet<String>; 5],
    nested: bool,
    next: usize,
}

fn proof_directory(rng: &mut Rng) -> (Directory, World) {
    let mut d = Directory::new();
    let anchor = d.user("anchor");
    let people: Vec<String> = (0..40).map(|n| format!("p{n:02}")).collect();
    let dns: Vec<String> = people.iter().map(|p| d.user(p)).collect();
    let mut members: [std::collections::BTreeSet<String>; 5] = Default::default();
    for (g, name) in PROOF_GROUPS.iter().enumerate() {
        let mut held = vec![anchor.clone()];
        for (p, dn) in people.iter().zip(&dns) {
            if rng.below(2) == 0 {
                members[g].insert(p.clone());
                held.push(dn.clone());
            }
        }
        d.group(name, &held);
    }
    (d, World { people, members, nested: false, next: 40 })
}

/// One random change to the directory, as an administrator would make it (memberships taken out before an
/// entry is deleted or renamed, as the `refint` overlay would); what it was, for the failure message.
fn random_change(stack: &Stack, world: &mut World, rng: &mut Rng) -> String {
    use common::{GROUPS, PEOPLE};
    let person = |world: &World, rng: &mut Rng| world.people[rng.below(world.people.len())].clone();
    let groups_of =
        |world: &World, uid: &str| -> Vec<usize> { (0..5).filter(|&g| world.members[g].contains(uid)).collect() };
    match rng.below(9) {
        0 => {
            let uid = format!("p{:02}", world.next);
            world.next += 1;
            stack.add_person(&uid);
            let g = rng.below(5);
            stack.change_members(PROOF_GROUPS[g], &[&uid], &[]);
            world.members[g].insert(uid.clone());
            world.people.push(uid.clone());
            format!("{uid} hired into {}", PROOF_GROUPS[g])
        }
        1 | 2 => {
            let (uid, g) = (person(world, rng), rng.below(5));
            if world.members[g].insert(uid.clone()) {
                stack.change_members(PROOF_GROUPS[g], &[&uid], &[]);
            }
            format!("{uid} added to {}", PROOF_GROUPS[g])
        }
        3 | 4 => {
            let g = rng.below(5);
            let Some(uid) = world.members[g].iter().nth(rng.below(world.members[g].len())).cloned() else {
                return format!("nobody to take out of {}", PROOF_GROUPS[g]);
            };
            stack.change_members(PROOF_GROUPS[g], &[], &[&uid]);
            world.members[g].remove(&uid);
            format!("{uid} taken out of {}", PROOF_GROUPS[g])
        }
        5 => {
            let nest = format!("member: cn=G4,{GROUPS}\n");
            let change = if world.nested { "delete" } else { "add" };
            stack.slapd.modify(&format!("dn: cn=G1,{GROUPS}\nchangetype: modify\n{change}: member\n{nest}\n"));
            world.nested = !world.nested;
            format!("G4 {} G1", if world.nested { "nested in" } else { "taken out of" })
        }
        6 if world.people.len() > 4 => {
            let uid = world.people.remove(rng.below(world.people.len()));
            for g in groups_of(world, &uid) {
                stack.change_members(PROOF_GROUPS[g], &[], &[&uid]);
                world.members[g].remove(&uid);
            }
            stack.slapd.modify(&format!("dn: uid={uid},{PEOPLE}\nchangetype: delete\n\n"));
            format!("{uid} deleted")
        }
        7 => {
            let at = rng.below(world.people.len());
            let (old, new) = (world.people[at].clone(), format!("p{:02}", world.next));
            world.next += 1;
            let groups = groups_of(world, &old);
            for &g in &groups {
                stack.change_members(PROOF_GROUPS[g], &[], &[&old]);
            }
            stack
                .slapd
                .modify(&format!("dn: uid={old},{PEOPLE}\nchangetype: modrdn\nnewrdn: uid={new}\ndeleteoldrdn: 1\n\n"));
            for &g in &groups {
                stack.change_members(PROOF_GROUPS[g], &[&new], &[]);
                world.members[g].remove(&old);
                world.members[g].insert(new.clone());
            }
            world.people[at] = new.clone();
            format!("{old} renamed {new}")
        }
        _ => {
            let (uid, from, to) = (person(world, rng), rng.below(5), rng.below(5));
            if from != to && world.members[from].contains(&uid) && !world.members[to].contains(&uid) {
                stack.change_members(PROOF_GROUPS[from], &[], &[&uid]);
                stack.change_members(PROOF_GROUPS[to], &[&uid], &[]);
                world.members[from].remove(&uid);
                world.members[to].insert(uid.clone());
            }
            format!("{uid} moved from {} to {}", PROOF_GROUPS[from], PROOF_GROUPS[to])
        }
    }
}

/// The proof, end to end: random directory changes (people hired, added to and taken out of groups, moved,
/// renamed and deleted; a group nested and taken out again) between one-shot runs that read only what changed,
/// which import, place in `Lab Users`, remove from it and deactivate as they find; mixed with clean slapd restarts
/// and a lost model. After each run a full dry run must plan nothing: whatever a change read missed, a full read
/// would plan. Most runs must be change reads (the control: otherwise the proof proves nothing about them), and
/// the rounds must have deactivated, reactivated and removed someone (the positive controls).
#[tokio::test]
async fn after_random_changes_each_change_run_leaves_a_full_dry_run_nothing_to_plan() {
    for seed in [0x5eed_0001_u64, 0x5eed_0002] {
        proof_rounds(seed).await;
    }
}

async fn proof_rounds(seed: u64) {
    let mut rng = Rng(seed);
    let (directory, mut world) = proof_directory(&mut rng);
    let mut stack = Stack::start_on(common::Slapd::start_with_syncprov(&directory), |_| {});
    let state = stack.files.path("state");
    let sections = format!(
        "[[sync.mapping]]\ndirectory_group = \"G0\"\ncloudshell_groups = [\"Lab Users\"]\n\n\
         [sync.leavers]\naction = \"deactivate\"\nmax_per_run = 1000\nmax_percent = 100\nmax_per_day = 100000\n\
         max_percent_per_day = 100\n\n[monitor]\nstate_directory = \"{}\"\n",
        state.display()
    );
    let sync_extra = "max_shrink_percent = 100\nremove_from_groups = true\nmax_removals_per_run = 1000\n\
                      max_removals_per_day = 100000\n";
    let config = stack.files.config(&stack.slapd.url(), &stack.sim.url(), &PROOF_GROUPS[..4], sync_extra, &sections);
    let (mut history, mut changes, mut acted) = (Vec::new(), 0, [0usize; 3]);
    for round in 0..24 {
        for _ in 0..1 + rng.below(3) {
            history.push(random_change(&stack, &mut world, &mut rng));
        }
        match rng.below(12) {
            0 => {
                stack.slapd.restart_clean();
                history.push("slapd restarted".into());
            }
            1 if round > 0 => {
                sql(&state, "DELETE FROM kept_model");
                history.push("the stored model lost".into());
            }
            _ => {}
        }
        let context = format!("seed {seed:#x}, round {round}:\n{}", history.join("\n"));
        let (code, report, stderr) = sync_json(&config, &[]);
        assert_eq!(code, 0, "{context}\n{report}\n{stderr}");
        changes += usize::from(report["read"]["mode"] == "changes");
        let count = |v: &Value| v.as_array().map_or(0, Vec::len);
        acted[0] += count(&report["leavers"]["deactivated"]);
        acted[1] += count(&report["leavers"]["reactivated"]);
        acted[2] += report["memberships"]
            .as_array()
            .map_or(0, |m| m.iter().map(|g| g["removed"].as_u64().unwrap_or(0) as usize).sum());
        let (code, plan, stderr) = sync_json(&config, &["--dry-run", "--detailed-exitcode"]);
        assert_eq!(plan["read"]["mode"], "full", "{context}\n{plan}");
        assert_eq!(
            code, 0,
            "a full read plans what the change run did not do; {context}\nthe run: {report}\nthe plan: {plan}\n{stderr}"
        );
        history.push(format!("-- run {round}: {}", report["read"]["mode"]));
    }
    eprintln!("seed {seed:#x}: {changes} change runs of 24; deactivated, reactivated, removed: {acted:?}");
    assert!(changes >= 16, "seed {seed:#x}: only {changes} change runs:\n{}", history.join("\n"));
    assert!(acted.iter().all(|&n| n > 0), "seed {seed:#x}: {acted:?}:\n{}", history.join("\n"));
}
