//! DirSync and `uSNChanged` reads against a real Samba AD domain controller (`ldap::changes::dirsync`,
//! `ldap::changes::usn`): provisioned once for this whole file (its ports are fixed), the checks in sections of
//! one test, in order, each reading from the cookie the one before it left.

mod ad_model;
mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cloudshell_ldap_sync::ldap::changes::dirsync::{self, Changes, Error, Guid};
use cloudshell_ldap_sync::ldap::changes::usn;
use common::{AD_ADMIN, AD_BASE, AD_PASSWORD, SambaDc, ad_group, ad_user};
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings};

const FILTER: &str = "(|(objectClass=group)(objectClass=user))";
const ATTRS: [&str; 3] = ["sAMAccountName", "userAccountControl", "member"];
const TIMEOUT: Duration = Duration::from_secs(20);
const READER_PASSWORD: &str = "Reader-Passw0rd!";

async fn connect(dc: &SambaDc, bind_dn: &str, password: &str) -> Ldap {
    let tls = cloudshell_ldap_sync::tls::client_config("ldap.ca_file", Some(&dc.ca_file()), false).unwrap();
    let settings = LdapConnSettings::new().set_config(Arc::new(tls)).set_conn_timeout(TIMEOUT);
    let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &dc.ldaps_url()).await.unwrap();
    ldap3::drive!(conn);
    ldap.simple_bind(bind_dn, password).await.unwrap().success().unwrap();
    ldap
}

async fn read(ldap: &mut Ldap, cookie: Option<&[u8]>) -> Result<Changes, Error> {
    dirsync::read(ldap, AD_BASE, FILTER, &ATTRS, cookie, TIMEOUT).await
}

/// Members of Big, a group past Active Directory's 1,500-value range limit.
const BIG: usize = 1600;

/// Staff: alice, bob, carol, dave, and big0000..big1599; Team ⊃ {alice, bob}; Big ⊃ the big users.
struct Seeded {
    alice: String,
    bob: String,
    carol: String,
    dave: String,
    team: String,
    big: String,
}

fn seed(dc: &SambaDc) -> Seeded {
    let mut ldif = format!(
        "dn: OU=Staff,{AD_BASE}\nobjectClass: organizationalUnit\nou: Staff\n\n\
         dn: OU=Groups,{AD_BASE}\nobjectClass: organizationalUnit\nou: Groups\n\n"
    );
    let mut user = |name: &str| {
        let (dn, l) = ad_user(name, name, false);
        ldif.push_str(&l);
        dn
    };
    let (alice, bob, carol, dave) = (user("alice"), user("bob"), user("carol"), user("dave"));
    let big_users: Vec<String> = (0..BIG).map(|n| user(&format!("big{n:04}"))).collect();
    let (team, l) = ad_group("Team", &[alice.clone(), bob.clone()]);
    ldif.push_str(&l);
    let (big, l) = ad_group("Big", &big_users);
    ldif.push_str(&l);
    dc.add(&ldif);
    Seeded { alice, bob, carol, dave, team, big }
}

/// A user who can bind but holds no replication right, made the way an administrator would.
fn create_plain_user(name: &str) -> String {
    common::create_ad_account(name, READER_PASSWORD)
}

fn guid_of(changes: &Changes, dn: &str) -> Guid {
    changes
        .changed
        .iter()
        .find(|o| o.dn.eq_ignore_ascii_case(dn))
        .unwrap_or_else(|| panic!("{dn} not among the changed objects"))
        .guid
}

fn dns(changes: &Changes) -> BTreeSet<String> {
    changes.changed.iter().map(|o| o.dn.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dirsync_against_samba() {
    let started = Instant::now();
    let dc = SambaDc::start();
    let s = seed(&dc);
    eprintln!("Samba AD DC provisioned, started and seeded in {:.1} s", started.elapsed().as_secs_f64());
    let mut ldap = connect(&dc, AD_ADMIN, AD_PASSWORD).await;

    let first = first_read_returns_users_groups_and_a_cookie(&mut ldap, &s).await;
    let quiet = nothing_changed_reads_nothing(&mut ldap, &first.cookie).await;
    let members = member_added_and_removed_arrive_as_value_changes(&dc, &mut ldap, &s, &first, &quiet).await;
    an_old_cookie_reads_the_same_changes_again(&mut ldap, &quiet.cookie, &members).await;
    let disabled = a_disabled_user_arrives_with_its_new_value(&dc, &mut ldap, &s, &first, &members.cookie).await;
    let added = a_new_user_and_group_arrive_whole(&dc, &mut ldap, &s, &first, &disabled.cookie).await;
    let deleted = a_deleted_user_arrives_as_a_tombstone_by_guid(&dc, &mut ldap, &s, &first, &added.cookie).await;
    let moved =
        a_renamed_or_moved_user_keeps_its_guid_and_its_groups_stay_quiet(&dc, &mut ldap, &s, &first, &deleted.cookie)
            .await;
    a_deleted_member_comes_as_its_tombstone_only(&dc, &mut ldap, &s, &first, &moved.cookie).await;
    a_watermark_alone_then_only_later_changes(&dc, &mut ldap, &s, &first).await;
    a_cookie_is_read_again_only_on_the_controller_that_gave_it(&dc, &mut ldap, &s).await;
    a_damaged_cookie_is_refused(&mut ldap).await;
    a_base_below_the_naming_context_is_unsupported(&mut ldap).await;
    an_account_without_the_right_is_told_which_right(&dc).await;
    usn_reads_against_samba(&dc, &mut ldap).await;
    let model = Instant::now();
    ad_model::the_kept_model_by_dirsync_resolves_as_a_full_read(&dc).await;
    eprintln!("the model's rounds: {:.1} s", model.elapsed().as_secs_f64());
    eprintln!("DirSync suite: {:.1} s in all", started.elapsed().as_secs_f64());
}

async fn first_read_returns_users_groups_and_a_cookie(ldap: &mut Ldap, s: &Seeded) -> Changes {
    let first = read(ldap, None).await.unwrap();
    eprintln!("first read: {} objects, cookie {} bytes", first.changed.len(), first.cookie.len());
    let seen = dns(&first);
    for dn in [&s.alice, &s.bob, &s.carol, &s.dave, &s.team] {
        assert!(seen.contains(dn.as_str()), "{dn} missing from the first read");
    }
    assert!(seen.iter().any(|d| d.starts_with("CN=Administrator,")), "built-in users are read too");
    assert!(first.deleted.is_empty());
    assert_eq!(first.rounds, 1, "Samba never says more data is waiting");
    // Samba's cookie: a 108-byte blob starting with "MSDS".
    assert!(first.cookie.starts_with(b"MSDS"), "cookie {:02x?}", first.cookie);
    let team = first.changed.iter().find(|o| o.dn == s.team).unwrap();
    // On a first read with incremental values Samba sends the members as values added, not a plain
    // `member`; the extended-DN control gives each its objectGUID, the same as the member's own.
    assert_eq!(team.members, None);
    assert!(team.member_removed.is_empty());
    let added: BTreeSet<(Option<Guid>, String)> = team.member_added.iter().map(|m| (m.guid, m.dn.clone())).collect();
    let want: BTreeSet<(Option<Guid>, String)> =
        [&s.alice, &s.bob].into_iter().map(|dn| (Some(guid_of(&first, dn)), dn.clone())).collect();
    assert_eq!(added, want);
    assert_eq!(team.attrs.get("samaccountname"), Some(&vec!["Team".to_string()]));
    // A large group's first read carries every member, in one value list.
    let big = first.changed.iter().find(|o| o.dn == s.big).unwrap();
    assert_eq!(big.member_added.len(), BIG);
    assert!(big.member_added.iter().all(|m| m.guid.is_some()));
    let alice = first.changed.iter().find(|o| o.dn == s.alice).unwrap();
    assert_eq!(alice.attrs.get("useraccountcontrol"), Some(&vec!["544".to_string()]));
    first
}

async fn nothing_changed_reads_nothing(ldap: &mut Ldap, cookie: &[u8]) -> Changes {
    let quiet = read(ldap, Some(cookie)).await.unwrap();
    assert!(quiet.changed.is_empty(), "nothing changed, yet: {:?}", dns(&quiet));
    assert!(quiet.deleted.is_empty());
    assert!(!quiet.cookie.is_empty(), "Samba sends a cookie even when nothing changed");
    quiet
}

async fn member_added_and_removed_arrive_as_value_changes(
    dc: &SambaDc,
    ldap: &mut Ldap,
    s: &Seeded,
    first: &Changes,
    quiet: &Changes,
) -> Changes {
    dc.modify(&format!(
        "dn: {}\nchangetype: modify\nadd: member\nmember: {}\n-\ndelete: member\nmember: {}\n\n",
        s.team, s.carol, s.bob
    ));
    let changes = read(ldap, Some(&quiet.cookie)).await.unwrap();
    assert_eq!(dns(&changes), BTreeSet::from([s.team.clone()]), "only the group changed");
    let team = &changes.changed[0];
    assert_eq!(team.guid, guid_of(first, &s.team), "the group keeps its objectGUID");
    assert_eq!(team.members, None);
    let refs = |v: &[dirsync::MemberRef]| v.iter().map(|m| (m.guid, m.dn.clone())).collect::<Vec<_>>();
    assert_eq!(refs(&team.member_added), vec![(Some(guid_of(first, &s.carol)), s.carol.clone())]);
    assert_eq!(refs(&team.member_removed), vec![(Some(guid_of(first, &s.bob)), s.bob.clone())]);
    assert!(!team.attrs.keys().any(|k| k.starts_with("member")), "member values are not repeated in attrs");
    assert_ne!(changes.cookie, quiet.cookie, "the cookie moves on");
    changes
}

/// The watermark is saved only after a run's writes: a run that crashed reads from the older cookie again,
/// and must see the same changes.
async fn an_old_cookie_reads_the_same_changes_again(ldap: &mut Ldap, old: &[u8], before: &Changes) {
    let again = read(ldap, Some(old)).await.unwrap();
    assert_eq!(again.changed, before.changed);
    assert_eq!(again.cookie, before.cookie);
}

async fn a_disabled_user_arrives_with_its_new_value(
    dc: &SambaDc,
    ldap: &mut Ldap,
    s: &Seeded,
    first: &Changes,
    cookie: &[u8],
) -> Changes {
    dc.modify(&format!(
        "dn: {}\nchangetype: modify\nreplace: userAccountControl\nuserAccountControl: 546\n\n",
        s.alice
    ));
    let changes = read(ldap, Some(cookie)).await.unwrap();
    assert_eq!(dns(&changes), BTreeSet::from([s.alice.clone()]));
    let alice = &changes.changed[0];
    assert_eq!(alice.guid, guid_of(first, &s.alice));
    assert_eq!(alice.attrs.get("useraccountcontrol"), Some(&vec!["546".to_string()]));
    // Only what changed comes (Samba adds instanceType): not the other attributes asked for.
    assert_eq!(alice.attrs.get("samaccountname"), None);
    changes
}

async fn a_new_user_and_group_arrive_whole(
    dc: &SambaDc,
    ldap: &mut Ldap,
    s: &Seeded,
    first: &Changes,
    cookie: &[u8],
) -> Changes {
    let (erin, user) = ad_user("erin", "erin", false);
    let (fresh, group) = ad_group("Fresh", &[erin.clone(), s.alice.clone()]);
    dc.add(&(user + &group));
    let changes = read(ldap, Some(cookie)).await.unwrap();
    assert_eq!(dns(&changes), BTreeSet::from([erin.clone(), fresh.clone()]), "the old members do not change");
    let new_user = changes.changed.iter().find(|o| o.dn == erin).unwrap();
    assert_eq!(new_user.attrs.get("samaccountname"), Some(&vec!["erin".to_string()]));
    assert_eq!(new_user.attrs.get("useraccountcontrol"), Some(&vec!["544".to_string()]));
    let new_group = changes.changed.iter().find(|o| o.dn == fresh).unwrap();
    let added: BTreeSet<Option<Guid>> = new_group.member_added.iter().map(|m| m.guid).collect();
    assert_eq!(added, BTreeSet::from([Some(new_user.guid), Some(guid_of(first, &s.alice))]));
    assert!(new_group.member_removed.is_empty() && new_group.members.is_none());
    changes
}

async fn a_deleted_user_arrives_as_a_tombstone_by_guid(
    dc: &SambaDc,
    ldap: &mut Ldap,
    s: &Seeded,
    first: &Changes,
    cookie: &[u8],
) -> Changes {
    dc.modify(&format!("dn: {}\nchangetype: delete\n\n", s.dave));
    let changes = read(ldap, Some(cookie)).await.unwrap();
    assert_eq!(changes.deleted, vec![guid_of(first, &s.dave)]);
    assert!(changes.changed.is_empty(), "the tombstone is not a changed object: {:?}", dns(&changes));
    changes
}

/// Samba reports a rename or a move only when `name` is asked for (the reader always asks for it): the
/// object comes with its new DN and `name`; its groups do not come (their `member` links follow it).
async fn a_renamed_or_moved_user_keeps_its_guid_and_its_groups_stay_quiet(
    dc: &SambaDc,
    ldap: &mut Ldap,
    s: &Seeded,
    first: &Changes,
    cookie: &[u8],
) -> Changes {
    let renamed = format!("CN=carol2,OU=Staff,{AD_BASE}");
    dc.modify(&format!("dn: {}\nchangetype: modrdn\nnewrdn: CN=carol2\ndeleteoldrdn: 1\n\n", s.carol));
    let changes = read(ldap, Some(cookie)).await.unwrap();
    assert_eq!(dns(&changes), BTreeSet::from([renamed.clone()]), "the renamed user only, not its group");
    assert_eq!(changes.changed[0].guid, guid_of(first, &s.carol));
    assert_eq!(changes.changed[0].attrs.get("name"), Some(&vec!["carol2".to_string()]));

    let moved = format!("CN=carol2,OU=Groups,{AD_BASE}");
    dc.modify(&format!(
        "dn: {renamed}\nchangetype: modrdn\nnewrdn: CN=carol2\ndeleteoldrdn: 1\nnewsuperior: OU=Groups,{AD_BASE}\n\n"
    ));
    let changes = read(ldap, Some(&changes.cookie)).await.unwrap();
    assert_eq!(dns(&changes), BTreeSet::from([moved]), "the moved user only, not its group");
    assert_eq!(changes.changed[0].guid, guid_of(first, &s.carol));
    changes
}

/// Deleting a member removes it from its groups, and Samba reports only the tombstone: whoever applies the
/// changes drops the deleted objectGUID from every group itself.
async fn a_deleted_member_comes_as_its_tombstone_only(
    dc: &SambaDc,
    ldap: &mut Ldap,
    s: &Seeded,
    first: &Changes,
    cookie: &[u8],
) {
    dc.modify(&format!("dn: CN=carol2,OU=Groups,{AD_BASE}\nchangetype: delete\n\n"));
    let changes = read(ldap, Some(cookie)).await.unwrap();
    assert_eq!(changes.deleted, vec![guid_of(first, &s.carol)]);
    assert!(changes.changed.is_empty(), "{:?}", dns(&changes));
}

/// A cookie taken without reading any object (before a full read made the usual way) reads, later, only what
/// changed after it.
async fn a_watermark_alone_then_only_later_changes(dc: &SambaDc, ldap: &mut Ldap, s: &Seeded, first: &Changes) {
    let watermark = dirsync::watermark(ldap, AD_BASE, TIMEOUT).await.unwrap();
    assert!(watermark.starts_with(b"MSDS"), "{watermark:02x?}");
    dc.modify(&format!("dn: {}\nchangetype: modify\nreplace: userAccountControl\nuserAccountControl: 546\n\n", s.bob));
    let changes = read(ldap, Some(&watermark)).await.unwrap();
    assert_eq!(dns(&changes), BTreeSet::from([s.bob.clone()]));
    assert_eq!(changes.changed[0].guid, guid_of(first, &s.bob));
}

/// A position (a cookie with the domain controller that gave it) reads the changes since it on that controller
/// (the control: alice disabled arrives, and the next position is the same controller's); the same cookie said to
/// come from another controller, or from this one before a restore (another `invocationId`), is refused before
/// anything is read, as a failover behind the same URL would be.
async fn a_cookie_is_read_again_only_on_the_controller_that_gave_it(dc: &SambaDc, ldap: &mut Ldap, s: &Seeded) {
    use cloudshell_ldap_sync::ldap::changes::syncrepl::SyncError;
    let since = dirsync::position(ldap, AD_BASE, TIMEOUT).await.unwrap();
    assert!(since.server.starts_with("CN=NTDS Settings,"), "{}", since.server);
    assert!(since.cookie.starts_with(b"MSDS"), "{:02x?}", since.cookie);
    dc.modify(&format!(
        "dn: {}\nchangetype: modify\nreplace: userAccountControl\nuserAccountControl: 514\n\n",
        s.alice
    ));
    let (changes, next) = dirsync::read_from(ldap, AD_BASE, (FILTER, &ATTRS), &since, TIMEOUT).await.unwrap();
    assert_eq!(dns(&changes), BTreeSet::from([s.alice.clone()]), "the control");
    assert_eq!((&next.server, next.invocation, &next.cookie), (&since.server, since.invocation, &changes.cookie));
    let restored = dirsync::Position { invocation: [7; 16], ..since.clone() };
    let other = dirsync::Position {
        server: since.server.replacen("CN=NTDS Settings,CN=", "CN=NTDS Settings,CN=X", 1),
        ..since
    };
    for forged in [restored, other] {
        let err = dirsync::read_from(ldap, AD_BASE, (FILTER, &ATTRS), &forged, TIMEOUT).await.unwrap_err();
        assert!(matches!(err, SyncError::DirSync(Error::ServerChanged { .. })), "{err:?}");
        assert!(err.needs_full_read() && err.to_string().contains("a full read is due"), "{err}");
    }
    dc.modify(&format!(
        "dn: {}\nchangetype: modify\nreplace: userAccountControl\nuserAccountControl: 512\n\n",
        s.alice
    ));
}

async fn a_damaged_cookie_is_refused(ldap: &mut Ldap) {
    let err = read(ldap, Some(b"not a cookie")).await.unwrap_err();
    assert!(matches!(err, Error::CookieRefused { .. }), "{err:?}");
    assert!(err.to_string().contains("refused the DirSync cookie"), "{err}");
}

async fn a_base_below_the_naming_context_is_unsupported(ldap: &mut Ldap) {
    let base = format!("OU=Staff,{AD_BASE}");
    let err = dirsync::read(ldap, &base, FILTER, &ATTRS, None, TIMEOUT).await.unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err:?}");
    assert!(err.to_string().contains("not a naming-context root"), "{err}");
}

async fn an_account_without_the_right_is_told_which_right(dc: &SambaDc) {
    let bind_dn = create_plain_user("reader");
    let mut ldap = connect(dc, &bind_dn, READER_PASSWORD).await;
    let err = read(&mut ldap, None).await.unwrap_err();
    assert!(matches!(err, Error::NoRight { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("Replicating Directory Changes"), "{message}");
    assert!(message.contains("result code 50 (insufficientAccessRights)"), "{message}");
}

async fn bound(url: &str) -> Ldap {
    let (conn, mut ldap) = LdapConnAsync::new(url).await.unwrap();
    ldap3::drive!(conn);
    ldap.simple_bind(common::SERVICE_DN, common::SERVICE_PASSWORD).await.unwrap().success().unwrap();
    ldap
}

/// A directory that hangs after the bind (its answer to it is 14 bytes) is a timeout, and one that drops
/// the connection a failed read: neither is "no changes".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_or_lost_directory_fails_the_read() {
    let slapd = common::Slapd::start(&common::team_and_other());
    let bind_answer = 14;
    let stalling = common::CutProxy::stalling(slapd.port, bind_answer);
    let mut ldap = bound(&stalling.url()).await;
    let short = Duration::from_millis(500);
    let err = dirsync::read(&mut ldap, common::BASE_DN, "(objectClass=*)", &["cn"], None, short).await.unwrap_err();
    assert_eq!(err, Error::Timeout(short));
    assert_eq!(err.to_string(), "the directory did not answer the DirSync read within 500ms");

    let cut = common::CutProxy::start(slapd.port, bind_answer);
    let mut ldap = bound(&cut.url()).await;
    let err = dirsync::read(&mut ldap, common::BASE_DN, "(objectClass=*)", &["cn"], None, TIMEOUT).await.unwrap_err();
    assert!(matches!(err, Error::Ldap(_)), "{err:?}");
    assert!(err.to_string().starts_with("the DirSync read failed: "), "{err}");
}

/// OpenLDAP does not know the control; because it is critical, the search is refused (not answered without
/// it), and the read says DirSync is unsupported rather than "no changes".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_without_dirsync_refuses_the_read() {
    let slapd = common::Slapd::start(&common::team_and_other());
    let mut ldap = bound(&slapd.url()).await;
    let err = dirsync::read(&mut ldap, common::BASE_DN, "(objectClass=*)", &["cn"], None, TIMEOUT).await.unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err:?}");
    assert!(err.to_string().contains("result code 12 (unavailableCriticalExtension)"), "{err}");
}

/// `uSNChanged` reads (`ldap::changes::usn`) on the same domain controller, after the DirSync sections: the
/// watermark, what each kind of change sends, tombstones, a watermark of another database, and an account that
/// may not read CN=Deleted Objects, before and after it is granted List Contents and Read Property there.
async fn usn_reads_against_samba(dc: &SambaDc, ldap: &mut Ldap) {
    let paging = (500, TIMEOUT);
    let mut ldif = String::new();
    let mut user = |name: &str| {
        let (dn, l) = ad_user(name, name, false);
        ldif.push_str(&l);
        dn
    };
    let (ursula, victor) = (user("ursula"), user("victor"));
    let (group, l) = ad_group("UsnTeam", std::slice::from_ref(&ursula));
    ldif.push_str(&l);
    ldif.push_str(&format!("dn: OU=Below,OU=Staff,{AD_BASE}\nobjectClass: organizationalUnit\n\n"));
    dc.add(&ldif);
    let first = usn::watermark(ldap, TIMEOUT).await.unwrap();
    assert!(first.usn > 0 && first.server.starts_with("CN=NTDS Settings,"), "{first:?}");

    // Nothing changed: the watermark alone (no search for objects).
    let quiet = usn::read(ldap, AD_BASE, &first, paging).await.unwrap();
    assert_eq!((quiet.changed.len(), quiet.deleted.len(), quiet.watermark.usn), (0, 0, first.usn));

    // A member added moves the group's number, not the member's: victor does not come; ursula's memberOf names
    // the group she is in.
    dc.modify(&format!("dn: {group}\nchangetype: modify\nadd: member\nmember: {victor}\n-\n\n"));
    dc.modify(&format!(
        "dn: {ursula}\nchangetype: modify\nreplace: userAccountControl\nuserAccountControl: 546\n-\n\n"
    ));
    let changes = usn::read(ldap, AD_BASE, &quiet.watermark, paging).await.unwrap();
    // (Only the tests' own OUs: Samba may write objects of its own meanwhile.)
    let ours = |dn: &&str| dn.contains(",OU=Staff,") || dn.contains(",OU=Groups,");
    let dns: BTreeSet<&str> = changes.changed.iter().map(|c| c.dn.as_str()).filter(ours).collect();
    assert_eq!(dns, BTreeSet::from([group.as_str(), ursula.as_str()]), "the group and the disabled user only");
    let of_ursula = changes.changed.iter().find(|c| c.dn == ursula).unwrap();
    assert_eq!(of_ursula.member_of, vec![group.clone()]);
    assert!(!of_ursula.container && changes.deleted.is_empty());
    assert!(changes.watermark.usn > quiet.watermark.usn);

    // A member deleted: its tombstone only (the group keeps its number); an OU renamed: the OU, flagged as a
    // container, and not what is below it.
    let victor_guid = {
        let (found, _) = usn::by_dn(ldap, AD_BASE, std::slice::from_ref(&victor), paging).await.unwrap();
        found[0].0
    };
    dc.modify(&format!("dn: {victor}\nchangetype: delete\n\n"));
    dc.modify(&format!("dn: OU=Below,OU=Staff,{AD_BASE}\nchangetype: modrdn\nnewrdn: OU=Below2\ndeleteoldrdn: 1\n\n"));
    let later = usn::read(ldap, AD_BASE, &changes.watermark, paging).await.unwrap();
    assert_eq!(later.deleted, vec![victor_guid]);
    let renamed: Vec<(&str, bool)> =
        later.changed.iter().map(|c| (c.dn.as_str(), c.container)).filter(|(dn, _)| ours(dn)).collect();
    assert_eq!(renamed, vec![(format!("OU=Below2,OU=Staff,{AD_BASE}").as_str(), true)]);

    // Another database's watermark (a restore, another domain controller): a full read is due.
    let other = usn::Watermark { invocation: [7; 16], ..later.watermark.clone() };
    let err = usn::read(ldap, AD_BASE, &other, paging).await.unwrap_err();
    assert!(err.needs_full_read(), "{err:?}");
    assert!(err.to_string().contains("a full read is due"), "{err}");

    // An account that may not read CN=Deleted Objects would miss deletions: refused, naming the grant.
    let bind_dn = format!("CN=reader,CN=Users,{AD_BASE}");
    let mut reader = connect(dc, &bind_dn, READER_PASSWORD).await;
    let mark = usn::watermark(&mut reader, TIMEOUT).await.expect("any account reads the watermark");
    let err = usn::read(&mut reader, AD_BASE, &mark, paging).await.unwrap_err();
    assert!(err.is_refusal(), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("cannot read CN=Deleted Objects") && message.contains(":LCRP"), "{message}");
    // Granted, the same account sees a deletion.
    dc.allow_deleted_objects("reader");
    dc.modify(&format!("dn: {ursula}\nchangetype: delete\n\n"));
    let granted = usn::read(&mut reader, AD_BASE, &mark, paging).await.expect("granted");
    assert_eq!(granted.deleted.len(), 1, "ursula's tombstone: {granted:?}");
}
