//! The transport to CloudShell's Admin API: one reused HTTP client, the session token (login, re-login on
//! 401, shared by calls in parallel), retries with backoff and `Retry-After`, request pacing, and counting
//! each call by the kind its endpoint names. It knows no endpoint beyond login: those are in the parent
//! module. Nothing outside `cloudshell` sees a type from here but [`Settings`], [`AuthScheme`],
//! [`CallKind`] and [`CallCounts`].

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tokio::sync::{Mutex, RwLock};
use url::Url;

use super::error::{self, Error, excerpt};
use crate::stop::Stops;

/// How many tokens one call tries before giving up on 401s.
const MAX_TOKEN_TRIES: usize = 8;

const LOGIN_PATH: &str = "Api/Auth/Login";

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
    /// The largest answer read, in bytes: a bigger one fails the call rather than filling memory.
    pub max_answer_bytes: u64,
    /// Extra trusted certificates (PEM), besides the system's roots: a CA, or the server's own certificate
    /// (`cloudshell.ca_file`).
    pub ca_file: Option<PathBuf>,
    /// How often a paged list still going logs `read progress` ([`crate::progress::EVERY`]; no key).
    pub progress_every: Duration,
}

impl Settings {
    /// Settings for unit tests: `url`, no retries, short timeouts (a server that does not answer fails fast).
    #[cfg(test)]
    pub(crate) fn for_tests(url: &str) -> Settings {
        let short = Duration::from_millis(200);
        Settings {
            url: Url::parse(url).expect("a test URL"),
            username: "admin".into(),
            password: SecretString::from("pw"),
            domain: "Global".into(),
            auth_scheme: AuthScheme::Basic,
            connect_timeout: short,
            timeout: short,
            retries: 0,
            retry_deadline: short,
            max_requests_per_second: 0.0,
            max_answer_bytes: 1 << 20,
            ca_file: None,
            progress_every: crate::progress::EVERY,
        }
    }
}

/// What a request is for: named by the endpoint method that sends it, counted and timed under that name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallKind {
    Login,
    ListUsers,
    ImportGroup,
    ImportUser,
    ListGroups,
    ListGroupUsers,
    AddToGroup,
    RemoveFromGroup,
    GetUser,
    EditUser,
}

impl CallKind {
    /// Every kind, in the order the report lists them.
    pub const ALL: [CallKind; 10] = [
        CallKind::Login,
        CallKind::ListUsers,
        CallKind::ImportGroup,
        CallKind::ImportUser,
        CallKind::ListGroups,
        CallKind::ListGroupUsers,
        CallKind::AddToGroup,
        CallKind::RemoveFromGroup,
        CallKind::GetUser,
        CallKind::EditUser,
    ];

    /// Whether the call changes CloudShell (an import, a group membership, a user's state).
    pub fn is_write(self) -> bool {
        matches!(
            self,
            CallKind::ImportGroup
                | CallKind::ImportUser
                | CallKind::AddToGroup
                | CallKind::RemoveFromGroup
                | CallKind::EditUser
        )
    }

    /// The name in the report's `api_calls` and in the `call` label of the latency metric.
    pub fn as_str(self) -> &'static str {
        match self {
            CallKind::Login => "login",
            CallKind::ListUsers => "list_users",
            CallKind::ImportGroup => "import_group",
            CallKind::ImportUser => "import_user",
            CallKind::ListGroups => "list_groups",
            CallKind::ListGroupUsers => "list_group_users",
            CallKind::AddToGroup => "add_to_group",
            CallKind::RemoveFromGroup => "remove_from_group",
            CallKind::GetUser => "get_user",
            CallKind::EditUser => "edit_user",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How many requests of each kind a client has sent (retries included). Serialises as an object with one
/// key per [`CallKind`], zeros included.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallCounts([u64; CallKind::ALL.len()]);

impl CallCounts {
    pub fn get(&self, kind: CallKind) -> u64 {
        self.0[kind.index()]
    }
}

impl serde::Serialize for CallCounts {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(CallKind::ALL.len()))?;
        for kind in CallKind::ALL {
            map.serialize_entry(kind.as_str(), &self.get(kind))?;
        }
        map.end()
    }
}

/// Told about every request: its kind, how long it took, and the status (none when no answer came). For
/// latency metrics.
pub type Observer = std::sync::Arc<dyn Fn(CallKind, Duration, Option<u16>) + Send + Sync>;

/// An answer as read off the wire.
pub(super) struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    /// The `Retry-After` header, as a wait.
    retry_after: Option<Duration>,
}

/// One request, built once by the endpoint method that sends it and passed whole through the session's
/// retries, re-logins and pacing: what it is for (counted and timed under that kind), where it goes and
/// what it carries.
pub(super) struct Request<'a> {
    kind: CallKind,
    method: reqwest::Method,
    /// Relative to the server's base URL, without a leading slash.
    path: &'a str,
    query: &'a [(&'a str, String)],
    /// Sent as JSON.
    body: Option<&'a Value>,
}

impl<'a> Request<'a> {
    /// A request without a query or a body.
    pub fn new(kind: CallKind, method: reqwest::Method, path: &'a str) -> Request<'a> {
        Request { kind, method, path, query: &[], body: None }
    }

    /// The request with these query parameters (encoded into the URL).
    pub fn with_query(self, query: &'a [(&'a str, String)]) -> Request<'a> {
        Request { query, ..self }
    }

    /// The request with this JSON body.
    pub fn with_body(self, body: &'a Value) -> Request<'a> {
        Request { body: Some(body), ..self }
    }

    /// The path as errors and logs show it.
    fn shown_path(&self) -> String {
        format!("/{}", self.path)
    }

    /// The error for a request that got no answer: a timeout, or a connection that failed. `sent` says
    /// whether it may have reached the server.
    fn failed(&self, e: reqwest::Error, settings: &Settings) -> Error {
        let timeout = settings.timeout;
        // A connection that was never made carried nothing; anything later may have reached the server.
        let sent = !e.is_connect();
        let (method, path) = (self.method.to_string(), self.shown_path());
        if let Some(tls) = crate::tls::find_rustls_error(&e) {
            let cx = crate::tls::Context {
                server: settings.url.as_str().trim_end_matches('/'),
                ca_key: CA_KEY,
                ca_set: settings.ca_file.is_some(),
                plain_hint: "is it an http:// port? use http:// in cloudshell.url, or the server's https port",
            };
            let reason = crate::tls::describe(tls, &cx);
            return Error::Tls { method, path, reason, cause: Box::new(e.without_url()) };
        }
        if e.is_timeout() {
            Error::Timeout { method, path, timeout, sent }
        } else {
            Error::Connect { method, path, reason: error_chain(&e), sent }
        }
    }
}

/// The configuration key holding CloudShell's extra CA.
const CA_KEY: &str = "cloudshell.ca_file";

/// A logged-in connection to CloudShell. Calls may run concurrently.
pub(super) struct Session {
    counters: [AtomicU64; CallKind::ALL.len()],
    /// Authenticated calls under way, to tell a token spent by parallel calls from a server refusing logins.
    in_flight: AtomicU64,
    observer: Option<Observer>,
    pacer: Option<Pacer>,
    http: reqwest::Client,
    pub settings: Settings,
    token: RwLock<Option<Token>>,
    /// Held while logging in, so that concurrent calls meeting an expired token log in once.
    login_lock: Mutex<()>,
    pub stops: Stops,
}

impl Session {
    /// Builds the session; it does not contact the server until the first call.
    pub fn new(mut settings: Settings) -> Result<Session, Error> {
        // Join relative paths under the base, even when it carries a path prefix (a reverse proxy).
        if !settings.url.path().ends_with('/') {
            let path = format!("{}/", settings.url.path());
            settings.url.set_path(&path);
        }
        // Our own rustls configuration, not reqwest's platform verifier: `cloudshell.ca_file` follows the same
        // rules as `ldap.ca_file` (the server's own certificate is trusted as that exact certificate).
        let tls = crate::tls::client_config(CA_KEY, settings.ca_file.as_deref(), false).map_err(Error::TlsSettings)?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.timeout)
            .user_agent(concat!("cloudshell-ldap-sync/", env!("CARGO_PKG_VERSION")))
            // Never followed: see `Error::Redirect`.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::Connect {
                method: "-".into(),
                path: "-".into(),
                reason: format!("cannot build the HTTP client: {}", e.without_url()),
                sent: false,
            })?;
        Ok(Session {
            counters: Default::default(),
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
            stops: Stops::default(),
        })
    }

    pub fn set_observer(&mut self, observer: Option<Observer>) {
        self.observer = observer;
    }

    /// Requests sent so far, by kind.
    pub fn calls(&self) -> CallCounts {
        CallCounts(std::array::from_fn(|n| self.counters[n].load(Ordering::Relaxed)))
    }

    pub fn secrets<'a>(&'a self, token: Option<&'a Token>) -> Vec<&'a str> {
        let mut secrets = vec![self.settings.password.expose_secret()];
        if let Some(t) = token {
            secrets.push(t.0.expose_secret());
        }
        secrets
    }

    async fn send(&self, request: &Request<'_>, token: Option<&Token>) -> Result<Answer, Error> {
        if let Some(pacer) = &self.pacer {
            // A call still waiting for its turn has reached nobody: a stop request drops it.
            tokio::select! {
                biased;
                _ = self.stops.stop.cancelled() => return Err(Error::abandoned(request.method.as_str(), request.path)),
                _ = pacer.wait() => {}
            }
        }
        self.counters[request.kind.index()].fetch_add(1, Ordering::Relaxed);
        let started = std::time::Instant::now();
        // The abandon request first: once it is made, a call is not even begun.
        let result = tokio::select! {
            biased;
            _ = self.stops.abandon.cancelled() => Err(Error::abandoned(request.method.as_str(), request.path)),
            result = self.send_inner(request, token) => result,
        };
        if let Some(observe) = &self.observer {
            observe(request.kind, started.elapsed(), result.as_ref().ok().map(|a| a.status));
        }
        result
    }

    async fn send_inner(&self, request: &Request<'_>, token: Option<&Token>) -> Result<Answer, Error> {
        let response = self.http_request(request, token)?;
        let response = response.send().await.map_err(|e| request.failed(e, &self.settings))?;
        let status = response.status().as_u16();
        if response.status().is_redirection() {
            let location =
                response.headers().get(reqwest::header::LOCATION).map(|v| String::from_utf8_lossy(v.as_bytes()));
            let location = location.map(|l| error::mask(&l, &self.secrets(token))).unwrap_or_else(|| "nowhere".into());
            return Err(Error::Redirect {
                method: request.method.to_string(),
                path: request.shown_path(),
                status,
                location,
            });
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = self.read_body(request, response).await?;
        Ok(Answer { status, body, retry_after })
    }

    /// The HTTP request for `request`: its URL with the query, the token, the JSON body.
    fn http_request(&self, request: &Request<'_>, token: Option<&Token>) -> Result<reqwest::RequestBuilder, Error> {
        let mut url = self.settings.url.join(request.path).map_err(|e| Error::Connect {
            method: request.method.to_string(),
            path: request.shown_path(),
            reason: format!("cannot build the URL: {e}"),
            sent: false,
        })?;
        if !request.query.is_empty() {
            url.query_pairs_mut().extend_pairs(request.query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        let mut http =
            self.http.request(request.method.clone(), url).header(reqwest::header::ACCEPT, "application/json");
        if let Some(token) = token {
            http = http.header(
                reqwest::header::AUTHORIZATION,
                format!("{} {}", self.settings.auth_scheme.as_str(), token.0.expose_secret()),
            );
        }
        if let Some(body) = request.body {
            http = http.json(body);
        }
        Ok(http)
    }

    /// Reads an answer's body, piece by piece, so that an answer without a length (or lying about it) stops
    /// at `max_answer_bytes`.
    async fn read_body(&self, request: &Request<'_>, mut response: reqwest::Response) -> Result<Vec<u8>, Error> {
        let limit = self.settings.max_answer_bytes;
        let too_large = || Error::TooLarge { method: request.method.to_string(), path: request.shown_path(), limit };
        if response.content_length().is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| request.failed(e, &self.settings))? {
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Logs in and keeps the token. `PUT /Api/Auth/Login` answers a bare JSON string.
    pub async fn login(&self) -> Result<(), Error> {
        let _guard = self.login_lock.lock().await;
        self.login_locked().await.map(|_| ())
    }

    /// Takes over `other`'s token, if it has one: the same account on the same server, logged in once.
    pub async fn share_login(&self, other: &Session) {
        let token = other.token.read().await.clone();
        if token.is_some() {
            *self.token.write().await = token;
        }
    }

    async fn login_locked(&self) -> Result<Token, Error> {
        let path = LOGIN_PATH;
        let body = json!({
            "Username": self.settings.username,
            "Password": self.settings.password.expose_secret(),
            "Domain": self.settings.domain,
        });
        let request = Request::new(CallKind::Login, reqwest::Method::PUT, path).with_body(&body);
        let answer = self.send(&request, None).await?;
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
                    reason: format!(
                        "expected a JSON string token, got {}",
                        if other.is_string() { "a blank string" } else { json_kind(&other) }
                    ),
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
    async fn call_once(&self, request: &Request<'_>) -> Result<(Answer, Token), Error> {
        let _in_flight = InFlight::enter(&self.in_flight);
        let mut token = self.token().await?;
        let mut logged_in = false;
        for _ in 0..MAX_TOKEN_TRIES {
            let answer = self.send(request, Some(&token)).await?;
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
        self.send(request, Some(&token)).await.map(|answer| (answer, token))
    }

    /// An authenticated call with retries: 429 (after `Retry-After`), 5xx and connection failures are tried
    /// again with backoff, up to `retries` times and within `retry_deadline`. A call whose answer was lost
    /// after it was sent (timeout, cut connection) is tried again only when `safe_to_repeat`; otherwise the
    /// caller finds out what happened first.
    pub async fn call(&self, request: &Request<'_>, safe_to_repeat: bool) -> Result<(Answer, Token), Error> {
        let started = tokio::time::Instant::now();
        let mut attempt = 0u32;
        loop {
            let result = self.call_once(request).await;
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
            if self.stops.stop.is_cancelled() {
                tracing::warn!(path = %request.shown_path(), reason = %reason, "cloudshell call not retried: the run was asked to stop");
                return result;
            }
            attempt += 1;
            let wait = hint.unwrap_or_else(|| backoff(attempt));
            // The retry must fit whole: its wait and its own request, which may take the full timeout. A
            // server's Retry-After can be anything: saturate rather than overflow.
            if started.elapsed().saturating_add(wait).saturating_add(self.settings.timeout)
                > self.settings.retry_deadline
            {
                tracing::warn!(path = %request.shown_path(), wait_ms = wait.as_millis() as u64, "cloudshell call not retried: past cloudshell.retry_deadline");
                return result;
            }
            tracing::warn!(path = %request.shown_path(), attempt, wait_ms = wait.as_millis() as u64, reason = %reason, "cloudshell call failed, retrying");
            if !self.stops.pause(wait).await {
                tracing::warn!(path = %request.shown_path(), reason = %reason, "cloudshell call not retried: the run was asked to stop");
                return result;
            }
        }
    }

    pub fn unexpected(&self, method: &str, path: &str, answer: &Answer, token: &Token) -> Error {
        Error::Status {
            method: method.into(),
            path: format!("/{path}"),
            status: answer.status,
            body_excerpt: excerpt(&answer.body, &self.secrets(Some(token))),
        }
    }

    pub fn decode<T: serde::de::DeserializeOwned>(
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
}

/// The session token. Its `Debug` never shows it.
#[derive(Clone)]
pub(super) struct Token(SecretString);

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
pub(super) fn backoff(attempt: u32) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let base = Duration::from_millis(250).saturating_mul(1u32 << attempt.saturating_sub(1).min(6));
    let base = base.min(Duration::from_secs(10));
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(attempt);
    let jitter = 0.5 + (h.finish() % 1000) as f64 / 2000.0;
    base.mul_f64(jitter)
}

pub(super) fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
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
    fn call_kinds_are_pinned_and_counted_by_name() {
        let names: Vec<&str> = CallKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "login",
                "list_users",
                "import_group",
                "import_user",
                "list_groups",
                "list_group_users",
                "add_to_group",
                "remove_from_group",
                "get_user",
                "edit_user"
            ]
        );
        let mut counts = CallCounts::default();
        counts.0[CallKind::ImportUser.index()] = 3;
        assert_eq!(counts.get(CallKind::ImportUser), 3);
        assert_eq!(
            serde_json::to_string(&counts).unwrap(),
            r#"{"login":0,"list_users":0,"import_group":0,"import_user":3,"list_groups":0,"list_group_users":0,"add_to_group":0,"remove_from_group":0,"get_user":0,"edit_user":0}"#
        );
    }
}
