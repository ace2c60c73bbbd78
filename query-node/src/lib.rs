//! The LanceFleet query node: the LanceDB REST API, Arrow Flight and Flight SQL over the
//! engine.
//!
//! [`QueryNode::bind`] opens the listening sockets (so callers learn the addresses, port 0
//! included) and [`QueryNode::serve`] answers requests until the shutdown signal, then lets
//! in-flight requests finish within the configured grace period.

mod arrow_body;
mod auth;
mod dispatch;
mod error;
mod flight;
mod metrics;
mod protocol;
mod routes;
mod sql;
mod state;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use lancefleet_common::Shutdown;
use lancefleet_common::config::NodeConfig;
use lancefleet_common::events::EventBus;
use lancefleet_engine::Catalog;
use tokio::net::TcpListener;

pub use dispatch::{Cluster, Dispatcher};
pub use error::ApiError;
use flight::FlightEndpoint;
pub use protocol::PHALANX_VERSION;

/// A query node bound to its address, ready to serve.
#[derive(Debug)]
pub struct QueryNode {
    listener: TcpListener,
    router: axum::Router,
    flight: Option<FlightEndpoint>,
    grace: Duration,
}

impl QueryNode {
    /// Binds the REST listener of `config` (and its Flight listener, unless disabled) in
    /// front of `catalog`, running queries with `dispatcher` and announcing committed
    /// changes on `events`. With `inline_indexing` (no indexer follows the events)
    /// `create_index` builds before it answers.
    pub async fn bind(
        config: &NodeConfig,
        catalog: Catalog,
        dispatcher: Dispatcher,
        events: Arc<dyn EventBus>,
        inline_indexing: bool,
    ) -> Result<Self, ApiError> {
        let rest = &config.rest;
        let listener = TcpListener::bind(rest.listen)
            .await
            .map_err(|source| ApiError::Listen { address: rest.listen.to_string(), source })?;
        let state = state::AppState {
            catalog: Arc::new(catalog),
            dispatcher: Arc::new(dispatcher),
            events,
            inline_indexing,
            auth: Arc::new(auth::Authenticator::new(&config.auth.api_keys)),
        };
        let flight =
            if config.flight.enabled { Some(FlightEndpoint::bind(&config.flight, state.clone()).await?) } else { None };
        let max_body_bytes = usize::try_from(rest.max_body_bytes).unwrap_or(usize::MAX);
        Ok(Self {
            listener,
            router: routes::router(state, max_body_bytes),
            flight,
            grace: Duration::from_secs(rest.shutdown_grace_seconds),
        })
    }

    /// The address Arrow Flight and Flight SQL are served on, when they are.
    pub fn flight_addr(&self) -> Result<Option<SocketAddr>, ApiError> {
        self.flight.as_ref().map(FlightEndpoint::local_addr).transpose()
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> Result<SocketAddr, ApiError> {
        self.listener.local_addr().map_err(|source| ApiError::Listen { address: "the bound socket".into(), source })
    }

    /// Serves until `shutdown` fires, then stops accepting and drains in-flight requests
    /// (REST and Flight alike) for at most the grace period.
    pub async fn serve(self, shutdown: Shutdown) -> Result<(), ApiError> {
        let address = self.local_addr()?;
        let flight = self.flight.map(|flight| tokio::spawn(flight.serve(shutdown.clone(), self.grace)));
        let stop_accepting = shutdown.clone();
        // Answers go out as soon as they are written (no Nagle delay behind the client's ACK).
        let listener = self.listener.tap_io(|stream| {
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY");
            }
        });
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
