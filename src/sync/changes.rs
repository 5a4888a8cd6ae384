//! How a run reads the directory: in full, or, in the daemon, only what changed since its last run.
//!
//! The daemon keeps the directory model its last full read built (`ldap::changes::kept`, OpenLDAP's content
//! sync) and, between full reads, applies to it what changed and resolves it as a full read would. A full read
//! happens on the daemon's first run, after a run that did not end `ok`, when `sync.full_sync_every` has passed,
//! whenever the model cannot answer (a setting changed, the server is behind its own answers, a member it cannot
//! compare) or the change read fails; a one-shot `sync` always reads in full. A change read's snapshot covers
//! the configured groups as a full read would, but its coverage is [`Coverage::Changes`]: additions only, with
//! leavers, removals from CloudShell groups and the shrink guard's reference left to the next full read.
//!
//! The model built by a run is kept for the next only when that run ended `ok` ([`ChangeReads::settle`]): the
//! watermark never moves past a run whose writes did not all go through.

use std::sync::Mutex;
use std::time::Instant;

use crate::config::Config;
use crate::ldap::changes::kept::Kept;
use crate::ldap::{self, ChangeDetection, Coverage, Snapshot};
use crate::report::ReadReport;

/// The daemon's change-read state, from one run to the next.
#[derive(Debug, Default)]
pub struct ChangeReads {
    /// The model kept from the last run that ended `ok`.
    kept: Mutex<Option<Model>>,
    /// The model this run read or built, kept if it ends `ok`.
    pending: Mutex<Option<Model>>,
    /// Why change reads are not available, as last logged: logged again only when it changes.
    unavailable: Mutex<Option<String>>,
}

#[derive(Debug)]
struct Model {
    kept: Kept,
    /// When the full read the model was built from began.
    full_at: Instant,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ChangeReads {
    /// Keeps the model this run read for the next run when the run ended `ok`; else the next run reads in
    /// full.
    pub fn settle(&self, ok: bool) {
        let pending = lock(&self.pending).take();
        *lock(&self.kept) = pending.filter(|_| ok);
    }

    /// Logs why change reads are not used, once for each reason.
    fn unavailable(&self, why: &str, explicit: bool) {
        let mut last = lock(&self.unavailable);
        if last.as_deref() == Some(why) {
            return;
        }
        if explicit {
            tracing::error!(reason = %why, "change reads unavailable, every run reads in full (ldap.change_detection = \"syncrepl\")");
        } else {
            tracing::info!(reason = %why, "change reads unavailable, every run reads in full");
        }
        *last = Some(why.to_string());
    }
}

/// What a run read of the directory: resolved for the configured groups, with its coverage.
pub struct Read {
    pub snapshot: Snapshot,
    pub report: ReadReport,
}

/// Reads the directory for the configured groups: the changes since the daemon's last run when it may
/// (`changes` is the daemon's state; `None`: a one-shot run), else in full.
pub async fn read(config: &Config, changes: Option<&ChangeReads>, connection: ldap::Connection<'_>) -> Read {
    let groups = &config.sync.groups;
    let method = config.ldap.change_detection;
    let plain = |reason: &str| ReadReport {
        mode: "full",
        method: None,
        reason: reason.to_string(),
        changed_users: 0,
        changed_groups: 0,
    };
    let full = |entries: &ldap::Entries| ldap::resolve(entries, &config.ldap, groups);
    let Some(state) = changes else {
        let snapshot = full(&connection.read(groups).await);
        return Read { snapshot, report: plain("a one-shot run reads in full") };
    };
    // Whatever an earlier run left pending (one that panicked) is not this run's.
    lock(&state.pending).take();
    if method == ChangeDetection::Off {
        lock(&state.kept).take();
        let snapshot = full(&connection.read(groups).await);
        return Read { snapshot, report: plain("ldap.change_detection = \"off\"") };
    }
    let every = config.sync.full_sync_every;
    let taken = lock(&state.kept).take();
    let mut connection = connection;
    let reason = match taken {
        None => "no directory model kept: the daemon's first run, or the last run did not end ok".to_string(),
        Some(_) if every.is_zero() => "sync.full_sync_every = \"0s\"".to_string(),
        Some(model) if model.full_at.elapsed() >= every => {
            format!("sync.full_sync_every ({}) has passed since the last full read", humantime::format_duration(every))
        }
        Some(mut model) => match connection.read_changes(&mut model.kept, groups).await {
            Ok((entries, read)) => {
                let report = ReadReport {
                    mode: "changes",
                    method: Some("syncrepl"),
                    reason: "the changes since the last run".to_string(),
                    changed_users: read.users.changed + read.users.gone,
                    changed_groups: read.groups.changed + read.groups.gone,
                };
                *lock(&state.pending) = Some(model);
                let snapshot = Snapshot { coverage: Coverage::Changes, ..full(&entries) };
                return Read { snapshot, report };
            }
            Err((back, why)) => {
                tracing::warn!(reason = %why, "change read not usable, reading in full");
                connection = back;
                why
            }
        },
    };
    let full_at = Instant::now();
    let (snapshot, built) = connection.read_keeping(groups).await;
    let method = match built {
        Ok(kept) => {
            *lock(&state.pending) = Some(Model { kept, full_at });
            *lock(&state.unavailable) = None;
            Some("syncrepl")
        }
        Err(why) => {
            state.unavailable(&why, method == ChangeDetection::Syncrepl);
            None
        }
    };
    Read { snapshot, report: ReadReport { method, ..plain(&reason) } }
}
