//! The control plane's error enum.

use lancefleet_common::etcd::EtcdError;
use lancefleet_common::{ServiceError, StartError};
use lancefleet_proto::ErrorCode;

/// Everything that can stop a control-plane instance.
#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    /// etcd could not be reached or refused a request.
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    /// The instance could not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The HTTP endpoint could not start or keep listening.
    #[error("cannot serve on {address}: {source}")]
    Listen {
        /// The address.
        address: String,
        /// The socket error.
        source: std::io::Error,
    },
}

impl ServiceError for ControlPlaneError {
    fn error_code(&self) -> ErrorCode {
        match self {
            Self::Etcd(_) => ErrorCode::Unavailable,
            Self::Start(_) | Self::Listen { .. } => ErrorCode::Internal,
        }
    }
}
