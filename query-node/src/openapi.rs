//! `GET /openapi.json`: the REST API as an OpenAPI 3.1 document, generated from the Lance
//! Namespace spec by `scripts/openapi.py` (see `query-node/openapi/README.md`).

use axum::http::header;
use axum::response::IntoResponse;

/// The document, as generated.
const DOCUMENT: &str = include_str!("../openapi/openapi.json");

/// Serves [`DOCUMENT`].
pub async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::routes::{NAMESPACE_ROUTES, TABLE_ROUTES, TRANSACTION_ROUTES};

    /// The router's paths and the document's are the same set (methods are checked against
    /// a live server by `integration-tests/python/test_openapi.py`).
    #[test]
    fn the_document_lists_every_route_and_no_other() {
        let document: serde_json::Value = serde_json::from_str(DOCUMENT).expect("openapi.json is JSON");
        let documented: BTreeSet<&str> =
            document["paths"].as_object().expect("paths").keys().map(String::as_str).collect();
        let mut routed: BTreeSet<String> = ["/health", "/metrics", "/openapi.json", "/v1/cluster", "/v1/table"]
            .into_iter()
            .map(String::from)
            .collect();
        routed.extend(TABLE_ROUTES.iter().map(|(operation, ..)| format!("/v1/table/{{id}}/{operation}")));
        routed.extend(NAMESPACE_ROUTES.iter().map(|(operation, ..)| format!("/v1/namespace/{{id}}/{operation}")));
        routed.extend(TRANSACTION_ROUTES.iter().map(|(operation, ..)| format!("/v1/transaction/{{id}}/{operation}")));
        assert_eq!(documented, routed.iter().map(String::as_str).collect());
    }
}
