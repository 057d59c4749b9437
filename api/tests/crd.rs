//! `deploy/crds/` is generated from the types of this crate (`serin crds --dir deploy/crds`);
//! these tests keep the committed files in step and check what users and Flagger's tools
//! rely on.

use std::path::Path;

use serin_api::crd;

#[test]
fn committed_crds_are_the_generated_ones() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds");
    let files = match crd::crd_files() {
        Ok(files) => files,
        Err(err) => panic!("{err}"),
    };
    for file in files {
        let path = dir.join(file.file_name);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        // Compared as data, so key order (which may vary with serde_json's features) does
        // not matter; regenerate with `serin crds --dir deploy/crds`.
        let parse = |text: &str| serde_yaml_ng::from_str::<serde_json::Value>(text).ok();
        assert!(parse(&file.yaml).is_some());
        assert_eq!(
            parse(&committed),
            parse(&file.yaml),
            "{} is stale: run `serin crds --dir deploy/crds`",
            path.display()
        );
    }
}

#[test]
fn crds_have_flaggers_names_and_columns() {
    let yaml = crd::crds_yaml().unwrap_or_default();
    let docs: Vec<serde_json::Value> = yaml
        .split("---\n")
        .filter_map(|doc| serde_yaml_ng::from_str(doc).ok())
        .collect();
    assert_eq!(docs.len(), 4);
    let canary = &docs[0];
    assert_eq!(canary["metadata"]["name"], "canaries.serin.dev");
    assert_eq!(canary["spec"]["scope"], "Namespaced");
    assert_eq!(canary["spec"]["names"]["singular"], "canary");
    // No short names: Flagger's Canary CRD (canaries.flagger.app) may live in the same cluster
    // during a migration, and a short name shared with its names would make `kubectl get
    // canary` ambiguous. Each is addressed as canaries.serin.dev / canaries.flagger.app.
    for doc in &docs {
        assert!(
            doc["spec"]["names"].get("shortNames").is_none(),
            "{} has short names",
            doc["metadata"]["name"]
        );
    }
    let version = &canary["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert!(version["subresources"]["status"].is_object());
    let columns: Vec<(&str, &str)> = version["additionalPrinterColumns"]
        .as_array()
        .map(|cols| {
            cols.iter()
                .filter(|c| c.get("priority").is_none())
                .filter_map(|c| Some((c["name"].as_str()?, c["jsonPath"].as_str()?)))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        columns,
        vec![
            ("Status", ".status.phase"),
            ("Weight", ".status.canaryWeight"),
            ("LastTransitionTime", ".status.lastTransitionTime"),
        ]
    );
    let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
    assert_eq!(
        spec["required"],
        serde_json::json!(["analysis", "targetRef"])
    );
    assert_eq!(
        spec["properties"]["service"]["properties"]["targetPort"]["x-kubernetes-int-or-string"],
        true
    );
    let names: Vec<&str> = docs
        .iter()
        .filter_map(|d| d["metadata"]["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "canaries.serin.dev",
            "metrictemplates.serin.dev",
            "backends.serin.dev",
            "sessionaffinities.serin.dev"
        ]
    );
}
