//! Merges the partial results of one fragment query into the answer (see [`crate::plan`]).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::compute::{SortColumn, SortOptions, concat_batches, lexsort_to_indices, take_record_batch};
use arrow_array::{Array, ArrayRef, Int32Array, RecordBatch, UInt32Array, UInt64Array};
use arrow_schema::{DataType, Field, Schema};

use crate::error::{EngineError, Result};
use crate::read::output::QueryOutput;
use crate::read::plan::{Merge, MergeOrder, QUERY_INDEX_COLUMN, sort_column};
use crate::read::query::OrderBy;

/// Lance's distance column.
pub const DISTANCE_COLUMN: &str = "_distance";
/// Lance's full-text relevance column.
pub const SCORE_COLUMN: &str = "_score";
/// Lance's row id column.
const ROW_ID_COLUMN: &str = "_rowid";
/// Lance's row address column: fragment id in the high 32 bits, row offset in the low.
const ROW_ADDRESS_COLUMN: &str = "_rowaddr";

/// Merges `partials` (each already in `merge.order` within itself) into one ordered,
/// cut and cleaned result. `fragment_positions` maps fragment ids to their position in the
/// manifest, for [`MergeOrder::Manifest`].
pub fn merge(merge: &Merge, fragment_positions: &HashMap<u64, u64>, partials: Vec<QueryOutput>) -> Result<QueryOutput> {
    let Some(schema) = partials.first().map(|partial| partial.schema.clone()) else {
        return Err(EngineError::internal("no partial results to merge"));
    };
    let batches = partials.iter().flat_map(|partial| partial.batches.iter());
    let all = concat_batches(&schema, batches)
        .map_err(|error| EngineError::internal(format!("executors returned different schemas: {error}")))?;
    let order = match merge.order {
        MergeOrder::Distance => Some(ranked_order(&all, DISTANCE_COLUMN, false)?),
        MergeOrder::Score => Some(ranked_order(&all, SCORE_COLUMN, true)?),
        MergeOrder::Manifest => Some(manifest_order(&all, fragment_positions)?),
        MergeOrder::Sorted => Some(sorted_order(&all, &merge.sort, fragment_positions)?),
        MergeOrder::AsReturned => None,
    };
    let start = usize::try_from(merge.offset).unwrap_or(usize::MAX).min(all.num_rows());
    let end = merge.limit.map_or(all.num_rows(), |limit| {
        start.saturating_add(usize::try_from(limit).unwrap_or(usize::MAX)).min(all.num_rows())
    });
    let kept = match order {
        Some(order) => take_record_batch(&all, &order.slice(start, end - start))?,
        None => all.slice(start, end - start),
    };
    let kept = drop_columns(kept, merge)?;
    Ok(QueryOutput { schema: kept.schema(), batches: vec![kept] })
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    batch.column_by_name(name).ok_or_else(|| EngineError::internal(format!("partial results lack the {name} column")))
}

/// Rows ranked by `rank` (ascending distance, or descending score), ties by `_rowid`.
fn ranked_order(batch: &RecordBatch, rank: &str, descending: bool) -> Result<UInt32Array> {
    let ascending = SortOptions { descending: false, nulls_first: false };
    let keys = [
        SortColumn {
            values: column(batch, rank)?.clone(),
            options: Some(SortOptions { descending, nulls_first: false }),
        },
        SortColumn { values: column(batch, ROW_ID_COLUMN)?.clone(), options: Some(ascending) },
    ];
    Ok(lexsort_to_indices(&keys, None)?)
}

/// Rows by the sort keys (their hidden columns), ties in manifest order.
fn sorted_order(batch: &RecordBatch, sort: &[OrderBy], fragment_positions: &HashMap<u64, u64>) -> Result<UInt32Array> {
    let mut keys = sort
        .iter()
        .enumerate()
        .map(|(index, key)| {
            let options = SortOptions { descending: !key.ascending, nulls_first: key.nulls_first };
            Ok(SortColumn { values: column(batch, &sort_column(index))?.clone(), options: Some(options) })
        })
        .collect::<Result<Vec<_>>>()?;
    keys.push(SortColumn { values: Arc::new(manifest_keys(batch, fragment_positions)?), options: None });
    Ok(lexsort_to_indices(&keys, None)?)
}

fn manifest_order(batch: &RecordBatch, fragment_positions: &HashMap<u64, u64>) -> Result<UInt32Array> {
    let keys: ArrayRef = Arc::new(manifest_keys(batch, fragment_positions)?);
    Ok(lexsort_to_indices(&[SortColumn { values: keys, options: None }], None)?)
}

/// Each row's place in the manifest order of the table: the position of its fragment in
/// the high 32 bits, its offset in the fragment in the low 32 (from `_rowaddr`).
pub fn manifest_keys(batch: &RecordBatch, fragment_positions: &HashMap<u64, u64>) -> Result<UInt64Array> {
    let addresses = column(batch, ROW_ADDRESS_COLUMN)?
        .as_any()
        .downcast_ref::<UInt64Array>()
        .ok_or_else(|| EngineError::internal("_rowaddr is not UInt64"))?;
    addresses
        .values()
        .iter()
        .map(|address| {
            let fragment = address >> 32;
            let position = fragment_positions.get(&fragment).copied().ok_or_else(|| {
                EngineError::internal(format!("an executor returned rows of fragment {fragment}, not in the plan"))
            })?;
            Ok((position << 32) | (address & 0xffff_ffff))
        })
        .collect()
}

/// The indexes of the columns of `schema` the answer keeps: all but the merge keys
/// `merge` drops.
pub fn visible_columns(schema: &Schema, merge: &Merge) -> Vec<usize> {
    let sort_columns = (0..merge.sort.len()).map(sort_column).collect::<Vec<_>>();
    let hidden = |name: &str| {
        (merge.drop_row_id && name == ROW_ID_COLUMN)
            || (merge.drop_row_address && name == ROW_ADDRESS_COLUMN)
            || sort_columns.iter().any(|column| column == name)
    };
    (0..schema.fields().len()).filter(|index| !hidden(schema.field(*index).name())).collect()
}

fn drop_columns(batch: RecordBatch, merge: &Merge) -> Result<RecordBatch> {
    Ok(batch.project(&visible_columns(&batch.schema(), merge))?)
}

/// Prepends the Int32 `query_index` column (0-based) to each query's rows, in query order.
pub fn prepend_query_index(outputs: Vec<QueryOutput>) -> Result<QueryOutput> {
    let Some(first) = outputs.first() else {
        return Err(EngineError::invalid_input("no query vectors"));
    };
    let mut fields = vec![Arc::new(Field::new(QUERY_INDEX_COLUMN, DataType::Int32, false))];
    fields.extend(first.schema.fields().iter().cloned());
    let schema = Arc::new(Schema::new_with_metadata(fields, first.schema.metadata().clone()));
    let mut batches = Vec::new();
    for (index, output) in outputs.into_iter().enumerate() {
        let index = i32::try_from(index).map_err(|_| EngineError::invalid_input("too many query vectors"))?;
        for batch in output.batches {
            let mut columns: Vec<ArrayRef> = vec![Arc::new(Int32Array::from(vec![index; batch.num_rows()]))];
            columns.extend(batch.columns().iter().cloned());
            batches.push(RecordBatch::try_new(schema.clone(), columns)?);
        }
    }
    Ok(QueryOutput { schema, batches })
}

#[cfg(test)]
mod tests {
    use arrow_array::{Float32Array, Int64Array};

    use super::*;

    fn partial(ids: &[i64], distances: &[Option<f32>], row_ids: &[u64]) -> QueryOutput {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new(DISTANCE_COLUMN, DataType::Float32, true),
            Field::new(ROW_ID_COLUMN, DataType::UInt64, true),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(ids.to_vec())),
            Arc::new(Float32Array::from(distances.to_vec())),
            Arc::new(UInt64Array::from(row_ids.to_vec())),
        ];
        QueryOutput { schema: schema.clone(), batches: vec![RecordBatch::try_new(schema, columns).expect("batch")] }
    }

    fn ids(output: &QueryOutput) -> Vec<i64> {
        output
            .batches
            .iter()
            .flat_map(|batch| batch.column(0).as_any().downcast_ref::<Int64Array>().expect("int64").values().to_vec())
            .collect()
    }

    #[test]
    fn distance_merge_orders_by_distance_then_row_id_and_cuts_offset_and_limit() {
        let merge = Merge {
            order: MergeOrder::Distance,
            offset: 1,
            limit: Some(3),
            drop_row_id: true,
            drop_row_address: false,
            sort: Vec::new(),
        };
        let left = partial(&[1, 2, 3], &[Some(0.1), Some(0.5), None], &[10, 11, 12]);
        let right = partial(&[4, 5], &[Some(0.3), Some(0.5)], &[3, 4]);
        let merged = super::merge(&merge, &HashMap::new(), vec![left, right]).expect("merged");
        // Order: 1 (0.1), 4 (0.3), 5 (0.5, rowid 4), 2 (0.5, rowid 11), 3 (null last).
        assert_eq!(ids(&merged), vec![4, 5, 2]);
        assert!(merged.schema.field_with_name(ROW_ID_COLUMN).is_err(), "merge key dropped");
    }

    #[test]
    fn score_merge_orders_by_descending_score_then_row_id() {
        let rename = |output: QueryOutput| {
            let fields = output.schema.fields().iter().map(|field| {
                let name = if field.name() == DISTANCE_COLUMN { SCORE_COLUMN } else { field.name().as_str() };
                Field::new(name, field.data_type().clone(), field.is_nullable())
            });
            let schema = Arc::new(Schema::new(fields.collect::<Vec<_>>()));
            let batches = output
                .batches
                .into_iter()
                .map(|batch| RecordBatch::try_new(schema.clone(), batch.columns().to_vec()).expect("batch"))
                .collect();
            QueryOutput { schema, batches }
        };
        let left = rename(partial(&[1, 2], &[Some(3.0), Some(1.0)], &[10, 11]));
        let right = rename(partial(&[3, 4], &[Some(2.0), Some(3.0)], &[2, 3]));
        let merge = Merge {
            order: MergeOrder::Score,
            offset: 0,
            limit: Some(3),
            drop_row_id: false,
            drop_row_address: false,
            sort: Vec::new(),
        };
        let merged = super::merge(&merge, &HashMap::new(), vec![left, right]).expect("merged");
        // 4 (3.0, rowid 3) before 1 (3.0, rowid 10), then 3 (2.0).
        assert_eq!(ids(&merged), vec![4, 1, 3]);
    }

    #[test]
    fn manifest_merge_restores_fragment_order() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new(ROW_ADDRESS_COLUMN, DataType::UInt64, true),
        ]));
        let part = |ids: Vec<i64>, addresses: Vec<u64>| {
            let columns: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(ids)), Arc::new(UInt64Array::from(addresses))];
            QueryOutput {
                schema: schema.clone(),
                batches: vec![RecordBatch::try_new(schema.clone(), columns).expect("batch")],
            }
        };
        // Manifest order: fragment 7, then 2, then 5.
        let positions = HashMap::from([(7, 0), (2, 1), (5, 2)]);
        let first = part(vec![20, 21, 50], vec![2 << 32, (2 << 32) | 1, 5 << 32]);
        let second = part(vec![70, 71], vec![7 << 32, (7 << 32) | 3]);
        let merge = Merge {
            order: MergeOrder::Manifest,
            offset: 0,
            limit: None,
            drop_row_id: false,
            drop_row_address: true,
            sort: Vec::new(),
        };
        let merged = super::merge(&merge, &positions, vec![first, second]).expect("merged");
        assert_eq!(ids(&merged), vec![70, 71, 20, 21, 50]);
        assert_eq!(merged.schema.fields().len(), 1);

        let unknown = part(vec![1], vec![9 << 32]);
        assert!(super::merge(&merge, &positions, vec![unknown]).is_err());
    }

    #[test]
    fn sorted_merge_orders_by_the_keys_then_manifest_order_and_drops_them() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new(ROW_ADDRESS_COLUMN, DataType::UInt64, true),
            Field::new(sort_column(0), DataType::Int64, true),
            Field::new(sort_column(1), DataType::Int64, true),
        ]));
        let part = |ids: Vec<i64>, addresses: Vec<u64>, first: Vec<Option<i64>>, second: Vec<Option<i64>>| {
            let columns: Vec<ArrayRef> = vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(UInt64Array::from(addresses)),
                Arc::new(Int64Array::from(first)),
                Arc::new(Int64Array::from(second)),
            ];
            QueryOutput {
                schema: schema.clone(),
                batches: vec![RecordBatch::try_new(schema.clone(), columns).expect("batch")],
            }
        };
        let positions = HashMap::from([(0, 0), (1, 1)]);
        let left = part(vec![1, 2, 3], vec![0, 1, 2], vec![Some(1), None, Some(2)], vec![Some(5), Some(0), Some(9)]);
        let right = part(vec![4, 5], vec![1 << 32, (1 << 32) | 1], vec![Some(1), Some(2)], vec![Some(7), Some(9)]);
        // First key descending with nulls first; second ascending; ties (3, 5) in manifest order.
        let sort = vec![
            OrderBy { column_name: "a".into(), ascending: false, nulls_first: true },
            OrderBy { column_name: "b".into(), ascending: true, nulls_first: false },
        ];
        let merge = Merge {
            order: MergeOrder::Sorted,
            offset: 1,
            limit: Some(3),
            drop_row_id: false,
            drop_row_address: true,
            sort,
        };
        let merged = super::merge(&merge, &positions, vec![left, right]).expect("merged");
        // Full order: 2 (null), 3 (2, 9), 5 (2, 9), 1 (1, 5), 4 (1, 7); offset 1, limit 3.
        assert_eq!(ids(&merged), vec![3, 5, 1]);
        assert_eq!(merged.schema.fields().len(), 1, "merge keys and sort columns dropped");
    }

    #[test]
    fn offset_past_the_end_returns_no_rows_with_the_schema() {
        let merge = Merge {
            order: MergeOrder::Distance,
            offset: 10,
            limit: Some(5),
            drop_row_id: false,
            drop_row_address: false,
            sort: Vec::new(),
        };
        let merged = super::merge(&merge, &HashMap::new(), vec![partial(&[1], &[Some(0.0)], &[1])]).expect("merged");
        assert_eq!(merged.num_rows(), 0);
        assert_eq!(merged.schema.fields().len(), 3);
    }

    #[test]
    fn query_index_is_prepended_in_query_order() {
        let merged = prepend_query_index(vec![partial(&[7, 8], &[None, None], &[1, 2]), partial(&[9], &[None], &[3])])
            .expect("merged");
        assert_eq!(merged.schema.field(0).name(), QUERY_INDEX_COLUMN);
        let indexes = merged
            .batches
            .iter()
            .flat_map(|batch| batch.column(0).as_any().downcast_ref::<Int32Array>().expect("int32").values().to_vec());
        assert_eq!(indexes.collect::<Vec<_>>(), vec![0, 0, 1]);
    }
}
