//! `POST /v1/table/{id}/query/`: vector search, full-text search and filtered scans,
//! answered as an Arrow IPC file streamed as the rows come; `explain_plan` and
//! `analyze_plan` of the same queries.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures::{StreamExt, TryStreamExt};
use lancefleet_engine::TableQuery;
use serde::Deserialize;

use crate::arrow_body::{ARROW_FILE_CONTENT_TYPE, encode_file};
use crate::dispatch::{Answer, RowStream};
use crate::error::ApiError;
use crate::protocol::{Freshness, SpecDialect, TablePath, json_body, with_table_version};
use crate::request::{self, REQUEST_TIMEOUT_HEADER};
use crate::state::AppState;

/// Runs a query at the version the body or the freshness headers ask for, within the
/// client's `x-request-timeout-ms` when it sends one (a 504 after it).
pub async fn query(
    State(state): State<AppState>,
    TablePath(id): TablePath,
    freshness: Freshness,
    dialect: SpecDialect,
    body: Bytes,
) -> Result<Response, ApiError> {
    let query = in_dialect(json_body(&body)?, dialect);
    let span = tracing::Span::current();
    if let Some(k) = query.limit() {
        span.record("k", lancefleet_common::telemetry::int(k));
    }
    span.record("filter", query.filter.is_some());
    let run = state.run_query(&id, freshness.read(query.version), &query);
    let deadline = request::current_deadline();
    let (dataset, answer) = match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, run).await.map_err(|_elapsed| {
            ApiError::Timeout(format!("the query did not finish within the client's {REQUEST_TIMEOUT_HEADER}"))
        })??,
        None => run.await?,
    };
    let version = dataset.version().version;
    tracing::debug!(table = %id, version, "query answering");
    let rows = counted(request::within(deadline, answer.rows), span);
    let body = Body::from_stream(encode_file(Answer { rows, ..answer })?);
    let mut response = body.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ARROW_FILE_CONTENT_TYPE));
    Ok(with_table_version(version, response))
}

/// `query` as its dialect means it: a filter without `prefilter` filters the search's
/// results in the namespace spec's dialect (lance's reference server does so) and before
/// the search in LanceDB's, whose clients always say which they want.
fn in_dialect(mut query: TableQuery, SpecDialect(spec): SpecDialect) -> TableQuery {
    if spec {
        query.prefilter.get_or_insert(false);
    }
    query
}

/// `rows`, recording how many there were on the request's `span` once they have all
/// been sent (the span lasts as long as the streamed body).
fn counted(rows: RowStream, span: tracing::Span) -> RowStream {
    let total = Arc::new(AtomicUsize::new(0));
    let counter = total.clone();
    let rows = rows.inspect_ok(move |batch| {
        counter.fetch_add(batch.num_rows(), Ordering::Relaxed);
    });
    let end = futures::stream::once(async move {
        span.record("rows", lancefleet_common::telemetry::int(total.load(Ordering::Relaxed)));
    });
    rows.chain(end.filter_map(|()| std::future::ready(None))).boxed()
}

/// Body of `explain_plan`.
#[derive(Debug, Default, Deserialize)]
pub struct ExplainRequest {
    #[serde(default)]
    verbose: bool,
    #[serde(default)]
    query: TableQuery,
}

/// `POST /v1/table/{id}/explain_plan/`: the distributed plan as a JSON string.
pub async fn explain_plan(
    State(state): State<AppState>,
    TablePath(id): TablePath,
    freshness: Freshness,
    dialect: SpecDialect,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: ExplainRequest = json_body(&body)?;
    let query = in_dialect(request.query, dialect);
    let pinned = state.pinned_plan(&id, freshness.read(query.version), &query).await?;
    let text = state.dispatcher.explain(pinned.pinned(), &pinned.plan, request.verbose).await?;
    Ok(with_table_version(pinned.dataset.version().version, Json(text)))
}

/// `POST /v1/table/{id}/analyze_plan/`: runs the query and answers how every executor's
/// share went, as a JSON string.
pub async fn analyze_plan(
    State(state): State<AppState>,
    TablePath(id): TablePath,
    freshness: Freshness,
    dialect: SpecDialect,
    body: Bytes,
) -> Result<Response, ApiError> {
    let query = in_dialect(json_body(&body)?, dialect);
    let pinned = state.pinned_plan(&id, freshness.read(query.version), &query).await?;
    let text = state.dispatcher.analyze(pinned.pinned(), &pinned.plan, &state.catalog).await?;
    Ok(with_table_version(pinned.dataset.version().version, Json(text)))
}
