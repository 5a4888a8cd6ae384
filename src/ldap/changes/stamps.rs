//! Reading what changed by `modifyTimestamp` (`ldap.change_detection = "modify_timestamp"`), for a directory
//! without content sync: a paged subtree search of a part's filter ANDed with `(modifyTimestamp>=T)`, where T
//! is the latest `modifyTimestamp` an earlier read of the part saw, less a margin; a read without T is the
//! whole part. Each entry is named by its `entryUUID`, as content sync names it, so that the kept model
//! applies both alike (a changed entry replaces the kept one whole). It owns the search, the guarded reading
//! of the two operational attributes and the watermark; it does not interpret the entries.
//!
//! What it cannot see, so that only a full read learns it (the caller counts no departure from these reads):
//! - an entry deleted, moved out of the base, or no longer matching the filter: the search no longer finds it,
//!   and nothing says it went;
//! - an entry written on another server and replicated here later than the margin: replication keeps the
//!   time of the original write, which may be older than T.
//!
//! The watermark is the server's clock (its own timestamps), never this host's, so that the two clocks need
//! not agree: the caller keeps one for both parts, the latest timestamp either sent less the read's own length
//! (`kept::Kept::mark_read`), so that a write made while the searches ran is read next time whatever the margin.
//! Its cost: after a bulk change (every entry rewritten by a script), each read sends the entries stamped within
//! the margin of it again, until a later write moves the watermark on.
//!
//! What else it cannot see: an entry whose DN changes because an entry above it was renamed or moved (a subtree
//! moved into the base, say) keeps its own timestamp; only the next full read finds it there. One exception guards against a server clock set wrong once: a timestamp later than this host's
//! clock plus the margin does not move the watermark (it would hide every write after the clock is put
//! right); such an entry is read again each run instead. Every timestamp is read whole-second (slapd writes
//! `YYYYMMDDHHMMSSZ`): writes in the same second as T are read again, which the margin covers anyway.

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::{Ldap, LdapError, Scope};

use super::syncrepl::{ChangeKind, Changed, ChangedEntry, EntryUuid, Refresh, SyncError, SyncRead};
use crate::ldap::entry::{self, attr_values};

/// A part's search for the entries changed since `since` (the whole part without it): the filter, and the
/// attributes asked for (the caller's, `entryUUID` and `modifyTimestamp`).
pub fn search<'a>(
    filter: &str,
    attrs: &[&'a str],
    since: Option<DateTime<Utc>>,
    margin: Duration,
) -> (String, Vec<&'a str>) {
    let filter = match since {
        None => filter.to_string(),
        Some(t) => {
            let from = t - chrono::Duration::from_std(margin).unwrap_or(chrono::Duration::MAX);
            format!("(&{filter}(modifyTimestamp>={}))", from.format("%Y%m%d%H%M%SZ"))
        }
    };
    let mut asked = attrs.to_vec();
    asked.extend(["entryUUID", "modifyTimestamp"]);
    (filter, asked)
}

/// A GeneralizedTime as directories write `modifyTimestamp`: `YYYYMMDDHHMMSS`, an optional fraction, `Z`.
/// Anything else (an offset, a missing part) is `None`.
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    let (seconds, rest) = (text.get(..14)?, text.get(14..)?);
    let fraction = rest.strip_suffix('Z')?;
    let fraction_ok = fraction.is_empty()
        || fraction.strip_prefix(['.', ',']).is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()));
    if !fraction_ok || !seconds.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    NaiveDateTime::parse_from_str(seconds, "%Y%m%d%H%M%S").ok().map(|t| t.and_utc())
}

/// One read of a part: the entries it sent, in their kept form, and the latest timestamp that may be kept as
/// the next read's watermark.
pub struct StampRead<E> {
    /// The entries, as a content-sync read gives them: a read without a watermark is the whole part (every
    /// kept entry it does not send is gone); one with a watermark names nothing gone.
    pub read: SyncRead<E>,
    /// The latest `modifyTimestamp` sent (none when nothing was), leaving out any later than this host's clock
    /// plus the margin.
    pub latest: Option<DateTime<Utc>>,
}

/// Why an entry of the answer cannot be used.
fn unusable(dn: &str, what: &str) -> SyncError {
    SyncError::Unsupported {
        reason: format!(
            "{dn} came {what}: a modify_timestamp read names each entry by its entryUUID and reads what changed by \
             its modifyTimestamp (OpenLDAP keeps both; the bind account must be allowed to read them)"
        ),
    }
}

/// Reads one entry of the answer: its UUID, its timestamp, and the entry for `keep`.
fn changed_entry(mut e: ldap3::SearchEntry) -> Result<(ChangedEntry, DateTime<Utc>), SyncError> {
    let uuid = attr_values(&e.attrs, "entryUUID").next().map(|v| EntryUuid::parse(v));
    let uuid = match uuid {
        None => return Err(unusable(&e.dn, "without entryUUID")),
        Some(None) => return Err(unusable(&e.dn, "with an entryUUID that is not a UUID")),
        Some(Some(u)) => u,
    };
    let stamp = attr_values(&e.attrs, "modifyTimestamp").next().map(|v| parse_time(v));
    let stamp = match stamp {
        None => return Err(unusable(&e.dn, "without modifyTimestamp")),
        Some(None) => return Err(unusable(&e.dn, "with a modifyTimestamp that is not a GeneralizedTime")),
        Some(Some(t)) => t,
    };
    e.attrs.retain(|k, _| !k.eq_ignore_ascii_case("entryUUID") && !k.eq_ignore_ascii_case("modifyTimestamp"));
    Ok((ChangedEntry { uuid, dn: e.dn, kind: ChangeKind::Modify, attrs: e.attrs, bin_attrs: e.bin_attrs }, stamp))
}

/// The search's parameters besides the part's filter and attributes.
#[derive(Clone, Copy, Debug)]
pub struct Paging {
    pub page_size: i32,
    pub timeout: Duration,
    pub margin: Duration,
}

/// Reads the entries of a part changed since `since` (every entry without it), each made into what `keep`
/// makes of it as it arrives.
pub async fn read_each<E: Changed>(
    ldap: &mut Ldap,
    (base, filter, attrs): (&str, &str, &[&str]),
    since: Option<DateTime<Utc>>,
    paging: Paging,
    mut keep: impl FnMut(ChangedEntry) -> E,
) -> Result<StampRead<E>, SyncError> {
    let (filter, asked) = search(filter, attrs, since, paging.margin);
    let failed = |e: LdapError| SyncError::of_search(e, paging.timeout, "the modifyTimestamp search");
    let adapters: Vec<Box<dyn Adapter<_, _>>> =
        vec![Box::new(EntriesOnly::new()), Box::new(PagedResults::new(paging.page_size))];
    let mut stream = ldap
        .with_timeout(paging.timeout)
        .streaming_search_with(adapters, base, Scope::Subtree, &filter, asked)
        .await
        .map_err(failed)?;
    let ceiling = Utc::now() + chrono::Duration::from_std(paging.margin).unwrap_or(chrono::Duration::zero());
    let (mut changed, mut latest) = (Vec::new(), None);
    loop {
        let Some(item) = super::next_item(&mut stream).await.map_err(failed)? else { break };
        let read = entry::decode(item)
            .ok_or_else(|| SyncError::Ldap { code: None, reason: "the server sent a malformed entry".into() })
            .and_then(changed_entry);
        match read {
            Ok((e, stamp)) => {
                if stamp <= ceiling && latest.is_none_or(|l| stamp > l) {
                    latest = Some(stamp);
                }
                changed.push(keep(e));
            }
            Err(e) => {
                let _ = stream.finish().await;
                return Err(e);
            }
        }
    }
    stream.finish().await.success().map_err(failed)?;
    let refresh = match since {
        None => Refresh::Present(Default::default()),
        Some(_) => Refresh::Deletes,
    };
    Ok(StampRead { read: SyncRead { cookie: None, changed, deleted: Vec::new(), refresh }, latest })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        parse_time(text).unwrap()
    }

    #[test]
    fn generalized_times_are_read_to_the_second_and_anything_else_is_refused() {
        assert_eq!(at("20261202163512Z").to_rfc3339(), "2026-12-02T16:35:12+00:00");
        assert_eq!(at("20261202163512.0Z"), at("20261202163512Z"), "Active Directory's form");
        assert_eq!(at("20261202163512.123456Z"), at("20261202163512Z"), "a fraction is within the second");
        for bad in [
            "",
            "2026120216351Z",
            "20261202163512",
            "20261202163512+0100",
            "20261302163512Z",
            "2026120216351xZ",
            "20261202163512.Z",
        ] {
            assert_eq!(parse_time(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_read_from_a_watermark_asks_from_the_margin_before_it_and_a_first_read_for_everything() {
        let attrs = ["uid", "userAccountControl"];
        let (filter, asked) = search("(objectClass=person)", &attrs, None, Duration::from_secs(300));
        assert_eq!(filter, "(objectClass=person)");
        assert_eq!(asked, ["uid", "userAccountControl", "entryUUID", "modifyTimestamp"]);
        let since = Some(at("20261202000200Z"));
        let (filter, _) = search("(objectClass=person)", &attrs, since, Duration::from_secs(300));
        assert_eq!(filter, "(&(objectClass=person)(modifyTimestamp>=20261201235700Z))");
        let (filter, _) = search("(cn=*)", &attrs, since, Duration::from_secs(1));
        assert_eq!(filter, "(&(cn=*)(modifyTimestamp>=20261202000159Z))");
    }

    #[test]
    fn an_entry_without_its_uuid_or_its_timestamp_is_refused_and_names_what_is_missing() {
        let entry = |attrs: &[(&str, &str)]| ldap3::SearchEntry {
            dn: "uid=a,dc=x".into(),
            attrs: attrs.iter().map(|(k, v)| (k.to_string(), vec![v.to_string()])).collect(),
            bin_attrs: Default::default(),
        };
        let uuid = ("entryUUID", "2f1c7a2e-8d3a-1041-9c8e-4b1d1e0a7c11");
        let (e, stamp) = changed_entry(entry(&[uuid, ("modifyTimestamp", "20261202000200Z"), ("uid", "a")])).unwrap();
        assert_eq!(e.uuid.to_string(), uuid.1);
        assert_eq!(stamp, at("20261202000200Z"));
        assert_eq!(e.attrs.keys().collect::<Vec<_>>(), ["uid"], "the two operational attributes are not kept");
        let missing = changed_entry(entry(&[("modifyTimestamp", "20261202000200Z")])).unwrap_err().to_string();
        assert!(missing.contains("uid=a,dc=x came without entryUUID"), "{missing}");
        let missing = changed_entry(entry(&[uuid])).unwrap_err().to_string();
        assert!(missing.contains("without modifyTimestamp") && missing.contains("allowed to read"), "{missing}");
        let bad = changed_entry(entry(&[uuid, ("modifyTimestamp", "yesterday")])).unwrap_err().to_string();
        assert!(bad.contains("not a GeneralizedTime"), "{bad}");
    }
}
