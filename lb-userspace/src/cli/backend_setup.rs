//! `xdplb backend-setup`: a dsr or tunnel backend's VIPs on `lo`.

use std::{net::IpAddr, process::ExitCode};

/// Prints what changed, or "nothing to change".
pub fn backend_setup(vips: &[IpAddr], remove: bool) -> ExitCode {
    let done = if remove {
        xdplb::backend_setup::dsr_teardown(vips)
    } else {
        xdplb::backend_setup::dsr_setup(vips)
    };
    super::print_lines(done.map(|lines| {
        if lines.is_empty() {
            vec!["nothing to change".into()]
        } else {
            lines
        }
    }))
}
