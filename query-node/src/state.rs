//! What every request handler shares.

use std::sync::Arc;

use lancefleet_engine::Catalog;

use crate::dispatch::Dispatcher;

/// Shared handler state; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The tables this node serves.
    pub catalog: Arc<Catalog>,
    /// Where queries run.
    pub dispatcher: Arc<Dispatcher>,
}
