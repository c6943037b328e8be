//! Rollouts' Prometheus series: each service's rollout state and step,
//! and how many rollouts were rolled back.

use prometheus::{GaugeVec, IntCounterVec, Opts, Registry};

use crate::api_types::RolloutState;

#[derive(Clone)]
pub struct RolloutMetrics {
    step: GaugeVec,
    state: GaugeVec,
    rolled_back: IntCounterVec,
}

impl RolloutMetrics {
    /// Creates the series and registers them in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let step = GaugeVec::new(
            Opts::new(
                "xdplb_rollout_step_percent",
                "The canaries' percent of new flows at the current step of the service's \
                 rollout (its last one's once over).",
            ),
            &["service"],
        )?;
        let state = GaugeVec::new(
            Opts::new(
                "xdplb_rollout_state",
                "1 for the state the service's rollout is in (running, paused, completed, \
                 rolled_back, aborted), 0 for the others.",
            ),
            &["service", "state"],
        )?;
        let rolled_back = IntCounterVec::new(
            Opts::new(
                "xdplb_rollouts_rolled_back_total",
                "Rollouts of the service rolled back by a breached condition.",
            ),
            &["service"],
        )?;
        registry.register(Box::new(step.clone()))?;
        registry.register(Box::new(state.clone()))?;
        registry.register(Box::new(rolled_back.clone()))?;
        Ok(RolloutMetrics {
            step,
            state,
            rolled_back,
        })
    }

    /// The service's rollout is now in `state` at `percent`.
    pub fn set(&self, service: &str, state: RolloutState, percent: u32) {
        self.step
            .with_label_values(&[service])
            .set(f64::from(percent));
        for s in RolloutState::ALL {
            let on = if s == state { 1.0 } else { 0.0 };
            self.state.with_label_values(&[service, s.word()]).set(on);
        }
        if state == RolloutState::RolledBack {
            self.rolled_back.with_label_values(&[service]).inc();
        }
    }
}
