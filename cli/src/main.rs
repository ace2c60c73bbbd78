//! `lancefleet`: the one binary of LanceFleet. It parses the command line, reads the
//! configuration, installs logging and the one shutdown signal (SIGINT/SIGTERM), and runs
//! the role the subcommand names; every role's wiring lives in its crate (`run`).
//! `standalone` composes the query node with the indexer it embeds.

mod keys;
mod simulate;
mod smoke;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use lancefleet_common::config::{ExecutorEndpoint, NodeConfig, Override, Service};
use lancefleet_common::telemetry;
use lancefleet_common::{NodeContext, Shutdown};

/// How long tasks still running after the role stopped may take before the process exits.
const EXIT_GRACE: Duration = Duration::from_secs(2);

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
    /// executors given by `--executor` (or `[cluster] executors`, or etcd).
    QueryNode(QueryNodeArgs),
    /// A plan executor: runs the plan fragments query nodes send it over gRPC.
    PlanExecutor(PlanExecutorArgs),
    /// A control-plane instance (run two or more; one leads, elected through etcd): probes
    /// executor health and serves the cluster state at GET /v1/cluster.
    ControlPlane(ControlPlaneArgs),
    /// An indexer (run any number): follows table changes on etcd and compacts, indexes
    /// and cleans tables in the background; `--once` maintains every table once and exits.
    Indexer(IndexerArgs),
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// API keys: make one with its configuration entry, or hash one.
    #[command(subcommand)]
    Key(keys::KeyCommand),
    /// Checks a running cluster through its query node's REST API (what the Helm chart's
    /// `helm test` pod runs): creates a small table, searches it, counts it, drops it.
    SmokeTest(SmokeTestArgs),
    /// Shows a running cluster: nodes, roles, health, the control-plane leader, placement
    /// shares, executors' cache hit ratios, and per table its fragments, unindexed rows and
    /// index coverage.
    Status(StatusArgs),
    /// Simulates placement on a fleet larger than this machine with the cluster's own
    /// placement code (default: 1000 executors, 1M placed units): balance, units moved
    /// when an executor joins or leaves, and cache hit ratios of a Zipf read stream.
    /// Prints JSON.
    SimulatePlacement(simulate::SimulateArgs),
}

/// Flags of `status`.
#[derive(Debug, clap::Args)]
struct StatusArgs {
    /// A control plane's HTTP URL (http://lancefleet-control-plane:8070), or a query node's
    /// REST URL (its executors and tables only).
    #[arg(long)]
    url: String,
    /// A query node's REST URL, to show the tables too (when --url is a control plane).
    #[arg(long)]
    query_node: Option<String>,
    /// An API key for the query node (an unscoped admin key: the cluster view is
    /// admin-only).
    #[arg(long, env = "LANCEFLEET_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Redraw every this many seconds until interrupted.
    #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "2")]
    watch: Option<u64>,
    /// Print the view as JSON (once) instead of text.
    #[arg(long, conflicts_with = "watch")]
    json: bool,
}

/// Flags of `smoke-test`.
#[derive(Debug, clap::Args)]
struct SmokeTestArgs {
    /// The query node's REST base URL, e.g. http://lancefleet-query-node:8080.
    #[arg(long)]
    url: String,
    /// An API key with the admin role, when the cluster checks keys (the chart's Secret
    /// holds one for `helm test`).
    #[arg(long, env = "LANCEFLEET_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// PEM CA certificates to verify an https:// query node by (beside the system's).
    #[arg(long)]
    ca_cert: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Loads and validates the configuration exactly as ROLE would at start (defaults <
    /// file < environment < flags): exits 0, or 2 with one line saying what is wrong.
    Check(CheckArgs),
}

/// Flags of `config check`.
#[derive(Debug, clap::Args)]
struct CheckArgs {
    /// The role whose start is checked: standalone, query-node, plan-executor,
    /// control-plane, indexer or indexer-once.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(Service::ALL.map(Service::as_str)))]
    role: String,
    #[command(flatten)]
    common: CommonArgs,
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
    /// Load and validate the configuration as this command would at start, then exit: 0,
    /// or 2 with one line saying what is wrong. Nothing is started.
    #[arg(long)]
    check: bool,
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

/// Flags of `plan-executor`.
#[derive(Debug, clap::Args)]
struct PlanExecutorArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// gRPC address to listen on [config: executor.listen, default 127.0.0.1:7070].
    #[arg(long)]
    listen: Option<String>,
    /// Stable node id, the placement key [config: executor.node_id, default $POD_NAME, else
    /// plan-executor-{host}-{port}].
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

impl CommonArgs {
    /// The configuration these flags, with `extra` flag overrides, read from the layers.
    fn load(&self, extra: &[(&'static str, &Option<String>)]) -> Result<NodeConfig, String> {
        let flags = [
            ("storage.root", &self.data_dir),
            ("log.level", &self.log_level),
            ("log.format", &self.log_format),
            ("control.cluster", &self.cluster),
        ];
        let overrides = flags
            .iter()
            .chain(extra)
            .filter_map(|(key, value)| value.as_ref().map(|value| (*key, value.clone())))
            .collect::<Vec<Override>>();
        let mut config = NodeConfig::load(self.config.as_deref(), &overrides).map_err(|error| error.to_string())?;
        if !self.etcd_endpoints.is_empty() {
            config.control.etcd_endpoints = self.etcd_endpoints.clone();
        }
        Ok(config)
    }
}

impl QueryNodeArgs {
    fn load(&self) -> Result<NodeConfig, String> {
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

impl Command {
    /// Whether the command only checks its configuration.
    fn checks_only(&self) -> bool {
        match self {
            Self::Standalone(args) | Self::QueryNode(args) => args.common.check,
            Self::PlanExecutor(args) => args.common.check,
            Self::ControlPlane(args) => args.common.check,
            Self::Indexer(args) => args.common.check,
            Self::Config(ConfigCommand::Check(_)) => true,
            Self::SmokeTest(_) | Self::Status(_) | Self::SimulatePlacement(_) | Self::Key(_) => false,
        }
    }

    /// The service this command runs and its configuration, validated for it.
    fn configure(&self) -> Result<(Service, NodeConfig), String> {
        let (service, config) = match self {
            Self::Standalone(args) => (Service::Standalone, args.load()?),
            Self::QueryNode(args) => (Service::QueryNode, args.load()?),
            Self::PlanExecutor(args) => (
                Service::PlanExecutor,
                args.common.load(&[
                    ("executor.listen", &args.listen),
                    ("executor.node_id", &args.node_id),
                    ("cache.disk_dir", &args.cache_dir),
                    ("executor.metrics_listen", &args.metrics_listen),
                    ("executor.advertise_address", &args.advertise_address),
                ])?,
            ),
            Self::ControlPlane(args) => (
                Service::ControlPlane,
                args.common.load(&[("control.listen", &args.listen), ("control.node_id", &args.node_id)])?,
            ),
            Self::Indexer(args) => (
                if args.once { Service::IndexerOnce } else { Service::Indexer },
                args.common.load(&[("indexer.listen", &args.listen), ("control.node_id", &args.node_id)])?,
            ),
            Self::Config(ConfigCommand::Check(args)) => (args.role.parse()?, args.common.load(&[])?),
            Self::SmokeTest(_) | Self::Status(_) | Self::SimulatePlacement(_) | Self::Key(_) => {
                return Err("this command reads no configuration".into());
            }
        };
        config.validate_for(service).map_err(|error| error.to_string())?;
        Ok((service, config))
    }
}

fn main() -> ExitCode {
    lancefleet_common::tls::install_crypto_provider();
    let command = Cli::parse().command;
    match command {
        Command::SmokeTest(args) => return smoke_test(args),
        Command::Status(args) => return status(args),
        Command::SimulatePlacement(args) => return exit_with(simulate::run(&args)),
        Command::Key(command) => return exit_with(keys::run(command)),
        _ => {}
    }
    let (service, config) = match command.configure() {
        Ok(configured) => configured,
        Err(error) => {
            eprintln!("lancefleet: {error}");
            return ExitCode::from(2);
        }
    };
    if command.checks_only() {
        println!("lancefleet: the configuration is valid for {service}");
        return ExitCode::SUCCESS;
    }
    if matches!(service, Service::Indexer | Service::IndexerOnce) {
        limit_commit_retries(&config);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("lancefleet: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        let instance = config.node_id(service, listen_port(service, &config));
        let origin = telemetry::Origin { service: service.as_str(), instance: &instance };
        let telemetry = match telemetry::init(&config.log, &config.trace, origin) {
            Ok(telemetry) => telemetry,
            Err(error) => {
                eprintln!("lancefleet: cannot set up logging and tracing: {error}");
                return Err(error.into());
            }
        };
        lancefleet_common::metrics::register_process(service.as_str());
        let outcome = run(service, config).await;
        // The exporter's last flush waits on its export; off the async workers.
        if let Err(error) = tokio::task::spawn_blocking(move || telemetry.shutdown()).await {
            eprintln!("lancefleet: flushing traces failed: {error}");
        }
        outcome
    });
    // Every role has stopped in order; what still runs is abandoned work (a maintenance job
    // inside lance's CPU-bound code) that must not hold the process.
    runtime.shutdown_timeout(EXIT_GRACE);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "lancefleet stopped with an error");
            ExitCode::FAILURE
        }
    }
}

/// A runtime for a client command.
fn client_runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => Some(runtime),
        Err(error) => {
            eprintln!("lancefleet: cannot start the async runtime: {error}");
            None
        }
    }
}

/// `lancefleet status`: the view once (text or JSON), or redrawn until interrupted.
fn status(args: StatusArgs) -> ExitCode {
    let Some(runtime) = client_runtime() else { return ExitCode::FAILURE };
    let source = status::Source { url: args.url, query_node: args.query_node, api_key: args.api_key };
    runtime.block_on(async {
        if args.watch.is_none() {
            return match status::gather(&source).await {
                Ok(view) if args.json => {
                    println!("{view:#}");
                    ExitCode::SUCCESS
                }
                Ok(view) => {
                    print!("{}", status::render(&view));
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("lancefleet status: {error}");
                    ExitCode::FAILURE
                }
            };
        }
        let seconds = args.watch.unwrap_or(2).max(1);
        // One interrupt future for the whole watch, so a Ctrl-C during a gather is not lost.
        let interrupted = tokio::signal::ctrl_c();
        tokio::pin!(interrupted);
        loop {
            let view = tokio::select! {
                view = status::gather(&source) => view,
                _ = &mut interrupted => return ExitCode::SUCCESS,
            };
            let view = view.unwrap_or_else(|error| serde_json::json!({ "cluster": { "answered_by": error } }));
            // Clear the screen, then draw.
            print!("\x1b[2J\x1b[H{}", status::render(&view));
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(seconds)) => {}
                _ = &mut interrupted => return ExitCode::SUCCESS,
            }
        }
    })
}

/// 0, or 1 after printing `outcome`'s error.
fn exit_with<E: std::fmt::Display>(outcome: Result<(), E>) -> ExitCode {
    outcome.map_or_else(
        |error| {
            eprintln!("lancefleet: {error}");
            ExitCode::FAILURE
        },
        |()| ExitCode::SUCCESS,
    )
}

/// `lancefleet smoke-test`: 0 when the cluster answered as it should.
fn smoke_test(args: SmokeTestArgs) -> ExitCode {
    let Some(runtime) = client_runtime() else { return ExitCode::FAILURE };
    match runtime.block_on(smoke::run(&args.url, args.api_key, args.ca_cert.as_deref())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("lancefleet smoke-test failed: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The port a `service` process names itself by (its node id's default suffix).
fn listen_port(service: Service, config: &NodeConfig) -> u16 {
    match service {
        Service::Standalone | Service::QueryNode => config.rest.listen.port(),
        Service::PlanExecutor => config.executor.listen.port(),
        Service::ControlPlane => config.control.listen.port(),
        Service::Indexer | Service::IndexerOnce => config.indexer.listen.port(),
    }
}

/// Runs `service` until SIGINT/SIGTERM and its orderly stop.
async fn run(service: Service, config: NodeConfig) -> Result<(), Box<dyn std::error::Error>> {
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signals();
    match service {
        Service::Standalone => standalone(config, shutdown).await?,
        Service::QueryNode => lancefleet_query_node::run(config, shutdown).await?,
        Service::PlanExecutor => lancefleet_plan_executor::run(config, shutdown).await?,
        Service::ControlPlane => lancefleet_control_plane::run(config, shutdown).await?,
        Service::Indexer => lancefleet_indexer::run(config, shutdown).await?,
        Service::IndexerOnce => {
            let failed = lancefleet_indexer::run_once(config, shutdown).await?;
            tracing::info!(failed, "every table maintained once");
            if failed > 0 {
                return Err(format!("{failed} table(s) could not be maintained; see the log").into());
            }
        }
    }
    Ok(())
}

/// `standalone`: the query node (executing in-process unless it has executors) and the
/// indexer it embeds, sharing one context, so one event bus.
async fn standalone(config: NodeConfig, shutdown: Shutdown) -> Result<(), Box<dyn std::error::Error>> {
    let context = NodeContext::connect(&config, shutdown).await?;
    let indexer = lancefleet_indexer::start_embedded(&config, &context, Service::Standalone).await?;
    let node = lancefleet_query_node::start(config, &context, Service::Standalone).await?;
    let served = node.wait().await;
    if let Some(indexer) = indexer
        && let Err(error) = indexer.await
    {
        tracing::warn!(%error, "the embedded indexer failed");
    }
    Ok(served?)
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
        unsafe { std::env::set_var(VARIABLE, config.indexer.commit_retry_timeout.as_secs().to_string()) };
    }
}
