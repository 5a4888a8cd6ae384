//! Active Directory's change notifications (control 1.2.840.113556.1.4.528, `LDAP_SERVER_NOTIFICATION_OID`),
//! for watching a directory that has no content sync: an asynchronous search of the base DN (subtree) that
//! never ends, and answers with an entry each time an object under it changes. Samba AD has them too; it
//! looks for changed objects every few seconds rather than at once.
//!
//! The server accepts no filter but `(objectClass=*)`, so it announces every object: computers, containers,
//! and the domain controller's own updates. Each entry announced is therefore read once more with the
//! configured user and group filters (a base-scope search of its DN on the same connection) and counts only
//! when it matches. An entry gone by then (deleted, or moved out of the base) is not announced: the server
//! does not announce deletions without the Show Deleted control anyway, and a leaver waits for the scheduled
//! run. When the check cannot be made, the entry counts: a run too many costs less than a change missed.
//! No check is made while a change already waits for its run, which would read this one too.

use std::time::Duration;

use ldap3::asn1::TagClass;
use ldap3::controls::RawControl;
use ldap3::{Ldap, Scope};

use super::syncrepl::{Notice, SyncError};
use crate::ldap::entry;
use crate::ldap::error::result_reason;

/// `LDAP_SERVER_NOTIFICATION_OID`, as the root DSE of a server that offers change notifications lists it.
pub const NOTIFICATION_OID: &str = "1.2.840.113556.1.4.528";

/// The only kind of filter a notification search may carry ([MS-ADTS] 3.1.1.3.4.1.9).
const EVERY_OBJECT: &str = "(objectClass=*)";

const NO_SUCH_OBJECT: u32 = 32;
const UNAVAILABLE_CRITICAL_EXTENSION: u32 = 12;

/// A change-notification search of `base` (subtree), until it ends: hands `each` a [`Notice::Persisting`] once
/// the server has taken the search (it answered a later request on the same connection without ending it),
/// then a [`Notice::Changed`] for each object announced that matches `matching` (see the module's comment).
/// `waiting`: whether a change already waits for its run, so that no check is worth making. Each check is
/// awaited for at most `timeout`. Returns why the search ended.
pub async fn persist(
    ldap: &mut Ldap,
    base: &str,
    matching: &str,
    timeout: Duration,
    waiting: impl Fn() -> bool,
    mut each: impl FnMut(Notice),
) -> SyncError {
    let control = RawControl { ctype: NOTIFICATION_OID.to_string(), crit: true, val: None };
    let mut stream =
        match ldap.with_controls(control).streaming_search(base, Scope::Subtree, EVERY_OBJECT, vec!["1.1"]).await {
            Ok(stream) => stream,
            Err(e) => return failed(None, e.to_string()),
        };
    let mut checker = ldap.clone();
    let mut taken = std::pin::pin!(answers(ldap.clone(), timeout));
    let mut up = false;
    loop {
        let item = if up {
            stream.next().await
        } else {
            tokio::select! {
                biased;
                item = stream.next() => item,
                answered = &mut taken => match answered {
                    Ok(()) => {
                        up = true;
                        each(Notice::Persisting { by: "change notifications" });
                        continue;
                    }
                    Err(reason) => {
                        let _ = stream.finish().await;
                        return failed(None, reason);
                    }
                },
            }
        };
        let announced = match item {
            Ok(Some(item)) if item.0.id == 4 && item.0.class == TagClass::Application => item,
            Ok(Some(item)) if item.0.id == 19 && item.0.class == TagClass::Application => continue,
            Ok(Some(item)) => {
                let _ = stream.finish().await;
                return SyncError::Malformed(format!("an unexpected message (tag {}) in the search", item.0.id));
            }
            Ok(None) => break,
            Err(e) => {
                let _ = stream.finish().await;
                return failed(None, e.to_string());
            }
        };
        if waiting() {
            continue;
        }
        if let Some(dn) = entry::decode(announced).map(|e| e.dn)
            && !matches(&mut checker, &dn, matching, timeout).await
        {
            tracing::debug!(dn = %dn, "a change announced outside the configured users and groups");
            continue;
        }
        each(Notice::Changed);
    }
    let result = stream.finish().await;
    let reason = result_reason(result.rc, &result.text);
    match result.rc {
        0 => failed(Some(0), "the server ended the change-notification search".into()),
        UNAVAILABLE_CRITICAL_EXTENSION => SyncError::Notification {
            code: Some(result.rc),
            reason: format!("the server refused the change-notification control ({reason})"),
            refused: true,
        },
        rc => failed(Some(rc), reason),
    }
}

fn failed(code: Option<u32>, reason: String) -> SyncError {
    SyncError::Notification { code, reason, refused: false }
}

/// Whether the server answers a read of its root DSE on `ldap` within `timeout` (or why not).
async fn answers(mut ldap: Ldap, timeout: Duration) -> Result<(), String> {
    match ldap.with_timeout(timeout).search("", Scope::Base, EVERY_OBJECT, vec!["1.1"]).await {
        Ok(result) => result.success().map(|_| ()).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Whether the entry at `dn` matches `filter`: false only when the server says for certain that it does not
/// (no entry in the answer, or noSuchObject); any other failure counts as a match.
async fn matches(ldap: &mut Ldap, dn: &str, filter: &str, timeout: Duration) -> bool {
    match ldap.with_timeout(timeout).search(dn, Scope::Base, filter, vec!["1.1"]).await {
        Ok(result) if result.1.rc == 0 => !result.0.is_empty(),
        Ok(result) if result.1.rc == NO_SUCH_OBJECT => false,
        _ => true,
    }
}
