use std::path::Path;

use serde_json::json;

use super::*;
use crate::config::{Objects, parse_documents};

fn paths(schema: &Value, value: &Value) -> Vec<String> {
    unknown_fields(schema, value)
        .into_iter()
        .map(|u| u.path)
        .collect()
}

#[test]
fn closest_allows_a_slip_not_a_different_word() {
    let names = ["matches", "filters", "backendRefs", "name", "timeouts"];
    assert_eq!(closest("matchs", names), Some("matches"));
    assert_eq!(closest("backendrefs", names), Some("backendRefs"));
    assert_eq!(closest("nmae", names), Some("name"));
    assert_eq!(closest("weigth", ["weight", "port"]), Some("weight"));
    assert_eq!(
        closest("HttpRoute", ["HTTPRoute", "Gateway"]),
        Some("HTTPRoute")
    );
    assert_eq!(closest("retries", names), None);
    assert_eq!(closest("zone", names), None);
}

#[test]
fn the_walk_honours_the_structural_keywords() {
    let schema = json!({
        "type": "object",
        "properties": {
            "closed": {"type": "object", "properties": {"a": {"type": "string"}}},
            "map": {"type": "object", "additionalProperties": {
                "type": "object", "properties": {"b": {"type": "integer"}}}},
            "open": {"type": "object", "properties": {"c": {}}, "additionalProperties": true},
            "preserved": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                "properties": {"d": {"type": "object", "properties": {}}}},
            "free": {"type": "object"},
            "list": {"type": "array", "items": {"$ref": "#/$defs/Item"}},
            "union": {"type": "object", "properties": {"kind": {}},
                "oneOf": [{"properties": {"left": {}}}, {"properties": {"right": {}}}]},
            "merged": {"allOf": [{"properties": {"x": {}}}, {"properties": {"y": {}}}]},
            "nulled": {"type": "object", "properties": {}, "nullable": true}
        },
        "$defs": {"Item": {"type": "object", "properties": {"e": {}}}}
    });
    let value = json!({
        "closed": {"a": "ok", "z": 1},
        "map": {"k1": {"b": 1}, "k2": {"bb": 2}},
        "open": {"c": 1, "anything": {"deep": true}},
        "preserved": {"anything": 1, "d": {"z": 1}},
        "free": {"anything": {"at": ["all"]}},
        "list": [{"e": 1}, {"f": 1}],
        "union": {"kind": 1, "left": 1, "right": 2, "middle": 3},
        "merged": {"x": 1, "y": 2, "w": 3},
        "nulled": null,
        "extra": 1
    });
    assert_eq!(
        paths(&schema, &value),
        [
            "closed.z",
            "extra",
            "list[1].f",
            "map.k2.bb",
            "merged.w",
            "preserved.d.z",
            "union.middle"
        ]
    );
    let odd_keys = json!({"map": {"app.kubernetes.io/name": {"c": 1}}});
    assert_eq!(
        paths(&schema, &odd_keys),
        ["map[\"app.kubernetes.io/name\"].c"]
    );
}

#[test]
fn the_catalog_reads_four_kinds_and_knows_the_rest_of_its_groups() {
    let catalog = catalog().unwrap();
    let served: Vec<(&str, &str)> = catalog
        .served
        .iter()
        .map(|k| (k.group.as_str(), k.kind.as_str()))
        .collect();
    assert_eq!(
        served,
        [
            (GATEWAY_GROUP, "Gateway"),
            (GATEWAY_GROUP, "HTTPRoute"),
            (SERIN_GROUP, "Backend"),
            (SERIN_GROUP, "SessionAffinity")
        ]
    );
    for (api_version, kind) in [
        ("gateway.networking.k8s.io/v1", "GatewayClass"),
        ("gateway.networking.k8s.io/v1beta1", "ReferenceGrant"),
        ("gateway.networking.k8s.io/v1", "GRPCRoute"),
        ("gateway.networking.k8s.io/v1alpha2", "TCPRoute"),
        ("gateway.networking.k8s.io/v1alpha3", "BackendTLSPolicy"),
        ("serin.dev/v1alpha1", "Canary"),
        ("serin.dev/v1alpha1", "MetricTemplate"),
    ] {
        assert!(
            matches!(catalog.classify(api_version, kind), Ok(Class::Skipped)),
            "{api_version} {kind}"
        );
    }
    for (api_version, kind) in [
        ("v1", "ConfigMap"),
        ("apps/v1", "Deployment"),
        ("flagger.app/v1beta1", "Canary"),
    ] {
        assert!(matches!(
            catalog.classify(api_version, kind),
            Ok(Class::Foreign)
        ));
    }
    assert!(matches!(
        catalog.classify("gateway.networking.k8s.io/v1beta1", "HTTPRoute"),
        Ok(Class::Served(_))
    ));
}

/// One step of a property path: a named property, an element of a list, or a value of a map.
#[derive(Clone, Debug)]
enum Step {
    Property(String),
    Item,
    Entry,
}

/// Every property of `schema` at every depth, as paths of [`Step`]s, in the order the walk
/// sees them.
fn property_paths(
    walk: &Walk<'_>,
    schema: &Value,
    prefix: &mut Vec<Step>,
    out: &mut Vec<Vec<Step>>,
) {
    let schema = walk.resolve(schema);
    if let Some(items) = schema.get("items") {
        prefix.push(Step::Item);
        property_paths(walk, items, prefix, out);
        prefix.pop();
    }
    let (properties, rest) = walk.shape(schema);
    for (name, sub) in properties {
        prefix.push(Step::Property(name));
        out.push(prefix.clone());
        property_paths(walk, sub, prefix, out);
        prefix.pop();
    }
    if let Rest::Schema(values) = rest {
        prefix.push(Step::Entry);
        property_paths(walk, values, prefix, out);
        prefix.pop();
    }
}

/// The smallest value `schema` accepts: required properties filled in, the first enum value,
/// the minimum of a number.
fn minimal(walk: &Walk<'_>, schema: &Value) -> Value {
    let schema = walk.resolve(schema);
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.iter().find(|v| !v.is_null()))
    {
        return first.clone();
    }
    if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        return json!(1);
    }
    let (properties, _) = walk.shape(schema);
    match schema.get("type").and_then(Value::as_str) {
        Some("array") => match schema.get("minItems").and_then(Value::as_u64) {
            Some(n) if n > 0 => json!([minimal(walk, &schema["items"])]),
            _ => json!([]),
        },
        Some("string") => match schema.get("format").and_then(Value::as_str) {
            Some("date-time") => json!("2026-01-01T00:00:00Z"),
            _ => json!(
                "x".repeat(
                    schema
                        .get("minLength")
                        .and_then(Value::as_u64)
                        .unwrap_or(1)
                        .max(1) as usize
                )
            ),
        },
        Some("integer") | Some("number") => {
            json!(
                schema
                    .get("minimum")
                    .and_then(Value::as_i64)
                    .unwrap_or(1)
                    .max(0)
            )
        }
        Some("boolean") => json!(false),
        _ if !properties.is_empty() || schema.get("type") == Some(&json!("object")) => {
            let mut object = Map::new();
            let required = schema.get("required").and_then(Value::as_array);
            for name in required.into_iter().flatten().filter_map(Value::as_str) {
                if let Some((_, sub)) = properties.iter().find(|(n, _)| n == name) {
                    object.insert(name.to_owned(), minimal(walk, sub));
                }
            }
            Value::Object(object)
        }
        _ => json!("x"),
    }
}

/// `name` with its last two letters swapped (or a letter doubled), not one of `siblings`.
fn misspell(name: &str, siblings: &[String]) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut candidates = Vec::new();
    for i in (1..chars.len()).rev() {
        if chars[i] != chars[i - 1] {
            let mut c = chars.clone();
            c.swap(i, i - 1);
            candidates.push(c.into_iter().collect::<String>());
        }
    }
    candidates.push(format!("{name}{}", chars.last().copied().unwrap_or('x')));
    candidates
        .into_iter()
        .find(|c| !siblings.iter().any(|s| s == c))
        .unwrap()
}

/// Follows `steps` in `document`, creating the smallest valid values on the way; returns the
/// schema and value at the end, and the path as the loader prints it.
fn descend<'s, 'v>(
    walk: &Walk<'s>,
    mut schema: &'s Value,
    mut value: &'v mut Value,
    steps: &[Step],
) -> (Value, &'v mut Value, String) {
    let mut shown = String::new();
    for step in steps {
        schema = walk.resolve(schema);
        match step {
            Step::Property(name) => {
                let (properties, _) = walk.shape(schema);
                let sub = properties
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, s)| *s)
                    .unwrap();
                let object = value.as_object_mut().unwrap();
                if object.get(name).is_none_or(Value::is_null) {
                    object.insert(name.clone(), minimal(walk, sub));
                }
                if !shown.is_empty() {
                    shown.push('.');
                }
                shown.push_str(name);
                value = object.get_mut(name).unwrap();
                schema = sub;
            }
            Step::Item => {
                let items = &schema["items"];
                let list = value.as_array_mut().unwrap();
                if list.is_empty() {
                    list.push(minimal(walk, items));
                }
                shown.push_str("[0]");
                value = &mut list[0];
                schema = items;
            }
            Step::Entry => {
                let (_, rest) = walk.shape(schema);
                let Rest::Schema(values) = rest else {
                    panic!("{shown}: not a map")
                };
                let object = value.as_object_mut().unwrap();
                if object.is_empty() {
                    object.insert("k".into(), minimal(walk, values));
                }
                shown.push_str(".k");
                value = object.get_mut("k").unwrap();
                schema = values;
            }
        }
    }
    (walk.resolve(schema).clone(), value, shown)
}

fn load(document: &Value) -> Result<Objects, String> {
    let mut objects = Objects::default();
    let text = serde_yaml_ng::to_string(document).unwrap();
    parse_documents(Path::new("strict.yaml"), &text, &mut objects)
        .map(|_| objects)
        .map_err(|e| e.to_string())
}

/// For every property of every kind the proxy reads: a valid document holding that property
/// loads, and the same document with the property's name misspelled is refused with an error
/// naming the misspelled path and suggesting the right name.
#[test]
fn every_misspelled_field_of_every_kind_is_refused() {
    let catalog = catalog().unwrap();
    let mut in_schemas = 0;
    let mut covered: Vec<String> = Vec::new();
    for kind in &catalog.served {
        let walk = Walk {
            root: &kind.schema,
            path: String::new(),
            found: Vec::new(),
        };
        let mut all = Vec::new();
        property_paths(&walk, &kind.schema, &mut Vec::new(), &mut all);
        in_schemas += all.len();
        let mut base = minimal(&walk, &kind.schema);
        base["apiVersion"] = json!(format!("{}/{}", kind.group, kind.versions[0]));
        base["kind"] = json!(kind.kind);
        base["metadata"] = json!({"name": "strict", "namespace": "test"});
        load(&base).unwrap_or_else(|e| panic!("{}: the minimal document: {e}", kind.kind));
        for steps in &all {
            let (Step::Property(name), parent) = steps.split_last().unwrap() else {
                unreachable!()
            };
            if parent.is_empty() && (name == "apiVersion" || name == "kind") {
                // Without them a document has no kind: tested by the loader's own tests.
                covered.push(format!("{} {name}", kind.kind));
                continue;
            }
            let mut document = base.clone();
            let (parent_schema, parent_value, parent_path) =
                descend(&walk, &kind.schema, &mut document, parent);
            let (properties, _) = walk.shape(&parent_schema);
            let siblings: Vec<String> = properties.iter().map(|(n, _)| n.clone()).collect();
            let sub = properties.iter().find(|(n, _)| n == name).unwrap().1;
            let object = parent_value.as_object_mut().unwrap();
            let field_value = match object.get(name) {
                Some(v) if !v.is_null() => v.clone(),
                _ => minimal(&walk, sub),
            };
            object.insert(name.clone(), field_value.clone());
            let valid = document.clone();
            let typo = misspell(name, &siblings);
            let (_, parent_value, _) = descend(&walk, &kind.schema, &mut document, parent);
            let object = parent_value.as_object_mut().unwrap();
            object.remove(name);
            object.insert(typo.clone(), field_value);
            let path = if parent_path.is_empty() {
                typo.clone()
            } else {
                format!("{parent_path}.{typo}")
            };
            load(&valid).unwrap_or_else(|e| {
                panic!(
                    "{} {path}: the valid document is refused: {e}\n{valid:#}",
                    kind.kind
                )
            });
            let err = match load(&document) {
                Ok(_) => panic!("{} {path}: the misspelled field is accepted", kind.kind),
                Err(e) => e,
            };
            // The object is `Kind test/strict` unless the typo is in its name or namespace.
            let expected = format!(": {path}: unknown field, did you mean `{name}`?");
            assert!(
                err.starts_with(&format!("strict.yaml: {} ", kind.kind))
                    && err.ends_with(&expected),
                "{err}\nexpected: {expected}"
            );
            let field = if parent_path.is_empty() {
                name.clone()
            } else {
                format!("{parent_path}.{name}")
            };
            covered.push(format!("{} {field}", kind.kind));
        }
    }
    assert_eq!(covered.len(), in_schemas);
    // The schemas are the full ones, metadata included, not a stub.
    for field in [
        "HTTPRoute spec.rules[0].matches",
        "HTTPRoute spec.rules[0].backendRefs[0].weight",
        "HTTPRoute spec.rules[0].filters[0].requestMirror.percent",
        "HTTPRoute metadata.managedFields[0].fieldsV1",
        "HTTPRoute metadata.ownerReferences[0].uid",
        "Gateway spec.listeners[0].allowedRoutes.namespaces.selector.matchLabels",
        "Backend spec.endpoints[0].port",
        "SessionAffinity spec.cookie.maxAge",
    ] {
        assert!(covered.iter().any(|c| c == field), "{field} not covered");
    }
}
