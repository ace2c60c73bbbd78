//! Search from SQL: `vector_search(table, vector, k, filter)` and
//! `fts(table, query, k, filter)` are table functions whose rows are the search's answer
//! (with `_distance` or `_score`), so a statement can filter, join and aggregate them.
//!
//! Each call runs the same search as the REST `query` route (distributed and merged
//! exactly), when the statement is planned. `k` defaults to 10; `filter` is a SQL
//! predicate applied before the search. A full-text `query` is plain text searched in every
//! indexed column, or a lance structured query in JSON (`{"match": {...}}`).

use std::sync::Arc;

use arrow_array::{Array, Float32Array, RecordBatch, RecordBatchOptions};
use arrow_schema::{DataType, Schema};
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::datasource::MemTable;
use datafusion::error::Result;
use datafusion::logical_expr::Expr;
use lancefleet_engine::{ReadVersion, TableId, TableQuery};
use serde_json::{Value, json};

use super::block_on;
use crate::error::ApiError;
use crate::state::AppState;

/// Which search a function runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SearchKind {
    Vector,
    FullText,
}

/// `vector_search` or `fts`.
#[derive(Debug)]
pub struct SearchFunction {
    kind: SearchKind,
    state: AppState,
}

impl SearchFunction {
    /// `vector_search(table, vector, k, filter)`; the vector is an array literal
    /// (`[0.1, 0.2]`) or its JSON text.
    pub fn vector(state: AppState) -> Self {
        Self { kind: SearchKind::Vector, state }
    }

    /// `fts(table, query, k, filter)`.
    pub fn full_text(state: AppState) -> Self {
        Self { kind: SearchKind::FullText, state }
    }

    fn name(&self) -> &'static str {
        match self.kind {
            SearchKind::Vector => "vector_search",
            SearchKind::FullText => "fts",
        }
    }

    /// The REST query body the arguments stand for, and the table.
    fn query(&self, session: &dyn Session, args: &[Expr]) -> Result<(TableId, TableQuery), ApiError> {
        let usage = || match self.kind {
            SearchKind::Vector => "vector_search('table', [0.1, 0.2, ...], k, 'filter')",
            SearchKind::FullText => "fts('table', 'query', k, 'filter')",
        };
        if !(2..=4).contains(&args.len()) {
            return Err(ApiError::bad_request(format!("{} takes 2 to 4 arguments: {}", self.name(), usage())));
        }
        let values = args.iter().map(|arg| constant(session, arg)).collect::<Result<Vec<_>, _>>()?;
        let text = |position: usize, what: &str| match &values[position] {
            ScalarValue::Utf8(Some(text)) | ScalarValue::LargeUtf8(Some(text)) | ScalarValue::Utf8View(Some(text)) => {
                Ok(text.clone())
            }
            other => Err(ApiError::bad_request(format!(
                "argument {} of {} ({what}) must be a string, got {other}; use {}",
                position + 1,
                self.name(),
                usage()
            ))),
        };
        let id = TableId::parse(&text(0, "the table")?)?;
        let mut body = serde_json::Map::new();
        match self.kind {
            SearchKind::Vector => {
                body.insert("vector".into(), json!(vector_argument(&values[1])?));
            }
            SearchKind::FullText => {
                let query = text(1, "the query")?;
                let query = match serde_json::from_str::<Value>(&query) {
                    Ok(structured @ Value::Object(_)) => structured,
                    _ => Value::String(query),
                };
                body.insert("full_text_query".into(), json!({ "query": query }));
            }
        }
        if let Some(k) = values.get(2) {
            let k = match k {
                ScalarValue::Int64(Some(k)) if *k > 0 => *k as u64,
                other => {
                    return Err(ApiError::bad_request(format!(
                        "k of {} must be a positive integer, got {other}",
                        self.name()
                    )));
                }
            };
            body.insert("k".into(), json!(k));
        }
        if values.len() == 4 {
            body.insert("filter".into(), json!(text(3, "the filter")?));
            body.insert("prefilter".into(), json!(true));
        }
        let query = serde_json::from_value::<TableQuery>(Value::Object(body))
            .map_err(|error| ApiError::bad_request(format!("{}: {error}", self.name())))?;
        Ok((id, query))
    }
}

impl TableFunctionImpl for SearchFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let (id, query) = self.query(args.session(), args.exprs())?;
        let (_, output) = block_on(self.state.run_query(&id, ReadVersion::default(), &query))?;
        Ok(Arc::new(MemTable::try_new(output.schema, vec![output.batches])?))
    }
}

/// The value of a constant argument (a literal, or an expression of literals such as
/// `[0.1, 0.2]` or `-1`).
fn constant(session: &dyn Session, arg: &Expr) -> Result<ScalarValue, ApiError> {
    let expr = session.create_physical_expr(arg.clone(), &DFSchema::empty())?;
    let one_row = RecordBatch::try_new_with_options(
        Arc::new(Schema::empty()),
        Vec::new(),
        &RecordBatchOptions::new().with_row_count(Some(1)),
    )?;
    let value = expr.evaluate(&one_row)?.into_array(1)?;
    Ok(ScalarValue::try_from_array(&value, 0)?)
}

/// The query vector: a list of numbers, or its JSON text.
fn vector_argument(value: &ScalarValue) -> Result<Vec<f32>, ApiError> {
    let invalid =
        || ApiError::bad_request(format!("the vector must be a list of numbers such as [0.1, 0.2], got {value}"));
    let list = match value {
        ScalarValue::Utf8(Some(text)) | ScalarValue::LargeUtf8(Some(text)) | ScalarValue::Utf8View(Some(text)) => {
            return serde_json::from_str::<Vec<f32>>(text).map_err(|_| invalid());
        }
        ScalarValue::List(list) => list.value(0),
        ScalarValue::LargeList(list) => list.value(0),
        ScalarValue::FixedSizeList(list) => list.value(0),
        _ => return Err(invalid()),
    };
    let floats = arrow::compute::cast(&list, &DataType::Float32).map_err(|_| invalid())?;
    let floats = floats.as_any().downcast_ref::<Float32Array>().ok_or_else(invalid)?;
    if floats.null_count() > 0 {
        return Err(invalid());
    }
    Ok(floats.values().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::common::utils::SingleRowListArrayBuilder;

    #[test]
    fn vectors_come_as_lists_or_json() {
        let floats = arrow_array::Float64Array::from(vec![1.0, -2.5]);
        let list = ScalarValue::List(Arc::new(SingleRowListArrayBuilder::new(Arc::new(floats)).build_list_array()));
        assert_eq!(vector_argument(&list).expect("list"), vec![1.0, -2.5]);
        let ints = arrow_array::Int64Array::from(vec![3, 4]);
        let list = ScalarValue::List(Arc::new(SingleRowListArrayBuilder::new(Arc::new(ints)).build_list_array()));
        assert_eq!(vector_argument(&list).expect("integers are numbers"), vec![3.0, 4.0]);
        assert_eq!(vector_argument(&ScalarValue::from("[0.5, 1]")).expect("json"), vec![0.5, 1.0]);
        assert!(vector_argument(&ScalarValue::from("nope")).is_err());
        assert!(vector_argument(&ScalarValue::Int64(Some(1))).is_err());
        let strings = arrow_array::StringArray::from(vec!["a"]);
        let list = ScalarValue::List(Arc::new(SingleRowListArrayBuilder::new(Arc::new(strings)).build_list_array()));
        assert!(vector_argument(&list).is_err(), "strings are not numbers");
    }
}
