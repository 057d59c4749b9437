//! The response body the proxy sends: the backend's body streamed through (optionally under a
//! deadline), or a short message the proxy writes itself.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::upstream::UpstreamBody;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response body.
#[derive(Debug)]
pub struct ProxyBody {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Upstream {
        body: UpstreamBody,
        deadline: Option<Pin<Box<Sleep>>>,
    },
    Message(Option<Bytes>),
}

/// The response ran past the rule's request timeout while streaming.
#[derive(Debug, thiserror::Error)]
#[error("request timeout reached while streaming the response")]
pub struct BodyTimeout;

impl ProxyBody {
    /// Streams `body`, failing (and so resetting the client's stream) if it is not finished by
    /// `deadline`.
    pub fn upstream(body: UpstreamBody, deadline: Option<Instant>) -> ProxyBody {
        // A body already complete needs no deadline.
        let deadline = deadline.filter(|_| !body.is_end_stream());
        ProxyBody {
            inner: Inner::Upstream {
                body,
                deadline: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
            },
        }
    }

    pub fn message(text: &'static str) -> ProxyBody {
        ProxyBody {
            inner: Inner::Message(Some(Bytes::from_static(text.as_bytes()))),
        }
    }

    pub fn empty() -> ProxyBody {
        ProxyBody {
            inner: Inner::Message(None),
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().inner {
            Inner::Upstream { body, deadline } => {
                if let Poll::Ready(frame) = Pin::new(&mut *body).poll_frame(cx) {
                    return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
                }
                match deadline {
                    Some(d) => match d.as_mut().poll(cx) {
                        Poll::Ready(()) => Poll::Ready(Some(Err(BodyTimeout.into()))),
                        Poll::Pending => Poll::Pending,
                    },
                    None => Poll::Pending,
                }
            }
            Inner::Message(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Upstream { body, .. } => body.is_end_stream(),
            Inner::Message(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream { body, .. } => body.size_hint(),
            Inner::Message(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}
