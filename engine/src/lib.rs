//! LanceFleet's lance layer, shared by query nodes, plan executors and indexers, by concern:
//!
//! - [`catalog`]: the tables under one storage root (open, pin, list, drop; namespaces,
//!   stats, facts) and weak-read snapshots;
//! - [`read`]: the read path: query, plan, fragment execution, exact merge;
//! - [`write`]: the write path: creates, appends, deletes, updates, `merge_insert`,
//!   schema changes, restores and tags;
//! - [`maintenance`]: compaction, index builds and optimization, cleanup;
//! - [`cache`]: the object cache (foyer, memory and disk) lance reads immutable objects
//!   through; [`store_metrics`]: the object-store requests under it, counted and timed;
//! - [`table_id`]: table and namespace names and where they live.

pub mod cache;
pub mod catalog;
pub mod error;
pub mod maintenance;
pub mod read;
pub mod store_metrics;
pub mod table_id;
pub mod write;

pub use catalog::{Catalog, ReadVersion};
pub use error::{EngineError, NamespaceCode, Result, namespace_code_of};
pub use maintenance::index_spec::{IndexKind, IndexSpec};
pub use read::execute::Scope;
pub use read::output::QueryOutput;
pub use read::plan::{QueryPlan, plan_query};
pub use read::query::TableQuery;
pub use table_id::{Namespace, TableId};
pub use write::{CreateMode, InsertMode};
