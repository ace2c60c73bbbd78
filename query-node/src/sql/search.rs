//! Search from SQL: `vector_search(table, vector, k, filter)` and
//! `fts(table, query, k, filter)` are table functions whose rows are the search's answer
//! (with `_distance` or `_score`), so a statement can filter, join and aggregate them.
//!
//! Each call runs the same search as the REST `query` route (distributed and merged
//! exactly) over the table version the statement pinned, when the plan runs: planning
//! reads the arguments and checks them against the table's schema, `EXPLAIN` shows the
//! search without running it. `k` defaults to 10; `filter` is a SQL predicate applied
//! before the search. A full-text `query` is plain text searched in every indexed column,
//! or a lance structured query in JSON (`{"match": {...}}`).

use std::fmt;
use std::sync::Arc;

use arrow_array::{Array, Float32Array, RecordBatch, RecordBatchOptions};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::execution_plan::EmissionType;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::StreamExt;
use lance::Dataset;
use lancefleet_engine::read::merge::{DISTANCE_COLUMN, SCORE_COLUMN};
use lancefleet_engine::read::plan::searched_column;
use lancefleet_engine::read::query::{FullTextSearch, QueryVectors};
use lancefleet_engine::{TableId, TableQuery};

use super::resolve::Resolved;
use super::{childless, conform, leaf_properties};
use crate::error::ApiError;
use crate::state::AppState;

/// The names of the search functions.
pub const SEARCH_FUNCTIONS: [&str; 2] = ["vector_search", "fts"];

/// Which search a function runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SearchKind {
    Vector,
    FullText,
}

impl SearchKind {
    fn name(self) -> &'static str {
        match self {
            Self::Vector => SEARCH_FUNCTIONS[0],
            Self::FullText => SEARCH_FUNCTIONS[1],
        }
    }

    fn usage(self) -> &'static str {
        match self {
            Self::Vector => "vector_search('table', [0.1, 0.2, ...], k, 'filter')",
            Self::FullText => "fts('table', 'query', k, 'filter')",
        }
    }

    /// The column the search adds to the table's.
    fn ranking(self) -> &'static str {
        match self {
            Self::Vector => DISTANCE_COLUMN,
            Self::FullText => SCORE_COLUMN,
        }
    }
}

/// `vector_search` or `fts`, over the tables one statement resolved.
#[derive(Debug)]
pub struct SearchFunction {
    kind: SearchKind,
    state: AppState,
    resolved: Arc<Resolved>,
}

impl SearchFunction {
    /// Both functions, searching the tables of `resolved`.
    pub fn all(state: &AppState, resolved: &Arc<Resolved>) -> [Self; 2] {
        [SearchKind::Vector, SearchKind::FullText].map(|kind| Self {
            kind,
            state: state.clone(),
            resolved: resolved.clone(),
        })
    }

    /// The function's SQL name.
    pub fn name(&self) -> &'static str {
        self.kind.name()
    }

    /// The table and the query the arguments stand for, built as the REST `query` body
    /// would be.
    fn query(&self, session: &dyn Session, args: &[Expr]) -> Result<(TableId, TableQuery), ApiError> {
        let (name, usage) = (self.kind.name(), self.kind.usage());
        if !(2..=4).contains(&args.len()) {
            return Err(ApiError::bad_request(format!("{name} takes 2 to 4 arguments: {usage}")));
        }
        let values = args.iter().map(|arg| constant(session, arg)).collect::<Result<Vec<_>, _>>()?;
        let text = |position: usize, what: &str| match &values[position] {
            ScalarValue::Utf8(Some(text)) | ScalarValue::LargeUtf8(Some(text)) | ScalarValue::Utf8View(Some(text)) => {
                Ok(text.clone())
            }
            other => Err(ApiError::bad_request(format!(
                "argument {} of {name} ({what}) must be a string, got {other}; use {usage}",
                position + 1
            ))),
        };
        let id = TableId::parse(&text(0, "the table")?)?;
        let mut query = TableQuery::default();
        match self.kind {
            SearchKind::Vector => query.vector = QueryVectors(vec![vector_argument(&values[1])?]),
            SearchKind::FullText => {
                query.full_text_query = Some(FullTextSearch::from_text_or_json(&text(1, "the query")?)?);
            }
        }
        if let Some(k) = values.get(2) {
            query.k = Some(match k {
                ScalarValue::Int64(Some(k)) if *k > 0 => k.unsigned_abs(),
                other => {
                    return Err(ApiError::bad_request(format!("k of {name} must be a positive integer, got {other}")));
                }
            });
        }
        if values.len() == 4 {
            query.filter = Some(text(3, "the filter")?);
            query.prefilter = Some(true);
        }
        Ok((id, query))
    }
}

impl TableFunctionImpl for SearchFunction {
    /// The search as a table: checked against the schema of the table the statement
    /// pinned, and run only when the plan runs.
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let (id, query) = self.query(args.session(), args.exprs())?;
        let dataset = self.resolved.table(&id).cloned().ok_or_else(|| {
            ApiError::bad_request(format!(
                "the table of {} must be a string literal: {}",
                self.name(),
                self.kind.usage()
            ))
        })?;
        let table_schema = Schema::from(dataset.schema());
        searched_column(&table_schema, &query).map_err(ApiError::from)?;
        let mut fields = table_schema.fields().iter().cloned().collect::<Vec<_>>();
        fields.push(Arc::new(Field::new(self.kind.ranking(), DataType::Float32, true)));
        let schema = Arc::new(Schema::new_with_metadata(fields, table_schema.metadata().clone()));
        let search = Search { kind: self.kind, state: self.state.clone(), id, dataset, query, schema };
        Ok(Arc::new(search))
    }
}

/// One search of one statement: the table at its pinned version, the query, and the
/// schema of the answer.
#[derive(Debug, Clone)]
struct Search {
    kind: SearchKind,
    state: AppState,
    id: TableId,
    dataset: Arc<Dataset>,
    query: TableQuery,
    schema: SchemaRef,
}

#[async_trait]
impl TableProvider for Search {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        _session: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let mut search = self.clone();
        if let Some(indices) = projection {
            search.schema = Arc::new(self.schema.project(indices)?);
        }
        Ok(Arc::new(SearchExec::new(search)))
    }
}

/// The search as an execution plan: one partition, whose rows are the merged answer.
#[derive(Debug)]
struct SearchExec {
    search: Search,
    properties: Arc<PlanProperties>,
}

impl SearchExec {
    fn new(search: Search) -> Self {
        let properties = leaf_properties(search.schema.clone(), 1, EmissionType::Final);
        Self { search, properties }
    }
}

impl DisplayAs for SearchExec {
    fn fmt_as(&self, _format: DisplayFormatType, formatter: &mut fmt::Formatter) -> fmt::Result {
        let search = &self.search;
        let version = search.dataset.version().version;
        write!(formatter, "LanceFleetSearch: {}, table={}, version={version}", search.kind.name(), search.id)?;
        if let Some(k) = search.query.k {
            write!(formatter, ", k={k}")?;
        }
        if let Some(filter) = &search.query.filter {
            write!(formatter, ", filter={filter}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for SearchExec {
    fn name(&self) -> &str {
        "LanceFleetSearch"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        childless(self, &children)
    }

    /// Runs the search (distributed like a REST query) and streams its merged answer in
    /// the announced schema.
    fn execute(&self, partition: usize, _context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!("no partition {partition} in a search")));
        }
        let search = self.search.clone();
        let schema = search.schema.clone();
        let answer = futures::stream::once(async move {
            let pinned = search.state.plan_pinned((*search.dataset).clone(), &search.query).await?;
            let output = search.state.dispatcher.query(pinned.pinned(), &pinned.plan).await?;
            let batches = output.batches.iter().map(|batch| conform(&search.schema, batch)).collect::<Vec<_>>();
            Ok::<_, DataFusionError>(futures::stream::iter(batches))
        });
        let rows = answer
            .map(|batches| match batches {
                Ok(batches) => batches.boxed(),
                Err(error) => futures::stream::once(async move { Err(error) }).boxed(),
            })
            .flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, rows)))
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
