//! Who may call: one check of API keys for the REST API and Arrow Flight alike.
//!
//! A client presents its key as `x-api-key: KEY` (what the LanceDB clients send) or as
//! `authorization: Bearer KEY` (Flight SQL clients, and the token a Flight handshake hands
//! out). With no keys configured every request is accepted, key or not: the local
//! standalone server. The keys are a static list for now; the security issue puts
//! per-key permissions behind the same [`Authenticator::check`].

use std::collections::HashSet;

use http::HeaderMap;

use crate::error::ApiError;

/// Header the LanceDB clients send their key in.
pub const API_KEY_HEADER: &str = "x-api-key";

/// Checks the credentials of a request.
#[derive(Debug, Default)]
pub struct Authenticator {
    keys: HashSet<String>,
}

impl Authenticator {
    /// Accepts exactly `keys`; accepts every request when `keys` is empty.
    pub fn new(keys: &[String]) -> Self {
        Self { keys: keys.iter().filter(|key| !key.is_empty()).cloned().collect() }
    }

    /// Whether any request is accepted.
    pub fn is_open(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks the key `headers` present.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if self.is_open() {
            return Ok(());
        }
        match presented_key(headers) {
            Some(key) => self.check_key(key),
            None => Err(ApiError::Unauthenticated(format!(
                "this server needs an API key: send it as '{API_KEY_HEADER}: KEY' or 'authorization: Bearer KEY'"
            ))),
        }
    }

    /// Checks one key.
    pub fn check_key(&self, key: &str) -> Result<(), ApiError> {
        if self.is_open() || self.keys.contains(key) {
            Ok(())
        } else {
            Err(ApiError::Unauthenticated("the API key is not valid".into()))
        }
    }
}

/// The key in `headers`: `x-api-key`, else a bearer token.
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(key) = headers.get(API_KEY_HEADER).and_then(|value| value.to_str().ok()) {
        return Some(key.trim());
    }
    let authorization = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = authorization.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs.iter().map(|(name, value)| (http::HeaderName::from_static(name), value.parse().expect("value"))).collect()
    }

    #[test]
    fn keys_come_from_either_header() {
        assert_eq!(presented_key(&headers(&[("x-api-key", "k1")])), Some("k1"));
        assert_eq!(presented_key(&headers(&[("authorization", "Bearer k2")])), Some("k2"));
        assert_eq!(presented_key(&headers(&[("authorization", "bearer  k3 ")])), Some("k3"));
        assert_eq!(presented_key(&headers(&[("authorization", "Basic dXNlcjpwdw==")])), None);
        assert_eq!(presented_key(&HeaderMap::new()), None);
    }

    #[test]
    fn only_configured_keys_pass_unless_none_are_configured() {
        let open = Authenticator::new(&[]);
        assert!(open.check(&HeaderMap::new()).is_ok() && open.check_key("anything").is_ok());
        let closed = Authenticator::new(&["secret".to_string()]);
        assert!(closed.check(&headers(&[("x-api-key", "secret")])).is_ok());
        assert!(closed.check(&headers(&[("authorization", "Bearer secret")])).is_ok());
        assert!(matches!(closed.check(&headers(&[("x-api-key", "wrong")])), Err(ApiError::Unauthenticated(_))));
        assert!(matches!(closed.check(&HeaderMap::new()), Err(ApiError::Unauthenticated(_))));
    }
}
