//! Traffic weights.
//!
//! Users write weights as percentages, possibly fractional (`stepWeights: [0.1, 1, 5, 25]`).
//! [`Percent`] keeps the number as written so validation can quote it back; [`Weight`] is the
//! validated form used everywhere else: an integer number of basis points out of 10000, so
//! arithmetic on weights is exact and `primary + canary == 10000` always holds.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;

/// A percentage as written in a manifest (`10`, `0.5`). Not validated; see [`Weight`].
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Percent(pub f64);

impl Percent {
    /// The number as written.
    pub const fn get(self) -> f64 {
        self.0
    }

    /// Converts to a [`Weight`]: it must be finite, within 0..=100 and a multiple of 0.01.
    pub fn to_weight(self) -> Result<Weight, Error> {
        Weight::from_percent(self.0)
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl Serialize for Percent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_number(self.0, serializer)
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_number(deserializer).map(Percent)
    }
}

impl JsonSchema for Percent {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Percent".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "number",
            "description": "Percentage (0-100); fractions down to 0.01 are allowed.",
        })
    }
}

/// A traffic weight in basis points: `0..=10000`, where 10000 is all traffic.
///
/// Displays and serialises as a percentage (`10`, `0.1`, `2.5`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Weight(u16);

impl Weight {
    /// No traffic.
    pub const ZERO: Weight = Weight(0);
    /// All traffic.
    pub const FULL: Weight = Weight(10_000);

    /// A weight of `bp` basis points, if `bp <= 10000`.
    pub const fn from_basis_points(bp: u16) -> Option<Weight> {
        if bp <= Self::FULL.0 {
            Some(Weight(bp))
        } else {
            None
        }
    }

    /// A weight of `percent` percent, for whole percentages up to 100.
    pub const fn from_whole_percent(percent: u8) -> Option<Weight> {
        if percent <= 100 {
            Some(Weight(percent as u16 * 100))
        } else {
            None
        }
    }

    /// Converts a percentage: it must be finite, within 0..=100 and a multiple of 0.01.
    pub fn from_percent(percent: f64) -> Result<Weight, Error> {
        let invalid = |reason: &str| Error::InvalidWeight {
            value: percent,
            reason: reason.to_owned(),
        };
        if !percent.is_finite() {
            return Err(invalid("must be a finite number"));
        }
        if percent < 0.0 {
            return Err(invalid("must not be negative"));
        }
        if percent > 100.0 {
            return Err(invalid("must be at most 100"));
        }
        let bp = percent * 100.0;
        let rounded = bp.round();
        if (bp - rounded).abs() > 1e-6 {
            return Err(invalid("must be a multiple of 0.01"));
        }
        // `rounded` is an integer within 0..=10000 here.
        Ok(Weight(rounded as u16))
    }

    /// The weight in basis points (0..=10000).
    pub const fn basis_points(self) -> u16 {
        self.0
    }

    /// The weight as a percentage.
    pub fn as_percent(self) -> f64 {
        f64::from(self.0) / 100.0
    }

    /// Whether no traffic is routed.
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// `FULL - self`: the other backend's share.
    pub const fn complement(self) -> Weight {
        Weight(Self::FULL.0 - self.0)
    }

    /// `self + other`, capped at [`Weight::FULL`].
    pub const fn saturating_add(self, other: Weight) -> Weight {
        let sum = self.0 + other.0; // both <= 10000, no overflow in u16
        if sum > Self::FULL.0 {
            Self::FULL
        } else {
            Weight(sum)
        }
    }

    /// `self - other`, floored at zero.
    pub const fn saturating_sub(self, other: Weight) -> Weight {
        Weight(self.0.saturating_sub(other.0))
    }
}

impl fmt::Display for Weight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (int, frac) = (self.0 / 100, self.0 % 100);
        if frac == 0 {
            write!(f, "{int}")
        } else if frac % 10 == 0 {
            write!(f, "{int}.{}", frac / 10)
        } else {
            write!(f, "{int}.{frac:02}")
        }
    }
}

impl Serialize for Weight {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.0.is_multiple_of(100) {
            serializer.serialize_u64(u64::from(self.0 / 100))
        } else {
            serializer.serialize_f64(self.as_percent())
        }
    }
}

impl<'de> Deserialize<'de> for Weight {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let percent = deserialize_number(deserializer)?;
        Weight::from_percent(percent).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Weight {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Weight".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "number",
            "description": "Traffic weight in percent (0-100, multiples of 0.01).",
        })
    }
}

/// Serialises whole numbers as integers so YAML and JSON stay tidy (`10`, not `10.0`).
fn serialize_number<S: Serializer>(value: f64, serializer: S) -> Result<S::Ok, S::Error> {
    if value.fract() == 0.0 && value.abs() < 9.0e15 {
        // Exact: whole and within the 53-bit mantissa.
        serializer.serialize_i64(value as i64)
    } else {
        serializer.serialize_f64(value)
    }
}

/// Accepts integers and floats alike.
fn deserialize_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    struct Visitor;
    impl serde::de::Visitor<'_> for Visitor {
        type Value = f64;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a percentage such as 10 or 0.5")
        }

        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<f64, E> {
            Ok(v as f64)
        }

        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<f64, E> {
            Ok(v as f64)
        }

        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<f64, E> {
            Ok(v)
        }
    }
    deserializer.deserialize_any(Visitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_percentages_exactly() {
        let cases: &[(f64, u16)] = &[
            (0.0, 0),
            (0.1, 10),
            (0.01, 1),
            (1.0, 100),
            (5.0, 500),
            (25.0, 2500),
            (33.33, 3333),
            (99.99, 9999),
            (100.0, 10_000),
        ];
        for (percent, bp) in cases {
            let weight = Weight::from_percent(*percent).map(Weight::basis_points);
            assert_eq!(weight.ok(), Some(*bp), "{percent}");
        }
    }

    #[test]
    fn rejects_out_of_range_and_too_fine() {
        let reason = |p: f64| match Weight::from_percent(p) {
            Err(Error::InvalidWeight { reason, .. }) => reason,
            other => panic!("{p}: unexpected {other:?}"),
        };
        assert_eq!(reason(150.0), "must be at most 100");
        assert_eq!(reason(-1.0), "must not be negative");
        assert_eq!(reason(0.005), "must be a multiple of 0.01");
        assert_eq!(reason(f64::NAN), "must be a finite number");
    }

    #[test]
    fn displays_as_percent() {
        let show = |bp| Weight::from_basis_points(bp).map(|w| w.to_string());
        assert_eq!(show(1000).as_deref(), Some("10"));
        assert_eq!(show(10).as_deref(), Some("0.1"));
        assert_eq!(show(250).as_deref(), Some("2.5"));
        assert_eq!(show(1).as_deref(), Some("0.01"));
        assert_eq!(show(1025).as_deref(), Some("10.25"));
        assert_eq!(show(0).as_deref(), Some("0"));
        assert_eq!(show(10_001), None);
    }

    #[test]
    fn serialises_whole_percentages_as_integers() {
        let json = |bp| {
            Weight::from_basis_points(bp)
                .and_then(|w| serde_json::to_string(&w).ok())
                .unwrap_or_default()
        };
        assert_eq!(json(1000), "10");
        assert_eq!(json(10), "0.1");
        let back: Result<Weight, _> = serde_json::from_str("0.1");
        assert_eq!(back.ok().map(Weight::basis_points), Some(10));
        let back: Result<Weight, _> = serde_json::from_str("150");
        assert!(back.is_err());
    }

    #[test]
    fn arithmetic_saturates() {
        let w = |bp| Weight::from_basis_points(bp).unwrap_or_default();
        assert_eq!(w(9000).saturating_add(w(2000)), Weight::FULL);
        assert_eq!(w(1000).saturating_sub(w(2000)), Weight::ZERO);
        assert_eq!(w(2500).complement(), w(7500));
    }
}
