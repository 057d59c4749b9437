use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::{BodyExt, Empty, Full};
use hyper::server::conn::http1 as server;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// A backend on loopback answering `body` to every request; counts the connections it accepts.
async fn backend(body: &'static [u8]) -> (Authority, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = service_fn(|_req| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(body))))
                });
                let _ = server::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr.to_string().parse().unwrap(), accepted)
}

fn get(endpoint: &Authority) -> Request<Empty<Bytes>> {
    Request::builder()
        .uri("/")
        .header(header::HOST, endpoint.as_str())
        .body(Empty::new())
        .unwrap()
}

async fn exchange(pool: &Upstream, endpoint: &Authority) -> Bytes {
    let response = pool.send(endpoint, get(endpoint), &[]).await.unwrap();
    response.into_body().collect().await.unwrap().to_bytes()
}

#[tokio::test]
async fn sequential_requests_reuse_one_connection() {
    let (endpoint, accepted) = backend(b"ok").await;
    let pool = Upstream::new(PoolOptions::default());
    for _ in 0..5 {
        assert_eq!(exchange(&pool, &endpoint).await, "ok");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    assert_eq!(pool.idle_count(&endpoint), 1);
}

#[tokio::test]
async fn a_body_dropped_before_its_end_closes_its_connection() {
    let (endpoint, accepted) = backend(&[b'x'; 1 << 20]).await;
    let pool = Upstream::new(PoolOptions::default());
    let response = pool.send(&endpoint, get(&endpoint), &[]).await.unwrap();
    drop(response);
    assert_eq!(pool.idle_count(&endpoint), 0);
    assert_eq!(exchange(&pool, &endpoint).await.len(), 1 << 20);
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_connection_the_backend_closed_is_not_reused() {
    // Answers one request per connection, then closes it without saying so.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint: Authority = listener.local_addr().unwrap().to_string().parse().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            let mut head = [0u8; 1024];
            let _ = stream.read(&mut head).await;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await;
        }
    });
    let pool = Upstream::new(PoolOptions::default());
    for _ in 0..3 {
        assert_eq!(exchange(&pool, &endpoint).await, "ok");
        // Let the close arrive: the checkout sees it.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
    // Without the pause the close may still be on its way: a GET is sent again.
    for _ in 0..20 {
        assert_eq!(exchange(&pool, &endpoint).await, "ok");
    }
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_error_naming_the_endpoint() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint: Authority = listener.local_addr().unwrap().to_string().parse().unwrap();
    drop(listener);
    let pool = Upstream::new(PoolOptions::default());
    let error = match pool.send(&endpoint, get(&endpoint), &[]).await {
        Err(SendError::Connect(e @ ConnectError::Io { .. })) => e,
        Err(other) => panic!("expected a connect error, got {other}"),
        Ok(_) => panic!("expected a connect error, got a response"),
    };
    assert!(
        error
            .to_string()
            .starts_with(&format!("connecting to {endpoint}: ")),
        "{error}"
    );
}

#[tokio::test]
async fn host_names_are_resolved() {
    let (endpoint, accepted) = backend(b"named").await;
    let named: Authority = format!("localhost:{}", endpoint.port_u16().unwrap())
        .parse()
        .unwrap();
    let pool = Upstream::new(PoolOptions::default());
    // `localhost` may resolve to ::1 first; the IPv4 address must still be tried.
    assert_eq!(exchange(&pool, &named).await, "named");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn idle_connections_expire() {
    let (endpoint, accepted) = backend(b"ok").await;
    let pool = Upstream::new(PoolOptions {
        idle_timeout: Duration::from_millis(200),
        ..PoolOptions::default()
    });
    exchange(&pool, &endpoint).await;
    assert_eq!(pool.idle_count(&endpoint), 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(pool.idle_count(&endpoint), 0, "the sweeper closes it");
    exchange(&pool, &endpoint).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn at_most_max_idle_connections_are_kept_per_endpoint() {
    // Bodies larger than a read: each connection stays lent until its body is read.
    let (endpoint, accepted) = backend(&[b'x'; 1 << 20]).await;
    let pool = Upstream::new(PoolOptions {
        max_idle_per_endpoint: 2,
        ..PoolOptions::default()
    });
    // Four exchanges at once need four connections.
    let mut lent = Vec::new();
    for _ in 0..4 {
        lent.push(pool.send(&endpoint, get(&endpoint), &[]).await.unwrap());
    }
    for response in lent {
        response.into_body().collect().await.unwrap();
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 4);
    assert_eq!(pool.idle_count(&endpoint), 2);
}

/// A backend on loopback that answers the n-th request it reads (over all connections) with
/// `script[n % len]`, verbatim, and keeps the connection open. Returns what it received: each
/// request's head and its body as sent on the wire.
async fn scripted(
    script: &'static [&'static [u8]],
) -> (
    Authority,
    Arc<AtomicUsize>,
    Arc<Mutex<Vec<(String, Vec<u8>)>>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint: Authority = listener.local_addr().unwrap().to_string().parse().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (count, record) = (accepted.clone(), seen.clone());
    tokio::spawn(async move {
        let served = Arc::new(AtomicUsize::new(0));
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            let (record, served) = (record.clone(), served.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(end) = read_until(&mut stream, &mut buf, b"\r\n\r\n").await else {
                        return;
                    };
                    let head = String::from_utf8(buf.drain(..end).collect()).unwrap();
                    let lower = head.to_ascii_lowercase();
                    let body = if lower.contains("transfer-encoding: chunked") {
                        let Some(end) = read_until(&mut stream, &mut buf, b"0\r\n\r\n").await
                        else {
                            return;
                        };
                        buf.drain(..end).collect()
                    } else if let Some(at) = lower.find("content-length: ") {
                        let digits = &lower[at + 16..];
                        let n: usize = digits[..digits.find('\r').unwrap()].parse().unwrap();
                        while buf.len() < n {
                            let mut more = [0u8; 65536];
                            let got = stream.read(&mut more).await.unwrap();
                            assert!(got > 0, "request body cut short");
                            buf.extend_from_slice(&more[..got]);
                        }
                        buf.drain(..n).collect()
                    } else {
                        Vec::new()
                    };
                    record.lock().unwrap().push((head, body));
                    let n = served.fetch_add(1, Ordering::SeqCst);
                    if stream.write_all(script[n % script.len()]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (endpoint, accepted, seen)
}

/// Reads until `buf` contains `marker`; the index just past it, or `None` at end of stream.
async fn read_until(
    stream: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
    marker: &[u8],
) -> Option<usize> {
    loop {
        if let Some(at) = buf.windows(marker.len()).position(|w| w == marker) {
            return Some(at + marker.len());
        }
        let mut more = [0u8; 65536];
        match stream.read(&mut more).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&more[..n]),
        }
    }
}

/// Every field of `response`: those kept as received merged into its map.
fn all_fields(response: &mut Response<UpstreamBody>) -> &http::HeaderMap {
    let mut headers = std::mem::take(response.headers_mut());
    response.body_mut().merge_fields_into(&mut headers);
    *response.headers_mut() = headers;
    response.headers()
}

#[tokio::test]
async fn chunked_responses_are_decoded_with_trailers_and_the_connection_reused() {
    let (endpoint, accepted, _) = scripted(&[b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 11\r\n\r\n"]).await;
    let pool = Upstream::new(PoolOptions::default());
    for _ in 0..3 {
        let mut response = pool.send(&endpoint, get(&endpoint), &[]).await.unwrap();
        assert_eq!(all_fields(&mut response)["transfer-encoding"], "chunked");
        let collected = response.into_body().collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["x-sum"], "11");
        assert_eq!(collected.to_bytes(), "hello world");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn head_responses_and_interim_responses_carry_no_body() {
    let (endpoint, accepted, _) = scripted(&[
        b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
    ])
    .await;
    let pool = Upstream::new(PoolOptions::default());
    let mut head = get(&endpoint);
    *head.method_mut() = Method::HEAD;
    let mut response = pool.send(&endpoint, head, &[]).await.unwrap();
    assert_eq!(all_fields(&mut response)["content-length"], "1000");
    assert!(response.body().is_end_stream());
    assert_eq!(exchange(&pool, &endpoint).await, "");
    assert_eq!(exchange(&pool, &endpoint).await, "ok");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn close_delimited_bodies_are_read_to_the_end_and_not_reused() {
    // One answer per connection, delimited by the close.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint: Authority = listener.local_addr().unwrap().to_string().parse().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                read_until(&mut stream, &mut buf, b"\r\n\r\n").await;
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await;
                let _ = stream.write_all(&[b'z'; 100_000]).await;
            });
        }
    });
    let pool = Upstream::new(PoolOptions::default());
    for _ in 0..2 {
        assert_eq!(exchange(&pool, &endpoint).await, [b'z'; 100_000].as_slice());
        assert_eq!(pool.idle_count(&endpoint), 0);
    }
}

#[tokio::test]
async fn request_bodies_go_out_with_a_length_or_chunked() {
    let (endpoint, _, seen) = scripted(&[b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"]).await;
    let pool = Upstream::new(PoolOptions::default());
    fn post<B>(endpoint: &Authority, body: B) -> Request<B> {
        Request::post("/upload")
            .header(header::HOST, endpoint.as_str())
            .body(body)
            .unwrap()
    }
    let big = Bytes::from(vec![7u8; 300_000]);
    let response = pool
        .send(&endpoint, post(&endpoint, Full::new(big.clone())), &[])
        .await;
    response.unwrap().into_body().collect().await.unwrap();
    // A body of unknown length, in three pieces.
    let pieces =
        futures_util::stream::iter(["abc", "", "defgh"].map(|p| {
            Ok::<_, Infallible>(http_body::Frame::data(Bytes::from_static(p.as_bytes())))
        }));
    let streamed = http_body_util::StreamBody::new(pieces);
    let response = pool.send(&endpoint, post(&endpoint, streamed), &[]).await;
    response.unwrap().into_body().collect().await.unwrap();

    let seen = seen.lock().unwrap();
    assert!(
        seen[0].0.starts_with("POST /upload HTTP/1.1\r\n"),
        "{}",
        seen[0].0
    );
    assert!(
        seen[0].0.contains("content-length: 300000\r\n"),
        "{}",
        seen[0].0
    );
    assert_eq!(seen[0].1, big);
    assert!(
        seen[1].0.contains("transfer-encoding: chunked\r\n"),
        "{}",
        seen[1].0
    );
    assert_eq!(seen[1].1, b"3\r\nabc\r\n5\r\ndefgh\r\n0\r\n\r\n");
}

#[tokio::test]
async fn invalid_responses_are_errors_that_say_what_is_wrong() {
    for (answer, expected) in [
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 1, 2\r\n\r\n".as_slice(),
            "invalid response: content-length",
        ),
        (b"HTPT/1.1 200 OK\r\n\r\n", "invalid response head: "),
        (
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n",
            "protocol upgrades are not forwarded",
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            "invalid chunked response body: invalid chunk size",
        ),
    ] {
        let script: &'static [&'static [u8]] = Box::leak(Box::new([answer]));
        let (endpoint, _, _) = scripted(script).await;
        let pool = Upstream::new(PoolOptions::default());
        let error = match pool.send(&endpoint, get(&endpoint), &[]).await {
            Ok(response) => response
                .into_body()
                .collect()
                .await
                .unwrap_err()
                .to_string(),
            Err(e) => e.to_string(),
        };
        assert!(error.contains(expected), "{error:?} lacks {expected:?}");
    }
}
