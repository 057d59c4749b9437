//! HTTP/1.1 messages on an upstream connection (RFC 9112): the request head the proxy writes,
//! the response head it parses (with httparse) and the framing of both bodies.
//!
//! Pure functions over byte buffers; [`super::exchange`] and [`super::body`] move the bytes.

use std::io::Write as _;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version, request};

use super::ExchangeError;
use crate::forward::hop_by_hop_index;

/// Longest response head accepted (status line and headers).
pub(super) const MAX_HEAD: usize = 64 * 1024;
/// Most header fields accepted in a response head or a trailer section.
pub(crate) const MAX_HEADERS: usize = 100;
/// Longest chunk-size line accepted (extensions included).
const MAX_CHUNK_LINE: usize = 4096;
/// Largest `Content-Length` or chunk size accepted: a signed 64-bit length, as nginx and
/// HAProxy accept.
const MAX_LENGTH: u64 = i64::MAX as u64;

/// How the request body goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RequestFraming {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding (the body's length is unknown).
    Chunked,
}

impl RequestFraming {
    /// The framing for a request with these headers, whose body is empty (`end_stream`) or has
    /// the exact length `exact` if known. The client's own framing is kept when it is sound.
    pub(super) fn choose(headers: &HeaderMap, end_stream: bool, exact: Option<u64>) -> Self {
        if end_stream {
            return RequestFraming::Empty;
        }
        if !headers.contains_key(header::TRANSFER_ENCODING)
            && let Some(length) = content_length(headers).ok().flatten()
        {
            return RequestFraming::Length(length);
        }
        match exact {
            Some(n) if !headers.contains_key(header::TRANSFER_ENCODING) => {
                RequestFraming::Length(n)
            }
            _ => RequestFraming::Chunked,
        }
    }
}

/// Writes the request head: request line in origin form, the headers, then `extra`, and the
/// framing field `framing` calls for. The client's own `Content-Length` and
/// `Transfer-Encoding` are never passed on as they came: the backend gets one field the proxy
/// wrote, so duplicate, list-valued or zero-padded lengths reach it as one plain number.
pub(super) fn encode_head(
    dst: &mut Vec<u8>,
    head: &request::Parts,
    extra: &[(HeaderName, HeaderValue)],
    framing: RequestFraming,
) {
    dst.extend_from_slice(head.method.as_str().as_bytes());
    dst.push(b' ');
    let target = head.uri.path_and_query().map_or("/", |p| p.as_str());
    dst.extend_from_slice(target.as_bytes());
    dst.extend_from_slice(b" HTTP/1.1\r\n");
    let mut length_field = false;
    for (name, value) in head.headers.iter().chain(extra.iter().map(|(n, v)| (n, v))) {
        if *name == header::CONTENT_LENGTH {
            length_field = true;
            continue;
        }
        if *name == header::TRANSFER_ENCODING {
            continue;
        }
        encode_field(dst, name.as_str().as_bytes(), value.as_bytes());
    }
    match framing {
        RequestFraming::Length(n) => {
            let _ = write!(dst, "content-length: {n}\r\n");
        }
        // An empty body the client announced (`Content-Length: 0` on a POST, say).
        RequestFraming::Empty if length_field => dst.extend_from_slice(b"content-length: 0\r\n"),
        RequestFraming::Chunked => dst.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        RequestFraming::Empty => {}
    }
    dst.extend_from_slice(b"\r\n");
}

/// Appends one piece of the request body in `framing`.
pub(super) fn encode_data(dst: &mut Vec<u8>, framing: RequestFraming, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    if framing == RequestFraming::Chunked {
        let _ = write!(dst, "{:x}\r\n", data.len());
        dst.extend_from_slice(data);
        dst.extend_from_slice(b"\r\n");
    } else {
        dst.extend_from_slice(data);
    }
}

/// Ends a chunked body, with its trailers if any: those a trailer section may not carry
/// ([`forbidden_trailer`]) are left out, whatever protocol they arrived in.
pub(crate) fn encode_last_chunk(dst: &mut Vec<u8>, trailers: Option<&HeaderMap>) {
    dst.extend_from_slice(b"0\r\n");
    for (name, value) in trailers.into_iter().flatten() {
        if !forbidden_trailer(name) {
            encode_field(dst, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    dst.extend_from_slice(b"\r\n");
}

/// Appends one header field line, `name: value` and CRLF.
pub(crate) fn encode_field(dst: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    dst.extend_from_slice(name);
    dst.extend_from_slice(b": ");
    dst.extend_from_slice(value);
    dst.extend_from_slice(b"\r\n");
}

/// [`encode_field`] for a field parsed from `head`: a line already written `name: value` there
/// is copied in one piece.
fn encode_field_from(dst: &mut Vec<u8>, head: &[u8], name: &[u8], value: &[u8]) {
    let start = name.as_ptr() as usize - head.as_ptr() as usize;
    let end = value.as_ptr() as usize - head.as_ptr() as usize + value.len();
    match head.get(start..end) {
        Some(line)
            if line.len() == name.len() + 2 + value.len()
                && line[name.len()..name.len() + 2] == *b": " =>
        {
            dst.extend_from_slice(line);
            dst.extend_from_slice(b"\r\n");
        }
        _ => encode_field(dst, name, value),
    }
}

/// How the response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ResponseFraming {
    /// No body (HEAD, 1xx, 204, 304).
    Empty,
    Length(u64),
    Chunked,
    /// Everything until the backend closes the connection.
    Close,
}

/// A final response head.
#[derive(Debug)]
pub(super) struct ResponseHead {
    pub(super) status: StatusCode,
    pub(super) version: Version,
    /// The reason phrase, when it is not the status code's usual one.
    pub(super) reason: Option<hyper::ext::ReasonPhrase>,
    /// The header fields, unless they are in `raw`.
    pub(super) headers: HeaderMap,
    /// The header fields as received, when they needed no change but dropping hop-by-hop and
    /// framing fields (the usual case): passed on without a header map.
    pub(super) raw: Option<RawFields>,
    pub(super) framing: ResponseFraming,
    /// The connection may carry another exchange once this body has been read.
    pub(super) keep_alive: bool,
}

/// What [`parse_response`] found at the start of the buffer.
#[derive(Debug)]
pub(super) enum Parsed {
    /// More bytes are needed.
    Partial,
    /// An interim (1xx) response, now consumed from the buffer.
    Interim,
    /// The final head; the buffer keeps what follows it (the start of the body).
    Final(ResponseHead),
}

/// Records where each field's name and value lie in `head` (the buffer they were parsed
/// from), as `[name start, name end, value start, value end]`, so that the head can then be
/// frozen into one `Bytes` that every value shares. `spans` is cleared first (a vector kept
/// between heads, rather than an array of [`MAX_HEADERS`] zeroed for every head).
pub(crate) fn record_spans(
    head: &[u8],
    fields: &[httparse::Header<'_>],
    spans: &mut Vec<[u32; 4]>,
) {
    let base = head.as_ptr() as usize;
    spans.clear();
    spans.extend(fields.iter().map(|h| {
        let name = h.name.as_ptr() as usize - base;
        let value = h.value.as_ptr() as usize - base;
        // Heads are at most MAX_HEAD bytes: offsets fit.
        [
            name as u32,
            (name + h.name.len()) as u32,
            value as u32,
            (value + h.value.len()) as u32,
        ]
    }));
}

/// A response's header fields as received, encoded as lines (`name: value\r\n`), without its
/// hop-by-hop and framing fields. The response is written to the client from these lines
/// without building a header map; [`RawFields::merge_into`] builds one when something needs
/// to look at or change the fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFields {
    lines: Vec<u8>,
    /// The response's `Content-Length`, whose field is not in `lines`.
    length: Option<u64>,
    /// The body came chunked (its `Transfer-Encoding: chunked` is not in `lines`).
    chunked: bool,
    /// `lines` has a `Date` field.
    date: bool,
}

impl RawFields {
    /// The fields, each line ending in CRLF.
    pub fn lines(&self) -> &[u8] {
        &self.lines
    }

    /// The `Content-Length` the backend sent.
    pub fn content_length(&self) -> Option<u64> {
        self.length
    }

    /// Whether the fields include `Date`.
    pub fn has_date(&self) -> bool {
        self.date
    }

    /// Appends the fields to `headers`, as the map [`parse_response`] would otherwise have
    /// built (framing fields included).
    pub fn merge_into(self, headers: &mut HeaderMap) {
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut block = self.lines;
        block.extend_from_slice(b"\r\n");
        // The lines were checked when they were received: parsing them again cannot fail.
        if let Ok(httparse::Status::Complete((_, fields))) =
            httparse::parse_headers(&block, &mut fields)
        {
            for f in fields.iter() {
                if let (Ok(name), Ok(value)) = (
                    HeaderName::from_bytes(f.name.as_bytes()),
                    HeaderValue::from_bytes(f.value),
                ) {
                    headers.append(name, value);
                }
            }
        }
        if let Some(n) = self.length {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
        if self.chunked {
            headers.insert(
                header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
        }
    }
}

/// Parses the response head at the start of `buf`. `head_request`: the request was HEAD, so
/// the response has no body whatever its headers say.
///
/// The usual head (no line folding, `Connection` naming no field, no transfer coding but
/// chunked) is checked and its fields kept as lines ([`RawFields`]); any other is parsed into a
/// header map.
pub(super) fn parse_response(
    buf: &mut BytesMut,
    head_request: bool,
) -> Result<Parsed, ExchangeError> {
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut headers,
    ) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
        // Errors, oversized heads and partial heads are for the full parser to tell apart.
        _ => return parse_response_mapped(buf, head_request),
    };
    let code = response.code.unwrap_or_default();
    let status = StatusCode::from_u16(code).map_err(|_| ExchangeError::Invalid("status code"))?;
    if status.is_informational() {
        return parse_response_mapped(buf, head_request);
    }
    let mut lines = Vec::with_capacity(len);
    let mut fields = Framing::default();
    let mut date = false;
    for h in response.headers.iter() {
        let name = h.name.as_bytes();
        match hop_by_hop_or_framing(name) {
            Some(Special::Connection) => {
                fields.connection(h.value);
                if !fields.named.is_empty() {
                    return parse_response_mapped(buf, head_request);
                }
            }
            Some(Special::HopByHop) => {}
            Some(Special::ContentLength) => fields.content_length(h.value),
            Some(Special::TransferEncoding) => {
                if !h.value.trim_ascii().eq_ignore_ascii_case(b"chunked")
                    || fields.transfer_encoding.is_some()
                {
                    return parse_response_mapped(buf, head_request);
                }
                fields.transfer_encoding(h.value);
            }
            None => {
                date |= name.eq_ignore_ascii_case(b"date");
                encode_field_from(&mut lines, buf, name, h.value);
            }
        }
    }
    let (version, reason) = version_and_reason(&response, status);
    let framing = fields.framing(status, head_request)?;
    let keep_alive = fields.keep_alive(framing, version);
    let raw = RawFields {
        lines,
        length: match (fields.transfer_encoding, fields.length) {
            (None, Some(Ok(n))) => Some(n),
            _ => None,
        },
        chunked: fields.transfer_encoding.is_some(),
        date,
    };
    buf.advance(len);
    Ok(Parsed::Final(ResponseHead {
        status,
        version,
        reason,
        headers: HeaderMap::new(),
        raw: Some(raw),
        framing,
        keep_alive,
    }))
}

/// The response's version, and its reason phrase when it is not the status code's usual one.
fn version_and_reason(
    response: &httparse::Response<'_, '_>,
    status: StatusCode,
) -> (Version, Option<hyper::ext::ReasonPhrase>) {
    let version = match response.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let reason = response
        .reason
        .filter(|r| !r.is_empty() && Some(*r) != status.canonical_reason())
        .and_then(|r| hyper::ext::ReasonPhrase::try_from(r.as_bytes()).ok());
    (version, reason)
}

/// Fields the proxy reads from a response head and does not pass on as they are.
enum Special {
    Connection,
    /// Another hop-by-hop field (RFC 9110 §7.6.1).
    HopByHop,
    ContentLength,
    TransferEncoding,
}

/// Which [`Special`] field `name` is, case-insensitively: a length switch, then one comparison.
fn hop_by_hop_or_framing(name: &[u8]) -> Option<Special> {
    let (special, kind) = match name.len() {
        2 => ("te", Special::HopByHop),
        7 => match name[0] | 0x20 {
            b't' => ("trailer", Special::HopByHop),
            _ => ("upgrade", Special::HopByHop),
        },
        10 => match name[0] | 0x20 {
            b'c' => ("connection", Special::Connection),
            _ => ("keep-alive", Special::HopByHop),
        },
        14 => ("content-length", Special::ContentLength),
        16 => ("proxy-connection", Special::HopByHop),
        17 => ("transfer-encoding", Special::TransferEncoding),
        18 => ("proxy-authenticate", Special::HopByHop),
        19 => ("proxy-authorization", Special::HopByHop),
        _ => return None,
    };
    name.eq_ignore_ascii_case(special.as_bytes())
        .then_some(kind)
}

/// [`parse_response`] for any head: folded lines unfolded, every field in a header map.
fn parse_response_mapped(buf: &mut BytesMut, head_request: bool) -> Result<Parsed, ExchangeError> {
    // Positions of names and values in `buf`, kept so that the head can be frozen into one
    // `Bytes` that every header value then shares (no copy, no allocation per value).
    let mut spans = Vec::new();
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default()
        .allow_obsolete_multiline_headers_in_responses(true)
        .parse_response_with_uninit_headers(&mut response, buf, &mut headers);
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(ExchangeError::HeadTooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(e) => return Err(ExchangeError::Parse(e)),
    };
    if len > MAX_HEAD {
        return Err(ExchangeError::HeadTooLarge);
    }
    let code = response.code.unwrap_or_default();
    let status = StatusCode::from_u16(code).map_err(|_| ExchangeError::Invalid("status code"))?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(ExchangeError::Invalid(
            "101 Switching Protocols: protocol upgrades are not forwarded",
        ));
    }
    if status.is_informational() {
        buf.advance(len);
        return Ok(Parsed::Interim);
    }
    let (version, reason) = version_and_reason(&response, status);
    record_spans(buf, response.headers, &mut spans);
    let head = buf.split_to(len).freeze();
    let mut map = HeaderMap::with_capacity(spans.len());
    let mut fields = Framing::default();
    for &[ns, ne, vs, ve] in &spans {
        let name = HeaderName::from_bytes(&head[ns as usize..ne as usize])
            .map_err(|_| ExchangeError::Invalid("header name"))?;
        let raw = &head[vs as usize..ve as usize];
        // Hop-by-hop fields stay on this connection: read, not passed on.
        match hop_by_hop_index(&name) {
            Some(0) => {
                fields.connection(raw);
                continue;
            }
            Some(_) => continue,
            None => {}
        }
        if name == header::CONTENT_LENGTH {
            fields.content_length(raw);
        } else if name == header::TRANSFER_ENCODING {
            fields.transfer_encoding(raw);
        }
        let value = if raw.iter().any(|&b| b == b'\r' || b == b'\n') {
            // Obsolete line folding: each CR and LF becomes a space.
            let unfolded: Vec<u8> = raw
                .iter()
                .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b })
                .collect();
            HeaderValue::from_bytes(&unfolded)
        } else {
            HeaderValue::from_maybe_shared(head.slice(vs as usize..ve as usize))
        }
        .map_err(|_| ExchangeError::Invalid("header value"))?;
        map.append(name, value);
    }
    for name in fields.named.drain(..) {
        map.remove(name);
    }
    let framing = fields.framing(status, head_request)?;
    if fields.transfer_encoding.is_some() && fields.length.is_some() {
        // The transfer coding wins, and the proxy must not pass both on.
        map.remove(header::CONTENT_LENGTH);
    }
    let keep_alive = fields.keep_alive(framing, version);
    Ok(Parsed::Final(ResponseHead {
        status,
        version,
        reason,
        headers: map,
        raw: None,
        framing,
        keep_alive,
    }))
}

/// What a response's fields say about its framing and its connection, gathered in the one pass
/// that builds its header map.
#[derive(Debug, Default)]
struct Framing {
    /// `Content-Length`: `Err` if some value is not a number or they disagree.
    length: Option<Result<u64, ()>>,
    /// `Transfer-Encoding` present, and whether its last coding is chunked.
    transfer_encoding: Option<bool>,
    /// `Connection` tokens.
    close: bool,
    keep_alive: bool,
    /// Fields `Connection` names (hop-by-hop too).
    named: Vec<HeaderName>,
}

impl Framing {
    fn connection(&mut self, value: &[u8]) {
        for token in value.split(|&b| b == b',') {
            let token = token.trim_ascii();
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else if let Ok(name) = HeaderName::from_bytes(token) {
                self.named.push(name);
            }
        }
    }

    fn content_length(&mut self, value: &[u8]) {
        self.length = merge_content_length(self.length, value);
    }

    fn transfer_encoding(&mut self, value: &[u8]) {
        let last = value.rsplit(|&b| b == b',').next().unwrap_or_default();
        self.transfer_encoding = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
    }

    /// Whether the connection can carry another exchange after this response.
    fn keep_alive(&self, framing: ResponseFraming, version: Version) -> bool {
        framing != ResponseFraming::Close
            && if version == Version::HTTP_10 {
                self.keep_alive
            } else {
                !self.close
            }
    }

    /// RFC 9112 §6.3. With both `Transfer-Encoding` and `Content-Length`, the transfer coding
    /// wins.
    fn framing(
        &self,
        status: StatusCode,
        head_request: bool,
    ) -> Result<ResponseFraming, ExchangeError> {
        if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
            return Ok(ResponseFraming::Empty);
        }
        if let Some(chunked) = self.transfer_encoding {
            return Ok(if chunked {
                ResponseFraming::Chunked
            } else {
                ResponseFraming::Close
            });
        }
        match self.length {
            Some(Ok(n)) => Ok(ResponseFraming::Length(n)),
            None => Ok(ResponseFraming::Close),
            Some(Err(())) => Err(ExchangeError::Invalid("content-length")),
        }
    }
}

/// What a message's `Content-Length` says after one more field `value` (a list of members):
/// `Err` once some member is not a number or two disagree (RFC 9112 §6.3).
pub(crate) fn merge_content_length(
    mut length: Option<Result<u64, ()>>,
    value: &[u8],
) -> Option<Result<u64, ()>> {
    for member in value.split(|&b| b == b',') {
        let n = parse_length(member.trim_ascii());
        length = Some(match (length, n) {
            (None, n) => n,
            (Some(Ok(previous)), Ok(n)) if previous == n => Ok(n),
            _ => Err(()),
        });
    }
    length
}

/// A `Content-Length` value: decimal digits only (leading zeros allowed), at most
/// [`MAX_LENGTH`].
pub(crate) fn parse_length(digits: &[u8]) -> Result<u64, ()> {
    if digits.is_empty() {
        return Err(());
    }
    digits.iter().try_fold(0u64, |n, &d| {
        if !d.is_ascii_digit() {
            return Err(());
        }
        // Checked twice: 1844674407370955161 × 10 still fits in 64 bits, and adding 6 would
        // wrap `18446744073709551616` around to 0.
        n.checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(d - b'0')))
            .filter(|&n| n <= MAX_LENGTH)
            .ok_or(())
    })
}

/// The `Content-Length` of a request: every field and list member must be the same number.
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ()> {
    let mut fields = Framing::default();
    for value in headers.get_all(header::CONTENT_LENGTH) {
        fields.content_length(value.as_bytes());
    }
    fields.length.transpose()
}

/// Whether a request may be sent again after a reused connection failed before any response
/// byte arrived (RFC 9110 §9.2.2): the method is idempotent.
pub(super) fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Where a chunked body's decoder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunked {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes to go.
    Data(u64),
    /// Expecting the line end after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer fields, then an empty line.
    Trailers,
    Done,
}

/// What [`Chunked::decode`] produced.
#[derive(Debug)]
pub(crate) enum Decoded {
    Data(Bytes),
    Trailers(HeaderMap),
    /// The body ended (the final empty line has been consumed).
    End,
    /// `buf` holds no complete next element.
    NeedMore,
}

/// Why a chunked body cannot be decoded (RFC 9112 §7.1). The same decoder reads clients'
/// request bodies and backends' responses: who is at fault depends on the side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkedError {
    #[error("invalid chunk size")]
    Size,
    #[error("chunk-size line longer than {MAX_CHUNK_LINE} bytes")]
    LineTooLong,
    #[error("chunk data longer than its size")]
    DataTooLong,
    #[error("invalid trailer section")]
    Trailers,
    #[error("trailer section larger than {} KiB", MAX_HEAD / 1024)]
    TrailersTooLarge,
}

impl Chunked {
    /// Decodes the next element of a chunked body from the front of `buf`, consuming it.
    ///
    /// What it accepts beyond the letter of RFC 9112 §7.1, as nginx does: leading zeros in a
    /// chunk size, a bare LF as line end (§2.2), obsolete line folding in trailer fields
    /// (unfolded, §5.2). What it refuses: a size line without digits (never taken as the last
    /// chunk), a sign, `0x`, whitespace before the size, sizes over 2^63 - 1, control
    /// characters in an extension, data longer than its size. Trailer fields a trailer section
    /// may not carry ([`forbidden_trailer`]) are dropped.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ChunkedError> {
        loop {
            match *self {
                Chunked::Size => match parse_chunk_size(buf)? {
                    Some((used, size)) => {
                        buf.advance(used);
                        *self = if size == 0 {
                            Chunked::Trailers
                        } else {
                            Chunked::Data(size)
                        };
                    }
                    None => return Ok(Decoded::NeedMore),
                },
                Chunked::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = left.min(buf.len() as u64);
                    let data = buf.split_to(take as usize).freeze();
                    *self = match left - take {
                        0 => Chunked::DataEnd,
                        n => Chunked::Data(n),
                    };
                    return Ok(Decoded::Data(data));
                }
                Chunked::DataEnd => match line_end(buf) {
                    Some(Ok(used)) => {
                        buf.advance(used);
                        *self = Chunked::Size;
                    }
                    Some(Err(())) => return Err(ChunkedError::DataTooLong),
                    None => return Ok(Decoded::NeedMore),
                },
                Chunked::Trailers => {
                    match line_end(buf) {
                        // No trailer fields: the empty line ends the body.
                        Some(Ok(used)) => {
                            buf.advance(used);
                            *self = Chunked::Done;
                            return Ok(Decoded::End);
                        }
                        Some(Err(())) => {}
                        None => return Ok(Decoded::NeedMore),
                    }
                    let Some(end) = trailer_section_end(buf) else {
                        if buf.len() > MAX_HEAD {
                            return Err(ChunkedError::TrailersTooLarge);
                        }
                        return Ok(Decoded::NeedMore);
                    };
                    if end > MAX_HEAD {
                        return Err(ChunkedError::TrailersTooLarge);
                    }
                    unfold(&mut buf[..end]);
                    let trailers = parse_trailers(&buf[..end])?;
                    buf.advance(end);
                    *self = Chunked::Done;
                    return Ok(Decoded::Trailers(trailers));
                }
                Chunked::Done => return Ok(Decoded::End),
            }
        }
    }
}

/// Parses the chunk-size line at the start of `buf`: the bytes it takes (line end included) and
/// the size; `None` if the line is not complete yet. See [`Chunked::decode`] for what passes.
fn parse_chunk_size(buf: &[u8]) -> Result<Option<(usize, u64)>, ChunkedError> {
    let mut size: u64 = 0;
    let mut digits = 0usize;
    // 0: in the size; 1: after it (whitespace before `;`); 2: in an extension.
    let mut part = 0u8;
    for (i, &b) in buf.iter().enumerate() {
        if i >= MAX_CHUNK_LINE {
            return Err(ChunkedError::LineTooLong);
        }
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => 16,
        };
        if part == 0 && digit < 16 {
            size = size
                .checked_mul(16)
                .map(|s| s + u64::from(digit))
                .filter(|&s| s <= MAX_LENGTH)
                .ok_or(ChunkedError::Size)?;
            digits += 1;
            continue;
        }
        if digits == 0 {
            return Err(ChunkedError::Size);
        }
        match b {
            b'\n' => return Ok(Some((i + 1, size))),
            b'\r' => {
                return match buf.get(i + 1) {
                    Some(b'\n') => Ok(Some((i + 2, size))),
                    Some(_) => Err(ChunkedError::Size),
                    None => Ok(None),
                };
            }
            b' ' | b'\t' if part < 2 => part = 1,
            b';' => part = 2,
            // chunk-ext: tokens, quoted strings and whitespace; no control character.
            _ if part == 2 && (b == b'\t' || (b >= 0x20 && b != 0x7f)) => {}
            _ => return Err(ChunkedError::Size),
        }
    }
    Ok(None)
}

/// A line end (CRLF, or a bare LF) at the start of `buf`: the bytes it takes, `Err` if `buf`
/// starts with something else, `None` if more bytes are needed to tell.
fn line_end(buf: &[u8]) -> Option<Result<usize, ()>> {
    match buf {
        [] | [b'\r'] => None,
        [b'\n', ..] => Some(Ok(1)),
        [b'\r', b'\n', ..] => Some(Ok(2)),
        _ => Some(Err(())),
    }
}

/// Where the trailer section at the start of `buf` ends (just past its empty line), if it is
/// complete. `buf` starts with a field line, not with the empty line.
fn trailer_section_end(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = buf[from..].iter().position(|&b| b == b'\n') {
        let next = from + i + 1;
        match line_end(&buf[next..]) {
            Some(Ok(used)) => return Some(next + used),
            None => return None,
            Some(Err(())) => from = next,
        }
    }
    None
}

/// Replaces each obsolete line folding (a line end followed by a space or tab, RFC 9112 §5.2)
/// in a complete field section with spaces, in place.
fn unfold(section: &mut [u8]) {
    for i in 1..section.len() {
        if section[i - 1] == b'\n' && matches!(section[i], b' ' | b'\t') {
            section[i - 1] = b' ';
            if i >= 2 && section[i - 2] == b'\r' {
                section[i - 2] = b' ';
            }
        }
    }
}

/// The fields of a complete trailer section, without those [`forbidden_trailer`] names.
fn parse_trailers(section: &[u8]) -> Result<HeaderMap, ChunkedError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let fields = match httparse::parse_headers(section, &mut fields) {
        Ok(httparse::Status::Complete((_, fields))) => fields,
        _ => return Err(ChunkedError::Trailers),
    };
    let mut trailers = HeaderMap::with_capacity(fields.len());
    for f in fields {
        let name = HeaderName::from_bytes(f.name.as_bytes()).map_err(|_| ChunkedError::Trailers)?;
        if forbidden_trailer(&name) {
            continue;
        }
        let value = HeaderValue::from_bytes(f.value).map_err(|_| ChunkedError::Trailers)?;
        trailers.append(name, value);
    }
    Ok(trailers)
}

/// Fields a trailer section may not carry (RFC 9110 §6.5.1): those the recipient needs before
/// the content — framing, routing, authentication, request modifiers, content format — and
/// hop-by-hop ones. Go's `net/http` list, plus `upgrade`, `cookie` and `set-cookie`. They are
/// dropped, never passed on.
pub(crate) fn forbidden_trailer(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "authorization"
            | "cache-control"
            | "connection"
            | "content-encoding"
            | "content-length"
            | "content-range"
            | "content-type"
            | "cookie"
            | "expect"
            | "host"
            | "keep-alive"
            | "max-forwards"
            | "pragma"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "proxy-connection"
            | "range"
            | "set-cookie"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "www-authenticate"
    )
}

#[cfg(test)]
mod tests;
