//! What one `lancefleet` process gives every role it runs: the shutdown signal, the link
//! to the etcd control plane (when there is one), the event bus, and where the plan
//! executors are listed.
//!
//! A role running alone makes its context in `run(config, shutdown)`
//! ([`NodeContext::connect`]); `standalone` shares one context between its query node
//! and its embedded indexer, so both use one in-process event bus; the in-process test
//! cluster gives each node a context whose membership and bus the test controls.

use std::sync::Arc;
use std::time::Duration;

use crate::Shutdown;
use crate::cluster_state::NodeRecord;
use crate::config::{ClusterConfig, ConfigError, NodeConfig};
use crate::etcd::{self, Client, EtcdError, EtcdMembership, Keys, Registration};
use crate::etcd_bus::EtcdBus;
use crate::events::{EventBus, LocalBus};
use crate::membership::{Membership, StaticMembership};
use crate::storage::StorageRootError;

/// How long a starting node waits for its first registration before serving anyway.
const REGISTER_WAIT: Duration = Duration::from_secs(5);

/// Why a role could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration cannot work for this role.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// etcd could not be reached.
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    /// The storage root is unusable.
    #[error(transparent)]
    Storage(#[from] StorageRootError),
    /// A TLS certificate, key or CA file is unusable.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// The etcd control plane as this process reaches it.
#[derive(Clone)]
struct ControlLink {
    client: Client,
    keys: Keys,
    lease_ttl: Duration,
}

impl std::fmt::Debug for ControlLink {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("ControlLink").field("keys", &self.keys).finish_non_exhaustive()
    }
}

/// What the roles of one process share. Cheap to clone.
#[derive(Debug, Clone)]
pub struct NodeContext {
    shutdown: Shutdown,
    control: Option<ControlLink>,
    bus: Arc<dyn EventBus>,
    membership: Option<Arc<dyn Membership>>,
}

impl NodeContext {
    /// The context `config` describes: connected to etcd when `[control] etcd_endpoints`
    /// names any (the event bus is then etcd's), else with an in-process event bus.
    pub async fn connect(config: &NodeConfig, shutdown: Shutdown) -> Result<Self, StartError> {
        if !config.control.uses_etcd() {
            return Ok(Self::in_process(shutdown));
        }
        let client = etcd::connect(&config.control).await?;
        let keys = Keys::new(&config.control.cluster);
        let lease_ttl = config.control.lease_ttl;
        let bus = Arc::new(EtcdBus::new(client.clone(), keys.clone(), lease_ttl));
        Ok(Self { shutdown, control: Some(ControlLink { client, keys, lease_ttl }), bus, membership: None })
    }

    /// A context without etcd: an in-process event bus, executors from configuration.
    pub fn in_process(shutdown: Shutdown) -> Self {
        Self { shutdown, control: None, bus: Arc::new(LocalBus::new()), membership: None }
    }

    /// This context with the plan executors listed by `membership` instead of etcd or
    /// the configuration (the in-process test cluster changes it under running queries).
    pub fn with_membership(mut self, membership: Arc<dyn Membership>) -> Self {
        self.membership = Some(membership);
        self
    }

    /// This context with `bus` as its event bus.
    pub fn with_bus(mut self, bus: Arc<dyn EventBus>) -> Self {
        self.bus = bus;
        self
    }

    /// The process's shutdown signal.
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// The event bus: etcd's in a cluster, else the process's own.
    pub fn bus(&self) -> Arc<dyn EventBus> {
        self.bus.clone()
    }

    /// The etcd client and the cluster's keys, when there is a control plane.
    pub fn etcd(&self) -> Option<(&Client, &Keys)> {
        self.control.as_ref().map(|link| (&link.client, &link.keys))
    }

    /// Where the plan executors are listed: the membership this context was given, etcd
    /// (followed until shutdown), or `config`'s static list. `None`: there are none, and
    /// queries run in this process.
    pub async fn executors(&self, config: &ClusterConfig) -> Option<Arc<dyn Membership>> {
        if let Some(membership) = &self.membership {
            return Some(membership.clone());
        }
        if let Some(link) = &self.control {
            let followed = EtcdMembership::follow(link.client.clone(), link.keys.clone(), self.shutdown.clone());
            return Some(Arc::new(followed.await));
        }
        (!config.executors.is_empty())
            .then(|| Arc::new(StaticMembership::new(config.executors.clone())) as Arc<dyn Membership>)
    }

    /// Registers `record` in etcd (waiting a few seconds for the first registration,
    /// then going on in the background), when there is a control plane.
    pub async fn register(&self, record: NodeRecord) -> Presence {
        let Some(link) = &self.control else { return Presence(None) };
        let registration = Registration::start(link.client.clone(), &link.keys, record, link.lease_ttl);
        if !registration.wait_registered(REGISTER_WAIT).await {
            tracing::warn!("etcd does not answer yet; serving meanwhile, registering in the background");
        }
        Presence(Some(registration))
    }
}

/// A node's registration in etcd, if it has one.
#[derive(Debug)]
pub struct Presence(Option<Registration>);

impl Presence {
    /// Announces that the node is stopping, then waits `propagation` for query nodes to
    /// hear it before the node refuses new work.
    pub async fn announce_stopping(&self, propagation: Duration) {
        let Some(registration) = &self.0 else { return };
        match registration.set_stopping().await {
            Ok(()) => tokio::time::sleep(propagation).await,
            Err(error) => tracing::warn!(%error, "could not announce stopping"),
        }
    }

    /// Leaves etcd; a failure only delays the record's expiry until its lease runs out.
    pub async fn leave(self) {
        if let Some(registration) = self.0
            && let Err(error) = registration.deregister().await
        {
            tracing::warn!(%error, "could not deregister; the record expires with its lease");
        }
    }
}
