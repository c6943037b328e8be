//! Canary rollouts in the controller (`crate::rollout` has the state
//! machine): a running or paused rollout is one more layer of run-time
//! weights, above the admin changes (`Override`), applied in every plan:
//! the canaries `ready` at the step's weight, the other backends as they
//! are (weight 0 at 100%). Rolling back or aborting removes the layer, so
//! the weights in force before the start come back exactly; a completed
//! rollout's weights become admin changes (they last like a `PUT`).
//!
//! While a rollout holds a service, its weights are the rollout's: weight
//! changes of its backends and state changes of its canaries are refused.
//! A reload keeps it (the weights are applied to the new config) unless
//! the service or a canary is gone: then it is aborted. The rollouts are
//! in memory only: after a restart the config's weights are in force.

use std::{collections::HashMap, net::SocketAddr, time::Instant};

use tokio::sync::watch;
use tracing::{info, warn};

use super::{ControlError, Controller, DataplaneOps, HealthSource, Inputs};
use crate::{
    api_types::{self, BackendState, RolloutRequest, RolloutState},
    config::{BackendConfig, Config, Mode, Protocol},
    ids::BackendKey,
    plan::Status,
    rollout::{self, Rollout, Spec, Totals, Verdict, weights},
};

/// `POST /api/v1/rollouts/{service}/{action}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutAction {
    Pause,
    Resume,
    Abort,
}

/// The run-time (state, weight) each active rollout gives its backends.
pub(super) type Layer = HashMap<BackendKey, (Option<BackendState>, u32)>;

/// The layer of every active rollout of `inputs`; `status`: each
/// backend's status without rollouts.
pub(super) fn layer(
    inputs: &Inputs,
    status: impl Fn(&BackendKey, &BackendConfig) -> Status,
) -> Layer {
    let mut out = Layer::new();
    for r in inputs.rollouts.values().filter(|r| r.active()) {
        let Some(svc) = inputs
            .config
            .services
            .iter()
            .find(|s| s.name == r.spec.service)
        else {
            continue;
        };
        let key = |b: &BackendConfig| (svc.name.clone(), SocketAddr::new(b.address, b.port));
        let others: u64 = svc
            .backends
            .iter()
            .filter(|b| !r.spec.canaries.contains(&key(b).1))
            .map(|b| status(&key(b), b))
            .filter(Status::takes_new_flows)
            .map(|s| u64::from(s.weight))
            .sum();
        let percent = r.percent();
        let w = weights::canary_weight(others, r.spec.canaries.len(), percent);
        for b in &svc.backends {
            let k = key(b);
            if r.spec.canaries.contains(&k.1) {
                out.insert(k, (Some(BackendState::Ready), w));
            } else if percent == 100 {
                out.insert(k, (None, 0));
            }
        }
    }
    out
}

/// Whether the service sees resets, answers and handshakes.
fn nat_tcp(cfg: &Config, service: &str) -> bool {
    cfg.services
        .iter()
        .any(|s| s.name == service && s.mode == Mode::Nat && s.protocol == Protocol::Tcp)
}

impl<D: DataplaneOps, H: HealthSource> Controller<D, H> {
    /// `POST /api/v1/rollouts`: starts a rollout (refused, with nothing
    /// changed, if the request or the service does not allow it).
    pub fn start_rollout(
        &mut self,
        req: &RolloutRequest,
    ) -> Result<api_types::Rollout, ControlError> {
        let mut spec = Spec::from_request(req).map_err(ControlError::BadRequest)?;
        let svc = self
            .inputs
            .config
            .services
            .iter()
            .find(|s| s.name == spec.service)
            .ok_or_else(|| ControlError::NoService(spec.service.clone()))?;
        let addrs: Vec<SocketAddr> = svc
            .backends
            .iter()
            .map(|b| SocketAddr::new(b.address, b.port))
            .collect();
        if let Some(&addr) = spec.canaries.iter().find(|c| !addrs.contains(c)) {
            return Err(ControlError::NoBackend {
                service: spec.service,
                addr,
            });
        }
        if let Some(r) = self
            .inputs
            .rollouts
            .get(&spec.service)
            .filter(|r| r.active())
        {
            return Err(ControlError::Conflict(format!(
                "a rollout of {} is {} already (step {}%): abort it first",
                spec.service,
                r.state.word(),
                r.percent()
            )));
        }
        if addrs.len() == spec.canaries.len() {
            return Err(ControlError::BadRequest(format!(
                "every backend of {} is a canary: no other backend to move new flows from",
                spec.service
            )));
        }
        let nat_tcp = nat_tcp(&self.inputs.config, &spec.service);
        if req.abort_if.is_none() {
            // The defaults the service can judge.
            spec.conditions.retain(|c| c.measurable(nat_tcp));
        } else if let Some(c) = spec.conditions.iter().find(|c| !c.measurable(nat_tcp)) {
            return Err(ControlError::BadRequest(format!(
                "{c} cannot be judged on {}: resets, answers and handshakes are seen in nat \
                 mode over TCP only",
                spec.service
            )));
        }
        let statuses: Vec<(SocketAddr, Status)> = svc
            .backends
            .iter()
            .map(|b| {
                let key = (spec.service.clone(), SocketAddr::new(b.address, b.port));
                (key.1, self.status(&key, b))
            })
            .collect();
        if !statuses
            .iter()
            .any(|(a, s)| !spec.canaries.contains(a) && s.takes_new_flows())
        {
            return Err(ControlError::BadRequest(format!(
                "no backend of {} other than the canaries takes new flows (ready, up, weight \
                 above 0): nothing to move new flows from",
                spec.service
            )));
        }
        let baseline = statuses
            .iter()
            .map(|(a, s)| rollout::baseline(*a, s.admin, s.weight))
            .collect();
        let totals = self.canary_totals(&spec)?;
        let now = (self.clock)();
        let service = spec.service.clone();
        let r = Rollout::start(spec, now, totals, baseline);
        info!(
            "{service}: rollout of {} started: steps {:?} every {}, abort if {}",
            list(&r.spec.canaries),
            r.spec.steps,
            humantime::format_duration(r.spec.every),
            rollout::conditions::format(&r.spec.conditions)
        );
        self.change(|inputs| {
            inputs.rollouts.insert(service.clone(), r);
        })?;
        self.rollout_changed(&service);
        self.rollout(&service)
    }

    /// `POST /api/v1/rollouts/{service}/pause|resume|abort`.
    pub fn rollout_action(
        &mut self,
        service: &str,
        action: RolloutAction,
    ) -> Result<api_types::Rollout, ControlError> {
        let now = (self.clock)();
        let r = self.rollout_mut(service)?;
        let done = match action {
            RolloutAction::Pause => r.pause(now),
            RolloutAction::Resume => r.resume(now),
            RolloutAction::Abort if r.active() => {
                r.end(
                    RolloutState::Aborted,
                    Some("aborted by the operator".into()),
                    now,
                );
                Ok(())
            }
            RolloutAction::Abort => Err(format!(
                "the rollout of {service} is over ({}): nothing to abort",
                r.state.word()
            )),
        };
        done.map_err(ControlError::Conflict)?;
        info!("{service}: rollout {action:?}");
        if action == RolloutAction::Abort
            && let Err(e) = self.replan()
        {
            warn!(
                "{service}: restoring the weights after the abort: {e} (tried again at the next change)"
            );
        }
        self.rollout_changed(service);
        self.rollout(service)
    }

    /// Every rollout: running or paused, else the last of each service.
    pub fn rollouts(&self) -> Vec<api_types::Rollout> {
        let now = (self.clock)();
        self.inputs
            .rollouts
            .values()
            .map(|r| r.view(now, self.canary_share(r)))
            .collect()
    }

    /// The rollout of `service` (running or paused, else its last one).
    pub fn rollout(&self, service: &str) -> Result<api_types::Rollout, ControlError> {
        let now = (self.clock)();
        self.inputs
            .rollouts
            .get(service)
            .map(|r| r.view(now, self.canary_share(r)))
            .ok_or_else(|| self.no_rollout(service))
    }

    /// When the next rollout check is due, kept current (`run_when_due`
    /// follows it and calls `rollout_check`).
    pub fn rollout_checks(&self) -> watch::Receiver<Option<Instant>> {
        self.rollout_due.subscribe()
    }

    /// Judges every running rollout's window and moves its steps on: rolls
    /// back a breach, completes a rollout held at 100%.
    pub fn rollout_check(&mut self) {
        let now = (self.clock)();
        let running: Vec<String> = self
            .inputs
            .rollouts
            .values()
            .filter(|r| r.state == RolloutState::Running)
            .map(|r| r.spec.service.clone())
            .collect();
        for service in running {
            let spec = self.inputs.rollouts[&service].spec.clone();
            let totals = match self.canary_totals(&spec) {
                Ok(t) => t,
                Err(e) => {
                    warn!("{service}: reading the canaries' counters: {e}");
                    continue;
                }
            };
            let down = spec
                .canaries
                .iter()
                .find(|a| !self.health.is_up(&(service.clone(), **a)))
                .map(SocketAddr::to_string);
            let r = self.inputs.rollouts.get_mut(&service).expect("listed");
            match r.check(now, &totals, down) {
                Verdict::Hold => continue,
                Verdict::Step(p) => info!("{service}: rollout at {p}%"),
                Verdict::RollBack(why) => {
                    warn!("{service}: rollout rolled back: {why}");
                    r.end(RolloutState::RolledBack, Some(why), now);
                }
                Verdict::Completed => {
                    self.keep_final_weights(&service);
                    let r = self.inputs.rollouts.get_mut(&service).expect("listed");
                    r.end(RolloutState::Completed, None, now);
                    info!("{service}: rollout completed: the canaries take every new flow");
                }
            }
            if let Err(e) = self.replan() {
                warn!(
                    "{service}: applying the rollout's weights: {e} (tried again at the next change)"
                );
            }
            self.rollout_changed(&service);
        }
        self.publish_rollout_due();
    }

    /// A completed rollout's weights become admin changes (against the
    /// config's values, like a `PUT`): they last until the config says
    /// something new about those backends.
    fn keep_final_weights(&mut self, service: &str) {
        let status = |k: &BackendKey, b: &BackendConfig| self.status(k, b);
        let layer = layer(&self.inputs, status);
        let Some(svc) = self
            .inputs
            .config
            .services
            .iter()
            .find(|s| s.name == service)
        else {
            return;
        };
        for b in &svc.backends {
            let key = (service.to_owned(), SocketAddr::new(b.address, b.port));
            if let Some(&(state, weight)) = layer.get(&key) {
                let o = self.inputs.overrides.entry(key).or_default();
                o.baseline = (b.state, b.weight);
                o.state = state.or(o.state);
                o.weight = Some(weight);
            }
        }
    }

    /// The rollouts a reload to `new` must abort, and why: their service or
    /// a canary is gone.
    pub(super) fn rollouts_lost(&self, new: &Config) -> Vec<(String, String)> {
        self.inputs
            .rollouts
            .values()
            .filter(|r| r.active())
            .filter_map(|r| {
                let name = &r.spec.service;
                let Some(svc) = new.services.iter().find(|s| &s.name == name) else {
                    return Some((name.clone(), format!("the reload removed service {name}")));
                };
                let gone: Vec<SocketAddr> = r
                    .spec
                    .canaries
                    .iter()
                    .copied()
                    .filter(|c| {
                        !svc.backends
                            .iter()
                            .any(|b| SocketAddr::new(b.address, b.port) == *c)
                    })
                    .collect();
                (!gone.is_empty()).then(|| {
                    (
                        name.clone(),
                        format!("the reload removed canary {}", list(&gone)),
                    )
                })
            })
            .collect()
    }

    /// Aborts `lost` (from `rollouts_lost`) in `inputs`.
    pub(super) fn abort_lost(inputs: &mut Inputs, lost: &[(String, String)], now: Instant) {
        for (service, why) in lost {
            if let Some(r) = inputs.rollouts.get_mut(service) {
                r.end(RolloutState::Aborted, Some(why.clone()), now);
            }
        }
    }

    /// Refuses an admin change a rollout of the service owns.
    pub(super) fn check_rollout_owns(
        &self,
        service: &str,
        addr: SocketAddr,
        state: Option<BackendState>,
        weight: Option<u32>,
    ) -> Result<(), ControlError> {
        let Some(r) = self.inputs.rollouts.get(service).filter(|r| r.active()) else {
            return Ok(());
        };
        let canary = r.spec.canaries.contains(&addr);
        if weight.is_some() || (canary && state.is_some()) {
            return Err(ControlError::Conflict(format!(
                "a rollout of {service} is {} and sets its weights{}: abort it first \
                 (xdplb rollout abort {service})",
                r.state.word(),
                if canary {
                    " and its canaries' state"
                } else {
                    ""
                }
            )));
        }
        Ok(())
    }

    /// Metrics and the next check after a rollout changed.
    pub(super) fn rollout_changed(&self, service: &str) {
        if let (Some(m), Some(r)) = (&self.rollout_metrics, self.inputs.rollouts.get(service)) {
            m.set(service, r.state, r.percent());
        }
        self.publish_rollout_due();
    }

    fn publish_rollout_due(&self) {
        let now = (self.clock)();
        let due = self
            .inputs
            .rollouts
            .values()
            .filter_map(|r| r.next_check(now))
            .min();
        self.rollout_due
            .send_if_modified(|d| std::mem::replace(d, due) != due);
    }

    fn rollout_mut(&mut self, service: &str) -> Result<&mut Rollout, ControlError> {
        let e = self.no_rollout(service);
        self.inputs.rollouts.get_mut(service).ok_or(e)
    }

    fn no_rollout(&self, service: &str) -> ControlError {
        if self
            .inputs
            .config
            .services
            .iter()
            .any(|s| s.name == service)
        {
            ControlError::NoRollout(service.to_owned())
        } else {
            ControlError::NoService(service.to_owned())
        }
    }

    /// The canaries' counters now, summed.
    fn canary_totals(&self, spec: &Spec) -> Result<Totals, ControlError> {
        let mut totals = Totals::default();
        let Some(svc) = self.plan.services.iter().find(|s| s.name == spec.service) else {
            return Ok(totals);
        };
        let ids: Vec<u32> = svc
            .backends
            .iter()
            .filter(|b| spec.canaries.contains(&b.addr))
            .map(|b| b.id)
            .collect();
        let counters = self.dataplane.counters(&[], &ids)?;
        for id in ids {
            let flows = counters.backends.get(&id).map_or(0, |c| c.flows);
            totals.add(flows, &counters.signals(svc, id));
        }
        Ok(totals)
    }

    /// The canaries' share of the service's effective weights in the plan
    /// in force, percent.
    fn canary_share(&self, r: &Rollout) -> f64 {
        let Some(svc) = self.plan.services.iter().find(|s| s.name == r.spec.service) else {
            return 0.0;
        };
        let (mut canaries, mut all) = (0.0, 0.0);
        for b in &svc.backends {
            let w = b.effective_weight();
            all += w;
            if r.spec.canaries.contains(&b.addr) {
                canaries += w;
            }
        }
        if all == 0.0 {
            0.0
        } else {
            100.0 * canaries / all
        }
    }
}

fn list(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(SocketAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
