//! Active Directory's range retrieval: a multi-valued attribute larger than the server's limit (1,500 values
//! for `member`) comes back as `member;range=0-1499`, and the rest must be asked for (`member;range=1500-*`)
//! until a range ends in `*`. A server answering this way is always handled; ignoring it reads a large group
//! as its first 1,500 members, the classic truncation bug.

use std::future::Future;

use ldap3::SearchEntry;

/// A range sequence that does not add up: the group's member list would be incomplete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("asked for {attr} from value {start} and got the plain attribute")]
    PlainAfterRange { attr: String, start: u32 },
    #[error("two ranges of {attr} in one answer")]
    TwoRanges { attr: String },
    #[error("asked for {attr} from value {start}, got a range from {low}")]
    Skipped { attr: String, start: u32, low: u32 },
    #[error("range {low}-{high} of {attr} runs backwards")]
    Backwards { attr: String, low: u32, high: u32 },
    #[error("asked for more of {attr} and got none")]
    Missing { attr: String },
    #[error("the entry vanished during range retrieval")]
    Vanished,
    #[error("range retrieval of {attr} made no progress at value {start}")]
    NoProgress { attr: String, start: u32 },
    /// Reading the next range failed.
    #[error("{0}")]
    Read(String),
}

/// An attribute's values in one answer, and where the next range starts if the answer is incomplete.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Ranged {
    pub values: Vec<String>,
    pub next: Option<u32>,
}

/// Reads `attr;range=low-high` (or `low-*`): `Some((low, Some(high)))` or `Some((low, None))`.
pub fn parse_range(key: &str, attr: &str) -> Option<(u32, Option<u32>)> {
    let (name, options) = key.split_once(';')?;
    if !name.eq_ignore_ascii_case(attr) {
        return None;
    }
    let range = options.split(';').find_map(|o| {
        let (k, v) = o.split_once('=')?;
        k.eq_ignore_ascii_case("range").then_some(v)
    })?;
    let (low, high) = range.split_once('-')?;
    let low = low.parse().ok()?;
    let high = if high == "*" { None } else { Some(high.parse().ok()?) };
    Some((low, high))
}

/// Whether `entry` holds `attr` in ranges (`member;range=0-1499`): more values may follow.
pub fn is_ranged(entry: &SearchEntry, attr: &str) -> bool {
    entry.attrs.keys().any(|k| parse_range(k, attr).is_some())
}

/// The values of `attr` in `entry`, plain or ranged, taken out of the entry (not copied: a group can hold a
/// million of them). `expect_start` is where a ranged answer must start.
pub fn values_of(entry: &mut SearchEntry, attr: &str, expect_start: Option<u32>) -> Result<Ranged, Error> {
    let mut out = Ranged::default();
    let mut saw_range = false;
    for (key, values) in entry.attrs.iter_mut() {
        if key.eq_ignore_ascii_case(attr) {
            if expect_start.is_some_and(|s| s > 0) {
                return Err(Error::PlainAfterRange { attr: attr.into(), start: expect_start.unwrap_or(0) });
            }
            out.values.append(values);
        } else if let Some((low, high)) = parse_range(key, attr) {
            if saw_range {
                return Err(Error::TwoRanges { attr: attr.into() });
            }
            saw_range = true;
            if let Some(start) = expect_start
                && low != start
            {
                return Err(Error::Skipped { attr: attr.into(), start, low });
            }
            out.values.append(values);
            out.next = match high {
                None => None,
                Some(h) if h >= low => Some(h + 1),
                Some(high) => return Err(Error::Backwards { attr: attr.into(), low, high }),
            };
        }
    }
    if expect_start.is_some_and(|s| s > 0) && !saw_range {
        return Err(Error::Missing { attr: attr.into() });
    }
    Ok(out)
}

/// The attribute to request for values from `start` on: all the rest (`start-*`) or a window.
pub fn request(attr: &str, start: u32, window: Option<u32>) -> String {
    match window {
        Some(w) if w > 0 => format!("{attr};range={start}-{}", start.saturating_add(w - 1)),
        _ => format!("{attr};range={start}-*"),
    }
}

/// Reads the entry at `dn` again asking only for `request` (`member;range=1500-*`): the `fetch` of
/// [`complete`] for the full read and the kept model alike. `None` when the entry is gone.
pub async fn read_window(
    mut ldap: ldap3::Ldap,
    dn: String,
    timeout: std::time::Duration,
    request: String,
) -> Result<Option<SearchEntry>, String> {
    let found = ldap
        .with_timeout(timeout)
        .search(&dn, ldap3::Scope::Base, "(objectClass=*)", vec![request])
        .await
        .map_err(|e| e.to_string())?
        .success()
        .map_err(|e| e.to_string())?;
    Ok(found.0.into_iter().next().and_then(crate::ldap::entry::decode))
}

/// Completes `first` by fetching the following ranges until one ends in `*`. `fetch` reads the entry again
/// asking for the given attribute (`member;range=1500-*`); `None` means the entry is gone.
pub async fn complete<F, Fut>(
    first: Ranged,
    attr: &str,
    window: Option<u32>,
    mut fetch: F,
) -> Result<Vec<String>, Error>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<Option<SearchEntry>, String>>,
{
    let mut values = first.values;
    let mut next = first.next;
    while let Some(start) = next {
        let mut entry = fetch(request(attr, start, window)).await.map_err(Error::Read)?.ok_or(Error::Vanished)?;
        let more = values_of(&mut entry, attr, Some(start))?;
        if more.values.is_empty() && more.next.is_some() {
            return Err(Error::NoProgress { attr: attr.into(), start });
        }
        values.extend(more.values);
        next = more.next;
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn entry(attrs: &[(&str, std::ops::Range<u32>)]) -> SearchEntry {
        SearchEntry {
            dn: "CN=Big,OU=Groups,DC=ad,DC=example,DC=org".into(),
            attrs: attrs
                .iter()
                .map(|(k, r)| (k.to_string(), r.clone().map(|n| format!("CN=user{n},OU=Staff,DC=ad")).collect()))
                .collect::<HashMap<_, _>>(),
            bin_attrs: HashMap::new(),
        }
    }

    #[test]
    fn parses_range_options() {
        assert_eq!(parse_range("member;range=0-1499", "member"), Some((0, Some(1499))));
        assert_eq!(parse_range("Member;Range=1500-*", "member"), Some((1500, None)));
        assert_eq!(parse_range("member", "member"), None);
        assert_eq!(parse_range("memberOf;range=0-1", "member"), None);
        assert_eq!(parse_range("member;range=x-1", "member"), None);
        assert_eq!(request("member", 1500, None), "member;range=1500-*");
        assert_eq!(request("member", 10, Some(10)), "member;range=10-19");
    }

    /// Recorded from an Active Directory: a plain `member` request for a 3,200-member group comes back as
    /// `member;range=0-1499`; then 1500-2999; then 3000-*.
    #[tokio::test]
    async fn follows_ranges_until_the_star() {
        let first = values_of(&mut entry(&[("member;range=0-1499", 0..1500)]), "member", None).unwrap();
        assert_eq!((first.values.len(), first.next), (1500, Some(1500)));
        let answers =
            vec![entry(&[("member;range=1500-2999", 1500..3000)]), entry(&[("member;range=3000-*", 3000..3200)])];
        let mut asked = Vec::new();
        let mut answers = answers.into_iter();
        let all = complete(first, "member", None, |req| {
            asked.push(req);
            let next = answers.next();
            async move { Ok(next) }
        })
        .await
        .unwrap();
        assert_eq!(all.len(), 3200);
        assert_eq!(all[1500], "CN=user1500,OU=Staff,DC=ad");
        assert_eq!(asked, ["member;range=1500-*", "member;range=3000-*"]);
    }

    #[tokio::test]
    async fn a_plain_answer_needs_no_more_requests() {
        let first = values_of(&mut entry(&[("member", 0..20)]), "member", None).unwrap();
        assert_eq!(first.next, None);
        let all = complete(first, "member", None, |_| async { Err("must not be called".to_string()) }).await.unwrap();
        assert_eq!(all.len(), 20);
    }

    #[tokio::test]
    async fn a_broken_range_sequence_is_an_error_not_a_short_list() {
        let first = || values_of(&mut entry(&[("member;range=0-1499", 0..1500)]), "member", None).unwrap();
        // The server skips ahead.
        let err =
            complete(first(), "member", None, |_| async { Ok(Some(entry(&[("member;range=2000-*", 2000..2100)]))) })
                .await
                .unwrap_err();
        assert_eq!(err, Error::Skipped { attr: "member".into(), start: 1500, low: 2000 });
        assert!(err.to_string().contains("from value 1500"), "{err}");
        // The server forgets the range.
        let err =
            complete(first(), "member", None, |_| async { Ok(Some(entry(&[("member", 0..10)]))) }).await.unwrap_err();
        assert_eq!(err, Error::PlainAfterRange { attr: "member".into(), start: 1500 });
        // The group is deleted half-way.
        let err = complete(first(), "member", None, |_| async { Ok(None) }).await.unwrap_err();
        assert_eq!(err, Error::Vanished);
        // No progress.
        let err = complete(first(), "member", None, |_| async { Ok(Some(entry(&[("member;range=1500-1499", 0..0)]))) })
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Backwards { .. } | Error::NoProgress { .. }), "{err}");
    }
}
