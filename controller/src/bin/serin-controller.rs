//! serin-controller: drives `Canary` resources (serin.dev/v1alpha1) in a Kubernetes cluster
//! through the rollout stages, routing traffic through serin-proxy's HTTPRoutes and judging
//! each step from the proxy's own metrics.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
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
    #[arg(long = "proxy-admin", value_name = "ADDR", required = true)]
    proxy_admin: Vec<String>,
    /// Drive only the Canaries of this namespace (default: every namespace).
    #[arg(long, value_name = "NAMESPACE")]
    namespace: Option<String>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
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
        let provider = Arc::new(BuiltinProvider::new(&args.proxy_admin).context("--proxy-admin")?);
        tokio::spawn(provider.clone().scrape_every(Duration::from_secs(1)));
        let client = kube::Client::try_default()
            .await
            .context("connecting to the Kubernetes API")?;
        let context = Context::new(client, provider, Arc::new(HttpWebhookClient::new()))
            .in_namespace(args.namespace);
        kubernetes::run(Arc::new(context)).await;
        Ok(())
    })
}
