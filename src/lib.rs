//! cloudshell-ldap-sync imports the members of directory (LDAP / Active Directory) groups into Quali
//! CloudShell through its Admin REST API.
//!
//! Modules, one concern each:
//! - [`cloudshell`]: the Admin API client (login, list users, import by group or by user).
//! - [`config`]: the configuration file, raw and validated.
//! - [`ldap`]: the directory snapshot (each configured group's effective members).
//! - [`sync`]: one cycle: snapshot, plan (pure), apply group by group.
//! - [`report`]: the run report, as JSON and text.
//! - [`username`]: the case-insensitive username type every comparison uses.
//! - [`cli`]: the command line and its exit codes.

pub mod cli;
pub mod cloudshell;
pub mod config;
pub mod daemon;
pub mod ldap;
pub mod logging;
pub mod monitor;
pub mod report;
pub mod schedule;
pub mod state;
pub mod status;
pub mod sync;
pub mod username;
