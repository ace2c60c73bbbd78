//! What identifies a client request across the fleet: its id, the client's `x-request-id`
//! or a new UUID, returned in the answer's headers. While the request is served the id is
//! in a task-local (set by the REST middleware and the Flight front), on the request's
//! span (so on every log line and trace span under it), and on every plan fragment sent
//! for it (`PlanFragment.query_id`), which executors log and trace under.
//!
//! A client may also bound a request's time with `x-request-timeout-ms` (a header, or
//! Flight metadata). Its deadline travels with the request the same way: queries end with
//! a 504 when it passes, and every executor call (first attempts, retries and hedges) ends
//! by it and tells the executor the time left, so no retry extends it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use futures::StreamExt;
use tokio::time::Instant;

use crate::dispatch::RowStream;
use crate::error::ApiError;

/// The header a request id travels in, both ways.
pub static REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The header (or Flight metadata key) in which a client bounds a request's time, in
/// milliseconds.
pub const REQUEST_TIMEOUT_HEADER: &str = "x-request-timeout-ms";

/// Longest client-chosen request id kept; a longer one is replaced.
const MAX_REQUEST_ID: usize = 128;

/// The request being served.
#[derive(Debug, Clone)]
struct Served {
    id: Arc<str>,
    deadline: Option<Instant>,
}

tokio::task_local! {
    static CURRENT: Served;
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

/// The deadline the `x-request-timeout-ms` in `headers` (or Flight metadata) sets, if any.
pub fn deadline_of(headers: &HeaderMap) -> Result<Option<Instant>, ApiError> {
    deadline(headers.get(REQUEST_TIMEOUT_HEADER).map(|value| value.to_str().unwrap_or("?")))
}

/// The deadline a client's `x-request-timeout-ms` value sets, from now.
fn deadline(value: Option<&str>) -> Result<Option<Instant>, ApiError> {
    let Some(value) = value else { return Ok(None) };
    let millis = value.trim().parse::<u64>().map_err(|_| {
        ApiError::bad_request(format!("{REQUEST_TIMEOUT_HEADER} must be a whole number of milliseconds, got '{value}'"))
    })?;
    // A deadline too far to represent (on some platforms) is no deadline.
    Ok(Instant::now().checked_add(Duration::from_millis(millis)))
}

/// Runs `future` as the work of request `id`, which must end by `deadline` if one is set.
pub async fn serve<F: Future>(id: Arc<str>, deadline: Option<Instant>, future: F) -> F::Output {
    CURRENT.scope(Served { id, deadline }, future).await
}

/// The id of the request being served, if any (empty outside one).
pub fn current() -> String {
    CURRENT.try_with(|served| served.id.to_string()).unwrap_or_default()
}

/// The deadline of the request being served, if its client set one.
pub fn current_deadline() -> Option<Instant> {
    CURRENT.try_with(|served| served.deadline).ok().flatten()
}

/// `rows`, ended with a timeout error when `deadline` passes before they end: what
/// bounds an answer that streams after its handler returned.
pub fn within(deadline: Option<Instant>, rows: RowStream) -> RowStream {
    let Some(deadline) = deadline else { return rows };
    futures::stream::unfold(Some(rows), move |rows| async move {
        let mut rows = rows?;
        match tokio::time::timeout_at(deadline, rows.next()).await {
            Ok(Some(batch)) => Some((batch, Some(rows))),
            Ok(None) => None,
            Err(_elapsed) => Some((
                Err(ApiError::Timeout(format!(
                    "the answer did not finish within the client's {REQUEST_TIMEOUT_HEADER}"
                ))),
                None,
            )),
        }
    })
    .boxed()
}

/// `deadline`, or the request's own when that comes first.
pub fn bounded(deadline: Instant) -> Instant {
    current_deadline().map_or(deadline, |limit| limit.min(deadline))
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
        assert_eq!(serve(Arc::from("r-1"), None, async { current() }).await, "r-1");
    }

    #[tokio::test]
    async fn a_clients_deadline_bounds_later_ones() {
        assert!(deadline(Some("soon")).is_err());
        assert_eq!(deadline(None).expect("none"), None);
        assert!(deadline(Some(&u64::MAX.to_string())).is_ok(), "the farthest deadline does not overflow");
        let soon = deadline(Some("50")).expect("valid").expect("set");
        let later = Instant::now() + Duration::from_secs(30);
        assert_eq!(bounded(later), later, "no request, no bound");
        let within = serve(Arc::from("r-2"), Some(soon), async { (bounded(later), current_deadline()) }).await;
        assert_eq!(within, (soon, Some(soon)));
    }
}
