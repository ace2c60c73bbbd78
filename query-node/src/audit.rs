//! The audit log: one JSON line per write and admin request, allowed or not, to a sink of
//! its own (`auth.audit_log`): who (the key's id and role, never the key), what (interface,
//! operation, target), the version it committed, and how it ended.
//!
//! ```json
//! {"time":"2026-11-30T17:02:11.512Z","request_id":"6f0c…","interface":"rest","operation":"insert",
//!  "key_id":"etl","role":"read-write","target":"sales$orders","version":12,"outcome":"ok","status":200}
//! ```
//!
//! `outcome` is `ok`, `denied` (no valid key: 401; a key without the right: 403) or
//! `failed` (any other error; `error_code` names it).

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;

use crate::error::ApiError;

/// How a request ended, for the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Done.
    Ok,
    /// Refused for its credentials.
    Denied,
    /// Failed otherwise.
    Failed,
}

/// One audited request.
#[derive(Debug, Serialize)]
pub struct AuditEntry<'a> {
    /// The request id (`x-request-id`).
    pub request_id: &'a str,
    /// `rest` or `flight`.
    pub interface: &'static str,
    /// The REST operation (`insert`, `drop`, `namespace/create`…) or the Flight method.
    pub operation: &'a str,
    /// The key's id; absent when no valid key was presented.
    pub key_id: Option<&'a str>,
    /// The key's role.
    pub role: Option<&'static str>,
    /// The table or namespace id (empty for the server or when unknown).
    pub target: &'a str,
    /// The table version the request committed.
    pub version: Option<u64>,
    /// How it ended.
    pub outcome: Outcome,
    /// The HTTP status (REST) of the answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The error code of a failed request (REST: LanceFleet's; Flight: the gRPC code).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<&'a str>,
}

/// Where audit lines go.
pub struct AuditLog {
    sink: Option<Mutex<Box<dyn Write + Send>>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("AuditLog").field("enabled", &self.sink.is_some()).finish()
    }
}

impl AuditLog {
    /// The sink `spec` names: `stdout`, `stderr`, a file appended to, or nothing (off).
    pub fn open(spec: &str) -> Result<Self, ApiError> {
        let sink: Box<dyn Write + Send> = match spec.trim() {
            "" => return Ok(Self::off()),
            "stdout" => Box::new(std::io::stdout()),
            "stderr" => Box::new(std::io::stderr()),
            path => Box::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|error| ApiError::Config(format!("auth.audit_log: cannot open {path}: {error}")))?,
            ),
        };
        Ok(Self { sink: Some(Mutex::new(sink)) })
    }

    /// No audit log.
    pub fn off() -> Self {
        Self { sink: None }
    }

    /// Writes one line for `entry`; a line that cannot be written is logged.
    pub fn record(&self, entry: &AuditEntry<'_>) {
        let Some(sink) = &self.sink else { return };
        let time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let mut line = match serde_json::to_value(entry) {
            Ok(serde_json::Value::Object(fields)) => fields,
            _ => return,
        };
        line.insert("time".into(), time.into());
        let mut text = serde_json::Value::Object(line).to_string();
        text.push('\n');
        let written = sink.lock().map_err(|_| std::io::Error::other("poisoned")).and_then(|mut sink| {
            sink.write_all(text.as_bytes())?;
            sink.flush()
        });
        if let Err(error) = written {
            tracing::error!(%error, operation = entry.operation, target = entry.target, "audit line not written");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_json_line_per_entry_appended_to_a_file() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(path.to_str().expect("utf-8")).expect("opens");
        let entry = |outcome, version| AuditEntry {
            request_id: "r1",
            interface: "rest",
            operation: "insert",
            key_id: Some("etl"),
            role: Some("read-write"),
            target: "sales$orders",
            version,
            outcome,
            status: Some(200),
            error_code: None,
        };
        log.record(&entry(Outcome::Ok, Some(3)));
        log.record(&entry(Outcome::Denied, None));
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<serde_json::Value> =
            text.lines().map(|line| serde_json::from_str(line).expect("json line")).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["key_id"], "etl");
        assert_eq!(lines[0]["version"], 3);
        assert_eq!(lines[0]["outcome"], "ok");
        assert_eq!(lines[1]["outcome"], "denied");
        assert!(lines[1]["time"].as_str().is_some_and(|time| time.ends_with('Z')));
        assert!(AuditLog::open("/nonexistent-dir/audit.jsonl").is_err());
    }
}
