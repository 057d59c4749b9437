//! `serin-testapp`: parse the flags and env, serve until SIGTERM or SIGINT, drain, exit 0.
//! Exit status 64 for anything wrong at start-up (flags, env values, ports).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::error::ErrorKind;
use serin_testapp::{Config, Error};

/// Exit code for bad configuration (BSD `EX_USAGE`).
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let config = match Config::from_env_and_args(std::env::args_os()) {
        Ok(config) => config,
        Err(Error::Args(e)) if matches!(e.kind(), ErrorKind::DisplayHelp) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(Error::Args(e)) => {
            let _ = e.print();
            return ExitCode::from(EXIT_USAGE);
        }
        Err(e) => return fail(e.into()),
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match serve(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn serve(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let shutdown = shutdown_signal()?;
        serin_testapp::run(config, shutdown).await?;
        Ok(())
    })
}

/// Completes at the first SIGTERM or SIGINT.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

fn fail(error: anyhow::Error) -> ExitCode {
    eprintln!("serin-testapp: {error:#}");
    ExitCode::from(EXIT_USAGE)
}
