//! Cache refill after maintenance: an executor follows the event bus, and when a
//! compaction or an index commit lands, reads the new fragments it owns (those whose
//! preference list holds it) and the table's indexes through its cache — of a vector index
//! kept as segments, the segments placed on it — so queries on the new version do not fall
//! off a cold cliff.

use std::sync::Arc;

use futures::TryStreamExt;
use lance::index::DatasetIndexExt;
use lancefleet_common::Shutdown;
use lancefleet_common::config::{ClusterConfig, ExecutorEndpoint};
use lancefleet_common::events::{BusUpdate, ChangeKind, EventBus, TableEvent};
use lancefleet_common::placement::Placement;
use lancefleet_engine::catalog::facts::{
    full_text_segment_anchors, index_facts, scalar_segment_anchors, vector_segment_anchors,
};
use lancefleet_engine::{Catalog, EngineError, TableId};
use tokio::sync::watch;

use crate::metrics::METRICS;

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
}

impl Prewarmer {
    /// Follows `bus` until `shutdown`, prewarming after each maintenance commit.
    pub async fn follow(self, bus: Arc<dyn EventBus>, shutdown: Shutdown) {
        let mut updates = bus.subscribe(shutdown).await;
        while let Some(update) = updates.recv().await {
            let BusUpdate::Changed(event) = update else { continue };
            if !event.kind.rewrote_files() {
                continue;
            }
            if let Err(error) = self.prewarm(&event).await {
                METRICS.prewarm.with_label_values(&["failed"]).inc();
                tracing::warn!(table = event.table, version = event.version, %error, "prewarm failed");
            }
        }
    }

    /// Which of `fragments` of the table at `uri` this executor owns (is in their
    /// preference lists).
    fn owned(&self, uri: &str, fragments: &[u64]) -> Vec<u64> {
        let members = self.membership.borrow().clone();
        let placement = Placement::new(
            members.iter().map(|member| member.id.clone()),
            self.cluster.virtual_nodes,
            self.cluster.replicas,
        );
        fragments
            .iter()
            .copied()
            .filter(|fragment| placement.preference_list(uri, *fragment).iter().any(|node| **node == *self.node_id))
            .collect()
    }

    async fn prewarm(&self, event: &TableEvent) -> Result<(), EngineError> {
        let uri = self.catalog.table_uri(&TableId::parse(&event.table)?).await?;
        let dataset = self.catalog.open_pinned(&uri, event.version, 0).await?;
        let owned = self.owned(&uri, &event.new_fragments);
        if !owned.is_empty() {
            let fragments =
                dataset.fragments().iter().filter(|fragment| owned.contains(&fragment.id)).cloned().collect();
            let mut scan = dataset.scan();
            scan.with_fragments(fragments);
            let stream = scan.try_into_stream().await?;
            let rows = stream.try_fold(0usize, |rows, batch| async move { Ok(rows + batch.num_rows()) }).await?;
            METRICS.prewarm.with_label_values(&["fragment"]).inc_by(owned.len() as u64);
            tracing::info!(
                table = event.table,
                version = event.version,
                fragments = owned.len(),
                rows,
                "prewarmed new fragments"
            );
        }
        if matches!(event.kind, ChangeKind::IndexBuilt | ChangeKind::IndexOptimized) {
            let indexes = index_facts(&dataset).await?;
            for index in &indexes {
                // Only the segments placed here (reads send each segment's fragments to one
                // executor, which opens only the segments over them): the others are
                // other executors' work.
                let anchors = if index.is_vector {
                    vector_segment_anchors(&dataset, &index.column).await?
                } else if index.index_type.eq_ignore_ascii_case("inverted") {
                    full_text_segment_anchors(&dataset, &index.name).await?
                } else {
                    scalar_segment_anchors(&dataset, &index.name).await?
                };
                let placed_here = self.owned(&uri, &anchors.iter().map(|(_, anchor)| *anchor).collect::<Vec<_>>());
                let owned =
                    anchors.iter().filter(|(_, anchor)| placed_here.contains(anchor)).map(|(segment, _)| segment.uuid);
                let owned = owned.collect::<Vec<_>>();
                if !owned.is_empty() {
                    dataset.prewarm_index_segments(&index.name, &owned).await?;
                }
            }
            METRICS.prewarm.with_label_values(&["index"]).inc_by(indexes.len() as u64);
            tracing::info!(table = event.table, version = event.version, indexes = indexes.len(), "prewarmed indexes");
        }
        Ok(())
    }
}
