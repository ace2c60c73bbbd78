//! Each subcommand's role: build it from the configuration, serve until SIGINT/SIGTERM,
//! then shut down in order (stop accepting, drain in-flight work, flush the cache).

use std::sync::Arc;
use std::time::Duration;

use lancefleet_common::Shutdown;
use lancefleet_common::cluster_state::{NodeRecord, Role};
use lancefleet_common::config::NodeConfig;
use lancefleet_common::etcd::{self, Client, EtcdError, EtcdMembership, Keys, Registration};
use lancefleet_common::etcd_bus::EtcdBus;
use lancefleet_common::events::{EventBus, LocalBus};
use lancefleet_common::membership::{Membership, StaticMembership};
use lancefleet_common::storage::StorageRoot;
use lancefleet_engine::Catalog;
use lancefleet_engine::cache::ObjectCache;
use lancefleet_indexer::Indexer;
use lancefleet_plan_executor::{PlanExecutorNode, Prewarmer};
use lancefleet_query_node::{Cluster, Dispatcher, QueryNode};

/// Why a role could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    /// The storage root is unusable.
    #[error(transparent)]
    Storage(#[from] lancefleet_common::storage::StorageRootError),
    /// The REST server failed.
    #[error(transparent)]
    QueryNode(#[from] lancefleet_query_node::ApiError),
    /// The plan executor failed.
    #[error(transparent)]
    PlanExecutor(#[from] lancefleet_plan_executor::ExecutorError),
    /// The object cache could not be opened or closed.
    #[error(transparent)]
    Cache(#[from] lancefleet_engine::EngineError),
    /// The control plane failed.
    #[error(transparent)]
    ControlPlane(#[from] lancefleet_control_plane::ControlPlaneError),
    /// The indexer failed.
    #[error(transparent)]
    Indexer(#[from] lancefleet_indexer::IndexerError),
    /// etcd could not be reached or refused to register this node.
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    /// The configuration cannot work for this role.
    #[error("{0}")]
    Config(String),
}

/// The catalog of the storage root, reading through the object cache when it is enabled.
async fn catalog(config: &NodeConfig) -> Result<(Catalog, Option<ObjectCache>), RoleError> {
    let root = StorageRoot::resolve(&config.storage.root)?;
    let cache = ObjectCache::open(&config.cache).await?;
    if let Some(cache) = &cache {
        lancefleet_common::metrics::register(Box::new(cache.clone()));
    }
    if let Some(dir) = &config.cache.disk_dir {
        tracing::info!(dir = %dir.display(), disk_bytes = config.cache.disk_bytes, "object cache disk tier opened");
    }
    Ok((Catalog::new(root, &config.storage.options, cache.clone()), cache))
}

/// Flushes the disk tier last, after every request that could fill it has finished.
async fn close(cache: Option<ObjectCache>) -> Result<(), RoleError> {
    if let Some(cache) = cache {
        cache.close().await?;
    }
    Ok(())
}

fn shutdown_on_signals() -> Shutdown {
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signals();
    shutdown
}

/// How long a starting node waits for its first registration before serving anyway.
const REGISTER_WAIT: Duration = Duration::from_secs(5);

/// The process's one etcd client, when the cluster has a control plane.
async fn etcd_client(config: &NodeConfig) -> Result<Option<Client>, RoleError> {
    if !config.control.uses_etcd() {
        return Ok(None);
    }
    Ok(Some(etcd::connect(&config.control).await?))
}

/// This node's entry in etcd, when the cluster has a control plane.
async fn register(client: Option<&Client>, config: &NodeConfig, record: NodeRecord) -> Option<Registration> {
    let client = client?.clone();
    let keys = Keys::new(&config.control.cluster);
    let ttl = Duration::from_secs(config.control.lease_ttl_seconds);
    let registration = Registration::start(client, &keys, record, ttl);
    if !registration.wait_registered(REGISTER_WAIT).await {
        tracing::warn!("etcd does not answer yet; serving meanwhile, registering in the background");
    }
    Some(registration)
}

/// Leaves etcd; a failure only delays the record's expiry until its lease runs out.
async fn deregister(registration: Option<Registration>) {
    if let Some(registration) = registration
        && let Err(error) = registration.deregister().await
    {
        tracing::warn!(%error, "could not deregister; the record expires with its lease");
    }
}

/// The event bus: etcd in a cluster, else the process's own channel.
fn event_bus(client: Option<&Client>, config: &NodeConfig) -> Arc<dyn EventBus> {
    match client {
        Some(client) => {
            let ttl = Duration::from_secs(config.control.lease_ttl_seconds);
            Arc::new(EtcdBus::new(client.clone(), Keys::new(&config.control.cluster), ttl))
        }
        None => Arc::new(LocalBus::new()),
    }
}

/// `lancefleet standalone`: the query node with in-process execution, or with the
/// configured (or etcd-registered) executors when there are any.
pub async fn standalone(config: NodeConfig) -> Result<(), RoleError> {
    serve_query_node(config, "standalone").await
}

/// `lancefleet query-node`: the query node in front of plan executors.
pub async fn query_node(config: NodeConfig) -> Result<(), RoleError> {
    if config.cluster.executors.is_empty() && !config.control.uses_etcd() {
        return Err(RoleError::Config(
            "a query node needs plan executors: pass --executor ID=ADDRESS, set [cluster] executors, \
             or follow the etcd control plane with --etcd URL"
                .into(),
        ));
    }
    serve_query_node(config, "query-node").await
}

/// Where queries run: the executors etcd lists, the configured ones, or (standalone
/// without either) this process.
async fn dispatcher(config: &NodeConfig, client: Option<&Client>, shutdown: &Shutdown) -> Dispatcher {
    let membership: Box<dyn Membership> = if let Some(client) = client {
        let keys = Keys::new(&config.control.cluster);
        Box::new(EtcdMembership::follow(client.clone(), keys, shutdown.clone()).await)
    } else if config.cluster.executors.is_empty() {
        return Dispatcher::Local;
    } else {
        Box::new(StaticMembership::new(config.cluster.executors.clone()))
    };
    Dispatcher::Cluster(Cluster::new(membership.as_ref(), &config.cluster))
}

async fn serve_query_node(config: NodeConfig, role: &'static str) -> Result<(), RoleError> {
    let shutdown = shutdown_on_signals();
    let client = etcd_client(&config).await?;
    let dispatcher = dispatcher(&config, client.as_ref(), &shutdown).await;
    let (catalog, cache) = catalog(&config).await?;
    let events = event_bus(client.as_ref(), &config);
    let indexer = (role == "standalone" && config.indexer.embedded).then(|| {
        let holder = config.control.node_id_or_default("indexer", config.rest.listen.port());
        let indexer = Indexer::new(catalog.clone(), events.clone(), config.indexer.clone(), holder);
        tokio::spawn(indexer.run(shutdown.clone()))
    });
    let inline_indexing = client.is_none() && indexer.is_none();
    if inline_indexing {
        tracing::warn!(
            "no etcd and no embedded indexer: indexes are built inline by create_index; tables are not compacted"
        );
    }
    let weak_reads = Duration::from_secs(config.rest.weak_read_consistency_interval_seconds);
    let catalog = catalog.with_weak_reads(weak_reads);
    let storage_root = catalog.root().uri().to_string();
    let node = QueryNode::bind(&config, catalog, dispatcher, events, inline_indexing).await?;
    let rest = node.local_addr()?;
    let flight = node.flight_addr()?.map_or_else(|| "off".to_string(), |address| address.to_string());
    let node_id = config.control.node_id_or_default(role, rest.port());
    let record = NodeRecord::new(node_id, Role::QueryNode, format!("http://{rest}"), 0);
    let registration = register(client.as_ref(), &config, record).await;
    tracing::info!(
        role,
        %rest,
        flight,
        authentication = if config.auth.api_keys.is_empty() { "off" } else { "api keys" },
        storage_root,
        executors = config.cluster.executors.len(),
        etcd = config.control.uses_etcd(),
        weak_read_consistency_interval_seconds = config.rest.weak_read_consistency_interval_seconds,
        version = env!("CARGO_PKG_VERSION"),
        "lancefleet is serving the LanceDB REST API, Arrow Flight and Flight SQL"
    );
    node.serve(shutdown).await?;
    if let Some(indexer) = indexer
        && let Err(error) = indexer.await
    {
        tracing::warn!(%error, "the embedded indexer failed");
    }
    deregister(registration).await;
    close(cache).await?;
    tracing::info!(role, "lancefleet stopped");
    Ok(())
}

/// `lancefleet plan-executor`: runs plan fragments until shut down. With etcd it
/// registers, and on shutdown announces that it is stopping, waits for query nodes to
/// hear it, drains, and only then deregisters.
pub async fn plan_executor(config: NodeConfig) -> Result<(), RoleError> {
    let (catalog, cache) = catalog(&config).await?;
    let prewarm_catalog = catalog.clone();
    let node = PlanExecutorNode::bind(&config.executor, catalog).await?;
    let address = match &config.executor.advertise_address {
        Some(address) => address.clone(),
        None if config.control.uses_etcd() && node.local_addr()?.ip().is_unspecified() => {
            return Err(RoleError::Config(format!(
                "listening on {} leaves query nodes no address to reach this executor at: \
                 set executor.advertise_address (--advertise-address), e.g. http://$POD_IP:7070",
                node.local_addr()?
            )));
        }
        None => format!("http://{}", node.local_addr()?),
    };
    let tiers = &config.cache;
    let cache_bytes = tiers.memory_bytes + tiers.disk_dir.as_ref().map_or(0, |_| tiers.disk_bytes);
    let record = NodeRecord::new(config.executor.node_id.clone(), Role::PlanExecutor, address, cache_bytes);
    let client = etcd_client(&config).await?;
    let registration = register(client.as_ref(), &config, record).await;
    let shutdown = shutdown_on_signals();
    if let Some(client) = &client {
        let membership =
            EtcdMembership::follow(client.clone(), Keys::new(&config.control.cluster), shutdown.clone()).await;
        let prewarmer = Prewarmer {
            catalog: prewarm_catalog,
            membership: membership.subscribe(),
            cluster: config.cluster.clone(),
            node_id: config.executor.node_id.clone(),
        };
        tokio::spawn(prewarmer.follow(event_bus(Some(client), &config), shutdown.clone()));
    }
    let propagation = Duration::from_millis(config.control.stopping_propagation_ms);
    let leaving = async {
        if let Some(registration) = &registration {
            match registration.set_stopping().await {
                Ok(()) => tokio::time::sleep(propagation).await,
                Err(error) => tracing::warn!(%error, "could not announce stopping"),
            }
        }
    };
    node.serve(shutdown, leaving).await?;
    deregister(registration).await;
    close(cache).await?;
    tracing::info!(node_id = %config.executor.node_id, "plan executor stopped");
    Ok(())
}

/// `lancefleet control-plane`: one instance of the leader-elected control plane.
pub async fn control_plane(config: NodeConfig) -> Result<(), RoleError> {
    if !config.control.uses_etcd() {
        return Err(RoleError::Config(
            "the control plane needs etcd: pass --etcd URL or set [control] etcd_endpoints".into(),
        ));
    }
    let node_id = config.control.node_id_or_default("control-plane", config.control.listen.port());
    lancefleet_control_plane::run(&config, node_id, shutdown_on_signals()).await?;
    Ok(())
}

/// `lancefleet indexer`: maintains tables as their change events arrive (etcd), or with
/// `once`, every table once, then exits (non-zero when a table could not be maintained).
pub async fn indexer(config: NodeConfig, once: bool) -> Result<(), RoleError> {
    if !once && !config.control.uses_etcd() {
        return Err(RoleError::Config(
            "an indexer follows the cluster's change events on etcd: pass --etcd URL (or run with --once)".into(),
        ));
    }
    let shutdown = shutdown_on_signals();
    let root = StorageRoot::resolve(&config.storage.root)?;
    // Maintenance reads every byte of what it rewrites once: no cache in front of it.
    let catalog = Catalog::new(root, &config.storage.options, None);
    let client = etcd_client(&config).await?;
    let holder = config.control.node_id_or_default("indexer", config.indexer.listen.port());
    let indexer = Indexer::new(catalog, event_bus(client.as_ref(), &config), config.indexer.clone(), holder.clone());
    if once {
        let failed = indexer.run_once(shutdown).await?;
        tracing::info!(failed, "every table maintained once");
        return match failed {
            0 => Ok(()),
            _ => Err(RoleError::Config(format!("{failed} table(s) could not be maintained; see the log"))),
        };
    }
    let record = NodeRecord::new(holder.clone(), Role::Indexer, format!("http://{}", config.indexer.listen), 0);
    let registration = register(client.as_ref(), &config, record).await;
    let metrics = tokio::spawn(lancefleet_common::metrics::serve_metrics(config.indexer.listen, shutdown.clone()));
    indexer.run(shutdown).await;
    match metrics.await {
        Ok(Err(source)) => tracing::warn!(%source, "the metrics endpoint failed"),
        Err(error) => tracing::warn!(%error, "the metrics endpoint task failed"),
        Ok(Ok(())) => {}
    }
    deregister(registration).await;
    tracing::info!(holder, "indexer stopped");
    Ok(())
}
