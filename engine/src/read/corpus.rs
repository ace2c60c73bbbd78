//! Full-text search over an index kept as segments, divided among executors.
//!
//! Lance scores a full-text search with BM25 statistics summed over every segment it
//! searches, so searching only some segments changes the scores. A distributed search
//! therefore runs in two phases: every executor reports the [`statistics`] of the
//! segments it owns for the query's terms, the query node adds them up
//! ([`add_statistics`]), and every executor then searches only its own segments, scoring
//! with the sums ([`restrict_to_owned_segments`], lance's `MatchQueryExec` with a base
//! scorer). Scores then equal one process searching every segment, and each executor
//! opens and caches only its share of the index.
//!
//! A segment belongs to the executor whose fragments hold its first live fragment, so its
//! statistics are counted once however its fragments were divided. Only match queries
//! (plain or inside boolean, boost and multi-match queries) over row-granular indexes
//! are divided this way; fuzzy matches, phrases, combined fields and tables with data
//! overlays keep lance's own plan, which searches every segment with a prefilter over
//! the executor's fragments (same scores, no division). The flat-scored tail over
//! fragments no index covers also keeps lance's scorer.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use lance::Dataset;
use lance::index::DatasetIndexInternalExt;
use lance::index::scalar::load_segments;
use lance::io::exec::fts::MatchQueryExec;
use lance::table::format::IndexMetadata;
use lance_index::metrics::NoOpMetricsCollector;
use lance_index::scalar::inverted::query::{try_collect_query_tokens, uses_fuzzy_expansion};
use lance_index::scalar::inverted::{DocumentGranularity, InvertedIndex, MemBM25Scorer, prepare_bm25_query};
use lancefleet_proto::v1::Bm25Stats;

use crate::catalog::facts::{live_fragments, live_fragments_of};
use crate::error::{EngineError, Result};

/// A match leaf of a planned full-text search that may be divided by segment.
struct MatchLeaf<'a> {
    exec: &'a MatchQueryExec,
    column: String,
}

/// The match leaves of `plan` that [`restrict_to_owned_segments`] rewrites.
fn divisible_leaves(plan: &Arc<dyn ExecutionPlan>) -> Vec<MatchLeaf<'_>> {
    let mut leaves = Vec::new();
    collect_leaves(plan, &mut leaves);
    leaves
}

fn collect_leaves<'a>(plan: &'a Arc<dyn ExecutionPlan>, leaves: &mut Vec<MatchLeaf<'a>>) {
    if let Some(exec) = plan.downcast_ref::<MatchQueryExec>()
        && let Some(column) = divisible_column(exec)
    {
        leaves.push(MatchLeaf { exec, column });
    }
    for child in plan.children() {
        collect_leaves(child, leaves);
    }
}

/// The column `exec` searches, when it can be restricted to some segments.
fn divisible_column(exec: &MatchQueryExec) -> Option<String> {
    let query = exec.query();
    let row_granular = query.document_granularity == Some(DocumentGranularity::Row);
    let plain = exec.base_scorer().is_none() && exec.preset_segments().is_none();
    (row_granular && plain && !uses_fuzzy_expansion(exec.params().fuzziness)).then(|| query.column.clone()).flatten()
}

/// The segments of the full-text index on `column` over any of `fragments`, each with
/// whether it is owned here (its first live fragment is one of `fragments`).
async fn segments_over(
    dataset: &Dataset,
    column: &str,
    fragments: &BTreeSet<u64>,
) -> Result<Vec<(IndexMetadata, bool)>> {
    let live = live_fragments(dataset);
    let segments = load_segments(dataset, column, DocumentGranularity::Row).await?.unwrap_or_default();
    Ok(segments
        .into_iter()
        .filter_map(|segment| {
            let covered = live_fragments_of(&segment, &live);
            let here = covered.iter().any(|id| fragments.contains(id));
            let owned = covered.first().is_some_and(|first| fragments.contains(first));
            here.then_some((segment, owned))
        })
        .collect())
}

/// The BM25 statistics, for the terms of every divisible match leaf of `plan`, of the
/// full-text index segments owned by an executor reading `fragments`; one entry per
/// column with owned segments.
pub async fn statistics(dataset: &Dataset, plan: &Arc<dyn ExecutionPlan>, fragments: &[u64]) -> Result<Vec<Bm25Stats>> {
    let fragments = fragments.iter().copied().collect::<BTreeSet<_>>();
    let mut by_column = HashMap::<String, Bm25Stats>::new();
    for leaf in divisible_leaves(plan) {
        let owned = segments_over(dataset, &leaf.column, &fragments)
            .await?
            .into_iter()
            .filter_map(|(segment, owned)| owned.then_some(segment))
            .collect::<Vec<_>>();
        if owned.is_empty() {
            continue;
        }
        let mut indices = Vec::with_capacity(owned.len());
        for segment in &owned {
            indices.push(open_segment(dataset, &leaf.column, segment).await?);
        }
        let mut tokenizer = indices[0].tokenizer();
        let tokens = try_collect_query_tokens(&leaf.exec.query().terms, &mut tokenizer)?;
        let prepared = prepare_bm25_query(&indices, tokens, leaf.exec.params(), None, None).await?;
        let scorer = prepared.scorer();
        // Leaves over one column share its corpus counts; their terms add up.
        let entry = by_column.entry(leaf.column.clone()).or_insert_with(|| Bm25Stats {
            column: leaf.column.clone(),
            total_tokens: scorer.total_tokens,
            num_docs: scorer.num_docs as u64,
            token_docs: HashMap::new(),
        });
        for (token, docs) in &scorer.token_docs {
            entry.token_docs.insert(token.clone(), *docs as u64);
        }
    }
    let mut stats = by_column.into_values().collect::<Vec<_>>();
    stats.sort_by(|a, b| a.column.cmp(&b.column));
    Ok(stats)
}

/// Adds `partial` statistics (one list per executor, over disjoint segments) into the
/// statistics of their union, one per column.
pub fn add_statistics(partials: impl IntoIterator<Item = Vec<Bm25Stats>>) -> Vec<Bm25Stats> {
    let mut by_column = HashMap::<String, Bm25Stats>::new();
    for stats in partials.into_iter().flatten() {
        let entry = by_column
            .entry(stats.column.clone())
            .or_insert_with(|| Bm25Stats { column: stats.column.clone(), ..Default::default() });
        entry.total_tokens = entry.total_tokens.saturating_add(stats.total_tokens);
        entry.num_docs = entry.num_docs.saturating_add(stats.num_docs);
        for (token, docs) in stats.token_docs {
            let sum = entry.token_docs.entry(token).or_default();
            *sum = sum.saturating_add(docs);
        }
    }
    let mut stats = by_column.into_values().collect::<Vec<_>>();
    stats.sort_by(|a, b| a.column.cmp(&b.column));
    stats
}

/// Rewrites the divisible match leaves of `plan`, run over `fragments`, to search only
/// the segments over those fragments and score with the corpus statistics `corpus`; a
/// leaf with no such segment answers nothing. Leaves whose column `corpus` lacks are
/// left as lance planned them.
pub async fn restrict_to_owned_segments(
    dataset: &Dataset,
    plan: Arc<dyn ExecutionPlan>,
    fragments: &[u64],
    corpus: &[Bm25Stats],
) -> Result<Arc<dyn ExecutionPlan>> {
    let fragments = fragments.iter().copied().collect::<BTreeSet<_>>();
    let mut segments = HashMap::new();
    for leaf in divisible_leaves(&plan) {
        if corpus.iter().any(|stats| stats.column == leaf.column) && !segments.contains_key(&leaf.column) {
            let over = segments_over(dataset, &leaf.column, &fragments).await?;
            segments.insert(leaf.column.clone(), over.into_iter().map(|(segment, _)| segment).collect::<Vec<_>>());
        }
    }
    let scorers = corpus
        .iter()
        .map(|stats| {
            let token_docs = stats.token_docs.iter().map(|(token, docs)| (token.clone(), to_usize(*docs))).collect();
            let scorer = MemBM25Scorer::new(stats.total_tokens, to_usize(stats.num_docs), token_docs);
            (stats.column.clone(), Arc::new(scorer))
        })
        .collect::<HashMap<_, _>>();
    let rewritten = plan
        .transform_up(|node| {
            let Some(exec) = node.downcast_ref::<MatchQueryExec>() else { return Ok(Transformed::no(node)) };
            let Some(column) = divisible_column(exec) else { return Ok(Transformed::no(node)) };
            let (Some(segments), Some(scorer)) = (segments.get(&column), scorers.get(&column)) else {
                return Ok(Transformed::no(node));
            };
            if segments.is_empty() {
                return Ok(Transformed::yes(Arc::new(EmptyExec::new(exec.schema())) as Arc<dyn ExecutionPlan>));
            }
            let restricted = MatchQueryExec::new_with_segments_and_document_granularity(
                exec.dataset().clone(),
                exec.query().clone(),
                exec.params().clone(),
                exec.prefilter_source().clone(),
                segments.clone(),
                DocumentGranularity::Row,
            )
            .with_base_scorer(scorer.clone());
            Ok(Transformed::yes(Arc::new(restricted) as Arc<dyn ExecutionPlan>))
        })
        .map_err(lance::Error::from)?;
    Ok(rewritten.data)
}

async fn open_segment(dataset: &Dataset, column: &str, segment: &IndexMetadata) -> Result<Arc<InvertedIndex>> {
    let index = dataset.open_scalar_index(column, &segment.uuid, &NoOpMetricsCollector).await?;
    let inverted = index.as_any().downcast_ref::<InvertedIndex>().ok_or_else(|| {
        EngineError::internal(format!(
            "the full-text index segment {} on {column} is not an inverted index",
            segment.uuid
        ))
    })?;
    Ok(Arc::new(inverted.clone()))
}

fn to_usize(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Float32Array, Int64Array, RecordBatch, RecordBatchIterator, StringArray};
    use arrow_schema::{DataType, Field, Schema};
    use lance::dataset::WriteParams;
    use lance_index::scalar::inverted::query::{FtsQuery, MatchQuery};
    use lancefleet_proto::v1::FragmentQuery;

    use super::*;
    use crate::catalog::facts::full_text_groups;
    use crate::maintenance::index_spec::IndexSpec;
    use crate::maintenance::optimize_indexes;
    use crate::read::execute::{Scope, execute_collect, full_text_stats};
    use crate::read::wire::full_text_to_wire;

    fn stats(column: &str, total_tokens: u64, num_docs: u64, tokens: &[(&str, u64)]) -> Bm25Stats {
        let token_docs = tokens.iter().map(|(token, docs)| (token.to_string(), *docs)).collect();
        Bm25Stats { column: column.into(), total_tokens, num_docs, token_docs }
    }

    #[test]
    fn statistics_of_disjoint_segments_add_up_by_column() {
        let summed = add_statistics([
            vec![stats("text", 100, 10, &[("lance", 3), ("fleet", 1)])],
            vec![],
            vec![stats("text", 50, 5, &[("lance", 2), ("fleet", 0)]), stats("title", 7, 2, &[("lance", 1)])],
        ]);
        assert_eq!(
            summed,
            vec![stats("text", 150, 15, &[("lance", 5), ("fleet", 1)]), stats("title", 7, 2, &[("lance", 1)])]
        );
    }

    /// 6 fragments of 100 documents of 1 to 12 words from a skewed vocabulary, with a
    /// full-text index built whole.
    async fn text_table(dir: &std::path::Path) -> Dataset {
        const WORDS: [&str; 8] = ["lance", "fleet", "vector", "search", "index", "segment", "cache", "query"];
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("text", DataType::Utf8, false),
        ]));
        let texts = (0..600u64)
            .map(|id| {
                let length = 1 + (id * 7919 % 12) as usize;
                let words = (0..length).map(|at| WORDS[((id * 31 + at as u64 * 17) % 97 % 8) as usize]);
                words.collect::<Vec<_>>().join(" ")
            })
            .collect::<Vec<_>>();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from_iter_values(0..600)), Arc::new(StringArray::from(texts))],
        )
        .expect("batch");
        let params = WriteParams { max_rows_per_file: 100, ..WriteParams::default() };
        let uri = dir.to_str().expect("utf-8 path");
        let mut dataset = Dataset::write(RecordBatchIterator::new([Ok(batch)], schema.clone()), uri, Some(params))
            .await
            .expect("written");
        let spec = serde_json::json!({"column": "text", "index_type": "FTS"});
        IndexSpec::resolve(&spec, &schema).expect("valid spec").build(&mut dataset).await.expect("indexed");
        dataset
    }

    /// (id, score) of `output`'s rows.
    fn scored(output: &crate::QueryOutput) -> Vec<(i64, f32)> {
        let mut rows = Vec::new();
        for batch in &output.batches {
            let ids = batch.column_by_name("id").expect("id");
            let ids = ids.as_any().downcast_ref::<Int64Array>().expect("int64");
            let scores = batch.column_by_name("_score").expect("_score");
            let scores = scores.as_any().downcast_ref::<Float32Array>().expect("float32");
            rows.extend(ids.values().iter().copied().zip(scores.values().iter().copied()));
        }
        rows
    }

    #[tokio::test]
    async fn segments_searched_apart_with_corpus_statistics_score_as_one_index() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut dataset = text_table(dir.path()).await;
        assert!(!full_text_groups(&dataset).await.expect("groups").segmented, "built whole");
        assert!(optimize_indexes(&mut dataset, vec!["text_idx".into()], None, Some(200), true).await.expect("rebuilt"));
        let groups = full_text_groups(&dataset).await.expect("groups");
        assert!(groups.segmented);
        assert_eq!(groups.colocate, vec![vec![0, 1], vec![2, 3], vec![4, 5]]);

        let matched = MatchQuery::new("lance segment cache".into()).with_column(Some("text".into()));
        let query = FragmentQuery {
            full_text: Some(full_text_to_wire(&FtsQuery::Match(matched))),
            limit: Some(600),
            with_row_id: true,
            ..FragmentQuery::default()
        };
        let mut whole = scored(&execute_collect(&dataset, Scope::WholeTable, &query).await.expect("searched"));
        assert!(whole.len() > 100, "the terms are common: {}", whole.len());

        let mut partials = Vec::new();
        for group in &groups.colocate {
            partials.push(full_text_stats(&dataset, Scope::Fragments(group), &query).await.expect("stats"));
        }
        let corpus_stats = add_statistics(partials);
        let divided = FragmentQuery { corpus_stats, ..query };
        let mut merged = Vec::new();
        for group in &groups.colocate {
            let output = execute_collect(&dataset, Scope::Fragments(group), &divided).await.expect("searched");
            merged.extend(scored(&output));
        }
        let by_id = |rows: &mut Vec<(i64, f32)>| rows.sort_by_key(|(id, _)| *id);
        by_id(&mut whole);
        by_id(&mut merged);
        assert_eq!(whole.len(), merged.len());
        for ((id, score), (merged_id, merged_score)) in whole.iter().zip(&merged) {
            assert_eq!(id, merged_id);
            assert!((score - merged_score).abs() <= 1e-6 * score.abs().max(1.0), "row {id}: {score} vs {merged_score}");
        }

        // The statistics sent are the ones scored with.
        let mut corpus_stats = divided.corpus_stats.clone();
        corpus_stats[0].num_docs *= 10;
        let local = FragmentQuery { corpus_stats, ..divided };
        let mut skewed =
            scored(&execute_collect(&dataset, Scope::Fragments(&groups.colocate[0]), &local).await.expect("searched"));
        by_id(&mut skewed);
        let expected = merged.iter().filter(|(id, _)| *id < 200).collect::<Vec<_>>();
        assert_eq!(skewed.len(), expected.len());
        assert!(skewed.iter().zip(&expected).any(|((_, a), (_, b))| (a - b).abs() > 1e-3), "the statistics are used");
    }
}
