//! Versions and tags of a table: restore an old version, and name versions with tags.

use std::collections::HashMap;

use lance::Dataset;
use lance::dataset::refs::TagContents;

use crate::catalog::Catalog;
use crate::error::{EngineError, Result};
use crate::table_id::TableId;

impl Catalog {
    /// Makes the data of `version` the latest again: a new version, history kept.
    pub async fn restore(&self, id: &TableId, version: u64) -> Result<Dataset> {
        let restored = self
            .write_latest(id, "a restore", |_latest| async move {
                let mut old = self.load(id, Some(version)).await?;
                old.restore().await?;
                Ok(old)
            })
            .await?;
        Ok(self.committed(id, restored).await)
    }

    /// Every tag of a table.
    pub async fn list_tags(&self, id: &TableId) -> Result<HashMap<String, TagContents>> {
        Ok(self.load(id, None).await?.tags().list().await?)
    }

    /// The version `tag` names.
    pub async fn tag_version(&self, id: &TableId, tag: &str) -> Result<u64> {
        Ok(self.load(id, None).await?.tags().get_version(tag).await?)
    }

    /// Names `version` with a new `tag`; an existing tag is an error.
    pub async fn create_tag(&self, id: &TableId, tag: &str, version: u64) -> Result<()> {
        let dataset = self.existing_version(id, version).await?;
        Ok(dataset.tags().create(tag, version).await?)
    }

    /// Points an existing `tag` at `version`.
    pub async fn update_tag(&self, id: &TableId, tag: &str, version: u64) -> Result<()> {
        let dataset = self.existing_version(id, version).await?;
        Ok(dataset.tags().update(tag, version).await?)
    }

    /// Removes `tag` (the version it named stays).
    pub async fn delete_tag(&self, id: &TableId, tag: &str) -> Result<()> {
        Ok(self.load(id, None).await?.tags().delete(tag).await?)
    }

    /// The latest version of a table, after checking that `version` exists in it.
    async fn existing_version(&self, id: &TableId, version: u64) -> Result<Dataset> {
        let dataset = self.load(id, None).await?;
        if version == 0 || version > dataset.version().version {
            return Err(EngineError::VersionNotFound { name: id.to_string(), version });
        }
        // Cleaned-up versions below the latest are missing too.
        self.load(id, Some(version)).await?;
        Ok(dataset)
    }
}
