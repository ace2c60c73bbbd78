//! The sections of [`NodeConfig`](super::NodeConfig) that belong to one role or concern,
//! each with its documented defaults and the rules [`validate`](RestConfig::validate)
//! enforces. Defaults are pure: nothing here reads the environment.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::units::{ByteSize, duration};
use super::{ConfigError, ensure};
use crate::tls::TlsConfig;

/// The LanceDB-compatible REST endpoint (`[rest]`; query nodes, standalone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RestConfig {
    /// Address to listen on. Default: `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Largest accepted request body (Arrow uploads included). Default: `4GiB`.
    pub max_body: ByteSize,
    /// How long in-flight requests may finish after a shutdown signal. Default: `30s`.
    #[serde(with = "duration")]
    pub shutdown_grace: Duration,
    /// Read consistency. `0s` is strong: every read sees the latest committed version, at
    /// the price of asking the store for it on every request. More is weak: a table's
    /// latest version is looked up at most once per interval and reused meanwhile, unless
    /// the client's freshness headers ask for newer. Writes are always strong. Default: `0s`.
    #[serde(with = "duration")]
    pub weak_read_consistency_interval: Duration,
    /// With etcd, reads learn a table's latest version from etcd, where every write
    /// through the cluster records it before it is acknowledged, instead of listing the
    /// store on every read; each table is still listed at least this often, which bounds
    /// how late a write from outside the cluster (LanceDB OSS on the same storage) is
    /// seen. `0s` lists on every read (and writes then work without etcd). Default: `10s`.
    #[serde(with = "duration")]
    pub external_writer_check: Duration,
    /// Largest `k` of a vector or full-text search, REST and Flight alike (plain scans
    /// stream their rows and take any limit). Default: 100000.
    pub max_search_k: u64,
    /// Most query vectors in one search. Default: 1024.
    pub max_query_vectors: usize,
    /// Longest filter or predicate of a query, count, update or delete. Default: `1MiB`.
    pub max_filter: ByteSize,
}

impl Default for RestConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body: ByteSize::gib(4),
            shutdown_grace: Duration::from_secs(30),
            weak_read_consistency_interval: Duration::ZERO,
            external_writer_check: Duration::from_secs(10),
            max_search_k: 100_000,
            max_query_vectors: 1024,
            max_filter: ByteSize::mib(1),
        }
    }
}

impl RestConfig {
    /// Refuses an unusable body limit and request limits that admit nothing.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ensure(self.max_body >= ByteSize::kib(1), "rest.max_body", || {
            format!("must be at least 1KiB, got {}", self.max_body)
        })?;
        ensure(self.max_search_k > 0, "rest.max_search_k", || "must be positive".into())?;
        ensure(self.max_query_vectors > 0, "rest.max_query_vectors", || "must be positive".into())?;
        ensure(self.max_filter >= ByteSize::kib(1), "rest.max_filter", || {
            format!("must be at least 1KiB, got {}", self.max_filter)
        })
    }
}

/// The Arrow Flight and Flight SQL endpoint (`[flight]`): SQL over every table, bulk
/// ingest (`DoPut`) and queries (`DoGet`) as Arrow streams.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlightConfig {
    /// Whether query nodes serve Flight at all. Default: true.
    pub enabled: bool,
    /// Address to listen on; 10025 as in LanceDB's documentation. Default: `127.0.0.1:10025`.
    pub listen: SocketAddr,
    /// Largest accepted gRPC message (one Arrow batch of a `DoPut`). Default: `64MiB`.
    pub max_message: ByteSize,
}

impl Default for FlightConfig {
    fn default() -> Self {
        Self { enabled: true, listen: SocketAddr::from(([127, 0, 0, 1], 10025)), max_message: ByteSize::mib(64) }
    }
}

impl FlightConfig {
    /// Refuses a message limit gRPC cannot use.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ensure((ByteSize::kib(64)..=ByteSize::gib(2)).contains(&self.max_message), "flight.max_message", || {
            format!("must be between 64KiB and 2GiB, got {}", self.max_message)
        })
    }
}

/// Where query nodes send plan fragments (`[cluster]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Plan executors by stable id and gRPC address (static membership). Default: none,
    /// which makes standalone run every fragment in-process.
    pub executors: Vec<ExecutorEndpoint>,
    /// Executors in each fragment's preference list; a failed fragment is retried once on
    /// the next. Default: 2.
    pub replicas: usize,
    /// Virtual nodes per executor on the placement ring. Default: 256.
    pub virtual_nodes: u32,
    /// Time one executor may take for its fragments before they are retried elsewhere.
    /// Default: `30s`.
    #[serde(with = "duration")]
    pub fragment_timeout: Duration,
    /// An executor call slower than this is a "slow take": counted
    /// (`lancefleet_query_slow_executor_calls_total`) and logged. Default: `1s`.
    #[serde(with = "duration")]
    pub slow_call: Duration,
    /// When an executor call that has not answered is also sent to the next replica of its
    /// fragments (the first answer wins, the other call is cancelled): `auto` (after the
    /// lower median of the executors' recent 95th-percentile answer times for calls of the
    /// same class), `off`, or a duration. Default: `auto`.
    pub hedge_after: HedgeAfter,
}

/// When a slow executor call is hedged (`cluster.hedge_after`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HedgeAfter {
    /// After the lower median of the executors' recent 95th-percentile answer times for
    /// calls of the same class: search kind and fragment count within a power of two (an
    /// executor counts once it has answered a few). The median, not the called executor's
    /// own, so a stalled executor cannot raise the delay that hedges it.
    #[default]
    Auto,
    /// Never.
    Off,
    /// After this long.
    After(Duration),
}

impl Serialize for HedgeAfter {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Auto => serializer.serialize_str("auto"),
            Self::Off => serializer.serialize_str("off"),
            Self::After(delay) => serializer.collect_str(&humantime::format_duration(*delay)),
        }
    }
}

impl<'de> Deserialize<'de> for HedgeAfter {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)
            .map_err(|_| serde::de::Error::custom("expected \"auto\", \"off\" or a duration such as \"50ms\""))?;
        match text.trim() {
            "auto" => Ok(Self::Auto),
            "off" => Ok(Self::Off),
            other => duration::parse(other).map(Self::After).map_err(serde::de::Error::custom),
        }
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            executors: Vec::new(),
            replicas: crate::placement::DEFAULT_REPLICAS,
            virtual_nodes: crate::placement::DEFAULT_VIRTUAL_NODES,
            fragment_timeout: Duration::from_secs(30),
            slow_call: Duration::from_secs(1),
            hedge_after: HedgeAfter::Auto,
        }
    }
}

impl ClusterConfig {
    /// Refuses a placement that cannot work and a malformed executor list.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ensure((1..=16).contains(&self.replicas), "cluster.replicas", || {
            format!("must be between 1 and 16, got {}", self.replicas)
        })?;
        ensure((1..=4096).contains(&self.virtual_nodes), "cluster.virtual_nodes", || {
            format!("must be between 1 and 4096, got {}", self.virtual_nodes)
        })?;
        ensure(!self.fragment_timeout.is_zero(), "cluster.fragment_timeout", || "must be more than 0s".into())?;
        let mut ids = HashSet::new();
        for executor in &self.executors {
            check_node_id(&executor.id, "cluster.executors")?;
            ensure(ids.insert(executor.id.as_str()), "cluster.executors", || {
                format!("executor id '{}' is listed twice", executor.id)
            })?;
            check_url(&executor.address, "cluster.executors")?;
        }
        Ok(())
    }
}

/// One plan executor of a static membership.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutorEndpoint {
    /// Stable node id (placement key); never an address.
    pub id: String,
    /// gRPC address, e.g. `http://10.0.0.7:7070`.
    pub address: String,
}

impl std::str::FromStr for ExecutorEndpoint {
    type Err = String;

    /// Parses `id=address`, the form of the `--executor` flag.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.split_once('=') {
            Some((id, address)) if !id.trim().is_empty() && !address.trim().is_empty() => {
                Ok(Self { id: id.trim().to_string(), address: address.trim().to_string() })
            }
            _ => Err(format!("expected ID=ADDRESS (e.g. pe-1=http://127.0.0.1:7070), got '{text}'")),
        }
    }
}

/// The plan executor service (`[executor]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecutorConfig {
    /// gRPC address to listen on. Default: `127.0.0.1:7070`.
    pub listen: SocketAddr,
    /// Stable node id: the placement key, never reused by two live executors. Default:
    /// `$POD_NAME` (a StatefulSet's stable pod name), else `plan-executor-{host}-{port}`.
    pub node_id: Option<String>,
    /// Opened table versions kept in memory. Default: 64.
    pub open_datasets: u64,
    /// How long in-flight fragments may finish after a shutdown signal. Default: `30s`.
    #[serde(with = "duration")]
    pub shutdown_grace: Duration,
    /// Address of the Prometheus `/metrics` endpoint. Default: `127.0.0.1:9464`.
    pub metrics_listen: SocketAddr,
    /// gRPC address query nodes reach this executor at, as registered in etcd (set it
    /// when listening on `0.0.0.0`, e.g. `http://$(POD_IP):7070`). Default: `http://{listen}`,
    /// or `https://{listen}` with a TLS certificate.
    pub advertise_address: Option<String>,
    /// What admitted fragments may hold in memory together, by estimate. Default: `2GiB`.
    pub memory_budget: ByteSize,
    /// What one fragment is counted for before its answer rows (its read buffers); a
    /// fragment with a limit adds that many rows of the table's width. Default: `32MiB`.
    pub fragment_memory: ByteSize,
    /// Fragments that may wait for room; more are refused at once. Default: 256.
    pub max_queued: usize,
    /// How long a fragment may wait for room before it is refused (retried on another
    /// replica). Default: `5s`.
    #[serde(with = "duration")]
    pub queue_timeout: Duration,
    /// What this executor fetches into its cache, when it starts and after membership
    /// changes, of the index segments and fragments placed on it (as first choice or
    /// replica): index segments first, then fragment data; `0` turns it off. Default:
    /// half the cache's capacity.
    pub prewarm_budget: Option<ByteSize>,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            node_id: None,
            open_datasets: 64,
            shutdown_grace: Duration::from_secs(30),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            advertise_address: None,
            memory_budget: ByteSize::gib(2),
            fragment_memory: ByteSize::mib(32),
            max_queued: 256,
            queue_timeout: Duration::from_secs(5),
            prewarm_budget: None,
        }
    }
}

impl ExecutorConfig {
    /// Refuses an unusable id, address or dataset cache.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(id) = &self.node_id {
            check_node_id(id, "executor.node_id")?;
        }
        if let Some(address) = &self.advertise_address {
            check_url(address, "executor.advertise_address")?;
        }
        ensure(self.open_datasets >= 1, "executor.open_datasets", || "must be at least 1".into())?;
        ensure(self.memory_budget >= self.fragment_memory, "executor.memory_budget", || {
            format!("must hold at least one fragment (executor.fragment_memory = {})", self.fragment_memory)
        })?;
        ensure(!self.queue_timeout.is_zero(), "executor.queue_timeout", || "must be more than 0s".into())
    }
}

/// Cache sizes and location (`[cache]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Memory tier capacity; `0` disables the cache. Default: `1GiB`.
    pub memory: ByteSize,
    /// Directory of the disk tier (local NVMe/SSD); none keeps the cache in memory only.
    /// Default: none.
    pub disk_dir: Option<PathBuf>,
    /// Disk tier capacity (always explicit: foyer's default would take 80 % of the free
    /// space). At least `64MiB` and four disk blocks (a block is four chunks, at least
    /// `16MiB`). Default: `16GiB`.
    pub disk: ByteSize,
    /// Size of the aligned chunks objects are cached in, `64KiB` to `8MiB`. Default: `1MiB`.
    pub chunk: ByteSize,
    /// File holding the 256-bit key (64 hex digits) that encrypts the disk tier at rest;
    /// none stores it unencrypted. Default: none.
    pub encryption_key_file: Option<PathBuf>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            memory: ByteSize::gib(1),
            disk_dir: None,
            disk: ByteSize::gib(16),
            chunk: ByteSize::mib(1),
            encryption_key_file: None,
        }
    }
}

impl CacheConfig {
    /// Whether the object cache is on.
    pub fn enabled(&self) -> bool {
        self.memory.bytes() > 0
    }

    /// Size of one disk-tier block: four chunks, at least 16 MiB.
    pub fn disk_block(&self) -> ByteSize {
        ByteSize((self.chunk.bytes() * 4).max(16 << 20))
    }

    /// The capacity of both tiers together, as an executor announces it.
    pub fn capacity(&self) -> ByteSize {
        let disk = if self.disk_dir.is_some() { self.disk.bytes() } else { 0 };
        ByteSize(self.memory.bytes().saturating_add(disk))
    }

    /// Refuses a chunk size out of range and tiers too small to hold it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ensure((ByteSize::kib(64)..=ByteSize::mib(8)).contains(&self.chunk), "cache.chunk", || {
            format!("must be between 64KiB and 8MiB, got {}", self.chunk)
        })?;
        if !self.enabled() {
            return Ok(());
        }
        ensure(self.memory >= self.chunk, "cache.memory", || {
            format!("must hold at least one chunk ({}) or be 0 to turn the cache off, got {}", self.chunk, self.memory)
        })?;
        if self.disk_dir.is_some() {
            let least = ByteSize(self.disk_block().bytes() * 4).max(ByteSize::mib(64));
            ensure(self.disk >= least, "cache.disk", || {
                format!("must be at least {least} (four disk blocks of {}), got {}", self.disk_block(), self.disk)
            })?;
        }
        Ok(())
    }
}

/// The control plane on etcd (`[control]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// etcd endpoints, e.g. `http://etcd-0.etcd:2379`. With none, nothing registers and
    /// query nodes use `[cluster] executors` (static membership). Default: none.
    pub etcd_endpoints: Vec<String>,
    /// Name of the cluster: every key lives under `/{cluster}/`. Default: `lancefleet`.
    pub cluster: String,
    /// Id of a query node, control-plane instance or indexer in etcd (plan executors use
    /// `executor.node_id`). Default: `$POD_NAME`, else `{role}-{host name}-{port}`.
    pub node_id: Option<String>,
    /// TTL of registration and leader leases: how long a node that died silently stays
    /// registered (the control plane's probes usually catch it first). Default: `10s`.
    #[serde(with = "duration")]
    pub lease_ttl: Duration,
    /// Between publishing `stopping` and refusing new work on a graceful shutdown, so
    /// that query nodes stop sending it fragments first. Default: `1s`.
    #[serde(with = "duration")]
    pub stopping_propagation: Duration,
    /// Address of the control plane's HTTP endpoint (`/v1/cluster`, `/health`,
    /// `/metrics`). Default: `127.0.0.1:8070`.
    pub listen: SocketAddr,
    /// How often the control-plane leader probes each executor. Default: `1s`.
    #[serde(with = "duration")]
    pub probe_interval: Duration,
    /// How long one probe may take. Default: `1s`.
    #[serde(with = "duration")]
    pub probe_timeout: Duration,
    /// Consecutive failed probes after which an executor is marked unhealthy and query
    /// nodes stop sending it fragments. Default: 2.
    pub unhealthy_after_probes: u32,
    /// TLS towards etcd (`[control.etcd_tls]`), used when the endpoints are `https://`:
    /// `ca` verifies etcd's server certificate (required), `cert` and `key` are the client
    /// certificate etcd's `--client-cert-auth` asks for (read again when they change).
    /// Default: none.
    pub etcd_tls: TlsConfig,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            etcd_endpoints: Vec::new(),
            cluster: "lancefleet".to_string(),
            node_id: None,
            lease_ttl: Duration::from_secs(10),
            stopping_propagation: Duration::from_secs(1),
            listen: SocketAddr::from(([127, 0, 0, 1], 8070)),
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_secs(1),
            unhealthy_after_probes: 2,
            etcd_tls: TlsConfig::default(),
        }
    }
}

impl ControlConfig {
    /// Whether this node takes part in an etcd control plane.
    pub fn uses_etcd(&self) -> bool {
        !self.etcd_endpoints.is_empty()
    }

    /// Refuses malformed endpoints and names, and timings etcd or the probes cannot keep.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for endpoint in &self.etcd_endpoints {
            check_url(endpoint, "control.etcd_endpoints")?;
        }
        let secure = self.etcd_endpoints.iter().filter(|endpoint| endpoint.starts_with("https://")).count();
        ensure(secure == 0 || secure == self.etcd_endpoints.len(), "control.etcd_endpoints", || {
            "are all https:// or all http://, not a mix".into()
        })?;
        ensure(secure == 0 || self.etcd_tls.ca.is_some(), "control.etcd_tls.ca", || {
            "is needed for https:// etcd endpoints (the CA that signed etcd's certificate)".into()
        })?;
        ensure(self.etcd_tls.client_ca.is_none(), "control.etcd_tls.client_ca", || {
            "is not a setting towards etcd (ca, cert and key are)".into()
        })?;
        self.etcd_tls
            .validate_client()
            .map_err(|error| ConfigError::Value { key: "control.etcd_tls".into(), reason: error.to_string() })?;
        ensure(!self.cluster.is_empty() && !self.cluster.contains(['/', ' ']), "control.cluster", || {
            format!("must be a non-empty name without '/' or spaces, got '{}'", self.cluster)
        })?;
        if let Some(id) = &self.node_id {
            check_node_id(id, "control.node_id")?;
        }
        ensure(self.lease_ttl >= Duration::from_secs(2), "control.lease_ttl", || {
            format!("must be at least 2s (etcd's shortest lease), got {}", humantime::format_duration(self.lease_ttl))
        })?;
        ensure(!self.probe_interval.is_zero(), "control.probe_interval", || "must be more than 0s".into())?;
        ensure(!self.probe_timeout.is_zero(), "control.probe_timeout", || "must be more than 0s".into())?;
        ensure(self.unhealthy_after_probes >= 1, "control.unhealthy_after_probes", || "must be at least 1".into())
    }
}

/// Background table maintenance (`[indexer]`): when the indexer compacts, indexes and
/// cleans a table. Every threshold is checked after each change event, against the
/// table as it is on storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IndexerConfig {
    /// Address of the indexer's `/health` and `/metrics` endpoint. Default: `127.0.0.1:8090`.
    pub listen: SocketAddr,
    /// Whether `standalone` runs an indexer in-process. Default: true.
    pub embedded: bool,
    /// Tables maintained at the same time by one indexer. Default: 2.
    pub concurrent_tables: usize,
    /// A fragment with fewer rows than this is small, and compaction aims at fragments
    /// of this size (half a table's fleet share when that is less, see
    /// `fragments_per_executor`). Default: 1048576 (lance's default).
    pub target_rows_per_fragment: usize,
    /// Fragments, the unit of placement, a table is kept in per plan executor: a table
    /// with fewer fragments than executors × this has its fragments of at least twice its
    /// share (its rows ÷ that count, at least `min_fragment_rows`, at most
    /// `target_rows_per_fragment`) rewritten into fragments of one share, and compaction
    /// merges only fragments under half a share, so that every executor serves and caches
    /// part of the table. 0 never splits. Default: 2.
    pub fragments_per_executor: usize,
    /// Fragments are not split below this many rows (each fragment costs every query
    /// that reads it a call's share and its files a request each). Default: 16384.
    pub min_fragment_rows: u64,
    /// Compact once a table has this many small fragments (or a fragment whose deleted
    /// share passes lance's threshold, 10 %). Default: 8.
    pub compact_min_small_fragments: usize,
    /// Add the new rows to a table's indexes (an append delta) once an index misses
    /// this many rows. Default: 10000.
    pub optimize_min_unindexed_rows: u64,
    /// Merge an index's small segments once it has more than this many besides its
    /// full ones (`vector_segment_rows`). Default: 4.
    pub max_index_segments: usize,
    /// Rows per segment of a vector index, the unit plan executors divide index work and
    /// cache by: a vector index is kept as segments of at most this many rows over runs
    /// of whole fragments, sharing one IVF model and codebook, and each segment is placed
    /// with its fragments. An index built as one larger segment is rebuilt as segments.
    /// A fragment is never split, so a segment holds at least one. 0 keeps each vector
    /// index as one segment plus append deltas, as LanceDB does. Default: 1048576.
    pub vector_segment_rows: u64,
    /// Rows per segment of a full-text (FTS) or scalar index of a kind lance merges by
    /// segment (BTREE, BITMAP, NGRAM), kept like `vector_segment_rows`: segments over runs
    /// of whole fragments, each placed with its fragments, so that an executor opens only
    /// its own segments (a full-text search scores with BM25 statistics of the whole
    /// table, gathered from every executor first). 0 keeps one segment plus append
    /// deltas, as LanceDB does. Default: 1048576.
    pub index_segment_rows: u64,
    /// Create a vector index (IVF_PQ, `{column}_idx`) on a table's vector column once the
    /// table has this many rows and no vector index; 0 never does. Default: 100000.
    pub auto_index_min_rows: u64,
    /// Columns that get a full-text index (FTS) automatically at `auto_index_min_rows`,
    /// in any table that has them as strings. Default: none.
    pub auto_fts_columns: Vec<String>,
    /// Columns that get a BTREE index automatically at `auto_index_min_rows`. Default: none.
    pub auto_scalar_columns: Vec<String>,
    /// Versions older than this are removed (except tagged ones). Keep it above the
    /// longest a reader pins a version: `rest.weak_read_consistency_interval` plus the
    /// longest query. Default: `1h`.
    #[serde(with = "duration")]
    pub cleanup_retention: Duration,
    /// Wait before retrying a table whose round was dropped (a writer's conflicting
    /// commit, or another indexer holding it). Default: `2s`.
    #[serde(with = "duration")]
    pub retry_after: Duration,
    /// How long a `lancefleet indexer` process lets lance retry a maintenance commit that
    /// keeps losing to concurrent writes before it drops the round and plans it again
    /// (lance's `LANCE_COMMIT_RETRY_TIMEOUT_SECS`, which wins when set; whole seconds).
    /// Default: `5s`.
    #[serde(with = "duration")]
    pub commit_retry_timeout: Duration,
}

impl Default for IndexerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8090)),
            embedded: true,
            concurrent_tables: 2,
            target_rows_per_fragment: 1024 * 1024,
            fragments_per_executor: 2,
            min_fragment_rows: 16 * 1024,
            compact_min_small_fragments: 8,
            optimize_min_unindexed_rows: 10_000,
            max_index_segments: 4,
            vector_segment_rows: 1024 * 1024,
            index_segment_rows: 1024 * 1024,
            auto_index_min_rows: 100_000,
            auto_fts_columns: Vec::new(),
            auto_scalar_columns: Vec::new(),
            cleanup_retention: Duration::from_secs(3600),
            retry_after: Duration::from_secs(2),
            commit_retry_timeout: Duration::from_secs(5),
        }
    }
}

impl IndexerConfig {
    /// Refuses thresholds that would stop maintenance or make it spin.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ensure(self.concurrent_tables >= 1, "indexer.concurrent_tables", || "must be at least 1".into())?;
        ensure(self.target_rows_per_fragment >= 1, "indexer.target_rows_per_fragment", || "must be at least 1".into())?;
        ensure(self.min_fragment_rows >= 1, "indexer.min_fragment_rows", || "must be at least 1".into())?;
        ensure(self.compact_min_small_fragments >= 2, "indexer.compact_min_small_fragments", || {
            format!(
                "must be at least 2 (compacting one fragment changes nothing), got {}",
                self.compact_min_small_fragments
            )
        })?;
        ensure(self.optimize_min_unindexed_rows >= 1, "indexer.optimize_min_unindexed_rows", || {
            "must be at least 1".into()
        })?;
        ensure(self.max_index_segments >= 1, "indexer.max_index_segments", || "must be at least 1".into())?;
        ensure(!self.retry_after.is_zero(), "indexer.retry_after", || "must be more than 0s".into())?;
        ensure(self.commit_retry_timeout >= Duration::from_secs(1), "indexer.commit_retry_timeout", || {
            "must be at least 1s (lance counts it in whole seconds)".into()
        })
    }
}

/// Refuses an empty node id or one that would break an etcd key or a log line.
fn check_node_id(id: &str, key: &str) -> Result<(), ConfigError> {
    ensure(!id.trim().is_empty() && !id.contains(['/', ' ', '\t', '\n']), key, || {
        format!("'{id}' is not a node id: use a non-empty name without '/' or spaces")
    })
}

/// Refuses an address that is not an `http://` or `https://` URL with a host.
fn check_url(address: &str, key: &str) -> Result<(), ConfigError> {
    let parsed = address.parse::<http::Uri>();
    let usable = parsed.as_ref().is_ok_and(|uri| {
        matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some_and(|host| !host.is_empty())
    });
    ensure(usable, key, || format!("'{address}' is not an address such as http://10.0.0.7:7070"))
}
