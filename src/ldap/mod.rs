//! The directory side: each configured group's effective members, read from LDAP / Active Directory.
//!
//! Two values come out, in two steps: [`Entries`], what the directory said (read by [`Connection::read`], I/O
//! only), and the [`Snapshot`], what that means for the configured groups ([`resolve`], pure): for each group
//! either its members or the error that stopped its enumeration, and what the read covered ([`Coverage`]). A
//! failed or truncated read is never reported as an empty group. Nothing outside this module sees an `ldap3`
//! type. It never writes to the directory.
//!
//! Membership strategy (searches for N configured groups, M users, K nested groups reached, D member DNs that
//! are neither users nor groups):
//! - one paged search of all users under the base (`user_filter`; the username attribute and
//!   `userAccountControl` only: `display_name_attribute` and `email_attribute` are accepted and not read today):
//!   ceil(M / page_size) pages, joined in memory by normalised DN;
//! - one paged search for the configured groups by name, ORed 50 names per filter: ceil(N / 50) searches;
//! - with nested groups, one base-scope read per member DN that is not a user, level by level: K + D reads; at
//!   a level with 64 or more such DNs, one paged search of every group under the base instead, after which only
//!   DNs outside the base are read one by one.
//!
//! No search is made per user member, so a 3,000-member group costs the same as a 3-member one.
//!
//! Inside: [`connect`] reaches and binds, [`search`] makes the reads, [`model`] holds the entries and the pure
//! decisions the reads need (nesting mode, name matching, the level-by-level walk), [`resolve`] and [`nesting`]
//! turn entries into groups (pure), [`entry`] turns entries into members, [`dn`] compares DNs, [`range`] follows
//! AD's range retrieval. [`probe`] is `check`'s own look at the base DN and a few user entries.

pub mod changes;
mod connect;
pub mod dn;
mod entry;
mod error;
mod guard;
mod model;
mod nesting;
mod probe;
mod range;
mod resolve;
mod search;
mod tls;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ldap3::Ldap;
use secrecy::SecretString;

pub use dn::{DnKey, escape_value as escape_dn_value};
pub use error::Error;
pub use model::Entries;
pub use probe::{Probe, probe};
pub use resolve::resolve;

use crate::group_name::GroupName;
use crate::username::{SharedNames, Username};

/// How many group names go into one search filter.
const NAMES_PER_FILTER: usize = 50;

/// Where the directory is and how to read it.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `ldap://host:port` or `ldaps://host:port`: one or more, tried in order.
    pub urls: Vec<String>,
    /// Extra connection attempts per URL before moving on to the next.
    pub connect_retries: u32,
    /// Upgrade an `ldap://` connection with StartTLS.
    pub starttls: bool,
    /// An extra CA (PEM) trusted for the directory's certificate, besides the system's.
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate. Test directories only.
    pub danger_skip_tls_verify: bool,
    pub bind_dn: String,
    pub bind_password: SecretString,
    pub base_dn: String,
    pub user_filter: String,
    pub group_filter: String,
    pub username_attribute: String,
    pub group_name_attribute: String,
    pub member_attribute: String,
    /// `ldap.display_name_attribute` and `ldap.email_attribute`: accepted and validated, not read. CloudShell
    /// takes a user's details from its own directory connection when it imports them, so the sync never
    /// needed them, and a hundred thousand of each cost memory for nothing.
    pub display_name_attribute: String,
    pub email_attribute: String,
    pub page_size: i32,
    /// The limit on connecting and on each operation.
    pub timeout: Duration,
    /// The largest LDAP message accepted from the server, in bytes (`ldap.max_message_mib`): a bigger one
    /// ends the connection before it is buffered.
    pub max_message_bytes: u64,
    /// Whether and how members of member groups count as members.
    pub nesting: Nesting,
    /// Include accounts Active Directory marks disabled (`userAccountControl` bit 2).
    pub include_disabled: bool,
    /// Ask for the member attribute in windows of this many values (`member;range=0-N`), as Active
    /// Directory's range retrieval does on its own past 1,500 values. `None`: ask for it whole.
    pub member_range_size: Option<u32>,
    /// How many levels of groups within groups are followed before the group is in error.
    pub max_nesting_depth: usize,
    /// How often a paged search still going logs `read progress` ([`crate::progress::EVERY`]; no key).
    pub progress_every: Duration,
    /// How the daemon reads only what changed between full reads (`ldap.change_detection`).
    pub change_detection: ChangeDetection,
}

/// `ldap.change_detection`: how the daemon reads only what changed between full reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeDetection {
    /// Every run reads in full. A watch still uses content sync or change notifications.
    Off,
    /// Content sync (RFC 4533) where the server offers it (OpenLDAP's `syncprov`), else full reads. A watch
    /// (`[schedule] watch`) uses content sync too, or Active Directory's change notifications where the server
    /// offers those instead.
    Auto,
    /// Content sync; a server without it is an error logged at each full read, which every run then is.
    Syncrepl,
    /// Active Directory's DirSync (Samba AD too); needs the "Replicating Directory Changes" right. A server
    /// without it, or an account without the right, is an error logged at each full read, as for `Syncrepl`.
    Dirsync,
    /// Active Directory's `uSNChanged` (Samba AD too): objects changed above the last read's
    /// `highestCommittedUSN`, tombstones by Show Deleted. Needs no replication right, but the account must be
    /// allowed to read `CN=Deleted Objects` (else a deletion would read as nothing): an error as for `Dirsync`.
    Usn,
    /// Entries whose `modifyTimestamp` is at or after the latest one read, less `margin`
    /// (`ldap.modify_timestamp_margin`): blind to deletions, so that departures wait for a full read.
    ModifyTimestamp { margin: Duration },
}

impl ChangeDetection {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeDetection::Off => "off",
            ChangeDetection::Auto => "auto",
            ChangeDetection::Syncrepl => "syncrepl",
            ChangeDetection::Dirsync => "dirsync",
            ChangeDetection::Usn => "usn",
            ChangeDetection::ModifyTimestamp { .. } => "modify_timestamp",
        }
    }

    /// How a kept model learns what changed with this setting from a server that is Active Directory or not;
    /// `None` when change reads are off. `auto`: DirSync on Active Directory, content sync elsewhere.
    pub fn source(self, active_directory: bool) -> Option<changes::kept::Source> {
        use changes::kept::Source;
        match self {
            ChangeDetection::Off => None,
            ChangeDetection::Auto if active_directory => Some(Source::DirSync),
            ChangeDetection::Auto | ChangeDetection::Syncrepl => Some(Source::ContentSync),
            ChangeDetection::Dirsync => Some(Source::DirSync),
            ChangeDetection::Usn => Some(Source::Usn),
            ChangeDetection::ModifyTimestamp { margin } => Some(Source::ModifyTimestamp { margin }),
        }
    }

    /// What this setting reads by where the server refuses `source` (the account may not use it): `auto` on
    /// Active Directory reads by `uSNChanged` where DirSync is refused; a method named is an error instead.
    pub fn fallback(self, source: changes::kept::Source) -> Option<changes::kept::Source> {
        use changes::kept::Source;
        (self == ChangeDetection::Auto && source == Source::DirSync).then_some(Source::Usn)
    }

    /// Whether a model read by `source` is one this setting reads by (on some server, or as its fallback there).
    pub fn allows(self, source: changes::kept::Source) -> bool {
        [false, true]
            .into_iter()
            .filter_map(|ad| self.source(ad))
            .any(|s| s == source || self.fallback(s) == Some(source))
    }

    /// Whether the operator named the method (a server without it is an error, not a fallback).
    pub fn is_explicit(self) -> bool {
        matches!(
            self,
            ChangeDetection::Syncrepl
                | ChangeDetection::Dirsync
                | ChangeDetection::Usn
                | ChangeDetection::ModifyTimestamp { .. }
        )
    }
}

/// How a full read came by the model it keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelMade {
    /// Read whole beside the full read.
    Built,
    /// The model kept from the last full read, brought up to date by a change read and resolved whole as this
    /// full read did: the directory is read once, not twice.
    Verified,
}

impl ModelMade {
    /// As the report's `read.model` says it.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelMade::Built => "built",
            ModelMade::Verified => "verified",
        }
    }
}

/// An empty model to be read by `source` (`nc`: the naming context holding the base DN, whose groups a model of
/// Active Directory's objects keeps). `Err` says why there is none, and whether the server refused the method.
fn empty_model(
    s: &Settings,
    source: changes::kept::Source,
    nc: Option<&str>,
) -> Result<changes::kept::Kept, (String, bool)> {
    use changes::kept::Kept;
    let kept = match nc {
        Some(nc) if source.reads_objects() => Kept::with_groups_base(s, nc),
        None if source == changes::kept::Source::Usn => {
            let why = format!("no naming context the server lists holds ldap.base_dn {:?}", s.base_dn);
            return Err((why, true));
        }
        _ => Kept::new(s),
    };
    Ok(kept.reading_by(source))
}

/// Whether the model, resolved sharing the users the full read made (`known`), says what the full read's
/// snapshot says: the same users seen, and each configured group with the same outcome. `Err`: why it cannot be
/// resolved.
fn resolves_alike(
    kept: &mut changes::kept::Kept,
    s: &Settings,
    groups: &[GroupName],
    full: &Snapshot,
    known: &model::KnownUsers,
) -> Result<bool, String> {
    let from_model = kept.resolve_sharing(s, groups, Some(known)).map_err(|why| why.to_string())?.snapshot;
    Ok(full.users_seen == from_model.users_seen
        && full.groups.len() == from_model.groups.len()
        && full.groups.iter().zip(&from_model.groups).all(|(a, b)| a.name == b.name && a.result == b.result))
}

/// Why changes cannot be read into `kept` from the server at `url`, if it was read from another: a watermark is
/// one server's (another, a failover to the next `ldap.url`, may lag behind it, or say nothing of what it has not
/// replicated yet).
fn other_server(kept: &changes::kept::Kept, url: &str) -> Option<String> {
    (kept.served_by() != url).then(|| {
        format!(
            "the directory server changed since the model was read ({} then, {url} now): changes are read only \
             from the server the model was read from",
            kept.served_by()
        )
    })
}

/// Why a model is not kept: it did not resolve as the full read did.
const NOT_ALIKE: &str = "the model's read did not resolve as the full read did (the directory changed between the \
                         two, or a difference this program does not model)";

/// The directory model read by `source` on the reader's connection (`nc`: see [`empty_model`]), kept only when
/// it resolves exactly as the full read did, sharing the users that read made (`known`). `Err` says why not,
/// and whether the server refused the method itself.
async fn model_of(
    reader: &mut search::Reader<'_>,
    source: changes::kept::Source,
    nc: Option<&str>,
    groups: &[GroupName],
    full: &Snapshot,
    known: &model::KnownUsers,
) -> Result<changes::kept::Kept, (String, bool)> {
    let s = reader.s;
    let mut kept = empty_model(s, source, nc)?;
    if let Err(e) = kept.read(&mut reader.ldap, &reader.url, s.timeout).await {
        return Err((e.to_string(), e.is_refusal()));
    }
    match resolves_alike(&mut kept, s, groups, full, known).map_err(|why| (why, false))? {
        true => Ok(kept),
        false => Err((NOT_ALIKE.to_string(), false)),
    }
}

/// The model kept from the last full read (`earlier`), brought up to date by its change read on the reader's
/// connection and resolved whole, sharing the users the full read made (`known`), when it resolves exactly as
/// that read did, holds exactly the users that read found, and was read as a model built now would be (by
/// `source`, or by `uSNChanged` where `auto` fell back to it; from this server, for these settings). `Err` says
/// why not, and whether the model said otherwise than the directory (rather than being unusable here): then the
/// model is read whole again.
async fn verified(
    reader: &mut search::Reader<'_>,
    mut earlier: changes::kept::Kept,
    (source, nc): (changes::kept::Source, Option<&str>),
    groups: &[GroupName],
    full: &Snapshot,
    known: &model::KnownUsers,
) -> Result<changes::kept::Kept, (String, bool)> {
    let s = reader.s;
    // Built by the fallback (`auto` on Active Directory, DirSync refused): verified by it (the method itself is
    // tried again when the model is next read whole).
    let fallback = s.change_detection.fallback(source).filter(|&f| f == earlier.source());
    let read_by = fallback.unwrap_or(source);
    let now = empty_model(s, read_by, nc).map_err(|(why, _)| (why, false))?;
    if !earlier.read_as(&now) {
        let (then, now) = (earlier.source().method(), read_by.method());
        return Err((format!("it was read by {then} or for other settings; a model is now read by {now}"), false));
    }
    if let Some(why) = other_server(&earlier, &reader.url) {
        return Err((why, false));
    }
    if let Err(e) = earlier.read(&mut reader.ldap, &reader.url, s.timeout).await {
        return Err((format!("its change read failed: {e}"), false));
    }
    // Resolved whole, not patched: what is compared is the whole model, and its members become the full read's.
    earlier.forget_resolve();
    if !resolves_alike(&mut earlier, s, groups, full, known).map_err(|why| (why, false))? {
        return Err((NOT_ALIKE.to_string(), true));
    }
    match earlier.users_are(known) {
        true => Ok(earlier),
        false => Err(("the model's users are not the ones the full read found".to_string(), true)),
    }
}

/// How nested groups are expanded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nesting {
    /// Direct members only.
    Off,
    /// Member groups read level by level (any LDAP server; cycle-safe, capped by `max_nesting_depth`).
    Recursive,
    /// Active Directory's transitive match (`LDAP_MATCHING_RULE_IN_CHAIN`): one search per group.
    InChain,
    /// In-chain when the server says it is Active Directory, recursive otherwise.
    Auto,
}

/// `LDAP_MATCHING_RULE_IN_CHAIN`.
const IN_CHAIN: &str = "1.2.840.113556.1.4.1941";

/// `supportedCapabilities` values of Active Directory (and AD LDS), which support IN_CHAIN.
const AD_CAPABILITIES: [&str; 2] = ["1.2.840.113556.1.4.800", "1.2.840.113556.1.4.1851"];

/// A user who belongs in CloudShell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub username: Username,
    /// Shared: the state's record of the user holds the same text (`sync::ledger`). One pointer wide.
    pub dn: arcstr::ArcStr,
}

/// A group reached while expanding a configured group (the group itself first), with its direct user
/// members: what CloudShell's import by that group's name would cover.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub name: String,
    pub dn: String,
    /// In no particular order.
    pub direct_members: Arc<[Arc<Member>]>,
    /// Direct members left out as disabled accounts: an import by this group's name would bring them in.
    pub disabled_members: usize,
    /// Direct members whose entries were refused (no usable username, control characters) or whose username
    /// attribute holds several values: an import by this group's name would bring them in too.
    pub unusable_members: usize,
}

/// Two or more directory entries whose usernames fold to the same name, or one entry whose username attribute
/// holds several names (a `Collision` per name): none of them is imported, deactivated or removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Collision {
    pub username: Username,
    pub dns: Vec<String>,
    /// Set when the name is one of several values of one entry's username attribute.
    pub multi_valued: Option<MultiValued>,
}

/// A user entry whose username attribute holds more than one name: which one is the user is not known, so it
/// is ambiguous under every one of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MultiValued {
    pub dn: String,
    /// Each value, as the server sent it (trimmed); the names that fold alike count once.
    pub values: Vec<String>,
}

/// A configured group, fully enumerated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub dn: String,
    /// Effective members (nested ones included when enabled), sorted by username, each once. Shared with
    /// every other group the user is in.
    pub members: Arc<[Arc<Member>]>,
    /// The group and every group nested in it, with their direct user members.
    pub sources: Vec<Source>,
    /// Members left out because their username collides with another entry's.
    pub collisions: Vec<Collision>,
    /// Member DNs that are neither users nor groups (dangling, deleted, foreign, or filtered out), and members
    /// not followed because nested groups are off.
    pub skipped_members: usize,
    /// Member DNs (at any level) that could not be read as a user or a group: entries that are gone, hidden
    /// from the service account, or without a usable username. As the directory wrote them.
    pub unreadable: Vec<String>,
    /// Members left out because their account is disabled.
    pub disabled_members: usize,
    /// Those disabled accounts (nested ones included), sorted by username, each once.
    pub disabled: Vec<Arc<Member>>,
}

/// One configured group's outcome.
#[derive(Clone, Debug)]
pub struct GroupOutcome {
    pub name: String,
    pub result: Result<Group, Error>,
}

/// What a snapshot covers, and so what may be concluded from a user's absence in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coverage {
    /// Every configured group was read whole in this run: a user absent from every group is not a member.
    Full,
    /// The daemon's kept directory model with the changes read in this run applied (content sync): it resolves
    /// as a full read does (`tests/changes_model.rs`), but a directory that lost a change it never reported
    /// (a crash between checkpoints) cannot be told from one without it, and such a loss keeps an entry that
    /// is gone. So a user's absence counts only where the change reads reported the departure (leavers and
    /// removals from CloudShell groups: `sync::changes::ChangeReads::track_members`); disabled accounts gone
    /// from every group and the shrink guard's reference wait for the next full read (the guard itself holds a
    /// group that shrank in a change read as in a full one).
    Changes,
}

impl Coverage {
    /// Whether the snapshot holds every member of every group it read, so that absence means "not a member".
    /// Rules that act on absence (the shrink guard's reference, leavers, disabled accounts, removals from
    /// CloudShell groups) ask this rather than assume it.
    pub fn is_full(self) -> bool {
        matches!(self, Coverage::Full)
    }
}

/// The directory as read in one run, resolved for the configured groups.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// In the configured order.
    pub groups: Vec<GroupOutcome>,
    /// How many user entries the users search returned.
    pub users_seen: usize,
    /// Searches and reads made.
    pub searches: usize,
    /// The URL of the server that was read.
    pub served_by: String,
    /// What the read covered.
    pub coverage: Coverage,
}

/// Reads the effective members of each configured group.
///
/// Fails as a whole only when the directory cannot be reached or the bind is refused; any later failure
/// puts the affected groups in error and keeps the others.
pub async fn snapshot(s: &Settings, groups: &[GroupName]) -> Result<Snapshot, Error> {
    Ok(Connection::open(s).await?.snapshot(groups).await)
}

/// A bound connection to the directory, ready for one snapshot.
pub struct Connection<'a> {
    s: &'a Settings,
    ldap: Ldap,
    url: String,
    verdict: guard::Verdict,
    /// Shared with a read beside this one: see [`Connection::sharing`].
    names: Option<Arc<SharedNames>>,
}

impl<'a> Connection<'a> {
    /// Connects and binds (trying each URL in order). Fails when no server can be reached or the bind is
    /// refused.
    pub async fn open(s: &'a Settings) -> Result<Connection<'a>, Error> {
        let (ldap, url, verdict) = connect::connect(s).await?;
        Ok(Connection { s, ldap, url, verdict, names: None })
    }

    /// The URL of the server this connection reached.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The same connection, read from now on with `s` (its limits on each operation): `check` connects with
    /// a short timeout, then reads the groups with the configured one.
    pub fn with_settings(self, s: &'a Settings) -> Connection<'a> {
        Connection { s, ..self }
    }

    /// The same connection, its full read's usernames exchanged for the copies in `names` when written alike
    /// (CloudShell's user list, read beside it, holds the same names: [`SharedNames`]). The users search lets the
    /// table go once done; a change read ([`Connection::read_changes`]) at once.
    pub fn sharing(self, names: Arc<SharedNames>) -> Connection<'a> {
        Connection { names: Some(names), ..self }
    }

    /// Reads the effective members of each configured group; a failure now puts groups in error.
    pub async fn snapshot(self, groups: &[GroupName]) -> Snapshot {
        let s = self.s;
        resolve(&self.read(groups).await, s, groups)
    }

    /// Reads what the configured groups need, unresolved; then the connection is closed.
    pub async fn read(self, groups: &[GroupName]) -> Entries {
        let mut reader = self.reader();
        let entries = reader.read(groups).await;
        let _ = reader.ldap.unbind().await;
        entries
    }

    fn reader(self) -> search::Reader<'a> {
        search::Reader {
            s: self.s,
            range_window: None,
            ldap: self.ldap,
            url: self.url,
            searches: 0,
            verdict: self.verdict,
            names: self.names,
        }
    }

    /// A change read: what changed since `kept` was last read (content sync), applied to it, and `groups`
    /// resolved from it (what a full read would give; [`changes::kept::Kept::resolve`] takes again only the
    /// groups a change may touch). `Err` says why only a full read can tell, and hands the connection back for
    /// it (`kept` is then to be dropped: never read from its cookie again). With `unless_unchanged`, a read
    /// that finds nothing changed (and the server not behind its answers) resolves nothing: the caller has
    /// what it would say.
    pub async fn read_changes(
        mut self,
        kept: &mut changes::kept::Kept,
        groups: &[GroupName],
        unless_unchanged: bool,
    ) -> Result<(Option<changes::kept::Resolved>, changes::kept::Changes), (Connection<'a>, String)> {
        // Only a full read's users search shares names (the connection handed back for one shares none).
        self.names = None;
        if let Some(why) = other_server(kept, &self.url) {
            return Err((self, why));
        }
        let changes = match kept.read(&mut self.ldap, &self.url, self.s.timeout).await {
            Ok(changes) => changes,
            Err(e) => return Err((self, format!("the change read failed: {e}"))),
        };
        if unless_unchanged && changes.is_nothing() {
            let _ = self.ldap.unbind().await;
            return Ok((None, changes));
        }
        match kept.resolve(self.s, groups) {
            Ok(mut resolved) => {
                resolved.snapshot.searches = changes.searches;
                let _ = self.ldap.unbind().await;
                Ok((Some(resolved), changes))
            }
            Err(why) => Err((self, why.to_string())),
        }
    }

    /// Watches the users and groups under the base DN for changes, handing `each` a notice per change and one
    /// when the server starts announcing them, until the search ends; returns why it ended. Content sync's
    /// refreshAndPersist, from the server's state now (a refreshOnly search that matches nothing gives its
    /// cookie); or, unless `ldap.change_detection = "syncrepl"`, on a server whose root DSE lists change
    /// notifications and not content sync, or lists no control but Active Directory's capabilities, those
    /// (`changes::notification`). How runs read (`"off"`: in full) does not matter to the watch. `waiting`:
    /// whether a change already waits for a run that has not read yet (notifications then skip their check).
    pub async fn watch(
        mut self,
        waiting: impl Fn() -> bool,
        each: impl FnMut(changes::syncrepl::Notice),
    ) -> changes::syncrepl::SyncError {
        use changes::syncrepl::{self, SyncError};
        let s = self.s;
        // What the server offers (`RootDse::offers`). A root DSE the account may not read says nothing (content
        // sync is tried); a connection that fails the read is tried again.
        let root = match search::root_dse(&mut self.ldap, s.timeout).await {
            Ok(root) => root,
            Err(ldap3::LdapError::LdapResult { .. }) => search::RootDse::default(),
            Err(e) => return SyncError::Connect(format!("the directory's root DSE could not be read: {e}")),
        };
        let notifications = root.offers(changes::notification::NOTIFICATION_OID) == Some(true);
        let no_content_sync = root.offers(syncrepl::SYNC_REQUEST_OID) == Some(false);
        // The users and groups: what the notifications' check matches, and what content sync announces.
        let filter = format!("(|{}{})", s.user_filter, s.group_filter);
        if s.change_detection != ChangeDetection::Syncrepl && notifications && no_content_sync {
            let why =
                changes::notification::persist(&mut self.ldap, &s.base_dn, &filter, s.timeout, waiting, each).await;
            return match self.verdict.reason() {
                Some(reason) => SyncError::Notification {
                    code: None,
                    reason: format!("the change-notification search ended: {reason}"),
                    refused: false,
                },
                None => why,
            };
        }
        if no_content_sync {
            let mut refused = syncrepl::not_offered(&s.base_dn);
            if notifications && let SyncError::Unsupported { reason } = &mut refused {
                reason.push_str(
                    "; it offers Active Directory's change notifications, which any ldap.change_detection but \
                     \"syncrepl\" and \"modify_timestamp\" watches by",
                );
            }
            return refused;
        }
        let now = syncrepl::read(&mut self.ldap, &s.base_dn, "(!(objectClass=*))", &["1.1"], None, s.timeout).await;
        let cookie = match now {
            Ok(read) => read.cookie,
            Err(e) => return e,
        };
        let why = syncrepl::persist(&mut self.ldap, &s.base_dn, &filter, cookie.as_deref(), each).await;
        // The guard knows why, when it ended the connection itself.
        match self.verdict.reason() {
            Some(reason) => SyncError::Ldap { code: None, reason: reason.to_string() },
            None => why,
        }
    }

    /// A full read, resolved for `groups`, then the directory model for later change reads on the same
    /// connection: the model kept from the last full read (`earlier`), brought up to date by a change read, when
    /// it resolves exactly as this full read did ([`ModelMade::Verified`]); else one built from a whole read
    /// (content sync from no cookie, DirSync or `uSNChanged` of the naming context, or every entry with its
    /// `modifyTimestamp`), kept only when it resolves exactly as the full read did. `Err` says why there is no
    /// model (the server does not offer the method, the two reads differ). The full read's entries are let go
    /// before the model is read, except for the users the model shares.
    pub async fn read_keeping(
        self,
        groups: &[GroupName],
        earlier: Option<changes::kept::Kept>,
    ) -> (Snapshot, Result<(changes::kept::Kept, ModelMade), String>) {
        let s = self.s;
        let mut reader = self.reader();
        let entries = reader.read(groups).await;
        let full = resolve(&entries, s, groups);
        // The model resolved below shares the users this read made.
        let known = entries.into_known_users();
        // Which method: `auto` asks the server's kind. DirSync reads the naming context holding the base DN,
        // whose groups the model then keeps (a member outside the base is known: a group or not).
        let root = search::server_kind(&mut reader.ldap, s.timeout).await;
        let Some(source) = s.change_detection.source(root.active_directory) else {
            return (full, Err("ldap.change_detection = \"off\"".into()));
        };
        let nc = root.naming_context_of(&s.base_dn);
        if let Some(earlier) = earlier {
            match verified(&mut reader, earlier, (source, nc), groups, &full, &known).await {
                Ok(kept) => {
                    let _ = reader.ldap.unbind().await;
                    return (full, Ok((kept, ModelMade::Verified)));
                }
                Err((why, true)) => {
                    tracing::warn!(reason = %why, "the kept directory model differs from the full read: reading it whole")
                }
                Err((why, false)) => {
                    tracing::info!(reason = %why, "the kept directory model is not verified: reading it whole")
                }
            }
        }
        let mut built = model_of(&mut reader, source, nc, groups, &full, &known).await;
        // `auto` on Active Directory: by update sequence numbers where the account may not use DirSync.
        if let Err((e, true)) = &built
            && let Some(fallback) = s.change_detection.fallback(source)
        {
            built = match model_of(&mut reader, fallback, nc, groups, &full, &known).await {
                Ok(kept) => {
                    tracing::info!(reason = %e, "DirSync cannot be used: change reads by uSNChanged instead");
                    Ok(kept)
                }
                Err((usn, refused)) => Err((format!("DirSync cannot be used: {e}; nor uSNChanged: {usn}"), refused)),
            };
        }
        let _ = reader.ldap.unbind().await;
        (full, built.map(|kept| (kept, ModelMade::Built)).map_err(|(why, _)| why))
    }
}
