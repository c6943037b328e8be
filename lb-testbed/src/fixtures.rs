//! Fixtures shared by the tests and benches: the services of the
//! frame-level tests and the addresses they name, daemon configs, and the
//! program loaded from a config as the daemon would load it.

use std::{
    fmt::Display,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use xdplb::{config::Config, dataplane::Dataplane, plan};

use crate::daemon::ADMIN;

/// The services of the tests that run frames through the program (packet,
/// trace): nat, dsr, tunnel and all-ports services over IPv4 and IPv6, and
/// backends without a neighbour or a route. See fixtures/services.yaml.
pub const SERVICES: &str = include_str!("../fixtures/services.yaml");

/// The SNAT addresses of [`SERVICES`] (the LB's backend-side addresses).
pub const SNAT: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
pub const SNAT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
/// The VIPs of [`SERVICES`], by service name.
pub const WEB_VIP: Ipv4Addr = vip4(10);
pub const DNS_VIP: Ipv4Addr = vip4(11);
pub const LOST_VIP: Ipv4Addr = vip4(12);
pub const FAR_VIP: Ipv4Addr = vip4(13);
pub const DSR_VIP: Ipv4Addr = vip4(20);
pub const ANY_VIP: Ipv4Addr = vip4(30);
pub const STICKY_VIP: Ipv4Addr = vip4(31);
pub const WEB6_VIP: Ipv6Addr = vip6(0x10);
pub const DNS6_VIP: Ipv6Addr = vip6(0x11);
pub const DSR6_VIP: Ipv6Addr = vip6(0x20);
/// Services `empty` (TCP 80) and `empty_udp` (UDP 53): no usable backend.
pub const EMPTY_VIP: Ipv4Addr = vip4(50);
pub const EMPTY6_VIP: Ipv6Addr = vip6(0x50);
/// Service `quiet`: no usable backend, `on_empty: drop`.
pub const QUIET_VIP: Ipv4Addr = vip4(51);
/// The backends of service `web`.
pub const WEB_BACKENDS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(198, 18, 1, 11),
    Ipv4Addr::new(198, 18, 1, 12),
    Ipv4Addr::new(198, 18, 1, 13),
];

/// VIP number `n` of the VIP ranges: 198.18.100.n.
pub const fn vip4(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 100, n)
}

/// VIP number `n` of the VIP ranges: 2001:db8:100::n.
pub const fn vip6(n: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, n)
}

/// The program loaded with the config's limits and its maps filled from
/// the config's plan, as the daemon does; not attached anywhere.
pub fn dataplane(yaml: &str) -> (Dataplane, plan::Plan) {
    dataplane_of(xdplb::dataplane::PROGRAM, yaml)
}

/// [`dataplane`] with another build of the program (`object`: its ELF).
pub fn dataplane_of(object: &[u8], yaml: &str) -> (Dataplane, plan::Plan) {
    let cfg = Config::from_yaml(yaml).expect("the fixture config is valid");
    let plan = plan::from_config(&cfg).expect("the fixture config plans");
    let mut dp =
        Dataplane::load_object(object, &cfg.limits, None).expect("program loads (verifier)");
    dp.apply(&plan).expect("the plan applies");
    (dp, plan)
}

/// A daemon config: `interfaces`, `pin_dir` (unique per run: the daemon
/// pins there and the test bed removes it), the admin API on [`ADMIN`],
/// then `settings` (top-level keys, one per line) and `services` (entries
/// from [`service`]).
pub fn daemon_config(
    interfaces: &[&str],
    pin_dir: &str,
    settings: &str,
    services: &[String],
) -> String {
    format!(
        "interfaces: [{}]\npin_dir: {pin_dir}\nadmin: {{ listen: {ADMIN} }}\n{}\nservices:\n{}",
        interfaces.join(", "),
        settings.trim_end(),
        services.concat()
    )
}

/// `config` (from [`daemon_config`]) with `admin.token_file` set: every
/// change through the API needs that file's token.
pub fn with_token_file(config: &str, token: &std::path::Path) -> String {
    config.replace(
        &format!("admin: {{ listen: {ADMIN} }}"),
        &format!(
            "admin: {{ listen: {ADMIN}, token_file: {} }}",
            token.display()
        ),
    )
}

/// One entry of `services:`; `keys` are more of its keys, one per entry
/// (`protocol: udp`, `mode: dsr`, `health_check: {...}`).
pub fn service(
    name: &str,
    vip: impl Display,
    port: u16,
    keys: &[&str],
    backends: &[String],
) -> String {
    let keys: String = keys.iter().map(|k| format!("    {k}\n")).collect();
    let list: String = backends.iter().map(|b| format!("      - {b}\n")).collect();
    format!("  - name: {name}\n    vip: \"{vip}\"\n    port: {port}\n{keys}    backends:\n{list}")
}

/// One backend of a [`service`].
pub fn backend(addr: impl Into<IpAddr>, port: u16) -> String {
    format!("{{ address: \"{}\", port: {port} }}", addr.into())
}
