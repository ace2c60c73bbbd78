//! Compiles a client's [`TableQuery`] into the fragment queries plan executors run, and the
//! merge that turns their partial results into the answer.
//!
//! A query splits by fragment when each executor's partial result, merged, equals what one
//! process would return (`shared/DESIGN.md`, decision 2):
//! - vector search with a prefilter: every executor returns its exact top `offset + limit`
//!   by (`_distance`, `_rowid`); `refine(≥ 1)` makes distances exact under an index, so
//!   the merged top-k of a flat search equals a single-process search row for row;
//! - full-text search with a prefilter: every executor returns its top `offset + limit` by
//!   (`_score` desc, `_rowid`). Lance scores indexed rows with BM25 statistics of the whole
//!   index, not of the executor's fragments, so scores compare across executors (for the
//!   rows the index does not cover yet, see below);
//! - filtered scans: every executor returns its first `offset + limit` rows in manifest
//!   order with `_rowaddr`; the merge restores manifest order.
//!
//! A post-filtered search (`prefilter: false` with a filter) filters the *global* top-k,
//! which no split reproduces; it runs on one executor over the whole version.
//!
//! Lance scores the rows no full-text index covers yet with statistics of the index plus
//! the uncovered rows it scans. So that those statistics are the whole tail's, as in one
//! process, a full-text search keeps every uncovered fragment on one executor.

use arrow_schema::Schema;
use lance::Dataset;
use lancefleet_proto::v1::{
    DistanceType, FragmentQuery, NearestQuery, OutputColumn, Projection as WireProjection, SortKey, VectorKind,
};

use crate::catalog::facts::{full_text_groups, scalar_segment_groups, vector_segment_groups};
use crate::error::{EngineError, Result};
use crate::read::query::{OrderBy, Projection, TableQuery, quoted_path};
use crate::read::vector_column::{VectorColumn, resolve_vector_column};
use crate::read::wire::{distance_type, full_text_to_wire};

/// Name of the column that says which query vector produced a row of a batch query.
pub const QUERY_INDEX_COLUMN: &str = "query_index";
/// LanceDB's default lower bound of IVF partitions to probe.
const DEFAULT_MINIMUM_NPROBES: u32 = 20;
/// Above this many requested neighbours, `k` is clamped to the table's row count.
const LARGE_TOP_K: u64 = 10_000;

/// How partial results are put in order before the offset and limit are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeOrder {
    /// Ascending `_distance`, then `_rowid` (vector search).
    Distance,
    /// Descending `_score`, then ascending `_rowid` (full-text search).
    Score,
    /// The table's manifest order, from `_rowaddr` (scans).
    Manifest,
    /// By [`Merge::sort`], then manifest order (scans with `order_by`).
    Sorted,
    /// As the single executor returned them (queries that do not split).
    AsReturned,
}

/// How the partial results of one fragment query become the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merge {
    /// Order of the merged rows.
    pub order: MergeOrder,
    /// Rows to skip after ordering.
    pub offset: u64,
    /// Rows to keep after the offset; `None` keeps all.
    pub limit: Option<u64>,
    /// Drop `_rowid` (added only as a merge key).
    pub drop_row_id: bool,
    /// Drop `_rowaddr` (added only as a merge key).
    pub drop_row_address: bool,
    /// The sort of [`MergeOrder::Sorted`]: the `i`-th key orders by the hidden output
    /// column [`sort_column`]`(i)`, dropped after the merge.
    pub sort: Vec<OrderBy>,
}

/// The hidden output column holding the `index`-th sort key of a sorted scan: the value
/// the merge compares, whatever the client's projection keeps or renames.
pub fn sort_column(index: usize) -> String {
    format!("_lancefleet_sort_{index}")
}

/// A compiled query: what executors run and how their answers combine.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryPlan {
    /// One fragment query per query vector (one for scans and multivector searches).
    pub parts: Vec<FragmentQuery>,
    /// Whether executors may each run a part over a subset of fragments; when false one
    /// executor runs it over the whole version.
    pub splits: bool,
    /// How every part's partial results are merged.
    pub merge: Merge,
    /// Prepend the Int32 `query_index` column (several query vectors).
    pub query_index: bool,
    /// Groups of fragments one executor must read together: those of one full-text index
    /// segment and those no full-text index covers (a full-text search), those of one
    /// vector index segment (a vector search).
    pub colocate: Vec<Vec<u64>>,
    /// A full-text search over an index kept as segments: executors first report their
    /// segments' BM25 statistics, then search only those segments, scored with the sums
    /// (see [`crate::read::corpus`]).
    pub divide_full_text: bool,
}

/// Compiles `query` against the schema and size of `dataset` (the pinned version).
pub async fn plan_query(dataset: &Dataset, query: &TableQuery) -> Result<QueryPlan> {
    query.validate()?;
    let offset = query.offset.unwrap_or(0);
    let limit = query.limit();
    let projection = query.columns.as_ref().map(wire_projection);
    // Without a filter, pre- and post-filtering are the same search.
    let splits = query.prefilter() || query.filter.is_none();
    if let Some(full_text) = query.full_text() {
        let part = FragmentQuery {
            full_text: Some(full_text_to_wire(full_text)),
            fast_search: query.fast_search,
            filter: query.filter.clone(),
            prefilter: splits,
            projection,
            ..Default::default()
        };
        let plan = split_or_whole(vec![part], splits, MergeOrder::Score, query, offset, limit);
        let groups = full_text_groups(dataset).await?;
        let divide_full_text = splits && groups.segmented;
        return Ok(QueryPlan { colocate: groups.colocate, divide_full_text, ..plan });
    }
    let vectors = &query.vector.0;
    if vectors.is_empty() {
        let sort = query.order_by.clone().unwrap_or_default();
        let projection = match sort.is_empty() {
            true => projection,
            false => Some(sorted_projection(dataset, projection, &sort)),
        };
        let scan = FragmentQuery {
            filter: query.filter.clone(),
            prefilter: true,
            projection,
            limit: limit.map(|limit| limit.saturating_add(offset)),
            with_row_id: query.with_row_id,
            with_row_address: true,
            order_by: sort
                .iter()
                .map(|key| SortKey {
                    column: key.column_name.clone(),
                    descending: !key.ascending,
                    nulls_first: key.nulls_first,
                })
                .collect(),
            ..Default::default()
        };
        let order = if sort.is_empty() { MergeOrder::Manifest } else { MergeOrder::Sorted };
        let merge = Merge { order, offset, limit, drop_row_id: false, drop_row_address: true, sort };
        // A filter may be answered by scalar index segments: each read by one executor.
        let colocate = if query.filter.is_some() { scalar_segment_groups(dataset).await? } else { Vec::new() };
        return Ok(QueryPlan {
            parts: vec![scan],
            splits: true,
            merge,
            query_index: false,
            colocate,
            divide_full_text: false,
        });
    }

    let schema = Schema::from(dataset.schema());
    let column = searched_column(&schema, query)?.ok_or_else(|| EngineError::internal("a search without vectors"))?;
    let query_index = vectors.len() > 1 && column.kind != VectorKind::Multi;
    if query_index && schema.field_with_name(QUERY_INDEX_COLUMN).is_ok() {
        return Err(EngineError::invalid_input(format!(
            "batch vector queries cannot be used on tables with a column named '{QUERY_INDEX_COLUMN}'"
        )));
    }
    let searches = if column.kind == VectorKind::Multi {
        vec![vectors.iter().flatten().copied().collect::<Vec<_>>()]
    } else {
        vectors.clone()
    };
    let top_k = nearest_k(dataset, limit, offset).await?;
    let distance = query.distance_type.as_deref().map(distance_type).transpose()?.unwrap_or_default();
    let parts = searches
        .into_iter()
        .map(|values| FragmentQuery {
            nearest: Some(nearest_query(query, &column, values, top_k, splits, distance)),
            filter: query.filter.clone(),
            prefilter: splits,
            projection: projection.clone(),
            ..Default::default()
        })
        .collect();
    let plan = split_or_whole(parts, splits, MergeOrder::Distance, query, offset, limit);
    // A search through the index divides by index segment; a flat one by fragment.
    let colocate =
        if query.bypass_vector_index { Vec::new() } else { vector_segment_groups(dataset, &column.name).await? };
    Ok(QueryPlan { query_index, colocate, ..plan })
}

/// The vector column a vector search of `query` searches in a table of `schema`, checked
/// against the query vectors (dimension, bytes for binary columns) and the distance type;
/// `None` for a query that is no vector search. What can be checked without reading the
/// table beyond its schema.
pub fn searched_column(schema: &Schema, query: &TableQuery) -> Result<Option<VectorColumn>> {
    query.validate()?;
    let vectors = &query.vector.0;
    let Some(first) = vectors.first() else { return Ok(None) };
    let column = resolve_vector_column(schema, query.vector_column.as_deref(), first.len())?;
    for vector in vectors {
        column.check_dimension(vector.len())?;
        if column.kind == VectorKind::Binary {
            check_bytes(vector)?;
        }
    }
    if let Some(name) = &query.distance_type {
        distance_type(name)?;
    }
    Ok(Some(column))
}

/// The plan of search `parts` (one per query vector): when they `split`, every executor
/// returns its own top `offset + limit` with the merge key `_rowid`, merged in `order`;
/// otherwise one executor runs the client's search as it is.
fn split_or_whole(
    parts: Vec<FragmentQuery>,
    splits: bool,
    order: MergeOrder,
    query: &TableQuery,
    offset: u64,
    limit: Option<u64>,
) -> QueryPlan {
    let (part_limit, part_offset, with_row_id, merge) = if splits {
        let merge =
            Merge { order, offset, limit, drop_row_id: !query.with_row_id, drop_row_address: false, sort: Vec::new() };
        (limit.map(|limit| limit.saturating_add(offset)), 0, true, merge)
    } else {
        let merge = Merge {
            order: MergeOrder::AsReturned,
            offset: 0,
            limit: None,
            drop_row_id: false,
            drop_row_address: false,
            sort: Vec::new(),
        };
        (limit, offset, query.with_row_id, merge)
    };
    let parts = parts
        .into_iter()
        .map(|part| FragmentQuery { limit: part_limit, offset: part_offset, with_row_id, ..part })
        .collect();
    QueryPlan { parts, splits, merge, query_index: false, colocate: Vec::new(), divide_full_text: false }
}

fn nearest_query(
    query: &TableQuery,
    column: &VectorColumn,
    values: Vec<f32>,
    top_k: u64,
    splits: bool,
    distance: DistanceType,
) -> NearestQuery {
    let (nprobes, minimum_nprobes) = match query.nprobes {
        Some(nprobes) => (Some(to_u32(nprobes)), None),
        None => (None, Some(query.minimum_nprobes.map_or(DEFAULT_MINIMUM_NPROBES, to_u32))),
    };
    // Split searches always re-rank: exact distances are what makes the merge exact.
    let refine_factor = if splits { Some(query.refine_factor.unwrap_or(1).max(1)) } else { query.refine_factor };
    NearestQuery {
        column: column.name.clone(),
        kind: column.kind as i32,
        dimension: to_u32(column.dimension),
        values,
        k: top_k,
        distance_type: distance as i32,
        nprobes,
        minimum_nprobes,
        maximum_nprobes: query.maximum_nprobes.filter(|maximum| *maximum > 0).map(to_u32),
        ef: query.ef.map(to_u32),
        refine_factor,
        lower_bound: query.lower_bound,
        upper_bound: query.upper_bound,
        use_index: !query.bypass_vector_index,
        fast_search: query.fast_search,
    }
}

/// The projection of a sorted scan: the client's (all columns when it gave none), then
/// one hidden column per sort key holding the sorted value ([`sort_column`]).
fn sorted_projection(dataset: &Dataset, projection: Option<WireProjection>, sort: &[OrderBy]) -> WireProjection {
    let mut projection = projection.unwrap_or_else(|| WireProjection {
        columns: dataset
            .schema()
            .fields
            .iter()
            .map(|field| OutputColumn { name: field.name.clone(), expression: None })
            .collect(),
    });
    for (index, key) in sort.iter().enumerate() {
        let expression = quoted_path(&key.column_name);
        projection.columns.push(OutputColumn { name: sort_column(index), expression: Some(expression) });
    }
    projection
}

fn wire_projection(projection: &Projection) -> WireProjection {
    let columns = match projection {
        Projection::Columns(names) => {
            names.iter().map(|name| OutputColumn { name: name.clone(), expression: None }).collect()
        }
        Projection::Expressions(pairs) => pairs
            .iter()
            .map(|(name, expression)| OutputColumn { name: name.clone(), expression: Some(expression.clone()) })
            .collect(),
    };
    WireProjection { columns }
}

/// Neighbours to ask for: `limit + offset`, clamped to the table size when huge
/// (plain-scan clients send `k = i64::MAX`).
async fn nearest_k(dataset: &Dataset, limit: Option<u64>, offset: u64) -> Result<u64> {
    let wanted = limit.map(|limit| limit.saturating_add(offset));
    Ok(match wanted {
        Some(wanted) if wanted <= LARGE_TOP_K => wanted,
        _ => {
            let rows = dataset.count_rows(None).await? as u64;
            wanted.map_or(rows, |wanted| wanted.min(rows)).max(1)
        }
    })
}

fn to_u32(value: usize) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

/// A binary vector arrives as numbers; each must be a byte value.
pub fn check_bytes(values: &[f32]) -> Result<Vec<u8>> {
    values
        .iter()
        .map(|value| {
            if value.fract() == 0.0 && (0.0..=255.0).contains(value) {
                Ok(*value as u8)
            } else {
                Err(EngineError::invalid_input(format!(
                    "binary query vectors hold bytes (integers 0..=255), got {value}"
                )))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_queries_must_be_bytes() {
        assert_eq!(check_bytes(&[0.0, 255.0, 7.0]).expect("bytes"), vec![0, 255, 7]);
        assert!(check_bytes(&[256.0]).is_err());
        assert!(check_bytes(&[1.5]).is_err());
        assert!(check_bytes(&[-1.0]).is_err());
    }

    #[test]
    fn split_searches_always_refine_and_post_filtered_ones_keep_the_clients_choice() {
        let column = VectorColumn { name: "vector".into(), dimension: 2, kind: VectorKind::Float };
        let query = TableQuery { refine_factor: None, ..Default::default() };
        assert_eq!(
            nearest_query(&query, &column, vec![0.0, 1.0], 10, true, DistanceType::Unspecified).refine_factor,
            Some(1)
        );
        assert_eq!(
            nearest_query(&query, &column, vec![0.0, 1.0], 10, false, DistanceType::Unspecified).refine_factor,
            None
        );
        let query = TableQuery { refine_factor: Some(5), nprobes: Some(7), ..Default::default() };
        let nearest = nearest_query(&query, &column, vec![0.0, 1.0], 10, true, DistanceType::Unspecified);
        assert_eq!((nearest.refine_factor, nearest.nprobes, nearest.minimum_nprobes), (Some(5), Some(7), None));
    }
}
