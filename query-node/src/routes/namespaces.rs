//! Namespace routes: list, create, describe and drop namespaces (`$`-joined ids, `$` is
//! the root). Tables inside them are addressed as `ns1$ns2$table`.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use lancefleet_engine::Namespace;
use lancefleet_engine::catalog::namespaces::{CreateNamespaceMode, DropBehavior};
use serde::{Deserialize, Serialize};

use super::tables::{ListParams, page};
use crate::auth::{self, Target};
use crate::error::ApiError;
use crate::protocol::{json_body, parse_mode};
use crate::state::AppState;

/// Response of the namespace listing.
#[derive(Debug, Serialize)]
pub struct ListNamespacesResponse {
    namespaces: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    page_token: Option<String>,
}

/// `GET /v1/namespace/{id}/list`: the namespaces directly inside one.
pub async fn list_namespaces(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<ListParams>,
) -> Result<Json<ListNamespacesResponse>, ApiError> {
    let parent = Namespace::parse(&id)?;
    let mut names = state.catalog.list_namespaces(&parent).await?;
    names.retain(|name| parent.child(name).is_ok_and(|child| auth::visible(&Target::Namespace(child))));
    let (namespaces, page_token) = page(names, params);
    Ok(Json(ListNamespacesResponse { namespaces, page_token }))
}

/// Body of `create`.
#[derive(Debug, Default, Deserialize)]
pub struct CreateNamespaceRequest {
    mode: Option<String>,
    properties: Option<HashMap<String, String>>,
}

/// `POST /v1/namespace/{id}/create`: `mode` create (default), exist_ok or overwrite.
pub async fn create_namespace(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let request: CreateNamespaceRequest = json_body(&body)?;
    let mode = parse_mode(
        "namespace create",
        request.mode.as_deref(),
        CreateNamespaceMode::Create,
        &[
            ("create", CreateNamespaceMode::Create),
            ("exist_ok", CreateNamespaceMode::ExistOk),
            ("overwrite", CreateNamespaceMode::Overwrite),
        ],
    )?;
    let namespace = Namespace::parse(&id)?;
    let properties = state.catalog.create_namespace(&namespace, mode, request.properties.unwrap_or_default()).await?;
    tracing::info!(%namespace, "namespace created");
    Ok(Json(serde_json::json!({ "properties": properties })))
}

/// `POST /v1/namespace/{id}/describe`.
pub async fn describe_namespace(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let properties = state.catalog.describe_namespace(&Namespace::parse(&id)?).await?;
    Ok(Json(serde_json::json!({ "properties": properties })))
}

/// `POST /v1/namespace/{id}/exists`: an empty 200, or the 404 of a missing namespace.
pub async fn namespace_exists(State(state): State<AppState>, Path(id): Path<String>) -> Result<(), ApiError> {
    state.catalog.describe_namespace(&Namespace::parse(&id)?).await?;
    Ok(())
}

/// Body of `drop`.
#[derive(Debug, Default, Deserialize)]
pub struct DropNamespaceRequest {
    mode: Option<String>,
    behavior: Option<String>,
}

/// `POST /v1/namespace/{id}/drop`: `mode` fail (default) or skip a missing namespace;
/// `behavior` restrict (default) or cascade into its tables and namespaces.
pub async fn drop_namespace(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let request: DropNamespaceRequest = json_body(&body)?;
    let skip_missing = match request.mode.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("fail") => false,
        Some("skip") => true,
        Some(other) => return Err(ApiError::bad_request(format!("unknown drop mode '{other}'; use fail or skip"))),
    };
    let behavior = match request.behavior.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("restrict") => DropBehavior::Restrict,
        Some("cascade") => DropBehavior::Cascade,
        Some(other) => {
            return Err(ApiError::bad_request(format!("unknown drop behavior '{other}'; use restrict or cascade")));
        }
    };
    let namespace = Namespace::parse(&id)?;
    match state.catalog.drop_namespace(&namespace, behavior).await {
        Ok(()) => tracing::info!(%namespace, ?behavior, "namespace dropped"),
        Err(lancefleet_engine::EngineError::NamespaceNotFound { .. }) if skip_missing => {}
        Err(error) => return Err(error.into()),
    }
    Ok(Json(serde_json::json!({})))
}
