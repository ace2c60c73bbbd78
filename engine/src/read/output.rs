//! Query results as they travel between the engine, executors and the query node.

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

/// The rows a query produced, with their schema (known even when there are no rows).
#[derive(Debug, Clone)]
pub struct QueryOutput {
    /// Schema of every batch.
    pub schema: SchemaRef,
    /// The result rows in order.
    pub batches: Vec<RecordBatch>,
}

impl QueryOutput {
    /// Total number of rows.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}
