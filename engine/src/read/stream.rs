//! Answers of scans as streams, so that a query node never holds a whole result: the
//! executors' row streams merged back into manifest order with DataFusion's streaming
//! merge (one batch per executor in memory), then cut to the client's offset and limit.
//!
//! Only scans stream: their rows come out of each executor in manifest order already.
//! Searches rank rows across executors, and their answers are bounded by `k`. A filtered
//! scan of a table with scalar indexes is merged whole: an index may hand lance its rows
//! by fragment id rather than in the manifest's order.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, UnboundedMemoryPool};
use datafusion::physical_expr::{LexOrdering, PhysicalSortExpr};
use datafusion::physical_plan::expressions::Column;
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet};
use datafusion::physical_plan::sorts::streaming_merge::StreamingMergeBuilder;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;

use crate::error::EngineError;
use crate::read::merge::{manifest_keys, visible_columns};
use crate::read::plan::{Merge, MergeOrder, QueryPlan};

/// The merge key column added to the executors' rows while they are merged.
const ORDER_KEY_COLUMN: &str = "_lancefleet_manifest_order";
/// Rows per merged batch.
const MERGED_BATCH_ROWS: usize = 8192;

/// Whether `plan`'s answer can stream: a scan, whose rows are merged in manifest order,
/// and whose filter (if any) no scalar index segment answers (its fragments then read
/// together, see [`QueryPlan::colocate`]).
pub fn streams(plan: &QueryPlan) -> bool {
    plan.merge.order == MergeOrder::Manifest && plan.parts.len() == 1 && !plan.query_index && plan.colocate.is_empty()
}

/// Merges `streams` of `schema`, each in manifest order within itself (one executor's
/// fragments), into one stream in the manifest order of `fragment_positions` (fragment
/// id → position). It holds one batch of each stream at a time and stops reading after
/// `fetch` rows.
pub fn merge_in_manifest_order(
    schema: SchemaRef,
    fragment_positions: Arc<HashMap<u64, u64>>,
    mut streams: Vec<SendableRecordBatchStream>,
    fetch: Option<usize>,
) -> DfResult<SendableRecordBatchStream> {
    if streams.len() <= 1 {
        // One executor's rows are in order already; none means an empty answer.
        return Ok(streams.pop().unwrap_or_else(|| empty(schema)));
    }
    let mut fields = schema.fields().iter().cloned().collect::<Vec<_>>();
    let key_index = fields.len();
    fields.push(Arc::new(Field::new(ORDER_KEY_COLUMN, DataType::UInt64, false)));
    let keyed = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
    let inputs = streams
        .into_iter()
        .map(|stream| {
            let (schema, positions) = (keyed.clone(), fragment_positions.clone());
            let rows = stream.map(move |batch| {
                let batch = batch?;
                let keys = manifest_keys(&batch, &positions).map_err(to_datafusion)?;
                let mut columns = batch.columns().to_vec();
                columns.push(Arc::new(keys) as ArrayRef);
                Ok(RecordBatch::try_new(schema.clone(), columns)?)
            });
            Box::pin(RecordBatchStreamAdapter::new(keyed.clone(), rows)) as SendableRecordBatchStream
        })
        .collect();
    let key = PhysicalSortExpr::new_default(Arc::new(Column::new(ORDER_KEY_COLUMN, key_index)));
    let ordering = LexOrdering::new(vec![key]).ok_or_else(|| DataFusionError::Internal("no merge key".into()))?;
    // Bounded by construction (a batch per stream), so not held against a pool's limit.
    let pool: Arc<dyn MemoryPool> = Arc::new(UnboundedMemoryPool::default());
    let merged = StreamingMergeBuilder::new()
        .with_streams(inputs)
        .with_schema(keyed)
        .with_expressions(&ordering)
        .with_metrics(BaselineMetrics::new(&ExecutionPlanMetricsSet::new(), 0))
        .with_batch_size(MERGED_BATCH_ROWS)
        .with_fetch(fetch)
        .with_reservation(MemoryConsumer::new("lancefleet manifest-order merge").register(&pool))
        .build()?;
    let without_key = (0..key_index).collect::<Vec<_>>();
    let rows = merged.map(move |batch| Ok(batch?.project(&without_key)?));
    Ok(Box::pin(RecordBatchStreamAdapter::new(schema, rows)))
}

/// The schema of the answer `merge` cuts from rows of `schema`.
pub fn cut_schema(schema: &Schema, merge: &Merge) -> DfResult<SchemaRef> {
    Ok(Arc::new(schema.project(&visible_columns(schema, merge))?))
}

/// Cuts `stream` (rows already in `merge.order`) into the answer: skips `merge.offset`
/// rows, ends after `merge.limit` more (dropping the input, which cancels what feeds
/// it), and drops the merge keys.
pub fn cut(merge: &Merge, stream: SendableRecordBatchStream) -> DfResult<SendableRecordBatchStream> {
    let schema = cut_schema(&stream.schema(), merge)?;
    let kept = visible_columns(&stream.schema(), merge);
    let skip = usize::try_from(merge.offset).unwrap_or(usize::MAX);
    let left = merge.limit.map(|limit| usize::try_from(limit).unwrap_or(usize::MAX));
    let rows = futures::stream::unfold(Some((stream, skip, left)), move |state| {
        let kept = kept.clone();
        async move {
            let (mut stream, mut skip, mut left) = state?;
            loop {
                if left == Some(0) {
                    return None;
                }
                let batch = match stream.next().await? {
                    Ok(batch) => batch,
                    Err(error) => return Some((Err(error), None)),
                };
                let skipped = skip.min(batch.num_rows());
                skip -= skipped;
                let mut rows = batch.num_rows() - skipped;
                if let Some(left) = left.as_mut() {
                    rows = rows.min(*left);
                    *left -= rows;
                }
                if rows == 0 {
                    continue;
                }
                let answer = batch.slice(skipped, rows).project(&kept).map_err(DataFusionError::from);
                return Some((answer, Some((stream, skip, left))));
            }
        }
    });
    Ok(Box::pin(RecordBatchStreamAdapter::new(schema, rows)))
}

/// A stream of no rows of `schema`.
pub fn empty(schema: SchemaRef) -> SendableRecordBatchStream {
    Box::pin(RecordBatchStreamAdapter::new(schema, futures::stream::empty()))
}

fn to_datafusion(error: EngineError) -> DataFusionError {
    DataFusionError::External(Box::new(error))
}

#[cfg(test)]
mod tests {
    use arrow_array::{Int64Array, UInt64Array};
    use futures::TryStreamExt;

    use super::*;
    use crate::read::plan::MergeOrder;

    const ROW_ADDRESS: &str = "_rowaddr";

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new(ROW_ADDRESS, DataType::UInt64, true),
        ]))
    }

    /// One executor's stream: a batch per `(ids, fragment)`, offsets from 0.
    fn executor(batches: Vec<(Vec<i64>, u64)>) -> SendableRecordBatchStream {
        let schema = schema();
        let batches = batches
            .into_iter()
            .map(|(ids, fragment)| {
                let addresses = (0..ids.len() as u64).map(|offset| (fragment << 32) | offset).collect::<Vec<_>>();
                let columns: Vec<ArrayRef> =
                    vec![Arc::new(Int64Array::from(ids)), Arc::new(UInt64Array::from(addresses))];
                Ok(RecordBatch::try_new(schema.clone(), columns)?)
            })
            .collect::<Vec<DfResult<_>>>();
        Box::pin(RecordBatchStreamAdapter::new(schema, futures::stream::iter(batches)))
    }

    async fn ids(stream: SendableRecordBatchStream) -> Vec<i64> {
        let batches = stream.try_collect::<Vec<_>>().await.expect("rows");
        batches
            .iter()
            .flat_map(|batch| batch.column(0).as_any().downcast_ref::<Int64Array>().expect("int64").values().to_vec())
            .collect()
    }

    fn scan(offset: u64, limit: Option<u64>) -> Merge {
        Merge {
            order: MergeOrder::Manifest,
            offset,
            limit,
            drop_row_id: false,
            drop_row_address: true,
            sort: Vec::new(),
        }
    }

    #[tokio::test]
    async fn executor_streams_merge_back_into_manifest_order_and_are_cut() {
        // Manifest order: fragment 7, 2, 5, 3; one executor holds 7 and 5, the other 2 and 3.
        let positions = Arc::new(HashMap::from([(7, 0), (2, 1), (5, 2), (3, 3)]));
        let streams = || {
            vec![
                executor(vec![(vec![70, 71], 7), (vec![72], 7), (vec![50, 51], 5)]),
                executor(vec![(vec![20], 2), (vec![30, 31, 32], 3)]),
            ]
        };
        let merged = merge_in_manifest_order(schema(), positions.clone(), streams(), None).expect("merge");
        let answer = cut(&scan(0, None), merged).expect("cut");
        assert_eq!(answer.schema().fields().len(), 1, "the row address is dropped");
        assert_eq!(ids(answer).await, vec![70, 71, 72, 20, 50, 51, 30, 31, 32]);

        let merged = merge_in_manifest_order(schema(), positions, streams(), Some(6)).expect("merge");
        assert_eq!(ids(cut(&scan(2, Some(4)), merged).expect("cut")).await, vec![72, 20, 50, 51]);
    }

    #[tokio::test]
    async fn a_single_stream_is_cut_as_it_comes_and_an_offset_past_the_end_gives_no_rows() {
        let positions = Arc::new(HashMap::from([(1, 0)]));
        let one = || vec![executor(vec![(vec![1, 2, 3], 1), (vec![4, 5], 1)])];
        let merged = merge_in_manifest_order(schema(), positions.clone(), one(), None).expect("merge");
        assert_eq!(ids(cut(&scan(1, Some(3)), merged).expect("cut")).await, vec![2, 3, 4]);
        let merged = merge_in_manifest_order(schema(), positions.clone(), one(), None).expect("merge");
        assert!(ids(cut(&scan(9, None), merged).expect("cut")).await.is_empty());
        let none = merge_in_manifest_order(schema(), positions, Vec::new(), None).expect("merge");
        assert_eq!(none.schema(), schema());
        assert!(ids(none).await.is_empty());
    }

    #[tokio::test]
    async fn rows_of_a_fragment_outside_the_plan_fail_the_stream() {
        let positions = Arc::new(HashMap::from([(1, 0)]));
        let streams = vec![executor(vec![(vec![1], 1)]), executor(vec![(vec![9], 9)])];
        let merged = merge_in_manifest_order(schema(), positions, streams, None).expect("merge");
        assert!(merged.try_collect::<Vec<_>>().await.is_err());
    }
}
