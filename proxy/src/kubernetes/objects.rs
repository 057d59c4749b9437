//! Which API objects the proxy serves, as the [`Objects`] set the compiler takes.
//!
//! - GatewayClasses whose `spec.controllerName` is ours (and, when configured, of one name);
//! - Gateways of those classes;
//! - HTTPRoutes with a `parentRef` naming one of those Gateways (other parentRefs are left to
//!   the compiler, which ignores Gateways it does not know);
//! - every `serin.dev` `Backend` and `SessionAffinity`;
//! - every Service port, with the ready endpoints of its EndpointSlices.

use std::collections::{BTreeSet, HashMap};

use gateway_api::experimental::gateways::Gateway;
use gateway_api::experimental::httproutes::{HttpRoute, HttpRouteParentRefs};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::watch::Snapshot;
use crate::config::{
    BackendEndpoint, GATEWAY_GROUP, ObjectKey, Objects, Origin, ServiceEndpoints, Sourced, key_of,
};

/// Label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Which Gateways are ours.
#[derive(Debug, Clone)]
pub struct GatewayFilter {
    /// `GatewayClass.spec.controllerName` that marks a class as ours.
    pub controller_name: String,
    /// When set, only the class of this name.
    pub class: Option<String>,
}

impl GatewayFilter {
    /// Names of the GatewayClasses we serve.
    pub fn classes(&self, snapshot: &Snapshot) -> BTreeSet<String> {
        snapshot
            .classes
            .iter()
            .filter(|c| c.spec.controller_name == self.controller_name)
            .filter_map(|c| c.metadata.name.clone())
            .filter(|name| self.class.as_deref().is_none_or(|wanted| wanted == name))
            .collect()
    }

    /// Keys of the Gateways we serve.
    pub fn gateways(&self, snapshot: &Snapshot) -> BTreeSet<ObjectKey> {
        let classes = self.classes(snapshot);
        snapshot
            .gateways
            .iter()
            .filter(|g| classes.contains(&g.spec.gateway_class_name))
            .map(|g| key_of(g.as_ref()))
            .collect()
    }
}

/// The Gateway a `parentRef` names, if it names a Gateway at all.
pub fn parent_gateway(route_namespace: &str, parent: &HttpRouteParentRefs) -> Option<ObjectKey> {
    let group = parent.group.as_deref().unwrap_or(GATEWAY_GROUP);
    let kind = parent.kind.as_deref().unwrap_or("Gateway");
    (group == GATEWAY_GROUP && kind == "Gateway").then(|| {
        ObjectKey::new(
            parent.namespace.as_deref().unwrap_or(route_namespace),
            parent.name.as_str(),
        )
    })
}

/// Whether any `parentRef` of `route` names one of `gateways`.
pub fn names_any(route: &HttpRoute, gateways: &BTreeSet<ObjectKey>) -> bool {
    let namespace = key_of(route).namespace;
    route
        .spec
        .parent_refs
        .iter()
        .flatten()
        .filter_map(|p| parent_gateway(&namespace, p))
        .any(|g| gateways.contains(&g))
}

/// Builds the objects the proxy serves from a snapshot of the API.
pub fn build(snapshot: &Snapshot, filter: &GatewayFilter) -> Objects {
    let ours = filter.gateways(snapshot);
    let sourced = |object| Sourced {
        origin: Origin::Kubernetes,
        object,
    };
    Objects {
        gateways: snapshot
            .gateways
            .iter()
            .filter(|g| ours.contains(&key_of(g.as_ref())))
            .map(|g| sourced(Gateway::clone(g)))
            .collect(),
        routes: snapshot
            .routes
            .iter()
            .filter(|r| names_any(r, &ours))
            .map(|r| Sourced {
                origin: Origin::Kubernetes,
                object: HttpRoute::clone(r),
            })
            .collect(),
        backends: snapshot
            .backends
            .iter()
            .map(|b| Sourced {
                origin: Origin::Kubernetes,
                object: (**b).clone(),
            })
            .collect(),
        affinities: snapshot
            .affinities
            .iter()
            .map(|a| Sourced {
                origin: Origin::Kubernetes,
                object: (**a).clone(),
            })
            .collect(),
        services: service_endpoints(&snapshot.services, &snapshot.slices),
    }
}

/// One entry per Service port: the ready endpoints of the Service's EndpointSlices, with the
/// slice port of the same name. A port without ready endpoints is listed with none, so that a
/// route to it resolves (and answers 503) rather than reporting a missing backend.
pub fn service_endpoints(
    services: &[std::sync::Arc<Service>],
    slices: &[std::sync::Arc<EndpointSlice>],
) -> Vec<ServiceEndpoints> {
    let mut by_service: HashMap<ObjectKey, Vec<&EndpointSlice>> = HashMap::new();
    for slice in slices {
        let Some(service) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            continue;
        };
        let namespace = slice.metadata.namespace.as_deref().unwrap_or("default");
        by_service
            .entry(ObjectKey::new(namespace, service.as_str()))
            .or_default()
            .push(slice);
    }
    let mut out = Vec::new();
    for service in services {
        let key = key_of(service.as_ref());
        let slices = by_service.get(&key).map(Vec::as_slice).unwrap_or_default();
        let ports = service
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_ref())
            .map(Vec::as_slice)
            .unwrap_or_default();
        for port in ports {
            let Ok(number) = u16::try_from(port.port) else {
                continue;
            };
            let name = port.name.as_deref().unwrap_or_default();
            let mut endpoints: Vec<BackendEndpoint> = Vec::new();
            for slice in slices {
                let Some(target) = slice
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| p.name.as_deref().unwrap_or_default() == name)
                    .and_then(|p| p.port)
                    .and_then(|p| u16::try_from(p).ok())
                else {
                    continue;
                };
                for endpoint in &slice.endpoints {
                    // The spec: a nil `ready` is to be read as ready.
                    let ready = endpoint
                        .conditions
                        .as_ref()
                        .and_then(|c| c.ready)
                        .unwrap_or(true);
                    if !ready {
                        continue;
                    }
                    for address in &endpoint.addresses {
                        let e = BackendEndpoint {
                            host: address.clone(),
                            port: Some(target),
                        };
                        if !endpoints.contains(&e) {
                            endpoints.push(e);
                        }
                    }
                }
            }
            endpoints.sort_by(|a, b| (&a.host, a.port).cmp(&(&b.host, b.port)));
            out.push(ServiceEndpoints {
                key: key.clone(),
                port: number,
                endpoints,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn from_json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Arc<T> {
        Arc::new(serde_json::from_value(v).unwrap())
    }

    fn slice(
        name: &str,
        port_name: Option<&str>,
        port: i32,
        eps: &[(&str, Option<bool>)],
    ) -> Arc<EndpointSlice> {
        from_json(serde_json::json!({
            "metadata": {"name": name, "namespace": "ns", "labels": {SERVICE_NAME_LABEL: "web"}},
            "addressType": "FQDN",
            "ports": [{"name": port_name, "port": port}],
            "endpoints": eps.iter().map(|(a, ready)| serde_json::json!({
                "addresses": [a],
                "conditions": {"ready": ready},
            })).collect::<Vec<_>>(),
        }))
    }

    #[test]
    fn service_ports_resolve_ready_endpoints_by_port_name() {
        let service: Arc<Service> = from_json(serde_json::json!({
            "metadata": {"name": "web", "namespace": "ns"},
            "spec": {"ports": [
                {"name": "http", "port": 80, "targetPort": 8080},
                {"name": "admin", "port": 9000},
            ]},
        }));
        let slices = vec![
            slice(
                "web-a",
                Some("http"),
                8080,
                &[("a.local", Some(true)), ("b.local", Some(false))],
            ),
            slice(
                "web-b",
                Some("http"),
                8080,
                &[("c.local", None), ("a.local", Some(true))],
            ),
            slice("web-c", Some("other"), 1, &[("d.local", Some(true))]),
        ];
        let out = service_endpoints(&[service], &slices);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].key, ObjectKey::new("ns", "web"));
        assert_eq!(out[0].port, 80);
        let hosts: Vec<_> = out[0]
            .endpoints
            .iter()
            .map(|e| (e.host.as_str(), e.port))
            .collect();
        assert_eq!(hosts, [("a.local", Some(8080)), ("c.local", Some(8080))]);
        assert_eq!(out[1].port, 9000);
        assert!(out[1].endpoints.is_empty(), "no slice port named admin");
    }

    #[test]
    fn only_gateways_of_our_classes_and_routes_naming_them_are_served() {
        let class = |name: &str,
                     controller: &str|
         -> Arc<gateway_api::experimental::gatewayclasses::GatewayClass> {
            from_json(serde_json::json!({
                "metadata": {"name": name},
                "spec": {"controllerName": controller},
            }))
        };
        let gateway = |name: &str, class: &str| -> Arc<Gateway> {
            from_json(serde_json::json!({
                "metadata": {"name": name, "namespace": "ns"},
                "spec": {"gatewayClassName": class, "listeners": [{"name": "http", "port": 8080, "protocol": "HTTP"}]},
            }))
        };
        let route = |name: &str, parent: serde_json::Value| -> Arc<HttpRoute> {
            from_json(serde_json::json!({
                "metadata": {"name": name, "namespace": "ns"},
                "spec": {"parentRefs": [parent]},
            }))
        };
        let snapshot = Snapshot {
            classes: vec![
                class("serin", "serin.dev/gateway"),
                class("other", "example.com/gateway"),
                class("serin-b", "serin.dev/gateway"),
            ],
            gateways: vec![
                gateway("a", "serin"),
                gateway("b", "other"),
                gateway("c", "serin-b"),
            ],
            routes: vec![
                route("to-a", serde_json::json!({"name": "a"})),
                route("to-b", serde_json::json!({"name": "b"})),
                route(
                    "to-a-elsewhere",
                    serde_json::json!({"name": "a", "namespace": "other"}),
                ),
                route(
                    "to-service",
                    serde_json::json!({"name": "a", "kind": "Service", "group": ""}),
                ),
                route("to-c", serde_json::json!({"name": "c"})),
            ],
            ..Snapshot::default()
        };
        let filter = GatewayFilter {
            controller_name: "serin.dev/gateway".into(),
            class: Some("serin".into()),
        };
        let objects = build(&snapshot, &filter);
        let names = |keys: Vec<ObjectKey>| keys.into_iter().map(|k| k.name).collect::<Vec<_>>();
        assert_eq!(
            names(objects.gateways.iter().map(|g| key_of(&g.object)).collect()),
            ["a"]
        );
        assert_eq!(
            names(objects.routes.iter().map(|r| key_of(&r.object)).collect()),
            ["to-a"]
        );
        assert!(
            objects
                .gateways
                .iter()
                .all(|g| g.origin == Origin::Kubernetes)
        );

        let all = GatewayFilter {
            class: None,
            ..filter
        };
        let objects = build(&snapshot, &all);
        assert_eq!(
            names(objects.routes.iter().map(|r| key_of(&r.object)).collect()),
            ["to-a", "to-c"]
        );
    }
}
