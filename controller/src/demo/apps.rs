//! The demo's two app versions and its acceptance-test webhook: small HTTP servers on loopback.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::task::JoinHandle;

/// How an app version answers.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Behaviour {
    /// Share of requests answered 500, 0..=1.
    pub error_ratio: f64,
    /// Added before every answer.
    pub delay: Duration,
}

/// A running server; stops when dropped.
pub(crate) struct Server {
    pub(crate) port: u16,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts version `name` of the app.
pub(crate) async fn start(name: &'static str, behaviour: Behaviour) -> std::io::Result<Server> {
    serve(move || async move {
        if !behaviour.delay.is_zero() {
            tokio::time::sleep(behaviour.delay).await;
        }
        let (status, body) = if fastrand::f64() < behaviour.error_ratio {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("podinfo {name}: internal error\n"),
            )
        } else {
            (StatusCode::OK, format!("podinfo {name}\n"))
        };
        (status, body)
    })
    .await
}

/// Starts the acceptance-test hook: it answers 200 to every call.
pub(crate) async fn start_webhook() -> std::io::Result<Server> {
    serve(|| async { (StatusCode::OK, "acceptance tests passed\n".to_owned()) }).await
}

async fn serve<F, Fut>(answer: F) -> std::io::Result<Server>
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = (StatusCode, String)> + Send,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let answer = answer.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_req| {
                    let answer = answer.clone();
                    async move {
                        let (status, body) = answer().await;
                        let mut response = Response::new(Full::new(Bytes::from(body)));
                        *response.status_mut() = status;
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(Server { port, task })
}
