//! Helpers shared by the bench targets (each includes this with `mod common;`).
//! Every bench prints a human table, then one machine-readable line
//! `BENCH_RESULT {json}` that `cargo xtask bench` collects.
#![allow(dead_code)] // each bench uses a different part

use std::{
    collections::HashMap,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use lb_testbed::netns;
use nix::{sched::CpuSet, unistd::Pid};

/// `-- --quick`: every piece briefly (a smoke run of the harness).
pub fn quick() -> bool {
    std::env::args().any(|a| a == "--quick")
}

/// The line `cargo xtask bench` looks for.
pub fn emit(bench: &str, mut result: serde_json::Value) {
    result["bench"] = bench.into();
    result["quick"] = quick().into();
    println!("BENCH_RESULT {result}");
}

/// Mean of the middle 80%: finer than the median (durations are whole ns)
/// and robust to the odd interrupt.
pub fn trimmed_mean(mut v: Vec<u64>) -> f64 {
    v.sort_unstable();
    let cut = v.len() / 10;
    let mid = &v[cut..v.len() - cut];
    mid.iter().sum::<u64>() as f64 / mid.len() as f64
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Pins the calling thread (`pid` None) or task `pid` to one CPU.
pub fn pin(pid: Option<i32>, cpu: usize) -> Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu)?;
    let pid = Pid::from_raw(pid.unwrap_or(0));
    nix::sched::sched_setaffinity(pid, &set).with_context(|| format!("pin {pid} to CPU {cpu}"))
}

/// `sh -c SCRIPT` inside namespace `ns` (`ip netns exec`: its own /sys).
pub fn sh_in(ns: &str, script: &str) -> Result<String> {
    netns::run(netns::command(ns, "sh").args(["-c", script]))
}

/// Runs a shell command in a namespace on drop: the undo of a setup step.
pub struct Undo(pub String, pub String);

impl Drop for Undo {
    fn drop(&mut self) {
        let _ = sh_in(&self.0, &self.1);
    }
}

/// kube-proxy's nftables mode in small, in namespace `ns`: DNAT of
/// `vip`:80 to a random one of `backends` (`numgen random mod N`),
/// masquerade toward them; conntrack keeps each flow on its backend.
/// Removed when the returned guard drops.
pub fn kube_proxy_nft(ns: &str, vip: impl std::fmt::Display, backends: &[String]) -> Result<Undo> {
    let map: Vec<String> = backends
        .iter()
        .enumerate()
        .map(|(i, b)| format!("{i} : {b}"))
        .collect();
    let rules = format!(
        "table ip kproxy {{
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr {vip} tcp dport 80 dnat to numgen random mod {n} map {{ {map} }}
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip daddr {{ {set} }} tcp dport 80 masquerade
  }}
}}",
        n = backends.len(),
        map = map.join(", "),
        set = backends.join(", ")
    );
    sh_in(ns, &format!("nft -f - <<'EOF'\n{rules}\nEOF"))?;
    Ok(Undo(ns.to_owned(), "nft delete table ip kproxy".to_owned()))
}

/// `ethtool -S DEV` in `ns`, as name -> value.
pub fn ethtool_stats(ns: &str, dev: &str) -> Result<HashMap<String, u64>> {
    let out = netns::run(netns::command(ns, "ethtool").args(["-S", dev]))?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_owned(), v.trim().parse().ok()?))
        })
        .collect())
}

/// Installs the Debian packages not yet installed (apt-get; needs root and
/// the network). Returns the ones that could not be installed.
pub fn ensure_debian_packages(packages: &[&str]) -> Vec<String> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            let out = Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output();
            !matches!(out, Ok(o) if String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Vec::new();
    }
    eprintln!("bench: installing {}", missing.join(" "));
    let _ = Command::new("apt-get").args(["update", "-qq"]).status();
    let ok = Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Vec::new()
    } else {
        missing.iter().map(|s| s.to_string()).collect()
    }
}

/// Polls `f` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kernel threads (pid, name) whose name starts with `prefix`.
pub fn kthreads(prefix: &str) -> Vec<(i32, String)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let pid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        let comm = comm.trim();
        comm.starts_with(prefix).then(|| (pid, comm.to_owned()))
    })
    .collect()
}

/// Nanoseconds task `pid` has run on a CPU (`/proc/PID/schedstat`).
pub fn task_runtime_ns(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CPU time of process `pid` (all threads), in seconds (`/proc/PID/stat`).
pub fn process_cpu_secs(pid: i32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command (which may hold spaces): utime is the 12th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    ticks as f64 / 100.0
}

/// (busy, total) jiffies of `cpu` from /proc/stat.
pub fn cpu_jiffies(cpu: usize) -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let name = format!("cpu{cpu} ");
    let Some(line) = stat.lines().find(|l| l.starts_with(&name)) else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// Pid of the process whose command line contains `needle`.
pub fn find_process(needle: &str) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.find_map(|e| {
        let pid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        String::from_utf8_lossy(&cmd)
            .contains(needle)
            .then_some(pid)
    })
}

/// SCHED_FIFO at `prio` for task `pid`: a NAPI thread then runs whenever it
/// has work, as a NIC's softirq would, ahead of the processes on its CPU.
pub fn realtime(pid: i32, prio: i32) -> Result<()> {
    let param = libc::sched_param {
        sched_priority: prio,
    };
    // SAFETY: plain syscall on a pid with a valid parameter block.
    let rc = unsafe { libc::sched_setscheduler(pid, libc::SCHED_FIFO, &param) };
    if rc != 0 {
        bail!(
            "sched_setscheduler({pid}, FIFO {prio}): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}
