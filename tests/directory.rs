//! Directory enumeration against a real slapd, bound as an ordinary service account held to the 500-entry
//! limit: paging, nesting, odd names, collisions, TLS and failures.

mod common;

use std::time::{Duration, Instant};

use cloudshell_ldap_sync::group_name::GroupName;
use cloudshell_ldap_sync::ldap::{self, Error, Group, Settings, Snapshot};
use cloudshell_ldap_sync::username::{SharedNames, Username};
use common::{CutProxy, Directory, PEOPLE, SERVICE_DN, SERVICE_PASSWORD, Silent, Slapd};
use secrecy::SecretString;

fn settings(url: &str) -> Settings {
    common::ldap_settings(url)
}

fn names(groups: &[&str]) -> Vec<GroupName> {
    groups.iter().map(|g| GroupName::new(g)).collect()
}

fn group<'a>(snap: &'a Snapshot, name: &str) -> &'a Group {
    let outcome = snap.groups.iter().find(|g| g.name == name).unwrap_or_else(|| panic!("no outcome for {name}"));
    outcome.result.as_ref().unwrap_or_else(|e| panic!("{name} failed: {e}"))
}

fn error<'a>(snap: &'a Snapshot, name: &str) -> &'a Error {
    let outcome = snap.groups.iter().find(|g| g.name == name).unwrap_or_else(|| panic!("no outcome for {name}"));
    match &outcome.result {
        Err(e) => e,
        Ok(g) => panic!("{name} should have failed, has {} members", g.members.len()),
    }
}

fn usernames(g: &Group) -> Vec<String> {
    g.members.iter().map(|m| m.username.to_string()).collect()
}

/// 3,600 users; `Huge` has 3,000 of them, `Small` 3.
fn big_directory() -> Directory {
    let mut d = Directory::new();
    let users = d.users("u", 3600);
    d.group("Huge", &users[..3000]);
    d.group("Small", &users[3000..3003]);
    d
}

#[tokio::test]
async fn pages_past_the_500_entry_limit_and_reads_a_3000_member_group() {
    let slapd = Slapd::start(&big_directory());
    // The fixture really caps unpaged searches for the service account.
    let unpaged = std::process::Command::new("ldapsearch")
        .args(["-x", "-H", &slapd.url(), "-D", SERVICE_DN, "-w", SERVICE_PASSWORD, "-b", PEOPLE, "(uid=*)", "uid"])
        .output()
        .unwrap();
    assert_eq!(unpaged.status.code(), Some(4), "sizeLimitExceeded expected for an unpaged search");

    let snap = ldap::snapshot(&settings(&slapd.url()), &names(&["Huge", "Small"])).await.unwrap();
    assert_eq!(snap.users_seen, 3600);
    let huge = group(&snap, "Huge");
    assert_eq!(huge.members.len(), 3000);
    assert_eq!(huge.members[0].username.as_str(), "u00000");
    assert_eq!(usernames(group(&snap, "Small")), ["u03000", "u03001", "u03002"]);
    // One users search and one group search: no search per member.
    assert_eq!(snap.searches, 2);
}

#[tokio::test]
async fn a_page_size_the_server_refuses_names_the_key() {
    let slapd = Slapd::start(&big_directory());
    let s = Settings { page_size: 1000, ..settings(&slapd.url()) };
    let snap = ldap::snapshot(&s, &names(&["Small"])).await.unwrap();
    let e = error(&snap, "Small");
    assert!(matches!(e, Error::PageSize { page_size: 1000, .. }), "{e}");
    assert!(e.to_string().contains("ldap.page_size"), "{e}");
}

/// A ⊃ {a1, B}, B ⊃ {b1, C}, C ⊃ {c1, A}: three levels and a cycle.
fn nested_directory() -> Directory {
    let mut d = Directory::new();
    let a1 = d.user("a1");
    let b1 = d.user("b1");
    let c1 = d.user("c1");
    let a = format!("cn=A,{}", common::GROUPS);
    let b = format!("cn=B,{}", common::GROUPS);
    let c = format!("cn=C,{}", common::GROUPS);
    d.group("A", &[a1, b.clone()]);
    d.group("B", &[b1, c.clone()]);
    d.group("C", &[c1, a]);
    d
}

#[tokio::test]
async fn expands_nested_groups_three_deep_through_a_cycle() {
    let slapd = Slapd::start(&nested_directory());
    let snap = ldap::snapshot(&settings(&slapd.url()), &names(&["A", "C"])).await.unwrap();
    let a = group(&snap, "A");
    assert_eq!(usernames(a), ["a1", "b1", "c1"]);
    let sources: Vec<(&str, Vec<String>)> = a
        .sources
        .iter()
        .map(|s| (s.name.as_str(), s.direct_members.iter().map(|u| u.username.to_string()).collect()))
        .collect();
    assert_eq!(sources, [("A", vec!["a1".into()]), ("B", vec!["b1".into()]), ("C", vec!["c1".into()])]);
    assert_eq!(usernames(group(&snap, "C")), ["a1", "b1", "c1"]);

    // Without nesting, only direct members count.
    let flat = Settings { nesting: ldap::Nesting::Off, ..settings(&slapd.url()) };
    let snap = ldap::snapshot(&flat, &names(&["A"])).await.unwrap();
    assert_eq!(usernames(group(&snap, "A")), ["a1"]);
    assert_eq!(group(&snap, "A").skipped_members, 1);

    // A depth cap below the nesting puts the group in error rather than cutting it short.
    let shallow = Settings { max_nesting_depth: 1, ..settings(&slapd.url()) };
    let snap = ldap::snapshot(&shallow, &names(&["A"])).await.unwrap();
    assert!(matches!(error(&snap, "A"), Error::TooDeep { depth: 1, .. }), "{}", error(&snap, "A"));
}

#[tokio::test]
async fn skips_dangling_and_foreign_members_and_keeps_empty_groups_empty() {
    let mut d = Directory::new();
    let alice = d.user("alice");
    d.group("WithGhosts", &[alice, format!("uid=ghost,{PEOPLE}"), "cn=foreign,dc=elsewhere,dc=com".into()]);
    d.group("Empty", &[]);
    let slapd = Slapd::start(&d);
    let snap = ldap::snapshot(&settings(&slapd.url()), &names(&["WithGhosts", "Empty", "Missing"])).await.unwrap();
    let g = group(&snap, "WithGhosts");
    assert_eq!(usernames(g), ["alice"]);
    assert_eq!(g.skipped_members, 2);
    assert!(group(&snap, "Empty").members.is_empty(), "a group with no members is legitimately empty");
    let missing = error(&snap, "Missing");
    assert!(matches!(missing, Error::GroupNotFound { .. }), "{missing}");
    assert!(missing.to_string().contains("\"Missing\" not found"), "{missing}");
}

#[tokio::test]
async fn many_dangling_members_cost_one_group_sweep_not_a_read_each() {
    let mut d = Directory::new();
    let alice = d.user("alice");
    let bob = d.user("bob");
    let inner = d.group("Inner", std::slice::from_ref(&bob));
    let mut members = vec![alice, inner];
    // 300 references to deleted people and two outside the base (read one by one: the sweep cannot see there).
    members.extend((0..300).map(|n| format!("uid=gone{n:03},{PEOPLE}")));
    members.extend(["cn=x,dc=elsewhere,dc=com".to_string(), "cn=y,dc=elsewhere,dc=com".to_string()]);
    d.group("Haunted", &members);
    let slapd = Slapd::start(&d);
    let snap = ldap::snapshot(&settings(&slapd.url()), &names(&["Haunted"])).await.unwrap();
    let g = group(&snap, "Haunted");
    assert_eq!(usernames(g), ["alice", "bob"], "the nested group is still found by the sweep");
    assert_eq!(g.skipped_members, 302);
    assert_eq!(snap.searches, 5, "the users, the named group, the sweep, the two outside the base: not 303 reads");

    // Under the sweep's threshold each member DN is still read on its own.
    let mut d = Directory::new();
    let alice = d.user("alice");
    let few: Vec<String> = std::iter::once(alice).chain((0..3).map(|n| format!("uid=gone{n},{PEOPLE}"))).collect();
    d.group("Few", &few);
    let slapd = Slapd::start(&d);
    let snap = ldap::snapshot(&settings(&slapd.url()), &names(&["Few"])).await.unwrap();
    assert_eq!((usernames(group(&snap, "Few")), group(&snap, "Few").skipped_members), (vec!["alice".to_string()], 3));
    assert_eq!(snap.searches, 5, "the users, the named group and three base reads");
}

#[tokio::test]
async fn reads_groups_and_users_with_odd_names() {
    let mut d = Directory::new();
    let porter = d.user_at(&format!("cn=Porter\\, James,{PEOPLE}"), "jporter", "Porter, James");
    let zoe = d.user_at(&format!("cn=Zoë Ünal+uid=zunal,{PEOPLE}"), "zunal", "Zoë Ünal");
    let hash = d.user_at(&format!("cn=\\#1 \\<boss\\>,{PEOPLE}"), "boss", "#1 <boss>");
    // Member values written with other (equivalent) escapings and case than the entries' own DNs.
    let porter_alt = "CN=Porter\\2C James,OU=People,DC=Example,DC=Org".to_string();
    let odd = ["Ops (EU) *", "R&D\\Lab", "Développeurs", " Lead Space ", "a,b+c\"d<e>f;g=h"];
    for name in odd {
        d.group(name, &[porter_alt.clone(), zoe.clone(), hash.clone()]);
    }
    d.group("Decoy (EU) x", std::slice::from_ref(&porter));
    let slapd = Slapd::start(&d);
    let snap = ldap::snapshot(&settings(&slapd.url()), &names(&odd)).await.unwrap();
    for name in odd {
        assert_eq!(usernames(group(&snap, name)), ["boss", "jporter", "zunal"], "group {name:?}");
    }
    assert_eq!(group(&snap, "Développeurs").dn, "cn=Développeurs,ou=groups,dc=example,dc=org");
    let jp = &group(&snap, "Ops (EU) *").members[1];
    assert_eq!(ldap::DnKey::new(&jp.dn), ldap::DnKey::new(&porter), "slapd writes the escape its own way");
    // The asterisk is escaped, not a wildcard: "Ops (EU) *" does not also find "Decoy (EU) x".
    assert_eq!(snap.searches, 2);
}

#[tokio::test]
async fn usernames_compare_case_insensitively_and_collisions_are_reported() {
    let mut d = Directory::new();
    let jp = d.user("JPorter");
    let dup1 = d.user_at(&format!("cn=dup one,{PEOPLE}"), "dup", "dup one");
    let dup2 = d.user_at(&format!("cn=dup two,{PEOPLE}"), "DUP", "dup two");
    d.group("Team", &[jp, dup1.clone(), dup2.clone()]);
    let slapd = Slapd::start(&d);
    let snap = ldap::snapshot(&settings(&slapd.url()), &names(&["Team"])).await.unwrap();
    let team = group(&snap, "Team");
    assert_eq!(team.members.len(), 1);
    assert_eq!(team.members[0].username, Username::new("jporter").unwrap());
    assert_eq!(team.members[0].username.as_str(), "JPorter");
    assert_eq!(team.collisions.len(), 1);
    assert_eq!(team.collisions[0].username, Username::new("dup").unwrap());
    assert_eq!(team.collisions[0].dns, [dup1, dup2]);
}

#[tokio::test]
async fn ldaps_and_starttls_verify_the_certificate_against_ca_file() {
    let mut d = Directory::new();
    let alice = d.user("alice");
    d.group("Team", &[alice]);
    let slapd = Slapd::start_tls(&d);
    let groups = names(&["Team"]);

    let ldaps = Settings { ca_file: Some(slapd.ca_file()), ..settings(&slapd.ldaps_url()) };
    let snap = ldap::snapshot(&ldaps, &groups).await.unwrap();
    assert_eq!(usernames(group(&snap, "Team")), ["alice"]);

    let starttls = Settings { starttls: true, ca_file: Some(slapd.ca_file()), ..settings(&slapd.url()) };
    let snap = ldap::snapshot(&starttls, &groups).await.unwrap();
    assert_eq!(usernames(group(&snap, "Team")), ["alice"]);

    for s in [settings(&slapd.ldaps_url()), Settings { starttls: true, ..settings(&slapd.url()) }] {
        let err = ldap::snapshot(&s, &groups).await.unwrap_err();
        assert!(matches!(err, Error::Connect { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("ldap.ca_file") && text.contains(&s.urls[0]), "{text}");
    }

    let skip = Settings { danger_skip_tls_verify: true, ..settings(&slapd.ldaps_url()) };
    assert_eq!(usernames(group(&ldap::snapshot(&skip, &groups).await.unwrap(), "Team")), ["alice"]);

    let bad_ca = slapd.dir().join("not-a-ca.pem");
    std::fs::write(&bad_ca, "hello").unwrap();
    let err = ldap::snapshot(&Settings { ca_file: Some(bad_ca), ..ldaps }, &groups).await.unwrap_err();
    assert!(matches!(err, Error::Tls { .. }) && err.to_string().contains("not-a-ca.pem"), "{err}");
}

#[tokio::test]
async fn a_server_dying_during_a_paged_search_fails_the_groups_instead_of_truncating() {
    let slapd = Slapd::start(&big_directory());
    // Enough for the bind and the first pages of users, not for all 3,600.
    let proxy = CutProxy::start(slapd.port, 60_000);
    let snap = ldap::snapshot(&settings(&proxy.url()), &names(&["Huge", "Small"])).await.unwrap();
    for name in ["Huge", "Small"] {
        let e = error(&snap, name);
        assert!(matches!(e, Error::Search { .. }), "{name}: {e}");
        assert!(e.to_string().contains("the users search"), "{e}");
    }
}

#[tokio::test]
async fn a_wrong_bind_password_is_refused_by_name_without_echoing_it() {
    let slapd = Slapd::start(&Directory::new());
    let s = Settings { bind_password: SecretString::from("not-the-password"), ..settings(&slapd.url()) };
    let err = ldap::snapshot(&s, &names(&["Team"])).await.unwrap_err();
    assert!(matches!(err, Error::Bind { .. }), "{err}");
    let text = format!("{err} {err:?} {s:?}");
    assert!(text.contains("invalidCredentials") && text.contains(SERVICE_DN), "{text}");
    assert!(!text.contains("not-the-password"), "{text}");
}

#[tokio::test]
async fn an_unreachable_or_silent_server_fails_within_the_timeout() {
    let closed = common::free_port();
    let err = ldap::snapshot(&settings(&format!("ldap://127.0.0.1:{closed}")), &names(&["Team"])).await.unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err}");
    assert!(err.to_string().contains(&format!("127.0.0.1:{closed}")), "{err}");

    let silent = Silent::start();
    let s = Settings { timeout: Duration::from_millis(500), ..settings(&format!("ldap://127.0.0.1:{}", silent.port)) };
    let started = Instant::now();
    let err = ldap::snapshot(&s, &names(&["Team"])).await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5), "gave up after {:?}", started.elapsed());
}

#[tokio::test]
async fn odd_attribute_values_skip_the_user_never_the_run() {
    use base64::Engine;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut d = Directory::new();
    // `audio` is an octet string: it can hold what a username attribute should never hold.
    let mut users = Vec::new();
    for (uid, audio) in [("good", b"good".to_vec()), ("binary", vec![0xff, 0xfe, 0x41]), ("long", vec![b'x'; 300])] {
        let dn = format!("uid={uid},{PEOPLE}");
        d.raw(&format!(
            "dn: {dn}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\naudio:: {}\n\n",
            b64(&audio)
        ));
        users.push(dn);
    }
    // No `audio` at all, and an enormous display name.
    let huge = "Z".repeat(300_000);
    d.raw(&format!(
        "dn: uid=plain,{PEOPLE}\nobjectClass: inetOrgPerson\nuid: plain\ncn: plain\nsn: plain\ndisplayName: {huge}\n\n"
    ));
    users.push(format!("uid=plain,{PEOPLE}"));
    d.group("Odd", &users);
    let slapd = Slapd::start(&d);

    let s = Settings { username_attribute: "audio".into(), ..settings(&slapd.url()) };
    let snap = ldap::snapshot(&s, &names(&["Odd"])).await.unwrap();
    let odd = group(&snap, "Odd");
    assert_eq!(usernames(odd), ["good"], "the others have no usable username");
    assert_eq!(odd.skipped_members, 3, "skipped members are counted, not imported");

    // The same directory by uid: every user is there (the enormous display name is not even asked for).
    let snap = ldap::snapshot(&settings(&slapd.url()), &names(&["Odd"])).await.unwrap();
    let odd = group(&snap, "Odd");
    assert_eq!(usernames(odd), ["binary", "good", "long", "plain"]);
}

#[tokio::test]
async fn fails_over_to_the_next_url_when_the_first_is_down() {
    let mut d = Directory::new();
    let alice = d.user("alice");
    d.group("Team", &[alice]);
    let slapd = Slapd::start(&d);
    let down = format!("ldap://127.0.0.1:{}", common::free_port());
    let s = Settings { urls: vec![down.clone(), slapd.url()], connect_retries: 1, ..settings(&slapd.url()) };
    let snap = ldap::snapshot(&s, &names(&["Team"])).await.unwrap();
    assert_eq!(snap.served_by, slapd.url());
    assert_eq!(usernames(group(&snap, "Team")), ["alice"]);

    // All down: one error naming every URL.
    let other = format!("ldap://127.0.0.1:{}", common::free_port());
    let s = Settings { urls: vec![down.clone(), other.clone()], connect_retries: 0, ..settings(&slapd.url()) };
    let err = ldap::snapshot(&s, &names(&["Team"])).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Connect { .. }) && text.contains(&down) && text.contains(&other), "{text}");

    // A refused password is not tried on the next server.
    let s = Settings {
        urls: vec![slapd.url(), down],
        bind_password: SecretString::from("wrong"),
        ..settings(&slapd.url())
    };
    assert!(matches!(ldap::snapshot(&s, &names(&["Team"])).await.unwrap_err(), Error::Bind { .. }));
}

#[tokio::test]
async fn active_directory_only_options_never_empty_an_openldap_group() {
    let slapd = Slapd::start(&big_directory());
    // Range windows are an Active Directory option: OpenLDAP would answer with no members; they are ignored.
    let ranged = Settings { member_range_size: Some(10), ..settings(&slapd.url()) };
    let snap = ldap::snapshot(&ranged, &names(&["Huge"])).await.unwrap();
    assert_eq!(group(&snap, "Huge").members.len(), 3000);
    // IN_CHAIN matches nothing outside Active Directory: an explicit request fails the groups, never empties them.
    let in_chain = Settings { nesting: ldap::Nesting::InChain, ..settings(&slapd.url()) };
    let snap = ldap::snapshot(&in_chain, &names(&["Huge"])).await.unwrap();
    assert!(error(&snap, "Huge").to_string().contains("needs Active Directory"), "{}", error(&snap, "Huge"));
    // "auto" detects that this is not Active Directory and expands recursively.
    let auto = Settings { nesting: ldap::Nesting::Auto, ..settings(&slapd.url()) };
    let snap = ldap::snapshot(&auto, &names(&["Huge"])).await.unwrap();
    assert_eq!(group(&snap, "Huge").members.len(), 3000);
}

/// A hostile directory: it answers the bind (when `bind_first`, with success, then the next request) with a
/// header claiming a 2 GB message, then streams zeros, up to 1 GB, as fast as the client takes them.
fn hostile_directory(bind_first: bool) -> (String, std::thread::JoinHandle<usize>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ldap://{}", listener.local_addr().unwrap());
    let peer = std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        let mut request = [0u8; 4096];
        let n = socket.read(&mut request).unwrap();
        // The message id follows the outer tag and length: 30 <len> 02 01 <id>.
        let id_at = if request[1] < 0x80 { 4 } else { 4 + usize::from(request[1] & 0x7f) };
        assert!(n > id_at, "a bind request");
        if bind_first {
            let ok = [0x30, 0x0c, 0x02, 0x01, request[id_at], 0x61, 0x07, 0x0a, 0x01, 0x00, 0x04, 0x00, 0x04, 0x00];
            socket.write_all(&ok).unwrap();
            let _ = socket.read(&mut request).unwrap();
        }
        let mut sent = 0;
        if socket.write_all(&[0x30, 0x84, 0x80, 0x00, 0x00, 0x00, 0x02, 0x01, 0x02]).is_err() {
            return sent;
        }
        let chunk = vec![0u8; 1 << 20];
        while sent < 1 << 30 && socket.write_all(&chunk).is_ok() {
            sent += chunk.len();
        }
        sent
    });
    (url, peer)
}

/// The process's peak resident memory, from `/proc/self/status`.
fn peak_rss_mb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM in /proc/self/status");
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() / 1024
}

#[tokio::test]
async fn a_directory_claiming_a_2_gb_message_costs_an_error_naming_the_url_not_the_memory() {
    for bind_first in [false, true] {
        let (url, peer) = hostile_directory(bind_first);
        let started = Instant::now();
        let outcome = ldap::snapshot(&settings(&url), &names(&["Team"])).await;
        let e = match (&outcome, bind_first) {
            (Err(e), false) => e.to_string(),
            (Ok(snap), true) => error(snap, "Team").to_string(),
            _ => panic!("bind_first {bind_first}: {outcome:?}"),
        };
        assert!(e.contains(&url) && e.contains("2147483648 bytes") && e.contains("ldap.max_message_mib"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
        let sent = peer.join().unwrap();
        assert!(sent < 256 << 20, "the connection was ended early: the peer sent {sent} bytes");
        assert!(peak_rss_mb() < 256, "peak memory {} MB while the peer claimed 2 GB", peak_rss_mb());
    }
}

#[tokio::test]
async fn a_read_sharing_names_gives_its_members_the_copies_made_before_it() {
    let mut d = Directory::new();
    let team = [d.user("alice"), d.user("Bob"), d.user("carol")];
    d.group("Team", &team);
    let slapd = Slapd::start(&d);
    let (s, groups) = (settings(&slapd.url()), names(&["Team"]));
    // What CloudShell's list, read beside the directory, made first: "bob" is written otherwise there.
    let shared = std::sync::Arc::new(SharedNames::default());
    let made = ["alice", "bob"].map(|n| shared.share(&Username::new(n).unwrap()));
    let text = |name: &Username| name.as_str().as_ptr();
    let read = ldap::Connection::open(&s).await.unwrap().sharing(shared.clone()).read(&groups).await;
    let snap = ldap::resolve(&read, &s, &groups);
    let member = |snap: &Snapshot, name: &str| {
        let m = group(snap, "Team").members.iter().find(|m| m.username.as_str() == name);
        m.map(|m| m.username.clone()).unwrap_or_else(|| panic!("{name} not a member"))
    };
    assert_eq!(text(&member(&snap, "alice")), text(&made[0]), "the copy made before");
    assert_ne!(text(&member(&snap, "Bob")), text(&made[1]), "written otherwise: its own text");
    assert_eq!(text(&shared.share(&Username::new("carol").unwrap())), text(&member(&snap, "carol")), "held for later");
    // A read not sharing makes its own.
    let plain = ldap::snapshot(&s, &groups).await.unwrap();
    assert_eq!(usernames(group(&plain, "Team")), usernames(group(&snap, "Team")), "the same members");
    assert_ne!(text(&member(&plain, "alice")), text(&made[0]));
}
