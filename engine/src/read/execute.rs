//! Runs one [`FragmentQuery`] with lance's scanner over some fragments of a pinned dataset
//! version: the work of a plan executor (and of standalone, in-process).
//!
//! The mapping of query fields onto the scanner follows LanceDB's native query path, so
//! results equal what LanceDB OSS returns for the same table and query.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use arrow_array::{ArrayRef, FixedSizeListArray, Float32Array, UInt8Array};
use arrow_schema::{DataType, Field};
use datafusion::physical_plan::ExecutionPlan;
use futures::TryStreamExt;
use lance::Dataset;
use lance::dataset::scanner::{ColumnOrdering, DatasetRecordBatchStream, Scanner};
use lance::io::RecordBatchStream;
use lance_datafusion::exec::{LanceExecutionOptions, analyze_plan, execute_plan};
use lance_index::scalar::FullTextSearchQuery;
use lancefleet_proto::v1::{AnalyzeReply, Bm25Stats, FragmentQuery, NearestQuery, VectorKind};

use crate::catalog::Catalog;
use crate::error::{EngineError, Result};
use crate::read::corpus;
use crate::read::merge::{DISTANCE_COLUMN, SCORE_COLUMN};
use crate::read::output::QueryOutput;
use crate::read::plan::check_bytes;
use crate::read::wire::{full_text_from_wire, lance_distance};

/// Which fragments of the version a fragment query reads.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// All of them.
    WholeTable,
    /// These, by id, in this order (the manifest's).
    Fragments(&'a [u64]),
}

/// Starts `query` over `scope` of `dataset`; rows stream as lance produces them.
pub async fn execute(dataset: &Dataset, scope: Scope<'_>, query: &FragmentQuery) -> Result<DatasetRecordBatchStream> {
    let scanner = build_scanner(dataset, scope, query)?;
    if query.corpus_stats.is_empty() {
        return Ok(scanner.try_into_stream().await?);
    }
    let plan = divided_plan(dataset, &scanner, scope, query).await?;
    Ok(DatasetRecordBatchStream::new(execute_plan(plan, LanceExecutionOptions::default())?))
}

/// The schema of the rows `query` returns over `dataset`, without running it.
pub async fn output_schema(dataset: &Dataset, query: &FragmentQuery) -> Result<arrow_schema::SchemaRef> {
    Ok(build_scanner(dataset, Scope::WholeTable, query)?.schema().await?)
}

/// The BM25 statistics of the full-text index segments `scope` owns for the terms of
/// `query` (see [`corpus`]): what an executor answers in the first phase of a full-text
/// search divided by segment.
pub async fn full_text_stats(dataset: &Dataset, scope: Scope<'_>, query: &FragmentQuery) -> Result<Vec<Bm25Stats>> {
    if query.full_text.is_none() {
        return Err(EngineError::invalid_input("full-text statistics need a full-text query"));
    }
    let scanner = build_scanner(dataset, scope, query)?;
    let plan = Box::pin(scanner.create_plan()).await?;
    let all;
    let fragments = match scope {
        Scope::Fragments(ids) => ids,
        Scope::WholeTable => {
            all = dataset.fragments().iter().map(|fragment| fragment.id).collect::<Vec<_>>();
            &all
        }
    };
    corpus::statistics(dataset, &plan, fragments).await
}

/// Lance's plan of `scanner`, its full-text match leaves restricted to the index segments
/// over `scope` and scored with `query`'s corpus statistics.
async fn divided_plan(
    dataset: &Dataset,
    scanner: &Scanner,
    scope: Scope<'_>,
    query: &FragmentQuery,
) -> Result<Arc<dyn ExecutionPlan>> {
    let plan = Box::pin(scanner.create_plan()).await?;
    match scope {
        Scope::Fragments(ids) => corpus::restrict_to_owned_segments(dataset, plan, ids, &query.corpus_stats).await,
        Scope::WholeTable => Ok(plan),
    }
}

/// Runs `query` over `scope` and collects its rows.
pub async fn execute_collect(dataset: &Dataset, scope: Scope<'_>, query: &FragmentQuery) -> Result<QueryOutput> {
    let stream = execute(dataset, scope, query).await?;
    let schema = stream.schema();
    let batches = stream.try_collect::<Vec<_>>().await?;
    Ok(QueryOutput { schema, batches })
}

/// Runs `query` over `scope` and answers how the run went instead of the rows: lance's
/// analyzed plan (operators with their rows, timings and I/O), the wall time, and the chunk
/// reads `catalog`'s object cache answered and fetched meanwhile (process-wide counters, so
/// concurrent queries count too).
pub async fn analyze(
    catalog: &Catalog,
    dataset: &Dataset,
    scope: Scope<'_>,
    query: &FragmentQuery,
) -> Result<AnalyzeReply> {
    let before = catalog.cache_reads();
    let started = Instant::now();
    let scanner = build_scanner(dataset, scope, query)?;
    let plan = if query.corpus_stats.is_empty() {
        scanner.analyze_plan().await?
    } else {
        analyze_plan(divided_plan(dataset, &scanner, scope, query).await?, LanceExecutionOptions::default()).await?
    };
    let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let reads = catalog.cache_reads().since(&before);
    Ok(AnalyzeReply { plan, elapsed_ms, cache_hits: reads.hits(), cache_misses: reads.misses })
}

/// Lance's physical plan of `query` over `scope`, without running it.
pub async fn explain(dataset: &Dataset, scope: Scope<'_>, query: &FragmentQuery, verbose: bool) -> Result<String> {
    Ok(build_scanner(dataset, scope, query)?.explain_plan(verbose).await?)
}

/// Counts the rows of `scope` that match `filter`.
pub async fn count(dataset: &Dataset, scope: Scope<'_>, filter: Option<&str>) -> Result<u64> {
    let mut scanner = dataset.scan();
    restrict(&mut scanner, dataset, scope)?;
    if let Some(filter) = filter {
        scanner.filter(filter)?;
    }
    Ok(scanner.count_rows().await?)
}

fn build_scanner(dataset: &Dataset, scope: Scope<'_>, query: &FragmentQuery) -> Result<Scanner> {
    let mut scanner = dataset.scan();
    // Lance only allows a vector search over chosen fragments with the prefilter set first.
    scanner.prefilter(query.prefilter);
    restrict(&mut scanner, dataset, scope)?;
    if let Some(nearest) = &query.nearest {
        configure_nearest(&mut scanner, nearest)?;
    }
    if let Some(full_text) = &query.full_text {
        scanner.full_text_search(FullTextSearchQuery::new_query(full_text_from_wire(full_text)?))?;
        if query.fast_search {
            scanner.fast_search();
        }
    }
    let offset = (query.offset > 0).then(|| to_i64(query.offset));
    scanner.limit(query.limit.map(to_i64), offset)?;
    if let Some(projection) = &query.projection {
        let mut pairs = projection
            .columns
            .iter()
            .map(|column| (column.name.clone(), column.expression.clone()))
            .collect::<Vec<_>>();
        // A search always answers with its distance or score, last (what lance adds by
        // itself today, with a deprecation warning per query when it is not asked for).
        let ranking = match (&query.nearest, &query.full_text) {
            (Some(_), _) => Some(DISTANCE_COLUMN),
            (None, Some(_)) => Some(SCORE_COLUMN),
            (None, None) => None,
        };
        if let Some(ranking) = ranking
            && !pairs.iter().any(|(name, _)| name == ranking)
        {
            pairs.push((ranking.to_string(), None));
        }
        if pairs.iter().all(|(_, expression)| expression.is_none()) {
            scanner.project(&pairs.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>())?;
        } else {
            let pairs = pairs
                .into_iter()
                .map(|(name, expression)| (name.clone(), expression.unwrap_or(name)))
                .collect::<Vec<_>>();
            scanner.project_with_transform(&pairs)?;
        }
    }
    if query.with_row_id {
        scanner.with_row_id();
    }
    if query.with_row_address {
        scanner.with_row_address();
    }
    if let Some(filter) = &query.filter {
        scanner.filter(filter)?;
    }
    if !query.order_by.is_empty() {
        let ordering = query.order_by.iter().map(|key| ColumnOrdering {
            ascending: !key.descending,
            nulls_first: key.nulls_first,
            column_name: key.column.clone(),
        });
        scanner.order_by(Some(ordering.collect()))?;
    }
    Ok(scanner)
}

/// Limits `scanner` to the fragments of `scope`, in the given order.
fn restrict(scanner: &mut Scanner, dataset: &Dataset, scope: Scope<'_>) -> Result<()> {
    let Scope::Fragments(ids) = scope else { return Ok(()) };
    let by_id = dataset.fragments().iter().map(|fragment| (fragment.id, fragment)).collect::<HashMap<_, _>>();
    let found = ids
        .iter()
        .map(|id| {
            by_id.get(id).map(|fragment| (*fragment).clone()).ok_or_else(|| {
                EngineError::invalid_input(format!(
                    "fragment {id} is not part of version {} of the table",
                    dataset.version().version
                ))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    scanner.with_fragments(found);
    Ok(())
}

fn configure_nearest(scanner: &mut Scanner, nearest: &NearestQuery) -> Result<()> {
    let key = query_array(nearest)?;
    let k = usize::try_from(nearest.k).unwrap_or(usize::MAX);
    scanner.nearest(&nearest.column, key.as_ref(), k)?;
    // Probe settings after `nearest`, which resets them.
    if let Some(nprobes) = nearest.nprobes {
        scanner.nprobes(nprobes as usize);
    }
    if let Some(minimum) = nearest.minimum_nprobes {
        scanner.minimum_nprobes(minimum as usize);
    }
    if let Some(maximum) = nearest.maximum_nprobes {
        scanner.maximum_nprobes(maximum as usize);
    }
    if let Some(ef) = nearest.ef {
        scanner.ef(ef as usize);
    }
    if let Some(factor) = nearest.refine_factor {
        scanner.refine(factor);
    }
    if let Some(distance) = lance_distance(nearest.distance_type)? {
        scanner.distance_metric(distance);
    }
    scanner.distance_range(nearest.lower_bound, nearest.upper_bound);
    scanner.use_index(nearest.use_index);
    if nearest.fast_search {
        scanner.fast_search();
    }
    Ok(())
}

/// Builds the array lance's `nearest` expects for the column's kind.
fn query_array(nearest: &NearestQuery) -> Result<ArrayRef> {
    match VectorKind::try_from(nearest.kind).unwrap_or(VectorKind::Unspecified) {
        VectorKind::Binary => Ok(Arc::new(UInt8Array::from(check_bytes(&nearest.values)?))),
        VectorKind::Float | VectorKind::Unspecified => Ok(Arc::new(Float32Array::from(nearest.values.clone()))),
        VectorKind::Multi => {
            let dimension = i32::try_from(nearest.dimension)
                .map_err(|_| EngineError::invalid_input("vector dimension is too large"))?;
            let flat = Float32Array::from(nearest.values.clone());
            let item = Arc::new(Field::new("item", DataType::Float32, true));
            let list = FixedSizeListArray::try_new(item, dimension, Arc::new(flat), None)
                .map_err(|error| EngineError::invalid_input(error.to_string()))?;
            Ok(Arc::new(list))
        }
    }
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
