//! Request path normalisation: the path a request is routed by is the path its backend gets.
//!
//! A backend that resolves `/public/../admin` to `/admin` (most web servers and frameworks do)
//! must not receive it through a rule that matched `/public`: the path is normalised before
//! matching, and the normalised path is forwarded (as Envoy does with `normalize_path`):
//!
//! - percent-encoded unreserved characters are decoded (RFC 3986 §6.2.2.2: `%61` is `a`,
//!   `%2E` is `.`); other escapes, `%2F` included, are left as they are;
//! - dot segments are removed (RFC 3986 §5.2.4: `/a/./b/../c` is `/a/c`), encoded ones too;
//! - a path whose `..` would climb above `/` is refused ([`AboveRoot`], answered 400), as
//!   nginx does;
//! - repeated slashes are kept: `//admin` is not `/admin` (a backend that merges slashes sees
//!   another path than the rules did; routes should not rely on slashes being merged).
//!
//! The query is not touched. A target that is not a path (`*`) is left alone. The common path,
//! without `%` and without a segment starting with `.`, is recognised in one pass over its
//! bytes and costs no allocation; so is a path whose escapes are all of reserved characters.
//!
//! Written here rather than taken from a crate: `percent-encoding` decodes every escape
//! (`%2F` would become a separator), and `url` parses and re-serialises the whole URL, with an
//! allocation for every request; neither refuses a path above the root.

use http::Uri;
use http::uri::{Parts, PathAndQuery};

/// A path with more `..` segments than segments to remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the path climbs above the root")]
pub struct AboveRoot;

/// The request target `uri` with its path normalised, or `None` if it already is.
pub fn normalize(uri: &Uri) -> Result<Option<Uri>, AboveRoot> {
    let Some(pq) = uri.path_and_query() else {
        return Ok(None);
    };
    let path = pq.path().as_bytes();
    if !path.starts_with(b"/") || !changes(path)? {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(pq.as_str().len());
    normalize_into(path, &mut out)?;
    if let Some(query) = pq.query() {
        out.push(b'?');
        out.extend_from_slice(query.as_bytes());
    }
    // Decoding only produces unreserved characters and `/` stays `/`: what was a valid
    // path stays one.
    let Ok(pq) = PathAndQuery::from_maybe_shared(bytes::Bytes::from(out)) else {
        return Ok(None);
    };
    let mut parts = Parts::from(uri.clone());
    parts.path_and_query = Some(pq);
    Ok(Uri::from_parts(parts).ok())
}

/// Whether normalising `path` changes it; the error if it climbs above the root. Allocates
/// nothing.
fn changes(path: &[u8]) -> Result<bool, AboveRoot> {
    // Fast path: no escape, and no segment that starts with a dot.
    let mut previous = 0;
    let mut suspect = false;
    for &b in path {
        if b == b'%' || (b == b'.' && previous == b'/') {
            suspect = true;
            break;
        }
        previous = b;
    }
    if !suspect {
        return Ok(false);
    }
    let mut depth = 0usize;
    let mut changed = false;
    for segment in path[1..].split(|&b| b == b'/') {
        let (dots, decodes) = inspect(segment);
        changed |= decodes;
        match dots {
            Dots::One => changed = true,
            Dots::Two => {
                changed = true;
                depth = depth.checked_sub(1).ok_or(AboveRoot)?;
            }
            Dots::None => depth += 1,
        }
    }
    Ok(changed)
}

/// What a segment is once its unreserved escapes are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dots {
    None,
    /// `.`
    One,
    /// `..`
    Two,
}

/// Whether `segment` decodes to `.` or `..`, and whether it holds an escape to decode.
fn inspect(segment: &[u8]) -> (Dots, bool) {
    let mut decodes = false;
    let mut dots = 0;
    let mut other = false;
    let mut i = 0;
    while i < segment.len() {
        let (byte, width) = match unreserved_escape(segment, i) {
            Some(b) => {
                decodes = true;
                (b, 3)
            }
            None => (segment[i], 1),
        };
        if byte == b'.' {
            dots += 1;
        } else {
            other = true;
        }
        i += width;
    }
    let kind = match (other, dots) {
        (false, 1) => Dots::One,
        (false, 2) => Dots::Two,
        _ => Dots::None,
    };
    (kind, decodes)
}

/// The unreserved character (RFC 3986 §2.3) that `%XX` at `at` encodes, if it is one.
fn unreserved_escape(bytes: &[u8], at: usize) -> Option<u8> {
    if bytes[at] != b'%' {
        return None;
    }
    let hex = |b: u8| char::from(b).to_digit(16);
    let high = hex(*bytes.get(at + 1)?)?;
    let low = hex(*bytes.get(at + 2)?)?;
    let byte = u8::try_from(high * 16 + low).ok()?;
    (byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')).then_some(byte)
}

/// Writes `path` (which starts with `/`) normalised to `out`.
fn normalize_into(path: &[u8], out: &mut Vec<u8>) -> Result<(), AboveRoot> {
    // Where each segment written so far starts (at its `/`), to remove it again for `..`.
    let mut starts: Vec<usize> = Vec::new();
    let segments = path[1..].split(|&b| b == b'/');
    let count = path[1..].split(|&b| b == b'/').count();
    for (n, segment) in segments.enumerate() {
        let last = n + 1 == count;
        match inspect(segment).0 {
            Dots::One => {}
            Dots::Two => {
                let start = starts.pop().ok_or(AboveRoot)?;
                out.truncate(start);
            }
            Dots::None => {
                starts.push(out.len());
                out.push(b'/');
                let mut i = 0;
                while i < segment.len() {
                    match unreserved_escape(segment, i) {
                        Some(b) => {
                            out.push(b);
                            i += 3;
                        }
                        None => {
                            out.push(segment[i]);
                            i += 1;
                        }
                    }
                }
                continue;
            }
        }
        // A dot segment at the end leaves the directory: `/a/b/..` is `/a/`.
        if last {
            out.push(b'/');
        }
    }
    if out.is_empty() {
        out.push(b'/');
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(target: &str) -> Result<String, AboveRoot> {
        let uri: Uri = target.parse().unwrap();
        Ok(normalize(&uri)?.map_or_else(|| uri.to_string(), |u| u.to_string()))
    }

    #[test]
    fn dot_segments_are_removed_and_unreserved_escapes_decoded() {
        for (target, normalized) in [
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/public/../admin", "/admin"),
            ("/public/%2e%2e/admin", "/admin"),
            ("/public/%2E%2E/admin", "/admin"),
            ("/public/.%2e/admin", "/admin"),
            ("/./admin", "/admin"),
            ("/%61dmin/x", "/admin/x"),
            ("/%7Euser/a%2Db", "/~user/a-b"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/a/..", "/"),
            ("/a/.", "/a/"),
            ("/.", "/"),
            ("/a/../b?x=/../y", "/b?x=/../y"),
            ("/a%2fb/../c", "/c"),
            ("/a%2F..%2Fb", "/a%2F..%2Fb"),
            ("/a%20b", "/a%20b"),
            ("/a/.../b", "/a/.../b"),
            ("/.well-known/x", "/.well-known/x"),
            ("/a/.b/..c", "/a/.b/..c"),
            ("//admin", "//admin"),
            ("/a//../b", "/a/b"),
            ("/x%00/../admin", "/admin"),
            ("/%zz/..", "/"),
            ("http://h.example/a/../b", "http://h.example/b"),
            ("*", "*"),
        ] {
            assert_eq!(norm(target).as_deref(), Ok(normalized), "{target}");
        }
    }

    #[test]
    fn a_path_above_the_root_is_refused() {
        for target in [
            "/..",
            "/../admin",
            "/%2e%2e/admin",
            "/a/../../admin",
            "/a/./../..",
        ] {
            assert_eq!(norm(target), Err(AboveRoot), "{target}");
        }
    }

    #[test]
    fn a_path_that_stays_the_same_is_not_rebuilt() {
        for target in [
            "/a/b",
            "/a%20b/c",
            "/.well-known/x",
            "/a/...",
            "/a?x=%2e%2e",
        ] {
            let uri: Uri = target.parse().unwrap();
            assert_eq!(normalize(&uri), Ok(None), "{target}");
        }
    }
}
