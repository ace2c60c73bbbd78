//! The Arrow Flight data plane: tables as flights.
//!
//! - `DoPut` with a path descriptor `[table]` appends the streamed batches; `[table, mode]`
//!   names the mode: `append`, `overwrite` or `create`. Nothing is held whole: batches go
//!   to storage as they arrive, and the one `PutResult` comes after the commit, with
//!   `{"version": N, "rows": M}` (JSON) as its app metadata. A failed stream commits nothing.
//! - `DoGet` with a JSON ticket: the body of the REST `query` route plus `"table"`, e.g.
//!   `{"table": "items", "vector": [0.1, 0.2], "k": 10, "filter": "price < 5"}`.
//! - `GetFlightInfo` and `GetSchema` with a path `[table]`, and `ListFlights`: every table's
//!   schema and row count, with a ticket that scans it.

use std::sync::{Arc, Mutex};

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::{
    FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, PutResult, SchemaAsIpc, SchemaResult, Ticket,
};
use arrow_ipc::writer::IpcWriteOptions;
use arrow_schema::Schema;
use datafusion::error::DataFusionError;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::{Stream, StreamExt, TryStreamExt};
use lancefleet_engine::{InsertMode, ReadVersion, TableId, TableQuery};
use serde_json::{Value, json};
use tonic::Status;

use super::{Answers, decode_batches};
use crate::auth::{self, Access, Target};
use crate::error::ApiError;
use crate::request;
use crate::sql::all_namespaces;
use crate::state::AppState;

/// The key of a JSON ticket that names the table.
const TABLE_KEY: &str = "table";

/// Whether `ticket` is a data-plane query (JSON) rather than a Flight SQL ticket.
pub fn is_json_ticket(ticket: &Ticket) -> bool {
    ticket.ticket.iter().find(|byte| !byte.is_ascii_whitespace()) == Some(&b'{')
}

/// The table and the write mode a `DoPut` path names.
pub fn put_target(descriptor: &FlightDescriptor) -> Result<(TableId, InsertMode), ApiError> {
    let (table, mode) = match descriptor.path.as_slice() {
        [table] => (table, "append"),
        [table, mode] => (table, mode.as_str()),
        _ => {
            return Err(ApiError::bad_request(
                "a DoPut path is [table] or [table, mode] with mode append, overwrite or create",
            ));
        }
    };
    let mode = match mode {
        "append" => InsertMode::Append,
        "overwrite" => InsertMode::Overwrite,
        "create" => InsertMode::Create,
        other => {
            return Err(ApiError::bad_request(format!(
                "unknown DoPut mode '{other}'; use append, overwrite or create"
            )));
        }
    };
    Ok((TableId::parse(table)?, mode))
}

/// Writes the record batches of `flight` (Arrow Flight data, the schema first) into
/// table `id`: the new version and the rows written. Malformed data fails the write
/// before anything is committed, as a bad request.
pub async fn write_flight<S>(
    state: &AppState,
    id: &TableId,
    mode: InsertMode,
    flight: S,
) -> Result<(u64, u64), ApiError>
where
    S: Stream<Item = Result<FlightData, Status>> + Send + 'static,
{
    let mut batches = decode_batches(flight, state.limits.max_upload_bytes());
    let first = batches.next().await.transpose().map_err(|error| stream_error(&error))?;
    let schema =
        batches.schema().cloned().ok_or_else(|| ApiError::bad_request("the DoPut stream carries no Arrow schema"))?;
    // The decoder's error, kept so that the client hears it rather than lance's wrapping.
    let decode_error: Arc<Mutex<Option<ApiError>>> = Arc::default();
    let seen = decode_error.clone();
    let rest = batches.map_err(move |error| {
        let api = stream_error(&error);
        let message = api.to_string();
        if let Ok(mut slot) = seen.lock() {
            slot.get_or_insert(api);
        }
        DataFusionError::Execution(message)
    });
    let rows = futures::stream::iter(first.map(Ok)).chain(rest);
    let stream = Box::pin(RecordBatchStreamAdapter::new(schema, rows));
    match state.write_stream(id, stream, mode).await {
        Ok((dataset, rows)) => Ok((dataset.version().version, rows)),
        Err(error) => Err(decode_error.lock().ok().and_then(|mut slot| slot.take()).unwrap_or(error)),
    }
}

/// A data stream that broke off (the client went away) or that the decoder could not read.
fn stream_error(error: &FlightError) -> ApiError {
    match error {
        FlightError::Tonic(status) => {
            ApiError::bad_request(format!("the DoPut stream broke off: {}", status.message()))
        }
        other => ApiError::bad_request(format!("malformed Arrow Flight data: {other}")),
    }
}

/// `DoPut` to a table path: one `PutResult` after the commit.
pub async fn do_put<S>(
    state: &AppState,
    descriptor: &FlightDescriptor,
    flight: S,
) -> Result<Answers<PutResult>, ApiError>
where
    S: Stream<Item = Result<FlightData, Status>> + Send + 'static,
{
    let (id, mode) = put_target(descriptor)?;
    auth::require(Access::Write, &Target::Table(id.clone()))?;
    let (version, rows) = write_flight(state, &id, mode, flight).await?;
    let acknowledgement = json!({ "version": version, "rows": rows }).to_string();
    let result = PutResult { app_metadata: acknowledgement.into_bytes().into() };
    Ok(futures::stream::once(async { Ok(result) }).boxed())
}

/// `DoGet` of a JSON ticket: the query's answer as Flight data, streamed as it comes.
pub async fn do_get(state: &AppState, ticket: &Ticket) -> Result<Answers<FlightData>, ApiError> {
    let (id, query) = parse_ticket(&ticket.ticket)?;
    auth::require(Access::Read, &Target::Table(id.clone()))?;
    let read = ReadVersion { version: query.version, ..ReadVersion::default() };
    let (_, answer) = state.run_query(&id, read, &query).await?;
    let rows = request::within(request::current_deadline(), answer.rows);
    let batches = rows.map_err(|error| FlightError::Tonic(Box::new(Status::from(error))));
    let data = FlightDataEncoderBuilder::new().with_schema(answer.schema).build(batches).map_err(Status::from);
    Ok(data.boxed())
}

/// The table and query of a JSON ticket.
fn parse_ticket(ticket: &[u8]) -> Result<(TableId, TableQuery), ApiError> {
    let mut body = match serde_json::from_slice::<Value>(ticket) {
        Ok(Value::Object(body)) => body,
        Ok(_) => return Err(ApiError::bad_request("a JSON ticket is an object")),
        Err(error) => return Err(ApiError::bad_request(format!("the ticket is not valid JSON: {error}"))),
    };
    let Some(Value::String(table)) = body.remove(TABLE_KEY) else {
        return Err(ApiError::bad_request("a JSON ticket names its table: {\"table\": \"name\", ...query}"));
    };
    let query = serde_json::from_value::<TableQuery>(Value::Object(body))
        .map_err(|error| ApiError::bad_request(format!("invalid query in the ticket: {error}")))?;
    Ok((TableId::parse(&table)?, query))
}

/// The table a `GetFlightInfo` or `GetSchema` path names, if the caller may read it.
fn described_table(descriptor: &FlightDescriptor) -> Result<TableId, ApiError> {
    let id = match descriptor.path.as_slice() {
        [table] => TableId::parse(table)?,
        _ => return Err(ApiError::bad_request("a table path is [table]")),
    };
    auth::require(Access::Read, &Target::Table(id.clone()))?;
    Ok(id)
}

/// A table's schema.
pub async fn table_schema(state: &AppState, descriptor: &FlightDescriptor) -> Result<SchemaResult, ApiError> {
    let id = described_table(descriptor)?;
    let dataset = state.catalog.open_table(&id, ReadVersion::default()).await?;
    let schema = Schema::from(dataset.schema());
    Ok(SchemaAsIpc::new(&schema, &IpcWriteOptions::default()).try_into()?)
}

/// A table as a flight: schema, rows, and a ticket that scans it.
pub async fn flight_info(state: &AppState, descriptor: FlightDescriptor) -> Result<FlightInfo, ApiError> {
    let id = described_table(&descriptor)?;
    table_flight(state, &id, descriptor).await
}

async fn table_flight(state: &AppState, id: &TableId, descriptor: FlightDescriptor) -> Result<FlightInfo, ApiError> {
    let dataset = state.catalog.open_table(id, ReadVersion::default()).await?;
    let rows = dataset.count_rows(None).await.map_err(lancefleet_engine::EngineError::from)?;
    let ticket = json!({ TABLE_KEY: id.to_string(), "version": dataset.version().version }).to_string();
    let endpoint = FlightEndpoint::new().with_ticket(Ticket::new(ticket));
    Ok(FlightInfo::new()
        .try_with_schema(&Schema::from(dataset.schema()))?
        .with_descriptor(descriptor)
        .with_endpoint(endpoint)
        .with_total_records(i64::try_from(rows).unwrap_or(i64::MAX))
        .with_ordered(true))
}

/// Every table of every namespace as a flight.
pub async fn list_flights(state: &AppState) -> Result<Vec<FlightInfo>, ApiError> {
    let mut flights = Vec::new();
    for namespace in all_namespaces(state).await? {
        for name in state.visible_tables(&namespace).await? {
            let id = TableId::new(namespace.clone(), &name)?;
            let descriptor = FlightDescriptor::new_path(vec![id.to_string()]);
            flights.push(table_flight(state, &id, descriptor).await?);
        }
    }
    Ok(flights)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_paths_name_table_and_mode() {
        let target =
            |path: &[&str]| put_target(&FlightDescriptor::new_path(path.iter().map(|p| p.to_string()).collect()));
        let (id, mode) = target(&["items"]).expect("append");
        assert_eq!((id.to_string().as_str(), mode), ("items", InsertMode::Append));
        assert_eq!(target(&["ns$items", "overwrite"]).expect("overwrite").1, InsertMode::Overwrite);
        assert_eq!(target(&["items", "create"]).expect("create").1, InsertMode::Create);
        assert!(target(&["items", "upsert"]).is_err());
        assert!(target(&["../etc"]).is_err());
        assert!(target(&[]).is_err());
    }

    #[test]
    fn tickets_are_query_bodies_with_a_table() {
        assert!(is_json_ticket(&Ticket::new(" {\"table\": \"t\"}")));
        assert!(!is_json_ticket(&Ticket::new(vec![0x0a, 0x01])));
        let (id, query) = parse_ticket(br#"{"table": "t", "vector": [1.0, 2.0], "k": 3}"#).expect("valid");
        assert_eq!(id.to_string(), "t");
        assert_eq!(query.k, Some(3));
        assert!(parse_ticket(br#"{"vector": [1.0]}"#).is_err(), "no table");
        assert!(parse_ticket(br#"{"table": "t", "k": "ten"}"#).is_err(), "bad query");
        assert!(parse_ticket(b"[1]").is_err());
    }
}
