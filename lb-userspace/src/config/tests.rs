use super::lines::Lines;
use super::validate::{EPHEMERAL_PORTS, check_ephemeral_overlap};
use super::*;

/// Strips the common indentation, so YAML can be written inline; line 1
/// is the first line after the opening quote.
fn yaml(text: &str) -> String {
    let text = text.strip_prefix('\n').unwrap_or(text);
    let indent = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min();
    text.lines()
        .map(|l| l.get(indent.unwrap_or(0)..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

// The spaces before the closing quote are a last, blank line: they give
// `yaml(BASE)` its final newline.
const BASE: &str = "
        interfaces: [eth0]
        snat: { ipv4: 198.18.1.1 }
        services:
          - name: web
            vip: 198.18.100.10
            port: 80
            backends:
              - { address: 198.18.1.11, port: 8080 }
              - { address: 198.18.1.12, port: 8080 }
    ";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_yaml(&yaml(text))
}

/// The error's message must contain every one of `parts`.
#[track_caller]
fn assert_err(text: &str, parts: &[&str]) {
    let msg = parse(text)
        .expect_err("config should be rejected")
        .to_string();
    println!("{msg}");
    for part in parts {
        assert!(msg.contains(part), "{msg:?} lacks {part:?}");
    }
}

/// BASE with `from` replaced by `to` (which must be present).
fn base_with(from: &str, to: &str) -> String {
    let base = yaml(BASE);
    assert!(base.contains(from), "{from:?}");
    base.replacen(from, to, 1)
}

#[test]
fn shipped_configs_are_valid() {
    let demo = Config::from_yaml(include_str!("../../../config/demo.yaml")).unwrap();
    assert_eq!(demo.interfaces, ["lbc", "lbb"]);
    assert_eq!(demo.snat.ipv4, Some(Ipv4Addr::new(198, 18, 1, 1)));
    assert_eq!(demo.limits.flow_table_size, 65536);
    assert_eq!(demo.services.len(), 2);
    assert_eq!(demo.services[0].backends.len(), 3);
    assert_eq!(demo.services[1].protocol, Protocol::Udp);
    assert_eq!(demo.services[1].backends[1].port, 5353);
    let example = Config::from_yaml(include_str!("../../../config/example.yaml")).unwrap();
    assert_eq!(example.services[0].backends[2].state, BackendState::Drain);
    assert_eq!(example.services[1].hash, HashMode::SourceIp);
    assert_eq!(
        example.services[0].slow_start(),
        Some(Duration::from_secs(30))
    );
    let hc = example.services[0].health_check.as_ref().unwrap();
    assert_eq!((hc.r#type, hc.path()), (CheckType::Http, "/healthz"));
    let bgp = example.bgp.as_ref().unwrap();
    assert_eq!((bgp.local_as, bgp.peers.len()), (65001, 2));
    assert_eq!(demo.bgp, None);
    assert_eq!(example.flow_sync.as_ref().unwrap().peers.len(), 2);
}

#[test]
fn minimal_config_takes_defaults() {
    let c = parse(BASE).unwrap();
    assert_eq!(c.xdp_mode, XdpModeSetting::Auto);
    assert_eq!(c.admin, Admin::default());
    assert_eq!(c.admin.listen.to_string(), "127.0.0.1:9100");
    assert_eq!(
        c.snat.ports,
        PortRange {
            min: 20000,
            max: 29999
        }
    );
    assert_eq!(c.hash_seed, 0x5eed);
    assert_eq!(c.limits, Limits::default());
    let s = &c.services[0];
    assert_eq!(
        (s.protocol, s.mode, s.hash, s.health_check.is_none()),
        (Protocol::Tcp, Mode::Nat, HashMode::FiveTuple, true)
    );
    assert_eq!(
        (s.backends[0].weight, s.backends[0].state),
        (100, BackendState::Ready)
    );
    assert_eq!(HealthCheck::default().timeout, Duration::from_millis(500));
}

#[test]
fn values_parse() {
    let c = parse(&format!(
        "{}\nxdp_mode: generic\nhash_seed: 0xdead\nlimits: {{ maglev_table_size: 251 }}",
        yaml(&base_with(
            "port: 8080 }\n",
            "port: 8080, weight: 0, state: maint }\n"
        ))
    ))
    .unwrap();
    assert_eq!(c.xdp_mode, XdpModeSetting::Generic);
    assert_eq!(c.hash_seed, 0xdead);
    assert_eq!(c.limits.maglev_table_size, 251);
    assert_eq!(
        (
            c.services[0].backends[0].weight,
            c.services[0].backends[0].state
        ),
        (0, BackendState::Maint)
    );
    // Supported already: source-ip hashing and drain.
    let c = parse(&base_with("port: 80\n", "port: 80\n    hash: source-ip\n")).unwrap();
    assert_eq!(c.services[0].hash, HashMode::SourceIp);
    parse(&base_with("port: 8080 }", "port: 8080, state: drain }")).unwrap();
    // A round trip through YAML gives the same config.
    let text = serde_yaml::to_string(&c).unwrap();
    assert_eq!(Config::from_yaml(&text).unwrap(), c);
}

/// Each config must be rejected with a message holding all its parts.
#[track_caller]
fn assert_errs(cases: &[(String, &[&str])]) {
    for (text, parts) in cases {
        assert_err(text, parts);
    }
}

/// Each config must be accepted.
#[track_caller]
fn assert_ok(texts: &[String]) {
    for text in texts {
        if let Err(e) = parse(text) {
            panic!("{e}\n{text}");
        }
    }
}

#[test]
fn syntax_error_has_line_and_column() {
    assert_errs(&[
        (
            "interfaces: [eth0\nservices: []".into(),
            &["YAML syntax error", "line 2"],
        ),
        (
            "interfaces: [eth0]\nservices:\n  - name: a\n   port: 7\n".into(),
            &["YAML syntax error", "line 4"],
        ),
    ]);
}

#[test]
fn unknown_key_names_path_and_line() {
    assert_errs(&[
        (
            base_with("port: 80\n", "port: 80\n    colour: blue\n"),
            &["services[0].colour", "unknown field `colour`", "line 7"],
        ),
        (
            format!("{}\nsnats: {{}}", yaml(BASE)),
            &["snats", "unknown field", "line 11"],
        ),
        (
            base_with("port: 8080 }", "port: 8080, wieght: 5 }"),
            &["services[0].backends[0].wieght", "line 8"],
        ),
    ]);
}

#[test]
fn wrong_type_or_value_names_path_and_line() {
    assert_errs(&[
        (
            base_with("port: 80", "port: eighty"),
            &["services[0].port", "invalid type", "line 6"],
        ),
        (
            base_with("port: 80", "port: 70000"),
            &["services[0].port", "expected u16", "line 6"],
        ),
        (
            base_with("198.18.100.10", "198.18.100"),
            &["services[0].vip", "invalid IP address", "line 5"],
        ),
        (
            base_with("port: 80", "port: 80\n    mode: magic"),
            &["services[0].mode", "unknown variant `magic`", "line 7"],
        ),
        (
            base_with("1.1 }", "1.1, ports: 2000 }"),
            &["snat.ports", "invalid port range \"2000\"", "line 2"],
        ),
        (
            base_with(
                "snat: { ipv4: 198.18.1.1 }",
                "snat:\n  ipv4: 198.18.1.1\n  ports: 30000..40000",
            ),
            &["snat.ports", "expected MIN-MAX", "line 4"],
        ),
        (
            base_with("name: web\n    ", ""),
            &["services[0]", "missing field `name`", "line 4"],
        ),
        (
            "interfaces: eth0".into(),
            &["interfaces", "invalid type", "line 1"],
        ),
    ]);
}

#[test]
fn schema_messages_are_serdes_placed_by_serde_yaml() {
    // A plain scalar that the tree types as a number, before the error
    // and at it: the message is still serde's, for the right key.
    assert_eq!(
        parse(&base_with("name: web\n", "name: 2024\n    colour: blue\n"))
            .unwrap_err()
            .to_string(),
        "services[0].colour: unknown field `colour`, expected one of `name`, `vip`, `port`, \
         `protocol`, `mode`, `encap`, `icmp_echo`, `hash`, `on_empty`, `balance`, `on_full`, \
         `health_check`, `slow_start`, `backends` \
         (line 5, column 5)"
    );
    assert_err(
        &health("interval: 5"),
        &[
            "services[0].health_check.interval: invalid value: string \"5\"",
            "(line 7, column 31)",
        ],
    );
    assert_eq!(
        parse("- eth0").unwrap_err().to_string(),
        "(top level): invalid type: sequence, expected struct Config (line 1, column 1)"
    );
    // What serde cannot give back bare is serde_yaml's whole text.
    let err = parse(&base_with("name: web\n", "name: ~\n    colour: blue\n")).unwrap_err();
    assert!(matches!(err, ConfigError::Schema(_)), "{err:?}");
    assert_eq!(err.line(), Some(5));
    assert!(err.to_string().contains("unknown field `colour`"), "{err}");
}

#[test]
fn duplicate_key_names_its_line() {
    assert_err(
        &base_with("port: 80\n", "port: 80\n    port: 81\n"),
        &["services[0].port", "duplicate field", "line 7"],
    );
}

#[test]
fn interfaces_required_and_unique() {
    assert_errs(&[
        (
            base_with("[eth0]", "[]"),
            &["interfaces: at least one interface", "line 1"],
        ),
        (
            base_with("interfaces: [eth0]\n", ""),
            &["interfaces: at least one"],
        ),
        (
            base_with("[eth0]", "[eth0, eth1, eth0]"),
            &["interfaces[2]", "duplicate interface \"eth0\"", "line 1"],
        ),
        (
            base_with("[eth0]", "[\"eth 0\"]"),
            &["interfaces[0]", "invalid interface name"],
        ),
        (
            base_with("[eth0]", "[averyveryverylongname]"),
            &["interfaces[0]", "invalid interface name"],
        ),
    ]);
}

/// BASE with a second service, `second` (a flow mapping), on line 11.
fn two_services(second: &str) -> String {
    format!("{}\n  - {second}", yaml(BASE))
}

#[test]
fn service_names() {
    assert_errs(&[
        (
            base_with("name: web", "name: \"\""),
            &["services[0].name", "must not be empty", "line 4"],
        ),
        (
            base_with("name: web", "name: web/api"),
            &[
                "services[0].name",
                "invalid service name \"web/api\"",
                "line 4",
            ],
        ),
        (
            base_with("name: web", "name: \"..\""),
            &["services[0].name", "invalid service name"],
        ),
        (
            two_services("{ name: web, vip: 198.18.100.11, port: 80, backends: [] }"),
            &[
                "services[1].name",
                "duplicate service name \"web\" (also services[0])",
                "line 11",
            ],
        ),
    ]);
    assert_ok(&[two_services(
        "{ name: Web_2.a-b, vip: 198.18.100.11, port: 80, backends: [] }",
    )]);
}

#[test]
fn duplicate_vip() {
    assert_err(
        &two_services("{ name: web2, vip: 198.18.100.10, port: 80, protocol: tcp, backends: [] }"),
        &[
            "services[1].vip",
            "198.18.100.10:80/tcp is already used by service \"web\"",
            "line 11",
        ],
    );
    // Another port or protocol on the same address is another service.
    assert_ok(&[
        two_services("{ name: web2, vip: 198.18.100.10, port: 81, backends: [] }"),
        two_services("{ name: web2, vip: 198.18.100.10, port: 80, protocol: udp, backends: [] }"),
    ]);
}

#[test]
fn backends() {
    assert_errs(&[
        (
            base_with("198.18.1.12, port: 8080", "198.18.1.11, port: 8080"),
            &[
                "services[0].backends[1]: duplicate backend 198.18.1.11:8080 (also backends[0])",
                "line 9",
            ],
        ),
        (
            base_with("port: 8080 }", "port: 8080, weight: 65536 }"),
            &["services[0].backends[0].weight", "65535", "line 8"],
        ),
        (
            base_with("port: 8080 }", "port: 0 }"),
            &["services[0].backends[0].port", "1-65535", "line 8"],
        ),
        (
            base_with("198.18.1.11", "0.0.0.0"),
            &[
                "services[0].backends[0].address",
                "not a usable unicast",
                "line 8",
            ],
        ),
        (
            base_with("198.18.100.10", "224.0.0.1"),
            &["services[0].vip", "not a usable unicast", "line 5"],
        ),
    ]);
    assert_ok(&[
        base_with("198.18.1.12, port: 8080", "198.18.1.11, port: 8081"),
        base_with("port: 8080 }", "port: 8080, weight: 65535 }"),
    ]);
}

#[test]
fn snat_ports() {
    let snat = |ports: &str| {
        base_with(
            "{ ipv4: 198.18.1.1 }",
            &format!("{{ ipv4: 198.18.1.1, ports: {ports} }}"),
        )
    };
    assert_errs(&[
        (
            snat("30000-20000"),
            &["snat.ports", "min is greater than max", "line 2"],
        ),
        (snat("1000-2000"), &["snat.ports", "below 1024", "line 2"]),
    ]);
    assert_eq!(
        parse(&snat("1024-1024")).unwrap().snat.ports,
        PortRange {
            min: 1024,
            max: 1024
        }
    );
}

#[test]
fn snat_ipv4_required_for_nat_over_ipv4() {
    assert_errs(&[
        (
            base_with("snat: { ipv4: 198.18.1.1 }\n", ""),
            &["snat.ipv4: required", "service \"web\" uses mode nat"],
        ),
        (
            base_with("snat: { ipv4: 198.18.1.1 }", "snat: { ports: 20000-20100 }"),
            &["snat.ipv4: required", "line 2"],
        ),
        (
            base_with("ipv4: 198.18.1.1", "ipv4: 198.18.100.10"),
            &["snat.ipv4", "also the VIP of service \"web\""],
        ),
    ]);
    // No service: no snat needed.
    assert_ok(&["interfaces: [eth0]".into()]);
}

/// `text` with `limits: { LIMITS }` on line 11.
fn with_limits(text: &str, limits: &str) -> String {
    format!("{}\nlimits: {{ {limits} }}", yaml(text))
}

#[test]
fn limit_checks() {
    let limits = |l: &str| with_limits(BASE, l);
    assert_errs(&[
        (
            limits("maglev_table_size: 65536"),
            &["limits.maglev_table_size", "not prime", "line 11"],
        ),
        (
            limits("maglev_table_size: 1000033"),
            &[
                "limits.maglev_table_size",
                "larger than the maximum 1000003",
            ],
        ),
        (
            limits("maglev_table_size: 19"),
            &[
                "limits.maglev_table_size",
                "too small for service \"web\" with 2 backends",
            ],
        ),
        (
            limits("flow_table_size: 0"),
            &["limits.flow_table_size", "at least 1"],
        ),
        (
            limits("max_services: 65536, maglev_table_size: 65537"),
            &["limits:", "exceed the 2^32"],
        ),
    ]);
    assert_ok(&[limits("maglev_table_size: 23")]);
}

/// Two services on two VIPs, both answering echo requests.
const ECHO: &str = "
        interfaces: [eth0]
        snat: { ipv4: 198.18.1.1 }
        services:
          - { name: a, vip: 198.18.100.10, port: 80, icmp_echo: true, backends: [] }
          - { name: b, vip: 198.18.100.11, port: 80, icmp_echo: true, backends: [] }
    ";

#[test]
fn max_services_counts_services_and_echo_entries_have_room_of_their_own() {
    // SERVICES is sized 2 x max_services: each VIP's echo entry fits beside
    // its services, so services alone count (tests/capacity.rs fills it).
    assert_ok(&[
        with_limits(BASE, "max_services: 1"),
        with_limits(ECHO, "max_services: 2"),
    ]);
    assert_errs(&[
        (
            two_services("{ name: b, vip: 198.18.100.11, port: 80, backends: [] }").replacen(
                "interfaces",
                "limits: { max_services: 1 }\ninterfaces",
                1,
            ),
            &["limits.max_services", "2 services configured", "line 1"],
        ),
        (
            with_limits(ECHO, "max_services: 1"),
            &["limits.max_services: 2 services configured, above max_services 1"],
        ),
    ]);
}

#[test]
fn max_backends_counts_the_backends_map_entries() {
    // One per backend of each service: the same address in two services
    // is two entries.
    let shared = two_services(
        "{ name: b, vip: 198.18.100.11, port: 80, backends: [{ address: 198.18.1.11, port: 8080 }] }",
    );
    assert_ok(&[
        with_limits(BASE, "max_backends: 2"),
        with_limits(&shared, "max_backends: 3"),
    ]);
    assert_errs(&[
        (
            with_limits(BASE, "max_backends: 1"),
            &["limits.max_backends", "2 backends configured", "line 11"],
        ),
        (
            with_limits(&shared, "max_backends: 2"),
            &["limits.max_backends: 3 backends configured in all, above max_backends 2"],
        ),
    ]);
}

#[test]
fn tunnel_mode() {
    let tunnel = base_with("port: 80\n", "port: 80\n    mode: tunnel\n");
    assert_err(
        &tunnel,
        &[
            "services[0].backends[0].port: 8080 differs from the service port 80: in mode tunnel the packet reaches the backend unchanged",
            "line 9",
        ],
    );
    let ok = tunnel.replace("port: 8080", "port: 80");
    parse(&ok).unwrap();
    // A tunnel may carry IPv4 to an IPv6 backend, given an IPv6 source.
    let mixed = ok.replace("198.18.1.12", "\"2001:db8:1::12\"");
    assert_err(
        &mixed,
        &[
            "snat.ipv6: required: service \"web\" tunnels to IPv6 backends (the outer source address)",
        ],
    );
    let cfg = parse(&mixed.replace(
        "snat: { ipv4: 198.18.1.1 }",
        "snat: { ipv4: 198.18.1.1, ipv6: \"2001:db8:1::1\" }",
    ))
    .unwrap();
    assert_eq!(cfg.services[0].encap, Encap::Ipip);
    let gue = parse(&ok.replace("mode: tunnel", "mode: tunnel\n    encap: gue")).unwrap();
    assert_eq!((gue.services[0].encap, gue.gue_port), (Encap::Gue, 6080));
    assert_err(
        &base_with("port: 80\n", "port: 80\n    encap: gue\n"),
        &["services[0].encap: only for mode tunnel", "line 7"],
    );
}

#[test]
fn tunnel_source_prefixes() {
    let tunnel = base_with("port: 80\n", "port: 80\n    mode: tunnel\n")
        .replace("port: 8080", "port: 80")
        .replace("198.18.1.12", "\"2001:db8:1::12\"");
    let with = |ts: &str| {
        tunnel.replace(
            "snat: { ipv4: 198.18.1.1 }",
            &format!("snat: {{ ipv4: 198.18.1.1 }}\ntunnel_source: {ts}"),
        )
    };
    // A prefix of each family replaces the SNAT address (snat.ipv6 is no
    // longer required for the IPv6 backend).
    let cfg = parse(&with("{ ipv4: 198.18.2.0/24, ipv6: \"2001:db8:2::/64\" }")).unwrap();
    let v4 = cfg.tunnel_source.ipv4.unwrap();
    assert_eq!(v4.to_string(), "198.18.2.0/24");
    assert_eq!(v4.varied_host_bits(), 0xff);
    assert!(v4.contains("198.18.2.77".parse().unwrap()));
    assert!(!v4.contains("198.18.3.1".parse().unwrap()));
    assert_eq!(cfg.tunnel_source.ipv6.unwrap().varied_host_bits(), u32::MAX);
    // The config reads back as written.
    let back = serde_yaml::to_string(&cfg).unwrap();
    assert_eq!(Config::from_yaml(&back).unwrap(), cfg);
    // Without it, nothing changes.
    assert!(Config::default().tunnel_source.is_none());
    assert_errs(&[
        (
            with("{ ipv4: 198.18.2.0/24 }"),
            &["snat.ipv6: required: service \"web\" tunnels to IPv6 backends"],
        ),
        (
            with("{ ipv4: 198.18.2.0 }"),
            &["tunnel_source.ipv4", "expected ADDRESS/LENGTH", "line 3"],
        ),
        (
            with("{ ipv4: 198.18.2.0/33 }"),
            &["tunnel_source.ipv4", "length above 32"],
        ),
        (
            with("{ ipv4: \"2001:db8:2::/64\", ipv6: \"2001:db8:2::/64\" }"),
            &["tunnel_source.ipv4: 2001:db8:2::/64 is not an IPv4 prefix"],
        ),
        (
            with("{ ipv4: 198.18.2.0/31, ipv6: \"2001:db8:2::/64\" }"),
            &["tunnel_source.ipv4: 198.18.2.0/31: prefix length must be /16 to /30"],
        ),
        (
            with("{ ipv4: 198.18.0.0/8, ipv6: \"2001:db8:2::/64\" }"),
            &["prefix length must be /16 to /30"],
        ),
        (
            with("{ ipv4: 198.18.2.0/24, ipv6: \"2001:db8:2::/48\" }"),
            &["tunnel_source.ipv6: 2001:db8:2::/48: prefix length must be /64 to /124"],
        ),
        (
            with("{ ipv4: 198.18.2.1/24, ipv6: \"2001:db8:2::/64\" }"),
            &["tunnel_source.ipv4: 198.18.2.1/24 has bits set past /24"],
        ),
        (
            with("{ ipv4: 224.0.0.0/24, ipv6: \"2001:db8:2::/64\" }"),
            &["tunnel_source.ipv4: 224.0.0.0 is not a usable unicast address"],
        ),
        (
            with("{ ipv4: 198.18.100.0/24, ipv6: \"2001:db8:2::/64\" }"),
            &[
                "tunnel_source.ipv4: 198.18.100.0/24 holds 198.18.100.10, the VIP of service \"web\"",
            ],
        ),
        (
            with("{ ipv4: 198.18.2.0/24, ipv6: \"2001:db8:1::/64\" }"),
            &[
                "tunnel_source.ipv6: 2001:db8:1::/64 holds 2001:db8:1::12, a backend of service \"web\"",
            ],
        ),
    ]);
}

#[test]
fn ipv6_and_dsr() {
    // An IPv6 service in nat mode needs snat.ipv6.
    let v6 = base_with("198.18.100.10", "2001:db8:100::10")
        .replace("198.18.1.11", "\"2001:db8:1::11\"")
        .replace("198.18.1.12", "\"2001:db8:1::12\"");
    assert_err(
        &v6,
        &["snat.ipv6: required: service \"web\" uses mode nat with an IPv6 VIP"],
    );
    let v6 = v6.replace(
        "snat: { ipv4: 198.18.1.1 }",
        "snat: { ipv4: 198.18.1.1, ipv6: \"2001:db8:1::1\" }",
    );
    let cfg = parse(&v6).unwrap();
    assert_eq!(cfg.snat.ipv6, Some("2001:db8:1::1".parse().unwrap()));
    // Families do not mix outside tunnel mode.
    assert_err(
        &base_with("198.18.1.12", "\"2001:db8::12\""),
        &[
            "services[0].backends[1].address: 2001:db8::12 is not of the VIP's address family",
            "line 9",
        ],
    );
    // dsr: the backend gets the packet unchanged, so the same port.
    let dsr = base_with("port: 80\n", "port: 80\n    mode: dsr\n");
    assert_err(
        &dsr,
        &[
            "services[0].backends[0].port: 8080 differs from the service port 80",
            "line 9",
        ],
    );
    parse(&dsr.replace("port: 8080", "port: 80")).unwrap();
    assert_err(
        &base_with("198.18.100.10", "\"::1\""),
        &["services[0].vip: ::1 is not a usable unicast address"],
    );
}

#[test]
fn all_ports_services_and_flow_timeouts() {
    // An all-ports service: backends keep the packet's port (port 0).
    let any = base_with("port: 80", "port: 0");
    assert_err(
        &any,
        &[
            "services[0].backends[0].port: must be 0 in an all-ports service",
            "line 8",
        ],
    );
    let cfg = parse(&any.replace("port: 8080", "port: 0")).unwrap();
    assert_eq!(cfg.services[0].port, 0);
    assert_err(
        &base_with("port: 8080 }", "port: 0 }"),
        &[
            "services[0].backends[0].port: backend port must be 1-65535 (0 only in an all-ports service)",
        ],
    );
    let cfg = parse(&format!(
        "{}\nflow_timeouts: {{ udp: 5s, tcp_closing: 2s }}",
        yaml(BASE)
    ))
    .unwrap();
    assert_eq!(cfg.flow_timeouts.udp, std::time::Duration::from_secs(5));
    assert_eq!(
        cfg.flow_timeouts.tcp,
        std::time::Duration::from_secs(6 * 3600)
    );
    assert_err(
        &format!("{}\nflow_timeouts: {{ udp: 10ms }}", yaml(BASE)),
        &["flow_timeouts.udp: 10ms is out of range"],
    );
}

/// BASE with `health_check: { FIELDS }` in its service (line 7).
fn health(fields: &str) -> String {
    base_with(
        "port: 80\n",
        &format!("port: 80\n    health_check: {{ {fields} }}\n"),
    )
}

#[test]
fn health_check_parses() {
    let c = parse(&base_with(
        "port: 80\n",
        "port: 80
    health_check:
      type: http
      path: /healthz?full=1
      expect_status: 204
      expect_body: ok
      port: 8081
      interval: 2s
      timeout: 250ms
      rise: 1
      fall: 5
",
    ))
    .unwrap();
    let hc = c.services[0].health_check.as_ref().unwrap();
    assert_eq!(
        *hc,
        HealthCheck {
            r#type: CheckType::Http,
            path: Some("/healthz?full=1".into()),
            expect_status: Some(204),
            expect_body: Some("ok".into()),
            send: None,
            expect: None,
            port: Some(8081),
            interval: Duration::from_secs(2),
            timeout: Duration::from_millis(250),
            rise: 1,
            fall: 5,
        }
    );
    assert_eq!((hc.path(), hc.expect_status()), ("/healthz?full=1", 204));
    let text = serde_yaml::to_string(&c).unwrap();
    assert_eq!(Config::from_yaml(&text).unwrap(), c);

    // Defaults: tcp, every 1s, 500ms timeout, rise 2, fall 3.
    let c = parse(&health("")).unwrap();
    assert_eq!(c.services[0].health_check, Some(HealthCheck::default()));
    let hc = HealthCheck::default();
    assert_eq!(
        (hc.r#type, hc.interval, hc.rise, hc.fall, hc.port),
        (CheckType::Tcp, Duration::from_secs(1), 2, 3, None)
    );
    // http: path "/" and status 200 unless set.
    let c = parse(&health("type: http")).unwrap();
    let hc = c.services[0].health_check.as_ref().unwrap();
    assert_eq!((hc.path(), hc.expect_status()), ("/", 200));
    // udp: "ping", any reply unless `expect` is set.
    let c = parse(&health("type: udp, interval: 10ms, timeout: 10ms")).unwrap();
    let hc = c.services[0].health_check.as_ref().unwrap();
    assert_eq!((hc.send(), hc.expect.as_deref()), ("ping", None));
    let c = parse(&health("type: udp, send: hello, expect: world")).unwrap();
    let hc = c.services[0].health_check.as_ref().unwrap();
    assert_eq!((hc.send(), hc.expect.as_deref()), ("hello", Some("world")));
}

#[test]
fn health_check_schema_errors() {
    assert_errs(&[
        (
            health("type: icmp"),
            &[
                "services[0].health_check.type",
                "unknown variant `icmp`",
                "line 7",
            ],
        ),
        (
            health("type: tcp, colour: red"),
            &["services[0].health_check.colour", "unknown field", "line 7"],
        ),
        (
            health("interval: soon"),
            &["services[0].health_check.interval", "line 7"],
        ),
    ]);
}

/// Each `(FIELDS, KEY, MESSAGE)`: `health(FIELDS)` is rejected with
/// "services[0].health_check.KEY: MESSAGE", on line 7.
#[track_caller]
fn assert_health_errs(cases: &[(&str, &str, &str)]) {
    for (fields, key, msg) in cases {
        assert_err(
            &health(fields),
            &[&format!("services[0].health_check.{key}: {msg}"), "line 7"],
        );
    }
}

#[test]
fn health_check_keys_need_their_type() {
    assert_health_errs(&[
        (
            "path: /",
            "path",
            "only valid with type http, not with type tcp",
        ),
        (
            "type: udp, expect_status: 200",
            "expect_status",
            "only valid with type http, not with type udp",
        ),
        (
            "expect_body: ok",
            "expect_body",
            "only valid with type http, not with type tcp",
        ),
        (
            "type: http, send: ping",
            "send",
            "only valid with type udp, not with type http",
        ),
        (
            "expect: pong",
            "expect",
            "only valid with type udp, not with type tcp",
        ),
    ]);
}

#[test]
fn health_check_values() {
    let body = "x".repeat(HealthCheck::MAX_HTTP_BODY + 1);
    let datagram = "x".repeat(HealthCheck::MAX_UDP_PAYLOAD + 1);
    assert_health_errs(&[
        (
            "type: http, path: healthz",
            "path",
            "request path \"healthz\" must start with '/'",
        ),
        (
            "type: http, path: \"/a b\"",
            "path",
            "request path \"/a b\" must not contain spaces or control characters",
        ),
        (
            "type: http, expect_status: 99",
            "expect_status",
            "HTTP status 99 is not in 100-599",
        ),
        (
            "type: http, expect_status: 600",
            "expect_status",
            "HTTP status 600 is not in 100-599",
        ),
        (
            &format!("type: http, expect_body: {body}"),
            "expect_body",
            "65537 bytes, longer than the 65536 bytes of the body that are searched",
        ),
        (
            &format!("type: udp, send: {datagram}"),
            "send",
            "65508 bytes, larger than a UDP datagram (65507 bytes)",
        ),
        ("port: 0", "port", "check port must be 1-65535"),
        (
            "interval: 9ms, timeout: 1ms",
            "interval",
            "9ms is below the minimum 10ms",
        ),
        ("timeout: 0s", "timeout", "must be greater than 0"),
        (
            "interval: 1s, timeout: 2s",
            "timeout",
            "2s is longer than the interval (1s)",
        ),
        ("rise: 0", "rise", "must be at least 1"),
        ("fall: 0", "fall", "must be at least 1"),
    ]);
    // The limits themselves are fine.
    assert_ok(&[
        health("type: http, expect_status: 100, path: /"),
        health("type: http, expect_status: 599, port: 65535"),
        health("interval: 10ms, timeout: 10ms, rise: 1, fall: 1"),
    ]);
}

#[test]
fn load_names_the_file() {
    let missing = Path::new("/nonexistent/xdplb.yaml");
    let msg = Config::load(missing).unwrap_err().to_string();
    assert!(
        msg.starts_with("cannot read /nonexistent/xdplb.yaml: "),
        "{msg}"
    );

    let path = std::env::temp_dir().join(format!("xdplb-config-test-{}.yaml", std::process::id()));
    std::fs::write(
        &path,
        yaml(&base_with("port: 80\n", "port: 80\n    encap: gue\n")),
    )
    .unwrap();
    let err = Config::load(&path).unwrap_err();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(err.line(), Some(7));
    assert_eq!(
        err.to_string(),
        format!(
            "{}: services[0].encap: only for mode tunnel (line 7)",
            path.display()
        )
    );
}

#[test]
fn validate_without_text_names_the_path() {
    let mut c = parse(BASE).unwrap();
    c.services[0].backends[1].weight = 70000;
    let err = c.validate().unwrap_err();
    assert_eq!(err.line(), None);
    assert!(
        err.to_string()
            .starts_with("services[0].backends[1].weight: weight 70000"),
        "{err}"
    );
}

#[test]
fn ephemeral_port_overlap() {
    let snat = PortRange {
        min: 20000,
        max: 29999,
    };
    check_ephemeral_overlap(snat, "32768\t60999\n").unwrap();
    check_ephemeral_overlap(snat, "1024\t19999\n").unwrap();
    let msg = check_ephemeral_overlap(snat, "29999\t60999\n")
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains(
            "snat.ports: 20000-29999 overlaps the kernel's ephemeral port range 29999-60999"
        ),
        "{msg}"
    );
    assert!(check_ephemeral_overlap(snat, "10000 20000").is_err());
    assert!(check_ephemeral_overlap(snat, "garbage").is_err());
    // The host's own range: only the outcome depends on the host.
    match check_host(&parse(BASE).unwrap()) {
        Ok(()) => {}
        Err(e) => assert!(
            e.to_string().contains("snat.ports") || e.to_string().contains(EPHEMERAL_PORTS),
            "{e}"
        ),
    }
}

#[test]
fn line_map_follows_paths() {
    let text = yaml(BASE);
    let lines = Lines::scan(&text).unwrap();
    assert_eq!(lines.find("interfaces"), Some((1, 1)));
    assert_eq!(lines.find("interfaces[0]"), Some((1, 14)));
    assert_eq!(lines.find("services[0].port"), Some((6, 5)));
    assert_eq!(lines.find("services[0].backends[1].port"), Some((9, 33)));
    assert_eq!(lines.find("services[0].backends[7]"), Some((7, 5)));
    assert_eq!(lines.find("limits.flow_table_size"), None);
    // Complex keys and aliases do not confuse it.
    let lines = Lines::scan("? [a, b]\n: 1\nx: &v { y: 2 }\nz: *v\nw: 3\n").unwrap();
    assert_eq!(lines.find("w"), Some((5, 1)));
    assert_eq!(lines.find("x.y"), Some((3, 9)));
}

/// BASE with a `bgp:` section holding `body` (its own lines, indented).
fn with_bgp(body: &str) -> String {
    format!("{}bgp:\n{body}", yaml(BASE))
}

#[test]
fn bgp_parses_with_defaults() {
    let c = parse(BASE).unwrap();
    assert_eq!(c.bgp, None, "no bgp: nothing announced");
    assert_eq!(c.run_dir, std::path::Path::new(DEFAULT_RUN_DIR));
    let c = parse(&with_bgp(
        "  local_as: 65001\n  peers:\n    - { address: 198.18.0.254, as: 65000 }\n    - { address: \"2001:db8::fe\", as: 4200000000, port: 1179 }\n",
    ))
    .unwrap();
    let bgp = c.bgp.as_ref().unwrap();
    assert_eq!(bgp.local_as, 65001);
    assert_eq!(bgp.router_id, None);
    assert_eq!(bgp.hold_time, std::time::Duration::from_secs(3));
    assert_eq!(
        bgp.peers,
        [
            BgpPeer {
                address: "198.18.0.254".parse().unwrap(),
                asn: 65000,
                port: 179
            },
            BgpPeer {
                address: "2001:db8::fe".parse().unwrap(),
                asn: 4_200_000_000,
                port: 1179
            },
        ]
    );
    let c = parse(&format!(
        "{}run_dir: /tmp/lb1\n",
        with_bgp(
            "  local_as: 65001\n  router_id: 198.18.0.1\n  hold_time: 90s\n  peers: [ { address: 198.18.0.254, as: 65000 } ]\n"
        )
    ))
    .unwrap();
    let bgp = c.bgp.as_ref().unwrap();
    assert_eq!(bgp.router_id, Some(Ipv4Addr::new(198, 18, 0, 1)));
    assert_eq!(bgp.hold_time, std::time::Duration::from_secs(90));
    assert_eq!(c.run_dir, std::path::Path::new("/tmp/lb1"));
    let text = serde_yaml::to_string(&c).unwrap();
    assert_eq!(Config::from_yaml(&text).unwrap(), c, "round trip");
}

#[test]
fn bgp_errors_name_the_key() {
    let peer = "  peers: [ { address: 198.18.0.254, as: 65000 } ]\n";
    assert_errs(&[
        (
            with_bgp(&format!("  local_as: 0\n{peer}")),
            &["bgp.local_as: AS number 0 is reserved", "line 11"],
        ),
        (
            with_bgp(&format!("  local_as: 4294967295\n{peer}")),
            &["bgp.local_as: AS number 4294967295 is reserved"],
        ),
        (
            with_bgp(&format!("  local_as: 1\n  router_id: 0.0.0.0\n{peer}")),
            &["bgp.router_id: 0.0.0.0 cannot be a router id", "line 12"],
        ),
        (
            with_bgp(&format!("  local_as: 1\n  hold_time: 2s\n{peer}")),
            &["bgp.hold_time: 2s is out of range: whole seconds, 3s to 65535s"],
        ),
        (
            with_bgp(&format!("  local_as: 1\n  hold_time: 3500ms\n{peer}")),
            &["bgp.hold_time: 3s 500ms is out of range"],
        ),
        (
            with_bgp(&format!("  local_as: 1\n  hold_time: 65536s\n{peer}")),
            &["bgp.hold_time: 18h 12m 16s is out of range"],
        ),
        (
            with_bgp("  local_as: 1\n  peers: []\n"),
            &["bgp.peers: at least one peer is needed", "line 12"],
        ),
        (with_bgp("  local_as: 1\n"), &["bgp: missing field `peers`"]),
        (
            with_bgp(
                "  local_as: 1\n  peers:\n    - { address: 198.18.0.254, as: 65000 }\n    - { address: 198.18.0.254, as: 65002 }\n",
            ),
            &[
                "bgp.peers[1].address: duplicate peer 198.18.0.254 (also peers[0])",
                "line 14",
            ],
        ),
        (
            with_bgp("  local_as: 1\n  peers: [ { address: 224.0.0.5, as: 65000 } ]\n"),
            &["bgp.peers[0].address: 224.0.0.5 is not a usable unicast address"],
        ),
        (
            with_bgp("  local_as: 1\n  peers: [ { address: 198.18.0.254, as: 0 } ]\n"),
            &["bgp.peers[0].as: AS number 0 is reserved"],
        ),
        (
            with_bgp("  local_as: 1\n  peers: [ { address: 198.18.0.254, as: 2, port: 0 } ]\n"),
            &["bgp.peers[0].port: must be 1-65535"],
        ),
        (
            with_bgp("  local_as: 1\n  peers: [ { address: 198.18.0.254, asn: 2 } ]\n"),
            &["unknown field `asn`"],
        ),
        (
            format!("{}run_dir: run/xdplb\n", yaml(BASE)),
            &["run_dir: run/xdplb is not an absolute path"],
        ),
    ]);
}

/// BASE with a `flow_sync:` section holding `body`.
fn with_flow_sync(body: &str) -> String {
    format!("{}flow_sync:\n{body}", yaml(BASE))
}

#[test]
fn flow_sync_parses_with_defaults() {
    assert_eq!(parse(BASE).unwrap().flow_sync, None, "off by default");
    let c = parse(&with_flow_sync(
        "  address: 198.18.2.1\n  peers: [198.18.2.2, 198.18.2.3]\n",
    ))
    .unwrap();
    let s = c.flow_sync.as_ref().unwrap();
    assert_eq!(s.address, "198.18.2.1".parse::<IpAddr>().unwrap());
    assert_eq!(s.peers.len(), 2);
    assert_eq!(s.port, DEFAULT_SYNC_PORT);
    assert_eq!(s.dead_after, std::time::Duration::from_secs(3));
    let text = serde_yaml::to_string(&c).unwrap();
    assert_eq!(Config::from_yaml(&text).unwrap(), c, "round trip");
}

#[test]
fn flow_sync_errors_name_the_key() {
    let addr = "  address: 198.18.2.1\n";
    assert_errs(&[
        (
            with_flow_sync(&format!("{addr}  peers: []\n")),
            &["flow_sync.peers: at least one peer is needed"],
        ),
        (
            with_flow_sync(&format!("{addr}  peers: [198.18.2.1]\n")),
            &["flow_sync.peers[0]: 198.18.2.1 is this node's own flow_sync.address"],
        ),
        (
            with_flow_sync(&format!("{addr}  peers: [198.18.2.2, 198.18.2.2]\n")),
            &["flow_sync.peers[1]: duplicate peer 198.18.2.2 (also peers[0])"],
        ),
        (
            with_flow_sync(&format!("{addr}  peers: [\"2001:db8::2\"]\n")),
            &["flow_sync.peers[0]: 2001:db8::2 is not of the family of flow_sync.address"],
        ),
        (
            with_flow_sync("  address: 0.0.0.0\n  peers: [198.18.2.2]\n"),
            &["flow_sync.address: 0.0.0.0 is not a usable unicast address"],
        ),
        (
            with_flow_sync(&format!("{addr}  peers: [198.18.2.2]\n  port: 0\n")),
            &["flow_sync.port: must be 1-65535"],
        ),
        (
            with_flow_sync(&format!(
                "{addr}  peers: [198.18.2.2]\n  dead_after: 100ms\n"
            )),
            &["flow_sync.dead_after: 100ms is out of range: 300ms to 1h"],
        ),
        (
            with_flow_sync(&format!(
                "{addr}  peers: [{}]\n",
                (2..=18)
                    .map(|i| format!("198.18.2.{i}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            &["flow_sync.peers: 17 peers: at most 16"],
        ),
        (with_flow_sync(addr), &["flow_sync: missing field `peers`"]),
    ]);
}

#[test]
fn slow_start_is_a_duration_0_or_absent_for_off_at_most_an_hour() {
    let with = |v: &str| {
        parse(&base_with(
            "port: 80\n",
            &format!("port: 80\n    slow_start: {v}\n"),
        ))
    };
    assert_eq!(parse(BASE).unwrap().services[0].slow_start(), None);
    let s = with("30s").unwrap();
    assert_eq!(s.services[0].slow_start(), Some(Duration::from_secs(30)));
    assert_eq!(
        with("1m 30s").unwrap().services[0].slow_start(),
        Some(Duration::from_secs(90))
    );
    assert_eq!(
        with("1h").unwrap().services[0].slow_start(),
        Some(Duration::from_secs(3600))
    );
    for off in ["0s", "0"] {
        let c = with(off).unwrap();
        assert_eq!(c.services[0].slow_start, Some(Duration::ZERO), "{off}");
        assert_eq!(c.services[0].slow_start(), None, "{off} is off");
    }
    for (bad, parts) in [
        (
            "500ms",
            &[
                "services[0].slow_start",
                "500ms is out of range: 0 (off), or 1s up to 1h",
            ][..],
        ),
        (
            "2h",
            &["services[0].slow_start", "2h is out of range", "line 7"][..],
        ),
        ("30", &["services[0].slow_start"][..]),
        ("fast", &["services[0].slow_start"][..]),
    ] {
        let text = base_with("port: 80\n", &format!("port: 80\n    slow_start: {bad}\n"));
        assert_err(&text, parts);
    }
}
