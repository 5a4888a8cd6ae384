//! The configuration file: read in two stages, a raw TOML shape that rejects unknown keys ([`raw`], where
//! every key and default is documented), then a validated [`Config`] ([`validate`]: URLs and durations
//! parsed, secrets read). Downstream code never re-parses a string. Errors name the file, the key, the line
//! and the column, in an operator's words ([`explain`] rewrites the deserialiser's). Secrets never reach `Debug`
//! output.

mod explain;
mod raw;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::cloudshell;
use crate::group_name::GroupName;
use crate::ldap;
use crate::logging::LogFormat;
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

// ---------------------------------------------------------------- validated shape

/// A directory group and the CloudShell groups its effective members belong in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub directory_group: GroupName,
    pub cloudshell_groups: Vec<String>,
}

/// What to do about users who left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaverAction {
    /// Skip the step.
    Ignore,
    /// List leavers in the report and logs; write nothing.
    Report,
    /// Deactivate them in CloudShell (`IsActive = false`).
    Deactivate,
}

impl LeaverAction {
    /// The name in the configuration and the report.
    pub fn as_str(self) -> &'static str {
        match self {
            LeaverAction::Ignore => "ignore",
            LeaverAction::Report => "report",
            LeaverAction::Deactivate => "deactivate",
        }
    }
}

/// How a group holding disabled directory accounts is imported (`sync.disabled_accounts`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DisabledAccounts {
    /// By the group's name; then the disabled accounts are deactivated in CloudShell.
    ImportThenDeactivate,
    /// Member by member, so the disabled accounts are never imported.
    #[default]
    PerUser,
}

impl DisabledAccounts {
    /// The name in the configuration and the report.
    pub fn as_str(self) -> &'static str {
        match self {
            DisabledAccounts::ImportThenDeactivate => "import_then_deactivate",
            DisabledAccounts::PerUser => "per_user",
        }
    }
}

/// `[sync.leavers]`, validated.
#[derive(Clone, Debug)]
pub struct LeaverPolicy {
    pub action: LeaverAction,
    /// Consecutive complete runs as a leaver before any action.
    pub grace_runs: u32,
    /// ... and this long since the leaver streak began (`sync.leavers.grace_period`; zero: no wait in time).
    pub grace_period: std::time::Duration,
    pub max_per_run: usize,
    pub max_percent: u8,
    /// Deactivations (leavers and disabled accounts) in any 24 hours.
    pub max_per_day: usize,
    /// ... as a percentage of the managed users active in CloudShell now.
    pub max_percent_per_day: u8,
    /// `protect`, as written (for messages) and compiled (case-insensitive globs).
    pub protect_patterns: Vec<String>,
    pub protect: globset::GlobSet,
    pub reactivate: bool,
}

impl LeaverPolicy {
    /// Whether `username` matches a `protect` pattern (both folded, as usernames compare: NFC, lower case).
    pub fn protects(&self, username: &str) -> bool {
        self.protect.is_match(crate::username::fold(username))
    }

    /// A policy for unit tests: `action`, one grace run, no limits, reactivation on, and `protect` compiled as
    /// the configuration compiles it.
    #[cfg(test)]
    pub fn for_tests(action: LeaverAction, protect: &[&str]) -> LeaverPolicy {
        let mut set = globset::GlobSetBuilder::new();
        for p in protect {
            let p = crate::username::fold(p);
            set.add(globset::GlobBuilder::new(&p).case_insensitive(true).build().expect("a test's glob"));
        }
        LeaverPolicy {
            action,
            grace_runs: 1,
            grace_period: std::time::Duration::ZERO,
            max_per_run: 0,
            max_percent: 0,
            max_per_day: usize::MAX,
            max_percent_per_day: 100,
            protect_patterns: protect.iter().map(|p| p.to_string()).collect(),
            protect: set.build().expect("a test's globs"),
            reactivate: true,
        }
    }
}

/// What a sync run may do.
#[derive(Clone, Debug)]
pub struct SyncPolicy {
    /// Directory group names to enumerate and import, in order: `sync.groups`, then the mapped ones not
    /// already there.
    pub groups: Vec<GroupName>,
    /// `[[sync.mapping]]`, in order.
    pub mappings: Vec<Mapping>,
    /// Remove directory users from mapped CloudShell groups they no longer belong in.
    pub remove_from_groups: bool,
    /// More planned removals than this hold every removal.
    pub max_removals_per_run: usize,
    /// More removals in any 24 hours than this hold every removal of the run that would pass it.
    pub max_removals_per_day: usize,
    /// A full read at least this often between the daemon's change reads (zero: every run).
    pub full_sync_every: std::time::Duration,
    /// Users per group-membership call.
    pub membership_batch_size: usize,
    /// Users who left.
    pub leavers: LeaverPolicy,
    /// More planned user imports than this hold every write.
    pub max_imports_per_run: usize,
    /// Per-user imports in flight at once.
    pub concurrency: usize,
    /// A group whose membership shrank by more than this percentage since the last good run is held.
    pub max_shrink_percent: u8,
    /// `sync.disabled_accounts` as configured; unset, it depends on the state directory
    /// ([`SyncPolicy::disabled_accounts`]).
    pub disabled_accounts: Option<DisabledAccounts>,
    /// More deactivations of disabled accounts than this hold them.
    pub max_disabled_deactivations_per_run: usize,
    /// A run still going after this long stops as if asked to (SIGTERM).
    pub run_timeout: std::time::Duration,
}

impl SyncPolicy {
    /// The mode in force: as configured, else `import_then_deactivate` with a state directory (the deactivated
    /// accounts are recorded there, to be reactivated when enabled again) and `per_user` without one.
    pub fn disabled_accounts(&self, has_state_directory: bool) -> DisabledAccounts {
        self.disabled_accounts.unwrap_or(if has_state_directory {
            DisabledAccounts::ImportThenDeactivate
        } else {
            DisabledAccounts::PerUser
        })
    }
}

/// The schedule of the daemon (`run`).
#[derive(Clone, Debug)]
pub struct ScheduleConfig {
    pub schedule: Schedule,
    pub run_on_start: bool,
    /// `watch`: a change the directory announces starts a run, `watch_delay` later.
    pub watch: bool,
    pub watch_delay: std::time::Duration,
}

/// Status and metrics for monitoring.
#[derive(Clone, Debug)]
pub struct Monitor {
    /// Where `/metrics` and `/healthz` are served, if anywhere.
    pub listen: Option<SocketAddr>,
    /// `[monitor] state_directory`, else `$STATE_DIRECTORY` (systemd's `StateDirectory=`), else none.
    pub state_directory: Option<PathBuf>,
    /// How long the audit trail keeps a row (`[monitor] history_retention`); `None`: every row is kept
    /// (`"0s"`).
    pub history_retention: Option<std::time::Duration>,
}

/// `[monitor] history_retention` when the file does not set it: 400 days, a year and a margin, so that "what
/// happened to this account last year" can still be answered.
pub const DEFAULT_HISTORY_RETENTION: std::time::Duration = std::time::Duration::from_secs(400 * 24 * 3600);

impl Monitor {
    /// The time before which audit rows are pruned at `now` (RFC 3339, UTC, seconds, as the rows' times are
    /// written); `None` when every row is kept. Never within the last 24 hours, whatever the retention: the
    /// daily budgets count those rows.
    pub fn prune_before(&self, now: chrono::DateTime<chrono::Utc>) -> Option<String> {
        let retention = chrono::Duration::from_std(self.history_retention?).ok()?.max(chrono::Duration::days(1));
        let before = now.checked_sub_signed(retention)?;
        Some(before.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    }

    /// The state directory the daemon and `status` use: the configured one, else systemd's, else
    /// [`DEFAULT_STATE_DIRECTORY`]. (`sync` keeps state only where one is configured.)
    pub fn state_directory_or_default(&self) -> PathBuf {
        self.state_directory.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIRECTORY))
    }
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
    /// A fingerprint of every setting as written (comments and layout apart; no secret is in it): a directory
    /// model stored under another one is not used (`sync::changes`).
    pub fingerprint: String,
}

/// Reads and validates the configuration file at `path`.
pub fn load(path: &Path) -> Result<Config, Error> {
    let text = read(path)?;
    parse(path, &text, &|name| std::env::var(name).ok())
}

fn read(path: &Path) -> Result<String, Error> {
    crate::files::read_text(path, crate::files::CONFIG_MAX).map_err(|e| Error {
        file: path.to_path_buf(),
        key: None,
        line: None,
        column: None,
        message: format!("cannot read the configuration: {e}"),
    })
}

/// Reads and validates the configuration file at `path` without reading any secret: for commands that
/// contact no server (`status`). The passwords of the result are empty.
pub fn load_without_secrets(path: &Path) -> Result<Config, Error> {
    let text = read(path)?;
    parse_with(path, &text, &|name| std::env::var(name).ok(), false)
}

/// A small valid configuration for unit tests: the group `Team`, `ldap` lines added to `[ldap]`, and `rest` after
/// `[sync]`'s groups (more `[sync]` keys, then other tables).
#[cfg(test)]
pub fn for_tests(ldap: &str, rest: &str) -> Config {
    let text = format!(
        "[ldap]\nurl = \"ldap://127.0.0.1:1\"\nbind_dn = \"cn=sync\"\nbind_password_env = \"P\"\n\
         base_dn = \"dc=example,dc=org\"\n{ldap}\n\n[cloudshell]\nurl = \"http://127.0.0.1:1\"\nusername = \"admin\"\n\
         password_env = \"P\"\n\n[sync]\ngroups = [\"Team\"]\n{rest}"
    );
    parse(Path::new("config.toml"), &text, &|_| Some("secret".into())).unwrap()
}

/// Parses and validates configuration text; `env` reads environment variables (a parameter for tests).
pub fn parse(path: &Path, text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, Error> {
    parse_with(path, text, env, true)
}

fn parse_with(
    path: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    read_secrets: bool,
) -> Result<Config, Error> {
    let document = toml::Deserializer::parse(text).map_err(|e| {
        let (line, column) = e.span().map(|s| validate::line_col(text, s.start)).unzip();
        Error { file: path.to_path_buf(), key: None, line, column, message: e.message().trim().to_string() }
    })?;
    let raw: raw::Raw = serde_path_to_error::deserialize(document).map_err(|e| {
        // The path names the key being read when the error came (an unknown key: that key itself), and which
        // item of a list or which [[table]] it was in.
        let mut keys: Vec<String> = Vec::new();
        let mut item = None;
        for segment in e.path().iter() {
            match segment {
                serde_path_to_error::Segment::Map { key } => keys.push(key.clone()),
                serde_path_to_error::Segment::Seq { index } => item = Some((keys.len(), *index)),
                _ => {}
            }
        }
        let inner = e.into_inner();
        let value = inner.span().and_then(|s| text.get(s));
        let table = match keys.len() {
            0 | 1 => String::new(),
            n if item.is_some_and(|(at, _)| at == n - 1) => format!("[[{}]]", keys[..n - 1].join(".")),
            n => format!("[{}]", keys[..n - 1].join(".")),
        };
        let mut message = explain::message(inner.message().trim(), &table, value);
        match item {
            Some((at, index)) if at == keys.len() => message = format!("item {} of the list: {message}", index + 1),
            Some((at, index)) => message = format!("[[{}]] number {}: {message}", keys[..at].join("."), index + 1),
            None => {}
        }
        let (line, column) = inner.span().map(|s| validate::line_col(text, s.start)).unzip();
        let key = (!keys.is_empty()).then(|| keys.join("."));
        Error { file: path.to_path_buf(), key, line, column, message }
    })?;
    let fingerprint = fingerprint(&raw);
    let config = validate::Validator { path, text, env, warnings: Vec::new(), read_secrets }.validate(raw)?;
    Ok(Config { fingerprint, ..config })
}

/// The settings as parsed, hashed: their `Debug` form holds every key's value (the file names and environment
/// variable names of secrets, never a secret) in a fixed order.
fn fingerprint(raw: &raw::Raw) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    format!("{raw:?}").hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloudshell::AuthScheme;
    use std::time::Duration;

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
    fn the_fingerprint_follows_the_settings_not_the_layout_nor_a_matcher_used() {
        let base = parse_text(MINIMAL).unwrap();
        let laid_out = parse_text(&format!("# the directory\n{}\n\n", MINIMAL.replace(" = ", "  =  "))).unwrap();
        assert_eq!(base.fingerprint, laid_out.fingerprint, "comments and spacing are no setting");
        let changed = parse_text(&MINIMAL.replace("[sync]\n", "[sync]\nfull_sync_every = \"1h\"\n")).unwrap();
        assert_ne!(base.fingerprint, changed.fingerprint, "a setting changed");
        let protect = format!("{MINIMAL}\n[sync.leavers]\nprotect = [\"svc-*\"]\n");
        let (first, second) = (parse_text(&protect).unwrap(), parse_text(&protect).unwrap());
        // A matcher used (its cache filled) changes nothing: the fingerprint is of the settings as written.
        assert!(first.sync.leavers.protects("svc-backup"));
        assert_eq!(first.fingerprint, second.fingerprint);
        assert_ne!(first.fingerprint, base.fingerprint);
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
        assert_eq!(c.monitor.history_retention, Some(Duration::from_secs(400 * 86400)));
        assert!(c.schedule.run_on_start);
    }

    #[test]
    fn history_retention_takes_days_or_years_and_zero_keeps_every_row() {
        let with = |value: &str| parse_text(&format!("{MINIMAL}\n[monitor]\nhistory_retention = {value:?}\n"));
        let monitor = with("90d").unwrap().monitor;
        assert_eq!(monitor.history_retention, Some(Duration::from_secs(90 * 86400)));
        let now = chrono::DateTime::parse_from_rfc3339("2026-04-01T12:00:00.5Z").unwrap().to_utc();
        assert_eq!(
            monitor.prune_before(now).as_deref(),
            Some("2026-01-01T12:00:00Z"),
            "as the rows' times are written"
        );
        assert_eq!(with("2years").unwrap().monitor.history_retention, Some(Duration::from_secs(2 * 31_557_600)));
        let hour = with("1h").unwrap().monitor;
        let kept = "the last 24 hours are kept: the daily budgets count them";
        assert_eq!(hour.prune_before(now).as_deref(), Some("2026-03-31T12:00:00Z"), "{kept}");
        let forever = with("0s").unwrap().monitor;
        assert_eq!((forever.history_retention, forever.prune_before(now)), (None, None), "nothing pruned");

        let e = with("a year").unwrap_err();
        assert_eq!((e.key.as_deref(), e.line), (Some("monitor.history_retention"), Some(16)), "{e}");
        assert!(e.to_string().contains("not a duration like \"400d\"") && e.to_string().contains("\"0s\""), "{e}");
        let e = with("200years").unwrap_err();
        assert!(e.to_string().contains("longer than 100 years"), "{e}");
    }

    #[test]
    fn unknown_keys_are_refused_with_file_key_line_and_column() {
        let text = MINIMAL.replace("[sync]\n", "[sync]\ngrups = [\"x\"]\n");
        let e = parse_text(&text).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("sync.grups"));
        assert_eq!((e.line, e.column), (Some(13), Some(1)));
        let shown = e.to_string();
        assert_eq!(shown, "/etc/x.toml:13:1: key sync.grups: not a key of [sync]; did you mean groups?");
        // In a [[table]], the table's number is named.
        let text = format!("{MINIMAL}\n[[sync.mapping]]\ndirectory_grup = \"Eng\"\n");
        let e = parse_text(&text).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("sync.mapping.directory_grup"), "{e}");
        assert!(
            e.to_string()
                .ends_with("[[sync.mapping]] number 1: not a key of [[sync.mapping]]; did you mean directory_group?"),
            "{e}"
        );
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
        // Run by hand, the installed configuration says how to point it at the password files.
        let installed =
            text.replace("[ldap]\n", "[ldap]\nbind_password_file = \"$CREDENTIALS_DIRECTORY/ldap-password\"\n");
        let e = parse(Path::new("/etc/cloudshell-ldap-sync/config.toml"), &installed, &|_| None).unwrap_err();
        assert!(e.to_string().contains("CREDENTIALS_DIRECTORY=/etc/cloudshell-ldap-sync"), "{e}");
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
        let about_the_file = |c: &Config| c.warnings.iter().filter(|w| w.contains("readable by other users")).count();
        assert_eq!(about_the_file(&parse_text(&text).unwrap()), 1);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(about_the_file(&parse_text(&text).unwrap()), 0);
    }

    /// Configured group names as written.
    fn texts(groups: &[GroupName]) -> Vec<&str> {
        groups.iter().map(GroupName::as_str).collect()
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
        assert_eq!(texts(&c.sync.groups), ["Azure_DevOps_Cloud_Admins", "Ops (EU)"]);
        assert_eq!(c.ldap.page_size, 500);
        // Installed as /etc/cloudshell-ldap-sync/config.toml: its example mappings are commented out, so that
        // `check` does not report their CloudShell groups missing; uncommented, they parse.
        assert!(c.sync.mappings.is_empty(), "{:?}", c.sync.mappings);
        let uncommented = text
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest)
                    if ["[[sync.mapping]]", "directory_group =", "cloudshell_groups ="]
                        .iter()
                        .any(|p| rest.starts_with(p)) =>
                {
                    rest
                }
                _ if l == "#" => "",
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let with_mappings =
            parse(Path::new("example.toml"), &uncommented, &|n| (n == "CREDENTIALS_DIRECTORY").then(|| creds.clone()))
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(with_mappings.sync.mappings.len(), 2);
        assert_eq!(with_mappings.sync.mappings[0].cloudshell_groups, ["Lab Users", "DevOps"]);
        assert_eq!(c.cloudshell.timeout, std::time::Duration::from_secs(30));
        // The oneshot unit's TimeoutStartSec is checked against the example's (tests/systemd_units.rs).
        assert_eq!(c.sync.run_timeout, parse_text(MINIMAL).unwrap().sync.run_timeout);
    }

    #[test]
    fn the_installed_config_names_the_services_state_directory_so_runs_by_hand_plan_as_the_service() {
        // Installed as /etc/cloudshell-ldap-sync/config.toml. Before, it named none: by hand (no
        // $STATE_DIRECTORY) a dry run planned "per_user" while the unit used "import_then_deactivate", and
        // `action = "deactivate"` failed `check` with exit 2.
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().to_string_lossy().to_string();
        std::fs::write(dir.path().join("ldap-password"), "a").unwrap();
        std::fs::write(dir.path().join("cloudshell-password"), "b").unwrap();
        // No $STATE_DIRECTORY: a root shell's environment.
        let by_hand = |text: &str| {
            parse(Path::new("example.toml"), text, &|n| (n == "CREDENTIALS_DIRECTORY").then(|| creds.clone()))
                .unwrap_or_else(|e| panic!("{e}"))
        };
        let c = by_hand(&text);
        assert_eq!(c.monitor.state_directory.as_deref(), Some(Path::new(DEFAULT_STATE_DIRECTORY)));
        assert_eq!(
            c.sync.disabled_accounts(c.monitor.state_directory.is_some()),
            DisabledAccounts::ImportThenDeactivate
        );
        let deactivate = text.replace("action = \"report\"", "action = \"deactivate\"");
        assert_ne!(deactivate, text);
        assert_eq!(by_hand(&deactivate).sync.leavers.action, LeaverAction::Deactivate);
        // The unit's $STATE_DIRECTORY is the same directory (StateDirectory=cloudshell-ldap-sync).
        let unit =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/cloudshell-ldap-sync.service"))
                .unwrap();
        assert!(unit.contains("\nStateDirectory=cloudshell-ldap-sync\n"));
        assert!(DEFAULT_STATE_DIRECTORY.ends_with("/cloudshell-ldap-sync"));
    }

    #[test]
    fn run_timeout_defaults_to_six_hours_and_no_duration_exceeds_thirty_days() {
        assert_eq!(parse_text(MINIMAL).unwrap().sync.run_timeout, Duration::from_secs(6 * 3600));
        let with = |line: &str| MINIMAL.replace("groups = [\"Team\"]\n", &format!("groups = [\"Team\"]\n{line}\n"));
        assert_eq!(parse_text(&with("run_timeout = \"90m\"")).unwrap().sync.run_timeout, Duration::from_secs(5400));
        let e = parse_text(&with("run_timeout = \"31days\"")).unwrap_err().to_string();
        assert!(e.contains("sync.run_timeout") && e.contains("longer than 30 days"), "{e}");
        // Before the cap, a timeout this long parsed, and the daemon's grace (timeout + 5 s) overflowed.
        let huge = MINIMAL.replace("[ldap]\n", "[ldap]\ntimeout = \"500000000000years\"\n");
        let e = parse_text(&huge).unwrap_err().to_string();
        assert!(e.contains("ldap.timeout"), "{e}");
    }

    #[test]
    fn disabled_accounts_default_by_state_directory_and_import_then_deactivate_needs_one() {
        let c = parse_text(MINIMAL).unwrap();
        assert_eq!(c.sync.disabled_accounts, None);
        assert_eq!(c.sync.disabled_accounts(true), DisabledAccounts::ImportThenDeactivate);
        assert_eq!(c.sync.disabled_accounts(false), DisabledAccounts::PerUser);
        assert_eq!(c.sync.max_disabled_deactivations_per_run, 1000);
        let with = |line: &str| {
            MINIMAL.replace("[sync]\ngroups = [\"Team\"]\n", &format!("[sync]\ngroups = [\"Team\"]\n{line}\n"))
        };
        let c = parse_text(&with("disabled_accounts = \"per_user\"")).unwrap();
        assert_eq!(c.sync.disabled_accounts(true), DisabledAccounts::PerUser);
        let e = parse_text(&with("disabled_accounts = \"import_then_deactivate\"")).unwrap_err().to_string();
        assert!(e.contains("sync.disabled_accounts") && e.contains("needs a state directory"), "{e}");
        let e = parse_text(&with("disabled_accounts = \"deactivate\"")).unwrap_err().to_string();
        assert!(e.contains("must be \"import_then_deactivate\" or \"per_user\""), "{e}");
        let e = parse_text(&with("max_disabled_deactivations_per_run = -1")).unwrap_err().to_string();
        assert!(e.contains("sync.max_disabled_deactivations_per_run"), "{e}");
        let text = format!(
            "{}\n[monitor]\nstate_directory = \"/var/lib/x\"\n",
            with("disabled_accounts = \"Import_Then_Deactivate\"")
        );
        let c = parse_text(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.sync.disabled_accounts, Some(DisabledAccounts::ImportThenDeactivate));
    }

    #[test]
    fn mappings_add_their_directory_groups_and_default_to_additions_only() {
        let c = parse_text(MINIMAL).unwrap();
        assert!(c.sync.mappings.is_empty());
        assert!(!c.sync.remove_from_groups);
        assert_eq!((c.sync.max_removals_per_run, c.sync.membership_batch_size), (100, 100));

        let text = MINIMAL.replace(
            "[sync]\ngroups = [\"Team\"]\n",
            "[sync]\ngroups = [\"Team\"]\nremove_from_groups = true\nmax_removals_per_run = 5\n\n\
             [[sync.mapping]]\ndirectory_group = \"team\"\ncloudshell_groups = [\"Lab Users\"]\n\n\
             [[sync.mapping]]\ndirectory_group = \"Ops (EU)\"\ncloudshell_groups = [\"Lab Users\", \"Ops\"]\n",
        ) + "\n[monitor]\nstate_directory = \"/var/lib/x\"\n";
        let c = parse_text(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(texts(&c.sync.groups), ["Team", "Ops (EU)"], "a mapped group is imported too, once");
        assert_eq!(c.sync.mappings.len(), 2);
        assert_eq!(c.sync.mappings[1].cloudshell_groups, ["Lab Users", "Ops"]);
        assert!(c.sync.remove_from_groups);
        assert_eq!(c.sync.max_removals_per_run, 5);

        // Mappings alone are enough.
        let only = MINIMAL.replace(
            "[sync]\ngroups = [\"Team\"]\n",
            "[[sync.mapping]]\ndirectory_group = \"Eng\"\ncloudshell_groups = [\"Engineering\"]\n",
        );
        assert_eq!(texts(&parse_text(&only).unwrap_or_else(|e| panic!("{e}")).sync.groups), ["Eng"]);
    }

    /// Directory group names compare as LDAP's caseIgnoreMatch: inner runs of spaces count as one space, in
    /// the duplicate checks as in the directory (they were compared as written before `GroupName`).
    #[test]
    fn group_names_differing_only_in_runs_of_spaces_are_one_group() {
        let e = parse_text(&MINIMAL.replace("groups = [\"Team\"]", "groups = [\"Ops EU\", \"ops  EU\"]")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("sync.groups"), "{e}");
        assert!(e.to_string().contains("lists \"ops  EU\" twice"), "{e}");

        let mapped = MINIMAL.replace(
            "[sync]\ngroups = [\"Team\"]\n",
            "[sync]\ngroups = [\"Ops EU\"]\n\n\
             [[sync.mapping]]\ndirectory_group = \"OPS   EU\"\ncloudshell_groups = [\"Lab Users\"]\n",
        );
        let c = parse_text(&mapped).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(texts(&c.sync.groups), ["Ops EU"], "the mapped group is the listed one: read once");
        assert_eq!(c.sync.mappings[0].directory_group.as_str(), "OPS   EU", "kept as written");

        let twice = mapped.replace(
            "cloudshell_groups = [\"Lab Users\"]\n",
            "cloudshell_groups = [\"Lab Users\"]\n\n[[sync.mapping]]\ndirectory_group = \"ops eu\"\n\
             cloudshell_groups = [\"lab users\"]\n",
        );
        let e = parse_text(&twice).unwrap_err();
        assert!(e.to_string().contains("again"), "{e}");
    }

    #[test]
    fn a_mapping_repeated_or_incomplete_is_refused_at_its_line() {
        let base = MINIMAL.replace("[sync]\ngroups = [\"Team\"]\n", "[sync]\ngroups = [\"Team\"]\n\n");
        let twice = format!(
            "{base}[[sync.mapping]]\ndirectory_group = \"Eng\"\ncloudshell_groups = [\"Lab Users\"]\n\n\
             [[sync.mapping]]\ndirectory_group = \"ENG\"\ncloudshell_groups = [\"Ops\", \"lab users\"]\n"
        );
        let e = parse_text(&twice).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("sync.mapping.cloudshell_groups"), "{e}");
        let second_line = twice.lines().position(|l| l.starts_with("cloudshell_groups = [\"Ops\"")).unwrap() + 1;
        assert_eq!(e.line, Some(second_line), "{e}");
        assert!(e.to_string().contains("number 2") && e.to_string().contains("again"), "{e}");

        for (body, key, needle) in [
            ("cloudshell_groups = [\"x\"]\n", "sync.mapping.directory_group", "missing: add"),
            ("directory_group = \"Eng\"\n", "sync.mapping.cloudshell_groups", "missing: add"),
            (
                "directory_group = \"Eng\"\ncloudshell_groups = []\n",
                "sync.mapping.cloudshell_groups",
                "no CloudShell group",
            ),
            ("directory_group = \" \"\ncloudshell_groups = [\"x\"]\n", "sync.mapping.directory_group", "empty"),
            (
                "directory_group = \"Eng\"\ncloudshell_groups = [\"a\\nb\"]\n",
                "sync.mapping.cloudshell_groups",
                "control",
            ),
        ] {
            let e = parse_text(&format!("{base}[[sync.mapping]]\n{body}")).unwrap_err();
            assert_eq!(e.key.as_deref(), Some(key), "{body}: {e}");
            assert!(e.line.is_some() && e.to_string().contains(needle), "{body}: {e}");
        }
        let e =
            parse_text(&MINIMAL.replace("[cloudshell]\n", "[cloudshell]\nmembership_batch_size = 0\n")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("cloudshell.membership_batch_size"));
    }

    #[test]
    fn cloudshell_ca_file_is_read_and_must_exist() {
        assert_eq!(parse_text(MINIMAL).unwrap().cloudshell.ca_file, None, "default: none");
        let e = parse_text(&MINIMAL.replace("[cloudshell]\n", "[cloudshell]\nca_file = \"/nonexistent/cs.pem\"\n"))
            .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("cloudshell.ca_file"));
        assert!(e.to_string().contains("/nonexistent/cs.pem does not exist"), "{e}");
        let file = tempfile::NamedTempFile::new().unwrap();
        let path = file.path().display().to_string();
        let c = parse_text(&MINIMAL.replace("[cloudshell]\n", &format!("[cloudshell]\nca_file = {path:?}\n"))).unwrap();
        assert_eq!(c.cloudshell.ca_file.as_deref(), Some(file.path()));
    }

    #[test]
    fn removals_from_cloudshell_groups_need_a_state_directory_for_their_shrink_guard() {
        let with = |extra: &str| {
            MINIMAL.replace(
                "[sync]\ngroups = [\"Team\"]\n",
                &format!("[sync]\ngroups = [\"Team\"]\nremove_from_groups = true\n{extra}"),
            )
        };
        let e = parse_text(&with("")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("sync.remove_from_groups"), "{e}");
        assert!(e.to_string().contains("shrink guard") && e.to_string().contains("state_directory"), "{e}");
        // The control: with one, it is accepted.
        let c = parse_text(&format!("{}\n[monitor]\nstate_directory = \"/var/lib/x\"\n", with(""))).unwrap();
        assert!(c.sync.remove_from_groups);
    }

    #[test]
    fn protect_patterns_match_a_name_whatever_its_unicode_normalisation() {
        // One pattern with é precomposed (NFC), one with e and a combining accent (NFD).
        let leavers = "[sync.leavers]\nprotect = [\"jos\\u00e9*\", \"Rene\\u0301e\"]\n";
        let c = parse_text(&format!("{MINIMAL}\n{leavers}")).unwrap_or_else(|e| panic!("{e}"));
        let l = &c.sync.leavers;
        assert!(l.protects("jose\u{301}-admin"), "an NFD name, an NFC pattern");
        assert!(l.protects("ren\u{e9}e"), "an NFC name, an NFD pattern");
        assert!(l.protects("RENE\u{301}E"), "case too");
        assert!(!l.protects("renee"), "an accent is not case");
        assert!(!l.protects("jose"));
    }

    #[test]
    fn daily_budgets_default_to_100_deactivations_or_20_percent_and_500_removals() {
        let c = parse_text(MINIMAL).unwrap();
        let l = &c.sync.leavers;
        assert_eq!((l.max_per_day, l.max_percent_per_day, c.sync.max_removals_per_day), (100, 20, 500));
        let with = |sync: &str, leavers: &str| {
            MINIMAL.replace(
                "[sync]\ngroups = [\"Team\"]\n",
                &format!("[sync]\ngroups = [\"Team\"]\n{sync}\n\n[sync.leavers]\n{leavers}\n"),
            )
        };
        let c = parse_text(&with("max_removals_per_day = 7", "max_per_day = 0\nmax_percent_per_day = 100"))
            .unwrap_or_else(|e| panic!("{e}"));
        let l = &c.sync.leavers;
        assert_eq!((l.max_per_day, l.max_percent_per_day, c.sync.max_removals_per_day), (0, 100, 7));
        for (sync, leavers, key) in [
            ("", "max_per_day = -1", "sync.leavers.max_per_day"),
            ("", "max_percent_per_day = 101", "sync.leavers.max_percent_per_day"),
            ("max_removals_per_day = -5", "", "sync.max_removals_per_day"),
        ] {
            let e = parse_text(&with(sync, leavers)).unwrap_err();
            assert_eq!(e.key.as_deref(), Some(key), "{sync}{leavers}: {e}");
            assert!(e.line.is_some(), "{e}");
        }
    }

    #[test]
    fn leavers_default_to_report_and_deactivation_needs_a_state_directory() {
        let c = parse_text(MINIMAL).unwrap();
        let l = &c.sync.leavers;
        assert_eq!(
            (l.action, l.grace_runs, l.max_per_run, l.max_percent, l.reactivate),
            (LeaverAction::Report, 1, 20, 10, true)
        );
        assert!(!l.protects("admin"));

        let with = |lines: &str| {
            MINIMAL.replace(
                "[sync]\ngroups = [\"Team\"]\n",
                &format!("[sync]\ngroups = [\"Team\"]\n\n[sync.leavers]\n{lines}\n"),
            )
        };
        let e = parse_text(&with("action = \"deactivate\"")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("sync.leavers.action"), "{e}");
        assert!(e.to_string().contains("state directory"), "{e}");
        let state = "\n[monitor]\nstate_directory = \"/var/lib/x\"\n";
        let c = parse_text(&format!(
            "{}{state}",
            with("action = \"deactivate\"\ngrace_runs = 3\nprotect = [\"svc-*\", \"Break?Glass\"]")
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let l = &c.sync.leavers;
        assert_eq!((l.action, l.grace_runs), (LeaverAction::Deactivate, 3));
        assert!(
            l.protects("SVC-backup") && l.protects("breakXglass") && !l.protects("alice"),
            "globs, case-insensitive"
        );

        for (line, key) in [
            ("action = \"delete\"", "sync.leavers.action"),
            ("grace_runs = 0", "sync.leavers.grace_runs"),
            ("max_percent = 101", "sync.leavers.max_percent"),
            ("max_per_run = -1", "sync.leavers.max_per_run"),
            ("protect = [\"[unclosed\"]", "sync.leavers.protect"),
        ] {
            let e = parse_text(&with(line)).unwrap_err();
            assert_eq!(e.key.as_deref(), Some(key), "{line}: {e}");
            assert!(e.line.is_some(), "{line}: {e}");
        }
    }

    #[test]
    fn change_detection_and_full_sync_every_default_to_auto_and_six_hours() {
        use std::time::Duration;
        let c = parse_text(MINIMAL).unwrap();
        assert_eq!(
            (c.ldap.change_detection, c.sync.full_sync_every),
            (ldap::ChangeDetection::Auto, Duration::from_secs(6 * 3600))
        );
        let ldap = |line: &str| parse_text(&MINIMAL.replace("[ldap]\n", &format!("[ldap]\n{line}\n")));
        let sync = |line: &str| parse_text(&MINIMAL.replace("[sync]\n", &format!("[sync]\n{line}\n")));
        for (value, mode) in [
            ("off", ldap::ChangeDetection::Off),
            ("SyncRepl", ldap::ChangeDetection::Syncrepl),
            ("dirsync", ldap::ChangeDetection::Dirsync),
            ("USN", ldap::ChangeDetection::Usn),
        ] {
            assert_eq!(ldap(&format!("change_detection = {value:?}")).unwrap().ldap.change_detection, mode);
        }
        let stamps = ldap("change_detection = \"modify_timestamp\"").unwrap().ldap.change_detection;
        assert_eq!(stamps, ldap::ChangeDetection::ModifyTimestamp { margin: Duration::from_secs(300) }, "margin 5m");
        let stamps = ldap("change_detection = \"modify_timestamp\"\nmodify_timestamp_margin = \"30s\"").unwrap();
        let margin = Duration::from_secs(30);
        assert_eq!(stamps.ldap.change_detection, ldap::ChangeDetection::ModifyTimestamp { margin });
        assert_eq!(sync("full_sync_every = \"0s\"").unwrap().sync.full_sync_every, Duration::ZERO);
        assert_eq!(sync("full_sync_every = \"30m\"").unwrap().sync.full_sync_every, Duration::from_secs(1800));
        let month = Duration::from_secs(30 * 24 * 3600);
        assert_eq!(sync("full_sync_every = \"30d\"").unwrap().sync.full_sync_every, month, "30 days at the most");
        for (e, key, says) in [
            (sync("full_sync_every = \"31d\"").unwrap_err(), "sync.full_sync_every", "longer than 30 days"),
            (ldap("change_detection = \"sometimes\"").unwrap_err(), "ldap.change_detection", "must be \"auto\""),
            (ldap("modify_timestamp_margin = \"0s\"").unwrap_err(), "ldap.modify_timestamp_margin", "longer than zero"),
            (sync("full_sync_every = \"often\"").unwrap_err(), "sync.full_sync_every", "not a duration"),
        ] {
            assert_eq!(e.key.as_deref(), Some(key), "{e}");
            assert!(e.to_string().contains(says) && e.line.is_some(), "{e}");
        }
    }

    #[test]
    fn grace_period_defaults_to_zero_takes_a_duration_and_refuses_a_bad_one() {
        use std::time::Duration;
        assert_eq!(parse_text(MINIMAL).unwrap().sync.leavers.grace_period, Duration::ZERO);
        let with = |line: &str| {
            MINIMAL.replace(
                "[sync]\ngroups = [\"Team\"]\n",
                &format!("[sync]\ngroups = [\"Team\"]\n\n[sync.leavers]\n{line}\n"),
            )
        };
        let c = parse_text(&with("grace_period = \"3d 12h\"")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.sync.leavers.grace_period, Duration::from_secs(84 * 3600));
        assert_eq!(parse_text(&with("grace_period = \"0s\"")).unwrap().sync.leavers.grace_period, Duration::ZERO);
        for (line, says) in
            [("grace_period = \"soon\"", "not a duration"), ("grace_period = \"400d\"", "longer than a year")]
        {
            let e = parse_text(&with(line)).unwrap_err();
            assert_eq!(e.key.as_deref(), Some("sync.leavers.grace_period"), "{line}: {e}");
            assert!(e.to_string().contains(says) && e.line.is_some(), "{line}: {e}");
        }
    }

    #[test]
    fn credentials_in_the_ldap_url_are_refused_unechoed_and_clear_text_transports_draw_warnings() {
        let e = parse_text(&MINIMAL.replace("ldap://127.0.0.1:389", "ldap://svc:hunter2@127.0.0.1:389")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("ldap.url"));
        assert!(e.to_string().contains("carries credentials") && !e.to_string().contains("hunter2"), "{e}");
        let c = parse_text(MINIMAL).unwrap();
        assert!(c.warnings.iter().any(|w| w.contains("plain ldap://")), "{:?}", c.warnings);
        assert!(c.warnings.iter().any(|w| w.contains("plain http://")), "{:?}", c.warnings);
        let safe = MINIMAL
            .replace("ldap://127.0.0.1:389", "ldaps://127.0.0.1:636")
            .replace("http://cloudshell.example.com:9000", "https://cloudshell.example.com");
        assert!(parse_text(&safe).unwrap().warnings.is_empty());
        let starttls = MINIMAL.replace("[ldap]\n", "[ldap]\nstarttls = true\n");
        assert!(!parse_text(&starttls).unwrap().warnings.iter().any(|w| w.contains("ldap://")));
    }

    #[test]
    fn a_request_rate_cap_too_small_to_finish_is_refused() {
        for (rate, ok) in [("0", true), ("0.1", true), ("25", true), ("0.05", false), ("1e-9", false), ("-1", false)] {
            let text = MINIMAL.replace("[cloudshell]\n", &format!("[cloudshell]\nmax_requests_per_second = {rate}\n"));
            match parse_text(&text) {
                Ok(_) => assert!(ok, "{rate} accepted"),
                Err(e) => {
                    assert!(!ok, "{rate} refused: {e}");
                    assert_eq!(e.key.as_deref(), Some("cloudshell.max_requests_per_second"));
                }
            }
        }
    }
}
