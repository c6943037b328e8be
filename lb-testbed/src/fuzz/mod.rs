//! Packet fuzzing of the real XDP programs (`cargo xtask fuzz-packets`):
//! millions of frames through the balancer (`xdplb`, loaded and filled by
//! the daemon's own code) and the decapsulator (`xdplb decap`) with
//! BPF_PROG_TEST_RUN, in a [`FibNet`] namespace so the forwarding step
//! (`bpf_fib_lookup`) is real.
//!
//! The run is cut into epochs (thousands of frames each): an epoch draws
//! a variant of the config (backends drained, in maintenance, at weight
//! 0; flow sync on in a third of them), runs frames with the program's
//! state carried from one to the next (flows opened, their packets, the
//! backends' replies, ICMP errors about them, flows aged so they expire,
//! flows handed to a flow sync peer so the owner stage forwards them),
//! then checks the flow and NAT tables against each other and the plan,
//! and the counters against the verdicts, and empties the tables. The
//! programs and their maps are `lb`'s. Frames are valid ones (`generate`),
//! mutations of those (`mutate`), and random bytes; the decapsulator gets
//! tunnel packets (nested up to 6 deep, mutated too) and every tunnel
//! packet the balancer sends. Each verdict is checked (`check`) against
//! what the program should do (`model`). A failure prints a reproducer
//! (`repro`). One seed replays a run exactly.

mod check;
mod config;
mod generate;
mod lb;
mod maps;
mod model;
mod mutate;
mod report;
mod repro;
mod wire;
mod world;

use std::{
    collections::HashSet,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Result;
use lb_common::{FlowKey, STAT_FLOW_INSERT_FAIL, STAT_SYNC_LOST, XDP_ACTIONS};
use rand::Rng;

pub use report::Report;

use self::{
    check::{Failure, Outcome},
    config::{GUE_PORT, Variant},
    generate::{Gen, Made},
    lb::{Lb, Stepped},
    maps::DROP_SLOTS,
    repro::{Entry, Repro},
    wire::hex,
};
use crate::{fib_net::FibNet, run_frame};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Frames in all (balancer and decapsulator).
    pub count: u64,
    pub seed: u64,
    /// Balancer frames per epoch.
    pub epoch: u64,
    /// Where reproducers are written.
    pub out_dir: PathBuf,
    /// How printed commands name the xdplb binary.
    pub xdplb: String,
    /// How printed commands rerun the whole run (the seed and count are
    /// appended).
    pub rerun: String,
    /// Keep the namespace after a failure, for `xdplb trace --fib`.
    pub keep_netns: bool,
    /// Stop after failures of this many classes (later ones of a class
    /// already seen are only counted).
    pub max_failures: usize,
    /// Print a progress line every this often.
    pub progress: Option<Duration>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            count: 10_000_000,
            seed: 0,
            epoch: 20_000,
            out_dir: PathBuf::from("target/fuzz-packets"),
            xdplb: "xdplb".into(),
            rerun: "cargo xtask fuzz-packets".into(),
            keep_netns: false,
            max_failures: 1,
            progress: None,
        }
    }
}

/// Runs the fuzzer (as root: it creates a namespace and loads programs).
pub fn run(opts: &Options) -> Result<Report> {
    let bed = FibNet::create(11..=13)?;
    let ns = bed.ns().to_owned();
    let report = bed.run_in(|| Fuzzer::new(opts, &ns)?.run())?;
    if opts.keep_netns && !report.failed.is_empty() {
        // The reproducer names it for `ip netns exec ... trace --fib`.
        std::mem::forget(bed);
    }
    Ok(report)
}

/// One frame through the decapsulator: its verdict and output (replaying
/// a decapsulator failure).
pub fn run_decap(frame: &[u8]) -> Result<(u32, Vec<u8>)> {
    let mut ebpf = xdplb::decap::load(GUE_PORT)?;
    let ran = run_frame(xdplb::decap::program(&mut ebpf)?, frame);
    Ok((ran.verdict, ran.out))
}

struct Fuzzer<'a> {
    opts: &'a Options,
    netns: &'a str,
    source: Gen,
    lb: Lb,
    variant: Variant,
    report: Report,
    /// The epoch so far (for reproducers).
    log: Vec<Entry>,
    /// Verdict counts of the epoch, against the action counters.
    epoch_verdicts: [u64; 5],
    epoch_actions: [u64; 5],
    /// The global counters at the epoch's start.
    epoch_stats: Vec<u64>,
}

impl<'a> Fuzzer<'a> {
    fn new(opts: &'a Options, netns: &'a str) -> Result<Fuzzer<'a>> {
        let variant = Variant::base();
        let lb = Lb::load(&variant)?;
        let epoch_stats = lb.maps.stats()?;
        let epoch_actions = maps::actions(&epoch_stats);
        Ok(Fuzzer {
            opts,
            netns,
            source: Gen::new(opts.seed),
            lb,
            variant,
            report: Report {
                seed: opts.seed,
                ..Report::default()
            },
            log: Vec::new(),
            epoch_verdicts: [0; 5],
            epoch_actions,
            epoch_stats,
        })
    }

    fn run(mut self) -> Result<Report> {
        let start = Instant::now();
        let mut last_progress = start;
        let mut in_epoch = 0;
        let mut done = 0;
        while done < self.opts.count {
            done += 1;
            let failed = if self.source.rng.random_bool(0.08) {
                self.decap_frame()?
            } else {
                in_epoch += 1;
                self.balancer_frame()?
            };
            if failed && self.report.failed.len() >= self.opts.max_failures {
                break;
            }
            if in_epoch >= self.opts.epoch || done == self.opts.count {
                self.end_epoch()?;
                in_epoch = 0;
            }
            if let Some(every) = self.opts.progress
                && last_progress.elapsed() >= every
            {
                last_progress = Instant::now();
                let secs = start.elapsed().as_secs_f64();
                eprintln!(
                    "fuzz-packets: {done} / {} frames, {:.0} frames/s, {} failure(s)",
                    self.opts.count,
                    done as f64 / secs,
                    self.report.failed.values().sum::<u64>()
                );
            }
        }
        self.report.elapsed = start.elapsed();
        Ok(self.report)
    }

    /// A balancer frame: valid (45%), mutated (45%) or random (10%).
    fn balancer_frame(&mut self) -> Result<bool> {
        if !self.source.flows.is_empty() && self.source.rng.random_bool(0.002) {
            for key in self.source.some_flows() {
                if self.lb.maps.age(&key)? {
                    self.report.aged += 1;
                    self.log.push(Entry::Aged(key));
                }
            }
        }
        if self.lb.peers_alive.is_some()
            && !self.source.flows.is_empty()
            && self.source.rng.random_bool(0.004)
        {
            for key in self.source.some_flows() {
                let peer = self.source.rng.random_range(0..config::PEERS.len() as u32);
                self.lb.hand_over(&key, peer)?;
                self.report.handed_over += 1;
                self.log.push(Entry::HandedOver(key, peer));
            }
        }
        let roll = self.source.rng.random_range(0..100);
        let mut made = if roll < 90 {
            self.source.valid(&self.lb.world)
        } else {
            self.source.random()
        };
        if (45..90).contains(&roll) {
            made.mutations = mutate::mutate(&mut self.source, &mut made.frame);
            made.learn = None;
        }
        self.report.frames += 1;
        Report::add(&mut self.report.kinds, made.kind);
        for m in &made.mutations {
            Report::add(&mut self.report.mutations, *m);
        }
        let Stepped {
            checked,
            keys,
            verdict,
            out,
            round_trip,
        } = self.lb.step(&made.frame)?;
        self.report.round_trips += round_trip as u64;
        self.log.push(Entry::Frame {
            frame: made.frame.clone(),
            keys,
        });
        if let Some(n) = self.epoch_verdicts.get_mut(verdict as usize) {
            *n += 1;
        }
        let c = match checked {
            Ok(c) => c,
            Err(f) => {
                self.failure(&made, &f, &out)?;
                return Ok(true);
            }
        };
        self.report.verdict(verdict);
        let name = match c.outcome {
            Outcome::Pass(r) => format!("pass {}", r.name()),
            Outcome::Sent(k) => format!("sent {k}"),
            Outcome::Dropped(s) => format!("drop {}", maps::slot_name(s)),
        };
        Report::add(&mut self.report.outcomes, name);
        for d in c.inherited.names() {
            Report::add(&mut self.report.inherited, d);
        }
        if let Some(i) = made.learn
            && c.outcome == Outcome::Sent("nat")
        {
            self.source.learn(i, &out);
        }
        Ok(false)
    }

    fn decap_frame(&mut self) -> Result<bool> {
        let mut made = self.source.decap_frame();
        if self.source.rng.random_bool(0.5) {
            made.mutations = mutate::mutate(&mut self.source, &mut made.frame);
        }
        self.report.decap_frames += 1;
        let (v, out) = self.lb.decap(&made.frame)?;
        match check::decap(&made.frame, v, &out) {
            Ok(what) => {
                Report::add(&mut self.report.decap, what);
                Ok(false)
            }
            Err(f) => {
                if !self.first_of(f.class) {
                    return Ok(true);
                }
                let mut text = format!(
                    "FAILURE (xdplb_decap, frame {}, seed {}): {}: {}\n  frame ({}{}): {}\n  \
                     output: {}\n  replay: {} -- --decap-hex {}\n",
                    self.report.frames + self.report.decap_frames,
                    self.opts.seed,
                    f.class,
                    f.detail,
                    made.kind,
                    mutations_text(&made.mutations),
                    hex(&made.frame),
                    hex(&out),
                    self.opts.rerun,
                    hex(&made.frame)
                );
                text.push_str(&format!(
                    "  the whole run: {} --seed {} --count {}",
                    self.opts.rerun,
                    self.opts.seed,
                    self.report.frames + self.report.decap_frames
                ));
                eprintln!("{text}");
                self.report.failures.push(text);
                Ok(true)
            }
        }
    }

    /// Counts a failure of `class`; whether it is the first of it.
    fn first_of(&mut self, class: &'static str) -> bool {
        let n = self.report.failed.entry(class).or_default();
        *n += 1;
        *n == 1
    }

    /// Reports a balancer failure with its reproducer (the first of its
    /// class; later ones are counted).
    fn failure(&mut self, made: &Made, f: &Failure, out: &[u8]) -> Result<()> {
        if !self.first_of(f.class) {
            return Ok(());
        }
        let n = self.report.failures.len() + 1;
        let picked = repro::related(&self.log);
        let mut entries: Vec<Entry> = picked.iter().map(|&i| self.log[i].clone()).collect();
        let mut verified = self.replays(&entries, f.class)?;
        if !verified && entries.len() < self.log.len() {
            // Some state beyond the flow's own frames: the whole epoch.
            entries = self.log.clone();
            verified = self.replays(&entries, f.class)?;
        }
        let repro = Repro {
            dir: &self.opts.out_dir,
            name: format!("failure-{}-{n}", self.opts.seed),
            yaml: &self.lb.yaml,
            xdplb: &self.opts.xdplb,
            netns: self.opts.keep_netns.then_some(self.netns),
        };
        let rerun = format!(
            "{} --seed {} --count {}",
            self.opts.rerun,
            self.opts.seed,
            self.report.frames + self.report.decap_frames
        );
        let how = repro.write(&entries, verified, &rerun)?;
        let text = format!(
            "FAILURE (xdplb, frame {}, seed {}): {}: {}\n  frame ({}{}): {}\n  output: {}\n{how}",
            self.report.frames + self.report.decap_frames,
            self.opts.seed,
            f.class,
            f.detail,
            made.kind,
            mutations_text(&made.mutations),
            hex(&made.frame),
            hex(out),
        );
        eprintln!("{text}");
        self.report.failures.push(text);
        // The state may be anything now: start a fresh epoch.
        self.end_epoch_unchecked()?;
        Ok(())
    }

    /// Whether replaying `entries` in a fresh program makes the last frame
    /// fail with `class`.
    fn replays(&self, entries: &[Entry], class: &str) -> Result<bool> {
        let mut lb = Lb::load(&self.variant)?;
        let mut last = None;
        for e in entries {
            match e {
                Entry::Frame { frame, .. } => last = Some(lb.step(frame)?.checked),
                Entry::Aged(k) => {
                    lb.maps.age(k)?;
                }
                Entry::HandedOver(k, peer) => lb.hand_over(k, *peer)?,
            }
        }
        Ok(matches!(last, Some(Err(f)) if f.class == class))
    }

    /// The end of an epoch: counters and maps checked, then a fresh start
    /// with a new variant.
    fn end_epoch(&mut self) -> Result<()> {
        self.report.epochs += 1;
        let stats = self.lb.maps.stats()?;
        let actions = maps::actions(&stats);
        let mut problems = Vec::new();
        for (i, name) in XDP_ACTIONS.iter().enumerate() {
            let counted = actions[i] - self.epoch_actions[i];
            if counted != self.epoch_verdicts[i] {
                problems.push(format!(
                    "action counter {name}: {counted} counted, {} seen",
                    self.epoch_verdicts[i]
                ));
            }
        }
        for slot in DROP_SLOTS {
            if stats[slot as usize] != self.lb.counters[slot as usize] {
                problems.push(format!(
                    "counter {} grew on frames that were neither dropped nor answered (a \
                     counter that is no drop reason belongs outside DROP_SLOTS, \
                     lb-testbed/src/fuzz/maps.rs)",
                    maps::slot_name(slot)
                ));
            }
        }
        let insert_failed = stats[STAT_FLOW_INSERT_FAIL as usize] > 0;
        match self.lb.maps.check(&self.lb.world, insert_failed) {
            Ok((flows, nat)) => {
                self.report.max_flows = self.report.max_flows.max(flows);
                self.report.max_nat = self.report.max_nat.max(nat);
            }
            Err(e) => problems.push(format!("{e:#}")),
        }
        let announced = self.lb.announced();
        if self.lb.peers_alive.is_some() {
            let lost = stats[STAT_SYNC_LOST as usize] > self.epoch_stats[STAT_SYNC_LOST as usize];
            let owners: HashSet<FlowKey> =
                self.lb.sync.owners.keys().filter_map(|k| k.ok()).collect();
            if let Err(e) = self
                .lb
                .maps
                .check_sync(&self.lb.world, &announced, &owners, lost)
            {
                problems.push(format!("{e:#}"));
            }
        } else if !announced.is_empty() {
            problems.push(format!(
                "{} flows announced without flow sync",
                announced.len()
            ));
        }
        if !problems.is_empty() && self.first_of("maps_or_counters") {
            let text = format!(
                "FAILURE (maps and counters after epoch {}, seed {}): {}\n  the epoch's frames: \
                 {} --seed {} --count {}",
                self.report.epochs,
                self.opts.seed,
                problems.join("; "),
                self.opts.rerun,
                self.opts.seed,
                self.report.frames + self.report.decap_frames
            );
            eprintln!("{text}");
            self.report.failures.push(text);
        }
        self.end_epoch_unchecked()
    }

    fn end_epoch_unchecked(&mut self) -> Result<()> {
        self.lb.maps.clear()?;
        let owners: Vec<FlowKey> = self.lb.sync.owners.keys().filter_map(|k| k.ok()).collect();
        for k in owners {
            let _ = self.lb.sync.owners.remove(&k);
        }
        self.lb.announced();
        self.variant = Variant::draw(&mut self.source.rng);
        self.lb.set_variant(&self.variant)?;
        self.source.reset();
        self.log.clear();
        self.source.from_peer = self.variant.sync.is_some();
        let stats = self.lb.maps.stats()?;
        self.lb.counters = stats.clone();
        self.epoch_actions = maps::actions(&stats);
        self.epoch_stats = stats;
        self.epoch_verdicts = [0; 5];
        Ok(())
    }
}

fn mutations_text(m: &[&str]) -> String {
    if m.is_empty() {
        String::new()
    } else {
        format!(", mutated: {}", m.join(", "))
    }
}
