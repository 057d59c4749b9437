//! Configuration objects: the Gateway API resources and `serin.dev` kinds the proxy serves,
//! and their loading from YAML files.
//!
//! Both configuration sources (files and, later, the Kubernetes API) produce the same
//! [`Objects`] set, which [`crate::table::compile`] turns into a routing table. Every object
//! carries its [`Origin`] so that an error names the file (or API object) it came from.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use gateway_api::experimental::gateways::Gateway;
use gateway_api::experimental::httproutes::HttpRoute;
use serde::Deserialize;
use serde_json::Value;

use crate::error::ConfigError;
use crate::schema::{self, Class};

/// API group of Serin's own kinds.
pub const SERIN_GROUP: &str = "serin.dev";
/// API group of the Gateway API kinds.
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

pub use serin_api::backend::{
    AffinityCookie, AffinityHeader, Backend, BackendEndpoint, BackendSpec, SessionAffinity,
    SessionAffinitySpec,
};

/// Where an object came from, for error messages and status reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Document `document` (0-based) of a YAML file of `documents` documents.
    File {
        path: PathBuf,
        document: usize,
        documents: usize,
    },
    /// The Kubernetes API.
    Kubernetes,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File {
                path,
                document,
                documents,
            } if *document > 0 || *documents > 1 => {
                write!(f, "{} (document {})", path.display(), document + 1)
            }
            Origin::File { path, .. } => write!(f, "{}", path.display()),
            Origin::Kubernetes => f.write_str("kubernetes"),
        }
    }
}

/// An object together with where it came from.
#[derive(Clone, Debug)]
pub struct Sourced<T> {
    pub origin: Origin,
    pub object: T,
}

/// A namespaced object name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Endpoints of a Kubernetes `Service` port, resolved from its `EndpointSlice`s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceEndpoints {
    pub key: ObjectKey,
    /// Service port number as named by `backendRefs[].port`.
    pub port: u16,
    /// Ready endpoints: (host, target port).
    pub endpoints: Vec<BackendEndpoint>,
}

/// Every object the routing table is compiled from.
#[derive(Clone, Debug, Default)]
pub struct Objects {
    pub gateways: Vec<Sourced<Gateway>>,
    pub routes: Vec<Sourced<HttpRoute>>,
    pub backends: Vec<Sourced<Backend>>,
    pub affinities: Vec<Sourced<SessionAffinity>>,
    pub services: Vec<ServiceEndpoints>,
}

/// The files a configuration path stands for: the file itself, or the `*.yaml`, `*.yml` and
/// `*.json` files directly inside a directory, sorted by name.
pub fn config_files(path: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let meta = std::fs::metadata(path).map_err(|source| ConfigError::Io {
        path: path.to_owned(),
        source,
    })?;
    if !meta.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let entries = std::fs::read_dir(path).map_err(|source| ConfigError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        let file = entry.path();
        let is_config = file
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
        // Hidden files are editors' and atomic writers' temporaries.
        let hidden = file
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if is_config && !hidden && file.is_file() {
            files.push(file);
        }
    }
    files.sort();
    Ok(files)
}

/// Loads every object from a file or a directory of files.
///
/// Documents of kinds the proxy does not read are skipped (their count is returned) so that a
/// directory may also hold, say, the `Canary` the routes belong to. Any malformed document, an
/// unknown kind or version of the proxy's groups, or an object with a field its kind's schema
/// does not name, fails the whole load with an error naming the file, object and field.
pub fn load_path(path: &Path) -> Result<(Objects, usize), ConfigError> {
    let mut objects = Objects::default();
    let mut skipped = 0;
    for file in config_files(path)? {
        let text = std::fs::read_to_string(&file).map_err(|source| ConfigError::Io {
            path: file.clone(),
            source,
        })?;
        skipped += parse_documents(&file, &text, &mut objects)?;
    }
    check_duplicates(&objects)?;
    Ok((objects, skipped))
}

/// Parses the YAML documents of one file into `objects`; returns how many were skipped.
pub fn parse_documents(
    file: &Path,
    text: &str,
    objects: &mut Objects,
) -> Result<usize, ConfigError> {
    let mut skipped = 0;
    // Read every document first: errors name the document in a file of several.
    let mut values = Vec::new();
    for (document, de) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(de).map_err(|e| ConfigError::Syntax {
            origin: Origin::File {
                path: file.to_owned(),
                document,
                documents: document + 1,
            },
            message: e.to_string(),
        })?;
        values.push(value);
    }
    let documents = values.len();
    for (document, value) in values.into_iter().enumerate() {
        let origin = Origin::File {
            path: file.to_owned(),
            document,
            documents,
        };
        if value.is_null() {
            continue; // an empty document, e.g. after a trailing `---`
        }
        match parse_document(origin, value)? {
            Some(Parsed::Gateway(g)) => objects.gateways.push(*g),
            Some(Parsed::Route(r)) => objects.routes.push(*r),
            Some(Parsed::Backend(b)) => objects.backends.push(*b),
            Some(Parsed::Affinity(a)) => objects.affinities.push(*a),
            None => skipped += 1,
        }
    }
    Ok(skipped)
}

/// One object of a kind the proxy reads.
#[derive(Debug)]
pub enum Parsed {
    Gateway(Box<Sourced<Gateway>>),
    Route(Box<Sourced<HttpRoute>>),
    Backend(Box<Sourced<Backend>>),
    Affinity(Box<Sourced<SessionAffinity>>),
}

/// Parses one document: `Ok(None)` when it is of a kind the proxy does not read (logged).
///
/// A document of the proxy's groups (`gateway.networking.k8s.io`, `serin.dev`) must be of a
/// known kind and version, and may hold only the fields its kind's schema names (see
/// [`crate::schema`]); anything else is an error naming the field, with the closest known name.
pub fn parse_document(origin: Origin, mut value: Value) -> Result<Option<Parsed>, ConfigError> {
    let Some(map) = value.as_object_mut() else {
        return Err(ConfigError::Syntax {
            origin,
            message: "a document must be a mapping with apiVersion and kind".into(),
        });
    };
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_owned();
    let api_version = text(map.get("apiVersion"));
    let kind = text(map.get("kind"));
    if api_version.is_empty() || kind.is_empty() {
        let mut message = "a document must have apiVersion and kind".to_owned();
        // Name a misspelled key: `knid: HTTPRoute` says more than a missing kind.
        for key in map.keys() {
            if let Some(known) = schema::closest(key, ["apiVersion", "kind"])
                && known != key
            {
                message = format!("{key}: unknown field, did you mean `{known}`? ({message})");
                break;
            }
        }
        return Err(ConfigError::Syntax { origin, message });
    }
    // File mode has no API server to default the namespace.
    let metadata = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Default::default()));
    if let Some(meta) = metadata.as_object_mut() {
        meta.entry("namespace")
            .or_insert_with(|| Value::String("default".into()));
    }
    let name = text(value.pointer("/metadata/name"));
    let namespace = text(value.pointer("/metadata/namespace"));
    let object = format!("{kind} {namespace}/{name}");
    let catalog = schema::catalog().map_err(ConfigError::Schema)?;
    let served = match catalog.classify(&api_version, &kind) {
        Ok(Class::Served(served)) => served,
        Ok(Class::Skipped | Class::Foreign) => {
            tracing::info!(%origin, %object, %api_version, "skipping an object of a kind the proxy does not serve");
            return Ok(None);
        }
        Err(e) => {
            return Err(ConfigError::Object {
                origin,
                object,
                field: e.field.into(),
                message: e.message,
            });
        }
    };
    let mut unknown: Vec<ConfigError> = schema::unknown_fields(&served.schema, &value)
        .into_iter()
        .map(|u| ConfigError::Object {
            origin: origin.clone(),
            object: object.clone(),
            message: u.to_string(),
            field: u.path,
        })
        .collect();
    match unknown.len() {
        0 => {}
        1 => return Err(unknown.remove(0)),
        _ => return Err(ConfigError::Many(unknown)),
    }
    if name.is_empty() {
        return Err(ConfigError::Object {
            origin,
            object,
            field: "metadata.name".into(),
            message: "is required".into(),
        });
    }
    // Controllers write `status`; files serve the spec. An exported object's status may come
    // from another version of the API, so it is not read at all.
    if let Some(map) = value.as_object_mut() {
        map.remove("status");
    }
    let parsed = match kind.as_str() {
        "Gateway" => Parsed::Gateway(Box::new(typed(origin, object, value)?)),
        "HTTPRoute" => Parsed::Route(Box::new(typed(origin, object, value)?)),
        "Backend" => Parsed::Backend(Box::new(typed(origin, object, value)?)),
        "SessionAffinity" => Parsed::Affinity(Box::new(typed(origin, object, value)?)),
        _ => {
            // The catalog serves a kind this loader does not store: a build mistake, reported
            // rather than served partially.
            return Err(ConfigError::Object {
                origin,
                object,
                field: "kind".into(),
                message: "has a schema but no loader".into(),
            });
        }
    };
    Ok(Some(parsed))
}

fn typed<T: serde::de::DeserializeOwned>(
    origin: Origin,
    object: String,
    value: Value,
) -> Result<Sourced<T>, ConfigError> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(object) => Ok(Sourced { origin, object }),
        Err(e) => Err(ConfigError::Object {
            origin,
            object,
            field: e.path().to_string(),
            message: e.into_inner().to_string(),
        }),
    }
}

fn check_duplicates(objects: &Objects) -> Result<(), ConfigError> {
    fn check<'a>(
        kind: &str,
        items: impl Iterator<Item = (ObjectKey, &'a Origin)>,
    ) -> Result<(), ConfigError> {
        let mut seen: BTreeMap<ObjectKey, &Origin> = BTreeMap::new();
        for (key, origin) in items {
            if let Some(first) = seen.insert(key.clone(), origin) {
                return Err(ConfigError::Object {
                    origin: origin.clone(),
                    object: format!("{kind} {key}"),
                    field: "metadata.name".into(),
                    message: format!("duplicate: already defined in {first}"),
                });
            }
        }
        Ok(())
    }
    use kube::ResourceExt;
    check(
        "Gateway",
        objects
            .gateways
            .iter()
            .map(|g| (key_of(&g.object), &g.origin)),
    )?;
    check(
        "HTTPRoute",
        objects
            .routes
            .iter()
            .map(|r| (key_of(&r.object), &r.origin)),
    )?;
    check(
        "SessionAffinity",
        objects
            .affinities
            .iter()
            .map(|a| (key_of(&a.object), &a.origin)),
    )?;
    check(
        "Backend",
        objects.backends.iter().map(|b| {
            (
                ObjectKey::new(
                    b.object.namespace().unwrap_or_default(),
                    b.object.name_any(),
                ),
                &b.origin,
            )
        }),
    )
}

/// The namespaced key of any Kubernetes object (namespace `default` when unset).
pub fn key_of<K: kube::Resource>(object: &K) -> ObjectKey {
    let meta = object.meta();
    ObjectKey::new(
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name.as_deref().unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests;
