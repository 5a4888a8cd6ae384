//! Metrics for monitoring: Prometheus text exposition (`prometheus-client`) of the daemon's runs, served with
//! `/healthz` on `[monitor] listen`. It only observes; it never changes what a run does.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::report::{Report, RunResult, Standing};
use crate::schedule::Schedule;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabel {
    group: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabel {
    action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabel {
    call: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TriggerLabel {
    trigger: String,
}

/// How the watch on the directory stands (`[schedule] watch`), for `/healthz` and the status file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WatchState {
    /// Established: the directory announces its changes.
    pub up: bool,
    /// Why not, while it is not (down and retrying, or unavailable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Since when (RFC 3339).
    pub since: String,
}

impl WatchState {
    /// Up from now, or not, for this reason.
    pub fn now(up: bool, reason: Option<String>) -> WatchState {
        let since = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        WatchState { up, reason, since }
    }
}

/// The daemon's metrics.
pub struct Metrics {
    registry: Registry,
    last_success: Gauge<f64, AtomicU64>,
    last_run: Gauge<f64, AtomicU64>,
    run_duration: Histogram,
    runs: Family<ResultLabel, Counter>,
    imports: Counter,
    failures: Family<KindLabel, Counter>,
    group_members: Family<GroupLabel, Gauge>,
    group_missing: Family<GroupLabel, Gauge>,
    memberships: Family<ActionLabel, Counter>,
    cloudshell_group_members: Family<GroupLabel, Gauge>,
    leavers: Family<StateLabel, Gauge>,
    user_changes: Family<ActionLabel, Counter>,
    unconfirmed: Family<ActionLabel, Counter>,
    directory_seconds: Histogram,
    api_seconds: Family<CallLabel, Histogram>,
    start_time: Gauge<f64, AtomicU64>,
    schedule_period: Gauge<f64, AtomicU64>,
    last_run_result: Family<ResultLabel, Gauge>,
    runs_since_success: Gauge,
    last_result: Mutex<Option<RunResult>>,
    runs_started: Family<TriggerLabel, Counter>,
    watch_up: Gauge,
    watch_enabled: Gauge,
    watch: Mutex<Option<WatchState>>,
    change_to_cloudshell: Histogram,
}

fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or_default()
}

fn seconds_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.005, 2.0, 16)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("cloudshell_ldap_sync");
        let m = Metrics {
            last_success: Gauge::default(),
            last_run: Gauge::default(),
            run_duration: Histogram::new(seconds_buckets()),
            runs: Family::default(),
            imports: Counter::default(),
            failures: Family::default(),
            group_members: Family::default(),
            group_missing: Family::default(),
            memberships: Family::default(),
            cloudshell_group_members: Family::default(),
            leavers: Family::default(),
            user_changes: Family::default(),
            unconfirmed: Family::default(),
            directory_seconds: Histogram::new(seconds_buckets()),
            api_seconds: Family::new_with_constructor(|| Histogram::new(seconds_buckets())),
            start_time: Gauge::default(),
            schedule_period: Gauge::default(),
            last_run_result: Family::default(),
            runs_since_success: Gauge::default(),
            last_result: Mutex::new(None),
            runs_started: Family::default(),
            watch_up: Gauge::default(),
            watch_enabled: Gauge::default(),
            watch: Mutex::new(None),
            change_to_cloudshell: Histogram::new(seconds_buckets()),
            registry: Registry::default(),
        };
        m.start_time.set(unix_now());
        registry.register(
            "last_success_timestamp_seconds",
            "When a run last ended ok (Unix time)",
            m.last_success.clone(),
        );
        registry.register("last_run_timestamp_seconds", "When the last run ended (Unix time)", m.last_run.clone());
        registry.register("run_duration_seconds", "How long runs take", m.run_duration.clone());
        registry.register("runs", "Runs by result", m.runs.clone());
        registry.register("imports", "Users imported into CloudShell", m.imports.clone());
        registry.register(
            "failures",
            "Failures by kind: group enumeration (by error kind), user import, fatal run",
            m.failures.clone(),
        );
        registry.register("group_members", "Effective members per configured group", m.group_members.clone());
        registry.register(
            "group_missing",
            "Members missing in CloudShell per group, before the run",
            m.group_missing.clone(),
        );
        registry.register(
            "group_memberships",
            "CloudShell group membership changes by action: added, removed, failed",
            m.memberships.clone(),
        );
        registry.register(
            "cloudshell_group_members",
            "Members of each mapped CloudShell group after the run",
            m.cloudshell_group_members.clone(),
        );
        m.register_users(&mut registry);
        registry.register(
            "directory_read_seconds",
            "How long reading the directory takes",
            m.directory_seconds.clone(),
        );
        registry.register("api_request_duration_seconds", "CloudShell API latency by call", m.api_seconds.clone());
        registry.register("start_time_seconds", "When the daemon started (Unix time)", m.start_time.clone());
        registry.register(
            "schedule_period_seconds",
            "Time between the next two scheduled runs, as the schedule stood at the start or the last reload",
            m.schedule_period.clone(),
        );
        registry.register(
            "last_run_result",
            "1 for the result of the last run (ok, partial, failed, held), 0 for the others; none before the first run",
            m.last_run_result.clone(),
        );
        registry.register(
            "runs_since_success",
            "Runs in a row that did not end ok (failed, partial or held), since the last ok run or the daemon's start",
            m.runs_since_success.clone(),
        );
        m.register_triggers(&mut registry);
        Metrics { registry, ..m }
    }

    /// Registers the metrics of what the run did to users: leavers, deactivations and reactivations, and what a
    /// second read did not confirm.
    fn register_users(&self, registry: &mut Registry) {
        registry.register(
            "leavers",
            "Managed users who left, by standing (waiting, candidate, protected, inactive, gone), at the last complete run",
            self.leavers.clone(),
        );
        registry.register(
            "user_status_changes",
            "Users made inactive or active again by this program (leavers, and accounts disabled or enabled again in the directory): action deactivated or reactivated",
            self.user_changes.clone(),
        );
        registry.register(
            "unconfirmed",
            "Deactivations and removals from CloudShell groups not sent because a second read of the directory, just before them, did not confirm them: action deactivation or removal",
            self.unconfirmed.clone(),
        );
    }

    /// Registers what started the runs, and the watch's metrics.
    fn register_triggers(&self, registry: &mut Registry) {
        registry.register(
            "runs_started",
            "Runs started, by what started them: start, schedule, signal (SIGUSR1), watch (a change the directory announced)",
            self.runs_started.clone(),
        );
        registry.register(
            "watch_up",
            "1 while the watch on the directory ([schedule] watch) is established, 0 while it is down or not configured",
            self.watch_up.clone(),
        );
        registry.register(
            "watch_enabled",
            "1 when the configuration asks for a watch on the directory ([schedule] watch = true), else 0",
            self.watch_enabled.clone(),
        );
        registry.register(
            "change_to_cloudshell_seconds",
            "From a change the directory announced to CloudShell's answer to the first write of the run it started",
            self.change_to_cloudshell.clone(),
        );
    }

    /// Records what started a run.
    pub fn observe_trigger(&self, trigger: &str) {
        self.runs_started.get_or_create(&TriggerLabel { trigger: trigger.to_string() }).inc();
    }

    /// Records how the watch stands (`None`: not asked for); `watch_up` is 1 only while it is up.
    pub fn set_watch(&self, state: Option<WatchState>) {
        self.watch_up.set(i64::from(matches!(state, Some(WatchState { up: true, .. }))));
        self.watch_enabled.set(i64::from(state.is_some()));
        let mut watch = self.watch.lock().unwrap_or_else(|p| p.into_inner());
        // Down again (another attempt failed): still down since it first went down.
        let since = match (&*watch, &state) {
            (Some(WatchState { up: false, since, .. }), Some(WatchState { up: false, .. })) => Some(since.clone()),
            _ => None,
        };
        *watch = state.map(|s| WatchState { since: since.unwrap_or(s.since), ..s });
    }

    /// How the watch stands, as last recorded.
    pub fn watch(&self) -> Option<WatchState> {
        self.watch.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records the time from an announced change to CloudShell's answer to the write it led to.
    pub fn observe_change_to_cloudshell(&self, elapsed: Duration) {
        self.change_to_cloudshell.observe(elapsed.as_secs_f64());
    }

    /// Records the schedule's period: the time between its next two runs after `now`.
    pub fn observe_schedule(&self, schedule: &Schedule, now: chrono::DateTime<chrono::Utc>) {
        let first = schedule.next_after(now);
        let second = first.and_then(|t| schedule.next_after(t));
        if let (Some(a), Some(b)) = (first, second) {
            self.schedule_period.set((b - a).num_milliseconds() as f64 / 1000.0);
        }
    }

    /// Records one CloudShell request.
    pub fn observe_request(&self, call: &'static str, elapsed: Duration) {
        self.api_seconds.get_or_create(&CallLabel { call: call.to_string() }).observe(elapsed.as_secs_f64());
    }

    /// Records a finished run.
    pub fn observe_run(&self, report: &Report) {
        let now = unix_now();
        self.runs.get_or_create(&ResultLabel { result: report.result.as_str().to_string() }).inc();
        for result in RunResult::ALL {
            let gauge = self.last_run_result.get_or_create(&ResultLabel { result: result.as_str().to_string() });
            gauge.set(i64::from(result == report.result));
        }
        self.last_run.set(now);
        if report.result == RunResult::Ok {
            self.last_success.set(now);
            self.runs_since_success.set(0);
        } else {
            self.runs_since_success.inc();
        }
        self.run_duration.observe(report.duration_ms as f64 / 1000.0);
        self.directory_seconds.observe(report.directory_ms as f64 / 1000.0);
        self.imports.inc_by(report.totals.imported as u64);
        if report.result == RunResult::Failed {
            self.failures.get_or_create(&KindLabel { kind: "fatal".into() }).inc();
        }
        for g in &report.groups {
            if let Some(kind) = g.error_kind {
                self.failures.get_or_create(&KindLabel { kind: format!("group_{kind}") }).inc();
            } else {
                let label = GroupLabel { group: g.name.clone() };
                self.group_members.get_or_create(&label).set(g.members as i64);
                self.group_missing.get_or_create(&label).set(g.missing as i64);
            }
            if g.failed > 0 {
                self.failures.get_or_create(&KindLabel { kind: "user_import".into() }).inc_by(g.failed as u64);
            }
        }
        for m in &report.memberships {
            for (action, n) in [("added", m.added), ("removed", m.removed), ("failed", m.failed)] {
                self.memberships.get_or_create(&ActionLabel { action: action.into() }).inc_by(n as u64);
            }
            if m.failed > 0 {
                self.failures.get_or_create(&KindLabel { kind: "membership".into() }).inc_by(m.failed as u64);
            }
            if m.error.is_none() {
                let label = GroupLabel { group: m.name.clone() };
                self.cloudshell_group_members.get_or_create(&label).set(m.members as i64);
            }
        }
        self.observe_user_changes(report);
        if let Some(l) = &report.leavers {
            if !l.failures.is_empty() {
                self.failures.get_or_create(&KindLabel { kind: "leaver".into() }).inc_by(l.failures.len() as u64);
            }
            if l.skipped.is_none() && l.error.is_none() {
                for standing in Standing::ALL {
                    let n = l.leavers.iter().filter(|x| x.standing == standing).count();
                    self.leavers.get_or_create(&StateLabel { state: standing.as_str().into() }).set(n as i64);
                }
            }
        }
        self.observe_unconfirmed(report);
        *self.last_result.lock().unwrap_or_else(|p| p.into_inner()) = Some(report.result);
    }

    /// The users this run made inactive or active again: leavers, and accounts disabled (or enabled again) in the
    /// directory; the failures of the disabled-account step by their own kind.
    fn observe_user_changes(&self, report: &Report) {
        let (leavers, disabled) = (report.leavers.as_ref(), report.disabled_accounts.as_ref());
        let deactivated = leavers.map_or(0, |l| l.deactivated.len()) + disabled.map_or(0, |d| d.deactivated.len());
        let reactivated = leavers.map_or(0, |l| l.reactivated.len()) + disabled.map_or(0, |d| d.reactivated.len());
        if leavers.is_some() || disabled.is_some() {
            for (action, n) in [("deactivated", deactivated), ("reactivated", reactivated)] {
                self.user_changes.get_or_create(&ActionLabel { action: action.into() }).inc_by(n as u64);
            }
        }
        if let Some(failed) = disabled.map(|d| d.failures.len()).filter(|&n| n > 0) {
            self.failures.get_or_create(&KindLabel { kind: "disabled_account".into() }).inc_by(failed as u64);
        }
    }

    /// The deactivations and removals the run's second read of the directory did not confirm.
    fn observe_unconfirmed(&self, report: &Report) {
        let count = |lines: &[crate::report::ProtectedLine]| crate::report::second_read::lines(lines).count() as u64;
        let deactivations = report.leavers.as_ref().map_or(0, |l| count(&l.left_alone))
            + report.disabled_accounts.as_ref().map_or(0, |d| count(&d.left_alone));
        let removals: u64 = report.memberships.iter().map(|m| count(&m.left_alone)).sum();
        for (action, n) in [("deactivation", deactivations), ("removal", removals)] {
            self.unconfirmed.get_or_create(&ActionLabel { action: action.into() }).inc_by(n);
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    pub(crate) fn last_result(&self) -> Option<RunResult> {
        *self.last_result.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Connections the endpoint serves at once. One more is accepted, answered 503 and closed at once, so neither
/// the kernel's queue nor the daemon's file descriptors fill up: a flood of idle connections holds at most this
/// many descriptors, for at most [`HEADER_TIMEOUT`], and cannot take those the sync needs.
pub const MAX_CONNECTIONS: usize = 32;

/// A request's headers must have arrived this long after the connection (or the previous request).
/// Prometheus and health probes send theirs at once.
const HEADER_TIMEOUT: Duration = Duration::from_secs(3);

/// No connection is kept longer than this, keep-alive included.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);

/// The endpoint's routes.
fn router(metrics: Arc<Metrics>) -> axum::Router {
    let for_metrics = metrics.clone();
    axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let m = for_metrics.clone();
                async move {
                    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], m.encode())
                }
            }),
        )
        .route(
            "/healthz",
            axum::routing::get(move || {
                let m = metrics.clone();
                async move {
                    let last = m.last_result().map(RunResult::as_str);
                    let mut body = serde_json::json!({ "status": "ok", "last_result": last });
                    if let Some(watch) = m.watch() {
                        body["watch"] = serde_json::to_value(watch).unwrap_or_default();
                    }
                    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
                }
            }),
        )
}

/// Serves `/metrics` and `/healthz` on `listener` until `stop` is cancelled: at most [`MAX_CONNECTIONS`] at
/// once (more are answered 503 and closed at once), each sending its headers within [`HEADER_TIMEOUT`] and
/// living at most [`CONNECTION_LIFETIME`].
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>, stop: CancellationToken) {
    let app = router(metrics);
    let mut connections = tokio::task::JoinSet::new();
    let mut refusing = false;
    loop {
        let socket = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(e) => {
                    // Out of descriptors, say: wait rather than spin.
                    tracing::warn!(error = %e, "monitoring endpoint cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
        };
        // The connections still open: the set holds them until joined.
        while connections.try_join_next().is_some() {}
        if connections.len() >= MAX_CONNECTIONS {
            if !refusing {
                tracing::warn!(
                    limit = MAX_CONNECTIONS,
                    "monitoring endpoint at its connection limit, closing new connections"
                );
                refusing = true;
            }
            refuse_busy(&socket);
            continue;
        }
        refusing = false;
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        connections.spawn(async move {
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
            let connection = http.serve_connection(hyper_util::rt::TokioIo::new(socket), service);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
        });
    }
    connections.abort_all();
}

/// What a connection past [`MAX_CONNECTIONS`] is told before it is closed, so that a probe records why.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 44\r\n\
Retry-After: 3\r\nConnection: close\r\n\r\nmonitoring endpoint at its connection limit\n";

/// Tells a connection past the limit so, without waiting: what it has sent already is read off (closing a socket
/// with unread data resets it, and the peer may then lose the answer), up to 16 KiB, and the answer is written
/// only if the socket takes it at once. The caller closes the socket.
fn refuse_busy(socket: &tokio::net::TcpStream) {
    let mut request = [0u8; 4096];
    for _ in 0..4 {
        if !matches!(socket.try_read(&mut request), Ok(n) if n > 0) {
            break;
        }
    }
    let _ = socket.try_write(BUSY);
}

/// The monitoring address cannot be listened on.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} ([monitor] listen): {source}")]
pub struct BindError {
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

/// Binds the monitoring address; a clear error when it cannot.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, BindError> {
    tokio::net::TcpListener::bind(addr).await.map_err(|source| BindError { addr, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{MembershipReport, Placed};
    use crate::username::Username;

    #[test]
    fn the_last_result_and_the_runs_since_success_are_gauged_for_alerts() {
        let metrics = Metrics::new();
        let text = metrics.encode();
        assert!(!text.contains("last_run_result{"), "no result before the first run: {text}");
        assert!(text.contains("cloudshell_ldap_sync_runs_since_success 0"), "{text}");
        let mut report = Report::new("r".into(), false);
        for result in [RunResult::Failed, RunResult::Partial, RunResult::Held] {
            report.result = result;
            metrics.observe_run(&report);
        }
        let text = metrics.encode();
        assert!(text.contains("cloudshell_ldap_sync_runs_since_success 3"), "{text}");
        assert!(text.contains("cloudshell_ldap_sync_last_run_result{result=\"held\"} 1"), "{text}");
        assert!(text.contains("cloudshell_ldap_sync_last_run_result{result=\"failed\"} 0"), "{text}");
        assert!(text.contains("cloudshell_ldap_sync_last_run_result{result=\"ok\"} 0"), "{text}");
        report.result = RunResult::Ok;
        metrics.observe_run(&report);
        let text = metrics.encode();
        assert!(text.contains("cloudshell_ldap_sync_runs_since_success 0"), "an ok run resets it: {text}");
        assert!(text.contains("cloudshell_ldap_sync_last_run_result{result=\"ok\"} 1"), "{text}");
        assert!(text.contains("cloudshell_ldap_sync_last_run_result{result=\"held\"} 0"), "{text}");
    }

    #[test]
    fn the_start_time_and_the_schedule_period_are_exported_in_seconds() {
        let before = unix_now();
        let metrics = Metrics::new();
        let value = |text: &str, name: &str| -> f64 {
            let line =
                text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name}: {text}"));
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        let start = value(&metrics.encode(), "cloudshell_ldap_sync_start_time_seconds");
        assert!(start >= before.floor() && start <= unix_now() + 1.0, "{start} vs {before}");
        let every_15_minutes = Schedule::parse("0 */15 * * * *", "UTC").unwrap();
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-02T05:07:00Z").unwrap().with_timezone(&chrono::Utc);
        metrics.observe_schedule(&every_15_minutes, now);
        assert_eq!(value(&metrics.encode(), "cloudshell_ldap_sync_schedule_period_seconds"), 900.0);
        let weekdays = Schedule::parse("0 0 2 * * Mon-Fri", "UTC").unwrap();
        // A Friday: the next runs are Friday and Monday.
        let friday = chrono::DateTime::parse_from_rfc3339("2026-12-04T01:00:00Z").unwrap().with_timezone(&chrono::Utc);
        metrics.observe_schedule(&weekdays, friday);
        assert_eq!(value(&metrics.encode(), "cloudshell_ldap_sync_schedule_period_seconds"), 3.0 * 86400.0);
    }

    /// A watch down and failing again stays down since it first went down; back up, it is up from then; the
    /// gauge follows.
    #[test]
    fn the_watch_stays_down_since_it_first_went_down() {
        let m = Metrics::new();
        let state =
            |up: bool, since: &str| WatchState { up, reason: (!up).then(|| "gone".into()), since: since.into() };
        m.set_watch(Some(state(false, "2026-12-02T10:00:00Z")));
        m.set_watch(Some(state(false, "2026-12-02T10:00:30Z")));
        assert_eq!(m.watch().unwrap().since, "2026-12-02T10:00:00Z");
        assert!(m.encode().contains("cloudshell_ldap_sync_watch_up 0"));
        assert!(
            m.encode().contains("cloudshell_ldap_sync_watch_enabled 1"),
            "asked for, and down: what the alert needs"
        );
        m.set_watch(Some(state(true, "2026-12-02T10:01:00Z")));
        assert_eq!(m.watch().unwrap().since, "2026-12-02T10:01:00Z");
        assert!(m.encode().contains("cloudshell_ldap_sync_watch_up 1"));
        m.set_watch(None);
        assert_eq!(m.watch(), None);
        assert!(m.encode().contains("cloudshell_ldap_sync_watch_up 0"));
        assert!(m.encode().contains("cloudshell_ldap_sync_watch_enabled 0"), "not asked for: no alert");
    }

    #[test]
    fn the_busy_answer_is_well_formed() {
        let text = std::str::from_utf8(BUSY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
        assert!(head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())), "{head}");
    }

    #[test]
    fn membership_changes_are_counted_by_action_with_a_gauge_per_cloudshell_group() {
        let mut report = Report::new("r".into(), false);
        let mut lab = MembershipReport::new("Lab Users", Some(2), &[crate::group_name::GroupName::new("Eng")], 3);
        lab.planned_add = vec!["a".into(), "b".into()];
        let placed = Placed {
            added: vec![Username::new("a").unwrap()],
            failures: vec![crate::report::Failure { username: Username::new("b").unwrap(), reason: "x".into() }],
            ..Default::default()
        };
        report.memberships =
            vec![lab.settle(Some(placed)), MembershipReport::new("Gone", None, &[], 0).failed("missing".into())];
        let metrics = Metrics::new();
        metrics.observe_run(&report);
        let text = metrics.encode();
        assert!(text.contains("cloudshell_ldap_sync_group_memberships_total{action=\"added\"} 1"), "{text}");
        assert!(text.contains("cloudshell_ldap_sync_group_memberships_total{action=\"failed\"} 1"), "{text}");
        assert!(text.contains("cloudshell_ldap_sync_cloudshell_group_members{group=\"Lab Users\"} 4"), "{text}");
        assert!(!text.contains("group=\"Gone\""), "a group that could not be read has no gauge: {text}");
        assert!(text.contains("cloudshell_ldap_sync_failures_total{kind=\"membership\"} 1"), "{text}");
    }

    #[test]
    fn leavers_are_gauged_by_standing_and_changes_counted() {
        let mut report = Report::new("r".into(), false);
        let mut l = crate::report::LeaversReport::new("deactivate");
        l.deactivated = vec!["bob".into()];
        l.leavers = vec![
            crate::report::LeaverLine {
                username: "bob".into(),
                standing: Standing::Candidate,
                reason: None,
                runs: 1,
                since: None,
            },
            crate::report::LeaverLine {
                username: "eve".into(),
                standing: Standing::Waiting,
                reason: None,
                runs: 1,
                since: None,
            },
        ];
        report.leavers = Some(l);
        let metrics = Metrics::new();
        metrics.observe_run(&report);
        let text = metrics.encode();
        assert!(text.contains("cloudshell_ldap_sync_leavers{state=\"candidate\"} 1"), "{text}");
        assert!(text.contains("cloudshell_ldap_sync_leavers{state=\"waiting\"} 1"), "{text}");
        assert!(text.contains("cloudshell_ldap_sync_leavers{state=\"gone\"} 0"), "{text}");
        assert!(text.contains("cloudshell_ldap_sync_user_status_changes_total{action=\"deactivated\"} 1"), "{text}");
    }

    /// Accounts deactivated (or reactivated) for being disabled (or enabled again) in the directory count as the
    /// leavers' do, so that the alert on a day of many deactivations sees both; the disabled-account step's
    /// failures are counted by their own kind. The control: a leaver alone counts one.
    #[test]
    fn disabled_accounts_deactivated_count_with_the_leavers() {
        use crate::report::{DisabledReport, Failure, LeaversReport};
        let changes = |report: &Report| {
            let metrics = Metrics::new();
            metrics.observe_run(report);
            let text = metrics.encode();
            let value = |line: &str| {
                let found = text.lines().find(|l| l.starts_with(line));
                found.and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse::<u64>().ok())
            };
            let changes = "cloudshell_ldap_sync_user_status_changes_total";
            let deactivated = value(&format!("{changes}{{action=\"deactivated\"}}"));
            let reactivated = value(&format!("{changes}{{action=\"reactivated\"}}"));
            (deactivated, reactivated, value("cloudshell_ldap_sync_failures_total{kind=\"disabled_account\"}"))
        };
        let mut report = Report::new("r".into(), false);
        let mut leavers = LeaversReport::new("deactivate");
        leavers.deactivated = vec!["bob".into()];
        report.leavers = Some(leavers);
        assert_eq!(changes(&report), (Some(1), Some(0), None), "the control");
        let mut disabled = DisabledReport::new("import_then_deactivate");
        disabled.deactivated = vec!["carol".into(), "dave".into()];
        disabled.reactivated = vec!["erin".into()];
        let failure = Failure { username: crate::username::Username::new("frank").unwrap(), reason: "500".into() };
        disabled.failures = vec![failure];
        report.disabled_accounts = Some(disabled);
        assert_eq!(changes(&report), (Some(3), Some(1), Some(1)));
        report.leavers = None;
        assert_eq!(changes(&report), (Some(2), Some(1), Some(1)), "without a leaver step");
    }

    /// What a second read did not confirm is counted by action; a user left alone for another reason is not
    /// (the control).
    #[test]
    fn deactivations_and_removals_a_second_read_did_not_confirm_are_counted() {
        use crate::report::{DisabledReport, LeaversReport, MembershipReport, ProtectedLine, second_read};
        let line = |username: &str, reason| ProtectedLine { username: username.into(), reason };
        let mut report = Report::new("r".into(), false);
        let mut leavers = LeaversReport::new("deactivate");
        leavers.left_alone = vec![line("bob", second_read::MEMBER_AGAIN), line("dave", "already inactive")];
        report.leavers = Some(leavers);
        let mut disabled = DisabledReport::new("import_then_deactivate");
        disabled.left_alone = vec![line("erin", second_read::NOT_DISABLED)];
        report.disabled_accounts = Some(disabled);
        let mut lab = MembershipReport::new("Lab", Some(1), &[], 3);
        lab.left_alone = vec![line("frank", second_read::NOT_READ_AGAIN)];
        report.memberships.push(lab);
        let metrics = Metrics::new();
        metrics.observe_run(&report);
        metrics.observe_run(&report);
        let text = metrics.encode();
        assert!(text.contains("cloudshell_ldap_sync_unconfirmed_total{action=\"deactivation\"} 4"), "{text}");
        assert!(text.contains("cloudshell_ldap_sync_unconfirmed_total{action=\"removal\"} 2"), "{text}");
    }
}
