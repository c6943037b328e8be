//! `cargo xtask <command>`: setup, build-ebpf, test, vm-test, demo, bench,
//! fuzz-packets, fuzz, package.

mod bench;
mod build_ebpf;
mod demo;
mod fuzz;
mod fuzz_packets;
mod lint;
mod package;
mod setup;
mod test;
mod util;
mod vm;
mod vm_test;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "xdplb developer tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what is missing: nightly + rust-src, LLVM 22 and test tools, bpf-linker.
    Setup,
    /// Build the release daemon (which embeds the XDP program); print the object path.
    BuildEbpf,
    /// Run every test of the workspace (as root).
    Test {
        /// Extra arguments for `cargo test` (e.g. a filter, or `-- --nocapture`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the tests inside QEMU guests booting Debian's 5.10, 6.1 and 6.12 kernels
    /// (kernel packages fetched through apt and cached in target/vm-cache).
    VmTest {
        /// Kernels to test: 5.10, 6.1, 6.12 or all (comma-separated or repeated).
        #[arg(long = "kernel", default_value = "all", value_delimiter = ',')]
        kernels: Vec<String>,
        /// Run only these tests, in this order (comma-separated or repeated):
        /// load, packet, flow_sync, consistency, trace, testbed, nat, modes, operations,
        /// virtio (the default, in that order), or any other lb-userspace
        /// test target.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Accelerator; default: KVM if a guest really runs with it, else TCG.
        #[arg(long, value_enum)]
        accel: Option<vm::qemu::Accel>,
        #[arg(long, default_value_t = 2)]
        cpus: u32,
        #[arg(long, default_value_t = 3072)]
        memory_mib: u32,
        /// Minutes before a guest is killed (per kernel).
        #[arg(long, default_value_t = 20)]
        timeout_min: u64,
        /// Show the guest's whole console, not only the test markers.
        #[arg(long, short)]
        verbose: bool,
        /// Arguments for every test executable (e.g. a filter); tests run one
        /// at a time (`--test-threads=1`) unless these set `--test-threads`.
        #[arg(last = true)]
        test_args: Vec<String>,
    },
    /// cargo fmt --check and clippy (userspace and the XDP program).
    Lint,
    /// Build the Debian package (cargo-deb, installed if missing): the
    /// binary, the systemd unit, /etc/xdplb/xdplb.yaml, man pages and
    /// completions. Prints the .deb's path.
    Package,
    /// Fuzz the XDP programs: frames through them with BPF_PROG_TEST_RUN,
    /// every verdict checked (docs/security.md, "Packet fuzzing"; root).
    FuzzPackets {
        /// Frames to run.
        #[arg(long, default_value_t = 10_000_000)]
        count: u64,
        /// Seed of the generator (a seed replays a run) [default: random].
        #[arg(long)]
        seed: Option<u64>,
        /// More arguments for the fuzzer: --max-failures N, --epoch N,
        /// --decap-hex FRAME.
        #[arg(last = true)]
        extra: Vec<String>,
    },
    /// Run the cargo-fuzz targets of fuzz/ (config, admin API, trace
    /// captures) with libFuzzer on nightly; installs cargo-fuzz if missing.
    /// Fails on the first crash, naming the input that caused it.
    Fuzz {
        /// Only this target (default: every one, in turn).
        #[arg(long)]
        target: Option<String>,
        /// Seconds each target runs.
        #[arg(long, default_value_t = 60)]
        time: u64,
    },
    /// Run the benchmarks (needs root).
    Bench {
        /// Every piece briefly (checks the harness, not the speed).
        #[arg(long)]
        quick: bool,
        /// Only compare this build's XDP program with the one of git
        /// revision REV, per path, side by side in one process (a code
        /// change: the maps' layout must not differ). Writes no report.
        #[arg(long, value_name = "REV", conflicts_with = "quick")]
        ab: Option<String>,
        /// Only write the report again from the last run's
        /// target/bench/results.json (after a change to the report).
        #[arg(long, conflicts_with_all = ["quick", "ab"])]
        render: bool,
    },
    /// Build, make the test topology, run xdplb with config/demo.yaml,
    /// drive traffic and print packets per second; then tear down.
    /// With --nodes N: N LB nodes behind a router doing ECMP over the VIP
    /// they announce with BGP; packets per second per node, and node 1
    /// stopped at a third of the run while the others take its traffic.
    Demo {
        /// How long to drive traffic.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Run the multi-node demo with this many LB nodes (2-9).
        #[arg(long, value_parser = clap::value_parser!(u8).range(2..=9))]
        nodes: Option<u8>,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().cmd {
        Cmd::Setup => setup::run(),
        Cmd::BuildEbpf => build_ebpf::run(),
        Cmd::Test { args } => test::run(&args),
        Cmd::Demo { seconds, nodes } => demo::run(seconds, nodes),
        Cmd::FuzzPackets { count, seed, extra } => fuzz_packets::run(count, seed, &extra),
        Cmd::Bench { ab: Some(rev), .. } => bench::ab::run(&rev),
        Cmd::Bench { render: true, .. } => bench::render(),
        Cmd::Bench {
            quick, ab: None, ..
        } => bench::run(quick),
        Cmd::Lint => lint::run(),
        Cmd::Package => package::run(),
        Cmd::Fuzz { target, time } => fuzz::run(target.as_deref(), time),
        Cmd::VmTest {
            kernels,
            only,
            accel,
            cpus,
            memory_mib,
            timeout_min,
            verbose,
            test_args,
        } => vm_test::run(&vm_test::Options {
            kernels,
            only,
            accel,
            cpus,
            memory_mib,
            timeout: std::time::Duration::from_secs(timeout_min * 60),
            verbose,
            test_args,
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
