//! Test support for the Kubernetes source: a client for the real test cluster
//! (`tests/cluster/up DIR`, `KUBECONFIG=DIR/kubeconfig`), per-test namespaces and GatewayClasses,
//! server-side apply of YAML, and an in-process `serin-proxy --kubernetes`.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::{self, Scope};
use kube::{Client, Config};
use serde::Deserialize;
use serin_proxy::kubernetes::CONTROLLER_NAME;
use serin_proxy::runtime::{self, KubernetesOptions, Running};

use crate::support::Reply;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The kubeconfig of the shared test cluster, from `KUBECONFIG`; fails (never skips) without it.
pub fn kubeconfig_path() -> PathBuf {
    let Some(path) = std::env::var_os("KUBECONFIG").filter(|p| !p.is_empty()) else {
        panic!(
            "these tests need a real API server: run `tests/cluster/up DIR` and \
             `export KUBECONFIG=DIR/kubeconfig` (e.g. DIR=/tmp/serin-kube), then run the tests again"
        );
    };
    let path = PathBuf::from(path);
    assert!(
        path.is_file(),
        "KUBECONFIG={} does not exist: run `tests/cluster/up DIR` and export KUBECONFIG=DIR/kubeconfig",
        path.display()
    );
    path
}

/// The harness directory of the shared test cluster (the kubeconfig's directory).
pub fn cluster_dir() -> PathBuf {
    kubeconfig_path().parent().unwrap().to_owned()
}

/// A client from a kubeconfig file.
pub async fn client_from(path: &Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(path).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

/// A client of the shared test cluster.
pub async fn client() -> Client {
    client_from(&kubeconfig_path()).await
}

/// Runs one of the harness scripts (`tests/cluster/NAME ARGS...`); returns stdout.
pub fn harness(name: &str, args: &[&str]) -> String {
    let output = Command::new(repo_root().join("tests/cluster").join(name))
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "tests/cluster/{name} {args:?} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A name unique to this test process and call: `PREFIX-PID-N`.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A namespace and a GatewayClass of one test, deleted by [`TestScope::cleanup`].
pub struct TestScope {
    pub client: Client,
    pub namespace: String,
    pub class: String,
}

impl TestScope {
    /// Creates a fresh namespace and a GatewayClass naming serin-proxy's controller.
    pub async fn new(client: Client, prefix: &str) -> TestScope {
        let namespace = unique(prefix);
        let class = unique(&format!("{prefix}-class"));
        let scope = TestScope {
            client,
            namespace,
            class,
        };
        let ns: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": scope.namespace}}))
                .unwrap();
        Api::<Namespace>::all(scope.client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
        scope
            .apply(&format!(
                "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: {}}}\nspec: {{controllerName: {CONTROLLER_NAME}}}\n",
                scope.class
            ))
            .await;
        scope
    }

    /// Server-side applies every document of `yaml` (namespaced objects go to the test's
    /// namespace unless they name one).
    pub async fn apply(&self, yaml: &str) {
        apply(&self.client, &self.namespace, yaml).await;
    }

    /// A Gateway `gw` of the test's class with one HTTP listener on `port`.
    pub fn gateway(&self, port: u16) -> String {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\nspec:\n  gatewayClassName: {}\n  listeners: [{{name: http, port: {port}, protocol: HTTP}}]\n",
            self.class
        )
    }

    /// Starts an in-process `serin-proxy --kubernetes --gateway-class CLASS` and waits until
    /// it is ready.
    pub async fn proxy(&self) -> Running {
        start_proxy(self.client.clone(), &self.class).await
    }

    /// Reads one object as JSON.
    pub async fn get(&self, api_version: &str, kind: &str, name: &str) -> serde_json::Value {
        get(&self.client, Some(&self.namespace), api_version, kind, name).await
    }

    /// Deletes the namespace (with everything in it) and the GatewayClass.
    pub async fn cleanup(self) {
        let _ = Api::<Namespace>::all(self.client.clone())
            .delete(&self.namespace, &DeleteParams::default())
            .await;
        let _ = Api::<gateway_api::experimental::gatewayclasses::GatewayClass>::all(
            self.client.clone(),
        )
        .delete(&self.class, &DeleteParams::default())
        .await;
    }
}

/// Starts an in-process Kubernetes-mode proxy serving `class` and waits until it is ready.
pub async fn start_proxy(client: Client, class: &str) -> Running {
    let mut options = KubernetesOptions::loopback();
    options.source.gateway_class = Some(class.to_owned());
    options.forward.connect_timeout = Duration::from_millis(500);
    options.drain_timeout = Duration::from_secs(5);
    let running = runtime::start_kubernetes(client, options).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !running.is_ready() {
        assert!(
            Instant::now() < deadline,
            "the proxy was not ready within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running
}

/// Server-side apply (field manager `serin-test`, forced) of a multi-document YAML text.
pub async fn apply(client: &Client, namespace: &str, yaml: &str) {
    for de in serde_yaml_ng::Deserializer::from_str(yaml) {
        let value = serde_json::Value::deserialize(de).unwrap();
        if value.is_null() {
            continue;
        }
        let mut object: DynamicObject = serde_json::from_value(value).unwrap();
        let types = object.types.clone().unwrap();
        let gvk = kube::api::GroupVersionKind::try_from(&types).unwrap();
        let (resource, caps) = discovery::pinned_kind(client, &gvk).await.unwrap();
        let api: Api<DynamicObject> = if caps.scope == Scope::Namespaced {
            let ns = object
                .metadata
                .namespace
                .get_or_insert_with(|| namespace.to_owned())
                .clone();
            Api::namespaced_with(client.clone(), &ns, &resource)
        } else {
            Api::all_with(client.clone(), &resource)
        };
        let name = object.metadata.name.clone().unwrap();
        api.patch(
            &name,
            &PatchParams::apply("serin-test").force(),
            &Patch::Apply(&object),
        )
        .await
        .unwrap_or_else(|e| panic!("applying {} {name}: {e}", types.kind));
    }
}

/// Reads one object as JSON.
pub async fn get(
    client: &Client,
    namespace: Option<&str>,
    api_version: &str,
    kind: &str,
    name: &str,
) -> serde_json::Value {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
    let (resource, _) = discovery::pinned_kind(client, &gvk).await.unwrap();
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    serde_json::to_value(api.get(name).await.unwrap()).unwrap()
}

/// Polls `check` every 20 ms until it returns `Some`, for at most `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The condition of `type_` among `conditions` as (status, reason, message).
pub fn condition(conditions: &serde_json::Value, type_: &str) -> Option<(String, String, String)> {
    conditions.as_array()?.iter().find_map(|c| {
        (c["type"] == type_).then(|| {
            (
                c["status"].as_str().unwrap_or_default().to_owned(),
                c["reason"].as_str().unwrap_or_default().to_owned(),
                c["message"].as_str().unwrap_or_default().to_owned(),
            )
        })
    })
}

/// An HTTP client for the proxy's listeners; every request carries `Host: app.example.com`.
#[derive(Clone)]
pub struct Http {
    client: HttpClient<HttpConnector, Full<Bytes>>,
    pub port: u16,
}

impl Http {
    pub fn new(port: u16) -> Http {
        Http {
            client: HttpClient::builder(TokioExecutor::new()).build_http(),
            port,
        }
    }

    /// GET `path`; `None` when the connection fails (e.g. the listener is not bound yet).
    pub async fn get(&self, path: &str) -> Option<Reply> {
        let request = Request::get(format!("http://127.0.0.1:{}{path}", self.port))
            .header("host", "app.example.com")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = self.client.request(request).await.ok()?;
        Some(Reply::read(response).await)
    }
}
