//! Namespaces made by LanceFleet before it kept them in lance's directory namespace: a
//! directory `{root}/{ns…}/` holding a marker `.lancefleet-namespace.json` (the
//! namespace's properties) and its tables as `{name}.lance` directories.
//! [`Catalog::migrate_legacy_namespaces`] moves them into the manifest in place: each
//! namespace is created with its properties, each table registered at the location its
//! data already has (nothing is copied), and the marker removed once everything inside
//! is registered. It is idempotent and may run on several nodes at once; an interrupted
//! run finishes on the next.

use std::collections::HashMap;

use crate::catalog::namespaces::CreateNamespaceMode;
use crate::catalog::{Catalog, read_dir_or_empty};
use crate::error::{EngineError, Result};
use crate::table_id::{Namespace, TABLE_SUFFIX, TableId, table_name_of_entry};

/// The marker that made a directory a namespace in earlier LanceFleet versions.
pub const LEGACY_MARKER: &str = ".lancefleet-namespace.json";

/// What one migration moved into the directory namespace.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LegacyMigration {
    /// Namespaces whose markers were migrated.
    pub namespaces: usize,
    /// Tables registered at their existing locations.
    pub tables: usize,
}

impl Catalog {
    /// Moves every namespace of the earlier layout, and its tables, into the directory
    /// namespace (see the module documentation).
    pub async fn migrate_legacy_namespaces(&self) -> Result<LegacyMigration> {
        let mut done = LegacyMigration::default();
        self.migrate_inside(&Namespace::root(), &mut done).await?;
        Ok(done)
    }

    /// Migrates the legacy namespaces whose directories are directly inside `parent`'s.
    async fn migrate_inside(&self, parent: &Namespace, done: &mut LegacyMigration) -> Result<()> {
        let (store, path) = self.store_at(&self.legacy_uri(parent.components())).await?;
        let listing = match store.list_with_delimiter(Some(&path)).await {
            Ok(listing) => listing,
            Err(lance::Error::NotFound { .. }) => return Ok(()),
            Err(error) => return Err(error.into()),
        };
        let directories = listing.common_prefixes.iter().filter_map(|prefix| prefix.filename().map(str::to_string));
        for entry in directories {
            // Table directories, and lance's `{hash}_{ns}${table}` ones, are no namespaces.
            if entry.ends_with(TABLE_SUFFIX) {
                continue;
            }
            let Ok(namespace) = parent.child(&entry) else { continue };
            let marker = path.clone().join(entry.as_str()).join(LEGACY_MARKER);
            let properties: HashMap<String, String> = match store.read_one_all(&marker).await {
                Ok(bytes) => serde_json::from_slice(&bytes).map_err(|error| {
                    EngineError::internal(format!("namespace '{namespace}' has a corrupt marker: {error}"))
                })?,
                Err(lance::Error::NotFound { .. }) => continue,
                Err(error) => return Err(error.into()),
            };
            self.create_namespace(&namespace, CreateNamespaceMode::ExistOk, properties).await?;
            self.register_legacy_tables(&namespace, done).await?;
            Box::pin(self.migrate_inside(&namespace, done)).await?;
            store.delete(&marker).await?;
            done.namespaces += 1;
            tracing::info!(%namespace, "namespace moved into the directory namespace");
        }
        Ok(())
    }

    /// Registers the `{name}.lance` tables of legacy `namespace`'s directory where they are.
    async fn register_legacy_tables(&self, namespace: &Namespace, done: &mut LegacyMigration) -> Result<()> {
        let (store, path) = self.store_at(&self.legacy_uri(namespace.components())).await?;
        for entry in read_dir_or_empty(&store, path).await? {
            let Some(name) = table_name_of_entry(&entry) else { continue };
            let id = TableId::new(namespace.clone(), name)?;
            let mut location = namespace.components().to_vec();
            location.push(id.directory_name());
            match self.register_table(&id, &location.join("/")).await {
                Ok(_) => done.tables += 1,
                Err(EngineError::TableAlreadyExists { .. }) => {}
                // A directory named like a table that holds no dataset stays as it is.
                Err(EngineError::InvalidInput { message }) => {
                    tracing::warn!(table = %id, %message, "not migrated");
                }
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// The uri of `{root}/{components…}`.
    fn legacy_uri(&self, components: &[String]) -> String {
        self.root.child_uri(components.iter().map(String::as_str))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use arrow_array::{Int64Array, RecordBatch, RecordBatchIterator};
    use arrow_schema::{DataType, Field, Schema};
    use lance::Dataset;
    use lancefleet_common::storage::StorageRoot;

    use super::*;
    use crate::catalog::ReadVersion;

    async fn write_legacy_table(dir: &std::path::Path, relative: &str, rows: i64) {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from_iter_values(0..rows))])
            .expect("valid batch");
        let uri = dir.join(relative);
        let reader = RecordBatchIterator::new([Ok(batch)], schema);
        Dataset::write(reader, uri.to_str().expect("utf-8"), None).await.expect("written");
    }

    #[tokio::test]
    async fn legacy_namespaces_move_into_the_directory_namespace_in_place_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = |path: &str, json: &str| {
            std::fs::create_dir_all(dir.path().join(path)).expect("dir");
            std::fs::write(dir.path().join(path).join(LEGACY_MARKER), json).expect("marker");
        };
        marker("ns", r#"{"owner":"search"}"#);
        marker("ns/inner", "{}");
        write_legacy_table(dir.path(), "ns/a.lance", 3).await;
        write_legacy_table(dir.path(), "ns/inner/b.lance", 5).await;
        write_legacy_table(dir.path(), "root_table.lance", 1).await;
        // A directory without a marker is not a namespace, and stays unregistered.
        write_legacy_table(dir.path(), "plain/c.lance", 1).await;

        let root = StorageRoot::resolve(dir.path().to_str().expect("utf-8")).expect("root");
        let catalog = Catalog::new(root, &BTreeMap::new(), None);
        let done = catalog.migrate_legacy_namespaces().await.expect("migrated");
        assert_eq!(done, LegacyMigration { namespaces: 2, tables: 2 });

        let ns = Namespace::parse("ns").expect("valid");
        assert_eq!(catalog.list_namespaces(&Namespace::root()).await.expect("listed"), ["ns"]);
        assert_eq!(catalog.describe_namespace(&ns).await.expect("described")["owner"], "search");
        assert_eq!(catalog.list_tables(&ns).await.expect("listed"), ["a"]);
        let b = TableId::parse("ns$inner$b").expect("valid");
        let table = catalog.open_table(&b, ReadVersion::default()).await.expect("opens where it was");
        assert_eq!(table.count_rows(None).await.expect("counted"), 5);
        assert!(catalog.table_uri(&b).await.expect("located").ends_with("/ns/inner/b.lance"));
        assert!(!dir.path().join("ns").join(LEGACY_MARKER).exists(), "the marker is removed");

        // A second run (or another node's) finds nothing left to do.
        assert_eq!(catalog.migrate_legacy_namespaces().await.expect("migrated"), LegacyMigration::default());
        let fresh = Catalog::new(
            StorageRoot::resolve(dir.path().to_str().expect("utf-8")).expect("root"),
            &BTreeMap::new(),
            None,
        );
        assert_eq!(fresh.list_tables(&Namespace::parse("ns$inner").expect("valid")).await.expect("listed"), ["b"]);
    }
}
