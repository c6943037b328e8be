//! `xdplb explain`: which backend the running daemon sends a flow to.

use std::net::SocketAddr;

use xdplb::{client::ClientError, config::Protocol};

use super::admin::AdminArgs;

/// The protocol argument: `tcp` or `udp`.
pub fn parse_protocol(s: &str) -> Result<Protocol, String> {
    match s {
        "tcp" => Ok(Protocol::Tcp),
        "udp" => Ok(Protocol::Udp),
        _ => Err(format!("{s:?}: expected tcp or udp")),
    }
}

/// Prints the daemon's reason, or its whole answer as JSON.
pub fn explain(
    admin: &AdminArgs,
    src: SocketAddr,
    dst: SocketAddr,
    protocol: Protocol,
    json: bool,
) -> Result<(), ClientError> {
    let explanation = admin.client(false)?.explain(src, dst, protocol)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&explanation).expect("serializable")
        );
    } else {
        println!("{}", explanation.reason);
    }
    Ok(())
}
