//! Wall-clock instants with second precision, as Kubernetes stores them (`2025-03-16T14:05:07Z`).
//!
//! The stage machine never reads the clock: the caller passes `now` as a [`Timestamp`].
//! Second precision makes a status survive a JSON round trip unchanged, which the
//! restart-safety of the machine relies on.

use std::{fmt, str::FromStr, time::Duration};

use k8s_openapi::jiff;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;

/// Seconds since the Unix epoch, serialised as RFC 3339 in UTC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The instant `secs` seconds after 1970-01-01T00:00:00Z.
    pub const fn from_unix_seconds(secs: i64) -> Self {
        Self(secs)
    }

    /// Now, to the second.
    pub fn now() -> Self {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Timestamp::from_unix_seconds(i64::try_from(secs).unwrap_or(i64::MAX))
    }

    /// Seconds since the Unix epoch.
    pub const fn unix_seconds(self) -> i64 {
        self.0
    }

    /// `self + duration` (sub-second parts are dropped), saturating at the far future.
    pub fn saturating_add(self, duration: Duration) -> Self {
        let secs = i64::try_from(duration.as_secs()).unwrap_or(i64::MAX);
        Self(self.0.saturating_add(secs))
    }

    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_secs(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }
}

impl FromStr for Timestamp {
    type Err = Error;

    fn from_str(input: &str) -> Result<Self, Error> {
        input
            .parse::<jiff::Timestamp>()
            .map(|t| Self(t.as_second()))
            .map_err(|err| Error::InvalidTimestamp {
                input: input.to_owned(),
                reason: err.to_string(),
            })
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match jiff::Timestamp::from_second(self.0) {
            Ok(t) => write!(f, "{}", t.strftime("%Y-%m-%dT%H:%M:%SZ")),
            // Outside jiff's range (beyond year 9999): print the raw count.
            Err(_) => write!(f, "@{}", self.0),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Timestamp {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Timestamp".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "format": "date-time" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_rfc3339() {
        let t = Timestamp::from_unix_seconds(1_742_133_907);
        assert_eq!(t.to_string(), "2025-03-16T14:05:07Z");
        assert_eq!("2025-03-16T14:05:07Z".parse::<Timestamp>().ok(), Some(t));
        // Offsets and fractions are accepted; fractions are dropped.
        assert_eq!(
            "2025-03-16T15:05:07.900+01:00".parse::<Timestamp>().ok(),
            Some(t)
        );
        assert!("yesterday".parse::<Timestamp>().is_err());
    }

    #[test]
    fn arithmetic() {
        let t = Timestamp::from_unix_seconds(100);
        assert_eq!(
            t.saturating_add(Duration::from_secs(60)).unix_seconds(),
            160
        );
        let later = Timestamp::from_unix_seconds(160);
        assert_eq!(later.saturating_duration_since(t), Duration::from_secs(60));
        assert_eq!(t.saturating_duration_since(later), Duration::ZERO);
    }

    #[test]
    fn serde_round_trip() {
        let t = Timestamp::from_unix_seconds(0);
        let json = serde_json::to_string(&t).unwrap_or_default();
        assert_eq!(json, "\"1970-01-01T00:00:00Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&json).ok(), Some(t));
    }
}
