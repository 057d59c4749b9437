use super::*;

fn parse(text: &str) -> Result<Objects, ConfigError> {
    let mut objects = Objects::default();
    parse_documents(Path::new("routes.yaml"), text, &mut objects)?;
    check_duplicates(&objects)?;
    Ok(objects)
}

#[test]
fn parses_all_three_kinds_from_one_file() {
    let objects = parse(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: public, namespace: test}
spec:
  gatewayClassName: serin
  listeners: [{name: http, port: 8080, protocol: HTTP}]
---
apiVersion: serin.dev/v1alpha1
kind: Backend
metadata: {name: podinfo-primary}
spec:
  endpoints: [{host: 127.0.0.1, port: 9001}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: podinfo, namespace: test}
spec:
  parentRefs: [{name: public}]
  rules:
  - backendRefs: [{group: serin.dev, kind: Backend, name: podinfo-primary, weight: 90}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: unrelated}
"#,
    )
    .unwrap();
    assert_eq!(objects.gateways.len(), 1);
    assert_eq!(objects.backends.len(), 1);
    assert_eq!(objects.routes.len(), 1);
    assert_eq!(
        key_of(&objects.backends[0].object),
        ObjectKey::new("default", "podinfo-primary")
    );
    assert_eq!(
        objects.backends[0].object.spec.endpoints[0].port,
        Some(9001)
    );
}

#[test]
fn schema_errors_name_file_object_and_field() {
    let err = parse(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: test}\nspec:\n  rules:\n  - backendRefs: [{name: b, weight: heavy}]\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("routes.yaml: HTTPRoute test/r: spec.rules[0].backendRefs[0].weight: "),
        "{err}"
    );
    assert!(err.contains("invalid type"), "{err}");
}

#[test]
fn syntax_errors_name_the_document() {
    let err = parse("kind: Backend\n---\napiVersion: v1\nkind: [unclosed\n")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("routes.yaml"), "{err}");
    let err = parse("apiVersion: v1\nkind: X\n---\nfoo: [unclosed\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("routes.yaml (document 2): invalid YAML"),
        "{err}"
    );
}

#[test]
fn duplicates_are_rejected() {
    let doc = "apiVersion: serin.dev/v1alpha1\nkind: Backend\nmetadata: {name: b}\nspec: {endpoints: []}\n";
    let err = parse(&format!("{doc}---\n{doc}")).unwrap_err().to_string();
    assert!(
        err.contains("Backend default/b: metadata.name: duplicate"),
        "{err}"
    );
}

#[test]
fn missing_name_is_an_error() {
    let err = parse("apiVersion: serin.dev/v1alpha1\nkind: Backend\nspec: {endpoints: []}\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("metadata.name: is required"), "{err}");
}

// Strict file mode: a typo must never change routing.

const GATEWAY: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: test}\nspec:\n  gatewayClassName: serin\n  listeners: [{name: http, port: 8080, protocol: HTTP}]\n";

fn error(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

#[test]
fn a_misspelled_matches_is_refused_not_a_catch_all() {
    let err = error(&format!(
        "{GATEWAY}---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r, namespace: test}}\nspec:\n  parentRefs: [{{name: gw}}]\n  rules:\n  - matchs: [{{headers: [{{name: x-canary, value: insider}}]}}]\n    backendRefs: [{{name: canary, port: 80}}]\n"
    ));
    assert_eq!(
        err,
        "routes.yaml (document 2): HTTPRoute test/r: spec.rules[0].matchs: unknown field, did you mean `matches`?"
    );
}

#[test]
fn a_misspelled_weight_is_refused() {
    let err = error(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: test}\nspec:\n  rules:\n  - backendRefs:\n    - {name: primary, port: 80, weigth: 90}\n    - {name: canary, port: 80, weight: 10}\n",
    );
    assert_eq!(
        err,
        "routes.yaml: HTTPRoute test/r: spec.rules[0].backendRefs[0].weigth: unknown field, did you mean `weight`?"
    );
}

#[test]
fn a_misspelled_kind_of_the_gateway_group_is_refused() {
    let err = error(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HttpRoute\nmetadata: {name: r, namespace: test}\nspec: {}\n",
    );
    assert_eq!(
        err,
        "routes.yaml: HttpRoute test/r: kind: unknown kind \"HttpRoute\" of gateway.networking.k8s.io, did you mean `HTTPRoute`?"
    );
}

#[test]
fn an_unknown_serin_kind_or_version_is_refused() {
    let err = error("apiVersion: serin.dev/v1alpha1\nkind: Bakend\nmetadata: {name: b}\n");
    assert!(
        err.ends_with(
            "Bakend default/b: kind: unknown kind \"Bakend\" of serin.dev, did you mean `Backend`?"
        ),
        "{err}"
    );
    let err = error("apiVersion: serin.dev/v1alpha1\nkind: Frobnicator\nmetadata: {name: f}\n");
    assert!(
        err.contains("kind: unknown kind \"Frobnicator\" of serin.dev (known: Backend, Canary, MetricTemplate, SessionAffinity)"),
        "{err}"
    );
    let err = error(
        "apiVersion: serin.dev/v1\nkind: Backend\nmetadata: {name: b}\nspec: {endpoints: []}\n",
    );
    assert!(
        err.contains(
            "Backend default/b: apiVersion: unknown version \"v1\" of serin.dev (known: v1alpha1)"
        ),
        "{err}"
    );
    let err = error(
        "apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: HTTPRoute\nmetadata: {name: r}\nspec: {}\n",
    );
    assert!(
        err.contains("HTTPRoute default/r: apiVersion: HTTPRoute is not served in gateway.networking.k8s.io/v1alpha2 (use gateway.networking.k8s.io/v1 or gateway.networking.k8s.io/v1beta1)"),
        "{err}"
    );
}

#[test]
fn a_misspelled_metadata_field_is_refused() {
    let err = error(
        "apiVersion: serin.dev/v1alpha1\nkind: Backend\nmetadata:\n  name: b\n  namespace: test\n  lables: {app: podinfo}\nspec: {endpoints: []}\n",
    );
    assert_eq!(
        err,
        "routes.yaml: Backend test/b: metadata.lables: unknown field, did you mean `labels`?"
    );
}

#[test]
fn a_misspelled_backend_endpoint_field_is_refused() {
    let err = error(
        "apiVersion: serin.dev/v1alpha1\nkind: Backend\nmetadata: {name: b}\nspec:\n  endpoints:\n  - {host: 10.0.0.1, port: 80}\n  - {host: 10.0.0.2, prot: 80}\n",
    );
    assert_eq!(
        err,
        "routes.yaml: Backend default/b: spec.endpoints[1].prot: unknown field, did you mean `port`?"
    );
}

#[test]
fn a_misspelled_session_affinity_field_is_refused() {
    let err = error(
        "apiVersion: serin.dev/v1alpha1\nkind: SessionAffinity\nmetadata: {name: sticky}\nspec:\n  cookie: {name: bucket, maxAgee: 60}\n",
    );
    assert_eq!(
        err,
        "routes.yaml: SessionAffinity default/sticky: spec.cookie.maxAgee: unknown field, did you mean `maxAge`?"
    );
}

#[test]
fn the_first_document_of_several_is_named() {
    let err = error(&format!(
        "apiVersion: serin.dev/v1alpha1\nkind: Backend\nmetadata: {{name: b}}\nspec: {{endpoints: [], zone: eu}}\n---\n{GATEWAY}"
    ));
    assert_eq!(
        err,
        "routes.yaml (document 1): Backend default/b: spec.zone: unknown field"
    );
}

#[test]
fn every_unknown_field_of_a_document_is_reported() {
    let err = error(
        "apiVersion: serin.dev/v1alpha1\nkind: Backend\nmetadata: {name: b}\nspec:\n  endpoints: [{host: a, prot: 80}]\n  zone: eu\n",
    );
    assert_eq!(
        err,
        "routes.yaml: Backend default/b: spec.endpoints[0].prot: unknown field, did you mean `port`?; routes.yaml: Backend default/b: spec.zone: unknown field"
    );
}

#[test]
fn a_missing_kind_names_the_misspelled_key() {
    let err = error("apiVersion: serin.dev/v1alpha1\nknid: Backend\nmetadata: {name: b}\n");
    assert!(
        err.contains("knid: unknown field, did you mean `kind`?"),
        "{err}"
    );
}

#[test]
fn kinds_of_other_groups_and_known_kinds_the_proxy_does_not_read_are_skipped() {
    let mut objects = Objects::default();
    let skipped = parse_documents(
        Path::new("routes.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {anything: goes, matchs: here}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80}]}\n---\napiVersion: serin.dev/v1alpha1\nkind: Canary\nmetadata: {name: podinfo}\nspec: {targetRef: {apiVersion: apps/v1, kind: Deployment, name: podinfo}}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: serin}\nspec: {controllerName: serin.dev/gateway}\n",
        &mut objects,
    )
    .unwrap();
    assert_eq!(skipped, 4);
    // Only other groups' kinds: a misspelled kind of the Gateway API is not skipped.
    let err = error(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoutes\nmetadata: {name: r}\nspec: {}\n",
    );
    assert!(
        err.contains("(document 2): HTTPRoutes default/r: kind: unknown kind"),
        "{err}"
    );
}

#[test]
fn the_older_v1beta1_version_is_read() {
    let objects = parse(
        "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  rules: [{backendRefs: [{name: web, port: 80}]}]\n",
    )
    .unwrap();
    assert_eq!(objects.routes.len(), 1);
}

/// As `kubectl get -o yaml` prints objects: server-set metadata and status.
const EXPORTED: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: |
      {"apiVersion":"gateway.networking.k8s.io/v1","kind":"Gateway"}
  creationTimestamp: "2026-11-02T09:14:03Z"
  generation: 2
  labels:
    app.kubernetes.io/name: serin
  managedFields:
  - apiVersion: gateway.networking.k8s.io/v1
    fieldsType: FieldsV1
    fieldsV1:
      f:metadata:
        f:annotations:
          .: {}
          f:kubectl.kubernetes.io/last-applied-configuration: {}
      f:spec:
        .: {}
        f:gatewayClassName: {}
        f:listeners: {}
    manager: kubectl-client-side-apply
    operation: Update
    time: "2026-11-02T09:14:03Z"
  - apiVersion: gateway.networking.k8s.io/v1
    fieldsType: FieldsV1
    fieldsV1:
      f:status:
        f:conditions: {}
    manager: serin-proxy
    operation: Apply
    subresource: status
    time: "2026-11-02T09:14:05Z"
  name: public
  namespace: demo
  resourceVersion: "48213"
  uid: 0d6b1f5e-5a8e-4c4b-9d7e-2f0a3b6c9e11
spec:
  gatewayClassName: serin
  listeners:
  - allowedRoutes:
      namespaces:
        from: Same
    name: http
    port: 8080
    protocol: HTTP
status:
  addresses:
  - type: IPAddress
    value: 10.96.0.20
  conditions:
  - lastTransitionTime: "2026-11-02T09:14:05Z"
    message: ""
    observedGeneration: 2
    reason: Accepted
    status: "True"
    type: Accepted
  listeners:
  - attachedRoutes: 1
    conditions: []
    name: http
    supportedKinds:
    - group: gateway.networking.k8s.io
      kind: HTTPRoute
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  creationTimestamp: "2026-11-02T09:14:03Z"
  generation: 7
  name: podinfo
  namespace: demo
  ownerReferences:
  - apiVersion: serin.dev/v1alpha1
    blockOwnerDeletion: true
    controller: true
    kind: Canary
    name: podinfo
    uid: 5b1e2c3d-0000-4000-8000-000000000001
  finalizers: []
  resourceVersion: "48990"
  uid: 7c0e9a4e-1111-4c4b-9d7e-2f0a3b6c9e12
spec:
  parentRefs:
  - group: gateway.networking.k8s.io
    kind: Gateway
    name: public
  rules:
  - backendRefs:
    - group: ""
      kind: Service
      name: podinfo-primary
      port: 9898
      weight: 90
    - group: ""
      kind: Service
      name: podinfo-canary
      port: 9898
      weight: 10
    matches:
    - path:
        type: PathPrefix
        value: /
status:
  parents:
  - conditions:
    - lastTransitionTime: "2026-11-02T09:20:00Z"
      message: Route is accepted
      observedGeneration: 7
      reason: Accepted
      status: "True"
      type: Accepted
    controllerName: serin.dev/gateway
    parentRef:
      group: gateway.networking.k8s.io
      kind: Gateway
      name: public
"#;

#[test]
fn objects_exported_from_a_cluster_load() {
    let objects = parse(EXPORTED).unwrap();
    assert_eq!((objects.gateways.len(), objects.routes.len()), (1, 1));
    assert_eq!(objects.routes[0].object.metadata.generation, Some(7));
    // Strict all the same: the exported route with a typo in its spec is refused.
    let err = error(&EXPORTED.replace("    matches:\n", "    matchs:\n"));
    assert!(
        err.ends_with("(document 2): HTTPRoute demo/podinfo: spec.rules[0].matchs: unknown field, did you mean `matches`?"),
        "{err}"
    );
}
