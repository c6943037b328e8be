//! `tunnel_source`: the address prefixes tunnel packets leave from, one
//! address per flow (docs/modes.md, tunnel), and the `ADDR/LEN` type.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// `tunnel_source`: without a family's prefix, its tunnel packets leave
/// from `snat.ipv4` / `snat.ipv6` (one address for every flow).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TunnelSource {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<Prefix>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Prefix>,
}

impl TunnelSource {
    pub fn is_none(&self) -> bool {
        self.ipv4.is_none() && self.ipv6.is_none()
    }
}

/// An address prefix, written `ADDR/LEN` in YAML.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl Prefix {
    fn bits(&self) -> u32 {
        if self.addr.is_ipv4() { 32 } else { 128 }
    }

    /// Whether `ip` is inside the prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let shift = self.bits() - self.len as u32;
        match (self.addr, ip) {
            (IpAddr::V4(p), IpAddr::V4(a)) => {
                (u32::from(p) ^ u32::from(a))
                    .checked_shr(shift)
                    .unwrap_or(0)
                    == 0
            }
            (IpAddr::V6(p), IpAddr::V6(a)) => {
                (u128::from(p) ^ u128::from(a))
                    .checked_shr(shift)
                    .unwrap_or(0)
                    == 0
            }
            _ => false,
        }
    }

    /// Whether the address has bits set past the prefix length.
    pub fn has_host_bits(&self) -> bool {
        let host = self.bits() - self.len as u32;
        let low = |v: u128| v & (1u128.checked_shl(host).unwrap_or(0).wrapping_sub(1)) != 0;
        match self.addr {
            IpAddr::V4(a) => low(u32::from(a) as u128),
            IpAddr::V6(a) => low(u128::from(a)),
        }
    }

    /// The host bits the XDP program varies, host order: all of them up to
    /// the last 32 (a flow hash has 32 bits).
    pub fn varied_host_bits(&self) -> u32 {
        let host = self.bits() - self.len as u32;
        if host >= 32 {
            u32::MAX
        } else {
            (1u32 << host) - 1
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Prefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid prefix {s:?}: expected ADDRESS/LENGTH, like 198.18.2.0/24");
        let (a, l) = s.split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = a.trim().parse().map_err(|_| bad())?;
        let len: u8 = l.trim().parse().map_err(|_| bad())?;
        let p = Prefix { addr, len };
        if len as u32 > p.bits() {
            return Err(format!("invalid prefix {s:?}: length above {}", p.bits()));
        }
        Ok(p)
    }
}

impl<'de> Deserialize<'de> for Prefix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Parsed in the visitor, so that serde_yaml places an error at the
        // value (as `PortRange`).
        struct Text;
        impl Visitor<'_> for Text {
            type Value = Prefix;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an address prefix ADDRESS/LENGTH")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Prefix, E> {
                s.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(Text)
    }
}

impl From<Prefix> for String {
    fn from(p: Prefix) -> String {
        p.to_string()
    }
}
