use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

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

async fn exchange(pool: &Upstream<Empty<Bytes>>, endpoint: &Authority) -> Bytes {
    let (response, connection) = pool.send(endpoint, get(endpoint)).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    connection.release();
    body
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
    let (response, connection) = pool.send(&endpoint, get(&endpoint)).await.unwrap();
    drop(response);
    drop(connection);
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
        // Let the connection task see the close.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_error_naming_the_endpoint() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint: Authority = listener.local_addr().unwrap().to_string().parse().unwrap();
    drop(listener);
    let pool = Upstream::new(PoolOptions::default());
    let error = match pool.send(&endpoint, get(&endpoint)).await {
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
    let (endpoint, accepted) = backend(b"ok").await;
    let pool = Upstream::new(PoolOptions {
        max_idle_per_endpoint: 2,
        ..PoolOptions::default()
    });
    // Four exchanges at once need four connections.
    let mut lent = Vec::new();
    for _ in 0..4 {
        lent.push(pool.send(&endpoint, get(&endpoint)).await.unwrap());
    }
    for (response, connection) in lent {
        response.into_body().collect().await.unwrap();
        connection.release();
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 4);
    assert_eq!(pool.idle_count(&endpoint), 2);
}
