//! The simulator's world: CloudShell users and groups, live tokens, injected faults and the log of calls.
//! Pure data; the HTTP side lives in `api`.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher, RandomState};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A CloudShell user, serialised exactly as the reference shows (every field present, nulls written out).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct User {
    pub id: i64,
    pub sid: String,
    pub username: String,
    pub email: Option<String>,
    pub is_active: bool,
    pub is_admin: bool,
    pub group_ids: Vec<i64>,
    pub time_zone_info_id: Option<String>,
    pub max_reservation_duration: Option<i64>,
    pub max_concurrent_reservations: Option<i64>,
    pub max_scheduled_sandboxes: Option<i64>,
    pub max_owned_blueprints: Option<i64>,
    pub max_saved_sandboxes: Option<i64>,
    pub domain_roles: Vec<Value>,
    pub domain_name: Option<String>,
    pub imported_sid: Option<String>,
}

/// A CloudShell group, serialised as the reference shows.
#[derive(Clone, Debug, Serialize)]
pub struct Group {
    #[serde(rename = "ParentIds")]
    pub parent_ids: Option<Vec<i64>>,
    #[serde(rename = "Sid")]
    pub sid: String,
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Description")]
    pub description: Option<String>,
    #[serde(rename = "ViewOnly")]
    pub view_only: bool,
    #[serde(rename = "groupType")]
    pub group_type: String,
    #[serde(rename = "groupRole")]
    pub group_role: String,
    #[serde(rename = "Id")]
    pub id: i64,
}

pub const SYSTEM_ADMINISTRATORS: i64 = -1;
pub const EVERYONE: i64 = 1;

/// One call the simulator answered, for tests to inspect.
#[derive(Clone, Debug, Serialize)]
pub struct Call {
    pub seq: u64,
    pub method: String,
    pub path: String,
    pub query: String,
    /// The request body as JSON when it parsed, else as text; a `Password` field is redacted.
    pub body: Value,
    /// The `Authorization` scheme the caller used (`Basic`, `Bearer`), if any.
    pub auth_scheme: Option<String>,
    pub status: u16,
    /// Which fault, if any, produced the answer.
    pub injected: Option<String>,
    /// Milliseconds since the simulator started, when the call arrived.
    pub at_ms: u64,
    /// `in_flight` while the request is being answered, `done` once answered, `aborted` when the caller went
    /// away before the answer (the call may or may not have taken effect: a slow rule says which).
    pub state: String,
}

/// "The next `count` calls (matching `method` and `path_contains`) answer `status` with `body`."
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FailRule {
    pub count: u32,
    pub status: u16,
    /// The answer body; default `{"Message": "injected failure"}`.
    #[serde(default)]
    pub body: Option<String>,
    /// The answer's content type; default `application/json`.
    #[serde(default)]
    pub content_type: Option<String>,
    /// Extra answer headers, such as `Retry-After`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub path_contains: Option<String>,
}

/// "The next `count` answers (matching `path_contains`) are malformed JSON." The call still takes effect.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MalformedRule {
    pub count: u32,
    #[serde(default)]
    pub path_contains: Option<String>,
}

/// "The next `count` calls (matching) take effect, then their answer is held back `delay_ms`": an answer lost
/// to a client timeout after the work was done. With `before_processing` the call is held before it takes
/// effect instead: a caller that goes away meanwhile (a timeout, a killed process) leaves nothing changed.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SlowRule {
    pub count: u32,
    pub delay_ms: u64,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub path_contains: Option<String>,
    /// Hold the call before it takes effect (default: after, holding back only the answer).
    #[serde(default)]
    pub before_processing: bool,
}

/// "The next `count` calls (matching) get their connection cut mid-answer", after taking effect or before.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ResetRule {
    pub count: u32,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub path_contains: Option<String>,
    /// Cut after the call took effect (default) or before.
    #[serde(default = "yes")]
    pub after_processing: bool,
}

fn yes() -> bool {
    true
}

/// Faults set through the control endpoint; each key present changes that fault, absent keys are kept.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRequest {
    #[serde(default)]
    pub fail: Option<FailRule>,
    #[serde(default)]
    pub malformed: Option<MalformedRule>,
    #[serde(default)]
    pub slow: Option<SlowRule>,
    #[serde(default)]
    pub reset: Option<ResetRule>,
    /// Added latency before every API answer, in milliseconds.
    #[serde(default)]
    pub latency_ms: Option<u64>,
    /// Expire every token issued so far.
    #[serde(default)]
    pub expire_tokens: bool,
    /// Tokens issued from now on serve this many calls, then expire (0 = forever).
    #[serde(default)]
    pub token_lifetime_calls: Option<u32>,
    /// Imports of these usernames fail (an `Errors` entry in a group import, 500 for a user import).
    #[serde(default)]
    pub fail_import_users: Option<Vec<String>>,
    /// Change the group-import size limit.
    #[serde(default)]
    pub group_import_limit: Option<usize>,
    /// Membership changes of these users fail (an `Errors` entry in a 202) while the rest take effect.
    #[serde(default)]
    pub fail_membership: Option<MembershipRule>,
}

/// "In the next `count` membership calls that include them, these users' changes fail."
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MembershipRule {
    pub usernames: Vec<String>,
    pub count: u32,
}

/// The faults in force.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Faults {
    pub fail: Vec<FailRule>,
    pub malformed: Vec<MalformedRule>,
    pub slow: Vec<SlowRule>,
    pub reset: Vec<ResetRule>,
    pub latency_ms: u64,
    pub token_lifetime_calls: u32,
    pub fail_import_users: Vec<String>,
    pub fail_membership: Option<MembershipRule>,
}

fn matches(path_filter: &Option<String>, method_filter: &Option<String>, method: &str, path: &str) -> bool {
    let path_ok = path_filter.as_ref().is_none_or(|p| path.to_lowercase().contains(&p.to_lowercase()));
    let method_ok = method_filter.as_ref().is_none_or(|m| m.eq_ignore_ascii_case(method));
    path_ok && method_ok
}

/// A fault rule that is good for a number of uses.
trait Counted: Clone {
    fn uses(&mut self) -> &mut u32;
}

macro_rules! counted {
    ($($rule:ty),*) => {$(
        impl Counted for $rule {
            fn uses(&mut self) -> &mut u32 {
                &mut self.count
            }
        }
    )*};
}

counted!(FailRule, MalformedRule, SlowRule, ResetRule);

/// Spends one use of the first rule in `rules` that `applies`, dropping it when spent; a copy of it as it was
/// taken.
fn take_first<R: Counted>(rules: &mut Vec<R>, applies: impl Fn(&R) -> bool) -> Option<R> {
    let index = rules.iter_mut().position(|r| *r.uses() > 0 && applies(r))?;
    *rules[index].uses() -= 1;
    let taken = rules[index].clone();
    if *rules[index].uses() == 0 {
        rules.remove(index);
    }
    Some(taken)
}

impl Faults {
    /// Takes one use of the first fail rule matching this call.
    pub fn take_failure(&mut self, method: &str, path: &str) -> Option<FailRule> {
        take_first(&mut self.fail, |r| matches(&r.path_contains, &r.method, method, path))
    }

    /// Takes one use of the first malformed rule matching this call.
    pub fn take_malformed(&mut self, path: &str) -> bool {
        take_first(&mut self.malformed, |r| matches(&r.path_contains, &None, "", path)).is_some()
    }

    /// Takes one use of the first slow rule matching this call at this stage (before or after processing); its
    /// delay.
    pub fn take_slow(&mut self, method: &str, path: &str, before_processing: bool) -> Option<u64> {
        take_first(&mut self.slow, |r| {
            r.before_processing == before_processing && matches(&r.path_contains, &r.method, method, path)
        })
        .map(|r| r.delay_ms)
    }

    /// Takes one use of the first reset rule matching this call at this stage (before or after processing).
    pub fn take_reset(&mut self, method: &str, path: &str, after_processing: bool) -> bool {
        take_first(&mut self.reset, |r| {
            r.after_processing == after_processing && matches(&r.path_contains, &r.method, method, path)
        })
        .is_some()
    }

    pub fn import_fails(&self, username: &str) -> bool {
        self.fail_import_users.iter().any(|u| u.to_lowercase() == username.to_lowercase())
    }
}

/// Everything the simulator holds.
#[derive(Debug)]
pub struct World {
    /// Users keyed by lower-cased username: usernames are unique case-insensitively.
    pub users: BTreeMap<String, User>,
    pub groups: Vec<Group>,
    next_user_id: i64,
    /// Live tokens and how many calls each has left (`None`: no limit).
    pub tokens: HashMap<String, Option<u32>>,
    pub faults: Faults,
    pub calls: Vec<Call>,
    next_call: u64,
    pub group_import_limit: usize,
    pub domain_name: String,
    /// Leave `GroupIds` out of user objects, as a server might.
    pub omit_group_ids: bool,
    /// Fields left out of the objects of some users (by lowercase username), as a server might: the API's
    /// answers only, never `/_sim/state`.
    pub omit_fields: HashMap<String, Vec<String>>,
    random: RandomState,
    counter: u64,
    started: std::time::Instant,
    /// Calls being answered now, since when the simulator has been busy, and busy time so far: the
    /// simulator's own share of a run, for benchmarks.
    in_flight: u32,
    busy_since: Option<std::time::Instant>,
    pub busy: std::time::Duration,
}

/// Whether a presented token is accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum TokenCheck {
    Valid,
    Invalid,
}

impl World {
    pub fn new(admin: &str, existing: &[String], group_import_limit: usize, domain_name: &str) -> World {
        let mut world = World {
            users: BTreeMap::new(),
            groups: vec![
                Group {
                    parent_ids: None,
                    sid: "8a0e2b0e-7f7c-4c61-9a62-0d1f4a6d0001".into(),
                    name: "System Administrators".into(),
                    description: None,
                    view_only: false,
                    group_type: "System".into(),
                    group_role: "Admin".into(),
                    id: SYSTEM_ADMINISTRATORS,
                },
                Group {
                    parent_ids: None,
                    sid: "8a0e2b0e-7f7c-4c61-9a62-0d1f4a6d0002".into(),
                    name: "Everyone".into(),
                    description: None,
                    view_only: false,
                    group_type: "System".into(),
                    group_role: "Regular".into(),
                    id: EVERYONE,
                },
                Group {
                    parent_ids: None,
                    sid: "8a0e2b0e-7f7c-4c61-9a62-0d1f4a6d0003".into(),
                    name: "Lab Users".into(),
                    description: Some("users of the lab".into()),
                    view_only: false,
                    group_type: "Regular".into(),
                    group_role: "Regular".into(),
                    id: 2,
                },
            ],
            next_user_id: 1,
            tokens: HashMap::new(),
            faults: Faults::default(),
            calls: Vec::new(),
            next_call: 1,
            group_import_limit,
            domain_name: domain_name.to_string(),
            omit_group_ids: false,
            omit_fields: HashMap::new(),
            random: RandomState::new(),
            counter: 0,
            started: std::time::Instant::now(),
            in_flight: 0,
            busy_since: None,
            busy: std::time::Duration::ZERO,
        };
        let admin_user = world.new_user(admin, None, None, None);
        world.users.get_mut(&admin.to_lowercase()).expect("just added").is_admin = true;
        world.users.get_mut(&admin.to_lowercase()).expect("just added").group_ids =
            vec![SYSTEM_ADMINISTRATORS, EVERYONE];
        debug_assert_eq!(admin_user.id, 1);
        for name in existing {
            if !world.users.contains_key(&name.to_lowercase()) {
                world.new_user(name, None, None, None);
            }
        }
        world
    }

    fn random_u64(&mut self) -> u64 {
        self.counter += 1;
        let mut h = self.random.build_hasher();
        h.write_u64(self.counter);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        h.finish()
    }

    fn uuid(&mut self) -> String {
        let a = self.random_u64();
        let b = self.random_u64();
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            (b >> 48) & 0x3fff | 0x8000,
            b & 0xffff_ffff_ffff
        )
    }

    /// Creates a user; a domain name and SID mark it as imported from the directory.
    pub fn new_user(
        &mut self,
        username: &str,
        email: Option<String>,
        domain_name: Option<String>,
        imported_sid: Option<String>,
    ) -> User {
        let user = User {
            id: self.next_user_id,
            sid: self.uuid(),
            username: username.to_string(),
            email,
            is_active: true,
            is_admin: false,
            group_ids: vec![EVERYONE],
            time_zone_info_id: None,
            max_reservation_duration: Some(1440),
            max_concurrent_reservations: Some(10),
            max_scheduled_sandboxes: Some(10),
            max_owned_blueprints: Some(10),
            max_saved_sandboxes: None,
            domain_roles: Vec::new(),
            domain_name,
            imported_sid,
        };
        self.next_user_id += 1;
        self.users.insert(username.to_lowercase(), user.clone());
        user
    }

    /// Adds a regular CloudShell group (or returns the one of that name).
    pub fn add_group(&mut self, name: &str) -> Group {
        if let Some(g) = self.groups.iter().find(|g| g.name.eq_ignore_ascii_case(name)) {
            return g.clone();
        }
        let id = self.groups.iter().map(|g| g.id).max().unwrap_or(0) + 1;
        let group = Group {
            parent_ids: None,
            sid: self.uuid(),
            name: name.to_string(),
            description: None,
            view_only: false,
            group_type: "Regular".into(),
            group_role: "Regular".into(),
            id,
        };
        self.groups.push(group.clone());
        group
    }

    /// Whether the membership change of `username` fails now (the rule's count is taken by the caller, once
    /// per call that used it).
    pub fn membership_fails(&self, username: &str) -> bool {
        self.faults
            .fail_membership
            .as_ref()
            .is_some_and(|r| r.count > 0 && r.usernames.iter().any(|u| u.eq_ignore_ascii_case(username)))
    }

    /// Takes one use of the membership failure rule.
    pub fn take_membership_failure(&mut self) {
        if let Some(rule) = self.faults.fail_membership.as_mut() {
            rule.count = rule.count.saturating_sub(1);
        }
    }

    pub fn user_by_id_mut(&mut self, id: i64) -> Option<&mut User> {
        self.users.values_mut().find(|u| u.id == id)
    }

    pub fn issue_token(&mut self) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let mut token = String::with_capacity(22);
        while token.len() < 22 {
            let mut r = self.random_u64();
            for _ in 0..10 {
                token.push(ALPHABET[(r % 62) as usize] as char);
                r /= 62;
            }
        }
        token.truncate(22);
        let lifetime = match self.faults.token_lifetime_calls {
            0 => None,
            n => Some(n),
        };
        self.tokens.insert(token.clone(), lifetime);
        token
    }

    /// Checks a token and spends one call of its lifetime.
    pub fn use_token(&mut self, token: &str) -> TokenCheck {
        match self.tokens.get_mut(token) {
            None => TokenCheck::Invalid,
            Some(None) => TokenCheck::Valid,
            Some(Some(0)) => {
                self.tokens.remove(token);
                TokenCheck::Invalid
            }
            Some(Some(left)) => {
                *left -= 1;
                TokenCheck::Valid
            }
        }
    }

    pub fn apply_faults(&mut self, request: FaultRequest) {
        if let Some(rule) = request.fail {
            self.faults.fail.push(rule);
        }
        if let Some(rule) = request.malformed {
            self.faults.malformed.push(rule);
        }
        if let Some(rule) = request.slow {
            self.faults.slow.push(rule);
        }
        if let Some(rule) = request.reset {
            self.faults.reset.push(rule);
        }
        if let Some(ms) = request.latency_ms {
            self.faults.latency_ms = ms;
        }
        if request.expire_tokens {
            self.tokens.clear();
        }
        if let Some(n) = request.token_lifetime_calls {
            self.faults.token_lifetime_calls = n;
        }
        if let Some(users) = request.fail_import_users {
            self.faults.fail_import_users = users;
        }
        if let Some(limit) = request.group_import_limit {
            self.group_import_limit = limit;
        }
        if let Some(rule) = request.fail_membership {
            self.faults.fail_membership = Some(rule);
        }
    }

    /// Logs a call as it arrives and returns its sequence number.
    pub fn begin_call(&mut self, mut call: Call) -> u64 {
        call.seq = self.next_call;
        call.state = "in_flight".into();
        call.at_ms = self.started.elapsed().as_millis() as u64;
        if self.in_flight == 0 {
            self.busy_since = Some(std::time::Instant::now());
        }
        self.in_flight += 1;
        self.next_call += 1;
        self.calls.push(call);
        self.next_call - 1
    }

    fn call_mut(&mut self, seq: u64) -> Option<&mut Call> {
        self.calls.iter_mut().rev().find(|c| c.seq == seq)
    }

    fn idle_one(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if self.in_flight == 0
            && let Some(since) = self.busy_since.take()
        {
            self.busy += since.elapsed();
        }
    }

    /// Records the answer to call `seq`.
    pub fn end_call(&mut self, seq: u64, status: u16, injected: Option<String>) {
        self.idle_one();
        if let Some(call) = self.call_mut(seq) {
            call.status = status;
            call.injected = injected;
            call.state = "done".into();
        }
    }

    /// Marks call `seq` as abandoned by its caller, unless it was answered.
    pub fn abort_call(&mut self, seq: u64) {
        if let Some(call) = self.call_mut(seq)
            && call.state == "in_flight"
        {
            call.state = "aborted".into();
            self.idle_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_is_a_system_administrator_and_existing_users_are_unique_case_insensitively() {
        let w = World::new("admin", &["JPorter".into(), "jporter".into()], 100, "EXAMPLE");
        assert_eq!(w.users.len(), 2);
        assert_eq!(w.users["admin"].group_ids, vec![SYSTEM_ADMINISTRATORS, EVERYONE]);
        assert!(w.users["admin"].is_admin);
        assert_eq!(w.users["jporter"].username, "JPorter");
    }

    #[test]
    fn tokens_expire_after_their_lifetime() {
        let mut w = World::new("admin", &[], 100, "EXAMPLE");
        w.apply_faults(FaultRequest { token_lifetime_calls: Some(2), ..Default::default() });
        let t = w.issue_token();
        assert_eq!(t.len(), 22);
        assert_eq!(w.use_token(&t), TokenCheck::Valid);
        assert_eq!(w.use_token(&t), TokenCheck::Valid);
        assert_eq!(w.use_token(&t), TokenCheck::Invalid);
        assert_eq!(w.use_token("nope"), TokenCheck::Invalid);
    }

    #[test]
    fn fail_rules_match_by_path_and_count_down() {
        let mut f = Faults::default();
        f.fail.push(FailRule {
            count: 2,
            status: 503,
            body: None,
            content_type: None,
            headers: BTreeMap::new(),
            method: Some("POST".into()),
            path_contains: Some("identitymanagement/users".into()),
        });
        assert!(f.take_failure("GET", "/api/v1/users").is_none());
        assert!(f.take_failure("GET", "/api/v1/integrations/IdentityManagement/users").is_none());
        assert_eq!(f.take_failure("POST", "/api/v1/integrations/IdentityManagement/users").unwrap().status, 503);
        assert!(f.take_failure("POST", "/api/v1/integrations/IdentityManagement/users").is_some());
        assert!(f.take_failure("POST", "/api/v1/integrations/IdentityManagement/users").is_none());
    }

    #[test]
    fn slow_rules_hold_calls_only_at_their_stage() {
        let mut f = Faults::default();
        let rule = |before_processing| SlowRule {
            count: 1,
            delay_ms: if before_processing { 10 } else { 20 },
            method: None,
            path_contains: None,
            before_processing,
        };
        f.slow.push(rule(true));
        assert_eq!(f.take_slow("PUT", "/api/v1/users/2", false), None, "held before, never after");
        assert_eq!(f.take_slow("PUT", "/api/v1/users/2", true), Some(10));
        f.slow.push(rule(false));
        assert_eq!(f.take_slow("PUT", "/api/v1/users/2", true), None, "held after, never before");
        assert_eq!(f.take_slow("PUT", "/api/v1/users/2", false), Some(20));
        let defaulted: SlowRule = serde_json::from_str(r#"{"count": 1, "delay_ms": 5}"#).unwrap();
        assert!(!defaulted.before_processing, "held after processing unless asked");
    }
}
