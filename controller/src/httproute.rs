//! Writes a [`Route`] as the Gateway API `HTTPRoute` serin-proxy serves — the same object in
//! Kubernetes and in a standalone routing directory.
//!
//! Rules, in order (the proxy's precedence puts header-matching rules first anyway):
//!
//! 1. session affinity: requests carrying the release cookie go to the canary (`Pin`), or to the
//!    primary with the cookie expired (`Expire`), as Flagger writes it;
//! 2. A/B testing: requests matching any of the conditions are split primary/canary;
//! 3. everything else: the weighted split (primary only when there are A/B conditions), with a
//!    `RequestMirror` filter to the canary when mirroring. Weights are basis points out of
//!    10000; the mirrored share is the fraction `bp/10000`.

use gateway_api::experimental::httproutes::{
    HttpRoute, HttpRouteParentRefs, HttpRouteRules, HttpRouteRulesBackendRefs,
    HttpRouteRulesBackendRefsFilters, HttpRouteRulesBackendRefsFiltersResponseHeaderModifier,
    HttpRouteRulesBackendRefsFiltersResponseHeaderModifierAdd,
    HttpRouteRulesBackendRefsFiltersType, HttpRouteRulesFilters,
    HttpRouteRulesFiltersRequestMirror, HttpRouteRulesFiltersRequestMirrorBackendRef,
    HttpRouteRulesFiltersRequestMirrorFraction, HttpRouteRulesFiltersType, HttpRouteRulesMatches,
    HttpRouteRulesMatchesHeaders, HttpRouteRulesMatchesHeadersType, HttpRouteRulesMatchesMethod,
    HttpRouteRulesMatchesPath, HttpRouteRulesMatchesPathType, HttpRouteRulesMatchesQueryParams,
    HttpRouteRulesMatchesQueryParamsType, HttpRouteSpec,
};
use kube::api::ObjectMeta;

use crate::route::{CookieAffinity, Route, RouteMatch, ValueMatch};
use crate::weight::Weight;

/// A reference to one side of the split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendTarget {
    /// API group: `""` for a Service, `serin.dev` for a Backend.
    pub group: String,
    /// `Service` or `Backend`.
    pub kind: String,
    pub name: String,
    pub port: Option<i32>,
}

impl BackendTarget {
    /// A `serin.dev/Backend` (standalone mode).
    pub fn backend(name: impl Into<String>) -> BackendTarget {
        BackendTarget {
            group: "serin.dev".into(),
            kind: "Backend".into(),
            name: name.into(),
            port: None,
        }
    }

    /// A Kubernetes `Service` port.
    pub fn service(name: impl Into<String>, port: i32) -> BackendTarget {
        BackendTarget {
            group: String::new(),
            kind: "Service".into(),
            name: name.into(),
            port: Some(port),
        }
    }
}

/// Where a canary's route is attached and what it splits.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteTarget {
    pub name: String,
    pub namespace: String,
    pub parent_refs: Vec<HttpRouteParentRefs>,
    pub hostnames: Vec<String>,
    pub primary: BackendTarget,
    pub canary: BackendTarget,
}

impl RouteTarget {
    /// The route of a Canary named `name` in `namespace` whose spec.service is `service`:
    /// attached to its `gatewayRefs`, for its `hosts`, splitting between `primary` and
    /// `canary`. Standalone mode and the controller both build their target with it.
    pub fn for_service(
        name: String,
        namespace: String,
        service: Option<&crate::canary::ServiceSpec>,
        primary: BackendTarget,
        canary: BackendTarget,
    ) -> RouteTarget {
        RouteTarget {
            name,
            namespace,
            parent_refs: service
                .map(|s| {
                    s.gateway_refs
                        .iter()
                        .map(|g| HttpRouteParentRefs {
                            group: g.group.clone(),
                            kind: g.kind.clone(),
                            name: g.name.clone().unwrap_or_default(),
                            namespace: g.namespace.clone(),
                            section_name: g.section_name.clone(),
                            port: g.port.and_then(|p| i32::try_from(p).ok()),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            hostnames: service.map(|s| s.hosts.clone()).unwrap_or_default(),
            primary,
            canary,
        }
    }
}

/// The HTTPRoute for `route`.
pub fn render(target: &RouteTarget, route: &Route) -> HttpRoute {
    let mut rules = Vec::new();
    match &route.session_affinity {
        Some(affinity @ CookieAffinity::Pin { .. }) => {
            rules.push(cookie_rule(
                affinity,
                backend_ref(&target.canary, Weight::FULL, None),
            ));
        }
        Some(
            affinity @ CookieAffinity::Expire {
                cookie_name,
                cookie_value,
            },
        ) => {
            let expire = format!("{cookie_name}={cookie_value}; Max-Age=-1");
            rules.push(cookie_rule(
                affinity,
                backend_ref(&target.primary, Weight::FULL, Some(expire)),
            ));
        }
        None => {}
    }
    let pin_cookie = match &route.session_affinity {
        Some(CookieAffinity::Pin {
            cookie_name,
            cookie_value,
            max_age,
        }) => Some(format!("{cookie_name}={cookie_value}; Max-Age={max_age}")),
        _ => None,
    };
    let split = vec![
        backend_ref(&target.primary, route.primary_weight, None),
        backend_ref(&target.canary, route.canary_weight, pin_cookie),
    ];
    let mirror = route
        .mirror
        .map(|share| mirror_filter(&target.canary, share));
    match &route.matches {
        Some(matches) => {
            rules.push(HttpRouteRules {
                matches: Some(matches.iter().map(route_match).collect()),
                backend_refs: Some(split),
                ..Default::default()
            });
            rules.push(HttpRouteRules {
                backend_refs: Some(vec![backend_ref(&target.primary, Weight::FULL, None)]),
                filters: mirror.map(|m| vec![m]),
                ..Default::default()
            });
        }
        None => rules.push(HttpRouteRules {
            backend_refs: Some(split),
            filters: mirror.map(|m| vec![m]),
            ..Default::default()
        }),
    }
    HttpRoute {
        metadata: ObjectMeta {
            name: Some(target.name.clone()),
            namespace: Some(target.namespace.clone()),
            ..Default::default()
        },
        spec: HttpRouteSpec {
            parent_refs: Some(target.parent_refs.clone()),
            hostnames: (!target.hostnames.is_empty()).then(|| target.hostnames.clone()),
            rules: Some(rules),
            ..Default::default()
        },
        status: None,
    }
}

fn backend_ref(
    b: &BackendTarget,
    weight: Weight,
    set_cookie: Option<String>,
) -> HttpRouteRulesBackendRefs {
    HttpRouteRulesBackendRefs {
        group: Some(b.group.clone()),
        kind: Some(b.kind.clone()),
        name: b.name.clone(),
        port: b.port,
        weight: Some(i32::from(weight.basis_points())),
        filters: set_cookie.map(|value| {
            vec![HttpRouteRulesBackendRefsFilters {
                r#type: HttpRouteRulesBackendRefsFiltersType::ResponseHeaderModifier,
                response_header_modifier: Some(
                    HttpRouteRulesBackendRefsFiltersResponseHeaderModifier {
                        add: Some(vec![
                            HttpRouteRulesBackendRefsFiltersResponseHeaderModifierAdd {
                                name: "Set-Cookie".into(),
                                value,
                            },
                        ]),
                        ..Default::default()
                    },
                ),
                ..Default::default()
            }]
        }),
        ..Default::default()
    }
}

fn cookie_rule(affinity: &CookieAffinity, to: HttpRouteRulesBackendRefs) -> HttpRouteRules {
    HttpRouteRules {
        matches: Some(vec![HttpRouteRulesMatches {
            path: Some(HttpRouteRulesMatchesPath {
                r#type: Some(HttpRouteRulesMatchesPathType::PathPrefix),
                value: Some("/".into()),
            }),
            headers: Some(vec![HttpRouteRulesMatchesHeaders {
                name: "Cookie".into(),
                r#type: Some(HttpRouteRulesMatchesHeadersType::RegularExpression),
                value: affinity.cookie_header_regex(),
            }]),
            ..Default::default()
        }]),
        backend_refs: Some(vec![to]),
        ..Default::default()
    }
}

fn mirror_filter(canary: &BackendTarget, share: Weight) -> HttpRouteRulesFilters {
    HttpRouteRulesFilters {
        r#type: HttpRouteRulesFiltersType::RequestMirror,
        request_mirror: Some(HttpRouteRulesFiltersRequestMirror {
            backend_ref: HttpRouteRulesFiltersRequestMirrorBackendRef {
                group: Some(canary.group.clone()),
                kind: Some(canary.kind.clone()),
                name: canary.name.clone(),
                port: canary.port,
                ..Default::default()
            },
            fraction: Some(HttpRouteRulesFiltersRequestMirrorFraction {
                numerator: i32::from(share.basis_points()),
                denominator: Some(10_000),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A/B conditions: Gateway API matches headers and query parameters exactly or by regular
/// expression, so prefix and suffix conditions become anchored expressions.
fn route_match(m: &RouteMatch) -> HttpRouteRulesMatches {
    let value = |v: &ValueMatch| -> (bool, String) {
        match v {
            ValueMatch::Exact(s) => (false, s.clone()),
            ValueMatch::Prefix(s) => (true, format!("{}.*", regex::escape(s))),
            ValueMatch::Suffix(s) => (true, format!(".*{}", regex::escape(s))),
            ValueMatch::Regex(s) => (true, s.clone()),
        }
    };
    HttpRouteRulesMatches {
        path: m.path.as_ref().map(|p| match p {
            ValueMatch::Exact(s) => HttpRouteRulesMatchesPath {
                r#type: Some(HttpRouteRulesMatchesPathType::Exact),
                value: Some(s.clone()),
            },
            ValueMatch::Prefix(s) => HttpRouteRulesMatchesPath {
                r#type: Some(HttpRouteRulesMatchesPathType::PathPrefix),
                value: Some(s.clone()),
            },
            other => HttpRouteRulesMatchesPath {
                r#type: Some(HttpRouteRulesMatchesPathType::RegularExpression),
                value: Some(value(other).1),
            },
        }),
        method: m.method.as_deref().and_then(|method| {
            serde_json::from_value::<HttpRouteRulesMatchesMethod>(serde_json::Value::String(
                method.to_ascii_uppercase(),
            ))
            .ok()
        }),
        headers: (!m.headers.is_empty()).then(|| {
            m.headers
                .iter()
                .map(|h| {
                    let (regex, value) = value(&h.value);
                    HttpRouteRulesMatchesHeaders {
                        name: h.name.clone(),
                        r#type: Some(if regex {
                            HttpRouteRulesMatchesHeadersType::RegularExpression
                        } else {
                            HttpRouteRulesMatchesHeadersType::Exact
                        }),
                        value,
                    }
                })
                .collect()
        }),
        query_params: (!m.query_params.is_empty()).then(|| {
            m.query_params
                .iter()
                .map(|q| {
                    let (regex, value) = value(&q.value);
                    HttpRouteRulesMatchesQueryParams {
                        name: q.name.clone(),
                        r#type: Some(if regex {
                            HttpRouteRulesMatchesQueryParamsType::RegularExpression
                        } else {
                            HttpRouteRulesMatchesQueryParamsType::Exact
                        }),
                        value,
                    }
                })
                .collect()
        }),
    }
}

#[cfg(test)]
mod tests;
