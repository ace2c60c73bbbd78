//! A commit handler that writes a manifest again when the object store lost the request.
//!
//! lance commits a version by writing its manifest with a conditional put (put-if-absent).
//! When that one request fails in transit (a connection reset before the store answered, a
//! timeout), lance reads the version back: when the manifest is there and is its own, the
//! commit stands; when it is absent, the whole write fails, although only one request went
//! wrong and an index build, say, may have run for minutes before it. [`RetryingCommitHandler`]
//! wraps lance's handler for the store and, when a manifest write fails other than by a
//! conflict and the version is certainly absent, writes it again. That is safe because the
//! put is conditional: if the version exists by then (a first attempt that arrived late,
//! or another writer) the second put is a conflict, and lance resolves a conflict by
//! reading the version back (its own: the commit stands) or rebasing (another writer's).

use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use lance::io::ObjectStore;
use lance_table::format::{IndexMetadata, Manifest, Transaction};
use lance_table::io::commit::{
    CommitError, CommitHandler, ConditionalPutCommitHandler, ManifestLocation, ManifestNamingScheme, ManifestWriter,
    PredecessorIdentity,
};
use object_store::ObjectStore as RawObjectStore;
use object_store::path::Path;

use super::commit::{ATTEMPTS, BACKOFF, is_transient};

/// lance's commit handler for a store, whose manifest writes are tried again as the module
/// says. Everything else is the wrapped handler's.
#[derive(Debug)]
pub(crate) struct RetryingCommitHandler {
    inner: Arc<dyn CommitHandler>,
}

impl RetryingCommitHandler {
    /// The handler for tables under `root_uri`: lance's conditional put, wrapped, which is
    /// the handler lance picks for every scheme LanceFleet accepts but `s3+ddb` (on Linux;
    /// `commit_handler_from_url`). `None` for `s3+ddb`, whose DynamoDB handler lance makes
    /// itself from the URI.
    pub(crate) fn for_root(root_uri: &str) -> Option<Arc<dyn CommitHandler>> {
        if root_uri.starts_with("s3+ddb:") {
            return None;
        }
        Some(Arc::new(Self { inner: Arc::new(ConditionalPutCommitHandler) }))
    }
}

#[async_trait]
impl CommitHandler for RetryingCommitHandler {
    fn is_version_not_found_definitive(&self) -> bool {
        self.inner.is_version_not_found_definitive()
    }

    fn propagate_commit_error_after_success(&self) -> bool {
        self.inner.propagate_commit_error_after_success()
    }

    async fn resolve_latest_location(
        &self,
        base_path: &Path,
        object_store: &ObjectStore,
    ) -> lance::Result<ManifestLocation> {
        self.inner.resolve_latest_location(base_path, object_store).await
    }

    async fn resolve_version_location(
        &self,
        base_path: &Path,
        version: u64,
        object_store: &dyn RawObjectStore,
    ) -> lance::Result<ManifestLocation> {
        self.inner.resolve_version_location(base_path, version, object_store).await
    }

    async fn version_exists(
        &self,
        base_path: &Path,
        version: u64,
        object_store: &dyn RawObjectStore,
        naming_scheme: ManifestNamingScheme,
    ) -> lance::Result<bool> {
        self.inner.version_exists(base_path, version, object_store, naming_scheme).await
    }

    fn list_detached_manifest_locations<'a>(
        &self,
        base_path: &Path,
        object_store: &'a ObjectStore,
    ) -> BoxStream<'a, lance::Result<ManifestLocation>> {
        self.inner.list_detached_manifest_locations(base_path, object_store)
    }

    fn list_manifest_locations<'a>(
        &self,
        base_path: &Path,
        object_store: &'a ObjectStore,
        sorted_descending: bool,
    ) -> BoxStream<'a, lance::Result<ManifestLocation>> {
        self.inner.list_manifest_locations(base_path, object_store, sorted_descending)
    }

    fn list_manifest_locations_since<'a>(
        &self,
        base_path: &Path,
        object_store: &'a ObjectStore,
        since_version: u64,
    ) -> BoxStream<'a, lance::Result<ManifestLocation>> {
        self.inner.list_manifest_locations_since(base_path, object_store, since_version)
    }

    async fn commit(
        &self,
        manifest: &mut Manifest,
        indices: Option<Vec<IndexMetadata>>,
        base_path: &Path,
        object_store: &ObjectStore,
        manifest_writer: ManifestWriter,
        naming_scheme: ManifestNamingScheme,
        transaction: Option<Transaction>,
    ) -> Result<ManifestLocation, CommitError> {
        let mut tries = 1;
        loop {
            let attempt = self.inner.commit(
                manifest,
                indices.clone(),
                base_path,
                object_store,
                manifest_writer,
                naming_scheme,
                transaction.clone(),
            );
            let error = match attempt.await {
                Err(CommitError::OtherError(error)) if is_transient(&error) && tries < ATTEMPTS => error,
                outcome => return outcome,
            };
            tokio::time::sleep(BACKOFF * tries).await;
            let version = manifest.version;
            let absent = self.inner.is_version_not_found_definitive()
                && matches!(
                    self.inner.version_exists(base_path, version, object_store.inner.as_ref(), naming_scheme).await,
                    Ok(false)
                );
            if !absent {
                // There, or unknown: lance reads the version back and decides.
                return Err(CommitError::OtherError(error));
            }
            tracing::warn!(%error, version, tries, "writing a manifest failed at the object store; writing it again");
            tries += 1;
        }
    }

    fn supports_predecessor_condition(&self) -> bool {
        self.inner.supports_predecessor_condition()
    }

    async fn resolve_latest_identity(
        &self,
        base_path: &Path,
        object_store: &ObjectStore,
    ) -> lance::Result<Option<PredecessorIdentity>> {
        self.inner.resolve_latest_identity(base_path, object_store).await
    }

    async fn resolve_identity(
        &self,
        base_path: &Path,
        object_store: &ObjectStore,
        version: u64,
    ) -> lance::Result<Option<PredecessorIdentity>> {
        self.inner.resolve_identity(base_path, object_store, version).await
    }

    async fn commit_after(
        &self,
        manifest: &mut Manifest,
        indices: Option<Vec<IndexMetadata>>,
        base_path: &Path,
        object_store: &ObjectStore,
        manifest_writer: ManifestWriter,
        naming_scheme: ManifestNamingScheme,
        transaction: Option<Transaction>,
        predecessor: &PredecessorIdentity,
    ) -> Result<ManifestLocation, CommitError> {
        self.inner
            .commit_after(
                manifest,
                indices,
                base_path,
                object_store,
                manifest_writer,
                naming_scheme,
                transaction,
                predecessor,
            )
            .await
    }

    async fn forget_version(&self, base_path: &Path, version: u64, identity: &str) -> lance::Result<()> {
        self.inner.forget_version(base_path, version, identity).await
    }

    async fn delete(&self, base_path: &Path) -> lance::Result<()> {
        self.inner.delete(base_path).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use arrow_array::{Int64Array, RecordBatch, RecordBatchIterator};
    use arrow_schema::{DataType, Field, Schema};
    use lance::Dataset;
    use lance::dataset::WriteParams;

    use super::*;

    /// lance's handler, whose first manifest write fails with a lost request: before the
    /// store got it, or (`lands`) after the store wrote it.
    #[derive(Debug)]
    struct LosesFirstWrite {
        lands: bool,
        calls: AtomicU32,
    }

    #[async_trait]
    impl CommitHandler for LosesFirstWrite {
        fn is_version_not_found_definitive(&self) -> bool {
            true
        }

        fn propagate_commit_error_after_success(&self) -> bool {
            false // as lance's conditional-put handler
        }

        async fn commit(
            &self,
            manifest: &mut Manifest,
            indices: Option<Vec<IndexMetadata>>,
            base_path: &Path,
            object_store: &ObjectStore,
            manifest_writer: ManifestWriter,
            naming_scheme: ManifestNamingScheme,
            transaction: Option<Transaction>,
        ) -> Result<ManifestLocation, CommitError> {
            let first = self.calls.fetch_add(1, Ordering::SeqCst) == 0;
            let lost = || CommitError::OtherError(lance::Error::io("connection reset by peer"));
            if first && !self.lands {
                return Err(lost());
            }
            let written = ConditionalPutCommitHandler
                .commit(manifest, indices, base_path, object_store, manifest_writer, naming_scheme, transaction)
                .await;
            if first { Err(lost()) } else { written }
        }
    }

    async fn create(uri: &str, lands: bool) -> (lance::Result<Dataset>, u32) {
        let flaky = Arc::new(LosesFirstWrite { lands, calls: AtomicU32::new(0) });
        let handler = Arc::new(RetryingCommitHandler { inner: flaky.clone() });
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        let batch =
            RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![1, 2, 3]))]).expect("a batch");
        let params = WriteParams { commit_handler: Some(handler), ..Default::default() };
        let reader = RecordBatchIterator::new([Ok(batch)], schema);
        let written = Dataset::write(reader, uri, Some(params)).await;
        (written, flaky.calls.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn a_manifest_write_lost_before_the_store_is_written_again() {
        let (written, calls) = create("memory://lost-before", false).await;
        let dataset = written.expect("committed on the second write");
        assert_eq!((dataset.version().version, dataset.count_rows(None).await.expect("rows")), (1, 3));
        assert_eq!(calls, 2);
    }

    #[tokio::test]
    async fn a_manifest_write_that_landed_is_not_written_again() {
        let (written, calls) = create("memory://lost-after", true).await;
        let dataset = written.expect("lance reads the landed manifest back");
        assert_eq!((dataset.version().version, dataset.count_rows(None).await.expect("rows")), (1, 3));
        assert_eq!(calls, 1, "the version was there: nothing to write again");
    }
}
