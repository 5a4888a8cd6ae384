//! The configuration file's shape, as TOML reads it: every table and key, its default, and nothing else.
//! Unknown keys are refused. Values are checked and turned into the validated [`super::Config`] by
//! [`super::validate`]; nothing here is trusted yet. Required keys are `Option`s so that their absence is
//! reported by validation, naming the key, rather than by a deserialiser's message.
//! `config/example.toml` shows the same keys and defaults.

use std::path::PathBuf;

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    /// `[ldap]`, required.
    pub ldap: Option<RawLdap>,
    /// `[cloudshell]`, required.
    pub cloudshell: Option<RawCloudShell>,
    /// `[sync]`, required.
    pub sync: Option<RawSync>,
    #[serde(default)]
    pub schedule: RawSchedule,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub monitor: RawMonitor,
}

/// `[monitor]`: status and metrics.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMonitor {
    /// Where `/metrics` and `/healthz` are served (`run` only). Default: not served.
    pub listen: Option<String>,
    /// Where the status file and the state are kept. Default: `$STATE_DIRECTORY`, else (for `run`)
    /// `/var/lib/cloudshell-ldap-sync`.
    pub state_directory: Option<PathBuf>,
    /// How long the audit trail (`history`) keeps a row; pruned at the end of a run. `"0s"` keeps every row; the
    /// last 24 hours are always kept (the daily budgets count them). Default: `"400d"`.
    pub history_retention: Option<String>,
}

/// `ldap.nested_groups`: `true`/`false`, or `"recursive"`, `"in_chain"`, `"auto"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawNesting {
    Flag(bool),
    Mode(String),
}

/// `ldap.url`: one URL, or a list tried in order.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawUrls {
    One(String),
    Many(Vec<String>),
}

/// `[ldap]`: the directory.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLdap {
    /// Required. `ldap://` or `ldaps://`, or a list tried in order.
    pub url: Option<RawUrls>,
    /// Extra connection attempts per URL before trying the next one. Default 1.
    #[serde(default = "defaults::connect_retries")]
    pub connect_retries: i64,
    /// Upgrade an `ldap://` connection with StartTLS. Default false.
    #[serde(default)]
    pub starttls: bool,
    /// Extra certificates (PEM) trusted for the directory, besides the system's: the CA that issued the server's
    /// certificate, or a self-signed certificate itself (trusted as that exact certificate). Default: none.
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate (test directories only). Default false.
    #[serde(default)]
    pub danger_skip_tls_verify: bool,
    /// Required. The service account to bind as.
    pub bind_dn: Option<String>,
    /// A file holding the bind password (may use `$CREDENTIALS_DIRECTORY`).
    pub bind_password_file: Option<String>,
    /// An environment variable holding the bind password.
    pub bind_password_env: Option<String>,
    /// Required. Where users and groups are searched (subtree).
    pub base_dn: Option<String>,
    /// Default `(objectClass=inetOrgPerson)`.
    #[serde(default = "defaults::user_filter")]
    pub user_filter: String,
    /// Default `(objectClass=groupOfNames)`.
    #[serde(default = "defaults::group_filter")]
    pub group_filter: String,
    /// The account name CloudShell imports users by. Default `uid` (`sAMAccountName` for AD).
    #[serde(default = "defaults::username_attribute")]
    pub username_attribute: String,
    /// Default `cn`.
    #[serde(default = "defaults::group_name_attribute")]
    pub group_name_attribute: String,
    /// Default `member`.
    #[serde(default = "defaults::member_attribute")]
    pub member_attribute: String,
    /// Default `displayName`. Accepted and not read today: no search asks for it. CloudShell takes a user's
    /// details from its own directory connection when it imports them.
    #[serde(default = "defaults::display_name_attribute")]
    pub display_name_attribute: String,
    /// Default `mail`. Accepted and not read today: no search asks for it (CloudShell takes a user's email
    /// from its own directory connection).
    #[serde(default = "defaults::email_attribute")]
    pub email_attribute: String,
    /// Entries per page; every search is paged. Default 500.
    #[serde(default = "defaults::page_size")]
    pub page_size: i64,
    /// The limit on connecting and on each operation. Default `30s`.
    #[serde(default = "defaults::timeout")]
    pub timeout: String,
    /// The largest LDAP message accepted from the directory, in MiB: a bigger one ends the connection before
    /// it is buffered. Default 64.
    #[serde(default = "defaults::max_message_mib")]
    pub max_message_mib: i64,
    /// Whether and how members of member groups count. Default true (recursive).
    #[serde(default = "defaults::nested_groups")]
    pub nested_groups: RawNesting,
    /// Include accounts AD marks disabled. Default false.
    #[serde(default)]
    pub include_disabled: bool,
    /// Ask for the member attribute in windows of this many values (AD). Default: not set.
    pub member_range_size: Option<i64>,
    /// Nesting deeper than this puts the group in error. Default 10.
    #[serde(default = "defaults::max_nesting_depth")]
    pub max_nesting_depth: i64,
    /// How runs read only what changed between full reads: `auto`, `off`, `syncrepl`, `dirsync`, `usn` or
    /// `modify_timestamp`. Default `auto`.
    #[serde(default = "defaults::change_detection")]
    pub change_detection: String,
    /// With `modify_timestamp`: how far before the latest `modifyTimestamp` read the next read starts. Default 5m.
    #[serde(default = "defaults::modify_timestamp_margin")]
    pub modify_timestamp_margin: String,
}

/// `[cloudshell]`: the Admin API.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCloudShell {
    /// Required. The Quali Server's API address.
    pub url: Option<String>,
    /// A CloudShell system administrator. Default `admin`.
    #[serde(default = "defaults::cloudshell_username")]
    pub username: String,
    /// A file holding the password (may use `$CREDENTIALS_DIRECTORY`).
    pub password_file: Option<String>,
    /// An environment variable holding the password.
    pub password_env: Option<String>,
    /// The login domain. Default `Global`.
    #[serde(default = "defaults::domain")]
    pub domain: String,
    /// `Basic` or `Bearer`. Default `Basic`.
    #[serde(default = "defaults::auth_scheme")]
    pub auth_scheme: String,
    /// The limit on each request. Default `30s`.
    #[serde(default = "defaults::timeout")]
    pub timeout: String,
    /// Default `10s`.
    #[serde(default = "defaults::connect_timeout")]
    pub connect_timeout: String,
    /// Per-user imports in flight at once. Default 4.
    #[serde(default = "defaults::concurrency")]
    pub concurrency: i64,
    /// Retries of a call that failed transiently. Default 3.
    #[serde(default = "defaults::retries")]
    pub retries: i64,
    /// The most time one call may spend on retries. Default `2m`.
    #[serde(default = "defaults::retry_deadline")]
    pub retry_deadline: String,
    /// Requests per second at most; 0 means no cap. Default 0.
    #[serde(default)]
    pub max_requests_per_second: f64,
    /// The largest answer read from CloudShell, in MiB; a larger one fails its call. A page of 250 users is
    /// about 100 KB; a group import's answer lists the users it created (about 300 bytes each). Default 16.
    #[serde(default = "defaults::max_answer_mib")]
    pub max_answer_mib: i64,
    /// Users per group-membership call. Default 100.
    #[serde(default = "defaults::membership_batch_size")]
    pub membership_batch_size: i64,
    /// Extra certificates (PEM) trusted for an `https://` URL, besides the system's: the CA that issued the
    /// server's certificate, or a self-signed certificate itself (trusted as that exact certificate). Default:
    /// none.
    pub ca_file: Option<PathBuf>,
}

/// `[[sync.mapping]]`: a directory group whose effective members belong in CloudShell groups.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMapping {
    /// Required. A directory group name (a value of `ldap.group_name_attribute`); imported like `sync.groups`.
    pub directory_group: Option<String>,
    /// Required. CloudShell groups (which must exist) that every effective member belongs in.
    pub cloudshell_groups: Option<Vec<String>>,
}

/// `[sync]`: what to import and the safety limits.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSync {
    /// Directory group names to import. Required unless `[[sync.mapping]]` names groups.
    pub groups: Option<Vec<String>>,
    /// Directory groups mapped to CloudShell groups. Default: none.
    #[serde(default)]
    pub mapping: Vec<RawMapping>,
    /// Remove directory users from a mapped CloudShell group when they are in none of the directory groups
    /// mapped to it. Default false.
    #[serde(default)]
    pub remove_from_groups: bool,
    /// More planned removals than this hold every removal. Default 100.
    #[serde(default = "defaults::max_removals_per_run")]
    pub max_removals_per_run: i64,
    /// More removals from CloudShell groups in any 24 hours than this (counted from the audit trail in the
    /// state directory) hold every removal of the run that would pass it. Default 500.
    #[serde(default = "defaults::max_removals_per_day")]
    pub max_removals_per_day: i64,
    /// `[sync.leavers]`: users who left. Default: every key at its default.
    #[serde(default)]
    pub leavers: RawLeavers,
    /// A full read of the directory at least this often, between change reads; `0s`: every run. Default `6h`.
    #[serde(default = "defaults::full_sync_every")]
    pub full_sync_every: String,
    /// More planned user imports than this hold every write. Default 1000.
    #[serde(default = "defaults::max_imports_per_run")]
    pub max_imports_per_run: i64,
    /// A group shrinking by more than this percentage is held. Default 50.
    #[serde(default = "defaults::max_shrink_percent")]
    pub max_shrink_percent: i64,
    /// How a group holding accounts the directory marks disabled is imported: `import_then_deactivate` (by
    /// the group's name, then those accounts deactivated in CloudShell) or `per_user` (member by member, so
    /// they are never imported). Default `import_then_deactivate` where a state directory exists, else
    /// `per_user`.
    pub disabled_accounts: Option<String>,
    /// More accounts to deactivate for being disabled in the directory than this hold those deactivations
    /// (the imports stand). Default 1000.
    #[serde(default = "defaults::max_disabled_deactivations_per_run")]
    pub max_disabled_deactivations_per_run: i64,
    /// A run still going after this long stops as if asked to: no new call, group or retry starts. Default
    /// `6h`.
    #[serde(default = "defaults::run_timeout")]
    pub run_timeout: String,
}

/// `[sync.leavers]`: managed users who left the configured groups.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLeavers {
    /// `ignore`, `report` (listed in the report and logs) or `deactivate`. Default `report`.
    #[serde(default = "defaults::leaver_action")]
    pub action: String,
    /// Act only after a user has been a leaver in this many consecutive complete runs. Default 1.
    #[serde(default = "defaults::grace_runs")]
    pub grace_runs: i64,
    /// ... and only this long after the user first became a leaver (both must hold), so that a schedule of
    /// minutes or a manual `sync` does not use the grace up. `"0s"` (the default): runs alone decide.
    #[serde(default = "defaults::grace_period")]
    pub grace_period: String,
    /// More deactivations than this in one run hold every deactivation. Default 20.
    #[serde(default = "defaults::leavers_max_per_run")]
    pub max_per_run: i64,
    /// ... or more than this percentage of the managed users. Default 10.
    #[serde(default = "defaults::leavers_max_percent")]
    pub max_percent: i64,
    /// More deactivations (leavers and disabled accounts) in any 24 hours than this (counted from the audit
    /// trail in the state directory) hold every deactivation of the run that would pass it. Default 100.
    #[serde(default = "defaults::leavers_max_per_day")]
    pub max_per_day: i64,
    /// ... or more than this percentage of the managed users active in CloudShell now. Default 20.
    #[serde(default = "defaults::leavers_max_percent_per_day")]
    pub max_percent_per_day: i64,
    /// Usernames (globs, case-insensitive) never deactivated. Default: none.
    #[serde(default)]
    pub protect: Vec<String>,
    /// Make a user this program deactivated active again when they are back. Default true.
    #[serde(default = "defaults::yes")]
    pub reactivate: bool,
}

impl Default for RawLeavers {
    fn default() -> Self {
        RawLeavers {
            action: defaults::leaver_action(),
            grace_runs: defaults::grace_runs(),
            grace_period: defaults::grace_period(),
            max_per_run: defaults::leavers_max_per_run(),
            max_percent: defaults::leavers_max_percent(),
            max_per_day: defaults::leavers_max_per_day(),
            max_percent_per_day: defaults::leavers_max_percent_per_day(),
            protect: Vec::new(),
            reactivate: true,
        }
    }
}

/// `[schedule]`: when `run` runs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSchedule {
    /// Seconds first. Default `0 */15 * * * *`.
    #[serde(default = "defaults::cron")]
    pub cron: String,
    /// Run once at start. Default true.
    #[serde(default = "defaults::yes")]
    pub run_on_start: bool,
    /// An IANA time zone. Default `UTC`.
    #[serde(default = "defaults::timezone")]
    pub timezone: String,
    /// Start a run when the directory announces a change (content sync's refreshAndPersist). Default false.
    #[serde(default)]
    pub watch: bool,
    /// How long a run started by a change waits for more. Default `2s`.
    #[serde(default = "defaults::watch_delay")]
    pub watch_delay: String,
}

impl Default for RawSchedule {
    fn default() -> Self {
        RawSchedule {
            cron: defaults::cron(),
            run_on_start: true,
            timezone: defaults::timezone(),
            watch: false,
            watch_delay: defaults::watch_delay(),
        }
    }
}

/// `[log]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// `text` or `json`. Default: text.
    #[serde(default)]
    pub format: Option<String>,
}

/// Every default in one place; `config/example.toml` documents the same values.
mod defaults {
    pub fn user_filter() -> String {
        "(objectClass=inetOrgPerson)".into()
    }
    pub fn group_filter() -> String {
        "(objectClass=groupOfNames)".into()
    }
    pub fn username_attribute() -> String {
        "uid".into()
    }
    pub fn group_name_attribute() -> String {
        "cn".into()
    }
    pub fn member_attribute() -> String {
        "member".into()
    }
    pub fn display_name_attribute() -> String {
        "displayName".into()
    }
    pub fn email_attribute() -> String {
        "mail".into()
    }
    pub fn max_message_mib() -> i64 {
        64
    }
    pub fn page_size() -> i64 {
        500
    }
    pub fn timeout() -> String {
        "30s".into()
    }
    pub fn connect_timeout() -> String {
        "10s".into()
    }
    pub fn yes() -> bool {
        true
    }
    pub fn max_nesting_depth() -> i64 {
        10
    }
    pub fn cloudshell_username() -> String {
        "admin".into()
    }
    pub fn domain() -> String {
        "Global".into()
    }
    pub fn auth_scheme() -> String {
        "Basic".into()
    }
    pub fn concurrency() -> i64 {
        4
    }
    pub fn max_imports_per_run() -> i64 {
        1000
    }
    pub fn max_shrink_percent() -> i64 {
        50
    }
    pub fn max_removals_per_run() -> i64 {
        100
    }
    pub fn max_disabled_deactivations_per_run() -> i64 {
        1000
    }
    pub fn run_timeout() -> String {
        "6h".into()
    }
    pub fn membership_batch_size() -> i64 {
        100
    }
    pub fn leaver_action() -> String {
        "report".into()
    }
    pub fn grace_runs() -> i64 {
        1
    }
    pub fn grace_period() -> String {
        "0s".into()
    }
    pub fn leavers_max_per_run() -> i64 {
        20
    }
    pub fn leavers_max_percent() -> i64 {
        10
    }
    pub fn leavers_max_per_day() -> i64 {
        100
    }
    pub fn leavers_max_percent_per_day() -> i64 {
        20
    }
    pub fn max_removals_per_day() -> i64 {
        500
    }
    pub fn change_detection() -> String {
        "auto".into()
    }
    pub fn watch_delay() -> String {
        "2s".into()
    }
    pub fn modify_timestamp_margin() -> String {
        "5m".into()
    }
    pub fn full_sync_every() -> String {
        "6h".into()
    }
    pub fn retries() -> i64 {
        3
    }
    pub fn max_answer_mib() -> i64 {
        16
    }
    pub fn retry_deadline() -> String {
        "2m".into()
    }
    pub fn nested_groups() -> super::RawNesting {
        super::RawNesting::Flag(true)
    }
    pub fn connect_retries() -> i64 {
        1
    }
    pub fn cron() -> String {
        "0 */15 * * * *".into()
    }
    pub fn timezone() -> String {
        "UTC".into()
    }
}
