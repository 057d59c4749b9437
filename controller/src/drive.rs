//! The part of a step every adapter shares: ask the stage machine, resolving the webhooks and
//! metrics it needs (`resolve needs → plan`), run the post-rollout hooks an action asks for,
//! and forward events to `event` hooks. Adapters observe and apply in their own world
//! (Kubernetes objects, a routing directory); this is the same for all of them.

use std::collections::BTreeMap;

use crate::analysis::{MetricProvider, MetricQuery, MetricValue};
use crate::canary::{CanarySpec, HookType};
use crate::event::{self, Event};
use crate::stage::{Action, HookResult, Need, Observations, Plan, desired_route, step};
use crate::status::{CanaryStatus, Phase};
use crate::template::MetricTemplateSpec;
use crate::timestamp::Timestamp;
use crate::validation::{MetricKind, Settings};
use crate::webhook::{WebhookClient, WebhookPayload};

/// What a step needs besides the Canary itself: who it is, and how to measure and call out.
pub struct Drive<'a> {
    /// Canary name.
    pub name: &'a str,
    /// Canary namespace.
    pub namespace: &'a str,
    /// The validated spec.
    pub settings: &'a Settings,
    /// The apex Service name (`{{ service }}` in queries; the canary backend is
    /// `<service>-canary`).
    pub service: &'a str,
    /// Metric providers.
    pub provider: &'a dyn MetricProvider,
    /// Webhook client.
    pub webhooks: &'a dyn WebhookClient,
    /// MetricTemplates by name, for metrics with a `templateRef`.
    pub templates: &'a BTreeMap<String, MetricTemplateSpec>,
}

impl Drive<'_> {
    /// Runs the stage machine until its plan is complete, calling the webhooks and measuring
    /// the metrics it asks for into `obs` on the way.
    pub async fn plan(
        &self,
        spec: &CanarySpec,
        status: &CanaryStatus,
        obs: &mut Observations,
        now: Timestamp,
    ) -> Plan {
        loop {
            let plan = step(spec, status, obs, now);
            match &plan.needs {
                Some(Need::Webhook(call)) => {
                    let hook = &self.settings.webhooks[call.index];
                    let payload =
                        WebhookPayload::new(self.name, self.namespace, call.phase, status, hook);
                    let result = self.webhooks.call(hook, &payload).await;
                    obs.webhooks.insert(call.index, result);
                }
                Some(Need::Metrics) => {
                    obs.metrics = Some(self.measure(status.last_transition_time).await);
                }
                None => return plan,
            }
        }
    }

    /// What to apply for `plan`: its actions, completed with the whole desired state. Once a
    /// Canary is bootstrapped every step applies the route its status calls for, changed or
    /// not (level-triggered), so a deleted, stale or hand-edited route is put back at the next
    /// step instead of staying broken until the weight changes. Adapters' writes are
    /// idempotent: an unchanged route costs nothing.
    pub fn actions(&self, plan: &Plan) -> Vec<Action> {
        let mut actions = plan.actions.clone();
        let bootstrapped = !matches!(plan.status.phase, None | Some(Phase::Initializing));
        if bootstrapped && !actions.iter().any(|a| matches!(a, Action::SetRoute(_))) {
            actions.push(Action::SetRoute(desired_route(self.settings, &plan.status)));
        }
        actions
    }

    /// Measures every metric of the analysis over its interval, starting no earlier than
    /// `since` (the status's `lastTransitionTime`: the release's start or its last traffic
    /// change; earlier requests belong to another release or weight).
    pub async fn measure(&self, since: Option<Timestamp>) -> BTreeMap<String, MetricValue> {
        let mut out = BTreeMap::new();
        for check in &self.settings.metrics {
            let template = match &check.kind {
                MetricKind::Template { name, .. } => self.templates.get(name),
                _ => None,
            };
            let query = MetricQuery {
                check,
                name: self.name,
                namespace: self.namespace,
                target: &self.settings.target,
                service: self.service,
                template,
                since,
            };
            out.insert(check.name.clone(), self.provider.measure(query).await);
        }
        out
    }

    /// Calls the `post-rollout` hooks with `phase`; one event per hook with its outcome.
    pub async fn post_rollout_hooks(&self, phase: Phase, status: &CanaryStatus) -> Vec<Event> {
        let mut events = Vec::new();
        for hook in self
            .settings
            .webhooks
            .iter()
            .filter(|h| h.hook_type == HookType::PostRollout)
        {
            let payload = WebhookPayload::new(self.name, self.namespace, phase, status, hook);
            let failure = match self.webhooks.call(hook, &payload).await {
                HookResult::Passed => None,
                HookResult::Failed(why) => Some(why),
            };
            events.push(event::post_rollout_result(&hook.name, failure.as_deref()));
        }
        events
    }

    /// Forwards `event` to the `event` hooks; failures are logged, never fatal.
    pub async fn event_hooks(&self, status: &CanaryStatus, event: &Event, now: Timestamp) {
        for hook in self
            .settings
            .webhooks
            .iter()
            .filter(|h| h.hook_type == HookType::Event)
        {
            let payload =
                WebhookPayload::for_event(self.name, self.namespace, status, hook, event, now);
            if let HookResult::Failed(why) = self.webhooks.call(hook, &payload).await {
                tracing::warn!(hook = %hook.name, "event webhook failed: {why}");
            }
        }
    }
}

/// A random cookie value (ten letters and digits) for [`Observations::cookie_token`].
pub fn cookie_token() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    (0..10)
        .map(|_| char::from(ALPHABET[fastrand::usize(..ALPHABET.len())]))
        .collect()
}
