//! `serin`: the command-line tool. `serin demo` runs a whole canary release on this machine;
//! `serin rollout` drives a release in standalone mode; `serin validate FILE...` checks Canary
//! and MetricTemplate manifests with the controller's own validation, and serin-proxy
//! configuration (Gateway, HTTPRoute, Backend, SessionAffinity) with the proxy's own loader;
//! `serin crds` prints the CRDs.
//!
//! Exit codes: 0 success, 1 invalid input (or a file that cannot be read or written, or, for
//! `serin rollout`, an unreachable serin-proxy admin address or a release rolled back),
//! 64 usage or configuration error (`serin rollout`: the Canary file, the routing directory or
//! the target Backend; `serin demo`: its options).

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context;
use clap::{Parser, Subcommand, error::ErrorKind};
use serin_cli::manifest::{self, Finding};
use serin_controller::{Error, crd};

/// Exit code for invalid input.
const EXIT_INVALID: u8 = 1;
/// Exit code for usage errors (BSD `EX_USAGE`).
const EXIT_USAGE: u8 = 64;
/// `serin rollout --exit-when-done` exits after this many failed steps in a row (a target
/// Backend or routing directory gone while it runs).
const STEP_FAILURES_BEFORE_EXIT: u32 = 3;

/// Serin: sidecar-free canary delivery.
#[derive(Debug, Parser)]
#[command(name = "serin", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a whole canary release on this machine, no cluster needed.
    ///
    /// Starts serin-proxy, two versions of serin-testapp (v1 serving, v2 being released), a
    /// steady load, and the rollout engine with the built-in metrics provider, then releases v2:
    /// the canary is analysed every second and advanced 10% at a time up to 50%, then promoted
    /// — or rolled back when its success rate drops below 99% or its p99 latency rises above
    /// 500 ms for 3 checks. Prints the events as they happen and writes a timeline chart.
    ///
    /// Exit status 0 when the release ends as the scenario should (healthy: promoted;
    /// errors, latency: rolled back), 1 otherwise, 64 for invalid options (checked before
    /// anything starts).
    Demo {
        /// How the new version behaves.
        #[arg(long, value_enum, default_value = "healthy")]
        scenario: serin_cli::demo::Scenario,
        /// Existing, writable directory for rollout.svg [default: serin-demo in the system's
        /// temporary directory, created if missing].
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Requests per second sent through the proxy (at least 1).
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
        rate: u32,
    },
    /// Drive a release in standalone mode (no Kubernetes).
    ///
    /// The Canary's targetRef names a serin.dev/v1alpha1 Backend in DIR (the addresses of the
    /// version to release). The engine writes `<target>-primary` and `<target>-canary` Backends
    /// and the `<canary>-route.yaml` HTTPRoute into DIR, which a separately running
    /// `serin-proxy --config DIR` serves. Point the target Backend at new addresses to start a
    /// release; promotion copies them into `<target>-primary`. The status is kept in
    /// DIR/.serin/<canary>.json so a restarted engine resumes where it was.
    ///
    /// Checked before anything is written: exit status 64 when the Canary file, DIR or the
    /// target Backend is missing or invalid, 1 when a --proxy-admin address does not answer.
    Rollout {
        /// The Canary manifest.
        #[arg(long, value_name = "FILE")]
        canary: PathBuf,
        /// The routing directory serin-proxy watches.
        #[arg(long, value_name = "DIR")]
        routes: PathBuf,
        /// Admin addresses of the serin-proxy replicas to read metrics from.
        #[arg(
            long = "proxy-admin",
            value_name = "ADDR",
            default_value = "127.0.0.1:9901"
        )]
        proxy_admin: Vec<String>,
        /// Stop once a release has ended (Succeeded or Failed) instead of waiting for the next.
        #[arg(long)]
        exit_when_done: bool,
    },
    /// Check Canary and MetricTemplate manifests and serin-proxy configuration files
    /// (multi-document YAML, kinds may be mixed).
    ///
    /// Canaries and MetricTemplates are checked as the controller checks them; Gateways,
    /// HTTPRoutes, Backends and SessionAffinities as serin-proxy loads them (strictly: an
    /// unknown field or kind is an error). Prints `FILE: Canary NAMESPACE/NAME: ok` for each
    /// valid object and one line per problem otherwise; exits 1 if any object is invalid or any
    /// file unreadable. References between objects are checked by `serin-proxy --check`.
    Validate {
        /// Manifest files.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Print the CustomResourceDefinitions of Serin's resources.
    Crds {
        /// Write one file per CRD into this directory instead of printing them.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // Help and version go to stdout and succeed; everything else is a usage error.
            let _ = err.print();
            return match err.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => ExitCode::SUCCESS,
                _ => ExitCode::from(EXIT_USAGE),
            };
        }
    };
    let result = match cli.command {
        Command::Demo {
            scenario,
            out,
            rate,
        } => demo(scenario, out, rate),
        Command::Rollout {
            canary,
            routes,
            proxy_admin,
            exit_when_done,
        } => rollout(&canary, routes, proxy_admin, exit_when_done),
        Command::Validate { files } => Ok(validate(&files)),
        Command::Crds { dir } => crds(dir.as_deref()),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("serin: {err:#}");
            ExitCode::from(EXIT_INVALID)
        }
    }
}

fn validate(files: &[PathBuf]) -> ExitCode {
    let mut out = std::io::stdout().lock();
    let mut ok = true;
    for file in files {
        let shown = file.display();
        let findings = match manifest::check_file(file) {
            Ok(findings) => findings,
            Err(Error::Io { source, .. }) => {
                ok = false;
                let _ = writeln!(out, "{shown}: cannot read: {source}");
                continue;
            }
            Err(err) => {
                ok = false;
                let _ = writeln!(out, "{shown}: {err}");
                continue;
            }
        };
        if findings.is_empty() {
            let _ = writeln!(
                out,
                "{shown}: no Canary, MetricTemplate or serin-proxy configuration found"
            );
        }
        for finding in findings {
            match finding {
                Finding::Object(report) if report.is_valid() => {
                    let _ = writeln!(out, "{shown}: {report}: ok");
                }
                Finding::Object(report) => {
                    ok = false;
                    for problem in &report.problems {
                        let _ = writeln!(out, "{shown}: {report}: {problem}");
                    }
                }
                Finding::Unreadable { message, .. } => {
                    ok = false;
                    let _ = writeln!(out, "{shown}: {message}");
                }
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_INVALID)
    }
}

fn crds(dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    match dir {
        None => {
            let yaml = crd::crds_yaml()?;
            std::io::stdout()
                .lock()
                .write_all(yaml.as_bytes())
                .context("writing to stdout")?;
        }
        Some(dir) => {
            for file in crd::crd_files()? {
                let path = dir.join(file.file_name);
                std::fs::write(&path, file.yaml)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn demo(
    scenario: serin_cli::demo::Scenario,
    out: Option<PathBuf>,
    rate: u32,
) -> anyhow::Result<ExitCode> {
    use std::io::IsTerminal;
    let out = match out {
        Some(out) => out,
        None => serin_cli::demo::default_out()?,
    };
    let options = serin_cli::demo::DemoOptions {
        scenario,
        out,
        rate,
        live: std::io::stdout().is_terminal(),
    };
    if let Err(e) = serin_cli::demo::check_options(&options) {
        eprintln!("serin demo: {e}");
        return Ok(ExitCode::from(EXIT_USAGE));
    }
    let outcome = runtime()?.block_on(serin_cli::demo::run(&options, |line| println!("{line}")))?;
    let expected = scenario.expected();
    let ended = outcome
        .phase
        .map_or("unfinished".to_owned(), |p| format!("{p:?}"));
    println!(
        "release ended {ended} after {:.1}s (the {scenario:?} scenario expects {expected:?})",
        outcome.elapsed.as_secs_f64()
    );
    Ok(if outcome.phase == Some(expected) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_INVALID)
    })
}

fn rollout(
    canary: &Path,
    routes: PathBuf,
    proxy_admin: Vec<String>,
    exit_when_done: bool,
) -> anyhow::Result<ExitCode> {
    use serin_cli::standalone::Engine;
    use std::sync::Arc;
    // Everything the engine needs is checked before it starts: a release must not begin
    // (traffic shifted, then rolled back for want of metrics) on a configuration that cannot
    // work.
    let config_error = |message: String| {
        eprintln!("serin rollout: {message}");
        Ok(ExitCode::from(EXIT_USAGE))
    };
    let shown = canary.display();
    let text = match std::fs::read_to_string(canary) {
        Ok(text) => text,
        Err(e) => return config_error(format!("--canary {shown}: cannot read: {e}")),
    };
    let canary_object = match manifest::load_canary(&text) {
        Ok(object) => object,
        Err(e) => return config_error(format!("--canary {shown}: {e}")),
    };
    if !routes.is_dir() {
        return config_error(format!(
            "--routes {}: not found or not a directory",
            routes.display()
        ));
    }
    let name = canary_object.metadata.name.clone().unwrap_or_default();
    let state = routes.join(".serin").join(format!("{name}.json"));
    let runtime = runtime()?;
    runtime.block_on(async move {
        let provider = match serin_controller::provider::builtin::BuiltinProvider::new(&proxy_admin)
        {
            Ok(provider) => Arc::new(provider),
            Err(e) => return config_error(format!("--proxy-admin: {e}")),
        };
        let mut engine = match Engine::new(
            canary_object,
            routes,
            state,
            provider.clone(),
            Arc::new(serin_controller::webhook_client::HttpWebhookClient::new()),
        ) {
            Ok(engine) => engine,
            Err(e) => return config_error(format!("--canary {shown}: {e}")),
        };
        if let Err(e) = engine.check_target() {
            return config_error(format!("--routes: {e}"));
        }
        // The first scrape proves the admin addresses answer, and starts the history every
        // metric window is measured from.
        if let Err(e) = provider.scrape().await {
            eprintln!(
                "serin rollout: --proxy-admin: cannot read serin-proxy metrics: {:#}; is \
                 serin-proxy running with that admin address?",
                anyhow::Error::from(e)
            );
            return Ok(ExitCode::from(EXIT_INVALID));
        }
        tokio::spawn(
            provider
                .clone()
                .scrape_every(std::time::Duration::from_secs(1)),
        );
        let mut releasing = false;
        let mut failures = 0;
        loop {
            let report = match engine.step(serin_controller::Timestamp::now()).await {
                Ok(report) => {
                    failures = 0;
                    report
                }
                Err(e) => {
                    eprintln!("serin rollout: {e}");
                    // A long-running engine waits for the operator to fix the directory; one
                    // that is to exit when done gives up once the problem persists.
                    failures += 1;
                    if exit_when_done && failures >= STEP_FAILURES_BEFORE_EXIT {
                        eprintln!(
                            "serin rollout: giving up after {failures} failed steps in a row"
                        );
                        return Ok(ExitCode::from(EXIT_USAGE));
                    }
                    tokio::time::sleep(engine.settings().interval).await;
                    continue;
                }
            };
            for event in report.plan.events.iter().chain(&report.events) {
                println!("{:?}  {}", event.event_type, event.message);
            }
            use serin_controller::Phase;
            match engine.status().phase {
                Some(
                    Phase::Progressing
                    | Phase::Waiting
                    | Phase::WaitingPromotion
                    | Phase::Promoting
                    | Phase::Finalising,
                ) => {
                    releasing = true;
                }
                Some(Phase::Succeeded) if releasing && exit_when_done => {
                    return Ok(ExitCode::SUCCESS);
                }
                Some(Phase::Failed) if releasing && exit_when_done => {
                    return Ok(ExitCode::from(EXIT_INVALID));
                }
                _ => {}
            }
            tokio::time::sleep(report.plan.requeue_after).await;
        }
    })
}
