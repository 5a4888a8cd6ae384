//! The configuration file: read in two stages, a raw TOML shape that rejects unknown keys, then a validated
//! [`Config`] (URLs and durations parsed, secrets read). Downstream code never re-parses a string.
//! Errors name the file, the key, the line and the column. Secrets never reach `Debug` output.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;
use url::Url;

use crate::cloudshell::{self, AuthScheme};
use crate::ldap;
use crate::schedule::Schedule;

/// Where the daemon keeps its state when neither the file nor systemd names a directory.
pub const DEFAULT_STATE_DIRECTORY: &str = "/var/lib/cloudshell-ldap-sync";

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{file}{position}: {message}", position = self.position())]
pub struct Error {
    pub file: PathBuf,
    /// The dotted key, when the error is about one (`ldap.url`).
    pub key: Option<String>,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl Error {
    fn position(&self) -> String {
        match (self.line, self.column, &self.key) {
            (Some(l), Some(c), Some(k)) => format!(":{l}:{c}: key {k}"),
            (Some(l), Some(c), None) => format!(":{l}:{c}"),
            (_, _, Some(k)) => format!(": key {k}"),
            _ => String::new(),
        }
    }
}

// ---------------------------------------------------------------- raw shape

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    ldap: RawLdap,
    cloudshell: RawCloudShell,
    sync: RawSync,
    #[serde(default)]
    schedule: RawSchedule,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    monitor: RawMonitor,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMonitor {
    listen: Option<String>,
    state_directory: Option<PathBuf>,
}

/// `ldap.nested_groups`: `true`/`false`, or `"recursive"`, `"in_chain"`, `"auto"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawNesting {
    Flag(bool),
    Mode(String),
}

/// `ldap.url`: one URL, or a list tried in order.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawUrls {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLdap {
    url: RawUrls,
    #[serde(default = "defaults::connect_retries")]
    connect_retries: i64,
    #[serde(default)]
    starttls: bool,
    ca_file: Option<PathBuf>,
    #[serde(default)]
    danger_skip_tls_verify: bool,
    bind_dn: String,
    bind_password_file: Option<String>,
    bind_password_env: Option<String>,
    base_dn: String,
    #[serde(default = "defaults::user_filter")]
    user_filter: String,
    #[serde(default = "defaults::group_filter")]
    group_filter: String,
    #[serde(default = "defaults::username_attribute")]
    username_attribute: String,
    #[serde(default = "defaults::group_name_attribute")]
    group_name_attribute: String,
    #[serde(default = "defaults::member_attribute")]
    member_attribute: String,
    #[serde(default = "defaults::display_name_attribute")]
    display_name_attribute: String,
    #[serde(default = "defaults::email_attribute")]
    email_attribute: String,
    #[serde(default = "defaults::page_size")]
    page_size: i64,
    #[serde(default = "defaults::timeout")]
    timeout: String,
    #[serde(default = "defaults::nested_groups")]
    nested_groups: RawNesting,
    #[serde(default)]
    include_disabled: bool,
    member_range_size: Option<i64>,
    #[serde(default = "defaults::max_nesting_depth")]
    max_nesting_depth: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCloudShell {
    url: String,
    #[serde(default = "defaults::cloudshell_username")]
    username: String,
    password_file: Option<String>,
    password_env: Option<String>,
    #[serde(default = "defaults::domain")]
    domain: String,
    #[serde(default = "defaults::auth_scheme")]
    auth_scheme: String,
    #[serde(default = "defaults::timeout")]
    timeout: String,
    #[serde(default = "defaults::connect_timeout")]
    connect_timeout: String,
    #[serde(default = "defaults::concurrency")]
    concurrency: i64,
    #[serde(default = "defaults::retries")]
    retries: i64,
    #[serde(default = "defaults::retry_deadline")]
    retry_deadline: String,
    #[serde(default)]
    max_requests_per_second: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSync {
    groups: Vec<String>,
    #[serde(default = "defaults::max_imports_per_run")]
    max_imports_per_run: i64,
    #[serde(default = "defaults::max_shrink_percent")]
    max_shrink_percent: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    #[serde(default = "defaults::cron")]
    cron: String,
    #[serde(default = "defaults::yes")]
    run_on_start: bool,
    #[serde(default = "defaults::timezone")]
    timezone: String,
}

impl Default for RawSchedule {
    fn default() -> Self {
        RawSchedule { cron: defaults::cron(), run_on_start: true, timezone: defaults::timezone() }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    #[serde(default)]
    format: Option<String>,
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
    pub fn retries() -> i64 {
        3
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

// ---------------------------------------------------------------- validated shape

/// How logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// What a sync run may do.
#[derive(Clone, Debug)]
pub struct SyncPolicy {
    /// Directory group names, in order.
    pub groups: Vec<String>,
    /// More planned user imports than this hold every write.
    pub max_imports_per_run: usize,
    /// Per-user imports in flight at once.
    pub concurrency: usize,
    /// A group whose membership shrank by more than this percentage since the last good run is held.
    pub max_shrink_percent: u8,
}

/// The schedule of the daemon (`run`).
#[derive(Clone, Debug)]
pub struct ScheduleConfig {
    pub schedule: Schedule,
    pub run_on_start: bool,
}

/// Status and metrics for monitoring.
#[derive(Clone, Debug)]
pub struct Monitor {
    /// Where `/metrics` and `/healthz` are served, if anywhere.
    pub listen: Option<SocketAddr>,
    /// `[monitor] state_directory`, else `$STATE_DIRECTORY` (systemd's `StateDirectory=`), else none.
    pub state_directory: Option<PathBuf>,
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub path: PathBuf,
    pub ldap: ldap::Settings,
    pub cloudshell: cloudshell::Settings,
    pub sync: SyncPolicy,
    pub schedule: ScheduleConfig,
    pub monitor: Monitor,
    pub log_format: Option<LogFormat>,
    /// Things worth an operator's attention that do not stop the program (logged once logging is up).
    pub warnings: Vec<String>,
}

/// Reads and validates the configuration file at `path`.
pub fn load(path: &Path) -> Result<Config, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error {
        file: path.to_path_buf(),
        key: None,
        line: None,
        column: None,
        message: format!("cannot read the configuration: {e}"),
    })?;
    parse(path, &text, &|name| std::env::var(name).ok())
}

/// Line and column (1-based) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(before.chars().count(), |n| before[n + 1..].chars().count()) + 1;
    (line, column)
}

/// Where `key` is set inside `[table]`, as (line, column), by a plain scan of the file.
fn locate(text: &str, table: &str, key: &str) -> Option<(usize, usize)> {
    let mut current = String::new();
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if let Some(header) = trimmed.strip_prefix('[') {
            current = header.split(']').next().unwrap_or("").trim().to_string();
            continue;
        }
        if current == table
            && let Some(rest) = trimmed.strip_prefix(key)
            && rest.trim_start().starts_with('=')
        {
            return Some((n + 1, line.len() - trimmed.len() + 1));
        }
    }
    None
}

/// Parses and validates configuration text; `env` reads environment variables (a parameter for tests).
pub fn parse(path: &Path, text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, Error> {
    let raw: Raw = toml::from_str(text).map_err(|e| {
        let (line, column) = e.span().map(|s| line_col(text, s.start)).unzip();
        let message = e.message().trim().to_string();
        let key = message
            .split('`')
            .nth(1)
            .filter(|_| message.starts_with("unknown field") || message.starts_with("missing field"))
            .map(str::to_string);
        Error { file: path.to_path_buf(), key, line, column, message }
    })?;
    Validator { path, text, env, warnings: Vec::new() }.validate(raw)
}

struct Validator<'a> {
    path: &'a Path,
    text: &'a str,
    env: &'a dyn Fn(&str) -> Option<String>,
    warnings: Vec<String>,
}

impl Validator<'_> {
    fn error(&self, table: &str, key: &str, message: impl Into<String>) -> Error {
        let (line, column) = locate(self.text, table, key).unzip();
        Error {
            file: self.path.to_path_buf(),
            key: Some(format!("{table}.{key}")),
            line,
            column,
            message: message.into(),
        }
    }

    fn duration(&self, table: &str, key: &str, value: &str) -> Result<Duration, Error> {
        match humantime::parse_duration(value) {
            Ok(d) if d > Duration::ZERO => Ok(d),
            Ok(_) => Err(self.error(table, key, "must be longer than zero")),
            Err(e) => Err(self.error(table, key, format!("{value:?} is not a duration like \"30s\" or \"5m\": {e}"))),
        }
    }

    fn filter(&self, table: &str, key: &str, value: &str) -> Result<(), Error> {
        let balanced = value.chars().try_fold(0i32, |depth, c| match c {
            '(' => Some(depth + 1),
            ')' if depth > 0 => Some(depth - 1),
            ')' => None,
            _ => Some(depth),
        });
        if value.starts_with('(') && value.ends_with(')') && balanced == Some(0) {
            Ok(())
        } else {
            Err(self.error(
                table,
                key,
                format!("{value:?} is not an LDAP filter in parentheses, like \"(objectClass=person)\""),
            ))
        }
    }

    fn positive(&self, table: &str, key: &str, value: i64, max: i64) -> Result<i64, Error> {
        if (1..=max).contains(&value) {
            Ok(value)
        } else {
            Err(self.error(table, key, format!("must be between 1 and {max}, got {value}")))
        }
    }

    /// Reads a secret from `<key>_file` (which may use `$CREDENTIALS_DIRECTORY`), `<key>_env`, or the systemd
    /// credential named `credential`.
    fn secret(
        &mut self,
        table: &str,
        key: &str,
        file: Option<&str>,
        env_var: Option<&str>,
        credential: &str,
    ) -> Result<SecretString, Error> {
        let file_key = format!("{key}_file");
        let env_key = format!("{key}_env");
        let credentials = (self.env)("CREDENTIALS_DIRECTORY");
        let path = match (file, env_var) {
            (Some(_), Some(_)) => {
                return Err(self.error(
                    table,
                    &file_key,
                    format!("set {table}.{file_key} or {table}.{env_key}, not both"),
                ));
            }
            (None, Some(var)) => {
                return match (self.env)(var) {
                    Some(v) if !v.is_empty() => Ok(SecretString::from(v)),
                    _ => Err(self.error(table, &env_key, format!("environment variable {var} is not set or empty"))),
                };
            }
            (Some(f), None) => {
                let uses_credentials = f.contains("$CREDENTIALS_DIRECTORY") || f.contains("${CREDENTIALS_DIRECTORY}");
                match (&credentials, uses_credentials) {
                    (None, true) => {
                        return Err(self.error(
                            table,
                            &file_key,
                            "uses $CREDENTIALS_DIRECTORY, which is not set (it is set by systemd's LoadCredential=)",
                        ));
                    }
                    (Some(dir), true) => {
                        PathBuf::from(f.replace("${CREDENTIALS_DIRECTORY}", dir).replace("$CREDENTIALS_DIRECTORY", dir))
                    }
                    _ => PathBuf::from(f),
                }
            }
            (None, None) => match credentials.map(|d| Path::new(&d).join(credential)).filter(|p| p.exists()) {
                Some(p) => p,
                None => {
                    return Err(self.error(
                        table,
                        &file_key,
                        format!(
                            "no password: set {table}.{file_key} or {table}.{env_key}, or provide the systemd credential {credential:?}"
                        ),
                    ));
                }
            },
        };
        let contents = std::fs::read_to_string(&path)
            .map_err(|e| self.error(table, &file_key, format!("cannot read {}: {e}", path.display())))?;
        let secret = contents.trim_end_matches(['\r', '\n']).to_string();
        if secret.is_empty() {
            return Err(self.error(table, &file_key, format!("{} is empty", path.display())));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(meta) = std::fs::metadata(&path)
                && meta.permissions().mode() & 0o044 != 0
            {
                self.warnings.push(format!(
                    "{} ({table}.{file_key}) is readable by other users (mode {:o}): chmod 600 it",
                    path.display(),
                    meta.permissions().mode() & 0o777
                ));
            }
        }
        Ok(SecretString::from(secret))
    }

    fn validate(mut self, raw: Raw) -> Result<Config, Error> {
        let l = &raw.ldap;
        let urls: Vec<String> = match &l.url {
            RawUrls::One(u) => vec![u.clone()],
            RawUrls::Many(list) => list.clone(),
        };
        if urls.is_empty() {
            return Err(self.error("ldap", "url", "lists no URL"));
        }
        for url in &urls {
            let parsed =
                Url::parse(url).map_err(|e| self.error("ldap", "url", format!("{url:?} is not a URL: {e}")))?;
            match parsed.scheme() {
                "ldap" | "ldaps" => {}
                other => {
                    return Err(self.error(
                        "ldap",
                        "url",
                        format!("scheme must be ldap:// or ldaps://, got {other}://"),
                    ));
                }
            }
            if parsed.host_str().is_none_or(str::is_empty) {
                return Err(self.error("ldap", "url", format!("{url:?} names no host")));
            }
            if l.starttls && parsed.scheme() == "ldaps" {
                return Err(self.error(
                    "ldap",
                    "starttls",
                    "StartTLS upgrades ldap:// connections; ldaps:// is TLS already",
                ));
            }
        }
        let connect_retries = if (0..=10).contains(&l.connect_retries) {
            l.connect_retries as u32
        } else {
            return Err(self.error(
                "ldap",
                "connect_retries",
                format!("must be between 0 and 10, got {}", l.connect_retries),
            ));
        };
        if let Some(ca) = &l.ca_file
            && !ca.exists()
        {
            return Err(self.error("ldap", "ca_file", format!("{} does not exist", ca.display())));
        }
        if l.danger_skip_tls_verify {
            self.warnings.push("ldap.danger_skip_tls_verify = true: the directory's certificate is not checked".into());
        }
        for (key, value) in [("bind_dn", &l.bind_dn), ("base_dn", &l.base_dn)] {
            if value.trim().is_empty() {
                return Err(self.error("ldap", key, "must not be empty"));
            }
        }
        self.filter("ldap", "user_filter", &l.user_filter)?;
        self.filter("ldap", "group_filter", &l.group_filter)?;
        for (key, value) in [
            ("username_attribute", &l.username_attribute),
            ("group_name_attribute", &l.group_name_attribute),
            ("member_attribute", &l.member_attribute),
            ("display_name_attribute", &l.display_name_attribute),
            ("email_attribute", &l.email_attribute),
        ] {
            if value.is_empty() || !value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == ';')
            {
                return Err(self.error("ldap", key, format!("{value:?} is not an attribute name")));
            }
        }
        let page_size = self.positive("ldap", "page_size", l.page_size, i32::MAX as i64)? as i32;
        let ldap_timeout = self.duration("ldap", "timeout", &l.timeout)?;
        let max_nesting_depth = self.positive("ldap", "max_nesting_depth", l.max_nesting_depth, 100)? as usize;
        let nesting = match &l.nested_groups {
            RawNesting::Flag(true) => ldap::Nesting::Recursive,
            RawNesting::Flag(false) => ldap::Nesting::Off,
            RawNesting::Mode(m) => match m.to_ascii_lowercase().as_str() {
                "recursive" => ldap::Nesting::Recursive,
                "in_chain" => ldap::Nesting::InChain,
                "auto" => ldap::Nesting::Auto,
                "off" | "none" => ldap::Nesting::Off,
                _ => {
                    return Err(self.error(
                        "ldap",
                        "nested_groups",
                        format!("must be true, false, \"recursive\", \"in_chain\" or \"auto\", got {m:?}"),
                    ));
                }
            },
        };
        let member_range_size = match l.member_range_size {
            None => None,
            Some(n) => Some(self.positive("ldap", "member_range_size", n, 1_000_000)? as u32),
        };
        let bind_password = self.secret(
            "ldap",
            "bind_password",
            l.bind_password_file.as_deref(),
            l.bind_password_env.as_deref(),
            "ldap-password",
        )?;
        let ldap = ldap::Settings {
            urls: urls.iter().map(|u| u.trim_end_matches('/').to_string()).collect(),
            connect_retries,
            starttls: l.starttls,
            ca_file: l.ca_file.clone(),
            danger_skip_tls_verify: l.danger_skip_tls_verify,
            bind_dn: l.bind_dn.clone(),
            bind_password,
            base_dn: l.base_dn.clone(),
            user_filter: l.user_filter.clone(),
            group_filter: l.group_filter.clone(),
            username_attribute: l.username_attribute.clone(),
            group_name_attribute: l.group_name_attribute.clone(),
            member_attribute: l.member_attribute.clone(),
            display_name_attribute: l.display_name_attribute.clone(),
            email_attribute: l.email_attribute.clone(),
            page_size,
            timeout: ldap_timeout,
            nesting,
            include_disabled: l.include_disabled,
            member_range_size,
            max_nesting_depth,
        };

        let c = &raw.cloudshell;
        let url = Url::parse(&c.url)
            .map_err(|e| self.error("cloudshell", "url", format!("{:?} is not a URL: {e}", c.url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(self.error(
                "cloudshell",
                "url",
                format!("scheme must be http:// or https://, got {}://", url.scheme()),
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(self.error(
                "cloudshell",
                "url",
                "must not carry credentials; use cloudshell.username and password_file",
            ));
        }
        let auth_scheme = match c.auth_scheme.to_ascii_lowercase().as_str() {
            "basic" => AuthScheme::Basic,
            "bearer" => AuthScheme::Bearer,
            _ => {
                return Err(self.error(
                    "cloudshell",
                    "auth_scheme",
                    format!("must be \"Basic\" or \"Bearer\", got {:?}", c.auth_scheme),
                ));
            }
        };
        if c.username.trim().is_empty() {
            return Err(self.error("cloudshell", "username", "must not be empty"));
        }
        let timeout = self.duration("cloudshell", "timeout", &c.timeout)?;
        let connect_timeout = self.duration("cloudshell", "connect_timeout", &c.connect_timeout)?;
        let concurrency = self.positive("cloudshell", "concurrency", c.concurrency, 64)? as usize;
        let retries = if (0..=20).contains(&c.retries) {
            c.retries as u32
        } else {
            return Err(self.error("cloudshell", "retries", format!("must be between 0 and 20, got {}", c.retries)));
        };
        let retry_deadline = self.duration("cloudshell", "retry_deadline", &c.retry_deadline)?;
        if !(c.max_requests_per_second.is_finite() && c.max_requests_per_second >= 0.0) {
            return Err(self.error("cloudshell", "max_requests_per_second", "must be 0 (no cap) or a positive number"));
        }
        let password = self.secret(
            "cloudshell",
            "password",
            c.password_file.as_deref(),
            c.password_env.as_deref(),
            "cloudshell-password",
        )?;
        let cloudshell = cloudshell::Settings {
            url,
            username: c.username.clone(),
            password,
            domain: c.domain.clone(),
            auth_scheme,
            connect_timeout,
            timeout,
            retries,
            retry_deadline,
            max_requests_per_second: c.max_requests_per_second,
        };

        let s = &raw.sync;
        if s.groups.is_empty() {
            return Err(self.error("sync", "groups", "lists no group"));
        }
        let mut seen = std::collections::HashSet::new();
        for g in &s.groups {
            if g.trim().is_empty() {
                return Err(self.error("sync", "groups", "holds an empty group name"));
            }
            if g.chars().any(char::is_control) {
                return Err(self.error("sync", "groups", format!("group name {g:?} holds a control character")));
            }
            if !seen.insert(g.trim().to_lowercase()) {
                return Err(self.error("sync", "groups", format!("lists {g:?} twice")));
            }
        }
        let max_imports_per_run = if s.max_imports_per_run < 0 {
            return Err(self.error("sync", "max_imports_per_run", "must not be negative"));
        } else {
            s.max_imports_per_run as usize
        };
        let max_shrink_percent = if (0..=100).contains(&s.max_shrink_percent) {
            s.max_shrink_percent as u8
        } else {
            return Err(self.error(
                "sync",
                "max_shrink_percent",
                format!("must be between 0 and 100, got {}", s.max_shrink_percent),
            ));
        };
        let log_format = match raw.log.format.as_deref() {
            None => None,
            Some("text") => Some(LogFormat::Text),
            Some("json") => Some(LogFormat::Json),
            Some(other) => {
                return Err(self.error("log", "format", format!("must be \"text\" or \"json\", got {other:?}")));
            }
        };
        let schedule = Schedule::parse(&raw.schedule.cron, &raw.schedule.timezone).map_err(|e| {
            if e.contains("time zone") {
                self.error("schedule", "timezone", e)
            } else {
                self.error("schedule", "cron", e)
            }
        })?;
        let listen = match &raw.monitor.listen {
            None => None,
            Some(l) => Some(l.parse::<SocketAddr>().map_err(|e| {
                self.error("monitor", "listen", format!("{l:?} is not an address like \"127.0.0.1:9464\": {e}"))
            })?),
        };
        let state_directory = (self.env)("STATE_DIRECTORY")
            .and_then(|d| d.split(':').next().map(PathBuf::from))
            .filter(|_| raw.monitor.state_directory.is_none());
        Ok(Config {
            path: self.path.to_path_buf(),
            ldap,
            cloudshell,
            sync: SyncPolicy { groups: s.groups.clone(), max_imports_per_run, concurrency, max_shrink_percent },
            schedule: ScheduleConfig { schedule, run_on_start: raw.schedule.run_on_start },
            monitor: Monitor { listen, state_directory: raw.monitor.state_directory.clone().or(state_directory) },
            log_format,
            warnings: self.warnings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[ldap]
url = "ldap://127.0.0.1:389"
bind_dn = "cn=svc,dc=example,dc=org"
bind_password_env = "LDAP_PW"
base_dn = "dc=example,dc=org"

[cloudshell]
url = "http://cloudshell.example.com:9000"
password_env = "CS_PW"

[sync]
groups = ["Team"]
"#;

    fn env(name: &str) -> Option<String> {
        match name {
            "LDAP_PW" => Some("ldap-secret".into()),
            "CS_PW" => Some("cs-secret".into()),
            _ => None,
        }
    }

    fn parse_text(text: &str) -> Result<Config, Error> {
        parse(Path::new("/etc/x.toml"), text, &env)
    }

    #[test]
    fn a_minimal_file_gets_every_default() {
        let c = parse_text(MINIMAL).unwrap();
        assert_eq!(c.ldap.page_size, 500);
        assert_eq!(c.ldap.timeout, Duration::from_secs(30));
        assert_eq!(c.ldap.nesting, ldap::Nesting::Recursive);
        assert!(!c.ldap.include_disabled);
        assert_eq!(c.ldap.member_range_size, None);
        for (value, nesting) in [
            ("false", ldap::Nesting::Off),
            ("\"in_chain\"", ldap::Nesting::InChain),
            ("\"auto\"", ldap::Nesting::Auto),
            ("\"recursive\"", ldap::Nesting::Recursive),
        ] {
            let text = MINIMAL.replace("[ldap]\n", &format!("[ldap]\nnested_groups = {value}\n"));
            assert_eq!(parse_text(&text).unwrap().ldap.nesting, nesting, "{value}");
        }
        let e = parse_text(&MINIMAL.replace("[ldap]\n", "[ldap]\nnested_groups = \"sideways\"\n")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("ldap.nested_groups"));
        assert_eq!(c.ldap.username_attribute, "uid");
        assert_eq!(c.cloudshell.username, "admin");
        assert_eq!(c.cloudshell.domain, "Global");
        assert_eq!(c.cloudshell.auth_scheme, AuthScheme::Basic);
        assert_eq!(c.sync.max_imports_per_run, 1000);
        assert_eq!(c.sync.concurrency, 4);
        assert_eq!(c.sync.max_shrink_percent, 50);
        assert_eq!((c.cloudshell.retries, c.cloudshell.retry_deadline), (3, Duration::from_secs(120)));
        assert_eq!(c.cloudshell.max_requests_per_second, 0.0);
        assert_eq!(c.ldap.urls, ["ldap://127.0.0.1:389"]);
        assert_eq!(c.ldap.connect_retries, 1);
        let two = parse_text(&MINIMAL.replace(
            "url = \"ldap://127.0.0.1:389\"",
            "url = [\"ldaps://dc1.example.org\", \"ldaps://dc2.example.org:636/\"]",
        ))
        .unwrap();
        assert_eq!(two.ldap.urls, ["ldaps://dc1.example.org", "ldaps://dc2.example.org:636"]);
        assert_eq!(c.schedule.schedule.expression(), "0 */15 * * * *");
        assert!(c.monitor.listen.is_none() && c.monitor.state_directory.is_none());
        assert!(c.schedule.run_on_start);
    }

    #[test]
    fn unknown_keys_are_refused_with_file_key_line_and_column() {
        let text = MINIMAL.replace("[sync]\n", "[sync]\ngrups = [\"x\"]\n");
        let e = parse_text(&text).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("grups"));
        assert_eq!((e.line, e.column), (Some(13), Some(1)));
        let shown = e.to_string();
        assert!(shown.starts_with("/etc/x.toml:13:1: key grups: unknown field `grups`"), "{shown}");
    }

    #[test]
    fn invalid_values_name_their_key_and_line() {
        for (from, to, key, line, needle) in [
            ("url = \"ldap://127.0.0.1:389\"", "url = \"http://x\"", "ldap.url", 3, "ldap:// or ldaps://"),
            ("[sync]\n", "[sync]\nmax_imports_per_run = -1\n", "sync.max_imports_per_run", 13, "negative"),
            ("groups = [\"Team\"]", "groups = []", "sync.groups", 13, "no group"),
            ("groups = [\"Team\"]", "groups = [\"Team\", \"team\"]", "sync.groups", 13, "twice"),
            ("[cloudshell]\n", "[cloudshell]\ntimeout = \"soon\"\n", "cloudshell.timeout", 9, "not a duration"),
            ("[cloudshell]\n", "[cloudshell]\nauth_scheme = \"Digest\"\n", "cloudshell.auth_scheme", 9, "Bearer"),
            ("[ldap]\n", "[ldap]\nuser_filter = \"objectClass=person\"\n", "ldap.user_filter", 3, "parentheses"),
            ("[ldap]\n", "[ldap]\npage_size = 0\n", "ldap.page_size", 3, "between 1"),
        ] {
            let text = MINIMAL.replace(from, to);
            let e = parse_text(&text).unwrap_err();
            assert_eq!(e.key.as_deref(), Some(key), "{e}");
            assert_eq!(e.line, Some(line), "{e}");
            assert!(e.to_string().contains(needle), "{e}");
        }
    }

    #[test]
    fn malformed_toml_gives_a_position() {
        let e = parse_text("[ldap\nurl = 1").unwrap_err();
        assert_eq!(e.line, Some(1));
        let e = parse_text(&MINIMAL.replace("[sync]\ngroups = [\"Team\"]\n", "")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("sync"), "{e}");
    }

    #[test]
    fn secrets_come_from_env_files_or_systemd_credentials_and_never_show() {
        let c = parse_text(MINIMAL).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("ldap-secret") && !shown.contains("cs-secret"), "{shown}");

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ldap-password"), "from-credential\n").unwrap();
        std::fs::write(dir.path().join("cs"), "from-file\n").unwrap();
        let creds = dir.path().to_string_lossy().to_string();
        let env_with_creds = |name: &str| (name == "CREDENTIALS_DIRECTORY").then(|| creds.clone());
        let text = MINIMAL
            .replace("bind_password_env = \"LDAP_PW\"\n", "")
            .replace("password_env = \"CS_PW\"", "password_file = \"$CREDENTIALS_DIRECTORY/cs\"");
        let c = parse(Path::new("x.toml"), &text, &env_with_creds).unwrap();
        use secrecy::ExposeSecret;
        assert_eq!(c.ldap.bind_password.expose_secret(), "from-credential");
        assert_eq!(c.cloudshell.password.expose_secret(), "from-file");

        let e = parse(Path::new("x.toml"), &text, &|_| None).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("ldap.bind_password_file"), "{e}");
        let e = parse_text(&MINIMAL.replace("\"CS_PW\"", "\"UNSET\"")).unwrap_err();
        assert!(e.to_string().contains("UNSET is not set"), "{e}");
    }

    #[test]
    fn a_password_file_readable_by_others_draws_a_warning() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let text = MINIMAL.replace("password_env = \"CS_PW\"", &format!("password_file = \"{}\"", file.display()));
        let c = parse_text(&text).unwrap();
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(c.warnings[0].contains("readable by other users"));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(parse_text(&text).unwrap().warnings.is_empty());
    }

    #[test]
    fn the_example_config_parses() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().to_string_lossy().to_string();
        std::fs::write(dir.path().join("ldap-password"), "a").unwrap();
        std::fs::write(dir.path().join("cloudshell-password"), "b").unwrap();
        let c = parse(Path::new("example.toml"), &text, &|n| (n == "CREDENTIALS_DIRECTORY").then(|| creds.clone()))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.sync.groups, ["Azure_DevOps_Cloud_Admins", "Ops (EU)"]);
        assert_eq!(c.ldap.page_size, 500);
    }
}
