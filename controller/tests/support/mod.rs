//! A tiny world for driving the stage machine in tests: it answers the machine's needs from
//! scripts, applies its actions to fake workloads and a fake route, feeds the new status
//! back and advances a fake clock by the requeue delay.

#![allow(dead_code, unreachable_pub)] // each test binary uses a different part

use std::{collections::BTreeMap, time::Duration};

use serin_controller::{
    CanarySpec, CanaryStatus, Phase, Timestamp, Weight,
    analysis::MetricValue,
    document::load_canary,
    event::Event,
    route::Route,
    stage::{Action, HookResult, Need, Observations, Plan, Readiness, Revision, WebhookCall, step},
};

/// Answers webhook calls; sees the status the step started from.
pub type HookScript = Box<dyn Fn(&CanaryStatus, &WebhookCall) -> HookResult>;
/// Answers metric queries by metric name; sees the status the step started from.
pub type MetricScript = Box<dyn Fn(&CanaryStatus, &str) -> MetricValue>;

/// The manifest most scenarios start from, with `{analysis}` to fill in.
pub const BASE: &str = r#"
apiVersion: serin.dev/v1alpha1
kind: Canary
metadata:
  name: podinfo
  namespace: test
spec:
  targetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: podinfo
  progressDeadlineSeconds: 600
  service:
    port: 9898
    gatewayRefs: [{name: public}]
  analysis:
    interval: 1m
{analysis}
"#;

/// A Canary manifest with `analysis` (YAML lines indented by four spaces) under `analysis:`.
pub fn manifest(analysis: &str) -> String {
    BASE.replace("{analysis}", analysis)
}

/// What one step did.
#[derive(Clone, Debug)]
pub struct Tick {
    pub phase: Option<Phase>,
    pub weight: Weight,
    pub iterations: u32,
    pub failed_checks: u32,
    pub events: Vec<Event>,
    pub actions: Vec<Action>,
    pub needs: Vec<Need>,
    pub status: CanaryStatus,
}

pub struct Driver {
    pub spec: CanarySpec,
    pub status: CanaryStatus,
    pub now: Timestamp,
    pub obs: Observations,
    pub hooks: HookScript,
    pub metrics: MetricScript,
    /// Steps the canary stays unready after being scaled up.
    pub canary_startup: u32,
    pub canary_startup_message: String,
    /// Steps the primary stays unready after a promotion.
    pub primary_rollout: u32,
    pub primary_rollout_message: String,
    pending_canary: u32,
    pending_primary: u32,
    /// The route as last set.
    pub route: Option<Route>,
    pub canary_running: bool,
    /// Revision last copied to the primary.
    pub primary_revision: Option<String>,
    pub trace: Vec<Tick>,
    /// Serialise the status to JSON and back between these steps (by index).
    pub restart_at: Vec<usize>,
}

impl Driver {
    /// A driver for the manifest, every hook passing and every metric at a healthy value.
    pub fn new(yaml: &str) -> Driver {
        let canary = match load_canary(yaml) {
            Ok(canary) => canary,
            Err(err) => panic!("scenario manifest must be valid: {err}"),
        };
        Driver {
            spec: canary.spec,
            status: CanaryStatus::default(),
            now: Timestamp::from_unix_seconds(1_700_000_000),
            obs: Observations {
                name: "podinfo".into(),
                namespace: "test".into(),
                revision: Revision {
                    spec_hash: "rev-1".into(),
                    tracked_configs: BTreeMap::new(),
                },
                primary: Readiness::Ready,
                canary: Readiness::Ready,
                webhooks: BTreeMap::new(),
                metrics: None,
                cookie_token: "tok".into(),
            },
            hooks: Box::new(|_, _| HookResult::Passed),
            metrics: Box::new(|_, name| healthy(name)),
            canary_startup: 0,
            canary_startup_message: "0 of 1 updated replicas are available".into(),
            primary_rollout: 0,
            primary_rollout_message: "1 of 2 updated replicas are available".into(),
            pending_canary: 0,
            pending_primary: 0,
            route: None,
            canary_running: true,
            primary_revision: None,
            trace: Vec::new(),
            restart_at: Vec::new(),
        }
    }

    /// Bootstraps the Canary (to `Initialized`) and forgets those steps.
    pub fn bootstrapped(mut self) -> Driver {
        self.run_until(|t| t.phase == Some(Phase::Initialized), 5);
        self.trace.clear();
        self
    }

    /// Bootstraps, then publishes revision `rev-2` of the target.
    pub fn released(self) -> Driver {
        let mut driver = self.bootstrapped();
        driver.obs.revision.spec_hash = "rev-2".into();
        driver
    }

    /// Runs one step (asking the scripts for whatever it needs) and applies its plan.
    pub fn tick(&mut self) -> &Tick {
        let index = self.trace.len();
        if self.restart_at.contains(&index) {
            let json = serde_json::to_string(&self.status).unwrap_or_default();
            self.status = match serde_json::from_str(&json) {
                Ok(status) => status,
                Err(err) => panic!("status must survive a JSON round trip: {err}: {json}"),
            };
        }
        self.obs.canary = if self.pending_canary > 0 {
            self.pending_canary -= 1;
            Readiness::not_ready(self.canary_startup_message.clone())
        } else {
            Readiness::Ready
        };
        self.obs.primary = if self.pending_primary > 0 {
            self.pending_primary -= 1;
            Readiness::not_ready(self.primary_rollout_message.clone())
        } else {
            Readiness::Ready
        };
        let mut obs = self.obs.clone();
        obs.webhooks.clear();
        obs.metrics = None;
        let mut needs = Vec::new();
        let plan = loop {
            let plan = step(&self.spec, &self.status, &obs, self.now);
            assert_eq!(
                plan,
                step(&self.spec, &self.status, &obs, self.now),
                "step must be deterministic"
            );
            match &plan.needs {
                None => break plan,
                Some(need) => {
                    assert!(plan.actions.is_empty() && plan.events.is_empty());
                    assert_eq!(
                        plan.status, self.status,
                        "an incomplete plan keeps the status"
                    );
                    assert!(needs.len() < 64, "too many needs in one step: {needs:?}");
                    needs.push(need.clone());
                    match need {
                        Need::Webhook(call) => {
                            assert!(!obs.webhooks.contains_key(&call.index), "asked twice");
                            obs.webhooks
                                .insert(call.index, (self.hooks)(&self.status, call));
                        }
                        Need::Metrics => {
                            assert!(obs.metrics.is_none(), "metrics asked twice");
                            let results = self
                                .spec
                                .analysis
                                .iter()
                                .flat_map(|a| a.metrics.iter())
                                .filter_map(|m| m.name.clone())
                                .map(|name| {
                                    let value = (self.metrics)(&self.status, &name);
                                    (name, value)
                                })
                                .collect();
                            obs.metrics = Some(results);
                        }
                    }
                }
            }
        };
        self.apply(&plan);
        let tick = Tick {
            phase: plan.status.phase,
            weight: plan.status.canary_weight,
            iterations: plan.status.iterations,
            failed_checks: plan.status.failed_checks,
            events: plan.events.clone(),
            actions: plan.actions.clone(),
            needs,
            status: plan.status.clone(),
        };
        self.status = plan.status;
        self.now = self
            .now
            .saturating_add(plan.requeue_after.max(Duration::from_secs(1)));
        self.trace.push(tick);
        &self.trace[index]
    }

    fn apply(&mut self, plan: &Plan) {
        for action in &plan.actions {
            match action {
                Action::Bootstrap => {
                    if self.primary_revision.is_none() {
                        self.primary_revision = Some(self.obs.revision.spec_hash.clone());
                    }
                }
                Action::SetRoute(route) => self.route = Some(route.clone()),
                Action::ScaleCanaryUp => {
                    self.canary_running = true;
                    self.pending_canary = self.canary_startup;
                }
                Action::ScaleCanaryToZero => self.canary_running = false,
                Action::PromotePrimary => {
                    self.primary_revision = Some(self.obs.revision.spec_hash.clone());
                    self.pending_primary = self.primary_rollout;
                }
                Action::RunPostRolloutHooks { .. } | Action::Notify { .. } => {}
            }
        }
    }

    /// Steps until `done` holds for a step (inclusive) or `max` steps ran.
    pub fn run_until(&mut self, done: impl Fn(&Tick) -> bool, max: usize) -> &mut Driver {
        for _ in 0..max {
            if done(self.tick()) {
                return self;
            }
        }
        panic!(
            "not done after {max} steps; last: {:?}",
            self.trace.last().map(|t| (&t.phase, &t.events))
        );
    }

    /// Steps until the release ends (`Succeeded` or `Failed`).
    pub fn finish(&mut self) -> &mut Driver {
        self.run_until(
            |t| matches!(t.phase, Some(Phase::Succeeded | Phase::Failed)),
            200,
        )
    }

    /// Every event message so far, in order.
    pub fn events(&self) -> Vec<String> {
        self.trace
            .iter()
            .flat_map(|t| t.events.iter().map(|e| e.message.clone()))
            .collect()
    }

    /// Every event so far as `Type message`.
    pub fn typed_events(&self) -> Vec<String> {
        self.trace
            .iter()
            .flat_map(|t| t.events.iter().map(ToString::to_string))
            .collect()
    }

    /// The canary weight after each step, as displayed.
    pub fn weights(&self) -> Vec<String> {
        self.trace.iter().map(|t| t.weight.to_string()).collect()
    }

    /// The phase after each step.
    pub fn phases(&self) -> Vec<String> {
        self.trace
            .iter()
            .map(|t| t.phase.map_or_else(|| "-".to_owned(), |p| p.to_string()))
            .collect()
    }

    /// Every route set so far, as `primary/canary` percentages with flags.
    pub fn routes(&self) -> Vec<Route> {
        self.trace
            .iter()
            .flat_map(|t| t.actions.iter())
            .filter_map(|a| match a {
                Action::SetRoute(route) => Some(route.clone()),
                _ => None,
            })
            .collect()
    }

    /// Every action so far except notifications, in order.
    pub fn actions(&self) -> Vec<Action> {
        self.trace
            .iter()
            .flat_map(|t| t.actions.iter())
            .filter(|a| !matches!(a, Action::Notify { .. }))
            .cloned()
            .collect()
    }
}

/// A passing value for the built-in metrics and the seeds' custom ones.
pub fn healthy(metric: &str) -> MetricValue {
    match metric {
        "request-success-rate" => MetricValue::Value(100.0),
        "request-duration" => MetricValue::Value(120.0),
        "error-rate" => MetricValue::Value(0.0),
        "latency" => MetricValue::Value(0.1),
        _ => MetricValue::Value(0.0),
    }
}

/// `n` percent as a weight.
pub fn pct(n: u8) -> Weight {
    Weight::from_whole_percent(n).unwrap_or_default()
}

/// `bp` basis points as a weight.
pub fn bp(bp: u16) -> Weight {
    Weight::from_basis_points(bp).unwrap_or_default()
}
