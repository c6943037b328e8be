//! `cargo xtask <command>`: setup, build-ebpf, test, demo.

mod bench;
mod build_ebpf;
mod demo;
mod lint;
mod setup;
mod test;
mod util;

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
    /// cargo fmt --check and clippy (userspace and the XDP program).
    Lint,
    /// Run the benchmarks (needs root).
    Bench {
        /// Every piece briefly (checks the harness, not the speed).
        #[arg(long)]
        quick: bool,
    },
    /// Build, make the test topology, run xdplb with config/demo.yaml,
    /// drive traffic and print packets per second; then tear down.
    Demo {
        /// How long to drive traffic.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().cmd {
        Cmd::Setup => setup::run(),
        Cmd::BuildEbpf => build_ebpf::run(),
        Cmd::Test { args } => test::run(&args),
        Cmd::Demo { seconds } => demo::run(seconds),
        Cmd::Bench { quick } => bench::run(quick),
        Cmd::Lint => lint::run(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
