//! Active Directory's update sequence numbers (`ldap.change_detection = "usn"`): what changed in a naming
//! context since a watermark, read by ordinary paged searches, for a bind account without the "Replicating
//! Directory Changes" right DirSync needs. It owns the watermark (the domain controller's
//! `highestCommittedUSN`, with the server and the `invocationId` of its database), the two searches (objects
//! whose `uSNChanged` is above the watermark; tombstones above it, with Show Deleted), and the check that the
//! bind account may see tombstones at all. It does not interpret what changed (the kept directory model does).
//!
//! A domain controller numbers its own writes, and those replicated to it, in one sequence; another domain
//! controller, or the same one restored from a backup (a new `invocationId`), numbers differently, so a watermark
//! serves only the database it came from ([`Error::ServerChanged`]). The watermark is read before the searches:
//! a write made while they run is read again next time, never missed.
//!
//! What Samba 4.17 does (observed against a real Samba AD DC, `tests/ad_changes.rs`):
//! - Any bound account reads `highestCommittedUSN` and `dsServiceName` from the root DSE, and `invocationId`
//!   from that NTDS Settings object.
//! - A write moves the object's `uSNChanged` to the next number; a member added or removed moves the group's. A
//!   member deleted does not move the groups that held it, and an OU renamed does not move the entries below
//!   it: whoever applies the changes looks for those.
//! - A subtree search of the domain also returns a continuation reference to `CN=Configuration`: skipped.
//! - Tombstones come only with Show Deleted (1.2.840.113556.1.4.417), under `CN=Deleted Objects` with the same
//!   `objectGUID`, `isDeleted: TRUE`, their `uSNChanged` the deletion's. An account that may not read that
//!   container gets the container's DN alone (no attribute) and no tombstone: an empty answer, not an error.
//!   Hence [`deleted_objects_visible`], checked at every read: without it a deletion would read as nothing.

use std::time::Duration;

use ldap3::controls::RawControl;
use ldap3::{Ldap, LdapError, Scope};

use super::dirsync::Guid;
use super::objects;
use super::syncrepl::SyncError;
use crate::ldap::entry;
use crate::ldap::error::result_reason;

/// The Show Deleted control: tombstones are returned too.
pub const SHOW_DELETED_OID: &str = "1.2.840.113556.1.4.417";

/// The well-known GUID of a domain's `CN=Deleted Objects` container.
const DELETED_OBJECTS_WKGUID: &str = "18e2ea80684f11d2b9aa00c04f79f805";

/// How many DNs one search by `distinguishedName` names.
const DNS_PER_FILTER: usize = 50;

/// Object classes whose entries hold others (a rename or move of one changes the DNs below it).
const CONTAINERS: [&str; 3] = ["organizationalunit", "container", "builtindomain"];

/// Where the next read starts, and whose numbering it is.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Watermark {
    /// The domain controller's `dsServiceName` (its NTDS Settings object).
    pub server: String,
    /// The `invocationId` of its database: a new one after a restore, whose numbers may repeat.
    pub invocation: [u8; 16],
    /// Its `highestCommittedUSN` when the read began: the next read asks for what is above it.
    pub usn: u64,
}

/// An object a read found changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changed {
    pub guid: Guid,
    /// Its DN now.
    pub dn: String,
    /// Whether it is an organizational unit or a container (entries below it change DN with it).
    pub container: bool,
    /// Its `memberOf` values: the groups of this domain that hold it now.
    pub member_of: Vec<String>,
    /// `memberOf` came in ranges (an object in more than 1,500 groups): `member_of` is not all of them.
    pub member_of_ranged: bool,
}

/// What one read said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Changes {
    /// Where the next read starts.
    pub watermark: Watermark,
    /// Objects changed (not deleted) since the last watermark, each once.
    pub changed: Vec<Changed>,
    /// Objects deleted since (tombstones), by `objectGUID`, each once; possibly objects never seen.
    pub deleted: Vec<Guid>,
    /// Searches made.
    pub searches: usize,
}

/// Why a usn read cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The account cannot see tombstones: a deletion would read as no change.
    #[error(
        "the bind account cannot read CN=Deleted Objects in {naming_context}, so a usn read could not tell who was \
         deleted; grant it List Contents and Read Property there (dsacls \"CN=Deleted Objects,{naming_context}\" \
         /takeownership, then dsacls \"CN=Deleted Objects,{naming_context}\" /G DOMAIN\\account:LCRP), or grant \
         it \"Replicating Directory Changes\" for dirsync, or read the directory in full"
    )]
    NoDeletedObjects { naming_context: String },
    /// The server does not number its writes as Active Directory does.
    #[error("the directory does not support usn reads: {reason}")]
    Unsupported { reason: String },
    /// Another domain controller, or the same one restored: its numbers are not those of the watermark.
    #[error(
        "the update sequence numbers of the last read were those of {was}; the directory now answers as {now}: a \
         full read is due"
    )]
    ServerChanged { was: String, now: String },
}

/// The watermark as of now: the root DSE's `highestCommittedUSN` and `dsServiceName`, and that object's
/// `invocationId` (two searches).
pub async fn watermark(ldap: &mut Ldap, timeout: Duration) -> Result<Watermark, SyncError> {
    let root = base_entry(ldap, "", &["highestCommittedUSN", "dsServiceName"], None, timeout).await?;
    let unsupported = |reason: String| SyncError::from(Error::Unsupported { reason });
    let root = root.ok_or_else(|| unsupported("the root DSE could not be read".into()))?;
    let one = |name: &str| entry::attr_values(&root.attrs, name).next().cloned();
    let usn = one("highestCommittedUSN")
        .ok_or_else(|| unsupported("the root DSE has no highestCommittedUSN".into()))?
        .parse::<u64>()
        .map_err(|_| unsupported("the root DSE's highestCommittedUSN is not a number".into()))?;
    let server = one("dsServiceName").ok_or_else(|| unsupported("the root DSE has no dsServiceName".into()))?;
    let settings = base_entry(ldap, &server, &["invocationId"], None, timeout).await?;
    let values = settings.as_ref().map(|e| super::dirsync::raw_values(e, "invocationId")).unwrap_or_default();
    let invocation = match values.as_slice() {
        [one] => <[u8; 16]>::try_from(one.as_slice()).ok(),
        _ => None,
    };
    let invocation = invocation.ok_or_else(|| unsupported(format!("{server} has no readable 16-byte invocationId")))?;
    Ok(Watermark { server, invocation, usn })
}

/// Whether the bind account may read `CN=Deleted Objects` of `naming_context` (found by its well-known GUID,
/// with Show Deleted): the container's `objectGUID` when it comes with it. An account that may not gets the
/// container without attributes (Samba), or nothing (Active Directory).
pub async fn deleted_objects_visible(
    ldap: &mut Ldap,
    naming_context: &str,
    timeout: Duration,
) -> Result<Option<Guid>, SyncError> {
    let base = format!("<WKGUID={DELETED_OBJECTS_WKGUID},{naming_context}>");
    let found = base_entry(ldap, &base, &["objectGUID"], Some(show_deleted()), timeout).await?;
    Ok(found.and_then(|e| objects::guid_of(&e).ok()))
}

/// What changed in `naming_context` since `since`: the watermark as of now (refused when it is another
/// server's or went back), then, when it moved, the objects changed and the tombstones above `since`.
pub async fn read(
    ldap: &mut Ldap,
    naming_context: &str,
    since: &Watermark,
    paging: (i32, Duration),
) -> Result<Changes, SyncError> {
    let timeout = paging.1;
    let now = watermark(ldap, timeout).await?;
    let mut searches = 2;
    if now.server != since.server || now.invocation != since.invocation || now.usn < since.usn {
        let name = |w: &Watermark| format!("{} (invocationId {}, USN {})", w.server, Guid(w.invocation), w.usn);
        return Err(Error::ServerChanged { was: name(since), now: name(&now) }.into());
    }
    let Some(container) = deleted_objects_visible(ldap, naming_context, timeout).await? else {
        return Err(Error::NoDeletedObjects { naming_context: naming_context.to_string() }.into());
    };
    searches += 1;
    let mut out = Changes { watermark: now, changed: Vec::new(), deleted: Vec::new(), searches };
    if out.watermark.usn == since.usn {
        return Ok(out);
    }
    let above = format!("(uSNChanged>={})", since.usn + 1);
    let mut changed = Vec::new();
    let attrs = ["objectGUID", "objectClass", "memberOf"];
    let what = format!("the search of {naming_context} for {above}");
    objects::search_with(ldap, &what, (naming_context, &above, &attrs), paging, Vec::new(), &mut |e| {
        let classes = entry::attr_values(&e.attrs, "objectClass");
        let container = classes.into_iter().any(|c| CONTAINERS.iter().any(|k| c.eq_ignore_ascii_case(k)));
        let member_of = entry::attr_values(&e.attrs, "memberOf").cloned().collect();
        let member_of_ranged = e.attrs.keys().any(|k| k.to_ascii_lowercase().starts_with("memberof;range="));
        changed.push(Changed { guid: Guid(e.uuid.0), dn: e.dn, container, member_of, member_of_ranged });
    })
    .await?;
    let tombstones = format!("(&(isDeleted=TRUE){above})");
    let mut deleted = Vec::new();
    let what = format!("the search of {naming_context} for tombstones {above}");
    objects::search_with(
        ldap,
        &what,
        (naming_context, &tombstones, &["objectGUID"]),
        paging,
        vec![show_deleted()],
        &mut |e| {
            // The container itself is marked deleted too.
            if Guid(e.uuid.0) != container {
                deleted.push(Guid(e.uuid.0));
            }
        },
    )
    .await?;
    out.searches += 2;
    deleted.sort_unstable();
    deleted.dedup();
    // An object sent twice (changed while the search ran) once, as it was sent last; one deleted since it was
    // sent, as deleted.
    let mut seen = std::collections::HashSet::new();
    changed.reverse();
    changed.retain(|c| deleted.binary_search(&c.guid).is_err() && seen.insert(c.guid));
    changed.reverse();
    out.changed = changed;
    out.deleted = deleted;
    Ok(out)
}

/// The organizational units and containers of `naming_context`, by `objectGUID`, each with its DN as the
/// server writes it (one paged search).
pub async fn containers(
    ldap: &mut Ldap,
    naming_context: &str,
    paging: (i32, Duration),
) -> Result<Vec<(Guid, Box<str>)>, SyncError> {
    let filter: String = CONTAINERS.iter().map(|c| format!("(objectClass={c})")).collect();
    let filter = format!("(|{filter})");
    let what = format!("the search of {naming_context} for its containers");
    let mut out = Vec::new();
    objects::search_with(ldap, &what, (naming_context, &filter, &["objectGUID"]), paging, Vec::new(), &mut |e| {
        out.push((Guid(e.uuid.0), e.dn.into()));
    })
    .await?;
    Ok(out)
}

/// The entries under `base` whose DN is one of `dns`, by `distinguishedName` ([`DNS_PER_FILTER`] a search),
/// each with its `objectGUID`. Returns them and the searches made.
pub async fn by_dn(
    ldap: &mut Ldap,
    base: &str,
    dns: &[String],
    paging: (i32, Duration),
) -> Result<(Vec<(Guid, String)>, usize), SyncError> {
    let mut out = Vec::new();
    let chunks: Vec<&[String]> = dns.chunks(DNS_PER_FILTER).collect();
    for chunk in &chunks {
        let any: String = chunk.iter().map(|dn| format!("(distinguishedName={})", ldap3::ldap_escape(dn))).collect();
        let filter = format!("(|{any})");
        let what = format!("the search of {base} for the entries above kept ones");
        objects::search_with(ldap, &what, (base, &filter, &["objectGUID"]), paging, Vec::new(), &mut |e| {
            out.push((Guid(e.uuid.0), e.dn))
        })
        .await?;
    }
    Ok((out, chunks.len()))
}

fn show_deleted() -> RawControl {
    RawControl { ctype: SHOW_DELETED_OID.to_string(), crit: true, val: None }
}

/// One base search of `dn`: its entry, `None` when there is none (noSuchObject included).
async fn base_entry(
    ldap: &mut Ldap,
    dn: &str,
    attrs: &[&str],
    control: Option<RawControl>,
    timeout: Duration,
) -> Result<Option<ldap3::SearchEntry>, SyncError> {
    let what = if dn.is_empty() { "the root DSE".to_string() } else { dn.to_string() };
    let failed = |e: LdapError| SyncError::of_search(e, timeout, &format!("reading {what}"));
    let ldap = ldap.with_timeout(timeout);
    if let Some(control) = control {
        ldap.with_controls(vec![control]);
    }
    let ldap3::SearchResult(entries, result) =
        ldap.search(dn, Scope::Base, "(objectClass=*)", attrs.to_vec()).await.map_err(failed)?;
    match result.rc {
        0 => Ok(entries.into_iter().filter_map(entry::decode).next()),
        32 => Ok(None),
        rc => Err(SyncError::Ldap {
            code: Some(rc),
            reason: format!("reading {what}: {}", result_reason(rc, &result.text)),
        }),
    }
}
