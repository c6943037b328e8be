//! Packets and bytes per second: the difference of the API's counters
//! between two reads, `--interval` apart.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api_types::{Handshakes, Service};

/// `GET /api/v1/services` and when it was answered.
pub struct Sample {
    pub services: Vec<Service>,
    pub at: Instant,
}

/// Per second, between two samples.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rate {
    pub packets_per_second: f64,
    pub bytes_per_second: f64,
}

/// A backend's golden signals between two samples (`api_types::Signals`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SignalRates {
    pub new_flows_per_second: f64,
    pub bytes_sent_per_second: f64,
    /// None where the mode does not see it (dsr, tunnel).
    pub bytes_received_per_second: Option<f64>,
    /// The handshakes of the interval.
    pub handshakes: Option<Handshakes>,
}

/// Rates of the services and backends present in both samples whose
/// counters did not go backwards (a daemon restart resets them).
#[derive(Clone, Debug, Default)]
pub struct Rates {
    services: HashMap<String, Rate>,
    backends: HashMap<(String, SocketAddr), Rate>,
    signals: HashMap<(String, SocketAddr), SignalRates>,
}

impl Rates {
    pub fn between(before: &Sample, after: &Sample) -> Rates {
        let seconds = after.at.duration_since(before.at).as_secs_f64();
        let mut rates = Rates::default();
        if seconds <= 0.0 {
            return rates;
        }
        let rate = |p0: u64, b0: u64, p1: u64, b1: u64| {
            (p1 >= p0 && b1 >= b0).then(|| Rate {
                packets_per_second: (p1 - p0) as f64 / seconds,
                bytes_per_second: (b1 - b0) as f64 / seconds,
            })
        };
        for new in &after.services {
            let Some(old) = before.services.iter().find(|s| s.name == new.name) else {
                continue;
            };
            if let Some(r) = rate(old.packets, old.bytes, new.packets, new.bytes) {
                rates.services.insert(new.name.clone(), r);
            }
            for nb in &new.backends {
                let Some(ob) = old.backends.iter().find(|b| b.address == nb.address) else {
                    continue;
                };
                if let Some(r) = rate(ob.packets, ob.bytes, nb.packets, nb.bytes) {
                    rates.backends.insert((new.name.clone(), nb.address), r);
                }
                let (o, n) = (&ob.signals, &nb.signals);
                let per_second = |a: u64, b: u64| (b >= a).then(|| (b - a) as f64 / seconds);
                let (Some(new_flows), Some(sent)) = (
                    per_second(ob.flows, nb.flows),
                    per_second(o.bytes_sent, n.bytes_sent),
                ) else {
                    continue;
                };
                let received = match (o.bytes_received, n.bytes_received) {
                    (Some(a), Some(b)) => per_second(a, b),
                    _ => None,
                };
                let handshakes = match (&o.handshakes, &n.handshakes) {
                    (Some(a), Some(b)) => b.since(a),
                    _ => None,
                };
                rates.signals.insert(
                    (new.name.clone(), nb.address),
                    SignalRates {
                        new_flows_per_second: new_flows,
                        bytes_sent_per_second: sent,
                        bytes_received_per_second: received,
                        handshakes,
                    },
                );
            }
        }
        rates
    }

    pub fn service(&self, name: &str) -> Option<Rate> {
        self.services.get(name).copied()
    }

    pub fn backend(&self, service: &str, address: SocketAddr) -> Option<Rate> {
        self.backends.get(&(service.to_string(), address)).copied()
    }

    pub fn signals(&self, service: &str, address: SocketAddr) -> Option<&SignalRates> {
        self.signals.get(&(service.to_string(), address))
    }

    /// Adds `packets_per_second` and `bytes_per_second` to the services and
    /// backends of a `GET /api/v1/services` answer (as JSON), where known.
    pub fn add_to_json(&self, services: &mut Value) {
        let Some(services) = services.as_array_mut() else {
            return;
        };
        for svc in services {
            let Some(name) = svc.get("name").and_then(Value::as_str).map(str::to_string) else {
                continue;
            };
            if let Some(r) = self.service(&name) {
                insert_rate(svc, r);
            }
            let Some(backends) = svc.get_mut("backends").and_then(Value::as_array_mut) else {
                continue;
            };
            for b in backends {
                let address = b
                    .get("address")
                    .and_then(Value::as_str)
                    .and_then(|a| a.parse().ok());
                if let Some(r) = address.and_then(|a| self.backend(&name, a)) {
                    insert_rate(b, r);
                }
            }
        }
    }
}

fn insert_rate(object: &mut Value, rate: Rate) {
    if let Some(object) = object.as_object_mut() {
        object.insert("packets_per_second".into(), rate.packets_per_second.into());
        object.insert("bytes_per_second".into(), rate.bytes_per_second.into());
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::client::fixtures::service;

    #[test]
    fn rates_between_samples() {
        let t0 = Instant::now();
        let before = Sample {
            services: vec![service(1000)],
            at: t0,
        };
        let after = Sample {
            services: vec![service(3000)],
            at: t0 + Duration::from_secs(2),
        };
        let rates = Rates::between(&before, &after);
        let r = rates.service("web").unwrap();
        assert_eq!(r.packets_per_second, 1000.0);
        assert_eq!(r.bytes_per_second, 100_000.0);
        let addr = "198.18.1.11:8080".parse().unwrap();
        assert_eq!(
            rates.backend("web", addr).unwrap().packets_per_second,
            1000.0
        );

        let mut json = serde_json::to_value(&after.services).unwrap();
        rates.add_to_json(&mut json);
        assert_eq!(json[0]["packets_per_second"], 1000.0);
        assert_eq!(json[0]["backends"][0]["bytes_per_second"], 100_000.0);

        // Counters reset (daemon restarted): no rate rather than nonsense.
        let rates = Rates::between(
            &after,
            &Sample {
                at: t0 + Duration::from_secs(3),
                ..before
            },
        );
        assert!(rates.service("web").is_none());
        assert!(rates.backend("web", addr).is_none());
    }
}
