//! Real peers on loopback for the provider and webhook tests: backends with a known error
//! ratio and delay, a serin-proxy (in-process, `serin_proxy::runtime::start`) routing to
//! them, and an HTTP server that records webhook calls.

#![allow(dead_code, unreachable_pub)] // each test binary uses a different part

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use serin_controller::{analysis::MetricQuery, validation::MetricCheck};
use serin_proxy::runtime::{self, Options, Running};

/// Namespace, Canary, target and apex Service of every scenario.
pub const NAMESPACE: &str = "test";
pub const NAME: &str = "podinfo";

/// A query for `check` on the `test/podinfo` canary.
pub fn query(check: &MetricCheck) -> MetricQuery<'_> {
    MetricQuery {
        check,
        name: NAME,
        namespace: NAMESPACE,
        target: NAME,
        service: NAME,
        template: None,
        since: None,
    }
}

/// Serves `service` on `listener` (one task per connection) until the returned task is
/// aborted.
fn serve<S, F>(listener: tokio::net::TcpListener, service: S) -> tokio::task::JoinHandle<()>
where
    S: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let service = service.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let response = service(req);
                    async move { Ok::<_, Infallible>(response.await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// A backend answering 200 after `delay`, except every `fail_every`-th request (the 10th,
/// 20th, ... for 10), which gets a 500: an exact error ratio whatever the concurrency.
pub struct Backend {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicU64>,
    pub fail_every: Arc<AtomicU64>,
    pub delay_ms: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    /// `fail_every` 0 never fails.
    pub async fn start(fail_every: u64, delay: Duration) -> Backend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicU64::new(0));
        let fail_every = Arc::new(AtomicU64::new(fail_every));
        let delay_ms = Arc::new(AtomicU64::new(delay.as_millis() as u64));
        let (h, f, d) = (hits.clone(), fail_every.clone(), delay_ms.clone());
        let task = serve(listener, move |_req| {
            let (h, f, d) = (h.clone(), f.clone(), d.clone());
            async move {
                let n = h.fetch_add(1, Ordering::SeqCst) + 1;
                let delay = d.load(Ordering::SeqCst);
                if delay > 0 {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                }
                let every = f.load(Ordering::SeqCst);
                let status = if every > 0 && n % every == 0 {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                };
                let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
                *response.status_mut() = status;
                response
            }
        });
        Backend {
            addr,
            hits,
            fail_every,
            delay_ms,
            task,
        }
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A port nothing listens on, that no other test of this process is handed
/// ([`serin_test_ports::free_port`]).
pub fn free_port() -> u16 {
    serin_test_ports::free_port()
}

/// An address that refuses connections while the returned socket lives: bound, so no
/// parallel test's server can take the port, but never listening.
pub fn dead_address() -> (String, tokio::net::TcpSocket) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    (socket.local_addr().unwrap().to_string(), socket)
}

/// A serin-proxy serving the `test/podinfo` route: `podinfo-primary` and `podinfo-canary`
/// (serin.dev Backends) with the given weights; a backend with weight 0 is left out.
pub struct Proxy {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub running: Option<Running>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Proxy {
    pub async fn start(primary: (&Backend, u32), canary: (&Backend, u32)) -> Proxy {
        Proxy::start_on(free_port(), None, primary, canary).await
    }

    /// Like [`Proxy::start`], on a given listener port and admin address (to stand in for
    /// a restarted replica).
    pub async fn start_on(
        port: u16,
        admin: Option<SocketAddr>,
        primary: (&Backend, u32),
        canary: (&Backend, u32),
    ) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let mut config = format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: {NAMESPACE}}}\nspec:\n  gatewayClassName: serin\n  listeners: [{{name: http, port: {port}, protocol: HTTP}}]\n"
        );
        let mut refs = String::new();
        for (name, (backend, weight)) in [
            (format!("{NAME}-primary"), primary),
            (format!("{NAME}-canary"), canary),
        ] {
            config.push_str(&format!(
                "---\napiVersion: serin.dev/v1alpha1\nkind: Backend\nmetadata: {{name: {name}, namespace: {NAMESPACE}}}\nspec: {{endpoints: [{{host: 127.0.0.1, port: {}}}]}}\n",
                backend.addr.port()
            ));
            if weight > 0 {
                refs.push_str(&format!(
                    "    - {{group: serin.dev, kind: Backend, name: {name}, weight: {weight}}}\n"
                ));
            }
        }
        config.push_str(&format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {NAME}, namespace: {NAMESPACE}}}\nspec:\n  parentRefs: [{{name: gw}}]\n  rules:\n  - matches:\n    - path: {{type: PathPrefix, value: /}}\n    backendRefs:\n{refs}"
        ));
        std::fs::write(dir.path().join("config.yaml"), config).unwrap();
        let mut options = Options::loopback(dir.path().to_owned());
        if let Some(admin) = admin {
            options.admin = admin;
        }
        options.watch_interval = Duration::from_millis(100);
        options.forward.connect_timeout = Duration::from_millis(500);
        options.drain_timeout = Duration::from_secs(5);
        let running = runtime::start(options).await.unwrap();
        Proxy {
            dir,
            port,
            running: Some(running),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// The admin listener, as `HOST:PORT`.
    pub fn admin(&self) -> String {
        self.admin_addr().to_string()
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.running.as_ref().unwrap().admin_addr
    }

    /// Sends `n` GET requests, `concurrency` at a time, and returns how many got each status.
    pub async fn send(&self, n: usize, concurrency: usize) -> HashMap<u16, usize> {
        let mut statuses = HashMap::new();
        let mut sent = 0;
        while sent < n {
            let batch = concurrency.min(n - sent);
            let replies = futures_util::future::join_all((0..batch).map(|_| self.get())).await;
            for status in replies {
                *statuses.entry(status).or_default() += 1;
            }
            sent += batch;
        }
        statuses
    }

    async fn get(&self) -> u16 {
        let request = Request::get(format!("http://127.0.0.1:{}/", self.port))
            .header("host", "podinfo.test")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = self.client.request(request).await.unwrap();
        let status = response.status().as_u16();
        let _ = response.into_body().collect().await;
        status
    }

    /// The proxy's `/metrics` text.
    pub async fn metrics(&self) -> String {
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let response = client
            .get(format!("http://{}/metrics", self.admin()).parse().unwrap())
            .await
            .unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8_lossy(&body).into_owned()
    }

    pub async fn shutdown(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
    }
}

/// One request a [`HookServer`] received.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub content_type: String,
    pub body: serde_json::Value,
}

/// How a [`HookServer`] answers one path.
#[derive(Clone, Debug)]
pub enum Answer {
    /// This status and body.
    Status(u16, String),
    /// Never (holds the request open).
    Hang,
}

/// An HTTP server that records every request and answers per path (200 by default).
pub struct HookServer {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<Received>>>,
    answers: Arc<Mutex<HashMap<String, Answer>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HookServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HookServer {
    pub async fn start() -> HookServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let answers: Arc<Mutex<HashMap<String, Answer>>> = Arc::default();
        let (r, a) = (received.clone(), answers.clone());
        let task = serve(listener, move |req: Request<Incoming>| {
            let (r, a) = (r.clone(), a.clone());
            async move {
                let method = req.method().to_string();
                let path = req
                    .uri()
                    .path_and_query()
                    .map(|p| p.to_string())
                    .unwrap_or_default();
                let content_type = req
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                let bytes = req.into_body().collect().await.unwrap().to_bytes();
                let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
                r.lock().unwrap().push(Received {
                    method,
                    path: path.clone(),
                    content_type,
                    body,
                });
                let answer = a.lock().unwrap().get(&path).cloned();
                let (status, body) = match answer {
                    None => (200, String::new()),
                    Some(Answer::Status(status, body)) => (status, body),
                    Some(Answer::Hang) => {
                        std::future::pending::<()>().await;
                        unreachable!()
                    }
                };
                let mut response = Response::new(Full::new(Bytes::from(body)));
                *response.status_mut() = StatusCode::from_u16(status).unwrap();
                response
            }
        });
        HookServer {
            addr,
            received,
            answers,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers `path` (with its query, if any) with `answer` from now on.
    pub fn answer(&self, path: &str, answer: Answer) {
        self.answers.lock().unwrap().insert(path.to_owned(), answer);
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// What was received on `path`.
    pub fn received_on(&self, path: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }
}
