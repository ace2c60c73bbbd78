//! The DataFusion catalog of a node's tables: catalog `lancefleet`; schema `default` is the
//! root namespace and every other namespace is a schema named by its id (`a` or `a$b`).
//! It answers from what [`Resolved`] opened before the statement was planned.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider, TableProvider};
use datafusion::error::DataFusionError;
use lancefleet_engine::{Namespace, ReadVersion, TableId};

use super::resolve::Resolved;
use super::scan::FleetTable;
use super::search::SEARCH_FUNCTIONS;
use crate::auth::{self, Access, Target};
use crate::error::ApiError;
use crate::state::AppState;

/// The one catalog.
pub const CATALOG_NAME: &str = "lancefleet";
/// The schema of the root namespace's tables.
pub const DEFAULT_SCHEMA: &str = "default";

/// The schema name of `namespace`.
pub fn schema_name(namespace: &Namespace) -> String {
    if namespace.is_root() { DEFAULT_SCHEMA.to_string() } else { namespace.to_string() }
}

/// The namespace a schema name stands for.
pub fn schema_namespace(name: &str) -> Result<Namespace, ApiError> {
    if name == DEFAULT_SCHEMA { Ok(Namespace::root()) } else { Ok(Namespace::parse(name)?) }
}

/// Every namespace of the node, the root first, parents before children.
pub async fn all_namespaces(state: &AppState) -> Result<Vec<Namespace>, ApiError> {
    let mut namespaces = vec![Namespace::root()];
    let mut next = 0;
    while let Some(namespace) = namespaces.get(next).cloned() {
        next += 1;
        for child in state.catalog.list_namespaces(&namespace).await? {
            let child = namespace.child(&child)?;
            if auth::visible(&Target::Namespace(child.clone())) {
                namespaces.push(child);
            }
        }
    }
    Ok(namespaces)
}

/// The catalog: one schema per namespace.
#[derive(Debug)]
pub struct TablesCatalog {
    state: AppState,
    resolved: Arc<Resolved>,
}

impl TablesCatalog {
    /// The namespaces and tables of `state`, as `resolved` opened them for one statement.
    pub fn new(state: AppState, resolved: Arc<Resolved>) -> Self {
        Self { state, resolved }
    }
}

impl CatalogProvider for TablesCatalog {
    fn schema_names(&self) -> Vec<String> {
        self.resolved.schema_names()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        let namespace = schema_namespace(name).ok()?;
        let schema = NamespaceSchema {
            state: self.state.clone(),
            resolved: self.resolved.clone(),
            name: name.to_string(),
            namespace,
        };
        Some(Arc::new(schema))
    }
}

/// The tables of one namespace.
#[derive(Debug)]
struct NamespaceSchema {
    state: AppState,
    resolved: Arc<Resolved>,
    name: String,
    namespace: Namespace,
}

#[async_trait]
impl SchemaProvider for NamespaceSchema {
    fn table_names(&self) -> Vec<String> {
        self.resolved.table_names(&self.name)
    }

    /// The table as the statement's resolution opened it; one it did not (a table
    /// `information_schema` lists) is opened now, at its latest version. A missing table
    /// is a typed not-found error rather than `None`, so that the client hears 'not
    /// found', not a planning error; except for the names of the search functions, which
    /// DataFusion looks up as tables before it tries its table functions.
    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        let id = TableId::new(self.namespace.clone(), name).map_err(ApiError::from)?;
        let dataset = match self.resolved.table(&id) {
            Some(dataset) => dataset.clone(),
            None if SEARCH_FUNCTIONS.contains(&name) => return Ok(None),
            None => {
                // `information_schema` asks while it runs, after the call's caller is gone;
                // its listing shows only what the caller may see. Anything else is checked.
                if !self.resolved.lists(&id) {
                    auth::require(Access::Read, &Target::Table(id.clone()))?;
                }
                Arc::new(self.state.catalog.open_table(&id, ReadVersion::default()).await.map_err(ApiError::from)?)
            }
        };
        let uri = dataset.uri().to_string();
        Ok(Some(Arc::new(FleetTable::new(self.state.clone(), dataset, uri))))
    }

    fn table_exist(&self, name: &str) -> bool {
        TableId::new(self.namespace.clone(), name).is_ok_and(|id| self.resolved.table(&id).is_some())
            || self.table_names().iter().any(|table| table == name)
    }
}
