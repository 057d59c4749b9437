//! The traffic routing the stage machine asks for, independent of how it is written (an
//! HTTPRoute for serin-proxy, or a routing file in standalone mode).
//!
//! Weights are basis points out of 10000 and always add up: `primary + canary == 10000`.

use std::fmt;

use crate::weight::Weight;

/// Desired routing between the primary and the canary.
///
/// Semantics, for the writer of the route:
/// * `matches: None`: every request is split `primary_weight`/`canary_weight`.
/// * `matches: Some(m)`: requests matching any entry of `m` are split
///   `primary_weight`/`canary_weight`; every other request goes to the primary.
/// * `mirror: Some(p)`: `p` of the requests sent to the primary are also copied to the
///   canary; the copies' responses are discarded.
/// * `session_affinity`: see [`CookieAffinity`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Primary share.
    pub primary_weight: Weight,
    /// Canary share; `primary_weight.complement()`.
    pub canary_weight: Weight,
    /// A/B testing conditions the weights apply to.
    pub matches: Option<Vec<RouteMatch>>,
    /// Share of requests mirrored to the canary.
    pub mirror: Option<Weight>,
    /// Cookie pinning.
    pub session_affinity: Option<CookieAffinity>,
}

impl Route {
    /// All traffic to the primary, nothing else.
    pub fn primary_only() -> Route {
        Route::split(Weight::ZERO)
    }

    /// A plain weighted split with `canary` on the canary.
    pub fn split(canary: Weight) -> Route {
        Route {
            primary_weight: canary.complement(),
            canary_weight: canary,
            matches: None,
            mirror: None,
            session_affinity: None,
        }
    }

    /// Whether every request, matched or not, reaches only the primary (a cookie-expiry rule
    /// may still be present: it routes to the primary too).
    pub fn is_primary_only(&self) -> bool {
        self.canary_weight.is_zero() && self.mirror.is_none() && self.matches.is_none()
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "primary {} canary {}",
            self.primary_weight, self.canary_weight
        )?;
        if let Some(matches) = &self.matches {
            write!(f, " for {} match(es)", matches.len())?;
        }
        if let Some(mirror) = self.mirror {
            write!(f, " mirror {mirror}")?;
        }
        match &self.session_affinity {
            Some(CookieAffinity::Pin { cookie_name, .. }) => write!(f, " pin {cookie_name}"),
            Some(CookieAffinity::Expire { cookie_name, .. }) => write!(f, " expire {cookie_name}"),
            None => Ok(()),
        }
    }
}

/// Flagger's cookie session affinity, as HTTPRoute rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CookieAffinity {
    /// During a release: responses from the canary (weighted rule) carry
    /// `Set-Cookie: {cookie_name}={cookie_value}; Max-Age={max_age}`, and a rule routes
    /// requests whose `Cookie` header carries that pair to the canary.
    Pin {
        /// Cookie name.
        cookie_name: String,
        /// Random value for this release.
        cookie_value: String,
        /// Cookie lifetime in seconds.
        max_age: u64,
    },
    /// After a release: requests carrying the previous release's cookie go to the primary
    /// like everyone else and get `Set-Cookie: {cookie_name}={cookie_value}; Max-Age=-1`
    /// so that clients drop it.
    Expire {
        /// Cookie name.
        cookie_name: String,
        /// The previous release's value.
        cookie_value: String,
    },
}

impl CookieAffinity {
    /// The regular expression, over the `Cookie` header, that recognises this cookie
    /// (Flagger's `.*name.*value.*`).
    pub fn cookie_header_regex(&self) -> String {
        let (name, value) = match self {
            CookieAffinity::Pin {
                cookie_name,
                cookie_value,
                ..
            }
            | CookieAffinity::Expire {
                cookie_name,
                cookie_value,
            } => (cookie_name, cookie_value),
        };
        format!(".*{}.*{}.*", regex::escape(name), regex::escape(value))
    }
}

/// One A/B testing condition: every field present must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteMatch {
    /// Request path.
    pub path: Option<ValueMatch>,
    /// HTTP method.
    pub method: Option<String>,
    /// Headers (names lower-case); cookies are matched through the `cookie` header.
    pub headers: Vec<NamedMatch>,
    /// Query parameters.
    pub query_params: Vec<NamedMatch>,
}

/// A match on a named header or query parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedMatch {
    /// Header or parameter name.
    pub name: String,
    /// How its value must match.
    pub value: ValueMatch,
}

/// How a value must match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValueMatch {
    /// Equal.
    Exact(String),
    /// Starts with.
    Prefix(String),
    /// Ends with.
    Suffix(String),
    /// Matches the regular expression (validated when the spec was compiled).
    Regex(String),
}
