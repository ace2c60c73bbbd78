//! Table maintenance with lance's own machinery, the jobs the indexer runs: compaction
//! (plan, execute, commit, with index remapping), index builds ([`index_spec`]), index
//! optimization (append deltas, merge segments), and cleanup of old versions. What a
//! table looks like to the indexer is [`crate::catalog::facts`]. Each job commits one new version or nothing; a commit that
//! conflicts with a writer fails with a [`ErrorCode::Conflict`](lancefleet_proto::ErrorCode)
//! error and changes nothing.

pub mod index_spec;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use lance::Dataset;
use lance::dataset::index::DatasetIndexRemapperOptions;
use lance::dataset::optimize::{CompactionOptions, CompactionPlan, TaskData, commit_compaction, plan_compaction};
use lance::index::DatasetIndexExt;
use lance::index::DatasetIndexInternalExt;
use lance::index::optimize::{commit_optimize_indices, plan_optimize_indices};
use lance_index::metrics::NoOpMetricsCollector;
use lance_index::optimize::OptimizeOptions;
use lance_index::{IndexParams, IndexType};

use crate::catalog::facts::{MATERIALIZE_DELETIONS_THRESHOLD, indexed_column};
use crate::error::{EngineError, Result};

/// What a compaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Compacted {
    /// Fragments rewritten.
    pub fragments_removed: usize,
    /// Fragments written.
    pub fragments_added: usize,
    /// Ids of the fragments written.
    pub new_fragments: Vec<u64>,
}

/// Compacts `dataset` toward fragments of `target_rows_per_fragment` rows (materializing
/// deletions past lance's threshold) with lance's plan/execute/commit API, remapping
/// indexes in the same commit. Returns `None` when lance plans nothing.
pub async fn compact(dataset: &mut Dataset, target_rows_per_fragment: u64) -> Result<Option<Compacted>> {
    let options = compaction_options(target_rows_per_fragment);
    let plan = plan_compaction(dataset, &options).await?;
    rewrite(dataset, plan).await
}

/// Rewrites each fragment of `dataset` with at least twice `target_rows` rows into
/// fragments of `target_rows` to `2 × target_rows` rows (lance's compaction tasks, one
/// per fragment, committed together with index remapping), so that more executors share
/// the table. Row order is kept. Returns `None` when no fragment is that large.
pub async fn split_fragments(dataset: &mut Dataset, target_rows: u64) -> Result<Option<Compacted>> {
    let mut tasks = Vec::new();
    for fragment in dataset.get_fragments() {
        let rows = fragment.physical_rows().await?;
        if u64::try_from(rows).unwrap_or(u64::MAX) >= target_rows.saturating_mul(2) {
            tasks.push(TaskData { fragments: vec![fragment.metadata().clone()] });
        }
    }
    let plan =
        CompactionPlan { tasks, read_version: dataset.version().version, options: compaction_options(target_rows) };
    rewrite(dataset, plan).await
}

/// Lance's compaction options aiming at `target_rows` per fragment.
fn compaction_options(target_rows: u64) -> CompactionOptions {
    CompactionOptions {
        target_rows_per_fragment: usize::try_from(target_rows).unwrap_or(usize::MAX),
        materialize_deletions: true,
        materialize_deletions_threshold: MATERIALIZE_DELETIONS_THRESHOLD,
        ..CompactionOptions::default()
    }
}

/// Runs `plan`'s tasks and commits them as one version.
async fn rewrite(dataset: &mut Dataset, plan: CompactionPlan) -> Result<Option<Compacted>> {
    if plan.num_tasks() == 0 {
        return Ok(None);
    }
    let mut results = Vec::with_capacity(plan.num_tasks());
    for task in plan.compaction_tasks() {
        results.push(task.execute(dataset).await?);
    }
    // Written fragments get their ids when committed.
    let before = dataset.fragments().iter().map(|fragment| fragment.id).collect::<HashSet<_>>();
    let remap = Arc::new(DatasetIndexRemapperOptions::default());
    let metrics = commit_compaction(dataset, results, remap, plan.options()).await?;
    let new_fragments =
        dataset.fragments().iter().map(|fragment| fragment.id).filter(|id| !before.contains(id)).collect();
    Ok(Some(Compacted {
        fragments_removed: metrics.fragments_removed,
        fragments_added: metrics.fragments_added,
        new_fragments,
    }))
}

/// Optimizes the indexes named `indexes` in one commit: adds their unindexed rows as a
/// new segment; with `merge`, merges each one's newest `merge` segments (and the new
/// rows) instead. With `segment_rows`, the output is segments of at most that many rows
/// over runs of whole fragments, encoded with the index's model (lance's split
/// optimize); with `retrain` too, the model is trained again and the whole index rebuilt
/// as such segments — or nothing is committed when lance cannot split it (a rebuild
/// into one segment would be asked for again and again). A full-text or scalar index
/// named alone with `retrain` is rebuilt as segments with its own parameters (lance's
/// split optimize only packs new rows into segments). Returns whether it committed.
///
/// It runs lance's plan / execute / commit stages, so the tasks could run elsewhere.
pub async fn optimize_indexes(
    dataset: &mut Dataset,
    indexes: Vec<String>,
    merge: Option<usize>,
    segment_rows: Option<u64>,
    retrain: bool,
) -> Result<bool> {
    if let (true, Some(rows), [name]) = (retrain, segment_rows, indexes.as_slice())
        && let Some((column, kind)) = scalar_index(dataset, name).await?
    {
        return segment_scalar_index(dataset, name, &column, kind, rows).await;
    }
    let mut options = merge.map_or_else(OptimizeOptions::append, OptimizeOptions::merge);
    options.index_names = Some(indexes);
    options.retrain = retrain;
    options.max_rows_per_segment = segment_rows;
    options.max_rows_per_task = segment_rows;
    let plan = plan_optimize_indices(dataset, &options).await?;
    if plan.merges.is_empty() || (retrain && plan.merges.len() < 2) {
        return Ok(false);
    }
    let mut built = Vec::with_capacity(plan.tasks.len());
    for task in &plan.tasks {
        built.extend(task.execute(dataset).await?);
    }
    let mut merged = Vec::with_capacity(plan.merges.len());
    for unit in &plan.merges {
        merged.extend(unit.execute(dataset, &built).await?);
    }
    let before = dataset.version().version;
    commit_optimize_indices(dataset, merged, &options).await?;
    Ok(dataset.version().version != before)
}

/// The column and kind of `name` when it is a full-text or scalar index.
async fn scalar_index(dataset: &Dataset, name: &str) -> Result<Option<(String, IndexType)>> {
    let descriptions = dataset.describe_indices(None).await?;
    let Some(description) = descriptions.iter().find(|description| description.name() == name) else {
        return Ok(None);
    };
    let Ok(kind) = IndexType::try_from(description.index_type()) else { return Ok(None) };
    if !kind.is_scalar() {
        return Ok(None);
    }
    let column = description.metadata().first().and_then(|segment| indexed_column(dataset, segment));
    Ok(column.map(|column| (column, kind)))
}

/// Rebuilds the full-text or scalar index `name` (of `kind`, on `column`) as segments
/// over runs of whole fragments of at most `segment_rows` live rows (a fragment is never
/// split), packed in fragment order as lance's split optimize packs new rows, with the
/// parameters of its newest segment; one commit replaces its old segments. Returns
/// `false` and commits nothing when the table makes one run or the index already is
/// these segments.
async fn segment_scalar_index(
    dataset: &mut Dataset,
    name: &str,
    column: &str,
    kind: IndexType,
    segment_rows: u64,
) -> Result<bool> {
    let segments = dataset.load_indices_by_name(name).await?;
    let Some(last) = segments.last() else { return Ok(false) };
    let params = dataset.open_scalar_index(column, &last.uuid, &NoOpMetricsCollector).await?.derive_index_params()?;
    let runs = fragment_runs(dataset, segment_rows).await?;
    let existing = segments
        .iter()
        .map(|segment| segment.fragment_bitmap.iter().flatten().collect::<Vec<_>>())
        .collect::<HashSet<_>>();
    if runs.len() < 2 || runs.iter().all(|run| existing.contains(run)) {
        return Ok(false);
    }
    let before = dataset.version().version;
    build_segments(dataset, name, column, kind, &params, true, runs).await?;
    Ok(dataset.version().version != before)
}

/// The fragments of `dataset` in runs of at most `segment_rows` live rows, in fragment
/// order, as lance's split optimize packs them (next fit; a fragment is never split, so a
/// run holds at least one).
pub(crate) async fn fragment_runs(dataset: &Dataset, segment_rows: u64) -> Result<Vec<Vec<u32>>> {
    let mut runs: Vec<(Vec<u32>, u64)> = Vec::new();
    for fragment in dataset.get_fragments() {
        let rows = u64::try_from(fragment.count_rows(None).await?).unwrap_or(u64::MAX);
        let id = u32::try_from(fragment.id())
            .map_err(|_| EngineError::internal(format!("fragment id {} past u32", fragment.id())))?;
        match runs.last_mut() {
            Some((run, run_rows)) if run_rows.saturating_add(rows) <= segment_rows => {
                run.push(id);
                *run_rows += rows;
            }
            _ => runs.push((vec![id], rows)),
        }
    }
    Ok(runs.into_iter().map(|(run, _)| run).collect())
}

/// Builds index `name` (of `kind`, on `column`, with `params`) as one segment per run of
/// `runs` and commits them in one version, replacing the segments they overlap
/// (`replace` lets the name exist already).
pub(crate) async fn build_segments(
    dataset: &mut Dataset,
    name: &str,
    column: &str,
    kind: IndexType,
    params: &dyn IndexParams,
    replace: bool,
    runs: Vec<Vec<u32>>,
) -> Result<()> {
    let mut built = Vec::with_capacity(runs.len());
    for fragments in runs {
        let columns = [column];
        let builder = dataset.create_index_builder(&columns, kind, params);
        let mut builder = builder.name(name.to_string()).replace(replace).fragments(fragments);
        built.push(builder.execute_uncommitted().await?);
    }
    dataset.commit_existing_index_segments(name, column, built).await?;
    Ok(())
}

/// Removes versions older than `retention` (tagged versions stay) and returns how many.
pub async fn cleanup(dataset: &Dataset, retention: Duration) -> Result<u64> {
    let older_than = chrono::Duration::from_std(retention)
        .map_err(|_| EngineError::invalid_input(format!("retention {retention:?} is too long")))?;
    let stats = dataset.cleanup_old_versions(older_than, Some(false), Some(false)).await?;
    Ok(stats.old_versions)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{FixedSizeListArray, Float32Array, RecordBatch, RecordBatchIterator};
    use arrow_schema::{DataType, Field, Schema};
    use lance::dataset::WriteParams;

    use super::*;
    use crate::catalog::facts::vector_segment_groups;
    use crate::maintenance::index_spec::IndexSpec;

    const DIM: i32 = 8;

    /// A table of `fragments` fragments of 300 vectors with an IVF_PQ index (one segment).
    async fn indexed_table(dir: &std::path::Path, fragments: usize) -> Dataset {
        let item = Arc::new(Field::new("item", DataType::Float32, true));
        let schema =
            Arc::new(Schema::new(vec![Field::new("vector", DataType::FixedSizeList(item.clone(), DIM), false)]));
        let rows = fragments * 300;
        let values = (0..rows * DIM as usize).map(|i| ((i * 7919) % 1000) as f32 / 1000.0);
        let vectors = FixedSizeListArray::try_new(item, DIM, Arc::new(Float32Array::from_iter_values(values)), None)
            .expect("vectors");
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(vectors)]).expect("batch");
        let params = WriteParams { max_rows_per_file: 300, ..WriteParams::default() };
        let uri = dir.to_str().expect("utf-8 path");
        let mut dataset = Dataset::write(RecordBatchIterator::new([Ok(batch)], schema.clone()), uri, Some(params))
            .await
            .expect("written");
        let spec =
            serde_json::json!({"column": "vector", "index_type": "IVF_PQ", "num_partitions": 2, "num_sub_vectors": 2});
        IndexSpec::resolve(&spec, &schema).expect("valid spec").build(&mut dataset).await.expect("indexed");
        dataset
    }

    #[tokio::test]
    async fn a_vector_index_is_rebuilt_as_segments_placed_with_their_fragments() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut dataset = indexed_table(dir.path(), 8).await;
        assert!(vector_segment_groups(&dataset, "vector").await.expect("groups").len() == 1, "one segment");

        let names = vec!["vector_idx".to_string()];
        assert!(optimize_indexes(&mut dataset, names.clone(), None, Some(600), true).await.expect("rebuilt"));
        let groups = vector_segment_groups(&dataset, "vector").await.expect("groups");
        assert_eq!(groups, vec![vec![0, 1], vec![2, 3], vec![4, 5], vec![6, 7]]);

        let one_fragment = tempfile::tempdir().expect("tempdir");
        let mut unsplittable = indexed_table(one_fragment.path(), 1).await;
        let version = unsplittable.version().version;
        assert!(!optimize_indexes(&mut unsplittable, names, None, Some(100), true).await.expect("planned"));
        assert_eq!(unsplittable.version().version, version, "a rebuild that cannot split commits nothing");
    }

    #[tokio::test]
    async fn a_requested_vector_index_is_built_as_segments_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut dataset = indexed_table(dir.path(), 8).await;
        let before = dataset.version().version;
        let spec = serde_json::json!({"column": "vector", "index_type": "IVF_PQ", "num_partitions": 2,
            "num_sub_vectors": 2, "name": "fresh_idx"});
        let schema = arrow_schema::Schema::from(dataset.schema());
        IndexSpec::resolve(&spec, &schema).expect("valid").build_segmented(&mut dataset, 600, 0).await.expect("built");
        assert_eq!(dataset.version().version, before + 2, "the definition, then its segments");
        let fresh = dataset.load_indices_by_name("fresh_idx").await.expect("segments");
        let covered = fresh.iter().map(|s| s.fragment_bitmap.iter().flatten().collect::<Vec<_>>()).collect::<Vec<_>>();
        assert_eq!(covered, vec![vec![0, 1], vec![2, 3], vec![4, 5], vec![6, 7]]);
        let small = IndexSpec::resolve(
            &serde_json::json!({"column": "vector", "num_partitions": 2, "num_sub_vectors": 2,
            "name": "whole_idx"}),
            &schema,
        )
        .expect("valid");
        small.build_segmented(&mut dataset, 0, 0).await.expect("built");
        assert_eq!(dataset.load_indices_by_name("whole_idx").await.expect("segments").len(), 1, "segmenting off");
    }

    #[tokio::test]
    async fn a_large_fragment_is_split_in_order_with_its_index_remapped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut dataset = indexed_table(dir.path(), 1).await;
        let before = dataset.scan().try_into_batch().await.expect("scanned");

        assert_eq!(split_fragments(&mut dataset, 200).await.expect("planned"), None, "300 rows < 2 × 200");
        let split = split_fragments(&mut dataset, 100).await.expect("split").expect("a commit");
        assert_eq!((split.fragments_removed, split.fragments_added), (1, 3));
        let rows = dataset.get_fragments().iter().map(|f| f.metadata().physical_rows).collect::<Vec<_>>();
        assert_eq!(rows, vec![Some(100); 3]);
        assert_eq!(dataset.scan().try_into_batch().await.expect("scanned"), before, "same rows, same order");
        let groups = vector_segment_groups(&dataset, "vector").await.expect("groups");
        assert_eq!(groups, vec![split.new_fragments.clone()], "the index covers the new fragments");
    }

    #[tokio::test]
    async fn a_scalar_index_built_whole_is_rebuilt_as_segments_that_still_answer_filters() {
        use arrow_array::Int64Array;

        use crate::read::execute::{Scope, count};

        let dir = tempfile::tempdir().expect("tempdir");
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        let batch =
            RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from_iter_values(0..600))]).expect("batch");
        let params = WriteParams { max_rows_per_file: 100, ..WriteParams::default() };
        let uri = dir.path().to_str().expect("utf-8 path");
        let mut dataset = Dataset::write(RecordBatchIterator::new([Ok(batch)], schema.clone()), uri, Some(params))
            .await
            .expect("written");
        let spec = serde_json::json!({"column": "id", "index_type": "BTREE"});
        IndexSpec::resolve(&spec, &schema).expect("valid spec").build(&mut dataset).await.expect("indexed");

        assert!(optimize_indexes(&mut dataset, vec!["id_idx".into()], None, Some(200), true).await.expect("rebuilt"));
        let segments = dataset.load_indices_by_name("id_idx").await.expect("segments");
        let covered = segments
            .iter()
            .map(|segment| segment.fragment_bitmap.iter().flatten().collect::<Vec<_>>())
            .collect::<Vec<_>>();
        assert_eq!(covered, vec![vec![0, 1], vec![2, 3], vec![4, 5]]);
        let filter = Some("id >= 150 AND id < 350");
        assert_eq!(count(&dataset, Scope::Fragments(&[2, 3]), filter).await.expect("counted"), 150);
        assert_eq!(count(&dataset, Scope::WholeTable, filter).await.expect("counted"), 200);
        assert!(
            !optimize_indexes(&mut dataset, vec!["id_idx".into()], None, Some(200), true).await.expect("planned"),
            "segments of the size asked for: nothing to rebuild"
        );
    }
}
