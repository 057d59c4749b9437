//! serin-proxy: Serin's L7 data plane.
//!
//! The proxy serves a routing table compiled from Gateway API resources (`Gateway`, `HTTPRoute`)
//! and Serin's `Backend` kind, read from YAML files or watched in the Kubernetes API. The table
//! is immutable and swapped atomically on every change; a request never sees half a table, and
//! an invalid change leaves the last good table serving.
//!
//! Crate map:
//!
//! - [`config`]: the objects and their loading from files, with errors naming file/object/field;
//!   [`schema`]: the strict check of each document's fields against its kind's schema;
//! - [`table`]: the compiler and the pure routing decision (match, precedence, weighted pick);
//! - [`path`]: request paths normalised before routing (dot segments, unreserved escapes);
//! - [`forward`]: the request path (headers, timeouts, metrics); [`upstream`]: the pooled
//!   connections to backends; [`workers`]: the serving threads; [`deadline`]: their request
//!   deadlines;
//! - [`mirror`]: copies of requests to mirror backends, off the live path;
//! - [`server`]: listeners, HTTP/1.1 + h2c, graceful drain; [`admin`]: metrics and health;
//! - [`reload`]: applying configuration and watching files; [`metrics`]: the Prometheus metrics;
//! - [`kubernetes`]: the Kubernetes source (watchers, status); [`runtime`]: a whole proxy.

pub mod admin;
pub mod body;
pub mod config;
pub mod deadline;
pub mod error;
pub mod forward;
pub mod kubernetes;
pub mod metrics;
pub mod mirror;
pub mod path;
pub mod reload;
pub mod runtime;
pub mod schema;
pub mod server;
pub mod table;
pub mod upstream;
pub mod workers;

pub use error::{ConfigError, ProxyError};
