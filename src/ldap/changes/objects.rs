//! Active Directory's objects named by `objectGUID`, for the kept model read by DirSync
//! ([`super::kept::Source::DirSync`]): a part's paged subtree search with the configured filter, each entry
//! named by its `objectGUID` (a model built after a DirSync watermark), and the same search narrowed to the
//! objects a DirSync read named (`(&filter(|(objectGUID=…)…))`), so that the server, not this program, says
//! whether a changed object is still a user or a group under the base, and sends it whole. It also says which
//! attributes a DirSync read must ask for so that a change to any of them is reported ([`watched`]): Microsoft
//! documents the attribute list as a filter of what is sent.
//!
//! It owns the searches and the guarded reading of `objectGUID`; it does not interpret the entries.

use std::time::Duration;

use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::{Ldap, LdapError, Scope};

use super::dirsync::Guid;
use super::syncrepl::{ChangeKind, ChangedEntry, EntryUuid, SyncError};
use crate::ldap::entry;
use crate::ldap::error::result_reason;

/// How many GUIDs one narrowed search names (as the full read's search of groups by name: 50 a filter).
pub const GUIDS_PER_FILTER: usize = 50;

/// A part's search: its base (subtree), filter and attributes.
pub type Search<'a> = (&'a str, &'a str, &'a [&'a str]);

/// The attributes a DirSync read asks for, so that a change to any that decides what the full read sees is
/// reported: the part's own (`kept`), `whenCreated` (sent only with an object new since the cookie, which tells
/// a new object from a renamed one), and every attribute the filters test. `None` when a filter tests an
/// attribute it does not name (an extensible match without a type, `(:dn:2.5.13.5:=x)`): then every attribute.
pub fn watched(kept: &[&str], filters: &[&str]) -> Option<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |a: &str| {
        if !out.iter().any(|o| o.eq_ignore_ascii_case(a)) {
            out.push(a.to_string());
        }
    };
    for a in kept.iter().copied().chain(["whenCreated"]) {
        add(a);
    }
    for filter in filters {
        for a in filter_attributes(filter)? {
            add(&a);
        }
    }
    Some(out)
}

/// The attribute types a filter (RFC 4515) tests, each without its options; `None` when an item names none.
pub fn filter_attributes(filter: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let bytes = filter.as_bytes();
    for (i, _) in filter.match_indices('(') {
        match bytes.get(i + 1) {
            Some(b'&' | b'|' | b'!' | b'(') | None => continue,
            Some(_) => {}
        }
        let item = &filter[i + 1..];
        let end = item.find(['=', '~', '<', '>', ':', ')'])?;
        let attribute = item[..end].split(';').next().unwrap_or_default().trim();
        if attribute.is_empty() {
            return None;
        }
        out.push(attribute.to_string());
    }
    Some(out)
}

/// `(&filter(|(objectGUID=\xx…)…))`: the objects of `guids` the filter admits.
pub fn narrowed(filter: &str, guids: &[Guid]) -> String {
    let mut any = String::with_capacity(guids.len() * 62 + 4);
    for g in guids {
        any.push_str("(objectGUID=");
        for b in g.0 {
            any.push_str(&format!("\\{b:02x}"));
        }
        any.push(')');
    }
    format!("(&{filter}(|{any}))")
}

/// The `objectGUID` of an entry, guarded: exactly one value of 16 bytes (ldap3 keeps a value that happens to
/// be UTF-8 as text).
pub fn guid_of(e: &ldap3::SearchEntry) -> Result<Guid, SyncError> {
    match super::dirsync::raw_values(e, "objectGUID").as_slice() {
        [one] => <[u8; 16]>::try_from(one.as_slice())
            .map(Guid)
            .map_err(|_| unusable(&e.dn, &format!("with a {}-byte objectGUID", one.len()))),
        [] => Err(unusable(&e.dn, "without objectGUID")),
        _ => Err(unusable(&e.dn, "with several objectGUID values")),
    }
}

fn unusable(dn: &str, what: &str) -> SyncError {
    SyncError::Unsupported {
        reason: format!(
            "{dn} came {what}: a dirsync or usn read names each object by its objectGUID (the bind account must \
             be allowed to read it)"
        ),
    }
}

/// Reads a part's entries (`search`'s filter, or narrowed to `guids` when given, [`GUIDS_PER_FILTER`] a search),
/// each named by its `objectGUID` and made into what `keep` makes of it as it arrives. Returns how many
/// searches were made.
pub async fn read_each<E>(
    ldap: &mut Ldap,
    search: Search<'_>,
    guids: Option<&[Guid]>,
    (page_size, timeout): (i32, Duration),
    mut keep: impl FnMut(ChangedEntry) -> E,
) -> Result<(Vec<E>, usize), SyncError> {
    let (base, filter, attrs) = search;
    let filters: Vec<String> = match guids {
        None => vec![filter.to_string()],
        Some(guids) => guids.chunks(GUIDS_PER_FILTER).map(|chunk| narrowed(filter, chunk)).collect(),
    };
    let mut asked = attrs.to_vec();
    asked.push("objectGUID");
    let mut out = Vec::new();
    for filter in &filters {
        search_one(ldap, (base, filter, &asked), (page_size, timeout), &mut |e| out.push(keep(e))).await?;
    }
    Ok((out, filters.len()))
}

/// One paged search, each entry handed on as a [`ChangedEntry`] named by its `objectGUID`.
async fn search_one(
    ldap: &mut Ldap,
    search: Search<'_>,
    paging: (i32, Duration),
    each: &mut impl FnMut(ChangedEntry),
) -> Result<(), SyncError> {
    search_with(ldap, "the search by objectGUID", search, paging, Vec::new(), each).await
}

/// [`search_one`] with `controls` sent besides the paging one (Show Deleted, say), its errors saying `what`
/// failed.
pub async fn search_with(
    ldap: &mut Ldap,
    what: &str,
    (base, filter, asked): Search<'_>,
    (page_size, timeout): (i32, Duration),
    controls: Vec<ldap3::controls::RawControl>,
    each: &mut impl FnMut(ChangedEntry),
) -> Result<(), SyncError> {
    let failed = |e: LdapError| SyncError::of_search(e, timeout, what);
    let adapters: Vec<Box<dyn Adapter<_, _>>> =
        vec![Box::new(EntriesOnly::new()), Box::new(PagedResults::new(page_size))];
    let ldap = ldap.with_timeout(timeout);
    if !controls.is_empty() {
        ldap.with_controls(controls);
    }
    let mut stream =
        ldap.streaming_search_with(adapters, base, Scope::Subtree, filter, asked.to_vec()).await.map_err(failed)?;
    loop {
        let Some(item) = super::next_item(&mut stream).await.map_err(failed)? else { break };
        let read = entry::decode(item)
            .ok_or_else(|| SyncError::Ldap { code: None, reason: "the server sent a malformed entry".into() })
            .and_then(|e| guid_of(&e).map(|g| (g, e)));
        match read {
            Ok((guid, mut e)) => {
                e.attrs.retain(|k, _| !k.eq_ignore_ascii_case("objectGUID"));
                e.bin_attrs.retain(|k, _| !k.eq_ignore_ascii_case("objectGUID"));
                let uuid = EntryUuid(guid.0);
                each(ChangedEntry { uuid, dn: e.dn, kind: ChangeKind::Modify, attrs: e.attrs, bin_attrs: e.bin_attrs });
            }
            Err(e) => {
                let _ = stream.finish().await;
                return Err(e);
            }
        }
    }
    stream.finish().await.success().map(|_| ()).map_err(failed)
}

/// Whether any entry is right below `dn` (one search, at most one entry, no attribute): a renamed or moved
/// object with entries below it moved them too, without a change to any of them. One no longer at `dn` counts
/// as holding entries.
pub async fn has_children(ldap: &mut Ldap, dn: &str, timeout: Duration) -> Result<bool, SyncError> {
    let found = ldap
        .with_timeout(timeout)
        .with_search_options(ldap3::SearchOptions::new().sizelimit(1))
        .search(dn, Scope::OneLevel, "(objectClass=*)", vec!["1.1"])
        .await
        .map_err(|e| SyncError::of_search(e, timeout, &format!("the search below {dn}")))?;
    match found.1.rc {
        // sizeLimitExceeded (4) with one entry: there is more than one.
        0 | 4 => Ok(!found.0.is_empty()),
        // noSuchObject: moved again since the DirSync read (or deleted): what is below it now cannot be told here,
        // so it counts as holding entries (a full read follows).
        32 => Ok(true),
        rc => Err(SyncError::Ldap {
            code: Some(rc),
            reason: format!("the search below {dn}: {}", result_reason(rc, &found.1.text)),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_attributes_a_filter_tests_are_read_from_every_item() {
        let f = "(&(objectCategory=person)(objectClass=user)(!(userAccountControl:1.2.840.113556.1.4.803:=2)))";
        assert_eq!(filter_attributes(f).unwrap(), ["objectCategory", "objectClass", "userAccountControl"]);
        assert_eq!(
            filter_attributes("(|(cn>=a)(sn<=b)(mail~=x)(uid=*)(cn;lang-en=y))").unwrap(),
            ["cn", "sn", "mail", "uid", "cn"]
        );
        assert_eq!(filter_attributes("(department=R\\28D\\29)").unwrap(), ["department"], "escaped parentheses");
        assert_eq!(filter_attributes("(:dn:2.5.13.5:=x)"), None, "an extensible match without a type");
    }

    #[test]
    fn a_dirsync_read_watches_the_kept_attributes_when_created_and_the_filters() {
        let w = watched(&["sAMAccountName", "userAccountControl"], &["(&(objectClass=user)(sAMAccountName=*))"]);
        assert_eq!(w.unwrap(), ["sAMAccountName", "userAccountControl", "whenCreated", "objectClass"]);
        assert_eq!(watched(&["cn"], &["(:caseExactMatch:=x)"]), None);
    }

    #[test]
    fn a_narrowed_filter_names_each_guid_byte_by_byte() {
        let g = Guid([0xab; 16]);
        let f = narrowed("(objectClass=user)", &[g, Guid([0; 16])]);
        assert!(f.starts_with("(&(objectClass=user)(|(objectGUID=\\ab\\ab"), "{f}");
        assert_eq!(f.matches("(objectGUID=").count(), 2);
        assert!(f.ends_with("\\00\\00)))"), "{f}");
    }

    #[test]
    fn an_objects_guid_is_exactly_sixteen_bytes_binary_or_text() {
        let entry = |text: &[(&str, &str)], bin: &[(&str, Vec<u8>)]| ldap3::SearchEntry {
            dn: "CN=a,DC=x".into(),
            attrs: text.iter().map(|(k, v)| (k.to_string(), vec![v.to_string()])).collect(),
            bin_attrs: bin.iter().map(|(k, v)| (k.to_string(), vec![v.clone()])).collect(),
        };
        assert_eq!(guid_of(&entry(&[], &[("objectGUID", vec![7; 16])])).unwrap(), Guid([7; 16]));
        assert_eq!(guid_of(&entry(&[("objectguid", "0123456789abcdef")], &[])).unwrap().0, *b"0123456789abcdef");
        let short = guid_of(&entry(&[], &[("objectGUID", vec![7; 15])])).unwrap_err().to_string();
        assert!(short.contains("CN=a,DC=x came with a 15-byte objectGUID"), "{short}");
        assert!(guid_of(&entry(&[], &[])).unwrap_err().to_string().contains("without objectGUID"));
    }
}
