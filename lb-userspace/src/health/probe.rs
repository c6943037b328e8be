//! One check of a backend, by check type; Err says why it failed, in words
//! that end up in logs, transitions and the API's `check.last_error`.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::net::{TcpStream, UdpSocket};

use super::http;
use crate::config::{CheckType, HealthCheck};

/// One check of `addr`, bounded by the check's timeout.
pub(super) async fn run(check: &HealthCheck, addr: SocketAddr) -> Result<(), String> {
    let probe = async {
        match check.r#type {
            CheckType::Tcp => connect(addr).await.map(drop),
            CheckType::Http => http::check(check, addr).await,
            CheckType::Udp => udp(check, addr).await,
        }
    };
    tokio::time::timeout(check.timeout, probe)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "{} check timed out after {:?}",
                check.r#type, check.timeout
            ))
        })
}

/// A TCP connection to `addr` that closes with a RST.
pub(super) async fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("tcp connect to {addr}: {e}"))?;
    // Close with a RST (like HAProxy): no TIME_WAIT per check.
    let _ = stream.set_zero_linger();
    Ok(stream)
}

async fn udp(check: &HealthCheck, addr: SocketAddr) -> Result<(), String> {
    let local: SocketAddr = if addr.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local)
        .await
        .map_err(|e| format!("udp socket: {e}"))?;
    // Connected: the kernel reports an ICMP unreachable as ECONNREFUSED.
    socket
        .connect(addr)
        .await
        .map_err(|e| format!("udp connect to {addr}: {e}"))?;
    socket
        .send(check.send().as_bytes())
        .await
        .map_err(|e| format!("udp send to {addr}: {e}"))?;
    let mut reply = vec![0u8; 65536];
    let n = socket.recv(&mut reply).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::ConnectionRefused {
            format!("udp: {addr} port unreachable (ICMP): {e}")
        } else {
            format!("udp receive from {addr}: {e}")
        }
    })?;
    if let Some(want) = &check.expect
        && !contains(&reply[..n], want.as_bytes())
    {
        return Err(format!("udp reply ({n} bytes) does not contain {want:?}"));
    }
    Ok(())
}

/// Whether `needle` occurs in `haystack` (an empty needle always does).
pub(super) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}
