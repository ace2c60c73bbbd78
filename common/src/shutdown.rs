//! One shutdown signal, fanned out to every task of a node.

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
