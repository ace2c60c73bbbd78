//! `lancefleet standalone`: every role in one process over one storage root.

use lancefleet_common::Shutdown;
use lancefleet_common::config::StandaloneConfig;
use lancefleet_common::storage::StorageRoot;
use lancefleet_engine::Catalog;
use lancefleet_query_node::QueryNode;

/// Why standalone could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StandaloneError {
    /// The storage root is unusable.
    #[error(transparent)]
    Storage(#[from] lancefleet_common::storage::StorageRootError),
    /// The REST server failed.
    #[error(transparent)]
    Server(#[from] lancefleet_query_node::ApiError),
}

/// Serves until SIGINT/SIGTERM, then shuts down in order: stop accepting, drain requests.
pub async fn run(config: StandaloneConfig) -> Result<(), StandaloneError> {
    let root = StorageRoot::resolve(&config.storage.root)?;
    let catalog = Catalog::new(root.clone(), &config.storage.options);
    let node = QueryNode::bind(&config.rest, catalog).await?;
    tracing::info!(
        rest = %node.local_addr()?,
        storage_root = root.uri(),
        version = env!("CARGO_PKG_VERSION"),
        "lancefleet standalone is serving the LanceDB REST API"
    );
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signals();
    node.serve(shutdown).await?;
    tracing::info!("lancefleet standalone stopped");
    Ok(())
}
