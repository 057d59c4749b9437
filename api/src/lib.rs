//! Serin's resource types (`serin.dev/v1alpha1`), shared by the data plane and the control
//! plane so that neither links the other to get a type:
//!
//! * [`canary`], [`status`], [`template`]: `Canary` and `MetricTemplate`, field for field as
//!   Flagger's, so a Flagger manifest works after changing its `apiVersion`;
//! * [`backend`]: serin-proxy's `Backend` and `SessionAffinity`;
//! * [`crd`]: the CustomResourceDefinitions of all four, the one generator of `deploy/crds/`;
//! * [`names`]: the condition types and reasons, and the metric names and labels the
//!   controller reads from serin-proxy.
//!
//! Weights are integer basis points ([`weight::Weight`]), durations use Go's syntax
//! ([`duration::GoDuration`]) and instants have second precision
//! ([`timestamp::Timestamp`]), so a status survives any number of JSON round trips and the
//! controller can resume from it after a crash.

pub mod backend;
pub mod canary;
pub mod crd;
pub mod duration;
pub mod error;
pub mod names;
pub mod status;
pub mod template;
pub mod timestamp;
pub mod weight;

pub use error::{Error, Result};
