//! The tables under one storage root: listing, opening (at the latest version, a pinned
//! one, or a weak-read snapshot), dropping; namespaces, table stats and facts. Writes are
//! [`crate::write`]'s, index builds [`crate::maintenance`]'s; both commit through
//! [`Catalog::load`] and [`Catalog::committed`].
//!
//! Every dataset is opened through one process-wide lance [`Session`] (shared metadata and
//! index caches, one object-store registry) and one [`ObjectStoreParams`] value, so the
//! registry reuses its object-store clients across tables and requests.
//!
//! Reads see the latest committed version (strong consistency) unless the catalog was
//! built [`with_weak_reads`](Catalog::with_weak_reads): then a snapshot of each table is
//! reused for up to the interval, unless the client's freshness floor asks for newer.
//! Writes always start from the latest version and refresh the snapshot they produce.

pub mod facts;
pub mod legacy_namespaces;
pub mod namespaces;
pub mod recorded;
pub mod stats;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lance::Dataset;
use lance::dataset::builder::DatasetBuilder;
use lance::dataset::{ReadParams, WriteMode, WriteParams};
use lance::io::{ObjectStore, ObjectStoreParams, StorageOptionsAccessor, WrappingObjectStore};
use lance::session::Session;
use lance_namespace_impls::DirectoryNamespace;
use lance_table::io::commit::CommitHandler;
use lancefleet_common::config::CacheConfig;
use lancefleet_common::storage::{StorageConfig, StorageRoot};
use moka::future::Cache;
use object_store::path::Path;
use tokio::sync::OnceCell;

use self::recorded::{Lookup, RecordedVersions};
use crate::cache::{CacheReads, ObjectCache};
use crate::error::{EngineError, Result};
use crate::store_metrics::StoreLayers;
use crate::table_id::{TableId, table_name_of_entry};
use crate::write::commit::retry_transient;
use crate::write::commit_handler::RetryingCommitHandler;

/// Which version of a table a read may see.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadVersion {
    /// Read exactly this version (time travel); `None` reads the latest.
    pub version: Option<u64>,
    /// Never serve a version older than this (the client's freshness floor).
    pub min_version: Option<u64>,
    /// Never serve a snapshot loaded before this instant (`x-lancedb-min-timestamp`).
    pub min_timestamp: Option<SystemTime>,
}

/// A table's latest version as loaded at one instant (weak reads reuse it).
#[derive(Debug, Clone)]
struct Snapshot {
    dataset: Dataset,
    loaded_at: SystemTime,
}

impl Snapshot {
    fn now(dataset: Dataset) -> Self {
        Self { dataset, loaded_at: SystemTime::now() }
    }

    /// Whether this snapshot may answer a read of the latest version under `read`.
    fn serves(&self, read: &ReadVersion) -> bool {
        read.min_version.is_none_or(|floor| self.dataset.version().version >= floor)
            && read.min_timestamp.is_none_or(|instant| self.loaded_at >= instant)
    }
}

/// Tables whose snapshots are cached at most, under weak read consistency.
const MAX_SNAPSHOTS: u64 = 10_000;
/// Namespaced tables whose locations are cached at most.
const MAX_LOCATIONS: u64 = 100_000;

/// The tables under one storage root.
#[derive(Debug, Clone)]
pub struct Catalog {
    root: StorageRoot,
    store_params: ObjectStoreParams,
    /// The storage options, as lance's directory namespace takes them.
    storage_options: HashMap<String, String>,
    session: Arc<Session>,
    /// lance's directory namespace over the root (see [`namespaces`]), opened on first use.
    directory: Arc<OnceCell<DirectoryNamespace>>,
    /// Namespaced tables' locations as the directory namespace last gave them, kept as
    /// long as weak reads keep snapshots; `None` under strong consistency (every read of a
    /// namespaced table asks the manifest: one check for a newer manifest version).
    locations: Option<Cache<TableId, String>>,
    /// Latest-version snapshots by table; `None` under strong consistency.
    snapshots: Option<Cache<TableId, Snapshot>>,
    /// Where the cluster records tables' latest versions, when it does.
    recorded: Option<RecordedVersions>,
    /// The cache immutable objects are read through, if any.
    cache: Option<ObjectCache>,
    /// How its tables commit: lance's handler, writing a lost manifest again.
    commit_handler: Option<Arc<dyn CommitHandler>>,
}

impl Catalog {
    /// The catalog of `storage`'s root, reading through the object cache `cache`
    /// configures when it is on (its metrics registered with the process's). Close the
    /// cache once no request can fill it any more.
    pub async fn open(storage: &StorageConfig, cache: &CacheConfig) -> Result<(Self, Option<ObjectCache>)> {
        let root =
            StorageRoot::resolve(&storage.root).map_err(|error| EngineError::invalid_input(error.to_string()))?;
        let cache = ObjectCache::open(cache).await?;
        if let Some(cache) = &cache {
            lancefleet_common::metrics::register(Box::new(cache.clone()));
        }
        Ok((Self::new(root, &storage.options, cache.clone()), cache))
    }

    /// A catalog over `root`, passing `storage_options` to lance's object stores and
    /// reading immutable objects through `cache` when there is one. The one wrapper is
    /// shared by every open, so lance's registry keeps reusing its object-store clients.
    pub fn new(root: StorageRoot, storage_options: &BTreeMap<String, String>, cache: Option<ObjectCache>) -> Self {
        let options =
            storage_options.iter().map(|(key, value)| (key.clone(), value.clone())).collect::<HashMap<_, _>>();
        let store_params = ObjectStoreParams {
            storage_options_accessor: (!options.is_empty())
                .then(|| Arc::new(StorageOptionsAccessor::with_static_options(options.clone()))),
            object_store_wrapper: Some(Arc::new(StoreLayers { cache: cache.clone() }) as Arc<dyn WrappingObjectStore>),
            ..Default::default()
        };
        let commit_handler = RetryingCommitHandler::for_root(root.uri());
        Self {
            root,
            store_params,
            storage_options: options,
            session: Arc::new(Session::default()),
            directory: Arc::new(OnceCell::new()),
            locations: None,
            snapshots: None,
            recorded: None,
            cache,
            commit_handler,
        }
    }

    /// Weak read consistency: reads of the latest version may be served from a snapshot
    /// up to `interval` old instead of checking the store for a newer version on every
    /// request. A zero interval keeps reads strong.
    pub fn with_weak_reads(mut self, interval: Duration) -> Self {
        self.snapshots =
            (!interval.is_zero()).then(|| Cache::builder().max_capacity(MAX_SNAPSHOTS).time_to_live(interval).build());
        self.locations =
            (!interval.is_zero()).then(|| Cache::builder().max_capacity(MAX_LOCATIONS).time_to_live(interval).build());
        self
    }

    /// Reads of the latest version learn it from `recorded` (the cluster's record on its
    /// event bus) instead of listing the store on every read; see [`recorded`].
    pub fn with_recorded_versions(mut self, recorded: RecordedVersions) -> Self {
        self.recorded = Some(recorded);
        self
    }

    /// What the object cache has served so far; zeros without a cache.
    pub fn cache_reads(&self) -> CacheReads {
        self.cache.as_ref().map(ObjectCache::reads).unwrap_or_default()
    }

    /// The storage root.
    pub fn root(&self) -> &StorageRoot {
        &self.root
    }

    /// Where a root-namespace table lives: `{root}/{name}.lance`.
    fn root_table_uri(&self, id: &TableId) -> String {
        self.root.child_uri([id.directory_name().as_str()])
    }

    /// Names of the tables of the root namespace (its `{name}.lance` directories), sorted.
    async fn list_root_tables(&self) -> Result<Vec<String>> {
        let (store, path) = self.store_at(self.root.uri()).await?;
        let entries = read_dir_or_empty(&store, path).await?;
        let mut names =
            entries.iter().filter_map(|entry| table_name_of_entry(entry)).map(str::to_string).collect::<Vec<_>>();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// The object store and path of `uri`.
    pub(crate) async fn store_at(&self, uri: &str) -> Result<(Arc<ObjectStore>, Path)> {
        Ok(ObjectStore::from_uri_and_params(self.session.store_registry(), uri, &self.store_params).await?)
    }

    /// Opens a table at the version `read` asks for.
    pub async fn open_table(&self, id: &TableId, read: ReadVersion) -> Result<Dataset> {
        if let (Some(version), Some(min_version)) = (read.version, read.min_version)
            && version < min_version
        {
            return Err(EngineError::invalid_input(format!(
                "version {version} is older than the requested minimum version {min_version}"
            )));
        }
        let dataset = match read.version {
            Some(version) => self.load(id, Some(version)).await?,
            None => self.latest(id, &read).await?,
        };
        if let Some(requested) = read.min_version {
            let latest = dataset.version().version;
            if latest < requested {
                return Err(EngineError::VersionNotYetVisible { name: id.to_string(), latest, requested });
            }
        }
        Ok(dataset)
    }

    /// The latest version, or under weak reads a snapshot recent enough for `read`.
    async fn latest(&self, id: &TableId, read: &ReadVersion) -> Result<Dataset> {
        let Some(snapshots) = &self.snapshots else {
            return self.load_latest(id).await;
        };
        if let Some(snapshot) = snapshots.get(id).await
            && snapshot.serves(read)
        {
            return Ok(snapshot.dataset);
        }
        let dataset = self.load_latest(id).await?;
        snapshots.insert(id.clone(), Snapshot::now(dataset.clone())).await;
        Ok(dataset)
    }

    /// The latest version of table `id`: the one the cluster recorded when it may be
    /// trusted, else listed from the store (and recorded when newer).
    async fn load_latest(&self, id: &TableId) -> Result<Dataset> {
        let Some(recorded) = &self.recorded else {
            return self.load(id, None).await;
        };
        let known = match recorded.lookup(id).await {
            Lookup::Open { version, generation } => {
                match recorded.open(id, version, generation, || self.load(id, Some(version))).await {
                    Ok(dataset) => {
                        recorded::count_lookup("recorded");
                        return Ok(dataset);
                    }
                    Err(error) => {
                        tracing::debug!(table = %id, version, %error, "the recorded version does not open; listing");
                        None
                    }
                }
            }
            Lookup::List(known) => known,
        };
        recorded::count_lookup("store");
        let dataset = self.load(id, None).await?;
        recorded.listed(id, dataset.version().version, known).await;
        Ok(dataset)
    }

    /// Records the version a write just committed as the table's snapshot, so this node
    /// reads its own writes under weak consistency too.
    pub(crate) async fn committed(&self, id: &TableId, dataset: Dataset) -> Dataset {
        if let Some(snapshots) = &self.snapshots {
            snapshots.insert(id.clone(), Snapshot::now(dataset.clone())).await;
        }
        dataset
    }

    /// Reads a table's manifest at `version`, or at the latest version from the store.
    /// A namespaced table whose cached location no longer opens is looked up again
    /// (another process may have dropped and re-created it elsewhere).
    pub(crate) async fn load(&self, id: &TableId, version: Option<u64>) -> Result<Dataset> {
        let uri = self.table_uri(id).await?;
        match self.open_dataset(&uri, &id.to_string(), version).await {
            Err(EngineError::TableNotFound { .. }) if !id.namespace().is_root() && self.forget_location(id).await => {
                let current = self.table_uri(id).await?;
                self.open_dataset(&current, &id.to_string(), version).await
            }
            opened => opened,
        }
    }

    /// Opens the dataset at `uri` (named `name` in errors) at `version` or its latest.
    async fn open_dataset(&self, uri: &str, name: &str, version: Option<u64>) -> Result<Dataset> {
        let load = || {
            let builder = DatasetBuilder::from_uri(uri).with_read_params(self.read_params());
            match version {
                Some(version) => builder.with_version(version).load(),
                None => builder.load(),
            }
        };
        let error = match retry_transient("loading a table", load).await {
            Ok(dataset) => return Ok(dataset),
            Err(error) => error,
        };
        let name = name.to_string();
        Err(match (error, version) {
            (lance::Error::NotFound { .. } | lance::Error::VersionNotFound { .. }, Some(version)) => {
                EngineError::VersionNotFound { name, version }
            }
            // A missing manifest reads as a missing dataset; the table may still exist.
            (lance::Error::DatasetNotFound { .. }, Some(version)) if self.exists_at(uri).await => {
                EngineError::VersionNotFound { name, version }
            }
            (lance::Error::DatasetNotFound { .. }, _) => EngineError::TableNotFound { name },
            (error, _) => error.into(),
        })
    }

    /// Whether a dataset exists at `uri` (at any version).
    async fn exists_at(&self, uri: &str) -> bool {
        DatasetBuilder::from_uri(uri).with_read_params(self.read_params()).load().await.is_ok()
    }

    /// Opens the dataset at `uri` at exactly `version`, committed at `committed_at` (its
    /// [`commit_time`]; 0: whenever): how plan executors open the version a query node
    /// pinned. A table dropped and created again numbers its versions from 1 again, so a
    /// version of another commit time is another table's and not found. `uri` must lie
    /// under this catalog's root (a plan never makes an executor read anything else).
    pub async fn open_pinned(&self, uri: &str, version: u64, committed_at: u64) -> Result<Dataset> {
        let inside_root =
            uri.strip_prefix(self.root.uri()).and_then(|rest| rest.strip_prefix('/')).is_some_and(|rest| {
                !rest.is_empty() && rest.split('/').all(|part| !part.is_empty() && part != ".." && part != ".")
            });
        if !inside_root {
            return Err(EngineError::invalid_input(format!(
                "table uri '{uri}' is not under this node's storage root '{}'",
                self.root.uri()
            )));
        }
        let dataset = self.open_dataset(uri, uri, Some(version)).await?;
        if committed_at != 0 && commit_time(&dataset) != committed_at {
            return Err(EngineError::VersionNotFound { name: uri.to_string(), version });
        }
        Ok(dataset)
    }

    /// Removes a table and every version of it; returns where it was.
    pub async fn drop_table(&self, id: &TableId) -> Result<String> {
        if !id.namespace().is_root() {
            return self.drop_namespaced_table(id).await;
        }
        let uri = self.root_table_uri(id);
        // A declared table has only its marker; anything else must open, which turns a
        // missing table into a 404 and refuses to delete a directory that is not a table.
        let (store, path) = self.store_at(&uri).await?;
        if !store.exists(&path.clone().join(namespaces::RESERVED_MARKER)).await? {
            self.load(id, None).await?;
        }
        store.remove_dir_all(path).await?;
        if let Some(snapshots) = &self.snapshots {
            snapshots.invalidate(id).await;
        }
        Ok(uri)
    }

    /// How every dataset of this catalog is read: one session, one store configuration.
    pub(crate) fn read_params(&self) -> ReadParams {
        ReadParams {
            session: Some(self.session.clone()),
            store_options: Some(self.store_params.clone()),
            commit_handler: self.commit_handler.clone(),
            ..Default::default()
        }
    }

    /// How every write of this catalog is made.
    pub(crate) fn write_params(&self, mode: WriteMode) -> WriteParams {
        WriteParams {
            mode,
            session: Some(self.session.clone()),
            store_params: Some(self.store_params.clone()),
            // Old versions are cleaned by maintenance, never inline in a client's write.
            skip_auto_cleanup: true,
            commit_handler: self.commit_handler.clone(),
            ..Default::default()
        }
    }
}

/// When `dataset`'s version was committed, in nanoseconds since the Unix epoch: with the
/// version number, what names a version across a drop and re-create of its table.
pub fn commit_time(dataset: &Dataset) -> u64 {
    u64::try_from(dataset.manifest().timestamp_nanos).unwrap_or(u64::MAX)
}

/// The entries of a directory; a directory that does not exist is empty.
pub(crate) async fn read_dir_or_empty(store: &ObjectStore, path: Path) -> Result<Vec<String>> {
    match store.read_dir(path).await {
        Ok(entries) => Ok(entries),
        Err(lance::Error::NotFound { .. }) => Ok(Vec::new()),
        Err(error) => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::write::{CreateMode, InsertMode};
    use arrow_array::{Int64Array, RecordBatch};
    use arrow_schema::SchemaRef;
    use arrow_schema::{DataType, Field, Schema};

    fn rows(values: &[i64]) -> (SchemaRef, Vec<RecordBatch>) {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(values.to_vec()))])
            .expect("valid batch");
        (schema, vec![batch])
    }

    fn latest() -> ReadVersion {
        ReadVersion::default()
    }

    #[tokio::test]
    async fn weak_reads_reuse_a_snapshot_until_the_client_asks_for_newer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = StorageRoot::resolve(dir.path().to_str().expect("utf-8 path")).expect("root");
        let weak = Catalog::new(root.clone(), &BTreeMap::new(), None).with_weak_reads(Duration::from_secs(3600));
        let other_node = Catalog::new(root, &BTreeMap::new(), None);
        let id = TableId::parse("t").expect("valid id");

        let (schema, batches) = rows(&[1, 2]);
        let created = weak.create_table(&id, schema, batches, CreateMode::Create).await.expect("created");
        assert_eq!(weak.open_table(&id, latest()).await.expect("read").version().version, created.version().version);

        // Another node appends: the weak node keeps serving its snapshot, the strong one
        // sees the write at once.
        let (schema, batches) = rows(&[3]);
        let appended = other_node.insert(&id, schema, batches, InsertMode::Append).await.expect("appended");
        let new_version = appended.version().version;
        assert!(new_version > created.version().version);
        assert_eq!(weak.open_table(&id, latest()).await.expect("read").version().version, created.version().version);
        assert_eq!(other_node.open_table(&id, latest()).await.expect("read").version().version, new_version);

        // The freshness floor forces a refresh: by version, and by snapshot instant.
        let by_version = ReadVersion { min_version: Some(new_version), ..latest() };
        assert_eq!(weak.open_table(&id, by_version).await.expect("read").version().version, new_version);
        let (schema, batches) = rows(&[4]);
        let newest = other_node.insert(&id, schema, batches, InsertMode::Append).await.expect("appended");
        let by_instant = ReadVersion { min_timestamp: Some(SystemTime::now()), ..latest() };
        assert_eq!(weak.open_table(&id, by_instant).await.expect("read").version().version, newest.version().version);

        // A version newer than any committed one is not served from anywhere.
        let future = ReadVersion { min_version: Some(newest.version().version + 1), ..latest() };
        assert!(matches!(weak.open_table(&id, future).await, Err(EngineError::VersionNotYetVisible { .. })));

        // The weak node reads its own writes, and forgets a table it dropped.
        let (schema, batches) = rows(&[5]);
        let own = weak.insert(&id, schema, batches, InsertMode::Append).await.expect("appended");
        assert_eq!(weak.open_table(&id, latest()).await.expect("read").version().version, own.version().version);
        weak.drop_table(&id).await.expect("dropped");
        assert!(matches!(weak.open_table(&id, latest()).await, Err(EngineError::TableNotFound { .. })));
    }

    #[tokio::test]
    async fn strong_reads_always_see_the_latest_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = StorageRoot::resolve(dir.path().to_str().expect("utf-8 path")).expect("root");
        let strong = Catalog::new(root.clone(), &BTreeMap::new(), None).with_weak_reads(Duration::ZERO);
        let other_node = Catalog::new(root, &BTreeMap::new(), None);
        let id = TableId::parse("t").expect("valid id");
        let (schema, batches) = rows(&[1]);
        strong.create_table(&id, schema, batches, CreateMode::Create).await.expect("created");
        strong.open_table(&id, latest()).await.expect("read");
        let (schema, batches) = rows(&[2]);
        let appended = other_node.insert(&id, schema, batches, InsertMode::Append).await.expect("appended");
        let seen = strong.open_table(&id, latest()).await.expect("read");
        assert_eq!(seen.version().version, appended.version().version);
    }

    #[tokio::test]
    async fn a_missing_version_of_an_existing_table_is_not_a_missing_table() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = StorageRoot::resolve(dir.path().to_str().expect("utf-8 path")).expect("root");
        let catalog = Catalog::new(root, &BTreeMap::new(), None);
        let id = TableId::parse("t").expect("valid id");
        let (schema, batches) = rows(&[1]);
        catalog.create_table(&id, schema, batches, CreateMode::Create).await.expect("created");
        assert!(matches!(catalog.load(&id, Some(999)).await, Err(EngineError::VersionNotFound { version: 999, .. })));
        let missing = TableId::parse("missing").expect("valid id");
        assert!(matches!(catalog.load(&missing, Some(1)).await, Err(EngineError::TableNotFound { .. })));
        assert!(matches!(catalog.load(&missing, None).await, Err(EngineError::TableNotFound { .. })));
    }
}
