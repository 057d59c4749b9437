//! Compiles configuration [`Objects`] into a [`RouteTable`]: listeners gathered per port, routes
//! attached to listeners through `parentRefs`, hostnames intersected, regexes built, weights
//! expanded, entries sorted by the Gateway API precedence rules, metric handles resolved.
//!
//! Precedence among matches that all hold (Gateway API `HTTPRouteRule`), most specific first:
//!
//! 1. the most specific hostname: an exact hostname, then the longest wildcard, then none;
//! 2. path: `Exact`, then `RegularExpression`, then `PathPrefix` (each by length, longest first;
//!    the ordering of regular expressions is implementation-specific in the spec);
//! 3. a method match; 4. the most header matches; 5. the most query parameter matches;
//! 6. the oldest route (`creationTimestamp`), then `namespace/name` alphabetically;
//! 7. rule order, then match order within the route.
//!
//! Problems are reported, never silently dropped: a route that cannot be served is left out
//! (`Accepted=False`); a `backendRef` that cannot be resolved stays in the split and its share
//! of requests gets a 500, as the spec requires (`ResolvedRefs=False`). File mode treats every
//! problem as fatal; the Kubernetes source reports them in status instead.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use gateway_api::experimental::gateways::{Gateway, GatewayListenersAllowedRoutesNamespacesFrom};
use gateway_api::experimental::httproutes::{
    HttpRoute, HttpRouteRules, HttpRouteRulesMatches, HttpRouteRulesMatchesHeadersType,
    HttpRouteRulesMatchesPathType, HttpRouteRulesMatchesQueryParamsType,
};
use http::uri::Authority;
use http::{HeaderName, HeaderValue, Method};

use super::affinity::{BucketSource, Sticky};
use super::filters::{Filter, HeaderModifier, MirrorSpec, backend_filter, rule_filter};
use super::matching::{HeaderMatch, PathMatch, QueryMatch, RequestMatch, ValueMatch, anchored};
use super::split::Split;
use super::{
    BackendSummary, BackendTarget, Entry, MirrorPolicy, PortRoutes, RouteTable, Rule, RuleBackend,
    RuleSummary,
};
use crate::config::{
    Backend, BackendEndpoint, GATEWAY_GROUP, ObjectKey, Objects, Origin, SERIN_GROUP,
    SessionAffinity, key_of,
};
use crate::error::ConfigError;
use crate::metrics::{Metrics, Traffic, Unattributed};

/// Largest `backendRefs[].weight` the Gateway API allows.
pub const MAX_WEIGHT: i32 = 1_000_000;

/// Why an object, or part of it, is not served as written. Each reason maps to a Gateway API
/// status condition type and reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A field holds a value the proxy does not support or that is invalid.
    UnsupportedValue,
    /// No listener of the referenced Gateway accepts the route.
    NotAllowedByListeners,
    /// The referenced Gateway (or listener section/port) does not exist.
    NoMatchingParent,
    /// No hostname of the route intersects the listener's.
    NoMatchingListenerHostname,
    /// A `backendRef` names an object that does not exist.
    BackendNotFound,
    /// A `backendRef` names a kind the proxy cannot route to.
    InvalidKind,
    /// A `backendRef` crosses namespaces without a grant.
    RefNotPermitted,
    /// A Gateway listener uses a protocol the proxy does not serve.
    UnsupportedProtocol,
}

impl Reason {
    /// The status condition (type, reason) this problem sets to `False`.
    pub fn condition(self) -> (&'static str, &'static str) {
        match self {
            Reason::UnsupportedValue => ("Accepted", "UnsupportedValue"),
            Reason::NotAllowedByListeners => ("Accepted", "NotAllowedByListeners"),
            Reason::NoMatchingParent => ("Accepted", "NoMatchingParent"),
            Reason::NoMatchingListenerHostname => ("Accepted", "NoMatchingListenerHostname"),
            Reason::BackendNotFound => ("ResolvedRefs", "BackendNotFound"),
            Reason::InvalidKind => ("ResolvedRefs", "InvalidKind"),
            Reason::RefNotPermitted => ("ResolvedRefs", "RefNotPermitted"),
            Reason::UnsupportedProtocol => ("Accepted", "UnsupportedProtocol"),
        }
    }
}

/// Something in the configuration that is not served as written.
#[derive(Debug, Clone)]
pub struct Problem {
    pub origin: Origin,
    /// `Gateway`, `HTTPRoute` or `Backend`.
    pub kind: &'static str,
    pub object: ObjectKey,
    pub field: String,
    pub message: String,
    pub reason: Reason,
}

impl Problem {
    pub fn to_error(&self) -> ConfigError {
        ConfigError::Object {
            origin: self.origin.clone(),
            object: format!("{} {}", self.kind, self.object),
            field: self.field.clone(),
            message: self.message.clone(),
        }
    }
}

/// Compiles `objects` into a table. Problems are returned beside the table (see module docs).
pub fn compile(objects: &Objects, metrics: &Metrics) -> (RouteTable, Vec<Problem>) {
    let mut problems = Vec::new();
    let backends = index_backends(objects, &mut problems);
    let listeners = collect_listeners(objects, &mut problems);
    let mut resolver = Resolver {
        backends,
        affinities: objects
            .affinities
            .iter()
            .map(|a| (key_of(&a.object), &a.object))
            .collect(),
        services: objects
            .services
            .iter()
            .map(|s| ((s.key.clone(), s.port), &s.endpoints))
            .collect(),
        targets: HashMap::new(),
        metrics,
    };

    // Spec order among routes: oldest first, then namespace/name.
    let mut routes: Vec<_> = objects.routes.iter().collect();
    routes.sort_by_cached_key(|r| {
        (
            // Objects without a timestamp (files) sort after those with one, by name.
            r.object
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0)
                .map_or((1, None), |t| (0, Some(t))),
            key_of(&r.object),
        )
    });

    let mut ports: BTreeMap<u16, Vec<Candidate>> = BTreeMap::new();
    for (order, sourced) in routes.into_iter().enumerate() {
        let route = &sourced.object;
        let key = key_of(route);
        let mut report = |field: String, message: String, reason: Reason| {
            problems.push(Problem {
                origin: sourced.origin.clone(),
                kind: "HTTPRoute",
                object: key.clone(),
                field,
                message,
                reason,
            })
        };
        let attachments = match attach(route, &key, &listeners) {
            Ok(a) => a,
            Err((field, message, reason)) => {
                report(field, message, reason);
                continue;
            }
        };
        let name: Arc<str> = key.to_string().into();
        let mut compiled = Vec::new();
        let mut failed = false;
        for (r, rule) in route.spec.rules.iter().flatten().enumerate() {
            let field = format!("spec.rules[{r}]");
            match compile_rule(
                rule,
                &field,
                &mut RuleContext {
                    route: &name,
                    namespace: &key.namespace,
                    resolver: &mut resolver,
                    report: &mut report,
                },
            ) {
                Ok(c) => compiled.push(c),
                Err((field, message)) => {
                    report(field, message, Reason::UnsupportedValue);
                    failed = true;
                }
            }
        }
        if failed {
            continue;
        }
        for (rule_index, (rule, matches)) in compiled.into_iter().enumerate() {
            for (match_index, (matcher, specificity)) in matches.into_iter().enumerate() {
                for (port, host) in &attachments {
                    ports.entry(*port).or_default().push(Candidate {
                        host: host.clone(),
                        order: (Reverse(specificity), order, rule_index, match_index),
                        entry: Entry {
                            matcher: matcher.clone(),
                            rule: rule.clone(),
                        },
                    });
                }
            }
        }
    }
    // A listener with no route still listens (and answers 404).
    for l in &listeners {
        ports.entry(l.port).or_default();
    }

    let mut table = RouteTable::default();
    for (port, mut candidates) in ports {
        candidates.sort_by(|a, b| (&a.host, a.order).cmp(&(&b.host, b.order)));
        table
            .summary
            .extend(candidates.iter().map(|c| summarize(port, c)));
        table.ports.insert(port, build_port(&candidates));
    }
    (table, problems)
}

/// How a hostname constrains an entry; ordered most specific first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum HostKey {
    Exact(String),
    /// The suffix with its leading dot: `.example.com` for `*.example.com`.
    Wildcard(Reverse<usize>, String),
    Any,
}

impl HostKey {
    fn parse(hostname: &str) -> HostKey {
        let hostname = hostname.to_ascii_lowercase();
        match hostname.strip_prefix('*') {
            Some(suffix) => HostKey::Wildcard(Reverse(suffix.len()), suffix.to_owned()),
            None => HostKey::Exact(hostname),
        }
    }

    /// Whether every host this key matches is also matched by `other`.
    fn within(&self, other: &HostKey) -> bool {
        match (self, other) {
            (_, HostKey::Any) => true,
            (HostKey::Exact(h), HostKey::Exact(o)) => h == o,
            (HostKey::Exact(h) | HostKey::Wildcard(_, h), HostKey::Wildcard(_, o)) => {
                h.len() > o.len() && h.ends_with(o.as_str())
                    || matches!(self, HostKey::Wildcard(..)) && h == o
            }
            _ => false,
        }
    }

    fn display(&self) -> String {
        match self {
            HostKey::Exact(h) => h.clone(),
            HostKey::Wildcard(_, s) => format!("*{s}"),
            HostKey::Any => "*".into(),
        }
    }
}

/// Path rank, path length, method, header count, query count: larger is more specific.
type Specificity = (u8, usize, bool, usize, usize);
type Order = (Reverse<Specificity>, usize, usize, usize);

struct Candidate {
    host: HostKey,
    order: Order,
    entry: Entry,
}

fn build_port(candidates: &[Candidate]) -> PortRoutes {
    // `candidates` is sorted by host key (exact, wildcards longest first, any), then precedence.
    let hosts: Vec<&HostKey> = {
        let mut h: Vec<_> = candidates.iter().map(|c| &c.host).collect();
        h.dedup();
        h
    };
    let list_for = |host: &HostKey| -> Arc<[Entry]> {
        hosts
            .iter()
            .filter(|other| host.within(other))
            .flat_map(|other| candidates.iter().filter(move |c| &c.host == *other))
            .map(|c| c.entry.clone())
            .collect()
    };
    let mut routes = PortRoutes {
        any: list_for(&HostKey::Any),
        ..PortRoutes::default()
    };
    for host in &hosts {
        match host {
            HostKey::Exact(h) => {
                routes.exact.insert(h.as_str().into(), list_for(host));
            }
            HostKey::Wildcard(_, suffix) => {
                routes
                    .wildcard
                    .insert(suffix.as_str().into(), list_for(host));
            }
            HostKey::Any => {}
        }
    }
    routes
}

fn summarize(port: u16, c: &Candidate) -> RuleSummary {
    let rule = &c.entry.rule;
    let m = &c.entry.matcher;
    let mut matcher = match &m.path {
        PathMatch::Exact(p) => format!("path = {p}"),
        PathMatch::Prefix(p) if p.is_empty() => "path /*".to_owned(),
        PathMatch::Prefix(p) => format!("path {p}/*"),
        PathMatch::Regex(re) => format!("path ~ {}", re.as_str()),
    };
    if let Some(method) = &m.method {
        matcher.push_str(&format!(", method = {method}"));
    }
    for h in &*m.headers {
        matcher.push_str(&format!(", header {}{}", h.name, describe_value(&h.value)));
    }
    for q in &*m.query {
        matcher.push_str(&format!(", query {}{}", q.name, describe_value(&q.value)));
    }
    RuleSummary {
        port,
        hostname: c.host.display(),
        route: rule.route.to_string(),
        rule: c.order.2,
        matcher,
        backends: rule
            .backends
            .iter()
            .map(|b| BackendSummary {
                name: b.name.to_string(),
                weight: b.weight,
                endpoints: b
                    .target
                    .iter()
                    .flat_map(|t| t.endpoints.iter().map(ToString::to_string))
                    .collect(),
                unresolved: b.target.is_none(),
            })
            .collect(),
        timeout_ms: rule.timeout.map(|t| t.as_millis()),
    }
}

fn describe_value(v: &ValueMatch) -> String {
    match v {
        ValueMatch::Exact(v) => format!(" = {v}"),
        ValueMatch::Regex(re) => format!(" ~ {}", re.as_str()),
    }
}

struct Listener {
    gateway: ObjectKey,
    name: String,
    port: u16,
    hostname: Option<HostKey>,
    from: GatewayListenersAllowedRoutesNamespacesFrom,
    allows_http_routes: bool,
}

fn collect_listeners(objects: &Objects, problems: &mut Vec<Problem>) -> Vec<Listener> {
    let mut out = Vec::new();
    for sourced in &objects.gateways {
        let gateway: &Gateway = &sourced.object;
        let key = key_of(gateway);
        for (i, l) in gateway.spec.listeners.iter().enumerate() {
            let mut problem = |field: &str, message: String, reason| {
                problems.push(Problem {
                    origin: sourced.origin.clone(),
                    kind: "Gateway",
                    object: key.clone(),
                    field: format!("spec.listeners[{i}].{field}"),
                    message,
                    reason,
                })
            };
            if l.protocol != "HTTP" {
                problem(
                    "protocol",
                    format!("{:?} is not supported (supported: HTTP)", l.protocol),
                    Reason::UnsupportedProtocol,
                );
                continue;
            }
            let Ok(port) = u16::try_from(l.port)
                .map_err(|_| ())
                .and_then(|p| if p == 0 { Err(()) } else { Ok(p) })
            else {
                problem(
                    "port",
                    format!("must be 1-65535, got {}", l.port),
                    Reason::UnsupportedValue,
                );
                continue;
            };
            let allowed = l.allowed_routes.as_ref();
            let from = allowed
                .and_then(|a| a.namespaces.as_ref())
                .and_then(|n| n.from.clone())
                .unwrap_or(GatewayListenersAllowedRoutesNamespacesFrom::Same);
            let allows_http_routes = allowed.and_then(|a| a.kinds.as_ref()).is_none_or(|kinds| {
                kinds.is_empty()
                    || kinds.iter().any(|k| {
                        k.kind == "HTTPRoute"
                            && k.group.as_deref().is_none_or(|g| g == GATEWAY_GROUP)
                    })
            });
            out.push(Listener {
                gateway: key.clone(),
                name: l.name.clone(),
                port,
                hostname: l.hostname.as_deref().map(HostKey::parse),
                from,
                allows_http_routes,
            });
        }
    }
    out
}

type FieldError = (String, String, Reason);

/// The (port, host key) pairs a route serves, from its `parentRefs` and `hostnames`.
fn attach(
    route: &HttpRoute,
    key: &ObjectKey,
    listeners: &[Listener],
) -> Result<Vec<(u16, HostKey)>, FieldError> {
    let route_hosts: Vec<HostKey> = route
        .spec
        .hostnames
        .iter()
        .flatten()
        .map(|h| HostKey::parse(h))
        .collect();
    let mut out = Vec::new();
    let mut last_error = None;
    for (i, parent) in route.spec.parent_refs.iter().flatten().enumerate() {
        let field = format!("spec.parentRefs[{i}]");
        let group = parent.group.as_deref().unwrap_or(GATEWAY_GROUP);
        let kind = parent.kind.as_deref().unwrap_or("Gateway");
        if group != GATEWAY_GROUP || kind != "Gateway" {
            last_error = Some((
                format!("{field}.kind"),
                format!("{group}/{kind} is not a Gateway"),
                Reason::NoMatchingParent,
            ));
            continue;
        }
        let gateway = ObjectKey::new(
            parent.namespace.as_deref().unwrap_or(&key.namespace),
            parent.name.as_str(),
        );
        let of_gateway: Vec<&Listener> = listeners
            .iter()
            .filter(|l| l.gateway == gateway)
            .filter(|l| parent.section_name.as_deref().is_none_or(|s| s == l.name))
            .filter(|l| parent.port.is_none_or(|p| i32::from(l.port) == p))
            .collect();
        if of_gateway.is_empty() {
            last_error = Some((
                format!("{field}.name"),
                format!(
                    "Gateway {gateway} has no such listener (name, sectionName and port must match a listener)"
                ),
                Reason::NoMatchingParent,
            ));
            continue;
        }
        let mut allowed = 0;
        for l in of_gateway {
            let namespace_ok = match l.from {
                GatewayListenersAllowedRoutesNamespacesFrom::All => true,
                GatewayListenersAllowedRoutesNamespacesFrom::Same => {
                    l.gateway.namespace == key.namespace
                }
                GatewayListenersAllowedRoutesNamespacesFrom::Selector => false,
            };
            if !namespace_ok || !l.allows_http_routes {
                continue;
            }
            allowed += 1;
            let hosts = intersect(l.hostname.as_ref(), &route_hosts);
            if hosts.is_empty() {
                last_error = Some((
                    "spec.hostnames".to_owned(),
                    format!(
                        "no hostname intersects listener {} of Gateway {gateway}",
                        l.name
                    ),
                    Reason::NoMatchingListenerHostname,
                ));
            }
            out.extend(hosts.into_iter().map(|h| (l.port, h)));
        }
        if allowed == 0 {
            last_error = Some((
                format!("{field}.name"),
                format!(
                    "no listener of Gateway {gateway} allows routes from namespace {:?}",
                    key.namespace
                ),
                Reason::NotAllowedByListeners,
            ));
        }
    }
    if out.is_empty() {
        return Err(last_error.unwrap_or_else(|| {
            (
                "spec.parentRefs".to_owned(),
                "the route names no Gateway".to_owned(),
                Reason::NoMatchingParent,
            )
        }));
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The hostnames a route serves on a listener: the more specific of each intersecting pair.
fn intersect(listener: Option<&HostKey>, route: &[HostKey]) -> Vec<HostKey> {
    match (listener, route.is_empty()) {
        (None, true) => vec![HostKey::Any],
        (None, false) => route.to_vec(),
        (Some(l), true) => vec![l.clone()],
        (Some(l), false) => route
            .iter()
            .filter_map(|r| {
                if r.within(l) {
                    Some(r.clone())
                } else if l.within(r) {
                    Some(l.clone())
                } else {
                    None
                }
            })
            .collect(),
    }
}

type CompiledRule = (Arc<Rule>, Vec<(RequestMatch, Specificity)>);

/// The filters of one rule or backendRef, applied.
#[derive(Default)]
struct Filters {
    request: HeaderModifier,
    response: HeaderModifier,
    mirrors: Vec<Arc<MirrorPolicy>>,
    affinity: Option<BucketSource>,
}

impl Filters {
    fn compile<'a>(
        filters: impl Iterator<Item = Result<Filter<'a>, (String, String)>>,
        at: &str,
        ctx: &mut RuleContext<'_, '_>,
        allow_extension: bool,
    ) -> Result<Filters, (String, String)> {
        let mut out = Filters::default();
        for (i, f) in filters.enumerate() {
            let at = format!("{at}.filters[{i}]");
            match f? {
                Filter::RequestHeaders(m) => out.request = out.request.then(&m),
                Filter::ResponseHeaders(m) => out.response = out.response.then(&m),
                Filter::Mirror(m) => {
                    if let Some(policy) = ctx.mirror(&m, &at)? {
                        out.mirrors.push(Arc::new(policy));
                    }
                }
                Filter::Extension { group, kind, name } if allow_extension => {
                    out.affinity = Some(ctx.affinity(group, kind, name, &at)?);
                }
                Filter::Extension { .. } => {
                    return Err((
                        format!("{at}.type"),
                        "ExtensionRef is only supported on rules".to_owned(),
                    ));
                }
            }
        }
        Ok(out)
    }
}

/// What compiling a rule needs from its surroundings.
struct RuleContext<'r, 'a> {
    route: &'r Arc<str>,
    namespace: &'r str,
    resolver: &'r mut Resolver<'a>,
    report: &'r mut dyn FnMut(String, String, Reason),
}

impl RuleContext<'_, '_> {
    /// A mirror policy; `None` (reported) when its backend cannot be resolved.
    fn mirror(
        &mut self,
        m: &MirrorSpec<'_>,
        at: &str,
    ) -> Result<Option<MirrorPolicy>, (String, String)> {
        let (numerator, denominator) = match (m.percent, m.fraction) {
            (Some(_), Some(_)) => {
                return Err((
                    format!("{at}.requestMirror"),
                    "set percent or fraction, not both".to_owned(),
                ));
            }
            (Some(p), None) => (p, 100),
            (None, Some((n, d))) => (n, d.unwrap_or(100)),
            (None, None) => (100, 100),
        };
        if denominator < 1 || numerator < 0 || numerator > denominator {
            return Err((
                format!("{at}.requestMirror"),
                format!(
                    "the mirrored share must be between 0 and 100%, got {numerator}/{denominator}"
                ),
            ));
        }
        let port = match m.port.map(u16::try_from) {
            None => None,
            Some(Ok(p)) if p > 0 => Some(p),
            Some(_) => {
                return Err((
                    format!("{at}.requestMirror.backendRef.port"),
                    "must be 1-65535".to_owned(),
                ));
            }
        };
        let reference = BackendRef {
            group: m.group,
            kind: m.kind,
            key: ObjectKey::new(m.namespace.unwrap_or(self.namespace), m.name),
            port,
        };
        let target = match self.resolver.resolve(&reference, self.namespace) {
            Ok(t) => t,
            Err((sub, message, reason)) => {
                (self.report)(
                    format!("{at}.requestMirror.backendRef{sub}"),
                    message,
                    reason,
                );
                return Ok(None);
            }
        };
        let host = (reference.kind == "Service")
            .then(|| {
                let host = format!(
                    "{}.{}.svc.cluster.local",
                    reference.key.name, reference.key.namespace
                );
                let host = match port {
                    Some(p) if p != 80 => format!("{host}:{p}"),
                    _ => host,
                };
                HeaderValue::try_from(host).ok()
            })
            .flatten();
        Ok(Some(MirrorPolicy {
            metrics: self
                .resolver
                .metrics
                .route_backend(self.route, &target.name, Traffic::mirror),
            target,
            host,
            numerator: numerator as u32,
            denominator: denominator as u32,
            admitted: OnceLock::new(),
        }))
    }

    fn affinity(
        &mut self,
        group: &str,
        kind: &str,
        name: &str,
        at: &str,
    ) -> Result<BucketSource, (String, String)> {
        if group != SERIN_GROUP || kind != "SessionAffinity" {
            return Err((
                format!("{at}.extensionRef"),
                format!(
                    "{group}/{kind} is not a supported extension (use serin.dev/SessionAffinity)"
                ),
            ));
        }
        let key = ObjectKey::new(self.namespace, name);
        let spec = &self
            .resolver
            .affinities
            .get(&key)
            .ok_or_else(|| {
                (
                    format!("{at}.extensionRef.name"),
                    format!("SessionAffinity {key} not found"),
                )
            })?
            .spec;
        match (&spec.cookie, &spec.header) {
            (Some(c), None) => Ok(BucketSource::Cookie {
                name: c.name.as_str().into(),
                max_age_seconds: c.max_age,
            }),
            (None, Some(h)) => HeaderName::from_bytes(h.name.as_bytes())
                .map(|name| BucketSource::Header { name })
                .map_err(|_| {
                    (
                        format!("{at}.extensionRef.name"),
                        format!(
                            "SessionAffinity {key} has an invalid header name {:?}",
                            h.name
                        ),
                    )
                }),
            _ => Err((
                format!("{at}.extensionRef.name"),
                format!("SessionAffinity {key} must set exactly one of cookie and header"),
            )),
        }
    }
}

/// Compiles one rule. A fatal error (the route cannot be served) is returned as (field, message);
/// unresolved backend references are reported through `ctx.report` and kept in the split.
fn compile_rule(
    rule: &HttpRouteRules,
    field: &str,
    ctx: &mut RuleContext<'_, '_>,
) -> Result<CompiledRule, (String, String)> {
    let filters = Filters::compile(
        rule.filters
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, f)| rule_filter(f, &format!("{field}.filters[{i}]"))),
        field,
        ctx,
        true,
    )?;
    let timeout = rule
        .timeouts
        .as_ref()
        .map(|t| {
            let request =
                parse_timeout(t.request.as_deref(), &format!("{field}.timeouts.request"))?;
            let backend = parse_timeout(
                t.backend_request.as_deref(),
                &format!("{field}.timeouts.backendRequest"),
            )?;
            if let (Some(r), Some(b)) = (request, backend)
                && b > r
            {
                return Err((
                    format!("{field}.timeouts.backendRequest"),
                    "must not be longer than timeouts.request".to_owned(),
                ));
            }
            Ok(request.into_iter().chain(backend).min())
        })
        .transpose()?
        .flatten();

    let mut backends = Vec::new();
    for (i, b) in rule.backend_refs.iter().flatten().enumerate() {
        let at = format!("{field}.backendRefs[{i}]");
        let weight = b.weight.unwrap_or(1);
        if !(0..=MAX_WEIGHT).contains(&weight) {
            return Err((
                format!("{at}.weight"),
                format!("must be between 0 and {MAX_WEIGHT}, got {weight}"),
            ));
        }
        let own = Filters::compile(
            b.filters
                .iter()
                .flatten()
                .enumerate()
                .map(|(j, f)| backend_filter(f, &format!("{at}.filters[{j}]"))),
            &at,
            ctx,
            false,
        )?;
        let port = match b.port {
            None => None,
            Some(p) => match u16::try_from(p) {
                Ok(p) if p > 0 => Some(p),
                _ => return Err((format!("{at}.port"), format!("must be 1-65535, got {p}"))),
            },
        };
        let reference = BackendRef {
            group: b.group.as_deref().unwrap_or(""),
            kind: b.kind.as_deref().unwrap_or("Service"),
            key: ObjectKey::new(
                b.namespace.as_deref().unwrap_or(ctx.namespace),
                b.name.as_str(),
            ),
            port,
        };
        let target = match ctx.resolver.resolve(&reference, ctx.namespace) {
            Ok(t) => Some(t),
            Err((sub, message, reason)) => {
                (ctx.report)(format!("{at}{sub}"), message, reason);
                None
            }
        };
        let name: Arc<str> = reference.key.to_string().into();
        backends.push(RuleBackend {
            metrics: ctx
                .resolver
                .metrics
                .route_backend(ctx.route, &name, Traffic::live),
            target,
            name,
            weight: weight as u32,
            request_headers: own.request,
            response_headers: own.response,
            mirrors: own.mirrors.into_boxed_slice(),
        });
    }
    let weights: Vec<u32> = backends.iter().map(|b| b.weight).collect();
    let split = Split::new(&weights);
    let affinity = filters
        .affinity
        .and_then(|source| Sticky::new(source, &weights));
    let compiled = Arc::new(Rule {
        route: ctx.route.clone(),
        unattributed: Unattributed::new(ctx.resolver.metrics, ctx.route.clone()),
        split,
        affinity,
        backends: backends.into_boxed_slice(),
        request_headers: filters.request,
        response_headers: filters.response,
        mirrors: filters.mirrors.into_boxed_slice(),
        timeout,
    });

    let default_match = [HttpRouteRulesMatches::default()];
    let matches = match rule.matches.as_deref() {
        Some(m) if !m.is_empty() => m,
        _ => &default_match,
    };
    let matches = matches
        .iter()
        .enumerate()
        .map(|(i, m)| compile_match(m, &format!("{field}.matches[{i}]")))
        .collect::<Result<_, _>>()?;
    Ok((compiled, matches))
}

fn parse_timeout(value: Option<&str>, field: &str) -> Result<Option<Duration>, (String, String)> {
    let Some(value) = value else { return Ok(None) };
    let parsed: gateway_api::Duration = value
        .parse()
        .map_err(|e| (field.to_owned(), format!("invalid duration {value:?}: {e}")))?;
    let millis = parsed.as_millis();
    // Zero disables the timeout.
    Ok((millis > 0).then(|| Duration::from_millis(millis as u64)))
}

fn compile_match(
    m: &HttpRouteRulesMatches,
    field: &str,
) -> Result<(RequestMatch, Specificity), (String, String)> {
    let regex = |pattern: &str, at: String| {
        anchored(pattern).map_err(|e| {
            // The syntax error's last line says what is wrong; the lines above it repeat our
            // anchored pattern with a caret, which would break the one-line log.
            let text = e.to_string();
            let reason = text
                .lines()
                .last()
                .unwrap_or_default()
                .trim_start_matches("error: ")
                .to_owned();
            (
                at,
                format!("invalid regular expression {pattern:?}: {reason}"),
            )
        })
    };
    let (path, rank, len) = match &m.path {
        None => (PathMatch::prefix("/"), 1, 1),
        Some(p) => {
            let value = p.value.as_deref().unwrap_or("/");
            if !value.starts_with('/')
                && !matches!(
                    p.r#type,
                    Some(HttpRouteRulesMatchesPathType::RegularExpression)
                )
            {
                return Err((
                    format!("{field}.path.value"),
                    format!("must start with '/', got {value:?}"),
                ));
            }
            match p
                .r#type
                .as_ref()
                .unwrap_or(&HttpRouteRulesMatchesPathType::PathPrefix)
            {
                HttpRouteRulesMatchesPathType::Exact => {
                    (PathMatch::Exact(value.into()), 3, value.len())
                }
                HttpRouteRulesMatchesPathType::RegularExpression => (
                    PathMatch::Regex(regex(value, format!("{field}.path.value"))?),
                    2,
                    value.len(),
                ),
                HttpRouteRulesMatchesPathType::PathPrefix => {
                    (PathMatch::prefix(value), 1, value.len())
                }
            }
        }
    };
    let method = m
        .method
        .as_ref()
        .map(|method| {
            let name = serde_json::to_value(method).ok();
            let name = name.as_ref().and_then(|v| v.as_str()).unwrap_or_default();
            Method::from_bytes(name.as_bytes()).map_err(|_| {
                (
                    format!("{field}.method"),
                    format!("invalid method {name:?}"),
                )
            })
        })
        .transpose()?;
    let headers = m
        .headers
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, h)| {
            let at = format!("{field}.headers[{i}]");
            let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| {
                (
                    format!("{at}.name"),
                    format!("invalid header name {:?}", h.name),
                )
            })?;
            let value = match h
                .r#type
                .as_ref()
                .unwrap_or(&HttpRouteRulesMatchesHeadersType::Exact)
            {
                HttpRouteRulesMatchesHeadersType::Exact => {
                    ValueMatch::Exact(h.value.as_str().into())
                }
                HttpRouteRulesMatchesHeadersType::RegularExpression => {
                    ValueMatch::Regex(regex(&h.value, format!("{at}.value"))?)
                }
            };
            Ok::<_, (String, String)>(HeaderMatch { name, value })
        })
        .collect::<Result<Box<[_]>, _>>()?;
    let query = m
        .query_params
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, q)| {
            let at = format!("{field}.queryParams[{i}]");
            let value = match q
                .r#type
                .as_ref()
                .unwrap_or(&HttpRouteRulesMatchesQueryParamsType::Exact)
            {
                HttpRouteRulesMatchesQueryParamsType::Exact => {
                    ValueMatch::Exact(q.value.as_str().into())
                }
                HttpRouteRulesMatchesQueryParamsType::RegularExpression => {
                    ValueMatch::Regex(regex(&q.value, format!("{at}.value"))?)
                }
            };
            Ok::<_, (String, String)>(QueryMatch {
                name: q.name.as_str().into(),
                value,
            })
        })
        .collect::<Result<Box<[_]>, _>>()?;
    let specificity = (rank, len, method.is_some(), headers.len(), query.len());
    Ok((
        RequestMatch {
            path,
            method,
            headers,
            query,
        },
        specificity,
    ))
}

struct BackendRef<'a> {
    group: &'a str,
    kind: &'a str,
    key: ObjectKey,
    port: Option<u16>,
}

/// Resolves backend references to shared targets (one round-robin cursor per target).
struct Resolver<'a> {
    backends: HashMap<ObjectKey, &'a Backend>,
    affinities: HashMap<ObjectKey, &'a SessionAffinity>,
    services: HashMap<(ObjectKey, u16), &'a Vec<BackendEndpoint>>,
    targets: HashMap<(bool, ObjectKey, Option<u16>), Arc<BackendTarget>>,
    metrics: &'a Metrics,
}

impl Resolver<'_> {
    /// The target, or (field suffix, message, reason).
    fn resolve(
        &mut self,
        r: &BackendRef<'_>,
        namespace: &str,
    ) -> Result<Arc<BackendTarget>, FieldError> {
        if r.key.namespace != namespace {
            return Err((
                ".namespace".into(),
                format!(
                    "references to another namespace ({}) are not permitted",
                    r.key.namespace
                ),
                Reason::RefNotPermitted,
            ));
        }
        let is_service = match (r.group, r.kind) {
            (SERIN_GROUP, "Backend") => false,
            ("" | "core", "Service") => true,
            (group, kind) => {
                return Err((
                    ".kind".into(),
                    format!(
                        "{group}/{kind} is not a backend kind (use Service or serin.dev/Backend)"
                    ),
                    Reason::InvalidKind,
                ));
            }
        };
        let cache_key = (is_service, r.key.clone(), r.port);
        if let Some(target) = self.targets.get(&cache_key) {
            return Ok(target.clone());
        }
        let endpoints: Vec<Authority> = if is_service {
            let port = r.port.ok_or_else(|| {
                (
                    ".port".to_owned(),
                    "is required for a Service".to_owned(),
                    Reason::UnsupportedValue,
                )
            })?;
            let endpoints = self.services.get(&(r.key.clone(), port)).ok_or_else(|| {
                (
                    ".name".to_owned(),
                    format!("Service {} port {port} not found", r.key),
                    Reason::BackendNotFound,
                )
            })?;
            endpoints
                .iter()
                .filter_map(|e| authority(&e.host, e.port?).ok())
                .collect()
        } else {
            let backend = self.backends.get(&r.key).ok_or_else(|| {
                (
                    ".name".to_owned(),
                    format!("Backend {} not found", r.key),
                    Reason::BackendNotFound,
                )
            })?;
            let mut out = Vec::new();
            for e in &backend.spec.endpoints {
                let port = e.port.or(r.port).ok_or_else(|| {
                    (
                        ".port".to_owned(),
                        format!(
                            "Backend {} endpoint {} has no port, and the backendRef sets none",
                            r.key, e.host
                        ),
                        Reason::UnsupportedValue,
                    )
                })?;
                if let Ok(a) = authority(&e.host, port) {
                    out.push(a);
                }
            }
            out
        };
        let name: Arc<str> = r.key.to_string().into();
        let target = Arc::new(BackendTarget::new(
            name.clone(),
            endpoints.into_boxed_slice(),
            self.metrics.connect_errors(&name),
        ));
        self.targets.insert(cache_key, target.clone());
        Ok(target)
    }
}

fn authority(host: &str, port: u16) -> Result<Authority, http::uri::InvalidUri> {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}").parse()
    } else {
        format!("{host}:{port}").parse()
    }
}

/// Backends by key; endpoints that are not valid addresses are reported.
fn index_backends<'a>(
    objects: &'a Objects,
    problems: &mut Vec<Problem>,
) -> HashMap<ObjectKey, &'a Backend> {
    let mut out = HashMap::new();
    for sourced in &objects.backends {
        let key = key_of(&sourced.object);
        for (i, e) in sourced.object.spec.endpoints.iter().enumerate() {
            if e.host.is_empty() || authority(&e.host, e.port.unwrap_or(80)).is_err() {
                problems.push(Problem {
                    origin: sourced.origin.clone(),
                    kind: "Backend",
                    object: key.clone(),
                    field: format!("spec.endpoints[{i}].host"),
                    message: format!("{:?} is not a valid host name or IP address", e.host),
                    reason: Reason::UnsupportedValue,
                });
            }
            if e.port == Some(0) {
                problems.push(Problem {
                    origin: sourced.origin.clone(),
                    kind: "Backend",
                    object: key.clone(),
                    field: format!("spec.endpoints[{i}].port"),
                    message: "must be 1-65535".into(),
                    reason: Reason::UnsupportedValue,
                });
            }
        }
        out.insert(key, &sourced.object);
    }
    out
}
