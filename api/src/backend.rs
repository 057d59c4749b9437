//! serin-proxy's own kinds: `Backend` (static addresses a route can name) and
//! `SessionAffinity` (sticky buckets for a rule).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `serin.dev/v1alpha1` `Backend`: a set of static addresses (IPs or DNS names) that a route's
/// `backendRefs` can name with `group: serin.dev, kind: Backend`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema, PartialEq)]
#[kube(
    group = "serin.dev",
    version = "v1alpha1",
    kind = "Backend",
    plural = "backends",
    namespaced,
    printcolumn = r#"{"name":"ENDPOINTS","type":"string","jsonPath":".spec.endpoints[*].host"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BackendSpec {
    /// The addresses requests are balanced over.
    pub endpoints: Vec<BackendEndpoint>,
}

/// One address of a [`Backend`].
#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BackendEndpoint {
    /// An IP address or a DNS name.
    pub host: String,
    /// The port; when absent, the `port` of the referencing `backendRef` is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// `serin.dev/v1alpha1` `SessionAffinity`: sticky buckets for the rule whose `ExtensionRef`
/// filter names it (`{type: ExtensionRef, extensionRef: {group: serin.dev, kind:
/// SessionAffinity, name: ...}}`). Exactly one of `cookie` and `header` must be set.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema, PartialEq)]
#[kube(
    group = "serin.dev",
    version = "v1alpha1",
    kind = "SessionAffinity",
    plural = "sessionaffinities",
    namespaced
)]
#[serde(rename_all = "camelCase")]
pub struct SessionAffinitySpec {
    /// The bucket lives in a cookie the proxy sets on the first response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<AffinityCookie>,
    /// The bucket is a hash of this request header (e.g. a user id); requests without the
    /// header are split at random.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<AffinityHeader>,
}

#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
/// The cookie a [`SessionAffinity`] keeps its bucket in.
pub struct AffinityCookie {
    /// The cookie's name.
    pub name: String,
    /// Cookie lifetime in seconds (default 86400, one day).
    #[serde(default = "default_max_age")]
    pub max_age: i64,
}

fn default_max_age() -> i64 {
    86_400
}

#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
/// The request header a [`SessionAffinity`] hashes into a bucket.
pub struct AffinityHeader {
    /// The header's name.
    pub name: String,
}
