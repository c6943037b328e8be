//! `cargo xtask demo`: build, then run the demo scenario
//! (lb-userspace/examples/demo.rs) with the release daemon and
//! config/demo.yaml.

use anyhow::{Result, bail};

use crate::util::{cargo, exec, is_root, root};

pub fn run(seconds: u64) -> Result<()> {
    if !is_root() {
        bail!("cargo xtask demo must run as root (it creates network namespaces and loads XDP)");
    }
    crate::setup::run()?;
    exec(
        cargo()
            .args([
                "build",
                "--release",
                "-p",
                "lb-userspace",
                "--bins",
                "--examples",
            ])
            .env_remove("AYA_BUILD_SKIP"),
    )?;
    let target = root().join("target/release");
    exec(
        std::process::Command::new(target.join("examples/demo"))
            .current_dir(root())
            .arg("--xdplb")
            .arg(target.join("xdplb"))
            .args(["--config", "config/demo.yaml", "--seconds"])
            .arg(seconds.to_string()),
    )
}
