//! The `serin` command's parts: the demo ([`demo`]: a whole release on one machine),
//! standalone mode ([`standalone`]: the rollout engine driving a routing directory that
//! serin-proxy watches) and manifest checking ([`manifest`], `serin validate`). They link the
//! data plane and the test app; serin-controller does not.

pub mod demo;
pub mod manifest;
pub mod standalone;
