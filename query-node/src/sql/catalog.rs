//! The DataFusion catalog of a node's tables: catalog `lancefleet`; schema `default` is the
//! root namespace and every other namespace is a schema named by its id (`a` or `a$b`).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider, TableProvider};
use datafusion::error::DataFusionError;
use lancefleet_engine::{Namespace, ReadVersion, TableId};

use super::scan::FleetTable;
use super::{SEARCH_FUNCTIONS, block_on};
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
            namespaces.push(namespace.child(&child)?);
        }
    }
    Ok(namespaces)
}

/// The catalog: one schema per namespace.
#[derive(Debug)]
pub struct TablesCatalog {
    state: AppState,
}

impl TablesCatalog {
    /// The namespaces and tables of `state`.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

impl CatalogProvider for TablesCatalog {
    fn schema_names(&self) -> Vec<String> {
        match block_on(all_namespaces(&self.state)) {
            Ok(namespaces) => namespaces.iter().map(schema_name).collect(),
            Err(error) => {
                tracing::warn!(%error, "cannot list namespaces for SQL");
                vec![DEFAULT_SCHEMA.to_string()]
            }
        }
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        let namespace = schema_namespace(name).ok()?;
        Some(Arc::new(NamespaceSchema { state: self.state.clone(), namespace }))
    }
}

/// The tables of one namespace.
#[derive(Debug)]
struct NamespaceSchema {
    state: AppState,
    namespace: Namespace,
}

impl NamespaceSchema {
    fn names(&self) -> Vec<String> {
        match block_on(self.state.catalog.list_tables(&self.namespace)) {
            Ok(names) => names,
            Err(error) => {
                tracing::warn!(namespace = %self.namespace, %error, "cannot list tables for SQL");
                Vec::new()
            }
        }
    }
}

#[async_trait]
impl SchemaProvider for NamespaceSchema {
    fn table_names(&self) -> Vec<String> {
        self.names()
    }

    /// The table at its latest version. A missing table is a typed not-found error
    /// rather than `None`, so that the client hears 'not found', not a planning error;
    /// except for the names of the search functions, which DataFusion looks up as tables
    /// before it tries its table functions.
    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        let id = TableId::new(self.namespace.clone(), name).map_err(ApiError::from)?;
        if SEARCH_FUNCTIONS.contains(&name) && !self.names().iter().any(|table| table == name) {
            return Ok(None);
        }
        let dataset = self.state.catalog.open_table(&id, ReadVersion::default()).await.map_err(ApiError::from)?;
        let uri = self.state.catalog.table_uri(&id);
        Ok(Some(Arc::new(FleetTable::new(self.state.clone(), Arc::new(dataset), uri))))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.names().iter().any(|table| table == name)
    }
}
