//! Sticky buckets: session affinity that survives weight changes in one direction only.
//!
//! Each client has a stable bucket in `0..BUCKETS` — from a cookie the proxy sets, or from a hash
//! of a request header such as a user id. A rule with affinity picks its backend from the bucket
//! instead of a random draw: the *last* `backendRef` owns the lowest buckets, the one before it the
//! next range, and so on, the first `backendRef` owning the top. With `[primary, canary]`, buckets
//! below the canary's share go to the canary, so as the canary's weight grows clients only move
//! primary -> canary, never back and forth between versions.

use cookie::Cookie;
use http::HeaderName;
use http::request::Parts;

/// Buckets per client population (basis points: a 0.01% share is one bucket).
pub const BUCKETS: u32 = 10_000;

/// Where a client's bucket comes from.
#[derive(Debug, Clone)]
pub enum BucketSource {
    /// A cookie holding the bucket number; set by the proxy when absent or invalid.
    Cookie {
        name: Box<str>,
        max_age_seconds: i64,
    },
    /// A hash of a request header's value (FNV-1a); requests without it get a random bucket.
    Header { name: HeaderName },
}

/// A compiled sticky-bucket policy for one rule.
#[derive(Debug, Clone)]
pub struct Sticky {
    pub source: BucketSource,
    /// `cuts[i]` is the first bucket owned by backend `i`; backend `i` owns `cuts[i]..cuts[i-1]`
    /// (with `cuts[-1] = BUCKETS`). The last backend's cut is 0.
    cuts: Box<[u32]>,
}

/// A client's bucket, and whether it must be handed to the client in a cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    pub value: u32,
    pub assign: bool,
}

impl Sticky {
    /// `None` when no weight is positive.
    pub fn new(source: BucketSource, weights: &[u32]) -> Option<Sticky> {
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        if total == 0 {
            return None;
        }
        // Cumulative from the last backend, rounded once so shares add up to BUCKETS exactly.
        let mut cuts = vec![0u32; weights.len()];
        let mut below: u64 = 0;
        for i in (0..weights.len()).rev() {
            cuts[i] = (below * u64::from(BUCKETS) / total) as u32;
            below += u64::from(weights[i]);
        }
        Some(Sticky {
            source,
            cuts: cuts.into_boxed_slice(),
        })
    }

    /// The backend index owning `bucket`.
    #[inline]
    pub fn pick(&self, bucket: u32) -> usize {
        // Cuts do not increase with the index, so the first cut at or below the bucket is its
        // owner's; a backend with an empty range is never first. The last cut is 0.
        self.cuts
            .iter()
            .position(|&cut| bucket >= cut)
            .unwrap_or(self.cuts.len() - 1)
    }

    /// The request's bucket: from its cookie or header, else derived from `sample`.
    pub fn bucket(&self, parts: &Parts, sample: u64) -> Bucket {
        let fresh = |assign| Bucket {
            value: (sample % u64::from(BUCKETS)) as u32,
            assign,
        };
        match &self.source {
            BucketSource::Cookie { name, .. } => {
                cookie_bucket(parts, name).map_or(fresh(true), |value| Bucket {
                    value,
                    assign: false,
                })
            }
            BucketSource::Header { name } => match parts.headers.get(name) {
                Some(v) => Bucket {
                    value: (fnv1a(v.as_bytes()) % u64::from(BUCKETS)) as u32,
                    assign: false,
                },
                None => fresh(false),
            },
        }
    }

    /// The `Set-Cookie` value handing `bucket` to the client, for cookie-sourced buckets.
    pub fn set_cookie(&self, bucket: u32) -> Option<String> {
        match &self.source {
            BucketSource::Cookie {
                name,
                max_age_seconds,
            } => Some(
                Cookie::build((name.to_string(), bucket.to_string()))
                    .path("/")
                    .http_only(true)
                    .same_site(cookie::SameSite::Lax)
                    .max_age(cookie::time::Duration::seconds(*max_age_seconds))
                    .build()
                    .to_string(),
            ),
            BucketSource::Header { .. } => None,
        }
    }
}

/// The bucket in cookie `name`, if some `Cookie` header holds a valid one. Malformed cookie
/// headers and values are ignored.
fn cookie_bucket(parts: &Parts, name: &str) -> Option<u32> {
    parts
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .and_then(|c| c.value().parse::<u32>().ok())
        .filter(|&b| b < BUCKETS)
}

/// FNV-1a, 64 bit: a fixed, specified hash, so every proxy replica and version agrees on a
/// header's bucket (std's hasher makes no such promise).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;
    use proptest::prelude::*;

    fn cookie_policy() -> BucketSource {
        BucketSource::Cookie {
            name: "serin-bucket".into(),
            max_age_seconds: 3600,
        }
    }

    fn share(s: &Sticky, backend: usize) -> u32 {
        (0..BUCKETS).filter(|&b| s.pick(b) == backend).count() as u32
    }

    #[test]
    fn shares_follow_weights_and_the_last_backend_owns_the_low_buckets() {
        let s = Sticky::new(cookie_policy(), &[90, 10]).unwrap();
        assert_eq!(share(&s, 1), 1000);
        assert_eq!(s.pick(0), 1);
        assert_eq!(s.pick(999), 1);
        assert_eq!(s.pick(1000), 0);
        let s = Sticky::new(cookie_policy(), &[9990, 10]).unwrap();
        assert_eq!(share(&s, 1), 10, "0.1% is ten buckets");
        let s = Sticky::new(cookie_policy(), &[1, 0, 1]).unwrap();
        assert_eq!((share(&s, 0), share(&s, 1), share(&s, 2)), (5000, 0, 5000));
        let s = Sticky::new(cookie_policy(), &[0, 1]).unwrap();
        assert_eq!(share(&s, 1), BUCKETS);
        assert!(Sticky::new(cookie_policy(), &[0, 0]).is_none());
    }

    #[test]
    fn fnv1a_test_vectors() {
        assert_eq!(fnv1a(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x85944171f73967e8);
    }

    fn parts(headers: &[(&str, &str)]) -> Parts {
        let mut b = Request::get("/");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn cookie_bucket_is_read_and_bad_cookies_are_ignored() {
        let s = Sticky::new(cookie_policy(), &[1, 1]).unwrap();
        assert_eq!(
            s.bucket(&parts(&[("cookie", "a=1; serin-bucket=42")]), 7),
            Bucket {
                value: 42,
                assign: false
            }
        );
        assert_eq!(
            s.bucket(&parts(&[("cookie", "x"), ("cookie", "serin-bucket=43")]), 7)
                .value,
            43
        );
        for junk in [
            "serin-bucket=99999",
            "serin-bucket=-1",
            "serin-bucket=abc",
            ";;;=",
            "serin-bucket",
            "serin-bucket=\"1",
        ] {
            let b = s.bucket(&parts(&[("cookie", junk)]), 10_007);
            assert_eq!(
                b,
                Bucket {
                    value: 7,
                    assign: true
                },
                "{junk:?}"
            );
        }
        let set = s.set_cookie(42).unwrap();
        assert!(set.starts_with("serin-bucket=42"), "{set}");
        assert!(
            set.contains("Max-Age=3600") && set.contains("Path=/") && set.contains("HttpOnly"),
            "{set}"
        );
    }

    #[test]
    fn header_bucket_is_a_stable_hash() {
        let s = Sticky::new(
            BucketSource::Header {
                name: HeaderName::from_static("x-user"),
            },
            &[1, 1],
        )
        .unwrap();
        let a = s.bucket(&parts(&[("x-user", "alice")]), 1);
        assert_eq!(a, s.bucket(&parts(&[("x-user", "alice")]), 2));
        assert_eq!(a.value, (fnv1a(b"alice") % 10_000) as u32);
        assert!(
            !s.bucket(&parts(&[]), 3).assign,
            "no cookie for header-sourced buckets"
        );
    }

    proptest! {
        /// As the canary's weight only grows, a client never moves from canary back to primary.
        #[test]
        fn clients_only_move_primary_to_canary(
            mut steps in proptest::collection::vec(0u32..=10_000, 1..20),
            bucket in 0..BUCKETS,
        ) {
            steps.sort_unstable();
            let mut on_canary = false;
            for canary in steps {
                let s = Sticky::new(cookie_policy(), &[10_000 - canary, canary]);
                let Some(s) = s else { continue };
                let now = s.pick(bucket) == 1;
                prop_assert!(now || !on_canary, "bucket {bucket} moved back at canary weight {canary}");
                on_canary = now;
            }
        }

        /// Shares are exact to one bucket for any weights.
        #[test]
        fn shares_are_proportional(weights in proptest::collection::vec(0u32..=1_000_000, 1..6)) {
            let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
            prop_assume!(total > 0);
            let s = Sticky::new(cookie_policy(), &weights).unwrap();
            for (i, &w) in weights.iter().enumerate() {
                let want = u64::from(w) * u64::from(BUCKETS) / total;
                let got = u64::from(share(&s, i));
                prop_assert!(got.abs_diff(want) <= 1, "backend {i}: {got} buckets, want {want}");
            }
        }
    }
}
