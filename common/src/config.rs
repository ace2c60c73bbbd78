//! Typed node configuration and the layers it is read from.
//!
//! Precedence, lowest to highest:
//! 1. built-in defaults (documented on each field);
//! 2. the TOML file given by `--config` (or `LANCEFLEET_CONFIG`);
//! 3. environment variables `LANCEFLEET_<SECTION>__<KEY>`, e.g. `LANCEFLEET_STORAGE__ROOT`,
//!    `LANCEFLEET_REST__LISTEN`, `LANCEFLEET_LOG__FORMAT`;
//! 4. command-line flags.
//!
//! Unknown keys are errors in every layer, so a typo never silently falls back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::storage::StorageConfig;
use crate::telemetry::LogConfig;

/// Prefix of every configuration environment variable.
pub const ENV_PREFIX: &str = "LANCEFLEET_";

/// Top-level sections; environment variables outside them (such as `LANCEFLEET_CONFIG`
/// itself) are not configuration keys.
const SECTIONS: &[&str] =
    &["storage", "rest", "flight", "auth", "log", "cluster", "executor", "cache", "control", "indexer"];

/// Configuration of every role; each reads the sections it needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Where tables live.
    pub storage: StorageConfig,
    /// The LanceDB-compatible REST endpoint (query nodes, standalone).
    pub rest: RestConfig,
    /// The Arrow Flight and Flight SQL endpoint (query nodes, standalone).
    pub flight: FlightConfig,
    /// Who may call the REST and Flight endpoints.
    pub auth: AuthConfig,
    /// Logging.
    pub log: LogConfig,
    /// The plan executors queries are spread over (query nodes, standalone).
    pub cluster: ClusterConfig,
    /// The plan executor service (plan executors).
    pub executor: ExecutorConfig,
    /// The local cache of object-store data (plan executors; any node on object storage).
    pub cache: CacheConfig,
    /// The control plane on etcd: membership, health, leader election (every role).
    pub control: ControlConfig,
    /// Background maintenance: compaction, indexing, cleanup (indexers, standalone).
    pub indexer: IndexerConfig,
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
    /// of this size. Default: 1048576 (lance's default).
    pub target_rows_per_fragment: usize,
    /// Compact once a table has this many small fragments (or a fragment whose deleted
    /// share passes lance's threshold, 10 %). Default: 8.
    pub compact_min_small_fragments: usize,
    /// Add the new rows to a table's indexes (an append delta) once an index misses
    /// this many rows. Default: 10000.
    pub optimize_min_unindexed_rows: u64,
    /// Merge an index's segments once it has more than this many. Default: 4.
    pub max_index_segments: usize,
    /// Create a vector index (IVF_PQ, `{column}_idx`) on a table's vector column once the
    /// table has this many rows and no vector index; 0 never does. Default: 100000.
    pub auto_index_min_rows: u64,
    /// Columns that get a full-text index (FTS) automatically at `auto_index_min_rows`,
    /// in any table that has them as strings. Default: none.
    pub auto_fts_columns: Vec<String>,
    /// Columns that get a BTREE index automatically at `auto_index_min_rows`. Default: none.
    pub auto_scalar_columns: Vec<String>,
    /// Versions older than this are removed (except tagged ones). Keep it above the
    /// longest a reader pins a version: `rest.weak_read_consistency_interval_seconds`
    /// plus the longest query. Default: 3600.
    pub cleanup_retention_seconds: u64,
    /// Wait before retrying a table whose round was dropped (a writer's conflicting
    /// commit, or another indexer holding it), in milliseconds. Default: 2000.
    pub retry_after_ms: u64,
    /// How long a `lancefleet indexer` process lets lance retry a maintenance commit that
    /// keeps losing to concurrent writes before it drops the round and plans it again
    /// (lance's `LANCE_COMMIT_RETRY_TIMEOUT_SECS`, which wins when set). Default: 5.
    pub commit_retry_timeout_seconds: u64,
}

impl Default for IndexerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8090)),
            embedded: true,
            concurrent_tables: 2,
            target_rows_per_fragment: 1024 * 1024,
            compact_min_small_fragments: 8,
            optimize_min_unindexed_rows: 10_000,
            max_index_segments: 4,
            auto_index_min_rows: 100_000,
            auto_fts_columns: Vec::new(),
            auto_scalar_columns: Vec::new(),
            cleanup_retention_seconds: 3600,
            retry_after_ms: 2000,
            commit_retry_timeout_seconds: 5,
        }
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
    /// Id of a query node or control-plane instance in etcd (plan executors use
    /// `executor.node_id`). Default: `$POD_NAME`, else `{role}-{host name}-{port}`.
    pub node_id: Option<String>,
    /// TTL of registration and leader leases, in seconds: how long a node that died
    /// silently stays registered (the control plane's probes usually catch it first).
    /// Default: 10.
    pub lease_ttl_seconds: u64,
    /// Between publishing `stopping` and refusing new work on a graceful shutdown, so
    /// that query nodes stop sending it fragments first, in milliseconds. Default: 1000.
    pub stopping_propagation_ms: u64,
    /// Address of the control plane's HTTP endpoint (`/v1/cluster`, `/health`,
    /// `/metrics`). Default: `127.0.0.1:8070`.
    pub listen: SocketAddr,
    /// How often the control-plane leader probes each executor, in milliseconds.
    /// Default: 1000.
    pub probe_interval_ms: u64,
    /// How long one probe may take, in milliseconds. Default: 1000.
    pub probe_timeout_ms: u64,
    /// Consecutive failed probes after which an executor is marked unhealthy and query
    /// nodes stop sending it fragments. Default: 2.
    pub unhealthy_after_probes: u32,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            etcd_endpoints: Vec::new(),
            cluster: "lancefleet".to_string(),
            node_id: None,
            lease_ttl_seconds: 10,
            stopping_propagation_ms: 1000,
            listen: SocketAddr::from(([127, 0, 0, 1], 8070)),
            probe_interval_ms: 1000,
            probe_timeout_ms: 1000,
            unhealthy_after_probes: 2,
        }
    }
}

impl ControlConfig {
    /// Whether this node takes part in an etcd control plane.
    pub fn uses_etcd(&self) -> bool {
        !self.etcd_endpoints.is_empty()
    }

    /// This node's id as a `role` other than plan executor (for those it only names the
    /// node; executors' ids are placement keys and come from `executor.node_id`):
    /// configured, else `$POD_NAME`, else `{role}-{host name}-{port}`, so that several
    /// nodes on one machine get distinct ids.
    pub fn node_id_or_default(&self, role: &str, port: u16) -> String {
        let configured = self.node_id.clone().or_else(|| std::env::var("POD_NAME").ok());
        configured.filter(|id| !id.trim().is_empty()).unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .or_else(|| std::env::var("HOSTNAME").ok())
                .map(|host| host.trim().to_string())
                .filter(|host| !host.is_empty());
            match host {
                Some(host) => format!("{role}-{host}-{port}"),
                None => format!("{role}-{port}"),
            }
        })
    }
}

/// Cache sizes and location (`[cache]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Memory tier capacity in bytes; 0 disables the cache. Default: 1 GiB.
    pub memory_bytes: u64,
    /// Directory of the disk tier (local NVMe/SSD); none keeps the cache in memory only.
    /// Default: none.
    pub disk_dir: Option<PathBuf>,
    /// Disk tier capacity in bytes (always explicit: foyer's default would take 80 % of
    /// the free space). Default: 16 GiB.
    pub disk_bytes: u64,
    /// Size of the aligned chunks objects are cached in. Default: 1 MiB.
    pub chunk_bytes: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self { memory_bytes: 1 << 30, disk_dir: None, disk_bytes: 16 << 30, chunk_bytes: 1 << 20 }
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
    /// Time one executor may take for its fragments before they are retried elsewhere,
    /// in milliseconds. Default: 30000.
    pub fragment_timeout_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            executors: Vec::new(),
            replicas: crate::placement::DEFAULT_REPLICAS,
            virtual_nodes: crate::placement::DEFAULT_VIRTUAL_NODES,
            fragment_timeout_ms: 30_000,
        }
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
    /// `$POD_NAME` (a StatefulSet's stable pod name), else `executor-0`.
    pub node_id: String,
    /// Opened table versions kept in memory. Default: 64.
    pub open_datasets: u64,
    /// Seconds to let in-flight fragments finish after a shutdown signal. Default: 30.
    pub shutdown_grace_seconds: u64,
    /// Address of the Prometheus `/metrics` endpoint. Default: `127.0.0.1:9464`.
    pub metrics_listen: SocketAddr,
    /// gRPC address query nodes reach this executor at, as registered in etcd (set it
    /// when listening on `0.0.0.0`, e.g. `http://$(POD_IP):7070`). Default: `http://{listen}`.
    pub advertise_address: Option<String>,
}

impl ExecutorConfig {
    /// The address to register: the configured one, else `http://{listen}`.
    pub fn advertised(&self) -> String {
        self.advertise_address.clone().unwrap_or_else(|| format!("http://{}", self.listen))
    }
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        Self {
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            node_id: std::env::var("POD_NAME")
                .ok()
                .filter(|name| !name.trim().is_empty())
                .unwrap_or_else(|| "executor-0".to_string()),
            open_datasets: 64,
            shutdown_grace_seconds: 30,
            advertise_address: None,
        }
    }
}

/// The REST endpoint (`[rest]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RestConfig {
    /// Address to listen on. Default: `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Largest accepted request body (Arrow uploads included), in bytes. Default: 4 GiB.
    pub max_body_bytes: u64,
    /// Seconds to let in-flight requests finish after a shutdown signal. Default: 30.
    pub shutdown_grace_seconds: u64,
    /// Read consistency. 0 is strong: every read sees the latest committed version, at
    /// the price of asking the store for it on every request. N > 0 is weak: a table's
    /// latest version is looked up at most once per N seconds and reused meanwhile, unless
    /// the client's freshness headers ask for newer. Writes are always strong. Default: 0.
    pub weak_read_consistency_interval_seconds: u64,
}

impl Default for RestConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 4 << 30,
            shutdown_grace_seconds: 30,
            weak_read_consistency_interval_seconds: 0,
        }
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
    /// Largest accepted gRPC message (one Arrow batch of a `DoPut`), in bytes. Default: 64 MiB.
    pub max_message_bytes: u64,
}

impl Default for FlightConfig {
    fn default() -> Self {
        Self { enabled: true, listen: SocketAddr::from(([127, 0, 0, 1], 10025)), max_message_bytes: 64 << 20 }
    }
}

/// Authentication of REST and Flight requests (`[auth]`). Clients present a key as
/// `x-api-key: KEY` (the LanceDB clients) or `authorization: Bearer KEY` (Flight clients,
/// also the token a Flight handshake hands out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The keys that are accepted. Empty accepts every request, with or without a key:
    /// a local standalone server. Default: empty.
    pub api_keys: Vec<String>,
}

/// A configuration that could not be read or does not validate.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A layer failed to parse or named an unknown key.
    #[error("invalid configuration: {0}")]
    Invalid(#[from] Box<figment::Error>),
    /// The file named on the command line does not exist.
    #[error("configuration file '{0}' does not exist")]
    MissingFile(String),
}

/// One command-line override: a dotted key (`storage.root`) and its value.
pub type Override = (&'static str, String);

impl NodeConfig {
    /// Reads the layers in precedence order: defaults < `file` < environment < `overrides`.
    pub fn load(file: Option<&Path>, overrides: &[Override]) -> Result<Self, ConfigError> {
        let figment = layered(Figment::from(Serialized::defaults(Self::default())), file, overrides)?;
        figment.extract().map_err(|error| ConfigError::Invalid(Box::new(error)))
    }
}

/// Stacks file, environment and flag layers on top of `defaults`.
fn layered(defaults: Figment, file: Option<&Path>, overrides: &[Override]) -> Result<Figment, ConfigError> {
    let mut figment = defaults;
    if let Some(path) = file {
        if !path.is_file() {
            return Err(ConfigError::MissingFile(path.display().to_string()));
        }
        figment = figment.merge(Toml::file(path));
    }
    let environment = Env::prefixed(ENV_PREFIX).split("__").filter(|key| is_in_a_section(key.as_str()));
    figment = figment.merge(environment);
    for (key, value) in overrides {
        figment = figment.merge(Serialized::default(key, value));
    }
    Ok(figment)
}

/// Whether an environment key (prefix stripped, `__` turned into `.`) belongs to a section.
fn is_in_a_section(key: &str) -> bool {
    let section = key.split('.').next().unwrap_or_default().to_ascii_lowercase();
    key.contains('.') && SECTIONS.contains(&section.as_str())
}

#[cfg(test)]
#[allow(clippy::result_large_err, reason = "figment::Jail closures return figment::Error by design")]
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn defaults_are_the_documented_ones() {
        Jail::expect_with(|_jail| {
            let config = NodeConfig::load(None, &[]).expect("defaults load");
            assert_eq!(config.storage.root, "./lancefleet-data");
            assert_eq!(config.rest.listen, "127.0.0.1:8080".parse().expect("addr"));
            assert_eq!(config.log.level, "info,lance::dataset_events=warn");
            assert_eq!(config.rest.weak_read_consistency_interval_seconds, 0, "reads are strong by default");
            assert_eq!(config.flight.listen, "127.0.0.1:10025".parse().expect("addr"));
            assert!(config.flight.enabled && config.auth.api_keys.is_empty());
            assert!(!config.control.uses_etcd(), "no etcd unless configured");
            assert_eq!(config.control.lease_ttl_seconds, 10);
            assert_eq!(config.executor.advertised(), "http://127.0.0.1:7070");
            assert_eq!(config.indexer.compact_min_small_fragments, 8);
            assert_eq!(config.indexer.auto_index_min_rows, 100_000);
            assert_eq!(config.indexer.cleanup_retention_seconds, 3600);
            let named = ControlConfig { node_id: Some("qn-a".into()), ..ControlConfig::default() };
            assert_eq!(named.node_id_or_default("query-node", 8080), "qn-a");
            let unnamed = ControlConfig::default().node_id_or_default("query-node", 8080);
            assert!(unnamed.starts_with("query-node-") && unnamed.ends_with("-8080"), "{unnamed}");
            Ok(())
        });
    }

    #[test]
    fn file_then_env_then_flags_take_precedence() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "lancefleet.toml",
                r#"
                [storage]
                root = "/from/file"
                options = { aws_region = "eu-west-1" }
                [rest]
                listen = "0.0.0.0:9000"
                [log]
                level = "debug"
                "#,
            )?;
            let file = Path::new("lancefleet.toml");
            let from_file = NodeConfig::load(Some(file), &[]).expect("file loads");
            assert_eq!(from_file.storage.root, "/from/file");
            assert_eq!(from_file.storage.options.get("aws_region").map(String::as_str), Some("eu-west-1"));
            assert_eq!(from_file.log.level, "debug");

            jail.set_env("LANCEFLEET_STORAGE__ROOT", "/from/env");
            jail.set_env("LANCEFLEET_REST__LISTEN", "127.0.0.1:7000");
            jail.set_env("LANCEFLEET_CONFIG", "ignored: not a configuration key");
            let from_env = NodeConfig::load(Some(file), &[]).expect("env loads");
            assert_eq!(from_env.storage.root, "/from/env");
            assert_eq!(from_env.rest.listen, "127.0.0.1:7000".parse().expect("addr"));
            assert_eq!(from_env.log.level, "debug", "file values the env does not set survive");

            let flags = [("storage.root", "/from/flag".to_string())];
            let from_flags = NodeConfig::load(Some(file), &flags).expect("flags load");
            assert_eq!(from_flags.storage.root, "/from/flag");
            assert_eq!(from_flags.rest.listen, "127.0.0.1:7000".parse().expect("addr"));
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_missing_files_are_errors() {
        Jail::expect_with(|jail| {
            jail.create_file("typo.toml", "[storage]\nrooot = \"/x\"\n")?;
            let error = NodeConfig::load(Some(Path::new("typo.toml")), &[]).expect_err("typo rejected");
            assert!(error.to_string().contains("rooot"), "{error}");

            let missing = NodeConfig::load(Some(Path::new("nope.toml")), &[]).expect_err("missing");
            assert!(matches!(missing, ConfigError::MissingFile(_)));

            jail.set_env("LANCEFLEET_REST__LISTN", "127.0.0.1:1");
            let error = NodeConfig::load(None, &[]).expect_err("env typo rejected");
            assert!(error.to_string().contains("listn"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn object_store_options_and_executors_come_from_env_and_toml() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "cluster.toml",
                r#"
                [storage.options]
                allow_http = true
                aws_region = "us-east-1"

                [[cluster.executors]]
                id = "pe-1"
                address = "http://10.0.0.1:7070"
                "#,
            )?;
            jail.set_env("LANCEFLEET_STORAGE__OPTIONS__AWS_ENDPOINT", "http://127.0.0.1:5000");
            jail.set_env("LANCEFLEET_STORAGE__OPTIONS__CONNECT_TIMEOUT", "5");
            let config = NodeConfig::load(Some(Path::new("cluster.toml")), &[]).expect("loads");
            let options = &config.storage.options;
            assert_eq!(options.get("allow_http").map(String::as_str), Some("true"));
            assert_eq!(options.get("aws_endpoint").map(String::as_str), Some("http://127.0.0.1:5000"));
            assert_eq!(options.get("connect_timeout").map(String::as_str), Some("5"));
            assert_eq!(options.get("aws_region").map(String::as_str), Some("us-east-1"));
            let expected = ExecutorEndpoint { id: "pe-1".into(), address: "http://10.0.0.1:7070".into() };
            assert_eq!(config.cluster.executors, vec![expected.clone()]);
            assert_eq!("pe-1=http://10.0.0.1:7070".parse::<ExecutorEndpoint>(), Ok(expected));
            assert!("no-address".parse::<ExecutorEndpoint>().is_err());
            Ok(())
        });
    }

    #[test]
    fn bad_values_say_which_key() {
        Jail::expect_with(|_jail| {
            let flags = [("rest.listen", "not-an-address".to_string())];
            let error = NodeConfig::load(None, &flags).expect_err("bad address");
            assert!(error.to_string().contains("listen"), "{error}");
            Ok(())
        });
    }
}
