//! xdplb control plane: configuration, Maglev, the data-plane loader, the
//! admin API and metrics. The test bed lives in the dev-only lb-testbed crate.

pub mod api;
pub mod api_types;
pub mod backend_setup;
pub mod bgp;
pub mod client;
pub mod config;
pub mod controller;
pub mod daemon;
pub mod dataplane;
pub mod decap;
pub mod health;
pub mod history;
pub mod host;
pub mod ids;
pub mod link_watch;
pub mod maglev;
pub mod metrics;
pub mod neigh;
pub mod offload;
pub mod plan;
pub mod privileges;
pub mod rollout;
pub mod supervisor;
pub mod sync;
pub mod token;
pub mod trace;
