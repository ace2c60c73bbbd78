//! Who may call, and what each caller may do: one check for the REST API and Arrow Flight.
//!
//! A client presents its key as `x-api-key: KEY` (what the LanceDB clients send) or as
//! `authorization: Bearer KEY` (Flight SQL clients, and the token a Flight handshake hands
//! out). The server knows keys only by SHA-256 digest (see
//! [`lancefleet_common::config::AuthConfig`]); each has a [`Role`] and optionally a scope
//! of namespaces and tables. With no keys configured every request is accepted as an
//! unscoped admin: the local standalone server.
//!
//! Authentication happens once per request ([`Authenticator::authenticate`]); the caller
//! then travels with the request in a task-local ([`serve_as`]), and every place that
//! reaches a table or a namespace asks [`require`] first: the REST guard for the route's
//! own target, Flight and SQL for each table a call reads or writes, listings through
//! [`visible`]. A request without a caller is refused, so a new path that forgets to set
//! one fails closed.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use http::HeaderMap;
use lancefleet_common::Shutdown;
use lancefleet_common::config::{ApiKey, AuthConfig, Role, key_digest};
use lancefleet_engine::{Namespace, TableId};

use crate::error::ApiError;

/// Header the LanceDB clients send their key in.
pub const API_KEY_HEADER: &str = "x-api-key";

/// How often a keys file is checked for changes.
const KEYS_FILE_CHECK: Duration = Duration::from_secs(5);

/// What an operation needs of its caller's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Access {
    /// Reading tables, listings and metadata.
    Read,
    /// Changing a table's rows, schema, indexes or tags, or creating one.
    Write,
    /// Dropping tables, creating and dropping namespaces, the cluster view.
    Admin,
}

impl Access {
    /// The least role allowed this access.
    fn least_role(self) -> Role {
        match self {
            Self::Read => Role::ReadOnly,
            Self::Write => Role::ReadWrite,
            Self::Admin => Role::Admin,
        }
    }

    /// The verb of a refusal.
    fn verb(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Admin => "administer",
        }
    }
}

/// What an operation reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The server as a whole (the cluster view).
    Server,
    /// A namespace: its listing, description, creation or removal.
    Namespace(Namespace),
    /// A table.
    Table(TableId),
}

impl Target {
    /// The target's id components, outermost first (none for the server).
    fn components(&self) -> Vec<&str> {
        match self {
            Self::Server => Vec::new(),
            Self::Namespace(namespace) => namespace.components().iter().map(String::as_str).collect(),
            Self::Table(id) => id.namespace().components().iter().map(String::as_str).chain([id.name()]).collect(),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Server => formatter.write_str("the server"),
            Self::Namespace(namespace) if namespace.is_root() => formatter.write_str("the root namespace"),
            Self::Namespace(namespace) => write!(formatter, "namespace '{}'", namespace.components().join("$")),
            Self::Table(id) => write!(formatter, "table '{id}'"),
        }
    }
}

/// An authenticated caller: a key's id, role and scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The key's id (`anonymous` on a server without keys).
    pub id: Arc<str>,
    /// What it may do.
    pub role: Role,
    /// The id paths it may reach (each covers itself and everything under it); `None`:
    /// everything.
    scope: Option<Vec<Vec<String>>>,
}

impl Caller {
    /// The caller of a server that checks no keys: an unscoped admin.
    pub fn anonymous() -> Self {
        Self { id: Arc::from("anonymous"), role: Role::Admin, scope: None }
    }

    /// The caller of `key`; its scope entries must be valid namespace or table ids.
    fn from_key(key: &ApiKey) -> Result<Self, ApiError> {
        let mut scope = Vec::new();
        for entry in &key.scope {
            let parsed = Namespace::parse(entry).map_err(|error| {
                ApiError::Config(format!("API key '{}': scope entry '{entry}' is not an id: {error}", key.id))
            })?;
            scope.push(parsed.components().to_vec());
        }
        Ok(Self { id: Arc::from(key.id.as_str()), role: key.role, scope: (!scope.is_empty()).then_some(scope) })
    }

    /// Whether `components` lie inside the scope.
    fn covers(&self, components: &[&str]) -> bool {
        self.scope.as_ref().is_none_or(|scope| scope.iter().any(|entry| is_prefix(entry, components)))
    }

    /// Whether `components` lie inside the scope or on the way to it (a namespace that
    /// holds something in scope may be listed and described; its listing shows only that).
    fn sees(&self, components: &[&str]) -> bool {
        self.covers(components)
            || self.scope.as_ref().is_some_and(|scope| {
                scope.iter().any(|entry| components.len() < entry.len() && is_prefix_of_entry(components, entry))
            })
    }

    /// Checks that this caller may `access` `target`.
    pub fn check(&self, access: Access, target: &Target) -> Result<(), ApiError> {
        if self.role < access.least_role() {
            return Err(ApiError::Forbidden(format!(
                "API key '{}' is {}: it may not {} {target}",
                self.id,
                self.role.as_str(),
                access.verb()
            )));
        }
        let components = target.components();
        let allowed = match target {
            Target::Server => self.scope.is_none(),
            Target::Namespace(_) if access == Access::Read => self.sees(&components),
            Target::Namespace(_) | Target::Table(_) => self.covers(&components),
        };
        if allowed {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!("API key '{}' is not allowed to reach {target}", self.id)))
        }
    }
}

/// Whether `entry` is a prefix of `components`.
fn is_prefix(entry: &[String], components: &[&str]) -> bool {
    entry.len() <= components.len() && entry.iter().zip(components).all(|(left, right)| left == right)
}

/// Whether `components` are a prefix of `entry`.
fn is_prefix_of_entry(components: &[&str], entry: &[String]) -> bool {
    components.iter().zip(entry).all(|(left, right)| *left == right.as_str())
}

/// The keys a server accepts, by digest.
type KeyTable = HashMap<String, Arc<Caller>>;

/// Checks the credentials of requests; reloads a keys file when it changes.
#[derive(Debug)]
pub struct Authenticator {
    config: AuthConfig,
    keys: RwLock<Arc<KeyTable>>,
    /// The keys file's modification time when last read.
    file_stamp: Mutex<Option<SystemTime>>,
}

impl Authenticator {
    /// The keys `config` lists (inline and in its keys file).
    pub fn new(config: &AuthConfig) -> Result<Self, ApiError> {
        let file_stamp = config.keys_file.as_deref().and_then(modified);
        let keys = key_table(config)?;
        Ok(Self { config: config.clone(), keys: RwLock::new(Arc::new(keys)), file_stamp: Mutex::new(file_stamp) })
    }

    /// Whether every request is accepted.
    pub fn is_open(&self) -> bool {
        !self.config.checks_keys()
    }

    /// The caller `headers` identify.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<Caller>, ApiError> {
        if self.is_open() {
            return Ok(Arc::new(Caller::anonymous()));
        }
        match presented_key(headers) {
            Some(key) => self.authenticate_key(key),
            None => Err(ApiError::Unauthenticated(format!(
                "this server needs an API key: send it as '{API_KEY_HEADER}: KEY' or 'authorization: Bearer KEY'"
            ))),
        }
    }

    /// The caller of one key.
    pub fn authenticate_key(&self, key: &str) -> Result<Arc<Caller>, ApiError> {
        if self.is_open() {
            return Ok(Arc::new(Caller::anonymous()));
        }
        let keys = self.keys.read().map_err(|_| ApiError::Internal("the key table is poisoned".into()))?.clone();
        keys.get(&key_digest(key)).cloned().ok_or_else(|| ApiError::Unauthenticated("the API key is not valid".into()))
    }

    /// Re-reads the keys file whenever it changes until `shutdown`; a file that no longer
    /// reads keeps the keys in force (and says so in the log).
    pub async fn follow_keys_file(self: Arc<Self>, shutdown: Shutdown) {
        let Some(path) = self.config.keys_file.clone() else { return };
        loop {
            tokio::select! {
                () = tokio::time::sleep(KEYS_FILE_CHECK) => self.reload_if_changed(&path),
                () = shutdown.wait() => return,
            }
        }
    }

    fn reload_if_changed(&self, path: &Path) {
        let stamp = modified(path);
        let Ok(mut last) = self.file_stamp.lock() else { return };
        if stamp == *last {
            return;
        }
        match key_table(&self.config) {
            Ok(keys) => {
                let count = keys.len();
                if let Ok(mut table) = self.keys.write() {
                    *table = Arc::new(keys);
                    *last = stamp;
                    tracing::info!(file = %path.display(), keys = count, "API keys reloaded");
                }
            }
            Err(error) => {
                tracing::warn!(file = %path.display(), %error, "API keys file not reloaded; keeping the keys in force")
            }
        }
    }
}

/// When `path` last changed, if it can be read.
fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|metadata| metadata.modified()).ok()
}

/// The key table of `config`.
fn key_table(config: &AuthConfig) -> Result<KeyTable, ApiError> {
    let keys = config.all_keys().map_err(|error| ApiError::Config(error.to_string()))?;
    keys.iter().map(|key| Ok((key.sha256.clone(), Arc::new(Caller::from_key(key)?)))).collect()
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

/// The caller of the request being served, and what its request did (for the audit log).
#[derive(Debug)]
pub struct CallContext {
    /// Who calls.
    pub caller: Arc<Caller>,
    /// The version the request committed (`u64::MAX`: none).
    committed: AtomicU64,
    /// The first target the request asked to change.
    changed: Mutex<Option<String>>,
}

impl CallContext {
    /// A request of `caller` that has done nothing yet.
    pub fn new(caller: Arc<Caller>) -> Arc<Self> {
        Arc::new(Self { caller, committed: AtomicU64::new(u64::MAX), changed: Mutex::new(None) })
    }

    /// The version the request committed, if any.
    pub fn committed_version(&self) -> Option<u64> {
        Some(self.committed.load(Ordering::Relaxed)).filter(|version| *version != u64::MAX)
    }

    /// The first target the request asked to change, if any.
    pub fn changed_target(&self) -> Option<String> {
        self.changed.lock().ok().and_then(|changed| changed.clone())
    }
}

tokio::task_local! {
    static CURRENT: Arc<CallContext>;
}

/// Runs `future` as the request of `context`'s caller.
pub async fn serve_as<F: Future>(context: Arc<CallContext>, future: F) -> F::Output {
    CURRENT.scope(context, future).await
}

/// Checks that the current request's caller may `access` `target`; an attempt to change
/// something is remembered for the audit log whether or not it is allowed.
pub fn require(access: Access, target: &Target) -> Result<(), ApiError> {
    CURRENT
        .try_with(|context| {
            if access > Access::Read
                && let Ok(mut changed) = context.changed.lock()
            {
                changed.get_or_insert_with(|| target_id(target));
            }
            context.caller.check(access, target)
        })
        .unwrap_or_else(|_| Err(ApiError::Forbidden("the request carries no authenticated caller".into())))
}

/// Whether the current request's caller may see `target` in a listing.
pub fn visible(target: &Target) -> bool {
    CURRENT.try_with(|context| context.caller.check(Access::Read, target).is_ok()).unwrap_or(false)
}

/// Records the version the current request committed.
pub fn note_committed(version: u64) {
    let _ = CURRENT.try_with(|context| context.committed.store(version, Ordering::Relaxed));
}

/// A target as the audit log names it: its REST id (empty for the server).
pub fn target_id(target: &Target) -> String {
    match target {
        Target::Table(id) => id.to_string(),
        other => other.components().join("$"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs.iter().map(|(name, value)| (http::HeaderName::from_static(name), value.parse().expect("value"))).collect()
    }

    fn key(id: &str, secret: &str, role: Role, scope: &[&str]) -> ApiKey {
        ApiKey { id: id.into(), sha256: key_digest(secret), role, scope: scope.iter().map(|s| s.to_string()).collect() }
    }

    fn caller(key: &ApiKey) -> Caller {
        Caller::from_key(key).expect("valid key")
    }

    fn table(id: &str) -> Target {
        Target::Table(TableId::parse(id).expect("table id"))
    }

    fn namespace(id: &str) -> Target {
        Target::Namespace(Namespace::parse(id).expect("namespace id"))
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
    fn configured_keys_are_known_by_digest_and_others_refused() {
        let open = Authenticator::new(&AuthConfig::default()).expect("open");
        assert_eq!(*open.authenticate(&HeaderMap::new()).expect("open"), Caller::anonymous());
        let config = AuthConfig { keys: vec![key("ci", "secret", Role::ReadOnly, &[])], ..Default::default() };
        let closed = Authenticator::new(&config).expect("closed");
        let caller = closed.authenticate(&headers(&[("x-api-key", "secret")])).expect("known");
        assert_eq!((&*caller.id, caller.role), ("ci", Role::ReadOnly));
        assert!(closed.authenticate(&headers(&[("authorization", "Bearer secret")])).is_ok());
        assert!(matches!(closed.authenticate(&headers(&[("x-api-key", "wrong")])), Err(ApiError::Unauthenticated(_))));
        assert!(matches!(closed.authenticate(&HeaderMap::new()), Err(ApiError::Unauthenticated(_))));
        // The digest itself is not a key.
        assert!(closed.authenticate_key(&key_digest("secret")).is_err());
    }

    #[test]
    fn roles_allow_what_they_name() {
        let reader = caller(&key("r", "r", Role::ReadOnly, &[]));
        let writer = caller(&key("w", "w", Role::ReadWrite, &[]));
        let admin = caller(&key("a", "a", Role::Admin, &[]));
        let orders = table("orders");
        assert!(reader.check(Access::Read, &orders).is_ok());
        let refused = reader.check(Access::Write, &orders).unwrap_err();
        assert!(matches!(&refused, ApiError::Forbidden(message) if message.contains("'r' is read-only")), "{refused}");
        assert!(writer.check(Access::Write, &orders).is_ok() && writer.check(Access::Admin, &orders).is_err());
        assert!(admin.check(Access::Admin, &orders).is_ok() && admin.check(Access::Admin, &Target::Server).is_ok());
    }

    #[test]
    fn scopes_cover_what_is_under_them_and_show_the_way_there() {
        let sales = caller(&key("s", "s", Role::Admin, &["sales", "hr$payroll", "orders"]));
        assert!(sales.check(Access::Write, &table("sales$q1")).is_ok());
        assert!(sales.check(Access::Write, &table("sales$eu$q1")).is_ok());
        assert!(sales.check(Access::Admin, &namespace("sales$eu")).is_ok());
        assert!(sales.check(Access::Read, &table("orders")).is_ok(), "a root table by its name");
        assert!(sales.check(Access::Read, &table("hr$payroll")).is_ok());
        assert!(sales.check(Access::Read, &table("hr$people")).is_err());
        assert!(sales.check(Access::Read, &table("salesforce")).is_err(), "components, not string prefixes");
        assert!(sales.check(Access::Read, &namespace("hr")).is_ok(), "on the way to hr$payroll");
        assert!(sales.check(Access::Admin, &namespace("hr")).is_err(), "but not its own");
        assert!(sales.check(Access::Read, &namespace("$")).is_ok());
        assert!(sales.check(Access::Admin, &Target::Server).is_err(), "a scoped key is no server admin");
    }

    #[tokio::test]
    async fn requests_without_a_caller_are_refused_and_changes_are_remembered() {
        assert!(matches!(require(Access::Read, &table("t")), Err(ApiError::Forbidden(_))));
        assert!(!visible(&table("t")));
        let reader = Arc::new(caller(&key("r", "r", Role::ReadOnly, &[])));
        let context = CallContext::new(reader);
        let outcome = serve_as(context.clone(), async {
            note_committed(7);
            (
                require(Access::Read, &table("t")).is_ok(),
                require(Access::Write, &table("ns$t")).is_err(),
                visible(&table("t")),
            )
        })
        .await;
        assert_eq!(outcome, (true, true, true));
        assert_eq!(context.changed_target().as_deref(), Some("ns$t"));
        assert_eq!(context.committed_version(), Some(7));
    }
}
