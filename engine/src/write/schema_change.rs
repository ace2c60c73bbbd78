//! Schema evolution of a table: add, alter and drop columns, and field metadata. Each
//! change commits a new version; lance rewrites data only for a type cast.

use std::collections::HashMap;
use std::future::Future;

use arrow_schema::{DataType, SchemaRef};
use lance::Dataset;
use lance::arrow::json::JsonDataType;
use lance::dataset::{ColumnAlteration, NewColumnTransform};

use crate::catalog::Catalog;
use crate::error::{EngineError, Result};
use crate::table_id::TableId;

/// New columns and where their values come from.
#[derive(Debug, Clone)]
pub enum NewColumns {
    /// `(name, SQL expression over existing columns)`, computed for every row.
    Expressions(Vec<(String, String)>),
    /// Nullable columns of these fields, null in every row.
    AllNulls(SchemaRef),
}

/// One change of an existing column (a LanceDB `alterations` entry).
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct Alteration {
    /// Path of the column (`a.b` for a nested field).
    pub path: String,
    /// New name.
    pub rename: Option<String>,
    /// New nullability.
    pub nullable: Option<bool>,
    /// New type, in lance's JSON form (`{"type": "int64"}`).
    pub data_type: Option<serde_json::Value>,
}

/// One field's metadata change (a LanceDB `update_field_metadata` entry).
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct FieldMetadataUpdate {
    /// Path of the field.
    pub path: String,
    /// Keys to set; a null value removes the key.
    #[serde(default)]
    pub metadata: HashMap<String, Option<String>>,
    /// Replace the whole map instead of merging into it.
    #[serde(default)]
    pub replace: bool,
}

impl Alteration {
    fn to_lance(&self) -> Result<ColumnAlteration> {
        let mut alteration = ColumnAlteration::new(self.path.clone());
        if let Some(name) = &self.rename {
            alteration = alteration.rename(name.clone());
        }
        if let Some(nullable) = self.nullable {
            alteration = alteration.set_nullable(nullable);
        }
        if let Some(data_type) = &self.data_type {
            alteration = alteration.cast_to(data_type_from_json(data_type)?);
        }
        Ok(alteration)
    }
}

/// The alterations of one `alter_columns` request as lance can commit them at once: when
/// some cast (rewrite) their columns, the others are made rewrites too, as casts to
/// their current type. Lance 14 refuses a commit that rewrites some columns and changes
/// the name or nullability of others without rewriting them.
fn committable(dataset: &Dataset, alterations: &[Alteration]) -> Result<Vec<ColumnAlteration>> {
    let casts = alterations.iter().any(|alteration| alteration.data_type.is_some());
    alterations
        .iter()
        .map(|alteration| {
            let lance = alteration.to_lance()?;
            let field = dataset.schema().field(&alteration.path);
            Ok(match field {
                Some(field) if casts && alteration.data_type.is_none() => lance.cast_to(field.data_type()),
                _ => lance,
            })
        })
        .collect()
}

/// An Arrow type from lance's JSON form.
fn data_type_from_json(value: &serde_json::Value) -> Result<DataType> {
    let invalid = |reason: String| EngineError::invalid_input(format!("invalid data_type {value}: {reason}"));
    let json = serde_json::from_value::<JsonDataType>(value.clone()).map_err(|error| invalid(error.to_string()))?;
    DataType::try_from(&json).map_err(|error| invalid(error.to_string()))
}

impl Catalog {
    /// Runs the schema change `what` of `columns` (refused when it names none) on the
    /// latest version, again after a store failure while nothing landed; the new version.
    async fn change_schema<F, Fut>(&self, id: &TableId, what: &str, columns: &[&str], change: F) -> Result<Dataset>
    where
        F: FnMut(Dataset) -> Fut,
        Fut: Future<Output = Result<Dataset>>,
    {
        if columns.is_empty() {
            return Err(EngineError::invalid_input(format!("{what} needs at least one column")));
        }
        // Boxed: lance's schema-change futures are deep enough to overflow the compiler's
        // layout depth limit in the REST handlers that await them.
        let dataset = Box::pin(self.write_latest(id, what, change)).await?;
        Ok(self.committed(id, dataset).await)
    }

    /// Adds columns; returns the new version.
    pub async fn add_columns(&self, id: &TableId, columns: NewColumns) -> Result<Dataset> {
        let names = match &columns {
            NewColumns::Expressions(pairs) => pairs.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>(),
            NewColumns::AllNulls(schema) => schema.fields().iter().map(|field| field.name().as_str()).collect(),
        };
        self.change_schema(id, "add_columns", &names, |mut dataset| {
            let transform = match &columns {
                NewColumns::Expressions(pairs) => NewColumnTransform::SqlExpressions(pairs.clone()),
                NewColumns::AllNulls(schema) => NewColumnTransform::AllNulls(schema.clone()),
            };
            async move {
                dataset.add_columns(transform, None, None).await?;
                Ok(dataset)
            }
        })
        .await
    }

    /// Renames, changes nullability of, or casts columns in one commit; returns the new
    /// version. Alongside casts, renamed columns and columns whose nullability changes are
    /// rewritten too (see [`committable`]), as LanceDB OSS's older lance did in one commit.
    pub async fn alter_columns(&self, id: &TableId, alterations: &[Alteration]) -> Result<Dataset> {
        let paths = alterations.iter().map(|alteration| alteration.path.as_str()).collect::<Vec<_>>();
        // Malformed types are refused before the table is opened.
        alterations.iter().map(Alteration::to_lance).collect::<Result<Vec<_>>>()?;
        self.change_schema(id, "alter_columns", &paths, |mut dataset| async move {
            let alterations = committable(&dataset, alterations)?;
            dataset.alter_columns(&alterations).await?;
            Ok(dataset)
        })
        .await
    }

    /// Drops columns (metadata only; compaction reclaims the data); returns the new version.
    pub async fn drop_columns(&self, id: &TableId, columns: &[String]) -> Result<Dataset> {
        let columns = columns.iter().map(String::as_str).collect::<Vec<_>>();
        self.change_schema(id, "drop_columns", &columns, |mut dataset| {
            let columns = &columns;
            async move {
                dataset.drop_columns(columns).await?;
                Ok(dataset)
            }
        })
        .await
    }

    /// Sets (or, with a `None` value, removes) keys of the table's schema metadata; returns
    /// the new version. An empty change is refused.
    pub async fn update_schema_metadata(
        &self,
        id: &TableId,
        entries: &HashMap<String, Option<String>>,
    ) -> Result<Dataset> {
        if entries.is_empty() {
            return Err(EngineError::invalid_input("schema_metadata/update needs at least one key"));
        }
        let keys = entries.keys().map(String::as_str).collect::<Vec<_>>();
        self.change_schema(id, "schema_metadata/update", &keys, |mut dataset| async move {
            let entries = entries.iter().map(|(key, value)| (key.clone(), value.clone()));
            dataset.update_schema_metadata(entries).await?;
            Ok(dataset)
        })
        .await
    }

    /// Sets, removes or replaces field metadata; returns the new version.
    pub async fn update_field_metadata(&self, id: &TableId, updates: &[FieldMetadataUpdate]) -> Result<Dataset> {
        let paths = updates.iter().map(|update| update.path.as_str()).collect::<Vec<_>>();
        self.change_schema(id, "update_field_metadata", &paths, |mut dataset| async move {
            let mut builder = dataset.update_field_metadata();
            for update in updates {
                let entries = update.metadata.iter().map(|(key, value)| (key.clone(), value.clone()));
                builder = if update.replace {
                    builder.replace(update.path.as_str(), entries)?
                } else {
                    builder.update(update.path.as_str(), entries)?
                };
            }
            builder.await?;
            Ok(dataset)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_types_come_in_lances_json_form() {
        assert_eq!(data_type_from_json(&serde_json::json!({"type": "int64"})).expect("int64"), DataType::Int64);
        assert_eq!(data_type_from_json(&serde_json::json!({"type": "float"})).expect("float"), DataType::Float32);
        assert!(data_type_from_json(&serde_json::json!({"type": "no-such-type"})).is_err());
        assert!(data_type_from_json(&serde_json::json!("int64")).is_err());
    }
}
