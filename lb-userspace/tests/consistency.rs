//! Consistency across nodes (docs/ha.md): nodes with the same config and
//! `hash_seed` pick the same backend for every new flow, so a flow the
//! router moves to another node (ECMP re-hash after a node's loss) keeps
//! its backend in dsr and tunnel modes.
//!
//! Three independent copies of the real program (three "nodes", each its
//! own maps and flow table, each behind its own controller as in the
//! daemon) get 10,000 distinct SYNs from random clients of 198.18.0.0/15,
//! run with BPF_PROG_TEST_RUN. Node C's config lists every service's
//! backends in the reverse order (its backend ids differ): the choice
//! depends on the backends' identities, never on ids or config order.
//! Every node's own prediction (`Controller::explain`, what `xdplb
//! explain` answers) must name the backend the program picked.
//!
//! Needs root and the built XDP program.

use std::{
    collections::{BTreeMap, HashSet},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
};

use lb_testbed::{
    XDP_REDIRECT,
    fib_net::FibNet,
    fixtures::vip4,
    frames::syn,
    inspect::{inspect, macs},
    run_frame,
};
use xdplb::{
    config::{Config, Protocol},
    controller::{Controller, HealthSource},
    dataplane::{Adopted, Dataplane},
    health::{self, BackendKey, Target},
    ids::Ids,
};

const FLOWS: usize = 10_000;
/// Backends 198.18.1.11-15, static neighbours in the FibNet.
const BACKENDS: std::ops::RangeInclusive<u8> = 11..=15;

/// One service per mode, five weighted backends each.
fn config(reversed: bool) -> String {
    let mut yaml = String::from(
        "interfaces: [lbc, lbb]\n\
         hash_seed: 0xc0ffee\n\
         snat: { ipv4: 198.18.1.1, ports: 20000-59999 }\n\
         limits: { max_services: 8, max_backends: 32, maglev_table_size: 65537, flow_table_size: 65536 }\n\
         services:\n",
    );
    for (name, vip, port, mode) in [
        ("nat", vip4(10), 8080, "nat"),
        ("dsr", vip4(20), 80, "dsr"),
        ("tun", vip4(40), 80, "tunnel"),
    ] {
        yaml += &format!(
            "  - name: {name}\n    vip: {vip}\n    port: 80\n    mode: {mode}\n    backends:\n"
        );
        let mut list: Vec<u8> = BACKENDS.collect();
        if reversed {
            list.reverse();
        }
        for n in list {
            // Weights 1-3: Maglev's weighted turns must agree too.
            let weight = n % 3 + 1;
            yaml +=
                &format!("      - {{ address: 198.18.1.{n}, port: {port}, weight: {weight} }}\n");
        }
    }
    yaml
}

/// Health as the daemon sees it with no checks configured: all up.
struct Unchecked;

impl HealthSource for Unchecked {
    fn set_targets(&mut self, _: Vec<Target>) {}
    fn is_up(&self, _: &BackendKey) -> bool {
        true
    }
    fn status(&self, _: &BackendKey) -> Option<health::Status> {
        None
    }
}

/// A node: its own copy of the program behind its own controller.
fn node(yaml: &str) -> Controller<Dataplane, Unchecked> {
    let cfg = Config::from_yaml(yaml).expect("valid config");
    let dp = Dataplane::load(&cfg.limits, None).expect("program loads (verifier)");
    let ids = Ids::adopt(&cfg, &Adopted::default()).unwrap();
    Controller::new(PathBuf::from("consistency.yaml"), cfg, ids, dp, Unchecked)
        .expect("config applies")
}

/// The backend the program sent `frame` to, read from its output per mode:
/// nat rewrites the destination address, tunnel puts the backend in the
/// outer header (IPIP), dsr only sets the backend's MAC (02:00:00:00:01:N).
fn backend_of(mode: &str, out: &[u8]) -> Ipv4Addr {
    match mode {
        "nat" => inspect(out).dst,
        "tunnel" => {
            assert_eq!(out[14 + 9], 4, "an IPIP packet");
            Ipv4Addr::new(out[30], out[31], out[32], out[33])
        }
        "dsr" => {
            let (dst_mac, _) = macs(out);
            assert_eq!(dst_mac[..5], [2, 0, 0, 0, 1], "a backend's MAC");
            Ipv4Addr::new(198, 18, 1, dst_mac[5])
        }
        _ => unreachable!(),
    }
}

/// xorshift64*: reproducible "random" clients without a crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// `FLOWS` distinct (client address, port) pairs from 198.18.0.0/15,
/// outside the LB's, the backends' and the VIPs' /24s.
fn clients() -> Vec<(Ipv4Addr, u16)> {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(FLOWS);
    while out.len() < FLOWS {
        let r = rng.next();
        let host = (r as u32) & 0x1_ffff; // 17 bits of 198.18.0.0/15
        let addr = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) | host);
        let o = addr.octets();
        if (o[1] == 18 && matches!(o[2], 0 | 1 | 100)) || o[3] == 0 || o[3] == 255 {
            continue;
        }
        let port = 1024 + ((r >> 32) as u16 % 60000);
        if seen.insert((addr, port)) {
            out.push((addr, port));
        }
    }
    out
}

#[test]
fn every_node_picks_the_same_backend_for_every_flow() {
    let bed = FibNet::create(BACKENDS).unwrap();
    bed.run_in(|| {
        let mut nodes = [
            node(&config(false)),
            node(&config(false)),
            node(&config(true)),
        ];
        let services = [("nat", vip4(10)), ("dsr", vip4(20)), ("tunnel", vip4(40))];
        let mut agree = 0;
        let mut per_backend: BTreeMap<(&str, Ipv4Addr), usize> = BTreeMap::new();
        for (i, (client, sport)) in clients().into_iter().enumerate() {
            let (mode, vip) = services[i % services.len()];
            let frame = syn(client, sport, vip, 80);
            let src = SocketAddr::new(client.into(), sport);
            let dst = SocketAddr::new(vip.into(), 80);
            let mut picked = Vec::new();
            for (n, node) in nodes.iter_mut().enumerate() {
                let predicted = node.explain(src, dst, Protocol::Tcp).unwrap();
                assert!(!predicted.existing_flow, "node {n}: {src} is a new flow");
                let r = run_frame(node.dataplane_mut().program(), &frame);
                assert_eq!(r.verdict, XDP_REDIRECT, "node {n}, {mode} flow {src}");
                let backend = backend_of(mode, &r.out);
                assert_eq!(
                    predicted.backend.map(|b| b.ip()),
                    Some(IpAddr::V4(backend)),
                    "node {n}: explain agrees with the program for {src} ({mode})"
                );
                picked.push(backend);
            }
            assert!(
                picked.iter().all(|b| *b == picked[0]),
                "{mode} flow {src} -> {vip}: the nodes picked {picked:?}"
            );
            *per_backend.entry((mode, picked[0])).or_default() += 1;
            agree += 1;
        }
        println!("CONSISTENCY: {agree}/{FLOWS} flows picked the same backend on 3 nodes");
        println!("per (mode, backend): {per_backend:?}");
        assert_eq!(agree, FLOWS);
        // Every backend of every service got flows: the test saw real spread.
        assert_eq!(per_backend.len(), services.len() * BACKENDS.count());
        Ok(())
    })
    .unwrap();
}
