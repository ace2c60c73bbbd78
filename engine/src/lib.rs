//! LanceFleet's lance layer, shared by query nodes and plan executors: the table catalog,
//! the query type clients send, and its execution with lance's scanner.

pub mod catalog;
pub mod error;
pub mod query;
pub mod search;
pub mod table_id;

pub use catalog::{Catalog, CreateMode, InsertMode, ReadVersion};
pub use error::{EngineError, Result};
pub use query::TableQuery;
pub use search::{QueryOutput, run_query};
pub use table_id::{Namespace, TableId};
