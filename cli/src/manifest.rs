//! Reading manifests: multi-document YAML with Canary and MetricTemplate objects, checked
//! with exactly the code the controller uses, and the proxy's configuration objects
//! (`Gateway`, `HTTPRoute`, `Backend`, `SessionAffinity`), checked with exactly the code
//! serin-proxy loads files with. Backs `serin validate`.
//!
//! Each object is reported with every problem found: schema errors carry the field path of
//! the offending value (`spec.analysis.interval: invalid duration "1x": ...`,
//! `spec.rules[0].matchs: unknown field, did you mean `matches`?`), semantic ones come from
//! [`serin_controller::validation`]. Documents of other kinds are skipped, so a file may mix
//! Deployments, Canaries and routes.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use serde_yaml_ng::Value;
use serin_proxy::{
    ConfigError,
    config::{self, Origin},
};

use serin_controller::{
    Error, Result,
    canary::Canary,
    template::MetricTemplate,
    validation::{ValidationErrors, validate_canary, validate_metric_template},
};

pub use serin_controller::document::{load_canary, parse_canary, parse_typed};

/// The API version of Serin's resources.
pub const API_VERSION: &str = "serin.dev/v1alpha1";

/// One finding in a manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    /// A Canary, MetricTemplate or proxy configuration object, with its problems (none when
    /// valid).
    Object(ObjectReport),
    /// A document that is not valid YAML; later documents of the file are not read.
    Unreadable {
        /// 1-based document index.
        document: usize,
        /// The YAML error.
        message: String,
    },
}

/// The check of one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectReport {
    /// 1-based document index in the file.
    pub document: usize,
    /// `Canary`, `MetricTemplate`, or a kind serin-proxy reads (`HTTPRoute`, ...).
    pub kind: String,
    /// Namespace (`default` when the manifest sets none).
    pub namespace: String,
    /// Name (`<unnamed>` when the manifest sets none).
    pub name: String,
    /// Problems, each `path: message`; empty when the object is valid.
    pub problems: Vec<String>,
}

impl ObjectReport {
    /// Whether the object is valid.
    pub fn is_valid(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for ObjectReport {
    /// `Canary test/podinfo`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// Reads and checks a manifest file.
pub fn check_file(path: &Path) -> Result<Vec<Finding>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    Ok(check_manifest(&text))
}

/// Checks every Canary, MetricTemplate and proxy configuration object in a multi-document
/// YAML text.
pub fn check_manifest(text: &str) -> Vec<Finding> {
    let mut findings = Vec::new();
    for (i, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let index = i + 1;
        let value = match Value::deserialize(document) {
            Ok(value) => value,
            Err(source) => {
                findings.push(Finding::Unreadable {
                    document: index,
                    message: Error::Yaml {
                        document: index,
                        source,
                    }
                    .to_string(),
                });
                break;
            }
        };
        if let Some(report) = check_document(index, value) {
            findings.push(Finding::Object(report));
        }
    }
    findings
}

fn check_document(document: usize, mut value: Value) -> Option<ObjectReport> {
    let kind = value.get("kind").and_then(Value::as_str)?.to_owned();
    let metadata = value.get("metadata");
    let field = |name: &str| {
        metadata
            .and_then(|m| m.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let mut report = ObjectReport {
        document,
        namespace: field("namespace").unwrap_or_else(|| "default".to_owned()),
        name: field("name").unwrap_or_else(|| "<unnamed>".to_owned()),
        kind,
        problems: Vec::new(),
    };
    if report.kind != "Canary" && report.kind != "MetricTemplate" {
        return check_proxy_document(report, value);
    }
    match value.get("apiVersion").and_then(Value::as_str) {
        Some(API_VERSION) => {}
        other => {
            report.problems.push(format!(
                "apiVersion: expected {API_VERSION}, got {}",
                other.map_or_else(|| "nothing".to_owned(), |v| format!("{v:?}"))
            ));
            // Check the rest as if it were right, to report everything at once.
            if let Value::Mapping(map) = &mut value {
                map.insert("apiVersion".into(), API_VERSION.into());
            }
        }
    }
    let checked = if report.kind == "Canary" {
        parse_typed::<Canary>(value)
            .and_then(|canary| validate_canary(&canary).map(drop).map_err(Error::Invalid))
    } else {
        parse_typed::<MetricTemplate>(value)
            .and_then(|template| validate_metric_template(&template).map_err(Error::Invalid))
    };
    match checked {
        Ok(()) => {}
        Err(Error::Invalid(ValidationErrors(errors))) => {
            report
                .problems
                .extend(errors.iter().map(ToString::to_string));
        }
        Err(other) => report.problems.push(other.to_string()),
    }
    Some(report)
}

/// Checks a document as serin-proxy loads it from a file; `None` when the proxy skips its kind.
fn check_proxy_document(mut report: ObjectReport, value: Value) -> Option<ObjectReport> {
    let value = match serde_json::to_value(&value) {
        Ok(value) => value,
        Err(err) => {
            report.problems.push(err.to_string());
            return Some(report);
        }
    };
    // Only the field and message are shown: the report names file and document.
    let origin = Origin::File {
        path: PathBuf::new(),
        document: report.document - 1,
        documents: report.document,
    };
    match config::parse_document(origin, value) {
        Ok(None) => None,
        Ok(Some(_)) => Some(report),
        Err(err) => {
            proxy_problems(err, &mut report.problems);
            Some(report)
        }
    }
}

/// The `field: message` lines of a proxy configuration error (its file is the report's).
fn proxy_problems(err: ConfigError, out: &mut Vec<String>) {
    match err {
        ConfigError::Object { field, message, .. } => out.push(format!("{field}: {message}")),
        ConfigError::Syntax { message, .. } => out.push(message),
        ConfigError::Many(errors) => {
            for err in errors {
                proxy_problems(err, out);
            }
        }
        other => out.push(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"
apiVersion: serin.dev/v1alpha1
kind: Canary
metadata:
  name: podinfo
  namespace: test
spec:
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: podinfo}
  service: {port: 9898, gatewayRefs: [{name: public}]}
  analysis: {interval: 1m, threshold: 5, maxWeight: 50, stepWeight: 10}
"#;

    fn objects(text: &str) -> Vec<ObjectReport> {
        check_manifest(text)
            .into_iter()
            .filter_map(|f| match f {
                Finding::Object(o) => Some(o),
                Finding::Unreadable { .. } => None,
            })
            .collect()
    }

    #[test]
    fn valid_canary() {
        let found = objects(VALID);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].to_string(), "Canary test/podinfo");
        assert!(found[0].is_valid(), "{:?}", found[0].problems);
        assert!(load_canary(VALID).is_ok());
    }

    #[test]
    fn schema_errors_carry_the_path() {
        let text = VALID.replace("interval: 1m", "interval: 1x");
        let found = objects(&text);
        assert_eq!(
            found[0].problems,
            vec![
                "spec.analysis.interval: invalid duration \"1x\": unknown unit \"x\" (expected \
                 ns, us, ms, s, m or h)"
                    .to_owned()
            ]
        );
    }

    #[test]
    fn flagger_api_version_is_reported_and_the_rest_checked() {
        let text = VALID
            .replace("serin.dev/v1alpha1", "flagger.app/v1beta1")
            .replace("maxWeight: 50", "maxWeight: 150");
        let found = objects(&text);
        assert_eq!(
            found[0].problems,
            vec![
                "apiVersion: expected serin.dev/v1alpha1, got \"flagger.app/v1beta1\"".to_owned(),
                "spec.analysis.maxWeight: must be at most 100, got 150".to_owned(),
            ]
        );
    }

    #[test]
    fn proxy_configuration_is_checked_as_the_proxy_loads_it() {
        let text = format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r, namespace: test}}\nspec:\n  rules:\n  - matchs: [{{path: {{value: /}}}}]\n---\n{VALID}---\napiVersion: serin.dev/v1alpha1\nkind: Backend\nmetadata: {{name: b}}\nspec: {{endpoints: [{{host: 10.0.0.1, port: 80}}]}}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: serin}}\nspec: {{controllerName: serin.dev/gateway}}\n"
        );
        let found = objects(&text);
        let shown: Vec<(String, Vec<String>)> = found
            .iter()
            .map(|o| (o.to_string(), o.problems.clone()))
            .collect();
        assert_eq!(
            shown,
            [
                (
                    "HTTPRoute test/r".to_owned(),
                    vec!["spec.rules[0].matchs: unknown field, did you mean `matches`?".to_owned()]
                ),
                ("Canary test/podinfo".to_owned(), vec![]),
                ("Backend default/b".to_owned(), vec![]),
            ]
        );
    }

    #[test]
    fn other_kinds_are_skipped_and_bad_yaml_reported() {
        let text = format!("apiVersion: v1\nkind: Service\n---\n{VALID}---\nkey: [unclosed\n");
        let findings = check_manifest(&text);
        assert_eq!(findings.len(), 2);
        assert!(matches!(&findings[0], Finding::Object(o) if o.document == 2));
        assert!(
            matches!(&findings[1], Finding::Unreadable { document: 3, message } if message.starts_with("document 3: "))
        );
    }
}
