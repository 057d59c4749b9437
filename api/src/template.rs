//! The `MetricTemplate` custom resource (`serin.dev/v1alpha1`): a custom metric query that
//! Canary metrics reference with `templateRef`, as Flagger's.
//!
//! The query may use Flagger's variables: `{{ namespace }}`, `{{ target }}`, `{{ name }}`,
//! `{{ service }}`, `{{ ingress }}`, `{{ interval }}` and `{{ variables.KEY }}` for a Canary
//! metric's `templateVariables`.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A metric query and the provider that answers it.
// kube-derive takes repeated `printcolumn(type_ = ..)` keys, which this lint flags.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "serin.dev",
    version = "v1alpha1",
    kind = "MetricTemplate",
    plural = "metrictemplates",
    singular = "metrictemplate",
    namespaced,
    derive = "PartialEq",
    doc = "MetricTemplate is a custom metric query for Canary analysis.",
    printcolumn(name = "Provider", type_ = "string", json_path = ".spec.provider.type"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricTemplateSpec {
    /// Where the query runs.
    #[schemars(required)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<MetricTemplateProvider>,
    /// The query; it must return a single number.
    #[schemars(required)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
}

/// A metrics backend.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricTemplateProvider {
    /// Provider type: `prometheus`.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub provider_type: Option<String>,
    /// Base URL of the provider's API, e.g. `http://prometheus.monitoring:9090`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Secret in the template's namespace with credentials (`username`/`password` or
    /// `token`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
    /// Skip TLS certificate verification.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_verify: bool,
    /// Cloud region (Flagger's CloudWatch). Accepted, not used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// Reference to a Secret.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretRef {
    /// Name of the Secret.
    #[schemars(required)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}
