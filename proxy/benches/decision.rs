//! The routing decision (host lookup, match, weighted pick) on a table of realistic size.

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use serin_proxy::config::{Objects, parse_documents};
use serin_proxy::metrics::Telemetry;
use serin_proxy::table::{RouteTable, compile};

/// 50 hosts, each with a header-matched canary rule, a path rule and a 90/10 split.
fn table() -> RouteTable {
    let mut yaml = String::from(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n  gatewayClassName: serin\n  listeners: [{name: http, port: 8080, protocol: HTTP}]\n---\napiVersion: serin.dev/v1alpha1\nkind: Backend\nmetadata: {name: primary}\nspec: {endpoints: [{host: 127.0.0.1, port: 9001}]}\n---\napiVersion: serin.dev/v1alpha1\nkind: Backend\nmetadata: {name: canary}\nspec: {endpoints: [{host: 127.0.0.1, port: 9002}]}\n",
    );
    for i in 0..50 {
        yaml.push_str(&format!(
            r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: app{i}}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [app{i}.example.com]
  rules:
  - matches:
    - headers: [{{name: x-canary, value: insider}}]
    - headers: [{{name: cookie, type: RegularExpression, value: "^(.*?;)?(canary=always)(;.*)?$"}}]
    backendRefs: [{{group: serin.dev, kind: Backend, name: canary}}]
  - matches: [{{path: {{type: PathPrefix, value: /static}}}}]
    backendRefs: [{{group: serin.dev, kind: Backend, name: primary}}]
  - backendRefs:
    - {{group: serin.dev, kind: Backend, name: primary, weight: 90}}
    - {{group: serin.dev, kind: Backend, name: canary, weight: 10}}
"#
        ));
    }
    let mut objects = Objects::default();
    parse_documents(Path::new("bench.yaml"), &yaml, &mut objects).expect("valid bench config");
    let telemetry = Telemetry::new();
    let (table, problems) = compile(&objects, &telemetry.metrics);
    assert!(problems.is_empty(), "{problems:?}");
    table
}

fn bench(c: &mut Criterion) {
    let table = table();
    let plain = Request::get("/api/users?id=7")
        .header("host", "app42.example.com")
        .header("user-agent", "bench")
        .header("accept", "*/*")
        .body(())
        .expect("request")
        .into_parts()
        .0;
    let canary_header = Request::get("/api/users")
        .header("host", "app42.example.com")
        .header("x-canary", "insider")
        .body(())
        .expect("request")
        .into_parts()
        .0;
    let mut sample = 0u64;
    let mut group = c.benchmark_group("decide");
    group.bench_function("weighted split (2 match rules miss)", |b| {
        b.iter(|| {
            sample = sample.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let d = table
                .decide(8080, black_box(&plain), sample)
                .expect("routed");
            black_box(d.backend)
        })
    });
    group.bench_function("header match hit", |b| {
        b.iter(|| {
            let d = table
                .decide(8080, black_box(&canary_header), 1)
                .expect("routed");
            black_box(d.backend)
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
