//! The HTTP webhook client: delivers Flagger's JSON payload ([`WebhookPayload`]) to a hook's
//! URL and turns the answer into a [`HookResult`].
//!
//! Each call is one `POST` with `Content-Type: application/json`, bounded by the hook's
//! `timeout` (Flagger's defaults when unset: 10s, and 5s for `event` hooks). A 2xx status
//! passes; anything else fails with a message that says what happened, which the stage
//! machine quotes in its events:
//!
//! * a non-2xx status: `403 Forbidden: <the first bytes of the body>`;
//! * no complete answer in time: `request to URL timed out after 10s`;
//! * a connection error: `request to URL failed: ... Connection refused (os error 111)`.
//!
//! Redirects are not followed (a 3xx fails), and calls are not retried: the stage machine
//! asks again at the next interval.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::Full;
use tracing::{debug, warn};

use crate::{
    analysis::BoxFuture,
    canary::HookType,
    error::{Error, Result},
    provider::fetch::{Fetcher, Oversize, http_url, quote, report},
    stage::HookResult,
    validation::Webhook,
    webhook::{WebhookClient, WebhookPayload},
};

/// Flagger's timeout for hooks that set none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Flagger's timeout for `event` hooks that set none.
pub const DEFAULT_EVENT_TIMEOUT: Duration = Duration::from_secs(5);
/// How much of a failing hook's body its message quotes.
const QUOTED_BODY_BYTES: usize = 256;

/// Delivers webhooks over HTTP/1.1 with a pooled client.
#[derive(Clone, Debug)]
pub struct HttpWebhookClient {
    fetcher: Fetcher,
    default_timeout: Duration,
    default_event_timeout: Duration,
}

impl Default for HttpWebhookClient {
    fn default() -> Self {
        HttpWebhookClient::new()
    }
}

impl HttpWebhookClient {
    /// A client with Flagger's default timeouts.
    pub fn new() -> HttpWebhookClient {
        HttpWebhookClient {
            fetcher: Fetcher::new(),
            default_timeout: DEFAULT_TIMEOUT,
            default_event_timeout: DEFAULT_EVENT_TIMEOUT,
        }
    }

    /// Sets the timeout for hooks that set none (every type).
    #[must_use]
    pub fn with_default_timeout(mut self, timeout: Duration) -> HttpWebhookClient {
        self.default_timeout = timeout;
        self.default_event_timeout = timeout;
        self
    }

    /// The timeout a call to `hook` gets.
    pub fn timeout_for(&self, hook: &Webhook) -> Duration {
        hook.timeout.unwrap_or(match hook.hook_type {
            HookType::Event => self.default_event_timeout,
            _ => self.default_timeout,
        })
    }

    /// POSTs the encoded payload to `hook.url`; `Ok(None)` on a 2xx answer,
    /// `Ok(Some(reason))` on another status.
    async fn post(&self, hook: &Webhook, body: Vec<u8>) -> Result<Option<String>> {
        let url = http_url(&hook.url)?;
        let request = Request::builder()
            .method(Method::POST)
            .uri(url)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "*/*")
            .body(Full::new(Bytes::from(body)))
            .map_err(|err| Error::InvalidUrl {
                url: hook.url.clone(),
                reason: err.to_string(),
            })?;
        let fetched = self
            .fetcher
            .send(
                request,
                self.timeout_for(hook),
                QUOTED_BODY_BYTES,
                Oversize::Truncate,
            )
            .await?;
        if fetched.status.is_success() {
            return Ok(None);
        }
        let mut reason = fetched.status.to_string();
        let body = quote(&fetched.body, QUOTED_BODY_BYTES);
        if !body.is_empty() {
            reason.push_str(": ");
            reason.push_str(&body);
            if fetched.truncated && !reason.ends_with('…') {
                reason.push('…');
            }
        }
        Ok(Some(reason))
    }
}

impl WebhookClient for HttpWebhookClient {
    fn call<'a>(
        &'a self,
        hook: &'a Webhook,
        payload: &'a WebhookPayload,
    ) -> BoxFuture<'a, HookResult> {
        Box::pin(async move {
            let started = Instant::now();
            let outcome = match serde_json::to_vec(payload) {
                Ok(body) => self.post(hook, body).await,
                // Unreachable with string fields only; reported rather than assumed.
                Err(err) => Ok(Some(format!("cannot encode the payload: {err}"))),
            };
            let elapsed_ms = started.elapsed().as_millis();
            match outcome {
                Ok(None) => {
                    debug!(
                        hook = %hook.name,
                        hook_type = %hook.hook_type,
                        canary = %payload.name,
                        namespace = %payload.namespace,
                        elapsed_ms,
                        "webhook passed"
                    );
                    HookResult::Passed
                }
                Ok(Some(reason)) => {
                    debug!(
                        hook = %hook.name,
                        hook_type = %hook.hook_type,
                        canary = %payload.name,
                        namespace = %payload.namespace,
                        %reason,
                        elapsed_ms,
                        "webhook refused"
                    );
                    HookResult::Failed(reason)
                }
                Err(err) => {
                    let reason = report(&err);
                    warn!(
                        hook = %hook.name,
                        hook_type = %hook.hook_type,
                        canary = %payload.name,
                        namespace = %payload.namespace,
                        error = %reason,
                        elapsed_ms,
                        "webhook call failed"
                    );
                    HookResult::Failed(reason)
                }
            }
        })
    }
}
