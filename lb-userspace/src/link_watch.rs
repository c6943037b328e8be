//! Follows the interfaces the program is attached to, through netlink link
//! events (RTNLGRP_LINK): one deleted and created again is a new device
//! without the program (the daemon attaches it again), and a link going
//! down or up is reported (the program stays attached through that). A
//! look at every interface every few seconds catches what the socket
//! dropped (its buffer overflowed) and an interface renamed away.
//!
//! Neighbour entries deleted on those interfaces while they are up
//! (RTNLGRP_NEIGH: `ip neigh del/flush`, or the kernel's garbage
//! collection of entries only XDP uses, which never marks them used) are
//! reported too, so the daemon can have them resolved again before the
//! program meets the gap and drops a packet (`neigh`).

use std::{
    collections::HashMap,
    io,
    net::IpAddr,
    time::{Duration, Instant},
};

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{LinkAttribute, LinkFlags, LinkMessage},
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
};
use netlink_sys::{AsyncSocket, AsyncSocketExt, SocketAddr, TokioSocket, protocols::NETLINK_ROUTE};
use nix::net::if_::InterfaceFlags;

/// How often every interface is looked at, besides the events.
const LOOK_EVERY: Duration = Duration::from_secs(5);
/// One report per neighbour address at most this often; a deletion
/// meanwhile is reported when the time is up (`ip neigh flush` deletes
/// again, round after round, the entries resolved after its first round).
const NEIGHBOUR_EVERY: Duration = Duration::from_millis(200);

/// A link's state, as the kernel's flags say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    Up,
    /// Administratively down.
    Down,
    /// Up, but nothing on the other end (a cable, a veth peer that is down).
    NoCarrier,
}

impl LinkState {
    fn of(up: bool, lower_up: bool) -> LinkState {
        match (up, lower_up) {
            (false, _) => LinkState::Down,
            (true, false) => LinkState::NoCarrier,
            (true, true) => LinkState::Up,
        }
    }
}

/// An interface as seen at some moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub index: u32,
    pub state: LinkState,
}

/// What changed for a configured interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The interface is gone, and the program with it.
    Gone { iface: String, index: u32 },
    /// An interface of that name exists (again), under a new index: a
    /// device without the program.
    Back { iface: String, seen: Seen },
    /// Its link went down, up, or lost its carrier.
    State { iface: String, state: LinkState },
    /// A neighbour entry on it was deleted while it is up; `was_valid`:
    /// the entry was usable when deleted (the kernel's garbage collection
    /// of a stale one; an administrator's deletion shows as failed).
    NeighbourGone {
        iface: String,
        addr: IpAddr,
        was_valid: bool,
    },
}

/// What was last seen of each configured interface (None: absent).
#[derive(Debug)]
pub struct Links(HashMap<String, Option<Seen>>);

impl Links {
    pub fn new(seen: impl IntoIterator<Item = (String, Option<Seen>)>) -> Links {
        Links(seen.into_iter().collect())
    }

    /// The index `iface` was last seen with.
    fn index(&self, iface: &str) -> Option<u32> {
        self.0.get(iface).copied().flatten().map(|s| s.index)
    }

    /// The configured interface with index `index`, if it is up.
    fn up(&self, index: u32) -> Option<&str> {
        self.0.iter().find_map(|(name, seen)| {
            seen.filter(|s| s.index == index && s.state == LinkState::Up)
                .map(|_| name.as_str())
        })
    }

    /// A deleted neighbour entry: reported if it was on a configured
    /// interface that is up (a link going down flushes its entries: nothing
    /// to resolve then), for a unicast address.
    fn on_neighbour_gone(&self, n: &NeighbourMessage) -> Option<Change> {
        let iface = self.up(n.header.ifindex)?.to_owned();
        let addr: IpAddr = n.attributes.iter().find_map(|a| match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => Some((*v4).into()),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => Some((*v6).into()),
            _ => None,
        })?;
        if addr.is_multicast() || addr.is_unspecified() {
            return None;
        }
        let was_valid = matches!(
            n.header.state,
            NeighbourState::Reachable
                | NeighbourState::Stale
                | NeighbourState::Delay
                | NeighbourState::Probe
        );
        Some(Change::NeighbourGone {
            iface,
            addr,
            was_valid,
        })
    }

    /// `iface` as seen now (None: absent); the change, if it is configured
    /// and anything changed.
    pub fn update(&mut self, iface: &str, now: Option<Seen>) -> Option<Change> {
        let before = self.0.get_mut(iface)?;
        let iface = iface.to_owned();
        let change = match (*before, now) {
            (Some(b), None) => Some(Change::Gone {
                iface,
                index: b.index,
            }),
            (None, Some(seen)) => Some(Change::Back { iface, seen }),
            // Deleted and created again between two looks.
            (Some(b), Some(seen)) if b.index != seen.index => Some(Change::Back { iface, seen }),
            (Some(b), Some(n)) if b.state != n.state => Some(Change::State {
                iface,
                state: n.state,
            }),
            _ => None,
        };
        *before = now;
        change
    }

    /// A netlink link message: the change it makes, if any. A deletion
    /// counts only for the index last seen (a stale one says nothing).
    fn on_message(&mut self, link: &LinkMessage, deleted: bool) -> Option<Change> {
        let name = link.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.as_str()),
            _ => None,
        })?;
        let index = link.header.index;
        let now = if deleted {
            if self.index(name) != Some(index) {
                return None;
            }
            None
        } else {
            let flags = link.header.flags;
            Some(Seen {
                index,
                state: LinkState::of(
                    flags.contains(LinkFlags::Up),
                    flags.contains(LinkFlags::LowerUp),
                ),
            })
        };
        self.update(name, now)
    }
}

/// `iface` as the kernel has it now (None: no such interface); an error
/// when the kernel could not be asked (that says nothing of `iface`).
pub fn look(iface: &str) -> nix::Result<Option<Seen>> {
    let index = match nix::net::if_::if_nametoindex(iface) {
        Ok(i) => i,
        Err(nix::errno::Errno::ENODEV) => return Ok(None),
        Err(e) => return Err(e),
    };
    let flags = nix::ifaddrs::getifaddrs()?
        .find(|a| a.interface_name == iface)
        .map_or(InterfaceFlags::empty(), |a| a.flags);
    Ok(Some(Seen {
        index,
        state: LinkState::of(
            flags.contains(InterfaceFlags::IFF_UP),
            flags.contains(InterfaceFlags::IFF_LOWER_UP),
        ),
    }))
}

/// The watcher: a netlink socket subscribed to link events, and what was
/// last seen of the configured interfaces.
pub struct LinkWatch {
    socket: TokioSocket,
    ifaces: Vec<String>,
    links: Links,
    pending: Vec<Change>,
    tick: tokio::time::Interval,
    /// When each neighbour address was last reported, and the deletions
    /// held back until `NEIGHBOUR_EVERY` has passed since.
    neighbours: HashMap<IpAddr, Instant>,
    held: HashMap<IpAddr, Change>,
}

impl LinkWatch {
    /// Subscribes to link and neighbour events, then looks at every interface of
    /// `ifaces`. Open it before attaching: nothing that happens after is
    /// missed. Needs a tokio runtime.
    pub fn open(ifaces: &[String]) -> io::Result<LinkWatch> {
        let mut socket = TokioSocket::new(NETLINK_ROUTE)?;
        socket.socket_mut().bind(&SocketAddr::new(0, 0))?;
        socket.socket_mut().add_membership(libc::RTNLGRP_LINK)?;
        socket.socket_mut().add_membership(libc::RTNLGRP_NEIGH)?;
        let mut seen = Vec::new();
        for i in ifaces {
            seen.push((i.clone(), look(i)?));
        }
        let links = Links::new(seen);
        let mut tick = tokio::time::interval(LOOK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok(LinkWatch {
            socket,
            ifaces: ifaces.to_vec(),
            links,
            pending: Vec::new(),
            tick,
            neighbours: HashMap::new(),
            held: HashMap::new(),
        })
    }

    /// The next change of a configured interface.
    pub async fn next(&mut self) -> io::Result<Change> {
        loop {
            if !self.pending.is_empty() {
                return Ok(self.pending.remove(0));
            }
            let held_until = self
                .held
                .keys()
                .filter_map(|a| self.neighbours.get(a))
                .min()
                .map(|t| *t + NEIGHBOUR_EVERY);
            tokio::select! {
                got = self.socket.recv_from_full() => match got {
                    Ok((datagram, _)) => self.on_datagram(&datagram),
                    // The kernel dropped events: look at everything.
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => self.look_all(),
                    Err(e) => return Err(e),
                },
                _ = self.tick.tick() => self.look_all(),
                _ = tokio::time::sleep_until(held_until.unwrap_or_else(Instant::now).into()),
                    if held_until.is_some() => self.release_held(),
            }
        }
    }

    fn look_all(&mut self) {
        for iface in &self.ifaces {
            match look(iface) {
                Ok(now) => self.pending.extend(self.links.update(iface, now)),
                Err(e) => tracing::debug!("looking at {iface}: {e}"),
            }
        }
    }

    /// Reports a neighbour deletion now, or holds it back if its address
    /// was reported less than `NEIGHBOUR_EVERY` ago.
    fn neighbour_gone(&mut self, c: Change) {
        let Change::NeighbourGone { addr, .. } = c else {
            return self.pending.push(c);
        };
        let now = Instant::now();
        if self.neighbours.len() > 4096 {
            self.neighbours.retain(|a, t| {
                now.duration_since(*t) < NEIGHBOUR_EVERY || self.held.contains_key(a)
            });
        }
        match self.neighbours.get(&addr) {
            Some(t) if now.duration_since(*t) < NEIGHBOUR_EVERY => {
                self.held.insert(addr, c);
            }
            _ => {
                self.neighbours.insert(addr, now);
                self.pending.push(c);
            }
        }
    }

    /// Reports the held-back deletions whose time is up.
    fn release_held(&mut self) {
        let now = Instant::now();
        let due: Vec<IpAddr> = self
            .held
            .keys()
            .filter(|a| {
                self.neighbours
                    .get(*a)
                    .is_none_or(|t| now.duration_since(*t) >= NEIGHBOUR_EVERY)
            })
            .copied()
            .collect();
        for addr in due {
            if let Some(c) = self.held.remove(&addr) {
                self.neighbours.insert(addr, now);
                self.pending.push(c);
            }
        }
    }

    /// One datagram may carry several messages.
    fn on_datagram(&mut self, mut rest: &[u8]) {
        const HEADER: usize = 16;
        while rest.len() >= HEADER {
            let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            if !(HEADER..=rest.len()).contains(&len) {
                break;
            }
            if let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rest[..len])
                && let NetlinkPayload::InnerMessage(inner) = msg.payload
            {
                match &inner {
                    RouteNetlinkMessage::NewLink(l) => {
                        self.pending.extend(self.links.on_message(l, false))
                    }
                    RouteNetlinkMessage::DelLink(l) => {
                        self.pending.extend(self.links.on_message(l, true))
                    }
                    RouteNetlinkMessage::DelNeighbour(n) => {
                        if let Some(c) = self.links.on_neighbour_gone(n) {
                            self.neighbour_gone(c);
                        }
                    }
                    _ => {}
                }
            }
            rest = &rest[len.next_multiple_of(4).min(rest.len())..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(index: u32, state: LinkState) -> Option<Seen> {
        Some(Seen { index, state })
    }

    fn link(name: &str, index: u32, flags: LinkFlags) -> LinkMessage {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = flags;
        m.attributes.push(LinkAttribute::IfName(name.into()));
        m
    }

    #[test]
    fn deletion_recreation_and_link_state_are_told_apart() {
        use LinkState::*;
        let mut links = Links::new([("lbb".to_string(), seen(5, Up))]);
        let up = LinkFlags::Up | LinkFlags::LowerUp;
        // Our own attach changes nothing that matters.
        assert_eq!(links.on_message(&link("lbb", 5, up), false), None);
        // Another interface's events are not ours.
        assert_eq!(links.on_message(&link("eth9", 5, up), false), None);
        // Deleting a veth takes it down first.
        assert_eq!(
            links.on_message(&link("lbb", 5, LinkFlags::empty()), false),
            Some(Change::State {
                iface: "lbb".into(),
                state: Down
            })
        );
        // A stale deletion (another index) says nothing.
        assert_eq!(links.on_message(&link("lbb", 4, up), true), None);
        assert_eq!(
            links.on_message(&link("lbb", 5, up), true),
            Some(Change::Gone {
                iface: "lbb".into(),
                index: 5
            })
        );
        assert_eq!(
            links.on_message(&link("lbb", 9, LinkFlags::empty()), false),
            Some(Change::Back {
                iface: "lbb".into(),
                seen: Seen {
                    index: 9,
                    state: Down
                }
            })
        );
        assert_eq!(
            links.on_message(&link("lbb", 9, LinkFlags::Up), false),
            Some(Change::State {
                iface: "lbb".into(),
                state: NoCarrier
            })
        );
        assert_eq!(
            links.on_message(&link("lbb", 9, up), false),
            Some(Change::State {
                iface: "lbb".into(),
                state: Up
            })
        );
        // Deleted and created again unseen (a look, after dropped events).
        assert_eq!(
            links.update("lbb", seen(12, Up)),
            Some(Change::Back {
                iface: "lbb".into(),
                seen: Seen {
                    index: 12,
                    state: Up
                }
            })
        );
    }

    #[test]
    fn deleted_neighbours_count_on_configured_interfaces_that_are_up() {
        let mut links = Links::new([
            ("lbb".to_string(), seen(5, LinkState::Up)),
            ("lbc".to_string(), seen(6, LinkState::Down)),
        ]);
        let gone = |ifindex: u32, addr: NeighbourAddress, state: NeighbourState| {
            let mut m = NeighbourMessage::default();
            m.header.ifindex = ifindex;
            m.header.state = state;
            m.attributes.push(NeighbourAttribute::Destination(addr));
            m
        };
        let backend = NeighbourAddress::Inet("198.18.1.11".parse().unwrap());
        assert_eq!(
            links.on_neighbour_gone(&gone(5, backend.clone(), NeighbourState::Stale)),
            Some(Change::NeighbourGone {
                iface: "lbb".into(),
                addr: "198.18.1.11".parse().unwrap(),
                was_valid: true
            })
        );
        assert!(matches!(
            links.on_neighbour_gone(&gone(5, backend.clone(), NeighbourState::Failed)),
            Some(Change::NeighbourGone {
                was_valid: false,
                ..
            })
        ));
        // A link that is down, another interface, a multicast address.
        let on = |i, a| links.on_neighbour_gone(&gone(i, a, NeighbourState::Reachable));
        assert_eq!(on(6, backend.clone()), None);
        assert_eq!(on(7, backend), None);
        assert_eq!(
            on(5, NeighbourAddress::Inet6("ff02::16".parse().unwrap())),
            None
        );
        links.update("lbb", None);
        assert_eq!(links.up(5), None);
    }

    #[tokio::test]
    async fn a_neighbour_deleted_again_soon_is_reported_once_its_time_is_up() {
        let mut watch = LinkWatch::open(&["lo".to_string()]).unwrap();
        let gone = |addr: &str| Change::NeighbourGone {
            iface: "lo".into(),
            addr: addr.parse().unwrap(),
            was_valid: false,
        };
        watch.neighbour_gone(gone("198.18.1.11"));
        watch.neighbour_gone(gone("198.18.1.11"));
        watch.neighbour_gone(gone("198.18.1.12"));
        assert_eq!(watch.pending, [gone("198.18.1.11"), gone("198.18.1.12")]);
        watch.pending.clear();
        // Held back, then reported by `next` when its time is up.
        let next = tokio::time::timeout(Duration::from_secs(2), watch.next());
        assert_eq!(next.await.unwrap().unwrap(), gone("198.18.1.11"));
        assert!(watch.held.is_empty());
    }

    #[test]
    fn loopback_is_looked_at() {
        let lo = look("lo").unwrap().expect("lo exists");
        assert_eq!(lo.index, 1);
        assert_eq!(look("xdplb-no-such-if").unwrap(), None);
    }
}
