//! `check`'s extra look at the directory, for configurations that would import nobody: whether `ldap.base_dn`
//! exists (a base-scope read of it), and which attributes a few entries matching `ldap.user_filter` carry (one
//! search for at most [`SAMPLE`] entries, every user attribute), so that a wrong `ldap.username_attribute` is
//! named with the attribute that was probably meant. A sync never makes these reads.

use std::collections::BTreeMap;

use ldap3::{LdapError, Scope, SearchOptions};

use super::changes::syncrepl;
use super::entry;
use super::error::rc::{NO_SUCH_OBJECT, REFERRAL, SIZE_LIMIT_EXCEEDED};
use super::error::{Cause, result_reason};
use super::{Connection, Error};

/// How many user entries the sample reads.
pub const SAMPLE: i32 = 5;

/// The attributes that usually hold an account name, in the order they are suggested.
const USERNAME_ATTRIBUTES: [&str; 4] = ["uid", "sAMAccountName", "userPrincipalName", "cn"];

/// The operational attributes `modify_timestamp` change reads need, asked for besides the user attributes.
const STAMPS: [&str; 2] = ["entryUUID", "modifyTimestamp"];

/// What the probe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// The URL of the server that answered.
    pub served_by: String,
    /// `None` when `ldap.base_dn` exists (or could not be told: only noSuchObject and a referral count as
    /// missing); else why not, to follow `ldap.base_dn "..."` ("does not exist (noSuchObject); ...").
    pub base_dn_missing: Option<String>,
    /// User entries sampled (at most [`SAMPLE`]).
    pub sampled: usize,
    /// Of those, how many carry `ldap.username_attribute`.
    pub with_username: usize,
    /// Of those, how many carry `entryUUID` and `modifyTimestamp` (what `modify_timestamp` change reads need).
    pub stamped: usize,
    /// Every attribute the sampled entries carry, as the server spells them, sorted case-insensitively.
    pub attributes: Vec<String>,
    /// Whether the root DSE lists the content-sync control (RFC 4533: OpenLDAP's `syncprov` overlay); `None`
    /// when the root DSE could not be read or lists no control.
    pub content_sync: Option<bool>,
    /// Where the root DSE lists content sync and the daemon would use it: why the server refused a content-sync
    /// read of the base DN, if it did (the root DSE lists the control wherever slapd loaded the `syncprov` module,
    /// even when the database holding the base DN lacks the overlay).
    pub content_sync_refused: Option<String>,
    /// The same: why that read could not be made, when it failed for another reason (a timeout, a lost
    /// connection), which says nothing of whether the server takes it.
    pub content_sync_untried: Option<String>,
    /// Whether the root DSE lists Active Directory's change notifications; `None` as for `content_sync`.
    pub notifications: Option<bool>,
    /// On Active Directory with `ldap.change_detection` `"auto"` or `"dirsync"`: whether a DirSync read of the
    /// naming context holding the base DN works for this account (that naming context), or why not.
    pub dirsync: Option<Result<String, String>>,
    /// On Active Directory with `ldap.change_detection` `"usn"`, or `"auto"` where DirSync cannot be used: whether
    /// `uSNChanged` reads of the naming context holding the base DN work for this account, or why not.
    pub usn: Option<Result<String, String>>,
}

impl Probe {
    /// The attribute `ldap.username_attribute` probably should be: the first usual username attribute that
    /// every sampled entry carries.
    pub fn suggestion(&self) -> Option<&str> {
        USERNAME_ATTRIBUTES
            .iter()
            .find_map(|usual| self.attributes.iter().find(|a| a.eq_ignore_ascii_case(usual)).map(String::as_str))
    }
}

/// Why the base read's answer (`rc`, `matched` DN, referrals) means that `ldap.base_dn` is not in this
/// directory, or `None`: noSuchObject (OpenLDAP, and Active Directory inside its domain) or a referral (Active
/// Directory, for a DN outside the naming contexts it holds). Server-sent text is escaped for the terminal.
fn base_dn_missing(rc: u32, matched: &str, refs: &[String]) -> Option<String> {
    use crate::logging::Escaped;
    match rc {
        NO_SUCH_OBJECT if matched.is_empty() => Some("does not exist (noSuchObject)".into()),
        NO_SUCH_OBJECT => {
            Some(format!("does not exist (noSuchObject); the nearest entry that exists is \"{}\"", Escaped(matched)))
        }
        REFERRAL => {
            let to = refs.iter().map(|r| Escaped(r).to_string()).collect::<Vec<_>>().join(", ");
            let to = if to.is_empty() { "a referral".to_string() } else { format!("it refers to {to}") };
            Some(format!("is not held by this server ({to}): name a DN under one of its naming contexts"))
        }
        _ => None,
    }
}

/// Whether the daemon's DirSync reads would work: the naming context holding the base DN, a watermark read of
/// it (the account's right), and settings a DirSync read can follow. `Err` says why not, and whether DirSync
/// was refused (where the daemon's `auto` reads by `uSNChanged` instead) rather than failed.
async fn dirsync_works(
    ldap: &mut ldap3::Ldap,
    root: &super::search::RootDse,
    s: &super::Settings,
) -> Result<String, (String, bool)> {
    use super::changes::{dirsync, kept, syncrepl::SyncError};
    let Some(nc) = root.naming_context_of(&s.base_dn) else {
        return Err((format!("no naming context the server lists holds ldap.base_dn {:?}", s.base_dn), true));
    };
    if let Some(why) = kept::dirsync_refusal(s) {
        return Err((why, true));
    }
    // As a run's first read does: the domain controller's name and database with the cookie.
    let refused = |e: SyncError| (e.to_string(), e.is_refusal());
    dirsync::position(ldap, nc, s.timeout).await.map_err(refused)?;
    Ok(nc.to_string())
}

/// Whether the daemon's `uSNChanged` reads would work: the naming context holding the base DN, settings they
/// can follow, `CN=Deleted Objects` readable (else deletions would go unseen), and a watermark.
async fn usn_works(
    ldap: &mut ldap3::Ldap,
    root: &super::search::RootDse,
    s: &super::Settings,
) -> Result<String, String> {
    use super::changes::{kept, usn};
    let Some(nc) = root.naming_context_of(&s.base_dn) else {
        return Err(format!("no naming context the server lists holds ldap.base_dn {:?}", s.base_dn));
    };
    if let Some(why) = kept::usn_refusal(&s.user_filter, &s.group_filter, &s.member_attribute) {
        return Err(why);
    }
    if usn::deleted_objects_visible(ldap, nc, s.timeout).await.map_err(|e| e.to_string())?.is_none() {
        return Err(usn::Error::NoDeletedObjects { naming_context: nc.to_string() }.to_string());
    }
    usn::watermark(ldap, s.timeout).await.map_err(|e| e.to_string())?;
    Ok(nc.to_string())
}

/// Reads the base DN and samples the user entries on a bound connection, which stays open for the reads after.
/// With `content_sync`, where the root DSE lists content sync, also tries a content-sync read (the daemon would
/// use it: for change reads, or for a watch).
pub async fn probe(connection: &mut Connection<'_>, content_sync: bool) -> Result<Probe, Error> {
    let (s, url, ldap) = (connection.s, connection.url.clone(), &mut connection.ldap);
    let search_error = |operation: &str, e: LdapError| match e {
        LdapError::Timeout { .. } => {
            Error::Timeout { url: url.clone(), operation: operation.into(), timeout: s.timeout }
        }
        other => Error::Search { url: url.clone(), operation: operation.into(), reason: Cause::new(other) },
    };
    let base = ldap
        .with_timeout(s.timeout)
        .search(&s.base_dn, Scope::Base, "(objectClass=*)", vec!["1.1"])
        .await
        .map_err(|e| search_error("the read of ldap.base_dn", e))?;
    let base_dn_missing = base_dn_missing(base.1.rc, &base.1.matched, &base.1.refs);
    let mut probe = Probe {
        served_by: url.clone(),
        base_dn_missing,
        sampled: 0,
        with_username: 0,
        stamped: 0,
        attributes: vec![],
        content_sync: None,
        content_sync_refused: None,
        content_sync_untried: None,
        notifications: None,
        dirsync: None,
        usn: None,
    };
    if let Ok(root) = super::search::root_dse(ldap, s.timeout).await {
        if root.controls.is_some() {
            probe.content_sync = root.offers(super::changes::syncrepl::SYNC_REQUEST_OID);
            probe.notifications = root.offers(super::changes::notification::NOTIFICATION_OID);
        }
        if content_sync && probe.content_sync == Some(true) {
            // As a watch starts: a content-sync read that matches nothing, which the database must take.
            match syncrepl::read(ldap, &s.base_dn, "(!(objectClass=*))", &["1.1"], None, s.timeout).await {
                Ok(_) => {}
                Err(e) if e.is_refusal() => probe.content_sync_refused = Some(e.to_string()),
                Err(e) => probe.content_sync_untried = Some(e.to_string()),
            }
        }
        use super::ChangeDetection::{Auto, Dirsync, Usn};
        let mut refused = false;
        if root.active_directory && matches!(s.change_detection, Auto | Dirsync) {
            let works = dirsync_works(ldap, &root, s).await;
            refused = matches!(works, Err((_, true)));
            probe.dirsync = Some(works.map_err(|(why, _)| why));
        }
        // As the daemon's `auto` does: by update sequence numbers where DirSync is refused.
        let fallback = s.change_detection == Auto && refused;
        if root.active_directory && (s.change_detection == Usn || fallback) {
            probe.usn = Some(usn_works(ldap, &root, s).await);
        }
    }
    if probe.base_dn_missing.is_none() {
        let sample = ldap
            .with_timeout(s.timeout)
            .with_search_options(SearchOptions::new().sizelimit(SAMPLE))
            .search(&s.base_dn, Scope::Subtree, &s.user_filter, vec!["*", STAMPS[0], STAMPS[1]])
            .await
            .map_err(|e| search_error("the sample of user entries", e))?;
        let (entries, result) = (sample.0, sample.1);
        if result.rc != 0 && result.rc != SIZE_LIMIT_EXCEEDED && entries.is_empty() {
            return Err(Error::Search {
                url,
                operation: "the sample of user entries".into(),
                reason: result_reason(result.rc, &result.text).into(),
            });
        }
        let mut attributes: BTreeMap<String, String> = BTreeMap::new();
        for entry in entries.into_iter().filter_map(entry::decode) {
            probe.sampled += 1;
            let stamp = |a: &String| STAMPS.iter().any(|o| a.eq_ignore_ascii_case(o));
            if STAMPS.iter().all(|o| entry.attrs.keys().any(|a| a.eq_ignore_ascii_case(o))) {
                probe.stamped += 1;
            }
            let names = entry.attrs.keys().chain(entry.bin_attrs.keys()).filter(|a| !stamp(a));
            if names.clone().any(|a| a.eq_ignore_ascii_case(&s.username_attribute)) {
                probe.with_username += 1;
            }
            for name in names {
                attributes.entry(name.to_ascii_lowercase()).or_insert_with(|| name.clone());
            }
        }
        probe.attributes = attributes.into_values().collect();
    }
    Ok(probe)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampled(attributes: &[&str]) -> Probe {
        Probe {
            served_by: "ldap://x".into(),
            base_dn_missing: None,
            sampled: 1,
            with_username: 0,
            stamped: 0,
            attributes: attributes.iter().map(|a| a.to_string()).collect(),
            content_sync: None,
            content_sync_refused: None,
            content_sync_untried: None,
            notifications: None,
            dirsync: None,
            usn: None,
        }
    }

    #[test]
    fn only_no_such_object_and_a_referral_mean_the_base_dn_is_not_there() {
        assert_eq!(base_dn_missing(0, "", &[]), None);
        assert_eq!(base_dn_missing(50, "", &[]), None, "insufficient access: the base may well exist");
        assert_eq!(base_dn_missing(32, "", &[]).as_deref(), Some("does not exist (noSuchObject)"));
        let nearest = base_dn_missing(32, "dc=example,dc=org", &[]).unwrap();
        assert!(nearest.ends_with("the nearest entry that exists is \"dc=example,dc=org\""), "{nearest}");
        let elsewhere = base_dn_missing(10, "", &["ldap://other.example.org/DC=other".into()]).unwrap();
        assert!(elsewhere.contains("not held by this server") && elsewhere.contains("ldap://other.example.org/"));
        assert!(base_dn_missing(10, "", &[]).unwrap().contains("(a referral)"));
    }

    #[test]
    fn the_usual_username_attribute_the_entries_carry_is_suggested() {
        assert_eq!(sampled(&["cn", "mail", "objectClass", "sn", "uid"]).suggestion(), Some("uid"));
        assert_eq!(sampled(&["cn", "SAMAccountName", "userPrincipalName"]).suggestion(), Some("SAMAccountName"));
        assert_eq!(sampled(&["cn", "objectClass"]).suggestion(), Some("cn"));
        assert_eq!(sampled(&["objectClass", "description"]).suggestion(), None);
    }
}
