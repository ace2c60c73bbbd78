//! Schema evolution routes: add, alter and drop columns, update field metadata. Each
//! answers with the version it committed and announces it.

use std::collections::HashMap;
use std::future::Future;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::Response;
use lance::Dataset;
use lancefleet_common::events::ChangeKind;
use lancefleet_engine::write::schema_change::{Alteration, FieldMetadataUpdate, NewColumns};
use lancefleet_engine::{EngineError, TableId};
use serde::Deserialize;

use crate::arrow_body::{ARROW_STREAM_CONTENT_TYPE, decode_stream};
use crate::error::ApiError;
use crate::protocol::{TablePath, committed, json_body, with_table_version};
use crate::state::AppState;

/// One column of `add_columns` in its SQL form.
#[derive(Debug, Deserialize)]
pub struct NewColumn {
    name: String,
    expression: String,
}

/// JSON body of `add_columns`.
#[derive(Debug, Default, Deserialize)]
pub struct AddColumnsRequest {
    #[serde(default)]
    new_columns: Vec<NewColumn>,
}

/// Commits a schema change (`change`) and answers with its version.
async fn changed(
    state: &AppState,
    id: &TableId,
    what: &str,
    change: impl Future<Output = Result<Dataset, EngineError>>,
) -> Result<Response, ApiError> {
    let dataset = state.commit(id, ChangeKind::SchemaChange, change, |dataset| (dataset.version().version, 0)).await?;
    let version = dataset.version().version;
    tracing::info!(table = %id, version, what, "schema changed");
    Ok(committed(&dataset, serde_json::json!({ "version": version })).await)
}

/// `POST /v1/table/{id}/add_columns/`: SQL expressions (JSON), or all-null columns (an
/// Arrow IPC stream holding only the new fields' schema).
pub async fn add_columns(
    State(state): State<AppState>,
    TablePath(id): TablePath,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let arrow = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with(ARROW_STREAM_CONTENT_TYPE));
    let columns = if arrow {
        NewColumns::AllNulls(decode_stream(body, state.limits.max_upload_bytes()).await?.schema)
    } else {
        let request: AddColumnsRequest = json_body(&body)?;
        for column in &request.new_columns {
            crate::limits::check_expression(&column.expression)?;
        }
        NewColumns::Expressions(
            request.new_columns.into_iter().map(|column| (column.name, column.expression)).collect(),
        )
    };
    changed(&state, &id, "add_columns", state.catalog.add_columns(&id, columns)).await
}

/// Body of `alter_columns`.
#[derive(Debug, Default, Deserialize)]
pub struct AlterColumnsRequest {
    #[serde(default)]
    alterations: Vec<Alteration>,
}

/// `POST /v1/table/{id}/alter_columns/`: rename, change nullability, cast.
pub async fn alter_columns(
    State(state): State<AppState>,
    TablePath(id): TablePath,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: AlterColumnsRequest = json_body(&body)?;
    changed(&state, &id, "alter_columns", state.catalog.alter_columns(&id, &request.alterations)).await
}

/// Body of `drop_columns`.
#[derive(Debug, Default, Deserialize)]
pub struct DropColumnsRequest {
    #[serde(default)]
    columns: Vec<String>,
}

/// `POST /v1/table/{id}/drop_columns/`.
pub async fn drop_columns(
    State(state): State<AppState>,
    TablePath(id): TablePath,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: DropColumnsRequest = json_body(&body)?;
    changed(&state, &id, "drop_columns", state.catalog.drop_columns(&id, &request.columns)).await
}

/// Body of `update_field_metadata`.
#[derive(Debug, Default, Deserialize)]
pub struct UpdateFieldMetadataRequest {
    #[serde(default)]
    updates: Vec<FieldMetadataUpdate>,
}

/// `POST /v1/table/{id}/update_field_metadata/`.
pub async fn update_field_metadata(
    State(state): State<AppState>,
    TablePath(id): TablePath,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: UpdateFieldMetadataRequest = json_body(&body)?;
    changed(&state, &id, "update_field_metadata", state.catalog.update_field_metadata(&id, &request.updates)).await
}

/// `POST /v1/table/{id}/schema_metadata/update`: the body is the keys to set (a `null`
/// value removes one); answers with the table's whole schema metadata after the change.
pub async fn update_schema_metadata(
    State(state): State<AppState>,
    TablePath(id): TablePath,
    body: Bytes,
) -> Result<Response, ApiError> {
    let entries: HashMap<String, Option<String>> = json_body(&body)?;
    let change = state.catalog.update_schema_metadata(&id, &entries);
    let dataset = state.commit(&id, ChangeKind::SchemaChange, change, |dataset| (dataset.version().version, 0)).await?;
    let version = dataset.version().version;
    tracing::info!(table = %id, version, "schema metadata updated");
    Ok(with_table_version(version, Json(dataset.schema().metadata.clone())))
}
