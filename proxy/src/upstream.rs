//! Upstream HTTP/1.1 connections, pooled per endpoint.
//!
//! Each serving thread owns one [`Upstream`] (so the pool's lock is never contended and a
//! connection's task runs on the thread that uses it); the mirror has its own.
//!
//! ```text
//! send(endpoint, request)
//!   ─> idle connection to endpoint (newest first; closed or expired ones are dropped)
//!   │    └─ the request was never written (the backend closed it meanwhile): next one
//!   └─ none left: connect (timeout, TCP_NODELAY, keep-alive probes) ─> handshake ─> spawn it
//!   ─> response ─> its body streams to the caller ─> at the body's end, [`Pooled::release`]
//!      puts the connection back; a body dropped early closes the connection instead.
//! ```
//!
//! Built on `hyper::client::conn::http1` rather than hyper-util's pooled client: per request
//! that client boxes futures, races a checkout against a lazy connect and spawns a task to
//! watch each connection become idle again; the load benchmark (`benches/run`) measured this
//! pool's CPU per proxied request against it.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use fnv::FnvHashMap;
use http::uri::Authority;
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpSocket, TcpStream};

use crate::body::BoxError;

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
pub struct Upstream<B> {
    shared: Arc<Shared<B>>,
}

impl<B> Clone for Upstream<B> {
    fn clone(&self) -> Self {
        Upstream {
            shared: self.shared.clone(),
        }
    }
}

struct Shared<B> {
    /// Idle connections by endpoint (`host:port` exactly as configured), most recent last.
    /// Keyed by the string with FNV: `Authority`'s case-insensitive hashing and comparison,
    /// byte by byte, cost more than the rest of a checkout.
    idle: Mutex<FnvHashMap<Box<str>, Vec<Idle<B>>>>,
    /// Sweeps so far; an idle connection is stamped with it instead of reading the clock.
    sweeps: AtomicU64,
    options: PoolOptions,
    http1: http1::Builder,
}

struct Idle<B> {
    sender: SendRequest<B>,
    /// [`Shared::sweeps`] when the connection became idle.
    since: u64,
}

/// Sweeps per idle timeout: an idle connection is closed between `idle_timeout` and
/// `idle_timeout` × (1 + 1/SWEEPS) after its last use.
const SWEEPS: u32 = 4;

/// A connection lent out for one exchange. [`release`](Pooled::release) it once the response
/// body has been read to its end; dropping it closes the connection.
pub struct Pooled<B> {
    sender: SendRequest<B>,
    endpoint: Authority,
    pool: Weak<Shared<B>>,
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
    #[error("connecting to {endpoint}: HTTP/1.1 handshake: {source}")]
    Handshake {
        endpoint: Authority,
        #[source]
        source: hyper::Error,
    },
}

/// Why an exchange with an endpoint failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The request was (possibly) written, and the exchange failed after that.
    #[error("{0}")]
    Http(#[source] hyper::Error),
}

impl<B> Upstream<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// An empty pool. Must be called inside a Tokio runtime: connections are driven by tasks
    /// of that runtime's, and a task of its own closes expired idle connections.
    pub fn new(options: PoolOptions) -> Upstream<B> {
        let mut http1 = http1::Builder::new();
        // Backends in the wild fold headers and pad names; accept what browsers accept.
        http1.allow_obsolete_multiline_headers_in_responses(true);
        let shared = Arc::new(Shared {
            idle: Mutex::new(FnvHashMap::default()),
            sweeps: AtomicU64::new(0),
            options,
            http1,
        });
        tokio::spawn(sweep(Arc::downgrade(&shared)));
        Upstream { shared }
    }

    /// Sends `request` (its URI in origin form, with a `Host` header) to `endpoint` over a
    /// pooled connection, or a new one. A request that a reused connection never wrote (the
    /// backend closed it while idle) goes out on the next connection.
    pub async fn send(
        &self,
        endpoint: &Authority,
        mut request: Request<B>,
    ) -> Result<(Response<Incoming>, Pooled<B>), SendError> {
        while let Some(mut sender) = self.checkout(endpoint) {
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => return Ok((response, self.lend(endpoint, sender))),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(SendError::Http(e.into_error())),
                },
            }
        }
        let mut sender = self.connect(endpoint).await?;
        let response = sender
            .send_request(request)
            .await
            .map_err(SendError::Http)?;
        Ok((response, self.lend(endpoint, sender)))
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

    fn lend(&self, endpoint: &Authority, sender: SendRequest<B>) -> Pooled<B> {
        Pooled {
            sender,
            endpoint: endpoint.clone(),
            pool: Arc::downgrade(&self.shared),
        }
    }

    /// The most recently used idle connection that is still open (expired ones are closed by
    /// the sweeper).
    fn checkout(&self, endpoint: &Authority) -> Option<SendRequest<B>> {
        let mut idle = self.shared.idle.lock().ok()?;
        let list = idle.get_mut(endpoint.as_str())?;
        while let Some(entry) = list.pop() {
            if !entry.sender.is_closed() {
                return Some(entry.sender);
            }
        }
        None
    }

    async fn connect(&self, endpoint: &Authority) -> Result<SendRequest<B>, ConnectError> {
        let options = &self.shared.options;
        let stream = tokio::time::timeout(options.connect_timeout, open(endpoint, options))
            .await
            .map_err(|_| ConnectError::Timeout {
                endpoint: endpoint.clone(),
                timeout: options.connect_timeout,
            })??;
        let (sender, connection) = self
            .shared
            .http1
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| ConnectError::Handshake {
                endpoint: endpoint.clone(),
                source,
            })?;
        let peer = endpoint.clone();
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(endpoint = %peer, %error, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }
}

impl<B> std::fmt::Debug for Pooled<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pooled")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl<B> Pooled<B> {
    /// Returns the connection to its pool: the response has been read to its end.
    pub fn release(self) {
        let Some(pool) = self.pool.upgrade() else {
            return;
        };
        if self.sender.is_closed() {
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
            sender: self.sender,
            since,
        });
    }
}

impl<B> Shared<B> {
    /// Closes connections idle for too long or closed by the backend, and forgets endpoints
    /// without idle connections.
    fn sweep(&self) {
        let now = self.sweeps.fetch_add(1, Ordering::Relaxed) + 1;
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        // Idle for SWEEPS whole periods at least: the idle timeout has passed.
        idle.retain(|_, list| {
            list.retain(|entry| {
                !entry.sender.is_closed() && now - entry.since <= u64::from(SWEEPS)
            });
            !list.is_empty()
        });
    }
}

/// Runs [`Shared::sweep`] [`SWEEPS`] times per idle timeout, until the pool is dropped.
async fn sweep<B>(pool: Weak<Shared<B>>) {
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
