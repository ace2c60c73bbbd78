//! Index routes: `create_index` (recorded as a request the indexer fleet builds; the call
//! returns at once, as LanceDB Cloud's does; built before answering where no indexer
//! runs), `index/list`, `index/{index_name}/stats` and `index/{index_name}/drop`.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use lancefleet_common::events::{ChangeKind, IndexRequest, TableEvent, now_ms};
use lancefleet_engine::catalog::facts::{IndexFacts, index_facts};
use lancefleet_engine::{IndexKind, IndexSpec, TableId};
use serde::Deserialize;

use crate::error::ApiError;
use crate::protocol::{Freshness, SpecDialect, TablePath, committed, json_body, with_table_version};
use crate::state::AppState;

/// `POST /v1/table/{id}/create_index/`: checks the request against the table (column,
/// type, parameters) and hands it to the indexer fleet.
pub async fn create_index(
    State(state): State<AppState>,
    TablePath(id): TablePath,
    body: Bytes,
) -> Result<Response, ApiError> {
    index(state, id, body, false).await
}

/// `POST /v1/table/{id}/create_scalar_index/` (the namespace spec's): `create_index`
/// for the scalar and full-text index types; a vector type is refused.
pub async fn create_scalar_index(
    State(state): State<AppState>,
    TablePath(id): TablePath,
    body: Bytes,
) -> Result<Response, ApiError> {
    index(state, id, body, true).await
}

/// Checks an index request against the table and builds it, or hands it to the indexer
/// fleet; `scalar_only` refuses vector index types.
async fn index(state: AppState, id: TableId, body: Bytes, scalar_only: bool) -> Result<Response, ApiError> {
    let request: serde_json::Value = json_body(&body)?;
    let dataset = state.catalog.open_table(&id, Freshness::default().read(None)).await?;
    let spec = IndexSpec::resolve(&request, &arrow_schema::Schema::from(dataset.schema()))?;
    if scalar_only && spec.kind.is_vector() {
        return Err(ApiError::bad_request(format!(
            "create_scalar_index builds scalar and full-text indexes; {} is a vector index type (use create_index)",
            spec.kind.as_str()
        )));
    }
    spec.check_name(&dataset).await?;
    if state.inline_indexing {
        let build = state.catalog.build_index(&id, &spec);
        let built = state.commit(&id, ChangeKind::IndexBuilt, build, |built| (built.version().version, 0)).await?;
        let version = built.version().version;
        tracing::info!(table = %id, index = %spec.name, kind = spec.kind.as_str(), version, "index built");
        return Ok(committed(&built, serde_json::json!({})).await);
    }
    let version = dataset.version().version;
    let event = TableEvent::now(id.to_string(), version, ChangeKind::IndexRequested, 0);
    let index = IndexRequest { name: spec.name.clone(), spec: spec.request().clone(), requested_at_ms: now_ms() };
    state.events.request_index(event, index).await?;
    tracing::info!(table = %id, index = %spec.name, kind = spec.kind.as_str(), column = %spec.column, "index requested");
    Ok(with_table_version(version, Json(serde_json::json!({}))))
}

/// Body of the index reads (absent, `{}`, or a version).
#[derive(Debug, Default, Deserialize)]
pub struct IndexReadRequest {
    version: Option<u64>,
}

/// An index's type as the client spells it: LanceDB's clients read LanceDB's names
/// (`BTree` → `BTREE`, `Inverted` → `FTS`), the namespace spec's clients lance's own, as
/// lance's reference server reports them.
fn client_index_type(index: &IndexFacts, SpecDialect(spec): SpecDialect) -> String {
    if spec {
        return index.index_type.clone();
    }
    IndexKind::parse(&index.index_type).map_or_else(|_| index.index_type.clone(), |kind| kind.as_str().to_string())
}

async fn indexes_at(
    state: &AppState,
    id: &TableId,
    freshness: Freshness,
    body: &Bytes,
) -> Result<(u64, Vec<IndexFacts>), ApiError> {
    let request: IndexReadRequest = json_body(body)?;
    let dataset = state.catalog.open_table(id, freshness.read(request.version)).await?;
    Ok((dataset.version().version, index_facts(&dataset).await?))
}

/// `POST /v1/table/{id}/index/list/`.
pub async fn list_indices(
    State(state): State<AppState>,
    TablePath(id): TablePath,
    freshness: Freshness,
    dialect: SpecDialect,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (version, indexes) = indexes_at(&state, &id, freshness, &body).await?;
    let indexes = indexes
        .iter()
        .map(|index| {
            // LanceDB's fields, and the namespace spec's required `index_uuid` and
            // `status` (a listed index is built: requested ones are not listed yet).
            serde_json::json!({
                "index_name": index.name,
                "index_uuid": index.uuid,
                "status": "SUCCEEDED",
                "columns": [index.column],
                "index_type": client_index_type(index, dialect),
                "num_indexed_rows": index.indexed_rows,
                "num_unindexed_rows": index.unindexed_rows,
                "num_segments": index.segments,
                "index_version": index.index_version,
                "created_at": index.created_at.map(|at| at.to_rfc3339()),
                "type_url": index.type_url,
                "size_bytes": index.size_bytes,
            })
        })
        .collect::<Vec<_>>();
    Ok(with_table_version(version, Json(serde_json::json!({ "indexes": indexes }))))
}

/// `POST /v1/table/{id}/index/{index_name}/stats/`; 404 when there is no such index.
pub async fn index_stats(
    State(state): State<AppState>,
    TablePath(id): TablePath,
    Path(params): Path<HashMap<String, String>>,
    freshness: Freshness,
    dialect: SpecDialect,
    body: Bytes,
) -> Result<Response, ApiError> {
    let name = params.get("index_name").map(String::as_str).unwrap_or_default();
    let (version, indexes) = indexes_at(&state, &id, freshness, &body).await?;
    let index = indexes
        .iter()
        .find(|index| index.name == name)
        .ok_or_else(|| ApiError::IndexNotFound(format!("index '{name}' of table '{id}' was not found")))?;
    let mut stats = serde_json::json!({
        "index_type": client_index_type(index, dialect),
        "num_indexed_rows": index.indexed_rows,
        "num_unindexed_rows": index.unindexed_rows,
        "num_indices": index.segments,
    });
    if let Some(distance) = &index.distance_type {
        stats["distance_type"] = serde_json::Value::from(distance.as_str());
    }
    Ok(with_table_version(version, Json(stats)))
}

/// `POST /v1/table/{id}/index/{index_name}/drop/`; 404 when there is no such index.
pub async fn drop_index(
    State(state): State<AppState>,
    TablePath(id): TablePath,
    Path(params): Path<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let name = params.get("index_name").map(String::as_str).unwrap_or_default();
    let drop = state.catalog.drop_index(&id, name);
    let dataset = state.commit(&id, ChangeKind::IndexDropped, drop, |dataset| (dataset.version().version, 0)).await?;
    let version = dataset.version().version;
    tracing::info!(table = %id, index = name, version, "index dropped");
    Ok(committed(&dataset, serde_json::json!({})).await)
}
