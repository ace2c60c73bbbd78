//! What every request handler shares, and the operations the REST API and Arrow Flight
//! both offer: a query against a pinned version, and a streamed write.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::TryStreamExt;
use lance::Dataset;
use lance::deps::datafusion::execution::SendableRecordBatchStream;
use lance::deps::datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use lancefleet_common::events::{ChangeKind, EventBus, TableEvent, WriteIntent};
use lancefleet_engine::{Catalog, InsertMode, Namespace, QueryPlan, ReadVersion, TableId, TableQuery, plan_query};

use crate::audit::AuditLog;
use crate::auth::{self, Authenticator};
use crate::dispatch::{Answer, Dispatcher, Pinned};
use crate::error::ApiError;
use crate::limits::RequestLimits;
use crate::metrics::METRICS;
use crate::vending::Vending;

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
    /// Where write and admin requests are recorded.
    pub audit: Arc<AuditLog>,
    /// What one request may ask for.
    pub limits: RequestLimits,
    /// What `describe_table` and `declare` hand callers to reach the store themselves.
    pub vending: Vending,
    /// Writes announce themselves on the bus before they commit and record their version
    /// after (strong reads learn versions from the bus; see `rest.external_writer_check`).
    pub recorded_versions: bool,
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
    /// Runs `write`, a commit to table `id` of `kind`, and announces what it committed
    /// (`committed` gives its version and the rows it touched) before the caller answers.
    ///
    /// Where versions are recorded, the write is first announced on the bus, so strong
    /// readers elsewhere list the store until it is recorded; a write that cannot be
    /// announced is refused (503) before anything is written. Once committed the write is
    /// durable and acknowledged whatever happens to the announcement: a failure to record
    /// it is logged and counted (its announcement expires with this node's lease).
    pub async fn commit<T, E>(
        &self,
        id: &TableId,
        kind: ChangeKind,
        write: impl Future<Output = Result<T, E>>,
        committed: impl FnOnce(&T) -> (u64, u64),
    ) -> Result<T, ApiError>
    where
        ApiError: From<E>,
    {
        let table = id.to_string();
        let intent =
            if self.recorded_versions { self.events.begin_write(&table).await? } else { WriteIntent::default() };
        let done = match write.await {
            Ok(done) => done,
            Err(error) => {
                if let Err(error) = self.events.abandon_write(&intent).await {
                    tracing::warn!(%table, %error, "could not end the announcement of a failed write");
                }
                return Err(error.into());
            }
        };
        let (version, rows) = committed(&done);
        if version > 0 {
            auth::note_committed(version);
        }
        let event = TableEvent::now(table.clone(), version, kind, rows);
        if let Err(error) = self.events.publish_write(event, &intent).await {
            METRICS.event_failures.inc();
            tracing::warn!(%table, version, ?kind, %error, "could not publish the change event");
        }
        Ok(done)
    }

    /// The tables of `namespace` the current caller may see, sorted.
    pub async fn visible_tables(&self, namespace: &Namespace) -> Result<Vec<String>, ApiError> {
        let mut names = self.catalog.list_tables(namespace).await?;
        names.retain(|name| {
            TableId::new(namespace.clone(), name).is_ok_and(|id| auth::visible(&auth::Target::Table(id)))
        });
        Ok(names)
    }

    /// Pins the version of table `id` that `read` asks for and compiles `query` against it.
    pub async fn pinned_plan(
        &self,
        id: &TableId,
        read: ReadVersion,
        query: &TableQuery,
    ) -> Result<PinnedPlan, ApiError> {
        query.validate()?;
        self.limits.check_query(query)?;
        let dataset = self.catalog.open_table(id, read).await?;
        self.plan_pinned(dataset, query).await
    }

    /// Compiles `query` against `dataset`, the version of a table already pinned.
    pub async fn plan_pinned(&self, dataset: Dataset, query: &TableQuery) -> Result<PinnedPlan, ApiError> {
        let uri = dataset.uri().to_string();
        let plan = plan_query(&dataset, query).await?;
        Ok(PinnedPlan { dataset, uri, plan })
    }

    /// Runs `query` against the version of table `id` that `read` asks for: the version
    /// read and the answer, streamed (see [`Dispatcher::query_stream`]).
    pub async fn run_query(
        &self,
        id: &TableId,
        read: ReadVersion,
        query: &TableQuery,
    ) -> Result<(Dataset, Answer), ApiError> {
        let pinned = self.pinned_plan(id, read, query).await?;
        let answer = self.dispatcher.query_stream(pinned.pinned(), &pinned.plan).await?;
        Ok((pinned.dataset, answer))
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
        let kind = match mode {
            InsertMode::Append => ChangeKind::Append,
            InsertMode::Overwrite => ChangeKind::Overwrite,
            InsertMode::Create => ChangeKind::Create,
        };
        let written = self.catalog.insert_stream(id, stream, mode);
        let dataset =
            self.commit(id, kind, written, |dataset| (dataset.version().version, rows.load(Ordering::Relaxed))).await?;
        let rows = rows.load(Ordering::Relaxed);
        tracing::info!(table = %id, version = dataset.version().version, rows, ?mode, "rows written");
        Ok((dataset, rows))
    }
}
