//! Which column a vector query searches, and what kind of vectors it holds.

use arrow_schema::{DataType, Field, Schema};
use lancefleet_proto::v1::VectorKind;

use crate::error::{EngineError, Result};

/// The vector column a query searches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VectorColumn {
    /// Column name.
    pub name: String,
    /// Values per vector.
    pub dimension: usize,
    /// Float, binary or multivector.
    pub kind: VectorKind,
}

/// The vector column `field` is, if it is one: `FixedSizeList<float>`,
/// `FixedSizeList<uint8>` (binary) or `List<FixedSizeList<float>>` (multivector).
pub fn vector_column_of(field: &Field) -> Option<VectorColumn> {
    let (kind, dimension) = match field.data_type() {
        DataType::FixedSizeList(item, size) if item.data_type().is_floating() => (VectorKind::Float, *size),
        DataType::FixedSizeList(item, size) if item.data_type() == &DataType::UInt8 => (VectorKind::Binary, *size),
        DataType::List(inner) | DataType::LargeList(inner) => match inner.data_type() {
            DataType::FixedSizeList(item, size) if item.data_type().is_floating() => (VectorKind::Multi, *size),
            _ => return None,
        },
        _ => return None,
    };
    Some(VectorColumn { name: field.name().clone(), dimension: usize::try_from(dimension).ok()?, kind })
}

/// Picks the column to search: the named one, or the only vector column whose dimension
/// matches the query, with an error that says what is wrong otherwise.
pub fn resolve_vector_column(schema: &Schema, requested: Option<&str>, dimension: usize) -> Result<VectorColumn> {
    let columns = schema.fields().iter().filter_map(|field| vector_column_of(field)).collect::<Vec<_>>();
    if let Some(name) = requested {
        let Ok(field) = schema.field_with_name(name) else {
            return Err(EngineError::invalid_input(format!("vector column '{name}' does not exist")));
        };
        let column = vector_column_of(field)
            .ok_or_else(|| EngineError::invalid_input(format!("column '{name}' is not a vector column")))?;
        column.check_dimension(dimension)?;
        return Ok(column);
    }
    let mut matching = columns.iter().filter(|column| column.dimension == dimension);
    match (matching.next(), matching.next()) {
        (Some(column), None) => Ok(column.clone()),
        (Some(first), Some(second)) => Err(EngineError::invalid_input(format!(
            "more than one vector column has dimension {dimension} ('{}', '{}'); set vector_column",
            first.name, second.name
        ))),
        (None, _) => match columns.as_slice() {
            [] => Err(EngineError::invalid_input("the table has no vector column")),
            [only] => only.check_dimension(dimension).map(|()| only.clone()),
            _ => Err(EngineError::invalid_input(format!("no vector column has dimension {dimension}"))),
        },
    }
}

impl VectorColumn {
    /// Fails unless a query vector of `dimension` values fits this column.
    pub fn check_dimension(&self, dimension: usize) -> Result<()> {
        if dimension == self.dimension {
            return Ok(());
        }
        Err(EngineError::invalid_input(format!(
            "query vector has dimension {dimension} but vector column '{}' has dimension {}",
            self.name, self.dimension
        )))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn vector_field(name: &str, item: DataType, size: i32) -> Field {
        Field::new(name, DataType::FixedSizeList(Arc::new(Field::new("item", item, true)), size), true)
    }

    #[test]
    fn the_only_vector_column_of_matching_dimension_is_chosen() {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            vector_field("small", DataType::Float32, 4),
            vector_field("large", DataType::Float32, 8),
        ]);
        assert_eq!(resolve_vector_column(&schema, None, 8).expect("found").name, "large");
        assert_eq!(resolve_vector_column(&schema, Some("small"), 4).expect("found").name, "small");
        let error = resolve_vector_column(&schema, None, 5).expect_err("no match");
        assert!(error.to_string().contains("no vector column has dimension 5"), "{error}");
        let error = resolve_vector_column(&schema, Some("id"), 4).expect_err("not a vector");
        assert!(error.to_string().contains("not a vector column"), "{error}");
    }

    #[test]
    fn wrong_dimension_names_both_sizes() {
        let schema = Schema::new(vec![vector_field("vector", DataType::Float32, 16)]);
        let error = resolve_vector_column(&schema, None, 15).expect_err("mismatch");
        assert_eq!(error.to_string(), "query vector has dimension 15 but vector column 'vector' has dimension 16");
        let error = resolve_vector_column(&schema, Some("missing"), 16).expect_err("missing");
        assert!(error.to_string().contains("does not exist"), "{error}");
    }

    #[test]
    fn ambiguous_columns_ask_for_vector_column() {
        let schema =
            Schema::new(vec![vector_field("a", DataType::Float32, 4), vector_field("b", DataType::Float16, 4)]);
        let error = resolve_vector_column(&schema, None, 4).expect_err("ambiguous");
        assert!(error.to_string().contains("set vector_column"), "{error}");
    }

    #[test]
    fn binary_and_multivector_columns_are_recognised() {
        let binary = vector_field("bits", DataType::UInt8, 8);
        assert_eq!(vector_column_of(&binary).expect("vector").kind, VectorKind::Binary);
        let multi = Field::new("multi", DataType::List(Arc::new(vector_field("item", DataType::Float32, 4))), true);
        let column = vector_column_of(&multi).expect("vector");
        assert_eq!((column.kind, column.dimension), (VectorKind::Multi, 4));
        assert!(vector_column_of(&Field::new("text", DataType::Utf8, true)).is_none());
    }
}
