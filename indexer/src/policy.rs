//! When a table needs which maintenance: a pure function of the table's facts, its
//! pending index requests and the configuration, so the rules are unit tested without
//! storage. One job at a time; the worker re-reads the table after each commit and asks
//! again.

use std::time::Duration;

use lancefleet_common::config::IndexerConfig;
use lancefleet_common::events::IndexRequest;
use lancefleet_engine::catalog::facts::TableFacts;

/// The kinds of job, for metrics and for skipping a kind that found nothing to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobKind {
    /// Build an index a client asked for.
    RequestedIndex,
    /// Build an index the configuration asks for.
    AutoIndex,
    /// Rewrite small fragments.
    Compaction,
    /// Add new rows to indexes, or merge their segments.
    OptimizeIndexes,
    /// Remove old versions.
    Cleanup,
}

impl JobKind {
    /// Every kind.
    pub const ALL: [JobKind; 5] =
        [Self::RequestedIndex, Self::AutoIndex, Self::Compaction, Self::OptimizeIndexes, Self::Cleanup];

    /// The kind's name in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RequestedIndex => "requested_index",
            Self::AutoIndex => "auto_index",
            Self::Compaction => "compaction",
            Self::OptimizeIndexes => "optimize_indexes",
            Self::Cleanup => "cleanup",
        }
    }
}

/// One maintenance job.
#[derive(Debug, Clone, PartialEq)]
pub enum Job {
    /// Build the index of a client's request.
    BuildRequested(IndexRequest),
    /// Build an index on `column` with the `create_index` body `spec`.
    BuildAuto {
        /// The column.
        column: String,
        /// The request body.
        spec: serde_json::Value,
    },
    /// Compact small fragments and fragments with many deletions.
    Compact,
    /// Index new rows as deltas; with `merge`, merge that many newest segments instead.
    Optimize {
        /// Segments to merge, if an index has too many.
        merge: Option<usize>,
    },
    /// Remove versions older than the retention.
    Cleanup,
}

impl Job {
    /// Its kind.
    pub fn kind(&self) -> JobKind {
        match self {
            Self::BuildRequested(_) => JobKind::RequestedIndex,
            Self::BuildAuto { .. } => JobKind::AutoIndex,
            Self::Compact => JobKind::Compaction,
            Self::Optimize { .. } => JobKind::OptimizeIndexes,
            Self::Cleanup => JobKind::Cleanup,
        }
    }
}

/// The next job for a table, in priority order: what clients asked for, then compaction
/// (so indexes are built and extended over fewer, larger fragments), automatic indexes,
/// index optimization, and cleanup when it is `cleanup_due` (see [`cleanup_due`]). Kinds
/// in `skip` found nothing to do earlier in this turn and are not planned again.
pub fn next_job(
    facts: &TableFacts,
    requests: &[IndexRequest],
    config: &IndexerConfig,
    skip: &[JobKind],
    cleanup_due: bool,
) -> Option<Job> {
    let allowed = |kind: JobKind| !skip.contains(&kind);
    if allowed(JobKind::RequestedIndex)
        && let Some(request) = requests.first()
    {
        return Some(Job::BuildRequested(request.clone()));
    }
    let target = u64::try_from(config.target_rows_per_fragment).unwrap_or(u64::MAX);
    let small = facts.small_fragments(target);
    if allowed(JobKind::Compaction)
        && ((small >= config.compact_min_small_fragments.max(2)) || facts.fragments_with_many_deletions > 0)
    {
        return Some(Job::Compact);
    }
    if allowed(JobKind::AutoIndex)
        && let Some(job) = auto_index(facts, config)
    {
        return Some(job);
    }
    if allowed(JobKind::OptimizeIndexes) {
        if let Some(segments) = facts
            .indexes
            .iter()
            .map(|index| index.segments)
            .filter(|segments| *segments > config.max_index_segments)
            .max()
        {
            return Some(Job::Optimize { merge: Some(segments) });
        }
        let threshold = config.optimize_min_unindexed_rows;
        if facts.indexes.iter().any(|index| index.unindexed_rows >= threshold) {
            return Some(Job::Optimize { merge: None });
        }
    }
    if allowed(JobKind::Cleanup) && cleanup_due {
        return Some(Job::Cleanup);
    }
    None
}

/// The first automatic index the table lacks, once it is big enough.
fn auto_index(facts: &TableFacts, config: &IndexerConfig) -> Option<Job> {
    if config.auto_index_min_rows == 0 || facts.rows < config.auto_index_min_rows {
        return None;
    }
    let indexed = |column: &str| facts.indexes.iter().any(|index| index.column == column);
    let build = |column: &str, index_type: &str| Job::BuildAuto {
        column: column.to_string(),
        spec: serde_json::json!({ "column": column, "index_type": index_type }),
    };
    if !facts.indexes.iter().any(|index| index.is_vector)
        && let Some(column) = facts.vector_columns.first()
    {
        return Some(build(column, "IVF_PQ"));
    }
    let fts = config.auto_fts_columns.iter().find(|column| facts.string_columns.contains(column) && !indexed(column));
    if let Some(column) = fts {
        return Some(build(column, "FTS"));
    }
    let scalar = config.auto_scalar_columns.iter().find(|column| facts.columns.contains(column) && !indexed(column));
    scalar.map(|column| build(column, "BTREE"))
}

/// When a changed table is next cleaned: at most once per retention period (finding the
/// versions to remove means listing and reading every manifest, too costly for every
/// change). A version therefore lives between one and two retention periods. `None`:
/// now (never cleaned by this indexer).
pub fn cleanup_due(last_cleanup: Option<Duration>, config: &IndexerConfig) -> Option<Duration> {
    let retention = config.cleanup_retention;
    last_cleanup.and_then(|since| retention.checked_sub(since)).filter(|wait| !wait.is_zero())
}

#[cfg(test)]
mod tests {
    use lancefleet_engine::catalog::facts::IndexFacts;

    use super::*;

    fn config() -> IndexerConfig {
        IndexerConfig {
            target_rows_per_fragment: 1000,
            compact_min_small_fragments: 4,
            optimize_min_unindexed_rows: 100,
            max_index_segments: 3,
            auto_index_min_rows: 5000,
            auto_fts_columns: vec!["text".into()],
            cleanup_retention: Duration::from_secs(60),
            ..IndexerConfig::default()
        }
    }

    fn table(fragment_rows: &[u64]) -> TableFacts {
        TableFacts {
            version: 7,
            rows: fragment_rows.iter().sum(),
            fragment_rows: fragment_rows.to_vec(),
            vector_columns: vec!["vector".into()],
            string_columns: vec!["text".into()],
            columns: vec!["id".into(), "text".into(), "vector".into()],
            ..TableFacts::default()
        }
    }

    fn vector_index(unindexed_rows: u64, segments: usize) -> IndexFacts {
        IndexFacts {
            name: "vector_idx".into(),
            column: "vector".into(),
            index_type: "IVF_PQ".into(),
            is_vector: true,
            unindexed_rows,
            indexed_rows: 10_000,
            segments,
        }
    }

    #[test]
    fn a_quiet_table_needs_nothing() {
        assert_eq!(next_job(&table(&[1000, 1000, 10]), &[], &config(), &[], false), None);
    }

    #[test]
    fn client_requests_come_first() {
        let request = IndexRequest { name: "id_idx".into(), spec: serde_json::json!({}), requested_at_ms: 1 };
        let many_small = table(&[10; 20]);
        assert_eq!(
            next_job(&many_small, std::slice::from_ref(&request), &config(), &[], false),
            Some(Job::BuildRequested(request.clone()))
        );
        assert_eq!(next_job(&many_small, &[request], &config(), &[JobKind::RequestedIndex], false), Some(Job::Compact));
    }

    #[test]
    fn compaction_starts_at_the_small_fragment_bound_or_at_deletions() {
        assert_eq!(next_job(&table(&[10, 10, 10, 4000]), &[], &config(), &[], false), None, "3 small < 4");
        assert_eq!(next_job(&table(&[10, 10, 10, 10, 5000]), &[], &config(), &[], false), Some(Job::Compact));
        let deleted = TableFacts { fragments_with_many_deletions: 1, ..table(&[4000]) };
        assert_eq!(next_job(&deleted, &[], &config(), &[], false), Some(Job::Compact));
        assert_eq!(
            next_job(&deleted, &[], &config(), &[JobKind::Compaction], false),
            None,
            "skipped after finding nothing"
        );
    }

    #[test]
    fn big_tables_get_their_vector_index_then_configured_ones() {
        let big = table(&[3000, 3000]);
        let Some(Job::BuildAuto { column, spec }) = next_job(&big, &[], &config(), &[], false) else {
            panic!("auto index")
        };
        assert_eq!((column.as_str(), spec["index_type"].as_str()), ("vector", Some("IVF_PQ")));
        let with_vector_index = TableFacts { indexes: vec![vector_index(0, 1)], ..big.clone() };
        let Some(Job::BuildAuto { column, .. }) = next_job(&with_vector_index, &[], &config(), &[], false) else {
            panic!("the configured FTS index")
        };
        assert_eq!(column, "text");
        let small = table(&[3000]);
        assert_eq!(next_job(&small, &[], &config(), &[], false), None, "below auto_index_min_rows");
        let disabled = IndexerConfig { auto_index_min_rows: 0, ..config() };
        assert_eq!(next_job(&big, &[], &disabled, &[], false), None);
    }

    #[test]
    fn indexes_are_extended_past_the_threshold_and_merged_past_the_segment_bound() {
        let indexed =
            |unindexed, segments| TableFacts { indexes: vec![vector_index(unindexed, segments)], ..table(&[1000]) };
        let no_auto = IndexerConfig { auto_fts_columns: Vec::new(), ..config() };
        assert_eq!(next_job(&indexed(99, 1), &[], &no_auto, &[], false), None);
        assert_eq!(next_job(&indexed(100, 1), &[], &no_auto, &[], false), Some(Job::Optimize { merge: None }));
        assert_eq!(next_job(&indexed(0, 4), &[], &no_auto, &[], false), Some(Job::Optimize { merge: Some(4) }));
    }

    #[test]
    fn cleanup_runs_when_due_and_at_most_once_per_retention() {
        let quiet = table(&[1000]);
        assert_eq!(next_job(&quiet, &[], &config(), &[], true), Some(Job::Cleanup));
        assert_eq!(next_job(&quiet, &[], &config(), &[JobKind::Cleanup], true), None, "once per turn");
        let busy = table(&[10; 20]);
        assert_eq!(next_job(&busy, &[], &config(), &[], true), Some(Job::Compact), "cleanup comes last");
        assert_eq!(cleanup_due(None, &config()), None, "never cleaned: due now");
        assert_eq!(cleanup_due(Some(Duration::from_secs(20)), &config()), Some(Duration::from_secs(40)));
        assert_eq!(cleanup_due(Some(Duration::from_secs(60)), &config()), None);
    }
}
