//! `explain_plan` and `analyze_plan`: the distributed plan of a query as text — which
//! executors run which fragments, how their answers merge, and lance's plan (or its
//! analyzed run, with timings and cache reads) of the fragment query on each.

use std::fmt::Write;

use lancefleet_engine::read::execute::{analyze, explain};
use lancefleet_engine::read::plan::MergeOrder;
use lancefleet_engine::{Catalog, QueryPlan, Scope};
use lancefleet_proto::v1::AnalyzeReply;

use super::{Dispatcher, Pinned, Spread};
use crate::error::ApiError;

impl Dispatcher {
    /// The plan of `plan` over `pinned`, without running it.
    pub async fn explain(&self, pinned: Pinned<'_>, plan: &QueryPlan, verbose: bool) -> Result<String, ApiError> {
        let fragments = pinned.fragment_ids();
        let mut text = header(self, pinned, plan, fragments.len());
        for (index, part) in plan.parts.iter().enumerate() {
            let placed = match self {
                Self::Cluster(cluster) if !fragments.is_empty() => {
                    cluster.placement(pinned.uri, Spread::of(plan, &fragments))?.into_iter().collect::<Vec<_>>()
                }
                Self::Cluster(_) | Self::Local => Vec::new(),
            };
            let _ = writeln!(text, "Part {index}: {}", where_part_runs(self, plan, placed.len()));
            for (node, ids) in &placed {
                let scope = if plan.splits { format!("fragments {ids:?}") } else { "the whole version".into() };
                let _ = writeln!(text, "  executor {node}: {scope}");
            }
            // Lance's plan as the first executor (or this process) would run it.
            let scope = match placed.first() {
                Some((_, ids)) if plan.splits => Scope::Fragments(ids),
                _ => Scope::WholeTable,
            };
            let lance_plan = explain(pinned.dataset, scope, part, verbose).await?;
            let _ = writeln!(text, "  lance plan of the fragment query:\n{}", indent(&lance_plan, 4));
        }
        Ok(text)
    }

    /// Runs `plan` over `pinned` and reports how each executor's share went.
    pub async fn analyze(&self, pinned: Pinned<'_>, plan: &QueryPlan, catalog: &Catalog) -> Result<String, ApiError> {
        let fragments = pinned.fragment_ids();
        let mut text = header(self, pinned, plan, fragments.len());
        for (index, part) in plan.parts.iter().enumerate() {
            match self {
                Self::Cluster(cluster) if !fragments.is_empty() => {
                    let spread = Spread::of(plan, &fragments);
                    let part = cluster.divided(pinned, spread, plan, part).await?;
                    let runs = cluster.scatter_analyze(pinned, spread, &part).await?;
                    let _ = writeln!(text, "Part {index}: {}", where_part_runs(self, plan, runs.len()));
                    for (node, ids, run) in runs {
                        let scope = if plan.splits { format!("fragments {ids:?}") } else { "the whole version".into() };
                        let _ = writeln!(text, "  executor {node}: {scope}; {}", describe_run(&run));
                    }
                }
                Self::Cluster(_) | Self::Local => {
                    let run = analyze(catalog, pinned.dataset, Scope::WholeTable, part).await?;
                    let _ = writeln!(text, "Part {index}: {}; {}", where_part_runs(self, plan, 1), describe_run(&run));
                }
            }
        }
        Ok(text)
    }
}

/// The table, version and merge of a plan.
fn header(dispatcher: &Dispatcher, pinned: Pinned<'_>, plan: &QueryPlan, fragments: usize) -> String {
    let merge = &plan.merge;
    let order = match merge.order {
        MergeOrder::Distance => "by _distance ascending, then _rowid",
        MergeOrder::Score => "by _score descending, then _rowid",
        MergeOrder::Manifest => "in manifest order (fragment position, row offset)",
        MergeOrder::Sorted => "by the order_by columns, then manifest order",
        MergeOrder::AsReturned => "as the one executor returned them",
    };
    let limit = merge.limit.map_or_else(|| "all".to_string(), |limit| limit.to_string());
    let mut text = format!(
        "LanceFleet plan: {} version {}, {fragments} fragments, {} part(s)\nMerge: rows {order}; skip {}, keep {limit}{}\n",
        pinned.uri,
        pinned.dataset.version().version,
        plan.parts.len(),
        merge.offset,
        if plan.query_index { "; query_index prepended per query vector" } else { "" },
    );
    if plan.parts.len() > 1 {
        text.push_str("Parts run concurrently, one per query vector.\n");
    }
    let why = if plan.parts.iter().any(|part| part.full_text.is_some()) {
        "one full-text index segment, or not covered by every full-text index"
    } else if plan.parts.iter().any(|part| part.nearest.is_some()) {
        "one vector index segment"
    } else {
        "one scalar index segment"
    };
    for group in &plan.colocate {
        let _ = writeln!(text, "Fragments {group:?} ({why}) are searched together, by one executor");
    }
    if plan.divide_full_text && matches!(dispatcher, Dispatcher::Cluster(_)) {
        text.push_str(
            "Full-text index segments: executors first report their segments' BM25 statistics, then each \
             searches only its own segments, scored with the sums\n",
        );
    }
    text
}

fn where_part_runs(dispatcher: &Dispatcher, plan: &QueryPlan, executors: usize) -> String {
    match (dispatcher, plan.splits) {
        (Dispatcher::Local, _) => "in this process over every fragment".into(),
        (Dispatcher::Cluster(_), true) => format!("split by fragment over {executors} executor(s)"),
        (Dispatcher::Cluster(_), false) => "on one executor over the whole version (a post-filtered search)".into(),
    }
}

/// One analyzed run: time, cache reads, then lance's analyzed plan indented below.
fn describe_run(run: &AnalyzeReply) -> String {
    format!(
        "{} ms; cache: {} chunk reads hit, {} fetched\n{}",
        run.elapsed_ms,
        run.cache_hits,
        run.cache_misses,
        indent(&run.plan, 4)
    )
}

fn indent(text: &str, spaces: usize) -> String {
    let pad = " ".repeat(spaces);
    text.lines().map(|line| format!("{pad}{line}")).collect::<Vec<_>>().join("\n")
}
