//! The contract every crate's error enum fulfils.

use lancefleet_proto::{ErrorCode, ErrorStatus, RetryTarget};

/// An error that knows its service code, and therefore its HTTP status and retry target.
///
/// Each crate has one error enum implementing this; the mapping from codes to
/// transport statuses lives on [`ErrorCode`] only.
pub trait ServiceError: std::error::Error {
    /// The closed code this error maps to.
    fn error_code(&self) -> ErrorCode;

    /// Where retrying can help; derived from the code unless a variant knows better.
    fn retry_target(&self) -> RetryTarget {
        self.error_code().retry_target()
    }

    /// The message shown to clients. Internal faults keep their detail in the logs.
    fn client_message(&self) -> String {
        self.to_string()
    }

    /// The wire form of this error.
    fn to_status(&self) -> ErrorStatus {
        ErrorStatus::with_retry(self.error_code(), self.client_message(), self.retry_target())
    }
}
