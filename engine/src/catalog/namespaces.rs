//! Namespaces: directories of tables (and of other namespaces) under the storage root,
//! `{root}/{ns1}/{ns2}/`, as LanceDB lays them out. A namespace exists when its marker
//! object holds its properties; the root always exists.

use std::collections::HashMap;

use crate::catalog::{Catalog, read_dir_or_empty};
use crate::error::{EngineError, Result};
use crate::table_id::{Namespace, TABLE_SUFFIX};

/// The object inside a namespace's directory that makes it one and holds its properties.
const MARKER: &str = ".lancefleet-namespace.json";

/// How `create_namespace` treats an existing namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateNamespaceMode {
    /// Fail with "already exists".
    Create,
    /// Keep it and its properties.
    ExistOk,
    /// Replace its properties.
    Overwrite,
}

/// How `drop_namespace` treats a namespace that still holds tables or namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropBehavior {
    /// Refuse.
    Restrict,
    /// Drop everything inside.
    Cascade,
}

impl Catalog {
    /// The properties of `namespace`; the root has none.
    pub async fn describe_namespace(&self, namespace: &Namespace) -> Result<HashMap<String, String>> {
        if namespace.is_root() {
            return Ok(HashMap::new());
        }
        let (store, path) = self.namespace_store(namespace).await?;
        match store.read_one_all(&path.clone().join(MARKER)).await {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|error| {
                EngineError::internal(format!("namespace '{namespace}' has a corrupt marker: {error}"))
            }),
            Err(lance::Error::NotFound { .. }) => Err(EngineError::NamespaceNotFound { name: namespace.to_string() }),
            Err(error) => Err(error.into()),
        }
    }

    /// Creates `namespace` inside an existing parent; returns its properties.
    pub async fn create_namespace(
        &self,
        namespace: &Namespace,
        mode: CreateNamespaceMode,
        properties: HashMap<String, String>,
    ) -> Result<HashMap<String, String>> {
        if namespace.is_root() {
            return Err(EngineError::NamespaceAlreadyExists { name: namespace.to_string() });
        }
        self.describe_namespace(&namespace.parent()).await?;
        match (self.describe_namespace(namespace).await, mode) {
            (Ok(_), CreateNamespaceMode::Create) => {
                return Err(EngineError::NamespaceAlreadyExists { name: namespace.to_string() });
            }
            (Ok(existing), CreateNamespaceMode::ExistOk) => return Ok(existing),
            (Ok(_), CreateNamespaceMode::Overwrite) | (Err(EngineError::NamespaceNotFound { .. }), _) => {}
            (Err(error), _) => return Err(error),
        }
        let (store, path) = self.namespace_store(namespace).await?;
        let marker = serde_json::to_vec(&properties).map_err(|error| EngineError::internal(error.to_string()))?;
        store.put(&path.clone().join(MARKER), &marker).await?;
        Ok(properties)
    }

    /// The namespaces directly inside `namespace`, sorted.
    pub async fn list_namespaces(&self, namespace: &Namespace) -> Result<Vec<String>> {
        self.describe_namespace(namespace).await?;
        let (store, path) = self.namespace_store(namespace).await?;
        let mut names = Vec::new();
        for entry in read_dir_or_empty(&store, path).await? {
            if entry == MARKER || entry.ends_with(TABLE_SUFFIX) {
                continue;
            }
            let Ok(child) = namespace.child(&entry) else { continue };
            match self.describe_namespace(&child).await {
                Ok(_) => names.push(entry),
                // A directory without a marker is not a namespace.
                Err(EngineError::NamespaceNotFound { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        names.sort();
        Ok(names)
    }

    /// Drops `namespace`: refused while it holds tables or namespaces unless cascading.
    pub async fn drop_namespace(&self, namespace: &Namespace, behavior: DropBehavior) -> Result<()> {
        if namespace.is_root() {
            return Err(EngineError::invalid_input("the root namespace cannot be dropped"));
        }
        self.describe_namespace(namespace).await?;
        let (store, path) = self.namespace_store(namespace).await?;
        if behavior == DropBehavior::Restrict {
            let tables = self.list_tables(namespace).await?;
            let children = self.list_namespaces(namespace).await?;
            if !tables.is_empty() || !children.is_empty() {
                return Err(EngineError::NamespaceNotEmpty {
                    name: namespace.to_string(),
                    tables: tables.len(),
                    namespaces: children.len(),
                });
            }
            return Ok(store.delete(&path.clone().join(MARKER)).await?);
        }
        Ok(store.remove_dir_all(path).await?)
    }
}
