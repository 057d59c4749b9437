//! `serin` as a process: output lines and exit codes.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn serin(args: &[&str]) -> Output {
    match Command::new(env!("CARGO_BIN_EXE_serin"))
        .args(args)
        .output()
    {
        Ok(output) => output,
        Err(err) => panic!("cannot run serin: {err}"),
    }
}

fn stdout_lines(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn valid_files_print_ok_and_exit_0() {
    let canary = fixture("seed-004-canary.yaml");
    let templates = fixture("seed-004-metric-templates.yaml");
    let (canary, templates) = (canary.to_string_lossy(), templates.to_string_lossy());
    let output = serin(&["validate", &canary, &templates]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(
        stdout_lines(&output),
        vec![
            format!("{canary}: Gateway istio-ingress/gateway: ok"),
            format!("{canary}: Canary test/podinfo: ok"),
            format!("{templates}: MetricTemplate flagger-system/latency: ok"),
            format!("{templates}: MetricTemplate flagger-system/error-rate: ok"),
        ]
    );
}

#[test]
fn invalid_files_report_every_error_and_exit_1() {
    let file = fixture("invalid-canaries.yaml");
    let file = file.to_string_lossy();
    let output = serin(&["validate", &file]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert_eq!(
        stdout_lines(&output),
        vec![
            format!(
                "{file}: Canary test/podinfo: spec.analysis.maxWeight: must be at most 100, got 150"
            ),
            format!(
                "{file}: Canary test/podinfo: spec.analysis.metrics[0].name: unknown built-in metric \
                 \"error-rate\" (built-ins: request-success-rate, request-duration); set templateRef \
                 to query a MetricTemplate"
            ),
            format!(
                "{file}: Canary prod/frontend: spec.analysis.interval: invalid duration \"1x\": \
                 unknown unit \"x\" (expected ns, us, ms, s, m or h)"
            ),
            format!("{file}: Canary prod/backend: ok"),
        ]
    );
}

#[test]
fn proxy_configuration_is_checked_strictly() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let routes = dir.path().join("routes.yaml");
    let canary = fixture("seed-001-checkout-canary.yaml");
    let text = format!(
        "{}---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: checkout, namespace: shop}}\nspec:\n  parentRefs: [{{name: public}}]\n  rules:\n  - matchs: [{{headers: [{{name: x-canary, value: insider}}]}}]\n    backendRefs: [{{name: checkout-canary, port: 80}}]\n  - backendRefs:\n    - {{name: checkout-primary, port: 80, weigth: 90}}\n---\napiVersion: serin.dev/v1alpha1\nkind: Backend\nmetadata: {{name: checkout-primary, namespace: shop}}\nspec: {{endpoints: [{{host: 10.0.0.1, port: 8080}}]}}\n",
        std::fs::read_to_string(&canary).unwrap_or_default()
    );
    assert!(std::fs::write(&routes, text).is_ok());
    let shown = routes.to_string_lossy();
    let output = serin(&["validate", &shown]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert_eq!(
        stdout_lines(&output),
        vec![
            format!("{shown}: Canary shop/checkout: ok"),
            format!(
                "{shown}: HTTPRoute shop/checkout: spec.rules[0].matchs: unknown field, did you mean `matches`?"
            ),
            format!(
                "{shown}: HTTPRoute shop/checkout: spec.rules[1].backendRefs[0].weigth: unknown field, did you mean `weight`?"
            ),
            format!("{shown}: Backend shop/checkout-primary: ok"),
        ]
    );
    // The same file with the typos fixed passes.
    let fixed = std::fs::read_to_string(&routes)
        .unwrap_or_default()
        .replace("matchs:", "matches:")
        .replace("weigth:", "weight:");
    assert!(std::fs::write(&routes, fixed).is_ok());
    let output = serin(&["validate", &shown]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
}

#[test]
fn one_bad_file_fails_the_run_but_all_are_checked() {
    let good = fixture("seed-001-checkout-canary.yaml");
    let good = good.to_string_lossy();
    let missing = fixture("no-such-file.yaml");
    let missing = missing.to_string_lossy();
    let output = serin(&["validate", &missing, &good]);
    assert_eq!(output.status.code(), Some(1));
    let lines = stdout_lines(&output);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with(&format!("{missing}: cannot read: ")),
        "{lines:?}"
    );
    assert_eq!(lines[1], format!("{good}: Canary shop/checkout: ok"));
}

#[test]
fn usage_errors_exit_64() {
    for args in [
        &["validate"][..],
        &["frobnicate"][..],
        &[][..],
        &["crds", "--bogus"][..],
    ] {
        let output = serin(args);
        assert_eq!(output.status.code(), Some(64), "{args:?}: {output:?}");
        assert!(!output.stderr.is_empty(), "{args:?}: usage goes to stderr");
    }
    let help = serin(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("validate"));
}

#[test]
fn crds_prints_both_definitions() {
    let output = serin(&["crds"]);
    assert_eq!(output.status.code(), Some(0));
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(text.matches("kind: CustomResourceDefinition").count(), 2);
    assert!(text.contains("name: canaries.serin.dev"));
    assert!(text.contains("name: metrictemplates.serin.dev"));
}

#[test]
fn crds_writes_the_committed_files() {
    let dir = std::env::temp_dir().join(format!("serin-crds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(std::fs::create_dir_all(&dir).is_ok());
    let output = serin(&["crds", "--dir", &dir.to_string_lossy()]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    for name in ["canary.yaml", "metrictemplate.yaml"] {
        let written = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        let committed = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../deploy/crds")
                .join(name),
        )
        .unwrap_or_default();
        let parse = |t: &str| serde_yaml_ng::from_str::<serde_json::Value>(t).ok();
        assert!(parse(&written).is_some(), "{name}");
        assert_eq!(parse(&written), parse(&committed), "{name}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
