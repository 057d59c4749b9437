//! Test support: real backends and a real proxy on loopback, and an HTTP client.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serin_proxy::runtime::{self, Options, Running};

pub mod wire;

/// A backend that answers every request with its name and what it saw.
///
/// Paths: `/slow/MS` waits before answering, `/status/CODE` answers CODE, `/stream` sends two
/// chunks 600 ms apart, anything else answers 200. The response body is JSON:
/// `{"backend": NAME, "path": ..., "headers": {...}, "body_len": N}`.
pub struct TestBackend {
    pub addr: SocketAddr,
    pub name: String,
    pub hits: Arc<AtomicU64>,
    /// Connections accepted.
    pub connections: Arc<AtomicU64>,
    /// Every request seen: (host header, body length).
    pub seen: Arc<Mutex<Vec<(String, usize)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type TestBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

impl TestBackend {
    pub async fn start(name: &str) -> TestBackend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (n, h, s, c) = (
            name.to_owned(),
            hits.clone(),
            seen.clone(),
            connections.clone(),
        );
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                c.fetch_add(1, Ordering::Relaxed);
                let (n, h, s) = (n.clone(), h.clone(), s.clone());
                tokio::spawn(async move {
                    let service =
                        service_fn(move |req| handle(n.clone(), h.clone(), s.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        TestBackend {
            addr,
            name: name.to_owned(),
            hits,
            connections,
            seen,
            task,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}

async fn handle(
    name: String,
    hits: Arc<AtomicU64>,
    seen: Arc<Mutex<Vec<(String, usize)>>>,
    req: Request<Incoming>,
) -> Result<Response<TestBody>, Infallible> {
    let path = req.uri().path().to_owned();
    // A field received more than once shows all its values, joined by " | ".
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in req.headers() {
        let v = v.to_str().unwrap_or("");
        headers
            .entry(k.to_string())
            .and_modify(|all| *all = format!("{all} | {v}"))
            .or_insert_with(|| v.to_owned());
    }
    let body_len = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().len())
        .unwrap_or(0);
    seen.lock()
        .unwrap()
        .push((headers.get("host").cloned().unwrap_or_default(), body_len));
    hits.fetch_add(1, Ordering::Relaxed);
    let mut status = StatusCode::OK;
    if let Some(ms) = path.strip_prefix("/slow/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
    }
    if let Some(code) = path.strip_prefix("/status/") {
        status = StatusCode::from_u16(code.parse().unwrap_or(500)).unwrap();
    }
    if path == "/stream" {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(2);
        tokio::spawn(async move {
            let _ = tx
                .send(Ok(Frame::data(Bytes::from_static(b"first;"))))
                .await;
            tokio::time::sleep(Duration::from_millis(600)).await;
            let _ = tx
                .send(Ok(Frame::data(Bytes::from_static(b"second"))))
                .await;
        });
        let stream = tokio_stream_from(rx);
        return Ok(Response::new(BodyExt::boxed(StreamBody::new(stream))));
    }
    let json = serde_json::json!({"backend": name, "path": path, "headers": headers, "body_len": body_len});
    let mut response = Response::new(BodyExt::boxed(Full::new(Bytes::from(json.to_string()))));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("x-backend", name.parse().unwrap());
    // Hop-by-hop headers the proxy must not pass on.
    response
        .headers_mut()
        .insert("connection", "x-private".parse().unwrap());
    response
        .headers_mut()
        .insert("x-private", "secret".parse().unwrap());
    Ok(response)
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// A server that accepts connections and never answers: a hung backend.
pub async fn hanging_server() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    (port, task)
}

/// A port that refuses connections for as long as the guard lives: the socket is bound
/// (so no other test can take the port) but never listens, so a connect is answered
/// with a reset. A port that was merely free a moment ago may be taken by a parallel
/// test's server before the proxy dials it.
pub fn refusing_port() -> (u16, tokio::net::TcpSocket) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    (port, socket)
}

/// A port nothing listens on, that no other test of this process is handed
/// ([`serin_test_ports::free_port`]).
pub fn free_port() -> u16 {
    serin_test_ports::free_port()
}

/// A Gateway on `port` plus one Backend per (name, port).
pub fn gateway_and_backends(port: u16, backends: &[(&str, u16)]) -> String {
    let mut out = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: test}}\nspec:\n  gatewayClassName: serin\n  listeners: [{{name: http, port: {port}, protocol: HTTP}}]\n"
    );
    for (name, p) in backends {
        out.push_str(&format!(
            "---\napiVersion: serin.dev/v1alpha1\nkind: Backend\nmetadata: {{name: {name}, namespace: test}}\nspec: {{endpoints: [{{host: 127.0.0.1, port: {p}}}]}}\n"
        ));
    }
    out
}

/// A proxy serving a config directory, with an HTTP client pointed at its listener.
pub struct Harness {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub proxy: Option<Running>,
    pub client: Client<HttpConnector, Full<Bytes>>,
}

impl Harness {
    /// Writes `files` (name, YAML) into a fresh directory and starts a proxy on it.
    pub async fn start(port: u16, files: &[(&str, String)]) -> Harness {
        Harness::start_with(port, files, |_| {}).await
    }

    /// Like [`Harness::start`], with options adjusted by `tune`.
    pub async fn start_with(
        port: u16,
        files: &[(&str, String)],
        tune: impl FnOnce(&mut Options),
    ) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let mut options = Options::loopback(dir.path().to_owned());
        options.watch_interval = Duration::from_millis(100);
        options.forward.connect_timeout = Duration::from_millis(500);
        options.drain_timeout = Duration::from_secs(5);
        tune(&mut options);
        let proxy = runtime::start(options).await.unwrap();
        Harness {
            dir,
            port,
            proxy: Some(proxy),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Replaces a config file atomically.
    pub fn write(&self, name: &str, text: &str) {
        write_atomic(&self.path(name), text);
    }

    pub fn admin(&self) -> SocketAddr {
        self.proxy.as_ref().unwrap().admin_addr
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://127.0.0.1:{}{path_and_query}", self.port)
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.send("GET", path, headers, Bytes::new()).await
    }

    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Reply {
        let mut b = Request::builder()
            .method(method)
            .uri(self.url(path))
            .header("host", "app.example.com");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let response = self
            .client
            .request(b.body(Full::new(body)).unwrap())
            .await
            .unwrap();
        Reply::read(response).await
    }

    pub async fn metrics(&self) -> String {
        admin_get(self.admin(), "/metrics").await.1
    }
}

pub fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A response read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Reply {
    pub async fn read(response: Response<Incoming>) -> Reply {
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    /// The answering backend's name, from its JSON body.
    pub fn backend(&self) -> String {
        self.json()["backend"].as_str().unwrap_or("").to_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

pub async fn admin_get(admin: SocketAddr, path: &str) -> (StatusCode, String) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let response = client
        .get(format!("http://{admin}{path}").parse().unwrap())
        .await
        .unwrap();
    let reply = Reply::read(response).await;
    (reply.status, reply.body)
}

/// The value of one sample in an OpenMetrics text exposition, or 0 when absent.
pub fn sample(metrics: &str, name_and_labels: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(name_and_labels)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}
