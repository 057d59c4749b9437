//! Metric analysis: the boundary to metric providers, and the pure judgement of a measured
//! value against its accepted range.
//!
//! # Providers
//!
//! A [`MetricProvider`] measures one metric of one canary over the metric's interval and
//! returns a [`MetricValue`]. Implementations live in adapters:
//!
//! * the built-in provider scrapes serin-proxy's `/metrics` for `request-success-rate`
//!   (percentage of non-5xx canary responses) and `request-duration` (p99 in milliseconds);
//! * the Prometheus provider renders a `MetricTemplate` query (`{{ namespace }}`,
//!   `{{ target }}`, `{{ interval }}`, ...) and runs it.
//!
//! A query that returns nothing (or NaN, as a ratio over no traffic does) is
//! [`MetricValue::NoValues`], which fails the check as in Flagger: a canary that receives no
//! traffic must not be promoted. Any other failure is [`MetricValue::Error`].
//!
//! The controller measures every metric of a step before calling the stage machine with the
//! results (see [`crate::stage::Need::Metrics`]).

use std::{future::Future, pin::Pin, time::Duration};

use crate::{
    canary::ThresholdRange,
    event::{self, Names},
    status::MetricStatus,
    template::MetricTemplateSpec,
    validation::{MetricCheck, MetricKind},
};

/// A boxed, sendable future, for object-safe async traits.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The result of one metric query.
#[derive(Clone, Debug, PartialEq)]
pub enum MetricValue {
    /// The measured value: percent for `request-success-rate`, milliseconds for
    /// `request-duration`, the query's unit for custom metrics.
    Value(f64),
    /// The query returned no samples: the canary probably receives no traffic.
    NoValues,
    /// The query failed.
    Error(String),
}

/// What a provider needs to measure one metric of one canary.
#[derive(Clone, Copy, Debug)]
pub struct MetricQuery<'a> {
    /// The metric, with its kind and window.
    pub check: &'a MetricCheck,
    /// Canary name.
    pub name: &'a str,
    /// Canary namespace.
    pub namespace: &'a str,
    /// Target workload name (`{{ target }}`).
    pub target: &'a str,
    /// Apex Service name (`{{ service }}`).
    pub service: &'a str,
    /// The referenced template, for [`MetricKind::Template`].
    pub template: Option<&'a MetricTemplateSpec>,
    /// When the canary's traffic last changed (the release started, or the weight moved):
    /// requests before it belong to another release or weight and must not be measured. The
    /// engine passes `status.lastTransitionTime`; the built-in provider starts its window at
    /// the later of this and `now - interval`. `None`: the interval alone.
    pub since: Option<crate::timestamp::Timestamp>,
}

impl MetricQuery<'_> {
    /// The query window.
    pub fn interval(&self) -> Duration {
        self.check.interval
    }
}

/// Measures metrics. Implemented by the built-in (serin-proxy) and Prometheus providers.
pub trait MetricProvider: Send + Sync {
    /// Measures `query.check` for the canary over `query.interval()`. Never panics; every
    /// failure is a [`MetricValue::Error`].
    fn measure<'a>(&'a self, query: MetricQuery<'a>) -> BoxFuture<'a, MetricValue>;
}

/// The judgement of one measured value.
#[derive(Clone, Debug, PartialEq)]
pub struct Judgement {
    /// Whether the check passed.
    pub passed: bool,
    /// The status entry recording the value and the verdict.
    pub status: MetricStatus,
}

/// Judges `value` for `check`, with Flagger's wording for the failure message.
pub fn judge(check: &MetricCheck, value: &MetricValue, names: &Names) -> Judgement {
    let failure = match value {
        MetricValue::Value(v) if v.is_nan() => Some(no_values(check, names)),
        MetricValue::Value(v) => out_of_range(check, *v, names),
        MetricValue::NoValues => Some(no_values(check, names)),
        MetricValue::Error(err) => Some(event::metric_query_failed(&check.name, err)),
    };
    Judgement {
        passed: failure.is_none(),
        status: MetricStatus {
            name: check.name.clone(),
            value: match value {
                MetricValue::Value(v) if v.is_finite() => Some(*v),
                _ => None,
            },
            threshold_range: Some(check.range),
            passed: failure.is_none(),
            message: failure,
        },
    }
}

fn no_values(check: &MetricCheck, names: &Names) -> String {
    if check.kind.is_builtin() {
        event::builtin_no_values(names, &check.name)
    } else {
        event::custom_no_values(&check.name)
    }
}

/// The halt message when `value` is outside the range, `None` when it is inside.
fn out_of_range(check: &MetricCheck, value: f64, names: &Names) -> Option<String> {
    let ThresholdRange { min, max } = check.range;
    match &check.kind {
        MetricKind::RequestSuccessRate => {
            if let Some(min) = min.filter(|min| value < *min) {
                Some(event::success_rate_low(names, value, min))
            } else {
                max.filter(|max| value > *max)
                    .map(|max| event::success_rate_high(names, value, max))
            }
        }
        MetricKind::RequestDuration => {
            // Compared as durations, like Flagger, so the message and the verdict agree.
            let value = millis(value);
            if let Some(min) = min.map(millis).filter(|min| value < *min) {
                Some(event::duration_low(names, value, min))
            } else {
                max.map(millis)
                    .filter(|max| value > *max)
                    .map(|max| event::duration_high(names, value, max))
            }
        }
        MetricKind::Template { .. } | MetricKind::Query(_) => {
            if let Some(min) = min.filter(|min| value < *min) {
                Some(event::custom_low(names, &check.name, value, min))
            } else {
                max.filter(|max| value > *max)
                    .map(|max| event::custom_high(names, &check.name, value, max))
            }
        }
    }
}

/// Milliseconds to a duration, rounded to the nanosecond (negative values are zero).
fn millis(ms: f64) -> Duration {
    if ms.is_finite() && ms > 0.0 {
        // Saturating float-to-int cast: absurdly large values become u64::MAX nanoseconds.
        Duration::from_nanos((ms * 1e6).round() as u64)
    } else {
        Duration::ZERO
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, kind: MetricKind, min: Option<f64>, max: Option<f64>) -> MetricCheck {
        MetricCheck {
            name: name.to_owned(),
            kind,
            interval: Duration::from_secs(60),
            range: ThresholdRange { min, max },
        }
    }

    fn names() -> Names {
        Names::new("podinfo", "test", "podinfo")
    }

    #[test]
    fn success_rate() {
        let c = check(
            "request-success-rate",
            MetricKind::RequestSuccessRate,
            Some(99.0),
            None,
        );
        let j = judge(&c, &MetricValue::Value(99.5), &names());
        assert!(j.passed);
        assert_eq!(j.status.value, Some(99.5));
        assert_eq!(j.status.message, None);
        let j = judge(&c, &MetricValue::Value(53.42), &names());
        assert!(!j.passed);
        assert_eq!(
            j.status.message.as_deref(),
            Some("Halt podinfo.test advancement success rate 53.42% < 99%")
        );
    }

    #[test]
    fn request_duration() {
        let c = check(
            "request-duration",
            MetricKind::RequestDuration,
            None,
            Some(500.0),
        );
        assert!(judge(&c, &MetricValue::Value(499.0), &names()).passed);
        let j = judge(&c, &MetricValue::Value(1200.0), &names());
        assert_eq!(
            j.status.message.as_deref(),
            Some("Halt podinfo.test advancement request duration 1.2s > 500ms")
        );
    }

    #[test]
    fn custom_metric() {
        let kind = MetricKind::Template {
            name: "latency".into(),
            namespace: None,
            variables: Default::default(),
        };
        let c = check("latency", kind, None, Some(0.5));
        let j = judge(&c, &MetricValue::Value(1.2), &names());
        assert_eq!(
            j.status.message.as_deref(),
            Some("Halt podinfo.test advancement latency 1.20 > 0.5")
        );
        let j = judge(&c, &MetricValue::NoValues, &names());
        assert_eq!(
            j.status.message.as_deref(),
            Some("Halt advancement no values found for custom metric: latency")
        );
    }

    #[test]
    fn no_values_and_errors_fail() {
        let c = check(
            "request-success-rate",
            MetricKind::RequestSuccessRate,
            Some(99.0),
            None,
        );
        for value in [MetricValue::NoValues, MetricValue::Value(f64::NAN)] {
            let j = judge(&c, &value, &names());
            assert!(!j.passed);
            assert_eq!(j.status.value, None);
            assert_eq!(
                j.status.message.as_deref(),
                Some(
                    "Halt advancement no values found for serin metric request-success-rate \
                     probably podinfo.test is not receiving traffic"
                )
            );
        }
        let j = judge(
            &c,
            &MetricValue::Error("connection refused".into()),
            &names(),
        );
        assert_eq!(
            j.status.message.as_deref(),
            Some("Metric query failed for request-success-rate: connection refused")
        );
    }
}
