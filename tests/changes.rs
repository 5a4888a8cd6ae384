//! RFC 4533 content sync (refreshOnly) against a real slapd with the `syncprov` overlay: what
//! `ldap::changes::syncrepl::read` returns for a first read, an idle read, each kind of change (with the session
//! log and without it), cookies slapd cannot use, too many entries for the bind account, and a server without
//! the overlay.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use cloudshell_ldap_sync::ldap::changes::syncrepl::{self, ChangeKind, EntryUuid, Refresh, SyncError, SyncRead};
use common::{BASE_DN, Directory, GROUPS, PEOPLE, SERVICE_DN, SERVICE_PASSWORD, Slapd};

/// The users filter ORed with the group object class, as the lead's reader will ask.
const FILTER: &str = "(|(objectClass=inetOrgPerson)(objectClass=groupOfNames))";
const ATTRS: &[&str] = &["uid", "cn", "member", "entryUUID"];
const TIMEOUT: Duration = Duration::from_secs(10);

/// A connection bound as the ordinary service account (held to the 500-entry size limit, as in production).
async fn connect(slapd: &Slapd) -> ldap3::Ldap {
    let (conn, mut ldap) = ldap3::LdapConnAsync::new(&slapd.url()).await.expect("connecting to slapd");
    ldap3::drive!(conn);
    ldap.simple_bind(SERVICE_DN, SERVICE_PASSWORD).await.expect("bind").success().expect("bind accepted");
    ldap
}

async fn read(slapd: &Slapd, cookie: Option<&[u8]>) -> Result<SyncRead, SyncError> {
    let mut ldap = connect(slapd).await;
    let r = syncrepl::read(&mut ldap, BASE_DN, FILTER, ATTRS, cookie, TIMEOUT).await;
    let _ = ldap.unbind().await;
    r
}

/// alice, bob, carol; Team (alice, bob), Other (carol).
fn seed() -> Directory {
    let mut d = Directory::new();
    let [alice, bob, carol] = ["alice", "bob", "carol"].map(|u| d.user(u));
    d.group("Team", &[alice, bob]);
    d.group("Other", &[carol]);
    d
}

fn people(uid: &str) -> String {
    format!("uid={uid},{PEOPLE}")
}

fn group(cn: &str) -> String {
    format!("cn={cn},{GROUPS}")
}

fn dns(r: &SyncRead) -> Vec<&str> {
    r.changed.iter().map(|e| e.dn.as_str()).collect()
}

fn uuid_of(r: &SyncRead, dn: &str) -> EntryUuid {
    r.changed.iter().find(|e| e.dn == dn).unwrap_or_else(|| panic!("{dn} not in {:?}", dns(r))).uuid
}

fn uuids(r: &SyncRead) -> Vec<EntryUuid> {
    r.changed.iter().map(|e| e.uuid).collect()
}

/// A cookie as slapd 2.5 writes it for a single provider: `rid=000,csn=<its contextCSN>`.
fn assert_slapd_cookie(cookie: Option<&[u8]>) {
    let text = String::from_utf8(cookie.expect("a cookie").to_vec()).expect("a text cookie");
    let csn = text.strip_prefix("rid=000,csn=").unwrap_or_else(|| panic!("cookie {text:?}"));
    assert_eq!(csn.len(), 40, "{csn}");
    assert!(csn.ends_with("#000000#000#000000") && csn.as_bytes()[21] == b'Z', "{csn}");
}

async fn first(slapd: &Slapd) -> SyncRead {
    read(slapd, None).await.expect("the first read")
}

#[tokio::test]
async fn the_first_read_returns_every_entry_and_a_cookie() {
    let slapd = Slapd::start_with_syncprov(&seed());
    let r = first(&slapd).await;
    let mut got = dns(&r);
    got.sort();
    let mut want = vec![group("Other"), group("Team"), people("alice"), people("bob"), people("carol")];
    want.sort();
    assert_eq!(got, want);
    assert!(r.changed.iter().all(|e| e.kind == ChangeKind::Add));
    assert_slapd_cookie(r.cookie.as_deref());
    // The whole content: nothing else exists (slapd ends this read with refreshDeletes TRUE all the same).
    assert_eq!(r.refresh, Refresh::Present(HashSet::new()));
    assert_eq!(r.deleted, []);
    // The UUID of the syncState control is the entry's entryUUID; the requested attributes came along.
    let team = r.changed.iter().find(|e| e.dn == group("Team")).expect("Team");
    assert_eq!(EntryUuid::parse(&team.attrs["entryUUID"][0]), Some(team.uuid));
    let mut members = team.attrs["member"].clone();
    members.sort();
    assert_eq!(members, [people("alice"), people("bob")]);
    assert_eq!(r.changed.iter().find(|e| e.dn == people("bob")).expect("bob").attrs["uid"], ["bob"]);
    assert_eq!(r.gone([EntryUuid([9; 16])]), [EntryUuid([9; 16])], "a kept entry not sent is gone");
}

#[tokio::test]
async fn a_read_with_the_cookie_and_nothing_changed_returns_nothing_and_keeps_the_cookie() {
    for slapd in [Slapd::start_with_syncprov(&seed()), Slapd::start_with_syncprov_no_sessionlog(&seed())] {
        let r0 = first(&slapd).await;
        let r = read(&slapd, r0.cookie.as_deref()).await.expect("an idle read");
        assert_eq!(r.changed, []);
        assert_eq!(r.deleted, []);
        // slapd sends no cookie and refreshDeletes TRUE: nothing else is gone.
        assert_eq!(r.refresh, Refresh::Deletes);
        assert_eq!(r.cookie, r0.cookie);
        assert_eq!(r.gone(uuids(&r0)), []);
    }
}

/// With the session log, each change since the cookie comes as an added entry (whole), and a deletion as a
/// syncIdSet in the delete phase.
#[tokio::test]
async fn changes_since_the_cookie_with_a_session_log() {
    let slapd = Slapd::start_with_syncprov(&seed());
    let r0 = first(&slapd).await;
    let kept = uuids(&r0);

    slapd.add(&format!("dn: {}\nobjectClass: inetOrgPerson\nuid: dave\ncn: dave\nsn: dave\n\n", people("dave")));
    let r1 = read(&slapd, r0.cookie.as_deref()).await.expect("after an add");
    assert_eq!(dns(&r1), [people("dave")]);
    assert_eq!(r1.changed[0].kind, ChangeKind::Add);
    assert_eq!(r1.changed[0].attrs["uid"], ["dave"]);
    assert!(!kept.contains(&r1.changed[0].uuid));
    assert_eq!((r1.refresh.clone(), r1.deleted.clone()), (Refresh::Deletes, vec![]));
    assert_ne!(r1.cookie, r0.cookie, "a new cookie");
    assert_slapd_cookie(r1.cookie.as_deref());

    slapd.modify(&format!("dn: {}\nchangetype: modify\nadd: member\nmember: {}\n\n", group("Other"), people("dave")));
    let r2 = read(&slapd, r1.cookie.as_deref()).await.expect("after a member added");
    assert_eq!(dns(&r2), [group("Other")]);
    let mut members = r2.changed[0].attrs["member"].clone();
    members.sort();
    assert_eq!(members, [people("carol"), people("dave")], "the whole entry, not the difference");
    assert_eq!(r2.changed[0].uuid, uuid_of(&r0, &group("Other")));
    assert_eq!(r2.refresh, Refresh::Deletes);

    slapd.modify(&format!("dn: {}\nchangetype: delete\n\n", people("bob")));
    let r3 = read(&slapd, r2.cookie.as_deref()).await.expect("after a delete");
    assert_eq!(r3.changed, []);
    assert_eq!(r3.deleted, [uuid_of(&r0, &people("bob"))]);
    assert_eq!(r3.refresh, Refresh::Deletes);
    assert_eq!(r3.gone(kept.iter().copied()), [uuid_of(&r0, &people("bob"))]);
    // The group still names bob: slapd without refint does not touch it, so no change is sent for it.

    slapd.modify(&format!("dn: {}\nchangetype: modrdn\nnewrdn: uid=caroline\ndeleteoldrdn: 1\n\n", people("carol")));
    let r4 = read(&slapd, r3.cookie.as_deref()).await.expect("after a rename");
    assert_eq!(dns(&r4), [people("caroline")]);
    assert_eq!(r4.changed[0].uuid, uuid_of(&r0, &people("carol")), "a rename keeps the entryUUID");
    assert_eq!(r4.changed[0].attrs["uid"], ["caroline"]);
    assert_eq!((r4.refresh.clone(), r4.deleted.clone()), (Refresh::Deletes, vec![]));

    let idle = read(&slapd, r4.cookie.as_deref()).await.expect("idle after the changes");
    assert_eq!((idle.changed.len(), idle.deleted.len(), idle.cookie), (0, 0, r4.cookie));
}

/// Without the session log slapd cannot name deletions: every read with a cookie is a present phase (a
/// syncIdSet of every entry still there, refreshDeletes FALSE), changed entries sent whole.
#[tokio::test]
async fn changes_since_the_cookie_without_a_session_log_come_with_a_present_phase() {
    let slapd = Slapd::start_with_syncprov_no_sessionlog(&seed());
    let r0 = first(&slapd).await;
    let kept = uuids(&r0);

    slapd.modify(&format!("dn: {}\nchangetype: modify\nadd: member\nmember: {}\n\n", group("Other"), people("alice")));
    let r1 = read(&slapd, r0.cookie.as_deref()).await.expect("after a member added");
    assert_eq!(dns(&r1), [group("Other")]);
    assert_eq!(r1.refresh, Refresh::Present(kept.iter().copied().collect()));
    assert_eq!(r1.gone(kept.iter().copied()), []);

    slapd.modify(&format!("dn: {}\nchangetype: delete\n\n", people("bob")));
    let r2 = read(&slapd, r1.cookie.as_deref()).await.expect("after a delete");
    assert_eq!((r2.changed.clone(), r2.deleted.clone()), (vec![], vec![]), "bob is not named");
    let Refresh::Present(present) = &r2.refresh else { panic!("a present phase: {:?}", r2.refresh) };
    assert_eq!(present.len(), 4);
    assert_eq!(r2.gone(kept.iter().copied()), [uuid_of(&r0, &people("bob"))]);

    slapd.modify(&format!("dn: {}\nchangetype: modrdn\nnewrdn: uid=caroline\ndeleteoldrdn: 1\n\n", people("carol")));
    let r3 = read(&slapd, r2.cookie.as_deref()).await.expect("after a rename");
    assert_eq!(dns(&r3), [people("caroline")]);
    assert_eq!(r3.changed[0].uuid, uuid_of(&r0, &people("carol")));
    assert_eq!(r3.gone(kept.iter().copied()), [uuid_of(&r0, &people("bob"))]);
}

/// slapd takes a cookie without a CSN it can parse for no cookie and answers with everything, in delete mode:
/// read as changes, that would miss every deletion since. `read` refuses such a cookie before sending it.
#[tokio::test]
async fn a_cookie_slapd_cannot_parse_is_refused_before_it_is_sent() {
    let slapd = Slapd::start_with_syncprov(&seed());
    for bogus in [&b"rid=000,csn=garbage"[..], b"", b"rid=000"] {
        match read(&slapd, Some(bogus)).await {
            Err(e @ SyncError::CookieRefused { .. }) => assert!(e.needs_full_read()),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bogus)),
        }
    }
    // What slapd does with it, sent by hand: every entry, and a syncDone saying refreshDeletes TRUE.
    let mut ldap = connect(&slapd).await;
    let mut control: ldap3::controls::RawControl = ldap3::controls::SyncRequest {
        mode: ldap3::controls::RefreshMode::RefreshOnly,
        cookie: Some(b"rid=000,csn=garbage".to_vec()),
        reload_hint: false,
    }
    .into();
    control.crit = true;
    let ldap3::SearchResult(entries, result) =
        ldap.with_controls(control).search(BASE_DN, ldap3::Scope::Subtree, FILTER, ATTRS).await.expect("search");
    assert_eq!((entries.len(), result.rc), (5, 0));
    let done = result.ctrls.iter().find(|c| c.1.ctype == syncrepl::SYNC_DONE_OID).expect("syncDone");
    assert_eq!(done.1.val.as_deref().map(|v| v.last().copied()), Some(Some(0xff)), "refreshDeletes TRUE");
}

/// A CSN ahead of slapd's own (a cookie from a restored or another server): unwillingToPerform (53),
/// "consumer state is newer than provider!".
#[tokio::test]
async fn a_cookie_from_the_future_is_refused_by_slapd() {
    let slapd = Slapd::start_with_syncprov(&seed());
    match read(&slapd, Some(b"rid=000,csn=29990101000000.000000Z#000000#000#000000")).await {
        Err(e @ SyncError::CookieRefused { .. }) => {
            assert!(e.to_string().contains("result code 53") && e.to_string().contains("newer than provider"), "{e}");
            assert!(e.needs_full_read());
        }
        other => panic!("{other:?}"),
    }
}

/// With `syncprov-reloadhint TRUE`, slapd answers a cookie it can no longer serve (here one older than every entry)
/// with e-syncRefreshRequired (4096): a full read, never changes. The control: the same server serves a cookie of
/// its own. (Without the option, the default, slapd sends a present phase instead: the next test.)
#[tokio::test]
async fn a_cookie_slapd_can_no_longer_serve_is_answered_with_e_sync_refresh_required() {
    let slapd = Slapd::start_with_syncprov_reload_hint(&seed());
    let r0 = first(&slapd).await;
    read(&slapd, r0.cookie.as_deref()).await.expect("the control: a cookie of its own");
    match read(&slapd, Some(b"rid=000,csn=20200101000000.000000Z#000000#000#000000")).await {
        Err(e @ SyncError::RefreshRequired { .. }) => {
            assert!(e.needs_full_read());
            assert!(e.to_string().contains("e-syncRefreshRequired"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}

/// A cookie older than the session log, or naming another server id: slapd sends everything as a present
/// phase (refreshDeletes FALSE), so what it did not send is gone. No e-syncRefreshRequired (4096) without
/// `syncprov-reloadhint TRUE` (the test before).
#[tokio::test]
async fn an_old_or_foreign_cookie_gets_the_whole_content_as_a_present_phase() {
    let slapd = Slapd::start_with_syncprov(&seed());
    let r0 = first(&slapd).await;
    slapd.modify(&format!("dn: {}\nchangetype: delete\n\n", people("bob")));
    for cookie in [
        &b"rid=000,csn=20200101000000.000000Z#000000#000#000000"[..],
        b"rid=000,csn=20200101000000.000000Z#000000#007#000000",
    ] {
        let r = read(&slapd, Some(cookie)).await.expect("a read with an old cookie");
        assert_eq!(r.changed.len(), 4, "{:?}", dns(&r));
        assert!(matches!(&r.refresh, Refresh::Present(p) if p.is_empty()), "{:?}", r.refresh);
        assert_eq!(r.gone(uuids(&r0)), [uuid_of(&r0, &people("bob"))]);
        assert_slapd_cookie(r.cookie.as_deref());
    }
}

#[tokio::test]
async fn a_server_without_syncprov_is_unsupported() {
    let slapd = Slapd::start(&seed());
    match read(&slapd, None).await {
        Err(SyncError::Unsupported { reason }) => {
            assert!(reason.contains("syncprov") && reason.contains("result code 12"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

/// The content-sync search is not paged: slapd's size limit stops it (and combined with the paged-results
/// control, slapd 2.5 answers the first page only, with success: never combine them).
#[tokio::test]
async fn more_entries_than_the_size_limit_fail_and_say_why() {
    let mut d = seed();
    d.users("u", 600);
    let slapd = Slapd::start_with_syncprov(&d);
    match read(&slapd, None).await {
        Err(SyncError::Ldap { code: Some(4), reason }) => assert!(reason.contains("size=unlimited"), "{reason}"),
        other => panic!("{:?}", other.map(|r| r.changed.len())),
    }
}

/// An entry that stops matching the filter, or leaves the base, is gone like a deleted one (named with the
/// session log, left out of the present set without it), and comes back whole when it matches again.
#[tokio::test]
async fn an_entry_leaving_the_filter_or_the_base_is_gone() {
    let filter = "(&(objectClass=inetOrgPerson)(!(description=hidden)))";
    for slapd in [Slapd::start_with_syncprov(&seed()), Slapd::start_with_syncprov_no_sessionlog(&seed())] {
        let sync = |cookie: Option<Vec<u8>>| {
            let slapd = &slapd;
            async move {
                let mut ldap = connect(slapd).await;
                syncrepl::read(&mut ldap, PEOPLE, filter, ATTRS, cookie.as_deref(), TIMEOUT).await.expect("a read")
            }
        };
        let r0 = sync(None).await;
        let kept = uuids(&r0);
        assert_eq!(kept.len(), 3);
        let (alice, bob) = (uuid_of(&r0, &people("alice")), uuid_of(&r0, &people("bob")));

        slapd
            .modify(&format!("dn: {}\nchangetype: modify\nadd: description\ndescription: hidden\n\n", people("alice")));
        let r1 = sync(r0.cookie.clone()).await;
        assert_eq!(r1.changed, []);
        assert_eq!(r1.gone(kept.iter().copied()), [alice], "out of the filter: {r1:?}");

        slapd.modify(&format!(
            "dn: {}\nchangetype: modrdn\nnewrdn: uid=bob\ndeleteoldrdn: 1\nnewsuperior: ou=service,{BASE_DN}\n\n",
            people("bob")
        ));
        let r2 = sync(r1.cookie.clone()).await;
        assert_eq!(r2.changed, []);
        assert_eq!(r2.gone(kept.iter().filter(|u| **u != alice).copied()), [bob], "out of the base: {r2:?}");

        slapd.modify(&format!("dn: {}\nchangetype: modify\ndelete: description\n\n", people("alice")));
        let r3 = sync(r2.cookie.clone()).await;
        assert_eq!(dns(&r3), [people("alice")]);
        assert_eq!(r3.changed[0].uuid, alice);
    }
}

/// slapd keeps the session log in memory: after a restart, a read with a cookie is a present phase, with or
/// without `syncprov-sessionlog`. An entry hidden by an access rule at that restart (how an admin's ACL change
/// looks here; the rule changes no CSN) is left out of it, so it is gone. The fixture keeps the overlay and the
/// data across the restart.
#[tokio::test]
async fn after_a_restart_a_read_with_a_cookie_is_a_present_phase() {
    for mut slapd in [Slapd::start_with_syncprov(&seed()), Slapd::start_with_syncprov_no_sessionlog(&seed())] {
        let r0 = first(&slapd).await;
        let alice = uuid_of(&r0, &people("alice"));
        slapd.restart_with_acl(&format!("access to dn.base=\"{}\" by * none", people("alice")));
        let r = read(&slapd, r0.cookie.as_deref()).await.expect("a read after the restart");
        assert_eq!((r.changed.len(), r.deleted.len()), (0, 0));
        let Refresh::Present(present) = &r.refresh else { panic!("a present phase: {:?}", r.refresh) };
        assert_eq!(present.len(), 4);
        assert_eq!(r.gone(uuids(&r0)), [alice]);
    }
}
