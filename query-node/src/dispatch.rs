//! Runs compiled queries: in-process (standalone without executors) or spread over plan
//! executors by fragment, then merges the partial results exactly.

mod assignment;
mod cluster;
mod explain;
pub(crate) mod hedge;

use std::collections::HashMap;
use std::sync::Arc;

use arrow_schema::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::future::try_join_all;
use futures::{StreamExt, TryStreamExt};
use lance::Dataset;
use lancefleet_engine::read::execute::{count, execute, execute_collect, output_schema};
use lancefleet_engine::read::merge::{merge, prepend_query_index};
use lancefleet_engine::read::stream::{cut, merge_in_manifest_order, streams};
use lancefleet_engine::{QueryOutput, QueryPlan, Scope};
use lancefleet_proto::v1::FragmentQuery;

pub use cluster::{Cluster, RowStream};

use crate::error::ApiError;

/// Each fragment id's position in `fragments` (the manifest order).
fn manifest_positions(fragments: &[u64]) -> HashMap<u64, u64> {
    fragments.iter().enumerate().map(|(position, id)| (*id, position as u64)).collect()
}

/// `rows` of `schema` as DataFusion's stream (errors kept typed inside its own).
fn as_record_batch_stream(schema: SchemaRef, rows: RowStream) -> SendableRecordBatchStream {
    Box::pin(RecordBatchStreamAdapter::new(schema, rows.map_err(datafusion::error::DataFusionError::from)))
}

/// Where fragment queries run.
#[derive(Debug)]
pub enum Dispatcher {
    /// In this process, over the whole pinned version.
    Local,
    /// On plan executors, each over the fragments placed on it.
    Cluster(Box<Cluster>),
}

/// A table version pinned for one request.
#[derive(Debug, Clone, Copy)]
pub struct Pinned<'a> {
    /// The dataset at the pinned version.
    pub dataset: &'a Dataset,
    /// Its URI, the placement key of its fragments.
    pub uri: &'a str,
}

/// The fragments one scatter reads and how they may be divided among executors.
#[derive(Debug, Clone, Copy)]
pub struct Spread<'a> {
    /// The pinned version's fragments, in manifest order.
    pub fragments: &'a [u64],
    /// One executor reads the whole version (a part that does not split); it is placed
    /// where the first fragment lives.
    pub whole_table: bool,
    /// Fragments that must be read by one executor together.
    pub colocate: &'a [Vec<u64>],
}

impl<'a> Spread<'a> {
    /// Every fragment of `fragments` placed on its own first-choice executor.
    pub fn split(fragments: &'a [u64]) -> Self {
        Self { fragments, whole_table: false, colocate: &[] }
    }

    /// How `plan` spreads over `fragments`.
    fn of(plan: &'a QueryPlan, fragments: &'a [u64]) -> Self {
        Self { fragments, whole_table: !plan.splits, colocate: &plan.colocate }
    }

    /// The fragments placement places: all, or the first for a whole-table part.
    fn placed(&self) -> &'a [u64] {
        if self.whole_table { &self.fragments[..self.fragments.len().min(1)] } else { self.fragments }
    }
}

impl Pinned<'_> {
    /// The ids of the pinned version's fragments, in manifest order.
    pub fn fragment_ids(&self) -> Vec<u64> {
        self.dataset.fragments().iter().map(|fragment| fragment.id).collect()
    }
}

/// A query's answer as it streams: its schema (known before any row) and its rows.
pub struct Answer {
    /// Schema of every batch.
    pub schema: SchemaRef,
    /// The rows in order; an error ends them.
    pub rows: RowStream,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answer").field("schema", &self.schema).finish_non_exhaustive()
    }
}

impl From<QueryOutput> for Answer {
    fn from(output: QueryOutput) -> Self {
        Self { schema: output.schema, rows: futures::stream::iter(output.batches.into_iter().map(Ok)).boxed() }
    }
}

impl From<SendableRecordBatchStream> for Answer {
    fn from(stream: SendableRecordBatchStream) -> Self {
        Self { schema: stream.schema(), rows: stream.map_err(ApiError::from).boxed() }
    }
}

impl Dispatcher {
    /// Runs `plan` over `pinned` and streams its answer: a scan's rows as the executors
    /// send them, merged in manifest order with one batch per executor held; any other
    /// query's merged answer once it is complete (bounded by its `k`).
    pub async fn query_stream(&self, pinned: Pinned<'_>, plan: &QueryPlan) -> Result<Answer, ApiError> {
        let (true, [part]) = (streams(plan), plan.parts.as_slice()) else {
            return Ok(self.query(pinned, plan).await?.into());
        };
        let fragments = pinned.fragment_ids();
        let ordered = match self {
            Self::Cluster(cluster) if !fragments.is_empty() => {
                let schema = output_schema(pinned.dataset, part).await?;
                let positions = Arc::new(manifest_positions(&fragments));
                let spread = Spread::of(plan, &fragments);
                let streams = cluster.scatter_streams(pinned, spread, part).await?;
                let streams = streams.into_iter().map(|rows| as_record_batch_stream(schema.clone(), rows)).collect();
                let fetch = plan.merge.limit.map(|limit| limit.saturating_add(plan.merge.offset));
                let fetch = fetch.map(|rows| usize::try_from(rows).unwrap_or(usize::MAX));
                merge_in_manifest_order(schema, positions, streams, fetch)?
            }
            Self::Cluster(_) | Self::Local => execute(pinned.dataset, Scope::WholeTable, part).await?.into(),
        };
        Ok(cut(&plan.merge, ordered)?.into())
    }

    /// Runs `plan` over `pinned` and returns the merged answer.
    pub async fn query(&self, pinned: Pinned<'_>, plan: &QueryPlan) -> Result<QueryOutput, ApiError> {
        let fragments = pinned.fragment_ids();
        let positions = manifest_positions(&fragments);
        let parts = plan.parts.iter().map(|part| self.query_part(pinned, plan, part, &fragments, &positions));
        let outputs = try_join_all(parts).await?;
        if plan.query_index {
            return Ok(prepend_query_index(outputs)?);
        }
        outputs.into_iter().next().ok_or_else(|| ApiError::from(lancefleet_engine::EngineError::internal("empty plan")))
    }

    async fn query_part(
        &self,
        pinned: Pinned<'_>,
        plan: &QueryPlan,
        part: &FragmentQuery,
        fragments: &[u64],
        positions: &HashMap<u64, u64>,
    ) -> Result<QueryOutput, ApiError> {
        let partials = match self {
            // An empty version has no fragments to place; lance still knows its schema.
            Self::Cluster(cluster) if !fragments.is_empty() => {
                let spread = Spread::of(plan, fragments);
                let part = cluster.divided(pinned, spread, plan, part).await?;
                cluster.scatter_query(pinned, spread, &part).await?
            }
            Self::Cluster(_) | Self::Local => vec![execute_collect(pinned.dataset, Scope::WholeTable, part).await?],
        };
        Ok(merge(&plan.merge, positions, partials)?)
    }

    /// Counts the rows of `pinned` matching `filter`.
    pub async fn count_rows(&self, pinned: Pinned<'_>, filter: Option<&str>) -> Result<u64, ApiError> {
        let fragments = pinned.fragment_ids();
        match self {
            Self::Cluster(cluster) if !fragments.is_empty() => {
                Ok(cluster.scatter_count(pinned, &fragments, filter).await?.into_iter().sum())
            }
            Self::Cluster(_) | Self::Local => Ok(count(pinned.dataset, Scope::WholeTable, filter).await?),
        }
    }
}
