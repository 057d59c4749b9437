//! Errors: configuration errors that name what is wrong, and the data plane's leaf errors that
//! become HTTP status codes in one place ([`ProxyError::status`]).

use std::path::PathBuf;

use http::StatusCode;

use crate::config::Origin;

/// A configuration that cannot be served. Its `Display` names the file (or API object), the
/// object and the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: invalid YAML: {message}")]
    Syntax { origin: Origin, message: String },
    #[error("{origin}: {object}: {field}: {message}")]
    Object {
        origin: Origin,
        /// `Kind namespace/name`.
        object: String,
        /// Dotted path inside the object, e.g. `spec.rules[0].matches[1].path.value`.
        field: String,
        message: String,
    },
    #[error("the built-in schemas cannot be read: {0}")]
    Schema(#[source] std::sync::Arc<serde_json::Error>),
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Many(Vec<ConfigError>),
    #[error("listener port {port}: {source}")]
    Bind {
        port: u16,
        #[source]
        source: std::io::Error,
    },
}

/// Why a request could not be proxied. Mapped to a status code by [`ProxyError::status`].
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route matches the request")]
    NoRoute,
    #[error("the matched rule has no usable backend")]
    NoBackend,
    #[error("backend {backend} has no endpoints")]
    NoEndpoints { backend: String },
    #[error("{0}")]
    Connect(#[source] crate::upstream::ConnectError),
    #[error("the backend did not answer in time")]
    Timeout,
    #[error("{0}")]
    Upstream(#[source] crate::upstream::SendError),
    /// The client's request body could not be read to its end: malformed chunked coding,
    /// shorter than its `Content-Length` (the client closed first), a failed client connection.
    /// The backend may have received part of the request, but did nothing wrong.
    #[error("{0}")]
    RequestBody(#[source] crate::upstream::SendError),
    #[error("invalid request: {0}")]
    BadRequest(&'static str),
    /// The request's path has more `..` segments than segments to remove.
    #[error("{0}")]
    Path(#[from] crate::path::AboveRoot),
}

impl ProxyError {
    /// The status code sent to the client for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::NoBackend => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::NoEndpoints { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Connect(_) | ProxyError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::RequestBody(_) | ProxyError::BadRequest(_) | ProxyError::Path(_) => {
                StatusCode::BAD_REQUEST
            }
        }
    }

    /// Whether the client caused the failure rather than the backend or the proxy.
    ///
    /// Such a request is counted in `serin_http_requests_total` with an empty `backend` label
    /// (as the requests of a rule without a weighted backend are), never against the backend
    /// picked for it: the built-in analysis judges a canary by its backend's series, so a 5xx
    /// recorded there would let any client fail someone's release, and even a 4xx would dilute
    /// the backend's error rate. The `code` stays the one the client got.
    pub fn client_fault(&self) -> bool {
        matches!(
            self,
            ProxyError::RequestBody(_) | ProxyError::BadRequest(_) | ProxyError::Path(_)
        )
    }
}
