//! Structured logging to stderr.

use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Default filter: `info`, but lance's per-dataset-open events only from `warn`.
/// (Filter targets match by prefix, so `lance=warn` would silence `lancefleet_*` too.)
pub const DEFAULT_LOG_FILTER: &str = "info,lance::dataset_events=warn";

/// Logging configuration (`[log]` in the config file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `lancefleet_engine=debug`.
    /// `RUST_LOG`, when set, takes precedence. Default: `info,lance::dataset_events=warn`.
    pub level: String,
    /// `text` (default) or `json`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: DEFAULT_LOG_FILTER.to_string(), format: LogFormat::Text }
    }
}

impl LogConfig {
    /// Refuses a filter `tracing` cannot parse.
    pub fn validate(&self) -> Result<(), crate::config::ConfigError> {
        EnvFilter::try_new(&self.level).map(drop).map_err(|error| crate::config::ConfigError::Value {
            key: "log.level".into(),
            reason: format!("'{}' is not a tracing filter: {error}", self.level),
        })
    }
}

/// Installs the global subscriber. Call once, early in `main`.
///
/// Returns an error if the filter does not parse or a subscriber is already installed.
pub fn init_logging(config: &LogConfig) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(from_env) if !from_env.is_empty() => EnvFilter::try_new(from_env)?,
        _ => EnvFilter::try_new(&config.level)?,
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    }
}
