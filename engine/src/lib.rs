//! LanceFleet's lance layer, shared by query nodes and plan executors: the table catalog,
//! the query type clients send, its compilation into fragment queries, their execution with
//! lance's scanner, and the merge of partial results.

pub mod cache;
pub mod catalog;
pub mod error;
pub mod execute;
pub mod index_spec;
pub mod maintenance;
pub mod merge;
pub mod merge_insert;
pub mod namespaces;
pub mod output;
pub mod plan;
pub mod query;
pub mod schema_change;
pub mod stats;
pub mod table_id;
pub mod vector_column;
pub mod versions;

pub use catalog::{Catalog, CreateMode, InsertMode, ReadVersion};
pub use error::{EngineError, Result};
pub use execute::Scope;
pub use index_spec::{IndexKind, IndexSpec};
pub use output::QueryOutput;
pub use plan::{QueryPlan, plan_query};
pub use query::TableQuery;
pub use table_id::{Namespace, TableId};
