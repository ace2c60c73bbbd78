//! The `PlanExecutor` gRPC service: opens the pinned version (kept in an LRU of open
//! datasets), runs the fragment's query over its fragments, streams the rows as Arrow
//! Flight data.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow_flight::FlightData;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_schema::Schema;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use lance::Dataset;
use lance::io::RecordBatchStream;
use lancefleet_common::telemetry;
use lancefleet_engine::cache::CacheReads;
use lancefleet_engine::read::execute::{analyze, count, execute, full_text_stats};
use lancefleet_engine::store_metrics::requests_so_far;
use lancefleet_engine::{Catalog, EngineError, Scope};
use lancefleet_proto::v1::plan_executor_server::PlanExecutor;
use lancefleet_proto::v1::{AnalyzeReply, CountReply, FragmentQuery, FullTextStatsReply, PlanFragment};
use lancefleet_proto::{ErrorStatus, WIRE_VERSION};
use moka::future::Cache;
use tokio::sync::OwnedSemaphorePermit;
use tonic::{Request, Response, Status};
use tracing::{Instrument, Span};

use crate::admission::Admission;
use crate::error::ExecutorError;
use crate::metrics::METRICS;

/// Runs plan fragments against the tables of one storage root.
#[derive(Debug, Clone)]
pub struct ExecutorService {
    catalog: Arc<Catalog>,
    /// Room in the memory budget.
    admission: Arc<Admission>,
    /// Open datasets by (uri, version, manifest timestamp): a pinned manifest never
    /// changes, so entries are only evicted for room. The timestamp tells a table dropped
    /// and created again, whose versions count from 1 again, from the one it replaced.
    datasets: Cache<(String, u64, u64), Arc<Dataset>>,
}

impl ExecutorService {
    /// A service over `catalog` keeping up to `open_datasets` versions open and admitting
    /// fragments by `admission`.
    pub fn new(catalog: Catalog, open_datasets: u64, admission: Admission) -> Self {
        Self { catalog: Arc::new(catalog), admission: Arc::new(admission), datasets: Cache::new(open_datasets) }
    }

    /// The pinned dataset of `plan` and room in the memory budget for running it there.
    /// Only a search counts its limit: a scan streams its rows.
    async fn admitted(&self, plan: &PlanFragment) -> Result<(Arc<Dataset>, OwnedSemaphorePermit), ExecutorError> {
        let dataset = self.dataset(plan).await?;
        let searches = plan.query.as_ref().filter(|query| query.nearest.is_some() || query.full_text.is_some());
        let estimate = self.admission.estimate(searches.and_then(|query| query.limit), &Schema::from(dataset.schema()));
        let deadline = (plan.timeout_ms > 0).then(|| Duration::from_millis(plan.timeout_ms));
        let permit = self.admission.admit(estimate, deadline).await?;
        Ok((dataset, permit))
    }

    /// The pinned dataset of `plan`, opened once however many fragments ask at once; a
    /// plan of another wire version is refused before anything is read.
    async fn dataset(&self, plan: &PlanFragment) -> Result<Arc<Dataset>, ExecutorError> {
        if plan.wire_version != WIRE_VERSION {
            return Err(ExecutorError::WireVersion(plan.wire_version));
        }
        let key = (plan.table_uri.clone(), plan.version, plan.manifest_timestamp_nanos);
        let catalog = self.catalog.clone();
        let (uri, version, timestamp) = key.clone();
        self.datasets
            .try_get_with(key, async move { catalog.open_pinned(&uri, version, timestamp).await.map(Arc::new) })
            .await
            .map_err(ExecutorError::Open)
    }
}

fn scope(plan: &PlanFragment) -> Result<Scope<'_>, ExecutorError> {
    if plan.whole_table {
        return Ok(Scope::WholeTable);
    }
    if plan.fragment_ids.is_empty() {
        return Err(ExecutorError::BadPlan("the plan fragment names no fragments".into()));
    }
    Ok(Scope::Fragments(&plan.fragment_ids))
}

fn query(plan: &PlanFragment) -> Result<&FragmentQuery, ExecutorError> {
    plan.query.as_ref().ok_or_else(|| ExecutorError::BadPlan("the plan fragment has no query".into()))
}

/// What one plan fragment did, recorded on its span when it ends: a child of the query
/// node's executor-call span when the call carried its trace context, with the request it
/// serves (`query_id`), its table, version and fragments, and at the end its rows, the
/// cache's reads by tier and the object-store requests meanwhile (process-wide counters:
/// concurrent fragments count too).
struct Work {
    span: Span,
    catalog: Arc<Catalog>,
    cache_before: CacheReads,
    requests_before: u64,
    started: Instant,
}

impl Work {
    fn start(rpc: &'static str, request: &Request<PlanFragment>, catalog: &Arc<Catalog>) -> Self {
        let plan = request.get_ref();
        let empty = tracing::field::Empty;
        let span = tracing::info_span!(
            "fragment",
            rpc,
            query_id = %plan.query_id,
            table = %plan.table_uri,
            version = telemetry::int(plan.version),
            fragments = telemetry::int(plan.fragment_ids.len()),
            rows = empty,
            cache_memory_hits = empty,
            cache_disk_hits = empty,
            cache_misses = empty,
            cache_memory_bytes = empty,
            cache_disk_bytes = empty,
            fetched_bytes = empty,
            object_store_requests = empty,
        );
        telemetry::follow_caller(&span, telemetry::context_from_metadata(request.metadata()));
        METRICS.fragments.with_label_values(&[rpc]).inc();
        Self {
            span,
            catalog: catalog.clone(),
            cache_before: catalog.cache_reads(),
            requests_before: requests_so_far(),
            started: Instant::now(),
        }
    }

    /// Records what the fragment did, `rows` rows, and logs it.
    fn finish(&self, rows: u64) {
        let reads = self.catalog.cache_reads().since(&self.cache_before);
        let span = &self.span;
        let int = |value: u64| telemetry::int(value);
        span.record("rows", int(rows));
        span.record("cache_memory_hits", int(reads.memory_hits));
        span.record("cache_disk_hits", int(reads.disk_hits));
        span.record("cache_misses", int(reads.misses));
        span.record("cache_memory_bytes", int(reads.memory_bytes));
        span.record("cache_disk_bytes", int(reads.disk_bytes));
        span.record("fetched_bytes", int(reads.fetched_bytes));
        span.record("object_store_requests", int(requests_so_far().saturating_sub(self.requests_before)));
        let elapsed_ms = self.started.elapsed().as_millis() as u64;
        span.in_scope(|| tracing::debug!(rows, elapsed_ms, "fragment answered"));
    }
}

#[tonic::async_trait]
impl PlanExecutor for ExecutorService {
    type ExecuteStream = BoxStream<'static, Result<FlightData, Status>>;

    async fn execute(&self, request: Request<PlanFragment>) -> Result<Response<Self::ExecuteStream>, Status> {
        let work = Work::start("execute", &request, &self.catalog);
        let plan = request.into_inner();
        let run = async {
            let (dataset, permit) = self.admitted(&plan).await?;
            Ok::<_, ExecutorError>((execute(&dataset, scope(&plan)?, query(&plan)?).await?, permit))
        };
        let (batches, permit) =
            async { run.await.map_err(ExecutorError::into_grpc) }.instrument(work.span.clone()).await?;
        let schema = batches.schema();
        let deadline = (plan.timeout_ms > 0).then(|| work.started + Duration::from_millis(plan.timeout_ms));
        let rows = Arc::new(AtomicU64::new(0));
        let counted = rows.clone();
        let batches = batches.map(move |batch| {
            if deadline.is_some_and(|deadline| Instant::now() > deadline) {
                let status = ErrorStatus::timeout("fragment deadline passed");
                return Err(FlightError::Tonic(Box::new(status.into_grpc())));
            }
            let batch = batch.map_err(|error| {
                FlightError::Tonic(Box::new(ExecutorError::Engine(EngineError::from(error)).into_grpc()))
            })?;
            counted.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
            Ok(batch)
        });
        // Once the last batch is out, the span learns what the fragment did and its room in
        // the budget is given back (also when the query node drops the stream before).
        let end = futures::stream::once(async move {
            work.finish(rows.load(Ordering::Relaxed));
            drop(permit);
        })
        .filter_map(|()| futures::future::ready(None));
        let flight =
            FlightDataEncoderBuilder::new().with_schema(schema).build(batches.chain(end)).map_err(Status::from);
        Ok(Response::new(flight.boxed()))
    }

    async fn count(&self, request: Request<PlanFragment>) -> Result<Response<CountReply>, Status> {
        let work = Work::start("count", &request, &self.catalog);
        let plan = request.into_inner();
        let run = async {
            let (dataset, _permit) = self.admitted(&plan).await?;
            let filter = query(&plan)?.filter.as_deref();
            Ok::<_, ExecutorError>(count(&dataset, scope(&plan)?, filter).await?)
        };
        let rows = async { run.await.map_err(ExecutorError::into_grpc) }.instrument(work.span.clone()).await?;
        work.finish(rows);
        Ok(Response::new(CountReply { rows }))
    }

    async fn analyze(&self, request: Request<PlanFragment>) -> Result<Response<AnalyzeReply>, Status> {
        let work = Work::start("analyze", &request, &self.catalog);
        let plan = request.into_inner();
        let run = async {
            let (dataset, _permit) = self.admitted(&plan).await?;
            Ok::<_, ExecutorError>(analyze(&self.catalog, &dataset, scope(&plan)?, query(&plan)?).await?)
        };
        let reply = async { run.await.map_err(ExecutorError::into_grpc) }.instrument(work.span.clone()).await?;
        work.finish(0);
        Ok(Response::new(reply))
    }

    async fn full_text_stats(&self, request: Request<PlanFragment>) -> Result<Response<FullTextStatsReply>, Status> {
        let work = Work::start("full_text_stats", &request, &self.catalog);
        let plan = request.into_inner();
        let run = async {
            let (dataset, _permit) = self.admitted(&plan).await?;
            Ok::<_, ExecutorError>(full_text_stats(&dataset, scope(&plan)?, query(&plan)?).await?)
        };
        let columns = async { run.await.map_err(ExecutorError::into_grpc) }.instrument(work.span.clone()).await?;
        work.finish(0);
        Ok(Response::new(FullTextStatsReply { columns }))
    }
}
