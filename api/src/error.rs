//! Errors of the resource types: a value written in a spec or status that cannot be read.

/// What cannot be read, and why.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A duration is not a Go duration (`30s`, `1m30s`).
    #[error("invalid duration {input:?}: {reason}")]
    InvalidDuration {
        /// The text as written.
        input: String,
        /// Why it was rejected.
        reason: String,
    },

    /// A percentage cannot be used as a traffic weight.
    #[error("invalid weight {value}: {reason}")]
    InvalidWeight {
        /// The number as written.
        value: f64,
        /// Why it was rejected.
        reason: String,
    },

    /// A timestamp is not RFC 3339.
    #[error("invalid timestamp {input:?}: {reason}")]
    InvalidTimestamp {
        /// The text as written.
        input: String,
        /// Why it was rejected.
        reason: String,
    },

    /// A value cannot be serialised (a CRD to YAML).
    #[error("cannot serialise {what}: {source}")]
    Serialize {
        /// What was being serialised.
        what: String,
        /// The serialiser's error.
        #[source]
        source: serde_yaml_ng::Error,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
