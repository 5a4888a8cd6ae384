//! The directory side: each configured group's effective members, read from LDAP / Active Directory.
//!
//! The public result is a [`Snapshot`], a value: for each configured group either its members or the error
//! that stopped its enumeration. A failed or truncated read is never reported as an empty group. Nothing
//! outside this module sees an `ldap3` type. It never writes to the directory.
//!
//! Membership strategy (searches for N configured groups, M users, K nested groups reached, D member DNs that
//! are neither users nor groups):
//! - one paged search of all users under the base (`user_filter`, username/display name/mail attributes):
//!   ceil(M / page_size) pages, joined in memory by normalised DN;
//! - one paged search for the configured groups by name, ORed 50 names per filter: ceil(N / 50) searches;
//! - with nested groups, one base-scope read per member DN that is not a user, level by level: K + D reads.
//!
//! No search is made per user member, so a 3,000-member group costs the same as a 3-member one.

mod dn;
mod entry;
mod error;
mod range;
mod tls;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError, Scope, SearchEntry, ldap_escape};
use secrecy::{ExposeSecret, SecretString};

pub use dn::{DnKey, escape_value as escape_dn_value};
pub use error::Error;

use crate::username::Username;

/// Usernames longer than this are refused (Active Directory's own limit is 20; CloudShell stores names, not
/// essays).
const MAX_USERNAME_CHARS: usize = 256;

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
    pub display_name_attribute: String,
    pub email_attribute: String,
    pub page_size: i32,
    /// The limit on connecting and on each operation.
    pub timeout: Duration,
    /// Whether and how members of member groups count as members.
    pub nesting: Nesting,
    /// Include accounts Active Directory marks disabled (`userAccountControl` bit 2).
    pub include_disabled: bool,
    /// Ask for the member attribute in windows of this many values (`member;range=0-N`), as Active
    /// Directory's range retrieval does on its own past 1,500 values. `None`: ask for it whole.
    pub member_range_size: Option<u32>,
    /// How many levels of groups within groups are followed before the group is in error.
    pub max_nesting_depth: usize,
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

/// `userAccountControl`'s ACCOUNTDISABLE bit.
const ACCOUNT_DISABLED: i64 = 0x2;

/// A user who belongs in CloudShell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub username: Username,
    pub dn: String,
    pub display_name: Option<String>,
    pub email: Option<String>,
}

/// A group reached while expanding a configured group (the group itself first), with its direct user
/// members: what CloudShell's import by that group's name would cover.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub name: String,
    pub dn: String,
    pub direct_members: Vec<Arc<Member>>,
    /// Direct members left out as disabled accounts: an import by this group's name would bring them in.
    pub disabled_members: usize,
}

/// Two or more directory entries whose usernames fold to the same name: none of them is imported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Collision {
    pub username: Username,
    pub dns: Vec<String>,
}

/// A configured group, fully enumerated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub dn: String,
    /// Effective members (nested ones included when enabled), sorted by username, each once. Shared with
    /// every other group the user is in.
    pub members: Vec<Arc<Member>>,
    /// The group and every group nested in it, with their direct user members.
    pub sources: Vec<Source>,
    /// Members left out because their username collides with another entry's.
    pub collisions: Vec<Collision>,
    /// Member DNs that are neither users nor groups (dangling, deleted, foreign, or filtered out).
    pub skipped_members: usize,
    /// Members left out because their account is disabled.
    pub disabled_members: usize,
}

/// One configured group's outcome.
#[derive(Clone, Debug)]
pub struct GroupOutcome {
    pub name: String,
    pub result: Result<Group, Error>,
}

/// The directory as read in one run.
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
}

/// The users read, and how to find one by DN.
struct UserIndex {
    users: Vec<Arc<Member>>,
    /// DNs exactly as the server wrote them: most member values match one of these as they are.
    by_raw_dn: HashMap<String, u32>,
    /// Normalised DNs, for member values written another way: built on the first such value only, since
    /// most directories write member values exactly as the entries' DNs.
    by_key: std::sync::OnceLock<HashMap<DnKey, u32>>,
    collisions: HashMap<Username, Vec<String>>,
    /// Disabled accounts left out, by normalised DN: members that are these are not "unknown".
    disabled: HashSet<DnKey>,
}

impl UserIndex {
    fn find(&self, dn: &str) -> Option<u32> {
        if let Some(&n) = self.by_raw_dn.get(dn) {
            return Some(n);
        }
        let by_key = self
            .by_key
            .get_or_init(|| self.users.iter().enumerate().map(|(n, u)| (DnKey::new(&u.dn), n as u32)).collect());
        by_key.get(&DnKey::new(dn)).copied()
    }
}

/// A group entry: user members resolved to indexes into the user list, other member DNs kept.
struct GroupRecord {
    name: String,
    dn: String,
    users: Vec<u32>,
    others: Vec<(DnKey, String)>,
    /// Members that are disabled accounts, left out.
    disabled: usize,
    /// Why the member list is incomplete (range retrieval failed): the group cannot be used.
    error: Option<Error>,
}

/// What a non-user member DN turned out to be.
enum Lookup {
    Group(GroupRecord),
    Neither,
    Failed(Error),
}

struct Reader<'a> {
    s: &'a Settings,
    /// The range window in force: `member_range_size`, when the server is Active Directory.
    range_window: Option<u32>,
    ldap: Ldap,
    /// The server being read.
    url: String,
    searches: usize,
}

/// Reads the effective members of each configured group.
///
/// Fails as a whole only when the directory cannot be reached or the bind is refused; any later failure
/// puts the affected groups in error and keeps the others.
pub async fn snapshot(s: &Settings, groups: &[String]) -> Result<Snapshot, Error> {
    Ok(Connection::open(s).await?.snapshot(groups).await)
}

/// A bound connection to the directory, ready for one snapshot.
pub struct Connection<'a> {
    s: &'a Settings,
    ldap: Ldap,
    url: String,
}

impl<'a> Connection<'a> {
    /// Connects and binds (trying each URL in order). Fails when no server can be reached or the bind is
    /// refused.
    pub async fn open(s: &'a Settings) -> Result<Connection<'a>, Error> {
        let (ldap, url) = connect(s).await?;
        Ok(Connection { s, ldap, url })
    }

    /// The URL of the server this connection reached.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Reads the effective members of each configured group; a failure now puts groups in error.
    pub async fn snapshot(self, groups: &[String]) -> Snapshot {
        let url = self.url.clone();
        let mut reader = Reader { s: self.s, range_window: None, ldap: self.ldap, url: self.url, searches: 0 };
        let result = reader.read(groups).await;
        let _ = reader.ldap.unbind().await;
        Snapshot { groups: result.0, users_seen: result.1, searches: reader.searches, served_by: url }
    }
}

/// Connects and binds to the first server that answers, trying each URL in order, each up to
/// `connect_retries + 1` times. Returns the connection and the URL that served it. A bind refused for bad
/// credentials is not retried elsewhere (it would only lock the account out faster).
async fn connect(s: &Settings) -> Result<(Ldap, String), Error> {
    if s.danger_skip_tls_verify {
        tracing::warn!(urls = ?s.urls, "tls certificate verification is disabled (danger_skip_tls_verify)");
    }
    let mut failures: Vec<Error> = Vec::new();
    for url in &s.urls {
        for attempt in 0..=s.connect_retries {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
            match connect_one(s, url).await {
                Ok(ldap) => {
                    if !failures.is_empty() {
                        tracing::warn!(url = %url, failed = failures.len(), "directory failover");
                    }
                    tracing::info!(url = %url, "directory connected");
                    return Ok((ldap, url.clone()));
                }
                Err(e) if same_everywhere(&e) => return Err(e),
                Err(e) => {
                    tracing::warn!(url = %url, attempt = attempt + 1, error = %e, "directory connection failed");
                    failures.push(e);
                }
            }
        }
    }
    match failures.len() {
        0 => Err(Error::Connect { url: "(none)".into(), reason: "ldap.url lists no server".into() }),
        1 => Err(failures.remove(0)),
        _ if s.urls.len() == 1 => Err(failures.pop().expect("more than one")),
        _ => {
            let mut seen = HashSet::new();
            let reasons: Vec<String> =
                failures.iter().map(|e| e.to_string()).filter(|r| seen.insert(r.clone())).collect();
            Err(Error::Connect {
                url: s.urls.join(", "),
                reason: format!("no server answered: {}", reasons.join("; ")),
            })
        }
    }
}

/// A failure another server would repeat: our own TLS settings, or a password the directory refused.
fn same_everywhere(e: &Error) -> bool {
    match e {
        Error::Tls { .. } => true,
        Error::Bind { reason, .. } => reason.contains("invalidCredentials"),
        _ => false,
    }
}

async fn connect_one(s: &Settings, url: &str) -> Result<Ldap, Error> {
    let mut conn_settings = LdapConnSettings::new()
        .set_conn_timeout(s.timeout)
        .set_starttls(s.starttls && url.to_ascii_lowercase().starts_with("ldap://"));
    if s.danger_skip_tls_verify {
        conn_settings = conn_settings.set_no_tls_verify(true);
    } else if let Some(ca) = &s.ca_file {
        conn_settings = conn_settings
            .set_config(tls::config_with_ca(ca).map_err(|reason| Error::Tls { url: url.to_string(), reason })?);
    }
    let (conn, mut ldap) = LdapConnAsync::with_settings(conn_settings, url)
        .await
        .map_err(|e| Error::Connect { url: url.to_string(), reason: describe_connect(&e, s) })?;
    ldap3::drive!(conn);
    let bound = ldap.with_timeout(s.timeout).simple_bind(&s.bind_dn, s.bind_password.expose_secret()).await;
    match bound {
        Ok(result) if result.rc == 0 => Ok(ldap),
        Ok(result) => Err(Error::Bind {
            url: url.to_string(),
            bind_dn: s.bind_dn.clone(),
            reason: {
                let mut reason = format!("result code {} ({}) {}", result.rc, rc_name(result.rc), result.text);
                if result.rc == 8 {
                    reason.push_str(" (the server wants TLS for simple binds: use ldaps:// or starttls = true)");
                }
                reason.trim().to_string()
            },
        }),
        Err(LdapError::Timeout { .. }) => {
            Err(Error::Timeout { url: url.to_string(), operation: "bind".into(), timeout: s.timeout })
        }
        Err(e) => Err(Error::Connect { url: url.to_string(), reason: e.to_string() }),
    }
}

fn describe_connect(e: &LdapError, s: &Settings) -> String {
    let text = e.to_string();
    let lower = text.to_lowercase();
    if lower.contains("certificate") || lower.contains("unknownissuer") {
        let hint = if s.ca_file.is_some() {
            "the certificate does not chain to ldap.ca_file or does not name the host"
        } else {
            "the certificate is not trusted: set ldap.ca_file to the directory's CA"
        };
        format!("{text} ({hint})")
    } else if matches!(e, LdapError::Timeout { .. }) || lower.contains("elapsed") {
        format!("no connection within {:?} (ldap.timeout)", s.timeout)
    } else {
        text
    }
}

fn rc_name(rc: u32) -> &'static str {
    match rc {
        1 => "operationsError",
        2 => "protocolError",
        3 => "timeLimitExceeded",
        4 => "sizeLimitExceeded",
        10 => "referral",
        11 => "adminLimitExceeded",
        12 => "unavailableCriticalExtension",
        32 => "noSuchObject",
        34 => "invalidDNSyntax",
        48 => "inappropriateAuthentication",
        8 => "strongerAuthRequired",
        49 => "invalidCredentials",
        50 => "insufficientAccessRights",
        51 => "busy",
        52 => "unavailable",
        53 => "unwillingToPerform",
        80 => "other",
        _ => "unknown",
    }
}

/// Values of an attribute, matched case-insensitively (servers may answer `memberof` for `memberOf`).
fn values<'e>(entry: &'e SearchEntry, attr: &str) -> impl Iterator<Item = &'e String> {
    entry.attrs.iter().filter(move |(k, _)| k.eq_ignore_ascii_case(attr)).flat_map(|(_, v)| v.iter())
}

fn has_binary(entry: &SearchEntry, attr: &str) -> bool {
    entry.bin_attrs.keys().any(|k| k.eq_ignore_ascii_case(attr))
}

impl Reader<'_> {
    fn search_error(&self, operation: &str, e: LdapError) -> Error {
        let url = self.url.clone();
        match e {
            LdapError::Timeout { .. } => Error::Timeout { url, operation: operation.into(), timeout: self.s.timeout },
            LdapError::LdapResult { result } if result.rc == 11 || result.rc == 53 && result.text.contains("page") => {
                Error::PageSize {
                    url,
                    page_size: self.s.page_size,
                    operation: operation.into(),
                    reason: format!("result code {} ({}) {}", result.rc, rc_name(result.rc), result.text)
                        .trim()
                        .to_string(),
                }
            }
            LdapError::LdapResult { result } => Error::Search {
                url,
                operation: operation.into(),
                reason: format!("result code {} ({}) {}", result.rc, rc_name(result.rc), result.text)
                    .trim()
                    .to_string(),
            },
            other => Error::Search { url, operation: operation.into(), reason: other.to_string() },
        }
    }

    /// A paged subtree search under the base, handing each entry to `each` as it arrives.
    async fn paged(
        &mut self,
        operation: &str,
        filter: &str,
        attrs: Vec<&str>,
        mut each: impl FnMut(SearchEntry),
    ) -> Result<(), Error> {
        self.searches += 1;
        let adapters: Vec<Box<dyn Adapter<_, _>>> =
            vec![Box::new(EntriesOnly::new()), Box::new(PagedResults::new(self.s.page_size))];
        let mut stream = self
            .ldap
            .with_timeout(self.s.timeout)
            .streaming_search_with(adapters, &self.s.base_dn, Scope::Subtree, filter, attrs)
            .await
            .map_err(|e| self.search_error(operation, e))?;
        loop {
            match stream.next().await {
                Ok(Some(entry)) => match entry::decode(entry) {
                    Some(entry) => each(entry),
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
                    return Err(self.search_error(operation, e));
                }
            }
        }
        let result = stream.finish().await;
        result.success().map(|_| ()).map_err(|e| self.search_error(operation, e))
    }

    async fn read(&mut self, groups: &[String]) -> (Vec<GroupOutcome>, usize) {
        let all_failed =
            |e: Error| groups.iter().map(|g| GroupOutcome { name: g.clone(), result: Err(e.clone()) }).collect();
        let index = match self.read_users().await {
            Ok(u) => u,
            Err(e) => return (all_failed(e), 0),
        };
        let users_seen = index.users.len();
        let mut active_directory: Option<bool> = None;
        if let Some(window) = self.s.member_range_size {
            let ad = self.is_active_directory().await;
            active_directory = Some(ad);
            if ad {
                self.range_window = Some(window);
            } else {
                // Other servers do not know the range option and would answer with no members at all.
                tracing::warn!("ldap.member_range_size ignored: the directory is not Active Directory");
            }
        }
        let mut known: HashMap<DnKey, GroupRecord> = HashMap::new();
        let mut named: HashMap<String, Result<DnKey, Error>> = HashMap::new();
        for chunk in groups.chunks(NAMES_PER_FILTER) {
            match self.read_named_groups(chunk, &index).await {
                Ok(found) => {
                    for name in chunk {
                        let matching: Vec<&GroupRecord> =
                            found.iter().filter(|g| dn::fold(&g.name) == dn::fold(name)).collect();
                        let outcome = match matching.as_slice() {
                            [] => Err(Error::GroupNotFound {
                                url: self.url.clone(),
                                name: name.clone(),
                                base_dn: self.s.base_dn.clone(),
                                filter: self.group_name_filter(std::slice::from_ref(name)),
                            }),
                            [one] => Ok(DnKey::new(&one.dn)),
                            many => Err(Error::AmbiguousGroup {
                                url: self.url.clone(),
                                name: name.clone(),
                                dns: many.iter().map(|g| g.dn.clone()).collect(),
                            }),
                        };
                        named.insert(name.clone(), outcome);
                    }
                    for g in found {
                        known.insert(DnKey::new(&g.dn), g);
                    }
                }
                Err(e) => {
                    for name in chunk {
                        named.insert(name.clone(), Err(e.clone()));
                    }
                }
            }
        }

        let mut neither: HashSet<DnKey> = HashSet::new();
        let mut failed: HashMap<DnKey, Error> = HashMap::new();
        let configured = self.s.nesting;
        let nesting = if configured == Nesting::InChain {
            let ad = match active_directory {
                Some(ad) => ad,
                None => self.is_active_directory().await,
            };
            if !ad {
                // Elsewhere the matching rule matches nothing: every group would read as empty.
                let e = Error::Search {
                    url: self.url.clone(),
                    operation: "nested group expansion".into(),
                    reason:
                        "ldap.nested_groups = \"in_chain\" needs Active Directory, and this server does not say it \
                             is one; use \"auto\" or true"
                            .into(),
                };
                return (all_failed(e), users_seen);
            }
            Nesting::InChain
        } else if configured != Nesting::Auto {
            configured
        } else if match active_directory {
            Some(ad) => ad,
            None => self.is_active_directory().await,
        } {
            tracing::info!(mode = "in_chain", "nested groups: the directory is Active Directory");
            Nesting::InChain
        } else {
            tracing::info!(mode = "recursive", "nested groups: the directory is not Active Directory");
            Nesting::Recursive
        };
        let mut in_chain: HashMap<DnKey, Result<Vec<u32>, Error>> = HashMap::new();
        if nesting == Nesting::InChain {
            for key in named.values().filter_map(|r| r.as_ref().ok().cloned()).collect::<Vec<_>>() {
                let dn = known.get(&key).map(|g| g.dn.clone()).expect("a found group is known");
                let members = self.in_chain_members(&dn, &index).await;
                in_chain.insert(key, members);
            }
        }
        if nesting == Nesting::Recursive {
            self.expand(
                &mut known,
                &mut neither,
                &mut failed,
                &index,
                named.values().filter_map(|r| r.as_ref().ok().cloned()).collect(),
            )
            .await;
        }

        let outcomes = groups
            .iter()
            .map(|name| {
                let result = match named.remove(name).expect("every name was looked up") {
                    Err(e) => Err(e),
                    Ok(key) => match in_chain.remove(&key) {
                        Some(members) => members.and_then(|m| self.resolve_in_chain(&key, m, &known, &index)),
                        None => self.resolve(name, &key, &known, &neither, &failed, &index, nesting),
                    },
                };
                GroupOutcome { name: name.clone(), result }
            })
            .collect();
        (outcomes, users_seen)
    }

    /// The users search: every user entry, indexed by DN; usernames that collide are noted.
    async fn read_users(&mut self) -> Result<UserIndex, Error> {
        let s = self.s;
        let mut users: Vec<Arc<Member>> = Vec::new();
        let mut by_raw_dn: HashMap<String, u32> = HashMap::new();
        let mut by_name: HashMap<Username, u32> = HashMap::new();
        let mut collisions: HashMap<Username, Vec<String>> = HashMap::new();
        let mut skipped = 0usize;
        let mut disabled: HashSet<DnKey> = HashSet::new();
        let attrs = vec![
            s.username_attribute.as_str(),
            s.display_name_attribute.as_str(),
            s.email_attribute.as_str(),
            "userAccountControl",
        ];
        self.paged("the users search", &s.user_filter, attrs, |entry| {
            let account_control = values(&entry, "userAccountControl").next().and_then(|v| v.trim().parse::<i64>().ok());
            if !s.include_disabled && account_control.is_some_and(|uac| uac & ACCOUNT_DISABLED != 0) {
                tracing::debug!(dn = %entry.dn, "disabled account left out");
                disabled.insert(DnKey::new(&entry.dn));
                return;
            }
            let raw = values(&entry, &s.username_attribute).next();
            let username = match raw.map(|v| (v.chars().count(), Username::new(v))) {
                Some((len, Some(u))) if len <= MAX_USERNAME_CHARS => u,
                Some((len, Some(_))) => {
                    skipped += 1;
                    tracing::warn!(dn = %entry.dn, attribute = %s.username_attribute, length = len, reason = "username longer than 256 characters", "user skipped");
                    return;
                }
                _ => {
                    skipped += 1;
                    let reason = if has_binary(&entry, &s.username_attribute) {
                        "username is not UTF-8"
                    } else if raw.is_some() {
                        "username is blank"
                    } else {
                        "no username attribute"
                    };
                    tracing::warn!(dn = %entry.dn, attribute = %s.username_attribute, reason, "user skipped");
                    return;
                }
            };
            let n = users.len() as u32;
            if let Some(&other) = by_name.get(&username) {
                collisions
                    .entry(username.clone())
                    .or_insert_with(|| vec![users[other as usize].dn.clone()])
                    .push(entry.dn.clone());
            } else {
                by_name.insert(username.clone(), n);
            }
            by_raw_dn.insert(entry.dn.clone(), n);
            let display_name = values(&entry, &s.display_name_attribute).next().cloned();
            let email = values(&entry, &s.email_attribute).next().cloned();
            users.push(Arc::new(Member { username, display_name, email, dn: entry.dn }));
        })
        .await?;
        users.shrink_to_fit();
        for (username, dns) in &collisions {
            tracing::warn!(username = %username, dns = ?dns, "username collision");
        }
        if skipped > 0 {
            tracing::info!(count = skipped, "user entries without a usable username skipped");
        }
        if !disabled.is_empty() {
            tracing::info!(count = disabled.len(), "disabled accounts left out");
        }
        Ok(UserIndex { users, by_raw_dn, by_key: std::sync::OnceLock::new(), collisions, disabled })
    }

    fn group_name_filter(&self, names: &[String]) -> String {
        let attr = &self.s.group_name_attribute;
        let alternatives: String = names.iter().map(|n| format!("({attr}={})", ldap_escape(n.as_str()))).collect();
        if names.len() == 1 {
            format!("(&{}{alternatives})", self.s.group_filter)
        } else {
            format!("(&{}(|{alternatives}))", self.s.group_filter)
        }
    }

    /// The member attribute to ask for: whole, or its first window.
    fn member_request(&self) -> String {
        match self.range_window {
            Some(w) => range::request(&self.s.member_attribute, 0, Some(w)),
            None => self.s.member_attribute.clone(),
        }
    }

    /// Every member value of a group entry, following range retrieval to the end.
    async fn member_values(&mut self, entry: &SearchEntry) -> Result<Vec<String>, Error> {
        let attr = self.s.member_attribute.clone();
        let operation = format!("reading the members of {}", entry.dn);
        let first = range::values_of(entry, &attr, None).map_err(|reason| Error::Search {
            url: self.url.clone(),
            operation: operation.clone(),
            reason,
        })?;
        if first.next.is_none() {
            return Ok(first.values);
        }
        let ldap = self.ldap.clone();
        let (timeout, dn, searches) = (self.s.timeout, entry.dn.clone(), std::sync::atomic::AtomicUsize::new(0));
        let result = range::complete(first, &attr, self.range_window, |request| {
            searches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let (mut ldap, dn) = (ldap.clone(), dn.clone());
            async move {
                let found = ldap
                    .with_timeout(timeout)
                    .search(&dn, Scope::Base, "(objectClass=*)", vec![request])
                    .await
                    .map_err(|e| e.to_string())?
                    .success()
                    .map_err(|e| e.to_string())?;
                Ok(found.0.into_iter().next().and_then(entry::decode))
            }
        })
        .await;
        self.searches += searches.into_inner();
        result.map_err(|reason| Error::Search { url: self.url.clone(), operation, reason })
    }

    async fn group_record(&mut self, entry: &SearchEntry, index: &UserIndex, wanted: Option<&[String]>) -> GroupRecord {
        let s = self.s;
        let (member_values, error) = match self.member_values(entry).await {
            Ok(v) => (v, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        let mut users = Vec::new();
        let mut others = Vec::new();
        let mut disabled = 0;
        for dn in member_values {
            if dn.is_empty() {
                continue; // groupOfNames' placeholder for "no members"
            }
            match index.find(&dn) {
                Some(n) => users.push(n),
                None => {
                    let key = DnKey::new(&dn);
                    if index.disabled.contains(&key) {
                        disabled += 1;
                    } else {
                        others.push((key, dn));
                    }
                }
            }
        }
        // A group found by name is recorded under the configured name it matched; a nested one under its first.
        let names: Vec<String> = values(entry, &s.group_name_attribute).cloned().collect();
        let name = match wanted {
            Some(wanted) => names.iter().find(|n| wanted.iter().any(|w| dn::fold(w) == dn::fold(n))).cloned(),
            None => names.first().cloned(),
        }
        .unwrap_or_else(|| entry.dn.clone());
        GroupRecord { name, dn: entry.dn.clone(), users, others, disabled, error }
    }

    async fn read_named_groups(&mut self, names: &[String], index: &UserIndex) -> Result<Vec<GroupRecord>, Error> {
        let filter = self.group_name_filter(names);
        let s = self.s;
        let mut entries = Vec::new();
        let member = self.member_request();
        self.paged("the group search", &filter, vec![s.group_name_attribute.as_str(), member.as_str()], |e| {
            entries.push(e)
        })
        .await?;
        let mut records = Vec::with_capacity(entries.len());
        for e in &entries {
            records.push(self.group_record(e, index, Some(names)).await);
        }
        Ok(records)
    }

    /// Whether the server advertises Active Directory's capabilities (and so IN_CHAIN).
    async fn is_active_directory(&mut self) -> bool {
        self.searches += 1;
        let found = self
            .ldap
            .with_timeout(self.s.timeout)
            .search("", Scope::Base, "(objectClass=*)", vec!["supportedCapabilities"])
            .await
            .and_then(|r| r.success());
        match found {
            Ok((entries, _)) => entries
                .into_iter()
                .filter_map(entry::decode)
                .any(|e| values(&e, "supportedCapabilities").any(|c| AD_CAPABILITIES.contains(&c.as_str()))),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the root DSE; expanding nested groups recursively");
                false
            }
        }
    }

    /// The effective user members of a group by IN_CHAIN: one paged search of users.
    async fn in_chain_members(&mut self, group_dn: &str, index: &UserIndex) -> Result<Vec<u32>, Error> {
        let s = self.s;
        let filter = format!("(&{}(memberOf:{IN_CHAIN}:={}))", s.user_filter, ldap_escape(group_dn));
        let mut members = Vec::new();
        self.paged("the in-chain member search", &filter, vec![s.username_attribute.as_str()], |e| {
            members.extend(index.find(&e.dn));
        })
        .await?;
        Ok(members)
    }

    /// Reads the member DNs that are not users, level by level, up to the nesting cap.
    async fn expand(
        &mut self,
        known: &mut HashMap<DnKey, GroupRecord>,
        neither: &mut HashSet<DnKey>,
        failed: &mut HashMap<DnKey, Error>,
        index: &UserIndex,
        roots: Vec<DnKey>,
    ) {
        let mut level: Vec<DnKey> = roots;
        let mut visited: HashSet<DnKey> = level.iter().cloned().collect();
        for _ in 0..self.s.max_nesting_depth {
            let mut next: Vec<DnKey> = Vec::new();
            let mut to_read: Vec<(DnKey, String)> = Vec::new();
            for key in &level {
                let Some(group) = known.get(key) else {
                    continue;
                };
                for (other, raw) in &group.others {
                    if visited.insert(other.clone()) {
                        next.push(other.clone());
                        if !known.contains_key(other) {
                            to_read.push((other.clone(), raw.clone()));
                        }
                    }
                }
            }
            for (key, raw) in to_read {
                match self.lookup(&raw, index).await {
                    Lookup::Group(g) => {
                        known.insert(key, g);
                    }
                    Lookup::Neither => {
                        neither.insert(key);
                    }
                    Lookup::Failed(e) => {
                        failed.insert(key, e);
                    }
                }
            }
            if next.is_empty() {
                return;
            }
            level = next;
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
                        Some(e) => Lookup::Group(self.group_record(&e, index, None).await),
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
                _ => Lookup::Failed(
                    self.search_error(&format!("reading member {dn}"), LdapError::LdapResult { result: result.1 }),
                ),
            },
            Err(e) => Lookup::Failed(self.search_error(&format!("reading member {dn}"), e)),
        }
    }

    /// A group's members from an IN_CHAIN search; its direct members give the one source.
    fn resolve_in_chain(
        &self,
        root: &DnKey,
        members: Vec<u32>,
        known: &HashMap<DnKey, GroupRecord>,
        index: &UserIndex,
    ) -> Result<Group, Error> {
        let top = known.get(root).expect("a found group is known");
        if let Some(e) = &top.error {
            return Err(e.clone());
        }
        // A sanity check: the transitive search must find at least the group's direct user members.
        let found: HashSet<u32> = members.iter().copied().collect();
        if let Some(&missing) = top.users.iter().find(|n| !found.contains(n)) {
            return Err(Error::Search {
                url: self.url.clone(),
                operation: format!("the in-chain member search of {}", top.dn),
                reason: format!("it does not return the direct member {}", index.users[missing as usize].dn),
            });
        }
        let source = Source {
            name: top.name.clone(),
            dn: top.dn.clone(),
            direct_members: top.users.iter().map(|&n| index.users[n as usize].clone()).collect(),
            disabled_members: top.disabled,
        };
        Ok(self.group_of(top, members, vec![source], (0, top.disabled), index))
    }

    /// Builds the group from member indexes: sorted, each once, collisions set apart.
    fn group_of(
        &self,
        top: &GroupRecord,
        mut members: Vec<u32>,
        sources: Vec<Source>,
        (skipped, disabled): (usize, usize),
        index: &UserIndex,
    ) -> Group {
        members.sort_unstable();
        members.dedup();
        let mut found_collisions: Vec<Collision> = Vec::new();
        let mut out: Vec<Arc<Member>> = Vec::with_capacity(members.len());
        for n in members {
            let u = &index.users[n as usize];
            if let Some(dns) = index.collisions.get(&u.username) {
                if !found_collisions.iter().any(|c| c.username == u.username) {
                    found_collisions.push(Collision { username: u.username.clone(), dns: dns.clone() });
                }
                continue;
            }
            out.push(u.clone());
        }
        out.sort_by(|a, b| a.username.cmp(&b.username));
        Group {
            name: top.name.clone(),
            dn: top.dn.clone(),
            members: out,
            sources,
            collisions: found_collisions,
            skipped_members: skipped,
            disabled_members: disabled,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn resolve(
        &self,
        name: &str,
        root: &DnKey,
        known: &HashMap<DnKey, GroupRecord>,
        neither: &HashSet<DnKey>,
        failed: &HashMap<DnKey, Error>,
        index: &UserIndex,
        nesting: Nesting,
    ) -> Result<Group, Error> {
        let users = &index.users;
        let top = known.get(root).expect("a found group is known");
        let mut members: Vec<u32> = Vec::new();
        let mut sources = Vec::new();
        let mut skipped = 0usize;
        let mut disabled = 0usize;
        let mut visited: HashSet<&DnKey> = HashSet::from([root]);
        let mut level: Vec<&GroupRecord> = vec![top];
        let mut depth = 0usize;
        while !level.is_empty() {
            let mut next = Vec::new();
            for group in level {
                if let Some(e) = &group.error {
                    return Err(e.clone());
                }
                members.extend(&group.users);
                disabled += group.disabled;
                sources.push(Source {
                    name: group.name.clone(),
                    dn: group.dn.clone(),
                    direct_members: group.users.iter().map(|&n| users[n as usize].clone()).collect(),
                    disabled_members: group.disabled,
                });
                for (key, raw) in &group.others {
                    if nesting != Nesting::Recursive {
                        skipped += 1;
                        tracing::info!(group = %name, member = %raw, reason = "not a user; nested groups are off", "member skipped");
                        continue;
                    }
                    if let Some(e) = failed.get(key) {
                        return Err(e.clone());
                    }
                    if let Some(g) = known.get(key) {
                        if visited.insert(key) {
                            next.push(g);
                        }
                    } else if neither.contains(key) {
                        skipped += 1;
                        tracing::warn!(group = %name, member = %raw, reason = "neither a user nor a group", "member skipped");
                    } else {
                        return Err(Error::TooDeep { name: name.to_string(), depth: self.s.max_nesting_depth });
                    }
                }
            }
            if !next.is_empty() {
                depth += 1;
                if depth > self.s.max_nesting_depth {
                    return Err(Error::TooDeep { name: name.to_string(), depth: self.s.max_nesting_depth });
                }
            }
            level = next;
        }
        Ok(self.group_of(top, members, sources, (skipped, disabled), index))
    }
}
