//! `serin`: the command-line tool. `serin validate FILE...` checks Canary and MetricTemplate
//! manifests with the controller's own validation; `serin crds` prints the CRDs.
//!
//! Exit codes: 0 success, 1 invalid input (or a file that cannot be read or written),
//! 64 usage error.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context;
use clap::{Parser, Subcommand, error::ErrorKind};
use serin_controller::{
    Error, crd,
    manifest::{self, Finding},
};

/// Exit code for invalid input.
const EXIT_INVALID: u8 = 1;
/// Exit code for usage errors (BSD `EX_USAGE`).
const EXIT_USAGE: u8 = 64;

/// Serin: sidecar-free canary delivery.
#[derive(Debug, Parser)]
#[command(name = "serin", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check Canary and MetricTemplate manifests (multi-document YAML).
    ///
    /// Prints `FILE: Canary NAMESPACE/NAME: ok` for each valid object and one line per
    /// problem otherwise; exits 1 if any object is invalid or any file unreadable.
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
            let _ = writeln!(out, "{shown}: no Canary or MetricTemplate found");
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
