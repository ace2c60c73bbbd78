//! What a statement reads, opened before it is planned: every table it names, each pinned
//! at its latest version, the tables its search functions search, and, when it reads the
//! catalog (`information_schema`, `SHOW TABLES`), every namespace with its tables. Planning
//! then asks nothing of the storage: DataFusion's catalog calls are synchronous.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::execution::SessionState;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{
    Expr as SqlExpr, FunctionArg, FunctionArgExpr, TableFactor, Value, Visit, Visitor,
};
use futures::future::try_join_all;
use lance::Dataset;
use lancefleet_engine::{Namespace, ReadVersion, TableId};

use super::catalog::{CATALOG_NAME, DEFAULT_SCHEMA, all_namespaces, schema_name, schema_namespace};
use super::search::SEARCH_FUNCTIONS;
use crate::auth::{self, Access, Target};
use crate::error::ApiError;
use crate::state::AppState;

/// The schema DataFusion serves the catalog's own tables from.
const INFORMATION_SCHEMA: &str = "information_schema";

/// The tables a statement reads, opened.
#[derive(Debug, Default)]
pub struct Resolved {
    /// Each table the statement names, at the version it was opened at.
    tables: HashMap<TableId, Arc<Dataset>>,
    /// Every namespace (by schema name) with its tables, when the statement lists them.
    listing: Option<BTreeMap<String, Vec<String>>>,
}

impl Resolved {
    /// The opened table `id`, if the statement names it.
    pub fn table(&self, id: &TableId) -> Option<&Arc<Dataset>> {
        self.tables.get(id)
    }

    /// Whether the statement's listing (made for its caller) shows table `id`.
    pub fn lists(&self, id: &TableId) -> bool {
        self.listing.as_ref().is_some_and(|listing| {
            listing.get(&schema_name(id.namespace())).is_some_and(|names| names.iter().any(|name| name == id.name()))
        })
    }

    /// The schemas the catalog shows: every namespace when the statement lists them, else
    /// the default one and those of the tables it names.
    pub fn schema_names(&self) -> Vec<String> {
        if let Some(listing) = &self.listing {
            return listing.keys().cloned().collect();
        }
        let named = self.tables.keys().map(|id| schema_name(id.namespace()));
        std::iter::once(DEFAULT_SCHEMA.to_string()).chain(named).collect::<BTreeSet<_>>().into_iter().collect()
    }

    /// The tables schema `schema` shows (as [`Self::schema_names`] chooses them).
    pub fn table_names(&self, schema: &str) -> Vec<String> {
        if let Some(listing) = &self.listing {
            return listing.get(schema).cloned().unwrap_or_default();
        }
        let mut names = self
            .tables
            .keys()
            .filter(|id| schema_name(id.namespace()) == schema)
            .map(|id| id.name().to_string())
            .collect::<Vec<_>>();
        names.sort();
        names
    }
}

/// Opens what `statement` reads (see the module documentation).
pub async fn resolve(state: &AppState, session: &SessionState, statement: &DfStatement) -> Result<Resolved, ApiError> {
    let mut relations = Relations::default();
    if let Some(statement) = super::sql_statement(statement) {
        let _ = statement.visit(&mut relations);
    }
    let mut ids = relations.searched;
    let mut lists = false;
    for reference in session.resolve_table_references(statement)? {
        let reference = reference.resolve(CATALOG_NAME, DEFAULT_SCHEMA);
        if reference.catalog.as_ref() != CATALOG_NAME {
            continue;
        }
        if reference.schema.as_ref() == INFORMATION_SCHEMA {
            lists = true;
            continue;
        }
        let name = reference.table.as_ref();
        let only_a_function = SEARCH_FUNCTIONS.contains(&name) && !relations.plain.contains(name);
        if !only_a_function {
            ids.insert(TableId::new(schema_namespace(&reference.schema)?, name)?);
        }
    }
    for id in &ids {
        auth::require(Access::Read, &Target::Table(id.clone()))?;
    }
    let opened = try_join_all(ids.into_iter().map(|id| async move {
        let dataset = state.catalog.open_table(&id, ReadVersion::default()).await?;
        Ok::<_, ApiError>((id, Arc::new(dataset)))
    }))
    .await?;
    let listing = if lists { Some(listing(state).await?) } else { None };
    Ok(Resolved { tables: opened.into_iter().collect(), listing })
}

/// Every namespace by schema name, with its tables.
async fn listing(state: &AppState) -> Result<BTreeMap<String, Vec<String>>, ApiError> {
    let namespaces = all_namespaces(state).await?;
    let tables = try_join_all(namespaces.iter().map(|namespace: &Namespace| state.visible_tables(namespace))).await?;
    Ok(namespaces.iter().map(schema_name).zip(tables).collect())
}

/// The relations of a statement: names used as tables, and the tables search functions
/// name in a string literal (`vector_search('docs', …)`).
#[derive(Debug, Default)]
struct Relations {
    /// Last identifiers of relations without arguments, lower-cased as DataFusion does.
    plain: HashSet<String>,
    /// Tables named by the first argument of a search function.
    searched: BTreeSet<TableId>,
}

impl Visitor for Relations {
    type Break = ();

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        let TableFactor::Table { name, args, .. } = factor else { return ControlFlow::Continue(()) };
        let last = name.0.last().and_then(|part| part.as_ident()).map(|ident| ident.value.to_ascii_lowercase());
        match (args, last) {
            (None, Some(last)) => {
                self.plain.insert(last);
            }
            (Some(args), Some(last)) if SEARCH_FUNCTIONS.contains(&last.as_str()) => {
                let table = args.args.first().and_then(|arg| match arg {
                    FunctionArg::Unnamed(FunctionArgExpr::Expr(SqlExpr::Value(value))) => match &value.value {
                        Value::SingleQuotedString(text) | Value::DoubleQuotedString(text) => Some(text.as_str()),
                        _ => None,
                    },
                    _ => None,
                });
                // A malformed name fails later, where the function reads its arguments.
                if let Some(id) = table.and_then(|table| TableId::parse(table).ok()) {
                    self.searched.insert(id);
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}
