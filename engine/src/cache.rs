//! The cache tier: a read-through cache of object-store bytes on local memory and disk
//! (foyer `HybridCache`), installed under lance as a [`WrappingObjectStore`] so that data
//! files, index files and deletion files are read from S3/GCS/Azure once and then served
//! locally (`shared/DESIGN.md`, decision 3).
//!
//! - Only immutable objects are cached: lance names data, index, deletion and transaction
//!   files by UUID and never rewrites them. Manifests, the version hint, tags, listings,
//!   conditional reads and every write pass straight through.
//! - Entries are aligned chunks of `chunk_bytes`, keyed by (store, path, chunk index), so
//!   a range is served from the chunks it overlaps whatever lance's request coalescing did.
//!   Object sizes are cached too, so suffix reads and HEADs need no round trip.
//! - Misses are single-flight (foyer's `get_or_fetch`): concurrent readers of one chunk
//!   wait for one upstream GET. Hits are looked up with `get` first: with the
//!   write-on-insertion policy, `get_or_fetch` queues every entry it returns for the disk
//!   tier again, hits included, which rewrote each hit chunk to disk (a warm IVF_PQ query
//!   on S3 took 30–48 ms instead of 9–10 ms with three executors on two cores).
//! - With a disk directory the cache survives restarts (foyer recovers the block files).
//! - With `cache.encryption_key_file` the disk tier is encrypted at rest ([`seal`]).

mod seal;

use std::fmt;
use std::future::Future;
use std::io::{Read, Write};
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use foyer::{
    BlockEngineConfig, Code, DeviceBuilder, FsDeviceBuilder, HybridCache, HybridCacheBuilder, HybridCacheEntry,
    HybridCachePolicy, HybridCacheProperties, Location, RecoverMode, S3FifoConfig, Source,
};
use futures::future::try_join_all;
use futures::stream::{self, BoxStream, StreamExt};
use lance::io::WrappingObjectStore;
use lancefleet_common::config::CacheConfig;
use object_store::list::PaginatedListStore;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts};

use self::seal::{Chunk, DiskCipher};
use crate::error::{EngineError, Result};

/// Chunk index of the entry that holds an object's size instead of its bytes.
const SIZE_ENTRY: u64 = u64::MAX;

/// Key of one cached chunk: the object (store prefix and path) and the chunk index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChunkKey {
    object: String,
    chunk: u64,
}

impl ChunkKey {
    /// The entry's identity, to which its sealed bytes are bound.
    fn context(&self) -> Vec<u8> {
        [self.object.as_bytes(), &self.chunk.to_le_bytes()].concat()
    }
}

impl Code for ChunkKey {
    fn encode(&self, writer: &mut impl Write) -> foyer::Result<()> {
        self.object.encode(writer)?;
        self.chunk.encode(writer)
    }

    fn decode(reader: &mut impl Read) -> foyer::Result<Self> {
        Ok(Self { object: String::decode(reader)?, chunk: u64::decode(reader)? })
    }

    fn estimated_size(&self) -> usize {
        self.object.estimated_size() + self.chunk.estimated_size()
    }
}

/// Counters of one cache's work. They belong to the cache instance; a node exports them
/// by registering the cache (a Prometheus collector) with [`lancefleet_common::metrics`].
#[derive(Debug, Clone)]
pub struct CacheStats {
    /// `lancefleet_cache_hits_total{tier}`: chunk reads answered from `memory` or `disk`.
    pub hits: IntCounterVec,
    /// `lancefleet_cache_misses_total`: chunk reads that went to the object store.
    pub misses: IntCounter,
    /// `lancefleet_cache_read_bytes_total{tier}`: bytes served from `memory`, `disk` or
    /// fetched from the `object_store`.
    pub bytes: IntCounterVec,
    /// `lancefleet_cache_index_read_bytes_total{tier}`: the part of `bytes` read from index
    /// files (`_indices/`), the share of an index this node opens.
    pub index_bytes: IntCounterVec,
    /// `lancefleet_cache_bypassed_reads_total`: reads of mutable objects or conditional
    /// reads, never cached.
    pub bypassed: IntCounter,
    /// `lancefleet_cache_unreadable_entries_total`: disk entries that did not open (sealed
    /// by another key, altered or corrupt), dropped and read again from the object store.
    pub unreadable: IntCounter,
    /// `lancefleet_cache_memory_usage_bytes`: weight held by the memory tier.
    pub memory_usage: IntGauge,
    /// `lancefleet_cache_capacity_bytes{tier}`: configured capacity of the `memory` and
    /// `disk` tiers (0 without a disk tier).
    pub capacity: IntGaugeVec,
}

impl CacheStats {
    fn new() -> Result<Self> {
        let metric = |error: prometheus::Error| EngineError::internal(format!("cache metrics: {error}"));
        Ok(Self {
            hits: IntCounterVec::new(
                Opts::new("lancefleet_cache_hits_total", "Chunk reads answered by the cache, by tier."),
                &["tier"],
            )
            .map_err(metric)?,
            misses: IntCounter::new("lancefleet_cache_misses_total", "Chunk reads fetched from the object store.")
                .map_err(metric)?,
            bytes: IntCounterVec::new(
                Opts::new("lancefleet_cache_read_bytes_total", "Bytes read, by tier (memory, disk, object_store)."),
                &["tier"],
            )
            .map_err(metric)?,
            index_bytes: IntCounterVec::new(
                Opts::new(
                    "lancefleet_cache_index_read_bytes_total",
                    "Bytes of index files read, by tier (memory, disk, object_store).",
                ),
                &["tier"],
            )
            .map_err(metric)?,
            bypassed: IntCounter::new(
                "lancefleet_cache_bypassed_reads_total",
                "Reads of mutable objects or conditional reads, passed to the object store.",
            )
            .map_err(metric)?,
            unreadable: IntCounter::new(
                "lancefleet_cache_unreadable_entries_total",
                "Disk-tier entries that did not open (another key, altered, corrupt), read again upstream.",
            )
            .map_err(metric)?,
            memory_usage: IntGauge::new("lancefleet_cache_memory_usage_bytes", "Bytes held by the memory tier.")
                .map_err(metric)?,
            capacity: IntGaugeVec::new(
                Opts::new("lancefleet_cache_capacity_bytes", "Configured capacity of each cache tier (memory, disk)."),
                &["tier"],
            )
            .map_err(metric)?,
        })
    }
}

impl CacheStats {
    /// Counts `bytes` read from `tier`, of an index file when `index`.
    fn count_bytes(&self, tier: &str, bytes: usize, index: bool) {
        self.bytes.with_label_values(&[tier]).inc_by(bytes as u64);
        if index {
            self.index_bytes.with_label_values(&[tier]).inc_by(bytes as u64);
        }
    }
}

/// Chunk reads and bytes a cache has served so far, by tier (process-wide: every query
/// of the process counts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheReads {
    /// Chunk reads the memory tier answered.
    pub memory_hits: u64,
    /// Chunk reads the disk tier answered.
    pub disk_hits: u64,
    /// Chunk reads fetched from the object store.
    pub misses: u64,
    /// Bytes served from memory.
    pub memory_bytes: u64,
    /// Bytes served from disk.
    pub disk_bytes: u64,
    /// Bytes fetched from the object store.
    pub fetched_bytes: u64,
}

impl CacheReads {
    /// Chunk reads either tier answered.
    pub fn hits(&self) -> u64 {
        self.memory_hits + self.disk_hits
    }

    /// What was served between `earlier` and these counts.
    pub fn since(&self, earlier: &CacheReads) -> CacheReads {
        CacheReads {
            memory_hits: self.memory_hits.saturating_sub(earlier.memory_hits),
            disk_hits: self.disk_hits.saturating_sub(earlier.disk_hits),
            misses: self.misses.saturating_sub(earlier.misses),
            memory_bytes: self.memory_bytes.saturating_sub(earlier.memory_bytes),
            disk_bytes: self.disk_bytes.saturating_sub(earlier.disk_bytes),
            fetched_bytes: self.fetched_bytes.saturating_sub(earlier.fetched_bytes),
        }
    }
}

/// The process-wide cache; cheap to clone.
#[derive(Clone)]
pub struct ObjectCache {
    cache: HybridCache<ChunkKey, Chunk>,
    chunk_bytes: u64,
    stats: CacheStats,
    /// Seals the disk tier's entries, with `cache.encryption_key_file`.
    cipher: Option<Arc<DiskCipher>>,
}

impl fmt::Debug for ObjectCache {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("ObjectCache")
            .field("chunk_bytes", &self.chunk_bytes)
            .field("encrypted", &self.cipher.is_some())
            .finish_non_exhaustive()
    }
}

impl ObjectCache {
    /// Builds the cache of `config`, recovering the disk tier's entries from a previous
    /// run. `None` when the cache is disabled.
    pub async fn open(config: &CacheConfig) -> Result<Option<Self>> {
        if !config.enabled() {
            return Ok(None);
        }
        let chunk_bytes = config.chunk.bytes();
        let memory = config.memory.as_usize();
        let cipher = match &config.encryption_key_file {
            Some(path) => Some(Arc::new(DiskCipher::from_file(path)?)),
            None => None,
        };
        let builder = HybridCacheBuilder::new()
            .with_name("lancefleet_object_cache")
            .with_policy(HybridCachePolicy::WriteOnInsertion)
            .memory(memory)
            .with_eviction_config(S3FifoConfig::default())
            .with_weighter(|key: &ChunkKey, value: &Chunk| key.object.len() + value.len())
            .storage();
        let builder = match &config.disk_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                seal::prepare_disk_dir(dir, cipher.as_deref())?;
                let device =
                    FsDeviceBuilder::new(dir).with_capacity(config.disk.as_usize()).build().map_err(cache_error)?;
                let block = config.disk_block().as_usize();
                builder
                    .with_engine_config(BlockEngineConfig::new(device).with_block_size(block))
                    .with_recover_mode(RecoverMode::Quiet)
            }
            None => builder,
        };
        let cache = builder.build().await.map_err(cache_error)?;
        let stats = CacheStats::new()?;
        let disk = if config.disk_dir.is_some() { config.disk.bytes() } else { 0 };
        for (tier, bytes) in [("memory", config.memory.bytes()), ("disk", disk)] {
            stats.capacity.with_label_values(&[tier]).set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        for tier in ["memory", "disk", "object_store"] {
            stats.index_bytes.with_label_values(&[tier]);
        }
        if let Some(dir) = &config.disk_dir {
            let encrypted = cipher.is_some();
            tracing::info!(dir = %dir.display(), disk = %config.disk, memory = %config.memory, encrypted, "object cache opened");
        }
        Ok(Some(Self { cache, chunk_bytes, stats, cipher }))
    }

    /// The key of `chunk` of `location` in the store `prefix`: named by its path, or by a
    /// keyed hash of it when the disk tier is encrypted.
    fn key(&self, prefix: &str, location: &Path, chunk: u64) -> ChunkKey {
        let object = format!("{prefix}/{location}");
        let object = match &self.cipher {
            Some(cipher) => cipher.name(&object),
            None => object,
        };
        ChunkKey { object, chunk }
    }

    /// A value of plain `bytes` for `key`, sealed on its way to disk if the tier is encrypted.
    fn value(&self, key: &ChunkKey, bytes: Bytes) -> Chunk {
        Chunk::new(bytes, self.cipher.as_ref(), &key.context())
    }

    /// The plain bytes of `entry`. A chunk that came back sealed from disk is opened and put
    /// back into memory opened; one that does not open is removed (`None`: a miss).
    fn readable(&self, key: &ChunkKey, entry: &HybridCacheEntry<ChunkKey, Chunk>) -> Option<Bytes> {
        let chunk = entry.value();
        if !chunk.is_sealed() {
            return chunk.open(None, &[]);
        }
        let Some(bytes) = chunk.open(self.cipher.as_deref(), &key.context()) else {
            self.stats.unreadable.inc();
            self.cache.remove(key);
            return None;
        };
        let in_memory = HybridCacheProperties::default().with_location(Location::InMem);
        self.cache.insert_with_properties(key.clone(), self.value(key, bytes.clone()), in_memory);
        Some(bytes)
    }

    /// The cache's counters.
    pub fn stats(&self) -> &CacheStats {
        &self.stats
    }

    /// Chunk reads answered so far (both tiers), and fetched from the object store.
    pub fn reads(&self) -> CacheReads {
        let stats = &self.stats;
        CacheReads {
            memory_hits: stats.hits.with_label_values(&["memory"]).get(),
            disk_hits: stats.hits.with_label_values(&["disk"]).get(),
            misses: stats.misses.get(),
            memory_bytes: stats.bytes.with_label_values(&["memory"]).get(),
            disk_bytes: stats.bytes.with_label_values(&["disk"]).get(),
            fetched_bytes: stats.bytes.with_label_values(&["object_store"]).get(),
        }
    }

    /// Flushes the disk tier and closes the cache (at shutdown, so the next start
    /// recovers everything written).
    pub async fn close(&self) -> Result<()> {
        self.cache.close().await.map_err(cache_error)
    }
}

impl Collector for ObjectCache {
    fn desc(&self) -> Vec<&Desc> {
        let stats = &self.stats;
        [
            stats.hits.desc(),
            stats.misses.desc(),
            stats.bytes.desc(),
            stats.index_bytes.desc(),
            stats.bypassed.desc(),
            stats.unreadable.desc(),
            stats.memory_usage.desc(),
            stats.capacity.desc(),
        ]
        .concat()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let stats = &self.stats;
        stats.memory_usage.set(i64::try_from(self.cache.memory().usage()).unwrap_or(i64::MAX));
        [
            stats.hits.collect(),
            stats.misses.collect(),
            stats.bytes.collect(),
            stats.index_bytes.collect(),
            stats.bypassed.collect(),
            stats.unreadable.collect(),
            stats.memory_usage.collect(),
            stats.capacity.collect(),
        ]
        .concat()
    }
}

fn cache_error(error: foyer::Error) -> EngineError {
    EngineError::internal(format!("object cache: {error}"))
}

impl WrappingObjectStore for ObjectCache {
    fn wrap(&self, store_prefix: &str, original: Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore> {
        Arc::new(CachingStore { inner: original, prefix: store_prefix.to_string(), cache: self.clone() })
    }

    fn wrap_paginated(
        &self,
        _store_prefix: &str,
        original: Arc<dyn PaginatedListStore>,
    ) -> Option<Arc<dyn PaginatedListStore>> {
        // Listings are never cached and paths are not rewritten: keep lance's pushdown.
        Some(original)
    }
}

/// Whether `path` lies in a directory named `dir`.
fn in_dir(path: &Path, dir: &str) -> bool {
    let path = path.as_ref();
    path.starts_with(&format!("{dir}/")) || path.contains(&format!("/{dir}/"))
}

/// Whether `path` names an object lance never rewrites.
pub fn is_immutable(path: &Path) -> bool {
    (in_dir(path, "data") && path.as_ref().ends_with(".lance"))
        || is_index(path)
        || in_dir(path, "_deletions")
        || in_dir(path, "_transactions")
}

/// Whether `path` names a file of an index.
fn is_index(path: &Path) -> bool {
    in_dir(path, "_indices")
}

/// An object store whose reads of immutable objects go through the cache.
#[derive(Debug)]
struct CachingStore {
    inner: Arc<dyn ObjectStore>,
    prefix: String,
    cache: ObjectCache,
}

impl fmt::Display for CachingStore {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "Cached({})", self.inner)
    }
}

impl CachingStore {
    /// The plain bytes of (`location`, `chunk`) and the tier that had them: a hit as it
    /// is, a miss fetched once by `fetch` (single-flight) and queued for the disk tier once.
    async fn lookup<F, Fut>(&self, location: &Path, chunk: u64, fetch: F) -> object_store::Result<(Bytes, Source)>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = object_store::Result<Bytes>> + Send + 'static,
    {
        let cache = &self.cache;
        let key = cache.key(&self.prefix, location, chunk);
        if let Some(entry) = cache.cache.get(&key).await.map_err(|error| generic(location, error))?
            && let Some(bytes) = cache.readable(&key, &entry)
        {
            return Ok((bytes, entry.source()));
        }
        let fetched = {
            let (cache, key) = (cache.clone(), key.clone());
            let fetch = fetch();
            || async move { fetch.await.map(|bytes| cache.value(&key, bytes)) }
        };
        let entry = cache.cache.get_or_fetch(&key, fetched).await.map_err(|error| generic(location, error))?;
        let bytes = cache.readable(&key, &entry).ok_or_else(|| generic(location, "a cache entry does not open"))?;
        Ok((bytes, entry.source()))
    }

    /// The object's size, from the cache or one HEAD.
    async fn size(&self, location: &Path) -> object_store::Result<u64> {
        let inner = self.inner.clone();
        let path = location.clone();
        let (entry, _) = self
            .lookup(location, SIZE_ENTRY, || async move {
                let meta = inner.head(&path).await?;
                Ok::<_, object_store::Error>(Bytes::copy_from_slice(&meta.size.to_le_bytes()))
            })
            .await?;
        let bytes: [u8; 8] = entry.as_ref().try_into().map_err(|_| generic(location, "corrupt size entry"))?;
        Ok(u64::from_le_bytes(bytes))
    }

    /// One chunk of the object, from the cache or one ranged GET.
    async fn chunk(&self, location: &Path, chunk: u64, size: u64) -> object_store::Result<Bytes> {
        let start = chunk * self.cache.chunk_bytes;
        let end = (start + self.cache.chunk_bytes).min(size);
        let inner = self.inner.clone();
        let path = location.clone();
        let stats = self.cache.stats.clone();
        let index = is_index(location);
        let (value, source) = self
            .lookup(location, chunk, || async move {
                let bytes = inner.get_range(&path, start..end).await?;
                stats.misses.inc();
                stats.count_bytes("object_store", bytes.len(), index);
                Ok::<_, object_store::Error>(bytes)
            })
            .await?;
        let tier = match source {
            Source::Memory => "memory",
            Source::Disk => "disk",
            Source::Outer => return Ok(value),
        };
        self.cache.stats.hits.with_label_values(&[tier]).inc();
        self.cache.stats.count_bytes(tier, value.len(), index);
        Ok(value)
    }

    async fn cached_get(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        let size = self.size(location).await?;
        let meta = ObjectMeta {
            location: location.clone(),
            last_modified: chrono::DateTime::UNIX_EPOCH,
            size,
            e_tag: None,
            version: None,
        };
        let range = resolve_range(options.range.as_ref(), size).map_err(|message| generic(location, message))?;
        if options.head || range.is_empty() {
            let payload = GetResultPayload::Stream(stream::empty().boxed());
            return Ok(GetResult {
                payload,
                meta,
                range,
                attributes: Default::default(),
                extensions: Default::default(),
            });
        }
        let chunk_bytes = self.cache.chunk_bytes;
        let chunks = (range.start / chunk_bytes)..=((range.end - 1) / chunk_bytes);
        let fetched = try_join_all(chunks.clone().map(|chunk| self.chunk(location, chunk, size))).await?;
        let pieces = chunks
            .zip(fetched)
            .map(|(chunk, bytes)| {
                let chunk_start = chunk * chunk_bytes;
                let from = range.start.saturating_sub(chunk_start).min(bytes.len() as u64) as usize;
                let to = (range.end - chunk_start).min(bytes.len() as u64) as usize;
                Ok(bytes.slice(from..to))
            })
            .collect::<Vec<_>>();
        let payload = GetResultPayload::Stream(stream::iter(pieces).boxed());
        Ok(GetResult { payload, meta, range, attributes: Default::default(), extensions: Default::default() })
    }
}

/// The byte range a request asks for, clamped to the object as object stores do.
fn resolve_range(range: Option<&GetRange>, size: u64) -> std::result::Result<Range<u64>, String> {
    match range {
        None => Ok(0..size),
        Some(GetRange::Bounded(range)) if range.start >= range.end || range.start >= size => {
            Err(format!("range {}..{} is not satisfiable for an object of {size} bytes", range.start, range.end))
        }
        Some(GetRange::Bounded(range)) => Ok(range.start..range.end.min(size)),
        Some(GetRange::Offset(offset)) if *offset >= size => {
            Err(format!("offset {offset} is not satisfiable for an object of {size} bytes"))
        }
        Some(GetRange::Offset(offset)) => Ok(*offset..size),
        Some(GetRange::Suffix(length)) => Ok(size.saturating_sub(*length)..size),
    }
}

fn generic(location: &Path, error: impl fmt::Display) -> object_store::Error {
    object_store::Error::Generic { store: "lancefleet-cache", source: format!("{location}: {error}").into() }
}

fn is_conditional(options: &GetOptions) -> bool {
    options.if_match.is_some()
        || options.if_none_match.is_some()
        || options.if_modified_since.is_some()
        || options.if_unmodified_since.is_some()
        || options.version.is_some()
}

#[async_trait]
impl ObjectStore for CachingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        // Commits are conditional puts: forwarded untouched.
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        if is_immutable(location) && !is_conditional(&options) {
            return self.cached_get(location, options).await;
        }
        self.cache.stats.bypassed.inc();
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        // Deleted objects' chunks age out: their names are never reused.
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: object_store::RenameOptions,
    ) -> object_store::Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use lancefleet_common::config::ByteSize;
    use object_store::memory::InMemory;

    use super::*;

    async fn cache(chunk_bytes: u64, disk_dir: Option<PathBuf>) -> ObjectCache {
        encrypted_cache(chunk_bytes, disk_dir, None).await
    }

    async fn encrypted_cache(chunk_bytes: u64, disk_dir: Option<PathBuf>, key: Option<PathBuf>) -> ObjectCache {
        let config = CacheConfig {
            memory: ByteSize::mib(8),
            disk_dir,
            disk: ByteSize::mib(64),
            chunk: ByteSize(chunk_bytes),
            encryption_key_file: key,
        };
        ObjectCache::open(&config).await.expect("opens").expect("enabled")
    }

    #[test]
    fn only_immutable_lance_objects_are_cached() {
        for path in [
            "db/t.lance/data/0a1b.lance",
            "t.lance/_indices/5f/index.idx",
            "t.lance/_deletions/0-1-77.arrow",
            "t.lance/_transactions/3-ab.txn",
        ] {
            assert!(is_immutable(&Path::from(path)), "{path}");
        }
        for path in [
            "t.lance/_versions/3.manifest",
            "t.lance/_versions/latest_version_hint.json",
            "t.lance/_refs/tags/v1.json",
            "t.lance/data/notes.txt",
        ] {
            assert!(!is_immutable(&Path::from(path)), "{path}");
        }
    }

    #[test]
    fn ranges_resolve_like_object_stores() {
        assert_eq!(resolve_range(None, 10), Ok(0..10));
        assert_eq!(resolve_range(Some(&GetRange::Bounded(2..50)), 10), Ok(2..10));
        assert_eq!(resolve_range(Some(&GetRange::Offset(4)), 10), Ok(4..10));
        assert_eq!(resolve_range(Some(&GetRange::Suffix(3)), 10), Ok(7..10));
        assert_eq!(resolve_range(Some(&GetRange::Suffix(30)), 10), Ok(0..10));
        assert!(resolve_range(Some(&GetRange::Bounded(10..12)), 10).is_err());
        assert!(resolve_range(Some(&GetRange::Offset(10)), 10).is_err());
    }

    /// Deterministic pseudo-random numbers (xorshift), so failures reproduce.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, bound: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % bound.max(1)
        }
    }

    #[tokio::test]
    async fn arbitrary_ranges_equal_the_uncached_store_across_chunk_boundaries() {
        let upstream: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let path = Path::from("t.lance/data/abc.lance");
        let content = (0..200_000u32).map(|index| (index.wrapping_mul(2_654_435_761) >> 13) as u8).collect::<Vec<_>>();
        upstream.put(&path, PutPayload::from(content.clone())).await.expect("put");
        let cache = cache(64 << 10, None).await;
        let cached = cache.wrap("memory", upstream.clone());
        let size = content.len() as u64;
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..300 {
            let range = match rng.below(4) {
                0 => {
                    let start = rng.below(size);
                    GetRange::Bounded(start..start + 1 + rng.below(size - start + 1000))
                }
                1 => GetRange::Offset(rng.below(size)),
                2 => GetRange::Suffix(1 + rng.below(size + 10)),
                _ => {
                    // Exactly on chunk boundaries.
                    let chunk = 64 << 10;
                    let start = rng.below(3) * chunk;
                    GetRange::Bounded(start..start + chunk)
                }
            };
            let options = GetOptions { range: Some(range.clone()), ..Default::default() };
            let want = upstream.get_opts(&path, options.clone()).await.expect("upstream");
            let want_range = want.range.clone();
            let want = want.bytes().await.expect("bytes");
            let got = cached.get_opts(&path, options).await.expect("cached");
            assert_eq!(got.range, want_range, "round {round}: {range:?}");
            assert_eq!(got.meta.size, size);
            assert_eq!(got.bytes().await.expect("bytes"), want, "round {round}: {range:?}");
        }
        let stats = cache.stats();
        assert_eq!(stats.misses.get(), 4, "each of the 4 chunks fetched once");
        assert!(stats.hits.with_label_values(&["memory"]).get() > 300);
        let whole = cached.get(&path).await.expect("whole").bytes().await.expect("bytes");
        assert_eq!(whole.as_ref(), content.as_slice());
        assert_eq!(cached.head(&path).await.expect("head").size, size);
    }

    #[tokio::test]
    async fn mutable_objects_and_writes_pass_through() {
        let upstream: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let cache = cache(64 << 10, None).await;
        let cached = cache.wrap("memory", upstream.clone());
        let hint = Path::from("t.lance/_versions/latest_version_hint.json");
        cached.put(&hint, PutPayload::from_static(b"1")).await.expect("put");
        assert_eq!(cached.get(&hint).await.expect("get").bytes().await.expect("bytes").as_ref(), b"1");
        upstream.put(&hint, PutPayload::from_static(b"2")).await.expect("put");
        assert_eq!(cached.get(&hint).await.expect("get").bytes().await.expect("bytes").as_ref(), b"2");
        assert_eq!(cache.stats().misses.get(), 0);
        assert_eq!(cache.stats().bypassed.get(), 2);
    }

    #[tokio::test]
    async fn the_disk_tier_survives_a_restart() {
        let dir = tempfile::tempdir().expect("dir");
        let upstream: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let path = Path::from("t.lance/data/warm.lance");
        upstream.put(&path, PutPayload::from(vec![7u8; 300_000])).await.expect("put");
        let first = cache(64 << 10, Some(dir.path().to_path_buf())).await;
        let read = |cache: &ObjectCache| {
            let store = cache.wrap("memory", upstream.clone());
            let path = path.clone();
            async move { store.get(&path).await.expect("get").bytes().await.expect("bytes") }
        };
        assert_eq!(read(&first).await.len(), 300_000);
        first.close().await.expect("close");

        let second = cache(64 << 10, Some(dir.path().to_path_buf())).await;
        assert_eq!(read(&second).await.len(), 300_000);
        let stats = second.stats();
        assert_eq!(stats.misses.get(), 0, "every chunk came back from disk");
        assert!(stats.hits.with_label_values(&["disk"]).get() >= 5);
    }

    #[tokio::test]
    async fn an_encrypted_disk_tier_serves_its_own_entries_and_nothing_after_a_key_change() {
        let dir = tempfile::tempdir().expect("dir");
        let keys = tempfile::tempdir().expect("keys");
        let (key_a, key_b) = (keys.path().join("a"), keys.path().join("b"));
        std::fs::write(&key_a, "11".repeat(32)).expect("key");
        std::fs::write(&key_b, "22".repeat(32)).expect("key");
        let upstream: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let path = Path::from("secret_table.lance/data/warm.lance");
        let content = (0..300_000u32).map(|index| (index % 251) as u8).collect::<Vec<_>>();
        upstream.put(&path, PutPayload::from(content.clone())).await.expect("put");
        let read = |cache: &ObjectCache| {
            let store = cache.wrap("memory", upstream.clone());
            let path = path.clone();
            async move { store.get(&path).await.expect("get").bytes().await.expect("bytes") }
        };
        let disk = || Some(dir.path().to_path_buf());

        let first = encrypted_cache(64 << 10, disk(), Some(key_a.clone())).await;
        assert_eq!(read(&first).await.as_ref(), content.as_slice());
        first.close().await.expect("close");
        let stored = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|entry| std::fs::read(entry.expect("entry").path()).expect("read"))
            .collect::<Vec<_>>()
            .concat();
        assert!(!stored.windows(64).any(|window| window == &content[1000..1064]), "no plaintext on disk");
        assert!(!stored.windows(12).any(|window| window == b"secret_table"), "no table name on disk");

        // The same key: every chunk back from disk, opened.
        let second = encrypted_cache(64 << 10, disk(), Some(key_a.clone())).await;
        assert_eq!(read(&second).await.as_ref(), content.as_slice());
        assert_eq!(second.stats().misses.get(), 0, "every chunk came back from disk");
        assert!(second.stats().hits.with_label_values(&["disk"]).get() >= 5);
        second.close().await.expect("close");

        // Another key, then none: an empty disk tier, right bytes from upstream.
        for key in [Some(key_b), None] {
            let other = encrypted_cache(64 << 10, disk(), key).await;
            assert_eq!(read(&other).await.as_ref(), content.as_slice());
            assert_eq!(other.stats().hits.with_label_values(&["disk"]).get(), 0);
            assert!(other.stats().misses.get() >= 5);
            other.close().await.expect("close");
        }
    }
}
