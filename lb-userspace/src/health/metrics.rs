//! The health checker's Prometheus series.

use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use super::BackendKey;

/// Check durations: 0.1 ms (loopback) to 5 s (the longest sane timeout).
const DURATION_BUCKETS: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The health checker's Prometheus series.
#[derive(Clone)]
pub struct HealthMetrics {
    transitions: IntCounterVec,
    duration: HistogramVec,
}

impl HealthMetrics {
    /// Creates the series and registers them in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let transitions = IntCounterVec::new(
            Opts::new(
                "xdplb_backend_health_transitions_total",
                "Health-check state changes of a backend, by new state.",
            ),
            &["service", "backend", "to"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "xdplb_backend_check_duration_seconds",
                "Duration of a backend's health checks, passed or failed.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["service", "backend"],
        )?;
        registry.register(Box::new(transitions.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        Ok(HealthMetrics {
            transitions,
            duration,
        })
    }

    /// Records how long a check of (`service`, `backend`) took.
    pub(super) fn observe(&self, service: &str, backend: &str, took: Duration) {
        self.duration
            .with_label_values(&[service, backend])
            .observe(took.as_secs_f64());
    }

    /// Counts a transition of (`service`, `backend`).
    pub(super) fn transition(&self, service: &str, backend: &str, up: bool) {
        let to = if up { "up" } else { "down" };
        self.transitions
            .with_label_values(&[service, backend, to])
            .inc();
    }

    /// Drops every series of `key`.
    pub(super) fn remove(&self, key: &BackendKey) {
        let backend = key.1.to_string();
        for to in ["up", "down"] {
            // Err only means the series was never created.
            let _ = self
                .transitions
                .remove_label_values(&[key.0.as_str(), &backend, to]);
        }
        let _ = self
            .duration
            .remove_label_values(&[key.0.as_str(), &backend]);
    }
}
