//! Host-only tests: the flag the daemon must never set, capture reading and
//! writing, hex frames, summaries. The program itself is exercised by
//! `tests/trace.rs`.

use std::{net::SocketAddr, path::Path, time::Duration};

use etherparse::PacketBuilder;
use lb_common::FLAG_SKIP_FIB;
use pcap_file::{
    DataLink, Endianness, TsResolution,
    pcap::{PcapHeader, PcapPacket, PcapWriter},
    pcapng::{
        PcapNgWriter,
        blocks::{
            enhanced_packet::EnhancedPacketBlock,
            interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption},
        },
    },
};

use super::{
    FibMode,
    capture::{self, CaptureError},
    summary::Summary,
    trace_plan,
};
use crate::{
    config::{BackendState, Config},
    ids::Ids,
    plan::{self, Status},
};

const CFG: &str = "interfaces: [eth0]\nsnat: { ipv4: 198.18.1.1 }\nlimits: { maglev_table_size: 1021 }\nservices:\n  - name: web\n    vip: 198.18.100.10\n    port: 80\n    backends:\n      - { address: 198.18.1.11, port: 8080 }\n      - { address: 198.18.1.12, port: 8080, state: drain }\n";

#[test]
fn the_daemon_never_skips_the_fib() {
    let cfg = Config::from_yaml(CFG).unwrap();
    assert_eq!(plan::from_config(&cfg).unwrap().globals.flags, 0);
    // The daemon's plans (controller: `plan::plan` with run-time status),
    // whatever it learned about its backends.
    let mut ids = Ids::default();
    ids.assign(&cfg).unwrap();
    for (admin, up) in [
        (BackendState::Ready, true),
        (BackendState::Drain, false),
        (BackendState::Maint, true),
    ] {
        let p = plan::plan(&cfg, &ids, |_, _| Status {
            admin,
            weight: 7,
            up,
        });
        assert_eq!(p.globals.flags, 0, "{admin:?} up={up}");
        assert_eq!(p.globals.flags & FLAG_SKIP_FIB, 0);
    }
}

#[test]
fn trace_sets_the_flag_only_when_skipping_and_changes_nothing_else() {
    let cfg = Config::from_yaml(CFG).unwrap();
    let daemon = plan::from_config(&cfg).unwrap();
    let skip = trace_plan(&cfg, FibMode::Skip).unwrap();
    assert_eq!(skip.globals.flags, FLAG_SKIP_FIB);
    let mut g = skip.globals;
    g.flags = 0;
    assert_eq!(g, daemon.globals);
    assert_eq!(
        format!("{:?}", skip.services),
        format!("{:?}", daemon.services)
    );
    assert_eq!(
        trace_plan(&cfg, FibMode::Kernel).unwrap().globals,
        daemon.globals
    );
}

fn syn(sport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1])
        .ipv4([198, 18, 0, 2], [198, 18, 100, 10], 64)
        .tcp(sport, 80, 1000, 64240)
        .syn()
        .write(&mut v, b"hello")
        .unwrap();
    v
}

fn pcap_bytes(header: PcapHeader, frames: &[(Duration, Vec<u8>)]) -> Vec<u8> {
    let mut w = PcapWriter::with_header(Vec::new(), header).unwrap();
    for (t, f) in frames {
        w.write_packet(&PcapPacket::new(*t, f.len() as u32, f))
            .unwrap();
    }
    w.into_writer()
}

fn parse(bytes: &[u8]) -> Result<capture::Capture, CaptureError> {
    capture::parse(Path::new("in.pcap"), bytes)
}

#[test]
fn pcap_in_either_byte_order_and_resolution() {
    let frames = vec![
        (Duration::new(1_700_000_000, 123_456_789), syn(40000)),
        (Duration::new(1_700_000_001, 5_000), syn(40001)),
    ];
    for endianness in [Endianness::Big, Endianness::Little] {
        for res in [TsResolution::MicroSecond, TsResolution::NanoSecond] {
            let header = PcapHeader {
                endianness,
                ts_resolution: res,
                ..PcapHeader::default()
            };
            let c = parse(&pcap_bytes(header, &frames)).unwrap();
            assert_eq!(c.frames.len(), 2);
            assert_eq!(c.nanos, res == TsResolution::NanoSecond);
            assert_eq!(c.frames[0].data, frames[0].1);
            assert_eq!(c.frames[1].orig_len as usize, frames[1].1.len());
            let t0 = if c.nanos {
                frames[0].0
            } else {
                Duration::new(1_700_000_000, 123_456_000)
            };
            assert_eq!(c.frames[0].time, t0, "{endianness:?} {res:?}");
        }
    }
}

#[test]
fn frames_cut_by_the_snap_length_are_read() {
    // tcpdump -s 40: incl_len 40, orig_len beyond the snap length (pcap-file
    // writes such records; only its checked reader refuses them).
    let full = syn(40000);
    let header = PcapHeader {
        snaplen: 40,
        endianness: Endianness::Little,
        ..PcapHeader::default()
    };
    let mut w = PcapWriter::with_header(Vec::new(), header).unwrap();
    w.write_packet(&PcapPacket::new(
        Duration::ZERO,
        full.len() as u32,
        &full[..40],
    ))
    .unwrap();
    let c = parse(&w.into_writer()).unwrap();
    assert_eq!(c.frames[0].data, &full[..40]);
    assert_eq!(c.frames[0].orig_len as usize, full.len());
}

/// Found by the fuzz target `trace_capture` (slow inputs): pcap-file's
/// readers copy a capture through an 8 MB buffer and take a record larger
/// than that for a truncated file; read in place, it is read whole.
#[test]
fn records_larger_than_8_mb_are_read() {
    let mut big = syn(40000);
    big.resize(9_000_000, 0xab);
    let header = PcapHeader {
        snaplen: 10_000_000,
        ..PcapHeader::default()
    };
    let frames = [(Duration::ZERO, big), (Duration::ZERO, syn(40001))];
    let c = parse(&pcap_bytes(header, &frames)).unwrap();
    assert_eq!(c.frames.len(), 2);
    assert_eq!(c.frames[0].data, frames[0].1);

    let mut w = PcapNgWriter::new(Vec::new()).unwrap();
    w.write_pcapng_block(InterfaceDescriptionBlock {
        linktype: DataLink::ETHERNET,
        snaplen: 0,
        options: vec![],
    })
    .unwrap();
    w.write_pcapng_block(EnhancedPacketBlock {
        interface_id: 0,
        timestamp: Duration::ZERO,
        original_len: frames[0].1.len() as u32,
        data: frames[0].1.as_slice().into(),
        options: vec![],
    })
    .unwrap();
    let c = parse(&w.into_inner()).unwrap();
    assert_eq!(c.frames[0].data, frames[0].1);
}

#[test]
fn pcapng_with_its_timestamp_resolution() {
    let frame = syn(40000);
    let mut w = PcapNgWriter::new(Vec::new()).unwrap();
    w.write_pcapng_block(InterfaceDescriptionBlock {
        linktype: DataLink::ETHERNET,
        snaplen: 0,
        options: vec![],
    })
    .unwrap();
    w.write_pcapng_block(InterfaceDescriptionBlock {
        linktype: DataLink::ETHERNET,
        snaplen: 0,
        options: vec![InterfaceDescriptionOption::IfTsResol(9)],
    })
    .unwrap();
    // Interface 0: microseconds (the default), interface 1: nanoseconds.
    for (interface_id, units) in [
        (0, 1_700_000_000_250_000u64),
        (1, 1_700_000_000_250_000_001),
    ] {
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id,
            timestamp: Duration::from_nanos(units),
            original_len: frame.len() as u32,
            data: frame.as_slice().into(),
            options: vec![],
        })
        .unwrap();
    }
    let c = parse(&w.into_inner()).unwrap();
    assert_eq!(c.frames.len(), 2);
    assert_eq!(c.frames[0].time, Duration::new(1_700_000_000, 250_000_000));
    assert_eq!(c.frames[1].time, Duration::new(1_700_000_000, 250_000_001));
    assert!(c.nanos);
    assert_eq!(c.frames[1].data, frame);
}

#[test]
fn unusable_captures_say_why() {
    let good = pcap_bytes(PcapHeader::default(), &[(Duration::ZERO, syn(1))]);
    let msg = |bytes: &[u8]| parse(bytes).unwrap_err().to_string();

    assert!(msg(&[]).contains("empty file"), "{}", msg(&[]));
    assert!(msg(b"hello, world\n").contains("not a pcap or pcapng file"));
    assert!(msg(&good[..2]).contains("truncated"), "{}", msg(&good[..2]));
    assert!(
        msg(&good[..20]).contains("truncated"),
        "{}",
        msg(&good[..20])
    );
    let cut = msg(&good[..good.len() - 3]);
    assert!(
        cut.contains("truncated") && cut.contains("packet 1"),
        "{cut}"
    );
    let cut = msg(&good[..24 + 10]);
    assert!(cut.contains("truncated"), "{cut}");
    assert_eq!(msg(&good[..24]), "in.pcap: no packets");

    let sll = pcap_bytes(
        PcapHeader {
            datalink: DataLink::LINUX_SLL,
            ..PcapHeader::default()
        },
        &[(Duration::ZERO, syn(1))],
    );
    let m = msg(&sll);
    assert!(m.contains("LINUX_SLL (113) is not Ethernet"), "{m}");

    let mut w = PcapNgWriter::new(Vec::new()).unwrap();
    w.write_pcapng_block(InterfaceDescriptionBlock {
        linktype: DataLink::RAW,
        snaplen: 0,
        options: vec![],
    })
    .unwrap();
    w.write_pcapng_block(EnhancedPacketBlock {
        interface_id: 0,
        timestamp: Duration::ZERO,
        original_len: 20,
        data: vec![0x45; 20].into(),
        options: vec![],
    })
    .unwrap();
    assert!(msg(&w.into_inner()).contains("is not Ethernet"));
    let empty_ng = PcapNgWriter::new(Vec::new()).unwrap().into_inner();
    assert_eq!(msg(&empty_ng), "in.pcap: no packets");
}

#[test]
fn output_pcap_reads_back() {
    let dir = std::env::temp_dir().join(format!("xdplb-trace-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("out.pcap");
    let frames = [
        capture::Frame {
            time: Duration::new(5, 123_456_789),
            data: syn(1),
            orig_len: 100,
        },
        capture::Frame::new(syn(2)),
    ];
    for nanos in [false, true] {
        let mut w = capture::Writer::create(&path, nanos).unwrap();
        for f in &frames {
            w.write(f).unwrap();
        }
        w.finish().unwrap();
        let c = capture::read(&path).unwrap();
        assert_eq!(c.nanos, nanos);
        assert_eq!(c.frames[0].data, frames[0].data);
        assert_eq!(c.frames[0].orig_len, 100);
        let sub = if nanos { 123_456_789 } else { 123_456_000 };
        assert_eq!(c.frames[0].time, Duration::new(5, sub));
        assert_eq!(c.frames[1], frames[1]);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn hex_frames() {
    let f = syn(40000);
    let hex: String = f.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(capture::parse_hex(&hex).unwrap().data, f);
    let spaced: Vec<String> = f.iter().map(|b| format!("{b:02X}")).collect();
    assert_eq!(
        capture::parse_hex(&format!("0x{}", spaced.join(" ")))
            .unwrap()
            .data,
        f
    );
    assert_eq!(
        capture::parse_hex("aa:bb\n cc").unwrap().data,
        [0xaa, 0xbb, 0xcc]
    );
    for bad in ["abc", "zz", "", "0x"] {
        let e = capture::parse_hex(bad).unwrap_err().to_string();
        assert!(e.starts_with("--hex"), "{e}");
    }
}

#[test]
fn summaries() {
    let s = Summary::of_frame(&syn(40000));
    assert_eq!(s.text, "198.18.0.2:40000 -> 198.18.100.10:80 TCP [S]");
    assert_eq!(s.flags.as_deref(), Some("S"));
    assert_eq!(s.src_mac, "02:00:00:00:00:02");
    assert_eq!(s.ethertype, "ipv4");

    let mut v = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1])
        .single_vlan(100.try_into().unwrap())
        .ipv6(
            "2001:db8::2"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
            "2001:db8::1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
            64,
        )
        .tcp(40000, 80, 1, 100)
        .syn()
        .ack(7)
        .write(&mut v, &[])
        .unwrap();
    let s = Summary::of_frame(&v);
    assert_eq!(
        s.text,
        "vlan 100 [2001:db8::2]:40000 -> [2001:db8::1]:80 TCP [S.]"
    );
    assert_eq!(s.vlan, Some(100));
    assert_eq!(
        s.src.map(|a| SocketAddr::new(a, 1).to_string()).as_deref(),
        Some("[2001:db8::2]:1")
    );

    let mut icmp = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1])
        .ipv4([198, 18, 0, 2], [198, 18, 100, 10], 64)
        .icmpv4_echo_request(1, 1)
        .write(&mut icmp, b"ping")
        .unwrap();
    assert_eq!(
        Summary::of_frame(&icmp).text,
        "198.18.0.2 -> 198.18.100.10 ICMP echo request"
    );

    let f = syn(40000);
    let cut = Summary::of_frame(&f[..14 + 20 + 10]);
    assert_eq!(cut.malformed.as_deref(), Some("TCP header cut short"));
    assert!(
        cut.text.starts_with("198.18.0.2 -> 198.18.100.10 TCP"),
        "{}",
        cut.text
    );

    let mut frag = f.clone();
    frag[14 + 6] = 0x20;
    let s = Summary::of_frame(&frag);
    assert!(s.fragment);
    assert_eq!(s.text, "198.18.0.2 -> 198.18.100.10 TCP fragment");
}
