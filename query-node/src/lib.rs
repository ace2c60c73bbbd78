//! The LanceFleet query node: the LanceDB REST API, Arrow Flight and Flight SQL over the
//! engine.
//!
//! [`run`] is the `query-node` role: it opens the catalog (moving namespaces of the earlier
//! layout into the directory namespace; weak reads as configured) and
//! the object cache, follows the plan executors (etcd, or the configured list), binds,
//! registers in etcd, and answers requests until the shutdown signal. Then it stops
//! accepting, lets in-flight requests finish within the grace period, deregisters, and
//! flushes the cache last. [`start`] does the same but returns once the node serves, with
//! its addresses; `standalone` starts it as [`Service::Standalone`], which runs queries
//! in-process when there are no executors.

mod arrow_body;
mod audit;
mod auth;
mod dispatch;
mod error;
mod flight;
mod limits;
mod metrics;
mod openapi;
mod protocol;
mod request;
mod routes;
mod sql;
mod state;
mod vending;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lancefleet_common::cluster_state::{NodeRecord, Role};
use lancefleet_common::config::{NodeConfig, Service};
use lancefleet_common::events::EventBus;
use lancefleet_common::tls::Accepting;
use lancefleet_common::{NodeContext, Shutdown, StartError};
use lancefleet_engine::Catalog;
use lancefleet_engine::catalog::recorded::RecordedVersions;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use dispatch::{Cluster, Dispatcher};
pub use error::ApiError;
use flight::FlightEndpoint;
pub use protocol::PHALANX_VERSION;

/// Runs the `query-node` role until `shutdown` and its orderly stop.
pub async fn run(config: NodeConfig, shutdown: Shutdown) -> Result<(), ApiError> {
    config.validate_for(Service::QueryNode).map_err(StartError::from)?;
    let context = NodeContext::connect(&config, shutdown).await?;
    start(config, &context, Service::QueryNode).await?.wait().await
}

/// A query node that serves until its context's shutdown signal.
#[derive(Debug)]
pub struct RunningQueryNode {
    rest: SocketAddr,
    flight: Option<SocketAddr>,
    task: JoinHandle<Result<(), ApiError>>,
}

impl RunningQueryNode {
    /// The address of the REST API (and of `/metrics`).
    pub fn rest_address(&self) -> SocketAddr {
        self.rest
    }

    /// The address of Arrow Flight and Flight SQL, when they are served.
    pub fn flight_address(&self) -> Option<SocketAddr> {
        self.flight
    }

    /// Waits until it has stopped (after the shutdown signal, in order).
    pub async fn wait(self) -> Result<(), ApiError> {
        self.task.await?
    }
}

/// Starts a query node (`service` is [`Service::QueryNode`] or [`Service::Standalone`]) as
/// `config` says within `context`, and returns once it serves.
pub async fn start(config: NodeConfig, context: &NodeContext, service: Service) -> Result<RunningQueryNode, ApiError> {
    config.validate_for(service).map_err(StartError::from)?;
    std::sync::LazyLock::force(&metrics::METRICS);
    let dispatcher = match context.executors(&config.cluster).await {
        Some(membership) => {
            let tls = config.tls.node_client().map_err(StartError::from)?;
            Dispatcher::Cluster(Box::new(Cluster::new(membership.as_ref(), &config.cluster, tls)))
        }
        None => Dispatcher::Local,
    };
    let (catalog, cache) = Catalog::open(&config.storage, &config.cache).await?;
    let migrated = catalog.migrate_legacy_namespaces().await?;
    if migrated != Default::default() {
        tracing::info!(
            namespaces = migrated.namespaces,
            tables = migrated.tables,
            "namespaces of the earlier layout moved into the directory namespace"
        );
    }
    let catalog = catalog.with_weak_reads(config.rest.weak_read_consistency_interval);
    let external_check = config.rest.external_writer_check;
    let recorded_versions = context.etcd().is_some() && !external_check.is_zero();
    let catalog = if recorded_versions {
        catalog.with_recorded_versions(RecordedVersions::new(context.bus(), external_check))
    } else {
        catalog
    };
    let inline_indexing = context.etcd().is_none() && !config.embeds_indexer(service);
    if inline_indexing {
        tracing::warn!(
            "no etcd and no embedded indexer: indexes are built inline by create_index; tables are not compacted"
        );
    }
    let storage_root = catalog.root().uri().to_string();
    let writes = Writes { events: context.bus(), inline_indexing, recorded_versions };
    let node = QueryNode::bind(&config, catalog, dispatcher, writes).await?;
    let rest = node.local_addr()?;
    let flight = node.flight_addr()?;
    let node_id = config.node_id(service, rest.port());
    let presence = context.register(NodeRecord::new(node_id, Role::QueryNode, format!("http://{rest}"), 0)).await;
    tracing::info!(
        role = %service,
        %rest,
        flight = flight.map_or_else(|| "off".to_string(), |address| address.to_string()),
        authentication = if config.auth.checks_keys() { "api keys" } else { "off" },
        audit_log = config.auth.audit_log.as_deref().unwrap_or("off"),
        storage_root,
        etcd = context.etcd().is_some(),
        weak_read_consistency_interval = %humantime::format_duration(config.rest.weak_read_consistency_interval),
        version = env!("CARGO_PKG_VERSION"),
        "lancefleet is serving the LanceDB REST API, Arrow Flight and Flight SQL"
    );
    let shutdown = context.shutdown().clone();
    let task = tokio::spawn(async move {
        let served = node.serve(shutdown).await;
        presence.leave().await;
        if let Some(cache) = cache {
            cache.close().await?;
        }
        tracing::info!(role = %service, "query node stopped");
        served
    });
    Ok(RunningQueryNode { rest, flight, task })
}

/// How a query node's writes are announced.
struct Writes {
    /// Where committed changes are announced.
    events: Arc<dyn EventBus>,
    /// `create_index` builds before it answers (no indexer follows the events).
    inline_indexing: bool,
    /// Writes announce themselves before committing and record their versions.
    recorded_versions: bool,
}

/// A query node bound to its address, ready to serve.
#[derive(Debug)]
struct QueryNode {
    listener: TcpListener,
    /// HTTPS, when the node has a certificate.
    tls: Option<Arc<rustls::ServerConfig>>,
    router: axum::Router,
    flight: Option<FlightEndpoint>,
    grace: Duration,
    auth: Arc<auth::Authenticator>,
}

impl QueryNode {
    /// Binds the REST listener of `config` (and its Flight listener, unless disabled) in
    /// front of `catalog`, running queries with `dispatcher` and committing as `writes`
    /// says.
    async fn bind(
        config: &NodeConfig,
        catalog: Catalog,
        dispatcher: Dispatcher,
        writes: Writes,
    ) -> Result<Self, ApiError> {
        let rest = &config.rest;
        let listener = TcpListener::bind(rest.listen)
            .await
            .map_err(|source| ApiError::Listen { address: rest.listen.to_string(), source })?;
        let state = state::AppState {
            catalog: Arc::new(catalog),
            dispatcher: Arc::new(dispatcher),
            events: writes.events,
            inline_indexing: writes.inline_indexing,
            recorded_versions: writes.recorded_versions,
            auth: Arc::new(auth::Authenticator::new(&config.auth)?),
            audit: Arc::new(audit::AuditLog::open(config.auth.audit_log.as_deref().unwrap_or_default())?),
            limits: limits::RequestLimits::new(rest),
            vending: vending::Vending::new(&config.storage).await.map_err(StartError::from)?,
        };
        let flight = if config.flight.enabled {
            Some(FlightEndpoint::bind(&config.flight, &config.tls, state.clone()).await?)
        } else {
            None
        };
        Ok(Self {
            listener,
            tls: config.tls.server(&[b"http/1.1"]).map_err(StartError::from)?,
            auth: state.auth.clone(),
            router: routes::router(state, rest.max_body.as_usize()),
            flight,
            grace: rest.shutdown_grace,
        })
    }

    /// The address Arrow Flight and Flight SQL are served on, when they are.
    fn flight_addr(&self) -> Result<Option<SocketAddr>, ApiError> {
        self.flight.as_ref().map(FlightEndpoint::local_addr).transpose()
    }

    /// The address actually bound.
    fn local_addr(&self) -> Result<SocketAddr, ApiError> {
        self.listener.local_addr().map_err(|source| ApiError::Listen { address: "the bound socket".into(), source })
    }

    /// Serves until `shutdown` fires, then stops accepting and drains in-flight requests
    /// (REST and Flight alike) for at most the grace period.
    async fn serve(self, shutdown: Shutdown) -> Result<(), ApiError> {
        let address = self.local_addr()?;
        tokio::spawn(self.auth.clone().follow_keys_file(shutdown.clone()));
        let flight = self.flight.map(|flight| tokio::spawn(flight.serve(shutdown.clone(), self.grace)));
        let stop_accepting = shutdown.clone();
        // Answers go out as soon as they are written (the connections have TCP_NODELAY).
        let listener = Accepting::new(self.listener, self.tls)
            .map_err(|source| ApiError::Listen { address: address.to_string(), source })?;
        let server =
            axum::serve(listener, self.router).with_graceful_shutdown(async move { stop_accepting.wait().await });
        let server = tokio::spawn(server.into_future());
        let finished = shutdown.drain(server, self.grace, async {}, "requests").await?;
        let rest =
            finished.unwrap_or(Ok(())).map_err(|source| ApiError::Listen { address: address.to_string(), source });
        if let Some(flight) = flight {
            // A REST server that ended on its own takes the Flight server down with it.
            shutdown.trigger();
            flight.await??;
        }
        rest
    }
}
