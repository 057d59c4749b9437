//! The `serin-proxy` binary: start-up errors and a signal-driven stop.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
    assert!(log.contains("routes.yaml (document 2): HTTPRoute test/r: spec.rules[0].matches[0].path.value: invalid regular expression"), "{log}");
    assert!(
        log.contains("spec.rules[0].backendRefs[0].name: Backend test/nowhere not found"),
        "{log}"
    );
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
