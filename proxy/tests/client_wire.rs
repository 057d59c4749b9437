//! The proxy against clients that speak raw HTTP/1.1: pipelining, `Expect: 100-continue`,
//! HTTP/1.0, request framing that must be refused, limits. These pin down the proxy's own
//! HTTP/1.1 server on the wire.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::wire::{Head, Wire};
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Time allowed for any one exchange with the proxy before a test fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(10);

/// A proxy routing `app.example.com` to backend `a`; other hosts have no route (404).
async fn setup() -> (TestBackend, Harness) {
    let a = TestBackend::start("a").await;
    let port = free_port();
    let route = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: test}\nspec:\n  parentRefs: [{name: gw}]\n  hostnames: [app.example.com]\n  rules:\n  - backendRefs:\n    - {group: serin.dev, kind: Backend, name: a, weight: 1}\n";
    let h = Harness::start(
        port,
        &[
            ("gw.yaml", gateway_and_backends(port, &[("a", a.port())])),
            ("route.yaml", route.to_owned()),
        ],
    )
    .await;
    (a, h)
}

async fn connect(h: &Harness) -> Wire {
    Wire::new(TcpStream::connect(("127.0.0.1", h.port)).await.unwrap())
}

async fn send(wire: &mut Wire, bytes: &[u8]) {
    wire.stream.write_all(bytes).await.unwrap();
}

/// The next response on `wire`: head, decoded body, and whether the body was complete.
async fn response(wire: &mut Wire, head_request: bool) -> (Head, Vec<u8>, bool) {
    tokio::time::timeout(PATIENCE, wire.read_response(head_request))
        .await
        .expect("no response in time")
        .expect("the connection ended before a response")
}

/// What the test backend reported seeing.
fn seen(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

/// True if the proxy closes the connection (after anything it still sends) within PATIENCE.
async fn closes(wire: &mut Wire) -> bool {
    tokio::time::timeout(PATIENCE, async { while wire.fill().await {} })
        .await
        .is_ok()
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let (a, h) = setup().await;
    let mut wire = connect(&h).await;
    send(
        &mut wire,
        b"GET /one HTTP/1.1\r\nHost: app.example.com\r\n\r\n\
          POST /two HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 5\r\n\r\nhello\
          GET /three HTTP/1.1\r\nHost: app.example.com\r\n\r\n",
    )
    .await;
    for (path, body_len) in [("/one", 0), ("/two", 5), ("/three", 0)] {
        let (head, body, complete) = response(&mut wire, false).await;
        assert_eq!(head.status(), 200, "{path}");
        assert!(complete);
        let seen = seen(&body);
        assert_eq!(seen["path"], path);
        assert_eq!(seen["body_len"], body_len, "{path}");
        assert_eq!(head.get("connection"), None);
    }
    send(
        &mut wire,
        b"GET /four HTTP/1.1\r\nHost: app.example.com\r\n\r\n",
    )
    .await;
    let (head, body, _) = response(&mut wire, false).await;
    assert_eq!(head.status(), 200);
    assert_eq!(seen(&body)["path"], "/four");
    assert_eq!(a.hits(), 4);
}

#[tokio::test]
async fn expect_continue_gets_100_before_the_body_is_sent() {
    let (a, h) = setup().await;
    let mut wire = connect(&h).await;
    send(
        &mut wire,
        b"PUT /upload HTTP/1.1\r\nHost: app.example.com\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n",
    )
    .await;
    let (interim, _, _) = response(&mut wire, false).await;
    assert_eq!(interim.start, "HTTP/1.1 100 Continue");
    send(&mut wire, b"hello world").await;
    let (head, body, _) = response(&mut wire, false).await;
    assert_eq!(head.status(), 200);
    assert_eq!(seen(&body)["body_len"], 11);
    assert_eq!(a.seen.lock().unwrap().last().unwrap().1, 11);
}

#[tokio::test]
async fn a_request_refused_before_its_body_is_answered_without_100_and_closed() {
    let (_a, h) = setup().await;
    let mut wire = connect(&h).await;
    send(
        &mut wire,
        b"PUT /upload HTTP/1.1\r\nHost: other.example.com\r\nExpect: 100-continue\r\nContent-Length: 1000000\r\n\r\n",
    )
    .await;
    let (head, _, complete) = response(&mut wire, false).await;
    assert_eq!(head.status(), 404);
    assert!(complete);
    // The body never came, so the connection cannot carry another request.
    assert_eq!(head.get("connection"), Some("close"));
    assert!(closes(&mut wire).await);
}

#[tokio::test]
async fn an_unread_body_already_received_is_skipped_and_the_connection_kept() {
    let (a, h) = setup().await;
    let mut wire = connect(&h).await;
    send(
        &mut wire,
        b"POST /x HTTP/1.1\r\nHost: other.example.com\r\nContent-Length: 5\r\n\r\nhello\
          POST /y HTTP/1.1\r\nHost: other.example.com\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    )
    .await;
    for _ in 0..2 {
        let (head, body, _) = response(&mut wire, false).await;
        assert_eq!(head.status(), 404, "{}", String::from_utf8_lossy(&body));
        assert_eq!(head.get("connection"), None);
        assert!(head.get("date").is_some());
    }
    send(
        &mut wire,
        b"GET /z HTTP/1.1\r\nHost: app.example.com\r\n\r\n",
    )
    .await;
    let (head, body, _) = response(&mut wire, false).await;
    assert_eq!(head.status(), 200);
    assert_eq!(seen(&body)["path"], "/z");
    assert_eq!(a.hits(), 1);
}

#[tokio::test]
async fn chunked_request_body_with_trailers_arrives_decoded_and_the_connection_is_kept() {
    let (a, h) = setup().await;
    let mut wire = connect(&h).await;
    send(
        &mut wire,
        b"POST /c HTTP/1.1\r\nHost: app.example.com\r\nTransfer-Encoding: chunked\r\n\r\n\
          5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-checksum: 42\r\n\r\n",
    )
    .await;
    let (head, body, _) = response(&mut wire, false).await;
    assert_eq!(head.status(), 200);
    assert_eq!(seen(&body)["body_len"], 11);
    send(
        &mut wire,
        b"GET /d HTTP/1.1\r\nHost: app.example.com\r\n\r\n",
    )
    .await;
    let (head, _, _) = response(&mut wire, false).await;
    assert_eq!(head.status(), 200);
    assert_eq!(a.hits(), 2);
    assert_eq!(a.connections(), 1);
}

/// Sends `request` on a new connection: the proxy must answer `status` naming `reason`, close
/// the connection, and not pass anything to the backend.
async fn refused(request: &[u8], status: u16, reason: &str) {
    let (a, h) = setup().await;
    let mut wire = connect(&h).await;
    send(&mut wire, request).await;
    let (head, body, _) = response(&mut wire, false).await;
    assert_eq!(head.status(), status);
    assert_eq!(head.get("connection"), Some("close"));
    assert_eq!(String::from_utf8_lossy(&body), format!("{reason}\n"));
    assert!(closes(&mut wire).await, "the connection stays open");
    assert_eq!(a.hits(), 0);
    // The proxy keeps serving.
    let mut wire = connect(&h).await;
    send(
        &mut wire,
        b"GET / HTTP/1.1\r\nHost: app.example.com\r\n\r\n",
    )
    .await;
    assert_eq!(response(&mut wire, false).await.0.status(), 200);
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_refused_so_nothing_is_smuggled() {
    refused(
        b"POST / HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 35\r\nTransfer-Encoding: chunked\r\n\r\n\
          0\r\n\r\nGET /smuggled HTTP/1.1\r\nX: y\r\n\r\n",
        400,
        "both transfer-encoding and content-length",
    )
    .await;
}

#[tokio::test]
async fn unknown_transfer_coding_is_501() {
    refused(
        b"POST / HTTP/1.1\r\nHost: app.example.com\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        501,
        "transfer coding other than chunked",
    )
    .await;
}

#[tokio::test]
async fn conflicting_content_lengths_are_400() {
    refused(
        b"POST / HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        400,
        "invalid content-length",
    )
    .await;
}

#[tokio::test]
async fn malformed_request_line_is_400() {
    refused(
        b"GET /a b HTTP/1.1\r\nHost: app.example.com\r\n\r\n",
        400,
        "invalid request line",
    )
    .await;
}

#[tokio::test]
async fn request_head_over_64_kib_is_431() {
    let mut request = b"GET / HTTP/1.1\r\nHost: app.example.com\r\n".to_vec();
    for i in 0..70 {
        request.extend_from_slice(format!("x-{i}: {}\r\n", "v".repeat(1000)).as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    refused(&request, 431, "request head larger than 64 KiB").await;
}

#[tokio::test]
async fn more_than_100_header_fields_is_431() {
    let mut request = b"GET / HTTP/1.1\r\nHost: app.example.com\r\n".to_vec();
    for i in 0..100 {
        request.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    refused(&request, 431, "more than 100 header fields").await;
}

#[tokio::test]
async fn http10_keep_alive_is_honoured_and_answered_in_kind() {
    let (a, h) = setup().await;
    let mut wire = connect(&h).await;
    for path in ["/first", "/second"] {
        send(
            &mut wire,
            format!(
                "GET {path} HTTP/1.0\r\nHost: app.example.com\r\nConnection: keep-alive\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
        let (head, body, _) = response(&mut wire, false).await;
        assert_eq!(head.status(), 200);
        assert_eq!(head.get("connection"), Some("keep-alive"));
        assert!(head.content_length().is_some());
        assert_eq!(seen(&body)["path"], path);
    }
    assert_eq!(a.hits(), 2);
}

#[tokio::test]
async fn http10_gets_a_body_of_unknown_length_delimited_by_close() {
    let (_a, h) = setup().await;
    let mut wire = connect(&h).await;
    send(
        &mut wire,
        b"GET /stream HTTP/1.0\r\nHost: app.example.com\r\nConnection: keep-alive\r\n\r\n",
    )
    .await;
    let (head, body, complete) = response(&mut wire, false).await;
    assert_eq!(head.status(), 200);
    // No chunked coding for an HTTP/1.0 client: the end of the connection ends the body.
    assert!(!head.chunked(), "{head:?}");
    assert_eq!(head.content_length(), None);
    assert_eq!(head.get("connection"), Some("close"));
    assert!(complete);
    assert_eq!(body, b"first;second");
}

#[tokio::test]
async fn http11_gets_a_body_of_unknown_length_chunked() {
    let (_a, h) = setup().await;
    let mut wire = connect(&h).await;
    send(
        &mut wire,
        b"GET /stream HTTP/1.1\r\nHost: app.example.com\r\n\r\n",
    )
    .await;
    let (head, body, complete) = response(&mut wire, false).await;
    assert!(head.chunked(), "{head:?}");
    assert!(complete);
    assert_eq!(body, b"first;second");
    send(
        &mut wire,
        b"GET /next HTTP/1.1\r\nHost: app.example.com\r\n\r\n",
    )
    .await;
    assert_eq!(response(&mut wire, false).await.0.status(), 200);
}

#[tokio::test]
async fn head_response_has_the_length_and_no_body_and_the_connection_is_kept() {
    let (_a, h) = setup().await;
    let mut wire = connect(&h).await;
    send(
        &mut wire,
        b"HEAD /h HTTP/1.1\r\nHost: app.example.com\r\n\r\n",
    )
    .await;
    let (head, _, _) = response(&mut wire, true).await;
    assert_eq!(head.status(), 200);
    assert!(head.content_length().is_some_and(|n| n > 0), "{head:?}");
    send(
        &mut wire,
        b"GET /after HTTP/1.1\r\nHost: app.example.com\r\n\r\n",
    )
    .await;
    let (head, body, _) = response(&mut wire, false).await;
    assert_eq!(head.status(), 200);
    assert_eq!(seen(&body)["path"], "/after");
}

#[tokio::test]
async fn connection_close_from_the_client_is_answered_then_closed() {
    let (_a, h) = setup().await;
    let mut wire = connect(&h).await;
    send(
        &mut wire,
        b"GET /bye HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    let (head, _, complete) = response(&mut wire, false).await;
    assert_eq!(head.status(), 200);
    assert!(complete);
    assert_eq!(head.get("connection"), Some("close"));
    assert!(closes(&mut wire).await);
}

#[tokio::test]
async fn a_client_gone_in_the_middle_of_a_body_does_not_disturb_others() {
    let (a, h) = setup().await;
    let mut wire = connect(&h).await;
    send(
        &mut wire,
        b"POST /cut HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 100\r\n\r\nonly part",
    )
    .await;
    drop(wire);
    let mut wire = connect(&h).await;
    send(
        &mut wire,
        b"GET /fine HTTP/1.1\r\nHost: app.example.com\r\n\r\n",
    )
    .await;
    let (head, body, _) = response(&mut wire, false).await;
    assert_eq!(head.status(), 200);
    assert_eq!(seen(&body)["path"], "/fine");
    // The cut request never reached the backend whole.
    assert!(a.seen.lock().unwrap().iter().all(|(_, len)| *len != 100));
}

#[tokio::test]
async fn http11_request_without_host_is_400() {
    refused(b"GET / HTTP/1.1\r\n\r\n", 400, "missing host").await;
}

#[tokio::test]
async fn two_hosts_are_400() {
    refused(
        b"GET / HTTP/1.1\r\nHost: app.example.com\r\nHost: other.example.com\r\n\r\n",
        400,
        "more than one host",
    )
    .await;
}

#[tokio::test]
async fn heads_slower_than_the_header_read_timeout_and_idle_connections_are_closed() {
    let a = TestBackend::start("a").await;
    let port = free_port();
    let h = Harness::start_with(
        port,
        &[("gw.yaml", gateway_and_backends(port, &[("a", a.port())])), (
            "route.yaml",
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: test}\nspec:\n  parentRefs: [{name: gw}]\n  rules:\n  - backendRefs:\n    - {group: serin.dev, kind: Backend, name: a, weight: 1}\n".to_owned(),
        )],
        |o| o.forward.header_read_timeout = Duration::from_millis(300),
    )
    .await;
    // A head that trickles in and never ends.
    let mut slow = connect(&h).await;
    send(&mut slow, b"GET / HTTP/1.1\r\nHost: app").await;
    // An idle keep-alive connection after one request.
    let mut idle = connect(&h).await;
    send(
        &mut idle,
        b"GET / HTTP/1.1\r\nHost: app.example.com\r\n\r\n",
    )
    .await;
    assert_eq!(response(&mut idle, false).await.0.status(), 200);
    // A connection that sends requests well within the limit each time is kept.
    let mut busy = connect(&h).await;
    let started = std::time::Instant::now();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        send(
            &mut busy,
            b"GET / HTTP/1.1\r\nHost: app.example.com\r\n\r\n",
        )
        .await;
        assert_eq!(response(&mut busy, false).await.0.status(), 200);
    }
    assert!(started.elapsed() > Duration::from_millis(600));
    // By now both others are past their limit (the list fires up to 10 ms late).
    assert!(closes(&mut slow).await);
    assert!(closes(&mut idle).await);
    assert_eq!(a.hits(), 5, "the trickling head never reached the backend");
}

#[tokio::test]
async fn idle_keep_alive_connections_close_as_soon_as_shutdown_begins() {
    let (a, mut h) = setup().await;
    // One connection idle since its first request, one that went idle, served another request,
    // and went idle again (its wake-up for shutdown was arranged during the first wait).
    let mut once = connect(&h).await;
    let mut twice = connect(&h).await;
    for wire in [&mut once, &mut twice] {
        send(wire, b"GET / HTTP/1.1\r\nHost: app.example.com\r\n\r\n").await;
        assert_eq!(response(wire, false).await.0.status(), 200);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    send(
        &mut twice,
        b"GET / HTTP/1.1\r\nHost: app.example.com\r\n\r\n",
    )
    .await;
    assert_eq!(response(&mut twice, false).await.0.status(), 200);
    tokio::time::sleep(Duration::from_millis(100)).await;

    // The drain waits up to 30 s for connections; idle ones must not make it wait.
    let started = std::time::Instant::now();
    let stopping = tokio::spawn(h.proxy.take().unwrap().shutdown());
    assert!(closes(&mut once).await);
    assert!(closes(&mut twice).await);
    tokio::time::timeout(PATIENCE, stopping)
        .await
        .expect("shutdown waited for idle connections")
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(a.hits(), 3);
}

// ---------------------------------------------------------------------------------------------
// Hostile and unusual input.

/// Requests of route test/r counted against backend a with `code`.
fn backend_count(metrics: &str, code: u16) -> f64 {
    sample(
        metrics,
        &format!(
            "serin_http_requests_total{{route=\"test/r\",backend=\"test/a\",code=\"{code}\",traffic=\"live\"}}"
        ),
    )
}

/// Requests of route test/r the client broke: counted with an empty backend.
fn client_count(metrics: &str, code: u16) -> f64 {
    sample(
        metrics,
        &format!(
            "serin_http_requests_total{{route=\"test/r\",backend=\"\",code=\"{code}\",traffic=\"live\"}}"
        ),
    )
}

/// Sends each of `requests` on a connection of its own: each must be answered 400 and the
/// connection closed, and counted as the client's fault, never against the backend.
async fn client_faults(requests: &[&[u8]]) {
    let (_a, h) = setup().await;
    for request in requests {
        let text = String::from_utf8_lossy(request);
        let mut wire = connect(&h).await;
        send(&mut wire, request).await;
        let (head, _, _) = response(&mut wire, false).await;
        assert_eq!(head.status(), 400, "{text:?}");
        assert_eq!(head.get("connection"), Some("close"), "{text:?}");
        assert!(
            closes(&mut wire).await,
            "{text:?}: the connection stays open"
        );
    }
    let m = h.metrics().await;
    for code in [400, 500, 502, 503, 504] {
        assert_eq!(
            backend_count(&m, code),
            0.0,
            "code {code} counted for the backend"
        );
    }
    assert_eq!(client_count(&m, 400), requests.len() as f64);
    // The proxy keeps serving, and counts what the backend answers as the backend's.
    let mut wire = connect(&h).await;
    send(
        &mut wire,
        b"GET / HTTP/1.1\r\nHost: app.example.com\r\n\r\n",
    )
    .await;
    assert_eq!(response(&mut wire, false).await.0.status(), 200);
    assert_eq!(backend_count(&h.metrics().await, 200), 1.0);
}

const CHUNKED_POST: &str =
    "POST /c HTTP/1.1\r\nHost: app.example.com\r\nTransfer-Encoding: chunked\r\n\r\n";

fn chunked_post(body: &str) -> Vec<u8> {
    format!("{CHUNKED_POST}{body}").into_bytes()
}

#[tokio::test]
async fn malformed_chunk_sizes_are_400_and_not_counted_against_the_backend() {
    let bodies = [
        " 5\r\nhello\r\n0\r\n\r\n",
        "10000000000000005\r\nhello\r\n0\r\n\r\n",
        "ffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        "0x5\r\nhello\r\n0\r\n\r\n",
        "-5\r\nhello\r\n0\r\n\r\n",
        "5 5\r\nhello\r\n0\r\n\r\n",
    ];
    let requests: Vec<Vec<u8>> = bodies.iter().map(|b| chunked_post(b)).collect();
    let requests: Vec<&[u8]> = requests.iter().map(Vec::as_slice).collect();
    client_faults(&requests).await;
}

#[tokio::test]
async fn chunk_data_longer_than_its_size_is_400_and_not_counted_against_the_backend() {
    client_faults(&[&chunked_post("3\r\nhello\r\n0\r\n\r\n")]).await;
}

#[tokio::test]
async fn an_empty_chunk_size_line_is_400_not_the_last_chunk() {
    client_faults(&[
        &chunked_post("5\r\nhello\r\n\r\n\r\n"),
        &chunked_post("5\r\nhello\r\n \r\n\r\n"),
    ])
    .await;
}

#[tokio::test]
async fn a_body_cut_short_by_a_half_close_is_400_and_not_counted_against_the_backend() {
    let (_a, h) = setup().await;
    let mut wire = connect(&h).await;
    send(
        &mut wire,
        b"POST /short HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 10\r\n\r\nhello",
    )
    .await;
    wire.stream.shutdown().await.unwrap();
    let (head, _, _) = response(&mut wire, false).await;
    assert_eq!(head.status(), 400);
    assert_eq!(head.get("connection"), Some("close"));
    assert!(closes(&mut wire).await);
    let m = h.metrics().await;
    assert_eq!(backend_count(&m, 502), 0.0);
    assert_eq!(client_count(&m, 400), 1.0);
}

/// Sends `request` (with `Connection: close` in it) and returns what the backend saw.
async fn accepted(h: &Harness, request: &[u8]) -> Value {
    let mut wire = connect(h).await;
    send(&mut wire, request).await;
    let (head, body, complete) = response(&mut wire, false).await;
    assert_eq!(
        head.status(),
        200,
        "{:?}: {}",
        String::from_utf8_lossy(request),
        String::from_utf8_lossy(&body)
    );
    assert!(complete);
    seen(&body)
}

#[tokio::test]
async fn chunk_sizes_with_leading_zeros_and_bare_lf_chunk_lines_are_accepted() {
    let (_a, h) = setup().await;
    let bodies = [
        "000000000000000000000005\r\nhello\r\n000\r\n\r\n",
        "5\nhello\n0\n\n",
        "5;ext=1\nhello\r\n0\n\r\n",
        "5\r\nhello\n0\r\n\n",
        // A bare LF ends the chunk-size line, extension or not: what follows is data.
        "5;a\nhello\r\n0\r\n\r\n",
    ];
    for body in bodies {
        let request = format!(
            "POST /c HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n{body}"
        );
        let seen = accepted(&h, request.as_bytes()).await;
        assert_eq!(seen["body_len"], 5, "{body:?}");
    }
}

#[tokio::test]
async fn content_length_with_leading_zeros_is_accepted() {
    let (_a, h) = setup().await;
    let seen = accepted(
        &h,
        b"POST /cl HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\nContent-Length: 0000000000000000000000005\r\n\r\nhello",
    )
    .await;
    assert_eq!(seen["body_len"], 5);
    assert_eq!(seen["headers"]["content-length"], "5");
}

#[tokio::test]
async fn any_http_1_minor_version_is_served_as_http_1_1() {
    let (a, h) = setup().await;
    let mut wire = connect(&h).await;
    send(
        &mut wire,
        b"GET /one HTTP/1.2\r\nHost: app.example.com\r\n\r\nGET /two HTTP/1.9\r\nHost: app.example.com\r\n\r\n",
    )
    .await;
    for path in ["/one", "/two"] {
        let (head, body, _) = response(&mut wire, false).await;
        assert_eq!(head.start, "HTTP/1.1 200 OK");
        assert_eq!(seen(&body)["path"], path);
        // Persistent, as HTTP/1.1 is.
        assert_eq!(head.get("connection"), None);
    }
    assert_eq!(a.hits(), 2);
}

#[tokio::test]
async fn http_2_request_line_over_http_1_is_still_505() {
    refused(
        b"GET / HTTP/2.0\r\nHost: app.example.com\r\n\r\n",
        505,
        "HTTP version not supported",
    )
    .await;
}

#[tokio::test]
async fn an_authority_form_target_is_400_unless_connect() {
    refused(
        b"GET app.example.com:80 HTTP/1.1\r\nHost: app.example.com\r\n\r\n",
        400,
        "authority-form target without CONNECT",
    )
    .await;
}

#[tokio::test]
async fn connect_is_405_never_forwarded() {
    refused(
        b"CONNECT app.example.com:443 HTTP/1.1\r\nHost: app.example.com:443\r\n\r\n",
        405,
        "CONNECT is not supported",
    )
    .await;
}

#[tokio::test]
async fn unequal_content_lengths_in_one_list_are_400() {
    refused(
        b"POST / HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 4, 3\r\n\r\nabcd",
        400,
        "invalid content-length",
    )
    .await;
}

#[tokio::test]
async fn a_host_with_spaces_slashes_or_userinfo_or_an_empty_host_is_400() {
    for host in [
        "app.example.com/admin",
        "app example.com",
        "app.example.com\\x",
        "user@app.example.com",
        "app.example.com?",
        "",
    ] {
        let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
        refused(request.as_bytes(), 400, "invalid host").await;
    }
}

#[tokio::test]
async fn an_absolute_form_target_routes_by_its_authority_and_the_backend_gets_it_as_host() {
    let (a, h) = setup().await;
    let mut wire = connect(&h).await;
    // Routed by the target's authority: the backend must see the host that was routed, never
    // the other one the client put in Host.
    send(
        &mut wire,
        b"GET http://app.example.com/x HTTP/1.1\r\nHost: other.example.com\r\n\r\n",
    )
    .await;
    let (head, body, _) = response(&mut wire, false).await;
    assert_eq!(head.status(), 200);
    let seen = seen(&body);
    assert_eq!(seen["path"], "/x");
    assert_eq!(seen["headers"]["host"], "app.example.com");
    assert_eq!(seen["headers"]["x-forwarded-host"], "app.example.com");
    // The other way round: no route for the target's authority, whatever Host says.
    send(
        &mut wire,
        b"GET http://other.example.com/x HTTP/1.1\r\nHost: app.example.com\r\n\r\n",
    )
    .await;
    assert_eq!(response(&mut wire, false).await.0.status(), 404);
    assert_eq!(a.hits(), 1);
    assert_eq!(a.seen.lock().unwrap()[0].0, "app.example.com");
}

#[tokio::test]
async fn an_absolute_form_target_with_user_information_is_400() {
    refused(
        b"GET http://user@app.example.com/x HTTP/1.1\r\nHost: app.example.com\r\n\r\n",
        400,
        "user information in the target",
    )
    .await;
}

/// A proxy routing `/public` (and below) on any host to backend `a`; other paths have no route.
async fn setup_public_only() -> (TestBackend, Harness) {
    let a = TestBackend::start("a").await;
    let port = free_port();
    let route = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: test}\nspec:\n  parentRefs: [{name: gw}]\n  rules:\n  - matches: [{path: {type: PathPrefix, value: /public}}]\n    backendRefs:\n    - {group: serin.dev, kind: Backend, name: a, weight: 1}\n";
    let h = Harness::start(
        port,
        &[
            ("gw.yaml", gateway_and_backends(port, &[("a", a.port())])),
            ("route.yaml", route.to_owned()),
        ],
    )
    .await;
    (a, h)
}

#[tokio::test]
async fn the_path_is_normalised_before_matching_and_forwarded_normalised() {
    let (a, h) = setup_public_only().await;
    let mut wire = connect(&h).await;
    // Dot segments, plain or encoded, that leave /public match no route: a backend resolving
    // them would serve /admin past the /public rule.
    for target in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/.%2E/admin",
        "/public/x/../../admin",
    ] {
        send(
            &mut wire,
            format!("GET {target} HTTP/1.1\r\nHost: app.example.com\r\n\r\n").as_bytes(),
        )
        .await;
        let (head, _, _) = response(&mut wire, false).await;
        assert_eq!(head.status(), 404, "{target}");
    }
    assert_eq!(a.hits(), 0);
    // Those that stay under /public reach the backend as the path that was matched.
    for (target, path) in [
        ("/%70ublic/x", "/public/x"),
        ("/public/./x/../%61b%2Dc", "/public/ab-c"),
        ("/admin/../public/x?q=/../y", "/public/x"),
        ("/public/a%2fb", "/public/a%2fb"),
    ] {
        send(
            &mut wire,
            format!("GET {target} HTTP/1.1\r\nHost: app.example.com\r\n\r\n").as_bytes(),
        )
        .await;
        let (head, body, _) = response(&mut wire, false).await;
        assert_eq!(head.status(), 200, "{target}");
        assert_eq!(seen(&body)["path"], path, "{target}");
    }
    assert_eq!(a.hits(), 4);
}

#[tokio::test]
async fn a_path_climbing_above_the_root_is_400() {
    let (a, h) = setup_public_only().await;
    let mut wire = connect(&h).await;
    for target in ["/../public/x", "/public/../../public/x", "/%2e%2e/public"] {
        send(
            &mut wire,
            format!("GET {target} HTTP/1.1\r\nHost: app.example.com\r\n\r\n").as_bytes(),
        )
        .await;
        let (head, body, _) = response(&mut wire, false).await;
        assert_eq!(head.status(), 400, "{target}");
        assert_eq!(body, b"path climbs above the root\n");
    }
    assert_eq!(a.hits(), 0);
}

#[tokio::test]
async fn an_asterisk_form_target_is_400_unless_options() {
    refused(
        b"GET * HTTP/1.1\r\nHost: app.example.com\r\n\r\n",
        400,
        "asterisk-form target without OPTIONS",
    )
    .await;
}

#[tokio::test]
async fn a_content_length_of_2_pow_64_is_400_never_taken_for_0() {
    // 2^64 wrapped around to 0 would make the body a second request, forwarded on its own.
    refused(
        b"POST / HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 18446744073709551616\r\n\r\n\
          GET /smuggled HTTP/1.1\r\nHost: app.example.com\r\n\r\n",
        400,
        "invalid content-length",
    )
    .await;
}
