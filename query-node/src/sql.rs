//! SQL over every table, with DataFusion: the session a statement is planned in, the
//! catalog of Lance tables it sees, scans spread over the plan executors, and the search
//! table functions.
//!
//! Statements are read-only queries (`SELECT`, `EXPLAIN`, `SHOW`, `information_schema`);
//! tables are pinned at their latest version when a statement first names them.

mod catalog;
mod scan;
mod search;

use std::future::Future;
use std::sync::Arc;

use datafusion::common::ParamValues;
use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};
use datafusion::prelude::DataFrame;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{Expr as SqlExpr, Value, visit_expressions_mut};
use tokio::runtime::{Handle, RuntimeFlavor};

use crate::error::ApiError;
use crate::state::AppState;

pub use catalog::{CATALOG_NAME, DEFAULT_SCHEMA, all_namespaces, schema_name, schema_namespace};

/// The table functions of every session.
const SEARCH_FUNCTIONS: [&str; 2] = ["vector_search", "fts"];

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

    /// A session seeing every table (catalog `lancefleet`, schema `default` for the root
    /// namespace, one schema per namespace) and the `vector_search` and `fts` functions.
    pub fn session(&self) -> SessionContext {
        let config = SessionConfig::new()
            .with_default_catalog_and_schema(CATALOG_NAME, DEFAULT_SCHEMA)
            .with_create_default_catalog_and_schema(false)
            .with_information_schema(true);
        let context = SessionContext::new_with_config(config);
        context.register_catalog(CATALOG_NAME, Arc::new(catalog::TablesCatalog::new(self.state.clone())));
        let [vector, full_text] = SEARCH_FUNCTIONS;
        context.register_udtf(vector, Arc::new(search::SearchFunction::vector(self.state.clone())));
        context.register_udtf(full_text, Arc::new(search::SearchFunction::full_text(self.state.clone())));
        context
    }

    /// Plans the one statement `sql`, with `parameters` bound to its placeholders
    /// (`$1`, `$2`, … or `?` in order). Writes and DDL are refused.
    pub async fn plan(&self, sql: &str, parameters: Option<ParamValues>) -> Result<DataFrame, ApiError> {
        let context = self.session();
        let state = context.state();
        let dialect = state.config().options().sql_parser.dialect;
        let mut statement = state.sql_to_statement(sql, &dialect)?;
        number_question_marks(&mut statement);
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

/// Turns `?` placeholders (what ODBC, JDBC and ADBC clients write) into DataFusion's
/// positional `$1`, `$2`, … in the order they appear.
fn number_question_marks(statement: &mut DfStatement) {
    let DfStatement::Statement(statement) = statement else { return };
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

/// Runs `future` to completion from synchronous DataFusion callbacks (catalog listings,
/// table functions) on the multi-threaded runtime every node runs on.
fn block_on<T, E, F>(future: F) -> Result<T, ApiError>
where
    F: Future<Output = Result<T, E>>,
    ApiError: From<E>,
{
    let handle = Handle::try_current().map_err(|_| ApiError::Internal("SQL planning needs a tokio runtime".into()))?;
    if handle.runtime_flavor() == RuntimeFlavor::CurrentThread {
        return Err(ApiError::Internal("SQL planning needs the multi-threaded tokio runtime".into()));
    }
    Ok(tokio::task::block_in_place(|| handle.block_on(future))?)
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
