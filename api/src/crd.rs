//! CustomResourceDefinitions generated from the Rust types: the one generator of
//! `deploy/crds/` (`serin crds --dir deploy/crds` writes them; a test checks the committed
//! copies against this output).

use kube::CustomResourceExt;

use crate::backend::{Backend, SessionAffinity};
use crate::error::{Error, Result};
use crate::{canary::Canary, template::MetricTemplate};

/// A generated CRD and the file it is committed as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrdFile {
    /// File name under `deploy/crds/`.
    pub file_name: &'static str,
    /// The CRD as YAML.
    pub yaml: String,
}

/// The CRDs of every Serin resource, as YAML documents.
pub fn crd_files() -> Result<Vec<CrdFile>> {
    Ok(vec![
        CrdFile {
            file_name: "canary.yaml",
            yaml: to_yaml("the Canary CRD", &Canary::crd())?,
        },
        CrdFile {
            file_name: "metrictemplate.yaml",
            yaml: to_yaml("the MetricTemplate CRD", &MetricTemplate::crd())?,
        },
        CrdFile {
            file_name: "backend.yaml",
            yaml: to_yaml("the Backend CRD", &Backend::crd())?,
        },
        CrdFile {
            file_name: "sessionaffinity.yaml",
            yaml: to_yaml("the SessionAffinity CRD", &SessionAffinity::crd())?,
        },
    ])
}

/// Every CRD in one multi-document YAML stream.
pub fn crds_yaml() -> Result<String> {
    let docs: Vec<String> = crd_files()?.into_iter().map(|f| f.yaml).collect();
    Ok(docs.join("---\n"))
}

fn to_yaml<T: serde::Serialize>(what: &str, value: &T) -> Result<String> {
    let yaml = serde_yaml_ng::to_string(value).map_err(|source| Error::Serialize {
        what: what.to_owned(),
        source,
    })?;
    Ok(format!(
        "# Generated from serin-api (`serin crds --dir deploy/crds`); do not edit.\n{yaml}"
    ))
}
