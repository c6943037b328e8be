//! Facts about the machine a report was measured on.

use std::{process::Command, time::Duration};

use serde_json::{Value, json};

use crate::util::{output, root};

pub fn facts(took: Duration, quick: bool) -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        cpuinfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_default()
    };
    let virt = if field("flags").split_whitespace().any(|f| f == "hypervisor") {
        "yes (the CPU flags say hypervisor)"
    } else {
        "not detected"
    };
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map(|kb| kb / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    let cmd = |prog: &str, args: &[&str]| {
        output(Command::new(prog).args(args).current_dir(root()))
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    };
    json!({
        "nproc": cmd("nproc", &[]),
        "cpu_model": field("model name"),
        "virtualized": virt,
        "memory_gib": (mem_gib * 10.0).round() / 10.0,
        "kernel": cmd("uname", &["-r"]),
        "os": std::fs::read_to_string("/etc/os-release").unwrap_or_default().lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME=")).unwrap_or("").trim_matches('"'),
        "commit": cmd("git", &["rev-parse", "--short", "HEAD"]),
        "date": cmd("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        "rustc": cmd("rustc", &["--version"]),
        "took_s": took.as_secs(),
        "quick": quick,
    })
}
