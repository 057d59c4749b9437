//! A whole proxy serving a configuration path: admin listener, first load, file watching,
//! graceful stop. `serin-proxy` runs one; so do the tests and `serin demo`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::admin::{self, Admin};
use crate::error::ConfigError;
use crate::forward::{ForwardOptions, Proxy};
use crate::metrics::Telemetry;
use crate::reload::{Applier, FileSource};
use crate::server::Listeners;

/// What a file-mode proxy needs.
#[derive(Debug, Clone)]
pub struct Options {
    pub config: PathBuf,
    /// IP the Gateway listeners bind to.
    pub bind: IpAddr,
    /// Admin listener address; port 0 picks a free one.
    pub admin: SocketAddr,
    pub forward: ForwardOptions,
    pub watch_interval: Duration,
    pub drain_timeout: Duration,
}

impl Options {
    /// Defaults for a proxy on loopback with an ephemeral admin port.
    pub fn loopback(config: PathBuf) -> Options {
        Options {
            config,
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            admin: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            forward: ForwardOptions::default(),
            watch_interval: Duration::from_millis(250),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// Why a proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("admin listener {addr}: {source}")]
    Admin {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// A running proxy.
pub struct Running {
    pub admin_addr: SocketAddr,
    pub proxy: Arc<Proxy>,
    admin: Arc<Admin>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// Starts a proxy: binds the admin listener, loads and applies the configuration (failing on
/// an invalid one), then watches it.
pub async fn start(options: Options) -> Result<Running, StartError> {
    let proxy = Arc::new(Proxy::new(Telemetry::new(), options.forward.clone()));
    let admin = Admin::new(proxy.clone());
    let admin_listener = tokio::net::TcpListener::bind(options.admin)
        .await
        .map_err(|source| StartError::Admin {
            addr: options.admin,
            source,
        })?;
    let admin_addr = admin_listener
        .local_addr()
        .map_err(|source| StartError::Admin {
            addr: options.admin,
            source,
        })?;
    let admin_task = tokio::spawn(admin::serve(admin_listener, admin.clone()));

    let mut applier = Applier {
        proxy: proxy.clone(),
        listeners: Listeners::new(options.bind, proxy.clone()),
    };
    let source = FileSource::new(options.config.clone(), options.watch_interval);
    if let Err(e) = source.load(&mut applier) {
        admin_task.abort();
        return Err(e.into());
    }
    admin.ready.store(true, Ordering::Release);

    let (stop, stopped) = oneshot::channel();
    let drain_timeout = options.drain_timeout;
    let task = tokio::spawn(async move {
        source.watch(&mut applier, stopped).await;
        applier.listeners.drain(drain_timeout).await;
        admin_task.abort();
    });
    Ok(Running {
        admin_addr,
        proxy,
        admin,
        stop,
        task,
    })
}

impl Running {
    /// Stops accepting, lets in-flight requests finish (up to the drain timeout), and returns.
    pub async fn shutdown(self) {
        self.admin.ready.store(false, Ordering::Release);
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}
