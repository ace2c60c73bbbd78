//! The query node's error enum and its HTTP rendering.

use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use datafusion::error::DataFusionError;
use lancefleet_common::ServiceError;
use lancefleet_engine::{EngineError, NamespaceCode, namespace_code_of};
use lancefleet_proto::ErrorCode;

/// The response header that names a failed request's [`ErrorCode`].
pub const ERROR_CODE_HEADER: &str = "x-lancefleet-error-code";

/// The error code of a response that carries only its HTTP `status` (a rejection of the
/// HTTP framework's own, before any handler ran).
pub fn code_of_status(status: StatusCode) -> ErrorCode {
    match status.as_u16() {
        401 => ErrorCode::Unauthenticated,
        403 => ErrorCode::PermissionDenied,
        404 => ErrorCode::NotFound,
        405 | 501 => ErrorCode::NotSupported,
        409 => ErrorCode::Conflict,
        429 | 503 => ErrorCode::Unavailable,
        408 | 504 => ErrorCode::Timeout,
        400..=499 => ErrorCode::InvalidArgument,
        _ => ErrorCode::Internal,
    }
}

/// A failed REST request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The engine refused or failed the operation.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The request body or parameters are malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The route exists in the LanceDB protocol but this server does not implement it.
    #[error("{0}")]
    NotImplemented(String),
    /// The request ran longer than the client allowed.
    #[error("{0}")]
    Timeout(String),
    /// No such route outside the LanceDB API.
    #[error("{0}")]
    RouteNotFound(String),
    /// A result could not be encoded as Arrow.
    #[error("cannot encode the result as Arrow: {0}")]
    Encode(#[from] arrow_schema::ArrowError),
    /// Flight metadata could not be built or encoded.
    #[error("Arrow Flight encoding failed: {0}")]
    Flight(#[from] arrow_flight::error::FlightError),
    /// A blocking task (Arrow encoding or decoding) panicked or was cancelled.
    #[error("background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// A plan executor refused or failed a fragment (after the retry, when one was allowed).
    #[error("executor {node}: {}", status.message)]
    Executor {
        /// The executor's node id.
        node: String,
        /// Its error, with code and retry hint.
        status: lancefleet_proto::ErrorStatus,
    },
    /// The event bus refused a request that depends on it (an index request).
    #[error("event bus unavailable: {0}")]
    Events(#[from] lancefleet_common::events::BusError),
    /// The request carries no valid API key.
    #[error("{0}")]
    Unauthenticated(String),
    /// The API key is valid but does not allow the operation on its target.
    #[error("{0}")]
    Forbidden(String),
    /// DataFusion refused a SQL statement (syntax, unknown column or function, bad types).
    #[error("{0}")]
    Sql(String),
    /// The requested index does not exist.
    #[error("{0}")]
    IndexNotFound(String),
    /// The requested transaction is not among the table's commits.
    #[error("{0}")]
    TransactionNotFound(String),
    /// The node's configuration cannot work.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The node could not start (configuration, etcd, storage root).
    #[error(transparent)]
    Start(#[from] lancefleet_common::StartError),
    /// A broken invariant of the query node.
    #[error("{0}")]
    Internal(String),
    /// The server could not start or keep listening.
    #[error("cannot serve on {address}: {source}")]
    Listen {
        /// The address.
        address: String,
        /// The socket error.
        source: std::io::Error,
    },
}

impl ApiError {
    /// A 400 with `message`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest(message.into())
    }

    /// The Lance Namespace specification's code of this error (the `code` of its body).
    pub fn namespace_code(&self) -> NamespaceCode {
        match self {
            Self::Engine(error) => error.namespace_code(),
            Self::IndexNotFound(_) => NamespaceCode::TableIndexNotFound,
            Self::TransactionNotFound(_) => NamespaceCode::TransactionNotFound,
            Self::RouteNotFound(_) => NamespaceCode::Unsupported,
            other => namespace_code_of(other.error_code()),
        }
    }
}

/// An error answer: `status`, the Lance Namespace specification's JSON `ErrorResponse`
/// (`{"error": message, "code": namespace}`) and `code` in the error-code header.
///
/// The status is LanceDB's, which its clients branch on (an existing table on create is
/// a 400 saying "already exists", not the spec's 409); the body's `code` is the spec's,
/// which the Lance namespace clients branch on (`TableAlreadyExists` = 5). Both kinds of
/// client read the same answer right.
pub fn error_response(status: StatusCode, code: ErrorCode, namespace: NamespaceCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message, "code": namespace.as_u32() });
    let mut response = (status, axum::Json(body)).into_response();
    response.headers_mut().insert(ERROR_CODE_HEADER, HeaderValue::from_static(code.as_str_name()));
    if code == ErrorCode::Unavailable {
        // Overloaded or briefly without executors: worth another try in a moment.
        response.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

impl ServiceError for ApiError {
    fn error_code(&self) -> ErrorCode {
        match self {
            Self::Engine(error) => error.error_code(),
            Self::BadRequest(_) | Self::Sql(_) => ErrorCode::InvalidArgument,
            Self::Unauthenticated(_) => ErrorCode::Unauthenticated,
            Self::Forbidden(_) => ErrorCode::PermissionDenied,
            Self::NotImplemented(_) => ErrorCode::NotSupported,
            Self::RouteNotFound(_) | Self::IndexNotFound(_) | Self::TransactionNotFound(_) => ErrorCode::NotFound,
            Self::Events(_) => ErrorCode::Unavailable,
            Self::Timeout(_) => ErrorCode::Timeout,
            Self::Executor { status, .. } => status.error_code(),
            Self::Encode(_)
            | Self::Flight(_)
            | Self::Task(_)
            | Self::Listen { .. }
            | Self::Config(_)
            | Self::Start(_)
            | Self::Internal(_) => ErrorCode::Internal,
        }
    }

    fn client_message(&self) -> String {
        match self {
            Self::Engine(error) => error.client_message(),
            Self::Executor { status, .. } if status.error_code() != ErrorCode::Internal => status.message.clone(),
            Self::Executor { .. }
            | Self::Encode(_)
            | Self::Flight(_)
            | Self::Task(_)
            | Self::Listen { .. }
            | Self::Config(_)
            | Self::Start(_)
            | Self::Internal(_) => "internal server error; the server log has the details".into(),
            other => other.to_string(),
        }
    }
}

impl From<DataFusionError> for ApiError {
    /// Keeps the typed error a table provider or search function wrapped (a missing
    /// table stays a 404); DataFusion's own planning errors are the statement's fault,
    /// its execution errors are not.
    fn from(error: DataFusionError) -> Self {
        let error = match error {
            DataFusionError::External(external) => match external.downcast::<ApiError>() {
                Ok(api) => return *api,
                Err(external) => match external.downcast::<EngineError>() {
                    Ok(engine) => return Self::Engine(*engine),
                    Err(external) => DataFusionError::External(external),
                },
            },
            DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => return Self::from(*inner),
            DataFusionError::Collection(mut errors) if !errors.is_empty() => return Self::from(errors.swap_remove(0)),
            DataFusionError::Shared(shared) => match Arc::try_unwrap(shared) {
                Ok(inner) => return Self::from(inner),
                Err(shared) => DataFusionError::Shared(shared),
            },
            other => other,
        };
        match error {
            DataFusionError::SQL(..)
            | DataFusionError::Plan(_)
            | DataFusionError::SchemaError(..)
            | DataFusionError::Configuration(_) => Self::Sql(error.strip_backtrace()),
            DataFusionError::NotImplemented(_) => Self::NotImplemented(error.strip_backtrace()),
            DataFusionError::ArrowError(ref arrow, _) if is_arrow_input_error(arrow) => {
                Self::Sql(error.strip_backtrace())
            }
            DataFusionError::ExecutionJoin(join) => Self::Internal(join.to_string()),
            other => Self::Internal(other.strip_backtrace()),
        }
    }
}

/// Arrow errors that a statement's values cause (a cast that fails, a division by zero).
fn is_arrow_input_error(error: &arrow_schema::ArrowError) -> bool {
    use arrow_schema::ArrowError;
    matches!(
        error,
        ArrowError::CastError(_)
            | ArrowError::DivideByZero
            | ArrowError::ArithmeticOverflow(_)
            | ArrowError::ParseError(_)
    )
}

impl From<ApiError> for DataFusionError {
    /// Wraps `error` so that it comes back typed on the other side of DataFusion.
    fn from(error: ApiError) -> Self {
        DataFusionError::External(Box::new(error))
    }
}

impl From<ApiError> for tonic::Status {
    /// The gRPC status a Flight client gets for `error`, logged like a REST error.
    fn from(error: ApiError) -> Self {
        log_failure(&error);
        let status = error.to_status();
        tonic::Status::new(status.grpc_code(), status.message)
    }
}

/// Logs a failed request once: faults as errors, refusals as information.
fn log_failure(error: &ApiError) {
    let code = error.error_code();
    if matches!(code, ErrorCode::Internal | ErrorCode::Unspecified) {
        tracing::error!(%error, code = code.as_str_name(), "request failed");
    } else {
        tracing::info!(%error, code = code.as_str_name(), "request rejected");
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.error_code();
        let status = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        log_failure(&self);
        error_response(status, code, self.namespace_code(), &self.client_message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_errors_keep_their_status() {
        let not_found = ApiError::from(EngineError::TableNotFound { name: "t".into() }).into_response();
        assert_eq!(not_found.status(), StatusCode::NOT_FOUND);
        let exists = ApiError::from(EngineError::TableAlreadyExists { name: "t".into() }).into_response();
        assert_eq!(exists.status(), StatusCode::BAD_REQUEST);
        assert_eq!(ApiError::bad_request("malformed").into_response().status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn typed_errors_survive_datafusion() {
        let missing = ApiError::from(EngineError::TableNotFound { name: "t".into() });
        let wrapped = DataFusionError::Context("planning".into(), Box::new(DataFusionError::from(missing)));
        assert_eq!(ApiError::from(wrapped).error_code(), ErrorCode::NotFound);
        let plan = ApiError::from(DataFusionError::Plan("no column x".into()));
        assert_eq!(plan.error_code(), ErrorCode::InvalidArgument);
        let diagnosed = DataFusionError::Diagnostic(
            Box::new(datafusion::common::Diagnostic::new_error("no column x", None)),
            Box::new(DataFusionError::Plan("no column x".into())),
        );
        assert_eq!(ApiError::from(diagnosed).error_code(), ErrorCode::InvalidArgument);
        let status = tonic::Status::from(ApiError::Unauthenticated("no key".into()));
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn rejections_get_the_code_of_their_status() {
        assert_eq!(code_of_status(StatusCode::METHOD_NOT_ALLOWED), ErrorCode::NotSupported);
        assert_eq!(code_of_status(StatusCode::PAYLOAD_TOO_LARGE), ErrorCode::InvalidArgument);
        assert_eq!(code_of_status(StatusCode::UNSUPPORTED_MEDIA_TYPE), ErrorCode::InvalidArgument);
        assert_eq!(code_of_status(StatusCode::NOT_FOUND), ErrorCode::NotFound);
        assert_eq!(code_of_status(StatusCode::INTERNAL_SERVER_ERROR), ErrorCode::Internal);
    }

    #[tokio::test]
    async fn errors_are_the_specs_json_with_the_code_in_a_header_too() {
        let response = ApiError::bad_request("malformed").into_response();
        assert_eq!(response.headers()["x-lancefleet-error-code"], "ERROR_CODE_INVALID_ARGUMENT");
        assert_eq!(response.headers()[http::header::CONTENT_TYPE], "application/json");
        let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.expect("body");
        let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(body, serde_json::json!({"error": "malformed", "code": 13}));
        let missing_index = ApiError::IndexNotFound("no index idx".into());
        assert_eq!(missing_index.namespace_code(), NamespaceCode::TableIndexNotFound);
        let exists = ApiError::from(EngineError::TableAlreadyExists { name: "t".into() });
        assert_eq!(exists.namespace_code(), NamespaceCode::TableAlreadyExists);
    }
}
