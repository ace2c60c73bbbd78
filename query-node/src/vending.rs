//! Credential vending: what `describe_table` and `declare` hand a caller so that it can
//! open a table in the object store itself (`storage.vend_credentials`; the security
//! model is in docs/security.md).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use lance_namespace_impls::{CredentialVendor, create_credential_vendor_for_location};
use lancefleet_common::config::ConfigError;
use lancefleet_common::storage::{CredentialVending, StorageConfig};
use lancefleet_engine::EngineError;

use crate::error::ApiError;

/// The `storage.options` keys that say how to reach the store, never who may: the only
/// ones short-lived vending passes on (an allowlist, so that an unknown key stays home).
const CONNECTION_OPTIONS: &[&str] = &[
    "aws_endpoint",
    "endpoint",
    "aws_region",
    "region",
    "allow_http",
    "aws_allow_http",
    "aws_virtual_hosted_style_request",
    "virtual_hosted_style_request",
    "azure_storage_account_name",
    "account_name",
    "azure_endpoint",
    "azure_storage_endpoint",
    "azure_storage_use_emulator",
    "use_emulator",
    "azure_allow_http",
];

/// The vending policy in force.
#[derive(Clone)]
pub enum Vending {
    /// The location only: readers bring their own credentials.
    None,
    /// This node's `storage.options`, keys included.
    Static(Arc<BTreeMap<String, String>>),
    /// Connection settings plus credentials that lance's vendor scopes to the table's
    /// prefix and that expire (`expires_at_millis` among the options).
    ShortLived {
        /// The non-secret part of `storage.options`.
        connection: Arc<BTreeMap<String, String>>,
        /// lance's vendor for the root's object store, caching what it vended until
        /// shortly before it expires.
        vendor: Arc<dyn CredentialVendor>,
    },
}

impl std::fmt::Debug for Vending {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            Self::None => "Vending::None",
            Self::Static(_) => "Vending::Static",
            Self::ShortLived { .. } => "Vending::ShortLived",
        })
    }
}

impl Vending {
    /// The policy of `storage`; a short-lived one builds its vendor now, so that a
    /// missing role or account fails the start, not the first reader.
    pub async fn new(storage: &StorageConfig) -> Result<Self, ConfigError> {
        match storage.vend_credentials {
            CredentialVending::None => Ok(Self::None),
            CredentialVending::Static => Ok(Self::Static(Arc::new(storage.options.clone()))),
            CredentialVending::ShortLived => {
                let invalid = |reason: String| ConfigError::Value { key: "storage.credential_vendor".into(), reason };
                let properties = storage.credential_vendor.clone().into_iter().collect::<HashMap<_, _>>();
                let vendor = create_credential_vendor_for_location(&storage.root, &properties)
                    .await
                    .map_err(|error| invalid(error.to_string()))?
                    .ok_or_else(|| {
                        invalid(format!("no credential vendor serves the storage root '{}'", storage.root))
                    })?;
                Ok(Self::ShortLived {
                    connection: Arc::new(connection_options(&storage.options)),
                    vendor: vendor.into(),
                })
            }
        }
    }

    /// The storage options for the table at `location`, or `None` under the `none` policy.
    pub async fn storage_options(&self, location: &str) -> Result<Option<BTreeMap<String, String>>, ApiError> {
        match self {
            Self::None => Ok(None),
            Self::Static(options) => Ok(Some(options.as_ref().clone())),
            Self::ShortLived { connection, vendor } => {
                let vended = vendor.vend_credentials(location, None).await.map_err(EngineError::from)?;
                let mut options = connection.as_ref().clone();
                options.extend(vended.storage_options);
                Ok(Some(options))
            }
        }
    }
}

/// The entries of `options` that only say how to reach the store.
fn connection_options(options: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    options
        .iter()
        .filter(|(key, _)| CONNECTION_OPTIONS.contains(&key.to_ascii_lowercase().as_str()))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_connection_settings_are_passed_on() {
        let options = BTreeMap::from(
            [
                ("aws_endpoint", "http://127.0.0.1:9000"),
                ("AWS_REGION", "eu-west-1"),
                ("allow_http", "true"),
                ("aws_access_key_id", "AKIA"),
                ("aws_secret_access_key", "secret"),
                ("aws_session_token", "token"),
                ("azure_storage_account_key", "key"),
                ("some_future_key", "?"),
            ]
            .map(|(key, value)| (key.to_string(), value.to_string())),
        );
        let kept = connection_options(&options);
        assert_eq!(kept.keys().map(String::as_str).collect::<Vec<_>>(), ["AWS_REGION", "allow_http", "aws_endpoint"]);
    }

    #[tokio::test]
    async fn a_short_lived_policy_needs_what_its_vendor_needs() {
        let storage = StorageConfig {
            root: "s3://bucket/prefix".into(),
            vend_credentials: CredentialVending::ShortLived,
            ..StorageConfig::default()
        };
        // lance's AWS vendor cannot assume a role nobody named.
        let refused = Vending::new(&storage).await;
        assert!(
            matches!(&refused, Err(ConfigError::Value { key, reason }) if key == "storage.credential_vendor" && reason.contains("aws_role_arn")),
            "{refused:?}"
        );
    }
}
