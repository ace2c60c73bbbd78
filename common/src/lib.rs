//! Building blocks every LanceFleet role uses: typed configuration, logging,
//! shutdown, the service-error trait, storage locations, placement, membership
//! (static, or followed from the etcd control plane) and the table event bus.

pub mod cluster_state;
pub mod config;
pub mod error;
pub mod etcd;
pub mod etcd_bus;
pub mod events;
pub mod membership;
pub mod metrics;
pub mod node;
pub mod placement;
pub mod process_metrics;
pub mod shutdown;
pub mod storage;
pub mod telemetry;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;
pub mod tls;

pub use error::ServiceError;
pub use node::{NodeContext, Presence, StartError};
pub use shutdown::Shutdown;
