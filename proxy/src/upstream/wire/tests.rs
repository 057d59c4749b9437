use bytes::BufMut;
use http::Request;

use super::*;

fn parse(text: &[u8], head_request: bool) -> (Result<Parsed, ExchangeError>, BytesMut) {
    let mut buf = BytesMut::from(text);
    (parse_response(&mut buf, head_request), buf)
}

/// `head` with every field in its header map.
fn merged(mut head: ResponseHead) -> ResponseHead {
    if let Some(raw) = head.raw.take() {
        raw.merge_into(&mut head.headers);
    }
    head
}

fn head_of(text: &[u8]) -> (ResponseHead, BytesMut) {
    match parse(text, false) {
        (Ok(Parsed::Final(head)), rest) => (merged(head), rest),
        (other, _) => panic!("expected a final head, got {other:?}"),
    }
}

/// The fields kept as received, if the head took that path.
fn raw_of(text: &[u8], head_request: bool) -> Option<RawFields> {
    match parse(text, head_request) {
        (Ok(Parsed::Final(head)), _) => head.raw,
        (other, _) => panic!("expected a final head, got {other:?}"),
    }
}

#[test]
fn usual_heads_keep_their_fields_as_received_without_hop_by_hop_and_framing() {
    let raw = raw_of(
        b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Wed, 02 Dec 2026 05:18:41 GMT\r\nContent-Length: 3\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nX-A:  spaced value \r\nX-B:tight\nX-C: bare lf\n\r\nabc",
        false,
    )
    .expect("the usual head is kept as received");
    assert_eq!(
        raw.lines(),
        b"Server: nginx\r\nDate: Wed, 02 Dec 2026 05:18:41 GMT\r\nX-A: spaced value\r\nX-B: tight\r\nX-C: bare lf\r\n"
    );
    assert_eq!(raw.content_length(), Some(3));
    assert!(raw.has_date());
    let raw = raw_of(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        false,
    )
    .unwrap();
    assert_eq!(raw.lines(), b"");
    assert_eq!(raw.content_length(), None, "the transfer coding wins");
    assert!(!raw.has_date());
    // HEAD: the length describes the body a GET would get.
    let raw = raw_of(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true).unwrap();
    assert_eq!(raw.content_length(), Some(9));
}

#[test]
fn unusual_heads_go_through_the_header_map() {
    for text in [
        &b"HTTP/1.1 200 OK\r\nConnection: X-Private\r\nX-Private: 1\r\nContent-Length: 0\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
    ] {
        assert!(
            raw_of(text, false).is_none(),
            "{}",
            String::from_utf8_lossy(text)
        );
    }
}

#[test]
fn merged_fields_equal_the_header_map_path() {
    // The same head through both paths gives the same map.
    let text = b"HTTP/1.1 200 OK\r\nServer: x\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n";
    let (fast, _) = head_of(text);
    let mut buf = BytesMut::from(&text[..]);
    let Ok(Parsed::Final(slow)) = parse_response_mapped(&mut buf, false) else {
        panic!("the full parser refused the head");
    };
    assert!(slow.raw.is_none());
    assert_eq!(fast.headers, slow.headers);
    assert_eq!(fast.framing, slow.framing);
    assert_eq!(fast.keep_alive, slow.keep_alive);
}

#[test]
fn special_fields_are_recognised_in_any_case_and_only_they() {
    for name in HOP_BY_HOP_NAMES {
        assert!(
            matches!(
                hop_by_hop_or_framing(name.as_bytes()),
                Some(Special::Connection | Special::HopByHop)
            ),
            "{name}"
        );
        let upper = name.to_ascii_uppercase();
        assert!(hop_by_hop_or_framing(upper.as_bytes()).is_some(), "{upper}");
    }
    assert!(matches!(
        hop_by_hop_or_framing(b"Content-Length"),
        Some(Special::ContentLength)
    ));
    assert!(matches!(
        hop_by_hop_or_framing(b"TRANSFER-ENCODING"),
        Some(Special::TransferEncoding)
    ));
    for other in [
        "tx",
        "trailers",
        "upgrades",
        "connectionx",
        "keep-alivf",
        "date",
        "server",
        "x-upgrade",
    ] {
        assert!(hop_by_hop_or_framing(other.as_bytes()).is_none(), "{other}");
    }
}

const HOP_BY_HOP_NAMES: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

#[test]
fn a_final_head_leaves_the_body_in_the_buffer() {
    let (head, rest) = head_of(
        b"HTTP/1.1 201 Created\r\nServer: x\r\nContent-Length: 2\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\nokNEXT",
    );
    assert_eq!(head.status, StatusCode::CREATED);
    assert_eq!(head.version, Version::HTTP_11);
    assert!(head.reason.is_none(), "the usual phrase is not kept");
    assert_eq!(head.framing, ResponseFraming::Length(2));
    assert!(head.keep_alive);
    assert_eq!(head.headers["server"], "x");
    let cookies: Vec<_> = head.headers.get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["a=1", "b=2"]);
    assert_eq!(&rest[..], b"okNEXT");
}

#[test]
fn partial_heads_wait_and_oversized_ones_fail() {
    assert!(matches!(
        parse(b"HTTP/1.1 200 OK\r\nContent-Le", false).0,
        Ok(Parsed::Partial)
    ));
    let mut huge = b"HTTP/1.1 200 OK\r\nx-big: ".to_vec();
    huge.resize(MAX_HEAD + 10, b'a');
    assert!(matches!(
        parse(&huge, false).0,
        Err(ExchangeError::HeadTooLarge)
    ));
}

#[test]
fn interim_responses_are_consumed() {
    let (parsed, rest) = parse(
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200",
        false,
    );
    assert!(matches!(parsed, Ok(Parsed::Interim)));
    assert_eq!(&rest[..], b"HTTP/1.1 200");
}

#[test]
fn framing_follows_rfc_9112() {
    let framing = |text: &[u8], head_request| match parse(text, head_request).0 {
        Ok(Parsed::Final(h)) => {
            let h = merged(h);
            Ok((h.framing, h.keep_alive, h.headers))
        }
        Ok(other) => panic!("{other:?}"),
        Err(e) => Err(e.to_string()),
    };
    let ok = |text: &[u8]| framing(text, false).unwrap();
    assert_eq!(ok(b"HTTP/1.1 200 OK\r\n\r\n").0, ResponseFraming::Close);
    assert!(
        !ok(b"HTTP/1.1 200 OK\r\n\r\n").1,
        "a close-delimited body ends the connection"
    );
    assert_eq!(
        ok(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n").0,
        ResponseFraming::Empty
    );
    assert_eq!(
        ok(b"HTTP/1.1 304 Not Modified\r\n\r\n").0,
        ResponseFraming::Empty
    );
    let (f, keep, _) = framing(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true).unwrap();
    assert_eq!((f, keep), (ResponseFraming::Empty, true), "HEAD");
    let (f, keep, headers) =
        ok(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
    assert_eq!((f, keep), (ResponseFraming::Chunked, true));
    assert!(
        !headers.contains_key("content-length"),
        "never both framings"
    );
    assert_eq!(
        ok(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n").0,
        ResponseFraming::Close
    );
    assert_eq!(
        ok(b"HTTP/1.1 200 OK\r\nContent-Length: 4, 4\r\nContent-Length: 4\r\n\r\n").0,
        ResponseFraming::Length(4)
    );
    for bad in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
    ] {
        assert_eq!(
            framing(bad, false).unwrap_err(),
            "invalid response: content-length"
        );
    }
}

#[test]
fn persistence_follows_the_version_and_connection() {
    let keep = |text: &[u8]| head_of(text).0.keep_alive;
    assert!(keep(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
    assert!(!keep(
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n"
    ));
    assert!(!keep(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
    assert!(keep(
        b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n"
    ));
}

#[test]
fn hop_by_hop_fields_are_read_and_not_passed_on() {
    let (head, _) = head_of(
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Private\r\nKeep-Alive: timeout=5\r\nX-Private: 1\r\nUpgrade: h2c\r\nX-Kept: 2\r\nContent-Length: 0\r\n\r\n",
    );
    let mut names: Vec<&str> = head.headers.keys().map(HeaderName::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["content-length", "x-kept"]);
    assert!(head.keep_alive);
}

#[test]
fn unusual_reason_phrases_and_folded_headers_are_kept() {
    let (head, _) =
        head_of(b"HTTP/1.1 200 Fine Thanks\r\nX-Folded: a\r\n b\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(head.reason.unwrap().as_bytes(), b"Fine Thanks");
    assert_eq!(head.headers["x-folded"], "a   b");
}

#[test]
fn chunked_bodies_decode_across_any_split() {
    let wire = b"4;ext=\"v\"\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nExpires: never\r\n\r\n";
    // Fed one byte at a time, and whole.
    for step in [1, wire.len()] {
        let mut decoder = Chunked::Size;
        let mut buf = BytesMut::new();
        let (mut body, mut trailers, mut ended) = (Vec::new(), None, false);
        for piece in wire.chunks(step) {
            buf.put_slice(piece);
            loop {
                match decoder.decode(&mut buf).unwrap() {
                    Decoded::Data(d) => body.extend_from_slice(&d),
                    Decoded::Trailers(t) => trailers = Some(t),
                    Decoded::End => {
                        ended = true;
                        break;
                    }
                    Decoded::NeedMore => break,
                }
            }
        }
        if !ended {
            ended = matches!(decoder.decode(&mut buf).unwrap(), Decoded::End);
        }
        assert!(ended, "step {step}");
        assert_eq!(body, b"Wikipedia in\r\n\r\nchunks.", "step {step}");
        assert_eq!(trailers.unwrap()["expires"], "never", "step {step}");
        assert!(buf.is_empty());
    }
}

/// Decodes `wire` whole: the body, the trailers, and whether it ended.
fn decode_all(wire: &[u8]) -> Result<(Vec<u8>, Option<HeaderMap>, bool), ChunkedError> {
    let mut decoder = Chunked::Size;
    let mut buf = BytesMut::from(wire);
    let (mut body, mut trailers) = (Vec::new(), None);
    loop {
        match decoder.decode(&mut buf)? {
            Decoded::Data(d) => body.extend_from_slice(&d),
            Decoded::Trailers(t) => trailers = Some(t),
            Decoded::End => return Ok((body, trailers, true)),
            Decoded::NeedMore => return Ok((body, trailers, false)),
        }
    }
}

#[test]
fn malformed_chunks_are_errors() {
    for (wire, error) in [
        (&b"zz\r\n"[..], ChunkedError::Size),
        (b"3\r\nabcXY", ChunkedError::DataTooLong),
        (b"3\r\nabc\rX", ChunkedError::DataTooLong),
        (b"3\r\nhello\r\n0\r\n\r\n", ChunkedError::DataTooLong),
        // Whitespace before the size, a sign, a prefix, two numbers.
        (b" 5\r\nhello\r\n", ChunkedError::Size),
        (b"-5\r\nhello\r\n", ChunkedError::Size),
        (b"+5\r\nhello\r\n", ChunkedError::Size),
        (b"0x5\r\nhello\r\n", ChunkedError::Size),
        (b"5 5\r\nhello\r\n", ChunkedError::Size),
        // Beyond 2^63 - 1.
        (b"8000000000000000\r\n", ChunkedError::Size),
        (b"10000000000000005\r\n", ChunkedError::Size),
        // No digits: never the last chunk.
        (b"\r\n\r\n", ChunkedError::Size),
        (b"\n\n", ChunkedError::Size),
        (b" \r\n\r\n", ChunkedError::Size),
        (b";ext\r\n\r\n", ChunkedError::Size),
        // A bare CR, and control characters in an extension.
        (b"5\rhello\r\n", ChunkedError::Size),
        (b"5;a\rb\r\nhello\r\n", ChunkedError::Size),
        (b"5;a\x00b\r\nhello\r\n", ChunkedError::Size),
        (b"5;a\x7fb\r\nhello\r\n", ChunkedError::Size),
        // A trailer section that is not one.
        (b"0\r\n: x\r\n\r\n", ChunkedError::Trailers),
        (b"0\r\n x: folded first\r\n\r\n", ChunkedError::Trailers),
    ] {
        assert_eq!(
            decode_all(wire).map(drop),
            Err(error),
            "{:?}",
            String::from_utf8_lossy(wire)
        );
    }
    let mut long = b"1;".to_vec();
    long.resize(MAX_CHUNK_LINE + 1, b'x');
    let mut buf = BytesMut::from(&long[..]);
    assert_eq!(
        Chunked::Size.decode(&mut buf).map(drop),
        Err(ChunkedError::LineTooLong)
    );
    let mut zeros = vec![b'0'; MAX_CHUNK_LINE + 1];
    zeros.extend_from_slice(b"5\r\n");
    assert_eq!(decode_all(&zeros).map(drop), Err(ChunkedError::LineTooLong));
    let mut trailers = b"0\r\n".to_vec();
    trailers.resize(MAX_HEAD + 10, b'x');
    assert_eq!(
        decode_all(&trailers).map(drop),
        Err(ChunkedError::TrailersTooLarge)
    );
}

#[test]
fn lenient_chunks_that_nginx_accepts_decode() {
    for wire in [
        &b"0000000000000000000005\r\nhello\r\n0000\r\n\r\n"[..],
        b"5\nhello\n0\n\n",
        b"5\r\nhello\n0\r\n\n",
        b"5 \r\nhello\r\n0\t\r\n\r\n",
        b"5 ; a=1 ;b=\"x y\"\r\nhello\r\n0;last\r\n\r\n",
        b"5;\xe9t\xe9\r\nhello\r\n0\r\n\r\n",
        // A bare LF ends the size line, inside an extension too: what follows is data.
        b"5;a\nhello\r\n0\r\n\r\n",
        b"7FFFFFFFFFFFFFFF\r\nhello",
    ] {
        let (body, _, _) =
            decode_all(wire).unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(wire)));
        assert_eq!(body, b"hello", "{:?}", String::from_utf8_lossy(wire));
    }
}

#[test]
fn trailers_are_unfolded_and_forbidden_ones_dropped() {
    let (body, trailers, ended) = decode_all(
        b"2\r\nok\r\n0\r\nX-Folded: one\r\n two\r\n\tthree\nContent-Length: 5\r\nHost: a\r\n\
          Transfer-Encoding: chunked\r\nTrailer: x\r\nSet-Cookie: a=b\r\nX-Sum: 42\n\r\nnext",
    )
    .unwrap();
    assert!(ended);
    assert_eq!(body, b"ok");
    let trailers = trailers.unwrap();
    let names: Vec<&str> = trailers.keys().map(HeaderName::as_str).collect();
    assert_eq!(names, ["x-folded", "x-sum"]);
    assert_eq!(trailers["x-folded"], "one   two  \tthree");
    // Forbidden fields are not written either, whatever protocol they came in.
    let mut map = HeaderMap::new();
    map.insert("content-length", HeaderValue::from_static("5"));
    map.insert("x-sum", HeaderValue::from_static("42"));
    let mut out = Vec::new();
    encode_last_chunk(&mut out, Some(&map));
    assert_eq!(out, b"0\r\nx-sum: 42\r\n\r\n");
}

#[test]
fn lengths_may_have_leading_zeros_and_stay_below_2_pow_63() {
    assert_eq!(parse_length(b"0"), Ok(0));
    assert_eq!(parse_length(b"000000000000000000000000042"), Ok(42));
    assert_eq!(parse_length(b"9223372036854775807"), Ok(i64::MAX as u64));
    for bad in [
        &b""[..],
        b"9223372036854775808",
        b"99999999999999999999",
        // 2^64 and the next three: the last digit's addition overflows 64 bits, which would
        // wrap them around to 0..=3.
        b"18446744073709551616",
        b"18446744073709551619",
        b"+1",
        b"-1",
        b"1 2",
        b"0x1",
    ] {
        assert_eq!(
            parse_length(bad),
            Err(()),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    assert_eq!(merge_content_length(None, b"005, 5"), Some(Ok(5)));
    assert_eq!(merge_content_length(Some(Ok(5)), b"6"), Some(Err(())));
}

#[test]
fn request_heads_carry_the_chosen_framing() {
    let encode = |request: Request<()>, end_stream, exact| {
        let (parts, ()) = request.into_parts();
        let framing = RequestFraming::choose(&parts.headers, end_stream, exact);
        let mut out = Vec::new();
        encode_head(&mut out, &parts, &[], framing);
        (framing, String::from_utf8(out).unwrap())
    };
    let get = Request::get("/a?b=1").header("host", "h").body(()).unwrap();
    assert_eq!(
        encode(get, true, Some(0)),
        (
            RequestFraming::Empty,
            "GET /a?b=1 HTTP/1.1\r\nhost: h\r\n\r\n".to_owned()
        )
    );
    let with_length = Request::post("/")
        .header("content-length", "5")
        .body(())
        .unwrap();
    assert_eq!(
        encode(with_length, false, Some(5)),
        (
            RequestFraming::Length(5),
            "POST / HTTP/1.1\r\ncontent-length: 5\r\n\r\n".to_owned()
        )
    );
    // Repeated, listed or zero-padded lengths go out as one plain number.
    let repeated = Request::post("/")
        .header("content-length", "005")
        .header("content-length", "5, 5")
        .header("x-a", "1")
        .body(())
        .unwrap();
    assert_eq!(
        encode(repeated, false, Some(5)),
        (
            RequestFraming::Length(5),
            "POST / HTTP/1.1\r\nx-a: 1\r\ncontent-length: 5\r\n\r\n".to_owned()
        )
    );
    let announced_empty = Request::post("/")
        .header("content-length", "00")
        .body(())
        .unwrap();
    assert_eq!(
        encode(announced_empty, true, Some(0)).1,
        "POST / HTTP/1.1\r\ncontent-length: 0\r\n\r\n"
    );
    let sized = Request::post("/").body(()).unwrap();
    assert_eq!(
        encode(sized, false, Some(7)).1,
        "POST / HTTP/1.1\r\ncontent-length: 7\r\n\r\n"
    );
    // The client's chunked body stays chunked; a stale Content-Length is not passed on.
    let chunked = Request::post("/")
        .header("transfer-encoding", "chunked")
        .header("content-length", "3")
        .body(())
        .unwrap();
    assert_eq!(
        encode(chunked, false, None),
        (
            RequestFraming::Chunked,
            "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n".to_owned()
        )
    );
    let (parts, ()) = Request::get("/").body(()).unwrap().into_parts();
    let mut out = Vec::new();
    let extra = [(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static("http"),
    )];
    encode_head(&mut out, &parts, &extra, RequestFraming::Empty);
    assert_eq!(out, b"GET / HTTP/1.1\r\nx-forwarded-proto: http\r\n\r\n");

    let mut out = Vec::new();
    encode_data(&mut out, RequestFraming::Chunked, &[b'x'; 26]);
    encode_last_chunk(&mut out, None);
    let mut expected = b"1a\r\n".to_vec();
    expected.extend_from_slice(&[b'x'; 26]);
    expected.extend_from_slice(b"\r\n0\r\n\r\n");
    assert_eq!(out, expected);
}

#[test]
fn idempotent_methods_are_those_of_rfc_9110() {
    for m in [Method::GET, Method::HEAD, Method::PUT, Method::DELETE] {
        assert!(idempotent(&m), "{m}");
    }
    for m in [Method::POST, Method::PATCH, Method::CONNECT] {
        assert!(!idempotent(&m), "{m}");
    }
}
