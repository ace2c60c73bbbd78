//! What every request handler shares.

use std::sync::Arc;

use lancefleet_common::events::{ChangeKind, EventBus, TableEvent};
use lancefleet_engine::{Catalog, TableId};

use crate::dispatch::Dispatcher;
use crate::metrics::METRICS;

/// Shared handler state; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The tables this node serves.
    pub catalog: Arc<Catalog>,
    /// Where queries run.
    pub dispatcher: Arc<Dispatcher>,
    /// Where committed changes are announced (the indexer fleet listens).
    pub events: Arc<dyn EventBus>,
    /// Build requested indexes before answering (no indexer follows the events).
    pub inline_indexing: bool,
}

impl AppState {
    /// Announces a committed change. The write is durable and acknowledged whatever
    /// happens here, so a failure is logged and counted, never returned: the table is
    /// maintained again on its next change.
    pub async fn announce(&self, id: &TableId, version: u64, kind: ChangeKind, rows: u64) {
        let event = TableEvent::now(id.to_string(), version, kind, rows);
        if let Err(error) = self.events.publish(event).await {
            METRICS.event_failures.inc();
            tracing::warn!(table = %id, version, ?kind, %error, "could not publish the change event");
        }
    }
}
