//! Table-level write and count routes: insert, merge_insert, delete, update, count_rows.
//! Every write announces its commit on the event bus.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, RawQuery, State};
use axum::response::Response;
use lance::deps::datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use lancefleet_common::events::ChangeKind;
use lancefleet_engine::InsertMode;
use lancefleet_engine::write::merge_insert::MergeInsertSpec;
use serde::Deserialize;

use crate::arrow_body::decode_stream;
use crate::dispatch::Pinned;
use crate::error::ApiError;
use crate::protocol::{Freshness, TablePath, committed, json_body, parse_mode, with_table_version};
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
    let mode = parse_mode(
        "insert",
        params.mode.as_deref(),
        InsertMode::Append,
        &[("append", InsertMode::Append), ("overwrite", InsertMode::Overwrite)],
    )?;
    let upload = decode_stream(body, state.limits.max_upload_bytes()).await?;
    let rows = futures::stream::iter(upload.batches.into_iter().map(Ok));
    let stream = Box::pin(RecordBatchStreamAdapter::new(upload.schema, rows));
    let (dataset, rows) = state.write_stream(&id, stream, mode).await?;
    let version = dataset.version().version;
    Ok(committed(&dataset, serde_json::json!({ "version": version, "num_inserted_rows": rows })).await)
}

/// Parses the query string of `merge_insert`: `on` repeated once per key column, the
/// clause flags, their optional conditions.
fn merge_insert_spec(query: &str) -> Result<MergeInsertSpec, ApiError> {
    let mut spec = MergeInsertSpec { use_index: true, ..Default::default() };
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let flag = || match value.as_ref() {
            "true" => Ok(true),
            "false" => Ok(false),
            other => {
                Err(ApiError::bad_request(format!("merge_insert parameter {key} must be true or false, got '{other}'")))
            }
        };
        match key.as_ref() {
            "on" => spec.on.push(value.to_string()),
            "when_matched_update_all" => spec.when_matched_update_all = flag()?,
            "when_matched_update_all_filt" => {
                crate::limits::check_expression(&value)?;
                spec.when_matched_update_all_filter = Some(value.to_string());
            }
            "when_not_matched_insert_all" => spec.when_not_matched_insert_all = flag()?,
            "when_not_matched_by_source_delete" => spec.when_not_matched_by_source_delete = flag()?,
            "when_not_matched_by_source_delete_filt" => {
                crate::limits::check_expression(&value)?;
                spec.when_not_matched_by_source_delete_filter = Some(value.to_string());
            }
            "use_index" => spec.use_index = flag()?,
            // The namespace clients' id delimiter (checked for every route by the guard)
            // and their retry budget (every write here retries conflicts by itself).
            "delimiter" | "timeout" => {}
            // Real-time-write hints of newer clients; every write here is a plain commit.
            "use_lsm" | "use_rte" => {}
            "branch" => return Err(ApiError::NotImplemented("branches are not supported yet".into())),
            other => return Err(ApiError::bad_request(format!("unknown merge_insert parameter '{other}'"))),
        }
    }
    Ok(spec)
}

/// `POST /v1/table/{id}/merge_insert/?on=…&when_…` with an Arrow IPC stream of the source rows.
pub async fn merge_insert(
    State(state): State<AppState>,
    TablePath(id): TablePath,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let spec = merge_insert_spec(query.as_deref().unwrap_or_default())?;
    let upload = decode_stream(body, state.limits.max_upload_bytes()).await?;
    let merge = state.catalog.merge_insert(&id, &spec, upload.schema, upload.batches);
    let (outcome, dataset) = state
        .commit(&id, ChangeKind::MergeInsert, merge, |(outcome, dataset)| {
            (dataset.version().version, outcome.inserted + outcome.updated + outcome.deleted)
        })
        .await?;
    let version = dataset.version().version;
    tracing::info!(table = %id, version, ?outcome, "rows merged");
    // `num_rows` as LanceDB's own merge result counts it: the rows written.
    let body = serde_json::json!({
        "version": version,
        "num_rows": outcome.inserted + outcome.updated,
        "num_inserted_rows": outcome.inserted,
        "num_updated_rows": outcome.updated,
        "num_deleted_rows": outcome.deleted,
        "num_attempts": outcome.attempts,
    });
    Ok(committed(&dataset, body).await)
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
    state.limits.check_filter(request.predicate.as_deref())?;
    let read = freshness.read(request.version);
    let dataset = state.catalog.open_table(&id, read).await?;
    let uri = dataset.uri().to_string();
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
    state.limits.check_filter(Some(&predicate))?;
    let delete = state.catalog.delete_rows(&id, &predicate);
    let (deleted, dataset) = state
        .commit(&id, ChangeKind::Delete, delete, |(deleted, dataset)| (dataset.version().version, *deleted))
        .await?;
    let version = dataset.version().version;
    tracing::info!(table = %id, version, deleted, "rows deleted");
    Ok(committed(&dataset, serde_json::json!({ "num_deleted_rows": deleted, "version": version })).await)
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
    state.limits.check_filter(predicate)?;
    for (_, value) in &request.updates {
        crate::limits::check_expression(value)?;
    }
    let update = state.catalog.update_rows(&id, predicate, &request.updates);
    let (updated, dataset) = state
        .commit(&id, ChangeKind::Update, update, |(updated, dataset)| (dataset.version().version, *updated))
        .await?;
    let version = dataset.version().version;
    tracing::info!(table = %id, version, updated, "rows updated");
    // `rows_updated` is LanceDB's name, `updated_rows` the namespace spec's.
    let body = serde_json::json!({ "rows_updated": updated, "updated_rows": updated, "version": version });
    Ok(committed(&dataset, body).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_insert_parameters_as_the_client_sends_them() {
        let spec = merge_insert_spec(
            "on=a&on=b&when_matched_update_all=true&when_matched_update_all_filt=target.%60x%60+%3E+0\
             &when_not_matched_insert_all=false&when_not_matched_by_source_delete=true&use_index=false",
        )
        .expect("valid");
        assert_eq!(spec.on, vec!["a", "b"]);
        assert!(spec.when_matched_update_all && spec.when_not_matched_by_source_delete);
        assert!(!spec.when_not_matched_insert_all && !spec.use_index);
        assert_eq!(spec.when_matched_update_all_filter.as_deref(), Some("target.`x` > 0"));
        assert!(merge_insert_spec("on=a&when_matched_update_all=yes").is_err());
        assert!(merge_insert_spec("on=a&surprise=1").is_err());
        assert_eq!(merge_insert_spec("delimiter=%24&on=a&timeout=30s").expect("spec dialect").on, vec!["a"]);
    }
}
