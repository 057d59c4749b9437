//! Applying configuration: compile, bind any new listener ports, swap the table, and the file
//! source that watches a path and applies each change.
//!
//! "Last good config wins": a configuration that does not compile (or whose ports cannot be
//! bound) is rejected with one log line naming the file, object and field, counted in
//! `serin_config_reloads_total{result="rejected"}`, and the previous table keeps serving.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::config::{self, Objects};
use crate::error::ConfigError;
use crate::forward::Proxy;
use crate::metrics::{ReloadResult, Telemetry};
use crate::server::Listeners;
use crate::table::{self, Problem, RouteTable};

/// Turns configuration into the serving state.
pub struct Applier {
    pub proxy: Arc<Proxy>,
    pub listeners: Listeners,
}

impl Applier {
    /// Compiles and applies `objects`. When `strict`, any [`Problem`] rejects the change (file
    /// mode); otherwise problems are returned for status reporting and the rest is served.
    pub fn apply(&mut self, objects: &Objects, strict: bool) -> Result<Vec<Problem>, ConfigError> {
        let result = self.try_apply(objects, strict);
        self.proxy.telemetry().metrics.reloaded(if result.is_ok() {
            ReloadResult::applied
        } else {
            ReloadResult::rejected
        });
        result
    }

    fn try_apply(&mut self, objects: &Objects, strict: bool) -> Result<Vec<Problem>, ConfigError> {
        let (table, problems) = table::compile(objects, &self.proxy.telemetry().metrics);
        if strict {
            refuse(&problems)?;
        }
        let ports: Vec<u16> = table.ports().collect();
        let bound = self.listeners.bind_new(ports.iter().copied())?;
        self.proxy.swap_table(Arc::new(table));
        self.listeners.commit(bound, &ports);
        Ok(problems)
    }
}

/// The error for a file-mode configuration with problems: file mode serves a configuration as
/// written or not at all.
fn refuse(problems: &[Problem]) -> Result<(), ConfigError> {
    let mut errors: Vec<ConfigError> = problems.iter().map(Problem::to_error).collect();
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(ConfigError::Many(errors)),
    }
}

/// A configuration checked by [`check`]: loaded and compiled as a file-mode proxy does.
#[derive(Debug)]
pub struct Checked {
    pub path: PathBuf,
    pub objects: Objects,
    /// Documents of kinds the proxy does not read.
    pub skipped: usize,
    pub table: RouteTable,
}

/// Loads and compiles the configuration at `path` exactly as a file-mode proxy does at
/// start-up and on reload, without binding any port (`serin-proxy --check`).
pub fn check(path: &Path) -> Result<Checked, ConfigError> {
    let (objects, skipped) = config::load_path(path)?;
    let telemetry = Telemetry::new();
    let (table, problems) = table::compile(&objects, &telemetry.metrics);
    refuse(&problems)?;
    Ok(Checked {
        path: path.to_owned(),
        objects,
        skipped,
        table,
    })
}

impl fmt::Display for Checked {
    /// A short summary: the listener ports, then each rule match in precedence order with its
    /// backends, weights and endpoints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: ok: {} gateways, {} routes, {} backends, {} session affinities, {} skipped",
            self.path.display(),
            self.objects.gateways.len(),
            self.objects.routes.len(),
            self.objects.backends.len(),
            self.objects.affinities.len(),
            self.skipped
        )?;
        let mut ports: Vec<u16> = self.table.ports().collect();
        ports.sort_unstable();
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        writeln!(f, "listeners: {}", ports.join(", "))?;
        for rule in self.table.summary() {
            write!(
                f,
                "  :{} {} {} rule {} [{}]",
                rule.port, rule.hostname, rule.route, rule.rule, rule.matcher
            )?;
            if let Some(ms) = rule.timeout_ms {
                write!(f, " timeout {ms}ms")?;
            }
            writeln!(f)?;
            if rule.backends.is_empty() {
                writeln!(f, "    -> no backend")?;
            }
            for b in &rule.backends {
                write!(f, "    -> {} weight {}", b.name, b.weight)?;
                if b.unresolved {
                    writeln!(f, " (unresolved)")?;
                } else {
                    writeln!(f, " ({})", b.endpoints.join(", "))?;
                }
            }
        }
        Ok(())
    }
}

/// A configuration file or directory, watched by polling its files' metadata.
///
/// Polling (default every 250 ms) catches every way a file can change, including editors'
/// write-and-rename and Kubernetes ConfigMap symlink swaps, at the cost of a few `stat` calls.
pub struct FileSource {
    path: PathBuf,
    interval: Duration,
}

type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>, u64)>;

impl FileSource {
    pub fn new(path: PathBuf, interval: Duration) -> FileSource {
        FileSource { path, interval }
    }

    /// Loads and applies the configuration once (start-up).
    pub fn load(&self, applier: &mut Applier) -> Result<(), ConfigError> {
        let (objects, skipped) = config::load_path(&self.path)?;
        applier.apply(&objects, true)?;
        tracing::info!(
            path = %self.path.display(),
            gateways = objects.gateways.len(),
            routes = objects.routes.len(),
            backends = objects.backends.len(),
            skipped,
            "configuration applied"
        );
        Ok(())
    }

    /// Applies every later change until `stop` completes.
    pub async fn watch(&self, applier: &mut Applier, stop: impl std::future::Future) {
        let mut last = fingerprint(&self.path);
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = &mut stop => return,
            }
            let now = fingerprint(&self.path);
            if now == last {
                continue;
            }
            last = now;
            match config::load_path(&self.path) {
                Ok((objects, _)) => match applier.apply(&objects, true) {
                    Ok(_) => {
                        tracing::info!(path = %self.path.display(), routes = objects.routes.len(), "configuration reloaded")
                    }
                    Err(e) => {
                        tracing::warn!("configuration rejected, keeping the last good table: {e}")
                    }
                },
                Err(e) => {
                    applier
                        .proxy
                        .telemetry()
                        .metrics
                        .reloaded(ReloadResult::rejected);
                    tracing::warn!("configuration rejected, keeping the last good table: {e}");
                }
            }
        }
    }
}

/// Name, size, modification time and inode of every configuration file under `path`.
fn fingerprint(path: &Path) -> Fingerprint {
    let files = config::config_files(path).unwrap_or_default();
    files
        .into_iter()
        .filter_map(|f| {
            let meta = std::fs::metadata(&f).ok()?;
            #[cfg(unix)]
            let inode = std::os::unix::fs::MetadataExt::ino(&meta);
            #[cfg(not(unix))]
            let inode = 0;
            Some((f, meta.len(), meta.modified().ok(), inode))
        })
        .collect()
}
