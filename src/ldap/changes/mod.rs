//! Reading only what changed in the directory since an earlier read. The protocol side of each method returns
//! what the server said in a neutral shape (entries changed, entries gone, the watermark to keep); [`kept`]
//! applies content-sync, `modifyTimestamp` and DirSync reads to the model a daemon keeps. Deciding when a full read is
//! due belongs to the caller (`sync::changes`).
//!
//! - [`syncrepl`]: RFC 4533 content synchronisation (refreshOnly), OpenLDAP's `syncprov` overlay.
//! - [`stamps`]: `modifyTimestamp` searches, for a directory without content sync; blind to deletions.
//! - [`dirsync`]: Active Directory's DirSync control (Samba AD too), with incremental member values.
//! - [`objects`]: Active Directory's users and groups by `objectGUID`, for the model a DirSync read changes.
//! - [`usn`]: Active Directory's `uSNChanged` and tombstones, for an account without DirSync's right.
//! - [`notification`]: Active Directory's change notifications, for watching a directory without content sync.
//! - [`kept`]: the directory model a daemon keeps between content-sync reads, proven to resolve as a full read
//!   does (`tests/changes_model.rs`), or saying why only a full read can tell.

pub mod dirsync;
pub mod kept;
pub mod notification;
pub mod objects;
pub mod stamps;
pub mod syncrepl;
pub mod usn;

/// The next item of a search; on an error the search is ended first (its result adds nothing to the error).
async fn next_item<'a, S, A>(
    stream: &mut ldap3::SearchStream<'a, S, A>,
) -> ldap3::result::Result<Option<ldap3::ResultEntry>>
where
    S: AsRef<str> + Send + Sync + 'a,
    A: AsRef<[S]> + Send + Sync + 'a,
{
    let next = stream.next().await;
    if next.is_err() {
        let _ = stream.finish().await;
    }
    next
}
