//! Behaviour of [`ErrorCode`] and [`ErrorStatus`]: the one place that maps codes to HTTP
//! statuses, gRPC codes and retry targets, and reads an error off a gRPC status.

use crate::v1::{ErrorCode, ErrorStatus, RetryTarget};

impl ErrorCode {
    /// Every code a LanceFleet node sends (all but `Unspecified`).
    pub const ALL: [ErrorCode; 10] = [
        ErrorCode::InvalidArgument,
        ErrorCode::NotFound,
        ErrorCode::AlreadyExists,
        ErrorCode::Conflict,
        ErrorCode::Unavailable,
        ErrorCode::Timeout,
        ErrorCode::NotSupported,
        ErrorCode::Internal,
        ErrorCode::Unauthenticated,
        ErrorCode::PermissionDenied,
    ];

    /// The HTTP status of this code in the LanceDB REST dialect.
    ///
    /// `AlreadyExists` is 400, not 409: the LanceDB clients recognise "already exists"
    /// only on a 400, and they *retry* every 409 (see
    /// `shared/reference/lancedb-rest-protocol.md` §1.4 and §3.1.3).
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidArgument | ErrorCode::AlreadyExists => 400,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::PermissionDenied => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict => 409,
            ErrorCode::NotSupported => 501,
            ErrorCode::Unavailable => 503,
            ErrorCode::Timeout => 504,
            ErrorCode::Unspecified | ErrorCode::Internal => 500,
        }
    }

    /// Where a request that failed with this code may be sent again, unless the error
    /// knows better (a timed-out fragment may go to another executor at once).
    pub fn retry_target(self) -> RetryTarget {
        match self {
            ErrorCode::Conflict => RetryTarget::SameNode,
            ErrorCode::Unavailable => RetryTarget::AnotherNode,
            ErrorCode::Unspecified
            | ErrorCode::InvalidArgument
            | ErrorCode::NotFound
            | ErrorCode::AlreadyExists
            | ErrorCode::Timeout
            | ErrorCode::NotSupported
            | ErrorCode::Unauthenticated
            | ErrorCode::PermissionDenied
            | ErrorCode::Internal => RetryTarget::None,
        }
    }
}

impl ErrorStatus {
    /// Builds the wire form of an error with the code's default retry target.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::with_retry(code, message, code.retry_target())
    }

    /// Builds the wire form of an error that may be retried at `retry`.
    pub fn with_retry(code: ErrorCode, message: impl Into<String>, retry: RetryTarget) -> Self {
        let retry = match retry {
            RetryTarget::Unspecified => RetryTarget::None,
            retry => retry,
        };
        Self { code: code as i32, message: message.into(), retryable: retry != RetryTarget::None, retry: retry as i32 }
    }

    /// A fragment (or a call) that ran out of time: another node may answer it now.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::with_retry(ErrorCode::Timeout, message, RetryTarget::AnotherNode)
    }

    /// The code, degrading unknown values (a newer peer) to `Internal`.
    pub fn error_code(&self) -> ErrorCode {
        ErrorCode::try_from(self.code).unwrap_or(ErrorCode::Internal)
    }

    /// Where the request may be retried. A peer older than the field sent only the
    /// `retryable` flag, which meant "on another node"; a value this version does not
    /// know is read as no retry.
    pub fn retry_target(&self) -> RetryTarget {
        match RetryTarget::try_from(self.retry) {
            Ok(RetryTarget::Unspecified) if self.retryable => RetryTarget::AnotherNode,
            Ok(RetryTarget::Unspecified) | Err(_) => RetryTarget::None,
            Ok(retry) => retry,
        }
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
            ErrorCode::PermissionDenied => tonic::Code::PermissionDenied,
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
    /// peer sent it. A status without details comes from the transport: the peer down,
    /// restarting, a connection reset mid-stream, a passed deadline. The peer never judged
    /// the request, so another node may well answer it. Details that do not decode are a
    /// peer's fault (or a version this one cannot read): `Internal`, not retried.
    pub fn from_grpc(status: &tonic::Status) -> Self {
        let message = format!("{}: {}", status.code().description(), status.message());
        if !status.details().is_empty() {
            return match <Self as prost::Message>::decode(status.details()) {
                Ok(decoded) if decoded.code != ErrorCode::Unspecified as i32 => decoded,
                _ => Self::new(ErrorCode::Internal, format!("undecodable error from a peer ({message})")),
            };
        }
        match status.code() {
            tonic::Code::DeadlineExceeded => Self::timeout(message),
            _ => Self::with_retry(ErrorCode::Unavailable, message, RetryTarget::AnotherNode),
        }
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
    fn only_transient_codes_are_retried_and_each_says_where() {
        assert_eq!(ErrorCode::Conflict.retry_target(), RetryTarget::SameNode);
        assert_eq!(ErrorCode::Unavailable.retry_target(), RetryTarget::AnotherNode);
        assert_eq!(ErrorCode::InvalidArgument.retry_target(), RetryTarget::None);
        assert_eq!(ErrorCode::Timeout.retry_target(), RetryTarget::None, "a client's own deadline");
        assert_eq!(ErrorStatus::timeout("slow").retry_target(), RetryTarget::AnotherNode, "a fragment's");
        assert_eq!(ErrorStatus::timeout("slow").error_code(), ErrorCode::Timeout);
    }

    #[test]
    fn error_status_round_trips_and_degrades_unknown_codes() {
        let status = ErrorStatus::new(ErrorCode::NotFound, "table 't' was not found");
        let decoded = ErrorStatus::decode(status.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(decoded, status);
        assert_eq!(decoded.error_code(), ErrorCode::NotFound);
        assert_eq!(decoded.retry_target(), RetryTarget::None);

        let from_newer_peer = ErrorStatus { code: 999, message: String::new(), retryable: false, retry: 99 };
        assert_eq!(from_newer_peer.error_code(), ErrorCode::Internal);
        assert_eq!(from_newer_peer.retry_target(), RetryTarget::None);
    }

    #[test]
    fn a_peer_without_the_retry_target_is_read_by_its_flag() {
        let old = ErrorStatus { code: ErrorCode::Unavailable as i32, message: "x".into(), retryable: true, retry: 0 };
        assert_eq!(old.retry_target(), RetryTarget::AnotherNode);
        let old = ErrorStatus { retryable: false, ..old };
        assert_eq!(old.retry_target(), RetryTarget::None);
        let new = ErrorStatus::new(ErrorCode::Conflict, "lost the race");
        assert!(new.retryable, "older peers still hear that it may be retried");
    }

    #[test]
    fn error_status_crosses_grpc_with_code_and_retry_target() {
        let sent = ErrorStatus::new(ErrorCode::InvalidArgument, "bad filter");
        let status = sent.clone().into_grpc();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(ErrorStatus::from_grpc(&status), sent);

        let unreachable = ErrorStatus::from_grpc(&tonic::Status::unavailable("connection refused"));
        assert_eq!(unreachable.error_code(), ErrorCode::Unavailable);
        assert_eq!(unreachable.retry_target(), RetryTarget::AnotherNode);
        let reset = ErrorStatus::from_grpc(&tonic::Status::unknown("h2 protocol error: connection reset"));
        assert_eq!(reset.retry_target(), RetryTarget::AnotherNode, "a transport failure may succeed elsewhere");
        let garbage = tonic::Status::with_details(tonic::Code::Internal, "?", bytes_of(&[0xff, 0xff, 0xff]));
        let garbage = ErrorStatus::from_grpc(&garbage);
        assert_eq!((garbage.error_code(), garbage.retry_target()), (ErrorCode::Internal, RetryTarget::None));
        let deadline = ErrorStatus::from_grpc(&tonic::Status::deadline_exceeded("late"));
        assert_eq!((deadline.error_code(), deadline.retry_target()), (ErrorCode::Timeout, RetryTarget::AnotherNode));
        let sent = ErrorStatus::new(ErrorCode::Internal, "disk full");
        assert_eq!(ErrorStatus::from_grpc(&sent.into_grpc()).retry_target(), RetryTarget::None);
    }

    fn bytes_of(bytes: &[u8]) -> prost::bytes::Bytes {
        prost::bytes::Bytes::copy_from_slice(bytes)
    }
}
