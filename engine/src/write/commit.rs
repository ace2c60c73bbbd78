//! Commits and loads that outlive a transient object-store failure.
//!
//! object_store retries 5xx answers on every request, but not a connection reset on a
//! conditional put (how lance commits a manifest) nor a listing whose body breaks off.
//! A load is a read and is simply tried again. A commit whose answer was lost may have
//! landed: [`commit_exactly_once`] looks for its transaction in the versions after its read
//! version before it commits again, so a retried append is never stored twice. Writes that
//! lance plans and commits itself go through [`Catalog::write_latest`], which plans them
//! again only while the table is provably where they started.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use lance::Dataset;
use lance::dataset::CommitBuilder;
use lance::dataset::transaction::Transaction;

use crate::catalog::Catalog;
use crate::error::{EngineError, Result};
use crate::table_id::TableId;

/// Attempts of a load or a commit, the first included.
pub(super) const ATTEMPTS: u32 = 3;
/// Wait before the second attempt; it grows linearly.
pub(super) const BACKOFF: Duration = Duration::from_millis(200);

/// Whether `error` is an object-store I/O failure that another attempt may not meet.
pub(super) fn is_transient(error: &lance::Error) -> bool {
    matches!(error, lance::Error::IO { .. })
}

/// Runs `attempt` until it succeeds, fails other than transiently, or has run
/// [`ATTEMPTS`] times; only for work that is safe to repeat.
pub(crate) async fn retry_transient<T, F, Fut>(what: &str, mut attempt: F) -> lance::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = lance::Result<T>>,
{
    let mut tries = 1;
    loop {
        match attempt().await {
            Err(error) if is_transient(&error) && tries < ATTEMPTS => {
                tracing::warn!(%error, tries, "{what} failed at the object store; trying again");
                tokio::time::sleep(BACKOFF * tries).await;
                tries += 1;
            }
            outcome => return outcome,
        }
    }
}

/// Commits `transaction` (data files written, based on `dataset`) once: when a commit
/// fails at the object store, it is committed again only if no version after `dataset`'s
/// holds it; when one does, that version is the commit.
pub(crate) async fn commit_exactly_once(dataset: Arc<Dataset>, transaction: Transaction) -> Result<Dataset> {
    let mut tries = 1;
    loop {
        let commit = CommitBuilder::new(dataset.clone()).with_skip_auto_cleanup(true).execute(transaction.clone());
        let error = match commit.await {
            Err(error) if is_transient(&error) && tries < ATTEMPTS => error,
            outcome => return Ok(outcome?),
        };
        tracing::warn!(%error, tries, "a commit failed at the object store; checking whether it landed");
        tokio::time::sleep(BACKOFF * tries).await;
        if let Some(landed) = retry_transient("finding a commit", || landed(&dataset, &transaction.uuid)).await? {
            return Ok(landed);
        }
        tries += 1;
    }
}

impl Catalog {
    /// Runs `write` (`what`, for logs) on the latest version of table `id`; when it fails
    /// at the object store, plans and runs it again on the latest version, at most
    /// [`ATTEMPTS`] times in all, but only while the table is still at the version the
    /// failed attempt started from. For writes lance commits itself (delete, update,
    /// merge_insert, schema changes, index builds, restores): lance reads a commit whose
    /// answer was lost back and succeeds when it landed, so an error with the table
    /// unchanged means nothing landed. When the table moved meanwhile the error stands: the
    /// move may be this write, and running it again could apply it twice.
    pub(crate) async fn write_latest<T, F, Fut>(&self, id: &TableId, what: &str, mut write: F) -> Result<T>
    where
        F: FnMut(Dataset) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut tries = 1;
        loop {
            let dataset = self.load(id, None).await?;
            let started = dataset.version().version;
            let error = match write(dataset).await {
                Err(error) if is_transient_engine(&error) && tries < ATTEMPTS => error,
                outcome => return outcome,
            };
            tokio::time::sleep(BACKOFF * tries).await;
            let now = self.load(id, None).await?.version().version;
            if now != started {
                tracing::warn!(%error, table = %id, started, now, "{what} failed at the object store and the table moved; not trying again");
                return Err(error);
            }
            tracing::warn!(%error, table = %id, tries, "{what} failed at the object store; nothing landed, trying again");
            tries += 1;
        }
    }
}

/// [`is_transient`] for an engine error.
fn is_transient_engine(error: &EngineError) -> bool {
    matches!(error, EngineError::Lance { source, .. } if is_transient(source))
}

/// The version after `dataset`'s that committed the transaction `uuid`, if any.
async fn landed(dataset: &Dataset, uuid: &str) -> lance::Result<Option<Dataset>> {
    let mut latest = dataset.clone();
    latest.checkout_latest().await?;
    for version in dataset.version().version + 1..=latest.version().version {
        if latest.read_transaction_by_version(version).await?.is_some_and(|committed| committed.uuid == uuid) {
            return Ok(Some(latest.checkout_version(version).await?));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use arrow_array::{Int64Array, RecordBatch, RecordBatchIterator};
    use arrow_schema::{DataType, Field, Schema};
    use lance::dataset::{InsertBuilder, WriteMode, WriteParams};

    use super::*;

    fn io_error() -> lance::Error {
        lance::Error::io("connection reset")
    }

    #[tokio::test]
    async fn transient_failures_are_tried_again_and_others_are_not() {
        let calls = AtomicU32::new(0);
        let answer = retry_transient("a read", || async {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 { Err(io_error()) } else { Ok(7) }
        })
        .await;
        assert_eq!(answer.expect("second attempt"), 7);

        let calls = AtomicU32::new(0);
        let answer: lance::Result<()> = retry_transient("a read", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(lance::Error::invalid_input("bad filter"))
        })
        .await;
        assert!(answer.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1, "an input error is not retried");

        let calls = AtomicU32::new(0);
        let answer: lance::Result<()> = retry_transient("a read", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(io_error())
        })
        .await;
        assert!(answer.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), ATTEMPTS);
    }

    #[tokio::test]
    async fn a_commit_that_landed_is_found_and_not_made_twice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let uri = dir.path().join("t.lance").to_string_lossy().into_owned();
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        let batch =
            RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![1, 2, 3]))]).expect("batch");
        let reader = RecordBatchIterator::new([Ok(batch.clone())], schema);
        let base = Arc::new(Dataset::write(reader, &uri, None).await.expect("created"));

        let append = WriteParams { mode: WriteMode::Append, ..Default::default() };
        let transaction = InsertBuilder::new(base.clone())
            .with_params(&append)
            .execute_uncommitted(vec![batch])
            .await
            .expect("data files written");
        assert!(landed(&base, &transaction.uuid).await.expect("listed").is_none(), "not committed yet");
        // The commit lands, but its answer is lost: the caller sees only the old version.
        let committed = CommitBuilder::new(base.clone()).execute(transaction.clone()).await.expect("committed");
        let found = landed(&base, &transaction.uuid).await.expect("listed").expect("found");
        assert_eq!(found.version().version, committed.version().version);
        assert_eq!(found.count_rows(None).await.expect("count"), 6, "the append is there once");
    }
}
