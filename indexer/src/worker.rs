//! One maintenance turn of one table: take the table's lock, then plan and run one job at a
//! time against the latest version until nothing is left (or the turn's budget is spent),
//! publishing each maintenance commit, and release the lock.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt;

use lance::Dataset;
use lancefleet_common::config::IndexerConfig;
use lancefleet_common::events::{BusError, ChangeKind, EventBus, IndexRequest, TableEvent};
use lancefleet_common::membership::Membership;
use lancefleet_common::telemetry;
use lancefleet_engine::catalog::facts::TableFacts;
use lancefleet_engine::maintenance;
use lancefleet_engine::{Catalog, EngineError, IndexSpec, ReadVersion, TableId};
use tracing::Instrument;

use crate::error::IndexerError;
use crate::metrics::METRICS;
use crate::policy::{Job, JobKind, Optimize, next_job};

/// Jobs one turn runs at most before yielding to other tables.
const JOBS_PER_TURN: usize = 16;

/// What a turn ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnEnd {
    /// Nothing left to do.
    Idle,
    /// Work is left, or the round was dropped (a conflict, or another indexer holds the
    /// table): come back after the retry delay.
    Again,
    /// The table does not exist (any more).
    Gone,
}

/// How a turn went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Turn {
    /// How it ended.
    pub end: TurnEnd,
    /// Whether it cleaned old versions.
    pub cleaned: bool,
}

/// What a worker needs; shared by every turn.
#[derive(Debug)]
pub struct Worker {
    /// The tables.
    pub catalog: Arc<Catalog>,
    /// Events, index requests, locks.
    pub bus: Arc<dyn EventBus>,
    /// Thresholds.
    pub config: IndexerConfig,
    /// This indexer's id (the lock holder).
    pub holder: String,
    /// The plan executors serving the tables, whose number sizes fragments; `None`:
    /// queries run in the query node's process.
    pub fleet: Option<Arc<dyn Membership>>,
}

impl Worker {
    /// How many plan executors serve the tables now.
    fn executors(&self) -> usize {
        self.fleet.as_ref().map_or(0, |fleet| fleet.subscribe().borrow().len())
    }

    /// One turn on `table`, cleaning old versions too when `cleanup_due`.
    pub async fn turn(&self, table: &str, cleanup_due: bool) -> Result<Turn, IndexerError> {
        let id = TableId::parse(table).map_err(IndexerError::from)?;
        match self.bus.lock_table(table, &self.holder).await {
            Ok(()) => {}
            Err(BusError::Busy { holder, .. }) => {
                tracing::debug!(table, holder, "table is maintained by another indexer");
                return Ok(Turn { end: TurnEnd::Again, cleaned: false });
            }
            Err(error) => return Err(error.into()),
        }
        tracing::debug!(table, holder = %self.holder, "maintenance turn started");
        // A panicking job fails its turn like an error: the table is released and tried
        // again after a backoff, not left marked as running.
        let outcome = AssertUnwindSafe(self.jobs(table, &id, cleanup_due))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| Err(IndexerError::Panicked(panic_message(panic.as_ref()))));
        tracing::debug!(table, holder = %self.holder, ?outcome, "maintenance turn ended");
        if let Err(error) = self.bus.unlock_table(table, &self.holder).await {
            tracing::warn!(table, %error, "could not release the table; it frees when this indexer's lease expires");
        }
        outcome
    }

    async fn jobs(&self, table: &str, id: &TableId, cleanup_due: bool) -> Result<Turn, IndexerError> {
        let mut skip = Vec::new();
        let cleaned = |skip: &[JobKind]| skip.contains(&JobKind::Cleanup);
        for _ in 0..JOBS_PER_TURN {
            let mut dataset = match self.catalog.open_table(id, ReadVersion::default()).await {
                Ok(dataset) => dataset,
                Err(EngineError::TableNotFound { .. }) => return Ok(Turn { end: TurnEnd::Gone, cleaned: false }),
                Err(error) => return Err(error.into()),
            };
            let facts = TableFacts::read(&dataset).await?;
            METRICS.observe(table, &facts);
            let requests = self.bus.index_requests(table).await?;
            let Some(job) = next_job(&facts, &requests, &self.config, self.executors(), &skip, cleanup_due) else {
                return Ok(Turn { end: TurnEnd::Idle, cleaned: cleaned(&skip) });
            };
            let kind = job.kind();
            let result = self.run_recorded(table, &job, &facts, &mut dataset).await;
            match result {
                Ok(Some(event)) => {
                    self.publish(event).await;
                    if kind == JobKind::Cleanup {
                        skip.push(kind);
                    }
                }
                Ok(None) => skip.push(kind),
                Err(error) if error.is_conflict() => {
                    tracing::info!(table, job = kind.as_str(), %error, "a writer committed first; dropping this round");
                    return Ok(Turn { end: TurnEnd::Again, cleaned: cleaned(&skip) });
                }
                Err(error) => {
                    tracing::warn!(table, job = kind.as_str(), %error, "maintenance job failed");
                    if let Job::BuildRequested(request) = &job
                        && error.is_permanent()
                    {
                        tracing::error!(table, index = request.name, %error, "dropping an index request that cannot be built");
                        self.bus.finish_index_request(table, &request.name).await?;
                        continue;
                    }
                    return Err(error);
                }
            }
        }
        Ok(Turn { end: TurnEnd::Again, cleaned: cleaned(&skip) })
    }

    /// Runs `job` on `dataset` (whose facts are `facts`) in its span, timed and counted by
    /// outcome.
    async fn run_recorded(
        &self,
        table: &str,
        job: &Job,
        facts: &TableFacts,
        dataset: &mut Dataset,
    ) -> Result<Option<TableEvent>, IndexerError> {
        let kind = job.kind().as_str();
        let fragments = facts.fragment_rows.len();
        tracing::info!(table, job = kind, version = facts.version, fragments, "maintenance job started");
        let started = Instant::now();
        let span = tracing::info_span!(
            "maintenance_job",
            job = kind,
            table,
            from_version = telemetry::int(facts.version),
            to_version = tracing::field::Empty,
            rows = telemetry::int(facts.rows),
            fragments = telemetry::int(fragments),
            outcome = tracing::field::Empty,
        );
        let result = self.run(table, job, dataset).instrument(span.clone()).await;
        METRICS.job_seconds.with_label_values(&[kind]).observe(started.elapsed().as_secs_f64());
        let outcome = match &result {
            Ok(Some(_)) => "done",
            Ok(None) => "nothing",
            Err(error) if error.is_conflict() => "conflict",
            Err(_) => "failed",
        };
        METRICS.jobs.with_label_values(&[kind, outcome]).inc();
        span.record("outcome", outcome);
        if let Ok(Some(event)) = &result {
            span.record("to_version", telemetry::int(event.version));
            let seconds = started.elapsed().as_secs_f64();
            tracing::info!(table, job = kind, version = event.version, seconds, "maintenance committed");
        }
        result
    }

    /// Runs `job`; the event of its commit, or `None` when it found nothing to do.
    async fn run(&self, table: &str, job: &Job, dataset: &mut Dataset) -> Result<Option<TableEvent>, IndexerError> {
        let before = dataset.version().version;
        let (kind, new_fragments) = match job {
            Job::BuildRequested(IndexRequest { spec, .. }) | Job::BuildAuto { spec, .. } => {
                let spec = IndexSpec::resolve(spec, &arrow_schema::Schema::from(dataset.schema()))?;
                let (vector_rows, index_rows) = (self.config.vector_segment_rows, self.config.index_segment_rows);
                // Boxed: lance's optimize futures are too deep to nest in the turn's.
                Box::pin(spec.build_segmented(dataset, vector_rows, index_rows)).await?;
                if let Job::BuildRequested(request) = job {
                    self.bus.finish_index_request(table, &request.name).await?;
                }
                (ChangeKind::IndexBuilt, Vec::new())
            }
            Job::Compact { target_rows } => match maintenance::compact(dataset, *target_rows).await? {
                Some(compacted) => (ChangeKind::Compacted, compacted.new_fragments),
                None => return Ok(None),
            },
            Job::Split { target_rows } => match maintenance::split_fragments(dataset, *target_rows).await? {
                Some(split) => (ChangeKind::Compacted, split.new_fragments),
                None => return Ok(None),
            },
            Job::Optimize(optimize) => {
                let Optimize { indexes, merge, segment_rows, retrain } = optimize.clone();
                // Boxed: lance's optimize futures are too deep to nest in the turn's.
                let optimized = Box::pin(maintenance::optimize_indexes(dataset, indexes, merge, segment_rows, retrain));
                if !optimized.await? {
                    return Ok(None);
                }
                (ChangeKind::IndexOptimized, Vec::new())
            }
            Job::Cleanup => {
                let retention = self.config.cleanup_retention;
                let removed = maintenance::cleanup(dataset, retention).await?;
                tracing::info!(versions = removed, "old versions removed");
                (ChangeKind::CleanedUp, Vec::new())
            }
        };
        let version = dataset.version().version;
        if version == before && kind != ChangeKind::CleanedUp {
            return Ok(None);
        }
        Ok(Some(TableEvent { new_fragments, ..TableEvent::now(table, version, kind, 0) }))
    }

    async fn publish(&self, event: TableEvent) {
        if let Err(error) = self.bus.publish(event).await {
            tracing::warn!(%error, "could not publish a maintenance event");
        }
    }
}

/// What a panic said, when it said it with a string.
fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|message| (*message).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use arrow_array::{Int64Array, RecordBatch};
    use arrow_schema::{DataType, Field, Schema};
    use lancefleet_common::Shutdown;
    use lancefleet_common::events::{BusUpdate, LocalBus};
    use lancefleet_common::storage::StorageRoot;
    use lancefleet_engine::CreateMode;
    use tokio::sync::mpsc;

    use super::*;

    /// The process's bus, except that reading a table's index requests panics (standing
    /// in for a bug in a job).
    #[derive(Debug, Default)]
    struct PanickingBus(LocalBus);

    #[async_trait::async_trait]
    impl EventBus for PanickingBus {
        async fn publish(&self, event: TableEvent) -> Result<(), BusError> {
            self.0.publish(event).await
        }
        async fn request_index(&self, event: TableEvent, request: IndexRequest) -> Result<(), BusError> {
            self.0.request_index(event, request).await
        }
        async fn index_requests(&self, _table: &str) -> Result<Vec<IndexRequest>, BusError> {
            panic!("a bug")
        }
        async fn finish_index_request(&self, table: &str, name: &str) -> Result<(), BusError> {
            self.0.finish_index_request(table, name).await
        }
        async fn subscribe(&self, shutdown: Shutdown) -> mpsc::Receiver<BusUpdate> {
            self.0.subscribe(shutdown).await
        }
        async fn lock_table(&self, table: &str, holder: &str) -> Result<(), BusError> {
            self.0.lock_table(table, holder).await
        }
        async fn unlock_table(&self, table: &str, holder: &str) -> Result<(), BusError> {
            self.0.unlock_table(table, holder).await
        }
    }

    #[tokio::test]
    async fn a_panicking_job_fails_its_turn_and_releases_the_table() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = StorageRoot::resolve(dir.path().to_str().expect("utf-8 path")).expect("root");
        let catalog = Catalog::new(root, &BTreeMap::new(), None);
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![1, 2]))]).expect("batch");
        let id = TableId::parse("t").expect("id");
        catalog.create_table(&id, schema, vec![batch], CreateMode::Create).await.expect("created");
        let bus = Arc::new(PanickingBus::default());
        let worker = Worker {
            catalog: Arc::new(catalog),
            bus: bus.clone(),
            config: IndexerConfig::default(),
            holder: "ix-a".into(),
            fleet: None,
        };

        let turn = worker.turn("t", false).await;
        assert!(matches!(&turn, Err(IndexerError::Panicked(message)) if message == "a bug"), "{turn:?}");
        bus.lock_table("t", "ix-b").await.expect("the table was released");
    }
}
