//! The test bed of xdplb (dev only, never published): the reference
//! namespace topology (docs/design.md section 6), real test servers and clients,
//! the daemon run as a process. Used by lb-userspace's integration tests,
//! its benches and the demo behind `cargo xtask demo` (all dev-dependency
//! users: this crate depends on the `xdplb` library, not the reverse).
//! Needs root, iproute2 and ethtool.

pub mod bird;
pub mod clients;
pub mod daemon;
pub mod deb;
pub mod fib_net;
pub mod fixtures;
pub mod flood;
pub mod frames;
pub mod fuzz;
pub mod host_tools;
pub mod inspect;
pub mod load;
pub mod multinode;
pub mod netns;
pub mod servers;
pub mod test_run;
pub mod topology;
pub mod veth;
pub mod vip_backend;

pub use clients::{
    HttpResponse, http_get, http_get_from, http_request, tcp_connect, tcp_connect_from,
    udp_request, udp_request_from, wait_answering,
};
pub use daemon::{ADMIN, Daemon, Sample, metric_sum, parse_metrics};
pub use load::{Load, Outcome, Outcomes, Stream};
pub use servers::{HttpServer, UdpEchoServer, is_pattern, pattern_byte, wait_until};
pub use test_run::{Ran, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX, run_frame};
pub use topology::{Topology, backend_addr, backend_addr6, backend_http};

/// The `xdplb` binary cargo built beside the calling integration test or
/// bench, as a `&Path`. A macro: `CARGO_BIN_EXE_xdplb` is only set when
/// cargo compiles those targets, not this crate.
#[macro_export]
macro_rules! xdplb_bin {
    () => {
        ::std::path::Path::new(env!("CARGO_BIN_EXE_xdplb"))
    };
}
