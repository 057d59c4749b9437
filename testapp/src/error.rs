//! The crate's one error type.

use std::net::SocketAddr;

/// Why the test app could not be configured or started.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line is not valid (or asked for `--help`).
    #[error(transparent)]
    Args(#[from] clap::Error),
    /// An environment variable holds a value the app cannot use.
    #[error("{variable}={value:?} is not valid")]
    Env {
        /// The variable's name.
        variable: &'static str,
        /// Its value as found.
        value: String,
        /// What is wrong with it.
        #[source]
        source: Box<Error>,
    },
    /// Not a Go duration.
    #[error("not a duration such as 300ms, 1.5s or 1m30s: {reason}")]
    Duration {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Not a number.
    #[error("not a number")]
    Number(#[source] std::num::ParseFloatError),
    /// A percentage outside 0..=100.
    #[error("must be between 0 and 100")]
    Percent,
    /// Not a boolean.
    #[error("expected 1, true, 0 or false")]
    Bool,
    /// The version cannot be sent in the `x-app-version` header.
    #[error("version {version:?} cannot be sent as a header value")]
    Version {
        /// The version asked for.
        version: String,
        /// Why it cannot.
        #[source]
        source: http::header::InvalidHeaderValue,
    },
    /// A listener could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// A listener's own address could not be read.
    #[error("listener address")]
    LocalAddr(#[source] std::io::Error),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
