//! Backend host setup for dsr mode (`xdplb backend-setup`): in dsr mode the
//! packet reaches the backend still addressed to the VIP, so the backend
//! must hold each VIP on `lo` — and, for IPv4, never answer ARP for it or
//! use it as an ARP source, or it would steal the VIP from the balancer.
//! IPv6 needs nothing more: neighbour discovery only answers for addresses
//! of the interface asked.

use std::{fs, net::IpAddr, process::Command};

use anyhow::{Context, Result, bail};

/// `arp_ignore=1`: answer ARP only for addresses of the receiving
/// interface; `arp_announce=2`: always use the best local address as ARP
/// source. Set on `all`, which the kernel combines with each interface's.
const ARP_SYSCTLS: [(&str, &str); 2] = [
    ("/proc/sys/net/ipv4/conf/all/arp_ignore", "1"),
    ("/proc/sys/net/ipv4/conf/all/arp_announce", "2"),
];

fn ip(args: &[&str]) -> Result<std::process::Output> {
    Command::new("ip")
        .args(args)
        .output()
        .with_context(|| format!("running ip {}", args.join(" ")))
}

fn host_prefix(vip: IpAddr) -> String {
    match vip {
        IpAddr::V4(_) => format!("{vip}/32"),
        IpAddr::V6(_) => format!("{vip}/128"),
    }
}

/// Adds each VIP to `lo` (if missing) and sets the ARP sysctls when a VIP
/// is IPv4. Returns a line per change made; idempotent.
pub fn dsr_setup(vips: &[IpAddr]) -> Result<Vec<String>> {
    let mut done = Vec::new();
    if vips.iter().any(IpAddr::is_ipv4) {
        for (path, value) in ARP_SYSCTLS {
            let now = fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
            if now.trim() != value {
                fs::write(path, value).with_context(|| format!("writing {path}"))?;
                done.push(format!("{path} = {value}"));
            }
        }
    }
    for vip in vips {
        let prefix = host_prefix(*vip);
        // No duplicate detection: the VIP is shared by design, and a
        // tentative address could not be bound for a second or so.
        let mut args = vec!["addr", "add", &prefix, "dev", "lo"];
        if vip.is_ipv6() {
            args.push("nodad");
        }
        let out = ip(&args)?;
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            done.push(format!("added {prefix} to lo"));
        } else if !(err.contains("File exists") || err.contains("already assigned")) {
            bail!("ip addr add {prefix} dev lo: {}", err.trim());
        }
    }
    Ok(done)
}

/// Removes the VIPs from `lo` (the ARP sysctls stay: other VIPs may need
/// them). Returns a line per change made.
pub fn dsr_teardown(vips: &[IpAddr]) -> Result<Vec<String>> {
    let mut done = Vec::new();
    for vip in vips {
        let prefix = host_prefix(*vip);
        let out = ip(&["addr", "del", &prefix, "dev", "lo"])?;
        if out.status.success() {
            done.push(format!("removed {prefix} from lo"));
        }
    }
    Ok(done)
}
