//! Serin's control plane: the `Canary` and `MetricTemplate` resources and the pure rollout
//! engine that drives a Canary through Flagger's stages.
//!
//! * [`canary`], [`status`], [`template`]: the custom resources (`serin.dev/v1alpha1`), from
//!   the `serin-api` crate the proxy shares; [`crd`] renders every CRD of `deploy/crds/`.
//! * [`validation`]: semantic checks that report every problem with its field path, and the
//!   checked [`validation::Settings`] the engine runs on.
//! * [`stage`]: the stage machine, `step(spec, status, observations, now) -> Plan`, pure and
//!   deterministic; [`route`] is the routing it asks for and [`event`] the wording of its
//!   events (Flagger's).
//! * [`analysis`] and [`webhook`]: the boundaries to metric providers and the webhook client,
//!   and the pure judgement of their results.
//! * [`kubernetes`]: serin-controller, the engine driving Canaries in a cluster; [`drive`]: the
//!   loop (resolve needs → plan → apply) it shares with standalone mode and the demo.

pub use serin_api::{canary, crd, duration, status, template, timestamp, weight};

pub mod analysis;
pub mod document;
pub mod drive;
pub mod error;
pub mod event;
pub mod httproute;
pub mod kubernetes;
pub mod provider;
pub mod route;
pub mod stage;
pub mod validation;
pub mod webhook;
pub mod webhook_client;

pub use canary::{Canary, CanarySpec};
pub use error::{Error, Result};
pub use stage::{Action, Need, Observations, Plan, step};
pub use status::{CanaryStatus, Phase};
pub use template::{MetricTemplate, MetricTemplateSpec};
pub use timestamp::Timestamp;
pub use weight::Weight;
