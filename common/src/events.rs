//! Table change events, index requests and maintainer locks: what writers publish after
//! each commit and what the indexer fleet consumes. Metadata only, never rows.
//!
//! Two buses behind one trait: [`LocalBus`] (in-process, for `standalone`) and
//! [`EtcdBus`](crate::etcd_bus::EtcdBus) (a cluster). Both keep, per table, only its latest
//! change, so what they store grows with the number of tables, not with the write rate. A
//! subscriber first gets every table's latest change (a [`BusUpdate::Resync`]), then each
//! change as it lands, in commit order, and another resync whenever it may have missed
//! some (etcd compacted the history it watched from; the in-process channel overflowed).
//! Events are triggers: the indexer re-reads the table itself, so a coalesced or missed
//! event loses no work. Index requests, which do carry work, are kept until done.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};

use crate::Shutdown;

/// What a committed change did to a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// The table was created (or re-created by an overwriting create).
    Create,
    /// Rows were appended.
    Append,
    /// Every row was replaced (an overwrite, or a restore of an old version).
    Overwrite,
    /// Rows were deleted.
    Delete,
    /// Rows were updated in place.
    Update,
    /// An upsert (merge insert).
    MergeInsert,
    /// Columns were added, altered or dropped.
    SchemaChange,
    /// A client asked for an index; the request is kept until an indexer built it.
    IndexRequested,
    /// A client dropped an index.
    IndexDropped,
    /// The table was dropped.
    Dropped,
    /// Maintenance rewrote small fragments into larger ones.
    Compacted,
    /// Maintenance built an index.
    IndexBuilt,
    /// Maintenance added new rows to indexes or merged their segments.
    IndexOptimized,
    /// Maintenance removed old versions.
    CleanedUp,
    /// A writer outside the cluster (LanceDB OSS on the same storage) committed it; a query
    /// node found it in the store and recorded it.
    External,
}

impl ChangeKind {
    /// Whether maintenance made this change (the indexer does not react to its own work).
    pub fn is_maintenance(self) -> bool {
        matches!(self, Self::Compacted | Self::IndexBuilt | Self::IndexOptimized | Self::CleanedUp)
    }

    /// Whether the change rewrote data or index files that executors may prewarm.
    pub fn rewrote_files(self) -> bool {
        matches!(self, Self::Compacted | Self::IndexBuilt | Self::IndexOptimized)
    }
}

/// One committed change to a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableEvent {
    /// The table id as clients name it (namespaces joined with `$`).
    pub table: String,
    /// The version the change committed (0 for a drop).
    pub version: u64,
    /// What changed.
    pub kind: ChangeKind,
    /// Rows written, deleted or updated; 0 where it does not apply.
    pub rows: u64,
    /// Fragments a maintenance commit created (executors prewarm those they own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub new_fragments: Vec<u64>,
    /// When the change was committed, in milliseconds since the Unix epoch.
    pub at_ms: u64,
}

impl TableEvent {
    /// The event of a change to `table` committed just now.
    pub fn now(table: impl Into<String>, version: u64, kind: ChangeKind, rows: u64) -> Self {
        Self { table: table.into(), version, kind, rows, new_fragments: Vec::new(), at_ms: now_ms() }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(0))
}

/// A client's request for an index, kept until an indexer built it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexRequest {
    /// The index name (`{column}_idx` unless the client named it).
    pub name: String,
    /// The `create_index` body as the client sent it (column, index type, parameters),
    /// already validated against the table.
    pub spec: serde_json::Value,
    /// When it was requested, in milliseconds since the Unix epoch.
    pub requested_at_ms: u64,
}

/// What a subscriber receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusUpdate {
    /// Every table's latest change: the subscriber's view starts over from this.
    Resync(Vec<TableEvent>),
    /// One change, in commit order after the previous update.
    Changed(TableEvent),
}

/// A failure of the event bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// etcd could not be reached or refused a request.
    #[error(transparent)]
    Etcd(#[from] crate::etcd::EtcdError),
    /// Another indexer holds the table.
    #[error("table '{table}' is maintained by {holder}")]
    Busy {
        /// The table.
        table: String,
        /// Who holds it.
        holder: String,
    },
}

/// A write under way, announced so that strong readers do not trust the recorded version
/// of its table until the write is recorded (or its writer's lease ends).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteIntent {
    /// The key announcing it; none on a bus that records no versions.
    pub key: Option<String>,
}

/// A table's latest version as the bus recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordedVersion {
    /// The newest version a write (or a check of the store) recorded.
    pub version: u64,
    /// Whether a write to the table is under way (announced, not recorded yet).
    pub writing: bool,
    /// Which record of the table this is: it changes when the table is dropped and its
    /// version recorded again (a table created again counts its versions from 1 again).
    pub generation: i64,
}

/// Where committed changes go and where the indexer fleet reads them.
///
/// In a cluster the bus also records every table's latest version (never backwards), so
/// strong readers learn it from the bus instead of listing the store: a writer announces
/// its write ([`Self::begin_write`]), commits, then records it
/// ([`Self::publish_write`]) before acknowledging; readers ask [`Self::recorded_version`].
#[async_trait::async_trait]
pub trait EventBus: Send + Sync + std::fmt::Debug {
    /// Publishes a committed change. A [`ChangeKind::Dropped`] event also forgets the
    /// table's pending index requests.
    async fn publish(&self, event: TableEvent) -> Result<(), BusError>;

    /// Records an index request and publishes `event` (of kind
    /// [`ChangeKind::IndexRequested`]) in one step. A request under an existing name
    /// replaces it.
    async fn request_index(&self, event: TableEvent, request: IndexRequest) -> Result<(), BusError>;

    /// The index requests of `table` not yet built, oldest first.
    async fn index_requests(&self, table: &str) -> Result<Vec<IndexRequest>, BusError>;

    /// Forgets a request once its index is built (or can never be).
    async fn finish_index_request(&self, table: &str, name: &str) -> Result<(), BusError>;

    /// Follows changes until `shutdown`: a resync first, then every change.
    async fn subscribe(&self, shutdown: Shutdown) -> mpsc::Receiver<BusUpdate>;

    /// Makes `holder` the one maintainer of `table`, or fails with [`BusError::Busy`].
    /// The lock ends with [`Self::unlock`], or (etcd) when the holder's lease expires.
    async fn lock_table(&self, table: &str, holder: &str) -> Result<(), BusError>;

    /// Releases a lock `holder` took; a lock held by someone else is left alone.
    async fn unlock_table(&self, table: &str, holder: &str) -> Result<(), BusError>;

    /// Announces a write to `table` about to commit. Fails when the bus cannot record it;
    /// the caller must then not write. The default records nothing.
    async fn begin_write(&self, _table: &str) -> Result<WriteIntent, BusError> {
        Ok(WriteIntent::default())
    }

    /// Publishes the change a write committed (recording its version unless a newer one
    /// is recorded) and ends its intent.
    async fn publish_write(&self, event: TableEvent, _intent: &WriteIntent) -> Result<(), BusError> {
        self.publish(event).await
    }

    /// Ends the intent of a write that committed nothing.
    async fn abandon_write(&self, _intent: &WriteIntent) -> Result<(), BusError> {
        Ok(())
    }

    /// The latest version of `table` the bus recorded; `None` when it records none.
    async fn recorded_version(&self, _table: &str) -> Result<Option<RecordedVersion>, BusError> {
        Ok(None)
    }
}

/// Updates a subscriber may fall behind by before it is resynced.
pub const SUBSCRIBER_BUFFER: usize = 4096;

/// The in-process bus of a standalone node.
#[derive(Debug, Clone)]
pub struct LocalBus {
    state: Arc<Mutex<LocalState>>,
    changes: broadcast::Sender<TableEvent>,
}

#[derive(Debug, Default)]
struct LocalState {
    latest: BTreeMap<String, TableEvent>,
    requests: BTreeMap<String, BTreeMap<String, IndexRequest>>,
    locks: HashMap<String, String>,
}

impl Default for LocalBus {
    fn default() -> Self {
        Self { state: Arc::default(), changes: broadcast::Sender::new(SUBSCRIBER_BUFFER) }
    }
}

impl LocalBus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    fn with_state<T>(&self, apply: impl FnOnce(&mut LocalState) -> T) -> T {
        apply(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn resync(&self) -> BusUpdate {
        BusUpdate::Resync(self.with_state(|state| state.latest.values().cloned().collect()))
    }

    fn record(state: &mut LocalState, event: &TableEvent) {
        if event.kind == ChangeKind::Dropped {
            state.latest.remove(&event.table);
            state.requests.remove(&event.table);
        } else {
            state.latest.insert(event.table.clone(), event.clone());
        }
    }
}

#[async_trait::async_trait]
impl EventBus for LocalBus {
    async fn publish(&self, event: TableEvent) -> Result<(), BusError> {
        self.with_state(|state| Self::record(state, &event));
        // No subscriber is not an error: nothing needs the event then.
        let _ = self.changes.send(event);
        Ok(())
    }

    async fn request_index(&self, event: TableEvent, request: IndexRequest) -> Result<(), BusError> {
        self.with_state(|state| {
            state.requests.entry(event.table.clone()).or_default().insert(request.name.clone(), request);
            Self::record(state, &event);
        });
        let _ = self.changes.send(event);
        Ok(())
    }

    async fn index_requests(&self, table: &str) -> Result<Vec<IndexRequest>, BusError> {
        let mut requests = self.with_state(|state| {
            state.requests.get(table).map(|requests| requests.values().cloned().collect::<Vec<_>>()).unwrap_or_default()
        });
        requests.sort_by_key(|request| request.requested_at_ms);
        Ok(requests)
    }

    async fn finish_index_request(&self, table: &str, name: &str) -> Result<(), BusError> {
        self.with_state(|state| {
            if let Some(requests) = state.requests.get_mut(table) {
                requests.remove(name);
            }
        });
        Ok(())
    }

    async fn subscribe(&self, shutdown: Shutdown) -> mpsc::Receiver<BusUpdate> {
        let (sender, receiver) = mpsc::channel(SUBSCRIBER_BUFFER);
        // Subscribe before the first snapshot, so nothing falls between the two.
        let mut changes = self.changes.subscribe();
        let bus = self.clone();
        tokio::spawn(async move {
            let forward = async {
                if sender.send(bus.resync()).await.is_err() {
                    return;
                }
                loop {
                    let update = match changes.recv().await {
                        Ok(event) => BusUpdate::Changed(event),
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            tracing::warn!(missed, "event subscriber fell behind; resyncing");
                            bus.resync()
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    };
                    if sender.send(update).await.is_err() {
                        return;
                    }
                }
            };
            tokio::select! {
                () = forward => {}
                () = shutdown.wait() => {}
            }
        });
        receiver
    }

    async fn lock_table(&self, table: &str, holder: &str) -> Result<(), BusError> {
        self.with_state(|state| match state.locks.get(table) {
            Some(current) if current != holder => {
                Err(BusError::Busy { table: table.to_string(), holder: current.clone() })
            }
            _ => {
                state.locks.insert(table.to_string(), holder.to_string());
                Ok(())
            }
        })
    }

    async fn unlock_table(&self, table: &str, holder: &str) -> Result<(), BusError> {
        self.with_state(|state| {
            if state.locks.get(table).is_some_and(|current| current == holder) {
                state.locks.remove(table);
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(name: &str, at: u64) -> IndexRequest {
        IndexRequest { name: name.into(), spec: serde_json::json!({"column": "v"}), requested_at_ms: at }
    }

    #[tokio::test]
    async fn a_subscriber_gets_the_latest_changes_then_each_new_one() {
        let bus = LocalBus::new();
        bus.publish(TableEvent::now("a", 1, ChangeKind::Create, 10)).await.expect("published");
        bus.publish(TableEvent::now("a", 2, ChangeKind::Append, 5)).await.expect("published");
        bus.publish(TableEvent::now("b", 1, ChangeKind::Create, 1)).await.expect("published");
        let mut updates = bus.subscribe(Shutdown::new()).await;
        let Some(BusUpdate::Resync(latest)) = updates.recv().await else { panic!("a resync first") };
        let versions = latest.iter().map(|event| (event.table.as_str(), event.version)).collect::<Vec<_>>();
        assert_eq!(versions, vec![("a", 2), ("b", 1)], "one latest change per table");

        bus.publish(TableEvent::now("b", 2, ChangeKind::Delete, 1)).await.expect("published");
        let Some(BusUpdate::Changed(event)) = updates.recv().await else { panic!("a change") };
        assert_eq!((event.table.as_str(), event.version, event.kind), ("b", 2, ChangeKind::Delete));

        bus.publish(TableEvent::now("b", 0, ChangeKind::Dropped, 0)).await.expect("published");
        let Some(BusUpdate::Changed(event)) = updates.recv().await else { panic!("a change") };
        assert_eq!(event.kind, ChangeKind::Dropped);
        let mut again = bus.subscribe(Shutdown::new()).await;
        let Some(BusUpdate::Resync(latest)) = again.recv().await else { panic!("a resync first") };
        assert_eq!(latest.len(), 1, "a dropped table is forgotten");
    }

    #[tokio::test]
    async fn index_requests_stay_until_finished_and_go_with_their_table() {
        let bus = LocalBus::new();
        let event = || TableEvent::now("t", 3, ChangeKind::IndexRequested, 0);
        bus.request_index(event(), request("v_idx", 2)).await.expect("requested");
        bus.request_index(event(), request("text_idx", 1)).await.expect("requested");
        bus.request_index(event(), request("v_idx", 3)).await.expect("replaced");
        let names = |requests: Vec<IndexRequest>| requests.into_iter().map(|request| request.name).collect::<Vec<_>>();
        assert_eq!(names(bus.index_requests("t").await.expect("listed")), vec!["text_idx", "v_idx"]);
        bus.finish_index_request("t", "text_idx").await.expect("finished");
        assert_eq!(names(bus.index_requests("t").await.expect("listed")), vec!["v_idx"]);
        bus.publish(TableEvent::now("t", 0, ChangeKind::Dropped, 0)).await.expect("published");
        assert!(bus.index_requests("t").await.expect("listed").is_empty());
    }

    #[tokio::test]
    async fn one_maintainer_per_table() {
        let bus = LocalBus::new();
        bus.lock_table("t", "indexer-a").await.expect("free");
        bus.lock_table("t", "indexer-a").await.expect("re-entrant for its holder");
        assert!(
            matches!(bus.lock_table("t", "indexer-b").await, Err(BusError::Busy { holder, .. }) if holder == "indexer-a")
        );
        bus.lock_table("u", "indexer-b").await.expect("another table is free");
        bus.unlock_table("t", "indexer-b").await.expect("not its lock: no-op");
        assert!(bus.lock_table("t", "indexer-b").await.is_err(), "still held by a");
        bus.unlock_table("t", "indexer-a").await.expect("released");
        bus.lock_table("t", "indexer-b").await.expect("free again");
    }
}
