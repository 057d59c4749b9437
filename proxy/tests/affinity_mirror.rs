//! Session affinity (Flagger's cookie rule and sticky buckets) and traffic mirroring, over
//! loopback with real backends.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use support::*;

const ROUTE_HEAD: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: test}\nspec:\n  parentRefs: [{name: gw}]\n  rules:\n";

fn set_cookie(r: &Reply) -> Option<String> {
    r.headers
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_owned())
}

/// The `name=value` part of a Set-Cookie header.
fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

#[tokio::test]
async fn flagger_cookie_affinity_pins_clients_to_the_canary() {
    let (primary, canary, port) = (
        TestBackend::start("primary").await,
        TestBackend::start("canary").await,
        free_port(),
    );
    // As Flagger writes it for sessionAffinity: the canary backendRef sets the cookie, and a first
    // rule routes requests carrying it to the canary.
    let route = format!(
        r#"{ROUTE_HEAD}  - matches:
    - path: {{type: PathPrefix, value: /}}
      headers:
      - {{name: Cookie, type: RegularExpression, value: ".*flagger-cookie.*Xz2vQw9.*"}}
    backendRefs:
    - {{group: serin.dev, kind: Backend, name: canary, weight: 100}}
  - matches:
    - path: {{type: PathPrefix, value: /}}
    backendRefs:
    - {{group: serin.dev, kind: Backend, name: primary, weight: 80}}
    - group: serin.dev
      kind: Backend
      name: canary
      weight: 20
      filters:
      - type: ResponseHeaderModifier
        responseHeaderModifier:
          add:
          - {{name: Set-Cookie, value: "flagger-cookie=Xz2vQw9; Max-Age=21600"}}
"#
    );
    let h = Harness::start(
        port,
        &[
            (
                "gw.yaml",
                gateway_and_backends(
                    port,
                    &[("primary", primary.port()), ("canary", canary.port())],
                ),
            ),
            ("route.yaml", route),
        ],
    )
    .await;
    let mut cookie = None;
    for _ in 0..200 {
        let r = h.get("/", &[]).await;
        match (r.backend().as_str(), set_cookie(&r)) {
            ("canary", Some(c)) => {
                assert_eq!(c, "flagger-cookie=Xz2vQw9; Max-Age=21600");
                cookie = Some(cookie_pair(&c));
                break;
            }
            ("primary", None) => {}
            other => panic!("unexpected {other:?}: the cookie must come only with the canary"),
        }
    }
    let cookie = cookie.expect("one of 200 requests reached the 20% canary");
    let header = format!("session=abc; {cookie}; theme=dark");
    for _ in 0..50 {
        assert_eq!(h.get("/", &[("cookie", &header)]).await.backend(), "canary");
    }
}

fn sticky_files(
    port: u16,
    primary: &TestBackend,
    canary: &TestBackend,
    canary_weight: u32,
    source: &str,
) -> Vec<(&'static str, String)> {
    let route = format!(
        "{ROUTE_HEAD}  - filters: [{{type: ExtensionRef, extensionRef: {{group: serin.dev, kind: SessionAffinity, name: sticky}}}}]\n    backendRefs:\n    - {{group: serin.dev, kind: Backend, name: primary, weight: {}}}\n    - {{group: serin.dev, kind: Backend, name: canary, weight: {canary_weight}}}\n",
        100 - canary_weight
    );
    vec![
        (
            "gw.yaml",
            gateway_and_backends(
                port,
                &[("primary", primary.port()), ("canary", canary.port())],
            ),
        ),
        (
            "affinity.yaml",
            format!(
                "apiVersion: serin.dev/v1alpha1\nkind: SessionAffinity\nmetadata: {{name: sticky, namespace: test}}\nspec: {source}\n"
            ),
        ),
        ("route.yaml", route),
    ]
}

#[tokio::test]
async fn sticky_cookie_keeps_clients_and_only_moves_them_to_the_canary() {
    let (primary, canary, port) = (
        TestBackend::start("primary").await,
        TestBackend::start("canary").await,
        free_port(),
    );
    let source = "{cookie: {name: serin-bucket, maxAge: 600}}";
    let h = Harness::start(port, &sticky_files(port, &primary, &canary, 10, source)).await;

    // 200 new clients: each gets a bucket cookie with its first response.
    let mut clients = Vec::new();
    for _ in 0..200 {
        let r = h.get("/", &[]).await;
        let c = set_cookie(&r).expect("a new client gets its bucket");
        assert!(c.contains("Max-Age=600") && c.contains("HttpOnly"), "{c}");
        clients.push((cookie_pair(&c), r.backend()));
    }
    let on_canary = clients.iter().filter(|(_, b)| b == "canary").count();
    assert!(
        (5..=40).contains(&on_canary),
        "{on_canary} of 200 on a 10% canary"
    );

    // With their cookie, clients keep their backend and get no new cookie.
    for (cookie, backend) in clients.iter().take(40) {
        for _ in 0..3 {
            let r = h.get("/", &[("cookie", cookie)]).await;
            assert_eq!(&r.backend(), backend);
            assert!(set_cookie(&r).is_none());
        }
    }

    // The canary's weight grows: clients only move primary -> canary.
    for weight in [30, 60, 90] {
        for (file, text) in sticky_files(port, &primary, &canary, weight, source) {
            if file == "route.yaml" {
                h.write(file, &text);
            }
        }
        let applied = "serin_config_reloads_total{result=\"applied\"}";
        let deadline = Instant::now() + Duration::from_secs(3);
        let want = [30, 60, 90].iter().position(|w| *w == weight).unwrap() as f64 + 2.0;
        while sample(&h.metrics().await, applied) < want {
            assert!(Instant::now() < deadline, "reload to {weight} not applied");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut now_on_canary = 0;
        for (cookie, backend) in clients.iter_mut() {
            let now = h.get("/", &[("cookie", cookie)]).await.backend();
            assert!(
                !(backend == "canary" && now == "primary"),
                "a client moved back to the primary at weight {weight}"
            );
            now_on_canary += usize::from(now == "canary");
            *backend = now;
        }
        let expected = 200 * weight as usize / 100;
        assert!(
            now_on_canary.abs_diff(expected) <= 40,
            "{now_on_canary} of 200 at weight {weight}"
        );
    }

    // Malformed cookie headers are ignored: the client is treated as new.
    let r = h
        .get("/", &[("cookie", ";;; serin-bucket=banana; =x")])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(set_cookie(&r).unwrap().starts_with("serin-bucket="));
}

#[tokio::test]
async fn sticky_header_hash_is_stable_per_user() {
    let (primary, canary, port) = (
        TestBackend::start("primary").await,
        TestBackend::start("canary").await,
        free_port(),
    );
    let h = Harness::start(
        port,
        &sticky_files(port, &primary, &canary, 50, "{header: {name: x-user-id}}"),
    )
    .await;
    let mut backends = std::collections::BTreeSet::new();
    for user in 0..40 {
        let id = format!("user-{user}");
        let first = h.get("/", &[("x-user-id", &id)]).await;
        assert!(set_cookie(&first).is_none());
        for _ in 0..5 {
            assert_eq!(
                h.get("/", &[("x-user-id", &id)]).await.backend(),
                first.backend()
            );
        }
        backends.insert(first.backend());
    }
    assert_eq!(backends.len(), 2, "40 users at 50% use both backends");
}

fn mirror_files(
    port: u16,
    primary: &TestBackend,
    mirror_port: u16,
    filter: &str,
) -> Vec<(&'static str, String)> {
    vec![
        (
            "gw.yaml",
            gateway_and_backends(
                port,
                &[("primary", primary.port()), ("shadow", mirror_port)],
            ),
        ),
        (
            "route.yaml",
            format!(
                "{ROUTE_HEAD}  - filters: [{{type: RequestMirror, requestMirror: {{backendRef: {{group: serin.dev, kind: Backend, name: shadow}}{filter}}}}}]\n    backendRefs: [{{group: serin.dev, kind: Backend, name: primary}}]\n"
            ),
        ),
    ]
}

#[tokio::test]
async fn mirror_gets_copies_with_bodies_and_its_own_metrics() {
    let (primary, shadow, port) = (
        TestBackend::start("primary").await,
        TestBackend::start("shadow").await,
        free_port(),
    );
    let h = Harness::start(port, &mirror_files(port, &primary, shadow.port(), "")).await;
    for i in 0..20 {
        let body = Bytes::from(vec![b'x'; 1000 + i]);
        let r = h.send("POST", "/orders", &[], body).await;
        assert_eq!(
            (r.status, r.backend()),
            (StatusCode::OK, "primary".to_owned())
        );
        assert_eq!(r.json()["body_len"], 1000 + i);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while shadow.hits() < 20 {
        assert!(
            Instant::now() < deadline,
            "mirror got {} of 20",
            shadow.hits()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = shadow.seen.lock().unwrap().clone();
    let mut lengths: Vec<usize> = seen.iter().map(|(_, len)| *len).collect();
    lengths.sort_unstable();
    assert_eq!(
        lengths,
        (1000..1020).collect::<Vec<_>>(),
        "every body mirrored whole"
    );
    assert_eq!(
        seen[0].0,
        format!("127.0.0.1:{}", shadow.port()),
        "Host is the mirror's own address"
    );

    let m = h.metrics().await;
    assert_eq!(
        sample(
            &m,
            "serin_http_requests_total{route=\"test/r\",backend=\"test/shadow\",code=\"200\",traffic=\"mirror\"}"
        ),
        20.0
    );
    assert_eq!(
        sample(
            &m,
            "serin_http_requests_total{route=\"test/r\",backend=\"test/primary\",code=\"200\",traffic=\"live\"}"
        ),
        20.0
    );
    assert_eq!(
        sample(
            &m,
            "serin_http_request_duration_seconds_count{route=\"test/r\",backend=\"test/shadow\",traffic=\"mirror\"}"
        ),
        20.0
    );

    // A body over the 64 KiB limit is not mirrored, and the live request is unaffected.
    let big = h
        .send("POST", "/big", &[], Bytes::from(vec![b'y'; 100_000]))
        .await;
    assert_eq!(big.json()["body_len"], 100_000);
    let deadline = Instant::now() + Duration::from_secs(3);
    while sample(
        &h.metrics().await,
        "serin_mirror_dropped_total{reason=\"body_too_large\"}",
    ) < 1.0
    {
        assert!(Instant::now() < deadline, "oversized body not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(shadow.hits(), 20);
}

#[tokio::test]
async fn mirror_percent_and_fraction_select_a_share() {
    let (primary, shadow, port) = (
        TestBackend::start("primary").await,
        TestBackend::start("shadow").await,
        free_port(),
    );
    let h = Harness::start(
        port,
        &mirror_files(
            port,
            &primary,
            shadow.port(),
            ", fraction: {numerator: 1, denominator: 4}",
        ),
    )
    .await;
    for _ in 0..2000 {
        h.get("/", &[]).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Mean 500, standard deviation 19.4: allow five.
    assert!(
        (403..=597).contains(&shadow.hits()),
        "{} of 2000 mirrored at 1/4",
        shadow.hits()
    );
    assert_eq!(primary.hits(), 2000);
}

/// The client sees the primary's responses only, at the primary's speed, whatever the mirror does.
async fn live_path_unaffected(
    mirror_port: u16,
    label: &str,
    tune: impl FnOnce(&mut serin_proxy::runtime::Options),
) -> Harness {
    let primary = TestBackend::start("primary").await;
    let port = free_port();
    let h = Harness::start_with(port, &mirror_files(port, &primary, mirror_port, ""), tune).await;
    let started = Instant::now();
    for i in 0..300 {
        let r = h
            .send("POST", "/", &[], Bytes::from_static(b"payload"))
            .await;
        assert_eq!(
            (r.status, r.backend()),
            (StatusCode::OK, "primary".to_owned()),
            "{label}: request {i}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{label}: 300 requests took {:?}",
        started.elapsed()
    );
    assert_eq!(primary.hits(), 300);
    let m = h.metrics().await;
    assert_eq!(
        sample(
            &m,
            "serin_http_requests_total{route=\"test/r\",backend=\"test/primary\",code=\"200\",traffic=\"live\"}"
        ),
        300.0,
        "{label}: no live errors"
    );
    h
}

#[tokio::test]
async fn mirror_down_does_not_affect_the_live_path() {
    let h = live_path_unaffected(free_port(), "down", |_| {}).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while sample(
        &h.metrics().await,
        "serin_http_requests_total{route=\"test/r\",backend=\"test/shadow\",code=\"502\",traffic=\"mirror\"}",
    ) < 300.0
    {
        assert!(
            Instant::now() < deadline,
            "mirror connect errors not recorded as 502"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn mirror_returning_500_does_not_affect_the_live_path() {
    // Test backends answer /status/500 with a 500: the primary's reach the client as its own
    // answers, the mirror's are only counted.
    let failing = TestBackend::start("failing").await;
    let primary = TestBackend::start("primary").await;
    let port = free_port();
    let h = Harness::start(port, &mirror_files(port, &primary, failing.port(), "")).await;
    for _ in 0..100 {
        let r = h.get("/status/500", &[]).await;
        assert_eq!(
            (r.status, r.backend()),
            (StatusCode::INTERNAL_SERVER_ERROR, "primary".to_owned())
        );
    }
    for _ in 0..100 {
        let r = h.get("/ok", &[]).await;
        assert_eq!(
            (r.status, r.backend()),
            (StatusCode::OK, "primary".to_owned())
        );
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while sample(
        &h.metrics().await,
        "serin_http_requests_total{route=\"test/r\",backend=\"test/shadow\",code=\"500\",traffic=\"mirror\"}",
    ) < 100.0
    {
        assert!(Instant::now() < deadline, "mirror 500s not recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        sample(
            &h.metrics().await,
            "serin_http_requests_total{route=\"test/r\",backend=\"test/primary\",code=\"200\",traffic=\"live\"}"
        ),
        100.0
    );
}

#[tokio::test]
async fn mirror_hanging_for_ten_seconds_does_not_affect_the_live_path_and_drops_are_counted() {
    let (hung_port, _hung) = hanging_server().await;
    let h = live_path_unaffected(hung_port, "hanging", |o| {
        o.forward.mirror.concurrency = 4;
        o.forward.mirror.queue = 8;
        o.forward.mirror.timeout = Duration::from_secs(10);
    })
    .await;
    // 4 copies hang; the rest were dropped, not waited for.
    let dropped = sample(
        &h.metrics().await,
        "serin_mirror_dropped_total{reason=\"backend_busy\"}",
    );
    assert!(dropped >= 290.0, "{dropped} dropped");
}

/// One hung mirror backend holds its own share of copies only: another route's mirror keeps
/// getting every copy.
#[tokio::test]
async fn a_hung_mirror_does_not_stop_other_mirrors() {
    let (hung_port, _hung) = hanging_server().await;
    let (primary, shadow, port) = (
        TestBackend::start("primary").await,
        TestBackend::start("shadow").await,
        free_port(),
    );
    let mirror_rule = |section: &str, backend: &str| {
        format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {section}, namespace: test}}\nspec:\n  parentRefs: [{{name: gw}}]\n  hostnames: [{section}.example.com]\n  rules:\n  - filters: [{{type: RequestMirror, requestMirror: {{backendRef: {{group: serin.dev, kind: Backend, name: {backend}}}}}}}]\n    backendRefs: [{{group: serin.dev, kind: Backend, name: primary}}]\n"
        )
    };
    let files = [
        (
            "gw.yaml",
            gateway_and_backends(
                port,
                &[
                    ("primary", primary.port()),
                    ("shadow", shadow.port()),
                    ("hung", hung_port),
                ],
            ),
        ),
        (
            "routes.yaml",
            mirror_rule("stuck", "hung") + &mirror_rule("fine", "shadow"),
        ),
    ];
    let h = Harness::start_with(port, &files, |o| {
        o.forward.mirror.concurrency = 4;
        o.forward.mirror.queue = 8;
        o.forward.mirror.timeout = Duration::from_secs(10);
    })
    .await;
    let request = |host: &'static str| {
        http::Request::get(h.url("/"))
            .header("host", host)
            .body(http_body_util::Full::new(Bytes::new()))
            .unwrap()
    };
    // Far more copies for the hung mirror than the queue holds...
    for _ in 0..100 {
        let r = Reply::read(
            h.client
                .request(request("stuck.example.com"))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    // ...and every copy for the healthy one still arrives, one request at a time.
    for i in 0..20 {
        let r = Reply::read(h.client.request(request("fine.example.com")).await.unwrap()).await;
        assert_eq!(r.status, StatusCode::OK);
        let deadline = Instant::now() + Duration::from_secs(5);
        while shadow.hits() < i + 1 {
            assert!(
                Instant::now() < deadline,
                "copy {i} did not reach the healthy mirror"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let m = h.metrics().await;
    assert!(sample(&m, "serin_mirror_dropped_total{reason=\"backend_busy\"}") >= 96.0);
    assert_eq!(
        sample(&m, "serin_mirror_dropped_total{reason=\"queue_full\"}"),
        0.0
    );
}
