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
use crate::ldap::error::rc::{
    ADMIN_LIMIT_EXCEEDED, INSUFFICIENT_ACCESS, NO_SUCH_OBJECT, UNAVAILABLE, UNAVAILABLE_CRITICAL_EXTENSION,
    UNWILLING_TO_PERFORM,
};
use crate::ldap::error::result_reason;

/// `LDAP_SERVER_NOTIFICATION_OID`, as the root DSE of a server that offers change notifications lists it.
pub const NOTIFICATION_OID: &str = "1.2.840.113556.1.4.528";

/// The only kind of filter a notification search may carry ([MS-ADTS] 3.1.1.3.4.1.9).
const EVERY_OBJECT: &str = "(objectClass=*)";

/// How long the search must last, once the server answered a later request, before it counts as taken: a
/// server that handles a connection's requests side by side may refuse the search after that answer.
const GRACE: Duration = Duration::from_secs(1);

/// A change-notification search of `base` (subtree), until it ends: hands `each` a [`Notice::Persisting`] once
/// the server has taken the search (it answered a later request on the same connection, and [`GRACE`] passed,
/// without ending it), then a [`Notice::Changed`] for each object announced that matches `matching` (see the
/// module's comment). `waiting`: whether a change already waits for a run that has not read yet, so that no
/// check is worth making. Each check is awaited for at most `timeout`. Returns why the search ended.
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
            Err(e) => return failed(None, format!("the change-notification search could not be sent: {e}")),
        };
    let mut checker = ldap.clone();
    let mut taken = std::pin::pin!(taken(ldap.clone(), timeout));
    let (mut up, mut announced_any) = (false, false);
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
            Ok(Some(item)) if item.0.id == 4 && item.0.class == TagClass::Application => {
                announced_any = true;
                item
            }
            Ok(Some(item)) if item.0.id == 19 && item.0.class == TagClass::Application => continue,
            Ok(Some(item)) => {
                let _ = stream.finish().await;
                let reason = format!(
                    "the server sent an unexpected message (tag {}) in the change-notification search",
                    item.0.id
                );
                return failed(None, reason);
            }
            Ok(None) => break,
            Err(e) => {
                let _ = stream.finish().await;
                return failed(None, format!("the change-notification search ended: {e}"));
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
    ended(result.rc, &result.text, announced_any)
}

/// Why the search ended with result code `rc`: a refusal of the control (or, for the codes a server refuses a
/// search with, of the search, before it `announced` anything: a server may refuse it after the grace), or a
/// failure to retry.
fn ended(rc: u32, text: &str, announced: bool) -> SyncError {
    let reason = result_reason(rc, text);
    match rc {
        0 => failed(Some(0), "the server ended the change-notification search".into()),
        UNAVAILABLE_CRITICAL_EXTENSION => refused(rc, reason),
        UNWILLING_TO_PERFORM | ADMIN_LIMIT_EXCEEDED | INSUFFICIENT_ACCESS | UNAVAILABLE if !announced => {
            refused(rc, reason)
        }
        rc => failed(Some(rc), format!("the change-notification search failed: {reason}")),
    }
}

fn refused(rc: u32, reason: String) -> SyncError {
    SyncError::Notification {
        code: Some(rc),
        reason: format!("the server refused the change-notification search ({reason})"),
        refused: true,
    }
}

fn failed(code: Option<u32>, reason: String) -> SyncError {
    SyncError::Notification { code, reason, refused: false }
}

/// Whether the server took the search sent just before on the connection of `ldap`: it answered a read of its
/// root DSE within `timeout` and [`GRACE`] passed (the caller ends the wait when the search ends first).
async fn taken(mut ldap: Ldap, timeout: Duration) -> Result<(), String> {
    let answered = match ldap.with_timeout(timeout).search("", Scope::Base, EVERY_OBJECT, vec!["1.1"]).await {
        Ok(result) => result.success().map(|_| ()).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    answered.map_err(|e| format!("no answer from the server while the change-notification search was open: {e}"))?;
    tokio::time::sleep(GRACE).await;
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_search_refused_is_tried_again_each_minute_and_one_that_ended_after_announcing_at_once() {
        let refusal = |e: &SyncError| e.is_refusal();
        assert!(refusal(&ended(UNAVAILABLE_CRITICAL_EXTENSION, "", true)), "the control itself, always");
        for rc in [UNWILLING_TO_PERFORM, ADMIN_LIMIT_EXCEEDED, INSUFFICIENT_ACCESS, UNAVAILABLE] {
            assert!(refusal(&ended(rc, "Search filter too complex", false)), "{rc} before any change");
            assert!(!refusal(&ended(rc, "", true)), "{rc} after changes were announced");
        }
        let done = ended(0, "", false);
        assert!(!refusal(&done));
        assert_eq!(done.to_string(), "the server ended the change-notification search");
        let other = ended(80, "boom", false);
        assert!(
            !refusal(&other) && other.to_string().starts_with("the change-notification search failed: "),
            "{other}"
        );
    }
}
