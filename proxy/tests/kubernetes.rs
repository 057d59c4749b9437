//! `serin-proxy --kubernetes` against the real test cluster (`make test` starts it, with the
//! node that runs Pods as processes, and sets `KUBECONFIG`): routing from Gateway/HTTPRoute
//! objects, Services resolved through the EndpointSlices of their real Pods, status conditions, API server restarts, and the RBAC manifest.
//!
//! Each test works in a namespace and a GatewayClass of its own and runs its own proxy, which
//! serves only that class, so tests run in parallel.

mod kube_support;
mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube_support::{Http, TestScope, condition, eventually, harness, repo_root};
use serde_json::Value;
use support::{Reply, TestBackend, admin_get, free_port, sample};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A `serin.dev` Backend named `name` at `127.0.0.1:port`.
fn backend(name: &str, port: u16) -> String {
    format!(
        "apiVersion: serin.dev/v1alpha1\nkind: Backend\nmetadata: {{name: {name}}}\nspec: {{endpoints: [{{host: 127.0.0.1, port: {port}}}]}}\n"
    )
}

/// An HTTPRoute `name` on Gateway `gw` for `app.example.com` splitting `/` over
/// `(backend, weight)` pairs of serin.dev Backends.
fn split_route(name: &str, split: &[(&str, i32)]) -> String {
    let refs: Vec<String> = split
        .iter()
        .map(|(b, w)| format!("{{group: serin.dev, kind: Backend, name: {b}, weight: {w}}}"))
        .collect();
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}}}\nspec:\n  parentRefs: [{{name: gw}}]\n  hostnames: [app.example.com]\n  rules:\n  - backendRefs: [{}]\n",
        refs.join(", ")
    )
}

/// Waits until a request through the proxy is answered by `backend`.
async fn until_answered_by(http: &Http, path: &str, backend: &str, timeout: Duration) {
    eventually(
        timeout,
        &format!("{path} answered by {backend}"),
        || async {
            http.get(path)
                .await
                .filter(|r| r.status == 200 && r.backend() == backend)
        },
    )
    .await;
}

/// The route's `status.parents[]` entry of serin-proxy's controller.
async fn route_parent(scope: &TestScope, route: &str) -> Option<Value> {
    let r = scope
        .get("gateway.networking.k8s.io/v1", "HTTPRoute", route)
        .await;
    r["status"]["parents"]
        .as_array()?
        .iter()
        .find(|p| p["controllerName"] == "serin.dev/gateway")
        .cloned()
}

/// Waits until the route's condition `type_` has `status` and `reason`; returns its message.
async fn route_condition(
    scope: &TestScope,
    route: &str,
    type_: &str,
    status: &str,
    reason: &str,
) -> String {
    eventually(
        Duration::from_secs(20),
        &format!("HTTPRoute {route} {type_}={status} ({reason})"),
        || async {
            let parent = route_parent(scope, route).await?;
            let (s, r, m) = condition(&parent["conditions"], type_)?;
            (s == status && r == reason).then_some(m)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_split_from_an_httproute() {
    let scope = TestScope::new(kube_support::client().await, "serin-split").await;
    let (stable, canary) = (
        TestBackend::start("stable").await,
        TestBackend::start("canary").await,
    );
    let port = free_port();
    scope
        .apply(
            &[
                scope.gateway(port),
                backend("stable", stable.port()),
                backend("canary", canary.port()),
                split_route("app", &[("stable", 90), ("canary", 10)]),
            ]
            .join("---\n"),
        )
        .await;
    let proxy = scope.proxy().await;
    let http = Http::new(port);
    until_answered_by(&http, "/", "stable", Duration::from_secs(10)).await;

    let n = 2000;
    let mut counts: HashMap<String, u32> = HashMap::new();
    for _ in 0..n {
        let reply = http.get("/").await.expect("request through the proxy");
        assert_eq!(reply.status, 200, "{}", reply.body);
        *counts.entry(reply.backend()).or_default() += 1;
    }
    // Binomial(2000, 0.1): mean 200, standard deviation ~13.4; allow 5 deviations.
    let canary_hits = f64::from(counts.get("canary").copied().unwrap_or(0));
    assert!(
        (canary_hits - 200.0).abs() < 5.0 * 13.42,
        "canary got {canary_hits} of {n}: {counts:?}"
    );
    assert_eq!(counts.values().sum::<u32>(), n);

    // Status: the route and the Gateway report what is served; the class is accepted.
    route_condition(&scope, "app", "Accepted", "True", "Accepted").await;
    route_condition(&scope, "app", "ResolvedRefs", "True", "ResolvedRefs").await;
    let gateway = eventually(Duration::from_secs(20), "Gateway status", || async {
        let g = scope
            .get("gateway.networking.k8s.io/v1", "Gateway", "gw")
            .await;
        let (s, _, _) = condition(&g["status"]["conditions"], "Programmed")?;
        (s == "True").then_some(g)
    })
    .await;
    assert_eq!(
        condition(&gateway["status"]["conditions"], "Accepted")
            .unwrap()
            .0,
        "True"
    );
    let listener = &gateway["status"]["listeners"][0];
    assert_eq!(listener["name"], "http");
    assert_eq!(listener["attachedRoutes"], 1);
    assert_eq!(listener["supportedKinds"][0]["kind"], "HTTPRoute");
    assert_eq!(
        gateway["status"]["conditions"][0]["observedGeneration"],
        gateway["metadata"]["generation"]
    );
    let class = kube_support::get(
        &scope.client,
        None,
        "gateway.networking.k8s.io/v1",
        "GatewayClass",
        &scope.class,
    )
    .await;
    assert_eq!(
        condition(&class["status"]["conditions"], "Accepted").map(|c| c.0),
        Some("True".to_owned())
    );

    let (status, readyz) = admin_get(proxy.admin_addr, "/readyz").await;
    assert_eq!(status, 200, "{readyz}");
    proxy.shutdown().await;
    scope.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_changes_reach_the_table_quickly() {
    let scope = TestScope::new(kube_support::client().await, "serin-latency").await;
    let (a, b) = (TestBackend::start("a").await, TestBackend::start("b").await);
    let port = free_port();
    scope
        .apply(
            &[
                scope.gateway(port),
                backend("a", a.port()),
                backend("b", b.port()),
                split_route("app", &[("a", 100), ("b", 0)]),
            ]
            .join("---\n"),
        )
        .await;
    let proxy = scope.proxy().await;
    let http = Http::new(port);
    until_answered_by(&http, "/", "a", Duration::from_secs(10)).await;

    let updates = 100;
    let mut latencies = Vec::with_capacity(updates);
    for i in 0..updates {
        let (to, weights) = if i % 2 == 0 {
            ("b", [("a", 0), ("b", 100)])
        } else {
            ("a", [("a", 100), ("b", 0)])
        };
        let route = split_route("app", &weights);
        let start = Instant::now();
        scope.apply(&route).await;
        loop {
            let reply = http.get("/").await.expect("request through the proxy");
            if reply.backend() == to {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "update {i}: still not routed to {to} after 5 s"
            );
        }
        latencies.push(start.elapsed());
    }
    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1)];
    println!(
        "API write -> first request on the new table over {updates} updates: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        p(0.50).as_secs_f64() * 1e3,
        p(0.99).as_secs_f64() * 1e3,
        latencies[latencies.len() - 1].as_secs_f64() * 1e3,
    );

    let metrics = admin_get(proxy.admin_addr, "/metrics").await.1;
    let applied = sample(&metrics, "serin_config_reloads_total{result=\"applied\"}");
    assert!(
        applied >= updates as f64,
        "applied reloads: {applied}\n{metrics}"
    );
    proxy.shutdown().await;
    scope.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_routes_are_reported_in_status_and_the_others_keep_working() {
    let scope = TestScope::new(kube_support::client().await, "serin-status").await;
    let good = TestBackend::start("good").await;
    let port = free_port();
    let bad_regex = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: bad-regex}\nspec:\n  parentRefs: [{name: gw}]\n  hostnames: [app.example.com]\n  rules:\n  - matches: [{path: {type: RegularExpression, value: \"/bad/(unclosed\"}}]\n    backendRefs: [{group: serin.dev, kind: Backend, name: good}]\n";
    let missing = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: missing}\nspec:\n  parentRefs: [{name: gw}]\n  hostnames: [app.example.com]\n  rules:\n  - matches: [{path: {type: PathPrefix, value: /missing}}]\n    backendRefs: [{group: serin.dev, kind: Backend, name: nowhere}]\n";
    scope
        .apply(
            &[
                scope.gateway(port),
                backend("good", good.port()),
                split_route("good", &[("good", 1)]),
                bad_regex.to_owned(),
                missing.to_owned(),
            ]
            .join("---\n"),
        )
        .await;
    let proxy = scope.proxy().await;
    let http = Http::new(port);

    let message =
        route_condition(&scope, "bad-regex", "Accepted", "False", "UnsupportedValue").await;
    assert!(
        message.contains("spec.rules[0].matches[0].path"),
        "the message names the field: {message}"
    );
    let message = route_condition(
        &scope,
        "missing",
        "ResolvedRefs",
        "False",
        "BackendNotFound",
    )
    .await;
    assert!(
        message.contains("spec.rules[0].backendRefs[0]") && message.contains("nowhere"),
        "the message names the field and the Backend: {message}"
    );
    route_condition(&scope, "missing", "Accepted", "True", "Accepted").await;
    route_condition(&scope, "good", "Accepted", "True", "Accepted").await;
    let parent = route_parent(&scope, "good").await.unwrap();
    let route = scope
        .get("gateway.networking.k8s.io/v1", "HTTPRoute", "good")
        .await;
    // The status parentRef is the spec's exactly (the API server's defaults for group and kind
    // included, no namespace added): clients such as Flagger find their entry by equality.
    assert_eq!(parent["parentRef"], route["spec"]["parentRefs"][0]);
    assert!(parent["parentRef"].get("namespace").is_none(), "{parent}");
    assert_eq!(
        parent["conditions"][0]["observedGeneration"],
        route["metadata"]["generation"]
    );

    // The valid route serves; the bad one is left out (its path falls through to the valid
    // route's `/` prefix); the missing Backend's share answers 500 as the spec asks.
    let reply = http.get("/anything").await.unwrap();
    assert_eq!(
        (reply.status.as_u16(), reply.backend().as_str()),
        (200, "good")
    );
    let reply = http.get("/bad/(unclosed").await.unwrap();
    assert_eq!(
        (reply.status.as_u16(), reply.backend().as_str()),
        (200, "good")
    );
    let reply = http.get("/missing").await.unwrap();
    assert_eq!(reply.status.as_u16(), 500, "{}", reply.body);

    // Attached routes count only what is served: `good` and `missing`, not `bad-regex`.
    eventually(Duration::from_secs(20), "attachedRoutes 2", || async {
        let g = scope
            .get("gateway.networking.k8s.io/v1", "Gateway", "gw")
            .await;
        (g["status"]["listeners"][0]["attachedRoutes"] == 2).then_some(())
    })
    .await;

    // Fixing the route clears the condition and serves it.
    let fixed = bad_regex.replace("/bad/(unclosed", "/bad/[a-z]+");
    let fixed = fixed.replace("name: good}]", "name: good}]\n    filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {add: [{name: x-route, value: fixed}]}}]");
    scope.apply(&fixed).await;
    route_condition(&scope, "bad-regex", "Accepted", "True", "Accepted").await;
    eventually(
        Duration::from_secs(10),
        "the fixed route served",
        || async {
            let reply = http.get("/bad/abc").await?;
            (reply.headers.get("x-route").is_some_and(|v| v == "fixed")).then_some(())
        },
    )
    .await;

    // Status writes that would change nothing are skipped: the route's resourceVersion stays.
    let before = scope
        .get("gateway.networking.k8s.io/v1", "HTTPRoute", "good")
        .await["metadata"]["resourceVersion"]
        .clone();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = scope
        .get("gateway.networking.k8s.io/v1", "HTTPRoute", "good")
        .await["metadata"]["resourceVersion"]
        .clone();
    assert_eq!(before, after, "no-op status writes must be skipped");

    proxy.shutdown().await;
    scope.cleanup().await;
}

/// The Pods of a Deployment as (name, address), from the API.
async fn pod_addresses(scope: &TestScope, app: &str) -> Vec<(String, String)> {
    Api::<Pod>::namespaced(scope.client.clone(), &scope.namespace)
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| Some((p.metadata.name?, p.status?.pod_ip?)))
        .collect()
}

/// `POST path` to a Pod of the test app (its readiness switches), over a plain connection.
async fn post_to_pod(ip: &str, path: &str) {
    let mut stream = tokio::net::TcpStream::connect((ip, 8080)).await.unwrap();
    stream
        .write_all(
            format!("POST {path} HTTP/1.1\r\nHost: {ip}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 202"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

/// A Service's endpoints are its real Pods (run by the test cluster's node, addresses from the
/// real EndpointSlice controller): requests are balanced over the ready ones, a Pod failing its
/// readiness probe leaves the rotation, none ready is a 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_resolve_through_ready_endpointslice_endpoints() {
    let scope = TestScope::new(kube_support::client().await, "serin-svc").await;
    let port = free_port();
    let service = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{name: http, port: 80, targetPort: 8080}]\n";
    let deployment = |replicas: u32| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers:\n      - name: app\n        image: serin.dev/testapp:1.0.0\n        ports: [{{containerPort: 8080}}]\n        readinessProbe: {{httpGet: {{path: /readyz, port: 8080}}, periodSeconds: 1, failureThreshold: 1}}\n"
        )
    };
    let route = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: web}\nspec:\n  parentRefs: [{name: gw}]\n  rules:\n  - backendRefs: [{name: web, port: 80}]\n";
    scope
        .apply(
            &[
                scope.gateway(port),
                service.to_owned(),
                deployment(1),
                route.to_owned(),
            ]
            .join("---\n"),
        )
        .await;
    let proxy = scope.proxy().await;
    let http = Http::new(port);
    let hostname = |reply: &Reply| reply.json()["hostname"].as_str().unwrap_or("").to_owned();
    eventually(
        Duration::from_secs(60),
        "the first Pod answering",
        || async { (http.get("/").await?.status == 200).then_some(()) },
    )
    .await;
    route_condition(&scope, "web", "ResolvedRefs", "True", "ResolvedRefs").await;

    // A second Pod: requests are balanced over both endpoints.
    scope.apply(&deployment(2)).await;
    let pods = eventually(Duration::from_secs(60), "both Pods answering", || async {
        let mut seen = HashMap::<String, u32>::new();
        for _ in 0..20 {
            *seen.entry(hostname(&http.get("/").await?)).or_default() += 1;
        }
        let pods = pod_addresses(&scope, "web").await;
        (seen.len() == 2 && pods.iter().all(|(name, _)| seen.contains_key(name))).then_some(pods)
    })
    .await;

    // A Pod failing its readiness probe leaves the rotation.
    let (sick, sick_ip) = &pods[0];
    post_to_pod(sick_ip, "/readyz/disable").await;
    eventually(
        Duration::from_secs(30),
        "only the ready Pod answering",
        || async {
            for _ in 0..10 {
                if hostname(&http.get("/").await?) == *sick {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    post_to_pod(&pods[1].1, "/readyz/disable").await;
    eventually(
        Duration::from_secs(30),
        "503 without ready endpoints",
        || async { (http.get("/").await?.status == 503).then_some(()) },
    )
    .await;

    // A Service port that does not exist is a missing backend.
    scope.apply(&route.replace("port: 80", "port: 81")).await;
    let message = route_condition(&scope, "web", "ResolvedRefs", "False", "BackendNotFound").await;
    assert!(message.contains("port 81"), "{message}");

    proxy.shutdown().await;
    scope.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_serving_while_the_api_server_is_down_and_catches_up_after() {
    // A cluster of this test's own, so that stopping it disturbs no other test.
    let dir = tempfile::Builder::new()
        .prefix("serin-restart-")
        .tempdir_in(std::env::temp_dir())
        .unwrap();
    let dir_arg = dir.path().to_str().unwrap().to_owned();
    harness("up", &[&dir_arg]);
    let stop_cluster = StopCluster(dir_arg.clone());
    let client = kube_support::client_from(&dir.path().join("kubeconfig")).await;

    let scope = TestScope::new(client, "serin-restart").await;
    let (a, b) = (TestBackend::start("a").await, TestBackend::start("b").await);
    let port = free_port();
    scope
        .apply(
            &[
                scope.gateway(port),
                backend("a", a.port()),
                backend("b", b.port()),
                split_route("app", &[("a", 1)]),
            ]
            .join("---\n"),
        )
        .await;
    let proxy = scope.proxy().await;
    let http = Http::new(port);
    until_answered_by(&http, "/", "a", Duration::from_secs(10)).await;

    harness("down", &[&dir_arg]);
    // During the outage every request is still served from the last table.
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(3) {
        let reply = http.get("/").await.expect("served during the outage");
        assert_eq!(
            (reply.status.as_u16(), reply.backend().as_str()),
            (200, "a")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _) = admin_get(proxy.admin_addr, "/readyz").await;
    assert_eq!(status, 200, "still ready: the table is serving");

    harness("up", &[&dir_arg]);
    let back = Instant::now();
    scope.apply(&split_route("app", &[("b", 1)])).await;
    until_answered_by(&http, "/", "b", Duration::from_secs(90)).await;
    println!(
        "API server restart: change after restart served {:.1} s after the API server was back",
        back.elapsed().as_secs_f64()
    );
    route_condition(&scope, "app", "Accepted", "True", "Accepted").await;

    proxy.shutdown().await;
    scope.cleanup().await;
    drop(stop_cluster);
}

/// Stops a cluster started by a test, also when the test fails.
struct StopCluster(String);

impl Drop for StopCluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new(repo_root().join("tests/cluster/down"))
            .arg(&self.0)
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_with_the_rbac_of_deploy_rbac() {
    let admin = kube_support::client().await;
    let manifest =
        std::fs::read_to_string(repo_root().join("deploy/rbac/serin-proxy.yaml")).unwrap();
    kube_support::apply(&admin, "default", &manifest).await;
    let dir = kube_support::cluster_dir();
    let dir = dir.to_str().unwrap();

    // The ServiceAccount may read and write status, but not change specs.
    let sa = "--as=system:serviceaccount:serin-system:serin-proxy";
    let can = |args: &[&str]| {
        let output = std::process::Command::new(repo_root().join("tests/cluster/kubectl"))
            .arg(dir)
            .args(["auth", "can-i"])
            .args(args)
            .arg(sa)
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    assert_eq!(
        can(&["update", "httproutes.gateway.networking.k8s.io"]),
        "no"
    );
    assert_eq!(can(&["patch", "gateways.gateway.networking.k8s.io"]), "no");
    assert_eq!(can(&["create", "backends.serin.dev"]), "no");
    assert_eq!(
        can(&[
            "patch",
            "httproutes.gateway.networking.k8s.io",
            "--subresource=status"
        ]),
        "yes"
    );
    assert_eq!(
        can(&[
            "update",
            "gatewayclasses.gateway.networking.k8s.io",
            "--subresource=status"
        ]),
        "yes"
    );
    assert_eq!(
        can(&["watch", "endpointslices.discovery.k8s.io", "-A"]),
        "yes"
    );
    assert_eq!(can(&["list", "secrets", "-A"]), "yes");
    assert_eq!(can(&["watch", "sessionaffinities.serin.dev", "-A"]), "yes");

    // A kubeconfig with a token of the ServiceAccount.
    let token = harness(
        "kubectl",
        &[dir, "-n", "serin-system", "create", "token", "serin-proxy"],
    );
    let mut kubeconfig: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(kube_support::kubeconfig_path()).unwrap())
            .unwrap();
    for user in kubeconfig["users"].as_array_mut().unwrap() {
        user["user"] = serde_json::json!({"token": token.trim()});
    }
    let files = tempfile::tempdir().unwrap();
    let path = files.path().join("kubeconfig");
    std::fs::write(&path, serde_yaml_ng::to_string(&kubeconfig).unwrap()).unwrap();
    let sa_client = kube_support::client_from(&path).await;

    let scope = TestScope::new(admin, "serin-rbac").await;
    let app = TestBackend::start("app").await;
    let port = free_port();
    scope
        .apply(
            &[
                scope.gateway(port),
                backend("app", app.port()),
                split_route("app", &[("app", 1)]),
            ]
            .join("---\n"),
        )
        .await;
    let proxy = kube_support::start_proxy(sa_client, &scope.class).await;
    let http = Http::new(port);
    until_answered_by(&http, "/", "app", Duration::from_secs(10)).await;
    // Status written with the ServiceAccount's rights.
    route_condition(&scope, "app", "Accepted", "True", "Accepted").await;
    eventually(Duration::from_secs(20), "Gateway Programmed", || async {
        let g = scope
            .get("gateway.networking.k8s.io/v1", "Gateway", "gw")
            .await;
        (condition(&g["status"]["conditions"], "Programmed")?.0 == "True").then_some(())
    })
    .await;
    let metrics = admin_get(proxy.admin_addr, "/metrics").await.1;
    assert_eq!(
        sample(&metrics, "serin_config_reloads_total{result=\"rejected\"}"),
        0.0,
        "{metrics}"
    );
    proxy.shutdown().await;
    scope.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_from_kubernetes_and_stops_on_sigterm() {
    let scope = TestScope::new(kube_support::client().await, "serin-bin").await;
    let app = TestBackend::start("app").await;
    let port = free_port();
    scope
        .apply(
            &[
                scope.gateway(port),
                backend("app", app.port()),
                split_route("app", &[("app", 1)]),
            ]
            .join("---\n"),
        )
        .await;
    let admin = free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_serin-proxy"))
        .args([
            "--kubernetes",
            "--gateway-class",
            &scope.class,
            "--bind",
            "127.0.0.1",
        ])
        .args(["--admin", &format!("127.0.0.1:{admin}")])
        .env("KUBECONFIG", kube_support::kubeconfig_path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let admin_addr: std::net::SocketAddr = ([127, 0, 0, 1], admin).into();
    eventually(Duration::from_secs(20), "/readyz 200", || async {
        // Not listening yet is not an error here.
        tokio::net::TcpStream::connect(admin_addr).await.ok()?;
        (admin_get(admin_addr, "/readyz").await.0 == 200).then_some(())
    })
    .await;
    let http = Http::new(port);
    until_answered_by(&http, "/", "app", Duration::from_secs(10)).await;

    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = eventually(Duration::from_secs(10), "exit on SIGTERM", || {
        let exited = child.try_wait().unwrap();
        async move { exited }
    })
    .await;
    assert!(status.success(), "{status}");
    scope.cleanup().await;
}
