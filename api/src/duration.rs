//! Go-style durations (`30s`, `1m30s`, `500ms`, `1.5h`), as Flagger's manifests write them.
//!
//! The parser follows Go's `time.ParseDuration` exactly (same grammar, same units, integer
//! arithmetic on nanoseconds, same overflow limit) except that negative durations are
//! rejected: no duration in a Canary can be negative. Formatting follows Go's
//! `time.Duration.String`, so `90s` prints as `1m30s` and `1200ms` as `1.2s`, which is the
//! wording Flagger's events use.
//!
//! `kube::core::Duration` also parses Go durations, but through floating point multiplication,
//! it accepts an empty string as zero and it prints Rust's `Debug` form rather than Go's; both
//! matter here (validation must reject `""`, events must print `1.2s`), hence this module.

use std::{fmt, str::FromStr, time::Duration};

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;

const NANOS_PER_MICRO: u64 = 1_000;
const NANOS_PER_MILLI: u64 = 1_000_000;
const NANOS_PER_SECOND: u64 = 1_000_000_000;
/// Go durations are `int64` nanoseconds.
const MAX_NANOS: u64 = i64::MAX as u64;

/// A non-negative duration written in Go's syntax.
///
/// Serialises back in Go's canonical form (`1m30s`), which parses to the same value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GoDuration(Duration);

impl GoDuration {
    /// Wraps a standard duration.
    pub const fn new(duration: Duration) -> Self {
        Self(duration)
    }

    /// A duration of `secs` seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }

    /// The standard library duration.
    pub const fn get(self) -> Duration {
        self.0
    }

    /// Whether this duration is zero.
    pub const fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

impl From<Duration> for GoDuration {
    fn from(duration: Duration) -> Self {
        Self(duration)
    }
}

impl From<GoDuration> for Duration {
    fn from(duration: GoDuration) -> Self {
        duration.0
    }
}

impl FromStr for GoDuration {
    type Err = Error;

    fn from_str(input: &str) -> Result<Self, Error> {
        parse(input)
            .map(Self)
            .map_err(|reason| Error::InvalidDuration {
                input: input.to_owned(),
                reason,
            })
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_go(self.0))
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = GoDuration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"30s\", \"1m30s\" or \"500ms\"")
            }

            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<GoDuration, E> {
                value.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

impl JsonSchema for GoDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "GoDuration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "Duration in Go syntax, e.g. 30s, 1m30s, 500ms.",
        })
    }
}

/// Parses a Go duration into nanoseconds, returning the reason on failure.
fn parse(input: &str) -> Result<Duration, String> {
    let mut s = input;
    if let Some(rest) = s.strip_prefix('-') {
        if rest == "0" {
            return Ok(Duration::ZERO);
        }
        return Err("must not be negative".to_owned());
    }
    if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty string".to_owned());
    }
    let mut total: u64 = 0;
    while !s.is_empty() {
        // Integer part.
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let (int_digits, rest) = s.split_at(int_len);
        s = rest;
        // Fraction part.
        let mut frac_digits = "";
        if let Some(rest) = s.strip_prefix('.') {
            let frac_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            (frac_digits, s) = rest.split_at(frac_len);
        }
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err("expected a number".to_owned());
        }
        // Unit: everything up to the next digit or dot.
        let unit_len = s
            .char_indices()
            .find(|&(_, c)| c == '.' || c.is_ascii_digit())
            .map_or(s.len(), |(i, _)| i);
        let (unit, rest) = s.split_at(unit_len);
        s = rest;
        let scale = match unit {
            "" => return Err("missing unit (expected ns, us, ms, s, m or h)".to_owned()),
            "ns" => 1,
            "us" | "\u{00b5}s" | "\u{03bc}s" => NANOS_PER_MICRO,
            "ms" => NANOS_PER_MILLI,
            "s" => NANOS_PER_SECOND,
            "m" => 60 * NANOS_PER_SECOND,
            "h" => 3600 * NANOS_PER_SECOND,
            other => {
                return Err(format!(
                    "unknown unit {other:?} (expected ns, us, ms, s, m or h)"
                ));
            }
        };
        let overflow = || "out of range".to_owned();
        let mut value: u64 = 0;
        for digit in int_digits.bytes() {
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(digit - b'0')))
                .filter(|&v| v <= MAX_NANOS)
                .ok_or_else(overflow)?;
        }
        let mut nanos = value
            .checked_mul(scale)
            .filter(|&v| v <= MAX_NANOS)
            .ok_or_else(overflow)?;
        // Like Go's `leadingFraction`: digits that would overflow are ignored, and the
        // fraction is scaled through a float64 (nanosecond accurate up to hours).
        let (mut frac, mut frac_scale) = (0u64, 1f64);
        for digit in frac_digits.bytes() {
            match frac
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(digit - b'0')))
            {
                Some(next) if next <= MAX_NANOS => {
                    frac = next;
                    frac_scale *= 10.0;
                }
                _ => break,
            }
        }
        if frac > 0 {
            // Truncation is Go's behaviour; the value is at most 3.6e12.
            let fraction = (frac as f64 * (scale as f64 / frac_scale)) as u64;
            nanos = nanos
                .checked_add(fraction)
                .filter(|&v| v <= MAX_NANOS)
                .ok_or_else(overflow)?;
        }
        total = total
            .checked_add(nanos)
            .filter(|&v| v <= MAX_NANOS)
            .ok_or_else(overflow)?;
    }
    Ok(Duration::from_nanos(total))
}

/// Formats like Go's `time.Duration.String`.
pub fn format_go(duration: Duration) -> String {
    let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return "0s".to_owned();
    }
    if nanos < NANOS_PER_SECOND {
        let (unit, prec) = if nanos < NANOS_PER_MICRO {
            ("ns", 0)
        } else if nanos < NANOS_PER_MILLI {
            ("\u{00b5}s", 3)
        } else {
            ("ms", 6)
        };
        let (int, frac) = split_fraction(nanos, prec);
        return format!("{int}{frac}{unit}");
    }
    let (secs, frac) = split_fraction(nanos, 9);
    let (mins, secs) = (secs / 60, secs % 60);
    let (hours, mins) = (mins / 60, mins % 60);
    if hours > 0 {
        format!("{hours}h{mins}m{secs}{frac}s")
    } else if mins > 0 {
        format!("{mins}m{secs}{frac}s")
    } else {
        format!("{secs}{frac}s")
    }
}

/// Splits `value` into its integer part above `prec` decimal digits and the formatted
/// fraction (`.5`, `.25`, or empty), trailing zeros removed, like Go's `fmtFrac`.
fn split_fraction(value: u64, prec: u32) -> (u64, String) {
    let divisor = 10u64.pow(prec);
    let (int, frac) = (value / divisor, value % divisor);
    if frac == 0 {
        return (int, String::new());
    }
    let digits = format!("{frac:0width$}", width = prec as usize);
    (int, format!(".{}", digits.trim_end_matches('0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(input: &str) -> Duration {
        match input.parse::<GoDuration>() {
            Ok(d) => d.get(),
            Err(err) => panic!("{input:?} should parse: {err}"),
        }
    }

    fn err(input: &str) -> String {
        match input.parse::<GoDuration>() {
            Ok(d) => panic!("{input:?} should not parse, got {d:?}"),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn parses_like_go() {
        let cases: &[(&str, Duration)] = &[
            ("0", Duration::ZERO),
            ("-0", Duration::ZERO),
            ("+5s", Duration::from_secs(5)),
            ("30s", Duration::from_secs(30)),
            ("1m", Duration::from_secs(60)),
            ("1m30s", Duration::from_secs(90)),
            ("1h", Duration::from_secs(3600)),
            ("1h2m3s", Duration::from_secs(3723)),
            ("500ms", Duration::from_millis(500)),
            ("1.5h", Duration::from_secs(5400)),
            ("1.5s", Duration::from_millis(1500)),
            (".5s", Duration::from_millis(500)),
            ("5.s", Duration::from_secs(5)),
            ("10us", Duration::from_micros(10)),
            ("10\u{00b5}s", Duration::from_micros(10)),
            ("10\u{03bc}s", Duration::from_micros(10)),
            ("7ns", Duration::from_nanos(7)),
            ("0.0000000015s", Duration::from_nanos(1)),
            ("1s500ms", Duration::from_millis(1500)),
            (
                "9223372036854775807ns",
                Duration::from_nanos(i64::MAX as u64),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(ok(input), *want, "{input}");
        }
    }

    #[test]
    fn rejects_with_clear_errors() {
        assert_eq!(
            err("1x"),
            "invalid duration \"1x\": unknown unit \"x\" (expected ns, us, ms, s, m or h)"
        );
        assert_eq!(err(""), "invalid duration \"\": empty string");
        assert_eq!(
            err("10"),
            "invalid duration \"10\": missing unit (expected ns, us, ms, s, m or h)"
        );
        assert_eq!(err("-1s"), "invalid duration \"-1s\": must not be negative");
        assert_eq!(err("s"), "invalid duration \"s\": expected a number");
        assert_eq!(
            err("1m ."),
            "invalid duration \"1m .\": unknown unit \"m \" (expected ns, us, ms, s, m or h)"
        );
        assert_eq!(
            err("9223372036854775808ns"),
            "invalid duration \"9223372036854775808ns\": out of range"
        );
        assert_eq!(
            err("3000000h"),
            "invalid duration \"3000000h\": out of range"
        );
    }

    #[test]
    fn formats_like_go() {
        let cases: &[(Duration, &str)] = &[
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(1), "1ns"),
            (Duration::from_nanos(1100), "1.1\u{00b5}s"),
            (Duration::from_micros(2200), "2.2ms"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_millis(1200), "1.2s"),
            (Duration::from_secs(60), "1m0s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_millis(3_723_500), "1h2m3.5s"),
        ];
        for (duration, want) in cases {
            assert_eq!(format_go(*duration), *want);
        }
    }

    #[test]
    fn serde_round_trips_through_canonical_form() {
        let d: GoDuration = serde_json::from_str("\"90s\"").unwrap_or_default();
        assert_eq!(d.get(), Duration::from_secs(90));
        assert_eq!(serde_json::to_string(&d).ok().as_deref(), Some("\"1m30s\""));
    }
}
