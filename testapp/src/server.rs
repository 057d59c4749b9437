//! Serving an [`App`] over HTTP/1.1 (keep-alive, hyper's server) on one or more listeners, and
//! stopping gracefully: stop accepting, let requests in flight finish, then close.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, info, warn};

use crate::app::App;
use crate::config::Config;
use crate::error::{Error, Result};

/// How long requests in flight may take to finish once shutdown has begun.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// One listener serving an app. Dropping it stops the server at once (open connections are
/// closed); [`Server::shutdown`] stops it gracefully.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// Serves `app` on an already bound `listener`, on the current Tokio runtime.
pub fn serve(listener: TcpListener, app: App) -> Result<Server> {
    let addr = listener.local_addr().map_err(Error::LocalAddr)?;
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(accept_loop(listener, app, stopped));
    Ok(Server {
        addr,
        stop: Some(stop),
        task: Some(task),
    })
}

/// Runs the app as the `serin-testapp` binary does: binds every port of `config`, logs one
/// `listening on ADDR version V` line per port, serves until `shutdown` completes, then
/// drains (at most [`DRAIN_TIMEOUT`]) and returns.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<()> {
    let app = App::new(config.app)?;
    let mut servers = Vec::with_capacity(config.ports.len());
    for port in config.ports {
        let addr = SocketAddr::new(config.host, port);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        let server = serve(listener, app.clone())?;
        info!(
            "listening on {} version {}",
            server.local_addr(),
            app.config().version
        );
        servers.push(server);
    }
    shutdown.await;
    info!("shutting down");
    for server in &mut servers {
        server.stop();
    }
    for server in servers {
        server.shutdown().await;
    }
    Ok(())
}

impl Server {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets requests in flight finish (at most [`DRAIN_TIMEOUT`]) and closes
    /// every connection; returns once all are closed.
    pub async fn shutdown(mut self) {
        self.stop();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Begins a graceful shutdown without waiting for it.
    fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, app: App, mut stopped: oneshot::Receiver<()>) {
    let graceful = GracefulShutdown::new();
    // Owned here so that aborting this task closes every connection too.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let app = app.clone();
                    let service = service_fn(move |request| {
                        let app = app.clone();
                        async move { app.handle(request).await }
                    });
                    let connection = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .serve_connection(TokioIo::new(stream), service);
                    let connection = graceful.watch(connection);
                    connections.spawn(async move {
                        if let Err(e) = connection.await {
                            debug!(%peer, error = %e, "connection ended");
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = &mut stopped => break,
        }
    }
    drop(listener);
    let drained = async {
        graceful.shutdown().await;
        while connections.join_next().await.is_some() {}
    };
    if tokio::time::timeout(DRAIN_TIMEOUT, drained).await.is_err() {
        warn!(
            timeout = ?DRAIN_TIMEOUT,
            "requests still in flight after the drain timeout; closing their connections"
        );
    }
}
