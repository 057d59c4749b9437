//! Manifests: every Canary in the Flagger seed pages parses and validates once its
//! `apiVersion` is changed, every validation rule reports its field path, and serin-proxy
//! knows the controller's kinds (the CRDs themselves are checked in serin-api).

use std::path::{Path, PathBuf};

use serin_cli::manifest::{Finding, check_file, check_manifest, load_canary};
use serin_controller::{
    validation::{Steps, Strategy, validate, validate_canary},
    weight::Weight,
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn seed_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .map(|dir| {
            dir.filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("seed-") && n.ends_with(".yaml"))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn every_seed_manifest_parses_and_validates() {
    let files = seed_files();
    let mut canaries = 0;
    let mut templates = 0;
    let mut proxy_objects = 0;
    for file in &files {
        let findings = match check_file(file) {
            Ok(findings) => findings,
            Err(err) => panic!("{}: {err}", file.display()),
        };
        assert!(!findings.is_empty(), "{}: nothing found", file.display());
        for finding in findings {
            match finding {
                Finding::Object(report) => {
                    assert!(
                        report.is_valid(),
                        "{}: {report}: {:?}",
                        file.display(),
                        report.problems
                    );
                    match report.kind.as_str() {
                        "Canary" => canaries += 1,
                        "MetricTemplate" => templates += 1,
                        _ => proxy_objects += 1,
                    }
                }
                Finding::Unreadable { message, .. } => panic!("{}: {message}", file.display()),
            }
        }
    }
    // Seeds 000 (Knative), 001 (checkout) and 004 (Gateway API: canary, session affinity,
    // A/B testing, mirroring); seed 004's two metric templates.
    assert_eq!(canaries, 6, "{files:?}");
    assert_eq!(templates, 2);
    // Seed 004's Gateway, checked as serin-proxy would load it.
    assert_eq!(proxy_objects, 1);
}

fn read(name: &str) -> String {
    std::fs::read_to_string(fixtures().join(name)).unwrap_or_default()
}

/// The Canary document of a fixture (skipping other kinds).
fn canary_doc(name: &str) -> String {
    read(name)
        .split("\n---\n")
        .find(|doc| doc.contains("kind: Canary"))
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn seeds_compile_to_the_strategies_they_describe() {
    let strategy = |name: &str| {
        let canary = load_canary(&canary_doc(name)).map_err(|e| e.to_string());
        canary.and_then(|c| validate(&c.spec).map_err(|e| e.to_string()))
    };
    let gateway = strategy("seed-004-canary.yaml").map(|s| (s.strategy, s.webhooks.len()));
    assert_eq!(
        gateway,
        Ok((
            Strategy::Canary {
                steps: Steps::Fixed(Weight::from_whole_percent(10).unwrap_or_default()),
                max_weight: Weight::from_whole_percent(50).unwrap_or_default(),
            },
            2
        ))
    );
    let mirroring = strategy("seed-004-mirroring.yaml").map(|s| (s.strategy, s.mirror));
    assert_eq!(
        mirroring,
        Ok((Strategy::BlueGreen { iterations: 10 }, Some(Weight::FULL)))
    );
    let affinity = strategy("seed-004-session-affinity.yaml")
        .map(|s| s.session_affinity.map(|a| (a.cookie_name, a.max_age)));
    assert_eq!(affinity, Ok(Some(("flagger-cookie".to_owned(), 21_600))));
    let knative = strategy("seed-000-knative-canary.yaml").map(|s| (s.target_kind, s.interval));
    assert_eq!(
        knative,
        Ok(("Service".to_owned(), std::time::Duration::from_secs(15)))
    );
    let checkout = strategy("seed-001-checkout-canary.yaml").map(|s| s.metrics.len());
    assert_eq!(checkout, Ok(2));
}

/// A valid base manifest; cases edit it.
const BASE: &str = r#"apiVersion: serin.dev/v1alpha1
kind: Canary
metadata:
  name: podinfo
  namespace: test
spec:
  targetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: podinfo
  service:
    port: 9898
    gatewayRefs: [{name: public}]
  analysis:
    interval: 1m
    threshold: 5
"#;

/// Every problem `serin validate` reports for BASE plus `analysis` lines (or with `edit`).
fn problems(yaml: &str) -> Vec<String> {
    check_manifest(yaml)
        .into_iter()
        .flat_map(|f| match f {
            Finding::Object(report) => report.problems,
            Finding::Unreadable { message, .. } => vec![message],
        })
        .collect()
}

fn with_analysis(lines: &str) -> String {
    format!("{BASE}{lines}")
}

#[test]
fn each_rule_reports_its_field_path() {
    let cases: &[(&str, String, &[&str])] = &[
        (
            "maxWeight above 100",
            with_analysis("    maxWeight: 150\n    stepWeight: 10\n"),
            &["spec.analysis.maxWeight: must be at most 100, got 150"],
        ),
        (
            "maxWeight zero",
            with_analysis("    maxWeight: 0\n    stepWeight: 10\n"),
            &["spec.analysis.maxWeight: must be greater than 0, got 0"],
        ),
        (
            "maxWeight negative",
            with_analysis("    maxWeight: -5\n    stepWeight: 10\n"),
            &["spec.analysis.maxWeight: must be greater than 0, got -5"],
        ),
        (
            "stepWeight zero",
            with_analysis("    stepWeight: 0\n"),
            &["spec.analysis.stepWeight: must be greater than 0, got 0"],
        ),
        (
            "stepWeight above maxWeight",
            with_analysis("    maxWeight: 50\n    stepWeight: 60\n"),
            &["spec.analysis.stepWeight: must not exceed maxWeight 50, got 60"],
        ),
        (
            "stepWeight finer than 0.01",
            with_analysis("    stepWeight: 0.005\n"),
            &["spec.analysis.stepWeight: must be a multiple of 0.01, got 0.005"],
        ),
        (
            "stepWeights not increasing",
            with_analysis("    stepWeights: [1, 5, 5, 2]\n"),
            &[
                "spec.analysis.stepWeights[2]: must be greater than the previous step 5, got 5",
                "spec.analysis.stepWeights[3]: must be greater than the previous step 5, got 2",
            ],
        ),
        (
            "stepWeights above 100",
            with_analysis("    stepWeights: [10, 120]\n"),
            &["spec.analysis.stepWeights[1]: must be at most 100, got 120"],
        ),
        (
            "stepWeights above maxWeight",
            with_analysis("    maxWeight: 50\n    stepWeights: [10, 75]\n"),
            &["spec.analysis.stepWeights[1]: must not exceed maxWeight 50, got 75"],
        ),
        (
            "stepWeight with stepWeights",
            with_analysis("    stepWeight: 10\n    stepWeights: [10, 20]\n"),
            &["spec.analysis.stepWeights: cannot be combined with stepWeight"],
        ),
        (
            "iterations with stepWeight and no match",
            with_analysis("    iterations: 10\n    stepWeight: 10\n"),
            &["spec.analysis.stepWeight: cannot be combined with iterations unless match is set"],
        ),
        (
            "iterations with stepWeights and no match",
            with_analysis("    iterations: 10\n    stepWeights: [10, 20]\n"),
            &["spec.analysis.stepWeights: cannot be combined with iterations unless match is set"],
        ),
        (
            "no strategy",
            with_analysis(""),
            &["spec.analysis: one of stepWeight, stepWeights or iterations is required"],
        ),
        (
            "mirror without a strategy to mirror in",
            with_analysis("    mirror: true\n"),
            &["spec.analysis: one of stepWeight, stepWeights or iterations is required"],
        ),
        (
            "mirror with A/B testing",
            with_analysis(
                "    iterations: 5\n    mirror: true\n    match:\n      - headers:\n          x-canary: {exact: insider}\n",
            ),
            &["spec.analysis.mirror: cannot be combined with match"],
        ),
        (
            "mirrorWeight without mirror",
            with_analysis("    stepWeight: 10\n    mirrorWeight: 50\n"),
            &["spec.analysis.mirrorWeight: requires mirror: true"],
        ),
        (
            "mirrorWeight out of range",
            with_analysis("    iterations: 5\n    mirror: true\n    mirrorWeight: 0\n"),
            &["spec.analysis.mirrorWeight: must be greater than 0, got 0"],
        ),
        (
            "threshold zero",
            BASE.replace("threshold: 5", "threshold: 0") + "    stepWeight: 10\n",
            &["spec.analysis.threshold: must be at least 1, got 0"],
        ),
        (
            "iterations zero",
            with_analysis("    iterations: 0\n"),
            &["spec.analysis.iterations: must be at least 1, got 0"],
        ),
        (
            "stepWeightPromotion above 100",
            with_analysis("    stepWeight: 10\n    stepWeightPromotion: 101\n"),
            &["spec.analysis.stepWeightPromotion: must be at most 100, got 101"],
        ),
        (
            "unknown built-in metric without templateRef",
            with_analysis(
                "    stepWeight: 10\n    metrics:\n      - name: error-rate\n        thresholdRange: {max: 1}\n",
            ),
            &[
                "spec.analysis.metrics[0].name: unknown built-in metric \"error-rate\" (built-ins: \
                 request-success-rate, request-duration); set templateRef to query a MetricTemplate",
            ],
        ),
        (
            "thresholdRange with neither min nor max",
            with_analysis(
                "    stepWeight: 10\n    metrics:\n      - name: request-success-rate\n        thresholdRange: {}\n",
            ),
            &["spec.analysis.metrics[0].thresholdRange: must set min, max or both"],
        ),
        (
            "thresholdRange inverted",
            with_analysis(
                "    stepWeight: 10\n    metrics:\n      - name: request-duration\n        thresholdRange: {min: 500, max: 100}\n",
            ),
            &["spec.analysis.metrics[0].thresholdRange: min 500 must not exceed max 100"],
        ),
        (
            "metric without any threshold",
            with_analysis("    stepWeight: 10\n    metrics:\n      - name: request-duration\n"),
            &["spec.analysis.metrics[0]: one of thresholdRange or threshold is required"],
        ),
        (
            "duplicate metric names",
            with_analysis(
                "    stepWeight: 10\n    metrics:\n      - name: request-duration\n        threshold: 500\n      - name: request-duration\n        threshold: 400\n",
            ),
            &[
                "spec.analysis.metrics[1].name: duplicate metric name \"request-duration\" (also metrics[0])",
            ],
        ),
        (
            "templateRef without name",
            with_analysis(
                "    stepWeight: 10\n    metrics:\n      - name: latency\n        templateRef: {namespace: x}\n        threshold: 1\n",
            ),
            &["spec.analysis.metrics[0].templateRef.name: required"],
        ),
        (
            "webhook with an unknown type",
            with_analysis(
                "    stepWeight: 10\n    webhooks:\n      - name: gate\n        type: pre-rollot\n        url: http://loadtester.test/\n",
            ),
            &[
                "spec.analysis.webhooks[0].type: unknown webhook type \"pre-rollot\" (expected one of \
                 confirm-rollout, pre-rollout, rollout, confirm-traffic-increase, confirm-promotion, \
                 post-rollout, rollback, event)",
            ],
        ),
        (
            "webhook with a bad URL",
            with_analysis(
                "    stepWeight: 10\n    webhooks:\n      - name: load-test\n        url: loadtester.test/run\n",
            ),
            &[
                "spec.analysis.webhooks[0].url: invalid URL \"loadtester.test/run\": must be an \
                 absolute http or https URL",
            ],
        ),
        (
            "webhook with a non-http URL",
            with_analysis(
                "    stepWeight: 10\n    webhooks:\n      - name: load-test\n        url: ftp://loadtester.test/\n",
            ),
            &[
                "spec.analysis.webhooks[0].url: invalid URL \"ftp://loadtester.test/\": scheme must be http or https, got \"ftp\"",
            ],
        ),
        (
            "webhook without URL and name",
            with_analysis("    stepWeight: 10\n    webhooks:\n      - type: rollout\n"),
            &[
                "spec.analysis.webhooks[0].name: required",
                "spec.analysis.webhooks[0].url: required",
            ],
        ),
        (
            "session affinity with blue/green",
            with_analysis(
                "    iterations: 5\n    sessionAffinity:\n      cookieName: flagger-cookie\n",
            ),
            &[
                "spec.analysis.sessionAffinity: requires a weighted strategy (stepWeight or \
                 stepWeights), not iterations",
            ],
        ),
        (
            "session affinity without a cookie name",
            with_analysis("    stepWeight: 10\n    sessionAffinity:\n      maxAge: 60\n"),
            &["spec.analysis.sessionAffinity.cookieName: required"],
        ),
        (
            "session affinity with a negative max age",
            with_analysis(
                "    stepWeight: 10\n    sessionAffinity:\n      cookieName: c\n      maxAge: -1\n",
            ),
            &["spec.analysis.sessionAffinity.maxAge: must not be negative, got -1"],
        ),
        (
            "match entry without conditions",
            with_analysis("    iterations: 5\n    match:\n      - headers: {}\n"),
            &["spec.analysis.match[0]: must set at least one condition"],
        ),
        (
            "match with two operators",
            with_analysis(
                "    iterations: 5\n    match:\n      - headers:\n          x-canary: {exact: a, prefix: b}\n",
            ),
            &[
                "spec.analysis.match[0].headers.x-canary: must set only one of exact, prefix, suffix or regex",
            ],
        ),
        (
            "match with a bad regex",
            with_analysis(
                "    iterations: 5\n    match:\n      - headers:\n          cookie: {regex: \"(canary\"}\n",
            ),
            &["spec.analysis.match[0].headers.cookie.regex: invalid regex: unclosed group"],
        ),
        (
            "match on source labels",
            with_analysis("    iterations: 5\n    match:\n      - sourceLabels: {app: frontend}\n"),
            &["spec.analysis.match[0].sourceLabels: not supported by serin-proxy"],
        ),
        (
            "bad interval duration (schema)",
            BASE.replace("interval: 1m", "interval: 1x") + "    stepWeight: 10\n",
            &[
                "spec.analysis.interval: invalid duration \"1x\": unknown unit \"x\" (expected ns, \
                 us, ms, s, m or h)",
            ],
        ),
        (
            "zero interval",
            BASE.replace("interval: 1m", "interval: 0s") + "    stepWeight: 10\n",
            &["spec.analysis.interval: must be greater than 0"],
        ),
        (
            "unknown field (schema)",
            with_analysis("    stepWieght: 10\n"),
            &[
                "spec.analysis.stepWieght: unknown field `stepWieght`, expected one of `interval`, \
                 `iterations`, `threshold`, `maxWeight`, `stepWeight`, `stepWeights`, \
                 `stepWeightPromotion`, `mirror`, `mirrorWeight`, `primaryReadyThreshold`, \
                 `canaryReadyThreshold`, `match`, `metrics`, `webhooks`, `alerts`, `sessionAffinity`",
            ],
        ),
        (
            "missing targetRef",
            BASE.replace(
                "  targetRef:\n    apiVersion: apps/v1\n    kind: Deployment\n    name: podinfo\n",
                "",
            ) + "    stepWeight: 10\n",
            &["spec.targetRef: required"],
        ),
        (
            "targetRef of an unsupported kind",
            BASE.replace("kind: Deployment", "kind: StatefulSet") + "    stepWeight: 10\n",
            &[
                "spec.targetRef.kind: unsupported kind \"StatefulSet\" (expected Deployment or DaemonSet, or Backend in standalone mode)",
            ],
        ),
        (
            "missing service port",
            BASE.replace("    port: 9898\n", "    targetPort: 9898\n") + "    stepWeight: 10\n",
            &["spec.service.port: required"],
        ),
        (
            "missing service",
            BASE.replace(
                "  service:\n    port: 9898\n    gatewayRefs: [{name: public}]\n",
                "",
            ) + "    stepWeight: 10\n",
            &["spec.service: required"],
        ),
        (
            "missing gatewayRefs",
            BASE.replace("    gatewayRefs: [{name: public}]\n", "") + "    stepWeight: 10\n",
            &[
                "spec.service.gatewayRefs: required: at least one Gateway for the HTTPRoute to attach to (without one serin-proxy rejects the route and answers 404)",
            ],
        ),
        (
            "service port out of range",
            BASE.replace("port: 9898", "port: 0") + "    stepWeight: 10\n",
            &["spec.service.port: must be between 1 and 65535, got 0"],
        ),
        (
            "missing analysis",
            BASE.replace("  analysis:\n    interval: 1m\n    threshold: 5\n", ""),
            &["spec.analysis: required"],
        ),
        (
            "non-positive progress deadline",
            BASE.replace("spec:\n", "spec:\n  progressDeadlineSeconds: 0\n")
                + "    stepWeight: 10\n",
            &["spec.progressDeadlineSeconds: must be greater than 0, got 0"],
        ),
        (
            "Flagger apiVersion",
            BASE.replace("serin.dev/v1alpha1", "flagger.app/v1beta1") + "    stepWeight: 10\n",
            &["apiVersion: expected serin.dev/v1alpha1, got \"flagger.app/v1beta1\""],
        ),
    ];
    for (name, yaml, expected) in cases {
        let expected: Vec<String> = expected.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(problems(yaml), expected, "{name}\n{yaml}");
    }
}

#[test]
fn all_problems_are_reported_at_once() {
    let yaml = BASE
        .replace("threshold: 5", "threshold: 0")
        .replace("port: 9898", "port: 70000")
        + "    maxWeight: 150\n    stepWeight: 0\n    mirrorWeight: 10\n    metrics:\n      - name: nope\n        threshold: 1\n";
    assert_eq!(
        problems(&yaml),
        vec![
            "spec.service.port: must be between 1 and 65535, got 70000",
            "spec.analysis.threshold: must be at least 1, got 0",
            "spec.analysis.maxWeight: must be at most 100, got 150",
            "spec.analysis.stepWeight: must be greater than 0, got 0",
            "spec.analysis.mirrorWeight: requires mirror: true",
            "spec.analysis.metrics[0].name: unknown built-in metric \"nope\" (built-ins: \
             request-success-rate, request-duration); set templateRef to query a MetricTemplate",
        ]
    );
}

#[test]
fn defaults_are_flaggers() {
    let canary = load_canary(
        &with_analysis("    stepWeight: 10\n").replace("    interval: 1m\n    threshold: 5\n", ""),
    );
    let settings = canary
        .map_err(|e| e.to_string())
        .and_then(|c| validate_canary(&c).map_err(|e| e.to_string()));
    let Ok(settings) = settings else {
        panic!("{settings:?}");
    };
    assert_eq!(settings.interval, std::time::Duration::from_secs(60));
    assert_eq!(settings.threshold, 1);
    assert_eq!(
        settings.progress_deadline,
        std::time::Duration::from_secs(600)
    );
    assert_eq!(settings.strategy.max_weight(), Weight::FULL);
    assert!(!settings.skip_analysis);
}

#[test]
fn metric_templates_are_validated() {
    let yaml = r#"apiVersion: serin.dev/v1alpha1
kind: MetricTemplate
metadata: {name: latency, namespace: flagger-system}
spec:
  provider:
    type: datadog
  query: ""
"#;
    assert_eq!(
        problems(yaml),
        vec![
            "spec.provider.type: unsupported provider \"datadog\" (supported: prometheus)",
            "spec.query: required",
        ]
    );
}

/// serin-proxy skips the controller's kinds in a routing directory by name; the names must be
/// those of the controller's CRDs, or a Canary beside the routes would be refused as an
/// unknown `serin.dev` kind.
#[test]
fn the_proxy_knows_every_controller_kind() {
    let yaml = serin_controller::crd::crds_yaml().unwrap_or_default();
    let mut kinds: Vec<String> = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(&yaml) {
        let crd =
            <serde_json::Value as serde::Deserialize>::deserialize(document).unwrap_or_default();
        assert_eq!(crd["spec"]["group"], "serin.dev");
        for version in crd["spec"]["versions"].as_array().into_iter().flatten() {
            assert_eq!(version["name"], "v1alpha1");
        }
        let kind = crd["spec"]["names"]["kind"].as_str().unwrap_or("");
        // The proxy's own kinds are read, not skipped.
        if !["Backend", "SessionAffinity"].contains(&kind) {
            kinds.push(kind.to_owned());
        }
    }
    kinds.sort();
    assert_eq!(kinds, serin_proxy::schema::CONTROLLER_KINDS);
}
