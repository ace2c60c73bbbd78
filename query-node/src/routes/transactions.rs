//! Transaction routes of the namespace spec, `/v1/transaction/{id}/describe|alter`: the
//! commits LanceFleet's writes made, found by the `transaction_id` their answers carry.
//!
//! `{id}` is the table's id with the transaction's uuid appended (`ns$table$uuid`), as
//! lance's reference server takes it. Every transaction a table's versions still hold
//! is a committed lance transaction, so its status is `SUCCEEDED`; one that did not commit
//! left nothing to find. Committed transactions cannot change: `alter` accepts only
//! actions that change nothing (the status it already has), and refuses the whole request
//! otherwise, before anything is written.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use lance::dataset::transaction::Transaction;
use lancefleet_engine::{EngineError, TableId};
use serde::Deserialize;

use crate::error::ApiError;
use crate::protocol::{Freshness, json_body};
use crate::state::AppState;

/// The status of every transaction this server can find: it committed.
const SUCCEEDED: &str = "SUCCEEDED";

/// Splits a transaction route's id into the table and the transaction uuid.
pub fn parse_id(id: &str) -> Result<(TableId, String), ApiError> {
    let (table, uuid) =
        id.rsplit_once('$').filter(|(table, uuid)| !table.is_empty() && !uuid.is_empty()).ok_or_else(|| {
            ApiError::bad_request(format!(
                "transaction id '{id}' must be the table's id and the transaction's, joined by '$'"
            ))
        })?;
    Ok((TableId::parse(table)?, uuid.to_string()))
}

/// The committed transaction `uuid` of table `id`, newest versions first, with the
/// version it made.
async fn find(state: &AppState, id: &TableId, uuid: &str) -> Result<(u64, Transaction), ApiError> {
    let dataset = state.catalog.open_table(id, Freshness::default().read(None)).await?;
    let versions = dataset.versions().await.map_err(EngineError::from)?;
    for version in versions.iter().rev() {
        let transaction = dataset.read_transaction_by_version(version.version).await.map_err(EngineError::from)?;
        if let Some(transaction) = transaction.filter(|transaction| transaction.uuid == uuid) {
            return Ok((version.version, transaction));
        }
    }
    Err(ApiError::TransactionNotFound(format!("transaction '{uuid}' of table '{id}' was not found")))
}

/// `{"status", "properties"}` of a committed transaction: the version it read and made,
/// its operation, uuid and the properties its writer attached.
fn describe(version: u64, transaction: &Transaction) -> serde_json::Value {
    let mut properties: HashMap<String, String> =
        transaction.transaction_properties.as_deref().cloned().unwrap_or_default();
    properties.insert("read_version".into(), transaction.read_version.to_string());
    properties.insert("version".into(), version.to_string());
    properties.insert("operation".into(), transaction.operation.name().to_string());
    properties.insert("uuid".into(), transaction.uuid.clone());
    serde_json::json!({ "status": SUCCEEDED, "properties": properties })
}

/// `POST /v1/transaction/{id}/describe`.
pub async fn describe_transaction(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (table, uuid) = parse_id(&id)?;
    let (version, transaction) = find(&state, &table, &uuid).await?;
    Ok(Json(describe(version, &transaction)))
}

/// Body of `alter`: the spec's actions, one kind per entry.
#[derive(Debug, Default, Deserialize)]
pub struct AlterRequest {
    #[serde(default)]
    actions: Vec<AlterAction>,
}

/// One action of `alter`.
#[derive(Debug, Deserialize)]
pub struct AlterAction {
    #[serde(rename = "setStatusAction")]
    set_status: Option<SetStatus>,
    #[serde(rename = "setPropertyAction")]
    set_property: Option<serde_json::Value>,
    #[serde(rename = "unsetPropertyAction")]
    unset_property: Option<serde_json::Value>,
}

/// `setStatusAction`.
#[derive(Debug, Deserialize)]
pub struct SetStatus {
    status: Option<String>,
}

/// `POST /v1/transaction/{id}/alter`: all actions or none; see the module documentation.
pub async fn alter_transaction(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let request: AlterRequest = json_body(&body)?;
    let (table, uuid) = parse_id(&id)?;
    let (version, transaction) = find(&state, &table, &uuid).await?;
    for action in &request.actions {
        if action.set_property.is_some() || action.unset_property.is_some() {
            return Err(ApiError::bad_request(format!(
                "transaction '{uuid}' is committed and its properties cannot change; nothing was altered"
            )));
        }
        let status = action.set_status.as_ref().and_then(|set| set.status.as_deref()).unwrap_or_default();
        if !status.replace('_', "").eq_ignore_ascii_case(SUCCEEDED) {
            return Err(ApiError::bad_request(format!(
                "transaction '{uuid}' is committed ({SUCCEEDED}) and cannot become '{status}'; nothing was altered"
            )));
        }
    }
    Ok(Json(describe(version, &transaction)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_ids_are_a_table_id_and_a_uuid() {
        let (table, uuid) = parse_id("ns$t$6f037270-3111").expect("valid");
        assert_eq!(
            (table.namespace().components(), table.name(), uuid.as_str()),
            (&["ns".to_string()][..], "t", "6f037270-3111")
        );
        let (table, _) = parse_id("t$u").expect("root table");
        assert!(table.namespace().is_root());
        for invalid in ["u", "$u", "t$", "../x$u"] {
            assert!(parse_id(invalid).is_err(), "{invalid}");
        }
    }
}
