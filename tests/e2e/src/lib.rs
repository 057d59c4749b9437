//! Support for Serin's end-to-end tests: the shared test cluster (`tests/cluster`, started by
//! `make test` inside its own network namespace, `KUBECONFIG` pointing at it), a namespace per
//! test, YAML applied with the harness, `kubectl`, the workspace's built binaries, and a small
//! HTTP client for traffic to Pods (198.18.x.y) and proxies.
//!
//! Every helper fails the test with a message naming what was missing or what timed out; none
//! skips.

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("tests/e2e has two parents")
        .to_owned()
}

/// The kubeconfig of the shared test cluster, from `KUBECONFIG`; fails (never skips) without it.
pub fn kubeconfig() -> PathBuf {
    let Some(path) = std::env::var_os("KUBECONFIG").filter(|p| !p.is_empty()) else {
        panic!(
            "the end-to-end tests need the test cluster: run them with `make test`, or start it \
             with `make cluster-up` and run them from `make cluster-shell` (KUBECONFIG is set there)"
        );
    };
    let path = PathBuf::from(path);
    assert!(
        path.is_file(),
        "KUBECONFIG={} does not exist: start the cluster with `make cluster-up`",
        path.display()
    );
    path
}

/// The test cluster's directory (the kubeconfig's).
pub fn cluster_dir() -> PathBuf {
    kubeconfig()
        .parent()
        .expect("a kubeconfig path has a parent")
        .to_owned()
}

/// A client of the shared test cluster.
pub async fn client() -> Client {
    let kubeconfig = Kubeconfig::read_from(kubeconfig()).expect("reading KUBECONFIG");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("a client configuration from KUBECONFIG");
    Client::try_from(config).expect("a Kubernetes client")
}

/// A binary of the workspace, built by `make test` (`cargo build --workspace --bins`) into the
/// same target directory as this test.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/<test>-<hash>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("a test binary lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the workspace's binaries first (`cargo build --workspace --bins`, \
         as `make test` does)",
        path.display()
    );
    path
}

fn harness(name: &str) -> Command {
    let mut command = Command::new(repo_root().join("tests/cluster").join(name));
    command.arg(cluster_dir());
    command
}

/// Runs `kubectl ARGS...` against the test cluster; returns its output, whatever the exit status.
pub fn kubectl_output(args: &[&str]) -> Output {
    harness("kubectl")
        .args(args)
        .output()
        .expect("running tests/cluster/kubectl")
}

/// Runs `kubectl ARGS...` against the test cluster and returns stdout; fails the test when
/// kubectl fails.
pub fn kubectl(args: &[&str]) -> String {
    let output = kubectl_output(args);
    assert!(
        output.status.success(),
        "kubectl {args:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Server-side applies multi-document YAML into `namespace` (objects without one go there).
pub fn apply(namespace: &str, yaml: &str) {
    let mut child = harness("apply")
        .args(["-n", namespace, "-q", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running tests/cluster/apply");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(yaml.as_bytes())
        .expect("writing to tests/cluster/apply");
    let output = child.wait_with_output().expect("tests/cluster/apply");
    assert!(
        output.status.success(),
        "apply failed ({}): {}\n---\n{yaml}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
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

/// A namespace of one test; deleted (without waiting) when dropped.
pub struct TestNamespace {
    /// Its name.
    pub name: String,
}

impl TestNamespace {
    /// Creates a fresh namespace named after `prefix`.
    pub fn new(prefix: &str) -> TestNamespace {
        let name = unique(prefix);
        kubectl(&["create", "namespace", &name]);
        TestNamespace { name }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let _ = kubectl_output(&["delete", "namespace", &self.name, "--wait=false"]);
    }
}

/// A cluster-scoped object of one test (e.g. a GatewayClass), deleted when dropped.
pub struct ClusterObject {
    kind: String,
    /// Its name.
    pub name: String,
}

impl ClusterObject {
    /// A unique name for an object of `kind` that the test will create.
    pub fn new(kind: &str, prefix: &str) -> ClusterObject {
        ClusterObject {
            kind: kind.to_owned(),
            name: unique(prefix),
        }
    }
}

impl Drop for ClusterObject {
    fn drop(&mut self) {
        let _ = kubectl_output(&[
            "delete",
            &self.kind,
            &self.name,
            "--ignore-not-found",
            "--wait=false",
        ]);
    }
}

/// A child process killed (and reaped) when dropped.
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An address of the test namespace's local range (198.18.0.0/15) that the node hands to Pods
/// last (it allocates from the bottom): where a test's serin-proxy "runs" in the cluster's view (EndpointSlices cannot
/// name loopback addresses).
pub const PROXY_ADDRESS: &str = "198.19.255.254";

/// A Gateway of one test served by a serin-proxy of its own: a GatewayClass with
/// `controllerName: serin.dev/gateway`, the Gateway `public` in the test's namespace with one
/// HTTP listener on a free 127.0.0.1 port, and `serin-proxy --kubernetes` for that class. The
/// proxy is stopped and the class deleted when dropped.
pub struct ProxyGateway {
    _proxy: ChildGuard,
    _class: Option<ClusterObject>,
    /// The listener's port on 127.0.0.1.
    pub listener: u16,
    /// The proxy's admin port (`/metrics`), on every address of the namespace.
    pub admin: u16,
}

impl ProxyGateway {
    /// Applies the GatewayClass and the Gateway `public` in `namespace`, and starts the proxy.
    pub fn start(namespace: &str) -> ProxyGateway {
        let listener = free_port();
        let class = ClusterObject::new("gatewayclass", namespace);
        apply(
            namespace,
            &format!(
                r#"apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata:
  name: {class}
spec:
  controllerName: serin.dev/gateway
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: public
spec:
  gatewayClassName: {class}
  listeners:
  - {{name: http, port: {listener}, protocol: HTTP}}
"#,
                class = class.name
            ),
        );
        let mut gateway = ProxyGateway::serve(&class.name, listener);
        gateway._class = Some(class);
        gateway
    }

    /// Starts serin-proxy for the Gateways of the existing GatewayClass `class`, whose
    /// listener is on `listener`.
    pub fn serve(class: &str, listener: u16) -> ProxyGateway {
        let admin = free_port();
        let proxy = ChildGuard(
            Command::new(binary("serin-proxy"))
                .args(["--kubernetes", "--gateway-class", class])
                .args([
                    "--bind",
                    "127.0.0.1",
                    "--admin",
                    &format!("0.0.0.0:{admin}"),
                ])
                .stdout(Stdio::null())
                .spawn()
                .expect("starting serin-proxy"),
        );
        ProxyGateway {
            _proxy: proxy,
            _class: None,
            listener,
            admin,
        }
    }

    /// Applies, in `namespace`, the Service `serin-proxy-admin` (no selector) and its
    /// EndpointSlice with the proxy's admin port on [`PROXY_ADDRESS`], as a cluster shows a
    /// serin-proxy Deployment's admin Service: what `serin-controller --proxy-metrics` reads.
    /// Returns `NAMESPACE/serin-proxy-admin`.
    pub fn admin_service(&self, namespace: &str) -> String {
        apply(
            namespace,
            &format!(
                r#"apiVersion: v1
kind: Service
metadata:
  name: serin-proxy-admin
spec:
  ports:
  - {{name: admin, port: 9901, targetPort: {admin}}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: serin-proxy-admin-1
  labels: {{kubernetes.io/service-name: serin-proxy-admin}}
addressType: IPv4
ports:
- {{name: admin, port: {admin}, protocol: TCP}}
endpoints:
- addresses: [{PROXY_ADDRESS}]
  conditions: {{ready: true}}
"#,
                admin = self.admin
            ),
        );
        format!("{namespace}/serin-proxy-admin")
    }

    /// `127.0.0.1:<listener>`.
    pub fn authority(&self) -> String {
        format!("127.0.0.1:{}", self.listener)
    }

    /// `127.0.0.1:<admin>`.
    pub fn admin_authority(&self) -> String {
        format!("127.0.0.1:{}", self.admin)
    }
}

/// A port nothing listens on, that no other test of this process is handed
/// ([`serin_test_ports::free_port`]).
pub fn free_port() -> u16 {
    serin_test_ports::free_port()
}

/// Polls `check` every 100 ms until it returns `Some`, at most `timeout`; fails the test with
/// `what` and the last observation otherwise.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(value) => return value,
            Err(last) => last,
        };
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; last seen: {last}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    /// Its status code.
    pub status: u16,
    /// The `x-app-version` header the test app sets, if any.
    pub version: Option<String>,
    /// The `set-cookie` headers.
    pub set_cookies: Vec<String>,
    /// The body.
    pub body: Bytes,
}

/// A pooled HTTP/1.1 client for test traffic.
#[derive(Clone)]
pub struct Http {
    client: HttpClient<HttpConnector, Empty<Bytes>>,
}

impl Default for Http {
    fn default() -> Self {
        Http::new()
    }
}

impl Http {
    /// A client with keep-alive connections.
    pub fn new() -> Http {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        Http {
            client: HttpClient::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// `GET http://{authority}{path}`, bounded to 10 s; `Err` names what failed.
    pub async fn get(&self, authority: &str, path: &str) -> Result<Answer, String> {
        self.get_with(authority, path, &[]).await
    }

    /// `GET` with extra request headers.
    pub async fn get_with(
        &self,
        authority: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Answer, String> {
        let mut request = http::Request::get(format!("http://{authority}{path}"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Empty::new())
            .map_err(|e| format!("GET {authority}{path}: {e}"))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| format!("GET {authority}{path}: {e:?}"))?;
            let status = response.status().as_u16();
            let version = response
                .headers()
                .get("x-app-version")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let set_cookies = response
                .headers()
                .get_all("set-cookie")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .map(str::to_owned)
                .collect();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("GET {authority}{path}: body: {e}"))?
                .to_bytes();
            Ok(Answer {
                status,
                version,
                set_cookies,
                body,
            })
        };
        tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .map_err(|_| format!("GET {authority}{path}: no answer within 10 s"))?
    }

    /// `POST` without a body; returns the status.
    pub async fn post(&self, authority: &str, path: &str) -> Result<u16, String> {
        let request = http::Request::post(format!("http://{authority}{path}"))
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let response = tokio::time::timeout(Duration::from_secs(10), self.client.request(request))
            .await
            .map_err(|_| format!("POST {authority}{path}: no answer within 10 s"))?
            .map_err(|e| format!("POST {authority}{path}: {e:?}"))?;
        Ok(response.status().as_u16())
    }
}

/// The Pods of `namespace` matching `selector`.
pub async fn pods(client: &Client, namespace: &str, selector: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(selector))
        .await
        .expect("listing Pods")
        .items
}

/// Whether a Pod's `Ready` condition is `True`.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// A Pod's address (`status.podIP`).
pub fn pod_ip(pod: &Pod) -> Option<String> {
    pod.status.as_ref()?.pod_ip.clone()
}

/// The process ids of a Pod's running containers: the test node reports each as
/// `containerID: serin://<container>-<pid>`.
pub fn pod_pids(pod: &Pod) -> Vec<u32> {
    pod.status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .filter(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
        .filter_map(|c| c.container_id.as_deref())
        .filter_map(|id| id.rsplit('-').next()?.parse().ok())
        .collect()
}

/// Whether a process with this id is alive (and not a zombie).
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// A process's resident set size in KiB (`VmRSS`).
pub fn process_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}
