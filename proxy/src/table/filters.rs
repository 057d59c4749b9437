//! Route filters: header modifiers compiled to ready header names and values, and the
//! normalisation of a rule's or a backendRef's filter list (two generated types of one shape)
//! into one [`Filter`] enum.

use gateway_api::experimental::httproutes::{
    HttpRouteRulesBackendRefsFilters, HttpRouteRulesBackendRefsFiltersType, HttpRouteRulesFilters,
    HttpRouteRulesFiltersType,
};
use http::{HeaderMap, HeaderName, HeaderValue};

/// One filter, whatever list it came from.
#[derive(Debug)]
pub enum Filter<'a> {
    RequestHeaders(HeaderModifier),
    ResponseHeaders(HeaderModifier),
    Mirror(MirrorSpec<'a>),
    Extension {
        group: &'a str,
        kind: &'a str,
        name: &'a str,
    },
}

/// A `RequestMirror` filter as written.
#[derive(Debug)]
pub struct MirrorSpec<'a> {
    pub group: &'a str,
    pub kind: &'a str,
    pub name: &'a str,
    pub namespace: Option<&'a str>,
    pub port: Option<i32>,
    pub percent: Option<i32>,
    /// (numerator, denominator)
    pub fraction: Option<(i32, Option<i32>)>,
}

/// (field, message) of an invalid filter.
pub type FilterError = (String, String);

/// Compiles a header modifier of either generated type (`set`, `add`, `remove` lists); `field`
/// is its name in the filter, for errors.
macro_rules! header_modifier {
    ($m:expr, $at:expr, $field:literal) => {{
        let at = $at;
        match $m {
            None => Err((
                format!("{at}.{}", $field),
                "is required for this filter type".to_owned(),
            )),
            Some(m) => HeaderModifier::compile(
                m.set
                    .iter()
                    .flatten()
                    .map(|h| (h.name.as_str(), h.value.as_str())),
                m.add
                    .iter()
                    .flatten()
                    .map(|h| (h.name.as_str(), h.value.as_str())),
                m.remove.iter().flatten().map(String::as_str),
            )
            .map_err(|(field, message)| (format!("{at}.{}.{field}", $field), message)),
        }
    }};
}

macro_rules! normalize {
    ($name:ident, $filter:ty, $types:ident) => {
        /// Normalises one filter; `at` is its field path, e.g. `spec.rules[0].filters[1]`.
        pub fn $name<'a>(f: &'a $filter, at: &str) -> Result<Filter<'a>, FilterError> {
            let required = |field: &str| {
                (
                    format!("{at}.{field}"),
                    "is required for this filter type".to_owned(),
                )
            };
            match f.r#type {
                $types::RequestHeaderModifier => {
                    let m = f.request_header_modifier.as_ref();
                    header_modifier!(m, at, "requestHeaderModifier").map(Filter::RequestHeaders)
                }
                $types::ResponseHeaderModifier => {
                    let m = f.response_header_modifier.as_ref();
                    header_modifier!(m, at, "responseHeaderModifier").map(Filter::ResponseHeaders)
                }
                $types::RequestMirror => {
                    let m = f
                        .request_mirror
                        .as_ref()
                        .ok_or_else(|| required("requestMirror"))?;
                    let b = &m.backend_ref;
                    Ok(Filter::Mirror(MirrorSpec {
                        group: b.group.as_deref().unwrap_or(""),
                        kind: b.kind.as_deref().unwrap_or("Service"),
                        name: &b.name,
                        namespace: b.namespace.as_deref(),
                        port: b.port,
                        percent: m.percent,
                        fraction: m.fraction.as_ref().map(|f| (f.numerator, f.denominator)),
                    }))
                }
                $types::ExtensionRef => {
                    let e = f
                        .extension_ref
                        .as_ref()
                        .ok_or_else(|| required("extensionRef"))?;
                    Ok(Filter::Extension {
                        group: &e.group,
                        kind: &e.kind,
                        name: &e.name,
                    })
                }
                ref other => Err((
                    format!("{at}.type"),
                    format!("filter type {other:?} is not supported"),
                )),
            }
        }
    };
}

normalize!(
    rule_filter,
    HttpRouteRulesFilters,
    HttpRouteRulesFiltersType
);
normalize!(
    backend_filter,
    HttpRouteRulesBackendRefsFilters,
    HttpRouteRulesBackendRefsFiltersType
);

type Pairs = Box<[(HeaderName, HeaderValue)]>;
/// (field, message) of an invalid entry.
type EntryError = (String, String);

/// A compiled header modifier: `set` replaces, `add` appends, `remove` deletes.
#[derive(Debug, Clone, Default)]
pub struct HeaderModifier {
    set: Pairs,
    add: Pairs,
    remove: Box<[HeaderName]>,
}

impl HeaderModifier {
    /// Compiles a modifier from its `set`, `add` and `remove` lists. The error names the list
    /// and index of the offending entry (`set[1].name`).
    pub fn compile<'a>(
        set: impl IntoIterator<Item = (&'a str, &'a str)>,
        add: impl IntoIterator<Item = (&'a str, &'a str)>,
        remove: impl IntoIterator<Item = &'a str>,
    ) -> Result<HeaderModifier, EntryError> {
        fn pairs<'a>(
            list: &str,
            items: impl IntoIterator<Item = (&'a str, &'a str)>,
        ) -> Result<Pairs, EntryError> {
            items
                .into_iter()
                .enumerate()
                .map(|(i, (name, value))| {
                    let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                        (
                            format!("{list}[{i}].name"),
                            format!("invalid header name {name:?}"),
                        )
                    })?;
                    let value = HeaderValue::from_str(value).map_err(|_| {
                        (
                            format!("{list}[{i}].value"),
                            format!("invalid header value {value:?}"),
                        )
                    })?;
                    Ok((name, value))
                })
                .collect()
        }
        let remove = remove
            .into_iter()
            .enumerate()
            .map(|(i, name)| {
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    (
                        format!("remove[{i}]"),
                        format!("invalid header name {name:?}"),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(HeaderModifier {
            set: pairs("set", set)?,
            add: pairs("add", add)?,
            remove,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    /// Merges `other` after `self` (both are applied, `self` first).
    pub fn then(&self, other: &HeaderModifier) -> HeaderModifier {
        HeaderModifier {
            set: self.set.iter().chain(other.set.iter()).cloned().collect(),
            add: self.add.iter().chain(other.add.iter()).cloned().collect(),
            remove: self
                .remove
                .iter()
                .chain(other.remove.iter())
                .cloned()
                .collect(),
        }
    }

    #[inline]
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in &*self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &*self.add {
            headers.append(name.clone(), value.clone());
        }
        for name in &*self.remove {
            headers.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_add_remove() {
        let m =
            HeaderModifier::compile([("x-set", "new")], [("x-add", "two")], ["x-gone"]).unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-set", HeaderValue::from_static("old"));
        h.insert("x-add", HeaderValue::from_static("one"));
        h.insert("x-gone", HeaderValue::from_static("bye"));
        m.apply(&mut h);
        assert_eq!(h.get_all("x-set").iter().collect::<Vec<_>>(), ["new"]);
        assert_eq!(
            h.get_all("x-add").iter().collect::<Vec<_>>(),
            ["one", "two"]
        );
        assert!(!h.contains_key("x-gone"));
    }

    #[test]
    fn bad_names_are_located() {
        let err = HeaderModifier::compile([("ok", "v"), ("bad name", "v")], [], []).unwrap_err();
        assert_eq!(err.0, "set[1].name");
        let err = HeaderModifier::compile([], [("x", "line\nbreak")], []).unwrap_err();
        assert_eq!(err.0, "add[0].value");
    }
}
