//! The write path: table creation, appends and overwrites (streamed, committed after
//! the last batch), deletes, updates, `merge_insert`, schema changes, restores and tags,
//! dropping indexes. Every write starts from the latest version and is acknowledged only
//! after lance's commit; the catalog then serves the new version to this node's reads.

pub(crate) mod commit;
pub(crate) mod commit_handler;
pub mod merge_insert;
pub mod schema_change;
pub mod versions;

use std::sync::Arc;

use arrow_array::{RecordBatch, RecordBatchIterator};
use arrow_schema::SchemaRef;
use lance::Dataset;
use lance::dataset::{InsertBuilder, UpdateBuilder, WriteDestination, WriteMode};
use lance::deps::datafusion::execution::SendableRecordBatchStream;
use lance::deps::datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use lance::index::DatasetIndexExt;

use self::commit::commit_exactly_once;
use crate::catalog::Catalog;
use crate::error::{EngineError, Result};
use crate::table_id::TableId;

/// How `create_table` treats an existing table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateMode {
    /// Fail with "already exists".
    Create,
    /// Replace its data and schema (a new version).
    Overwrite,
    /// Keep it and succeed if its schema equals the new one.
    ExistOk,
}

/// How `insert` combines new rows with the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertMode {
    /// Add the rows.
    Append,
    /// Replace all rows (a new version).
    Overwrite,
    /// Make a new table of the rows; an existing table is an error.
    Create,
}

impl Catalog {
    /// Creates a table from `batches`; see [`CreateMode`] for an existing table.
    ///
    /// The data is complete and validated before anything is written.
    pub async fn create_table(
        &self,
        id: &TableId,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
        mode: CreateMode,
    ) -> Result<Dataset> {
        if mode != CreateMode::Overwrite {
            match self.load(id, None).await {
                Ok(existing) => return existing_table_for_create(id, existing, &schema, mode),
                Err(EngineError::TableNotFound { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        let write_mode = match mode {
            CreateMode::Overwrite => WriteMode::Overwrite,
            CreateMode::Create | CreateMode::ExistOk => WriteMode::Create,
        };
        let (uri, declared) = self.new_table_uri(id).await?;
        let reader = RecordBatchIterator::new(batches.into_iter().map(Ok), schema.clone());
        match Dataset::write(reader, uri.as_str(), Some(self.write_params(write_mode))).await {
            Ok(dataset) => Ok(self.committed(id, dataset).await),
            // Another request created it between our check and our commit.
            Err(lance::Error::DatasetAlreadyExists { .. }) => {
                let existing = self.load(id, None).await?;
                existing_table_for_create(id, existing, &schema, mode)
            }
            Err(error) => {
                if declared {
                    self.undeclare(id).await;
                }
                Err(error.into())
            }
        }
    }

    /// Appends rows to, or overwrites, an existing table (or creates one, see
    /// [`InsertMode`]); returns the new version.
    pub async fn insert(
        &self,
        id: &TableId,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
        mode: InsertMode,
    ) -> Result<Dataset> {
        let stream = RecordBatchStreamAdapter::new(schema, futures::stream::iter(batches.into_iter().map(Ok)));
        self.insert_stream(id, Box::pin(stream), mode).await
    }

    /// Like [`Self::insert`], but writes the rows as `stream` yields them, never holding the
    /// whole upload. The commit comes after the last batch: a stream that fails midway, or
    /// rows whose schema the table does not have, leave the table at its version.
    pub async fn insert_stream(
        &self,
        id: &TableId,
        stream: SendableRecordBatchStream,
        mode: InsertMode,
    ) -> Result<Dataset> {
        let written = match mode {
            InsertMode::Create => {
                let (uri, declared) = self.new_table_uri(id).await?;
                let params = self.write_params(WriteMode::Create);
                match InsertBuilder::new(uri.as_str()).with_params(&params).execute_stream(stream).await {
                    Ok(dataset) => dataset,
                    Err(lance::Error::DatasetAlreadyExists { .. }) => {
                        return Err(EngineError::TableAlreadyExists { name: id.to_string() });
                    }
                    Err(error) => {
                        if declared {
                            self.undeclare(id).await;
                        }
                        return Err(error.into());
                    }
                }
            }
            InsertMode::Append | InsertMode::Overwrite => {
                let dataset = Arc::new(self.load(id, None).await?);
                let write_mode = if mode == InsertMode::Append { WriteMode::Append } else { WriteMode::Overwrite };
                let params = self.write_params(write_mode);
                let transaction = InsertBuilder::new(WriteDestination::Dataset(dataset.clone()))
                    .with_params(&params)
                    .execute_uncommitted_stream(stream)
                    .await?;
                commit_exactly_once(dataset, transaction).await?
            }
        };
        Ok(self.committed(id, written).await)
    }

    /// Deletes the rows matching `predicate`; returns how many and the new dataset.
    pub async fn delete_rows(&self, id: &TableId, predicate: &str) -> Result<(u64, Dataset)> {
        let (deleted, dataset) = self
            .write_latest(id, "a delete", |mut dataset| async move {
                let result = dataset.delete(predicate).await?;
                Ok((result.num_deleted_rows, Arc::unwrap_or_clone(result.new_dataset)))
            })
            .await?;
        Ok((deleted, self.committed(id, dataset).await))
    }

    /// Sets `updates` (column, SQL expression) on the rows matching `predicate` (every row
    /// when `None`); returns how many rows changed and the new dataset.
    pub async fn update_rows(
        &self,
        id: &TableId,
        predicate: Option<&str>,
        updates: &[(String, String)],
    ) -> Result<(u64, Dataset)> {
        if updates.is_empty() {
            return Err(EngineError::invalid_input("update needs at least one column to set"));
        }
        let (updated, dataset) = self
            .write_latest(id, "an update", |dataset| async move {
                // lance calls an unknown column invalid input; the spec has a code for it.
                let schema = dataset.schema();
                if let Some(unknown) = updates.iter().find(|(column, _)| schema.field(column).is_none()) {
                    let names = schema.fields.iter().map(|field| field.name.clone()).collect();
                    return Err(lance::Error::field_not_found(&unknown.0, names).into());
                }
                let mut builder = UpdateBuilder::new(Arc::new(dataset));
                if let Some(predicate) = predicate {
                    builder = builder.update_where(predicate)?;
                }
                for (column, expression) in updates {
                    builder = builder.set(column, expression)?;
                }
                let result = builder.build()?.execute().await?;
                Ok((result.rows_updated, Arc::unwrap_or_clone(result.new_dataset)))
            })
            .await?;
        Ok((updated, self.committed(id, dataset).await))
    }

    /// Drops the index `name`; returns the new version.
    pub async fn drop_index(&self, id: &TableId, name: &str) -> Result<Dataset> {
        let dataset = self
            .write_latest(id, "dropping an index", |mut dataset| async move {
                dataset.drop_index(name).await?;
                Ok(dataset)
            })
            .await?;
        Ok(self.committed(id, dataset).await)
    }
}

/// What `create` does when the table exists: fail, or (exist_ok) keep it if the schema matches.
fn existing_table_for_create(id: &TableId, existing: Dataset, schema: &SchemaRef, mode: CreateMode) -> Result<Dataset> {
    let existing_schema = arrow_schema::Schema::from(existing.schema());
    match mode {
        CreateMode::ExistOk if fields_match(&existing_schema, schema) => Ok(existing),
        CreateMode::ExistOk => {
            Err(EngineError::invalid_input(format!("Table '{id}' already exists with a different schema")))
        }
        CreateMode::Create | CreateMode::Overwrite => Err(EngineError::TableAlreadyExists { name: id.to_string() }),
    }
}

/// Whether two schemas have the same fields (names, types, nullability), ignoring metadata.
fn fields_match(left: &arrow_schema::Schema, right: &arrow_schema::Schema) -> bool {
    left.fields().len() == right.fields().len()
        && left.fields().iter().zip(right.fields().iter()).all(|(a, b)| {
            a.name() == b.name() && a.data_type().equals_datatype(b.data_type()) && a.is_nullable() == b.is_nullable()
        })
}
