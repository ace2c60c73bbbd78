//! One shutdown signal, fanned out to every task of a node.

use std::future::Future;
use std::time::Duration;

use tokio::task::{JoinError, JoinHandle};
use tokio_util::sync::CancellationToken;

/// A cloneable handle that tells every part of a node to stop.
///
/// Roles take one in `run(config, shutdown)`; tests trigger it directly, the binary
/// triggers it on SIGINT/SIGTERM through [`Shutdown::trigger_on_signals`].
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    /// A handle that has not been triggered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks everything holding a clone of this handle to stop.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// Whether [`Self::trigger`] has been called.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Completes once shutdown has been triggered.
    pub async fn wait(&self) {
        self.token.cancelled().await;
    }

    /// Lets a server task that stops accepting on this signal finish its in-flight work:
    /// waits for the signal (or for the server to end on its own), runs `stopping`, then
    /// gives the server `grace` to drain before aborting it. `None` means it was aborted.
    pub async fn drain<T>(
        &self,
        mut server: JoinHandle<T>,
        grace: Duration,
        stopping: impl Future<Output = ()>,
        what: &str,
    ) -> Result<Option<T>, JoinError> {
        tokio::select! {
            finished = &mut server => return finished.map(Some),
            () = self.wait() => {}
        }
        stopping.await;
        tracing::info!(grace_seconds = grace.as_secs(), "draining in-flight {what}");
        match tokio::time::timeout(grace, &mut server).await {
            Ok(finished) => finished.map(Some),
            Err(_elapsed) => {
                tracing::warn!("grace period over, dropping the remaining {what}");
                server.abort();
                Ok(None)
            }
        }
    }

    /// Spawns a task that triggers this handle on the first SIGINT or SIGTERM.
    pub fn trigger_on_signals(&self) {
        let shutdown = self.clone();
        tokio::spawn(async move {
            let signal_name = wait_for_termination_signal().await;
            tracing::info!(signal = signal_name, "shutdown requested");
            shutdown.trigger();
        });
    }
}

#[cfg(unix)]
async fn wait_for_termination_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigterm = match signal(SignalKind::terminate()) {
        Ok(stream) => stream,
        Err(error) => {
            tracing::warn!(%error, "cannot listen for sigterm, only sigint stops the node");
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = sigterm.recv() => "SIGTERM",
    }
}

#[cfg(not(unix))]
async fn wait_for_termination_signal() -> &'static str {
    let _ = tokio::signal::ctrl_c().await;
    "SIGINT"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_waits_for_a_draining_server_and_aborts_a_stuck_one() {
        let shutdown = Shutdown::new();
        let stop = shutdown.clone();
        let draining = tokio::spawn(async move {
            stop.wait().await;
            7
        });
        shutdown.trigger();
        let finished = shutdown.drain(draining, Duration::from_secs(5), async {}, "requests").await;
        assert_eq!(finished.expect("joined"), Some(7));

        let stuck = tokio::spawn(std::future::pending::<()>());
        let aborted = shutdown.drain(stuck, Duration::from_millis(20), async {}, "requests").await;
        assert_eq!(aborted.expect("joined"), None);
    }

    #[tokio::test]
    async fn drain_returns_a_server_that_ended_before_the_signal() {
        let ended = tokio::spawn(async { "done" });
        let result = Shutdown::new().drain(ended, Duration::from_secs(5), async {}, "requests").await;
        assert_eq!(result.expect("joined"), Some("done"));
    }

    #[tokio::test]
    async fn every_clone_observes_the_trigger() {
        let shutdown = Shutdown::new();
        let observer = shutdown.clone();
        assert!(!observer.is_triggered());
        let waiter = tokio::spawn(async move { observer.wait().await });
        shutdown.trigger();
        waiter.await.expect("waiter completes");
        assert!(shutdown.is_triggered());
    }
}
