//! The test bed of xdplb (dev only, never published): the reference
//! namespace topology (design.md section 6), real test servers and clients,
//! the daemon run as a process. Used by lb-userspace's integration tests,
//! its benches and the demo behind `cargo xtask demo` (all dev-dependency
//! users: this crate depends on the `xdplb` library, not the reverse).
//! Needs root, iproute2 and ethtool.

pub mod clients;
pub mod daemon;
pub mod fib_net;
pub mod load;
pub mod netns;
pub mod servers;
pub mod topology;

pub use clients::{
    HttpResponse, http_get, http_request, tcp_connect, udp_request, udp_request_from,
};
pub use daemon::{Daemon, Sample, metric_sum, parse_metrics};
pub use load::{Load, Outcome, Outcomes, Stream};
pub use servers::{HttpServer, UdpEchoServer, is_pattern, pattern_byte, wait_until};
pub use topology::{Topology, backend_addr, backend_addr6};
