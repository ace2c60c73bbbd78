//! Arrow Flight and Flight SQL, on the query node's own port (10025 by default).
//!
//! One gRPC `FlightService` serves both protocols. Flight SQL requests carry protobuf
//! `Any` commands and go to [`sql_service::FlightSql`]; the data plane (see [`data`]) speaks
//! in table paths and JSON tickets. Every call but the handshake first passes the API key
//! check the REST API uses.

mod data;
mod sql_service;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{Duration, Instant};

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::flight_descriptor::DescriptorType;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo, HandshakeRequest, HandshakeResponse,
    PollInfo, PutResult, SchemaResult, Ticket,
};
use futures::{Stream, StreamExt, TryStreamExt};
use lancefleet_common::Shutdown;
use lancefleet_common::config::FlightConfig;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};

use crate::error::ApiError;
use crate::metrics::METRICS;
use crate::state::AppState;

/// A stream of answers of one Flight call.
type Answers<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The Flight endpoint, bound and ready to serve.
#[derive(Debug)]
pub struct FlightEndpoint {
    listener: TcpListener,
    front: FlightFront,
    max_message_bytes: usize,
}

impl FlightEndpoint {
    /// Binds the listener of `config` in front of `state`.
    pub async fn bind(config: &FlightConfig, state: AppState) -> Result<Self, ApiError> {
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| ApiError::Listen { address: config.listen.to_string(), source })?;
        let max_message_bytes = config.max_message.as_usize();
        Ok(Self { listener, front: FlightFront::new(state)?, max_message_bytes })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> Result<SocketAddr, ApiError> {
        self.listener.local_addr().map_err(|source| ApiError::Listen { address: "the Flight socket".into(), source })
    }

    /// Serves until `shutdown` fires, then lets in-flight calls finish for `grace`.
    pub async fn serve(self, shutdown: Shutdown, grace: Duration) -> Result<(), ApiError> {
        let address = self.local_addr()?;
        let service = FlightServiceServer::new(self.front)
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes);
        let stop_accepting = shutdown.clone();
        let incoming = TcpIncoming::from(self.listener).with_nodelay(Some(true));
        // Uploads of many megabytes per batch: HTTP/2's default 64 KiB flow-control window
        // would make the client wait for a window update every 64 KiB.
        let server = tonic::transport::Server::builder()
            .http2_adaptive_window(Some(true))
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, async move { stop_accepting.wait().await });
        let server = tokio::spawn(server);
        let finished = shutdown.drain(server, grace, async {}, "Flight calls").await?;
        finished
            .unwrap_or(Ok(()))
            .map_err(|error| ApiError::Listen { address: address.to_string(), source: std::io::Error::other(error) })
    }
}

/// Routes each Flight call to Flight SQL or to the data plane.
#[derive(Debug)]
struct FlightFront {
    state: AppState,
    sql: sql_service::FlightSql,
}

impl FlightFront {
    fn new(state: AppState) -> Result<Self, ApiError> {
        Ok(Self { sql: sql_service::FlightSql::new(state.clone())?, state })
    }

    /// The API key check of every call but the handshake.
    fn authorize<T>(&self, request: &Request<T>) -> Result<(), Status> {
        Ok(self.state.auth.check(request.metadata().as_ref())?)
    }
}

/// Runs one Flight call, counting it by method and answer code and timing it until its
/// answer starts.
async fn recorded<T>(method: &'static str, call: impl Future<Output = Result<T, Status>>) -> Result<T, Status> {
    let started = Instant::now();
    let answer = call.await;
    let code = match &answer {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    };
    METRICS.flight_requests.with_label_values(&[method, &format!("{code:?}")]).inc();
    METRICS.flight_request_seconds.with_label_values(&[method]).observe(started.elapsed().as_secs_f64());
    answer
}

/// The record batches of the Flight data a client streams, decoded as they arrive.
fn decode_batches<S>(flight: S) -> FlightRecordBatchStream
where
    S: Stream<Item = Result<FlightData, Status>> + Send + 'static,
{
    FlightRecordBatchStream::new_from_flight_data(flight.map_err(|status| FlightError::Tonic(Box::new(status))))
}

/// Whether `descriptor` names a table (`[table]` or `[table, mode]`) rather than carrying
/// a Flight SQL command.
fn is_table_path(descriptor: &FlightDescriptor) -> bool {
    descriptor.r#type() == DescriptorType::Path
}

#[tonic::async_trait]
impl FlightService for FlightFront {
    type HandshakeStream = Answers<HandshakeResponse>;
    type ListFlightsStream = Answers<FlightInfo>;
    type DoGetStream = Answers<FlightData>;
    type DoPutStream = Answers<PutResult>;
    type DoActionStream = Answers<arrow_flight::Result>;
    type ListActionsStream = Answers<ActionType>;
    type DoExchangeStream = Answers<FlightData>;

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        recorded("Handshake", async move { self.sql.handshake(request).await }).await
    }

    async fn list_flights(&self, request: Request<Criteria>) -> Result<Response<Self::ListFlightsStream>, Status> {
        recorded("ListFlights", async move {
            self.authorize(&request)?;
            let flights = data::list_flights(&self.state).await?;
            Ok(Response::new(futures::stream::iter(flights.into_iter().map(Ok)).boxed()))
        })
        .await
    }

    async fn get_flight_info(&self, request: Request<FlightDescriptor>) -> Result<Response<FlightInfo>, Status> {
        recorded("GetFlightInfo", async move {
            self.authorize(&request)?;
            if is_table_path(request.get_ref()) {
                return Ok(Response::new(data::flight_info(&self.state, request.into_inner()).await?));
            }
            FlightService::get_flight_info(&self.sql, request).await
        })
        .await
    }

    async fn poll_flight_info(&self, request: Request<FlightDescriptor>) -> Result<Response<PollInfo>, Status> {
        recorded("PollFlightInfo", async move {
            self.authorize(&request)?;
            Err(Status::unimplemented("PollFlightInfo is not supported: queries answer at once; use GetFlightInfo"))
        })
        .await
    }

    async fn get_schema(&self, request: Request<FlightDescriptor>) -> Result<Response<SchemaResult>, Status> {
        recorded("GetSchema", async move {
            self.authorize(&request)?;
            if is_table_path(request.get_ref()) {
                return Ok(Response::new(data::table_schema(&self.state, request.get_ref()).await?));
            }
            FlightService::get_schema(&self.sql, request).await
        })
        .await
    }

    async fn do_get(&self, request: Request<Ticket>) -> Result<Response<Self::DoGetStream>, Status> {
        recorded("DoGet", async move {
            self.authorize(&request)?;
            if data::is_json_ticket(request.get_ref()) {
                return Ok(Response::new(data::do_get(&self.state, request.get_ref()).await?));
            }
            FlightService::do_get(&self.sql, request).await
        })
        .await
    }

    /// Flight SQL reads the first message to dispatch on its command; table paths come
    /// back to the data plane through its fallback.
    async fn do_put(&self, request: Request<Streaming<FlightData>>) -> Result<Response<Self::DoPutStream>, Status> {
        recorded("DoPut", async move {
            self.authorize(&request)?;
            FlightService::do_put(&self.sql, request).await
        })
        .await
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        recorded("DoExchange", async move {
            self.authorize(&request)?;
            Err(Status::unimplemented("DoExchange is not supported"))
        })
        .await
    }

    async fn do_action(&self, request: Request<Action>) -> Result<Response<Self::DoActionStream>, Status> {
        recorded("DoAction", async move {
            self.authorize(&request)?;
            FlightService::do_action(&self.sql, request).await
        })
        .await
    }

    async fn list_actions(&self, request: Request<Empty>) -> Result<Response<Self::ListActionsStream>, Status> {
        recorded("ListActions", async move {
            self.authorize(&request)?;
            FlightService::list_actions(&self.sql, request).await
        })
        .await
    }
}
