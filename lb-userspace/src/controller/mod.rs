//! The daemon's state and every change to it: the config in force, run-time
//! admin changes (state, weight), health, and the data plane they are
//! written to. Each change re-plans from those inputs and writes only what
//! differs, so flows of untouched services and backends never notice. A
//! change whose write fails is rolled back (docs/architecture.md, "Control
//! plane").
//!
//! The data plane and the health checker sit behind small traits
//! (`DataplaneOps`, `HealthSource`): the daemon uses the kernel's and the
//! real checker, the unit tests (`tests.rs`) fakes.

mod diff;
mod due;
mod error;
mod explain;
mod rollouts;
mod slow_start;
#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock},
    time::{Duration, Instant},
};

use tokio::sync::watch;
use tracing::{error, info, warn};

pub use crate::dataplane::DataplaneOps;
pub use due::run_when_due;
pub use error::ControlError;
pub use rollouts::RolloutAction;

use crate::{
    api_types::{NodeState, ReloadSummary},
    config::{self, BackendConfig, BackendState, Config},
    dataplane::{Counters, Dataplane, DataplaneError},
    health::{self, HealthChecker, Target, Transition},
    ids::{BackendKey, Ids},
    plan::{self, Plan, Status},
    rollout::{Rollout, metrics::RolloutMetrics},
};
use slow_start::Ramps;

/// What the controller needs of health checking.
pub trait HealthSource {
    /// Checks these backends from now on (and only these).
    fn set_targets(&mut self, targets: Vec<Target>);
    /// Whether checks let the backend take traffic (true when unchecked).
    fn is_up(&self, key: &BackendKey) -> bool;
    /// The checks' detail, if the backend is checked.
    fn status(&self, key: &BackendKey) -> Option<health::Status>;
}

impl HealthSource for HealthChecker {
    fn set_targets(&mut self, targets: Vec<Target>) {
        HealthChecker::set_targets(self, targets)
    }

    fn is_up(&self, key: &BackendKey) -> bool {
        HealthChecker::is_up(self, key)
    }

    fn status(&self, key: &BackendKey) -> Option<health::Status> {
        HealthChecker::status(self, key)
    }
}

/// The plan in force, shared with readers that must not wait for the
/// controller (metrics): the lock is held only to swap or clone the `Arc`.
#[derive(Clone)]
pub struct SharedPlan(Arc<RwLock<Arc<Plan>>>);

impl SharedPlan {
    /// (The daemon's is the controller's, `Controller::shared_plan`.)
    pub fn new(plan: Arc<Plan>) -> Self {
        SharedPlan(Arc::new(RwLock::new(plan)))
    }

    pub fn get(&self) -> Arc<Plan> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, plan: Arc<Plan>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = plan;
    }
}

/// An admin change made through the API, with the config values it was
/// made against: it lasts until the config says something new about that
/// backend (then the config wins) or the backend leaves the config.
#[derive(Debug, Clone, Default)]
struct Override {
    state: Option<BackendState>,
    weight: Option<u32>,
    baseline: (BackendState, u32),
}

/// What a plan is made from, besides health: restored as a whole when a
/// change cannot be written.
#[derive(Clone)]
struct Inputs {
    config: Config,
    ids: Ids,
    overrides: HashMap<BackendKey, Override>,
    /// Canary rollouts by service: running or paused (they set weights,
    /// `rollouts::layer`), else the service's last one (shown).
    rollouts: BTreeMap<String, Rollout>,
}

pub struct Controller<D = Dataplane, H = HealthChecker> {
    config_path: PathBuf,
    inputs: Inputs,
    health: H,
    dataplane: D,
    plan: Arc<Plan>,
    shared_plan: SharedPlan,
    /// Ready or drain (holds the state; readers need no lock).
    node: watch::Sender<NodeState>,
    /// The VIPs BGP should announce (`desired_announcements`), published
    /// after every write and node change.
    announce: watch::Sender<BTreeSet<IpAddr>>,
    /// Slow start: the ramps in progress, and when the next step is due
    /// (published after every write, for `drive_slow_start`).
    ramps: Ramps,
    ramp_step: watch::Sender<Option<Instant>>,
    /// When the next rollout check is due (`rollout_check`).
    rollout_due: watch::Sender<Option<Instant>>,
    rollout_metrics: Option<RolloutMetrics>,
    /// The time ramps and rollouts are measured with (a fake one in tests).
    clock: Box<dyn Fn() -> Instant + Send>,
    /// Rings a reload built ahead, without the lock (`prepare_reload`):
    /// its write reuses those whose inputs still match.
    ahead: Option<Plan>,
}

/// A reload's new config, read and checked under a short lock with what
/// its plan needs from the controller (ids, each backend's status), so
/// that its rings can be built without the lock (`build`).
pub struct ReloadAhead {
    config: Config,
    ids: Ids,
    statuses: HashMap<BackendKey, Status>,
    /// The plan in force: its rings whose inputs stay are reused.
    current: Arc<Plan>,
}

/// A reload's config and the rings built for it (`ReloadAhead::build`).
pub struct ReloadBuilt {
    config: Config,
    rings: Plan,
}

impl ReloadAhead {
    /// The rings of the new config, built on every CPU (`plan`). Those of
    /// backends whose status changes meanwhile, or that a ramp or a
    /// rollout sets, are built again by the write.
    pub fn build(self) -> ReloadBuilt {
        let status = |k: &BackendKey, b: &BackendConfig| {
            self.statuses
                .get(k)
                .copied()
                .unwrap_or_else(|| plan::configured(b))
        };
        let rings = plan::plan_ramped(&self.config, &self.ids, status, |_| None, &[&self.current]);
        ReloadBuilt {
            config: self.config,
            rings,
        }
    }
}

/// What this node announces: every usable VIP, none while drained.
fn desired_announcements(plan: &Plan, node: NodeState) -> BTreeSet<IpAddr> {
    match node {
        NodeState::Ready => plan.usable_vips(),
        NodeState::Drain => BTreeSet::new(),
    }
}

impl<D: DataplaneOps, H: HealthSource> Controller<D, H> {
    /// Takes over a loaded data plane with `ids` (from `Ids::adopt`: those
    /// of state pinned by an earlier run kept), then writes the whole
    /// config and starts checking backends. Every backend starts at its
    /// full weight: no slow start.
    pub fn new(
        config_path: PathBuf,
        config: Config,
        ids: Ids,
        mut dataplane: D,
        mut health: H,
    ) -> Result<Self, ControlError> {
        let plan = plan::plan(&config, &ids, |_, b| plan::configured(b));
        dataplane.apply(&plan)?;
        health.set_targets(diff::health_targets(&config));
        let plan = Arc::new(plan);
        let shared_plan = SharedPlan::new(plan.clone());
        let announce = watch::Sender::new(desired_announcements(&plan, NodeState::Ready));
        Ok(Controller {
            node: watch::Sender::new(NodeState::Ready),
            announce,
            config_path,
            inputs: Inputs {
                config,
                ids,
                overrides: HashMap::new(),
                rollouts: BTreeMap::new(),
            },
            health,
            dataplane,
            plan,
            shared_plan,
            ramps: Ramps::default(),
            ramp_step: watch::Sender::new(None),
            rollout_due: watch::Sender::new(None),
            rollout_metrics: None,
            clock: Box::new(Instant::now),
            ahead: None,
        })
    }

    /// Where rollouts' series go (the daemon's registry).
    pub fn set_rollout_metrics(&mut self, metrics: RolloutMetrics) {
        self.rollout_metrics = Some(metrics);
    }

    pub fn config(&self) -> &Config {
        &self.inputs.config
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The plan in force, readable without the controller (`SharedPlan`).
    pub fn shared_plan(&self) -> SharedPlan {
        self.shared_plan.clone()
    }

    pub fn node(&self) -> NodeState {
        *self.node.borrow()
    }

    /// The node state, readable without the controller (metrics, API).
    pub fn node_watch(&self) -> watch::Receiver<NodeState> {
        self.node.subscribe()
    }

    /// The VIPs to announce, kept current (the BGP task follows it).
    pub fn announcements(&self) -> watch::Receiver<BTreeSet<IpAddr>> {
        self.announce.subscribe()
    }

    /// When the next slow-start step is due, kept current
    /// (`drive_slow_start` follows it and calls `slow_start_step`).
    pub fn slow_start_steps(&self) -> watch::Receiver<Option<Instant>> {
        self.ramp_step.subscribe()
    }

    /// How long until the backend takes its full weight, while slow start
    /// ramps it (counted now; the plan's ramp is as of its last step).
    pub fn slow_start_remaining(&self, key: &BackendKey) -> Option<Duration> {
        self.ramps.ramp(key, (self.clock)()).map(|r| r.remaining)
    }

    /// Moves the slow-start ramps on: re-plans, which rebuilds only the
    /// rings of services whose ramps reached a new step. A failed write is
    /// tried again a step later.
    pub fn slow_start_step(&mut self) {
        if self.ramps.is_empty() {
            return;
        }
        if let Err(e) = self.replan() {
            warn!("applying a slow-start step: {e}");
            let retry = (self.clock)() + plan::SLOW_START_MIN_STEP;
            self.ramp_step.send_replace(Some(retry));
        }
    }

    /// `xdplb node drain|ready`: withdraw every VIP (the data plane keeps
    /// forwarding whatever still arrives) or announce the usable ones again.
    pub fn set_node(&mut self, state: NodeState) {
        if self.node.send_replace(state) != state {
            info!("node: {state:?}");
        }
        self.publish();
    }

    /// Tells the BGP task what to announce now (wakes it only on a change).
    fn publish(&self) {
        let want = desired_announcements(&self.plan, self.node());
        self.announce.send_if_modified(|now| {
            let changed = *now != want;
            *now = want;
            changed
        });
    }

    pub fn dataplane_mut(&mut self) -> &mut D {
        &mut self.dataplane
    }

    /// The health checks' detail of a backend, if it is checked.
    pub fn health_status(&self, key: &BackendKey) -> Option<health::Status> {
        self.health.status(key)
    }

    /// Counters of every service and backend in the plan.
    pub fn counters(&self) -> Result<Counters, ControlError> {
        let sids: Vec<u32> = self.plan.services.iter().map(|s| s.id).collect();
        let bids: Vec<u32> = self
            .plan
            .services
            .iter()
            .flat_map(|s| s.backends.iter().map(|b| b.id))
            .collect();
        Ok(self.dataplane.counters(&sids, &bids)?)
    }

    fn status(&self, key: &BackendKey, b: &BackendConfig) -> Status {
        let o = self.inputs.overrides.get(key);
        Status {
            admin: o.and_then(|o| o.state).unwrap_or(b.state),
            weight: o.and_then(|o| o.weight).unwrap_or(b.weight),
            up: self.health.is_up(key),
        }
    }

    /// Re-plans from the current inputs and writes the differences.
    fn replan(&mut self) -> Result<(), DataplaneError> {
        self.write(D::apply)
    }

    /// Plans from the current inputs, writes the plan with `how`, and on
    /// success makes it the plan in force.
    fn write(
        &mut self,
        how: impl FnOnce(&mut D, &Plan) -> Result<(), DataplaneError>,
    ) -> Result<(), DataplaneError> {
        let now = (self.clock)();
        let layer = rollouts::layer(&self.inputs, |k, b| self.status(k, b));
        let status = |k: &BackendKey, b: &BackendConfig| {
            let s = self.status(k, b);
            match layer.get(k) {
                Some(&(state, weight)) => Status {
                    admin: state.unwrap_or(s.admin),
                    weight,
                    ..s
                },
                None => s,
            }
        };
        let ramps = self
            .ramps
            .next(&self.plan, &self.inputs.config, status, now);
        let reusable: Vec<&Plan> = std::iter::once(&*self.plan)
            .chain(self.ahead.as_ref())
            .collect();
        let plan = plan::plan_ramped(
            &self.inputs.config,
            &self.inputs.ids,
            status,
            |k| ramps.ramp(k, now),
            &reusable,
        );
        how(&mut self.dataplane, &plan)?;
        self.plan = Arc::new(plan);
        self.shared_plan.set(self.plan.clone());
        let due = ramps.next_step(now);
        self.ramp_step
            .send_if_modified(|d| std::mem::replace(d, due) != due);
        self.ramps = ramps;
        self.publish();
        Ok(())
    }

    /// Applies `change` to the inputs and writes the result; if the write
    /// fails, the previous inputs come back and are written again.
    fn change(&mut self, change: impl FnOnce(&mut Inputs)) -> Result<(), ControlError> {
        let previous = self.inputs.clone();
        change(&mut self.inputs);
        let Err(apply) = self.replan() else {
            return Ok(());
        };
        self.inputs = previous;
        match self.replan() {
            Ok(()) => {
                warn!("a change failed to apply and was rolled back: {apply}");
                Err(ControlError::Dataplane(apply))
            }
            Err(rollback) => {
                let e = ControlError::RollbackFailed {
                    apply: Box::new(apply),
                    rollback: Box::new(rollback),
                };
                error!("{e}");
                Err(e)
            }
        }
    }

    /// Locks the controller shared by the daemon's tasks. A call that
    /// panicked while holding the lock may have left a write half done:
    /// the lock is taken back and the whole plan written again, so one bad
    /// call does not take every later one down.
    pub fn lock(shared: &Mutex<Self>) -> MutexGuard<'_, Self> {
        shared.lock().unwrap_or_else(|poisoned| {
            error!("a controller call panicked; writing the whole plan again before going on");
            shared.clear_poison();
            let mut c = poisoned.into_inner();
            if let Err(e) = c.resync() {
                error!("writing the whole plan again: {e}");
            }
            c
        })
    }

    /// Writes the whole plan again, trusting nothing remembered of earlier
    /// writes: after a call was interrupted (a panic) half way.
    pub fn resync(&mut self) -> Result<(), ControlError> {
        Ok(self.write(D::resync)?)
    }

    /// A health check changed a backend's state. Health is a fact, not a
    /// request: if the write fails there is nothing to roll back, and the
    /// next change writes it.
    pub fn on_health(&mut self, t: &Transition) {
        if let Err(e) = self.replan() {
            warn!("applying the health change of {}/{}: {e}", t.key.0, t.key.1);
        }
    }

    /// An admin change of a backend's state and/or weight (`PUT
    /// .../backends/{addr}`).
    pub fn update_backend(
        &mut self,
        service: &str,
        addr: SocketAddr,
        state: Option<BackendState>,
        weight: Option<u32>,
    ) -> Result<(), ControlError> {
        let svc = self
            .inputs
            .config
            .services
            .iter()
            .find(|s| s.name == service)
            .ok_or_else(|| ControlError::NoService(service.to_owned()))?;
        let b = svc
            .backends
            .iter()
            .find(|b| SocketAddr::new(b.address, b.port) == addr)
            .ok_or_else(|| ControlError::NoBackend {
                service: service.to_owned(),
                addr,
            })?;
        if state.is_none() && weight.is_none() {
            return Err(ControlError::BadRequest(
                "give \"state\" and/or \"weight\"".into(),
            ));
        }
        if let Some(w) = weight
            && w > config::MAX_WEIGHT
        {
            return Err(ControlError::BadRequest(format!(
                "weight {w} is above the maximum {}",
                config::MAX_WEIGHT
            )));
        }
        self.check_rollout_owns(service, addr, state, weight)?;
        let baseline = (b.state, b.weight);
        self.change(|inputs| {
            let o = inputs
                .overrides
                .entry((service.to_owned(), addr))
                .or_default();
            o.baseline = baseline;
            o.state = state.or(o.state);
            o.weight = weight.or(o.weight);
        })?;
        info!(
            "{service}/{addr}: set{}{}",
            state.map(|s| format!(" state {s:?}")).unwrap_or_default(),
            weight.map(|w| format!(" weight {w}")).unwrap_or_default()
        );
        Ok(())
    }

    /// Re-reads the config file and applies the difference. An invalid file,
    /// one changing what only a restart can change, or one whose write
    /// fails leaves everything as it was.
    pub fn reload(&mut self) -> Result<ReloadSummary, ControlError> {
        let new = Config::load(&self.config_path)?;
        self.reload_config(new)
    }

    /// A reload's first part (`Shared::reload`): reads the config file and
    /// takes what building its rings needs, so the lock is held only for
    /// this and for the write (`reload_built`), not for the Maglev builds.
    pub fn prepare_reload(&self) -> Result<ReloadAhead, ControlError> {
        let config = Config::load(&self.config_path)?;
        let mut ids = self.inputs.ids.clone();
        ids.assign(&config).map_err(ControlError::Capacity)?;
        let statuses = diff::backend_configs(&config)
            .map(|(k, b)| {
                let s = self.status(&k, b);
                (k, s)
            })
            .collect();
        Ok(ReloadAhead {
            config,
            ids,
            statuses,
            current: self.plan.clone(),
        })
    }

    /// `reload` of the config read by `prepare_reload`, reusing the rings
    /// built for it.
    pub fn reload_built(&mut self, built: ReloadBuilt) -> Result<ReloadSummary, ControlError> {
        self.ahead = Some(built.rings);
        let done = self.reload_config(built.config);
        self.ahead = None;
        done
    }

    fn reload_config(&mut self, new: Config) -> Result<ReloadSummary, ControlError> {
        config::check_host(&new)?;
        let fixed = diff::restart_only_changes(&self.inputs.config, &new);
        if !fixed.is_empty() {
            return Err(ControlError::RestartOnly(fixed));
        }
        let mut ids = self.inputs.ids.clone();
        ids.assign(&new).map_err(ControlError::Capacity)?;
        let summary = diff::summarize(&self.inputs.config, &new);
        let lost = self.rollouts_lost(&new);
        let now = (self.clock)();
        self.change(|inputs| {
            Self::abort_lost(inputs, &lost, now);
            // Admin changes survive unless the config now says otherwise.
            let now: HashMap<BackendKey, (BackendState, u32)> = diff::backend_configs(&new)
                .map(|(k, b)| (k, (b.state, b.weight)))
                .collect();
            inputs
                .overrides
                .retain(|k, o| now.get(k) == Some(&o.baseline));
            inputs.config = new;
            inputs.ids = ids;
        })?;
        self.health
            .set_targets(diff::health_targets(&self.inputs.config));
        for (service, why) in &lost {
            warn!("{service}: rollout aborted: {why}");
            self.rollout_changed(service);
        }
        info!("reloaded {}: {summary:?}", self.config_path.display());
        Ok(summary)
    }
}
