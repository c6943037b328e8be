//! What a new config changes compared with the one in force: what a
//! reload may not change, and the summary it reports.

use std::net::SocketAddr;

use crate::{
    api_types::ReloadSummary,
    config::{BackendConfig, Config},
    health::Target,
    ids::BackendKey,
};

pub(super) fn backend_configs(cfg: &Config) -> impl Iterator<Item = (BackendKey, &BackendConfig)> {
    cfg.services.iter().flat_map(|s| {
        s.backends
            .iter()
            .map(move |b| ((s.name.clone(), SocketAddr::new(b.address, b.port)), b))
    })
}

/// The backends health checks watch.
pub(super) fn health_targets(cfg: &Config) -> Vec<Target> {
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
/// admin socket, attachment) that `new` changes: a reload may not.
pub(super) fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
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
    if old.run_dir != new.run_dir {
        changed.push("run_dir");
    }
    if old.bgp != new.bgp {
        changed.push("bgp");
    }
    if old.flow_sync != new.flow_sync {
        changed.push("flow_sync");
    }
    changed
}

pub(super) fn summarize(old: &Config, new: &Config) -> ReloadSummary {
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
