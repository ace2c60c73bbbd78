//! Headers and small JSON shapes of the LanceDB REST dialect.

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::time::SystemTime;

use lancefleet_engine::{ReadVersion, TableId};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The protocol version this server fully supports, sent as `phalanx-version`.
///
/// 0.2.0: several query vectors in one request, answered with a `query_index` column.
/// 0.3.0: full-text queries in lance's structured form (`{"query": {"match": …}}`).
/// 0.4.0 (multipart writes) and later are not implemented, so clients keep to the
/// features below them.
pub const PHALANX_VERSION: &str = "0.3.0";
/// Response header naming the capability version.
pub static PHALANX_VERSION_HEADER: HeaderName = HeaderName::from_static("phalanx-version");
/// Response header carrying the table version that served a request.
pub static TABLE_VERSION_HEADER: HeaderName = HeaderName::from_static("x-lancedb-version");
/// Request headers carrying the client's freshness floor: after a write that returned
/// version V, and after reading version V, a client must never see an older version.
const MIN_VERSION_HEADERS: [&str; 2] = ["x-lancedb-min-version", "x-lancedb-min-read-version"];
/// Request header asking not to be served from a snapshot loaded before an instant.
const MIN_TIMESTAMP_HEADER: &str = "x-lancedb-min-timestamp";

/// The client's freshness floor, from the freshness headers: the oldest version, and the
/// oldest snapshot instant, it may be served. Only weak read consistency ever serves a
/// snapshot older than the request, so only it has to look at the instant.
pub fn freshness(headers: &HeaderMap) -> Result<Freshness, ApiError> {
    let mut floor = Freshness::default();
    for name in MIN_VERSION_HEADERS {
        let Some(value) = headers.get(name) else { continue };
        let version = value
            .to_str()
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok())
            .ok_or_else(|| ApiError::bad_request(format!("header {name} must be a non-negative integer")))?;
        floor.min_version = floor.min_version.max(Some(version));
    }
    if let Some(value) = headers.get(MIN_TIMESTAMP_HEADER) {
        let instant =
            value.to_str().ok().and_then(|text| chrono::DateTime::parse_from_rfc3339(text.trim()).ok()).ok_or_else(
                || ApiError::bad_request(format!("header {MIN_TIMESTAMP_HEADER} must be an RFC 3339 timestamp")),
            )?;
        floor.min_timestamp = Some(SystemTime::from(instant));
    }
    Ok(floor)
}

/// The client's freshness floor ([`freshness`]) as an extractor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Freshness {
    min_version: Option<u64>,
    min_timestamp: Option<SystemTime>,
}

impl Freshness {
    /// What a read may see: exactly `version` when the request names one (time travel),
    /// else the latest version, never older than this floor.
    pub fn read(self, version: Option<u64>) -> ReadVersion {
        ReadVersion { version, min_version: self.min_version, min_timestamp: self.min_timestamp }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Freshness {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        freshness(&parts.headers)
    }
}

/// The table named by the `{id}` path segment, validated before any handler runs.
#[derive(Debug, Clone)]
pub struct TablePath(pub TableId);

impl<S: Send + Sync> FromRequestParts<S> for TablePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
        let id = params.get("id").ok_or_else(|| ApiError::Internal("table route without an {id}".into()))?;
        Ok(Self(TableId::parse(id)?))
    }
}

/// The namespace spec's query parameter naming the id delimiter; its clients send it
/// on every call (`?delimiter=$`), LanceDB's never do.
const DELIMITER_PARAM: &str = "delimiter";
/// The one id delimiter this server (like LanceDB) speaks.
const DELIMITER: &str = "$";

/// The `delimiter` a request's query string names, if any.
fn delimiter_of(query: Option<&str>) -> Option<String> {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(key, _)| key == DELIMITER_PARAM)
        .map(|(_, value)| value.into_owned())
}

/// Refuses a `delimiter` other than `$`: ids would be split where the client did not mean.
pub fn check_delimiter(query: Option<&str>) -> Result<(), ApiError> {
    match delimiter_of(query) {
        Some(delimiter) if delimiter != DELIMITER => Err(ApiError::bad_request(format!(
            "unsupported id delimiter '{delimiter}': ids here are joined with '{DELIMITER}'"
        ))),
        _ => Ok(()),
    }
}

/// Whether a request speaks the namespace spec's dialect where it and LanceDB's differ
/// in shape (a response the two kinds of client parse differently): it does when it
/// names the id delimiter, which the namespace clients always do and LanceDB's never.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecDialect(pub bool);

impl<S: Send + Sync> FromRequestParts<S> for SpecDialect {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        Ok(Self(delimiter_of(parts.uri.query()).is_some()))
    }
}

/// Parses a JSON body; an empty body stands for the type's default (LanceDB clients send
/// no body, `{}` or a full object to the same route).
pub fn json_body<T: DeserializeOwned + Default>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|error| ApiError::bad_request(format!("invalid JSON body: {error}")))
}

/// The `mode` of a `what` request (case and `_` ignored, as clients spell modes both
/// `exist_ok` and `ExistOk`): the default when absent, a 400 naming the choices when unknown.
pub fn parse_mode<T: Copy>(what: &str, given: Option<&str>, default: T, choices: &[(&str, T)]) -> Result<T, ApiError> {
    let Some(given) = given else { return Ok(default) };
    let normalized = given.to_ascii_lowercase().replace('_', "");
    choices.iter().find(|(name, _)| name.replace('_', "") == normalized).map(|&(_, mode)| mode).ok_or_else(|| {
        let names = choices.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(", ");
        ApiError::bad_request(format!("unknown {what} mode '{given}'; use one of {names}"))
    })
}

/// The answer to a committed write: `body` with the namespace spec's `transaction_id` (the
/// uuid of the lance transaction the commit wrote, which `transaction/{id}/describe`
/// finds), and `x-lancedb-version`.
pub async fn committed(dataset: &lance::Dataset, mut body: serde_json::Value) -> Response {
    match dataset.read_transaction().await {
        Ok(Some(transaction)) => body["transaction_id"] = serde_json::Value::from(transaction.uuid),
        Ok(None) => {}
        // The commit stands; only its id is missing from the answer.
        Err(error) => tracing::warn!(%error, "the committed transaction could not be read back"),
    }
    with_table_version(dataset.version().version, axum::Json(body))
}

/// Adds `x-lancedb-version` to a table response.
pub fn with_table_version(version: u64, body: impl IntoResponse) -> Response {
    let mut response = body.into_response();
    response.headers_mut().insert(TABLE_VERSION_HEADER.clone(), HeaderValue::from(version));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_highest_freshness_floor_wins() {
        let mut headers = HeaderMap::new();
        assert_eq!(freshness(&headers).expect("no headers"), Freshness::default());
        headers.insert("x-lancedb-min-version", HeaderValue::from_static("3"));
        headers.insert("x-lancedb-min-read-version", HeaderValue::from_static("5"));
        headers.insert("x-lancedb-min-timestamp", HeaderValue::from_static("2026-01-02T03:04:05.123456789+00:00"));
        let read = freshness(&headers).expect("valid").read(None);
        assert_eq!(read.min_version, Some(5));
        let expected = std::time::UNIX_EPOCH + std::time::Duration::new(1_767_323_045, 123_456_789);
        assert_eq!(read.min_timestamp, Some(expected));
        assert_eq!(freshness(&headers).expect("valid").read(Some(2)).version, Some(2));
    }

    #[test]
    fn garbage_freshness_headers_are_bad_requests() {
        let mut headers = HeaderMap::new();
        headers.insert("x-lancedb-min-version", HeaderValue::from_static("latest"));
        assert!(matches!(freshness(&headers), Err(ApiError::BadRequest(_))));
        let mut headers = HeaderMap::new();
        headers.insert("x-lancedb-min-timestamp", HeaderValue::from_static("yesterday"));
        assert!(matches!(freshness(&headers), Err(ApiError::BadRequest(_))));
    }

    #[test]
    fn empty_bodies_mean_defaults() {
        #[derive(serde::Deserialize, Default, PartialEq, Debug)]
        struct Body {
            version: Option<u64>,
        }
        assert_eq!(json_body::<Body>(&Bytes::new()).expect("empty"), Body::default());
        assert_eq!(json_body::<Body>(&Bytes::from_static(b"{}")).expect("object"), Body::default());
        assert_eq!(json_body::<Body>(&Bytes::from_static(b"{\"version\":4}")).expect("v").version, Some(4));
        assert!(json_body::<Body>(&Bytes::from_static(b"{\"version\":")).is_err());
    }

    #[test]
    fn only_the_dollar_delimiter_is_spoken() {
        assert!(check_delimiter(None).is_ok());
        assert!(check_delimiter(Some("mode=append")).is_ok());
        assert!(check_delimiter(Some("delimiter=%24&mode=append")).is_ok());
        assert!(matches!(check_delimiter(Some("delimiter=.")), Err(ApiError::BadRequest(_))));
        assert_eq!(delimiter_of(Some("a=1&delimiter=%24")).as_deref(), Some("$"));
    }

    #[test]
    fn advertised_version_is_semver() {
        let parts = PHALANX_VERSION.split('.').map(|part| part.parse::<u64>()).collect::<Result<Vec<_>, _>>();
        assert_eq!(parts.expect("numeric").len(), 3);
    }
}
