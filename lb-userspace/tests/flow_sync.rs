//! Flow sync in the program (docs/ha.md, "nat across nodes"): frames run
//! through the real XDP program with BPF_PROG_TEST_RUN (as in packet.rs),
//! with `flow_sync` on and its maps written as the daemon's sync task
//! writes them. A packet of a flow this node does not hold, which a live
//! peer owns, leaves toward that peer unchanged but for its MACs; a SYN,
//! a frame from a peer, a dead peer's flow or a flow held here are
//! balanced here; a new nat flow is announced on the sync ring.
//!
//! Needs root and the built XDP program.

use std::net::{IpAddr, Ipv4Addr};

use lb_common::{FlowKey, Peer, STAT_OWNER_FORWARD, addr_words, mac_key};
use lb_testbed::{
    XDP_REDIRECT, XDP_TX,
    fib_net::{CLIENT, CLIENT_MAC, FibNet, LBB_MAC, backend_mac},
    fixtures::{SERVICES, SNAT, WEB_BACKENDS, WEB_VIP, dataplane},
    frames::{Tcp, ack_of, syn, syn_ack, tcp},
    inspect::{inspect, macs},
    run_frame,
};
use xdplb::dataplane::Dataplane;

/// The peer of these tests: an address the bed has a static neighbour for
/// (backend .12's), on the backend side.
const PEER: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 12);

fn config(sync: bool) -> String {
    let mut yaml = SERVICES.to_string();
    if sync {
        yaml += &format!("flow_sync: {{ address: 198.18.1.1, peers: [{PEER}] }}\n");
    }
    yaml
}

fn key(sport: u16) -> FlowKey {
    let (src, family) = addr_words(CLIENT.into());
    FlowKey {
        src,
        dst: addr_words(WEB_VIP.into()).0,
        sport: sport.to_be(),
        dport: 80u16.to_be(),
        proto: 6,
        family,
        _pad: [0; 2],
    }
}

fn ack(sport: u16) -> Vec<u8> {
    tcp(CLIENT, sport, WEB_VIP, 80, Tcp::Ack, b"more")
}

fn owner_forwards(dp: &Dataplane) -> u64 {
    dp.counters(&[], &[]).unwrap().global[STAT_OWNER_FORWARD as usize]
}

/// A frame balanced here in nat mode: to a web backend from the SNAT address.
#[track_caller]
fn balanced_here(verdict: u32, out: &[u8]) {
    assert_eq!(verdict, XDP_REDIRECT, "forwarded out of lbb");
    let o = inspect(out);
    assert!(WEB_BACKENDS.contains(&o.dst), "{o:?}");
    assert_eq!(o.src, SNAT);
}

#[test]
fn frames_of_flows_a_live_peer_owns_are_handed_to_it() {
    let bed = FibNet::create(11..=13).unwrap();
    bed.run_in(|| {
        let (mut dp, _) = dataplane(&config(true));
        let mut maps = dp.sync_maps().unwrap();
        let peer = |alive| Peer {
            addr: addr_words(IpAddr::V4(PEER)).0,
            family: lb_common::FAMILY_V4,
            alive,
            ..Peer::default()
        };
        maps.peers.set(0, peer(1), 0).unwrap();

        // Owned by the live peer: out toward it, only the MACs changed.
        maps.owners.insert(key(41000), 0, 0).unwrap();
        let frame = ack(41000);
        let r = run_frame(dp.program(), &frame);
        assert!([XDP_TX, XDP_REDIRECT].contains(&r.verdict), "{r:?}");
        assert_eq!(macs(&r.out), (backend_mac(PEER), LBB_MAC));
        assert_eq!(&r.out[12..], &frame[12..], "the packet itself is unchanged");
        assert_eq!(owner_forwards(&dp), 1);

        // A SYN of the same 5-tuple starts a flow here; once its client
        // completes the handshake (it acknowledges the backend's SYN-ACK)
        // the flow is announced and replaces the peer as owner.
        let r = run_frame(dp.program(), &syn(CLIENT, 41000, WEB_VIP, 80));
        balanced_here(r.verdict, &r.out);
        assert!(maps.events.next().is_none(), "unconfirmed: not announced");
        let to_backend = inspect(&r.out);
        let answer = syn_ack(to_backend.dst, 8080, SNAT, to_backend.sport);
        assert_eq!(run_frame(dp.program(), &answer).verdict, XDP_REDIRECT);
        let r = run_frame(dp.program(), &ack_of(CLIENT, 41000, WEB_VIP, 80, 5001));
        balanced_here(r.verdict, &r.out);
        let announced = maps.events.next().expect("the new flow is announced");
        let announced: FlowKey = unsafe { std::ptr::read_unaligned(announced.as_ptr().cast()) };
        assert_eq!(announced, key(41000));
        assert!(maps.owners.get(&key(41000), 0).is_err(), "owner forgotten");
        let r = run_frame(dp.program(), &frame);
        balanced_here(r.verdict, &r.out);
        assert_eq!(owner_forwards(&dp), 1);

        // From a peer's MAC: never handed on again.
        maps.owners.insert(key(41001), 0, 0).unwrap();
        maps.peer_macs.insert(mac_key(&CLIENT_MAC), 0, 0).unwrap();
        let r = run_frame(dp.program(), &ack(41001));
        balanced_here(r.verdict, &r.out);
        maps.peer_macs.remove(&mac_key(&CLIENT_MAC)).unwrap();

        // A dead peer gets nothing: its flow is balanced here.
        maps.owners.insert(key(41002), 0, 0).unwrap();
        maps.peers.set(0, peer(0), 0).unwrap();
        let r = run_frame(dp.program(), &ack(41002));
        balanced_here(r.verdict, &r.out);
        assert_eq!(owner_forwards(&dp), 1);

        // A flow held here stays here even if a peer claims it.
        maps.peers.set(0, peer(1), 0).unwrap();
        maps.owners.insert(key(41002), 0, 0).unwrap();
        let r = run_frame(dp.program(), &ack(41002));
        balanced_here(r.verdict, &r.out);
        assert_eq!(owner_forwards(&dp), 1);
        Ok(())
    })
    .unwrap();
}

#[test]
fn without_flow_sync_owners_are_ignored_and_nothing_is_announced() {
    let bed = FibNet::create(11..=13).unwrap();
    bed.run_in(|| {
        let (mut dp, _) = dataplane(&config(false));
        let mut maps = dp.sync_maps().unwrap();
        maps.peers
            .set(
                0,
                Peer {
                    addr: addr_words(IpAddr::V4(PEER)).0,
                    family: lb_common::FAMILY_V4,
                    alive: 1,
                    ..Peer::default()
                },
                0,
            )
            .unwrap();
        maps.owners.insert(key(42000), 0, 0).unwrap();
        let r = run_frame(dp.program(), &ack(42000));
        balanced_here(r.verdict, &r.out);
        assert_eq!(owner_forwards(&dp), 0);
        assert!(maps.events.next().is_none(), "no flow announced");
        Ok(())
    })
    .unwrap();
}
