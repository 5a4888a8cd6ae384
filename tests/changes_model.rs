//! The kept directory model (`ldap::changes::kept`) against a real slapd with `syncprov`, with the session log
//! and without it: after every round of random directory changes (users added, deleted, renamed, moved out of
//! the base and back, disabled and enabled, their usernames changed; members added and removed; groups nested,
//! renamed, given a second name, deleted), mixed with lost cookies and clean slapd restarts (a crash is its own
//! test: see `kept`'s module doc for what a crash loses that no read can tell), the snapshot resolved
//! from the model's entries equals the snapshot of a full read, for several settings. Where the model says a
//! full read is needed, the reason is checked to be true. The seed is printed; set `CHANGES_MODEL_SEED` to
//! replay one.

mod common;

use std::time::Duration;

use cloudshell_ldap_sync::group_name::GroupName;
use cloudshell_ldap_sync::ldap::changes::kept::{Kept, NeedsFullRead, Part, Source};
use cloudshell_ldap_sync::ldap::changes::syncrepl::{EntryUuid, SyncError};
use cloudshell_ldap_sync::ldap::{self, Error, GroupOutcome, Nesting, Settings, Snapshot};
use common::{Directory, Rng, SERVICE_DN, SERVICE_PASSWORD, Slapd, ldap_settings, ldif_line};

const BASE: &str = "ou=in,dc=example,dc=org";
const PEOPLE: &str = "ou=people,ou=in,dc=example,dc=org";
const GROUPS: &str = "ou=groups,ou=in,dc=example,dc=org";
const TEAMS: &str = "ou=teams,ou=in,dc=example,dc=org";
/// Outside the base: where users and groups move out to.
const OUT: &str = "ou=out,dc=example,dc=org";
const TIMEOUT: Duration = Duration::from_secs(10);
/// Usernames drawn from a pool small enough that some collide (`ann` and `ANN` always do).
const USERNAMES: [&str; 24] = [
    "ann", "ben", "cat", "dan", "eve", "fay", "gus", "hal", "ivy", "jo", "kim", "lee", "max", "ned", "oz", "pam",
    "quinn", "ray", "sue", "tom", "uma", "vic", "wes", "ANN",
];
/// Group names, some of them configured.
const GROUP_NAMES: [&str; 10] = ["G0", "G1", "G2", "G3", "G4", "g1", "G2", "G4", "X", "Y"];
const CONFIGURED: [&str; 6] = ["G0", "G1", "g2", "G3", "G4", "Missing"];

fn seed() -> u64 {
    common::seed("CHANGES_MODEL_SEED")
}

/// What the test knows of the directory, to choose changes that slapd accepts.
struct World {
    /// User DNs (under the base or outside it).
    users: Vec<String>,
    /// Group DNs, with their member values in order.
    groups: Vec<(String, Vec<String>)>,
    /// Only changes a `modifyTimestamp` read sees: no entry deleted or moved out of the base.
    visible_only: bool,
    next: usize,
}

fn user_ldif(dn: &str, uid: &str, disabled: bool) -> String {
    let uac = if disabled { 514 } else { 512 };
    format!(
        "{}objectClass: inetOrgPerson\nobjectClass: accountControl\n{}cn: x\nsn: x\nuserAccountControl: {uac}\n\n",
        ldif_line("dn", dn),
        ldif_line("uid", uid)
    )
}

fn group_ldif(dn: &str, cn: &str, members: &[String]) -> String {
    let mut out = ldif_line("dn", dn) + "objectClass: groupOfNames\n" + &ldif_line("cn", cn);
    for m in members {
        out.push_str(&ldif_line("member", m));
    }
    out + "\n"
}

fn rdn_value(dn: &str) -> &str {
    dn.split(',').next().and_then(|rdn| rdn.split_once('=')).map(|(_, v)| v).expect("a DN")
}

fn parent(dn: &str) -> &str {
    dn.split_once(',').map(|(_, p)| p).expect("a DN with a parent")
}

impl World {
    /// The seed: 12 users, 5 groups (some nested), under `ou=in`; one user and one group outside it.
    fn seed(rng: &mut Rng) -> (World, Directory) {
        let mut d = Directory::new();
        d.raw(&format!(
            "dn: {BASE}\nobjectClass: organizationalUnit\nou: in\n\n\
             dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people\n\n\
             dn: {GROUPS}\nobjectClass: organizationalUnit\nou: groups\n\n\
             dn: {TEAMS}\nobjectClass: organizationalUnit\nou: teams\n\n\
             dn: {OUT}\nobjectClass: organizationalUnit\nou: out\n\n"
        ));
        let mut world = World { users: Vec::new(), groups: Vec::new(), visible_only: false, next: 0 };
        for n in 0..12 {
            let dn = format!("cn=u{n},{PEOPLE}");
            d.raw(&user_ldif(&dn, USERNAMES[n % USERNAMES.len()], n % 5 == 4));
            world.users.push(dn);
        }
        let far_user = format!("cn=far,{OUT}");
        d.raw(&user_ldif(&far_user, "far", false));
        world.users.push(far_user);
        // A group outside the base: only a read tells it from a user or nothing.
        d.raw(&group_ldif(&format!("cn=far-group,{OUT}"), "far-group", &[world.users[0].clone()]));
        world.next = 100;
        for (n, name) in ["G0", "G1", "G2", "G3", "X"].iter().enumerate() {
            let mut members: Vec<String> = (0..3).filter_map(|_| rng.pick(&world.users[..12]).cloned()).collect();
            members.dedup();
            if n > 0 {
                members.push(world.groups[n - 1].0.clone());
            }
            let dn = format!("cn={name},{GROUPS}");
            d.raw(&group_ldif(&dn, name, &members));
            world.groups.push((dn, members));
        }
        (world, d)
    }

    fn fresh(&mut self) -> usize {
        self.next += 1;
        self.next
    }

    /// Users and groups under the base.
    fn member_candidates(&self) -> Vec<String> {
        let mut all: Vec<String> = self.users.iter().filter(|u| !u.ends_with(OUT)).cloned().collect();
        all.extend(self.groups.iter().map(|(dn, _)| dn.clone()));
        all
    }

    /// One random change, applied to slapd; a short description for the failure message.
    fn change(&mut self, rng: &mut Rng, slapd: &Slapd) -> String {
        loop {
            if let Some(done) = self.try_change(rng, slapd) {
                return done;
            }
        }
    }

    fn try_change(&mut self, rng: &mut Rng, slapd: &Slapd) -> Option<String> {
        let op = rng.below(16);
        if self.visible_only && matches!(op, 2 | 4 | 13) {
            return None;
        }
        match op {
            0 | 1 => {
                let n = self.fresh();
                let out = rng.chance(10);
                let dn = format!("cn=u{n},{}", if out { OUT } else { PEOPLE });
                let uid = rng.pick(&USERNAMES)?;
                slapd.add(&user_ldif(&dn, uid, rng.chance(20)));
                self.users.push(dn.clone());
                Some(format!("add user {dn} ({uid})"))
            }
            2 => {
                let i = rng.below(self.users.len().max(1));
                let dn = self.users.get(i)?.clone();
                slapd.modify(&format!("{}changetype: delete\n\n", ldif_line("dn", &dn)));
                self.users.remove(i);
                Some(format!("delete user {dn}"))
            }
            3 => {
                // Rename (modrdn) in place; groups keep the old DN (no refint), and sometimes get the new one.
                let i = rng.below(self.users.len().max(1));
                let dn = self.users.get(i)?.clone();
                let n = self.fresh();
                let new = format!("cn=u{n},{}", parent(&dn));
                slapd.modify(&format!(
                    "{}changetype: modrdn\nnewrdn: cn=u{n}\ndeleteoldrdn: 1\n\n",
                    ldif_line("dn", &dn)
                ));
                self.users[i] = new.clone();
                if rng.chance(50) {
                    self.add_member_to_random_group(rng, slapd, &new);
                }
                Some(format!("rename user {dn} to {new}"))
            }
            4 => {
                // Move out of the base, or back in; sometimes out and back in before the next read.
                let i = rng.below(self.users.len().max(1));
                let dn = self.users.get(i)?.clone();
                let to = if dn.ends_with(OUT) { PEOPLE } else { OUT };
                let new = format!("cn={},{to}", rdn_value(&dn));
                slapd.modify(&format!(
                    "{}changetype: modrdn\nnewrdn: cn={}\ndeleteoldrdn: 1\nnewsuperior: {to}\n\n",
                    ldif_line("dn", &dn),
                    rdn_value(&dn)
                ));
                if rng.chance(30) {
                    slapd.modify(&format!(
                        "{}changetype: modrdn\nnewrdn: cn={}\ndeleteoldrdn: 1\nnewsuperior: {}\n\n",
                        ldif_line("dn", &new),
                        rdn_value(&dn),
                        parent(&dn)
                    ));
                    return Some(format!("move user {dn} to {to} and back"));
                }
                self.users[i] = new.clone();
                if to == OUT && rng.chance(70) {
                    // Groups usually forget people who leave (else every nested read needs a full read).
                    self.remove_everywhere(slapd, &dn);
                }
                Some(format!("move user {dn} to {new}"))
            }
            5 => {
                let dn = rng.pick(&self.users)?.clone();
                let uac = if rng.chance(50) { 514 } else { 512 };
                slapd.modify(&format!(
                    "{}changetype: modify\nreplace: userAccountControl\nuserAccountControl: {uac}\n\n",
                    ldif_line("dn", &dn)
                ));
                Some(format!("userAccountControl {uac} on {dn}"))
            }
            6 => {
                let dn = rng.pick(&self.users)?.clone();
                let uid = rng.pick(&USERNAMES)?;
                let change = match rng.below(5) {
                    0 => "add".to_string(),    // a second value: ambiguous
                    1 => "delete".to_string(), // none: unusable
                    _ => "replace".to_string(),
                };
                let ldif = match change.as_str() {
                    "delete" => format!("{}changetype: modify\ndelete: uid\n\n", ldif_line("dn", &dn)),
                    c => format!("{}changetype: modify\n{c}: uid\n{}\n", ldif_line("dn", &dn), ldif_line("uid", uid)),
                };
                // Adding a value already there, or deleting an absent attribute, is refused: choose again.
                let ok = modify_may_fail(slapd, &ldif);
                ok.then(|| format!("{change} uid {uid} on {dn}"))
            }
            7..=9 => {
                let candidates = self.member_candidates();
                let member = match rng.below(10) {
                    0 => format!("cn=ghost{},{GROUPS}", self.fresh()),
                    1 => match rng.chance(50) {
                        true => format!("cn=far-group,{OUT}"),
                        false => rng.pick(&self.users)?.clone(),
                    },
                    _ => rng.pick(&candidates)?.clone(),
                };
                self.add_member_to_random_group(rng, slapd, &member).then(|| format!("add member {member}"))
            }
            10 | 11 => {
                // Members outside the base first, half the time: each keeps a nested read from the model.
                let outside =
                    self.groups.iter().position(|(_, ms)| ms.len() > 1 && ms.iter().any(|m| m.ends_with(OUT)));
                let g = match outside {
                    Some(g) if rng.chance(50) => g,
                    _ => rng.below(self.groups.len().max(1)),
                };
                let (dn, members) = self.groups.get(g)?.clone();
                if members.len() < 2 {
                    return None; // groupOfNames needs a member
                }
                let m = match members.iter().position(|m| m.ends_with(OUT)) {
                    Some(m) if outside == Some(g) => m,
                    _ => rng.below(members.len()),
                };
                slapd.modify(&format!(
                    "{}changetype: modify\ndelete: member\n{}\n",
                    ldif_line("dn", &dn),
                    ldif_line("member", &members[m])
                ));
                self.groups[g].1.remove(m);
                Some(format!("remove member {} from {dn}", members[m]))
            }
            12 => {
                let g = rng.below(self.groups.len().max(1));
                let dn = self.groups.get(g)?.0.clone();
                let name = rng.pick(&GROUP_NAMES)?;
                let ou = if rng.chance(30) { TEAMS } else { parent(&dn) };
                let new = format!("cn={name},{ou}");
                if self.groups.iter().any(|(d, _)| d.eq_ignore_ascii_case(&new)) {
                    return None;
                }
                let superior = if ou == parent(&dn) { String::new() } else { format!("newsuperior: {ou}\n") };
                let ok = modify_may_fail(
                    slapd,
                    &format!(
                        "{}changetype: modrdn\nnewrdn: cn={name}\ndeleteoldrdn: 1\n{superior}\n",
                        ldif_line("dn", &dn)
                    ),
                );
                if !ok {
                    return None; // cn=G1 and cn=g1 are the same RDN
                }
                self.groups[g].0 = new.clone();
                Some(format!("rename group {dn} to {new}"))
            }
            13 => {
                if self.groups.len() < 6 {
                    return None; // keep some groups to nest and name
                }
                let g = rng.below(self.groups.len().max(1));
                let dn = self.groups.get(g)?.0.clone();
                slapd.modify(&format!("{}changetype: delete\n\n", ldif_line("dn", &dn)));
                self.groups.remove(g);
                Some(format!("delete group {dn}"))
            }
            14 => {
                let name = rng.pick(&GROUP_NAMES)?;
                let ou = if rng.chance(40) { TEAMS } else { GROUPS };
                let dn = format!("cn={name},{ou}");
                if self.groups.iter().any(|(d, _)| d.eq_ignore_ascii_case(&dn)) {
                    return None;
                }
                let candidates = self.member_candidates();
                let mut members: Vec<String> =
                    (0..1 + rng.below(3)).filter_map(|_| rng.pick(&candidates).cloned()).collect();
                members.sort();
                members.dedup();
                slapd.add(&group_ldif(&dn, name, &members));
                self.groups.push((dn.clone(), members));
                Some(format!("add group {dn}"))
            }
            _ => {
                // A second name on a group (the RDN's value stays).
                let dn = rng.pick(&self.groups)?.0.clone();
                let name = rng.pick(&GROUP_NAMES)?;
                modify_may_fail(
                    slapd,
                    &format!("{}changetype: modify\nadd: cn\n{}\n", ldif_line("dn", &dn), ldif_line("cn", name)),
                )
                .then(|| format!("second name {name} on {dn}"))
            }
        }
    }

    fn add_member_to_random_group(&mut self, rng: &mut Rng, slapd: &Slapd, member: &str) -> bool {
        let g = rng.below(self.groups.len().max(1));
        let Some((dn, members)) = self.groups.get(g) else {
            return false;
        };
        if members.iter().any(|m| m.eq_ignore_ascii_case(member)) {
            return false;
        }
        slapd.modify(&format!(
            "{}changetype: modify\nadd: member\n{}\n",
            ldif_line("dn", dn),
            ldif_line("member", member)
        ));
        self.groups[g].1.push(member.to_string());
        true
    }

    /// Removes `member` from every group where it is not the last member.
    fn remove_everywhere(&mut self, slapd: &Slapd, member: &str) {
        for (dn, members) in &mut self.groups {
            if members.len() > 1
                && let Some(i) = members.iter().position(|m| m == member)
            {
                slapd.modify(&format!(
                    "{}changetype: modify\ndelete: member\n{}\n",
                    ldif_line("dn", dn),
                    ldif_line("member", member)
                ));
                members.remove(i);
            }
        }
    }
}

/// `ldapmodify` as the rootdn; whether slapd accepted the change.
fn modify_may_fail(slapd: &Slapd, ldif: &str) -> bool {
    use std::io::Write;
    let mut child = std::process::Command::new("ldapmodify")
        .args(["-x", "-H", &slapd.url(), "-D", common::ADMIN_DN, "-w", common::ADMIN_PASSWORD])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("ldapmodify");
    child.stdin.take().expect("piped").write_all(ldif.as_bytes()).expect("writing to ldapmodify");
    child.wait().expect("ldapmodify").success()
}

/// The settings compared each round (all bound as the ordinary service account, base `ou=in`).
fn variants(url: &str) -> Vec<(&'static str, Settings)> {
    let base = Settings { base_dn: BASE.into(), user_filter: "(objectClass=person)".into(), ..ldap_settings(url) };
    vec![
        ("recursive", base.clone()),
        ("recursive, depth 2", Settings { max_nesting_depth: 2, ..base.clone() }),
        ("auto", Settings { nesting: Nesting::Auto, ..base.clone() }),
        ("off", Settings { nesting: Nesting::Off, ..base.clone() }),
        ("off, disabled included", Settings { nesting: Nesting::Off, include_disabled: true, ..base }),
    ]
}

fn configured() -> Vec<GroupName> {
    CONFIGURED.iter().map(|n| GroupName::new(n)).collect()
}

/// A snapshot's groups, each outcome whole: everything but the counts of searches made. The model orders
/// entries as slapd returns them (by creation), so even the orders that follow the server's (the DNs within a
/// collision, of an ambiguous name; which entry of a collision is named first) compare exactly.
fn groups(snapshot: &Snapshot) -> Vec<(String, Result<ldap::Group, Error>)> {
    snapshot.groups.iter().map(|GroupOutcome { name, result }| (name.clone(), result.clone())).collect()
}

async fn bind(slapd: &Slapd) -> ldap3::Ldap {
    let (conn, mut ldap) = ldap3::LdapConnAsync::new(&slapd.url()).await.expect("connecting to slapd");
    ldap3::drive!(conn);
    ldap.simple_bind(SERVICE_DN, SERVICE_PASSWORD).await.expect("bind").success().expect("bind accepted");
    ldap
}

/// Reads changes into the model (from scratch when it is new). A cookie slapd refuses (after a restart
/// that lost its last contextCSN checkpoint, slapd answers 53 "consumer state is newer than provider") means
/// starting again from no cookie (`fresh`), as a daemon does; returns whether that happened.
async fn read_changes(slapd: &Slapd, kept: &mut Kept, fresh: impl Fn() -> Kept) -> bool {
    read_counting(slapd, kept, fresh).await.0
}

/// [`read_changes`], with the users the server sent and the users kept.
async fn read_counting(slapd: &Slapd, kept: &mut Kept, fresh: impl Fn() -> Kept) -> (bool, usize, usize) {
    let mut ldap = bind(slapd).await;
    let (refused, sent) = match kept.read(&mut ldap, &slapd.url(), TIMEOUT).await {
        Ok(changes) => (false, changes.users.sent),
        Err(e) if e.needs_full_read() => {
            *kept = fresh();
            let changes =
                kept.read(&mut ldap, &slapd.url(), TIMEOUT).await.expect("a content-sync read without a cookie");
            (true, changes.users.sent)
        }
        Err(e) => panic!("a change read: {e}"),
    };
    let _ = ldap.unbind().await;
    (refused, sent, kept.len(Part::Users))
}

#[derive(Default, Debug)]
struct Tally {
    compared: usize,
    /// Rounds a variant needed a full read for a member outside the base (checked true).
    outside: usize,
    /// Rounds the directory held entries newer than its content-sync answers (after a restart only).
    behind: usize,
    /// Configured groups whose outcome a patched resolve kept from its last one (`Kept::resolve`).
    kept_outcomes: usize,
}

/// The two models each round: groups read under the base DN, and under the whole suffix.
const MODELS: [&str; 2] = ["groups under the base", "groups under the suffix"];

fn fresh(settings: &Settings, model: usize, source: Source) -> Kept {
    match model {
        0 => Kept::new(settings),
        _ => Kept::with_groups_base(settings, common::BASE_DN),
    }
    .reading_by(source)
}

/// Panics, saying where, when a snapshot from a model differs from the full read's.
fn same(full: &Snapshot, model: &Snapshot, context: &str) {
    assert_eq!(model.users_seen, full.users_seen, "users seen; {context}");
    let (want, got) = (groups(full), groups(model));
    if want != got {
        for ((name, w), (_, g)) in want.iter().zip(&got) {
            if w != g {
                eprintln!("{name}:\n  full read: {w:?}\n  model:     {g:?}");
            }
        }
        panic!("the model differs from a full read; {context}");
    }
}

/// Compares each model with a full read for every variant, counting what the comparisons found. Each model is
/// compared twice: resolved whole (`Kept::entries`), and resolved by `Kept::resolve` from a model of its own
/// for each variant (`patched[model][variant]`, read as the model is), which patches its last resolve.
async fn compare(
    slapd: &Slapd,
    kepts: &[Kept],
    patched: &mut [Vec<Kept>],
    tally: &mut [Vec<Tally>],
    restarted: bool,
    context: &str,
) {
    let names = configured();
    for (v, (label, s)) in variants(&slapd.url()).iter().enumerate() {
        let full = ldap::Connection::open(s).await.expect("bind").read(&names).await;
        let full = ldap::resolve(&full, s, &names);
        for (m, kept) in kepts.iter().enumerate() {
            let t = &mut tally[m][v];
            let context = format!("{label}, {}; {context}", MODELS[m]);
            let entries = kept.entries(s, &names);
            let resolved = patched[m][v].resolve(s, &names);
            match (&entries, &resolved) {
                (Ok(_), Ok(resolved)) => {
                    same(&full, &resolved.snapshot, &format!("patched; {context}"));
                    t.kept_outcomes += names.len() - resolved.resolved;
                }
                (Err(whole), Err(patched)) => assert_eq!(whole, patched, "{context}"),
                _ => panic!("{context}: resolved whole {:?}, patched {:?}", entries.as_ref().err(), resolved.err()),
            }
            match entries {
                Ok(entries) => {
                    same(&full, &ldap::resolve(&entries, s, &names), &context);
                    t.compared += 1;
                }
                // Only the model whose groups are read under the base DN cannot tell.
                Err(NeedsFullRead::MemberOutsideBase { member, base_dn, .. }) if m == 0 => {
                    assert_eq!(base_dn, BASE, "{context}");
                    assert!(member.ends_with(OUT), "{member} is outside the base; {context}");
                    t.outside += 1;
                }
                Err(NeedsFullRead::ProviderBehind { .. }) if restarted => t.behind += 1,
                Err(e) => panic!("the model asks for a full read without cause: {e}; {context}"),
            }
        }
    }
}

async fn random_rounds(mut slapd: Slapd, mut rng: Rng, world: &mut World, seed: u64, fixture: &str, source: Source) {
    const ROUNDS: usize = 80;
    let settings = variants(&slapd.url())[0].1.clone();
    let mut kepts: Vec<Kept> = (0..MODELS.len()).map(|m| fresh(&settings, m, source)).collect();
    for (m, kept) in kepts.iter_mut().enumerate() {
        assert!(!read_changes(&slapd, kept, || fresh(&settings, m, source)).await);
    }
    let variants_count = variants(&slapd.url()).len();
    let new_patched = || -> Vec<Vec<Kept>> {
        (0..MODELS.len()).map(|m| (0..variants_count).map(|_| fresh(&settings, m, source)).collect()).collect()
    };
    let mut patched = new_patched();
    for (m, kepts) in patched.iter_mut().enumerate() {
        for kept in kepts {
            assert!(!read_changes(&slapd, kept, || fresh(&settings, m, source)).await);
        }
    }
    // Users sent by the change reads, and users kept: a read from a watermark sends only what changed.
    let (mut sent, mut held) = (0, 0);
    let mut tally: Vec<Vec<Tally>> =
        MODELS.iter().map(|_| variants(&slapd.url()).iter().map(|_| Tally::default()).collect()).collect();
    let first = format!("seed {seed}, {fixture}, the first read");
    compare(&slapd, &kepts, &mut patched, &mut tally, false, &first).await;
    let mut history: Vec<String> = Vec::new();
    let mut refused = 0;
    for round in 0..ROUNDS {
        for _ in 0..1 + rng.below(4) {
            history.push(world.change(&mut rng, &slapd));
        }
        let event = rng.below(20);
        let restarted = event == 1;
        if event == 0 {
            history.push("lost cookie".into());
            kepts = (0..MODELS.len()).map(|m| fresh(&settings, m, source)).collect();
            patched = new_patched();
        } else if restarted {
            history.push("slapd restarted".into());
            slapd.restart_clean();
        }
        let fresh_before = kepts[0].is_empty();
        for (m, kept) in kepts.iter_mut().enumerate() {
            let (was_refused, users_sent, users_kept) =
                read_counting(&slapd, kept, || fresh(&settings, m, source)).await;
            if was_refused {
                history.push(format!("cookie refused ({}): read again without it", MODELS[m]));
                refused += 1;
            } else if !fresh_before {
                (sent, held) = (sent + users_sent, held + users_kept);
            }
        }
        for (m, kepts) in patched.iter_mut().enumerate() {
            for kept in kepts {
                read_changes(&slapd, kept, || fresh(&settings, m, source)).await;
            }
        }
        let recent = history.iter().rev().take(6).rev().cloned().collect::<Vec<_>>().join("; ");
        let context = format!("seed {seed}, {fixture}, round {round}, last changes: {recent}");
        compare(&slapd, &kepts, &mut patched, &mut tally, restarted, &context).await;
    }
    eprintln!("{fixture}: {tally:?}; cookie refused {refused} times; users sent {sent} of {held} kept");
    // Whole reads would send every user kept. By modifyTimestamp, what changed within the last few seconds (the
    // margin, the read's length and a second), which in rounds this quick is most of them, though never all:
    // `a_modify_timestamp_read_sends_only_what_changed_within_the_margin_in_either_part` measures the window.
    assert!(sent < held, "change reads sent {sent} users for {held} kept: not only what changed ({fixture})");
    for (m, model) in MODELS.iter().enumerate() {
        for ((label, _), t) in variants(&slapd.url()).iter().zip(&tally[m]) {
            let at_least = if m == 0 { ROUNDS / 3 } else { ROUNDS / 2 };
            assert!(
                t.compared >= at_least,
                "{label}, {model}: compared in {} rounds only (seed {seed}, {fixture})",
                t.compared
            );
            // The control: the patched resolves did keep outcomes, so the comparison covered patches. Not at
            // depth 2, where this world's nested groups reach the cap often enough that a seed may leave every
            // resolve to the whole model (a group at the cap is resolved again, and its walk alone stops there).
            let at_the_cap = label.contains("depth");
            assert!(
                at_the_cap || t.kept_outcomes > 0,
                "{label}, {model}: no resolve was patched (seed {seed}, {fixture})"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kept_model_resolves_as_a_full_read_after_random_changes_with_the_session_log() {
    let seed = seed();
    eprintln!("CHANGES_MODEL_SEED={seed}");
    let mut rng = Rng(seed);
    let (mut world, d) = World::seed(&mut rng);
    let fixture = "with the session log";
    random_rounds(Slapd::start_with_syncprov(&d), rng, &mut world, seed, fixture, Source::ContentSync).await;
}

/// The same by `modifyTimestamp` (a slapd without `syncprov`), with only the changes it can see: no entry
/// deleted or moved out of the base (what it cannot see is [`a_modify_timestamp_read_does_not_see_a_deletion`]).
/// The margin is one second, so that most rounds read from a watermark that leaves most entries out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kept_model_resolves_as_a_full_read_after_random_changes_by_modify_timestamp() {
    let seed = seed().rotate_left(31) | 1;
    eprintln!("CHANGES_MODEL_SEED={seed} (by modifyTimestamp)");
    let mut rng = Rng(seed);
    let (mut world, d) = World::seed(&mut rng);
    world.visible_only = true;
    let source = Source::ModifyTimestamp { margin: Duration::from_secs(1) };
    random_rounds(Slapd::start(&d), rng, &mut world, seed, "by modifyTimestamp", source).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kept_model_resolves_as_a_full_read_after_random_changes_without_the_session_log() {
    let seed = seed().rotate_left(17) | 1;
    eprintln!("CHANGES_MODEL_SEED={seed} (without the session log)");
    let mut rng = Rng(seed);
    let (mut world, d) = World::seed(&mut rng);
    let fixture = "without the session log";
    random_rounds(Slapd::start_with_syncprov_no_sessionlog(&d), rng, &mut world, seed, fixture, Source::ContentSync)
        .await;
}

/// Not random: a group with two names, both configured, in one name search and in two (50 names apart): the
/// model reads as the full read does, and both names mean that group. (The full read had recorded an entry
/// under one name per search: in one search the second name was "not found", with a filter that matches the
/// entry, and in two the first was not found and the second "ambiguous" between the entry and itself.)
#[tokio::test]
async fn a_group_with_two_configured_names_reads_alike() {
    let (_, mut d) = World::seed(&mut Rng(7));
    d.raw(&format!("dn: cn=Both,{GROUPS}\nobjectClass: groupOfNames\ncn: Both\ncn: Twice\nmember: cn=u0,{PEOPLE}\n\n"));
    let slapd = Slapd::start_with_syncprov(&d);
    let s = Settings { base_dn: BASE.into(), nesting: Nesting::Off, ..ldap_settings(&slapd.url()) };
    let mut kept = Kept::new(&s);
    assert!(!read_changes(&slapd, &mut kept, || Kept::new(&s)).await);
    let both = format!("cn=Both,{GROUPS}");
    let mut far_apart: Vec<GroupName> = vec![GroupName::new("Both")];
    far_apart.extend((0..49).map(|n| GroupName::new(&format!("filler{n}"))));
    far_apart.push(GroupName::new("Twice"));
    for names in [vec![GroupName::new("Both"), GroupName::new("Twice")], far_apart] {
        let full = ldap::Connection::open(&s).await.expect("bind").read(&names).await;
        let full = ldap::resolve(&full, &s, &names);
        let model = ldap::resolve(&kept.entries(&s, &names).expect("entries"), &s, &names);
        assert_eq!(groups(&model), groups(&full));
        // Each configured name means the one entry that holds it, whether the two names were searched together
        // or in two batches (it had been "not found" for one and "ambiguous" with its own DN twice).
        for n in [0, names.len() - 1] {
            let group = full.groups[n].result.as_ref().unwrap_or_else(|e| panic!("{}: {e}", names[n]));
            assert_eq!(group.dn, both, "{}", names[n]);
            assert_eq!(group.members.len(), 1, "{}", names[n]);
        }
    }
}

/// Observed: slapd killed and restarted sets contextCSN back to its last checkpoint, refuses a cookie newer
/// than that (53), and answers content sync, even without a cookie, only with entries up to it: the entries
/// changed since are left out. The model says so (a full read is needed) until a write moves contextCSN on,
/// after which a read with the cookie it got sends the entry and the model reads as a full read again.
#[tokio::test]
async fn after_a_crash_the_model_asks_for_a_full_read_until_slapd_catches_up() {
    let (_world, d) = World::seed(&mut Rng(7));
    let mut slapd = Slapd::start_with_syncprov(&d);
    let s =
        Settings { base_dn: BASE.into(), user_filter: "(objectClass=person)".into(), ..ldap_settings(&slapd.url()) };
    let names = configured();
    let mut kept = Kept::new(&s);
    assert!(!read_changes(&slapd, &mut kept, || Kept::new(&s)).await);
    for n in 0..3 {
        slapd.modify(&format!("dn: cn=u{n},{PEOPLE}\nchangetype: modify\nreplace: uid\nuid: renamed{n}\n\n"));
    }
    // Read up to the last write, then killed: the kept cookie is newer than what slapd restarts with.
    assert!(!read_changes(&slapd, &mut kept, || Kept::new(&s)).await);
    slapd.modify(&format!("dn: cn=u5,{PEOPLE}\nchangetype: modify\nreplace: uid\nuid: last\n\n"));
    slapd.restart_with_acl("");
    let mut ldap = bind(&slapd).await;
    let refused =
        kept.read(&mut ldap, &slapd.url(), TIMEOUT).await.expect_err("the cookie is newer than slapd's state");
    assert!(refused.needs_full_read(), "{refused:?}");
    assert!(refused.to_string().contains("consumer state is newer than provider"), "{refused}");
    // Read again from no cookie: the answer leaves out the entry changed last, and the model knows.
    let mut kept = Kept::new(&s);
    let changes = kept.read(&mut ldap, &slapd.url(), TIMEOUT).await.expect("a read without a cookie");
    assert!(changes.behind);
    assert_eq!(changes.searches, 4, "the root DSE, two content-sync searches, the search for newer entries");
    match kept.entries(&s, &names) {
        // slapd came back with its contextCSN after the second write (u1): u2 and u5 are newer.
        Err(NeedsFullRead::ProviderBehind { dn, .. }) => {
            assert!(["u2", "u5"].map(|u| format!("cn={u},{PEOPLE}")).contains(&dn), "{dn}")
        }
        other => panic!("{:?}", other.map(|_| "entries")),
    }
    // A write moves contextCSN on: the next read sends what was left out.
    slapd.modify(&format!("dn: cn=u7,{PEOPLE}\nchangetype: modify\nreplace: uid\nuid: later\n\n"));
    let changes = kept.read(&mut ldap, &slapd.url(), TIMEOUT).await.expect("a read with the cookie");
    assert!(!changes.behind);
    assert_eq!(changes.searches, 3, "the root DSE is read once");
    let _ = ldap.unbind().await;
    let full = ldap::resolve(&ldap::Connection::open(&s).await.expect("bind").read(&names).await, &s, &names);
    let model = ldap::resolve(&kept.entries(&s, &names).expect("entries"), &s, &names);
    assert_eq!(groups(&model), groups(&full));
    assert_eq!(kept.len(cloudshell_ldap_sync::ldap::changes::kept::Part::Users), 12);
}

/// Not random: a level of the walk with 64 or more member DNs that are not users, where the full read sweeps
/// every group under the base at once instead of reading each (and sets aside those under the base it did not
/// find). The model walks the same way: the same snapshot, groups reached only through the sweep included.
#[tokio::test]
async fn a_level_with_many_unknown_member_dns_reads_alike() {
    let (_, mut d) = World::seed(&mut Rng(11));
    let mut members: Vec<String> = (0..70).map(|n| format!("cn=gone{n},{PEOPLE}")).collect();
    members.push(format!("cn=G1,{GROUPS}"));
    members.push(format!("cn=u3,{PEOPLE}"));
    d.raw(&group_ldif(&format!("cn=Big,{TEAMS}"), "Big", &members));
    let slapd = Slapd::start_with_syncprov_no_sessionlog(&d);
    let s = Settings { base_dn: BASE.into(), ..ldap_settings(&slapd.url()) };
    let names: Vec<GroupName> = ["Big", "G0"].map(GroupName::new).to_vec();
    let mut kept = Kept::new(&s);
    assert!(!read_changes(&slapd, &mut kept, || Kept::new(&s)).await);
    let full = ldap::resolve(&ldap::Connection::open(&s).await.expect("bind").read(&names).await, &s, &names);
    let model = ldap::resolve(&kept.entries(&s, &names).expect("entries"), &s, &names);
    assert_eq!(groups(&model), groups(&full));
    let big = full.groups[0].result.as_ref().expect("Big resolves");
    assert_eq!(big.unreadable.len(), 70, "the DNs under the base the sweep did not find");
    assert!(big.sources.len() >= 2, "G1 and what it nests: {:?}", big.sources);
}

/// Not random: member values that name a group under the base in a form a `DnKey` does not reduce as slapd
/// does (another name of the attribute type, its OID). A full read finds the group (slapd resolves the DN);
/// the model finds no kept entry by that key, so it asks for a full read rather than call it neither.
#[tokio::test]
async fn a_member_dn_the_model_cannot_compare_asks_for_a_full_read() {
    let (_, mut d) = World::seed(&mut Rng(13));
    d.raw(&group_ldif(&format!("cn=Alias,{TEAMS}"), "Alias", &[format!("commonName=G1,{GROUPS}")]));
    d.raw(&group_ldif(&format!("cn=Oid,{TEAMS}"), "Oid", &[format!("2.5.4.3=G2,{GROUPS}")]));
    let slapd = Slapd::start_with_syncprov(&d);
    let s = Settings { base_dn: BASE.into(), ..ldap_settings(&slapd.url()) };
    let mut kept = Kept::new(&s);
    assert!(!read_changes(&slapd, &mut kept, || Kept::new(&s)).await);
    for (name, nested) in [("Alias", "G1"), ("Oid", "G2")] {
        let names = vec![GroupName::new(name)];
        let full = ldap::resolve(&ldap::Connection::open(&s).await.expect("bind").read(&names).await, &s, &names);
        let group = full.groups[0].result.as_ref().expect("resolves");
        let sources: Vec<&str> = group.sources.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(sources[..2], [name, nested], "slapd resolves the member DN to the group");
        match kept.entries(&s, &names) {
            Err(NeedsFullRead::UncomparableMember { group, member }) => {
                assert_eq!(group, format!("cn={name},{TEAMS}"));
                assert!(member.ends_with(GROUPS), "{member}");
            }
            other => panic!("{name}: {:?}", other.map(|_| "entries")),
        }
    }
}

/// slapd's contextCSN as it says it now.
fn context_csn(slapd: &Slapd) -> String {
    let url = slapd.url();
    let args = ["-x", "-LLL", "-H", &url, "-D", SERVICE_DN, "-w", SERVICE_PASSWORD, "-s", "base", "-b"];
    let out = std::process::Command::new("ldapsearch")
        .args(args)
        .args([common::BASE_DN, "contextCSN"])
        .output()
        .expect("ldapsearch");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines().find_map(|l| l.strip_prefix("contextCSN: ")).expect("a contextCSN").to_string()
}

/// Observed, and why the model is no substitute for a regular full read: slapd (2.5.13, `syncprov-checkpoint
/// 100 10`) killed and restarted comes back with the contextCSN it had after the second write since it
/// started (its checkpoint). A deletion after that, with a kept cookie equal to that contextCSN, is answered
/// "nothing changed", and with the session log it is never named afterwards either (the log restarts at that
/// contextCSN); without the session log, the present phase after the next write drops it.
#[tokio::test]
async fn a_deletion_just_before_a_crash_is_lost_to_content_sync_with_the_session_log() {
    for session_log in [true, false] {
        let (_, d) = World::seed(&mut Rng(7));
        let mut slapd = match session_log {
            true => Slapd::start_with_syncprov(&d),
            false => Slapd::start_with_syncprov_no_sessionlog(&d),
        };
        let s = Settings { base_dn: BASE.into(), ..ldap_settings(&slapd.url()) };
        let names = vec![GroupName::new("X")];
        let mut kept = Kept::new(&s);
        for n in 0..2 {
            slapd.modify(&format!("dn: cn=u{n},{PEOPLE}\nchangetype: modify\nreplace: uid\nuid: w{n}\n\n"));
        }
        let checkpoint = context_csn(&slapd);
        assert!(!read_changes(&slapd, &mut kept, || Kept::new(&s)).await);
        slapd.modify(&format!("dn: cn=X,{GROUPS}\nchangetype: delete\n\n"));
        slapd.kill();
        slapd.restart_with_acl("");
        assert_eq!(context_csn(&slapd), checkpoint, "slapd restarts with the checkpoint after write 2");
        let mut ldap = bind(&slapd).await;
        let changes = kept.read(&mut ldap, &slapd.url(), TIMEOUT).await.expect("the cookie is accepted");
        assert_eq!((changes.groups.gone, changes.behind), (0, false), "nothing says X is gone");
        let full = ldap::resolve(&ldap::Connection::open(&s).await.expect("bind").read(&names).await, &s, &names);
        assert!(matches!(full.groups[0].result, Err(Error::GroupNotFound { .. })), "X is gone");
        let model = ldap::resolve(&kept.entries(&s, &names).expect("entries"), &s, &names);
        assert!(model.groups[0].result.is_ok(), "the model still has X");
        // A later write, and a read: without the session log, a present phase drops X; with it, X stays.
        slapd.modify(&format!("dn: cn=u5,{PEOPLE}\nchangetype: modify\nreplace: uid\nuid: later\n\n"));
        let changes = kept.read(&mut ldap, &slapd.url(), TIMEOUT).await.expect("a read with the cookie");
        let _ = ldap.unbind().await;
        let model = ldap::resolve(&kept.entries(&s, &names).expect("entries"), &s, &names);
        assert_eq!(model.groups[0].result.is_ok(), session_log, "session log {session_log}: {changes:?}");
    }
}

/// The operator's remedy for the case above, observed: with contextCSN written at every write
/// (`syncprov-checkpoint 1 1`), slapd killed and restarted comes back with the contextCSN of its last write,
/// so a deletion just before the kill is named like any other.
#[tokio::test]
async fn with_a_checkpoint_at_every_write_a_crash_loses_no_deletion() {
    let (_, d) = World::seed(&mut Rng(7));
    let mut slapd = Slapd::start_with_syncprov_checkpoint_each_write(&d);
    let s = Settings { base_dn: BASE.into(), ..ldap_settings(&slapd.url()) };
    let names = vec![GroupName::new("X")];
    let mut kept = Kept::new(&s);
    for n in 0..2 {
        slapd.modify(&format!("dn: cn=u{n},{PEOPLE}\nchangetype: modify\nreplace: uid\nuid: w{n}\n\n"));
    }
    assert!(!read_changes(&slapd, &mut kept, || Kept::new(&s)).await);
    slapd.modify(&format!("dn: cn=X,{GROUPS}\nchangetype: delete\n\n"));
    let last = context_csn(&slapd);
    slapd.kill();
    slapd.restart_with_acl("");
    assert_eq!(context_csn(&slapd), last, "slapd restarts with the contextCSN of its last write");
    assert!(!read_changes(&slapd, &mut kept, || Kept::new(&s)).await, "the cookie is accepted");
    let full = ldap::resolve(&ldap::Connection::open(&s).await.expect("bind").read(&names).await, &s, &names);
    let model = ldap::resolve(&kept.entries(&s, &names).expect("entries"), &s, &names);
    assert_eq!(groups(&model), groups(&full));
    assert!(matches!(model.groups[0].result, Err(Error::GroupNotFound { .. })), "X is gone");
}

/// A directory without `syncprov`: the read fails as content sync's own error, and the model stays unread (a
/// full read is needed), never an empty directory.
#[tokio::test]
async fn without_syncprov_the_model_stays_unread() {
    let (_, d) = World::seed(&mut Rng(7));
    let slapd = Slapd::start(&d);
    let s = Settings { base_dn: BASE.into(), ..ldap_settings(&slapd.url()) };
    let mut kept = Kept::new(&s);
    let mut ldap = bind(&slapd).await;
    let e = kept.read(&mut ldap, &slapd.url(), TIMEOUT).await.expect_err("no content sync");
    assert!(matches!(e, SyncError::Unsupported { .. }), "{e:?}");
    assert_eq!(kept.entries(&s, &configured()).err(), Some(NeedsFullRead::NotRead));
}

/// What a `modifyTimestamp` read cannot see, pinned: a user deleted stays in the model (and in the groups'
/// members it resolves) until the part is read whole again, while a user modified is read (the control).
/// This is why such change reads count no departure.
#[tokio::test]
async fn a_modify_timestamp_read_does_not_see_a_deletion() {
    let (world, d) = World::seed(&mut Rng(7));
    let slapd = Slapd::start(&d);
    let s =
        Settings { base_dn: BASE.into(), user_filter: "(objectClass=person)".into(), ..ldap_settings(&slapd.url()) };
    let source = Source::ModifyTimestamp { margin: Duration::from_secs(1) };
    let fresh = || Kept::new(&s).reading_by(source);
    let mut kept = fresh();
    read_changes(&slapd, &mut kept, fresh).await;
    let users = kept.len(Part::Users);
    let (gone, renamed) = (&world.users[0], &world.users[1]);
    slapd.modify(&format!("{}changetype: delete\n\n", ldif_line("dn", gone)));
    slapd.modify(&format!("{}changetype: modify\nreplace: uid\nuid: renamed\n\n", ldif_line("dn", renamed)));
    let mut ldap = bind(&slapd).await;
    let changes = kept.read(&mut ldap, &slapd.url(), TIMEOUT).await.expect("a modifyTimestamp read");
    assert_eq!((changes.users.changed, changes.users.gone), (1, 0), "the modified user only: {changes:?}");
    assert_eq!(kept.len(Part::Users), users, "the deleted user is still kept");
    let mut whole = fresh();
    read_changes(&slapd, &mut whole, fresh).await;
    assert_eq!(whole.len(Part::Users), users - 1, "a whole read drops it");
}

/// A directory whose entries the bind account reads without `entryUUID` (an ACL hides it): the read fails,
/// naming what is missing, and the model stays unread, never an empty directory.
#[tokio::test]
async fn a_modify_timestamp_read_without_entry_uuids_fails_and_says_why() {
    let (_, d) = World::seed(&mut Rng(7));
    let mut slapd = Slapd::start(&d);
    slapd.restart_with_acl("access to attrs=entryUUID by * none");
    let s = Settings { base_dn: BASE.into(), ..ldap_settings(&slapd.url()) };
    let mut kept = Kept::new(&s).reading_by(Source::ModifyTimestamp { margin: Duration::from_secs(60) });
    let mut ldap = bind(&slapd).await;
    let e = kept.read(&mut ldap, &slapd.url(), TIMEOUT).await.expect_err("no entryUUID");
    assert!(e.to_string().contains("came without entryUUID"), "{e}");
    assert!(kept.is_empty());
    assert!(matches!(kept.entries(&s, &configured()), Err(NeedsFullRead::NotRead)));
}

/// The seeded directory in a slapd with content sync, and settings reading changes by it.
fn content_sync_directory() -> (Slapd, Settings) {
    let (_, d) = World::seed(&mut Rng(7));
    let slapd = Slapd::start_with_syncprov(&d);
    let change_detection = ldap::ChangeDetection::Syncrepl;
    let s = Settings { base_dn: BASE.into(), change_detection, ..ldap_settings(&slapd.url()) };
    (slapd, s)
}

/// A change read continues only on the server the model was read from: after a failover to another server
/// (here, the model made to say it came from elsewhere) the read is refused, naming both, and the run reads in
/// full. The control: the same model on its own server reads its changes.
#[tokio::test]
async fn a_change_read_on_another_server_than_the_models_is_refused() {
    let (_slapd, s) = content_sync_directory();
    let names = configured();
    let open = || async { ldap::Connection::open(&s).await.expect("bind") };
    let (_, kept) = open().await.read_keeping(&names, None).await;
    let (mut kept, _) = kept.expect("a model");
    let here = kept.served_by().to_string();
    assert!(open().await.read_changes(&mut kept, &names, false).await.is_ok(), "the control");
    kept.set_server("ldap://dc2.example.org/", false);
    let Err((_, why)) = open().await.read_changes(&mut kept, &names, false).await else { panic!("read") };
    assert!(why.contains("the directory server changed") && why.contains("ldap://dc2.example.org/"), "{why}");
    assert!(why.contains(&here), "{why}");
}

/// The model a full read builds beside it holds the users that read made, not copies of them: its members are
/// the full snapshot's (the state's records share them, and the daemon keeps the model between runs). The
/// control: a model read on its own makes its own.
#[tokio::test]
async fn a_model_built_beside_a_full_read_holds_that_reads_members() {
    let (slapd, s) = content_sync_directory();
    let names = configured();
    let members = |snapshot: &Snapshot| -> Vec<std::sync::Arc<ldap::Member>> {
        snapshot.groups.iter().filter_map(|g| g.result.as_ref().ok()).flat_map(|g| g.members.iter().cloned()).collect()
    };
    let same = |a: &[std::sync::Arc<ldap::Member>], b: &[std::sync::Arc<ldap::Member>]| {
        assert_eq!(a, b, "the same members");
        a.iter().zip(b).filter(|(a, b)| std::sync::Arc::ptr_eq(a, b)).count()
    };
    let (full, kept) = ldap::Connection::open(&s).await.expect("bind").read_keeping(&names, None).await;
    let (mut kept, _) = kept.expect("a model");
    let from_full = members(&full);
    assert!(from_full.len() > 10, "members to compare: {}", from_full.len());
    let from_model = members(&kept.resolve(&s, &names).expect("resolves").snapshot);
    assert_eq!(same(&from_full, &from_model), from_full.len(), "every member held once");
    // The control.
    let mut alone = Kept::new(&s);
    read_changes(&slapd, &mut alone, || Kept::new(&s)).await;
    let from_alone = members(&alone.resolve(&s, &names).expect("resolves").snapshot);
    assert_eq!(same(&from_full, &from_alone), 0, "a model read alone makes its own");
}

/// An entry as slapd holds it (the attributes the model reads), and its entryUUID.
async fn entry_of(ldap: &mut ldap3::Ldap, dn: &str) -> (EntryUuid, ldap3::SearchEntry) {
    let wanted = vec!["entryUUID", "uid", "userAccountControl", "objectClass"];
    let (entries, _) = ldap.search(dn, ldap3::Scope::Base, "(objectClass=*)", wanted).await.unwrap().success().unwrap();
    let mut entry = ldap3::SearchEntry::construct(entries.into_iter().next().expect("the entry"));
    let uuid = EntryUuid::parse(&entry.attrs.remove("entryUUID").unwrap()[0]).expect("a UUID");
    (uuid, entry)
}

/// A full read that has the model kept from the last one brings it up to date with a change read and keeps it
/// when it resolves whole as the full read did (`verified`), sharing that read's members: the directory is read
/// once. A model that no longer says what the directory does (here, a group entry dropped from it by hand, its
/// cookie kept: no change read brings it back), or one read from another server, is read whole again (`built`)
/// and resolves as the full read. The controls: the change made between the reads is in both, and the first
/// full read, without a model, builds one. A model that said otherwise than the directory is a warning (log
/// monitoring alerts on it: a change was missed); one that cannot be compared (another server) is not.
#[tokio::test]
async fn a_full_read_verifies_the_kept_model_and_reads_it_whole_when_it_differs() {
    use cloudshell_ldap_sync::ldap::ModelMade;
    use cloudshell_ldap_sync::ldap::changes::syncrepl::{ChangeKind, ChangedEntry, Refresh, SyncRead};
    let (slapd, s) = content_sync_directory();
    let names = configured();
    let read = |earlier: Option<Kept>| {
        let s = &s;
        let names = &names;
        async move {
            let (full, kept) = ldap::Connection::open(s).await.expect("bind").read_keeping(names, earlier).await;
            let (mut kept, made) = kept.expect("a model");
            let from_model = kept.resolve(s, names).expect("resolves").snapshot;
            same(&full, &from_model, "the model kept");
            (full, kept, made)
        }
    };
    // A user in no group: only the users themselves tell a model that has it wrong.
    slapd.add(&user_ldif(&format!("cn=loner,{PEOPLE}"), "loner", false));
    // The verification's line, if any: its level and message.
    let verdict = |log: &str| {
        let line = log.lines().find(|l| l.contains("the kept directory model"))?;
        Some((line.split_whitespace().next()?.to_string(), line.to_string()))
    };
    let warned = |log: &str| verdict(log).is_some_and(|(level, line)| level == "WARN" && line.contains("differs"));
    let (first, kept, made) = read(None).await;
    assert_eq!(made, ModelMade::Built, "no model before the first full read");
    // A user added to G0 between the two full reads.
    slapd.add(&user_ldif(&format!("cn=late,{PEOPLE}"), "late", false));
    slapd.modify(&format!("dn: cn=G0,{GROUPS}\nchangetype: modify\nadd: member\nmember: cn=late,{PEOPLE}\n"));
    let ((second, mut kept, made), log) = common::logged(read(Some(kept))).await;
    assert_eq!(made, ModelMade::Verified);
    assert_eq!(verdict(&log), None, "a verified model: no line of its own\n{log}");
    let late = |snapshot: &Snapshot| {
        let g0 = snapshot.groups.iter().find(|g| g.name == "G0").expect("G0 configured");
        g0.result.as_ref().expect("G0 resolves").members.iter().any(|m| m.username.as_str() == "late")
    };
    assert!(!late(&first) && late(&second), "the change between the reads");
    let members = kept.resolve(&s, &names).expect("resolves").snapshot;
    let shared = |full: &Snapshot| {
        let all = |s: &Snapshot| -> Vec<std::sync::Arc<ldap::Member>> {
            s.groups.iter().filter_map(|g| g.result.as_ref().ok()).flat_map(|g| g.members.iter().cloned()).collect()
        };
        let (a, b) = (all(full), all(&members));
        assert!(a.len() > 10 && a.len() == b.len());
        a.iter().zip(&b).all(|(a, b)| std::sync::Arc::ptr_eq(a, b))
    };
    assert!(shared(&second), "the verified model holds the full read's members");

    let mut ldap = bind(&slapd).await;

    // The loner's username changed in the model alone: as many users, every group as in the directory.
    let (uuid, mut loner) = entry_of(&mut ldap, &format!("cn=loner,{PEOPLE}")).await;
    loner.attrs.insert("uid".into(), vec!["drifted".into()]);
    let changed = vec![ChangedEntry {
        uuid,
        dn: loner.dn,
        kind: ChangeKind::Modify,
        attrs: loner.attrs.into_iter().collect(),
        bin_attrs: Default::default(),
    }];
    let cookie = kept.cookie(Part::Users).map(<[u8]>::to_vec);
    kept.apply(Part::Users, &SyncRead { cookie, changed, deleted: vec![], refresh: Refresh::Deletes });
    let ((_, mut kept, made), log) = common::logged(read(Some(kept))).await;
    assert_eq!(made, ModelMade::Built, "a model whose users are not the directory's is read whole");
    assert!(warned(&log), "a model whose users were wrong is a warning:\n{log}");

    // G1's entry dropped from the model, which then resolves G1 otherwise than the directory does.
    let (uuid, _) = entry_of(&mut ldap, &format!("cn=G1,{GROUPS}")).await;
    let cookie = kept.cookie(Part::Groups).map(<[u8]>::to_vec);
    kept.apply(Part::Groups, &SyncRead { cookie, changed: vec![], deleted: vec![uuid], refresh: Refresh::Deletes });
    let ((_, kept, made), log) = common::logged(read(Some(kept))).await;
    assert_eq!(made, ModelMade::Built, "a model that resolves otherwise is read whole");
    assert!(warned(&log), "a model that resolved otherwise is a warning:\n{log}");
    // The same for a model read from another server.
    let mut kept = kept;
    kept.set_server("ldap://dc2.example.org/", false);
    let ((_, kept, made), log) = common::logged(read(Some(kept))).await;
    assert_eq!(made, ModelMade::Built, "a model of another server is read whole");
    let (level, line) = verdict(&log).expect("the verification says why the model is read whole");
    assert!(level == "INFO" && line.contains("not verified"), "another server's model is no warning:\n{log}");
    let (_, _, made) = read(Some(kept)).await;
    assert_eq!(made, ModelMade::Verified, "the model read whole again is verified at the next full read");
}

/// One watermark for both parts: a change to a user moves it for the groups too, so the groups, unchanged for
/// longer than the margin, are not sent again (each part with its own latest timestamp sent them all at every
/// read: a directory whose groups seldom change was read in full each time). The control: the changed user is.
#[tokio::test]
async fn a_modify_timestamp_read_sends_only_what_changed_within_the_margin_in_either_part() {
    let (world, d) = World::seed(&mut Rng(7));
    let slapd = Slapd::start(&d);
    let s =
        Settings { base_dn: BASE.into(), user_filter: "(objectClass=person)".into(), ..ldap_settings(&slapd.url()) };
    let source = Source::ModifyTimestamp { margin: Duration::from_secs(1) };
    let mut kept = Kept::new(&s).reading_by(source);
    read_changes(&slapd, &mut kept, || Kept::new(&s).reading_by(source)).await;
    assert!(kept.len(Part::Groups) >= 5);
    // Longer than the margin, the read's own length and the second a timestamp is rounded to.
    std::thread::sleep(Duration::from_millis(4100));
    slapd.modify(&format!("{}changetype: modify\nreplace: uid\nuid: renamed\n\n", ldif_line("dn", &world.users[1])));
    let mut ldap = bind(&slapd).await;
    // This read starts a margin before the entries' creation: it sends them all again, and the changed user.
    let changes = kept.read(&mut ldap, &slapd.url(), TIMEOUT).await.expect("a modifyTimestamp read");
    assert_eq!(changes.users.changed, 1, "{changes:?}");
    // The next starts a margin (and the read's length) before the user's change.
    let changes = kept.read(&mut ldap, &slapd.url(), TIMEOUT).await.expect("a modifyTimestamp read");
    assert_eq!((changes.users.sent, changes.users.changed), (1, 0), "the user changed within the margin: {changes:?}");
    assert_eq!(changes.groups.sent, 0, "the groups, older than the margin before the user's change: {changes:?}");
}
