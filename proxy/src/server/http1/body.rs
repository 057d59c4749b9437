//! A client's request body, read from its connection by whoever polls it.
//!
//! The body borrows the connection's read buffer while the request is in flight and hands it
//! back (with how far the body got) when dropped, so the connection can go on with what follows
//! it, or close when the body was left unread.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::net::TcpStream;

use crate::upstream::ChunkedError;
use crate::upstream::wire::{Chunked, Decoded};

/// The interim response sent before reading a body the client holds back for it.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Where a request body stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Progress {
    /// This many bytes still to come.
    Length(u64),
    Chunked(Chunked),
    Done,
    /// The body is malformed or its connection failed: the connection cannot be reused.
    Failed,
}

/// What a dropped body hands back to its connection.
#[derive(Debug)]
pub(super) struct Returned {
    pub(super) read: BytesMut,
    pub(super) progress: Progress,
}

/// Where a body hands back the connection's read buffer.
pub(super) type Slot = Arc<Mutex<Option<Returned>>>;

/// Why a request body could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    #[error("reading the request body: {0}")]
    Io(#[source] io::Error),
    #[error("the client closed the connection before the end of the request body")]
    Closed,
    #[error("invalid chunked request body: {0}")]
    Chunked(#[source] ChunkedError),
}

/// The body of a request received over HTTP/1.1.
pub struct Http1Body {
    io: Arc<TcpStream>,
    read: BytesMut,
    progress: Progress,
    /// Bytes of [`CONTINUE`] already written, while it is owed (`Expect: 100-continue`).
    owed_continue: Option<usize>,
    slot: Slot,
}

impl std::fmt::Debug for Http1Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http1Body")
            .field("progress", &self.progress)
            .field("buffered", &self.read.len())
            .finish_non_exhaustive()
    }
}

impl Http1Body {
    /// A body framed by `progress` whose first bytes may be in `read`; it hands `read` back
    /// through `slot` when dropped.
    pub(super) fn new(
        io: Arc<TcpStream>,
        read: BytesMut,
        progress: Progress,
        expect_continue: bool,
        slot: Slot,
    ) -> Http1Body {
        Http1Body {
            io,
            // A client that sent body bytes already is not waiting for the interim response.
            owed_continue: (expect_continue && read.is_empty()).then_some(0),
            read,
            progress,
            slot,
        }
    }

    fn poll_continue(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), RequestBodyError>> {
        while let Some(written) = self.owed_continue {
            match self.io.try_write(&CONTINUE[written..]) {
                Ok(n) if written + n == CONTINUE.len() => self.owed_continue = None,
                Ok(0) => return Poll::Ready(Err(RequestBodyError::Closed)),
                Ok(n) => self.owed_continue = Some(written + n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.io.poll_write_ready(cx)).map_err(RequestBodyError::Io)?;
                }
                Err(e) => return Poll::Ready(Err(RequestBodyError::Io(e))),
            }
        }
        Poll::Ready(Ok(()))
    }

    fn fail(
        &mut self,
        e: RequestBodyError,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        self.progress = Progress::Failed;
        Poll::Ready(Some(Err(e)))
    }
}

impl Body for Http1Body {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        let this = self.get_mut();
        if let Err(e) = ready!(this.poll_continue(cx)) {
            return this.fail(e);
        }
        loop {
            match &mut this.progress {
                Progress::Done | Progress::Failed => return Poll::Ready(None),
                Progress::Length(left) => {
                    if !this.read.is_empty() {
                        let take = (*left).min(this.read.len() as u64);
                        let data = this.read.split_to(take as usize).freeze();
                        *left -= take;
                        if *left == 0 {
                            this.progress = Progress::Done;
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Progress::Chunked(decoder) => match decoder.decode(&mut this.read) {
                    Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Decoded::Trailers(trailers)) => {
                        this.progress = Progress::Done;
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                    Ok(Decoded::End) => {
                        this.progress = Progress::Done;
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::NeedMore) => {}
                    Err(e) => return this.fail(RequestBodyError::Chunked(e)),
                },
            }
            match ready!(super::poll_fill(&this.io, &mut this.read, cx)) {
                Ok(0) => return this.fail(RequestBodyError::Closed),
                Ok(_) => {}
                Err(e) => return this.fail(RequestBodyError::Io(e)),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.progress == Progress::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.progress {
            Progress::Length(left) => SizeHint::with_exact(left),
            Progress::Done => SizeHint::with_exact(0),
            Progress::Chunked(_) | Progress::Failed => SizeHint::new(),
        }
    }
}

impl Drop for Http1Body {
    fn drop(&mut self) {
        let returned = Returned {
            read: std::mem::take(&mut self.read),
            progress: self.progress,
        };
        if let Ok(mut slot) = self.slot.lock() {
            *slot = Some(returned);
        }
    }
}

/// Consumes what is left of a body from `read` without waiting for more: true if the body
/// ended there, so the next request follows.
pub(super) fn discard(read: &mut BytesMut, progress: Progress) -> bool {
    match progress {
        Progress::Done => true,
        Progress::Failed => false,
        Progress::Length(left) => {
            if left > read.len() as u64 {
                return false;
            }
            read.advance(left as usize);
            true
        }
        Progress::Chunked(mut decoder) => loop {
            match decoder.decode(read) {
                Ok(Decoded::End) => return true,
                Ok(Decoded::Data(_) | Decoded::Trailers(_)) => {}
                Ok(Decoded::NeedMore) | Err(_) => return false,
            }
        },
    }
}
