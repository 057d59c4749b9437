//! HTTP/1.1 client connections (RFC 9112), served by the connection's own task.
//!
//! ```text
//! read ─> parse head (httparse; header values share one buffer) ─> Request<ClientBody>
//!      ─> Proxy::serve (same task: routing, the upstream exchange)
//!      ─> response head + the body's ready bytes in one write ─> rest of the body streamed
//!      ─> next request (pipelined ones are already in the buffer), or close
//! ```
//!
//! Hand-written on httparse rather than on hyper's server: hyper's HTTP/1 dispatcher, its
//! header map building and its body channel cost more instructions per proxied request than the
//! rest of the request path together (`benches/callgrind`, README "Benchmarks"). h2c stays on
//! hyper ([`super::serve`] tells the two apart by the HTTP/2 preface).
//!
//! What the connection does on its own:
//!
//! - limits: a request head of at most [`MAX_HEAD`] bytes and [`MAX_HEADERS`] fields (431
//!   beyond), `--header-read-timeout` to receive a head, idle time between requests included;
//! - the request line: HTTP/1.0 and HTTP/1.1, a later HTTP/1 minor version served as HTTP/1.1
//!   (RFC 9110 §2.5), any other version 505; `CONNECT` is refused (405: the proxy opens no
//!   tunnels) and so is an authority-form target with any other method (400, RFC 9112 §3.2.3),
//!   an asterisk-form target with any method but OPTIONS (400, RFC 9112 §3.2.4), and an
//!   absolute-form target with user information (400, RFC 9110 §4.2.4). An
//!   absolute-form target is routed by its authority, which the backend then gets as `Host`
//!   (`crate::forward`);
//! - exactly one `Host` in HTTP/1.1 requests, and a valid one: not empty, only what an
//!   authority's host and port may hold (no space, slash, backslash, `@`, `?`, `#`); 400
//!   otherwise (RFC 9112 §3.2);
//! - request framing: `Content-Length`, or `Transfer-Encoding: chunked` alone; both at once, a
//!   transfer coding other than chunked, or a malformed length is refused (400, 501) and the
//!   connection closed, so no request can be smuggled past the proxy. A length with leading
//!   zeros, repeated or listed with equal values is accepted, and the backend gets one plain
//!   `Content-Length` (unequal values are a 400). Chunked bodies are decoded as
//!   `upstream::wire::Chunked::decode` says (leading zeros and bare-LF line ends accepted, a
//!   size line without digits refused); forbidden trailer fields are dropped and folded ones
//!   unfolded;
//! - a request body the client breaks (malformed chunks, fewer bytes than announced before it
//!   closes) is answered 400 and the connection closed; the request is counted as the client's
//!   fault (`backend=""`), never against the backend it was forwarded to
//!   ([`crate::ProxyError::client_fault`]). The body is sent whole before the backend's answer
//!   is read, so no answer has started when that happens;
//! - `Expect: 100-continue`: the interim response goes out when the body is first read;
//! - persistence: HTTP/1.1 keeps the connection unless `Connection: close`, HTTP/1.0 only with
//!   `Connection: keep-alive`; a request body left unread closes the connection after the
//!   response unless its rest is already buffered;
//! - response framing: the response's `Content-Length` or exact size, else chunked (HTTP/1.1)
//!   or until close (HTTP/1.0); trailers only to clients that sent `TE: trailers`; no body for
//!   HEAD, 1xx, 204 and 304; `Date` added when the response has none.

use std::future::{Future, poll_fn};
use std::io::{self, Write as _};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::Connection;
use crate::body::{ClientBody, ProxyBody, next_frame};
use crate::deadline;
use crate::upstream::wire;
pub use body::{Http1Body, RequestBodyError};
use body::{Progress, Slot};

mod body;

/// Longest request head accepted (request line and header fields).
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields accepted in a request head.
pub const MAX_HEADERS: usize = wire::MAX_HEADERS;
/// Bytes asked of the socket per read.
const READ_SIZE: usize = 8 * 1024;
/// Response bytes gathered before they are written.
const WRITE_SIZE: usize = 64 * 1024;
/// Buffers larger than this are let go after each exchange, so that an idle connection costs
/// little memory.
const KEEP_BUFFER: usize = 16 * 1024;
/// Body pieces at least this large are written from where they are instead of being copied
/// behind the head.
const COPY_LIMIT: usize = 16 * 1024;

/// A request the connection refuses, answered with `status` and closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub(super) struct Refused {
    pub(super) status: StatusCode,
    pub(super) reason: &'static str,
}

const fn refused(status: StatusCode, reason: &'static str) -> Refused {
    Refused { status, reason }
}

/// How a request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RequestFraming {
    Empty,
    Length(u64),
    Chunked,
}

/// A parsed request head and what it says about its body and connection.
#[derive(Debug)]
pub(super) struct RequestHead {
    pub(super) request: Request<()>,
    pub(super) framing: RequestFraming,
    /// The client wants the connection kept (before the response has its say).
    pub(super) keep_alive: bool,
    pub(super) expect_continue: bool,
    /// `TE: trailers`: the client accepts trailer fields in a chunked response.
    pub(super) trailers: bool,
}

/// Parses the request head at the start of `buf`, consuming it: `None` if more bytes are
/// needed. `spans` is scratch space: positions of names and values in `buf`, kept so that the
/// head can be frozen into one `Bytes` that every header value then shares (no copy, no
/// allocation per value).
pub(super) fn parse_request(
    buf: &mut BytesMut,
    spans: &mut Vec<[u32; 4]>,
) -> Result<Option<RequestHead>, Refused> {
    match parse_head(buf, spans) {
        Ok(head) => Ok(head),
        Err(Fault::Refused(refused)) => Err(refused),
        // RFC 9110 §2.5: a later HTTP/1 minor version is served as HTTP/1.1 (httparse knows
        // only 1.0 and 1.1). Rare, so the head is parsed again rather than checked each time.
        Err(Fault::Syntax(httparse::Error::Version)) if later_minor_version(buf) => {
            match parse_head(buf, spans) {
                Ok(head) => Ok(head),
                Err(Fault::Refused(refused)) => Err(refused),
                Err(Fault::Syntax(e)) => Err(parse_error(e, buf)),
            }
        }
        Err(Fault::Syntax(e)) => Err(parse_error(e, buf)),
    }
}

/// Why [`parse_head`] failed.
enum Fault {
    Refused(Refused),
    /// httparse refused the head; [`parse_error`] says how to answer.
    Syntax(httparse::Error),
}

impl From<Refused> for Fault {
    fn from(refused: Refused) -> Fault {
        Fault::Refused(refused)
    }
}

/// [`parse_request`], but a head httparse refuses is left for the caller to answer.
fn parse_head(buf: &mut BytesMut, spans: &mut Vec<[u32; 4]>) -> Result<Option<RequestHead>, Fault> {
    let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut parsed,
        buf,
        &mut headers,
    ) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
        Ok(_) if buf.len() > MAX_HEAD => {
            return Err(refused(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request head larger than 64 KiB",
            )
            .into());
        }
        Ok(_) => return Ok(None),
        Err(e) => return Err(Fault::Syntax(e)),
    };
    let method = Method::from_bytes(parsed.method.unwrap_or_default().as_bytes())
        .map_err(|_| refused(StatusCode::BAD_REQUEST, "invalid method"))?;
    // The proxy opens no tunnels: CONNECT is refused, never forwarded as something else.
    if method == Method::CONNECT {
        return Err(refused(StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not supported").into());
    }
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let base = buf.as_ptr() as usize;
    let target = parsed.path.unwrap_or_default();
    // RFC 9112 §3.2.4: the asterisk form is for OPTIONS only.
    if target == "*" && method != Method::OPTIONS {
        return Err(refused(
            StatusCode::BAD_REQUEST,
            "asterisk-form target without OPTIONS",
        )
        .into());
    }
    let target = target.as_ptr() as usize - base..target.as_ptr() as usize - base + target.len();
    wire::record_spans(buf, parsed.headers, spans);
    let head = buf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(target))
        .map_err(|_| refused(StatusCode::BAD_REQUEST, "invalid request target"))?;
    if let Some(authority) = uri.authority() {
        // RFC 9112 §3.2.3: the authority form is for CONNECT only.
        if uri.scheme().is_none() {
            return Err(refused(
                StatusCode::BAD_REQUEST,
                "authority-form target without CONNECT",
            )
            .into());
        }
        // RFC 9110 §4.2.4: user information in an http(s) URI is an error.
        if authority.as_str().contains('@') {
            return Err(refused(StatusCode::BAD_REQUEST, "user information in the target").into());
        }
    }

    let mut map = HeaderMap::with_capacity(spans.len());
    let mut fields = Fields::default();
    for &[ns, ne, vs, ve] in spans.iter() {
        let name = HeaderName::from_bytes(&head[ns as usize..ne as usize])
            .map_err(|_| refused(StatusCode::BAD_REQUEST, "invalid header name"))?;
        let raw = &head[vs as usize..ve as usize];
        if name == header::CONTENT_LENGTH {
            fields.content_length(raw)?;
        } else if name == header::TRANSFER_ENCODING {
            fields.transfer_encoding(raw);
        } else if name == header::CONNECTION {
            fields.connection(raw);
        } else if name == header::EXPECT {
            fields.expect_continue |= raw.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        } else if name == header::HOST {
            fields.hosts += 1;
            if !valid_host(raw) {
                return Err(refused(StatusCode::BAD_REQUEST, "invalid host").into());
            }
        } else if name == header::TE {
            fields.trailers |= raw
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"));
        }
        let value = HeaderValue::from_maybe_shared(head.slice(vs as usize..ve as usize))
            .map_err(|_| refused(StatusCode::BAD_REQUEST, "invalid header value"))?;
        map.append(name, value);
    }
    // RFC 9112 §3.2: exactly one Host in HTTP/1.1 (HTTP/1.0 may have none).
    match (fields.hosts, version) {
        (0, Version::HTTP_11) => {
            return Err(refused(StatusCode::BAD_REQUEST, "missing host").into());
        }
        (2.., _) => return Err(refused(StatusCode::BAD_REQUEST, "more than one host").into()),
        _ => {}
    }
    let framing = fields.framing(version)?;
    let keep_alive = match version {
        Version::HTTP_10 => fields.keep_alive && !fields.close,
        _ => !fields.close,
    };
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = map;
    Ok(Some(RequestHead {
        request,
        framing,
        keep_alive,
        expect_continue: fields.expect_continue && version == Version::HTTP_11,
        trailers: fields.trailers,
    }))
}

fn parse_error(e: httparse::Error, buf: &[u8]) -> Refused {
    use httparse::Error as E;
    let reason = match e {
        // A well-formed request line of another version, or a malformed one.
        E::Version if !well_formed_request_line(buf) => "invalid request line",
        E::TooManyHeaders => {
            return refused(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "more than 100 header fields",
            );
        }
        E::Version => {
            return refused(
                StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                "HTTP version not supported",
            );
        }
        E::HeaderName => "invalid header name",
        E::HeaderValue => "invalid header value",
        E::NewLine => "invalid line ending",
        E::Token => "invalid method",
        E::Status => "invalid request line",
    };
    refused(StatusCode::BAD_REQUEST, reason)
}

/// `method SP target SP HTTP/n.n`, whatever the method, target and version.
fn well_formed_request_line(buf: &[u8]) -> bool {
    request_line_version(buf).is_some()
}

/// The version of a well-formed request line at the start of `buf` (`method SP target SP
/// HTTP/...`), and where it starts.
fn request_line_version(buf: &[u8]) -> Option<(usize, &[u8])> {
    let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.split(|&b| b == b' ');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v), None)
            if !m.is_empty() && !t.is_empty() && v.starts_with(b"HTTP/") =>
        {
            Some((m.len() + t.len() + 2, v))
        }
        _ => None,
    }
}

/// Rewrites the request line's `HTTP/1.x` (x from 2 to 9) to `HTTP/1.1` in place: true if it
/// did. RFC 9110 §2.5: a recipient treats a later minor version as the highest it supports.
fn later_minor_version(buf: &mut BytesMut) -> bool {
    let Some((at, version)) = request_line_version(buf) else {
        return false;
    };
    if !matches!(
        version,
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', b'2'..=b'9']
    ) {
        return false;
    }
    buf[at + 7] = b'1';
    true
}

/// Bytes a `Host` value may hold: those of a URI authority's host and port (RFC 3986 §3.2.2:
/// unreserved, percent-encoded, sub-delims, `:`, and the brackets of an IP literal).
static HOST_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let allowed =
        b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~%!$&'()*+,;=:[]";
    let mut i = 0;
    while i < allowed.len() {
        table[allowed[i] as usize] = true;
        i += 1;
    }
    table
};

/// A `Host` value (RFC 9110 §7.2, `uri-host [ ":" port ]`): not empty, and nothing an authority
/// cannot hold — no space, slash, backslash, `@`, `?`, `#` or control character — so that no
/// backend reads a different host, path or user out of it than the proxy routed by.
fn valid_host(value: &[u8]) -> bool {
    !value.is_empty() && value.iter().all(|&b| HOST_BYTES[usize::from(b)])
}

/// What a request's fields say about its body and its connection, gathered in the one pass
/// that builds its header map.
#[derive(Debug, Default)]
struct Fields {
    length: Option<u64>,
    /// `Transfer-Encoding` present, and whether it is exactly `chunked`.
    transfer_encoding: Option<bool>,
    close: bool,
    keep_alive: bool,
    expect_continue: bool,
    trailers: bool,
    hosts: u32,
}

impl Fields {
    fn content_length(&mut self, value: &[u8]) -> Result<(), Refused> {
        let length = wire::merge_content_length(self.length.map(Ok), value);
        match length {
            Some(Err(())) => Err(refused(StatusCode::BAD_REQUEST, "invalid content-length")),
            _ => {
                self.length = length.and_then(Result::ok);
                Ok(())
            }
        }
    }

    fn transfer_encoding(&mut self, value: &[u8]) {
        // Several fields, or codings before chunked, make it something other than chunked.
        let chunked =
            self.transfer_encoding.is_none() && value.trim_ascii().eq_ignore_ascii_case(b"chunked");
        self.transfer_encoding = Some(chunked);
    }

    fn connection(&mut self, value: &[u8]) {
        for token in value.split(|&b| b == b',') {
            let token = token.trim_ascii();
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            }
        }
    }

    /// RFC 9112 §6.3, strictly: a request a backend could frame differently is refused.
    fn framing(&self, version: Version) -> Result<RequestFraming, Refused> {
        match (self.transfer_encoding, self.length) {
            (Some(_), Some(_)) => Err(refused(
                StatusCode::BAD_REQUEST,
                "both transfer-encoding and content-length",
            )),
            (Some(_), None) if version == Version::HTTP_10 => Err(refused(
                StatusCode::BAD_REQUEST,
                "transfer-encoding in an HTTP/1.0 request",
            )),
            (Some(true), None) => Ok(RequestFraming::Chunked),
            (Some(false), None) => Err(refused(
                StatusCode::NOT_IMPLEMENTED,
                "transfer coding other than chunked",
            )),
            (None, Some(0) | None) => Ok(RequestFraming::Empty),
            (None, Some(n)) => Ok(RequestFraming::Length(n)),
        }
    }
}

/// Reads what the socket has into `read`; `Ok(0)` at the end of the stream.
///
/// A read that did not fill the space offered has drained the socket: its readiness is
/// cleared then, as Tokio's own `poll_read` does, so that the next call waits for the next
/// event instead of spending a system call to learn that nothing is there.
pub(super) fn poll_fill(
    io: &TcpStream,
    read: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if read.capacity() - read.len() < READ_SIZE / 2 {
        read.reserve(READ_SIZE);
    }
    loop {
        ready!(io.poll_read_ready(cx))?;
        let offered = read.capacity() - read.len();
        let mut got = 0;
        // `try_io` clears the readiness it saw before the read when the closure answers
        // WouldBlock: readiness that arrives during the read is kept.
        let result = io.try_io(Interest::READABLE, || {
            got = io.try_read_buf(read)?;
            if got > 0 && got < offered {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(got)
        });
        match result {
            Ok(n) => return Poll::Ready(Ok(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => {
                return Poll::Ready(Ok(got));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
}

/// Writes all of `bytes`.
async fn write_all(io: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match io.try_write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => io.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// How a response's body goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResponseFraming {
    Empty,
    Length(u64),
    Chunked,
    /// Until the connection closes (an HTTP/1.0 client, length unknown).
    Close,
}

/// What the response writer needs to know of the request.
#[derive(Debug, Clone, Copy)]
struct Asked {
    version: Version,
    head: bool,
    trailers: bool,
}

/// One client connection.
struct Conn {
    io: Arc<TcpStream>,
    /// Received and not yet consumed; lent to a request's body while it is read.
    read: BytesMut,
    /// The response being written (kept to reuse its allocation).
    write: Vec<u8>,
    /// Scratch space for [`parse_request`].
    spans: Vec<[u32; 4]>,
}

/// Serves HTTP/1.1 on `stream`, whose first bytes are in `read`, until the client closes, an
/// error, or graceful shutdown: then the request in flight is finished and the connection
/// closed. `stop` finishes when shutdown begins (it wakes an idle connection); `shutdown` is
/// the same signal, checked between requests.
pub(super) async fn serve(
    c: &Connection,
    stream: TcpStream,
    read: BytesMut,
    stop: Pin<&mut (dyn Future<Output = ()> + Send)>,
    shutdown: &watch::Receiver<bool>,
) {
    let mut conn = Conn {
        io: Arc::new(stream),
        read,
        write: Vec::new(),
        spans: Vec::new(),
    };
    let mut shutdown = Shutdown {
        stop,
        probe: shutdown,
        armed: false,
        began: false,
    };
    let header_read_timeout = c.proxy.options().header_read_timeout;
    loop {
        let at = Instant::now() + header_read_timeout;
        let head = poll_fn(|cx| conn.poll_head(cx, &mut shutdown));
        let head = match deadline::within(at, head).await {
            Some(Ok(Some(head))) => head,
            // Closed, stopping, or the timeout.
            Some(Ok(None)) | None => return,
            Some(Err(HeadError::Io(e))) => {
                tracing::debug!(remote = %c.peer.addr, error = %e, "reading a request failed");
                return;
            }
            Some(Err(HeadError::Refused(refused))) => {
                tracing::debug!(remote = %c.peer.addr, %refused, "request refused");
                conn.refuse(refused).await;
                return;
            }
        };
        let RequestHead {
            request,
            framing,
            mut keep_alive,
            expect_continue,
            trailers,
        } = head;
        let asked = Asked {
            version: request.version(),
            head: request.method() == Method::HEAD,
            trailers,
        };
        let (body, slot) = match framing {
            RequestFraming::Empty => (ClientBody::Empty, None),
            RequestFraming::Length(n) => conn.lend(Progress::Length(n), expect_continue),
            RequestFraming::Chunked => {
                conn.lend(Progress::Chunked(wire::Chunked::Size), expect_continue)
            }
        };
        let response = c
            .proxy
            .serve(c.port, &c.peer, &c.upstream, request.map(|()| body))
            .await;
        // Whether the request's body has been received whole (or had none).
        let received = slot.is_none_or(|slot| conn.take_back(&slot));
        keep_alive &= received;
        keep_alive &= !shutdown.began();
        let responded = conn.respond(response, asked, keep_alive).await;
        // An idle connection keeps small buffers only, whatever its last exchange needed.
        if conn.write.capacity() > KEEP_BUFFER {
            conn.write = Vec::new();
        }
        if conn.read.is_empty() && conn.read.capacity() > KEEP_BUFFER {
            conn.read = BytesMut::new();
        }
        match responded {
            Ok(true) => {}
            Ok(false) => {
                if !received {
                    // The client may still be sending the body: closing at once could reset
                    // the connection under the response.
                    linger(&conn.io).await;
                }
                return;
            }
            Err(e) => {
                tracing::debug!(remote = %c.peer.addr, error = %e, "writing a response failed");
                return;
            }
        }
    }
}

enum HeadError {
    Io(io::Error),
    Refused(Refused),
}

/// Graceful shutdown as one connection sees it.
struct Shutdown<'a> {
    /// Finishes when shutdown begins. Polled once, when the connection first waits for a
    /// request (unless it was already polled while the protocol was being told apart): from
    /// then on it wakes the connection's task when shutdown begins.
    stop: Pin<&'a mut (dyn Future<Output = ()> + Send)>,
    /// The same signal, read without registering a waiter.
    probe: &'a watch::Receiver<bool>,
    armed: bool,
    began: bool,
}

impl Shutdown<'_> {
    /// Whether shutdown has begun: one atomic load while nothing changed. A dropped sender
    /// counts as shutdown too (`stop` finishes then).
    fn began(&mut self) -> bool {
        self.began = self.began
            || match self.probe.has_changed() {
                Ok(false) => false,
                Ok(true) => *self.probe.borrow(),
                Err(_) => true,
            };
        self.began
    }

    /// For a connection about to wait for its next request: whether shutdown has begun, and
    /// if not, that the task is woken when it does. The watch channel only ever changes to
    /// `true`, so the waiter `stop` registered at its first poll stays valid until then.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> bool {
        if self.began() {
            return true;
        }
        if !self.armed {
            self.armed = true;
            self.began = self.stop.as_mut().poll(cx).is_ready();
        }
        self.began
    }
}

impl Conn {
    /// Reads until a request head is complete. `None`: the client closed the connection, or
    /// shutdown began while no request had begun.
    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        shutdown: &mut Shutdown<'_>,
    ) -> Poll<Result<Option<RequestHead>, HeadError>> {
        loop {
            if !self.read.is_empty() {
                match parse_request(&mut self.read, &mut self.spans) {
                    Ok(Some(head)) => return Poll::Ready(Ok(Some(head))),
                    Ok(None) => {}
                    Err(refused) => return Poll::Ready(Err(HeadError::Refused(refused))),
                }
            }
            match poll_fill(&self.io, &mut self.read, cx) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Ok(None)),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(HeadError::Io(e))),
                Poll::Pending => {
                    if self.read.is_empty() && shutdown.poll_idle(cx) {
                        return Poll::Ready(Ok(None));
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// Lends the read buffer to a body framed by `progress`.
    fn lend(&mut self, progress: Progress, expect_continue: bool) -> (ClientBody, Option<Slot>) {
        let slot = Slot::default();
        let body = Http1Body::new(
            self.io.clone(),
            std::mem::take(&mut self.read),
            progress,
            expect_continue,
            slot.clone(),
        );
        (ClientBody::Http1(body), Some(slot))
    }

    /// Takes the read buffer back from a request's body: true if the next request can follow
    /// on this connection (the body was read to its end, or its rest is already buffered).
    fn take_back(&mut self, slot: &Mutex<Option<body::Returned>>) -> bool {
        let returned = slot.lock().ok().and_then(|mut s| s.take());
        match returned {
            Some(returned) => {
                self.read = returned.read;
                body::discard(&mut self.read, returned.progress)
            }
            // Something still holds the body.
            None => false,
        }
    }

    /// Answers a refused request and closes: the answer is written, then the connection's
    /// receiving side is drained for a moment so that the client reads the answer instead of
    /// a reset.
    async fn refuse(&mut self, refused: Refused) {
        self.write.clear();
        let text = format!("{}\n", refused.reason);
        let _ = write!(
            self.write,
            "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n",
            refused.status.as_str(),
            refused.status.canonical_reason().unwrap_or(""),
            text.len()
        );
        date(&mut self.write);
        self.write.extend_from_slice(b"\r\n");
        self.write.extend_from_slice(text.as_bytes());
        if write_all(&self.io, &self.write).await.is_err() {
            return;
        }
        linger(&self.io).await;
    }

    /// Writes `response`: true if the connection can carry another request.
    async fn respond(
        &mut self,
        response: Response<ProxyBody>,
        asked: Asked,
        mut keep_alive: bool,
    ) -> io::Result<bool> {
        let (parts, mut body) = response.into_parts();
        let status = parts.status;
        let bodiless = asked.head
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        self.write.clear();
        let w = &mut self.write;
        w.extend_from_slice(b"HTTP/1.1 ");
        w.extend_from_slice(status.as_str().as_bytes());
        w.push(b' ');
        match parts.extensions.get::<hyper::ext::ReasonPhrase>() {
            Some(reason) => w.extend_from_slice(reason.as_bytes()),
            None => w.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes()),
        }
        w.extend_from_slice(b"\r\n");
        // The backend's fields as received, if they were kept so, then the map's; one pass
        // writes them and notes those the framing decides.
        let raw = body.raw_fields();
        let mut length = raw.and_then(|r| r.content_length());
        let mut dated = raw.is_some_and(|r| r.has_date());
        if let Some(raw) = raw {
            w.extend_from_slice(raw.lines());
        }
        let mut coding: Option<&HeaderValue> = None;
        for (name, value) in &parts.headers {
            if *name == header::CONTENT_LENGTH {
                length = wire::parse_length(value.as_bytes().trim_ascii()).ok();
                continue;
            }
            if *name == header::TRANSFER_ENCODING {
                coding = Some(value);
                continue;
            }
            if *name == header::CONNECTION {
                continue;
            }
            dated |= *name == header::DATE;
            wire::encode_field(w, name.as_str().as_bytes(), value.as_bytes());
        }
        let http10 = asked.version == Version::HTTP_10;
        let framing = if bodiless {
            if status != StatusCode::NO_CONTENT && !status.is_informational() {
                // HEAD and 304 describe the body they would have had.
                if let Some(n) = length {
                    let _ = write!(w, "content-length: {n}\r\n");
                }
            }
            ResponseFraming::Empty
        } else if let Some(coding) = coding.filter(|_| !http10) {
            let coding = coding.as_bytes();
            let last = coding.rsplit(|&b| b == b',').next().unwrap_or_default();
            w.extend_from_slice(b"transfer-encoding: ");
            w.extend_from_slice(coding);
            if !last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                w.extend_from_slice(b", chunked");
            }
            w.extend_from_slice(b"\r\n");
            ResponseFraming::Chunked
        } else if let Some(n) = length.or_else(|| body.size_hint().exact()) {
            let _ = write!(w, "content-length: {n}\r\n");
            ResponseFraming::Length(n)
        } else if !http10 {
            w.extend_from_slice(b"transfer-encoding: chunked\r\n");
            ResponseFraming::Chunked
        } else {
            keep_alive = false;
            ResponseFraming::Close
        };
        if !keep_alive {
            w.extend_from_slice(b"connection: close\r\n");
        } else if http10 {
            w.extend_from_slice(b"connection: keep-alive\r\n");
        }
        if !dated {
            date(w);
        }
        w.extend_from_slice(b"\r\n");
        drop(parts);

        if framing == ResponseFraming::Empty {
            write_all(&self.io, &self.write).await?;
            return Ok(keep_alive);
        }
        let mut sent: u64 = 0;
        loop {
            let mut ended = false;
            while self.write.len() < WRITE_SIZE {
                // Wait for the body only when there is nothing to write meanwhile.
                let Some(frame) = next_frame(&mut body, self.write.is_empty()).await else {
                    break;
                };
                let trailers = match frame {
                    None => None,
                    Some(Err(e)) => {
                        // Cut short: what arrived goes out, then the connection closes.
                        tracing::debug!(error = %e, "response body failed");
                        write_all(&self.io, &self.write).await?;
                        return Ok(false);
                    }
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => {
                            let len = data.len();
                            sent += len as u64;
                            if let ResponseFraming::Length(n) = framing
                                && sent > n
                            {
                                // More than announced: the client's framing would break.
                                write_all(&self.io, &self.write).await?;
                                return Ok(false);
                            }
                            let chunked = framing == ResponseFraming::Chunked && len > 0;
                            if chunked {
                                let _ = write!(self.write, "{len:x}\r\n");
                            }
                            if len >= COPY_LIMIT {
                                write_all(&self.io, &self.write).await?;
                                self.write.clear();
                                write_all(&self.io, &data).await?;
                            } else {
                                self.write.extend_from_slice(&data);
                            }
                            if chunked {
                                self.write.extend_from_slice(b"\r\n");
                            }
                            if !body.is_end_stream() {
                                continue;
                            }
                            None
                        }
                        Err(frame) => frame.into_trailers().ok(),
                    },
                };
                // The body has ended.
                match framing {
                    ResponseFraming::Chunked => {
                        let trailers = trailers.as_ref().filter(|_| asked.trailers);
                        wire::encode_last_chunk(&mut self.write, trailers);
                    }
                    ResponseFraming::Length(n) if sent != n => keep_alive = false,
                    _ => {}
                }
                ended = true;
                break;
            }
            if !self.write.is_empty() {
                write_all(&self.io, &self.write).await?;
                self.write.clear();
            }
            if ended {
                return Ok(keep_alive && framing != ResponseFraming::Close);
            }
        }
    }
}

/// After a refusal: stops sending, then reads and discards what the client still sends, for
/// at most a second or 1 MiB, so that closing does not reset the connection under the answer.
async fn linger(io: &TcpStream) {
    let _ = socket2::SockRef::from(io).shutdown(std::net::Shutdown::Write);
    let drain = async {
        let mut discarded = 0usize;
        let mut scratch = [0u8; 4096];
        while discarded < 1 << 20 {
            if io.readable().await.is_err() {
                return;
            }
            match io.try_read(&mut scratch) {
                Ok(0) => return,
                Ok(n) => discarded += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    };
    let _ = deadline::within(Instant::now() + Duration::from_secs(1), drain).await;
}

/// Appends a `Date` field with the current time, formatted once per second per thread.
fn date(dst: &mut Vec<u8>) {
    thread_local! {
        static CACHED: std::cell::RefCell<(u64, [u8; 29])> =
            const { std::cell::RefCell::new((u64::MAX, [0; 29])) };
    }
    let now = SystemTime::now();
    let second = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    CACHED.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != second {
            let text = httpdate::fmt_http_date(now);
            if text.len() == 29 {
                cached.1.copy_from_slice(text.as_bytes());
            }
            cached.0 = second;
        }
        dst.extend_from_slice(b"date: ");
        dst.extend_from_slice(&cached.1);
        dst.extend_from_slice(b"\r\n");
    });
}

#[cfg(test)]
mod tests;
