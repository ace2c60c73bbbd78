//! Request limits (`rest.max_search_k`, `rest.max_query_vectors`, `rest.max_filter`): a
//! request over one is refused with a 400 that names the limit, before anything runs.

use lancefleet_common::config::RestConfig;
use lancefleet_engine::TableQuery;

use crate::error::ApiError;

/// The limits one query node applies to REST and Flight requests alike.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    max_search_k: u64,
    max_query_vectors: usize,
    max_filter_bytes: usize,
    max_upload_bytes: usize,
}

impl RequestLimits {
    /// The limits `config` sets.
    pub fn new(config: &RestConfig) -> Self {
        Self {
            max_search_k: config.max_search_k,
            max_query_vectors: config.max_query_vectors,
            max_filter_bytes: config.max_filter.as_usize(),
            max_upload_bytes: config.max_body.as_usize(),
        }
    }

    /// What an Arrow upload may hold once decompressed (`rest.max_body`, the limit of its
    /// body as sent).
    pub fn max_upload_bytes(&self) -> usize {
        self.max_upload_bytes
    }

    /// Checks a query's `k`, query vectors and filter.
    pub fn check_query(&self, query: &TableQuery) -> Result<(), ApiError> {
        let vectors = query.vector.0.len();
        if vectors > self.max_query_vectors {
            return Err(ApiError::bad_request(format!(
                "{vectors} query vectors is more than this server takes in one search ({}, rest.max_query_vectors)",
                self.max_query_vectors
            )));
        }
        if (query.is_vector_search() || query.is_full_text_search())
            && let Some(k) = query.limit().filter(|k| *k > self.max_search_k)
        {
            return Err(ApiError::bad_request(format!(
                "k = {k} is more than a search may return on this server ({}, rest.max_search_k); \
                 page with offset, or scan without a search",
                self.max_search_k
            )));
        }
        self.check_filter(query.filter.as_deref())
    }

    /// Checks the length of a filter or predicate, and its literals ([`check_expression`]).
    pub fn check_filter(&self, filter: Option<&str>) -> Result<(), ApiError> {
        match filter {
            Some(filter) if filter.len() > self.max_filter_bytes => Err(ApiError::bad_request(format!(
                "the filter is {} bytes, more than this server takes ({} bytes, rest.max_filter)",
                filter.len(),
                self.max_filter_bytes
            ))),
            Some(filter) => check_expression(filter),
            None => Ok(()),
        }
    }
}

/// Refuses a SQL expression with a literal lance's expression planner cannot take: its
/// planner (lance-datafusion 14.0.2, `planner.rs:520`) reaches `todo!()`, a panic that drops
/// the connection, on literals other than numbers, '…' and "…" strings, hex strings,
/// booleans and NULL — a `$1` placeholder, a `$$…$$` or `E'…'` string. schemathesis found it.
pub fn check_expression(sql: &str) -> Result<(), ApiError> {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    // What does not tokenize, lance refuses with its own message.
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else { return Ok(()) };
    let unsupported = tokens.iter().find(|token| {
        matches!(
            token,
            Token::Placeholder(_)
                | Token::TripleSingleQuotedString(_)
                | Token::TripleDoubleQuotedString(_)
                | Token::DollarQuotedString(_)
                | Token::SingleQuotedByteStringLiteral(_)
                | Token::DoubleQuotedByteStringLiteral(_)
                | Token::TripleSingleQuotedByteStringLiteral(_)
                | Token::TripleDoubleQuotedByteStringLiteral(_)
                | Token::SingleQuotedRawStringLiteral(_)
                | Token::DoubleQuotedRawStringLiteral(_)
                | Token::TripleSingleQuotedRawStringLiteral(_)
                | Token::TripleDoubleQuotedRawStringLiteral(_)
                | Token::NationalStringLiteral(_)
                | Token::QuoteDelimitedStringLiteral(_)
                | Token::NationalQuoteDelimitedStringLiteral(_)
                | Token::EscapedStringLiteral(_)
                | Token::UnicodeStringLiteral(_)
        )
    });
    match unsupported {
        Some(token) => Err(ApiError::bad_request(format!(
            "unsupported literal {token} in the expression '{sql}': use numbers, 'strings', X'hex', true/false or NULL"
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(json: serde_json::Value) -> TableQuery {
        serde_json::from_value(json).expect("a query")
    }

    #[test]
    fn literals_lance_cannot_plan_are_refused() {
        for sql in ["id = $1", "name = $$x$$", "name = E'x'", "name = N'x'", "$\u{c}"] {
            let error = check_expression(sql).expect_err(sql).to_string();
            assert!(error.contains("unsupported literal"), "{sql}: {error}");
        }
        for sql in ["id > 3 AND name = 'a'", "x = X'0a'", "flag = true OR v IS NULL", "(", "price * 1.5e3 < 2"] {
            assert!(check_expression(sql).is_ok(), "{sql}");
        }
    }

    #[test]
    fn searches_over_a_limit_are_refused_and_scans_are_not_limited_by_k() {
        let config = RestConfig { max_search_k: 100, max_query_vectors: 2, ..RestConfig::default() };
        let limits = RequestLimits { max_filter_bytes: 16, ..RequestLimits::new(&config) };
        assert!(limits.check_query(&query(serde_json::json!({"vector": [1.0, 2.0], "k": 100}))).is_ok());
        let over = limits.check_query(&query(serde_json::json!({"vector": [1.0, 2.0], "k": 101}))).unwrap_err();
        assert!(over.to_string().contains("rest.max_search_k"), "{over}");
        assert!(limits.check_query(&query(serde_json::json!({"vector": [], "k": 1_000_000}))).is_ok(), "a scan");
        let vectors = serde_json::json!({"vector": [[1.0], [2.0], [3.0]], "k": 1});
        assert!(limits.check_query(&query(vectors)).unwrap_err().to_string().contains("3 query vectors"));
        let filter = serde_json::json!({"vector": [], "filter": "id IN (1, 2, 3, 4, 5, 6)"});
        assert!(limits.check_query(&query(filter)).unwrap_err().to_string().contains("rest.max_filter"));
        assert!(limits.check_filter(Some("id > 1")).is_ok() && limits.check_filter(None).is_ok());
    }
}
