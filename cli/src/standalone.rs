//! Standalone mode: the rollout engine without Kubernetes, driving a routing directory that a
//! separately running `serin-proxy --config DIR` watches.
//!
//! The target is a `serin.dev/v1alpha1` `Backend` the operator maintains (say `podinfo`: the
//! addresses of the version to release). The engine manages, in the same directory, what the
//! Kubernetes controller manages in a cluster:
//!
//! | Kubernetes                         | standalone                                         |
//! | ---------------------------------- | -------------------------------------------------- |
//! | Deployment `podinfo` (the canary)  | Backend `podinfo` (operator-owned)                 |
//! | Deployment `podinfo-primary`       | Backend `podinfo-primary`: bootstrap and promotion copy `podinfo`'s endpoints into it |
//! | Service `podinfo-canary`           | Backend `podinfo-canary`: `podinfo`'s endpoints while analysing, none when scaled to zero |
//! | HTTPRoute `podinfo`                | `podinfo-route.yaml`, rewritten at every traffic change |
//! | pod template hash                  | hash of `podinfo`'s spec: changing its endpoints starts a release |
//! | replicas available                 | endpoints accepting TCP connections                |
//! | `Canary.status`                    | a JSON file in the state directory                 |
//!
//! So a release is: point `podinfo` at the new version's addresses. The engine analyses it,
//! shifts traffic step by step, and on success promotes by copying those addresses into
//! `podinfo-primary` and routing all traffic there (or rolls back to the untouched primary).
//! Every file is written atomically (write to a hidden temporary, then rename), so the proxy
//! never reads half a file. The status is written after each step, so the engine can be stopped
//! at any moment and resumes where it was.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kube::api::ObjectMeta;
use serin_proxy::config::{Backend, BackendEndpoint, BackendSpec, ObjectKey, load_path};

use serin_controller::analysis::MetricProvider;
use serin_controller::canary::Canary;
use serin_controller::drive::{Drive, cookie_token};
use serin_controller::error::{Error, Result};
use serin_controller::event::Event;
use serin_controller::httproute::{BackendTarget, RouteTarget, render};
use serin_controller::stage::{Action, Observations, Plan, Readiness, Revision};
use serin_controller::status::CanaryStatus;
use serin_controller::template::MetricTemplateSpec;
use serin_controller::timestamp::Timestamp;
use serin_controller::validation::{Settings, validate};
use serin_controller::webhook::WebhookClient;

/// The rollout engine for one Canary in standalone mode.
pub struct Engine {
    canary: Canary,
    settings: Settings,
    routes: PathBuf,
    state: PathBuf,
    status: CanaryStatus,
    provider: Arc<dyn MetricProvider>,
    webhooks: Arc<dyn WebhookClient>,
    templates: BTreeMap<String, MetricTemplateSpec>,
}

/// What one step did.
#[derive(Debug)]
pub struct StepReport {
    pub plan: Plan,
    /// Post-rollout hook results and other events recorded while applying the plan.
    pub events: Vec<Event>,
}

impl Engine {
    /// An engine for `canary`, routing through the directory `routes` and keeping its status in
    /// `state` (a file; created on the first step, read back on restart).
    pub fn new(
        canary: Canary,
        routes: PathBuf,
        state: PathBuf,
        provider: Arc<dyn MetricProvider>,
        webhooks: Arc<dyn WebhookClient>,
    ) -> Result<Engine> {
        let settings = validate(&canary.spec).map_err(Error::Invalid)?;
        if settings.target_kind != "Backend" {
            return Err(Error::Standalone(format!(
                "spec.targetRef.kind: standalone mode drives a serin.dev/v1alpha1 Backend, got {:?}",
                settings.target_kind
            )));
        }
        let status = match std::fs::read_to_string(&state) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| {
                Error::Standalone(format!("{}: not a Canary status: {e}", state.display()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => CanaryStatus::default(),
            Err(e) => return Err(Error::Standalone(format!("{}: {e}", state.display()))),
        };
        Ok(Engine {
            canary,
            settings,
            routes,
            state,
            status,
            provider,
            webhooks,
            templates: BTreeMap::new(),
        })
    }

    /// Makes `MetricTemplate`s available to the metrics that reference them by name.
    pub fn with_templates(mut self, templates: BTreeMap<String, MetricTemplateSpec>) -> Engine {
        self.templates = templates;
        self
    }

    pub fn status(&self) -> &CanaryStatus {
        &self.status
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn name(&self) -> &str {
        self.canary.metadata.name.as_deref().unwrap_or_default()
    }

    fn namespace(&self) -> &str {
        self.canary
            .metadata
            .namespace
            .as_deref()
            .unwrap_or("default")
    }

    fn target(&self) -> &str {
        &self.settings.target
    }

    /// Checks what the engine cannot run without, before its first step: the routing
    /// directory exists and holds the target Backend. The error names the directory or the
    /// Backend (`spec.targetRef`).
    pub fn check_target(&self) -> Result<()> {
        if !self.routes.is_dir() {
            return Err(Error::Standalone(format!(
                "routing directory {}: not found or not a directory",
                self.routes.display()
            )));
        }
        match self.read_backend(self.target())? {
            Some(_) => Ok(()),
            None => Err(Error::Standalone(format!(
                "Backend {}/{} (spec.targetRef) not found in {}",
                self.namespace(),
                self.target(),
                self.routes.display()
            ))),
        }
    }

    /// Runs one step at `now`: observe, ask the stage machine (running the webhooks and metrics
    /// it asks for), apply its actions to the routing directory, save the status.
    pub async fn step(&mut self, now: Timestamp) -> Result<StepReport> {
        let target = self.read_backend(self.target())?.ok_or_else(|| {
            Error::Standalone(format!(
                "Backend {}/{} (spec.targetRef) not found in {}",
                self.namespace(),
                self.target(),
                self.routes.display()
            ))
        })?;
        let primary = self.read_backend(&format!("{}-primary", self.target()))?;
        let mut obs = Observations {
            name: self.name().to_owned(),
            namespace: self.namespace().to_owned(),
            revision: Revision {
                spec_hash: spec_hash(&target.spec),
                tracked_configs: BTreeMap::new(),
            },
            primary: match &primary {
                Some(p) => readiness(&p.spec.endpoints).await,
                None => Readiness::NotReady {
                    message: "the primary Backend does not exist yet".into(),
                    since: None,
                },
            },
            canary: readiness(&target.spec.endpoints).await,
            webhooks: BTreeMap::new(),
            metrics: None,
            cookie_token: cookie_token(),
        };
        let service = self.service();
        let drive = self.drive(&service);
        let plan = drive
            .plan(&self.canary.spec, &self.status, &mut obs, now)
            .await;
        let mut events = Vec::new();
        let actions = self.drive(&service).actions(&plan);
        for action in &actions {
            self.apply(action, &target.spec, &plan.status, &mut events)
                .await?;
        }
        self.status = plan.status.clone();
        write_atomic(
            &self.state,
            &serde_json::to_string_pretty(&self.status).unwrap_or_default(),
        )?;
        let drive = self.drive(&service);
        for event in plan.events.iter().chain(&events) {
            drive
                .event_hooks(&self.status, event, Timestamp::now())
                .await;
        }
        Ok(StepReport { plan, events })
    }

    /// The apex Service name: `spec.service.name`, else the target's.
    fn service(&self) -> String {
        self.canary.spec.apex_service(self.target())
    }

    fn drive<'a>(&'a self, service: &'a str) -> Drive<'a> {
        Drive {
            name: self.name(),
            namespace: self.namespace(),
            settings: &self.settings,
            service,
            provider: self.provider.as_ref(),
            webhooks: self.webhooks.as_ref(),
            templates: &self.templates,
        }
    }

    async fn apply(
        &self,
        action: &Action,
        target: &BackendSpec,
        status: &CanaryStatus,
        events: &mut Vec<Event>,
    ) -> Result<()> {
        let primary = format!("{}-primary", self.target());
        let canary = format!("{}-canary", self.target());
        match action {
            Action::Bootstrap => {
                if self.read_backend(&primary)?.is_none() {
                    self.write_backend(&primary, target.endpoints.clone())?;
                }
                if self.read_backend(&canary)?.is_none() {
                    self.write_backend(&canary, Vec::new())?;
                }
            }
            Action::SetRoute(route) => {
                let rendered = render(&self.route_target(), route);
                let yaml = serde_yaml_ng::to_string(&rendered)
                    .map_err(|e| Error::Standalone(e.to_string()))?;
                let path = self.routes.join(format!("{}-route.yaml", self.name()));
                let text = format!("# Managed by serin rollout: {route}\n{yaml}");
                // Applied at every step: rewritten only when it differs (a missing or edited
                // file), so the proxy does not reload an unchanged file.
                if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                    write_atomic(&path, &text)?;
                }
            }
            Action::ScaleCanaryUp => self.write_backend(&canary, target.endpoints.clone())?,
            Action::ScaleCanaryToZero => self.write_backend(&canary, Vec::new())?,
            Action::PromotePrimary => self.write_backend(&primary, target.endpoints.clone())?,
            Action::RunPostRolloutHooks { phase } => {
                let service = self.service();
                events.extend(
                    self.drive(&service)
                        .post_rollout_hooks(*phase, status)
                        .await,
                );
            }
            Action::Notify { severity, message } => {
                tracing::info!(canary = self.name(), ?severity, "{message}");
            }
        }
        Ok(())
    }

    fn route_target(&self) -> RouteTarget {
        RouteTarget::for_service(
            self.name().to_owned(),
            self.namespace().to_owned(),
            self.canary.spec.service.as_ref(),
            BackendTarget::backend(format!("{}-primary", self.target())),
            BackendTarget::backend(format!("{}-canary", self.target())),
        )
    }

    fn read_backend(&self, name: &str) -> Result<Option<Backend>> {
        let (objects, _) = load_path(&self.routes).map_err(|e| Error::Standalone(e.to_string()))?;
        let key = ObjectKey::new(self.namespace(), name);
        Ok(objects
            .backends
            .into_iter()
            .map(|b| b.object)
            .find(|b| serin_proxy::config::key_of(b) == key))
    }

    fn write_backend(&self, name: &str, endpoints: Vec<BackendEndpoint>) -> Result<()> {
        let backend = Backend {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(self.namespace().to_owned()),
                ..Default::default()
            },
            spec: BackendSpec { endpoints },
        };
        let yaml =
            serde_yaml_ng::to_string(&backend).map_err(|e| Error::Standalone(e.to_string()))?;
        write_atomic(
            &self.routes.join(format!("{name}.yaml")),
            &format!(
                "# Managed by serin rollout for Canary {}/{}\n{yaml}",
                self.namespace(),
                self.name()
            ),
        )
    }
}

/// A stable hash of a Backend's spec (its endpoints, in order).
fn spec_hash(spec: &BackendSpec) -> String {
    let text = serde_json::to_string(spec).unwrap_or_default();
    let hash = serin_proxy::table::affinity::fnv1a(text.as_bytes());
    format!("{hash:016x}")
}

/// Ready when every endpoint accepts a TCP connection within a second.
async fn readiness(endpoints: &[BackendEndpoint]) -> Readiness {
    if endpoints.is_empty() {
        return Readiness::NotReady {
            message: "the Backend has no endpoints".into(),
            since: None,
        };
    }
    let mut up = 0;
    for e in endpoints {
        let Some(port) = e.port else { continue };
        let connect = tokio::net::TcpStream::connect((e.host.as_str(), port));
        if matches!(
            tokio::time::timeout(Duration::from_secs(1), connect).await,
            Ok(Ok(_))
        ) {
            up += 1;
        }
    }
    if up == endpoints.len() {
        Readiness::Ready
    } else {
        Readiness::NotReady {
            message: format!("{up} of {} endpoints accept connections", endpoints.len()),
            since: None,
        }
    }
}

/// Writes `text` to `path` through a hidden temporary in the same directory and a rename.
pub fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let io = |e: std::io::Error| Error::Standalone(format!("{}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    std::fs::write(&tmp, text).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}
