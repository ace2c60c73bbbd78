//! The LanceFleet plan executor: a gRPC service that runs plan fragments (one query over
//! some fragments of a pinned table version) with lance and streams Arrow batches back.
//!
//! [`PlanExecutorNode::bind`] opens the socket; [`PlanExecutorNode::serve`] answers until
//! the shutdown signal, then reports NOT_SERVING on the health service, lets the cluster
//! learn that it is leaving, stops accepting and lets in-flight fragments finish within
//! the grace period.

mod error;
mod metrics;
mod prewarm;
mod service;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use lancefleet_common::Shutdown;
use lancefleet_common::config::ExecutorConfig;
use lancefleet_engine::Catalog;
use lancefleet_proto::v1::plan_executor_server::PlanExecutorServer;
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

pub use error::ExecutorError;
pub use prewarm::Prewarmer;
pub use service::ExecutorService;

/// Largest gRPC message sent (Arrow Flight splits batches below this).
const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// A plan executor bound to its address, ready to serve.
#[derive(Debug)]
pub struct PlanExecutorNode {
    listener: TcpListener,
    service: ExecutorService,
    node_id: String,
    grace: Duration,
    metrics_listen: SocketAddr,
}

impl PlanExecutorNode {
    /// Binds the gRPC listener of `config`; fragments read tables through `catalog`.
    pub async fn bind(config: &ExecutorConfig, catalog: Catalog) -> Result<Self, ExecutorError> {
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| ExecutorError::Listen { address: config.listen.to_string(), source })?;
        Ok(Self {
            listener,
            service: ExecutorService::new(catalog, config.open_datasets),
            node_id: config.node_id.clone(),
            grace: Duration::from_secs(config.shutdown_grace_seconds),
            metrics_listen: config.metrics_listen,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> Result<SocketAddr, ExecutorError> {
        self.listener
            .local_addr()
            .map_err(|source| ExecutorError::Listen { address: "the bound socket".into(), source })
    }

    /// Serves until `shutdown` fires. Then it reports NOT_SERVING, runs `leaving` (which
    /// tells the cluster, and waits until query nodes have heard) while still accepting
    /// fragments, stops accepting, and drains in-flight fragments for at most the grace
    /// period.
    pub async fn serve(self, shutdown: Shutdown, leaving: impl Future<Output = ()>) -> Result<(), ExecutorError> {
        let address = self.local_addr()?;
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter.set_serving::<PlanExecutorServer<ExecutorService>>().await;
        let executor = PlanExecutorServer::new(self.service)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let accepting = Shutdown::new();
        let stop = accepting.clone();
        // TCP_NODELAY on the incoming stream itself: the builder's setting is ignored for
        // a custom incoming, and Nagle + delayed ACKs would add ~40 ms to every answer.
        let incoming = TcpIncoming::from(self.listener).with_nodelay(Some(true));
        let server = Server::builder()
            .add_service(health_service)
            .add_service(executor)
            .serve_with_incoming_shutdown(incoming, async move { stop.wait().await });
        let server = tokio::spawn(server);
        let metrics = tokio::spawn(lancefleet_common::metrics::serve_metrics(self.metrics_listen, shutdown.clone()));
        tracing::info!(%address, node_id = %self.node_id, "plan executor is serving");
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
