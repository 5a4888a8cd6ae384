//! The command line: `sync`, `run` and `check`, each with `--config`, mapped onto the library; it hands the
//! run's exit code ([`crate::exit`]) to the process. Command output goes to stdout; logs go to stderr.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::config::{self, Config, DisabledAccounts};
use crate::group_name::GroupName;
use crate::logging::{Escaped, LogFormat};
use crate::stop::Stops;
use crate::{cloudshell, daemon, exit, ldap, lock, logging, status, sync};

const DEFAULT_CONFIG: &str = "/etc/cloudshell-ldap-sync/config.toml";

/// The version, with the commit it was built from when built from a git checkout (set by `build.rs`).
pub const VERSION: &str = env!("CLOUDSHELL_LDAP_SYNC_VERSION");

/// Imports the members of directory (LDAP / Active Directory) groups into Quali CloudShell, places them in
/// CloudShell groups, and handles the people who leave.
#[derive(Parser, Debug)]
#[command(name = "cloudshell-ldap-sync", version = VERSION, about)]
pub struct Cli {
    /// Log format on stderr; overrides [log] format.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormatArg>,
    #[command(subcommand)]
    pub command: Command,
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
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Compute and print the plan; write nothing to CloudShell.
        #[arg(long)]
        dry_run: bool,
        /// Print the run report as one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// The long-running daemon: cycles on the configured schedule until SIGTERM or SIGINT.
    Run {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Validate the configuration, bind to LDAP, resolve every group, log in to CloudShell; change nothing.
    Check {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Show the last run from the status file; exit 0 when it was ok and is not stale and the next run is not
    /// overdue, 1 otherwise, 2 with no usable status file (missing, unreadable or damaged).
    Status {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Print the status file and the verdict as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script (bash, zsh or fish) on stdout.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) on stdout.
    #[command(hide = true)]
    Man,
}

/// The command line's definition, for the manual page and the completions.
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    Cli::command()
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
    let path = match &cli.command {
        Command::Sync { config, .. } | Command::Run { config } | Command::Check { config } => config.clone(),
        Command::Status { config, json } => return ExitCode::from(status_command(config, *json)),
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut command(), "cloudshell-ldap-sync", &mut std::io::stdout());
            return ExitCode::from(exit::OK);
        }
        Command::Man => {
            return match crate::manual::render(command(), &mut std::io::stdout()) {
                Ok(()) => ExitCode::from(exit::OK),
                Err(e) => {
                    eprintln!("error: cannot write the manual page: {e}");
                    ExitCode::from(exit::FATAL)
                }
            };
        }
    };
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
    logging::init(format);
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
            Command::Sync { dry_run, json, .. } => sync_command(&config, dry_run, json).await,
            Command::Check { .. } => check_command(&config).await,
            Command::Run { config: path } => run_command(&path, config).await,
            Command::Status { .. } | Command::Completions { .. } | Command::Man => unreachable!("handled above"),
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

async fn sync_command(config: &Config, dry_run: bool, json: bool) -> u8 {
    let context = sync::Context { state_directory: config.monitor.state_directory.clone(), ..Default::default() };
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
    // A one-shot run keeps the status file only where a state directory is configured.
    if let Some(dir) = &config.monitor.state_directory
        && !dry_run
    {
        status::record(dir, None, &report, None);
    }
    if json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    report.result.exit_code()
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

/// `check`: prints what it finds, one line per item, and what is wrong.
async fn check_command(config: &Config) -> u8 {
    let mut problems = 0usize;
    println!("config {}: ok", display(&config.path));
    for w in &config.warnings {
        println!("  warning: {w}");
    }
    match ldap::snapshot(&config.ldap, &config.sync.groups).await {
        Err(e) => {
            println!("directory {}: FAILED: {}", config.ldap.urls.join(", "), Escaped(&e));
            problems += 1;
        }
        Ok(snapshot) => {
            println!(
                "directory {}: bound as {:?}, {} users under {}",
                snapshot.served_by, config.ldap.bind_dn, snapshot.users_seen, config.ldap.base_dn
            );
            for g in &snapshot.groups {
                match &g.result {
                    Ok(group) => {
                        let nested = group.sources.len().saturating_sub(1);
                        println!(
                            "  group {:?}: {} members ({} nested groups, {} disabled left out) at {}",
                            g.name,
                            group.members.len(),
                            nested,
                            group.disabled_members,
                            Escaped(&group.dn)
                        );
                        for c in &group.collisions {
                            println!("    problem: username {:?} is ambiguous: {:?}", c.username.as_str(), c.dns);
                            problems += 1;
                        }
                    }
                    Err(e) => {
                        println!("  group {:?}: FAILED: {}", g.name, Escaped(&e));
                        problems += 1;
                    }
                }
            }
        }
    }
    match cloudshell::Client::new(config.cloudshell.clone()) {
        Err(e) => {
            println!("cloudshell {}: FAILED: {}", config.cloudshell.url, Escaped(&e));
            problems += 1;
        }
        Ok(client) => match client.login().await {
            Ok(()) => {
                println!("cloudshell {}: logged in as {:?}", config.cloudshell.url, config.cloudshell.username);
                problems += check_mapped_groups(&client, config).await;
            }
            Err(e) => {
                println!("cloudshell {}: FAILED: {}", config.cloudshell.url, Escaped(&e));
                problems += 1;
            }
        },
    }
    if problems == 0 {
        println!("all checks passed");
        exit::OK
    } else {
        println!("{problems} problem(s) found");
        exit::FATAL
    }
}

/// `check`'s lines for the mapped CloudShell groups: found (id, members) or missing. Returns the problems.
async fn check_mapped_groups(client: &cloudshell::Client, config: &Config) -> usize {
    let targets = sync::membership::cloudshell_groups(&config.sync.mappings);
    if targets.is_empty() {
        return 0;
    }
    let groups = match client.list_groups().await {
        Ok(g) => g,
        Err(e) => {
            println!("  cloudshell groups: FAILED: {}", Escaped(&e));
            return 1;
        }
    };
    let mut problems = 0;
    for (name, fed_by) in targets {
        let fed_by = fed_by.iter().map(GroupName::as_str).collect::<Vec<_>>().join(", ");
        match sync::membership::find_group(&groups, &name) {
            None => {
                println!("  cloudshell group {name:?}: MISSING (mapped from {fed_by}); create it in CloudShell");
                problems += 1;
            }
            Some(g) => match client.group_users(g.id).await {
                Ok(Some(users)) => {
                    println!("  cloudshell group {name:?}: id {}, {} members (mapped from {fed_by})", g.id, users.len())
                }
                Ok(None) => {
                    println!("  cloudshell group {name:?}: FAILED: it vanished while it was read");
                    problems += 1;
                }
                Err(e) => {
                    println!("  cloudshell group {name:?}: FAILED: {}", Escaped(&e));
                    problems += 1;
                }
            },
        }
    }
    problems
}

fn display(p: &Path) -> String {
    p.display().to_string()
}
