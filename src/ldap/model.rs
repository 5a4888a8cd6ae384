//! What the directory said in one read, as a value: the user entries, the group entries (the configured groups
//! and every group reached below them), the member DNs that turned out to be neither or could not be read, and
//! what stopped a read and why ([`Entries`]). Also the decisions the reads need that are pure: which nesting
//! mode is in force, which group entry a configured name means, and which member DNs the next level of the
//! walk must read ([`Walk`]). `search` makes the reads; `resolve` turns entries into a snapshot. Nothing here
//! does I/O.

// Keys are DNs and usernames from this run's own reads: a fast non-cryptographic hasher (FxHash) is enough;
// a directory author crafting colliding values could at worst slow one run down.
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::sync::Arc;

use ldap3::ldap_escape;

use super::dn::DnKey;
use super::entry::UserEntry;
use super::{Error, Member, MultiValued, Nesting, Settings};
use crate::group_name::GroupName;
use crate::username::{NameIndex, Username};

/// Unknown member DNs at one nesting level from which one search of every group beats reading each.
pub(super) const SWEEP_AT: usize = 64;

/// What an in-chain search found: the members and the disabled accounts (indexes into the user index).
pub(super) type InChain = (Vec<u32>, Vec<u32>);

/// Everything one read of the directory returned, before it is resolved into groups. It owns its data (no
/// borrow of the connection or the settings), so it can outlive the run that read it.
pub struct Entries {
    /// The server that was read.
    pub served_by: String,
    /// Searches and reads made.
    pub searches: usize,
    /// What stopped the whole read (the users search failed, or in-chain nesting on a server that is not
    /// Active Directory): every configured group fails with it.
    pub(super) failure: Option<Error>,
    pub(super) users: Arc<UserIndex>,
    /// Whether the root DSE says the server is Active Directory; `None` when it was not asked.
    pub(super) active_directory: Option<bool>,
    /// Every group entry read, by normalised DN.
    pub(super) groups: HashMap<DnKey, GroupRecord>,
    /// The group entries the search by configured names returned (a configured name means one of these).
    pub(super) named: Vec<DnKey>,
    /// Configured names whose search failed, with why.
    pub(super) unread_names: HashMap<GroupName, Error>,
    /// In-chain searches, by the configured group's normalised DN.
    pub(super) in_chain: HashMap<DnKey, Result<InChain, Error>>,
    /// Member DNs that are neither users nor groups (dangling, deleted, foreign, filtered out).
    pub(super) neither: HashSet<DnKey>,
    /// Member DNs whose read failed: a group reaching one cannot be enumerated.
    pub(super) failed: HashMap<DnKey, Error>,
}

impl Entries {
    /// Entries of a read that stopped before it found anything.
    pub(super) fn failed(served_by: String, searches: usize, failure: Error) -> Entries {
        let mut entries = Entries::new(served_by, Arc::default());
        entries.searches = searches;
        entries.failure = Some(failure);
        entries
    }

    pub(super) fn new(served_by: String, users: Arc<UserIndex>) -> Entries {
        Entries {
            served_by,
            searches: 0,
            failure: None,
            users,
            active_directory: None,
            groups: HashMap::default(),
            named: Vec::new(),
            unread_names: HashMap::default(),
            in_chain: HashMap::default(),
            neither: HashSet::default(),
            failed: HashMap::default(),
        }
    }

    /// Records a group the search by configured names found. Found again by another batch of names, it is
    /// still one entry, which answers to the names of both.
    pub(super) fn add_named(&mut self, mut g: GroupRecord) {
        let key = DnKey::new(&g.dn);
        if let Some(earlier) = self.groups.get(&key)
            && self.named.contains(&key)
        {
            let earlier: Vec<String> = earlier.matched.iter().filter(|n| !g.matched.contains(n)).cloned().collect();
            g.matched.splice(0..0, earlier);
            g.name = g.matched.first().cloned().unwrap_or(g.name);
        } else {
            self.named.push(key.clone());
        }
        self.groups.insert(key, g);
    }

    /// How many usable user entries the users search returned.
    pub fn users_seen(&self) -> usize {
        self.users.users.len()
    }

    /// The group entry each configured name means, or why there is none, in the order of `names`.
    pub(super) fn match_names(&self, s: &Settings, names: &[GroupName]) -> Vec<Result<DnKey, Error>> {
        let mut by_name: HashMap<GroupName, Vec<&DnKey>> = HashMap::default();
        for key in &self.named {
            let Some(g) = self.groups.get(key) else { continue };
            let names = if g.matched.is_empty() { std::slice::from_ref(&g.name) } else { g.matched.as_slice() };
            for name in names {
                // Found by two searches (names in two batches): one entry still.
                let found = by_name.entry(GroupName::new(name)).or_default();
                if !found.contains(&key) {
                    found.push(key);
                }
            }
        }
        names
            .iter()
            .map(|name| {
                if let Some(e) = self.unread_names.get(name) {
                    return Err(e.clone());
                }
                match by_name.get(name).map(Vec::as_slice).unwrap_or_default() {
                    [] => Err(Error::GroupNotFound {
                        url: self.served_by.clone(),
                        name: name.to_string(),
                        base_dn: s.base_dn.clone(),
                        filter: group_name_filter(s, std::slice::from_ref(name)),
                    }),
                    [one] => Ok((*one).clone()),
                    many => Err(Error::AmbiguousGroup {
                        url: self.served_by.clone(),
                        name: name.to_string(),
                        dns: many.iter().filter_map(|k| self.groups.get(*k)).map(|g| g.dn.clone()).collect(),
                    }),
                }
            })
            .collect()
    }
}

/// The search filter for groups by these names (`group_filter` and the name attribute).
pub(super) fn group_name_filter(s: &Settings, names: &[GroupName]) -> String {
    let attr = &s.group_name_attribute;
    let alternatives: String = names.iter().map(|n| format!("({attr}={})", ldap_escape(n.as_str()))).collect();
    if names.len() == 1 {
        format!("(&{}{alternatives})", s.group_filter)
    } else {
        format!("(&{}(|{alternatives}))", s.group_filter)
    }
}

/// Whether the root DSE must be read to decide the nesting mode or the range window.
pub(super) fn needs_server_kind(s: &Settings) -> bool {
    s.member_range_size.is_some() || matches!(s.nesting, Nesting::InChain | Nesting::Auto)
}

/// The nesting mode in force: as configured, or by whether the server is Active Directory (`None`: not
/// asked, which [`needs_server_kind`] rules out for the modes that depend on it). In-chain on a server that
/// is not Active Directory is an error: the matching rule would match nothing and every group read as empty.
pub(super) fn nesting_mode(configured: Nesting, active_directory: Option<bool>, url: &str) -> Result<Nesting, Error> {
    let ad = active_directory.unwrap_or(false);
    match configured {
        Nesting::InChain if !ad => Err(Error::Search {
            url: url.to_string(),
            operation: "nested group expansion".into(),
            reason: "ldap.nested_groups = \"in_chain\" needs Active Directory, and this server does not say it is \
                     one; use \"auto\" or true"
                .into(),
        }),
        Nesting::Auto if ad => Ok(Nesting::InChain),
        Nesting::Auto => Ok(Nesting::Recursive),
        other => Ok(other),
    }
}

/// Whether a sweep of every group has been made in this walk, and how it went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Sweep {
    NotYet,
    Done,
    Failed,
}

/// The level-by-level walk of member groups: which member DNs each level must read (each once, cycle-safe,
/// at most `max_nesting_depth` levels), and when one sweep of every group beats reading them one by one.
pub(super) struct Walk {
    level: Vec<DnKey>,
    visited: HashSet<DnKey>,
    levels_left: usize,
    pub sweep: Sweep,
}

impl Walk {
    pub fn new(roots: Vec<DnKey>, max_depth: usize) -> Walk {
        let visited = roots.iter().cloned().collect();
        Walk { level: roots, visited, levels_left: max_depth, sweep: Sweep::NotYet }
    }

    /// Moves one level down: the member DNs of the current level's groups not visited before, of which those
    /// not yet read are returned (normalised and as the server wrote them). `None` when the walk is over:
    /// nothing left below, or the depth cap reached.
    pub fn step(&mut self, groups: &HashMap<DnKey, GroupRecord>) -> Option<Vec<(DnKey, String)>> {
        if self.levels_left == 0 || self.level.is_empty() {
            return None;
        }
        self.levels_left -= 1;
        let (mut next, mut to_read) = (Vec::new(), Vec::new());
        for key in &self.level {
            let Some(group) = groups.get(key) else {
                continue;
            };
            for (other, raw) in &group.others {
                if self.visited.insert(other.clone()) {
                    next.push(other.clone());
                    if !groups.contains_key(other) {
                        to_read.push((other.clone(), raw.clone()));
                    }
                }
            }
        }
        self.level = next;
        Some(to_read)
    }

    /// Whether the walk ended at the depth cap with member DNs left to read.
    pub fn capped(&self) -> bool {
        self.levels_left == 0 && !self.level.is_empty()
    }

    /// Whether to read every group under the base before reading this many unknown member DNs (usually
    /// dangling ones: people deleted, groups never cleaned): once per walk, from [`SWEEP_AT`] on.
    pub fn wants_sweep(&self, unknown: usize) -> bool {
        self.sweep == Sweep::NotYet && unknown >= SWEEP_AT
    }

    /// After a sweep that worked, the member DNs still to read one by one, and those set aside as neither
    /// users nor groups: a DN under the base that the sweep did not find is not a group the filter admits;
    /// one outside the base must still be read.
    pub fn after_sweep(
        &self,
        to_read: Vec<(DnKey, String)>,
        groups: &HashMap<DnKey, GroupRecord>,
        base: &DnKey,
    ) -> (Vec<(DnKey, String)>, Vec<DnKey>) {
        if self.sweep != Sweep::Done {
            return (to_read, Vec::new());
        }
        let mut neither = Vec::new();
        let to_read = to_read
            .into_iter()
            .filter(|(key, _)| {
                if groups.contains_key(key) {
                    return false;
                }
                let under = key.is_within(base);
                if under {
                    neither.push(key.clone());
                }
                !under
            })
            .collect();
        (to_read, neither)
    }
}

/// The users read, and how to find one by DN.
#[derive(Clone, Default)]
pub(super) struct UserIndex {
    pub users: Vec<Arc<Member>>,
    /// DNs exactly as the server wrote them: most member values match one of these as they are.
    pub by_raw_dn: ByRawDn,
    /// Each username, by the first user holding it: what a build resumed from this index goes on from.
    pub by_name: ByName,
    /// Normalised DNs, for member values written another way: built on the first such value only, since
    /// most directories write member values exactly as the entries' DNs.
    pub by_key: std::sync::OnceLock<HashMap<DnKey, u32>>,
    pub collisions: HashMap<Username, Vec<String>>,
    /// Users whose username attribute holds several names (by index into `users`): every name, and the entry
    /// as the report names it. Never members of any group: collisions under each name.
    pub multi_valued: HashMap<u32, (Vec<Username>, MultiValued)>,
    /// Disabled accounts left out of the members, by normalised DN (index into `disabled_users`): members
    /// that are these are not "unknown".
    pub disabled: HashMap<DnKey, u32>,
    pub disabled_users: Vec<Arc<Member>>,
    /// Entries refused as users (no usable username), by normalised DN: members that are these are not
    /// "unknown" either.
    pub unusable: HashSet<DnKey>,
    /// How many entries were refused, and the first few (for the `user skipped` line): what a build resumed
    /// from this index ([`UserIndexBuilder::resume`]) counts on from.
    pub skipped: usize,
    pub examples: Vec<String>,
}

impl UserIndex {
    pub fn find(&self, dn: &str) -> Option<u32> {
        if let Some(n) = self.by_raw_dn.get(dn) {
            return Some(n);
        }
        let by_key = self
            .by_key
            .get_or_init(|| self.users.iter().enumerate().map(|(n, u)| (DnKey::new(&u.dn), n as u32)).collect());
        by_key.get(&DnKey::new(dn)).copied()
    }
}

/// How many skipped user entries the `user skipped` line names.
const SKIPPED_EXAMPLES: usize = 5;

/// The user index put together entry by entry, in the order the entries come: the first entry with a name
/// holds it, later ones collide with it. The users search and a kept model of the directory
/// (`changes::kept`) build it the same way, so that the same entries give the same index.
#[derive(Default)]
pub(super) struct UserIndexBuilder {
    users: Vec<Arc<Member>>,
    by_raw_dn: ByRawDn,
    by_name: ByName,
    collisions: HashMap<Username, Vec<String>>,
    multi_valued: HashMap<u32, (Vec<Username>, MultiValued)>,
    skipped: usize,
    examples: Vec<String>,
    disabled: HashMap<DnKey, u32>,
    disabled_users: Vec<Arc<Member>>,
    unusable: HashSet<DnKey>,
}

impl UserIndexBuilder {
    /// The builder as it stood when it finished `previous`, for entries that come after every one of its own
    /// (users created since, in a kept model's order): pushing them gives what a build from every entry gives,
    /// without going through the others again. `previous` is taken as it is, its tables by DN and by name too;
    /// a caller that keeps it passes a copy.
    pub fn resume(previous: UserIndex) -> UserIndexBuilder {
        let UserIndex {
            users,
            by_raw_dn,
            by_name,
            by_key: _,
            collisions,
            multi_valued,
            disabled,
            disabled_users,
            unusable,
            skipped,
            examples,
        } = previous;
        UserIndexBuilder {
            users,
            by_raw_dn,
            by_name,
            collisions,
            multi_valued,
            skipped,
            examples,
            disabled,
            disabled_users,
            unusable,
        }
    }

    /// Adds one user entry.
    pub fn push(&mut self, entry: UserEntry, s: &Settings) {
        self.push_reusing(entry, s, None);
    }

    /// [`UserIndexBuilder::push`], taking the user from `previous` (the users of an earlier read) when it holds
    /// the same one, rather than a new copy.
    pub fn push_reusing(&mut self, entry: UserEntry, s: &Settings, previous: Option<Earlier<'_>>) {
        let shared = previous.and_then(|p| p.same_as(&entry)).cloned();
        self.push_sharing(entry, s, shared);
    }

    /// [`UserIndexBuilder::push`], taking the user as `shared` (an earlier read's copy of the same user, found
    /// by [`Earlier::same_as`]) when there is one, rather than a new copy.
    pub fn push_sharing(&mut self, entry: UserEntry, s: &Settings, shared: Option<Arc<Member>>) {
        let n = self.users.len() as u32;
        let (member, names) = match entry {
            UserEntry::User(member) => (member, None),
            UserEntry::Ambiguous { member, names, values } => {
                // Kept as a user, so that the groups listing it know it, and set apart under each name.
                tracing::warn!(username = %member.username, dns = ?[&member.dn], values = ?values, "username collision");
                self.multi_valued.insert(n, (names.clone(), MultiValued { dn: member.dn.to_string(), values }));
                (member, Some(names))
            }
            UserEntry::Disabled(member) => {
                tracing::debug!(dn = %member.dn, "disabled account left out");
                self.disabled.insert(DnKey::new(&member.dn), self.disabled_users.len() as u32);
                self.disabled_users.push(Arc::new(member));
                return;
            }
            UserEntry::Unusable { dn, reason, length } => {
                // One line for them all after the search (a wrong attribute skips every entry); each at
                // debug level.
                self.skipped += 1;
                tracing::debug!(dn = %dn, attribute = %s.username_attribute, length, reason, "user skipped");
                if self.examples.len() < SKIPPED_EXAMPLES {
                    self.examples.push(match length {
                        Some(length) => format!("{dn} ({reason}: {length})"),
                        None => format!("{dn} ({reason})"),
                    });
                }
                self.unusable.insert(DnKey::new(&dn));
                return;
            }
        };
        // Each name goes to the first user holding it; a later one collides with it.
        let mut held = false;
        for name in names.as_deref().unwrap_or(std::slice::from_ref(&member.username)) {
            match self.by_name.get(&self.users, name) {
                Some(other) => self
                    .collisions
                    .entry(name.clone())
                    .or_insert_with(|| vec![self.users[other as usize].dn.to_string()])
                    .push(member.dn.to_string()),
                None if names.is_some() => self.by_name.insert_other(name.clone(), n),
                None => held = true,
            }
        }
        let member = shared.unwrap_or_else(|| Arc::new(member));
        self.users.push(member);
        self.by_raw_dn.insert(&self.users, n);
        if held {
            self.by_name.insert(&self.users, n);
        }
    }

    /// The index, once every entry is in; logs the collisions, the skipped entries and the disabled accounts.
    pub fn finish(self, s: &Settings) -> UserIndex {
        let mut users = self.users;
        users.shrink_to_fit();
        for (username, dns) in &self.collisions {
            tracing::warn!(username = %username, dns = ?dns, "username collision");
        }
        if self.skipped > 0 {
            tracing::warn!(
                count = self.skipped,
                attribute = %s.username_attribute,
                sample = ?self.examples,
                "user skipped"
            );
        }
        if !self.disabled.is_empty() {
            tracing::info!(count = self.disabled.len(), "disabled accounts left out");
        }
        UserIndex {
            users,
            by_raw_dn: self.by_raw_dn,
            by_name: self.by_name,
            by_key: std::sync::OnceLock::new(),
            collisions: self.collisions,
            multi_valued: self.multi_valued,
            disabled: self.disabled,
            disabled_users: self.disabled_users,
            unusable: self.unusable,
            skipped: self.skipped,
            examples: self.examples,
        }
    }
}

/// The users of an earlier read, found by DN as the server wrote it: a build takes a user from here when it is
/// the same, so that two reads hold one copy of it ([`UserIndexBuilder::push_reusing`]).
#[derive(Clone, Copy)]
pub(crate) struct Earlier<'a> {
    users: &'a [Arc<Member>],
    by_raw_dn: &'a ByRawDn,
}

impl<'a> Earlier<'a> {
    /// The earlier read's user with the same DN and the same username written alike. Alike, not equal as
    /// usernames compare: a name whose letter case changed is displayed as it is written now.
    fn same(self, member: &Member) -> Option<&'a Arc<Member>> {
        let kept = &self.users[self.by_raw_dn.get(&member.dn)? as usize];
        (kept.username.as_str() == member.username.as_str()).then_some(kept)
    }

    /// [`Earlier::same`] for the user of a user entry (a disabled account, or one without a usable username,
    /// is never a user to share).
    pub(crate) fn same_as(self, entry: &UserEntry) -> Option<&'a Arc<Member>> {
        match entry {
            UserEntry::User(member) | UserEntry::Ambiguous { member, .. } => self.same(member),
            UserEntry::Disabled(_) | UserEntry::Unusable { .. } => None,
        }
    }
}

impl UserIndex {
    pub(crate) fn earlier(&self) -> Earlier<'_> {
        Earlier { users: &self.users, by_raw_dn: &self.by_raw_dn }
    }
}

/// The users of a full read, kept once its snapshot is resolved for a read of the same directory beside it
/// (the directory model a daemon keeps for change reads): that read shares their copies ([`Earlier`]). Only
/// the list and its table by DN: 1.3 MB at 100,000 users, where the whole index may hold a table of every
/// normalised DN.
pub struct KnownUsers {
    users: Vec<Arc<Member>>,
    by_raw_dn: ByRawDn,
}

impl KnownUsers {
    pub(crate) fn earlier(&self) -> Earlier<'_> {
        Earlier { users: &self.users, by_raw_dn: &self.by_raw_dn }
    }

    /// Whether `users` are exactly these: as many, each the one held here for its DN (the same copy, which a
    /// read sharing them takes only for the same DN and the username written alike), none twice. (A username
    /// attribute holding several values is compared by the username taken from it.)
    pub(crate) fn are(&self, users: &[Arc<Member>]) -> bool {
        if users.len() != self.users.len() {
            return false;
        }
        let mut taken = vec![false; self.users.len()];
        users.iter().all(|u| match self.by_raw_dn.get(&u.dn) {
            Some(i) if Arc::ptr_eq(&self.users[i as usize], u) => !std::mem::replace(&mut taken[i as usize], true),
            _ => false,
        })
    }
}

impl Entries {
    /// The users read, for a read beside this one to share ([`KnownUsers`]); the rest of the entries goes.
    pub fn into_known_users(self) -> KnownUsers {
        match Arc::try_unwrap(self.users) {
            Ok(index) => KnownUsers { users: index.users, by_raw_dn: index.by_raw_dn },
            Err(index) => KnownUsers { users: index.users.clone(), by_raw_dn: index.by_raw_dn.clone() },
        }
    }
}

/// User indexes by DN exactly as the server wrote it. Each slot holds the user's DN (a pointer to the text the
/// user holds, not a copy) beside its index: a lookup reads the slot and the text, where reading the text
/// through the user list went through the list, the user and then the text (a million lookups in a full read).
#[derive(Clone, Default)]
pub(super) struct ByRawDn(hashbrown::HashTable<(arcstr::ArcStr, u32)>);

impl ByRawDn {
    fn hash(dn: &str) -> u64 {
        use std::hash::BuildHasher;
        rustc_hash::FxBuildHasher.hash_one(dn)
    }

    /// Adds user `n` of `users`.
    pub fn insert(&mut self, users: &[Arc<Member>], n: u32) {
        let dn = &users[n as usize].dn;
        self.0.insert_unique(ByRawDn::hash(dn), (dn.clone(), n), |(dn, _)| ByRawDn::hash(dn));
    }

    pub fn get(&self, dn: &str) -> Option<u32> {
        self.0.find(ByRawDn::hash(dn), |(held, _)| **held == *dn).map(|&(_, n)| n)
    }
}

/// Users by name (as usernames compare: folded), each name by the first user holding it. The index holds
/// positions in the user list and compares through it (4 bytes a user, no copy of the names); the names of
/// users whose username attribute holds several are in a map of their own.
#[derive(Clone, Default)]
pub(super) struct ByName {
    index: NameIndex,
    several: HashMap<Username, u32>,
}

impl ByName {
    fn get(&self, users: &[Arc<Member>], name: &Username) -> Option<u32> {
        let found = self.index.find(name.folded(), |m| Some(&users[m].username)).map(|m| m as u32);
        found.or_else(|| self.several.get(name).copied())
    }

    /// Adds user `n` of `users` under its username, which no user holds yet.
    fn insert(&mut self, users: &[Arc<Member>], n: u32) {
        self.index.add(n as usize, |m| Some(&users[m].username));
    }

    /// Adds user `n` under one of its several names.
    fn insert_other(&mut self, name: Username, n: u32) {
        self.several.insert(name, n);
    }
}

/// A group entry: user members resolved to indexes into the user list, other member DNs kept.
pub(super) struct GroupRecord {
    pub name: String,
    /// For a group found by name: every configured name it holds (a group with two names, both configured,
    /// is what each of them means).
    pub matched: Vec<String>,
    pub dn: String,
    pub users: Vec<u32>,
    pub others: Vec<(DnKey, String)>,
    /// Members that are disabled accounts (indexes into `disabled_users`), left out.
    pub disabled: Vec<u32>,
    /// Members that are refused entries (no usable username), left out: their DNs.
    pub unusable: Vec<String>,
    /// Why the member list is incomplete (range retrieval failed): the group cannot be used.
    pub error: Option<Error>,
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub const URL: &str = "ldap://test";

    pub fn settings(nesting: Nesting) -> Settings {
        Settings {
            urls: vec![URL.into()],
            connect_retries: 0,
            starttls: false,
            ca_file: None,
            danger_skip_tls_verify: false,
            bind_dn: "cn=svc,dc=x".into(),
            bind_password: secrecy::SecretString::from("pw"),
            base_dn: "ou=groups,dc=x".into(),
            user_filter: "(objectClass=person)".into(),
            group_filter: "(objectClass=groupOfNames)".into(),
            username_attribute: "uid".into(),
            group_name_attribute: "cn".into(),
            member_attribute: "member".into(),
            display_name_attribute: "displayName".into(),
            email_attribute: "mail".into(),
            page_size: 500,
            timeout: std::time::Duration::from_secs(1),
            max_message_bytes: 1 << 20,
            nesting,
            include_disabled: false,
            member_range_size: None,
            max_nesting_depth: 10,
            progress_every: crate::progress::EVERY,
            change_detection: crate::ldap::ChangeDetection::Off,
        }
    }

    pub fn user(name: &str) -> Arc<Member> {
        Arc::new(Member { username: Username::new(name).unwrap(), dn: format!("uid={name},ou=people,dc=x").into() })
    }

    /// A user index of `names`, in order.
    pub fn users(names: &[&str]) -> UserIndex {
        let users: Vec<Arc<Member>> = names.iter().map(|n| user(n)).collect();
        let mut by_raw_dn = ByRawDn::default();
        (0..users.len() as u32).for_each(|n| by_raw_dn.insert(&users, n));
        UserIndex { users, by_raw_dn, ..UserIndex::default() }
    }

    /// The DN of group `name`: under the base unless it starts with "far".
    pub fn group_dn(name: &str) -> String {
        match name.starts_with("far") {
            true => format!("cn={name},ou=elsewhere,dc=x"),
            false => format!("cn={name},ou=groups,dc=x"),
        }
    }

    pub fn key(name: &str) -> DnKey {
        DnKey::new(&group_dn(name))
    }

    /// A group entry with user members (indexes) and member DNs (group names).
    pub fn record(name: &str, users: &[u32], others: &[&str]) -> GroupRecord {
        GroupRecord {
            name: name.into(),
            matched: Vec::new(),
            dn: group_dn(name),
            users: users.to_vec(),
            others: others.iter().map(|g| (key(g), group_dn(g))).collect(),
            disabled: Vec::new(),
            unusable: Vec::new(),
            error: None,
        }
    }

    /// Entries holding `records`, each found by the name search.
    pub fn entries(users: UserIndex, records: Vec<GroupRecord>) -> Entries {
        let mut entries = Entries::new(URL.into(), Arc::new(users));
        for r in records {
            entries.named.push(DnKey::new(&r.dn));
            entries.groups.insert(DnKey::new(&r.dn), r);
        }
        entries
    }

    fn groups(records: Vec<GroupRecord>) -> HashMap<DnKey, GroupRecord> {
        records.into_iter().map(|r| (DnKey::new(&r.dn), r)).collect()
    }

    fn names(to_read: &[(DnKey, String)]) -> Vec<&str> {
        to_read.iter().map(|(_, raw)| raw.as_str()).collect()
    }

    /// Every kind of user entry, with a name taken twice and one taken by a multi-valued entry.
    fn mixed_entries() -> Vec<UserEntry> {
        let member = |name: &str, dn: &str| Member { username: Username::new(name).unwrap(), dn: dn.into() };
        let names = |names: &[&str]| names.iter().map(|n| Username::new(n).unwrap()).collect::<Vec<_>>();
        vec![
            UserEntry::User(member("ann", "uid=ann,dc=x")),
            UserEntry::Ambiguous {
                member: member("bo", "uid=bo,dc=x"),
                names: names(&["bo", "cy"]),
                values: vec!["bo".into(), "cy".into()],
            },
            UserEntry::Disabled(member("dee", "uid=dee,dc=x")),
            UserEntry::Unusable { dn: "uid=,dc=x".into(), reason: "empty", length: None },
            UserEntry::User(member("ANN", "uid=ann2,dc=x")),
            UserEntry::User(member("cy", "uid=cy,dc=x")),
            UserEntry::User(member("eve", "uid=eve,dc=x")),
            UserEntry::Unusable { dn: "uid=long,dc=x".into(), reason: "too long", length: Some(300) },
            UserEntry::Disabled(member("fay", "uid=fay,dc=x")),
            UserEntry::User(member("eve", "uid=eve2,dc=x")),
        ]
    }

    /// What an index holds, comparably.
    fn contents(index: &UserIndex) -> String {
        let dns: Vec<&str> = index.users.iter().map(|u| &*u.dn).collect();
        let found: Vec<Option<u32>> = dns.iter().map(|dn| index.by_raw_dn.get(dn)).collect();
        let by_name: Vec<Option<u32>> =
            index.users.iter().map(|u| index.by_name.get(&index.users, &u.username)).collect();
        let sorted = |mut v: Vec<String>| {
            v.sort();
            v
        };
        let collisions = sorted(index.collisions.iter().map(|(k, v)| format!("{k}: {v:?}")).collect());
        let multi = sorted(index.multi_valued.iter().map(|(k, v)| format!("{k}: {v:?}")).collect());
        let disabled = sorted(index.disabled.iter().map(|(k, v)| format!("{}: {v}", k.as_str())).collect());
        let disabled_users: Vec<&str> = index.disabled_users.iter().map(|u| &*u.dn).collect();
        let unusable = sorted(index.unusable.iter().map(|k| k.as_str().to_string()).collect());
        format!(
            "{dns:?} {found:?} {by_name:?} {collisions:?} {multi:?} {disabled:?} {disabled_users:?} {unusable:?} {} {:?}",
            index.skipped, index.examples
        )
    }

    /// A build resumed from an index of the first entries, given the rest, is the build of them all, wherever
    /// it stopped: collisions with earlier names, disabled and refused entries counted on; from a copy of the
    /// index or from the index itself, taken.
    #[test]
    fn a_resumed_build_is_the_build_of_every_entry() {
        let s = settings(Nesting::Off);
        let finish = |mut b: UserIndexBuilder, entries: Vec<UserEntry>| {
            entries.into_iter().for_each(|e| b.push(e, &s));
            b.finish(&s)
        };
        let whole = contents(&finish(UserIndexBuilder::default(), mixed_entries()));
        for at in 0..=mixed_entries().len() {
            let rest = || mixed_entries().split_off(at);
            let first = finish(UserIndexBuilder::default(), mixed_entries().into_iter().take(at).collect());
            let copied = finish(UserIndexBuilder::resume(first.clone()), rest());
            assert_eq!(contents(&copied), whole, "resumed after {at} entries");
            let taken = finish(UserIndexBuilder::resume(first), rest());
            assert_eq!(contents(&taken), whole, "resumed after {at} entries, the index taken");
        }
        assert!(whole.contains("cy: [") && whole.contains("MultiValued"), "the collisions are there: {whole}");
    }

    fn user_entry(name: &str, dn: &str) -> UserEntry {
        UserEntry::User(Member { username: Username::new(name).unwrap(), dn: arcstr::ArcStr::from(dn) })
    }

    /// An index of these users (username, DN), each made anew.
    fn index_of(users: &[(&str, &str)], s: &Settings) -> UserIndex {
        let mut index = UserIndexBuilder::default();
        users.iter().for_each(|(name, dn)| index.push(user_entry(name, dn), s));
        index.finish(s)
    }

    /// A build takes a user from an earlier read only when it is that user written alike: a username whose
    /// letter case changed (the same entry, the same DN) is displayed as written now. The control: the user
    /// written alike is the earlier read's own.
    #[test]
    fn a_build_shares_an_earlier_reads_user_only_when_written_alike() {
        let s = settings(Nesting::Off);
        let earlier = index_of(&[("Bob", "cn=b,dc=x"), ("cy", "cn=c,dc=x")], &s);
        let mut now = UserIndexBuilder::default();
        now.push_reusing(user_entry("bob", "cn=b,dc=x"), &s, Some(earlier.earlier()));
        now.push_reusing(user_entry("cy", "cn=c,dc=x"), &s, Some(earlier.earlier()));
        now.push_reusing(user_entry("cy2", "cn=c2,dc=x"), &s, Some(earlier.earlier()));
        let now = now.finish(&s);
        assert_eq!(now.users[0].username.as_str(), "bob", "as written now");
        assert!(!Arc::ptr_eq(&now.users[0], &earlier.users[0]));
        assert!(Arc::ptr_eq(&now.users[1], &earlier.users[1]), "the control: written alike, shared");
        assert_eq!(now.users[2].username.as_str(), "cy2");
    }

    /// A model's users are a full read's only when they are its copies, as many, none twice; the control: the
    /// read's own users are.
    #[test]
    fn users_are_a_reads_only_when_each_is_its_copy_once() {
        let s = settings(Nesting::Off);
        let read = index_of(&[("ann", "cn=a,dc=x"), ("bob", "cn=b,dc=x")], &s);
        let known = KnownUsers { users: read.users.clone(), by_raw_dn: read.by_raw_dn.clone() };
        let (ann, bob) = (read.users[0].clone(), read.users[1].clone());
        assert!(known.are(&[bob.clone(), ann.clone()]), "the control, in any order");
        assert!(!known.are(&[ann.clone(), ann.clone()]), "one of them twice, the other missing");
        assert!(!known.are(std::slice::from_ref(&ann)), "one missing");
        let copy = Arc::new((*bob).clone());
        assert!(!known.are(&[ann.clone(), copy]), "written alike, but not the read's copy");
        let other = Arc::new(Member { username: Username::new("bob").unwrap(), dn: "cn=c,dc=x".into() });
        assert!(!known.are(&[ann, other]), "another DN");
    }

    #[test]
    fn entries_own_their_data_so_they_can_outlive_the_run_that_read_them() {
        // The daemon keeps the last read for the next run's change read: no borrow of the connection or the
        // settings, and movable between tasks. (A compile-time check.)
        fn kept<T: Send + Sync + 'static>() {}
        kept::<Entries>();
    }

    #[test]
    fn the_walk_reads_each_unknown_member_dn_once_level_by_level_within_the_cap() {
        let known = groups(vec![record("Top", &[], &["A", "B", "Top"]), record("A", &[], &["B", "C"])]);
        let mut walk = Walk::new(vec![key("Top")], 3);
        // Level 1: A is known, B is not; Top itself (a cycle) is never visited again.
        assert_eq!(names(&walk.step(&known).unwrap()), [group_dn("B")]);
        // Level 2: A's members; B was visited at level 1 already.
        assert_eq!(names(&walk.step(&known).unwrap()), [group_dn("C")]);
        // Level 3: C was never read, so it has no members to follow: the walk is over.
        assert_eq!(walk.step(&known).unwrap(), Vec::new());
        assert_eq!(walk.step(&known), None);
        // The cap: one level only.
        let mut walk = Walk::new(vec![key("Top")], 1);
        assert!(walk.step(&known).is_some());
        assert_eq!(walk.step(&known), None, "the depth cap ends the walk");
    }

    #[test]
    fn many_unknown_member_dns_call_for_one_sweep_that_settles_those_under_the_base() {
        let mut walk = Walk::new(vec![key("Top")], 10);
        assert!(!walk.wants_sweep(SWEEP_AT - 1));
        assert!(walk.wants_sweep(SWEEP_AT));
        let to_read =
            vec![(key("Found"), group_dn("Found")), (key("Gone"), group_dn("Gone")), (key("far"), group_dn("far"))];
        let known = groups(vec![record("Found", &[], &[])]);
        let base = DnKey::new("ou=groups,dc=x");
        // No sweep (or a failed one): everything is still read one by one.
        assert_eq!(walk.after_sweep(to_read.clone(), &known, &base).0.len(), 3);
        walk.sweep = Sweep::Failed;
        assert_eq!(walk.after_sweep(to_read.clone(), &known, &base).0.len(), 3);
        assert!(!walk.wants_sweep(1000), "one sweep a walk, even a failed one");
        walk.sweep = Sweep::Done;
        let (still, neither) = walk.after_sweep(to_read, &known, &base);
        assert_eq!(names(&still), [group_dn("far")], "outside the base the sweep proves nothing");
        assert_eq!(neither, [key("Gone")], "under the base and not found: not a group");
    }

    #[test]
    fn the_nesting_mode_follows_the_server_kind_and_in_chain_needs_active_directory() {
        use Nesting::*;
        for (configured, ad, expected) in [
            (Auto, Some(true), Ok(InChain)),
            (Auto, Some(false), Ok(Recursive)),
            (InChain, Some(true), Ok(InChain)),
            (InChain, Some(false), Err(())),
            (Recursive, None, Ok(Recursive)),
            (Recursive, Some(true), Ok(Recursive)),
            (Off, Some(true), Ok(Off)),
        ] {
            let got = nesting_mode(configured, ad, URL);
            assert_eq!(got.as_ref().ok(), expected.as_ref().ok(), "{configured:?} {ad:?}");
            if let Err(e) = got {
                assert!(e.to_string().contains("needs Active Directory"), "{e}");
            }
        }
        assert!(needs_server_kind(&settings(Auto)) && needs_server_kind(&settings(InChain)));
        assert!(!needs_server_kind(&settings(Recursive)));
        assert!(needs_server_kind(&Settings { member_range_size: Some(100), ..settings(Off) }));
    }

    #[test]
    fn a_configured_name_means_one_group_found_by_name_or_says_why_not() {
        let s = settings(Nesting::Recursive);
        let mut entries = entries(users(&[]), vec![record("Eng", &[], &[]), record("Ops", &[], &[])]);
        // A second "ops" elsewhere, also found by the name search: ambiguous.
        let mut twin = record("OPS", &[], &[]);
        twin.dn = "cn=OPS,ou=other,dc=x".into();
        entries.named.push(DnKey::new(&twin.dn));
        entries.groups.insert(DnKey::new(&twin.dn), twin);
        // A group read only as a nested member does not answer to its name.
        entries.groups.insert(key("Nested"), record("Nested", &[], &[]));
        let broken = Error::Search { url: URL.into(), operation: "the group search".into(), reason: "reset".into() };
        entries.unread_names.insert(GroupName::new("Lost"), broken.clone());
        let names: Vec<GroupName> = ["eng", "Ops", "Nested", "Lost"].map(GroupName::new).to_vec();
        let got = entries.match_names(&s, &names);
        assert_eq!(got[0], Ok(key("Eng")), "names fold");
        assert!(matches!(&got[1], Err(Error::AmbiguousGroup { dns, .. }) if dns.len() == 2), "{:?}", got[1]);
        assert!(
            matches!(&got[2], Err(Error::GroupNotFound { filter, .. }) if filter == "(&(objectClass=groupOfNames)(cn=Nested))"),
            "{:?}",
            got[2]
        );
        assert_eq!(got[3], Err(broken), "a name whose search failed is in error, not missing");
    }
}
