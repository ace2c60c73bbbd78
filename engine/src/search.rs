//! Runs a [`TableQuery`] on one dataset version with lance's scanner.
//!
//! The mapping of query fields onto the scanner follows LanceDB's native query path, so
//! results equal what LanceDB OSS returns for the same table and query.

use std::sync::Arc;

use arrow_array::{ArrayRef, FixedSizeListArray, Float32Array, Int32Array, RecordBatch, UInt8Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use futures::TryStreamExt;
use futures::future::try_join_all;
use lance::Dataset;
use lance::dataset::scanner::Scanner;
use lance::io::RecordBatchStream;
use lance_linalg::distance::DistanceType;

use crate::error::{EngineError, Result};
use crate::query::{Projection, TableQuery};

/// Name of the column that says which query vector produced a row of a batch query.
pub const QUERY_INDEX_COLUMN: &str = "query_index";
/// LanceDB's default lower bound of IVF partitions to probe.
const DEFAULT_MINIMUM_NPROBES: usize = 20;
/// Above this many requested neighbours, `k` is clamped to the table's row count.
const LARGE_TOP_K: u64 = 10_000;

/// The rows a query produced, with their schema (known even when there are no rows).
#[derive(Debug, Clone)]
pub struct QueryOutput {
    /// Schema of every batch.
    pub schema: SchemaRef,
    /// The result rows in order.
    pub batches: Vec<RecordBatch>,
}

impl QueryOutput {
    /// Total number of rows.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// Runs `query` against `dataset` (already checked out at the version to read).
pub async fn run_query(dataset: &Dataset, query: &TableQuery) -> Result<QueryOutput> {
    query.validate()?;
    let vectors = &query.vector.0;
    if vectors.len() <= 1 {
        return run_single(dataset, query, vectors.first().map(Vec::as_slice)).await;
    }
    let schema = Schema::from(dataset.schema());
    let column = resolve_vector_column(&schema, query.vector_column.as_deref(), vectors[0].len())?;
    if column.kind == VectorKind::Multi {
        return run_scanner(build_scanner(dataset, query, Some(QueryVector::Multi(vectors)), &column).await?).await;
    }
    if schema.field_with_name(QUERY_INDEX_COLUMN).is_ok() {
        return Err(EngineError::invalid_input(format!(
            "batch vector queries cannot be used on tables with a column named '{QUERY_INDEX_COLUMN}'"
        )));
    }
    let per_vector = vectors.iter().map(|vector| run_single(dataset, query, Some(vector.as_slice())));
    let outputs = try_join_all(per_vector).await?;
    with_query_index(outputs)
}

async fn run_single(dataset: &Dataset, query: &TableQuery, vector: Option<&[f32]>) -> Result<QueryOutput> {
    let Some(vector) = vector else {
        return run_scanner(build_scanner(dataset, query, None, &VectorColumn::none()).await?).await;
    };
    let schema = Schema::from(dataset.schema());
    let column = resolve_vector_column(&schema, query.vector_column.as_deref(), vector.len())?;
    run_scanner(build_scanner(dataset, query, Some(QueryVector::Single(vector)), &column).await?).await
}

async fn run_scanner(scanner: Scanner) -> Result<QueryOutput> {
    let stream = scanner.try_into_stream().await?;
    let schema = stream.schema();
    let batches = stream.try_collect::<Vec<_>>().await?;
    Ok(QueryOutput { schema, batches })
}

/// The query vector(s) of one scanner.
enum QueryVector<'a> {
    Single(&'a [f32]),
    /// Several vectors forming one late-interaction query on a multivector column.
    Multi(&'a [Vec<f32>]),
}

async fn build_scanner(
    dataset: &Dataset,
    query: &TableQuery,
    vector: Option<QueryVector<'_>>,
    column: &VectorColumn,
) -> Result<Scanner> {
    let mut scanner = dataset.scan();
    let limit = query.limit();
    let offset = query.offset.unwrap_or(0);
    if let Some(vector) = vector {
        let key = query_array(vector, column)?;
        let top_k = nearest_k(dataset, limit, offset).await?;
        scanner.nearest(&column.name, key.as_ref(), top_k)?;
        configure_probes(&mut scanner, query);
        if let Some(ef) = query.ef {
            scanner.ef(ef);
        }
        if let Some(factor) = query.refine_factor {
            scanner.refine(factor);
        }
        if let Some(name) = &query.distance_type {
            let distance = DistanceType::try_from(name.as_str()).map_err(|_| {
                EngineError::invalid_input(format!("unknown distance type '{name}'; use l2, cosine, dot or hamming"))
            })?;
            scanner.distance_metric(distance);
        }
        scanner.distance_range(query.lower_bound, query.upper_bound);
        scanner.use_index(!query.bypass_vector_index);
        if query.fast_search {
            scanner.fast_search();
        }
    }
    scanner.limit(limit.map(to_i64), (offset > 0).then_some(to_i64(offset)))?;
    scanner.prefilter(query.prefilter);
    match &query.columns {
        Some(Projection::Columns(names)) => {
            scanner.project(names)?;
        }
        Some(Projection::Expressions(pairs)) => {
            scanner.project_with_transform(pairs)?;
        }
        None => {}
    }
    if query.with_row_id {
        scanner.with_row_id();
    }
    if let Some(filter) = &query.filter {
        scanner.filter(filter)?;
    }
    Ok(scanner)
}

fn configure_probes(scanner: &mut Scanner, query: &TableQuery) {
    if let Some(nprobes) = query.nprobes {
        scanner.nprobes(nprobes);
    } else {
        scanner.minimum_nprobes(query.minimum_nprobes.unwrap_or(DEFAULT_MINIMUM_NPROBES));
    }
    match query.maximum_nprobes {
        Some(0) | None => {}
        Some(maximum) => {
            scanner.maximum_nprobes(maximum);
        }
    }
}

/// Neighbours to ask lance for: `limit + offset`, clamped to the table size when huge
/// (plain-scan clients send `k = i64::MAX`).
async fn nearest_k(dataset: &Dataset, limit: Option<u64>, offset: u64) -> Result<usize> {
    let wanted = limit.map(|limit| limit.saturating_add(offset));
    let top_k = match wanted {
        Some(wanted) if wanted <= LARGE_TOP_K => wanted,
        _ => {
            let rows = dataset.count_rows(None).await? as u64;
            wanted.map_or(rows, |wanted| wanted.min(rows)).max(1)
        }
    };
    Ok(usize::try_from(top_k).unwrap_or(usize::MAX))
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// What kind of vectors a column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VectorKind {
    /// `FixedSizeList<float>`.
    Float,
    /// `FixedSizeList<uint8>`: packed bits, searched with `hamming`.
    Binary,
    /// `List<FixedSizeList<float>>`: several vectors per row (late interaction).
    Multi,
}

/// The vector column a query searches.
#[derive(Debug, Clone)]
struct VectorColumn {
    name: String,
    dimension: usize,
    kind: VectorKind,
}

impl VectorColumn {
    fn none() -> Self {
        Self { name: String::new(), dimension: 0, kind: VectorKind::Float }
    }
}

fn vector_column_of(field: &Field) -> Option<VectorColumn> {
    let (kind, dimension) = match field.data_type() {
        DataType::FixedSizeList(item, size) if item.data_type().is_floating() => (VectorKind::Float, *size),
        DataType::FixedSizeList(item, size) if item.data_type() == &DataType::UInt8 => (VectorKind::Binary, *size),
        DataType::List(inner) | DataType::LargeList(inner) => match inner.data_type() {
            DataType::FixedSizeList(item, size) if item.data_type().is_floating() => (VectorKind::Multi, *size),
            _ => return None,
        },
        _ => return None,
    };
    Some(VectorColumn { name: field.name().clone(), dimension: usize::try_from(dimension).ok()?, kind })
}

/// Picks the column to search: the named one, or the only vector column whose dimension
/// matches the query, with an error that says what is wrong otherwise.
fn resolve_vector_column(schema: &Schema, requested: Option<&str>, dimension: usize) -> Result<VectorColumn> {
    let columns = schema.fields().iter().filter_map(|field| vector_column_of(field)).collect::<Vec<_>>();
    let dimension_error = |column: &VectorColumn| {
        EngineError::invalid_input(format!(
            "query vector has dimension {dimension} but vector column '{}' has dimension {}",
            column.name, column.dimension
        ))
    };
    if let Some(name) = requested {
        let Ok(field) = schema.field_with_name(name) else {
            return Err(EngineError::invalid_input(format!("vector column '{name}' does not exist")));
        };
        let column = vector_column_of(field)
            .ok_or_else(|| EngineError::invalid_input(format!("column '{name}' is not a vector column")))?;
        if column.dimension != dimension {
            return Err(dimension_error(&column));
        }
        return Ok(column);
    }
    let mut matching = columns.iter().filter(|column| column.dimension == dimension);
    match (matching.next(), matching.next()) {
        (Some(column), None) => Ok(column.clone()),
        (Some(first), Some(second)) => Err(EngineError::invalid_input(format!(
            "more than one vector column has dimension {dimension} ('{}', '{}'); set vector_column",
            first.name, second.name
        ))),
        (None, _) => match columns.as_slice() {
            [] => Err(EngineError::invalid_input("the table has no vector column")),
            [only] => Err(dimension_error(only)),
            _ => Err(EngineError::invalid_input(format!("no vector column has dimension {dimension}"))),
        },
    }
}

/// Builds the array lance's `nearest` expects for the column's kind.
fn query_array(vector: QueryVector<'_>, column: &VectorColumn) -> Result<ArrayRef> {
    match (vector, column.kind) {
        (QueryVector::Single(values), VectorKind::Binary) => Ok(Arc::new(binary_query(values)?)),
        (QueryVector::Single(values), _) => Ok(Arc::new(Float32Array::from(values.to_vec()))),
        (QueryVector::Multi(vectors), _) => {
            let dimension = i32::try_from(column.dimension)
                .map_err(|_| EngineError::invalid_input("vector dimension is too large"))?;
            let flat = Float32Array::from(vectors.iter().flatten().copied().collect::<Vec<_>>());
            let item = Arc::new(Field::new("item", DataType::Float32, true));
            let list = FixedSizeListArray::try_new(item, dimension, Arc::new(flat), None)
                .map_err(|error| EngineError::invalid_input(error.to_string()))?;
            Ok(Arc::new(list))
        }
    }
}

/// A binary vector arrives as numbers; each must be a byte value.
fn binary_query(values: &[f32]) -> Result<UInt8Array> {
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
        .collect::<Result<Vec<_>>>()
        .map(UInt8Array::from)
}

/// Prepends the Int32 `query_index` column (0-based) to each query's rows, in query order.
fn with_query_index(outputs: Vec<QueryOutput>) -> Result<QueryOutput> {
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
            let batch = RecordBatch::try_new(schema.clone(), columns)
                .map_err(|error| EngineError::invalid_input(format!("cannot combine query results: {error}")))?;
            batches.push(batch);
        }
    }
    Ok(QueryOutput { schema, batches })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector_field(name: &str, item: DataType, size: i32) -> Field {
        Field::new(name, DataType::FixedSizeList(Arc::new(Field::new("item", item, true)), size), true)
    }

    #[test]
    fn the_only_vector_column_of_matching_dimension_is_chosen() {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            vector_field("small", DataType::Float32, 4),
            vector_field("large", DataType::Float32, 8),
        ]);
        assert_eq!(resolve_vector_column(&schema, None, 8).expect("found").name, "large");
        assert_eq!(resolve_vector_column(&schema, Some("small"), 4).expect("found").name, "small");
        let error = resolve_vector_column(&schema, None, 5).expect_err("no match");
        assert!(error.to_string().contains("no vector column has dimension 5"), "{error}");
        let error = resolve_vector_column(&schema, Some("id"), 4).expect_err("not a vector");
        assert!(error.to_string().contains("not a vector column"), "{error}");
    }

    #[test]
    fn wrong_dimension_names_both_sizes() {
        let schema = Schema::new(vec![vector_field("vector", DataType::Float32, 16)]);
        let error = resolve_vector_column(&schema, None, 15).expect_err("mismatch");
        assert_eq!(error.to_string(), "query vector has dimension 15 but vector column 'vector' has dimension 16");
        let error = resolve_vector_column(&schema, Some("missing"), 16).expect_err("missing");
        assert!(error.to_string().contains("does not exist"), "{error}");
    }

    #[test]
    fn ambiguous_columns_ask_for_vector_column() {
        let schema =
            Schema::new(vec![vector_field("a", DataType::Float32, 4), vector_field("b", DataType::Float16, 4)]);
        let error = resolve_vector_column(&schema, None, 4).expect_err("ambiguous");
        assert!(error.to_string().contains("set vector_column"), "{error}");
    }

    #[test]
    fn binary_and_multivector_columns_are_recognised() {
        let binary = vector_field("bits", DataType::UInt8, 8);
        assert_eq!(vector_column_of(&binary).expect("vector").kind, VectorKind::Binary);
        let multi = Field::new("multi", DataType::List(Arc::new(vector_field("item", DataType::Float32, 4))), true);
        let column = vector_column_of(&multi).expect("vector");
        assert_eq!((column.kind, column.dimension), (VectorKind::Multi, 4));
        assert!(vector_column_of(&Field::new("text", DataType::Utf8, true)).is_none());
    }

    #[test]
    fn binary_queries_must_be_bytes() {
        assert_eq!(binary_query(&[0.0, 255.0, 7.0]).expect("bytes").values(), &[0, 255, 7]);
        assert!(binary_query(&[256.0]).is_err());
        assert!(binary_query(&[1.5]).is_err());
        assert!(binary_query(&[-1.0]).is_err());
    }

    #[test]
    fn query_index_is_prepended_in_query_order() {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int32, false)]));
        let output = |ids: Vec<i32>| QueryOutput {
            schema: schema.clone(),
            batches: vec![RecordBatch::try_new(schema.clone(), vec![Arc::new(Int32Array::from(ids))]).expect("batch")],
        };
        let merged = with_query_index(vec![output(vec![7, 8]), output(vec![9])]).expect("merged");
        assert_eq!(merged.schema.field(0).name(), QUERY_INDEX_COLUMN);
        assert_eq!(merged.num_rows(), 3);
        let indexes = merged
            .batches
            .iter()
            .flat_map(|batch| batch.column(0).as_any().downcast_ref::<Int32Array>().expect("int32").values().to_vec());
        assert_eq!(indexes.collect::<Vec<_>>(), vec![0, 0, 1]);
    }
}
