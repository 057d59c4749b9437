use std::path::Path;

use http::Request;

use super::*;
use crate::config::{Objects, parse_documents};
use crate::metrics::Telemetry;

const HEADER: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: test}
spec:
  gatewayClassName: serin
  listeners:
  - {name: http, port: 8080, protocol: HTTP}
  - {name: admin-only, port: 8081, protocol: HTTP, hostname: "*.example.com"}
---
apiVersion: serin.dev/v1alpha1
kind: Backend
metadata: {name: a, namespace: test}
spec: {endpoints: [{host: 127.0.0.1, port: 9001}]}
---
apiVersion: serin.dev/v1alpha1
kind: Backend
metadata: {name: b, namespace: test}
spec: {endpoints: [{host: 127.0.0.1, port: 9002}, {host: localhost, port: 9003}]}
---
apiVersion: serin.dev/v1alpha1
kind: Backend
metadata: {name: c, namespace: test}
spec: {endpoints: [{host: "::1", port: 9004}]}
"#;

fn objects(routes: &str) -> Objects {
    let mut objects = Objects::default();
    parse_documents(
        Path::new("t.yaml"),
        &format!("{HEADER}---\n{routes}"),
        &mut objects,
    )
    .unwrap();
    objects
}

fn compile_ok(routes: &str) -> RouteTable {
    let telemetry = Telemetry::new();
    let (table, problems) = compile(&objects(routes), &telemetry.metrics);
    assert!(problems.is_empty(), "{problems:#?}");
    table
}

fn problems(routes: &str) -> Vec<String> {
    let telemetry = Telemetry::new();
    compile(&objects(routes), &telemetry.metrics)
        .1
        .iter()
        .map(|p| p.to_error().to_string())
        .collect()
}

fn request(method: &str, host: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
    let mut b = Request::builder()
        .method(method)
        .uri(uri)
        .header("host", host);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

/// The backend a request lands on (sample 0), as `namespace/name`.
fn route(table: &RouteTable, port: u16, parts: &Parts) -> Option<String> {
    let d = table.decide(port, parts, 0).ok()?;
    Some(d.backend().map_or("<none>".into(), |b| b.name.to_string()))
}

fn rule(matches: &str, backend: &str) -> String {
    format!(
        "  - matches: {matches}\n    backendRefs: [{{group: serin.dev, kind: Backend, name: {backend}}}]\n"
    )
}

fn http_route(name: &str, hostnames: &str, rules: &[String]) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: test}}\nspec:\n  parentRefs: [{{name: gw, sectionName: http}}]\n  hostnames: {hostnames}\n  rules:\n{}",
        rules.concat()
    )
}

#[test]
fn path_precedence_exact_then_regex_then_longest_prefix() {
    let table = compile_ok(&http_route(
        "r",
        "[]",
        &[
            rule("[{path: {type: PathPrefix, value: /}}]", "a"),
            rule("[{path: {type: PathPrefix, value: /api}}]", "b"),
            rule("[{path: {type: Exact, value: /api/health}}]", "c"),
            rule(
                "[{path: {type: RegularExpression, value: '/api/v[0-9]+/.*'}}]",
                "a",
            ),
        ],
    ));
    let at = |path: &str| route(&table, 8080, &request("GET", "h", path, &[]));
    assert_eq!(at("/api/health").as_deref(), Some("test/c"));
    assert_eq!(at("/api/v2/users").as_deref(), Some("test/a"));
    assert_eq!(at("/api/other").as_deref(), Some("test/b"));
    assert_eq!(
        at("/apix").as_deref(),
        Some("test/a"),
        "prefix is element-wise"
    );
    assert_eq!(at("/").as_deref(), Some("test/a"));
}

#[test]
fn method_then_header_count_then_query_count() {
    let table = compile_ok(&http_route(
        "r",
        "[]",
        &[
            rule("[{path: {value: /}}]", "a"),
            rule(
                "[{queryParams: [{name: q, value: '1'}], headers: [{name: x-a, value: '1'}]}]",
                "b",
            ),
            rule(
                "[{headers: [{name: x-a, value: '1'}, {name: x-b, value: '1'}]}]",
                "c",
            ),
            rule("[{method: POST}]", "a"),
        ],
    ));
    let req = |method, uri, headers: &[(&str, &str)]| {
        route(&table, 8080, &request(method, "h", uri, headers))
    };
    // One header + one query param beats nothing; two headers beat one header + query.
    assert_eq!(
        req("GET", "/?q=1", &[("x-a", "1")]).as_deref(),
        Some("test/b")
    );
    assert_eq!(
        req("GET", "/?q=1", &[("x-a", "1"), ("x-b", "1")]).as_deref(),
        Some("test/c")
    );
    // A method match beats header matches.
    assert_eq!(
        req("POST", "/?q=1", &[("x-a", "1"), ("x-b", "1")]).as_deref(),
        Some("test/a")
    );
    assert_eq!(req("GET", "/", &[]).as_deref(), Some("test/a"));
}

#[test]
fn older_route_wins_a_tie_then_name_order() {
    let mut a = http_route("zeta", "[]", &[rule("[{path: {value: /x}}]", "a")]);
    a = a.replace(
        "namespace: test}",
        "namespace: test, creationTimestamp: '2020-01-01T00:00:00Z'}",
    );
    let b = http_route("alpha", "[]", &[rule("[{path: {value: /x}}]", "b")]).replace(
        "namespace: test}",
        "namespace: test, creationTimestamp: '2021-01-01T00:00:00Z'}",
    );
    let table = compile_ok(&format!("{a}---\n{b}"));
    assert_eq!(
        route(&table, 8080, &request("GET", "h", "/x", &[])).as_deref(),
        Some("test/a")
    );
    let b = http_route("alpha", "[]", &[rule("[{path: {value: /x}}]", "b")]);
    let c = http_route("beta", "[]", &[rule("[{path: {value: /x}}]", "c")]);
    let table = compile_ok(&format!("{c}---\n{b}"));
    assert_eq!(
        route(&table, 8080, &request("GET", "h", "/x", &[])).as_deref(),
        Some("test/b")
    );
}

#[test]
fn hostnames_exact_beats_wildcard_beats_none() {
    let routes = [
        http_route(
            "exact",
            "[app.example.com]",
            &[rule("[{path: {value: /x}}]", "a")],
        ),
        http_route(
            "wild",
            "['*.example.com']",
            &[rule("[{path: {value: /}}]", "b")],
        ),
        http_route("any", "[]", &[rule("[{path: {value: /only-any}}]", "c")]),
    ]
    .join("---\n");
    let table = compile_ok(&routes);
    let at = |host: &str, path: &str| route(&table, 8080, &request("GET", host, path, &[]));
    assert_eq!(at("app.example.com", "/x").as_deref(), Some("test/a"));
    assert_eq!(
        at("APP.example.com:8080", "/x").as_deref(),
        Some("test/a"),
        "case and port ignored"
    );
    assert_eq!(
        at("app.example.com", "/y").as_deref(),
        Some("test/b"),
        "then the wildcard's routes"
    );
    assert_eq!(
        at("x.y.example.com", "/").as_deref(),
        Some("test/b"),
        "wildcard spans labels"
    );
    assert_eq!(at("example.com", "/"), None, "wildcard needs a label");
    assert_eq!(
        at("app.example.com", "/only-any").as_deref(),
        Some("test/b"),
        "the wildcard outranks any-host"
    );
    assert_eq!(
        at("other.org", "/only-any").as_deref(),
        Some("test/c"),
        "any-host routes serve other hosts"
    );
    assert_eq!(at("other.org", "/"), None);
}

#[test]
fn listener_hostname_restricts_routes() {
    let r = http_route("r", "[]", &[rule("[{path: {value: /}}]", "a")])
        .replace("sectionName: http", "sectionName: admin-only");
    let table = compile_ok(&r);
    assert_eq!(
        route(&table, 8081, &request("GET", "a.example.com", "/", &[])).as_deref(),
        Some("test/a")
    );
    assert_eq!(
        route(&table, 8081, &request("GET", "a.example.org", "/", &[])),
        None
    );
    assert_eq!(
        route(&table, 8080, &request("GET", "a.example.com", "/", &[])),
        None,
        "not attached to port 8080"
    );
    let disjoint = http_route("r", "[a.example.org]", &[rule("[]", "a")])
        .replace("sectionName: http", "sectionName: admin-only");
    let p = problems(&disjoint);
    assert!(
        p[0].contains("spec.hostnames: no hostname intersects listener admin-only"),
        "{p:?}"
    );
}

#[test]
fn weighted_split_follows_the_weights_and_zero_is_excluded() {
    let r = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: test}\nspec:\n  parentRefs: [{name: gw}]\n  rules:\n  - backendRefs:\n    - {group: serin.dev, kind: Backend, name: a, weight: 90}\n    - {group: serin.dev, kind: Backend, name: b, weight: 10}\n    - {group: serin.dev, kind: Backend, name: c, weight: 0}\n";
    let table = compile_ok(r);
    let parts = request("GET", "h", "/", &[]);
    let mut counts = std::collections::HashMap::new();
    let n = 100_000u64;
    for i in 0..n {
        let d = table
            .decide(8080, &parts, i.wrapping_mul(u64::MAX / n))
            .unwrap();
        *counts
            .entry(d.backend().unwrap().name.to_string())
            .or_insert(0u64) += 1;
    }
    assert_eq!(counts.get("test/c"), None);
    assert!((89_900..=90_100).contains(&counts["test/a"]), "{counts:?}");
}

#[test]
fn all_zero_weights_decide_no_backend() {
    let r = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: test}\nspec:\n  parentRefs: [{name: gw}]\n  rules:\n  - backendRefs: [{group: serin.dev, kind: Backend, name: a, weight: 0}]\n";
    let table = compile_ok(r);
    let d = table
        .decide(8080, &request("GET", "h", "/", &[]), 7)
        .unwrap();
    assert!(d.backend().is_none());
}

#[test]
fn flagger_session_affinity_route_pins_cookie_holders() {
    // As Flagger writes it: a cookie rule to the canary, then the weighted split.
    let r = r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: podinfo, namespace: test}
spec:
  parentRefs: [{name: gw}]
  hostnames: [app.example.com]
  rules:
  - matches:
    - path: {type: PathPrefix, value: /}
      headers:
      - {name: Cookie, type: RegularExpression, value: ".*flagger-cookie.*CxjWDfIyKP.*"}
    backendRefs:
    - {group: serin.dev, kind: Backend, name: b, weight: 100}
  - matches:
    - path: {type: PathPrefix, value: /}
    backendRefs:
    - {group: serin.dev, kind: Backend, name: a, weight: 100}
    - group: serin.dev
      kind: Backend
      name: b
      weight: 0
      filters:
      - type: ResponseHeaderModifier
        responseHeaderModifier:
          add:
          - {name: Set-Cookie, value: "flagger-cookie=CxjWDfIyKP; Max-Age=21600"}
"#;
    let table = compile_ok(r);
    let pinned = request(
        "GET",
        "app.example.com",
        "/",
        &[("cookie", "x=1; flagger-cookie=CxjWDfIyKP")],
    );
    assert_eq!(route(&table, 8080, &pinned).as_deref(), Some("test/b"));
    let fresh = request("GET", "app.example.com", "/", &[]);
    assert_eq!(route(&table, 8080, &fresh).as_deref(), Some("test/a"));
}

#[test]
fn problems_name_object_and_field() {
    let cases = [
        (
            http_route(
                "r",
                "[]",
                &[rule(
                    "[{path: {type: RegularExpression, value: '(unclosed'}}]",
                    "a",
                )],
            ),
            "HTTPRoute test/r: spec.rules[0].matches[0].path.value: invalid regular expression \"(unclosed\": unclosed group",
        ),
        (
            http_route(
                "r",
                "[]",
                &[rule(
                    "[{headers: [{name: x, type: RegularExpression, value: '['}]}]",
                    "a",
                )],
            ),
            "HTTPRoute test/r: spec.rules[0].matches[0].headers[0].value: invalid regular expression",
        ),
        (
            http_route("r", "[]", &[rule("[]", "missing")]),
            "HTTPRoute test/r: spec.rules[0].backendRefs[0].name: Backend test/missing not found",
        ),
        (
            http_route("r", "[]", &[rule("[{path: {value: nope}}]", "a")]),
            "spec.rules[0].matches[0].path.value: must start with '/'",
        ),
        (
            http_route("r", "[]", &[rule("[]", "a")]).replace("name: gw,", "name: other,"),
            "HTTPRoute test/r: spec.parentRefs[0].name: Gateway test/other has no such listener",
        ),
        (
            http_route("r", "[]", &[rule("[]", "a")]).replace(
                "kind: Backend, name: a}",
                "kind: Backend, name: a, weight: 1000001}",
            ),
            "spec.rules[0].backendRefs[0].weight: must be between 0 and 1000000, got 1000001",
        ),
        (
            http_route(
                "r",
                "[]",
                &["  - filters: [{type: URLRewrite, urlRewrite: {hostname: x}}]\n".into()],
            ),
            "spec.rules[0].filters[0].type: filter type UrlRewrite is not supported",
        ),
        (
            http_route("r", "[]", &["  - timeouts: {request: 10x}\n".into()]),
            "spec.rules[0].timeouts.request: invalid duration \"10x\"",
        ),
        (
            http_route("r", "[]", &["  - backendRefs: [{name: svc}]\n".into()]),
            "spec.rules[0].backendRefs[0].port: is required for a Service",
        ),
    ];
    for (yaml, want) in cases {
        let got = problems(&yaml);
        assert!(
            got.iter().all(|p| !p.contains('\n')),
            "one line each: {got:?}"
        );
        assert!(
            got.iter().any(|p| p.contains(want)),
            "want {want:?} in {got:#?}"
        );
        assert!(got.iter().all(|p| p.starts_with("t.yaml")), "{got:?}");
    }
}

#[test]
fn unresolved_backend_keeps_its_share_as_an_error() {
    let r = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: test}\nspec:\n  parentRefs: [{name: gw}]\n  rules:\n  - backendRefs:\n    - {group: serin.dev, kind: Backend, name: a, weight: 1}\n    - {group: serin.dev, kind: Backend, name: ghost, weight: 1}\n";
    let telemetry = Telemetry::new();
    let (table, problems) = compile(&objects(r), &telemetry.metrics);
    assert_eq!(problems.len(), 1);
    assert_eq!(
        problems[0].reason.condition(),
        ("ResolvedRefs", "BackendNotFound")
    );
    let parts = request("GET", "h", "/", &[]);
    let ghost = (0..64u64)
        .map(|i| table.decide(8080, &parts, i << 58).unwrap())
        .filter(|d| d.backend().unwrap().target.is_none())
        .count();
    assert_eq!(ghost, 32, "half of the samples pick the unresolved backend");
}

#[test]
fn routes_from_other_namespaces_need_allowed_routes_all() {
    let r = http_route("r", "[]", &[rule("[]", "a")])
        .replace("namespace: test}", "namespace: other}")
        .replace("name: gw,", "name: gw, namespace: test,");
    let p = problems(&r);
    assert!(
        p[0].contains("no listener of Gateway test/gw allows routes from namespace \"other\""),
        "{p:?}"
    );
}

#[test]
fn endpoints_round_robin_and_ipv6_brackets() {
    let r = http_route(
        "r",
        "[]",
        &[
            rule("[{path: {value: /b}}]", "b"),
            rule("[{path: {value: /c}}]", "c"),
        ],
    );
    let table = compile_ok(&r);
    let d = table
        .decide(8080, &request("GET", "h", "/b", &[]), 0)
        .unwrap();
    let target = d.backend().unwrap().target.clone().unwrap();
    let seen: Vec<String> = (0..4)
        .map(|_| target.endpoint().unwrap().to_string())
        .collect();
    assert_eq!(
        seen,
        [
            "127.0.0.1:9002",
            "localhost:9003",
            "127.0.0.1:9002",
            "localhost:9003"
        ]
    );
    let d = table
        .decide(8080, &request("GET", "h", "/c", &[]), 0)
        .unwrap();
    assert_eq!(
        d.backend()
            .unwrap()
            .target
            .as_ref()
            .unwrap()
            .endpoint()
            .unwrap()
            .as_str(),
        "[::1]:9004"
    );
}

#[test]
fn unsupported_listener_protocol_is_reported() {
    let mut objects = objects("");
    objects.gateways[0].object.spec.listeners[0].protocol = "TCP".into();
    let telemetry = Telemetry::new();
    let (_, problems) = compile(&objects, &telemetry.metrics);
    let text = problems[0].to_error().to_string();
    assert!(
        text.contains("Gateway test/gw: spec.listeners[0].protocol: \"TCP\" is not supported"),
        "{text}"
    );
}
