//! `lancefleet`: the one binary of LanceFleet, one subcommand per role.

mod roles;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lancefleet_common::config::{ExecutorEndpoint, NodeConfig, Override};
use lancefleet_common::telemetry::init_logging;

/// LanceFleet: a distributed query cluster for vector and full-text search over Lance tables.
#[derive(Debug, Parser)]
#[command(name = "lancefleet", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every role in one process, serving the LanceDB REST API over a local directory
    /// (or an s3://, az://, gs:// root). With `--executor`s it sends fragments to them.
    Standalone(QueryNodeArgs),
    /// A stateless query node: the LanceDB REST API, spreading each query over the plan
    /// executors given by `--executor` (or `[cluster] executors`).
    QueryNode(QueryNodeArgs),
    /// A plan executor: runs the plan fragments query nodes send it over gRPC.
    PlanExecutor(PlanExecutorArgs),
    /// A control-plane instance (run two or more; one leads, elected through etcd): probes
    /// executor health and serves the cluster state at GET /v1/cluster.
    ControlPlane(ControlPlaneArgs),
    /// An indexer (run any number): follows table changes on etcd and compacts, indexes
    /// and cleans tables in the background; `--once` maintains every table once and exits.
    Indexer(IndexerArgs),
}

/// Flags of `indexer`.
#[derive(Debug, clap::Args)]
struct IndexerArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Address of the /metrics endpoint [config: indexer.listen, default 127.0.0.1:8090].
    #[arg(long)]
    listen: Option<String>,
    /// Stable id, the holder name of its table locks [config: control.node_id, default
    /// $POD_NAME, else indexer-{host}-{port}].
    #[arg(long)]
    node_id: Option<String>,
    /// Maintain every table once, then exit.
    #[arg(long)]
    once: bool,
}

/// Flags every role has. Each overrides the config file and the environment.
#[derive(Debug, clap::Args)]
struct CommonArgs {
    /// TOML configuration file (see docs/configuration.md).
    #[arg(long, env = "LANCEFLEET_CONFIG")]
    config: Option<PathBuf>,
    /// Storage root: a directory, or s3://bucket/prefix, az://container/prefix, gs://bucket/prefix
    /// [config: storage.root, default ./lancefleet-data].
    #[arg(long)]
    data_dir: Option<String>,
    /// Log filter such as `info` or `lancefleet=debug` [config: log.level].
    #[arg(long)]
    log_level: Option<String>,
    /// Log format: text or json [config: log.format].
    #[arg(long)]
    log_format: Option<String>,
    /// An etcd endpoint of the control plane, e.g. http://127.0.0.1:2379; repeat for each
    /// (replaces `control.etcd_endpoints`). Nodes then register and follow membership there.
    #[arg(long = "etcd", value_name = "URL")]
    etcd_endpoints: Vec<String>,
    /// Name of the cluster in etcd [config: control.cluster, default lancefleet].
    #[arg(long)]
    cluster: Option<String>,
}

/// Flags of `standalone` and `query-node`.
#[derive(Debug, clap::Args)]
struct QueryNodeArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Address of the REST API [config: rest.listen, default 127.0.0.1:8080].
    #[arg(long)]
    rest_listen: Option<String>,
    /// Address of Arrow Flight and Flight SQL [config: flight.listen, default 127.0.0.1:10025].
    #[arg(long)]
    flight_listen: Option<String>,
    /// A plan executor as ID=ADDRESS, e.g. pe-1=http://127.0.0.1:7070; repeat for each
    /// (replaces `cluster.executors`).
    #[arg(long = "executor", value_name = "ID=ADDRESS")]
    executors: Vec<ExecutorEndpoint>,
    /// Stable node id in etcd [config: control.node_id, default $POD_NAME, else {role}-{host}-{port}].
    #[arg(long)]
    node_id: Option<String>,
}

/// Flags of `control-plane`.
#[derive(Debug, clap::Args)]
struct ControlPlaneArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Address of the HTTP endpoint (/v1/cluster, /health, /metrics) [config: control.listen,
    /// default 127.0.0.1:8070].
    #[arg(long)]
    listen: Option<String>,
    /// Stable node id [config: control.node_id, default $POD_NAME, else {role}-{host}-{port}].
    #[arg(long)]
    node_id: Option<String>,
}

/// Flags of `plan-executor`.
#[derive(Debug, clap::Args)]
struct PlanExecutorArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// gRPC address to listen on [config: executor.listen, default 127.0.0.1:7070].
    #[arg(long)]
    listen: Option<String>,
    /// Stable node id [config: executor.node_id].
    #[arg(long)]
    node_id: Option<String>,
    /// Directory of the disk tier of the object cache (local NVMe/SSD) [config: cache.disk_dir].
    #[arg(long)]
    cache_dir: Option<String>,
    /// Address of the Prometheus /metrics endpoint [config: executor.metrics_listen, default 127.0.0.1:9464].
    #[arg(long)]
    metrics_listen: Option<String>,
    /// gRPC address registered in etcd [config: executor.advertise_address, default http://{listen}].
    #[arg(long)]
    advertise_address: Option<String>,
}

impl CommonArgs {
    fn overrides(&self) -> Vec<Override> {
        let flags = [
            ("storage.root", &self.data_dir),
            ("log.level", &self.log_level),
            ("log.format", &self.log_format),
            ("control.cluster", &self.cluster),
        ];
        flags.into_iter().filter_map(|(key, value)| value.clone().map(|value| (key, value))).collect()
    }

    /// Reads the configuration layers with `extra` flag overrides on top, and sets up logging.
    fn load(&self, extra: &[(&'static str, &Option<String>)]) -> Result<NodeConfig, ExitCode> {
        let mut overrides = self.overrides();
        overrides.extend(extra.iter().filter_map(|(key, value)| value.as_ref().map(|value| (*key, value.clone()))));
        let config = NodeConfig::load(self.config.as_deref(), &overrides).map_err(|error| {
            eprintln!("lancefleet: {error}");
            ExitCode::from(2)
        })?;
        let mut config = config;
        if !self.etcd_endpoints.is_empty() {
            config.control.etcd_endpoints = self.etcd_endpoints.clone();
        }
        init_logging(&config.log).map_err(|error| {
            eprintln!("lancefleet: cannot set up logging: {error}");
            ExitCode::from(2)
        })?;
        Ok(config)
    }
}

impl QueryNodeArgs {
    fn load(&self) -> Result<NodeConfig, ExitCode> {
        let mut config = self.common.load(&[
            ("rest.listen", &self.rest_listen),
            ("flight.listen", &self.flight_listen),
            ("control.node_id", &self.node_id),
        ])?;
        if !self.executors.is_empty() {
            config.cluster.executors = self.executors.clone();
        }
        Ok(config)
    }
}

fn main() -> ExitCode {
    let outcome = match Cli::parse().command {
        Command::Standalone(args) => args.load().map(|config| run(roles::standalone(config))),
        Command::QueryNode(args) => args.load().map(|config| run(roles::query_node(config))),
        Command::PlanExecutor(args) => args
            .common
            .load(&[
                ("executor.listen", &args.listen),
                ("executor.node_id", &args.node_id),
                ("cache.disk_dir", &args.cache_dir),
                ("executor.metrics_listen", &args.metrics_listen),
                ("executor.advertise_address", &args.advertise_address),
            ])
            .map(|config| run(roles::plan_executor(config))),
        Command::ControlPlane(args) => args
            .common
            .load(&[("control.listen", &args.listen), ("control.node_id", &args.node_id)])
            .map(|config| run(roles::control_plane(config))),
        Command::Indexer(args) => {
            args.common.load(&[("indexer.listen", &args.listen), ("control.node_id", &args.node_id)]).map(|config| {
                limit_commit_retries(&config);
                run(roles::indexer(config, args.once))
            })
        }
    };
    outcome.unwrap_or_else(|code| code)
}

/// Sets lance's commit retry budget for an indexer process (lance reads it from the
/// environment, once per process), unless the environment already sets it. A maintenance
/// commit that keeps losing to appends then gives up sooner and is planned again on the
/// newer version, starting over from short backoff windows instead of starving behind
/// the writers for lance's default 30 s.
fn limit_commit_retries(config: &NodeConfig) {
    const VARIABLE: &str = "LANCE_COMMIT_RETRY_TIMEOUT_SECS";
    if std::env::var_os(VARIABLE).is_none() {
        // SAFETY: called from `main` before the async runtime, or any other thread, exists.
        unsafe { std::env::set_var(VARIABLE, config.indexer.commit_retry_timeout_seconds.to_string()) };
    }
}

/// Runs a role on a multi-threaded runtime and turns its outcome into an exit code.
fn run<E: std::fmt::Display>(role: impl std::future::Future<Output = Result<(), E>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("lancefleet: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(role) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "lancefleet stopped with an error");
            ExitCode::FAILURE
        }
    }
}
