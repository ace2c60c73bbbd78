//! When a table needs which maintenance: a pure function of the table's facts, its
//! pending index requests and the configuration, so the rules are unit tested without
//! storage. One job at a time; the worker re-reads the table after each commit and asks
//! again.

use std::time::Duration;

use lancefleet_common::config::IndexerConfig;
use lancefleet_common::events::IndexRequest;
use lancefleet_engine::catalog::facts::{IndexFacts, TableFacts};

/// The kinds of job, for metrics and for skipping a kind that found nothing to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobKind {
    /// Build an index a client asked for.
    RequestedIndex,
    /// Build an index the configuration asks for.
    AutoIndex,
    /// Rewrite small fragments.
    Compaction,
    /// Rewrite large fragments into smaller ones for the fleet to share.
    Split,
    /// Add new rows to indexes, or merge their segments.
    OptimizeIndexes,
    /// Remove old versions.
    Cleanup,
}

impl JobKind {
    /// Every kind.
    pub const ALL: [JobKind; 6] =
        [Self::RequestedIndex, Self::AutoIndex, Self::Compaction, Self::Split, Self::OptimizeIndexes, Self::Cleanup];

    /// The kind's name in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RequestedIndex => "requested_index",
            Self::AutoIndex => "auto_index",
            Self::Compaction => "compaction",
            Self::Split => "split_fragments",
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
    /// Compact fragments smaller than `target_rows` and fragments with many deletions.
    Compact {
        /// Rows per fragment compaction aims at ([`FragmentTargets`]).
        target_rows: u64,
    },
    /// Rewrite fragments of at least twice `target_rows` rows into fragments of
    /// `target_rows`, so that more executors share the table.
    Split {
        /// Rows per fragment ([`FragmentTargets`]).
        target_rows: u64,
    },
    /// Index new rows, merge small segments, or rebuild a vector index as segments.
    Optimize(Optimize),
    /// Remove versions older than the retention.
    Cleanup,
}

impl Job {
    /// Its kind.
    pub fn kind(&self) -> JobKind {
        match self {
            Self::BuildRequested(_) => JobKind::RequestedIndex,
            Self::BuildAuto { .. } => JobKind::AutoIndex,
            Self::Compact { .. } => JobKind::Compaction,
            Self::Split { .. } => JobKind::Split,
            Self::Optimize(_) => JobKind::OptimizeIndexes,
            Self::Cleanup => JobKind::Cleanup,
        }
    }
}

/// An index optimization: lance's `optimize_indices` over some of a table's indexes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Optimize {
    /// The indexes it optimizes: the vector indexes, or all others (each kind is split
    /// into segments differently, and a job is one commit).
    pub indexes: Vec<String>,
    /// Merge the newest this many segments (with the new rows); `None` only adds the new
    /// rows, as a new segment.
    pub merge: Option<usize>,
    /// Rows per output segment; `None`: no bound (a merge makes one segment).
    pub segment_rows: Option<u64>,
    /// Rebuild the index whole, as segments of `segment_rows` (a vector index trained
    /// again).
    pub retrain: bool,
}

/// The next job for a table served by `executors` plan executors (0: none, queries run
/// in-process), in priority order: what clients asked for, then compaction (so indexes
/// are built and extended over fewer, larger fragments), splitting fragments too large
/// for the fleet to share, automatic indexes, index optimization, and cleanup when it is
/// `cleanup_due` (see [`cleanup_due`]). Kinds in `skip` found nothing to do earlier in
/// this turn and are not planned again.
pub fn next_job(
    facts: &TableFacts,
    requests: &[IndexRequest],
    config: &IndexerConfig,
    executors: usize,
    skip: &[JobKind],
    cleanup_due: bool,
) -> Option<Job> {
    let allowed = |kind: JobKind| !skip.contains(&kind);
    if allowed(JobKind::RequestedIndex)
        && let Some(request) = requests.first()
    {
        return Some(Job::BuildRequested(request.clone()));
    }
    let targets = FragmentTargets::of(facts, config, executors);
    let small = facts.small_fragments(targets.compact);
    if allowed(JobKind::Compaction)
        && ((small >= config.compact_min_small_fragments.max(2)) || facts.fragments_with_many_deletions > 0)
    {
        return Some(Job::Compact { target_rows: targets.compact });
    }
    let slots = executors.saturating_mul(config.fragments_per_executor);
    if allowed(JobKind::Split)
        && facts.fragment_rows.len() < slots
        && facts.fragment_rows.iter().any(|rows| *rows >= targets.split.saturating_mul(2))
    {
        return Some(Job::Split { target_rows: targets.split });
    }
    if allowed(JobKind::AutoIndex)
        && let Some(job) = auto_index(facts, config)
    {
        return Some(job);
    }
    if allowed(JobKind::OptimizeIndexes)
        && let Some(job) = [IndexClass::Vector, IndexClass::Segmented, IndexClass::Other]
            .into_iter()
            .find_map(|class| optimize(facts, config, class))
    {
        return Some(Job::Optimize(job));
    }
    if allowed(JobKind::Cleanup) && cleanup_due {
        return Some(Job::Cleanup);
    }
    None
}

/// The fragment sizes a table served by `executors` plan executors is kept at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentTargets {
    /// Fragments with fewer rows are small, and compaction aims at this size.
    pub compact: u64,
    /// Fragments of at least twice this many rows are split into fragments of this size
    /// while the table has fewer fragments than the fleet should share.
    pub split: u64,
}

impl FragmentTargets {
    /// Its sizes: without executors, `target_rows_per_fragment` to compact at and no
    /// split; with them, fragments of the table's share (its rows ÷ (executors ×
    /// `fragments_per_executor`), at least `min_fragment_rows`, at most
    /// `target_rows_per_fragment`) to split into, and half a share to compact under.
    ///
    /// A split writes fragments of at least one share and compaction merges only those
    /// under half a share (into fragments under a share), so the two never undo each
    /// other: split fragments are merged again once the table has doubled, and a fleet
    /// that changes by less than half leaves the layout alone.
    pub fn of(facts: &TableFacts, config: &IndexerConfig, executors: usize) -> Self {
        let target = u64::try_from(config.target_rows_per_fragment).unwrap_or(u64::MAX);
        let slots = u64::try_from(executors.saturating_mul(config.fragments_per_executor)).unwrap_or(u64::MAX);
        if slots == 0 {
            return Self { compact: target, split: u64::MAX };
        }
        // Rounded down: lance splits `rows` into ⌊rows ÷ share⌋ fragments, all of `slots`.
        let share = (facts.rows / slots).max(config.min_fragment_rows);
        Self { compact: target.min(share / 2).max(1), split: target.min(share) }
    }
}

/// Index kinds other than vector ones that lance merges by segment, so that they can be
/// kept as segments (lance's split optimize; `lance::index::optimize`).
const SEGMENTED_KINDS: [&str; 4] = ["inverted", "btree", "bitmap", "ngram"];

/// The kinds of index one optimization covers: each kind is split into segments
/// differently, and an optimization is one commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IndexClass {
    Vector,
    /// Full-text and scalar kinds kept as segments.
    Segmented,
    Other,
}

impl IndexClass {
    fn of(index: &IndexFacts) -> Self {
        if index.is_vector {
            Self::Vector
        } else if SEGMENTED_KINDS.iter().any(|kind| index.index_type.eq_ignore_ascii_case(kind)) {
            Self::Segmented
        } else {
            Self::Other
        }
    }

    /// Rows per segment the indexes of this class are kept at; `None`: not segmented.
    fn segment_rows(self, config: &IndexerConfig) -> Option<u64> {
        let rows = match self {
            Self::Vector => config.vector_segment_rows,
            Self::Segmented => config.index_segment_rows,
            Self::Other => 0,
        };
        (rows > 0).then_some(rows)
    }
}

/// The optimization the table's indexes of `class` need:
/// - a vector, full-text or segmented scalar index with a segment of more than twice its
///   segment rows (`vector_segment_rows`, `index_segment_rows`) over several fragments
///   (built as one segment, or by LanceDB) is rebuilt as segments of that size (a vector
///   index trained again);
/// - an index with more than `max_index_segments` small segments (under half of its
///   segment rows for a segmented index; every segment of the others) has them merged,
///   a segmented index's into segments of at most its segment rows;
/// - an index missing `optimize_min_unindexed_rows` rows gets them as new segments.
///
/// Segments are the unit executors divide index work by, so they are kept near their
/// segment rows; the other kinds (label lists, zone maps, …) stay one segment plus a few
/// deltas, as lance cannot merge them by segment.
fn optimize(facts: &TableFacts, config: &IndexerConfig, class: IndexClass) -> Option<Optimize> {
    let segment_rows = class.segment_rows(config);
    let indexes = facts.indexes.iter().filter(|index| IndexClass::of(index) == class);
    let job = |indexes: Vec<String>, merge, retrain| Optimize { indexes, merge, segment_rows, retrain };
    if let Some(rows) = segment_rows {
        let unsplit = |index: &&IndexFacts| {
            index.segment_sizes.iter().any(|size| size.fragments > 1 && size.rows > rows.saturating_mul(2))
        };
        if let Some(index) = indexes.clone().find(unsplit) {
            return Some(job(vec![index.name.clone()], None, true));
        }
    }
    let small = |index: &IndexFacts| match segment_rows {
        Some(rows) => index.segment_sizes.iter().filter(|size| size.rows < rows / 2).count(),
        None => index.segments,
    };
    let crowded = indexes.clone().filter(|index| small(index) > config.max_index_segments).collect::<Vec<_>>();
    if let Some(segments) = crowded.iter().map(|index| index.segments).max() {
        return Some(job(crowded.iter().map(|index| index.name.clone()).collect(), Some(segments), false));
    }
    let behind = indexes
        .filter(|index| index.unindexed_rows >= config.optimize_min_unindexed_rows)
        .map(|index| index.name.clone())
        .collect::<Vec<_>>();
    (!behind.is_empty()).then(|| job(behind, None, false))
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
    use lancefleet_engine::catalog::facts::SegmentSize;

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

    /// A vector index of `segments` segments of 1000 rows (one fragment each).
    fn vector_index(unindexed_rows: u64, segments: usize) -> IndexFacts {
        sized_vector_index(unindexed_rows, &vec![1000; segments])
    }

    /// A vector index whose segments have `rows` rows, one fragment per 1000 rows.
    fn sized_vector_index(unindexed_rows: u64, rows: &[u64]) -> IndexFacts {
        IndexFacts {
            name: "vector_idx".into(),
            uuid: "00000000-0000-0000-0000-000000000000".into(),
            column: "vector".into(),
            index_type: "IVF_PQ".into(),
            is_vector: true,
            distance_type: None,
            unindexed_rows,
            indexed_rows: rows.iter().sum(),
            segments: rows.len(),
            segment_sizes: rows
                .iter()
                .map(|&rows| SegmentSize { rows, fragments: rows.div_ceil(1000) as usize })
                .collect(),
            created_at: None,
            index_version: 0,
            type_url: None,
            size_bytes: None,
        }
    }

    fn optimize(indexes: &[&str], merge: Option<usize>, segment_rows: Option<u64>, retrain: bool) -> Option<Job> {
        let indexes = indexes.iter().map(|name| name.to_string()).collect();
        Some(Job::Optimize(Optimize { indexes, merge, segment_rows, retrain }))
    }

    #[test]
    fn a_quiet_table_needs_nothing() {
        assert_eq!(next_job(&table(&[1000, 1000, 10]), &[], &config(), 0, &[], false), None);
    }

    #[test]
    fn client_requests_come_first() {
        let request = IndexRequest { name: "id_idx".into(), spec: serde_json::json!({}), requested_at_ms: 1 };
        let many_small = table(&[10; 20]);
        assert_eq!(
            next_job(&many_small, std::slice::from_ref(&request), &config(), 0, &[], false),
            Some(Job::BuildRequested(request.clone()))
        );
        assert_eq!(
            next_job(&many_small, &[request], &config(), 0, &[JobKind::RequestedIndex], false),
            Some(Job::Compact { target_rows: 1000 })
        );
    }

    #[test]
    fn compaction_starts_at_the_small_fragment_bound_or_at_deletions() {
        assert_eq!(next_job(&table(&[10, 10, 10, 4000]), &[], &config(), 0, &[], false), None, "3 small < 4");
        assert_eq!(
            next_job(&table(&[10, 10, 10, 10, 5000]), &[], &config(), 0, &[], false),
            Some(Job::Compact { target_rows: 1000 })
        );
        let deleted = TableFacts { fragments_with_many_deletions: 1, ..table(&[4000]) };
        assert_eq!(next_job(&deleted, &[], &config(), 0, &[], false), Some(Job::Compact { target_rows: 1000 }));
        assert_eq!(
            next_job(&deleted, &[], &config(), 0, &[JobKind::Compaction], false),
            None,
            "skipped after finding nothing"
        );
    }

    #[test]
    fn a_table_with_fewer_fragments_than_the_fleet_serves_is_split_to_its_share() {
        let config = IndexerConfig {
            target_rows_per_fragment: 1 << 20,
            min_fragment_rows: 10_000,
            auto_index_min_rows: 0,
            ..config()
        };
        let one_fragment = table(&[100_000]);
        let split = |executors| next_job(&one_fragment, &[], &config, executors, &[], false);
        assert_eq!(split(3), Some(Job::Split { target_rows: 16_666 }), "2 fragments for each of 3 executors");
        assert_eq!(split(0), None, "no fleet: queries run in-process");
        assert_eq!(split(1), Some(Job::Split { target_rows: 50_000 }));
        assert_eq!(split(20), Some(Job::Split { target_rows: 10_000 }), "not under min_fragment_rows");
        let off = IndexerConfig { fragments_per_executor: 0, ..config.clone() };
        assert_eq!(next_job(&one_fragment, &[], &off, 3, &[], false), None);
        let big = FragmentTargets::of(&table(&[5 << 20; 4]), &config, 3);
        assert_eq!(big, FragmentTargets { compact: 1 << 20, split: 1 << 20 }, "at most target_rows_per_fragment");

        // What a split leaves (fragments of at least the target) is neither compacted nor
        // split again, on this fleet or one a third smaller or larger.
        let after = table(&[16_667, 16_667, 16_666, 16_667, 16_667, 16_666]);
        for executors in [2, 3, 4] {
            assert_eq!(next_job(&after, &[], &config, executors, &[], false), None, "{executors} executors");
        }
        // Appended rows are compacted among themselves; the split fragments stay whole
        // until the table has doubled.
        let appended = table(&[16_667, 16_667, 16_666, 16_667, 16_667, 16_666, 500, 500, 500, 500]);
        assert_eq!(next_job(&appended, &[], &config, 3, &[], false), Some(Job::Compact { target_rows: 8500 }));
        let doubled = table(&[16_667, 16_667, 16_666, 16_667, 16_667, 16_666, 100_000]);
        assert_eq!(FragmentTargets::of(&doubled, &config, 3).compact, 16_666);
    }

    #[test]
    fn big_tables_get_their_vector_index_then_configured_ones() {
        let big = table(&[3000, 3000]);
        let Some(Job::BuildAuto { column, spec }) = next_job(&big, &[], &config(), 0, &[], false) else {
            panic!("auto index")
        };
        assert_eq!((column.as_str(), spec["index_type"].as_str()), ("vector", Some("IVF_PQ")));
        let with_vector_index = TableFacts { indexes: vec![vector_index(0, 1)], ..big.clone() };
        let Some(Job::BuildAuto { column, .. }) = next_job(&with_vector_index, &[], &config(), 0, &[], false) else {
            panic!("the configured FTS index")
        };
        assert_eq!(column, "text");
        let small = table(&[3000]);
        assert_eq!(next_job(&small, &[], &config(), 0, &[], false), None, "below auto_index_min_rows");
        let disabled = IndexerConfig { auto_index_min_rows: 0, ..config() };
        assert_eq!(next_job(&big, &[], &disabled, 0, &[], false), None);
    }

    #[test]
    fn indexes_are_extended_past_the_threshold_and_merged_past_the_segment_bound() {
        let indexed =
            |unindexed, segments| TableFacts { indexes: vec![vector_index(unindexed, segments)], ..table(&[1000]) };
        let no_auto = IndexerConfig { auto_fts_columns: Vec::new(), vector_segment_rows: 0, ..config() };
        assert_eq!(next_job(&indexed(99, 1), &[], &no_auto, 0, &[], false), None);
        assert_eq!(
            next_job(&indexed(100, 1), &[], &no_auto, 0, &[], false),
            optimize(&["vector_idx"], None, None, false)
        );
        assert_eq!(
            next_job(&indexed(0, 4), &[], &no_auto, 0, &[], false),
            optimize(&["vector_idx"], Some(4), None, false)
        );
    }

    #[test]
    fn vector_indexes_are_kept_as_segments_of_the_configured_size() {
        let config = IndexerConfig { auto_fts_columns: Vec::new(), vector_segment_rows: 4000, ..config() };
        let with = |index: IndexFacts| TableFacts { indexes: vec![index], ..table(&[1000]) };
        let segmented = Some(4000);
        assert_eq!(
            next_job(&with(sized_vector_index(0, &[20_000])), &[], &config, 0, &[], false),
            optimize(&["vector_idx"], None, segmented, true),
            "built as one segment: rebuilt as segments"
        );
        assert_eq!(next_job(&with(sized_vector_index(0, &[8000])), &[], &config, 0, &[], false), None, "within 2x");
        let one_big_fragment = IndexFacts {
            segment_sizes: vec![SegmentSize { rows: 20_000, fragments: 1 }],
            ..sized_vector_index(0, &[20_000])
        };
        assert_eq!(next_job(&with(one_big_fragment), &[], &config, 0, &[], false), None, "a fragment is never split");
        let full = [4000; 10];
        assert_eq!(
            next_job(&with(sized_vector_index(0, &full)), &[], &config, 0, &[], false),
            None,
            "many full segments"
        );
        let deltas = [&full[..], &[1000; 4]].concat();
        assert_eq!(
            next_job(&with(sized_vector_index(0, &deltas)), &[], &config, 0, &[], false),
            optimize(&["vector_idx"], Some(14), segmented, false)
        );
        let three = [&full[..], &[1000; 3]].concat();
        assert_eq!(next_job(&with(sized_vector_index(0, &three)), &[], &config, 0, &[], false), None, "3 small ones");
        assert_eq!(
            next_job(&with(sized_vector_index(500, &full)), &[], &config, 0, &[], false),
            optimize(&["vector_idx"], None, segmented, false),
            "new rows, as segments"
        );
    }

    #[test]
    fn full_text_and_scalar_indexes_are_kept_as_segments_apart_from_vector_ones() {
        let config = IndexerConfig {
            auto_fts_columns: Vec::new(),
            vector_segment_rows: 4000,
            index_segment_rows: 2000,
            ..config()
        };
        let named = |name: &str, index_type: &str, unindexed_rows: u64, rows: &[u64]| IndexFacts {
            name: name.into(),
            column: name.trim_end_matches("_idx").into(),
            index_type: index_type.into(),
            is_vector: false,
            distance_type: None,
            ..sized_vector_index(unindexed_rows, rows)
        };
        let with = |indexes: Vec<IndexFacts>| TableFacts { indexes, ..table(&[1000]) };
        let behind = |vector| {
            with(vec![
                vector_index(vector, 1),
                named("text_idx", "Inverted", 500, &[1000; 2]),
                named("id_idx", "BTree", 500, &[1000; 2]),
                named("tags_idx", "LabelList", 0, &[1000; 2]),
            ])
        };
        assert_eq!(
            next_job(&behind(500), &[], &config, 0, &[], false),
            optimize(&["vector_idx"], None, Some(4000), false)
        );
        assert_eq!(
            next_job(&behind(0), &[], &config, 0, &[], false),
            optimize(&["text_idx", "id_idx"], None, Some(2000), false),
            "new rows as full-text and scalar segments"
        );
        let labels_behind =
            with(vec![named("text_idx", "Inverted", 0, &[1000; 2]), named("tags_idx", "LabelList", 500, &[1000; 2])]);
        assert_eq!(
            next_job(&labels_behind, &[], &config, 0, &[], false),
            optimize(&["tags_idx"], None, None, false),
            "label lists are not segmented"
        );
        let whole = with(vec![named("text_idx", "Inverted", 0, &[6000]), named("id_idx", "BTree", 0, &[1000; 3])]);
        assert_eq!(
            next_job(&whole, &[], &config, 0, &[], false),
            optimize(&["text_idx"], None, Some(2000), true),
            "an index built whole is rebuilt as segments"
        );
        let off = IndexerConfig { index_segment_rows: 0, ..config };
        assert_eq!(next_job(&whole, &[], &off, 0, &[], false), None);
    }

    #[test]
    fn cleanup_runs_when_due_and_at_most_once_per_retention() {
        let quiet = table(&[1000]);
        assert_eq!(next_job(&quiet, &[], &config(), 0, &[], true), Some(Job::Cleanup));
        assert_eq!(next_job(&quiet, &[], &config(), 0, &[JobKind::Cleanup], true), None, "once per turn");
        let busy = table(&[10; 20]);
        assert_eq!(
            next_job(&busy, &[], &config(), 0, &[], true),
            Some(Job::Compact { target_rows: 1000 }),
            "cleanup comes last"
        );
        assert_eq!(cleanup_due(None, &config()), None, "never cleaned: due now");
        assert_eq!(cleanup_due(Some(Duration::from_secs(20)), &config()), Some(Duration::from_secs(40)));
        assert_eq!(cleanup_due(Some(Duration::from_secs(60)), &config()), None);
    }
}
