//! Reading one resource from YAML with errors that name the field (`spec.analysis.interval:
//! ...`), for every front end: `serin validate`, standalone mode, the demo and tests.

use serde::de::DeserializeOwned;
use serde_yaml_ng::Value;

use crate::canary::Canary;
use crate::error::{Error, Result};
use crate::validation::validate_canary;

/// Parses one Canary from YAML, reporting the first schema error with its path.
pub fn parse_canary(yaml: &str) -> Result<Canary> {
    let value: Value = serde_yaml_ng::from_str(yaml).map_err(|source| Error::Yaml {
        document: 1,
        source,
    })?;
    parse_typed(value)
}

/// Parses and validates one Canary from YAML.
pub fn load_canary(yaml: &str) -> Result<Canary> {
    let canary = parse_canary(yaml)?;
    validate_canary(&canary).map_err(Error::Invalid)?;
    Ok(canary)
}

/// Deserialises with the path of the failing field in the error.
pub fn parse_typed<T: DeserializeOwned>(value: Value) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        Error::Schema {
            path: if path == "." {
                "(root)".to_owned()
            } else {
                path
            },
            message: err.into_inner().to_string(),
        }
    })
}
