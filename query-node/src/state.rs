//! What every request handler shares.

use std::sync::Arc;

use lancefleet_engine::Catalog;

/// Shared handler state; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The tables this node serves.
    pub catalog: Arc<Catalog>,
}
