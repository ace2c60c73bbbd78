//! The REST router: every LanceDB route, with and without its trailing slash.

mod catalog;
mod data;
mod indexes;
mod namespaces;
mod query;
mod schema;
mod tables;
mod transactions;
mod versions;

use std::time::Instant;

use axum::RequestExt;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, RawPathParams, State};
use axum::http::{HeaderValue, Method, Request, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use lancefleet_common::metrics::metrics_handler;
use lancefleet_common::telemetry;
use lancefleet_engine::{Namespace, TableId, namespace_code_of};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;
use tracing::Span;

use crate::audit::{AuditEntry, Outcome};
use crate::auth::{self, Access, CallContext, Target};
use crate::dispatch::Dispatcher;
use crate::error::{self, ApiError, ERROR_CODE_HEADER};
use crate::metrics::METRICS;
use crate::protocol::{PHALANX_VERSION, PHALANX_VERSION_HEADER};
use crate::request;
use crate::state::AppState;

/// A route's handler, built when the router is.
type Handler = fn() -> MethodRouter<AppState>;

/// Table operations reachable as `/v1/table/{id}/{operation}/` (and without the slash),
/// with the access each needs of its caller.
pub(crate) const TABLE_ROUTES: &[(&str, Access, Handler)] = &[
    ("create", Access::Write, || post(tables::create_table)),
    ("describe", Access::Read, || post(tables::describe_table)),
    ("exists", Access::Read, || post(tables::table_exists)),
    // Dropping a table removes its history too, which no later write can undo.
    ("drop", Access::Admin, || post(tables::drop_table)),
    ("stats", Access::Read, || post(tables::table_stats)),
    ("declare", Access::Write, || post(catalog::declare_table)),
    // LanceDB's older name of `declare`.
    ("create-empty", Access::Write, || post(catalog::declare_table)),
    // Registering exposes any dataset under the storage root; both change the catalog only.
    ("register", Access::Admin, || post(catalog::register_table)),
    ("deregister", Access::Admin, || post(catalog::deregister_table)),
    ("rename", Access::Admin, || post(catalog::rename_table)),
    ("insert", Access::Write, || post(data::insert)),
    ("merge_insert", Access::Write, || post(data::merge_insert)),
    ("query", Access::Read, || post(query::query)),
    ("explain_plan", Access::Read, || post(query::explain_plan)),
    ("analyze_plan", Access::Read, || post(query::analyze_plan)),
    ("count_rows", Access::Read, || post(data::count_rows)),
    ("delete", Access::Write, || post(data::delete_rows)),
    ("update", Access::Write, || post(data::update_rows)),
    ("add_columns", Access::Write, || post(schema::add_columns)),
    ("alter_columns", Access::Write, || post(schema::alter_columns)),
    ("drop_columns", Access::Write, || post(schema::drop_columns)),
    ("update_field_metadata", Access::Write, || post(schema::update_field_metadata)),
    ("schema_metadata/update", Access::Write, || post(schema::update_schema_metadata)),
    ("version/list", Access::Read, || post(versions::list_versions)),
    ("version/describe", Access::Read, || post(versions::describe_version)),
    ("restore", Access::Write, || post(versions::restore)),
    ("tags/list", Access::Read, || post(versions::list_tags)),
    ("tags/version", Access::Read, || post(versions::tag_version)),
    ("tags/create", Access::Write, || post(versions::create_tag)),
    ("tags/update", Access::Write, || post(versions::update_tag)),
    ("tags/delete", Access::Write, || post(versions::delete_tag)),
    ("create_index", Access::Write, || post(indexes::create_index)),
    ("create_scalar_index", Access::Write, || post(indexes::create_scalar_index)),
    ("index/list", Access::Read, || post(indexes::list_indices)),
    ("index/{index_name}/stats", Access::Read, || post(indexes::index_stats)),
    ("index/{index_name}/drop", Access::Write, || post(indexes::drop_index)),
];

/// Namespace operations, `/v1/namespace/{id}/{operation}/` (and without the slash).
pub(crate) const NAMESPACE_ROUTES: &[(&str, Access, Handler)] = &[
    ("list", Access::Read, || get(namespaces::list_namespaces)),
    ("create", Access::Admin, || post(namespaces::create_namespace)),
    ("describe", Access::Read, || post(namespaces::describe_namespace)),
    ("exists", Access::Read, || post(namespaces::namespace_exists)),
    ("drop", Access::Admin, || post(namespaces::drop_namespace)),
    ("table/list", Access::Read, || get(tables::list_namespace_tables)),
];

/// Transaction operations, `/v1/transaction/{id}/{operation}` with `{id}` the table's id
/// and the transaction's uuid (see [`transactions`]); the access is to that table.
pub(crate) const TRANSACTION_ROUTES: &[(&str, Access, Handler)] = &[
    ("describe", Access::Read, || post(transactions::describe_transaction)),
    ("alter", Access::Write, || post(transactions::alter_transaction)),
];

/// Builds the router for `state`, accepting bodies up to `max_body_bytes`. Every `/v1`
/// route passes its [`Guard`]; `/health`, `/metrics` and `/openapi.json` stay open.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    let guard = |operation: &'static str, access, target, handler: MethodRouter<AppState>| {
        let guard = Guard { state: state.clone(), operation, access, target };
        handler.route_layer(middleware::from_fn_with_state(guard, Guard::run))
    };
    let mut router = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/metrics", get(metrics_handler))
        .route("/openapi.json", get(crate::openapi::document));
    let cluster = guard("cluster", Access::Admin, RouteTarget::Server, get(cluster));
    router = router.route("/v1/cluster", cluster.clone()).route("/v1/cluster/", cluster);
    let root_tables = guard("table/list", Access::Read, RouteTarget::RootNamespace, get(tables::list_tables));
    router = router.route("/v1/table", root_tables.clone()).route("/v1/table/", root_tables);
    for (operation, access, handler) in TABLE_ROUTES {
        let handler = guard(operation, *access, RouteTarget::Table, handler());
        router = router
            .route(&format!("/v1/table/{{id}}/{operation}"), handler.clone())
            .route(&format!("/v1/table/{{id}}/{operation}/"), handler);
    }
    for (operation, access, handler) in NAMESPACE_ROUTES {
        let handler = guard(operation, *access, RouteTarget::Namespace, handler());
        router = router
            .route(&format!("/v1/namespace/{{id}}/{operation}"), handler.clone())
            .route(&format!("/v1/namespace/{{id}}/{operation}/"), handler);
    }
    for (operation, access, handler) in TRANSACTION_ROUTES {
        let handler = guard(operation, *access, RouteTarget::Transaction, handler());
        router = router
            .route(&format!("/v1/transaction/{{id}}/{operation}"), handler.clone())
            .route(&format!("/v1/transaction/{{id}}/{operation}/"), handler);
    }
    router
        .route_layer(middleware::from_fn(record_request))
        .fallback(unknown_route)
        .layer(middleware::map_response(label_rejection))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(SetResponseHeaderLayer::overriding(
            PHALANX_VERSION_HEADER.clone(),
            HeaderValue::from_static(PHALANX_VERSION),
        ))
        .layer(middleware::from_fn(identify))
        .layer(TraceLayer::new_for_http().make_span_with(request_span).on_request(()).on_response(()).on_failure(()))
        .with_state(state)
}

/// What a route's `{id}` names.
#[derive(Debug, Clone, Copy)]
enum RouteTarget {
    /// The server as a whole.
    Server,
    /// The root namespace (the route has no id).
    RootNamespace,
    /// The namespace `{id}`.
    Namespace,
    /// The table `{id}`.
    Table,
    /// The table of the transaction `{id}`.
    Transaction,
}

/// The check in front of one route: authenticates the caller, checks its access to the
/// route's target, serves the request as that caller, and writes the audit line of a
/// write or admin operation.
#[derive(Debug, Clone)]
struct Guard {
    state: AppState,
    operation: &'static str,
    access: Access,
    target: RouteTarget,
}

impl Guard {
    async fn run(State(guard): State<Guard>, mut request: Request<Body>, next: Next) -> Response {
        let target = guard.target_of(&mut request).await;
        let audited = target.as_ref().map(auth::target_id).unwrap_or_default();
        let (response, context) = match guard.state.auth.authenticate(request.headers()) {
            Err(error) => (unread(error.into_response()), None),
            Ok(caller) => {
                let context = CallContext::new(caller);
                let answer = auth::serve_as(context.clone(), async {
                    // A malformed id: the 400 the handler would give, before anything runs.
                    let target = target?;
                    crate::protocol::check_delimiter(request.uri().query())?;
                    auth::require(guard.access, &target)?;
                    Ok::<_, ApiError>(next.run(request).await)
                });
                (answer.await.unwrap_or_else(|error| unread(error.into_response())), Some(context))
            }
        };
        if guard.access > Access::Read {
            guard.audit(&response, context.as_deref(), &audited);
        }
        response
    }

    /// The route's target, from its (percent-decoded) `{id}`.
    async fn target_of(&self, request: &mut Request<Body>) -> Result<Target, ApiError> {
        match self.target {
            RouteTarget::Server => return Ok(Target::Server),
            RouteTarget::RootNamespace => return Ok(Target::Namespace(Namespace::root())),
            RouteTarget::Namespace | RouteTarget::Table | RouteTarget::Transaction => {}
        }
        let params = request
            .extract_parts::<RawPathParams>()
            .await
            .map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
        let id = params
            .iter()
            .find_map(|(name, value)| (name == "id").then_some(value))
            .ok_or_else(|| ApiError::Internal("a routed id without an {id}".into()))?;
        Ok(match self.target {
            RouteTarget::Table => Target::Table(TableId::parse(id)?),
            RouteTarget::Transaction => Target::Table(transactions::parse_id(id)?.0),
            _ => Target::Namespace(Namespace::parse(id)?),
        })
    }

    /// Writes the audit line of one answered request.
    fn audit(&self, response: &Response, context: Option<&CallContext>, target: &str) {
        let code = response.headers().get(ERROR_CODE_HEADER).and_then(|code| code.to_str().ok());
        let outcome = match response.status().as_u16() {
            401 | 403 => Outcome::Denied,
            status if status < 400 => Outcome::Ok,
            _ => Outcome::Failed,
        };
        let caller = context.map(|context| &context.caller);
        let operation = match self.target {
            RouteTarget::Namespace => format!("namespace/{}", self.operation),
            RouteTarget::Transaction => format!("transaction/{}", self.operation),
            _ => self.operation.to_string(),
        };
        self.state.audit.record(&AuditEntry {
            request_id: &request::current(),
            interface: "rest",
            operation: &operation,
            key_id: caller.map(|caller| &*caller.id),
            role: caller.map(|caller| caller.role.as_str()),
            target,
            version: context.and_then(CallContext::committed_version),
            outcome,
            status: Some(response.status().as_u16()),
            error_code: code,
        });
    }
}

/// Marks an answer given before the request's body was read: `Connection: close`, so the
/// client does not send its next request down a connection the server closes once it
/// has answered (it cannot find where the unread body ends without reading it).
fn unread(mut response: Response) -> Response {
    response.headers_mut().insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Counts and times every routed request by its route template (never the raw path,
/// whose table names would make the label set unbounded), counts failures by error code,
/// and logs each API request once it is answered.
async fn record_request(request: Request<Body>, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |path| path.as_str())
        .trim_end_matches('/')
        .to_string();
    let span = Span::current();
    span.record("route", route.as_str());
    let started = Instant::now();
    METRICS.in_flight.with_label_values(&["rest"]).inc();
    let response = next.run(request).await;
    METRICS.in_flight.with_label_values(&["rest"]).dec();
    let elapsed = started.elapsed();
    let status = response.status();
    span.record("status", i64::from(status.as_u16()));
    METRICS.request_seconds.with_label_values(&[route.as_str()]).observe(elapsed.as_secs_f64());
    METRICS.requests.with_label_values(&[route.as_str(), status.as_str()]).inc();
    if let Some(code) = response.headers().get(ERROR_CODE_HEADER).and_then(|code| code.to_str().ok()) {
        METRICS.errors.with_label_values(&["rest", code]).inc();
    }
    if route.starts_with("/v1/") {
        tracing::info!(status = status.as_u16(), elapsed_ms = elapsed.as_millis() as u64, "request answered");
    }
    response
}

/// Gives the errors axum answers itself (a malformed query string, a method the route does
/// not take, a body over the limit) the body and error-code header every other error
/// carries: their text becomes the message of the spec's JSON error.
async fn label_rejection(response: Response) -> Response {
    /// Rejections are a line of text; more is cut.
    const MESSAGE_LIMIT: usize = 4096;
    let status = response.status();
    if status.as_u16() < 400 || response.headers().contains_key(ERROR_CODE_HEADER) {
        return response;
    }
    let code = error::code_of_status(status);
    let text = axum::body::to_bytes(response.into_body(), MESSAGE_LIMIT).await.unwrap_or_default();
    let message = String::from_utf8_lossy(&text).trim().to_string();
    let message = if message.is_empty() { status.canonical_reason().unwrap_or("error").to_string() } else { message };
    // Rejected before (or while) the body was read.
    unread(error::error_response(status, code, namespace_code_of(code), &message))
}

/// Gives every request its id and the client's deadline, if any (see [`crate::request`]):
/// the id recorded on its span, served under it, and returned in the `x-request-id` header.
async fn identify(request: Request<Body>, next: Next) -> Response {
    let id = request::request_id(request.headers());
    Span::current().record("request_id", &*id);
    let mut response = match request::deadline_of(request.headers()) {
        Ok(deadline) => request::serve(id.clone(), deadline, next.run(request)).await,
        Err(error) => error.into_response(),
    };
    if let Some(value) = request::header_value(&id) {
        response.headers_mut().insert(request::REQUEST_ID_HEADER.clone(), value);
    }
    response
}

/// `GET /v1/cluster` on a query node: the plan executors it sends fragments to and how
/// placement shares fragments among them (a control plane answers the same route for the
/// whole cluster, with every role and the leader).
async fn cluster(State(state): State<AppState>) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let mut view = match state.dispatcher.as_ref() {
        Dispatcher::Cluster(cluster) => cluster.summary()?,
        Dispatcher::Local => serde_json::json!({ "nodes": [], "execution": "in-process" }),
    };
    view["answered_by"] = serde_json::Value::from("query-node");
    view["leader"] = serde_json::Value::Null;
    Ok(axum::Json(view))
}

/// One span per request, a child of the caller's trace when it sent one: method, route,
/// table, request id and status, and for queries `k`, whether a filter was given and the
/// rows returned (failures are logged once, by [`ApiError`]).
fn request_span(request: &Request<Body>) -> Span {
    if matches!(request.uri().path(), "/health" | "/metrics" | "/openapi.json") {
        // Probes and scrapes, every few seconds: not worth a trace.
        return Span::none();
    }
    let table = request.uri().path().strip_prefix("/v1/table/").and_then(|rest| rest.split('/').next()).unwrap_or("");
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        route = tracing::field::Empty,
        table,
        request_id = tracing::field::Empty,
        status = tracing::field::Empty,
        k = tracing::field::Empty,
        filter = tracing::field::Empty,
        rows = tracing::field::Empty,
    );
    telemetry::follow_caller(&span, telemetry::context_from_headers(request.headers()));
    span
}

/// Unmatched requests. A table route whose id spans several path segments carries a
/// table name with a `/` in it: that is a bad name (400), not a missing route.
async fn unknown_route(method: Method, uri: Uri) -> Response {
    let path = uri.path();
    let error = if let Some(id) = table_id_with_slash(path) {
        ApiError::bad_request(format!("invalid table name '{id}': table names cannot contain '/'"))
    } else if path.starts_with("/v1/") {
        ApiError::NotImplemented(format!("{method} {path} is not supported by this server"))
    } else {
        ApiError::RouteNotFound(format!("no route for {method} {path}"))
    };
    unread(error.into_response())
}

/// The table id of `/v1/table/{id}/{operation}/` when `{id}` contains `/`.
fn table_id_with_slash(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v1/table/")?.trim_end_matches('/');
    TABLE_ROUTES.iter().find_map(|(operation, _, _)| {
        let id = rest.strip_suffix(operation)?.strip_suffix('/')?;
        id.contains('/').then_some(id)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slashes_in_table_ids_are_recognised() {
        assert_eq!(table_id_with_slash("/v1/table/a/b/create/"), Some("a/b"));
        assert_eq!(table_id_with_slash("/v1/table/../../etc/query"), Some("../../etc"));
        assert_eq!(table_id_with_slash("/v1/table/a/b/version/list/"), Some("a/b"));
        assert_eq!(table_id_with_slash("/v1/table/t/version/list/"), None);
        assert_eq!(table_id_with_slash("/v1/table/t/create_index/"), None);
        assert_eq!(table_id_with_slash("/v1/other/a/b/create/"), None);
    }
}
