//! Running one frame through an XDP program with BPF_PROG_TEST_RUN.

use std::time::Duration;

use aya::programs::{TestRun, TestRunOptions, Xdp};

/// XDP verdicts, as the program returns them.
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

/// What one run gave back.
#[derive(Debug)]
pub struct Ran {
    pub verdict: u32,
    /// The frame as the program left it.
    pub out: Vec<u8>,
    /// The kernel's duration of the run.
    pub duration: Duration,
}

/// Runs `frame` once through `prog` (repeat 1: with more, the kernel would
/// run the rewritten frame again).
pub fn run_frame(prog: &Xdp, frame: &[u8]) -> Ran {
    let mut out = vec![0u8; frame.len() + 256];
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    out.truncate(r.data_size_out as usize);
    Ran {
        verdict: r.return_value,
        out,
        duration: r.duration,
    }
}
