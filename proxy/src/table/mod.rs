//! The compiled, immutable routing table and the pure routing decision.
//!
//! A [`RouteTable`] is built by [`compile`] from configuration [`Objects`](crate::config::Objects)
//! and swapped in whole. [`RouteTable::decide`] maps a request (its head and one random sample)
//! to a [`Decision`]: the matched rule and the picked backend. It does no IO and reads no clock.
//!
//! Lookup order for a request arriving on a listener port:
//!
//! ```text
//! port ──> host (exact ─> longest wildcard suffix ─> any)
//!      ──> entries in precedence order, first whose match holds
//!      ──> rule ──> weighted pick ──> backend
//! ```

pub mod affinity;
mod compile;
pub mod filters;
pub mod matching;
pub mod split;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use fnv::FnvHashMap;
use http::request::Parts;
use http::uri::Authority;
use prometheus_client::metrics::counter::Counter;
use serde::Serialize;

use self::affinity::{Bucket, Sticky};
pub use self::compile::{MAX_WEIGHT, Problem, Reason, compile};
use self::filters::HeaderModifier;
use self::matching::RequestMatch;
use self::split::Split;
use crate::error::ProxyError;
use crate::metrics::{RouteBackendMetrics, Unattributed};

/// An immutable routing table. Its maps hash with FNV: keys are short and looked up on every
/// request, where SipHash's DoS resistance buys nothing (clients cannot add keys).
#[derive(Debug, Default)]
pub struct RouteTable {
    ports: FnvHashMap<u16, PortRoutes>,
    summary: Vec<RuleSummary>,
}

/// Routes served on one listener port.
#[derive(Debug, Default)]
struct PortRoutes {
    /// Lower-case host -> candidate entries, most specific first.
    exact: FnvHashMap<Box<str>, Arc<[Entry]>>,
    /// Wildcard suffix (`.example.com` for `*.example.com`) -> candidate entries.
    wildcard: FnvHashMap<Box<str>, Arc<[Entry]>>,
    /// Entries for a host that no specific hostname names.
    any: Arc<[Entry]>,
}

/// One `HTTPRouteMatch` of one rule.
#[derive(Debug, Clone)]
struct Entry {
    matcher: RequestMatch,
    rule: Arc<Rule>,
}

/// A compiled `HTTPRouteRule`.
#[derive(Debug)]
pub struct Rule {
    /// `namespace/name` of the HTTPRoute.
    pub route: Arc<str>,
    pub backends: Box<[RuleBackend]>,
    split: Option<Split>,
    /// Sticky buckets replace the random draw when set.
    pub affinity: Option<Sticky>,
    /// `RequestMirror` filters of the rule.
    pub mirrors: Box<[Arc<MirrorPolicy>]>,
    /// Where requests no backend answers for are counted (`backend=""`): those of a rule
    /// whose backends all have weight zero, and those the client broke
    /// ([`crate::ProxyError::client_fault`]).
    pub unattributed: Unattributed,
    pub request_headers: HeaderModifier,
    pub response_headers: HeaderModifier,
    /// `timeouts.request`: from receiving the request to the end of the response.
    pub timeout: Option<Duration>,
}

/// One `backendRef` of a rule.
#[derive(Debug)]
pub struct RuleBackend {
    /// `None` when the reference could not be resolved: requests picked for it get a 500.
    pub target: Option<Arc<BackendTarget>>,
    /// `namespace/name` of the referenced object.
    pub name: Arc<str>,
    pub weight: u32,
    pub request_headers: HeaderModifier,
    pub response_headers: HeaderModifier,
    /// `RequestMirror` filters of this backendRef: applied only when it is picked.
    pub mirrors: Box<[Arc<MirrorPolicy>]>,
    pub metrics: RouteBackendMetrics,
}

/// A compiled `RequestMirror` filter.
#[derive(Debug)]
pub struct MirrorPolicy {
    pub target: Arc<BackendTarget>,
    /// `Host` of mirrored requests: the Service's cluster name; `None` means the endpoint address.
    pub host: Option<http::HeaderValue>,
    /// Share of matching requests mirrored: numerator / denominator.
    pub numerator: u32,
    pub denominator: u32,
    /// Handles with `traffic="mirror"`.
    pub metrics: RouteBackendMetrics,
    /// Copies for this mirror's backend admitted and not yet finished: set on first use by the
    /// mirror sender, which shares one counter per backend across tables.
    pub admitted: OnceLock<Arc<AtomicUsize>>,
}

impl MirrorPolicy {
    /// Whether a request with this mirror sample is mirrored.
    #[inline]
    pub fn selected(&self, sample: u64) -> bool {
        self.numerator == self.denominator
            || (sample % u64::from(self.denominator)) < u64::from(self.numerator)
    }
}

/// A backend's endpoints, balanced round robin.
#[derive(Debug)]
pub struct BackendTarget {
    pub name: Arc<str>,
    pub endpoints: Box<[Authority]>,
    next: AtomicUsize,
    pub connect_errors: Counter,
}

impl BackendTarget {
    pub fn new(name: Arc<str>, endpoints: Box<[Authority]>, connect_errors: Counter) -> Self {
        BackendTarget {
            name,
            endpoints,
            next: AtomicUsize::new(0),
            connect_errors,
        }
    }

    /// The next endpoint in round-robin order.
    #[inline]
    pub fn endpoint(&self) -> Option<&Authority> {
        match self.endpoints.len() {
            0 => None,
            1 => self.endpoints.first(),
            n => {
                let i = self.next.fetch_add(1, Ordering::Relaxed);
                self.endpoints.get(i % n)
            }
        }
    }
}

/// The outcome of routing one request.
#[derive(Debug, Clone, Copy)]
pub struct Decision<'t> {
    pub rule: &'t Arc<Rule>,
    /// Index into `rule.backends`; `None` when no backend has a positive weight.
    pub backend: Option<usize>,
    /// The client's sticky bucket, when the rule has affinity.
    pub bucket: Option<Bucket>,
    /// Decides which mirrors get a copy (independent of the backend pick).
    mirror_sample: u64,
}

impl<'t> Decision<'t> {
    pub fn backend(&self) -> Option<&'t RuleBackend> {
        self.backend.map(|i| &self.rule.backends[i])
    }

    /// The mirrors this request is copied to: the rule's, then the picked backendRef's.
    pub fn mirrors(&self) -> impl Iterator<Item = &'t Arc<MirrorPolicy>> + use<'t> {
        let sample = self.mirror_sample;
        let own: &'t [Arc<MirrorPolicy>] = self.backend().map_or(&[], |b| &b.mirrors);
        self.rule
            .mirrors
            .iter()
            .chain(own)
            .filter(move |m| m.selected(sample))
    }

    /// The `Set-Cookie` value handing a new client its bucket, if one must be sent.
    pub fn set_cookie(&self) -> Option<String> {
        match (&self.rule.affinity, self.bucket) {
            (Some(sticky), Some(b)) if b.assign => sticky.set_cookie(b.value),
            _ => None,
        }
    }
}

/// What `/routes` shows for one match of one rule.
#[derive(Debug, Clone, Serialize)]
pub struct RuleSummary {
    pub port: u16,
    pub hostname: String,
    pub route: String,
    pub rule: usize,
    #[serde(rename = "match")]
    pub matcher: String,
    pub backends: Vec<BackendSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u128>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackendSummary {
    pub name: String,
    pub weight: u32,
    pub endpoints: Vec<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unresolved: bool,
}

impl RouteTable {
    /// The listener ports this table serves.
    pub fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.ports.keys().copied()
    }

    /// Every (port, hostname, rule, match) in precedence order, for `/routes`.
    pub fn summary(&self) -> &[RuleSummary] {
        &self.summary
    }

    /// Routes a request that arrived on `port`. `sample` is a uniformly random number used for
    /// the weighted pick.
    pub fn decide(
        &self,
        port: u16,
        parts: &Parts,
        sample: u64,
    ) -> Result<Decision<'_>, ProxyError> {
        let Some(routes) = self.ports.get(&port) else {
            return Err(ProxyError::NoRoute);
        };
        let Some(entry) = routes
            .candidates(parts)
            .iter()
            .find(|e| e.matcher.matches(parts))
        else {
            return Err(ProxyError::NoRoute);
        };
        let rule = &entry.rule;
        let (backend, bucket) = match (&rule.affinity, &rule.split) {
            (Some(sticky), _) => {
                let bucket = sticky.bucket(parts, sample);
                (Some(sticky.pick(bucket.value)), Some(bucket))
            }
            (None, Some(split)) => (Some(split.pick(sample)), None),
            (None, None) => (None, None),
        };
        Ok(Decision {
            rule,
            backend,
            bucket,
            mirror_sample: mix(sample),
        })
    }
}

impl PortRoutes {
    /// The routes that may match `parts`, by its host. Listeners without hostname-specific
    /// routes (the usual ingress) do not look at the host at all.
    fn candidates(&self, parts: &Parts) -> &[Entry] {
        if self.exact.is_empty() && self.wildcard.is_empty() {
            return &self.any;
        }
        let Some(host) = request_host(parts) else {
            return &self.any;
        };
        let lower;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = host.to_ascii_lowercase();
            lower.as_str()
        } else {
            host
        };
        if let Some(entries) = self.exact.get(host) {
            return entries;
        }
        if !self.wildcard.is_empty() {
            // Longest suffix first: `a.b.example.com` tries `.b.example.com`, `.example.com`, `.com`.
            for (i, _) in host.match_indices('.') {
                if let Some(entries) = self.wildcard.get(&host[i..]) {
                    return entries;
                }
            }
        }
        &self.any
    }
}

/// A second, independent-looking number from the sample (splitmix64's finaliser), so that the
/// mirror choice is not correlated with the backend pick.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The request's host without port or trailing dot: from the URI (HTTP/2, absolute form) or
/// the `Host` header.
fn request_host(parts: &Parts) -> Option<&str> {
    let authority = match parts.uri.host() {
        Some(host) => host,
        None => parts.headers.get(http::header::HOST)?.to_str().ok()?,
    };
    let host = if authority.starts_with('[') {
        authority
            .find(']')
            .map_or(authority, |end| &authority[..=end])
    } else {
        authority.split_once(':').map_or(authority, |(h, _)| h)
    };
    Some(host.strip_suffix('.').unwrap_or(host))
}

#[cfg(test)]
mod tests;
