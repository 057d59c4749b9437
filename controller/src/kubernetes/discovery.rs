//! Finds the serin-proxy replicas whose `/metrics` the built-in provider reads
//! (`--proxy-metrics NAMESPACE/SERVICE`): the ready endpoints of the Service's EndpointSlices,
//! on the port named `admin` or `metrics` (else the Service's only port). Read again every
//! few seconds, so replicas that come and go are followed; a replica that stays keeps its
//! scrape history.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::{Api, ListParams};
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::provider::builtin::BuiltinProvider;

/// The label EndpointSlices carry with their Service's name.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Port names taken for the admin endpoint, in order of preference.
const PORT_NAMES: [&str; 2] = ["admin", "metrics"];

/// A Service whose endpoints are serin-proxy admin listeners.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyService {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl std::str::FromStr for ProxyService {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<ProxyService, String> {
        match s.split_once('/') {
            Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() => {
                Ok(ProxyService {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                })
            }
            _ => Err(format!("{s:?}: expected NAMESPACE/SERVICE")),
        }
    }
}

impl std::fmt::Display for ProxyService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The `HOST:PORT` admin addresses of the ready endpoints in `slices`.
pub fn addresses(slices: &[EndpointSlice]) -> Vec<String> {
    let mut out = Vec::new();
    for slice in slices {
        let ports = slice.ports.as_deref().unwrap_or_default();
        let port = PORT_NAMES
            .iter()
            .find_map(|want| ports.iter().find(|p| p.name.as_deref() == Some(want)))
            .or(match ports {
                [only] => Some(only),
                _ => None,
            })
            .and_then(|p| p.port);
        let Some(port) = port else {
            continue;
        };
        for endpoint in &slice.endpoints {
            // Absent `ready` means ready (the API's own reading).
            if endpoint.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            for address in &endpoint.addresses {
                let host = if address.contains(':') {
                    format!("[{address}]")
                } else {
                    address.clone()
                };
                out.push(format!("{host}:{port}"));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Reads the Service's EndpointSlices once and hands their addresses to `provider`.
pub async fn refresh(
    client: &Client,
    service: &ProxyService,
    provider: &BuiltinProvider,
) -> Result<Vec<String>> {
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), &service.namespace)
        .list(&ListParams::default().labels(&format!("{SERVICE_NAME_LABEL}={}", service.name)))
        .await
        .map_err(|source| Error::Kube {
            what: format!("listing the EndpointSlices of Service {service} (--proxy-metrics)"),
            source: Box::new(source),
        })?;
    let found = addresses(&slices.items);
    provider
        .set_addresses(&found)
        .map_err(|e| Error::Cluster(format!("--proxy-metrics {service}: {e}")))?;
    Ok(found)
}

/// Follows the Service's endpoints every `period`, forever (spawn it).
pub async fn follow(
    client: Client,
    service: ProxyService,
    provider: Arc<BuiltinProvider>,
    period: Duration,
) {
    let mut last: Option<Vec<String>> = None;
    loop {
        match refresh(&client, &service, &provider).await {
            Ok(found) if last.as_ref() != Some(&found) => {
                if found.is_empty() {
                    warn!(service = %service, "no ready serin-proxy endpoint behind --proxy-metrics");
                } else {
                    info!(service = %service, replicas = ?found, "serin-proxy replicas");
                }
                last = Some(found);
            }
            Ok(_) => {}
            Err(e) => warn!("{e}"),
        }
        tokio::time::sleep(period).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};

    fn slice(ports: &[(&str, i32)], endpoints: &[(&str, Option<bool>)]) -> EndpointSlice {
        EndpointSlice {
            address_type: "IPv4".into(),
            ports: Some(
                ports
                    .iter()
                    .map(|(name, port)| EndpointPort {
                        name: Some((*name).into()),
                        port: Some(*port),
                        ..Default::default()
                    })
                    .collect(),
            ),
            endpoints: endpoints
                .iter()
                .map(|(address, ready)| Endpoint {
                    addresses: vec![(*address).into()],
                    conditions: Some(EndpointConditions {
                        ready: *ready,
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn ready_endpoints_on_the_admin_port_only() {
        let slices = [
            slice(
                &[("http", 80), ("admin", 9090)],
                &[
                    ("10.0.0.2", Some(true)),
                    ("10.0.0.1", None),
                    ("10.0.0.3", Some(false)),
                ],
            ),
            slice(&[("metrics", 9100)], &[("fd00::1", Some(true))]),
            slice(&[("only", 7000)], &[("10.0.0.9", Some(true))]),
            slice(&[("http", 80), ("https", 443)], &[("10.0.0.8", Some(true))]),
        ];
        assert_eq!(
            addresses(&slices),
            [
                "10.0.0.1:9090",
                "10.0.0.2:9090",
                "10.0.0.9:7000",
                "[fd00::1]:9100"
            ]
        );
    }

    #[test]
    fn the_flag_names_namespace_and_service() {
        let s: ProxyService = "serin-system/serin-proxy-admin".parse().unwrap();
        assert_eq!(s.to_string(), "serin-system/serin-proxy-admin");
        for bad in ["serin-proxy", "/x", "x/", ""] {
            assert!(bad.parse::<ProxyService>().is_err(), "{bad}");
        }
    }
}
