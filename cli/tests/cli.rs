//! `serin` as a process: output lines and exit codes.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn serin(args: &[&str]) -> Output {
    match Command::new(env!("CARGO_BIN_EXE_serin"))
        .args(args)
        .output()
    {
        Ok(output) => output,
        Err(err) => panic!("cannot run serin: {err}"),
    }
}

fn stdout_lines(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn valid_files_print_ok_and_exit_0() {
    let canary = fixture("seed-004-canary.yaml");
    let templates = fixture("seed-004-metric-templates.yaml");
    let (canary, templates) = (canary.to_string_lossy(), templates.to_string_lossy());
    let output = serin(&["validate", &canary, &templates]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(
        stdout_lines(&output),
        vec![
            format!("{canary}: Gateway istio-ingress/gateway: ok"),
            format!("{canary}: Canary test/podinfo: ok"),
            format!("{templates}: MetricTemplate flagger-system/latency: ok"),
            format!("{templates}: MetricTemplate flagger-system/error-rate: ok"),
        ]
    );
}

#[test]
fn invalid_files_report_every_error_and_exit_1() {
    let file = fixture("invalid-canaries.yaml");
    let file = file.to_string_lossy();
    let output = serin(&["validate", &file]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert_eq!(
        stdout_lines(&output),
        vec![
            format!(
                "{file}: Canary test/podinfo: spec.analysis.maxWeight: must be at most 100, got 150"
            ),
            format!(
                "{file}: Canary test/podinfo: spec.analysis.metrics[0].name: unknown built-in metric \
                 \"error-rate\" (built-ins: request-success-rate, request-duration); set templateRef \
                 to query a MetricTemplate"
            ),
            format!(
                "{file}: Canary prod/frontend: spec.analysis.interval: invalid duration \"1x\": \
                 unknown unit \"x\" (expected ns, us, ms, s, m or h)"
            ),
            format!("{file}: Canary prod/backend: ok"),
            format!(
                "{file}: Canary standalone/podinfo: spec.service.gatewayRefs: required: at least \
                 one Gateway for the HTTPRoute to attach to (without one serin-proxy rejects the \
                 route and answers 404)"
            ),
        ]
    );
}

#[test]
fn proxy_configuration_is_checked_strictly() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let routes = dir.path().join("routes.yaml");
    let canary = fixture("seed-001-checkout-canary.yaml");
    let text = format!(
        "{}---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: checkout, namespace: shop}}\nspec:\n  parentRefs: [{{name: public}}]\n  rules:\n  - matchs: [{{headers: [{{name: x-canary, value: insider}}]}}]\n    backendRefs: [{{name: checkout-canary, port: 80}}]\n  - backendRefs:\n    - {{name: checkout-primary, port: 80, weigth: 90}}\n---\napiVersion: serin.dev/v1alpha1\nkind: Backend\nmetadata: {{name: checkout-primary, namespace: shop}}\nspec: {{endpoints: [{{host: 10.0.0.1, port: 8080}}]}}\n",
        std::fs::read_to_string(&canary).unwrap_or_default()
    );
    assert!(std::fs::write(&routes, text).is_ok());
    let shown = routes.to_string_lossy();
    let output = serin(&["validate", &shown]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert_eq!(
        stdout_lines(&output),
        vec![
            format!("{shown}: Canary shop/checkout: ok"),
            format!(
                "{shown}: HTTPRoute shop/checkout: spec.rules[0].matchs: unknown field, did you mean `matches`?"
            ),
            format!(
                "{shown}: HTTPRoute shop/checkout: spec.rules[1].backendRefs[0].weigth: unknown field, did you mean `weight`?"
            ),
            format!("{shown}: Backend shop/checkout-primary: ok"),
        ]
    );
    // The same file with the typos fixed passes.
    let fixed = std::fs::read_to_string(&routes)
        .unwrap_or_default()
        .replace("matchs:", "matches:")
        .replace("weigth:", "weight:");
    assert!(std::fs::write(&routes, fixed).is_ok());
    let output = serin(&["validate", &shown]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
}

#[test]
fn one_bad_file_fails_the_run_but_all_are_checked() {
    let good = fixture("seed-001-checkout-canary.yaml");
    let good = good.to_string_lossy();
    let missing = fixture("no-such-file.yaml");
    let missing = missing.to_string_lossy();
    let output = serin(&["validate", &missing, &good]);
    assert_eq!(output.status.code(), Some(1));
    let lines = stdout_lines(&output);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with(&format!("{missing}: cannot read: ")),
        "{lines:?}"
    );
    assert_eq!(lines[1], format!("{good}: Canary shop/checkout: ok"));
}

#[test]
fn usage_errors_exit_64() {
    for args in [
        &["validate"][..],
        &["frobnicate"][..],
        &[][..],
        &["crds", "--bogus"][..],
    ] {
        let output = serin(args);
        assert_eq!(output.status.code(), Some(64), "{args:?}: {output:?}");
        assert!(!output.stderr.is_empty(), "{args:?}: usage goes to stderr");
    }
    let help = serin(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("validate"));
}

#[test]
fn crds_prints_every_definition() {
    let output = serin(&["crds"]);
    assert_eq!(output.status.code(), Some(0));
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(text.matches("kind: CustomResourceDefinition").count(), 4);
    for name in [
        "canaries.serin.dev",
        "metrictemplates.serin.dev",
        "backends.serin.dev",
        "sessionaffinities.serin.dev",
    ] {
        assert!(text.contains(&format!("name: {name}")), "{name}");
    }
}

#[test]
fn crds_writes_the_committed_files() {
    let dir = std::env::temp_dir().join(format!("serin-crds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(std::fs::create_dir_all(&dir).is_ok());
    let output = serin(&["crds", "--dir", &dir.to_string_lossy()]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    for name in ["canary.yaml", "metrictemplate.yaml"] {
        let written = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        let committed = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../deploy/crds")
                .join(name),
        )
        .unwrap_or_default();
        let parse = |t: &str| serde_yaml_ng::from_str::<serde_json::Value>(t).ok();
        assert!(parse(&written).is_some(), "{name}");
        assert_eq!(parse(&written), parse(&committed), "{name}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A standalone Canary for `serin rollout`, targeting Backend `test/podinfo`.
const STANDALONE_CANARY: &str = "apiVersion: serin.dev/v1alpha1
kind: Canary
metadata: {name: podinfo, namespace: test}
spec:
  targetRef: {apiVersion: serin.dev/v1alpha1, kind: Backend, name: podinfo}
  service:
    port: 80
    gatewayRefs: [{name: public, namespace: test}]
  analysis:
    interval: 1s
    threshold: 2
    maxWeight: 40
    stepWeight: 20
";

/// A directory with the Canary file in it, and a routing directory `routes` under it.
fn rollout_dir(target_backend: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("canary.yaml"), STANDALONE_CANARY).unwrap();
    std::fs::create_dir(dir.path().join("routes")).unwrap();
    if target_backend {
        std::fs::write(
            dir.path().join("routes/podinfo.yaml"),
            "apiVersion: serin.dev/v1alpha1\nkind: Backend\nmetadata: {name: podinfo, namespace: test}\nspec:\n  endpoints: [{host: 127.0.0.1, port: 9}]\n",
        )
        .unwrap();
    }
    dir
}

/// `serin rollout --exit-when-done` on `dir`'s Canary, with `routes` and `admin`; a run that
/// has not ended after 20 s is a failure (it was meant to stop at start-up).
fn rollout(dir: &Path, routes: &Path, admin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_serin"))
        .args(["rollout", "--exit-when-done", "--canary"])
        .arg(dir.join("canary.yaml"))
        .arg("--routes")
        .arg(routes)
        .args(["--proxy-admin", admin])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!("serin rollout did not stop at start-up: {output:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// An admin address that refuses connections while the guard lives: bound, so no
/// parallel test can take it, but never listening.
fn refusing_address() -> (String, tokio::net::TcpSocket) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    (socket.local_addr().unwrap().to_string(), socket)
}

fn stderr_text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn rollout_without_its_routing_directory_exits_64_naming_it() {
    let dir = rollout_dir(false);
    let missing = dir.path().join("no-such-dir");
    let output = rollout(dir.path(), &missing, &refusing_address().0);
    assert_eq!(output.status.code(), Some(64), "{output:?}");
    let stderr = stderr_text(&output);
    assert!(
        stderr.contains(&format!("--routes {}: not found", missing.display())),
        "{stderr}"
    );
}

#[test]
fn rollout_without_its_target_backend_exits_64_naming_it() {
    let dir = rollout_dir(false);
    let output = rollout(
        dir.path(),
        &dir.path().join("routes"),
        &refusing_address().0,
    );
    assert_eq!(output.status.code(), Some(64), "{output:?}");
    let stderr = stderr_text(&output);
    assert!(
        stderr.contains("Backend test/podinfo (spec.targetRef) not found in"),
        "{stderr}"
    );
}

#[test]
fn rollout_with_an_unreachable_proxy_admin_exits_1_naming_it() {
    let dir = rollout_dir(true);
    let (admin, _refusing) = refusing_address();
    let output = rollout(dir.path(), &dir.path().join("routes"), &admin);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = stderr_text(&output);
    assert!(stderr.contains("--proxy-admin"), "{stderr}");
    assert!(stderr.contains(&admin), "{stderr}");
    // Nothing was written: the release never started.
    assert!(!dir.path().join("routes/podinfo-route.yaml").exists());
}

#[test]
fn rollout_with_an_unreadable_canary_exits_64() {
    let dir = rollout_dir(true);
    std::fs::write(dir.path().join("canary.yaml"), "kind: Canary\nspec: [\n").unwrap();
    let output = rollout(
        dir.path(),
        &dir.path().join("routes"),
        &refusing_address().0,
    );
    assert_eq!(output.status.code(), Some(64), "{output:?}");
    assert!(stderr_text(&output).contains("--canary"), "{output:?}");
}

#[test]
fn demo_refuses_a_rate_below_1() {
    let output = serin(&["demo", "--rate", "0"]);
    assert_eq!(output.status.code(), Some(64), "{output:?}");
    assert!(stderr_text(&output).contains("--rate"), "{output:?}");
}

#[test]
fn demo_checks_its_output_directory_before_starting() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir");
    let started = std::time::Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_serin"))
        .args(["demo", "--out"])
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64), "{output:?}");
    assert!(
        stderr_text(&output).contains(&format!("--out {}: not found", missing.display())),
        "{output:?}"
    );
    // Refused at once, not after a whole release.
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert!(
        String::from_utf8_lossy(&output.stdout).is_empty(),
        "{output:?}"
    );

    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_serin"))
        .args(["demo", "--out"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64), "{output:?}");
    assert!(
        stderr_text(&output).contains("not a directory"),
        "{output:?}"
    );
}

/// An admin address answering every request with an empty metrics page, until the process
/// exits.
fn empty_metrics_server() -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
        }
    });
    address
}

#[test]
fn rollout_when_done_gives_up_once_its_target_is_gone_for_good() {
    let dir = rollout_dir(true);
    let routes = dir.path().join("routes");
    let admin = empty_metrics_server();
    let remover = {
        let routes = routes.clone();
        std::thread::spawn(move || {
            // Once bootstrapped, the operator's Backend disappears.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
            while !routes.join("podinfo-primary.yaml").exists() {
                assert!(std::time::Instant::now() < deadline, "never bootstrapped");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            std::fs::remove_file(routes.join("podinfo.yaml")).unwrap();
        })
    };
    let output = rollout(dir.path(), &routes, &admin);
    remover.join().unwrap();
    assert_eq!(output.status.code(), Some(64), "{output:?}");
    let stderr = stderr_text(&output);
    assert!(
        stderr.contains("Backend test/podinfo (spec.targetRef) not found in"),
        "{stderr}"
    );
    assert!(
        stderr.contains("giving up after 3 failed steps"),
        "{stderr}"
    );
}
