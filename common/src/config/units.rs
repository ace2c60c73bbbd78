//! Byte sizes and durations as they are written in configuration: `"4GiB"`, `"512MiB"`,
//! `"100Gi"` (Kubernetes quantities), `"30s"`, `"1m 30s"`, `"250ms"`.
//!
//! A byte size may also be a plain integer (bytes). A duration always carries its unit:
//! a bare number would be ambiguous, and the renamed keys of the first configuration
//! (`*_ms`, `*_seconds`) say theirs in the key (see [`super::renamed`]).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A number of bytes, read from an integer or a size with a unit.
///
/// Units: `B`; decimal `K`/`KB`, `M`/`MB`, `G`/`GB`, `T`/`TB` (powers of 1000); binary
/// `Ki`/`KiB`, `Mi`/`MiB`, `Gi`/`GiB`, `Ti`/`TiB` (powers of 1024), in any case, with or
/// without a space; a fraction is allowed when the result is a whole number of bytes
/// (`"1.5GiB"`). Written back with the largest binary unit that divides it (`"16GiB"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// `n` KiB.
    pub const fn kib(n: u64) -> Self {
        Self(n << 10)
    }

    /// `n` MiB.
    pub const fn mib(n: u64) -> Self {
        Self(n << 20)
    }

    /// `n` GiB.
    pub const fn gib(n: u64) -> Self {
        Self(n << 30)
    }

    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }

    /// The size as a `usize`, saturating on 32-bit targets.
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u32); 4] = [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)];
        for (unit, shift) in UNITS {
            if self.0 != 0 && self.0.is_multiple_of(1 << shift) {
                return write!(formatter, "{}{unit}", self.0 >> shift);
            }
        }
        write!(formatter, "{}B", self.0)
    }
}

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let invalid = || format!("'{text}' is not a byte size; write e.g. 4GiB, 512MiB, 100Gi or 1048576");
        let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "ki" | "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mi" | "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gi" | "gib" => 1 << 30,
            "t" | "tb" => 1_000_000_000_000,
            "ti" | "tib" => 1 << 40,
            _ => return Err(invalid()),
        };
        if let Ok(whole) = number.parse::<u64>() {
            return whole.checked_mul(multiplier).map(Self).ok_or_else(|| format!("'{text}' is too large"));
        }
        let fraction = number.parse::<f64>().map_err(|_| invalid())?;
        let bytes = fraction * multiplier as f64;
        if bytes.fract() != 0.0 || !(0.0..u64::MAX as f64).contains(&bytes) {
            return Err(format!("'{text}' is not a whole number of bytes"));
        }
        Ok(Self(bytes as u64))
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Bytes(u64),
            Text(String),
        }
        match Wire::deserialize(deserializer)
            .map_err(|_| serde::de::Error::custom("expected a byte size: an integer, or a string such as \"4GiB\""))?
        {
            Wire::Bytes(bytes) => Ok(Self(bytes)),
            Wire::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// `#[serde(with = "duration")]` for a [`Duration`] written with its unit (`"30s"`,
/// `"250ms"`, `"1h 30m"`, as `humantime` reads and writes them).
pub mod duration {
    use super::*;

    /// Writes `value` as `humantime` formats it (`"30s"`, `"1m 30s"`).
    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_duration(*value))
    }

    /// Reads a duration with its unit; a bare number is refused with the reason.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Text(String),
            Number(f64),
        }
        match Wire::deserialize(deserializer)
            .map_err(|_| serde::de::Error::custom("expected a duration such as \"30s\" or \"250ms\""))?
        {
            Wire::Text(text) => parse(&text).map_err(serde::de::Error::custom),
            Wire::Number(number) => Err(serde::de::Error::custom(format!(
                "a duration needs its unit: write \"{number}s\" or \"{number}ms\", not {number}"
            ))),
        }
    }

    /// Parses `"30s"`, `"250ms"`, `"1h 30m"`.
    pub fn parse(text: &str) -> Result<Duration, String> {
        humantime::parse_duration(text.trim())
            .map_err(|error| format!("'{text}' is not a duration ({error}); write e.g. \"30s\" or \"250ms\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_read_every_common_spelling() {
        let cases = [
            ("1048576", 1 << 20),
            ("4GiB", 4 << 30),
            ("4 GiB", 4 << 30),
            ("512mib", 512 << 20),
            ("100Gi", 100 << 30),
            ("64Ki", 64 << 10),
            ("2GB", 2_000_000_000),
            ("1.5GiB", 3 << 29),
            ("0", 0),
            ("7B", 7),
        ];
        for (text, bytes) in cases {
            assert_eq!(text.parse::<ByteSize>(), Ok(ByteSize(bytes)), "{text}");
        }
        for bad in ["", "GiB", "4 parsecs", "-1GiB", "0.5B", "99999999999TiB", "1.2.3MiB"] {
            assert!(bad.parse::<ByteSize>().is_err(), "{bad} is refused");
        }
    }

    #[test]
    fn byte_sizes_write_back_in_the_largest_exact_binary_unit() {
        assert_eq!(ByteSize::gib(16).to_string(), "16GiB");
        assert_eq!(ByteSize::mib(1536).to_string(), "1536MiB");
        assert_eq!(ByteSize(1000).to_string(), "1000B");
        assert_eq!(ByteSize(0).to_string(), "0B");
        for size in [ByteSize::gib(16), ByteSize::mib(1536), ByteSize(1000), ByteSize(0)] {
            assert_eq!(size.to_string().parse::<ByteSize>(), Ok(size), "round trip");
        }
    }

    #[test]
    fn durations_need_a_unit() {
        #[derive(Deserialize)]
        struct Holder {
            #[serde(with = "duration")]
            value: Duration,
        }
        let read = |json: &str| serde_json::from_str::<Holder>(json).map(|holder| holder.value);
        assert_eq!(read(r#"{"value":"30s"}"#).expect("30s"), Duration::from_secs(30));
        assert_eq!(read(r#"{"value":"1m 30s"}"#).expect("90s"), Duration::from_secs(90));
        assert_eq!(read(r#"{"value":"250ms"}"#).expect("250ms"), Duration::from_millis(250));
        let bare = read(r#"{"value":30}"#).expect_err("a bare number is refused");
        assert!(bare.to_string().contains("needs its unit"), "{bare}");
        assert!(read(r#"{"value":"soon"}"#).is_err());
        assert_eq!(humantime::format_duration(Duration::from_millis(1500)).to_string(), "1s 500ms");
    }
}
