//! Search entries decoded without panicking, and turned into members. `ldap3::SearchEntry::construct`
//! panics on a malformed entry (and on a DN that is not UTF-8); a directory's bad answer must become an
//! error, never a crash. An entry that cannot be a member says why, for the `user skipped` event.

use std::collections::HashMap;

use ldap3::asn1::StructureTag;
use ldap3::{ResultEntry, SearchEntry};

use super::Member;
use crate::username::Username;

/// Usernames longer than this are refused (Active Directory's own limit is 20; CloudShell stores names, not
/// essays).
pub const MAX_USERNAME_CHARS: usize = 256;

/// `userAccountControl`'s ACCOUNTDISABLE bit.
const ACCOUNT_DISABLED: i64 = 0x2;

/// Values of an attribute, matched case-insensitively (servers may answer `memberof` for `memberOf`).
pub fn values<'e>(entry: &'e SearchEntry, attr: &str) -> impl Iterator<Item = &'e String> {
    entry.attrs.iter().filter(move |(k, _)| k.eq_ignore_ascii_case(attr)).flat_map(|(_, v)| v.iter())
}

fn has_binary(entry: &SearchEntry, attr: &str) -> bool {
    entry.bin_attrs.keys().any(|k| k.eq_ignore_ascii_case(attr))
}

/// Which attributes make a user entry a member.
pub struct UserAttributes<'a> {
    pub username: &'a str,
    pub display_name: &'a str,
    pub email: &'a str,
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
    /// No usable username: skipped, with the reason (and the length, for a name too long).
    Unusable {
        dn: String,
        reason: &'static str,
        length: Option<usize>,
    },
}

impl UserEntry {
    /// Reads a user entry.
    pub fn from_entry(entry: SearchEntry, a: &UserAttributes) -> UserEntry {
        let account_control = values(&entry, "userAccountControl").next().and_then(|v| v.trim().parse::<i64>().ok());
        let disabled = !a.include_disabled && account_control.is_some_and(|uac| uac & ACCOUNT_DISABLED != 0);
        let raw = values(&entry, a.username).next();
        let username = match raw.map(|v| (v.chars().count(), Username::new(v))) {
            // A newline forges log lines, an ANSI escape rewrites a terminal, a NUL cuts C strings: a
            // username is never any of those.
            Some((_, Some(u))) if u.as_str().chars().any(char::is_control) => {
                return UserEntry::Unusable {
                    dn: entry.dn,
                    reason: "username holds a control character",
                    length: None,
                };
            }
            Some((len, Some(u))) if len <= MAX_USERNAME_CHARS => u,
            Some((len, Some(_))) => {
                return UserEntry::Unusable {
                    dn: entry.dn,
                    reason: "username longer than 256 characters",
                    length: Some(len),
                };
            }
            _ => {
                let reason = if has_binary(&entry, a.username) {
                    "username is not UTF-8"
                } else if raw.is_some() {
                    "username is blank"
                } else {
                    "no username attribute"
                };
                return UserEntry::Unusable { dn: entry.dn, reason, length: None };
            }
        };
        let display_name = values(&entry, a.display_name).next().cloned();
        let email = values(&entry, a.email).next().cloned();
        let member = Member { username, display_name, email, dn: entry.dn };
        if disabled { UserEntry::Disabled(member) } else { UserEntry::User(member) }
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
    for partial in parts.next()?.expect_constructed()? {
        let mut partial = partial.expect_constructed()?.into_iter();
        let name = String::from_utf8(partial.next()?.expect_primitive()?).ok()?;
        let raw: Vec<Vec<u8>> = partial
            .next()?
            .expect_constructed()?
            .into_iter()
            .map(StructureTag::expect_primitive)
            .collect::<Option<_>>()?;
        // As ldap3 does: an attribute with any value that is not UTF-8 goes whole into `bin_attrs`.
        if raw.iter().all(|v| std::str::from_utf8(v).is_ok()) {
            let values = raw.into_iter().map(|v| String::from_utf8(v).expect("checked above")).collect();
            attrs.insert(name, values);
        } else {
            bin_attrs.insert(name, raw);
        }
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

    const ATTRS: UserAttributes<'static> =
        UserAttributes { username: "uid", display_name: "displayName", email: "mail", include_disabled: false };

    #[test]
    fn a_user_entry_becomes_a_member_with_its_attributes_matched_case_insensitively() {
        let e = search_entry(&[("UID", &["JPorter"]), ("displayname", &["James Porter"]), ("mail", &["j@x"])], &[]);
        let UserEntry::User(m) = UserEntry::from_entry(e, &ATTRS) else { panic!("not a user") };
        assert_eq!(m.username.as_str(), "JPorter");
        assert_eq!(m.username, Username::new("jporter").unwrap());
        assert_eq!((m.display_name.as_deref(), m.email.as_deref()), (Some("James Porter"), Some("j@x")));
        assert_eq!(m.dn, "uid=x,dc=example");
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
    fn disabled_accounts_are_told_apart_unless_included() {
        let disabled = || search_entry(&[("uid", &["d"]), ("userAccountControl", &["514"])], &[]);
        match UserEntry::from_entry(disabled(), &ATTRS) {
            UserEntry::Disabled(m) => assert_eq!((m.username.as_str(), m.dn.as_str()), ("d", "uid=x,dc=example")),
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
