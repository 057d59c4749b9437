//! A whole proxy: admin listener, configuration source (a path that is loaded and watched, or
//! the Kubernetes API), graceful stop. `serin-proxy` runs one; so do the tests and `serin demo`.

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
use crate::kubernetes;
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
    #[error("serving threads: {0}")]
    Workers(#[source] std::io::Error),
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
    let (proxy, mut applier) = serving(&options.forward, options.bind)?;
    let admin = Admin::new(proxy.clone());
    let (admin_addr, admin_task) = serve_admin(options.admin, admin.clone()).await?;
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

/// What a proxy fed from the Kubernetes API needs.
#[derive(Debug, Clone)]
pub struct KubernetesOptions {
    /// IP the Gateway listeners bind to.
    pub bind: IpAddr,
    /// Admin listener address; port 0 picks a free one.
    pub admin: SocketAddr,
    pub forward: ForwardOptions,
    pub drain_timeout: Duration,
    pub source: kubernetes::Options,
}

impl KubernetesOptions {
    /// Defaults for a proxy on loopback with an ephemeral admin port.
    pub fn loopback() -> KubernetesOptions {
        KubernetesOptions {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            admin: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            forward: ForwardOptions::default(),
            drain_timeout: Duration::from_secs(30),
            source: kubernetes::Options::default(),
        }
    }
}

/// Starts a proxy fed from the Kubernetes API: binds the admin listener and starts the
/// watchers. `/readyz` answers 200 once every watcher has synced and the first table is
/// applied; until then the proxy has no listeners.
pub async fn start_kubernetes(
    client: kube::Client,
    options: KubernetesOptions,
) -> Result<Running, StartError> {
    let (proxy, mut applier) = serving(&options.forward, options.bind)?;
    let admin = Admin::new(proxy.clone());
    let (admin_addr, admin_task) = serve_admin(options.admin, admin.clone()).await?;
    let (stop, stopped) = oneshot::channel();
    let drain_timeout = options.drain_timeout;
    let ready = admin.clone();
    let task = tokio::spawn(async move {
        kubernetes::run(client, options.source, &mut applier, &ready.ready, stopped).await;
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

/// The proxy and what applies configuration to it: the serving threads and listeners on
/// `bind`, none bound yet.
fn serving(forward: &ForwardOptions, bind: IpAddr) -> Result<(Arc<Proxy>, Applier), StartError> {
    let workers = forward.start_workers().map_err(StartError::Workers)?;
    let proxy = Arc::new(Proxy::new(Telemetry::new(), forward.clone()));
    let applier = Applier {
        proxy: proxy.clone(),
        listeners: Listeners::new(bind, proxy.clone(), Arc::new(workers)),
    };
    Ok((proxy, applier))
}

/// Binds the admin listener and serves it from a task of its own.
async fn serve_admin(
    addr: SocketAddr,
    admin: Arc<Admin>,
) -> Result<(SocketAddr, JoinHandle<()>), StartError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Admin { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| StartError::Admin { addr, source })?;
    Ok((local, tokio::spawn(admin::serve(listener, admin))))
}

impl Running {
    /// Whether `/readyz` answers 200: a table is serving (and, from Kubernetes, every watcher
    /// has synced).
    pub fn is_ready(&self) -> bool {
        self.admin.ready.load(Ordering::Acquire)
    }

    /// Stops accepting, lets in-flight requests finish (up to the drain timeout), and returns.
    pub async fn shutdown(self) {
        self.admin.ready.store(false, Ordering::Release);
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}
