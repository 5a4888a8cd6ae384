//! Validation: the raw tables ([`super::raw`]) checked and turned into the validated [`Config`], one
//! function per table. Every error names the file, the key, and where the key is set (line and column).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use super::raw::{
    Raw, RawCloudShell, RawLdap, RawLeavers, RawLog, RawMapping, RawMonitor, RawNesting, RawSchedule, RawSync, RawUrls,
};
use super::{
    Config, DisabledAccounts, Error, LeaverAction, LeaverPolicy, Mapping, Monitor, ScheduleConfig, SyncPolicy,
};
use crate::cloudshell::{self, AuthScheme};
use crate::group_name::GroupName;
use crate::ldap;
use crate::logging::LogFormat;
use crate::schedule::{self, Schedule};

/// Line and column (1-based) of a byte offset.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
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

/// The smallest request-rate cap that lets a run finish.
const MIN_REQUESTS_PER_SECOND: f64 = 0.1;

/// A URL with any credentials in it blanked, for messages.
fn redacted(url: &Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.to_string()
}

/// Why a URL written without its scheme (`dc1.example.org:389`, which a URL parser reads as the scheme
/// `dc1.example.org`) is refused, with the forms that work: `plain` and `secure` are a scheme and its usual
/// port (`"389"`; `":636"` appended to the host, `""` for none).
fn no_scheme(value: &str, plain: (&str, &str), secure: (&str, &str)) -> String {
    let value = value.trim();
    let host = value.split([':', '/']).next().filter(|h| !h.is_empty()).unwrap_or("host.example.org");
    let with_port =
        if value.contains(':') && !value.starts_with(':') { value.to_string() } else { format!("{host}:{}", plain.1) };
    format!(
        "{value:?} has no scheme: write it as \"{}://{with_port}\", or \"{}://{host}{}\" for TLS",
        plain.0, secure.0, secure.1
    )
}

/// Where `key` is set in the `n`-th (0-based) `[[table]]`, or, without it, where that table starts.
fn locate_array_table(text: &str, table: &str, n: usize, key: &str) -> Option<(usize, usize)> {
    let header = format!("[[{table}]]");
    let mut count = 0;
    let mut inside = false;
    let mut start = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            inside = trimmed.replace(' ', "").starts_with(&header) && {
                count += 1;
                count == n + 1
            };
            if inside {
                start = Some((i + 1, line.len() - trimmed.len() + 1));
            }
            continue;
        }
        if inside
            && let Some(rest) = trimmed.strip_prefix(key)
            && rest.trim_start().starts_with('=')
        {
            return Some((i + 1, line.len() - trimmed.len() + 1));
        }
    }
    start
}

/// Where `[table]`'s header is, as (line, column): where a key missing from it is reported. A table made only
/// by its sub-tables (`[sync.leavers]` with no `[sync]`) is reported at the first of them.
fn locate_table(text: &str, table: &str) -> Option<(usize, usize)> {
    let headers: Vec<(String, (usize, usize))> = text
        .lines()
        .enumerate()
        .filter_map(|(n, line)| {
            let trimmed = line.trim_start();
            let header = trimmed.strip_prefix('[')?.trim_start_matches('[').split(']').next()?.trim().to_string();
            Some((header, (n + 1, line.len() - trimmed.len() + 1)))
        })
        .collect();
    let sub = format!("{table}.");
    headers
        .iter()
        .find(|(h, _)| h == table)
        .or_else(|| headers.iter().find(|(h, _)| h.starts_with(&sub)))
        .map(|(_, at)| *at)
}

pub(super) struct Validator<'a> {
    pub path: &'a Path,
    pub text: &'a str,
    pub env: &'a dyn Fn(&str) -> Option<String>,
    pub warnings: Vec<String>,
    /// Read the password files and variables. Off for `status`, which needs no secret (and may run as a
    /// monitoring user who cannot read them): the passwords are then empty.
    pub read_secrets: bool,
}

/// The longest duration any key accepts: longer ones are typing mistakes, and would overflow arithmetic.
const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);
/// `schedule.watch_delay` at most: a change waits for more changes, not for the schedule.
const MAX_WATCH_DELAY: Duration = Duration::from_secs(600);

/// The longest `monitor.history_retention`: longer is a typing mistake (and "keep forever" is `"0s"`).
const MAX_RETENTION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

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
            Ok(d) if d > MAX_DURATION => Err(self.error(table, key, format!("{value:?} is longer than 30 days"))),
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

    fn non_negative(&self, table: &str, key: &str, value: i64) -> Result<usize, Error> {
        usize::try_from(value).map_err(|_| self.error(table, key, "must not be negative"))
    }

    fn percent(&self, table: &str, key: &str, value: i64) -> Result<u8, Error> {
        u8::try_from(value)
            .ok()
            .filter(|p| *p <= 100)
            .ok_or_else(|| self.error(table, key, format!("must be between 0 and 100, got {value}")))
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
        if !self.read_secrets {
            return Ok(SecretString::from(String::new()));
        }
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
                        // The shipped units load the credentials from the configuration's directory.
                        let beside = crate::files::parent_or_dot(self.path);
                        return Err(self.error(
                            table,
                            &file_key,
                            format!(
                                "uses $CREDENTIALS_DIRECTORY, which is not set: systemd sets it for the shipped units \
                                 (LoadCredential=); for a run by hand, set it to the directory holding the password \
                                 files, such as CREDENTIALS_DIRECTORY={}",
                                beside.display()
                            ),
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
        let contents = crate::files::read_text(&path, crate::files::SECRET_MAX)
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

    /// A required value. A missing key is reported as `table.key` at its table's header, with an example of
    /// the line to add; a missing table (`table` is `""`) with no position, since no line of the file is
    /// wrong, and what the table needs.
    fn required<'v, T>(&self, table: &str, key: &str, example: &str, value: Option<&'v T>) -> Result<&'v T, Error> {
        value.ok_or_else(|| {
            let (key, (line, column), message) = if table.is_empty() {
                (key.to_string(), (None, None), format!("the [{key}] table is missing: add it, with {example}"))
            } else {
                (
                    format!("{table}.{key}"),
                    locate_table(self.text, table).unzip(),
                    format!("missing from [{table}]: add a line such as {example}"),
                )
            };
            Error { file: self.path.to_path_buf(), key: Some(key), line, column, message }
        })
    }

    pub fn validate(mut self, raw: Raw) -> Result<Config, Error> {
        let ldap_table =
            self.required("", "ldap", "url, bind_dn, base_dn and bind_password_file", raw.ldap.as_ref())?;
        let cloudshell_table = self.required("", "cloudshell", "url and password_file", raw.cloudshell.as_ref())?;
        let sync_table = self.required("", "sync", "groups (or [[sync.mapping]] tables)", raw.sync.as_ref())?;
        let ldap = self.ldap(ldap_table)?;
        let (cloudshell, calls) = self.cloudshell(cloudshell_table)?;
        let sync = self.sync(sync_table, calls)?;
        let log_format = self.log(&raw.log)?;
        let schedule = self.schedule(&raw.schedule)?;
        let monitor = self.monitor(&raw.monitor)?;
        if sync.leavers.action == LeaverAction::Deactivate && monitor.state_directory.is_none() {
            return Err(self.error(
                "sync.leavers",
                "action",
                "\"deactivate\" needs a state directory to know which users it manages: set [monitor] \
                 state_directory (systemd's StateDirectory= sets it for the shipped units)",
            ));
        }
        if sync.remove_from_groups && monitor.state_directory.is_none() {
            return Err(self.error(
                "sync",
                "remove_from_groups",
                "true needs a state directory: the shrink guard kept there is what stops a directory group that \
                 reads empty or short (an ACL change, a broken nested group) from emptying its CloudShell groups; \
                 set [monitor] state_directory (systemd's StateDirectory= sets it for the shipped units)",
            ));
        }
        if sync.disabled_accounts == Some(DisabledAccounts::ImportThenDeactivate) && monitor.state_directory.is_none() {
            return Err(self.error(
                "sync",
                "disabled_accounts",
                "\"import_then_deactivate\" needs a state directory to record the accounts it deactivates (and \
                 reactivate them when they are enabled again): set [monitor] state_directory (systemd's \
                 StateDirectory= sets it for the shipped units), or use \"per_user\"",
            ));
        }
        Ok(Config {
            path: self.path.to_path_buf(),
            ldap,
            cloudshell,
            sync,
            schedule,
            monitor,
            log_format,
            warnings: self.warnings,
            // Set by `config::parse`, from the settings as written.
            fingerprint: String::new(),
        })
    }

    fn ldap(&mut self, l: &RawLdap) -> Result<ldap::Settings, Error> {
        let urls = self.ldap_urls(l)?;
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
        let bind_dn = self.required("ldap", "bind_dn", "bind_dn = \"cn=svc,dc=example,dc=org\"", l.bind_dn.as_ref())?;
        let base_dn = self.required("ldap", "base_dn", "base_dn = \"dc=example,dc=org\"", l.base_dn.as_ref())?;
        for (key, value) in [("bind_dn", bind_dn), ("base_dn", base_dn)] {
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
        let nesting = self.nesting(&l.nested_groups)?;
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
        Ok(ldap::Settings {
            urls: urls.iter().map(|u| u.trim_end_matches('/').to_string()).collect(),
            connect_retries,
            starttls: l.starttls,
            ca_file: l.ca_file.clone(),
            danger_skip_tls_verify: l.danger_skip_tls_verify,
            bind_dn: bind_dn.clone(),
            bind_password,
            base_dn: base_dn.clone(),
            user_filter: l.user_filter.clone(),
            group_filter: l.group_filter.clone(),
            username_attribute: l.username_attribute.clone(),
            group_name_attribute: l.group_name_attribute.clone(),
            member_attribute: l.member_attribute.clone(),
            display_name_attribute: l.display_name_attribute.clone(),
            email_attribute: l.email_attribute.clone(),
            page_size,
            timeout: ldap_timeout,
            max_message_bytes: (self.positive("ldap", "max_message_mib", l.max_message_mib, 4096)? as u64) << 20,
            nesting,
            include_disabled: l.include_disabled,
            member_range_size,
            max_nesting_depth,
            progress_every: crate::progress::EVERY,
            change_detection: self.change_detection(l)?,
        })
    }

    /// `ldap.url`: one URL or a list, each `ldap://` or `ldaps://` with a host and no credentials.
    fn ldap_urls(&mut self, l: &RawLdap) -> Result<Vec<String>, Error> {
        let urls: Vec<String> =
            match self.required("ldap", "url", "url = \"ldaps://dc1.example.org:636\"", l.url.as_ref())? {
                RawUrls::One(u) => vec![u.clone()],
                RawUrls::Many(list) => list.clone(),
            };
        if urls.is_empty() {
            return Err(self.error("ldap", "url", "lists no URL"));
        }
        for url in &urls {
            if !url.contains("://") {
                return Err(self.error("ldap", "url", no_scheme(url, ("ldap", "389"), ("ldaps", ":636"))));
            }
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
                return Err(self.error("ldap", "url", format!("{:?} names no host", redacted(&parsed))));
            }
            if !parsed.username().is_empty() || parsed.password().is_some() {
                // Never echo it: the URL holds a secret.
                return Err(self.error(
                    "ldap",
                    "url",
                    format!("{:?} carries credentials; use ldap.bind_dn and bind_password_file", redacted(&parsed)),
                ));
            }
            if parsed.scheme() == "ldap" && !l.starttls {
                self.warnings.push(format!(
                    "ldap.url {url} is plain ldap:// without starttls: the bind password crosses the network in clear"
                ));
            }
            if l.starttls && parsed.scheme() == "ldaps" {
                return Err(self.error(
                    "ldap",
                    "starttls",
                    "StartTLS upgrades ldap:// connections; ldaps:// is TLS already",
                ));
            }
        }
        Ok(urls)
    }

    /// `ldap.change_detection`: a method this version reads changes with, `auto` or `off`.
    fn change_detection(&self, l: &RawLdap) -> Result<ldap::ChangeDetection, Error> {
        // Checked whatever the method, so that a bad margin is named before it is used.
        let margin = self.duration("ldap", "modify_timestamp_margin", &l.modify_timestamp_margin)?;
        let value = &l.change_detection;
        match value.to_ascii_lowercase().as_str() {
            "auto" => Ok(ldap::ChangeDetection::Auto),
            "off" => Ok(ldap::ChangeDetection::Off),
            "syncrepl" => Ok(ldap::ChangeDetection::Syncrepl),
            "modify_timestamp" => Ok(ldap::ChangeDetection::ModifyTimestamp { margin }),
            "dirsync" => Ok(ldap::ChangeDetection::Dirsync),
            "usn" => Ok(ldap::ChangeDetection::Usn),
            _ => Err(self.error(
                "ldap",
                "change_detection",
                format!(
                    "must be \"auto\", \"off\", \"syncrepl\", \"dirsync\", \"usn\" or \"modify_timestamp\", got \
                     {value:?}"
                ),
            )),
        }
    }

    /// `ldap.nested_groups`: true, false or a mode's name.
    fn nesting(&self, nested_groups: &RawNesting) -> Result<ldap::Nesting, Error> {
        Ok(match nested_groups {
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
        })
    }

    /// The client's settings, and `concurrency` and `membership_batch_size` (which the sync policy carries).
    fn cloudshell(&mut self, c: &RawCloudShell) -> Result<(cloudshell::Settings, (usize, usize)), Error> {
        let raw_url =
            self.required("cloudshell", "url", "url = \"http://cloudshell.example.org:9000\"", c.url.as_ref())?;
        if !raw_url.contains("://") {
            return Err(self.error("cloudshell", "url", no_scheme(raw_url, ("http", "9000"), ("https", ""))));
        }
        let url = Url::parse(raw_url)
            .map_err(|e| self.error("cloudshell", "url", format!("{raw_url:?} is not a URL: {e}")))?;
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
        if url.scheme() == "http" {
            self.warnings.push(format!(
                "cloudshell.url {url} is plain http://: the admin password and the token cross the network in clear \
                 (CloudShell's API is http on port 9000 unless the site set up TLS)"
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
        // Below one request every 10 s a run pages nothing in a useful time (1e-9 would wait 30 years).
        let rate = c.max_requests_per_second;
        if !(rate.is_finite() && (rate == 0.0 || rate >= MIN_REQUESTS_PER_SECOND)) {
            return Err(self.error(
                "cloudshell",
                "max_requests_per_second",
                format!(
                    "must be 0 (no cap) or at least {MIN_REQUESTS_PER_SECOND} (one request every 10 s), got {rate}"
                ),
            ));
        }
        if let Some(ca) = &c.ca_file
            && !ca.exists()
        {
            return Err(self.error("cloudshell", "ca_file", format!("{} does not exist", ca.display())));
        }
        let password = self.secret(
            "cloudshell",
            "password",
            c.password_file.as_deref(),
            c.password_env.as_deref(),
            "cloudshell-password",
        )?;
        let settings = cloudshell::Settings {
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
            max_answer_bytes: (self.positive("cloudshell", "max_answer_mib", c.max_answer_mib, 4096)? as u64) << 20,
            ca_file: c.ca_file.clone(),
            progress_every: crate::progress::EVERY,
        };
        let batch = self.positive("cloudshell", "membership_batch_size", c.membership_batch_size, 1000)? as usize;
        Ok((settings, (concurrency, batch)))
    }

    /// A directory or CloudShell group name: not blank, no control character.
    fn group_name(&self, table: &str, key: &str, name: &str) -> Result<(), Error> {
        if name.trim().is_empty() {
            return Err(self.error(table, key, "holds an empty group name"));
        }
        if name.chars().any(char::is_control) {
            return Err(self.error(table, key, format!("group name {name:?} holds a control character")));
        }
        Ok(())
    }

    fn sync(&mut self, s: &RawSync, (concurrency, membership_batch_size): (usize, usize)) -> Result<SyncPolicy, Error> {
        let listed = match (&s.groups, s.mapping.is_empty()) {
            (Some(groups), _) => groups.clone(),
            (None, true) => self
                .required("sync", "groups", "groups = [\"Team\"] (or a [[sync.mapping]] table)", None::<&Vec<String>>)?
                .clone(),
            (None, false) => Vec::new(),
        };
        if listed.is_empty() && s.mapping.is_empty() {
            return Err(self.error("sync", "groups", "lists no group"));
        }
        let mut seen = std::collections::HashSet::new();
        let mut groups = Vec::with_capacity(listed.len());
        for g in &listed {
            self.group_name("sync", "groups", g)?;
            let name = GroupName::new(g);
            if !seen.insert(name.clone()) {
                return Err(self.error("sync", "groups", format!("lists {g:?} twice")));
            }
            groups.push(name);
        }
        let mappings = self.mappings(&s.mapping)?;
        for m in &mappings {
            if seen.insert(m.directory_group.clone()) {
                groups.push(m.directory_group.clone());
            }
        }
        let max_imports_per_run = self.non_negative("sync", "max_imports_per_run", s.max_imports_per_run)?;
        let max_removals_per_run = self.non_negative("sync", "max_removals_per_run", s.max_removals_per_run)?;
        let max_removals_per_day = self.non_negative("sync", "max_removals_per_day", s.max_removals_per_day)?;
        let max_shrink_percent = self.percent("sync", "max_shrink_percent", s.max_shrink_percent)?;
        let leavers = self.leavers(&s.leavers)?;
        let disabled_accounts = match s.disabled_accounts.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None => None,
            Some("import_then_deactivate") => Some(DisabledAccounts::ImportThenDeactivate),
            Some("per_user") => Some(DisabledAccounts::PerUser),
            Some(_) => {
                return Err(self.error(
                    "sync",
                    "disabled_accounts",
                    format!("must be \"import_then_deactivate\" or \"per_user\", got {:?}", s.disabled_accounts),
                ));
            }
        };
        let max_disabled_deactivations_per_run =
            self.non_negative("sync", "max_disabled_deactivations_per_run", s.max_disabled_deactivations_per_run)?;
        let run_timeout = self.duration("sync", "run_timeout", &s.run_timeout)?;
        let full_sync_every = match humantime::parse_duration(&s.full_sync_every) {
            // Longer is a typing mistake, and a change read must not start from a watermark older than the
            // directory keeps what was deleted (Active Directory's tombstone lifetime: 60 days at the least).
            Ok(d) if d > MAX_DURATION => {
                let why = format!("{:?} is longer than 30 days (a full read at least monthly)", s.full_sync_every);
                return Err(self.error("sync", "full_sync_every", why));
            }
            Ok(d) => d,
            Err(e) => {
                return Err(self.error(
                    "sync",
                    "full_sync_every",
                    format!("{:?} is not a duration like \"0s\", \"30m\" or \"6h\": {e}", s.full_sync_every),
                ));
            }
        };
        Ok(SyncPolicy {
            full_sync_every,
            run_timeout,
            disabled_accounts,
            max_disabled_deactivations_per_run,
            leavers,
            groups,
            mappings,
            remove_from_groups: s.remove_from_groups,
            max_removals_per_run,
            max_removals_per_day,
            membership_batch_size,
            max_imports_per_run,
            concurrency,
            max_shrink_percent,
        })
    }

    fn leavers(&self, l: &RawLeavers) -> Result<LeaverPolicy, Error> {
        let t = "sync.leavers";
        let action = match l.action.to_ascii_lowercase().as_str() {
            "ignore" => LeaverAction::Ignore,
            "report" => LeaverAction::Report,
            "deactivate" => LeaverAction::Deactivate,
            _ => {
                return Err(self.error(
                    t,
                    "action",
                    format!("must be \"ignore\", \"report\" or \"deactivate\", got {:?}", l.action),
                ));
            }
        };
        let grace_runs = self.positive(t, "grace_runs", l.grace_runs, 1000)? as u32;
        let grace_period = self.grace_period(t, &l.grace_period)?;
        let max_per_run = self.non_negative(t, "max_per_run", l.max_per_run)?;
        let max_percent = self.percent(t, "max_percent", l.max_percent)?;
        let max_per_day = self.non_negative(t, "max_per_day", l.max_per_day)?;
        let max_percent_per_day = self.percent(t, "max_percent_per_day", l.max_percent_per_day)?;
        let mut set = globset::GlobSetBuilder::new();
        for pattern in &l.protect {
            // Folded, as the names it is matched against (`LeaverPolicy::protects`).
            let glob = globset::GlobBuilder::new(&crate::username::fold(pattern.trim()))
                .case_insensitive(true)
                .literal_separator(false)
                .build()
                .map_err(|e| self.error(t, "protect", format!("{pattern:?} is not a glob pattern: {e}")))?;
            set.add(glob);
        }
        let protect = set.build().map_err(|e| self.error(t, "protect", e.to_string()))?;
        Ok(LeaverPolicy {
            action,
            grace_runs,
            grace_period,
            max_per_run,
            max_percent,
            max_per_day,
            max_percent_per_day,
            protect_patterns: l.protect.clone(),
            protect,
            reactivate: l.reactivate,
        })
    }

    /// `sync.leavers.grace_period`: zero allowed (no wait in time), at most a year (longer is a typing mistake).
    fn grace_period(&self, table: &str, value: &str) -> Result<Duration, Error> {
        const YEAR: Duration = Duration::from_secs(366 * 24 * 60 * 60);
        match humantime::parse_duration(value) {
            Ok(d) if d > YEAR => Err(self.error(table, "grace_period", format!("{value:?} is longer than a year"))),
            Ok(d) => Ok(d),
            Err(e) => Err(self.error(
                table,
                "grace_period",
                format!("{value:?} is not a duration like \"0s\", \"12h\" or \"7d\": {e}"),
            )),
        }
    }

    /// `[[sync.mapping]]` tables: names checked like `sync.groups`; the same directory group mapped to the
    /// same CloudShell group twice is an error at the second mapping.
    fn mappings(&self, raw: &[RawMapping]) -> Result<Vec<Mapping>, Error> {
        let mut pairs = std::collections::HashSet::new();
        let mut out = Vec::with_capacity(raw.len());
        for (n, m) in raw.iter().enumerate() {
            let at = |key: &str, message: String| {
                let (line, column) = locate_array_table(self.text, "sync.mapping", n, key).unzip();
                Error {
                    file: self.path.to_path_buf(),
                    key: Some(format!("sync.mapping.{key}")),
                    line,
                    column,
                    message: format!("[[sync.mapping]] number {}: {message}", n + 1),
                }
            };
            let directory_group = m.directory_group.as_ref().ok_or_else(|| {
                at("directory_group", "missing: add a line such as directory_group = \"Team\"".into())
            })?;
            let cloudshell_groups = m.cloudshell_groups.as_ref().ok_or_else(|| {
                at("cloudshell_groups", "missing: add a line such as cloudshell_groups = [\"Lab Users\"]".into())
            })?;
            self.group_name("sync", "mapping", directory_group).map_err(|e| at("directory_group", e.message))?;
            if cloudshell_groups.is_empty() {
                return Err(at("cloudshell_groups", "lists no CloudShell group".into()));
            }
            let directory = GroupName::new(directory_group);
            for c in cloudshell_groups {
                self.group_name("sync", "mapping", c).map_err(|e| at("cloudshell_groups", e.message))?;
                if !pairs.insert((directory.clone(), c.trim().to_lowercase())) {
                    return Err(at(
                        "cloudshell_groups",
                        format!("maps {directory_group:?} to the CloudShell group {c:?} again"),
                    ));
                }
            }
            out.push(Mapping { directory_group: directory, cloudshell_groups: cloudshell_groups.clone() });
        }
        Ok(out)
    }

    fn log(&self, l: &RawLog) -> Result<Option<LogFormat>, Error> {
        match l.format.as_deref() {
            None => Ok(None),
            Some("text") => Ok(Some(LogFormat::Text)),
            Some("json") => Ok(Some(LogFormat::Json)),
            Some(other) => Err(self.error("log", "format", format!("must be \"text\" or \"json\", got {other:?}"))),
        }
    }

    fn schedule(&self, s: &RawSchedule) -> Result<ScheduleConfig, Error> {
        let schedule = Schedule::parse(&s.cron, &s.timezone).map_err(|e| {
            let key = match e {
                schedule::Error::TimeZone { .. } => "timezone",
                schedule::Error::Cron { .. } | schedule::Error::NeverFires { .. } => "cron",
            };
            self.error("schedule", key, e.to_string())
        })?;
        let watch_delay = match humantime::parse_duration(&s.watch_delay) {
            Ok(d) if d <= MAX_WATCH_DELAY => d,
            Ok(_) => {
                return Err(self.error(
                    "schedule",
                    "watch_delay",
                    format!("{:?} is longer than 10 minutes", s.watch_delay),
                ));
            }
            Err(e) => {
                let why = format!("{:?} is not a duration like \"500ms\" or \"2s\": {e}", s.watch_delay);
                return Err(self.error("schedule", "watch_delay", why));
            }
        };
        Ok(ScheduleConfig { schedule, run_on_start: s.run_on_start, watch: s.watch, watch_delay })
    }

    fn monitor(&self, m: &RawMonitor) -> Result<Monitor, Error> {
        let listen = match &m.listen {
            None => None,
            Some(l) => Some(l.parse::<SocketAddr>().map_err(|e| {
                self.error("monitor", "listen", format!("{l:?} is not an address like \"127.0.0.1:9464\": {e}"))
            })?),
        };
        let from_systemd = (self.env)("STATE_DIRECTORY").and_then(|d| d.split(':').next().map(PathBuf::from));
        let history_retention = match &m.history_retention {
            None => Some(super::DEFAULT_HISTORY_RETENTION),
            Some(value) => self.retention(value)?,
        };
        Ok(Monitor { listen, state_directory: m.state_directory.clone().or(from_systemd), history_retention })
    }

    /// `monitor.history_retention`: a duration of days or years rather than seconds (so not [`Self::duration`],
    /// which caps at 30 days); `"0s"` keeps every row (`None`).
    fn retention(&self, value: &str) -> Result<Option<Duration>, Error> {
        match humantime::parse_duration(value) {
            Ok(d) if d.is_zero() => Ok(None),
            Ok(d) if d > MAX_RETENTION => Err(self.error(
                "monitor",
                "history_retention",
                format!("{value:?} is longer than 100 years: write \"0s\" to keep every row"),
            )),
            Ok(d) => Ok(Some(d)),
            Err(e) => Err(self.error(
                "monitor",
                "history_retention",
                format!("{value:?} is not a duration like \"400d\" or \"2years\" (\"0s\" keeps every row): {e}"),
            )),
        }
    }
}
