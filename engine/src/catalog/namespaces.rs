//! Namespaces, and where the tables inside them live, kept where LanceDB OSS keeps them:
//! in lance's directory namespace in manifest mode (`lance-namespace-impls`'
//! [`DirectoryNamespace`] over the storage root). Every namespace other than the root, and
//! every namespaced table with its location, is a row of the `{root}/__manifest` Lance
//! table; a namespaced table's directory is `{8 hex}_{ns}${name}` under the root, so its
//! location is always read from the manifest, never derived. Root tables are directories
//! `{root}/{name}.lance`, listed from storage (LanceDB OSS writes no manifest row for
//! them either). Both sides may change the manifest at once: each change is a conditional
//! commit that lance retries.
//!
//! Under strong consistency every read of a namespaced table reads its location from the
//! manifest (lance checks for a newer manifest version first: one object-store request),
//! so a rename, drop or re-creation by any process is seen at once. Under weak reads the
//! location is cached for the same interval as snapshots; dropping the table forgets it,
//! and a cached location that no longer opens is read again.

use std::collections::HashMap;
use std::fmt::Display;

use lance_namespace::LanceNamespace;
use lance_namespace::NamespaceError;
use lance_namespace::models::{
    CreateNamespaceRequest, DeclareTableRequest, DeregisterTableRequest, DescribeNamespaceRequest,
    DescribeTableRequest, DropNamespaceRequest, DropTableRequest, ListNamespacesRequest, ListTablesRequest,
    RegisterTableRequest,
};
use lance_namespace_impls::{DirectoryNamespace, DirectoryNamespaceBuilder};
use object_store::PutPayload;
use url::Url;

use crate::catalog::Catalog;
use crate::error::{EngineError, Result};
use crate::table_id::{Namespace, TableId};

/// The object in a table's directory that declares it before it has data (lance's name).
pub(crate) const RESERVED_MARKER: &str = ".lance-reserved";

/// How `create_namespace` treats an existing namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateNamespaceMode {
    /// Fail with "already exists".
    Create,
    /// Keep it and its properties.
    ExistOk,
    /// Replace its properties (an empty namespace only: the manifest has no update).
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
    /// lance's directory namespace over the root, opened on first use (opening reads the
    /// manifest if there is one; it is created by the first change).
    pub(crate) async fn directory(&self) -> Result<&DirectoryNamespace> {
        self.directory
            .get_or_try_init(|| async {
                let mut builder = DirectoryNamespaceBuilder::new(self.root.uri()).session(self.session.clone());
                if !self.storage_options.is_empty() {
                    builder = builder.storage_options(self.storage_options.clone());
                }
                builder.build().await.map_err(|error| from_directory(error, &"the namespace catalog"))
            })
            .await
    }

    /// The properties of `namespace`; the root has none.
    pub async fn describe_namespace(&self, namespace: &Namespace) -> Result<HashMap<String, String>> {
        if namespace.is_root() {
            return Ok(HashMap::new());
        }
        let request = DescribeNamespaceRequest { id: Some(namespace.components().to_vec()), ..Default::default() };
        let response = self
            .directory()
            .await?
            .describe_namespace(request)
            .await
            .map_err(|error| from_directory(error, namespace))?;
        Ok(response.properties.unwrap_or_default())
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
            (Ok(_), CreateNamespaceMode::Overwrite) => self.drop_namespace(namespace, DropBehavior::Restrict).await?,
            (Err(EngineError::NamespaceNotFound { .. }), _) => {}
            (Err(error), _) => return Err(error),
        }
        let request = CreateNamespaceRequest {
            id: Some(namespace.components().to_vec()),
            properties: Some(properties.clone()),
            ..Default::default()
        };
        match self.directory().await?.create_namespace(request).await.map_err(|error| from_directory(error, namespace))
        {
            Ok(_) => Ok(properties),
            // Another request created it since we looked.
            Err(EngineError::NamespaceAlreadyExists { .. }) if mode == CreateNamespaceMode::ExistOk => {
                self.describe_namespace(namespace).await
            }
            Err(error) => Err(error),
        }
    }

    /// The namespaces directly inside `namespace`, sorted.
    pub async fn list_namespaces(&self, namespace: &Namespace) -> Result<Vec<String>> {
        self.describe_namespace(namespace).await?;
        let request = ListNamespacesRequest { id: Some(namespace.components().to_vec()), ..Default::default() };
        let response =
            self.directory().await?.list_namespaces(request).await.map_err(|error| from_directory(error, namespace))?;
        let mut names = response.namespaces;
        names.sort();
        Ok(names)
    }

    /// Drops `namespace`: refused while it holds tables or namespaces unless cascading
    /// (then its tables and namespaces are dropped first, one by one).
    pub async fn drop_namespace(&self, namespace: &Namespace, behavior: DropBehavior) -> Result<()> {
        if namespace.is_root() {
            return Err(EngineError::invalid_input("the root namespace cannot be dropped"));
        }
        let tables = self.list_tables(namespace).await?;
        let children = self.list_namespaces(namespace).await?;
        if behavior == DropBehavior::Restrict && !(tables.is_empty() && children.is_empty()) {
            return Err(EngineError::NamespaceNotEmpty {
                name: namespace.to_string(),
                tables: tables.len(),
                namespaces: children.len(),
            });
        }
        for table in &tables {
            match self.drop_table(&TableId::new(namespace.clone(), table)?).await {
                Ok(_) | Err(EngineError::TableNotFound { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        for child in &children {
            Box::pin(self.drop_namespace(&namespace.child(child)?, behavior)).await?;
        }
        let request = DropNamespaceRequest { id: Some(namespace.components().to_vec()), ..Default::default() };
        self.directory().await?.drop_namespace(request).await.map_err(|error| from_directory(error, namespace))?;
        Ok(())
    }

    /// Names of the tables directly in `namespace`, sorted; declared tables included.
    pub async fn list_tables(&self, namespace: &Namespace) -> Result<Vec<String>> {
        if namespace.is_root() {
            return self.list_root_tables().await;
        }
        self.describe_namespace(namespace).await?;
        let request = ListTablesRequest { id: Some(namespace.components().to_vec()), ..Default::default() };
        let response =
            self.directory().await?.list_tables(request).await.map_err(|error| from_directory(error, namespace))?;
        let mut names = response.tables;
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Where table `id` lives: a root table at `{root}/{name}.lance`, a namespaced one
    /// where the manifest says.
    pub async fn table_uri(&self, id: &TableId) -> Result<String> {
        if id.namespace().is_root() {
            return Ok(self.root_table_uri(id));
        }
        if let Some(locations) = &self.locations
            && let Some(uri) = locations.get(id).await
        {
            return Ok(uri);
        }
        let request =
            DescribeTableRequest { id: Some(id.components()), vend_credentials: Some(false), ..Default::default() };
        let response =
            self.directory().await?.describe_table(request).await.map_err(|error| from_directory(error, id))?;
        self.located(id, response.location).await
    }

    /// This catalog's uri of the `location` the manifest gives namespaced table `id`,
    /// remembered under weak reads.
    async fn located(&self, id: &TableId, location: Option<String>) -> Result<String> {
        let location = location.ok_or_else(|| EngineError::internal(format!("table '{id}' has no location")))?;
        let uri = self.uri_in_root(&location)?;
        self.remember_location(id, &uri).await;
        Ok(uri)
    }

    /// Keeps where namespaced table `id` is, under weak reads.
    async fn remember_location(&self, id: &TableId, uri: &str) {
        if let Some(locations) = &self.locations {
            locations.insert(id.clone(), uri.to_string()).await;
        }
    }

    /// Forgets where namespaced table `id` was found; says whether anything was known.
    pub(crate) async fn forget_location(&self, id: &TableId) -> bool {
        match &self.locations {
            Some(locations) => locations.remove(id).await.is_some(),
            None => false,
        }
    }

    /// Where a new table `id` is written, and whether this call declared it there (a
    /// failed write then [undeclares](Self::undeclare) it). A namespaced table is
    /// declared in the manifest first, like lance's own `create_table`; one declared
    /// before keeps its location.
    pub(crate) async fn new_table_uri(&self, id: &TableId) -> Result<(String, bool)> {
        if id.namespace().is_root() {
            return Ok((self.root_table_uri(id), false));
        }
        self.describe_namespace(id.namespace()).await?;
        match self.table_uri(id).await {
            Ok(uri) => return Ok((uri, false)),
            Err(EngineError::TableNotFound { .. }) => {}
            Err(error) => return Err(error),
        }
        match self.declare_in_manifest(id, HashMap::new(), None).await {
            Ok(uri) => Ok((uri, true)),
            // Another request declared it since we looked.
            Err(EngineError::TableAlreadyExists { .. }) => Ok((self.table_uri(id).await?, false)),
            Err(error) => Err(error),
        }
    }

    /// Undoes the declaration of a table whose first write failed (logged, not raised:
    /// the write's own error is the one to report).
    pub(crate) async fn undeclare(&self, id: &TableId) {
        if let Err(error) = self.drop_table(id).await {
            tracing::warn!(table = %id, %error, "could not remove the declaration of a table whose creation failed");
        }
    }

    /// Declares table `id` without data (lance's `.lance-reserved` marker, and for a
    /// namespaced table its manifest row); returns its location. A `location` the caller
    /// expects must be the one the catalog gives (lance's rule): a root table's
    /// `{root}/{name}.lance`; a namespaced table's is chosen at random, so only lance's own
    /// URL of it matches.
    pub async fn declare_table(
        &self,
        id: &TableId,
        properties: HashMap<String, String>,
        location: Option<&str>,
    ) -> Result<String> {
        if id.namespace().is_root() {
            let uri = self.root_table_uri(id);
            if let Some(location) = location
                && self.uri_in_root(location).unwrap_or_else(|_| location.to_string()) != uri
            {
                return Err(EngineError::invalid_input(format!(
                    "table '{id}' can only be declared at '{uri}', not '{location}'"
                )));
            }
            return self.declare_root_table(id).await;
        }
        self.describe_namespace(id.namespace()).await?;
        self.declare_in_manifest(id, properties, location).await
    }

    /// Declares namespaced table `id` of a namespace known to exist.
    async fn declare_in_manifest(
        &self,
        id: &TableId,
        properties: HashMap<String, String>,
        location: Option<&str>,
    ) -> Result<String> {
        let request = DeclareTableRequest {
            id: Some(id.components()),
            location: location.map(str::to_string),
            properties: (!properties.is_empty()).then_some(properties),
            vend_credentials: Some(false),
            ..Default::default()
        };
        let response =
            self.directory().await?.declare_table(request).await.map_err(|error| from_directory(error, id))?;
        self.located(id, response.location).await
    }

    /// A root table is its directory: declaring one reserves `{name}.lance/` (no manifest
    /// row, as LanceDB OSS keeps root tables).
    async fn declare_root_table(&self, id: &TableId) -> Result<String> {
        let uri = self.root_table_uri(id);
        if self.exists_at(&uri).await {
            return Err(EngineError::TableAlreadyExists { name: id.to_string() });
        }
        let (store, path) = self.store_at(&uri).await?;
        let marker = path.clone().join(RESERVED_MARKER);
        match store.put_if_absent(&marker, PutPayload::from_static(b"reserved")).await {
            Ok(()) => Ok(uri),
            Err(object_store::Error::AlreadyExists { .. }) => {
                Err(EngineError::TableAlreadyExists { name: id.to_string() })
            }
            Err(error) => Err(EngineError::from(lance::Error::from(error))),
        }
    }

    /// Registers the Lance dataset at `location` (relative to the storage root) as table
    /// `id` of an existing namespace; the data stays where it is.
    pub async fn register_table(&self, id: &TableId, location: &str) -> Result<String> {
        if id.namespace().is_root() {
            return Err(EngineError::invalid_input(
                "a root table is the directory {name}.lance under the storage root and cannot be registered \
                 elsewhere; register tables inside a namespace",
            ));
        }
        let parts = relative_location(location)?;
        self.describe_namespace(id.namespace()).await?;
        let uri = self.root.child_uri(parts.iter().map(String::as_str));
        if !self.exists_at(&uri).await {
            return Err(EngineError::invalid_input(format!("there is no Lance dataset at location '{location}'")));
        }
        let request =
            RegisterTableRequest { id: Some(id.components()), location: parts.join("/"), ..Default::default() };
        self.directory().await?.register_table(request).await.map_err(|error| from_directory(error, id))?;
        self.remember_location(id, &uri).await;
        Ok(uri)
    }

    /// Removes namespaced table `id` from the catalog and keeps its data; returns where
    /// the data is.
    pub async fn deregister_table(&self, id: &TableId) -> Result<String> {
        if id.namespace().is_root() {
            return Err(EngineError::invalid_input(
                "a root table is its directory under the storage root and cannot be deregistered; drop it instead",
            ));
        }
        let uri = self.table_uri(id).await?;
        let request = DeregisterTableRequest { id: Some(id.components()), ..Default::default() };
        self.directory().await?.deregister_table(request).await.map_err(|error| from_directory(error, id))?;
        self.forgotten(id).await;
        Ok(uri)
    }

    /// Renames namespaced table `id` to `to` (in the same or another namespace): its data
    /// stays where it is, only its manifest row changes. The new row is written before
    /// the old one goes, so the table is never missing; for that instant both names find it.
    pub async fn rename_table(&self, id: &TableId, to: &TableId) -> Result<String> {
        if id.namespace().is_root() || to.namespace().is_root() {
            return Err(EngineError::NotSupported {
                message: "renaming a root table would copy its directory ({name}.lance) object by object; \
                          only tables inside namespaces can be renamed"
                    .to_string(),
            });
        }
        let uri = self.table_uri(id).await?;
        let relative = uri
            .strip_prefix(self.root.uri())
            .and_then(|rest| rest.strip_prefix('/'))
            .ok_or_else(|| EngineError::internal(format!("table '{id}' is outside the storage root")))?;
        self.register_table(to, relative).await?;
        if let Err(error) = self.deregister_table(id).await {
            if let Err(undo) = self.deregister_table(to).await {
                tracing::warn!(table = %to, %undo, "could not undo the new name of a failed rename");
            }
            return Err(error);
        }
        Ok(uri)
    }

    /// Removes a namespaced table (its manifest row, then its directory), declared or not.
    pub(crate) async fn drop_namespaced_table(&self, id: &TableId) -> Result<String> {
        let uri = self.table_uri(id).await?;
        let request = DropTableRequest { id: Some(id.components()), ..Default::default() };
        self.directory().await?.drop_table(request).await.map_err(|error| from_directory(error, id))?;
        self.forgotten(id).await;
        Ok(uri)
    }

    /// Forgets the location and the snapshot of a table that is gone.
    async fn forgotten(&self, id: &TableId) {
        self.forget_location(id).await;
        if let Some(snapshots) = &self.snapshots {
            snapshots.invalidate(id).await;
        }
    }

    /// This catalog's uri of a location the manifest gives as a full URL (percent-encoded,
    /// `file://` for a local root). A location outside the root is refused.
    fn uri_in_root(&self, location: &str) -> Result<String> {
        let outside = || {
            EngineError::internal(format!(
                "the namespace catalog places a table at '{location}', outside the storage root"
            ))
        };
        let root = match self.root.local_dir() {
            Some(dir) => Url::from_directory_path(dir).ok(),
            None => Url::parse(&format!("{}/", self.root.uri())).ok(),
        }
        .ok_or_else(outside)?;
        let location_url = Url::parse(location).map_err(|_| outside())?;
        let rest = location_url.as_str().strip_prefix(root.as_str()).ok_or_else(outside)?;
        let decoded = rest
            .split('/')
            .map(|part| percent_encoding::percent_decode_str(part).decode_utf8().map(|part| part.into_owned()))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|_| outside())?;
        let parts = relative_location(&decoded.join("/")).map_err(|_| outside())?;
        Ok(self.root.child_uri(parts.iter().map(String::as_str)))
    }
}

/// The path components of a location relative to the storage root: no scheme, no leading
/// `/`, no empty, `.` or `..` component.
fn relative_location(location: &str) -> Result<Vec<String>> {
    let refuse = |reason: &str| {
        Err(EngineError::invalid_input(format!(
            "location '{location}' {reason}; give a path relative to the storage root, like 'dir/table.lance'"
        )))
    };
    if location.contains("://") {
        return refuse("is a URI");
    }
    if location.starts_with('/') || location.starts_with('\\') {
        return refuse("is absolute");
    }
    let parts = location.trim_end_matches('/').split('/').map(str::to_string).collect::<Vec<_>>();
    if parts.iter().any(|part| part.is_empty() || part == "." || part == ".." || part.contains('\\')) {
        return refuse("leaves the storage root or has empty components");
    }
    Ok(parts)
}

/// What a directory-namespace failure concerning `subject` (a table or namespace) means.
fn from_directory(error: lance::Error, subject: &dyn Display) -> EngineError {
    let known = match &error {
        lance::Error::Namespace { source, .. } => source.downcast_ref::<NamespaceError>(),
        _ => None,
    };
    let name = subject.to_string();
    match known {
        Some(NamespaceError::TableNotFound { .. }) => EngineError::TableNotFound { name },
        Some(NamespaceError::TableAlreadyExists { .. }) => EngineError::TableAlreadyExists { name },
        // The message is the id of the namespace missing, possibly a parent of `subject`.
        Some(NamespaceError::NamespaceNotFound { message }) => EngineError::NamespaceNotFound { name: message.clone() },
        Some(NamespaceError::NamespaceAlreadyExists { .. }) => EngineError::NamespaceAlreadyExists { name },
        Some(NamespaceError::NamespaceNotEmpty { .. }) => {
            EngineError::NamespaceNotEmpty { name, tables: 0, namespaces: 0 }
        }
        Some(NamespaceError::InvalidInput { message }) => EngineError::invalid_input(message.clone()),
        Some(NamespaceError::Unsupported { message }) => EngineError::NotSupported { message: message.clone() },
        _ => error.into(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use arrow_array::{Int64Array, RecordBatch};
    use arrow_schema::{DataType, Field, Schema};
    use lancefleet_common::storage::StorageRoot;

    use super::*;
    use crate::catalog::ReadVersion;
    use crate::write::CreateMode;

    fn batch(rows: i64) -> (arrow_schema::SchemaRef, Vec<RecordBatch>) {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from_iter_values(0..rows))])
            .expect("valid batch");
        (schema, vec![batch])
    }

    #[tokio::test]
    async fn namespaced_tables_live_where_the_manifest_says() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = StorageRoot::resolve(dir.path().to_str().expect("utf-8")).expect("root");
        let catalog = Catalog::new(root.clone(), &BTreeMap::new(), None);
        let ns = Namespace::parse("ns").expect("valid");
        let id = TableId::new(ns.clone(), "t").expect("valid");
        let (schema, batches) = batch(4);

        // No namespace, no table; nothing is written.
        let refused = catalog.create_table(&id, schema.clone(), batches.clone(), CreateMode::Create).await;
        assert!(matches!(refused, Err(EngineError::NamespaceNotFound { .. })), "{refused:?}");
        catalog.create_namespace(&ns, CreateNamespaceMode::Create, HashMap::new()).await.expect("created");
        catalog.create_table(&id, schema.clone(), batches, CreateMode::Create).await.expect("created");

        // lance's layout: `{hex}_ns$t` at the root, found by another catalog too.
        let uri = catalog.table_uri(&id).await.expect("located");
        let directory = uri.rsplit('/').next().expect("a name");
        assert!(directory.ends_with("_ns$t") && directory.len() == "_ns$t".len() + 8, "{directory}");
        let other = Catalog::new(root, &BTreeMap::new(), None);
        assert_eq!(other.list_tables(&ns).await.expect("listed"), ["t"]);
        assert_eq!(
            other.open_table(&id, ReadVersion::default()).await.expect("opened").count_rows(None).await.ok(),
            Some(4)
        );
        assert!(other.list_tables(&Namespace::root()).await.expect("listed").is_empty());

        // Declared: listed, not opened; a rename keeps the data where it is.
        let declared = TableId::new(ns.clone(), "d").expect("valid");
        catalog.declare_table(&declared, HashMap::new(), None).await.expect("declared");
        assert_eq!(catalog.list_tables(&ns).await.expect("listed"), ["d", "t"]);
        assert!(matches!(
            catalog.open_table(&declared, ReadVersion::default()).await,
            Err(EngineError::TableNotFound { .. })
        ));
        let renamed = TableId::new(ns.clone(), "t2").expect("valid");
        assert_eq!(catalog.rename_table(&id, &renamed).await.expect("renamed"), uri);
        assert!(matches!(other.open_table(&id, ReadVersion::default()).await, Err(EngineError::TableNotFound { .. })));
        assert_eq!(other.table_uri(&renamed).await.expect("located"), uri);

        other.drop_table(&renamed).await.expect("dropped");
        assert!(!dir.path().join(directory).exists(), "the data is removed");
        let refused = catalog.drop_namespace(&ns, DropBehavior::Restrict).await;
        assert!(matches!(refused, Err(EngineError::NamespaceNotEmpty { tables: 1, .. })), "{refused:?}");
        catalog.drop_namespace(&ns, DropBehavior::Cascade).await.expect("dropped");
        assert!(other.list_namespaces(&Namespace::root()).await.expect("listed").is_empty());
    }

    #[test]
    fn relative_locations_stay_under_the_root() {
        assert_eq!(relative_location("ns/t.lance").expect("valid"), ["ns", "t.lance"]);
        assert_eq!(relative_location("t.lance/").expect("valid"), ["t.lance"]);
        for bad in ["", "/abs/t.lance", "s3://bucket/t.lance", "../t.lance", "a/../../t", "a//b", "./t", "a\\..\\b"] {
            assert!(matches!(relative_location(bad), Err(EngineError::InvalidInput { .. })), "{bad}");
        }
    }
}
