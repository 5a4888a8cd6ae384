//! The command line: `sync`, `run`, `check`, `status`, `history` and `accept-shrink`, with `-c`/`--config` before or after the command,
//! mapped onto the library; it hands the run's exit code ([`crate::exit`]) to the process. Command output goes
//! to stdout; logs go to stderr.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgAction, Parser, Subcommand, ValueEnum};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::config::{self, Config, DisabledAccounts};
use crate::group_name::GroupName;
use crate::logging::{Escaped, LogFormat};
use crate::report::{GroupStatus, Report};
use crate::state::db::{self, Database, Filter, Owner};
use crate::stop::Stops;
use crate::username::Username;
use crate::{cloudshell, daemon, exit, history, ldap, lock, logging, status, sync};

/// The binary's name, as the completions register it.
const NAME: &str = "cloudshell-ldap-sync";

const DEFAULT_CONFIG: &str = "/etc/cloudshell-ldap-sync/config.toml";

/// The environment variable naming the configuration file when `--config` is not given.
pub const CONFIG_ENV: &str = "CLOUDSHELL_LDAP_SYNC_CONFIG";

/// The heading of the options every command takes.
const GLOBAL: &str = "Global options";

use crate::VERSION;

/// Imports the members of directory (LDAP / Active Directory) groups into Quali CloudShell, places them in
/// CloudShell groups, and handles the people who leave.
#[derive(Parser, Debug)]
#[command(name = NAME, version = VERSION, about)]
pub struct Cli {
    /// The configuration file (TOML), before or after the command. Without it: $CLOUDSHELL_LDAP_SYNC_CONFIG when
    /// set and not empty, else /etc/cloudshell-ldap-sync/config.toml.
    #[arg(
        short = 'c',
        long,
        global = true,
        value_name = "PATH",
        value_hint = clap::ValueHint::FilePath,
        help_heading = GLOBAL
    )]
    pub config: Option<PathBuf>,
    /// More log output: -v shows debug events, -vv trace, -vvv dependencies' debug events too. RUST_LOG, when
    /// set, decides instead.
    #[arg(short, long, global = true, action = ArgAction::Count, help_heading = GLOBAL)]
    pub verbose: u8,
    /// Less log output: -q shows only warnings and errors, -qq only errors; each -q takes back a -v. RUST_LOG,
    /// when set, decides instead.
    #[arg(short, long, global = true, action = ArgAction::Count, help_heading = GLOBAL)]
    pub quiet: u8,
    /// Log format on stderr; overrides [log] format.
    #[arg(long, global = true, value_enum, help_heading = GLOBAL)]
    pub log_format: Option<LogFormatArg>,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The configuration file: `--config`, else `$CLOUDSHELL_LDAP_SYNC_CONFIG`, else the default.
    pub fn config_path(&self) -> PathBuf {
        config_path(self.config.as_deref(), std::env::var_os(CONFIG_ENV))
    }

    /// Log verbosity over the default filter: each `-v` one level more, each `-q` one less.
    pub fn verbosity(&self) -> i8 {
        let v = i8::try_from(self.verbose).unwrap_or(i8::MAX);
        let q = i8::try_from(self.quiet).unwrap_or(i8::MAX);
        v.saturating_sub(q)
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run one sync cycle now, then exit.
    Sync {
        /// Compute and print the plan; write nothing to CloudShell.
        #[arg(long)]
        dry_run: bool,
        /// Print the run report as one JSON object on stdout.
        #[arg(long)]
        json: bool,
        /// With --dry-run: exit 6 instead of 0 when the plan has changes to make (imports, group memberships,
        /// deactivations, reactivations); 0 then means there is nothing to do. Other exit codes are unchanged.
        #[arg(long, requires = "dry_run")]
        detailed_exitcode: bool,
    },
    /// The long-running daemon: cycles on the configured schedule until SIGTERM or SIGINT.
    Run,
    /// Validate the configuration, bind to LDAP, resolve every group, log in to CloudShell; change nothing.
    ///
    /// Exit 1 on any problem, including a configuration that would import nobody (ldap.base_dn missing, no
    /// entry with ldap.username_attribute, a configured group with no user) and a state directory its group or
    /// others may write.
    ///
    /// The bind and the login are each waited for once, at most ldap.timeout / cloudshell.timeout or 10 s,
    /// whichever is shorter; what is waited for is logged first.
    Check {
        /// Print what was checked as one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Show the last run from the status file; exit 0 when it was ok and is not stale and the next run is not
    /// overdue, 1 otherwise, 2 with no usable status file (missing, unreadable or damaged).
    Status {
        /// Print the status file and the verdict as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Show what this program did, to whom, when and why: the audit trail in the state directory's state.db.
    ///
    /// One row per write (group imported, imported, added to or removed from a CloudShell group, deactivated,
    /// reactivated) and per hold of a safety limit, oldest first, with its run, reason and result.
    ///
    /// Reads no password and writes nothing. Exit 0 (also when nothing matches), 2 without a usable state
    /// database (none yet, damaged, or written by a newer version; the message says which and what to do) or
    /// on a usage error. Rows are kept for [monitor] history_retention (default 400 days).
    History {
        /// Only the rows about this user (compared case-insensitively).
        #[arg(value_name = "USERNAME", value_parser = parse_username)]
        username: Option<Username>,
        /// Only the rows of the last DURATION: "30d", "12h", "90min".
        #[arg(long, value_name = "DURATION", value_parser = history::parse_since)]
        since: Option<Duration>,
        /// Print one JSON object: state_database (its path) and entries (the rows: run_id, at, action,
        /// username, group, reason, result).
        #[arg(long)]
        json: bool,
    },
    /// Accept a shrink the shrink guard holds: forget the groups' recorded member counts (every group's when
    /// none is named).
    ///
    /// The next good run's counts become the reference.
    ///
    /// Reads no password. Exit 0 (a named group with no recorded count is reported), 1 when a run is in
    /// progress (it holds the run lock: try again when it is done) or the database cannot be written, 2 for a
    /// group that is not configured or without a usable state database.
    AcceptShrink {
        /// A configured directory group (sync.groups or a [[sync.mapping]] directory_group), compared as the
        /// directory compares names; every group when none is named.
        #[arg(value_name = "GROUP")]
        groups: Vec<String>,
    },
    /// Accept that this configuration identifies users differently from the one that made the state database
    /// (another username attribute, base DN, user filter, directory or CloudShell), or is the same configuration
    /// moved to another path.
    ///
    /// Until then every deactivation and removal is held (exit 4), and a run from another configuration file is
    /// refused (exit 1). The next complete run matches the managed users again, by their directory DN or their
    /// CloudShell id; those matched to no member are no longer managed (reported, never deactivated).
    ///
    /// Reads no password. Exit 0 (also when there is nothing to accept), 1 when a run is in progress or the
    /// database cannot be written, 2 without a usable state database.
    AcceptIdentity,
    /// Print a shell completion script (bash, zsh or fish) on stdout.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) on stdout, or write every page into a directory.
    #[command(hide = true)]
    Man {
        /// Write cloudshell-ldap-sync.1 and one page per command (cloudshell-ldap-sync-sync.1, ...) here.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

/// The configuration file from the option and the environment variable's value: the option wins, then the
/// variable when it is not empty (an empty one counts as unset, as `NO_COLOR`'s does), then the default.
fn config_path(option: Option<&Path>, env: Option<std::ffi::OsString>) -> PathBuf {
    match (option, env) {
        (Some(path), _) => path.to_path_buf(),
        (None, Some(env)) if !env.is_empty() => PathBuf::from(env),
        (None, _) => PathBuf::from(DEFAULT_CONFIG),
    }
}

/// The command line's definition, for the manual page and the completions.
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    Cli::command()
}

/// The command line as operators see it: `command()` without its hidden commands, for the completions
/// (clap_complete offers hidden commands as it offers the others).
pub fn visible_command() -> clap::Command {
    let full = command();
    // `Command` can add subcommands but not take one away: a new command with the same name, arguments and
    // visible subcommands.
    clap::Command::new(NAME)
        .version(VERSION)
        .about(full.get_about().cloned().unwrap_or_default())
        .args(full.get_arguments().cloned())
        .subcommand_required(true)
        .subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned())
}

/// The completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> String {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut visible_command(), NAME, &mut out);
    let script = String::from_utf8_lossy(&out).into_owned();
    // Post-processed, not generated under another name: clap_complete 4.6's bash script sets `cmd`
    // to `cloudshell__ldap__sync__subcmd__sync` but names its case arms `cloudshell__subcmd__ldap__subcmd__sync`
    // (it mangles every `-` of a hyphenated binary name in the arms), so no subcommand's options were ever
    // offered. The arms are renamed to what `cmd` is set to; where a later version is fixed this changes nothing.
    // tests/commands.rs drives the function in bash.
    match shell {
        clap_complete::Shell::Bash => {
            script.replace("cloudshell__subcmd__ldap__subcmd__sync", "cloudshell__ldap__sync")
        }
        _ => script,
    }
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::CONFIG } else { exit::OK });
        }
    };
    let verbosity = cli.verbosity();
    let path = cli.config_path();
    match cli.command {
        Command::Status { json } => return ExitCode::from(status_command(&path, json)),
        Command::History { username, since, json } => {
            return ExitCode::from(history_command(&path, username.as_ref(), since, json));
        }
        Command::AcceptShrink { groups } => return ExitCode::from(accept_shrink_command(&path, &groups)),
        Command::AcceptIdentity => return ExitCode::from(accept_identity_command(&path)),
        Command::Completions { shell } => {
            print!("{}", completions(shell));
            return ExitCode::from(exit::OK);
        }
        Command::Man { out_dir } => return ExitCode::from(man_command(out_dir.as_deref())),
        Command::Sync { .. } | Command::Run | Command::Check { .. } => {}
    }
    let config = match config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(exit::CONFIG);
        }
    };
    let format = match cli.log_format {
        Some(LogFormatArg::Json) => LogFormat::Json,
        Some(LogFormatArg::Text) => LogFormat::Text,
        None => config.log_format.unwrap_or(LogFormat::Text),
    };
    logging::init(format, verbosity);
    for warning in &config.warnings {
        tracing::warn!(warning = %warning, "configuration warning");
    }
    // One thread: the work is waiting on the directory and CloudShell, and the little CPU it needs (decoding
    // answers) competes with slapd and CloudShell on the same host more than it gains from a second thread; a
    // second worker cost 10-20 % of the cycle and 10 MB in allocator arenas (BENCHMARKS.md).
    // One thread runs everything; blocking work (name lookups) gets at most 16 more (the units' TasksMax).
    let runtime = match tokio::runtime::Builder::new_current_thread().max_blocking_threads(16).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FATAL);
        }
    };
    let code = runtime.block_on(async {
        match cli.command {
            Command::Sync { dry_run, json, detailed_exitcode } => {
                sync_command(&config, dry_run, json, detailed_exitcode).await
            }
            Command::Check { json } => check_command(&config, json).await,
            Command::Run => run_command(&path, config).await,
            // Answered above, without a configuration or without its secrets.
            Command::Status { .. }
            | Command::History { .. }
            | Command::AcceptShrink { .. }
            | Command::AcceptIdentity
            | Command::Completions { .. }
            | Command::Man { .. } => exit::OK,
        }
    });
    ExitCode::from(code)
}

/// Makes `stops.stop` on SIGTERM or SIGINT, and `stops.abandon` on a second one.
fn stop_on_signals(stops: Stops) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let Stops { stop, abandon } = stops;
        for (token, what) in [(stop, "stop requested"), (abandon, "second stop request: calls in flight abandoned")] {
            tokio::select! {
                _ = term.recv() => tracing::info!(signal = "SIGTERM", "{what}"),
                _ = int.recv() => tracing::info!(signal = "SIGINT", "{what}"),
            }
            token.cancel();
        }
    });
    Ok(())
}

async fn run_command(path: &Path, config: Config) -> u8 {
    let stops = Stops::default();
    let (controls, receiver) = mpsc::channel(8);
    let signals = (|| -> std::io::Result<()> {
        stop_on_signals(stops.clone())?;
        let mut hup = signal(SignalKind::hangup())?;
        let mut usr1 = signal(SignalKind::user_defined1())?;
        tokio::spawn(async move {
            loop {
                let control = tokio::select! {
                    Some(()) = hup.recv() => daemon::Control::Reload,
                    Some(()) = usr1.recv() => daemon::Control::RunNow,
                    else => return,
                };
                if controls.send(control).await.is_err() {
                    return;
                }
            }
        });
        Ok(())
    })();
    if let Err(e) = signals {
        tracing::error!(error = %e, "cannot install signal handlers");
        return exit::FATAL;
    }
    let options = daemon::Options::for_config(&config);
    match daemon::run(path, config, receiver, stops, options).await {
        Ok(()) => exit::OK,
        Err(e) => {
            tracing::error!(error = %e, "daemon cannot start");
            exit::FATAL
        }
    }
}

/// `man`: the manual page on stdout, or every page written into `out_dir`.
fn man_command(out_dir: Option<&Path>) -> u8 {
    let written = match out_dir {
        None => crate::manual::render(command(), &mut std::io::stdout()),
        Some(dir) => crate::manual::write_pages(command(), dir),
    };
    match written {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("error: cannot write the manual page: {e}");
            exit::FATAL
        }
    }
}

async fn sync_command(config: &Config, dry_run: bool, json: bool, detailed_exitcode: bool) -> u8 {
    let state_directory = config.monitor.state_directory.clone();
    // With a state directory, a run that writes keeps the directory model in it for the next run's change read.
    let changes =
        (state_directory.is_some() && !dry_run).then(|| std::sync::Arc::new(sync::changes::ChangeReads::one_shot()));
    let context = sync::Context { state_directory, changes, ..Default::default() };
    if let Err(e) = stop_on_signals(context.stops.clone()) {
        tracing::warn!(error = %e, "cannot install signal handlers; Ctrl-C will end the run abruptly");
    }
    // One run at a time across processes; a dry run writes nothing, so it needs no lock.
    let _lock = if dry_run {
        None
    } else {
        match lock::acquire_for_run(context.state_directory.as_deref(), &config.path) {
            Ok(l) => Some(l),
            Err(e @ lock::Error::Busy { .. }) => {
                eprintln!("error: {e}");
                return exit::BUSY;
            }
            Err(e) => {
                eprintln!("error: {e}");
                return exit::FATAL;
            }
        }
    };
    if config.sync.disabled_accounts.is_none() && context.state_directory.is_none() {
        tracing::info!(
            mode = DisabledAccounts::PerUser.as_str(),
            "no state directory: groups holding disabled accounts are imported member by member \
             (sync.disabled_accounts = \"import_then_deactivate\" needs [monitor] state_directory)"
        );
    }
    let report = sync::run_caught(config, dry_run, &context).await;
    // The process ends here: the directory model the context holds (about 100 MB at 100,000 users) is left to the
    // exit rather than freed entry by entry, which would cost a quiet run a twentieth of its time.
    std::mem::forget(context);
    // A one-shot run keeps the status file only where a state directory is configured.
    if let Some(dir) = &config.monitor.state_directory
        && !dry_run
    {
        status::record(dir, None, &report, None, None);
    }
    if json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    let code = report.result.exit_code();
    if detailed_exitcode && code == exit::OK && plans_changes(&report) { exit::CHANGES_PLANNED } else { code }
}

/// Whether a dry run's report plans a write: an import, a change to a CloudShell group's members, or a user to
/// deactivate or reactivate (leavers with `action = "deactivate"`, disabled accounts).
fn plans_changes(report: &Report) -> bool {
    let planned = |status: GroupStatus| status == GroupStatus::Planned;
    report.groups.iter().any(|g| !g.planned.is_empty())
        || report.memberships.iter().any(|m| !m.planned_add.is_empty() || !m.planned_remove.is_empty())
        || report.leavers.as_ref().is_some_and(|l| l.action == "deactivate" && planned(l.status))
        || report.disabled_accounts.as_ref().is_some_and(|d| planned(d.status))
}

/// `status`: the last run from the status file, judged against the schedule. 0: ok, not stale, and the next
/// run not overdue; 1: not ok, stale or overdue; 2: no usable status file (missing, unreadable, damaged) or no usable configuration.
fn status_command(path: &Path, json: bool) -> u8 {
    let config = match config::load_without_secrets(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::CONFIG;
        }
    };
    let dir = config.monitor.state_directory_or_default();
    let found = match status::load(&dir) {
        Ok(found) => found,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::CONFIG;
        }
    };
    let health = status::assess(&found, &config.schedule.schedule, config.sync.run_timeout, chrono::Utc::now());
    if json {
        println!("{}", serde_json::json!({ "status": found, "health": health, "healthy": health.healthy() }));
    } else {
        print!("{}", status::to_text(&found, &health));
    }
    if health.healthy() { exit::OK } else { exit::FATAL }
}

/// `USERNAME`'s value, for the command line's parser: a blank one is a usage error.
fn parse_username(text: &str) -> Result<Username, String> {
    Username::new(text).ok_or_else(|| "a username is not blank: name a user, or leave it out for everyone".into())
}

/// The state directory holding `config`'s `state.db`, as `status` finds its status file (`[monitor]
/// state_directory`, else `$STATE_DIRECTORY`, else the default); else why not, for exit 2.
fn state_database(config: &Config) -> Result<PathBuf, String> {
    let dir = config.monitor.state_directory_or_default();
    let path = dir.join(db::FILE_NAME);
    match std::fs::symlink_metadata(&path) {
        Ok(_) => Ok(dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let which = if config.monitor.state_directory.is_some() {
                String::new()
            } else {
                " (the default state directory: [monitor] state_directory is not set, nor $STATE_DIRECTORY)".into()
            };
            let mut message = format!(
                "no state database {}{which}: no run has recorded anything there yet; if the runs keep their \
                 state elsewhere, set [monitor] state_directory in {} to that directory",
                path.display(),
                config.path.display()
            );
            if dir.join(crate::state::FILE_NAME).exists() {
                message.push_str(&format!(
                    "; the shrink guard's counts are still in {} (the next run moves them into {}): deleting \
                     that file accepts a shrink",
                    dir.join(crate::state::FILE_NAME).display(),
                    db::FILE_NAME
                ));
            }
            Err(message)
        }
        Err(e) => Err(format!("cannot read {}: {e} (run as root, or as the service's user)", path.display())),
    }
}

/// `history`: the audit rows for a user and a time, as a table or one JSON object. 0, also when none
/// matches; 2 without a usable state database or a usable configuration.
fn history_command(path: &Path, username: Option<&Username>, since: Option<Duration>, json: bool) -> u8 {
    let config = match config::load_without_secrets(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::CONFIG;
        }
    };
    let since = match since.map(|d| history::since(chrono::Utc::now(), d)).transpose() {
        Ok(since) => since,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::CONFIG;
        }
    };
    let dir = match state_database(&config) {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::CONFIG;
        }
    };
    let rows = match Database::open_read_only(&dir) {
        Ok(Some(db)) => db.history(&Filter { username, since: since.as_deref() }).map(|rows| (rows, db)),
        Ok(None) => {
            eprintln!("error: {} is gone", dir.join(db::FILE_NAME).display());
            return exit::CONFIG;
        }
        Err(e) => Err(e),
    };
    let (rows, db) = match rows {
        Ok(found) => found,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::CONFIG;
        }
    };
    if json {
        println!("{}", history::to_json(db.path(), &rows));
    } else if rows.is_empty() {
        println!("{}", history::nothing(db.path(), username.map(Username::as_str), since.as_deref()));
    } else {
        print!("{}", history::to_text(&rows));
    }
    exit::OK
}

/// The configured groups `asked` names (as the directory compares names), each once; `None` for every group
/// when it names none. A name that is not configured is an error naming the configured ones.
fn configured_groups(configured: &[GroupName], asked: &[String]) -> Result<Option<Vec<GroupName>>, String> {
    if asked.is_empty() {
        return Ok(None);
    }
    let mut chosen: Vec<GroupName> = Vec::new();
    for name in asked {
        let asked = GroupName::new(name);
        let Some(group) = configured.iter().find(|g| **g == asked) else {
            let list = configured.iter().map(|g| format!("{:?}", Escaped(g.as_str()))).collect::<Vec<_>>();
            return Err(format!(
                "{:?} is not a configured group (sync.groups, [[sync.mapping]] directory_group); the configured \
                 groups are {}",
                Escaped(name),
                list.join(", ")
            ));
        };
        if !chosen.contains(group) {
            chosen.push(group.clone());
        }
    }
    Ok(Some(chosen))
}

/// The state database of `config` opened for a command to edit it, under the run lock: a run reads the state at
/// its start and writes it at its end, so an edit in between would be undone or half seen. Why not as the
/// command's exit code, the error printed: 1 when a run holds the lock (or it cannot be taken), 2 without a usable
/// state database.
fn open_state_to_edit(config: &Config) -> Result<(lock::RunLock, Database), u8> {
    let fail = |e: &dyn std::fmt::Display, code| {
        eprintln!("error: {e}");
        code
    };
    let dir = state_database(config).map_err(|e| fail(&e, exit::CONFIG))?;
    let lock = lock::acquire_for_run(Some(&dir), &config.path).map_err(|e| match e {
        lock::Error::Busy { .. } => fail(&format!("a run is in progress: {e}"), exit::FATAL),
        e => fail(&e, exit::FATAL),
    })?;
    let database = Database::open(&dir, &Owner::of(config)).map_err(|e| fail(&e, exit::CONFIG))?;
    Ok((lock, database))
}

/// `accept-shrink`: forgets the shrink guard's recorded counts of the chosen groups (every one when none is
/// named), under the run lock. 0; 1 when a run holds the lock or the database cannot be written; 2 for a group
/// that is not configured, or without a usable state database or configuration.
fn accept_shrink_command(path: &Path, asked: &[String]) -> u8 {
    let config = match config::load_without_secrets(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::CONFIG;
        }
    };
    let chosen = match configured_groups(&config.sync.groups, asked) {
        Ok(chosen) => chosen,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::CONFIG;
        }
    };
    let (_lock, mut database) = match open_state_to_edit(&config) {
        Ok(opened) => opened,
        Err(code) => return code,
    };
    let recorded = match database.load_counts() {
        Ok(counts) => counts.by_group(),
        Err(e) => {
            eprintln!("error: {e}");
            return exit::CONFIG;
        }
    };
    // The counts are kept under the configured name as written when they were recorded: matched as the
    // directory compares names, so that a name since written in another case is still found.
    let mut lines = Vec::new();
    let mut forget: Vec<String> = match &chosen {
        None => recorded.keys().cloned().collect(),
        Some(groups) => {
            let mut keys = Vec::new();
            for group in groups {
                let found: Vec<&String> = recorded.keys().filter(|k| GroupName::new(k) == *group).collect();
                if found.is_empty() {
                    lines.push(format!("group {:?}: no recorded count", Escaped(group.as_str())));
                }
                keys.extend(found.into_iter().cloned());
            }
            keys
        }
    };
    forget.sort();
    if forget.is_empty() {
        if chosen.is_none() {
            lines.push("no recorded count: nothing to forget".into());
        }
    } else {
        let forgotten = match database.forget_counts(&forget) {
            Ok(forgotten) => forgotten,
            Err(e) => {
                eprintln!("error: {e}");
                return exit::FATAL;
            }
        };
        for name in forgotten {
            let members = recorded.get(&name).copied().unwrap_or_default();
            lines.push(format!(
                "group {:?}: forgot its recorded count ({members} members); the next good run's count becomes the \
                 reference",
                Escaped(&name)
            ));
        }
    }
    for line in lines {
        println!("{line}");
    }
    exit::OK
}

/// `accept-identity`: records this configuration as the state database's owner, for the next complete run to
/// match the managed users again.
fn accept_identity_command(path: &Path) -> u8 {
    let config = match config::load_without_secrets(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::CONFIG;
        }
    };
    let (_lock, mut database) = match open_state_to_edit(&config) {
        Ok(opened) => opened,
        Err(code) => return code,
    };
    let current = Owner::of(&config);
    let differences = match database.owner_differences(&current) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::CONFIG;
        }
    };
    if differences.is_empty() {
        println!("nothing to accept: {} already belongs to this configuration", database.path().display());
        return exit::OK;
    }
    if let Err(e) = database.accept_owner(&current) {
        eprintln!("error: {e}");
        return exit::FATAL;
    }
    for d in &differences {
        println!("accepted: {}", Escaped(&d.to_string()));
    }
    println!(
        "the next complete run matches the managed users again by their directory DN or CloudShell id; those \
         matched to no member are no longer managed (listed in its report, never deactivated)"
    );
    exit::OK
}

/// What `check` found, one item per thing probed: printed as it goes, one line each, or kept for one JSON object
/// (`check --json`: `ok`, `problems`, `config`, and `checks`, each with `kind`, `name`, `ok` and the line as
/// `message`).
struct Findings {
    json: bool,
    checks: Vec<serde_json::Value>,
    problems: usize,
}

impl Findings {
    /// One item: `kind` (`config`, `directory`, `group`...), what it names, whether it is ok (not ok counts a
    /// problem), and its line, indented by `depth` in the text.
    fn add(&mut self, depth: usize, kind: &str, name: Option<&str>, ok: bool, line: String) {
        if !ok {
            self.problems += 1;
        }
        if self.json {
            self.checks.push(serde_json::json!({ "kind": kind, "name": name, "ok": ok, "message": line }));
        } else {
            println!("{:width$}{line}", "", width = depth * 2);
        }
    }
}

/// `check`: prints what it finds, one line per item (or one JSON object), and what is wrong.
async fn check_command(config: &Config, json: bool) -> u8 {
    let mut found = Findings { json, checks: Vec::new(), problems: 0 };
    let path = display(&config.path);
    found.add(0, "config", Some(&path), true, format!("config {path}: ok"));
    for w in &config.warnings {
        found.add(1, "config_warning", None, true, format!("warning: {w}"));
    }
    check_state_directory(config.monitor.state_directory.as_deref(), &mut found);
    check_state_database(config, &mut found);
    check_directory(config, &mut found).await;
    let url = config.cloudshell.url.to_string();
    // The login waits at most PROBE_TIMEOUT, once; the mapped groups are read with the configured limits.
    let timeout = probe_timeout(config.cloudshell.timeout);
    let (connect_timeout, retries) = (probe_timeout(config.cloudshell.connect_timeout), 0);
    let probe = cloudshell::Settings { timeout, connect_timeout, retries, ..config.cloudshell.clone() };
    let clients =
        cloudshell::Client::new(probe).and_then(|p| Ok((p, cloudshell::Client::new(config.cloudshell.clone())?)));
    tracing::info!(url = %url, timeout = ?timeout, "logging in to cloudshell");
    match clients {
        Err(e) => found.add(0, "cloudshell", Some(&url), false, format!("cloudshell {url}: FAILED: {}", Escaped(&e))),
        Ok((probe, client)) => match probe.login().await {
            Ok(()) => {
                let line = format!("cloudshell {url}: logged in as {:?}", config.cloudshell.username);
                found.add(0, "cloudshell", Some(&url), true, line);
                client.share_login(&probe).await;
                check_mapped_groups(&client, config, &mut found).await;
            }
            Err(e) => {
                found.add(0, "cloudshell", Some(&url), false, format!("cloudshell {url}: FAILED: {}", Escaped(&e)))
            }
        },
    }
    let problems = found.problems;
    if json {
        let object = serde_json::json!({
            "ok": problems == 0,
            "problems": problems,
            "config": path,
            "checks": found.checks,
        });
        println!("{object}");
    } else if problems == 0 {
        println!("all checks passed");
    } else {
        println!("{problems} problem(s) found");
    }
    if problems == 0 { exit::OK } else { exit::FATAL }
}

/// The longest `check` waits for a server to take its connection or its login: a port that accepts and never
/// answers ends the check within seconds, not after every retry of the configured timeout.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// `check`'s wait for a connection or a login: the configured timeout, at most [`PROBE_TIMEOUT`].
fn probe_timeout(configured: Duration) -> Duration {
    configured.min(PROBE_TIMEOUT)
}

/// `check`'s line for the state directory the runs keep (`[monitor] state_directory`, else
/// `$STATE_DIRECTORY`): where it is and that no one but its owner may write it, as a run would refuse it; or
/// that there is none, and what a run then does without.
fn check_state_directory(dir: Option<&Path>, found: &mut Findings) {
    use std::os::unix::fs::PermissionsExt;
    let Some(dir) = dir else {
        let line = "state directory: none ([monitor] state_directory is not set, nor $STATE_DIRECTORY): runs keep \
                    no state; groups holding disabled accounts are imported member by member";
        return found.add(0, "state_directory", None, true, line.to_string());
    };
    let name = display(dir);
    let (ok, detail) = match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            (true, "not created yet (the first run creates it)".into())
        }
        Err(e) => (
            false,
            format!("FAILED: cannot read it: {e} (the shipped units keep it readable by root only: run check as root)"),
        ),
        Ok(meta) if !meta.is_dir() => (false, "FAILED: not a directory".into()),
        Ok(meta) => match meta.permissions().mode() & 0o7777 {
            mode if mode & 0o022 != 0 => (
                false,
                format!(
                    "FAILED: writable by other users (mode {mode:o}), so runs refuse it: chmod go-w {}",
                    shell_word(&name)
                ),
            ),
            mode => (true, format!("ok (mode {mode:o})")),
        },
    };
    found.add(0, "state_directory", Some(&name), ok, format!("state directory {name}: {detail}"));
}

/// `check`'s line for `state.db` in the state directory, read-only: whether a run can use it, what it holds, and
/// how the configuration differs from the one that made it. Nothing is created or migrated.
fn check_state_database(config: &Config, found: &mut Findings) {
    use crate::state::db::{self, Database, Owner};
    let Some(dir) = config.monitor.state_directory.as_deref().filter(|d| d.is_dir()) else { return };
    let path = dir.join(db::FILE_NAME);
    let name = display(&path);
    let (ok, detail) = match Database::open_read_only(dir) {
        Ok(None) => {
            let old: Vec<&str> = [crate::state::USERS_FILE, crate::state::FILE_NAME]
                .into_iter()
                .filter(|f| dir.join(f).exists())
                .collect();
            match old.as_slice() {
                [] => (true, "not created yet (the first run that writes creates it)".to_string()),
                files => (true, format!("not created yet: the first run that writes migrates {}", files.join(" and "))),
            }
        }
        Ok(Some(database)) => {
            let managed = database.load_managed().map(|m| m.users.len());
            let counts = database.load_counts().map(|c| c.by_group().len());
            let pending = database.pending().map(|p| p.len());
            let owner = database.owner_differences(&Owner::of(config));
            match (managed, counts, pending, owner) {
                (Ok(managed), Ok(counts), Ok(pending), Ok(differences)) => {
                    let mut line = format!(
                        "ok ({managed} managed users, {counts} recorded group counts, {pending} calls to read back \
                         at the next run)"
                    );
                    if !differences.is_empty() {
                        let said: Vec<String> = differences.iter().map(ToString::to_string).collect();
                        line.push_str(&format!("; made by a different configuration: {}", said.join("; ")));
                    }
                    (true, line)
                }
                (Err(e), ..) | (_, Err(e), ..) | (_, _, Err(e), _) | (.., Err(e)) => (false, format!("FAILED: {e}")),
            }
        }
        Err(e) => (false, format!("FAILED: {e}")),
    };
    found.add(0, "state_database", Some(&name), ok, format!("state database {name}: {detail}"));
}

/// `text` as one word for a shell command line: as is when it is plain, else single-quoted.
pub(crate) fn shell_word(text: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+:,@%=".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

/// `check`'s lines for the directory: the bind and the base DN, the users (or why nobody would be imported),
/// then each configured group (members, or why not).
async fn check_directory(config: &Config, found: &mut Findings) {
    let urls = config.ldap.urls.join(", ");
    let s = &config.ldap;
    // First `check`'s own look: a missing base DN would otherwise show as no users and one noSuchObject per
    // group, and a wrong username attribute as no users at all.
    // A port that accepts and never answers ends the check within seconds: one try per URL, a short timeout.
    let timeout = probe_timeout(s.timeout);
    let quick = ldap::Settings { timeout, connect_retries: 0, ..s.clone() };
    tracing::info!(url = %urls, timeout = ?timeout, "connecting to the directory");
    let failed = |found: &mut Findings, e: ldap::Error| {
        found.add(0, "directory", Some(&urls), false, format!("directory {urls}: FAILED: {}", Escaped(&e)))
    };
    let mut connection = match ldap::Connection::open(&quick).await {
        Ok(connection) => connection,
        Err(e) => return failed(found, e),
    };
    let content_sync = {
        use ldap::ChangeDetection::{Auto, Off, Syncrepl};
        let method = config.ldap.change_detection;
        matches!(method, Auto | Syncrepl) || (config.schedule.watch && method == Off)
    };
    let probe = match ldap::probe(&mut connection, content_sync).await {
        Ok(probe) => probe,
        Err(e) => return failed(found, e),
    };
    if let Some(why) = &probe.base_dn_missing {
        let line = format!(
            "directory {}: bound as {:?}, but ldap.base_dn {:?} {why}: set ldap.base_dn to the entry users and \
             groups are under",
            probe.served_by, s.bind_dn, s.base_dn
        );
        return found.add(0, "directory", Some(&probe.served_by), false, line);
    }
    // The groups on the same connection, with the configured timeout.
    let snapshot = connection.with_settings(s).snapshot(&config.sync.groups).await;
    let line = format!(
        "directory {}: bound as {:?}, {} users under {}",
        snapshot.served_by, s.bind_dn, snapshot.users_seen, s.base_dn
    );
    found.add(0, "directory", Some(&snapshot.served_by), true, line);
    if snapshot.users_seen == 0 {
        found.add(1, "users", None, false, format!("problem: {}", no_users(s, &probe)));
    }
    for g in &snapshot.groups {
        match &g.result {
            Ok(group) => {
                let nested = group.sources.len().saturating_sub(1);
                let mut line = format!(
                    "group {:?}: {} members ({} nested groups, {} disabled left out) at {}",
                    g.name,
                    group.members.len(),
                    nested,
                    group.disabled_members,
                    Escaped(&group.dn)
                );
                // An empty group while the directory holds users: nobody would be imported from it. (With no
                // users at all, the line above says why.) A group of disabled accounts only is left out whole
                // on purpose.
                let empty = group.members.is_empty() && group.disabled_members == 0 && snapshot.users_seen > 0;
                if empty {
                    line.push_str(&format!(
                        ": FAILED: no user entry is in it, while {} are under ldap.base_dn (are its members \
                         matched by ldap.user_filter, and is ldap.member_attribute {:?} the attribute that lists \
                         them?)",
                        snapshot.users_seen, s.member_attribute
                    ));
                }
                found.add(1, "group", Some(&g.name), !empty, line);
                for c in &group.collisions {
                    let line = format!("problem: username {:?} is ambiguous: {:?}", c.username.as_str(), c.dns);
                    found.add(2, "ambiguous_username", Some(c.username.as_str()), false, line);
                }
            }
            Err(e) => {
                found.add(1, "group", Some(&g.name), false, format!("group {:?}: FAILED: {}", g.name, Escaped(&e)))
            }
        }
    }
    let (ok, line) = change_reads(config, &probe);
    found.add(0, "change_reads", None, ok, line);
    if config.schedule.watch {
        let (ok, line) = watch_line(config, &probe);
        found.add(0, "watch", None, ok, line);
    }
}

/// `check`'s line on `[schedule] watch`: whether the server can announce its changes to the daemon.
fn watch_line(config: &Config, probe: &ldap::Probe) -> (bool, String) {
    use ldap::ChangeDetection;
    let delay = humantime::format_duration(config.schedule.watch_delay);
    let refused = probe.content_sync_refused.as_deref();
    match (config.ldap.change_detection, probe.content_sync) {
        (ChangeDetection::Auto | ChangeDetection::Off | ChangeDetection::Syncrepl, Some(true)) if refused.is_some() => {
            (
                false,
                format!(
                    "watch: FAILED: schedule.watch = true, but the server lists content sync and refused a content-sync \
                 read of ldap.base_dn: {}, so runs would follow the schedule only; mend that or set watch = false",
                    refused.unwrap_or_default()
                ),
            )
        }
        (ChangeDetection::Auto | ChangeDetection::Off | ChangeDetection::Syncrepl, Some(true)) => (
            true,
            format!(
                "watch: the server offers content sync: the daemon keeps a persistent search open and starts a run \
                 {delay} (schedule.watch_delay) after a change it announces{}",
                untried(probe)
            ),
        ),
        (ChangeDetection::Auto | ChangeDetection::Off | ChangeDetection::Dirsync | ChangeDetection::Usn, _)
            if probe.notifications == Some(true) =>
        {
            (
                true,
                format!(
                    "watch: the server offers change notifications (Active Directory) and no content sync: the daemon \
                 keeps a notification search open and starts a run {delay} (schedule.watch_delay) after a change to \
                 a user or group it announces; deletions and moves out of ldap.base_dn are not announced and wait \
                 for the schedule"
                ),
            )
        }
        (ChangeDetection::Auto | ChangeDetection::Off | ChangeDetection::Syncrepl, found) => (
            false,
            format!(
                "watch: FAILED: schedule.watch = true, but {}, so runs would follow the schedule only; {}",
                if found.is_none() {
                    "the root DSE could not be read or lists no control (hidden from this account)"
                } else if probe.notifications == Some(true) {
                    "the server offers change notifications (Active Directory), not content sync"
                } else {
                    "the server offers neither content sync (OpenLDAP: the syncprov overlay) nor change notifications \
                     (Active Directory)"
                },
                if probe.notifications == Some(true) {
                    "set ldap.change_detection = \"auto\" to watch by them, or set watch = false"
                } else {
                    "load the syncprov overlay or set watch = false"
                }
            ),
        ),
        (method @ (ChangeDetection::Dirsync | ChangeDetection::Usn), _) => (
            false,
            format!(
                "watch: FAILED: schedule.watch = true with ldap.change_detection = {:?}, but the root DSE could not \
                 be read or does not say the server is Active Directory, whose change notifications a watch uses \
                 there; runs would follow the schedule only",
                method.as_str()
            ),
        ),
        (method, _) => (
            false,
            format!(
                "watch: FAILED: schedule.watch = true, but ldap.change_detection = {:?} cannot announce changes \
                 (a watch is content sync's or change notifications' with \"auto\" or \"off\", content sync's \
                 with \"syncrepl\", change notifications' with \"dirsync\" or \"usn\"); set watch = false or \
                 change ldap.change_detection",
                method.as_str()
            ),
        ),
    }
}

/// What `check`'s content-sync lines add when the content-sync read it tried could not be made.
fn untried(probe: &ldap::Probe) -> String {
    match &probe.content_sync_untried {
        Some(why) => format!(" (a content-sync read to confirm it could not be made: {why})"),
        None => String::new(),
    }
}

/// `check`'s line on how the daemon will read the directory between full reads, from the root DSE.
fn change_reads(config: &Config, probe: &ldap::Probe) -> (bool, String) {
    use ldap::ChangeDetection;
    let every = humantime::format_duration(config.sync.full_sync_every);
    let refused = probe.content_sync_refused.as_deref();
    match (config.ldap.change_detection, &probe.dirsync, probe.content_sync) {
        (ChangeDetection::Off, ..) => (true, "change reads: off (ldap.change_detection = \"off\"): every run reads in full".into()),
        (ChangeDetection::ModifyTimestamp { margin }, ..) => modify_timestamp_reads(probe, margin, &every.to_string()),
        (method @ (ChangeDetection::Auto | ChangeDetection::Dirsync), Some(Ok(nc)), _) => {
            dirsync_reads(&config.ldap, method, nc, &every.to_string())
        }
        (ChangeDetection::Auto, Some(Err(why)), _) => match &probe.usn {
            Some(Ok(nc)) => usn_reads(&config.ldap, ChangeDetection::Auto, nc, &every.to_string(), Some(why)),
            Some(Err(not)) => (
                true,
                format!(
                    "change reads: none: the server is Active Directory, but DirSync cannot be used: {why}; nor \
                     uSNChanged: {not}: every run reads in full"
                ),
            ),
            None => (
                true,
                format!(
                    "change reads: none: the server is Active Directory, but DirSync cannot be used: {why}: every \
                     run reads in full"
                ),
            ),
        },
        (ChangeDetection::Usn, ..) => match &probe.usn {
            Some(Ok(nc)) => usn_reads(&config.ldap, ChangeDetection::Usn, nc, &every.to_string(), None),
            Some(Err(why)) => (
                false,
                format!(
                    "change reads: FAILED: ldap.change_detection = \"usn\", but {why}; every run reads in full; set \
                     \"auto\" or \"off\", or mend that"
                ),
            ),
            None => (
                false,
                "change reads: FAILED: ldap.change_detection = \"usn\", but the server's root DSE does not say it is \
                 Active Directory (uSNChanged is Active Directory's, and Samba AD's), so every run reads in full; set \
                 \"auto\" or \"off\""
                    .into(),
            ),
        },
        (ChangeDetection::Dirsync, Some(Err(why)), _) => (
            false,
            format!(
                "change reads: FAILED: ldap.change_detection = \"dirsync\", but {why}; every run reads in full; \
                 set \"auto\" or \"off\", or mend that"
            ),
        ),
        (ChangeDetection::Dirsync, None, _) => (
            false,
            "change reads: FAILED: ldap.change_detection = \"dirsync\", but the server's root DSE does not say it is \
             Active Directory (DirSync is Active Directory's, and Samba AD's), so every run reads in full; set \
             \"auto\" or \"off\""
                .into(),
        ),
        (ChangeDetection::Syncrepl, _, Some(true)) if refused.is_some() => (
            false,
            format!(
                "change reads: FAILED: ldap.change_detection = \"syncrepl\", but the server lists content sync and \
                 refused a content-sync read of ldap.base_dn: {}; every run reads in full; mend that, or set \"auto\" \
                 or \"off\"",
                refused.unwrap_or_default()
            ),
        ),
        (_, _, Some(true)) if refused.is_some() => (
            true,
            format!(
                "change reads: none: the server lists content sync but refused a content-sync read of \
                 ldap.base_dn: {}: every run reads in full",
                refused.unwrap_or_default()
            ),
        ),
        (_, _, Some(true)) => (
            true,
            format!(
                "change reads: the server offers content sync (RFC 4533): the daemon reads what changed between full \
                 reads (at least every {every}, sync.full_sync_every); the bind account needs no size limit on those \
                 searches, which cannot be paged{}",
                untried(probe)
            ),
        ),
        (ChangeDetection::Auto, _, found) => (
            true,
            format!(
                "change reads: none: {}: every run reads in full",
                if found.is_none() { "the root DSE could not be read or lists no control (hidden from this account)" } else { "the server does not offer content sync (OpenLDAP: the syncprov overlay)" }
            ),
        ),
        (ChangeDetection::Syncrepl, ..) => (
            false,
            "change reads: FAILED: ldap.change_detection = \"syncrepl\", but the server does not list content sync \
             (OpenLDAP: load the syncprov overlay on this database), so every run reads in full; set \"auto\" or \"off\""
                .into(),
        ),
    }
}

/// `check`'s line on DirSync change reads that work for this account (`nc`: the naming context read).
fn dirsync_reads(s: &ldap::Settings, method: ldap::ChangeDetection, nc: &str, every: &str) -> (bool, String) {
    let line = format!(
        "change reads: dirsync (Active Directory): between full reads (at least every {every}, \
         sync.full_sync_every) the daemon reads what changed in {nc} with DirSync and reads each user or group it \
         names again"
    );
    match ldap::changes::kept::in_chain_refusal(s) {
        None => (true, line),
        Some(why) if method == ldap::ChangeDetection::Auto => {
            (true, format!("{line}; but {why}: every run reads in full"))
        }
        Some(why) => (false, format!("change reads: FAILED: {why}: every run reads in full")),
    }
}

/// `check`'s line on `uSNChanged` change reads that work for this account (`nc`: the naming context read;
/// `instead_of`: why DirSync cannot be used, when `auto` falls back to them).
fn usn_reads(
    s: &ldap::Settings,
    method: ldap::ChangeDetection,
    nc: &str,
    every: &str,
    instead_of: Option<&String>,
) -> (bool, String) {
    let why_not_dirsync = instead_of.map(|why| format!(" (DirSync cannot be used: {why})")).unwrap_or_default();
    let line = format!(
        "change reads: usn (Active Directory){why_not_dirsync}: between full reads (at least every {every}, \
         sync.full_sync_every) the daemon reads what changed in {nc} by uSNChanged, and the objects deleted in \
         CN=Deleted Objects, and reads each user or group changed again"
    );
    match ldap::changes::kept::in_chain_refusal(s) {
        None => (true, line),
        Some(why) if method == ldap::ChangeDetection::Auto => {
            (true, format!("{line}; but {why}: every run reads in full"))
        }
        Some(why) => (false, format!("change reads: FAILED: {why}: every run reads in full")),
    }
}

/// `check`'s line on `modify_timestamp` change reads: whether the sampled user entries carry what they need.
fn modify_timestamp_reads(probe: &ldap::Probe, margin: std::time::Duration, every: &str) -> (bool, String) {
    if probe.stamped < probe.sampled {
        return (
            false,
            format!(
                "change reads: FAILED: ldap.change_detection = \"modify_timestamp\", but {} of the {} user entries \
                 sampled came without entryUUID or modifyTimestamp (the bind account must be allowed to read both; \
                 Active Directory has no entryUUID), so every run reads in full; set \"auto\" or \"off\"",
                probe.sampled - probe.stamped,
                probe.sampled
            ),
        );
    }
    (
        true,
        format!(
            "change reads: modify_timestamp: between full reads (at least every {every}, sync.full_sync_every) the \
             daemon reads the entries whose modifyTimestamp is at most {} (ldap.modify_timestamp_margin) before the \
             latest it read; it cannot see an entry deleted or moved away, so leavers and removals from CloudShell \
             groups wait for a full read",
            humantime::format_duration(margin)
        ),
    )
}

/// Why the users search found nobody to import: no entry matches `ldap.user_filter`, or the entries that do
/// lack `ldap.username_attribute` (naming the attributes they have, and the one probably meant).
fn no_users(s: &ldap::Settings, probe: &ldap::Probe) -> String {
    if probe.sampled == 0 {
        return format!(
            "no entry under ldap.base_dn {:?} matches ldap.user_filter {:?}: nobody would be imported; fix \
             ldap.user_filter (\"(objectClass=inetOrgPerson)\" on OpenLDAP, \"(&(objectCategory=person)\
             (objectClass=user))\" on Active Directory)",
            s.base_dn, s.user_filter
        );
    }
    if probe.with_username == 0 {
        let hint = match probe.suggestion() {
            Some(attribute) => format!(": did you mean {attribute}?"),
            None => String::new(),
        };
        return format!(
            "no user entry carries ldap.username_attribute {:?}, so nobody would be imported; the {} entries \
             sampled have {}{hint}",
            s.username_attribute,
            probe.sampled,
            probe.attributes.join(", ")
        );
    }
    format!(
        "no user entry has a usable ldap.username_attribute {:?} (blank, too long or not text: the `user \
         skipped` log line names some), so nobody would be imported",
        s.username_attribute
    )
}

/// `check`'s lines for the mapped CloudShell groups: found (id, members) or missing.
async fn check_mapped_groups(client: &cloudshell::Client, config: &Config, found: &mut Findings) {
    let targets = sync::membership::cloudshell_groups(&config.sync.mappings);
    if targets.is_empty() {
        return;
    }
    let groups = match client.list_groups().await {
        Ok(g) => g,
        Err(e) => {
            return found.add(
                1,
                "cloudshell_groups",
                None,
                false,
                format!("cloudshell groups: FAILED: {}", Escaped(&e)),
            );
        }
    };
    for (name, fed_by) in targets {
        let fed_by = fed_by.iter().map(GroupName::as_str).collect::<Vec<_>>().join(", ");
        let (ok, detail) = match sync::membership::find_group(&groups, &name) {
            None => (false, format!("MISSING (mapped from {fed_by}); create it in CloudShell")),
            Some(g) => match client.group_users(g.id).await {
                Ok(Some(users)) => (true, format!("id {}, {} members (mapped from {fed_by})", g.id, users.len())),
                Ok(None) => (false, "FAILED: it vanished while it was read".to_string()),
                Err(e) => (false, format!("FAILED: {}", Escaped(&e))),
            },
        };
        found.add(1, "cloudshell_group", Some(&name), ok, format!("cloudshell group {name:?}: {detail}"));
    }
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{DisabledReport, GroupReport, Imports, LeaversReport, MembershipReport};

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once(NAME).chain(args.iter().copied()))
    }

    /// A content-sync read `check` could not make (a timeout, a lost connection) says nothing of whether the server
    /// takes it: the lines still say the server offers content sync, and that it could not be confirmed. Only a
    /// refusal makes them say every run reads in full (failing with "syncrepl", and for a watch).
    #[test]
    fn a_content_sync_read_that_could_not_be_made_is_no_refusal() {
        let config = |method: &str| {
            crate::config::for_tests(&format!("change_detection = \"{method}\""), "\n[schedule]\nwatch = true\n")
        };
        let probe = |refused: Option<&str>, untried: Option<&str>| ldap::Probe {
            served_by: "ldap://127.0.0.1:1".into(),
            base_dn_missing: None,
            sampled: 1,
            with_username: 1,
            stamped: 1,
            attributes: vec!["uid".into()],
            content_sync: Some(true),
            content_sync_refused: refused.map(str::to_string),
            content_sync_untried: untried.map(str::to_string),
            notifications: None,
            dirsync: None,
            usn: None,
        };
        let untried = probe(None, Some("timed out"));
        for method in ["auto", "syncrepl"] {
            let (ok, line) = change_reads(&config(method), &untried);
            assert!(
                ok && line.contains("offers content sync") && line.contains("could not be made: timed out"),
                "{line}"
            );
            let (ok, line) = watch_line(&config(method), &untried);
            assert!(
                ok && line.contains("offers content sync") && line.contains("could not be made: timed out"),
                "{line}"
            );
        }
        // The controls: a refusal.
        let refused = probe(Some("no overlay"), None);
        let (ok, line) = change_reads(&config("syncrepl"), &refused);
        assert!(!ok && line.contains("FAILED") && line.contains("no overlay"), "{line}");
        let (ok, line) = change_reads(&config("auto"), &refused);
        assert!(ok && line.contains("change reads: none") && line.contains("no overlay"), "{line}");
        let (ok, line) = watch_line(&config("auto"), &refused);
        assert!(!ok && line.contains("FAILED") && line.contains("no overlay"), "{line}");
    }

    #[test]
    fn config_is_taken_before_or_after_the_command_and_as_c() {
        for args in [
            &["sync", "--config", "/x.toml"][..],
            &["--config", "/x.toml", "sync"],
            &["-c", "/x.toml", "sync"],
            &["sync", "-c", "/x.toml"],
            &["sync", "--dry-run", "-c/x.toml"],
            &["--config=/x.toml", "status", "--json"],
        ] {
            let cli = parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert_eq!(cli.config.as_deref(), Some(Path::new("/x.toml")), "{args:?}");
        }
        for command in ["sync", "run", "check", "status"] {
            assert!(parse(&[command, "-c", "/x.toml"]).is_ok(), "{command}");
        }
    }

    #[test]
    fn the_option_wins_over_the_environment_which_wins_over_the_default() {
        let env = |v: &str| Some(std::ffi::OsString::from(v));
        assert_eq!(config_path(Some(Path::new("/flag.toml")), env("/env.toml")), Path::new("/flag.toml"));
        assert_eq!(config_path(None, env("/env.toml")), Path::new("/env.toml"));
        assert_eq!(config_path(None, None), Path::new(DEFAULT_CONFIG));
        assert_eq!(config_path(None, env("")), Path::new(DEFAULT_CONFIG), "set but empty counts as unset");
        // The help names both, as the code has them.
        let help = command().render_long_help().to_string();
        assert!(help.contains(CONFIG_ENV) && help.contains(DEFAULT_CONFIG), "{help}");
    }

    #[test]
    fn verbose_and_quiet_count_before_or_after_the_command_and_offset_each_other() {
        assert_eq!(parse(&["sync"]).unwrap().verbosity(), 0);
        assert_eq!(parse(&["-vv", "sync"]).unwrap().verbosity(), 2);
        assert_eq!(parse(&["sync", "-v", "--verbose"]).unwrap().verbosity(), 2);
        assert_eq!(parse(&["check", "-q"]).unwrap().verbosity(), -1);
        assert_eq!(parse(&["-qqq", "run"]).unwrap().verbosity(), -3);
        assert_eq!(parse(&["-v", "sync", "-q"]).unwrap().verbosity(), 0);
        assert_eq!(parse(&["-vvv", "sync", "-q"]).unwrap().verbosity(), 2);
    }

    #[test]
    fn check_waits_for_a_connection_or_a_login_at_most_ten_seconds() {
        assert_eq!(probe_timeout(Duration::from_secs(30)), Duration::from_secs(10), "the default timeout, capped");
        assert_eq!(probe_timeout(Duration::from_secs(2)), Duration::from_secs(2), "a shorter one as it is");
    }

    #[test]
    fn check_takes_json_and_the_detailed_exit_code_needs_a_dry_run() {
        assert!(matches!(parse(&["check", "--json"]).unwrap().command, Command::Check { json: true }));
        let cli = parse(&["sync", "--dry-run", "--detailed-exitcode"]).unwrap();
        assert!(matches!(cli.command, Command::Sync { dry_run: true, detailed_exitcode: true, .. }));
        let e = parse(&["sync", "--detailed-exitcode"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument, "{e}");
        assert!(e.to_string().contains("--dry-run"), "{e}");
    }

    #[test]
    fn the_chmod_check_prints_names_the_directory_as_one_shell_word() {
        assert_eq!(shell_word("/var/lib/cloudshell-ldap-sync"), "/var/lib/cloudshell-ldap-sync");
        assert_eq!(shell_word("/srv/sync state"), "'/srv/sync state'");
        assert_eq!(shell_word("/srv/it's"), "'/srv/it'\\''s'");
        assert_eq!(shell_word(""), "''");
    }

    #[test]
    fn a_plan_has_changes_when_it_imports_places_removes_or_deactivates() {
        let dry = || Report::new("r".into(), true);
        let group = |planned: &[&str]| {
            let planned = planned.iter().map(|u| u.to_string()).collect();
            GroupReport::enumerated("Team", (1, 0), planned, Vec::new(), Imports::default(), GroupStatus::Planned)
        };
        let mut report = dry();
        report.groups.push(group(&[]));
        report.memberships.push(MembershipReport::new("Lab", Some(1), &[GroupName::new("Team")], 1));
        report.leavers = Some(LeaversReport::new("deactivate"));
        report.disabled_accounts = Some(DisabledReport::new("import_then_deactivate"));
        assert!(!plans_changes(&report), "everything in step: nothing to do");

        let mut imports = report.clone();
        imports.groups.push(group(&["alice"]));
        assert!(plans_changes(&imports));
        for (add, remove) in [(true, false), (false, true)] {
            let mut placing = report.clone();
            let line = &mut placing.memberships[0];
            line.planned_add = if add { vec!["alice".into()] } else { vec![] };
            line.planned_remove = if remove { vec!["bob".into()] } else { vec![] };
            assert!(plans_changes(&placing), "add {add}, remove {remove}");
        }
        let mut leaving = report.clone();
        leaving.leavers.as_mut().unwrap().status = GroupStatus::Planned;
        assert!(plans_changes(&leaving));
        leaving.leavers = Some(LeaversReport { status: GroupStatus::Planned, ..LeaversReport::new("report") });
        assert!(!plans_changes(&leaving), "action = \"report\" writes nothing");
        let mut disabled = report.clone();
        disabled.disabled_accounts.as_mut().unwrap().status = GroupStatus::Planned;
        assert!(plans_changes(&disabled));
    }
}
