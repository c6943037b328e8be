//! The dashboard's memory (`GET /api/v1/history`): every [`STEP`] a task of
//! the daemon reads the data plane's counters (on map fds of its own,
//! without the controller, like `/metrics`) and keeps the rates since the
//! previous read: per service and per backend packets, bits and new flows
//! per second, the XDP verdicts and data-plane events per second, and the
//! flow table's size. [`KEEP`] samples are kept (15 minutes), per-backend
//! series for at most [`MAX_BACKENDS`] backends: memory stays bounded
//! (12 bytes a sample per backend: 1.4 MB at most; 8 per service, 3.6 kB
//! each), and a page opened later still shows the past. Kept in memory
//! only: a restart starts afresh.

use std::{
    collections::{BTreeMap, VecDeque},
    net::SocketAddr,
    sync::{
        Arc, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use tokio::time::MissedTickBehavior;

use crate::{
    api_types::{BackendHistory, History as View, HistorySeries, ServiceHistory},
    controller::SharedPlan,
    dataplane::{CounterReader, Counters},
    metrics::EVENTS,
    plan::Plan,
};

/// Time between two samples.
pub const STEP: Duration = Duration::from_secs(2);
/// Samples kept: 15 minutes.
pub const KEEP: usize = 450;
/// Backends whose series are kept (the first ones of the plan).
pub const MAX_BACKENDS: usize = 256;

/// Now, as Unix time in milliseconds (0 if the clock is before 1970).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The shared history: written by [`sample`], read by the API.
#[derive(Clone, Default)]
pub struct History(Arc<RwLock<Inner>>);

#[derive(Default)]
struct Inner {
    hostname: String,
    interfaces: Vec<String>,
    ring: Ring,
}

impl History {
    /// An empty history of this node (its hostname) and interfaces.
    pub fn new(interfaces: Vec<String>) -> Self {
        let hostname = nix::sys::utsname::uname()
            .map(|u| u.nodename().to_string_lossy().into_owned())
            .unwrap_or_default();
        History(Arc::new(RwLock::new(Inner {
            hostname,
            interfaces,
            ring: Ring::default(),
        })))
    }

    /// Adds a sample ending at `at_ms` (Unix time).
    pub fn push(&self, at_ms: u64, point: Point) {
        let mut inner = self.0.write().unwrap_or_else(PoisonError::into_inner);
        inner.ring.push(at_ms, point, KEEP);
    }

    /// The samples ending after `since_ms` (all with None).
    pub fn view(&self, since_ms: Option<u64>) -> View {
        let inner = self.0.read().unwrap_or_else(PoisonError::into_inner);
        View {
            hostname: inner.hostname.clone(),
            interfaces: inner.interfaces.clone(),
            step_ms: STEP.as_millis() as u64,
            keep_s: STEP.as_secs() * KEEP as u64,
            ..inner.ring.view(since_ms.unwrap_or(0))
        }
    }
}

/// What is kept of the whole data plane, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Total {
    ActiveFlows,
    NewFlows,
    Action(&'static str),
    Event(&'static str),
}

type BackendKey = (String, SocketAddr);

/// The rates of one sample.
#[derive(Debug, Default, PartialEq)]
pub struct Point {
    pub totals: Vec<(Total, [f32; 1])>,
    /// Packets and bits per second.
    pub services: Vec<(String, [f32; 2])>,
    /// Packets, bits and new flows per second.
    pub backends: Vec<(BackendKey, [f32; 3])>,
}

/// The rates between two readings of the counters, `secs` apart,
/// labelled from `plan` (pure: unit-tested without a kernel). A counter
/// that went back (its id reused) has no rate (NaN).
pub fn point(plan: &Plan, prev: &Counters, now: &Counters, secs: f64, flows: u64) -> Point {
    let rate = |a: u64, b: u64| {
        if b >= a {
            ((b - a) as f64 / secs) as f32
        } else {
            f32::NAN
        }
    };
    let global = |c: &Counters, slot: u32| c.global.get(slot as usize).copied().unwrap_or(0);
    let action = |c: &Counters, i: usize| c.actions.iter().map(|cpu| cpu[i]).sum::<u64>();
    let mut totals = vec![
        (Total::ActiveFlows, [flows as f32]),
        (
            Total::NewFlows,
            [rate(
                global(prev, lb_common::STAT_FLOW_NEW),
                global(now, lb_common::STAT_FLOW_NEW),
            )],
        ),
    ];
    for (i, name) in lb_common::XDP_ACTIONS.iter().enumerate() {
        totals.push((Total::Action(name), [rate(action(prev, i), action(now, i))]));
    }
    for (slot, name) in EVENTS {
        totals.push((
            Total::Event(name),
            [rate(global(prev, slot), global(now, slot))],
        ));
    }
    let mut services = Vec::new();
    let mut backends = Vec::new();
    for s in &plan.services {
        if let (Some(a), Some(b)) = (prev.services.get(&s.id), now.services.get(&s.id)) {
            services.push((
                s.name.clone(),
                [rate(a.packets, b.packets), 8.0 * rate(a.bytes, b.bytes)],
            ));
        }
        for be in &s.backends {
            if backends.len() == MAX_BACKENDS {
                break;
            }
            if let (Some(a), Some(b)) = (prev.backends.get(&be.id), now.backends.get(&be.id)) {
                backends.push((
                    (s.name.clone(), be.addr),
                    [
                        rate(a.packets, b.packets),
                        8.0 * rate(a.bytes, b.bytes),
                        rate(a.flows, b.flows),
                    ],
                ));
            }
        }
    }
    Point {
        totals,
        services,
        backends,
    }
}

/// The kept samples: one time per sample, one value per sample in every
/// series (NaN where a series had none).
#[derive(Default)]
struct Ring {
    times: VecDeque<u64>,
    totals: Columns<Total, 1>,
    services: Columns<String, 2>,
    backends: Columns<BackendKey, 3>,
}

impl Ring {
    fn push(&mut self, at_ms: u64, point: Point, keep: usize) {
        let len = self.times.len();
        self.times.push_back(at_ms);
        self.totals.push(len, point.totals);
        self.services.push(len, point.services);
        self.backends.push(len, point.backends);
        if self.times.len() > keep {
            self.times.pop_front();
            self.totals.pop_front();
            self.services.pop_front();
            self.backends.pop_front();
        }
    }

    /// The samples ending after `since_ms`.
    fn view(&self, since_ms: u64) -> View {
        let from = self.times.partition_point(|t| *t <= since_ms);
        let totals = |key: Total| self.totals.values(&key, 0, from);
        let named = |pick: fn(&Total) -> Option<&'static str>| {
            self.totals
                .0
                .keys()
                .filter_map(|k| pick(k).map(|name| (k, name)))
                .map(|(k, name)| HistorySeries {
                    name: name.to_owned(),
                    per_second: self.totals.values(k, 0, from),
                })
                .collect()
        };
        View {
            times: self.times.iter().skip(from).copied().collect(),
            active_flows: totals(Total::ActiveFlows),
            new_flows: totals(Total::NewFlows),
            actions: named(|k| match k {
                Total::Action(n) => Some(n),
                _ => None,
            }),
            events: named(|k| match k {
                Total::Event(n) => Some(n),
                _ => None,
            }),
            services: self
                .services
                .0
                .keys()
                .map(|name| ServiceHistory {
                    name: name.clone(),
                    packets: self.services.values(name, 0, from),
                    bits: self.services.values(name, 1, from),
                })
                .collect(),
            backends: self
                .backends
                .0
                .keys()
                .map(|key| BackendHistory {
                    service: key.0.clone(),
                    address: key.1,
                    packets: self.backends.values(key, 0, from),
                    bits: self.backends.values(key, 1, from),
                    flows: self.backends.values(key, 2, from),
                })
                .collect(),
            ..View::default()
        }
    }
}

/// Series of `N` values per sample, by key; a series with no value left
/// in the window is forgotten.
struct Columns<K, const N: usize>(BTreeMap<K, VecDeque<[f32; N]>>);

impl<K, const N: usize> Default for Columns<K, N> {
    fn default() -> Self {
        Columns(BTreeMap::new())
    }
}

impl<K: Ord, const N: usize> Columns<K, N> {
    /// Appends a sample to series that already held `len`: NaN to those
    /// `values` does not name, a new series NaN-filled before it.
    fn push(&mut self, len: usize, values: Vec<(K, [f32; N])>) {
        let mut values: BTreeMap<K, [f32; N]> = values.into_iter().collect();
        for (key, series) in &mut self.0 {
            series.push_back(values.remove(key).unwrap_or([f32::NAN; N]));
        }
        for (key, value) in values {
            let mut series: VecDeque<_> = std::iter::repeat_n([f32::NAN; N], len).collect();
            series.push_back(value);
            self.0.insert(key, series);
        }
    }

    fn pop_front(&mut self) {
        self.0.retain(|_, series| {
            series.pop_front();
            series.iter().flatten().any(|v| !v.is_nan())
        });
    }

    /// Value `i` of every sample from `from` on; None for NaN, rounded to
    /// a tenth.
    fn values(&self, key: &K, i: usize, from: usize) -> Vec<Option<f64>> {
        self.0.get(key).map_or_else(Vec::new, |series| {
            series
                .iter()
                .skip(from)
                .map(|v| {
                    let v = f64::from(v[i]);
                    (!v.is_nan()).then(|| (v * 10.0).round() / 10.0)
                })
                .collect()
        })
    }
}

/// Every [`STEP`]: reads the counters and adds the rates since the last
/// read to `history`. Returns its name if it ever ends (never).
pub async fn sample(
    history: History,
    plan: SharedPlan,
    mut counters: CounterReader,
    flow_entries: Arc<AtomicU64>,
) -> &'static str {
    let mut tick = tokio::time::interval(STEP);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last: Option<(Instant, Counters)> = None;
    let mut warned = false;
    loop {
        tick.tick().await;
        let plan = plan.get();
        let (sids, bids) = plan.ids();
        // A syscall per id: off the async workers.
        let read = tokio::task::spawn_blocking(move || {
            let read = counters.read(&sids, &bids);
            (counters, read)
        })
        .await;
        let (c, read) = match read {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("the history sampler: {e}");
                return "the history sampler";
            }
        };
        counters = c;
        let now = match read {
            Ok(now) => now,
            Err(e) => {
                // Logged once: the next samples will say the same.
                if !warned {
                    tracing::warn!("reading the counters for the dashboard's history: {e}");
                    warned = true;
                }
                last = None;
                continue;
            }
        };
        let at = Instant::now();
        if let Some((then, prev)) = &last {
            let secs = at.duration_since(*then).as_secs_f64().max(1e-3);
            let flows = flow_entries.load(Ordering::Relaxed);
            history.push(unix_ms(), point(&plan, prev, &now, secs, flows));
        }
        last = Some((at, now));
    }
}

#[cfg(test)]
mod tests {
    use lb_common::{BackendCounter, Counter};

    use super::*;
    use crate::config::Config;

    fn plan() -> Plan {
        let cfg = Config::from_yaml(
            "interfaces: [eth0]\nsnat: { ipv4: 198.18.1.1 }\n\
             limits: { maglev_table_size: 101 }\nservices:\n\
             \x20 - name: web\n    vip: 198.18.100.10\n    port: 80\n    backends:\n\
             \x20     - { address: 198.18.1.11, port: 8080 }\n\
             \x20     - { address: 198.18.1.12, port: 8080 }\n",
        )
        .unwrap();
        crate::plan::from_config(&cfg).unwrap()
    }

    fn counters(plan: &Plan, packets: u64, flows: u64) -> Counters {
        let mut c = Counters {
            actions: vec![[0, packets / 10, 0, packets, 0]; 2],
            global: vec![0; lb_common::GLOBAL_STATS_LEN as usize],
            ..Counters::default()
        };
        c.global[lb_common::STAT_FLOW_NEW as usize] = flows;
        c.global[lb_common::STAT_NO_BACKEND as usize] = packets / 100;
        let s = &plan.services[0];
        c.services.insert(
            s.id,
            Counter {
                packets,
                bytes: packets * 100,
            },
        );
        c.backends.insert(
            s.backends[0].id,
            BackendCounter {
                packets,
                bytes: packets * 100,
                flows,
                ..BackendCounter::default()
            },
        );
        c
    }

    #[test]
    fn rates_are_per_second_and_labelled_from_the_plan() {
        let plan = plan();
        let p = point(
            &plan,
            &counters(&plan, 1000, 10),
            &counters(&plan, 3000, 30),
            2.0,
            7,
        );
        assert_eq!(p.services, [("web".to_owned(), [1000.0, 800_000.0])]);
        let b0 = plan.services[0].backends[0].addr;
        assert_eq!(
            p.backends,
            [(("web".to_owned(), b0), [1000.0, 800_000.0, 10.0])],
            "a backend without counters has no series"
        );
        let total = |t: Total| p.totals.iter().find(|(k, _)| *k == t).unwrap().1[0];
        assert_eq!(total(Total::ActiveFlows), 7.0);
        assert_eq!(total(Total::NewFlows), 10.0);
        assert_eq!(total(Total::Action("tx")), 2000.0, "summed over CPUs");
        assert_eq!(total(Total::Action("drop")), 200.0);
        assert_eq!(total(Total::Event("no_backend")), 10.0);
        // A counter that went back has no rate.
        let back = point(
            &plan,
            &counters(&plan, 10, 1),
            &counters(&plan, 5, 1),
            1.0,
            0,
        );
        assert!(back.services[0].1[0].is_nan());
    }

    #[test]
    fn the_ring_keeps_the_last_samples_and_aligns_every_series() {
        let key = |s: &str| (s.to_owned(), "198.18.1.11:80".parse().unwrap());
        let sample = |svc: &str, v: f32| Point {
            totals: vec![(Total::NewFlows, [v])],
            services: vec![(svc.to_owned(), [v, 8.0 * v])],
            backends: vec![(key(svc), [v, 8.0 * v, 1.0])],
        };
        let mut ring = Ring::default();
        ring.push(1000, sample("a", 1.0), 3);
        ring.push(2000, sample("a", 2.0), 3);
        ring.push(3000, sample("b", 3.04), 3);
        let v = ring.view(0);
        assert_eq!(v.times, [1000, 2000, 3000]);
        assert_eq!(v.new_flows, [Some(1.0), Some(2.0), Some(3.0)]);
        let names: Vec<_> = v.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(v.services[0].packets, [Some(1.0), Some(2.0), None]);
        assert_eq!(v.services[1].bits, [None, None, Some(24.3)], "rounded");
        assert_eq!(v.backends[1].flows, [None, None, Some(1.0)]);

        // The oldest goes; "a" goes once it has no value left.
        ring.push(4000, sample("b", 4.0), 3);
        assert_eq!(ring.view(0).times, [2000, 3000, 4000]);
        ring.push(5000, sample("b", 5.0), 3);
        let v = ring.view(0);
        assert_eq!(v.times, [3000, 4000, 5000]);
        assert_eq!(v.services.len(), 1, "{:?}", v.services);
        assert_eq!(v.backends.len(), 1);
        assert_eq!(v.services[0].packets, [Some(3.0), Some(4.0), Some(5.0)]);

        // `since`: only the samples ending after it.
        let v = ring.view(4000);
        assert_eq!(v.times, [5000]);
        assert_eq!(v.new_flows, [Some(5.0)]);
        assert_eq!(v.services[0].packets, [Some(5.0)]);
        assert!(ring.view(5000).times.is_empty());
    }
}
