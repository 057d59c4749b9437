use bytes::BytesMut;
use http::{Method, StatusCode, Version, header};

use super::*;

fn parse(raw: &str) -> Result<Option<RequestHead>, Refused> {
    parse_request(&mut BytesMut::from(raw), &mut Vec::new())
}

fn refusal(raw: &str) -> (StatusCode, &'static str) {
    let refused = parse(raw).expect_err(raw);
    (refused.status, refused.reason)
}

#[test]
fn parses_a_request_and_leaves_what_follows() {
    let mut buf = BytesMut::from(
        "POST /a/b?c=d HTTP/1.1\r\nHost: example.com\r\nContent-Length: 3\r\nX-A: 1\r\nx-a: 2\r\n\r\nabcGET",
    );
    let head = parse_request(&mut buf, &mut Vec::new()).unwrap().unwrap();
    assert_eq!(&buf[..], b"abcGET");
    let r = &head.request;
    assert_eq!(r.method(), Method::POST);
    assert_eq!(r.uri().path(), "/a/b");
    assert_eq!(r.uri().query(), Some("c=d"));
    assert_eq!(r.version(), Version::HTTP_11);
    assert_eq!(r.headers()[header::HOST], "example.com");
    let values: Vec<_> = r.headers().get_all("x-a").iter().collect();
    assert_eq!(values, ["1", "2"]);
    assert_eq!(head.framing, RequestFraming::Length(3));
    assert!(head.keep_alive);
    assert!(!head.expect_continue);
    assert!(!head.trailers);
}

#[test]
fn partial_heads_wait_for_more() {
    for raw in [
        "",
        "GET",
        "GET / HTTP/1.1\r\nHost: h\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nHost: a\r\n",
    ] {
        assert!(parse(raw).unwrap().is_none(), "{raw:?}");
    }
}

#[test]
fn persistence_follows_the_version_and_connection() {
    let keep = |raw: &str| parse(raw).unwrap().unwrap().keep_alive;
    assert!(keep("GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
    assert!(!keep(
        "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    ));
    assert!(!keep(
        "GET / HTTP/1.1\r\nHost: h\r\nConnection: foo, Close\r\n\r\n"
    ));
    assert!(!keep("GET / HTTP/1.0\r\n\r\n"));
    assert!(keep("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
}

#[test]
fn body_framing() {
    let framing = |raw: &str| parse(raw).unwrap().unwrap().framing;
    assert_eq!(
        framing("GET / HTTP/1.1\r\nHost: h\r\n\r\n"),
        RequestFraming::Empty
    );
    assert_eq!(
        framing("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"),
        RequestFraming::Empty
    );
    assert_eq!(
        framing("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 7, 7\r\ncontent-length: 7\r\n\r\n"),
        RequestFraming::Length(7)
    );
    assert_eq!(
        framing("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n"),
        RequestFraming::Chunked
    );
}

#[test]
fn ambiguous_framing_is_refused() {
    let bad = StatusCode::BAD_REQUEST;
    assert_eq!(
        refusal(
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        ),
        (bad, "both transfer-encoding and content-length")
    );
    assert_eq!(
        refusal("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
        (bad, "invalid content-length")
    );
    for length in ["-1", "+5", "5 5", "0x10", "", "99999999999999999999"] {
        let raw = format!("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: {length}\r\n\r\n");
        assert_eq!(refusal(&raw), (bad, "invalid content-length"), "{length:?}");
    }
    assert_eq!(
        refusal("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
        (bad, "transfer-encoding in an HTTP/1.0 request")
    );
    for coding in ["gzip", "gzip, chunked", "chunked, chunked"] {
        let raw = format!("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: {coding}\r\n\r\n");
        assert_eq!(
            refusal(&raw),
            (
                StatusCode::NOT_IMPLEMENTED,
                "transfer coding other than chunked"
            ),
            "{coding}"
        );
    }
    // Two fields are two codings.
    assert_eq!(
        refusal(
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .0,
        StatusCode::NOT_IMPLEMENTED
    );
}

#[test]
fn expect_continue_and_te_trailers() {
    let head = parse(
        "PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nTE: gzip, trailers\r\nContent-Length: 1\r\n\r\n",
    )
    .unwrap()
    .unwrap();
    assert!(head.expect_continue);
    assert!(head.trailers);
    // HTTP/1.0 clients do not wait for 100 Continue.
    let head = parse("PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")
        .unwrap()
        .unwrap();
    assert!(!head.expect_continue);
}

#[test]
fn malformed_heads_are_refused_with_the_fault_named() {
    let bad = StatusCode::BAD_REQUEST;
    assert_eq!(
        refusal("GET / HTTP/1.1\r\nHost: h\r\nBad Name: x\r\n\r\n"),
        (bad, "invalid header name")
    );
    assert_eq!(
        refusal("GET / HTTP/1.1\r\nHost: h\r\nX: a\u{1}b\r\n\r\n"),
        (bad, "invalid header value")
    );
    assert_eq!(
        refusal("G(T / HTTP/1.1\r\nHost: h\r\n\r\n"),
        (bad, "invalid method")
    );
    assert_eq!(
        refusal("GET / HTTP/2.0\r\n\r\n").0,
        StatusCode::HTTP_VERSION_NOT_SUPPORTED
    );
    assert_eq!(
        refusal("GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n folded\r\n\r\n").0,
        bad
    );
    assert_eq!(
        refusal("GET /a b HTTP/1.1\r\nHost: h\r\n\r\n"),
        (bad, "invalid request line")
    );
    assert_eq!(
        refusal("GET / FTP/1.1\r\n\r\n"),
        (bad, "invalid request line")
    );
}

#[test]
fn head_limits() {
    let too_large = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
    // Host and MAX_HEADERS more.
    let fields: String = (0..MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
    assert_eq!(
        refusal(&format!("GET / HTTP/1.1\r\nHost: h\r\n{fields}\r\n")),
        (too_large, "more than 100 header fields")
    );
    let fields: String = (1..MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
    assert!(
        parse(&format!("GET / HTTP/1.1\r\nHost: h\r\n{fields}\r\n"))
            .unwrap()
            .is_some()
    );
    // An unfinished head over the limit is refused without waiting for its end.
    let long = format!("GET / HTTP/1.1\r\nHost: h\r\nx: {}", "a".repeat(MAX_HEAD));
    assert_eq!(
        refusal(&long),
        (too_large, "request head larger than 64 KiB")
    );
    let complete = format!(
        "GET / HTTP/1.1\r\nHost: h\r\nx: {}\r\n\r\n",
        "a".repeat(MAX_HEAD)
    );
    assert_eq!(refusal(&complete).0, too_large);
}

#[test]
fn absolute_and_asterisk_targets() {
    let head = parse("GET http://example.com:8080/p?q HTTP/1.1\r\nHost: h\r\n\r\n")
        .unwrap()
        .unwrap();
    let uri = head.request.uri();
    assert_eq!(
        uri.authority().map(|a| a.as_str()),
        Some("example.com:8080")
    );
    assert_eq!(uri.path_and_query().map(|p| p.as_str()), Some("/p?q"));
    let head = parse("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n")
        .unwrap()
        .unwrap();
    assert_eq!(head.request.uri(), "*");
}

#[test]
fn discard_consumes_a_buffered_rest_only() {
    use crate::upstream::wire::Chunked;
    use body::{Progress, discard};
    let mut buf = BytesMut::from("abcGET");
    assert!(discard(&mut buf, Progress::Length(3)));
    assert_eq!(&buf[..], b"GET");
    let mut buf = BytesMut::from("ab");
    assert!(!discard(&mut buf, Progress::Length(3)));
    let mut buf = BytesMut::from("3\r\nabc\r\n0\r\nx-t: 1\r\n\r\nGET");
    assert!(discard(&mut buf, Progress::Chunked(Chunked::Size)));
    assert_eq!(&buf[..], b"GET");
    let mut buf = BytesMut::from("3\r\nabc\r\n");
    assert!(!discard(&mut buf, Progress::Chunked(Chunked::Size)));
    assert!(!discard(&mut BytesMut::new(), Progress::Failed));
    assert!(discard(&mut BytesMut::new(), Progress::Done));
}

#[test]
fn date_is_an_imf_fixdate() {
    let mut out = Vec::new();
    date(&mut out);
    let text = String::from_utf8(out).unwrap();
    let value = text
        .strip_prefix("date: ")
        .unwrap()
        .strip_suffix("\r\n")
        .unwrap();
    assert_eq!(value.len(), 29);
    assert!(value.ends_with(" GMT"), "{value}");
    assert!(httpdate::parse_http_date(value).is_ok(), "{value}");
}

#[test]
fn http11_needs_exactly_one_host() {
    let bad = StatusCode::BAD_REQUEST;
    assert_eq!(refusal("GET / HTTP/1.1\r\n\r\n"), (bad, "missing host"));
    assert_eq!(
        refusal("GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"),
        (bad, "more than one host")
    );
    assert_eq!(
        refusal("GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n"),
        (bad, "more than one host")
    );
    assert!(parse("GET / HTTP/1.0\r\n\r\n").unwrap().is_some());
    // Absolute form still needs its Host field.
    assert_eq!(
        refusal("GET http://a/ HTTP/1.1\r\n\r\n"),
        (bad, "missing host")
    );
}

#[test]
fn later_http_1_minor_versions_are_http_1_1() {
    for minor in 2..=9 {
        let raw = format!("GET /v HTTP/1.{minor}\r\nHost: h\r\n\r\n");
        let head = parse(&raw).unwrap().unwrap();
        assert_eq!(head.request.version(), Version::HTTP_11, "{raw:?}");
        assert_eq!(head.request.uri(), "/v");
        assert!(head.keep_alive);
    }
    // Arriving in pieces: the line is rewritten once, then the head completes.
    let mut buf = BytesMut::from("GET / HTTP/1.2\r\nHo");
    let mut spans = Vec::new();
    assert!(parse_request(&mut buf, &mut spans).unwrap().is_none());
    buf.extend_from_slice(b"st: h\r\n\r\n");
    let head = parse_request(&mut buf, &mut spans).unwrap().unwrap();
    assert_eq!(head.request.version(), Version::HTTP_11);
    // Not an HTTP-version at all (one digit each side of the dot).
    assert_eq!(
        refusal("GET / HTTP/1.10\r\nHost: h\r\n\r\n").0,
        StatusCode::BAD_REQUEST
    );
    for version in ["HTTP/2.0", "HTTP/0.9", "HTTP/3.0"] {
        let raw = format!("GET / {version}\r\nHost: h\r\n\r\n");
        assert_eq!(
            refusal(&raw).0,
            StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            "{raw:?}"
        );
    }
}

#[test]
fn connect_and_authority_form_targets_are_refused() {
    assert_eq!(
        refusal("CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n"),
        (StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not supported")
    );
    for method in ["GET", "POST", "OPTIONS"] {
        let raw = format!("{method} h:443 HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(
            refusal(&raw),
            (
                StatusCode::BAD_REQUEST,
                "authority-form target without CONNECT"
            ),
            "{raw:?}"
        );
    }
}

#[test]
fn host_must_be_a_valid_authority() {
    for host in [
        "example.com",
        "EXAMPLE.com:8080",
        "127.0.0.1",
        "[::1]:8080",
        "a_b.example",
        "xn--bcher-kva.example",
        "%65xample.com",
    ] {
        let raw = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
        assert!(parse(&raw).unwrap().is_some(), "{host:?}");
    }
    for host in [
        "",
        "a b",
        "a/b",
        "a\\b",
        "user@a",
        "a?b",
        "a#b",
        "a\tb",
        "\u{e9}.example",
    ] {
        let raw = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
        assert_eq!(
            refusal(&raw),
            (StatusCode::BAD_REQUEST, "invalid host"),
            "{host:?}"
        );
    }
    // HTTP/1.0 may omit Host, but one it sends must be valid.
    assert_eq!(
        refusal("GET / HTTP/1.0\r\nHost: a/b\r\n\r\n"),
        (StatusCode::BAD_REQUEST, "invalid host")
    );
}
