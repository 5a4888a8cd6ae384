//! Active Directory's DirSync (control 1.2.840.113556.1.4.841): one read of what changed in a naming context
//! since a cookie, at the protocol level. It owns the control's encoding, the guarded parse of the server's
//! answer, the more-data loop, and the shape of what the server said ([`Changes`]): changed objects keyed by
//! `objectGUID` with their attributes and, for `member`, the values added and removed; deleted objects by
//! `objectGUID`; the last cookie. It must not interpret the changes (the kept directory model does that) nor
//! decide when a full read is due.
//!
//! The request: base the naming-context root, subtree, the caller's filter (`objectClass`, not
//! `objectCategory`: tombstones lose it), `objectGUID`, `isDeleted` and `name` always asked for besides the
//! caller's attributes. The DirSync control is critical, its value `SEQUENCE { flags INTEGER, maxBytes
//! INTEGER, cookie OCTET STRING }`, flags the incremental-values flag 0x80000000 written as the 4-byte
//! negative INTEGER (`02 04 80 00 00 00`): an encoder that takes it as unsigned writes 5 bytes, which Active
//! Directory is reported to refuse. The extended-DN control (1.2.840.113556.1.4.529, no value: hex GUIDs) goes
//! with it, so each `member` value names its member's `objectGUID`. The answer's control is `SEQUENCE {
//! moreResults INTEGER, unused INTEGER, cookie OCTET STRING }`; while `moreResults` is not 0 the search is sent
//! again with the new cookie, at most [`MAX_ROUNDS`] times. The loop is `Reader`, which takes each answer
//! and does no I/O.
//!
//! What Samba 4.17 does (observed against a real Samba AD DC, `tests/ad_changes.rs`):
//! - The cookie is a 108-byte blob starting with `MSDS`; it comes with every answer, also when nothing
//!   changed (0 entries), and moves on with each change. Reading again from an older cookie gives the same
//!   changes again (a run that crashed before saving its cookie replays).
//! - A first read (no cookie) returns every object the filter matches, built-in ones included, in one round (1,647
//!   objects, 1,605 of them the tests' own): Samba never sets `moreResults`.
//! - With incremental values, a group's members come as `member;range=1-1` (values added) even on a first
//!   read, never as a plain `member`; a removal as `member;range=0-0`. A plain `member` (the whole set, as
//!   Active Directory may send it) is kept in [`ChangedObject::members`]. A 1,600-member group's first read
//!   carries all 1,600 values at once: no range retrieval, no 1,500-value cap.
//! - A changed object carries only the attributes that changed (and `instanceType`), not every attribute
//!   asked for: a disabled user comes with its new `userAccountControl` and no `sAMAccountName`. An object
//!   new since the cookie comes with every attribute asked for, a new group's members as values added; those
//!   members do not come themselves (their `memberOf` is a back link, not a change).
//! - Without the extended-DN control, `member` values are plain DNs; with it they are
//!   `<GUID=32 hex digits, the objectGUID's bytes in order>;<SID=hex>;DN`, and so is the entry's own DN.
//! - A deleted object comes as its tombstone, without Show Deleted (1.2.840.113556.1.4.417): `isDeleted:
//!   TRUE`, the same `objectGUID`, its DN under `CN=Deleted Objects` with `\0ADEL:<guid>` in its RDN. (Active
//!   Directory documents the same: a DirSync search need not ask for deleted objects, which it always includes;
//!   Platform SDK, "Retrieving Deleted Objects".)
//! - A rename or a move is reported only when `name` is asked for (hence always): the object with its new DN,
//!   `name` and `parentGUID`. Without `name` Samba says nothing at all about it.
//! - A group is not reported when a member is renamed, moved or deleted (its `member` links follow the
//!   member, or go with it): whoever applies the changes keys members by objectGUID, and drops a deleted
//!   objectGUID from every group itself.
//! - An account without the right: insufficientAccessRights (50), "error in module dirsync: insufficient
//!   access rights during LDB_SEARCH". A base that is not a naming-context root: also 50, "dN is not one of
//!   the naming context": told apart by that text. The object-security flag (0x1) lets such an account read
//!   (objects it may read only); this module does not use it.
//! - A cookie it cannot read: unavailableCriticalExtension (12), "Unable to unmarshall cookie".
//! - A cookie taken with a filter nothing matches ([`watermark`]: no object read) serves a later read with
//!   another filter: it returns only what changed after it (Microsoft documents the filter as applied to the
//!   objects changed since the cookie, so Active Directory should do the same; not verified here).
//!
//! Microsoft documents the attribute list as a filter too (an object is returned only when an attribute
//! asked for changed), which is why `name` is always asked for. It also documents that a cookie from one
//! domain controller may be used on another, which may then answer with everything, as a first read does.
//! - Samba also accepts the flags written as 5 bytes (`02 05 00 80 00 00 00`): only the unit tests pin the
//!   4-byte form.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use ldap3::controls::RawControl;
use ldap3::{Ldap, LdapError, Scope};

use super::syncrepl::SyncError;
use crate::ldap::entry;
use crate::ldap::error::rc::{INSUFFICIENT_ACCESS, UNAVAILABLE_CRITICAL_EXTENSION};
use crate::ldap::error::{Cause, result_reason};

/// DirSync's control (request and response).
pub const DIRSYNC_OID: &str = "1.2.840.113556.1.4.841";

/// The extended-DN control: DNs (the entry's and each `member` value) come as `<GUID=hex>;<SID=hex>;DN`.
pub const EXTENDED_DN_OID: &str = "1.2.840.113556.1.4.529";

/// `LDAP_DIRSYNC_INCREMENTAL_VALUES` (0x80000000): linked attributes (`member`) come as the values added and
/// removed, not the whole set. As a BER INTEGER it is negative: -2147483648.
const INCREMENTAL_VALUES: i32 = i32::MIN;

/// What the server may put in one round. Active Directory counts it loosely; Samba ignores it.
const MAX_BYTES: i32 = 1 << 20;

/// How many rounds (more-data answers followed) one read takes at most before it gives up.
pub const MAX_ROUNDS: usize = 10_000;

/// The attributes every read asks for besides the caller's: the key, the tombstone mark, and `name`, without
/// which Samba does not report a rename or a move at all.
const ALWAYS: [&str; 3] = ["objectGUID", "isDeleted", "name"];

/// A filter no object matches (every object has an objectClass).
const NOTHING: &str = "(!(objectClass=*))";

/// An `objectGUID`: the 16 bytes as the directory stores them.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// The GUID in Microsoft's string form (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`: the first three fields
    /// little-endian), as `<GUID=...>` shows it with the extended-DN control's string flag.
    pub fn to_microsoft_string(&self) -> String {
        let b = &self.0;
        format!(
            "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
        )
    }

    /// Reads either form `<GUID=...>` may take: 32 hex digits (the bytes in order) or Microsoft's string form.
    pub fn parse(text: &str) -> Option<Guid> {
        let hex: Vec<u8> = text.bytes().filter(|b| *b != b'-').collect();
        if hex.len() != 32 || !hex.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        let dashed = text.len() == 36;
        if dashed && [8, 13, 18, 23].iter().any(|&i| text.as_bytes()[i] != b'-') {
            return None;
        }
        if !dashed && text.len() != 32 {
            return None;
        }
        let mut bytes = [0u8; 16];
        for (i, pair) in hex.chunks(2).enumerate() {
            let s = std::str::from_utf8(pair).ok()?;
            bytes[i] = u8::from_str_radix(s, 16).ok()?;
        }
        if dashed {
            bytes[0..4].reverse();
            bytes[4..6].reverse();
            bytes[6..8].reverse();
        }
        Some(Guid(bytes))
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_microsoft_string())
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_microsoft_string())
    }
}

/// A `member` value: the member's DN, and its `objectGUID` when the value came in extended form
/// (`<GUID=...>;<SID=...>;CN=...`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberRef {
    pub guid: Option<Guid>,
    pub dn: String,
}

impl MemberRef {
    /// Reads a `member` value, extended (`<GUID=...>;<SID=...>;DN`) or plain. `None` when an extended part
    /// is not closed or its GUID cannot be read.
    pub fn parse(value: &str) -> Option<MemberRef> {
        let mut rest = value;
        let mut guid = None;
        while let Some(after) = rest.strip_prefix('<') {
            let end = after.find('>')?;
            let part = &after[..end];
            if let Some((key, text)) = part.split_once('=')
                && key.eq_ignore_ascii_case("GUID")
            {
                guid = Some(Guid::parse(text)?);
            }
            rest = &after[end + 1..];
            rest = rest.strip_prefix(';').unwrap_or(rest);
        }
        Some(MemberRef { guid, dn: rest.to_string() })
    }
}

/// An object that changed since the cookie (or, on a first read, every object): its `objectGUID`, its DN now,
/// the attributes the server sent (names lower-cased), and its member changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangedObject {
    pub guid: Guid,
    pub dn: String,
    /// The attributes sent (only those that changed, but every one asked for on an object new since the
    /// cookie), each with all its values, by lower-cased name; `objectGUID`, `isDeleted` and `member` are not
    /// repeated here.
    pub attrs: BTreeMap<String, Vec<String>>,
    /// Attributes whose values are not UTF-8, by lower-cased name.
    pub bin_attrs: BTreeMap<String, Vec<Vec<u8>>>,
    /// `member` sent whole (a plain `member` attribute): the group's complete member set, which replaces
    /// what was known. `None` when the server sent no plain `member`.
    pub members: Option<Vec<MemberRef>>,
    /// `member;range=1-1`: values added since the cookie.
    pub member_added: Vec<MemberRef>,
    /// `member;range=0-0`: values removed since the cookie.
    pub member_removed: Vec<MemberRef>,
}

/// What one DirSync read said.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// The last cookie the server sent: the next read starts from it.
    pub cookie: Vec<u8>,
    /// Objects changed (or, on a first read, all of them), in the order the server sent them; an object sent
    /// in two rounds appears twice, the later one newer. None of them is in `deleted`.
    pub changed: Vec<ChangedObject>,
    /// Objects deleted (tombstones, `isDeleted: TRUE`), by `objectGUID`, each once. Possibly objects never
    /// seen: one added and deleted since the cookie comes as its tombstone only.
    pub deleted: Vec<Guid>,
    /// How many searches the read took (1 unless the server said more data was waiting).
    pub rounds: usize,
}

/// Why a DirSync read failed. A failed read is never "no changes".
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The bind account lacks the right to read changes.
    #[error(
        "the bind account may not read changes with DirSync on {naming_context}: {reason}; grant it \
         \"Replicating Directory Changes\" on the domain (or read the directory in full)"
    )]
    NoRight { naming_context: String, reason: String },
    /// The server does not do DirSync here (not Active Directory, or not a naming-context root).
    #[error("the directory does not support DirSync on {naming_context}: {reason}")]
    Unsupported { naming_context: String, reason: String },
    /// The server's answer is not what DirSync defines.
    #[error("the directory's DirSync answer is malformed: {0}")]
    Malformed(String),
    /// The server said more data was waiting more times than any directory needs.
    #[error("the directory still had more DirSync data after {0} rounds")]
    TooManyRounds(usize),
    /// The server refused the cookie (damaged, or from another domain): a full read is due, then a read
    /// without a cookie.
    #[error("the directory refused the DirSync cookie for {naming_context}: {reason}")]
    CookieRefused { naming_context: String, reason: String },
    /// The cookie came from another domain controller, or from this one before a restore (its database's
    /// `invocationId` changed): a full read is due, then a read without a cookie.
    #[error(
        "the DirSync cookie of the last read was given by {was}; the directory now answers as {now}: a full read is \
         due"
    )]
    ServerChanged { was: String, now: String },
    /// The search failed with another result code.
    #[error("the DirSync read of {naming_context} failed: {reason}")]
    Refused { naming_context: String, code: u32, reason: String },
    /// The search did not finish in time.
    #[error("the directory did not answer the DirSync read within {0:?}")]
    Timeout(Duration),
    /// The connection failed.
    #[error("the DirSync read failed: {0}")]
    Ldap(#[source] Cause),
}

/// The request control's value: `SEQUENCE { flags INTEGER, maxBytes INTEGER, cookie OCTET STRING }`.
pub fn request_value(flags: i32, max_bytes: i32, cookie: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(cookie.len() + 16);
    ber::integer(&mut body, flags);
    ber::integer(&mut body, max_bytes);
    ber::tlv(&mut body, ber::OCTET_STRING, cookie);
    let mut value = Vec::with_capacity(body.len() + 6);
    ber::tlv(&mut value, ber::SEQUENCE, &body);
    value
}

/// The request control, critical: a server that does not know it must refuse the search, not ignore it.
fn request_control(cookie: &[u8]) -> RawControl {
    RawControl {
        ctype: DIRSYNC_OID.to_string(),
        crit: true,
        val: Some(request_value(INCREMENTAL_VALUES, MAX_BYTES, cookie)),
    }
}

/// The response control's value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseControl {
    /// Not 0: more changes are waiting; ask again with `cookie`.
    pub more: bool,
    pub cookie: Vec<u8>,
}

/// Parses the response control's value, `SEQUENCE { moreResults INTEGER, unused INTEGER, cookie OCTET
/// STRING }`, naming what is wrong when it is not that.
pub fn parse_response(value: &[u8]) -> Result<ResponseControl, Error> {
    let bad = |what: &str| Error::Malformed(format!("DirSync response control: {what}"));
    let (seq, rest) = ber::read(value).map_err(|e| bad(&e))?;
    if seq.tag != ber::SEQUENCE {
        return Err(bad(&format!("expected a SEQUENCE (0x30), found tag 0x{:02x}", seq.tag)));
    }
    if !rest.is_empty() {
        return Err(bad(&format!("{} bytes after the SEQUENCE", rest.len())));
    }
    let (more, body) = ber::read(seq.content).map_err(|e| bad(&format!("moreResults: {e}")))?;
    let more = ber::as_integer(&more).map_err(|e| bad(&format!("moreResults: {e}")))?;
    let (unused, body) = ber::read(body).map_err(|e| bad(&format!("second INTEGER: {e}")))?;
    ber::as_integer(&unused).map_err(|e| bad(&format!("second INTEGER: {e}")))?;
    let (cookie, body) = ber::read(body).map_err(|e| bad(&format!("cookie: {e}")))?;
    if cookie.tag != ber::OCTET_STRING {
        return Err(bad(&format!("cookie: expected an OCTET STRING (0x04), found tag 0x{:02x}", cookie.tag)));
    }
    if !body.is_empty() {
        return Err(bad(&format!("{} bytes after the cookie", body.len())));
    }
    Ok(ResponseControl { more: more != 0, cookie: cookie.content.to_vec() })
}

/// How one search ended, as [`Reader::end`] needs it: the result code and text, and the DirSync response
/// control's value if there was one.
#[derive(Clone, Debug, Default)]
pub(crate) struct End {
    pub rc: u32,
    pub text: String,
    pub control: Option<Vec<u8>>,
}

/// What [`Reader::end`] says to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Search again with [`Reader::cookie`].
    Again,
    /// The read is complete: [`Reader::finish`].
    Done,
}

/// The more-data loop without the I/O: it is handed each search's entries as they come, then how the search
/// ended, and says whether to search again.
#[derive(Debug)]
pub(crate) struct Reader {
    naming_context: String,
    changes: Changes,
    max_rounds: usize,
}

impl Reader {
    /// A read of `naming_context` from `cookie` (none: a first read, everything).
    pub fn new(naming_context: &str, cookie: Option<&[u8]>) -> Reader {
        Reader::with_max_rounds(naming_context, cookie, MAX_ROUNDS)
    }

    pub fn with_max_rounds(naming_context: &str, cookie: Option<&[u8]>, max_rounds: usize) -> Reader {
        Reader {
            naming_context: naming_context.to_string(),
            changes: Changes { cookie: cookie.unwrap_or_default().to_vec(), ..Changes::default() },
            max_rounds,
        }
    }

    /// The cookie the next search must carry.
    pub fn cookie(&self) -> &[u8] {
        &self.changes.cookie
    }

    /// Takes one entry of the current search's answer. The later word on an object wins, so the two lists
    /// never name the same one: a deletion drops the object's earlier changes, and a change (an object
    /// restored with its objectGUID) its deletion.
    pub fn entry(&mut self, entry: ldap3::SearchEntry) -> Result<(), Error> {
        match object(entry)? {
            Object::Deleted(guid) => {
                self.changes.changed.retain(|o| o.guid != guid);
                if !self.changes.deleted.contains(&guid) {
                    self.changes.deleted.push(guid);
                }
            }
            Object::Changed(o) => {
                self.changes.deleted.retain(|g| *g != o.guid);
                self.changes.changed.push(o);
            }
        }
        Ok(())
    }

    /// Takes how the current search ended.
    pub fn end(&mut self, end: End) -> Result<Next, Error> {
        if end.rc != 0 {
            return Err(self.refusal(end.rc, &end.text));
        }
        let value = end
            .control
            .ok_or_else(|| Error::Malformed("the search succeeded without a DirSync response control".to_string()))?;
        let control = parse_response(&value)?;
        self.changes.rounds += 1;
        self.changes.cookie = control.cookie;
        if !control.more {
            return Ok(Next::Done);
        }
        if self.changes.rounds >= self.max_rounds {
            return Err(Error::TooManyRounds(self.changes.rounds));
        }
        Ok(Next::Again)
    }

    /// What the read said.
    pub fn finish(self) -> Changes {
        self.changes
    }

    /// A result code other than success, in our words. Samba answers insufficientAccessRights both to an
    /// account without the right and to a base that is not a naming-context root (its text says which), and
    /// unavailableCriticalExtension both to a server without DirSync and to a cookie it cannot read.
    fn refusal(&self, code: u32, text: &str) -> Error {
        let naming_context = self.naming_context.clone();
        let reason = result_reason(code, text);
        match code {
            INSUFFICIENT_ACCESS if text.to_ascii_lowercase().contains("naming context") => Error::Unsupported {
                naming_context,
                reason: format!("the base is not a naming-context root ({reason})"),
            },
            INSUFFICIENT_ACCESS => Error::NoRight { naming_context, reason },
            UNAVAILABLE_CRITICAL_EXTENSION if !self.changes.cookie.is_empty() => {
                Error::CookieRefused { naming_context, reason }
            }
            UNAVAILABLE_CRITICAL_EXTENSION => Error::Unsupported { naming_context, reason },
            code => Error::Refused { naming_context, code, reason },
        }
    }
}

enum Object {
    Changed(ChangedObject),
    Deleted(Guid),
}

/// Values of an attribute as bytes, whether ldap3 kept them as text or as binary.
pub(crate) fn raw_values(entry: &ldap3::SearchEntry, name: &str) -> Vec<Vec<u8>> {
    let text = entry.attrs.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).flat_map(|(_, v)| v);
    let binary = entry.bin_attrs.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).flat_map(|(_, v)| v);
    text.map(|t| t.as_bytes().to_vec()).chain(binary.cloned()).collect()
}

/// One entry of the answer: a tombstone or a changed object.
fn object(entry: ldap3::SearchEntry) -> Result<Object, Error> {
    let guid = match raw_values(&entry, "objectGUID").as_slice() {
        [one] => Guid(
            one.as_slice()
                .try_into()
                .map_err(|_| Error::Malformed(format!("{}: objectGUID has {} bytes, not 16", entry.dn, one.len())))?,
        ),
        [] => return Err(Error::Malformed(format!("{}: no objectGUID", entry.dn))),
        many => return Err(Error::Malformed(format!("{}: {} objectGUID values", entry.dn, many.len()))),
    };
    let deleted = raw_values(&entry, "isDeleted").iter().any(|v| v.eq_ignore_ascii_case(b"TRUE"));
    if deleted {
        return Ok(Object::Deleted(guid));
    }
    // With the extended-DN control the entry's own DN comes extended too.
    let dn = MemberRef::parse(&entry.dn)
        .map(|r| r.dn)
        .ok_or_else(|| Error::Malformed(format!("entry DN {:?}", entry.dn)))?;
    let mut o = ChangedObject { guid, dn, ..ChangedObject::default() };
    let member_ref = |dn: &str, v: &str| {
        MemberRef::parse(v).ok_or_else(|| Error::Malformed(format!("{dn}: member value {v:?} cannot be read")))
    };
    for (name, values) in entry.attrs {
        let lower = name.to_ascii_lowercase();
        let (base, option) = match lower.split_once(';') {
            Some((b, o)) => (b.to_string(), Some(o.to_string())),
            None => (lower.clone(), None),
        };
        match (base.as_str(), option.as_deref()) {
            ("objectguid" | "isdeleted", _) => {}
            ("member", None) => {
                let refs = values.iter().map(|v| member_ref(&entry.dn, v)).collect::<Result<Vec<_>, _>>()?;
                o.members.get_or_insert_with(Vec::new).extend(refs);
            }
            ("member", Some("range=1-1")) => {
                for v in &values {
                    o.member_added.push(member_ref(&entry.dn, v)?);
                }
            }
            ("member", Some("range=0-0")) => {
                for v in &values {
                    o.member_removed.push(member_ref(&entry.dn, v)?);
                }
            }
            ("member", Some(other)) => {
                return Err(Error::Malformed(format!("{}: member with an unknown option {other:?}", entry.dn)));
            }
            _ => {
                o.attrs.insert(lower, values);
            }
        }
    }
    for (name, values) in entry.bin_attrs {
        let lower = name.to_ascii_lowercase();
        if lower == "objectguid" || lower == "isdeleted" {
            continue;
        }
        if lower == "member" || lower.starts_with("member;") {
            return Err(Error::Malformed(format!("{}: a member value is not UTF-8", entry.dn)));
        }
        o.bin_attrs.insert(lower, values);
    }
    Ok(Object::Changed(o))
}

/// Reads what changed in `naming_context` since `cookie` (none: everything, a first read), following the
/// server's more-data answers. `filter` should select by `objectClass` (tombstones keep it). Each search
/// waits at most `timeout`.
pub async fn read(
    ldap: &mut Ldap,
    naming_context: &str,
    filter: &str,
    attrs: &[&str],
    cookie: Option<&[u8]>,
    timeout: Duration,
) -> Result<Changes, Error> {
    let mut wanted: Vec<&str> = attrs.to_vec();
    for a in ALWAYS {
        if !wanted.iter().any(|w| w.eq_ignore_ascii_case(a)) {
            wanted.push(a);
        }
    }
    let mut reader = Reader::new(naming_context, cookie);
    loop {
        let end = search(ldap, naming_context, filter, &wanted, &mut reader, timeout).await?;
        if reader.end(end)? == Next::Done {
            return Ok(reader.finish());
        }
    }
}

/// The cookie as of now, read without any object: a filter nothing matches. Taken before a full read made
/// the usual way, it lets the next read start from there (what changed during the full read comes again,
/// which applying it twice makes no worse).
pub async fn watermark(ldap: &mut Ldap, naming_context: &str, timeout: Duration) -> Result<Vec<u8>, Error> {
    let changes = read(ldap, naming_context, NOTHING, &["objectGUID"], None, timeout).await?;
    if !changes.changed.is_empty() || !changes.deleted.is_empty() {
        return Err(Error::Malformed(format!(
            "{} objects matched a filter that matches none ({NOTHING})",
            changes.changed.len() + changes.deleted.len()
        )));
    }
    Ok(changes.cookie)
}

/// Where the next DirSync read starts: the cookie, with the domain controller that gave it (its `dsServiceName`)
/// and its database (`invocationId`). A cookie is read again only where it was given: after a failover behind
/// the same URL, or a restore of the controller, the read is refused ([`Error::ServerChanged`]) and a full read
/// follows.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Position {
    pub server: String,
    pub invocation: [u8; 16],
    pub cookie: Vec<u8>,
}

impl Position {
    fn name(server: &str, invocation: [u8; 16]) -> String {
        format!("{server} (invocationId {})", Guid(invocation))
    }
}

/// [`watermark`] with the domain controller that gave it (two more searches: the root DSE and its NTDS Settings
/// object), read first.
pub async fn position(ldap: &mut Ldap, naming_context: &str, timeout: Duration) -> Result<Position, SyncError> {
    let server = super::usn::watermark(ldap, timeout).await?;
    let cookie = watermark(ldap, naming_context, timeout).await?;
    Ok(Position { server: server.server, invocation: server.invocation, cookie })
}

/// [`read`] from `since`, on the domain controller that gave it: which one answers is read first (two
/// searches), and another, or the same one restored, is refused before any change is read. The changes, and the
/// position they bring the next read to.
pub async fn read_from(
    ldap: &mut Ldap,
    naming_context: &str,
    (filter, attrs): (&str, &[&str]),
    since: &Position,
    timeout: Duration,
) -> Result<(Changes, Position), SyncError> {
    let now = super::usn::watermark(ldap, timeout).await?;
    if now.server != since.server || now.invocation != since.invocation {
        let (was, now) = (Position::name(&since.server, since.invocation), Position::name(&now.server, now.invocation));
        return Err(Error::ServerChanged { was, now }.into());
    }
    let changes = read(ldap, naming_context, filter, attrs, Some(&since.cookie), timeout).await?;
    let next = Position { cookie: changes.cookie.clone(), ..since.clone() };
    Ok((changes, next))
}

/// One DirSync search with the reader's cookie: each entry decoded (without panicking) and handed to the
/// reader as it arrives, so a large answer is held once, as changes. `timeout` bounds each wait for the
/// server, as in the other reads.
async fn search(
    ldap: &mut Ldap,
    naming_context: &str,
    filter: &str,
    attrs: &[&str],
    reader: &mut Reader,
    timeout: Duration,
) -> Result<End, Error> {
    let failed = |e: LdapError| match e {
        LdapError::Timeout { .. } => Error::Timeout(timeout),
        e => Error::Ldap(Cause::new(e)),
    };
    let extended_dn = RawControl { ctype: EXTENDED_DN_OID.to_string(), crit: false, val: None };
    let controls = vec![request_control(reader.cookie()), extended_dn];
    let mut stream = ldap
        .with_timeout(timeout)
        .with_controls(controls)
        .streaming_search(naming_context, Scope::Subtree, filter, attrs.to_vec())
        .await
        .map_err(failed)?;
    loop {
        let taken = match stream.next().await {
            Ok(Some(r)) if r.is_ref() || r.is_intermediate() => Ok(()),
            Ok(Some(r)) => match entry::decode(r) {
                Some(e) => reader.entry(e),
                None => Err(Error::Malformed("a search entry is malformed".to_string())),
            },
            Ok(None) => break,
            Err(e) => Err(failed(e)),
        };
        if let Err(e) = taken {
            let _ = stream.finish().await;
            return Err(e);
        }
    }
    let result = stream.finish().await;
    let control = result.ctrls.into_iter().find(|c| c.1.ctype == DIRSYNC_OID).and_then(|c| c.1.val);
    Ok(End { rc: result.rc, text: result.text, control })
}

/// The little BER this control needs: definite lengths, one-byte tags.
mod ber {
    pub const SEQUENCE: u8 = 0x30;
    pub const INTEGER: u8 = 0x02;
    pub const OCTET_STRING: u8 = 0x04;

    /// Appends tag, length and content.
    pub fn tlv(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
        out.push(tag);
        let len = content.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes = len.to_be_bytes();
            let skip = bytes.iter().take_while(|b| **b == 0).count();
            out.push(0x80 | (bytes.len() - skip) as u8);
            out.extend_from_slice(&bytes[skip..]);
        }
        out.extend_from_slice(content);
    }

    /// Appends an INTEGER in the fewest two's-complement bytes (so 0x80000000 as i32 is `80 00 00 00`).
    pub fn integer(out: &mut Vec<u8>, value: i32) {
        let bytes = value.to_be_bytes();
        let mut start = 0;
        while start < 3 {
            let (b, next) = (bytes[start], bytes[start + 1]);
            let redundant = (b == 0x00 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0);
            if !redundant {
                break;
            }
            start += 1;
        }
        tlv(out, INTEGER, &bytes[start..]);
    }

    pub struct Tlv<'a> {
        pub tag: u8,
        pub content: &'a [u8],
    }

    /// Reads one TLV; the rest after it. Refuses what does not fit.
    pub fn read(input: &[u8]) -> Result<(Tlv<'_>, &[u8]), String> {
        let (&tag, rest) = input.split_first().ok_or("nothing where a value was expected")?;
        if tag & 0x1f == 0x1f {
            return Err(format!("multi-byte tag 0x{tag:02x}"));
        }
        let (&first, rest) = rest.split_first().ok_or("truncated before the length")?;
        let (len, rest) = if first < 0x80 {
            (first as usize, rest)
        } else {
            let n = (first & 0x7f) as usize;
            if n == 0 {
                return Err("indefinite length".to_string());
            }
            if n > 4 {
                return Err(format!("a {n}-byte length"));
            }
            if rest.len() < n {
                return Err("truncated in the length".to_string());
            }
            let len = rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | *b as usize);
            (len, &rest[n..])
        };
        if rest.len() < len {
            return Err(format!("truncated: {len} bytes announced, {} left", rest.len()));
        }
        Ok((Tlv { tag, content: &rest[..len] }, &rest[len..]))
    }

    /// An INTEGER's value (at most 8 bytes).
    pub fn as_integer(t: &Tlv<'_>) -> Result<i64, String> {
        if t.tag != INTEGER {
            return Err(format!("expected an INTEGER (0x02), found tag 0x{:02x}", t.tag));
        }
        if t.content.is_empty() || t.content.len() > 8 {
            return Err(format!("an INTEGER of {} bytes", t.content.len()));
        }
        let negative = t.content[0] & 0x80 != 0;
        let start: i64 = if negative { -1 } else { 0 };
        Ok(t.content.iter().fold(start, |acc, b| (acc << 8) | i64::from(*b)))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const NC: &str = "DC=ad,DC=example,DC=org";

    /// A response control value: `SEQUENCE { more INTEGER, 0 INTEGER, cookie OCTET STRING }`.
    fn response(more: i32, cookie: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        ber::integer(&mut body, more);
        ber::integer(&mut body, 0);
        ber::tlv(&mut body, ber::OCTET_STRING, cookie);
        let mut v = Vec::new();
        ber::tlv(&mut v, ber::SEQUENCE, &body);
        v
    }

    fn entry(dn: &str, guid: u8, attrs: &[(&str, &[&str])]) -> ldap3::SearchEntry {
        ldap3::SearchEntry {
            dn: dn.to_string(),
            attrs: attrs.iter().map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect())).collect(),
            bin_attrs: HashMap::from([(
                "objectGUID".to_string(),
                vec![vec![guid; 15].into_iter().chain([0xff]).collect()],
            )]),
        }
    }

    fn guid(n: u8) -> Guid {
        let mut b = [n; 16];
        b[15] = 0xff;
        Guid(b)
    }

    /// One search's answer: its entries, then how it ended.
    struct Answer {
        entries: Vec<ldap3::SearchEntry>,
        end: End,
    }

    impl Reader {
        fn take(&mut self, answer: Answer) -> Result<Next, Error> {
            for e in answer.entries {
                self.entry(e)?;
            }
            self.end(answer.end)
        }
    }

    fn answer(more: i32, cookie: &[u8], entries: Vec<ldap3::SearchEntry>) -> Answer {
        Answer { entries, end: End { rc: 0, text: String::new(), control: Some(response(more, cookie)) } }
    }

    fn refused(rc: u32, text: &str) -> Answer {
        Answer { entries: vec![], end: End { rc, text: text.to_string(), control: None } }
    }

    // ------------------------------------------------------------------ the request control

    #[test]
    fn the_incremental_values_flag_is_the_4_byte_negative_integer() {
        assert_eq!(
            request_value(INCREMENTAL_VALUES, MAX_BYTES, b""),
            [0x30, 0x0d, 0x02, 0x04, 0x80, 0x00, 0x00, 0x00, 0x02, 0x03, 0x10, 0x00, 0x00, 0x04, 0x00]
        );
        let c = request_control(b"MSDS\x01");
        assert_eq!((c.ctype.as_str(), c.crit), (DIRSYNC_OID, true), "critical: a server without it must refuse");
        assert_eq!(
            c.val.unwrap(),
            [0x30, 0x12, 0x02, 0x04, 0x80, 0, 0, 0, 0x02, 0x03, 0x10, 0, 0, 0x04, 0x05, b'M', b'S', b'D', b'S', 1]
        );
    }

    #[test]
    fn integers_take_the_fewest_twos_complement_bytes() {
        for (value, bytes) in [
            (0, vec![0x00]),
            (127, vec![0x7f]),
            (128, vec![0x00, 0x80]),
            (-1, vec![0xff]),
            (-128, vec![0x80]),
            (-129, vec![0xff, 0x7f]),
            (0x0001_0000, vec![0x01, 0x00, 0x00]),
            (i32::MAX, vec![0x7f, 0xff, 0xff, 0xff]),
            (i32::MIN, vec![0x80, 0x00, 0x00, 0x00]),
        ] {
            let mut out = Vec::new();
            ber::integer(&mut out, value);
            let mut want = vec![ber::INTEGER, bytes.len() as u8];
            want.extend(&bytes);
            assert_eq!(out, want, "{value}");
            let (tlv, rest) = ber::read(&out).unwrap();
            assert!(rest.is_empty());
            assert_eq!(ber::as_integer(&tlv).unwrap(), i64::from(value), "{value} read back");
        }
    }

    #[test]
    fn a_long_cookie_takes_a_long_form_length() {
        let cookie = vec![7u8; 300];
        let value = request_value(INCREMENTAL_VALUES, MAX_BYTES, &cookie);
        // SEQUENCE of 6 + 5 + (4 + 300) = 315 bytes: 0x82 0x01 0x3b; the cookie's 300: 0x82 0x01 0x2c.
        assert_eq!(&value[..4], [0x30, 0x82, 0x01, 0x3b]);
        assert_eq!(&value[15..19], [0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(value.len(), 4 + 315);
    }

    // ------------------------------------------------------------------ the response control

    #[test]
    fn a_response_gives_the_more_flag_and_the_cookie() {
        assert_eq!(
            parse_response(&response(0, b"MSDS")).unwrap(),
            ResponseControl { more: false, cookie: b"MSDS".to_vec() }
        );
        assert_eq!(
            parse_response(&response(1, b"c2")).unwrap(),
            ResponseControl { more: true, cookie: b"c2".to_vec() }
        );
        // Any value but 0 is more data, as Active Directory's documentation puts it.
        assert!(parse_response(&response(-1, b"")).unwrap().more);
        // Recorded from Samba 4.17, the cookie cut to its first 8 bytes (its length fixed up).
        let recorded =
            [0x30, 0x10, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00, 0x04, 0x08, 0x4d, 0x53, 0x44, 0x53, 0x03, 0, 0, 0];
        let parsed = parse_response(&recorded).unwrap();
        assert_eq!((parsed.more, parsed.cookie.as_slice()), (false, &b"MSDS\x03\0\0\0"[..]));
    }

    #[test]
    fn a_malformed_response_is_an_error_naming_what_is_wrong() {
        let good = response(1, b"cookie");
        for (bytes, says) in [
            (vec![], "nothing where a value was expected"),
            (good[..1].to_vec(), "truncated before the length"),
            (good[..good.len() - 1].to_vec(), "truncated"),
            ([&[0x31], &good[1..]].concat(), "expected a SEQUENCE"),
            ([good.as_slice(), &[0]].concat(), "after the SEQUENCE"),
            (vec![0x30, 0x80, 0, 0], "indefinite length"),
            (vec![0x30, 0x85, 1, 0, 0, 0, 0], "5-byte length"),
            (vec![0x30, 0x03, 0x04, 0x01, 0x00], "moreResults: expected an INTEGER"),
            (vec![0x30, 0x02, 0x02, 0x00], "an INTEGER of 0 bytes"),
            (vec![0x30, 0x03, 0x02, 0x01, 0x00], "second INTEGER: nothing"),
            (vec![0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00], "cookie: nothing"),
            (
                vec![0x30, 0x09, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00],
                "cookie: expected an OCTET STRING",
            ),
            (vec![0x30, 0x0a, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00, 0x04, 0x00, 0x04, 0x00], "after the cookie"),
            (vec![0x3f, 0x01, 0x00], "multi-byte tag"),
        ] {
            match parse_response(&bytes) {
                Err(Error::Malformed(m)) => assert!(m.contains(says), "{bytes:02x?}: {m:?} does not say {says:?}"),
                other => panic!("{bytes:02x?}: {other:?}"),
            }
        }
    }

    #[test]
    fn every_prefix_of_a_response_is_refused_without_panicking() {
        let good = response(1, &[9u8; 200]);
        for n in 0..good.len() {
            assert!(parse_response(&good[..n]).is_err(), "a prefix of {n} bytes was accepted");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_parse_or_fail_without_panicking(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        ) {
            let _ = parse_response(&bytes);
        }
    }

    // ------------------------------------------------------------------ the more-data loop

    #[test]
    fn more_data_is_asked_for_again_with_the_new_cookie_until_the_server_is_done() {
        let mut r = Reader::new(NC, Some(b"c0"));
        assert_eq!(r.cookie(), b"c0");
        let first = answer(1, b"c1", vec![entry("CN=a,DC=x", 1, &[("cn", &["a"])])]);
        assert_eq!(r.take(first).unwrap(), Next::Again);
        assert_eq!(r.cookie(), b"c1", "the next search carries the cookie of the last answer");
        let second = answer(0, b"c2", vec![entry("CN=b,DC=x", 2, &[("isDeleted", &["TRUE"])])]);
        assert_eq!(r.take(second).unwrap(), Next::Done);
        let changes = r.finish();
        assert_eq!(changes.cookie, b"c2");
        assert_eq!(changes.rounds, 2);
        assert_eq!(changes.changed.iter().map(|o| o.guid).collect::<Vec<_>>(), [guid(1)]);
        assert_eq!(changes.deleted, [guid(2)]);
    }

    #[test]
    fn the_later_word_on_an_object_wins_across_rounds() {
        let mut r = Reader::new(NC, Some(b"c0"));
        let round = |more, entries| answer(more, b"c", entries);
        let changed = |n| entry("CN=a,DC=x", n, &[("cn", &["a"])]);
        let deleted = |n| entry("CN=a\\0ADEL,CN=Deleted Objects,DC=x", n, &[("isDeleted", &["TRUE"])]);
        assert_eq!(r.take(round(1, vec![changed(1), changed(2), deleted(3)])).unwrap(), Next::Again);
        // 1 deleted after its change, 3 restored after its deletion, 3 deleted again, 2 changed again.
        assert_eq!(r.take(round(1, vec![deleted(1), changed(3)])).unwrap(), Next::Again);
        assert_eq!(r.take(round(0, vec![deleted(3), deleted(3), changed(2)])).unwrap(), Next::Done);
        let changes = r.finish();
        assert_eq!(changes.changed.iter().map(|o| o.guid).collect::<Vec<_>>(), [guid(2), guid(2)]);
        assert_eq!(changes.deleted, [guid(1), guid(3)]);
    }

    #[test]
    fn a_first_read_starts_with_an_empty_cookie() {
        let mut r = Reader::new(NC, None);
        assert_eq!(r.cookie(), b"");
        assert_eq!(r.take(answer(0, b"MSDS", vec![])).unwrap(), Next::Done);
        assert_eq!(r.finish(), Changes { cookie: b"MSDS".to_vec(), rounds: 1, ..Changes::default() });
    }

    #[test]
    fn a_server_that_always_has_more_is_stopped_after_the_cap() {
        let mut r = Reader::with_max_rounds(NC, None, 3);
        assert_eq!(r.take(answer(1, b"1", vec![])).unwrap(), Next::Again);
        assert_eq!(r.take(answer(1, b"2", vec![])).unwrap(), Next::Again);
        assert_eq!(r.take(answer(1, b"3", vec![])).unwrap_err(), Error::TooManyRounds(3));
    }

    #[test]
    fn a_success_without_the_response_control_is_malformed_not_empty() {
        let mut r = Reader::new(NC, Some(b"c0"));
        let err = r.end(End { rc: 0, control: None, ..End::default() }).unwrap_err();
        assert_eq!(err, Error::Malformed("the search succeeded without a DirSync response control".into()));
        let bad = End { control: Some(vec![0x30, 0x01]), ..End::default() };
        assert!(matches!(Reader::new(NC, None).end(bad), Err(Error::Malformed(_))));
    }

    #[test]
    fn refusals_say_what_to_do() {
        let no_right = Reader::new(NC, None)
            .take(refused(50, "error in module dirsync: insufficient access rights during LDB_SEARCH (50)"))
            .unwrap_err();
        assert!(matches!(no_right, Error::NoRight { .. }), "{no_right:?}");
        assert_eq!(
            no_right.to_string(),
            "the bind account may not read changes with DirSync on DC=ad,DC=example,DC=org: result code 50 \
             (insufficientAccessRights) error in module dirsync: insufficient access rights during LDB_SEARCH \
             (50); grant it \"Replicating Directory Changes\" on the domain (or read the directory in full)"
        );
        let not_root = Reader::new(NC, None)
            .take(refused(
                50,
                "dN is not one of the naming context at ../../source4/dsdb/samdb/ldb_modules/dirsync.c:1012",
            ))
            .unwrap_err();
        assert!(matches!(not_root, Error::Unsupported { .. }), "{not_root:?}");
        assert!(not_root.to_string().contains("the base is not a naming-context root"), "{not_root}");
        let cookie = Reader::new(NC, Some(b"junk")).take(refused(12, "Unable to unmarshall cookie")).unwrap_err();
        assert!(matches!(cookie, Error::CookieRefused { .. }), "{cookie:?}");
        let unsupported = Reader::new(NC, None).take(refused(12, "")).unwrap_err();
        assert!(matches!(unsupported, Error::Unsupported { .. }), "{unsupported:?}");
        let other = Reader::new(NC, None).take(refused(51, "busy")).unwrap_err();
        assert!(matches!(other, Error::Refused { code: 51, .. }), "{other:?}");
    }

    // ------------------------------------------------------------------ entries

    const CAROL: &str = "<GUID=b91badd26c2e0c439eefecf2c1e55268>;\
                         <SID=010500000000000515000000652613848950832403142ccd50040000>;CN=carol,OU=Staff,DC=x";
    const BOB: &str = "<GUID=fd8a56ed00f5de448bbe28354e1dcdaa>;<SID=01>;CN=bob,OU=Staff,DC=x";

    fn one(e: ldap3::SearchEntry) -> Result<ChangedObject, Error> {
        match object(e)? {
            Object::Changed(o) => Ok(o),
            Object::Deleted(g) => panic!("deleted {g}"),
        }
    }

    #[test]
    fn member_values_added_and_removed_come_apart_with_their_guids() {
        let team = entry(
            "<GUID=259181591dca0544bcf6772f81e5823e>;<SID=01>;CN=Team,OU=Groups,DC=x",
            3,
            &[("instanceType", &["4"]), ("member;range=1-1", &[CAROL]), ("member;range=0-0", &[BOB])],
        );
        let o = one(team).unwrap();
        assert_eq!(o.dn, "CN=Team,OU=Groups,DC=x", "the entry's own extended DN is read plain");
        assert_eq!(o.guid, guid(3));
        assert_eq!(
            o.member_added,
            [MemberRef { guid: Guid::parse("b91badd26c2e0c439eefecf2c1e55268"), dn: "CN=carol,OU=Staff,DC=x".into() }]
        );
        assert_eq!(o.member_removed[0].dn, "CN=bob,OU=Staff,DC=x");
        assert_eq!(o.members, None);
        assert_eq!(o.attrs, BTreeMap::from([("instancetype".to_string(), vec!["4".to_string()])]));
    }

    #[test]
    fn a_plain_member_attribute_is_the_whole_set() {
        let o = one(entry("CN=Team,DC=x", 3, &[("member", &[CAROL, "CN=plain,DC=x"])])).unwrap();
        let members = o.members.unwrap();
        assert_eq!(members.len(), 2);
        assert_eq!(members[1], MemberRef { guid: None, dn: "CN=plain,DC=x".into() });
        assert!(o.member_added.is_empty() && o.member_removed.is_empty());
    }

    #[test]
    fn a_tombstone_is_a_deletion_by_guid() {
        let dn = "CN=carol\\0ADEL:d2ad1bb9-2e6c-430c-9eef-ecf2c1e55268,CN=Deleted Objects,DC=x";
        assert!(matches!(object(entry(dn, 5, &[("isDeleted", &["TRUE"])])), Ok(Object::Deleted(g)) if g == guid(5)));
        assert!(matches!(object(entry(dn, 5, &[("isdeleted", &["true"])])), Ok(Object::Deleted(_))));
        assert!(matches!(object(entry("CN=a,DC=x", 5, &[("isDeleted", &["FALSE"])])), Ok(Object::Changed(_))));
    }

    #[test]
    fn an_entry_that_cannot_be_keyed_or_read_is_malformed() {
        let mut no_guid = entry("CN=a,DC=x", 1, &[]);
        no_guid.bin_attrs.clear();
        let mut short = entry("CN=a,DC=x", 1, &[]);
        short.bin_attrs.insert("objectGUID".into(), vec![vec![1, 2, 3]]);
        let mut two = entry("CN=a,DC=x", 1, &[]);
        two.bin_attrs.insert("objectGUID".into(), vec![vec![1; 16], vec![2; 16]]);
        for (e, says) in [
            (no_guid, "no objectGUID"),
            (short, "3 bytes, not 16"),
            (two, "2 objectGUID values"),
            (entry("CN=a,DC=x", 1, &[("member;range=0-5", &["CN=b"])]), "unknown option"),
            (entry("CN=a,DC=x", 1, &[("member;range=1-1", &["<GUID=zz>;CN=b"])]), "cannot be read"),
            (entry("<GUID=unclosed", 1, &[]), "entry DN"),
        ] {
            match object(e) {
                Err(Error::Malformed(m)) => assert!(m.contains(says), "{m:?} does not say {says:?}"),
                Ok(_) => panic!("accepted, expected {says:?}"),
                Err(other) => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn an_objectguid_that_happens_to_be_utf8_is_still_read() {
        let mut e = entry("CN=a,DC=x", 1, &[]);
        e.bin_attrs.clear();
        e.attrs.insert("objectGUID".into(), vec!["abcdefghijklmnop".into()]);
        assert_eq!(one(e).unwrap().guid, Guid(*b"abcdefghijklmnop"));
    }

    #[test]
    fn guids_read_in_both_forms_of_the_extended_dn() {
        // Samba: carol's member value said GUID=b91badd2..., her tombstone's RDN said d2ad1bb9-2e6c-....
        let hex = Guid::parse("b91badd26c2e0c439eefecf2c1e55268").unwrap();
        assert_eq!(hex.to_string(), "d2ad1bb9-2e6c-430c-9eef-ecf2c1e55268");
        assert_eq!(Guid::parse("d2ad1bb9-2e6c-430c-9eef-ecf2c1e55268"), Some(hex));
        assert_eq!(Guid::parse("D2AD1BB9-2E6C-430C-9EEF-ECF2C1E55268"), Some(hex));
        for bad in [
            "",
            "b91badd2",
            "b91badd26c2e0c439eefecf2c1e5526g",
            "d2ad1bb92e6c-430c-9eef-ecf2c1e55268-",
            "é1badd26c2e0c439eefecf2c1e55268",
        ] {
            assert_eq!(Guid::parse(bad), None, "{bad:?}");
        }
        assert_eq!(MemberRef::parse("CN=x,DC=y"), Some(MemberRef { guid: None, dn: "CN=x,DC=y".into() }));
        assert_eq!(MemberRef::parse("<SID=01>;CN=x"), Some(MemberRef { guid: None, dn: "CN=x".into() }));
        assert_eq!(MemberRef::parse("<GUID=b91badd26c2e0c439eefecf2c1e55268"), None);
    }
}
