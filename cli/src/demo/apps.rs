//! The demo's two app versions and its acceptance-test hook: serin-testapp (the app the test
//! cluster runs for podinfo) served in-process on loopback.

use std::net::{Ipv4Addr, SocketAddr};

use serin_testapp::{App, AppConfig, Faults, Server};

use serin_controller::error::{Error, Result};

/// Starts `version` of the app with `faults`.
pub(crate) async fn start(version: &str, faults: Faults) -> Result<Server> {
    serve(AppConfig::new(version).with_faults(faults)).await
}

/// Starts the acceptance-test hook: a healthy app; its `/status/200` (see [`webhook_url`])
/// answers 200 to every call.
pub(crate) async fn start_webhook() -> Result<Server> {
    serve(AppConfig::new("acceptance-test")).await
}

/// The hook's URL on a server from [`start_webhook`].
pub(crate) fn webhook_url(hook: &Server) -> String {
    format!("http://{}/status/200", hook.local_addr())
}

async fn serve(config: AppConfig) -> Result<Server> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| serin_testapp::Error::Bind { addr, source })
        .map_err(demo_app)?;
    serin_testapp::serve(listener, App::new(config).map_err(demo_app)?).map_err(demo_app)
}

fn demo_app(e: serin_testapp::Error) -> Error {
    Error::DemoApp(e.to_string())
}
