//! The program, loaded with a config's plan into maps of its own, and the
//! frames run through it one after the other (`BPF_PROG_TEST_RUN`), its
//! counters and neighbour events read after each.

use aya::{
    maps::{MapData, RingBuf},
    programs::{ProgramError, TestRun, TestRunOptions, Xdp},
};
use lb_common::{FLAG_SKIP_FIB, NeighEvent};

use super::{
    FibMode, Frame, Record, Summary, TraceError,
    attribution::{Attribution, Observed},
};
use crate::{
    config::{Config, Limits},
    dataplane::{Counters, Dataplane},
    plan::{self, Plan},
};

/// The plan trace loads: the daemon's plan of `cfg`, plus `FLAG_SKIP_FIB`
/// in `FibMode::Skip`.
pub fn trace_plan(cfg: &Config, fib: FibMode) -> Result<Plan, String> {
    let mut plan = plan::from_config(cfg)?;
    if fib == FibMode::Skip {
        plan.globals.flags |= FLAG_SKIP_FIB;
    }
    Ok(plan)
}

/// Room for what the program may add to a frame (encapsulation).
const OUT_HEADROOM: usize = 1024;

/// The loaded program and what is needed to explain its decisions.
pub struct Tracer {
    dp: Dataplane,
    why: Attribution,
    /// The counters after the last frame.
    last: Counters,
    neigh: RingBuf<MapData>,
    /// `--iface`: its index, passed to the program as the ingress.
    ingress: Option<u32>,
}

impl Tracer {
    /// Loads the program with `cfg`'s map sizes into maps of its own and
    /// fills them with `cfg`'s plan.
    pub fn new(cfg: &Config, fib: FibMode, iface: Option<&str>) -> Result<Tracer, TraceError> {
        let ingress = iface
            .map(|name| {
                nix::net::if_::if_nametoindex(name).map_err(|_| TraceError::NoIface {
                    name: name.to_string(),
                })
            })
            .transpose()?;
        let plan = trace_plan(cfg, fib).map_err(TraceError::Plan)?;
        // Service and backend tables just big enough for the plan's ids:
        // the rings array is sized by max_services (hundreds of MB at the
        // defaults), and entries past the last id are never read. Ring and
        // flow table sizes stay as configured: they shape the decisions.
        let ids = |it: &mut dyn Iterator<Item = u32>| it.max().map_or(1, |m| m + 1);
        let limits = Limits {
            max_services: ids(&mut plan.services.iter().map(|s| s.id)),
            max_backends: ids(&mut plan
                .services
                .iter()
                .flat_map(|s| s.backends.iter().map(|b| b.id))),
            ..cfg.limits.clone()
        };
        let mut dp = Dataplane::load(&limits, None)?;
        dp.apply(&plan)?;
        if let Some(ifindex) = ingress {
            // Kernels before 5.15 take no context (the ingress) for an XDP
            // test run: say so once rather than for every frame. The probe
            // is an Ethernet header of no known type, which the program
            // passes.
            run_frame(dp.program(), &[0u8; 14], Some(ifindex)).map_err(|e| {
                TraceError::NoIngress {
                    kernel: crate::dataplane::features::kernel_name(),
                    why: chain(&e),
                }
            })?;
        }
        let neigh = dp.take_neigh_events()?;
        let why = Attribution::new(cfg, plan, fib, ingress.unwrap_or(1));
        let last = dp.counters(why.service_ids(), why.backend_ids())?;
        Ok(Tracer {
            dp,
            why,
            last,
            neigh,
            ingress,
        })
    }

    /// The plan loaded (with `FLAG_SKIP_FIB` in `FibMode::Skip`).
    pub fn plan(&self) -> &Plan {
        self.why.plan()
    }

    /// The interface frames arrive on (`lo` when not given).
    pub(super) fn ingress_name(&self) -> &str {
        self.why.ingress_name()
    }

    /// Runs one frame; returns what happened and the output frame.
    pub fn trace(&mut self, index: usize, frame: &Frame) -> Result<(Record, Vec<u8>), TraceError> {
        let mut record = Record::new(index, Summary::of_frame(&frame.data));
        record.note = (frame.orig_len as usize > frame.data.len()).then(|| {
            format!(
                "captured {} of {} bytes: the program ran on what was captured",
                frame.data.len(),
                frame.orig_len
            )
        });
        // The kernel wants a whole Ethernet header.
        if frame.data.len() < 14 {
            record.verdict = "ERROR".into();
            record.error = Some(format!(
                "a {}-byte frame is shorter than an Ethernet header",
                frame.data.len()
            ));
            return Ok((record, Vec::new()));
        }
        let (verdict, out) = match run_frame(self.dp.program(), &frame.data, self.ingress) {
            Ok(run) => run,
            Err(e) => {
                record.verdict = "ERROR".into();
                record.error = Some(format!("the kernel refused to run it: {}", chain(&e)));
                return Ok((record, Vec::new()));
            }
        };
        let now = self
            .dp
            .counters(self.why.service_ids(), self.why.backend_ids())?;
        let before = std::mem::replace(&mut self.last, now);
        let events = self.neigh_events();
        let seen = Observed {
            verdict,
            output: Summary::of_frame(&out),
            before: &before,
            now: &self.last,
            events,
        };
        self.why.attribute(&mut record, seen);
        Ok((record, out))
    }

    /// The neighbours the program asked to have resolved since the last
    /// frame.
    fn neigh_events(&mut self) -> Vec<NeighEvent> {
        let mut events = Vec::new();
        while let Some(item) = self.neigh.next() {
            if item.len() >= std::mem::size_of::<NeighEvent>() {
                // SAFETY: the program writes whole `NeighEvent`s (repr(C),
                // integers only); the length was checked.
                events
                    .push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<NeighEvent>()) });
            }
        }
        events
    }
}

/// Runs `frame` once through `program` (`BPF_PROG_TEST_RUN`), arriving on
/// `ingress` (the kernel's default, `lo`, when `None`): returns the XDP
/// verdict and the frame as the program left it, with room for what it
/// may add (encapsulation).
pub fn run_frame(
    program: &Xdp,
    frame: &[u8],
    ingress: Option<u32>,
) -> Result<(u32, Vec<u8>), ProgramError> {
    let mut out = vec![0u8; frame.len() + OUT_HEADROOM];
    let ctx = ingress.map(|ifindex| xdp_md(ifindex, frame.len()));
    let run = program.test_run(TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        ctx_in: ctx.as_ref().map(|c| &c[..]),
        ..Default::default()
    })?;
    out.truncate(run.data_size_out as usize);
    Ok((run.return_value, out))
}

/// `struct xdp_md` for a test run arriving on `ifindex`, queue 0.
fn xdp_md(ifindex: u32, len: usize) -> [u8; 24] {
    let fields = [0u32, len as u32, 0, ifindex, 0, 0];
    let mut md = [0u8; 24];
    for (i, f) in fields.iter().enumerate() {
        md[i * 4..i * 4 + 4].copy_from_slice(&f.to_ne_bytes());
    }
    md
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}
