//! The LanceFleet control plane: several may run; one leads, elected through etcd.
//!
//! The leader probes every registered plan executor over gRPC health and marks those that
//! fail `unhealthy_after_probes` probes in a row (`/{cluster}/health/{node_id}`, under the
//! leader's lease), so query nodes route around a dead executor before its own lease runs
//! out; a probe that passes clears the mark. Every instance serves the cluster state for
//! operators at `GET /v1/cluster`, plus `/health` and `/metrics`.

mod error;
mod health;
mod leader;
mod metrics;
mod state;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use lancefleet_common::cluster_state::{NodeRecord, Role};
use lancefleet_common::config::{NodeConfig, Service};
use lancefleet_common::etcd::{self, EtcdMembership, Keys, Registration};
use lancefleet_common::{Shutdown, StartError};
use tokio::net::TcpListener;

pub use error::ControlPlaneError;

/// Runs the `control-plane` role until `shutdown`: registers the instance, campaigns for
/// leadership, probes executors while leading, and serves the cluster state. On shutdown
/// it stops serving, resigns, and deregisters.
pub async fn run(config: NodeConfig, shutdown: Shutdown) -> Result<(), ControlPlaneError> {
    config.validate_for(Service::ControlPlane).map_err(StartError::from)?;
    std::sync::LazyLock::force(&metrics::METRICS);
    let control = &config.control;
    let listener = TcpListener::bind(control.listen)
        .await
        .map_err(|source| ControlPlaneError::Listen { address: control.listen.to_string(), source })?;
    let address = listener
        .local_addr()
        .map_err(|source| ControlPlaneError::Listen { address: control.listen.to_string(), source })?;
    let node_id = config.node_id(Service::ControlPlane, address.port());
    let client = etcd::connect(control).await?;
    let keys = Keys::new(&control.cluster);
    let ttl = control.lease_ttl;
    let record = NodeRecord::new(node_id.clone(), Role::ControlPlane, format!("http://{address}"), 0);
    let registration = Registration::start(client.clone(), &keys, record, ttl);
    let membership = EtcdMembership::follow(client.clone(), keys.clone(), shutdown.clone()).await;

    let leader = tokio::spawn(leader::campaign(leader::Candidate {
        client: client.clone(),
        keys: keys.clone(),
        node_id: node_id.clone(),
        config: control.clone(),
        state: membership.state(),
        shutdown: shutdown.clone(),
        tls: config.tls.node_client().map_err(StartError::from)?,
    }));
    let state = state::StateService {
        client,
        keys,
        node_id: node_id.clone(),
        cluster: config.cluster.clone(),
        state: membership.state(),
    };
    tracing::info!(%address, node_id, cluster = control.cluster, "control plane is serving");
    serve(listener, address, Arc::new(state), shutdown).await?;
    if let Err(error) = leader.await {
        tracing::warn!(%error, "the election task failed");
    }
    registration.deregister().await?;
    tracing::info!(node_id, "control plane stopped");
    Ok(())
}

async fn serve(
    listener: TcpListener,
    address: SocketAddr,
    state: Arc<state::StateService>,
    shutdown: Shutdown,
) -> Result<(), ControlPlaneError> {
    let router = Router::new()
        .route("/v1/cluster", get(state::cluster))
        .route("/health", get(|| async { "ok" }))
        .route("/metrics", get(lancefleet_common::metrics::metrics_handler))
        .with_state(state);
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await
        .map_err(|source| ControlPlaneError::Listen { address: address.to_string(), source })
}
