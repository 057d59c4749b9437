//! serin-testapp: a podinfo-compatible test app.
//!
//! It stands for the `podinfo` image of Flagger's tutorials wherever Serin needs a real app to
//! release: the test cluster's node runs it for every Pod whose image is `.../podinfo:TAG` or
//! `serin.dev/testapp:TAG`, the end-to-end tests count which version answers, and `serin demo`
//! runs two versions of it in-process.
//!
//! It answers podinfo's endpoints with podinfo's JSON (`/`, `/version`, `/healthz`, `/readyz`
//! and their `enable`/`disable` switches, `/status/{code}`, `/delay/{seconds}`, `/headers`,
//! `/echo`), puts its version in an `x-app-version` header on every answer, and injects the
//! faults a bad release has ([`Faults`]: a share of 500s, added latency, not ready).
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use serin_testapp::{App, AppConfig, Faults};
//! let faulty = AppConfig::new("2.0.0").with_faults(Faults {
//!     error_percent: 20.0,
//!     ..Faults::default()
//! });
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let server = serin_testapp::serve(listener, App::new(faulty)?)?;
//! println!("v2 on {}", server.local_addr());
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! The server is hyper's HTTP/1.1 server with keep-alive; nothing here needs more than that.

mod app;
mod config;
mod duration;
mod error;
mod server;

pub use self::app::{App, MAX_DELAY, MAX_ECHO_BODY, VERSION_HEADER};
pub use self::config::{AppConfig, Config, DEFAULT_PORT, Faults};
pub use self::duration::parse_go_duration;
pub use self::error::{Error, Result};
pub use self::server::{DRAIN_TIMEOUT, Server, run, serve};
