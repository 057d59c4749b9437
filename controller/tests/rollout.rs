//! Walks every strategy through promotion and through each rollback cause, asserting the
//! exact sequence of events (Flagger's wording), weights, phases and routes.

mod support;

use std::{cell::Cell, rc::Rc};

use serin_controller::{
    Phase, Weight,
    analysis::MetricValue,
    canary::HookType,
    route::{CookieAffinity, NamedMatch, Route, RouteMatch, ValueMatch},
    stage::{Action, HookResult, Need, WebhookCall},
    status::ConditionStatus,
};
use support::{Driver, bp, healthy, manifest, pct};

const LOADTESTER: &str = "http://flagger-loadtester.test/";

/// A weighted split with `canary` on the canary.
fn split(canary: Weight) -> Route {
    Route::split(canary)
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// One strategy, walked from a new revision to promotion with every check passing.
struct Promotion {
    name: &'static str,
    analysis: String,
    canary_startup: u32,
    primary_rollout: u32,
    events: Vec<&'static str>,
    weights: Vec<&'static str>,
    phases: Vec<&'static str>,
    routes: Vec<Route>,
}

fn ab_matches() -> Vec<RouteMatch> {
    vec![
        RouteMatch {
            headers: vec![NamedMatch {
                name: "x-canary".into(),
                value: ValueMatch::Exact("insider".into()),
            }],
            ..RouteMatch::default()
        },
        RouteMatch {
            headers: vec![NamedMatch {
                name: "cookie".into(),
                value: ValueMatch::Regex("^(.*?;)?(canary=always)(;.*)?$".into()),
            }],
            ..RouteMatch::default()
        },
    ]
}

fn promotions() -> Vec<Promotion> {
    let mirror = |percent: u8| Route {
        mirror: Some(pct(percent)),
        ..Route::primary_only()
    };
    vec![
        Promotion {
            // Seed 003: "Automated canary promotion".
            name: "weighted canary, stepWeight 5 to maxWeight 50",
            analysis: format!(
                r#"    threshold: 10
    maxWeight: 50
    stepWeight: 5
    metrics:
      - name: request-success-rate
        thresholdRange: {{min: 99}}
        interval: 1m
      - name: request-duration
        thresholdRange: {{max: 500}}
        interval: 30s
    webhooks:
      - name: acceptance-test
        type: pre-rollout
        url: {LOADTESTER}
      - name: load-test
        url: {LOADTESTER}
"#
            ),
            canary_startup: 1,
            primary_rollout: 1,
            events: vec![
                "New revision detected! Scaling up podinfo.test",
                "Waiting for podinfo.test rollout to finish: 0 of 1 updated replicas are available",
                "Starting canary analysis for podinfo.test",
                "Pre-rollout check acceptance-test passed",
                "Advance podinfo.test canary weight 5",
                "Advance podinfo.test canary weight 10",
                "Advance podinfo.test canary weight 15",
                "Advance podinfo.test canary weight 20",
                "Advance podinfo.test canary weight 25",
                "Advance podinfo.test canary weight 30",
                "Advance podinfo.test canary weight 35",
                "Advance podinfo.test canary weight 40",
                "Advance podinfo.test canary weight 45",
                "Advance podinfo.test canary weight 50",
                "Copying podinfo.test template spec to podinfo-primary.test",
                "Waiting for podinfo-primary.test rollout to finish: 1 of 2 updated replicas are available",
                "Routing all traffic to primary",
                "Promotion completed! Scaling down podinfo.test",
            ],
            weights: vec![
                "0", "0", "5", "10", "15", "20", "25", "30", "35", "40", "45", "50", "50", "50",
                "0", "0",
            ],
            phases: vec![
                "Progressing",
                "Progressing",
                "Progressing",
                "Progressing",
                "Progressing",
                "Progressing",
                "Progressing",
                "Progressing",
                "Progressing",
                "Progressing",
                "Progressing",
                "Progressing",
                "Promoting",
                "Promoting",
                "Finalising",
                "Succeeded",
            ],
            routes: (1..=10)
                .map(|i| split(pct(5 * i)))
                .chain([Route::primary_only()])
                .collect(),
        },
        Promotion {
            name: "weighted canary, fractional stepWeights [0.1, 1, 5, 25]",
            analysis: "    stepWeights: [0.1, 1, 5, 25]\n".to_owned(),
            canary_startup: 0,
            primary_rollout: 0,
            events: vec![
                "New revision detected! Scaling up podinfo.test",
                "Starting canary analysis for podinfo.test",
                "Advance podinfo.test canary weight 0.1",
                "Advance podinfo.test canary weight 1",
                "Advance podinfo.test canary weight 5",
                "Advance podinfo.test canary weight 25",
                "Copying podinfo.test template spec to podinfo-primary.test",
                "Routing all traffic to primary",
                "Promotion completed! Scaling down podinfo.test",
            ],
            weights: vec!["0", "0.1", "1", "5", "25", "25", "0", "0"],
            phases: vec![
                "Progressing",
                "Progressing",
                "Progressing",
                "Progressing",
                "Progressing",
                "Promoting",
                "Finalising",
                "Succeeded",
            ],
            routes: vec![
                split(bp(10)),
                split(bp(100)),
                split(bp(500)),
                split(bp(2500)),
                Route::primary_only(),
            ],
        },
        Promotion {
            name: "weighted canary with stepWeightPromotion",
            analysis: "    maxWeight: 50\n    stepWeight: 25\n    stepWeightPromotion: 20\n"
                .to_owned(),
            canary_startup: 0,
            primary_rollout: 0,
            events: vec![
                "New revision detected! Scaling up podinfo.test",
                "Starting canary analysis for podinfo.test",
                "Advance podinfo.test canary weight 25",
                "Advance podinfo.test canary weight 50",
                "Copying podinfo.test template spec to podinfo-primary.test",
                "Advance podinfo.test primary weight 70",
                "Advance podinfo.test primary weight 90",
                "Advance podinfo.test primary weight 100",
                "Promotion completed! Scaling down podinfo.test",
            ],
            weights: vec!["0", "25", "50", "50", "30", "10", "0", "0"],
            phases: vec![
                "Progressing",
                "Progressing",
                "Progressing",
                "Promoting",
                "Promoting",
                "Promoting",
                "Finalising",
                "Succeeded",
            ],
            routes: vec![
                split(pct(25)),
                split(pct(50)),
                split(pct(30)),
                split(pct(10)),
                Route::primary_only(),
            ],
        },
        Promotion {
            // Seed 004: "A/B Testing" (the Flagger A/B spec: iterations + match).
            name: "A/B testing, 10 iterations on header and cookie matches",
            analysis: r#"    threshold: 5
    iterations: 10
    match:
      - headers:
          x-canary:
            exact: "insider"
      - headers:
          cookie:
            regex: "^(.*?;)?(canary=always)(;.*)?$"
"#
            .to_owned(),
            canary_startup: 1,
            primary_rollout: 1,
            events: vec![
                "New revision detected! Scaling up podinfo.test",
                "Waiting for podinfo.test rollout to finish: 0 of 1 updated replicas are available",
                "Starting canary analysis for podinfo.test",
                "Advance podinfo.test canary iteration 1/10",
                "Advance podinfo.test canary iteration 2/10",
                "Advance podinfo.test canary iteration 3/10",
                "Advance podinfo.test canary iteration 4/10",
                "Advance podinfo.test canary iteration 5/10",
                "Advance podinfo.test canary iteration 6/10",
                "Advance podinfo.test canary iteration 7/10",
                "Advance podinfo.test canary iteration 8/10",
                "Advance podinfo.test canary iteration 9/10",
                "Advance podinfo.test canary iteration 10/10",
                "Copying podinfo.test template spec to podinfo-primary.test",
                "Waiting for podinfo-primary.test rollout to finish: 1 of 2 updated replicas are available",
                "Routing all traffic to primary",
                "Promotion completed! Scaling down podinfo.test",
            ],
            weights: vec![
                "0", "0", "100", "100", "100", "100", "100", "100", "100", "100", "100", "100",
                "100", "100", "0", "0",
            ],
            phases: [
                vec!["Progressing"; 12],
                vec!["Promoting", "Promoting", "Finalising", "Succeeded"],
            ]
            .concat(),
            routes: vec![
                Route {
                    matches: Some(ab_matches()),
                    ..split(Weight::FULL)
                },
                Route::primary_only(),
            ],
        },
        Promotion {
            name: "blue/green, 3 iterations",
            analysis: "    iterations: 3\n".to_owned(),
            canary_startup: 0,
            primary_rollout: 0,
            events: vec![
                "New revision detected! Scaling up podinfo.test",
                "Starting canary analysis for podinfo.test",
                "Advance podinfo.test canary iteration 1/3",
                "Advance podinfo.test canary iteration 2/3",
                "Advance podinfo.test canary iteration 3/3",
                "Routing all traffic to canary",
                "Copying podinfo.test template spec to podinfo-primary.test",
                "Routing all traffic to primary",
                "Promotion completed! Scaling down podinfo.test",
            ],
            weights: vec!["0", "0", "0", "0", "100", "100", "0", "0"],
            phases: [
                vec!["Progressing"; 5],
                vec!["Promoting", "Finalising", "Succeeded"],
            ]
            .concat(),
            routes: vec![split(Weight::FULL), Route::primary_only()],
        },
        Promotion {
            // Seed 004: "Traffic mirroring".
            name: "blue/green with mirroring, 3 iterations",
            analysis: "    threshold: 5\n    iterations: 3\n    mirror: true\n".to_owned(),
            canary_startup: 0,
            primary_rollout: 0,
            events: vec![
                "New revision detected! Scaling up podinfo.test",
                "Starting canary analysis for podinfo.test",
                "Advance podinfo.test canary iteration 1/3",
                "Advance podinfo.test canary iteration 2/3",
                "Advance podinfo.test canary iteration 3/3",
                "Stop traffic mirroring and route all traffic to canary",
                "Copying podinfo.test template spec to podinfo-primary.test",
                "Routing all traffic to primary",
                "Promotion completed! Scaling down podinfo.test",
            ],
            weights: vec!["0", "0", "0", "0", "100", "100", "0", "0"],
            phases: [
                vec!["Progressing"; 5],
                vec!["Promoting", "Finalising", "Succeeded"],
            ]
            .concat(),
            routes: vec![mirror(100), split(Weight::FULL), Route::primary_only()],
        },
        Promotion {
            name: "weighted canary with a 50% mirror step first",
            analysis:
                "    maxWeight: 40\n    stepWeight: 20\n    mirror: true\n    mirrorWeight: 50\n"
                    .to_owned(),
            canary_startup: 0,
            primary_rollout: 0,
            events: vec![
                "New revision detected! Scaling up podinfo.test",
                "Starting canary analysis for podinfo.test",
                "Advance podinfo.test canary weight 0",
                "Advance podinfo.test canary weight 20",
                "Advance podinfo.test canary weight 40",
                "Copying podinfo.test template spec to podinfo-primary.test",
                "Routing all traffic to primary",
                "Promotion completed! Scaling down podinfo.test",
            ],
            weights: vec!["0", "0", "20", "40", "40", "0", "0"],
            phases: [
                vec!["Progressing"; 4],
                vec!["Promoting", "Finalising", "Succeeded"],
            ]
            .concat(),
            routes: vec![
                mirror(50),
                split(pct(20)),
                split(pct(40)),
                Route::primary_only(),
            ],
        },
        Promotion {
            // Seed 004: "Session Affinity".
            name: "weighted canary with session affinity",
            analysis: r#"    maxWeight: 50
    stepWeight: 25
    sessionAffinity:
      cookieName: flagger-cookie
      maxAge: 21600
"#
            .to_owned(),
            canary_startup: 0,
            primary_rollout: 0,
            events: vec![
                "New revision detected! Scaling up podinfo.test",
                "Starting canary analysis for podinfo.test",
                "Advance podinfo.test canary weight 25",
                "Advance podinfo.test canary weight 50",
                "Copying podinfo.test template spec to podinfo-primary.test",
                "Routing all traffic to primary",
                "Promotion completed! Scaling down podinfo.test",
            ],
            weights: vec!["0", "25", "50", "50", "0", "0"],
            phases: [
                vec!["Progressing"; 3],
                vec!["Promoting", "Finalising", "Succeeded"],
            ]
            .concat(),
            routes: {
                let pin = Some(CookieAffinity::Pin {
                    cookie_name: "flagger-cookie".into(),
                    cookie_value: "tok".into(),
                    max_age: 21_600,
                });
                vec![
                    Route {
                        session_affinity: pin.clone(),
                        ..split(pct(25))
                    },
                    Route {
                        session_affinity: pin,
                        ..split(pct(50))
                    },
                    Route {
                        session_affinity: Some(CookieAffinity::Expire {
                            cookie_name: "flagger-cookie".into(),
                            cookie_value: "tok".into(),
                        }),
                        ..Route::primary_only()
                    },
                ]
            },
        },
    ]
}

#[test]
fn every_strategy_promotes_with_flagger_events() {
    for case in promotions() {
        let mut driver = Driver::new(&manifest(&case.analysis)).released();
        driver.canary_startup = case.canary_startup;
        driver.primary_rollout = case.primary_rollout;
        driver.finish();
        assert_eq!(
            driver.events(),
            strings(&case.events),
            "{}: events",
            case.name
        );
        assert_eq!(
            driver.weights(),
            strings(&case.weights),
            "{}: weights",
            case.name
        );
        assert_eq!(
            driver.phases(),
            strings(&case.phases),
            "{}: phases",
            case.name
        );
        assert_eq!(driver.routes(), case.routes, "{}: routes", case.name);
        // The promoted template is the new revision; the canary is scaled down; all traffic
        // is on the primary.
        assert_eq!(
            driver.primary_revision.as_deref(),
            Some("rev-2"),
            "{}",
            case.name
        );
        assert!(!driver.canary_running, "{}: canary scaled down", case.name);
        assert!(
            driver.route.as_ref().is_some_and(Route::is_primary_only),
            "{}: final route {:?}",
            case.name,
            driver.route
        );
        let status = &driver.status;
        assert_eq!(
            status.last_promoted_spec.as_deref(),
            Some("rev-2"),
            "{}",
            case.name
        );
        assert_eq!(status.conditions.len(), 1);
        assert_eq!(
            status.conditions[0].status,
            ConditionStatus::True,
            "{}",
            case.name
        );
        assert_eq!(status.conditions[0].reason, "Succeeded");
        assert_eq!(
            status.conditions[0].message,
            "Canary analysis completed successfully, promotion finished."
        );
    }
}

#[test]
fn weighted_promotion_actions_in_order() {
    let mut driver = Driver::new(&manifest("    maxWeight: 20\n    stepWeight: 10\n")).released();
    driver.finish();
    assert_eq!(
        driver.actions(),
        vec![
            Action::ScaleCanaryUp,
            Action::SetRoute(split(pct(10))),
            Action::SetRoute(split(pct(20))),
            Action::PromotePrimary,
            Action::SetRoute(Route::primary_only()),
            Action::ScaleCanaryToZero,
        ]
    );
}

#[test]
fn bootstrap_initializes_the_primary_first() {
    let mut driver = Driver::new(&manifest("    stepWeight: 10\n"));
    driver.obs.primary = serin_controller::stage::Readiness::Ready;
    driver.tick();
    assert_eq!(driver.phases(), vec!["Initializing"]);
    assert_eq!(driver.actions(), vec![Action::Bootstrap]);
    assert_eq!(
        driver.status.conditions[0].message,
        "New Deployment detected, starting initialization."
    );
    driver.tick();
    assert_eq!(driver.phases(), vec!["Initializing", "Initialized"]);
    assert_eq!(driver.events(), vec!["Initialization done! podinfo.test"]);
    assert_eq!(
        driver.actions(),
        vec![
            Action::Bootstrap,
            Action::Bootstrap,
            Action::ScaleCanaryToZero,
            Action::SetRoute(Route::primary_only()),
        ]
    );
    assert_eq!(driver.status.last_applied_spec.as_deref(), Some("rev-1"));
    assert_eq!(driver.status.last_promoted_spec.as_deref(), Some("rev-1"));
    assert_eq!(driver.status.conditions[0].status, ConditionStatus::True);
    // Nothing happens until a new revision appears.
    driver.tick();
    assert_eq!(driver.trace[2].events, vec![]);
    assert_eq!(driver.trace[2].actions, vec![]);
}

/// One rollback cause, walked from a new revision to `Failed`.
struct Rollback {
    name: &'static str,
    analysis: String,
    setup: Box<dyn Fn(&mut Driver)>,
    events: Vec<&'static str>,
    failed_checks: u32,
}

fn rollbacks() -> Vec<Rollback> {
    vec![
        Rollback {
            // Seed 003: "Automated rollback".
            name: "failed checks threshold reached through metrics",
            analysis: format!(
                r#"    threshold: 3
    maxWeight: 50
    stepWeight: 5
    metrics:
      - name: request-success-rate
        thresholdRange: {{min: 99}}
        interval: 1m
    webhooks:
      - name: acceptance-test
        type: pre-rollout
        url: {LOADTESTER}
"#
            ),
            setup: Box::new(|d| {
                d.canary_startup = 1;
                d.metrics = Box::new(|status, name| {
                    if status.canary_weight < pct(20) {
                        return healthy(name);
                    }
                    let values = [53.42, 53.19, 48.05];
                    MetricValue::Value(values[status.failed_checks as usize % 3])
                });
            }),
            events: vec![
                "New revision detected! Scaling up podinfo.test",
                "Waiting for podinfo.test rollout to finish: 0 of 1 updated replicas are available",
                "Starting canary analysis for podinfo.test",
                "Pre-rollout check acceptance-test passed",
                "Advance podinfo.test canary weight 5",
                "Advance podinfo.test canary weight 10",
                "Advance podinfo.test canary weight 15",
                "Advance podinfo.test canary weight 20",
                "Halt podinfo.test advancement success rate 53.42% < 99%",
                "Halt podinfo.test advancement success rate 53.19% < 99%",
                "Halt podinfo.test advancement success rate 48.05% < 99%",
                "Rolling back podinfo.test failed checks threshold reached 3",
                "Canary failed! Scaling down podinfo.test",
            ],
            failed_checks: 3,
        },
        Rollback {
            name: "request duration over its maximum",
            analysis: r#"    threshold: 2
    stepWeight: 10
    metrics:
      - name: request-duration
        thresholdRange: {max: 500}
        interval: 1m
"#
            .to_owned(),
            setup: Box::new(|d| d.metrics = Box::new(|_, _| MetricValue::Value(1200.0))),
            events: vec![
                "New revision detected! Scaling up podinfo.test",
                "Starting canary analysis for podinfo.test",
                "Advance podinfo.test canary weight 10",
                "Halt podinfo.test advancement request duration 1.2s > 500ms",
                "Halt podinfo.test advancement request duration 1.2s > 500ms",
                "Rolling back podinfo.test failed checks threshold reached 2",
                "Canary failed! Scaling down podinfo.test",
            ],
            failed_checks: 2,
        },
        Rollback {
            name: "metric with no values",
            analysis: r#"    stepWeight: 10
    metrics:
      - name: request-success-rate
        thresholdRange: {min: 99}
"#
            .to_owned(),
            setup: Box::new(|d| d.metrics = Box::new(|_, _| MetricValue::NoValues)),
            events: vec![
                "New revision detected! Scaling up podinfo.test",
                "Starting canary analysis for podinfo.test",
                "Advance podinfo.test canary weight 10",
                "Halt advancement no values found for serin metric request-success-rate probably podinfo.test is not receiving traffic",
                "Rolling back podinfo.test failed checks threshold reached 1",
                "Canary failed! Scaling down podinfo.test",
            ],
            failed_checks: 1,
        },
        Rollback {
            name: "custom metric from a template over its maximum",
            analysis: r#"    threshold: 2
    stepWeight: 10
    metrics:
      - name: latency
        templateRef: {name: latency, namespace: flagger-system}
        thresholdRange: {max: 0.5}
        interval: 30s
"#
            .to_owned(),
            setup: Box::new(|d| {
                d.metrics = Box::new(|status, _| {
                    MetricValue::Value([1.2, 1.45][status.failed_checks as usize % 2])
                });
            }),
            events: vec![
                "New revision detected! Scaling up podinfo.test",
                "Starting canary analysis for podinfo.test",
                "Advance podinfo.test canary weight 10",
                "Halt podinfo.test advancement latency 1.20 > 0.5",
                "Halt podinfo.test advancement latency 1.45 > 0.5",
                "Rolling back podinfo.test failed checks threshold reached 2",
                "Canary failed! Scaling down podinfo.test",
            ],
            failed_checks: 2,
        },
        Rollback {
            name: "progress deadline: the canary never becomes ready",
            analysis: "    stepWeight: 10\n".to_owned(),
            setup: Box::new(|d| {
                d.canary_startup = 100;
                d.spec.progress_deadline_seconds = Some(120);
            }),
            events: vec![
                "New revision detected! Scaling up podinfo.test",
                "Waiting for podinfo.test rollout to finish: 0 of 1 updated replicas are available",
                "Waiting for podinfo.test rollout to finish: 0 of 1 updated replicas are available",
                "Rolling back podinfo.test progress deadline exceeded canary deployment podinfo.test not ready: waiting for rollout to finish: 0 of 1 updated replicas are available",
                "Canary failed! Scaling down podinfo.test",
            ],
            failed_checks: 0,
        },
        Rollback {
            name: "rollback webhook returning success",
            analysis: format!(
                "    stepWeight: 10\n    webhooks:\n      - name: rollback-gate\n        type: rollback\n        url: {LOADTESTER}\n"
            ),
            setup: Box::new(|d| {
                d.hooks = Box::new(|status, _| {
                    if status.canary_weight >= pct(20) {
                        HookResult::Passed
                    } else {
                        HookResult::Failed("HTTP 403".into())
                    }
                });
            }),
            events: vec![
                "New revision detected! Scaling up podinfo.test",
                "Rollback hook rollback-gate not signaling a rollback",
                "Starting canary analysis for podinfo.test",
                "Advance podinfo.test canary weight 10",
                "Rollback hook rollback-gate not signaling a rollback",
                "Advance podinfo.test canary weight 20",
                "Rollback check rollback-gate passed",
                "Rolling back podinfo.test manual webhook invoked",
                "Canary failed! Scaling down podinfo.test",
            ],
            failed_checks: 0,
        },
        Rollback {
            name: "pre-rollout failures count as failed checks",
            analysis: format!(
                "    threshold: 2\n    stepWeight: 10\n    webhooks:\n      - name: acceptance-test\n        type: pre-rollout\n        url: {LOADTESTER}\n"
            ),
            setup: Box::new(|d| {
                d.hooks = Box::new(|_, _| HookResult::Failed("HTTP 500 tests failed".into()));
            }),
            events: vec![
                "New revision detected! Scaling up podinfo.test",
                "Starting canary analysis for podinfo.test",
                "Halt podinfo.test advancement pre-rollout check acceptance-test failed HTTP 500 tests failed",
                "Starting canary analysis for podinfo.test",
                "Halt podinfo.test advancement pre-rollout check acceptance-test failed HTTP 500 tests failed",
                "Rolling back podinfo.test failed checks threshold reached 2",
                "Canary failed! Scaling down podinfo.test",
            ],
            failed_checks: 2,
        },
        Rollback {
            name: "rollout webhook failures during the analysis",
            analysis: format!(
                "    threshold: 1\n    stepWeight: 10\n    webhooks:\n      - name: load-test\n        url: {LOADTESTER}\n"
            ),
            setup: Box::new(|d| {
                d.hooks = Box::new(|_, _| HookResult::Failed("connection refused".into()));
            }),
            events: vec![
                "New revision detected! Scaling up podinfo.test",
                "Starting canary analysis for podinfo.test",
                "Advance podinfo.test canary weight 10",
                "Halt podinfo.test advancement external check load-test failed connection refused",
                "Rolling back podinfo.test failed checks threshold reached 1",
                "Canary failed! Scaling down podinfo.test",
            ],
            failed_checks: 1,
        },
        Rollback {
            name: "blue/green mirroring rolled back mid-way",
            analysis: r#"    iterations: 5
    mirror: true
    metrics:
      - name: request-success-rate
        thresholdRange: {min: 99}
"#
            .to_owned(),
            setup: Box::new(|d| {
                d.metrics = Box::new(|status, name| {
                    if status.iterations >= 2 {
                        MetricValue::Value(12.5)
                    } else {
                        healthy(name)
                    }
                });
            }),
            events: vec![
                "New revision detected! Scaling up podinfo.test",
                "Starting canary analysis for podinfo.test",
                "Advance podinfo.test canary iteration 1/5",
                "Advance podinfo.test canary iteration 2/5",
                "Halt podinfo.test advancement success rate 12.50% < 99%",
                "Rolling back podinfo.test failed checks threshold reached 1",
                "Canary failed! Scaling down podinfo.test",
            ],
            failed_checks: 1,
        },
        Rollback {
            name: "A/B testing rolled back mid-way",
            analysis: r#"    iterations: 5
    match:
      - headers:
          x-canary: {exact: insider}
    webhooks:
      - name: load-test
        url: http://flagger-loadtester.test/
"#
            .to_owned(),
            setup: Box::new(|d| {
                d.hooks = Box::new(|status, _| {
                    if status.iterations >= 1 {
                        HookResult::Failed("HTTP 500".into())
                    } else {
                        HookResult::Passed
                    }
                });
            }),
            events: vec![
                "New revision detected! Scaling up podinfo.test",
                "Starting canary analysis for podinfo.test",
                "Advance podinfo.test canary iteration 1/5",
                "Halt podinfo.test advancement external check load-test failed HTTP 500",
                "Rolling back podinfo.test failed checks threshold reached 1",
                "Canary failed! Scaling down podinfo.test",
            ],
            failed_checks: 1,
        },
    ]
}

#[test]
fn every_rollback_cause_ends_with_all_traffic_on_the_primary() {
    for case in rollbacks() {
        let mut driver = Driver::new(&manifest(&case.analysis)).released();
        (case.setup)(&mut driver);
        driver.finish();
        assert_eq!(
            driver.events(),
            strings(&case.events),
            "{}: events",
            case.name
        );
        assert_eq!(driver.status.phase, Some(Phase::Failed), "{}", case.name);
        assert_eq!(
            driver.status.failed_checks, case.failed_checks,
            "{}",
            case.name
        );
        assert_eq!(driver.status.canary_weight, Weight::ZERO, "{}", case.name);
        let last = driver
            .trace
            .last()
            .map(|t| t.actions.clone())
            .unwrap_or_default();
        assert!(
            last.contains(&Action::SetRoute(Route::primary_only())),
            "{}: the rollback step routes everything to the primary: {last:?}",
            case.name
        );
        assert!(last.contains(&Action::ScaleCanaryToZero), "{}", case.name);
        assert!(!driver.canary_running, "{}", case.name);
        assert_eq!(driver.route, Some(Route::primary_only()), "{}", case.name);
        assert_eq!(
            driver.primary_revision.as_deref(),
            Some("rev-1"),
            "{}",
            case.name
        );
        let condition = &driver.status.conditions[0];
        assert_eq!(condition.status, ConditionStatus::False, "{}", case.name);
        assert_eq!(condition.reason, "Failed");
        assert_eq!(
            condition.message,
            "Canary analysis failed, Deployment scaled to zero."
        );
        // Rollbacks are warnings, as in Flagger.
        let typed = driver.typed_events();
        assert_eq!(
            typed.last().map(String::as_str),
            Some("Warning Canary failed! Scaling down podinfo.test"),
            "{}",
            case.name
        );
    }
}

#[test]
fn failed_release_waits_for_the_next_revision() {
    let mut driver = Driver::new(&manifest(
        "    stepWeight: 50\n    metrics:\n      - name: request-success-rate\n        thresholdRange: {min: 99}\n",
    ))
    .released();
    driver.metrics = Box::new(|_, _| MetricValue::NoValues);
    driver.finish();
    assert_eq!(driver.status.phase, Some(Phase::Failed));
    let steps = driver.trace.len();
    driver.tick();
    driver.tick();
    assert!(
        driver.trace[steps..]
            .iter()
            .all(|t| t.events.is_empty() && t.actions.is_empty())
    );
    // A fix is released: a new analysis starts from scratch.
    driver.metrics = Box::new(|_, name| healthy(name));
    driver.obs.revision.spec_hash = "rev-3".into();
    driver.finish();
    assert_eq!(driver.status.phase, Some(Phase::Succeeded));
    assert_eq!(driver.primary_revision.as_deref(), Some("rev-3"));
    assert_eq!(driver.status.failed_checks, 0);
}

#[test]
fn a_failed_release_undone_by_hand_releases_nothing() {
    let mut driver = Driver::new(&manifest(
        "    stepWeight: 50\n    metrics:\n      - name: request-success-rate\n        thresholdRange: {min: 99}\n",
    ))
    .released();
    driver.metrics = Box::new(|_, _| MetricValue::NoValues);
    driver.finish();
    assert_eq!(driver.status.phase, Some(Phase::Failed));
    let promoted = driver.status.last_promoted_spec.clone().unwrap();
    // `kubectl rollout undo`: the target is back on what the primary runs.
    driver.obs.revision.spec_hash = promoted.clone();
    let steps = driver.trace.len();
    driver.tick();
    let back = &driver.trace[steps];
    let messages: Vec<String> = back.events.iter().map(|e| e.message.clone()).collect();
    assert_eq!(
        messages,
        strings(&[
            "podinfo.test is back on the revision podinfo-primary.test runs: nothing to release"
        ])
    );
    assert!(back.actions.contains(&Action::ScaleCanaryToZero));
    assert_eq!(driver.status.phase, Some(Phase::Failed));
    assert_eq!(
        driver.status.last_applied_spec.as_deref(),
        Some(promoted.as_str())
    );
    // Nothing more happens until the next change, which is a release again.
    driver.tick();
    assert!(driver.trace[steps + 1].events.is_empty());
    driver.metrics = Box::new(|_, name| healthy(name));
    driver.obs.revision.spec_hash = "rev-3".into();
    driver.finish();
    assert_eq!(driver.status.phase, Some(Phase::Succeeded));
    assert_eq!(driver.primary_revision.as_deref(), Some("rev-3"));
}

#[test]
fn a_new_revision_during_the_analysis_restarts_it() {
    let mut driver = Driver::new(&manifest("    maxWeight: 30\n    stepWeight: 10\n")).released();
    driver.run_until(|t| t.weight == pct(20), 10);
    driver.obs.revision.spec_hash = "rev-3".into();
    driver.obs.revision.tracked_configs =
        [("configmap/podinfo-config".to_owned(), "c2".to_owned())].into();
    driver.finish();
    assert_eq!(
        driver.events(),
        strings(&[
            "New revision detected! Scaling up podinfo.test",
            "Starting canary analysis for podinfo.test",
            "Advance podinfo.test canary weight 10",
            "Advance podinfo.test canary weight 20",
            "New revision detected! Restarting analysis for podinfo.test",
            "Starting canary analysis for podinfo.test",
            "Advance podinfo.test canary weight 10",
            "Advance podinfo.test canary weight 20",
            "Advance podinfo.test canary weight 30",
            "Copying podinfo.test template spec to podinfo-primary.test",
            "Routing all traffic to primary",
            "Promotion completed! Scaling down podinfo.test",
        ])
    );
    assert_eq!(
        driver.weights(),
        strings(&["0", "10", "20", "0", "10", "20", "30", "30", "0", "0"])
    );
    assert_eq!(
        driver.routes()[2],
        Route::primary_only(),
        "restart routes back to primary"
    );
    assert_eq!(driver.primary_revision.as_deref(), Some("rev-3"));
    assert_eq!(driver.status.last_applied_spec.as_deref(), Some("rev-3"));
    assert_eq!(
        driver.status.tracked_configs,
        Some([("configmap/podinfo-config".to_owned(), "c2".to_owned())].into())
    );
}

#[test]
fn a_changed_config_map_alone_starts_a_release() {
    let mut driver = Driver::new(&manifest("    stepWeight: 100\n")).bootstrapped();
    driver.obs.revision.tracked_configs = [("secret/db".to_owned(), "s2".to_owned())].into();
    driver.finish();
    assert_eq!(
        driver.events()[0],
        "New revision detected! Scaling up podinfo.test"
    );
    assert_eq!(driver.status.phase, Some(Phase::Succeeded));
}

#[test]
fn skip_analysis_promotes_once_the_canary_is_ready() {
    let mut driver = Driver::new(&manifest(
        "    stepWeight: 10\n    metrics:\n      - name: request-success-rate\n        thresholdRange: {min: 99}\n",
    ))
    .released();
    driver.spec.skip_analysis = true;
    driver.canary_startup = 1;
    driver.metrics = Box::new(|_, _| MetricValue::Value(0.0));
    driver.finish();
    assert_eq!(
        driver.events(),
        strings(&[
            "New revision detected! Scaling up podinfo.test",
            "Waiting for podinfo.test rollout to finish: 0 of 1 updated replicas are available",
            "Copying podinfo.test template spec to podinfo-primary.test",
            "Promotion completed! Canary analysis was skipped for podinfo.test",
        ])
    );
    assert_eq!(
        driver.actions(),
        vec![
            Action::ScaleCanaryUp,
            Action::SetRoute(Route::primary_only()),
            Action::PromotePrimary,
            Action::ScaleCanaryToZero,
        ]
    );
    assert!(
        driver.trace.iter().all(|t| t.needs.is_empty()),
        "no checks run"
    );
    assert_eq!(driver.primary_revision.as_deref(), Some("rev-2"));
}

#[test]
fn confirm_rollout_gates_the_release_in_waiting() {
    let approved = Rc::new(Cell::new(false));
    let mut driver = Driver::new(&manifest(&format!(
        "    maxWeight: 50\n    stepWeight: 50\n    webhooks:\n      - name: gate\n        type: confirm-rollout\n        url: {LOADTESTER}gate/check\n"
    )))
    .released();
    let gate = Rc::clone(&approved);
    driver.hooks = Box::new(move |_, call: &WebhookCall| {
        assert_eq!(call.hook_type, HookType::ConfirmRollout);
        if gate.get() {
            HookResult::Passed
        } else {
            HookResult::Failed("HTTP 403 approval required".into())
        }
    });
    driver.tick();
    driver.tick();
    driver.tick();
    assert_eq!(driver.phases(), strings(&["Waiting", "Waiting", "Waiting"]));
    assert!(!driver.actions().contains(&Action::ScaleCanaryUp));
    assert_eq!(driver.status.conditions[0].message, "Waiting for approval.");
    // The payload phase while waiting is `Waiting`.
    assert!(matches!(&driver.trace[1].needs[0], Need::Webhook(c) if c.phase == Phase::Waiting));
    approved.set(true);
    driver.finish();
    assert_eq!(
        driver.events(),
        strings(&[
            "Halt podinfo.test advancement waiting for approval gate",
            "Confirm-rollout check gate passed",
            "New revision detected! Scaling up podinfo.test",
            "Starting canary analysis for podinfo.test",
            "Advance podinfo.test canary weight 50",
            "Copying podinfo.test template spec to podinfo-primary.test",
            "Routing all traffic to primary",
            "Promotion completed! Scaling down podinfo.test",
        ])
    );
}

#[test]
fn confirm_traffic_increase_holds_the_weight() {
    let approved = Rc::new(Cell::new(false));
    let mut driver = Driver::new(&manifest(&format!(
        "    maxWeight: 30\n    stepWeight: 10\n    webhooks:\n      - name: traffic-gate\n        type: confirm-traffic-increase\n        url: {LOADTESTER}gate/check\n"
    )))
    .released();
    let gate = Rc::clone(&approved);
    driver.hooks = Box::new(move |status, _| {
        if status.canary_weight == pct(10) && !gate.get() {
            HookResult::Failed("HTTP 403".into())
        } else {
            HookResult::Passed
        }
    });
    driver.run_until(|t| t.weight == pct(10), 5);
    driver.tick();
    driver.tick();
    assert_eq!(driver.weights(), strings(&["0", "10", "10", "10"]));
    assert_eq!(
        driver.status.failed_checks, 0,
        "a held step is not a failed check"
    );
    approved.set(true);
    driver.finish();
    assert_eq!(
        driver.events(),
        strings(&[
            "New revision detected! Scaling up podinfo.test",
            "Starting canary analysis for podinfo.test",
            "Confirm-traffic-increase check traffic-gate passed",
            "Advance podinfo.test canary weight 10",
            "Halt podinfo.test advancement waiting for traffic increase approval traffic-gate",
            "Halt podinfo.test advancement waiting for traffic increase approval traffic-gate",
            "Confirm-traffic-increase check traffic-gate passed",
            "Advance podinfo.test canary weight 20",
            "Confirm-traffic-increase check traffic-gate passed",
            "Advance podinfo.test canary weight 30",
            "Copying podinfo.test template spec to podinfo-primary.test",
            "Routing all traffic to primary",
            "Promotion completed! Scaling down podinfo.test",
        ])
    );
}

#[test]
fn confirm_promotion_gates_in_waiting_promotion_while_the_analysis_goes_on() {
    let approved = Rc::new(Cell::new(false));
    let mut driver = Driver::new(&manifest(&format!(
        "    maxWeight: 50\n    stepWeight: 25\n    metrics:\n      - name: request-success-rate\n        thresholdRange: {{min: 99}}\n    webhooks:\n      - name: promotion-gate\n        type: confirm-promotion\n        url: {LOADTESTER}gate/check\n"
    )))
    .released();
    let gate = Rc::clone(&approved);
    driver.hooks = Box::new(move |_, _| {
        if gate.get() {
            HookResult::Passed
        } else {
            HookResult::Failed("HTTP 403".into())
        }
    });
    driver.run_until(|t| t.phase == Some(Phase::WaitingPromotion), 10);
    driver.tick();
    // Metrics are still checked while waiting.
    assert_eq!(driver.trace.last().map(|t| t.needs.len()), Some(2));
    approved.set(true);
    driver.finish();
    assert_eq!(
        driver.events(),
        strings(&[
            "New revision detected! Scaling up podinfo.test",
            "Starting canary analysis for podinfo.test",
            "Advance podinfo.test canary weight 25",
            "Advance podinfo.test canary weight 50",
            "Halt podinfo.test advancement waiting for promotion approval promotion-gate",
            "Confirm-promotion check promotion-gate passed",
            "Copying podinfo.test template spec to podinfo-primary.test",
            "Routing all traffic to primary",
            "Promotion completed! Scaling down podinfo.test",
        ])
    );
    assert_eq!(
        driver.phases(),
        strings(&[
            "Progressing",
            "Progressing",
            "Progressing",
            "WaitingPromotion",
            "WaitingPromotion",
            "Promoting",
            "Finalising",
            "Succeeded",
        ])
    );
    assert_eq!(
        driver.weights()[3..5],
        strings(&["50", "50"]),
        "traffic stays at max weight"
    );
}

#[test]
fn threshold_counts_failures_in_waiting_promotion_too() {
    let mut driver = Driver::new(&manifest(&format!(
        "    threshold: 2\n    stepWeight: 100\n    metrics:\n      - name: request-success-rate\n        thresholdRange: {{min: 99}}\n    webhooks:\n      - name: promotion-gate\n        type: confirm-promotion\n        url: {LOADTESTER}\n"
    )))
    .released();
    driver.hooks = Box::new(|_, _| HookResult::Failed("HTTP 403".into()));
    driver.metrics = Box::new(|status, name| {
        if status.phase == Some(Phase::WaitingPromotion) {
            MetricValue::Value(90.0)
        } else {
            healthy(name)
        }
    });
    driver.finish();
    assert_eq!(driver.status.phase, Some(Phase::Failed));
    assert_eq!(
        driver.events()[driver.events().len() - 4..],
        strings(&[
            "Halt podinfo.test advancement success rate 90.00% < 99%",
            "Halt podinfo.test advancement success rate 90.00% < 99%",
            "Rolling back podinfo.test failed checks threshold reached 2",
            "Canary failed! Scaling down podinfo.test",
        ])
    );
}

#[test]
fn metrics_status_shows_why_a_canary_halted() {
    let mut driver = Driver::new(&manifest(
        r#"    threshold: 5
    stepWeight: 10
    metrics:
      - name: latency
        templateRef: {name: latency}
        thresholdRange: {max: 0.5}
      - name: request-success-rate
        thresholdRange: {min: 99}
"#,
    ))
    .released();
    driver.metrics = Box::new(|_, name| match name {
        "request-success-rate" => MetricValue::Value(69.17),
        _ => MetricValue::Value(0.25),
    });
    driver.run_until(|t| t.failed_checks == 1, 5);
    let metrics = &driver.status.metrics;
    // Built-in metrics are checked first, as in Flagger.
    assert_eq!(metrics.len(), 2);
    assert_eq!(metrics[0].name, "request-success-rate");
    assert_eq!(metrics[0].value, Some(69.17));
    assert!(!metrics[0].passed);
    assert_eq!(metrics[0].threshold_range.and_then(|r| r.min), Some(99.0));
    assert_eq!(
        metrics[0].message.as_deref(),
        Some("Halt podinfo.test advancement success rate 69.17% < 99%")
    );
    assert_eq!(metrics[1].name, "latency");
    assert_eq!(metrics[1].value, Some(0.25));
    assert!(metrics[1].passed);
    assert_eq!(metrics[1].message, None);
    let json = serde_json::to_value(&driver.status).unwrap_or_default();
    assert_eq!(json["metrics"][0]["thresholdRange"]["min"], 99.0);
    assert_eq!(json["metrics"][0]["passed"], false);
}

#[test]
fn asks_for_hooks_one_by_one_in_spec_order_and_stops_at_the_first_failure() {
    let mut driver = Driver::new(&manifest(&format!(
        r#"    stepWeight: 10
    webhooks:
      - name: first
        type: pre-rollout
        url: {LOADTESTER}
      - name: second
        type: pre-rollout
        url: {LOADTESTER}
      - name: third
        type: pre-rollout
        url: {LOADTESTER}
"#
    )))
    .released();
    driver.hooks = Box::new(|_, call| {
        if call.name == "second" {
            HookResult::Failed("boom".into())
        } else {
            HookResult::Passed
        }
    });
    driver.tick();
    driver.tick();
    let names: Vec<(String, Phase)> = driver.trace[1]
        .needs
        .iter()
        .filter_map(|n| match n {
            Need::Webhook(call) => Some((call.name.clone(), call.phase)),
            Need::Metrics => None,
        })
        .collect();
    assert_eq!(
        names,
        vec![
            ("first".to_owned(), Phase::Progressing),
            ("second".to_owned(), Phase::Progressing)
        ]
    );
    assert_eq!(
        driver.trace[1]
            .events
            .iter()
            .map(|e| e.message.as_str())
            .collect::<Vec<_>>(),
        vec![
            "Starting canary analysis for podinfo.test",
            "Pre-rollout check first passed",
            "Halt podinfo.test advancement pre-rollout check second failed boom",
        ]
    );
}

#[test]
fn post_rollout_hooks_run_after_the_canary_is_scaled_down() {
    let yaml = manifest(&format!(
        "    stepWeight: 100\n    webhooks:\n      - name: notify\n        type: post-rollout\n        url: {LOADTESTER}\n"
    ));
    let mut driver = Driver::new(&yaml).released();
    driver.finish();
    let last = driver.actions();
    assert_eq!(
        last[last.len() - 2..],
        [
            Action::ScaleCanaryToZero,
            Action::RunPostRolloutHooks {
                phase: Phase::Succeeded
            }
        ]
    );
    assert!(
        driver.trace.iter().all(|t| t.needs.is_empty()),
        "post-rollout hooks are not asked for"
    );
}

#[test]
fn primary_rollout_holds_the_analysis() {
    let mut driver = Driver::new(&manifest("    stepWeight: 10\n")).released();
    driver.run_until(|t| t.weight == pct(10), 5);
    driver.obs.primary = serin_controller::stage::Readiness::not_ready("x");
    driver.primary_rollout = 0;
    // The driver recomputes readiness each step from its pending counters; hold it here.
    let plan = serin_controller::step(&driver.spec, &driver.status, &driver.obs, driver.now);
    assert_eq!(
        plan.events
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>(),
        vec!["Warning Waiting for podinfo-primary.test rollout to finish: x"]
    );
    assert_eq!(plan.status, driver.status, "nothing advances");
    assert!(plan.actions.is_empty());
}

#[test]
fn suspend_pauses_everything() {
    let mut driver = Driver::new(&manifest("    stepWeight: 10\n")).released();
    driver.spec.suspend = true;
    driver.tick();
    assert_eq!(
        driver.events(),
        vec!["skipping canary run as object is suspended"]
    );
    assert_eq!(driver.phases(), vec!["Initialized"]);
    driver.spec.suspend = false;
    driver.tick();
    assert_eq!(driver.phases(), vec!["Initialized", "Progressing"]);
}

#[test]
fn invalid_spec_changes_nothing_and_says_why() {
    let mut driver = Driver::new(&manifest("    stepWeight: 10\n")).released();
    let before = driver.status.clone();
    if let Some(analysis) = driver.spec.analysis.as_mut() {
        analysis.max_weight = Some(serin_controller::weight::Percent(150.0));
    }
    let plan = serin_controller::step(&driver.spec, &driver.status, &driver.obs, driver.now);
    assert_eq!(plan.status, before);
    assert!(plan.actions.is_empty());
    assert_eq!(
        plan.events
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        vec!["Warning Invalid canary spec: spec.analysis.maxWeight: must be at most 100, got 150"]
    );
}

#[test]
fn session_affinity_cookie_is_retired_after_the_release_and_renewed_by_the_next() {
    let yaml =
        manifest("    stepWeight: 50\n    sessionAffinity:\n      cookieName: flagger-cookie\n");
    let mut driver = Driver::new(&yaml).released();
    driver.finish();
    assert_eq!(driver.status.session_affinity_cookie, None);
    assert_eq!(
        driver.status.previous_session_affinity_cookie.as_deref(),
        Some("flagger-cookie=tok")
    );
    driver.obs.revision.spec_hash = "rev-3".into();
    driver.obs.cookie_token = "tok2".into();
    driver.run_until(|t| t.weight == pct(50), 5);
    assert_eq!(
        driver
            .route
            .as_ref()
            .and_then(|r| r.session_affinity.clone()),
        Some(CookieAffinity::Pin {
            cookie_name: "flagger-cookie".into(),
            cookie_value: "tok2".into(),
            max_age: 86_400
        })
    );
    assert_eq!(
        driver
            .route
            .as_ref()
            .and_then(|r| r.session_affinity.as_ref())
            .map(CookieAffinity::cookie_header_regex)
            .as_deref(),
        Some(".*flagger\\-cookie.*tok2.*")
    );
}

#[test]
fn progress_deadline_counts_from_the_later_of_last_progress_and_unavailability() {
    use serin_controller::{Timestamp, stage::Readiness};
    // A canary waiting for promotion approval for two hours becomes unavailable.
    let mut driver = Driver::new(&manifest(&format!(
        "    stepWeight: 100\n    webhooks:\n      - name: promotion-gate\n        type: confirm-promotion\n        url: {LOADTESTER}\n"
    )))
    .released();
    driver.spec.progress_deadline_seconds = Some(300);
    driver.hooks = Box::new(|_, _| HookResult::Failed("HTTP 403".into()));
    driver.run_until(|t| t.phase == Some(Phase::WaitingPromotion), 5);
    let now = driver
        .now
        .saturating_add(std::time::Duration::from_secs(7200));
    let unready_since = |ago: u64| Readiness::NotReady {
        message: "0 of 2 updated replicas are available".into(),
        since: Some(Timestamp::from_unix_seconds(
            now.unix_seconds() - ago as i64,
        )),
    };
    let mut obs = driver.obs.clone();
    obs.canary = unready_since(60);
    let plan = serin_controller::step(&driver.spec, &driver.status, &obs, now);
    assert_eq!(
        plan.events
            .iter()
            .map(|e| e.message.as_str())
            .collect::<Vec<_>>(),
        vec!["Waiting for podinfo.test rollout to finish: 0 of 2 updated replicas are available"],
        "unavailable for a minute only: wait"
    );
    obs.canary = unready_since(301);
    let plan = serin_controller::step(&driver.spec, &driver.status, &obs, now);
    assert_eq!(
        plan.status.phase,
        Some(Phase::Failed),
        "unavailable past the deadline"
    );
    // Without a known start, the last status change counts: two hours ago.
    obs.canary = Readiness::not_ready("0 of 2 updated replicas are available");
    let plan = serin_controller::step(&driver.spec, &driver.status, &obs, now);
    assert_eq!(plan.status.phase, Some(Phase::Failed));
}

#[test]
fn steps_asked_for_early_wait_for_the_interval_during_an_analysis() {
    use serin_controller::stage::wait_before_step;
    use serin_controller::timestamp::Timestamp;
    use serin_controller::validation::validate;
    use std::time::Duration;

    let driver = Driver::new(&manifest("    maxWeight: 50\n    stepWeight: 10\n"));
    let settings = validate(&driver.spec).unwrap();
    let at = |s: i64| Timestamp::from_unix_seconds(1_000_000 + s);
    let mut status = driver.status.clone();
    status.last_transition_time = Some(at(0));
    for phase in [
        Phase::Progressing,
        Phase::WaitingPromotion,
        Phase::Promoting,
        Phase::Finalising,
    ] {
        status.phase = Some(phase);
        // The manifest's interval is 1m.
        assert_eq!(
            wait_before_step(&settings, &status, at(3)),
            Some(Duration::from_secs(57)),
            "{phase:?}"
        );
        assert_eq!(
            wait_before_step(&settings, &status, at(60)),
            None,
            "{phase:?}"
        );
        assert_eq!(
            wait_before_step(&settings, &status, at(95)),
            None,
            "{phase:?}"
        );
    }
    // Outside an analysis a step is due at once: a new revision is picked up when seen.
    for phase in [
        Phase::Initialized,
        Phase::Succeeded,
        Phase::Failed,
        Phase::Waiting,
    ] {
        status.phase = Some(phase);
        assert_eq!(
            wait_before_step(&settings, &status, at(1)),
            None,
            "{phase:?}"
        );
    }
}
