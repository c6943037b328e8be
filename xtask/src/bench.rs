//! `cargo xtask bench`: the benchmarks (design.md section 8). So far: the
//! per-packet cost of each path from BPF_PROG_TEST_RUN
//! (lb-userspace/benches/pktcost.rs).

use anyhow::{Result, bail};

use crate::util::{cargo, exec, is_root};

pub fn run(quick: bool) -> Result<()> {
    if !is_root() {
        bail!("cargo xtask bench must run as root (it loads XDP programs)");
    }
    crate::setup::run()?;
    let mut cmd = cargo();
    cmd.args(["bench", "-p", "lb-userspace", "--bench", "pktcost"])
        .env_remove("AYA_BUILD_SKIP");
    if quick {
        cmd.args(["--", "--quick"]);
    }
    exec(&mut cmd)
}
