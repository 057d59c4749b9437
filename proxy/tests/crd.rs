//! `deploy/crds/backend.yaml` and `deploy/crds/sessionaffinity.yaml` are generated from the
//! `Backend` and `SessionAffinity` types; this test keeps the committed files in step.
//! Regenerate with `SERIN_UPDATE_CRDS=1 cargo test -p serin-proxy --test crd`.

use std::path::Path;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serin_proxy::config::{Backend, SessionAffinity};

fn check(type_name: &str, file: &str, crd: CustomResourceDefinition) {
    let generated = format!(
        "# Generated from serin_proxy::config::{type_name}; do not edit.\n{}",
        serde_yaml_ng::to_string(&crd).unwrap()
    );
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/crds")
        .join(file);
    if std::env::var_os("SERIN_UPDATE_CRDS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is out of date: run SERIN_UPDATE_CRDS=1 cargo test -p serin-proxy --test crd",
        path.display()
    );
}

#[test]
fn backend_crd_matches_the_committed_file() {
    check("Backend", "backend.yaml", Backend::crd());
}

#[test]
fn session_affinity_crd_matches_the_committed_file() {
    check(
        "SessionAffinity",
        "sessionaffinity.yaml",
        SessionAffinity::crd(),
    );
}
