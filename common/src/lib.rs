//! Building blocks every LanceFleet role uses: typed configuration, logging,
//! shutdown, the service-error trait and storage locations.

pub mod config;
pub mod error;
pub mod membership;
pub mod metrics;
pub mod placement;
pub mod shutdown;
pub mod storage;
pub mod telemetry;

pub use error::ServiceError;
pub use shutdown::Shutdown;
