//! The long-running daemon (`run`): cycles on the schedule, never two runs at once, reloads its
//! configuration on request, reports to systemd, the status file and the metrics endpoint, and stops
//! cleanly. Signals are turned into [`Control`] messages and a stop token by the caller (`cli`), so tests
//! drive the daemon directly.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{self, Config};
use crate::monitor::{self, Metrics};
use crate::report::Report;
use crate::schedule::{Clock, Ticker};
use crate::status::{self, Status};
use crate::{lock, sync};

/// Requests to the running daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Read the configuration file again (SIGHUP).
    Reload,
    /// Run now, outside the schedule (SIGUSR1).
    RunNow,
}

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
            shutdown_grace: config.cloudshell.timeout.max(config.ldap.timeout) + Duration::from_secs(5),
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
    stop: CancellationToken,
}

impl Daemon {
    /// Starts a run; it yields no report when another process (a manual `sync`) holds the run lock.
    fn start_run(&self, why: &str) -> JoinHandle<Option<Report>> {
        tracing::info!(trigger = why, "run triggered");
        let config = self.config.clone();
        let metrics = self.metrics.clone();
        let dir = state_directory(&config);
        let context = sync::Context {
            stop: self.stop.clone(),
            observer: Some(Arc::new(move |call, elapsed, _status| metrics.observe_request(call.as_str(), elapsed))),
            state_directory: Some(dir.clone()),
        };
        tokio::spawn(async move {
            let _lock = match lock::acquire(&lock::path_for(Some(&dir), &config.path)) {
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
            Some(sync::run(&config, false, &context).await)
        })
    }

    fn finished(&mut self, report: &Report) {
        self.metrics.observe_run(report);
        let next = self.ticker.next_due().map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        let status = status::record(&state_directory(&self.config), self.status.as_ref(), report, next.clone());
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
                }
                tracing::info!(
                    groups = new.sync.groups.len(),
                    cron = new.schedule.schedule.expression(),
                    "configuration reloaded"
                );
                self.config = Arc::new(new);
            }
            Err(e) => {
                tracing::error!(error = %e, "configuration reload failed, keeping the previous configuration");
            }
        }
        notify(&[sd_notify::NotifyState::Ready]);
    }
}

/// Runs the daemon until `stop` is cancelled. Returns an error only when it cannot start (the monitoring
/// address cannot be bound).
pub async fn run(
    path: &Path,
    config: Config,
    mut controls: mpsc::Receiver<Control>,
    stop: CancellationToken,
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
    let status = status::read(&state_directory(&config));
    let ticker = Ticker::new(config.schedule.schedule.clone(), options.clock);
    let mut daemon = Daemon {
        path: path.to_path_buf(),
        config: Arc::new(config),
        options,
        metrics,
        ticker,
        status,
        stop: stop.clone(),
    };
    tracing::info!(
        cron = daemon.config.schedule.schedule.expression(),
        timezone = %daemon.config.schedule.schedule.timezone(),
        next_run = %daemon.ticker.next_due().map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)).unwrap_or_else(|| "none".into()),
        "daemon started"
    );
    notify(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status("started")]);

    let mut running: Option<JoinHandle<Option<Report>>> =
        if daemon.config.schedule.run_on_start { Some(daemon.start_run("start")) } else { None };
    let mut watchdog = sd_notify::watchdog_enabled().map(|period| tokio::time::interval(period / 2));

    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            joined = async { running.as_mut().expect("guarded by the if").await }, if running.is_some() => {
                running = None;
                match joined {
                    Ok(Some(report)) => daemon.finished(&report),
                    Ok(None) => {}
                    Err(e) => tracing::error!(error = %e, "run task failed"),
                }
            }
            control = controls.recv() => match control {
                Some(Control::Reload) => daemon.reload(),
                Some(Control::RunNow) if running.is_some() => tracing::info!(trigger = "signal", "run request skipped, a run is in progress"),
                Some(Control::RunNow) => running = Some(daemon.start_run("signal")),
                None => {}
            },
            due = daemon.ticker.tick() => {
                if running.is_some() {
                    tracing::info!(scheduled = %due.to_rfc3339(), "tick skipped, a run is in progress");
                } else {
                    running = Some(daemon.start_run("schedule"));
                }
            }
            _ = async { watchdog.as_mut().expect("guarded by the if").tick().await }, if watchdog.is_some() => {
                notify(&[sd_notify::NotifyState::Watchdog]);
            }
        }
    }

    tracing::info!("stop requested, no new run will start");
    notify(&[sd_notify::NotifyState::Stopping]);
    if let Some(handle) = running {
        match tokio::time::timeout(daemon.options.shutdown_grace, handle).await {
            Ok(Ok(Some(report))) => daemon.finished(&report),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "run task failed"),
            Err(_) => {
                tracing::warn!(grace = ?daemon.options.shutdown_grace, "run still busy after the grace period, leaving it")
            }
        }
    }
    monitor_stop.cancel();
    if let Some(m) = monitor {
        let _ = m.await;
    }
    tracing::info!("daemon stopped");
    Ok(())
}
