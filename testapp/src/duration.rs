//! Go duration strings (`300ms`, `1.5s`, `1m30s`), as a Deployment's env writes `FAULT_DELAY`.
//!
//! Same grammar and units as Go's `time.ParseDuration`, in integer nanoseconds, except that
//! negative durations are rejected (a delay cannot be negative). The controller has its own
//! parser for Canary fields; this crate stands for a third-party image and depends on no other
//! Serin crate, so it carries this one.

use std::time::Duration;

use crate::error::{Error, Result};

const NANOS_PER_SECOND: u64 = 1_000_000_000;
/// Go durations are `int64` nanoseconds.
const MAX_NANOS: u64 = i64::MAX as u64;

/// Parses a Go duration such as `300ms`, `1.5s`, `1m30s` or `0`.
pub fn parse_go_duration(input: &str) -> Result<Duration> {
    let fail = |reason| Error::Duration { reason };
    let mut s = input.strip_prefix('+').unwrap_or(input);
    if s.starts_with('-') {
        return Err(fail("must not be negative"));
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(fail("empty"));
    }
    let mut total: u64 = 0;
    while !s.is_empty() {
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let (int_digits, rest) = s.split_at(int_len);
        s = rest;
        let mut frac_digits = "";
        if let Some(rest) = s.strip_prefix('.') {
            let frac_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            (frac_digits, s) = rest.split_at(frac_len);
        }
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(fail("expected a number"));
        }
        let unit_len = s
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(s.len());
        let (unit, rest) = s.split_at(unit_len);
        s = rest;
        let scale: u64 = match unit {
            "" => return Err(fail("missing unit (ns, us, ms, s, m or h)")),
            "ns" => 1,
            "us" | "\u{00b5}s" | "\u{03bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => NANOS_PER_SECOND,
            "m" => 60 * NANOS_PER_SECOND,
            "h" => 3600 * NANOS_PER_SECOND,
            _ => return Err(fail("unknown unit (ns, us, ms, s, m or h)")),
        };
        let overflow = || fail("out of range");
        let mut nanos = int_digits
            .bytes()
            .try_fold(0u64, |acc, d| {
                acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
            })
            .and_then(|v| v.checked_mul(scale))
            .ok_or_else(overflow)?;
        // The fraction, digit by digit, in exact integer arithmetic: each digit is worth a
        // tenth of the one before, and digits below a nanosecond are dropped (as in Go).
        let mut place = scale;
        for d in frac_digits.bytes() {
            place /= 10;
            if place == 0 {
                break;
            }
            nanos = nanos
                .checked_add(u64::from(d - b'0') * place)
                .ok_or_else(overflow)?;
        }
        total = total
            .checked_add(nanos)
            .filter(|&v| v <= MAX_NANOS)
            .ok_or_else(overflow)?;
    }
    Ok(Duration::from_nanos(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        let ms = Duration::from_millis;
        let cases = [
            ("300ms", ms(300)),
            ("1.5s", ms(1500)),
            ("1m30s", ms(90_000)),
            ("2h", ms(7_200_000)),
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("+5s", ms(5000)),
            (".5s", ms(500)),
            ("1.s", ms(1000)),
            ("1h2m3s4ms5us6ns", Duration::new(3723, 4_005_006)),
            ("1.000000001s", Duration::new(1, 1)),
            ("1.0000000019s", Duration::new(1, 1)),
            ("250\u{00b5}s", Duration::from_micros(250)),
            ("0.1h", ms(360_000)),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_go_duration(input).ok(), Some(expected), "{input}");
        }
    }

    #[test]
    fn rejects_what_go_rejects_and_negatives() {
        let cases = [
            ("5", "missing unit"),
            ("1x", "unknown unit"),
            ("-1s", "negative"),
            ("-0", "negative"),
            ("", "empty"),
            ("s", "expected a number"),
            ("1.5.s", "missing unit"),
            (".s", "expected a number"),
            ("1s ", "unknown unit"),
            ("3000000h", "out of range"),
            ("99999999999999999999ns", "out of range"),
        ];
        for (input, reason) in cases {
            match parse_go_duration(input) {
                Err(e @ Error::Duration { .. }) => {
                    assert!(e.to_string().contains(reason), "{input}: {e}");
                }
                other => panic!("{input}: {other:?}"),
            }
        }
    }
}
