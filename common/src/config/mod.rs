//! Typed node configuration and the layers it is read from.
//!
//! Precedence, lowest to highest:
//! 1. built-in defaults (documented on each field; pure: they never read the environment);
//! 2. the TOML file given by `--config` (or `LANCEFLEET_CONFIG`);
//! 3. environment variables `LANCEFLEET_<SECTION>__<KEY>`, e.g. `LANCEFLEET_STORAGE__ROOT`,
//!    `LANCEFLEET_REST__LISTEN`, `LANCEFLEET_CACHE__MEMORY=4GiB`;
//! 4. command-line flags.
//!
//! Unknown keys are errors in every layer, so a typo never silently falls back to a default;
//! byte sizes and durations carry their units (`"4GiB"`, `"30s"`), and the integer keys of
//! the first configuration are still read ([`renamed`]). After the layers are merged,
//! [`NodeConfig::validate_for`] refuses values a role cannot run with, naming the key.
//! `docs/configuration.md` documents every key; a test fails when one is missing.

mod auth;
mod renamed;
mod sections;
pub mod units;

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

pub use auth::{ApiKey, AuthConfig, Role, key_digest};
pub use renamed::{OldUnit, RENAMED_KEYS};
pub use sections::{
    CacheConfig, ClusterConfig, ControlConfig, ExecutorConfig, ExecutorEndpoint, FlightConfig, HedgeAfter,
    IndexerConfig, RestConfig,
};
pub use units::ByteSize;

use crate::storage::StorageConfig;
use crate::telemetry::{LogConfig, TraceConfig};
use crate::tls::TlsConfig;
use renamed::Renamed;

/// Prefix of every configuration environment variable.
pub const ENV_PREFIX: &str = "LANCEFLEET_";

/// Top-level sections; environment variables outside them (such as `LANCEFLEET_CONFIG`
/// itself) are not configuration keys.
const SECTIONS: &[&str] =
    &["storage", "rest", "flight", "auth", "tls", "log", "trace", "cluster", "executor", "cache", "control", "indexer"];

/// Configuration of every role; each reads the sections it needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
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
    /// TLS for every endpoint, mutual between nodes.
    pub tls: TlsConfig,
    /// Logging.
    pub log: LogConfig,
    /// Distributed traces over OTLP.
    pub trace: TraceConfig,
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

/// What a `lancefleet` process runs; it decides which settings must be present.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    /// Every role in one process.
    Standalone,
    /// A query node in front of plan executors.
    QueryNode,
    /// A plan executor.
    PlanExecutor,
    /// A control-plane instance.
    ControlPlane,
    /// An indexer following the change events on etcd.
    Indexer,
    /// An indexer maintaining every table once (`indexer --once`).
    IndexerOnce,
}

impl Service {
    /// Every service, in the order `--help` lists them.
    pub const ALL: [Service; 6] =
        [Self::Standalone, Self::QueryNode, Self::PlanExecutor, Self::ControlPlane, Self::Indexer, Self::IndexerOnce];

    /// The subcommand's name (`indexer-once` for `indexer --once`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standalone => "standalone",
            Self::QueryNode => "query-node",
            Self::PlanExecutor => "plan-executor",
            Self::ControlPlane => "control-plane",
            Self::Indexer => "indexer",
            Self::IndexerOnce => "indexer-once",
        }
    }
}

impl std::fmt::Display for Service {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl std::str::FromStr for Service {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|service| service.as_str() == text).ok_or_else(|| {
            let names = Self::ALL.map(Service::as_str).join(", ");
            format!("unknown role '{text}'; one of {names}")
        })
    }
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
    /// A value is out of range or does not fit with another.
    #[error("invalid configuration: {key}: {reason}")]
    Value {
        /// The dotted key, e.g. `cache.chunk`.
        key: String,
        /// What is wrong with its value.
        reason: String,
    },
    /// A setting the role cannot run without is missing.
    #[error("{service} cannot start: {reason}")]
    Missing {
        /// The role that needs it.
        service: Service,
        /// What is missing and how to set it.
        reason: String,
    },
}

/// `Ok` when `condition` holds, else the error of `key` with `reason`.
pub(crate) fn ensure(condition: bool, key: &str, reason: impl FnOnce() -> String) -> Result<(), ConfigError> {
    if condition { Ok(()) } else { Err(ConfigError::Value { key: key.to_string(), reason: reason() }) }
}

/// One command-line override: a dotted key (`storage.root`) and its value.
pub type Override = (&'static str, String);

impl NodeConfig {
    /// Reads the layers in precedence order: defaults < `file` < environment < `overrides`.
    /// The result is not validated yet: see [`Self::validate_for`].
    pub fn load(file: Option<&Path>, overrides: &[Override]) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Self::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::MissingFile(path.display().to_string()));
            }
            figment = figment.merge(Renamed(Toml::file(path)));
        }
        if let Some(unknown) = unknown_environment_section() {
            return Err(ConfigError::Value {
                key: unknown,
                reason: format!("is not a configuration key: the sections are {}", SECTIONS.join(", ")),
            });
        }
        let environment = Env::prefixed(ENV_PREFIX).split("__").filter(|key| is_in_a_section(key.as_str()));
        figment = figment.merge(Renamed(environment));
        for (key, value) in overrides {
            figment = figment.merge(Serialized::default(key, value));
        }
        figment.extract().map_err(|error| ConfigError::Invalid(Box::new(error)))
    }

    /// Checks every section, the rules between sections, and what `service` cannot run
    /// without; the first problem found is the error.
    pub fn validate_for(&self, service: Service) -> Result<(), ConfigError> {
        self.storage.validate()?;
        self.log.validate()?;
        self.trace.validate()?;
        self.rest.validate()?;
        self.flight.validate()?;
        self.auth.validate()?;
        self.tls.validate().map_err(|error| ConfigError::Value { key: "tls".into(), reason: error.to_string() })?;
        self.cluster.validate()?;
        self.executor.validate()?;
        self.cache.validate()?;
        self.control.validate()?;
        self.indexer.validate()?;
        ensure(
            self.indexer.cleanup_retention > self.rest.weak_read_consistency_interval,
            "indexer.cleanup_retention",
            || "must be longer than rest.weak_read_consistency_interval: a reader may pin a version that long".into(),
        )?;
        self.requirements(service).map_err(|reason| ConfigError::Missing { service, reason })
    }

    /// What `service` cannot start without.
    fn requirements(&self, service: Service) -> Result<(), String> {
        let etcd = self.control.uses_etcd();
        match service {
            Service::QueryNode if self.cluster.executors.is_empty() && !etcd => {
                Err("a query node needs plan executors: pass --executor ID=ADDRESS, set [cluster] executors, \
                 or follow the etcd control plane with --etcd URL"
                    .into())
            }
            Service::ControlPlane if !etcd => {
                Err("the control plane needs etcd: pass --etcd URL or set [control] etcd_endpoints".into())
            }
            Service::Indexer if !etcd => Err("an indexer follows the cluster's change events on etcd: \
                 pass --etcd URL (or run with --once)"
                .into()),
            Service::PlanExecutor
                if etcd && self.executor.advertise_address.is_none() && self.executor.listen.ip().is_unspecified() =>
            {
                Err(format!(
                    "listening on {} leaves query nodes no address to reach this executor at: set \
                     executor.advertise_address (--advertise-address), e.g. http://$POD_IP:7070",
                    self.executor.listen
                ))
            }
            _ => Ok(()),
        }
    }

    /// Whether `service` runs an indexer in its own process: `standalone`, unless
    /// `indexer.embedded` is off.
    pub fn embeds_indexer(&self, service: Service) -> bool {
        service == Service::Standalone && self.indexer.embedded
    }

    /// The node id of `service` listening on `port`: the configured one
    /// (`executor.node_id` for plan executors, `control.node_id` for the others), else
    /// `$POD_NAME` (a StatefulSet's stable pod name), else `{role}-{host name}-{port}`, so
    /// that several nodes on one machine get distinct, restart-stable ids.
    pub fn node_id(&self, service: Service, port: u16) -> String {
        let configured = match service {
            Service::PlanExecutor => self.executor.node_id.clone(),
            _ => self.control.node_id.clone(),
        };
        let role = match service {
            Service::Standalone | Service::QueryNode => "query-node",
            Service::IndexerOnce => "indexer",
            other => other.as_str(),
        };
        configured.or_else(|| std::env::var("POD_NAME").ok()).filter(|id| !id.trim().is_empty()).unwrap_or_else(|| {
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

/// The first variable `LANCEFLEET_<X>__…` whose `<X>` names no section (a typo such as
/// `LANCEFLEET_CACHES__MEMORY`); variables without `__` (`LANCEFLEET_CONFIG`,
/// `LANCEFLEET_API_KEY`) are not configuration keys.
fn unknown_environment_section() -> Option<String> {
    std::env::vars_os().find_map(|(name, _)| {
        let name = name.to_str()?;
        let (section, _) = name.strip_prefix(ENV_PREFIX)?.split_once("__")?;
        (!SECTIONS.contains(&section.to_ascii_lowercase().as_str())).then(|| name.to_string())
    })
}

/// Whether an environment key (prefix stripped, `__` turned into `.`) belongs to a section.
fn is_in_a_section(key: &str) -> bool {
    let section = key.split('.').next().unwrap_or_default().to_ascii_lowercase();
    key.contains('.') && SECTIONS.contains(&section.as_str())
}

#[cfg(test)]
#[allow(clippy::result_large_err, reason = "figment::Jail closures return figment::Error by design")]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use figment::Jail;

    #[test]
    fn defaults_are_the_documented_ones_and_valid_for_standalone() {
        Jail::expect_with(|_jail| {
            let config = NodeConfig::load(None, &[]).expect("defaults load");
            assert_eq!(config, NodeConfig::default(), "no layer changes anything");
            assert_eq!(config.storage.root, "./lancefleet-data");
            assert_eq!(config.rest.listen, "127.0.0.1:8080".parse().expect("addr"));
            assert_eq!(config.log.level, "info,lance::dataset_events=warn");
            assert_eq!(config.rest.weak_read_consistency_interval, Duration::ZERO, "reads are strong by default");
            assert_eq!(config.flight.listen, "127.0.0.1:10025".parse().expect("addr"));
            assert!(config.flight.enabled && !config.auth.checks_keys());
            assert!(!config.control.uses_etcd(), "no etcd unless configured");
            assert_eq!(config.control.lease_ttl, Duration::from_secs(10));
            assert_eq!(config.cache.memory, ByteSize::gib(1));
            assert_eq!(config.executor.node_id, None, "defaults read no environment");
            assert_eq!(config.indexer.cleanup_retention, Duration::from_secs(3600));
            config.validate_for(Service::Standalone).expect("the defaults run standalone");
            config.validate_for(Service::PlanExecutor).expect("and a plan executor");
            Ok(())
        });
    }

    #[test]
    fn api_keys_come_from_the_environment_as_a_list_of_dicts() {
        Jail::expect_with(|jail| {
            let digest = key_digest("secret");
            jail.set_env(
                "LANCEFLEET_AUTH__KEYS",
                format!("[{{id=\"ci\",sha256=\"{digest}\",role=\"read-only\",scope=[\"sales\"]}}]"),
            );
            let config = NodeConfig::load(None, &[]).expect("loads");
            let key = ApiKey { id: "ci".into(), sha256: digest, role: Role::ReadOnly, scope: vec!["sales".into()] };
            assert_eq!(config.auth.keys, [key]);
            assert!(config.auth.checks_keys());
            config.validate_for(Service::Standalone).expect("valid");
            Ok(())
        });
    }

    #[test]
    fn node_ids_are_configured_else_the_pod_name_else_role_host_and_port() {
        Jail::expect_with(|jail| {
            let mut config = NodeConfig::default();
            config.control.node_id = Some("qn-a".into());
            config.executor.node_id = Some("pe-a".into());
            assert_eq!(config.node_id(Service::QueryNode, 8080), "qn-a");
            assert_eq!(config.node_id(Service::PlanExecutor, 7070), "pe-a");
            let unnamed = NodeConfig::default().node_id(Service::Standalone, 8080);
            assert!(unnamed.starts_with("query-node-") && unnamed.ends_with("-8080"), "{unnamed}");
            jail.set_env("POD_NAME", "lancefleet-plan-executor-2");
            assert_eq!(NodeConfig::default().node_id(Service::PlanExecutor, 7070), "lancefleet-plan-executor-2");
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
    fn sizes_and_durations_take_units_and_the_old_integer_keys_still_work() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "units.toml",
                r#"
                [cache]
                memory = "4GiB"
                disk = "100Gi"
                chunk = 2097152
                [cluster]
                fragment_timeout = "1m 30s"
                [control]
                lease_ttl = "15s"
                "#,
            )?;
            let config = NodeConfig::load(Some(Path::new("units.toml")), &[]).expect("units load");
            assert_eq!(config.cache.memory, ByteSize::gib(4));
            assert_eq!(config.cache.disk, ByteSize::gib(100));
            assert_eq!(config.cache.chunk, ByteSize::mib(2));
            assert_eq!(config.cluster.fragment_timeout, Duration::from_secs(90));
            assert_eq!(config.control.lease_ttl, Duration::from_secs(15));

            jail.set_env("LANCEFLEET_CLUSTER__HEDGE_AFTER", "50ms");
            let hedged = NodeConfig::load(None, &[]).expect("a hedge delay");
            assert_eq!(hedged.cluster.hedge_after, HedgeAfter::After(Duration::from_millis(50)));
            jail.set_env("LANCEFLEET_CLUSTER__HEDGE_AFTER", "off");
            assert_eq!(NodeConfig::load(None, &[]).expect("off").cluster.hedge_after, HedgeAfter::Off);
            jail.set_env("LANCEFLEET_CLUSTER__HEDGE_AFTER", "sometimes");
            assert!(NodeConfig::load(None, &[]).is_err(), "neither auto, off nor a duration");
            jail.set_env("LANCEFLEET_CLUSTER__HEDGE_AFTER", "auto");

            jail.create_file(
                "old.toml",
                r#"
                [cache]
                memory_bytes = 536870912
                [cluster]
                fragment_timeout_ms = 2500
                [rest]
                weak_read_consistency_interval_seconds = 60
                [indexer]
                retry_after_ms = 100
                "#,
            )?;
            let old = NodeConfig::load(Some(Path::new("old.toml")), &[]).expect("old keys load");
            assert_eq!(old.cache.memory, ByteSize::mib(512));
            assert_eq!(old.cluster.fragment_timeout, Duration::from_millis(2500));
            assert_eq!(old.rest.weak_read_consistency_interval, Duration::from_secs(60));
            assert_eq!(old.indexer.retry_after, Duration::from_millis(100));

            jail.set_env("LANCEFLEET_CONTROL__PROBE_INTERVAL_MS", "250");
            jail.set_env("LANCEFLEET_CACHE__MEMORY", "1GiB");
            let layered = NodeConfig::load(Some(Path::new("old.toml")), &[]).expect("env over an old file key");
            assert_eq!(layered.control.probe_interval, Duration::from_millis(250), "old key in the environment");
            assert_eq!(layered.cache.memory, ByteSize::gib(1), "the new key in the env beats the old one in the file");

            jail.create_file("both.toml", "[cache]\nmemory = \"1GiB\"\nmemory_bytes = 1024\n")?;
            let both = NodeConfig::load(Some(Path::new("both.toml")), &[]).expect_err("one setting named twice");
            assert!(both.to_string().contains("cache.memory or its old name cache.memory_bytes"), "{both}");

            jail.create_file("bare.toml", "[cluster]\nfragment_timeout = 30\n")?;
            let bare = NodeConfig::load(Some(Path::new("bare.toml")), &[]).expect_err("a duration without unit");
            assert!(bare.to_string().contains("needs its unit"), "{bare}");
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
        Jail::expect_with(|jail| {
            jail.set_env("LANCEFLEET_API_KEY", "not a configuration key");
            NodeConfig::load(None, &[]).expect("variables without a section are not keys");
            jail.set_env("LANCEFLEET_CACHES__MEMORY", "1GiB");
            let error = NodeConfig::load(None, &[]).expect_err("unknown section rejected");
            assert!(error.to_string().contains("LANCEFLEET_CACHES__MEMORY"), "{error}");
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
            config.validate_for(Service::QueryNode).expect("a query node with an executor");
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

    /// Each refused value, with the key and the reason the message names.
    #[test]
    fn every_refused_value_names_its_key_and_reason() {
        let cases: &[(&str, &str, &str)] = &[
            ("cluster.replicas", "0", "must be between 1 and 16"),
            ("cluster.virtual_nodes", "0", "must be between 1 and 4096"),
            ("cluster.fragment_timeout", "0s", "must be more than 0s"),
            ("cache.chunk", "16MiB", "must be between 64KiB and 8MiB"),
            ("cache.chunk", "1KiB", "must be between 64KiB and 8MiB"),
            ("cache.memory", "100KiB", "must hold at least one chunk"),
            ("rest.max_body", "10", "must be at least 1KiB"),
            ("flight.max_message", "4GiB", "must be between 64KiB and 2GiB"),
            ("executor.open_datasets", "0", "must be at least 1"),
            ("executor.node_id", "a/b", "is not a node id"),
            ("executor.advertise_address", "10.0.0.1:7070", "is not an address"),
            ("control.lease_ttl", "1s", "must be at least 2s"),
            ("control.cluster", "a/b", "without '/'"),
            ("control.probe_interval", "0s", "must be more than 0s"),
            ("control.unhealthy_after_probes", "0", "must be at least 1"),
            ("indexer.concurrent_tables", "0", "must be at least 1"),
            ("indexer.compact_min_small_fragments", "1", "must be at least 2"),
            ("indexer.optimize_min_unindexed_rows", "0", "must be at least 1"),
            ("indexer.retry_after", "0s", "must be more than 0s"),
            ("indexer.commit_retry_timeout", "500ms", "must be at least 1s"),
            ("indexer.cleanup_retention", "10s", "longer than rest.weak_read_consistency_interval"),
            ("log.level", "info,,=x[", "log.level"),
            ("storage.root", "ftp://host/db", "storage.root"),
        ];
        for (key, value, reason) in cases {
            Jail::expect_with(|jail| {
                jail.set_env(format!("{ENV_PREFIX}{}", key.to_uppercase().replace('.', "__")), value);
                if *key == "indexer.cleanup_retention" {
                    jail.set_env("LANCEFLEET_REST__WEAK_READ_CONSISTENCY_INTERVAL", "1m");
                }
                let config = NodeConfig::load(None, &[]).unwrap_or_else(|error| panic!("{key}={value}: {error}"));
                let error = config.validate_for(Service::Standalone).expect_err(&format!("{key}={value} is refused"));
                let message = error.to_string();
                assert!(message.contains(key) && message.contains(reason), "{key}={value}: {message}");
                Ok(())
            });
        }
        let mut small_disk = NodeConfig::default();
        small_disk.cache.disk_dir = Some("/tmp/cache".into());
        small_disk.cache.disk = ByteSize::mib(32);
        let message = small_disk.validate_for(Service::PlanExecutor).expect_err("disk smaller than 4 blocks");
        assert!(message.to_string().contains("cache.disk: must be at least 64MiB"), "{message}");
        let mut twice = NodeConfig::default();
        let executor = ExecutorEndpoint { id: "pe-0".into(), address: "http://127.0.0.1:7070".into() };
        twice.cluster.executors = vec![executor.clone(), executor];
        let message = twice.validate_for(Service::QueryNode).expect_err("duplicate executor id");
        assert!(message.to_string().contains("'pe-0' is listed twice"), "{message}");
        let mut off = NodeConfig::default();
        off.cache.memory = ByteSize(0);
        off.validate_for(Service::PlanExecutor).expect("memory 0 turns the cache off");
    }

    #[test]
    fn roles_refuse_to_start_without_what_they_need() {
        let config = NodeConfig::default();
        let cases = [
            (Service::QueryNode, "a query node needs plan executors"),
            (Service::ControlPlane, "the control plane needs etcd"),
            (Service::Indexer, "an indexer follows the cluster's change events on etcd"),
        ];
        for (service, reason) in cases {
            let error = config.validate_for(service).expect_err("refused");
            assert!(error.to_string().starts_with(&format!("{service} cannot start: {reason}")), "{error}");
        }
        config.validate_for(Service::IndexerOnce).expect("--once needs no etcd");
        let mut exposed = NodeConfig::default();
        exposed.control.etcd_endpoints = vec!["http://127.0.0.1:2379".into()];
        exposed.executor.listen = "0.0.0.0:7070".parse().expect("addr");
        let error = exposed.validate_for(Service::PlanExecutor).expect_err("no address to advertise");
        assert!(error.to_string().contains("executor.advertise_address"), "{error}");
        exposed.executor.advertise_address = Some("http://10.1.2.3:7070".into());
        exposed.validate_for(Service::PlanExecutor).expect("advertised");
        assert_eq!("plan-executor".parse::<Service>(), Ok(Service::PlanExecutor));
        assert!("executor".parse::<Service>().is_err());
    }

    /// Every key of the configuration, dotted, with its default as TOML would show it.
    fn keys_with_defaults() -> BTreeMap<String, serde_json::Value> {
        fn walk(prefix: &str, value: &serde_json::Value, keys: &mut BTreeMap<String, serde_json::Value>) {
            match value {
                serde_json::Value::Object(fields) if prefix.matches('.').count() < 1 => {
                    for (name, field) in fields {
                        let key = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
                        walk(&key, field, keys);
                    }
                }
                other => {
                    keys.insert(prefix.to_string(), other.clone());
                }
            }
        }
        let mut keys = BTreeMap::new();
        walk("", &serde_json::to_value(NodeConfig::default()).expect("serializable"), &mut keys);
        keys
    }

    /// `docs/configuration.md` documents every key with its current default, every
    /// documented key exists, and every renamed key is listed under its old name.
    #[test]
    fn the_configuration_reference_documents_every_key_and_default() {
        let docs = include_str!("../../../docs/configuration.md");
        let documented = docs
            .lines()
            .filter_map(|line| line.strip_prefix("| `"))
            .filter_map(|rest| rest.split_once('`'))
            .map(|(key, rest)| (key.to_string(), rest.to_string()))
            .collect::<BTreeMap<_, _>>();
        let keys = keys_with_defaults();
        for (key, default) in &keys {
            let row = documented.get(key).unwrap_or_else(|| panic!("docs/configuration.md has no row for `{key}`"));
            let shown = match default {
                serde_json::Value::String(text) => Some(text.clone()),
                serde_json::Value::Number(number) => Some(number.to_string()),
                serde_json::Value::Bool(flag) => Some(flag.to_string()),
                _ => None,
            };
            if let Some(shown) = shown {
                assert!(row.contains(&format!("`{shown}`")), "the row of `{key}` must show its default `{shown}`");
            }
        }
        for (section, old, new, _) in RENAMED_KEYS {
            let old_key = format!("{section}.{old}");
            assert!(keys.contains_key(&format!("{section}.{new}")), "{old_key} renames a key that exists");
            assert!(docs.contains(&format!("`{old_key}`")), "docs/configuration.md lists the old key `{old_key}`");
        }
        for key in documented.keys().filter(|key| key.contains('.') && !key.contains(' ')) {
            let old = RENAMED_KEYS.iter().any(|(section, old, _, _)| *key == format!("{section}.{old}"));
            assert!(keys.contains_key(key) || old, "docs/configuration.md documents `{key}`, which does not exist");
        }
    }
}
