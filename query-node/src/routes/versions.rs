//! Version routes: list versions, restore one, and tags (named versions).

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use lance::dataset::refs::TagContents;
use lancefleet_common::events::ChangeKind;
use lancefleet_engine::EngineError;
use serde::Deserialize;

use crate::error::ApiError;
use crate::protocol::{Freshness, TablePath, json_body, with_table_version};
use crate::state::AppState;

/// `POST /v1/table/{id}/version/list/`: every version still on storage, oldest first.
pub async fn list_versions(
    State(state): State<AppState>,
    TablePath(id): TablePath,
    freshness: Freshness,
) -> Result<Response, ApiError> {
    let dataset = state.catalog.open_table(&id, freshness.read(None)).await?;
    let versions = dataset.versions().await.map_err(EngineError::from)?;
    let versions = versions
        .iter()
        .map(|version| {
            serde_json::json!({
                "version": version.version,
                "timestamp": version.timestamp.to_rfc3339(),
                "metadata": version.metadata,
            })
        })
        .collect::<Vec<_>>();
    Ok(with_table_version(dataset.version().version, Json(serde_json::json!({ "versions": versions }))))
}

/// Body of `restore`.
#[derive(Debug, Default, Deserialize)]
pub struct RestoreRequest {
    version: Option<u64>,
}

/// `POST /v1/table/{id}/restore/`: a new latest version with the data of `version`.
pub async fn restore(
    State(state): State<AppState>,
    TablePath(id): TablePath,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: RestoreRequest = json_body(&body)?;
    let version = request.version.ok_or_else(|| ApiError::bad_request("restore needs the version to restore"))?;
    let restore = state.catalog.restore(&id, version);
    let dataset = state.commit(&id, ChangeKind::Overwrite, restore, |dataset| (dataset.version().version, 0)).await?;
    let new_version = dataset.version().version;
    tracing::info!(table = %id, restored = version, version = new_version, "version restored");
    Ok(with_table_version(new_version, Json(serde_json::json!({ "version": new_version }))))
}

/// Body of the tag routes.
#[derive(Debug, Default, Deserialize)]
pub struct TagRequest {
    tag: Option<String>,
    version: Option<u64>,
}

impl TagRequest {
    fn parse(body: &Bytes) -> Result<(String, Option<u64>), ApiError> {
        let request: Self = json_body(body)?;
        let tag = request.tag.filter(|tag| !tag.is_empty()).ok_or_else(|| ApiError::bad_request("missing 'tag'"))?;
        Ok((tag, request.version))
    }

    fn parse_with_version(body: &Bytes) -> Result<(String, u64), ApiError> {
        let (tag, version) = Self::parse(body)?;
        Ok((tag, version.ok_or_else(|| ApiError::bad_request("missing 'version'"))?))
    }
}

/// `POST /v1/table/{id}/tags/list/`: `{tag: {version, branch, createdAt, …}}`.
pub async fn list_tags(
    State(state): State<AppState>,
    TablePath(id): TablePath,
) -> Result<Json<HashMap<String, TagContents>>, ApiError> {
    Ok(Json(state.catalog.list_tags(&id).await?))
}

/// `POST /v1/table/{id}/tags/version/`: the version a tag names.
pub async fn tag_version(
    State(state): State<AppState>,
    TablePath(id): TablePath,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (tag, _) = TagRequest::parse(&body)?;
    let version = state.catalog.tag_version(&id, &tag).await?;
    Ok(Json(serde_json::json!({ "version": version })))
}

/// `POST /v1/table/{id}/tags/create/`.
pub async fn create_tag(
    State(state): State<AppState>,
    TablePath(id): TablePath,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (tag, version) = TagRequest::parse_with_version(&body)?;
    state.catalog.create_tag(&id, &tag, version).await?;
    tracing::info!(table = %id, tag, version, "tag created");
    Ok(Json(serde_json::json!({})))
}

/// `POST /v1/table/{id}/tags/update/`.
pub async fn update_tag(
    State(state): State<AppState>,
    TablePath(id): TablePath,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (tag, version) = TagRequest::parse_with_version(&body)?;
    state.catalog.update_tag(&id, &tag, version).await?;
    tracing::info!(table = %id, tag, version, "tag moved");
    Ok(Json(serde_json::json!({})))
}

/// `POST /v1/table/{id}/tags/delete/`.
pub async fn delete_tag(
    State(state): State<AppState>,
    TablePath(id): TablePath,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (tag, _) = TagRequest::parse(&body)?;
    state.catalog.delete_tag(&id, &tag).await?;
    tracing::info!(table = %id, tag, "tag deleted");
    Ok(Json(serde_json::json!({})))
}
