//! `xdplb trace`: runs captured or crafted frames through the real XDP
//! program, offline, and says what it did with each.
//!
//! The program is loaded with the config's map sizes into maps of its own
//! (nothing pinned, nothing attached: a running daemon is not touched),
//! filled by the daemon's own code (`plan`, `Dataplane::apply`), and every
//! frame goes through `BPF_PROG_TEST_RUN` in order, so the program's state
//! carries from one frame to the next exactly as on a NIC: a SYN creates the
//! flow later packets use, a backend's reply finds its NAT entry.
//!
//! What the program decided is read from the program itself: the verdict,
//! the output frame, and its per-CPU counters, read after every frame (which
//! service and backend counted the packet, whether it made a new flow, which
//! drop reason was counted), plus the next hops it asked the daemon to
//! resolve. Only the explanation of a PASS (not for a VIP, a fragment...) is
//! worked out here, from the frame and the config.
//!
//! Forwarding: `bpf_fib_lookup` needs the routes and neighbours of the real
//! balancer host. By default trace loads its program with
//! `lb_common::FLAG_SKIP_FIB` in its own `CONFIG` map: the program then
//! skips the lookup and answers XDP_TX with the MACs untouched, and trace
//! reports the lookup it would have made. The daemon never sets that flag
//! (its plans come from `plan::plan`, which leaves `flags` at 0; a unit test
//! holds it to that). `--fib` leaves the flag off: the lookup is then the
//! real one, in the network namespace trace runs in.
//!
//! The parts: `tracer` loads the program and runs the frames, `attribution`
//! reads from the program's state why it did what it did, `render` writes
//! the records, `run` is the command (input in, report and frames out).
//! Frames come and go through `capture`; `summary` describes them.

mod attribution;
pub mod capture;
mod render;
mod run;
mod summary;
#[cfg(test)]
mod tests;
mod tracer;

use std::{io, path::PathBuf};

pub use capture::{Capture, CaptureError, Frame};
pub use render::{FibLookup, NextHop, Record, Totals};
pub use run::{read_input, run};
pub use summary::Summary;
pub use tracer::{Tracer, run_frame, trace_plan};

use crate::{config::ConfigError, dataplane::DataplaneError};

/// How the forwarding step is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FibMode {
    /// `FLAG_SKIP_FIB`: no lookup, XDP_TX with the MACs untouched; the
    /// lookup the program would make is reported.
    #[default]
    Skip,
    /// The real `bpf_fib_lookup`, in the namespace trace runs in.
    Kernel,
}

/// Where the frames come from.
#[derive(Debug, Clone)]
pub enum Input {
    /// A pcap or pcapng file of Ethernet frames.
    Pcap(PathBuf),
    /// Frames written as hex, in order.
    Hex(Vec<String>),
}

/// What `xdplb trace` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub config: PathBuf,
    pub input: Input,
    /// Where to write the output frames (pcap).
    pub out: Option<PathBuf>,
    /// JSON lines instead of text.
    pub json: bool,
    pub fib: FibMode,
    /// The interface frames arrive on (XDP's ingress ifindex); `lo` when
    /// not given.
    pub iface: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error("--iface {name}: no such interface in this network namespace")]
    NoIface { name: String },
    #[error(
        "--iface: {kernel} would not run a frame arriving on an interface ({why}): \
         BPF_PROG_TEST_RUN takes the ingress interface from Linux 5.15 on; without --iface, \
         frames arrive on lo"
    )]
    NoIngress { kernel: String, why: String },
    #[error("planning the maps: {0}")]
    Plan(String),
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    #[error("BPF_PROG_TEST_RUN: {0}")]
    TestRun(String),
    #[error("{path}: {err}")]
    Output {
        path: PathBuf,
        #[source]
        err: io::Error,
    },
    #[error("writing the report: {0}")]
    Report(#[source] io::Error),
}

impl TraceError {
    /// 2 for what the user gave (config, capture, hex, interface), 1 for
    /// failures at run time (loading the program, writing files).
    pub fn exit_code(&self) -> u8 {
        match self {
            TraceError::Config(_)
            | TraceError::Capture(_)
            | TraceError::NoIface { .. }
            | TraceError::Plan(_) => 2,
            _ => 1,
        }
    }
}
