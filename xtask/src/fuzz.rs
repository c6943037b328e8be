//! `cargo xtask fuzz [--target NAME] [--time SECONDS]`: the cargo-fuzz
//! targets of fuzz/ (libFuzzer, nightly, AddressSanitizer, debug
//! assertions and overflow checks on), each for a bounded time
//! (docs/security.md, "Fuzzing the parsers").
//!
//! Each target starts from its seeds (fuzz/corpus/NAME, kept in git) and
//! what earlier runs on this machine found (fuzz/target/corpus/NAME, where
//! libFuzzer adds what it finds), with fuzz/dicts/NAME.dict when there is
//! one. A crash, leak, timeout or out-of-memory stops the run, names the
//! input libFuzzer wrote to fuzz/artifacts/NAME/ and how to replay it.

use std::{
    collections::VecDeque,
    fs,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Instant, SystemTime},
};

use anyhow::{Context, Result, bail};

use crate::util::{exec, line, root};

/// A single input taking longer than this is a hang (libFuzzer's -timeout).
const INPUT_TIMEOUT_SECS: u64 = 10;

pub fn run(target: Option<&str>, seconds: u64) -> Result<()> {
    crate::setup::cargo_fuzz()?;
    let dir = root().join("fuzz");
    let all = targets(&dir)?;
    let chosen: Vec<String> = match target {
        Some(t) if all.iter().any(|a| a == t) => vec![t.to_owned()],
        Some(t) => bail!("no fuzz target {t:?}: the targets are {}", all.join(", ")),
        None => all,
    };
    // One build for every target (they share all dependencies).
    let mut build = cargo_fuzz(&dir);
    build.arg("build");
    if let [one] = &chosen[..] {
        build.arg(one);
    }
    exec(build.args(BUILD_FLAGS))?;
    for t in &chosen {
        run_target(&dir, t, seconds)?;
    }
    eprintln!(
        "xtask fuzz: {} target{} ran {seconds}s each without a failure: {}",
        chosen.len(),
        if chosen.len() == 1 { "" } else { "s" },
        chosen.join(", ")
    );
    Ok(())
}

/// Debug assertions (and with them overflow checks) catch more than the
/// release profile would.
const BUILD_FLAGS: &[&str] = &["--debug-assertions"];

/// The targets: fuzz/fuzz_targets/NAME.rs, sorted.
fn targets(dir: &Path) -> Result<Vec<String>> {
    let src = dir.join("fuzz_targets");
    let mut names: Vec<String> = fs::read_dir(&src)
        .with_context(|| format!("reading {}", src.display()))?
        .filter_map(|e| {
            let path = e.ok()?.path();
            (path.extension()? == "rs").then(|| path.file_stem()?.to_str().map(str::to_owned))?
        })
        .collect();
    names.sort();
    if names.is_empty() {
        bail!("no fuzz targets in {}", src.display());
    }
    Ok(names)
}

/// `cargo fuzz` with the nightly toolchain, in fuzz/. No eBPF object is
/// built (the targets load no program), so bpf-linker is not needed.
fn cargo_fuzz(dir: &Path) -> Command {
    // `rustup run`: cargo itself (as xtask finds it) ignores `+nightly`.
    let mut cmd = Command::new("rustup");
    cmd.current_dir(dir)
        .args(["run", "nightly", "cargo", "fuzz"])
        .env("AYA_BUILD_SKIP", "1");
    cmd
}

fn run_target(dir: &Path, target: &str, seconds: u64) -> Result<()> {
    let found = dir.join("target/corpus").join(target);
    fs::create_dir_all(&found).with_context(|| format!("creating {}", found.display()))?;
    let mut cmd = cargo_fuzz(dir);
    cmd.args(["run", target]).args(BUILD_FLAGS).arg(&found);
    let seeds = dir.join("corpus").join(target);
    if seeds.is_dir() {
        cmd.arg(seeds);
    }
    cmd.arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_SECS}"))
        .arg("-print_final_stats=1");
    let dict = dir.join("dicts").join(format!("{target}.dict"));
    if dict.exists() {
        cmd.arg(format!("-dict={}", dict.display()));
    }
    eprintln!("xtask: + {}", line(&cmd));
    let started = SystemTime::now();
    let clock = Instant::now();
    let mut child = cmd
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run cargo fuzz")?;
    // libFuzzer prints a line for every input that adds coverage: show
    // its summary lines; keep its report of a failure (from the panic or
    // the sanitizer's error on), else the last lines.
    let mut last = VecDeque::new();
    let mut report = Vec::new();
    for l in BufReader::new(child.stderr.take().expect("piped")).lines() {
        let l = l.context("reading cargo fuzz's output")?;
        if is_summary(&l) {
            eprintln!("  {target}: {l}");
        }
        if !report.is_empty() || l.contains("panicked at") || l.contains("ERROR:") {
            if report.len() < 150 {
                report.push(l);
            }
            continue;
        }
        if last.len() == 80 {
            last.pop_front();
        }
        last.push_back(l);
    }
    let status = child.wait()?;
    if status.success() {
        eprintln!(
            "xtask fuzz: {target}: no failure in {:.0}s",
            clock.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    let shown = if report.is_empty() {
        Vec::from(last)
    } else {
        report
    };
    for l in shown {
        eprintln!("  {target}| {l}");
    }
    match artifact(&dir.join("artifacts").join(target), started) {
        Some(input) => bail!(
            "fuzz target {target} failed ({status}): the input is {} \
             (replay: cd fuzz && AYA_BUILD_SKIP=1 cargo +nightly fuzz run {target} {}; \
             minimize: cargo +nightly fuzz tmin {target} ...)",
            input.display(),
            input.display()
        ),
        None => bail!("fuzz target {target} failed ({status}) and wrote no artifact"),
    }
}

fn is_summary(l: &str) -> bool {
    [
        "INFO: seed",
        "INITED",
        "pulse",
        "DONE",
        "Done ",
        "stat::number_of_executed_units",
    ]
    .iter()
    .any(|p| l.contains(p))
}

/// The newest crash, leak, timeout or oom input written since `since`.
fn artifact(dir: &Path, since: SystemTime) -> Option<PathBuf> {
    fs::read_dir(dir)
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let modified = e.metadata().ok()?.modified().ok()?;
            (modified >= since).then(|| (modified, e.path()))
        })
        .max()
        .map(|(_, path)| path)
}
