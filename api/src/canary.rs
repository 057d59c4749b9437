//! The `Canary` custom resource (`serin.dev/v1alpha1`), field for field as Flagger's.
//!
//! Every field Flagger's `Canary` accepts parses here, so a Flagger manifest works after
//! changing its `apiVersion`; fields that only matter to other meshes (Istio traffic policy,
//! App Mesh backends, ...) are kept but not used. Unknown fields are rejected, as `kubectl`
//! does against the generated CRD. Fields that Serin requires are `Option`s marked required in
//! the CRD schema, so that [`crate::validation`] can report a missing one by its path rather
//! than failing the whole parse.
//!
//! The types are plain data; defaults (600s progress deadline, 60s interval, ...) and
//! semantic rules live in [`crate::validation`].

use std::{collections::BTreeMap, fmt, str::FromStr};

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{duration::GoDuration, status::CanaryStatus, weight::Percent};

/// Desired behaviour of a canary release: what to release, how to route it and how to judge it.
// kube-derive takes repeated `printcolumn(type_ = ..)` keys, which this lint flags.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "serin.dev",
    version = "v1alpha1",
    kind = "Canary",
    plural = "canaries",
    singular = "canary",
    category = "all",
    namespaced,
    status = "CanaryStatus",
    derive = "PartialEq",
    doc = "Canary drives a Deployment through a progressive release: bootstrap, analysis, traffic shifting, promotion or rollback.",
    printcolumn(name = "Status", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Weight", type_ = "string", json_path = ".status.canaryWeight"),
    printcolumn(
        name = "Suspended",
        type_ = "boolean",
        json_path = ".spec.suspend",
        priority = 1
    ),
    printcolumn(
        name = "FailedChecks",
        type_ = "string",
        json_path = ".status.failedChecks",
        priority = 1
    ),
    printcolumn(
        name = "Interval",
        type_ = "string",
        json_path = ".spec.analysis.interval",
        priority = 1
    ),
    printcolumn(
        name = "Mirror",
        type_ = "boolean",
        json_path = ".spec.analysis.mirror",
        priority = 1
    ),
    printcolumn(
        name = "StepWeight",
        type_ = "string",
        json_path = ".spec.analysis.stepWeight",
        priority = 1
    ),
    printcolumn(
        name = "StepWeights",
        type_ = "string",
        json_path = ".spec.analysis.stepWeights",
        priority = 1
    ),
    printcolumn(
        name = "MaxWeight",
        type_ = "string",
        json_path = ".spec.analysis.maxWeight",
        priority = 1
    ),
    printcolumn(
        name = "LastTransitionTime",
        type_ = "string",
        json_path = ".status.lastTransitionTime"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CanarySpec {
    /// Flagger's mesh or ingress provider. Accepted for compatibility; Serin always routes
    /// through serin-proxy. `knative` makes `service` optional, as in Flagger.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,

    /// Flagger's per-canary Prometheus address. Accepted, not used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_server: Option<String>,

    /// The workload to release (a `Deployment`).
    #[schemars(required)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,

    /// The target's autoscaler; a primary copy of it is managed alongside the primary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autoscaler_ref: Option<AutoscalerRef>,

    /// NGINX ingress reference (Flagger). Accepted, not used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingress_ref: Option<LocalObjectReference>,

    /// APISIX route reference (Flagger). Accepted, not used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route_ref: Option<LocalObjectReference>,

    /// Gloo upstream reference (Flagger). Accepted, not used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_ref: Option<CrossNamespaceObjectReference>,

    /// How the apex, primary and canary Services and the route are generated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceSpec>,

    /// How each release is analysed and how traffic moves.
    #[schemars(required)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisSpec>,

    /// Seconds the canary may fail to make progress before the release is rolled back
    /// (default 600).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress_deadline_seconds: Option<i64>,

    /// Promote without analysis (checks only that the canary becomes ready).
    #[serde(default, skip_serializing_if = "is_false")]
    pub skip_analysis: bool,

    /// Restore the target to its original state when the Canary is deleted.
    #[serde(default, skip_serializing_if = "is_false")]
    pub revert_on_deletion: bool,

    /// Pause all canary runs until unset.
    #[serde(default, skip_serializing_if = "is_false")]
    pub suspend: bool,
}

impl CanarySpec {
    /// The apex Service's name: `spec.service.name`, else the target's (`target`). The
    /// primary and canary Services (or Backends) are `<apex>-primary` and `<apex>-canary`.
    pub fn apex_service(&self, target: &str) -> String {
        self.service
            .as_ref()
            .and_then(|s| s.name.clone())
            .unwrap_or_else(|| target.to_owned())
    }
}

/// Reference to the target workload.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetRef {
    /// API version of the target, e.g. `apps/v1`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Kind of the target: `Deployment` or `DaemonSet` (`Service` for Knative).
    #[schemars(required)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name of the target, in the Canary's namespace.
    #[schemars(required)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Reference to the target's autoscaler.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AutoscalerRef {
    /// API version, e.g. `autoscaling/v2`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// `HorizontalPodAutoscaler` (or `ScaledObject`, accepted, not used).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name of the autoscaler.
    #[schemars(required)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Queries for the primary scaler (KEDA). Accepted, not used.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub primary_scaler_queries: BTreeMap<String, String>,
    /// Replica overrides for the primary autoscaler.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary_scaler_replicas: Option<ScalerReplicas>,
}

/// Replica overrides for an autoscaler.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScalerReplicas {
    /// Minimum replicas.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_replicas: Option<i32>,
    /// Maximum replicas.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_replicas: Option<i32>,
}

/// Reference to an object in the Canary's namespace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalObjectReference {
    /// API version of the referent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Kind of the referent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name of the referent.
    #[schemars(required)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Reference to an object in any namespace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CrossNamespaceObjectReference {
    /// API version of the referent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Kind of the referent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name of the referent.
    #[schemars(required)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Namespace of the referent (defaults to the Canary's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// How Services and the route are generated for the target.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    /// Name of the apex Service (defaults to the target's name); `-primary` and `-canary`
    /// Services are derived from it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Port of the generated Services.
    #[schemars(required)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    /// Name of the Service port (default `http`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_name: Option<String>,
    /// Application protocol of the Service port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
    /// Service traffic distribution (`PreferClose`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traffic_distribution: Option<String>,
    /// Container port number or name (defaults to `port`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_port: Option<IntOrString>,
    /// Expose every container port on the generated Services.
    #[serde(default, skip_serializing_if = "is_false")]
    pub port_discovery: bool,
    /// Generate headless Services.
    #[serde(default, skip_serializing_if = "is_false")]
    pub headless: bool,
    /// Request timeout on the route.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<GoDuration>,
    /// Backend request timeout on the route.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_timeout: Option<GoDuration>,
    /// App Mesh mesh name. Accepted, not used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mesh_name: Option<String>,
    /// App Mesh backends. Accepted, not used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<String>,
    /// Host names the route answers for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Istio delegation. Accepted, not used.
    #[serde(default, skip_serializing_if = "is_false")]
    pub delegation: bool,
    /// Request match conditions of the route (all traffic when empty).
    #[serde(rename = "match", default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<HttpMatchRequest>,
    /// Retry policy on the route.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<HttpRetry>,
    /// URL rewrite on the route.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<HttpRewrite>,
    /// Extra request mirrors on the route (Gateway API `RequestMirror` filters).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirror: Vec<ServiceMirror>,
    /// Header operations on the route.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<HeaderOperations>,
    /// Istio gateways. Accepted, not used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    /// Gateways the generated HTTPRoute attaches to (Gateway API `parentRefs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateway_refs: Vec<GatewayRef>,
    /// Istio CORS policy. Accepted, not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown_object")]
    pub cors_policy: Option<serde_json::Value>,
    /// Istio traffic policy. Accepted, not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown_object")]
    pub traffic_policy: Option<serde_json::Value>,
    /// Labels and annotations for the apex Service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apex: Option<CustomMetadata>,
    /// Labels and annotations for the primary Service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary: Option<CustomMetadata>,
    /// Labels and annotations for the canary Service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary: Option<CustomMetadata>,
    /// Metadata keys on generated objects that the controller must leave alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unmanaged_metadata: Option<UnmanagedMetadata>,
}

/// A port number or a port name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IntOrString {
    /// A port number.
    Int(i64),
    /// A port name.
    String(String),
}

impl Serialize for IntOrString {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            IntOrString::Int(n) => serializer.serialize_i64(*n),
            IntOrString::String(s) => serializer.serialize_str(s),
        }
    }
}

impl<'de> Deserialize<'de> for IntOrString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = IntOrString;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number or name")
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<IntOrString, E> {
                Ok(IntOrString::Int(v))
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<IntOrString, E> {
                i64::try_from(v)
                    .map(IntOrString::Int)
                    .map_err(|_| E::custom("port number out of range"))
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<IntOrString, E> {
                Ok(IntOrString::String(v.to_owned()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl JsonSchema for IntOrString {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "IntOrString".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "x-kubernetes-int-or-string": true })
    }
}

/// Istio-style HTTP match request, used by `service.match` and `analysis.match`.
///
/// Serin's routes support `uri`, `method`, `headers` and `queryParams`; the other fields
/// parse (Flagger accepts them) and validation reports them as unsupported.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMatchRequest {
    /// Name of the match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Request path match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<StringMatch>,
    /// URL scheme match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheme: Option<StringMatch>,
    /// HTTP method match (`exact` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<StringMatch>,
    /// Authority (Host) match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<StringMatch>,
    /// Header matches by header name; cookies are matched through the `cookie` header.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, StringMatch>,
    /// Query parameter matches by parameter name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query_params: BTreeMap<String, StringMatch>,
    /// Headers that must not match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub without_headers: BTreeMap<String, StringMatch>,
    /// Case-insensitive URI matching.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignore_uri_case: Option<bool>,
    /// Port match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    /// Source workload labels (mesh only).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_labels: BTreeMap<String, String>,
    /// Source namespace (mesh only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
    /// Istio gateways the match applies to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
}

/// A string match: exactly one of the four fields must be set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StringMatch {
    /// Exact value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// Value prefix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Value suffix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    /// Regular expression (RE2 syntax) the whole value must match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// Retry policy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRetry {
    /// Number of retries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i64>,
    /// Timeout per attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<GoDuration>,
    /// Conditions that trigger a retry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<String>,
}

/// URL rewrite.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRewrite {
    /// New path (or path prefix).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// New authority (Host).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// `ReplaceFullPath` or `ReplacePrefixMatch`.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub rewrite_type: Option<String>,
}

/// A Gateway API request mirror on the route.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceMirror {
    /// Where mirrored requests go.
    #[schemars(required)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_ref: Option<BackendObjectReference>,
}

/// Gateway API backend reference.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendObjectReference {
    /// API group (empty for core).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind (default `Service`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name.
    #[schemars(required)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
}

/// Request and response header operations.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderOperations {
    /// Operations on request headers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<HeaderOps>,
    /// Operations on response headers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<HeaderOps>,
}

/// Header additions, replacements and removals.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderOps {
    /// Headers to append.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, String>,
    /// Headers to overwrite.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    /// Headers to remove.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// Gateway API parent reference: a Gateway (listener) the route attaches to.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayRef {
    /// API group (default `gateway.networking.k8s.io`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind (default `Gateway`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name of the Gateway.
    #[schemars(required)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Namespace of the Gateway (defaults to the Canary's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Listener name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    /// Listener port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
}

/// Labels and annotations for a generated object.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CustomMetadata {
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Metadata keys the controller must not manage.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UnmanagedMetadata {
    /// Annotation keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub annotations: Vec<String>,
    /// Label keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
}

/// How a release is analysed and how traffic moves between primary and canary.
///
/// The strategy follows from the fields set: `stepWeight`/`stepWeights` for a weighted
/// canary, `iterations` + `match` for A/B testing, `iterations` alone for blue/green,
/// `mirror` for mirroring (blue/green, or a mirror step before a weighted canary).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnalysisSpec {
    /// Time between analysis steps (default 60s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<GoDuration>,
    /// Number of analysis iterations for A/B testing and blue/green.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iterations: Option<i64>,
    /// Failed checks tolerated before rollback (default 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<i64>,
    /// Highest canary weight of a weighted canary (default 100).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_weight: Option<Percent>,
    /// Canary weight increment per step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_weight: Option<Percent>,
    /// Explicit canary weights, strictly increasing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub step_weights: Vec<Percent>,
    /// Primary weight increment per step during promotion (all at once when unset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_weight_promotion: Option<Percent>,
    /// Mirror traffic to the canary (blue/green mirroring, or a mirror step before a
    /// weighted canary).
    #[serde(default, skip_serializing_if = "is_false")]
    pub mirror: bool,
    /// Percentage of requests mirrored (default 100).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror_weight: Option<Percent>,
    /// Percentage of primary pods that must be available (Flagger). Accepted, not used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary_ready_threshold: Option<i64>,
    /// Percentage of canary pods that must be available (Flagger). Accepted, not used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary_ready_threshold: Option<i64>,
    /// A/B testing conditions: requests matching any entry go to the canary.
    #[serde(rename = "match", default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<HttpMatchRequest>,
    /// Metric checks run at every step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<MetricSpec>,
    /// Webhooks called at the stages their type names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<WebhookSpec>,
    /// Alert routing (Flagger). Accepted, not used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<AlertSpec>,
    /// Pin users who reached the canary to it with a cookie (weighted canary only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_affinity: Option<SessionAffinitySpec>,
}

/// A metric check.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricSpec {
    /// Name: a built-in metric (`request-success-rate`, `request-duration`) or any name
    /// with `templateRef`.
    #[schemars(required)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Query window (default 1m).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<GoDuration>,
    /// Legacy threshold (replaced by `thresholdRange`): a minimum for
    /// `request-success-rate`, a maximum otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Accepted range of the measured value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold_range: Option<ThresholdRange>,
    /// Inline PromQL query (legacy, replaced by `templateRef`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// The `MetricTemplate` to query.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template_ref: Option<TemplateRef>,
    /// Extra variables for the template's query.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub template_variables: BTreeMap<String, String>,
}

/// Accepted range of a metric value; either bound may be absent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ThresholdRange {
    /// Lowest accepted value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Highest accepted value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

/// Reference to a `MetricTemplate`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TemplateRef {
    /// Name of the template.
    #[schemars(required)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Namespace of the template (defaults to the Canary's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// A webhook.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookSpec {
    /// Name, used in events.
    #[schemars(required)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// When the hook runs (default `rollout`).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = [
        "", "confirm-rollout", "pre-rollout", "rollout", "confirm-traffic-increase",
        "confirm-promotion", "post-rollout", "rollback", "event"
    ]))]
    pub hook_type: Option<String>,
    /// Where the payload is POSTed (http or https).
    #[schemars(required)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Request timeout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<GoDuration>,
    /// Key/value pairs sent in the payload.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Mute alerts raised by this hook.
    #[serde(default, skip_serializing_if = "is_false")]
    pub mute_alert: bool,
    /// Number of retries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<i64>,
    /// Skip TLS verification.
    #[serde(rename = "disableTLS", default, skip_serializing_if = "is_false")]
    pub disable_tls: bool,
}

/// An alert (Flagger). Parsed and ignored.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AlertSpec {
    /// Name of the alert.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `info`, `warn` or `error`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    /// The alert provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_ref: Option<CrossNamespaceObjectReference>,
}

/// Cookie-based session affinity for a weighted canary.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SessionAffinitySpec {
    /// Name of the cookie that pins users to the canary.
    #[schemars(required)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cookie_name: Option<String>,
    /// Name of a cookie pinning users to the primary (Flagger). Accepted, not used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary_cookie_name: Option<String>,
    /// Cookie `Domain` attribute. Accepted, not used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Cookie `HttpOnly` attribute. Accepted, not used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_only: Option<bool>,
    /// Cookie lifetime in seconds (default 86400).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age: Option<i64>,
    /// Cookie `Partitioned` attribute. Accepted, not used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partitioned: Option<bool>,
    /// Cookie `Path` attribute. Accepted, not used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Cookie `SameSite` attribute. Accepted, not used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub same_site: Option<String>,
    /// Cookie `Secure` attribute. Accepted, not used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secure: Option<bool>,
}

/// When a webhook runs, with Flagger's semantics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HookType {
    /// Gates the start of a release: it waits (phase `Waiting`) until the hook succeeds.
    ConfirmRollout,
    /// Runs once before traffic reaches the canary; a failure is a failed check.
    PreRollout,
    /// Runs at every analysis step (the default); a failure is a failed check.
    Rollout,
    /// Gates each weight increase of a weighted canary.
    ConfirmTrafficIncrease,
    /// Gates promotion: it waits (phase `WaitingPromotion`) until the hook succeeds.
    ConfirmPromotion,
    /// Runs after the release succeeded or failed; the result only produces an event.
    PostRollout,
    /// Rolls the release back when it succeeds.
    Rollback,
    /// Receives every event the controller records.
    Event,
}

impl HookType {
    /// Every hook type, in the order a release meets them.
    pub const ALL: [HookType; 8] = [
        HookType::ConfirmRollout,
        HookType::PreRollout,
        HookType::Rollout,
        HookType::ConfirmTrafficIncrease,
        HookType::ConfirmPromotion,
        HookType::PostRollout,
        HookType::Rollback,
        HookType::Event,
    ];

    /// The name as written in manifests (`pre-rollout`).
    pub const fn as_str(self) -> &'static str {
        match self {
            HookType::ConfirmRollout => "confirm-rollout",
            HookType::PreRollout => "pre-rollout",
            HookType::Rollout => "rollout",
            HookType::ConfirmTrafficIncrease => "confirm-traffic-increase",
            HookType::ConfirmPromotion => "confirm-promotion",
            HookType::PostRollout => "post-rollout",
            HookType::Rollback => "rollback",
            HookType::Event => "event",
        }
    }
}

impl fmt::Display for HookType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for HookType {
    type Err = String;

    /// Parses a manifest's `type`; the empty string is `rollout`, as in Flagger.
    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Ok(HookType::Rollout);
        }
        HookType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| format!("unknown webhook type {s:?}"))
    }
}

impl Serialize for HookType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for HookType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_false(value: &bool) -> bool {
    !*value
}

fn preserve_unknown_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}
