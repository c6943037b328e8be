//! BIRD 2's config for a `bgp` section and a set of VIPs to announce
//! (pure; checked against `bird -p` in the tests when BIRD is installed).
//!
//! Each VIP is a blackhole route in a static protocol of its family
//! (`vips4`, `vips6`); each peer a `protocol bgp` (`peer1`, `peer2`, ... in
//! the config's order) that exports only that protocol's routes and imports
//! nothing. Nothing goes to the kernel: the blackhole routes live in BIRD's
//! tables only. A new set is a new file and `birdc configure`: BIRD
//! reconfigures the static protocols in place, the BGP sessions stay up
//! and send the difference.

use std::{collections::BTreeSet, fmt::Write as _, net::IpAddr, net::Ipv4Addr};

use crate::config::Bgp;

/// The protocol name of peer `i` (0-based) of the config.
pub fn peer_name(i: usize) -> String {
    format!("peer{}", i + 1)
}

/// The whole bird.conf.
pub fn render(bgp: &Bgp, router_id: Ipv4Addr, announce: &BTreeSet<IpAddr>) -> String {
    let mut c = String::new();
    let _ = writeln!(c, "# Written by xdplb: every change is overwritten.");
    let _ = writeln!(c, "log stderr all;");
    let _ = writeln!(c, "router id {router_id};");
    // Unix seconds: one word in `show protocols` (status.rs splits on spaces).
    let _ = writeln!(c, "timeformat protocol \"%s\";");
    let _ = writeln!(c, "protocol device {{}}");
    for (name, channel, v4, len) in [("vips4", "ipv4", true, 32), ("vips6", "ipv6", false, 128)] {
        let _ = writeln!(c, "protocol static {name} {{\n  {channel};");
        for vip in announce.iter().filter(|v| v.is_ipv4() == v4) {
            let _ = writeln!(c, "  route {vip}/{len} blackhole;");
        }
        let _ = writeln!(c, "}}");
    }
    for (i, p) in bgp.peers.iter().enumerate() {
        let (channel, vips) = if p.address.is_ipv4() {
            ("ipv4", "vips4")
        } else {
            ("ipv6", "vips6")
        };
        let _ = writeln!(c, "protocol bgp {} {{", peer_name(i));
        let _ = writeln!(c, "  local as {};", bgp.local_as);
        let _ = writeln!(c, "  neighbor {} port {} as {};", p.address, p.port, p.asn);
        let _ = writeln!(c, "  hold time {};", bgp.hold_time.as_secs());
        // Retry a lost session soon, not after BIRD's default 120 s.
        let _ = writeln!(c, "  connect retry time 5;");
        // A lost session must drop our routes at once: no peer may keep
        // them as stale, waiting for us to come back.
        let _ = writeln!(c, "  graceful restart off;");
        let _ = writeln!(c, "  long lived graceful restart off;");
        let _ = writeln!(
            c,
            "  {channel} {{ import none; export where proto = \"{vips}\"; }};"
        );
        let _ = writeln!(c, "}}");
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BgpPeer;

    fn bgp() -> Bgp {
        Bgp {
            local_as: 65001,
            router_id: None,
            peers: vec![
                BgpPeer {
                    address: "198.18.0.2".parse().unwrap(),
                    asn: 65000,
                    port: 179,
                },
                BgpPeer {
                    address: "2001:db8::2".parse().unwrap(),
                    asn: 4_200_000_000,
                    port: 1179,
                },
            ],
            hold_time: std::time::Duration::from_secs(9),
        }
    }

    fn set(vips: &[&str]) -> BTreeSet<IpAddr> {
        vips.iter().map(|v| v.parse().unwrap()).collect()
    }

    const ID: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

    #[test]
    fn routes_per_family_and_a_protocol_per_peer() {
        let text = render(
            &bgp(),
            ID,
            &set(&["198.18.100.10", "198.18.100.11", "2001:db8:100::10"]),
        );
        println!("{text}");
        assert!(text.contains("router id 198.18.0.1;\n"));
        assert!(text.contains(
            "protocol static vips4 {\n  ipv4;\n  route 198.18.100.10/32 blackhole;\n  route 198.18.100.11/32 blackhole;\n}\n"
        ));
        assert!(text.contains(
            "protocol static vips6 {\n  ipv6;\n  route 2001:db8:100::10/128 blackhole;\n}\n"
        ));
        assert!(text.contains("protocol bgp peer1 {\n  local as 65001;\n  neighbor 198.18.0.2 port 179 as 65000;\n  hold time 9;\n  connect retry time 5;\n"));
        assert!(text.contains("  ipv4 { import none; export where proto = \"vips4\"; };\n}\n"));
        assert!(text.contains("protocol bgp peer2 {\n  local as 65001;\n  neighbor 2001:db8::2 port 1179 as 4200000000;\n"));
        assert!(text.contains("  ipv6 { import none; export where proto = \"vips6\"; };\n}\n"));
        assert!(
            !text.contains("protocol kernel"),
            "nothing goes to the LB's own FIB"
        );
        assert_eq!(text.matches("graceful restart off;").count(), 4);
    }

    #[test]
    fn nothing_to_announce_keeps_the_sessions() {
        let text = render(&bgp(), ID, &BTreeSet::new());
        assert!(text.contains("protocol static vips4 {\n  ipv4;\n}\n"));
        assert!(!text.contains("route "));
        assert_eq!(text.matches("protocol bgp ").count(), 2);
    }

    /// BIRD itself parses what we write (`bird -p`), when it is installed.
    #[test]
    fn bird_accepts_it() {
        let Ok(bird) = crate::bgp::bird::find("bird") else {
            eprintln!("bird not installed: skipped (cargo xtask setup installs bird2)");
            return;
        };
        let dir = std::env::temp_dir().join(format!("xdplb-conf-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for vips in [set(&[]), set(&["198.18.100.10", "2001:db8:100::10"])] {
            let path = dir.join("bird.conf");
            std::fs::write(&path, render(&bgp(), ID, &vips)).unwrap();
            let out = std::process::Command::new(&bird)
                .arg("-p")
                .arg("-c")
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
