//! Active health checks of backends, with HAProxy's semantics.
//!
//! The host checks every backend of a service that has a `health_check`,
//! straight to the backend's address (or the check's `port`), not through
//! the VIP. Each checked backend is one tokio task that sleeps between
//! checks, so thousands of backends cost thousands of small tasks on the
//! runtime's threads, not thousands of threads.
//!
//! - A backend starts UP, as in HAProxy: traffic flows at once after a start
//!   or a reload, and a backend already serving is not taken out while its
//!   first `fall` checks run. A dead backend costs at most `fall` intervals
//!   of failed new flows.
//! - `fall` consecutive failed checks take an UP backend DOWN, `rise`
//!   consecutive passes bring a DOWN backend UP. Each change is sent once
//!   as a [`Transition`], logged, and counted in
//!   `xdplb_backend_health_transitions_total`.
//! - Checks run every `interval` (the first one at once, after a random
//!   jitter of up to a quarter of `min(interval, 1s)` so thousands of
//!   backends do not fire together), each bounded by `timeout` (validation
//!   keeps `timeout <= interval`, so checks of a backend never overlap).
//!   Their durations go to `xdplb_backend_check_duration_seconds`.
//!
//! Check types: `tcp` (a connect succeeds), `http` (HTTP/1.1 `GET path`
//! gets `expect_status`, and the first
//! [`HealthCheck::MAX_HTTP_BODY`](crate::config::HealthCheck::MAX_HTTP_BODY)
//! bytes of the body contain `expect_body` if set), `udp` (`send` from a
//! fresh connected socket gets a reply, containing `expect` if set; an ICMP
//! port unreachable fails the check at once). tcp and http checks close
//! with a RST, as HAProxy does, so they leave no TIME_WAIT sockets behind.
//!
//! The parts: `state` (the rise/fall state machine, pure), `scheduler`
//! (the tasks and their timing), `probe` and `http` (one check of each
//! type), `metrics` (the Prometheus series).

mod http;
mod metrics;
mod probe;
mod scheduler;
mod state;

pub use crate::ids::BackendKey;
pub use metrics::HealthMetrics;
pub use scheduler::HealthChecker;
pub use state::Status;

use crate::config::HealthCheck;

/// A backend to check, and how.
#[derive(Debug, Clone)]
pub struct Target {
    pub key: BackendKey,
    pub check: HealthCheck,
}

/// A backend went up or down.
#[derive(Debug, Clone)]
pub struct Transition {
    pub key: BackendKey,
    pub up: bool,
    /// Down: the error of the last check. Up: how many checks passed.
    pub reason: String,
}
