//! The packet fuzzer behind `cargo xtask fuzz-packets`: frames through the
//! real XDP programs with BPF_PROG_TEST_RUN, every verdict checked
//! (lb-testbed's `fuzz` module; docs/security.md, "Packet fuzzing").
//! Exits 1 on a failure, after printing its reproducer. Needs root.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context, Result};
use clap::Parser;
use lb_testbed::fuzz;

#[derive(Parser)]
struct Args {
    /// Frames to run (balancer and decapsulator together).
    #[arg(long, default_value_t = 10_000_000)]
    count: u64,
    /// Seed of the generator [default: random, printed].
    #[arg(long)]
    seed: Option<u64>,
    /// Balancer frames per epoch (tables checked and emptied after each).
    #[arg(long, default_value_t = 20_000)]
    epoch: u64,
    /// Stop after failures of this many classes (the first of each is
    /// shown with its reproducer, later ones counted).
    #[arg(long, default_value_t = 1)]
    max_failures: usize,
    /// Where reproducers (config, pcap) are written.
    #[arg(long, default_value = "target/fuzz-packets")]
    out_dir: PathBuf,
    /// The xdplb binary, as reproducer commands name it.
    #[arg(long, default_value = "xdplb")]
    xdplb: String,
    /// Run one frame (hex) through the decapsulator and print what it did.
    #[arg(long, value_name = "FRAME")]
    decap_hex: Option<String>,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("fuzz-packets: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> Result<bool> {
    if let Some(h) = args.decap_hex {
        let frame = xdplb::trace::read_input(&xdplb::trace::Input::Hex(vec![h]))?
            .frames
            .remove(0)
            .data;
        let (verdict, out) = fuzz::run_decap(&frame)?;
        let names = ["ABORTED", "DROP", "PASS", "TX", "REDIRECT"];
        let name = names.get(verdict as usize).copied().unwrap_or("UNKNOWN");
        let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
        println!("xdplb_decap: {name}\noutput: {hex}");
        return Ok(true);
    }
    let seed = args.seed.unwrap_or_else(rand_seed);
    println!(
        "fuzz-packets: {} frames, seed {seed} (replay with --seed {seed})",
        args.count
    );
    let opts = fuzz::Options {
        count: args.count,
        seed,
        epoch: args.epoch,
        out_dir: args.out_dir,
        xdplb: args.xdplb,
        rerun: "cargo xtask fuzz-packets".into(),
        keep_netns: true,
        max_failures: args.max_failures,
        progress: Some(Duration::from_secs(10)),
    };
    let report = fuzz::run(&opts).context("fuzzing")?;
    println!("{report}");
    Ok(report.failed.is_empty())
}

/// A seed from the clock and the process id (printed, so a run replays).
fn rand_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (t.as_nanos() as u64) ^ ((std::process::id() as u64) << 32)
}
