//! Behaviour of [`ErrorCode`]: the one place that maps codes to HTTP statuses and retry hints.

use crate::v1::{ErrorCode, ErrorStatus};

/// Whether repeating a failed request can help. No retry is the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryHint {
    /// The same request may succeed later or on another node.
    Retryable,
    /// Repeating the request gives the same answer.
    NonRetryable,
}

impl ErrorCode {
    /// The HTTP status of this code in the LanceDB REST dialect.
    ///
    /// `AlreadyExists` is 400, not 409: the LanceDB clients recognise "already exists"
    /// only on a 400, and they *retry* every 409 (see
    /// `shared/reference/lancedb-rest-protocol.md` §1.4 and §3.1.3).
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidArgument | ErrorCode::AlreadyExists => 400,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict => 409,
            ErrorCode::NotSupported => 501,
            ErrorCode::Unavailable => 503,
            ErrorCode::Timeout => 504,
            ErrorCode::Unspecified | ErrorCode::Internal => 500,
        }
    }

    /// Whether a request that failed with this code may succeed when sent again.
    pub fn retry_hint(self) -> RetryHint {
        match self {
            ErrorCode::Conflict | ErrorCode::Unavailable => RetryHint::Retryable,
            ErrorCode::Unspecified
            | ErrorCode::InvalidArgument
            | ErrorCode::NotFound
            | ErrorCode::AlreadyExists
            | ErrorCode::Timeout
            | ErrorCode::NotSupported
            | ErrorCode::Unauthenticated
            | ErrorCode::Internal => RetryHint::NonRetryable,
        }
    }
}

impl ErrorStatus {
    /// Builds the wire form of an error with the code's default retry hint.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code: code as i32, message: message.into(), retryable: code.retry_hint() == RetryHint::Retryable }
    }

    /// The code, degrading unknown values (a newer peer) to `Internal`.
    pub fn error_code(&self) -> ErrorCode {
        ErrorCode::try_from(self.code).unwrap_or(ErrorCode::Internal)
    }

    /// The gRPC code generic clients see for this error.
    pub fn grpc_code(&self) -> tonic::Code {
        match self.error_code() {
            ErrorCode::InvalidArgument => tonic::Code::InvalidArgument,
            ErrorCode::NotFound => tonic::Code::NotFound,
            ErrorCode::AlreadyExists => tonic::Code::AlreadyExists,
            ErrorCode::Conflict => tonic::Code::Aborted,
            ErrorCode::Unavailable => tonic::Code::Unavailable,
            ErrorCode::Timeout => tonic::Code::DeadlineExceeded,
            ErrorCode::NotSupported => tonic::Code::Unimplemented,
            ErrorCode::Unauthenticated => tonic::Code::Unauthenticated,
            ErrorCode::Unspecified | ErrorCode::Internal => tonic::Code::Internal,
        }
    }

    /// The gRPC status that carries this error between LanceFleet nodes: the matching
    /// gRPC code, and this message, encoded, in the status details. (Outside clients get
    /// a plain status instead: their gRPC libraries read details as `google.rpc.Status`.)
    pub fn into_grpc(self) -> tonic::Status {
        let details = prost::Message::encode_to_vec(&self);
        tonic::Status::with_details(self.grpc_code(), self.message, details.into())
    }

    /// The error a gRPC status carries: the `ErrorStatus` in its details when a LanceFleet
    /// peer sent it. A status without one comes from the transport (peer down, restarting,
    /// connection reset mid-stream, deadline passed): the peer never judged the request,
    /// so another node may well answer it and the error is retryable.
    pub fn from_grpc(status: &tonic::Status) -> Self {
        if let Ok(decoded) = <Self as prost::Message>::decode(status.details())
            && decoded.code != ErrorCode::Unspecified as i32
        {
            return decoded;
        }
        let code = match status.code() {
            tonic::Code::DeadlineExceeded => ErrorCode::Timeout,
            _ => ErrorCode::Unavailable,
        };
        let message = format!("{}: {}", status.code().description(), status.message());
        Self { code: code as i32, message, retryable: true }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn client_visible_statuses_follow_the_lancedb_dialect() {
        assert_eq!(ErrorCode::InvalidArgument.http_status(), 400);
        assert_eq!(ErrorCode::AlreadyExists.http_status(), 400);
        assert_eq!(ErrorCode::NotFound.http_status(), 404);
        assert_eq!(ErrorCode::Internal.http_status(), 500);
        assert_eq!(ErrorCode::Unavailable.http_status(), 503);
    }

    #[test]
    fn only_transient_codes_are_retryable() {
        assert_eq!(ErrorCode::Conflict.retry_hint(), RetryHint::Retryable);
        assert_eq!(ErrorCode::Unavailable.retry_hint(), RetryHint::Retryable);
        assert_eq!(ErrorCode::InvalidArgument.retry_hint(), RetryHint::NonRetryable);
        assert_eq!(ErrorCode::Timeout.retry_hint(), RetryHint::NonRetryable);
    }

    #[test]
    fn error_status_round_trips_and_degrades_unknown_codes() {
        let status = ErrorStatus::new(ErrorCode::NotFound, "table 't' was not found");
        let decoded = ErrorStatus::decode(status.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(decoded, status);
        assert_eq!(decoded.error_code(), ErrorCode::NotFound);
        assert!(!decoded.retryable);

        let from_newer_peer = ErrorStatus { code: 999, message: String::new(), retryable: false };
        assert_eq!(from_newer_peer.error_code(), ErrorCode::Internal);
    }

    #[test]
    fn error_status_crosses_grpc_with_code_and_retry_hint() {
        let sent = ErrorStatus::new(ErrorCode::InvalidArgument, "bad filter");
        let status = sent.clone().into_grpc();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(ErrorStatus::from_grpc(&status), sent);

        let unreachable = tonic::Status::unavailable("connection refused");
        let received = ErrorStatus::from_grpc(&unreachable);
        assert_eq!(received.error_code(), ErrorCode::Unavailable);
        assert!(received.retryable);
        let reset = ErrorStatus::from_grpc(&tonic::Status::unknown("h2 protocol error: connection reset"));
        assert!(reset.retryable, "a transport failure may succeed on another node");
        let sent = ErrorStatus::new(ErrorCode::Internal, "disk full");
        assert!(!ErrorStatus::from_grpc(&sent.into_grpc()).retryable);
    }
}
