//! What every request handler shares, and the operations the REST API and Arrow Flight
//! both offer: a query against a pinned version, and a streamed write.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::TryStreamExt;
use lance::Dataset;
use lance::deps::datafusion::execution::SendableRecordBatchStream;
use lance::deps::datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use lancefleet_common::events::{ChangeKind, EventBus, TableEvent};
use lancefleet_engine::{Catalog, InsertMode, QueryOutput, QueryPlan, ReadVersion, TableId, TableQuery, plan_query};

use crate::auth::Authenticator;
use crate::dispatch::{Dispatcher, Pinned};
use crate::error::ApiError;
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
    /// Who may call.
    pub auth: Arc<Authenticator>,
}

/// A table version pinned for one query, and the query compiled against it.
#[derive(Debug)]
pub struct PinnedPlan {
    /// The dataset at the pinned version.
    pub dataset: Dataset,
    /// Its URI.
    pub uri: String,
    /// The compiled query.
    pub plan: QueryPlan,
}

impl PinnedPlan {
    /// The pinned version, as the dispatcher takes it.
    pub fn pinned(&self) -> Pinned<'_> {
        Pinned { dataset: &self.dataset, uri: &self.uri }
    }
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

    /// Pins the version of table `id` that `read` asks for and compiles `query` against it.
    pub async fn pinned_plan(
        &self,
        id: &TableId,
        read: ReadVersion,
        query: &TableQuery,
    ) -> Result<PinnedPlan, ApiError> {
        query.validate()?;
        let dataset = self.catalog.open_table(id, read).await?;
        self.plan_pinned(id, dataset, query).await
    }

    /// Compiles `query` against `dataset`, the version of table `id` already pinned.
    pub async fn plan_pinned(
        &self,
        id: &TableId,
        dataset: Dataset,
        query: &TableQuery,
    ) -> Result<PinnedPlan, ApiError> {
        let uri = self.catalog.table_uri(id);
        let plan = plan_query(&dataset, query).await?;
        Ok(PinnedPlan { dataset, uri, plan })
    }

    /// Runs `query` against the version of table `id` that `read` asks for: the version
    /// read and the merged answer.
    pub async fn run_query(
        &self,
        id: &TableId,
        read: ReadVersion,
        query: &TableQuery,
    ) -> Result<(Dataset, QueryOutput), ApiError> {
        let pinned = self.pinned_plan(id, read, query).await?;
        let output = self.dispatcher.query(pinned.pinned(), &pinned.plan).await?;
        Ok((pinned.dataset, output))
    }

    /// Writes `stream` into table `id` as `mode` says, without holding it whole, and
    /// announces the commit. Returns the new version and the rows written; nothing is
    /// committed when any batch fails.
    pub async fn write_stream(
        &self,
        id: &TableId,
        stream: SendableRecordBatchStream,
        mode: InsertMode,
    ) -> Result<(Dataset, u64), ApiError> {
        let rows = Arc::new(AtomicU64::new(0));
        let counter = rows.clone();
        let schema = stream.schema();
        let counted = stream.inspect_ok(move |batch| {
            counter.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        });
        let stream = Box::pin(RecordBatchStreamAdapter::new(schema, counted));
        let dataset = self.catalog.insert_stream(id, stream, mode).await?;
        let version = dataset.version().version;
        let rows = rows.load(Ordering::Relaxed);
        tracing::info!(table = %id, version, rows, ?mode, "rows written");
        let kind = match mode {
            InsertMode::Append => ChangeKind::Append,
            InsertMode::Overwrite => ChangeKind::Overwrite,
            InsertMode::Create => ChangeKind::Create,
        };
        self.announce(id, version, kind, rows).await;
        Ok((dataset, rows))
    }
}
