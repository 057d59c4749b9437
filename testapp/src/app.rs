//! The app itself: podinfo's endpoints and JSON shapes, the injected faults, and the
//! run-time health and readiness switches. One [`App`] answers on every port it is served on.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::{Map, Value, json};

use crate::config::AppConfig;
use crate::error::{Error, Result};

/// The header every answer carries: the app's version, for load generators that count
/// versions without parsing bodies.
pub const VERSION_HEADER: &str = "x-app-version";
/// The longest `/delay/{seconds}` wait.
pub const MAX_DELAY: Duration = Duration::from_secs(60);
/// The largest body `/echo` takes.
pub const MAX_ECHO_BODY: usize = 1 << 20;

const LOGO: &str =
    "https://raw.githubusercontent.com/stefanprodan/podinfo/gh-pages/cuddle_clap.gif";
const COLOR: &str = "#34577c";

/// A running app's state; cheap to clone, and clones share their health and readiness.
#[derive(Clone, Debug)]
pub struct App {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: AppConfig,
    version_header: HeaderValue,
    /// `GET /` body, built once.
    info: Bytes,
    healthy: AtomicBool,
    ready: AtomicBool,
}

/// Where a request goes, before its method is checked.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Route<'a> {
    Info,
    Version,
    Healthz,
    Readyz,
    SetHealthy(bool),
    SetReady(bool),
    Status(&'a str),
    Delay(&'a str),
    Headers,
    Echo,
}

impl App {
    /// An app answering as `config` says. Fails if the version cannot be sent as a header.
    pub fn new(config: AppConfig) -> Result<Self> {
        let version_header =
            HeaderValue::from_str(&config.version).map_err(|source| Error::Version {
                version: config.version.clone(),
                source,
            })?;
        let info = json!({
            "hostname": config.hostname,
            "version": config.version,
            "revision": "",
            "color": COLOR,
            "logo": LOGO,
            "message": config.message,
            "goos": go_os(),
            "goarch": go_arch(),
            "runtime": "serin-testapp",
            "num_goroutine": "1",
            "num_cpu": std::thread::available_parallelism().map_or(1, |n| n.get()).to_string(),
        });
        Ok(Self {
            inner: Arc::new(Inner {
                version_header,
                info: Bytes::from(info.to_string()),
                healthy: AtomicBool::new(true),
                ready: AtomicBool::new(!config.faults.not_ready),
                config,
            }),
        })
    }

    /// The settings the app was built with.
    pub fn config(&self) -> &AppConfig {
        &self.inner.config
    }

    /// Answers one request; never fails (errors are answers).
    pub async fn handle<B>(&self, request: Request<B>) -> Result<Response<Full<Bytes>>, Infallible>
    where
        B: hyper::body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let mut response = self.answer(request).await;
        response
            .headers_mut()
            .insert(VERSION_HEADER, self.inner.version_header.clone());
        Ok(response)
    }

    async fn answer<B>(&self, request: Request<B>) -> Response<Full<Bytes>>
    where
        B: hyper::body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let path = request.uri().path().to_owned();
        let Some(route) = Route::of(&path) else {
            return status_answer(StatusCode::NOT_FOUND);
        };
        let method = request.method();
        let allowed = route.methods();
        if !allowed.is_empty() && !allowed.contains(method) {
            let mut response = status_answer(StatusCode::METHOD_NOT_ALLOWED);
            let allow = allowed
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            if let Ok(allow) = HeaderValue::from_str(&allow) {
                response.headers_mut().insert(ALLOW, allow);
            }
            return response;
        }
        let inner = &self.inner;
        let faults = inner.config.faults;
        match route {
            Route::Info => {
                if !faults.delay.is_zero() {
                    tokio::time::sleep(faults.delay).await;
                }
                self.fault()
                    .unwrap_or_else(|| json_bytes(StatusCode::OK, inner.info.clone()))
            }
            Route::Version => self.fault().unwrap_or_else(|| {
                json_answer(
                    StatusCode::OK,
                    &json!({"commit": "", "version": inner.config.version}),
                )
            }),
            Route::Healthz => switch_answer(&inner.healthy, "not healthy"),
            Route::Readyz => switch_answer(&inner.ready, "not ready"),
            Route::SetHealthy(on) => set_switch(&inner.healthy, on, "healthy"),
            Route::SetReady(on) => set_switch(&inner.ready, on, "ready"),
            Route::Status(code) => {
                match code.parse::<u16>().ok().filter(|c| (200..=599).contains(c)) {
                    Some(code) => {
                        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
                        json_answer(status, &json!({ "status": code }))
                    }
                    None => json_answer(
                        StatusCode::BAD_REQUEST,
                        &json!({"status": 400, "message": "the status code must be 200..=599"}),
                    ),
                }
            }
            Route::Delay(seconds) => {
                match seconds
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s >= 0.0)
                {
                    Some(seconds) => {
                        let wait = Duration::from_secs_f64(seconds).min(MAX_DELAY);
                        tokio::time::sleep(wait).await;
                        json_answer(
                            StatusCode::OK,
                            &json!({ "delay": number(wait.as_secs_f64()) }),
                        )
                    }
                    None => json_answer(
                        StatusCode::BAD_REQUEST,
                        &json!({"status": 400, "message": "the delay must be a number of seconds"}),
                    ),
                }
            }
            Route::Headers => {
                let mut headers = Map::new();
                for (name, value) in request.headers() {
                    let entry = headers
                        .entry(canonical(name))
                        .or_insert_with(|| Value::Array(Vec::new()));
                    if let Value::Array(values) = entry {
                        values.push(Value::String(
                            String::from_utf8_lossy(value.as_bytes()).into_owned(),
                        ));
                    }
                }
                json_answer(StatusCode::OK, &Value::Object(headers))
            }
            Route::Echo => {
                let content_type = request.headers().get(CONTENT_TYPE).cloned();
                match Limited::new(request.into_body(), MAX_ECHO_BODY)
                    .collect()
                    .await
                {
                    Ok(body) => {
                        // podinfo answers 202 with the body as sent.
                        let mut response = Response::new(Full::new(body.to_bytes()));
                        *response.status_mut() = StatusCode::ACCEPTED;
                        let content_type = content_type
                            .unwrap_or(HeaderValue::from_static("application/octet-stream"));
                        response.headers_mut().insert(CONTENT_TYPE, content_type);
                        response
                    }
                    Err(e) => {
                        let status = if e.is::<http_body_util::LengthLimitError>() {
                            StatusCode::PAYLOAD_TOO_LARGE
                        } else {
                            StatusCode::BAD_REQUEST
                        };
                        tracing::debug!(error = %e, "echo body not read");
                        status_answer(status)
                    }
                }
            }
        }
    }

    /// A 500 for the share of requests `FAULT_ERROR_PERCENT` asks for.
    fn fault(&self) -> Option<Response<Full<Bytes>>> {
        let percent = self.inner.config.faults.error_percent;
        (percent > 0.0 && fastrand::f64() * 100.0 < percent).then(|| {
            json_answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({"status": 500, "message": "injected fault (FAULT_ERROR_PERCENT)"}),
            )
        })
    }
}

impl<'a> Route<'a> {
    fn of(path: &'a str) -> Option<Self> {
        Some(match path {
            "/" | "/api/info" => Route::Info,
            "/version" => Route::Version,
            "/healthz" => Route::Healthz,
            "/readyz" => Route::Readyz,
            "/healthz/enable" => Route::SetHealthy(true),
            "/healthz/disable" => Route::SetHealthy(false),
            "/readyz/enable" => Route::SetReady(true),
            "/readyz/disable" => Route::SetReady(false),
            "/headers" => Route::Headers,
            "/echo" | "/api/echo" => Route::Echo,
            _ => {
                if let Some(code) = path.strip_prefix("/status/") {
                    Route::Status(code)
                } else if let Some(seconds) = path.strip_prefix("/delay/") {
                    Route::Delay(seconds)
                } else {
                    return None;
                }
            }
        })
    }

    /// The methods the route takes; empty for any.
    fn methods(self) -> &'static [Method] {
        const READ: &[Method] = &[Method::GET, Method::HEAD];
        match self {
            Route::Info | Route::Version | Route::Healthz | Route::Readyz => READ,
            Route::SetHealthy(_) | Route::SetReady(_) => &[Method::POST],
            Route::Echo => &[Method::POST, Method::PUT],
            Route::Status(_) | Route::Delay(_) | Route::Headers => &[],
        }
    }
}

fn switch_answer(switch: &AtomicBool, off: &str) -> Response<Full<Bytes>> {
    if switch.load(Ordering::Relaxed) {
        json_answer(StatusCode::OK, &json!({"status": "OK"}))
    } else {
        json_answer(StatusCode::SERVICE_UNAVAILABLE, &json!({ "status": off }))
    }
}

fn set_switch(switch: &AtomicBool, on: bool, name: &str) -> Response<Full<Bytes>> {
    switch.store(on, Ordering::Relaxed);
    tracing::info!("{name} set to {on}");
    json_answer(StatusCode::ACCEPTED, &json!({ name: on }))
}

fn status_answer(status: StatusCode) -> Response<Full<Bytes>> {
    json_answer(status, &json!({ "status": status.as_u16() }))
}

fn json_answer(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    json_bytes(status, Bytes::from(body.to_string()))
}

fn json_bytes(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    // A 204 or 304 has no body.
    let body = if matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED) {
        Bytes::new()
    } else {
        body
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Whole seconds print as integers, as podinfo's do.
fn number(seconds: f64) -> Value {
    if seconds.fract() == 0.0 && seconds <= u64::MAX as f64 {
        json!(seconds as u64)
    } else {
        json!(seconds)
    }
}

/// A header name as Go writes it (`x-canary` -> `X-Canary`), so `/headers` reads like
/// podinfo's.
fn canonical(name: &HeaderName) -> String {
    let mut upper = true;
    name.as_str()
        .chars()
        .map(|c| {
            let c = if upper { c.to_ascii_uppercase() } else { c };
            upper = c == '-';
            c
        })
        .collect()
}

fn go_os() -> &'static str {
    match std::env::consts::OS {
        "macos" => "darwin",
        other => other,
    }
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

#[cfg(test)]
mod tests;
