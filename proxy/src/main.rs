//! `serin-proxy`: parse arguments, load the configuration (files, or the Kubernetes API with
//! `--kubernetes`), serve until SIGTERM/SIGINT; or, with `--check`, check the files and exit.

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use serin_proxy::forward::ForwardOptions;
use serin_proxy::kubernetes;
use serin_proxy::runtime::{self, KubernetesOptions, Options, StartError};

/// Serin's L7 proxy: serves Gateway API routes (weighted splits, matches, header filters) from
/// YAML files or the Kubernetes API, applies changes as they happen, and exports Prometheus
/// metrics.
#[derive(Parser, Debug)]
#[command(name = "serin-proxy", version)]
struct Args {
    /// A YAML file, or a directory of YAML files, holding Gateway, HTTPRoute and serin.dev
    /// Backend and SessionAffinity objects, checked strictly (an unknown field is an error).
    /// Watched: changes apply within a second.
    #[arg(
        long,
        value_name = "PATH",
        required_unless_present = "kubernetes",
        conflicts_with = "kubernetes"
    )]
    config: Option<PathBuf>,
    /// Read Gateways, HTTPRoutes, Services, EndpointSlices and serin.dev objects from the
    /// Kubernetes API (credentials from KUBECONFIG, ~/.kube/config or the in-cluster service
    /// account) and report status on them.
    #[arg(long)]
    kubernetes: bool,
    /// With --kubernetes: serve the Gateways of this GatewayClass (whose controllerName must be
    /// serin.dev/gateway); an empty value serves every class with that controllerName.
    #[arg(
        long,
        default_value = "serin",
        value_name = "NAME",
        requires = "kubernetes"
    )]
    gateway_class: String,
    /// IP address the Gateway listeners bind to (their ports come from the Gateways).
    #[arg(long, default_value = "0.0.0.0")]
    bind: IpAddr,
    /// Admin listener: /metrics, /healthz, /readyz, /routes.
    #[arg(long, default_value = "127.0.0.1:9901")]
    admin: SocketAddr,
    /// Time allowed to connect to a backend endpoint (e.g. 500ms, 2s).
    #[arg(long, default_value = "2s", value_parser = duration)]
    connect_timeout: Duration,
    /// Time allowed until a backend's response headers when the route sets no
    /// `timeouts.request`; 0s for none.
    #[arg(long, default_value = "60s", value_parser = duration)]
    default_request_timeout: Duration,
    /// Time allowed to receive a request's head on an HTTP/1.1 connection, idle time between
    /// requests included; the connection is closed after it.
    #[arg(long, default_value = "30s", value_parser = duration)]
    header_read_timeout: Duration,
    /// How long in-flight requests may take to finish after SIGTERM.
    #[arg(long, default_value = "30s", value_parser = duration)]
    drain_timeout: Duration,
    /// How often the configuration files are checked for changes.
    #[arg(long, default_value = "250ms", value_parser = duration)]
    watch_interval: Duration,
    /// Serving threads, each with its own upstream connection pool; 0 means one per core.
    /// Accepting, configuration, mirroring and the admin listener run on one more thread.
    #[arg(long, default_value_t = 0, value_name = "N")]
    workers: usize,
    /// Check the configuration at --config and exit: print a summary of the routing table and
    /// exit 0 when it would be served, print the error and exit 64 otherwise. Binds nothing.
    #[arg(long, requires = "config")]
    check: bool,
}

fn duration(s: &str) -> Result<Duration, String> {
    let d: gateway_api::Duration = s.parse()?;
    Ok(Duration::from_millis(d.as_millis() as u64))
}

/// Exit status for a configuration that cannot be served (sysexits EX_USAGE).
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    // Usage errors exit 64 (EX_USAGE), as `serin` does; --help and --version exit 0.
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
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if let (true, Some(config)) = (args.check, &args.config) {
        // The summary owns stdout; log lines (skipped objects) go to stderr.
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .init();
        return check(config);
    }
    // Colour only on a terminal: a log redirected to a file or collected by a container
    // runtime gets plain text.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal())
        .init();
    // The control runtime; requests are served on the worker threads the proxy starts.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("serin-proxy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(args))
}

/// `--check`: load and compile as at start-up, print the table's summary or the error.
fn check(config: &Path) -> ExitCode {
    match serin_proxy::reload::check(config) {
        Ok(checked) => {
            print!("{checked}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("serin-proxy: configuration rejected: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

async fn run(args: Args) -> ExitCode {
    let forward = ForwardOptions {
        connect_timeout: args.connect_timeout,
        default_timeout: (!args.default_request_timeout.is_zero())
            .then_some(args.default_request_timeout),
        workers: args.workers,
        header_read_timeout: args.header_read_timeout,
        ..ForwardOptions::default()
    };
    let started = match args.config {
        Some(config) if !args.kubernetes => {
            runtime::start(Options {
                config,
                bind: args.bind,
                admin: args.admin,
                forward,
                watch_interval: args.watch_interval,
                drain_timeout: args.drain_timeout,
            })
            .await
        }
        _ => {
            let client = match kubernetes::client().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!("{e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let mut options = KubernetesOptions::loopback();
            options.bind = args.bind;
            options.admin = args.admin;
            options.forward = forward;
            options.drain_timeout = args.drain_timeout;
            options.source.gateway_class =
                (!args.gateway_class.is_empty()).then_some(args.gateway_class);
            runtime::start_kubernetes(client, options).await
        }
    };
    let running = match started {
        Ok(r) => r,
        Err(e @ StartError::Config(_)) => {
            tracing::error!("configuration rejected: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if running.is_ready() {
        tracing::info!(admin = %running.admin_addr, "serin-proxy ready");
    } else {
        tracing::info!(admin = %running.admin_addr, "serin-proxy started; ready once the watches have synced");
    }
    shutdown_signal().await;
    tracing::info!("shutting down: draining connections");
    running.shutdown().await;
    ExitCode::SUCCESS
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
