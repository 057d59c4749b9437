//! serin-controller's Kubernetes adapter: a kube-runtime `Controller` over `Canary` resources.
//!
//! Each reconcile is one step of the rollout engine: observe the target and primary
//! Deployments, let the pure stage machine decide ([`crate::stage::step`], through the shared
//! [`crate::drive`] loop that runs the webhooks and metric checks it asks for), apply its
//! actions to the cluster ([`workload`]), then write `Canary.status` (only when it changed) and
//! record its events as Kubernetes Events. All state is in `Canary.status`, so the controller
//! can stop at any moment and resume; every action is idempotent (applying a step twice has
//! the effect of once). The next step is requeued after the analysis interval; changes to the
//! Canary, its target or its primary Deployment reconcile at once.

pub mod admin;
pub mod configs;
pub mod discovery;
pub mod lease;
pub mod workload;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::events::v1::Event as KubeEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, Patch, PatchParams};
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use crate::analysis::MetricProvider;
use crate::canary::Canary;
use crate::drive::{Drive, cookie_token};
use crate::error::{Error, Result};
use crate::event::{Event, EventType};
use crate::stage::{Action, Observations, Readiness, wait_before_step};
use crate::status::{CanaryCondition, CanaryStatus, ConditionStatus};
use crate::timestamp::Timestamp;
use crate::validation::validate;
use crate::webhook::WebhookClient;

use self::admin::{Admin, CanaryLabels};
use self::configs::{ConfigKind, TrackedConfigs};
use self::workload::{FIELD_MANAGER, Workload, readiness, revision};

/// What every reconcile shares.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Metric providers (built-in: the proxies' `/metrics`; Prometheus).
    pub provider: Arc<dyn MetricProvider>,
    /// Webhook client.
    pub webhooks: Arc<dyn WebhookClient>,
    /// `reportingInstance` of the Events it records (the pod name, else the host name).
    pub instance: String,
    /// Only Canaries of this namespace, when set (else every namespace).
    pub namespace: Option<String>,
    /// The configs each Canary's target tracks (`configmap/<name>`), as its last reconcile
    /// read them: a change to one of them reconciles the Canary.
    tracked: Mutex<HashMap<ObjectRef<Canary>, BTreeSet<String>>>,
    /// Metrics and health.
    pub admin: Arc<Admin>,
}

impl Context {
    /// A context for `client`.
    pub fn new(
        client: Client,
        provider: Arc<dyn MetricProvider>,
        webhooks: Arc<dyn WebhookClient>,
    ) -> Context {
        let instance = std::env::var("POD_NAME")
            .or_else(|_| std::fs::read_to_string("/proc/sys/kernel/hostname"))
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| FIELD_MANAGER.to_owned());
        Context {
            instance,
            namespace: None,
            tracked: Mutex::default(),
            admin: Arc::new(Admin::new()),
            client,
            provider,
            webhooks,
        }
    }
}

impl Context {
    /// Reports to `admin`.
    pub fn with_admin(mut self, admin: Arc<Admin>) -> Context {
        self.admin = admin;
        self
    }

    /// Limits the controller to the Canaries of `namespace`.
    pub fn in_namespace(mut self, namespace: Option<String>) -> Context {
        self.namespace = namespace;
        self
    }

    fn track(&self, canary: &Canary, keys: BTreeSet<String>) {
        let mut tracked = self.tracked.lock().unwrap_or_else(|e| e.into_inner());
        let key = ObjectRef::from_obj(canary);
        if keys.is_empty() {
            tracked.remove(&key);
        } else {
            tracked.insert(key, keys);
        }
    }

    /// The Canaries of `namespace` whose targets track the config `kind`/`name`.
    fn tracking(
        &self,
        kind: ConfigKind,
        namespace: Option<String>,
        name: &str,
    ) -> Vec<ObjectRef<Canary>> {
        let key = format!("{}/{name}", kind.key_prefix());
        let tracked = self.tracked.lock().unwrap_or_else(|e| e.into_inner());
        tracked
            .iter()
            .filter(|(canary, keys)| canary.namespace == namespace && keys.contains(&key))
            .map(|(canary, _)| canary.clone())
            .collect()
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match &self.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }
}

/// Runs the controller until SIGTERM/SIGINT.
pub async fn run(context: Arc<Context>) {
    let canaries = context.api::<Canary>();
    let controller = Controller::new(canaries, watcher::Config::default());
    let store = controller.store();
    tokio::spawn({
        let store = store.clone();
        let admin = context.admin.clone();
        async move {
            // Polled again and again: the store's readiness wakes only its last waiter, and
            // the controller's own runner waits on it too.
            loop {
                let wait = store.wait_until_ready();
                match tokio::time::timeout(Duration::from_millis(500), wait).await {
                    Ok(Ok(())) => {
                        admin
                            .synced
                            .store(true, std::sync::atomic::Ordering::Relaxed);
                        return;
                    }
                    Ok(Err(_)) => return,
                    Err(_) => {}
                }
            }
        }
    });
    let counted = store.clone();
    controller
        .owns(context.api::<Deployment>(), watcher::Config::default())
        // A change to a target Deployment (`kubectl set image`) reconciles its Canaries.
        .watches(
            context.api::<Deployment>(),
            watcher::Config::default(),
            move |deployment| {
                let namespace = deployment.namespace();
                let name = deployment.name_any();
                store
                    .state()
                    .into_iter()
                    .filter(|c| c.namespace() == namespace)
                    .filter(|c| {
                        c.spec.target_ref.as_ref().and_then(|t| t.name.as_deref())
                            == Some(name.as_str())
                    })
                    .map(|c| ObjectRef::from_obj(&*c))
                    .collect::<Vec<_>>()
            },
        )
        // A change to a tracked ConfigMap or Secret reconciles the Canaries tracking it.
        .watches(context.api::<ConfigMap>(), watcher::Config::default(), {
            let context = context.clone();
            move |config| {
                context.tracking(
                    ConfigKind::ConfigMap,
                    config.namespace(),
                    &config.name_any(),
                )
            }
        })
        .watches(context.api::<Secret>(), watcher::Config::default(), {
            let context = context.clone();
            move |secret| {
                context.tracking(ConfigKind::Secret, secret.namespace(), &secret.name_any())
            }
        })
        .shutdown_on_signal()
        .run(reconcile, error_policy, context.clone())
        .for_each(|result| {
            let admin = context.admin.clone();
            let counted = counted.clone();
            async move {
                if let Err(e) = result {
                    warn!("reconcile failed: {e}");
                }
                let canaries = counted.state();
                admin.count(
                    canaries
                        .iter()
                        .filter_map(|c| c.metadata.namespace.as_deref()),
                );
            }
        })
        .await;
}

fn error_policy(canary: Arc<Canary>, error: &Error, context: Arc<Context>) -> Requeue {
    context.admin.error(error.metric_label());
    warn!(
        namespace = canary.namespace().unwrap_or_default(),
        name = canary.name_any(),
        kind = error.metric_label(),
        "{error}"
    );
    Requeue::requeue(Duration::from_secs(5))
}

/// One step for one Canary, timed and recorded in the controller's metrics.
async fn reconcile(canary: Arc<Canary>, context: Arc<Context>) -> Result<Requeue> {
    let started = std::time::Instant::now();
    let labels = CanaryLabels {
        namespace: canary.namespace().unwrap_or_default(),
        name: canary.name_any(),
    };
    let result = step(&canary, &context).await;
    match &result {
        Ok((_, Some(status))) => {
            context
                .admin
                .observe(&labels, status, started.elapsed().as_secs_f64());
        }
        Ok((_, None)) if canary.metadata.deletion_timestamp.is_some() => {
            context.admin.forget(&labels);
        }
        _ => {}
    }
    result.map(|(requeue, _)| requeue)
}

/// One step for one Canary: the requeue, and the status it left when it took one.
async fn step(canary: &Canary, context: &Context) -> Result<(Requeue, Option<CanaryStatus>)> {
    let name = canary.name_any();
    let namespace = canary.namespace().unwrap_or_else(|| "default".into());
    let status = canary.status.clone().unwrap_or_default();
    let now = Timestamp::now();
    if let Some(requeue) = finalize(canary, context).await? {
        return Ok((requeue, None));
    }
    let settings = match validate(&canary.spec) {
        Ok(settings) => settings,
        Err(errors) => {
            // Nothing in the cluster changes; the event and the `Valid` condition name the
            // fields.
            let event = crate::event::invalid_spec(&errors.to_string());
            let name = format!(
                "{}.invalid-{}",
                canary.name_any(),
                canary.metadata.generation.unwrap_or(0)
            );
            publish(context, canary, &event, &name).await;
            let mut invalid = status.clone();
            set_valid(&mut invalid, Some(&errors.to_string()), now);
            if invalid != status {
                write_status(&context.client, canary, &invalid).await?;
            }
            return Ok((Requeue::await_change(), None));
        }
    };
    // Woken early (a watch event, our own status write): an analysis keeps its interval.
    if let Some(wait) = wait_before_step(&settings, &status, now) {
        return Ok((Requeue::requeue(wait), None));
    }
    let world = Workload::new(context.client.clone(), canary, &settings);
    let target = world.target_deployment().await?;
    let configs = match target.spec.as_ref().and_then(|s| s.template.spec.as_ref()) {
        Some(pod) => TrackedConfigs::read(&context.client, &namespace, pod).await?,
        None => TrackedConfigs::default(),
    };
    context.track(canary, configs.keys());
    let primary = world.primary_deployment().await?;
    let mut obs = Observations {
        name: name.clone(),
        namespace: namespace.clone(),
        revision: revision(&target, &configs),
        primary: primary.as_ref().map_or_else(
            || Readiness::not_ready("the primary Deployment does not exist yet"),
            readiness,
        ),
        canary: readiness(&target),
        webhooks: BTreeMap::new(),
        metrics: None,
        cookie_token: cookie_token(),
    };
    let templates = BTreeMap::new();
    let apex = world.apex();
    let drive = Drive {
        name: &name,
        namespace: &namespace,
        settings: &settings,
        service: &apex,
        provider: context.provider.as_ref(),
        webhooks: context.webhooks.as_ref(),
        templates: &templates,
    };
    let plan = drive.plan(&canary.spec, &status, &mut obs, now).await;
    let mut events = plan.events.clone();
    for action in &drive.actions(&plan) {
        match action {
            Action::Bootstrap => world.bootstrap(&target, &configs).await?,
            Action::SetRoute(route) => world.set_route(route).await?,
            Action::ScaleCanaryUp => {
                if target.spec.as_ref().and_then(|s| s.replicas) == Some(0) {
                    world.scale_target(1).await?;
                }
            }
            Action::ScaleCanaryToZero => world.scale_target(0).await?,
            Action::PromotePrimary => world.promote(&target, &configs).await?,
            Action::RunPostRolloutHooks { phase } => {
                events.extend(drive.post_rollout_hooks(*phase, &plan.status).await);
            }
            Action::Notify { severity, message } => {
                info!(%namespace, %name, ?severity, "{message}");
            }
        }
    }
    if let Some(pause) = pause_before_status() {
        tokio::time::sleep(pause).await;
    }
    // Events before the status: a step cut short by a crash is taken again from the old
    // status, and its events, named after the step, are not recorded twice.
    for (index, event) in events.iter().enumerate() {
        info!(%namespace, %name, "{}", event.message);
        if publish(
            context,
            canary,
            event,
            &event_name(canary, &plan.status, index),
        )
        .await
        {
            drive.event_hooks(&plan.status, event, now).await;
        }
    }
    let mut new_status = plan.status.clone();
    set_valid(&mut new_status, None, now);
    if new_status != status {
        write_status(&context.client, canary, &new_status).await?;
    }
    Ok((Requeue::requeue(plan.requeue_after), Some(new_status)))
}

/// Fault injection for crash tests: `SERIN_CONTROLLER_PAUSE_BEFORE_STATUS=<milliseconds>`
/// makes every step that changed the cluster wait that long before it records its events
/// and status, widening the window in which a crash leaves the cluster one step ahead of
/// `Canary.status` (the end-to-end crash test kills the controller inside it). Read once;
/// unset (always, outside tests) it costs nothing.
fn pause_before_status() -> Option<Duration> {
    static PAUSE: std::sync::OnceLock<Option<Duration>> = std::sync::OnceLock::new();
    *PAUSE.get_or_init(|| {
        std::env::var("SERIN_CONTROLLER_PAUSE_BEFORE_STATUS")
            .ok()?
            .parse()
            .ok()
            .map(Duration::from_millis)
    })
}

/// The finalizer a Canary carries while `spec.revertOnDeletion` is set.
pub const FINALIZER: &str = "serin.dev/revert-on-deletion";

/// Keeps [`FINALIZER`] in step with `spec.revertOnDeletion`, and reverts a Canary being
/// deleted that carries it ([`Workload::revert`]) before letting it go. `Some`: the reconcile
/// ends here (the Canary is being deleted, or its finalizers just changed).
async fn finalize(canary: &Canary, context: &Context) -> Result<Option<Requeue>> {
    let finalizers = canary.finalizers();
    let carries = finalizers.iter().any(|f| f == FINALIZER);
    let deleting = canary.metadata.deletion_timestamp.is_some();
    let wanted = canary.spec.revert_on_deletion && !deleting;
    if deleting
        && carries
        && let Ok(settings) = validate(&canary.spec)
    {
        let world = Workload::new(context.client.clone(), canary, &settings);
        let since = canary
            .metadata
            .deletion_timestamp
            .as_ref()
            .map_or(0, |t| t.0.as_second());
        let patience_over = Timestamp::now().unix_seconds() - since > 30;
        if !world.revert(patience_over).await? {
            return Ok(Some(Requeue::requeue(Duration::from_secs(2))));
        }
        let event = Event::normal(format!(
            "Canary {}.{} deleted: {} serves again",
            canary.name_any(),
            canary.namespace().unwrap_or_default(),
            settings.target
        ));
        publish(
            context,
            canary,
            &event,
            &format!("{}.reverted", canary.name_any()),
        )
        .await;
    }
    if carries == wanted {
        return Ok(deleting.then(Requeue::await_change));
    }
    let mut list: Vec<String> = finalizers
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    if wanted {
        list.push(FINALIZER.to_owned());
    }
    let namespace = canary.namespace().unwrap_or_default();
    let name = canary.name_any();
    // The resourceVersion makes the write conditional: another writer's finalizer is never
    // lost to a stale list.
    Api::<Canary>::namespaced(context.client.clone(), &namespace)
        .patch(
            &name,
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PatchParams::default()
            },
            &Patch::Merge(json!({"metadata": {
                "finalizers": list,
                "resourceVersion": canary.resource_version(),
            }})),
        )
        .await
        .map_err(|source| Error::Kube {
            what: format!("updating the finalizers of Canary {namespace}/{name}"),
            source: Box::new(source),
        })?;
    Ok(Some(Requeue::await_change()))
}

/// The name of the `index`th Event of the step that led to `status`: the same for the same
/// step of the same release (revision, phase, weight, iterations, failed checks), so a step
/// taken again after a crash records nothing twice. A step that changes nothing (waiting for a
/// rollout) records its message once, not at every interval.
fn event_name(canary: &Canary, status: &CanaryStatus, index: usize) -> String {
    let key = format!(
        "{}/{}/{:?}/{}/{}/{}/{}/{index}",
        canary.uid().unwrap_or_default(),
        status.last_applied_spec.as_deref().unwrap_or_default(),
        status.phase,
        status.canary_weight,
        status.iterations,
        status.failed_checks,
        status.mirrored,
    );
    let mut hasher = fnv::FnvHasher::default();
    std::hash::Hasher::write(&mut hasher, key.as_bytes());
    format!(
        "{}.{:016x}",
        canary.name_any(),
        std::hash::Hasher::finish(&hasher)
    )
}

pub use serin_api::names::VALID_CONDITION;

fn set_valid(status: &mut CanaryStatus, problems: Option<&str>, now: crate::timestamp::Timestamp) {
    let previous = status
        .conditions
        .iter()
        .position(|c| c.condition_type == VALID_CONDITION);
    match (problems, previous) {
        (None, Some(i)) => {
            status.conditions.remove(i);
        }
        (None, None) => {}
        (Some(message), previous) => {
            let condition = CanaryCondition {
                condition_type: VALID_CONDITION.into(),
                status: ConditionStatus::False,
                last_update_time: Some(now),
                last_transition_time: Some(now),
                reason: serin_api::names::INVALID_SPEC.into(),
                message: message.to_owned(),
            };
            match previous {
                Some(i) if status.conditions[i].message == message => {}
                Some(i) => status.conditions[i] = condition,
                None => status.conditions.push(condition),
            }
        }
    }
}

/// Writes `Canary.status` (merge patch of the status subresource).
async fn write_status(client: &Client, canary: &Canary, status: &CanaryStatus) -> Result<()> {
    let namespace = canary.namespace().unwrap_or_default();
    let name = canary.name_any();
    Api::<Canary>::namespaced(client.clone(), &namespace)
        .patch_status(
            &name,
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PatchParams::default()
            },
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .map_err(|source| Error::Kube {
            what: format!("writing the status of Canary {namespace}/{name}"),
            source: Box::new(source),
        })?;
    Ok(())
}

/// The `reportingController` of the Events the controller records.
pub const REPORTING_CONTROLLER: &str = "serin.dev/serin-controller";

/// Records `event` on the Canary as the `events.k8s.io/v1` Event `name` (what `kubectl describe
/// canary` and `kubectl get events` list). True when it was recorded now, false when it already
/// was (the same step taken again) or could not be (logged: events are best effort). Each
/// message is its own Event: the engine's messages differ step by step, and a recorder that
/// folds events of the same reason into a series would keep only the first.
async fn publish(context: &Context, canary: &Canary, event: &Event, name: &str) -> bool {
    let namespace = canary.namespace().unwrap_or_else(|| "default".into());
    let now = k8s_openapi::jiff::Timestamp::now();
    let kube_event = KubeEvent {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.clone()),
            ..Default::default()
        },
        event_time: Some(MicroTime(now)),
        type_: Some(
            match event.event_type {
                EventType::Normal => "Normal",
                EventType::Warning => "Warning",
            }
            .into(),
        ),
        reason: Some(event.reason.to_owned()),
        note: Some(event.message.clone()),
        action: Some("Reconcile".into()),
        regarding: Some(canary.object_ref(&())),
        reporting_controller: Some(REPORTING_CONTROLLER.into()),
        reporting_instance: Some(context.instance.clone()),
        ..Default::default()
    };
    match Api::<KubeEvent>::namespaced(context.client.clone(), &namespace)
        .create(&PostParams::default(), &kube_event)
        .await
    {
        Ok(_) => true,
        Err(kube::Error::Api(e)) if e.code == 409 => false,
        Err(e) => {
            warn!("recording event {:?}: {e}", event.message);
            false
        }
    }
}
