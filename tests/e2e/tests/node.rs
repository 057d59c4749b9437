//! The test node (tests/cluster): Deployments roll out through the real controllers, Pods run
//! as local processes on 198.18.x.y, EndpointSlices come from the real EndpointSlice
//! controller, and traffic reaches those processes — directly and through serin-proxy.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::{Api, ListParams};
use kube::runtime::{WatchStreamExt, watcher};
use serin_e2e::{
    Http, ProxyGateway, TestNamespace, apply, client, eventually, kubectl, pod_ip, pod_pids,
    pod_ready, pods, process_alive, process_rss_kib,
};

/// The seeds' podinfo Deployment (image, ports, probes), with `replicas` and the given tag.
/// The `preStop` sleep keeps a terminating Pod serving while its endpoint's removal reaches the
/// clients, as production Deployments do; without it the roll test sees a request cut off.
fn podinfo(name: &str, tag: &str, replicas: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  labels: {{app: {name}}}
spec:
  replicas: {replicas}
  strategy:
    type: RollingUpdate
    rollingUpdate: {{maxUnavailable: 0, maxSurge: 1}}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      terminationGracePeriodSeconds: 10
      containers:
      - name: podinfod
        image: ghcr.io/stefanprodan/podinfo:{tag}
        imagePullPolicy: IfNotPresent
        command: [./podinfo, --port=9898, --port-metrics=9797, --level=info]
        ports:
        - {{name: http, containerPort: 9898, protocol: TCP}}
        - {{name: http-metrics, containerPort: 9797, protocol: TCP}}
        readinessProbe:
          httpGet: {{path: /readyz, port: 9898}}
          periodSeconds: 1
          failureThreshold: 1
        livenessProbe:
          httpGet: {{path: /healthz, port: http}}
          periodSeconds: 2
        lifecycle:
          preStop:
            sleep: {{seconds: 2}}
---
apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  selector: {{app: {name}}}
  ports:
  - {{name: http, port: 9898, targetPort: http}}
"#
    )
}

async fn wait_available(client: &Client, ns: &str, name: &str, replicas: i32) -> Deployment {
    let deployments = Api::<Deployment>::namespaced(client.clone(), ns);
    eventually(
        &format!("Deployment {ns}/{name} Available with {replicas} ready replicas"),
        Duration::from_secs(90),
        || async {
            let d = deployments.get(name).await.map_err(|e| e.to_string())?;
            let status = d.status.clone().unwrap_or_default();
            let available = status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Available" && c.status == "True");
            let observed = status.observed_generation == d.metadata.generation;
            let settled = status.replicas == Some(replicas)
                && status.ready_replicas == Some(replicas)
                && status.updated_replicas == Some(replicas);
            if available && observed && settled {
                Ok(d)
            } else {
                Err(format!("{status:?}"))
            }
        },
    )
    .await
}

/// Ready endpoint addresses of a Service, from its EndpointSlices.
async fn ready_endpoints(client: &Client, ns: &str, service: &str) -> BTreeSet<String> {
    Api::<EndpointSlice>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={service}")))
        .await
        .expect("listing EndpointSlices")
        .items
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        .flat_map(|e| e.addresses.iter().cloned())
        .collect()
}

/// Waits up to `timeout` until none of `pids` is alive and, with a `selector`, no Pod
/// matches it.
async fn processes_gone(
    client: &Client,
    ns: &str,
    selector: Option<&str>,
    pids: &[u32],
    timeout: Duration,
) {
    eventually(
        "the Pods and their processes to be gone",
        timeout,
        || async {
            let left = match selector {
                Some(selector) => pods(client, ns, selector).await.len(),
                None => 0,
            };
            let alive: Vec<u32> = pids.iter().copied().filter(|&p| process_alive(p)).collect();
            if left == 0 && alive.is_empty() {
                Ok(())
            } else {
                Err(format!("{left} Pods, live processes {alive:?}"))
            }
        },
    )
    .await;
}

fn in_pod_range(ip: &str) -> bool {
    let octets: Vec<u8> = ip.split('.').filter_map(|o| o.parse().ok()).collect();
    octets.len() == 4 && octets[0] == 198 && (octets[1] == 18 || octets[1] == 19)
}

fn version_of(body: &[u8]) -> String {
    let json: serde_json::Value = serde_json::from_slice(body).expect("podinfo answers JSON");
    json["version"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podinfo_deployment_runs_on_the_node_and_its_endpoints_answer() {
    let client = client().await;
    let ns = TestNamespace::new("e2e-node");
    apply(&ns.name, &podinfo("podinfo", "6.0.0", 2));
    wait_available(&client, &ns.name, "podinfo", 2).await;

    // kubectl shows the Pods Running on the node with Pod-range addresses.
    let wide = kubectl(&["-n", &ns.name, "get", "pods", "-o", "wide", "--no-headers"]);
    let rows: Vec<&str> = wide.lines().collect();
    assert_eq!(rows.len(), 2, "{wide}");
    for row in &rows {
        let columns: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(columns[1], "1/1", "{wide}");
        assert_eq!(columns[2], "Running", "{wide}");
        assert!(in_pod_range(columns[5]), "IP column of {row}");
        assert_eq!(columns[6], "serin-node", "{wide}");
    }

    // The EndpointSlice controller publishes exactly the Pods' addresses, and each answers.
    let pods = pods(&client, &ns.name, "app=podinfo").await;
    let ips: BTreeSet<String> = pods.iter().filter_map(pod_ip).collect();
    assert_eq!(ips.len(), 2, "two distinct Pod addresses");
    let endpoints = eventually(
        "the Service's EndpointSlice to list both Pods as ready",
        Duration::from_secs(30),
        || async {
            let ready = ready_endpoints(&client, &ns.name, "podinfo").await;
            if ready == ips {
                Ok(ready)
            } else {
                Err(format!("{ready:?}, Pods {ips:?}"))
            }
        },
    )
    .await;
    let http = Http::new();
    for ip in &endpoints {
        let answer = http.get(&format!("{ip}:9898"), "/").await.unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(version_of(&answer.body), "6.0.0");
        let hostname =
            serde_json::from_slice::<serde_json::Value>(&answer.body).unwrap()["hostname"]
                .as_str()
                .unwrap()
                .to_owned();
        assert!(
            pods.iter()
                .any(|p| p.metadata.name.as_deref() == Some(&hostname)),
            "hostname {hostname} is a Pod's name"
        );
        // Both declared ports are served.
        let metrics = http.get(&format!("{ip}:9797"), "/healthz").await.unwrap();
        assert_eq!(metrics.status, 200);
    }

    // Conditions and container status as a kubelet writes them.
    for pod in &pods {
        let status = pod.status.as_ref().unwrap();
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(status.host_ip.as_deref(), Some("198.18.0.1"));
        let container = &status.container_statuses.as_ref().unwrap()[0];
        assert!(container.ready && container.restart_count == 0);
        assert!(container.state.as_ref().unwrap().running.is_some());
        for condition in ["Ready", "ContainersReady", "Initialized", "PodScheduled"] {
            assert!(
                status
                    .conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == condition && c.status == "True"),
                "condition {condition} in {:?}",
                status.conditions
            );
        }
    }
}

/// Sends requests one after another to the Service's ready endpoints (as a proxy following the
/// EndpointSlice would) until stopped; counts answers by version and failures.
struct EndpointTraffic {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(BTreeMap<String, u64>, Vec<String>)>,
}

impl EndpointTraffic {
    fn start(client: Client, ns: String, service: String) -> EndpointTraffic {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let http = Http::new();
            let mut versions = BTreeMap::new();
            let mut failures = Vec::new();
            let mut endpoints: Vec<String> = Vec::new();
            let mut refreshed = Instant::now() - Duration::from_secs(1);
            let mut turn = 0usize;
            while !flag.load(Ordering::Relaxed) {
                if refreshed.elapsed() >= Duration::from_millis(50) {
                    endpoints = ready_endpoints(&client, &ns, &service)
                        .await
                        .into_iter()
                        .collect();
                    refreshed = Instant::now();
                }
                if endpoints.is_empty() {
                    failures.push("no ready endpoint".to_owned());
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                turn += 1;
                let ip = &endpoints[turn % endpoints.len()];
                match http.get(&format!("{ip}:9898"), "/").await {
                    Ok(a) if a.status == 200 => {
                        *versions.entry(version_of(&a.body)).or_insert(0) += 1;
                    }
                    Ok(a) => failures.push(format!("{ip}: status {}", a.status)),
                    Err(e) => failures.push(e),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (versions, failures)
        });
        EndpointTraffic { stop, task }
    }

    async fn finish(self) -> (BTreeMap<String, u64>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_image_rolls_the_deployment_without_a_failed_request() {
    let client = client().await;
    let ns = TestNamespace::new("e2e-roll");
    apply(&ns.name, &podinfo("podinfo", "6.0.0", 2));
    wait_available(&client, &ns.name, "podinfo", 2).await;
    let old: Vec<Pod> = pods(&client, &ns.name, "app=podinfo").await;
    let old_pids: Vec<u32> = old.iter().flat_map(pod_pids).collect();
    assert_eq!(old_pids.len(), 2, "one process per Pod");
    assert!(old_pids.iter().all(|&pid| process_alive(pid)));

    let traffic = EndpointTraffic::start(client.clone(), ns.name.clone(), "podinfo".into());
    tokio::time::sleep(Duration::from_millis(500)).await;
    kubectl(&[
        "-n",
        &ns.name,
        "set",
        "image",
        "deployment/podinfo",
        "podinfod=ghcr.io/stefanprodan/podinfo:6.0.1",
    ]);
    eventually(
        "the rollout to 6.0.1 to finish",
        Duration::from_secs(120),
        || async {
            let pods = pods(&client, &ns.name, "app=podinfo").await;
            let images: Vec<String> = pods
                .iter()
                .filter_map(|p| p.spec.as_ref()?.containers.first()?.image.clone())
                .collect();
            let all_new = pods.len() == 2
                && images.iter().all(|i| i.ends_with(":6.0.1"))
                && pods.iter().all(pod_ready);
            if all_new {
                Ok(())
            } else {
                Err(format!("{images:?}"))
            }
        },
    )
    .await;
    wait_available(&client, &ns.name, "podinfo", 2).await;
    // Let the traffic see the new endpoints for a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (versions, failures) = traffic.finish().await;
    eprintln!(
        "during the roll: answers by version {versions:?}, {} failed",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} requests failed during the roll: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(
        versions.get("6.0.0").copied().unwrap_or(0) > 0,
        "{versions:?}"
    );
    assert!(
        versions.get("6.0.1").copied().unwrap_or(0) > 0,
        "{versions:?}"
    );

    // The old Pods' processes are gone.
    processes_gone(&client, &ns.name, None, &old_pids, Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_failing_readiness_leaves_the_endpointslice_and_deletion_leaves_no_process() {
    let client = client().await;
    let ns = TestNamespace::new("e2e-ready");
    apply(&ns.name, &podinfo("podinfo", "6.0.0", 2));
    wait_available(&client, &ns.name, "podinfo", 2).await;
    let all = pods(&client, &ns.name, "app=podinfo").await;
    let ips: BTreeSet<String> = all.iter().filter_map(pod_ip).collect();
    eventually("both endpoints ready", Duration::from_secs(30), || async {
        let ready = ready_endpoints(&client, &ns.name, "podinfo").await;
        if ready == ips {
            Ok(())
        } else {
            Err(format!("{ready:?}"))
        }
    })
    .await;

    // podinfo's /readyz/disable makes its readiness probe fail.
    let sick = ips.iter().next().unwrap().clone();
    let http = Http::new();
    assert_eq!(
        http.post(&format!("{sick}:9898"), "/readyz/disable")
            .await
            .unwrap(),
        202
    );
    eventually(
        "the unready Pod to leave the ready endpoints",
        Duration::from_secs(30),
        || async {
            let ready = ready_endpoints(&client, &ns.name, "podinfo").await;
            if ready.len() == 1 && !ready.contains(&sick) {
                Ok(())
            } else {
                Err(format!("{ready:?}"))
            }
        },
    )
    .await;
    http.post(&format!("{sick}:9898"), "/readyz/enable")
        .await
        .unwrap();
    eventually(
        "the Pod to come back once ready",
        Duration::from_secs(30),
        || async {
            let ready = ready_endpoints(&client, &ns.name, "podinfo").await;
            if ready == ips {
                Ok(())
            } else {
                Err(format!("{ready:?}"))
            }
        },
    )
    .await;

    // A crashed process is restarted (restartPolicy Always) and counted.
    let victim = &all[0];
    let pid = pod_pids(victim)[0];
    let name = victim.metadata.name.clone().unwrap();
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    eventually(
        "the killed container to restart",
        Duration::from_secs(30),
        || async {
            let pod = Api::<Pod>::namespaced(client.clone(), &ns.name)
                .get(&name)
                .await
                .map_err(|e| e.to_string())?;
            let status = &pod
                .status
                .as_ref()
                .unwrap()
                .container_statuses
                .as_ref()
                .unwrap()[0];
            let last_exit = status
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .map(|t| t.exit_code);
            if status.restart_count == 1 && pod_ready(&pod) && last_exit == Some(137) {
                Ok(())
            } else {
                Err(format!("{status:?}"))
            }
        },
    )
    .await;

    // kubectl delete deployment: every process goes.
    let pids: Vec<u32> = pods(&client, &ns.name, "app=podinfo")
        .await
        .iter()
        .flat_map(pod_pids)
        .collect();
    assert_eq!(pids.len(), 2);
    kubectl(&[
        "-n",
        &ns.name,
        "delete",
        "deployment",
        "podinfo",
        "--wait=true",
    ]);
    processes_gone(
        &client,
        &ns.name,
        Some("app=podinfo"),
        &pids,
        Duration::from_secs(60),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_the_node_cannot_run_says_so() {
    let client = client().await;
    let ns = TestNamespace::new("e2e-image");
    apply(
        &ns.name,
        r#"apiVersion: v1
kind: Pod
metadata:
  name: nginx
spec:
  containers:
  - name: web
    image: nginx:1.27
"#,
    );
    let pods = Api::<Pod>::namespaced(client, &ns.name);
    let waiting = eventually("ErrImagePull", Duration::from_secs(30), || async {
        let pod = pods.get("nginx").await.map_err(|e| e.to_string())?;
        let waiting = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.first()?.state.as_ref()?.waiting.clone());
        match waiting {
            Some(w) if w.reason.as_deref() == Some("ErrImagePull") => Ok(w),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let message = waiting.message.unwrap_or_default();
    assert!(
        message.contains("nginx:1.27") && message.contains("podinfo"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_from_configmaps_secrets_and_the_downward_api_reaches_the_process() {
    let client = client().await;
    let ns = TestNamespace::new("e2e-env");
    apply(
        &ns.name,
        r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  GREETING: hello from a ConfigMap
---
apiVersion: v1
kind: Secret
metadata:
  name: creds
stringData:
  token: s3cret
---
apiVersion: v1
kind: Pod
metadata:
  name: env
  labels: {app: env}
spec:
  containers:
  - name: app
    image: serin.dev/testapp:1.2.3
    ports: [{containerPort: 8080}]
    envFrom:
    - configMapRef: {name: settings}
    env:
    - name: PODINFO_UI_MESSAGE
      value: "$(GREETING) to $(POD_NAME)"
    - name: POD_NAME
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
    - name: TOKEN
      valueFrom: {secretKeyRef: {name: creds, key: token}}
"#,
    );
    let pod = eventually("the Pod Ready", Duration::from_secs(30), || async {
        let pod = Api::<Pod>::namespaced(client.clone(), &ns.name)
            .get("env")
            .await
            .map_err(|e| e.to_string())?;
        if pod_ready(&pod) {
            Ok(pod)
        } else {
            Err(format!("{:?}", pod.status))
        }
    })
    .await;
    let ip = pod_ip(&pod).unwrap();
    let answer = Http::new().get(&format!("{ip}:8080"), "/").await.unwrap();
    let json: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(json["version"], "1.2.3");
    // $(POD_NAME) is defined after PODINFO_UI_MESSAGE, so it stays as written (Kubernetes' rule).
    assert_eq!(json["message"], "hello from a ConfigMap to $(POD_NAME)");
    let environ =
        std::fs::read(format!("/proc/{}/environ", pod_pids(&pod)[0])).expect("process environ");
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        environ.split('\0').any(|v| v == "TOKEN=s3cret"),
        "{environ}"
    );
    assert!(
        environ.split('\0').any(|v| v == "POD_NAME=env"),
        "{environ}"
    );
}

/// serin-proxy `--kubernetes` in front of real Pods: a Gateway and an HTTPRoute to the podinfo
/// Service; every answer comes from one of its processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serin_proxy_routes_to_the_pods_behind_a_service() {
    let client = client().await;
    let ns = TestNamespace::new("e2e-proxy");
    apply(&ns.name, &podinfo("podinfo", "6.0.0", 2));
    let gateway = ProxyGateway::start(&ns.name);
    apply(
        &ns.name,
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: podinfo
spec:
  parentRefs:
  - name: public
  rules:
  - backendRefs:
    - {name: podinfo, port: 9898}
"#,
    );
    wait_available(&client, &ns.name, "podinfo", 2).await;
    let http = Http::new();
    let authority = gateway.authority();
    eventually(
        "serin-proxy to route to the Pods",
        Duration::from_secs(30),
        || async {
            match http.get(&authority, "/").await {
                Ok(a) if a.status == 200 => Ok(()),
                Ok(a) => Err(format!("status {}", a.status)),
                Err(e) => Err(e),
            }
        },
    )
    .await;
    let names: BTreeSet<String> = pods(&client, &ns.name, "app=podinfo")
        .await
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    let mut seen = BTreeSet::new();
    for _ in 0..100 {
        let answer = http.get(&authority, "/").await.unwrap();
        assert_eq!(answer.status, 200);
        let json: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
        assert_eq!(json["version"], "6.0.0");
        seen.insert(json["hostname"].as_str().unwrap().to_owned());
    }
    assert_eq!(seen, names, "the proxy balances over both Pods");
}

/// 50 Pods at once: each gets its own address and becomes Ready. Prints the time from each
/// Pod's creation to its readiness as a watch on the API sees them, and the memory of a Pod
/// process (the figures, no assertion on them: this machine is shared).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_pods_become_ready() {
    let client = client().await;
    let ns = TestNamespace::new("e2e-fifty");
    // Watch first, so that every Pod's creation is seen as it happens.
    let api = Api::<Pod>::namespaced(client.clone(), &ns.name);
    let stream = watcher(api, watcher::Config::default().labels("app=many")).applied_objects();
    let times = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut created: BTreeMap<String, Instant> = BTreeMap::new();
        let mut ready: BTreeMap<String, Duration> = BTreeMap::new();
        while ready.len() < 50 {
            let Some(Ok(pod)) = stream.next().await else {
                continue;
            };
            let name = pod.metadata.name.clone().unwrap_or_default();
            let first = *created.entry(name.clone()).or_insert_with(Instant::now);
            if pod_ready(&pod) && !ready.contains_key(&name) {
                ready.insert(name, first.elapsed());
            }
        }
        ready.into_values().collect::<Vec<_>>()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    apply(&ns.name, &podinfo("many", "6.0.0", 50));
    wait_available(&client, &ns.name, "many", 50).await;
    let total = started.elapsed();
    let mut delays = tokio::time::timeout(Duration::from_secs(30), times)
        .await
        .expect("the watch saw 50 Pods Ready")
        .unwrap();
    delays.sort_unstable();

    let pods = pods(&client, &ns.name, "app=many").await;
    assert_eq!(pods.len(), 50);
    let ips: BTreeSet<String> = pods.iter().filter_map(pod_ip).collect();
    assert_eq!(ips.len(), 50, "distinct addresses");
    assert!(ips.iter().all(|ip| in_pod_range(ip)));
    let pids: Vec<u32> = pods.iter().flat_map(pod_pids).collect();
    assert_eq!(pids.len(), 50, "one process per Pod");
    let rss: Vec<u64> = pids.iter().filter_map(|&p| process_rss_kib(p)).collect();
    let mean_rss = rss.iter().sum::<u64>() / rss.len().max(1) as u64;
    eprintln!(
        "50 Pods: Deployment Available {:.1} s after apply; Pod created -> Ready (as watched) \
         p50 {} ms, max {} ms; RSS per Pod process mean {mean_rss} KiB, max {} KiB",
        total.as_secs_f64(),
        delays[delays.len() / 2].as_millis(),
        delays[delays.len() - 1].as_millis(),
        rss.iter().max().copied().unwrap_or(0),
    );
}
