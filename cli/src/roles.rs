//! Each subcommand's role: build it from the configuration, serve until SIGINT/SIGTERM,
//! then shut down in order (stop accepting, drain in-flight work, flush the cache).

use std::time::Duration;

use lancefleet_common::Shutdown;
use lancefleet_common::config::NodeConfig;
use lancefleet_common::membership::StaticMembership;
use lancefleet_common::storage::StorageRoot;
use lancefleet_engine::Catalog;
use lancefleet_engine::cache::ObjectCache;
use lancefleet_plan_executor::PlanExecutorNode;
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

/// `lancefleet standalone`: the query node with in-process execution, or with the
/// configured executors when there are any.
pub async fn standalone(config: NodeConfig) -> Result<(), RoleError> {
    let dispatcher = if config.cluster.executors.is_empty() { Dispatcher::Local } else { cluster(&config)? };
    serve_query_node(config, dispatcher, "standalone").await
}

/// `lancefleet query-node`: the query node in front of plan executors.
pub async fn query_node(config: NodeConfig) -> Result<(), RoleError> {
    if config.cluster.executors.is_empty() {
        return Err(RoleError::Config(
            "a query node needs plan executors: pass --executor ID=ADDRESS or set [cluster] executors".into(),
        ));
    }
    let dispatcher = cluster(&config)?;
    serve_query_node(config, dispatcher, "query-node").await
}

fn cluster(config: &NodeConfig) -> Result<Dispatcher, RoleError> {
    let membership = StaticMembership::new(config.cluster.executors.clone());
    Ok(Dispatcher::Cluster(Cluster::new(&membership, &config.cluster)?))
}

async fn serve_query_node(config: NodeConfig, dispatcher: Dispatcher, role: &'static str) -> Result<(), RoleError> {
    let (catalog, cache) = catalog(&config).await?;
    let weak_reads = Duration::from_secs(config.rest.weak_read_consistency_interval_seconds);
    let catalog = catalog.with_weak_reads(weak_reads);
    let storage_root = catalog.root().uri().to_string();
    let node = QueryNode::bind(&config.rest, catalog, dispatcher).await?;
    tracing::info!(
        role,
        rest = %node.local_addr()?,
        storage_root,
        executors = config.cluster.executors.len(),
        weak_read_consistency_interval_seconds = config.rest.weak_read_consistency_interval_seconds,
        version = env!("CARGO_PKG_VERSION"),
        "lancefleet is serving the LanceDB REST API"
    );
    node.serve(shutdown_on_signals()).await?;
    close(cache).await?;
    tracing::info!(role, "lancefleet stopped");
    Ok(())
}

/// `lancefleet plan-executor`: runs plan fragments until shut down.
pub async fn plan_executor(config: NodeConfig) -> Result<(), RoleError> {
    let (catalog, cache) = catalog(&config).await?;
    let node = PlanExecutorNode::bind(&config.executor, catalog).await?;
    node.serve(shutdown_on_signals()).await?;
    close(cache).await?;
    tracing::info!(node_id = %config.executor.node_id, "plan executor stopped");
    Ok(())
}
