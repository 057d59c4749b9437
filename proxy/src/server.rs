//! Listeners: one accept loop per Gateway listener port, HTTP/1.1 ([`http1`]) and h2c (hyper)
//! on each connection, and graceful drain.
//!
//! Accept loops run on the control runtime and hand each connection to a serving thread
//! ([`Workers`]), where it is served to its end.
//!
//! Ports follow the table: a reload binds new ports *before* the table is swapped (a port that
//! cannot be bound rejects the reload) and stops accepting on removed ports after; connections
//! already open on a removed port finish normally.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::body::ClientBody;
use crate::deadline;
use crate::error::ConfigError;
use crate::forward::{Peer, Proxy};
use crate::metrics::OpenConnection;
use crate::upstream::Upstream;
use crate::workers::Workers;

pub mod http1;

/// Listeners bound but not yet serving; see [`Listeners::bind_new`].
pub struct Bound(Vec<(u16, std::net::TcpListener)>);

/// The running listeners and the drain machinery shared by every connection.
pub struct Listeners {
    bind: IpAddr,
    proxy: Arc<Proxy>,
    workers: Arc<Workers>,
    running: BTreeMap<u16, Running>,
    shutdown: watch::Sender<bool>,
    /// Each connection holds a clone; draining waits until all are dropped.
    alive: Option<mpsc::Sender<()>>,
    drained: mpsc::Receiver<()>,
}

struct Running {
    stop: watch::Sender<bool>,
    local: SocketAddr,
}

impl Listeners {
    /// Listeners on `bind` whose connections are served by `workers`.
    pub fn new(bind: IpAddr, proxy: Arc<Proxy>, workers: Arc<Workers>) -> Listeners {
        let (alive, drained) = mpsc::channel(1);
        Listeners {
            bind,
            proxy,
            workers,
            running: BTreeMap::new(),
            shutdown: watch::channel(false).0,
            alive: Some(alive),
            drained,
        }
    }

    /// Binds the ports of `wanted` that are not listening yet. Nothing changes on error.
    pub fn bind_new(&self, wanted: impl IntoIterator<Item = u16>) -> Result<Bound, ConfigError> {
        let mut bound = Vec::new();
        for port in wanted {
            if self.running.contains_key(&port) {
                continue;
            }
            let listener = std::net::TcpListener::bind((self.bind, port))
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .map_err(|source| ConfigError::Bind { port, source })?;
            bound.push((port, listener));
        }
        Ok(Bound(bound))
    }

    /// Starts serving `bound` and stops accepting on running ports not in `wanted`.
    pub fn commit(&mut self, bound: Bound, wanted: &[u16]) {
        for (port, listener) in bound.0 {
            let Ok(listener) = TcpListener::from_std(listener) else {
                tracing::error!(port, "listener could not be registered with the runtime");
                continue;
            };
            let local = listener
                .local_addr()
                .unwrap_or_else(|_| SocketAddr::new(self.bind, port));
            let (stop, stopped) = watch::channel(false);
            tracing::info!(%local, "listening");
            tokio::spawn(accept_loop(
                listener,
                port,
                self.proxy.clone(),
                self.workers.clone(),
                stopped,
                self.shutdown.subscribe(),
                self.alive.clone(),
            ));
            self.running.insert(port, Running { stop, local });
        }
        let removed: Vec<u16> = self
            .running
            .keys()
            .copied()
            .filter(|p| !wanted.contains(p))
            .collect();
        for port in removed {
            if let Some(r) = self.running.remove(&port) {
                tracing::info!(local = %r.local, "no longer listening");
                let _ = r.stop.send(true);
            }
        }
    }

    /// Addresses being listened on.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.running.values().map(|r| r.local).collect()
    }

    /// Stops accepting, asks every connection to finish its in-flight requests, and waits up to
    /// `timeout` for them.
    pub async fn drain(mut self, timeout: Duration) {
        for r in self.running.values() {
            let _ = r.stop.send(true);
        }
        let _ = self.shutdown.send(true);
        self.alive = None;
        if tokio::time::timeout(timeout, self.drained.recv())
            .await
            .is_err()
        {
            tracing::warn!(?timeout, "drain timed out; closing remaining connections");
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    port: u16,
    proxy: Arc<Proxy>,
    workers: Arc<Workers>,
    mut stopped: watch::Receiver<bool>,
    shutdown: watch::Receiver<bool>,
    alive: Option<mpsc::Sender<()>>,
) {
    let open = proxy.telemetry().metrics.open_connections(port);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(port, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        // Leave this runtime's reactor; the worker registers the socket with its own.
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(port, %remote, error = %e, "accepted connection could not be handed over");
                continue;
            }
        };
        let worker = workers.next();
        let connection = Connection {
            proxy: proxy.clone(),
            upstream: worker.upstream.clone(),
            peer: Peer::new(remote),
            port,
        };
        let (shutdown, alive, open) = (shutdown.clone(), alive.clone(), OpenConnection::new(&open));
        worker.spawn(async move {
            let _alive = alive;
            let _open = open;
            match TcpStream::from_std(stream) {
                Ok(stream) => serve(Arc::new(connection), stream, shutdown).await,
                Err(e) => tracing::warn!(%remote, error = %e, "connection could not be registered"),
            }
        });
    }
}

/// What every request of one client connection shares.
struct Connection {
    proxy: Arc<Proxy>,
    /// The serving thread's upstream pool.
    upstream: Upstream,
    peer: Peer,
    port: u16,
}

/// Serves one client connection (HTTP/1.1 or h2c) until it closes, or until `shutdown` asks
/// it to finish its in-flight requests.
async fn serve(
    connection: Arc<Connection>,
    stream: TcpStream,
    mut shutdown: watch::Receiver<bool>,
) {
    // Checked between requests without registering a waiter; `stop` wakes an idle connection.
    let probe = shutdown.clone();
    let stop = async move {
        let _ = shutdown.wait_for(|s| *s).await;
    };
    tokio::pin!(stop);
    // The first bytes tell HTTP/2 (its connection preface) from HTTP/1.1.
    let mut read = BytesMut::with_capacity(8 * 1024);
    let sniffed = deadline::within(
        Instant::now() + connection.proxy.options().header_read_timeout,
        poll_fn(|cx| sniff(&stream, &mut read, cx)),
    );
    let is_h2 = tokio::select! {
        sniffed = sniffed => match sniffed {
            Some(Ok(is_h2)) => is_h2,
            Some(Err(_)) | None => return,
        },
        () = stop.as_mut() => return,
    };
    if !is_h2 {
        http1::serve(&connection, stream, read, stop, &probe).await;
        return;
    }
    let remote = connection.peer.addr;
    let service = service_fn(move |req: Request<Incoming>| {
        let connection = connection.clone();
        async move {
            let c = &*connection;
            let req = req.map(ClientBody::Http2);
            let response = c.proxy.serve(c.port, &c.peer, &c.upstream, req).await;
            // hyper writes the header map: every field goes in it.
            let (mut parts, mut body) = response.into_parts();
            body.merge_fields_into(&mut parts.headers);
            Ok::<_, Infallible>(Response::from_parts(parts, body))
        }
    });
    let io = Rewind {
        prefix: read.freeze(),
        io: stream,
    };
    let conn = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = stop => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%remote, error = %e, "connection ended with an error");
    }
}

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads until the first bytes tell whether the client speaks HTTP/2: true once they are the
/// whole preface, false as soon as they differ from it.
fn sniff(io: &TcpStream, read: &mut BytesMut, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
    loop {
        let n = read.len().min(PREFACE.len());
        if read[..n] != PREFACE[..n] {
            return Poll::Ready(Ok(false));
        }
        if n == PREFACE.len() {
            return Poll::Ready(Ok(true));
        }
        if ready!(http1::poll_fill(io, read, cx))? == 0 {
            return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
        }
    }
}

/// A stream whose first bytes were already read: they are read again first.
struct Rewind {
    prefix: Bytes,
    io: TcpStream,
}

impl AsyncRead for Rewind {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
