//! Catalog routes of the namespace spec that change where a table is found, not its data:
//! `declare` (and LanceDB's older `create-empty`), `register`, `deregister`, `rename`.
//! They are served by lance's directory namespace (see
//! `lancefleet_engine::catalog::namespaces`): root tables are their `{name}.lance`
//! directories and can only be declared; namespaced tables are manifest rows.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use lancefleet_common::events::ChangeKind;
use lancefleet_engine::{EngineError, Namespace, TableId};
use serde::Deserialize;

use crate::auth::{self, Access, Target};
use crate::error::ApiError;
use crate::protocol::{TablePath, json_body, parse_mode};
use crate::state::AppState;

/// Body of `declare` and `create-empty`.
#[derive(Debug, Default, Deserialize)]
pub struct DeclareRequest {
    /// Where the caller expects the table; it must be where the catalog puts it.
    location: Option<String>,
    properties: Option<HashMap<String, String>>,
}

/// `POST /v1/table/{id}/declare/`: reserves a table without data (lance's
/// `.lance-reserved` marker); a later `create` writes it where it was declared.
pub async fn declare_table(
    State(state): State<AppState>,
    TablePath(id): TablePath,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let request: DeclareRequest = json_body(&body)?;
    let properties = request.properties.unwrap_or_default();
    let location = state.catalog.declare_table(&id, properties.clone(), request.location.as_deref()).await?;
    tracing::info!(table = %id, %location, "table declared");
    let mut answer = serde_json::json!({ "location": location, "properties": properties });
    if let Some(options) = state.vending.storage_options(&location).await? {
        answer["storage_options"] = serde_json::json!(options);
    }
    Ok(Json(answer))
}

/// Body of `register`.
#[derive(Debug, Default, Deserialize)]
pub struct RegisterRequest {
    /// The dataset's path relative to the storage root.
    location: Option<String>,
    /// `create` (default) or `overwrite` (replace an existing registration of the name).
    mode: Option<String>,
}

/// `POST /v1/table/{id}/register/`: makes the Lance dataset at `location` (under the
/// storage root) table `id` of an existing namespace, where it is.
pub async fn register_table(
    State(state): State<AppState>,
    TablePath(id): TablePath,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let request: RegisterRequest = json_body(&body)?;
    let location = request.location.ok_or_else(|| ApiError::bad_request("register needs a location"))?;
    let overwrite = parse_mode("register", request.mode.as_deref(), false, &[("create", false), ("overwrite", true)])?;
    if overwrite {
        let deregister = state.catalog.deregister_table(&id);
        match state.commit(&id, ChangeKind::Dropped, deregister, |_| (0, 0)).await {
            Ok(_) => {}
            Err(ApiError::Engine(EngineError::TableNotFound { .. })) => {}
            Err(error) => return Err(error),
        }
    }
    state.catalog.register_table(&id, &location).await?;
    tracing::info!(table = %id, %location, "table registered");
    Ok(Json(serde_json::json!({ "location": location })))
}

/// `POST /v1/table/{id}/deregister/`: removes namespaced table `id` from the catalog and
/// keeps its data.
pub async fn deregister_table(
    State(state): State<AppState>,
    TablePath(id): TablePath,
) -> Result<Json<serde_json::Value>, ApiError> {
    let location = state.commit(&id, ChangeKind::Dropped, state.catalog.deregister_table(&id), |_| (0, 0)).await?;
    tracing::info!(table = %id, %location, "table deregistered");
    Ok(Json(serde_json::json!({ "id": id.components(), "location": location })))
}

/// Body of `rename`.
#[derive(Debug, Default, Deserialize)]
pub struct RenameRequest {
    new_table_name: Option<String>,
    /// The namespace to move it to; its own by default.
    new_namespace_id: Option<Vec<String>>,
}

/// `POST /v1/table/{id}/rename/`: a namespaced table gets a new name (and namespace); its
/// data stays where it is. The caller needs the same access to the new name.
pub async fn rename_table(
    State(state): State<AppState>,
    TablePath(id): TablePath,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let request: RenameRequest = json_body(&body)?;
    let name = request.new_table_name.ok_or_else(|| ApiError::bad_request("rename needs a new_table_name"))?;
    let namespace = match request.new_namespace_id {
        Some(components) if components.is_empty() => Namespace::root(),
        Some(components) => Namespace::parse(&components.join("$"))?,
        None => id.namespace().clone(),
    };
    let to = TableId::new(namespace, &name)?;
    auth::require(Access::Admin, &Target::Table(to.clone()))?;
    state.commit(&id, ChangeKind::Dropped, state.catalog.rename_table(&id, &to), |_| (0, 0)).await?;
    tracing::info!(table = %id, to = %to, "table renamed");
    Ok(Json(serde_json::json!({})))
}
