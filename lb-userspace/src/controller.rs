//! The daemon's state and every change to it: the config in force, run-time
//! admin changes (state, weight), health, and the data plane they are
//! written to. Each change re-plans and writes only what differs, so flows
//! of untouched services and backends never notice.

use std::{collections::HashMap, net::SocketAddr, path::PathBuf};

use tracing::{info, warn};

use crate::{
    api_types::{self, ApiError, Effective, Health, ReloadSummary},
    config::{self, BackendConfig, BackendState, Config},
    dataplane::{Dataplane, DataplaneError},
    health::{HealthChecker, Target, Transition},
    ids::{BackendKey, Ids},
    metrics,
    plan::{self, Plan, Status},
};

/// A request the API could not honour: HTTP status and message.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub message: String,
}

impl Refused {
    fn new(status: u16, message: impl Into<String>) -> Self {
        Refused {
            status,
            message: message.into(),
        }
    }

    pub fn body(&self) -> ApiError {
        ApiError {
            error: self.message.clone(),
        }
    }
}

impl From<DataplaneError> for Refused {
    fn from(e: DataplaneError) -> Self {
        Refused::new(500, format!("data plane: {e}"))
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

pub struct Controller {
    config_path: PathBuf,
    config: Config,
    ids: Ids,
    overrides: HashMap<BackendKey, Override>,
    health: HealthChecker,
    dataplane: Dataplane,
    plan: Plan,
}

impl Controller {
    /// Takes over a loaded data plane: ids from whatever it adopted from
    /// pinned maps, then writes the whole config.
    pub fn new(
        config_path: PathBuf,
        config: Config,
        mut dataplane: Dataplane,
        health: HealthChecker,
    ) -> Result<Controller, anyhow::Error> {
        let adopted = dataplane.adopted();
        if !adopted.services.is_empty() {
            info!(
                "adopted {} services and {} backends from pinned maps",
                adopted.services.len(),
                adopted.backends.len()
            );
        }
        let ids = Ids::adopt(&config, &adopted).map_err(anyhow::Error::msg)?;
        let plan = plan::plan(&config, &ids, |_, b| plan::configured(b));
        dataplane.apply(&plan)?;
        let mut c = Controller {
            config_path,
            config,
            ids,
            overrides: HashMap::new(),
            health,
            dataplane,
            plan,
        };
        c.health.set_targets(health_targets(&c.config));
        Ok(c)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    pub fn dataplane_mut(&mut self) -> &mut Dataplane {
        &mut self.dataplane
    }

    fn status(&self, key: &BackendKey, b: &BackendConfig) -> Status {
        let o = self.overrides.get(key);
        Status {
            admin: o.and_then(|o| o.state).unwrap_or(b.state),
            weight: o.and_then(|o| o.weight).unwrap_or(b.weight),
            up: self.health.is_up(key),
        }
    }

    /// Re-plans from the current inputs and writes the differences.
    fn replan(&mut self) -> Result<(), DataplaneError> {
        let plan = plan::plan(&self.config, &self.ids, |k, b| self.status(k, b));
        self.dataplane.apply(&plan)?;
        self.plan = plan;
        Ok(())
    }

    /// A health check changed a backend's state.
    pub fn on_health(&mut self, t: &Transition) {
        if let Err(e) = self.replan() {
            warn!("applying the health change of {}/{}: {e}", t.key.0, t.key.1);
        }
    }

    /// `PUT .../backends/{addr}`: admin state and/or weight.
    pub fn update_backend(
        &mut self,
        service: &str,
        addr: SocketAddr,
        state: Option<BackendState>,
        weight: Option<u32>,
    ) -> Result<api_types::Backend, Refused> {
        let svc = self
            .config
            .services
            .iter()
            .find(|s| s.name == service)
            .ok_or_else(|| Refused::new(404, format!("no service named {service:?}")))?;
        let b = svc
            .backends
            .iter()
            .find(|b| SocketAddr::new(b.address, b.port) == addr)
            .ok_or_else(|| Refused::new(404, format!("service {service} has no backend {addr}")))?;
        if state.is_none() && weight.is_none() {
            return Err(Refused::new(400, "give \"state\" and/or \"weight\""));
        }
        if let Some(w) = weight
            && w > config::MAX_WEIGHT
        {
            return Err(Refused::new(
                400,
                format!("weight {w} is above the maximum {}", config::MAX_WEIGHT),
            ));
        }
        let key = (service.to_owned(), addr);
        let o = self.overrides.entry(key.clone()).or_default();
        o.baseline = (b.state, b.weight);
        o.state = state.or(o.state);
        o.weight = weight.or(o.weight);
        info!(
            "{service}/{addr}: set{}{}",
            state.map(|s| format!(" state {s:?}")).unwrap_or_default(),
            weight.map(|w| format!(" weight {w}")).unwrap_or_default()
        );
        self.replan()?;
        Ok(self.backend_view(&key))
    }

    /// Re-reads the config file and applies the difference. An invalid file,
    /// or one changing what only a restart can change, leaves everything
    /// exactly as it was.
    pub fn reload(&mut self) -> Result<ReloadSummary, Refused> {
        let new = Config::load(&self.config_path).map_err(|e| Refused::new(400, e.to_string()))?;
        config::check_host(&new).map_err(|e| Refused::new(400, e.to_string()))?;
        restart_only_changes(&self.config, &new).map_err(|m| Refused::new(400, m))?;
        let mut ids = self.ids.clone();
        ids.assign(&new).map_err(|m| Refused::new(400, m))?;

        let summary = summarize(&self.config, &new);
        let old = std::mem::replace(&mut self.config, new);
        let old_ids = std::mem::replace(&mut self.ids, ids);
        // Admin changes survive unless the config now says otherwise.
        let keep: Vec<(BackendKey, (BackendState, u32))> = backend_configs(&self.config)
            .map(|(k, b)| (k, (b.state, b.weight)))
            .collect();
        let old_overrides = self.overrides.clone();
        self.overrides
            .retain(|k, o| keep.iter().any(|(kk, now)| kk == k && *now == o.baseline));
        if let Err(e) = self.replan() {
            // Put the old state back; the maps hold a mix until that succeeds.
            self.config = old;
            self.ids = old_ids;
            self.overrides = old_overrides;
            let _ = self.replan();
            return Err(e.into());
        }
        self.health.set_targets(health_targets(&self.config));
        info!("reloaded {}: {summary:?}", self.config_path.display());
        Ok(summary)
    }

    /// Which backend a packet from `src` to `dst` goes to, and why: the
    /// flow table first (as the program does), else the flow hash into the
    /// service's Maglev ring.
    pub fn explain(
        &self,
        src: SocketAddr,
        dst: SocketAddr,
        protocol: config::Protocol,
    ) -> Result<api_types::Explanation, Refused> {
        if src.is_ipv4() != dst.is_ipv4() {
            return Err(Refused::new(
                400,
                "src and dst must be of one address family",
            ));
        }
        let (s, family) = plan::addr_words(src.ip());
        let (d, _) = plan::addr_words(dst.ip());
        let key = lb_common::FlowKey {
            src: s,
            dst: d,
            sport: src.port().to_be(),
            dport: dst.port().to_be(),
            proto: protocol.number(),
            family,
            _pad: [0; 2],
        };
        let svc = [dst.port(), 0].iter().find_map(|port| {
            self.plan.services.iter().find(|p| {
                p.key.addr == d && u16::from_be(p.key.port) == *port && p.key.proto == key.proto
            })
        });
        let mut answer = api_types::Explanation {
            service: svc.map(|p| p.name.clone()),
            backend: None,
            existing_flow: false,
            hash: None,
            ring_index: None,
            reason: String::new(),
        };
        let Some(svc) = svc else {
            answer.reason = format!("{dst}/{protocol} is not a VIP: the kernel gets it");
            return Ok(answer);
        };
        let addr_of = |id: u32| {
            svc.backends
                .iter()
                .find(|b| b.id == id)
                .map(|b| (b.addr, b.entry.state))
        };
        if let Some(flow) = self.dataplane.flow(&key)?
            && let Some((addr, state)) = addr_of(flow.backend)
            && (state == lb_common::STATE_READY || state == lb_common::STATE_DRAIN)
        {
            answer.backend = Some(addr);
            answer.existing_flow = true;
            answer.reason = format!("an existing flow of service {}, kept on {addr}", svc.name);
            return Ok(answer);
        }
        let m = self.plan.globals.ring_size;
        let h = lb_common::hash::flow_hash(&key, svc.hash, self.plan.globals.hash_seed);
        let index = h % m;
        answer.hash = Some(h);
        answer.ring_index = Some(index);
        match addr_of(svc.ring[index as usize]) {
            Some((addr, _)) => {
                answer.backend = Some(addr);
                answer.reason = format!(
                    "a new flow of service {}: hash {h:#010x}, ring entry {index} of {m} -> {addr}",
                    svc.name
                );
            }
            None => answer.reason = format!("service {} has no usable backend: dropped", svc.name),
        }
        Ok(answer)
    }

    pub fn services_view(&self) -> Result<Vec<api_types::Service>, Refused> {
        let (sids, bids) = self.ids_in_plan();
        let c = self.dataplane.counters(&sids, &bids)?;
        Ok(self
            .config
            .services
            .iter()
            .zip(&self.plan.services)
            .map(|(s, p)| api_types::Service {
                name: s.name.clone(),
                vip: SocketAddr::new(s.vip, s.port),
                protocol: s.protocol,
                mode: s.mode,
                hash: s.hash,
                packets: c.services[&p.id].packets,
                bytes: c.services[&p.id].bytes,
                backends: p
                    .backends
                    .iter()
                    .map(|b| self.view(&s.name, b, c.backends[&b.id]))
                    .collect(),
            })
            .collect())
    }

    fn backend_view(&self, key: &BackendKey) -> api_types::Backend {
        let b = self
            .plan
            .services
            .iter()
            .filter(|s| s.name == key.0)
            .flat_map(|s| &s.backends)
            .find(|b| b.addr == key.1)
            .expect("backend in plan");
        let c = self
            .dataplane
            .counters(&[], &[b.id])
            .ok()
            .and_then(|c| c.backends.get(&b.id).copied())
            .unwrap_or_default();
        self.view(&key.0, b, c)
    }

    fn view(
        &self,
        service: &str,
        b: &plan::BackendPlan,
        c: lb_common::BackendCounter,
    ) -> api_types::Backend {
        let check = self.health.status(&(service.to_owned(), b.addr));
        api_types::Backend {
            address: b.addr,
            weight: b.weight,
            state: b.admin,
            health: match &check {
                None => Health::Unchecked,
                Some(s) if s.up => Health::Up,
                Some(_) => Health::Down,
            },
            effective: match b.entry.state {
                lb_common::STATE_READY => Effective::Ready,
                lb_common::STATE_DRAIN => Effective::Drain,
                lb_common::STATE_MAINT => Effective::Maint,
                _ => Effective::Down,
            },
            packets: c.packets,
            bytes: c.bytes,
            flows: c.flows,
            check,
        }
    }

    fn ids_in_plan(&self) -> (Vec<u32>, Vec<u32>) {
        let sids = self.plan.services.iter().map(|s| s.id).collect();
        let bids = self
            .plan
            .services
            .iter()
            .flat_map(|s| s.backends.iter().map(|b| b.id))
            .collect();
        (sids, bids)
    }

    /// `/metrics` from the data plane's counters and the plan.
    pub fn metrics(&self) -> Result<String, DataplaneError> {
        metrics::render(&self.dataplane, &self.plan)
    }
}

fn backend_configs(cfg: &Config) -> impl Iterator<Item = (BackendKey, &BackendConfig)> {
    cfg.services.iter().flat_map(|s| {
        s.backends
            .iter()
            .map(move |b| ((s.name.clone(), SocketAddr::new(b.address, b.port)), b))
    })
}

fn health_targets(cfg: &Config) -> Vec<Target> {
    cfg.services
        .iter()
        .filter_map(|s| s.health_check.as_ref().map(|hc| (s, hc)))
        .flat_map(|(s, hc)| {
            s.backends.iter().map(move |b| Target {
                key: (s.name.clone(), SocketAddr::new(b.address, b.port)),
                check: hc.clone(),
            })
        })
        .collect()
}

/// Settings fixed at load time (map sizes, where state is pinned, the
/// admin socket, attachment): a reload that changes them is refused.
fn restart_only_changes(old: &Config, new: &Config) -> Result<(), String> {
    let mut changed = Vec::new();
    if old.limits != new.limits {
        changed.push("limits");
    }
    if old.interfaces != new.interfaces {
        changed.push("interfaces");
    }
    if old.xdp_mode != new.xdp_mode {
        changed.push("xdp_mode");
    }
    if old.admin != new.admin {
        changed.push("admin");
    }
    if old.pin_dir != new.pin_dir {
        changed.push("pin_dir");
    }
    if changed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} cannot change on reload; restart xdplb (pinned state keeps flows)",
            changed.join(", ")
        ))
    }
}

fn summarize(old: &Config, new: &Config) -> ReloadSummary {
    let mut s = ReloadSummary::default();
    for n in &new.services {
        match old.services.iter().find(|o| o.name == n.name) {
            None => s.services_added.push(n.name.clone()),
            Some(o) if o != n => s.services_changed.push(n.name.clone()),
            Some(_) => {}
        }
    }
    for o in &old.services {
        if !new.services.iter().any(|n| n.name == o.name) {
            s.services_removed.push(o.name.clone());
        }
    }
    let label = |(k, _): &(BackendKey, &BackendConfig)| format!("{}/{}", k.0, k.1);
    let old_b: Vec<_> = backend_configs(old).collect();
    let new_b: Vec<_> = backend_configs(new).collect();
    s.backends_added = new_b
        .iter()
        .filter(|n| !old_b.iter().any(|o| o.0 == n.0))
        .map(label)
        .collect();
    s.backends_removed = old_b
        .iter()
        .filter(|o| !new_b.iter().any(|n| n.0 == o.0))
        .map(label)
        .collect();
    s
}
