//! Watching the directory (`[schedule] watch = true`): a task that keeps a persistent search open on its own
//! connection, and tells the daemon each time the directory announces a change to the users or groups under the
//! base DN ([`Announced`]). The search is content sync's refreshAndPersist (RFC 4533, OpenLDAP's `syncprov`) or,
//! with `ldap.change_detection = "auto"` or `"off"` on a server without content sync that offers them, Active
//! Directory's change notifications (`ldap::changes::notification`). It reads nothing else: the run the daemon
//! starts reads the changes, as any run does.
//!
//! A watch that drops (the server restarted, an idle or time limit, the network) is opened again with backoff:
//! 1 s, doubling up to 1 min, and back to 1 s once a watch has lasted a minute. While it is down the schedule
//! carries on, the `watch_up` gauge is 0 and the log says why (`watch down`); when it is back, one run follows,
//! since what changed meanwhile was not announced. A directory that cannot push (neither method on the server,
//! or `ldap.change_detection` set to a method without it) is said once (`watch unavailable`), and the schedule
//! alone starts runs; a server that refused is tried again every minute.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::ldap::changes::syncrepl::{Notice, SyncError};
use crate::ldap::{self, ChangeDetection};
use crate::monitor::{Metrics, WatchState};

/// The first wait before a dropped watch is opened again, doubled at each failure.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait; a watch that lasted this long starts again from [`FIRST_BACKOFF`].
const LAST_BACKOFF: Duration = Duration::from_secs(60);

/// Changes announced and not yet taken by the daemon: however many, one wake-up and the time of the first, so
/// that a storm of changes costs no memory and becomes one run.
#[derive(Debug, Default)]
pub struct Announced {
    notify: Notify,
    first: Mutex<Option<Instant>>,
    /// The daemon holds a run for changes announced before, that has not started reading yet.
    due: AtomicBool,
}

impl Announced {
    /// A change was announced now.
    pub fn announce(&self) {
        let mut first = self.first.lock().unwrap_or_else(|p| p.into_inner());
        first.get_or_insert_with(Instant::now);
        drop(first);
        self.notify.notify_one();
    }

    /// Whether a change announced now would be read anyway: one announced before waits for a run that has not
    /// started reading (not yet taken by the daemon, or taken and its run due).
    pub fn waiting(&self) -> bool {
        self.due.load(Ordering::Relaxed) || self.first.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    /// The daemon says whether it holds a run due for changes announced before, not started yet.
    pub fn set_due(&self, due: bool) {
        self.due.store(due, Ordering::Relaxed);
    }

    /// Waits for an announcement; returns when the first change not yet taken was announced.
    pub async fn next(&self) -> Instant {
        self.notify.notified().await;
        self.first.lock().unwrap_or_else(|p| p.into_inner()).take().unwrap_or_else(Instant::now)
    }
}

/// The watch task; ended when dropped.
#[derive(Debug)]
pub struct Watch {
    stop: CancellationToken,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Starts watching with `config`, when `[schedule] watch` asks for it and the method can push; `None`
/// otherwise (said in the log when watching was asked for). `catch_up`: announce a change once the watch is up
/// (after a reload: what changed while no watch was up was not announced).
pub fn start(
    config: &Arc<Config>,
    announced: &Arc<Announced>,
    metrics: &Arc<Metrics>,
    catch_up: bool,
) -> Option<Watch> {
    if !config.schedule.watch {
        metrics.set_watch(None);
        return None;
    }
    let method = config.ldap.change_detection;
    if matches!(method, ChangeDetection::ModifyTimestamp { .. }) {
        let reason = format!(
            "ldap.change_detection = {:?} cannot announce changes: watching needs content sync (\"auto\", \"off\" \
             or \"syncrepl\", OpenLDAP's syncprov overlay) or change notifications (\"auto\", \"off\", \
             \"dirsync\" or \"usn\", Active Directory)",
            method.as_str()
        );
        tracing::warn!(reason = %reason, "watch unavailable, runs follow the schedule only");
        metrics.set_watch(Some(WatchState::now(false, Some(reason))));
        return None;
    }
    metrics.set_watch(Some(WatchState::now(false, Some("connecting".into()))));
    let stop = CancellationToken::new();
    let task = watch(config.clone(), announced.clone(), metrics.clone(), stop.clone(), catch_up);
    tokio::spawn(task);
    Some(Watch { stop })
}

/// Watches until `stop`, opening the watch again whenever it drops. A server that refuses the method is said
/// once and tried again every [`LAST_BACKOFF`] (with several `ldap.url`s, a failover may have reached a replica
/// without it).
async fn watch(
    config: Arc<Config>,
    announced: Arc<Announced>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
    catch_up: bool,
) {
    let (mut backoff, mut returning, mut refused) = (FIRST_BACKOFF, catch_up, false);
    loop {
        let began = Instant::now();
        // Biased: once stopped (a reload's new watch may have set the metrics already), nothing more is recorded.
        let why = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            why = once(&config, &announced, &metrics, returning) => why,
        };
        metrics.set_watch(Some(WatchState::now(false, Some(why.to_string()))));
        if began.elapsed() >= LAST_BACKOFF {
            backoff = FIRST_BACKOFF;
        }
        if why.is_refusal() {
            if !refused {
                tracing::error!(reason = %why, "watch unavailable, runs follow the schedule only");
            }
            (refused, backoff) = (true, LAST_BACKOFF);
        } else {
            tracing::warn!(reason = %why, retry_in_ms = backoff.as_millis() as u64, "watch down");
        }
        returning = true;
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(LAST_BACKOFF);
    }
}

/// One watch, from connecting to its end; returns why it ended. `returning`: a watch dropped before this one,
/// so what changed meanwhile calls for a run once this one is established.
async fn once(config: &Config, announced: &Announced, metrics: &Metrics, returning: bool) -> SyncError {
    let connection = match ldap::Connection::open(&config.ldap).await {
        Ok(c) => c,
        Err(e) => return SyncError::Connect(e.to_string()),
    };
    let server = connection.url().to_string();
    connection
        .watch(
            || announced.waiting(),
            |notice| match notice {
                Notice::Changed => announced.announce(),
                Notice::Persisting { by } => {
                    metrics.set_watch(Some(WatchState::now(true, None)));
                    tracing::info!(server = %server, method = by, "watching the directory");
                    if returning {
                        announced.announce();
                    }
                }
            },
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn many_announcements_wake_the_daemon_once_with_the_time_of_the_first() {
        let announced = Announced::default();
        let before = Instant::now();
        announced.announce();
        let first = *announced.first.lock().unwrap();
        for _ in 0..100_000 {
            announced.announce();
        }
        let taken = tokio::time::timeout(Duration::from_secs(1), announced.next()).await.expect("a wake-up");
        assert_eq!(Some(taken), first);
        assert!(taken >= before);
        let again = tokio::time::timeout(Duration::from_millis(50), announced.next()).await;
        assert!(again.is_err(), "the storm was one wake-up");
        announced.announce();
        assert!(tokio::time::timeout(Duration::from_secs(1), announced.next()).await.expect("another") > taken);
    }

    #[tokio::test]
    async fn a_change_waits_while_announced_and_not_taken_or_while_the_daemon_holds_a_run_due() {
        let announced = Announced::default();
        assert!(!announced.waiting());
        announced.announce();
        assert!(announced.waiting(), "not taken yet");
        announced.next().await;
        assert!(!announced.waiting(), "taken, and no run due");
        announced.set_due(true);
        assert!(announced.waiting(), "a run due");
        announced.set_due(false);
        assert!(!announced.waiting());
    }
}
