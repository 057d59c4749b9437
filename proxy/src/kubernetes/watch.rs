//! One watcher per kind, each feeding a reflector store and signalling changes.
//!
//! Watch errors (the API server restarting, a network break) are logged and retried with
//! kube's default exponential backoff; the stores keep their last contents meanwhile, so the
//! proxy keeps serving the last table. After a reconnect the watcher lists again and the store
//! is replaced atomically, which signals a change.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;

use futures_util::StreamExt;
use gateway_api::experimental::gatewayclasses::GatewayClass;
use gateway_api::experimental::gateways::Gateway;
use gateway_api::experimental::httproutes::HttpRoute;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, reflector::Lookup};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::config::{Backend, SessionAffinity};

/// The reflector stores of every watched kind.
pub struct Stores {
    classes: Store<GatewayClass>,
    gateways: Store<Gateway>,
    routes: Store<HttpRoute>,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    backends: Store<Backend>,
    affinities: Store<SessionAffinity>,
    tasks: Vec<JoinHandle<()>>,
}

/// A consistent-enough view of every store at one moment (each store is read once).
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub classes: Vec<Arc<GatewayClass>>,
    pub gateways: Vec<Arc<Gateway>>,
    pub routes: Vec<Arc<HttpRoute>>,
    pub services: Vec<Arc<Service>>,
    pub slices: Vec<Arc<EndpointSlice>>,
    pub backends: Vec<Arc<Backend>>,
    pub affinities: Vec<Arc<SessionAffinity>>,
}

/// What the routing table depends on: (kind, uid, version) of every object, sorted. Gateway
/// API objects count by `generation`, so that the proxy's own status writes do not recompile
/// the table; the others by `resourceVersion`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint(Vec<(u8, String, String)>);

impl Stores {
    /// Starts one watcher per kind (all namespaces); `changed` is notified on every change.
    pub fn start(client: Client, changed: Arc<Notify>) -> Stores {
        let mut tasks = Vec::new();
        let classes = spawn::<GatewayClass>(
            Api::all(client.clone()),
            "GatewayClass",
            &changed,
            &mut tasks,
        );
        let gateways = spawn::<Gateway>(Api::all(client.clone()), "Gateway", &changed, &mut tasks);
        let routes =
            spawn::<HttpRoute>(Api::all(client.clone()), "HTTPRoute", &changed, &mut tasks);
        let services = spawn::<Service>(Api::all(client.clone()), "Service", &changed, &mut tasks);
        let slices = spawn::<EndpointSlice>(
            Api::all(client.clone()),
            "EndpointSlice",
            &changed,
            &mut tasks,
        );
        let backends = spawn::<Backend>(Api::all(client.clone()), "Backend", &changed, &mut tasks);
        let affinities =
            spawn::<SessionAffinity>(Api::all(client), "SessionAffinity", &changed, &mut tasks);
        Stores {
            classes,
            gateways,
            routes,
            services,
            slices,
            backends,
            affinities,
            tasks,
        }
    }

    /// Completes once every watcher has finished its initial list.
    pub async fn wait_synced(&self) {
        // `wait_until_ready` fails only when the writer is dropped, i.e. the task ended.
        let _ = self.classes.wait_until_ready().await;
        let _ = self.gateways.wait_until_ready().await;
        let _ = self.routes.wait_until_ready().await;
        let _ = self.services.wait_until_ready().await;
        let _ = self.slices.wait_until_ready().await;
        let _ = self.backends.wait_until_ready().await;
        let _ = self.affinities.wait_until_ready().await;
    }

    /// The current contents of every store.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            classes: self.classes.state(),
            gateways: self.gateways.state(),
            routes: self.routes.state(),
            services: self.services.state(),
            slices: self.slices.state(),
            backends: self.backends.state(),
            affinities: self.affinities.state(),
        }
    }

    /// Stops every watcher.
    pub fn abort(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for Stores {
    fn drop(&mut self) {
        self.abort();
    }
}

impl Snapshot {
    /// See [`Fingerprint`].
    pub fn fingerprint(&self) -> Fingerprint {
        fn by_generation<K: Resource>(
            kind: u8,
            items: &[Arc<K>],
            out: &mut Vec<(u8, String, String)>,
        ) {
            out.extend(items.iter().map(|o| {
                let m = o.meta();
                (
                    kind,
                    m.uid.clone().unwrap_or_default(),
                    m.generation.unwrap_or_default().to_string(),
                )
            }));
        }
        fn by_version<K: Resource>(
            kind: u8,
            items: &[Arc<K>],
            out: &mut Vec<(u8, String, String)>,
        ) {
            out.extend(items.iter().map(|o| {
                let m = o.meta();
                (
                    kind,
                    m.uid.clone().unwrap_or_default(),
                    m.resource_version.clone().unwrap_or_default(),
                )
            }));
        }
        let mut out = Vec::new();
        by_generation(0, &self.classes, &mut out);
        by_generation(1, &self.gateways, &mut out);
        by_generation(2, &self.routes, &mut out);
        by_version(3, &self.services, &mut out);
        by_version(4, &self.slices, &mut out);
        by_version(5, &self.backends, &mut out);
        by_version(6, &self.affinities, &mut out);
        out.sort();
        Fingerprint(out)
    }
}

/// Starts the watcher of one kind; returns its store.
fn spawn<K>(
    api: Api<K>,
    kind: &'static str,
    changed: &Arc<Notify>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Store<K>
where
    K: Resource + Lookup + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    <K as Lookup>::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
    <K as Resource>::DynamicType: Default,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher::watcher(api, watcher::Config::default()).default_backoff(),
    );
    let changed = changed.clone();
    tasks.push(tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut failing = false;
        while let Some(event) = stream.next().await {
            match event {
                Ok(Event::Apply(_) | Event::Delete(_) | Event::InitDone) => {
                    if failing {
                        tracing::info!(kind, "kubernetes: watch restored");
                        failing = false;
                    }
                    changed.notify_one();
                }
                Ok(Event::Init | Event::InitApply(_)) => {}
                Err(e) => {
                    if !failing {
                        tracing::warn!(kind, error = %e, "kubernetes: watch failed; retrying with backoff, serving the last table");
                    } else {
                        tracing::debug!(kind, error = %e, "kubernetes: watch still failing");
                    }
                    failing = true;
                }
            }
        }
    }));
    reader
}
