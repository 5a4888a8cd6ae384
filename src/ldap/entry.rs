//! Search entries decoded without panicking, and turned into members. `ldap3::SearchEntry::construct`
//! panics on a malformed entry (and on a DN that is not UTF-8); a directory's bad answer must become an
//! error, never a crash. An entry that cannot be a member says why, for the `user skipped` event; one whose
//! username attribute holds several names is ambiguous, never read as its first value.

use std::collections::HashMap;

use ldap3::asn1::StructureTag;
use ldap3::{ResultEntry, SearchEntry};

use super::Member;
use crate::username::{SharedNames, Username};

/// Usernames longer than this are refused (Active Directory's own limit is 20; CloudShell stores names, not
/// essays).
pub const MAX_USERNAME_CHARS: usize = 256;

/// `userAccountControl`'s ACCOUNTDISABLE bit.
const ACCOUNT_DISABLED: i64 = 0x2;

/// Values of an attribute, matched case-insensitively (servers may answer `memberof` for `memberOf`).
pub fn values<'e>(entry: &'e SearchEntry, attr: &str) -> impl Iterator<Item = &'e String> {
    attr_values(&entry.attrs, attr)
}

/// [`values`] of an entry's text attributes, however the entry is held.
pub fn attr_values<'e>(attrs: &'e HashMap<String, Vec<String>>, attr: &str) -> impl Iterator<Item = &'e String> {
    attrs.iter().filter(move |(k, _)| k.eq_ignore_ascii_case(attr)).flat_map(|(_, v)| v.iter())
}

/// The username values of a user entry as [`UserEntry::from_entry`] reads them: `None` without the attribute,
/// `Err(())` when it is there but not UTF-8 (in `bin_attrs`).
pub fn username_values(
    attrs: &HashMap<String, Vec<String>>,
    bin_attrs: &HashMap<String, Vec<Vec<u8>>>,
    attr: &str,
) -> Option<Result<Vec<String>, ()>> {
    let names: Vec<String> = attr_values(attrs, attr).cloned().collect();
    match names.is_empty() {
        false => Some(Ok(names)),
        true => bin_attrs.keys().any(|k| k.eq_ignore_ascii_case(attr)).then_some(Err(())),
    }
}

/// A `userAccountControl` value as [`UserEntry`] reads it (the first value of the attribute): `None` when it
/// is not a number.
pub fn account_control(first: &str) -> Option<i64> {
    first.trim().parse::<i64>().ok()
}

/// Which attributes make a user entry a member.
pub struct UserAttributes<'a> {
    pub username: &'a str,
    /// Keep accounts Active Directory marks disabled.
    pub include_disabled: bool,
}

/// What a user entry is to the sync.
#[derive(Debug, PartialEq, Eq)]
pub enum UserEntry {
    User(Member),
    /// An account the directory marks disabled (left out of the members unless `include_disabled`), kept by
    /// name: `sync.disabled_accounts = "import_then_deactivate"` deactivates it in CloudShell.
    Disabled(Member),
    /// A username attribute with more than one value (values that fold alike count once): which is the user's
    /// name is not known. `member` carries the first name, `names` every usable one, `values` every value as
    /// sent (trimmed), for the report. Never imported, deactivated or removed under any of them.
    Ambiguous {
        member: Member,
        names: Vec<Username>,
        values: Vec<String>,
    },
    /// No usable username: skipped, with the reason (and the length, for a name too long).
    Unusable {
        dn: String,
        reason: &'static str,
        length: Option<usize>,
    },
}

/// The attributes of a user entry that matter, picked out of it.
#[derive(Default)]
struct Picked {
    /// The username values: `Err(())` when the attribute is there but not UTF-8.
    username: Option<Result<Vec<String>, ()>>,
    account_control: Option<String>,
}

impl UserEntry {
    /// Reads a decoded user entry: the reference reading, which [`UserEntry::from_result`] must agree with
    /// (and the kept directory model's, through [`UserEntry::from_parts`]).
    #[cfg(test)]
    pub fn from_entry(entry: SearchEntry, a: &UserAttributes) -> UserEntry {
        let username = username_values(&entry.attrs, &entry.bin_attrs, a.username);
        let picked = Picked { username, account_control: values(&entry, "userAccountControl").next().cloned() };
        UserEntry::from_picked(entry.dn, picked, a)
    }

    /// Reads a user entry held in parts: its DN, its username values (as [`username_values`] gives them) and
    /// its `userAccountControl` (as [`account_control`] reads it). The same rule as [`UserEntry::from_entry`].
    pub fn from_parts<S: AsRef<str>>(
        dn: String,
        username: Option<Result<&[S], ()>>,
        account_control: Option<i64>,
        a: &UserAttributes,
    ) -> UserEntry {
        let disabled = !a.include_disabled && account_control.is_some_and(|uac| uac & ACCOUNT_DISABLED != 0);
        let raws = match username {
            Some(Ok(raws)) => raws,
            Some(Err(())) => return UserEntry::Unusable { dn, reason: "username is not UTF-8", length: None },
            None => return UserEntry::Unusable { dn, reason: "no username attribute", length: None },
        };
        // Every value is read: the server's order is no choice of name.
        let (mut names, mut refused, mut distinct) = (Vec::<Username>::new(), None, 0usize);
        for raw in raws {
            match usable(raw.as_ref()) {
                Ok(name) if names.contains(&name) => {}
                Ok(name) => {
                    names.push(name);
                    distinct += 1;
                }
                Err(why) => {
                    refused.get_or_insert(why);
                    distinct += 1;
                }
            }
        }
        let Some(first) = names.first().cloned() else {
            let (reason, length) = refused.unwrap_or(("no username attribute", None));
            return UserEntry::Unusable { dn, reason, length };
        };
        let member = Member { username: first, dn: dn.into() };
        if distinct > 1 {
            let values = raws.iter().map(|v| v.as_ref().trim().to_string()).collect();
            return UserEntry::Ambiguous { member, names, values };
        }
        if disabled { UserEntry::Disabled(member) } else { UserEntry::User(member) }
    }

    /// The entry's username exchanged for the copy `names` holds when written alike (an ambiguous entry's list
    /// of names is left as read).
    pub fn share_username(&mut self, names: &SharedNames) {
        if let UserEntry::User(member) | UserEntry::Ambiguous { member, .. } | UserEntry::Disabled(member) = self {
            member.username = names.share(&member.username);
        }
    }

    /// Reads a user entry straight from the server's answer, taking only the attributes that matter (no map
    /// of every attribute per entry: the users search reads a hundred thousand of them). `None` when the
    /// entry is malformed.
    pub fn from_result(entry: ResultEntry, a: &UserAttributes) -> Option<UserEntry> {
        UserEntry::from_tag(entry.0, a)
    }

    fn from_tag(tag: StructureTag, a: &UserAttributes) -> Option<UserEntry> {
        let mut parts = tag.match_id(4)?.expect_constructed()?.into_iter();
        let dn = String::from_utf8(parts.next()?.expect_primitive()?).ok()?;
        let mut picked = Picked::default();
        for partial in parts.next()?.expect_constructed()? {
            let mut partial = partial.expect_constructed()?.into_iter();
            let name = partial.next()?.expect_primitive()?;
            let name = std::str::from_utf8(&name).ok()?;
            let slot = if name.eq_ignore_ascii_case(a.username) {
                None
            } else if name.eq_ignore_ascii_case("userAccountControl") {
                Some(&mut picked.account_control)
            } else {
                continue;
            };
            let (mut all, mut binary) = (Vec::new(), false);
            for value in partial.next()?.expect_constructed()? {
                let value = value.expect_primitive()?;
                // As `decode` sees it: an attribute with any value that is not UTF-8 is binary, whole.
                match String::from_utf8(value) {
                    Ok(text) if !binary => all.push(text),
                    _ => binary = true,
                }
            }
            match slot {
                None if picked.username.is_none() && (binary || !all.is_empty()) => {
                    picked.username = Some(if binary { Err(()) } else { Ok(all) });
                }
                Some(slot) if slot.is_none() && !binary => *slot = all.into_iter().next(),
                _ => {}
            }
        }
        Some(UserEntry::from_picked(dn, picked, a))
    }

    fn from_picked(dn: String, p: Picked, a: &UserAttributes) -> UserEntry {
        let account_control = p.account_control.as_deref().and_then(account_control);
        let username = match &p.username {
            Some(Ok(raws)) => Some(Ok(raws.as_slice())),
            Some(Err(())) => Some(Err(())),
            None => None,
        };
        UserEntry::from_parts(dn, username, account_control, a)
    }
}

/// One username value, or why it cannot be one (and its length, for a name too long).
fn usable(raw: &str) -> Result<Username, (&'static str, Option<usize>)> {
    match (raw.chars().count(), Username::new(raw)) {
        // A newline forges log lines, an ANSI escape rewrites a terminal, a NUL cuts C strings: a username is
        // never any of those.
        (_, Some(u)) if u.as_str().chars().any(char::is_control) => Err(("username holds a control character", None)),
        (len, Some(u)) if len <= MAX_USERNAME_CHARS => Ok(u),
        (len, Some(_)) => Err(("username longer than 256 characters", Some(len))),
        (_, None) => Err(("username is blank", None)),
    }
}

/// Decodes a search result entry; `None` when it is not the shape RFC 4511 gives it.
pub fn decode(entry: ResultEntry) -> Option<SearchEntry> {
    decode_tag(entry.0)
}

fn decode_tag(tag: StructureTag) -> Option<SearchEntry> {
    let mut parts = tag.match_id(4)?.expect_constructed()?.into_iter();
    let dn = String::from_utf8(parts.next()?.expect_primitive()?).ok()?;
    let mut attrs: HashMap<String, Vec<String>> = HashMap::new();
    let mut bin_attrs: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    'attributes: for partial in parts.next()?.expect_constructed()? {
        let mut partial = partial.expect_constructed()?.into_iter();
        let name = String::from_utf8(partial.next()?.expect_primitive()?).ok()?;
        let raw: Vec<Vec<u8>> = partial
            .next()?
            .expect_constructed()?
            .into_iter()
            .map(StructureTag::expect_primitive)
            .collect::<Option<_>>()?;
        // As ldap3 does: an attribute with any value that is not UTF-8 goes whole into `bin_attrs`. Each value
        // is checked once and becomes a `String` in place (a group entry can hold a million).
        let mut text: Vec<String> = Vec::with_capacity(raw.len());
        let mut rest = raw.into_iter();
        while let Some(value) = rest.next() {
            match String::from_utf8(value) {
                Ok(t) => text.push(t),
                Err(e) => {
                    let mut binary: Vec<Vec<u8>> = text.into_iter().map(String::into_bytes).collect();
                    binary.push(e.into_bytes());
                    binary.extend(rest);
                    bin_attrs.insert(name, binary);
                    continue 'attributes;
                }
            }
        }
        attrs.insert(name, text);
    }
    Some(SearchEntry { dn, attrs, bin_attrs })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ldap3::asn1::{PL, TagClass};

    fn octets(bytes: &[u8]) -> StructureTag {
        StructureTag { class: TagClass::Universal, id: 4, payload: PL::P(bytes.to_vec()) }
    }

    fn seq(id: u64, class: TagClass, inner: Vec<StructureTag>) -> StructureTag {
        StructureTag { class, id, payload: PL::C(inner) }
    }

    fn entry(dn: &[u8], attrs: Vec<(&str, Vec<&[u8]>)>) -> StructureTag {
        let attrs = attrs
            .into_iter()
            .map(|(name, values)| {
                seq(
                    16,
                    TagClass::Universal,
                    vec![
                        octets(name.as_bytes()),
                        seq(17, TagClass::Universal, values.into_iter().map(octets).collect()),
                    ],
                )
            })
            .collect();
        seq(4, TagClass::Application, vec![octets(dn), seq(16, TagClass::Universal, attrs)])
    }

    #[test]
    fn decodes_text_and_binary_attributes() {
        let e =
            decode_tag(entry(b"uid=a,dc=x", vec![("uid", vec![b"a"]), ("photo", vec![b"ok", &[0xff, 0xfe]])])).unwrap();
        assert_eq!(e.dn, "uid=a,dc=x");
        assert_eq!(e.attrs["uid"], ["a"]);
        assert_eq!(e.bin_attrs["photo"], [b"ok".to_vec(), vec![0xff, 0xfe]]);
        assert!(!e.attrs.contains_key("photo"));
    }

    #[test]
    fn malformed_entries_are_none_not_a_panic() {
        assert!(decode_tag(entry(&[0xc3, 0x28], vec![])).is_none(), "a DN that is not UTF-8");
        assert!(decode_tag(octets(b"x")).is_none(), "not an entry");
        assert!(decode_tag(seq(4, TagClass::Application, vec![])).is_none(), "no DN");
        assert!(decode_tag(seq(4, TagClass::Application, vec![octets(b"dc=x")])).is_none(), "no attribute list");
        let bad_attr =
            seq(4, TagClass::Application, vec![octets(b"dc=x"), seq(16, TagClass::Universal, vec![octets(b"uid")])]);
        assert!(decode_tag(bad_attr).is_none(), "an attribute that is not a sequence");
    }

    fn search_entry(attrs: &[(&str, &[&str])], binary: &[&str]) -> SearchEntry {
        SearchEntry {
            dn: "uid=x,dc=example".into(),
            attrs: attrs.iter().map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect())).collect(),
            bin_attrs: binary.iter().map(|k| (k.to_string(), vec![vec![0xff]])).collect(),
        }
    }

    const ATTRS: UserAttributes<'static> = UserAttributes { username: "uid", include_disabled: false };

    #[test]
    fn a_user_entry_becomes_a_member_with_its_attributes_matched_case_insensitively() {
        let e = search_entry(&[("UID", &["JPorter"]), ("displayname", &["James Porter"]), ("mail", &["j@x"])], &[]);
        let UserEntry::User(m) = UserEntry::from_entry(e, &ATTRS) else { panic!("not a user") };
        assert_eq!(m.username.as_str(), "JPorter");
        assert_eq!(m.username, Username::new("jporter").unwrap());
        assert_eq!(&*m.dn, "uid=x,dc=example");
    }

    #[test]
    fn entries_without_a_usable_username_say_why() {
        let unusable = |e: SearchEntry| match UserEntry::from_entry(e, &ATTRS) {
            UserEntry::Unusable { reason, length, .. } => (reason, length),
            other => panic!("{other:?}"),
        };
        assert_eq!(unusable(search_entry(&[("cn", &["x"])], &[])), ("no username attribute", None));
        assert_eq!(unusable(search_entry(&[("uid", &["  "])], &[])), ("username is blank", None));
        assert_eq!(unusable(search_entry(&[], &["uid"])), ("username is not UTF-8", None));
        let long = "a".repeat(MAX_USERNAME_CHARS + 1);
        assert_eq!(
            unusable(search_entry(&[("uid", &[long.as_str()])], &[])),
            ("username longer than 256 characters", Some(257))
        );
        for odd in ["evil\nINFO forged line", "\u{1b}[31mred", "nul\0byte", "tab\there"] {
            assert_eq!(
                unusable(search_entry(&[("uid", &[odd])], &[])),
                ("username holds a control character", None),
                "{odd:?}"
            );
        }
        let exactly = "é".repeat(MAX_USERNAME_CHARS);
        assert!(matches!(
            UserEntry::from_entry(search_entry(&[("uid", &[exactly.as_str()])], &[]), &ATTRS),
            UserEntry::User(_)
        ));
    }

    #[test]
    fn reading_straight_from_the_answer_agrees_with_reading_the_decoded_entry() {
        type Attributes<'a> = Vec<(&'a str, Vec<&'a [u8]>)>;
        let cases: Vec<Attributes> = vec![
            vec![("uid", vec![b"JPorter"]), ("displayName", vec![b"James"]), ("mail", vec![b"j@x"])],
            vec![("UID", vec![b"a", b"b"]), ("MAIL", vec![b"m"])],
            vec![("uid", vec![b"  "])],
            vec![("cn", vec![b"no uid"])],
            vec![("uid", vec![&[0xff, 0xfe]])],
            vec![("uid", vec![b"ok", &[0xff]])],
            vec![("uid", vec![])],
            vec![("uid", vec![b"evil\nline"])],
            vec![("uid", vec![b"off"]), ("userAccountControl", vec![b"514"])],
            vec![("uid", vec![b"on"]), ("userAccountControl", vec![b" 512 "]), ("displayName", vec![&[0xc3]])],
        ];
        let long = "x".repeat(MAX_USERNAME_CHARS + 1);
        let mut cases = cases;
        cases.push(vec![("uid", vec![long.as_bytes()])]);
        for attrs in cases {
            let tag = entry(b"uid=x,dc=example", attrs.clone());
            let decoded = UserEntry::from_entry(decode_tag(tag.clone()).unwrap(), &ATTRS);
            let direct = UserEntry::from_tag(tag, &ATTRS).unwrap();
            assert_eq!(direct, decoded, "{attrs:?}");
        }
        assert!(UserEntry::from_tag(octets(b"x"), &ATTRS).is_none(), "not an entry");
    }

    #[test]
    fn a_username_attribute_with_several_names_is_ambiguous_not_its_first_value() {
        let read = |uid: &[&str], extra: &[(&str, &[&str])]| {
            let mut attrs: Vec<(&str, &[&str])> = vec![("uid", uid)];
            attrs.extend_from_slice(extra);
            let decoded = UserEntry::from_entry(search_entry(&attrs, &[]), &ATTRS);
            let tag_attrs = attrs.iter().map(|(k, v)| (*k, v.iter().map(|s| s.as_bytes()).collect())).collect();
            let direct = UserEntry::from_tag(entry(b"uid=x,dc=example", tag_attrs), &ATTRS).unwrap();
            assert_eq!(direct, decoded, "{uid:?}");
            decoded
        };
        let names = |e: &UserEntry| match e {
            UserEntry::Ambiguous { member, names, values } => {
                assert_eq!(member.username, names[0]);
                assert_eq!(&*member.dn, "uid=x,dc=example");
                (names.iter().map(|n| n.as_str().to_string()).collect::<Vec<_>>(), values.clone())
            }
            other => panic!("not ambiguous: {other:?}"),
        };
        assert_eq!(
            names(&read(&["jporter", " james "], &[])),
            (vec!["jporter".into(), "james".into()], vec!["jporter".into(), "james".into()])
        );
        // Values one user would have anyway are one name: case, normalisation, a repeat.
        let one = read(&["JPorter", "jporter", "jos\u{e9}"], &[]);
        assert!(matches!(one, UserEntry::Ambiguous { .. }), "josé is another name");
        assert!(matches!(read(&["JPorter", "jporter"], &[]), UserEntry::User(m) if m.username.as_str() == "JPorter"));
        assert!(matches!(read(&["jos\u{e9}", "jose\u{301}"], &[]), UserEntry::User(_)));
        // A value that could never be a name still makes the entry ambiguous: the usable one is never acted on
        // by name either.
        assert_eq!(
            names(&read(&["alice", "evil\nline"], &[])),
            (vec!["alice".into()], vec!["alice".into(), "evil\nline".into()])
        );
        let refused = read(&["  ", "a\nb"], &[]);
        assert!(matches!(refused, UserEntry::Unusable { reason: "username is blank", .. }), "{refused:?}");
        // Ambiguous before disabled: a disabled account is deactivated by name, which needs one name.
        let disabled = read(&["d1", "d2"], &[("userAccountControl", &["514"])]);
        assert_eq!(names(&disabled).0, ["d1", "d2"]);
    }

    #[test]
    fn disabled_accounts_are_told_apart_unless_included() {
        let disabled = || search_entry(&[("uid", &["d"]), ("userAccountControl", &["514"])], &[]);
        match UserEntry::from_entry(disabled(), &ATTRS) {
            UserEntry::Disabled(m) => assert_eq!((m.username.as_str(), &*m.dn), ("d", "uid=x,dc=example")),
            other => panic!("{other:?}"),
        }
        // A disabled entry whose username could not be used is refused like any other: never imported by name.
        let odd_name = search_entry(&[("uid", &["a\nb"]), ("userAccountControl", &["514"])], &[]);
        assert!(matches!(UserEntry::from_entry(odd_name, &ATTRS), UserEntry::Unusable { .. }));
        let include = UserAttributes { include_disabled: true, ..ATTRS };
        assert!(matches!(UserEntry::from_entry(disabled(), &include), UserEntry::User(_)));
        let enabled = search_entry(&[("uid", &["e"]), ("userAccountControl", &[" 512 "])], &[]);
        assert!(matches!(UserEntry::from_entry(enabled, &ATTRS), UserEntry::User(_)));
        let odd = search_entry(&[("uid", &["o"]), ("userAccountControl", &["lots"])], &[]);
        assert!(matches!(UserEntry::from_entry(odd, &ATTRS), UserEntry::User(_)), "an unreadable flag is not disabled");
    }
}
