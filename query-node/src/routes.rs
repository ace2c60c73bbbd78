//! The REST router: every LanceDB route, with and without its trailing slash.

mod data;
mod indexes;
mod namespaces;
mod query;
mod schema;
mod tables;
mod versions;

use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, State};
use axum::http::{HeaderValue, Method, Request, Uri};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{MethodRouter, get, post};
use lancefleet_common::metrics::metrics_handler;
use lancefleet_common::telemetry;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;
use tracing::Span;

use crate::dispatch::Dispatcher;
use crate::error::{ApiError, ERROR_CODE_HEADER};
use crate::metrics::METRICS;
use crate::protocol::{PHALANX_VERSION, PHALANX_VERSION_HEADER};
use crate::request;
use crate::state::AppState;

/// A route's handler, built when the router is.
type Handler = fn() -> MethodRouter<AppState>;

/// Table operations reachable as `/v1/table/{id}/{operation}/` (and without the slash).
const TABLE_ROUTES: &[(&str, Handler)] = &[
    ("create", || post(tables::create_table)),
    ("describe", || post(tables::describe_table)),
    ("drop", || post(tables::drop_table)),
    ("stats", || post(tables::table_stats)),
    ("insert", || post(data::insert)),
    ("merge_insert", || post(data::merge_insert)),
    ("query", || post(query::query)),
    ("explain_plan", || post(query::explain_plan)),
    ("analyze_plan", || post(query::analyze_plan)),
    ("count_rows", || post(data::count_rows)),
    ("delete", || post(data::delete_rows)),
    ("update", || post(data::update_rows)),
    ("add_columns", || post(schema::add_columns)),
    ("alter_columns", || post(schema::alter_columns)),
    ("drop_columns", || post(schema::drop_columns)),
    ("update_field_metadata", || post(schema::update_field_metadata)),
    ("version/list", || post(versions::list_versions)),
    ("restore", || post(versions::restore)),
    ("tags/list", || post(versions::list_tags)),
    ("tags/version", || post(versions::tag_version)),
    ("tags/create", || post(versions::create_tag)),
    ("tags/update", || post(versions::update_tag)),
    ("tags/delete", || post(versions::delete_tag)),
    ("create_index", || post(indexes::create_index)),
    ("index/list", || post(indexes::list_indices)),
    ("index/{name}/stats", || post(indexes::index_stats)),
    ("index/{name}/drop", || post(indexes::drop_index)),
];

/// Builds the router for `state`, accepting bodies up to `max_body_bytes`.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    // Namespace operations, `/v1/namespace/{id}/{operation}` (GET for `list`).
    let namespace_routes: [(&str, MethodRouter<AppState>); 4] = [
        ("list", get(namespaces::list_namespaces)),
        ("create", post(namespaces::create_namespace)),
        ("describe", post(namespaces::describe_namespace)),
        ("drop", post(namespaces::drop_namespace)),
    ];
    let mut router = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/metrics", get(metrics_handler))
        .route("/v1/cluster", get(cluster))
        .route("/v1/table", get(tables::list_tables))
        .route("/v1/table/", get(tables::list_tables))
        .route("/v1/namespace/{id}/table/list", get(tables::list_namespace_tables))
        .route("/v1/namespace/{id}/table/list/", get(tables::list_namespace_tables));
    for (operation, handler) in TABLE_ROUTES {
        let handler = handler();
        router = router
            .route(&format!("/v1/table/{{id}}/{operation}"), handler.clone())
            .route(&format!("/v1/table/{{id}}/{operation}/"), handler);
    }
    for (operation, handler) in namespace_routes {
        router = router
            .route(&format!("/v1/namespace/{{id}}/{operation}"), handler.clone())
            .route(&format!("/v1/namespace/{{id}}/{operation}/"), handler);
    }
    router
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .route_layer(middleware::from_fn(record_request))
        .fallback(unknown_route)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(SetResponseHeaderLayer::overriding(
            PHALANX_VERSION_HEADER.clone(),
            HeaderValue::from_static(PHALANX_VERSION),
        ))
        .layer(middleware::from_fn(identify))
        .layer(TraceLayer::new_for_http().make_span_with(request_span).on_request(()).on_response(()).on_failure(()))
        .with_state(state)
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

/// Gives every request its id (see [`crate::request`]): recorded on its span, served
/// under it, and returned in the `x-request-id` header.
async fn identify(request: Request<Body>, next: Next) -> Response {
    let id = request::request_id(request.headers());
    Span::current().record("request_id", &*id);
    let mut response = request::serve(id.clone(), next.run(request)).await;
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

/// Refuses a `/v1` request without a valid API key; `/health` and `/metrics` stay open.
async fn authenticate(State(state): State<AppState>, request: Request<Body>, next: Next) -> Result<Response, ApiError> {
    if request.uri().path().starts_with("/v1/") {
        state.auth.check(request.headers())?;
    }
    Ok(next.run(request).await)
}

/// One span per request, a child of the caller's trace when it sent one: method, route,
/// table, request id and status, and for queries `k`, whether a filter was given and the
/// rows returned (failures are logged once, by [`ApiError`]).
fn request_span(request: &Request<Body>) -> Span {
    if matches!(request.uri().path(), "/health" | "/metrics") {
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
async fn unknown_route(method: Method, uri: Uri) -> ApiError {
    let path = uri.path();
    if let Some(id) = table_id_with_slash(path) {
        return ApiError::bad_request(format!("invalid table name '{id}': table names cannot contain '/'"));
    }
    if path.starts_with("/v1/") {
        return ApiError::NotImplemented(format!("{method} {path} is not supported by this server"));
    }
    ApiError::RouteNotFound(format!("no route for {method} {path}"))
}

/// The table id of `/v1/table/{id}/{operation}/` when `{id}` contains `/`.
fn table_id_with_slash(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v1/table/")?.trim_end_matches('/');
    TABLE_ROUTES.iter().find_map(|(operation, _)| {
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
