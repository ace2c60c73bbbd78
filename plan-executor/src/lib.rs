//! The LanceFleet plan executor: a gRPC service that runs plan fragments (one query over
//! some fragments of a pinned table version) with lance and streams Arrow batches back.
//!
//! [`run`] is the `plan-executor` role: it opens the catalog and the object cache, binds,
//! registers in etcd (when there is a control plane), prewarms its share of the tables (at
//! start, after membership changes and after maintenance), and serves until the shutdown
//! signal. Then it shuts down in a fixed order: NOT_SERVING on the health service,
//! `stopping` in etcd and a pause for query nodes to hear it, stop accepting, drain
//! in-flight fragments within the grace period, deregister, and flush the cache's disk tier
//! last. [`start`] does the same but returns once the node serves, with its addresses (the
//! in-process test cluster starts executors on port 0).

mod admission;
mod error;
mod metrics;
mod prewarm;
mod service;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lancefleet_common::cluster_state::{NodeRecord, Role};
use lancefleet_common::config::{NodeConfig, Service};
use lancefleet_common::tls::Accepting;
use lancefleet_common::{NodeContext, Shutdown};
use lancefleet_engine::Catalog;
use lancefleet_proto::v1::plan_executor_server::PlanExecutorServer;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::transport::Server;

pub use admission::Admission;
pub use error::ExecutorError;
pub use prewarm::Prewarmer;
pub use service::ExecutorService;

/// Largest gRPC message sent (Arrow Flight splits batches below this).
const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// Runs the `plan-executor` role until `shutdown` and its orderly stop.
pub async fn run(config: NodeConfig, shutdown: Shutdown) -> Result<(), ExecutorError> {
    config.validate_for(Service::PlanExecutor).map_err(lancefleet_common::StartError::from)?;
    let context = NodeContext::connect(&config, shutdown).await?;
    start(config, &context).await?.wait().await
}

/// A plan executor that serves until its context's shutdown signal.
#[derive(Debug)]
pub struct RunningExecutor {
    node_id: String,
    address: SocketAddr,
    advertised: String,
    task: JoinHandle<Result<(), ExecutorError>>,
}

impl RunningExecutor {
    /// Its node id (the placement key).
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The gRPC address it is bound to.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The address it registers for query nodes to reach it at.
    pub fn advertised(&self) -> &str {
        &self.advertised
    }

    /// Waits until it has stopped (after the shutdown signal, in order).
    pub async fn wait(self) -> Result<(), ExecutorError> {
        self.task.await?
    }
}

/// Starts a plan executor as `config` says within `context` and returns once it serves.
pub async fn start(config: NodeConfig, context: &NodeContext) -> Result<RunningExecutor, ExecutorError> {
    config.validate_for(Service::PlanExecutor).map_err(lancefleet_common::StartError::from)?;
    std::sync::LazyLock::force(&metrics::METRICS);
    let (catalog, cache) = Catalog::open(&config.storage, &config.cache).await?;
    let node = PlanExecutorNode::bind(&config, catalog.clone()).await?;
    let address = node.local_addr()?;
    let node_id = config.node_id(Service::PlanExecutor, address.port());
    let scheme = if config.tls.serves_tls() { "https" } else { "http" };
    let advertised = config.executor.advertise_address.clone().unwrap_or_else(|| format!("{scheme}://{address}"));
    let capacity = config.cache.capacity().bytes();
    let metrics_host = advertised
        .parse::<http::Uri>()
        .ok()
        .and_then(|uri| uri.host().map(str::to_string))
        .unwrap_or_else(|| address.ip().to_string());
    let metrics = format!("http://{metrics_host}:{}", node.metrics_addr()?.port());
    let record = NodeRecord::new(node_id.clone(), Role::PlanExecutor, advertised.clone(), capacity)
        .with_metrics_address(metrics);
    let presence = context.register(record).await;
    if context.etcd().is_some()
        && let Some(membership) = context.executors(&config.cluster).await
    {
        let prewarmer = Prewarmer {
            catalog,
            membership: membership.subscribe(),
            cluster: config.cluster.clone(),
            node_id: node_id.clone(),
            budget: if cache.is_some() {
                config.executor.prewarm_budget.map_or(capacity / 2, |budget| budget.bytes())
            } else {
                0
            },
        };
        tokio::spawn(prewarmer.follow(context.bus(), context.shutdown().clone()));
    }
    let propagation = config.control.stopping_propagation;
    let shutdown = context.shutdown().clone();
    let id = node_id.clone();
    let task = tokio::spawn(async move {
        let served = node.serve(shutdown, &id, presence.announce_stopping(propagation)).await;
        presence.leave().await;
        if let Some(cache) = cache {
            cache.close().await?;
        }
        tracing::info!(node_id = %id, "plan executor stopped");
        served
    });
    Ok(RunningExecutor { node_id, address, advertised, task })
}

/// A plan executor bound to its addresses, ready to serve.
#[derive(Debug)]
struct PlanExecutorNode {
    listener: TcpListener,
    /// TLS, mutual when `tls.ca` is set.
    tls: Option<Arc<rustls::ServerConfig>>,
    metrics: TcpListener,
    service: ExecutorService,
    grace: Duration,
}

impl PlanExecutorNode {
    /// Binds the gRPC and metrics listeners of `config`; fragments read tables through
    /// `catalog`.
    async fn bind(config: &NodeConfig, catalog: Catalog) -> Result<Self, ExecutorError> {
        let executor = &config.executor;
        let listen = |address: SocketAddr| async move {
            TcpListener::bind(address)
                .await
                .map_err(|source| ExecutorError::Listen { address: address.to_string(), source })
        };
        let tls = config.tls.node_server().map_err(lancefleet_common::StartError::from)?;
        Ok(Self {
            listener: listen(executor.listen).await?,
            tls,
            metrics: listen(executor.metrics_listen).await?,
            service: ExecutorService::new(catalog, executor.open_datasets, Admission::new(executor)),
            grace: executor.shutdown_grace,
        })
    }

    /// The metrics address actually bound.
    fn metrics_addr(&self) -> Result<SocketAddr, ExecutorError> {
        self.metrics
            .local_addr()
            .map_err(|source| ExecutorError::Listen { address: "the metrics socket".into(), source })
    }

    /// The gRPC address actually bound.
    fn local_addr(&self) -> Result<SocketAddr, ExecutorError> {
        self.listener
            .local_addr()
            .map_err(|source| ExecutorError::Listen { address: "the bound socket".into(), source })
    }

    /// Serves until `shutdown` fires. Then it reports NOT_SERVING, runs `leaving` (which
    /// tells the cluster, and waits until query nodes have heard) while still accepting
    /// fragments, stops accepting, and drains in-flight fragments for at most the grace
    /// period.
    async fn serve(
        self,
        shutdown: Shutdown,
        node_id: &str,
        leaving: impl Future<Output = ()>,
    ) -> Result<(), ExecutorError> {
        let address = self.local_addr()?;
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter.set_serving::<PlanExecutorServer<ExecutorService>>().await;
        let executor = PlanExecutorServer::new(self.service)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let accepting = Shutdown::new();
        let stop = accepting.clone();
        // TCP_NODELAY on the accepted connections themselves: the builder's setting is
        // ignored for a custom incoming, and Nagle + delayed ACKs would add ~40 ms to every
        // answer.
        let incoming = Accepting::new(self.listener, self.tls)
            .map_err(|source| ExecutorError::Listen { address: address.to_string(), source })?
            .into_stream();
        let server = Server::builder()
            .add_service(health_service)
            .add_service(executor)
            .serve_with_incoming_shutdown(incoming, async move { stop.wait().await });
        let server = tokio::spawn(server);
        let metrics = tokio::spawn(lancefleet_common::metrics::serve_metrics_on(self.metrics, shutdown.clone()));
        tracing::info!(%address, node_id, "plan executor is serving");
        // Query nodes stop sending new fragments before the executor stops accepting them.
        let stopping = async {
            health_reporter.set_not_serving::<PlanExecutorServer<ExecutorService>>().await;
            leaving.await;
            accepting.trigger();
        };
        let drained = shutdown.drain(server, self.grace, stopping, "fragments").await?;
        if !shutdown.is_triggered() {
            // The gRPC server ended on its own; the metrics endpoint would wait forever.
            metrics.abort();
        } else if let Ok(Err(error)) = metrics.await {
            tracing::warn!(%error, "the metrics endpoint failed");
        }
        drained.unwrap_or(Ok(())).map_err(ExecutorError::from)
    }
}
