//! `cargo xtask setup`: idempotent; checks first and installs only what is
//! missing, so a ready machine does no work.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util::{exec, find, is_root, output};

const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "ethtool",
    "iproute2",
    // BGP: the daemon runs BIRD 2 for VIP announcement (docs/ha.md).
    "bird2",
    // tests/api_security.rs installs schemathesis (PyPI) into a venv.
    "python3-venv",
    // tests/faults.rs: a backend that blackholes (nft drops its SYNs).
    "nftables",
    // tests/systemd.rs and tests/package.rs: setpriv, systemd-analyze
    // verify (which looks the unit's man pages up with man).
    "util-linux",
    "systemd",
    "man-db",
];
const BPF_LINKER_VERSION: &str = "0.13.0";
/// `cargo xtask fuzz` (libFuzzer targets in fuzz/; installed on demand).
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// `cargo xtask package` (installed on demand).
const CARGO_DEB_VERSION: &str = "3.8.0";

pub fn run() -> Result<()> {
    let mut did = false;
    did |= nightly()?;
    did |= apt()?;
    did |= bpf_linker()?;
    if !did {
        eprintln!(
            "xtask setup: all present (nightly + rust-src, {}, bpf-linker {BPF_LINKER_VERSION})",
            APT_PACKAGES.join(", ")
        );
    }
    Ok(())
}

fn nightly() -> Result<bool> {
    let toolchains =
        output(Command::new("rustup").args(["toolchain", "list"])).context("rustup not found")?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        eprintln!("xtask setup: installing the nightly toolchain with rust-src");
        let args = [
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "-c",
            "rust-src",
        ];
        exec(Command::new("rustup").args(args))?;
        return Ok(true);
    }
    let components = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .unwrap_or_default();
    if components
        .lines()
        .any(|l| l.trim() == "rust-src" || l.starts_with("rust-src-"))
    {
        return Ok(false);
    }
    eprintln!("xtask setup: adding rust-src to nightly");
    exec(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
    Ok(true)
}

fn installed(pkg: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .is_some_and(|s| s.trim() == "install ok installed")
}

fn apt() -> Result<bool> {
    apt_install(APT_PACKAGES)
}

/// Installs those of `packages` that are missing.
fn apt_install(packages: &[&str]) -> Result<bool> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(false);
    }
    eprintln!(
        "xtask setup: installing missing packages: {}",
        missing.join(" ")
    );
    let sudo = |program: &str| {
        if is_root() {
            Command::new(program)
        } else {
            let mut c = Command::new("sudo");
            c.arg(program);
            c
        }
    };
    exec(sudo("apt-get").arg("update"))?;
    exec(
        sudo("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    Ok(true)
}

fn bpf_linker() -> Result<bool> {
    let version = find("bpf-linker").and_then(|p| output(Command::new(p).arg("--version")));
    if version
        .as_deref()
        .is_some_and(|v| v.split_whitespace().any(|w| w == BPF_LINKER_VERSION))
    {
        return Ok(false);
    }
    eprintln!(
        "xtask setup: installing bpf-linker {BPF_LINKER_VERSION} (found: {})",
        version.as_deref().map_or("none", str::trim)
    );
    let mut cmd = Command::new("cargo");
    cmd.env("LLVM_PREFIX", "/usr/lib/llvm-22").args([
        "install",
        "bpf-linker",
        "--version",
        BPF_LINKER_VERSION,
        // The versions in bpf-linker's own lockfile, not whatever resolves today.
        "--locked",
        "--no-default-features",
        "--features",
        "llvm-22",
    ]);
    // Build with the stable toolchain even if a rust-toolchain file says otherwise.
    cmd.env_remove("RUSTUP_TOOLCHAIN");
    exec(&mut cmd)?;
    if find("bpf-linker").is_none() {
        bail!("bpf-linker installed but not found: add ~/.cargo/bin to PATH");
    }
    Ok(true)
}

/// cargo-fuzz, for `cargo xtask fuzz` only (not part of `run`: the other
/// tasks do not need it). Idempotent like the rest.
pub fn cargo_fuzz() -> Result<()> {
    nightly()?;
    // libfuzzer-sys builds libFuzzer (C++).
    apt_install(&["g++"])?;
    cargo_tool("cargo-fuzz", CARGO_FUZZ_VERSION)
}

/// cargo-deb, for `cargo xtask package` only.
pub fn cargo_deb() -> Result<()> {
    cargo_tool("cargo-deb", CARGO_DEB_VERSION)
}

/// `cargo install NAME --version VERSION --locked` unless that version is
/// already there (its `--version` output names it).
fn cargo_tool(name: &str, version: &str) -> Result<()> {
    let found = find(name).and_then(|p| output(Command::new(p).arg("--version")));
    if found
        .as_deref()
        .is_some_and(|v| v.split_whitespace().any(|w| w == version))
    {
        return Ok(());
    }
    eprintln!(
        "xtask setup: installing {name} {version} (found: {})",
        found.as_deref().map_or("none", str::trim)
    );
    let mut cmd = Command::new("cargo");
    cmd.args(["install", name, "--version", version, "--locked"]);
    cmd.env_remove("RUSTUP_TOOLCHAIN");
    exec(&mut cmd)?;
    if find(name).is_none() {
        bail!("{name} installed but not found: add ~/.cargo/bin to PATH");
    }
    Ok(())
}
