//! `cargo xtask bench [--quick | --ab REV]`: every benchmark of docs/design.md section 8,
//! one after another on an otherwise idle machine, then a report.
//!
//! Each bench target (lb-userspace/benches/) prints its table and a last
//! line `BENCH_RESULT {json}`; this collects those lines into
//! target/bench/results.json and writes docs/benchmarks.md with a
//! packets-per-second plot (docs/benchmarks-pps.svg). `--quick` runs every
//! piece briefly to check that the harness works (numbers meaningless) and
//! writes its report under target/bench/ instead of docs/. `--ab REV`
//! compares two builds of the program instead (`bench/ab.rs`); `--render`
//! only writes the report again from target/bench/results.json.

pub mod ab;
mod machine;
mod report;
mod svg;

use std::{
    io::{BufRead, BufReader},
    process::Stdio,
    time::Instant,
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::util::{cargo, is_root, line, root};

/// Bench targets in the order they run (cheapest first, so a broken
/// harness fails early).
const BENCHES: &[&str] = &["pktcost", "scale", "control", "pps", "rps", "flood"];

pub fn run(quick: bool) -> Result<()> {
    if !is_root() {
        bail!("cargo xtask bench must run as root (it loads XDP programs)");
    }
    crate::setup::run()?;
    let started = Instant::now();
    let mut results = Vec::new();
    let mut commands = Vec::new();
    for bench in BENCHES {
        let mut cmd = cargo();
        cmd.args(["bench", "-p", "lb-userspace", "--bench", bench])
            .env_remove("AYA_BUILD_SKIP");
        if quick {
            cmd.args(["--", "--quick"]);
        }
        commands.push(line(&cmd));
        results.push(run_bench(&mut cmd, bench)?);
    }
    let facts = machine::facts(started.elapsed(), quick);
    let out_dir = root().join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    std::fs::write(
        out_dir.join("results.json"),
        serde_json::to_string_pretty(
            &serde_json::json!({"machine": facts, "commands": commands, "results": results}),
        )?,
    )?;
    render()
}

/// Writes the report (and its plot) from target/bench/results.json: under
/// docs/ after a full run, under target/bench/ after `--quick`.
/// `cargo xtask bench --render` runs only this, after a change to the report.
pub fn render() -> Result<()> {
    let out_dir = root().join("target/bench");
    let path = out_dir.join("results.json");
    let saved: Value = serde_json::from_str(
        &std::fs::read_to_string(&path)
            .with_context(|| format!("{} (run cargo xtask bench first)", path.display()))?,
    )
    .with_context(|| path.display().to_string())?;
    let results = saved["results"].as_array().cloned().unwrap_or_default();
    let facts = &saved["machine"];
    let commands: Vec<String> = saved["commands"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter_map(|c| c.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let (md_path, svg_path) = if facts["quick"].as_bool().unwrap_or(false) {
        (
            out_dir.join("benchmarks.md"),
            out_dir.join("benchmarks-pps.svg"),
        )
    } else {
        (
            root().join("docs/benchmarks.md"),
            root().join("docs/benchmarks-pps.svg"),
        )
    };
    let find = |name: &str| results.iter().find(|r| r["bench"] == name);
    let pps = find("pps").context("no pps result")?;
    std::fs::write(&svg_path, svg::pps_chart(pps))?;
    let svg_name = svg_path.file_name().unwrap().to_string_lossy().into_owned();
    std::fs::write(
        &md_path,
        report::markdown(&results, facts, &commands, &svg_name),
    )?;
    eprintln!(
        "xtask bench: wrote {} and {}",
        md_path.display(),
        svg_path.display(),
    );
    Ok(())
}

/// Runs one bench, echoing its output, and returns its BENCH_RESULT.
fn run_bench(cmd: &mut std::process::Command, bench: &str) -> Result<Value> {
    eprintln!("xtask: + {}", line(cmd));
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run the {bench} bench"))?;
    let mut result = None;
    for l in BufReader::new(child.stdout.take().unwrap()).lines() {
        let l = l?;
        println!("{l}");
        if let Some(json) = l.strip_prefix("BENCH_RESULT ") {
            result = Some(serde_json::from_str(json).context("a BENCH_RESULT line")?);
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("the {bench} bench failed ({status})");
    }
    result.with_context(|| format!("the {bench} bench printed no BENCH_RESULT line"))
}
