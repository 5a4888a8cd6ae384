//! Search entries decoded without panicking. `ldap3::SearchEntry::construct` panics on a malformed entry
//! (and on a DN that is not UTF-8); a directory's bad answer must become an error, never a crash.

use std::collections::HashMap;

use ldap3::asn1::StructureTag;
use ldap3::{ResultEntry, SearchEntry};

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
}
