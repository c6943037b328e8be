//! Host settings the data plane depends on.

use std::{fs, io};

/// An address family whose forwarding the data plane needs.
#[derive(Debug, Clone, Copy)]
pub enum Family {
    V4,
    V6,
}

/// `bpf_fib_lookup` answers FWD_DISABLED unless forwarding is on for the
/// ingress interface (per family), so the daemon turns it on where it
/// attaches. Returns whether it changed anything.
pub fn enable_forwarding(iface: &str, family: Family) -> io::Result<bool> {
    let path = match family {
        Family::V4 => format!("/proc/sys/net/ipv4/conf/{iface}/forwarding"),
        Family::V6 => format!("/proc/sys/net/ipv6/conf/{iface}/forwarding"),
    };
    let current = fs::read_to_string(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("reading {path}: {e}")))?;
    if current.trim() == "1" {
        return Ok(false);
    }
    fs::write(&path, "1").map_err(|e| io::Error::new(e.kind(), format!("writing {path}: {e}")))?;
    Ok(true)
}
