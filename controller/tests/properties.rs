//! Property tests of the stage machine's invariants over random specs and random worlds:
//! weights stay within bounds and only grow during the analysis, a rollback always leaves all
//! traffic on the primary, failed checks never exceed the threshold, the route always follows
//! the status, every plan is deterministic, and a restart from a JSON round trip of the status
//! at any step changes nothing.

use std::{collections::BTreeMap, time::Duration};

use proptest::prelude::*;
use serin_controller::{
    CanarySpec, CanaryStatus, Phase, Timestamp, Weight,
    analysis::MetricValue,
    canary::HookType,
    document::load_canary,
    event::Event,
    route::Route,
    stage::{Action, HookResult, Need, Observations, Readiness, Revision, desired_route, step},
    validation::{Settings, Strategy as Traffic, validate},
};

/// How traffic moves in a generated spec.
#[derive(Clone, Debug)]
enum Strat {
    Weighted {
        step: u16,
        max: u16,
        promotion: Option<u16>,
    },
    Steps(Vec<u16>),
    MirroredCanary {
        step: u16,
        max: u16,
        mirror: u16,
    },
    Affinity {
        step: u16,
        max: u16,
    },
    AbTesting {
        iterations: u8,
    },
    BlueGreen {
        iterations: u8,
        mirror: bool,
    },
}

/// Hook types a generated spec may carry, by index.
const HOOKS: [(&str, &str); 7] = [
    ("cr", "confirm-rollout"),
    ("pre", "pre-rollout"),
    ("load", "rollout"),
    ("cti", "confirm-traffic-increase"),
    ("cp", "confirm-promotion"),
    ("rb", "rollback"),
    ("post", "post-rollout"),
];

fn weight(bp: u16) -> String {
    Weight::from_basis_points(bp)
        .unwrap_or(Weight::FULL)
        .to_string()
}

fn strat() -> impl Strategy<Value = Strat> {
    let max = 100u16..=10_000;
    prop_oneof![
        (max.clone(), 1u16..=6, proptest::option::of(1u16..=10_000)).prop_map(
            |(max, parts, promotion)| Strat::Weighted {
                step: (max / parts).max(1),
                max,
                promotion,
            }
        ),
        proptest::collection::btree_set(1u16..=10_000, 1..=4)
            .prop_map(|set| Strat::Steps(set.into_iter().collect())),
        (max.clone(), 1u16..=4, 1u16..=10_000).prop_map(|(max, parts, mirror)| {
            Strat::MirroredCanary {
                step: (max / parts).max(1),
                max,
                mirror,
            }
        }),
        (max, 1u16..=4).prop_map(|(max, parts)| Strat::Affinity {
            step: (max / parts).max(1),
            max,
        }),
        (1u8..=5).prop_map(|iterations| Strat::AbTesting { iterations }),
        (1u8..=5, any::<bool>())
            .prop_map(|(iterations, mirror)| Strat::BlueGreen { iterations, mirror }),
    ]
}

/// A generated Canary: strategy, threshold, which hooks exist, deadline.
#[derive(Clone, Debug)]
struct SpecCase {
    strat: Strat,
    threshold: u8,
    hooks: Vec<bool>,
    deadline_secs: u16,
}

fn spec_case() -> impl Strategy<Value = SpecCase> {
    (
        strat(),
        1u8..=4,
        proptest::collection::vec(proptest::bool::weighted(0.3), HOOKS.len()),
        60u16..=600,
    )
        .prop_map(|(strat, threshold, hooks, deadline_secs)| SpecCase {
            strat,
            threshold,
            hooks,
            deadline_secs,
        })
}

impl SpecCase {
    fn yaml(&self) -> String {
        let mut analysis = format!("    interval: 1m\n    threshold: {}\n", self.threshold);
        match &self.strat {
            Strat::Weighted {
                step,
                max,
                promotion,
            } => {
                analysis += &format!(
                    "    maxWeight: {}\n    stepWeight: {}\n",
                    weight(*max),
                    weight(*step)
                );
                if let Some(promotion) = promotion {
                    analysis += &format!("    stepWeightPromotion: {}\n", weight(*promotion));
                }
            }
            Strat::Steps(steps) => {
                let list: Vec<String> = steps.iter().map(|s| weight(*s)).collect();
                analysis += &format!("    stepWeights: [{}]\n", list.join(", "));
            }
            Strat::MirroredCanary { step, max, mirror } => {
                analysis += &format!(
                    "    maxWeight: {}\n    stepWeight: {}\n    mirror: true\n    mirrorWeight: {}\n",
                    weight(*max),
                    weight(*step),
                    weight(*mirror)
                );
            }
            Strat::Affinity { step, max } => {
                analysis += &format!(
                    "    maxWeight: {}\n    stepWeight: {}\n    sessionAffinity:\n      cookieName: flagger-cookie\n",
                    weight(*max),
                    weight(*step)
                );
            }
            Strat::AbTesting { iterations } => {
                analysis += &format!(
                    "    iterations: {iterations}\n    match:\n      - headers:\n          x-canary:\n            exact: insider\n"
                );
            }
            Strat::BlueGreen { iterations, mirror } => {
                analysis += &format!("    iterations: {iterations}\n    mirror: {mirror}\n");
            }
        }
        analysis += "    metrics:\n      - name: request-success-rate\n        thresholdRange: {min: 99}\n      - name: request-duration\n        thresholdRange: {max: 500}\n";
        let hooks: Vec<String> = HOOKS
            .iter()
            .zip(&self.hooks)
            .filter(|(_, on)| **on)
            .map(|((name, kind), _)| {
                format!("      - name: {name}\n        type: {kind}\n        url: http://hooks.test/{name}\n")
            })
            .collect();
        if !hooks.is_empty() {
            analysis += "    webhooks:\n";
            analysis += &hooks.concat();
        }
        format!(
            r#"apiVersion: serin.dev/v1alpha1
kind: Canary
metadata: {{name: podinfo, namespace: test}}
spec:
  targetRef: {{apiVersion: apps/v1, kind: Deployment, name: podinfo}}
  progressDeadlineSeconds: {}
  service: {{port: 9898, gatewayRefs: [{{name: public}}]}}
  analysis:
{analysis}"#,
            self.deadline_secs
        )
    }
}

/// What the world looks like during one step.
#[derive(Clone, Debug)]
struct World {
    /// 0 healthy, 1 bad value, 2 no values, 3 query error.
    metric: u8,
    /// A passing (or, for rollback hooks, rollback-requesting) answer per hook index.
    hooks_pass: Vec<bool>,
    rollback_requested: bool,
    canary_ready: bool,
    primary_ready: bool,
    new_revision: bool,
}

fn world() -> impl Strategy<Value = World> {
    (
        prop_oneof![7 => Just(0u8), 2 => Just(1u8), 1 => Just(2u8), 1 => Just(3u8)],
        proptest::collection::vec(proptest::bool::weighted(0.75), HOOKS.len()),
        proptest::bool::weighted(0.03),
        proptest::bool::weighted(0.85),
        proptest::bool::weighted(0.85),
        proptest::bool::weighted(0.04),
    )
        .prop_map(
            |(
                metric,
                hooks_pass,
                rollback_requested,
                canary_ready,
                primary_ready,
                new_revision,
            )| {
                World {
                    metric,
                    hooks_pass,
                    rollback_requested,
                    canary_ready,
                    primary_ready,
                    new_revision,
                }
            },
        )
}

/// One step as recorded.
#[derive(Clone, Debug, PartialEq)]
struct Record {
    before: CanaryStatus,
    after: CanaryStatus,
    actions: Vec<Action>,
    events: Vec<Event>,
    needs: Vec<Need>,
    requeue_after: Duration,
}

/// Runs the machine over `worlds`, restarting (JSON round trip of the status) before the
/// steps whose index is in `restarts`.
fn run(spec: &CanarySpec, worlds: &[World], restarts: &[bool]) -> Vec<Record> {
    let mut status = CanaryStatus::default();
    let mut now = Timestamp::from_unix_seconds(1_700_000_000);
    let mut revision = 1;
    let mut records = Vec::new();
    for (i, w) in worlds.iter().enumerate() {
        if restarts.get(i).copied().unwrap_or(false) {
            let json = serde_json::to_string(&status).unwrap_or_default();
            status = serde_json::from_str(&json).unwrap_or_default();
        }
        if w.new_revision {
            revision += 1;
        }
        let mut obs = Observations {
            name: "podinfo".into(),
            namespace: "test".into(),
            revision: Revision {
                spec_hash: format!("rev-{revision}"),
                tracked_configs: BTreeMap::new(),
            },
            primary: if w.primary_ready {
                Readiness::Ready
            } else {
                Readiness::not_ready("1 of 2 updated replicas are available")
            },
            canary: if w.canary_ready {
                Readiness::Ready
            } else {
                Readiness::not_ready("0 of 1 updated replicas are available")
            },
            webhooks: BTreeMap::new(),
            metrics: None,
            cookie_token: format!("tok{i}"),
        };
        let mut needs = Vec::new();
        let plan = loop {
            let plan = step(spec, &status, &obs, now);
            assert_eq!(plan, step(spec, &status, &obs, now), "deterministic");
            let Some(need) = plan.needs.clone() else {
                break plan;
            };
            assert!(plan.actions.is_empty() && plan.events.is_empty());
            assert_eq!(plan.status, status);
            assert!(!needs.contains(&need), "asked twice for {need:?}");
            match &need {
                Need::Webhook(call) => {
                    let position = HOOKS
                        .iter()
                        .position(|(name, _)| *name == call.name)
                        .unwrap_or(0);
                    let passed = if call.hook_type == HookType::Rollback {
                        w.rollback_requested
                    } else {
                        w.hooks_pass[position]
                    };
                    let result = if passed {
                        HookResult::Passed
                    } else {
                        HookResult::Failed("HTTP 500".into())
                    };
                    obs.webhooks.insert(call.index, result);
                }
                Need::Metrics => {
                    let value = |healthy: f64, bad: f64| match w.metric {
                        0 => MetricValue::Value(healthy),
                        1 => MetricValue::Value(bad),
                        2 => MetricValue::NoValues,
                        _ => MetricValue::Error("connection refused".into()),
                    };
                    obs.metrics = Some(BTreeMap::from([
                        ("request-success-rate".to_owned(), value(99.5, 42.25)),
                        ("request-duration".to_owned(), value(120.0, 750.5)),
                    ]));
                }
            }
            needs.push(need);
        };
        records.push(Record {
            before: status.clone(),
            after: plan.status.clone(),
            actions: plan.actions.clone(),
            events: plan.events.clone(),
            needs,
            requeue_after: plan.requeue_after,
        });
        status = plan.status;
        now = now.saturating_add(plan.requeue_after);
    }
    records
}

fn settings_of(case: &SpecCase) -> (CanarySpec, Settings) {
    let canary = match load_canary(&case.yaml()) {
        Ok(canary) => canary,
        Err(err) => panic!("generated spec must be valid: {err}\n{}", case.yaml()),
    };
    let settings = match validate(&canary.spec) {
        Ok(settings) => settings,
        Err(err) => panic!("{err}"),
    };
    (canary.spec, settings)
}

fn analysing(phase: Option<Phase>) -> bool {
    matches!(phase, Some(Phase::Progressing | Phase::WaitingPromotion))
}

fn restarted(record: &Record) -> bool {
    record.events.iter().any(|e| {
        e.message
            .starts_with("New revision detected! Restarting analysis")
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn weights_stay_in_bounds_and_only_grow_during_the_analysis(
        case in spec_case(),
        worlds in proptest::collection::vec(world(), 5..80),
    ) {
        let (spec, settings) = settings_of(&case);
        let max = settings.strategy.max_weight();
        for record in run(&spec, &worlds, &[]) {
            let (before, after) = (&record.before, &record.after);
            if analysing(after.phase) {
                prop_assert!(after.canary_weight <= max, "{:?} > {max:?}", after.canary_weight);
            }
            if let Traffic::Canary { .. } = settings.strategy {
                prop_assert!(after.canary_weight <= max);
            }
            if analysing(before.phase) && analysing(after.phase) && !restarted(&record) {
                prop_assert!(
                    after.canary_weight >= before.canary_weight,
                    "weight went from {} to {}",
                    before.canary_weight,
                    after.canary_weight
                );
                prop_assert!(after.iterations >= before.iterations);
            }
        }
    }

    #[test]
    fn rollback_always_ends_with_all_traffic_on_the_primary(
        case in spec_case(),
        worlds in proptest::collection::vec(world(), 5..80),
    ) {
        let (spec, settings) = settings_of(&case);
        for record in run(&spec, &worlds, &[]) {
            let rolled_back = record.after.phase == Some(Phase::Failed)
                && record.before.phase != Some(Phase::Failed);
            if !rolled_back {
                continue;
            }
            let last_route = record.actions.iter().rev().find_map(|a| match a {
                Action::SetRoute(route) => Some(route.clone()),
                _ => None,
            });
            let Some(route) = last_route else {
                return Err(TestCaseError::fail(format!("rollback without SetRoute: {:?}", record.actions)));
            };
            prop_assert_eq!(route.canary_weight, Weight::ZERO);
            prop_assert_eq!(route.primary_weight, Weight::FULL);
            prop_assert_eq!(route.mirror, None);
            prop_assert_eq!(route.matches, None);
            prop_assert!(record.actions.contains(&Action::ScaleCanaryToZero));
            prop_assert!(desired_route(&settings, &record.after).is_primary_only());
            prop_assert_eq!(record.after.canary_weight, Weight::ZERO);
            prop_assert!(!record.after.mirrored);
        }
    }

    #[test]
    fn failed_checks_never_exceed_the_threshold(
        case in spec_case(),
        worlds in proptest::collection::vec(world(), 5..80),
    ) {
        let (spec, settings) = settings_of(&case);
        for record in run(&spec, &worlds, &[]) {
            prop_assert!(
                record.after.failed_checks <= settings.threshold,
                "{} > {}",
                record.after.failed_checks,
                settings.threshold
            );
        }
    }

    #[test]
    fn the_route_always_follows_the_status(
        case in spec_case(),
        worlds in proptest::collection::vec(world(), 5..80),
    ) {
        let (spec, settings) = settings_of(&case);
        let mut route: Option<Route> = None;
        for record in run(&spec, &worlds, &[]) {
            for action in &record.actions {
                if let Action::SetRoute(r) = action {
                    prop_assert_eq!(
                        u32::from(r.primary_weight.basis_points()) + u32::from(r.canary_weight.basis_points()),
                        10_000
                    );
                    route = Some(r.clone());
                }
            }
            if let Some(route) = &route {
                prop_assert_eq!(route, &desired_route(&settings, &record.after));
            }
            // Iteration counters stay within the strategy.
            match settings.strategy {
                Traffic::AbTesting { iterations } => prop_assert!(record.after.iterations <= iterations),
                Traffic::BlueGreen { iterations } => prop_assert!(record.after.iterations <= iterations + 1),
                Traffic::Canary { .. } => prop_assert_eq!(record.after.iterations, 0),
            }
            prop_assert_eq!(record.requeue_after, settings.interval);
        }
    }

    #[test]
    fn a_restart_from_the_stored_status_changes_nothing(
        case in spec_case(),
        worlds in proptest::collection::vec(world(), 5..80),
        restarts in proptest::collection::vec(any::<bool>(), 80),
    ) {
        let (spec, _) = settings_of(&case);
        let straight = run(&spec, &worlds, &[]);
        let restarted = run(&spec, &worlds, &restarts);
        prop_assert_eq!(straight, restarted);
    }

    #[test]
    fn replaying_a_step_gives_the_same_plan(
        case in spec_case(),
        worlds in proptest::collection::vec(world(), 1..40),
    ) {
        // A controller that crashed after applying a plan but before writing the status
        // replays the step from the old status: it must decide exactly the same.
        let (spec, _) = settings_of(&case);
        let records = run(&spec, &worlds, &[]);
        let mut replayed = Vec::new();
        for (i, _) in worlds.iter().enumerate() {
            replayed.push(run(&spec, &worlds[..=i], &[]).pop());
        }
        for (record, replay) in records.iter().zip(replayed) {
            prop_assert_eq!(Some(record), replay.as_ref());
        }
    }
}

#[test]
fn generated_specs_cover_every_strategy() {
    // Guard against a generator that silently produces invalid or one-sided specs.
    let cases = [
        Strat::Weighted {
            step: 500,
            max: 5000,
            promotion: Some(2000),
        },
        Strat::Steps(vec![10, 100, 500, 2500]),
        Strat::MirroredCanary {
            step: 2000,
            max: 4000,
            mirror: 5000,
        },
        Strat::Affinity {
            step: 2500,
            max: 5000,
        },
        Strat::AbTesting { iterations: 3 },
        Strat::BlueGreen {
            iterations: 3,
            mirror: true,
        },
    ];
    let kinds: Vec<&str> = cases
        .into_iter()
        .map(|strat| {
            let case = SpecCase {
                strat,
                threshold: 2,
                hooks: vec![true; HOOKS.len()],
                deadline_secs: 600,
            };
            match settings_of(&case).1.strategy {
                Traffic::Canary { .. } => "canary",
                Traffic::AbTesting { .. } => "ab",
                Traffic::BlueGreen { .. } => "bluegreen",
            }
        })
        .collect();
    assert_eq!(
        kinds,
        ["canary", "canary", "canary", "canary", "ab", "bluegreen"]
    );
}

#[test]
fn random_worlds_reach_every_stage() {
    // Guard against generators that never get far: with a fixed seed, the random worlds
    // must reach every phase and every rollback cause.
    use proptest::{strategy::ValueTree, test_runner::TestRunner};
    let mut runner = TestRunner::deterministic();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..300 {
        let (Ok(case), Ok(worlds)) = (
            spec_case().new_tree(&mut runner),
            proptest::collection::vec(world(), 5..80).new_tree(&mut runner),
        ) else {
            panic!("generators must produce values");
        };
        let (spec, _) = settings_of(&case.current());
        for record in run(&spec, &worlds.current(), &[]) {
            if let Some(phase) = record.after.phase {
                seen.insert(phase.to_string());
            }
            for (needle, label) in [
                ("Restarting analysis", "restart"),
                ("manual webhook invoked", "rollback webhook"),
                ("progress deadline exceeded", "deadline"),
                ("threshold reached", "threshold"),
            ] {
                if record.events.iter().any(|e| e.message.contains(needle)) {
                    seen.insert(label.to_owned());
                }
            }
        }
    }
    let expected = [
        "Failed",
        "Finalising",
        "Initialized",
        "Initializing",
        "Progressing",
        "Promoting",
        "Succeeded",
        "Waiting",
        "WaitingPromotion",
        "deadline",
        "restart",
        "rollback webhook",
        "threshold",
    ];
    for label in expected {
        assert!(seen.contains(label), "never reached {label}: {seen:?}");
    }
}
