//! Request matching for one `HTTPRouteMatch`: path, method, headers and query parameters, all
//! of which must hold. Matching reads the request in place; it never copies a header.

use http::request::Parts;
use http::{HeaderName, Method};
use percent_encoding::percent_decode_str;
use regex::Regex;

/// A compiled `HTTPRouteMatch`.
#[derive(Debug, Clone)]
pub struct RequestMatch {
    pub path: PathMatch,
    pub method: Option<Method>,
    pub headers: Box<[HeaderMatch]>,
    pub query: Box<[QueryMatch]>,
}

/// A compiled path match.
#[derive(Debug, Clone)]
pub enum PathMatch {
    Exact(Box<str>),
    /// Stored without a trailing `/`; `"/"` is stored as the empty string and matches all.
    Prefix(Box<str>),
    /// Anchored at both ends.
    Regex(Regex),
}

/// A value test, exact or by a regular expression anchored at both ends.
#[derive(Debug, Clone)]
pub enum ValueMatch {
    Exact(Box<str>),
    Regex(Regex),
}

#[derive(Debug, Clone)]
pub struct HeaderMatch {
    pub name: HeaderName,
    pub value: ValueMatch,
}

#[derive(Debug, Clone)]
pub struct QueryMatch {
    pub name: Box<str>,
    pub value: ValueMatch,
}

impl PathMatch {
    /// A `PathPrefix` match; trailing slashes do not matter (`/foo/` matches `/foo`).
    pub fn prefix(value: &str) -> PathMatch {
        PathMatch::Prefix(value.trim_end_matches('/').into())
    }

    #[inline]
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(p) => path == &**p,
            PathMatch::Prefix(p) => {
                // Element-wise: `/foo` matches `/foo`, `/foo/` and `/foo/bar`, not `/foobar`.
                path.starts_with(&**p)
                    && (path.len() == p.len() || path.as_bytes()[p.len()] == b'/')
            }
            PathMatch::Regex(re) => re.is_match(path),
        }
    }
}

impl ValueMatch {
    #[inline]
    pub fn matches(&self, value: &str) -> bool {
        match self {
            ValueMatch::Exact(v) => value == &**v,
            ValueMatch::Regex(re) => re.is_match(value),
        }
    }
}

/// Compiles a regular expression so that it must match the whole value.
pub fn anchored(pattern: &str) -> Result<Regex, regex::Error> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(1 << 20)
        .build()
}

impl RequestMatch {
    /// Whether the request satisfies every condition of this match.
    #[inline]
    pub fn matches(&self, parts: &Parts) -> bool {
        if !self.path.matches(parts.uri.path()) {
            return false;
        }
        if let Some(method) = &self.method
            && parts.method != method
        {
            return false;
        }
        self.headers.iter().all(|h| {
            // A repeated header (e.g. HTTP/2 splits `cookie`) matches if any of its values does.
            parts
                .headers
                .get_all(&h.name)
                .iter()
                .any(|v| v.to_str().is_ok_and(|v| h.value.matches(v)))
        }) && self.query.iter().all(|q| {
            first_query_value(parts.uri.query().unwrap_or(""), &q.name)
                .is_some_and(|v| q.value.matches(&v))
        })
    }
}

/// The first value of query parameter `name`, percent-decoded (without copying when there is
/// nothing to decode).
fn first_query_value<'q>(query: &'q str, name: &str) -> Option<std::borrow::Cow<'q, str>> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| percent_decode_str(v).decode_utf8_lossy())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn prefix_is_element_wise() {
        let m = PathMatch::prefix("/foo/");
        for (path, want) in [
            ("/foo", true),
            ("/foo/", true),
            ("/foo/bar", true),
            ("/foobar", false),
            ("/fo", false),
            ("/", false),
        ] {
            assert_eq!(m.matches(path), want, "{path}");
        }
        assert!(PathMatch::prefix("/").matches("/anything/at/all"));
    }

    #[test]
    fn exact_and_regex_paths() {
        assert!(PathMatch::Exact("/a".into()).matches("/a"));
        assert!(!PathMatch::Exact("/a".into()).matches("/a/"));
        let re = PathMatch::Regex(anchored("/v[0-9]+/.*").unwrap());
        assert!(re.matches("/v2/users"));
        assert!(
            !re.matches("/api/v2/users"),
            "regex must match the whole path"
        );
    }

    #[test]
    fn all_conditions_must_hold() {
        let m = RequestMatch {
            path: PathMatch::prefix("/api"),
            method: Some(Method::POST),
            headers: vec![HeaderMatch {
                name: HeaderName::from_static("x-canary"),
                value: ValueMatch::Exact("insider".into()),
            }]
            .into(),
            query: vec![QueryMatch {
                name: "debug".into(),
                value: ValueMatch::Regex(anchored("on|yes").unwrap()),
            }]
            .into(),
        };
        let hit = parts("POST", "/api/x?debug=yes", &[("X-Canary", "insider")]);
        assert!(m.matches(&hit));
        for miss in [
            parts("GET", "/api/x?debug=yes", &[("x-canary", "insider")]),
            parts("POST", "/other?debug=yes", &[("x-canary", "insider")]),
            parts("POST", "/api/x?debug=yes", &[("x-canary", "Insider")]),
            parts("POST", "/api/x?debug=no", &[("x-canary", "insider")]),
            parts("POST", "/api/x", &[("x-canary", "insider")]),
        ] {
            assert!(!m.matches(&miss), "{:?}", miss.uri);
        }
    }

    #[test]
    fn first_query_value_wins_and_is_decoded() {
        assert_eq!(first_query_value("a=1&a=2", "a").as_deref(), Some("1"));
        assert_eq!(first_query_value("x=a%20b", "x").as_deref(), Some("a b"));
        assert_eq!(first_query_value("flag", "flag").as_deref(), Some(""));
        assert_eq!(first_query_value("", "a"), None);
    }

    #[test]
    fn any_value_of_a_repeated_header_can_match() {
        let m = HeaderMatch {
            name: HeaderName::from_static("cookie"),
            value: ValueMatch::Regex(anchored("^(.*?;)?(canary=always)(;.*)?$").unwrap()),
        };
        let req = RequestMatch {
            path: PathMatch::prefix("/"),
            method: None,
            headers: vec![m].into(),
            query: Box::new([]),
        };
        assert!(req.matches(&parts(
            "GET",
            "/",
            &[("cookie", "a=b"), ("cookie", "canary=always")]
        )));
        assert!(req.matches(&parts("GET", "/", &[("cookie", "a=b;canary=always;c=d")])));
        assert!(!req.matches(&parts("GET", "/", &[("cookie", "canary=never")])));
    }
}
