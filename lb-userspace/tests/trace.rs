//! `xdplb trace`: captures built here (frames from etherparse, files from
//! pcap-file) run through the real XDP program by the real binary; every
//! JSON field checked, output frames read back and their checksums
//! recomputed. Covers the cases of the packet test table (tests/packet.rs),
//! the FIB step both skipped and real (in a namespace with static
//! neighbours), the capture formats, bad input, and determinism.
//!
//! Needs root and the built XDP program. Addresses: 198.18.0.0/15 only.

use std::{
    ffi::OsStr,
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use lb_testbed::{
    fib_net::{CLIENT, CLIENT_MAC, CLIENT6, FibNet, LBB_MAC, LBC_MAC, backend_mac, backend6},
    fixtures::{
        DNS_VIP, DSR_VIP, DSR6_VIP, FAR_VIP, LOST_VIP, SERVICES, SNAT, SNAT6, WEB_BACKENDS,
        WEB_VIP, WEB6_VIP,
    },
    frames::{
        Tcp, arp_request, icmp, icmp4, malformed, syn, syn_ack, syn_with_ip_options, syn_with_vlan,
        tcp, udp, with_ipv6_ext,
    },
    inspect::{inspect, inspect6},
    netns::{self, mac_text as mac},
    topology::LB_CLIENT_ADDR6,
};
use pcap_file::{
    DataLink, Endianness, TsResolution,
    pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter},
    pcapng::{
        PcapNgWriter,
        blocks::{
            enhanced_packet::EnhancedPacketBlock, interface_description::InterfaceDescriptionBlock,
        },
    },
};
use serde_json::{Value, json};

/// The packet tests' services (`icmp_echo` on some VIPs: SERVICES holds
/// their echo entries beside the services).
fn config() -> String {
    SERVICES.to_string()
}

const TINY_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 20);
const CLOSED_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 21);
const REFUSED_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 22);

/// Drops before forwarding: one SNAT port only, a service all in maint.
const DROPS: &str = r#"
interfaces: [lbc]
snat: { ipv4: 198.18.1.1, ports: 20000-20000 }
limits: { max_services: 4, max_backends: 4, maglev_table_size: 1021, flow_table_size: 4096 }
services:
  - name: tiny
    vip: 198.18.100.20
    port: 80
    backends:
      - { address: 198.18.1.11, port: 8080 }
  - name: closed
    vip: 198.18.100.21
    port: 80
    on_empty: drop
    backends:
      - { address: 198.18.1.12, port: 8080, state: maint }
  - name: refused
    vip: 198.18.100.22
    port: 80
    backends:
      - { address: 198.18.1.13, port: 8080, state: maint }
"#;

// ---- scratch files -------------------------------------------------------

/// A directory of this test's files; removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("xdplb-trace-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }

    fn file(&self, file: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(file);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn pcap_with(header: PcapHeader, frames: &[Vec<u8>]) -> Vec<u8> {
    let mut w = PcapWriter::with_header(Vec::new(), header).unwrap();
    for (i, f) in frames.iter().enumerate() {
        let t = Duration::new(1_700_000_000, 0) + Duration::from_micros(1000 * i as u64 + 7);
        w.write_packet(&PcapPacket::new(t, f.len() as u32, f))
            .unwrap();
    }
    w.into_writer()
}

/// What tcpdump writes on this machine: little-endian, microseconds.
fn pcap(frames: &[Vec<u8>]) -> Vec<u8> {
    pcap_with(
        PcapHeader {
            endianness: Endianness::Little,
            ..PcapHeader::default()
        },
        frames,
    )
}

fn read_pcap(path: &Path) -> (PcapHeader, Vec<(Duration, Vec<u8>)>) {
    let bytes = std::fs::read(path).unwrap();
    let mut r = PcapReader::new(&bytes[..]).unwrap();
    let mut frames = Vec::new();
    while let Some(p) = r.next_packet() {
        let p = p.unwrap();
        frames.push((p.timestamp, p.data.into_owned()));
    }
    (r.header(), frames)
}

// ---- running the binary --------------------------------------------------

const BIN: &str = env!("CARGO_BIN_EXE_xdplb");

fn xdplb<S: AsRef<OsStr>>(args: &[S]) -> Output {
    Command::new(BIN).args(args).output().expect("run xdplb")
}

/// `trace --config CONFIG --pcap INPUT EXTRA...`: the arguments of most
/// runs (`-c` is used where a test spells the arguments out).
fn trace_args(cfg: &Path, input: &Path, extra: &[&str]) -> Vec<String> {
    let files = ["trace", "--config", path(cfg), "--pcap", path(input)];
    files.iter().chain(extra).map(|a| a.to_string()).collect()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn ok_stdout(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "xdplb trace failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// `xdplb trace --json` over `frames`; the lines, in order.
fn trace(scratch: &Scratch, config: &str, frames: &[Vec<u8>], extra: &[&str]) -> Vec<Value> {
    let cfg = scratch.file("lb.yaml", config);
    let input = scratch.file("in.pcap", pcap(frames));
    let args = trace_args(&cfg, &input, &[&["--json"], extra].concat());
    let lines = json_lines(&ok_stdout(&xdplb(&args)));
    assert_eq!(lines.len(), frames.len(), "one line per frame");
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["index"], i + 1);
    }
    lines
}

// ---- reading the output ----------------------------------------------

fn ip(v: &Value) -> Ipv4Addr {
    v.as_str()
        .unwrap_or_else(|| panic!("not an address: {v}"))
        .parse()
        .unwrap()
}

fn port(v: &Value) -> u16 {
    v.as_u64().unwrap_or_else(|| panic!("not a port: {v}")) as u16
}

/// The summary trace gives of a TCP/UDP IPv4 frame.
fn summary(frame: &[u8]) -> Value {
    let p = SlicedPacket::from_ethernet(frame).unwrap();
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        panic!()
    };
    let h = ip.header();
    let (proto, sport, dport, flags) = match &p.transport {
        Some(TransportSlice::Tcp(t)) => {
            let mut f = String::new();
            for (on, c) in [
                (t.fin(), 'F'),
                (t.syn(), 'S'),
                (t.rst(), 'R'),
                (t.psh(), 'P'),
                (t.ack(), '.'),
            ] {
                if on {
                    f.push(c);
                }
            }
            ("tcp", t.source_port(), t.destination_port(), Some(f))
        }
        Some(TransportSlice::Udp(u)) => ("udp", u.source_port(), u.destination_port(), None),
        _ => panic!(),
    };
    let vlan = p.vlan_ids().first().map(|v| v.value());
    let mut text = format!(
        "{}:{sport} -> {}:{dport} {}",
        h.source_addr(),
        h.destination_addr(),
        proto.to_uppercase()
    );
    if let Some(f) = &flags {
        text.push_str(&format!(" [{f}]"));
    }
    if let Some(v) = vlan {
        text = format!("vlan {v} {text}");
    }
    json!({
        "len": frame.len(),
        "src_mac": mac(frame[6..12].try_into().unwrap()),
        "dst_mac": mac(frame[0..6].try_into().unwrap()),
        "vlan": vlan,
        "ethertype": "ipv4",
        "src": h.source_addr().to_string(),
        "dst": h.destination_addr().to_string(),
        "proto": proto,
        "sport": sport,
        "dport": dport,
        "flags": flags,
        "fragment": false,
        "inner": null,
        "malformed": null,
        "text": text,
    })
}

/// Fields every line has, set to what a line says about a plain forward.
fn forward_line(index: usize, service: &str, backend: &str, new_flow: bool) -> Value {
    json!({
        "index": index,
        "verdict": "TX",
        "service": service,
        "backend": backend,
        "mode": "nat",
        "new_flow": new_flow,
        "reply": false,
        "pass_reason": null,
        "drop_reason": null,
        "fib": "skipped",
        "egress": null,
        "next_hop": null,
        "note": null,
        "error": null,
    })
}

/// Checks `line` against `expected` field by field (only the fields
/// `expected` has).
fn assert_fields(line: &Value, expected: &Value) {
    for (k, v) in expected.as_object().unwrap() {
        assert_eq!(&line[k], v, "field {k} of {line}");
    }
}

// ---- tests ----------------------------------------------------------------

#[test]
fn traffic_the_balancer_does_not_own_passes_untouched() {
    let s = Scratch::new("pass");
    // (case, frame, pass_reason, text of the summary)
    let mut cases: Vec<(&str, Vec<u8>, &str, String)> = vec![
        (
            "ARP request",
            arp_request(),
            "not_ip",
            "ARP who-has 198.18.0.1 tell 198.18.0.2".into(),
        ),
        (
            "IPv6",
            syn(CLIENT6, 40000, LB_CLIENT_ADDR6, 80),
            "not_a_vip",
            "[2001:db8::2]:40000 -> [2001:db8::1]:80 TCP [S]".into(),
        ),
        (
            "ICMP echo to a VIP without icmp_echo",
            icmp4(CLIENT, DNS_VIP, icmp(8, 0, [0, 1, 0, 1], b"ping")),
            "not_tcp_udp",
            "198.18.0.2 -> 198.18.100.11 ICMP echo request".into(),
        ),
        (
            "TCP to a non-VIP address",
            syn(CLIENT, 40000, Ipv4Addr::new(198, 18, 0, 1), 22),
            "not_a_vip",
            "198.18.0.2:40000 -> 198.18.0.1:22 TCP [S]".into(),
        ),
        (
            "TCP to a VIP on another port",
            syn(CLIENT, 40000, WEB_VIP, 81),
            "not_a_vip",
            "198.18.0.2:40000 -> 198.18.100.10:81 TCP [S]".into(),
        ),
        (
            "UDP to a TCP service",
            udp(CLIENT, 40000, WEB_VIP, 80, b"x"),
            "not_a_vip",
            "198.18.0.2:40000 -> 198.18.100.10:80 UDP".into(),
        ),
        (
            "TCP to the SNAT address, no NAT entry",
            syn_ack(WEB_BACKENDS[0], 8080, SNAT, 20001),
            "no_nat_entry",
            "198.18.1.11:8080 -> 198.18.1.1:20001 TCP [S.]".into(),
        ),
    ];
    // The packet tests' table of broken frames, and what trace says of each.
    let said = |name: &str| match name {
        "Ethernet header alone, type IPv4" | "IPv4 header cut" => {
            ("malformed", "IPv4 (IP header cut short)")
        }
        "TCP header cut" => (
            "malformed",
            "198.18.0.2 -> 198.18.100.10 TCP (TCP header cut short)",
        ),
        "IHL below 5" => ("malformed", "IPv4 (invalid IP header)"),
        "IP version 6 in an IPv4 frame" => ("malformed", "IPv4 (IP version 6 in an IPv4 frame)"),
        "first fragment" | "later fragment" => {
            ("fragment", "198.18.0.2 -> 198.18.100.10 TCP fragment")
        }
        other => panic!("no expectation for {other}"),
    };
    for (name, frame) in malformed(&syn(CLIENT, 40000, WEB_VIP, 80)) {
        let (reason, text) = said(name);
        cases.push((name, frame, reason, text.into()));
    }
    // An IPv6 fragment header between the IPv6 and TCP headers.
    let plain6 = syn(CLIENT6, 41000, WEB6_VIP, 80);
    cases.push((
        "IPv6 fragment header",
        with_ipv6_ext(&plain6, 44, &[0, 0, 0, 1, 0, 0, 0, 7]),
        "fragment",
        "2001:db8::2 -> 2001:db8:100::10 TCP fragment".into(),
    ));
    let frames: Vec<Vec<u8>> = cases.iter().map(|c| c.1.clone()).collect();
    let out = s.path("out.pcap");
    let lines = trace(&s, &config(), &frames, &["--out", out.to_str().unwrap()]);
    for ((name, frame, reason, text), line) in cases.iter().zip(&lines) {
        assert_fields(
            line,
            &json!({
                "verdict": "PASS",
                "service": null,
                "backend": null,
                "mode": null,
                "new_flow": false,
                "reply": false,
                "pass_reason": reason,
                "drop_reason": null,
                "fib": null,
                "fib_lookup": null,
                "egress": null,
                "next_hop": null,
                "error": null,
            }),
        );
        assert_eq!(line["in"]["text"], *text, "{name}");
        assert_eq!(line["in"]["len"], frame.len(), "{name}");
        assert_eq!(line["out"], line["in"], "{name}: must not be modified");
        let malformed = line["in"]["malformed"].is_string();
        assert_eq!(malformed, *reason == "malformed", "{name}: {line}");
    }
    // Every PASS frame goes out as it came, timestamps kept.
    let (header, written) = read_pcap(&out);
    assert_eq!(header.datalink, DataLink::ETHERNET);
    assert_eq!(written.len(), frames.len());
    for (i, ((t, data), frame)) in written.iter().zip(&frames).enumerate() {
        assert_eq!(data, frame, "{}", cases[i].0);
        assert_eq!(
            *t,
            Duration::new(1_700_000_000, 0) + Duration::from_micros(1000 * i as u64 + 7)
        );
    }
}

/// Phase 1 of the stateful tests: where the first packets of the web TCP
/// flow and the dns UDP flow go (backend, SNAT port).
fn first_choices(s: &Scratch) -> ((Ipv4Addr, u16), (Ipv4Addr, u16)) {
    let lines = trace(
        s,
        &config(),
        &[
            syn(CLIENT, 40000, WEB_VIP, 80),
            udp(CLIENT, 5555, DNS_VIP, 53, b"query"),
        ],
        &[],
    );
    let pick = |l: &Value| (ip(&l["out"]["dst"]), port(&l["out"]["sport"]));
    (pick(&lines[0]), pick(&lines[1]))
}

#[test]
fn flows_are_nat_ed_stick_and_replies_find_their_entry() {
    let s = Scratch::new("nat");
    let ((web_b, web_port), (dns_b, dns_port)) = first_choices(&s);
    assert!(WEB_BACKENDS.contains(&web_b), "{web_b}");
    assert!((20000..=29999).contains(&web_port));
    assert!([11, 12].contains(&dns_b.octets()[3]), "{dns_b}");

    let mut frames = vec![
        syn(CLIENT, 40000, WEB_VIP, 80),
        tcp(CLIENT, 40000, WEB_VIP, 80, Tcp::Ack, b"hello"),
        syn_ack(web_b, 8080, SNAT, web_port),
        udp(CLIENT, 5555, DNS_VIP, 53, b"query"),
        udp(dns_b, 5353, SNAT, dns_port, b"answer"),
    ];
    let mut no_sum = udp(CLIENT, 5556, DNS_VIP, 53, b"query");
    no_sum[14 + 20 + 6] = 0;
    no_sum[14 + 20 + 7] = 0;
    frames.push(no_sum);
    // Many flows, each twice: spread over the backends, and sticky.
    for sport in 30000..30060u16 {
        frames.push(syn(CLIENT, sport, WEB_VIP, 80));
        frames.push(tcp(CLIENT, sport, WEB_VIP, 80, Tcp::Ack, b"hello"));
    }
    let out = s.path("out.pcap");
    let lines = trace(&s, &config(), &frames, &["--out", out.to_str().unwrap()]);
    let (_, written) = read_pcap(&out);
    assert_eq!(written.len(), frames.len(), "every frame leaves (TX)");

    let web_addr = format!("{web_b}:8080");
    // 1: the SYN makes the flow.
    let mut expect = forward_line(1, "web", &web_addr, true);
    expect["fib_lookup"] = json!({"dst": web_b.to_string(), "ifindex": 1, "iface": "lo"});
    expect["in"] = summary(&frames[0]);
    expect["out"] = summary(&written[0].1);
    assert_fields(&lines[0], &expect);
    let o = inspect(&written[0].1);
    assert_eq!(
        (o.src, o.sport, o.dst, o.dport),
        (SNAT, web_port, web_b, 8080)
    );
    assert_eq!(o.payload, b"hello");
    assert_eq!(&written[0].1[..12], &frames[0][..12], "MACs untouched");
    assert_eq!(lines[0]["out"]["src"], SNAT.to_string());
    assert_eq!(lines[0]["out"]["sport"], web_port);
    assert_eq!(lines[0]["out"]["flags"], "S");

    // 2: the next packet uses it.
    let mut expect = forward_line(2, "web", &web_addr, false);
    expect["out"] = summary(&written[1].1);
    assert_fields(&lines[1], &expect);
    assert_eq!(lines[1]["out"]["flags"], ".");
    assert_eq!(inspect(&written[1].1).sport, web_port);

    // 3: the backend's reply goes back as VIP -> client.
    assert_fields(
        &lines[2],
        &json!({
            "verdict": "TX", "service": "web", "backend": web_addr, "mode": "nat",
            "new_flow": false, "reply": true, "pass_reason": null, "drop_reason": null,
            "fib": "skipped",
            "fib_lookup": {"dst": CLIENT.to_string(), "ifindex": 1, "iface": "lo"},
        }),
    );
    assert_eq!(lines[2]["in"], summary(&frames[2]));
    assert_eq!(lines[2]["out"], summary(&written[2].1));
    let b = inspect(&written[2].1);
    assert_eq!(
        (b.src, b.sport, b.dst, b.dport),
        (WEB_VIP, 80, CLIENT, 40000)
    );
    assert_eq!(b.payload, b"world");
    assert_eq!(lines[2]["out"]["flags"], "S.");

    // 4, 5: UDP both ways.
    let dns_addr = format!("{dns_b}:5353");
    let mut expect = forward_line(4, "dns", &dns_addr, true);
    expect["out"] = summary(&written[3].1);
    assert_fields(&lines[3], &expect);
    let u = inspect(&written[3].1);
    assert_eq!(
        (u.src, u.sport, u.dst, u.dport),
        (SNAT, dns_port, dns_b, 5353)
    );
    assert_eq!(lines[3]["out"]["proto"], "udp");
    assert_eq!(lines[3]["out"]["flags"], Value::Null);
    assert_fields(
        &lines[4],
        &json!({"verdict": "TX", "service": "dns", "backend": dns_addr, "reply": true, "new_flow": false}),
    );
    let r = inspect(&written[4].1);
    assert_eq!(
        (r.src, r.sport, r.dst, r.dport),
        (DNS_VIP, 53, CLIENT, 5555)
    );
    assert_eq!(r.payload, b"answer");

    // 6: a datagram without a checksum keeps none.
    assert_fields(
        &lines[5],
        &json!({"verdict": "TX", "service": "dns", "new_flow": true}),
    );
    assert_eq!(&written[5].1[14 + 20 + 6..14 + 20 + 8], &[0, 0]);
    inspect(&written[5].1);

    // The many flows: each pair on one backend; all backends used.
    let mut seen = std::collections::HashMap::new();
    for pair in lines[6..].chunks(2) {
        assert_eq!(pair[0]["new_flow"], true);
        assert_eq!(pair[1]["new_flow"], false);
        assert_eq!(pair[0]["backend"], pair[1]["backend"], "sticks");
        assert_eq!(
            pair[0]["out"]["sport"], pair[1]["out"]["sport"],
            "same SNAT port"
        );
        *seen.entry(pair[0]["backend"].to_string()).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    for f in &written[6..] {
        inspect(&f.1);
    }
}

#[test]
fn ipv4_options_and_vlan_tags_are_handled() {
    let s = Scratch::new("opts");
    let options = syn_with_ip_options(41000, WEB_VIP);
    let tagged = syn_with_vlan(100, 41001, WEB_VIP);
    let out = s.path("out.pcap");
    let frames = [options.clone(), tagged];
    let lines = trace(&s, &config(), &frames, &["--out", out.to_str().unwrap()]);
    let (_, written) = read_pcap(&out);
    for (i, line) in lines.iter().enumerate() {
        let backend = line["backend"].as_str().unwrap().to_string();
        let mut expect = forward_line(i + 1, "web", &backend, true);
        expect["in"] = summary(&frames[i]);
        expect["out"] = summary(&written[i].1);
        assert_fields(line, &expect);
        assert_eq!(line["out"]["src"], SNAT.to_string());
        assert_eq!(line["out"]["dport"], 8080);
    }
    assert_eq!(inspect(&written[0].1).src, SNAT);
    assert_eq!(
        &written[0].1[14 + 20..14 + 28],
        &options[14 + 20..14 + 28],
        "options kept"
    );
    assert_eq!(lines[1]["out"]["vlan"], 100);
    assert!(
        lines[1]["out"]["text"]
            .as_str()
            .unwrap()
            .starts_with("vlan 100 198.18.1.1:")
    );
}

#[test]
fn drops_before_forwarding_say_why() {
    let s = Scratch::new("drops");
    let frames = [
        syn(CLIENT, 42000, TINY_VIP, 80),
        syn(Ipv4Addr::new(198, 18, 0, 3), 42000, TINY_VIP, 80),
        syn(CLIENT, 42001, CLOSED_VIP, 80),
        syn(CLIENT, 42002, REFUSED_VIP, 80),
    ];
    let out = s.path("out.pcap");
    let lines = trace(&s, DROPS, &frames, &["--out", out.to_str().unwrap()]);
    assert_fields(
        &lines[0],
        &json!({"verdict": "TX", "service": "tiny", "backend": "198.18.1.11:8080", "new_flow": true}),
    );
    assert_eq!(lines[0]["out"]["sport"], 20000);
    let drop = |service: &str, reason: &str| {
        json!({
            "verdict": "DROP", "service": service, "backend": null, "mode": "nat",
            "new_flow": false, "reply": false, "pass_reason": null, "drop_reason": reason,
            "fib": null, "fib_lookup": null, "egress": null, "next_hop": null, "error": null,
        })
    };
    assert_fields(&lines[1], &drop("tiny", "snat_exhausted"));
    assert_fields(&lines[2], &drop("closed", "no_backend"));
    for l in &lines[1..3] {
        assert_eq!(l["out"], l["in"], "dropped before any rewrite");
    }
    // on_empty: reject (the default): answered with a RST, no lookup.
    assert_fields(
        &lines[3],
        &json!({"verdict": "TX", "service": "refused", "backend": null, "fib": null, "drop_reason": null}),
    );
    assert_eq!(
        lines[3]["out"]["text"],
        "198.18.100.22:80 -> 198.18.0.2:42002 TCP [R.]"
    );
    assert!(
        lines[3]["note"]
            .as_str()
            .unwrap()
            .contains("on_empty: reject")
    );
    let (_, written) = read_pcap(&out);
    assert_eq!(written.len(), 2, "dropped frames are not written");

    // The text says it too.
    let cfg = s.path("lb.yaml");
    let text = ok_stdout(&xdplb(&trace_args(&cfg, &s.path("in.pcap"), &[])));
    let rows: Vec<&str> = text.lines().filter(|l| l.starts_with('#')).collect();
    assert!(
        rows[1].contains("DROP") && rows[1].contains("tiny (no free SNAT port)"),
        "{text}"
    );
    assert!(rows[2].contains("closed (no usable backend)"), "{text}");
    assert!(
        text.lines()
            .last()
            .unwrap()
            .contains("4 packets: 2 TX, 2 DROP"),
        "{text}"
    );
}

#[test]
fn with_fib_the_namespace_routes_and_neighbours_decide() {
    let s = Scratch::new("fib");
    let ((web_b, web_port), _) = first_choices(&s);
    // Backends .11-.13 have static neighbours, .14 none; 198.19.0.14 no route.
    let bed = FibNet::create(11..=13).unwrap();
    let lbc = bed.ifindex("lbc").unwrap();
    let frames = [
        syn(CLIENT, 40000, WEB_VIP, 80),
        syn_ack(web_b, 8080, SNAT, web_port),
        syn(CLIENT, 42000, LOST_VIP, 80),
        syn(CLIENT, 42001, FAR_VIP, 80),
        syn(CLIENT, 43000, DSR_VIP, 80),
        syn(CLIENT6, 40000, WEB6_VIP, 80),
    ];
    let cfg = s.file("lb.yaml", config());
    let input = s.file("in.pcap", pcap(&frames));
    let out = s.path("out.pcap");
    let with_fib = |extra: &[&str]| {
        let fib = [&["--fib", "--iface", "lbc"], extra].concat();
        netns::run(netns::command(bed.ns(), BIN).args(trace_args(&cfg, &input, &fib))).unwrap()
    };
    if !xdplb::dataplane::features::kernel_at_least(5, 15) {
        // No ingress for an XDP test run before 5.15: trace says so, once.
        let fib = ["--fib", "--iface", "lbc", "--out", path(&out)];
        let err = netns::run(netns::command(bed.ns(), BIN).args(trace_args(&cfg, &input, &fib)))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("BPF_PROG_TEST_RUN takes the ingress interface from Linux 5.15 on"),
            "{err}"
        );
        return;
    }
    let stdout = with_fib(&["--out", path(&out), "--json"]);
    let lines = json_lines(&stdout);
    let (_, written) = read_pcap(&out);
    assert_eq!(written.len(), 4, "the two dropped frames are not written");

    // Forward: redirected out of lbb to the backend's MAC.
    let web_addr = format!("{web_b}:8080");
    assert_fields(
        &lines[0],
        &json!({
            "verdict": "REDIRECT", "service": "web", "backend": web_addr, "new_flow": true,
            "reply": false, "drop_reason": null, "fib": "ok",
            "fib_lookup": {"dst": web_b.to_string(), "ifindex": lbc, "iface": "lbc"},
            "egress": "lbb", "next_hop": null, "note": null,
        }),
    );
    assert_eq!(lines[0]["out"]["src_mac"], mac(LBB_MAC));
    assert_eq!(lines[0]["out"]["dst_mac"], mac(backend_mac(web_b)));
    assert_eq!(lines[0]["out"], summary(&written[0].1));
    assert_eq!(inspect(&written[0].1).dst, web_b);

    // Reply, arriving on lbc as well (--iface): back out of lbc, XDP_TX.
    assert_fields(
        &lines[1],
        &json!({
            "verdict": "TX", "service": "web", "backend": web_addr, "reply": true,
            "fib": "ok",
            "fib_lookup": {"dst": CLIENT.to_string(), "ifindex": lbc, "iface": "lbc"},
            "egress": "lbc",
        }),
    );
    assert_eq!(lines[1]["out"]["src_mac"], mac(LBC_MAC));
    assert_eq!(lines[1]["out"]["dst_mac"], mac(CLIENT_MAC));
    let b = inspect(&written[1].1);
    assert_eq!((b.src, b.dst, b.dport), (WEB_VIP, CLIENT, 40000));

    // No neighbour: dropped, and the program asks for the next hop.
    assert_fields(
        &lines[2],
        &json!({
            "verdict": "DROP", "service": "lost", "backend": "198.18.1.14:8080",
            "new_flow": true, "drop_reason": "neigh_miss", "fib": "no_neigh",
            "fib_lookup": {"dst": "198.18.1.14", "ifindex": lbc, "iface": "lbc"},
            "egress": null,
            "next_hop": {"addr": "198.18.1.14", "iface": "lbb"},
        }),
    );
    assert_eq!(
        lines[2]["out"]["dst"], "198.18.1.14",
        "the rewrite it dropped"
    );

    // No route.
    assert_fields(
        &lines[3],
        &json!({
            "verdict": "DROP", "service": "far", "backend": "198.19.0.14:8080",
            "drop_reason": "fib_fail", "fib": "failed", "next_hop": null,
            "fib_lookup": {"dst": "198.19.0.14", "ifindex": lbc, "iface": "lbc"},
        }),
    );

    // dsr: only the MACs change, toward the backend.
    let backend: std::net::SocketAddr = lines[4]["backend"].as_str().unwrap().parse().unwrap();
    assert_fields(
        &lines[4],
        &json!({"verdict": "REDIRECT", "service": "dsr", "mode": "dsr", "fib": "ok", "egress": "lbb"}),
    );
    assert_eq!(written[2].1[..6], backend_mac(backend.ip()));
    assert_eq!(written[2].1[6..12], LBB_MAC);
    assert_eq!(written[2].1[12..], frames[4][12..]);

    // IPv6 nat: the same, over IPv6 routes and neighbours.
    let b6: Ipv6Addr = lines[5]["out"]["dst"].as_str().unwrap().parse().unwrap();
    assert_fields(
        &lines[5],
        &json!({
            "verdict": "REDIRECT", "service": "web6", "fib": "ok", "egress": "lbb",
            "fib_lookup": {"dst": b6.to_string(), "ifindex": lbc, "iface": "lbc"},
        }),
    );
    assert_eq!(lines[5]["out"]["dst_mac"], mac(backend_mac(b6)));
    assert_eq!(inspect6(&written[3].1).src, SNAT6);

    // The text form.
    let text = with_fib(&[]);
    let rows: Vec<&str> = text.lines().filter(|l| l.starts_with('#')).collect();
    assert!(
        rows[0].contains(&format!(
            "fib: {web_b} via lbb, {} -> {}",
            mac(LBB_MAC),
            mac(backend_mac(web_b))
        )),
        "{text}"
    );
    assert!(
        rows[2].contains("fib: no neighbour 198.18.1.14 on lbb"),
        "{text}"
    );
    assert!(
        rows[3].contains("no usable route to 198.19.0.14 from lbc (fib_fail)"),
        "{text}"
    );
}

#[test]
fn ipv6_and_dsr_are_traced() {
    let s = Scratch::new("v6dsr");
    let first = trace(&s, &config(), &[syn(CLIENT6, 40000, WEB6_VIP, 80)], &[]);
    let b6: Ipv6Addr = first[0]["out"]["dst"].as_str().unwrap().parse().unwrap();
    let port6 = port(&first[0]["out"]["sport"]);
    assert!([backend6(11), backend6(12)].contains(&b6), "{b6}");

    let frames = [
        syn(CLIENT6, 40000, WEB6_VIP, 80),
        syn_ack(b6, 8080, SNAT6, port6),
        syn(CLIENT, 43000, DSR_VIP, 80),
        syn(CLIENT6, 43000, DSR6_VIP, 80),
    ];
    let out = s.path("out.pcap");
    let lines = trace(&s, &config(), &frames, &["--out", out.to_str().unwrap()]);
    let (_, written) = read_pcap(&out);
    assert_eq!(written.len(), 4);

    let web6 = format!("[{b6}]:8080");
    let mut expect = forward_line(1, "web6", &web6, true);
    expect["fib_lookup"] = json!({"dst": b6.to_string(), "ifindex": 1, "iface": "lo"});
    assert_fields(&lines[0], &expect);
    assert_eq!(lines[0]["in"]["ethertype"], "ipv6");
    assert_eq!(lines[0]["out"]["src"], SNAT6.to_string());
    assert_eq!(
        lines[0]["out"]["text"],
        format!("[{SNAT6}]:{port6} -> {web6} TCP [S]")
    );
    let o = inspect6(&written[0].1);
    assert_eq!((o.src, o.sport, o.dst, o.dport), (SNAT6, port6, b6, 8080));

    assert_fields(
        &lines[1],
        &json!({
            "verdict": "TX", "service": "web6", "backend": web6, "reply": true,
            "new_flow": false, "mode": "nat",
            "fib_lookup": {"dst": CLIENT6.to_string(), "ifindex": 1, "iface": "lo"},
        }),
    );
    let b = inspect6(&written[1].1);
    assert_eq!(
        (b.src, b.sport, b.dst, b.dport),
        (WEB6_VIP, 80, CLIENT6, 40000)
    );

    // dsr: nothing but the destination MAC would change, and with the FIB
    // skipped not even that; the lookup is for the backend.
    for (line, frame, written) in [
        (&lines[2], &frames[2], &written[2].1),
        (&lines[3], &frames[3], &written[3].1),
    ] {
        let backend = line["backend"].as_str().unwrap();
        let addr: std::net::SocketAddr = backend.parse().unwrap();
        assert_fields(
            line,
            &json!({
                "verdict": "TX", "mode": "dsr", "new_flow": true, "reply": false, "fib": "skipped",
                "fib_lookup": {"dst": addr.ip().to_string(), "ifindex": 1, "iface": "lo"},
            }),
        );
        assert_eq!(addr.port(), 80);
        assert_eq!(line["out"], line["in"]);
        assert_eq!(written, frame);
    }
    assert_eq!(lines[2]["service"], "dsr");
    assert_eq!(lines[3]["service"], "dsr6");
}

#[test]
fn text_lines_read_well() {
    let s = Scratch::new("text");
    let cfg = s.file("lb.yaml", config());
    let frames = [
        syn(CLIENT, 40000, Ipv4Addr::new(198, 18, 0, 1), 22),
        syn(CLIENT, 40000, WEB_VIP, 80),
        syn(CLIENT, 40000, WEB_VIP, 81),
    ];
    let input = s.file("in.pcap", pcap(&frames));
    let text = ok_stdout(&xdplb(&trace_args(&cfg, &input, &[])));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(
        lines[0].starts_with("-- 3 frames through xdplb (FIB lookup skipped"),
        "{text}"
    );
    assert_eq!(
        lines[1],
        "#1   PASS      (not for a VIP)                      198.18.0.2:40000 -> 198.18.0.1:22 TCP [S]"
    );
    let row = lines[2];
    assert!(row.starts_with("#2   TX        web -> 198.18.1.1"), "{row}");
    assert!(row.contains(":8080 (new flow)"), "{row}");
    assert!(row.contains(" 198.18.1.1:2"), "{row}");
    assert!(
        row.contains("fib: skipped (would look up 198.18.1.1"),
        "{row}"
    );
    assert!(row.ends_with(" from lo)"), "{row}");
    assert!(
        lines[3].contains("(no service on 198.18.100.10 tcp/81)"),
        "{text}"
    );
    assert_eq!(lines[4], "-- 3 packets: 2 PASS, 1 TX");
}

#[test]
fn the_same_capture_twice_gives_the_same_output() {
    let s = Scratch::new("twice");
    let cfg = s.file("lb.yaml", config());
    let mut frames = Vec::new();
    for sport in 30000..30040u16 {
        frames.push(syn(CLIENT, sport, WEB_VIP, 80));
        frames.push(udp(CLIENT, sport, DNS_VIP, 53, b"q"));
        frames.push(tcp(CLIENT, sport, WEB_VIP, 80, Tcp::Ack, b"hello"));
    }
    let input = s.file("in.pcap", pcap(&frames));
    let run = |json: bool, out: &str| {
        let out = s.path(out);
        let json: &[&str] = if json { &["--json"] } else { &[] };
        let args = trace_args(&cfg, &input, &[&["--out", path(&out)], json].concat());
        (ok_stdout(&xdplb(&args)), std::fs::read(out).unwrap())
    };
    for json in [false, true] {
        let (a, pa) = run(json, "a.pcap");
        let (b, pb) = run(json, "b.pcap");
        assert_eq!(a, b, "json={json}");
        assert_eq!(pa, pb, "json={json}");
    }
}

#[test]
fn every_capture_format_and_hex_give_the_same_trace() {
    let s = Scratch::new("formats");
    let cfg = s.file("lb.yaml", config());
    let frames = vec![
        syn(CLIENT, 40000, WEB_VIP, 80),
        udp(CLIENT, 5555, DNS_VIP, 53, b"query"),
        syn(CLIENT, 40000, Ipv4Addr::new(198, 18, 0, 1), 22),
    ];
    let mut inputs = Vec::new();
    for (name, endianness, ts_resolution) in [
        ("le-us.pcap", Endianness::Little, TsResolution::MicroSecond),
        ("be-us.pcap", Endianness::Big, TsResolution::MicroSecond),
        ("le-ns.pcap", Endianness::Little, TsResolution::NanoSecond),
        ("be-ns.pcap", Endianness::Big, TsResolution::NanoSecond),
    ] {
        let header = PcapHeader {
            endianness,
            ts_resolution,
            ..PcapHeader::default()
        };
        inputs.push(s.file(name, pcap_with(header, &frames)));
    }
    let mut ng = PcapNgWriter::new(Vec::new()).unwrap();
    ng.write_pcapng_block(InterfaceDescriptionBlock {
        linktype: DataLink::ETHERNET,
        snaplen: 0,
        options: vec![],
    })
    .unwrap();
    for f in &frames {
        ng.write_pcapng_block(EnhancedPacketBlock {
            interface_id: 0,
            timestamp: Duration::from_nanos(1_700_000_000_000_000),
            original_len: f.len() as u32,
            data: f.as_slice().into(),
            options: vec![],
        })
        .unwrap();
    }
    inputs.push(s.file("in.pcapng", ng.into_inner()));

    let run = |input: &[&str]| {
        let mut args = vec!["trace", "-c", cfg.to_str().unwrap(), "--json"];
        args.extend_from_slice(input);
        ok_stdout(&xdplb(&args))
    };
    let first = run(&["--pcap", inputs[0].to_str().unwrap()]);
    assert_eq!(first.lines().count(), 3);
    for input in &inputs[1..] {
        assert_eq!(
            run(&["--pcap", input.to_str().unwrap()]),
            first,
            "{input:?}"
        );
    }
    let hex: Vec<String> = frames
        .iter()
        .map(|f| f.iter().map(|b| format!("{b:02x}")).collect())
        .collect();
    let hex_args: Vec<&str> = hex.iter().flat_map(|h| ["--hex", h.as_str()]).collect();
    assert_eq!(run(&hex_args), first, "--hex");

    // The output keeps the input's timestamp resolution.
    let out = s.path("out.pcap");
    ok_stdout(&xdplb(&trace_args(
        &cfg,
        &inputs[2],
        &["--out", path(&out)],
    )));
    let (header, written) = read_pcap(&out);
    assert_eq!(header.ts_resolution, TsResolution::NanoSecond);
    assert_eq!(written.len(), 3);
}

#[test]
fn frames_the_kernel_cannot_run_are_reported_and_the_rest_go_on() {
    let s = Scratch::new("short");
    let web = syn(CLIENT, 40000, WEB_VIP, 80);
    let lines = trace(&s, &config(), &[web[..10].to_vec(), web.clone()], &[]);
    assert_fields(
        &lines[0],
        &json!({
            "verdict": "ERROR", "service": null, "out": null,
            "error": "a 10-byte frame is shorter than an Ethernet header",
        }),
    );
    assert_eq!(lines[0]["in"]["len"], 10);
    assert_fields(
        &lines[1],
        &json!({"verdict": "TX", "service": "web", "new_flow": true}),
    );
}

#[test]
fn a_capture_cut_by_its_snap_length_is_traced_and_noted() {
    let s = Scratch::new("snap");
    let cfg = s.file("lb.yaml", config());
    let web = syn(CLIENT, 40000, WEB_VIP, 80);
    // tcpdump -s 54: headers only.
    let mut bytes = pcap_with(
        PcapHeader {
            snaplen: 54,
            endianness: Endianness::Little,
            ..PcapHeader::default()
        },
        &[],
    );
    for w in [1_700_000_000u32, 0, 54, web.len() as u32] {
        bytes.extend_from_slice(&w.to_le_bytes());
    }
    bytes.extend_from_slice(&web[..54]);
    let input = s.file("cut.pcap", bytes);
    let out = s.path("out.pcap");
    let stdout = ok_stdout(&xdplb(&trace_args(
        &cfg,
        &input,
        &["--out", path(&out), "--json"],
    )));
    let line = &json_lines(&stdout)[0];
    assert_fields(line, &json!({"verdict": "TX", "service": "web"}));
    assert_eq!(
        line["note"],
        format!(
            "captured 54 of {} bytes: the program ran on what was captured",
            web.len()
        )
    );
    let bytes = std::fs::read(&out).unwrap();
    let orig_len = u32::from_le_bytes(bytes[24 + 12..24 + 16].try_into().unwrap());
    assert_eq!(
        orig_len as usize,
        web.len(),
        "the output keeps the wire length"
    );
}

#[test]
fn bad_input_exits_2_with_a_clear_message() {
    let s = Scratch::new("bad");
    let cfg = s.file("lb.yaml", config());
    let good = pcap(&[syn(CLIENT, 40000, WEB_VIP, 80)]);
    let sll = pcap_with(
        PcapHeader {
            datalink: DataLink::LINUX_SLL,
            ..PcapHeader::default()
        },
        &[vec![0; 40]],
    );
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", Vec::new(), "empty file"),
        ("header-only", good[..24].to_vec(), "no packets"),
        ("cut-record", good[..good.len() - 5].to_vec(), "truncated"),
        ("cut-header", good[..30].to_vec(), "truncated"),
        ("cut-file-header", good[..10].to_vec(), "truncated"),
        ("sll", sll, "LINUX_SLL (113) is not Ethernet"),
        (
            "text",
            b"not a capture\n".to_vec(),
            "not a pcap or pcapng file",
        ),
    ];
    for (name, bytes, message) in cases {
        let input = s.file(&format!("{name}.pcap"), bytes);
        let out = xdplb(&trace_args(&cfg, &input, &[]));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains(message), "{name}: {err}");
        assert!(
            err.contains(input.to_str().unwrap()),
            "{name}: names the file: {err}"
        );
        assert!(out.stdout.is_empty(), "{name}");
    }
    let ok_input = s.file("good.pcap", &good);
    for (args, message) in [
        (vec!["--hex", "0800zz"], "is not a hex digit"),
        (vec!["--hex", "080"], "odd number of hex digits"),
        (
            vec!["--pcap", "/nonexistent/in.pcap"],
            "/nonexistent/in.pcap",
        ),
        (
            vec!["--pcap", ok_input.to_str().unwrap(), "--iface", "nosuch0"],
            "--iface nosuch0: no such interface",
        ),
        (vec![], "--pcap"),
    ] {
        let mut full = vec!["trace", "-c", cfg.to_str().unwrap()];
        full.extend_from_slice(&args);
        let out = xdplb(&full);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(message), "{args:?}: {err}");
    }
    // An invalid config, too.
    let bad_cfg = s.file("bad.yaml", "interfaces: []\n");
    let out = xdplb(&trace_args(&bad_cfg, &ok_input, &[]));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("interfaces"));
}

#[test]
fn help_documents_the_json_fields() {
    let out = xdplb(&["trace", "--help"]);
    let help = ok_stdout(&out);
    for field in [
        "index",
        "verdict",
        "service",
        "backend",
        "new_flow",
        "reply",
        "pass_reason",
        "drop_reason",
        "fib",
        "fib_lookup",
        "egress",
        "next_hop",
        "--fib",
        "--hex",
        "--out",
        "--json",
        "--iface",
    ] {
        assert!(help.contains(field), "{field} missing from --help");
    }
}
