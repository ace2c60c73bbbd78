//! The indexer's error enum.

use lancefleet_common::ServiceError;
use lancefleet_common::events::BusError;
use lancefleet_engine::EngineError;
use lancefleet_proto::ErrorCode;

/// Everything that can fail a maintenance turn or stop the indexer.
#[derive(Debug, thiserror::Error)]
pub enum IndexerError {
    /// Reading or maintaining a table failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The event bus failed.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The indexer could not start.
    #[error(transparent)]
    Start(#[from] lancefleet_common::StartError),
    /// A maintenance job panicked (a bug, in lance or here); its table is tried again
    /// after a backoff.
    #[error("maintenance panicked: {0}")]
    Panicked(String),
    /// The metrics endpoint could not start.
    #[error("cannot serve on {address}: {source}")]
    Listen {
        /// The address.
        address: String,
        /// The socket error.
        source: std::io::Error,
    },
}

impl ServiceError for IndexerError {
    fn error_code(&self) -> ErrorCode {
        match self {
            Self::Engine(error) => error.error_code(),
            Self::Bus(_) => ErrorCode::Unavailable,
            Self::Start(_) | Self::Listen { .. } | Self::Panicked(_) => ErrorCode::Internal,
        }
    }
}

impl IndexerError {
    /// Whether writers' concurrent commits made lance refuse ours: the round is dropped
    /// and re-planned, nothing was changed.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Engine(error) if error.is_commit_conflict())
    }

    /// Whether retrying cannot help (the request itself is wrong).
    pub fn is_permanent(&self) -> bool {
        matches!(self.error_code(), ErrorCode::InvalidArgument | ErrorCode::NotSupported | ErrorCode::NotFound)
    }
}
