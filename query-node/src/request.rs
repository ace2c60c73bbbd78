//! What identifies a client request across the fleet: its id, the client's `x-request-id`
//! or a new UUID, returned in the answer's headers. While the request is served the id is
//! in a task-local (set by the REST middleware and the Flight front), on the request's
//! span (so on every log line and trace span under it), and on every plan fragment sent
//! for it (`PlanFragment.query_id`), which executors log and trace under.

use std::future::Future;
use std::sync::Arc;

use axum::http::{HeaderMap, HeaderName, HeaderValue};

/// The header a request id travels in, both ways.
pub static REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-chosen request id kept; a longer one is replaced.
const MAX_REQUEST_ID: usize = 128;

tokio::task_local! {
    static CURRENT: Arc<str>;
}

/// The request id `headers` carry (a printable id of reasonable length), else a new one.
pub fn request_id(headers: &HeaderMap) -> Arc<str> {
    given_or_new(headers.get(&REQUEST_ID_HEADER).and_then(|value| value.to_str().ok()))
}

/// The request id a client `given` (a printable id of reasonable length), else a new one.
pub fn given_or_new(given: Option<&str>) -> Arc<str> {
    match given.map(str::trim) {
        Some(id) if !id.is_empty() && id.len() <= MAX_REQUEST_ID && id.chars().all(|c| c.is_ascii_graphic()) => {
            Arc::from(id)
        }
        _ => Arc::from(uuid::Uuid::new_v4().to_string()),
    }
}

/// The id as a header value.
pub fn header_value(id: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(id).ok()
}

/// Runs `future` as the work of request `id`.
pub async fn serve<F: Future>(id: Arc<str>, future: F) -> F::Output {
    CURRENT.scope(id, future).await
}

/// The id of the request being served, if any (empty outside one).
pub fn current() -> String {
    CURRENT.try_with(|id| id.to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_clients_id_is_kept_and_a_missing_or_odd_one_replaced() {
        let mut headers = HeaderMap::new();
        headers.insert(&REQUEST_ID_HEADER, HeaderValue::from_static("client-42"));
        assert_eq!(&*request_id(&headers), "client-42");
        headers.insert(&REQUEST_ID_HEADER, HeaderValue::from_static("has space"));
        assert_ne!(&*request_id(&headers), "has space");
        let made = request_id(&HeaderMap::new());
        assert_eq!(made.len(), 36, "a UUID: {made}");
        assert_eq!(current(), "");
        assert_eq!(serve(Arc::from("r-1"), async { current() }).await, "r-1");
    }
}
