//! The LanceFleet indexer: follows table change events and keeps tables compacted,
//! indexed and clean, without touching query traffic.
//!
//! At start every table of the root namespace is due once; after that, each change event
//! marks its table due. Up to `indexer.concurrent_tables` tables get a maintenance turn at
//! a time ([`worker::Worker::turn`]), each under the table's lock on the event bus, so
//! several indexers share the tables and never maintain one together. A table whose turn
//! was cut short (a writer's conflicting commit, another indexer holding it, a failure) is
//! due again after `retry_after` (doubling on failures, up to five minutes); an idle
//! table is due again only when it changes, or when a table changed since its last cleanup
//! may be cleaned again (once per retention period). With nothing due the indexer waits
//! on the bus and uses no CPU.

mod error;
mod metrics;
pub mod policy;
mod worker;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use lancefleet_common::cluster_state::{NodeRecord, Role};
use lancefleet_common::config::{IndexerConfig, NodeConfig, Service};
use lancefleet_common::events::{BusUpdate, EventBus, TableEvent, now_ms};
use lancefleet_common::membership::Membership;
use lancefleet_common::storage::StorageRoot;
use lancefleet_common::{NodeContext, Shutdown, StartError};
use lancefleet_engine::{Catalog, Namespace};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

pub use error::IndexerError;
pub use worker::{Turn, TurnEnd};

use crate::metrics::METRICS;
use crate::worker::Worker;

/// Longest wait before retrying a table whose turns keep failing.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How long running turns may finish after a shutdown signal before they are abandoned
/// (an abandoned job commits nothing; lance commits are atomic).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A table waiting for its turn.
#[derive(Debug, Clone, Copy)]
struct Due {
    /// When the turn may start.
    at: Instant,
    /// Commit time of the oldest change not yet handled (ms since the epoch), if any.
    since_ms: Option<u64>,
}

/// What the loop remembers of a table between turns.
#[derive(Debug, Clone, Copy)]
struct Tracked {
    /// The version of its latest change event seen (a resync skips tables it already saw).
    version: u64,
    /// When it last changed (an event arrived).
    changed: Instant,
    /// When a turn that cleaned its old versions started.
    cleaned: Option<Instant>,
}

impl Tracked {
    /// Whether it changed since its last cleanup.
    fn dirty(&self) -> bool {
        self.cleaned.is_none_or(|cleaned| self.changed > cleaned)
    }

    /// How long until it may be cleaned again, when it changed since its last cleanup;
    /// zero when it may be cleaned now.
    fn cleanup_wait(&self, config: &IndexerConfig) -> Option<Duration> {
        self.dirty().then(|| policy::cleanup_due(self.cleaned.map(|at| at.elapsed()), config).unwrap_or_default())
    }
}

/// Runs the `indexer` role until `shutdown`: registers in etcd, serves `/metrics`, and
/// maintains tables as their change events arrive; on shutdown, running turns get a grace
/// period, then the node deregisters.
pub async fn run(config: NodeConfig, shutdown: Shutdown) -> Result<(), IndexerError> {
    config.validate_for(Service::Indexer).map_err(StartError::from)?;
    let context = NodeContext::connect(&config, shutdown.clone()).await?;
    let listen = config.indexer.listen;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| IndexerError::Listen { address: listen.to_string(), source })?;
    let address =
        listener.local_addr().map_err(|source| IndexerError::Listen { address: listen.to_string(), source })?;
    let indexer = Indexer::of(&config, &context, Service::Indexer).await?;
    let holder = indexer.worker.holder.clone();
    let presence =
        context.register(NodeRecord::new(holder.clone(), Role::Indexer, format!("http://{address}"), 0)).await;
    let metrics = tokio::spawn(lancefleet_common::metrics::serve_metrics_on(listener, shutdown.clone()));
    indexer.run(shutdown).await;
    match metrics.await {
        Ok(Err(source)) => tracing::warn!(%source, "the metrics endpoint failed"),
        Err(error) => tracing::warn!(%error, "the metrics endpoint task failed"),
        Ok(Ok(())) => {}
    }
    presence.leave().await;
    tracing::info!(holder, "indexer stopped");
    Ok(())
}

/// Maintains every table once, and every table with a pending change event (`indexer
/// --once`); how many tables could not be maintained.
pub async fn run_once(config: NodeConfig, shutdown: Shutdown) -> Result<usize, IndexerError> {
    config.validate_for(Service::IndexerOnce).map_err(StartError::from)?;
    let context = NodeContext::connect(&config, shutdown.clone()).await?;
    Indexer::of(&config, &context, Service::IndexerOnce).await?.run_once(shutdown).await
}

/// Starts the indexer a `service` process embeds (standalone, unless `indexer.embedded`
/// is off) on `context`'s event bus; `None` when it embeds none. It stops on the
/// context's shutdown signal.
pub async fn start_embedded(
    config: &NodeConfig,
    context: &NodeContext,
    service: Service,
) -> Result<Option<JoinHandle<()>>, IndexerError> {
    if !config.embeds_indexer(service) {
        return Ok(None);
    }
    let indexer = Indexer::of(config, context, service).await?;
    Ok(Some(tokio::spawn(indexer.run(context.shutdown().clone()))))
}

/// An indexer process's maintenance loop.
#[derive(Debug)]
pub struct Indexer {
    worker: Arc<Worker>,
}

impl Indexer {
    /// An indexer maintaining the tables of `catalog` as `config` says, following `bus`,
    /// identified as `holder` in table locks, sizing fragments for the plan executors of
    /// `fleet` (`None`: none).
    pub fn new(
        catalog: Catalog,
        bus: Arc<dyn EventBus>,
        config: IndexerConfig,
        holder: String,
        fleet: Option<Arc<dyn Membership>>,
    ) -> Self {
        Self { worker: Arc::new(Worker { catalog: Arc::new(catalog), bus, config, holder, fleet }) }
    }

    /// The indexer of a `service` process: the tables of `config`'s storage root, read
    /// without the object cache (maintenance reads each byte of what it rewrites once),
    /// following `context`'s event bus and executors, holding table locks under the
    /// node's id.
    async fn of(config: &NodeConfig, context: &NodeContext, service: Service) -> Result<Self, IndexerError> {
        std::sync::LazyLock::force(&METRICS);
        let root = StorageRoot::resolve(&config.storage.root).map_err(StartError::from)?;
        let catalog = Catalog::new(root, &config.storage.options, None);
        let port =
            if service == Service::Standalone { config.rest.listen.port() } else { config.indexer.listen.port() };
        let holder = config.node_id(service, port);
        let fleet = context.executors(&config.cluster).await;
        Ok(Self::new(catalog, context.bus(), config.indexer.clone(), holder, fleet))
    }

    /// Maintains every table of the root namespace once, then tables as their changes
    /// arrive, until `shutdown`.
    pub async fn run(self, shutdown: Shutdown) {
        let mut updates = self.worker.bus.subscribe(shutdown.clone()).await;
        let mut due: HashMap<String, Due> = HashMap::new();
        let mut tracked: HashMap<String, Tracked> = HashMap::new();
        // Tables written while no indexer ran (or by other writers, such as LanceDB OSS)
        // have no pending event: look at each once, cleanup included.
        match self.worker.catalog.list_tables(&Namespace::root()).await {
            Ok(tables) => {
                let now = Instant::now();
                for table in tables {
                    tracked.insert(table.clone(), Tracked { version: 0, changed: now, cleaned: None });
                    due.insert(table, Due { at: now, since_ms: None });
                }
            }
            Err(error) => tracing::warn!(%error, "cannot list the tables; maintaining those that change"),
        }
        let mut running = HashMap::new();
        let mut failures: HashMap<String, u32> = HashMap::new();
        let mut turns = JoinSet::new();
        // The table of each running turn's task, for a turn that panics.
        let mut tasks = HashMap::new();
        let concurrency = self.worker.config.concurrent_tables;
        tracing::info!(holder = %self.worker.holder, concurrency, "indexer is following table changes");
        loop {
            let now = Instant::now();
            let ready = due
                .iter()
                .filter(|(table, entry)| entry.at <= now && !running.contains_key(*table))
                .map(|(table, _)| table.clone())
                .take(concurrency.saturating_sub(running.len()))
                .collect::<Vec<_>>();
            for table in ready {
                due.remove(&table);
                let cleanup_due = tracked
                    .get(&table)
                    .and_then(|state| state.cleanup_wait(&self.worker.config))
                    .is_some_and(|wait| wait.is_zero());
                running.insert(table.clone(), Instant::now());
                let worker = self.worker.clone();
                let name = table.clone();
                let task = turns.spawn(async move {
                    let turn = worker.turn(&name, cleanup_due).await;
                    (name, turn)
                });
                tasks.insert(task.id(), table);
            }
            report_queue(&due);
            let next = due.iter().filter(|(table, _)| !running.contains_key(*table)).map(|(_, entry)| entry.at).min();
            tokio::select! {
                update = updates.recv() => match update {
                    Some(update) => mark_due(&mut due, &mut tracked, update),
                    None => break,
                },
                Some(finished) = turns.join_next_with_id(), if !turns.is_empty() => {
                    // A turn catches its jobs' panics; one outside them fails the turn too.
                    let (table, turn) = match finished {
                        Ok((task, (table, turn))) => {
                            tasks.remove(&task);
                            (table, turn)
                        }
                        Err(error) => match tasks.remove(&error.id()) {
                            Some(table) => (table, Err(IndexerError::Panicked(error.to_string()))),
                            None => continue,
                        },
                    };
                    let started = running.remove(&table).unwrap_or_else(Instant::now);
                    if let Ok(Turn { cleaned: true, .. }) = &turn
                        && let Some(state) = tracked.get_mut(&table)
                    {
                        state.cleaned = Some(started);
                    }
                    self.after_turn(&mut due, &mut tracked, &mut failures, table, turn.map(|turn| turn.end));
                }
                () = sleep_until(next) => {}
                () = shutdown.wait() => break,
            }
        }
        if !turns.is_empty() {
            tracing::info!(tables = turns.len(), "letting running maintenance turns finish");
            if tokio::time::timeout(SHUTDOWN_GRACE, async { while turns.join_next().await.is_some() {} }).await.is_err()
            {
                tracing::warn!("abandoning unfinished maintenance; nothing of it was committed");
                // Not awaited: a job inside lance's CPU-bound work (k-means training) does
                // not stop at once, and the process is leaving anyway.
                turns.abort_all();
                turns.detach_all();
            }
        }
        tracing::info!("indexer stopped");
    }

    /// Schedules a table after its turn.
    fn after_turn(
        &self,
        due: &mut HashMap<String, Due>,
        tracked: &mut HashMap<String, Tracked>,
        failures: &mut HashMap<String, u32>,
        table: String,
        end: Result<TurnEnd, IndexerError>,
    ) {
        let retry = self.worker.config.retry_after;
        let later = |delay: Duration| Due { at: Instant::now() + delay, since_ms: None };
        match end {
            Ok(TurnEnd::Idle) => {
                failures.remove(&table);
                // Changed since its last cleanup: come back when it may be cleaned again.
                if let Some(wait) = tracked.get(&table).and_then(|state| state.cleanup_wait(&self.worker.config)) {
                    due.entry(table).or_insert_with(|| later(wait));
                }
            }
            Ok(TurnEnd::Again) => {
                failures.remove(&table);
                due.entry(table).or_insert_with(|| later(retry));
            }
            Ok(TurnEnd::Gone) => {
                failures.remove(&table);
                tracked.remove(&table);
                METRICS.forget(&table);
            }
            Err(error) => {
                let count = failures.entry(table.clone()).or_insert(0);
                *count = count.saturating_add(1);
                let backoff = retry.saturating_mul(1 << (*count).min(16)).min(MAX_BACKOFF);
                tracing::warn!(table, %error, retry_in_seconds = backoff.as_secs(), "maintenance turn failed");
                due.entry(table).or_insert_with(|| later(backoff));
            }
        }
    }

    /// Maintains every table of the root namespace, and every table with a change on the
    /// bus, once (each until it has nothing left to do, or after a few dropped rounds),
    /// then returns how many turns failed.
    pub async fn run_once(self, shutdown: Shutdown) -> Result<usize, IndexerError> {
        let mut tables = self.worker.catalog.list_tables(&Namespace::root()).await?;
        let mut updates = self.worker.bus.subscribe(shutdown.clone()).await;
        if let Some(BusUpdate::Resync(latest)) = updates.recv().await {
            tables.extend(latest.into_iter().filter(|event| !event.kind.is_maintenance()).map(|event| event.table));
        }
        tables.sort();
        tables.dedup();
        let retry = self.worker.config.retry_after;
        let mut failed = 0;
        // Drawn on a terminal only (a log shipper sees the log lines alone).
        let progress = ProgressBar::new(tables.len() as u64).with_style(
            ProgressStyle::with_template("{spinner} maintaining tables {pos}/{len} {wide_bar} {elapsed} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        for table in tables {
            progress.set_message(table.clone());
            progress.inc(1);
            for attempt in 1..=5 {
                if shutdown.is_triggered() {
                    progress.abandon();
                    return Ok(failed);
                }
                match self.worker.turn(&table, true).await.map(|turn| turn.end) {
                    Ok(TurnEnd::Idle | TurnEnd::Gone) => break,
                    Ok(TurnEnd::Again) if attempt < 5 => tokio::time::sleep(retry).await,
                    Ok(TurnEnd::Again) => tracing::warn!(table, "work left after five turns"),
                    Err(error) => {
                        progress.suspend(|| tracing::error!(table, %error, "maintenance failed"));
                        failed += 1;
                        break;
                    }
                }
            }
        }
        progress.finish_and_clear();
        Ok(failed)
    }
}

/// Marks the tables an update names as changed and due now: maintenance's own changes
/// excepted, and on a resync, tables whose latest change was seen already.
fn mark_due(due: &mut HashMap<String, Due>, tracked: &mut HashMap<String, Tracked>, update: BusUpdate) {
    let (events, resync) = match update {
        BusUpdate::Resync(latest) => (latest, true),
        BusUpdate::Changed(event) => (vec![event], false),
    };
    for TableEvent { table, version, kind, at_ms, .. } in events {
        METRICS.events.inc();
        let seen = tracked.get(&table).is_some_and(|state| state.version == version);
        if kind.is_maintenance() || (resync && seen) {
            continue;
        }
        let now = Instant::now();
        tracked
            .entry(table.clone())
            .and_modify(|state| {
                state.changed = now;
                state.version = version;
            })
            .or_insert(Tracked { version, changed: now, cleaned: None });
        let entry = due.entry(table).or_insert(Due { at: now, since_ms: Some(at_ms) });
        entry.at = entry.at.min(now);
        entry.since_ms = Some(entry.since_ms.map_or(at_ms, |since| since.min(at_ms)));
    }
}

fn report_queue(due: &HashMap<String, Due>) {
    let waiting = due.values().filter_map(|entry| entry.since_ms).collect::<Vec<_>>();
    METRICS.queue_tables.set(i64::try_from(waiting.len()).unwrap_or(i64::MAX));
    let lag_ms = waiting.iter().min().map_or(0, |oldest| now_ms().saturating_sub(*oldest));
    METRICS.queue_lag_seconds.set(i64::try_from(lag_ms / 1000).unwrap_or(i64::MAX));
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
