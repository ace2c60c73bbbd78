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
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::flight_descriptor::DescriptorType;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo, HandshakeRequest, HandshakeResponse,
    PollInfo, PutResult, SchemaResult, Ticket,
};
use futures::{Stream, StreamExt};
use lancefleet_common::Shutdown;
use lancefleet_common::config::FlightConfig;
use lancefleet_common::telemetry;
use lancefleet_common::tls::{Accepting, TlsConfig};
use tokio::net::TcpListener;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument, Span};

use crate::arrow_body;
use crate::audit::{AuditEntry, Outcome};
use crate::auth::{self, CallContext};
use crate::error::ApiError;
use crate::metrics::METRICS;
use crate::request;
use crate::state::AppState;

/// A stream of answers of one Flight call.
type Answers<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The Flight endpoint, bound and ready to serve.
#[derive(Debug)]
pub struct FlightEndpoint {
    listener: TcpListener,
    /// TLS (`grpc+tls://`), when the node has a certificate.
    tls: Option<Arc<rustls::ServerConfig>>,
    front: FlightFront,
    max_message_bytes: usize,
}

impl FlightEndpoint {
    /// Binds the listener of `config` (over TLS when `tls` gives a certificate) in front of
    /// `state`.
    pub async fn bind(config: &FlightConfig, tls: &TlsConfig, state: AppState) -> Result<Self, ApiError> {
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| ApiError::Listen { address: config.listen.to_string(), source })?;
        let max_message_bytes = config.max_message.as_usize();
        let tls = tls.server(&[b"h2"]).map_err(lancefleet_common::StartError::from)?;
        Ok(Self { listener, tls, front: FlightFront::new(state)?, max_message_bytes })
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
        let incoming = Accepting::new(self.listener, self.tls)
            .map_err(|source| ApiError::Listen { address: address.to_string(), source })?
            .into_stream();
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

    /// A call of `method`, whose caller is authenticated (every method but the handshake).
    fn call<T>(&self, method: &'static str, request: &Request<T>) -> FlightCall {
        let mut call = FlightCall::new(method, request);
        call.caller = Some(self.state.auth.authenticate(request.metadata().as_ref()).map(CallContext::new));
        call
    }
}

/// One Flight call: its method and request id (the client's `x-request-id` metadata or a
/// new one), and its span, a child of the caller's trace when it sent `traceparent`.
struct FlightCall {
    method: &'static str,
    id: Arc<str>,
    span: Span,
    /// The client's deadline (`x-request-timeout-ms` metadata), or why it is malformed.
    deadline: Result<Option<tokio::time::Instant>, ApiError>,
    /// The authenticated caller, or why there is none; `None` for the handshake, which
    /// checks its own credentials.
    caller: Option<Result<Arc<CallContext>, ApiError>>,
}

impl FlightCall {
    fn new<T>(method: &'static str, request: &Request<T>) -> Self {
        let given = request.metadata().get(request::REQUEST_ID_HEADER.as_str()).and_then(|value| value.to_str().ok());
        let id = request::given_or_new(given);
        let span = tracing::info_span!("flight", method, request_id = &*id, code = tracing::field::Empty);
        telemetry::follow_caller(&span, telemetry::context_from_metadata(request.metadata()));
        Self { method, id, span, deadline: request::deadline_of(request.metadata().as_ref()), caller: None }
    }
}

/// Runs one Flight call as its caller under its request id and span, counting it by
/// method and answer code, timing it until its answer starts, writing the audit line of a
/// call that changes something, and returning the request id in the answer's metadata.
async fn recorded<T>(
    state: &AppState,
    call: FlightCall,
    answer: impl Future<Output = Result<Response<T>, Status>>,
) -> Result<Response<T>, Status> {
    let FlightCall { method, id, span, deadline, caller } = call;
    let started = Instant::now();
    METRICS.in_flight.with_label_values(&["flight"]).inc();
    let (context, answer) = match (deadline, caller) {
        (Err(error), _) | (_, Some(Err(error))) => (None, Err(Status::from(error))),
        (Ok(deadline), None) => (None, request::serve(id.clone(), deadline, answer).instrument(span.clone()).await),
        (Ok(deadline), Some(Ok(context))) => {
            let answer = request::serve(id.clone(), deadline, auth::serve_as(context.clone(), answer));
            (Some(context), answer.instrument(span.clone()).await)
        }
    };
    METRICS.in_flight.with_label_values(&["flight"]).dec();
    let code = match &answer {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    };
    let code_name = format!("{code:?}");
    span.record("code", code_name.as_str());
    METRICS.flight_requests.with_label_values(&[method, &code_name]).inc();
    METRICS.flight_request_seconds.with_label_values(&[method]).observe(started.elapsed().as_secs_f64());
    if code != tonic::Code::Ok {
        METRICS.errors.with_label_values(&["flight", &code_name]).inc();
    }
    span.in_scope(|| {
        tracing::info!(code = code_name, elapsed_ms = started.elapsed().as_millis() as u64, "call answered")
    });
    let changed = context.as_ref().and_then(|context| context.changed_target());
    if changed.is_some() || method == "DoPut" {
        let outcome = match code {
            tonic::Code::Ok => Outcome::Ok,
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => Outcome::Denied,
            _ => Outcome::Failed,
        };
        let caller = context.as_ref().map(|context| &context.caller);
        state.audit.record(&AuditEntry {
            request_id: &id,
            interface: "flight",
            operation: method,
            key_id: caller.map(|caller| &*caller.id),
            role: caller.map(|caller| caller.role.as_str()),
            target: changed.as_deref().unwrap_or_default(),
            version: context.as_ref().and_then(|context| context.committed_version()),
            outcome,
            status: None,
            error_code: (code != tonic::Code::Ok).then_some(code_name.as_str()),
        });
    }
    answer.map(|mut response| {
        if let Ok(value) = MetadataValue::try_from(&*id) {
            response.metadata_mut().insert("x-request-id", value);
        }
        response
    })
}

/// The record batches of the Flight data a client streams, decoded as they arrive; a
/// message whose compressed buffers claim more than `limit` bytes is refused before
/// arrow-rs allocates them ([`arrow_body::check_flight_message`]).
fn decode_batches<S>(flight: S, limit: usize) -> FlightRecordBatchStream
where
    S: Stream<Item = Result<FlightData, Status>> + Send + 'static,
{
    let checked = flight.map(move |data| {
        let data = data.map_err(|status| FlightError::Tonic(Box::new(status)))?;
        arrow_body::check_flight_message(&data.data_header, &data.data_body, limit)
            .map_err(|error| FlightError::Tonic(Box::new(Status::invalid_argument(error.to_string()))))?;
        Ok(data)
    });
    FlightRecordBatchStream::new_from_flight_data(checked)
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
        recorded(&self.state, FlightCall::new("Handshake", &request), async move { self.sql.handshake(request).await })
            .await
    }

    async fn list_flights(&self, request: Request<Criteria>) -> Result<Response<Self::ListFlightsStream>, Status> {
        recorded(&self.state, self.call("ListFlights", &request), async move {
            let flights = data::list_flights(&self.state).await?;
            Ok(Response::new(futures::stream::iter(flights.into_iter().map(Ok)).boxed()))
        })
        .await
    }

    async fn get_flight_info(&self, request: Request<FlightDescriptor>) -> Result<Response<FlightInfo>, Status> {
        recorded(&self.state, self.call("GetFlightInfo", &request), async move {
            if is_table_path(request.get_ref()) {
                return Ok(Response::new(data::flight_info(&self.state, request.into_inner()).await?));
            }
            FlightService::get_flight_info(&self.sql, request).await
        })
        .await
    }

    async fn poll_flight_info(&self, request: Request<FlightDescriptor>) -> Result<Response<PollInfo>, Status> {
        recorded(&self.state, self.call("PollFlightInfo", &request), async move {
            Err(Status::unimplemented("PollFlightInfo is not supported: queries answer at once; use GetFlightInfo"))
        })
        .await
    }

    async fn get_schema(&self, request: Request<FlightDescriptor>) -> Result<Response<SchemaResult>, Status> {
        recorded(&self.state, self.call("GetSchema", &request), async move {
            if is_table_path(request.get_ref()) {
                return Ok(Response::new(data::table_schema(&self.state, request.get_ref()).await?));
            }
            FlightService::get_schema(&self.sql, request).await
        })
        .await
    }

    async fn do_get(&self, request: Request<Ticket>) -> Result<Response<Self::DoGetStream>, Status> {
        recorded(&self.state, self.call("DoGet", &request), async move {
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
        recorded(
            &self.state,
            self.call("DoPut", &request),
            async move { FlightService::do_put(&self.sql, request).await },
        )
        .await
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        recorded(&self.state, self.call("DoExchange", &request), async move {
            Err(Status::unimplemented("DoExchange is not supported"))
        })
        .await
    }

    async fn do_action(&self, request: Request<Action>) -> Result<Response<Self::DoActionStream>, Status> {
        recorded(&self.state, self.call("DoAction", &request), async move {
            FlightService::do_action(&self.sql, request).await
        })
        .await
    }

    async fn list_actions(&self, request: Request<Empty>) -> Result<Response<Self::ListActionsStream>, Status> {
        recorded(&self.state, self.call("ListActions", &request), async move {
            FlightService::list_actions(&self.sql, request).await
        })
        .await
    }
}
