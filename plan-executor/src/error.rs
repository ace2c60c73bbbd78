//! The plan executor's error enum.

use lancefleet_common::ServiceError;
use lancefleet_engine::EngineError;
use lancefleet_proto::{ErrorCode, RetryTarget, WIRE_VERSION};

/// Everything that can stop a plan executor or fail a fragment.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// The engine refused or failed the fragment.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The pinned version could not be opened (shared by every request that waited for it).
    #[error(transparent)]
    Open(std::sync::Arc<EngineError>),
    /// The plan fragment is malformed.
    #[error("{0}")]
    BadPlan(String),
    /// The query node speaks another version of the plan-fragment wire format: another
    /// executor (of its version) may run the fragment.
    #[error("this executor speaks wire version {WIRE_VERSION}, the fragment version {0}")]
    WireVersion(u32),
    /// The executor is at its memory budget and cannot take the fragment now.
    #[error("{0}")]
    Overloaded(String),
    /// The executor could not start.
    #[error(transparent)]
    Start(#[from] lancefleet_common::StartError),
    /// The gRPC server could not start or keep listening.
    #[error("cannot serve on {address}: {source}")]
    Listen {
        /// The address.
        address: String,
        /// The socket error.
        source: std::io::Error,
    },
    /// The gRPC transport failed.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The server task panicked or was cancelled.
    #[error("server task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl ServiceError for ExecutorError {
    fn error_code(&self) -> ErrorCode {
        match self {
            Self::Engine(error) => error.error_code(),
            Self::Open(error) => error.error_code(),
            Self::BadPlan(_) => ErrorCode::InvalidArgument,
            Self::Overloaded(_) => ErrorCode::Unavailable,
            Self::WireVersion(_) => ErrorCode::NotSupported,
            Self::Start(_) | Self::Listen { .. } | Self::Transport(_) | Self::Task(_) => ErrorCode::Internal,
        }
    }

    fn retry_target(&self) -> RetryTarget {
        match self {
            Self::WireVersion(_) => RetryTarget::AnotherNode,
            other => other.error_code().retry_target(),
        }
    }

    fn client_message(&self) -> String {
        match self {
            Self::Engine(error) => error.client_message(),
            Self::Open(error) => error.client_message(),
            other => other.to_string(),
        }
    }
}

impl ExecutorError {
    /// The gRPC status that carries this error to the query node, logged when it is a
    /// fault of this node.
    pub fn into_grpc(self) -> tonic::Status {
        crate::metrics::METRICS.errors.with_label_values(&[self.error_code().as_str_name()]).inc();
        if self.error_code() == ErrorCode::Internal {
            tracing::error!(error = %self, "fragment failed");
        }
        self.to_status().into_grpc()
    }
}
