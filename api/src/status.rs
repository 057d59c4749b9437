//! `Canary.status`: where a release stands, as Flagger records it, plus the last measured
//! value of every metric so a user sees why a canary halted without reading logs.
//!
//! The status is the stage machine's only memory: the controller can stop at any instant and
//! resume from it. Everything here survives a JSON round trip unchanged.

use std::{collections::BTreeMap, fmt};

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

use crate::{canary::ThresholdRange, timestamp::Timestamp, weight::Weight};

/// The only condition type, as in Flagger: the result of the last release.
/// `kubectl wait --for=condition=promoted canary/NAME` waits on it.
pub const PROMOTED_CONDITION: &str = "Promoted";

/// Stage of a canary release (Flagger's phases).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    /// The primary workload, Services and route are being created.
    Initializing,
    /// Bootstrap is done; the canary waits for a new revision of its target.
    Initialized,
    /// A new revision waits for `confirm-rollout` approval.
    Waiting,
    /// The analysis is running.
    Progressing,
    /// The analysis is done and waits for `confirm-promotion` approval.
    WaitingPromotion,
    /// The canary's template is being rolled out to the primary.
    Promoting,
    /// All traffic is back on the primary; the canary is being scaled down.
    Finalising,
    /// The last release was promoted.
    Succeeded,
    /// The last release was rolled back.
    Failed,
    /// The Canary is being deleted.
    Terminating,
    /// The Canary was finalised and deleted.
    Terminated,
}

impl Phase {
    /// The phase name (`Progressing`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Phase::Initializing => "Initializing",
            Phase::Initialized => "Initialized",
            Phase::Waiting => "Waiting",
            Phase::Progressing => "Progressing",
            Phase::WaitingPromotion => "WaitingPromotion",
            Phase::Promoting => "Promoting",
            Phase::Finalising => "Finalising",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
            Phase::Terminating => "Terminating",
            Phase::Terminated => "Terminated",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Observed state of a canary release.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStatus {
    /// Current stage; absent for a Canary the controller has not seen yet.
    #[serde(
        default,
        deserialize_with = "phase_or_empty",
        skip_serializing_if = "Option::is_none"
    )]
    pub phase: Option<Phase>,
    /// Failed checks in the current analysis.
    #[serde(default)]
    pub failed_checks: u32,
    /// Canary weight in percent on the route's weighted rule (for A/B testing: the share of
    /// matching requests).
    #[serde(default)]
    pub canary_weight: Weight,
    /// Analysis iterations done (A/B testing and blue/green).
    #[serde(default)]
    pub iterations: u32,
    /// Hashes of the ConfigMaps and Secrets the target references, by `kind/name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracked_configs: Option<BTreeMap<String, String>>,
    /// Hash of the target's pod template for the release under way (or last done).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_spec: Option<String>,
    /// Hash of the pod template last promoted to the primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_promoted_spec: Option<String>,
    /// When phase, weight, iterations or failed checks last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Timestamp>,
    /// The `Promoted` condition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<CanaryCondition>,
    /// `name=value` of the cookie pinning users to the canary during this release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity_cookie: Option<String>,
    /// `name=value` of the previous release's cookie, which the route tells clients to drop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_session_affinity_cookie: Option<String>,
    /// Whether traffic is being mirrored to the canary (blue/green mirroring, or the mirror
    /// step of a weighted canary).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mirrored: bool,
    /// Last measured value of each metric, next to its accepted range.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<MetricStatus>,
}

/// A status condition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryCondition {
    /// Condition type: `Promoted`.
    #[serde(rename = "type")]
    pub condition_type: String,
    /// `True` when the last release (or the bootstrap) is promoted, `False` when it failed,
    /// `Unknown` while one is under way.
    pub status: ConditionStatus,
    /// When the condition was last written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<Timestamp>,
    /// When `status` last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Timestamp>,
    /// The phase that set the condition (`Progressing`, `Succeeded`, ...).
    #[serde(default)]
    pub reason: String,
    /// Human-readable explanation.
    #[serde(default)]
    pub message: String,
}

/// Kubernetes condition status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// Not known yet.
    Unknown,
}

/// The last measurement of one metric.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricStatus {
    /// Metric name as in the spec.
    pub name: String,
    /// Measured value; absent when the query returned no values or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The accepted range the value was judged against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_range: Option<ThresholdRange>,
    /// Whether the value was accepted.
    pub passed: bool,
    /// Why the check failed (the event text), absent when it passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Flagger writes `phase: ""` for a Canary it has not initialised; read it as absent.
fn phase_or_empty<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Phase>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Phase(Phase),
        Other(String),
    }
    match Option::<Raw>::deserialize(deserializer)? {
        None => Ok(None),
        Some(Raw::Phase(phase)) => Ok(Some(phase)),
        Some(Raw::Other(s)) if s.is_empty() => Ok(None),
        Some(Raw::Other(s)) => Err(serde::de::Error::custom(format!("unknown phase {s:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_flagger_empty_phase() {
        let status: CanaryStatus = serde_json::from_str(
            r#"{"phase":"","failedChecks":0,"canaryWeight":0,"iterations":0}"#,
        )
        .unwrap_or_default();
        assert_eq!(status.phase, None);
        let status: Result<CanaryStatus, _> = serde_json::from_str(r#"{"phase":"Bogus"}"#);
        assert!(status.is_err());
    }

    #[test]
    fn round_trips() {
        let status = CanaryStatus {
            phase: Some(Phase::Progressing),
            failed_checks: 2,
            canary_weight: Weight::from_basis_points(10).unwrap_or_default(),
            iterations: 3,
            tracked_configs: Some(BTreeMap::from([("configmap/app".into(), "abc".into())])),
            last_applied_spec: Some("h1".into()),
            last_promoted_spec: Some("h0".into()),
            last_transition_time: Some(Timestamp::from_unix_seconds(1_700_000_000)),
            conditions: vec![CanaryCondition {
                condition_type: PROMOTED_CONDITION.into(),
                status: ConditionStatus::Unknown,
                last_update_time: Some(Timestamp::from_unix_seconds(1_700_000_000)),
                last_transition_time: Some(Timestamp::from_unix_seconds(1_700_000_000)),
                reason: "Progressing".into(),
                message: "New revision detected, progressing canary analysis.".into(),
            }],
            session_affinity_cookie: Some("c=abc".into()),
            previous_session_affinity_cookie: None,
            mirrored: true,
            metrics: vec![MetricStatus {
                name: "request-success-rate".into(),
                value: Some(69.17),
                threshold_range: Some(ThresholdRange {
                    min: Some(99.0),
                    max: None,
                }),
                passed: false,
                message: Some("Halt podinfo.test advancement success rate 69.17% < 99%".into()),
            }],
        };
        let json = serde_json::to_string(&status).unwrap_or_default();
        let back: CanaryStatus = serde_json::from_str(&json).unwrap_or_default();
        assert_eq!(back, status);
        assert!(json.contains(r#""canaryWeight":0.1"#), "{json}");
    }
}
