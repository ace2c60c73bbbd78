//! `POST /v1/table/{id}/query/`: vector search and filtered scans, answered as an Arrow IPC file.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use lancefleet_engine::{ReadVersion, TableQuery, run_query};

use crate::arrow_body::{ARROW_FILE_CONTENT_TYPE, encode_file};
use crate::error::ApiError;
use crate::protocol::{Freshness, TablePath, json_body, with_table_version};
use crate::state::AppState;

/// Runs a query at the version the body or the freshness headers ask for.
pub async fn query(
    State(state): State<AppState>,
    TablePath(id): TablePath,
    Freshness(min_version): Freshness,
    body: Bytes,
) -> Result<Response, ApiError> {
    let query: TableQuery = json_body(&body)?;
    query.validate()?;
    let read = ReadVersion { version: query.version, min_version };
    let dataset = state.catalog.open_table(&id, read).await?;
    let output = run_query(&dataset, &query).await?;
    let rows = output.num_rows();
    let bytes = encode_file(output.schema, output.batches).await?;
    tracing::debug!(table = %id, version = dataset.version().version, rows, "query answered");
    let mut response = bytes.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ARROW_FILE_CONTENT_TYPE));
    Ok(with_table_version(dataset.version().version, response))
}
