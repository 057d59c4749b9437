//! The request path: route, rewrite headers, forward to the picked backend, stream the answer
//! back, record metrics.
//!
//! ```text
//! request ─> load table ─> decide (match ─> pick) ─> endpoint (round robin)
//!         ─> strip hop-by-hop, filters, X-Forwarded-* ─> upstream (pooled, timeouts)
//!         ─> strip hop-by-hop, response filters ─> record (code, duration) ─> client
//! ```
//!
//! Every failure becomes a status code in [`ProxyError::status`]; a failure after a backend was
//! picked is counted as that backend's response.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Scheme, Uri};
use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;

use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::metrics::Telemetry;
use crate::mirror::{Mirror, MirrorOptions, RequestBody};
use crate::table::{Decision, RouteTable};

/// Settings of the forwarding path.
#[derive(Debug, Clone)]
pub struct ForwardOptions {
    /// Time allowed to establish a connection to an endpoint.
    pub connect_timeout: Duration,
    /// Time allowed until the backend's response headers when the rule sets no timeout.
    pub default_timeout: Option<Duration>,
    /// How long an idle pooled upstream connection is kept.
    pub pool_idle_timeout: Duration,
    /// Idle pooled connections kept per endpoint.
    pub pool_max_idle_per_host: usize,
    pub mirror: MirrorOptions,
}

impl Default for ForwardOptions {
    fn default() -> Self {
        ForwardOptions {
            connect_timeout: Duration::from_secs(2),
            default_timeout: Some(Duration::from_secs(60)),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 256,
            mirror: MirrorOptions::default(),
        }
    }
}

/// The client end of a connection, with its address ready as an `X-Forwarded-For` value.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    ip: HeaderValue,
}

impl Peer {
    pub fn new(addr: SocketAddr) -> Peer {
        let ip = HeaderValue::try_from(addr.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Peer { addr, ip }
    }
}

/// The proxy: the active table, the upstream client and the metrics.
pub struct Proxy {
    table: ArcSwap<RouteTable>,
    client: Client<HttpConnector, RequestBody>,
    mirror: Mirror,
    telemetry: Arc<Telemetry>,
    options: ForwardOptions,
}

const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

impl Proxy {
    /// Builds the proxy with an empty table. Must be called inside a Tokio runtime (it starts
    /// the mirror worker).
    pub fn new(telemetry: Arc<Telemetry>, options: ForwardOptions) -> Proxy {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(options.connect_timeout));
        connector.set_keepalive(Some(Duration::from_secs(60)));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(options.pool_idle_timeout)
            .pool_max_idle_per_host(options.pool_max_idle_per_host)
            .build(connector);
        Proxy {
            table: ArcSwap::from_pointee(RouteTable::default()),
            mirror: Mirror::start(&options.mirror, telemetry.metrics.clone()),
            client,
            telemetry,
            options,
        }
    }

    /// The table requests are routed by.
    pub fn table(&self) -> Arc<RouteTable> {
        self.table.load_full()
    }

    /// Replaces the table; requests already routed finish with the table they started with.
    pub fn swap_table(&self, table: Arc<RouteTable>) {
        self.table.store(table);
    }

    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    /// Serves one request that arrived on listener `port` from `client`.
    pub async fn serve(
        &self,
        port: u16,
        client: &Peer,
        req: Request<Incoming>,
    ) -> Response<ProxyBody> {
        let start = Instant::now();
        let table = self.table.load_full();
        let (parts, body) = req.into_parts();
        let decision = match table.decide(port, &parts, fastrand::u64(..)) {
            Ok(d) => d,
            Err(e) => {
                self.telemetry.metrics.unrouted();
                tracing::debug!(port, uri = %parts.uri, "no route");
                return error_response(&e);
            }
        };
        let response = self.forward(&decision, parts, body, client, start).await;
        let status = match &response {
            Ok(r) => r.status(),
            Err(e) => {
                tracing::debug!(route = %decision.rule.route, error = %e, "request failed");
                e.status()
            }
        };
        let metrics = match decision.backend() {
            Some(backend) => Some(&backend.metrics),
            None => decision.rule.unbacked.as_ref(),
        };
        if let Some(metrics) = metrics {
            metrics.record(status.as_u16(), start.elapsed());
        }
        response.unwrap_or_else(|e| error_response(&e))
    }

    async fn forward(
        &self,
        decision: &Decision<'_>,
        mut parts: http::request::Parts,
        body: Incoming,
        client: &Peer,
        start: Instant,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let rule = decision.rule;
        let backend = decision.backend().ok_or(ProxyError::NoBackend)?;
        let target = backend.target.as_ref().ok_or(ProxyError::NoBackend)?;
        let endpoint = target.endpoint().ok_or_else(|| ProxyError::NoEndpoints {
            backend: target.name.to_string(),
        })?;

        let original_host = match parts.headers.get(header::HOST) {
            Some(h) => Some(h.clone()),
            None => parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
        };
        strip_hop_by_hop(&mut parts.headers);
        rule.request_headers.apply(&mut parts.headers);
        backend.request_headers.apply(&mut parts.headers);
        if let Some(host) = original_host {
            parts.headers.insert(X_FORWARDED_HOST, host.clone());
            // HTTP/2 clients send :authority instead of Host; HTTP/1.1 backends need Host.
            parts.headers.entry(header::HOST).or_insert(host);
        }
        // One comma-joined field: many applications read only the first X-Forwarded-For line.
        // One comma-joined field: many applications read only the first X-Forwarded-For line.
        let forwarded_for = match parts.headers.get(&X_FORWARDED_FOR).map(|v| v.to_str()) {
            Some(Ok(previous)) => {
                HeaderValue::try_from(format!("{previous}, {}", client.addr.ip()))
                    .map_err(|_| ProxyError::BadRequest("x-forwarded-for"))?
            }
            _ => client.ip.clone(),
        };
        parts.headers.insert(X_FORWARDED_FOR, forwarded_for);
        parts
            .headers
            .insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));

        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = Some(endpoint.clone());
        uri.path_and_query = Some(path);
        parts.uri = Uri::from_parts(uri).map_err(|_| ProxyError::BadRequest("uri"))?;
        parts.version = Version::HTTP_11;

        let mut mirrors = decision.mirrors().peekable();
        let body = if mirrors.peek().is_some() {
            self.mirror.copy(mirrors, &parts, body)
        } else {
            RequestBody::Plain { body }
        };
        let request = Request::from_parts(parts, body);
        let limit = rule.timeout.or(self.options.default_timeout);
        let deadline = limit.map(|l| start + l);
        let pending = self.client.request(request);
        let result = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, pending)
                .await
                .map_err(|_| ProxyError::Timeout)?,
            None => pending.await,
        };
        let response = result.map_err(|e| {
            if e.is_connect() {
                target.connect_errors.inc();
                ProxyError::Connect(e)
            } else {
                ProxyError::Upstream(e)
            }
        })?;
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        if let Some(cookie) = decision.set_cookie()
            && let Ok(value) = HeaderValue::try_from(cookie)
        {
            parts.headers.append(header::SET_COOKIE, value);
        }
        rule.response_headers.apply(&mut parts.headers);
        backend.response_headers.apply(&mut parts.headers);
        // Only a rule's own timeout bounds the whole response; the default bounds the headers.
        let body_deadline = rule.timeout.map(|t| start + t);
        Ok(Response::from_parts(
            parts,
            ProxyBody::upstream(body, body_deadline),
        ))
    }
}

/// Removes the hop-by-hop headers of RFC 9110 §7.6.1, including those named by `Connection`.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the few names present is cheaper than a lookup
    // per hop-by-hop name. (Headers named by `Connection` need `Connection` itself.)
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    if let Some(connection) = headers.get(header::CONNECTION) {
        let named: Vec<HeaderName> = connection
            .to_str()
            .unwrap_or_default()
            .split(',')
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    // Transfer-Encoding is hop-by-hop too, but hyper owns message framing on both sides.
}

fn error_response(e: &ProxyError) -> Response<ProxyBody> {
    let text = match e {
        ProxyError::NoRoute => "no route\n",
        ProxyError::NoBackend => "no backend\n",
        ProxyError::NoEndpoints { .. } => "no endpoints\n",
        ProxyError::Connect(_) => "upstream connect error\n",
        ProxyError::Timeout => "upstream timeout\n",
        ProxyError::Upstream(_) => "upstream error\n",
        ProxyError::BadRequest(_) => "bad request\n",
    };
    let mut response = Response::new(ProxyBody::message(text));
    *response.status_mut() = e.status();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
