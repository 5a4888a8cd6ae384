//! The HTTP face of the simulator: CloudShell's Admin API under `/api` (paths matched case-insensitively, as
//! the reference says) and the test-only control endpoint under `/_sim`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value, json};

use crate::directory::{self, ExternalUser};
use crate::json::{field, parse_lenient, string_field};
use crate::state::{Call, FaultRequest, TokenCheck, User, World};

/// The largest page a list answers ([doc]); a larger limit is a 400 ([ours]).
pub const MAX_PAGE: usize = 250;
const DEFAULT_PAGE: usize = 50;

/// The administrator allowed to log in.
#[derive(Clone, Debug)]
pub struct Admin {
    pub username: String,
    pub password: String,
    pub domain: String,
}

/// The shared state behind every request.
pub struct Sim {
    pub world: Mutex<World>,
    pub admin: Admin,
    pub directory: Option<directory::Settings>,
}

impl Sim {
    pub fn world(&self) -> MutexGuard<'_, World> {
        // A panic while holding the lock would be a simulator bug; keep serving rather than poisoning every test.
        self.world.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// An answer before faults are applied to it.
enum Reply {
    Json(StatusCode, Value),
    Empty(StatusCode),
}

impl Reply {
    fn status(&self) -> StatusCode {
        match self {
            Reply::Json(s, _) | Reply::Empty(s) => *s,
        }
    }
}

fn message(status: StatusCode, text: impl Into<String>) -> Reply {
    Reply::Json(status, json!({ "Message": text.into() }))
}

fn bad_request(text: impl Into<String>) -> Reply {
    message(StatusCode::BAD_REQUEST, text)
}

fn json_response(status: StatusCode, body: String, content_type: &str) -> Response {
    (status, [(header::CONTENT_TYPE, content_type.to_string())], body).into_response()
}

/// The one handler: everything is routed by hand so that paths match case-insensitively.
pub async fn handle(
    State(sim): State<Arc<Sim>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    if path.to_ascii_lowercase().starts_with("/_sim/") {
        return control(&sim, &method, &path, &body);
    }
    let query = uri.query().unwrap_or("").to_string();
    let auth_scheme = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_whitespace().next())
        .map(str::to_string);

    let seq = sim.world().begin_call(Call {
        seq: 0,
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
        body: logged_body(&body),
        auth_scheme,
        status: 0,
        injected: None,
        at_ms: 0,
        state: String::new(),
    });
    // If the caller hangs up, this future is dropped mid-way: the guard marks the call aborted.
    let guard = AbortGuard { sim: sim.clone(), seq };
    let latency = sim.world().faults.latency_ms;
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let injected = sim.world().faults.take_failure(method.as_str(), &path);
    let reset_before = injected.is_none() && sim.world().faults.take_reset(method.as_str(), &path, false);
    let held_before = if injected.is_none() && !reset_before {
        sim.world().faults.take_slow(method.as_str(), &path, true)
    } else {
        None
    };
    if let Some(delay) = held_before {
        // Held before the work: a caller that gives up first drops this future here, and the call never
        // takes effect.
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let (response, status, injected_kind) = if let Some(rule) = injected {
        let status = StatusCode::from_u16(rule.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = rule.body.unwrap_or_else(|| json!({"Message": "injected failure"}).to_string());
        let content_type = rule.content_type.unwrap_or_else(|| "application/json".into());
        let mut response = json_response(status, body, &content_type);
        for (name, value) in &rule.headers {
            if let (Ok(n), Ok(v)) =
                (axum::http::HeaderName::from_bytes(name.as_bytes()), axum::http::HeaderValue::from_str(value))
            {
                response.headers_mut().insert(n, v);
            }
        }
        (response, status, Some(format!("status {}", rule.status)))
    } else if reset_before {
        (cut_response(), StatusCode::OK, Some("reset before processing".to_string()))
    } else {
        let mut reply = route(&sim, &method, &path, &query, &headers, &body).await;
        if sim.world().omit_group_ids {
            strip_group_ids(&mut reply);
        }
        strip_user_fields(&mut reply, &sim.world().omit_fields);
        let slow = sim.world().faults.take_slow(method.as_str(), &path, false);
        if let Some(delay) = slow {
            // The work is done; the answer is late. A caller that gives up first loses it.
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let reset_after = sim.world().faults.take_reset(method.as_str(), &path, true);
        let status = reply.status();
        let malformed = sim.world().faults.take_malformed(&path);
        let text = match &reply {
            Reply::Json(_, v) => v.to_string(),
            Reply::Empty(_) => String::new(),
        };
        if reset_after {
            (cut_response(), status, Some("reset after processing".to_string()))
        } else if malformed {
            // Cut the answer short mid-value, as a dropped proxy connection would.
            let cut = truncated(&text);
            (json_response(status, cut, "application/json"), status, Some("malformed".to_string()))
        } else {
            match reply {
                Reply::Json(..) => (json_response(status, text, "application/json"), status, None),
                Reply::Empty(_) => (status.into_response(), status, None),
            }
        }
    };
    sim.world().end_call(seq, status.as_u16(), injected_kind);
    drop(guard);
    response
}

struct AbortGuard {
    sim: Arc<Sim>,
    seq: u64,
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        self.sim.world().abort_call(self.seq);
    }
}

/// `text` cut short mid-value (at a character boundary), as a dropped proxy connection would leave it.
fn truncated(text: &str) -> String {
    let mut half = text.len() / 2;
    while !text.is_char_boundary(half) {
        half -= 1;
    }
    format!("{}{{\"Cursor\": \"", &text[..half])
}

/// An answer whose body fails mid-stream: the connection is cut after the headers.
fn cut_response() -> Response {
    let stream =
        futures_util::stream::once(async { Err::<Bytes, std::io::Error>(std::io::Error::other("connection cut")) });
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], axum::body::Body::from_stream(stream))
        .into_response()
}

fn logged_body(body: &[u8]) -> Value {
    if body.is_empty() {
        return Value::Null;
    }
    match parse_lenient(body) {
        Ok(Value::Object(mut o)) => {
            for (k, v) in o.iter_mut() {
                if k.eq_ignore_ascii_case("password") {
                    *v = Value::String("***".into());
                }
            }
            Value::Object(o)
        }
        Ok(v) => v,
        Err(_) => Value::String(String::from_utf8_lossy(body).into_owned()),
    }
}

/// A server that leaves `GroupIds` out of user objects (the switch `POST /_sim/omit_group_ids`).
fn strip_group_ids(reply: &mut Reply) {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(o) => {
                o.remove("GroupIds");
                o.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    if let Reply::Json(_, v) = reply {
        strip(v);
    }
}

/// A server that leaves fields out of some users' objects (`omit_fields` of `POST /_sim/users`).
fn strip_user_fields(reply: &mut Reply, omit: &HashMap<String, Vec<String>>) {
    fn strip(v: &mut Value, omit: &HashMap<String, Vec<String>>) {
        match v {
            Value::Object(o) => {
                let name = o.get("Username").and_then(Value::as_str).map(str::to_lowercase);
                if let Some(fields) = name.and_then(|n| omit.get(&n)) {
                    o.retain(|k, _| !fields.iter().any(|f| f.eq_ignore_ascii_case(k)));
                }
                o.values_mut().for_each(|v| strip(v, omit));
            }
            Value::Array(a) => a.iter_mut().for_each(|v| strip(v, omit)),
            _ => {}
        }
    }
    if omit.is_empty() {
        return;
    }
    if let Reply::Json(_, v) = reply {
        strip(v, omit);
    }
}

/// `POST /_sim/users`: users to create (when missing) or change. Without `domain_name` they are local users.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersRequest {
    usernames: Vec<String>,
    #[serde(default)]
    domain_name: Option<String>,
    #[serde(default)]
    is_admin: bool,
    /// CloudShell groups (by name) to put them in.
    #[serde(default)]
    groups: Vec<String>,
    /// Set `IsActive`, as an administrator would.
    #[serde(default)]
    is_active: Option<bool>,
    /// Delete each user first and create it again: the same name, a new id.
    #[serde(default)]
    recreate: bool,
    /// Fields the API's answers leave out of these users' objects from now on (`[]`: none again).
    #[serde(default)]
    omit_fields: Option<Vec<String>>,
}

fn control(sim: &Sim, method: &Method, path: &str, body: &[u8]) -> Response {
    let ok = |v: Value| json_response(StatusCode::OK, v.to_string(), "application/json");
    let fail = |s: StatusCode, m: String| json_response(s, json!({"Message": m}).to_string(), "application/json");
    let mut world = sim.world();
    match (method.clone(), path.to_ascii_lowercase().trim_end_matches('/')) {
        (Method::GET, "/_sim/state") => {
            let mut users: Vec<&User> = world.users.values().collect();
            users.sort_by_key(|u| u.id);
            ok(json!({
                "users": users,
                "tokens": world.tokens.keys().collect::<Vec<_>>(),
                "faults": world.faults,
                "groups": world.groups,
                "group_import_limit": world.group_import_limit,
                "busy_ms": world.busy.as_secs_f64() * 1000.0,
            }))
        }
        (Method::GET, "/_sim/calls") => ok(json!(world.calls)),
        (Method::DELETE, "/_sim/calls") => {
            world.calls.clear();
            world.busy = std::time::Duration::ZERO;
            ok(json!({}))
        }
        (Method::POST, "/_sim/faults") => match serde_json::from_slice::<FaultRequest>(body) {
            Ok(request) => {
                world.apply_faults(request);
                ok(json!(world.faults))
            }
            Err(e) => fail(StatusCode::BAD_REQUEST, format!("bad fault request: {e}")),
        },
        (Method::DELETE, "/_sim/faults") => {
            world.faults = Default::default();
            ok(json!({}))
        }
        (Method::POST, "/_sim/users") => {
            let request: UsersRequest = match serde_json::from_slice(body) {
                Ok(r) => r,
                Err(e) => return fail(StatusCode::BAD_REQUEST, format!("bad users request: {e}")),
            };
            let mut group_ids = Vec::new();
            for name in &request.groups {
                match world.groups.iter().find(|g| g.name.eq_ignore_ascii_case(name)) {
                    Some(g) => group_ids.push(g.id),
                    None => return fail(StatusCode::BAD_REQUEST, format!("no group {name:?}")),
                }
            }
            let mut created: Vec<User> = Vec::new();
            for name in &request.usernames {
                if request.recreate {
                    world.users.remove(&name.to_lowercase());
                }
                if let Some(fields) = &request.omit_fields {
                    world.omit_fields.insert(name.to_lowercase(), fields.clone());
                }
                if !world.users.contains_key(&name.to_lowercase()) {
                    let sid = request.domain_name.as_ref().map(|_| format!("S-1-5-21-9-{name}"));
                    world.new_user(name, None, request.domain_name.clone(), sid);
                }
                let user = world.users.get_mut(&name.to_lowercase()).expect("present");
                user.is_admin |= request.is_admin;
                if let Some(active) = request.is_active {
                    user.is_active = active;
                }
                for id in &group_ids {
                    if !user.group_ids.contains(id) {
                        user.group_ids.push(*id);
                    }
                }
                created.push(user.clone());
            }
            ok(json!(created))
        }
        (Method::POST, "/_sim/groups") => match serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| serde_json::from_value::<Vec<String>>(v["names"].clone()).ok())
        {
            Some(names) => {
                let added: Vec<crate::state::Group> = names.iter().map(|n| world.add_group(n)).collect();
                ok(json!(added))
            }
            None => fail(StatusCode::BAD_REQUEST, "expected {\"names\": [...]}".into()),
        },
        (Method::POST, "/_sim/omit_group_ids") => {
            world.omit_group_ids =
                serde_json::from_slice::<Value>(body).ok().and_then(|v| v["omit"].as_bool()).unwrap_or(true);
            ok(json!({"omit_group_ids": world.omit_group_ids}))
        }
        _ => fail(StatusCode::NOT_FOUND, format!("no control endpoint {method} {path}")),
    }
}

async fn route(sim: &Sim, method: &Method, path: &str, query: &str, headers: &HeaderMap, body: &[u8]) -> Reply {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let lower: Vec<String> = segments.iter().map(|s| s.to_ascii_lowercase()).collect();
    let lower: Vec<&str> = lower.iter().map(String::as_str).collect();

    if lower == ["api", "auth", "login"] {
        return if method == Method::PUT {
            login(sim, body)
        } else {
            message(StatusCode::METHOD_NOT_ALLOWED, "login is PUT")
        };
    }
    if let Err(reply) = authenticate(sim, headers) {
        return reply;
    }
    let query = match Query::parse(query) {
        Ok(q) => q,
        Err(reply) => return reply,
    };
    let not_allowed = || message(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not allowed on {path}"));
    match lower.as_slice() {
        ["api", "v1", "users"] => match *method {
            Method::GET => list_users(sim, &query),
            _ => not_allowed(),
        },
        ["api", "v1", "users", _] => {
            let Ok(id) = segments[3].parse::<i64>() else {
                return bad_request(format!("user id must be an integer, got {:?}", segments[3]));
            };
            match *method {
                Method::GET => get_user(sim, id),
                Method::PUT => edit_user(sim, id, body),
                Method::DELETE => delete_user(sim, id),
                _ => not_allowed(),
            }
        }
        ["api", "v1", "groups"] => match *method {
            Method::GET => list_groups(sim, &query),
            _ => not_allowed(),
        },
        ["api", "v1", "groups", _, "users"] => {
            let Ok(id) = segments[3].parse::<i64>() else {
                return bad_request(format!("group id must be an integer, got {:?}", segments[3]));
            };
            match *method {
                Method::GET => group_users(sim, id, &query),
                Method::POST => change_group_users(sim, id, body, true),
                Method::DELETE => change_group_users(sim, id, body, false),
                _ => not_allowed(),
            }
        }
        ["api", "v1", "integrations", "identitymanagement", "groups"] => match *method {
            Method::GET => external_groups(sim, &query).await,
            _ => not_allowed(),
        },
        ["api", "v1", "integrations", "identitymanagement", "groups", _, "users"] => match *method {
            Method::GET => match percent_decode(segments[5]) {
                Some(name) => external_group_users(sim, &name, &query).await,
                None => bad_request("group name is not valid percent-encoded UTF-8"),
            },
            _ => not_allowed(),
        },
        ["api", "v1", "integrations", "identitymanagement", "users"] => match *method {
            Method::POST => import(sim, body).await,
            _ => not_allowed(),
        },
        _ => message(StatusCode::NOT_FOUND, format!("no such resource {path}")),
    }
}

fn percent_decode(segment: &str) -> Option<String> {
    percent_encoding::percent_decode_str(segment).decode_utf8().ok().map(|s| s.into_owned())
}

fn login(sim: &Sim, body: &[u8]) -> Reply {
    let object = match parse_lenient(body) {
        Ok(Value::Object(o)) => o,
        Ok(_) => return bad_request("login body must be a JSON object"),
        Err(e) => return bad_request(e),
    };
    let get = |name| string_field(&object, name);
    let (username, password, domain) = match (get("Username"), get("Password"), get("Domain")) {
        (Ok(u), Ok(p), Ok(d)) => (u, p, d),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return bad_request(e),
    };
    let (Some(username), Some(password)) = (username, password) else {
        return bad_request("Username and Password are required");
    };
    let domain = domain.unwrap_or_else(|| "Global".to_string());
    if !username.eq_ignore_ascii_case(&sim.admin.username)
        || password != sim.admin.password
        || !domain.eq_ignore_ascii_case(&sim.admin.domain)
    {
        return message(StatusCode::UNAUTHORIZED, "invalid username, password or domain");
    }
    Reply::Json(StatusCode::OK, Value::String(sim.world().issue_token()))
}

fn authenticate(sim: &Sim, headers: &HeaderMap) -> Result<(), Reply> {
    let unauthorized = |m: &str| Err(message(StatusCode::UNAUTHORIZED, m));
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return unauthorized("missing Authorization header");
    };
    let mut parts = value.split_whitespace();
    let (Some(scheme), Some(token), None) = (parts.next(), parts.next(), parts.next()) else {
        return unauthorized("malformed Authorization header");
    };
    if !scheme.eq_ignore_ascii_case("basic") && !scheme.eq_ignore_ascii_case("bearer") {
        return unauthorized("unsupported Authorization scheme");
    }
    match sim.world().use_token(token) {
        TokenCheck::Valid => Ok(()),
        TokenCheck::Invalid => unauthorized("token is unknown or expired"),
    }
}

/// The `paginationProperties.*` query keys.
struct Query {
    limit: usize,
    cursor: Option<String>,
    sort_by: Option<String>,
    descending: bool,
    filter: Option<String>,
}

impl Query {
    fn parse(raw: &str) -> Result<Query, Reply> {
        let mut q = Query { limit: DEFAULT_PAGE, cursor: None, sort_by: None, descending: false, filter: None };
        for (key, value) in form_urlencoded::parse(raw.as_bytes()) {
            let key = key.to_ascii_lowercase();
            let value = value.into_owned();
            match key.as_str() {
                "paginationproperties.limit" => match value.parse::<usize>() {
                    Ok(n) if (1..=MAX_PAGE).contains(&n) => q.limit = n,
                    _ => {
                        return Err(bad_request(format!(
                            "paginationProperties.limit must be between 1 and {MAX_PAGE}, got {value:?}"
                        )));
                    }
                },
                "paginationproperties.cursor" if !value.is_empty() => q.cursor = Some(value),
                "paginationproperties.sort-by" if !value.is_empty() => q.sort_by = Some(value),
                "paginationproperties.sort-order" => match value.as_str() {
                    "1" | "" => q.descending = false,
                    "-1" => q.descending = true,
                    _ => {
                        return Err(bad_request(format!(
                            "paginationProperties.sort-order must be 1 or -1, got {value:?}"
                        )));
                    }
                },
                "paginationproperties.filter" if !value.is_empty() => q.filter = Some(value.to_lowercase()),
                _ => {}
            }
        }
        Ok(q)
    }
}

/// A sort key: names compare case-insensitively, ids numerically.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Int(i64),
    Text(String),
}

impl Key {
    fn encode(&self) -> String {
        match self {
            Key::Int(n) => B64.encode(n.to_string()),
            Key::Text(s) => B64.encode(s),
        }
    }
}

/// One page of `items`, keyed by `name` (and by `id` where the list has integer ids).
fn paginate<T: serde::Serialize>(
    mut items: Vec<T>,
    name: impl Fn(&T) -> String,
    id: Option<&dyn Fn(&T) -> i64>,
    q: &Query,
    plural: &str,
) -> Reply {
    let by_id = match q.sort_by.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("name") | Some("username") => false,
        Some("id") if id.is_some() => true,
        Some(other) => return bad_request(format!("cannot sort {plural} by {other:?}")),
    };
    let key = |item: &T| match (by_id, id) {
        (true, Some(id)) => Key::Int(id(item)),
        _ => Key::Text(name(item).to_lowercase()),
    };
    if let Some(filter) = &q.filter {
        items.retain(|item| name(item).to_lowercase().contains(filter));
    }
    items.sort_by_key(|item| key(item));
    if q.descending {
        items.reverse();
    }
    let start = match &q.cursor {
        None => 0,
        Some(cursor) => {
            let decoded = B64.decode(cursor).ok().and_then(|b| String::from_utf8(b).ok());
            let after = match (decoded, by_id) {
                (Some(s), true) => s.parse::<i64>().ok().map(Key::Int),
                (Some(s), false) => Some(Key::Text(s)),
                (None, _) => None,
            };
            let Some(after) = after else {
                return bad_request(format!("paginationProperties.cursor {cursor:?} is not a cursor this list issued"));
            };
            items
                .iter()
                .position(|item| if q.descending { key(item) < after } else { key(item) > after })
                .unwrap_or(items.len())
        }
    };
    let end = (start + q.limit).min(items.len());
    let cursor = if end < items.len() { Some(key(&items[end - 1]).encode()) } else { None };
    let page: Vec<T> = items.drain(start..end).collect();
    let mut body = Map::new();
    body.insert(plural.to_string(), json!(page));
    body.insert("Cursor".to_string(), json!(cursor));
    Reply::Json(StatusCode::OK, Value::Object(body))
}

fn list_users(sim: &Sim, q: &Query) -> Reply {
    if q.sort_by.is_none() && !q.descending && q.filter.is_none() {
        return list_users_by_name(sim, q);
    }
    let users: Vec<User> = sim.world().users.values().cloned().collect();
    paginate(users, |u| u.username.clone(), Some(&|u: &User| u.id), q, "Users")
}

/// The default listing (by name, ascending, unfiltered) straight off the name-ordered map, so that paging a
/// large user list costs a page per call, not the whole list. Same cursors as [`paginate`].
fn list_users_by_name(sim: &Sim, q: &Query) -> Reply {
    let after = match &q.cursor {
        None => None,
        Some(cursor) => match B64.decode(cursor).ok().and_then(|b| String::from_utf8(b).ok()) {
            Some(key) => Some(key),
            None => {
                return bad_request(format!("paginationProperties.cursor {cursor:?} is not a cursor this list issued"));
            }
        },
    };
    let world = sim.world();
    let range = match &after {
        None => world.users.range::<String, _>(..),
        Some(key) => {
            world.users.range::<String, _>((std::ops::Bound::Excluded(key.clone()), std::ops::Bound::Unbounded))
        }
    };
    let mut page: Vec<(&String, &User)> = range.take(q.limit + 1).collect();
    let more = page.len() > q.limit;
    page.truncate(q.limit);
    let cursor = if more { page.last().map(|(key, _)| Key::Text((*key).clone()).encode()) } else { None };
    let users: Vec<&User> = page.into_iter().map(|(_, u)| u).collect();
    Reply::Json(StatusCode::OK, json!({ "Users": users, "Cursor": cursor }))
}

fn get_user(sim: &Sim, id: i64) -> Reply {
    match sim.world().user_by_id_mut(id) {
        Some(user) => Reply::Json(StatusCode::OK, json!(user)),
        None => message(StatusCode::NOT_FOUND, format!("user {id} not found")),
    }
}

fn edit_user(sim: &Sim, id: i64, body: &[u8]) -> Reply {
    let object = match parse_lenient(body) {
        Ok(Value::Object(o)) => o,
        Ok(_) => return bad_request("user body must be a JSON object"),
        Err(e) => return bad_request(e),
    };
    let mut world = sim.world();
    let Some(user) = world.user_by_id_mut(id) else {
        return message(StatusCode::NOT_FOUND, format!("user {id} not found"));
    };
    // Validate everything before changing anything: PUT changes only the fields present, all or none.
    let mut edited = user.clone();
    for (key, value) in &object {
        let k = key.to_ascii_lowercase();
        let int = || value.as_i64().map(Some).or(value.is_null().then_some(None));
        let result: Result<(), String> = match k.as_str() {
            "username" => match value.as_str() {
                Some(name) if name == edited.username => Ok(()),
                _ => Err("the username cannot be changed".into()),
            },
            "email" => optional_string(value, key).map(|v| edited.email = v),
            "isactive" => value.as_bool().map(|b| edited.is_active = b).ok_or("IsActive must be a boolean".into()),
            "isadmin" => value.as_bool().map(|b| edited.is_admin = b).ok_or("IsAdmin must be a boolean".into()),
            "timezoneinfoid" => optional_string(value, key).map(|v| edited.time_zone_info_id = v),
            "maxreservationduration" => {
                int().map(|v| edited.max_reservation_duration = v).ok_or(format!("{key} must be an integer"))
            }
            "maxconcurrentreservations" => {
                int().map(|v| edited.max_concurrent_reservations = v).ok_or(format!("{key} must be an integer"))
            }
            "maxscheduledsandboxes" => {
                int().map(|v| edited.max_scheduled_sandboxes = v).ok_or(format!("{key} must be an integer"))
            }
            "maxownedblueprints" => {
                int().map(|v| edited.max_owned_blueprints = v).ok_or(format!("{key} must be an integer"))
            }
            "maxsavedsandboxes" => {
                int().map(|v| edited.max_saved_sandboxes = v).ok_or(format!("{key} must be an integer"))
            }
            "id" => match value.as_i64() {
                Some(v) if v == id => Ok(()),
                _ => Err("Id cannot be changed".into()),
            },
            _ => Ok(()), // read-only or unknown fields are ignored
        };
        if let Err(e) = result {
            return bad_request(e);
        }
    }
    *user = edited.clone();
    Reply::Json(StatusCode::OK, json!(edited))
}

fn optional_string(value: &Value, key: &str) -> Result<Option<String>, String> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        _ => Err(format!("{key} must be a string or null")),
    }
}

fn delete_user(sim: &Sim, id: i64) -> Reply {
    let mut world = sim.world();
    let Some(key) = world.users.iter().find(|(_, u)| u.id == id).map(|(k, _)| k.clone()) else {
        return message(StatusCode::NOT_FOUND, format!("user {id} not found"));
    };
    world.users.remove(&key);
    Reply::Empty(StatusCode::OK)
}

fn list_groups(sim: &Sim, q: &Query) -> Reply {
    let groups = sim.world().groups.clone();
    paginate(groups, |g| g.name.clone(), Some(&|g: &crate::state::Group| g.id), q, "Groups")
}

fn group_users(sim: &Sim, id: i64, q: &Query) -> Reply {
    let world = sim.world();
    if !world.groups.iter().any(|g| g.id == id) {
        return message(StatusCode::NOT_FOUND, format!("group {id} not found"));
    }
    let users: Vec<User> = world.users.values().filter(|u| u.group_ids.contains(&id)).cloned().collect();
    drop(world);
    paginate(users, |u| u.username.clone(), Some(&|u: &User| u.id), q, "Users")
}

fn change_group_users(sim: &Sim, id: i64, body: &[u8], add: bool) -> Reply {
    let entries = match parse_lenient(body) {
        Ok(Value::Object(o)) => match field(&o, "Users") {
            Some(Value::Array(a)) => a.clone(),
            _ => return bad_request("body must be {\"Users\": [{\"Id\": ...}, ...]}"),
        },
        Ok(_) => return bad_request("body must be {\"Users\": [{\"Id\": ...}, ...]}"),
        Err(e) => return bad_request(e),
    };
    let mut world = sim.world();
    if !world.groups.iter().any(|g| g.id == id) {
        return message(StatusCode::NOT_FOUND, format!("group {id} not found"));
    }
    let mut errors = Vec::new();
    let mut injected = false;
    for entry in entries {
        let user_id = entry.as_object().and_then(|o| field(o, "Id")).and_then(Value::as_i64);
        let name = user_id.and_then(|uid| world.user_by_id_mut(uid)).map(|u| u.username.clone());
        if let Some(name) = name.filter(|n| world.membership_fails(n)) {
            injected = true;
            errors.push(json!({"Id": user_id, "Name": name, "Message": "injected membership failure"}));
            continue;
        }
        let Some(user) = user_id.and_then(|uid| world.user_by_id_mut(uid)) else {
            errors.push(json!({"Id": user_id, "Message": format!("user {entry} not found")}));
            continue;
        };
        if add {
            if !user.group_ids.contains(&id) {
                user.group_ids.push(id);
            }
        } else {
            user.group_ids.retain(|g| *g != id);
        }
    }
    if injected {
        world.take_membership_failure();
    }
    // Some entries failing while others took effect: 202, one error entry each.
    let status = if errors.is_empty() { StatusCode::OK } else { StatusCode::ACCEPTED };
    Reply::Json(status, json!({ "Errors": errors }))
}

fn directory_of(sim: &Sim) -> Result<&directory::Settings, Reply> {
    sim.directory.as_ref().ok_or_else(|| message(StatusCode::INTERNAL_SERVER_ERROR, "no directory is configured"))
}

async fn external_groups(sim: &Sim, q: &Query) -> Reply {
    let dir = match directory_of(sim) {
        Ok(d) => d,
        Err(r) => return r,
    };
    match directory::list_groups(dir).await {
        Ok(groups) => {
            let groups: Vec<Value> =
                groups.into_iter().map(|g| json!({"Name": g.name, "DistinguishedName": g.dn})).collect();
            paginate(groups, |g| g["Name"].as_str().unwrap_or_default().to_string(), None, q, "Groups")
        }
        Err(e) => message(StatusCode::INTERNAL_SERVER_ERROR, format!("directory error: {e}")),
    }
}

fn external_user_json(u: &ExternalUser, domain: &str) -> Value {
    json!({
        "Id": u.sid,
        "Username": u.username,
        "DisplayName": u.display_name,
        "DistinguishedName": u.dn,
        "Email": u.email,
        "DomainName": domain,
    })
}

async fn external_group_users(sim: &Sim, name: &str, q: &Query) -> Reply {
    let dir = match directory_of(sim) {
        Ok(d) => d,
        Err(r) => return r,
    };
    match directory::direct_members(dir, name).await {
        Ok(Some(members)) => {
            let domain = sim.world().domain_name.clone();
            let users: Vec<Value> = members.users.iter().map(|u| external_user_json(u, &domain)).collect();
            paginate(users, |u| u["Username"].as_str().unwrap_or_default().to_string(), None, q, "Users")
        }
        Ok(None) => message(StatusCode::NOT_FOUND, format!("group {name:?} not found in the directory")),
        Err(e) => message(StatusCode::INTERNAL_SERVER_ERROR, format!("directory error: {e}")),
    }
}

async fn import(sim: &Sim, body: &[u8]) -> Reply {
    let object = match parse_lenient(body) {
        Ok(Value::Object(o)) => o,
        Ok(_) => return bad_request("import body must be a JSON object"),
        Err(e) => return bad_request(e),
    };
    let (user_name, group_name) = match (string_field(&object, "UserName"), string_field(&object, "GroupName")) {
        (Ok(u), Ok(g)) => (u, g),
        (Err(e), _) | (_, Err(e)) => return bad_request(e),
    };
    let allow_update = match field(&object, "AllowUpdate") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => return bad_request(format!("AllowUpdate must be a boolean, got {other}")),
    };
    let dir = match directory_of(sim) {
        Ok(d) => d,
        Err(r) => return r,
    };
    match (user_name, group_name) {
        (Some(user), None) if !user.is_empty() => import_user(sim, dir, &user).await,
        (None, Some(group)) if !group.is_empty() => import_group(sim, dir, &group, allow_update).await,
        _ => bad_request("exactly one of UserName or GroupName is required"),
    }
}

async fn import_group(sim: &Sim, dir: &directory::Settings, group: &str, allow_update: bool) -> Reply {
    let members = match directory::direct_members(dir, group).await {
        Ok(Some(m)) => m,
        Ok(None) => {
            return message(StatusCode::NOT_FOUND, format!("group {group:?} not found in the directory"));
        }
        Err(e) => {
            return message(StatusCode::INTERNAL_SERVER_ERROR, format!("directory error: {e}"));
        }
    };
    let mut world = sim.world();
    if members.member_values > world.group_import_limit {
        return bad_request(format!(
            "group {group:?} has {} members, more than the directory query limit of {}",
            members.member_values, world.group_import_limit
        ));
    }
    let domain = world.domain_name.clone();
    let mut created = Vec::new();
    let mut errors = Vec::new();
    for member in &members.users {
        if world.faults.import_fails(&member.username) {
            errors.push(json!({"Name": member.username, "Message": "failed to import user from the directory"}));
            continue;
        }
        match world.users.get_mut(&member.username.to_lowercase()) {
            Some(existing) => {
                if allow_update {
                    existing.email = member.email.clone();
                }
            }
            None => created.push(world.new_user(
                &member.username,
                member.email.clone(),
                Some(domain.clone()),
                Some(member.sid.clone()),
            )),
        }
    }
    let status = if errors.is_empty() { StatusCode::OK } else { StatusCode::ACCEPTED };
    Reply::Json(status, json!({ "Users": created, "Errors": errors }))
}

async fn import_user(sim: &Sim, dir: &directory::Settings, username: &str) -> Reply {
    let found = match directory::find_user(dir, username).await {
        Ok(Some(u)) => u,
        Ok(None) => {
            return message(StatusCode::NOT_FOUND, format!("user {username:?} not found in the directory"));
        }
        Err(e) => {
            return message(StatusCode::INTERNAL_SERVER_ERROR, format!("directory error: {e}"));
        }
    };
    let mut world = sim.world();
    if world.users.contains_key(&found.username.to_lowercase()) {
        return message(StatusCode::CONFLICT, format!("user {:?} already exists", found.username));
    }
    if world.faults.import_fails(&found.username) {
        return message(StatusCode::INTERNAL_SERVER_ERROR, "failed to import user from the directory");
    }
    let domain = world.domain_name.clone();
    let user = world.new_user(&found.username, found.email.clone(), Some(domain), Some(found.sid.clone()));
    Reply::Json(StatusCode::OK, json!({ "Users": [user], "Errors": [] }))
}

#[cfg(test)]
mod tests {
    use super::truncated;

    #[test]
    fn truncation_is_invalid_json_and_never_splits_a_character() {
        for text in [r#"{"Users": [], "Cursor": null}"#, r#"{"Name": "Développeurs éé"}"#, "ééééé"] {
            let cut = truncated(text);
            assert!(serde_json::from_str::<serde_json::Value>(&cut).is_err(), "{cut}");
        }
    }
}
