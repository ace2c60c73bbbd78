//! Each subcommand's role: build it from the configuration, serve until SIGINT/SIGTERM,
//! then shut down in order (stop accepting, drain in-flight work).

use lancefleet_common::Shutdown;
use lancefleet_common::config::NodeConfig;
use lancefleet_common::membership::StaticMembership;
use lancefleet_common::storage::StorageRoot;
use lancefleet_engine::Catalog;
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
    /// The configuration cannot work for this role.
    #[error("{0}")]
    Config(String),
}

fn catalog(config: &NodeConfig) -> Result<Catalog, RoleError> {
    let root = StorageRoot::resolve(&config.storage.root)?;
    Ok(Catalog::new(root, &config.storage.options))
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
    let catalog = catalog(&config)?;
    let storage_root = catalog.root().uri().to_string();
    let node = QueryNode::bind(&config.rest, catalog, dispatcher).await?;
    tracing::info!(
        role,
        rest = %node.local_addr()?,
        storage_root,
        executors = config.cluster.executors.len(),
        version = env!("CARGO_PKG_VERSION"),
        "lancefleet is serving the LanceDB REST API"
    );
    node.serve(shutdown_on_signals()).await?;
    tracing::info!(role, "lancefleet stopped");
    Ok(())
}

/// `lancefleet plan-executor`: runs plan fragments until shut down.
pub async fn plan_executor(config: NodeConfig) -> Result<(), RoleError> {
    let node = PlanExecutorNode::bind(&config.executor, catalog(&config)?).await?;
    node.serve(shutdown_on_signals()).await?;
    tracing::info!(node_id = %config.executor.node_id, "plan executor stopped");
    Ok(())
}
