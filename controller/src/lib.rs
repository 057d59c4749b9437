//! Serin's control plane: the `Canary` and `MetricTemplate` resources and the pure rollout
//! engine that drives a Canary through Flagger's stages.
//!
//! * [`canary`], [`status`], [`template`]: the custom resources (`serin.dev/v1alpha1`),
//!   field for field as Flagger's, so a Flagger manifest works after changing its
//!   `apiVersion`; [`crd`] renders their CustomResourceDefinitions.
//! * [`validation`]: semantic checks that report every problem with its field path, and the
//!   checked [`validation::Settings`] the engine runs on.
//! * [`stage`]: the stage machine, `step(spec, status, observations, now) -> Plan`, pure and
//!   deterministic; [`route`] is the routing it asks for and [`event`] the wording of its
//!   events (Flagger's).
//! * [`analysis`] and [`webhook`]: the boundaries to metric providers and the webhook client,
//!   and the pure judgement of their results.
//! * [`manifest`]: reading multi-document YAML files, as `serin validate` does.
//!
//! Weights are integer basis points ([`weight::Weight`]), durations use Go's syntax
//! ([`duration::GoDuration`]) and instants have second precision
//! ([`timestamp::Timestamp`]), so a status survives any number of JSON round trips and the
//! controller can resume from it after a crash.

pub mod analysis;
pub mod canary;
pub mod crd;
pub mod demo;
pub mod drive;
pub mod duration;
pub mod error;
pub mod event;
pub mod httproute;
pub mod kubernetes;
pub mod manifest;
pub mod provider;
pub mod route;
pub mod stage;
pub mod standalone;
pub mod status;
pub mod template;
pub mod timestamp;
pub mod validation;
pub mod webhook;
pub mod webhook_client;
pub mod weight;

pub use canary::{Canary, CanarySpec};
pub use error::{Error, Result};
pub use stage::{Action, Need, Observations, Plan, step};
pub use status::{CanaryStatus, Phase};
pub use template::{MetricTemplate, MetricTemplateSpec};
pub use timestamp::Timestamp;
pub use weight::Weight;
