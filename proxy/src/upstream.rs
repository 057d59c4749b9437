//! Upstream HTTP/1.1 connections, pooled per endpoint, and the exchanges on them.
//!
//! Each serving thread owns one [`Upstream`]; the mirror has its own. An exchange runs inside
//! the task of the request it serves: the request is written and the response read by that
//! task, and the response body is read from the socket by whoever polls the body (the client
//! connection's task). No task per upstream connection, no channel between tasks.
//!
//! ```text
//! send(endpoint, request)
//!   ─> idle connection to endpoint (newest first; one the backend closed is dropped)
//!   └─ none left: connect (timeout, TCP_NODELAY, keep-alive probes)
//!   ─> write head (+ body) ─> read head (1xx skipped) ─> Response<UpstreamBody>
//!   │    └─ a reused connection failed before any response byte and the request can be
//!   │       sent again (idempotent, no body): next connection
//!   ─> the body streams to the caller; at its end the connection goes back to the pool,
//!      unless the backend asked to close it or sent more than the response; a body dropped
//!      early closes the connection.
//! ```
//!
//! A connection never carries bytes from one exchange into the next: one with anything left
//! after a complete response (past its `Content-Length`, after a 204, 304 or HEAD answer, after
//! the last chunk) is closed rather than pooled, and one that receives bytes while idle is
//! closed when it is next taken out (`Conn::still_open`, which learns of them from the
//! reactor without a system call of its own).
//!
//! Hand-written on httparse rather than on hyper's client: that client drives each connection
//! from a task of its own, so a request crossed tasks twice (request over, head and body back);
//! `benches/callgrind` measured the instructions per proxied request of both (README
//! "Benchmarks"). [`wire`] holds the message syntax. The request body is sent whole before the
//! response is read (a backend that answers early and stops reading is still heard: its answer
//! is read after the failed write); protocol upgrades (101) are refused with an error.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use fnv::FnvHashMap;
use http::header::{HeaderName, HeaderValue};
use http::uri::Authority;
use http::{Method, Request, Response};
use http_body::Body;
use socket2::{SockRef, TcpKeepalive};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

use crate::body::{BoxError, next_frame};
pub use body::UpstreamBody;
pub use wire::{ChunkedError, RawFields};
use wire::{Parsed, RequestFraming, ResponseHead};

mod body;
pub(crate) mod wire;

/// Settings of an upstream pool.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Time allowed to establish a connection (name resolution included).
    pub connect_timeout: Duration,
    /// An idle connection unused for this long is closed.
    pub idle_timeout: Duration,
    /// Idle connections kept per endpoint; more are closed when they become idle.
    pub max_idle_per_endpoint: usize,
    /// Idle time after which the kernel probes an upstream connection (TCP keep-alive).
    pub tcp_keepalive: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            connect_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(90),
            max_idle_per_endpoint: 256,
            tcp_keepalive: Duration::from_secs(60),
        }
    }
}

/// A pool of HTTP/1.1 connections to any number of endpoints. Cloning shares the pool.
#[derive(Clone)]
pub struct Upstream {
    shared: Arc<Shared>,
}

struct Shared {
    /// Idle connections by endpoint (`host:port` exactly as configured), most recent last.
    /// Keyed by the string with FNV: `Authority`'s case-insensitive hashing and comparison,
    /// byte by byte, cost more than the rest of a checkout.
    idle: Mutex<FnvHashMap<Box<str>, Vec<Idle>>>,
    /// Sweeps so far; an idle connection is stamped with it instead of reading the clock.
    sweeps: AtomicU64,
    options: PoolOptions,
}

struct Idle {
    conn: Conn,
    /// [`Shared::sweeps`] when the connection became idle.
    since: u64,
}

/// Sweeps per idle timeout: an idle connection is closed between `idle_timeout` and
/// `idle_timeout` × (1 + 1/SWEEPS) after its last use.
const SWEEPS: u32 = 4;

/// Bytes asked of the socket per read.
const READ_SIZE: usize = 8 * 1024;
/// Request bytes gathered before they are written.
const WRITE_SIZE: usize = 64 * 1024;

/// One upstream connection and its buffers.
struct Conn {
    io: TcpStream,
    /// Received and not yet consumed.
    read: BytesMut,
    /// The request being written (kept to reuse its allocation).
    write: Vec<u8>,
}

impl Conn {
    fn new(io: TcpStream) -> Conn {
        Conn {
            io,
            read: BytesMut::with_capacity(READ_SIZE),
            write: Vec::new(),
        }
    }

    /// Reads what the socket has into `read`; `Ok(0)` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.read.capacity() - self.read.len() < READ_SIZE / 2 {
            self.read.reserve(READ_SIZE);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read)
    }

    /// False if the backend closed the connection (or sent something unasked) while it was
    /// idle. Costs no system call unless the socket has been reported readable.
    fn still_open(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            // Readiness can be left over from the last response; look.
            Poll::Ready(Ok(())) => matches!(
                self.io.try_read(&mut [0; 1]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock
            ),
        }
    }
}

/// A connection lent out for one exchange, returned to its pool by [`Lease::release`].
struct Lease {
    conn: Conn,
    endpoint: Authority,
    pool: Weak<Shared>,
}

/// Why no connection to an endpoint could be established.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("resolving {endpoint}: {source}")]
    Resolve {
        endpoint: Authority,
        #[source]
        source: io::Error,
    },
    #[error("resolving {endpoint}: no addresses")]
    NoAddresses { endpoint: Authority },
    #[error("connecting to {endpoint}: {source}")]
    Io {
        endpoint: Authority,
        #[source]
        source: io::Error,
    },
    #[error("connecting to {endpoint}: no connection within {timeout:?}")]
    Timeout {
        endpoint: Authority,
        timeout: Duration,
    },
}

/// What went wrong in an exchange with a backend, after the connection was established.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("writing the request: {0}")]
    Write(#[source] io::Error),
    #[error("reading the response: {0}")]
    Read(#[source] io::Error),
    #[error("the backend closed the connection without answering")]
    ClosedBeforeResponse,
    #[error("the backend closed the connection in the middle of the response head")]
    ClosedInHead,
    #[error("the backend closed the connection before the end of the response body")]
    ClosedInBody,
    #[error("invalid response head: {0}")]
    Parse(#[source] httparse::Error),
    #[error("response head larger than {} KiB", wire::MAX_HEAD / 1024)]
    HeadTooLarge,
    #[error("invalid response: {0}")]
    Invalid(&'static str),
    #[error("invalid chunked response body: {0}")]
    Chunked(#[source] ChunkedError),
    #[error("the request body: {0}")]
    RequestBody(#[source] BoxError),
    #[error("the request body does not match its content-length")]
    RequestBodyLength,
}

/// Why an exchange with an endpoint failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("exchange with {endpoint}: {source}")]
    Exchange {
        endpoint: Authority,
        #[source]
        source: ExchangeError,
    },
}

impl SendError {
    /// Whether the request's own body failed (it is the client's): the backend is not to blame.
    pub fn client_fault(&self) -> bool {
        matches!(
            self,
            SendError::Exchange {
                source: ExchangeError::RequestBody(_) | ExchangeError::RequestBodyLength,
                ..
            }
        )
    }
}

impl Upstream {
    /// An empty pool. Must be called inside a Tokio runtime: connections are registered with
    /// that runtime's reactor, and a task of its own closes expired idle connections.
    pub fn new(options: PoolOptions) -> Upstream {
        let shared = Arc::new(Shared {
            idle: Mutex::new(FnvHashMap::default()),
            sweeps: AtomicU64::new(0),
            options,
        });
        tokio::spawn(sweep(Arc::downgrade(&shared)));
        Upstream { shared }
    }

    /// Sends `request` (its URI in origin form, with a `Host` header) and the `extra` header
    /// fields after its own to `endpoint`, over a pooled connection or a new one, and reads the
    /// response head. The body streams from the connection as it is polled. The response
    /// carries no hop-by-hop field (RFC 9110 §7.6.1) but `Transfer-Encoding`, which describes
    /// the body as it arrived (the body itself comes decoded).
    pub async fn send<B>(
        &self,
        endpoint: &Authority,
        request: Request<B>,
        extra: &[(HeaderName, HeaderValue)],
    ) -> Result<Response<UpstreamBody>, SendError>
    where
        B: Body + Unpin,
        B::Error: Into<BoxError>,
    {
        let (head, mut body) = request.into_parts();
        let framing = RequestFraming::choose(
            &head.headers,
            body.is_end_stream(),
            body.size_hint().exact(),
        );
        let head_request = head.method == Method::HEAD;
        let replayable = framing == RequestFraming::Empty && wire::idempotent(&head.method);
        let failed = |source| SendError::Exchange {
            endpoint: endpoint.clone(),
            source,
        };
        loop {
            let (mut conn, reused) = match self.checkout(endpoint) {
                Some(conn) => (conn, true),
                None => (self.connect(endpoint).await?, false),
            };
            conn.write.clear();
            wire::encode_head(&mut conn.write, &head, extra, framing);
            let result = match exchange(&mut conn, &mut body, framing, head_request).await {
                // The backend may have answered before it stopped reading the request; the
                // connection is not reused after that.
                Err(ExchangeError::Write(e)) => match read_head(&mut conn, head_request).await {
                    Ok(mut response) => {
                        response.keep_alive = false;
                        Ok(response)
                    }
                    Err(_) => Err(ExchangeError::Write(e)),
                },
                other => other,
            };
            match result {
                Ok(response) => {
                    let lease = Lease {
                        conn,
                        endpoint: endpoint.clone(),
                        pool: Arc::downgrade(&self.shared),
                    };
                    return Ok(UpstreamBody::response(response, lease));
                }
                // A connection the backend closed while it sat idle: the request never
                // reached it, or never got an answer and can be sent again.
                Err(
                    ExchangeError::Write(_)
                    | ExchangeError::ClosedBeforeResponse
                    | ExchangeError::Read(_),
                ) if reused && replayable && conn.read.is_empty() => {}
                Err(e) => return Err(failed(e)),
            }
        }
    }

    /// Idle connections to `endpoint`.
    #[cfg(test)]
    fn idle_count(&self, endpoint: &Authority) -> usize {
        self.shared
            .idle
            .lock()
            .map(|idle| idle.get(endpoint.as_str()).map_or(0, Vec::len))
            .unwrap_or(0)
    }

    /// The most recently used idle connection that is still open.
    fn checkout(&self, endpoint: &Authority) -> Option<Conn> {
        let mut idle = self.shared.idle.lock().ok()?;
        let list = idle.get_mut(endpoint.as_str())?;
        while let Some(mut entry) = list.pop() {
            if entry.conn.still_open() {
                return Some(entry.conn);
            }
        }
        None
    }

    async fn connect(&self, endpoint: &Authority) -> Result<Conn, ConnectError> {
        let options = &self.shared.options;
        let stream = tokio::time::timeout(options.connect_timeout, open(endpoint, options))
            .await
            .map_err(|_| ConnectError::Timeout {
                endpoint: endpoint.clone(),
                timeout: options.connect_timeout,
            })??;
        Ok(Conn::new(stream))
    }
}

/// Writes the request (head in `conn.write`, then `body`) and reads the final response head.
async fn exchange<B>(
    conn: &mut Conn,
    body: &mut B,
    framing: RequestFraming,
    head_request: bool,
) -> Result<ResponseHead, ExchangeError>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    write_request(conn, body, framing).await?;
    read_head(conn, head_request).await
}

/// Writes `conn.write` and the body after it, gathering what the body has ready into one
/// write of up to [`WRITE_SIZE`] bytes.
async fn write_request<B>(
    conn: &mut Conn,
    body: &mut B,
    framing: RequestFraming,
) -> Result<(), ExchangeError>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    let mut done = framing == RequestFraming::Empty;
    let mut sent: u64 = 0;
    loop {
        while !done && conn.write.len() < WRITE_SIZE {
            // Wait for the body only when there is nothing to write meanwhile.
            let Some(frame) = next_frame(body, conn.write.is_empty()).await else {
                break;
            };
            let trailers = match frame {
                None => None,
                Some(Err(e)) => return Err(ExchangeError::RequestBody(e.into())),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(mut data) => {
                        let len = data.remaining();
                        sent += len as u64;
                        if let RequestFraming::Length(expected) = framing
                            && sent > expected
                        {
                            return Err(ExchangeError::RequestBodyLength);
                        }
                        let bytes = data.copy_to_bytes(len);
                        wire::encode_data(&mut conn.write, framing, &bytes);
                        if !body.is_end_stream() {
                            continue;
                        }
                        None
                    }
                    Err(frame) => frame.into_trailers().ok(),
                },
            };
            // The body has ended.
            match framing {
                RequestFraming::Chunked => {
                    wire::encode_last_chunk(&mut conn.write, trailers.as_ref());
                }
                RequestFraming::Length(expected) if sent != expected => {
                    return Err(ExchangeError::RequestBodyLength);
                }
                _ => {}
            }
            done = true;
        }
        if !conn.write.is_empty() {
            conn.io
                .write_all(&conn.write)
                .await
                .map_err(ExchangeError::Write)?;
            conn.write.clear();
        }
        if done {
            return Ok(());
        }
    }
}

/// Reads until a final response head has been parsed; interim (1xx) responses are skipped.
async fn read_head(conn: &mut Conn, head_request: bool) -> Result<ResponseHead, ExchangeError> {
    loop {
        if !conn.read.is_empty() {
            match wire::parse_response(&mut conn.read, head_request)? {
                Parsed::Final(head) => return Ok(head),
                Parsed::Interim => continue,
                Parsed::Partial => {}
            }
        }
        let n = std::future::poll_fn(|cx| conn.poll_fill(cx))
            .await
            .map_err(ExchangeError::Read)?;
        if n == 0 {
            return Err(if conn.read.is_empty() {
                ExchangeError::ClosedBeforeResponse
            } else {
                ExchangeError::ClosedInHead
            });
        }
    }
}

impl Lease {
    /// Returns the connection to its pool: the response has been read to its end and nothing
    /// follows it.
    fn release(self) {
        let Some(pool) = self.pool.upgrade() else {
            return;
        };
        if !self.conn.read.is_empty() {
            return;
        }
        let since = pool.sweeps.load(Ordering::Relaxed);
        let Ok(mut idle) = pool.idle.lock() else {
            return;
        };
        let list = match idle.get_mut(self.endpoint.as_str()) {
            Some(list) => list,
            None => idle.entry(self.endpoint.as_str().into()).or_default(),
        };
        if list.len() >= pool.options.max_idle_per_endpoint {
            // The oldest idle connection goes; the newest are the likeliest to be reused.
            list.remove(0);
        }
        list.push(Idle {
            conn: self.conn,
            since,
        });
    }
}

impl Shared {
    /// Closes connections idle for too long or closed by the backend, and forgets endpoints
    /// without idle connections.
    fn sweep(&self) {
        let now = self.sweeps.fetch_add(1, Ordering::Relaxed) + 1;
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        // Idle for SWEEPS whole periods at least: the idle timeout has passed.
        idle.retain(|_, list| {
            list.retain_mut(|entry| {
                now - entry.since <= u64::from(SWEEPS) && entry.conn.still_open()
            });
            !list.is_empty()
        });
    }
}

/// Runs [`Shared::sweep`] [`SWEEPS`] times per idle timeout, until the pool is dropped.
async fn sweep(pool: Weak<Shared>) {
    let every = match pool.upgrade() {
        Some(p) => (p.options.idle_timeout / SWEEPS).max(Duration::from_millis(10)),
        None => return,
    };
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        match pool.upgrade() {
            Some(p) => p.sweep(),
            None => return,
        }
    }
}

/// Opens a TCP connection to the first address of `endpoint` that accepts one.
async fn open(endpoint: &Authority, options: &PoolOptions) -> Result<TcpStream, ConnectError> {
    let port = endpoint.port_u16().unwrap_or(80);
    let host = endpoint.host();
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match literal.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|source| ConnectError::Resolve {
                endpoint: endpoint.clone(),
                source,
            })?
            .collect(),
    };
    let mut last = None;
    for addr in addrs {
        match connect_to(addr, options).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(source) => ConnectError::Io {
            endpoint: endpoint.clone(),
            source,
        },
        None => ConnectError::NoAddresses {
            endpoint: endpoint.clone(),
        },
    })
}

async fn connect_to(addr: SocketAddr, options: &PoolOptions) -> io::Result<TcpStream> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_nodelay(true)?;
    SockRef::from(&socket)
        .set_tcp_keepalive(&TcpKeepalive::new().with_time(options.tcp_keepalive))?;
    socket.connect(addr).await
}

#[cfg(test)]
mod tests;
