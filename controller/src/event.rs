//! Kubernetes Events recorded by the controller, worded exactly as Flagger's so that users,
//! dashboards and alert rules that know Flagger keep working.
//!
//! Objects are named `NAME.NAMESPACE`. As in Flagger, messages about the release use the
//! Canary's name (`Advance podinfo.test canary weight 10`) and messages about workloads use
//! the target's (`New revision detected! Scaling up podinfo.test`, `Copying podinfo.test
//! template spec to podinfo-primary.test`). Every event has reason `Synced`.

use std::{fmt, time::Duration};

use serde::Serialize;

use crate::{canary::HookType, duration::format_go, weight::Weight};

/// The reason of every event, as Flagger's.
pub const EVENT_REASON: &str = "Synced";

/// Kubernetes event type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum EventType {
    /// Progress.
    Normal,
    /// Something held the release back or failed.
    Warning,
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        })
    }
}

/// An event to record on the Canary (and to forward to `event` webhooks).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Event {
    /// Normal or Warning.
    pub event_type: EventType,
    /// Always [`EVENT_REASON`].
    pub reason: &'static str,
    /// The message.
    pub message: String,
}

impl Event {
    /// A `Normal` event.
    pub fn normal(message: impl Into<String>) -> Event {
        Event {
            event_type: EventType::Normal,
            reason: EVENT_REASON,
            message: message.into(),
        }
    }

    /// A `Warning` event.
    pub fn warning(message: impl Into<String>) -> Event {
        Event {
            event_type: EventType::Warning,
            reason: EVENT_REASON,
            message: message.into(),
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.event_type, self.message)
    }
}

/// Names used in messages: the Canary, its target and the primary, each `NAME.NAMESPACE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    /// `canary.namespace`.
    pub canary: String,
    /// `target.namespace`.
    pub target: String,
    /// `target-primary.namespace`.
    pub primary: String,
}

impl Names {
    /// Names for the Canary `canary` in `namespace` releasing `target`.
    pub fn new(canary: &str, namespace: &str, target: &str) -> Names {
        Names {
            canary: format!("{canary}.{namespace}"),
            target: format!("{target}.{namespace}"),
            primary: format!("{target}-primary.{namespace}"),
        }
    }
}

// The wording of every event, in the order a release meets them. Crate-internal: the stage
// machine and the metric judge are the only producers.

pub(crate) fn initialization_done(n: &Names) -> Event {
    Event::normal(format!("Initialization done! {}", n.canary))
}

pub(crate) fn waiting_for_rollout(object: &str, message: &str) -> Event {
    Event::warning(format!("Waiting for {object} rollout to finish: {message}"))
}

pub(crate) fn waiting_for_approval(n: &Names, hook: &str) -> Event {
    Event::warning(format!(
        "Halt {} advancement waiting for approval {hook}",
        n.canary
    ))
}

pub(crate) fn check_passed(hook_type: HookType, hook: &str) -> Event {
    let kind = match hook_type {
        HookType::ConfirmRollout => "Confirm-rollout",
        HookType::ConfirmPromotion => "Confirm-promotion",
        HookType::ConfirmTrafficIncrease => "Confirm-traffic-increase",
        HookType::PreRollout => "Pre-rollout",
        HookType::PostRollout => "Post-rollout",
        HookType::Rollout => "Rollout",
        HookType::Rollback => return Event::warning(format!("Rollback check {hook} passed")),
        HookType::Event => "Event",
    };
    Event::normal(format!("{kind} check {hook} passed"))
}

pub(crate) fn new_revision(n: &Names) -> Event {
    Event::normal(format!("New revision detected! Scaling up {}", n.target))
}

pub(crate) fn back_to_promoted(n: &Names) -> Event {
    Event::normal(format!(
        "{} is back on the revision {} runs: nothing to release",
        n.target, n.primary
    ))
}

pub(crate) fn restarting_analysis(n: &Names) -> Event {
    Event::normal(format!(
        "New revision detected! Restarting analysis for {}",
        n.target
    ))
}

pub(crate) fn starting_analysis(n: &Names) -> Event {
    Event::normal(format!("Starting canary analysis for {}", n.target))
}

pub(crate) fn pre_rollout_failed(n: &Names, hook: &str, message: &str) -> Event {
    Event::warning(format!(
        "Halt {} advancement pre-rollout check {hook} failed {message}",
        n.canary
    ))
}

pub(crate) fn external_check_failed(n: &Names, hook: &str, message: &str) -> Event {
    Event::warning(format!(
        "Halt {} advancement external check {hook} failed {message}",
        n.canary
    ))
}

pub(crate) fn rollback_hook_silent(hook: &str) -> Event {
    Event::normal(format!("Rollback hook {hook} not signaling a rollback"))
}

pub(crate) fn manual_rollback(n: &Names) -> Event {
    Event::warning(format!("Rolling back {} manual webhook invoked", n.canary))
}

pub(crate) fn waiting_for_traffic_increase(n: &Names, hook: &str) -> Event {
    Event::warning(format!(
        "Halt {} advancement waiting for traffic increase approval {hook}",
        n.canary
    ))
}

pub(crate) fn waiting_for_promotion(n: &Names, hook: &str) -> Event {
    Event::warning(format!(
        "Halt {} advancement waiting for promotion approval {hook}",
        n.canary
    ))
}

pub(crate) fn advance_weight(n: &Names, weight: Weight) -> Event {
    Event::normal(format!("Advance {} canary weight {weight}", n.canary))
}

pub(crate) fn advance_iteration(n: &Names, iteration: u32, iterations: u32) -> Event {
    Event::normal(format!(
        "Advance {} canary iteration {iteration}/{iterations}",
        n.canary
    ))
}

pub(crate) fn advance_primary_weight(n: &Names, weight: Weight) -> Event {
    Event::normal(format!("Advance {} primary weight {weight}", n.canary))
}

pub(crate) fn routing_all_to_canary(mirrored: bool) -> Event {
    if mirrored {
        Event::normal("Stop traffic mirroring and route all traffic to canary")
    } else {
        Event::normal("Routing all traffic to canary")
    }
}

pub(crate) fn copying_template(n: &Names) -> Event {
    Event::normal(format!(
        "Copying {} template spec to {}",
        n.target, n.primary
    ))
}

pub(crate) fn routing_all_to_primary() -> Event {
    Event::normal("Routing all traffic to primary")
}

pub(crate) fn promotion_completed(n: &Names) -> Event {
    Event::normal(format!("Promotion completed! Scaling down {}", n.target))
}

pub(crate) fn promotion_skipped_analysis(n: &Names) -> Event {
    Event::normal(format!(
        "Promotion completed! Canary analysis was skipped for {}",
        n.target
    ))
}

pub(crate) fn threshold_reached(n: &Names, failed_checks: u32) -> Event {
    Event::warning(format!(
        "Rolling back {} failed checks threshold reached {failed_checks}",
        n.canary
    ))
}

pub(crate) fn progress_deadline_exceeded(n: &Names, message: &str) -> Event {
    Event::warning(format!(
        "Rolling back {} progress deadline exceeded canary deployment {} not ready: waiting for rollout to finish: {message}",
        n.canary, n.target
    ))
}

pub(crate) fn canary_failed(n: &Names) -> Event {
    Event::warning(format!("Canary failed! Scaling down {}", n.canary))
}

pub(crate) fn suspended() -> Event {
    Event::normal("skipping canary run as object is suspended")
}

pub(crate) fn invalid_spec(message: &str) -> Event {
    Event::warning(format!("Invalid canary spec: {message}"))
}

pub(crate) fn success_rate_low(n: &Names, value: f64, min: f64) -> String {
    format!(
        "Halt {} advancement success rate {value:.2}% < {}%",
        n.canary,
        go_float(min)
    )
}

pub(crate) fn success_rate_high(n: &Names, value: f64, max: f64) -> String {
    format!(
        "Halt {} advancement success rate {value:.2}% > {}%",
        n.canary,
        go_float(max)
    )
}

/// Flagger converts the measured milliseconds to a Go duration with integer milliseconds
/// (`time.Duration(ms) * time.Millisecond`), so `792.69` reads `792ms`.
fn whole_millis(value: Duration) -> Duration {
    Duration::from_millis(u64::try_from(value.as_millis()).unwrap_or(u64::MAX))
}

pub(crate) fn duration_low(n: &Names, value: Duration, min: Duration) -> String {
    format!(
        "Halt {} advancement request duration {} < {}",
        n.canary,
        format_go(whole_millis(value)),
        format_go(min)
    )
}

pub(crate) fn duration_high(n: &Names, value: Duration, max: Duration) -> String {
    format!(
        "Halt {} advancement request duration {} > {}",
        n.canary,
        format_go(whole_millis(value)),
        format_go(max)
    )
}

pub(crate) fn custom_low(n: &Names, metric: &str, value: f64, min: f64) -> String {
    format!(
        "Halt {} advancement {metric} {value:.2} < {}",
        n.canary,
        go_float(min)
    )
}

pub(crate) fn custom_high(n: &Names, metric: &str, value: f64, max: f64) -> String {
    format!(
        "Halt {} advancement {metric} {value:.2} > {}",
        n.canary,
        go_float(max)
    )
}

pub(crate) fn builtin_no_values(n: &Names, metric: &str) -> String {
    format!(
        "Halt advancement no values found for serin metric {metric} probably {} is not receiving traffic",
        n.target
    )
}

pub(crate) fn custom_no_values(metric: &str) -> String {
    format!("Halt advancement no values found for custom metric: {metric}")
}

pub(crate) fn metric_query_failed(metric: &str, error: &str) -> String {
    format!("Metric query failed for {metric}: {error}")
}

/// The event for a post-rollout hook's result, for the adapter that runs
/// [`crate::stage::Action::RunPostRolloutHooks`].
pub fn post_rollout_result(hook: &str, failure: Option<&str>) -> Event {
    match failure {
        None => check_passed(HookType::PostRollout, hook),
        Some(message) => Event::warning(format!("Post-rollout hook {hook} failed {message}")),
    }
}

/// Formats a float like Go's `%v` (`%g` with the shortest precision): exponent form below
/// 1e-4 and from 1e6 on (`99`, `0.5`, `1e+06`).
pub(crate) fn go_float(value: f64) -> String {
    if !value.is_finite() {
        return if value.is_nan() {
            "NaN".to_owned()
        } else if value > 0.0 {
            "+Inf".to_owned()
        } else {
            "-Inf".to_owned()
        };
    }
    if value == 0.0 {
        return "0".to_owned();
    }
    // Rust's `{:e}` is the shortest round-trip representation: `d.ddde[-]x`.
    let sci = format!("{value:e}");
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    if !(-4..6).contains(&exponent) {
        let sign = if exponent < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exponent.abs());
    }
    format!("{value}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_float_matches_go_v() {
        let cases: &[(f64, &str)] = &[
            (99.0, "99"),
            (1.0, "1"),
            (0.5, "0.5"),
            (99.9, "99.9"),
            (500.0, "500"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (123_456.0, "123456"),
            (1e6, "1e+06"),
            (1_234_567.0, "1.234567e+06"),
            (1e21, "1e+21"),
            (-2.5, "-2.5"),
            (0.0, "0"),
        ];
        for (value, want) in cases {
            assert_eq!(go_float(*value), *want, "{value}");
        }
    }

    #[test]
    fn names_follow_flagger() {
        let n = Names::new("podinfo", "test", "podinfo");
        assert_eq!(
            copying_template(&n).message,
            "Copying podinfo.test template spec to podinfo-primary.test"
        );
        assert_eq!(
            success_rate_low(&n, 69.17, 99.0),
            "Halt podinfo.test advancement success rate 69.17% < 99%"
        );
        assert_eq!(
            duration_high(&n, Duration::from_millis(1200), Duration::from_millis(500)),
            "Halt podinfo.test advancement request duration 1.2s > 500ms"
        );
        assert_eq!(
            custom_high(&n, "latency", 1.2, 0.5),
            "Halt podinfo.test advancement latency 1.20 > 0.5"
        );
        assert_eq!(
            post_rollout_result("notify", Some("HTTP 500")).message,
            "Post-rollout hook notify failed HTTP 500"
        );
    }
}
