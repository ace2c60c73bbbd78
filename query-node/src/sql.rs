//! SQL over every table, with DataFusion: the session a statement is planned in, the
//! catalog of Lance tables it sees, scans spread over the plan executors, and the search
//! table functions.
//!
//! Statements are read-only queries (`SELECT`, `EXPLAIN`, `SHOW`, `information_schema`).
//! DataFusion asks its catalog synchronously (schema and table names), so nothing is
//! looked up while a statement is planned: before planning, [`resolve`] opens every table
//! the statement names (and lists the namespaces when it reads `information_schema`),
//! asynchronously, pinning each at its latest version. Searches run when the plan runs,
//! never while it is planned (so `EXPLAIN` does not search).

mod catalog;
mod resolve;
mod scan;
mod search;

use std::sync::Arc;

use arrow_array::{RecordBatch, RecordBatchOptions};
use arrow_schema::SchemaRef;
use datafusion::common::ParamValues;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::{ExecutionPlan, Partitioning, PlanProperties};
use datafusion::prelude::DataFrame;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{Expr as SqlExpr, Statement as SqlStatement, Value, visit_expressions_mut};

use crate::error::ApiError;
use crate::state::AppState;

pub use catalog::{CATALOG_NAME, DEFAULT_SCHEMA, all_namespaces, schema_name, schema_namespace};

/// Plans SQL statements over a node's tables.
#[derive(Debug, Clone)]
pub struct SqlEngine {
    state: AppState,
}

impl SqlEngine {
    /// SQL over the tables of `state`.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    /// Plans the one statement `sql`, with `parameters` bound to its placeholders
    /// (`$1`, `$2`, … or `?` in order). Writes and DDL are refused.
    pub async fn plan(&self, sql: &str, parameters: Option<ParamValues>) -> Result<DataFrame, ApiError> {
        let config = SessionConfig::new()
            .with_default_catalog_and_schema(CATALOG_NAME, DEFAULT_SCHEMA)
            .with_create_default_catalog_and_schema(false)
            .with_information_schema(true);
        let context = SessionContext::new_with_config(config);
        let dialect = context.state().config().options().sql_parser.dialect;
        let mut statement = context.state().sql_to_statement(sql, &dialect)?;
        number_question_marks(&mut statement);
        let resolved = Arc::new(resolve::resolve(&self.state, &context.state(), &statement).await?);
        let tables = catalog::TablesCatalog::new(self.state.clone(), resolved.clone());
        context.register_catalog(CATALOG_NAME, Arc::new(tables));
        for function in search::SearchFunction::all(&self.state, &resolved) {
            context.register_udtf(function.name(), Arc::new(function));
        }
        let state = context.state();
        let plan = state.statement_to_plan(statement).await?;
        read_only().verify_plan(&plan)?;
        let frame = DataFrame::new(state, plan);
        Ok(match parameters {
            Some(parameters) => frame.with_param_values(parameters)?,
            None => frame,
        })
    }
}

/// Statements a SQL client may run: queries only.
fn read_only() -> SQLOptions {
    SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false)
}

/// The SQL statement inside `statement`, an `EXPLAIN`'s included; `None` for DataFusion's
/// own statements (`COPY`, `CREATE EXTERNAL TABLE`), which are refused anyway.
fn sql_statement(statement: &DfStatement) -> Option<&SqlStatement> {
    match statement {
        DfStatement::Statement(statement) => Some(statement),
        DfStatement::Explain(explain) => sql_statement(&explain.statement),
        _ => None,
    }
}

/// Turns `?` placeholders (what ODBC, JDBC and ADBC clients write) into DataFusion's
/// positional `$1`, `$2`, … in the order they appear.
fn number_question_marks(statement: &mut DfStatement) {
    let statement = match statement {
        DfStatement::Statement(statement) => statement,
        DfStatement::Explain(explain) => return number_question_marks(&mut explain.statement),
        _ => return,
    };
    let mut position = 0;
    let _ = visit_expressions_mut(statement.as_mut(), |expr| {
        if let SqlExpr::Value(value) = expr
            && let Value::Placeholder(name) = &mut value.value
            && name == "?"
        {
            position += 1;
            *name = format!("${position}");
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
}

/// The properties of a plan that reads (it has no children): `partitions` bounded
/// partitions of `schema`, emitting as `emission` says.
fn leaf_properties(schema: SchemaRef, partitions: usize, emission: EmissionType) -> Arc<PlanProperties> {
    let properties = PlanProperties::new(
        EquivalenceProperties::new(schema),
        Partitioning::UnknownPartitioning(partitions),
        emission,
        Boundedness::Bounded,
    );
    Arc::new(properties)
}

/// `with_new_children` of a plan that has none: itself, when given none.
fn childless(plan: Arc<dyn ExecutionPlan>, children: &[Arc<dyn ExecutionPlan>]) -> DfResult<Arc<dyn ExecutionPlan>> {
    if children.is_empty() {
        Ok(plan)
    } else {
        Err(DataFusionError::Internal(format!("{} has no children", plan.name())))
    }
}

/// `batch`'s columns in `schema`'s order and types, by name: a plan announces a schema
/// before the executors answer, and lance may add columns (`_rowaddr` to a scan without
/// columns; only its row count is wanted) or order them otherwise.
fn conform(schema: &SchemaRef, batch: &RecordBatch) -> DfResult<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .map(|field| {
            batch
                .column_by_name(field.name())
                .cloned()
                .ok_or_else(|| DataFusionError::Internal(format!("the answer has no column '{}'", field.name())))
        })
        .collect::<DfResult<Vec<_>>>()?;
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(schema.clone(), columns, &options)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::parser::DFParser;

    #[test]
    fn question_marks_become_positions() {
        let mut statements =
            DFParser::parse_sql("SELECT * FROM t WHERE a = ? AND b IN (?, $9) LIMIT 3").expect("parses");
        let mut statement = statements.pop_front().expect("one statement");
        number_question_marks(&mut statement);
        assert_eq!(statement.to_string(), "SELECT * FROM t WHERE a = $1 AND b IN ($2, $9) LIMIT 3");
    }
}
