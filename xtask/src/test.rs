//! `cargo xtask test`: every test of the workspace (its default members;
//! lb-ebpf has none and only builds for the BPF target). Needs root: the packet
//! tests load XDP programs and the integration tests create namespaces.
//! `--no-fail-fast`: one failing test binary must not hide the others.
//! The Debian package is built first: its tests get its path in XDPLB_DEB.

use anyhow::{Context, Result, bail};

use crate::util::{cargo, is_root, line};

pub fn run(args: &[String]) -> Result<()> {
    if !is_root() {
        bail!(
            "cargo xtask test must run as root (packet and integration tests load XDP \
             programs and create network namespaces); try: sudo -E cargo xtask test"
        );
    }
    crate::setup::run()?;
    // tests/package.rs installs it, tests/vagrant_lab.rs provisions from it.
    let deb = crate::package::build()?;
    let mut cmd = cargo();
    cmd.args(["test", "--no-fail-fast"])
        .args(args)
        .env("XDPLB_DEB", &deb)
        .env_remove("AYA_BUILD_SKIP");
    eprintln!("xtask: + {}", line(&cmd));
    let status = cmd.status().context("cannot run cargo test")?;
    // Exit with cargo's status and print nothing more, so the output ends
    // with cargo test's own summary.
    std::process::exit(status.code().unwrap_or(1));
}
