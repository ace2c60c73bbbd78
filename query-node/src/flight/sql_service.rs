//! Flight SQL: statements and prepared statements planned by DataFusion over every table,
//! the catalog commands, SQL info, and ADBC bulk ingest into tables.
//!
//! Prepared statements are stateless, as the query node is: the handle carries the SQL
//! text and, once bound, the parameter row (Arrow IPC), so any query node can run it.

use arrow_array::RecordBatch;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult,
    Any, CommandGetCatalogs, CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables,
    CommandPreparedStatementQuery, CommandStatementIngest, CommandStatementQuery, CommandStatementUpdate,
    DoPutPreparedStatementResult, ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::sql::{TableExistsOption, TableNotExistOption};
use arrow_flight::{
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage, SchemaAsIpc, Ticket,
};
use arrow_ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow_schema::{Field, Schema};
use base64::Engine;
use base64::alphabet::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use datafusion::common::{ParamValues, ScalarValue};
use futures::{StreamExt, TryStreamExt};
use lancefleet_engine::{EngineError, InsertMode, Namespace, ReadVersion, TableId};
use prost::Message;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use super::{Answers, data, decode_batches, is_table_path};
use crate::auth::{self, Access, Target, presented_key};
use crate::error::ApiError;
use crate::sql::{CATALOG_NAME, SqlEngine, all_namespaces, schema_name, schema_namespace};
use crate::state::AppState;

/// A prepared statement, as its handle carries it.
#[derive(Clone, PartialEq, Message)]
struct PreparedHandle {
    /// The statement.
    #[prost(string, tag = "1")]
    sql: String,
    /// The bound parameter row as an Arrow IPC stream; empty when none is bound.
    #[prost(bytes = "vec", tag = "2")]
    parameters: Vec<u8>,
}

/// What a bound parameter row may decompress to.
const MAX_PARAMETER_BYTES: usize = 64 << 20;

impl PreparedHandle {
    fn decode_handle(handle: &[u8]) -> Result<Self, ApiError> {
        Self::decode(handle).map_err(|_| ApiError::bad_request("not a prepared statement handle of this server"))
    }

    /// The bound parameters as DataFusion's positional values.
    fn parameter_values(&self) -> Result<Option<ParamValues>, ApiError> {
        if self.parameters.is_empty() {
            return Ok(None);
        }
        let batches = crate::arrow_body::read_ipc_stream(&self.parameters, MAX_PARAMETER_BYTES)?.batches;
        let Some(row) = batches.iter().find(|batch| batch.num_rows() > 0) else { return Ok(None) };
        let values = row
            .columns()
            .iter()
            .map(|column| ScalarValue::try_from_array(column, 0))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ApiError::from)?;
        Ok(Some(ParamValues::from(values)))
    }
}

/// The Flight SQL service of a query node.
pub struct FlightSql {
    state: AppState,
    engine: SqlEngine,
    info: SqlInfoData,
}

impl FlightSql {
    /// Flight SQL over the tables of `state`.
    pub fn new(state: AppState) -> Result<Self, ApiError> {
        Ok(Self { engine: SqlEngine::new(state.clone()), state, info: sql_info()? })
    }

    /// Plans the statement of `handle` and streams its answer.
    async fn run(&self, handle: &PreparedHandle) -> Result<Answers<arrow_flight::FlightData>, ApiError> {
        let frame = self.engine.plan(&handle.sql, handle.parameter_values()?).await?;
        let stream = frame.execute_stream().await?;
        let schema = stream.schema();
        let batches = stream.map_err(|error| FlightError::Tonic(Box::new(Status::from(ApiError::from(error)))));
        Ok(FlightDataEncoderBuilder::new().with_schema(schema).build(batches).map_err(Status::from).boxed())
    }

    /// The answer schema of the statement of `handle`: the optimized physical plan's, which
    /// is what its answer carries (the logical plan's may differ in nullability, e.g. for a
    /// constant expression folded into a literal, and clients check the two agree).
    async fn answer_schema(&self, handle: &PreparedHandle) -> Result<Schema, ApiError> {
        let frame = self.engine.plan(&handle.sql, handle.parameter_values()?).await?;
        Ok(frame.create_physical_plan().await?.schema().as_ref().clone())
    }

    /// Bulk ingest of `flight` into the table `command` names: the rows written.
    async fn ingest(&self, command: CommandStatementIngest, flight: PeekableFlightDataStream) -> Result<i64, ApiError> {
        if command.temporary || command.transaction_id.is_some() {
            return Err(ApiError::NotImplemented("temporary tables and transactions are not supported".into()));
        }
        let namespace = match command.schema.as_deref() {
            None | Some("") => Namespace::root(),
            Some(schema) => schema_namespace(schema)?,
        };
        let id = TableId::new(namespace, &command.table)?;
        auth::require(Access::Write, &Target::Table(id.clone()))?;
        let options = command.table_definition_options.unwrap_or_default();
        let exists = match self.state.catalog.open_table(&id, ReadVersion::default()).await {
            Ok(_) => true,
            Err(EngineError::TableNotFound { .. }) => false,
            Err(error) => return Err(error.into()),
        };
        let mode = match (exists, options.if_exists(), options.if_not_exist()) {
            (true, TableExistsOption::Append, _) => InsertMode::Append,
            (true, TableExistsOption::Replace, _) => InsertMode::Overwrite,
            (true, _, _) => return Err(EngineError::TableAlreadyExists { name: id.to_string() }.into()),
            (false, _, TableNotExistOption::Fail) => {
                return Err(EngineError::TableNotFound { name: id.to_string() }.into());
            }
            (false, _, _) => InsertMode::Create,
        };
        let (_, rows) = data::write_flight(&self.state, &id, mode, flight).await?;
        Ok(i64::try_from(rows).unwrap_or(i64::MAX))
    }
}

/// The flight of a Flight SQL command answered by one `DoGet` on this server: its answer
/// schema, and `ticket` (the command itself, or a statement handle).
fn command_flight(
    schema: &Schema,
    request: Request<FlightDescriptor>,
    ticket: &impl ProstMessageExt,
) -> Result<Response<FlightInfo>, Status> {
    let endpoint = FlightEndpoint::new().with_ticket(Ticket::new(ticket.as_any().encode_to_vec()));
    let info = FlightInfo::new().try_with_schema(schema).map_err(ApiError::from)?;
    Ok(Response::new(info.with_descriptor(request.into_inner()).with_endpoint(endpoint)))
}

/// One batch as a Flight answer.
fn batch_answer(batch: RecordBatch) -> Response<Answers<arrow_flight::FlightData>> {
    let schema = batch.schema();
    let batches = futures::stream::once(async { Ok(batch) });
    Response::new(FlightDataEncoderBuilder::new().with_schema(schema).build(batches).map_err(Status::from).boxed())
}

impl std::fmt::Debug for FlightSql {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("FlightSql").field("engine", &self.engine).finish_non_exhaustive()
    }
}

/// What `CommandGetSqlInfo` answers.
fn sql_info() -> Result<SqlInfoData, ApiError> {
    let mut builder = SqlInfoDataBuilder::new();
    builder.append(SqlInfo::FlightSqlServerName, "LanceFleet");
    builder.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    builder.append(SqlInfo::FlightSqlServerArrowVersion, "58");
    // SQL is read-only; writes arrive as bulk ingest or the data plane's DoPut.
    builder.append(SqlInfo::FlightSqlServerReadOnly, true);
    builder.append(SqlInfo::FlightSqlServerSql, true);
    builder.append(SqlInfo::FlightSqlServerSubstrait, false);
    builder.append(SqlInfo::FlightSqlServerTransaction, 0_i32);
    builder.append(SqlInfo::FlightSqlServerCancel, false);
    builder.append(SqlInfo::FlightSqlServerBulkIngestion, true);
    builder.append(SqlInfo::FlightSqlServerIngestTransactionsSupported, false);
    builder.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    builder.append(SqlInfo::SqlDdlCatalog, false);
    builder.append(SqlInfo::SqlDdlSchema, false);
    builder.append(SqlInfo::SqlDdlTable, false);
    Ok(builder.build()?)
}

/// Base64 with or without padding: Go clients (ADBC) send basic credentials unpadded.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The credential a handshake carries: a bearer token or API key as such, or the
/// password of HTTP basic authentication (`user:KEY`), in any `authorization` value.
fn handshake_key(metadata: &tonic::metadata::MetadataMap) -> Option<String> {
    if let Some(key) = presented_key(metadata.as_ref()).filter(|key| !key.is_empty()) {
        return Some(key.to_string());
    }
    metadata.get_all("authorization").iter().find_map(|value| {
        let (scheme, encoded) = value.to_str().ok()?.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let decoded = String::from_utf8(BASE64.decode(encoded.trim()).ok()?).ok()?;
        decoded.split_once(':').map(|(_user, password)| password.to_string())
    })
}

#[tonic::async_trait]
impl FlightSqlService for FlightSql {
    type FlightService = Self;

    /// Checks the key a client presents and hands it back as the bearer token of its
    /// later calls.
    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Answers<HandshakeResponse>>, Status> {
        let key = handshake_key(request.metadata());
        match &key {
            Some(key) => drop(self.state.auth.authenticate_key(key)?),
            None if self.state.auth.is_open() => {}
            None => return Err(ApiError::Unauthenticated("the handshake carries no API key".into()).into()),
        }
        let token = key.unwrap_or_default();
        let answer = HandshakeResponse { protocol_version: 0, payload: token.clone().into() };
        let mut response = Response::new(futures::stream::once(async { Ok(answer) }).boxed());
        if !token.is_empty() {
            let bearer = MetadataValue::try_from(format!("Bearer {token}"))
                .map_err(|_| Status::invalid_argument("the API key is not a valid header value"))?;
            response.metadata_mut().insert("authorization", bearer);
        }
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let handle = PreparedHandle { sql: query.query, parameters: Vec::new() };
        let schema = self.answer_schema(&handle).await?;
        let ticket = TicketStatementQuery { statement_handle: handle.encode_to_vec().into() };
        command_flight(&schema, request, &ticket)
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<Answers<arrow_flight::FlightData>>, Status> {
        let handle = PreparedHandle::decode_handle(&ticket.statement_handle)?;
        Ok(Response::new(self.run(&handle).await?))
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        _request: Request<arrow_flight::Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let handle = PreparedHandle { sql: query.query, parameters: Vec::new() };
        let frame = self.engine.plan(&handle.sql, None).await?;
        let mut parameters =
            frame.logical_plan().get_parameter_types().map_err(ApiError::from)?.into_iter().collect::<Vec<_>>();
        parameters.sort_by_key(|(name, _)| name.trim_start_matches('$').parse::<usize>().unwrap_or(usize::MAX));
        // A parameter whose type the plan leaves open is announced as Null: clients bind
        // what they have, and DataFusion casts it where the statement needs it.
        let fields = parameters
            .into_iter()
            .map(|(name, data_type)| Field::new(name, data_type.unwrap_or(arrow_schema::DataType::Null), true))
            .collect::<Vec<_>>();
        let options = IpcWriteOptions::default();
        let IpcMessage(dataset_schema) =
            SchemaAsIpc::new(frame.schema().as_arrow(), &options).try_into().map_err(ApiError::from)?;
        let IpcMessage(parameter_schema) =
            SchemaAsIpc::new(&Schema::new(fields), &options).try_into().map_err(ApiError::from)?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.encode_to_vec().into(),
            dataset_schema,
            parameter_schema,
        })
    }

    /// Nothing to free: the handle is the statement.
    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        _request: Request<arrow_flight::Action>,
    ) -> Result<(), Status> {
        Ok(())
    }

    /// Binds the first row of the streamed parameters: the answer is a new handle that
    /// carries it.
    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let mut handle = PreparedHandle::decode_handle(&query.prepared_statement_handle)?;
        let mut stream = decode_batches(request.into_inner(), MAX_PARAMETER_BYTES);
        let mut batches = Vec::new();
        while let Some(batch) = stream.next().await {
            batches.push(batch.map_err(|error| ApiError::bad_request(format!("malformed parameters: {error}")))?);
        }
        let rows = batches.iter().map(RecordBatch::num_rows).sum::<usize>();
        if rows > 1 {
            return Err(ApiError::bad_request(format!(
                "a query binds one parameter row, got {rows}; run it once per row"
            ))
            .into());
        }
        handle.parameters = match (stream.schema(), batches.first()) {
            (Some(schema), Some(_)) => {
                let mut writer = StreamWriter::try_new(Vec::new(), schema).map_err(ApiError::from)?;
                for batch in &batches {
                    writer.write(batch).map_err(ApiError::from)?;
                }
                writer.into_inner().map_err(ApiError::from)?
            }
            _ => Vec::new(),
        };
        Ok(DoPutPreparedStatementResult { prepared_statement_handle: Some(handle.encode_to_vec().into()) })
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let handle = PreparedHandle::decode_handle(&query.prepared_statement_handle)?;
        command_flight(&self.answer_schema(&handle).await?, request, &query)
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<Answers<arrow_flight::FlightData>>, Status> {
        let handle = PreparedHandle::decode_handle(&query.prepared_statement_handle)?;
        Ok(Response::new(self.run(&handle).await?))
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        command_flight(&query.into_builder().schema(), request, &query)
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        _request: Request<Ticket>,
    ) -> Result<Response<Answers<arrow_flight::FlightData>>, Status> {
        let mut builder = query.into_builder();
        builder.append(CATALOG_NAME);
        Ok(batch_answer(builder.build().map_err(ApiError::from)?))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        command_flight(&query.clone().into_builder().schema(), request, &query)
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        _request: Request<Ticket>,
    ) -> Result<Response<Answers<arrow_flight::FlightData>>, Status> {
        let mut builder = query.into_builder();
        for namespace in all_namespaces(&self.state).await? {
            builder.append(CATALOG_NAME, schema_name(&namespace));
        }
        Ok(batch_answer(builder.build().map_err(ApiError::from)?))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        command_flight(&query.clone().into_builder().schema(), request, &query)
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        _request: Request<Ticket>,
    ) -> Result<Response<Answers<arrow_flight::FlightData>>, Status> {
        let mut builder = query.into_builder();
        let with_schemas = builder.include_schema();
        for namespace in all_namespaces(&self.state).await? {
            for name in self.state.visible_tables(&namespace).await? {
                let schema = if with_schemas {
                    let id = TableId::new(namespace.clone(), &name).map_err(ApiError::from)?;
                    let dataset =
                        self.state.catalog.open_table(&id, ReadVersion::default()).await.map_err(ApiError::from)?;
                    Schema::from(dataset.schema())
                } else {
                    Schema::empty()
                };
                builder
                    .append(CATALOG_NAME, schema_name(&namespace), &name, "TABLE", &schema)
                    .map_err(ApiError::from)?;
            }
        }
        Ok(batch_answer(builder.build().map_err(ApiError::from)?))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        command_flight(&query.into_builder().schema(), request, &query)
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<Answers<arrow_flight::FlightData>>, Status> {
        let mut builder = query.into_builder();
        builder.append("TABLE");
        Ok(batch_answer(builder.build().map_err(ApiError::from)?))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        command_flight(&query.clone().into_builder(&self.info).schema(), request, &query)
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<Answers<arrow_flight::FlightData>>, Status> {
        Ok(batch_answer(query.into_builder(&self.info).build().map_err(ApiError::from)?))
    }

    async fn do_put_statement_update(
        &self,
        _command: CommandStatementUpdate,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(ApiError::NotImplemented(
            "SQL statements are read-only; write with bulk ingest (adbc_ingest) or a DoPut to the table's path".into(),
        )
        .into())
    }

    /// ADBC bulk ingest (`adbc_ingest`): creates, appends to or replaces a table as the
    /// table definition options say.
    async fn do_put_statement_ingest(
        &self,
        command: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Ok(self.ingest(command, request.into_inner()).await?)
    }

    /// A `DoPut` whose descriptor is a table path: the data plane.
    async fn do_put_fallback(
        &self,
        request: Request<PeekableFlightDataStream>,
        message: Any,
    ) -> Result<Response<Answers<arrow_flight::PutResult>>, Status> {
        let mut stream = request.into_inner();
        let descriptor = match std::pin::Pin::new(&mut stream).peek().await {
            Some(Ok(first)) => first.flight_descriptor.clone(),
            _ => None,
        };
        match descriptor {
            Some(descriptor) if is_table_path(&descriptor) => {
                Ok(Response::new(data::do_put(&self.state, &descriptor, stream).await?))
            }
            _ => Err(ApiError::bad_request(format!(
                "DoPut needs a table path descriptor ([table] or [table, mode]) or a Flight SQL command, got '{}'",
                message.type_url
            ))
            .into()),
        }
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn handshakes_carry_keys_in_either_form() {
        let mut metadata = tonic::metadata::MetadataMap::new();
        metadata.insert("authorization", MetadataValue::from_static("Basic dTpzZWNyZXQ"));
        assert_eq!(handshake_key(&metadata).as_deref(), Some("secret"), "unpadded, as Go sends it");
        metadata.insert("authorization", MetadataValue::from_static("Basic dTpzZWNyZXQ="));
        assert_eq!(handshake_key(&metadata).as_deref(), Some("secret"));
        metadata.insert("authorization", MetadataValue::from_static("Bearer k"));
        assert_eq!(handshake_key(&metadata).as_deref(), Some("k"));
        assert_eq!(handshake_key(&tonic::metadata::MetadataMap::new()), None);
    }

    #[test]
    fn prepared_handles_carry_their_parameters() {
        let batch =
            RecordBatch::try_from_iter([("a", Arc::new(arrow_array::Int64Array::from(vec![7])) as _)]).expect("batch");
        let mut writer = StreamWriter::try_new(Vec::new(), &batch.schema()).expect("writer");
        writer.write(&batch).expect("write");
        let handle = PreparedHandle { sql: "SELECT $1".into(), parameters: writer.into_inner().expect("bytes") };
        let decoded = PreparedHandle::decode_handle(&handle.encode_to_vec()).expect("decodes");
        assert_eq!(decoded, handle);
        let Some(ParamValues::List(values)) = decoded.parameter_values().expect("values") else { panic!("a list") };
        assert_eq!(values.len(), 1);
        assert_eq!(values[0].value, ScalarValue::Int64(Some(7)));
        assert!(PreparedHandle::decode_handle(b"\xff\xff garbage").is_err());
    }
}
