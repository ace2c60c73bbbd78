//! The control plane's state on etcd: node registration under a lease, and the executor
//! membership query nodes follow by watching it.
//!
//! Keys, under `/{cluster}/`:
//! - `nodes/{role}/{node_id}`: a [`NodeRecord`] (JSON), attached to the node's lease, so a
//!   node that dies disappears when its lease expires;
//! - `health/{node_id}`: a [`HealthMark`] the control-plane leader writes (under its own
//!   lease) for an executor that fails its probes, so query nodes route around it before
//!   its lease runs out;
//! - `tables/{table}/…`: the event bus (see [`crate::etcd_bus`]); membership watches only
//!   the keys before `tables/`, so table writes never wake it.
//!
//! Every loop here outlives etcd outages: registration re-grants its lease and re-puts its
//! record when etcd comes back; membership keeps publishing the last known executors and
//! re-lists when its watch breaks or its revision was compacted.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use etcd_client::Client;
use etcd_client::{ConnectOptions, EventType, GetOptions, PutOptions, WatchOptions};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;
use tonic::transport::Endpoint;

use crate::Shutdown;
use crate::cluster_state::{ClusterState, HealthMark, NodeRecord};
use crate::config::{ControlConfig, ExecutorEndpoint};
use crate::membership::Membership;
use crate::metrics;
use crate::tls::{self, TlsError};

/// How long to wait before retrying etcd after a failure.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// A failure talking to etcd.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// etcd could not be reached or refused a request.
    #[error("etcd: {0}")]
    Client(#[from] etcd_client::Error),
    /// A record could not be encoded.
    #[error("etcd record: {0}")]
    Record(#[from] serde_json::Error),
    /// The TLS settings towards etcd do not load.
    #[error("etcd {0}")]
    Tls(#[from] TlsError),
}

/// The key layout of one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    root: String,
}

impl Keys {
    /// The keys of cluster `name`.
    pub fn new(name: &str) -> Self {
        Self { root: format!("/{}/", name.trim_matches('/')) }
    }

    /// The prefix of every key of the cluster.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// The end (exclusive) of the control-plane keys that start at [`Self::root`]: the
    /// event bus's `tables/` keys sort after every one of them.
    pub fn control_end(&self) -> String {
        self.tables()
    }

    /// The prefix of every table's event-bus keys.
    pub fn tables(&self) -> String {
        format!("{}tables/", self.root)
    }

    /// The prefix of one table's event-bus keys.
    pub fn table(&self, table: &str) -> String {
        format!("{}tables/{table}/", self.root)
    }

    /// Where a node's record lives.
    pub fn node(&self, record: &NodeRecord) -> String {
        format!("{}nodes/{}/{}", self.root, record.role.as_str(), record.node_id)
    }

    /// Where the health mark of an executor lives.
    pub fn health(&self, node_id: &str) -> String {
        format!("{}health/{node_id}", self.root)
    }

    /// The election key of the control plane.
    pub fn election(&self) -> String {
        format!("{}election/control-plane", self.root)
    }

    /// A key relative to the cluster root, or `None` for keys of other clusters.
    pub fn relative<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(self.root.as_str())
    }
}

/// Connects to the etcd endpoints of `config`: over TLS with `[control.etcd_tls]` when
/// they are `https://` (one member at a time, the next when it is gone), else through
/// etcd-client's balanced channel. The client reconnects by itself; calls made while etcd
/// is down fail after the configured timeout.
pub async fn connect(config: &ControlConfig) -> Result<Client, EtcdError> {
    const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
    const TIMEOUT: Duration = Duration::from_secs(5);
    const KEEP_ALIVE: Duration = Duration::from_secs(2);
    let options = ConnectOptions::new()
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_timeout(TIMEOUT)
        .with_keep_alive(KEEP_ALIVE, KEEP_ALIVE)
        .with_keep_alive_while_idle(true);
    let Some(first) = config.etcd_endpoints.first().filter(|endpoint| endpoint.starts_with("https://")) else {
        return Ok(Client::connect(&config.etcd_endpoints, Some(options)).await?);
    };
    let tls = config
        .etcd_tls
        .node_client()?
        .ok_or_else(|| EtcdError::Tls(TlsError::from("control.etcd_tls.ca is needed for https:// etcd endpoints")))?;
    // What etcd-client's own endpoints get from `options`.
    let endpoint = Endpoint::from_shared(first.clone())
        .map_err(|error| TlsError::from(format!("invalid etcd endpoint '{first}': {error}")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(TIMEOUT)
        .http2_keep_alive_interval(KEEP_ALIVE)
        .keep_alive_timeout(KEEP_ALIVE)
        .keep_alive_while_idle(true);
    let channel = tls::failover_channel(endpoint, &config.etcd_endpoints, tls)?;
    Ok(Client::from_channel(etcd_client::Channel::Tonic(channel), Some(options)).await?)
}

/// A lease kept alive in the background until it is lost or revoked.
#[derive(Debug)]
pub struct Lease {
    id: i64,
    lost: watch::Receiver<bool>,
    keeper: JoinHandle<()>,
}

impl Lease {
    /// Grants a lease of `ttl` (at least 2 s) and renews it every third of that. The lease
    /// counts as lost when etcd says it expired, or when it could not be renewed for a
    /// whole TTL (etcd may have expired it meanwhile; whoever relies on it must assume so).
    pub async fn grant(client: &Client, ttl: Duration) -> Result<Self, EtcdError> {
        let ttl = ttl.max(Duration::from_secs(2));
        let ttl_seconds = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        let id = client.clone().lease_grant(ttl_seconds, None).await?.id();
        let (lost_tx, lost) = watch::channel(false);
        let keeper = tokio::spawn(keep_alive(client.clone(), id, ttl, lost_tx));
        Ok(Self { id, lost, keeper })
    }

    /// Whether the lease is lost (expired, or not renewed for a whole TTL).
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// The lease id, for puts and campaigns attached to it.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// Completes once the lease is lost (independent of `self`'s lifetime).
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut lost = self.lost.clone();
        async move {
            // An error means the keeper is gone, which it only is once the lease is lost.
            let _ = lost.wait_for(|lost| *lost).await;
        }
    }

    /// Stops renewing and revokes the lease: every key attached to it goes at once.
    pub async fn revoke(self, client: &Client) -> Result<(), EtcdError> {
        self.keeper.abort();
        client.clone().lease_revoke(self.id).await?;
        Ok(())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

/// Renews `lease` every third of `ttl` until it is lost, then says so.
async fn keep_alive(client: Client, lease: i64, ttl: Duration, lost: watch::Sender<bool>) {
    let mut renewed = Instant::now();
    loop {
        match renew(&client, lease, ttl / 3, &mut renewed).await {
            Err(LeaseLost::Expired) => break,
            Err(LeaseLost::Unreachable(error)) if renewed.elapsed() >= ttl => {
                tracing::warn!(lease, %error, "could not renew the lease within its TTL; assuming it expired");
                break;
            }
            Err(LeaseLost::Unreachable(error)) => tracing::warn!(lease, %error, "could not renew the lease; retrying"),
            Ok(()) => {}
        }
        tokio::time::sleep(RETRY_AFTER).await;
    }
    lost.send_replace(true);
}

/// Why renewing a lease stopped.
#[derive(Debug)]
enum LeaseLost {
    /// etcd answered that the lease no longer exists.
    Expired,
    /// etcd could not be reached.
    Unreachable(etcd_client::Error),
}

/// Keeps `lease` alive on one keep-alive stream, recording each renewal in `renewed`,
/// until the stream ends (`Ok`) or fails.
async fn renew(client: &Client, lease: i64, period: Duration, renewed: &mut Instant) -> Result<(), LeaseLost> {
    let (mut keeper, mut stream) = client.clone().lease_keep_alive(lease).await.map_err(LeaseLost::Unreachable)?;
    loop {
        keeper.keep_alive().await.map_err(LeaseLost::Unreachable)?;
        match stream.message().await.map_err(LeaseLost::Unreachable)? {
            Some(response) if response.ttl() > 0 => *renewed = Instant::now(),
            Some(_) => return Err(LeaseLost::Expired),
            None => return Ok(()),
        }
        tokio::time::sleep(period).await;
    }
}

/// A node's registration: its record at `nodes/{role}/{node_id}`, attached to a lease.
/// It registers in the background, retrying while etcd is unreachable (a node starts and
/// serves without etcd), and registers again under a new lease whenever the old one is
/// lost, until [`deregister`](Self::deregister).
pub struct Registration {
    client: Client,
    key: String,
    record: watch::Sender<NodeRecord>,
    lease: Arc<Mutex<Option<Lease>>>,
    registered: watch::Receiver<bool>,
    keeper: JoinHandle<()>,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration").field("key", &self.key).finish_non_exhaustive()
    }
}

impl Registration {
    /// Starts registering `record` under leases of `ttl`.
    pub fn start(client: Client, keys: &Keys, record: NodeRecord, ttl: Duration) -> Self {
        let key = keys.node(&record);
        let lease = Arc::new(Mutex::new(None));
        let (record, current) = watch::channel(record);
        let (registered_tx, registered) = watch::channel(false);
        let keeper =
            tokio::spawn(stay_registered(client.clone(), key.clone(), current, lease.clone(), ttl, registered_tx));
        Self { client, key, record, lease, registered, keeper }
    }

    /// Waits up to `timeout` for the first registration; `false` if etcd has not answered
    /// yet (registration goes on in the background).
    pub async fn wait_registered(&self, timeout: Duration) -> bool {
        let mut registered = self.registered.clone();
        tokio::time::timeout(timeout, registered.wait_for(|registered| *registered)).await.is_ok_and(|r| r.is_ok())
    }

    /// Publishes that this node is stopping: query nodes stop sending it new work while it
    /// drains what it has. A node not registered yet will register as stopping.
    pub async fn set_stopping(&self) -> Result<(), EtcdError> {
        self.record.send_modify(|record| record.stopping = true);
        let Some(lease) = self.lease.lock().await.as_ref().map(Lease::id) else { return Ok(()) };
        let value = serde_json::to_vec(&*self.record.borrow())?;
        self.client.clone().put(self.key.as_str(), value, Some(PutOptions::new().with_lease(lease))).await?;
        tracing::info!(key = self.key, "marked stopping in etcd");
        Ok(())
    }

    /// Stops registering and revokes the lease, which deletes the record at once.
    pub async fn deregister(self) -> Result<(), EtcdError> {
        self.keeper.abort();
        let Some(lease) = self.lease.lock().await.take() else { return Ok(()) };
        lease.revoke(&self.client).await?;
        tracing::info!(key = self.key, "deregistered from etcd");
        Ok(())
    }
}

/// Registers the current record under a new lease, and again whenever that lease is lost.
async fn stay_registered(
    client: Client,
    key: String,
    record: watch::Receiver<NodeRecord>,
    lease: Arc<Mutex<Option<Lease>>>,
    ttl: Duration,
    registered: watch::Sender<bool>,
) {
    let mut first = true;
    loop {
        let current = record.borrow().clone();
        match put_under_new_lease(&client, &key, &current, ttl).await {
            Ok(new_lease) => {
                if first {
                    tracing::info!(key, lease = new_lease.id(), "registered in etcd");
                } else {
                    tracing::warn!(key, lease = new_lease.id(), "the lease was lost; registered again");
                }
                first = false;
                let lost = new_lease.lost();
                *lease.lock().await = Some(new_lease);
                registered.send_replace(true);
                lost.await;
                lease.lock().await.take();
            }
            Err(error) => {
                tracing::warn!(key, %error, "cannot register in etcd yet; retrying");
                tokio::time::sleep(RETRY_AFTER).await;
            }
        }
    }
}

/// Grants a lease and puts `record` at `key` under it. A record already there at another
/// address means two live nodes share an id (or an earlier run's lease has not expired
/// after a move): said loudly, since placement keys must be unique.
async fn put_under_new_lease(
    client: &Client,
    key: &str,
    record: &NodeRecord,
    ttl: Duration,
) -> Result<Lease, EtcdError> {
    let existing = client.clone().get(key, None).await?;
    let other = existing.kvs().first().and_then(|kv| serde_json::from_slice::<NodeRecord>(kv.value()).ok());
    if let Some(other) = other.filter(|other| other.address != record.address) {
        tracing::error!(key, other = other.address, "another node is registered with this node id; ids must be unique");
    }
    let lease = Lease::grant(client, ttl).await?;
    let options = PutOptions::new().with_lease(lease.id());
    client.clone().put(key, serde_json::to_vec(record)?, Some(options)).await?;
    Ok(lease)
}

/// Executor membership followed from etcd: the registered executors that are neither
/// stopping nor marked unhealthy.
#[derive(Debug)]
pub struct EtcdMembership {
    executors: watch::Receiver<Arc<[ExecutorEndpoint]>>,
    state: watch::Receiver<Arc<ClusterState>>,
}

impl EtcdMembership {
    /// Lists the cluster's keys, then follows them with a watch until `shutdown`. Returns
    /// after the first listing, so the first membership is complete; if etcd is down it
    /// starts empty and fills in when etcd answers.
    pub async fn follow(client: Client, keys: Keys, shutdown: Shutdown) -> Self {
        let (executors_tx, executors) = watch::channel(Arc::<[ExecutorEndpoint]>::from(Vec::new()));
        let (state_tx, state) = watch::channel(Arc::new(ClusterState::default()));
        let publisher = Publisher { executors: executors_tx, state: state_tx };
        let (listed_tx, listed) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            tokio::select! {
                () = follow(client, keys, publisher, listed_tx) => {}
                () = shutdown.wait() => {}
            }
        });
        // Either the first listing finished or it failed; both leave a usable membership.
        let _ = tokio::time::timeout(Duration::from_secs(10), listed).await;
        Self { executors, state }
    }

    /// The whole cluster state (every role, health marks), for operators.
    pub fn state(&self) -> watch::Receiver<Arc<ClusterState>> {
        self.state.clone()
    }
}

impl Membership for EtcdMembership {
    fn subscribe(&self) -> watch::Receiver<Arc<[ExecutorEndpoint]>> {
        self.executors.clone()
    }
}

/// Where a followed cluster state goes.
struct Publisher {
    executors: watch::Sender<Arc<[ExecutorEndpoint]>>,
    state: watch::Sender<Arc<ClusterState>>,
}

impl Publisher {
    fn publish(&self, state: &ClusterState) {
        let executors = state.executors();
        self.executors.send_if_modified(|current| {
            let changed = **current != *executors;
            if changed {
                *current = executors.into();
            }
            changed
        });
        self.state.send_replace(Arc::new(state.clone()));
    }
}

/// List, then watch from the listing's revision; start over when the watch breaks or its
/// revision has been compacted away. The last published state stays while etcd is down.
async fn follow(client: Client, keys: Keys, publisher: Publisher, listed: tokio::sync::oneshot::Sender<()>) {
    let mut listed = Some(listed);
    loop {
        let round = async {
            let (mut state, revision) = list(&client, &keys).await?;
            metrics::etcd_reachable(true);
            publisher.publish(&state);
            if let Some(listed) = listed.take() {
                let _ = listed.send(());
            }
            watch_from(&client, &keys, &mut state, revision + 1, |state| publisher.publish(state)).await
        };
        match round.await {
            Ok(end) => tracing::info!(?end, "re-listing the cluster state"),
            Err(error) => {
                metrics::etcd_reachable(false);
                tracing::warn!(%error, "lost etcd; keeping the last known membership");
            }
        }
        if let Some(listed) = listed.take() {
            let _ = listed.send(());
        }
        tokio::time::sleep(RETRY_AFTER).await;
    }
}

/// The cluster's keys now, and the revision they were read at.
async fn list(client: &Client, keys: &Keys) -> Result<(ClusterState, i64), EtcdError> {
    let options = GetOptions::new().with_range(keys.control_end());
    let response = client.clone().get(keys.root(), Some(options)).await?;
    let revision = response.header().map_or(0, |header| header.revision());
    let mut state = ClusterState::default();
    for kv in response.kvs() {
        if let Some(key) = kv.key_str().ok().and_then(|key| keys.relative(key)) {
            state.put(key, kv.value());
        }
    }
    Ok((state, revision))
}

/// Why a watch ended without an error.
#[derive(Debug, PartialEq, Eq)]
enum WatchEnd {
    /// The start revision was compacted away: only a new listing can catch up.
    Compacted,
    /// etcd canceled the watch.
    Canceled,
    /// The stream ended.
    Closed,
}

/// Applies every change from `revision` on to `state`, calling `changed` after each batch.
async fn watch_from(
    client: &Client,
    keys: &Keys,
    state: &mut ClusterState,
    revision: i64,
    changed: impl Fn(&ClusterState),
) -> Result<WatchEnd, EtcdError> {
    let options = WatchOptions::new().with_range(keys.control_end()).with_start_revision(revision);
    let mut stream = client.clone().watch(keys.root(), Some(options)).await?;
    while let Some(response) = stream.message().await? {
        if response.compact_revision() > 0 {
            return Ok(WatchEnd::Compacted);
        }
        if response.canceled() {
            return Ok(WatchEnd::Canceled);
        }
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let Some(key) = kv.key_str().ok().and_then(|key| keys.relative(key)) else { continue };
            match event.event_type() {
                EventType::Put => state.put(key, kv.value()),
                EventType::Delete => state.delete(key),
            }
        }
        changed(state);
    }
    Ok(WatchEnd::Closed)
}

/// Writes a health mark for `node_id` under `lease` (the control-plane leader's).
pub async fn mark_unhealthy(client: &Client, keys: &Keys, mark: &HealthMark, lease: i64) -> Result<(), EtcdError> {
    let value = serde_json::to_vec(mark)?;
    client.clone().put(keys.health(&mark.node_id), value, Some(PutOptions::new().with_lease(lease))).await?;
    Ok(())
}

/// Removes the health mark of `node_id`.
pub async fn mark_healthy(client: &Client, keys: &Keys, node_id: &str) -> Result<(), EtcdError> {
    client.clone().delete(keys.health(node_id), None).await?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    //! Against a real etcd (Debian's `etcd-server`; `scripts/test.sh` installs it), started
    //! per test on free loopback ports with a temporary data directory.

    use super::*;
    use crate::cluster_state::Role;
    use crate::test_support::EtcdServer;

    const TTL: Duration = Duration::from_secs(2);

    fn executor(id: &str) -> NodeRecord {
        NodeRecord::new(id, Role::PlanExecutor, format!("http://{id}:7070"), 0)
    }

    /// Waits until the executors are exactly `ids`.
    async fn executors_become(membership: &EtcdMembership, ids: &[&str], within: Duration) {
        let mut executors = membership.subscribe();
        let wanted =
            |executors: &Arc<[ExecutorEndpoint]>| executors.iter().map(|e| e.id.as_str()).eq(ids.iter().copied());
        let reached = tokio::time::timeout(within, executors.wait_for(wanted)).await;
        assert!(
            reached.is_ok(),
            "executors {:?}, wanted {ids:?}",
            membership.subscribe().borrow().iter().map(|e| e.id.clone()).collect::<Vec<_>>()
        );
    }

    #[tokio::test]
    async fn membership_follows_registrations_stopping_and_lost_leases() {
        let Some(etcd) = EtcdServer::start().await else { return };
        let client = etcd.client().await;
        let keys = Keys::new("follow");
        let shutdown = Shutdown::new();
        let membership = EtcdMembership::follow(client.clone(), keys.clone(), shutdown.clone()).await;
        let pe0 = Registration::start(client.clone(), &keys, executor("pe-0"), TTL);
        let pe1 = Registration::start(client.clone(), &keys, executor("pe-1"), TTL);
        assert!(pe0.wait_registered(Duration::from_secs(5)).await && pe1.wait_registered(Duration::from_secs(5)).await);
        executors_become(&membership, &["pe-0", "pe-1"], Duration::from_secs(5)).await;

        pe1.set_stopping().await.expect("stopping");
        executors_become(&membership, &["pe-0"], Duration::from_secs(5)).await;
        let state = membership.state().borrow().clone();
        assert!(state.nodes["nodes/plan-executor/pe-1"].stopping, "still registered while it drains");

        // A lease etcd lost (here: revoked behind the node's back) is replaced: the node
        // disappears, then registers again by itself.
        let revoked =
            client.clone().leases().await.expect("leases").leases().iter().map(|l| l.id()).collect::<Vec<_>>();
        for lease in &revoked {
            client.clone().lease_revoke(*lease).await.expect("revoke");
        }
        let mut registered_again = false;
        for _ in 0..100 {
            let leases = client.clone().leases().await.expect("leases");
            let fresh = leases.leases().iter().filter(|lease| !revoked.contains(&lease.id())).count();
            if fresh == 2 && membership.state().borrow().nodes.len() == 2 {
                registered_again = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(registered_again, "both nodes registered again under new leases");
        executors_become(&membership, &["pe-0"], Duration::from_secs(5)).await;

        pe0.deregister().await.expect("deregister");
        executors_become(&membership, &[], Duration::from_secs(5)).await;
        shutdown.trigger();
    }

    #[tokio::test]
    async fn a_watch_from_a_compacted_revision_ends_and_a_new_listing_catches_up() {
        let Some(etcd) = EtcdServer::start().await else { return };
        let mut client = etcd.client().await;
        let keys = Keys::new("compacted");
        let (mut state, revision) = list(&client, &keys).await.expect("list");
        for id in ["pe-0", "pe-1", "pe-2"] {
            let record = executor(id);
            client.put(keys.node(&record), serde_json::to_vec(&record).expect("json"), None).await.expect("put");
        }
        let now = client.get("x", None).await.expect("get").header().map_or(0, |header| header.revision());
        client.compact(now, None).await.expect("compact");

        let end = watch_from(&client, &keys, &mut state, revision + 1, |_| {}).await.expect("watch");
        assert_eq!(end, WatchEnd::Compacted);
        assert!(state.executors().is_empty(), "nothing applied from a compacted history");
        let (relisted, _) = list(&client, &keys).await.expect("list");
        let ids = relisted.executors().into_iter().map(|e| e.id).collect::<Vec<_>>();
        assert_eq!(ids, ["pe-0", "pe-1", "pe-2"]);
    }

    #[tokio::test]
    async fn membership_outlives_an_etcd_outage_and_catches_up_after_it() {
        let Some(mut etcd) = EtcdServer::start().await else { return };
        let client = etcd.client().await;
        let keys = Keys::new("outage");
        let shutdown = Shutdown::new();
        let membership = EtcdMembership::follow(client.clone(), keys.clone(), shutdown.clone()).await;
        let _pe0 = Registration::start(client.clone(), &keys, executor("pe-0"), TTL);
        executors_become(&membership, &["pe-0"], Duration::from_secs(5)).await;

        etcd.stop();
        let joined_meanwhile = Registration::start(client.clone(), &keys, executor("pe-1"), TTL);
        tokio::time::sleep(TTL * 2).await;
        let during = membership.subscribe().borrow().iter().map(|e| e.id.clone()).collect::<Vec<_>>();
        assert_eq!(during, ["pe-0"], "the last known membership stays while etcd is down");
        assert!(!joined_meanwhile.wait_registered(Duration::ZERO).await);

        assert!(etcd.data_dir().exists());
        etcd.spawn().await;
        executors_become(&membership, &["pe-0", "pe-1"], Duration::from_secs(20)).await;
        shutdown.trigger();
    }
}
