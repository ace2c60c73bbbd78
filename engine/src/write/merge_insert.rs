//! Upserts: lance's merge insert with every clause a LanceDB client can send.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{Schema, SchemaRef};
use lance::Dataset;
use lance::dataset::{MergeInsertBuilder, WhenMatched, WhenNotMatched, WhenNotMatchedBySource};

use crate::catalog::Catalog;
use crate::error::{EngineError, Result};
use crate::table_id::TableId;

/// What a merge insert does with matched, unmatched and target-only rows (the query
/// string of `POST /v1/table/{id}/merge_insert/`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MergeInsertSpec {
    /// Key columns that match source rows with target rows.
    pub on: Vec<String>,
    /// Replace matched target rows with their source rows.
    pub when_matched_update_all: bool,
    /// Only where this SQL condition (over `target.` and `source.` columns) holds.
    pub when_matched_update_all_filter: Option<String>,
    /// Insert source rows that match no target row.
    pub when_not_matched_insert_all: bool,
    /// Delete target rows that match no source row.
    pub when_not_matched_by_source_delete: bool,
    /// Only where this SQL condition (over target columns) holds.
    pub when_not_matched_by_source_delete_filter: Option<String>,
    /// Whether a scalar index on the key may speed up the join.
    pub use_index: bool,
}

/// Rows a merge insert changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MergeOutcome {
    /// Source rows inserted.
    pub inserted: u64,
    /// Target rows replaced.
    pub updated: u64,
    /// Target rows deleted.
    pub deleted: u64,
    /// Commit attempts lance needed.
    pub attempts: u32,
}

impl MergeInsertSpec {
    /// Checks the keys against the table and the source, before anything is read or written.
    fn validate(&self, table: &Schema, source: &Schema) -> Result<()> {
        if self.on.is_empty() {
            return Err(EngineError::invalid_input("merge_insert needs at least one key column in 'on'"));
        }
        for key in &self.on {
            if table.field_with_name(key).is_err() {
                return Err(EngineError::invalid_input(format!(
                    "merge key '{key}' is not a column of the table (columns: {})",
                    column_names(table)
                )));
            }
            if source.field_with_name(key).is_err() {
                return Err(EngineError::invalid_input(format!("merge key '{key}' is not a column of the new data")));
            }
        }
        if !self.when_matched_update_all && self.when_matched_update_all_filter.is_some() {
            return Err(EngineError::invalid_input("when_matched_update_all_filt needs when_matched_update_all=true"));
        }
        if !self.when_not_matched_by_source_delete && self.when_not_matched_by_source_delete_filter.is_some() {
            return Err(EngineError::invalid_input(
                "when_not_matched_by_source_delete_filt needs when_not_matched_by_source_delete=true",
            ));
        }
        Ok(())
    }

    fn builder(&self, dataset: Arc<Dataset>) -> Result<MergeInsertBuilder> {
        let when_matched = match (&self.when_matched_update_all, &self.when_matched_update_all_filter) {
            (false, _) => WhenMatched::DoNothing,
            (true, None) => WhenMatched::UpdateAll,
            (true, Some(condition)) => WhenMatched::update_if(&dataset, condition)?,
        };
        let when_not_matched =
            if self.when_not_matched_insert_all { WhenNotMatched::InsertAll } else { WhenNotMatched::DoNothing };
        let by_source = match (&self.when_not_matched_by_source_delete, &self.when_not_matched_by_source_delete_filter)
        {
            (false, _) => WhenNotMatchedBySource::Keep,
            (true, None) => WhenNotMatchedBySource::Delete,
            (true, Some(condition)) => WhenNotMatchedBySource::delete_if(&dataset, condition)?,
        };
        let mut builder = MergeInsertBuilder::try_new(dataset, self.on.clone())?;
        builder
            .when_matched(when_matched)
            .when_not_matched(when_not_matched)
            .when_not_matched_by_source(by_source)
            .use_index(self.use_index)
            // Old versions are cleaned by maintenance, never inline in a client's write.
            .skip_auto_cleanup(true);
        Ok(builder)
    }
}

fn column_names(schema: &Schema) -> String {
    schema.fields().iter().map(|field| field.name().as_str()).collect::<Vec<_>>().join(", ")
}

impl Catalog {
    /// Merges `batches` into the latest version of a table as `spec` says; returns what
    /// changed and the new version.
    pub async fn merge_insert(
        &self,
        id: &TableId,
        spec: &MergeInsertSpec,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    ) -> Result<(MergeOutcome, Dataset)> {
        let batches = if batches.is_empty() { vec![RecordBatch::new_empty(schema.clone())] } else { batches };
        let (outcome, merged) = self
            .write_latest(id, "a merge_insert", |dataset| {
                let (schema, batches) = (schema.clone(), batches.clone());
                async move {
                    spec.validate(&Schema::from(dataset.schema()), &schema)?;
                    let job = spec.builder(Arc::new(dataset))?.try_build()?;
                    let (merged, stats) = job.execute_batches(batches).await?;
                    let outcome = MergeOutcome {
                        inserted: stats.num_inserted_rows,
                        updated: stats.num_updated_rows,
                        deleted: stats.num_deleted_rows,
                        attempts: stats.num_attempts,
                    };
                    Ok((outcome, Arc::unwrap_or_clone(merged)))
                }
            })
            .await?;
        Ok((outcome, self.committed(id, merged).await))
    }
}

#[cfg(test)]
mod tests {
    use arrow_schema::{DataType, Field};

    use super::*;

    #[test]
    fn keys_must_exist_on_both_sides() {
        let table = Schema::new(vec![Field::new("id", DataType::Int64, false), Field::new("x", DataType::Utf8, true)]);
        let source = Schema::new(vec![Field::new("id", DataType::Int64, false)]);
        let spec =
            |on: &[&str]| MergeInsertSpec { on: on.iter().map(|key| key.to_string()).collect(), ..Default::default() };
        assert!(spec(&["id"]).validate(&table, &source).is_ok());
        assert!(spec(&[]).validate(&table, &source).is_err());
        assert!(spec(&["nope"]).validate(&table, &source).is_err());
        assert!(spec(&["x"]).validate(&table, &source).is_err(), "key missing from the new data");
        let orphan = MergeInsertSpec { when_matched_update_all_filter: Some("true".into()), ..spec(&["id"]) };
        assert!(orphan.validate(&table, &source).is_err());
    }
}
