//! The command line: `sync`, `run` and `check`, each with `--config`, and the exit codes operators rely on.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit codes, as `shared/interface.md` promises them.
pub mod exit {
    pub const OK: u8 = 0;
    pub const FATAL: u8 = 1;
    pub const CONFIG: u8 = 2;
    pub const PARTIAL: u8 = 3;
    pub const HELD: u8 = 4;
}

/// Imports the members of directory groups into Quali CloudShell.
#[derive(Parser, Debug)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run one sync cycle now, then exit.
    Sync {
        #[arg(long, default_value = "/etc/cloudshell-ldap-sync/config.toml")]
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
        #[arg(long, default_value = "/etc/cloudshell-ldap-sync/config.toml")]
        config: PathBuf,
    },
    /// Validate the configuration, bind to LDAP, resolve every group, log in to CloudShell; change nothing.
    Check {
        #[arg(long, default_value = "/etc/cloudshell-ldap-sync/config.toml")]
        config: PathBuf,
    },
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::CONFIG
            } else {
                exit::OK
            });
        }
    };
    match cli.command {
        Command::Sync { .. } | Command::Run { .. } | Command::Check { .. } => {
            eprintln!("error: this command is not implemented yet");
            ExitCode::from(exit::CONFIG)
        }
    }
}
