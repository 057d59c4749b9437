//! The HTTP webhook client against a real local server that records what it receives, and
//! the stage machine gated by real webhook calls.

mod provider_support;
mod support;

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use provider_support::{Answer, HookServer, dead_address};
use serde_json::json;
use serin_controller::{
    CanarySpec, CanaryStatus, Phase, Timestamp,
    canary::HookType,
    event::Event,
    stage::HookResult,
    validation::{Webhook, validate},
    webhook::{WebhookClient, WebhookPayload, checksum},
    webhook_client::{DEFAULT_EVENT_TIMEOUT, DEFAULT_TIMEOUT, HttpWebhookClient},
};
use support::{Driver, HookScript, manifest, pct};

fn hook(url: String, hook_type: HookType, timeout: Option<Duration>) -> Webhook {
    Webhook {
        index: 0,
        name: "load-test".into(),
        hook_type,
        url,
        timeout,
        metadata: BTreeMap::from([(
            "cmd".into(),
            "hey -z 1m -q 10 -c 2 http://podinfo-canary.test:9898/".into(),
        )]),
        mute_alert: false,
    }
}

fn status() -> CanaryStatus {
    CanaryStatus {
        phase: Some(Phase::Progressing),
        last_applied_spec: Some("rev-2".into()),
        ..CanaryStatus::default()
    }
}

fn failure(result: HookResult) -> String {
    match result {
        HookResult::Failed(message) => message,
        HookResult::Passed => panic!("expected the hook to fail"),
    }
}

#[tokio::test]
async fn posts_flaggers_json_payload() {
    let server = HookServer::start().await;
    let client = HttpWebhookClient::new();
    let status = status();

    let rollout = hook(server.url("/hooks/load?run=1"), HookType::Rollout, None);
    let payload = WebhookPayload::new("podinfo", "test", Phase::Progressing, &status, &rollout);
    assert_eq!(client.call(&rollout, &payload).await, HookResult::Passed);

    let mut bare = hook(server.url("/hooks/bare"), HookType::PreRollout, None);
    bare.metadata.clear();
    let payload = WebhookPayload::new("podinfo", "test", Phase::Progressing, &status, &bare);
    assert_eq!(client.call(&bare, &payload).await, HookResult::Passed);

    let event_hook = hook(server.url("/hooks/events"), HookType::Event, None);
    let event = Event::normal("Advance podinfo.test canary weight 10");
    let payload = WebhookPayload::for_event(
        "podinfo",
        "test",
        &status,
        &event_hook,
        &event,
        Timestamp::from_unix_seconds(1_700_000_000),
    );
    assert_eq!(client.call(&event_hook, &payload).await, HookResult::Passed);

    let received = server.received();
    assert_eq!(received.len(), 3);
    for r in &received {
        assert_eq!(r.method, "POST");
        assert_eq!(r.content_type, "application/json");
    }
    let sum = checksum(&status);
    assert_eq!(sum.len(), 16);
    assert_eq!(received[0].path, "/hooks/load?run=1");
    assert_eq!(
        received[0].body,
        json!({
            "name": "podinfo",
            "namespace": "test",
            "phase": "Progressing",
            "checksum": sum,
            "metadata": {"cmd": "hey -z 1m -q 10 -c 2 http://podinfo-canary.test:9898/"},
        })
    );
    // As Flagger's `omitempty`: no metadata, no key.
    assert_eq!(
        received[1].body,
        json!({"name": "podinfo", "namespace": "test", "phase": "Progressing", "checksum": sum})
    );
    assert_eq!(
        received[2].body,
        json!({
            "name": "podinfo",
            "namespace": "test",
            "phase": "Progressing",
            "checksum": sum,
            "metadata": {
                "cmd": "hey -z 1m -q 10 -c 2 http://podinfo-canary.test:9898/",
                "eventMessage": "Advance podinfo.test canary weight 10",
                "eventType": "Normal",
                "timestamp": "1700000000000",
            },
        })
    );
}

#[tokio::test]
async fn any_2xx_passes_anything_else_fails_with_status_and_body() {
    let server = HookServer::start().await;
    let client = HttpWebhookClient::new();
    let status = status();
    let call = |path: &str, answer: Answer| {
        server.answer(path, answer);
        let hook = hook(server.url(path), HookType::ConfirmRollout, None);
        let client = client.clone();
        let status = status.clone();
        async move {
            let payload =
                WebhookPayload::new("podinfo", "test", Phase::Progressing, &status, &hook);
            client.call(&hook, &payload).await
        }
    };
    for code in [200, 201, 202, 204] {
        let path = format!("/ok/{code}");
        assert_eq!(
            call(&path, Answer::Status(code, String::new())).await,
            HookResult::Passed,
            "{code}"
        );
    }
    assert_eq!(
        failure(call("/gate", Answer::Status(403, "not approved\n".into())).await),
        "403 Forbidden: not approved"
    );
    assert_eq!(
        failure(call("/missing", Answer::Status(404, String::new())).await),
        "404 Not Found"
    );
    assert_eq!(
        failure(call("/moved", Answer::Status(302, String::new())).await),
        "302 Found",
        "redirects are not followed"
    );
    let long = failure(call("/long", Answer::Status(500, "x".repeat(100_000))).await);
    assert!(
        long.starts_with("500 Internal Server Error: xxxx"),
        "{long}"
    );
    assert!(long.ends_with('…') && long.chars().count() < 300, "{long}");
}

#[tokio::test]
async fn a_hanging_hook_fails_after_its_timeout() {
    let server = HookServer::start().await;
    server.answer("/hang", Answer::Hang);
    let status = status();

    let slow = hook(
        server.url("/hang"),
        HookType::PreRollout,
        Some(Duration::from_millis(300)),
    );
    let payload = WebhookPayload::new("podinfo", "test", Phase::Progressing, &status, &slow);
    let started = Instant::now();
    let message = failure(HttpWebhookClient::new().call(&slow, &payload).await);
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    assert_eq!(
        message,
        format!("request to {} timed out after 300ms", server.url("/hang"))
    );
    assert_eq!(server.received_on("/hang").len(), 1, "the request was sent");

    // Without its own timeout a hook gets the client's default.
    let unset = hook(server.url("/hang"), HookType::Rollout, None);
    let client = HttpWebhookClient::new().with_default_timeout(Duration::from_millis(200));
    let started = Instant::now();
    let message = failure(client.call(&unset, &payload).await);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(message.ends_with("timed out after 200ms"), "{message}");

    // Flagger's defaults.
    let defaults = HttpWebhookClient::new();
    assert_eq!(defaults.timeout_for(&unset), DEFAULT_TIMEOUT);
    assert_eq!(DEFAULT_TIMEOUT, Duration::from_secs(10));
    let event = hook(server.url("/e"), HookType::Event, None);
    assert_eq!(defaults.timeout_for(&event), DEFAULT_EVENT_TIMEOUT);
    assert_eq!(defaults.timeout_for(&slow), Duration::from_millis(300));
}

#[tokio::test]
async fn connection_errors_fail_saying_so() {
    let status = status();
    let client = HttpWebhookClient::new();
    let (dead, _refusing) = dead_address();
    let url = format!("http://{dead}/hook");
    let refused = hook(url.clone(), HookType::Rollout, None);
    let payload = WebhookPayload::new("podinfo", "test", Phase::Progressing, &status, &refused);
    let message = failure(client.call(&refused, &payload).await);
    assert!(
        message.starts_with(&format!("request to {url} failed: ")),
        "{message}"
    );
    assert!(message.contains("Connection refused"), "{message}");

    let tls = hook("https://127.0.0.1:1/hook".into(), HookType::Rollout, None);
    let message = failure(client.call(&tls, &payload).await);
    assert!(message.contains("https is not supported"), "{message}");
}

// ----- the stage machine gated by real webhook calls -------------------------------------

/// A multi-threaded runtime for a synchronous driver test, and a hook server on it.
fn world() -> (Arc<tokio::runtime::Runtime>, HookServer) {
    let rt = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap(),
    );
    let server = rt.block_on(HookServer::start());
    (rt, server)
}

/// Answers the driver's webhook calls with the real client: the payload it would send, to
/// the hook's URL.
fn real_hooks(rt: Arc<tokio::runtime::Runtime>, spec: &CanarySpec) -> HookScript {
    let settings = validate(spec).unwrap_or_else(|err| panic!("{err}"));
    let client = HttpWebhookClient::new();
    Box::new(move |status, call| {
        let hook = settings
            .webhooks
            .iter()
            .find(|h| h.index == call.index)
            .unwrap_or_else(|| panic!("no webhook {}", call.index));
        let payload = WebhookPayload::new("podinfo", "test", call.phase, status, hook);
        rt.block_on(client.call(hook, &payload))
    })
}

fn driver(analysis: &str, rt: &Arc<tokio::runtime::Runtime>) -> Driver {
    let mut driver = Driver::new(&manifest(analysis)).released();
    driver.hooks = real_hooks(rt.clone(), &driver.spec);
    driver
}

fn phases_sent(server: &HookServer, path: &str) -> Vec<String> {
    server
        .received_on(path)
        .iter()
        .map(|r| r.body["phase"].as_str().unwrap_or("?").to_owned())
        .collect()
}

#[test]
fn confirm_rollout_returning_403_keeps_the_canary_waiting_until_it_answers_200() {
    let (rt, server) = world();
    server.answer("/gate", Answer::Status(403, "not approved".into()));
    let analysis = format!(
        "    stepWeight: 50\n    maxWeight: 50\n    webhooks:\n      - name: gate\n        type: confirm-rollout\n        url: {}\n",
        server.url("/gate")
    );
    let mut d = driver(&analysis, &rt);
    assert_eq!(d.tick().phase, Some(Phase::Waiting));
    assert_eq!(d.tick().phase, Some(Phase::Waiting));
    assert!(
        !d.canary_running,
        "the canary stays scaled down while waiting"
    );

    server.answer("/gate", Answer::Status(200, String::new()));
    let tick = d.tick().clone();
    assert_eq!(tick.phase, Some(Phase::Progressing));
    assert_eq!(
        d.events(),
        vec![
            "Halt podinfo.test advancement waiting for approval gate",
            "Confirm-rollout check gate passed",
            "New revision detected! Scaling up podinfo.test",
        ]
    );
    // The payload says what the canary is waiting in.
    assert_eq!(
        phases_sent(&server, "/gate"),
        vec!["Progressing", "Waiting", "Waiting"]
    );
    assert!(
        server
            .received_on("/gate")
            .iter()
            .all(|r| r.content_type == "application/json")
    );
}

#[test]
fn a_failing_pre_rollout_hook_counts_a_failed_check() {
    let (rt, server) = world();
    server.answer("/smoke", Answer::Status(500, "smoke test failed".into()));
    let analysis = format!(
        "    threshold: 2\n    stepWeight: 50\n    maxWeight: 50\n    webhooks:\n      - name: smoke\n        type: pre-rollout\n        url: {}\n        timeout: 5s\n",
        server.url("/smoke")
    );
    let mut d = driver(&analysis, &rt);
    assert_eq!(d.tick().phase, Some(Phase::Progressing));
    let halted = d.tick().clone();
    assert_eq!(halted.failed_checks, 1);
    assert!(halted.weight.is_zero());
    assert_eq!(
        halted.events.last().map(|e| e.message.as_str()),
        Some(
            "Halt podinfo.test advancement pre-rollout check smoke failed \
             500 Internal Server Error: smoke test failed"
        )
    );

    server.answer("/smoke", Answer::Status(200, String::new()));
    let advanced = d.tick().clone();
    assert_eq!(advanced.weight, pct(50));
    assert_eq!(advanced.failed_checks, 1);
    assert_eq!(server.received_on("/smoke").len(), 2);
}

#[test]
fn a_hanging_rollout_hook_halts_advancement() {
    let (rt, server) = world();
    server.answer("/load", Answer::Hang);
    let analysis = format!(
        "    threshold: 5\n    stepWeight: 20\n    maxWeight: 60\n    webhooks:\n      - name: load-test\n        url: {}\n        timeout: 300ms\n",
        server.url("/load")
    );
    let mut d = driver(&analysis, &rt);
    d.tick(); // Progressing
    assert_eq!(
        d.tick().weight,
        pct(20),
        "the first step runs pre-rollout hooks only"
    );
    let halted = d.tick().clone();
    assert_eq!(halted.weight, pct(20));
    assert_eq!(halted.failed_checks, 1);
    assert_eq!(
        halted.events.last().map(|e| e.message.clone()),
        Some(format!(
            "Halt podinfo.test advancement external check load-test failed request to {} timed out after 300ms",
            server.url("/load")
        ))
    );
}

#[test]
fn a_rollback_hook_answering_200_rolls_back() {
    let (rt, server) = world();
    server.answer("/abort", Answer::Status(404, String::new()));
    let analysis = format!(
        "    threshold: 5\n    stepWeight: 10\n    maxWeight: 50\n    webhooks:\n      - name: abort\n        type: rollback\n        url: {}\n",
        server.url("/abort")
    );
    let mut d = driver(&analysis, &rt);
    d.tick(); // Progressing
    let step = d.tick().clone();
    assert_eq!(step.weight, pct(10));
    assert!(
        step.events
            .iter()
            .any(|e| e.message == "Rollback hook abort not signaling a rollback"),
        "{:?}",
        step.events
    );

    server.answer("/abort", Answer::Status(200, String::new()));
    let rolled_back = d.tick().clone();
    assert_eq!(rolled_back.phase, Some(Phase::Failed));
    assert!(rolled_back.weight.is_zero());
    let messages: Vec<&str> = rolled_back
        .events
        .iter()
        .map(|e| e.message.as_str())
        .collect();
    assert_eq!(
        messages,
        vec![
            "Rollback check abort passed",
            "Rolling back podinfo.test manual webhook invoked",
            "Canary failed! Scaling down podinfo.test",
        ]
    );
    assert!(!d.canary_running);
    assert_eq!(
        phases_sent(&server, "/abort"),
        vec!["Progressing", "Progressing"]
    );
}
