//! Outbound HTTP for the controller's adapters (metric scrapes, Prometheus queries, webhooks):
//! one pooled hyper-util client, a deadline on every exchange and a bound on every body.
//!
//! Plain `http://` only: TLS to metric providers and webhooks is not wired up yet, and an
//! `https://` URL is rejected up front with an error that says so rather than failing later
//! in the connector.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tracing::debug;

use crate::error::{Error, Result};

/// What to do with a body larger than the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Oversize {
    /// Fail with [`Error::ResponseTooLarge`].
    Reject,
    /// Keep the first `limit` bytes and stop reading.
    Truncate,
}

/// A response read within the deadline.
#[derive(Debug)]
pub(crate) struct Fetched {
    /// The status code.
    pub(crate) status: StatusCode,
    /// The body, or its first `limit` bytes when truncated.
    pub(crate) body: Bytes,
    /// Whether the body was cut at the limit.
    pub(crate) truncated: bool,
}

/// A pooled HTTP/1.1 client.
#[derive(Clone, Debug)]
pub(crate) struct Fetcher {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Fetcher {
    /// A client with keep-alive pooling; every exchange gets its own deadline in [`send`].
    ///
    /// [`send`]: Fetcher::send
    pub(crate) fn new() -> Fetcher {
        Fetcher::build(true)
    }

    /// A client that opens a fresh connection for every exchange.
    pub(crate) fn unpooled() -> Fetcher {
        Fetcher::build(false)
    }

    fn build(pooled: bool) -> Fetcher {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let mut builder = Client::builder(TokioExecutor::new());
        builder.pool_idle_timeout(Duration::from_secs(30));
        if !pooled {
            builder.pool_max_idle_per_host(0);
        }
        Fetcher {
            client: builder.build(connector),
        }
    }

    /// Sends `request` and reads the response body, all within `timeout`. The body is
    /// bounded by `limit` bytes, handled as `oversize` says.
    pub(crate) async fn send(
        &self,
        request: Request<Full<Bytes>>,
        timeout: Duration,
        limit: usize,
        oversize: Oversize,
    ) -> Result<Fetched> {
        let url = request.uri().to_string();
        let method = request.method().clone();
        let started = Instant::now();
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|source| Error::Request {
                    url: url.clone(),
                    source: Box::new(source),
                })?;
            let status = response.status();
            let mut body = response.into_body();
            let mut buf = BytesMut::new();
            let mut truncated = false;
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|source| Error::Request {
                    url: url.clone(),
                    source: Box::new(source),
                })?;
                let Ok(data) = frame.into_data() else {
                    continue; // trailers
                };
                if buf.len() + data.len() > limit {
                    match oversize {
                        Oversize::Reject => {
                            return Err(Error::ResponseTooLarge {
                                url: url.clone(),
                                limit,
                            });
                        }
                        Oversize::Truncate => {
                            let room = limit - buf.len();
                            buf.extend_from_slice(&data[..room]);
                            truncated = true;
                            break;
                        }
                    }
                }
                buf.extend_from_slice(&data);
            }
            Ok(Fetched {
                status,
                body: buf.freeze(),
                truncated,
            })
        };
        let result = match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_elapsed) => Err(Error::Timeout {
                url: url.clone(),
                timeout,
            }),
        };
        let elapsed_ms = started.elapsed().as_millis();
        match &result {
            Ok(fetched) => {
                debug!(%method, %url, status = fetched.status.as_u16(), elapsed_ms, "http exchange")
            }
            Err(err) => {
                debug!(%method, %url, error = %report(err), elapsed_ms, "http exchange failed")
            }
        }
        result
    }
}

/// Parses `url` as an absolute `http://` URL with a host.
pub(crate) fn http_url(url: &str) -> Result<Uri> {
    let invalid = |reason: &str| Error::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: Uri = url
        .parse()
        .map_err(|err: http::uri::InvalidUri| invalid(&err.to_string()))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(invalid(
                "https is not supported yet: this client speaks plain HTTP",
            ));
        }
        Some(other) => return Err(invalid(&format!("unsupported scheme {other:?}"))),
        None => return Err(invalid("must be an absolute http:// URL")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid("missing host"));
    }
    Ok(uri)
}

/// The error with every source, `: `-separated (`request to http://... failed: client error
/// (Connect): tcp connect error: Connection refused (os error 111)`), for messages that end
/// up in events and status fields.
pub(crate) fn report(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Some errors repeat their source's text in their own; say it once.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The first `limit` bytes of `body` as one line of text.
pub(crate) fn quote(body: &[u8], limit: usize) -> String {
    let cut = body.len().min(limit);
    let mut text = String::from_utf8_lossy(&body[..cut]).into_owned();
    // A cut through a multi-byte character shows up as a trailing replacement character.
    if cut < body.len() {
        text = text.trim_end_matches('\u{fffd}').to_owned();
        text.push('…');
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(http_url("http://127.0.0.1:9090").is_ok());
        assert!(http_url("http://prometheus.monitoring:9090/prefix").is_ok());
        for (url, reason) in [
            ("https://prometheus:9090", "https is not supported"),
            ("ftp://x", "unsupported scheme"),
            ("/api/v1/query", "absolute"),
            ("http://", "invalid"),
        ] {
            let err = http_url(url)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains(reason), "{url}: {err}");
        }
    }

    #[test]
    fn report_walks_sources() {
        let err = Error::Request {
            url: "http://x/".into(),
            source: Box::new(std::io::Error::other("connection refused")),
        };
        assert_eq!(
            report(&err),
            "request to http://x/ failed: connection refused"
        );
    }

    #[test]
    fn quoting_bodies() {
        assert_eq!(quote(b"not\napproved  yet", 256), "not approved yet");
        assert_eq!(quote("ab\u{e9}cd".as_bytes(), 3), "ab…");
        assert_eq!(quote(b"", 10), "");
    }
}
