//! Where tables live: the storage root and the URIs derived from it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, ensure};

/// URL schemes accepted for a storage root besides plain local paths.
const OBJECT_STORE_SCHEMES: &[&str] = &["s3", "s3+ddb", "gs", "az", "abfss", "memory", "file"];

/// Storage configuration (`[storage]` in the config file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Directory or object-store URI under which tables live as `{root}/{table}.lance`:
    /// a local path, or `s3://bucket/prefix`, `gs://…`, `az://…`. Default: `./lancefleet-data`.
    pub root: String,
    /// Options handed to lance's object store for every table, e.g. `aws_endpoint`,
    /// `aws_region`, `allow_http`, `azure_storage_account_name`. Credentials are also
    /// read from the usual environment variables (`AWS_*`, `AZURE_*`, `GOOGLE_*`).
    /// Booleans and numbers are accepted and passed on as text (`allow_http = true`).
    #[serde(deserialize_with = "scalars_as_strings")]
    pub options: BTreeMap<String, String>,
    /// What `describe_table` hands a reader so that it can open the table in the object
    /// store itself (Lance engines through the namespace spec). Default: `none`.
    pub vend_credentials: CredentialVending,
    /// The credential vendor of `vend_credentials = "short_lived"`: lance's vendor
    /// properties without their `credential_vendor.` prefix, e.g. `aws_role_arn`,
    /// `aws_duration_millis`, `permission` (`read` by default), `gcp_service_account`,
    /// `azure_account_name`. Default: empty.
    #[serde(deserialize_with = "scalars_as_strings")]
    pub credential_vendor: BTreeMap<String, String>,
}

/// The credential-vending policy of `describe_table` (see docs/security.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialVending {
    /// The table's location only: readers bring their own store credentials.
    #[default]
    None,
    /// The location and this node's `storage.options` (endpoint, region and any keys in
    /// them): every caller allowed to read the table can use those credentials.
    Static,
    /// The location, the connection settings of `storage.options` (never its keys), and
    /// credentials scoped to the table's prefix that expire, from lance's vendors: STS
    /// `AssumeRole` (S3), downscoped tokens (GCS), SAS tokens (Azure).
    ShortLived,
}

impl StorageConfig {
    /// Checks the root, and that a short-lived vending policy has an object store to vend for.
    pub fn validate(&self) -> Result<(), ConfigError> {
        StorageRoot::check(&self.root)
            .map_err(|error| ConfigError::Value { key: "storage.root".into(), reason: error.to_string() })?;
        ensure(
            self.vend_credentials != CredentialVending::ShortLived
                || ["s3://", "gs://", "az://", "abfss://"].iter().any(|scheme| self.root.trim().starts_with(scheme)),
            "storage.vend_credentials",
            || "short_lived vends object-store credentials: it needs an s3://, gs:// or az:// storage root".into(),
        )
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            root: "./lancefleet-data".to_string(),
            options: BTreeMap::new(),
            vend_credentials: CredentialVending::None,
            credential_vendor: BTreeMap::new(),
        }
    }
}

/// Reads a map whose values may be strings, booleans or numbers, keeping them as text.
fn scalars_as_strings<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Bool(bool),
        Integer(i64),
        Float(f64),
    }
    let map = BTreeMap::<String, Scalar>::deserialize(deserializer)?;
    Ok(map
        .into_iter()
        .map(|(key, value)| {
            let text = match value {
                Scalar::Text(text) => text,
                Scalar::Bool(flag) => flag.to_string(),
                Scalar::Integer(number) => number.to_string(),
                Scalar::Float(number) => number.to_string(),
            };
            (key, text)
        })
        .collect())
}

/// A validated storage root, normalised to a URI without a trailing slash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageRoot {
    uri: String,
    local_dir: Option<std::path::PathBuf>,
}

/// Why a storage root was refused.
#[derive(Debug, thiserror::Error)]
pub enum StorageRootError {
    /// The root is empty.
    #[error("the storage root is empty")]
    Empty,
    /// The root has a URL scheme lance cannot commit to safely.
    #[error("unsupported storage scheme '{scheme}' in '{root}' (use a local path or one of {OBJECT_STORE_SCHEMES:?})")]
    UnsupportedScheme {
        /// The scheme found.
        scheme: String,
        /// The root as given.
        root: String,
    },
    /// A local root could not be created or resolved.
    #[error("cannot use local storage root '{root}': {source}")]
    Local {
        /// The root as given.
        root: String,
        /// The I/O failure.
        source: std::io::Error,
    },
}

impl StorageRoot {
    /// Checks `root` as [`Self::resolve`] would, without creating anything: a supported
    /// scheme, or a local path that is a directory or does not exist yet.
    pub fn check(root: &str) -> Result<(), StorageRootError> {
        let trimmed = root.trim();
        if trimmed.is_empty() {
            return Err(StorageRootError::Empty);
        }
        let local = match trimmed.split_once("://") {
            Some((scheme, _)) if !OBJECT_STORE_SCHEMES.contains(&scheme) => {
                return Err(StorageRootError::UnsupportedScheme { scheme: scheme.to_string(), root: root.to_string() });
            }
            Some(("file", path)) => path,
            Some(_) => return Ok(()),
            None => trimmed,
        };
        match std::fs::metadata(local) {
            Ok(metadata) if !metadata.is_dir() => Err(StorageRootError::Local {
                root: root.to_string(),
                source: std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
            }),
            _ => Ok(()),
        }
    }

    /// Validates `root`. A local path is created if missing and made absolute.
    pub fn resolve(root: &str) -> Result<Self, StorageRootError> {
        let trimmed = root.trim();
        if trimmed.is_empty() {
            return Err(StorageRootError::Empty);
        }
        if let Some((scheme, _)) = trimmed.split_once("://") {
            if !OBJECT_STORE_SCHEMES.contains(&scheme) {
                return Err(StorageRootError::UnsupportedScheme { scheme: scheme.to_string(), root: root.to_string() });
            }
            if scheme == "file" {
                return Self::local(&trimmed["file://".len()..], root);
            }
            return Ok(Self { uri: trimmed.trim_end_matches('/').to_string(), local_dir: None });
        }
        Self::local(trimmed, root)
    }

    fn local(path: &str, original: &str) -> Result<Self, StorageRootError> {
        let to_error = |source| StorageRootError::Local { root: original.to_string(), source };
        std::fs::create_dir_all(path).map_err(to_error)?;
        let absolute = std::fs::canonicalize(Path::new(path)).map_err(to_error)?;
        Ok(Self { uri: absolute.to_string_lossy().trim_end_matches('/').to_string(), local_dir: Some(absolute) })
    }

    /// The root URI (or absolute local path), without a trailing slash.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The local directory, when the root is on the local file system.
    pub fn local_dir(&self) -> Option<&Path> {
        self.local_dir.as_deref()
    }

    /// The URI of a child path made of already-validated components.
    pub fn child_uri<'a>(&self, components: impl IntoIterator<Item = &'a str>) -> String {
        let mut uri = self.uri.clone();
        for component in components {
            uri.push('/');
            uri.push_str(component);
        }
        uri
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_roots_are_created_and_made_absolute() {
        let temp = tempfile::tempdir().expect("temp dir");
        let wanted = temp.path().join("nested/data");
        let root = StorageRoot::resolve(wanted.to_str().expect("utf8")).expect("valid root");
        assert!(wanted.is_dir());
        assert!(Path::new(root.uri()).is_absolute());
        assert_eq!(root.local_dir(), Some(std::fs::canonicalize(&wanted).expect("exists").as_path()));
        assert!(root.child_uri(["t.lance"]).ends_with("/nested/data/t.lance"));
    }

    #[test]
    fn object_store_roots_keep_their_uri() {
        let root = StorageRoot::resolve("s3://bucket/prefix/").expect("valid root");
        assert_eq!(root.uri(), "s3://bucket/prefix");
        assert_eq!(root.local_dir(), None);
        assert_eq!(root.child_uri(["ns", "t.lance"]), "s3://bucket/prefix/ns/t.lance");
        assert!(StorageRoot::resolve("az://container/db").is_ok());
        assert!(StorageRoot::resolve("gs://bucket").is_ok());
    }

    #[test]
    fn unknown_schemes_and_empty_roots_are_refused() {
        assert!(matches!(StorageRoot::resolve("cached-s3://bucket"), Err(StorageRootError::UnsupportedScheme { .. })));
        assert!(matches!(StorageRoot::resolve("  "), Err(StorageRootError::Empty)));
    }
}
