//! Neighbour resolution. The XDP program can only forward to next hops whose
//! MAC the kernel already knows; when it meets an unknown one it drops the
//! packet and reports the address here. Sending one datagram toward it makes
//! the kernel resolve it (ARP/ND), so the next packet goes through.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use lb_common::NeighEvent;
use tokio::io::unix::AsyncFd;
use tracing::{debug, warn};

use lb_common::words_addr;

/// UDP discard port: the datagram itself is meant to be ignored.
const DISCARD_PORT: u16 = 9;
/// Ask the kernel about one address at most this often.
const MIN_INTERVAL: Duration = Duration::from_millis(200);

/// Makes the kernel resolve `addr`'s link-layer address.
pub fn resolve(addr: IpAddr) {
    if let Err(e) = try_resolve(addr) {
        warn!("cannot trigger neighbour resolution of {addr}: {e}");
    }
}

/// `resolve`, its failure returned (no route to `addr`, for instance).
pub fn try_resolve(addr: IpAddr) -> std::io::Result<()> {
    let bind: SocketAddr = match addr {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    UdpSocket::bind(bind)
        .and_then(|s| s.send_to(&[], (addr, DISCARD_PORT)))
        .map(drop)
}

/// Serves the program's requests until the task is dropped.
pub async fn watch(events: RingBuf<MapData>) -> std::io::Result<()> {
    // SAFETY: the ring buffer owns its fd and outlives the registration
    // (the AsyncFd owns the ring buffer).
    let mut fd = unsafe { AsyncFd::register(events) }.map_err(std::io::Error::from)?;
    let mut last: HashMap<IpAddr, Instant> = HashMap::new();
    loop {
        let mut guard = fd.readable_mut().await?;
        let ring = guard.get_inner_mut();
        while let Some(item) = ring.next() {
            if item.len() < std::mem::size_of::<NeighEvent>() {
                continue;
            }
            // SAFETY: the program writes whole NeighEvents; read unaligned.
            let ev: NeighEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
            let addr = words_addr(ev.addr, ev.family);
            let now = Instant::now();
            if last.get(&addr).is_some_and(|t| now - *t < MIN_INTERVAL) {
                continue;
            }
            last.insert(addr, now);
            debug!("resolving next hop {addr} (ifindex {})", ev.ifindex);
            resolve(addr);
        }
        guard.clear_ready();
    }
}
