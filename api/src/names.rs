//! Names both sides rely on: the condition types of a Canary's status, and the metrics
//! serin-proxy exports that the controller's built-in provider reads.

pub use crate::status::PROMOTED_CONDITION;

/// The condition Serin adds to Flagger's `Promoted`: `False` (reason [`INVALID_SPEC`], the
/// message naming every field at fault) while the spec does not validate.
pub const VALID_CONDITION: &str = "Valid";

/// The reason of `Valid=False`.
pub const INVALID_SPEC: &str = "InvalidSpec";

/// The requests counter as registered; exported as [`REQUESTS_TOTAL`].
pub const REQUESTS: &str = "serin_http_requests";

/// The requests counter as exported, by [`ROUTE`], [`BACKEND`], [`CODE`] and [`TRAFFIC`].
pub const REQUESTS_TOTAL: &str = "serin_http_requests_total";

/// The request-duration histogram as registered (unit seconds); exported as
/// `serin_http_request_duration_seconds`.
pub const REQUEST_DURATION: &str = "serin_http_request_duration";

/// The request-duration histogram's buckets as exported, by [`ROUTE`], [`BACKEND`],
/// [`TRAFFIC`] and `le`.
pub const DURATION_BUCKET: &str = "serin_http_request_duration_seconds_bucket";

/// Label: the route, `namespace/name`.
pub const ROUTE: &str = "route";
/// Label: the backend, `namespace/name` (empty for requests no backend is answerable for).
pub const BACKEND: &str = "backend";
/// Label: the status code sent to the client.
pub const CODE: &str = "code";
/// Label: `live` or `mirror`.
pub const TRAFFIC: &str = "traffic";

/// The [`BACKEND`] label serin-proxy gives the canary of apex Service `service` in
/// `namespace`: `NAMESPACE/SERVICE-canary`, the `namespace/name` of the `<service>-canary`
/// Service (or `serin.dev` Backend) that the canary's route sends traffic to. Whatever
/// writes routes for a canary (the controller, standalone mode, `serin demo`) must name the
/// canary backend this way for the built-in metrics to find it.
pub fn canary_backend(namespace: &str, service: &str) -> String {
    format!("{namespace}/{service}-canary")
}
