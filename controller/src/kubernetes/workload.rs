//! What a Canary owns in the cluster, as Flagger names and shapes it: the `<target>-primary`
//! Deployment, the Services `<apex>`, `<apex>-primary` and `<apex>-canary`, and the HTTPRoute
//! `<apex>`; how a Deployment's readiness and revision are read; and the stage machine's
//! actions applied to them.
//!
//! Generated objects are written with server-side apply under one field manager
//! ([`FIELD_MANAGER`]) and owned by the Canary (so deleting it removes them); fields other
//! tools set on them are left alone. The target Deployment is the user's: only its
//! `spec.replicas` is changed (scaled to zero once the primary serves, up for an analysis).

use std::collections::BTreeMap;
use std::hash::Hasher;

use gateway_api::experimental::httproutes::HttpRoute;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{PodTemplateSpec, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::canary::Canary;
use crate::error::{Error, Result};
use crate::httproute::{BackendTarget, RouteTarget, render};
use crate::route::Route;
use crate::stage::{Readiness, Revision};
use crate::timestamp::Timestamp;
use crate::validation::Settings;

use super::configs::TrackedConfigs;

/// The field manager of every write the controller makes.
pub const FIELD_MANAGER: &str = "serin-controller";

/// The primary pod template's annotation that carries the hash of its tracked configs.
pub const CONFIGS_ANNOTATION: &str = "serin.dev/configs-hash";

/// Labels that select a workload's pods, in Flagger's order of preference.
const SELECTOR_LABELS: [&str; 3] = ["app", "name", "app.kubernetes.io/name"];

/// One Canary's objects in the cluster.
pub struct Workload<'a> {
    client: Client,
    canary: &'a Canary,
    settings: &'a Settings,
    namespace: String,
}

impl<'a> Workload<'a> {
    /// The objects of `canary` (whose spec validated to `settings`).
    pub fn new(client: Client, canary: &'a Canary, settings: &'a Settings) -> Workload<'a> {
        Workload {
            client,
            namespace: canary.namespace().unwrap_or_else(|| "default".into()),
            canary,
            settings,
        }
    }

    /// The target Deployment's name.
    pub fn target(&self) -> &str {
        &self.settings.target
    }

    /// `<target>-primary`.
    pub fn primary(&self) -> String {
        format!("{}-primary", self.target())
    }

    /// The apex Service's name: `spec.service.name`, else the target's.
    pub fn apex(&self) -> String {
        self.canary.spec.apex_service(self.target())
    }

    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn kube_error(&self, what: &str, kind: &str, name: &str) -> impl FnOnce(kube::Error) -> Error {
        let what = format!("{what} {kind} {}/{name}", self.namespace);
        move |source| Error::Kube {
            what,
            source: Box::new(source),
        }
    }

    /// The target Deployment; an error naming `spec.targetRef` when it does not exist.
    pub async fn target_deployment(&self) -> Result<Deployment> {
        self.deployments()
            .get_opt(self.target())
            .await
            .map_err(self.kube_error("reading", "Deployment", self.target()))?
            .ok_or_else(|| {
                Error::Cluster(format!(
                    "spec.targetRef: Deployment {}/{} not found",
                    self.namespace,
                    self.target()
                ))
            })
    }

    /// The primary Deployment, if it exists.
    pub async fn primary_deployment(&self) -> Result<Option<Deployment>> {
        self.deployments()
            .get_opt(&self.primary())
            .await
            .map_err(self.kube_error("reading", "Deployment", &self.primary()))
    }

    /// The Canary as the owner of generated objects.
    fn owner(&self) -> Result<OwnerReference> {
        self.canary.controller_owner_ref(&()).ok_or_else(|| {
            Error::Cluster(format!(
                "Canary {}/{} has no uid yet",
                self.namespace,
                self.canary.name_any()
            ))
        })
    }

    async fn apply<K>(
        &self,
        api: Api<K>,
        name: &str,
        kind: &str,
        object: serde_json::Value,
    ) -> Result<()>
    where
        K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        api.patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&object),
        )
        .await
        .map_err(self.kube_error("applying", kind, name))?;
        Ok(())
    }

    /// Creates the primary Deployment (and its copies of the tracked configs) from the
    /// target's pod template when it does not exist (an existing one keeps its template: it is
    /// what is serving), and applies the Services.
    pub async fn bootstrap(&self, target: &Deployment, configs: &TrackedConfigs) -> Result<()> {
        let (key, value) = selector_label(target)?;
        if self.primary_deployment().await?.is_none() {
            configs
                .copy_to_primary(&self.client, &self.namespace, &self.owner()?)
                .await?;
            let replicas = target
                .spec
                .as_ref()
                .and_then(|s| s.replicas)
                .filter(|r| *r > 0)
                .unwrap_or(1);
            self.apply_primary(target, configs, &key, &value, replicas)
                .await?;
        }
        self.apply_primary_autoscaler().await?;
        let target_port = self.target_port();
        let primary_value = format!("{value}-primary");
        for (name, selected) in [
            (self.apex(), &primary_value),
            (format!("{}-primary", self.apex()), &primary_value),
            (format!("{}-canary", self.apex()), &value),
        ] {
            self.apply_service(&name, &key, selected, &target_port, true)
                .await?;
        }
        Ok(())
    }

    /// Applies the ClusterIP Service `name` selecting `key=selected` on the Canary's port;
    /// `owned`: owned by the Canary (else released: a reverted apex outlives it).
    async fn apply_service(
        &self,
        name: &str,
        key: &str,
        selected: &str,
        target_port: &IntOrString,
        owned: bool,
    ) -> Result<()> {
        let service = Service {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(self.namespace.clone()),
                labels: Some(BTreeMap::from([(key.to_owned(), name.to_owned())])),
                owner_references: if owned {
                    Some(vec![self.owner()?])
                } else {
                    None
                },
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("ClusterIP".into()),
                selector: Some(BTreeMap::from([(key.to_owned(), selected.to_owned())])),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: self.settings_port(),
                    target_port: Some(target_port.clone()),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: None,
        };
        let mut object =
            serde_json::to_value(&service).map_err(|e| Error::Cluster(e.to_string()))?;
        object["apiVersion"] = json!("v1");
        object["kind"] = json!("Service");
        self.apply(
            Api::<Service>::namespaced(self.client.clone(), &self.namespace),
            name,
            "Service",
            object,
        )
        .await
    }

    /// `spec.service.targetPort`, else the port.
    fn target_port(&self) -> IntOrString {
        let port = self.settings_port();
        self.canary
            .spec
            .service
            .as_ref()
            .and_then(|s| s.target_port.clone())
            .map_or(IntOrString::Int(port), |p| match p {
                crate::canary::IntOrString::Int(n) => {
                    IntOrString::Int(i32::try_from(n).unwrap_or(port))
                }
                crate::canary::IntOrString::String(name) => IntOrString::String(name),
            })
    }

    /// Undoes the Canary before it is deleted (`spec.revertOnDeletion`): the target is scaled
    /// back to the primary's replicas; once it is ready, the apex Service selects its pods and
    /// the HTTPRoute sends everything to the apex Service, both released from the Canary so
    /// they outlive it (the ingress keeps serving the target). What the Canary still owns
    /// (primary Deployment, `-primary` and `-canary` Services, config copies) is then removed
    /// by the garbage collector. True once done; false while the target is not ready yet, or
    /// the route's parents have not yet accepted its last change (not waited for once
    /// `patience_over`: an implementation may not write route status at all).
    pub async fn revert(&self, patience_over: bool) -> Result<bool> {
        let target = match self.target_deployment().await {
            Ok(target) => target,
            // Nothing to revert to.
            Err(Error::Cluster(_)) => return Ok(true),
            Err(e) => return Err(e),
        };
        if target.spec.as_ref().and_then(|s| s.replicas) == Some(0) {
            let replicas = self
                .primary_deployment()
                .await?
                .and_then(|d| d.spec?.replicas)
                .filter(|r| *r > 0)
                .unwrap_or(1);
            self.scale_target(replicas).await?;
            return Ok(false);
        }
        if !matches!(readiness(&target), Readiness::Ready) {
            return Ok(false);
        }
        let (key, value) = selector_label(&target)?;
        self.apply_service(&self.apex(), &key, &value, &self.target_port(), false)
            .await?;
        let port = self.settings_port();
        let apex = BackendTarget::service(self.apex(), port);
        let target = RouteTarget::for_service(
            self.apex(),
            self.namespace.clone(),
            self.canary.spec.service.as_ref(),
            apex.clone(),
            apex,
        );
        let mut rendered: HttpRoute = render(&target, &Route::primary_only());
        for rule in rendered.spec.rules.iter_mut().flatten() {
            if let Some(refs) = &mut rule.backend_refs {
                refs.retain(|r| r.weight != Some(0));
            }
        }
        let object = serde_json::to_value(&rendered).map_err(|e| Error::Cluster(e.to_string()))?;
        let routes = Api::<HttpRoute>::namespaced(self.client.clone(), &self.namespace);
        self.apply(routes.clone(), &self.apex(), "HTTPRoute", object)
            .await?;
        if patience_over {
            return Ok(true);
        }
        // The primary goes once the Canary does: first let the Gateway serve the new route.
        let route = routes.get(&self.apex()).await.map_err(self.kube_error(
            "reading",
            "HTTPRoute",
            &self.apex(),
        ))?;
        Ok(accepted(&route))
    }

    fn settings_port(&self) -> i32 {
        self.canary
            .spec
            .service
            .as_ref()
            .and_then(|s| s.port)
            .and_then(|p| i32::try_from(p).ok())
            .unwrap_or(80)
    }

    /// Applies the primary Deployment: the target's pod template with the selector label's
    /// value `<v>-primary` and the tracked configs' primary copies, `replicas` replicas.
    async fn apply_primary(
        &self,
        target: &Deployment,
        configs: &TrackedConfigs,
        key: &str,
        value: &str,
        replicas: i32,
    ) -> Result<()> {
        let spec = target.spec.clone().unwrap_or_default();
        let primary_value = format!("{value}-primary");
        let mut template: PodTemplateSpec = spec.template.clone();
        if let Some(pod) = &mut template.spec {
            configs.rewrite_for_primary(pod);
        }
        // The copies change under the same names: the hash of their content in the template
        // rolls the primary's pods when they do (a pod reads its env only when it starts).
        if !configs.configs.is_empty() {
            template
                .metadata
                .get_or_insert_with(Default::default)
                .annotations
                .get_or_insert_with(Default::default)
                .insert(CONFIGS_ANNOTATION.to_owned(), configs.digest());
        }
        let mut labels = template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        labels.insert(key.to_owned(), primary_value.clone());
        template
            .metadata
            .get_or_insert_with(Default::default)
            .labels = Some(labels);
        let mut meta_labels = target.metadata.labels.clone().unwrap_or_default();
        meta_labels.insert(key.to_owned(), primary_value.clone());
        let primary = Deployment {
            metadata: ObjectMeta {
                name: Some(self.primary()),
                namespace: Some(self.namespace.clone()),
                labels: Some(meta_labels),
                owner_references: Some(vec![self.owner()?]),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                selector: LabelSelector {
                    match_labels: Some(BTreeMap::from([(key.to_owned(), primary_value)])),
                    match_expressions: None,
                },
                template,
                strategy: spec.strategy.clone(),
                min_ready_seconds: spec.min_ready_seconds,
                progress_deadline_seconds: spec.progress_deadline_seconds,
                revision_history_limit: spec.revision_history_limit,
                paused: None,
            }),
            status: None,
        };
        let mut object =
            serde_json::to_value(&primary).map_err(|e| Error::Cluster(e.to_string()))?;
        object["apiVersion"] = json!("apps/v1");
        object["kind"] = json!("Deployment");
        self.apply(self.deployments(), &self.primary(), "Deployment", object)
            .await
    }

    /// Applies `<hpa>-primary`, a copy of the target's HorizontalPodAutoscaler
    /// (`spec.autoscalerRef`) that scales the primary, with `primaryScalerReplicas` as its
    /// bounds when set. The target's own autoscaler is left alone: at zero replicas it is
    /// inactive, as Kubernetes leaves a target scaled to zero. A `ScaledObject` reference
    /// (KEDA) is accepted and not copied.
    pub async fn apply_primary_autoscaler(&self) -> Result<()> {
        let Some(reference) = &self.canary.spec.autoscaler_ref else {
            return Ok(());
        };
        if reference
            .kind
            .as_deref()
            .is_some_and(|k| k != "HorizontalPodAutoscaler")
        {
            return Ok(());
        }
        let name = reference.name.clone().unwrap_or_default();
        let api = Api::<HorizontalPodAutoscaler>::namespaced(self.client.clone(), &self.namespace);
        let hpa = api
            .get_opt(&name)
            .await
            .map_err(self.kube_error("reading", "HorizontalPodAutoscaler", &name))?
            .ok_or_else(|| {
                Error::Cluster(format!(
                    "spec.autoscalerRef: HorizontalPodAutoscaler {}/{name} not found",
                    self.namespace
                ))
            })?;
        let mut spec = hpa.spec.unwrap_or_default();
        spec.scale_target_ref.name = self.primary();
        if let Some(bounds) = &reference.primary_scaler_replicas {
            if let Some(min) = bounds.min_replicas {
                spec.min_replicas = Some(min);
            }
            if let Some(max) = bounds.max_replicas {
                spec.max_replicas = max;
            }
        }
        let primary_name = format!("{name}-primary");
        let primary = HorizontalPodAutoscaler {
            metadata: ObjectMeta {
                name: Some(primary_name.clone()),
                namespace: Some(self.namespace.clone()),
                labels: hpa.metadata.labels.clone(),
                owner_references: Some(vec![self.owner()?]),
                ..Default::default()
            },
            spec: Some(spec),
            status: None,
        };
        let mut object =
            serde_json::to_value(&primary).map_err(|e| Error::Cluster(e.to_string()))?;
        object["apiVersion"] = json!("autoscaling/v2");
        object["kind"] = json!("HorizontalPodAutoscaler");
        self.apply(api, &primary_name, "HorizontalPodAutoscaler", object)
            .await
    }

    /// Copies the target's pod template and tracked configs to the primary, keeping the
    /// primary's replicas.
    pub async fn promote(&self, target: &Deployment, configs: &TrackedConfigs) -> Result<()> {
        let (key, value) = selector_label(target)?;
        let replicas = self
            .primary_deployment()
            .await?
            .and_then(|d| d.spec?.replicas)
            .unwrap_or(1);
        configs
            .copy_to_primary(&self.client, &self.namespace, &self.owner()?)
            .await?;
        self.apply_primary(target, configs, &key, &value, replicas)
            .await?;
        self.apply_primary_autoscaler().await
    }

    /// Sets the target's replicas (a merge patch of `spec.replicas` only).
    pub async fn scale_target(&self, replicas: i32) -> Result<()> {
        self.deployments()
            .patch(
                self.target(),
                &PatchParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..PatchParams::default()
                },
                &Patch::Merge(json!({"spec": {"replicas": replicas}})),
            )
            .await
            .map_err(self.kube_error("scaling", "Deployment", self.target()))?;
        Ok(())
    }

    /// Applies the HTTPRoute `<apex>` for `route`.
    pub async fn set_route(&self, route: &Route) -> Result<()> {
        let port = self.settings_port();
        let target = RouteTarget::for_service(
            self.apex(),
            self.namespace.clone(),
            self.canary.spec.service.as_ref(),
            BackendTarget::service(format!("{}-primary", self.apex()), port),
            BackendTarget::service(format!("{}-canary", self.apex()), port),
        );
        let mut rendered: HttpRoute = render(&target, route);
        rendered.metadata.owner_references = Some(vec![self.owner()?]);
        let object = serde_json::to_value(&rendered).map_err(|e| Error::Cluster(e.to_string()))?;
        self.apply(
            Api::<HttpRoute>::namespaced(self.client.clone(), &self.namespace),
            &self.apex(),
            "HTTPRoute",
            object,
        )
        .await
    }
}

/// Whether every parent in the route's status has accepted its current generation.
fn accepted(route: &HttpRoute) -> bool {
    let generation = route.metadata.generation.unwrap_or(0);
    let parents = route
        .status
        .as_ref()
        .map(|s| &s.parents[..])
        .unwrap_or_default();
    !parents.is_empty()
        && parents.iter().all(|p| {
            p.conditions.iter().any(|c| {
                c.type_ == "Accepted"
                    && c.status == "True"
                    && c.observed_generation.unwrap_or(0) >= generation
            })
        })
}

/// The label that selects `deployment`'s pods (the first of `app`, `name`,
/// `app.kubernetes.io/name` in its selector) and its value.
pub fn selector_label(deployment: &Deployment) -> Result<(String, String)> {
    let labels = deployment
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.as_ref());
    SELECTOR_LABELS
        .iter()
        .find_map(|key| Some(((*key).to_owned(), labels?.get(*key)?.clone())))
        .ok_or_else(|| {
            Error::Cluster(format!(
                "Deployment {}: spec.selector.matchLabels has none of the labels {} (one is \
                 needed to tell primary pods from canary pods)",
                deployment.name_any(),
                SELECTOR_LABELS.join(", ")
            ))
        })
}

/// The revision of a Deployment: a hash of its pod template, and the hashes of the configs it
/// tracks.
pub fn revision(deployment: &Deployment, configs: &TrackedConfigs) -> Revision {
    let template = deployment.spec.as_ref().map(|s| &s.template);
    let text = serde_json::to_string(&template).unwrap_or_default();
    let mut hasher = fnv::FnvHasher::default();
    hasher.write(text.as_bytes());
    Revision {
        spec_hash: format!("{:016x}", hasher.finish()),
        tracked_configs: configs.hashes(),
    }
}

/// Whether a Deployment has finished rolling out, with Flagger's messages.
pub fn readiness(deployment: &Deployment) -> Readiness {
    let Some(status) = deployment.status.as_ref() else {
        return Readiness::not_ready("waiting for the Deployment's status");
    };
    let wanted = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let generation = deployment.metadata.generation.unwrap_or(0);
    let available_since = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Available" && c.status == "False")
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| Timestamp::from_unix_seconds(t.0.as_second()));
    let not_ready = |message: String| Readiness::NotReady {
        message,
        since: available_since,
    };
    if status.observed_generation.unwrap_or(0) < generation {
        return not_ready("waiting for the Deployment's spec to be observed".into());
    }
    if let Some(c) = status.conditions.iter().flatten().find(|c| {
        c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    }) {
        return not_ready(format!(
            "deployment {} exceeded its progress deadline: {}",
            deployment.name_any(),
            c.message.clone().unwrap_or_default()
        ));
    }
    let updated = status.updated_replicas.unwrap_or(0);
    let replicas = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if updated < wanted {
        return not_ready(format!(
            "waiting for rollout to finish: {updated} of {wanted} new replicas have been updated"
        ));
    }
    if replicas > updated {
        return not_ready(format!(
            "waiting for rollout to finish: {} old replicas are pending termination",
            replicas - updated
        ));
    }
    if available < updated {
        return not_ready(format!(
            "waiting for rollout to finish: {available} of {updated} updated replicas are available"
        ));
    }
    Readiness::Ready
}
