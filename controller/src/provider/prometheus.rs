//! The Prometheus metric provider: renders a `MetricTemplate` query for one canary and runs
//! it through the Prometheus HTTP API (`GET ADDRESS/api/v1/query?query=...`).
//!
//! # Query variables
//!
//! As Flagger's, written `{{ name }}` with any spacing (`{{name}}`), and Go's trim markers
//! (`{{- namespace -}}`) eat the blanks on their side:
//!
//! | variable | value |
//! |---|---|
//! | `{{ name }}` | the Canary's name |
//! | `{{ namespace }}` | the Canary's namespace |
//! | `{{ target }}` | the target workload's name |
//! | `{{ service }}` | the apex Service's name |
//! | `{{ interval }}` | the metric's interval as a Prometheus duration (`1m`, `30s`, `1m30s`) |
//! | `{{ variables.KEY }}` | the metric's `templateVariables[KEY]` |
//!
//! Anything else (including Flagger's `{{ ingress }}`, which needs an ingress reference
//! serin does not have) is an error naming the variable, never an empty string that would
//! quietly change the query.
//!
//! # Results
//!
//! The first sample of an instant vector, or a scalar, is the value. An empty vector or NaN
//! (a ratio over no traffic) is [`MetricValue::NoValues`]; an API error is
//! [`MetricValue::Error`] with Prometheus' own message; so is anything unreachable, slow
//! (5s timeout by default, as Flagger's) or unexpected.

use std::{collections::BTreeMap, time::Duration};

use bytes::Bytes;
use http::{Request, header};
use http_body_util::Full;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;
use tracing::{debug, warn};

use super::fetch::{Fetcher, Oversize, http_url, quote, report};
use crate::{
    analysis::{BoxFuture, MetricProvider, MetricQuery, MetricValue},
    error::{Error, Result},
    validation::MetricKind,
};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_RESPONSE_BYTES: usize = 4 << 20;
/// How much of a non-JSON error body to quote.
const QUOTED_BODY_BYTES: usize = 256;

/// Runs `MetricTemplate` queries (and legacy inline queries) against Prometheus.
#[derive(Clone, Debug)]
pub struct PrometheusProvider {
    fetcher: Fetcher,
    timeout: Duration,
    default_address: Option<String>,
}

impl Default for PrometheusProvider {
    fn default() -> Self {
        PrometheusProvider::new()
    }
}

impl PrometheusProvider {
    /// A provider that queries each template's `spec.provider.address`, with a 5s timeout.
    pub fn new() -> PrometheusProvider {
        PrometheusProvider {
            fetcher: Fetcher::new(),
            timeout: DEFAULT_TIMEOUT,
            default_address: None,
        }
    }

    /// Sets the time allowed for one query.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> PrometheusProvider {
        self.timeout = timeout;
        self
    }

    /// Sets the Prometheus that legacy inline `query` metrics (no template) run against,
    /// like Flagger's `-metrics-server` flag. Without it such metrics fail with an error
    /// saying so.
    #[must_use]
    pub fn with_default_address(mut self, address: impl Into<String>) -> PrometheusProvider {
        self.default_address = Some(address.into());
        self
    }

    /// Runs the PromQL `query` (already rendered) against the Prometheus at `address`.
    pub async fn run(&self, address: &str, query: &str) -> MetricValue {
        match self.instant_query(address, query).await {
            Ok(Some(value)) if value.is_nan() => MetricValue::NoValues,
            Ok(Some(value)) => MetricValue::Value(value),
            Ok(None) => MetricValue::NoValues,
            Err(err) => MetricValue::Error(report(&err)),
        }
    }

    /// The query and the address a metric runs with.
    fn plan<'q>(&'q self, query: &MetricQuery<'q>) -> Result<(&'q str, String)> {
        let (text, address) = match &query.check.kind {
            MetricKind::Template {
                name, namespace, ..
            } => {
                let template = query.template.ok_or_else(|| Error::Template {
                    reason: format!(
                        "MetricTemplate {}/{name} was not found",
                        namespace.as_deref().unwrap_or(query.namespace)
                    ),
                })?;
                let provider = template.provider.as_ref();
                match provider.and_then(|p| p.provider_type.as_deref()) {
                    Some("prometheus") => {}
                    other => {
                        return Err(Error::Template {
                            reason: format!(
                                "MetricTemplate {name}: provider type {:?} is not prometheus",
                                other.unwrap_or_default()
                            ),
                        });
                    }
                }
                let address = provider
                    .and_then(|p| p.address.as_deref())
                    .filter(|a| !a.is_empty())
                    .ok_or_else(|| Error::Template {
                        reason: format!("MetricTemplate {name}: spec.provider.address is not set"),
                    })?;
                let text = template.query.as_deref().unwrap_or_default();
                (text, address)
            }
            MetricKind::Query(text) => {
                let address = self.default_address.as_deref().ok_or_else(|| Error::Template {
                    reason: format!(
                        "metric {} has an inline query but no Prometheus address is configured; \
                         use a MetricTemplate",
                        query.check.name
                    ),
                })?;
                (text.as_str(), address)
            }
            MetricKind::RequestSuccessRate | MetricKind::RequestDuration => {
                return Err(Error::Template {
                    reason: format!(
                        "{} is a built-in metric, measured by the built-in provider",
                        query.check.name
                    ),
                });
            }
        };
        Ok((address, render_query(text, query)?))
    }

    /// Runs an instant query; `None` for an empty vector.
    async fn instant_query(&self, address: &str, query: &str) -> Result<Option<f64>> {
        let base = http_url(address)?;
        // Messages name the endpoint, not the encoded query: the query is in the template.
        let endpoint = format!("{}/api/v1/query", base.to_string().trim_end_matches('/'));
        let url = format!(
            "{endpoint}?query={}",
            utf8_percent_encode(query, NON_ALPHANUMERIC)
        );
        let request = Request::get(url.as_str())
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))
            .map_err(|err| Error::InvalidUrl {
                url: url.clone(),
                reason: err.to_string(),
            })?;
        let fetched = self
            .fetcher
            .send(request, self.timeout, MAX_RESPONSE_BYTES, Oversize::Reject)
            .await
            .map_err(|err| naming(err, &endpoint))?;
        let bad = |reason: String| Error::BadResponse {
            url: endpoint.clone(),
            reason,
        };
        let json: Value = match serde_json::from_slice(&fetched.body) {
            Ok(json) => json,
            Err(_) if !fetched.status.is_success() => {
                return Err(bad(format!(
                    "HTTP {}: {}",
                    fetched.status,
                    quote(&fetched.body, QUOTED_BODY_BYTES)
                )));
            }
            Err(err) => return Err(bad(format!("not JSON: {err}"))),
        };
        if json["status"] != "success" {
            let message = json["error"].as_str().unwrap_or("no error message");
            return Err(match json["errorType"].as_str() {
                Some(kind) => bad(format!("prometheus {kind}: {message}")),
                None => bad(format!("prometheus: {message}")),
            });
        }
        let data = &json["data"];
        match data["resultType"].as_str() {
            Some("vector") => {
                let result = data["result"]
                    .as_array()
                    .ok_or_else(|| bad("vector result is not a list".to_owned()))?;
                if result.len() > 1 {
                    debug!(%query, series = result.len(), "query returned several series: using the first");
                }
                match result.first() {
                    None => Ok(None),
                    Some(sample) => sample_value(&sample["value"]).map(Some).map_err(bad),
                }
            }
            Some("scalar") => sample_value(&data["result"]).map(Some).map_err(bad),
            Some(other) => Err(bad(format!(
                "the query must return a single number (an instant vector or a scalar), got a {other}"
            ))),
            None => Err(bad("no resultType".to_owned())),
        }
    }
}

impl MetricProvider for PrometheusProvider {
    fn measure<'a>(&'a self, query: MetricQuery<'a>) -> BoxFuture<'a, MetricValue> {
        Box::pin(async move {
            let value = match self.plan(&query) {
                Ok((address, rendered)) => {
                    debug!(metric = %query.check.name, %address, query = %rendered, "querying prometheus");
                    self.run(address, &rendered).await
                }
                Err(err) => MetricValue::Error(report(&err)),
            };
            if let MetricValue::Error(message) = &value {
                warn!(
                    canary = %query.name,
                    namespace = %query.namespace,
                    metric = %query.check.name,
                    error = %message,
                    "metric query failed"
                );
            }
            value
        })
    }
}

/// Renders a metric query for `query`'s canary (see the module docs for the variables).
pub fn render_query(text: &str, query: &MetricQuery<'_>) -> Result<String> {
    let no_variables = BTreeMap::new();
    let variables = match &query.check.kind {
        MetricKind::Template { variables, .. } => variables,
        _ => &no_variables,
    };
    let interval = prometheus_duration(query.interval());
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut trim_next = false;
    while let Some(open) = rest.find("{{") {
        let (before, after_open) = (&rest[..open], &rest[open + 2..]);
        out.push_str(if trim_next {
            before.trim_start()
        } else {
            before
        });
        let close = after_open.find("}}").ok_or_else(|| Error::Template {
            reason: format!("unterminated {{{{ at {:?}", abbreviate(&rest[open..])),
        })?;
        let mut action = &after_open[..close];
        // Go's trim markers: `{{- ` and ` -}}` (the blank is part of the marker).
        if let Some(inner) = action.strip_prefix("- ").or(action.strip_prefix("-\t")) {
            let kept = out.trim_end().len();
            out.truncate(kept);
            action = inner;
        } else if action == "-" {
            return Err(Error::Template {
                reason: "empty action {{-}}".to_owned(),
            });
        }
        trim_next = false;
        if let Some(inner) = action.strip_suffix(" -").or(action.strip_suffix("\t-")) {
            trim_next = true;
            action = inner;
        }
        let name = action.trim();
        if !(name.starts_with("/*") && name.ends_with("*/")) {
            out.push_str(&lookup(name, query, &interval, variables)?);
        }
        rest = &after_open[close + 2..];
    }
    out.push_str(if trim_next { rest.trim_start() } else { rest });
    Ok(out)
}

/// The value of one template variable.
fn lookup(
    name: &str,
    query: &MetricQuery<'_>,
    interval: &str,
    variables: &BTreeMap<String, String>,
) -> Result<String> {
    let known = "name, namespace, target, service, interval, variables.KEY";
    let value = match name {
        "name" => query.name,
        "namespace" => query.namespace,
        "target" => query.target,
        "service" => query.service,
        "interval" => interval,
        "ingress" => {
            return Err(Error::Template {
                reason: format!(
                    "variable {{{{ ingress }}}} is not available: serin has no ingress reference \
                     (available: {known})"
                ),
            });
        }
        _ => match name.strip_prefix("variables.") {
            Some(key) => variables.get(key).map(String::as_str).ok_or_else(|| {
                let keys: Vec<&str> = variables.keys().map(String::as_str).collect();
                Error::Template {
                    reason: format!(
                        "variable {{{{ {name} }}}}: templateVariables has no key {key:?} (keys: {})",
                        if keys.is_empty() { "none".to_owned() } else { keys.join(", ") }
                    ),
                }
            })?,
            None => {
                return Err(Error::Template {
                    reason: format!("unknown variable {{{{ {name} }}}} (available: {known})"),
                });
            }
        },
    };
    Ok(value.to_owned())
}

/// `d` as a Prometheus duration: whole units from hours down to milliseconds, zero units
/// left out (`1m`, `30s`, `1h30m`, `1s500ms`); `0s` for zero. Sub-millisecond parts are
/// dropped (Prometheus has no finer unit).
pub fn prometheus_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, size) in [("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)] {
        let count = ms / size;
        if count > 0 {
            out.push_str(&format!("{count}{unit}"));
            ms %= size;
        }
    }
    out
}

/// `err` naming `url` instead of the URL it was made with.
fn naming(err: Error, url: &str) -> Error {
    let url = url.to_owned();
    match err {
        Error::Request { source, .. } => Error::Request { url, source },
        Error::Timeout { timeout, .. } => Error::Timeout { url, timeout },
        Error::ResponseTooLarge { limit, .. } => Error::ResponseTooLarge { url, limit },
        Error::BadResponse { reason, .. } => Error::BadResponse { url, reason },
        other => other,
    }
}

/// The number in a `[timestamp, "value"]` pair.
fn sample_value(pair: &Value) -> Result<f64, String> {
    let text = pair
        .get(1)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("malformed sample {pair}"))?;
    super::exposition::parse_value(text).map_err(|_| format!("malformed sample value {text:?}"))
}

fn abbreviate(text: &str) -> String {
    text.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::MetricCheck;

    fn check(kind: MetricKind, interval: Duration) -> MetricCheck {
        MetricCheck {
            name: "error-rate".into(),
            kind,
            interval,
            range: Default::default(),
        }
    }

    fn template_kind() -> MetricKind {
        MetricKind::Template {
            name: "error-rate".into(),
            namespace: None,
            variables: BTreeMap::from([("code".into(), "5..".into())]),
        }
    }

    fn render(text: &str, interval: Duration) -> Result<String> {
        let check = check(template_kind(), interval);
        let query = MetricQuery {
            check: &check,
            name: "podinfo",
            namespace: "test",
            target: "podinfo-deploy",
            service: "podinfo-svc",
            template: None,
            since: None,
        };
        render_query(text, &query)
    }

    #[test]
    fn renders_every_variable_with_any_spacing() {
        let text = r#"sum(rate(x{ns="{{ namespace }}",t="{{target}}",s="{{  service  }}",n="{{name}}",c=~"{{ variables.code }}"}[{{ interval }}]))"#;
        assert_eq!(
            render(text, Duration::from_secs(60)).ok().as_deref(),
            Some(
                r#"sum(rate(x{ns="test",t="podinfo-deploy",s="podinfo-svc",n="podinfo",c=~"5.."}[1m]))"#
            )
        );
    }

    #[test]
    fn trim_markers_and_comments() {
        assert_eq!(
            render(
                "a  {{- namespace -}}  b {{/* note */}}c",
                Duration::from_secs(30)
            )
            .ok()
            .as_deref(),
            Some("atestb c")
        );
        assert_eq!(
            render("no variables", Duration::from_secs(1))
                .ok()
                .as_deref(),
            Some("no variables")
        );
    }

    #[test]
    fn unknown_variables_are_errors() {
        let err = |text: &str| {
            render(text, Duration::from_secs(60))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert_eq!(
            err("x{a=\"{{ namespcae }}\"}"),
            "cannot render query: unknown variable {{ namespcae }} (available: name, namespace, \
             target, service, interval, variables.KEY)"
        );
        assert!(
            err("{{ variables.missing }}")
                .contains("templateVariables has no key \"missing\" (keys: code)")
        );
        assert!(err("{{ ingress }}").contains("not available"));
        assert!(err("rate(x[{{ interval ]").contains("unterminated"));
    }

    #[test]
    fn durations_in_prometheus_syntax() {
        for (d, text) in [
            (Duration::from_secs(60), "1m"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(3600), "1h"),
            (Duration::from_secs(5400), "1h30m"),
            (Duration::from_millis(1500), "1s500ms"),
            (Duration::from_micros(10), "0s"),
            (Duration::ZERO, "0s"),
        ] {
            assert_eq!(prometheus_duration(d), text);
        }
    }

    #[test]
    fn samples() {
        assert_eq!(sample_value(&serde_json::json!([1.5, "0.25"])), Ok(0.25));
        assert!(sample_value(&serde_json::json!([1.5, "NaN"])).is_ok_and(f64::is_nan));
        assert_eq!(
            sample_value(&serde_json::json!([1.5, "+Inf"])),
            Ok(f64::INFINITY)
        );
        assert!(sample_value(&serde_json::json!([1.5])).is_err());
    }
}
