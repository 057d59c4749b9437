//! A parser for the Prometheus text exposition formats (OpenMetrics 1.0 and the classic
//! `text/plain; version=0.0.4`), enough to read serin-proxy's `/metrics`.
//!
//! Why not a crate: `prometheus-parse`, the one that fits, predates OpenMetrics (it trips
//! over exemplars and `# UNIT`/`# EOF`), drags in `chrono`, `itertools` and `lazy_static` for
//! what is one line grammar, and is no longer maintained; `prometheus-client`, which the
//! proxy uses to write the text, only encodes. Sample lines are
//! `name[{label="value",...}] value [timestamp] [# exemplar]`; every `#` line is metadata
//! and skipped. The parser is strict: a line it cannot read is an error naming the line, so
//! a broken scrape never turns into silently missing samples.

use std::borrow::Cow;

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Sample<'a> {
    /// Metric name with its suffix (`serin_http_requests_total`).
    pub(crate) name: &'a str,
    /// Labels in the order written, values unescaped.
    pub(crate) labels: Vec<(&'a str, Cow<'a, str>)>,
    /// The value (`NaN` and infinities included).
    pub(crate) value: f64,
}

impl Sample<'_> {
    /// The value of label `name`, if present.
    pub(crate) fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.as_ref())
    }
}

/// Parses every sample of `text`; the error names the 1-based line and what is wrong.
pub(crate) fn parse(text: &str) -> Result<Vec<Sample<'_>>, String> {
    let mut samples = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let sample = parse_line(line).map_err(|reason| format!("line {}: {reason}", index + 1))?;
        samples.push(sample);
    }
    Ok(samples)
}

fn parse_line(line: &str) -> Result<Sample<'_>, String> {
    let name_end = line.find(['{', ' ', '\t']).ok_or("missing value")?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err(format!("invalid metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        rest = parse_labels(after_brace, &mut labels)?;
    }
    let rest = rest.trim_start_matches([' ', '\t']);
    let mut fields = rest.split([' ', '\t']).filter(|f| !f.is_empty());
    let value = fields.next().ok_or("missing value")?;
    let value = parse_value(value)?;
    // Optional timestamp, then an optional exemplar (`# {labels} value [timestamp]`).
    match fields.next() {
        None | Some("#") => {}
        Some(timestamp) => {
            parse_value(timestamp).map_err(|_| format!("invalid timestamp {timestamp:?}"))?;
            match fields.next() {
                None | Some("#") => {}
                Some(extra) => return Err(format!("unexpected {extra:?} after the timestamp")),
            }
        }
    }
    Ok(Sample {
        name,
        labels,
        value,
    })
}

/// Parses `label="value",...}` and returns what follows the closing brace.
fn parse_labels<'a>(
    mut rest: &'a str,
    labels: &mut Vec<(&'a str, Cow<'a, str>)>,
) -> Result<&'a str, String> {
    loop {
        rest = rest.trim_start_matches([' ', '\t']);
        if let Some(after) = rest.strip_prefix('}') {
            return Ok(after);
        }
        let eq = rest.find('=').ok_or("unterminated label set")?;
        let key = rest[..eq].trim_end_matches([' ', '\t']);
        if !is_label_name(key) {
            return Err(format!("invalid label name {key:?}"));
        }
        rest = rest[eq + 1..].trim_start_matches([' ', '\t']);
        let quoted = rest
            .strip_prefix('"')
            .ok_or_else(|| format!("label {key}: value must be quoted"))?;
        let (value, after) =
            parse_quoted(quoted).map_err(|reason| format!("label {key}: {reason}"))?;
        labels.push((key, value));
        rest = after.trim_start_matches([' ', '\t']);
        if let Some(after_comma) = rest.strip_prefix(',') {
            rest = after_comma;
        } else if !rest.starts_with('}') {
            return Err(format!("label {key}: expected ',' or '}}'"));
        }
    }
}

/// Reads a quoted label value (after the opening quote) with its escapes (`\\`, `\"`,
/// `\n`); returns it and what follows the closing quote.
fn parse_quoted(text: &str) -> Result<(Cow<'_, str>, &str), String> {
    let bytes = text.as_bytes();
    let mut owned: Option<String> = None;
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let value = match owned {
                    None => Cow::Borrowed(&text[..i]),
                    Some(mut s) => {
                        s.push_str(&text[start..i]);
                        Cow::Owned(s)
                    }
                };
                return Ok((value, &text[i + 1..]));
            }
            b'\\' => {
                let escaped = match bytes.get(i + 1) {
                    Some(b'\\') => '\\',
                    Some(b'"') => '"',
                    Some(b'n') => '\n',
                    Some(other) => return Err(format!("invalid escape \\{}", char::from(*other))),
                    None => return Err("unterminated value".to_owned()),
                };
                let s = owned.get_or_insert_with(String::new);
                s.push_str(&text[start..i]);
                s.push(escaped);
                i += 2;
                start = i;
            }
            _ => i += 1,
        }
    }
    Err("unterminated value".to_owned())
}

/// A sample value: a float, `NaN`, `+Inf`, `-Inf` (Go's `ParseFloat` spellings).
pub(crate) fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "NaN" => Ok(f64::NAN),
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ if text
            .bytes()
            .any(|b| b.is_ascii_alphabetic() && !matches!(b, b'e' | b'E')) =>
        {
            Err(format!("invalid value {text:?}"))
        }
        _ => text.parse().map_err(|_| format!("invalid value {text:?}")),
    }
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What serin-proxy writes (prometheus-client's OpenMetrics encoder), trimmed.
    const PROXY: &str = r#"# HELP serin_http_requests HTTP requests by route, backend, status code sent to the client and traffic kind.
# TYPE serin_http_requests counter
serin_http_requests_total{route="test/r",backend="test/podinfo-canary",code="200",traffic="live"} 18
serin_http_requests_total{route="test/r",backend="test/podinfo-canary",code="500",traffic="live"} 2
# HELP serin_http_request_duration_seconds Time from receiving a request to sending the response headers.
# TYPE serin_http_request_duration_seconds histogram
# UNIT serin_http_request_duration_seconds seconds
serin_http_request_duration_seconds_sum{route="test/r",backend="test/podinfo-canary",traffic="live"} 0.0123
serin_http_request_duration_seconds_count{route="test/r",backend="test/podinfo-canary",traffic="live"} 20
serin_http_request_duration_seconds_bucket{le="0.001",route="test/r",backend="test/podinfo-canary",traffic="live"} 3
serin_http_request_duration_seconds_bucket{le="+Inf",route="test/r",backend="test/podinfo-canary",traffic="live"} 20
# HELP serin_http_unrouted_requests Requests that matched no route (answered 404).
# TYPE serin_http_unrouted_requests counter
serin_http_unrouted_requests_total 0
# EOF
"#;

    #[test]
    fn reads_the_proxys_exposition() {
        let samples = parse(PROXY).unwrap_or_default();
        assert_eq!(samples.len(), 7);
        assert_eq!(samples[0].name, "serin_http_requests_total");
        assert_eq!(samples[0].label("backend"), Some("test/podinfo-canary"));
        assert_eq!(samples[0].label("code"), Some("200"));
        assert_eq!(samples[0].value, 18.0);
        assert_eq!(samples[4].label("le"), Some("0.001"));
        assert_eq!(samples[5].label("le"), Some("+Inf"));
        assert_eq!(samples[5].value, 20.0);
        assert_eq!(samples[6].name, "serin_http_unrouted_requests_total");
        assert!(samples[6].labels.is_empty());
    }

    #[test]
    fn values_timestamps_exemplars_and_escapes() {
        let text = "a 1.5e3 1700000000000\n\
                    b{x=\"q\\\"uo\\\\te\\nd\"} NaN\n\
                    c{ y = \"1\" , } +Inf # {trace_id=\"abc\"} 1.0 1.0\n\
                    d -Inf\n\
                    e{} 7\r\n";
        let samples = parse(text).unwrap_or_default();
        assert_eq!(samples.len(), 5, "{samples:?}");
        assert_eq!(samples[0].value, 1500.0);
        assert!(samples[1].value.is_nan());
        assert_eq!(samples[1].label("x"), Some("q\"uo\\te\nd"));
        assert_eq!(samples[2].value, f64::INFINITY);
        assert_eq!(samples[2].label("y"), Some("1"));
        assert_eq!(samples[3].value, f64::NEG_INFINITY);
        assert_eq!(samples[4].value, 7.0);
    }

    #[test]
    fn malformed_lines_are_errors_naming_the_line() {
        for (text, expected) in [
            ("ok 1\nbroken\n", "line 2: missing value"),
            ("m{a=\"1\" 2\n", "line 1: label a: expected ',' or '}'"),
            ("m{a=1} 2\n", "line 1: label a: value must be quoted"),
            ("m{a=\"1} 2\n", "line 1: label a: unterminated value"),
            ("m{a=\"\\t\"} 2\n", "line 1: label a: invalid escape \\t"),
            ("m{1a=\"x\"} 2\n", "line 1: invalid label name \"1a\""),
            ("m twelve\n", "line 1: invalid value \"twelve\""),
            ("m 1 2 3\n", "line 1: unexpected \"3\" after the timestamp"),
            ("9m 1\n", "line 1: invalid metric name \"9m\""),
        ] {
            assert_eq!(parse(text).err().as_deref(), Some(expected), "{text:?}");
        }
    }
}
