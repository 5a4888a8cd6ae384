//! The CloudShell Admin REST API client: one small method per endpoint (login, list users, import by group
//! or by user), each turning CloudShell's wire shapes into plain values.
//!
//! The transport (token, re-login, retries, pacing, call counting) is [`session`]; the wire shapes are
//! [`wire`]. It does not decide anything: what to import is `sync`'s job. Nothing outside this module names
//! `reqwest` or a wire type. `docs/cloudshell-api.md` says what it assumes of the server.

mod error;
mod session;
mod wire;

use std::fmt;

use arcstr::ArcStr;
use serde_json::{Value, json};
use url::Url;

use crate::progress::Progress;
use crate::stop::Stops;
use crate::username::{SharedNames, Username};
pub use error::Error;
use error::excerpt;
use session::{Answer, Request, Session, Token, backoff};
pub use session::{AuthScheme, CallCounts, CallKind, Observer, Settings};

/// The most users a list page may hold; CloudShell answers 400 above it.
pub const PAGE_LIMIT: usize = 250;

/// A list longer than this many pages is taken for a server whose cursors never end.
const MAX_PAGES: usize = 100_000;

const USERS_PATH: &str = "api/v1/users";
const IMPORT_PATH: &str = "api/v1/integrations/IdentityManagement/users";
const GROUPS_PATH: &str = "api/v1/groups";

/// A CloudShell user, as far as the daemon cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// CloudShell's integer id; `None` when the server sent something else.
    pub id: Option<i64>,
    /// Parsed once, here; `None` when CloudShell sent a blank name. Such a record is kept (it is still a
    /// user in the lists and counts) but matches no directory user and is never a target of a change.
    pub username: Option<Username>,
    /// `IsActive`; `None` when CloudShell sent none or not a boolean: unknown, and such a user is never changed.
    pub is_active: Option<bool>,
    /// A CloudShell system administrator (`IsAdmin`); `None` when unknown, as for `is_active`.
    pub is_admin: Option<bool>,
    /// Set for users imported from a directory; `None` for local users. Shared: a list holds one copy of
    /// each domain's name, not one per user. One pointer wide.
    pub domain_name: Option<ArcStr>,
    /// The CloudShell groups the user is in, when the server lists them with the user. Boxed to its length:
    /// a list of 100,000 users holds one or two ids each, which a vector collected from the wire would hold
    /// in room for four.
    pub group_ids: Option<Box<[i64]>>,
}

/// A domain's name, shared with the users of a list already holding it (`domains`: those seen so far).
pub(crate) fn shared_domain(domains: &mut Vec<ArcStr>, name: String) -> ArcStr {
    if let Some(known) = domains.iter().find(|known| known.as_str() == name) {
        return known.clone();
    }
    let shared = ArcStr::from(name);
    // A handful of domains in practice; a server sending thousands just shares less.
    if domains.len() < 16 {
        domains.push(shared.clone());
    }
    shared
}

impl From<wire::User> for User {
    fn from(u: wire::User) -> User {
        User::from_wire(u, &mut Vec::new())
    }
}

impl User {
    /// The user from its wire form, its domain name taken from `domains` when an earlier user had it.
    fn from_wire(u: wire::User, domains: &mut Vec<ArcStr>) -> User {
        let domain_name = u.domain_name.map(|d| shared_domain(domains, d));
        User {
            id: u.id.as_i64().or_else(|| u.id.as_str().and_then(|s| s.parse().ok())),
            username: Username::new(&u.username),
            is_active: u.is_active.as_bool(),
            is_admin: u.is_admin.as_bool(),
            domain_name,
            group_ids: u.group_ids.map(|ids| ids.iter().filter_map(Value::as_i64).collect()),
        }
    }

    /// A local CloudShell user, not imported from a directory: `DomainName` null or blank. This program
    /// never deactivates one nor removes one from a group.
    pub fn is_local(&self) -> bool {
        self.domain_name.as_deref().is_none_or(|d| d.trim().is_empty())
    }
}

/// What [`Client::set_active`] found and did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetActive {
    /// The user was read as the opposite and changed.
    Changed,
    /// The user was read already as asked: nothing sent.
    Already,
    /// The user's `IsActive` read is missing or not a boolean: nothing sent.
    Unknown,
    /// No such user.
    Gone,
}

/// One entry of an import answer's `Errors`. The reference gives them no shape, so any JSON value is read:
/// a string is a message; an object's name and message are looked for under the usual keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportFailure {
    /// The username the entry is about, when the entry names one.
    pub name: Option<String>,
    pub message: String,
}

impl ImportFailure {
    /// The entry with `secrets` masked in its texts (servers echo requests back).
    fn masked(self, secrets: &[&str]) -> ImportFailure {
        ImportFailure {
            name: self.name.map(|n| error::mask(&n, secrets)),
            message: error::mask(&self.message, secrets),
        }
    }
}

impl From<&Value> for ImportFailure {
    fn from(value: &Value) -> ImportFailure {
        let lookup = |keys: &[&str]| {
            value.as_object().and_then(|o| {
                o.iter()
                    .find(|(k, v)| keys.iter().any(|key| k.eq_ignore_ascii_case(key)) && v.is_string())
                    .and_then(|(_, v)| v.as_str().map(str::to_string))
            })
        };
        match value {
            Value::String(s) => ImportFailure { name: None, message: s.clone() },
            Value::Object(_) => ImportFailure {
                name: lookup(&["Name", "Username", "UserName", "User"]),
                message: lookup(&["Message", "Error", "Reason", "Description"]).unwrap_or_else(|| value.to_string()),
            },
            other => ImportFailure { name: None, message: other.to_string() },
        }
    }
}

/// A CloudShell group (CloudShell's own, not the directory's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub id: i64,
    pub name: String,
}

/// One entry of a membership answer's `Errors`: the user it names (by id or by name), when it names one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipFailure {
    pub id: Option<i64>,
    pub name: Option<String>,
    pub message: String,
}

impl MembershipFailure {
    /// The entry with `secrets` masked in its texts.
    fn masked(self, secrets: &[&str]) -> MembershipFailure {
        let ImportFailure { name, message } = ImportFailure { name: self.name, message: self.message }.masked(secrets);
        MembershipFailure { id: self.id, name, message }
    }
}

impl From<&Value> for MembershipFailure {
    fn from(value: &Value) -> MembershipFailure {
        let id = value.as_object().and_then(|o| {
            o.iter()
                .find(|(k, _)| ["Id", "UserId"].iter().any(|key| k.eq_ignore_ascii_case(key)))
                .and_then(|(_, v)| v.as_i64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok())))
        });
        let ImportFailure { name, message } = ImportFailure::from(value);
        MembershipFailure { id, name, message }
    }
}

/// The outcome of adding users to, or removing them from, a CloudShell group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipChange {
    /// 200, or 202 with the entries that failed.
    Done { failures: Vec<MembershipFailure> },
    /// 404: no such group (any more).
    GroupNotFound { message: String },
    /// 400: the request was refused.
    Refused { message: String },
}

/// The outcome of importing a directory group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupImport {
    /// 200, 202 (some members failed) or 409 (nothing new): the users created and the failures reported.
    Done { created: Vec<User>, failures: Vec<ImportFailure> },
    /// 400: CloudShell refused the group, for example above its directory query limit.
    Refused { message: String },
    /// 404: CloudShell's directory has no such group.
    NotFound { message: String },
}

/// The outcome of importing one directory user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserImport {
    /// 200: the user was created.
    Created(User),
    /// 409: the user already exists (someone else created it), which is what an import wants.
    AlreadyExists,
    /// The answer was lost, and the user is there now: most likely this call created it.
    PresentAfterLostAnswer,
    /// 404: CloudShell's directory has no such user.
    NotFound { message: String },
    /// 400: CloudShell refused the request.
    Refused { message: String },
}

/// A CloudShell Admin API client. Cheap to share behind an `Arc`; calls may run concurrently.
pub struct Client {
    session: Session,
    /// The ids of the users this client sent a change for (activation, group membership), whatever the
    /// answer: what a copy of CloudShell's user list kept past this run no longer knows for certain.
    touched: std::sync::Mutex<std::collections::BTreeSet<i64>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.session.settings;
        f.debug_struct("Client")
            .field("url", &s.url.as_str())
            .field("username", &s.username)
            .field("domain", &s.domain)
            .field("auth_scheme", &s.auth_scheme)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Builds the client; it does not contact the server until the first call.
    pub fn new(settings: Settings) -> Result<Client, Error> {
        Ok(Client { session: Session::new(settings)?, touched: Default::default() })
    }

    /// Reports every request to `observer`, if any.
    pub fn with_observer(mut self, observer: Option<Observer>) -> Client {
        self.session.set_observer(observer);
        self
    }

    /// Lets the run's stop requests reach its calls: after `stops.stop` no retry starts and no further page
    /// is read; after `stops.abandon` calls in flight are given up.
    pub fn with_stops(mut self, stops: Stops) -> Client {
        self.session.stops = stops;
        self
    }

    /// Whether the run was asked to stop.
    fn stopping(&self) -> bool {
        self.session.stops.stop.is_cancelled()
    }

    /// Requests sent so far, by kind.
    pub fn calls(&self) -> CallCounts {
        self.session.calls()
    }

    /// The server's base URL.
    pub fn url(&self) -> &Url {
        &self.session.settings.url
    }

    /// Logs in and keeps the token. `PUT /Api/Auth/Login` answers a bare JSON string.
    pub async fn login(&self) -> Result<(), Error> {
        self.session.login().await
    }

    /// Uses the login `other` made (a client of the same settings but its limits), rather than logging in
    /// again.
    pub async fn share_login(&self, other: &Client) {
        self.session.share_login(&other.session).await
    }

    /// Every CloudShell user, following the cursors at [`PAGE_LIMIT`] a page.
    pub async fn list_users(&self) -> Result<Vec<User>, Error> {
        self.list_users_sharing(None).await
    }

    /// [`Client::list_users`], each username exchanged for the copy in `names` (a read beside this one made
    /// it) when written alike.
    pub async fn list_users_sharing(&self, names: Option<&SharedNames>) -> Result<Vec<User>, Error> {
        let (mut users, mut domains) = (Vec::new(), Vec::new());
        let share = |mut user: User| {
            if let (Some(names), Some(name)) = (names, user.username.as_mut()) {
                *name = names.share(name);
            }
            user
        };
        self.pages::<wire::UserList>(CallKind::ListUsers, USERS_PATH, &[], |page| {
            users.extend(page.into_iter().map(|u| share(User::from_wire(u, &mut domains))));
            true
        })
        .await?;
        // Grown by doubling, up to twice what it holds: the list is kept for the whole run (and by the daemon
        // for its change runs), with room for new hires only (100 kB at 100,000 users).
        users.shrink_to(users.len() + crate::room_for_new_hires(users.len()));
        Ok(users)
    }

    /// Whether CloudShell has a user by this name (compared case-insensitively), using the list's filter.
    pub async fn user_exists(&self, username: &str) -> Result<bool, Error> {
        Ok(self.find_user(username).await?.is_some())
    }

    /// The user by this name (compared case-insensitively), if CloudShell has one: the list's filter is a
    /// substring match, so the pages it answers are searched for the name itself.
    pub async fn find_user(&self, username: &str) -> Result<Option<User>, Error> {
        let Some(wanted) = Username::new(username) else { return Ok(None) };
        let mut found = None;
        let filter = [("paginationProperties.filter", username.trim().to_string())];
        self.pages::<wire::UserList>(CallKind::ListUsers, USERS_PATH, &filter, |page| {
            found = page.into_iter().map(User::from).find(|u| u.username.as_ref() == Some(&wanted));
            found.is_none()
        })
        .await?;
        Ok(found)
    }

    /// User `id` (`GET /api/v1/users/{id}`); `None` when CloudShell has no such user (404).
    pub async fn get_user(&self, id: i64) -> Result<Option<User>, Error> {
        let path = format!("{USERS_PATH}/{id}");
        let (answer, token) =
            self.session.call(&Request::new(CallKind::GetUser, reqwest::Method::GET, &path), true).await?;
        match answer.status {
            200 => Ok(Some(User::from(self.session.decode::<wire::User>("GET", &path, &answer, &token)?))),
            404 => Ok(None),
            _ => Err(self.session.unexpected("GET", &path, &answer, &token)),
        }
    }

    /// The ids of the users this client sent a change for so far (activation, group membership), whether or
    /// not it took effect.
    pub fn touched(&self) -> Vec<i64> {
        self.touched.lock().unwrap_or_else(|p| p.into_inner()).iter().copied().collect()
    }

    fn touch(&self, ids: &[i64]) {
        self.touched.lock().unwrap_or_else(|p| p.into_inner()).extend(ids.iter().copied());
    }

    /// Reads a paged list at [`PAGE_LIMIT`] a page, handing each page's items to `each` until it answers
    /// `false` or the last page. The one cursor loop: a cursor seen before, or more than [`MAX_PAGES`]
    /// pages, is an error rather than a loop. A list lasting longer than `progress_every` logs `read progress`
    /// at that interval.
    async fn pages<P: wire::Page>(
        &self,
        kind: CallKind,
        path: &str,
        extra: &[(&str, String)],
        mut each: impl FnMut(Vec<P::Item>) -> bool,
    ) -> Result<(), Error> {
        let mut cursor: Option<String> = None;
        let mut seen = std::collections::HashSet::new();
        let mut progress = Progress::new("cloudshell", kind.as_str(), self.session.settings.progress_every);
        for n in 0..MAX_PAGES {
            if n > 0 && self.stopping() {
                return Err(Error::abandoned("GET", path));
            }
            let mut query = vec![("paginationProperties.limit", PAGE_LIMIT.to_string())];
            query.extend(extra.iter().cloned());
            if let Some(c) = &cursor {
                query.push(("paginationProperties.cursor", c.clone()));
            }
            let (items, next) = self.page::<P>(kind, path, &query).await?.into_parts();
            if items.len() > PAGE_LIMIT {
                return Err(Error::Paging {
                    path: format!("/{path}"),
                    reason: format!("a page of {} items when {PAGE_LIMIT} were asked for", items.len()),
                });
            }
            progress.page(items.len());
            if !each(items) {
                return Ok(());
            }
            match next.filter(|c| !c.is_empty()) {
                None => return Ok(()),
                Some(next) if !seen.insert(next.clone()) => {
                    return Err(Error::Paging {
                        path: format!("/{path}"),
                        reason: format!("cursor {next:?} came back a second time"),
                    });
                }
                Some(next) => cursor = Some(next),
            }
        }
        Err(Error::Paging { path: format!("/{path}"), reason: format!("more than {MAX_PAGES} pages") })
    }

    /// One page of a list. A page that cannot be decoded (a truncated answer) is read again, up to
    /// `retries` times: reading is safe to repeat.
    async fn page<P: wire::Page>(&self, kind: CallKind, path: &str, query: &[(&str, String)]) -> Result<P, Error> {
        let mut attempt = 0;
        loop {
            let request = Request::new(kind, reqwest::Method::GET, path).with_query(query);
            let (answer, token) = self.session.call(&request, true).await?;
            if answer.status != 200 {
                return Err(self.session.unexpected("GET", path, &answer, &token));
            }
            match self.session.decode("GET", path, &answer, &token) {
                Err(e) if attempt < self.session.settings.retries => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, "cloudshell user page unreadable, reading it again");
                    if !self.session.stops.pause(backoff(attempt)).await {
                        return Err(e);
                    }
                }
                other => return other,
            }
        }
    }

    /// Every CloudShell group.
    pub async fn list_groups(&self) -> Result<Vec<Group>, Error> {
        let mut groups = Vec::new();
        let mut odd: Option<String> = None;
        self.pages::<wire::GroupList>(CallKind::ListGroups, GROUPS_PATH, &[], |page| {
            for g in page {
                match g.id.as_i64().or_else(|| g.id.as_str().and_then(|s| s.trim().parse().ok())) {
                    Some(id) => groups.push(Group { id, name: g.name }),
                    None => odd = Some(g.name),
                }
            }
            true
        })
        .await?;
        if let Some(name) = odd {
            // A group without a usable id cannot be written to; say so rather than skip it silently.
            tracing::warn!(group = %name, "cloudshell group without an integer id ignored");
        }
        Ok(groups)
    }

    /// The users in CloudShell group `id`. `Ok(None)` when there is no such group.
    pub async fn group_users(&self, id: i64) -> Result<Option<Vec<User>>, Error> {
        let path = format!("{GROUPS_PATH}/{id}/Users");
        let mut users = Vec::new();
        match self
            .pages::<wire::UserList>(CallKind::ListGroupUsers, &path, &[], |page| {
                users.extend(page.into_iter().map(User::from));
                true
            })
            .await
        {
            Ok(()) => Ok(Some(users)),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Adds users (by CloudShell id) to group `id`: `POST /api/v1/groups/{id}/Users`.
    pub async fn add_to_group(&self, id: i64, users: &[i64]) -> Result<MembershipChange, Error> {
        self.change_membership(CallKind::AddToGroup, reqwest::Method::POST, id, users).await
    }

    /// Removes users (by CloudShell id) from group `id`: `DELETE /api/v1/groups/{id}/Users`, same body.
    pub async fn remove_from_group(&self, id: i64, users: &[i64]) -> Result<MembershipChange, Error> {
        self.change_membership(CallKind::RemoveFromGroup, reqwest::Method::DELETE, id, users).await
    }

    async fn change_membership(
        &self,
        kind: CallKind,
        method: reqwest::Method,
        id: i64,
        users: &[i64],
    ) -> Result<MembershipChange, Error> {
        let path = format!("{GROUPS_PATH}/{id}/Users");
        self.touch(users);
        let body = json!({ "Users": users.iter().map(|u| json!({ "Id": u })).collect::<Vec<_>>() });
        let verb = method.to_string();
        // Not repeated blindly when the answer is lost: the caller reads the group again first.
        let (answer, token) = self.session.call(&Request::new(kind, method, &path).with_body(&body), false).await?;
        match answer.status {
            200..=202 | 204 => {
                let parsed: wire::ErrorsAnswer = if answer.body.is_empty() {
                    wire::ErrorsAnswer { errors: None }
                } else {
                    self.session.decode(&verb, &path, &answer, &token)?
                };
                let secrets = self.session.secrets(Some(&token));
                let failures = parsed
                    .errors
                    .unwrap_or_default()
                    .iter()
                    .map(|v| MembershipFailure::from(v).masked(&secrets))
                    .collect();
                Ok(MembershipChange::Done { failures })
            }
            404 => Ok(MembershipChange::GroupNotFound { message: self.refusal_message(&answer, &token) }),
            400 => Ok(MembershipChange::Refused { message: self.refusal_message(&answer, &token) }),
            _ => Err(self.session.unexpected(&verb, &path, &answer, &token)),
        }
    }

    /// Makes user `id` active or inactive, by read-modify-write: the user is read (`GET /api/v1/users/{id}`)
    /// and sent back whole with `IsActive` changed (`PUT`), since whether the server keeps fields a body
    /// leaves out is not documented. Nothing is sent back when the user read is already as asked
    /// ([`SetActive::Already`]) or its `IsActive` is missing or not a boolean ([`SetActive::Unknown`]).
    pub async fn set_active(&self, id: i64, active: bool) -> Result<SetActive, Error> {
        let path = format!("{USERS_PATH}/{id}");
        self.touch(&[id]);
        let (answer, token) =
            self.session.call(&Request::new(CallKind::GetUser, reqwest::Method::GET, &path), true).await?;
        match answer.status {
            200 => {}
            404 => return Ok(SetActive::Gone),
            _ => return Err(self.session.unexpected("GET", &path, &answer, &token)),
        }
        let mut user: Value = self.session.decode("GET", &path, &answer, &token)?;
        let Some(fields) = user.as_object_mut() else {
            return Err(Error::Decode {
                method: "GET".into(),
                path: format!("/{path}"),
                reason: format!("expected a user object, got {}", session::json_kind(&user)),
                body_excerpt: excerpt(&answer.body, &self.session.secrets(Some(&token))),
            });
        };
        let Some(key) = fields.keys().find(|k| k.eq_ignore_ascii_case("IsActive")).cloned() else {
            return Ok(SetActive::Unknown);
        };
        match fields.get(&key).and_then(Value::as_bool) {
            None => return Ok(SetActive::Unknown),
            Some(now) if now == active => return Ok(SetActive::Already),
            Some(_) => {}
        }
        fields.insert(key, Value::Bool(active));
        // Setting a field to a value is safe to repeat when an answer is lost.
        let edit = Request::new(CallKind::EditUser, reqwest::Method::PUT, &path).with_body(&user);
        let (answer, token) = self.session.call(&edit, true).await?;
        match answer.status {
            200..=204 => Ok(SetActive::Changed),
            404 => Ok(SetActive::Gone),
            _ => Err(self.session.unexpected("PUT", &path, &answer, &token)),
        }
    }

    async fn import(&self, kind: CallKind, body: Value) -> Result<(Answer, Token), Error> {
        self.session.call(&Request::new(kind, reqwest::Method::POST, IMPORT_PATH).with_body(&body), false).await
    }

    /// The `Message` of a refusal (or an excerpt of its body), with the password and token masked: servers
    /// echo requests back, and this text reaches logs and reports.
    fn refusal_message(&self, answer: &Answer, token: &Token) -> String {
        let secrets = self.session.secrets(Some(token));
        serde_json::from_slice::<Value>(&answer.body)
            .ok()
            .and_then(|v| {
                v.as_object().and_then(|o| {
                    o.iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case("Message"))
                        .and_then(|(_, v)| v.as_str().map(|m| error::mask(m, &secrets)))
                })
            })
            .unwrap_or_else(|| excerpt(&answer.body, &secrets))
    }

    /// An answer's `Errors` entries, read and masked.
    fn import_failures(&self, errors: Option<Vec<Value>>, token: &Token) -> Vec<ImportFailure> {
        let secrets = self.session.secrets(Some(token));
        errors.unwrap_or_default().iter().map(|v| ImportFailure::from(v).masked(&secrets)).collect()
    }

    /// Imports a directory group's members: `{"GroupName": ...}`.
    pub async fn import_group(&self, group: &str) -> Result<GroupImport, Error> {
        let (answer, token) = self.import(CallKind::ImportGroup, json!({ "GroupName": group })).await?;
        match answer.status {
            200 | 202 => {
                let parsed: wire::ImportAnswer = self.session.decode("POST", IMPORT_PATH, &answer, &token)?;
                Ok(GroupImport::Done {
                    created: parsed.users.unwrap_or_default().into_iter().map(User::from).collect(),
                    failures: self.import_failures(parsed.errors, &token),
                })
            }
            409 => Ok(GroupImport::Done { created: Vec::new(), failures: Vec::new() }),
            400 => Ok(GroupImport::Refused { message: self.refusal_message(&answer, &token) }),
            404 => Ok(GroupImport::NotFound { message: self.refusal_message(&answer, &token) }),
            _ => Err(self.session.unexpected("POST", IMPORT_PATH, &answer, &token)),
        }
    }

    /// Imports one directory user: `{"UserName": ...}`. When the answer is lost after the request went out,
    /// it looks before importing again: a user now present counts as already there.
    pub async fn import_user(&self, username: &str) -> Result<UserImport, Error> {
        let mut lost = 0u32;
        let (answer, token) = loop {
            match self.import(CallKind::ImportUser, json!({ "UserName": username })).await {
                // Stopping, the check would be a new call: the caller finds out next run.
                Err(e) if e.may_have_taken_effect() && lost < self.session.settings.retries && !self.stopping() => {
                    lost += 1;
                    tracing::warn!(username, error = %e, "user import answer lost, checking before importing again");
                    if self.user_exists(username).await? {
                        return Ok(UserImport::PresentAfterLostAnswer);
                    }
                }
                other => break other?,
            }
        };
        match answer.status {
            200..=202 => {
                let parsed: wire::ImportAnswer = self.session.decode("POST", IMPORT_PATH, &answer, &token)?;
                let failures: Vec<ImportFailure> = self.import_failures(parsed.errors, &token);
                match (parsed.users.unwrap_or_default().into_iter().next(), failures.first()) {
                    (Some(user), _) => Ok(UserImport::Created(user.into())),
                    (None, Some(failure)) => Ok(UserImport::Refused { message: failure.message.clone() }),
                    (None, None) => Err(Error::Decode {
                        method: "POST".into(),
                        path: format!("/{IMPORT_PATH}"),
                        reason: "the answer names no created user and no error".into(),
                        body_excerpt: excerpt(&answer.body, &self.session.secrets(Some(&token))),
                    }),
                }
            }
            409 => Ok(UserImport::AlreadyExists),
            400 => Ok(UserImport::Refused { message: self.refusal_message(&answer, &token) }),
            404 => Ok(UserImport::NotFound { message: self.refusal_message(&answer, &token) }),
            _ => Err(self.session.unexpected("POST", IMPORT_PATH, &answer, &token)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;
    use std::time::Duration;

    #[test]
    fn import_failures_read_any_json_value() {
        let f = ImportFailure::from(&json!({"Name": "jdoe", "Message": "no mailbox"}));
        assert_eq!(f, ImportFailure { name: Some("jdoe".into()), message: "no mailbox".into() });
        let f = ImportFailure::from(&json!({"username": "jdoe", "error": "boom"}));
        assert_eq!(f, ImportFailure { name: Some("jdoe".into()), message: "boom".into() });
        let f = ImportFailure::from(&json!("user x failed"));
        assert_eq!(f, ImportFailure { name: None, message: "user x failed".into() });
        let f = ImportFailure::from(&json!({"Code": 7}));
        assert_eq!(f, ImportFailure { name: None, message: "{\"Code\":7}".into() });
        let f = ImportFailure::from(&json!(42));
        assert_eq!(f.message, "42");
    }

    #[test]
    fn users_read_integer_or_string_ids_and_ignore_what_the_sync_does_not_use() {
        let u: wire::User = serde_json::from_value(json!({"Id": 11, "Username": "a", "Email": ""})).unwrap();
        assert_eq!(
            User::from(u),
            User {
                id: Some(11),
                username: Username::new("a"),
                is_active: None,
                is_admin: None,
                domain_name: None,
                group_ids: None
            }
        );
        let u: wire::User = serde_json::from_value(json!({"Id": "12", "Username": "b", "IsActive": false})).unwrap();
        let u = User::from(u);
        assert_eq!((u.id, u.is_active), (Some(12), Some(false)));
    }

    /// A missing or non-boolean `IsActive` or `IsAdmin` is unknown, never the safe-looking value, and never
    /// fails the page it is on.
    #[test]
    fn a_missing_or_non_boolean_active_or_admin_flag_is_unknown() {
        let read = |v: Value| User::from(serde_json::from_value::<wire::User>(v).unwrap());
        let u = read(json!({"Id": 1, "Username": "a", "IsActive": true, "IsAdmin": false}));
        assert_eq!((u.is_active, u.is_admin), (Some(true), Some(false)), "the control: booleans are read");
        for v in [
            json!({"Id": 1, "Username": "a"}),
            json!({"Id": 1, "Username": "a", "IsActive": null, "IsAdmin": null}),
            json!({"Id": 1, "Username": "a", "IsActive": "true", "IsAdmin": 0}),
        ] {
            let u = read(v.clone());
            assert_eq!((u.is_active, u.is_admin), (None, None), "{v}");
        }
        let page: wire::UserList =
            serde_json::from_value(json!({"Users": [{"Username": "a", "IsActive": "yes"}, {"Username": "b"}]}))
                .unwrap();
        assert_eq!(page.users.len(), 2);
    }

    #[test]
    fn a_username_is_parsed_once_and_a_blank_one_kept_as_a_user_without_a_name() {
        let read = |name: &str| User::from(serde_json::from_value::<wire::User>(json!({"Username": name})).unwrap());
        let u = read(" JPorter ");
        assert_eq!(u.username.as_ref().map(|n| (n.as_str(), n.folded())), Some(("JPorter", "jporter")));
        assert_eq!(read("  ").username, None);
    }

    #[test]
    fn a_list_holds_one_copy_of_each_domain_name() {
        let mut domains = Vec::new();
        let mut read = |name: &str, domain: Option<&str>| {
            let u: wire::User =
                serde_json::from_value(json!({"Id": 1, "Username": name, "DomainName": domain})).unwrap();
            User::from_wire(u, &mut domains)
        };
        let (a, b, local) = (read("a", Some("EXAMPLE")), read("b", Some("EXAMPLE")), read("c", None));
        assert!(ArcStr::ptr_eq(a.domain_name.as_ref().unwrap(), b.domain_name.as_ref().unwrap()));
        assert_eq!((a.domain_name.as_deref(), local.domain_name), (Some("EXAMPLE"), None));
    }

    #[test]
    fn a_user_without_a_domain_name_or_with_a_blank_one_is_local() {
        let user = |domain: Option<&str>| User {
            id: Some(1),
            username: Username::new("a"),
            is_active: Some(true),
            is_admin: Some(false),
            domain_name: domain.map(ArcStr::from),
            group_ids: None,
        };
        let local: Vec<bool> = [None, Some(""), Some("  "), Some("EXAMPLE")].map(|d| user(d).is_local()).to_vec();
        assert_eq!(local, [true, true, true, false]);
    }

    #[test]
    fn debug_output_never_shows_the_password_or_token() {
        let client = Client::new(Settings {
            url: Url::parse("http://cs.example:9000/prefix").unwrap(),
            username: "admin".into(),
            password: SecretString::from("hunter2-password"),
            domain: "Global".into(),
            auth_scheme: AuthScheme::Basic,
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            retries: 0,
            retry_deadline: Duration::from_secs(1),
            max_requests_per_second: 0.0,
            max_answer_bytes: 16 << 20,
            ca_file: None,
            progress_every: crate::progress::EVERY,
        })
        .unwrap();
        assert_eq!(client.url().as_str(), "http://cs.example:9000/prefix/");
        let shown = format!("{client:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("admin"));
    }
}
