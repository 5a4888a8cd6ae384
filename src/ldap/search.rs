//! The reads: one paged search of the users, paged searches for the configured groups by name, the root
//! DSE, base reads of member DNs level by level, AD's in-chain searches and range retrieval. Everything read
//! goes into [`Entries`], failures included; which reads to make next is decided by the pure parts of
//! [`super::model`], and [`super::resolve`] turns the entries into groups. This module only talks to the
//! server and turns its failures into [`Error`]s.

// Keys are DNs and usernames from this run's own reads: a fast non-cryptographic hasher (FxHash) is enough;
// a directory author crafting colliding values could at worst slow one run down.
use rustc_hash::FxHashSet as HashSet;

use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::{Ldap, LdapError, Scope, SearchEntry, ldap_escape};

use super::changes::notification::NOTIFICATION_OID;
use super::changes::syncrepl::SYNC_REQUEST_OID;
use super::dn::DnKey;
use super::entry::{self, UserAttributes, UserEntry, values};
use super::error::{Cause, result_reason};
use super::model::{self, Entries, GroupRecord, InChain, Sweep, UserIndex, UserIndexBuilder, Walk};
use super::{AD_CAPABILITIES, Error, IN_CHAIN, NAMES_PER_FILTER, Nesting, Settings, range};
use crate::group_name::GroupName;
use crate::progress::Progress;
use crate::username::SharedNames;

/// What a non-user member DN turned out to be.
enum Lookup {
    Group(GroupRecord),
    Neither,
    Failed(Error),
}

pub(super) struct Reader<'a> {
    pub s: &'a Settings,
    /// The range window in force: `member_range_size`, when the server is Active Directory.
    pub range_window: Option<u32>,
    pub ldap: Ldap,
    /// The server being read.
    pub url: String,
    pub searches: usize,
    /// Why the connection's guard ended it, if it did.
    pub verdict: super::guard::Verdict,
    /// Where the users search exchanges each username for a copy a read beside it made (taken by that search).
    pub names: Option<std::sync::Arc<SharedNames>>,
}

impl Reader<'_> {
    /// A failed operation as an [`Error`]. In a paged search, adminLimitExceeded (11) and
    /// unwillingToPerform (53) are the server refusing the page size (OpenLDAP and AD answer each).
    fn search_error(&self, operation: &str, e: LdapError, paged: bool) -> Error {
        let url = self.url.clone();
        if let Some(reason) = self.verdict.reason() {
            // ldap3 only saw the connection end: the guard knows why.
            return Error::Search { url, operation: operation.into(), reason: reason.into() };
        }
        match e {
            LdapError::Timeout { .. } => Error::Timeout { url, operation: operation.into(), timeout: self.s.timeout },
            LdapError::LdapResult { result } if paged && (result.rc == 11 || result.rc == 53) => Error::PageSize {
                url,
                page_size: self.s.page_size,
                operation: operation.into(),
                reason: result_reason(result.rc, &result.text),
            },
            LdapError::LdapResult { result } => Error::Search {
                url,
                operation: operation.into(),
                reason: result_reason(result.rc, &result.text).into(),
            },
            other => Error::Search { url, operation: operation.into(), reason: Cause::new(other) },
        }
    }

    /// A paged subtree search under the base, handing each entry to `each` as it arrives.
    async fn paged(
        &mut self,
        operation: &str,
        filter: &str,
        attrs: Vec<&str>,
        each: impl FnMut(SearchEntry),
    ) -> Result<(), Error> {
        self.paged_as(operation, filter, attrs, entry::decode, each).await
    }

    /// The same, each entry read by `decode` (`None`: malformed, which fails the search). A search lasting
    /// longer than `progress_every` logs `read progress` at that interval.
    async fn paged_as<T>(
        &mut self,
        operation: &str,
        filter: &str,
        attrs: Vec<&str>,
        decode: impl Fn(ldap3::ResultEntry) -> Option<T>,
        mut each: impl FnMut(T),
    ) -> Result<(), Error> {
        self.searches += 1;
        let adapters: Vec<Box<dyn Adapter<_, _>>> =
            vec![Box::new(EntriesOnly::new()), Box::new(PagedResults::new(self.s.page_size))];
        // From the request on: the wait for the first answer counts.
        let mut progress =
            Progress::new("directory", operation, self.s.progress_every).with_page_size(self.s.page_size.max(1) as u64);
        let mut stream = self
            .ldap
            .with_timeout(self.s.timeout)
            .streaming_search_with(adapters, &self.s.base_dn, Scope::Subtree, filter, attrs)
            .await
            .map_err(|e| self.search_error(operation, e, true))?;
        loop {
            match stream.next().await {
                Ok(Some(entry)) => match decode(entry) {
                    Some(entry) => {
                        each(entry);
                        progress.entry();
                    }
                    None => {
                        let _ = stream.finish().await;
                        return Err(Error::Search {
                            url: self.url.clone(),
                            operation: operation.into(),
                            reason: "the server sent a malformed entry".into(),
                        });
                    }
                },
                Ok(None) => break,
                Err(e) => {
                    let _ = stream.finish().await;
                    return Err(self.search_error(operation, e, true));
                }
            }
        }
        let result = stream.finish().await;
        result.success().map(|_| ()).map_err(|e| self.search_error(operation, e, true))
    }

    /// Reads everything the configured groups need: the users, the groups by name, the root DSE when the
    /// nesting mode or the range window depends on it, then in-chain searches or the member groups level by
    /// level. What could not be read is recorded in the entries, never left out.
    pub async fn read(&mut self, groups: &[GroupName]) -> Entries {
        let users = match self.read_users().await {
            Ok(u) => u,
            Err(e) => return Entries::failed(self.url.clone(), self.searches, e),
        };
        let mut entries = Entries::new(self.url.clone(), std::sync::Arc::new(users));
        if model::needs_server_kind(self.s) {
            let ad = self.is_active_directory().await;
            entries.active_directory = Some(ad);
            match self.s.member_range_size {
                Some(window) if ad => self.range_window = Some(window),
                // Other servers do not know the range option and would answer with no members at all.
                Some(_) => tracing::warn!("ldap.member_range_size ignored: the directory is not Active Directory"),
                None => {}
            }
        }
        for chunk in groups.chunks(NAMES_PER_FILTER) {
            self.read_named_groups(chunk, &mut entries).await;
        }
        match model::nesting_mode(self.s.nesting, entries.active_directory, &self.url) {
            Err(e) => entries.failure = Some(e),
            Ok(mode) => {
                if self.s.nesting == Nesting::Auto {
                    let (mode, why) = match mode {
                        Nesting::InChain => ("in_chain", "nested groups: the directory is Active Directory"),
                        _ => ("recursive", "nested groups: the directory is not Active Directory"),
                    };
                    tracing::info!(mode, "{why}");
                }
                let mut roots: Vec<DnKey> =
                    entries.match_names(self.s, groups).into_iter().filter_map(Result::ok).collect();
                let mut seen = HashSet::default();
                roots.retain(|k| seen.insert(k.clone()));
                match mode {
                    Nesting::InChain => self.read_in_chain(roots, &mut entries).await,
                    Nesting::Recursive => self.expand(roots, &mut entries).await,
                    Nesting::Off | Nesting::Auto => {}
                }
            }
        }
        entries.searches = self.searches;
        entries
    }

    /// The in-chain search of each configured group found.
    async fn read_in_chain(&mut self, roots: Vec<DnKey>, entries: &mut Entries) {
        for key in roots {
            let Some(dn) = entries.groups.get(&key).map(|g| g.dn.clone()) else {
                continue;
            };
            let members = self.in_chain_members(&dn, &entries.users).await;
            entries.in_chain.insert(key, members);
        }
    }

    /// The users search: every user entry, indexed by DN; usernames that collide are noted.
    async fn read_users(&mut self) -> Result<UserIndex, Error> {
        let s = self.s;
        let mut index = UserIndexBuilder::default();
        let attrs = vec![s.username_attribute.as_str(), "userAccountControl"];
        let user_attributes = UserAttributes { username: &s.username_attribute, include_disabled: s.include_disabled };
        let decode = |raw| UserEntry::from_result(raw, &user_attributes);
        let names = self.names.take();
        let push = |mut entry: UserEntry| {
            if let Some(names) = &names {
                entry.share_username(names);
            }
            index.push(entry, s)
        };
        self.paged_as("the users search", &s.user_filter, attrs, decode, push).await?;
        Ok(index.finish(s))
    }

    /// The member attribute to ask for: whole, or its first window.
    fn member_request(&self) -> String {
        match self.range_window {
            Some(w) => range::request(&self.s.member_attribute, 0, Some(w)),
            None => self.s.member_attribute.clone(),
        }
    }

    /// Every member value of a group entry (taken out of it), following range retrieval to the end.
    async fn member_values(&mut self, entry: &mut SearchEntry) -> Result<Vec<String>, Error> {
        let attr = self.s.member_attribute.clone();
        let first = range::values_of(entry, &attr, None).map_err(|e| self.members_error(&entry.dn, e))?;
        if first.next.is_none() {
            return Ok(first.values);
        }
        let ldap = self.ldap.clone();
        let (timeout, dn, searches) = (self.s.timeout, entry.dn.clone(), std::sync::atomic::AtomicUsize::new(0));
        let result = range::complete(first, &attr, self.range_window, |request| {
            searches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            range::read_window(ldap.clone(), dn.clone(), timeout, request)
        })
        .await;
        self.searches += searches.into_inner();
        result.map_err(|e| self.members_error(&entry.dn, e))
    }

    fn members_error(&self, dn: &str, e: range::Error) -> Error {
        Error::Search {
            url: self.url.clone(),
            operation: format!("reading the members of {dn}"),
            reason: Cause::new(e),
        }
    }

    async fn group_record(
        &mut self,
        mut entry: SearchEntry,
        index: &UserIndex,
        wanted: Option<&[GroupName]>,
    ) -> GroupRecord {
        let members = self.member_values(&mut entry).await;
        record(self.s, entry, members, index, wanted)
    }

    /// Group entries from a paged search, each turned into its record as it arrives (a member value is
    /// resolved to a user index and dropped at once: a million of them are never held); entries whose
    /// members continue in ranges are completed afterwards.
    async fn read_groups(
        &mut self,
        operation: &str,
        filter: &str,
        index: &UserIndex,
        wanted: Option<&[GroupName]>,
    ) -> Result<Vec<GroupRecord>, Error> {
        let s = self.s;
        let member = self.member_request();
        let (mut records, mut ranged) = (Vec::new(), Vec::new());
        let attr = s.member_attribute.as_str();
        let url = self.url.clone();
        self.paged(operation, filter, vec![s.group_name_attribute.as_str(), member.as_str()], |e| {
            if range::is_ranged(&e, attr) {
                // Values in ranges: completed afterwards, with more searches.
                ranged.push(e);
                return;
            }
            records.push(plain_record(s, &url, e, index, wanted));
        })
        .await?;
        for e in ranged {
            records.push(self.group_record(e, index, wanted).await);
        }
        Ok(records)
    }

    /// The groups named in `names` (one search): recorded as found by name, or the names as unread.
    async fn read_named_groups(&mut self, names: &[GroupName], entries: &mut Entries) {
        let filter = model::group_name_filter(self.s, names);
        match self.read_groups("the group search", &filter, &entries.users, Some(names)).await {
            Ok(found) => {
                for g in found {
                    entries.add_named(g);
                }
            }
            Err(e) => entries.unread_names.extend(names.iter().map(|n| (n.clone(), e.clone()))),
        }
    }

    /// Every group under the base (the group filter alone), for classifying many member DNs at once.
    async fn read_all_groups(&mut self, index: &UserIndex) -> Result<Vec<GroupRecord>, Error> {
        let filter = self.s.group_filter.clone();
        self.read_groups("the group sweep", &filter, index, None).await
    }

    /// Whether the server advertises Active Directory's capabilities (and so IN_CHAIN).
    async fn is_active_directory(&mut self) -> bool {
        self.searches += 1;
        is_active_directory(&mut self.ldap, self.s.timeout).await
    }

    /// The effective user members of a group by IN_CHAIN: one paged search of users. Also the disabled
    /// accounts it finds (indexes into `disabled_users`).
    async fn in_chain_members(&mut self, group_dn: &str, index: &UserIndex) -> Result<InChain, Error> {
        let s = self.s;
        let filter = format!("(&{}(memberOf:{IN_CHAIN}:={}))", s.user_filter, ldap_escape(group_dn));
        let (mut members, mut disabled) = (Vec::new(), Vec::new());
        self.paged("the in-chain member search", &filter, vec![s.username_attribute.as_str()], |e| {
            match index.find(&e.dn) {
                Some(n) => members.push(n),
                None => disabled.extend(index.disabled.get(&DnKey::new(&e.dn))),
            }
        })
        .await?;
        Ok((members, disabled))
    }

    /// Reads the member DNs that are not users, level by level, as [`Walk`] decides.
    async fn expand(&mut self, roots: Vec<DnKey>, entries: &mut Entries) {
        let mut walk = Walk::new(roots, self.s.max_nesting_depth);
        let base = DnKey::new(&self.s.base_dn);
        while let Some(to_read) = walk.step(&entries.groups) {
            if walk.wants_sweep(to_read.len()) {
                // One paged search of every group under the base answers for all those under it.
                walk.sweep = match self.read_all_groups(&entries.users).await {
                    Ok(groups) => {
                        for g in groups {
                            entries.groups.entry(DnKey::new(&g.dn)).or_insert(g);
                        }
                        Sweep::Done
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "group sweep failed; reading member DNs one by one");
                        Sweep::Failed
                    }
                };
            }
            let (to_read, neither) = walk.after_sweep(to_read, &entries.groups, &base);
            entries.neither.extend(neither);
            for (key, raw) in to_read {
                match self.lookup(&raw, &entries.users).await {
                    Lookup::Group(g) => {
                        entries.groups.insert(key, g);
                    }
                    Lookup::Neither => {
                        entries.neither.insert(key);
                    }
                    Lookup::Failed(e) => {
                        entries.failed.insert(key, e);
                    }
                }
            }
        }
    }

    /// A base-scope read of a member DN that is not a user: is it a group?
    async fn lookup(&mut self, dn: &str, index: &UserIndex) -> Lookup {
        self.searches += 1;
        let s = self.s;
        let member = self.member_request();
        let attrs = vec![s.group_name_attribute.as_str(), member.as_str()];
        let result = self.ldap.with_timeout(s.timeout).search(dn, Scope::Base, &s.group_filter, attrs).await;
        match result {
            Ok(result) => match result.1.rc {
                0 => match result.0.into_iter().next() {
                    Some(raw) => match entry::decode(raw) {
                        Some(e) => Lookup::Group(self.group_record(e, index, None).await),
                        None => Lookup::Failed(Error::Search {
                            url: self.url.clone(),
                            operation: format!("reading member {dn}"),
                            reason: "the server sent a malformed entry".into(),
                        }),
                    },
                    None => Lookup::Neither,
                },
                // noSuchObject: dangling; invalidDNSyntax: not a DN at all
                32 | 34 => Lookup::Neither,
                _ => Lookup::Failed(self.search_error(
                    &format!("reading member {dn}"),
                    LdapError::LdapResult { result: result.1 },
                    false,
                )),
            },
            Err(e) => Lookup::Failed(self.search_error(&format!("reading member {dn}"), e, false)),
        }
    }
}

/// What the root DSE says of the server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RootDse {
    /// It advertises Active Directory's capabilities (and so IN_CHAIN).
    pub active_directory: bool,
    /// The controls it lists (`supportedControl`); `None` when it lists none: hidden from this account, not
    /// known to be missing.
    pub controls: Option<Vec<String>>,
    /// Its naming contexts (`namingContexts`), as it lists them.
    pub naming_contexts: Vec<String>,
}

impl RootDse {
    /// Whether the server offers the control `oid`, as far as the root DSE tells: Active Directory never offers
    /// content sync (Samba ends the connection on a critical control it does not know), and offers its change
    /// notifications even where it lists no control; other servers, by their list (`None` without one).
    pub fn offers(&self, oid: &str) -> Option<bool> {
        if self.active_directory && oid == SYNC_REQUEST_OID {
            return Some(false);
        }
        match &self.controls {
            Some(controls) => Some(controls.iter().any(|c| c == oid)),
            None => self.active_directory.then_some(oid == NOTIFICATION_OID),
        }
    }

    /// The naming context holding `dn` (the deepest listed that holds it), if any.
    pub fn naming_context_of(&self, dn: &str) -> Option<&str> {
        let key = DnKey::new(dn);
        let holding = self.naming_contexts.iter().filter(|nc| key.is_within(&DnKey::new(nc)));
        holding.max_by_key(|nc| nc.len()).map(String::as_str)
    }
}

/// The root DSE: [`RootDse`].
pub(crate) async fn root_dse(ldap: &mut Ldap, timeout: std::time::Duration) -> Result<RootDse, LdapError> {
    let attrs = vec!["supportedCapabilities", "supportedControl", "namingContexts"];
    let root = ldap.with_timeout(timeout).search("", Scope::Base, "(objectClass=*)", attrs);
    let entries: Vec<SearchEntry> = root.await?.success()?.0.into_iter().filter_map(entry::decode).collect();
    let ad = entries.iter().any(|e| values(e, "supportedCapabilities").any(|c| AD_CAPABILITIES.contains(&c.as_str())));
    let controls: Vec<String> = entries.iter().flat_map(|e| values(e, "supportedControl").cloned()).collect();
    let naming_contexts = entries.iter().flat_map(|e| values(e, "namingContexts").cloned()).collect();
    Ok(RootDse { active_directory: ad, controls: Some(controls).filter(|c| !c.is_empty()), naming_contexts })
}

/// [`root_dse`]; one that cannot be read is taken for "not Active Directory" (and said so in a warning), with
/// its controls unknown.
pub(super) async fn server_kind(ldap: &mut Ldap, timeout: std::time::Duration) -> RootDse {
    match root_dse(ldap, timeout).await {
        Ok(root) => root,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the root DSE; expanding nested groups recursively");
            RootDse::default()
        }
    }
}

/// Whether the root DSE advertises Active Directory's capabilities: [`server_kind`].
pub(super) async fn is_active_directory(ldap: &mut Ldap, timeout: std::time::Duration) -> bool {
    server_kind(ldap, timeout).await.active_directory
}

/// The record of a group entry that holds its member values whole (not in ranges: see [`range::is_ranged`]).
pub(super) fn plain_record(
    s: &Settings,
    url: &str,
    mut e: SearchEntry,
    index: &UserIndex,
    wanted: Option<&[GroupName]>,
) -> GroupRecord {
    let members = range::values_of(&mut e, &s.member_attribute, None).map(|r| r.values).map_err(|err| Error::Search {
        url: url.to_string(),
        operation: format!("reading the members of {}", e.dn),
        reason: Cause::new(err),
    });
    record(s, e, members, index, wanted)
}

/// A group entry's record from its member values: user members resolved to indexes, disabled and refused
/// accounts counted, other member DNs kept. A group found by name is recorded under the configured name it
/// matched; a nested one under its first.
fn record(
    s: &Settings,
    entry: SearchEntry,
    members: Result<Vec<String>, Error>,
    index: &UserIndex,
    wanted: Option<&[GroupName]>,
) -> GroupRecord {
    let SearchEntry { dn, attrs, .. } = entry;
    let names: Vec<&String> = entry::attr_values(&attrs, &s.group_name_attribute).collect();
    group_record(dn, &names, members, index, wanted)
}

/// [`record`] of a group entry held in parts: its DN, its name values (the group name attribute's, in the
/// server's order) and its member values (the member attribute's, whole). The member values are taken as
/// they come (a `String` is moved into the record, never copied).
pub(super) fn group_record<N, M>(
    dn: String,
    names: &[N],
    members: Result<impl IntoIterator<Item = M>, Error>,
    index: &UserIndex,
    wanted: Option<&[GroupName]>,
) -> GroupRecord
where
    N: AsRef<str>,
    M: AsRef<str> + Into<String>,
{
    let (member_values, error) = match members {
        Ok(v) => (Some(v.into_iter()), None),
        Err(e) => (None, Some(e)),
    };
    let mut users = Vec::with_capacity(member_values.as_ref().map_or(0, |v| v.size_hint().0));
    let member_values = member_values.into_iter().flatten();
    let mut others = Vec::new();
    let mut disabled = Vec::new();
    let mut unusable = Vec::new();
    for value in member_values {
        let raw = value.as_ref();
        if raw.is_empty() {
            continue; // groupOfNames' placeholder for "no members"
        }
        match index.find(raw) {
            Some(n) => users.push(n),
            None => {
                let key = DnKey::new(raw);
                if let Some(&n) = index.disabled.get(&key) {
                    disabled.push(n);
                } else if index.unusable.contains(&key) {
                    unusable.push(value.into());
                } else {
                    others.push((key, value.into()));
                }
            }
        }
    }
    let names = names.iter().map(AsRef::as_ref);
    let matched: Vec<String> = match wanted {
        Some(wanted) => names.clone().filter(|n| wanted.contains(&GroupName::new(n))).map(str::to_string).collect(),
        None => Vec::new(),
    };
    let name = match wanted {
        Some(_) => matched.first().cloned(),
        None => names.clone().next().map(str::to_string),
    }
    .unwrap_or_else(|| dn.clone());
    GroupRecord { name, matched, dn, users, others, disabled, unusable, error }
}
