//! Object-store requests, counted and timed by operation and store: a
//! [`WrappingObjectStore`] under lance, below the object cache, so it sees exactly the
//! requests that leave the node (`lancefleet_object_store_*`).

use std::fmt;
use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use lance::io::WrappingObjectStore;
use lancefleet_common::metrics::LATENCY_BUCKETS;
use object_store::list::PaginatedListStore;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult,
};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, register_histogram_vec, register_int_counter_vec};

use crate::cache::ObjectCache;

/// The object-store metrics, registered on first use.
struct StoreMetrics {
    /// `lancefleet_object_store_requests_total{operation, store}`.
    requests: IntCounterVec,
    /// `lancefleet_object_store_request_duration_seconds{operation, store}`: until the
    /// answer starts (a GET's body streams after).
    seconds: HistogramVec,
    /// `lancefleet_object_store_errors_total{operation, store}`.
    errors: IntCounterVec,
}

static METRICS: LazyLock<StoreMetrics> = LazyLock::new(|| StoreMetrics {
    requests: register_int_counter_vec!(
        Opts::new("lancefleet_object_store_requests_total", "Object-store requests, by operation and store."),
        &["operation", "store"]
    )
    .expect("register lancefleet_object_store_requests_total"),
    seconds: register_histogram_vec!(
        HistogramOpts::new(
            "lancefleet_object_store_request_duration_seconds",
            "Object-store request latency until the answer starts, by operation and store."
        )
        .buckets(LATENCY_BUCKETS.to_vec()),
        &["operation", "store"]
    )
    .expect("register lancefleet_object_store_request_duration_seconds"),
    errors: register_int_counter_vec!(
        Opts::new("lancefleet_object_store_errors_total", "Object-store requests that failed, by operation and store."),
        &["operation", "store"]
    )
    .expect("register lancefleet_object_store_errors_total"),
});

/// Requests sent so far by this process, every operation and store together (for the
/// per-fragment figures in traces).
static REQUESTS: AtomicU64 = AtomicU64::new(0);

/// Object-store requests this process has sent so far.
pub fn requests_so_far() -> u64 {
    REQUESTS.load(Ordering::Relaxed)
}

/// What lance wraps every object store in: the request counters, then (for reads) the
/// object cache when there is one.
#[derive(Debug, Clone)]
pub struct StoreLayers {
    /// The object cache, above the counters.
    pub cache: Option<ObjectCache>,
}

impl WrappingObjectStore for StoreLayers {
    fn wrap(&self, store_prefix: &str, original: Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore> {
        let store = store_prefix.split(['$', ':']).next().filter(|scheme| !scheme.is_empty()).unwrap_or("unknown");
        let counted: Arc<dyn ObjectStore> = Arc::new(CountingStore { inner: original, store: store.to_string() });
        match &self.cache {
            Some(cache) => cache.wrap(store_prefix, counted),
            None => counted,
        }
    }

    fn wrap_paginated(
        &self,
        _store_prefix: &str,
        original: Arc<dyn PaginatedListStore>,
    ) -> Option<Arc<dyn PaginatedListStore>> {
        Some(original)
    }
}

/// An object store whose requests are counted and timed.
#[derive(Debug)]
struct CountingStore {
    inner: Arc<dyn ObjectStore>,
    store: String,
}

impl fmt::Display for CountingStore {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "Counted({})", self.inner)
    }
}

impl CountingStore {
    /// Counts one `operation` and times `request` until it answers.
    async fn timed<T>(
        &self,
        operation: &str,
        request: impl Future<Output = object_store::Result<T>>,
    ) -> object_store::Result<T> {
        let labels = [operation, self.store.as_str()];
        METRICS.requests.with_label_values(&labels).inc();
        REQUESTS.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let answer = request.await;
        METRICS.seconds.with_label_values(&labels).observe(started.elapsed().as_secs_f64());
        if answer.is_err() {
            METRICS.errors.with_label_values(&labels).inc();
        }
        answer
    }

    /// Counts one `operation` whose answer is a stream (listings, deletes).
    fn counted(&self, operation: &str) {
        METRICS.requests.with_label_values(&[operation, self.store.as_str()]).inc();
        REQUESTS.fetch_add(1, Ordering::Relaxed);
    }
}

/// The operation a GET performs.
fn get_operation(options: &GetOptions) -> &'static str {
    match (options.head, options.range.is_some()) {
        (true, _) => "head",
        (false, true) => "get_range",
        (false, false) => "get",
    }
}

#[async_trait]
impl ObjectStore for CountingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.timed("put", self.inner.put_opts(location, payload, opts)).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.timed("put_multipart", self.inner.put_multipart_opts(location, opts)).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        self.timed(get_operation(&options), self.inner.get_opts(location, options)).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.counted("delete");
        self.inner.delete_stream(locations).boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.counted("list");
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.counted("list");
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.timed("list", self.inner.list_with_delimiter(prefix)).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        self.timed("copy", self.inner.copy_opts(from, to, options)).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: object_store::RenameOptions,
    ) -> object_store::Result<()> {
        self.timed("rename", self.inner.rename_opts(from, to, options)).await
    }
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;
    use object_store::{ObjectStoreExt, PutPayload};

    use super::*;

    #[tokio::test]
    async fn requests_are_counted_by_operation_and_store() {
        let layers = StoreLayers { cache: None };
        let store = layers.wrap("memory$test", Arc::new(InMemory::new()));
        let before = requests_so_far();
        let path = Path::from("data/a.lance");
        store.put(&path, PutPayload::from_static(b"0123456789")).await.expect("put");
        store.get_range(&path, 2..5).await.expect("range");
        store.head(&path).await.expect("head");
        assert!(store.get(&Path::from("missing")).await.is_err());
        assert!(requests_so_far() >= before + 4);
        let count = |operation: &str| METRICS.requests.with_label_values(&[operation, "memory"]).get();
        assert!(count("put") >= 1 && count("get_range") >= 1 && count("head") >= 1 && count("get") >= 1);
        assert!(METRICS.errors.with_label_values(&["get", "memory"]).get() >= 1, "the missing object");
    }
}
