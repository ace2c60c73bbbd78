//! Table maintenance with lance's own machinery, the jobs the indexer runs: compaction
//! (plan, execute, commit, with index remapping), index builds ([`index_spec`]), index
//! optimization (append deltas, merge segments), and cleanup of old versions. What a
//! table looks like to the indexer is [`crate::catalog::facts`]. Each job commits one new version or nothing; a commit that
//! conflicts with a writer fails with a [`ErrorCode::Conflict`](lancefleet_proto::ErrorCode)
//! error and changes nothing.

pub mod index_spec;

use std::sync::Arc;
use std::time::Duration;

use lance::Dataset;
use lance::dataset::index::DatasetIndexRemapperOptions;
use lance::dataset::optimize::{CompactionOptions, commit_compaction, plan_compaction};
use lance::index::DatasetIndexExt;
use lance_index::optimize::OptimizeOptions;

use crate::catalog::facts::MATERIALIZE_DELETIONS_THRESHOLD;
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
pub async fn compact(dataset: &mut Dataset, target_rows_per_fragment: usize) -> Result<Option<Compacted>> {
    let options = CompactionOptions {
        target_rows_per_fragment,
        materialize_deletions: true,
        materialize_deletions_threshold: MATERIALIZE_DELETIONS_THRESHOLD,
        ..CompactionOptions::default()
    };
    let plan = plan_compaction(dataset, &options).await?;
    if plan.num_tasks() == 0 {
        return Ok(None);
    }
    let mut results = Vec::with_capacity(plan.num_tasks());
    for task in plan.compaction_tasks() {
        results.push(task.execute(dataset).await?);
    }
    let new_fragments =
        results.iter().flat_map(|result| result.new_fragments.iter().map(|fragment| fragment.id)).collect();
    let metrics =
        commit_compaction(dataset, results, Arc::new(DatasetIndexRemapperOptions::default()), &options).await?;
    Ok(Some(Compacted {
        fragments_removed: metrics.fragments_removed,
        fragments_added: metrics.fragments_added,
        new_fragments,
    }))
}

/// Adds the unindexed rows to every index as a new delta segment; with `merge`, merges
/// each index's newest `merge` segments (and the new rows) into one instead.
pub async fn optimize_indexes(dataset: &mut Dataset, merge: Option<usize>) -> Result<()> {
    let options = merge.map_or_else(OptimizeOptions::append, OptimizeOptions::merge);
    dataset.optimize_indices(&options).await?;
    Ok(())
}

/// Removes versions older than `retention` (tagged versions stay) and returns how many.
pub async fn cleanup(dataset: &Dataset, retention: Duration) -> Result<u64> {
    let older_than = chrono::Duration::from_std(retention)
        .map_err(|_| EngineError::invalid_input(format!("retention {retention:?} is too long")))?;
    let stats = dataset.cleanup_old_versions(older_than, Some(false), Some(false)).await?;
    Ok(stats.old_versions)
}
