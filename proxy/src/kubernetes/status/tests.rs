use std::path::PathBuf;
use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use serde_json::json;

use super::*;
use crate::config::Origin;
use crate::table::Reason;

fn time(s: &str) -> Time {
    Time(s.parse::<Timestamp>().unwrap())
}

fn from_json<T: serde::de::DeserializeOwned>(v: Value) -> Arc<T> {
    Arc::new(serde_json::from_value(v).unwrap())
}

fn filter() -> GatewayFilter {
    GatewayFilter {
        controller_name: CONTROLLER_NAME.into(),
        class: Some("serin".into()),
    }
}

fn snapshot(routes: Vec<Arc<HttpRoute>>) -> Snapshot {
    Snapshot {
        classes: vec![from_json(json!({
            "metadata": {"name": "serin", "generation": 1},
            "spec": {"controllerName": CONTROLLER_NAME},
        }))],
        gateways: vec![
            from_json(json!({
                "metadata": {"name": "gw", "namespace": "ns", "generation": 2},
                "spec": {"gatewayClassName": "serin", "listeners": [
                    {"name": "http", "port": 8080, "protocol": "HTTP"},
                    {"name": "tls", "port": 8443, "protocol": "HTTPS"},
                ]},
            })),
            from_json(json!({
                "metadata": {"name": "theirs", "namespace": "ns"},
                "spec": {"gatewayClassName": "other", "listeners": []},
            })),
        ],
        routes,
        ..Snapshot::default()
    }
}

fn route(name: &str, status: Value) -> Arc<HttpRoute> {
    from_json(json!({
        "metadata": {"name": name, "namespace": "ns", "generation": 7, "resourceVersion": "42"},
        "spec": {"parentRefs": [{"name": "gw"}, {"name": "theirs"}]},
        "status": status,
    }))
}

fn problem(kind: &'static str, name: &str, field: &str, reason: Reason) -> Problem {
    Problem {
        origin: Origin::File {
            path: PathBuf::from("x"),
            document: 0,
            documents: 1,
        },
        kind,
        object: ObjectKey::new("ns", name),
        field: field.into(),
        message: "is wrong".into(),
        reason,
    }
}

fn patch_for<'a>(patches: &'a [StatusPatch], kind: Kind, name: &str) -> Option<&'a StatusPatch> {
    patches.iter().find(|p| p.kind == kind && p.name == name)
}

fn conditions_of(parent: &Value) -> Vec<(String, String, String)> {
    parent["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["type"].as_str().unwrap().to_owned(),
                c["status"].as_str().unwrap().to_owned(),
                c["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn routes_get_one_parent_entry_per_gateway_we_serve() {
    let now = time("2026-01-01T00:00:00Z");
    let snap = snapshot(vec![route("r", Value::Null)]);
    let patches = compute(&snap, &filter(), &[], None, &now);
    let p = patch_for(&patches, Kind::HttpRoute, "r").expect("a route patch");
    assert_eq!(p.body["metadata"]["resourceVersion"], "42");
    let parents = p.body["status"]["parents"].as_array().unwrap();
    assert_eq!(
        parents.len(),
        1,
        "only the Gateway of our class: {parents:?}"
    );
    assert_eq!(parents[0]["controllerName"], CONTROLLER_NAME);
    // The spec's parentRef, copied unchanged: no namespace, group or kind filled in.
    assert_eq!(parents[0]["parentRef"], json!({"name": "gw"}));
    assert_eq!(
        conditions_of(&parents[0]),
        [
            ("Accepted".into(), "True".into(), "Accepted".into()),
            ("ResolvedRefs".into(), "True".into(), "ResolvedRefs".into()),
        ]
    );
    assert_eq!(parents[0]["conditions"][0]["observedGeneration"], 7);
    assert_eq!(
        parents[0]["conditions"][0]["lastTransitionTime"],
        "2026-01-01T00:00:00Z"
    );
}

#[test]
fn problems_map_to_conditions_with_their_reason_and_field() {
    let now = time("2026-01-01T00:00:00Z");
    let snap = snapshot(vec![
        route("bad", Value::Null),
        route("missing", Value::Null),
    ]);
    let problems = [
        problem(
            "HTTPRoute",
            "bad",
            "spec.rules[0].matches[0].path.value",
            Reason::UnsupportedValue,
        ),
        problem(
            "HTTPRoute",
            "missing",
            "spec.rules[0].backendRefs[0].name",
            Reason::BackendNotFound,
        ),
    ];
    let patches = compute(&snap, &filter(), &problems, None, &now);
    let bad = &patch_for(&patches, Kind::HttpRoute, "bad").unwrap().body["status"]["parents"][0];
    assert_eq!(
        conditions_of(bad)[0],
        ("Accepted".into(), "False".into(), "UnsupportedValue".into())
    );
    assert_eq!(
        bad["conditions"][0]["message"],
        "spec.rules[0].matches[0].path.value: is wrong"
    );
    let missing = &patch_for(&patches, Kind::HttpRoute, "missing")
        .unwrap()
        .body["status"]["parents"][0];
    assert_eq!(
        conditions_of(missing),
        [
            ("Accepted".into(), "True".into(), "Accepted".into()),
            (
                "ResolvedRefs".into(),
                "False".into(),
                "BackendNotFound".into()
            ),
        ]
    );

    // Gateway: the route that is not served is not attached; the one with a missing backend is.
    let gw = &patch_for(&patches, Kind::Gateway, "gw").unwrap().body["status"];
    assert_eq!(gw["listeners"][0]["attachedRoutes"], 1, "{gw}");
    // An HTTPS listener (not served) attaches nothing.
    let problems = [problem(
        "Gateway",
        "gw",
        "spec.listeners[1].protocol",
        Reason::UnsupportedProtocol,
    )];
    let patches = compute(&snap, &filter(), &problems, None, &now);
    let gw = &patch_for(&patches, Kind::Gateway, "gw").unwrap().body["status"];
    assert_eq!(gw["listeners"][0]["attachedRoutes"], 2);
    assert_eq!(
        conditions_of(&gw["listeners"][1])[0],
        (
            "Accepted".into(),
            "False".into(),
            "UnsupportedProtocol".into()
        )
    );
    assert_eq!(gw["listeners"][1]["supportedKinds"], json!([]));
    assert_eq!(
        conditions_of(gw),
        [
            ("Accepted".into(), "True".into(), "Accepted".into()),
            ("Programmed".into(), "True".into(), "Programmed".into()),
        ]
    );
    assert_eq!(gw["conditions"][0]["observedGeneration"], 2);

    // A failed apply: the Gateway is not programmed, with the error as message.
    let patches = compute(
        &snap,
        &filter(),
        &[],
        Some("listener port 8080: in use"),
        &now,
    );
    let gw = &patch_for(&patches, Kind::Gateway, "gw").unwrap().body["status"];
    assert_eq!(gw["conditions"][1]["status"], "False");
    assert_eq!(gw["conditions"][1]["message"], "listener port 8080: in use");
    assert!(
        patches.iter().all(|p| p.kind != Kind::HttpRoute),
        "no route status from an older table: {patches:?}"
    );
}

#[test]
fn unchanged_status_is_not_written_and_transition_times_are_kept() {
    let first = time("2026-01-01T00:00:00Z");
    let snap = snapshot(vec![route("r", Value::Null)]);
    let patches = compute(&snap, &filter(), &[], None, &first);

    // Apply every patch to the snapshot as the API server would.
    let mut written = snapshot(vec![route(
        "r",
        patch_for(&patches, Kind::HttpRoute, "r").unwrap().body["status"].clone(),
    )]);
    let mut gateway = Gateway::clone(&written.gateways[0]);
    gateway.status = Some(
        serde_json::from_value(
            patch_for(&patches, Kind::Gateway, "gw").unwrap().body["status"].clone(),
        )
        .unwrap(),
    );
    written.gateways[0] = Arc::new(gateway);
    let mut class = GatewayClass::clone(&written.classes[0]);
    class.status = Some(
        serde_json::from_value(
            patch_for(&patches, Kind::GatewayClass, "serin")
                .unwrap()
                .body["status"]
                .clone(),
        )
        .unwrap(),
    );
    written.classes[0] = Arc::new(class);

    let later = time("2026-01-01T01:00:00Z");
    assert_eq!(compute(&written, &filter(), &[], None, &later), []);

    // A change of one condition moves only that condition's transition time.
    let problems = [problem(
        "HTTPRoute",
        "r",
        "spec.rules[0].backendRefs[0].name",
        Reason::BackendNotFound,
    )];
    let patches = compute(&written, &filter(), &problems, None, &later);
    assert_eq!(patches.len(), 1, "{patches:?}");
    let parent = &patches[0].body["status"]["parents"][0];
    assert_eq!(
        parent["conditions"][0]["lastTransitionTime"],
        "2026-01-01T00:00:00Z"
    );
    assert_eq!(
        parent["conditions"][1]["lastTransitionTime"],
        "2026-01-01T01:00:00Z"
    );
}

#[test]
fn entries_of_other_controllers_and_gateways_are_kept() {
    let now = time("2026-01-01T00:00:00Z");
    let theirs = json!({
        "controllerName": "example.com/other",
        "parentRef": {"group": GATEWAY_GROUP, "kind": "Gateway", "name": "theirs", "namespace": "ns"},
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "",
                        "lastTransitionTime": "2025-01-01T00:00:00Z"}],
    });
    // Ours, but for a parentRef that has left the spec: removed.
    let stale = json!({
        "controllerName": CONTROLLER_NAME,
        "parentRef": {"group": GATEWAY_GROUP, "kind": "Gateway", "name": "gone", "namespace": "ns"},
        "conditions": [],
    });
    let snap = snapshot(vec![route("r", json!({"parents": [theirs, stale]}))]);
    let patches = compute(&snap, &filter(), &[], None, &now);
    let parents = patch_for(&patches, Kind::HttpRoute, "r").unwrap().body["status"]["parents"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(parents.len(), 2, "{parents:?}");
    assert_eq!(parents[0], theirs);
    assert_eq!(parents[1]["parentRef"]["name"], "gw");

    // Routes that name none of our Gateways and carry none of our entries are left alone.
    let unrelated: Arc<HttpRoute> = from_json(json!({
        "metadata": {"name": "u", "namespace": "ns"},
        "spec": {"parentRefs": [{"name": "theirs"}]},
    }));
    let patches = compute(&snapshot(vec![unrelated]), &filter(), &[], None, &now);
    assert!(patch_for(&patches, Kind::HttpRoute, "u").is_none());
}
