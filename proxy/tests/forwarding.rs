//! End-to-end behaviour of serin-proxy over loopback, with real backends.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use support::*;

fn weighted_route(a: u32, b: u32) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r, namespace: test}}\nspec:\n  parentRefs: [{{name: gw}}]\n  rules:\n  - backendRefs:\n    - {{group: serin.dev, kind: Backend, name: a, weight: {a}}}\n    - {{group: serin.dev, kind: Backend, name: b, weight: {b}}}\n"
    )
}

/// A proxy on `port` splitting `wa`/`wb` between backends `a` and `b`.
async fn split_harness(a: &TestBackend, b: &TestBackend, port: u16, wa: u32, wb: u32) -> Harness {
    Harness::start(
        port,
        &[
            (
                "gw.yaml",
                gateway_and_backends(port, &[("a", a.port()), ("b", b.port())]),
            ),
            ("route.yaml", weighted_route(wa, wb)),
        ],
    )
    .await
}

async fn two_backends() -> (TestBackend, TestBackend, u16) {
    (
        TestBackend::start("a").await,
        TestBackend::start("b").await,
        free_port(),
    )
}

#[tokio::test]
async fn ninety_ten_split_within_binomial_tolerance_and_counted_exactly() {
    let (a, b, port) = two_backends().await;
    let h = split_harness(&a, &b, port, 90, 10).await;
    let n: u32 = 4000;
    let mut to_b = 0;
    for _ in 0..n {
        let r = h.get("/", &[]).await;
        assert_eq!(r.status, StatusCode::OK);
        to_b += u32::from(r.backend() == "b");
    }
    // Mean 400, standard deviation sqrt(4000 * 0.1 * 0.9) = 19: allow five.
    assert!((305..=495).contains(&to_b), "{to_b} of {n} went to b");
    assert_eq!(a.hits() + b.hits(), u64::from(n));

    let m = h.metrics().await;
    let count = |backend: &str| {
        sample(
            &m,
            &format!(
                "serin_http_requests_total{{route=\"test/r\",backend=\"test/{backend}\",code=\"200\",traffic=\"live\"}}"
            ),
        )
    };
    assert_eq!(count("a") as u64, a.hits());
    assert_eq!(count("b") as u64, b.hits());
    let durations = sample(
        &m,
        "serin_http_request_duration_seconds_count{route=\"test/r\",backend=\"test/b\",traffic=\"live\"}",
    );
    assert_eq!(durations as u64, b.hits());
    assert_eq!(
        sample(&m, "serin_config_reloads_total{result=\"applied\"}"),
        1.0
    );
}

#[tokio::test]
async fn matches_and_precedence_over_the_wire() {
    let (a, b, port) = two_backends().await;
    let c = TestBackend::start("c").await;
    let route = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: test}
spec:
  parentRefs: [{name: gw}]
  hostnames: [app.example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs: [{group: serin.dev, kind: Backend, name: a}]
  - matches:
    - headers: [{name: x-canary, value: insider}]
    - queryParams: [{name: canary, type: RegularExpression, value: "yes|true"}]
    backendRefs: [{group: serin.dev, kind: Backend, name: b}]
  - matches:
    - {path: {type: Exact, value: /admin}, method: DELETE}
    backendRefs: [{group: serin.dev, kind: Backend, name: c}]
"#;
    let h = Harness::start(
        port,
        &[
            (
                "gw.yaml",
                gateway_and_backends(port, &[("a", a.port()), ("b", b.port()), ("c", c.port())]),
            ),
            ("route.yaml", route.to_owned()),
        ],
    )
    .await;
    assert_eq!(h.get("/x", &[]).await.backend(), "a");
    assert_eq!(h.get("/x", &[("X-Canary", "insider")]).await.backend(), "b");
    assert_eq!(h.get("/x?canary=true", &[]).await.backend(), "b");
    assert_eq!(h.get("/x?canary=maybe", &[]).await.backend(), "a");
    assert_eq!(
        h.send("DELETE", "/admin", &[("x-canary", "insider")], Bytes::new())
            .await
            .backend(),
        "c"
    );
    assert_eq!(
        h.get("/admin", &[("x-canary", "insider")]).await.backend(),
        "b"
    );

    // An unknown host matches nothing.
    let req = http::Request::get(h.url("/"))
        .header("host", "other.org")
        .body(Default::default())
        .unwrap();
    let r = Reply::read(h.client.request(req).await.unwrap()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        sample(&h.metrics().await, "serin_http_unrouted_requests_total"),
        1.0
    );
}

#[tokio::test]
async fn headers_forwarded_filtered_and_hop_by_hop_removed() {
    let (a, _b, port) = two_backends().await;
    let route = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: test}
spec:
  parentRefs: [{name: gw}]
  rules:
  - filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: x-env, value: prod}]
        add: [{name: x-added, value: "1"}]
        remove: [x-drop]
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        set: [{name: x-served-by, value: serin}]
        remove: [x-backend]
    backendRefs: [{group: serin.dev, kind: Backend, name: a}]
"#;
    let h = Harness::start(
        port,
        &[
            ("gw.yaml", gateway_and_backends(port, &[("a", a.port())])),
            ("route.yaml", route.to_owned()),
        ],
    )
    .await;
    let r = h
        .get(
            "/p?q=1",
            &[
                ("x-env", "dev"),
                ("x-drop", "1"),
                ("connection", "x-secret"),
                ("x-secret", "s"),
                ("x-forwarded-for", "10.1.2.3"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "spoofed.example.com"),
            ],
        )
        .await;
    let seen = &r.json()["headers"];
    assert_eq!(seen["x-env"], "prod");
    assert_eq!(seen["x-added"], "1");
    assert!(seen.get("x-drop").is_none());
    assert!(
        seen.get("x-secret").is_none(),
        "headers named by Connection are hop-by-hop"
    );
    assert_eq!(seen["x-forwarded-for"], "10.1.2.3, 127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], "app.example.com");
    assert_eq!(seen["host"], "app.example.com");
    assert_eq!(r.json()["path"], "/p");
    assert_eq!(r.headers["x-served-by"], "serin");
    assert!(r.headers.get("x-backend").is_none());
    assert!(
        r.headers.get("x-private").is_none(),
        "response hop-by-hop headers are removed"
    );
}

#[tokio::test]
async fn hot_reload_applies_quickly_and_keeps_in_flight_requests() {
    let (a, b, port) = two_backends().await;
    let h = split_harness(&a, &b, port, 100, 0).await;
    assert_eq!(h.get("/", &[]).await.backend(), "a");

    // A slow request in flight across the reload.
    let slow = {
        let client = h.client.clone();
        let url = h.url("/slow/1500");
        tokio::spawn(async move {
            let req = http::Request::get(url)
                .header("host", "h")
                .body(Default::default())
                .unwrap();
            Reply::read(client.request(req).await.unwrap()).await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let written = Instant::now();
    h.write("route.yaml", &weighted_route(0, 100));
    loop {
        if h.get("/", &[]).await.backend() == "b" {
            break;
        }
        assert!(
            written.elapsed() < Duration::from_secs(1),
            "reload not applied within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let slow = slow.await.unwrap();
    assert_eq!(slow.status, StatusCode::OK);
    assert_eq!(
        slow.backend(),
        "a",
        "the in-flight request finished on the old table's backend"
    );
    assert_eq!(
        sample(
            &h.metrics().await,
            "serin_config_reloads_total{result=\"applied\"}"
        ),
        2.0
    );
}

#[tokio::test]
async fn invalid_changes_are_rejected_and_the_last_good_table_serves() {
    let (a, b, port) = two_backends().await;
    let h = split_harness(&a, &b, port, 100, 0).await;
    let before = support::admin_get(h.admin(), "/routes").await.1;
    let bad = [
        "apiVersion: v1\nkind: [oops\n".to_owned(),
        weighted_route(100, 0).replace("name: b,", "name: ghost,"),
        weighted_route(100, 0).replace(
            "backendRefs:",
            "matches: [{path: {type: RegularExpression, value: '('}}]\n    backendRefs:",
        ),
        weighted_route(100, 2_000_000),
        // A typo: accepted, it would move a weight from one backend to both.
        weighted_route(100, 0).replace("weight: 0", "weigth: 0"),
    ];
    for (i, text) in bad.iter().enumerate() {
        h.write("route.yaml", text);
        let deadline = Instant::now() + Duration::from_secs(3);
        while sample(
            &h.metrics().await,
            "serin_config_reloads_total{result=\"rejected\"}",
        ) < (i + 1) as f64
        {
            assert!(Instant::now() < deadline, "change {i} was not rejected");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            h.get("/", &[]).await.backend(),
            "a",
            "change {i}: the old table keeps serving"
        );
    }
    assert_eq!(support::admin_get(h.admin(), "/routes").await.1, before);
    assert_eq!(b.hits(), 0);
}

#[tokio::test]
async fn connect_errors_are_502_and_timeouts_504_counted_for_the_backend() {
    let a = TestBackend::start("a").await;
    let (dead_port, _refusing) = refusing_port();
    let port = free_port();
    let route = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: test}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {value: /dead}}]
    backendRefs: [{group: serin.dev, kind: Backend, name: dead}]
  - matches: [{path: {value: /slow}}]
    timeouts: {request: 300ms}
    backendRefs: [{group: serin.dev, kind: Backend, name: a}]
  - matches: [{path: {value: /zero}}]
    backendRefs: [{group: serin.dev, kind: Backend, name: a, weight: 0}]
"#;
    let h = Harness::start(
        port,
        &[
            (
                "gw.yaml",
                gateway_and_backends(port, &[("a", a.port()), ("dead", dead_port)]),
            ),
            ("route.yaml", route.to_owned()),
        ],
    )
    .await;
    assert_eq!(h.get("/dead", &[]).await.status, StatusCode::BAD_GATEWAY);
    let started = Instant::now();
    assert_eq!(
        h.get("/slow/3000", &[]).await.status,
        StatusCode::GATEWAY_TIMEOUT
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "timeout took {:?}",
        started.elapsed()
    );
    assert_eq!(
        h.get("/zero", &[]).await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );

    let m = h.metrics().await;
    assert_eq!(
        sample(
            &m,
            "serin_http_requests_total{route=\"test/r\",backend=\"test/dead\",code=\"502\",traffic=\"live\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            "serin_http_requests_total{route=\"test/r\",backend=\"test/a\",code=\"504\",traffic=\"live\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            "serin_http_requests_total{route=\"test/r\",backend=\"\",code=\"500\",traffic=\"live\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            "serin_upstream_connect_errors_total{backend=\"test/dead\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn responses_stream_without_buffering_and_bodies_pass_through() {
    let (a, _b, port) = two_backends().await;
    let h = split_harness(&a, &_b, port, 1, 0).await;
    // Request body: 8 MiB up.
    let big = Bytes::from(vec![b'x'; 8 << 20]);
    assert_eq!(
        h.send("POST", "/upload", &[], big).await.json()["body_len"],
        8 << 20
    );

    // Response body: the first chunk arrives long before the second is sent.
    use http_body_util::BodyExt;
    let req = http::Request::get(h.url("/stream"))
        .header("host", "h")
        .body(Default::default())
        .unwrap();
    let started = Instant::now();
    let mut body = h.client.request(req).await.unwrap().into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"first;");
    assert!(
        started.elapsed() < Duration::from_millis(450),
        "first chunk after {:?}",
        started.elapsed()
    );
    let second = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&second[..], b"second");
}

#[tokio::test]
async fn h2c_prior_knowledge_is_served() {
    let (a, _b, port) = two_backends().await;
    let h = split_harness(&a, &_b, port, 1, 0).await;
    let client: hyper_util::client::legacy::Client<_, http_body_util::Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let req = http::Request::get(format!("http://app.example.com:{port}/h2"))
        .body(Default::default())
        .unwrap();
    // Connect to loopback while the URI carries the authority, as an h2 client would.
    let mut parts = req.into_parts();
    parts.0.uri = format!("http://127.0.0.1:{port}/h2").parse().unwrap();
    parts
        .0
        .headers
        .insert("host", "app.example.com".parse().unwrap());
    let response = client
        .request(http::Request::from_parts(parts.0, parts.1))
        .await
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    let r = Reply::read(response).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.backend(), "a");
    assert_eq!(r.json()["path"], "/h2");
    drop(h);
}

#[tokio::test]
async fn h2c_authority_is_the_host_the_backend_gets() {
    let (a, b, port) = two_backends().await;
    let h = split_harness(&a, &b, port, 1, 0).await;
    let client: hyper_util::client::legacy::Client<_, http_body_util::Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    // `:authority` names one host, a Host field another: the request is routed by the
    // authority (RFC 9113 §8.3.1), so that is the Host the backend must see.
    let mut req = http::Request::get(format!("http://127.0.0.1:{port}/h2"))
        .body(http_body_util::Full::default())
        .unwrap();
    req.headers_mut()
        .insert("host", "other.example.com".parse().unwrap());
    let response = client.request(req).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    let r = Reply::read(response).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["headers"]["host"], format!("127.0.0.1:{port}"));
    assert_eq!(
        r.json()["headers"]["x-forwarded-host"],
        format!("127.0.0.1:{port}")
    );
    drop(h);
}

#[tokio::test]
async fn h2c_paths_are_normalised_as_http1_paths_are() {
    let (a, b, port) = two_backends().await;
    let h = split_harness(&a, &b, port, 1, 0).await;
    let client: hyper_util::client::legacy::Client<_, http_body_util::Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let get = |path: &str| {
        http::Request::get(format!("http://127.0.0.1:{port}{path}"))
            .body(http_body_util::Full::default())
            .unwrap()
    };
    let r = Reply::read(
        client
            .request(get("/x/%2e%2e/h2/%61b?q=/../y"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["path"], "/h2/ab");
    let r = Reply::read(client.request(get("/x/../../h2")).await.unwrap()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body, "path climbs above the root\n");
    assert_eq!(a.hits() + b.hits(), 1);
    drop(h);
}

#[tokio::test]
async fn admin_endpoints() {
    let (a, _b, port) = two_backends().await;
    let h = split_harness(&a, &_b, port, 1, 0).await;
    assert_eq!(
        support::admin_get(h.admin(), "/healthz").await.0,
        StatusCode::OK
    );
    assert_eq!(
        support::admin_get(h.admin(), "/readyz").await.0,
        StatusCode::OK
    );
    let (status, routes) = support::admin_get(h.admin(), "/routes").await;
    assert_eq!(status, StatusCode::OK);
    let routes: serde_json::Value = serde_json::from_str(&routes).unwrap();
    let rule = &routes["rules"][0];
    assert_eq!(rule["route"], "test/r");
    assert_eq!(rule["port"], port);
    assert_eq!(
        rule["backends"][0]["endpoints"][0],
        format!("127.0.0.1:{}", a.port())
    );
    let metrics = h.metrics().await;
    assert!(metrics.ends_with("# EOF\n"), "OpenMetrics text");
    assert_eq!(
        support::admin_get(h.admin(), "/nope").await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn upstream_connections_are_pooled_and_reused() {
    let (a, b, port) = two_backends().await;
    let h = Harness::start_with(
        port,
        &[
            (
                "gw.yaml",
                gateway_and_backends(port, &[("a", a.port()), ("b", b.port())]),
            ),
            ("route.yaml", weighted_route(1, 0)),
        ],
        |o| o.forward.workers = 2,
    )
    .await;
    // One client connection (the harness client keeps it alive) lives on one serving thread,
    // whose pool needs one connection to the backend for sequential requests.
    for _ in 0..200 {
        assert_eq!(h.get("/", &[]).await.status, StatusCode::OK);
    }
    assert_eq!(a.hits(), 200);
    assert_eq!(a.connections(), 1);

    // Concurrent requests over several client connections: the pools grow to the concurrency
    // they see (at most one upstream connection per request in flight), then reuse.
    let mut clients = Vec::new();
    for _ in 0..8 {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Full<Bytes>>();
        let url = h.url("/slow/50");
        clients.push(tokio::spawn(async move {
            for _ in 0..10 {
                let req = http::Request::get(&url)
                    .header("host", "h")
                    .body(Default::default())
                    .unwrap();
                let r = Reply::read(client.request(req).await.unwrap()).await;
                assert_eq!(r.status, StatusCode::OK);
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(a.hits(), 280);
    assert!(
        (2..=9).contains(&a.connections()),
        "{} upstream connections for 8 concurrent clients",
        a.connections()
    );
}

#[tokio::test]
async fn http10_requests_without_host_name_the_endpoint() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (a, b, port) = two_backends().await;
    let _h = split_harness(&a, &b, port, 1, 0).await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream
        .write_all(b"GET /old HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    // RFC 9110 §2.5: the server's own version (1.1) in answer to 1.0, as nginx does; the
    // connection closes after it, since the client did not ask to keep it.
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n"),
        "{answer}"
    );
    let seen = a.seen.lock().unwrap().clone();
    assert_eq!(seen, [(format!("127.0.0.1:{}", a.port()), 0)]);
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let (a, _b, port) = two_backends().await;
    let mut h = split_harness(&a, &_b, port, 1, 0).await;
    let client = h.client.clone();
    let url = h.url("/slow/800");
    let in_flight = tokio::spawn(async move {
        let req = http::Request::get(url)
            .header("host", "h")
            .body(Default::default())
            .unwrap();
        Reply::read(client.request(req).await.unwrap()).await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    h.proxy.take().unwrap().shutdown().await;
    let r = in_flight.await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    // The listener is closed now.
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
    );
}
