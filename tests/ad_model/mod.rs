//! The kept directory model read by DirSync (`Source::DirSync`) and by update sequence numbers (`Source::Usn`)
//! against the Samba AD DC of `tests/ad_changes.rs`: after every round of random directory changes (users added,
//! deleted, renamed, moved out of the base and back, disabled and enabled, their sAMAccountName changed; members
//! added and removed; groups nested, un-nested, renamed, added and deleted; an OU holding a user renamed), mixed
//! with lost cookies, the snapshot resolved from the model's entries equals the snapshot of a full read, for
//! in-chain, recursive and no nesting, and for a user filter that tests `memberOf` (DirSync only), and with member
//! values read in windows (range retrieval). Where the model asks for a full read, the reason is checked to be the
//! one the round gave. The seed is printed; set `AD_MODEL_SEED` to replay one.

use std::time::Duration;

use cloudshell_ldap_sync::group_name::GroupName;
use cloudshell_ldap_sync::ldap::changes::kept::{Kept, NeedsFullRead, Part, Source};
use cloudshell_ldap_sync::ldap::{self, GroupOutcome, Nesting, Settings};

use crate::common::{AD_ADMIN, AD_BASE, AD_PASSWORD, Rng, SambaDc, ad_settings, ldif_line};

const TIMEOUT: Duration = Duration::from_secs(20);
const ROUNDS: usize = 30;
/// Group names: the first five configured (with one that never exists), the rest not.
const NAMES: [&str; 10] = ["G0", "G1", "G2", "G3", "G4", "X0", "X1", "X2", "X3", "X4"];
const CONFIGURED: [&str; 6] = ["G0", "G1", "G2", "G3", "G4", "Missing"];

fn model_ou() -> String {
    format!("OU=Model,{AD_BASE}")
}
fn base() -> String {
    format!("OU=In,OU=Model,{AD_BASE}")
}
fn people() -> String {
    format!("OU=People,OU=In,OU=Model,{AD_BASE}")
}
fn groups_ou() -> String {
    format!("OU=Groups,OU=In,OU=Model,{AD_BASE}")
}
/// Outside the base, inside the naming context: where users and groups move out to.
fn out() -> String {
    format!("OU=Out,OU=Model,{AD_BASE}")
}
/// A group never renamed nor deleted, which the `memberOf` user filter names.
fn staff() -> String {
    format!("CN=Staff,{}", groups_ou())
}

/// What the test knows of the directory, to choose changes Samba accepts.
#[derive(Default)]
struct World {
    users: Vec<String>,
    /// Group DNs, with their member DNs.
    groups: Vec<(String, Vec<String>)>,
    next: usize,
    /// The users placed under an OU renamed in this round and not changed since in the round.
    renamed: Vec<String>,
}

impl World {
    /// Whether an OU renamed in this round still holds its user, unchanged since: a later change of the round
    /// to the user (a move, a deletion, a modification) is read with the user's new DN, and a model then needs no
    /// full read.
    fn holds_renamed(&self) -> bool {
        !self.renamed.is_empty()
    }

    fn fresh(&mut self) -> usize {
        self.next += 1;
        self.next
    }

    fn add_user(&mut self, rng: &mut Rng, ldif: &mut String) -> String {
        let n = self.fresh();
        let parent = if rng.chance(20) { out() } else { people() };
        let dn = format!("CN=u{n},{parent}");
        let uac = if rng.chance(25) { 546 } else { 544 };
        ldif.push_str(&format!(
            "{}changetype: add\nobjectClass: user\n{}userAccountControl: {uac}\n\n",
            ldif_line("dn", &dn),
            ldif_line("sAMAccountName", &format!("m{n}"))
        ));
        self.users.push(dn.clone());
        dn
    }

    fn add_group(&mut self, rng: &mut Rng, ldif: &mut String, name: &str) {
        let n = self.fresh();
        let parent = if rng.chance(25) && name != "Staff" { out() } else { groups_ou() };
        let dn = format!("CN={name},{parent}");
        let mut members = Vec::new();
        for _ in 0..rng.below(4) {
            let candidates: Vec<&String> = self.users.iter().chain(self.groups.iter().map(|g| &g.0)).collect();
            if candidates.is_empty() {
                break;
            }
            let m = candidates[rng.below(candidates.len())].clone();
            if !members.contains(&m) {
                members.push(m);
            }
        }
        ldif.push_str(&format!(
            "{}changetype: add\nobjectClass: group\n{}",
            ldif_line("dn", &dn),
            ldif_line("sAMAccountName", &format!("grp{n}"))
        ));
        for m in &members {
            ldif.push_str(&ldif_line("member", m));
        }
        ldif.push('\n');
        self.groups.push((dn, members));
    }

    /// Every member value naming `old` now names `new` (`None`: gone).
    fn follow(&mut self, old: &str, new: Option<&str>) {
        for (_, members) in &mut self.groups {
            members.retain_mut(|m| match (m == old, new) {
                (false, _) => true,
                (true, Some(n)) => {
                    *m = n.to_string();
                    true
                }
                (true, None) => false,
            });
        }
    }

    fn free_name(&self, rng: &mut Rng) -> Option<&'static str> {
        let used = |n: &str| self.groups.iter().any(|(dn, _)| dn.starts_with(&format!("CN={n},")));
        let free: Vec<&str> = NAMES.iter().copied().filter(|n| !used(n)).collect();
        (!free.is_empty()).then(|| free[rng.below(free.len())])
    }

    /// One random change, as LDIF; whether it renamed an OU holding a user (a model may then ask for a full
    /// read, and must when the OU still holds the user at the end of the round: [`World::holds_renamed`]).
    fn change(&mut self, rng: &mut Rng, ldif: &mut String) -> bool {
        let modify = |dn: &str, what: &str| format!("{}changetype: modify\n{what}\n-\n\n", ldif_line("dn", dn));
        let rename = |dn: &str, rdn: &str, parent: Option<&str>| {
            let moved = parent.map(|p| ldif_line("newsuperior", p)).unwrap_or_default();
            format!("{}changetype: modrdn\n{}deleteoldrdn: 1\n{moved}\n", ldif_line("dn", dn), ldif_line("newrdn", rdn))
        };
        // A user this change is about: if it was placed under an OU renamed this round, its own change is read
        // with its new DN, and the rename alone no longer calls for a full read.
        let user = |w: &mut World, rng: &mut Rng| {
            let dn = w.users.get(rng.below(w.users.len().max(1))).cloned();
            w.renamed.retain(|u| Some(u) != dn.as_ref());
            dn
        };
        match rng.below(13) {
            0 | 1 => {
                let dn = self.add_user(rng, ldif);
                if rng.chance(70) && !self.groups.is_empty() {
                    let g = rng.below(self.groups.len());
                    ldif.push_str(&modify(
                        &self.groups[g].0.clone(),
                        format!("add: member\n{}", ldif_line("member", &dn)).trim_end(),
                    ));
                    self.groups[g].1.push(dn);
                }
            }
            2 => {
                if let Some(dn) = user(self, rng) {
                    ldif.push_str(&format!("{}changetype: delete\n\n", ldif_line("dn", &dn)));
                    self.users.retain(|u| *u != dn);
                    self.follow(&dn, None);
                }
            }
            3 | 4 => {
                if let Some(dn) = user(self, rng) {
                    let n = self.fresh();
                    let parent = match rng.below(3) {
                        0 => Some(if dn.ends_with(&people()) { out() } else { people() }),
                        _ => None,
                    };
                    let at = parent.clone().unwrap_or_else(|| dn.split_once(',').unwrap().1.to_string());
                    ldif.push_str(&rename(&dn, &format!("CN=u{n}"), parent.as_deref()));
                    let new = format!("CN=u{n},{at}");
                    self.users.iter_mut().filter(|u| **u == dn).for_each(|u| *u = new.clone());
                    self.follow(&dn, Some(&new));
                }
            }
            5 => {
                if let Some(dn) = user(self, rng) {
                    let uac = if rng.chance(50) { 546 } else { 544 };
                    ldif.push_str(&modify(&dn, &format!("replace: userAccountControl\nuserAccountControl: {uac}")));
                }
            }
            6 => {
                if let Some(dn) = user(self, rng) {
                    let n = self.fresh();
                    ldif.push_str(&modify(&dn, &format!("replace: sAMAccountName\nsAMAccountName: m{n}")));
                }
            }
            7 | 8 => {
                // A member added: a user, or a group (nesting; a cycle now and then).
                if self.groups.is_empty() {
                    return false;
                }
                let g = rng.below(self.groups.len());
                let candidates: Vec<String> =
                    self.users.iter().cloned().chain(self.groups.iter().map(|g| g.0.clone())).collect();
                let m = candidates[rng.below(candidates.len())].clone();
                // (never empty: the group itself is a candidate)
                if m != self.groups[g].0 && !self.groups[g].1.contains(&m) {
                    ldif.push_str(&modify(
                        &self.groups[g].0.clone(),
                        format!("add: member\n{}", ldif_line("member", &m)).trim_end(),
                    ));
                    self.groups[g].1.push(m);
                }
            }
            9 => {
                let with: Vec<usize> = (0..self.groups.len()).filter(|&g| !self.groups[g].1.is_empty()).collect();
                if let Some(&g) = with.get(rng.below(with.len().max(1))) {
                    let members = &mut self.groups[g].1;
                    let m = members.remove(rng.below(members.len()));
                    let dn = self.groups[g].0.clone();
                    ldif.push_str(&modify(&dn, format!("delete: member\n{}", ldif_line("member", &m)).trim_end()));
                }
            }
            10 => {
                if let Some(name) = self.free_name(rng) {
                    self.add_group(rng, ldif, name);
                }
            }
            11 => {
                // A group deleted or renamed (never Staff).
                let others: Vec<usize> = (0..self.groups.len()).filter(|&g| self.groups[g].0 != staff()).collect();
                let Some(&g) = others.get(rng.below(others.len().max(1))) else { return false };
                let dn = self.groups[g].0.clone();
                if rng.chance(40) {
                    ldif.push_str(&format!("{}changetype: delete\n\n", ldif_line("dn", &dn)));
                    self.groups.remove(g);
                    self.follow(&dn, None);
                } else if let Some(name) = self.free_name(rng) {
                    let new = format!("CN={name},{}", dn.split_once(',').unwrap().1);
                    ldif.push_str(&rename(&dn, &format!("CN={name}"), None));
                    self.groups[g].0 = new.clone();
                    self.follow(&dn, Some(&new));
                }
            }
            _ => {
                // An OU holding a user, made and then renamed: the user's DN changes with no change of its own.
                let n = self.fresh();
                let (ou, renamed) = (format!("OU=Sub{n},{}", people()), format!("OU=Sub{n}r,{}", people()));
                let dn = format!("CN=u{n},{ou}");
                let group = self.groups.iter().position(|g| g.0 == staff()).expect("Staff");
                let setup = format!(
                    "{}changetype: add\nobjectClass: organizationalUnit\n\n{}changetype: add\nobjectClass: user\n{}userAccountControl: 544\n\n{}",
                    ldif_line("dn", &ou),
                    ldif_line("dn", &dn),
                    ldif_line("sAMAccountName", &format!("m{n}")),
                    modify(&staff(), format!("add: member\n{}", ldif_line("member", &dn)).trim_end()),
                );
                // Set up in its own write, so that the model has read it before the rename.
                SETUP.with(|s| s.borrow_mut().push_str(&setup));
                ldif.push_str(&rename(&ou, &format!("OU=Sub{n}r"), None));
                let new = format!("CN=u{n},{renamed}");
                self.users.push(new.clone());
                self.groups[group].1.push(new.clone());
                self.renamed.push(new);
                return true;
            }
        }
        false
    }
}

thread_local! {
    /// Writes a round needs made, and read by the model, before its own.
    static SETUP: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

fn settings(dc: &SambaDc, nesting: Nesting, (user_filter, member_range_size, source): Model<'_>) -> Settings {
    Settings {
        user_filter: user_filter.into(),
        member_range_size,
        nesting,
        change_detection: match source {
            Source::Usn => ldap::ChangeDetection::Usn,
            _ => ldap::ChangeDetection::Dirsync,
        },
        ..ad_settings(dc, &base())
    }
}

/// A model: its user filter, `ldap.member_range_size`, and how it learns what changed.
type Model<'a> = (&'a str, Option<u32>, Source);

const PLAIN: &str = "(&(objectCategory=person)(objectClass=user))";

const ENABLED: &str = "(&(objectCategory=person)(objectClass=user)(!(userAccountControl:1.2.840.113556.1.4.803:=2)))";

/// The models (by user filter, `ldap.member_range_size` and how each learns what changed), each compared under
/// every nesting mode.
fn models() -> [(String, Option<u32>, Source); 7] {
    [
        (PLAIN.to_string(), None, Source::DirSync),
        (format!("(&(objectCategory=person)(objectClass=user)(memberOf={}))", staff()), None, Source::DirSync),
        // Disabled accounts leave the filter: disabling one is the usual way a user leaves it.
        (ENABLED.into(), None, Source::DirSync),
        // Member values in windows of 3 (Samba forces no ranges; Active Directory does past 1,500 values): both
        // reads follow range retrieval to the end. (Each whole read of this model reads the 1,600 members of
        // ad_changes' Big, kept as every group of the domain is, in 534 searches: a smaller window costs more.)
        (PLAIN.to_string(), Some(3), Source::DirSync),
        // By update sequence numbers (a filter testing memberOf is one usn refuses).
        (PLAIN.to_string(), None, Source::Usn),
        (ENABLED.into(), None, Source::Usn),
        // By update sequence numbers, a changed group's members read again window by window.
        (PLAIN.to_string(), Some(3), Source::Usn),
    ]
}

async fn bind(dc: &SambaDc) -> ldap3::Ldap {
    let s = settings(dc, Nesting::Off, (PLAIN, None, Source::DirSync));
    let tls = cloudshell_ldap_sync::tls::client_config("ldap.ca_file", s.ca_file.as_deref(), false).unwrap();
    let conn = ldap3::LdapConnSettings::new().set_config(std::sync::Arc::new(tls)).set_conn_timeout(TIMEOUT);
    let (conn, mut ldap) = ldap3::LdapConnAsync::with_settings(conn, &dc.ldaps_url()).await.unwrap();
    ldap3::drive!(conn);
    ldap.simple_bind(AD_ADMIN, AD_PASSWORD).await.unwrap().success().unwrap();
    ldap
}

fn fresh(dc: &SambaDc, model: Model<'_>) -> Kept {
    Kept::with_groups_base(&settings(dc, Nesting::Off, model), AD_BASE).reading_by(model.2)
}

fn configured() -> Vec<GroupName> {
    CONFIGURED.iter().map(|n| GroupName::new(n)).collect()
}

/// Compares a model with a full read for every nesting mode; `false` when it asks for a full read (checked to
/// be for a renamed OU, and only when `moved_ou`).
async fn compare(dc: &SambaDc, kept: &Kept, model: Model<'_>, moved_ou: bool, context: &str) -> bool {
    let names = configured();
    for nesting in [Nesting::Auto, Nesting::Recursive, Nesting::Off] {
        let s = settings(dc, nesting, model);
        let full = ldap::Connection::open(&s).await.expect("bind").read(&names).await;
        let full = ldap::resolve(&full, &s, &names);
        match kept.entries(&s, &names) {
            Ok(entries) => {
                let model = ldap::resolve(&entries, &s, &names);
                assert_eq!(model.users_seen, full.users_seen, "users seen; {nesting:?}; {context}");
                let outcomes = |s: &ldap::Snapshot| -> Vec<(String, String)> {
                    s.groups.iter().map(|GroupOutcome { name, result }| (name.clone(), format!("{result:?}"))).collect()
                };
                assert_eq!(outcomes(&model), outcomes(&full), "{nesting:?}; {context}");
            }
            Err(NeedsFullRead::MovedBelow { dn }) if moved_ou => {
                assert!(dn.starts_with("OU=Sub"), "{dn}; {context}");
                return false;
            }
            Err(e) => panic!("the model asks for a full read without cause: {e}; {nesting:?}; {context}"),
        }
    }
    true
}

fn seed() -> u64 {
    crate::common::seed("AD_MODEL_SEED")
}

fn seed_world(dc: &SambaDc, rng: &mut Rng) -> World {
    let mut ldif = String::new();
    for ou in [model_ou(), base(), people(), groups_ou(), out()] {
        ldif.push_str(&format!("{}changetype: add\nobjectClass: organizationalUnit\n\n", ldif_line("dn", &ou)));
    }
    let mut world = World::default();
    for _ in 0..12 {
        world.add_user(rng, &mut ldif);
    }
    for name in ["Staff", "G0", "G1", "G2", "X0"] {
        world.add_group(rng, &mut ldif, name);
    }
    dc.modify(&ldif);
    world
}

/// Random rounds of changes, each followed by a change read of both models and the comparison.
pub async fn the_kept_model_by_dirsync_resolves_as_a_full_read(dc: &SambaDc) {
    let seed = seed();
    eprintln!("AD model seed {seed} (AD_MODEL_SEED={seed} to replay)");
    let mut rng = Rng(seed);
    let mut world = seed_world(dc, &mut rng);
    let filters = models();
    let model = |m: usize| (filters[m].0.as_str(), filters[m].1, filters[m].2);
    let fresh = |m: usize| fresh(dc, model(m));
    let mut kepts: Vec<Kept> = (0..filters.len()).map(fresh).collect();
    let (mut sent, mut held, mut compared, mut moved_reads, mut moved_rounds) = (0, 0, 0, 0, 0);
    let mut holding_rounds = 0;
    for (m, kept) in kepts.iter_mut().enumerate() {
        let mut ldap = bind(dc).await;
        let first = kept.read(&mut ldap, &dc.ldaps_url(), TIMEOUT).await.expect("the first read");
        if let Some(window) = filters[m].1 {
            // Big's 1,600 members, window by window: the ranges were asked for and followed.
            assert!(first.searches > 1600 / window as usize, "{} searches", first.searches);
        }
    }
    for round in 0..ROUNDS {
        let mut ldif = String::new();
        let mut moved_ou = false;
        world.renamed.clear();
        for _ in 0..1 + rng.below(5) {
            moved_ou |= world.change(&mut rng, &mut ldif);
        }
        let setup = SETUP.with(|s| std::mem::take(&mut *s.borrow_mut()));
        if !setup.is_empty() {
            dc.modify(&setup);
            for kept in &mut kepts {
                let mut ldap = bind(dc).await;
                kept.read(&mut ldap, &dc.ldaps_url(), TIMEOUT).await.expect("a change read");
            }
        }
        if !ldif.is_empty() {
            dc.modify(&ldif);
        }
        let lost = rng.chance(10);
        moved_rounds += usize::from(moved_ou && !lost);
        holding_rounds += usize::from(world.holds_renamed() && !lost);
        for (m, kept) in kepts.iter_mut().enumerate() {
            if lost {
                *kept = fresh(m);
            }
            let mut ldap = bind(dc).await;
            let changes = kept.read(&mut ldap, &dc.ldaps_url(), TIMEOUT).await.expect("a change read");
            if !lost {
                sent += changes.users.sent;
                held += kept.len(Part::Users);
            }
            let context = format!(
                "seed {seed}, round {round}, model {m} ({:?}){}; changes:\n{ldif}",
                filters[m].2,
                if lost { ", cookie lost" } else { "" }
            );
            if compare(dc, kept, model(m), moved_ou && !lost, &context).await {
                compared += 1;
            } else {
                // As a daemon does: a full read, then a model read anew.
                moved_reads += 1;
                *kept = fresh(m);
                kept.read(&mut ldap, &dc.ldaps_url(), TIMEOUT).await.expect("a first read");
                assert!(compare(dc, kept, model(m), false, &context).await);
            }
        }
    }
    eprintln!(
        "AD model: {compared} comparisons equal to a full read over {ROUNDS} rounds; {moved_reads} full reads for a \
         renamed OU; {sent} users sent by change reads against {held} kept"
    );
    // Every model asked for a full read after each round that renamed an OU still holding a user at its end
    // (and read the cookie), and only after rounds that renamed one.
    let (least, most) = (holding_rounds * filters.len(), moved_rounds * filters.len());
    assert!((least..=most).contains(&moved_reads), "{moved_reads} full reads, {least} to {most} expected; seed {seed}");
    assert!(compared >= ROUNDS, "most rounds compared");
    assert!(sent * 4 < held, "a change read sends only what changed: {sent} sent, {held} kept");
    full_reads_verify_the_models(dc, &mut world).await;
}

/// A full read verifies a model read by DirSync, and one read by update sequence numbers, kept since the last
/// full read (brought up to date by its change read: a user added between the two) rather than reading it whole:
/// the model's users, read again by objectGUID, are exactly the ones the users search found, written alike. So
/// does `auto` for an account DirSync refuses (`reader`, allowed to read the tombstones by `ad_changes`), whose
/// model is read by update sequence numbers. The controls: the first full read, with no model, builds one; the
/// user added is in the second.
async fn full_reads_verify_the_models(dc: &SambaDc, world: &mut World) {
    use cloudshell_ldap_sync::ldap::ModelMade;
    let names = configured();
    let reader = Settings {
        bind_dn: format!("CN=reader,CN=Users,{AD_BASE}"),
        bind_password: secrecy::SecretString::from(crate::READER_PASSWORD),
        change_detection: ldap::ChangeDetection::Auto,
        ..settings(dc, Nesting::Auto, (PLAIN, None, Source::Usn))
    };
    let model = |source| settings(dc, Nesting::Auto, (PLAIN, None, source));
    let models = [(model(Source::DirSync), Source::DirSync), (model(Source::Usn), Source::Usn), (reader, Source::Usn)];
    for (s, source) in models {
        let (first, kept) = ldap::Connection::open(&s).await.expect("bind").read_keeping(&names, None).await;
        let (kept, made) = kept.expect("a model");
        assert_eq!((made, kept.source()), (ModelMade::Built, source), "{}: no model before", s.bind_dn);
        let n = world.fresh();
        let dn = format!("CN=u{n},{}", people());
        dc.modify(&format!(
            "{}changetype: add\nobjectClass: user\n{}userAccountControl: 544\n\n",
            ldif_line("dn", &dn),
            ldif_line("sAMAccountName", &format!("m{n}"))
        ));
        world.users.push(dn);
        let (second, kept) = ldap::Connection::open(&s).await.expect("bind").read_keeping(&names, Some(kept)).await;
        let (kept, made) = kept.expect("a model");
        assert_eq!((made, kept.source()), (ModelMade::Verified, source), "{}", s.bind_dn);
        assert_eq!(second.users_seen, first.users_seen + 1, "{source:?}: the user added");
    }
}
