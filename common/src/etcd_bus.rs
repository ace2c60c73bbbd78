//! The event bus of a cluster, on etcd.
//!
//! Keys, under `/{cluster}/tables/{table}/`:
//! - `change`: the table's latest [`TableEvent`] (JSON). Every commit overwrites it; etcd's
//!   revisions order the puts, and a watch from a revision replays every one still in
//!   etcd's history, so an indexer that was away catches up. When that history has been
//!   compacted, the subscriber re-lists: each table's latest change.
//! - `version`: the table's latest recorded version, zero-padded to 20 digits so that
//!   etcd's byte-wise comparison orders it; a transaction only ever raises it. Strong
//!   readers read it instead of listing the store.
//! - `writing/{id}`: a write under way, under the writer's lease: readers list the store
//!   while one exists (the write may have committed and not be recorded yet).
//! - `index-requests/{name}`: a pending [`IndexRequest`], written in one transaction
//!   with its `change`, deleted once built.
//! - `maintainer`: the id of the indexer maintaining the table, under that indexer's
//!   lease, so a maintainer that dies frees the table when its lease expires.
//!
//! A drop deletes every key of the table; subscribers see it as a
//! [`ChangeKind::Dropped`] change.

use std::time::Duration;

use etcd_client::{Compare, CompareOp, DeleteOptions, EventType, GetOptions, PutOptions, Txn, TxnOp, WatchOptions};
use tokio::sync::{Mutex, mpsc};

use crate::Shutdown;
use crate::etcd::{Client, EtcdError, Keys, Lease};
use crate::events::{
    BusError, BusUpdate, ChangeKind, EventBus, IndexRequest, RecordedVersion, SUBSCRIBER_BUFFER, TableEvent,
    WriteIntent,
};

/// How long to wait before re-listing after etcd failed.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The event bus on etcd.
pub struct EtcdBus {
    client: Client,
    keys: Keys,
    /// TTL of the lease maintainer locks are held under.
    lock_ttl: Duration,
    /// That lease, granted on the first lock and re-granted when lost.
    lock_lease: Mutex<Option<Lease>>,
}

impl std::fmt::Debug for EtcdBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdBus").field("keys", &self.keys).finish_non_exhaustive()
    }
}

impl EtcdBus {
    /// The bus of the cluster `keys` name; locks taken through it expire `lock_ttl` after
    /// this process stops renewing them.
    pub fn new(client: Client, keys: Keys, lock_ttl: Duration) -> Self {
        Self { client, keys, lock_ttl, lock_lease: Mutex::new(None) }
    }

    fn change_key(&self, table: &str) -> String {
        format!("{}change", self.keys.table(table))
    }

    fn version_key(&self, table: &str) -> String {
        format!("{}version", self.keys.table(table))
    }

    fn writing_prefix(&self, table: &str) -> String {
        format!("{}writing/", self.keys.table(table))
    }

    fn requests_prefix(&self, table: &str) -> String {
        format!("{}index-requests/", self.keys.table(table))
    }

    fn maintainer_key(&self, table: &str) -> String {
        format!("{}maintainer", self.keys.table(table))
    }

    /// The lease locks go under, granting a new one when there is none or it was lost.
    async fn lock_lease_id(&self) -> Result<i64, EtcdError> {
        let mut lease = self.lock_lease.lock().await;
        if let Some(current) = lease.as_ref().filter(|lease| !lease.is_lost()) {
            return Ok(current.id());
        }
        let granted = Lease::grant(&self.client, self.lock_ttl).await?;
        let id = granted.id();
        *lease = Some(granted);
        Ok(id)
    }

    /// Which table a `…/tables/{table}/change` key is about.
    fn table_of_change_key<'k>(&self, key: &'k str) -> Option<&'k str> {
        let relative = self.keys.relative(key)?.strip_prefix("tables/")?;
        relative.strip_suffix("/change").filter(|table| !table.contains('/'))
    }

    /// Every table's latest change, and the revision it was read at.
    async fn list(&self) -> Result<(Vec<TableEvent>, i64), EtcdError> {
        let response = self.client.clone().get(self.keys.tables(), Some(GetOptions::new().with_prefix())).await?;
        let revision = response.header().map_or(0, |header| header.revision());
        let events = response
            .kvs()
            .iter()
            .filter(|kv| kv.key_str().is_ok_and(|key| self.table_of_change_key(key).is_some()))
            .filter_map(|kv| decode_event(kv.value()))
            .collect();
        Ok((events, revision))
    }

    /// Sends every change from `revision` on, until the watch ends or the receiver is gone.
    async fn watch_from(&self, revision: i64, sender: &mpsc::Sender<BusUpdate>) -> Result<(), EtcdError> {
        let options = WatchOptions::new().with_prefix().with_start_revision(revision);
        let mut stream = self.client.clone().watch(self.keys.tables(), Some(options)).await?;
        while let Some(response) = stream.message().await? {
            if response.compact_revision() > 0 || response.canceled() {
                tracing::info!(compacted = response.compact_revision(), "event watch ended; re-listing");
                return Ok(());
            }
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                let Some(table) = kv.key_str().ok().and_then(|key| self.table_of_change_key(key)) else { continue };
                let change = match event.event_type() {
                    EventType::Put => decode_event(kv.value()),
                    EventType::Delete => Some(TableEvent::now(table, 0, ChangeKind::Dropped, 0)),
                };
                if let Some(change) = change
                    && sender.send(BusUpdate::Changed(change)).await.is_err()
                {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

/// A unique suffix for a write intent's key (this process's writes, in order, and the
/// time, so two processes on one lease never collide).
fn uuid_like() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let next = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{:x}-{next:x}-{}", crate::events::now_ms(), std::process::id())
}

fn decode_event(value: &[u8]) -> Option<TableEvent> {
    serde_json::from_slice(value).map_err(|error| tracing::warn!(%error, "skipping an event that does not decode")).ok()
}

/// A version as the `version` key holds it: 20 digits, so byte order is numeric order.
fn padded(version: u64) -> String {
    format!("{version:020}")
}

#[async_trait::async_trait]
impl EventBus for EtcdBus {
    async fn publish(&self, event: TableEvent) -> Result<(), BusError> {
        self.publish_write(event, &WriteIntent::default()).await
    }

    /// A drop deletes every key of the table. Any other change raises `version` and
    /// replaces `change` when its version is newer than the recorded one (or none is),
    /// and leaves both alone otherwise (a concurrent write recorded a newer version
    /// first); the intent ends either way. One transaction.
    async fn publish_write(&self, event: TableEvent, intent: &WriteIntent) -> Result<(), BusError> {
        let mut client = self.client.clone();
        if event.kind == ChangeKind::Dropped {
            let prefix = Some(DeleteOptions::new().with_prefix());
            client.delete(self.keys.table(&event.table), prefix).await.map_err(EtcdError::from)?;
            return Ok(());
        }
        let value = serde_json::to_vec(&event).map_err(EtcdError::from)?;
        let (version_key, version) = (self.version_key(&event.table), padded(event.version));
        let record = [
            TxnOp::put(version_key.clone(), version.clone(), None),
            TxnOp::put(self.change_key(&event.table), value, None),
        ];
        let end = intent.key.iter().map(|key| TxnOp::delete(key.clone(), None)).collect::<Vec<_>>();
        let first = Txn::new()
            .when([Compare::create_revision(version_key.clone(), CompareOp::Equal, 0)])
            .and_then(record.to_vec());
        let newer = Txn::new()
            .when([Compare::value(version_key, CompareOp::Less, version)])
            .and_then([record.to_vec(), end.clone()].concat())
            .or_else([end, vec![TxnOp::txn(first)]].concat());
        client.txn(newer).await.map_err(EtcdError::from)?;
        Ok(())
    }

    async fn begin_write(&self, table: &str) -> Result<WriteIntent, BusError> {
        let lease = self.lock_lease_id().await?;
        let key = format!("{}{lease:x}-{}", self.writing_prefix(table), uuid_like());
        let options = PutOptions::new().with_lease(lease);
        self.client.clone().put(key.clone(), Vec::<u8>::new(), Some(options)).await.map_err(EtcdError::from)?;
        Ok(WriteIntent { key: Some(key) })
    }

    async fn abandon_write(&self, intent: &WriteIntent) -> Result<(), BusError> {
        if let Some(key) = &intent.key {
            self.client.clone().delete(key.clone(), None).await.map_err(EtcdError::from)?;
        }
        Ok(())
    }

    /// The `version` key and whether any `writing/` key exists, read in one
    /// (linearizable) transaction.
    async fn recorded_version(&self, table: &str) -> Result<Option<RecordedVersion>, BusError> {
        let writing = GetOptions::new().with_prefix().with_count_only();
        let txn = Txn::new().and_then([
            TxnOp::get(self.version_key(table), None),
            TxnOp::get(self.writing_prefix(table), Some(writing)),
        ]);
        let response = self.client.clone().txn(txn).await.map_err(EtcdError::from)?;
        let mut gets = response.op_responses().into_iter().filter_map(|op| match op {
            etcd_client::TxnOpResponse::Get(get) => Some(get),
            _ => None,
        });
        let (Some(version), Some(writing)) = (gets.next(), gets.next()) else { return Ok(None) };
        let recorded = version.kvs().first().and_then(|kv| {
            let version = kv.value_str().ok()?.parse::<u64>().ok()?;
            Some(RecordedVersion { version, writing: writing.count() > 0, generation: kv.create_revision() })
        });
        Ok(recorded)
    }

    async fn request_index(&self, event: TableEvent, request: IndexRequest) -> Result<(), BusError> {
        let request_key = format!("{}{}", self.requests_prefix(&event.table), request.name);
        let request = serde_json::to_vec(&request).map_err(EtcdError::from)?;
        let change = serde_json::to_vec(&event).map_err(EtcdError::from)?;
        let txn = Txn::new().and_then([
            TxnOp::put(request_key, request, None),
            TxnOp::put(self.change_key(&event.table), change, None),
        ]);
        self.client.clone().txn(txn).await.map_err(EtcdError::from)?;
        Ok(())
    }

    async fn index_requests(&self, table: &str) -> Result<Vec<IndexRequest>, BusError> {
        let options = GetOptions::new().with_prefix();
        let response =
            self.client.clone().get(self.requests_prefix(table), Some(options)).await.map_err(EtcdError::from)?;
        let mut requests = response
            .kvs()
            .iter()
            .filter_map(|kv| {
                serde_json::from_slice::<IndexRequest>(kv.value())
                    .map_err(|error| tracing::warn!(%error, "skipping an index request that does not decode"))
                    .ok()
            })
            .collect::<Vec<_>>();
        requests.sort_by_key(|request| request.requested_at_ms);
        Ok(requests)
    }

    async fn finish_index_request(&self, table: &str, name: &str) -> Result<(), BusError> {
        let key = format!("{}{name}", self.requests_prefix(table));
        self.client.clone().delete(key, None).await.map_err(EtcdError::from)?;
        Ok(())
    }

    async fn subscribe(&self, shutdown: Shutdown) -> mpsc::Receiver<BusUpdate> {
        let (sender, receiver) = mpsc::channel(SUBSCRIBER_BUFFER);
        let bus = Self::new(self.client.clone(), self.keys.clone(), self.lock_ttl);
        tokio::spawn(async move {
            let follow = async {
                while !sender.is_closed() {
                    let round = async {
                        let (latest, revision) = bus.list().await?;
                        crate::metrics::etcd_reachable(true);
                        if sender.send(BusUpdate::Resync(latest)).await.is_ok() {
                            bus.watch_from(revision + 1, &sender).await?;
                        }
                        Ok::<_, EtcdError>(())
                    };
                    if let Err(error) = round.await {
                        crate::metrics::etcd_reachable(false);
                        tracing::warn!(%error, "lost etcd while following table events; retrying");
                    }
                    tokio::time::sleep(RETRY_AFTER).await;
                }
            };
            tokio::select! {
                () = follow => {}
                () = shutdown.wait() => {}
            }
        });
        receiver
    }

    async fn lock_table(&self, table: &str, holder: &str) -> Result<(), BusError> {
        let lease = self.lock_lease_id().await?;
        let key = self.maintainer_key(table);
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.clone(), holder, Some(PutOptions::new().with_lease(lease)))])
            .or_else([TxnOp::get(key, None)]);
        let response = self.client.clone().txn(txn).await.map_err(EtcdError::from)?;
        if response.succeeded() {
            return Ok(());
        }
        let current = response
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                etcd_client::TxnOpResponse::Get(get) => {
                    get.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
                }
                _ => None,
            })
            .unwrap_or_default();
        if current == holder {
            return Ok(());
        }
        Err(BusError::Busy { table: table.to_string(), holder: current })
    }

    async fn unlock_table(&self, table: &str, holder: &str) -> Result<(), BusError> {
        let key = self.maintainer_key(table);
        let txn = Txn::new()
            .when([Compare::value(key.clone(), CompareOp::Equal, holder)])
            .and_then([TxnOp::delete(key, None)]);
        self.client.clone().txn(txn).await.map_err(EtcdError::from)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::EtcdServer;

    async fn next(updates: &mut mpsc::Receiver<BusUpdate>) -> BusUpdate {
        tokio::time::timeout(Duration::from_secs(10), updates.recv()).await.expect("an update in time").expect("open")
    }

    #[tokio::test]
    async fn recorded_versions_only_rise_and_writes_under_way_are_visible() {
        let Some(etcd) = EtcdServer::start().await else { return };
        let bus = EtcdBus::new(etcd.client().await, Keys::new("versions"), Duration::from_secs(2));
        assert_eq!(bus.recorded_version("t").await.expect("read"), None, "nothing recorded yet");
        let intent = bus.begin_write("t").await.expect("announced");
        let under_way = bus.recorded_version("t").await.expect("read");
        assert_eq!(under_way, None, "no version yet, even with a write under way");
        bus.publish_write(TableEvent::now("t", 9, ChangeKind::Append, 1), &intent).await.expect("recorded");
        let first = bus.recorded_version("t").await.expect("read").expect("recorded");
        assert_eq!((first.version, first.writing), (9, false));

        // A slower writer of an older version does not move it back; its intent ends.
        let late = bus.begin_write("t").await.expect("announced");
        assert_eq!(
            bus.recorded_version("t").await.expect("read"),
            Some(RecordedVersion { writing: true, ..first }),
            "the same record, a write under way"
        );
        bus.publish_write(TableEvent::now("t", 8, ChangeKind::Append, 1), &late).await.expect("published");
        assert_eq!(bus.recorded_version("t").await.expect("read"), Some(first));
        // 10 after 9 compares as a number, not as text ("10" < "9").
        bus.publish(TableEvent::now("t", 10, ChangeKind::Append, 1)).await.expect("published");
        assert_eq!(bus.recorded_version("t").await.expect("read").map(|recorded| recorded.version), Some(10));

        let abandoned = bus.begin_write("t").await.expect("announced");
        bus.abandon_write(&abandoned).await.expect("ended");
        assert_eq!(bus.recorded_version("t").await.expect("read"), Some(RecordedVersion { version: 10, ..first }));
        bus.publish(TableEvent::now("t", 0, ChangeKind::Dropped, 0)).await.expect("dropped");
        assert_eq!(bus.recorded_version("t").await.expect("read"), None, "a drop forgets the version");
        bus.publish(TableEvent::now("t", 1, ChangeKind::Create, 1)).await.expect("created again");
        let again = bus.recorded_version("t").await.expect("read").expect("recorded");
        assert_eq!(again.version, 1);
        assert_ne!(again.generation, first.generation, "a table created again is another record");
    }

    #[tokio::test]
    async fn events_replay_in_order_and_a_compacted_history_resyncs() {
        let Some(etcd) = EtcdServer::start().await else { return };
        let bus = EtcdBus::new(etcd.client().await, Keys::new("events"), Duration::from_secs(2));
        bus.publish(TableEvent::now("a", 1, ChangeKind::Create, 3)).await.expect("published");
        bus.publish(TableEvent::now("a", 2, ChangeKind::Append, 1)).await.expect("published");
        let mut updates = bus.subscribe(Shutdown::new()).await;
        let BusUpdate::Resync(latest) = next(&mut updates).await else { panic!("a resync first") };
        assert_eq!(latest.iter().map(|event| event.version).collect::<Vec<_>>(), [2], "the latest change per table");

        bus.publish(TableEvent::now("b", 1, ChangeKind::Create, 1)).await.expect("published");
        bus.publish(TableEvent::now("a", 3, ChangeKind::Delete, 1)).await.expect("published");
        let BusUpdate::Changed(first) = next(&mut updates).await else { panic!("a change") };
        let BusUpdate::Changed(second) = next(&mut updates).await else { panic!("a change") };
        assert_eq!((first.table.as_str(), second.table.as_str(), second.kind), ("b", "a", ChangeKind::Delete));

        // Control-plane writes do not reach event subscribers, and table events do not
        // reach membership (its range ends before `tables/`).
        let keys = Keys::new("events");
        assert!(keys.control_end() > keys.health("z") && keys.control_end() > format!("{}nodes/~", keys.root()));

        // A drop is a change too, and forgets the table.
        bus.request_index(
            TableEvent::now("b", 2, ChangeKind::IndexRequested, 0),
            IndexRequest { name: "v_idx".into(), spec: serde_json::json!({}), requested_at_ms: 1 },
        )
        .await
        .expect("requested");
        assert_eq!(bus.index_requests("b").await.expect("listed").len(), 1);
        let BusUpdate::Changed(requested) = next(&mut updates).await else { panic!("a change") };
        assert_eq!(requested.kind, ChangeKind::IndexRequested);
        bus.publish(TableEvent::now("b", 0, ChangeKind::Dropped, 0)).await.expect("dropped");
        let BusUpdate::Changed(dropped) = next(&mut updates).await else { panic!("a change") };
        assert_eq!((dropped.table.as_str(), dropped.kind), ("b", ChangeKind::Dropped));
        assert!(bus.index_requests("b").await.expect("listed").is_empty());

        // A subscriber that starts from a compacted revision re-lists instead.
        let mut client = etcd.client().await;
        let (_, revision) = bus.list().await.expect("listed");
        bus.publish(TableEvent::now("a", 4, ChangeKind::Update, 1)).await.expect("published");
        client.compact(revision + 1, None).await.expect("compacted");
        let (sender, mut receiver) = mpsc::channel(16);
        bus.watch_from(revision, &sender).await.expect("watch ends");
        assert!(receiver.try_recv().is_err(), "nothing is replayed from a compacted history");
        let (latest, _) = bus.list().await.expect("listed");
        assert_eq!(latest.iter().map(|event| (event.table.as_str(), event.version)).collect::<Vec<_>>(), [("a", 4)]);
    }

    #[tokio::test]
    async fn a_table_has_one_maintainer_until_it_unlocks_or_its_lease_expires() {
        let Some(etcd) = EtcdServer::start().await else { return };
        let keys = Keys::new("locks");
        let first = EtcdBus::new(etcd.client().await, keys.clone(), Duration::from_secs(2));
        let second = EtcdBus::new(etcd.client().await, keys, Duration::from_secs(2));
        first.lock_table("t", "indexer-a").await.expect("free");
        first.lock_table("t", "indexer-a").await.expect("held by itself");
        assert!(
            matches!(second.lock_table("t", "indexer-b").await, Err(BusError::Busy { holder, .. }) if holder == "indexer-a")
        );
        second.unlock_table("t", "indexer-b").await.expect("not its lock: no-op");
        assert!(second.lock_table("t", "indexer-b").await.is_err());
        first.unlock_table("t", "indexer-a").await.expect("released");
        second.lock_table("t", "indexer-b").await.expect("free after unlock");

        // The holder dies (its lease is no longer renewed): the lock goes with the lease.
        drop(second);
        let mut freed = false;
        for _ in 0..60 {
            if first.lock_table("t", "indexer-a").await.is_ok() {
                freed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(freed, "the lock expired with its holder's lease");
    }
}
