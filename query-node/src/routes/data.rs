//! Table-level write and count routes: insert, delete, update, count_rows. Every write
//! announces its commit on the event bus.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::Response;
use lancefleet_common::events::ChangeKind;
use lancefleet_engine::InsertMode;
use serde::Deserialize;

use crate::arrow_body::decode_stream;
use crate::dispatch::Pinned;
use crate::error::ApiError;
use crate::protocol::{Freshness, TablePath, json_body, with_table_version};
use crate::state::AppState;

/// Query string of `insert`.
#[derive(Debug, Default, Deserialize)]
pub struct InsertParams {
    mode: Option<String>,
    upload_id: Option<String>,
}

/// `POST /v1/table/{id}/insert/[?mode=overwrite]` with an Arrow IPC stream.
pub async fn insert(
    State(state): State<AppState>,
    TablePath(id): TablePath,
    Query(params): Query<InsertParams>,
    body: Bytes,
) -> Result<Response, ApiError> {
    if params.upload_id.is_some() {
        return Err(ApiError::NotImplemented("multipart writes are not supported yet".into()));
    }
    let mode = match params.mode.as_deref().unwrap_or("append") {
        "append" => InsertMode::Append,
        "overwrite" => InsertMode::Overwrite,
        other => return Err(ApiError::bad_request(format!("unknown insert mode '{other}'; use append or overwrite"))),
    };
    let upload = decode_stream(body).await?;
    let rows = upload.batches.iter().map(|batch| batch.num_rows()).sum::<usize>();
    let dataset = state.catalog.insert(&id, upload.schema, upload.batches, mode).await?;
    let version = dataset.version().version;
    tracing::info!(table = %id, version, rows, ?mode, "rows inserted");
    let kind = if mode == InsertMode::Append { ChangeKind::Append } else { ChangeKind::Overwrite };
    state.announce(&id, version, kind, rows as u64).await;
    Ok(with_table_version(version, Json(serde_json::json!({ "version": version }))))
}

/// Body of `count_rows`.
#[derive(Debug, Default, Deserialize)]
pub struct CountRowsRequest {
    predicate: Option<String>,
    version: Option<u64>,
}

/// `POST /v1/table/{id}/count_rows/`: a bare JSON integer.
pub async fn count_rows(
    State(state): State<AppState>,
    TablePath(id): TablePath,
    freshness: Freshness,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: CountRowsRequest = json_body(&body)?;
    let read = freshness.read(request.version);
    let dataset = state.catalog.open_table(&id, read).await?;
    let uri = state.catalog.table_uri(&id);
    let pinned = Pinned { dataset: &dataset, uri: &uri };
    let count = state.dispatcher.count_rows(pinned, request.predicate.as_deref()).await?;
    Ok(with_table_version(dataset.version().version, Json(count)))
}

/// Body of `delete`.
#[derive(Debug, Default, Deserialize)]
pub struct DeleteRequest {
    predicate: Option<String>,
}

/// `POST /v1/table/{id}/delete/`.
pub async fn delete_rows(
    State(state): State<AppState>,
    TablePath(id): TablePath,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: DeleteRequest = json_body(&body)?;
    let Some(predicate) = request.predicate.filter(|predicate| !predicate.trim().is_empty()) else {
        return Err(ApiError::bad_request("delete needs a predicate; use \"true\" to delete every row"));
    };
    let (deleted, dataset) = state.catalog.delete_rows(&id, &predicate).await?;
    let version = dataset.version().version;
    tracing::info!(table = %id, version, deleted, "rows deleted");
    state.announce(&id, version, ChangeKind::Delete, deleted).await;
    Ok(with_table_version(version, Json(serde_json::json!({ "num_deleted_rows": deleted, "version": version }))))
}

/// Body of `update`: `updates` as `[column, SQL expression]` pairs.
#[derive(Debug, Default, Deserialize)]
pub struct UpdateRequest {
    predicate: Option<String>,
    #[serde(default)]
    updates: Vec<(String, String)>,
}

/// `POST /v1/table/{id}/update/`.
pub async fn update_rows(
    State(state): State<AppState>,
    TablePath(id): TablePath,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: UpdateRequest = json_body(&body)?;
    let predicate = request.predicate.as_deref().filter(|predicate| !predicate.trim().is_empty());
    let (updated, dataset) = state.catalog.update_rows(&id, predicate, &request.updates).await?;
    let version = dataset.version().version;
    tracing::info!(table = %id, version, updated, "rows updated");
    state.announce(&id, version, ChangeKind::Update, updated).await;
    Ok(with_table_version(version, Json(serde_json::json!({ "rows_updated": updated, "version": version }))))
}
