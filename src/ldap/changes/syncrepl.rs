//! RFC 4533 content synchronisation, refreshOnly: one search with the Sync Request control, answered with the
//! entries changed since a cookie, the entries gone, and a new cookie ([`read`]). OpenLDAP serves it through
//! the `syncprov` overlay. This module only talks the protocol and says what the server said ([`SyncRead`]);
//! it never applies changes to a kept model and never decides that a full read is due (the caller does, on
//! [`SyncError::RefreshRequired`] among others).
//!
//! Every control and intermediate message the server sends is parsed here, with a small BER reader that checks
//! every length, tag and the end of each value (ldap3's own content-sync parsers `panic!` on malformed input,
//! and `lber`'s recursive parser has no depth limit): anything malformed is [`SyncError::Malformed`], naming
//! what, never a panic and never skipped. An entry without its syncState control is malformed too.
//!
//! # What slapd 2.5 does (observed: slapd 2.5.13, mdb, `syncprov`; pinned by `tests/changes.rs`)
//!
//! - **Without a cookie**: every entry matching the filter, each with syncState `add` and the requested
//!   attributes; no intermediate message; syncDone with the cookie `rid=000,csn=<contextCSN>` (a CSN is
//!   `YYYYmmddHHMMSS.ffffffZ#count#sid#mod`, e.g. `rid=000,csn=20261202101622.633233Z#000000#000#000000`) and
//!   refreshDeletes TRUE. Such a read is the whole content all the same: [`Refresh::Present`] with no UUIDs.
//! - **Nothing changed since the cookie**: no entry, no intermediate message, syncDone without a cookie (the
//!   old one is kept) and refreshDeletes TRUE: [`Refresh::Deletes`], nothing changed or deleted.
//! - **Changes, with `syncprov-sessionlog`** (the cookie within the log): each entry added, modified, renamed
//!   (same UUID, new DN) or with a member added comes whole, with syncState `add` (never `modify`); each
//!   deletion comes as a syncIdSet intermediate message with refreshDeletes TRUE (its cookie carries an extra
//!   `,delcsn=<CSN>`), not as an entry with syncState `delete`; syncDone with the new cookie and refreshDeletes
//!   TRUE: [`Refresh::Deletes`].
//! - **Changes, without a session log**: a present phase: one syncIdSet with refreshDeletes FALSE and no
//!   cookie, naming every entry matching the filter (changed ones included), the changed entries whole with
//!   syncState `add`, then syncDone with the new cookie and refreshDeletes FALSE: [`Refresh::Present`]; a
//!   deleted entry is simply not named ([`SyncRead::gone`]).
//! - **An entry that stops matching the filter, or is moved out of the base**: gone like a deleted one
//!   (in the delete-phase syncIdSet with the session log; left out of the present set without it); when it
//!   matches again it comes whole, with syncState `add` and its old UUID.
//! - **After a slapd restart**, the session log is empty (it lives in memory): a read with a cookie gets a
//!   present phase, as without a session log. An entry hidden from the bind account by an access rule changes
//!   no CSN; a present phase leaves it out (gone). Not observed, inferred: an access rule changed through
//!   cn=config without a restart would leave the session log in use, whose delete phase cannot name such an
//!   entry; only a full read would see it gone.
//! - **A cookie older than the session log, or whose CSN names another server id** (`#007#`): the whole
//!   content as `add` entries with no present markers, syncDone refreshDeletes FALSE: a present phase naming
//!   nothing, so every kept entry not sent is gone. Safe, just a full read's cost.
//! - **A cookie whose CSN is ahead of slapd's** (a restored server, another provider): result 53
//!   unwillingToPerform "consumer state is newer than provider!": [`SyncError::CookieRefused`].
//! - **A cookie slapd cannot parse** (`rid=000,csn=garbage`, an empty one, no `csn=`): slapd takes it for no
//!   cookie and sends the whole content with refreshDeletes TRUE, which reads exactly like a delete-phase
//!   answer of changes, so every deletion since would be missed. [`read`] therefore checks the cookie's shape
//!   before sending it and refuses one slapd would not parse ([`SyncError::CookieRefused`]).
//! - **e-syncRefreshRequired (4096)**: sent in refreshOnly only with `syncprov-reloadhint TRUE`, for a cookie
//!   slapd can no longer serve (older than every entry; without the option it sends a present phase):
//!   [`SyncError::RefreshRequired`], a full read.
//! - **No `syncprov` on the database**: the critical Sync Request control is refused with result 12
//!   unavailableCriticalExtension: [`SyncError::Unsupported`], naming the overlay.
//!
//! # Traps
//! - The search is not paged, so the server's size limit applies to it whole: an ordinary bind account on a
//!   directory with more entries than the limit gets sizeLimitExceeded (4) (the reason says to give it
//!   `limits ... size=unlimited`). Adding the paged-results control does not help: slapd 2.5 then answers the
//!   first page only, with success and a syncDone (no paging cookie), a silent truncation. Never combine them.
//! - An entry deleted while groups still name it changes no group (without `refint`): its DN stays in their
//!   `member` values, as in a full read.
//! - ldap3 hands intermediate messages to a streaming search as entries (tag 25); its plain `search` drops
//!   them, and its `EntriesOnly` adapter too, so the search here is streaming and unadapted.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use ldap3::asn1::{PL, StructureTag, TagClass};
use ldap3::controls::{RawControl, RefreshMode, SyncRequest};
use ldap3::{Ldap, LdapError, Scope};

use crate::ldap::entry;
use crate::ldap::error::rc::{SIZE_LIMIT_EXCEEDED, UNAVAILABLE_CRITICAL_EXTENSION, UNWILLING_TO_PERFORM};
use crate::ldap::error::result_reason;

/// The Sync Request control (RFC 4533 section 2.2).
pub const SYNC_REQUEST_OID: &str = "1.3.6.1.4.1.4203.1.9.1.1";
/// The Sync State control, on each entry (section 2.3).
pub const SYNC_STATE_OID: &str = "1.3.6.1.4.1.4203.1.9.1.2";
/// The Sync Done control, on the search result (section 2.4).
pub const SYNC_DONE_OID: &str = "1.3.6.1.4.1.4203.1.9.1.3";
/// The Sync Info intermediate message (section 2.5).
pub const SYNC_INFO_OID: &str = "1.3.6.1.4.1.4203.1.9.1.4";
/// e-syncRefreshRequired (section 2.6): the cookie cannot be served incrementally; a full read is needed.
pub const REFRESH_REQUIRED: u32 = 4096;

/// An entry's `entryUUID`, as content sync names it (a syncUUID: 16 octets). Shown in the RFC 4122 text form
/// slapd uses for the `entryUUID` attribute.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct EntryUuid(pub [u8; 16]);

impl EntryUuid {
    /// The 16 octets of a syncUUID; `None` for any other length.
    pub fn from_octets(octets: &[u8]) -> Option<EntryUuid> {
        octets.try_into().ok().map(EntryUuid)
    }

    /// The text form of the `entryUUID` attribute (`8-4-4-4-12` hex digits, either case); `None` otherwise.
    pub fn parse(text: &str) -> Option<EntryUuid> {
        let groups: Vec<&str> = text.split('-').collect();
        let lengths: Vec<usize> = groups.iter().map(|g| g.len()).collect();
        if lengths != [8, 4, 4, 4, 12] || !groups.iter().all(|g| g.bytes().all(|b| b.is_ascii_hexdigit())) {
            return None;
        }
        let hex: String = groups.concat();
        let mut octets = [0u8; 16];
        for (i, o) in octets.iter_mut().enumerate() {
            *o = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(EntryUuid(octets))
    }
}

impl fmt::Display for EntryUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for EntryUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// How the server said an entry changed (the syncState of an entry sent with its attributes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    Add,
    Modify,
}

/// An entry added or modified since the cookie (a rename included: same UUID, new DN), with every attribute
/// requested.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangedEntry {
    pub uuid: EntryUuid,
    pub dn: String,
    pub kind: ChangeKind,
    /// Attributes whose values are all UTF-8.
    pub attrs: HashMap<String, Vec<String>>,
    /// Attributes with a value that is not UTF-8 (all their values, as octets).
    pub bin_attrs: HashMap<String, Vec<Vec<u8>>>,
}

/// What a read keeps of each changed entry: the [`ChangedEntry`] itself ([`read`]), or a smaller form made as
/// each entry arrives ([`read_each`]), so that a read of a hundred thousand entries never holds them all whole.
pub trait Changed {
    fn uuid(&self) -> EntryUuid;
}

impl Changed for ChangedEntry {
    fn uuid(&self) -> EntryUuid {
        self.uuid
    }
}

/// How the server accounted for the entries it did not send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refresh {
    /// Delete phase only: every entry gone since the cookie is in [`SyncRead::deleted`]; an entry kept and not
    /// named is unchanged.
    Deletes,
    /// A present phase ran: these entries are unchanged and still there. Every kept entry that is neither here,
    /// nor in [`SyncRead::changed`], is gone ([`SyncRead::gone`] says which), besides [`SyncRead::deleted`].
    Present(HashSet<EntryUuid>),
}

/// What one content-sync read said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncRead<E = ChangedEntry> {
    /// The cookie to keep for the next read: the last one the server sent, else the one this read was given
    /// (slapd sends none when nothing changed).
    pub cookie: Option<Vec<u8>>,
    /// Entries added or modified since the cookie (every entry, on a read without a cookie): in DN order from
    /// [`read`], in no order from [`read_each`].
    pub changed: Vec<E>,
    /// Entries the server named as deleted (syncState delete, or a syncIdSet in the delete phase).
    pub deleted: Vec<EntryUuid>,
    /// How unnamed entries are to be read.
    pub refresh: Refresh,
}

impl<E: Changed> SyncRead<E> {
    /// Which of the `kept` entries are gone: those named deleted, and after a present phase those neither
    /// present nor changed.
    pub fn gone(&self, kept: impl IntoIterator<Item = EntryUuid>) -> Vec<EntryUuid> {
        let deleted: HashSet<&EntryUuid> = self.deleted.iter().collect();
        let changed: HashSet<EntryUuid> = self.changed.iter().map(Changed::uuid).collect();
        kept.into_iter()
            .filter(|u| match &self.refresh {
                Refresh::Deletes => deleted.contains(u),
                Refresh::Present(present) => deleted.contains(u) || !(present.contains(u) || changed.contains(u)),
            })
            .collect()
    }
}

/// Why a content-sync read gave no answer, or why a watch (content sync's or change notifications') ended.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    /// e-syncRefreshRequired (4096): the server cannot serve this cookie incrementally; read everything.
    #[error("the directory cannot send the changes since this cookie (e-syncRefreshRequired): {text}")]
    RefreshRequired { text: String },
    /// The cookie cannot be used: it is not the shape slapd gives (checked before sending, since slapd answers
    /// a cookie it cannot parse with its whole content, indistinguishable from changes), or the server refused
    /// it (slapd: unwillingToPerform, "consumer state is newer than provider", for a CSN ahead of its own).
    #[error("the content-sync cookie cannot be used: {reason}")]
    CookieRefused { reason: String },
    /// The server does not do content sync for this base.
    #[error("the directory does not support content sync (RFC 4533): {reason}")]
    Unsupported { reason: String },
    /// The server sent something that is not what RFC 4533 or RFC 4511 says.
    #[error("the directory sent a malformed content-sync answer: {0}")]
    Malformed(String),
    /// No answer in time.
    #[error("the directory did not answer the content-sync search within {0:?}")]
    Timeout(Duration),
    /// Any other failure of the search (the result code when there is one).
    #[error("the change read failed: {reason}")]
    Ldap { code: Option<u32>, reason: String },
    /// Watching only: Active Directory's change-notification search failed or ended (`refused`: the server
    /// refused the search; the reason says what happened, whole).
    #[error("{reason}")]
    Notification { code: Option<u32>, reason: String, refused: bool },
    /// Watching only: the connection to the directory could not be opened or failed its first read (the reason
    /// says why, whole); tried again with backoff.
    #[error("{0}")]
    Connect(String),
    /// A DirSync read (a model read by [`super::kept::Source::DirSync`]) failed; the error says why, whole.
    #[error("{0}")]
    DirSync(#[from] super::dirsync::Error),
    /// A read by update sequence numbers (a model read by [`super::kept::Source::Usn`]) cannot be used; the
    /// error says why, whole.
    #[error("{0}")]
    Usn(#[from] super::usn::Error),
}

impl SyncError {
    /// A search of a change read that failed (`what`: which search): no answer within `timeout`, or the
    /// server's result code with its text, or the connection's failure.
    pub fn of_search(e: LdapError, timeout: Duration, what: &str) -> SyncError {
        match e {
            LdapError::Timeout { .. } => SyncError::Timeout(timeout),
            LdapError::LdapResult { result } => SyncError::Ldap {
                code: Some(result.rc),
                reason: format!("{what}: {}", result_reason(result.rc, &result.text)),
            },
            other => SyncError::Ldap { code: None, reason: format!("{what}: {other}") },
        }
    }

    /// The caller's way on: a read of everything (without a cookie) for a refused or expired cookie; anything
    /// else is a failure to report (and a full read would not go better through content sync).
    pub fn needs_full_read(&self) -> bool {
        use super::dirsync::Error as DirSync;
        matches!(
            self,
            SyncError::RefreshRequired { .. }
                | SyncError::CookieRefused { .. }
                | SyncError::DirSync(DirSync::CookieRefused { .. } | DirSync::ServerChanged { .. })
                | SyncError::Usn(super::usn::Error::ServerChanged { .. })
        )
    }

    /// Whether the server refused the method itself (no content sync, change notifications refused): trying
    /// again at once would meet the same answer.
    pub fn is_refusal(&self) -> bool {
        use super::dirsync::Error as DirSync;
        matches!(
            self,
            SyncError::Unsupported { .. }
                | SyncError::Notification { refused: true, .. }
                | SyncError::DirSync(DirSync::NoRight { .. } | DirSync::Unsupported { .. })
                | SyncError::Usn(super::usn::Error::NoDeletedObjects { .. } | super::usn::Error::Unsupported { .. })
        )
    }
}

/// Why a server whose root DSE does not list the Sync Request control is not sent one: some servers answer a
/// critical control they do not know by ending the connection (Samba AD sends a disconnection notice, which the
/// LDAP client library does not expect in a search).
pub fn not_offered(base: &str) -> SyncError {
    SyncError::Unsupported {
        reason: format!(
            "the server's root DSE does not list the Sync Request control ({SYNC_REQUEST_OID}); on OpenLDAP, the \
             syncprov overlay is missing on the database holding {base}"
        ),
    }
}

/// One refreshOnly content-sync search of `base` (subtree) with `filter` and `attrs`, from `cookie` (none:
/// everything). Each answer is awaited for at most `timeout`. Nothing read is returned unless the search
/// ended well.
pub async fn read(
    ldap: &mut Ldap,
    base: &str,
    filter: &str,
    attrs: &[&str],
    cookie: Option<&[u8]>,
    timeout: Duration,
) -> Result<SyncRead, SyncError> {
    let mut read = read_each(ldap, base, filter, attrs, cookie, timeout, |e| e).await?;
    read.changed.sort_by(|a, b| a.dn.cmp(&b.dn));
    Ok(read)
}

/// [`read`], keeping of each changed entry what `keep` makes of it, as the entry arrives.
pub async fn read_each<E: Changed>(
    ldap: &mut Ldap,
    base: &str,
    filter: &str,
    attrs: &[&str],
    cookie: Option<&[u8]>,
    timeout: Duration,
    keep: impl FnMut(ChangedEntry) -> E,
) -> Result<SyncRead<E>, SyncError> {
    if let Some(c) = cookie {
        check_cookie(c).map_err(|reason| SyncError::CookieRefused { reason })?;
    }
    let mut control: RawControl =
        SyncRequest { mode: RefreshMode::RefreshOnly, cookie: cookie.map(<[u8]>::to_vec), reload_hint: false }.into();
    // Critical: a server without content sync must refuse the search, not answer it as a plain one.
    control.crit = true;
    let failed = |e: LdapError| match e {
        LdapError::Timeout { .. } => SyncError::Timeout(timeout),
        other => SyncError::Ldap { code: None, reason: other.to_string() },
    };
    let mut stream = ldap
        .with_controls(control)
        .with_timeout(timeout)
        .streaming_search(base, Scope::Subtree, filter, attrs.to_vec())
        .await
        .map_err(failed)?;
    let mut collector = Collector::new(cookie, keep);
    loop {
        let Some(item) = super::next_item(&mut stream).await.map_err(failed)? else { break };
        if let Err(e) = collector.message(item) {
            let _ = stream.finish().await;
            return Err(e);
        }
    }
    let result = stream.finish().await;
    if let Some(e) = result_error(result.rc, &result.text, base, cookie.is_some()) {
        return Err(e);
    }
    let done = sync_done(&result.ctrls.iter().map(|c| &c.1).collect::<Vec<_>>())?;
    Ok(collector.finish(done))
}

/// What a persistent content-sync search tells whoever watches the directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice {
    /// An entry was added, modified, renamed or deleted (in the refresh phase: since the cookie).
    Changed,
    /// The server has started announcing each change as it happens (content sync: the refresh phase is over),
    /// `by` this method (`"content sync"`, `"change notifications"`).
    Persisting { by: &'static str },
}

/// A refreshAndPersist content-sync search of `base` (subtree) with `filter`, asking for no attribute, from
/// `cookie`: hands `each` a [`Notice`] for every change and one when the refresh phase ends. It returns only
/// when the search ends, which a persistent search does only when the server or the connection ends it, so
/// always with the reason. No timeout: it lasts as long as the connection.
pub async fn persist(
    ldap: &mut Ldap,
    base: &str,
    filter: &str,
    cookie: Option<&[u8]>,
    mut each: impl FnMut(Notice),
) -> SyncError {
    if let Some(c) = cookie
        && let Err(reason) = check_cookie(c)
    {
        return SyncError::CookieRefused { reason };
    }
    let mut control: RawControl =
        SyncRequest { mode: RefreshMode::RefreshAndPersist, cookie: cookie.map(<[u8]>::to_vec), reload_hint: false }
            .into();
    control.crit = true;
    let failed = |e: LdapError| SyncError::Ldap { code: None, reason: e.to_string() };
    let mut stream = match ldap.with_controls(control).streaming_search(base, Scope::Subtree, filter, vec!["1.1"]).await
    {
        Ok(stream) => stream,
        Err(e) => return failed(e),
    };
    loop {
        let notice = match super::next_item(&mut stream).await {
            Ok(Some(item)) => notice(item),
            Ok(None) => break,
            Err(e) => return failed(e),
        };
        match notice {
            Ok(Some(n)) => each(n),
            Ok(None) => {}
            Err(e) => {
                let _ = stream.finish().await;
                return e;
            }
        }
    }
    let result = stream.finish().await;
    result_error(result.rc, &result.text, base, cookie.is_some())
        .unwrap_or_else(|| SyncError::Ldap { code: Some(0), reason: "the server ended the persistent search".into() })
}

/// What one message of a persistent search announces: a change, the end of the refresh phase, or nothing (an
/// entry still present, a new cookie).
fn notice(mut item: ldap3::ResultEntry) -> Result<Option<Notice>, SyncError> {
    match item.0.id {
        4 if item.0.class == TagClass::Application => {
            let controls = std::mem::take(&mut item.1);
            let mut states = controls.iter().map(|c| &c.1).filter(|c| c.ctype == SYNC_STATE_OID);
            let state = match (states.next(), states.next()) {
                (Some(c), None) => {
                    parse_sync_state(c.val.as_deref().unwrap_or_default()).map_err(SyncError::Malformed)?
                }
                _ => return Err(SyncError::Malformed("an entry without exactly one syncState control".into())),
            };
            Ok((state.state != State::Present).then_some(Notice::Changed))
        }
        25 if item.0.class == TagClass::Application => {
            Ok(match parse_intermediate(item.0).map_err(SyncError::Malformed)? {
                SyncInfo::RefreshDelete { done: true, .. } | SyncInfo::RefreshPresent { done: true, .. } => {
                    Some(Notice::Persisting { by: "content sync" })
                }
                SyncInfo::IdSet { refresh_deletes: true, .. } => Some(Notice::Changed),
                _ => None,
            })
        }
        19 if item.0.class == TagClass::Application => Ok(None),
        other => Err(SyncError::Malformed(format!("an unexpected message (tag {other}) in the search"))),
    }
}

/// What a result code other than success means for a content-sync search of `base`.
fn result_error(rc: u32, text: &str, base: &str, cookie_sent: bool) -> Option<SyncError> {
    let reason = result_reason(rc, text);
    Some(match rc {
        0 => return None,
        REFRESH_REQUIRED => SyncError::RefreshRequired { text: text.to_string() },
        UNAVAILABLE_CRITICAL_EXTENSION => SyncError::Unsupported {
            reason: format!(
                "the server refused the Sync Request control ({reason}); on OpenLDAP, the syncprov overlay is \
                 missing on the database holding {base}"
            ),
        },
        UNWILLING_TO_PERFORM if cookie_sent => SyncError::CookieRefused { reason },
        SIZE_LIMIT_EXCEEDED => SyncError::Ldap {
            code: Some(rc),
            reason: format!(
                "{reason}: a content-sync search cannot be paged, so the bind account needs a size limit above the \
                 number of entries (slapd: limits dn.exact=\"<bind DN>\" size=unlimited)"
            ),
        },
        rc => SyncError::Ldap { code: Some(rc), reason },
    })
}

/// The syncDone control among a result's controls: exactly one, well formed.
fn sync_done(controls: &[&RawControl]) -> Result<SyncDone, SyncError> {
    let mut found = controls.iter().filter(|c| c.ctype == SYNC_DONE_OID);
    match (found.next(), found.next()) {
        (Some(c), None) => parse_sync_done(c.val.as_deref().unwrap_or_default())
            .map_err(|e| SyncError::Malformed(format!("syncDone control: {e}"))),
        (None, _) => Err(SyncError::Malformed("the search result came without a syncDone control".into())),
        (Some(_), Some(_)) => Err(SyncError::Malformed("the search result came with two syncDone controls".into())),
    }
}

/// The answer put together message by message (pure: the rules of RFC 4533 section 3.3 for one refresh).
#[derive(Debug)]
struct Collector<E, K> {
    cookie: Option<Vec<u8>>,
    keep: K,
    changed: HashMap<EntryUuid, E>,
    deleted: HashSet<EntryUuid>,
    present: HashSet<EntryUuid>,
    /// A present phase was seen (present entries, a present syncIdSet, or a refreshPresent message), or the
    /// read had no cookie (the whole content, whatever the server's refreshDeletes says: slapd says TRUE).
    present_phase: bool,
}

impl<E: Changed, K: FnMut(ChangedEntry) -> E> Collector<E, K> {
    fn new(cookie: Option<&[u8]>, keep: K) -> Collector<E, K> {
        Collector {
            cookie: cookie.map(<[u8]>::to_vec),
            keep,
            changed: HashMap::new(),
            deleted: HashSet::new(),
            present: HashSet::new(),
            present_phase: cookie.is_none(),
        }
    }

    /// One message of the search: an entry, an intermediate message (syncInfo), or a reference (refused).
    fn message(&mut self, mut item: ldap3::ResultEntry) -> Result<(), SyncError> {
        match item.0.id {
            4 if item.0.class == TagClass::Application => {
                let controls = std::mem::take(&mut item.1);
                let controls: Vec<&RawControl> = controls.iter().map(|c| &c.1).collect();
                let mut states = controls.iter().filter(|c| c.ctype == SYNC_STATE_OID);
                let state = match (states.next(), states.next()) {
                    (Some(c), None) => parse_sync_state(c.val.as_deref().unwrap_or_default()),
                    (None, _) => Err("no syncState control".to_string()),
                    (Some(_), Some(_)) => Err("two syncState controls".to_string()),
                };
                let Some(entry) = entry::decode(item) else {
                    return Err(SyncError::Malformed("an entry that is not a search result entry".into()));
                };
                let state =
                    state.map_err(|e| SyncError::Malformed(format!("the entry {:?} came with {e}", entry.dn)))?;
                self.entry(state, entry.dn, entry.attrs, entry.bin_attrs);
                Ok(())
            }
            25 if item.0.class == TagClass::Application => {
                let info = parse_intermediate(item.0).map_err(SyncError::Malformed)?;
                self.info(info);
                Ok(())
            }
            19 if item.0.class == TagClass::Application => Err(SyncError::Ldap {
                code: None,
                reason: "the server sent a search reference (a referral to another server), which content sync \
                         cannot follow"
                    .into(),
            }),
            other => Err(SyncError::Malformed(format!("an unexpected message (tag {other}) in the search"))),
        }
    }

    fn entry(
        &mut self,
        state: SyncState,
        dn: String,
        attrs: HashMap<String, Vec<String>>,
        bin_attrs: HashMap<String, Vec<Vec<u8>>>,
    ) {
        let uuid = state.uuid;
        match state.state {
            State::Present => {
                self.present_phase = true;
                self.present.insert(uuid);
            }
            State::Add | State::Modify => {
                let kind = if state.state == State::Add { ChangeKind::Add } else { ChangeKind::Modify };
                self.deleted.remove(&uuid);
                let kept = (self.keep)(ChangedEntry { uuid, dn, kind, attrs, bin_attrs });
                self.changed.insert(uuid, kept);
            }
            State::Delete => {
                self.changed.remove(&uuid);
                self.present.remove(&uuid);
                self.deleted.insert(uuid);
            }
        }
        self.keep_cookie(state.cookie);
    }

    fn info(&mut self, info: SyncInfo) {
        match info {
            SyncInfo::NewCookie(cookie) => self.keep_cookie(Some(cookie)),
            SyncInfo::RefreshDelete { cookie, .. } => self.keep_cookie(cookie),
            SyncInfo::RefreshPresent { cookie, .. } => {
                self.present_phase = true;
                self.keep_cookie(cookie);
            }
            SyncInfo::IdSet { cookie, refresh_deletes, uuids } => {
                for uuid in uuids {
                    if refresh_deletes {
                        self.changed.remove(&uuid);
                        self.present.remove(&uuid);
                        self.deleted.insert(uuid);
                    } else {
                        self.present.insert(uuid);
                    }
                }
                if !refresh_deletes {
                    self.present_phase = true;
                }
                self.keep_cookie(cookie);
            }
        }
    }

    fn keep_cookie(&mut self, cookie: Option<Vec<u8>>) {
        if cookie.is_some() {
            self.cookie = cookie;
        }
    }

    /// The answer, given the syncDone control that ended the search: refreshDeletes FALSE there means the last
    /// phase was a present phase (section 3.3.2).
    fn finish(mut self, done: SyncDone) -> SyncRead<E> {
        self.keep_cookie(done.cookie);
        let refresh =
            if self.present_phase || !done.refresh_deletes { Refresh::Present(self.present) } else { Refresh::Deletes };
        let changed: Vec<E> = self.changed.into_values().collect();
        let mut deleted: Vec<EntryUuid> = self.deleted.into_iter().collect();
        deleted.sort();
        SyncRead { cookie: self.cookie, changed, deleted, refresh }
    }
}

/// syncStateValue's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Present,
    Add,
    Modify,
    Delete,
}

/// syncStateValue (section 2.3).
#[derive(Clone, Debug, PartialEq, Eq)]
struct SyncState {
    state: State,
    uuid: EntryUuid,
    cookie: Option<Vec<u8>>,
}

/// syncDoneValue (section 2.4).
#[derive(Clone, Debug, PartialEq, Eq)]
struct SyncDone {
    cookie: Option<Vec<u8>>,
    refresh_deletes: bool,
}

/// syncInfoValue (section 2.5). `done` is refreshDone, which refreshOnly does not need.
#[derive(Clone, Debug, PartialEq, Eq)]
enum SyncInfo {
    NewCookie(Vec<u8>),
    RefreshDelete { cookie: Option<Vec<u8>>, done: bool },
    RefreshPresent { cookie: Option<Vec<u8>>, done: bool },
    IdSet { cookie: Option<Vec<u8>>, refresh_deletes: bool, uuids: Vec<EntryUuid> },
}

/// Whether `cookie` is what slapd sends (`rid=NNN[,sid=XXX],csn=CSN[;CSN...]`, every CSN well formed): slapd
/// takes a cookie without a usable CSN for no cookie at all and answers with its whole content in delete mode,
/// which would read as "all these changed, nothing deleted". Stricter than slapd is safe (a full read follows).
fn check_cookie(cookie: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(cookie).map_err(|_| "the cookie is not text".to_string())?;
    let (mut rid, mut csns) = (false, 0usize);
    for field in text.split(',') {
        let (name, value) = field.split_once('=').ok_or_else(|| format!("the cookie field {field:?} has no value"))?;
        match name {
            "rid" if (1..=3).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_digit()) => rid = true,
            "sid" if (1..=3).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_hexdigit()) => {}
            "csn" | "delcsn" => {
                for csn in value.split(';') {
                    if !is_csn(csn) {
                        return Err(format!("the cookie holds a malformed CSN {csn:?}"));
                    }
                    csns += usize::from(name == "csn");
                }
            }
            _ => return Err(format!("the cookie field {field:?} is not one slapd sends")),
        }
    }
    match (rid, csns) {
        (true, 1..) => Ok(()),
        (false, _) => Err("the cookie has no rid".into()),
        (true, 0) => Err("the cookie has no CSN".into()),
    }
}

/// A change sequence number as slapd writes it: `YYYYmmddHHMMSS.ffffffZ#count#sid#mod` (6, 3 and 6 hex digits).
fn is_csn(csn: &str) -> bool {
    let b = csn.as_bytes();
    let digits = |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let number = |r: std::ops::Range<usize>| csn.get(r).and_then(|d| d.parse::<u32>().ok());
    let hex = |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_hexdigit));
    b.len() == 40
        && digits(0..14)
        && b[14] == b'.'
        && digits(15..21)
        && &b[21..23] == b"Z#"
        && hex(23..29)
        && b[29] == b'#'
        && hex(30..33)
        && b[33] == b'#'
        && hex(34..40)
        && number(4..6).is_some_and(|m| (1..=12).contains(&m))
        && number(6..8).is_some_and(|d| (1..=31).contains(&d))
        && number(8..10).is_some_and(|h| h < 24)
        && number(10..12).is_some_and(|m| m < 60)
        && number(12..14).is_some_and(|s| s < 61)
}

// BER, as much as these four values need: definite lengths, tag numbers below 31, no recursion.

const UNIVERSAL: u8 = 0;
const CONTEXT: u8 = 2;
const BOOLEAN: u32 = 1;
const OCTET_STRING: u32 = 4;
const ENUMERATED: u32 = 10;
const SEQUENCE: u32 = 16;
const SET: u32 = 17;

/// One BER element: its class (0 universal .. 3 private), whether it is constructed, its tag number and its
/// contents.
#[derive(Debug)]
struct Tlv<'a> {
    class: u8,
    constructed: bool,
    number: u32,
    body: &'a [u8],
}

impl Tlv<'_> {
    fn is(&self, class: u8, constructed: bool, number: u32) -> bool {
        self.class == class && self.constructed == constructed && self.number == number
    }
}

/// Reads the elements of a value (or of a constructed element's contents) one by one.
struct Elements<'a> {
    rest: &'a [u8],
}

impl<'a> Elements<'a> {
    fn new(bytes: &'a [u8]) -> Elements<'a> {
        Elements { rest: bytes }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The next element; an error when it is truncated or uses a form these values never need.
    fn next(&mut self) -> Result<Tlv<'a>, String> {
        let [first, length, rest @ ..] = self.rest else {
            return Err("truncated (no tag and length)".into());
        };
        if first & 0x1f == 0x1f {
            return Err("a tag number above 30".into());
        }
        let (len, rest) = match *length {
            l if l < 0x80 => (usize::from(l), rest),
            0x80 => return Err("an indefinite length".into()),
            l => {
                let n = usize::from(l & 0x7f);
                if n > 4 || rest.len() < n {
                    return Err("a malformed length".into());
                }
                let (octets, rest) = rest.split_at(n);
                (octets.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b)), rest)
            }
        };
        if rest.len() < len {
            return Err(format!("truncated (a length of {len} with {} octets left)", rest.len()));
        }
        let (body, rest) = rest.split_at(len);
        self.rest = rest;
        Ok(Tlv { class: first >> 6, constructed: first & 0x20 != 0, number: u32::from(first & 0x1f), body })
    }

    /// The next element if it has this tag, else nothing read.
    fn next_if(&mut self, class: u8, constructed: bool, number: u32) -> Result<Option<Tlv<'a>>, String> {
        let saved = self.rest;
        if saved.is_empty() {
            return Ok(None);
        }
        let tlv = self.next()?;
        if tlv.is(class, constructed, number) {
            Ok(Some(tlv))
        } else {
            self.rest = saved;
            Ok(None)
        }
    }

    fn end(&self, what: &str) -> Result<(), String> {
        if self.rest.is_empty() { Ok(()) } else { Err(format!("unexpected data after {what}")) }
    }
}

/// The one element a whole value holds, which must have this tag; its contents.
fn only(value: &[u8], class: u8, constructed: bool, number: u32, what: &str) -> Result<Vec<u8>, String> {
    let mut elements = Elements::new(value);
    let tlv = elements.next().map_err(|e| format!("{what}: {e}"))?;
    if !tlv.is(class, constructed, number) {
        return Err(format!("{what}: not the expected tag"));
    }
    elements.end(what)?;
    Ok(tlv.body.to_vec())
}

fn boolean(tlv: &Tlv<'_>, what: &str) -> Result<bool, String> {
    match tlv.body {
        [b] => Ok(*b != 0),
        _ => Err(format!("{what}: a BOOLEAN of {} octets", tlv.body.len())),
    }
}

fn uuid(tlv: &Tlv<'_>) -> Result<EntryUuid, String> {
    if !tlv.is(UNIVERSAL, false, OCTET_STRING) {
        return Err("a syncUUID that is not an OCTET STRING".into());
    }
    EntryUuid::from_octets(tlv.body).ok_or_else(|| format!("a syncUUID of {} octets, not 16", tlv.body.len()))
}

/// syncStateValue ::= SEQUENCE { state ENUMERATED, entryUUID syncUUID, cookie syncCookie OPTIONAL }
fn parse_sync_state(value: &[u8]) -> Result<SyncState, String> {
    let body = only(value, UNIVERSAL, true, SEQUENCE, "syncState")?;
    let mut e = Elements::new(&body);
    let state = e.next().map_err(|x| format!("syncState: {x}"))?;
    if !state.is(UNIVERSAL, false, ENUMERATED) {
        return Err("syncState: the state is not an ENUMERATED".into());
    }
    let state = match state.body {
        [0] => State::Present,
        [1] => State::Add,
        [2] => State::Modify,
        [3] => State::Delete,
        other => return Err(format!("syncState: an unknown state {other:?}")),
    };
    let uuid = uuid(&e.next().map_err(|x| format!("syncState: {x}"))?).map_err(|x| format!("syncState: {x}"))?;
    let cookie = e.next_if(UNIVERSAL, false, OCTET_STRING).map_err(|x| format!("syncState: {x}"))?;
    e.end("syncState")?;
    Ok(SyncState { state, uuid, cookie: cookie.map(|c| c.body.to_vec()) })
}

/// syncDoneValue ::= SEQUENCE { cookie syncCookie OPTIONAL, refreshDeletes BOOLEAN DEFAULT FALSE }
fn parse_sync_done(value: &[u8]) -> Result<SyncDone, String> {
    let body = only(value, UNIVERSAL, true, SEQUENCE, "syncDone")?;
    let mut e = Elements::new(&body);
    let cookie = e.next_if(UNIVERSAL, false, OCTET_STRING)?.map(|c| c.body.to_vec());
    let refresh_deletes = match e.next_if(UNIVERSAL, false, BOOLEAN)? {
        Some(b) => boolean(&b, "syncDone refreshDeletes")?,
        None => false,
    };
    e.end("syncDone")?;
    Ok(SyncDone { cookie, refresh_deletes })
}

/// syncInfoValue ::= CHOICE { newcookie [0] syncCookie, refreshDelete [1] SEQUENCE {..}, refreshPresent [2]
/// SEQUENCE {..}, syncIdSet [3] SEQUENCE { cookie OPTIONAL, refreshDeletes BOOLEAN DEFAULT FALSE, syncUUIDs
/// SET OF syncUUID } }
fn parse_sync_info(value: &[u8]) -> Result<SyncInfo, String> {
    let mut outer = Elements::new(value);
    let choice = outer.next().map_err(|e| format!("syncInfo: {e}"))?;
    outer.end("syncInfo")?;
    if choice.class != CONTEXT {
        return Err("syncInfo: not a context-specific choice".into());
    }
    let refresh = |body: &[u8], what: &str| -> Result<(Option<Vec<u8>>, bool), String> {
        let mut e = Elements::new(body);
        let cookie = e.next_if(UNIVERSAL, false, OCTET_STRING).map_err(|x| format!("{what}: {x}"))?;
        let done = match e.next_if(UNIVERSAL, false, BOOLEAN).map_err(|x| format!("{what}: {x}"))? {
            Some(b) => boolean(&b, what)?,
            None => true,
        };
        e.end(what)?;
        Ok((cookie.map(|c| c.body.to_vec()), done))
    };
    match (choice.number, choice.constructed) {
        (0, false) => Ok(SyncInfo::NewCookie(choice.body.to_vec())),
        (1, true) => {
            let (cookie, done) = refresh(choice.body, "syncInfo refreshDelete")?;
            Ok(SyncInfo::RefreshDelete { cookie, done })
        }
        (2, true) => {
            let (cookie, done) = refresh(choice.body, "syncInfo refreshPresent")?;
            Ok(SyncInfo::RefreshPresent { cookie, done })
        }
        (3, true) => {
            let what = "syncInfo syncIdSet";
            let mut e = Elements::new(choice.body);
            let cookie = e.next_if(UNIVERSAL, false, OCTET_STRING).map_err(|x| format!("{what}: {x}"))?;
            let refresh_deletes = match e.next_if(UNIVERSAL, false, BOOLEAN).map_err(|x| format!("{what}: {x}"))? {
                Some(b) => boolean(&b, what)?,
                None => false,
            };
            let set = e.next().map_err(|x| format!("{what}: {x}"))?;
            if !set.is(UNIVERSAL, true, SET) {
                return Err(format!("{what}: syncUUIDs is not a SET"));
            }
            e.end(what)?;
            let mut uuids = Vec::new();
            let mut members = Elements::new(set.body);
            while !members.is_empty() {
                let member = members.next().map_err(|x| format!("{what}: {x}"))?;
                uuids.push(uuid(&member).map_err(|x| format!("{what}: {x}"))?);
            }
            Ok(SyncInfo::IdSet { cookie: cookie.map(|c| c.body.to_vec()), refresh_deletes, uuids })
        }
        (n, _) => Err(format!("syncInfo: an unknown or malformed choice [{n}]")),
    }
}

/// IntermediateResponse ::= [APPLICATION 25] SEQUENCE { responseName [0] LDAPOID OPTIONAL, responseValue [1]
/// OCTET STRING OPTIONAL }, as ldap3 hands it over (already split into elements): it must be a syncInfo.
fn parse_intermediate(tag: StructureTag) -> Result<SyncInfo, String> {
    let PL::C(parts) = tag.payload else {
        return Err("an intermediate message that is not a sequence".into());
    };
    let mut name = None;
    let mut value = None;
    for part in parts {
        match (part.class, part.id, part.payload) {
            (TagClass::Context, 0, PL::P(v)) if name.is_none() && value.is_none() => name = Some(v),
            (TagClass::Context, 1, PL::P(v)) if value.is_none() => value = Some(v),
            _ => return Err("an intermediate message with an unexpected element".into()),
        }
    }
    match name.as_deref() {
        Some(oid) if oid == SYNC_INFO_OID.as_bytes() => {}
        Some(oid) => {
            return Err(format!("an intermediate message {:?}, not syncInfo", String::from_utf8_lossy(oid)));
        }
        None => return Err("an intermediate message without a name".into()),
    }
    parse_sync_info(&value.ok_or("a syncInfo message without a value")?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ldap3::controls::Control;

    /// One BER element: `tag`, a definite length (short or long form), `body`.
    fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        match body.len() {
            n if n < 0x80 => out.push(n as u8),
            n if n < 0x100 => out.extend([0x81, n as u8]),
            n => out.extend([0x82, (n >> 8) as u8, n as u8]),
        }
        out.extend_from_slice(body);
        out
    }

    fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
        parts.concat()
    }

    const SEQ: u8 = 0x30;
    const SET_TAG: u8 = 0x31;
    const OCTETS: u8 = 0x04;
    const BOOL: u8 = 0x01;
    const ENUM: u8 = 0x0a;
    const COOKIE: &[u8] = b"rid=000,csn=20261202101717.569380Z#000000#000#000000";

    fn u(n: u8) -> EntryUuid {
        EntryUuid([n; 16])
    }

    fn state_value(state: u8, uuid: &[u8], cookie: Option<&[u8]>) -> Vec<u8> {
        let mut parts = vec![tlv(ENUM, &[state]), tlv(OCTETS, uuid)];
        parts.extend(cookie.map(|c| tlv(OCTETS, c)));
        tlv(SEQ, &cat(&parts))
    }

    #[test]
    fn entry_uuids_read_and_show_the_rfc_4122_text_form() {
        let text = "2b10f328-8285-1041-8135-b56db40b858c";
        let uuid = EntryUuid::parse(text).unwrap();
        assert_eq!(uuid.to_string(), text);
        assert_eq!(EntryUuid::parse(&text.to_uppercase()), Some(uuid));
        for bad in [
            "",
            "2b10f328828510418135b56db40b858c",
            "2b10f328-8285-1041-8135-b56db40b858",
            "2b10f328-8285-1041-8135-b56db40b858g",
        ] {
            assert_eq!(EntryUuid::parse(bad), None, "{bad:?}");
        }
        assert_eq!(EntryUuid::from_octets(&[1; 15]), None);
        assert_eq!(EntryUuid::from_octets(&[1; 16]), Some(u(1)));
    }

    #[test]
    fn sync_state_is_read_with_and_without_a_cookie() {
        assert_eq!(
            parse_sync_state(&state_value(1, &[7; 16], Some(COOKIE))),
            Ok(SyncState { state: State::Add, uuid: u(7), cookie: Some(COOKIE.to_vec()) })
        );
        for (n, state) in [(0, State::Present), (2, State::Modify), (3, State::Delete)] {
            assert_eq!(
                parse_sync_state(&state_value(n, &[7; 16], None)),
                Ok(SyncState { state, uuid: u(7), cookie: None })
            );
        }
    }

    #[test]
    fn malformed_sync_states_are_errors() {
        let good = state_value(1, &[7; 16], Some(COOKIE));
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", vec![]),
            ("truncated", good[..good.len() - 3].to_vec()),
            ("only a tag", vec![SEQ]),
            ("not a sequence", tlv(0x31, &good[2..])),
            ("trailing data", cat(&[good.clone(), vec![0]])),
            ("an empty sequence", tlv(SEQ, &[])),
            ("no uuid", tlv(SEQ, &tlv(ENUM, &[1]))),
            ("the state an INTEGER", tlv(SEQ, &cat(&[tlv(0x02, &[1]), tlv(OCTETS, &[7; 16])]))),
            ("an unknown state", state_value(4, &[7; 16], None)),
            ("a two-octet state", tlv(SEQ, &cat(&[tlv(ENUM, &[0, 1]), tlv(OCTETS, &[7; 16])]))),
            ("a short uuid", state_value(1, &[7; 15], None)),
            ("a long uuid", state_value(1, &[7; 17], None)),
            ("the uuid constructed", tlv(SEQ, &cat(&[tlv(ENUM, &[1]), tlv(0x24, &tlv(OCTETS, &[7; 16]))]))),
            ("an extra element", tlv(SEQ, &cat(&[good[2..].to_vec(), tlv(BOOL, &[0xff])]))),
            ("an indefinite length", vec![SEQ, 0x80, 0, 0]),
            ("a tag number above 30", vec![0x3f, 0x20, 0]),
            ("a length of five octets", vec![SEQ, 0x85, 0, 0, 0, 0, 1, 0]),
            ("a length past the end", vec![SEQ, 0x84, 0xff, 0xff, 0xff, 0xff, 0]),
        ];
        for (what, bytes) in cases {
            assert!(parse_sync_state(&bytes).is_err(), "{what}: {:?}", parse_sync_state(&bytes));
        }
    }

    #[test]
    fn sync_done_takes_its_defaults_and_refuses_malformed_values() {
        assert_eq!(parse_sync_done(&tlv(SEQ, &[])), Ok(SyncDone { cookie: None, refresh_deletes: false }));
        assert_eq!(
            parse_sync_done(&tlv(SEQ, &cat(&[tlv(OCTETS, COOKIE), tlv(BOOL, &[0xff])]))),
            Ok(SyncDone { cookie: Some(COOKIE.to_vec()), refresh_deletes: true })
        );
        assert_eq!(parse_sync_done(&tlv(SEQ, &tlv(BOOL, &[0]))), Ok(SyncDone { cookie: None, refresh_deletes: false }));
        for (what, bytes) in [
            ("empty", vec![]),
            ("out of order", tlv(SEQ, &cat(&[tlv(BOOL, &[0xff]), tlv(OCTETS, COOKIE)]))),
            ("a two-octet boolean", tlv(SEQ, &tlv(BOOL, &[0, 0]))),
            ("an empty boolean", tlv(SEQ, &tlv(BOOL, &[]))),
            ("an enumerated", tlv(SEQ, &tlv(ENUM, &[1]))),
            ("truncated", tlv(SEQ, &tlv(OCTETS, COOKIE))[..10].to_vec()),
            ("a set", tlv(SET_TAG, &[])),
        ] {
            assert!(parse_sync_done(&bytes).is_err(), "{what}");
        }
    }

    #[test]
    fn sync_info_reads_each_choice_with_its_defaults() {
        assert_eq!(parse_sync_info(&tlv(0x80, COOKIE)), Ok(SyncInfo::NewCookie(COOKIE.to_vec())));
        assert_eq!(parse_sync_info(&tlv(0xa1, &[])), Ok(SyncInfo::RefreshDelete { cookie: None, done: true }));
        assert_eq!(
            parse_sync_info(&tlv(0xa2, &cat(&[tlv(OCTETS, COOKIE), tlv(BOOL, &[0])]))),
            Ok(SyncInfo::RefreshPresent { cookie: Some(COOKIE.to_vec()), done: false })
        );
        let uuids = cat(&[tlv(OCTETS, &[1; 16]), tlv(OCTETS, &[2; 16])]);
        assert_eq!(
            parse_sync_info(&tlv(0xa3, &cat(&[tlv(OCTETS, COOKIE), tlv(BOOL, &[0xff]), tlv(SET_TAG, &uuids)]))),
            Ok(SyncInfo::IdSet { cookie: Some(COOKIE.to_vec()), refresh_deletes: true, uuids: vec![u(1), u(2)] })
        );
        assert_eq!(
            parse_sync_info(&tlv(0xa3, &tlv(SET_TAG, &[]))),
            Ok(SyncInfo::IdSet { cookie: None, refresh_deletes: false, uuids: vec![] })
        );
    }

    #[test]
    fn malformed_sync_infos_are_errors() {
        let set = tlv(SET_TAG, &tlv(OCTETS, &[1; 16]));
        for (what, bytes) in [
            ("empty", vec![]),
            ("a universal sequence", tlv(SEQ, &[])),
            ("an unknown choice", tlv(0xa4, &[])),
            ("newcookie constructed", tlv(0xa0, &tlv(OCTETS, COOKIE))),
            ("refreshDelete primitive", tlv(0x81, &[])),
            ("trailing data", cat(&[tlv(0x80, COOKIE), vec![0]])),
            ("a syncIdSet without its set", tlv(0xa3, &tlv(BOOL, &[0xff]))),
            ("a syncIdSet with a sequence", tlv(0xa3, &tlv(SEQ, &tlv(OCTETS, &[1; 16])))),
            ("a syncIdSet with a short uuid", tlv(0xa3, &tlv(SET_TAG, &tlv(OCTETS, &[1; 15])))),
            ("a syncIdSet with a truncated uuid", tlv(0xa3, &tlv(SET_TAG, &tlv(OCTETS, &[1; 16])[..10]))),
            ("a syncIdSet with data after the set", tlv(0xa3, &cat(&[set.clone(), tlv(OCTETS, COOKIE)]))),
            ("a refreshPresent with a long boolean", tlv(0xa2, &tlv(BOOL, &[0, 0]))),
            ("a refreshPresent with two cookies", tlv(0xa2, &cat(&[tlv(OCTETS, COOKIE), tlv(OCTETS, COOKIE)]))),
        ] {
            assert!(parse_sync_info(&bytes).is_err(), "{what}: {:?}", parse_sync_info(&bytes));
        }
    }

    fn intermediate(parts: Vec<StructureTag>) -> StructureTag {
        StructureTag { class: TagClass::Application, id: 25, payload: PL::C(parts) }
    }

    fn context(id: u64, bytes: &[u8]) -> StructureTag {
        StructureTag { class: TagClass::Context, id, payload: PL::P(bytes.to_vec()) }
    }

    #[test]
    fn intermediate_messages_must_be_sync_info() {
        let value = tlv(0x80, COOKIE);
        assert_eq!(
            parse_intermediate(intermediate(vec![context(0, SYNC_INFO_OID.as_bytes()), context(1, &value)])),
            Ok(SyncInfo::NewCookie(COOKIE.to_vec()))
        );
        for (what, tag) in [
            ("another oid", intermediate(vec![context(0, b"1.3.6.1.4.1.1466.20036"), context(1, &value)])),
            ("no name", intermediate(vec![context(1, &value)])),
            ("no value", intermediate(vec![context(0, SYNC_INFO_OID.as_bytes())])),
            ("value before name", intermediate(vec![context(1, &value), context(0, SYNC_INFO_OID.as_bytes())])),
            ("a primitive message", StructureTag { class: TagClass::Application, id: 25, payload: PL::P(vec![]) }),
            ("a malformed value", intermediate(vec![context(0, SYNC_INFO_OID.as_bytes()), context(1, &[0x80])])),
        ] {
            assert!(parse_intermediate(tag).is_err(), "{what}");
        }
    }

    fn octets(bytes: &[u8]) -> StructureTag {
        StructureTag { class: TagClass::Universal, id: 4, payload: PL::P(bytes.to_vec()) }
    }

    /// A search result entry `dn` (no attributes) with these controls.
    fn entry(dn: &str, controls: Vec<(&str, Vec<u8>)>) -> ldap3::ResultEntry {
        let tag = StructureTag {
            class: TagClass::Application,
            id: 4,
            payload: PL::C(vec![
                octets(dn.as_bytes()),
                StructureTag { class: TagClass::Universal, id: 16, payload: PL::C(vec![]) },
            ]),
        };
        let mut e = ldap3::ResultEntry::new(tag);
        e.1 = controls
            .into_iter()
            .map(|(oid, val)| Control(None, RawControl { ctype: oid.into(), crit: false, val: Some(val) }))
            .collect();
        e
    }

    fn info(value: Vec<u8>) -> ldap3::ResultEntry {
        ldap3::ResultEntry::new(intermediate(vec![context(0, SYNC_INFO_OID.as_bytes()), context(1, &value)]))
    }

    fn done(refresh_deletes: bool, cookie: Option<&[u8]>) -> SyncDone {
        SyncDone { cookie: cookie.map(<[u8]>::to_vec), refresh_deletes }
    }

    fn id_set(refresh_deletes: bool, uuids: &[EntryUuid]) -> Vec<u8> {
        let members: Vec<Vec<u8>> = uuids.iter().map(|u| tlv(OCTETS, &u.0)).collect();
        tlv(0xa3, &cat(&[tlv(BOOL, &[if refresh_deletes { 0xff } else { 0 }]), tlv(SET_TAG, &cat(&members))]))
    }

    #[test]
    fn a_delete_phase_names_what_is_gone_and_nothing_else() {
        // As slapd with a session log answers: changed entries as adds, deletions in a syncIdSet.
        let mut c = Collector::new(Some(COOKIE), |e: ChangedEntry| e);
        c.message(entry("uid=dave,dc=x", vec![(SYNC_STATE_OID, state_value(1, &u(4).0, None))])).unwrap();
        c.message(info(id_set(true, &[u(2)]))).unwrap();
        c.message(entry("uid=old,dc=x", vec![(SYNC_STATE_OID, state_value(3, &u(5).0, None))])).unwrap();
        let read = c.finish(done(true, Some(b"rid=000,csn=new")));
        assert_eq!(read.refresh, Refresh::Deletes);
        assert_eq!(read.cookie.as_deref(), Some(&b"rid=000,csn=new"[..]));
        assert_eq!(
            read.changed.iter().map(|e| (e.uuid, e.dn.as_str(), e.kind)).collect::<Vec<_>>(),
            [(u(4), "uid=dave,dc=x", ChangeKind::Add)]
        );
        assert_eq!(read.deleted, [u(2), u(5)]);
        // Kept 1, 2, 3, 5: only the named ones are gone.
        assert_eq!(read.gone([u(1), u(2), u(3), u(5)]), [u(2), u(5)]);
    }

    #[test]
    fn each_changed_entry_is_kept_in_the_callers_form_as_it_arrives() {
        /// What a caller keeps: the UUID and DN, and how many entries had been made before it.
        struct Small(EntryUuid, String, usize);
        impl Changed for Small {
            fn uuid(&self) -> EntryUuid {
                self.0
            }
        }
        let mut made = 0;
        let mut c = Collector::new(Some(COOKIE), |e: ChangedEntry| {
            made += 1;
            Small(e.uuid, e.dn, made)
        });
        c.message(entry("uid=zed,dc=x", vec![(SYNC_STATE_OID, state_value(1, &u(4).0, None))])).unwrap();
        c.message(entry("uid=gone,dc=x", vec![(SYNC_STATE_OID, state_value(1, &u(5).0, None))])).unwrap();
        c.message(entry("uid=amy,dc=x", vec![(SYNC_STATE_OID, state_value(2, &u(6).0, None))])).unwrap();
        // Deleted after it came: its kept form is dropped, as the entry would be.
        c.message(entry("uid=gone,dc=x", vec![(SYNC_STATE_OID, state_value(3, &u(5).0, None))])).unwrap();
        let read = c.finish(done(true, None));
        let mut got: Vec<(EntryUuid, &str, usize)> = read.changed.iter().map(|s| (s.0, s.1.as_str(), s.2)).collect();
        got.sort_unstable();
        assert_eq!(got, [(u(4), "uid=zed,dc=x", 1), (u(6), "uid=amy,dc=x", 3)], "made on arrival");
        assert_eq!(read.deleted, [u(5)]);
        assert_eq!(read.gone([u(4), u(5), u(7)]), [u(5)]);
    }

    #[test]
    fn a_present_phase_makes_every_kept_entry_not_named_gone() {
        // As slapd without a session log answers: a present syncIdSet, changed entries, syncDone FALSE.
        let mut c = Collector::new(Some(COOKIE), |e: ChangedEntry| e);
        c.message(info(id_set(false, &[u(1), u(4)]))).unwrap();
        c.message(entry("uid=x,dc=x", vec![(SYNC_STATE_OID, state_value(0, &u(3).0, None))])).unwrap();
        c.message(entry("uid=dave,dc=x", vec![(SYNC_STATE_OID, state_value(2, &u(4).0, None))])).unwrap();
        c.message(entry("uid=new,dc=x", vec![(SYNC_STATE_OID, state_value(1, &u(6).0, None))])).unwrap();
        let read = c.finish(done(false, None));
        assert_eq!(read.refresh, Refresh::Present([u(1), u(3), u(4)].into()));
        assert_eq!(read.cookie.as_deref(), Some(COOKIE), "no new cookie: the old one is kept");
        assert_eq!(read.deleted, []);
        // Kept 1..=5: 2 and 5 were not declared present nor changed.
        assert_eq!(read.gone([u(1), u(2), u(3), u(4), u(5)]), [u(2), u(5)]);
    }

    #[test]
    fn a_present_phase_is_seen_from_its_markers_even_when_sync_done_says_deletes() {
        // RFC 4533 3.3.1: a present phase may be followed by a delete phase.
        let mut c = Collector::new(Some(COOKIE), |e: ChangedEntry| e);
        c.message(info(tlv(0xa2, &tlv(BOOL, &[0])))).unwrap();
        c.message(info(id_set(true, &[u(1)]))).unwrap();
        let read = c.finish(done(true, None));
        assert_eq!(read.refresh, Refresh::Present(HashSet::new()));
        assert_eq!(read.gone([u(1), u(2)]), [u(1), u(2)]);
    }

    #[test]
    fn a_read_without_a_cookie_is_the_whole_content() {
        // slapd ends it with refreshDeletes TRUE: still, what it did not send does not exist.
        let mut c = Collector::new(None, |e: ChangedEntry| e);
        c.message(entry("uid=a,dc=x", vec![(SYNC_STATE_OID, state_value(1, &u(1).0, None))])).unwrap();
        let read = c.finish(done(true, Some(COOKIE)));
        assert_eq!(read.refresh, Refresh::Present(HashSet::new()));
        assert_eq!(read.gone([u(1), u(2)]), [u(2)]);
        assert_eq!(read.cookie.as_deref(), Some(COOKIE));
    }

    #[test]
    fn the_last_word_on_an_entry_wins() {
        let mut c = Collector::new(Some(COOKIE), |e: ChangedEntry| e);
        c.message(entry("uid=a,dc=x", vec![(SYNC_STATE_OID, state_value(1, &u(1).0, Some(b"c1")))])).unwrap();
        c.message(info(id_set(true, &[u(1)]))).unwrap();
        c.message(entry("uid=b,dc=x", vec![(SYNC_STATE_OID, state_value(3, &u(2).0, None))])).unwrap();
        c.message(entry("uid=b2,dc=x", vec![(SYNC_STATE_OID, state_value(1, &u(2).0, None))])).unwrap();
        c.message(info(tlv(0x80, b"c2"))).unwrap();
        let read = c.finish(done(true, None));
        assert_eq!(read.deleted, [u(1)]);
        assert_eq!(read.changed.iter().map(|e| e.uuid).collect::<Vec<_>>(), [u(2)]);
        assert_eq!(read.cookie.as_deref(), Some(&b"c2"[..]));
    }

    #[test]
    fn entries_without_a_good_sync_state_are_errors() {
        let mut c = Collector::new(None, |e: ChangedEntry| e);
        let err = |r: Result<(), SyncError>| match r {
            Err(SyncError::Malformed(m)) => m,
            other => panic!("expected Malformed, got {other:?}"),
        };
        let m = err(c.message(entry("uid=a,dc=x", vec![])));
        assert!(m.contains("uid=a,dc=x") && m.contains("no syncState"), "{m}");
        let m = err(c.message(entry("uid=a,dc=x", vec![(SYNC_STATE_OID, state_value(1, &[1; 15], None))])));
        assert!(m.contains("16"), "{m}");
        let two =
            vec![(SYNC_STATE_OID, state_value(1, &[1; 16], None)), (SYNC_STATE_OID, state_value(1, &[1; 16], None))];
        assert!(err(c.message(entry("uid=a,dc=x", two))).contains("two syncState"));
        let mut broken = ldap3::ResultEntry::new(octets(b"x"));
        broken.0.class = TagClass::Application;
        broken.0.id = 4;
        assert!(err(c.message(broken)).contains("not a search result entry"));
        let other =
            ldap3::ResultEntry::new(StructureTag { class: TagClass::Application, id: 7, payload: PL::C(vec![]) });
        assert!(err(c.message(other)).contains("tag 7"));
        let reference = ldap3::ResultEntry::new(StructureTag {
            class: TagClass::Application,
            id: 19,
            payload: PL::C(vec![octets(b"ldap://elsewhere/")]),
        });
        assert!(matches!(c.message(reference), Err(SyncError::Ldap { .. })));
    }

    #[test]
    fn the_result_needs_exactly_one_good_sync_done() {
        let good = RawControl { ctype: SYNC_DONE_OID.into(), crit: false, val: Some(tlv(SEQ, &[])) };
        let other = RawControl { ctype: "1.2.840.113556.1.4.319".into(), crit: false, val: Some(vec![]) };
        assert_eq!(sync_done(&[&other, &good]), Ok(done(false, None)));
        assert!(matches!(sync_done(&[&other]), Err(SyncError::Malformed(m)) if m.contains("without a syncDone")));
        assert!(matches!(sync_done(&[&good, &good]), Err(SyncError::Malformed(m)) if m.contains("two")));
        let empty = RawControl { val: None, ..good.clone() };
        assert!(matches!(sync_done(&[&empty]), Err(SyncError::Malformed(m)) if m.contains("syncDone")));
    }

    #[test]
    fn result_codes_say_what_to_do_next() {
        assert_eq!(result_error(0, "", "dc=x", true), None);
        let refresh = result_error(4096, "sync refresh required", "dc=x", true).unwrap();
        assert_eq!(refresh, SyncError::RefreshRequired { text: "sync refresh required".into() });
        assert!(refresh.needs_full_read());
        let unsupported = result_error(12, "critical extension is not recognized", "dc=x", false).unwrap();
        assert!(
            matches!(&unsupported, SyncError::Unsupported { reason } if reason.contains("syncprov") && reason.contains("dc=x"))
        );
        assert!(!unsupported.needs_full_read());
        let refused = result_error(53, "consumer state is newer than provider!", "dc=x", true).unwrap();
        assert!(matches!(refused, SyncError::CookieRefused { .. }));
        // Without a cookie, 53 is not about one: a full read would meet it again.
        assert!(matches!(result_error(53, "", "dc=x", false), Some(SyncError::Ldap { code: Some(53), .. })));
        assert!(
            matches!(result_error(4, "", "dc=x", false), Some(SyncError::Ldap { code: Some(4), reason }) if reason.contains("size=unlimited"))
        );
        assert!(matches!(result_error(50, "", "dc=x", true), Some(SyncError::Ldap { code: Some(50), .. })));
    }

    #[test]
    fn only_cookies_of_slapd_s_shape_are_sent() {
        for good in [
            &b"rid=000,csn=20261202101717.569380Z#000000#000#000000"[..],
            b"rid=12,sid=001,csn=20261202101717.569380Z#000000#001#000000;20261202101717.569380Z#00000a#002#000000",
            b"rid=000,csn=20261202101717.610409Z#000000#000#000000,delcsn=20261202101717.630692Z#000000#000#000000",
        ] {
            assert_eq!(check_cookie(good), Ok(()), "{}", String::from_utf8_lossy(good));
        }
        for bad in [
            &b""[..],
            b"rid=000,csn=garbage",
            b"rid=000",
            b"csn=20261202101717.569380Z#000000#000#000000",
            b"rid=1000,csn=20261202101717.569380Z#000000#000#000000",
            b"rid=000,csn=20261302101717.569380Z#000000#000#000000",
            b"rid=000,csn=20261202101717.569380Z#000000#000#00000",
            b"rid=000,csn=20261202101717.569380Z#000000#000#000000;",
            b"rid=000,csn=20261202101717.569380Z#000000#000#000000,",
            b"rid=000,foo=1,csn=20261202101717.569380Z#000000#000#000000",
            b"rid=000,delcsn=20261202101717.630692Z#000000#000#000000",
            b"rid=000,csn=20261202101717.569380Z#000000#000#00000\xff",
        ] {
            assert!(check_cookie(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    proptest::proptest! {
        #[test]
        fn no_bytes_make_a_parser_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let _ = parse_sync_state(&bytes);
            let _ = parse_sync_done(&bytes);
            let _ = parse_sync_info(&bytes);
            let _ = check_cookie(&bytes);
        }

        #[test]
        fn no_corruption_of_a_good_value_makes_a_parser_panic(at in 0usize..64, byte in proptest::prelude::any::<u8>(), cut in 0usize..64) {
            let uuids = cat(&[tlv(OCTETS, &[1; 16]), tlv(OCTETS, &[2; 16])]);
            for good in [
                state_value(1, &[7; 16], Some(COOKIE)),
                tlv(SEQ, &cat(&[tlv(OCTETS, COOKIE), tlv(BOOL, &[0xff])])),
                tlv(0xa3, &cat(&[tlv(OCTETS, COOKIE), tlv(BOOL, &[0xff]), tlv(SET_TAG, &uuids)])),
            ] {
                let mut bad = good.clone();
                let i = at % bad.len();
                bad[i] = byte;
                bad.truncate(bad.len() - cut % bad.len());
                let _ = parse_sync_state(&bad);
                let _ = parse_sync_done(&bad);
                let _ = parse_sync_info(&bad);
            }
        }
    }
}
