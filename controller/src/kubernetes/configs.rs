//! Config tracking: the ConfigMaps and Secrets a target's pod template uses are part of what a
//! release releases, as in Flagger.
//!
//! A pod template refers to a config through volumes (`configMap`, `secret`, `projected`
//! sources), `env[].valueFrom` (`configMapKeyRef`, `secretKeyRef`) and `envFrom`, in containers
//! and init containers alike. Each referenced config is hashed into the target's
//! [`Revision`](crate::stage::Revision) (`status.trackedConfigs`, keyed `configmap/<name>` and
//! `secret/<name>`), so changing a ConfigMap alone starts a release. The primary runs on copies
//! named `<name>-primary`, owned by the Canary and written at bootstrap and at promotion, and
//! its pod template refers to those copies: the primary keeps the configuration it was
//! promoted with while the canary tries the new one.
//!
//! A config annotated `flagger.app/config-tracking: disabled` is not tracked (the primary
//! shares it with the canary). A reference marked `optional` to a config that does not exist
//! is left alone; a required one that does not exist is an error naming it.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::Hasher;

use k8s_openapi::api::core::v1::{ConfigMap, PodSpec, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::error::{Error, Result};

use super::workload::FIELD_MANAGER;

/// The annotation that opts a ConfigMap or Secret out of tracking (Flagger's).
pub const TRACKING_ANNOTATION: &str = "flagger.app/config-tracking";

/// The kind of a tracked config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConfigKind {
    /// A ConfigMap.
    ConfigMap,
    /// A Secret.
    Secret,
}

impl ConfigKind {
    /// `configmap` or `secret`: the prefix of its key in `status.trackedConfigs`.
    pub fn key_prefix(self) -> &'static str {
        match self {
            ConfigKind::ConfigMap => "configmap",
            ConfigKind::Secret => "secret",
        }
    }

    /// `ConfigMap` or `Secret`.
    pub fn kind(self) -> &'static str {
        match self {
            ConfigKind::ConfigMap => "ConfigMap",
            ConfigKind::Secret => "Secret",
        }
    }
}

/// A config a pod template refers to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConfigRef {
    /// ConfigMap or Secret.
    pub kind: ConfigKind,
    /// Its name.
    pub name: String,
    /// Whether every reference to it is marked `optional`.
    pub optional: bool,
}

/// Calls `f` with the kind, name and `optional` flag of every config reference in `spec`.
fn each_reference(spec: &mut PodSpec, mut f: impl FnMut(ConfigKind, &mut String, Option<bool>)) {
    for volume in spec.volumes.iter_mut().flatten() {
        if let Some(c) = &mut volume.config_map {
            f(ConfigKind::ConfigMap, &mut c.name, c.optional);
        }
        if let Some(s) = &mut volume.secret
            && let Some(name) = &mut s.secret_name
        {
            f(ConfigKind::Secret, name, s.optional);
        }
        for source in volume
            .projected
            .iter_mut()
            .flat_map(|p| p.sources.iter_mut().flatten())
        {
            if let Some(c) = &mut source.config_map {
                f(ConfigKind::ConfigMap, &mut c.name, c.optional);
            }
            if let Some(s) = &mut source.secret {
                f(ConfigKind::Secret, &mut s.name, s.optional);
            }
        }
    }
    let containers = spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten());
    for container in containers {
        for from in container
            .env
            .iter_mut()
            .flatten()
            .filter_map(|e| e.value_from.as_mut())
        {
            if let Some(c) = &mut from.config_map_key_ref {
                f(ConfigKind::ConfigMap, &mut c.name, c.optional);
            }
            if let Some(s) = &mut from.secret_key_ref {
                f(ConfigKind::Secret, &mut s.name, s.optional);
            }
        }
        for from in container.env_from.iter_mut().flatten() {
            if let Some(c) = &mut from.config_map_ref {
                f(ConfigKind::ConfigMap, &mut c.name, c.optional);
            }
            if let Some(s) = &mut from.secret_ref {
                f(ConfigKind::Secret, &mut s.name, s.optional);
            }
        }
    }
}

/// Every config `spec` refers to, each once (optional only when every reference is).
pub fn references(spec: &PodSpec) -> Vec<ConfigRef> {
    let mut found: BTreeMap<(ConfigKind, String), bool> = BTreeMap::new();
    each_reference(&mut spec.clone(), |kind, name, optional| {
        if name.is_empty() {
            return;
        }
        let optional = optional.unwrap_or(false);
        found
            .entry((kind, name.clone()))
            .and_modify(|o| *o &= optional)
            .or_insert(optional);
    });
    found
        .into_iter()
        .map(|((kind, name), optional)| ConfigRef {
            kind,
            name,
            optional,
        })
        .collect()
}

/// A tracked config as read from the cluster.
#[derive(Clone, Debug)]
pub struct Tracked {
    /// ConfigMap or Secret.
    pub kind: ConfigKind,
    /// Its name.
    pub name: String,
    /// The hash of its content.
    pub hash: String,
    /// Its content, as the primary's copy carries it.
    content: serde_json::Value,
}

impl Tracked {
    /// Its key in `status.trackedConfigs`: `configmap/<name>` or `secret/<name>`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.kind.key_prefix(), self.name)
    }
}

/// The configs a target tracks, read from the cluster.
#[derive(Clone, Debug, Default)]
pub struct TrackedConfigs {
    /// By key (`configmap/<name>`).
    pub configs: BTreeMap<String, Tracked>,
}

impl TrackedConfigs {
    /// Reads the configs `spec` refers to in `namespace`.
    pub async fn read(client: &Client, namespace: &str, spec: &PodSpec) -> Result<TrackedConfigs> {
        let mut configs = BTreeMap::new();
        for reference in references(spec) {
            let read = match reference.kind {
                ConfigKind::ConfigMap => read_config_map(client, namespace, &reference.name).await,
                ConfigKind::Secret => read_secret(client, namespace, &reference.name).await,
            }?;
            let tracked = match read {
                Some(tracked) => tracked,
                None if reference.optional => continue,
                None => {
                    return Err(Error::Cluster(format!(
                        "{} {namespace}/{}, which the target's pod template uses, not found",
                        reference.kind.kind(),
                        reference.name
                    )));
                }
            };
            if let Some(tracked) = tracked {
                configs.insert(tracked.key(), tracked);
            }
        }
        Ok(TrackedConfigs { configs })
    }

    /// `status.trackedConfigs`: hash by key.
    pub fn hashes(&self) -> BTreeMap<String, String> {
        self.configs
            .iter()
            .map(|(key, t)| (key.clone(), t.hash.clone()))
            .collect()
    }

    /// One hash of every tracked config's hash.
    pub fn digest(&self) -> String {
        hash_of(&json!(self.hashes()))
    }

    /// The keys (`configmap/<name>`), for routing watch events to the Canaries that track them.
    pub fn keys(&self) -> BTreeSet<String> {
        self.configs.keys().cloned().collect()
    }

    /// Points `spec`'s references to tracked configs at their primary copies.
    pub fn rewrite_for_primary(&self, spec: &mut PodSpec) {
        each_reference(spec, |kind, name, _| {
            if self
                .configs
                .contains_key(&format!("{}/{name}", kind.key_prefix()))
            {
                *name = format!("{name}-primary");
            }
        });
    }

    /// Writes (server-side apply) the primary copy `<name>-primary` of every tracked config,
    /// owned by `owner`.
    pub async fn copy_to_primary(
        &self,
        client: &Client,
        namespace: &str,
        owner: &OwnerReference,
    ) -> Result<()> {
        for tracked in self.configs.values() {
            let name = format!("{}-primary", tracked.name);
            let mut object = tracked.content.clone();
            object["apiVersion"] = json!("v1");
            object["kind"] = json!(tracked.kind.kind());
            object["metadata"] = serde_json::to_value(ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.to_owned()),
                owner_references: Some(vec![owner.clone()]),
                ..Default::default()
            })
            .map_err(|e| Error::Cluster(e.to_string()))?;
            let params = PatchParams::apply(FIELD_MANAGER).force();
            let what = format!("applying {} {namespace}/{name}", tracked.kind.kind());
            let result = match tracked.kind {
                ConfigKind::ConfigMap => Api::<ConfigMap>::namespaced(client.clone(), namespace)
                    .patch(&name, &params, &Patch::Apply(&object))
                    .await
                    .map(drop),
                ConfigKind::Secret => Api::<Secret>::namespaced(client.clone(), namespace)
                    .patch(&name, &params, &Patch::Apply(&object))
                    .await
                    .map(drop),
            };
            result.map_err(|source| Error::Kube {
                what,
                source: Box::new(source),
            })?;
        }
        Ok(())
    }
}

fn opted_out(meta: &ObjectMeta) -> bool {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(TRACKING_ANNOTATION))
        .is_some_and(|v| v == "disabled")
}

fn hash_of(content: &serde_json::Value) -> String {
    // serde_json's maps are ordered (BTreeMap), so equal content hashes equally.
    let mut hasher = fnv::FnvHasher::default();
    hasher.write(content.to_string().as_bytes());
    format!("{:016x}", hasher.finish())
}

/// `None`: not found; `Some(None)`: found but not tracked.
async fn read_config_map(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<Option<Tracked>>> {
    let found = Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|source| Error::Kube {
            what: format!("reading ConfigMap {namespace}/{name}"),
            source: Box::new(source),
        })?;
    Ok(found.map(|c| {
        if opted_out(&c.metadata) {
            return None;
        }
        let content = json!({ "data": c.data, "binaryData": c.binary_data });
        Some(Tracked {
            kind: ConfigKind::ConfigMap,
            name: c.name_any(),
            hash: hash_of(&content),
            content,
        })
    }))
}

async fn read_secret(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<Option<Tracked>>> {
    let found = Api::<Secret>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|source| Error::Kube {
            what: format!("reading Secret {namespace}/{name}"),
            source: Box::new(source),
        })?;
    Ok(found.map(|s| {
        // Service-account tokens belong to their account, not to a release.
        if opted_out(&s.metadata)
            || s.type_.as_deref() == Some("kubernetes.io/service-account-token")
        {
            return None;
        }
        let content = json!({ "data": s.data, "type": s.type_ });
        Some(Tracked {
            kind: ConfigKind::Secret,
            name: s.name_any(),
            hash: hash_of(&content),
            content,
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMapEnvSource, ConfigMapKeySelector, ConfigMapProjection, ConfigMapVolumeSource,
        Container, EnvFromSource, EnvVar, EnvVarSource, ProjectedVolumeSource, SecretKeySelector,
        SecretVolumeSource, Volume, VolumeProjection,
    };

    fn spec() -> PodSpec {
        PodSpec {
            volumes: Some(vec![
                Volume {
                    name: "a".into(),
                    config_map: Some(ConfigMapVolumeSource {
                        name: "files".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                Volume {
                    name: "b".into(),
                    secret: Some(SecretVolumeSource {
                        secret_name: Some("tls".into()),
                        optional: Some(true),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                Volume {
                    name: "c".into(),
                    projected: Some(ProjectedVolumeSource {
                        sources: Some(vec![VolumeProjection {
                            config_map: Some(ConfigMapProjection {
                                name: "projected".into(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }]),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ]),
            init_containers: Some(vec![Container {
                name: "init".into(),
                env_from: Some(vec![EnvFromSource {
                    config_map_ref: Some(ConfigMapEnvSource {
                        name: "init-env".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }]),
            containers: vec![Container {
                name: "app".into(),
                env: Some(vec![
                    EnvVar {
                        name: "A".into(),
                        value_from: Some(EnvVarSource {
                            config_map_key_ref: Some(ConfigMapKeySelector {
                                name: "files".into(),
                                key: "a".into(),
                                optional: Some(true),
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    EnvVar {
                        name: "B".into(),
                        value_from: Some(EnvVarSource {
                            secret_key_ref: Some(SecretKeySelector {
                                name: "token".into(),
                                key: "t".into(),
                                optional: None,
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn every_kind_of_reference_is_found_once_and_optional_only_if_always() {
        let found: Vec<(ConfigKind, String, bool)> = references(&spec())
            .into_iter()
            .map(|r| (r.kind, r.name, r.optional))
            .collect();
        assert_eq!(
            found,
            vec![
                (ConfigKind::ConfigMap, "files".into(), false),
                (ConfigKind::ConfigMap, "init-env".into(), false),
                (ConfigKind::ConfigMap, "projected".into(), false),
                (ConfigKind::Secret, "tls".into(), true),
                (ConfigKind::Secret, "token".into(), false),
            ]
        );
    }

    #[test]
    fn only_tracked_references_move_to_the_primary_copies() {
        let tracked = |kind, name: &str| Tracked {
            kind,
            name: name.into(),
            hash: "h".into(),
            content: json!({}),
        };
        let configs = TrackedConfigs {
            configs: [
                tracked(ConfigKind::ConfigMap, "files"),
                tracked(ConfigKind::ConfigMap, "init-env"),
                tracked(ConfigKind::Secret, "token"),
            ]
            .into_iter()
            .map(|t| (t.key(), t))
            .collect(),
        };
        let mut spec = spec();
        configs.rewrite_for_primary(&mut spec);
        let names: Vec<(ConfigKind, String, bool)> = references(&spec)
            .into_iter()
            .map(|r| (r.kind, r.name, r.optional))
            .collect();
        assert_eq!(
            names,
            vec![
                (ConfigKind::ConfigMap, "files-primary".into(), false),
                (ConfigKind::ConfigMap, "init-env-primary".into(), false),
                // Not tracked (opted out, or a missing optional one): shared.
                (ConfigKind::ConfigMap, "projected".into(), false),
                (ConfigKind::Secret, "tls".into(), true),
                (ConfigKind::Secret, "token-primary".into(), false),
            ]
        );
    }

    #[test]
    fn equal_content_hashes_equally_and_any_change_differs() {
        let a = json!({"data": {"x": "1", "y": "2"}});
        let b: serde_json::Value =
            serde_json::from_str(r#"{"data": {"y": "2", "x": "1"}}"#).unwrap();
        assert_eq!(hash_of(&a), hash_of(&b));
        assert_ne!(hash_of(&a), hash_of(&json!({"data": {"x": "1", "y": "3"}})));
    }
}
