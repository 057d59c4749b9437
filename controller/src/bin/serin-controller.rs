//! serin-controller: drives `Canary` resources (serin.dev/v1alpha1) in a Kubernetes cluster
//! through the rollout stages, routing traffic through serin-proxy's HTTPRoutes and judging
//! each step from the proxy's own metrics.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use std::sync::atomic::Ordering;

use serin_controller::kubernetes::admin::{self, Admin};
use serin_controller::kubernetes::discovery::{self, ProxyService};
use serin_controller::kubernetes::lease::{self, LeaseConfig};
use serin_controller::kubernetes::{self, Context};
use serin_controller::provider::builtin::BuiltinProvider;
use serin_controller::webhook_client::HttpWebhookClient;

/// Exit status for bad command-line arguments or configuration.
const EXIT_CONFIG: u8 = 64;

/// Drives Canary resources through the rollout stages (bootstrap, analysis, traffic steps,
/// promotion or rollback). Credentials from KUBECONFIG, ~/.kube/config or the in-cluster
/// service account.
#[derive(Parser, Debug)]
#[command(name = "serin-controller", version)]
struct Args {
    /// Admin address (HOST:PORT) of a serin-proxy replica whose /metrics the built-in metrics
    /// read; repeat for every replica.
    #[arg(
        long = "proxy-admin",
        value_name = "ADDR",
        required_unless_present = "proxy_metrics"
    )]
    proxy_admin: Vec<String>,
    /// The Service (NAMESPACE/NAME) in front of the serin-proxy replicas' admin port: their
    /// /metrics are found through its EndpointSlices (port named admin or metrics), followed
    /// as replicas come and go.
    #[arg(
        long = "proxy-metrics",
        value_name = "NAMESPACE/SERVICE",
        conflicts_with = "proxy_admin"
    )]
    proxy_metrics: Option<ProxyService>,
    /// Drive only the Canaries of this namespace (default: every namespace).
    #[arg(long, value_name = "NAMESPACE")]
    namespace: Option<String>,
    /// Address of the controller's own endpoint: /metrics, /healthz, /readyz.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8080")]
    listen: std::net::SocketAddr,
    /// Compete for a coordination.k8s.io Lease and drive Canaries only while holding it, so
    /// that of several replicas exactly one writes (`--leader-elect=false` to run alone).
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Namespace of the leader Lease (default: the pod's namespace, else serin-system).
    #[arg(long, value_name = "NAMESPACE")]
    leader_election_namespace: Option<String>,
    /// Name of the leader Lease (default: serin-controller, or serin-controller-<namespace>
    /// with --namespace, so that controllers of different namespaces do not compete).
    #[arg(long, value_name = "NAME")]
    leader_election_id: Option<String>,
    /// This replica's identity in the Lease: POD_NAME (stable across restarts of the pod's
    /// container, so a restarted leader resumes at once), else the host name with a random
    /// suffix. Two replicas must never share one.
    #[arg(long, value_name = "ID", env = "POD_NAME")]
    leader_election_identity: Option<String>,
}

/// The namespace this pod runs in, when in a cluster.
fn pod_namespace() -> Option<String> {
    std::env::var("POD_NAMESPACE").ok().or_else(|| {
        std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
            .ok()
            .map(|s| s.trim().to_owned())
    })
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("serin-controller: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let client = kube::Client::try_default()
            .await
            .context("connecting to the Kubernetes API")?;
        let provider = match &args.proxy_metrics {
            Some(service) => {
                let provider = Arc::new(BuiltinProvider::discovering(format!(
                    "no ready endpoint behind --proxy-metrics {service}"
                )));
                discovery::refresh(&client, service, &provider).await?;
                tokio::spawn(discovery::follow(
                    client.clone(),
                    service.clone(),
                    provider.clone(),
                    Duration::from_secs(5),
                ));
                provider
            }
            None => Arc::new(BuiltinProvider::new(&args.proxy_admin).context("--proxy-admin")?),
        };
        tokio::spawn(provider.clone().scrape_every(Duration::from_secs(1)));
        let admin = Arc::new(Admin::new());
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("--listen {}", args.listen))?;
        tokio::spawn(admin::serve(listener, admin.clone()));
        let context = Context::new(client.clone(), provider, Arc::new(HttpWebhookClient::new()))
            .in_namespace(args.namespace.clone())
            .with_admin(admin.clone());
        if !args.leader_elect {
            admin.set_leader(true);
            kubernetes::run(Arc::new(context)).await;
            return Ok(());
        }
        let name = args
            .leader_election_id
            .clone()
            .unwrap_or_else(|| match &args.namespace {
                Some(ns) => format!("serin-controller-{ns}"),
                None => "serin-controller".to_owned(),
            });
        let namespace = args
            .leader_election_namespace
            .clone()
            .or_else(pod_namespace)
            .unwrap_or_else(|| "serin-system".to_owned());
        let identity = args
            .leader_election_identity
            .clone()
            .unwrap_or_else(|| format!("{}-{:08x}", context.instance, fastrand::u32(..)));
        let config = LeaseConfig::new(namespace, name, identity);
        let (leading_tx, mut leading) = tokio::sync::watch::channel(false);
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let mut election = tokio::spawn(lease::run(client, config, leading_tx, stop));
        admin.standby.store(true, Ordering::Relaxed);
        tokio::select! {
            _ = leading.wait_for(|l| *l) => {}
            _ = shutdown_signal() => {
                let _ = stop_tx.send(true);
                let _ = election.await;
                return Ok(());
            }
            ended = &mut election => {
                return Err(anyhow::anyhow!("leader election ended: {ended:?}"));
            }
        }
        admin.standby.store(false, Ordering::Relaxed);
        admin.set_leader(true);
        tokio::select! {
            // SIGTERM/SIGINT: the controller stops, then the Lease is released for a standby.
            () = kubernetes::run(Arc::new(context)) => {
                let _ = stop_tx.send(true);
                let _ = election.await;
                Ok(())
            }
            ended = &mut election => {
                admin.set_leader(false);
                match ended {
                    Ok(Err(lost)) => Err(lost.into()),
                    other => Err(anyhow::anyhow!("leader election ended: {other:?}")),
                }
            }
        }
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
