//! The `PlanExecutor` gRPC service: opens the pinned version (kept in an LRU of open
//! datasets), runs the fragment's query over its fragments, streams the rows as Arrow
//! Flight data.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_flight::FlightData;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use lance::Dataset;
use lance::io::RecordBatchStream;
use lancefleet_engine::read::execute::{analyze, count, execute};
use lancefleet_engine::{Catalog, EngineError, Scope};
use lancefleet_proto::v1::plan_executor_server::PlanExecutor;
use lancefleet_proto::v1::{AnalyzeReply, CountReply, FragmentQuery, PlanFragment};
use lancefleet_proto::{ErrorStatus, WIRE_VERSION};
use moka::future::Cache;
use tonic::{Request, Response, Status};

use crate::error::ExecutorError;
use crate::metrics::METRICS;

/// Runs plan fragments against the tables of one storage root.
#[derive(Debug, Clone)]
pub struct ExecutorService {
    catalog: Arc<Catalog>,
    /// Open datasets by (uri, version): a pinned version never changes, so entries are
    /// only evicted for room.
    datasets: Cache<(String, u64), Arc<Dataset>>,
}

impl ExecutorService {
    /// A service over `catalog` keeping up to `open_datasets` versions open.
    pub fn new(catalog: Catalog, open_datasets: u64) -> Self {
        Self { catalog: Arc::new(catalog), datasets: Cache::new(open_datasets) }
    }

    /// The pinned dataset of `plan`, opened once however many fragments ask at once; a
    /// plan of another wire version is refused before anything is read.
    async fn dataset(&self, plan: &PlanFragment) -> Result<Arc<Dataset>, ExecutorError> {
        if plan.wire_version != WIRE_VERSION {
            return Err(ExecutorError::WireVersion(plan.wire_version));
        }
        let key = (plan.table_uri.clone(), plan.version);
        let catalog = self.catalog.clone();
        let (uri, version) = key.clone();
        self.datasets
            .try_get_with(key, async move { catalog.open_pinned(&uri, version).await.map(Arc::new) })
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

#[tonic::async_trait]
impl PlanExecutor for ExecutorService {
    type ExecuteStream = BoxStream<'static, Result<FlightData, Status>>;

    async fn execute(&self, request: Request<PlanFragment>) -> Result<Response<Self::ExecuteStream>, Status> {
        let plan = request.into_inner();
        METRICS.fragments.with_label_values(&["execute"]).inc();
        let started = Instant::now();
        let run = async {
            let dataset = self.dataset(&plan).await?;
            Ok::<_, ExecutorError>(execute(&dataset, scope(&plan)?, query(&plan)?).await?)
        };
        let batches = run.await.map_err(ExecutorError::into_grpc)?;
        let schema = batches.schema();
        let deadline = (plan.timeout_ms > 0).then(|| started + Duration::from_millis(plan.timeout_ms));
        let fragments = plan.fragment_ids.len();
        let batches = batches.map(move |batch| {
            if deadline.is_some_and(|deadline| Instant::now() > deadline) {
                let status = ErrorStatus::timeout("fragment deadline passed");
                return Err(FlightError::Tonic(Box::new(status.into_grpc())));
            }
            batch.map_err(|error| {
                FlightError::Tonic(Box::new(ExecutorError::Engine(EngineError::from(error)).into_grpc()))
            })
        });
        let flight = FlightDataEncoderBuilder::new().with_schema(schema).build(batches).map_err(Status::from);
        tracing::debug!(table = %plan.table_uri, version = plan.version, fragments, "fragment started");
        Ok(Response::new(flight.boxed()))
    }

    async fn count(&self, request: Request<PlanFragment>) -> Result<Response<CountReply>, Status> {
        let plan = request.into_inner();
        METRICS.fragments.with_label_values(&["count"]).inc();
        let run = async {
            let dataset = self.dataset(&plan).await?;
            let filter = query(&plan)?.filter.as_deref();
            Ok::<_, ExecutorError>(count(&dataset, scope(&plan)?, filter).await?)
        };
        let rows = run.await.map_err(ExecutorError::into_grpc)?;
        Ok(Response::new(CountReply { rows }))
    }

    async fn analyze(&self, request: Request<PlanFragment>) -> Result<Response<AnalyzeReply>, Status> {
        let plan = request.into_inner();
        METRICS.fragments.with_label_values(&["analyze"]).inc();
        let run = async {
            let dataset = self.dataset(&plan).await?;
            Ok::<_, ExecutorError>(analyze(&self.catalog, &dataset, scope(&plan)?, query(&plan)?).await?)
        };
        Ok(Response::new(run.await.map_err(ExecutorError::into_grpc)?))
    }
}
