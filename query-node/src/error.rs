//! The query node's error enum and its HTTP rendering.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use lancefleet_common::ServiceError;
use lancefleet_engine::EngineError;
use lancefleet_proto::ErrorCode;

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
    /// The requested index does not exist.
    #[error("{0}")]
    IndexNotFound(String),
    /// The node's configuration cannot work.
    #[error("invalid configuration: {0}")]
    Config(String),
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
}

impl ServiceError for ApiError {
    fn error_code(&self) -> ErrorCode {
        match self {
            Self::Engine(error) => error.error_code(),
            Self::BadRequest(_) => ErrorCode::InvalidArgument,
            Self::NotImplemented(_) => ErrorCode::NotSupported,
            Self::RouteNotFound(_) | Self::IndexNotFound(_) => ErrorCode::NotFound,
            Self::Events(_) => ErrorCode::Unavailable,
            Self::Timeout(_) => ErrorCode::Timeout,
            Self::Executor { status, .. } => status.error_code(),
            Self::Encode(_) | Self::Task(_) | Self::Listen { .. } | Self::Config(_) | Self::Internal(_) => {
                ErrorCode::Internal
            }
        }
    }

    fn client_message(&self) -> String {
        match self {
            Self::Engine(error) => error.client_message(),
            Self::Executor { status, .. } if status.error_code() != ErrorCode::Internal => status.message.clone(),
            Self::Executor { .. }
            | Self::Encode(_)
            | Self::Task(_)
            | Self::Listen { .. }
            | Self::Config(_)
            | Self::Internal(_) => "internal server error; the server log has the details".into(),
            other => other.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.error_code();
        let status = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if matches!(code, ErrorCode::Internal | ErrorCode::Unspecified) {
            tracing::error!(error = %self, code = code.as_str_name(), "request failed");
        } else {
            tracing::info!(error = %self, code = code.as_str_name(), "request rejected");
        }
        let mut response = (status, self.client_message()).into_response();
        response.headers_mut().insert("x-lancefleet-error-code", HeaderValue::from_static(code.as_str_name()));
        response
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
    fn error_code_travels_in_a_header() {
        let response = ApiError::bad_request("malformed").into_response();
        assert_eq!(response.headers()["x-lancefleet-error-code"], "ERROR_CODE_INVALID_ARGUMENT");
    }
}
