//! Which plan executors exist right now. Query nodes subscribe and re-place fragments
//! whenever the set changes; the implementations differ only in where the set comes from
//! (configuration: [`StaticMembership`]; the etcd control plane:
//! [`EtcdMembership`](crate::etcd::EtcdMembership)).

use std::sync::Arc;

use tokio::sync::watch;

use crate::config::ExecutorEndpoint;

/// A source of the current plan executors.
pub trait Membership: Send + Sync + std::fmt::Debug {
    /// The current executors, updated in place when they change.
    fn subscribe(&self) -> watch::Receiver<Arc<[ExecutorEndpoint]>>;
}

/// Membership fixed by configuration.
#[derive(Debug)]
pub struct StaticMembership {
    sender: watch::Sender<Arc<[ExecutorEndpoint]>>,
}

impl StaticMembership {
    /// A membership of exactly `executors`.
    pub fn new(executors: Vec<ExecutorEndpoint>) -> Self {
        Self { sender: watch::Sender::new(executors.into()) }
    }

    /// Replaces the executors; subscribers see the new set at once (the in-process test
    /// cluster changes membership under running queries this way).
    pub fn replace(&self, executors: Vec<ExecutorEndpoint>) {
        self.sender.send_replace(executors.into());
    }
}

impl Membership for StaticMembership {
    fn subscribe(&self) -> watch::Receiver<Arc<[ExecutorEndpoint]>> {
        self.sender.subscribe()
    }
}
