//! Keeping an executor's cache warm for what placement sends it.
//!
//! An executor's *share* of a table version is what query nodes may send it: the index
//! segments whose preference list holds it (as first choice or as a replica), the
//! fragments those segments cover (a search reads them with the segment), and the
//! fragments whose own preference list holds it. The executor reads its share through its
//! cache:
//!
//! - **when it starts, and after each membership change** once membership has been quiet
//!   for [`SETTLE`]: every table's index segments first, then fragment data, until
//!   `executor.prewarm_budget` bytes were fetched in the round. Replicas warm too, so a
//!   hedged or retried call finds its data in the next replica's cache, and a fleet
//!   restart does not start cold;
//! - **after maintenance** (a compaction, an index build or optimize, heard on the event
//!   bus): the new fragments and the rebuilt index segments of its share, so queries on the
//!   new version do not fall off a cold cliff.
//!
//! What was read once is remembered (fragments by table and id, segments by uuid: their
//! files never change) and not read again in a later round.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use lance::Dataset;
use lance::index::DatasetIndexExt;
use lancefleet_common::Shutdown;
use lancefleet_common::config::{ClusterConfig, ExecutorEndpoint};
use lancefleet_common::events::{BusUpdate, ChangeKind, EventBus, TableEvent};
use lancefleet_common::placement::Placement;
use lancefleet_engine::catalog::facts::{
    full_text_segment_anchors, index_facts, scalar_segment_anchors, segment_fragments, vector_segment_anchors,
};
use lancefleet_engine::{Catalog, EngineError, Namespace, ReadVersion, TableId};
use tokio::sync::watch;
use uuid::Uuid;

use crate::metrics::METRICS;

/// How long membership must stay unchanged before a round reads the new share (executors
/// joining together, or a rolling restart, make one round).
pub const SETTLE: Duration = Duration::from_secs(2);

/// The `trigger` label of a prewarm at start or after a membership change.
const MEMBERSHIP: &str = "membership";
/// The `trigger` label of a prewarm after a maintenance commit.
const MAINTENANCE: &str = "maintenance";

/// What prewarming needs to know about this executor and its cluster.
#[derive(Debug)]
pub struct Prewarmer {
    /// The executor's catalog (reading through its cache).
    pub catalog: Catalog,
    /// The executors, as query nodes place fragments on them.
    pub membership: watch::Receiver<Arc<[ExecutorEndpoint]>>,
    /// Placement settings (the same as the query nodes').
    pub cluster: ClusterConfig,
    /// This executor's id.
    pub node_id: String,
    /// Bytes a start or membership round may fetch; 0 reads nothing then.
    pub budget: u64,
}

/// One table version's share of an executor.
#[derive(Debug, Default)]
struct Share {
    /// Index segments placed here, by index name.
    segments: Vec<(String, Vec<Uuid>)>,
    /// Fragments placed here, alone or with a segment.
    fragments: BTreeSet<u64>,
}

/// What has been read into the cache, and the tables the event bus named.
#[derive(Debug, Default)]
struct Known {
    fragments: HashSet<(String, u64)>,
    segments: HashSet<Uuid>,
    tables: BTreeSet<String>,
}

/// A prewarmer at work: its settings and what it has read so far.
#[derive(Debug)]
struct Warming {
    settings: Prewarmer,
    known: Mutex<Known>,
}

impl Prewarmer {
    /// Follows membership and `bus` until `shutdown`, reading this executor's share at
    /// start, after membership changes and after maintenance commits.
    pub async fn follow(self, bus: Arc<dyn EventBus>, shutdown: Shutdown) {
        let warming = Arc::new(Warming { settings: self, known: Mutex::default() });
        let mut updates = bus.subscribe(shutdown.clone()).await;
        let rounds = tokio::spawn(warming.clone().follow_membership(shutdown));
        while let Some(update) = updates.recv().await {
            match update {
                BusUpdate::Resync(latest) => {
                    let live = latest.into_iter().filter(|event| event.kind != ChangeKind::Dropped);
                    warming.known().tables = live.map(|event| event.table).collect();
                }
                BusUpdate::Changed(event) => {
                    if event.kind == ChangeKind::Dropped {
                        warming.known().tables.remove(&event.table);
                    } else {
                        warming.known().tables.insert(event.table.clone());
                    }
                    if !event.kind.rewrote_files() {
                        continue;
                    }
                    if let Err(error) = warming.after_maintenance(&event).await {
                        METRICS.prewarm.with_label_values(&["failed", MAINTENANCE]).inc();
                        tracing::warn!(table = event.table, version = event.version, %error, "prewarm failed");
                    }
                }
            }
        }
        rounds.abort();
    }
}

impl Warming {
    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The executor ids of the current membership.
    fn member_ids(&self) -> BTreeSet<String> {
        self.settings.membership.borrow().iter().map(|member| member.id.clone()).collect()
    }

    /// Runs a round whenever membership has been quiet for [`SETTLE`] with this executor in
    /// it and other executor ids than the last round's, until `shutdown`.
    async fn follow_membership(self: Arc<Self>, shutdown: Shutdown) {
        if self.settings.budget == 0 {
            return;
        }
        let mut membership = self.settings.membership.clone();
        let mut warmed_for = BTreeSet::new();
        loop {
            loop {
                tokio::select! {
                    () = shutdown.wait() => return,
                    quiet = tokio::time::timeout(SETTLE, membership.changed()) => match quiet {
                        Err(_) => break,
                        Ok(Err(_)) => return,
                        Ok(Ok(())) => continue,
                    },
                }
            }
            let ids = self.member_ids();
            if ids != warmed_for && ids.contains(&self.settings.node_id) {
                self.round().await;
                warmed_for = ids;
            }
            loop {
                tokio::select! {
                    () = shutdown.wait() => return,
                    changed = membership.changed() => if changed.is_err() { return },
                }
                if self.member_ids() != warmed_for {
                    break;
                }
            }
        }
    }

    /// Reads this executor's share of every table (the root namespace's, and those the
    /// event bus named), index segments first, until the round's budget is fetched.
    async fn round(&self) {
        let started = Instant::now();
        let before = self.settings.catalog.cache_reads();
        let fetched = || self.settings.catalog.cache_reads().since(&before).fetched_bytes;
        let mut tables = match self.settings.catalog.list_tables(&Namespace::root()).await {
            Ok(tables) => tables.into_iter().collect::<BTreeSet<_>>(),
            Err(error) => {
                tracing::warn!(%error, "cannot list the tables to prewarm; prewarming those the event bus named");
                BTreeSet::new()
            }
        };
        tables.extend(self.known().tables.iter().cloned());
        let (mut segments, mut fragments) = (0, 0);
        let mut shares = Vec::new();
        let placement = self.placement();
        for table in tables {
            if fetched() >= self.settings.budget {
                break;
            }
            let warmed = async {
                let id = TableId::parse(&table)?;
                let uri = self.settings.catalog.table_uri(&id).await?;
                let dataset = self.settings.catalog.open_table(&id, ReadVersion::default()).await?;
                let share = self.share(&placement, &uri, &dataset).await?;
                let segments = self.warm_segments(&dataset, &share, MEMBERSHIP).await?;
                Ok::<_, EngineError>((segments, (uri, dataset, share)))
            };
            match warmed.await {
                Ok((warmed, share)) => {
                    segments += warmed;
                    shares.push(share);
                }
                Err(error) => {
                    METRICS.prewarm.with_label_values(&["failed", MEMBERSHIP]).inc();
                    tracing::warn!(table, %error, "prewarm failed");
                }
            }
        }
        'tables: for (uri, dataset, share) in &shares {
            for fragment in &share.fragments {
                if fetched() >= self.settings.budget {
                    break 'tables;
                }
                match self.warm_fragments(uri, dataset, [*fragment].into_iter(), MEMBERSHIP).await {
                    Ok(read) => fragments += read,
                    Err(error) => {
                        METRICS.prewarm.with_label_values(&["failed", MEMBERSHIP]).inc();
                        tracing::warn!(table = uri, fragment, %error, "prewarm failed");
                        break;
                    }
                }
            }
        }
        tracing::info!(
            tables = shares.len(),
            segments,
            fragments,
            fetched_bytes = fetched(),
            budget_bytes = self.settings.budget,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "prewarmed this executor's share"
        );
    }

    /// Reads the new fragments and, after an index commit, the index segments of this
    /// executor's share of the version `event` committed.
    async fn after_maintenance(&self, event: &TableEvent) -> Result<(), EngineError> {
        let catalog = &self.settings.catalog;
        let uri = catalog.table_uri(&TableId::parse(&event.table)?).await?;
        let dataset = catalog.open_pinned(&uri, event.version, 0).await?;
        let share = self.share(&self.placement(), &uri, &dataset).await?;
        let new = event.new_fragments.iter().filter(|fragment| share.fragments.contains(fragment));
        let fragments = self.warm_fragments(&uri, &dataset, new.copied(), MAINTENANCE).await?;
        let segments = if matches!(event.kind, ChangeKind::IndexBuilt | ChangeKind::IndexOptimized) {
            self.warm_segments(&dataset, &share, MAINTENANCE).await?
        } else {
            0
        };
        tracing::info!(
            table = event.table,
            version = event.version,
            fragments,
            segments,
            "prewarmed what maintenance rewrote"
        );
        Ok(())
    }

    /// Whether placement puts `unit` (a fragment, or a segment's anchor fragment) of the
    /// table at `uri` on this executor, as first choice or replica.
    fn placed_here(&self, placement: &Placement, uri: &str, unit: u64) -> bool {
        placement.preference_list(uri, unit).iter().any(|node| **node == *self.settings.node_id)
    }

    /// Placement under the current membership, as query nodes compute it.
    fn placement(&self) -> Placement {
        let members = self.settings.membership.borrow().clone();
        let cluster = &self.settings.cluster;
        Placement::new(members.iter().map(|member| member.id.clone()), cluster.virtual_nodes, cluster.replicas)
    }

    /// This executor's share of `dataset` (the table at `uri`) under `placement`.
    async fn share(&self, placement: &Placement, uri: &str, dataset: &Dataset) -> Result<Share, EngineError> {
        let mut share = Share::default();
        for index in index_facts(dataset).await? {
            // Reads send each segment's fragments to one executor, which opens only the
            // segments over them; the other segments are other executors' work.
            let anchors = if index.is_vector {
                vector_segment_anchors(dataset, &index.column).await?
            } else if index.index_type.eq_ignore_ascii_case("inverted") {
                full_text_segment_anchors(dataset, &index.name).await?
            } else {
                scalar_segment_anchors(dataset, &index.name).await?
            };
            let mut placed = Vec::new();
            for (segment, anchor) in anchors {
                if self.placed_here(placement, uri, anchor) {
                    share.fragments.extend(segment_fragments(dataset, &segment));
                    placed.push(segment.uuid);
                }
            }
            if !placed.is_empty() {
                share.segments.push((index.name, placed));
            }
        }
        let alone = dataset.fragments().iter().map(|fragment| fragment.id);
        share.fragments.extend(alone.filter(|fragment| self.placed_here(placement, uri, *fragment)));
        Ok(share)
    }

    /// Reads the index segments of `share` not read before; how many.
    async fn warm_segments(&self, dataset: &Dataset, share: &Share, trigger: &str) -> Result<u64, EngineError> {
        let mut warmed = 0;
        for (index, segments) in &share.segments {
            let new = segments.iter().filter(|uuid| !self.known().segments.contains(uuid)).copied().collect::<Vec<_>>();
            if new.is_empty() {
                continue;
            }
            dataset.prewarm_index_segments(index, &new).await?;
            self.known().segments.extend(new.iter().copied());
            METRICS.prewarm.with_label_values(&["index", trigger]).inc();
            warmed += new.len() as u64;
        }
        Ok(warmed)
    }

    /// Reads every column of `fragments` of `dataset` (the table at `uri`) not read before;
    /// how many it read.
    async fn warm_fragments(
        &self,
        uri: &str,
        dataset: &Dataset,
        fragments: impl Iterator<Item = u64>,
        trigger: &str,
    ) -> Result<u64, EngineError> {
        let wanted =
            fragments.filter(|id| !self.known().fragments.contains(&(uri.to_string(), *id))).collect::<Vec<_>>();
        let chosen =
            dataset.fragments().iter().filter(|fragment| wanted.contains(&fragment.id)).cloned().collect::<Vec<_>>();
        if chosen.is_empty() {
            return Ok(0);
        }
        let mut scan = dataset.scan();
        scan.with_fragments(chosen.clone());
        let stream = scan.try_into_stream().await?;
        stream.try_for_each(|_| async { Ok(()) }).await?;
        self.known().fragments.extend(chosen.iter().map(|fragment| (uri.to_string(), fragment.id)));
        METRICS.prewarm.with_label_values(&["fragment", trigger]).inc_by(chosen.len() as u64);
        Ok(chosen.len() as u64)
    }
}
