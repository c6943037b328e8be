//! What a run did, in figures: frames, verdicts, outcomes by kind, the
//! defects frames were forwarded with (as they arrived), mutations used,
//! map checks, and the failures with their reproducers.

use std::{collections::BTreeMap, fmt, time::Duration};

use lb_common::FlowKey;

use super::{check::verdict_name, model::key_addr};

#[derive(Debug, Default, Clone)]
pub struct Report {
    pub seed: u64,
    /// Frames run through the balancer, and through the decapsulator
    /// (generated for it, and the balancer's tunnel output run again).
    pub frames: u64,
    pub decap_frames: u64,
    pub round_trips: u64,
    pub elapsed: Duration,
    pub verdicts: BTreeMap<&'static str, u64>,
    /// "pass not_a_vip", "sent nat", "drop neigh_miss"...
    pub outcomes: BTreeMap<String, u64>,
    /// Defects of frames sent on as they arrived (never added to).
    pub inherited: BTreeMap<&'static str, u64>,
    pub kinds: BTreeMap<&'static str, u64>,
    pub mutations: BTreeMap<&'static str, u64>,
    pub decap: BTreeMap<&'static str, u64>,
    pub epochs: u64,
    /// Largest tables seen at an epoch's map check.
    pub max_flows: usize,
    pub max_nat: usize,
    pub aged: u64,
    /// Flows handed to a flow sync peer.
    pub handed_over: u64,
    /// Failures by class; the text (with a reproducer) of the first of
    /// each.
    pub failed: BTreeMap<&'static str, u64>,
    pub failures: Vec<String>,
}

impl Report {
    pub fn add<K: Ord>(map: &mut BTreeMap<K, u64>, k: K) {
        *map.entry(k).or_default() += 1;
    }

    pub fn verdict(&mut self, v: u32) {
        Self::add(&mut self.verdicts, verdict_name(v));
    }

    pub fn rate(&self) -> f64 {
        (self.frames + self.decap_frames) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

fn list<K: fmt::Display>(f: &mut fmt::Formatter, what: &str, m: &BTreeMap<K, u64>) -> fmt::Result {
    if m.is_empty() {
        return Ok(());
    }
    let items: Vec<String> = m.iter().map(|(k, v)| format!("{k} {v}")).collect();
    writeln!(f, "  {what}: {}", items.join(", "))
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        writeln!(
            f,
            "{} frames in {:.1} s ({:.0} frames/s), seed {}: {} through xdplb, {} through \
             xdplb_decap (+{} tunnel round trips); {} epochs",
            self.frames + self.decap_frames,
            self.elapsed.as_secs_f64(),
            self.rate(),
            self.seed,
            self.frames,
            self.decap_frames,
            self.round_trips,
            self.epochs
        )?;
        list(f, "verdicts", &self.verdicts)?;
        list(f, "outcomes", &self.outcomes)?;
        list(
            f,
            "sent on with the defects they arrived with",
            &self.inherited,
        )?;
        list(f, "frames", &self.kinds)?;
        list(f, "mutations", &self.mutations)?;
        list(f, "decapsulator", &self.decap)?;
        writeln!(
            f,
            "  maps checked after every epoch: up to {} flows and {} NAT entries; {} flows aged, \
             {} handed to a flow sync peer",
            self.max_flows, self.max_nat, self.aged, self.handed_over
        )?;
        if self.failed.is_empty() {
            write!(f, "no failure")
        } else {
            let items: Vec<String> = self
                .failed
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            write!(
                f,
                "FAILURES (by class, first of each shown above): {}",
                items.join(", ")
            )
        }
    }
}

/// `proto src:port -> dst:port` of a flow key.
pub fn key_text(k: &FlowKey) -> String {
    let (s, d) = (key_addr(k.src, k.family), key_addr(k.dst, k.family));
    let p = match k.proto {
        6 => "tcp".to_string(),
        17 => "udp".to_string(),
        n => n.to_string(),
    };
    format!(
        "{p} {} -> {}",
        std::net::SocketAddr::new(s, u16::from_be(k.sport)),
        std::net::SocketAddr::new(d, u16::from_be(k.dport))
    )
}
