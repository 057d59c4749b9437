//! The bodies the proxy handles: a client's request body ([`ClientBody`]) and the response
//! body it sends ([`ProxyBody`]: the backend's body streamed through, optionally under a
//! deadline, or a short message the proxy writes itself).

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::server::http1::Http1Body;
use crate::upstream::{RawFields, UpstreamBody};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A body's next frame (`Some(None)` at its end); without `wait`, `None` at once if no frame
/// is ready. Writers gather what a body has ready and wait only when they have nothing to
/// write meanwhile.
pub(crate) async fn next_frame<B: Body + Unpin>(
    body: &mut B,
    wait: bool,
) -> Option<Option<Result<Frame<B::Data>, B::Error>>> {
    std::future::poll_fn(|cx| match Pin::new(&mut *body).poll_frame(cx) {
        Poll::Pending if !wait => Poll::Ready(None),
        Poll::Pending => Poll::Pending,
        Poll::Ready(frame) => Poll::Ready(Some(frame)),
    })
    .await
}

/// A client's request body, as its connection delivers it.
#[derive(Debug)]
pub enum ClientBody {
    /// The request has no body.
    Empty,
    /// Read from an HTTP/1.1 connection by whoever polls it.
    Http1(Http1Body),
    /// A stream of an h2c connection.
    Http2(hyper::body::Incoming),
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ClientBody::Empty => Poll::Ready(None),
            ClientBody::Http1(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            ClientBody::Http2(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Empty => true,
            ClientBody::Http1(body) => body.is_end_stream(),
            ClientBody::Http2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Empty => SizeHint::with_exact(0),
            ClientBody::Http1(body) => body.size_hint(),
            ClientBody::Http2(body) => body.size_hint(),
        }
    }
}

/// A response body.
#[derive(Debug)]
pub struct ProxyBody {
    inner: Inner,
}

// Boxing the usual variant would cost an allocation per response; `Message` is the rare one.
#[allow(clippy::large_enum_variant)]
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

    /// The backend's header fields kept as received, if they were (see [`RawFields`]).
    pub fn raw_fields(&self) -> Option<&RawFields> {
        match &self.inner {
            Inner::Upstream { body, .. } => body.raw_fields(),
            Inner::Message(_) => None,
        }
    }

    /// Moves the fields kept as received into `headers`, so that the map holds every field.
    pub fn merge_fields_into(&mut self, headers: &mut http::HeaderMap) {
        if let Inner::Upstream { body, .. } = &mut self.inner {
            body.merge_fields_into(headers);
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
