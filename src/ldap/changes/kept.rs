//! The directory model a daemon keeps between runs for change reads on OpenLDAP (RFC 4533 content sync): every
//! entry under the base that the users filter admits, and every entry that the group filter admits, keyed by
//! `entryUUID`, each with its DN and only what the full read uses of it ([`Kept`]). It is built by a
//! content-sync read without a cookie (the whole content), changed by later reads with the cookie
//! ([`Kept::apply`]: a changed entry replaces the kept one whole, an entry gone is dropped), and turned into the
//! [`Entries`] a full read of the same directory would produce for the configured groups ([`Kept::entries`]),
//! so that [`crate::ldap::resolve`] gives the same [`crate::ldap::Snapshot`]. Where the model cannot know what
//! the full read would see, [`Kept::entries`] says why a full read is needed ([`NeedsFullRead`]), never guesses.
//! It does no I/O except in [`Kept::read`], which makes the content-sync reads and applies them.
//!
//! # What is kept of an entry
//!
//! Only what the full read's rules read, in a compact form made as each entry arrives (a first read never
//! holds the server's answer whole): of a user, its DN, its username values (or that they are not UTF-8) and
//! its first `userAccountControl` value, read; of a group, its DN, its name values and its member values
//! (or that they came in ranges). Every DN, an entry's or a member value, is held once in one table, exactly
//! as the server wrote it (the full read compares member values as written first, then by [`DnKey`], and
//! reports unreadable members as written), and named by a 4-byte id: a user named by ten groups is one text.
//! [`Kept::entries`] reads these parts with the full read's own rules (`UserEntry::from_parts`,
//! `search::group_record`). Measured on 100,000 users and 1,000 groups with a million member values: about
//! 27 MB, against 117 MB for whole search entries.
//!
//! # Read by `modifyTimestamp` ([`Source::ModifyTimestamp`])
//!
//! The same model, kept the same way, can learn what changed from [`stamps`] instead of content sync, for a
//! directory without `syncprov`: each part's entries whose `modifyTimestamp` is recent, named by their
//! `entryUUID`, each replacing the kept one whole, with the latest timestamp in place of the cookie. Such a
//! read never names an entry gone (a deletion leaves no timestamp), so the model keeps what was deleted, moved
//! out of the base or out of a filter until it is read whole again: it is still a snapshot of the directory as
//! a full read would see it for every entry that exists, and errs only by holding entries that are gone. Hence
//! [`Source::sees_departures`]: the caller counts no departure from it. `tests/changes_model.rs` proves the
//! model equal to a full read over random changes of every other kind.
//!
//! # Read by DirSync ([`Source::DirSync`], Active Directory)
//!
//! The same model, keyed by `objectGUID` ([`objects`]), the groups part read under the naming context holding
//! the base DN ([`Kept::with_groups_base`]). Built by a DirSync watermark (the cookie as of now) and a paged read
//! of each part; changed by one DirSync read of the naming context from that cookie, whose named objects are
//! read again with each part's filter (narrowed by `objectGUID`): the server says what each is now, and a kept
//! entry it no longer sends is gone for certain. What DirSync does not name is looked for in
//! [`Kept::read_dirsync`] (member values that follow a renamed or deleted member; entries below a renamed one),
//! and where the model cannot know, it asks for a full read: the directory's order of entries
//! ([`NeedsFullRead::ServerOrder`], only where a snapshot depends on it), entries moved with an entry above them
//! ([`NeedsFullRead::MovedBelow`]). With every group of the naming context kept, in-chain nesting is answered
//! from the model ([`Kept::in_chain`]). `tests/ad_changes.rs` proves it equal to a full read on Samba.
//!
//! # Two parts, two cookies
//!
//! The users and the groups are two content-sync searches, each with its own filter (the configured
//! `user_filter` and `group_filter`, under the base DN, or the groups under an entry above it:
//! [`Kept::with_groups_base`]) and its own cookie ([`Part`]), not one search ORing the two filters. Which
//! filter an entry matches is the server's to say: a local evaluation of the filters would be a guess (slapd
//! matches `(objectClass=person)` on an entry whose objectClass values name only `inetOrgPerson`, by the
//! schema's class hierarchy; matching rules, extensible filters and ACLs are the server's too). An entry both
//! filters admit is kept in both parts, as the full read reads it twice.
//!
//! # How the model maps to the full read (`ldap::search`)
//!
//! - **The users search** (`user_filter`, the username attribute and `userAccountControl`): the users part,
//!   each entry read by the same `UserEntry` rule and indexed by the same builder (`UserIndexBuilder`), in
//!   the order slapd returns them: by creation (back-mdb returns entries in the order of their IDs, given at
//!   creation and kept by a rename), which the time of slapd's version 1 entryUUIDs gives. The order matters:
//!   the full read's snapshot depends on the server's order in two places, the order of the DNs within a
//!   username collision, and whether a collision is marked `multi_valued` when one name is both one of the
//!   names of an entry with several and the only name of another entry (the first of the two in the group's
//!   members decides). In DN order the model differed from a full read there.
//! - **The search of the configured groups by name** (`(&group_filter(name=...))`, 50 names a filter): every
//!   group of the groups part with a name value equal to a configured name (compared as [`GroupName`]s: the
//!   caseIgnoreMatch the server applies to `cn`), chunk by chunk as the full read asks, each recorded with
//!   the same rule (`search::plain_record`, `Entries::add_named`): an entry found by two chunks is one entry,
//!   which answers to every configured name it holds, as in the full read.
//!   Groups in creation order too (an ambiguous name's DNs come in the server's order).
//! - **The root DSE** (Active Directory or not): read once when the model is first read ([`Kept::read`]),
//!   asked only when the settings need it, as the full read does.
//! - **Nested groups, level by level** (`model::Walk`, the same walk with the same depth cap and the same
//!   sweep rule): a member DN that is a kept group is that group; one under the base that is no kept group is
//!   neither a user nor a group (the full read's base read with the group filter finds nothing there); one
//!   outside the base is unknown to the model ([`NeedsFullRead::MemberOutsideBase`]), unless the groups part
//!   is read under an entry above the base that holds it ([`Kept::with_groups_base`], e.g. the naming
//!   context): then it is a kept group or neither, as under the base. Group members often name people and
//!   groups outside the base DN, and with recursive nesting every such member a walk reaches would otherwise
//!   call for a full read on every run.
//!
//! # When a full read is needed (every [`NeedsFullRead`])
//!
//! - the model has not been read whole yet (`NotRead`), or was read for another base DN, filter or attribute
//!   (`SettingChanged`: the entries kept are not the ones the settings ask for);
//! - the nesting mode depends on the server kind and the root DSE was not read (`ServerKindUnknown`), or the
//!   server says it is Active Directory where that matters (`ActiveDirectory`: in-chain searches and range
//!   retrieval are answers only the server gives);
//! - the walk of member groups reaches a member DN outside the base (`MemberOutsideBase`: it may be a group),
//!   or one under the base that names no kept entry and is written in a form the model cannot compare as the
//!   server would (`UncomparableMember`: an attribute type no kept DN uses, such as an OID or another name of
//!   a type, or a BER value);
//! - a configured name is not printable ASCII, or the group name attribute is not one whose matching is known
//!   to be caseIgnoreMatch (`NameMatching`: the server's Unicode and space folding, or another matching rule,
//!   could find a group [`GroupName`] does not, or the reverse);
//! - a kept group's member values come in ranges (`RangedMembers`: Active Directory's range retrieval), in a
//!   model read by content sync or `modifyTimestamp` (a model read by DirSync completes them:
//!   [`Kept::complete_ranges`]);
//! - the last read found, besides the content-sync answers, an entry changed after the CSN their cookie
//!   stands for (`ProviderBehind`). Observed with slapd 2.5: killed and restarted, it sets contextCSN back to
//!   its last checkpoint (a kept cookie newer than that is refused, 53 "consumer state is newer than
//!   provider!"), and answers content sync, even without a cookie, only with entries up to that contextCSN:
//!   the entries changed since are left out (and a present phase counts them gone) until the next write
//!   moves contextCSN past them, when a read with the cookie sends them. [`Kept::read`] therefore searches,
//!   after the content-sync reads, for one entry whose `entryCSN` is above the cookie's.
//!
//! # What the model cannot see (the full read would)
//!
//! - An access rule changed through `cn=config` without a restart, while the session log is in use: the
//!   entries it hides change no CSN, so no change read names them (see `syncrepl`'s module doc).
//! - **What slapd loses in a crash** (observed, slapd 2.5.13; `tests/changes_model.rs` pins each case).
//!   Killed (SIGKILL) rather than stopped, slapd restarts with the contextCSN of its last checkpoint: here
//!   (`syncprov-checkpoint 100 10`) the one it had after the second write since it started, whether 2, 3 or 5
//!   writes followed; a clean stop writes it, and then nothing below happens. Every write after the
//!   checkpoint is lost to content sync in one of three ways. A kept cookie newer than that contextCSN is
//!   refused (53, "consumer state is newer than provider!"): start again from [`Kept::new`], never retry the
//!   cookie later (once a write moves contextCSN past it, slapd accepts it and, with the session log, never
//!   names the deletions of the lost writes: observed). An entry changed by a lost write is left out of every
//!   answer until the next write: [`NeedsFullRead::ProviderBehind`], found by a search. But an entry deleted
//!   (or moved out of the base, or out of a filter) by a lost write, with a kept cookie not newer than the
//!   restored contextCSN, leaves no trace: slapd answers "nothing changed", the entry stays in the model, and
//!   no search can find what is not there. With the session log it is never named afterwards either (the
//!   log restarts at the restored contextCSN); without it, the present phase after the next write drops it.
//!
//! The provider's remedy (observed): `syncprov-checkpoint 1 1` writes contextCSN at every write, and slapd
//! killed and restarted then comes back with the contextCSN of its last write; nothing is lost. Without it,
//! the full read stays the safety net: rebuild the model (a read without a cookie) at every full read,
//! and compare the snapshot of [`Kept::entries`] with the full read's there; a difference is this kind of
//! loss, to be logged. Every `sync.full_sync_every` bounds how long it lasts.

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ldap3::Ldap;

use super::dirsync::{self, Guid};
use super::objects;
use super::stamps::{self, Paging};
use super::syncrepl::{self, Changed, ChangedEntry, EntryUuid, Refresh, SyncError, SyncRead};
use super::usn;
use crate::group_name::GroupName;
use crate::ldap::dn::{self, DnKey};
use crate::ldap::entry::{self, UserAttributes, UserEntry, attr_values};
use crate::ldap::model::{self, Entries, GroupRecord, Sweep, UserIndex, UserIndexBuilder, Walk};
use crate::ldap::{NAMES_PER_FILTER, Nesting, Settings, range, search};

mod patch;
mod stored;
pub use patch::Resolved;
pub use stored::{BodyToStore, StoredKept};
pub(crate) use stored::{decode, encode_into};

/// Group name attributes whose equality matching is caseIgnoreMatch in the standard schemas (OpenLDAP's core
/// and inetOrgPerson schemas; Active Directory's string attributes), which [`GroupName`] reproduces.
const CASE_IGNORE_NAMES: [&str; 7] = ["cn", "commonname", "name", "displayname", "samaccountname", "ou", "uid"];

/// How a model learns what changed in the directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Source {
    /// RFC 4533 content sync ([`syncrepl`]): the server names what changed and what is gone.
    ContentSync,
    /// `modifyTimestamp` at or after the latest one read, less `margin` ([`stamps`]): an entry deleted, moved
    /// out of the base or out of a filter is not seen, and stays in the model until it is read again whole.
    ModifyTimestamp { margin: Duration },
    /// Active Directory's DirSync ([`dirsync`]) names the objects changed and deleted in the naming context;
    /// each changed one is read again with the part's filter ([`objects`]), so the server says what it is now.
    DirSync,
    /// Active Directory's update sequence numbers ([`usn`]): the objects whose `uSNChanged` is above the last
    /// read's `highestCommittedUSN`, and the tombstones above it; then as [`Source::DirSync`].
    Usn,
}

impl Source {
    /// The method's name, as `ldap.change_detection` spells it.
    pub fn method(self) -> &'static str {
        match self {
            Source::ContentSync => "syncrepl",
            Source::ModifyTimestamp { .. } => "modify_timestamp",
            Source::DirSync => "dirsync",
            Source::Usn => "usn",
        }
    }

    /// Whether what it reads names every entry gone: only then may a departure be learnt from a change read.
    pub fn sees_departures(self) -> bool {
        matches!(self, Source::ContentSync | Source::DirSync | Source::Usn)
    }

    /// Whether the model holds Active Directory's objects by `objectGUID`, every group of the naming context
    /// among them ([`Source::DirSync`], [`Source::Usn`]).
    pub fn reads_objects(self) -> bool {
        matches!(self, Source::DirSync | Source::Usn)
    }
}

/// The two content-sync searches a model is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The entries `user_filter` admits, with the username attribute and `userAccountControl`.
    Users,
    /// The entries `group_filter` admits, with the group name attribute and the member attribute.
    Groups,
}

/// Why the kept model cannot stand in for a full read now.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NeedsFullRead {
    #[error("the kept directory model has not been read whole yet")]
    NotRead,
    #[error("{setting} changed since the kept directory model was read")]
    SettingChanged { setting: &'static str },
    #[error(
        "ldap.nested_groups or ldap.member_range_size depends on whether the directory is Active Directory, which \
         the kept directory model does not know"
    )]
    ServerKindUnknown,
    #[error(
        "the directory is Active Directory: in-chain nesting and range retrieval are answers only a read gets \
         (a model read by dirsync answers for in-chain nesting when ldap.group_filter is \"(objectClass=group)\")"
    )]
    ActiveDirectory,
    #[error(
        "group {group} has the member {member}, outside {base_dn} (where the kept groups were read): whether it \
         is a group only a read can tell"
    )]
    MemberOutsideBase { group: String, member: String, base_dn: String },
    #[error(
        "group {group} has the member {member}, which names no kept entry and is written in a form the kept \
         directory model cannot compare as the directory would"
    )]
    UncomparableMember { group: String, member: String },
    #[error("group name {name:?}: {reason}")]
    NameMatching { name: String, reason: &'static str },
    #[error("the members of {dn} come in ranges (range retrieval), which only a read follows")]
    RangedMembers { dn: String },
    #[error(
        "the directory holds {dn}, changed after the state its content-sync answer stands for ({csn}): that \
         answer left it out (slapd after a restart that lost its last contextCSN checkpoint)"
    )]
    ProviderBehind { csn: String, dn: String },
    #[error(
        "{what}: which comes first is the directory's order, which a model read by dirsync does not know (Active \
         Directory returns entries in an order of its own)"
    )]
    ServerOrder { what: String },
    #[error(
        "{dn} was renamed or moved with entries below it, whose names changed without a change of their own: \
         only a read sees them"
    )]
    MovedBelow { dn: String },
    #[error(
        "group {dn}, which a filter names, was renamed or deleted: whose memberOf changed with it only a read \
         tells (DirSync names only the group)"
    )]
    BackLink { dn: String },
}

/// What one content-sync read changed in a part of the model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Entries added, or replaced by one whose kept form differs (a change to an attribute the model does not
    /// keep, `description` say, counts for nothing).
    pub changed: usize,
    /// Entries dropped: deleted, renamed out of the base, or no longer admitted by the filter.
    pub gone: usize,
    /// Entries the server sent, changed in their kept form or not.
    pub sent: usize,
}

/// What [`Kept::read`] changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub users: Applied,
    pub groups: Applied,
    /// The directory holds entries changed after the state the answers stand for: [`Kept::entries`] asks for
    /// a full read ([`NeedsFullRead::ProviderBehind`]) until a later read catches up.
    pub behind: bool,
    /// Searches made (the root DSE when read, the two content-sync searches, the search for newer entries):
    /// for [`Entries::searches`], which [`Kept::entries`] leaves at 0.
    pub searches: usize,
}

impl Changes {
    /// Whether the read changed nothing in the model, with the server not behind its answers.
    pub fn is_nothing(&self) -> bool {
        let none = |a: &Applied| a.changed == 0 && a.gone == 0;
        none(&self.users) && none(&self.groups) && !self.behind
    }
}

/// What the model was read for: the settings that decide which entries and attributes it holds.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Query {
    base_dn: String,
    /// Where the groups part is read: the base DN, or an entry above it ([`Kept::with_groups_base`]).
    groups_base: String,
    user_filter: String,
    group_filter: String,
    username_attribute: String,
    group_name_attribute: String,
    member_attribute: String,
    /// `ldap.member_range_size`: a model read by DirSync asks for the member values in windows of this size, as
    /// the full read does on Active Directory.
    member_range_size: Option<u32>,
    /// The account the model was read with: another may be allowed to read other entries.
    bind_dn: String,
}

impl Query {
    fn of(s: &Settings) -> Query {
        Query {
            base_dn: s.base_dn.clone(),
            groups_base: s.base_dn.clone(),
            user_filter: s.user_filter.clone(),
            group_filter: s.group_filter.clone(),
            username_attribute: s.username_attribute.clone(),
            group_name_attribute: s.group_name_attribute.clone(),
            member_attribute: s.member_attribute.clone(),
            member_range_size: s.member_range_size,
            bind_dn: s.bind_dn.clone(),
        }
    }

    /// The first setting `s` has otherwise, by its configuration key.
    fn difference(&self, s: &Settings) -> Option<&'static str> {
        let other = Query::of(s);
        [
            (self.base_dn != other.base_dn, "ldap.base_dn"),
            (self.user_filter != other.user_filter, "ldap.user_filter"),
            (self.group_filter != other.group_filter, "ldap.group_filter"),
            (!self.username_attribute.eq_ignore_ascii_case(&other.username_attribute), "ldap.username_attribute"),
            (!self.group_name_attribute.eq_ignore_ascii_case(&other.group_name_attribute), "ldap.group_name_attribute"),
            (!self.member_attribute.eq_ignore_ascii_case(&other.member_attribute), "ldap.member_attribute"),
            (self.member_range_size != other.member_range_size, "ldap.member_range_size"),
            (self.bind_dn != other.bind_dn, "ldap.bind_dn"),
        ]
        .into_iter()
        .find_map(|(differs, key)| differs.then_some(key))
    }

    /// Whether a filter names `dn` (a `memberOf` value, say), compared case-insensitively as written.
    fn names_in_filters(&self, dn: &str) -> bool {
        let dn = dn.to_lowercase();
        [&self.user_filter, &self.group_filter].iter().any(|f| f.to_lowercase().contains(&dn))
    }

    fn base(&self, part: Part) -> &str {
        match part {
            Part::Users => &self.base_dn,
            Part::Groups => &self.groups_base,
        }
    }

    fn filter(&self, part: Part) -> &str {
        match part {
            Part::Users => &self.user_filter,
            Part::Groups => &self.group_filter,
        }
    }

    /// The attributes a read by `objectGUID` asks for ([`Source::DirSync`]): the member values in their first
    /// window with `ldap.member_range_size` (the rest read by [`Kept::complete_ranges`]).
    fn object_attributes(&self, part: Part) -> Vec<String> {
        let [name, members] = self.attributes(part);
        match (part, self.member_range_size) {
            (Part::Groups, Some(window)) => vec![name.to_string(), range::request(members, 0, Some(window))],
            _ => vec![name.to_string(), members.to_string()],
        }
    }

    fn attributes(&self, part: Part) -> [&str; 2] {
        match part {
            Part::Users => [&self.username_attribute, "userAccountControl"],
            Part::Groups => [&self.group_name_attribute, &self.member_attribute],
        }
    }
}

/// One part: its entries by UUID, its cookie, and whether it was read whole.
#[derive(Clone, Debug)]
struct Side<E> {
    cookie: Option<Vec<u8>>,
    /// The latest `modifyTimestamp` its last read sent ([`Source::ModifyTimestamp`]).
    latest: Option<DateTime<Utc>>,
    whole: bool,
    entries: HashMap<EntryUuid, E>,
    /// What changed in the part since the model was last resolved, while a resolve is kept to patch
    /// ([`patch::Marks`]); `None` otherwise.
    marks: Option<patch::Marks>,
    /// An entry was dropped, or replaced by one not holding every DN it held, or made by a read and dropped
    /// within it, since the last [`Kept::sweep`]: some DN may be held by no entry. A read that only adds entries
    /// and member values need not go through the million member values of the model to free nothing.
    released: bool,
}

impl<E> Default for Side<E> {
    fn default() -> Self {
        Side { cookie: None, latest: None, whole: false, entries: HashMap::default(), marks: None, released: false }
    }
}

impl<E: PartialEq + Dn + patch::Named> Side<E> {
    /// Applies a read whose changed entries are already in the kept form (see [`Kept::apply`]). An entry sent
    /// again with the same kept form (a change to an attribute the model does not keep) counts as no change.
    /// A DN names one entry at a time: a kept entry at the DN of a changed entry with another UUID is gone (a
    /// user deleted and made again under the same DN, which a `modifyTimestamp` read names only by the new
    /// entry; had the old one been renamed instead, the read sends it too, at its new DN).
    fn apply(&mut self, read: SyncRead<Fresh<E>>, dns: &Dns) -> Applied {
        let mut gone = read.gone(self.entries.keys().copied());
        // Only entries new, or at a DN other than kept, can take a kept entry's DN: an entry sent again where it
        // was (every quiet `modifyTimestamp` read sends some) needs no look through the whole part.
        let moved: Vec<&Fresh<E>> =
            read.changed.iter().filter(|f| self.entries.get(&f.uuid).map(Dn::dn) != Some(f.entry.dn())).collect();
        if !moved.is_empty() {
            let fresh: HashMap<Id, EntryUuid> = moved.iter().map(|f| (f.entry.dn(), f.uuid)).collect();
            let replaced = self.entries.iter().filter(|(uuid, e)| fresh.get(&e.dn()).is_some_and(|f| f != *uuid));
            let replaced: Vec<EntryUuid> = replaced.map(|(uuid, _)| *uuid).filter(|u| !gone.contains(u)).collect();
            gone.extend(replaced);
        }
        for uuid in &gone {
            let old = self.entries.remove(uuid);
            self.released |= old.is_some();
            if let (Some(old), Some(marks)) = (old, self.marks.as_mut()) {
                marks.mark(&old, dns, true);
                marks.replaced = true;
            }
        }
        let (mut changed, sent) = (0, read.changed.len());
        for fresh in read.changed {
            let old = self.entries.get(&fresh.uuid);
            if old != Some(&fresh.entry) {
                changed += 1;
                self.released |= old.is_some_and(|old| !fresh.entry.holds_every_dn_of(old));
                if let Some(marks) = self.marks.as_mut() {
                    let moved = old.is_none_or(|o| o.dn() != fresh.entry.dn());
                    match old {
                        Some(old) => {
                            marks.mark(old, dns, moved);
                            marks.replaced = true;
                        }
                        None => marks.added.push(fresh.uuid),
                    }
                    marks.mark(&fresh.entry, dns, moved);
                }
            }
            self.entries.insert(fresh.uuid, fresh.entry);
        }
        if read.cookie.is_some() {
            self.cookie = read.cookie;
        }
        self.whole = true;
        Applied { changed, gone: gone.len(), sent }
    }

    /// Reads a part from its cookie ([`syncrepl::read_each`]), each changed entry made into its kept form as it
    /// arrives (a first read of a million member values never holds them all as the server sent them), and
    /// applies it.
    async fn read(
        &mut self,
        ldap: &mut Ldap,
        (q, part, timeout): (&Query, Part, Duration),
        dns: &mut Dns,
        of: fn(&ChangedEntry, &Query, &mut Dns) -> E,
    ) -> Result<Applied, SyncError> {
        let attrs = q.attributes(part);
        let (mut made, cookie) = (0, self.cookie.as_deref());
        let keep = making(q, dns, of, &mut made);
        let read = syncrepl::read_each(ldap, q.base(part), q.filter(part), &attrs, cookie, timeout, keep).await?;
        self.dropped_made(made, &read.changed);
        Ok(self.apply(read, dns))
    }

    /// [`Side::read`] by `modifyTimestamp` ([`stamps::read_each`]): the entries changed since `since` (every
    /// entry, for a part never read whole). The latest timestamp read is kept.
    async fn read_stamps(
        &mut self,
        ldap: &mut Ldap,
        (q, part, paging, since): (&Query, Part, Paging, Option<DateTime<Utc>>),
        dns: &mut Dns,
        of: fn(&ChangedEntry, &Query, &mut Dns) -> E,
    ) -> Result<Applied, SyncError> {
        let attrs = q.attributes(part);
        let since = since.filter(|_| self.whole);
        let search = (q.base(part), q.filter(part), &attrs[..]);
        let mut made = 0;
        let read = stamps::read_each(ldap, search, since, paging, making(q, dns, of, &mut made)).await?;
        self.dropped_made(made, &read.read.changed);
        let applied = self.apply(read.read, dns);
        self.latest = read.latest;
        Ok(applied)
    }

    /// [`Side::read`] by `objectGUID` ([`objects::read_each`], for [`Source::DirSync`]): the whole part
    /// without `named`; with it, the objects it names as changed, read again with the part's filter (a kept
    /// one the server no longer sends is gone: deleted, moved out of the base or out of the filter), and those
    /// it names deleted dropped. Returns what was applied and how many searches were made.
    async fn read_objects(
        &mut self,
        ldap: &mut Ldap,
        (q, part, paging): (&Query, Part, (i32, Duration)),
        named: Option<&Named>,
        dns: &mut Dns,
        of: fn(&ChangedEntry, &Query, &mut Dns) -> E,
    ) -> Result<(Applied, usize), SyncError> {
        let attrs = q.object_attributes(part);
        let attrs: Vec<&str> = attrs.iter().map(String::as_str).collect();
        let search = (q.base(part), q.filter(part), &attrs[..]);
        let guids = named.map(|n| &n.changed[..]);
        let mut made = 0;
        let (changed, searches) =
            objects::read_each(ldap, search, guids, paging, making(q, dns, of, &mut made)).await?;
        self.dropped_made(made, &changed);
        if let Some(n) = named
            && let Some(dn) = self.taken_over(n, &changed)
        {
            // The DirSync read did not name the kept entry (it was renamed after it): a later read will. Taken
            // as gone now, it would be a departure that did not happen.
            return Err(SyncError::Ldap {
                code: None,
                reason: format!(
                    "the directory changed during the change read: an object read again holds the DN of a kept \
                     entry the change read did not name ({})",
                    dns.get(dn)
                ),
            });
        }
        let (deleted, refresh) = match named {
            None => (Vec::new(), Refresh::Present(Default::default())),
            Some(n) => {
                let sent: HashSet<EntryUuid> = changed.iter().map(|f| f.uuid).collect();
                let asked = n.changed.iter().map(|g| EntryUuid(g.0));
                let left = asked.filter(|u| !sent.contains(u) && self.entries.contains_key(u));
                (n.deleted.iter().map(|g| EntryUuid(g.0)).chain(left).collect(), Refresh::Deletes)
            }
        };
        Ok((self.apply(SyncRead { cookie: None, changed, deleted, refresh }, dns), searches))
    }
}

/// Makes each changed entry a read sends into its kept form (its DNs kept in `dns`), counting them in `made`:
/// what [`Side::dropped_made`] compares with the entries the read hands over.
fn making<'a, E: 'a>(
    q: &'a Query,
    dns: &'a mut Dns,
    of: fn(&ChangedEntry, &Query, &mut Dns) -> E,
    made: &'a mut usize,
) -> impl FnMut(ChangedEntry) -> Fresh<E> + 'a {
    move |e| {
        *made += 1;
        Fresh { uuid: e.uuid, entry: of(&e, q, dns) }
    }
}

impl<E: Dn> Side<E> {
    /// Notes a read that made `made` entries (their DNs kept in [`Dns`]) and hands over fewer (`changed`): one
    /// it made was dropped or replaced within the read (content sync's delete state after an add, an entry sent
    /// twice), and the DNs only it held are held by none.
    fn dropped_made(&mut self, made: usize, changed: &[Fresh<E>]) {
        self.released |= made > changed.len();
    }

    /// The DN of a kept entry that `named` does not name, which an entry of `changed` (read again) now holds.
    fn taken_over(&self, named: &Named, changed: &[Fresh<E>]) -> Option<Id> {
        if changed.is_empty() {
            return None;
        }
        let named: HashSet<EntryUuid> = named.changed.iter().chain(&named.deleted).map(|g| EntryUuid(g.0)).collect();
        let by_dn: HashMap<Id, EntryUuid> = changed.iter().map(|f| (f.entry.dn(), f.uuid)).collect();
        let taken =
            |(uuid, e): (&EntryUuid, &E)| by_dn.get(&e.dn()).is_some_and(|f| f != uuid) && !named.contains(uuid);
        self.entries.iter().find(|&(u, e)| taken((u, e))).map(|(_, e)| e.dn())
    }
}

/// What a change read by `objectGUID` looks for once the objects it named were read again ([`Kept::follow_up`]).
struct FollowUp {
    /// The kept entries it named, each with its DN before and whether it is a group: the kept groups holding the
    /// old DN of one renamed, moved or gone are read again.
    before: Vec<(EntryUuid, Arc<str>, bool)>,
    /// Objects renamed or moved, by their DN now: one with entries below it is [`NeedsFullRead::MovedBelow`].
    renamed: Vec<String>,
    /// Every kept group holding a member that is no kept entry is read again too.
    foreign: bool,
    /// A filter tests `memberOf`: a group it names renamed or gone is [`NeedsFullRead::BackLink`].
    member_of: bool,
    /// Each kept entry renamed or moved counts in `renamed` too.
    kept_renamed: bool,
    /// Groups (by GUID) to read again besides.
    also: Vec<Guid>,
}

/// The objects a DirSync read named: changed (each once, none of them deleted) and deleted.
#[derive(Debug, Default)]
struct Named {
    changed: Vec<Guid>,
    deleted: Vec<Guid>,
}

impl Named {
    /// With `members`, the objects a changed group's member values name (added, removed, or sent whole) count
    /// as changed too: a filter testing `memberOf` may admit them now, or no longer, while DirSync names only
    /// the group (`memberOf` is a back link, not a change of theirs).
    fn of(read: &dirsync::Changes, members: bool) -> Named {
        let deleted: HashSet<Guid> = read.deleted.iter().copied().collect();
        let mut seen = HashSet::default();
        let named = read.changed.iter().flat_map(|o| {
            let values = o.member_added.iter().chain(&o.member_removed).chain(o.members.iter().flatten());
            std::iter::once(o.guid).chain(values.filter_map(|m| m.guid).filter(move |_| members))
        });
        let changed = named.filter(|g| !deleted.contains(g) && seen.insert(*g)).collect();
        Named { changed, deleted: read.deleted.clone() }
    }
}

/// Why a model read by DirSync cannot follow these filters, if it cannot: one that tests `memberOf` by the
/// in-chain rule admits an object anew, or no longer, when any group in a chain above it changes, which
/// DirSync names only as that group.
pub fn dirsync_refusal(s: &Settings) -> Option<String> {
    refusal(&s.user_filter, &s.group_filter, ("DirSync", "dirsync"))
}

/// Why a method (what it reads, and its name as `ldap.change_detection` spells it) cannot follow these
/// filters: what [`dirsync_refusal`] says.
fn refusal(user_filter: &str, group_filter: &str, (method, name): (&str, &str)) -> Option<String> {
    [("ldap.user_filter", user_filter), ("ldap.group_filter", group_filter)].into_iter().find_map(|(key, f)| {
        if f.contains("1.2.840.113556.1.4.1941") && tests_member_of(f) {
            return Some(format!(
                "{key} tests memberOf by the in-chain rule (1.2.840.113556.1.4.1941): a change to any group in a \
                 chain changes what it admits, and {method} names only that group; {name} cannot follow it"
            ));
        }
        let tested = objects::filter_attributes(f).unwrap_or_default();
        let unseen = tested.iter().find(|a| UNREPORTED.iter().any(|u| u.eq_ignore_ascii_case(a)))?;
        Some(format!(
            "{key} tests {unseen}, which Active Directory computes, keeps on each domain controller apart, or holds \
             as a back link: {method} does not report its changes; {name} cannot follow it"
        ))
    })
}

/// Why a model read by update sequence numbers cannot follow these settings, if it cannot: besides what DirSync
/// cannot follow, a filter testing `memberOf` at all (a member added to a group moves the group's `uSNChanged`,
/// not the member's), and a member attribute other than `member` (whose back link, `memberOf`, tells a group
/// whose member values followed a member renamed or moved: [`Kept::groups_disagreeing`]).
pub fn usn_refusal(user_filter: &str, group_filter: &str, member_attribute: &str) -> Option<String> {
    if !member_attribute.eq_ignore_ascii_case("member") {
        return Some(format!(
            "ldap.member_attribute is {member_attribute:?}: usn follows members renamed or moved through memberOf, \
             the back link of \"member\" only"
        ));
    }
    let member_of = [("ldap.user_filter", user_filter), ("ldap.group_filter", group_filter)]
        .into_iter()
        .find(|(_, f)| tests_member_of(f))
        .map(|(key, _)| {
            format!(
                "{key} tests memberOf, a back link: a member added to or taken out of a group changes the group, \
                 not the member, so usn cannot follow it (dirsync can)"
            )
        });
    member_of.or_else(|| refusal(user_filter, group_filter, ("uSNChanged", "usn")))
}

/// The DN above `dn` (RFC 4514 text): everything after its first RDN; `None` for a single RDN.
fn dn_parent(dn: &str) -> Option<&str> {
    let bytes = dn.as_bytes();
    let mut escaped = false;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' => escaped = true,
            b',' => return Some(dn[i + 1..].trim_start()),
            _ => {}
        }
    }
    None
}

/// Attributes whose changes DirSync does not report on the object that holds them: constructed, not replicated,
/// or back links (`memberOf` is followed through the groups' member changes: [`Named::of`]).
const UNREPORTED: [&str; 15] = [
    "msDS-User-Account-Control-Computed",
    "msDS-UserPasswordExpiryTimeComputed",
    "msDS-MemberOfTransitive",
    "whenChanged",
    "modifyTimeStamp",
    "uSNChanged",
    "lastLogoff",
    "lastLogon",
    "logonCount",
    "badPwdCount",
    "badPasswordTime",
    "tokenGroups",
    "directReports",
    "managedObjects",
    "msDS-PrincipalName",
];

/// Why a model read by DirSync cannot answer for nested groups with these settings, if it cannot: in-chain
/// nesting (`"in_chain"`, or `"auto"` on Active Directory) is answered from the model only when it holds every
/// group of the naming context ([`Kept::in_chain`]).
pub fn in_chain_refusal(s: &Settings) -> Option<String> {
    let in_chain = matches!(s.nesting, Nesting::InChain | Nesting::Auto);
    let member = s.member_attribute.eq_ignore_ascii_case("member");
    (in_chain && !(every_group(&s.group_filter) && member)).then(|| {
        format!(
            "with in-chain nesting (ldap.nested_groups = {:?} on Active Directory) a change read answers only when \
             ldap.group_filter is \"(objectClass=group)\" (it is {:?}) and ldap.member_attribute is \"member\" \
             (it is {:?}): the server's chains go through every group, by member",
            match s.nesting {
                Nesting::InChain => "in_chain",
                _ => "auto",
            },
            s.group_filter,
            s.member_attribute
        )
    })
}

/// Whether a group filter admits every group of Active Directory: `(objectClass=group)`.
fn every_group(filter: &str) -> bool {
    filter.replace(' ', "").eq_ignore_ascii_case("(objectClass=group)")
}

/// Whether a filter tests `memberOf` (or names an attribute it cannot tell).
fn tests_member_of(filter: &str) -> bool {
    objects::filter_attributes(filter).is_none_or(|a| a.iter().any(|a| a.eq_ignore_ascii_case("memberOf")))
}

/// A changed entry in its kept form.
struct Fresh<E> {
    uuid: EntryUuid,
    entry: E,
}

impl<E> Changed for Fresh<E> {
    fn uuid(&self) -> EntryUuid {
        self.uuid
    }
}

/// [`SyncRead`] with its changed entries in their kept form.
fn shrink<E>(read: &SyncRead, mut of: impl FnMut(&ChangedEntry) -> E) -> SyncRead<Fresh<E>> {
    SyncRead {
        cookie: read.cookie.clone(),
        changed: read.changed.iter().map(|e| Fresh { uuid: e.uuid, entry: of(e) }).collect(),
        deleted: read.deleted.clone(),
        refresh: read.refresh.clone(),
    }
}

/// A kept user entry: only what the users search reads of it ([`UserEntry::from_parts`]).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct User {
    dn: Id,
    /// The username attribute's values ([`entry::username_values`]): `None` without it, `Err(())` when it
    /// is not UTF-8.
    names: Option<Result<Box<[Box<str>]>, ()>>,
    /// The first `userAccountControl` value, read ([`entry::account_control`]).
    account_control: Option<i64>,
}

impl User {
    fn of(e: &ChangedEntry, q: &Query, dns: &mut Dns) -> User {
        let names = entry::username_values(&e.attrs, &e.bin_attrs, &q.username_attribute)
            .map(|r| r.map(|v| v.into_iter().map(String::into_boxed_str).collect()));
        let account_control =
            attr_values(&e.attrs, "userAccountControl").next().and_then(|v| entry::account_control(v));
        User { dn: dns.intern(&e.dn), names, account_control }
    }

    fn read(&self, a: &UserAttributes, dns: &Dns) -> UserEntry {
        let names = self.names.as_ref().map(|r| r.as_ref().map(|v| &v[..]).map_err(|_| ()));
        UserEntry::from_parts(dns.get(self.dn).to_string(), names, self.account_control, a)
    }
}

/// A kept group entry: only what the group searches read of it (`search::group_record`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Group {
    dn: Id,
    /// The group name attribute's values, in the server's order.
    names: Box<[Box<str>]>,
    /// The member attribute's values as the server wrote them, in its order (each DN held once for the whole
    /// model: [`Dns`]); `None` when they came in ranges (`member;range=0-1499`), which only a read completes.
    members: Option<Box<[Id]>>,
}

impl Group {
    fn of(e: &ChangedEntry, q: &Query, dns: &mut Dns) -> Group {
        let names = attr_values(&e.attrs, &q.group_name_attribute).map(|v| v.as_str().into()).collect();
        let attr = q.member_attribute.as_str();
        // As `range::values_of` reads an entry that is not ranged: every value of the plain attribute (a value
        // that is not UTF-8 makes it binary, and no member).
        let ranged = e.attrs.keys().any(|k| range::parse_range(k, attr).is_some());
        let members = (!ranged).then(|| attr_values(&e.attrs, attr).map(|m| dns.intern(m)).collect());
        Group { dn: dns.intern(&e.dn), names, members }
    }
}

/// A DN of the model: its place in [`Dns`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
struct Id(u32);

/// Every DN the model holds (entry DNs and member values), each once, exactly as the server wrote it, and
/// named by an [`Id`] of 4 bytes: a million member values naming a hundred thousand users cost 4 MB of ids,
/// and each DN's text is held once, however many groups name it (and shared with its own entry).
#[derive(Clone, Debug, Default)]
struct Dns {
    /// By id; `None` for a free place.
    texts: Vec<Option<Arc<str>>>,
    ids: HashMap<Arc<str>, u32>,
    free: Vec<u32>,
}

impl Dns {
    fn intern(&mut self, dn: &str) -> Id {
        if let Some(&id) = self.ids.get(dn) {
            return Id(id);
        }
        let text: Arc<str> = Arc::from(dn);
        let id = match self.free.pop() {
            Some(id) => {
                self.texts[id as usize] = Some(text.clone());
                id
            }
            None => {
                // More DNs than u32 ids would need 4 billion entries and member values: not a directory this
                // model is kept for (its memory would be hundreds of GB first).
                let id = u32::try_from(self.texts.len()).expect("fewer than 2^32 distinct DNs");
                self.texts.push(Some(text.clone()));
                id
            }
        };
        self.ids.insert(text, id);
        Id(id)
    }

    /// The DN's text, shared.
    fn text(&self, id: Id) -> Arc<str> {
        self.texts.get(id.0 as usize).and_then(Option::clone).expect("an id of a kept DN")
    }

    fn get(&self, id: Id) -> &str {
        self.texts.get(id.0 as usize).and_then(Option::as_deref).expect("an id of a kept DN")
    }

    /// Frees every DN no kept entry holds any more (`live`: the ids the entries hold).
    fn sweep(&mut self, live: impl Iterator<Item = Id>) {
        let mut held = vec![false; self.texts.len()];
        for id in live {
            held[id.0 as usize] = true;
        }
        for (id, held) in held.into_iter().enumerate() {
            if !held && let Some(text) = self.texts[id].take() {
                self.ids.remove(&text);
                self.free.push(id as u32);
            }
        }
    }

    /// How many DNs are held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.ids.len()
    }
}

/// The kept directory model: the users and the groups under the base, by `entryUUID`, with the cookies of the
/// content-sync reads they came from. Owns its data (`Send + Sync + 'static`), so a daemon can keep it between
/// runs.
#[derive(Clone, Debug)]
pub struct Kept {
    query: Query,
    /// How the model learns what changed.
    source: Source,
    /// `ldap.page_size`, for [`Source::ModifyTimestamp`] reads (content-sync searches are not paged).
    page_size: i32,
    /// The server of the last read.
    served_by: String,
    /// What the root DSE said; `None` before the first [`Kept::read`].
    active_directory: Option<bool>,
    users: Side<User>,
    groups: Side<Group>,
    dns: Dns,
    /// Where the next `modifyTimestamp` read starts, before its margin ([`Kept::mark_read`]).
    mark: Option<DateTime<Utc>>,
    /// Set by a read whose answer the server's own data contradicts: an entry changed after the CSN of the
    /// answer's cookie exists (its CSN, the entry's DN). Cleared by a read without that contradiction.
    behind: Option<(String, String)>,
    /// [`Source::DirSync`]: the cookie of the last read (one for both parts: the read is of the naming context),
    /// with the domain controller that gave it.
    dirsync: Option<dirsync::Position>,
    /// [`Source::Usn`]: where the next read starts.
    usn: Option<usn::Watermark>,
    /// [`Source::Usn`]: the organizational units and containers of the naming context, and every entry above a
    /// kept one, by `objectGUID`, each with its DN as the server wrote it: one renamed or moved with entries
    /// below it is told by its DN changed ([`NeedsFullRead::MovedBelow`]).
    containers: HashMap<Guid, Box<str>>,
    /// [`Source::DirSync`], [`Source::Usn`]: a change the last read saw but cannot follow (entries moved below a renamed one, a
    /// group a `memberOf` filter may name renamed or deleted): until the model is read anew.
    blind: Option<NeedsFullRead>,
    /// The last resolve of the model, for the next to patch ([`Kept::resolve`]); not stored.
    last: Option<Arc<patch::Last>>,
}

impl Kept {
    /// An empty model for the base, filters and attributes of `s`: the first read (without a cookie) fills it.
    /// A lost cookie, or a [`SyncError::needs_full_read`], means starting again from here.
    pub fn new(s: &Settings) -> Kept {
        Kept {
            query: Query::of(s),
            source: Source::ContentSync,
            page_size: s.page_size,
            served_by: String::new(),
            active_directory: None,
            users: Side::default(),
            groups: Side::default(),
            dns: Dns::default(),
            mark: None,
            behind: None,
            dirsync: None,
            usn: None,
            containers: HashMap::default(),
            blind: None,
            last: None,
        }
    }

    /// Like [`Kept::new`], with the groups part read under `groups_base`, an entry above the base DN (such as
    /// the naming context), so that a member DN outside the base but under `groups_base` is known: a kept
    /// group, or neither (where [`Kept::new`] answers [`NeedsFullRead::MemberOutsideBase`]). The configured
    /// groups, and the sweep of every group, stay those under the base DN, as in the full read. A
    /// `groups_base` that does not hold the base DN is not used (the base DN is).
    pub fn with_groups_base(s: &Settings, groups_base: &str) -> Kept {
        let mut kept = Kept::new(s);
        if DnKey::new(&s.base_dn).is_within(&DnKey::new(groups_base)) {
            kept.query.groups_base = groups_base.to_string();
        }
        kept
    }

    /// The model, learning what changed from `source` (`modifyTimestamp` rather than content sync, say)
    /// before its first read.
    pub fn reading_by(self, source: Source) -> Kept {
        Kept { source, ..self }
    }

    /// How the model learns what changed.
    pub fn source(&self) -> Source {
        self.source
    }

    /// Whether the model is read as `other` is: by the same method, for the same entries and attributes.
    pub fn read_as(&self, other: &Kept) -> bool {
        self.source == other.source && self.query == other.query
    }

    /// Lets the last resolve go: the next resolves the whole model ([`Kept::resolve_sharing`] then takes the
    /// users it is given).
    pub fn forget_resolve(&mut self) {
        self.last = None;
    }

    /// The content-sync search of a part: its base (subtree), filter and attributes.
    pub fn search(&self, part: Part) -> (&str, &str, [&str; 2]) {
        (self.query.base(part), self.query.filter(part), self.query.attributes(part))
    }

    /// The cookie to send with the next read of a part; `None` before its first read.
    pub fn cookie(&self, part: Part) -> Option<&[u8]> {
        match part {
            Part::Users => self.users.cookie.as_deref(),
            Part::Groups => self.groups.cookie.as_deref(),
        }
    }

    /// How many entries a part holds.
    pub fn len(&self, part: Part) -> usize {
        match part {
            Part::Users => self.users.entries.len(),
            Part::Groups => self.groups.entries.len(),
        }
    }

    /// Whether the model holds nothing yet.
    pub fn is_empty(&self) -> bool {
        self.users.entries.is_empty() && self.groups.entries.is_empty()
    }

    /// The server the model was last read from (empty before its first read).
    pub fn served_by(&self) -> &str {
        &self.served_by
    }

    /// Records the server read and what its root DSE says (Active Directory or not), as [`Kept::read`] does.
    pub fn set_server(&mut self, served_by: &str, active_directory: bool) {
        self.served_by = served_by.to_string();
        self.active_directory = Some(active_directory);
    }

    /// Applies what one content-sync read of `part` said: the entries gone are dropped first, then every
    /// changed entry replaces the kept one whole (an entry renamed, or leaving and coming back, keeps its
    /// UUID). A read without a cookie is the whole content: every kept entry it does not send is gone. The
    /// read's cookie is kept.
    pub fn apply(&mut self, part: Part, read: &SyncRead) -> Applied {
        // Only what the full read uses of each entry: a server may send more attributes (operational ones, `*`).
        let (query, dns) = (&self.query, &mut self.dns);
        let applied = match part {
            Part::Users => self.users.apply(shrink(read, |e| User::of(e, query, dns)), dns),
            Part::Groups => self.groups.apply(shrink(read, |e| Group::of(e, query, dns)), dns),
        };
        self.sweep_released();
        applied
    }

    /// Frees the DNs no kept entry holds any more.
    fn sweep(&mut self) {
        let users = self.users.entries.values().map(|u| u.dn);
        let groups = self.groups.entries.values().flat_map(|g| g.members.iter().flatten().copied().chain([g.dn]));
        self.dns.sweep(users.chain(groups));
        (self.users.released, self.groups.released) = (false, false);
    }

    /// [`Kept::sweep`] after a read applied whole, when an entry was let go ([`Side::released`]): one kept,
    /// dropped or replaced by one not holding every DN it held, or one the read made and dropped itself. Every
    /// other DN the read made is held by an entry it applied. (A read that failed half way sweeps: the DNs of the
    /// entries it made and dropped are held by none.)
    fn sweep_released(&mut self) {
        if self.users.released || self.groups.released {
            self.sweep();
        }
    }

    /// The sweep after a read of one part: [`Kept::sweep_released`] for a read applied whole, else a sweep
    /// (the DNs of the entries a read that failed half way made are held by none).
    fn sweep_after<T, E>(&mut self, read: &Result<T, E>) {
        match read {
            Ok(_) => self.sweep_released(),
            Err(_) => self.sweep(),
        }
    }

    /// Reads what changed since the kept cookies (everything, for a part never read) and applies it: the
    /// root DSE first when the model does not know the server kind yet, then the users, then the groups. A
    /// part read is applied even when the other part's read fails. On an error whose
    /// [`SyncError::needs_full_read`] is true, start again from [`Kept::new`].
    pub async fn read(&mut self, ldap: &mut Ldap, served_by: &str, timeout: Duration) -> Result<Changes, SyncError> {
        let mut changes = Changes::default();
        if self.active_directory.is_none() || self.served_by != served_by {
            let root = search::server_kind(ldap, timeout).await;
            changes.searches += 1;
            // Never a control the server does not offer: Samba ends the connection on an unknown critical one.
            if self.source == Source::ContentSync && root.offers(syncrepl::SYNC_REQUEST_OID) == Some(false) {
                return Err(syncrepl::not_offered(&self.query.base_dn));
            }
            let not_ad = "the server's root DSE does not say it is Active Directory (or Samba AD)";
            if self.source == Source::DirSync && !root.active_directory {
                let naming_context = self.query.groups_base.clone();
                return Err(dirsync::Error::Unsupported { naming_context, reason: not_ad.into() }.into());
            }
            if self.source == Source::Usn && !root.active_directory {
                return Err(usn::Error::Unsupported { reason: not_ad.into() }.into());
            }
            self.set_server(served_by, root.active_directory);
        }
        if self.source == Source::DirSync {
            if let Some(reason) = refusal(&self.query.user_filter, &self.query.group_filter, ("DirSync", "dirsync")) {
                let naming_context = self.query.groups_base.clone();
                return Err(dirsync::Error::Unsupported { naming_context, reason }.into());
            }
            self.read_dirsync(ldap, timeout, &mut changes).await?;
            return Ok(changes);
        }
        if self.source == Source::Usn {
            let q = &self.query;
            if let Some(reason) = usn_refusal(&q.user_filter, &q.group_filter, &q.member_attribute) {
                return Err(usn::Error::Unsupported { reason }.into());
            }
            self.read_usn(ldap, timeout, &mut changes).await?;
            return Ok(changes);
        }
        let (began, since) = (std::time::Instant::now(), self.mark);
        for part in [Part::Users, Part::Groups] {
            let (search, dns) = ((&self.query, part, timeout), &mut self.dns);
            let applied = match (self.source, part) {
                (Source::ContentSync, Part::Users) => self.users.read(ldap, search, dns, User::of).await,
                (Source::ContentSync, Part::Groups) => self.groups.read(ldap, search, dns, Group::of).await,
                (Source::ModifyTimestamp { margin }, part) => {
                    let paging = Paging { page_size: self.page_size, timeout, margin };
                    let search = (&self.query, part, paging, since);
                    match part {
                        Part::Users => self.users.read_stamps(ldap, search, dns, User::of).await,
                        Part::Groups => self.groups.read_stamps(ldap, search, dns, Group::of).await,
                    }
                }
                (Source::DirSync | Source::Usn, _) => unreachable!("read by Kept::read_dirsync or Kept::read_usn"),
            };
            // Entries kept from a read that failed half way are dropped with it: so are their DNs. A read applied
            // whole frees only what an entry let go (a quiet run, or one adding users and members, need not go
            // through every entry).
            self.sweep_after(&applied);
            changes.searches += 1;
            match part {
                Part::Users => changes.users = applied?,
                Part::Groups => changes.groups = applied?,
            }
        }
        match self.source {
            Source::ContentSync => {
                self.behind = self.newer_than_cookie(ldap, timeout).await?;
                changes.searches += 1;
                changes.behind = self.behind.is_some();
            }
            Source::ModifyTimestamp { .. } => self.mark_read(began.elapsed()),
            Source::DirSync | Source::Usn => {}
        }
        Ok(changes)
    }

    /// [`Kept::read`] by DirSync. A model not read whole: the cookie as of now (`dirsync::watermark`), then
    /// each part whole by `objectGUID`. Else one DirSync read of the naming context (the groups part's base)
    /// from the kept cookie, asking for every attribute the model or the filters depend on
    /// ([`objects::watched`]); then the objects it names, read again part by part ([`Side::read_objects`]).
    /// What DirSync does not name is then looked for:
    /// - a group's member values follow a member renamed, moved or deleted without the group being named: the
    ///   kept groups holding the old DN of a kept entry renamed or gone are read again, and where an object the
    ///   model does not keep was renamed or deleted, every kept group holding a member that is no kept entry;
    /// - entries below an object renamed or moved change their DN without a change of their own: an object
    ///   renamed (sent with `name`, without `whenCreated`) with any entry below it is [`NeedsFullRead::MovedBelow`].
    ///
    /// The cookie is kept only once all of it is applied.
    async fn read_dirsync(
        &mut self,
        ldap: &mut Ldap,
        timeout: Duration,
        changes: &mut Changes,
    ) -> Result<(), SyncError> {
        let nc = self.query.groups_base.clone();
        let paging = (self.page_size, timeout);
        let since = self.dirsync.take().filter(|_| self.users.whole && self.groups.whole);
        let Some(since) = since else {
            let cookie = dirsync::position(ldap, &nc, timeout).await?;
            changes.searches += 3;
            self.blind = None;
            self.read_named(ldap, paging, None, changes).await?;
            self.dirsync = Some(cookie);
            return Ok(());
        };
        let watched =
            objects::watched(&self.watched_attributes(), &[&self.query.user_filter, &self.query.group_filter]);
        let attrs: Vec<&str> = match &watched {
            Some(w) => w.iter().map(String::as_str).collect(),
            None => vec!["*"],
        };
        let (read, next) = dirsync::read_from(ldap, &nc, ("(objectClass=*)", &attrs), &since, timeout).await?;
        changes.searches += read.rounds + 2;
        let q = &self.query;
        let member_of = tests_member_of(&q.user_filter) || tests_member_of(&q.group_filter);
        let named = Named::of(&read, member_of);
        let before = self.named_dns(&named);
        let renamed: Vec<&dirsync::ChangedObject> = read
            .changed
            .iter()
            .filter(|o| o.attrs.contains_key("name") && !o.attrs.contains_key("whencreated"))
            .collect();
        // A member deleted, renamed or moved that the model did not keep (a contact, a computer, a user outside the
        // base moving in): groups may hold its old DN, which the model cannot tell.
        let unkept = |g: &Guid| !before.iter().any(|(u, _, _)| u.0 == g.0);
        let foreign = named.deleted.iter().any(unkept) || renamed.iter().any(|o| unkept(&o.guid));
        let renamed: Vec<String> = renamed.into_iter().map(|o| o.dn.clone()).collect();
        self.read_named(ldap, paging, Some(&named), changes).await?;
        let follow = FollowUp { before, renamed, foreign, member_of, kept_renamed: false, also: Vec::new() };
        self.follow_up(ldap, paging, &named, follow, changes).await?;
        self.dirsync = Some(next);
        Ok(())
    }

    /// What a change read does once the objects it named were read again ([`Kept::read_dirsync`],
    /// [`Kept::read_usn`]): see [`FollowUp`]. Sets [`Changes::behind`] when only a full read can tell now.
    async fn follow_up(
        &mut self,
        ldap: &mut Ldap,
        paging: (i32, Duration),
        named: &Named,
        follow: FollowUp,
        changes: &mut Changes,
    ) -> Result<(), SyncError> {
        let FollowUp { before, mut renamed, foreign, member_of, kept_renamed, also } = follow;
        let mut stale: Vec<Arc<str>> = Vec::new();
        for (uuid, old, group) in before {
            let now = self.dn_now(uuid);
            if now.map(|id| self.dns.get(id)) != Some(&*old) {
                if group && member_of && self.query.names_in_filters(&old) {
                    self.blind = Some(NeedsFullRead::BackLink { dn: old.to_string() });
                }
                if kept_renamed {
                    renamed.extend(now.map(|id| self.dns.get(id).to_string()));
                }
                stale.push(old);
            }
        }
        for dn in renamed {
            changes.searches += 1;
            if objects::has_children(ldap, &dn, paging.1).await? {
                self.blind = Some(NeedsFullRead::MovedBelow { dn });
            }
        }
        let mut again = self.groups_holding(&stale, foreign, &named.changed);
        again.extend(also);
        again.sort_unstable();
        again.dedup();
        if !again.is_empty() {
            let again = Named { changed: again, deleted: Vec::new() };
            self.read_named(ldap, paging, Some(&again), changes).await?;
        }
        changes.behind = self.blind.is_some();
        Ok(())
    }

    /// The DN a kept entry (user or group) has now.
    fn dn_now(&self, uuid: EntryUuid) -> Option<Id> {
        self.users.entries.get(&uuid).map(Dn::dn).or_else(|| self.groups.entries.get(&uuid).map(Dn::dn))
    }

    /// [`Kept::read`] by update sequence numbers ([`usn`]). A model not read whole: the watermark as of now
    /// (refused when the bind account cannot see tombstones), the organizational units and containers of the
    /// naming context, then each part whole by `objectGUID`. Else one read of what changed above the kept
    /// watermark, whose objects are read again part by part as a DirSync read's are ([`Kept::read_dirsync`]).
    /// What that read does not name is then looked for:
    /// - a kept entry renamed, moved or deleted: the kept groups holding its old DN are read again; a deleted
    ///   object the model does not keep: every kept group holding a member that is no kept entry;
    /// - any object changed (kept or not): the kept groups its `memberOf` names that do not hold its DN now, and
    ///   those that hold its DN now but are not in its `memberOf` (a group's member values follow a member
    ///   renamed or moved without the group changing);
    /// - a container, or a kept entry, renamed or moved with entries below it: [`NeedsFullRead::MovedBelow`].
    ///
    /// The watermark is kept only once all of it is applied.
    async fn read_usn(&mut self, ldap: &mut Ldap, timeout: Duration, changes: &mut Changes) -> Result<(), SyncError> {
        let nc = self.query.groups_base.clone();
        let paging = (self.page_size, timeout);
        let Some(mark) = self.usn.take().filter(|_| self.users.whole && self.groups.whole) else {
            if usn::deleted_objects_visible(ldap, &nc, timeout).await?.is_none() {
                return Err(usn::Error::NoDeletedObjects { naming_context: nc }.into());
            }
            let mark = usn::watermark(ldap, timeout).await?;
            self.blind = None;
            self.containers = usn::containers(ldap, &nc, paging).await?.into_iter().collect();
            changes.searches += 4;
            self.read_named(ldap, paging, None, changes).await?;
            let kept: Vec<Id> =
                self.users.entries.values().map(Dn::dn).chain(self.groups.entries.values().map(Dn::dn)).collect();
            changes.searches += self.track_above(ldap, &kept, paging).await?;
            self.usn = Some(mark);
            return Ok(());
        };
        let read = usn::read(ldap, &nc, &mark, paging).await?;
        changes.searches += read.searches;
        if read.changed.is_empty() && read.deleted.is_empty() {
            self.usn = Some(read.watermark);
            return Ok(());
        }
        let changed: Vec<Guid> = read.changed.iter().map(|c| c.guid).collect();
        let named = Named { changed, deleted: read.deleted.clone() };
        let before = self.named_dns(&named);
        let mut renamed: Vec<String> = Vec::new();
        for c in &read.changed {
            // The DN as the server writes it: a rename that changes only case or spacing changes the DNs below.
            match self.containers.get_mut(&c.guid) {
                Some(old) if **old != *c.dn => {
                    renamed.push(c.dn.clone());
                    *old = c.dn.as_str().into();
                }
                Some(_) => {}
                None if c.container => {
                    self.containers.insert(c.guid, c.dn.as_str().into());
                }
                None => {}
            }
        }
        for g in &read.deleted {
            self.containers.remove(g);
        }
        let unkept = |g: &Guid| !before.iter().any(|(u, _, _)| u.0 == g.0);
        // A memberOf that came in ranges cannot be checked against the kept groups (`groups_disagreeing`): such an
        // object may be a member renamed or moved, as a deletion the model did not keep may be.
        let foreign = named.deleted.iter().any(unkept) || read.changed.iter().any(|c| c.member_of_ranged);
        self.read_named(ldap, paging, Some(&named), changes).await?;
        let also = self.groups_disagreeing(&read.changed, &named.changed);
        let follow = FollowUp { before, renamed, foreign, member_of: false, kept_renamed: true, also };
        self.follow_up(ldap, paging, &named, follow, changes).await?;
        let now_kept: Vec<Id> = named.changed.iter().filter_map(|g| self.dn_now(EntryUuid(g.0))).collect();
        changes.searches += self.track_above(ldap, &now_kept, paging).await?;
        changes.behind = self.blind.is_some();
        self.usn = Some(read.watermark);
        Ok(())
    }

    /// The kept groups (by GUID) whose member values disagree with what a changed object's `memberOf` says:
    /// named there but not holding the object's DN now, or holding it but not named there. Leaves out those in
    /// `read` (read again already).
    fn groups_disagreeing(&self, changed: &[usn::Changed], read: &[Guid]) -> Vec<Guid> {
        let read: HashSet<EntryUuid> = read.iter().map(|g| EntryUuid(g.0)).collect();
        let by_key: HashMap<DnKey, EntryUuid> = self
            .groups
            .entries
            .iter()
            .filter(|(uuid, _)| !read.contains(*uuid))
            .map(|(uuid, g)| (DnKey::new(self.dns.get(g.dn)), *uuid))
            .collect();
        // Each changed object's DN (by id, where the model holds that DN at all) and the groups naming it.
        let mut claimed: HashMap<Id, HashSet<EntryUuid>> = HashMap::default();
        let mut out: Vec<Guid> = Vec::new();
        for c in changed {
            let groups: HashSet<EntryUuid> =
                c.member_of.iter().filter_map(|g| by_key.get(&DnKey::new(g)).copied()).collect();
            match self.dns.ids.get(c.dn.as_str()).map(|&id| Id(id)) {
                Some(id) => {
                    claimed.entry(id).or_default().extend(groups);
                }
                // No kept group holds this DN: each group its memberOf names disagrees.
                None => out.extend(groups.into_iter().map(|u| Guid(u.0))),
            }
        }
        if !claimed.is_empty() {
            for (uuid, g) in &self.groups.entries {
                if read.contains(uuid) {
                    continue;
                }
                let holds: HashSet<Id> =
                    g.members.iter().flatten().filter(|m| claimed.contains_key(m)).copied().collect();
                let disagrees = claimed.iter().any(|(id, groups)| holds.contains(id) != groups.contains(uuid));
                if disagrees {
                    out.push(Guid(uuid.0));
                }
            }
        }
        out
    }

    /// Adds to [`Kept::containers`] every entry above one of `dns` (up to the naming context) that it does not
    /// hold yet, found by `distinguishedName` as the server wrote it. One not found (renamed since) may have
    /// moved kept entries: [`NeedsFullRead::MovedBelow`]. Returns the searches made.
    async fn track_above(&mut self, ldap: &mut Ldap, dns: &[Id], paging: (i32, Duration)) -> Result<usize, SyncError> {
        let nc = DnKey::new(&self.query.groups_base);
        let held: HashSet<DnKey> = self.containers.values().map(|dn| DnKey::new(dn)).collect();
        let mut missing: HashMap<DnKey, String> = HashMap::default();
        // Entries share their parents: a DN above one already gone through has its own above it gone through too.
        let mut visited: HashSet<&str> = HashSet::default();
        for &id in dns {
            let mut at = self.dns.get(id);
            while let Some(up) = dn_parent(at) {
                if !visited.insert(up) {
                    break;
                }
                let key = DnKey::new(up);
                if key == nc || !key.is_within(&nc) {
                    break;
                }
                if !held.contains(&key) {
                    missing.entry(key).or_insert_with(|| up.to_string());
                }
                at = up;
            }
        }
        if missing.is_empty() {
            return Ok(0);
        }
        let asked: Vec<String> = missing.values().cloned().collect();
        let (found, searches) = usn::by_dn(ldap, &self.query.groups_base, &asked, paging).await?;
        for (guid, dn) in found {
            missing.remove(&DnKey::new(&dn));
            self.containers.insert(guid, dn.into());
        }
        if let Some(dn) = missing.into_values().next() {
            self.blind = Some(NeedsFullRead::MovedBelow { dn });
        }
        Ok(searches)
    }

    /// The kept entries `named` names, each with its DN now and whether it is a group: where the DN changes, or
    /// the entry goes, kept groups may hold the old one.
    fn named_dns(&self, named: &Named) -> Vec<(EntryUuid, Arc<str>, bool)> {
        let kept = |g: &Guid| {
            let uuid = EntryUuid(g.0);
            let user = self.users.entries.get(&uuid).map(|e| (e.dn, false));
            user.or_else(|| self.groups.entries.get(&uuid).map(|e| (e.dn, true))).map(|(id, group)| (uuid, id, group))
        };
        let found = named.changed.iter().chain(&named.deleted).filter_map(kept);
        found.map(|(uuid, id, group)| (uuid, self.dns.text(id), group)).collect()
    }

    /// Reads both parts by `objectGUID` ([`Side::read_objects`]) and adds what each did to `changes`.
    async fn read_named(
        &mut self,
        ldap: &mut Ldap,
        paging: (i32, Duration),
        named: Option<&Named>,
        changes: &mut Changes,
    ) -> Result<(), SyncError> {
        for part in [Part::Users, Part::Groups] {
            let (q, dns) = ((&self.query, part, paging), &mut self.dns);
            let read = match part {
                Part::Users => self.users.read_objects(ldap, q, named, dns, User::of).await,
                Part::Groups => self.groups.read_objects(ldap, q, named, dns, Group::of).await,
            };
            self.sweep_after(&read);
            let (applied, searches) = read?;
            changes.searches += searches;
            if part == Part::Groups {
                changes.searches += self.complete_ranges(ldap, paging.1).await?;
            }
            let sum = match part {
                Part::Users => &mut changes.users,
                Part::Groups => &mut changes.groups,
            };
            sum.changed += applied.changed;
            sum.gone += applied.gone;
            sum.sent += applied.sent;
        }
        Ok(())
    }

    /// Reads whole the member values of the kept groups that came in ranges (Active Directory past 1,500 values,
    /// or windows of `ldap.member_range_size`), window by window from the first, as the full read completes them
    /// (`range::complete`). A group that cannot be completed fails the read. Returns the searches made.
    async fn complete_ranges(&mut self, ldap: &mut Ldap, timeout: Duration) -> Result<usize, SyncError> {
        let ranged: Vec<(EntryUuid, Arc<str>)> = self
            .groups
            .entries
            .iter()
            .filter(|(_, g)| g.members.is_none())
            .map(|(uuid, g)| (*uuid, self.dns.text(g.dn)))
            .collect();
        let (attr, window) = (self.query.member_attribute.clone(), self.query.member_range_size);
        let mut searches = 0;
        for (uuid, dn) in ranged {
            let start = range::Ranged { values: Vec::new(), next: Some(0) };
            let values = range::complete(start, &attr, window, |request| {
                searches += 1;
                range::read_window(ldap.clone(), dn.to_string(), timeout, request)
            })
            .await
            .map_err(|e| SyncError::Ldap { code: None, reason: format!("reading the members of {dn}: {e}") })?;
            let members: Box<[Id]> = values.iter().map(|m| self.dns.intern(m)).collect();
            if let Some(group) = self.groups.entries.get_mut(&uuid) {
                group.members = Some(members);
            }
            // Not marked as a change: the next resolve is of the whole model.
            self.groups.marks = None;
        }
        Ok(searches)
    }

    /// The attributes of both parts.
    fn watched_attributes(&self) -> Vec<&str> {
        let q = &self.query;
        let mut all = q.attributes(Part::Users).to_vec();
        all.extend(q.attributes(Part::Groups));
        all
    }

    /// The kept groups (by GUID) holding a member value in `stale`, or with `foreign`, any member value that
    /// names no kept entry; leaving out those in `read` (read again already).
    fn groups_holding(&self, stale: &[Arc<str>], foreign: bool, read: &[Guid]) -> Vec<Guid> {
        if stale.is_empty() && !foreign {
            return Vec::new();
        }
        let stale: HashSet<Id> = stale.iter().filter_map(|dn| self.dns.ids.get(dn).map(|&id| Id(id))).collect();
        let kept: HashSet<Id> = match foreign {
            false => HashSet::default(),
            true => self.users.entries.values().map(Dn::dn).chain(self.groups.entries.values().map(Dn::dn)).collect(),
        };
        let read: HashSet<EntryUuid> = read.iter().map(|g| EntryUuid(g.0)).collect();
        let holds = |m: &Id| stale.contains(m) || (foreign && !kept.contains(m));
        let mut out: Vec<Guid> = self
            .groups
            .entries
            .iter()
            .filter(|(uuid, g)| !read.contains(*uuid) && g.members.iter().flatten().any(holds))
            .map(|(uuid, _)| Guid(uuid.0))
            .collect();
        out.sort_unstable();
        out
    }

    /// After a `modifyTimestamp` read of both parts that took `took`: the next read starts from the server's
    /// time when this one began, at the latest. One mark for both parts, so that a part that seldom changes
    /// (the groups, say) is not read again from its own older latest change. The latest timestamp either part
    /// sent is at most the server's time when the read ended; less the read's length (rounded up, and a second
    /// for timestamps written to the second), it is at most the time the read began, so a write the searches
    /// passed by is read next time whatever the margin. The mark never moves back.
    fn mark_read(&mut self, took: Duration) {
        let Some(latest) = self.users.latest.max(self.groups.latest) else { return };
        let took = chrono::Duration::seconds(took.as_secs() as i64 + 2);
        self.mark = self.mark.max(Some(latest - took));
    }

    /// An entry of the model's searches changed after the CSN of the kept cookie, if the directory holds one
    /// (its CSN and DN). slapd answers a content-sync search only with entries up to its contextCSN, which a
    /// restart after a crash sets back to the last checkpoint (`syncprov-checkpoint`): entries changed since
    /// are then left out of the answer, even of one without a cookie, until the next write moves contextCSN
    /// on. One search, for entries whose `entryCSN` is above the cookie's (at most one entry, no attribute),
    /// under the groups part's base (users outside the base DN there can only make it say so needlessly).
    async fn newer_than_cookie(
        &self,
        ldap: &mut Ldap,
        timeout: Duration,
    ) -> Result<Option<(String, String)>, SyncError> {
        let cookies = [Part::Users, Part::Groups].map(|p| self.cookie(p).and_then(cookie_csn));
        let Some(csn) = cookies.into_iter().flatten().min() else {
            return Ok(None);
        };
        let filter = format!("(&(|{}{})({}))", self.query.user_filter, self.query.group_filter, after_csn(&csn));
        let found = ldap
            .with_timeout(timeout)
            .with_search_options(ldap3::SearchOptions::new().sizelimit(1))
            .search(&self.query.groups_base, ldap3::Scope::Subtree, &filter, vec!["1.1"])
            .await
            .map_err(|e| SyncError::of_search(e, timeout, "the search for entries newer than the cookie"))?;
        // sizeLimitExceeded (4) with one entry: there is more than one.
        if found.1.rc != 0 && found.1.rc != 4 {
            return Err(SyncError::Ldap {
                code: Some(found.1.rc),
                reason: format!(
                    "the search for entries newer than the cookie: {}",
                    crate::ldap::error::result_reason(found.1.rc, &found.1.text)
                ),
            });
        }
        let dn = found.0.into_iter().filter_map(crate::ldap::entry::decode).map(|e| e.dn).next();
        Ok(dn.map(|dn| (csn, dn)))
    }

    /// The entries a full read of the same directory would produce for the configured `names` with `s`, or
    /// why only a full read can tell.
    pub fn entries(&self, s: &Settings, names: &[GroupName]) -> Result<Entries, NeedsFullRead> {
        let active_directory = self.answerable(s, names)?;
        let users = Arc::new(self.user_index(s, None));
        self.entries_with(s, names, None, active_directory, users)
    }

    /// The user index of the kept users, as the users search builds it. Users as `previous` holds them are
    /// shared with it rather than made again, so that a group kept from an earlier resolve and one resolved
    /// now hold the same users.
    fn user_index(&self, s: &Settings, previous: Option<model::Earlier<'_>>) -> UserIndex {
        let mut users = UserIndexBuilder::default();
        let a = UserAttributes { username: &s.username_attribute, include_disabled: s.include_disabled };
        for user in sorted(&self.users, &self.dns) {
            users.push_reusing(user.read(&a, &self.dns), s, previous);
        }
        users.finish(s)
    }

    /// [`Kept::user_index`] when the users changed since `previous` was made are `added` alone and each was
    /// created after every other kept user (in the index's order, [`sorted`], they come last): `previous` with
    /// them pushed, as a build from every user gives it, without going through the others again. `None`
    /// otherwise (a user added that the model no longer holds, or one that does not sort last). When nothing
    /// else holds `previous` (a daemon's change runs), it is taken and gone on from, not copied: it is left
    /// empty then.
    fn user_index_appended(
        &self,
        s: &Settings,
        previous: &mut Arc<UserIndex>,
        added: &[EntryUuid],
    ) -> Option<UserIndex> {
        let dns = &self.dns;
        let mut new: Vec<(Order, &User)> = added
            .iter()
            .map(|uuid| self.users.entries.get_key_value(uuid).map(|(uuid, u)| (order(uuid, u, dns), u)))
            .collect::<Option<_>>()?;
        new.sort_by(|a, b| a.0.cmp(&b.0));
        new.dedup_by(|a, b| a.0 == b.0);
        let first = new.first()?.0;
        // The added users all come at `first` or after it: every other user comes before it when as many do.
        let before = self.users.entries.iter().filter(|(uuid, u)| order(uuid, *u, dns) < first).count();
        if before != self.users.entries.len() - new.len() {
            return None;
        }
        let a = UserAttributes { username: &s.username_attribute, include_disabled: s.include_disabled };
        // Each with the last index's copy of the same user, if it holds one, found before the index is taken.
        let new: Vec<_> = new
            .into_iter()
            .map(|(_, user)| {
                let entry = user.read(&a, dns);
                let shared = previous.earlier().same_as(&entry).cloned();
                (entry, shared)
            })
            .collect();
        let mut users = match Arc::get_mut(previous) {
            // 100,000 users and their tables copied for a day of new hires, then the copy let go: a third of the
            // resolve of a change run adding them.
            Some(owned) => UserIndexBuilder::resume(std::mem::take(owned)),
            None => UserIndexBuilder::resume(UserIndex::clone(previous)),
        };
        for (entry, shared) in new {
            users.push_sharing(entry, s, shared);
        }
        Some(users.finish(s))
    }

    /// [`Kept::entries`] with the user index given, for the configured `names`; with `of`, only for those of
    /// them whose index is in it (the groups holding those names are read as a full read of every name reads
    /// them, so that each answers to the same names).
    fn entries_with(
        &self,
        s: &Settings,
        names: &[GroupName],
        of: Option<&[usize]>,
        active_directory: Option<bool>,
        users: Arc<UserIndex>,
    ) -> Result<Entries, NeedsFullRead> {
        let mut entries = Entries::new(self.served_by.clone(), users);
        entries.active_directory = active_directory;
        let base = DnKey::new(&s.base_dn);
        let dns = &self.dns;
        let all_groups: Vec<&Group> = sorted(&self.groups, dns);
        // The full read's group searches (by name, the sweep) are under the base DN.
        let groups: Vec<&Group> =
            all_groups.iter().copied().filter(|e| DnKey::new(dns.get(e.dn)).is_within(&base)).collect();
        if self.source.reads_objects() {
            order_known(&entries, names, &groups)?;
        }
        let wanted: std::borrow::Cow<[GroupName]> = match of {
            Some(of) => of.iter().map(|&i| names[i].clone()).collect(),
            None => names.into(),
        };
        let named: Vec<&Group> = match of {
            Some(_) => {
                let holds = |e: &&Group| e.names.iter().any(|v| wanted.contains(&GroupName::new(v)));
                groups.iter().copied().filter(holds).collect()
            }
            None => groups.clone(),
        };
        // The search by name, chunk by chunk.
        for chunk in names.chunks(NAMES_PER_FILTER) {
            for entry in &named {
                self.add_named_in(&mut entries, entry, chunk)?;
            }
        }
        let mode = match model::nesting_mode(s.nesting, entries.active_directory, &entries.served_by) {
            Ok(mode) => mode,
            Err(e) => {
                entries.failure = Some(e);
                return Ok(entries);
            }
        };
        match mode {
            Nesting::Recursive => {}
            Nesting::Off | Nesting::Auto => return Ok(entries),
            Nesting::InChain => {
                self.in_chain(s, &wanted, &all_groups, &mut entries)?;
                return Ok(entries);
            }
        }
        // The walk of member groups, as `search::Reader::expand` makes it.
        let mut roots: Vec<DnKey> = entries.match_names(s, &wanted).into_iter().filter_map(Result::ok).collect();
        let mut seen = HashSet::default();
        roots.retain(|k| seen.insert(k.clone()));
        let patch = of.map(|_| names);
        let walk = self.walk(s, roots, patch, [&groups, &all_groups], &mut entries)?;
        if of.is_some() && walk.capped() {
            // The walk shared by every configured group reads further down from each than a walk from some of
            // them: what the cap left unread may differ. Only a resolve of the whole model can tell.
            return Err(NeedsFullRead::NotRead);
        }
        Ok(entries)
    }

    /// Records `entry` as the search by name for the names of `chunk` finds it, if it holds one of them.
    fn add_named_in(&self, entries: &mut Entries, entry: &Group, chunk: &[GroupName]) -> Result<(), NeedsFullRead> {
        if entry.names.iter().any(|v| chunk.contains(&GroupName::new(v))) {
            let g = self.record(entries, entry, Some(chunk))?;
            entries.add_named(g);
        }
        Ok(())
    }

    /// A kept group's record, as the group searches read it (`wanted`: the names of the search by name).
    fn record(
        &self,
        entries: &Entries,
        group: &Group,
        wanted: Option<&[GroupName]>,
    ) -> Result<GroupRecord, NeedsFullRead> {
        let dn = self.dns.get(group.dn).to_string();
        match &group.members {
            None => Err(NeedsFullRead::RangedMembers { dn }),
            Some(members) => {
                let members = Ok(members.iter().map(|&m| self.dns.get(m)));
                Ok(search::group_record(dn, &group.names, members, &entries.users, wanted))
            }
        }
    }

    /// The walk of member groups from `roots` into `entries`, as `search::Reader::expand` makes it (`groups`:
    /// those under the base DN, which a sweep reads, and every kept group). In a patch (`patch`: every
    /// configured name), a group the walk reaches that holds a configured name is read as the search by name
    /// reads it in a resolve of the whole model, where it is found by name before the walk.
    fn walk(
        &self,
        s: &Settings,
        roots: Vec<DnKey>,
        patch: Option<&[GroupName]>,
        [groups, all_groups]: [&[&Group]; 2],
        entries: &mut Entries,
    ) -> Result<Walk, NeedsFullRead> {
        let (dns, base) = (&self.dns, DnKey::new(&s.base_dn));
        let by_key: HashMap<DnKey, &Group> = all_groups.iter().map(|e| (DnKey::new(dns.get(e.dn)), *e)).collect();
        let groups_base = DnKey::new(&self.query.groups_base);
        let mut forms: Option<HashSet<String>> = None;
        let names = patch.unwrap_or_default();
        let configured: HashSet<&GroupName> = names.iter().collect();
        // The search by name reads only groups under the base DN.
        let by_name = |entries: &mut Entries, entry: &Group| -> Result<bool, NeedsFullRead> {
            if !entry.names.iter().any(|v| configured.contains(&GroupName::new(v)))
                || !DnKey::new(dns.get(entry.dn)).is_within(&base)
            {
                return Ok(false);
            }
            for chunk in names.chunks(NAMES_PER_FILTER) {
                self.add_named_in(entries, entry, chunk)?;
            }
            Ok(true)
        };
        let mut walk = Walk::new(roots, s.max_nesting_depth);
        while let Some(to_read) = walk.step(&entries.groups) {
            if walk.wants_sweep(to_read.len()) {
                for entry in groups {
                    let key = DnKey::new(dns.get(entry.dn));
                    // In a patch, a group read already is not read again (no group comes in ranges there).
                    if (patch.is_some() && entries.groups.contains_key(&key)) || by_name(entries, entry)? {
                        continue;
                    }
                    let g = self.record(entries, entry, None)?;
                    entries.groups.entry(key).or_insert(g);
                }
                walk.sweep = Sweep::Done;
            }
            let (to_read, neither) = walk.after_sweep(to_read, &entries.groups, &base);
            entries.neither.extend(neither);
            for (key, raw) in to_read {
                if let Some(entry) = by_key.get(&key) {
                    if !by_name(entries, entry)? {
                        let g = self.record(entries, entry, None)?;
                        entries.groups.insert(key, g);
                    }
                    continue;
                }
                let group = || parent(&entries.groups, &key);
                if !key.is_within(&groups_base) {
                    return Err(NeedsFullRead::MemberOutsideBase {
                        group: group(),
                        member: raw,
                        base_dn: self.query.groups_base.clone(),
                    });
                }
                let known = forms.get_or_insert_with(|| self.forms(s));
                if !comparable(&raw, known) {
                    return Err(NeedsFullRead::UncomparableMember { group: group(), member: raw });
                }
                entries.neither.insert(key);
            }
        }
        Ok(walk)
    }

    /// The in-chain searches of the configured groups found (`search::Reader::read_in_chain`), answered from
    /// the model: the users (under the base, admitted by the user filter) a chain of member values leads to
    /// from the group, through any group. Only a model read by DirSync with `ldap.group_filter` admitting every
    /// group holds every group of the naming context, as the server's chains go through any; a member value
    /// naming no kept group is then no group of the domain, and its chain ends there, as on the server.
    fn in_chain(
        &self,
        s: &Settings,
        names: &[GroupName],
        all_groups: &[&Group],
        entries: &mut Entries,
    ) -> Result<(), NeedsFullRead> {
        let member = self.query.member_attribute.eq_ignore_ascii_case("member");
        if !self.source.reads_objects() || !every_group(&self.query.group_filter) || !member {
            return Err(NeedsFullRead::ActiveDirectory);
        }
        let dns = &self.dns;
        let by_key: HashMap<DnKey, &Group> = all_groups.iter().map(|g| (DnKey::new(dns.get(g.dn)), *g)).collect();
        let mut roots: Vec<DnKey> = entries.match_names(s, names).into_iter().filter_map(Result::ok).collect();
        let mut seen_roots = HashSet::default();
        roots.retain(|k| seen_roots.insert(k.clone()));
        for root in roots {
            let Some(group) = by_key.get(&root) else { continue };
            let (mut members, mut disabled) = (Vec::new(), Vec::new());
            let (mut seen, mut to_visit) = (HashSet::default(), vec![*group]);
            let (mut users_seen, mut disabled_seen) = (HashSet::default(), HashSet::default());
            seen.insert(group.dn);
            while let Some(g) = to_visit.pop() {
                let Some(values) = &g.members else {
                    return Err(NeedsFullRead::RangedMembers { dn: dns.get(g.dn).to_string() });
                };
                for &m in values.iter() {
                    let dn = dns.get(m);
                    let key = DnKey::new(dn);
                    if let Some(inner) = by_key.get(&key) {
                        if seen.insert(inner.dn) {
                            to_visit.push(*inner);
                        }
                    } else if let Some(n) = entries.users.find(dn) {
                        if users_seen.insert(n) {
                            members.push(n);
                        }
                    } else if let Some(&n) = entries.users.disabled.get(&key)
                        && disabled_seen.insert(n)
                    {
                        disabled.push(n);
                    }
                }
            }
            entries.in_chain.insert(root, Ok((members, disabled)));
        }
        Ok(())
    }

    /// Whether the model can answer for `names` with `s` at all (read whole, the same settings, the server not
    /// behind its answers, names it can match, a server kind it knows when the settings depend on it): the root
    /// DSE's answer to record in the entries (`None` when the settings do not ask), or why only a full read can
    /// tell.
    fn answerable(&self, s: &Settings, names: &[GroupName]) -> Result<Option<bool>, NeedsFullRead> {
        if !(self.users.whole && self.groups.whole) {
            return Err(NeedsFullRead::NotRead);
        }
        if let Some(setting) = self.query.difference(s) {
            return Err(NeedsFullRead::SettingChanged { setting });
        }
        // Read by another method, or another margin, than the settings now ask for (a reload changed them).
        if s.change_detection != crate::ldap::ChangeDetection::Off && !s.change_detection.allows(self.source) {
            return Err(NeedsFullRead::SettingChanged { setting: "ldap.change_detection" });
        }
        if let Some((csn, dn)) = &self.behind {
            return Err(NeedsFullRead::ProviderBehind { csn: csn.clone(), dn: dn.clone() });
        }
        if let Some(why) = &self.blind {
            return Err(why.clone());
        }
        let active_directory = match model::needs_server_kind(s) {
            false => None,
            true => match self.active_directory {
                None => return Err(NeedsFullRead::ServerKindUnknown),
                // A model read by DirSync holds every group of the naming context: see `in_chain`.
                Some(true) if self.source.reads_objects() => Some(true),
                Some(true) => return Err(NeedsFullRead::ActiveDirectory),
                Some(false) => Some(false),
            },
        };
        check_names(s, names)?;
        Ok(active_directory)
    }

    /// The attribute types the kept DNs and the base DN are written with.
    fn forms(&self, s: &Settings) -> HashSet<String> {
        let users = self.users.entries.values().map(|e| self.dns.get(e.dn));
        let dns = users.chain(self.groups.entries.values().map(|e| self.dns.get(e.dn)));
        dns.chain([s.base_dn.as_str(), self.query.groups_base.as_str()])
            .filter_map(dn::forms)
            .flat_map(|f| f.into_iter().map(|(t, _)| t))
            .collect()
    }
}

/// The CSN a content-sync cookie stands for (`rid=000,csn=<CSN>`, slapd's shape): the oldest of its `csn`
/// values when it holds several (one per provider); `None` for a cookie of another shape.
fn cookie_csn(cookie: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(cookie).ok()?;
    let csns = text.split(',').find_map(|f| f.strip_prefix("csn="))?;
    csns.split(';').min().map(str::to_string)
}

/// A filter for entries whose `entryCSN` is above `csn`: `entryCSN>=` the next CSN (the change count one up,
/// so that slapd can use its entryCSN index), or a negation when the count cannot go up.
fn after_csn(csn: &str) -> String {
    // YYYYmmddHHMMSS.ffffffZ#count#sid#mod
    let parts: Vec<&str> = csn.split('#').collect();
    if let [time, count, _, _] = parts.as_slice()
        && let Ok(n) = u32::from_str_radix(count, 16)
        && n < 0xff_ffff
    {
        return format!("entryCSN>={time}#{:06x}#000#000000", n + 1);
    }
    format!("!(entryCSN<={csn})")
}

/// A part's entries in the order slapd's searches return them, as far as the model can tell: by creation,
/// which the time of a version 1 (time-based) UUID gives (slapd makes its entryUUIDs so, and back-mdb
/// returns entries in the order of their IDs, given at creation and kept by a rename); then by DN. The order
/// shows in a snapshot only where the full read's depends on the server's order (see the module doc).
fn sorted<'k, E: Dn>(side: &'k Side<E>, dns: &'k Dns) -> Vec<&'k E> {
    let mut entries: Vec<(Order<'k>, &E)> = side.entries.iter().map(|(uuid, e)| (order(uuid, e, dns), e)).collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    entries.into_iter().map(|(_, e)| e).collect()
}

/// Where an entry comes in [`sorted`]'s order: its creation time, then its DN, then its UUID.
type Order<'k> = (u64, &'k str, &'k EntryUuid);

fn order<'k, E: Dn>(uuid: &'k EntryUuid, entry: &E, dns: &'k Dns) -> Order<'k> {
    (created(uuid), dns.get(entry.dn()), uuid)
}

/// A kept entry's DN.
trait Dn {
    fn dn(&self) -> Id;

    /// Whether this entry holds every DN `old` held (its own, its member values): replacing `old` with it lets
    /// no DN go.
    fn holds_every_dn_of(&self, old: &Self) -> bool;
}

impl Dn for User {
    fn dn(&self) -> Id {
        self.dn
    }

    fn holds_every_dn_of(&self, old: &User) -> bool {
        self.dn == old.dn
    }
}

impl Dn for Group {
    fn dn(&self) -> Id {
        self.dn
    }

    fn holds_every_dn_of(&self, old: &Group) -> bool {
        let old_members = old.members.as_deref().unwrap_or_default();
        if self.dn != old.dn {
            return false;
        }
        let held: HashSet<Id> = self.members.iter().flatten().copied().collect();
        old_members.iter().all(|m| held.contains(m))
    }
}

/// The 60-bit time of a version 1 UUID (RFC 4122 section 4.1.4); 0 for other versions.
fn created(uuid: &EntryUuid) -> u64 {
    let o = &uuid.0;
    if o[6] >> 4 != 1 {
        return 0;
    }
    let low = u64::from(u32::from_be_bytes([o[0], o[1], o[2], o[3]]));
    let mid = u64::from(u16::from_be_bytes([o[4], o[5]]));
    let high = u64::from(u16::from_be_bytes([o[6] & 0x0f, o[7]]));
    (high << 48) | (mid << 32) | low
}

/// For a model read by DirSync, whose order of entries is not the directory's: that no answer depends on it
/// (a username of several entries, a configured name of several groups: the full read's order decides there).
fn order_known(entries: &Entries, names: &[GroupName], groups: &[&Group]) -> Result<(), NeedsFullRead> {
    if let Some(name) = entries.users.collisions.keys().next() {
        return Err(NeedsFullRead::ServerOrder { what: format!("the username {name} names several entries") });
    }
    let holders = |n: &GroupName| groups.iter().filter(|g| g.names.iter().any(|v| GroupName::new(v) == *n)).count();
    match names.iter().find(|n| holders(n) > 1) {
        Some(name) => Err(NeedsFullRead::ServerOrder { what: format!("the group name {name} names several groups") }),
        None => Ok(()),
    }
}

/// Whether the server would match the configured names as [`GroupName`] does.
fn check_names(s: &Settings, names: &[GroupName]) -> Result<(), NeedsFullRead> {
    if let Some(name) = names.first()
        && !CASE_IGNORE_NAMES.iter().any(|a| a.eq_ignore_ascii_case(&s.group_name_attribute))
    {
        return Err(NeedsFullRead::NameMatching {
            name: name.to_string(),
            reason: "the group name attribute's matching rule is not known to be caseIgnoreMatch",
        });
    }
    match names.iter().find(|n| !n.as_str().bytes().all(|b| (0x20..0x7f).contains(&b))) {
        Some(name) => Err(NeedsFullRead::NameMatching {
            name: name.to_string(),
            reason: "a name that is not printable ASCII is matched by the directory's own Unicode folding",
        }),
        None => Ok(()),
    }
}

/// Whether a member DN that names no kept entry is written only with attribute types the kept DNs use, and no
/// BER value: then its [`DnKey`] is the server's reduction too, and no kept entry means no entry.
fn comparable(dn: &str, known: &HashSet<String>) -> bool {
    dn::forms(dn).is_some_and(|forms| forms.iter().all(|(t, ber)| !ber && known.contains(t)))
}

/// The DN of a group read that lists `member`, for a message.
fn parent(groups: &HashMap<DnKey, GroupRecord>, member: &DnKey) -> String {
    let mut parents: Vec<&str> =
        groups.values().filter(|g| g.others.iter().any(|(k, _)| k == member)).map(|g| g.dn.as_str()).collect();
    parents.sort_unstable();
    parents.first().map(|dn| dn.to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ldap::changes::syncrepl::{ChangeKind, ChangedEntry, Refresh};
    use crate::ldap::model::tests::{URL, settings};
    use crate::ldap::{Error, resolve};
    use std::collections::HashMap as StdMap;

    fn uuid(n: u8) -> EntryUuid {
        EntryUuid([n; 16])
    }

    #[test]
    fn dirsync_refuses_a_filter_whose_changes_it_does_not_report() {
        let refusal = |u: &str, g: &str| refusal(u, g, ("DirSync", "dirsync"));
        let plain = "(&(objectCategory=person)(objectClass=user))";
        assert_eq!(refusal(plain, "(objectClass=group)"), None);
        assert_eq!(refusal("(&(objectClass=user)(memberOf=CN=Staff,DC=x))", "(objectClass=group)"), None, "followed");
        let in_chain = refusal("(&(objectClass=user)(memberOf:1.2.840.113556.1.4.1941:=CN=Staff,DC=x))", "(cn=*)");
        assert!(in_chain.unwrap().starts_with("ldap.user_filter tests memberOf by the in-chain rule"));
        let computed = refusal(plain, "(&(objectClass=group)(!(msDS-User-Account-Control-Computed=16)))").unwrap();
        assert!(computed.starts_with("ldap.group_filter tests msDS-User-Account-Control-Computed"), "{computed}");
        assert!(computed.ends_with("DirSync does not report its changes; dirsync cannot follow it"), "{computed}");
        assert!(refusal("(&(objectClass=user)(lastlogon>=1))", "(objectClass=group)").is_some(), "any case");
    }

    /// `usn` cannot follow `memberOf` at all (a member's `uSNChanged` does not move when a group gains it), nor
    /// what DirSync cannot.
    #[test]
    fn usn_refuses_member_of_and_what_dirsync_refuses() {
        let plain = "(&(objectCategory=person)(objectClass=user))";
        let usn_refusal = |u: &str, g: &str| usn_refusal(u, g, "member");
        assert_eq!(usn_refusal(plain, "(objectClass=group)"), None);
        let other = super::usn_refusal(plain, "(objectClass=group)", "uniqueMember").unwrap();
        assert!(other.starts_with("ldap.member_attribute is \"uniqueMember\""), "{other}");
        let enabled = "(&(objectClass=user)(!(userAccountControl:1.2.840.113556.1.4.803:=2)))";
        assert_eq!(usn_refusal(enabled, "(objectClass=group)"), None, "userAccountControl is the user's own");
        let member_of = usn_refusal("(&(objectClass=user)(memberOf=CN=Staff,DC=x))", "(objectClass=group)").unwrap();
        assert!(member_of.starts_with("ldap.user_filter tests memberOf, a back link"), "{member_of}");
        assert!(usn_refusal(plain, "(&(objectClass=group)(memberof=CN=All,DC=x))").is_some(), "any case");
        let computed = usn_refusal(plain, "(&(objectClass=group)(!(lastLogon=0)))").unwrap();
        assert!(computed.ends_with("uSNChanged does not report its changes; usn cannot follow it"), "{computed}");
    }

    /// `usn`: a group's member values follow a member renamed or moved without the group changing, so a changed
    /// object's `memberOf` is checked against the kept groups, both ways. The controls: an object whose
    /// `memberOf` agrees, and a group already read again.
    #[test]
    fn a_group_disagreeing_with_a_changed_object_s_member_of_is_read_again() {
        let mut k = kept();
        let printer = "cn=printer,ou=devices,dc=x";
        k.apply(Part::Groups, &deletes("g2", vec![group(12, "Devices", &[printer])], &[]));
        let guid = |n: u8| Guid([n; 16]);
        let (team, inner, devices) = (guid(10), guid(11), guid(12));
        let changed = |dn: &str, member_of: &[String]| usn::Changed {
            guid: guid(99),
            dn: dn.to_string(),
            container: false,
            member_of: member_of.to_vec(),
            member_of_ranged: false,
        };
        // Renamed: Devices holds the old DN; the new one's memberOf names Devices.
        let renamed = changed("cn=printer2,ou=devices,dc=x", &[gdn("Devices")]);
        assert_eq!(k.groups_disagreeing(std::slice::from_ref(&renamed), &[]), vec![devices]);
        // At a DN Devices holds, named by no memberOf: what holds it now is some other object.
        let other = changed(printer, &[]);
        assert_eq!(k.groups_disagreeing(std::slice::from_ref(&other), &[]), vec![devices]);
        // Controls: alice's memberOf names Team, which holds her; Inner holds bob, whose memberOf says so.
        let alice = changed(&udn("alice"), &[gdn("Team")]);
        let bob = changed(&udn("bob"), &[gdn("Inner")]);
        assert_eq!(k.groups_disagreeing(&[alice.clone(), bob], &[]), Vec::<Guid>::new());
        // A group read again already is left out; a kept group that memberOf names and does not hold, named.
        assert_eq!(k.groups_disagreeing(std::slice::from_ref(&renamed), &[devices]), Vec::<Guid>::new());
        let joined = changed(&udn("alice"), &[gdn("Team"), gdn("Inner")]);
        assert_eq!(k.groups_disagreeing(&[joined], &[team]), vec![inner]);
    }

    #[test]
    fn a_dn_key_s_parent_is_what_follows_its_first_unescaped_comma() {
        assert_eq!(dn_parent("cn=a,ou=b,dc=x"), Some("ou=b,dc=x"));
        assert_eq!(dn_parent(r"cn=a\,b,ou=c"), Some("ou=c"), "an escaped comma is in the value");
        assert_eq!(dn_parent(r"cn=a\\,ou=c"), Some("ou=c"), "an escaped backslash ends before the comma");
        assert_eq!(dn_parent("dc=x"), None);
    }

    /// DirSync: a kept user the read did not name, whose DN another user read again now holds, was renamed
    /// after the read (a later one names it): the read fails rather than count it gone. The controls: both named
    /// (renamed in the same read), or a DN nobody held.
    #[test]
    fn an_object_read_again_at_the_dn_of_a_kept_entry_not_named_fails_the_read() {
        let mut dns = Dns::default();
        let user = |dns: &mut Dns, dn: &str| User { dn: dns.intern(dn), names: None, account_control: None };
        let mut side: Side<User> = Side::default();
        side.entries.insert(uuid(1), user(&mut dns, "CN=a,DC=x"));
        side.entries.insert(uuid(2), user(&mut dns, "CN=b,DC=x"));
        let named = |n: &[u8]| Named { changed: n.iter().map(|&n| Guid([n; 16])).collect(), deleted: Vec::new() };
        let at_a = vec![Fresh { uuid: uuid(2), entry: user(&mut dns, "CN=a,DC=x") }];
        assert_eq!(side.taken_over(&named(&[2]), &at_a).map(|id| dns.get(id)), Some("CN=a,DC=x"));
        assert_eq!(side.taken_over(&named(&[2, 1]), &at_a), None, "both named");
        let at_c = vec![Fresh { uuid: uuid(2), entry: user(&mut dns, "CN=c,DC=x") }];
        assert_eq!(side.taken_over(&named(&[2]), &at_c), None, "a DN nobody held");
    }

    pub(super) fn changed(n: u8, dn: &str, attrs: &[(&str, &[&str])]) -> ChangedEntry {
        ChangedEntry {
            uuid: uuid(n),
            dn: dn.into(),
            kind: ChangeKind::Add,
            attrs: attrs.iter().map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect())).collect(),
            bin_attrs: StdMap::new(),
        }
    }

    fn user(n: u8, uid: &str) -> ChangedEntry {
        changed(n, &format!("uid={uid},ou=people,ou=groups,dc=x"), &[("uid", &[uid])])
    }

    pub(super) fn udn(uid: &str) -> String {
        format!("uid={uid},ou=people,ou=groups,dc=x")
    }

    pub(super) fn gdn(cn: &str) -> String {
        format!("cn={cn},ou=groups,dc=x")
    }

    pub(super) fn group(n: u8, cn: &str, members: &[&str]) -> ChangedEntry {
        changed(n, &gdn(cn), &[("cn", &[cn]), ("member", members)])
    }

    /// The whole content: a read without a cookie.
    fn whole(cookie: &str, changed: Vec<ChangedEntry>) -> SyncRead {
        SyncRead {
            cookie: Some(cookie.as_bytes().to_vec()),
            changed,
            deleted: Vec::new(),
            refresh: Refresh::Present(std::collections::HashSet::new()),
        }
    }

    pub(super) fn deletes(cookie: &str, changed: Vec<ChangedEntry>, deleted: &[u8]) -> SyncRead {
        SyncRead {
            cookie: Some(cookie.as_bytes().to_vec()),
            changed,
            deleted: deleted.iter().map(|&n| uuid(n)).collect(),
            refresh: Refresh::Deletes,
        }
    }

    /// alice (1), bob (2); Team (10: alice, Inner), Inner (11: bob).
    pub(super) fn kept() -> Kept {
        let s = settings(Nesting::Recursive);
        let mut k = Kept::new(&s);
        k.set_server(URL, false);
        k.apply(Part::Users, &whole("u1", vec![user(1, "alice"), user(2, "bob")]));
        k.apply(
            Part::Groups,
            &whole("g1", vec![group(10, "Team", &[&udn("alice"), &gdn("Inner")]), group(11, "Inner", &[&udn("bob")])]),
        );
        k
    }

    fn names(names: &[&str]) -> Vec<GroupName> {
        names.iter().map(|n| GroupName::new(n)).collect()
    }

    pub(super) fn members(k: &Kept, s: &Settings, name: &str) -> Result<Vec<String>, Error> {
        let snapshot = resolve(&k.entries(s, &names(&[name])).expect("entries"), s, &names(&[name]));
        let group = snapshot.groups.into_iter().next().expect("one group").result?;
        Ok(group.members.iter().map(|m| m.username.as_str().to_string()).collect())
    }

    #[test]
    fn the_model_can_be_kept_between_runs() {
        // A daemon keeps it across runs and tasks: no borrow, movable between threads. (A compile-time check.)
        fn kept<T: Send + Sync + 'static>() {}
        kept::<Kept>();
    }

    #[test]
    fn a_first_read_builds_the_model_and_keeps_its_cookie() {
        let k = kept();
        assert_eq!((k.len(Part::Users), k.len(Part::Groups)), (2, 2));
        assert_eq!((k.cookie(Part::Users), k.cookie(Part::Groups)), (Some(&b"u1"[..]), Some(&b"g1"[..])));
        let s = settings(Nesting::Recursive);
        assert_eq!(members(&k, &s, "team").unwrap(), ["alice", "bob"]);
    }

    #[test]
    fn a_changed_entry_replaces_the_kept_one_whole_and_gone_ones_are_dropped() {
        let mut k = kept();
        let s = settings(Nesting::Recursive);
        // bob renamed (same UUID, new DN and uid), alice deleted, Inner loses bob... and gains nobody.
        let applied = k.apply(Part::Users, &deletes("u2", vec![user(2, "robert")], &[1]));
        assert_eq!(applied, Applied { changed: 1, gone: 1, sent: 1 });
        assert_eq!(k.cookie(Part::Users), Some(&b"u2"[..]));
        // Team still names alice (no refint): a dangling member under the base, skipped as in a full read.
        let snapshot = resolve(&k.entries(&s, &names(&["Team"])).unwrap(), &s, &names(&["Team"]));
        let team = snapshot.groups[0].result.as_ref().unwrap();
        assert_eq!(team.members.len(), 0, "bob's DN changed, Inner still names the old one");
        assert_eq!(team.unreadable, [udn("alice"), udn("bob")]);
        // The group replaced whole: its member attribute is the new one, not a merge.
        k.apply(Part::Groups, &deletes("g2", vec![group(11, "Inner", &[&udn("robert")])], &[]));
        assert_eq!(members(&k, &s, "Team").unwrap(), ["robert"]);
        // An attribute left out of the changed entry is gone from the model.
        k.apply(Part::Users, &deletes("u3", vec![changed(2, &udn("robert"), &[])], &[]));
        let entries = k.entries(&s, &names(&["Team"])).unwrap();
        assert_eq!(entries.users_seen(), 0, "robert has no username any more");
    }

    /// An entry sent again with what the model keeps of it unchanged (another attribute changed) is no change;
    /// the control: the same entry with another member, or another uid, is one.
    #[test]
    fn an_entry_sent_again_unchanged_in_its_kept_form_counts_for_nothing() {
        let mut k = kept();
        let with_description = changed(2, &udn("bob"), &[("uid", &["bob"]), ("description", &["new desk"])]);
        assert_eq!(
            k.apply(Part::Users, &deletes("u2", vec![with_description], &[])),
            Applied { sent: 1, ..Applied::default() }
        );
        assert_eq!(k.cookie(Part::Users), Some(&b"u2"[..]), "the cookie moves on all the same");
        let same = group(11, "Inner", &[&udn("bob")]);
        assert_eq!(k.apply(Part::Groups, &deletes("g2", vec![same], &[])), Applied { sent: 1, ..Applied::default() });
        let more = group(11, "Inner", &[&udn("bob"), &udn("alice")]);
        assert_eq!(k.apply(Part::Groups, &deletes("g3", vec![more], &[])), Applied { changed: 1, gone: 0, sent: 1 });
        assert_eq!(
            k.apply(Part::Users, &deletes("u3", vec![user(2, "robert")], &[])),
            Applied { changed: 1, gone: 0, sent: 1 }
        );
    }

    /// A user deleted and made again under the same DN, as a `modifyTimestamp` read sees it (the new entry
    /// only, nothing named gone): the old entry goes, and the username is one user, not a collision. The
    /// control: a new user at another DN is added beside the kept ones.
    #[test]
    fn a_new_entry_at_a_kept_entrys_dn_replaces_it() {
        let mut k = kept();
        let s = settings(Nesting::Recursive);
        let users = k.len(Part::Users);
        let again =
            SyncRead { cookie: None, changed: vec![user(9, "bob")], deleted: vec![], refresh: Refresh::Deletes };
        assert_eq!(k.apply(Part::Users, &again), Applied { changed: 1, gone: 1, sent: 1 });
        assert_eq!(k.len(Part::Users), users);
        assert_eq!(members(&k, &s, "Team").unwrap(), ["alice", "bob"], "one bob, no collision");
        let other =
            SyncRead { cookie: None, changed: vec![user(10, "carol")], deleted: vec![], refresh: Refresh::Deletes };
        assert_eq!(k.apply(Part::Users, &other), Applied { changed: 1, gone: 0, sent: 1 });
        assert_eq!(k.len(Part::Users), users + 1);
    }

    /// The mark for the next `modifyTimestamp` read: the latest timestamp either part sent, less the read's
    /// length rounded up and a second, so that a user modified while the groups were read (stamped before the
    /// groups' latest) is read next time even with a margin of a second; it never moves back.
    #[test]
    fn the_next_read_starts_before_this_one_began() {
        let at = |t: &str| super::stamps::parse_time(t).unwrap();
        let mut k = kept().reading_by(Source::ModifyTimestamp { margin: Duration::from_secs(1) });
        k.users.latest = Some(at("20261202100000Z"));
        k.groups.latest = Some(at("20261202100004Z"));
        k.mark_read(Duration::from_millis(3200));
        assert_eq!(k.mark, Some(at("20261202095959Z")), "10:00:04 less 3 s and 2 s");
        k.users.latest = None;
        k.groups.latest = Some(at("20261202100000Z"));
        k.mark_read(Duration::from_millis(10));
        assert_eq!(k.mark, Some(at("20261202095959Z")), "never back");
        k.groups.latest = Some(at("20261202100010Z"));
        k.mark_read(Duration::from_millis(10));
        assert_eq!(k.mark, Some(at("20261202100008Z")));
    }

    /// A model read by one method is no answer once the settings ask for another, or another margin (a reload).
    #[test]
    fn a_model_read_by_another_method_needs_a_full_read() {
        use crate::ldap::ChangeDetection;
        let k = kept();
        let names = names(&["Team"]);
        let mut s = settings(Nesting::Recursive);
        s.change_detection = ChangeDetection::Syncrepl;
        assert!(k.entries(&s, &names).is_ok(), "the control: content sync asked, content sync read");
        s.change_detection = ChangeDetection::ModifyTimestamp { margin: Duration::from_secs(300) };
        let e = k.entries(&s, &names).err();
        assert_eq!(e, Some(NeedsFullRead::SettingChanged { setting: "ldap.change_detection" }));
        let k = kept().reading_by(Source::ModifyTimestamp { margin: Duration::from_secs(60) });
        assert!(k.entries(&s, &names).is_err(), "another margin");
    }

    #[test]
    fn after_a_present_phase_every_kept_entry_not_named_is_gone() {
        let mut k = kept();
        let mut present = std::collections::HashSet::new();
        present.insert(uuid(1));
        let read =
            SyncRead { cookie: None, changed: Vec::new(), deleted: Vec::new(), refresh: Refresh::Present(present) };
        assert_eq!(k.apply(Part::Users, &read), Applied { changed: 0, gone: 1, sent: 0 });
        assert_eq!(k.len(Part::Users), 1);
        assert_eq!(k.cookie(Part::Users), Some(&b"u1"[..]), "a read without a cookie keeps the old one");
        // A read without a cookie (the model started again) sends the whole content: the rest is gone.
        assert_eq!(
            k.apply(Part::Groups, &whole("g9", vec![group(12, "New", &[])])),
            Applied { changed: 1, gone: 2, sent: 1 }
        );
        assert_eq!(k.len(Part::Groups), 1);
    }

    #[test]
    fn only_what_the_full_read_uses_is_kept() {
        let mut k = Kept::new(&settings(Nesting::Off));
        let mut e = user(1, "alice");
        e.attrs.insert("mail".into(), vec!["alice@x".into()]);
        e.attrs.insert("UserAccountControl".into(), vec![" 514".into(), "512".into()]);
        let mut binary = changed(2, &udn("bin"), &[]);
        binary.bin_attrs.insert("UID".into(), vec![vec![0xff]]);
        k.apply(Part::Users, &whole("u", vec![e, binary]));
        let alice = &k.users.entries[&uuid(1)];
        assert_eq!(alice.names, Some(Ok(vec!["alice".into()].into())));
        assert_eq!(alice.account_control, Some(514), "the first value, read as the users search reads it");
        assert_eq!(k.users.entries[&uuid(2)].names, Some(Err(())), "a username that is not UTF-8 is known as such");
        let a = UserAttributes { username: "uid", include_disabled: false };
        assert!(matches!(alice.read(&a, &k.dns), UserEntry::Disabled(m) if *m.dn == udn("alice")));
        assert!(matches!(
            k.users.entries[&uuid(2)].read(&a, &k.dns),
            UserEntry::Unusable { reason: "username is not UTF-8", .. }
        ));
        let mut g = group(10, "Team", &[&udn("alice"), ""]);
        g.attrs.insert("description".into(), vec!["the team".into()]);
        g.attrs.insert("CN".into(), vec!["Crew".into()]);
        k.apply(Part::Groups, &whole("g", vec![g]));
        let team = &k.groups.entries[&uuid(10)];
        let mut names: Vec<&str> = team.names.iter().map(|n| &**n).collect();
        names.sort_unstable();
        assert_eq!(names, ["Crew", "Team"], "every name value, whatever the case of the attribute");
        let members: Vec<&str> = team.members.as_deref().unwrap().iter().map(|&m| k.dns.get(m)).collect();
        assert_eq!(members, [udn("alice").as_str(), ""], "the member values as sent, in order");
    }

    /// A read that only adds entries and member values goes through no other entry to free DNs; one that drops
    /// an entry, or replaces one with one not holding every DN it held, frees what no entry holds. (A DN made and
    /// held by nothing, `cn=unheld`, shows which reads went through the model.)
    #[test]
    fn only_a_read_letting_a_dn_go_frees_dns() {
        let mut k = kept();
        k.dns.intern("cn=unheld,dc=x");
        let added = user(3, "carol");
        k.apply(Part::Users, &deletes("u2", vec![added], &[]));
        let more = group(10, "Team", &[&udn("alice"), &gdn("Inner"), &udn("carol")]);
        k.apply(Part::Groups, &deletes("g2", vec![more], &[]));
        let renamed_alike = group(11, "Inner", &[&udn("bob")]);
        k.apply(Part::Groups, &deletes("g3", vec![renamed_alike], &[]));
        assert!(k.dns.ids.contains_key("cn=unheld,dc=x"), "no read let a DN go: no sweep");
        assert_eq!(members(&k, &settings(Nesting::Recursive), "Team").unwrap(), ["alice", "bob", "carol"]);
        // Team without carol: her DN is still her entry's; the DN nobody holds goes.
        let fewer = group(10, "Team", &[&udn("alice"), &gdn("Inner")]);
        k.apply(Part::Groups, &deletes("g4", vec![fewer], &[]));
        assert!(!k.dns.ids.contains_key("cn=unheld,dc=x"), "a member value let go: swept");
        assert!(k.dns.ids.contains_key(udn("carol").as_str()));
        // A user dropped: its DN goes when no group names it.
        k.dns.intern("cn=unheld,dc=x");
        k.apply(Part::Users, &deletes("u3", vec![], &[3]));
        assert!(!k.dns.ids.contains_key(udn("carol").as_str()) && !k.dns.ids.contains_key("cn=unheld,dc=x"));
        let (users, groups) = (k.users.released, k.groups.released);
        assert!(!users && !groups, "a sweep clears what it was for");
        // A read that made an entry and dropped it within itself (content sync: added, then deleted), as
        // `Side::read` counts them: the DNs only that entry held go; one that hands over all it made frees none.
        let q = Query::of(&settings(Nesting::Recursive));
        let made: Vec<Fresh<Group>> = [group(14, "Brief", &["cn=brief-only,dc=x"]), group(15, "Stays", &[])]
            .iter()
            .map(|e| Fresh { uuid: e.uuid, entry: Group::of(e, &q, &mut k.dns) })
            .collect();
        let mut handed = made;
        handed.remove(0);
        k.groups.dropped_made(1, &handed);
        assert!(!k.groups.released, "every entry made is handed over");
        k.groups.dropped_made(2, &handed);
        let read = SyncRead { cookie: None, changed: handed, deleted: Vec::new(), refresh: Refresh::Deletes };
        k.groups.apply(read, &k.dns);
        k.sweep_released();
        assert!(!k.dns.ids.contains_key("cn=brief-only,dc=x"), "made, dropped in the read: swept");
        assert!(k.dns.ids.contains_key(gdn("Stays").as_str()));
    }

    #[test]
    fn a_dn_is_held_once_however_many_entries_name_it() {
        let mut k = kept();
        k.apply(
            Part::Groups,
            &deletes("g2", vec![group(12, "Other", &[&udn("alice"), "cn=gone,ou=groups,dc=x"])], &[]),
        );
        let alice = &k.users.entries[&uuid(1)].dn;
        let in_team = &k.groups.entries[&uuid(10)].members.as_deref().unwrap()[0];
        let in_other = &k.groups.entries[&uuid(12)].members.as_deref().unwrap()[0];
        assert!(alice == in_team && alice == in_other);
        assert_eq!(k.dns.get(*alice), udn("alice"));
        assert!(k.dns.ids.contains_key("cn=gone,ou=groups,dc=x"));
        // A DN no kept entry names any more is let go; one still named stays.
        k.apply(Part::Groups, &deletes("g3", vec![], &[12]));
        assert!(!k.dns.ids.contains_key("cn=gone,ou=groups,dc=x"));
        k.apply(Part::Users, &deletes("u2", vec![], &[1]));
        assert!(k.dns.ids.contains_key(udn("alice").as_str()), "Team still names alice");
        assert_eq!(k.dns.len(), 4, "alice (Team's member), bob, Team, Inner (its entry and Team's member)");
        // A freed place is used again; every DN still reads as it was written.
        k.apply(Part::Groups, &deletes("g4", vec![group(13, "New", &["cn=x,ou=groups,dc=x"])], &[]));
        assert_eq!(k.dns.texts.len(), 6, "one place freed by cn=gone, taken by cn=x (and New's own DN)");
        let new = &k.groups.entries[&uuid(13)];
        assert_eq!(
            (k.dns.get(new.dn), k.dns.get(new.members.as_deref().unwrap()[0])),
            (gdn("New").as_str(), "cn=x,ou=groups,dc=x")
        );
        assert_eq!(members(&k, &settings(Nesting::Recursive), "Team").unwrap(), ["bob"]);
    }

    #[test]
    fn disabled_accounts_collisions_and_names_read_as_the_full_read_reads_them() {
        let s = settings(Nesting::Recursive);
        let mut k = kept();
        let mut carol = user(3, "carol");
        carol.attrs.insert("userAccountControl".into(), vec!["514".into()]);
        let twin = changed(4, "uid=alice2,ou=people,ou=groups,dc=x", &[("uid", &["ALICE"])]);
        k.apply(Part::Users, &deletes("u2", vec![carol, twin], &[]));
        k.apply(
            Part::Groups,
            &deletes(
                "g2",
                vec![group(11, "Inner", &[&udn("bob"), &udn("carol"), "uid=alice2,ou=people,ou=groups,dc=x"])],
                &[],
            ),
        );
        let snapshot = resolve(&k.entries(&s, &names(&["TEAM"])).unwrap(), &s, &names(&["TEAM"]));
        let team = snapshot.groups[0].result.as_ref().unwrap();
        assert_eq!(team.name, "Team", "the name as the directory writes it");
        let got: Vec<&str> = team.members.iter().map(|m| m.username.as_str()).collect();
        assert_eq!(got, ["bob"]);
        assert_eq!(team.disabled.iter().map(|m| m.username.as_str()).collect::<Vec<_>>(), ["carol"]);
        assert_eq!(team.collisions.len(), 1);
        let mut dns = team.collisions[0].dns.clone();
        dns.sort();
        assert_eq!(dns, ["uid=alice,ou=people,ou=groups,dc=x", "uid=alice2,ou=people,ou=groups,dc=x"]);
        // With disabled accounts included, carol is a member.
        let s = Settings { include_disabled: true, ..s };
        assert_eq!(members(&k, &s, "Team").unwrap(), ["bob", "carol"]);
    }

    #[test]
    fn a_name_found_twice_or_nowhere_fails_as_in_a_full_read() {
        let s = settings(Nesting::Off);
        let mut k = kept();
        let mut twin = group(12, "team", &[]);
        twin.dn = "cn=team,ou=more,ou=groups,dc=x".into();
        k.apply(Part::Groups, &deletes("g2", vec![twin], &[]));
        let entries = k.entries(&s, &names(&["Team", "Nobody"])).unwrap();
        let snapshot = resolve(&entries, &s, &names(&["Team", "Nobody"]));
        assert!(
            matches!(&snapshot.groups[0].result, Err(Error::AmbiguousGroup { dns, .. }) if dns.len() == 2),
            "{:?}",
            snapshot.groups[0].result
        );
        assert!(matches!(&snapshot.groups[1].result, Err(Error::GroupNotFound { filter, .. })
            if filter == "(&(objectClass=groupOfNames)(cn=Nobody))"));
    }

    #[test]
    fn a_member_outside_the_base_needs_a_full_read_when_the_walk_reaches_it() {
        let mut k = kept();
        let far = "cn=far,ou=elsewhere,dc=x";
        k.apply(Part::Groups, &deletes("g2", vec![group(11, "Inner", &[&udn("bob"), far])], &[]));
        let s = settings(Nesting::Recursive);
        assert_eq!(
            k.entries(&s, &names(&["Team"])).err(),
            Some(NeedsFullRead::MemberOutsideBase {
                group: gdn("Inner"),
                member: far.into(),
                base_dn: "ou=groups,dc=x".into()
            })
        );
        // Nesting off: members that are not users are not followed, so the model knows enough.
        assert_eq!(members(&k, &settings(Nesting::Off), "Team").unwrap(), ["alice"]);
        // Beyond the depth cap the full read does not read it either: the group is too deep, not unknown.
        let s = Settings { max_nesting_depth: 1, ..settings(Nesting::Recursive) };
        assert!(matches!(members(&k, &s, "Team"), Err(Error::TooDeep { depth: 1, .. })));
        // Inner alone reaches it at once.
        assert!(matches!(
            k.entries(&settings(Nesting::Recursive), &names(&["Inner"])),
            Err(NeedsFullRead::MemberOutsideBase { .. })
        ));
    }

    #[test]
    fn a_member_under_the_base_written_in_a_form_no_kept_dn_uses_needs_a_full_read() {
        let mut k = kept();
        let s = settings(Nesting::Recursive);
        // "commonName" is cn by another name: the server would find the group, a DnKey does not.
        let alias = "commonName=Other,ou=groups,dc=x";
        k.apply(Part::Groups, &deletes("g2", vec![group(11, "Inner", &[alias])], &[]));
        assert!(matches!(k.entries(&s, &names(&["Team"])), Err(NeedsFullRead::UncomparableMember { member, .. })
                if member == alias));
        // Written with the types kept DNs use, a DN naming no kept entry is no entry.
        k.apply(Part::Groups, &deletes("g3", vec![group(11, "Inner", &["cn=Gone,ou=groups,dc=x"])], &[]));
        let snapshot = resolve(&k.entries(&s, &names(&["Team"])).unwrap(), &s, &names(&["Team"]));
        assert_eq!(snapshot.groups[0].result.as_ref().unwrap().unreadable, ["cn=Gone,ou=groups,dc=x"]);
    }

    #[test]
    fn read_under_a_wider_groups_base_a_member_outside_the_base_is_known() {
        let s = settings(Nesting::Recursive);
        let far = "cn=far,ou=elsewhere,dc=x";
        let gone = "cn=gone,ou=elsewhere,dc=x";
        let mut k = Kept::with_groups_base(&s, "dc=x");
        assert_eq!(k.search(Part::Groups).0, "dc=x");
        assert_eq!(k.search(Part::Users).0, "ou=groups,dc=x", "users stay under the base DN");
        k.set_server(URL, false);
        k.apply(Part::Users, &whole("u1", vec![user(1, "alice"), user(2, "bob")]));
        k.apply(
            Part::Groups,
            &whole(
                "g1",
                vec![
                    group(10, "Team", &[&udn("alice"), far, gone]),
                    changed(11, far, &[("cn", &["far"]), ("member", &[&udn("bob")])]),
                    // A group named as configured, outside the base: the full read's name search does not see it.
                    changed(12, "cn=Team,ou=elsewhere,dc=x", &[("cn", &["Team"]), ("member", &[&udn("bob")])]),
                ],
            ),
        );
        let snapshot = resolve(&k.entries(&s, &names(&["Team"])).unwrap(), &s, &names(&["Team"]));
        let team = snapshot.groups[0].result.as_ref().unwrap();
        assert_eq!(team.dn, gdn("Team"), "not ambiguous: only groups under the base answer to names");
        assert_eq!(team.members.iter().map(|m| m.username.as_str()).collect::<Vec<_>>(), ["alice", "bob"]);
        assert_eq!(team.unreadable, [gone], "under the groups base and no kept group: neither");
        // Outside the groups base, still unknown; a groups base that does not hold the base DN is not used.
        k.apply(Part::Groups, &deletes("g2", vec![group(10, "Team", &["cn=x,o=other"])], &[]));
        assert!(matches!(k.entries(&s, &names(&["Team"])), Err(NeedsFullRead::MemberOutsideBase { base_dn, .. })
                if base_dn == "dc=x"));
        assert_eq!(Kept::with_groups_base(&s, "ou=elsewhere,dc=x").search(Part::Groups).0, "ou=groups,dc=x");
    }

    #[test]
    fn what_the_model_cannot_know_is_named_never_guessed() {
        let k = kept();
        let team = names(&["Team"]);
        assert_eq!(
            Kept::new(&settings(Nesting::Off)).entries(&settings(Nesting::Off), &team).err(),
            Some(NeedsFullRead::NotRead)
        );
        let other = Settings { user_filter: "(objectClass=user)".into(), ..settings(Nesting::Off) };
        assert_eq!(k.entries(&other, &team).err(), Some(NeedsFullRead::SettingChanged { setting: "ldap.user_filter" }));
        // Another account may be allowed to read other entries (a configuration reloaded in the daemon).
        let other = Settings { bind_dn: "cn=another,dc=x".into(), ..settings(Nesting::Off) };
        assert_eq!(k.entries(&other, &team).err(), Some(NeedsFullRead::SettingChanged { setting: "ldap.bind_dn" }));
        // The server kind: unknown, or Active Directory.
        let mut unknown = k.clone();
        unknown.active_directory = None;
        assert_eq!(unknown.entries(&settings(Nesting::Auto), &team).err(), Some(NeedsFullRead::ServerKindUnknown));
        assert!(unknown.entries(&settings(Nesting::Recursive), &team).is_ok(), "recursive does not ask");
        let mut ad = k.clone();
        ad.set_server(URL, true);
        assert_eq!(ad.entries(&settings(Nesting::InChain), &team).err(), Some(NeedsFullRead::ActiveDirectory));
        // Auto on a server that is not AD walks the levels.
        assert_eq!(members(&k, &settings(Nesting::Auto), "Team").unwrap(), ["alice", "bob"]);
        // In-chain on a server that is not AD fails every group, as the full read does.
        let entries = k.entries(&settings(Nesting::InChain), &team).unwrap();
        let snapshot = resolve(&entries, &settings(Nesting::InChain), &team);
        assert!(matches!(&snapshot.groups[0].result, Err(e) if e.to_string().contains("needs Active Directory")));
        // Names the model cannot match as the server does.
        let e = k.entries(&settings(Nesting::Off), &names(&["Équipe"])).err();
        assert!(matches!(e, Some(NeedsFullRead::NameMatching { name, .. }) if name == "Équipe"));
        let by_mail = Settings { group_name_attribute: "mail".into(), ..settings(Nesting::Off) };
        let mut k2 = Kept::new(&by_mail);
        k2.apply(Part::Users, &whole("u", vec![]));
        k2.apply(Part::Groups, &whole("g", vec![]));
        assert!(matches!(k2.entries(&by_mail, &team), Err(NeedsFullRead::NameMatching { .. })));
        // Ranged member values (Active Directory's range retrieval).
        let mut ranged = k.clone();
        let g = changed(10, &gdn("Team"), &[("cn", &["Team"]), ("member;range=0-1", &[&udn("alice")])]);
        ranged.apply(Part::Groups, &deletes("g2", vec![g], &[]));
        assert!(matches!(ranged.entries(&settings(Nesting::Off), &team), Err(NeedsFullRead::RangedMembers { .. })));
    }

    #[test]
    fn the_cookie_csn_and_the_filter_for_entries_newer_than_it() {
        assert_eq!(
            cookie_csn(b"rid=000,csn=20261202104413.994572Z#000000#000#000000").as_deref(),
            Some("20261202104413.994572Z#000000#000#000000")
        );
        // The delete phase's extra field is not the state; with several providers, the oldest.
        assert_eq!(
            cookie_csn(
                concat!(
                    "rid=000,csn=20261202104413.994572Z#000000#000#000000;20251202104413.994572Z#000000#001#000000,",
                    "delcsn=20271202104413.994572Z#000000#000#000000"
                )
                .as_bytes()
            )
            .as_deref(),
            Some("20251202104413.994572Z#000000#001#000000")
        );
        assert_eq!(cookie_csn(b"rid=000"), None);
        assert_eq!(cookie_csn(&[0xff]), None);
        // Strictly newer: the change count one up, so the entry written at the cookie's CSN is not found.
        assert_eq!(
            after_csn("20261202104413.994572Z#000000#000#000000"),
            "entryCSN>=20261202104413.994572Z#000001#000#000000"
        );
        assert_eq!(
            after_csn("20261202104413.994572Z#00000f#000#000000"),
            "entryCSN>=20261202104413.994572Z#000010#000#000000"
        );
        assert_eq!(
            after_csn("20261202104413.994572Z#ffffff#000#000000"),
            "!(entryCSN<=20261202104413.994572Z#ffffff#000#000000)"
        );
    }

    #[test]
    fn entries_come_in_creation_order_by_their_time_based_uuids() {
        // slapd's entryUUIDs are version 1: time_low, time_mid, version and time_high.
        let v1 = |time: u64, n: u8| {
            let mut o = [n; 16];
            o[0..4].copy_from_slice(&((time & 0xffff_ffff) as u32).to_be_bytes());
            o[4..6].copy_from_slice(&(((time >> 32) & 0xffff) as u16).to_be_bytes());
            o[6..8].copy_from_slice(&((0x1000 | ((time >> 48) & 0x0fff)) as u16).to_be_bytes());
            EntryUuid(o)
        };
        assert_eq!(created(&v1(0x0123_4567_89ab_cdef, 0)), 0x0123_4567_89ab_cdef);
        assert_eq!(created(&EntryUuid([0x40; 16])), 0, "not version 1");
        let (mut side, mut dns) = (Side::default(), Dns::default());
        // b was created first (its DN sorts after a's), then a, then c: the time's high bits weigh most.
        for (time, dn) in [(1u64 << 50, "cn=a"), (5, "cn=b"), (1u64 << 50 | 1 << 33, "cn=c")] {
            let group = Group { dn: dns.intern(dn), names: Box::new([]), members: None };
            side.entries.insert(v1(time, dn.len() as u8), group);
        }
        let order: Vec<&str> = sorted(&side, &dns).iter().map(|e| dns.get(e.dn)).collect();
        assert_eq!(order, ["cn=b", "cn=a", "cn=c"]);
    }

    #[test]
    fn a_group_named_by_two_chunks_is_one_group_under_both_names() {
        // One entry with two names, configured 50 names apart (two name searches), or side by side (one): each
        // name means that entry, as in the full read.
        let s = settings(Nesting::Off);
        let mut k = kept();
        k.apply(Part::Groups, &deletes("g2", vec![changed(10, &gdn("Team"), &[("cn", &["Team", "Crew"])])], &[]));
        let mut far_apart = names(&["Team"]);
        far_apart.extend((0..49).map(|n| GroupName::new(&format!("filler{n}"))));
        far_apart.push(GroupName::new("Crew"));
        for configured in [names(&["Team", "Crew"]), far_apart] {
            let snapshot = resolve(&k.entries(&s, &configured).unwrap(), &s, &configured);
            for n in [0, configured.len() - 1] {
                let group = snapshot.groups[n].result.as_ref().unwrap_or_else(|e| panic!("{}: {e}", configured[n]));
                assert_eq!(group.dn, gdn("Team"), "{}", configured[n]);
            }
        }
    }
}
