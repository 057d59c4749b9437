//! `deploy/crds/backend.yaml` is generated from the `Backend` type; this test keeps the committed
//! file in step. Regenerate with `SERIN_UPDATE_CRDS=1 cargo test -p serin-proxy --test crd`.

use std::path::Path;

use kube::CustomResourceExt;
use serin_proxy::config::Backend;

#[test]
fn backend_crd_matches_the_committed_file() {
    let generated = format!(
        "# Generated from serin_proxy::config::Backend; do not edit.\n{}",
        serde_yaml_ng::to_string(&Backend::crd()).unwrap()
    );
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds/backend.yaml");
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
