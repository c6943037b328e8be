//! `cargo xtask package`: the Debian package, with cargo-deb (its metadata
//! is in lb-userspace/Cargo.toml): the release binary (XDP program
//! embedded) naming the package version in `--version`, the systemd unit,
//! /etc/xdplb/xdplb.yaml as a conffile, man pages and shell completions
//! (made here by the binary itself, clap_mangen and clap_complete).
//! Prints the .deb's path on stdout (the last line).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::util::{built_executables, cargo, exec};

/// The Debian revision (the metadata's `revision`).
const REVISION: &str = "1";

pub fn run() -> Result<()> {
    let deb = build()?;
    println!("{}", deb.display());
    Ok(())
}

/// Builds the package; returns its path.
pub fn build() -> Result<PathBuf> {
    crate::setup::run()?;
    crate::setup::cargo_deb()?;
    let version = format!("{}-{REVISION}", env!("CARGO_PKG_VERSION"));
    let xdplb = build_daemon(&version)?;

    // Where the metadata's assets expect them: target/release/package/
    // (cargo-deb maps target/release/ to the real target dir).
    let out = xdplb.parent().context("the binary's dir")?.join("package");
    let _ = fs::remove_dir_all(&out);
    let man = out.join("man");
    let completions = out.join("completions");
    fs::create_dir_all(&man)?;
    fs::create_dir_all(&completions)?;
    exec(Command::new(&xdplb).args(["manpage", "--dir"]).arg(&man))?;
    exec(Command::new("gzip").args(["-9", "-n"]).args(pages(&man)?))?;
    for (shell, file) in [
        ("bash", "xdplb.bash"),
        ("zsh", "_xdplb"),
        ("fish", "xdplb.fish"),
    ] {
        let script = Command::new(&xdplb)
            .args(["completions", shell])
            .output()
            .context("xdplb completions")?;
        if !script.status.success() {
            bail!("xdplb completions {shell} failed ({})", script.status);
        }
        fs::write(completions.join(file), script.stdout)?;
    }

    let deb_dir = xdplb
        .parent()
        .and_then(Path::parent)
        .context("the binary's target dir")?
        .join("debian");
    let mut cmd = cargo();
    cmd.args(["deb", "-p", "lb-userspace", "--no-build", "--output"])
        .arg(&deb_dir);
    exec(&mut cmd)?;
    let deb = deb_dir.join(format!("xdplb_{version}_amd64.deb"));
    if !deb.is_file() {
        bail!("cargo deb made no {}", deb.display());
    }
    Ok(deb)
}

/// The release daemon with `XDPLB_PACKAGE_VERSION` (for `--version`).
fn build_daemon(version: &str) -> Result<PathBuf> {
    let mut cmd = cargo();
    cmd.args(["build", "--release", "-p", "lb-userspace", "--bin", "xdplb"])
        .env("XDPLB_PACKAGE_VERSION", version)
        .env_remove("AYA_BUILD_SKIP");
    built_executables(&mut cmd, "the release daemon")?
        .into_iter()
        .find(|b| b.kind == "bin" && b.name == "xdplb")
        .map(|b| b.path)
        .context("cargo built no xdplb binary")
}

/// The `*.1` files in `dir`.
fn pages(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut pages: Vec<PathBuf> = fs::read_dir(dir)?
        .map(|e| Ok(e?.path()))
        .collect::<Result<_>>()?;
    pages.retain(|p| p.extension().is_some_and(|e| e == "1"));
    if pages.is_empty() {
        bail!("xdplb manpage wrote no page into {}", dir.display());
    }
    Ok(pages)
}
