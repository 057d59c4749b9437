//! The crate's error type.

use std::path::PathBuf;

use crate::validation::ValidationErrors;

/// Everything that can go wrong in the controller crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A manifest document is not valid YAML.
    #[error("document {document}: {source}")]
    Yaml {
        /// 1-based index of the document in its file.
        document: usize,
        /// The YAML error, with line and column.
        #[source]
        source: serde_yaml_ng::Error,
    },

    /// A document is valid YAML but does not match the resource's schema.
    #[error("{path}: {message}")]
    Schema {
        /// Field path, e.g. `spec.analysis.interval`.
        path: String,
        /// What is wrong there.
        message: String,
    },

    /// A resource parsed but breaks semantic rules.
    #[error("{0}")]
    Invalid(ValidationErrors),

    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// Standalone mode cannot proceed (missing target Backend, unreadable routing directory,
    /// unwritable file); the message names the object or file.
    #[error("{0}")]
    Standalone(String),

    /// An address or URL cannot be used for an outbound HTTP request.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The address or URL as given.
        url: String,
        /// Why it was rejected.
        reason: String,
    },

    /// An outbound HTTP request failed before a complete response arrived (connection
    /// refused, reset, malformed response, ...).
    #[error("request to {url} failed")]
    Request {
        /// The URL requested.
        url: String,
        /// The client's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// An outbound HTTP request got no complete response within its timeout.
    #[error("request to {url} timed out after {timeout:?}")]
    Timeout {
        /// The URL requested.
        url: String,
        /// The time allowed.
        timeout: std::time::Duration,
    },

    /// A response's body is larger than the client accepts.
    #[error("response from {url} is larger than {limit} bytes")]
    ResponseTooLarge {
        /// The URL requested.
        url: String,
        /// The limit in bytes.
        limit: usize,
    },

    /// A response arrived but cannot be understood.
    #[error("unexpected response from {url}: {reason}")]
    BadResponse {
        /// The URL requested.
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A value of a resource cannot be read or written (a duration, weight or timestamp, a
    /// CRD).
    #[error(transparent)]
    Api(#[from] serin_api::Error),

    /// A Kubernetes API call failed; `what` names the call and the object.
    #[error("{what}: {source}")]
    Kube {
        /// The call and its object, e.g. `patching Deployment test/podinfo-primary`.
        what: String,
        /// The client's error.
        #[source]
        source: Box<kube::Error>,
    },

    /// What a Canary refers to is missing or unusable in the cluster (its target Deployment,
    /// a label to select its pods by); the message names the object and field.
    #[error("{0}")]
    Cluster(String),

    /// One of the demo's apps (serin-testapp) cannot start.
    #[error("demo app: {0}")]
    DemoApp(String),

    /// A metric query template cannot be rendered.
    #[error("cannot render query: {reason}")]
    Template {
        /// What is wrong, e.g. the unknown variable.
        reason: String,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A short, stable label for metrics and logs (`invalid_spec`, `io`, ...).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Api(serin_api::Error::InvalidDuration { .. }) => "invalid_duration",
            Error::Api(serin_api::Error::InvalidWeight { .. }) => "invalid_weight",
            Error::Api(serin_api::Error::InvalidTimestamp { .. }) => "invalid_timestamp",
            Error::Api(serin_api::Error::Serialize { .. }) => "serialize",
            Error::Yaml { .. } => "yaml",
            Error::Schema { .. } => "schema",
            Error::Invalid(_) => "invalid_spec",
            Error::Io { .. } => "io",
            Error::InvalidUrl { .. } => "invalid_url",
            Error::Request { .. } => "request",
            Error::Timeout { .. } => "timeout",
            Error::ResponseTooLarge { .. } => "response_too_large",
            Error::BadResponse { .. } => "bad_response",
            Error::Template { .. } => "template",
            Error::Standalone(_) => "standalone",
            Error::DemoApp(_) => "demo_app",
            Error::Kube { .. } => "kube",
            Error::Cluster(_) => "cluster",
        }
    }
}
