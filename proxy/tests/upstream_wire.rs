//! The proxy against backends that speak raw, sometimes odd, HTTP/1.1.
//!
//! A scripted backend writes exactly the bytes each test gives it, one script step per request
//! in arrival order, and records what it received. These tests pin down the upstream client's
//! behaviour on the wire (framing, connection reuse, malformed responses), whatever client the
//! proxy uses.

mod support;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, Full};
use support::wire::{Framing, Head, Wire};
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// Time allowed for any one exchange with the proxy before a test fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// The scripted backend.

/// What the backend does with its connection after writing a step's bytes.
#[derive(Debug, Clone)]
enum Then {
    /// Waits for the next request on the same connection.
    KeepOpen,
    /// Closes the connection at once.
    Close,
    /// Closes the connection after this long (a server-side idle close).
    CloseAfter(Duration),
    /// Writes more bytes after this long, unasked, and waits for the next request.
    SendLater(Duration, Vec<u8>),
}

/// The answer to one request: raw bytes, then what happens to the connection.
#[derive(Debug, Clone)]
struct Step {
    bytes: Vec<u8>,
    then: Then,
}

impl Step {
    fn keep(bytes: impl Into<Vec<u8>>) -> Step {
        Step {
            bytes: bytes.into(),
            then: Then::KeepOpen,
        }
    }

    fn close(bytes: impl Into<Vec<u8>>) -> Step {
        Step {
            bytes: bytes.into(),
            then: Then::Close,
        }
    }

    fn close_after(bytes: impl Into<Vec<u8>>, after: Duration) -> Step {
        Step {
            bytes: bytes.into(),
            then: Then::CloseAfter(after),
        }
    }

    fn send_later(bytes: impl Into<Vec<u8>>, after: Duration, more: impl Into<Vec<u8>>) -> Step {
        Step {
            bytes: bytes.into(),
            then: Then::SendLater(after, more.into()),
        }
    }
}

/// One request as the backend received it.
#[derive(Debug, Clone)]
struct Seen {
    /// Which accepted connection it came on, from 0.
    connection: usize,
    head: Head,
    /// The body, decoded by the framing its head announced.
    body: Vec<u8>,
    /// The trailer fields of a chunked body.
    trailers: Vec<(String, String)>,
}

/// A backend on loopback that answers each request (in arrival order, across connections) with
/// the next scripted [`Step`]. With no step left it closes the connection without answering.
struct ScriptedBackend {
    port: u16,
    accepted: Arc<AtomicUsize>,
    steps: Arc<Mutex<VecDeque<Step>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ScriptedBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ScriptedBackend {
    async fn start() -> ScriptedBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let steps = Arc::new(Mutex::new(VecDeque::new()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (a, st, se) = (accepted.clone(), steps.clone(), seen.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let connection = a.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve_script(
                    connection,
                    Wire::new(stream),
                    st.clone(),
                    se.clone(),
                ));
            }
        });
        ScriptedBackend {
            port,
            accepted,
            steps,
            seen,
            task,
        }
    }

    fn push(&self, step: Step) {
        self.steps.lock().unwrap().push_back(step);
    }

    /// Connections accepted so far.
    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The connection each request arrived on, in order.
    fn connections_used(&self) -> Vec<usize> {
        self.seen().iter().map(|s| s.connection).collect()
    }
}

async fn serve_script(
    connection: usize,
    mut wire: Wire,
    steps: Arc<Mutex<VecDeque<Step>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
) {
    while let Some(head) = wire.read_head().await {
        let framing = if head.chunked() {
            Framing::Chunked
        } else {
            Framing::Length(head.content_length().unwrap_or(0))
        };
        let (body, complete) = wire.read_body(framing).await;
        seen.lock().unwrap().push(Seen {
            connection,
            head,
            body,
            trailers: std::mem::take(&mut wire.trailers),
        });
        if !complete {
            return;
        }
        let Some(step) = steps.lock().unwrap().pop_front() else {
            return;
        };
        // The proxy may stop reading (an oversized head, say): write errors are expected.
        let _ = wire.stream.write_all(&step.bytes).await;
        match step.then {
            Then::KeepOpen => {}
            Then::Close => return,
            Then::CloseAfter(d) => {
                tokio::time::sleep(d).await;
                return;
            }
            Then::SendLater(d, more) => {
                tokio::time::sleep(d).await;
                let _ = wire.stream.write_all(&more).await;
            }
        }
    }
}

/// A 200 response with a Content-Length body.
fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// `len` bytes of printable text that vary with position, so lost, shifted or reordered bytes
/// show (the pattern does not repeat at the power-of-two strides buffers and chunks use).
fn pattern(len: usize, seed: usize) -> Vec<u8> {
    (0..len)
        .map(|i| b'!' + ((i.wrapping_mul(7) + seed + i / 251) % 89) as u8)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The proxy in front of it, and clients.

fn route_to_a() -> String {
    "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: test}\nspec:\n  parentRefs: [{name: gw}]\n  rules:\n  - backendRefs:\n    - {group: serin.dev, kind: Backend, name: a, weight: 1}\n".to_owned()
}

/// A scripted backend and a proxy routing everything to it. One serving thread: the client's
/// connections and so all upstream connections share one pool, which makes reuse countable.
async fn setup() -> (ScriptedBackend, Harness) {
    let backend = ScriptedBackend::start().await;
    let port = free_port();
    let h = Harness::start_with(
        port,
        &[
            (
                "gw.yaml",
                gateway_and_backends(port, &[("a", backend.port)]),
            ),
            ("route.yaml", route_to_a()),
        ],
        |o| o.forward.workers = 1,
    )
    .await;
    (backend, h)
}

/// A response read whole, body as bytes.
#[derive(Debug)]
struct Got {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Got {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One request through the proxy with the harness client (keep-alive); errors are returned.
async fn fetch(h: &Harness, method: &str, path: &str, body: Bytes) -> Result<Got, String> {
    let req = http::Request::builder()
        .method(method)
        .uri(h.url(path))
        .header("host", "app.example.com")
        .body(Full::new(body))
        .unwrap();
    let exchange = async {
        let response = h
            .client
            .request(req)
            .await
            .map_err(|e| format!("request failed: {e:?}"))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("response body failed: {e:?}"))?
            .to_bytes();
        Ok(Got {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    };
    tokio::time::timeout(PATIENCE, exchange)
        .await
        .map_err(|_| format!("no complete answer within {PATIENCE:?}"))?
}

async fn get(h: &Harness, path: &str) -> Got {
    fetch(h, "GET", path, Bytes::new())
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// A response as a raw client sees it.
#[derive(Debug)]
struct RawResponse {
    head: Head,
    body: Vec<u8>,
    /// Whether the body ended as its framing says (rather than the connection ending early).
    complete: bool,
    /// The trailer fields of a chunked body.
    trailers: Vec<(String, String)>,
}

/// Writes `parts` to the proxy on a new connection (20 ms apart) and reads one response.
/// `Err` if no response head arrives, or if the proxy neither finishes the response nor closes
/// the connection within [`PATIENCE`].
async fn raw_exchange(port: u16, parts: &[&[u8]]) -> Result<RawResponse, String> {
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            stream
                .write_all(part)
                .await
                .map_err(|e| format!("write: {e}"))?;
        }
        let mut wire = Wire::new(stream);
        let (head, body, complete) = wire
            .read_response(false)
            .await
            .ok_or("the connection ended before a response head")?;
        Ok(RawResponse {
            head,
            body,
            complete,
            trailers: wire.trailers,
        })
    };
    tokio::time::timeout(PATIENCE, exchange)
        .await
        .map_err(|_| format!("the proxy neither finished nor closed within {PATIENCE:?}"))?
}

// ---------------------------------------------------------------------------------------------
// Response framing and connection reuse.

#[tokio::test]
async fn chunked_response_with_extensions_arrives_whole_and_connection_is_reused() {
    let (b, h) = setup().await;
    b.push(Step::keep(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
         5;name=v\r\nhello\r\n7\r\n, world\r\n1;a=b;c=\"d e\"\r\n!\r\n0\r\n\r\n",
    ));
    b.push(Step::keep(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6;x\r\nsecond\r\n0\r\n\r\n",
    ));
    let r = get(&h, "/one").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "hello, world!");
    let r = get(&h, "/two").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "second");
    assert_eq!(b.accepted(), 1, "the upstream connection is reused");
    assert_eq!(b.connections_used(), [0, 0]);
}

/// A chunked response ending in trailer fields, then a plain one.
const WITH_TRAILERS: &str = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
    4\r\nwith\r\n9\r\n trailers\r\n0\r\nX-Checksum: 1\r\nX-Other: two\r\n\r\n";

/// Answers GET `path` with `first`, then GET /second with a plain "second" (which must arrive
/// whole: nothing of the first answer was left over); returns the first reply.
async fn first_then_second(b: &ScriptedBackend, h: &Harness, first: Step, path: &str) -> Got {
    b.push(first);
    b.push(Step::keep(ok("second")));
    let r = get(h, path).await;
    let second = get(h, "/second").await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.text(), "second");
    r
}

#[tokio::test]
async fn chunked_response_with_trailers_arrives_whole_and_connection_is_reused() {
    let (b, h) = setup().await;
    let r = first_then_second(&b, &h, Step::keep(WITH_TRAILERS), "/trailers").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "with trailers");
    assert_eq!(b.accepted(), 1, "the upstream connection is reused");
    assert_eq!(b.connections_used(), [0, 0]);
}

#[tokio::test]
async fn close_delimited_response_arrives_whole_and_next_request_opens_a_new_connection() {
    let (b, h) = setup().await;
    let body = pattern(200_000, 3);
    let mut response = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n".to_vec();
    response.extend_from_slice(&body);
    let r = first_then_second(&b, &h, Step::close(response), "/eof").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body.len(), body.len());
    assert!(r.body == body, "the close-delimited body differs");
    assert_eq!(b.accepted(), 2);
    assert_eq!(b.connections_used(), [0, 1]);
}

#[tokio::test]
async fn head_response_keeps_content_length_without_a_body_and_connection_is_reused() {
    let (b, h) = setup().await;
    b.push(Step::keep(
        "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nContent-Type: text/plain\r\n\r\n",
    ));
    b.push(Step::keep(ok("after head")));
    let r = fetch(&h, "HEAD", "/head", Bytes::new()).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.headers.get("content-length").map(|v| v.as_bytes()),
        Some(&b"1000"[..])
    );
    assert!(
        r.body.is_empty(),
        "a HEAD response has no body: {:?}",
        r.body
    );
    let r = get(&h, "/after").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "after head");
    assert_eq!(b.accepted(), 1, "the upstream connection is reused");
    let seen = b.seen();
    assert!(
        seen[0].head.start.starts_with("HEAD /head "),
        "{:?}",
        seen[0].head
    );
}

#[tokio::test]
async fn no_content_and_not_modified_have_no_body_and_connection_is_reused() {
    let (b, h) = setup().await;
    b.push(Step::keep("HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n"));
    b.push(Step::keep(
        "HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n",
    ));
    b.push(Step::keep(ok("fresh")));
    let r = get(&h, "/204").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(r.body.is_empty());
    assert_eq!(r.headers["x-a"], "1");
    let r = get(&h, "/304").await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    assert!(r.body.is_empty());
    assert_eq!(r.headers["etag"], "\"v1\"");
    let r = get(&h, "/200").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "fresh");
    assert_eq!(b.accepted(), 1, "the upstream connection is reused");
}

#[tokio::test]
async fn interim_100_continue_is_skipped_and_the_final_response_is_forwarded() {
    let (b, h) = setup().await;
    b.push(Step::keep(
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal",
    ));
    b.push(Step::keep(ok("next")));
    let r = get(&h, "/continue").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "final");
    let r = get(&h, "/next").await;
    assert_eq!(r.text(), "next");
    assert_eq!(b.accepted(), 1, "the upstream connection is reused");
}

// ---------------------------------------------------------------------------------------------
// Responses the proxy rejects.

/// A healthy exchange, then `bad` answered with 502, then a healthy one again. The bad answer
/// comes on the reused connection, or on a fresh one when `fresh_connection`. A connection that
/// carried a bad answer is not used again.
async fn answers_502_then_keeps_serving(bad: Step, fresh_connection: bool) {
    let (b, h) = setup().await;
    b.push(if fresh_connection {
        Step::close(ok("before"))
    } else {
        Step::keep(ok("before"))
    });
    b.push(bad);
    b.push(Step::keep(ok("after")));
    let r = get(&h, "/before").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "before");
    // Headers left out of failure messages: they may be huge.
    let r = get(&h, "/bad").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "body: {:?}", r.text());
    let r = get(&h, "/after").await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "the proxy keeps serving; body: {:?}",
        r.text()
    );
    assert_eq!(r.text(), "after");
    let (bad_on, after_on) = if fresh_connection { (1, 2) } else { (0, 1) };
    assert_eq!(b.connections_used(), [0, bad_on, after_on]);
    assert_eq!(b.accepted(), after_on + 1);
}

#[tokio::test]
async fn invalid_status_line_is_502_and_the_proxy_keeps_serving() {
    answers_502_then_keeps_serving(
        Step::keep("HTPT/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        false,
    )
    .await;
}

#[tokio::test]
async fn non_numeric_content_length_is_502_and_the_proxy_keeps_serving() {
    answers_502_then_keeps_serving(
        Step::keep("HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nok"),
        false,
    )
    .await;
}

#[tokio::test]
async fn a_content_length_of_2_pow_64_is_502_never_taken_for_0() {
    // Wrapped around to 0, the body would be left on the connection as the next answer.
    answers_502_then_keeps_serving(
        Step::keep(
            "HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551616\r\n\r\n\
             HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled",
        ),
        false,
    )
    .await;
}

#[tokio::test]
async fn conflicting_content_lengths_are_502_and_the_proxy_keeps_serving() {
    answers_502_then_keeps_serving(
        Step::keep("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok"),
        false,
    )
    .await;
}

/// A response head of `header_bytes` in one header field.
fn huge_head(header_bytes: usize) -> Vec<u8> {
    let mut r = b"HTTP/1.1 200 OK\r\nX-Huge: ".to_vec();
    r.extend(pattern(header_bytes, 0));
    r.extend_from_slice(b"\r\nContent-Length: 2\r\n\r\nok");
    r
}

#[tokio::test]
async fn response_head_of_one_mib_is_502_and_the_proxy_keeps_serving() {
    answers_502_then_keeps_serving(Step::close(huge_head(1 << 20)), false).await;
}

#[tokio::test]
async fn response_head_over_64_kib_is_502_and_the_proxy_keeps_serving() {
    answers_502_then_keeps_serving(Step::close(huge_head(128 << 10)), false).await;
}

#[tokio::test]
async fn backend_closing_without_answering_is_502_and_the_proxy_keeps_serving() {
    // On a fresh connection: nothing here depends on whether the proxy retries requests whose
    // reused connection turned out to be dead.
    answers_502_then_keeps_serving(Step::close(""), true).await;
}

#[tokio::test]
async fn post_on_a_reused_connection_closed_without_answer_is_502_and_not_replayed() {
    let (b, h) = setup().await;
    b.push(Step::keep(ok("before")));
    b.push(Step::close(""));
    // A replayed POST would be answered with this, and the GET below with nothing.
    b.push(Step::keep(ok("after")));
    assert_eq!(get(&h, "/before").await.text(), "before");
    let r = fetch(&h, "POST", "/order", Bytes::from_static(b"buy one"))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{r:?}");
    let r = get(&h, "/after").await;
    assert_eq!(r.status, StatusCode::OK);
    let posts: Vec<Vec<u8>> = b
        .seen()
        .into_iter()
        .filter(|s| s.head.start.starts_with("POST "))
        .map(|s| s.body)
        .collect();
    assert_eq!(
        posts,
        [b"buy one".to_vec()],
        "a POST the backend read must not be sent again"
    );
    assert_eq!(r.text(), "after");
}

#[tokio::test]
async fn body_shorter_than_its_content_length_is_not_delivered_as_complete() {
    let (b, h) = setup().await;
    b.push(Step::close(
        "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789",
    ));
    b.push(Step::keep(ok("after")));
    let r = raw_exchange(
        h.port,
        &[b"GET /short HTTP/1.1\r\nHost: app.example.com\r\n\r\n"],
    )
    .await
    .unwrap_or_else(|e| panic!("the client must see the truncation: {e}"));
    let delivered_whole = r.head.status() == 200 && r.complete;
    assert!(
        !delivered_whole,
        "a 10-byte body announced as 100 bytes reached the client as complete: {r:?}"
    );
    assert!(r.body.len() < 100, "{r:?}");
    if r.head.status() == 200 {
        assert_eq!(r.body, b"0123456789", "what did arrive is the backend's");
    }
    let r = get(&h, "/after").await;
    assert_eq!(r.status, StatusCode::OK, "the proxy keeps serving");
    assert_eq!(r.text(), "after");
}

#[tokio::test]
async fn custom_reason_phrase_is_forwarded() {
    let (b, h) = setup().await;
    b.push(Step::keep(
        "HTTP/1.1 200 Fine Thanks\r\nContent-Length: 2\r\n\r\nok",
    ));
    let r = raw_exchange(
        h.port,
        &[b"GET /reason HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n"],
    )
    .await
    .unwrap();
    assert_eq!(r.head.start, "HTTP/1.1 200 Fine Thanks");
    assert_eq!(r.body, b"ok");
    assert!(r.complete);
}

#[tokio::test]
async fn connection_closed_by_the_backend_while_idle_is_not_handed_out() {
    let (b, h) = setup().await;
    let rounds = 4;
    for round in 0..rounds {
        let body = format!("round {round}");
        // Answered with keep-alive, then closed 100 ms later: a server-side idle timeout.
        b.push(Step::close_after(ok(&body), Duration::from_millis(100)));
        let r = get(&h, "/idle").await;
        assert_eq!(r.status, StatusCode::OK, "round {round}: {r:?}");
        assert_eq!(r.text(), body);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert_eq!(b.accepted(), rounds);
    assert_eq!(b.connections_used(), (0..rounds).collect::<Vec<_>>());
}

// ---------------------------------------------------------------------------------------------
// Request bodies.

#[tokio::test]
async fn request_body_of_one_mib_with_content_length_arrives_byte_exact() {
    let (b, h) = setup().await;
    b.push(Step::keep(ok("stored")));
    let body = pattern(1 << 20, 11);
    let r = fetch(&h, "POST", "/upload", Bytes::from(body.clone()))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "stored");
    let seen = b.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body.len(), body.len());
    assert!(seen[0].body == body, "the request body changed on the way");
}

#[tokio::test]
async fn chunked_request_body_arrives_decoded_and_complete() {
    let (b, h) = setup().await;
    b.push(Step::keep(ok("stored")));
    let big = pattern(100_000, 5);
    let mut big_chunk = format!("{:x};ext=1\r\n", big.len()).into_bytes();
    big_chunk.extend_from_slice(&big);
    big_chunk.extend_from_slice(b"\r\n");
    let r = raw_exchange(
        h.port,
        &[
            b"POST /chunks HTTP/1.1\r\nHost: app.example.com\r\nTransfer-Encoding: chunked\r\n\
              Connection: close\r\n\r\n",
            b"5\r\nhello\r\n",
            b"1\r\n \r\n",
            &big_chunk,
            b"5\r\nworld\r\n",
            b"0\r\n\r\n",
        ],
    )
    .await
    .unwrap();
    assert_eq!(r.head.status(), 200, "{:?}", r.head);
    assert_eq!(r.body, b"stored");
    let mut expected = b"hello ".to_vec();
    expected.extend_from_slice(&big);
    expected.extend_from_slice(b"world");
    let seen = b.seen();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0].head.chunked() || seen[0].head.content_length() == Some(expected.len()),
        "the forwarded request is framed: {:?}",
        seen[0].head
    );
    assert_eq!(seen[0].body.len(), expected.len());
    assert!(seen[0].body == expected, "the decoded request body differs");
}

// ---------------------------------------------------------------------------------------------
// More framing.

#[tokio::test]
async fn chunked_framing_wins_over_content_length_in_a_response() {
    let (b, h) = setup().await;
    b.push(Step::keep(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n\
         5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    ));
    b.push(Step::keep(
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n\
         7\r\nreverse\r\n0\r\n\r\n",
    ));
    b.push(Step::keep(ok("next")));
    let r = fetch(&h, "GET", "/te-first", Bytes::new()).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "hello world");
    let r = fetch(&h, "GET", "/cl-first", Bytes::new()).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "reverse");
    let r = get(&h, "/next").await;
    assert_eq!(
        r.text(),
        "next",
        "nothing of the chunked bodies was left over"
    );
}

#[tokio::test]
async fn connection_close_response_is_delivered_and_the_connection_not_reused() {
    let (b, h) = setup().await;
    // The backend keeps its end open: the proxy must go by the header, not by an EOF.
    let answer = "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 7\r\n\r\nclosing";
    let r = first_then_second(&b, &h, Step::keep(answer), "/close").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "closing");
    assert_eq!(b.accepted(), 2);
    assert_eq!(b.connections_used(), [0, 1]);
}

#[tokio::test]
async fn http10_response_without_keep_alive_is_delivered_and_the_connection_not_reused() {
    let (b, h) = setup().await;
    // The backend keeps its end open: HTTP/1.0 without keep-alive means close all the same.
    let answer = "HTTP/1.0 200 OK\r\nContent-Length: 9\r\n\r\nold-timer";
    let r = first_then_second(&b, &h, Step::keep(answer), "/old").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "old-timer");
    assert_eq!(b.accepted(), 2);
    assert_eq!(b.connections_used(), [0, 1]);
}

#[tokio::test]
async fn obsolete_line_folding_in_a_response_header_is_accepted() {
    let (b, h) = setup().await;
    b.push(Step::keep(
        "HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 6\r\n\r\nfolded",
    ));
    let r = get(&h, "/fold").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "folded");
    let folded = r
        .headers
        .get("x-folded")
        .expect("the folded header is forwarded")
        .to_str()
        .unwrap();
    assert!(
        folded.starts_with('a') && folded.ends_with('b'),
        "x-folded: {folded:?}"
    );
}

#[tokio::test]
async fn large_chunked_response_arrives_byte_exact() {
    let (b, h) = setup().await;
    let body = pattern(8 << 20, 1);
    let mut response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for chunk in body.chunks(64 << 10) {
        response.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        response.extend_from_slice(chunk);
        response.extend_from_slice(b"\r\n");
    }
    response.extend_from_slice(b"0\r\n\r\n");
    b.push(Step::keep(response));
    b.push(Step::keep(ok("next")));
    let r = get(&h, "/big").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body.len(), body.len());
    assert!(r.body == body, "the 8 MiB body differs");
    assert_eq!(get(&h, "/next").await.text(), "next");
    assert_eq!(b.accepted(), 1, "the upstream connection is reused");
}

// ---------------------------------------------------------------------------------------------
// Fields passed on as received.

#[tokio::test]
async fn fields_passed_on_as_received_still_get_response_filters() {
    let backend = ScriptedBackend::start().await;
    let port = free_port();
    let route = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: test}\nspec:\n  parentRefs: [{name: gw}]\n  rules:\n  - filters:\n    - type: ResponseHeaderModifier\n      responseHeaderModifier:\n        set: [{name: X-Version, value: v2}]\n        add: [{name: X-Added, value: yes}]\n        remove: [Server]\n    backendRefs:\n    - {group: serin.dev, kind: Backend, name: a, weight: 1}\n";
    let h = Harness::start(
        port,
        &[
            (
                "gw.yaml",
                gateway_and_backends(port, &[("a", backend.port)]),
            ),
            ("route.yaml", route.to_owned()),
        ],
    )
    .await;
    backend.push(Step::keep(
        "HTTP/1.1 200 OK\r\nServer: scripted\r\nX-Version: v1\r\nX-Other: kept\r\nContent-Length: 2\r\n\r\nok",
    ));
    let r = get(&h, "/f").await;
    assert_eq!(r.text(), "ok");
    let versions: Vec<_> = r.headers.get_all("x-version").iter().collect();
    assert_eq!(versions, ["v2"]);
    assert_eq!(r.headers["x-added"], "yes");
    assert_eq!(r.headers["x-other"], "kept");
    assert!(!r.headers.contains_key("server"));
}

#[tokio::test]
async fn fields_passed_on_as_received_reach_http1_and_h2c_clients_alike() {
    let (b, h) = setup().await;
    let head = "HTTP/1.1 200 OK\r\nServer: scripted\r\nDate: Wed, 02 Dec 2026 05:18:41 GMT\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\nhello";
    b.push(Step::keep(head));
    b.push(Step::keep(head));
    let r = raw_exchange(
        h.port,
        &[b"GET /raw HTTP/1.1\r\nHost: app.example.com\r\n\r\n"],
    )
    .await
    .unwrap();
    assert_eq!(r.head.get("server"), Some("scripted"));
    assert_eq!(
        r.head.get("date"),
        Some("Wed, 02 Dec 2026 05:18:41 GMT"),
        "the backend's Date is kept, not replaced"
    );
    let fields = |name: &str| {
        r.head
            .headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(fields("set-cookie"), ["a=1", "b=2"]);
    assert_eq!(fields("date").len(), 1);
    assert_eq!(fields("content-length"), ["5"]);
    assert!(fields("connection").is_empty());
    assert_eq!(r.body, b"hello");

    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let response = client
        .request(
            http::Request::get(h.url("/raw-h2"))
                .header("host", "app.example.com")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    let headers = response.headers().clone();
    assert_eq!(headers["server"], "scripted");
    let cookies: Vec<_> = headers.get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["a=1", "b=2"]);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"hello");
}

// ---------------------------------------------------------------------------------------------
// Pool poisoning: bytes a backend sends after a complete response.

/// The backend answers the first request (`method` /first) with `first`, then sends a second,
/// unasked-for response on the same connection — with the first, or `later` — and keeps the
/// connection open. The next request comes from another client connection; it must get its own
/// answer over a new upstream connection, never the smuggled one.
async fn smuggled_response_never_reaches_the_next_request(
    method: &str,
    first: &str,
    later: Option<Duration>,
) {
    let (b, h) = setup().await;
    let smuggled = ok("smuggled");
    b.push(match later {
        None => Step::keep([first.as_bytes(), &smuggled].concat()),
        Some(after) => Step::send_later(first, after, smuggled),
    });
    b.push(Step::keep(ok("second")));
    let r = fetch(&h, method, "/first", Bytes::new()).await.unwrap();
    assert!(r.status.as_u16() < 400, "{r:?}");
    assert_ne!(r.text(), "smuggled");
    if let Some(after) = later {
        // Not a measurement: the unasked-for bytes are on their way before the next request.
        tokio::time::sleep(after * 4).await;
    }
    let r = raw_exchange(
        h.port,
        &[b"GET /second HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n"],
    )
    .await
    .unwrap();
    assert_eq!(r.head.status(), 200);
    assert_eq!(String::from_utf8_lossy(&r.body), "second");
    assert_eq!(
        b.connections_used(),
        [0, 1],
        "a connection with unexpected bytes is not reused"
    );
}

const SMUGGLE_AFTER: Duration = Duration::from_millis(50);

#[tokio::test]
async fn bytes_past_the_content_length_poison_no_later_request() {
    let first = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst";
    smuggled_response_never_reaches_the_next_request("GET", first, None).await;
    smuggled_response_never_reaches_the_next_request("GET", first, Some(SMUGGLE_AFTER)).await;
}

#[tokio::test]
async fn bytes_after_a_chunked_body_poison_no_later_request() {
    let first = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n0\r\n\r\n";
    smuggled_response_never_reaches_the_next_request("GET", first, None).await;
    smuggled_response_never_reaches_the_next_request("GET", first, Some(SMUGGLE_AFTER)).await;
}

#[tokio::test]
async fn bytes_after_no_content_or_not_modified_poison_no_later_request() {
    for first in [
        "HTTP/1.1 204 No Content\r\n\r\n",
        "HTTP/1.1 304 Not Modified\r\nContent-Length: 8\r\n\r\n",
    ] {
        smuggled_response_never_reaches_the_next_request("GET", first, None).await;
        smuggled_response_never_reaches_the_next_request("GET", first, Some(SMUGGLE_AFTER)).await;
    }
}

#[tokio::test]
async fn bytes_after_a_head_answer_poison_no_later_request() {
    let first = "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n";
    smuggled_response_never_reaches_the_next_request("HEAD", first, None).await;
    smuggled_response_never_reaches_the_next_request("HEAD", first, Some(SMUGGLE_AFTER)).await;
}

#[tokio::test]
async fn a_smuggled_response_never_answers_a_pipelined_request() {
    let (b, h) = setup().await;
    b.push(Step::keep([&ok("first")[..], &ok("smuggled")].concat()));
    b.push(Step::keep(ok("second")));
    let mut wire = Wire::new(TcpStream::connect(("127.0.0.1", h.port)).await.unwrap());
    wire.stream
        .write_all(
            b"GET /first HTTP/1.1\r\nHost: app.example.com\r\n\r\n\
              GET /second HTTP/1.1\r\nHost: app.example.com\r\n\r\n",
        )
        .await
        .unwrap();
    for expected in ["first", "second"] {
        let (head, body, complete) = tokio::time::timeout(PATIENCE, wire.read_response(false))
            .await
            .expect("no response in time")
            .expect("the connection ended before a response");
        assert_eq!(head.status(), 200);
        assert!(complete);
        assert_eq!(String::from_utf8_lossy(&body), expected);
    }
    assert_eq!(b.connections_used(), [0, 1]);
}

// ---------------------------------------------------------------------------------------------
// What the backend receives of a client's framing and trailers.

#[tokio::test]
async fn equal_content_lengths_reach_the_backend_as_one_normalised_value() {
    let (b, h) = setup().await;
    let lengths = [
        "Content-Length: 5\r\nContent-Length: 5",
        "Content-Length: 5, 5",
        "Content-Length: 005",
        "Content-Length: 000000000000000000000000005",
    ];
    for length in lengths {
        b.push(Step::keep(ok("stored")));
        let request = format!(
            "POST /cl HTTP/1.1\r\nHost: app.example.com\r\n{length}\r\nConnection: close\r\n\r\nhello"
        );
        let r = raw_exchange(h.port, &[request.as_bytes()]).await.unwrap();
        assert_eq!(r.head.status(), 200, "{length:?}");
    }
    let seen = b.seen();
    assert_eq!(seen.len(), lengths.len());
    for (seen, length) in seen.iter().zip(lengths) {
        let forwarded: Vec<&str> = seen
            .head
            .headers
            .iter()
            .filter(|(n, _)| n == "content-length")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(forwarded, ["5"], "{length:?}");
        assert_eq!(seen.body, b"hello", "{length:?}");
    }
}

#[tokio::test]
async fn request_trailers_are_unfolded_and_forbidden_ones_dropped() {
    let (b, h) = setup().await;
    b.push(Step::keep(ok("stored")));
    let r = raw_exchange(
        h.port,
        &[b"POST /t HTTP/1.1\r\nHost: app.example.com\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
            5\r\nhello\r\n0\r\nX-Folded: one\r\n two\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\
            Host: admin.example\r\nTrailer: x-a\r\nAuthorization: Basic YTpi\r\nX-Checksum: 42\r\n\r\n"],
    )
    .await
    .unwrap();
    assert_eq!(r.head.status(), 200, "{:?}", r.head);
    let seen = b.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, b"hello");
    let trailers: Vec<(&str, String)> = seen[0]
        .trailers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str(),
                v.split_whitespace().collect::<Vec<_>>().join(" "),
            )
        })
        .collect();
    assert_eq!(
        trailers,
        [
            ("x-folded", "one two".to_owned()),
            ("x-checksum", "42".to_owned())
        ]
    );
}

#[tokio::test]
async fn response_trailers_are_unfolded_and_forbidden_ones_dropped() {
    let (b, h) = setup().await;
    b.push(Step::keep(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\
         X-Folded: one\r\n\ttwo\r\nContent-Length: 100\r\nSet-Cookie: a=b\r\nContent-Type: text/html\r\n\
         X-Checksum: 42\r\n\r\n",
    ));
    let r = raw_exchange(
        h.port,
        &[b"GET /t HTTP/1.1\r\nHost: app.example.com\r\nTE: trailers\r\nConnection: close\r\n\r\n"],
    )
    .await
    .unwrap();
    assert_eq!(r.head.status(), 200, "{:?}", r.head);
    assert_eq!(r.body, b"hello");
    assert!(r.complete);
    let trailers: Vec<(&str, String)> = r
        .trailers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str(),
                v.split_whitespace().collect::<Vec<_>>().join(" "),
            )
        })
        .collect();
    assert_eq!(
        trailers,
        [
            ("x-folded", "one two".to_owned()),
            ("x-checksum", "42".to_owned())
        ]
    );
}
