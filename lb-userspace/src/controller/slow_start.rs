//! Slow start's state: when each ramping backend began taking new flows
//! again, and when the next ramp step is due. The arithmetic is in
//! `plan::ramp`; the ring is re-planned through the controller's normal
//! path, so existing flows keep their backend and only new ones see it.
//!
//! A ramp begins when a backend of a service with `slow_start` starts
//! taking new flows (`Status::takes_new_flows`) compared with the plan in
//! force: back up after failing its checks, back to `ready` from drain or
//! maint, a weight from 0, or added by a reload. Never at start (the first
//! plan has nothing to compare with, as HAProxy starts every server at
//! full weight), nor for the backends of a service a reload adds (a ramp
//! of all of a service's backends alike would change nothing). It ends
//! after `slow_start`, or when the backend stops taking new flows; a weight
//! change meanwhile ramps to the new weight.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use crate::{
    config::{BackendConfig, Config},
    controller::diff::backend_configs,
    ids::BackendKey,
    plan::{self, Plan, Ramp, Status},
};

/// The ramps in progress: each backend's start.
#[derive(Debug, Clone, Default)]
pub(super) struct Ramps {
    started: HashMap<BackendKey, (Instant, Duration)>,
}

impl Ramps {
    /// The ramps after a change to `cfg` with backends' `status`, the plan
    /// in force being `before`: ramps go on unless over or stopped, and
    /// begin for backends that now take new flows and did not.
    pub(super) fn next(
        &self,
        before: &Plan,
        cfg: &Config,
        status: impl Fn(&BackendKey, &BackendConfig) -> Status,
        now: Instant,
    ) -> Ramps {
        let slow_start: HashMap<&str, Duration> = cfg
            .services
            .iter()
            .filter_map(|s| Some((s.name.as_str(), s.slow_start()?)))
            .collect();
        let started = backend_configs(cfg)
            .filter_map(|(key, b)| {
                let ss = *slow_start.get(key.0.as_str())?;
                if !status(&key, b).takes_new_flows() {
                    return None;
                }
                let start = match self.started.get(&key) {
                    Some(&(start, _)) => start,
                    None if took_new_flows(before, &key) != Some(false) => return None,
                    None => now,
                };
                (now.saturating_duration_since(start) < ss).then_some((key, (start, ss)))
            })
            .collect();
        Ramps { started }
    }

    /// Where `key`'s ramp is at `now`, if it ramps.
    pub(super) fn ramp(&self, key: &BackendKey, now: Instant) -> Option<Ramp> {
        let &(start, ss) = self.started.get(key)?;
        plan::ramp(ss, now.saturating_duration_since(start))
    }

    /// When the next step of any ramp is due.
    pub(super) fn next_step(&self, now: Instant) -> Option<Instant> {
        self.started
            .values()
            .map(|&(start, ss)| {
                start + plan::ramp_next_change(ss, now.saturating_duration_since(start))
            })
            .min()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.started.is_empty()
    }
}

/// Whether the backend took new flows in `plan`: None if the plan had no
/// such service (a service added by a reload does not ramp), `Some(false)`
/// if the service had it but not taking new flows, or did not have it (a
/// backend added by a reload ramps).
fn took_new_flows(plan: &Plan, key: &BackendKey) -> Option<bool> {
    let svc = plan.services.iter().find(|s| s.name == key.0)?;
    Some(
        svc.backends
            .iter()
            .find(|b| b.addr == key.1)
            .is_some_and(|b| b.effective_weight() > 0.0),
    )
}
