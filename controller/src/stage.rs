//! The rollout stage machine: a pure function from (spec, status, observations, now) to a
//! [`Plan`] (actions, the new status, events, when to run again). No IO, no clock, no
//! randomness: the adapter passes everything in, including a random token for cookies.
//!
//! # Stage chart
//!
//! ```text
//!   new Canary --> Initializing -- primary not ready: wait
//!                      | primary ready: canary scaled to zero, all traffic to primary
//!                      v
//!                 Initialized --+
//!                 Succeeded ----+-- new revision (pod template, ConfigMaps, Secrets)
//!                 Failed -------+         |
//!                                         v
//!                             confirm-rollout hooks -- failing --> Waiting (asked again
//!                                         | passing                 every interval)
//!                                         v scale canary up
//!   +----------------------------> Progressing <-- new revision: restart (traffic back
//!   |                                     |          to primary, counters reset)
//!   |  every interval:                    |
//!   |    primary or canary not ready -----+-- wait (canary unready past
//!   |    a rollback hook succeeds --------+        progressDeadlineSeconds: ROLLBACK)
//!   |    failedChecks >= threshold -------+--> ROLLBACK
//!   |    first step: pre-rollout hooks; later steps: rollout hooks, then metrics
//!   |      any failure --> failedChecks + 1 ("Halt ...")
//!   |    weighted canary: confirm-traffic-increase hooks, then weight + step
//!   |      (with mirror: one mirrored step at weight 0 first)
//!   |    A/B testing: matching requests to the canary, iteration + 1
//!   |    blue/green: iteration + 1 (with mirror: traffic mirrored to the canary);
//!   |      after the last one, all traffic to the canary
//!   |                                     | max weight or last iteration reached
//!   |                                     v
//!   |                         confirm-promotion hooks -- failing --> WaitingPromotion
//!   +------- analysis continues <---------+ passing                    |
//!                                         v canary template copied to primary
//!                                     Promoting -- primary not ready: wait
//!                                         | all traffic to primary (stepWeightPromotion:
//!                                         v one step per interval)
//!                                     Finalising: canary scaled to zero, post-rollout hooks
//!                                         v
//!                                     Succeeded
//!
//!   ROLLBACK: all traffic to primary, canary scaled to zero, post-rollout hooks --> Failed
//!   skipAnalysis: once the canary is ready, promote straight away --> Succeeded
//! ```
//!
//! # Asking for webhooks and metrics
//!
//! Webhooks have side effects (a `pre-rollout` hook may start a load test) and are called
//! only when the stage reached needs them, in spec order, stopping at the first failure, as
//! in Flagger. So the machine asks for them: a plan whose [`Plan::needs`] is set carries
//! nothing else; the adapter runs the one webhook (or measures all metrics) it names, adds
//! the result to [`Observations`] and calls [`step`] again with the same status and `now`.
//! Each call is pure, so the last call's plan holds every event of the step, in order:
//!
//! ```text
//! let mut obs = observe(...);
//! let plan = loop {
//!     let plan = step(&spec, &status, &obs, now);
//!     match plan.needs {
//!         Some(Need::Webhook(call)) => { obs.webhooks.insert(call.index, run(call)); }
//!         Some(Need::Metrics) => { obs.metrics = Some(measure_all()); }
//!         None => break plan,
//!     }
//! };
//! apply(plan.actions); record(plan.events); write_status(plan.status);
//! requeue(plan.requeue_after);
//! ```
//!
//! `post-rollout` hooks only produce events and must run after the canary is scaled down, so
//! they are an action ([`Action::RunPostRolloutHooks`]); `event` hooks receive every event the
//! adapter records.
//!
//! # Routes
//!
//! The route is a function of the status: [`desired_route`]. A plan contains
//! [`Action::SetRoute`] whenever the desired route changes (and always on rollback, restart
//! and bootstrap), so an adapter may also re-apply `desired_route` at any time to repair
//! drift.

use std::{collections::BTreeMap, time::Duration};

use crate::{
    analysis::{MetricValue, judge},
    canary::{CanarySpec, HookType},
    event::{self, Event, Names},
    route::{CookieAffinity, Route},
    status::{
        CanaryCondition, CanaryStatus, ConditionStatus, MetricStatus, PROMOTED_CONDITION, Phase,
    },
    timestamp::Timestamp,
    validation::{Settings, Strategy, Webhook, validate},
    weight::Weight,
};

/// What the adapter observed for one step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observations {
    /// Canary name (from its metadata).
    pub name: String,
    /// Canary namespace (from its metadata).
    pub namespace: String,
    /// The target's current revision.
    pub revision: Revision,
    /// Readiness of `<target>-primary`.
    pub primary: Readiness,
    /// Readiness of the target (the canary).
    pub canary: Readiness,
    /// Results of the webhooks asked for during this step, by index in
    /// `spec.analysis.webhooks`.
    pub webhooks: BTreeMap<usize, HookResult>,
    /// Metric results for this step by metric name, once asked for.
    pub metrics: Option<BTreeMap<String, MetricValue>>,
    /// A fresh random token (letters and digits), used as the session-affinity cookie value
    /// when a release first routes traffic to the canary.
    pub cookie_token: String,
}

/// The target's revision: what a release releases.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Revision {
    /// Hash of the target's pod template.
    pub spec_hash: String,
    /// Hashes of the ConfigMaps and Secrets the pod template references, by `kind/name`.
    pub tracked_configs: BTreeMap<String, String>,
}

/// Whether a workload has finished rolling out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Readiness {
    /// Observed generation is current and all updated replicas are available.
    #[default]
    Ready,
    /// Not yet.
    NotReady {
        /// Why, e.g. `0 of 1 updated replicas are available`.
        message: String,
        /// When the workload stopped being available (the `lastTransitionTime` of its
        /// `Available=False` condition), if known.
        since: Option<Timestamp>,
    },
}

impl Readiness {
    /// Not ready for `message`, since an unknown time.
    pub fn not_ready(message: impl Into<String>) -> Readiness {
        Readiness::NotReady {
            message: message.into(),
            since: None,
        }
    }
}

/// Outcome of one webhook call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HookResult {
    /// The hook answered 2xx.
    Passed,
    /// It did not, with the reason (status code and body, timeout, connection error).
    Failed(String),
}

/// Something the machine needs measured before it can decide the step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Need {
    /// Call one webhook and report it in [`Observations::webhooks`].
    Webhook(WebhookCall),
    /// Measure every metric of the analysis and report them in [`Observations::metrics`].
    Metrics,
}

/// A webhook to call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookCall {
    /// Index in `spec.analysis.webhooks`.
    pub index: usize,
    /// Hook name.
    pub name: String,
    /// Hook type.
    pub hook_type: HookType,
    /// Phase to put in the payload.
    pub phase: Phase,
}

/// Alert severity, as Flagger's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// Progress.
    Info,
    /// Waiting for someone or something.
    Warn,
    /// The release failed.
    Error,
}

/// A change to the world, for the adapter to apply in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Create what a Canary needs if missing: `<target>-primary` from the target's current
    /// template (never overwriting an existing primary template), its autoscaler, the
    /// Services and the route. Idempotent.
    Bootstrap,
    /// Route traffic as described.
    SetRoute(Route),
    /// Scale the target up from zero (resuming its autoscaler).
    ScaleCanaryUp,
    /// Scale the target to zero (pausing its autoscaler).
    ScaleCanaryToZero,
    /// Copy the target's pod template (and its ConfigMaps and Secrets) to the primary.
    PromotePrimary,
    /// Call the `post-rollout` hooks with this phase and record
    /// [`event::post_rollout_result`] for each.
    RunPostRolloutHooks {
        /// `Succeeded` or `Failed`.
        phase: Phase,
    },
    /// Send an alert (Flagger's `alerts`/notifications).
    Notify {
        /// Severity.
        severity: Severity,
        /// Message.
        message: String,
    },
}

/// The outcome of one step.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// When set, the step is incomplete: run what is needed and call [`step`] again; the
    /// rest of this plan is empty (the status is the input status).
    pub needs: Option<Need>,
    /// Actions, in order.
    pub actions: Vec<Action>,
    /// The new status.
    pub status: CanaryStatus,
    /// Events, in order.
    pub events: Vec<Event>,
    /// When to run the next step.
    pub requeue_after: Duration,
}

/// Runs one step of the stage machine. Pure and deterministic.
pub fn step(spec: &CanarySpec, status: &CanaryStatus, obs: &Observations, now: Timestamp) -> Plan {
    match validate(spec) {
        Ok(settings) => Machine::new(&settings, status, obs, now).run(),
        Err(errors) => Plan {
            needs: None,
            actions: Vec::new(),
            status: status.clone(),
            events: vec![event::invalid_spec(&errors.to_string())],
            requeue_after: Duration::from_secs(60),
        },
    }
}

/// The route a status calls for.
pub fn desired_route(settings: &Settings, status: &CanaryStatus) -> Route {
    let active = matches!(
        status.phase,
        Some(Phase::Progressing | Phase::WaitingPromotion | Phase::Promoting)
    );
    let canary = if active {
        status.canary_weight
    } else {
        Weight::ZERO
    };
    let session_affinity = settings.session_affinity.as_ref().and_then(|sa| {
        let split = |cookie: &str| {
            let value = cookie.split_once('=').map_or("", |(_, value)| value);
            (sa.cookie_name.clone(), value.to_owned())
        };
        match (
            &status.session_affinity_cookie,
            &status.previous_session_affinity_cookie,
        ) {
            (Some(cookie), _) if !canary.is_zero() => {
                let (cookie_name, cookie_value) = split(cookie);
                Some(CookieAffinity::Pin {
                    cookie_name,
                    cookie_value,
                    max_age: sa.max_age,
                })
            }
            (_, Some(previous)) => {
                let (cookie_name, cookie_value) = split(previous);
                Some(CookieAffinity::Expire {
                    cookie_name,
                    cookie_value,
                })
            }
            _ => None,
        }
    });
    Route {
        primary_weight: canary.complement(),
        canary_weight: canary,
        matches: (!settings.matches.is_empty() && !canary.is_zero())
            .then(|| settings.matches.clone()),
        mirror: if active && status.mirrored {
            settings.mirror
        } else {
            None
        },
        session_affinity,
    }
}

/// How long to wait before the next step is due, when a step is asked for early.
///
/// During an analysis (phases `Progressing`, `WaitingPromotion`, `Promoting`, `Finalising`)
/// steps are an `interval` apart: each one that judges the canary changes the status and its
/// `lastTransitionTime`. An adapter that is woken by something else (a watch event, its own
/// status write, a restart) asks this first and, given `Some`, waits that long instead of
/// stepping; so the pace survives restarts, as it is read from the status. Outside an analysis
/// steps are due at once (a new revision is picked up as soon as it is seen).
pub fn wait_before_step(
    settings: &Settings,
    status: &CanaryStatus,
    now: Timestamp,
) -> Option<Duration> {
    let analysing = matches!(
        status.phase,
        Some(Phase::Progressing | Phase::WaitingPromotion | Phase::Promoting | Phase::Finalising)
    );
    let last = status.last_transition_time?;
    let elapsed = now.saturating_duration_since(last);
    (analysing && elapsed < settings.interval).then(|| settings.interval - elapsed)
}

/// Whether the observed revision differs from the one the status records.
pub fn revision_changed(status: &CanaryStatus, revision: &Revision) -> bool {
    status.last_applied_spec.as_deref() != Some(revision.spec_hash.as_str())
        || status
            .tracked_configs
            .as_ref()
            .map_or(!revision.tracked_configs.is_empty(), |tracked| {
                *tracked != revision.tracked_configs
            })
}

/// The inputs of a step, summarised.
#[derive(Debug)]
enum Situation<'a> {
    /// `spec.suspend` is set.
    Suspended,
    /// Being deleted: nothing to do.
    Terminating,
    /// Never seen: start bootstrapping.
    New,
    /// Bootstrapping.
    Initializing,
    /// Nothing under way and no new revision.
    Idle,
    /// The primary is rolling out.
    PrimaryNotReady(&'a str),
    /// A new revision to release (or one waiting for approval).
    NewRevision,
    /// The target went back to the revision the primary runs (a failed release undone by
    /// hand): nothing to release.
    BackToPromoted,
    /// The target changed during the analysis.
    RevisionChanged,
    /// The canary is rolling out, within the progress deadline.
    CanaryNotReady(&'a str),
    /// The canary has not become ready within the progress deadline.
    DeadlineExceeded(&'a str),
    /// `spec.skipAnalysis` is set and the canary is ready.
    SkipAnalysis,
    /// Promotion: routing traffic back to the primary.
    Promoting,
    /// Promotion done: scale the canary down.
    Finalising,
    /// The analysis runs.
    Analysing,
}

impl<'a> Situation<'a> {
    fn of(
        settings: &Settings,
        status: &CanaryStatus,
        obs: &'a Observations,
        now: Timestamp,
    ) -> Self {
        if settings.suspend {
            return Situation::Suspended;
        }
        let changed = revision_changed(status, &obs.revision);
        let phase = match status.phase {
            Some(Phase::Terminating | Phase::Terminated) => return Situation::Terminating,
            None => return Situation::New,
            Some(Phase::Initializing) => return Situation::Initializing,
            Some(Phase::Initialized | Phase::Succeeded | Phase::Failed) if !changed => {
                return Situation::Idle;
            }
            Some(phase) => phase,
        };
        if let (false, Readiness::NotReady { message, .. }) = (settings.skip_analysis, &obs.primary)
        {
            return Situation::PrimaryNotReady(message);
        }
        match phase {
            Phase::Initialized | Phase::Succeeded | Phase::Failed | Phase::Waiting => {
                let configs_unchanged = status.tracked_configs.clone().unwrap_or_default()
                    == obs.revision.tracked_configs;
                if status.last_promoted_spec.as_deref() == Some(obs.revision.spec_hash.as_str())
                    && configs_unchanged
                {
                    return Situation::BackToPromoted;
                }
                return Situation::NewRevision;
            }
            Phase::Progressing | Phase::WaitingPromotion if changed => {
                return Situation::RevisionChanged;
            }
            _ => {}
        }
        if let Readiness::NotReady { message, since } = &obs.canary {
            // No progress for the deadline: measured from the later of the last status change
            // (the release started, or moved) and the moment the canary became unavailable.
            let since = match (status.last_transition_time, *since) {
                (Some(a), Some(b)) => a.max(b),
                (a, b) => a.or(b).unwrap_or(now),
            };
            let exceeded = now.saturating_duration_since(since) > settings.progress_deadline;
            match (exceeded, phase) {
                (false, _) => return Situation::CanaryNotReady(message),
                (true, Phase::Progressing | Phase::WaitingPromotion) => {
                    return Situation::DeadlineExceeded(message);
                }
                // Promotion carries on: the canary is about to be scaled down anyway.
                (true, _) => {}
            }
        }
        if settings.skip_analysis {
            return Situation::SkipAnalysis;
        }
        match phase {
            Phase::Promoting => Situation::Promoting,
            Phase::Finalising => Situation::Finalising,
            _ => Situation::Analysing,
        }
    }
}

/// `Err` carries what the step needs before it can go on.
type Asked<T> = Result<T, Need>;

/// One step in the making.
struct Machine<'a> {
    settings: &'a Settings,
    old: &'a CanaryStatus,
    obs: &'a Observations,
    now: Timestamp,
    names: Names,
    status: CanaryStatus,
    actions: Vec<Action>,
    events: Vec<Event>,
    /// The route as of the last `SetRoute` of this plan (initially the old status's).
    route: Route,
}

impl<'a> Machine<'a> {
    fn new(
        settings: &'a Settings,
        old: &'a CanaryStatus,
        obs: &'a Observations,
        now: Timestamp,
    ) -> Self {
        Machine {
            settings,
            old,
            obs,
            now,
            names: Names::new(&obs.name, &obs.namespace, &settings.target),
            status: old.clone(),
            actions: Vec::new(),
            events: Vec::new(),
            route: desired_route(settings, old),
        }
    }

    fn run(mut self) -> Plan {
        let situation = Situation::of(self.settings, self.old, self.obs, self.now);
        let outcome = match situation {
            Situation::Suspended => {
                self.events.push(event::suspended());
                Ok(())
            }
            Situation::Terminating | Situation::Idle => Ok(()),
            Situation::New => {
                self.start_bootstrap();
                Ok(())
            }
            Situation::Initializing => {
                self.finish_bootstrap();
                Ok(())
            }
            Situation::PrimaryNotReady(message) => {
                let primary = self.names.primary.clone();
                self.events
                    .push(event::waiting_for_rollout(&primary, message));
                Ok(())
            }
            Situation::NewRevision => self.start_release(),
            Situation::BackToPromoted => {
                // Recorded as applied, so the next change is a release again; the target
                // stays at zero (the primary already serves this revision).
                self.record_revision();
                self.events.push(event::back_to_promoted(&self.names));
                self.actions.push(Action::ScaleCanaryToZero);
                Ok(())
            }
            Situation::RevisionChanged => {
                self.restart();
                Ok(())
            }
            Situation::CanaryNotReady(message) => {
                let target = self.names.target.clone();
                self.events
                    .push(event::waiting_for_rollout(&target, message));
                Ok(())
            }
            Situation::DeadlineExceeded(message) => {
                self.events
                    .push(event::progress_deadline_exceeded(&self.names, message));
                self.notify(
                    Severity::Error,
                    format!("Progress deadline exceeded: canary not ready: {message}"),
                );
                self.rollback();
                Ok(())
            }
            Situation::SkipAnalysis => {
                self.promote_without_analysis();
                Ok(())
            }
            Situation::Promoting => {
                self.shift_traffic_to_primary();
                Ok(())
            }
            Situation::Finalising => {
                self.finalise();
                Ok(())
            }
            Situation::Analysing => self.analyse(),
        };
        match outcome {
            Ok(()) => self.finish(),
            Err(need) => Plan {
                needs: Some(need),
                actions: Vec::new(),
                status: self.old.clone(),
                events: Vec::new(),
                requeue_after: self.settings.interval,
            },
        }
    }

    // ----- bootstrap -----------------------------------------------------------------

    fn start_bootstrap(&mut self) {
        self.status = CanaryStatus {
            phase: Some(Phase::Initializing),
            ..CanaryStatus::default()
        };
        self.actions.push(Action::Bootstrap);
    }

    fn finish_bootstrap(&mut self) {
        self.actions.push(Action::Bootstrap);
        if let (false, Readiness::NotReady { message, .. }) =
            (self.settings.skip_analysis, &self.obs.primary)
        {
            let primary = self.names.primary.clone();
            self.events
                .push(event::waiting_for_rollout(&primary, message));
            return;
        }
        self.actions.push(Action::ScaleCanaryToZero);
        self.record_revision();
        self.status.last_promoted_spec = self.status.last_applied_spec.clone();
        self.reset_progress(Phase::Initialized);
        self.set_route(true);
        self.events.push(event::initialization_done(&self.names));
        self.notify(
            Severity::Info,
            format!(
                "New {} detected, initialization completed.",
                self.settings.target_kind
            ),
        );
    }

    // ----- starting and restarting a release -------------------------------------------

    fn start_release(&mut self) -> Asked<()> {
        let waiting = self.old.phase == Some(Phase::Waiting);
        let payload_phase = if waiting {
            Phase::Waiting
        } else {
            Phase::Progressing
        };
        for hook in self.hooks(HookType::ConfirmRollout) {
            match self.hook_result(hook, payload_phase)? {
                HookResult::Passed => self
                    .events
                    .push(event::check_passed(HookType::ConfirmRollout, &hook.name)),
                HookResult::Failed(_) => {
                    self.record_revision();
                    self.status.phase = Some(Phase::Waiting);
                    if !waiting {
                        let halt = event::waiting_for_approval(&self.names, &hook.name);
                        if !hook.mute_alert {
                            self.notify(Severity::Warn, halt.message.clone());
                        }
                        self.events.push(halt);
                    }
                    return Ok(());
                }
            }
        }
        self.events.push(event::new_revision(&self.names));
        self.notify(
            Severity::Info,
            "New revision detected, progressing canary analysis.".to_owned(),
        );
        self.actions.push(Action::ScaleCanaryUp);
        self.record_revision();
        self.reset_progress(Phase::Progressing);
        self.status.failed_checks = 0;
        self.status.metrics.clear();
        self.set_route(false);
        Ok(())
    }

    fn restart(&mut self) {
        self.events.push(event::restarting_analysis(&self.names));
        self.record_revision();
        self.reset_progress(Phase::Progressing);
        self.status.failed_checks = 0;
        self.status.metrics.clear();
        self.set_route(true);
    }

    // ----- the analysis ------------------------------------------------------------------

    fn analyse(&mut self) -> Asked<()> {
        let phase = self.old.phase.unwrap_or(Phase::Progressing);
        for hook in self.hooks(HookType::Rollback) {
            match self.hook_result(hook, phase)? {
                HookResult::Passed => {
                    self.events
                        .push(event::check_passed(HookType::Rollback, &hook.name));
                    self.events.push(event::manual_rollback(&self.names));
                    self.notify(
                        Severity::Warn,
                        "Rolling back manual webhook invoked".to_owned(),
                    );
                    self.rollback();
                    return Ok(());
                }
                HookResult::Failed(_) => {
                    self.events.push(event::rollback_hook_silent(&hook.name));
                }
            }
        }
        if self.old.failed_checks >= self.settings.threshold {
            self.rollback();
            return Ok(());
        }

        let first_step =
            self.old.canary_weight.is_zero() && self.old.iterations == 0 && !self.old.mirrored;
        let passed = if first_step {
            self.events.push(event::starting_analysis(&self.names));
            self.pre_rollout_checks()?
        } else {
            self.analysis_checks()?
        };
        if !passed {
            self.status.failed_checks = self.old.failed_checks.saturating_add(1);
            return Ok(());
        }

        match self.settings.strategy.clone() {
            Strategy::AbTesting { iterations } => self.advance_ab_testing(iterations),
            Strategy::BlueGreen { iterations } => self.advance_blue_green(iterations),
            Strategy::Canary { max_weight, .. } => self.advance_canary(max_weight),
        }
    }

    fn pre_rollout_checks(&mut self) -> Asked<bool> {
        for hook in self.hooks(HookType::PreRollout) {
            match self.hook_result(hook, Phase::Progressing)? {
                HookResult::Passed => self
                    .events
                    .push(event::check_passed(HookType::PreRollout, &hook.name)),
                HookResult::Failed(message) => {
                    self.events
                        .push(event::pre_rollout_failed(&self.names, &hook.name, message));
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    fn analysis_checks(&mut self) -> Asked<bool> {
        for hook in self.hooks(HookType::Rollout) {
            if let HookResult::Failed(message) = self.hook_result(hook, Phase::Progressing)? {
                self.events.push(event::external_check_failed(
                    &self.names,
                    &hook.name,
                    message,
                ));
                return Ok(false);
            }
        }
        if self.settings.metrics.is_empty() {
            return Ok(true);
        }
        let results = self.obs.metrics.as_ref().ok_or(Need::Metrics)?;
        let mut first_failure = None;
        let statuses: Vec<MetricStatus> = self
            .settings
            .metrics
            .iter()
            .map(|check| {
                let value = results.get(&check.name).cloned().unwrap_or_else(|| {
                    MetricValue::Error("no result reported for this metric".to_owned())
                });
                let judgement = judge(check, &value, &self.names);
                if first_failure.is_none() {
                    first_failure.clone_from(&judgement.status.message);
                }
                judgement.status
            })
            .collect();
        self.status.metrics = statuses;
        match first_failure {
            Some(message) => {
                self.events.push(Event::warning(message));
                Ok(false)
            }
            None => Ok(true),
        }
    }

    fn advance_ab_testing(&mut self, iterations: u32) -> Asked<()> {
        if self.old.iterations < iterations {
            self.status.iterations = self.old.iterations + 1;
            self.status.canary_weight = Weight::FULL;
            self.set_route(false);
            self.events.push(event::advance_iteration(
                &self.names,
                self.status.iterations,
                iterations,
            ));
            return Ok(());
        }
        if self.confirm_promotion()? {
            self.promote();
        }
        Ok(())
    }

    fn advance_blue_green(&mut self, iterations: u32) -> Asked<()> {
        if self.old.iterations < iterations {
            if self.settings.mirror.is_some() {
                self.status.mirrored = true;
                self.set_route(false);
            }
            self.status.iterations = self.old.iterations + 1;
            self.events.push(event::advance_iteration(
                &self.names,
                self.status.iterations,
                iterations,
            ));
            return Ok(());
        }
        if !self.confirm_promotion()? {
            return Ok(());
        }
        if self.old.iterations == iterations {
            self.events
                .push(event::routing_all_to_canary(self.settings.mirror.is_some()));
            self.status.mirrored = false;
            self.status.canary_weight = Weight::FULL;
            self.status.iterations = iterations + 1;
            self.set_route(false);
            return Ok(());
        }
        self.promote();
        Ok(())
    }

    fn advance_canary(&mut self, max_weight: Weight) -> Asked<()> {
        let current = self.old.canary_weight;
        if current >= max_weight {
            if self.confirm_promotion()? {
                self.promote();
            }
            return Ok(());
        }
        // As in Flagger, traffic increases are not gated while traffic is mirrored.
        if !self.old.mirrored {
            for hook in self.hooks(HookType::ConfirmTrafficIncrease) {
                match self.hook_result(hook, Phase::Progressing)? {
                    HookResult::Passed => self.events.push(event::check_passed(
                        HookType::ConfirmTrafficIncrease,
                        &hook.name,
                    )),
                    HookResult::Failed(_) => {
                        let halt = event::waiting_for_traffic_increase(&self.names, &hook.name);
                        if !hook.mute_alert {
                            self.notify(Severity::Warn, halt.message.clone());
                        }
                        self.events.push(halt);
                        return Ok(());
                    }
                }
            }
        }
        let next = match (
            self.settings.mirror.is_some(),
            current.is_zero(),
            self.old.mirrored,
        ) {
            // Mirror step: the canary sees a copy of the traffic before any live request.
            (true, true, false) => {
                self.status.mirrored = true;
                Weight::ZERO
            }
            (true, true, true) => {
                self.status.mirrored = false;
                self.settings.strategy.next_weight(Weight::ZERO)
            }
            _ => self.settings.strategy.next_weight(current),
        };
        self.status.canary_weight = next;
        self.set_route(false);
        self.events.push(event::advance_weight(&self.names, next));
        Ok(())
    }

    /// Runs the confirm-promotion gate; `false` while any hook withholds approval.
    fn confirm_promotion(&mut self) -> Asked<bool> {
        for hook in self.hooks(HookType::ConfirmPromotion) {
            match self.hook_result(hook, Phase::Progressing)? {
                HookResult::Passed => self
                    .events
                    .push(event::check_passed(HookType::ConfirmPromotion, &hook.name)),
                HookResult::Failed(_) => {
                    if self.old.phase != Some(Phase::WaitingPromotion) {
                        self.status.phase = Some(Phase::WaitingPromotion);
                        let halt = event::waiting_for_promotion(&self.names, &hook.name);
                        if !hook.mute_alert {
                            self.notify(Severity::Warn, halt.message.clone());
                        }
                        self.events.push(halt);
                    }
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    // ----- promotion -----------------------------------------------------------------------

    fn promote(&mut self) {
        self.events.push(event::copying_template(&self.names));
        self.actions.push(Action::PromotePrimary);
        self.status.phase = Some(Phase::Promoting);
    }

    fn shift_traffic_to_primary(&mut self) {
        let canary = self.old.canary_weight;
        match self.settings.step_weight_promotion {
            Some(step) if !canary.is_zero() => {
                let canary = canary.saturating_sub(step);
                self.events.push(event::advance_primary_weight(
                    &self.names,
                    canary.complement(),
                ));
                if canary.is_zero() {
                    self.reset_progress(Phase::Finalising);
                } else {
                    self.status.canary_weight = canary;
                }
                self.set_route(false);
            }
            _ => {
                self.events.push(event::routing_all_to_primary());
                self.reset_progress(Phase::Finalising);
                self.set_route(true);
            }
        }
    }

    fn finalise(&mut self) {
        self.actions.push(Action::ScaleCanaryToZero);
        self.status.last_promoted_spec = self.status.last_applied_spec.clone();
        self.reset_progress(Phase::Succeeded);
        self.post_rollout_hooks(Phase::Succeeded);
        self.events.push(event::promotion_completed(&self.names));
        self.notify(
            Severity::Info,
            "Canary analysis completed successfully, promotion finished.".to_owned(),
        );
    }

    fn promote_without_analysis(&mut self) {
        self.status.canary_weight = Weight::ZERO;
        self.status.mirrored = false;
        self.set_route(true);
        self.events.push(event::copying_template(&self.names));
        self.actions.push(Action::PromotePrimary);
        self.actions.push(Action::ScaleCanaryToZero);
        self.status.last_promoted_spec = self.status.last_applied_spec.clone();
        self.reset_progress(Phase::Succeeded);
        self.events
            .push(event::promotion_skipped_analysis(&self.names));
        self.notify(
            Severity::Info,
            "Canary analysis was skipped, promotion finished.".to_owned(),
        );
    }

    // ----- rollback --------------------------------------------------------------------------

    fn rollback(&mut self) {
        let failed_checks = self.status.failed_checks;
        if failed_checks >= self.settings.threshold {
            self.events
                .push(event::threshold_reached(&self.names, failed_checks));
            self.notify(
                Severity::Error,
                format!("Failed checks threshold reached {failed_checks}"),
            );
        }
        self.reset_progress(Phase::Failed);
        self.set_route(true);
        self.events.push(event::canary_failed(&self.names));
        self.actions.push(Action::ScaleCanaryToZero);
        self.post_rollout_hooks(Phase::Failed);
    }

    // ----- helpers ---------------------------------------------------------------------------

    /// The valid hooks of `hook_type`, in spec order.
    fn hooks(&self, hook_type: HookType) -> impl Iterator<Item = &'a Webhook> + use<'a> {
        self.settings
            .webhooks
            .iter()
            .filter(move |hook| hook.hook_type == hook_type)
    }

    /// The result of `hook` for this step, or the need to call it.
    fn hook_result(&self, hook: &Webhook, phase: Phase) -> Asked<&'a HookResult> {
        self.obs.webhooks.get(&hook.index).ok_or_else(|| {
            Need::Webhook(WebhookCall {
                index: hook.index,
                name: hook.name.clone(),
                hook_type: hook.hook_type,
                phase,
            })
        })
    }

    fn post_rollout_hooks(&mut self, phase: Phase) {
        if self.hooks(HookType::PostRollout).next().is_some() {
            self.actions.push(Action::RunPostRolloutHooks { phase });
        }
    }

    fn notify(&mut self, severity: Severity, message: String) {
        self.actions.push(Action::Notify { severity, message });
    }

    fn record_revision(&mut self) {
        self.status.last_applied_spec = Some(self.obs.revision.spec_hash.clone());
        self.status.tracked_configs = Some(self.obs.revision.tracked_configs.clone());
    }

    /// Enters `phase` with no traffic on the canary and the iteration count reset.
    fn reset_progress(&mut self, phase: Phase) {
        self.status.phase = Some(phase);
        self.status.canary_weight = Weight::ZERO;
        self.status.iterations = 0;
        self.status.mirrored = false;
    }

    /// Emits `SetRoute` for the current status if the route changes (or always, if `force`).
    fn set_route(&mut self, force: bool) {
        self.settle_cookies();
        let route = desired_route(self.settings, &self.status);
        if force || route != self.route {
            self.actions.push(Action::SetRoute(route.clone()));
            self.route = route;
        }
    }

    /// Mints the session cookie when a release first routes traffic to the canary, and
    /// retires it (to be expired by the route) when the canary's traffic goes back to zero.
    fn settle_cookies(&mut self) {
        let Some(sa) = &self.settings.session_affinity else {
            return;
        };
        let active = matches!(
            self.status.phase,
            Some(Phase::Progressing | Phase::WaitingPromotion | Phase::Promoting)
        ) && !self.status.canary_weight.is_zero();
        match (&self.status.session_affinity_cookie, active) {
            (None, true) => {
                let token = if self.obs.cookie_token.is_empty() {
                    // No randomness provided: derive a stable value from the revision.
                    crate::webhook::checksum(&self.status)
                } else {
                    self.obs.cookie_token.clone()
                };
                self.status.session_affinity_cookie = Some(format!("{}={token}", sa.cookie_name));
            }
            (Some(_), false) => {
                self.status.previous_session_affinity_cookie =
                    self.status.session_affinity_cookie.take();
            }
            _ => {}
        }
    }

    fn finish(mut self) -> Plan {
        // Safety net: the route always follows the final status.
        self.set_route(false);
        let progressed = self.status.phase != self.old.phase
            || self.status.canary_weight != self.old.canary_weight
            || self.status.iterations != self.old.iterations
            || self.status.failed_checks != self.old.failed_checks
            || self.status.mirrored != self.old.mirrored;
        if progressed || (self.status.last_transition_time.is_none() && self.status.phase.is_some())
        {
            self.status.last_transition_time = Some(self.now);
        }
        if let Some(phase) = self.status.phase {
            self.update_condition(phase);
        }
        Plan {
            needs: None,
            actions: self.actions,
            status: self.status,
            events: self.events,
            requeue_after: self.settings.interval,
        }
    }

    /// Flagger's `Promoted` condition for `phase`.
    fn update_condition(&mut self, phase: Phase) {
        let kind = &self.settings.target_kind;
        let (status, message) = match phase {
            Phase::Initializing => (
                ConditionStatus::Unknown,
                format!("New {kind} detected, starting initialization."),
            ),
            Phase::Initialized => (
                ConditionStatus::True,
                format!("{kind} initialization completed."),
            ),
            Phase::Waiting | Phase::WaitingPromotion => {
                (ConditionStatus::Unknown, "Waiting for approval.".to_owned())
            }
            Phase::Progressing => (
                ConditionStatus::Unknown,
                "New revision detected, progressing canary analysis.".to_owned(),
            ),
            Phase::Promoting => (
                ConditionStatus::Unknown,
                "Canary analysis completed, starting primary rolling update.".to_owned(),
            ),
            Phase::Finalising => (
                ConditionStatus::Unknown,
                "Canary analysis completed, routing all traffic to primary.".to_owned(),
            ),
            Phase::Succeeded => (
                ConditionStatus::True,
                "Canary analysis completed successfully, promotion finished.".to_owned(),
            ),
            Phase::Failed => (
                ConditionStatus::False,
                format!("Canary analysis failed, {kind} scaled to zero."),
            ),
            Phase::Terminating | Phase::Terminated => return,
        };
        let current = self
            .status
            .conditions
            .iter()
            .position(|c| c.condition_type == PROMOTED_CONDITION);
        if let Some(i) = current {
            let existing = &self.status.conditions[i];
            if existing.status == status && existing.reason == phase.as_str() {
                return;
            }
        }
        let last_transition_time = match current.map(|i| &self.status.conditions[i]) {
            Some(existing) if existing.status == status => existing.last_transition_time,
            _ => Some(self.now),
        };
        let condition = CanaryCondition {
            condition_type: PROMOTED_CONDITION.to_owned(),
            status,
            last_update_time: Some(self.now),
            last_transition_time,
            reason: phase.as_str().to_owned(),
            message,
        };
        match current {
            Some(i) => self.status.conditions[i] = condition,
            None => self.status.conditions.push(condition),
        }
    }
}
