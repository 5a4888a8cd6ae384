//! cloudshell-ldap-sync imports the members of directory (LDAP / Active Directory) groups into Quali
//! CloudShell through its Admin REST API.
//!
//! One run ([`sync::run`]) goes:
//! 1. [`ldap::Connection::open`]: connect and bind (nothing else happens when the directory is unreachable);
//! 2. [`ldap::Connection::read`] then [`ldap::resolve`], overlapped with [`cloudshell::Client::list_users`]:
//!    what the directory says, each configured group's effective members from it, and every CloudShell user;
//! 3. [`sync::plan::plan`]: the pure decision (who is missing, who imports whom, safety limits);
//! 4. [`sync::apply::apply_group`]: the writes, group by group, with their fallbacks;
//! 5. [`report::Report`]: what happened, as JSON or text, with the exit code ([`exit`]);
//!    [`status::record`] keeps it in the state directory.
//!
//! The commands ([`cli`]) and the daemon ([`daemon`], driven by [`schedule`]) only call that flow. See
//! `ARCHITECTURE.md` for where each kind of rule lives.
//!
//! Modules, one concern each:
//! - [`audit`]: the audit rows of a finished run's imports, additions to CloudShell groups and holds.
//! - [`cli`]: the command line; maps results onto exit codes.
//! - [`cloudshell`]: the Admin API client (session and endpoints).
//! - [`config`]: the configuration file, raw and validated.
//! - [`daemon`]: the long-running `run` command: schedule, signals, systemd, status and metrics.
//! - [`exit`]: the process exit codes.
//! - [`history`]: the audit trail as `history` shows it.
//! - [`ldap`]: the directory snapshot (each configured group's effective members).
//! - [`lock`]: one run at a time across processes.
//! - [`logging`]: log output, text or JSON.
//! - [`group_name`]: the directory group name type, compared as LDAP's caseIgnoreMatch.
//! - [`manual`]: the manual page.
//! - [`monitor`]: the Prometheus metrics and `/healthz`.
//! - [`progress`]: the `read progress` events of long reads.
//! - [`report`]: the run report and its assembly rules.
//! - [`schedule`]: cron expressions and when the next run is due.
//! - [`state`]: the small persistent state (the shrink guard's counts) and atomic file writes.
//! - [`status`]: the status file written after each run.
//! - [`stop`]: a run's stop requests.
//! - [`tls`]: whom a TLS client trusts (`*.ca_file`) and what a failed handshake means.
//! - [`sync`]: one cycle: its order, the plan (pure) and the writes.
//! - [`username`]: the case-insensitive username type every comparison uses.

pub mod audit;
pub mod cli;
pub mod cloudshell;
pub mod config;
pub mod daemon;
pub mod exit;
pub mod files;
pub mod group_name;
pub mod history;
pub mod ldap;
pub mod lock;
pub mod logging;
pub mod manual;
pub mod monitor;
pub mod progress;
pub mod report;
pub mod schedule;
pub mod state;
pub mod status;
pub mod stop;
pub mod sync;
pub mod tls;
pub mod username;
pub mod watch;

/// The version, with the commit it was built from when built from a git checkout (set by `build.rs`). At the
/// crate's root, so that the command line and the manual pages take it from one place.
pub const VERSION: &str = env!("CLOUDSHELL_LDAP_SYNC_VERSION");

/// The room a list kept from one run to the next (CloudShell's users, the managed users) is given beyond what it
/// holds: a sixty-fourth more (1,500 at 100,000), so that a day of new hires joins it without a copy of the whole
/// list, which growing by doubling would make.
pub(crate) fn room_for_new_hires(len: usize) -> usize {
    len / 64
}
