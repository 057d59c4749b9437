//! The `serin-proxy` binary: start-up errors, `--check`, strict reloads and a signal-driven
//! stop.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{TestBackend, admin_get, free_port, gateway_and_backends, sample};

fn proxy() -> Command {
    Command::new(env!("CARGO_BIN_EXE_serin-proxy"))
}

#[test]
fn invalid_config_at_start_exits_64_naming_file_object_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("routes.yaml");
    std::fs::write(
        &file,
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: test}\nspec:\n  gatewayClassName: serin\n  listeners: [{name: http, port: 18080, protocol: HTTP}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: test}\nspec:\n  parentRefs: [{name: gw}]\n  rules:\n  - matches: [{path: {type: RegularExpression, value: '(oops'}}]\n    backendRefs: [{group: serin.dev, kind: Backend, name: nowhere}]\n",
    )
    .unwrap();
    let out = proxy()
        .args([
            "--config",
            file.to_str().unwrap(),
            "--admin",
            "127.0.0.1:0",
            "--bind",
            "127.0.0.1",
        ])
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let log =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    // Not a terminal: no colour codes in the log.
    assert!(!log.contains('\x1b'), "{log:?}");
    assert!(log.contains("routes.yaml (document 2): HTTPRoute test/r: spec.rules[0].matches[0].path.value: invalid regular expression"), "{log}");
    assert!(
        log.contains("spec.rules[0].backendRefs[0].name: Backend test/nowhere not found"),
        "{log}"
    );
}

#[test]
fn usage_errors_exit_64_naming_the_argument() {
    let out = proxy().arg("--no-such-flag").output().unwrap();
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--no-such-flag"), "{stderr}");
    let help = proxy().arg("--help").output().unwrap();
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("--kubernetes"));
}

#[test]
fn missing_config_exits_64() {
    let out = proxy()
        .args([
            "--config",
            "/nonexistent/serin.yaml",
            "--admin",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stdout).contains("/nonexistent/serin.yaml"));
}

#[test]
fn sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        dir.path().join("gw.yaml"),
        format!("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\nspec:\n  gatewayClassName: serin\n  listeners: [{{name: http, port: {port}, protocol: HTTP}}]\n"),
    )
    .unwrap();
    let mut child = proxy()
        .args([
            "--config",
            dir.path().to_str().unwrap(),
            "--admin",
            "127.0.0.1:0",
            "--bind",
            "127.0.0.1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "proxy did not start listening");
        std::thread::sleep(Duration::from_millis(20));
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "proxy did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A route sending `x-canary: insider` to `canary` and everything else to `primary`, with the
/// match under `matches_key`.
fn header_route(matches_key: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r, namespace: test}}\nspec:\n  parentRefs: [{{name: gw}}]\n  rules:\n  - {matches_key}: [{{headers: [{{name: x-canary, value: insider}}]}}]\n    backendRefs: [{{group: serin.dev, kind: Backend, name: canary}}]\n  - backendRefs:\n    - {{group: serin.dev, kind: Backend, name: primary, weight: 90}}\n    - {{group: serin.dev, kind: Backend, name: canary, weight: 10}}\n"
    )
}

fn check(path: &Path) -> std::process::Output {
    proxy()
        .args(["--check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap()
}

#[test]
fn check_prints_the_table_and_exits_0_without_binding() {
    let dir = tempfile::tempdir().unwrap();
    // The listener port is taken: --check must not try to bind it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    std::fs::write(
        dir.path().join("gw.yaml"),
        gateway_and_backends(port, &[("primary", 9001), ("canary", 9002)]),
    )
    .unwrap();
    std::fs::write(dir.path().join("route.yaml"), header_route("matches")).unwrap();
    let out = check(dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let expected = format!(
        "{}: ok: 1 gateways, 1 routes, 2 backends, 0 session affinities, 0 skipped\n\
         listeners: {port}\n\
         \x20 :{port} * test/r rule 0 [path /*, header x-canary = insider]\n\
         \x20   -> test/canary weight 1 (127.0.0.1:9002)\n\
         \x20 :{port} * test/r rule 1 [path /*]\n\
         \x20   -> test/primary weight 90 (127.0.0.1:9001)\n\
         \x20   -> test/canary weight 10 (127.0.0.1:9002)\n",
        dir.path().display()
    );
    assert_eq!(stdout, expected);
}

#[test]
fn check_the_shipped_example() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/quickstart");
    let out = check(&dir);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("listeners: 8080\n"), "{stdout}");
    assert!(
        stdout.contains("-> demo/podinfo-primary weight 90 (127.0.0.1:9001)"),
        "{stdout}"
    );
}

#[test]
fn check_refuses_a_typo_with_64_naming_file_object_and_field() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("gw.yaml"),
        gateway_and_backends(free_port(), &[("primary", 9001), ("canary", 9002)]),
    )
    .unwrap();
    std::fs::write(dir.path().join("route.yaml"), header_route("matchs")).unwrap();
    let out = check(dir.path());
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = format!(
        "{}: HTTPRoute test/r: spec.rules[0].matchs: unknown field, did you mean `matches`?",
        dir.path().join("route.yaml").display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
}

/// Kills the proxy when a test ends, whichever way it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_typo_on_reload_is_rejected_and_the_old_table_keeps_serving() {
    let primary = TestBackend::start("primary").await;
    let canary = TestBackend::start("canary").await;
    let (port, admin_port) = (free_port(), free_port());
    let admin: SocketAddr = ([127, 0, 0, 1], admin_port).into();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("gw.yaml"),
        gateway_and_backends(
            port,
            &[("primary", primary.port()), ("canary", canary.port())],
        ),
    )
    .unwrap();
    let route = dir.path().join("route.yaml");
    std::fs::write(&route, header_route("matches")).unwrap();
    let log = dir.path().join("proxy.log");
    let _child = Child(
        proxy()
            .args([
                "--config",
                dir.path().to_str().unwrap(),
                "--admin",
                &admin.to_string(),
                "--bind",
                "127.0.0.1",
                "--watch-interval",
                "50ms",
            ])
            .env("RUST_LOG", "info")
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "proxy did not start listening");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Written again every half second: the watch may start after the listener does, and a
    // change made before it starts is its starting point.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut written = Instant::now() - Duration::from_secs(1);
    loop {
        if written.elapsed() >= Duration::from_millis(500) {
            support::write_atomic(&route, &header_route("matchs"));
            written = Instant::now();
        }
        let metrics = admin_get(admin, "/metrics").await.1;
        if sample(&metrics, "serin_config_reloads_total{result=\"rejected\"}") >= 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "the typo was not rejected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Accepted, the typo would have made the first rule a catch-all to the canary.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let get = |canary: bool| {
        let mut request = http::Request::builder()
            .uri(format!("http://127.0.0.1:{port}/"))
            .header("host", "app.example.com");
        if canary {
            request = request.header("x-canary", "insider");
        }
        client.request(request.body(Default::default()).unwrap())
    };
    for _ in 0..20 {
        let reply = support::Reply::read(get(false).await.unwrap()).await;
        assert_eq!(reply.status, 200);
        let reply = support::Reply::read(get(true).await.unwrap()).await;
        assert_eq!(reply.backend(), "canary");
    }
    // 90/10: all 20 on the canary has a probability of 1e-20.
    assert!(primary.hits() > 0, "every request went to the canary");
    let routes = admin_get(admin, "/routes").await.1;
    assert!(routes.contains("x-canary = insider"), "{routes}");
    let log = std::fs::read_to_string(&log).unwrap();
    let expected = format!(
        "configuration rejected, keeping the last good table: {}: HTTPRoute test/r: spec.rules[0].matchs: unknown field, did you mean `matches`?",
        route.display()
    );
    assert!(log.contains(&expected), "{log}");
}
