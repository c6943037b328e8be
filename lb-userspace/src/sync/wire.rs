//! The flow-sync datagram (docs/ha.md): an 8-byte header, then entries.
//!
//! ```text
//! "XLBS" | version 1 | kind | count (u16, big endian) | count entries
//! kind 1 hello: the sender's link-layer addresses, 6 bytes each
//! kind 2 flows: nat flows the sender created, 38 bytes each: family,
//!        protocol, source and destination address (16 bytes each, IPv4 in
//!        the first 4), source and destination port, all in wire order
//! kind 3 bye:   the sender stops; no entries
//! ```

use lb_common::FlowKey;

const MAGIC: &[u8; 4] = b"XLBS";
const VERSION: u8 = 1;
const HEADER: usize = 8;
const FLOW_LEN: usize = 38;
const MAC_LEN: usize = 6;
/// Stays under any link's MTU with IPv6 and UDP headers.
pub const MAX_DATAGRAM: usize = 1400;
/// Flows in one datagram.
pub const FLOWS_PER_DATAGRAM: usize = (MAX_DATAGRAM - HEADER) / FLOW_LEN;

const KIND_HELLO: u8 = 1;
const KIND_FLOWS: u8 = 2;
const KIND_BYE: u8 = 3;

#[derive(Debug, PartialEq, Eq)]
pub enum Message {
    /// I am alive; frames from these MACs are mine.
    Hello(Vec<[u8; 6]>),
    /// I created these nat flows.
    Flows(Vec<FlowKey>),
    /// I am stopping.
    Bye,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("not a flow-sync datagram (bad magic)")]
    Magic,
    #[error("flow-sync version {0}, this one speaks {VERSION}")]
    Version(u8),
    #[error("unknown kind {0}")]
    Kind(u8),
    #[error("{0} bytes where the header announces {1}")]
    Length(usize, usize),
}

fn header(kind: u8, count: usize) -> Vec<u8> {
    let mut b = Vec::with_capacity(MAX_DATAGRAM);
    b.extend_from_slice(MAGIC);
    b.push(VERSION);
    b.push(kind);
    b.extend_from_slice(&(count as u16).to_be_bytes());
    b
}

pub fn hello(macs: &[[u8; 6]]) -> Vec<u8> {
    let mut b = header(KIND_HELLO, macs.len());
    for m in macs {
        b.extend_from_slice(m);
    }
    b
}

pub fn bye() -> Vec<u8> {
    header(KIND_BYE, 0)
}

/// Datagrams carrying `flows`, at most `FLOWS_PER_DATAGRAM` each.
pub fn flows(flows: &[FlowKey]) -> Vec<Vec<u8>> {
    flows
        .chunks(FLOWS_PER_DATAGRAM)
        .map(|chunk| {
            let mut b = header(KIND_FLOWS, chunk.len());
            for k in chunk {
                b.push(k.family);
                b.push(k.proto);
                // The words and ports hold wire-order bytes in memory.
                for w in k.src.iter().chain(&k.dst) {
                    b.extend_from_slice(&w.to_ne_bytes());
                }
                b.extend_from_slice(&k.sport.to_ne_bytes());
                b.extend_from_slice(&k.dport.to_ne_bytes());
            }
            b
        })
        .collect()
}

pub fn decode(b: &[u8]) -> Result<Message, WireError> {
    if b.len() < HEADER || &b[..4] != MAGIC {
        return Err(WireError::Magic);
    }
    if b[4] != VERSION {
        return Err(WireError::Version(b[4]));
    }
    let count = u16::from_be_bytes([b[6], b[7]]) as usize;
    let body = &b[HEADER..];
    let expect = |len: usize| {
        if body.len() == count * len {
            Ok(())
        } else {
            Err(WireError::Length(b.len(), HEADER + count * len))
        }
    };
    match b[5] {
        KIND_HELLO => {
            expect(MAC_LEN)?;
            Ok(Message::Hello(
                body.chunks_exact(MAC_LEN)
                    .map(|c| c.try_into().expect("6 bytes"))
                    .collect(),
            ))
        }
        KIND_FLOWS => {
            expect(FLOW_LEN)?;
            Ok(Message::Flows(
                body.chunks_exact(FLOW_LEN).map(flow).collect(),
            ))
        }
        KIND_BYE => {
            expect(0)?;
            Ok(Message::Bye)
        }
        k => Err(WireError::Kind(k)),
    }
}

fn flow(c: &[u8]) -> FlowKey {
    let word = |i: usize| u32::from_ne_bytes(c[i..i + 4].try_into().expect("4 bytes"));
    let port = |i: usize| u16::from_ne_bytes([c[i], c[i + 1]]);
    FlowKey {
        family: c[0],
        proto: c[1],
        src: [word(2), word(6), word(10), word(14)],
        dst: [word(18), word(22), word(26), word(30)],
        sport: port(34),
        dport: port(36),
        _pad: [0; 2],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_common::{FAMILY_V4, FAMILY_V6, PROTO_TCP, PROTO_UDP, addr_words};

    fn key(i: u16, v6: bool) -> FlowKey {
        let (src, dst, family) = if v6 {
            ("2001:db8::2", "2001:db8:100::1", FAMILY_V6)
        } else {
            ("198.18.0.2", "198.18.100.1", FAMILY_V4)
        };
        FlowKey {
            src: addr_words(src.parse().unwrap()).0,
            dst: addr_words(dst.parse().unwrap()).0,
            sport: (40000 + i).to_be(),
            dport: 80u16.to_be(),
            proto: if i.is_multiple_of(2) {
                PROTO_TCP
            } else {
                PROTO_UDP
            },
            family,
            _pad: [0; 2],
        }
    }

    #[test]
    fn flows_round_trip_in_datagrams_that_fit() {
        let keys: Vec<FlowKey> = (0..100).map(|i| key(i, i.is_multiple_of(3))).collect();
        let grams = flows(&keys);
        assert_eq!(grams.len(), 100usize.div_ceil(FLOWS_PER_DATAGRAM));
        let mut back = Vec::new();
        for g in &grams {
            assert!(g.len() <= MAX_DATAGRAM);
            match decode(g).unwrap() {
                Message::Flows(f) => back.extend(f),
                m => panic!("{m:?}"),
            }
        }
        assert_eq!(back, keys);
        // Ports and addresses keep their wire bytes.
        assert_eq!(&grams[0][8 + 34..8 + 36], &40000u16.to_be_bytes());
        assert_eq!(&grams[0][8 + 2..8 + 4], &[0x20, 0x01], "2001:db8::2");
    }

    #[test]
    fn hello_and_bye_round_trip() {
        let macs = [[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]];
        assert_eq!(decode(&hello(&macs)).unwrap(), Message::Hello(macs.into()));
        assert_eq!(decode(&bye()).unwrap(), Message::Bye);
    }

    #[test]
    fn bad_datagrams_are_named() {
        assert_eq!(decode(b"GET / HTTP/1.1"), Err(WireError::Magic));
        assert_eq!(decode(b"XLB"), Err(WireError::Magic));
        let mut g = bye();
        g[4] = 9;
        assert_eq!(decode(&g), Err(WireError::Version(9)));
        let mut g = bye();
        g[5] = 7;
        assert_eq!(decode(&g), Err(WireError::Kind(7)));
        let mut g = flows(&[key(1, false)]).remove(0);
        g.pop();
        assert_eq!(decode(&g), Err(WireError::Length(45, 46)));
        let mut g = hello(&[[1; 6]]);
        g[7] = 2;
        assert_eq!(decode(&g), Err(WireError::Length(14, 20)));
    }
}
