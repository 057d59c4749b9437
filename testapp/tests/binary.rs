//! The `serin-testapp` binary as the test cluster's node runs it: a process per Pod, flags and
//! env as a Deployment sets them, real sockets on loopback (port 0, the bound address read
//! from the `listening on` line), SIGTERM to stop it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// Every variable the app reads, removed so the tests' own environment cannot leak in.
const APP_ENV: &[&str] = &[
    "HOST",
    "PORT",
    "APP_VERSION",
    "HOSTNAME",
    "PODINFO_UI_MESSAGE",
    "FAULT_ERROR_PERCENT",
    "FAULT_DELAY",
    "FAULT_NOT_READY",
];

fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_serin-testapp"));
    for name in APP_ENV {
        command.env_remove(name);
    }
    command.args(args).envs(env.iter().copied());
    command
}

/// A running app process; killed when dropped.
struct Process {
    child: Child,
    addrs: Vec<SocketAddr>,
    lines: mpsc::Receiver<String>,
}

impl Process {
    /// Starts the binary serving on `ports` free ports.
    fn start(ports: usize, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut all = vec!["--host", "127.0.0.1"];
        for _ in 0..ports {
            all.extend(["--port", "0"]);
        }
        all.extend(args);
        let mut child = command(&all, env)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn serin-testapp");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("app: {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut addrs = Vec::new();
        while addrs.len() < ports {
            let line = lines
                .recv_timeout(Duration::from_secs(20))
                .expect("the app logs `listening on` within 20 s");
            if let Some((_, rest)) = line.split_once("listening on ") {
                let addr = rest.split_whitespace().next().unwrap();
                addrs.push(addr.parse().unwrap());
            }
        }
        Self {
            child,
            addrs,
            lines,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addrs[0])
    }

    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits at most `limit` for the process to exit.
    fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the app did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&self.body)))
    }

    fn version_header(&self) -> &str {
        self.headers
            .get("x-app-version")
            .expect("x-app-version on every answer")
            .to_str()
            .unwrap()
    }
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Builds the request at once, so the answer does not borrow `url` or `headers`.
fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: &'static [u8],
) -> impl Future<Output = Answer> + use<> {
    let mut request = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::from_static(body))).unwrap();
    let client = client.clone();
    async move {
        let response = client.request(request).await.unwrap();
        let (parts, body) = response.into_parts();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    }
}

async fn get(client: &Client<HttpConnector, Full<Bytes>>, url: &str) -> Answer {
    send(client, Method::GET, url, &[], b"").await
}

#[tokio::test]
async fn info_and_version_are_podinfos() {
    let app = Process::start(
        1,
        &["--version", "6.0.0", "--hostname", "podinfo-7d9f-x2"],
        &[],
    );
    let client = client();

    let info = get(&client, &app.url("/")).await;
    assert_eq!(info.status, StatusCode::OK);
    assert_eq!(info.headers["content-type"], "application/json");
    assert_eq!(info.version_header(), "6.0.0");
    let json = info.json();
    assert_eq!(json["hostname"], "podinfo-7d9f-x2");
    assert_eq!(json["version"], "6.0.0");
    assert_eq!(json["message"], "greetings from podinfo v6.0.0");
    assert_eq!(json["color"], "#34577c");
    assert_eq!(json["revision"], "");
    assert_eq!(json["runtime"], "serin-testapp");
    assert_eq!(json["num_goroutine"], "1");
    assert!(json["logo"].as_str().unwrap().starts_with("https://"));
    assert!(json["goos"].is_string() && json["goarch"].is_string());
    let cpus: usize = json["num_cpu"].as_str().unwrap().parse().unwrap();
    assert!(cpus >= 1);

    let version = get(&client, &app.url("/version")).await;
    assert_eq!(version.status, StatusCode::OK);
    assert_eq!(version.headers["content-type"], "application/json");
    assert_eq!(
        version.json(),
        serde_json::json!({"commit": "", "version": "6.0.0"})
    );

    let missing = get(&client, &app.url("/nope")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.version_header(), "6.0.0");

    let wrong = send(&client, Method::DELETE, &app.url("/version"), &[], b"").await;
    assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong.headers["allow"], "GET, HEAD");
}

#[tokio::test]
async fn env_sets_version_hostname_and_message() {
    let app = Process::start(
        1,
        &[],
        &[
            ("APP_VERSION", "6.1.0"),
            ("HOSTNAME", "podinfo-primary-abc"),
            ("PODINFO_UI_MESSAGE", "hello from the canary"),
        ],
    );
    let info = get(&client(), &app.url("/")).await;
    let json = info.json();
    assert_eq!(json["version"], "6.1.0");
    assert_eq!(json["hostname"], "podinfo-primary-abc");
    assert_eq!(json["message"], "hello from the canary");
    assert_eq!(info.version_header(), "6.1.0");
}

#[tokio::test]
async fn defaults_are_podinfos() {
    let app = Process::start(1, &[], &[]);
    let json = get(&client(), &app.url("/")).await.json();
    assert_eq!(json["version"], "0.0.0");
    assert_eq!(json["message"], "greetings from podinfo v0.0.0");
    assert!(!json["hostname"].as_str().unwrap().is_empty());
}

#[tokio::test]
async fn one_process_serves_every_port_with_one_state() {
    let app = Process::start(2, &["--version", "2.0.0"], &[]);
    assert_ne!(app.addrs[0], app.addrs[1]);
    let client = client();
    for addr in &app.addrs {
        let answer = get(&client, &format!("http://{addr}/version")).await;
        assert_eq!(answer.status, StatusCode::OK, "{addr}");
        assert_eq!(answer.json()["version"], "2.0.0", "{addr}");
    }
    // Readiness is the app's, not the port's.
    let disable = format!("http://{}/readyz/disable", app.addrs[1]);
    assert_eq!(
        send(&client, Method::POST, &disable, &[], b"").await.status,
        StatusCode::ACCEPTED
    );
    let ready = get(&client, &format!("http://{}/readyz", app.addrs[0])).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn health_and_readiness_toggle_at_run_time() {
    let app = Process::start(1, &[], &[]);
    let client = client();
    let ok = serde_json::json!({"status": "OK"});
    for path in ["/healthz", "/readyz"] {
        let answer = get(&client, &app.url(path)).await;
        assert_eq!((answer.status, answer.json()), (StatusCode::OK, ok.clone()));
    }

    let post = |path: &'static str| send(&client, Method::POST, &app.url(path), &[], b"");
    assert_eq!(post("/readyz/disable").await.status, StatusCode::ACCEPTED);
    let readyz = get(&client, &app.url("/readyz")).await;
    assert_eq!(readyz.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(readyz.json(), serde_json::json!({"status": "not ready"}));
    assert_eq!(
        get(&client, &app.url("/healthz")).await.status,
        StatusCode::OK
    );
    // Not ready still serves traffic.
    assert_eq!(get(&client, &app.url("/")).await.status, StatusCode::OK);
    assert_eq!(post("/readyz/enable").await.status, StatusCode::ACCEPTED);
    assert_eq!(
        get(&client, &app.url("/readyz")).await.status,
        StatusCode::OK
    );

    assert_eq!(post("/healthz/disable").await.status, StatusCode::ACCEPTED);
    assert_eq!(
        get(&client, &app.url("/healthz")).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        get(&client, &app.url("/readyz")).await.status,
        StatusCode::OK
    );
    assert_eq!(post("/healthz/enable").await.status, StatusCode::ACCEPTED);
    assert_eq!(
        get(&client, &app.url("/healthz")).await.status,
        StatusCode::OK
    );

    // The switches take POST only.
    let get_switch = get(&client, &app.url("/readyz/disable")).await;
    assert_eq!(get_switch.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        get(&client, &app.url("/readyz")).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn fault_not_ready_starts_unready_until_enabled() {
    let app = Process::start(1, &[], &[("FAULT_NOT_READY", "1")]);
    let client = client();
    let readyz = get(&client, &app.url("/readyz")).await;
    assert_eq!(readyz.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(readyz.json(), serde_json::json!({"status": "not ready"}));
    assert_eq!(
        get(&client, &app.url("/healthz")).await.status,
        StatusCode::OK
    );
    let enable = send(&client, Method::POST, &app.url("/readyz/enable"), &[], b"").await;
    assert_eq!(enable.status, StatusCode::ACCEPTED);
    assert_eq!(
        get(&client, &app.url("/readyz")).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn status_answers_the_code_asked_for_with_any_method() {
    let app = Process::start(1, &["--version", "1.2.3"], &[]);
    let client = client();
    for (method, code) in [
        (Method::GET, 200u16),
        (Method::POST, 201),
        (Method::PUT, 404),
        (Method::GET, 418),
        (Method::DELETE, 500),
        (Method::GET, 503),
        (Method::GET, 599),
    ] {
        let answer = send(
            &client,
            method.clone(),
            &app.url(&format!("/status/{code}")),
            &[],
            b"",
        )
        .await;
        assert_eq!(answer.status.as_u16(), code, "{method} {code}");
        assert_eq!(answer.json(), serde_json::json!({ "status": code }));
        assert_eq!(answer.version_header(), "1.2.3");
    }
    let no_content = get(&client, &app.url("/status/204")).await;
    assert_eq!(no_content.status, StatusCode::NO_CONTENT);
    assert!(no_content.body.is_empty());
    for bad in ["100", "199", "600", "99", "abc", ""] {
        let answer = get(&client, &app.url(&format!("/status/{bad}"))).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "/status/{bad}");
    }
}

#[tokio::test]
async fn delay_waits_then_answers() {
    let app = Process::start(1, &[], &[]);
    let client = client();
    let started = Instant::now();
    let answer = get(&client, &app.url("/delay/0.3")).await;
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json(), serde_json::json!({"delay": 0.3}));

    let answer = get(&client, &app.url("/delay/0")).await;
    assert_eq!(answer.json(), serde_json::json!({"delay": 0}));
    for bad in ["-1", "soon", "NaN", "inf"] {
        let answer = get(&client, &app.url(&format!("/delay/{bad}"))).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "/delay/{bad}");
    }
}

#[tokio::test]
async fn headers_lists_each_header_with_all_its_values() {
    let app = Process::start(1, &[], &[]);
    let answer = send(
        &client(),
        Method::GET,
        &app.url("/headers"),
        &[("x-canary", "insider"), ("x-multi", "a"), ("x-multi", "b")],
        b"",
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let json = answer.json();
    assert_eq!(json["X-Canary"], serde_json::json!(["insider"]));
    assert_eq!(json["X-Multi"], serde_json::json!(["a", "b"]));
    assert_eq!(json["Host"], serde_json::json!([app.addrs[0].to_string()]));
}

#[tokio::test]
async fn echo_returns_the_body() {
    let app = Process::start(1, &["--version", "3.0.0"], &[]);
    let client = client();
    for method in [Method::POST, Method::PUT] {
        let answer = send(
            &client,
            method.clone(),
            &app.url("/echo"),
            &[("content-type", "text/plain")],
            b"hello, canary",
        )
        .await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{method}");
        assert_eq!(&answer.body[..], b"hello, canary");
        assert_eq!(answer.headers["content-type"], "text/plain");
        assert_eq!(answer.version_header(), "3.0.0");
    }
    let get = get(&client, &app.url("/echo")).await;
    assert_eq!(get.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn error_percent_fails_that_share_of_info_and_version() {
    let app = Process::start(1, &["--version", "2.0.0"], &[("FAULT_ERROR_PERCENT", "20")]);
    let client = client();
    let n = 2000;
    let mut errors = 0;
    for _ in 0..n {
        let answer = get(&client, &app.url("/")).await;
        assert_eq!(answer.version_header(), "2.0.0");
        match answer.status {
            StatusCode::OK => {}
            StatusCode::INTERNAL_SERVER_ERROR => {
                assert_eq!(answer.json()["status"], 500);
                errors += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    // Binomial(2000, 0.2): mean 400, standard deviation 17.9; five of them either side.
    assert!((310..=490).contains(&errors), "{errors} errors in {n}");

    // /version fails too; the probes never do.
    let mut version_errors = 0;
    for _ in 0..200 {
        if get(&client, &app.url("/version")).await.status == StatusCode::INTERNAL_SERVER_ERROR {
            version_errors += 1;
        }
        for probe in ["/healthz", "/readyz"] {
            assert_eq!(get(&client, &app.url(probe)).await.status, StatusCode::OK);
        }
    }
    assert!(
        (10..=80).contains(&version_errors),
        "{version_errors} in 200"
    );
}

#[tokio::test]
async fn fault_delay_slows_the_info_endpoint_only() {
    let app = Process::start(1, &[], &[("FAULT_DELAY", "200ms")]);
    let client = client();
    for _ in 0..3 {
        let started = Instant::now();
        let answer = get(&client, &app.url("/")).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert!(
            started.elapsed() >= Duration::from_millis(200),
            "{:?}",
            started.elapsed()
        );
    }
    let started = Instant::now();
    assert_eq!(
        get(&client, &app.url("/healthz")).await.status,
        StatusCode::OK
    );
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn sigterm_lets_the_request_in_flight_finish_then_exits_zero() {
    let mut app = Process::start(1, &[], &[]);
    let client = client();
    // A connection is open (keep-alive) before the slow request starts.
    assert_eq!(
        get(&client, &app.url("/healthz")).await.status,
        StatusCode::OK
    );
    let url = app.url("/delay/1");
    let slow = tokio::spawn({
        let client = client.clone();
        async move {
            let started = Instant::now();
            (get(&client, &url).await, started.elapsed())
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.terminate();
    // The app stops accepting as soon as it has the signal.
    let addr = app.addrs[0];
    let mut refused = false;
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "still accepting connections after SIGTERM");

    let (answer, elapsed) = slow.await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json(), serde_json::json!({"delay": 1}));
    assert!(elapsed >= Duration::from_secs(1));
    let status = app.wait(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0));
    let logged = std::iter::from_fn(|| app.lines.recv_timeout(Duration::from_secs(2)).ok())
        .any(|line| line.contains("shutting down"));
    assert!(logged, "no `shutting down` line");
}

#[test]
fn sigint_exits_zero_too() {
    let mut app = Process::start(1, &[], &[]);
    let status = Command::new("kill")
        .args(["-INT", &app.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(app.wait(Duration::from_secs(5)).code(), Some(0));
}

#[test]
fn bad_env_values_exit_64_naming_the_variable() {
    for (variable, value) in [
        ("FAULT_ERROR_PERCENT", "150"),
        ("FAULT_ERROR_PERCENT", "many"),
        ("FAULT_DELAY", "5"),
        ("FAULT_DELAY", "1x"),
        ("FAULT_NOT_READY", "maybe"),
    ] {
        let output = command(&["--port", "0"], &[(variable, value)])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(64),
            "{variable}={value}: {stderr}"
        );
        assert!(
            stderr.contains(&format!("{variable}={value:?}")),
            "{variable}={value}: {stderr}"
        );
        assert!(!stderr.contains("listening on"), "{stderr}");
    }
}

#[test]
fn bad_flags_and_busy_ports_exit_64() {
    let output = command(&["--port", "http"], &[]).output().unwrap();
    assert_eq!(output.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--port"));

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let output = command(&["--port", &port], &[]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );

    let help = command(&["--help"], &[]).output().unwrap();
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("APP_VERSION"));
}
