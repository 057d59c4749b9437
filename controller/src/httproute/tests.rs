//! Rendered routes are compiled by serin-proxy's own compiler and routed by its own decision.

use std::path::Path;

use http::Request;
use serin_proxy::config::{Objects, parse_documents};
use serin_proxy::metrics::Telemetry;
use serin_proxy::table::{RouteTable, compile};

use super::*;
use crate::route::NamedMatch;

const SETUP: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: test}\nspec:\n  gatewayClassName: serin\n  listeners: [{name: http, port: 8080, protocol: HTTP}]\n---\napiVersion: serin.dev/v1alpha1\nkind: Backend\nmetadata: {name: podinfo-primary, namespace: test}\nspec: {endpoints: [{host: 127.0.0.1, port: 9001}]}\n---\napiVersion: serin.dev/v1alpha1\nkind: Backend\nmetadata: {name: podinfo-canary, namespace: test}\nspec: {endpoints: [{host: 127.0.0.1, port: 9002}]}\n";

fn target() -> RouteTarget {
    RouteTarget {
        name: "podinfo".into(),
        namespace: "test".into(),
        parent_refs: vec![HttpRouteParentRefs {
            name: "gw".into(),
            ..Default::default()
        }],
        hostnames: vec!["app.example.com".into()],
        primary: BackendTarget::backend("podinfo-primary"),
        canary: BackendTarget::backend("podinfo-canary"),
    }
}

fn table(route: &Route) -> RouteTable {
    let yaml = serde_yaml_ng::to_string(&render(&target(), route)).unwrap();
    let mut objects = Objects::default();
    parse_documents(
        Path::new("route.yaml"),
        &format!("{SETUP}---\n{yaml}"),
        &mut objects,
    )
    .unwrap();
    let telemetry = Telemetry::new();
    let (table, problems) = compile(&objects, &telemetry.metrics);
    assert!(problems.is_empty(), "{problems:#?}\n{yaml}");
    table
}

fn request(headers: &[(&str, &str)]) -> http::request::Parts {
    let mut b = Request::get("/api").header("host", "app.example.com");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

/// Share of 100000 evenly spread samples that land on the canary, in basis points.
fn canary_share(table: &RouteTable, headers: &[(&str, &str)]) -> u32 {
    let parts = request(headers);
    let hits = (0..100_000u64)
        .filter(|i| {
            let d = table
                .decide(8080, &parts, i.wrapping_mul(u64::MAX / 100_000))
                .unwrap();
            &*d.backend().unwrap().name == "test/podinfo-canary"
        })
        .count() as u32;
    (hits + 5) / 10
}

#[test]
fn fractional_weights_are_carried_out_of_10000() {
    for bp in [0u16, 10, 500, 2500, 10_000] {
        let t = table(&Route::split(Weight::from_basis_points(bp).unwrap()));
        let share = canary_share(&t, &[]);
        assert!(share.abs_diff(u32::from(bp)) <= 3, "{bp}: {share}");
    }
}

#[test]
fn ab_conditions_send_only_matching_requests_to_the_canary() {
    let mut route = Route::split(Weight::FULL);
    route.matches = Some(vec![
        RouteMatch {
            headers: vec![NamedMatch {
                name: "x-canary".into(),
                value: ValueMatch::Exact("insider".into()),
            }],
            ..Default::default()
        },
        RouteMatch {
            headers: vec![NamedMatch {
                name: "user-agent".into(),
                value: ValueMatch::Prefix("Mozilla/5.0 (iPhone".into()),
            }],
            ..Default::default()
        },
    ]);
    let t = table(&route);
    assert_eq!(canary_share(&t, &[("x-canary", "insider")]), 10_000);
    assert_eq!(
        canary_share(&t, &[("user-agent", "Mozilla/5.0 (iPhone; CPU)")]),
        10_000
    );
    assert_eq!(canary_share(&t, &[("user-agent", "curl")]), 0);
}

#[test]
fn mirror_is_a_fraction_of_requests_to_the_canary() {
    let mut route = Route::primary_only();
    route.mirror = Some(Weight::from_basis_points(2_500).unwrap());
    let t = table(&route);
    let parts = request(&[]);
    let mirrored = (0..10_000u64)
        .filter(|i| {
            t.decide(8080, &parts, i.wrapping_mul(u64::MAX / 10_000))
                .unwrap()
                .mirrors()
                .count()
                == 1
        })
        .count();
    assert!(mirrored.abs_diff(2_500) <= 150, "{mirrored}");
    assert_eq!(canary_share(&t, &[]), 0);
}

#[test]
fn session_affinity_pins_and_expires_the_release_cookie() {
    let mut route = Route::split(Weight::from_whole_percent(10).unwrap());
    route.session_affinity = Some(CookieAffinity::Pin {
        cookie_name: "flagger-cookie".into(),
        cookie_value: "abc123".into(),
        max_age: 86_400,
    });
    let t = table(&route);
    assert_eq!(
        canary_share(&t, &[("cookie", "a=b; flagger-cookie=abc123")]),
        10_000
    );
    assert!(canary_share(&t, &[]).abs_diff(1_000) <= 3);
    let yaml = serde_yaml_ng::to_string(&render(&target(), &route)).unwrap();
    assert!(
        yaml.contains("flagger-cookie=abc123; Max-Age=86400"),
        "{yaml}"
    );

    let mut done = Route::primary_only();
    done.session_affinity = Some(CookieAffinity::Expire {
        cookie_name: "flagger-cookie".into(),
        cookie_value: "abc123".into(),
    });
    let t = table(&done);
    assert_eq!(canary_share(&t, &[("cookie", "flagger-cookie=abc123")]), 0);
    let yaml = serde_yaml_ng::to_string(&render(&target(), &done)).unwrap();
    assert!(yaml.contains("flagger-cookie=abc123; Max-Age=-1"), "{yaml}");
}
