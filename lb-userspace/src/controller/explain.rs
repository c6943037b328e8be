//! `xdplb explain`: which backend a packet of a flow goes to, and why,
//! decided as the program decides: the flow table first, else the flow
//! hash into the service's Maglev ring.

use std::net::SocketAddr;

use lb_common::{FlowKey, STATE_DRAIN, STATE_READY};

use super::{ControlError, Controller, DataplaneOps, HealthSource};
use crate::{api_types::Explanation, config::Protocol};

impl<D: DataplaneOps, H: HealthSource> Controller<D, H> {
    pub fn explain(
        &self,
        src: SocketAddr,
        dst: SocketAddr,
        protocol: Protocol,
    ) -> Result<Explanation, ControlError> {
        if src.is_ipv4() != dst.is_ipv4() {
            return Err(ControlError::BadRequest(
                "src and dst must be of one address family".into(),
            ));
        }
        let (s, family) = lb_common::addr_words(src.ip());
        let (d, _) = lb_common::addr_words(dst.ip());
        let key = FlowKey {
            src: s,
            dst: d,
            sport: src.port().to_be(),
            dport: dst.port().to_be(),
            proto: protocol.number(),
            family,
            _pad: [0; 2],
        };
        // The exact port first, then an all-ports VIP (port 0), as the program.
        let svc = [dst.port(), 0].iter().find_map(|port| {
            self.plan.services.iter().find(|p| {
                p.key.addr == d && u16::from_be(p.key.port) == *port && p.key.proto == key.proto
            })
        });
        let mut answer = Explanation {
            service: svc.map(|p| p.name.clone()),
            backend: None,
            existing_flow: false,
            hash: None,
            ring_index: None,
            reason: String::new(),
        };
        let Some(svc) = svc else {
            answer.reason = format!("{dst}/{protocol} is not a VIP: the kernel gets it");
            return Ok(answer);
        };
        let addr_of = |id: u32| {
            svc.backends
                .iter()
                .find(|b| b.id == id)
                .map(|b| (b.addr, b.entry.state))
        };
        if let Some((flow, confirmed)) = self.dataplane.flow(&key)?
            && let Some((addr, state)) = addr_of(flow.backend)
            && (state == STATE_READY || state == STATE_DRAIN)
        {
            answer.backend = Some(addr);
            answer.existing_flow = true;
            let kind = if confirmed {
                "an existing flow"
            } else {
                "an existing unconfirmed flow (its client has not completed the handshake)"
            };
            answer.reason = format!("{kind} of service {}, kept on {addr}", svc.name);
            return Ok(answer);
        }
        let m = self.plan.globals.ring_size;
        let h = lb_common::hash::flow_hash(&key, svc.hash, self.plan.globals.hash_seed);
        let index = h % m;
        answer.hash = Some(h);
        answer.ring_index = Some(index);
        match addr_of(svc.ring.get(index as usize)) {
            Some((addr, _)) => {
                answer.backend = Some(addr);
                answer.reason = format!(
                    "a new flow of service {}: hash {h:#010x}, ring entry {index} of {m} -> {addr}",
                    svc.name
                );
            }
            None if svc.flags & lb_common::SVC_REJECT != 0 => {
                answer.reason = format!(
                    "service {} has no usable backend: answered with a TCP RST or ICMP port \
                     unreachable (on_empty: reject)",
                    svc.name
                )
            }
            None => answer.reason = format!("service {} has no usable backend: dropped", svc.name),
        }
        Ok(answer)
    }
}
