//! Packet fuzzing of the real XDP programs (`cargo xtask fuzz-packets`):
//! millions of frames through the balancer (`xdplb`, loaded and filled by
//! the daemon's own code) and the decapsulator (`xdplb decap`) with
//! BPF_PROG_TEST_RUN, in a [`FibNet`] namespace so the forwarding step
//! (`bpf_fib_lookup`) is real.
//!
//! The run is cut into epochs (a few thousand frames each): an epoch draws
//! a variant of the config (backends drained, in maintenance, at weight
//! 0), runs frames with the program's state carried from one to the next
//! (flows opened, their packets, the backends' replies, ICMP errors about
//! them, flows aged so they expire), then checks the flow and NAT tables
//! against each other and the plan, and the counters against the
//! verdicts, and empties the tables. Frames are valid ones (`generate`),
//! mutations of those (`mutate`), and random bytes; the decapsulator gets
//! tunnel packets (nested up to 6 deep, mutated too) and every tunnel
//! packet the balancer sends. Each verdict is checked (`check`) against
//! what the program should do (`model`). A failure prints a reproducer
//! (`repro`). One seed replays a run exactly.

mod check;
mod config;
mod generate;
mod maps;
mod model;
mod mutate;
mod report;
mod repro;
mod wire;
mod world;

use std::{
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use aya::Ebpf;
use lb_common::{FlowKey, STAT_FLOW_INSERT_FAIL, XDP_ACTIONS, nat_rev_key};
use rand::Rng;
use xdplb::{config::Config, dataplane::Dataplane, plan};

pub use report::Report;

use self::{
    check::{Before, Checked, Failure, Outcome, Run},
    config::{GUE_PORT, Variant},
    generate::{Gen, Made},
    maps::{DROP_SLOTS, Maps},
    model::Expect,
    repro::{Entry, Repro},
    wire::hex,
    world::World,
};
use crate::{XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX, fib_net::FibNet, run_frame};

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

/// The programs, loaded as the daemon loads them, and the state the
/// checks read.
struct Lb {
    dp: Dataplane,
    maps: Maps,
    decap: Ebpf,
    world: World,
    yaml: String,
    /// The drop counters as last read (they only grow on a DROP or an
    /// answer, when they are read again).
    counters: Vec<u64>,
}

impl Lb {
    fn load(variant: &Variant) -> Result<Lb> {
        static N: AtomicU32 = AtomicU32::new(0);
        let yaml = variant.yaml();
        let cfg = Config::from_yaml(&yaml).context("the fuzzing config")?;
        let plan = plan::from_config(&cfg).map_err(anyhow::Error::msg)?;
        // Pinned, so the checks can open the maps the daemon's loader made.
        let pin_dir = PathBuf::from(format!(
            "/sys/fs/bpf/xdplb-fuzz-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let mut dp = Dataplane::load(&cfg.limits, Some(&pin_dir))?;
        // Pins go now: the handles below keep the maps.
        let maps = Maps::open(&pin_dir);
        dp.unpin_all()?;
        let maps = maps?;
        dp.apply(&plan)?;
        let counters = maps.stats()?;
        Ok(Lb {
            dp,
            maps,
            decap: xdplb::decap::load(cfg.gue_port)?,
            world: World::new(&plan),
            yaml,
            counters,
        })
    }

    /// Switches to another variant of the config (ids stay: same names).
    fn set_variant(&mut self, variant: &Variant) -> Result<()> {
        self.yaml = variant.yaml();
        let cfg = Config::from_yaml(&self.yaml).context("the fuzzing config")?;
        let plan = plan::from_config(&cfg).map_err(anyhow::Error::msg)?;
        self.dp.apply(&plan)?;
        self.world = World::new(&plan);
        Ok(())
    }

    /// Runs one frame through the balancer and checks what it did.
    fn step(&mut self, frame: &[u8]) -> Result<Stepped> {
        let expect = model::expect(frame, &self.world);
        let before = match expect {
            Expect::Reply { pkt } => Before::Rev(self.maps.rev(&pkt.key)),
            Expect::IcmpError { flow, .. } => Before::Flow(self.maps.flow(&flow)),
            _ => Before::None,
        };
        let ran = run_frame(self.dp.program(), frame);
        let sent = ran.verdict == XDP_TX || ran.verdict == XDP_REDIRECT;
        let mut flow_after = None;
        let mut keys = Vec::new();
        let mut read = ran.verdict == XDP_DROP;
        match expect {
            Expect::Balance { svc, pkt } => {
                keys.push(pkt.key);
                if sent {
                    flow_after = self.maps.flow(&pkt.key);
                    read |= flow_after.is_none() || self.world.services[svc].ring.is_empty();
                }
                if let Some(f) = flow_after
                    && let Some((_, b)) = self.world.backends.get(&f.backend)
                {
                    keys.push(nat_rev_key(
                        &pkt.key,
                        &b.addr,
                        &f,
                        self.world.globals.snat(pkt.key.family),
                    ));
                }
            }
            Expect::Reply { pkt } => {
                keys.push(pkt.key);
                if let Before::Rev(Some(r)) = before {
                    keys.push(FlowKey {
                        src: r.client,
                        dst: r.vip,
                        sport: r.client_port,
                        dport: r.vip_port,
                        ..pkt.key
                    });
                }
            }
            Expect::IcmpError { flow, .. } => keys.push(flow),
            _ => {}
        }
        let grown = if read { self.grown()? } else { Vec::new() };
        let mut checked = check::check(&Run {
            w: &self.world,
            input: frame,
            expect,
            before,
            verdict: ran.verdict,
            output: &ran.out,
            grown: &grown,
            flow_after,
        });
        // A tunnel packet must come out of the decapsulator as it went in.
        let mut round_trip = false;
        if let Ok(Checked {
            round_trip: Some(expected),
            ..
        }) = &checked
        {
            round_trip = true;
            let (v, got) = self.decap(&ran.out)?;
            if v != XDP_PASS || got != *expected {
                checked = Err(Failure {
                    class: "tunnel_round_trip",
                    detail: format!(
                        "the balancer's tunnel packet, decapsulated by xdplb_decap ({}), is not \
                         the frame the client sent: {}",
                        check::verdict_name(v),
                        hex(&got)
                    ),
                });
            }
        }
        Ok(Stepped {
            checked,
            keys,
            verdict: ran.verdict,
            out: ran.out,
            round_trip,
        })
    }

    /// The counters that grew since they were last read.
    fn grown(&mut self) -> Result<Vec<u32>> {
        let mut grown = Vec::new();
        for slot in DROP_SLOTS.into_iter().chain([STAT_FLOW_INSERT_FAIL]) {
            let v = self.maps.stat(slot)?;
            if v > self.counters[slot as usize] {
                grown.push(slot);
            }
            self.counters[slot as usize] = v;
        }
        Ok(grown)
    }

    fn decap(&mut self, frame: &[u8]) -> Result<(u32, Vec<u8>)> {
        let ran = run_frame(xdplb::decap::program(&mut self.decap)?, frame);
        Ok((ran.verdict, ran.out))
    }
}

/// One balancer frame's run: the check's result, the flow keys it
/// touched (for reproducers), the verdict and the output.
struct Stepped {
    checked: Result<Checked, Failure>,
    keys: Vec<FlowKey>,
    verdict: u32,
    out: Vec<u8>,
    /// The output went through the decapsulator too.
    round_trip: bool,
}

/// Checks the decapsulator's verdict and output on `frame`.
fn check_decap(frame: &[u8], verdict: u32, out: &[u8]) -> Result<&'static str, Failure> {
    let fail = |class, detail: String| Err(Failure { class, detail });
    if verdict != XDP_PASS {
        return fail(
            "decap_verdict",
            format!("xdplb_decap returned {}", check::verdict_name(verdict)),
        );
    }
    match model::decap(frame, GUE_PORT) {
        None if out == frame => Ok("passed unchanged"),
        None => fail(
            "decap_modified",
            "changed a frame that is not a tunnel packet".into(),
        ),
        Some(d) => {
            let mut e = frame[..12].to_vec();
            e.extend_from_slice(&d.ethertype.to_be_bytes());
            e.extend_from_slice(&frame[14 + d.strip..]);
            if out != e {
                return fail(
                    "decap_wrong_output",
                    format!(
                        "expected {} stripped bytes and EtherType {:#06x}",
                        d.strip, d.ethertype
                    ),
                );
            }
            Ok("decapsulated")
        }
    }
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
}

impl<'a> Fuzzer<'a> {
    fn new(opts: &'a Options, netns: &'a str) -> Result<Fuzzer<'a>> {
        let variant = Variant::base();
        let lb = Lb::load(&variant)?;
        let epoch_actions = maps::actions(&lb.maps.stats()?);
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
            for key in self.source.aging_candidates() {
                if self.lb.maps.age(&key)? {
                    self.report.aged += 1;
                    self.log.push(Entry::Aged(key));
                }
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
        if let Some(i) = made.learn {
            if matches!(c.outcome, Outcome::Sent(_)) {
                self.source.learn(i, &out);
            }
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
        match check_decap(&made.frame, v, &out) {
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
                     output: {}\n  replay: {} --decap-hex {}\n",
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
                    "counter {} grew on frames that were neither dropped nor answered",
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
        self.variant = Variant::draw(&mut self.source.rng);
        self.lb.set_variant(&self.variant)?;
        self.source.reset();
        self.log.clear();
        let stats = self.lb.maps.stats()?;
        self.lb.counters = stats.clone();
        self.epoch_actions = maps::actions(&stats);
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
