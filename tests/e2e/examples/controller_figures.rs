//! Measures serin-controller against the test cluster and prints the figures:
//!
//! 1. a step's route write → serin-proxy serving the new weights: an HTTPRoute's weights are
//!    changed through the API (as the controller writes a step) and the proxy's `/routes` is
//!    polled until it shows them, `--writes` times; p50 / p99 / max;
//! 2. the controller's CPU time per reconcile and its RSS with 1 and with `--canaries`
//!    Canaries (each with its Deployment, bootstrapped to Initialized), from `/proc` and the
//!    controller's own `serin_canary_analysis_duration_seconds_count`.
//!
//! Run inside the test cluster's namespace (a measurement, not a test; the machine's load
//! shows in the figures):
//!
//! ```text
//! tests/cluster/netns tests/cluster/up /tmp/k1
//! tests/cluster/shell /tmp/k1 cargo run -p serin-e2e --example controller_figures -- \
//!     --writes 200 --canaries 100
//! ```

use std::process::Command;
use std::time::{Duration, Instant};

use serin_e2e::{
    ChildGuard, Http, ProxyGateway, TestNamespace, apply, binary, eventually, kubeconfig, kubectl,
};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// User + system CPU time of `pid`, from /proc.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<u64> = after
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of stat; 11 and 12 after the command name.
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn rss_mib(pid: u32) -> f64 {
    serin_e2e::process_rss_kib(pid).unwrap_or(0) as f64 / 1024.0
}

async fn reconciles(http: &Http, listen: u16) -> f64 {
    let body = http
        .get(&format!("127.0.0.1:{listen}"), "/metrics")
        .await
        .map(|a| a.body)
        .unwrap_or_default();
    String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| l.starts_with("serin_canary_analysis_duration_seconds_count"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn deployment_and_canary(name: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: serin.dev/testapp:1.0.0
        ports: [{{containerPort: 9898}}]
        readinessProbe:
          httpGet: {{path: /readyz, port: 9898}}
          periodSeconds: 1
---
apiVersion: serin.dev/v1alpha1
kind: Canary
metadata:
  name: {name}
spec:
  targetRef: {{apiVersion: apps/v1, kind: Deployment, name: {name}}}
  service:
    port: 9898
    gatewayRefs: [{{name: public}}]
  analysis:
    interval: 1m
    threshold: 3
    maxWeight: 50
    stepWeight: 10
"#
    )
}

async fn step_latency(writes: usize) {
    let ns = TestNamespace::new("figures-route");
    let gateway = ProxyGateway::start(&ns.name);
    apply(
        &ns.name,
        "apiVersion: serin.dev/v1alpha1
kind: Backend
metadata: {name: a}
spec: {endpoints: [{host: 127.0.0.1, port: 9}]}
---
apiVersion: serin.dev/v1alpha1
kind: Backend
metadata: {name: b}
spec: {endpoints: [{host: 127.0.0.1, port: 9}]}
",
    );
    let http = Http::new();
    let routes = || async {
        let body = http
            .get(&gateway.admin_authority(), "/routes")
            .await
            .map(|a| a.body)
            .unwrap_or_default();
        String::from_utf8_lossy(&body).into_owned()
    };
    let route = |canary: u32| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: podinfo}}
spec:
  parentRefs: [{{name: public}}]
  rules:
  - backendRefs:
    - {{group: serin.dev, kind: Backend, name: a, weight: {}}}
    - {{group: serin.dev, kind: Backend, name: b, weight: {canary}}}
",
            10_000 - canary
        )
    };
    let marker = |canary: u32| format!("{}", 10_000 - canary);
    apply(&ns.name, &route(1));
    eventually("the first route", Duration::from_secs(30), || async {
        let now = routes().await;
        now.contains(&marker(1)).then_some(()).ok_or(now)
    })
    .await;
    let client = serin_e2e::client().await;
    let api: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
        client,
        &ns.name,
        &kube::discovery::ApiResource {
            group: "gateway.networking.k8s.io".into(),
            version: "v1".into(),
            api_version: "gateway.networking.k8s.io/v1".into(),
            kind: "HTTPRoute".into(),
            plural: "httproutes".into(),
        },
    );
    let mut latencies = Vec::new();
    for i in 0..writes {
        let canary = 2 + (i as u32 % 9_000);
        let object = serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "podinfo"},
            "spec": {
                "parentRefs": [{"name": "public"}],
                "rules": [{"backendRefs": [
                    {"group": "serin.dev", "kind": "Backend", "name": "a", "weight": 10_000 - canary},
                    {"group": "serin.dev", "kind": "Backend", "name": "b", "weight": canary},
                ]}],
            },
        });
        let started = Instant::now();
        api.patch(
            "podinfo",
            &kube::api::PatchParams::apply("figures").force(),
            &kube::api::Patch::Apply(&object),
        )
        .await
        .expect("writing the route");
        loop {
            if routes().await.contains(&marker(canary)) {
                break;
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        latencies.push(started.elapsed());
    }
    latencies.sort();
    println!(
        "route write -> proxy serving it, {} writes: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        percentile(&latencies, 50.0).as_secs_f64() * 1e3,
        percentile(&latencies, 99.0).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3,
    );
}

async fn controller_cost(canaries: usize) {
    let ns = TestNamespace::new("figures-canaries");
    let gateway = ProxyGateway::start(&ns.name);
    let listen = serin_e2e::free_port();
    let controller = ChildGuard(
        Command::new(binary("serin-controller"))
            .env("KUBECONFIG", kubeconfig())
            .args(["--proxy-admin", &format!("127.0.0.1:{}", gateway.admin)])
            .args(["--namespace", &ns.name])
            .args(["--listen", &format!("127.0.0.1:{listen}")])
            .args(["--leader-elect=false"])
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("starting serin-controller"),
    );
    let pid = controller.0.id();
    let http = Http::new();
    let initialized = |n: usize| {
        let ns = ns.name.clone();
        async move {
            let out = kubectl(&[
                "-n",
                &ns,
                "get",
                "canaries.serin.dev",
                "-o",
                "jsonpath={range .items[*]}{.status.phase}{\"\\n\"}{end}",
            ]);
            let done = out.lines().filter(|l| *l == "Initialized").count();
            (done >= n).then_some(()).ok_or(format!("{done} of {n}"))
        }
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = rss_mib(pid);
    apply(&ns.name, &deployment_and_canary("app-0"));
    eventually("one Canary Initialized", Duration::from_secs(120), || {
        initialized(1)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let one = rss_mib(pid);
    let cpu_before = cpu_time(pid);
    let reconciles_before = reconciles(&http, listen).await;
    let started = Instant::now();
    let all: String = (1..canaries)
        .map(|i| deployment_and_canary(&format!("app-{i}")))
        .collect::<Vec<_>>()
        .join("---\n");
    apply(&ns.name, &all);
    eventually(
        &format!("{canaries} Canaries Initialized"),
        Duration::from_secs(900),
        || initialized(canaries),
    )
    .await;
    let bootstrap = started.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let many = rss_mib(pid);
    let cpu = cpu_time(pid).saturating_sub(cpu_before);
    let count = reconciles(&http, listen).await - reconciles_before;
    println!(
        "controller RSS: {idle:.1} MiB idle, {one:.1} MiB with 1 Canary, {many:.1} MiB with \
         {canaries} Canaries"
    );
    println!(
        "bootstrapping {} more Canaries took {:.1} s: {count} reconciles, {:.0} ms CPU in all, \
         {:.2} ms CPU per reconcile",
        canaries - 1,
        bootstrap.as_secs_f64(),
        cpu.as_secs_f64() * 1e3,
        cpu.as_secs_f64() * 1e3 / count.max(1.0)
    );
    drop(controller);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    step_latency(arg("--writes", 200)).await;
    controller_cost(arg("--canaries", 100)).await;
}
