//! Running commands with a visible command line and clear errors.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

/// The workspace root (xtask lives one level below it).
pub fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Where cargo builds: `CARGO_TARGET_DIR` (relative to the workspace) if
/// set, else the workspace's `target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root().join(dir),
        None => root().join("target"),
    }
}

/// The cargo that runs us (as set by `cargo run`), else `cargo`, with
/// ~/.cargo/bin first in PATH: the eBPF build needs the bpf-linker that
/// setup may just have installed there.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root());
    with_cargo_bin(&mut cmd);
    cmd
}

/// `cmd` with ~/.cargo/bin first in its PATH (where setup installs
/// bpf-linker), if it is not there already.
pub fn with_cargo_bin(cmd: &mut Command) {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    if let Some(bin) = cargo_home().map(|h| h.join("bin"))
        && !dirs.contains(&bin)
    {
        dirs.insert(0, bin);
        if let Ok(path) = std::env::join_paths(dirs) {
            cmd.env("PATH", path);
        }
    }
}

fn cargo_home() -> Option<PathBuf> {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
}

pub fn line(cmd: &Command) -> String {
    let envs = cmd
        .get_envs()
        .filter(|(k, _)| *k != "PATH")
        .filter_map(|(k, v)| Some(format!("{}={}", k.to_string_lossy(), v?.to_string_lossy())));
    let args = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy().into_owned());
    envs.chain(args).collect::<Vec<_>>().join(" ")
}

/// Prints and runs `cmd` with inherited stdio; fails on a non-zero exit.
pub fn exec(cmd: &mut Command) -> Result<()> {
    let line = line(cmd);
    eprintln!("xtask: + {line}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot run `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Runs `cmd` quietly and returns its stdout if it succeeded.
pub fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `program` from PATH, or from ~/.cargo/bin where cargo install puts it.
pub fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(cargo_home().map(|h| h.join("bin")))
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// An executable cargo built, from its JSON messages.
pub struct Built {
    /// The target's kind: `bin`, `example`, `test`...
    pub kind: String,
    pub name: String,
    /// Built with the test harness (`profile.test`).
    pub test: bool,
    pub path: PathBuf,
}

/// Runs `cmd` (a cargo build or `test --no-run`, given
/// `--message-format=json-render-diagnostics` here) and returns the
/// executables it built, wherever the target dir is (CARGO_TARGET_DIR,
/// config). `what` names the build in the error.
pub fn built_executables(cmd: &mut Command, what: &str) -> Result<Vec<Built>> {
    cmd.arg("--message-format=json-render-diagnostics")
        .stdout(std::process::Stdio::piped());
    eprintln!("xtask: + {}", line(cmd));
    let out = cmd
        .spawn()
        .context("cannot run cargo")?
        .wait_with_output()?;
    if !out.status.success() {
        bail!("building {what} failed ({})", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|msg| {
            let v = serde_json::from_str::<serde_json::Value>(msg).ok()?;
            Some(Built {
                kind: v["target"]["kind"][0].as_str().unwrap_or("").to_owned(),
                name: v["target"]["name"].as_str()?.to_owned(),
                test: v["profile"]["test"].as_bool().unwrap_or(false),
                path: PathBuf::from(v["executable"].as_str()?),
            })
        })
        .collect())
}

/// Builds the release daemon (XDP program embedded) and lb-userspace's
/// example `example`; returns their paths (xdplb, example).
pub fn build_daemon_and_example(example: &str) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    let mut cmd = cargo();
    cmd.args([
        "build",
        "--release",
        "-p",
        "lb-userspace",
        "--bin",
        "xdplb",
        "--example",
        example,
    ])
    .env_remove("AYA_BUILD_SKIP");
    let (mut xdplb, mut built) = (None, None);
    for b in built_executables(&mut cmd, &format!("the {example} example"))? {
        match (b.kind.as_str(), b.name.as_str()) {
            ("bin", "xdplb") => xdplb = Some(b.path),
            ("example", name) if name == example => built = Some(b.path),
            _ => {}
        }
    }
    Ok((
        xdplb.context("cargo built no xdplb binary")?,
        built.with_context(|| format!("cargo built no {example} example"))?,
    ))
}
