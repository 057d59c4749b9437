//! The request path: route, rewrite headers, forward to the picked backend, stream the answer
//! back, record metrics.
//!
//! ```text
//! request ─> load table ─> decide (match ─> pick) ─> endpoint (round robin)
//!         ─> strip hop-by-hop, filters, X-Forwarded-*, mirror copies (queued, never awaited)
//!         ─> this serving thread's upstream pool (connect or reuse; timeouts)
//!         ─> strip hop-by-hop, response filters ─> record (code, duration) ─> client
//!         ─> body streamed through; at its end the upstream connection returns to the pool
//! ```
//!
//! It all runs on the serving thread that owns the client's connection ([`Workers`]).
//!
//! Every failure becomes a status code in [`ProxyError::status`]; a failure after a backend was
//! picked is counted as that backend's response, unless the client caused it
//! ([`ProxyError::client_fault`]: counted with `backend=""`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Request, Response, Version};
use tokio::time::Instant;

use crate::body::{ClientBody, ProxyBody};
use crate::deadline;
use crate::error::ProxyError;
use crate::metrics::Telemetry;
use crate::mirror::{Mirror, MirrorOptions, RequestBody};
use crate::path;
use crate::table::{Decision, RouteTable};
use crate::upstream::{PoolOptions, SendError, Upstream};
use crate::workers::Workers;

/// Settings of the forwarding path.
#[derive(Debug, Clone)]
pub struct ForwardOptions {
    /// Time allowed to establish a connection to an endpoint.
    pub connect_timeout: Duration,
    /// Time allowed until the backend's response headers when the rule sets no timeout.
    pub default_timeout: Option<Duration>,
    /// How long an idle pooled upstream connection is kept.
    pub pool_idle_timeout: Duration,
    /// Idle pooled connections kept per endpoint (per serving thread).
    pub pool_max_idle_per_host: usize,
    /// Serving threads; 0 means one per available core.
    pub workers: usize,
    /// Time allowed to receive a request head on an HTTP/1.1 client connection, idle time
    /// between requests included.
    pub header_read_timeout: Duration,
    pub mirror: MirrorOptions,
}

impl Default for ForwardOptions {
    fn default() -> Self {
        ForwardOptions {
            connect_timeout: Duration::from_secs(2),
            default_timeout: Some(Duration::from_secs(60)),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 256,
            workers: 0,
            header_read_timeout: Duration::from_secs(30),
            mirror: MirrorOptions::default(),
        }
    }
}

impl ForwardOptions {
    /// Settings of each serving thread's upstream pool.
    pub fn pool(&self) -> PoolOptions {
        PoolOptions {
            connect_timeout: self.connect_timeout,
            idle_timeout: self.pool_idle_timeout,
            max_idle_per_endpoint: self.pool_max_idle_per_host,
            ..PoolOptions::default()
        }
    }

    /// Starts the serving threads these options ask for.
    pub fn start_workers(&self) -> std::io::Result<Workers> {
        let count = match self.workers {
            0 => Workers::default_count(),
            n => n,
        };
        Workers::start(count, &self.pool())
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

/// The proxy: the active table, the mirror queue and the metrics. Upstream connections belong
/// to the serving threads ([`Workers`]).
pub struct Proxy {
    table: ArcSwap<RouteTable>,
    mirror: Mirror,
    telemetry: Arc<Telemetry>,
    options: ForwardOptions,
}

static HOP_BY_HOP: [HeaderName; 8] = [
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
        Proxy {
            table: ArcSwap::from_pointee(RouteTable::default()),
            mirror: Mirror::start(&options.mirror, telemetry.metrics.clone()),
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

    pub fn options(&self) -> &ForwardOptions {
        &self.options
    }

    /// Serves one request that arrived on listener `port` from `client`, forwarding it over
    /// `upstream` (the serving thread's pool).
    pub async fn serve(
        &self,
        port: u16,
        client: &Peer,
        upstream: &Upstream,
        req: Request<ClientBody>,
    ) -> Response<ProxyBody> {
        let start = Instant::now();
        let table = self.table.load_full();
        let (mut parts, body) = req.into_parts();
        // Routed by, and forwarded with, the normalised path ([`crate::path`]).
        match path::normalize(&parts.uri) {
            Ok(None) => {}
            Ok(Some(uri)) => parts.uri = uri,
            Err(e) => {
                tracing::debug!(port, uri = %parts.uri, "path above the root");
                return error_response(&e.into());
            }
        }
        let decision = match table.decide(port, &parts, fastrand::u64(..)) {
            Ok(d) => d,
            Err(e) => {
                self.telemetry.metrics.unrouted();
                tracing::debug!(port, uri = %parts.uri, "no route");
                return error_response(&e);
            }
        };
        let response = self
            .forward(&decision, parts, body, client, upstream, start)
            .await;
        let status = match &response {
            Ok(r) => r.status(),
            Err(e) => {
                tracing::debug!(route = %decision.rule.route, error = %e, "request failed");
                e.status()
            }
        };
        match decision.backend() {
            Some(backend) if !response.as_ref().is_err_and(ProxyError::client_fault) => {
                backend.metrics.record(status.as_u16(), start.elapsed());
            }
            _ => decision
                .rule
                .unattributed
                .record(status.as_u16(), start.elapsed()),
        }
        response.unwrap_or_else(|e| error_response(&e))
    }

    async fn forward(
        &self,
        decision: &Decision<'_>,
        mut parts: http::request::Parts,
        body: ClientBody,
        client: &Peer,
        upstream: &Upstream,
        start: Instant,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let rule = decision.rule;
        // `let … else` rather than `ok_or`, which builds (and drops) the error every time.
        let Some(backend) = decision.backend() else {
            return Err(ProxyError::NoBackend);
        };
        let Some(target) = backend.target.as_ref() else {
            return Err(ProxyError::NoBackend);
        };
        let endpoint = target.endpoint().ok_or_else(|| ProxyError::NoEndpoints {
            backend: target.name.to_string(),
        })?;

        // RFC 9112 §3.2.2, RFC 9113 §8.3.1: a target with an authority (absolute form,
        // HTTP/2's `:authority`) was routed by that authority, so it is the Host the backend
        // gets, whatever Host the client sent beside it. Origin-form requests keep their Host.
        if let Some(authority) = parts.uri.authority() {
            let host = authority
                .as_str()
                .rsplit_once('@')
                .map_or(authority.as_str(), |(_, host)| host);
            if let Ok(host) = HeaderValue::from_str(host) {
                parts.headers.insert(header::HOST, host);
            }
        }
        let original_host = parts.headers.get(header::HOST).cloned();
        strip_hop_by_hop(&mut parts.headers);
        rule.request_headers.apply(&mut parts.headers);
        backend.request_headers.apply(&mut parts.headers);
        match &original_host {
            // HTTP/2 clients send :authority instead of Host; HTTP/1.1 backends need Host.
            Some(host) => {
                parts
                    .headers
                    .entry(header::HOST)
                    .or_insert_with(|| host.clone());
            }
            // HTTP/1.0 without Host: HTTP/1.1 requires one, name the endpoint.
            None => {
                if let Ok(host) = HeaderValue::from_str(endpoint.as_str()) {
                    parts.headers.insert(header::HOST, host);
                }
            }
        }
        // X-Forwarded-* go out after the request's own fields, so that its map need not grow;
        // those the client (or a filter) set are replaced. X-Forwarded-For is one comma-joined
        // field: many applications read only the first line.
        let present = forwarded_present(&parts.headers);
        let previous = match present & 1 {
            0 => None,
            _ => parts.headers.get(&X_FORWARDED_FOR).map(|v| v.to_str()),
        };
        let forwarded_for = match previous {
            Some(Ok(previous)) => {
                HeaderValue::try_from(format!("{previous}, {}", client.addr.ip()))
                    .map_err(|_| ProxyError::BadRequest("x-forwarded-for"))?
            }
            _ => client.ip.clone(),
        };
        for (i, name) in [X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO]
            .iter()
            .enumerate()
        {
            if present & (1 << i) != 0 {
                parts.headers.remove(name);
            }
        }
        // Without a Host to report, no X-Forwarded-Host.
        let (host, count) = match original_host {
            Some(host) => (host, 3),
            None => (HeaderValue::from_static(""), 2),
        };
        let forwarded = [
            (X_FORWARDED_FOR, forwarded_for),
            (X_FORWARDED_PROTO, HeaderValue::from_static("http")),
            (X_FORWARDED_HOST, host),
        ];
        let forwarded = &forwarded[..count];

        // Origin form: the connection already names the endpoint.
        parts.uri = Uri::from(
            parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        );
        parts.version = Version::HTTP_11;

        let mut mirrors = decision.mirrors().peekable();
        let body = if mirrors.peek().is_some() {
            self.mirror.copy(mirrors, &parts, forwarded, body)
        } else {
            RequestBody::Plain { body }
        };
        let request = Request::from_parts(parts, body);
        let limit = rule.timeout.or(self.options.default_timeout);
        let deadline = limit.map(|l| start + l);
        let pending = upstream.send(endpoint, request, forwarded);
        let result = match deadline {
            Some(deadline) => match deadline::within(deadline, pending).await {
                Some(result) => result,
                None => return Err(ProxyError::Timeout),
            },
            None => pending.await,
        };
        let response = result.map_err(|e| match e {
            SendError::Connect(e) => {
                target.connect_errors.inc();
                ProxyError::Connect(e)
            }
            e if e.client_fault() => ProxyError::RequestBody(e),
            e @ SendError::Exchange { .. } => ProxyError::Upstream(e),
        })?;
        // The upstream client passes on no hop-by-hop field. It may keep the fields as
        // received, outside the header map: the map then holds only what is added here, and
        // filters, which may replace or remove fields, get all of them first.
        let (mut parts, mut body) = response.into_parts();
        if let Some(cookie) = decision.set_cookie()
            && let Ok(value) = HeaderValue::try_from(cookie)
        {
            parts.headers.append(header::SET_COOKIE, value);
        }
        if !rule.response_headers.is_empty() || !backend.response_headers.is_empty() {
            body.merge_fields_into(&mut parts.headers);
            rule.response_headers.apply(&mut parts.headers);
            backend.response_headers.apply(&mut parts.headers);
        }
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
    // One pass over the few names present finds which hop-by-hop headers there are (most
    // responses carry `Connection: keep-alive`); only those are removed.
    let mut present = 0u8;
    for name in headers.keys() {
        if let Some(i) = hop_by_hop_index(name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    // `Connection` is first in HOP_BY_HOP; the headers it names go too.
    if present & 1 != 0 {
        let mut named = Vec::new();
        for value in headers.get_all(header::CONNECTION) {
            for token in value.to_str().unwrap_or_default().split(',') {
                let token = token.trim();
                // The usual values: `close` names no header, `keep-alive` is in HOP_BY_HOP.
                if token.is_empty()
                    || token.eq_ignore_ascii_case("close")
                    || token.eq_ignore_ascii_case("keep-alive")
                {
                    continue;
                }
                if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                    named.push(name);
                }
            }
        }
        for name in named {
            headers.remove(name);
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    // Transfer-Encoding is hop-by-hop too, but it describes the body as the upstream client
    // hands it over (decoded) and hyper's server frames it again from that header.
}

/// Which of X-Forwarded-For, -Host and -Proto (bits 0, 1, 2) `headers` has: one pass over the
/// names instead of three lookups.
fn forwarded_present(headers: &HeaderMap) -> u8 {
    let mut present = 0;
    for name in headers.keys() {
        present |= match name.as_str() {
            "x-forwarded-for" => 1,
            "x-forwarded-host" => 2,
            "x-forwarded-proto" => 4,
            _ => 0,
        };
    }
    present
}

/// The position of `name` in [`HOP_BY_HOP`]: one string match (a length switch, then one
/// comparison) instead of eight `HeaderName` comparisons.
pub(crate) fn hop_by_hop_index(name: &HeaderName) -> Option<usize> {
    match name.as_str() {
        "connection" => Some(0),
        "keep-alive" => Some(1),
        "proxy-connection" => Some(2),
        "proxy-authenticate" => Some(3),
        "proxy-authorization" => Some(4),
        "te" => Some(5),
        "trailer" => Some(6),
        "upgrade" => Some(7),
        _ => None,
    }
}

fn error_response(e: &ProxyError) -> Response<ProxyBody> {
    let text = match e {
        ProxyError::NoRoute => "no route\n",
        ProxyError::NoBackend => "no backend\n",
        ProxyError::NoEndpoints { .. } => "no endpoints\n",
        ProxyError::Connect(_) => "upstream connect error\n",
        ProxyError::Timeout => "upstream timeout\n",
        ProxyError::Upstream(_) => "upstream error\n",
        ProxyError::RequestBody(_) => "invalid request body\n",
        ProxyError::BadRequest(_) => "bad request\n",
        ProxyError::Path(_) => "path climbs above the root\n",
    };
    let mut response = Response::new(ProxyBody::message(text));
    *response.status_mut() = e.status();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_index_agrees_with_the_list() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(name), Some(i), "{name}");
        }
        for name in [
            header::HOST,
            header::CONTENT_LENGTH,
            header::TRANSFER_ENCODING,
        ] {
            assert_eq!(hop_by_hop_index(&name), None, "{name}");
        }
    }

    #[test]
    fn strips_hop_by_hop_headers_and_those_connection_names() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Session"),
        );
        headers.append(header::CONNECTION, HeaderValue::from_static("close"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-session", HeaderValue::from_static("1"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::HOST, HeaderValue::from_static("example.com"));
        headers.insert("x-kept", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["host", "x-kept"]);
    }

    #[test]
    fn leaves_messages_without_hop_by_hop_headers_alone() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("example.com"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("2"));
        let before = headers.clone();
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers, before);
    }
}
