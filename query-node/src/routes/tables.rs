//! Database-level routes: list, create, describe and drop tables.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use lance::arrow::json::JsonSchema;
use lancefleet_common::events::ChangeKind;
use lancefleet_engine::{CreateMode, EngineError, Namespace};
use serde::{Deserialize, Serialize};

use crate::arrow_body::decode_stream;
use crate::error::ApiError;
use crate::protocol::{Freshness, TablePath, committed, json_body, parse_mode, with_table_version};
use crate::state::AppState;

/// Query string of the table listings.
#[derive(Debug, Default, Deserialize)]
pub struct ListParams {
    /// Most names to return.
    limit: Option<usize>,
    /// Return names strictly after this one (the client's `start_after`, or our token).
    page_token: Option<String>,
}

/// Response of both table listings.
#[derive(Debug, Serialize, PartialEq)]
pub struct ListTablesResponse {
    tables: Vec<String>,
    /// The last name returned when more may follow; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    page_token: Option<String>,
}

/// `GET /v1/table/`: tables of the root namespace.
pub async fn list_tables(
    State(state): State<AppState>,
    Query(params): Query<ListParams>,
) -> Result<Json<ListTablesResponse>, ApiError> {
    list_in(&state, &Namespace::root(), params).await
}

/// `GET /v1/namespace/{id}/table/list`: tables of a namespace (`$` is the root).
pub async fn list_namespace_tables(
    State(state): State<AppState>,
    Path(namespace): Path<String>,
    Query(params): Query<ListParams>,
) -> Result<Json<ListTablesResponse>, ApiError> {
    let namespace = Namespace::parse(&namespace)?;
    list_in(&state, &namespace, params).await
}

async fn list_in(
    state: &AppState,
    namespace: &Namespace,
    params: ListParams,
) -> Result<Json<ListTablesResponse>, ApiError> {
    let names = state.visible_tables(namespace).await?;
    let (tables, page_token) = page(names, params);
    Ok(Json(ListTablesResponse { tables, page_token }))
}

/// Cuts one page out of the sorted names; returns it and the next page's token. The token
/// is the last name of the page, so the first request may pass any name as its token, as
/// LanceDB clients do.
pub fn page(names: Vec<String>, params: ListParams) -> (Vec<String>, Option<String>) {
    let after = params.page_token.filter(|token| !token.is_empty());
    let mut remaining = names.into_iter().filter(|name| after.as_ref().is_none_or(|after| name > after)).peekable();
    let limit = params.limit.filter(|limit| *limit > 0).unwrap_or(usize::MAX);
    let names = remaining.by_ref().take(limit).collect::<Vec<_>>();
    let page_token = match (remaining.peek(), names.last()) {
        (Some(_), Some(last)) => Some(last.clone()),
        _ => None,
    };
    (names, page_token)
}

/// Query string of `create`.
#[derive(Debug, Default, Deserialize)]
pub struct CreateParams {
    mode: Option<String>,
}

/// `POST /v1/table/{id}/create/?mode=create|overwrite|exist_ok` with an Arrow IPC stream.
pub async fn create_table(
    State(state): State<AppState>,
    TablePath(id): TablePath,
    Query(params): Query<CreateParams>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mode = parse_mode(
        "create",
        params.mode.as_deref(),
        CreateMode::Create,
        &[("create", CreateMode::Create), ("overwrite", CreateMode::Overwrite), ("exist_ok", CreateMode::ExistOk)],
    )?;
    let upload = decode_stream(body, state.limits.max_upload_bytes()).await?;
    let rows = upload.batches.iter().map(|batch| batch.num_rows() as u64).sum();
    let create = state.catalog.create_table(&id, upload.schema, upload.batches, mode);
    let dataset = state.commit(&id, ChangeKind::Create, create, |dataset| (dataset.version().version, rows)).await?;
    let version = dataset.version().version;
    tracing::info!(table = %id, version, ?mode, "table created");
    Ok(committed(&dataset, serde_json::json!({ "version": version, "location": dataset.uri() })).await)
}

/// Body of `describe` (absent, `{}`, or a version to check out).
#[derive(Debug, Default, Deserialize)]
pub struct DescribeRequest {
    version: Option<u64>,
}

/// `POST /v1/table/{id}/describe/`: schema, version and location.
pub async fn describe_table(
    State(state): State<AppState>,
    TablePath(id): TablePath,
    freshness: Freshness,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: DescribeRequest = json_body(&body)?;
    let read = freshness.read(request.version);
    let dataset = state.catalog.open_table(&id, read).await?;
    let schema = arrow_schema::Schema::from(dataset.schema());
    let json_schema = JsonSchema::try_from(&schema).map_err(EngineError::from)?;
    let version = dataset.version().version;
    // LanceDB's fields (`schema` in lance's JSON form), and the namespace spec's names;
    // with a vending policy, what a reader needs to open the table itself.
    let mut description = serde_json::json!({
        "table": id.name(),
        "namespace": id.namespace().components(),
        "version": version,
        "schema": json_schema,
        "location": dataset.uri(),
        "table_uri": dataset.uri(),
    });
    if let Some(options) = state.vending.storage_options(dataset.uri()).await? {
        description["storage_options"] = serde_json::json!(options);
    }
    Ok(with_table_version(version, Json(description)))
}

/// Body of `exists` (absent, `{}`, or a version that must exist too).
#[derive(Debug, Default, Deserialize)]
pub struct ExistsRequest {
    version: Option<u64>,
}

/// `POST /v1/table/{id}/exists/`: an empty 200 when the table (and the version asked
/// for) exists, the 404 of a missing one otherwise.
pub async fn table_exists(
    State(state): State<AppState>,
    TablePath(id): TablePath,
    freshness: Freshness,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: ExistsRequest = json_body(&body)?;
    let dataset = state.catalog.open_table(&id, freshness.read(request.version)).await?;
    Ok(with_table_version(dataset.version().version, ()))
}

/// `POST /v1/table/{id}/stats/`: size, rows and fragment layout of the latest version.
pub async fn table_stats(
    State(state): State<AppState>,
    TablePath(id): TablePath,
    freshness: Freshness,
) -> Result<Response, ApiError> {
    let dataset = state.catalog.open_table(&id, freshness.read(None)).await?;
    let stats = lancefleet_engine::catalog::stats::table_stats(&dataset).await?;
    Ok(with_table_version(dataset.version().version, Json(stats)))
}

/// `POST /v1/table/{id}/drop/`.
pub async fn drop_table(
    State(state): State<AppState>,
    TablePath(id): TablePath,
) -> Result<Json<serde_json::Value>, ApiError> {
    let location = state.commit(&id, ChangeKind::Dropped, state.catalog.drop_table(&id), |_| (0, 0)).await?;
    tracing::info!(table = %id, "table dropped");
    // The namespace spec's answer: which table, and where it was.
    Ok(Json(serde_json::json!({ "id": id.components(), "location": location })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(count: usize) -> Vec<String> {
        (0..count).map(|index| format!("t{index:02}")).collect()
    }

    #[test]
    fn pages_chain_through_every_name_once() {
        let mut seen = Vec::new();
        let mut token = None;
        loop {
            let (tables, next) = page(names(7), ListParams { limit: Some(3), page_token: token.clone() });
            seen.extend(tables);
            match next {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, names(7));
    }

    #[test]
    fn a_table_name_works_as_the_first_token() {
        let (tables, next) = page(names(5), ListParams { limit: None, page_token: Some("t01".into()) });
        assert_eq!(tables, vec!["t02", "t03", "t04"]);
        assert_eq!(next, None);
    }

    #[test]
    fn no_limit_returns_everything_without_a_token() {
        let (tables, next) = page(names(4), ListParams::default());
        assert_eq!(tables.len(), 4);
        assert_eq!(next, None);
        let (_, exact) = page(names(4), ListParams { limit: Some(4), page_token: None });
        assert_eq!(exact, None, "no token when nothing follows");
    }
}
