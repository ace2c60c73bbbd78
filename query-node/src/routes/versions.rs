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
use crate::protocol::{Freshness, SpecDialect, TablePath, committed, json_body, with_table_version};
use crate::state::AppState;

/// `POST /v1/table/{id}/version/list/`: every version still on storage, oldest first.
pub async fn list_versions(
    State(state): State<AppState>,
    TablePath(id): TablePath,
    freshness: Freshness,
) -> Result<Response, ApiError> {
    let dataset = state.catalog.open_table(&id, freshness.read(None)).await?;
    let versions = dataset.versions().await.map_err(EngineError::from)?;
    let manifest_path = manifest_paths(&dataset);
    let versions = versions.iter().map(|version| describe(version, &manifest_path)).collect::<Vec<_>>();
    Ok(with_table_version(dataset.version().version, Json(serde_json::json!({ "versions": versions }))))
}

/// One version as both kinds of client read it: LanceDB's fields, and the namespace spec's
/// `TableVersion` (`manifest_path`, `timestamp_millis`).
fn describe(version: &lance::dataset::Version, manifest_path: impl Fn(u64) -> String) -> serde_json::Value {
    serde_json::json!({
        "version": version.version,
        "timestamp": version.timestamp.to_rfc3339(),
        "timestamp_millis": version.timestamp.timestamp_millis(),
        "metadata": version.metadata,
        "manifest_path": manifest_path(version.version),
    })
}

/// Body of `version/describe`.
#[derive(Debug, Default, Deserialize)]
pub struct DescribeVersionRequest {
    version: Option<u64>,
}

/// `POST /v1/table/{id}/version/describe`: `{"version": {...}}` of one version (the
/// latest when none is named).
pub async fn describe_version(
    State(state): State<AppState>,
    TablePath(id): TablePath,
    freshness: Freshness,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: DescribeVersionRequest = json_body(&body)?;
    let dataset = state.catalog.open_table(&id, freshness.read(request.version)).await?;
    let version = dataset.version();
    let described = describe(&version, manifest_paths(&dataset));
    Ok(with_table_version(version.version, Json(serde_json::json!({ "version": described }))))
}

/// The path of each version's manifest in the table's object store, as lance names it
/// (every version of a table uses the naming scheme of its latest one).
fn manifest_paths(dataset: &lance::Dataset) -> impl Fn(u64) -> String {
    let location = dataset.manifest_location();
    let scheme = location.naming_scheme;
    // `{table}/_versions/{file}`: the table's base is two levels up.
    let latest = location.path.to_string();
    let base = latest.rsplitn(3, '/').nth(2).unwrap_or_default().to_string();
    move |version| scheme.manifest_path(&object_store::path::Path::from(base.as_str()), version).to_string()
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
    Ok(committed(&dataset, serde_json::json!({ "version": new_version })).await)
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

/// `POST /v1/table/{id}/tags/list/`: `{tag: {version, branch, createdAt, …}}` to LanceDB's
/// clients, `{"tags": {tag: …}}` to the namespace spec's (the one shape no superset can
/// serve both: a tag may be named `tags`).
pub async fn list_tags(
    State(state): State<AppState>,
    TablePath(id): TablePath,
    SpecDialect(spec): SpecDialect,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tags: HashMap<String, TagContents> = state.catalog.list_tags(&id).await?;
    let tags = serde_json::to_value(tags).map_err(|error| ApiError::Internal(error.to_string()))?;
    Ok(Json(if spec { serde_json::json!({ "tags": tags }) } else { tags }))
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
