//! xdplb control plane: configuration, Maglev, the data-plane loader, the
//! admin API and metrics, and the test bed used by tests and the demo.

pub mod config;
pub mod maglev;
pub mod testbed;
pub mod dataplane;
pub mod plan;
pub mod api;
pub mod daemon;
pub mod host;
pub mod metrics;
pub mod neigh;
