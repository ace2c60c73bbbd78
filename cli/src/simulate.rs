//! `lancefleet simulate-placement`: the cluster's own placement code on a fleet larger than
//! any test machine, for sizing one. Units (tail fragments and vector index segments, each
//! placed as one key) are spread over executors by [`Placement`]; the report gives the
//! balance of first choices, the share of units that move when one executor joins or
//! leaves, and the cache hit ratio of a Zipf-distributed stream of unit reads, each sent
//! to its unit's first choice, with a cache of the memory tier's kind (foyer, S3-FIFO)
//! holding a given number of units per executor.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use foyer::{Cache, CacheBuilder, S3FifoConfig};
use lancefleet_common::config::ClusterConfig;
use lancefleet_common::placement::{Placement, balance};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Zipf};

/// Flags of `simulate-placement`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// Plan executors.
    #[arg(long, default_value_t = 1000)]
    executors: usize,
    /// Placed units (tail fragments and index segments).
    #[arg(long, default_value_t = 1_000_000)]
    units: u64,
    /// Units per table (a table's units are balanced together at query time).
    #[arg(long, default_value_t = 1000)]
    units_per_table: u64,
    /// Executors per unit's preference list (`cluster.replicas`).
    #[arg(long, default_value_t = ClusterConfig::default().replicas)]
    replicas: usize,
    /// Ring points per executor (`cluster.virtual_nodes`).
    #[arg(long, default_value_t = ClusterConfig::default().virtual_nodes)]
    virtual_nodes: u32,
    /// Cache sizes to simulate, in units per executor.
    #[arg(long, value_delimiter = ',', default_values_t = [100, 250, 500, 1000])]
    cache_units: Vec<usize>,
    /// Exponent of the Zipf distribution of unit reads (0: uniform).
    #[arg(long, default_value_t = 1.0)]
    zipf: f64,
    /// Unit reads simulated (the first half warms the caches, the second is counted).
    #[arg(long, default_value_t = 2_000_000)]
    reads: u64,
    /// Seed of the read stream.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

/// How evenly units spread: units per executor relative to the mean.
#[derive(Debug, serde::Serialize)]
struct Balance {
    mean: f64,
    max_over_mean: f64,
    min_over_mean: f64,
    /// Coefficient of variation (standard deviation ÷ mean).
    cv: f64,
}

/// Runs the simulation and prints its report as JSON.
pub fn run(args: &SimulateArgs) -> Result<(), Box<dyn std::error::Error>> {
    if args.executors == 0 || args.units == 0 || args.units_per_table == 0 {
        return Err("--executors, --units and --units-per-table must be at least 1".into());
    }
    let started = Instant::now();
    let ids = (0..args.executors).map(|index| format!("executor-{index:05}")).collect::<Vec<_>>();
    let placement = Placement::new(&ids, args.virtual_nodes, args.replicas);
    let lists = (0..args.units).map(|unit| list_of(&placement, args, unit)).collect::<Vec<_>>();
    let first = |lists: &[Vec<Arc<str>>]| lists.iter().map(|list| list[0].clone()).collect::<Vec<_>>();
    let ring_choice = first(&lists);
    let balanced = balanced_choice(&lists, args);

    let joined = Placement::new(
        ids.iter().cloned().chain([format!("executor-{:05}", args.executors)]),
        args.virtual_nodes,
        args.replicas,
    );
    let left = Placement::new(&ids[1..], args.virtual_nodes, args.replicas);
    let moved = |other: &Placement| {
        let (first_moved, set_moved) = (0..args.units).fold((0u64, 0u64), |(first, set), unit| {
            let (before, after) = (&lists[unit as usize], list_of(other, args, unit));
            let mut sorted = (before.clone(), after.clone());
            sorted.0.sort();
            sorted.1.sort();
            (first + u64::from(before[0] != after[0]), set + u64::from(sorted.0 != sorted.1))
        });
        serde_json::json!({
            "first_choice_moved": first_moved as f64 / args.units as f64,
            "replica_set_changed": set_moved as f64 / args.units as f64,
        })
    };
    let caches = args
        .cache_units
        .iter()
        .map(|&capacity| cache_run(&ring_choice, &ids, capacity, args).map(|ratios| (capacity, ratios)))
        .collect::<Result<Vec<_>, _>>()?;

    let report = serde_json::json!({
        "executors": args.executors,
        "units": args.units,
        "units_per_table": args.units_per_table,
        "replicas": args.replicas,
        "virtual_nodes": args.virtual_nodes,
        "balance_ring": balance_of(&ring_choice, &ids),
        "balance_per_table_bounded": balance_of(&balanced, &ids),
        "executor_joins": { "ideal": 1.0 / (args.executors + 1) as f64, "measured": moved(&joined) },
        "executor_leaves": { "ideal": 1.0 / args.executors as f64, "measured": moved(&left) },
        "zipf": args.zipf,
        "cache_hit_ratio": caches.iter().map(|(capacity, ratios)| serde_json::json!({
            "units_per_executor": capacity,
            "reads_counted": ratios.counted,
            "placed": ratios.placed,
            "unplaced_same_cache_each": ratios.unplaced,
            "one_cache_of_the_fleets_size": ratios.pooled,
        })).collect::<Vec<_>>(),
        "seconds": started.elapsed().as_secs_f64(),
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// The preference list of `unit` (fragment `unit % units_per_table` of table `unit / units_per_table`).
fn list_of(placement: &Placement, args: &SimulateArgs, unit: u64) -> Vec<Arc<str>> {
    placement.preference_list(&format!("table-{}", unit / args.units_per_table), unit % args.units_per_table)
}

/// First choices when a query reads each table whole, its units balanced together
/// (what a query node does with a scatter's units).
fn balanced_choice(lists: &[Vec<Arc<str>>], args: &SimulateArgs) -> Vec<Arc<str>> {
    let mut chosen = Vec::with_capacity(lists.len());
    for table in lists.chunks(args.units_per_table as usize) {
        let mut by_unit =
            table.iter().cloned().enumerate().map(|(unit, list)| (unit as u64, list)).collect::<BTreeMap<_, _>>();
        balance(&mut by_unit, args.executors);
        chosen.extend(by_unit.into_values().map(|list| list[0].clone()));
    }
    chosen
}

/// The balance of `choice` (an executor per unit) over `ids`.
fn balance_of(choice: &[Arc<str>], ids: &[String]) -> Balance {
    let mut counts = ids.iter().map(|id| (id.as_str(), 0u64)).collect::<BTreeMap<_, _>>();
    for node in choice {
        if let Some(count) = counts.get_mut(&**node) {
            *count += 1;
        }
    }
    let mean = choice.len() as f64 / ids.len() as f64;
    let max = counts.values().copied().max().unwrap_or(0) as f64;
    let min = counts.values().copied().min().unwrap_or(0) as f64;
    let variance = counts.values().map(|count| (*count as f64 - mean).powi(2)).sum::<f64>() / ids.len() as f64;
    Balance { mean, max_over_mean: max / mean, min_over_mean: min / mean, cv: variance.sqrt() / mean }
}

/// Hit ratios of one cache size, of the reads counted (the second half) that were not a
/// unit's first read: a finite stream's first reads miss in any cache, and a fleet's
/// cache lives far longer than the stream.
struct HitRatios {
    /// Each read sent to its unit's first choice, `capacity` units cached per executor.
    placed: f64,
    /// Each read sent to any executor (no placement): every executor's cache sees the whole
    /// stream, so the fleet caches what one executor can.
    unplaced: f64,
    /// One cache of `capacity × executors` units, the bound placement aims at.
    pooled: f64,
    /// The reads counted.
    counted: u64,
}

/// Replays the Zipf read stream against per-executor caches of `capacity` units.
fn cache_run(
    choice: &[Arc<str>],
    ids: &[String],
    capacity: usize,
    args: &SimulateArgs,
) -> Result<HitRatios, Box<dyn std::error::Error>> {
    let cache = |units: usize| -> Cache<u64, ()> {
        CacheBuilder::new(units.max(1)).with_shards(1).with_eviction_config(S3FifoConfig::default()).build()
    };
    let index = ids.iter().enumerate().map(|(position, id)| (id.as_str(), position)).collect::<BTreeMap<_, _>>();
    let per_executor = ids.iter().map(|_| cache(capacity)).collect::<Vec<_>>();
    let (one, pooled) = (cache(capacity), cache(capacity.saturating_mul(ids.len())));
    let zipf = Zipf::new(args.units as f64, args.zipf)?;
    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut hits = [0u64; 3];
    let counted_from = args.reads / 2;
    let mut seen = vec![false; usize::try_from(args.units)?];
    let mut first_reads = 0u64;
    for read in 0..args.reads {
        let unit = (zipf.sample(&mut rng) as u64).clamp(1, args.units) - 1;
        let first_read = !std::mem::replace(&mut seen[unit as usize], true);
        if first_read && read >= counted_from {
            first_reads += 1;
        }
        let executor = index.get(&*choice[unit as usize]).copied().unwrap_or(0);
        for (slot, cache) in [&per_executor[executor], &one, &pooled].into_iter().enumerate() {
            let hit = cache.get(&unit).is_some();
            if !hit {
                cache.insert(unit, ());
            }
            if read >= counted_from {
                hits[slot] += u64::from(hit);
            }
        }
    }
    let counted = args.reads - counted_from - first_reads;
    let ratio = |hits: u64| hits as f64 / counted.max(1) as f64;
    Ok(HitRatios { placed: ratio(hits[0]), unplaced: ratio(hits[1]), pooled: ratio(hits[2]), counted })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Command {
        #[command(flatten)]
        args: SimulateArgs,
    }

    #[test]
    fn placement_spreads_units_and_caches_pool_across_executors() {
        let args = Command::parse_from(["x", "--executors", "20", "--units", "20000", "--reads", "200000"]).args;
        let ids = (0..args.executors).map(|index| format!("executor-{index:05}")).collect::<Vec<_>>();
        let placement = Placement::new(&ids, args.virtual_nodes, args.replicas);
        let lists = (0..args.units).map(|unit| list_of(&placement, &args, unit)).collect::<Vec<_>>();
        let ring = lists.iter().map(|list| list[0].clone()).collect::<Vec<_>>();
        let spread = balance_of(&ring, &ids);
        assert!(spread.max_over_mean < 1.5 && spread.min_over_mean > 0.5, "{spread:?}");
        let bounded = balance_of(&balanced_choice(&lists, &args), &ids);
        assert!(bounded.max_over_mean <= 1.26 && bounded.cv < spread.cv, "{bounded:?} vs {spread:?}");

        let ratios = cache_run(&ring, &ids, 100, &args).expect("simulated");
        assert!(
            ratios.placed > ratios.unplaced + 0.1,
            "placement pools the caches: {} vs {}",
            ratios.placed,
            ratios.unplaced
        );
        assert!(ratios.placed <= ratios.pooled + 0.05, "no better than one cache of the fleet's size");
    }
}
