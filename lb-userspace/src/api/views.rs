//! The JSON views of services and backends (`api_types`), made from the
//! controller's config, plan, health detail and counters.

use std::net::SocketAddr;

use lb_common::BackendCounter;

use crate::{
    api_types::{Backend, Effective, Health, Service, SlowStart},
    controller::{ControlError, Controller, DataplaneOps, HealthSource},
    ids::BackendKey,
    plan::BackendPlan,
};

/// `GET /api/v1/services`.
pub fn services<D: DataplaneOps, H: HealthSource>(
    c: &Controller<D, H>,
) -> Result<Vec<Service>, ControlError> {
    let counters = c.counters()?;
    Ok(c.config()
        .services
        .iter()
        .zip(&c.plan().services)
        .map(|(s, p)| {
            let sc = counters.services.get(&p.id).copied().unwrap_or_default();
            Service {
                name: s.name.clone(),
                vip: SocketAddr::new(s.vip, s.port),
                protocol: s.protocol,
                mode: s.mode,
                hash: s.hash,
                balance: s.balance,
                on_full: s.on_full,
                packets: sc.packets,
                bytes: sc.bytes,
                backends: p
                    .backends
                    .iter()
                    .map(|b| {
                        let bc = counters.backends.get(&b.id).copied().unwrap_or_default();
                        Backend {
                            signals: counters.signals(p, b.id),
                            ..backend(c, &s.name, b, bc)
                        }
                    })
                    .collect(),
            }
        })
        .collect())
}

/// One backend, as the answer to a `PUT` of it.
pub fn backend_of<D: DataplaneOps, H: HealthSource>(
    c: &Controller<D, H>,
    key: &BackendKey,
) -> Result<Backend, ControlError> {
    services(c)?
        .into_iter()
        .filter(|s| s.name == key.0)
        .flat_map(|s| s.backends)
        .find(|b| b.address == key.1)
        .ok_or_else(|| ControlError::NoBackend {
            service: key.0.clone(),
            addr: key.1,
        })
}

fn backend<D: DataplaneOps, H: HealthSource>(
    c: &Controller<D, H>,
    service: &str,
    b: &BackendPlan,
    counters: BackendCounter,
) -> Backend {
    let key = (service.to_owned(), b.addr);
    let check = c.health_status(&key);
    Backend {
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
        packets: counters.packets,
        bytes: counters.bytes,
        flows: counters.flows,
        check,
        effective_weight: b.effective_weight(),
        slow_start: b.ramp.map(|r| SlowStart {
            percent: r.percent(),
            remaining_ms: c.slow_start_remaining(&key).unwrap_or_default().as_millis() as u64,
        }),
        max_flows: (b.entry.max_flows != 0).then_some(b.entry.max_flows),
        signals: Default::default(),
    }
}
