//! The CloudShell Admin REST API client: login, listing users, importing directory users and groups.
//!
//! It owns one reused HTTP client, the session token (re-logging in once on a 401) and the translation of
//! CloudShell's wire shapes into plain values. It does not decide anything: what to import is `sync`'s job.
//! Nothing outside this module names `reqwest` or a wire type.

mod error;
mod wire;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tokio::sync::{Mutex, RwLock};
use url::Url;

pub use error::Error;
use error::excerpt;

/// The most users a list page may hold; CloudShell answers 400 above it.
pub const PAGE_LIMIT: usize = 250;

/// How many tokens one call tries before giving up on 401s.
const MAX_TOKEN_TRIES: usize = 8;

/// A user list longer than this many pages is taken for a server whose cursors never end.
const MAX_PAGES: usize = 100_000;

/// The `Authorization` scheme sent with the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AuthScheme {
    /// `Authorization: Basic <token>`, as Quali's API reference shows (the raw token, not base64).
    #[default]
    Basic,
    /// `Authorization: Bearer <token>`, as Quali's usage page shows.
    Bearer,
}

impl AuthScheme {
    fn as_str(self) -> &'static str {
        match self {
            AuthScheme::Basic => "Basic",
            AuthScheme::Bearer => "Bearer",
        }
    }
}

/// How to reach and log in to CloudShell.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The Quali Server's base URL, such as `http://cloudshell.example.com:9000`.
    pub url: Url,
    pub username: String,
    pub password: SecretString,
    /// The CloudShell domain to log in to (`Global` by default).
    pub domain: String,
    pub auth_scheme: AuthScheme,
    pub connect_timeout: Duration,
    /// The limit on each request, from sending it to reading the whole answer.
    pub timeout: Duration,
    /// Retries of a call that failed transiently (5xx, 429, connection errors, timeouts of safe calls).
    pub retries: u32,
    /// The most time one call may spend on retries, waits included.
    pub retry_deadline: Duration,
    /// The most requests per second (0: no cap).
    pub max_requests_per_second: f64,
}

/// A CloudShell user, as far as the daemon cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// CloudShell's integer id; `None` when the server sent something else.
    pub id: Option<i64>,
    pub username: String,
    pub email: Option<String>,
    pub is_active: bool,
    /// Set for users imported from a directory.
    pub domain_name: Option<String>,
}

impl From<wire::User> for User {
    fn from(u: wire::User) -> User {
        User {
            id: u.id.as_i64().or_else(|| u.id.as_str().and_then(|s| s.parse().ok())),
            username: u.username,
            email: u.email.filter(|e| !e.is_empty()),
            is_active: u.is_active.unwrap_or(true),
            domain_name: u.domain_name,
        }
    }
}

/// One entry of an import answer's `Errors`. The reference gives them no shape, so any JSON value is read:
/// a string is a message; an object's name and message are looked for under the usual keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportFailure {
    /// The username the entry is about, when the entry names one.
    pub name: Option<String>,
    pub message: String,
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
    /// 409: the user already exists, which is what an import wants.
    AlreadyExists,
    /// 404: CloudShell's directory has no such user.
    NotFound { message: String },
    /// 400: CloudShell refused the request.
    Refused { message: String },
}

/// The session token. Its `Debug` never shows it.
#[derive(Clone)]
struct Token(SecretString);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

impl PartialEq for Token {
    fn eq(&self, other: &Token) -> bool {
        self.0.expose_secret() == other.0.expose_secret()
    }
}

/// Counts a call as under way while it lives.
struct InFlight<'a>(&'a AtomicU64);

impl<'a> InFlight<'a> {
    fn enter(counter: &'a AtomicU64) -> InFlight<'a> {
        counter.fetch_add(1, Ordering::Relaxed);
        InFlight(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An answer as read off the wire.
struct Answer {
    status: u16,
    body: Vec<u8>,
    /// The `Retry-After` header, as a wait.
    retry_after: Option<Duration>,
}

/// Reads `Retry-After`: delay-seconds or an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some((date.with_timezone(&chrono::Utc) - chrono::Utc::now()).to_std().unwrap_or(Duration::ZERO))
}

/// Spaces requests out to at most N a second.
struct Pacer {
    interval: Duration,
    next: Mutex<tokio::time::Instant>,
}

impl Pacer {
    async fn wait(&self) {
        let at = {
            let mut next = self.next.lock().await;
            let at = (*next).max(tokio::time::Instant::now());
            *next = at + self.interval;
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

/// Exponential backoff with jitter: about 250 ms, 500 ms, 1 s, ... up to 10 s, each scaled by 50-100 %.
fn backoff(attempt: u32) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let base = Duration::from_millis(250).saturating_mul(1u32 << attempt.saturating_sub(1).min(6));
    let base = base.min(Duration::from_secs(10));
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(attempt);
    let jitter = 0.5 + (h.finish() % 1000) as f64 / 2000.0;
    base.mul_f64(jitter)
}

/// How many requests of each kind a client has sent (retries included).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CallCounts {
    pub login: u64,
    pub list_users: u64,
    pub import_group: u64,
    pub import_user: u64,
}

#[derive(Default)]
struct Counters {
    login: AtomicU64,
    list_users: AtomicU64,
    import_group: AtomicU64,
    import_user: AtomicU64,
}

/// Told about every request: its kind (`login`, `list_users`, `import_group`, `import_user`, `other`), how long
/// it took, and the status (none when no answer came). For latency metrics.
pub type Observer = std::sync::Arc<dyn Fn(&'static str, Duration, Option<u16>) + Send + Sync>;

/// A CloudShell Admin API client. Cheap to share behind an `Arc`; calls may run concurrently.
pub struct Client {
    counters: Counters,
    /// Authenticated calls under way, to tell a token spent by parallel calls from a server refusing logins.
    in_flight: AtomicU64,
    observer: Option<Observer>,
    pacer: Option<Pacer>,
    http: reqwest::Client,
    settings: Settings,
    token: RwLock<Option<Token>>,
    /// Held while logging in, so that concurrent calls meeting an expired token log in once.
    login_lock: Mutex<()>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.settings.url.as_str())
            .field("username", &self.settings.username)
            .field("domain", &self.settings.domain)
            .field("auth_scheme", &self.settings.auth_scheme)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Builds the client; it does not contact the server until the first call.
    pub fn new(mut settings: Settings) -> Result<Client, Error> {
        // Join relative paths under the base, even when it carries a path prefix (a reverse proxy).
        if !settings.url.path().ends_with('/') {
            let path = format!("{}/", settings.url.path());
            settings.url.set_path(&path);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.timeout)
            .user_agent(concat!("cloudshell-ldap-sync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Connect {
                method: "-".into(),
                path: "-".into(),
                reason: format!("cannot build the HTTP client: {}", e.without_url()),
                sent: false,
            })?;
        Ok(Client {
            counters: Counters::default(),
            in_flight: AtomicU64::new(0),
            observer: None,
            pacer: (settings.max_requests_per_second > 0.0).then(|| Pacer {
                interval: Duration::from_secs_f64(1.0 / settings.max_requests_per_second),
                next: Mutex::new(tokio::time::Instant::now()),
            }),
            http,
            settings,
            token: RwLock::new(None),
            login_lock: Mutex::new(()),
        })
    }

    /// Requests sent so far, by kind.
    pub fn calls(&self) -> CallCounts {
        CallCounts {
            login: self.counters.login.load(Ordering::Relaxed),
            list_users: self.counters.list_users.load(Ordering::Relaxed),
            import_group: self.counters.import_group.load(Ordering::Relaxed),
            import_user: self.counters.import_user.load(Ordering::Relaxed),
        }
    }

    /// Reports every request to `observer`.
    pub fn with_observer(mut self, observer: Observer) -> Client {
        self.observer = Some(observer);
        self
    }

    /// Counts a request and names its kind.
    fn count(&self, path: &str, body: Option<&Value>) -> &'static str {
        let (counter, kind) = if path == LOGIN_PATH {
            (&self.counters.login, "login")
        } else if path == USERS_PATH {
            (&self.counters.list_users, "list_users")
        } else if path == IMPORT_PATH && body.is_some_and(|b| b.get("GroupName").is_some()) {
            (&self.counters.import_group, "import_group")
        } else if path == IMPORT_PATH {
            (&self.counters.import_user, "import_user")
        } else {
            return "other";
        };
        counter.fetch_add(1, Ordering::Relaxed);
        kind
    }

    /// The server's base URL.
    pub fn url(&self) -> &Url {
        &self.settings.url
    }

    fn secrets<'a>(&'a self, token: Option<&'a Token>) -> Vec<&'a str> {
        let mut secrets = vec![self.settings.password.expose_secret()];
        if let Some(t) = token {
            secrets.push(t.0.expose_secret());
        }
        secrets
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        token: Option<&Token>,
    ) -> Result<Answer, Error> {
        let kind = self.count(path, body);
        if let Some(pacer) = &self.pacer {
            pacer.wait().await;
        }
        let started = std::time::Instant::now();
        let result = self.send_inner(method, path, query, body, token).await;
        if let Some(observe) = &self.observer {
            observe(kind, started.elapsed(), result.as_ref().ok().map(|a| a.status));
        }
        result
    }

    async fn send_inner(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        token: Option<&Token>,
    ) -> Result<Answer, Error> {
        let mut url = self.settings.url.join(path).map_err(|e| Error::Connect {
            method: method.to_string(),
            path: format!("/{path}"),
            reason: format!("cannot build the URL: {e}"),
            sent: false,
        })?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        let mut request = self.http.request(method.clone(), url).header(reqwest::header::ACCEPT, "application/json");
        if let Some(token) = token {
            request = request.header(
                reqwest::header::AUTHORIZATION,
                format!("{} {}", self.settings.auth_scheme.as_str(), token.0.expose_secret()),
            );
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let failed = |e: reqwest::Error| {
            // A connection that was never made carried nothing; anything later may have reached the server.
            let sent = !e.is_connect();
            if e.is_timeout() {
                Error::Timeout {
                    method: method.to_string(),
                    path: format!("/{path}"),
                    timeout: self.settings.timeout,
                    sent,
                }
            } else {
                Error::Connect { method: method.to_string(), path: format!("/{path}"), reason: error_chain(&e), sent }
            }
        };
        let response = request.send().await.map_err(failed)?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = response.bytes().await.map_err(failed)?;
        Ok(Answer { status, body: body.to_vec(), retry_after })
    }

    /// Logs in and keeps the token. `PUT /Api/Auth/Login` answers a bare JSON string.
    pub async fn login(&self) -> Result<(), Error> {
        let _guard = self.login_lock.lock().await;
        self.login_locked().await.map(|_| ())
    }

    async fn login_locked(&self) -> Result<Token, Error> {
        let path = LOGIN_PATH;
        let body = json!({
            "Username": self.settings.username,
            "Password": self.settings.password.expose_secret(),
            "Domain": self.settings.domain,
        });
        let answer = self.send(reqwest::Method::PUT, path, &[], Some(&body), None).await?;
        if answer.status == 401 || answer.status == 403 {
            return Err(Error::LoginRefused {
                username: self.settings.username.clone(),
                domain: self.settings.domain.clone(),
                status: answer.status,
                body_excerpt: excerpt(&answer.body, &self.secrets(None)),
            });
        }
        if !(200..300).contains(&answer.status) {
            return Err(Error::Status {
                method: "PUT".into(),
                path: format!("/{path}"),
                status: answer.status,
                body_excerpt: excerpt(&answer.body, &self.secrets(None)),
            });
        }
        // The token is the body: never quote it in an error.
        let token = match serde_json::from_slice::<Value>(&answer.body) {
            Ok(Value::String(t)) if !t.trim().is_empty() => Token(SecretString::from(t)),
            Ok(other) => {
                return Err(Error::Decode {
                    method: "PUT".into(),
                    path: format!("/{path}"),
                    reason: format!("expected a JSON string token, got {}", json_kind(&other)),
                    body_excerpt: "(not shown: it may hold the token)".into(),
                });
            }
            Err(e) => {
                return Err(Error::Decode {
                    method: "PUT".into(),
                    path: format!("/{path}"),
                    reason: format!("expected a JSON string token: {e}"),
                    body_excerpt: "(not shown: it may hold the token)".into(),
                });
            }
        };
        *self.token.write().await = Some(token.clone());
        tracing::debug!("logged in to cloudshell");
        Ok(token)
    }

    /// The current token, logging in when there is none.
    async fn token(&self) -> Result<Token, Error> {
        if let Some(t) = self.token.read().await.clone() {
            return Ok(t);
        }
        let _guard = self.login_lock.lock().await;
        if let Some(t) = self.token.read().await.clone() {
            return Ok(t);
        }
        self.login_locked().await
    }

    /// Logs in again after `stale` was refused, unless another call already did. Says whether it logged in.
    async fn relogin(&self, stale: &Token) -> Result<(Token, bool), Error> {
        let _guard = self.login_lock.lock().await;
        if let Some(current) = self.token.read().await.clone()
            && current != *stale
        {
            return Ok((current, false));
        }
        tracing::info!("cloudshell token refused, logging in again");
        Ok((self.login_locked().await?, true))
    }

    /// An authenticated call. On 401 it logs in again once and retries. A token another call just fetched
    /// may be refused too (short token lifetimes, calls in parallel); the call then takes the next one, but
    /// logs in again only while other calls run in parallel (they may have spent its token); alone, a refused
    /// fresh token ends the call.
    async fn call_once(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<(Answer, Token), Error> {
        let _in_flight = InFlight::enter(&self.in_flight);
        let mut token = self.token().await?;
        let mut logged_in = false;
        for _ in 0..MAX_TOKEN_TRIES {
            let answer = self.send(method.clone(), path, query, body, Some(&token)).await?;
            if answer.status != 401 {
                return Ok((answer, token));
            }
            if logged_in {
                // Refused right after our own login. Another call may have logged in since: take its token.
                // Or calls in parallel may have spent ours first: log in again. Alone, give up.
                match self.token.read().await.clone() {
                    Some(current) if current != token => {
                        token = current;
                        continue;
                    }
                    _ if self.in_flight.load(Ordering::Relaxed) > 1 => {}
                    _ => return Ok((answer, token)),
                }
            }
            let (fresh, did_login) = self.relogin(&token).await?;
            token = fresh;
            logged_in = did_login;
        }
        self.send(method, path, query, body, Some(&token)).await.map(|answer| (answer, token))
    }

    /// An authenticated call with retries: 429 (after `Retry-After`), 5xx and connection failures are tried
    /// again with backoff, up to `retries` times and within `retry_deadline`. A call whose answer was lost
    /// after it was sent (timeout, cut connection) is tried again only when `safe_to_repeat`; otherwise the
    /// caller finds out what happened first.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        safe_to_repeat: bool,
    ) -> Result<(Answer, Token), Error> {
        let started = tokio::time::Instant::now();
        let mut attempt = 0u32;
        loop {
            let result = self.call_once(method.clone(), path, query, body).await;
            let (retry, hint, reason) = match &result {
                Ok((answer, _)) if answer.status == 429 || (500..=599).contains(&answer.status) => {
                    (true, answer.retry_after, format!("status {}", answer.status))
                }
                Ok(_) => return result,
                Err(e @ (Error::Connect { sent, .. } | Error::Timeout { sent, .. })) => {
                    (!*sent || safe_to_repeat, None, e.to_string())
                }
                Err(_) => return result,
            };
            if !retry || attempt >= self.settings.retries {
                return result;
            }
            attempt += 1;
            let wait = hint.unwrap_or_else(|| backoff(attempt));
            if started.elapsed() + wait > self.settings.retry_deadline {
                tracing::warn!(path = %format!("/{path}"), wait_ms = wait.as_millis() as u64, "cloudshell call not retried: past cloudshell.retry_deadline");
                return result;
            }
            tracing::warn!(path = %format!("/{path}"), attempt, wait_ms = wait.as_millis() as u64, reason = %reason, "cloudshell call failed, retrying");
            tokio::time::sleep(wait).await;
        }
    }

    fn unexpected(&self, method: &str, path: &str, answer: &Answer, token: &Token) -> Error {
        Error::Status {
            method: method.into(),
            path: format!("/{path}"),
            status: answer.status,
            body_excerpt: excerpt(&answer.body, &self.secrets(Some(token))),
        }
    }

    fn decode<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        answer: &Answer,
        token: &Token,
    ) -> Result<T, Error> {
        serde_json::from_slice(&answer.body).map_err(|e| Error::Decode {
            method: method.into(),
            path: format!("/{path}"),
            reason: e.to_string(),
            body_excerpt: excerpt(&answer.body, &self.secrets(Some(token))),
        })
    }

    /// Every CloudShell user, following the cursors at [`PAGE_LIMIT`] a page.
    pub async fn list_users(&self) -> Result<Vec<User>, Error> {
        let mut users = Vec::new();
        self.list_users_with(|u| users.push(u)).await.map(|()| users)
    }

    /// Every CloudShell user, handed to `each` page by page, so that a caller keeping less than the whole
    /// user object does not hold the whole list twice.
    pub async fn list_users_with(&self, mut each: impl FnMut(User)) -> Result<(), Error> {
        let path = USERS_PATH;
        let mut cursor: Option<String> = None;
        let mut seen = std::collections::HashSet::new();
        for _ in 0..MAX_PAGES {
            let mut query = vec![("paginationProperties.limit", PAGE_LIMIT.to_string())];
            if let Some(c) = &cursor {
                query.push(("paginationProperties.cursor", c.clone()));
            }
            let page = self.user_page(&query).await?;
            page.users.into_iter().map(User::from).for_each(&mut each);
            match page.cursor.filter(|c| !c.is_empty()) {
                None => return Ok(()),
                Some(next) => {
                    if !seen.insert(next.clone()) {
                        return Err(Error::Paging {
                            path: format!("/{path}"),
                            reason: format!("cursor {next:?} came back a second time"),
                        });
                    }
                    cursor = Some(next);
                }
            }
        }
        Err(Error::Paging { path: format!("/{path}"), reason: format!("more than {MAX_PAGES} pages") })
    }

    /// One page of the user list. A page that cannot be decoded (a truncated answer) is read again, up to
    /// `retries` times: reading is safe to repeat.
    async fn user_page(&self, query: &[(&str, String)]) -> Result<wire::UserList, Error> {
        let mut attempt = 0;
        loop {
            let (answer, token) = self.call(reqwest::Method::GET, USERS_PATH, query, None, true).await?;
            if answer.status != 200 {
                return Err(self.unexpected("GET", USERS_PATH, &answer, &token));
            }
            match self.decode("GET", USERS_PATH, &answer, &token) {
                Err(e) if attempt < self.settings.retries => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, "cloudshell user page unreadable, reading it again");
                    tokio::time::sleep(backoff(attempt)).await;
                }
                other => return other,
            }
        }
    }

    async fn import(&self, body: Value) -> Result<(Answer, Token), Error> {
        self.call(reqwest::Method::POST, IMPORT_PATH, &[], Some(&body), false).await
    }

    /// Whether CloudShell has a user by this name (compared case-insensitively), using the list's filter.
    pub async fn user_exists(&self, username: &str) -> Result<bool, Error> {
        let wanted = crate::username::Username::new(username);
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut query = vec![
                ("paginationProperties.limit", PAGE_LIMIT.to_string()),
                ("paginationProperties.filter", username.to_string()),
            ];
            if let Some(c) = &cursor {
                query.push(("paginationProperties.cursor", c.clone()));
            }
            let page = self.user_page(&query).await?;
            if page.users.iter().any(|u| crate::username::Username::new(&u.username) == wanted) {
                return Ok(true);
            }
            match page.cursor.filter(|c| !c.is_empty()) {
                None => return Ok(false),
                Some(next) if cursor.as_deref() == Some(next.as_str()) => return Ok(false),
                Some(next) => cursor = Some(next),
            }
        }
        Ok(false)
    }

    fn refusal_message(&self, answer: &Answer, token: &Token) -> String {
        serde_json::from_slice::<Value>(&answer.body)
            .ok()
            .and_then(|v| {
                v.as_object().and_then(|o| {
                    o.iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case("Message"))
                        .and_then(|(_, v)| v.as_str().map(str::to_string))
                })
            })
            .unwrap_or_else(|| excerpt(&answer.body, &self.secrets(Some(token))))
    }

    /// Imports a directory group's members: `{"GroupName": ...}`.
    pub async fn import_group(&self, group: &str) -> Result<GroupImport, Error> {
        let (answer, token) = self.import(json!({ "GroupName": group })).await?;
        match answer.status {
            200 | 202 => {
                let parsed: wire::ImportAnswer = self.decode("POST", IMPORT_PATH, &answer, &token)?;
                Ok(GroupImport::Done {
                    created: parsed.users.unwrap_or_default().into_iter().map(User::from).collect(),
                    failures: parsed.errors.unwrap_or_default().iter().map(ImportFailure::from).collect(),
                })
            }
            409 => Ok(GroupImport::Done { created: Vec::new(), failures: Vec::new() }),
            400 => Ok(GroupImport::Refused { message: self.refusal_message(&answer, &token) }),
            404 => Ok(GroupImport::NotFound { message: self.refusal_message(&answer, &token) }),
            _ => Err(self.unexpected("POST", IMPORT_PATH, &answer, &token)),
        }
    }

    /// Imports one directory user: `{"UserName": ...}`. When the answer is lost after the request went out,
    /// it looks before importing again: a user now present counts as already there.
    pub async fn import_user(&self, username: &str) -> Result<UserImport, Error> {
        let mut lost = 0u32;
        let (answer, token) = loop {
            match self.import(json!({ "UserName": username })).await {
                Err(e) if e.may_have_taken_effect() && lost < self.settings.retries => {
                    lost += 1;
                    tracing::warn!(username, error = %e, "user import answer lost, checking before importing again");
                    if self.user_exists(username).await? {
                        return Ok(UserImport::AlreadyExists);
                    }
                }
                other => break other?,
            }
        };
        match answer.status {
            200..=202 => {
                let parsed: wire::ImportAnswer = self.decode("POST", IMPORT_PATH, &answer, &token)?;
                let failures: Vec<ImportFailure> =
                    parsed.errors.unwrap_or_default().iter().map(ImportFailure::from).collect();
                match (parsed.users.unwrap_or_default().into_iter().next(), failures.first()) {
                    (Some(user), _) => Ok(UserImport::Created(user.into())),
                    (None, Some(failure)) => Ok(UserImport::Refused { message: failure.message.clone() }),
                    (None, None) => Err(Error::Decode {
                        method: "POST".into(),
                        path: format!("/{IMPORT_PATH}"),
                        reason: "the answer names no created user and no error".into(),
                        body_excerpt: excerpt(&answer.body, &self.secrets(Some(&token))),
                    }),
                }
            }
            409 => Ok(UserImport::AlreadyExists),
            400 => Ok(UserImport::Refused { message: self.refusal_message(&answer, &token) }),
            404 => Ok(UserImport::NotFound { message: self.refusal_message(&answer, &token) }),
            _ => Err(self.unexpected("POST", IMPORT_PATH, &answer, &token)),
        }
    }
}

const LOGIN_PATH: &str = "Api/Auth/Login";
const USERS_PATH: &str = "api/v1/users";
const IMPORT_PATH: &str = "api/v1/integrations/IdentityManagement/users";

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "an empty string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A reqwest error and its sources as one line, without the URL (which the caller names itself).
fn error_chain(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut out = String::new();
    let mut source: Option<&dyn std::error::Error> = e.source();
    let head = if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "reading the answer failed"
    } else {
        "request failed"
    };
    out.push_str(head);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO), "a past date: now");
        let future = (chrono::Utc::now() + chrono::Duration::seconds(90)).to_rfc2822();
        let wait = parse_retry_after(&future).unwrap();
        assert!(wait > Duration::from_secs(80) && wait <= Duration::from_secs(90), "{wait:?}");
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn backoff_grows_exponentially_with_jitter_and_a_cap() {
        for attempt in 1..=10 {
            let base = Duration::from_millis(250) * (1u32 << (attempt - 1).min(6));
            let base = base.min(Duration::from_secs(10));
            let b = backoff(attempt);
            assert!(b >= base / 2 && b <= base, "attempt {attempt}: {b:?} not within [{:?}, {base:?}]", base / 2);
        }
    }

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
    fn users_read_integer_or_string_ids_and_empty_emails() {
        let u: wire::User = serde_json::from_value(json!({"Id": 11, "Username": "a", "Email": ""})).unwrap();
        assert_eq!(
            User::from(u),
            User { id: Some(11), username: "a".into(), email: None, is_active: true, domain_name: None }
        );
        let u: wire::User = serde_json::from_value(json!({"Id": "12", "Username": "b", "IsActive": false})).unwrap();
        let u = User::from(u);
        assert_eq!((u.id, u.is_active), (Some(12), false));
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
        })
        .unwrap();
        assert_eq!(client.url().as_str(), "http://cs.example:9000/prefix/");
        let shown = format!("{client:?} {:?}", Token(SecretString::from("tok-123")));
        assert!(!shown.contains("hunter2") && !shown.contains("tok-123"), "{shown}");
        assert!(shown.contains("admin"));
    }
}
