//! serin-controller end to end: a Canary for the podinfo Deployment (real Pods on the test
//! node), serin-proxy `--kubernetes` serving its HTTPRoute, steady client traffic through the
//! proxy, and a release started with `kubectl set image`.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Api, DynamicObject};
use kube::discovery::ApiResource;
use serin_e2e::{
    ChildGuard, Http, ProxyGateway, TestNamespace, apply, binary, client, eventually, free_port,
    kubeconfig, kubectl, repo_root,
};

fn podinfo() -> &'static str {
    r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: podinfo
  labels: {app: podinfo}
spec:
  replicas: 2
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxUnavailable: 0, maxSurge: 1}
  selector:
    matchLabels: {app: podinfo}
  template:
    metadata:
      labels: {app: podinfo}
    spec:
      terminationGracePeriodSeconds: 10
      containers:
      - name: podinfod
        image: ghcr.io/stefanprodan/podinfo:6.0.0
        ports:
        - {name: http, containerPort: 9898, protocol: TCP}
        readinessProbe:
          httpGet: {path: /readyz, port: 9898}
          periodSeconds: 1
          failureThreshold: 1
        lifecycle:
          preStop:
            sleep: {seconds: 2}
"#
}

fn canary_api() -> ApiResource {
    ApiResource {
        group: "serin.dev".into(),
        version: "v1alpha1".into(),
        api_version: "serin.dev/v1alpha1".into(),
        kind: "Canary".into(),
        plural: "canaries".into(),
    }
}

/// Steady traffic through the proxy, counting answers by version and failures.
struct Traffic {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Recorded>,
}

/// What [`Traffic`] saw.
#[derive(Default)]
struct Recorded {
    /// Answers by version (see [`Traffic::start_with`]).
    versions: BTreeMap<String, u64>,
    /// Requests that failed, and why.
    failures: Vec<String>,
    /// Every successful answer: when it arrived, and the version that gave it.
    answers: Vec<(k8s_openapi::jiff::Timestamp, String)>,
}

impl Traffic {
    fn start(authority: String) -> Traffic {
        Traffic::spawn(authority, Vec::new(), None)
    }

    /// With `header`, every other request carries it; answers to those are counted under
    /// `"<header value>:<version>"`.
    fn start_with(authority: String, header: Option<(&'static str, &'static str)>) -> Traffic {
        Traffic::spawn(authority, Vec::new(), header)
    }

    /// `always`: headers every request carries (a `host`, say).
    fn spawn(
        authority: String,
        always: Vec<(&'static str, &'static str)>,
        header: Option<(&'static str, &'static str)>,
    ) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let http = Http::new();
            let mut recorded = Recorded::default();
            let mut n = 0u64;
            while !flag.load(Ordering::Relaxed) {
                n += 1;
                let with = header.filter(|_| n.is_multiple_of(2));
                let mut headers = always.clone();
                headers.extend(with);
                match http.get_with(&authority, "/", &headers).await {
                    Ok(a) if a.status == 200 => {
                        let version = a.version.unwrap_or_default();
                        recorded
                            .answers
                            .push((k8s_openapi::jiff::Timestamp::now(), version.clone()));
                        let key = match with {
                            Some((_, value)) => format!("{value}:{version}"),
                            None => version,
                        };
                        *recorded.versions.entry(key).or_insert(0u64) += 1;
                    }
                    Ok(a) => recorded.failures.push(format!("status {}", a.status)),
                    Err(e) => recorded.failures.push(e),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            recorded
        });
        Traffic { stop, task }
    }

    async fn finish(self) -> (BTreeMap<String, u64>, Vec<String>) {
        let recorded = self.finish_recorded().await;
        (recorded.versions, recorded.failures)
    }

    async fn finish_recorded(self) -> Recorded {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

async fn phase(api: &Api<DynamicObject>) -> Result<(String, DynamicObject), String> {
    let canary = api.get("podinfo").await.map_err(|e| e.to_string())?;
    let phase = canary.data["status"]["phase"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    Ok((phase, canary))
}

/// Starts a release: `kubectl set image` of the podinfo Deployment to `tag`.
fn release(namespace: &str, tag: &str) {
    kubectl(&[
        "-n",
        namespace,
        "set",
        "image",
        "deployment/podinfo",
        &format!("podinfod=ghcr.io/stefanprodan/podinfo:{tag}"),
    ]);
}

/// The weights of the `Advance <canary> canary weight N` events, in order.
fn advances(events: &[String], canary: &str) -> Vec<u32> {
    let prefix = format!("Advance {canary} canary weight ");
    events
        .iter()
        .filter_map(|e| e.strip_prefix(&prefix)?.parse().ok())
        .collect()
}

/// The messages of the Events serin-controller recorded in `namespace`, oldest first.
fn events(namespace: &str) -> Vec<String> {
    timed_events(namespace)
        .into_iter()
        .map(|(_, _, note)| note)
        .collect()
}

/// The Events serin-controller recorded in `namespace`, oldest first: (reporting instance,
/// message).
fn recorded_events(namespace: &str) -> Vec<(String, String)> {
    timed_events(namespace)
        .into_iter()
        .map(|(_, instance, note)| (instance, note))
        .collect()
}

/// The Events serin-controller recorded in `namespace`, oldest first: (time, reporting
/// instance, message).
fn timed_events(namespace: &str) -> Vec<(k8s_openapi::jiff::Timestamp, String, String)> {
    let out = kubectl(&[
        "-n",
        namespace,
        "get",
        "events.events.k8s.io",
        "-o",
        "jsonpath={range .items[*]}{.eventTime}{\"\\t\"}{.reportingController}{\"\\t\"}{.reportingInstance}{\"\\t\"}{.note}{\"\\n\"}{end}",
    ]);
    let mut events: Vec<(String, String, String)> = out
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(4, '\t');
            let time = fields.next()?.to_owned();
            if fields.next()? != "serin.dev/serin-controller" {
                return None;
            }
            let instance = fields.next()?.to_owned();
            Some((time, instance, fields.next().unwrap_or_default().to_owned()))
        })
        .collect();
    events.sort();
    events
        .into_iter()
        .map(|(time, instance, note)| {
            let time = time
                .parse()
                .unwrap_or_else(|e| panic!("eventTime {time:?}: {e}"));
            (time, instance, note)
        })
        .collect()
}

/// A kubeconfig for the test cluster that authenticates as the `serin-controller`
/// ServiceAccount of `deploy/rbac/serin-controller.yaml` (applied here), in a file of the test's
/// own under the cluster's directory (so `down` removes it with the cluster).
fn controller_kubeconfig(test: &str) -> std::path::PathBuf {
    let rbac = std::fs::read_to_string(repo_root().join("deploy/rbac/serin-controller.yaml"))
        .expect("deploy/rbac/serin-controller.yaml");
    apply("serin-system", &rbac);
    let token = kubectl(&["-n", "serin-system", "create", "token", "serin-controller"]);
    let admin = std::fs::read_to_string(kubeconfig()).expect("reading KUBECONFIG");
    let config: String = admin
        .lines()
        .map(|line| match line.split_once("token: ") {
            Some((indent, _)) if indent.trim().is_empty() => {
                format!("{indent}token: {}", token.trim())
            }
            _ => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        config.contains(token.trim()),
        "the kubeconfig has a token line"
    );
    let dir = serin_e2e::cluster_dir().join("e2e");
    std::fs::create_dir_all(&dir).expect("creating the cluster's e2e directory");
    let path = dir.join(format!("{test}-controller.kubeconfig"));
    std::fs::write(&path, config).expect("writing the controller's kubeconfig");
    path
}

#[test]
fn the_controllers_cluster_role_grants_what_it_needs_and_no_more() {
    controller_kubeconfig("rbac-check");
    let can = |args: &[&str]| {
        let mut all = vec!["auth", "can-i"];
        all.extend_from_slice(args);
        all.push("--as=system:serviceaccount:serin-system:serin-controller");
        let output = serin_e2e::kubectl_output(&all);
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    for allowed in [
        &["watch", "canaries.serin.dev", "-A"][..],
        &["patch", "canaries.serin.dev", "--subresource=status", "-A"],
        &["patch", "canaries.serin.dev", "-A"],
        &["patch", "configmaps", "-A"],
        &["watch", "secrets", "-A"],
        &["patch", "horizontalpodautoscalers.autoscaling", "-A"],
        &["list", "endpointslices.discovery.k8s.io", "-A"],
        &["update", "leases.coordination.k8s.io", "-n", "serin-system"],
        &["create", "deployments.apps", "-A"],
        &["patch", "deployments.apps", "-A"],
        &["patch", "services", "-A"],
        &["patch", "httproutes.gateway.networking.k8s.io", "-A"],
        &["create", "events.events.k8s.io", "-A"],
    ] {
        assert_eq!(can(allowed), "yes", "{allowed:?}");
    }
    for denied in [
        &["delete", "canaries.serin.dev", "-A"][..],
        &["update", "canaries.serin.dev", "-A"],
        &["delete", "deployments.apps", "-A"],
        &["delete", "services", "-A"],
        &["delete", "secrets", "-A"],
        &["create", "pods", "-A"],
        &["patch", "gateways.gateway.networking.k8s.io", "-A"],
        &["update", "leases.coordination.k8s.io", "-n", "default"],
        &["patch", "endpointslices.discovery.k8s.io", "-A"],
    ] {
        assert_eq!(can(denied), "no", "{denied:?}");
    }
    // The controller's Deployment manifest is valid as the API server reads it.
    let dry_run = kubectl(&[
        "apply",
        "--dry-run=server",
        "-f",
        &repo_root()
            .join("deploy/serin-controller.yaml")
            .display()
            .to_string(),
    ]);
    assert!(
        dry_run.contains("deployment.apps/serin-controller"),
        "{dry_run}"
    );
}

/// A Canary analysis (YAML indented four spaces): a step every `interval`, threshold 3, the
/// `strategy` lines, and the built-in success rate (at least 99% over 10 s) as its check.
fn analysis(interval: &str, strategy: &str) -> String {
    format!(
        "    interval: {interval}
    threshold: 3
{strategy}    metrics:
    - name: request-success-rate
      thresholdRange: {{min: 99}}
      interval: 10s
"
    )
}

/// The weighted analysis most tests release with: 10% steps every 2 s up to 50%.
fn weighted() -> String {
    analysis("2s", "    maxWeight: 50\n    stepWeight: 10\n")
}

/// A release under way: the podinfo Deployment with its Canary (Initialized), serin-proxy
/// serving its Gateway, serin-controller; everything removed when dropped.
struct Setup {
    ns: TestNamespace,
    canaries: Api<DynamicObject>,
    deployments: Api<Deployment>,
    authority: String,
    kubeconfig: std::path::PathBuf,
    gateway: ProxyGateway,
    controller: Controller,
    /// `NAMESPACE/serin-proxy-admin`.
    proxy_metrics: String,
    /// Extra environment of the controller when it is restarted.
    controller_env: Vec<(String, String)>,
}

/// A serin-controller process.
struct Controller {
    process: ChildGuard,
    /// The port of its /metrics, /healthz and /readyz.
    listen: u16,
}

/// Starts serin-controller for the test's namespace, as its ServiceAccount, with leader
/// election under `identity` (as a pod's POD_NAME).
/// `metrics`: `--proxy-metrics NAMESPACE/SERVICE` or `--proxy-admin ADDR`.
fn spawn_controller(
    kubeconfig: &std::path::Path,
    metrics: [&str; 2],
    namespace: &str,
    identity: &str,
) -> Controller {
    spawn_controller_with(kubeconfig, metrics, namespace, identity, &[])
}

/// [`spawn_controller`] with extra environment variables.
fn spawn_controller_with(
    kubeconfig: &std::path::Path,
    metrics: [&str; 2],
    namespace: &str,
    identity: &str,
    env: &[(String, String)],
) -> Controller {
    let listen = free_port();
    let process = ChildGuard(
        Command::new(binary("serin-controller"))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAME", identity)
            .args(metrics)
            .args(["--namespace", namespace])
            .args(["--listen", &format!("127.0.0.1:{listen}")])
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("starting serin-controller"),
    );
    Controller { process, listen }
}

impl Setup {
    /// Starts everything in a namespace named after `prefix`, with `spec_analysis` (YAML indented
    /// four spaces) as the Canary's `spec.analysis`, and waits for the Canary to be
    /// Initialized and the proxy to serve the primary.
    async fn start(prefix: &str, spec_analysis: &str) -> Setup {
        Setup::start_with(prefix, podinfo(), "", spec_analysis).await
    }

    /// Like [`Setup::start`] with `workload` (YAML documents) instead of [`podinfo`], and
    /// `spec_extra` (YAML indented two spaces) added to the Canary's spec.
    async fn start_with(
        prefix: &str,
        workload: &str,
        spec_extra: &str,
        spec_analysis: &str,
    ) -> Setup {
        let client = client().await;
        let ns = TestNamespace::new(prefix);
        apply(&ns.name, workload);
        let gateway = ProxyGateway::start(&ns.name);
        apply(
            &ns.name,
            &format!(
                r#"apiVersion: serin.dev/v1alpha1
kind: Canary
metadata:
  name: podinfo
spec:
  targetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: podinfo
  service:
    port: 9898
    targetPort: 9898
    gatewayRefs:
    - name: public
{spec_extra}  analysis:
{spec_analysis}"#
            ),
        );
        // The controller runs as its ServiceAccount of deploy/rbac: least privilege, proven.
        let kubeconfig = controller_kubeconfig(&ns.name);
        // serin-proxy's replicas are found through their admin Service, as in a cluster.
        let proxy_metrics = gateway.admin_service(&ns.name);
        let controller = spawn_controller(
            &kubeconfig,
            ["--proxy-metrics", &proxy_metrics],
            &ns.name,
            "replica-a",
        );
        let canaries =
            Api::<DynamicObject>::namespaced_with(client.clone(), &ns.name, &canary_api());
        wait_for_phase(&canaries, "Initialized").await;
        let authority = gateway.authority();
        wait_serving(&authority, &[]).await;
        let deployments = Api::<Deployment>::namespaced(client.clone(), &ns.name);
        let target = deployments.get("podinfo").await.unwrap();
        assert_eq!(
            target.spec.unwrap().replicas,
            Some(0),
            "the target is scaled to zero once the primary serves"
        );
        Setup {
            ns,
            canaries,
            deployments,
            authority,
            kubeconfig,
            gateway,
            controller,
            proxy_metrics,
            controller_env: Vec::new(),
        }
    }

    /// Kills serin-controller with SIGKILL (wherever it is in a step) and starts it again, as
    /// a pod's container restarts (same identity: it resumes its Lease at once).
    fn kill_and_restart_controller(&mut self) {
        let _ = self.controller.process.0.kill();
        let _ = self.controller.process.0.wait();
        self.controller = spawn_controller_with(
            &self.kubeconfig,
            ["--proxy-metrics", &self.proxy_metrics],
            &self.ns.name,
            "replica-a",
            &self.controller_env,
        );
    }

    /// Waits for the Canary to reach phase `want`; fails when it ends otherwise.
    async fn wait_for_phase(&self, want: &str) -> DynamicObject {
        wait_for_phase(&self.canaries, want).await
    }
}

/// Waits for the Canary `podinfo` to reach phase `want`; fails when its release ends
/// otherwise.
async fn wait_for_phase(canaries: &Api<DynamicObject>, want: &str) -> DynamicObject {
    eventually(
        &format!("the Canary {want}"),
        Duration::from_secs(240),
        || async {
            match phase(canaries).await? {
                (p, c) if p == want => Ok(c),
                (p, c) if p == "Failed" || p == "Succeeded" => {
                    panic!("the release ended {p}: {:?}", c.data.get("status"))
                }
                (p, c) => Err(format!(
                    "phase {p:?}, weight {:?}",
                    c.data["status"]["canaryWeight"]
                )),
            }
        },
    )
    .await
}

/// Waits for the proxy at `authority` to answer `/` (with `headers`) with 200.
async fn wait_serving(authority: &str, headers: &[(&str, &str)]) {
    let http = Http::new();
    eventually(
        "the proxy serving the primary",
        Duration::from_secs(30),
        || async {
            match http.get_with(authority, "/", headers).await {
                Ok(a) if a.status == 200 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
}

/// The GatewayClass `serin` the podinfo example's Gateway names (cluster-wide: one test
/// uses it), deleted when dropped.
struct SerinGatewayClass;

impl SerinGatewayClass {
    fn apply(namespace: &str) -> SerinGatewayClass {
        apply(
            namespace,
            "apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata:
  name: serin
spec:
  controllerName: serin.dev/gateway
",
        );
        SerinGatewayClass
    }
}

impl Drop for SerinGatewayClass {
    fn drop(&mut self) {
        let _ = serin_e2e::kubectl_output(&[
            "delete",
            "gatewayclass",
            "serin",
            "--ignore-not-found",
            "--wait=false",
        ]);
    }
}

/// For each `Advance ... canary weight N` step: the answers from the new version among those
/// the proxy gave while that weight held (from half a second after the step's event to a
/// third of a second before the next one), as (weight, answers, from the new version).
fn shares_by_step(
    events: &[(k8s_openapi::jiff::Timestamp, String, String)],
    answers: &[(k8s_openapi::jiff::Timestamp, String)],
    canary: &str,
    new_version: &str,
) -> Vec<(u32, u64, u64)> {
    let prefix = format!("Advance {canary} canary weight ");
    let mut out = Vec::new();
    for (i, (at, _, note)) in events.iter().enumerate() {
        let Some(weight) = note.strip_prefix(&prefix).and_then(|w| w.parse().ok()) else {
            continue;
        };
        let Some((next, _, _)) = events.get(i + 1) else {
            continue;
        };
        let from = *at + std::time::Duration::from_millis(500);
        let to = *next - std::time::Duration::from_millis(300);
        let window: Vec<&String> = answers
            .iter()
            .filter(|(t, _)| *t >= from && *t <= to)
            .map(|(_, v)| v)
            .collect();
        let new = window.iter().filter(|v| **v == new_version).count() as u64;
        out.push((weight, window.len() as u64, new));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_podinfo_example_releases_step_by_step_without_a_failed_request() {
    let client = client().await;
    let ns = TestNamespace::new("e2e-canary");
    let _class = SerinGatewayClass::apply(&ns.name);
    // deploy/examples/podinfo/ as a user applies it; only the analysis interval is shortened
    // (1m in the example) so that the test takes seconds.
    let example = repo_root().join("deploy/examples/podinfo");
    for file in ["gateway.yaml", "deployment.yaml", "hpa.yaml", "canary.yaml"] {
        let text = std::fs::read_to_string(example.join(file)).expect("the podinfo example");
        let text = text.replace(
            "    interval: 1m\n    threshold",
            "    interval: 3s\n    threshold",
        );
        apply(&ns.name, &text);
    }
    let gateway = ProxyGateway::serve("serin", 80);
    let proxy_metrics = gateway.admin_service(&ns.name);
    let kubeconfig = controller_kubeconfig(&ns.name);
    let _controller = spawn_controller(
        &kubeconfig,
        ["--proxy-metrics", &proxy_metrics],
        &ns.name,
        "replica-a",
    );
    let canaries = Api::<DynamicObject>::namespaced_with(client.clone(), &ns.name, &canary_api());
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns.name);
    wait_for_phase(&canaries, "Initialized").await;
    // The primary has its own autoscaler, a copy of the example's.
    let hpa = kubectl(&[
        "-n",
        &ns.name,
        "get",
        "hpa/podinfo-primary",
        "-o",
        "jsonpath={.spec.scaleTargetRef.name} {.spec.minReplicas} {.spec.maxReplicas}",
    ]);
    assert_eq!(hpa.trim(), "podinfo-primary 2 4");
    let authority = gateway.authority();
    let http = Http::new();
    let host = [("host", "app.example.com")];
    wait_serving(&authority, &host).await;
    // Only the example's host is routed.
    let other = http.get(&authority, "/").await.unwrap();
    assert_eq!(other.status, 404, "{other:?}");

    let traffic = Traffic::spawn(authority.clone(), host.to_vec(), None);
    tokio::time::sleep(Duration::from_secs(2)).await;
    release(&ns.name, "6.0.1");
    wait_for_phase(&canaries, "Succeeded").await;
    let recorded = traffic.finish_recorded().await;
    eprintln!(
        "answers by version during the release: {:?}; {} failed",
        recorded.versions,
        recorded.failures.len()
    );
    assert!(
        recorded.failures.is_empty(),
        "{} requests failed: {:?}",
        recorded.failures.len(),
        &recorded.failures[..recorded.failures.len().min(10)]
    );

    // At each step the new version's share of the answers is the step's weight, within
    // binomial tolerance (4.5 standard deviations, plus 2 points for the edges of the window).
    let timed = timed_events(&ns.name);
    let canary = format!("podinfo.{}", ns.name);
    let shares = shares_by_step(&timed, &recorded.answers, &canary, "6.0.1");
    eprintln!("(weight, answers, from 6.0.1) per step: {shares:?}");
    assert_eq!(
        shares.iter().map(|s| s.0).collect::<Vec<_>>(),
        [10, 20, 30, 40, 50]
    );
    for (weight, n, new) in &shares {
        // A loaded machine slows the client down; the tolerance widens with fewer answers.
        assert!(*n >= 10, "only {n} answers at weight {weight}");
        let p = f64::from(*weight) / 100.0;
        let observed = *new as f64 / *n as f64;
        let tolerance = 4.5 * (p * (1.0 - p) / *n as f64).sqrt() + 0.02;
        assert!(
            (observed - p).abs() <= tolerance,
            "weight {weight}: {new} of {n} answers from the new version ({observed:.3}, \
             tolerance {tolerance:.3})"
        );
    }

    // As with Flagger: `kubectl wait` on the Promoted condition, and the printer columns.
    kubectl(&[
        "-n",
        &ns.name,
        "wait",
        "canaries.serin.dev/podinfo",
        "--for=condition=promoted",
        "--timeout=10s",
    ]);
    let row = kubectl(&["-n", &ns.name, "get", "canaries.serin.dev", "--no-headers"]);
    let columns: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&columns[..3], ["podinfo", "Succeeded", "0"], "{row}");
    let primary = deployments.get("podinfo-primary").await.unwrap();
    let image = primary.spec.unwrap().template.spec.unwrap().containers[0]
        .image
        .clone()
        .unwrap();
    assert_eq!(image, "ghcr.io/stefanprodan/podinfo:6.0.1");
    let target = deployments.get("podinfo").await.unwrap();
    assert_eq!(
        target.spec.unwrap().replicas,
        Some(0),
        "the canary is scaled to zero"
    );

    // The events read as seed 003 lists them, in Flagger's order and wording.
    let events: Vec<String> = timed.into_iter().map(|(_, _, note)| note).collect();
    eprintln!("events:\n{}", events.join("\n"));
    let position = |expected: &str| {
        events
            .iter()
            .position(|e| e == expected)
            .unwrap_or_else(|| panic!("no event {expected:?} in {events:?}"))
    };
    let initialized = position(&format!("Initialization done! {canary}"));
    let detected = position(&format!("New revision detected! Scaling up {canary}"));
    let started = position(&format!("Starting canary analysis for {canary}"));
    let copying = position(&format!(
        "Copying {canary} template spec to podinfo-primary.{}",
        ns.name
    ));
    let routing = position("Routing all traffic to primary");
    let completed = position(&format!("Promotion completed! Scaling down {canary}"));
    assert!(
        initialized < detected
            && detected < started
            && started < copying
            && copying < routing
            && routing < completed,
        "{events:?}"
    );
    assert_eq!(
        advances(&events, &canary),
        [10, 20, 30, 40, 50],
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_release_halts_and_rolls_back() {
    let setup = Setup::start("e2e-rollback", &weighted()).await;
    let ns = &setup.ns;
    let traffic = Traffic::start(setup.authority.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The bad release: the same image, answering 500 to one request in five.
    kubectl(&[
        "-n",
        &ns.name,
        "set",
        "env",
        "deployment/podinfo",
        "FAULT_ERROR_PERCENT=20",
    ]);
    let canary = setup.wait_for_phase("Failed").await;
    let status = &canary.data["status"];
    assert_eq!(status["canaryWeight"], 0);
    let promoted = status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Promoted"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(promoted["status"], "False", "{promoted}");
    assert_eq!(promoted["reason"], "Failed", "{promoted}");
    let (versions, failures) = traffic.finish().await;
    eprintln!(
        "answers during the release: {versions:?}; {} failed",
        failures.len()
    );
    assert!(!failures.is_empty(), "the bad release did answer 500s");
    // All traffic is back on the primary: nothing fails any more.
    let http = Http::new();
    for _ in 0..200 {
        let answer = http.get(&setup.authority, "/").await.unwrap();
        assert_eq!(
            answer.status, 200,
            "after the rollback only the primary answers"
        );
    }
    let target = setup.deployments.get("podinfo").await.unwrap();
    assert_eq!(
        target.spec.unwrap().replicas,
        Some(0),
        "the canary is scaled to zero"
    );

    let events = events(&ns.name);
    eprintln!("events:\n{}", events.join("\n"));
    let name = format!("podinfo.{}", ns.name);
    let halts = events
        .iter()
        .filter(|e| e.starts_with(&format!("Halt {name} advancement success rate")))
        .count();
    assert!(halts >= 2, "halts on the success rate: {events:?}");
    let position = |m: &str| {
        events
            .iter()
            .position(|e| e == m)
            .unwrap_or_else(|| panic!("no event {m:?} in {events:?}"))
    };
    assert!(
        position(&format!(
            "Rolling back {name} failed checks threshold reached 3"
        )) < position(&format!("Canary failed! Scaling down {name}"))
    );
}

/// The canary's weight (percent) in the HTTPRoute `podinfo`: the weight of its
/// `podinfo-canary` backend in the last rule (the catch-all; the API server gives it the
/// default match, `PathPrefix /`).
fn route_canary_weight(route: &DynamicObject) -> Option<u64> {
    let rules = route.data["spec"]["rules"].as_array()?;
    let rule = rules.last()?;
    let refs = rule["backendRefs"].as_array()?;
    let canary = refs.iter().find(|b| b["name"] == "podinfo-canary")?;
    // serin-controller writes basis points.
    Some(canary["weight"].as_u64()? / 100)
}

/// Waits for the controller's next route write, stops the process at once (SIGSTOP), and
/// kills it (SIGKILL, then starts it again) if the Canary's status does not show the route's
/// weight yet: a crash between a step's route write and its status write. Otherwise lets it
/// go on (SIGCONT) and waits for the next write. Returns the route's and the status's weight.
async fn kill_between_route_and_status_writes(setup: &mut Setup) -> (u64, u64) {
    use futures_util::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};

    let routes = Api::<DynamicObject>::namespaced_with(
        client().await,
        &setup.ns.name,
        &ApiResource {
            group: "gateway.networking.k8s.io".into(),
            version: "v1".into(),
            api_version: "gateway.networking.k8s.io/v1".into(),
            kind: "HTTPRoute".into(),
            plural: "httproutes".into(),
        },
    );
    let config = watcher::Config::default().fields("metadata.name=podinfo");
    let mut changes = watcher(routes, config).applied_objects().boxed();
    let mut seen = None;
    while let Some(change) = changes.next().await {
        let Ok(route) = change else { continue };
        let weight = route_canary_weight(&route);
        if weight == seen {
            continue;
        }
        let first = seen.is_none();
        seen = weight;
        if first {
            // The route as it was when the watch started: not a write of this step.
            continue;
        }
        let pid = setup.controller.process.0.id().to_string();
        let signal = |sig: &str| {
            let _ = Command::new("kill").args([sig, &pid]).status();
        };
        signal("-STOP");
        let status = setup.canaries.get("podinfo").await.unwrap().data["status"]["canaryWeight"]
            .as_u64()
            .unwrap_or(0);
        let route = weight.unwrap_or(0);
        if status != route {
            setup.kill_and_restart_controller();
            return (route, status);
        }
        signal("-CONT");
    }
    panic!("the route watch ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_killed_mid_release_resumes_without_skipping_or_repeating_a_step() {
    let mut setup = Setup::start("e2e-crash", &weighted()).await;
    let ns = setup.ns.name.clone();
    let traffic = Traffic::start(setup.authority.clone());
    // The controller waits 300 ms between a step's writes to the cluster and its status
    // write (SERIN_CONTROLLER_PAUSE_BEFORE_STATUS, fault injection), so that a kill can land
    // there for certain.
    setup.controller_env = vec![(
        "SERIN_CONTROLLER_PAUSE_BEFORE_STATUS".to_owned(),
        "300".to_owned(),
    )];
    setup.kill_and_restart_controller();
    release(&ns, "6.0.1");
    // One kill exactly between a step's route write and its status write: the controller is
    // stopped (SIGSTOP) as soon as the route changes, and killed if the status does not show
    // the new weight yet; then five kills at random points of the release (steps are 2 s
    // apart).
    let between = tokio::time::timeout(
        Duration::from_secs(60),
        kill_between_route_and_status_writes(&mut setup),
    )
    .await
    .expect("a kill between a route write and its status write");
    eprintln!(
        "killed with the route at {}% and the status at {}%",
        between.0, between.1
    );
    let mut kills = Vec::new();
    for _ in 0..5 {
        let pause = Duration::from_millis(300 + fastrand::u64(..2500));
        tokio::time::sleep(pause).await;
        let phase = phase(&setup.canaries)
            .await
            .map(|(p, _)| p)
            .unwrap_or_default();
        kills.push(format!("{pause:?} ({phase})"));
        setup.kill_and_restart_controller();
    }
    eprintln!("killed after {kills:?}");
    setup.wait_for_phase("Succeeded").await;
    let (versions, failures) = traffic.finish().await;
    eprintln!(
        "answers by version: {versions:?}; {} failed",
        failures.len()
    );
    assert!(failures.is_empty(), "{failures:?}");

    let events = events(&ns);
    eprintln!("events:\n{}", events.join("\n"));
    let canary = format!("podinfo.{ns}");
    let weights = advances(&events, &canary);
    assert_eq!(
        weights,
        [10, 20, 30, 40, 50],
        "the same steps as an uninterrupted release"
    );
    for once in [
        format!("Initialization done! {canary}"),
        format!("New revision detected! Scaling up {canary}"),
        format!("Starting canary analysis for {canary}"),
        format!("Copying {canary} template spec to podinfo-primary.{ns}"),
        format!("Promotion completed! Scaling down {canary}"),
    ] {
        assert_eq!(
            events.iter().filter(|e| **e == once).count(),
            1,
            "{once:?} exactly once in {events:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_canary_changes_nothing_and_names_the_field() {
    let client = client().await;
    let ns = TestNamespace::new("e2e-invalid");
    apply(&ns.name, podinfo());
    apply(
        &ns.name,
        r#"apiVersion: serin.dev/v1alpha1
kind: Canary
metadata:
  name: podinfo
spec:
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: podinfo}
  service:
    port: 9898
    gatewayRefs: [{name: public}]
  analysis:
    interval: 2s
    threshold: 3
    maxWeight: 150
    stepWeight: 10
"#,
    );
    let kubeconfig = controller_kubeconfig(&ns.name);
    let _controller = spawn_controller(
        &kubeconfig,
        ["--proxy-admin", &format!("127.0.0.1:{}", free_port())],
        &ns.name,
        "replica-a",
    );
    let canaries = Api::<DynamicObject>::namespaced_with(client.clone(), &ns.name, &canary_api());
    let condition = eventually(
        "the Valid=False condition",
        Duration::from_secs(60),
        || async {
            let canary = canaries.get("podinfo").await.map_err(|e| e.to_string())?;
            canary.data["status"]["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "Valid").cloned())
                .ok_or_else(|| format!("{:?}", canary.data.get("status")))
        },
    )
    .await;
    assert_eq!(condition["status"], "False");
    assert_eq!(condition["reason"], "InvalidSpec");
    let message = condition["message"].as_str().unwrap_or_default();
    assert!(message.contains("spec.analysis.maxWeight"), "{message}");
    let events = events(&ns.name);
    assert!(
        events.iter().any(|e| e.contains("spec.analysis.maxWeight")),
        "{events:?}"
    );
    // Nothing in the cluster changed: no primary, no Services, no route, the target as it was.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns.name);
    assert!(
        deployments
            .get_opt("podinfo-primary")
            .await
            .unwrap()
            .is_none()
    );
    let target = deployments.get("podinfo").await.unwrap();
    assert_eq!(target.spec.unwrap().replicas, Some(2));
    let services = kubectl(&["-n", &ns.name, "get", "services,httproutes", "-o", "name"]);
    assert_eq!(services.trim(), "", "nothing generated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ab_testing_by_header_sends_matching_requests_to_the_canary_until_promotion() {
    ab_release(
        "e2e-ab",
        "    - headers:
        x-canary:
          regex: \".*insider.*\"
",
        ("x-canary", "insider"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ab_testing_by_cookie_sends_matching_requests_to_the_canary_until_promotion() {
    // As in Flagger's A/B tutorial: the `canary=always` cookie, first in the Cookie header or
    // right after a `;` (the tutorial's regular expression).
    ab_release(
        "e2e-ab-cookie",
        "    - headers:
        cookie:
          regex: \"^(.*?;)?(canary=always)(;.*)?$\"
",
        ("cookie", "canary=always; theme=dark"),
    )
    .await;
}

/// An A/B release with `matches` (YAML list items indented four spaces) as
/// `analysis.match`: requests carrying `insider` reach the canary, the others the primary,
/// until promotion.
async fn ab_release(prefix: &str, matches: &str, insider: (&'static str, &'static str)) {
    let setup = Setup::start(
        prefix,
        &analysis("2s", &format!("    iterations: 4\n    match:\n{matches}")),
    )
    .await;
    let ns = setup.ns.name.clone();
    let traffic = Traffic::start_with(setup.authority.clone(), Some(insider));
    release(&ns, "6.0.1");
    // While the analysis runs, insiders get the canary and everyone else the primary.
    setup.wait_for_phase("Progressing").await;
    let http = Http::new();
    eventually("the A/B route", Duration::from_secs(30), || async {
        let answer = http.get_with(&setup.authority, "/", &[insider]).await?;
        (answer.version.as_deref() == Some("6.0.1"))
            .then_some(())
            .ok_or_else(|| format!("{answer:?}"))
    })
    .await;
    // Near misses stay on the primary.
    let near_miss = match insider.0 {
        "cookie" => ("cookie", "canary=never; xcanary=always"),
        _ => (insider.0, "outsider"),
    };
    for _ in 0..50 {
        let matching = http
            .get_with(&setup.authority, "/", &[insider])
            .await
            .unwrap();
        let other = http.get(&setup.authority, "/").await.unwrap();
        let near = http
            .get_with(&setup.authority, "/", &[near_miss])
            .await
            .unwrap();
        if setup.canaries.get("podinfo").await.unwrap().data["status"]["phase"] != "Progressing" {
            break;
        }
        assert_eq!(matching.version.as_deref(), Some("6.0.1"));
        assert_eq!(other.version.as_deref(), Some("6.0.0"));
        assert_eq!(near.version.as_deref(), Some("6.0.0"), "{near_miss:?}");
    }
    setup.wait_for_phase("Succeeded").await;
    let (versions, failures) = traffic.finish().await;
    eprintln!("answers: {versions:?}; {} failed", failures.len());
    assert!(failures.is_empty(), "{failures:?}");
    let events = events(&ns);
    let canary = format!("podinfo.{ns}");
    for i in 1..=4 {
        let expected = format!("Advance {canary} canary iteration {i}/4");
        assert!(events.contains(&expected), "{expected:?} in {events:?}");
    }
    let primary = setup.deployments.get("podinfo-primary").await.unwrap();
    let image = primary.spec.unwrap().template.spec.unwrap().containers[0]
        .image
        .clone()
        .unwrap();
    assert_eq!(image, "ghcr.io/stefanprodan/podinfo:6.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_with_mirroring_copies_traffic_to_the_canary_and_answers_from_the_primary() {
    let setup = Setup::start(
        "e2e-mirror",
        &analysis("2s", "    iterations: 4\n    mirror: true\n"),
    )
    .await;
    let ns = setup.ns.name.clone();
    let traffic = Traffic::start(setup.authority.clone());
    release(&ns, "6.0.1");
    // While mirrored, clients are answered by the primary only; the canary gets the copies
    // (serin-proxy counts them with traffic="mirror").
    setup.wait_for_phase("Progressing").await;
    let metrics = setup.gateway.admin_authority();
    let http = Http::new();
    let mirrored = eventually(
        "mirrored requests to the canary",
        Duration::from_secs(30),
        || async {
            let body = http.get(&metrics, "/metrics").await?.body;
            let text = String::from_utf8_lossy(&body).into_owned();
            let copies: f64 = text
                .lines()
                .filter(|l| l.starts_with("serin_http_requests_total{"))
                .filter(|l| l.contains(&format!("backend=\"{ns}/podinfo-canary\"")))
                .filter(|l| l.contains("traffic=\"mirror\""))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            (copies > 20.0)
                .then_some(copies)
                .ok_or_else(|| format!("{copies} copies"))
        },
    )
    .await;
    for _ in 0..30 {
        let answer = http.get(&setup.authority, "/").await.unwrap();
        let phase = setup.canaries.get("podinfo").await.unwrap().data["status"]["phase"].clone();
        if phase != "Progressing" {
            break;
        }
        assert_eq!(
            answer.version.as_deref(),
            Some("6.0.0"),
            "clients get the primary's answers"
        );
    }
    setup.wait_for_phase("Succeeded").await;
    let (versions, failures) = traffic.finish().await;
    eprintln!(
        "answers: {versions:?}; {} failed; {mirrored} copies seen",
        failures.len()
    );
    assert!(failures.is_empty(), "{failures:?}");
    let events = events(&ns);
    let canary = format!("podinfo.{ns}");
    for i in 1..=4 {
        let expected = format!("Advance {canary} canary iteration {i}/4");
        assert!(events.contains(&expected), "{expected:?} in {events:?}");
    }
    assert!(
        events.contains(&format!("Promotion completed! Scaling down {canary}")),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_affinity_keeps_a_pinned_client_on_the_new_version() {
    let setup = Setup::start(
        "e2e-affinity",
        &analysis(
            "3s",
            "    maxWeight: 50
    stepWeight: 20
    sessionAffinity:
      cookieName: flagger-cookie
      maxAge: 21600
",
        ),
    )
    .await;
    let ns = setup.ns.name.clone();
    let traffic = Traffic::start(setup.authority.clone());
    release(&ns, "6.0.1");
    setup.wait_for_phase("Progressing").await;
    // A new client lands on the canary now and then; the answer pins it with the cookie.
    let http = Http::new();
    let cookie = eventually(
        "an answer from the canary with the cookie",
        Duration::from_secs(30),
        || async {
            let answer = http.get(&setup.authority, "/").await?;
            let cookie = answer
                .set_cookies
                .iter()
                .find(|c| c.starts_with("flagger-cookie="))
                .cloned();
            match (answer.version.as_deref(), cookie) {
                (Some("6.0.1"), Some(cookie)) => Ok(cookie),
                (version, cookie) => Err(format!("{version:?} {cookie:?}")),
            }
        },
    )
    .await;
    assert!(cookie.contains("Max-Age=21600"), "{cookie}");
    let pair = cookie.split(';').next().unwrap().to_owned();
    // The pinned client stays on the new version at every weight of the analysis.
    let mut pinned = 0;
    while setup.canaries.get("podinfo").await.unwrap().data["status"]["phase"] == "Progressing" {
        let answer = http
            .get_with(&setup.authority, "/", &[("cookie", &pair)])
            .await
            .unwrap();
        assert_eq!(
            answer.version.as_deref(),
            Some("6.0.1"),
            "pinned to the canary"
        );
        pinned += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(pinned > 20, "{pinned} pinned requests checked");
    setup.wait_for_phase("Succeeded").await;
    let (versions, failures) = traffic.finish().await;
    eprintln!(
        "answers: {versions:?}; {} failed; {pinned} pinned requests",
        failures.len()
    );
    assert!(failures.is_empty(), "{failures:?}");
}

/// podinfo whose message comes from the ConfigMap `podinfo-config` (as `PODINFO_UI_MESSAGE`).
fn podinfo_with_config(message: &str) -> String {
    let deployment = podinfo().replace(
        "        ports:\n",
        "        env:
        - name: PODINFO_UI_MESSAGE
          valueFrom:
            configMapKeyRef: {name: podinfo-config, key: message}
        ports:\n",
    );
    format!("{}---\n{deployment}", config_map(message))
}

fn config_map(message: &str) -> String {
    format!(
        "apiVersion: v1
kind: ConfigMap
metadata:
  name: podinfo-config
data:
  message: {message}
"
    )
}

/// The ConfigMap an env var reads its value from.
fn config_map_of(var: &k8s_openapi::api::core::v1::EnvVar) -> String {
    var.value_from
        .as_ref()
        .and_then(|from| from.config_map_key_ref.as_ref())
        .map(|r| r.name.clone())
        .unwrap_or_default()
}

/// The `message` of the app's answer to `/`.
async fn message(http: &Http, authority: &str) -> Result<String, String> {
    let answer = http.get(authority, "/").await?;
    let body: serde_json::Value =
        serde_json::from_slice(&answer.body).map_err(|e| format!("{e}: {answer:?}"))?;
    Ok(body["message"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_map_change_alone_starts_a_release_and_the_primary_runs_its_own_copy() {
    let setup =
        Setup::start_with("e2e-config", &podinfo_with_config("first"), "", &weighted()).await;
    let ns = setup.ns.name.clone();
    let config_maps = Api::<ConfigMap>::namespaced(client().await, &ns);
    // Bootstrap: the primary runs on the copy `podinfo-config-primary`.
    let primary_env = |d: Deployment| {
        d.spec.unwrap().template.spec.unwrap().containers[0]
            .env
            .clone()
            .unwrap_or_default()
    };
    let env = primary_env(setup.deployments.get("podinfo-primary").await.unwrap());
    assert_eq!(config_map_of(&env[0]), "podinfo-config-primary");
    let copy = config_maps.get("podinfo-config-primary").await.unwrap();
    assert_eq!(copy.data.unwrap()["message"], "first");
    let http = Http::new();
    assert_eq!(message(&http, &setup.authority).await.unwrap(), "first");
    let status = setup.canaries.get("podinfo").await.unwrap().data["status"].clone();
    assert!(
        status["trackedConfigs"]["configmap/podinfo-config"].is_string(),
        "{status}"
    );

    // The release: only the ConfigMap changes.
    let traffic = Traffic::start(setup.authority.clone());
    apply(&ns, &config_map("second"));
    setup.wait_for_phase("Succeeded").await;
    let (versions, failures) = traffic.finish().await;
    eprintln!("answers: {versions:?}; {} failed", failures.len());
    assert!(failures.is_empty(), "{failures:?}");
    let events = events(&ns);
    let canary = format!("podinfo.{ns}");
    assert!(
        events.contains(&format!("New revision detected! Scaling up {canary}")),
        "{events:?}"
    );
    assert_eq!(
        advances(&events, &canary),
        [10, 20, 30, 40, 50],
        "{events:?}"
    );
    // Promoted: the primary's copy carries the new message, and the primary still uses its copy.
    let copy = config_maps.get("podinfo-config-primary").await.unwrap();
    assert_eq!(copy.data.unwrap()["message"], "second");
    let env = primary_env(setup.deployments.get("podinfo-primary").await.unwrap());
    assert_eq!(config_map_of(&env[0]), "podinfo-config-primary");
    eventually(
        "the primary answering with the new message",
        Duration::from_secs(30),
        || async {
            match message(&http, &setup.authority).await? {
                m if m == "second" => Ok(()),
                m => Err(m),
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_canary_with_revert_on_deletion_hands_traffic_back_to_the_target() {
    let setup = Setup::start_with(
        "e2e-revert",
        &podinfo_with_config("kept"),
        "  revertOnDeletion: true\n",
        &weighted(),
    )
    .await;
    let ns = setup.ns.name.clone();
    let client = client().await;
    eventually("the finalizer", Duration::from_secs(30), || async {
        let canary = setup
            .canaries
            .get("podinfo")
            .await
            .map_err(|e| e.to_string())?;
        let finalizers = canary.metadata.finalizers.clone().unwrap_or_default();
        finalizers
            .iter()
            .any(|f| f == "serin.dev/revert-on-deletion")
            .then_some(())
            .ok_or_else(|| format!("{finalizers:?}"))
    })
    .await;
    let traffic = Traffic::start(setup.authority.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    kubectl(&[
        "-n",
        &ns,
        "delete",
        "canaries.serin.dev/podinfo",
        "--wait=false",
    ]);
    eventually("the Canary gone", Duration::from_secs(120), || async {
        match setup.canaries.get_opt("podinfo").await {
            Ok(None) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // The target serves again, at the primary's replicas.
    let target = setup.deployments.get("podinfo").await.unwrap();
    assert_eq!(target.spec.unwrap().replicas, Some(2));
    let services = Api::<Service>::namespaced(client.clone(), &ns);
    let apex = services.get("podinfo").await.unwrap();
    assert_eq!(
        apex.spec.unwrap().selector.unwrap()["app"],
        "podinfo",
        "the apex Service selects the target's pods"
    );
    assert!(
        apex.metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
    );
    // Everything else the Canary generated is collected.
    eventually(
        "nothing generated left",
        Duration::from_secs(60),
        || async {
            let left = kubectl(&[
                "-n",
                &ns,
                "get",
                "deployments,services,configmaps,httproutes",
                "-o",
                "name",
            ]);
            let mut names: Vec<&str> = left.lines().collect();
            names.retain(|n| *n != "configmap/kube-root-ca.crt");
            names.sort();
            let expected = [
                "configmap/podinfo-config",
                "deployment.apps/podinfo",
                "httproute.gateway.networking.k8s.io/podinfo",
                "service/podinfo",
                // The test's own: how the controller finds the proxy.
                "service/serin-proxy-admin",
            ];
            (names == expected)
                .then_some(())
                .ok_or_else(|| format!("{names:?}"))
        },
    )
    .await;
    let http = Http::new();
    for _ in 0..50 {
        let answer = http.get(&setup.authority, "/").await.unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(answer.version.as_deref(), Some("6.0.0"));
    }
    let (versions, failures) = traffic.finish().await;
    eprintln!("answers: {versions:?}; {} failed", failures.len());
    assert!(failures.is_empty(), "{failures:?}");
}

/// The holder of the controller's leader Lease for `namespace`.
fn lease_holder(namespace: &str) -> String {
    kubectl(&[
        "-n",
        "serin-system",
        "get",
        "leases.coordination.k8s.io",
        &format!("serin-controller-{namespace}"),
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ])
    .trim()
    .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_only_the_leader_writes_and_the_standby_finishes_the_release() {
    let mut setup = Setup::start("e2e-leader", &weighted()).await;
    let ns = setup.ns.name.clone();
    let standby = spawn_controller(
        &setup.kubeconfig,
        ["--proxy-metrics", &setup.proxy_metrics],
        &ns,
        "replica-b",
    );
    let http = Http::new();
    let leader_gauge = |port: u16| {
        let http = http.clone();
        async move {
            let body = http
                .get(&format!("127.0.0.1:{port}"), "/metrics")
                .await?
                .body;
            String::from_utf8_lossy(&body)
                .lines()
                .find_map(|l| {
                    l.strip_prefix("serin_controller_leader ")
                        .map(str::to_owned)
                })
                .ok_or_else(|| "no serin_controller_leader".to_owned())
        }
    };
    // Both serve their endpoint and are ready; only replica-a leads.
    eventually("both replicas ready", Duration::from_secs(30), || async {
        for port in [setup.controller.listen, standby.listen] {
            let ready = http.get(&format!("127.0.0.1:{port}"), "/readyz").await?;
            if ready.status != 200 {
                return Err(format!("{port}: /readyz {}", ready.status));
            }
        }
        Ok(())
    })
    .await;
    assert_eq!(lease_holder(&ns), "replica-a");
    assert_eq!(leader_gauge(setup.controller.listen).await.unwrap(), "1");
    assert_eq!(leader_gauge(standby.listen).await.unwrap(), "0");

    let traffic = Traffic::start(setup.authority.clone());
    release(&ns, "6.0.1");
    // Kill the leader once the release has advanced twice.
    eventually("weight 20", Duration::from_secs(120), || async {
        let (phase, canary) = phase(&setup.canaries).await?;
        let weight = canary.data["status"]["canaryWeight"].as_u64().unwrap_or(0);
        (phase == "Progressing" && weight >= 20)
            .then_some(())
            .ok_or_else(|| format!("{phase} {weight}"))
    })
    .await;
    let before_kill = recorded_events(&ns).len();
    let _ = setup.controller.process.0.kill();
    let _ = setup.controller.process.0.wait();
    let killed = std::time::Instant::now();
    setup.wait_for_phase("Succeeded").await;
    eprintln!(
        "the standby finished the release {:?} after the leader was killed",
        killed.elapsed()
    );
    assert_eq!(lease_holder(&ns), "replica-b");
    assert_eq!(leader_gauge(standby.listen).await.unwrap(), "1");
    let (versions, failures) = traffic.finish().await;
    eprintln!("answers: {versions:?}; {} failed", failures.len());
    assert!(failures.is_empty(), "{failures:?}");

    // Only the leader wrote: every Event before the kill is replica-a's, every one after is
    // replica-b's; the release took the same steps as an uninterrupted one.
    let recorded = recorded_events(&ns);
    eprintln!("events: {recorded:#?}");
    let first_b = recorded
        .iter()
        .position(|(i, _)| i == "replica-b")
        .expect("replica-b recorded events");
    assert!(
        first_b >= before_kill,
        "replica-b wrote before the leader was killed"
    );
    let (before, after) = recorded.split_at(first_b);
    assert!(before.iter().all(|(i, _)| i == "replica-a"), "{before:?}");
    assert!(after.iter().all(|(i, _)| i == "replica-b"), "{after:?}");
    let notes: Vec<String> = recorded.into_iter().map(|(_, n)| n).collect();
    let canary = format!("podinfo.{ns}");
    assert_eq!(advances(&notes, &canary), [10, 20, 30, 40, 50], "{notes:?}");
    // The Canary's status was last written by the controller's field manager.
    let managers = kubectl(&[
        "-n",
        &ns,
        "get",
        "canaries.serin.dev/podinfo",
        "--show-managed-fields",
        "-o",
        "jsonpath={range .metadata.managedFields[*]}{.manager}{\" \"}{.subresource}{\"\\n\"}{end}",
    ]);
    assert!(
        managers
            .lines()
            .any(|l| l.trim() == "serin-controller status"),
        "{managers}"
    );
}
