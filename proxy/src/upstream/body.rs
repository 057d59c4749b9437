//! A backend's response body, read from its connection by whoever polls it.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{HeaderMap, Response};
use http_body::{Body, Frame, SizeHint};

use super::wire::{Chunked, Decoded, RawFields, ResponseFraming, ResponseHead};
use super::{ExchangeError, Lease};

/// The body of a response from [`super::Upstream::send`]. The connection goes back to its pool
/// as soon as the last byte has been received (before the caller has seen it, when the whole
/// body came with the head); dropping the body before that closes the connection.
pub struct UpstreamBody {
    /// Bytes already received, handed out first.
    ready: Option<Bytes>,
    state: State,
    /// The connection the rest arrives on; `None` once the body is complete.
    lease: Option<Lease>,
    /// Whether the connection can be reused once the body is complete.
    keep_alive: bool,
    /// Why the body cannot be completed, reported on the poll after the one that found out.
    error: Option<ExchangeError>,
    /// The response's header fields, when they were kept as received (see [`RawFields`]).
    raw: Option<RawFields>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// This many bytes still to arrive (after `ready`).
    Length(u64),
    Chunked(Chunked),
    /// Until the backend closes the connection.
    Close,
    Done,
    /// The body cannot be completed; see [`UpstreamBody::error`].
    Failed,
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("state", &self.state)
            .field("ready", &self.ready.as_ref().map(Bytes::len))
            .finish_non_exhaustive()
    }
}

impl UpstreamBody {
    /// The response for `head`, whose body is in `lease`'s read buffer and on its socket.
    pub(super) fn response(head: ResponseHead, mut lease: Lease) -> Response<UpstreamBody> {
        let read = &mut lease.conn.read;
        let (ready, state) = match head.framing {
            ResponseFraming::Empty => (None, State::Done),
            ResponseFraming::Length(n) => {
                let take = n.min(read.len() as u64);
                let ready = (take > 0).then(|| read.split_to(take as usize).freeze());
                let state = match n - take {
                    0 => State::Done,
                    left => State::Length(left),
                };
                (ready, state)
            }
            ResponseFraming::Chunked => (None, State::Chunked(Chunked::Size)),
            ResponseFraming::Close => {
                let ready = (!read.is_empty()).then(|| read.split().freeze());
                (ready, State::Close)
            }
        };
        let mut body = UpstreamBody {
            ready,
            state,
            lease: Some(lease),
            keep_alive: head.keep_alive,
            error: None,
            raw: head.raw,
        };
        if body.state == State::Done {
            body.finish();
        }
        let mut response = Response::new(body);
        *response.status_mut() = head.status;
        *response.version_mut() = head.version;
        *response.headers_mut() = head.headers;
        if let Some(reason) = head.reason {
            response.extensions_mut().insert(reason);
        }
        response
    }

    /// The response's header fields kept as received, if they were: the response's header map
    /// holds only what was added to it since.
    pub fn raw_fields(&self) -> Option<&RawFields> {
        self.raw.as_ref()
    }

    /// Moves the fields kept as received into `headers` (before anything added to it), so that
    /// the map holds every field of the response.
    pub fn merge_fields_into(&mut self, headers: &mut HeaderMap) {
        if let Some(raw) = self.raw.take() {
            let added = std::mem::take(headers);
            raw.merge_into(headers);
            for (name, value) in added {
                if let Some(name) = name {
                    headers.append(name, value);
                }
            }
        }
    }

    /// The last byte has arrived: the connection goes back to its pool, or is closed.
    fn finish(&mut self) {
        self.state = State::Done;
        if let Some(lease) = self.lease.take()
            && self.keep_alive
        {
            lease.release();
        }
    }

    /// The body cannot be completed: the connection is closed, and the error reported on the
    /// next poll. A server sends what it has buffered (the head, the bytes received so far) only
    /// when the body has nothing ready, and drops it on an error: so the client gets what did
    /// arrive, then sees the response cut short.
    fn fail(
        &mut self,
        error: ExchangeError,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ExchangeError>>> {
        self.state = State::Failed;
        self.lease = None;
        self.error = Some(error);
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = ExchangeError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ExchangeError>>> {
        let this = self.get_mut();
        if let Some(data) = this.ready.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if let Some(error) = this.error.take() {
            return Poll::Ready(Some(Err(error)));
        }
        loop {
            let Some(lease) = this.lease.as_mut() else {
                return Poll::Ready(None);
            };
            let conn = &mut lease.conn;
            match &mut this.state {
                State::Done | State::Failed => return Poll::Ready(None),
                State::Length(left) => {
                    if !conn.read.is_empty() {
                        let take = (*left).min(conn.read.len() as u64);
                        let data = conn.read.split_to(take as usize).freeze();
                        *left -= take;
                        if *left == 0 {
                            this.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                State::Chunked(decoder) => match decoder.decode(&mut conn.read) {
                    Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Decoded::Trailers(trailers)) => {
                        // The empty line after the trailers has been consumed too.
                        this.finish();
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                    Ok(Decoded::End) => {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::NeedMore) => {}
                    Err(e) => return this.fail(ExchangeError::Chunked(e), cx),
                },
                State::Close => {
                    if !conn.read.is_empty() {
                        let data = conn.read.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
            }
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if this.state == State::Close => {
                    this.state = State::Done;
                    this.lease = None;
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail(ExchangeError::ClosedInBody, cx),
                Ok(_) => {}
                Err(e) => return this.fail(ExchangeError::Read(e), cx),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ready.is_none() && self.state == State::Done
    }

    fn size_hint(&self) -> SizeHint {
        let ready = self.ready.as_ref().map_or(0, |b| b.len() as u64);
        match self.state {
            State::Done => SizeHint::with_exact(ready),
            State::Length(left) => SizeHint::with_exact(ready + left),
            State::Chunked(_) | State::Close | State::Failed => {
                let mut hint = SizeHint::new();
                hint.set_lower(ready);
                hint
            }
        }
    }
}
