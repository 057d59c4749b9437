//! The app's settings: the command line (each flag also read from its env variable) and the
//! fault settings, read from the environment only so that a bad release is a Deployment's env.

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use clap::Parser;

use crate::duration::parse_go_duration;
use crate::error::{Error, Result};

/// Port served when none is given: podinfo's.
pub const DEFAULT_PORT: u16 = 9898;

/// A podinfo-compatible test app.
#[derive(Debug, Parser)]
#[command(name = "serin-testapp")]
struct Args {
    /// Address to bind.
    #[arg(long, env = "HOST", default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port to serve on; repeat it (or separate with commas) to serve the same app on several.
    #[arg(
        long = "port",
        env = "PORT",
        value_delimiter = ',',
        default_value = "9898"
    )]
    ports: Vec<u16>,
    /// The version the app reports.
    #[arg(long, env = "APP_VERSION", default_value = "0.0.0")]
    version: String,
    /// The host name the app reports (default: this machine's).
    #[arg(long, env = "HOSTNAME")]
    hostname: Option<String>,
}

/// Everything the app needs to start.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Address to bind.
    pub host: IpAddr,
    /// Ports to serve on (0 picks a free one); the same app answers on each.
    pub ports: Vec<u16>,
    /// What the app answers.
    pub app: AppConfig,
}

/// What the app reports and how it misbehaves; shared by every port it serves.
#[derive(Clone, Debug, PartialEq)]
pub struct AppConfig {
    /// Reported as `version` and in the `x-app-version` header.
    pub version: String,
    /// Reported as `hostname`.
    pub hostname: String,
    /// Reported as `message`.
    pub message: String,
    /// Injected faults.
    pub faults: Faults,
}

/// Faults the app injects: how a bad release behaves.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Faults {
    /// Share of requests to `/` and `/version` answered 500, in percent (0..=100).
    pub error_percent: f64,
    /// Added before each answer to `/`.
    pub delay: Duration,
    /// `/readyz` answers 503 from the start (until `POST /readyz/enable`).
    pub not_ready: bool,
}

impl Config {
    /// Reads the command line `args` (program name first) and the process environment.
    ///
    /// `--help` comes back as [`Error::Args`] too; its `kind()` tells it apart.
    pub fn from_env_and_args<I, T>(args: I) -> Result<Self>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let args = Args::try_parse_from(args)?;
        let env = |name: &str| std::env::var(name).ok();
        let hostname = args.hostname.unwrap_or_else(machine_hostname);
        Ok(Self {
            host: args.host,
            ports: args.ports,
            app: AppConfig {
                message: env("PODINFO_UI_MESSAGE")
                    .unwrap_or_else(|| default_message(&args.version)),
                version: args.version,
                hostname,
                faults: Faults::from_lookup(env)?,
            },
        })
    }
}

impl Default for Config {
    /// Loopback, podinfo's port, version `0.0.0`, no faults.
    fn default() -> Self {
        Self {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            ports: vec![DEFAULT_PORT],
            app: AppConfig::new("0.0.0"),
        }
    }
}

impl AppConfig {
    /// Version `version` with podinfo's default message, this machine's host name and no
    /// faults.
    pub fn new(version: impl Into<String>) -> Self {
        let version = version.into();
        Self {
            message: default_message(&version),
            version,
            hostname: machine_hostname(),
            faults: Faults::default(),
        }
    }

    /// The same app with these faults.
    pub fn with_faults(self, faults: Faults) -> Self {
        Self { faults, ..self }
    }
}

impl Faults {
    /// Reads `FAULT_ERROR_PERCENT`, `FAULT_DELAY` and `FAULT_NOT_READY` through `lookup`
    /// (a variable that is absent or empty means no fault). An invalid value is an
    /// [`Error::Env`] naming the variable and the value.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        Ok(Self {
            error_percent: read(&lookup, "FAULT_ERROR_PERCENT", parse_percent)?.unwrap_or(0.0),
            delay: read(&lookup, "FAULT_DELAY", parse_go_duration)?.unwrap_or_default(),
            not_ready: read(&lookup, "FAULT_NOT_READY", parse_bool)?.unwrap_or(false),
        })
    }
}

/// Reads and parses one variable; absent or empty is `None`.
fn read<T>(
    lookup: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
    parse: impl Fn(&str) -> Result<T>,
) -> Result<Option<T>> {
    let Some(value) = lookup(variable).filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    parse(value.trim()).map(Some).map_err(|source| Error::Env {
        variable,
        value,
        source: Box::new(source),
    })
}

fn default_message(version: &str) -> String {
    format!("greetings from podinfo v{version}")
}

fn parse_percent(value: &str) -> Result<f64> {
    let percent: f64 = value.parse().map_err(Error::Number)?;
    if (0.0..=100.0).contains(&percent) {
        Ok(percent)
    } else {
        Err(Error::Percent)
    }
}

fn parse_bool(value: &str) -> Result<bool> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(Error::Bool),
    }
}

/// This machine's host name, as Go's `os.Hostname` reads it on Linux.
fn machine_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests;
