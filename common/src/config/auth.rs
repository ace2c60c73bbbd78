//! Who may call the REST and Flight endpoints (`[auth]`): API keys with roles and scopes,
//! kept as SHA-256 digests, and the audit log's sink.
//!
//! A key is a random token (`lancefleet key new` makes one). The server never holds it:
//! configuration lists each key's id, its digest, its role and optionally its scope, inline
//! (`[[auth.keys]]`) or in a file of `[[keys]]` tables (`auth.keys_file`, e.g. mounted from
//! a Kubernetes Secret). A digest lookup is safe for keys because they are random (128 bits
//! or more); passwords would need a slow hash, keys checked on every request would not
//! bear one.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Toml};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{ConfigError, ensure};

/// Authentication and audit settings (`[auth]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Keys accepted, by digest. None here and no `keys_file`: every request is accepted,
    /// with or without a key (a local standalone server). Default: none.
    pub keys: Vec<ApiKey>,
    /// A TOML file of more keys as `[[keys]]` tables, read at start and again when it
    /// changes. Default: none.
    pub keys_file: Option<PathBuf>,
    /// Where the audit log goes: one JSON line per write and admin request. `stdout`,
    /// `stderr`, or a file appended to. Default: none (off).
    pub audit_log: Option<String>,
    /// Removed: keys in plain text. Set it and the configuration is refused with a pointer
    /// to `keys`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub api_keys: Vec<String>,
}

/// One accepted key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    /// The key's name in logs and audit lines (never the key itself).
    pub id: String,
    /// Lower-case hex SHA-256 of the key (`lancefleet key hash`).
    pub sha256: String,
    /// What the key may do.
    pub role: Role,
    /// The namespaces and tables it may reach, as REST ids (`sales`, `sales$orders`); an
    /// entry covers itself and everything under it. Empty: every table.
    #[serde(default)]
    pub scope: Vec<String>,
}

/// What a key may do; each role may do what the ones before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Reads: list, describe, query, count, versions, tags, indexes and their stats.
    ReadOnly,
    /// And writes: create tables, insert, merge, update, delete, schema changes, indexes,
    /// tags, restore.
    ReadWrite,
    /// And administration: drop tables, create and drop namespaces, the cluster view.
    Admin,
}

impl Role {
    /// The name configuration uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReadOnly => "read-only",
            Self::ReadWrite => "read-write",
            Self::Admin => "admin",
        }
    }
}

/// The keys of a `keys_file`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default)]
    keys: Vec<ApiKey>,
}

/// Lower-case hex SHA-256 of `key`: what configuration lists for it.
pub fn key_digest(key: &str) -> String {
    format!("{:x}", Sha256::digest(key.as_bytes()))
}

impl AuthConfig {
    /// Whether keys are checked at all.
    pub fn checks_keys(&self) -> bool {
        !self.keys.is_empty() || self.keys_file.is_some()
    }

    /// Every accepted key: the inline ones and the file's, checked.
    pub fn all_keys(&self) -> Result<Vec<ApiKey>, ConfigError> {
        let mut keys = self.keys.clone();
        if let Some(path) = &self.keys_file {
            keys.extend(read_keys_file(path)?);
        }
        check_keys(&keys)?;
        Ok(keys)
    }

    /// Refuses plain-text keys, malformed entries and an unreadable keys file.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ensure(self.api_keys.is_empty(), "auth.api_keys", || {
            "plain-text keys are no longer accepted: list each key's SHA-256 under [[auth.keys]] \
             (id, sha256, role); `lancefleet key hash` prints it"
                .into()
        })?;
        self.all_keys().map(drop)
    }
}

/// The keys of the TOML file at `path`.
fn read_keys_file(path: &Path) -> Result<Vec<ApiKey>, ConfigError> {
    let reason = |what: String| ConfigError::Value { key: "auth.keys_file".into(), reason: what };
    if !path.is_file() {
        return Err(reason(format!("{} is not a readable file", path.display())));
    }
    let file: KeysFile = Figment::from(Toml::file_exact(path))
        .extract()
        .map_err(|error| reason(format!("{} is not a keys file: {error}", path.display())))?;
    Ok(file.keys)
}

/// Ids present and unique, digests well formed and unique, scope entries not blank.
fn check_keys(keys: &[ApiKey]) -> Result<(), ConfigError> {
    let mut ids = HashSet::new();
    let mut digests = HashSet::new();
    for key in keys {
        ensure(!key.id.trim().is_empty() && key.id.chars().all(|c| c.is_ascii_graphic()), "auth.keys", || {
            format!("key id '{}' must be printable ASCII without spaces", key.id)
        })?;
        ensure(ids.insert(key.id.as_str()), "auth.keys", || format!("key id '{}' is listed twice", key.id))?;
        ensure(
            key.sha256.len() == 64 && key.sha256.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')),
            "auth.keys",
            || format!("key '{}': sha256 must be 64 lower-case hex digits", key.id),
        )?;
        ensure(digests.insert(key.sha256.as_str()), "auth.keys", || {
            format!("key '{}' has the digest of another key", key.id)
        })?;
        ensure(key.scope.iter().all(|entry| !entry.trim().is_empty()), "auth.keys", || {
            format!("key '{}': scope entries must not be empty", key.id)
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, secret: &str, role: Role) -> ApiKey {
        ApiKey { id: id.into(), sha256: key_digest(secret), role, scope: Vec::new() }
    }

    #[test]
    fn digests_are_sha256_hex() {
        assert_eq!(key_digest("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn roles_are_ordered_by_what_they_allow() {
        assert!(Role::ReadOnly < Role::ReadWrite && Role::ReadWrite < Role::Admin);
    }

    #[test]
    fn keys_come_inline_and_from_a_file_and_bad_entries_are_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("keys.toml");
        let reader = format!(
            "[[keys]]\nid = \"reader\"\nsha256 = \"{}\"\nrole = \"read-only\"\nscope = [\"sales\"]\n",
            key_digest("r")
        );
        std::fs::write(&file, reader).expect("write");
        let config = AuthConfig {
            keys: vec![key("admin", "a", Role::Admin)],
            keys_file: Some(file.clone()),
            ..Default::default()
        };
        let keys = config.all_keys().expect("valid");
        assert_eq!(keys.iter().map(|key| key.id.as_str()).collect::<Vec<_>>(), ["admin", "reader"]);
        assert_eq!(keys[1].scope, ["sales"]);

        let twice =
            AuthConfig { keys: vec![key("a", "x", Role::Admin), key("a", "y", Role::Admin)], ..Default::default() };
        assert!(twice.validate().unwrap_err().to_string().contains("listed twice"));
        let same =
            AuthConfig { keys: vec![key("a", "x", Role::Admin), key("b", "x", Role::Admin)], ..Default::default() };
        assert!(same.validate().is_err());
        let mut short = key("a", "x", Role::Admin);
        short.sha256.truncate(10);
        assert!(AuthConfig { keys: vec![short], ..Default::default() }.validate().is_err());
        let plain = AuthConfig { api_keys: vec!["secret".into()], ..Default::default() };
        assert!(plain.validate().unwrap_err().to_string().contains("lancefleet key hash"));
        let missing = AuthConfig { keys_file: Some(dir.path().join("absent.toml")), ..Default::default() };
        assert!(missing.validate().unwrap_err().to_string().contains("auth.keys_file"));
    }
}
