//! Port numbers for tests that must name a port before anything listens on it (a Gateway
//! listener in a config file, a `--listen` flag).
//!
//! Binding port 0 and closing it again hands out a port of the kernel's ephemeral range,
//! which the kernel gives to the next `bind(0)` or outgoing connection as well: with tests
//! running in parallel, another test's server or client can take it before the test uses it
//! (and a port meant to refuse connections may answer). These ports come from just below the
//! ephemeral range instead, which the kernel never hands out by itself, each at most once per
//! process, starting at an offset derived from the process id so that test processes running
//! side by side rarely meet; a port something already listens on is skipped.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// How many ports below the ephemeral range are used.
const SPAN: u32 = 12_000;

fn ephemeral_low() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .filter(|low| *low > SPAN + 1024)
        .unwrap_or(32_768)
}

/// A port on 127.0.0.1 that nothing listens on now and that no other call in this process
/// returns; outside the kernel's ephemeral range.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let low = ephemeral_low();
    let base = low - SPAN;
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id().wrapping_mul(7_919)) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let offset = NEXT.fetch_add(1, Ordering::SeqCst) % SPAN;
        let port = u16::try_from(base + offset).expect("a port below the ephemeral range");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {base}..{low}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_free_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len());
        let low = ephemeral_low();
        assert!(
            ports
                .iter()
                .all(|p| u32::from(*p) < low && u32::from(*p) >= low - SPAN)
        );
        // One already taken is skipped.
        let next = free_port();
        let _held = TcpListener::bind(("127.0.0.1", next + 1)).unwrap();
        assert_ne!(free_port(), next + 1);
    }
}
