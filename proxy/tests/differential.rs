//! Differential test: every case of the corpus in `tests/differential/` goes as raw bytes to
//! serin-proxy, nginx and HAProxy, each configured as the same reverse proxy in front of one
//! recording backend, and what each does with it is compared.
//!
//! The routes, the same for all three:
//!
//! ```text
//! Host admin.example             ─> admin
//! any other host, path /admin/…  ─> admin
//! anything else                  ─> main
//! ```
//!
//! The backend listens on two ports per proxy (`main`, `admin`), records every request exactly
//! as it arrives (request line, fields, decoded body, whether the body was complete) and answers
//! `200` with `NAME METHOD TARGET` as its body, or, for a case with an `answer`, once with the
//! case's raw bytes (a malicious backend). After each case a follow-up request on a new
//! connection must get its own answer.
//!
//! Asserted for serin-proxy (nginx and HAProxy are the reference; where they disagree with each
//! other serin-proxy may side with either):
//!
//! - every request reaching a backend is one that the routes send to that backend when read as
//!   a backend reads it (Host, or the authority of an absolute-form target; the path with dot
//!   segments removed and percent-encoded unreserved characters decoded): no request is split
//!   differently at the backend than the proxy routed it;
//! - nothing is forwarded that both peers refuse, and a request both peers forward is
//!   forwarded (a case may say `stricter REASON` where serin-proxy refuses on purpose);
//! - what reaches the backend is what one of the peers sent: the same number of requests, the
//!   same methods and bodies (a request whose body never arrived whole is not counted as
//!   forwarded), each framed by one plain `Content-Length` that is its body's length or by
//!   `Transfer-Encoding: chunked` alone;
//! - every request head received whole is answered, if only with a 400 (a connection closed
//!   without an answer is one whose task failed);
//! - no client fault is counted against a backend: a case whose backend answers normally adds
//!   no 5xx to any `backend="…"` of `serin_http_requests_total`, and no backend is counted more
//!   often than it received requests;
//! - a response a malicious backend smuggles after its answer never reaches another request:
//!   the follow-up, and any later request pipelined in the case, never sees `SMUGGLED`.
//!
//! Each case's bytes go to each proxy on a new connection in one write, followed by a
//! half-close; the proxy's answer is read until it closes. nginx runs with
//! `proxy_ignore_client_abort on` so that the half-close does not abort its requests; nginx and
//! HAProxy wait 1 s for a backend that stops answering.
//!
//! Corpus format (`*.txt`): cases separated by blank lines; each starts with `#` lines saying
//! what it probes, then `case NAME`, `send BYTES` (lines concatenated), and optionally `answer
//! BYTES` (the backend's raw answer to the first request), `late BYTES` (sent 50 ms after the
//! answer if no request came meanwhile), `close` (the backend closes after its answer) and
//! `stricter REASON`. BYTES take the escapes `\r`, `\n`, `\t`, `\0`, `\\` and `\xNN`.
//!
//! The test prints what each proxy did with each case (statuses, requests forwarded whole and
//! partly), and where nginx or HAProxy broke an invariant asserted for serin-proxy.
//! `DIFFERENTIAL_CASES=TEXT` runs only the cases whose file or name contains TEXT, and
//! `DIFFERENTIAL_BODIES=1` adds the start of each response body to the report.
//!
//! nginx and HAProxy must be installed (Debian: `nginx-light`, `haproxy`); without them the
//! test fails.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::wire::{Framing, Head, Wire};
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// Time allowed for one exchange with a proxy, until it closes the connection.
const EXCHANGE: Duration = Duration::from_secs(3);
/// The follow-up request after each case.
const FOLLOW_UP: &[u8] =
    b"GET /followup HTTP/1.1\r\nHost: main.example\r\nConnection: close\r\n\r\n";
/// What a backend answers the follow-up with.
const FOLLOW_UP_ANSWER: &str = "main GET /followup";
/// When a malicious backend sends its `late` bytes.
const LATE: Duration = Duration::from_millis(50);
const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/differential");

// ---------------------------------------------------------------------------------------------
// The corpus

#[derive(Debug, Clone)]
struct Case {
    file: String,
    name: String,
    what: String,
    send: Vec<u8>,
    answer: Option<Vec<u8>>,
    late: Option<Vec<u8>>,
    /// The backend closes the connection after its scripted answer.
    close: bool,
    stricter: Option<String>,
}

fn unescape(text: &str, at: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let next = bytes.get(i + 1).copied();
        i += 2;
        match next {
            Some(b'r') => out.push(b'\r'),
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(b'0') => out.push(0),
            Some(b'\\') => out.push(b'\\'),
            Some(b'x') => {
                let hex = text
                    .get(i..i + 2)
                    .unwrap_or_else(|| panic!("{at}: bad \\x"));
                out.push(u8::from_str_radix(hex, 16).unwrap_or_else(|_| panic!("{at}: bad \\x")));
                i += 2;
            }
            other => panic!("{at}: unknown escape {other:?}"),
        }
    }
    out
}

fn load_corpus() -> Vec<Case> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(CORPUS)
        .expect("the corpus directory")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    let mut cases = Vec::new();
    for path in files {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, block) in text.split("\n\n").enumerate() {
            let block = block.trim();
            if block.is_empty() {
                continue;
            }
            let at = format!("{file} block {}", n + 1);
            let mut case = Case {
                file: file.clone(),
                name: String::new(),
                what: String::new(),
                send: Vec::new(),
                answer: None,
                late: None,
                close: false,
                stricter: None,
            };
            for line in block.lines() {
                if let Some(c) = line.strip_prefix('#') {
                    case.what.push_str(c.trim());
                    case.what.push(' ');
                } else if let Some(name) = line.strip_prefix("case ") {
                    case.name = name.trim().to_owned();
                } else if let Some(b) = line.strip_prefix("send ") {
                    case.send.extend(unescape(b, &at));
                } else if let Some(b) = line.strip_prefix("answer ") {
                    case.answer
                        .get_or_insert_with(Vec::new)
                        .extend(unescape(b, &at));
                } else if let Some(b) = line.strip_prefix("late ") {
                    case.late
                        .get_or_insert_with(Vec::new)
                        .extend(unescape(b, &at));
                } else if line == "close" {
                    case.close = true;
                } else if let Some(r) = line.strip_prefix("stricter ") {
                    case.stricter = Some(r.trim().to_owned());
                } else {
                    panic!("{at}: cannot read {line:?}");
                }
            }
            assert!(!case.name.is_empty(), "{at}: no `case NAME`");
            assert!(
                !case.what.trim().is_empty(),
                "{at}: case {} says not what it probes",
                case.name
            );
            assert!(
                !case.send.is_empty(),
                "{at}: case {} sends nothing",
                case.name
            );
            cases.push(case);
        }
    }
    let mut names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    names.sort_unstable();
    for pair in names.windows(2) {
        assert_ne!(pair[0], pair[1], "case name used twice");
    }
    cases
}

// ---------------------------------------------------------------------------------------------
// The recording backend

/// One request as a backend received it.
#[derive(Debug, Clone)]
struct Seen {
    case: usize,
    backend: &'static str,
    start: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    complete: bool,
}

impl Seen {
    fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn method(&self) -> &str {
        self.start.split(' ').next().unwrap_or_default()
    }

    fn target(&self) -> &str {
        self.start.split(' ').nth(1).unwrap_or_default()
    }

    /// Where the routes send this request, read as a backend reads it.
    fn route(&self) -> &'static str {
        let target = self.target();
        let (authority, path) = match target.split_once("://") {
            Some((_, rest)) => match rest.find('/') {
                Some(i) => (Some(&rest[..i]), &rest[i..]),
                None => (Some(rest), "/"),
            },
            None => (None, target),
        };
        let host = authority
            .map(str::to_owned)
            .or_else(|| self.header("host").first().map(|h| (*h).to_owned()))
            .unwrap_or_default()
            .to_ascii_lowercase();
        let host = host.split(':').next().unwrap_or_default();
        route(host.trim_end_matches('.'), &backend_path(path))
    }
}

/// The routes of the test, on a host and a normalised path.
fn route(host: &str, path: &str) -> &'static str {
    if host == "admin.example" || path == "/admin" || path.starts_with("/admin/") {
        "admin"
    } else {
        "main"
    }
}

/// The path a backend that normalises serves: without query, percent-encoded unreserved
/// characters decoded (RFC 3986 §6.2.2.2), dot segments removed (§5.2.4).
fn backend_path(target: &str) -> String {
    let path = target.split(['?', '#']).next().unwrap_or_default();
    let mut decoded = Vec::new();
    let b = path.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = path
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            && (v.is_ascii_alphanumeric() || b"-._~".contains(&v))
        {
            decoded.push(v);
            i += 3;
            continue;
        }
        decoded.push(b[i]);
        i += 1;
    }
    let decoded = String::from_utf8_lossy(&decoded).into_owned();
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = decoded.split('/').skip(1).collect();
    for (n, s) in segments.iter().enumerate() {
        let last = n + 1 == segments.len();
        match *s {
            "." => {
                if last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

/// A raw answer the backend gives once, to the first request it receives.
#[derive(Debug, Clone)]
struct Script {
    answer: Vec<u8>,
    late: Option<Vec<u8>>,
    close: bool,
}

/// The backend behind one proxy: two listeners, one record.
struct Recorder {
    main: u16,
    admin: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    script: Arc<Mutex<Option<Script>>>,
    case: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Recorder {
    async fn start() -> Recorder {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(None));
        let case = Arc::new(AtomicUsize::new(usize::MAX));
        let mut ports = Vec::new();
        let mut tasks = Vec::new();
        for name in ["main", "admin"] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            ports.push(listener.local_addr().unwrap().port());
            let (seen, script, case) = (seen.clone(), script.clone(), case.clone());
            tasks.push(tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let (seen, script, case) = (seen.clone(), script.clone(), case.clone());
                    tokio::spawn(serve_backend(name, stream, seen, script, case));
                }
            }));
        }
        Recorder {
            main: ports[0],
            admin: ports[1],
            seen,
            script,
            case,
            tasks,
        }
    }

    fn taken(&self, case: usize) -> Vec<Seen> {
        let seen = self.seen.lock().unwrap();
        seen.iter().filter(|s| s.case == case).cloned().collect()
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

async fn serve_backend(
    name: &'static str,
    stream: TcpStream,
    seen: Arc<Mutex<Vec<Seen>>>,
    script: Arc<Mutex<Option<Script>>>,
    case: Arc<AtomicUsize>,
) {
    let _ = stream.set_nodelay(true);
    let mut wire = Wire::new(stream);
    loop {
        let Some(raw) = wire.take_until(b"\r\n\r\n").await else {
            return;
        };
        let at = case.load(Ordering::SeqCst);
        let head = Head::parse(&raw);
        let framing = if head.chunked() {
            Framing::Chunked
        } else {
            Framing::Length(head.content_length().unwrap_or(0))
        };
        let (body, complete) = wire.read_body(framing).await;
        let close = head
            .get("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("close"));
        let method = head.start.split(' ').next().unwrap_or_default().to_owned();
        let target = head.start.split(' ').nth(1).unwrap_or_default().to_owned();
        seen.lock().unwrap().push(Seen {
            case: at,
            backend: name,
            start: head.start,
            headers: head.headers,
            body,
            complete,
        });
        if !complete {
            return;
        }
        let scripted = script.lock().unwrap().take();
        match scripted {
            Some(script) => {
                if wire.stream.write_all(&script.answer).await.is_err() {
                    return;
                }
                // Late bytes go to an idle connection: once a next request has arrived, no
                // proxy can tell them from its answer.
                if let Some(late) = script.late
                    && tokio::time::timeout(LATE, wire.fill()).await.is_err()
                    && wire.stream.write_all(&late).await.is_err()
                {
                    return;
                }
                if script.close {
                    return;
                }
            }
            None => {
                let text = format!("{name} {method} {target}");
                let body = if method == "HEAD" { "" } else { text.as_str() };
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{body}",
                    text.len()
                );
                if wire.stream.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
        if close {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The three proxies

fn binary(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not installed: the differential test compares serin-proxy with nginx \
                 and HAProxy; install them (Debian: apt-get install nginx-light haproxy)"
            )
        })
}

/// A peer proxy process, stopped when dropped.
struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    async fn wait_listening(&mut self, port: u16) {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}): {}",
                    self.name,
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return;
            }
            assert!(
                Instant::now() < until,
                "{} does not listen on {port}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn start_nginx(dir: &Path, port: u16, backend: &Recorder) -> Process {
    let dir = dir.join("nginx");
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.display();
    let conf = format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  upstream main {{ server 127.0.0.1:{main}; keepalive 8; }}
  upstream admin {{ server 127.0.0.1:{admin}; keepalive 8; }}
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_set_header Host $host;
  proxy_ignore_client_abort on;
  proxy_read_timeout 1s;
  server {{
    listen 127.0.0.1:{port} default_server;
    server_name _;
    location / {{ proxy_pass http://main; }}
    location = /admin {{ proxy_pass http://admin; }}
    location /admin/ {{ proxy_pass http://admin; }}
  }}
  server {{
    listen 127.0.0.1:{port};
    server_name admin.example;
    location / {{ proxy_pass http://admin; }}
  }}
}}
"#,
        main = backend.main,
        admin = backend.admin,
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let log = dir.join("error.log");
    let child = Command::new(binary("nginx"))
        .arg("-e")
        .arg(&log)
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx starts");
    let mut process = Process {
        name: "nginx",
        child,
        log,
    };
    process.wait_listening(port).await;
    process
}

async fn start_haproxy(dir: &Path, port: u16, backend: &Recorder) -> Process {
    let dir = dir.join("haproxy");
    std::fs::create_dir_all(&dir).unwrap();
    let conf = format!(
        r#"global
  maxconn 256
defaults
  mode http
  timeout connect 2s
  timeout client 5s
  timeout server 1s
frontend fe
  bind 127.0.0.1:{port}
  acl admin_host req.hdr(host),field(1,:),lower admin.example
  acl admin_path path /admin
  acl admin_path path_beg /admin/
  use_backend admin if admin_host || admin_path
  default_backend main
backend main
  server main 127.0.0.1:{main}
backend admin
  server admin 127.0.0.1:{admin}
"#,
        main = backend.main,
        admin = backend.admin,
    );
    std::fs::write(dir.join("haproxy.cfg"), conf).unwrap();
    let log = dir.join("haproxy.log");
    let child = Command::new(binary("haproxy"))
        .arg("-db")
        .arg("-f")
        .arg(dir.join("haproxy.cfg"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("haproxy starts");
    let mut process = Process {
        name: "haproxy",
        child,
        log,
    };
    process.wait_listening(port).await;
    process
}

async fn start_serin(port: u16, backend: &Recorder) -> Harness {
    let routes = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: admin-host, namespace: test}\nspec:\n  parentRefs: [{name: gw}]\n  hostnames: [admin.example]\n  rules:\n  - backendRefs:\n    - {group: serin.dev, kind: Backend, name: admin, weight: 1}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: paths, namespace: test}\nspec:\n  parentRefs: [{name: gw}]\n  rules:\n  - matches: [{path: {type: PathPrefix, value: /admin}}]\n    backendRefs:\n    - {group: serin.dev, kind: Backend, name: admin, weight: 1}\n  - backendRefs:\n    - {group: serin.dev, kind: Backend, name: main, weight: 1}\n";
    Harness::start(
        port,
        &[
            (
                "gw.yaml",
                gateway_and_backends(port, &[("main", backend.main), ("admin", backend.admin)]),
            ),
            ("routes.yaml", routes.to_owned()),
        ],
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// One exchange

/// What a client got back: the responses it could read, and how the exchange ended.
#[derive(Debug, Clone, Default)]
struct Answer {
    responses: Vec<(u16, Vec<u8>)>,
    /// Bytes after the last response that are not one.
    garbage: bool,
    /// The proxy neither answered nor closed within [`EXCHANGE`].
    hung: bool,
}

impl Answer {
    fn statuses(&self) -> String {
        let mut s: Vec<String> = self.responses.iter().map(|(c, _)| c.to_string()).collect();
        if s.is_empty() {
            s.push("close".into());
        }
        if self.garbage {
            s.push("garbage".into());
        }
        if self.hung {
            s.push("hung".into());
        }
        s.join(",")
    }
}

/// Sends `bytes` on a new connection to `port`, half-closes, and reads until the proxy closes.
async fn exchange(port: u16, bytes: &[u8]) -> Answer {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)).await else {
        return Answer {
            hung: true,
            ..Answer::default()
        };
    };
    let _ = stream.write_all(bytes).await;
    let _ = stream.shutdown().await;
    let mut wire = Wire::new(stream);
    let hung = tokio::time::timeout(EXCHANGE, async { while wire.fill().await {} })
        .await
        .is_err();
    let head_first = bytes.starts_with(b"HEAD ");
    let mut answer = parse_responses(&wire.buf, head_first);
    answer.hung = hung;
    answer
}

/// The responses in `raw`, read by their framing.
fn parse_responses(mut raw: &[u8], head_first: bool) -> Answer {
    let mut answer = Answer::default();
    while !raw.is_empty() {
        let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
            answer.garbage = true;
            break;
        };
        let head = Head::parse(&raw[..end]);
        if !head.start.starts_with("HTTP/1.") {
            answer.garbage = true;
            break;
        }
        raw = &raw[end + 4..];
        let status = head.status();
        if (100..200).contains(&status) {
            continue;
        }
        let no_body = (head_first && answer.responses.is_empty()) || status == 204 || status == 304;
        let body = if no_body {
            Vec::new()
        } else if head.chunked() {
            let mut body = Vec::new();
            loop {
                let Some(i) = raw.windows(2).position(|w| w == b"\r\n") else {
                    answer.garbage = true;
                    raw = &[];
                    break;
                };
                let line = String::from_utf8_lossy(&raw[..i]).into_owned();
                let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16);
                raw = &raw[i + 2..];
                match size {
                    Ok(0) => {
                        // Trailers up to the empty line.
                        let end = raw
                            .windows(2)
                            .position(|w| w == b"\r\n")
                            .unwrap_or(raw.len());
                        let skip = if end == 0 {
                            2
                        } else {
                            raw.windows(4)
                                .position(|w| w == b"\r\n\r\n")
                                .map_or(raw.len(), |p| p + 4)
                        };
                        raw = &raw[skip.min(raw.len())..];
                        break;
                    }
                    Ok(n) if raw.len() >= n + 2 => {
                        body.extend_from_slice(&raw[..n]);
                        raw = &raw[n + 2..];
                    }
                    _ => {
                        answer.garbage = true;
                        body.extend_from_slice(raw);
                        raw = &[];
                        break;
                    }
                }
            }
            body
        } else if let Some(n) = head.content_length() {
            let n = n.min(raw.len());
            let body = raw[..n].to_vec();
            raw = &raw[n..];
            body
        } else {
            let body = raw.to_vec();
            raw = &[];
            body
        };
        answer.responses.push((status, body));
    }
    answer
}

/// One proxy under test: where it listens and the backend behind it.
struct Subject {
    name: &'static str,
    port: u16,
    backend: Recorder,
}

/// What one proxy did with one case.
#[derive(Debug, Clone)]
struct Outcome {
    answer: Answer,
    seen: Vec<Seen>,
    follow_up: Answer,
}

impl Outcome {
    /// The requests that reached a backend whole: method and decoded body, in arrival order.
    fn forwarded(&self) -> Vec<(String, Vec<u8>)> {
        self.seen
            .iter()
            .filter(|s| s.complete)
            .map(|s| (s.method().to_owned(), s.body.clone()))
            .collect()
    }

    fn summary(&self) -> String {
        let partial = self.seen.iter().filter(|s| !s.complete).count();
        let mut s = format!("{} fwd={}", self.answer.statuses(), self.forwarded().len());
        if std::env::var_os("DIFFERENTIAL_BODIES").is_some() {
            for (_, body) in &self.answer.responses {
                s.push_str(&format!(
                    " {:?}",
                    String::from_utf8_lossy(&body[..body.len().min(24)])
                ));
            }
        }
        if partial > 0 {
            s.push_str(&format!(" partial={partial}"));
        }
        s
    }
}

async fn run_case(subject: &Subject, index: usize, case: &Case) -> Answer {
    subject.backend.case.store(index, Ordering::SeqCst);
    *subject.backend.script.lock().unwrap() = case.answer.as_ref().map(|answer| Script {
        answer: answer.clone(),
        late: case.late.clone(),
        close: case.close,
    });
    exchange(subject.port, &case.send).await
}

/// Waits until no backend has recorded anything for a moment.
async fn settle(subjects: &[Subject]) {
    let mut last = usize::MAX;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let now: usize = subjects.iter().map(|s| s.backend.count()).sum();
        if now == last {
            return;
        }
        last = now;
    }
}

/// `serin_http_requests_total` samples by label set.
fn request_counts(metrics: &str) -> BTreeMap<String, f64> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("serin_http_requests_total{"))
        .filter_map(|l| l.split_once("} "))
        .map(|(labels, v)| (labels.to_owned(), v.trim().parse().unwrap_or(0.0)))
        .collect()
}

fn label<'a>(labels: &'a str, name: &str) -> &'a str {
    labels
        .split(',')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix("=\""))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// The test

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serin_proxy_agrees_with_nginx_and_haproxy_on_the_corpus() {
    // Both peers first: without them there is nothing to compare with.
    binary("nginx");
    binary("haproxy");
    let mut cases = load_corpus();
    assert!(cases.len() >= 150, "the corpus has {} cases", cases.len());
    // DIFFERENTIAL_CASES=TEXT runs the cases whose file or name contains TEXT.
    if let Ok(only) = std::env::var("DIFFERENTIAL_CASES") {
        cases.retain(|c| c.file.contains(&only) || c.name.contains(&only));
    }
    let started = Instant::now();

    let dir = tempfile::tempdir().unwrap();
    let subjects = [
        Subject {
            name: "serin",
            port: free_port(),
            backend: Recorder::start().await,
        },
        Subject {
            name: "nginx",
            port: free_port(),
            backend: Recorder::start().await,
        },
        Subject {
            name: "haproxy",
            port: free_port(),
            backend: Recorder::start().await,
        },
    ];
    let serin = start_serin(subjects[0].port, &subjects[0].backend).await;
    let _nginx = start_nginx(dir.path(), subjects[1].port, &subjects[1].backend).await;
    let _haproxy = start_haproxy(dir.path(), subjects[2].port, &subjects[2].backend).await;
    for s in &subjects {
        let a = exchange(s.port, FOLLOW_UP).await;
        assert_eq!(
            a.responses
                .first()
                .map(|(c, b)| (*c, String::from_utf8_lossy(b).into_owned())),
            Some((200, FOLLOW_UP_ANSWER.to_owned())),
            "{} does not serve the follow-up request",
            s.name
        );
    }

    let mut failures = Vec::new();
    let mut report = Vec::new();
    for (index, case) in cases.iter().enumerate() {
        let before = request_counts(&serin.metrics().await);
        let answers = tokio::join!(
            run_case(&subjects[0], index, case),
            run_case(&subjects[1], index, case),
            run_case(&subjects[2], index, case),
        );
        settle(&subjects).await;
        let after = request_counts(&serin.metrics().await);
        let mut outcomes = Vec::new();
        for (s, answer) in subjects.iter().zip([answers.0, answers.1, answers.2]) {
            s.backend.case.store(usize::MAX, Ordering::SeqCst);
            *s.backend.script.lock().unwrap() = None;
            let seen = s.backend.taken(index);
            let follow_up = exchange(s.port, FOLLOW_UP).await;
            outcomes.push(Outcome {
                answer,
                seen,
                follow_up,
            });
        }
        let id = format!("{}:{}", case.file, case.name);
        let mut fail = |text: String| failures.push(format!("{id} ({}): {text}", case.what.trim()));
        let [serin_o, nginx_o, haproxy_o] = [&outcomes[0], &outcomes[1], &outcomes[2]];

        // Routing: every request at a backend is one the routes send there.
        for (s, o) in subjects.iter().zip(&outcomes) {
            for seen in &o.seen {
                if seen.route() != seen.backend {
                    let text = format!(
                        "{} delivered {:?} (host {:?}) to {}, which the routes send to {}",
                        s.name,
                        seen.start,
                        seen.header("host"),
                        seen.backend,
                        seen.route()
                    );
                    if s.name == "serin" {
                        fail(text);
                    } else {
                        report.push(format!("{id}: {text}"));
                    }
                }
            }
        }

        // serin-proxy answers every request head it receives whole, if only with a 400: a
        // connection closed without an answer is a request it failed to handle (a panic in the
        // connection's task looks like this).
        let whole_head = contains(&case.send, b"\r\n\r\n") || contains(&case.send, b"\n\n");
        if whole_head && serin_o.answer.responses.is_empty() {
            fail(format!(
                "serin closed the connection without an answer: {}",
                serin_o.summary()
            ));
        }

        // Framing: one plain Content-Length or `Transfer-Encoding: chunked`, never both, never
        // repeated, and a length that is the body's.
        for (s, o) in subjects.iter().zip(&outcomes) {
            for seen in o.seen.iter().filter(|s| s.complete) {
                let lengths = seen.header("content-length");
                let codings = seen.header("transfer-encoding");
                let framed = match (&lengths[..], &codings[..]) {
                    ([], []) => true,
                    ([n], []) => n.parse() == Ok(seen.body.len()),
                    ([], [c]) => c.eq_ignore_ascii_case("chunked"),
                    _ => false,
                };
                if !framed {
                    let text = format!(
                        "{} delivered {:?} framed by content-length {lengths:?}, transfer-encoding {codings:?} with {} body bytes",
                        s.name,
                        seen.start,
                        seen.body.len()
                    );
                    if s.name == "serin" {
                        fail(text);
                    } else {
                        report.push(format!("{id}: {text}"));
                    }
                }
            }
        }

        // Refused by both peers: refused; forwarded by both: forwarded, as one of them did.
        let (s_fwd, n_fwd, h_fwd) = (
            serin_o.forwarded(),
            nginx_o.forwarded(),
            haproxy_o.forwarded(),
        );
        if n_fwd.is_empty() && h_fwd.is_empty() && !s_fwd.is_empty() {
            fail(format!(
                "forwarded although nginx and HAProxy refuse: serin {}, nginx {}, haproxy {}",
                serin_o.summary(),
                nginx_o.summary(),
                haproxy_o.summary()
            ));
        }
        if !n_fwd.is_empty() && !h_fwd.is_empty() && s_fwd.is_empty() && case.stricter.is_none() {
            fail(format!(
                "refused although nginx and HAProxy forward: serin {}, nginx {}, haproxy {}",
                serin_o.summary(),
                nginx_o.summary(),
                haproxy_o.summary()
            ));
        }
        if case.stricter.is_some() && !s_fwd.is_empty() {
            fail("marked `stricter` but forwarded".into());
        }
        if !s_fwd.is_empty()
            && s_fwd != n_fwd
            && s_fwd != h_fwd
            && !(n_fwd.is_empty() && h_fwd.is_empty())
        {
            fail(format!(
                "forwarded as something neither peer sent: serin {:?}, nginx {:?}, haproxy {:?}",
                shape(&s_fwd),
                shape(&n_fwd),
                shape(&h_fwd)
            ));
        }

        // Metrics: no client fault counted against a backend.
        for (labels, value) in &after {
            let added = value - before.get(labels).copied().unwrap_or(0.0);
            if added <= 0.0 {
                continue;
            }
            let backend = label(labels, "backend");
            if backend.is_empty() {
                continue;
            }
            let code: u16 = label(labels, "code").parse().unwrap_or(0);
            let short = backend.rsplit('/').next().unwrap_or_default();
            let received = serin_o.seen.iter().filter(|s| s.backend == short).count();
            if added > received as f64 {
                fail(format!(
                    "{added} requests counted against {backend} (code {code}), which received {received}"
                ));
            }
            if code >= 500 && case.answer.is_none() {
                fail(format!(
                    "a {code} counted against {backend}, which answered every request it got"
                ));
            }
        }

        // Smuggled responses reach no other request.
        for (s, o) in subjects.iter().zip(&outcomes) {
            let later = o.answer.responses.iter().skip(1);
            let smuggled = later.clone().any(|(_, b)| contains(b, b"SMUGGLED"))
                || o.follow_up
                    .responses
                    .iter()
                    .any(|(_, b)| contains(b, b"SMUGGLED"));
            let follow_up_ok = o
                .follow_up
                .responses
                .first()
                .is_some_and(|(c, b)| *c == 200 && b == FOLLOW_UP_ANSWER.as_bytes());
            if smuggled || !follow_up_ok {
                let text = format!(
                    "{}: a later request got another's answer or no answer (smuggled: {smuggled}, follow-up {:?})",
                    s.name,
                    o.follow_up
                        .responses
                        .first()
                        .map(|(c, b)| (c, String::from_utf8_lossy(b).into_owned()))
                );
                if s.name == "serin" {
                    fail(text);
                } else {
                    report.push(format!("{id}: {text}"));
                }
            }
        }

        let line = format!(
            "{id:<50} serin {:<28} nginx {:<28} haproxy {}",
            serin_o.summary(),
            nginx_o.summary(),
            haproxy_o.summary()
        );
        report.push(line);
    }
    let elapsed = started.elapsed();
    eprintln!("{}", report.join("\n"));
    eprintln!("{} cases in {:.1} s", cases.len(), elapsed.as_secs_f64());
    assert!(
        failures.is_empty(),
        "{} of {} cases fail:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

fn shape(requests: &[(String, Vec<u8>)]) -> Vec<String> {
    requests
        .iter()
        .map(|(m, b)| format!("{m} {:?}", String::from_utf8_lossy(b)))
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn backend_path_removes_dot_segments_and_decodes_unreserved_characters() {
    for (target, path) in [
        ("/a/b", "/a/b"),
        ("/a/./b", "/a/b"),
        ("/a/../admin", "/admin"),
        ("/a/%2e%2e/admin", "/admin"),
        ("/a/%2E%2e/admin?x=1", "/admin"),
        ("/%61dmin/x", "/admin/x"),
        ("/a/%2fadmin", "/a/%2fadmin"),
        ("/a/..", "/"),
        ("/a/b/.", "/a/b/"),
        ("/../admin", "/admin"),
    ] {
        assert_eq!(backend_path(target), path, "{target}");
    }
    assert_eq!(route("main.example", "/admin"), "admin");
    assert_eq!(route("main.example", "/adminx"), "main");
    assert_eq!(route("admin.example", "/"), "admin");
}
