//! A run's stop requests, shared by the commands that make them (signals, the daemon's grace period,
//! `sync.run_timeout`) and the code that obeys them (`sync`, the CloudShell session).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The two stop requests.
#[derive(Clone, Default)]
pub struct Stops {
    /// The first (SIGTERM, SIGINT, the run deadline): the reads are given up, no new group, call or retry
    /// starts, a retry wait ends and no further page is read; a call under way finishes.
    pub stop: CancellationToken,
    /// The second (or the daemon's grace period running out): calls under way are abandoned too.
    pub abandon: CancellationToken,
}

impl Stops {
    /// Stops of their own for a part of the work: stopped with these, or by themselves; abandoned with these.
    pub fn child(&self) -> Stops {
        Stops { stop: self.stop.child_token(), abandon: self.abandon.clone() }
    }

    /// Waits `wait`, or less when a stop is requested meanwhile: `false` then.
    pub async fn pause(&self, wait: Duration) -> bool {
        tokio::select! {
            biased;
            _ = self.stop.cancelled() => false,
            _ = tokio::time::sleep(wait) => true,
        }
    }
}
