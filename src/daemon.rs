//! The long-running daemon (`run`): cycles on the schedule, never two runs at once, reloads its
//! configuration on request, reports to systemd, the status file and the metrics endpoint, and stops
//! cleanly. Signals are turned into [`Control`] messages and a stop token by the caller (`cli`), so tests
//! drive the daemon directly.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{self, Config};
use crate::monitor::{self, Metrics};
use crate::report::Report;
use crate::schedule::{Clock, Ticker};
use crate::status::{self, Status};
use crate::stop::Stops;
use crate::{lock, sync, watch};

/// Requests to the running daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Read the configuration file again (SIGHUP).
    Reload,
    /// Run now, outside the schedule (SIGUSR1).
    RunNow,
}

/// How long a run whose calls were abandoned may take to record itself.
const ABANDON_GRACE: Duration = Duration::from_secs(5);

/// How the daemon is wired to the outside world.
pub struct Options {
    pub clock: Clock,
    /// After a stop request, how long the run in progress may take to reach a point between calls.
    pub shutdown_grace: Duration,
}

impl Options {
    /// The grace for `config`: enough for the slowest call in flight to finish.
    pub fn for_config(config: &Config) -> Options {
        Options {
            clock: Clock::System,
            shutdown_grace: config.cloudshell.timeout.max(config.ldap.timeout).saturating_add(Duration::from_secs(5)),
        }
    }
}

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    // Harmless without systemd: no NOTIFY_SOCKET, nothing sent.
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

fn state_directory(config: &Config) -> PathBuf {
    config.monitor.state_directory_or_default()
}

struct Daemon {
    path: PathBuf,
    config: Arc<Config>,
    options: Options,
    metrics: Arc<Metrics>,
    ticker: Ticker,
    status: Option<Status>,
    stops: Stops,
    /// The managed users kept between runs.
    kept: Arc<sync::journal::KeptDatabase>,
    /// The directory model kept between runs for change reads.
    changes: Arc<sync::changes::ChangeReads>,
    /// The changes the watch announced, and the watch itself (`[schedule] watch`).
    announced: Arc<watch::Announced>,
    watch: Option<watch::Watch>,
}

impl Daemon {
    /// Starts a run; it yields no report when another process (a manual `sync`) holds the run lock.
    /// `announced`: for a run a change started, when that change was announced (the first write CloudShell
    /// answers is measured from there).
    fn start_run(&self, why: &'static str, announced: Option<Instant>) -> JoinHandle<Option<Report>> {
        tracing::info!(trigger = why, "run triggered");
        self.metrics.observe_trigger(why);
        let config = self.config.clone();
        self.changes.run_begins();
        let dir = state_directory(&config);
        let context = sync::Context {
            stops: self.stops.clone(),
            observer: Some(observer(self.metrics.clone(), announced)),
            state_directory: Some(dir.clone()),
            kept: Some(self.kept.clone()),
            changes: Some(self.changes.clone()),
            trigger: Some(why),
        };
        tokio::spawn(async move {
            let _lock = match lock::acquire_for_run(Some(&dir), &config.path) {
                Ok(l) => l,
                Err(e @ lock::Error::Busy { .. }) => {
                    tracing::warn!(error = %e, "run skipped, another run holds the lock");
                    return None;
                }
                Err(e) => {
                    // Without the lock nothing guarantees one run at a time: do nothing.
                    tracing::error!(error = %e, "run skipped, the run lock cannot be used");
                    return None;
                }
            };
            Some(sync::run_caught(&config, false, &context).await)
        })
    }

    /// Records a run that ended: its report, or a failed run when its task ended without one (a panic outside
    /// the run itself), so that the status file, metrics and `/healthz` never lose a run.
    fn settle(&mut self, joined: Result<Option<Report>, tokio::task::JoinError>) {
        match joined {
            Ok(Some(report)) => self.finished(&report),
            Ok(None) => {}
            Err(e) => {
                let report = match e.try_into_panic() {
                    Ok(panic) => sync::panicked(false, panic.as_ref()),
                    Err(e) => sync::panicked(false, &e.to_string()),
                };
                self.finished(&report);
            }
        }
    }

    fn finished(&mut self, report: &Report) {
        self.metrics.observe_run(report);
        let next = self.ticker.next_due().map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        let dir = state_directory(&self.config);
        let status = status::record(&dir, self.status.as_ref(), report, next.clone(), self.metrics.watch());
        self.status = Some(status);
        let line = format!(
            "last run {}: {} imported, {} failed; next run {}",
            report.result.as_str(),
            report.totals.imported,
            report.totals.failed,
            next.as_deref().unwrap_or("none")
        );
        notify(&[sd_notify::NotifyState::Status(&line)]);
    }

    fn reload(&mut self) {
        notify(&[sd_notify::NotifyState::Reloading]);
        match config::load(&self.path) {
            Ok(new) => {
                for w in &new.warnings {
                    tracing::warn!(warning = %w, "configuration warning");
                }
                if new.monitor.listen != self.config.monitor.listen {
                    tracing::warn!("a change of [monitor] listen takes effect at the next restart");
                }
                if new.schedule.schedule.expression() != self.config.schedule.schedule.expression()
                    || new.schedule.schedule.timezone() != self.config.schedule.schedule.timezone()
                {
                    self.ticker = Ticker::new(new.schedule.schedule.clone(), self.options.clock);
                    self.metrics.observe_schedule(&new.schedule.schedule, self.options.clock.now());
                }
                tracing::info!(
                    groups = new.sync.groups.len(),
                    cron = new.schedule.schedule.expression(),
                    "configuration reloaded"
                );
                self.config = Arc::new(new);
                // What the last run decided rests on the configuration it had.
                self.changes.forget_run();
                // The watch again, with the new configuration (the old one ends first); a run follows once it is
                // up, for what changed while neither was watching.
                self.watch = None;
                self.watch = watch::start(&self.config, &self.announced, &self.metrics, true);
            }
            Err(e) => {
                tracing::error!(error = %e, "configuration reload failed, keeping the previous configuration");
            }
        }
        notify(&[sd_notify::NotifyState::Ready]);
    }
}

/// Tells the metrics about every CloudShell request and, for a run a change started (`announced`), the time
/// from that change to CloudShell's answer to the run's first write that went through.
fn observer(metrics: Arc<Metrics>, announced: Option<Instant>) -> crate::cloudshell::Observer {
    let measured = std::sync::atomic::AtomicBool::new(false);
    Arc::new(move |call, elapsed, status| {
        metrics.observe_request(call.as_str(), elapsed);
        if let Some(at) = announced
            && call.is_write()
            && status.is_some_and(|s| (200..300).contains(&s))
            && !measured.swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            metrics.observe_change_to_cloudshell(at.elapsed());
        }
    })
}

/// The runs the watch's announcements call for.
#[derive(Debug, Default)]
struct WatchRuns {
    /// A run to start once its delay is over and no run is going, and when the first change it covers was
    /// announced.
    due: Option<(tokio::time::Instant, Instant)>,
    /// The first change announced during the run going: the run that follows it.
    after_run: Option<Instant>,
    /// The first change announced before the run going started, which that run covers.
    covering: Option<Instant>,
}

impl WatchRuns {
    /// A change announced at `first`: a run `delay` from now, or one after the run going.
    fn announced(&mut self, first: Instant, running: bool, delay: Duration) {
        if running {
            self.after_run = Some(self.after_run.map_or(first, |earlier| earlier.min(first)));
        } else if self.due.is_none() {
            self.due = Some((tokio::time::Instant::now() + delay, first));
        }
    }

    /// A run starts, whatever started it: it covers the changes announced so far (its read comes after them).
    /// Returns when the first of them was announced.
    fn start(&mut self) -> Option<Instant> {
        self.covering = self.due.take().map(|(_, first)| first);
        self.covering
    }

    /// The run going ended: the changes announced during it, and those it covered if it was `skipped` (another
    /// process held the run lock), call for a run `delay` from now.
    fn run_ended(&mut self, skipped: bool, delay: Duration) {
        if let Some(covered) = self.covering.take().filter(|_| skipped) {
            self.after_run = Some(self.after_run.map_or(covered, |earlier| earlier.min(covered)));
        }
        if let Some(first) = self.after_run.take() {
            let at = self.due.map_or(first, |(_, earlier)| earlier.min(first));
            self.due = Some((tokio::time::Instant::now() + delay, at));
        }
    }

    /// Whether a run not started yet will read what changes now (one due, or one after the run going).
    fn will_read(&self) -> bool {
        self.due.is_some() || self.after_run.is_some()
    }

    /// Waits until the run due may start (never, without one).
    async fn wait(&self) {
        match self.due {
            Some((at, _)) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    }
}

impl Daemon {
    /// The daemon on `config`, with the status the last run left, its metrics and its watch started.
    fn new(path: &Path, config: Config, metrics: Arc<Metrics>, stops: &Stops, options: Options) -> Daemon {
        let status = match status::load(&state_directory(&config)) {
            Ok(status) => Some(status),
            Err(status::ReadError::Missing(_)) => None,
            Err(e) => {
                tracing::warn!(error = %e, "starting without the previous run's status");
                None
            }
        };
        let ticker = Ticker::new(config.schedule.schedule.clone(), options.clock);
        metrics.observe_schedule(&config.schedule.schedule, options.clock.now());
        let mut daemon = Daemon {
            path: path.to_path_buf(),
            config: Arc::new(config),
            options,
            metrics,
            ticker,
            status,
            stops: stops.clone(),
            kept: Default::default(),
            changes: Default::default(),
            announced: Default::default(),
            watch: None,
        };
        daemon.watch = watch::start(&daemon.config, &daemon.announced, &daemon.metrics, false);
        daemon
    }

    /// After a stop request: the watch ends at once, and the run going has its grace period to end, then its
    /// calls are abandoned; it is recorded when it ends.
    async fn stop(&mut self, running: Option<JoinHandle<Option<Report>>>) {
        self.watch = None;
        tracing::info!("stop requested, no new run will start");
        notify(&[sd_notify::NotifyState::Stopping]);
        let Some(mut handle) = running else { return };
        let joined = match tokio::time::timeout(self.options.shutdown_grace, &mut handle).await {
            Ok(joined) => Some(joined),
            Err(_) => {
                tracing::warn!(grace = ?self.options.shutdown_grace, "run still busy after the grace period, abandoning its calls");
                self.stops.abandon.cancel();
                tokio::time::timeout(ABANDON_GRACE, &mut handle).await.ok()
            }
        };
        match joined {
            Some(joined) => self.settle(joined),
            None => tracing::error!("run did not end after its calls were abandoned, leaving it unrecorded"),
        }
    }
}

/// Runs the daemon until `stop` is cancelled. Returns an error only when it cannot start (the monitoring
/// address cannot be bound).
pub async fn run(
    path: &Path,
    config: Config,
    mut controls: mpsc::Receiver<Control>,
    stops: Stops,
    options: Options,
) -> Result<(), monitor::BindError> {
    let metrics = Arc::new(Metrics::new());
    let monitor_stop = CancellationToken::new();
    let monitor = match config.monitor.listen {
        Some(addr) => {
            let listener = monitor::bind(addr).await?;
            tracing::info!(listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "monitoring endpoint listening");
            Some(tokio::spawn(monitor::serve(listener, metrics.clone(), monitor_stop.clone())))
        }
        None => None,
    };
    let mut daemon = Daemon::new(path, config, metrics, &stops, options);
    tracing::info!(
        cron = daemon.config.schedule.schedule.expression(),
        timezone = %daemon.config.schedule.schedule.timezone(),
        next_run = %daemon.ticker.next_due().map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)).unwrap_or_else(|| "none".into()),
        "daemon started"
    );
    notify(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status("started")]);

    let mut running: Option<JoinHandle<Option<Report>>> =
        if daemon.config.schedule.run_on_start { Some(daemon.start_run("start", None)) } else { None };
    let mut watch_runs = WatchRuns::default();
    let announced = daemon.announced.clone();
    let mut watchdog = sd_notify::watchdog_enabled().map(|period| tokio::time::interval(period / 2));

    loop {
        let delay = daemon.config.schedule.watch_delay;
        tokio::select! {
            biased;
            _ = stops.stop.cancelled() => break,
            joined = async { running.as_mut().expect("guarded by the if").await }, if running.is_some() => {
                running = None;
                let skipped = matches!(joined, Ok(None));
                daemon.settle(joined);
                watch_runs.run_ended(skipped, delay);
            }
            first = announced.next() => watch_runs.announced(first, running.is_some(), delay),
            _ = watch_runs.wait(), if running.is_none() => {
                let first = watch_runs.start();
                running = Some(daemon.start_run("watch", first));
            }
            control = controls.recv() => match control {
                Some(Control::Reload) => daemon.reload(),
                Some(Control::RunNow) if running.is_some() => tracing::info!(trigger = "signal", "run request skipped, a run is in progress"),
                Some(Control::RunNow) => {
                    watch_runs.start();
                    running = Some(daemon.start_run("signal", None));
                }
                None => {}
            },
            due = daemon.ticker.tick() => {
                if running.is_some() {
                    tracing::info!(scheduled = %due.to_rfc3339(), "tick skipped, a run is in progress");
                } else {
                    watch_runs.start();
                    running = Some(daemon.start_run("schedule", None));
                }
            }
            _ = async { watchdog.as_mut().expect("guarded by the if").tick().await }, if watchdog.is_some() => {
                notify(&[sd_notify::NotifyState::Watchdog]);
            }
        }
        // Before the loop yields: on this single-threaded runtime no run task started above has read anything
        // yet, and the watch skips no check on a stale "due".
        announced.set_due(watch_runs.will_read());
    }

    daemon.stop(running).await;
    monitor_stop.cancel();
    if let Some(m) = monitor {
        let _ = m.await;
    }
    tracing::info!("daemon stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::RunResult;

    fn daemon(state: &Path) -> Daemon {
        let text = format!(
            "[ldap]\nurl = \"ldap://127.0.0.1:1\"\nbind_dn = \"cn=svc\"\nbind_password_env = \"PW\"\nbase_dn = \"dc=x\"\n\
             [cloudshell]\nurl = \"http://127.0.0.1:1\"\npassword_env = \"PW\"\n\
             [sync]\ngroups = [\"Team\"]\n[monitor]\nstate_directory = \"{}\"\n",
            state.display()
        );
        let config = config::parse(Path::new("/etc/x.toml"), &text, &|_| Some("pw".into())).unwrap();
        let ticker = Ticker::new(config.schedule.schedule.clone(), Clock::System);
        Daemon {
            path: PathBuf::from("/etc/x.toml"),
            config: Arc::new(config),
            options: Options { clock: Clock::System, shutdown_grace: Duration::from_secs(1) },
            metrics: Arc::new(Metrics::new()),
            ticker,
            status: None,
            stops: Stops::default(),
            kept: Default::default(),
            changes: Default::default(),
            announced: Default::default(),
            watch: None,
        }
    }

    /// A change announced while a run is due, or during a run, would be read by a run that has not started
    /// reading (the watch then skips checking it); once that run starts, no longer.
    #[test]
    fn a_run_not_started_yet_will_read_what_changes_now() {
        let (mut runs, delay) = (WatchRuns::default(), Duration::from_millis(10));
        assert!(!runs.will_read(), "nothing announced");
        runs.announced(Instant::now(), false, delay);
        assert!(runs.will_read(), "a run due");
        runs.start();
        assert!(!runs.will_read(), "the run started: it may have read past a change made now");
        runs.announced(Instant::now(), true, delay);
        assert!(runs.will_read(), "a run after the one going");
        runs.run_ended(false, delay);
        assert!(runs.will_read(), "that run due");
        runs.start();
        runs.run_ended(false, delay);
        assert!(!runs.will_read());
    }

    // The test profile unwinds (as the release profile does): a panic in a run task reaches the daemon as a
    // JoinError, which must still be recorded as a run.
    #[tokio::test]
    async fn a_run_task_that_panics_is_recorded_as_a_failed_run() {
        let dir = tempfile::tempdir().unwrap();
        let mut daemon = daemon(dir.path());
        let task: JoinHandle<Option<Report>> = tokio::spawn(async { panic!("an index out of bounds, say") });
        daemon.settle(task.await);
        let status = status::load(dir.path()).expect("status.json written");
        let last = status.last_run.expect("the run is recorded");
        assert_eq!(last.result, "failed");
        assert!(last.error.as_deref().unwrap_or_default().contains("an index out of bounds, say"), "{:?}", last.error);
        assert_eq!(daemon.metrics.last_result(), Some(RunResult::Failed), "/healthz reports it");
        assert!(daemon.metrics.encode().contains("runs_total{result=\"failed\"} 1"), "{}", daemon.metrics.encode());
    }

    #[tokio::test]
    async fn a_panic_inside_a_run_becomes_the_report_of_a_failed_run() {
        let report = sync::caught(false, async { panic!("{}", "a formatted message") }).await;
        assert_eq!(report.result, RunResult::Failed);
        assert!(report.error.unwrap().contains("internal error (a bug, please report it): a formatted message"));
        let fine = sync::caught(true, async { Report::new("x".into(), true) }).await;
        assert_eq!((fine.result, fine.run_id.as_str()), (RunResult::Ok, "x"));
    }
}
