//! `cargo xtask bench --ab REV`: this build's program against REV's, side
//! by side in one process (lb-userspace/benches/pktcost/ab.rs), so that a
//! change of a few nanoseconds shows through the machine's noise. REV's
//! lb-ebpf and lb-common are taken with `git archive` into
//! target/bench/ab/REV and built there as aya-build builds them.

use std::{fs, path::PathBuf, process::Command};

use anyhow::{Context, Result, bail};

use crate::util::{cargo, exec, root, target_dir, with_cargo_bin};

pub fn run(rev: &str) -> Result<()> {
    let object = baseline_object(rev)?;
    exec(
        cargo()
            .args(["bench", "-p", "lb-userspace", "--bench", "pktcost"])
            .env_remove("AYA_BUILD_SKIP")
            .env("PKTCOST_BASELINE", &object),
    )
}

/// REV's XDP program, built once per commit.
fn baseline_object(rev: &str) -> Result<PathBuf> {
    let hash = git(&["rev-parse", "--short=12", &format!("{rev}^{{commit}}")])
        .with_context(|| format!("{rev} is not a commit"))?;
    let src = target_dir().join("bench/ab").join(&hash);
    let object = src.join("target/bpfel-unknown-none/release/xdplb");
    if object.exists() {
        return Ok(object);
    }
    fs::create_dir_all(&src)?;
    // The workspace manifest and lockfile too: lb-ebpf takes its versions
    // from them.
    let archive = Command::new("git")
        .current_dir(root())
        .args(["archive", "--format=tar", &hash, "Cargo.toml", "Cargo.lock"])
        .args(["lb-ebpf", "lb-common"])
        .output()
        .context("git archive")?;
    if !archive.status.success() {
        bail!(
            "git archive {hash}: {}",
            String::from_utf8_lossy(&archive.stderr)
        );
    }
    let tar = src.join("src.tar");
    fs::write(&tar, &archive.stdout)?;
    exec(Command::new("tar").arg("-xf").arg(&tar).arg("-C").arg(&src))?;
    // Only the two crates exist here: a workspace of just them.
    let manifest = fs::read_to_string(src.join("Cargo.toml"))?;
    fs::write(
        src.join("Cargo.toml"),
        only_members(&manifest, &["lb-ebpf", "lb-common"]),
    )?;
    // As aya-build does: nightly through rustup (cargo as xtask finds it
    // ignores toolchain overrides), bpf-linker from ~/.cargo/bin.
    let mut build = Command::new("rustup");
    with_cargo_bin(&mut build);
    exec(
        build
            .current_dir(&src)
            .args(["run", "nightly", "cargo"])
            .env_remove("RUSTC")
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .env(
                "CARGO_ENCODED_RUSTFLAGS",
                [
                    "--cfg=bpf_target_arch=\"x86_64\"",
                    "-Cdebuginfo=2",
                    "-Clink-arg=--btf",
                ]
                .join("\u{1f}"),
            )
            .args(["build", "--release", "-p", "lb-ebpf", "--bin", "xdplb"])
            .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
            .arg("--target-dir")
            .arg(src.join("target")),
    )?;
    Ok(object)
}

/// `manifest` with its workspace members replaced by `members`.
fn only_members(manifest: &str, members: &[&str]) -> String {
    let list = members
        .iter()
        .map(|m| format!("\"{m}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let mut out = String::new();
    let mut skipping = false;
    for line in manifest.lines() {
        let t = line.trim_start();
        if skipping {
            skipping = !t.contains(']');
            continue;
        }
        if t.starts_with("members") || t.starts_with("default-members") {
            if t.starts_with("members") {
                out.push_str(&format!("members = [{list}]\n"));
            }
            skipping = !t.contains(']');
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn git(args: &[&str]) -> Result<String> {
    let out = Command::new("git")
        .current_dir(root())
        .args(args)
        .output()?;
    if !out.status.success() {
        bail!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}
