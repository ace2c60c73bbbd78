//! Keys of the first configuration that now take a unit-typed value under a new name
//! (`cache.memory_bytes = 1073741824` became `cache.memory = "1GiB"`). Every layer (file,
//! environment) is read through [`Renamed`], which moves an old key's integer to the new
//! key in that key's unit, so old files and variables keep working and precedence between
//! layers is unchanged. A layer that sets both names of one setting is refused.

use figment::value::{Dict, Map, Value};
use figment::{Error, Metadata, Profile, Provider};

/// The unit an old key's integer is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OldUnit {
    /// Bytes: the new key reads the integer as it is.
    Bytes,
    /// Milliseconds.
    Millis,
    /// Seconds.
    Seconds,
}

/// `(section, old key, new key, unit of the old key's integer)`.
pub const RENAMED_KEYS: &[(&str, &str, &str, OldUnit)] = &[
    ("rest", "max_body_bytes", "max_body", OldUnit::Bytes),
    ("rest", "shutdown_grace_seconds", "shutdown_grace", OldUnit::Seconds),
    ("rest", "weak_read_consistency_interval_seconds", "weak_read_consistency_interval", OldUnit::Seconds),
    ("flight", "max_message_bytes", "max_message", OldUnit::Bytes),
    ("cluster", "fragment_timeout_ms", "fragment_timeout", OldUnit::Millis),
    ("executor", "shutdown_grace_seconds", "shutdown_grace", OldUnit::Seconds),
    ("cache", "memory_bytes", "memory", OldUnit::Bytes),
    ("cache", "disk_bytes", "disk", OldUnit::Bytes),
    ("cache", "chunk_bytes", "chunk", OldUnit::Bytes),
    ("control", "lease_ttl_seconds", "lease_ttl", OldUnit::Seconds),
    ("control", "stopping_propagation_ms", "stopping_propagation", OldUnit::Millis),
    ("control", "probe_interval_ms", "probe_interval", OldUnit::Millis),
    ("control", "probe_timeout_ms", "probe_timeout", OldUnit::Millis),
    ("indexer", "cleanup_retention_seconds", "cleanup_retention", OldUnit::Seconds),
    ("indexer", "retry_after_ms", "retry_after", OldUnit::Millis),
    ("indexer", "commit_retry_timeout_seconds", "commit_retry_timeout", OldUnit::Seconds),
];

/// A configuration layer whose old keys are read under their new names.
#[derive(Debug)]
pub struct Renamed<P>(pub P);

impl<P: Provider> Provider for Renamed<P> {
    fn metadata(&self) -> Metadata {
        self.0.metadata()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, Error> {
        let mut data = self.0.data()?;
        for dict in data.values_mut() {
            rename(dict).map_err(Error::from)?;
        }
        Ok(data)
    }
}

/// Moves every old key of `dict` (one layer, all profiles alike) to its new name.
fn rename(dict: &mut Dict) -> Result<(), String> {
    for (section, old, new, unit) in RENAMED_KEYS {
        let Some(Value::Dict(_, keys)) = dict.get_mut(*section) else { continue };
        let Some(value) = keys.remove(*old) else { continue };
        if keys.contains_key(*new) {
            return Err(format!(
                "set {section}.{new} or its old name {section}.{old}, not both (prefer {section}.{new})"
            ));
        }
        keys.insert((*new).to_string(), converted(value, *unit, section, old)?);
    }
    Ok(())
}

/// An old key's value as the new key reads it: its integer with the old unit attached.
fn converted(value: Value, unit: OldUnit, section: &str, old: &str) -> Result<Value, String> {
    let tag = value.tag();
    let number = value.to_num().and_then(|number| number.to_u128_lossy()).and_then(|number| u64::try_from(number).ok());
    let number =
        number.ok_or_else(|| format!("{section}.{old} takes a whole number (or use its new name with a unit)"))?;
    Ok(match unit {
        OldUnit::Bytes => Value::from(number),
        OldUnit::Millis => Value::String(tag, format!("{number}ms")),
        OldUnit::Seconds => Value::String(tag, format!("{number}s")),
    })
}
