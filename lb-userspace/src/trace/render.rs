//! What trace says about each frame: the record (one JSON line as serde
//! writes it, or one text line) and the closing totals.

use std::net::IpAddr;

use serde::Serialize;

use super::{Summary, attribution::drop_text};

/// The FIB lookup the program made, or would have made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FibLookup {
    /// Destination looked up: the backend (forward) or the client (reply).
    pub dst: IpAddr,
    /// Ingress interface of the lookup.
    pub ifindex: u32,
    pub iface: String,
}

/// The neighbour the program asked the daemon to resolve (`no_neigh`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NextHop {
    pub addr: IpAddr,
    pub iface: String,
}

/// What the program did with one frame: one text line or JSON line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Record {
    /// Position in the input, from 1 (Wireshark's frame number).
    pub index: usize,
    /// `PASS`, `DROP`, `TX`, `REDIRECT`, `ABORTED`, or `ERROR` when the
    /// kernel refused to run the frame (see `error`).
    pub verdict: String,
    /// Service that counted the packet.
    pub service: Option<String>,
    /// Its backend, `ADDR:PORT`.
    pub backend: Option<String>,
    /// The service's mode: `nat`, `dsr` or `tunnel`.
    pub mode: Option<&'static str>,
    /// The packet created a flow (a backend was selected for it).
    pub new_flow: bool,
    /// A backend's reply, translated back toward the client.
    pub reply: bool,
    /// Why the program passed the frame to the kernel: `not_ip`,
    /// `stacked_vlan`, `malformed`, `fragment`, `not_tcp_udp`,
    /// `no_nat_entry`, `not_a_vip` (or `passed`: none of these).
    pub pass_reason: Option<&'static str>,
    /// The drop counter the packet bumped: `no_backend`, `snat_exhausted`,
    /// `neigh_miss`, `fib_fail` (or `unknown`).
    pub drop_reason: Option<&'static str>,
    /// The forwarding step: `skipped` (FLAG_SKIP_FIB), `ok`, `no_neigh`,
    /// `failed`; null when the packet did not get there.
    pub fib: Option<&'static str>,
    pub fib_lookup: Option<FibLookup>,
    /// Interface the frame leaves by (`fib: ok`).
    pub egress: Option<String>,
    pub next_hop: Option<NextHop>,
    /// A remark for humans (a capture cut by its snap length, a FIB hint).
    pub note: Option<String>,
    /// Why the kernel refused the frame (verdict `ERROR`).
    pub error: Option<String>,
    /// The frame as it came.
    #[serde(rename = "in")]
    pub input: Summary,
    /// The frame as the program left it (its rewrite, the input for PASS);
    /// null for `ERROR`.
    pub out: Option<Summary>,
    /// Text form of `pass_reason`, with details.
    #[serde(skip)]
    pub(super) pass_text: Option<String>,
}

impl Record {
    /// The record of the frame at `index`, before the program has run it.
    pub(super) fn new(index: usize, input: Summary) -> Record {
        Record {
            index,
            verdict: String::new(),
            service: None,
            backend: None,
            mode: None,
            new_flow: false,
            reply: false,
            pass_reason: None,
            drop_reason: None,
            fib: None,
            fib_lookup: None,
            egress: None,
            next_hop: None,
            note: None,
            error: None,
            input,
            out: None,
            pass_text: None,
        }
    }

    /// The text line: index, verdict, decision, output summary, FIB step.
    pub fn text(&self) -> String {
        let decision = self.decision();
        let shown = self.out.as_ref().unwrap_or(&self.input);
        let mut line = format!(
            "#{:<3} {:<9} {:<36} {}",
            self.index, self.verdict, decision, shown.text
        );
        if let Some(fib) = self.fib_text() {
            line.push_str("  fib: ");
            line.push_str(&fib);
        }
        if let Some(note) = &self.note {
            line.push_str("  note: ");
            line.push_str(note);
        }
        line.trim_end().to_string()
    }

    fn decision(&self) -> String {
        if let Some(e) = &self.error {
            return format!("(not run: {e})");
        }
        if let Some(p) = &self.pass_text {
            return format!("({p})");
        }
        let Some(service) = &self.service else {
            return match self.drop_reason {
                Some(r) => format!("({})", drop_text(r)),
                None => String::new(),
            };
        };
        let mut d = match (&self.backend, self.reply) {
            (Some(b), true) => format!("{service} <- {b}"),
            (Some(b), false) => format!("{service} -> {b}"),
            (None, _) => service.clone(),
        };
        let mut tags = Vec::new();
        if self.reply {
            tags.push("reply".to_string());
        }
        if self.new_flow {
            tags.push("new flow".into());
        }
        if let Some(m) = self.mode.filter(|m| *m != "nat") {
            tags.push(m.into());
        }
        if let Some(r) = self
            .drop_reason
            .filter(|r| *r != "neigh_miss" && *r != "fib_fail")
        {
            tags.push(drop_text(r).into());
        }
        if !tags.is_empty() {
            d.push_str(&format!(" ({})", tags.join(", ")));
        }
        d
    }

    fn fib_text(&self) -> Option<String> {
        let lookup = self.fib_lookup.as_ref()?;
        Some(match self.fib? {
            "skipped" => format!(
                "skipped (would look up {} from {})",
                lookup.dst, lookup.iface
            ),
            "ok" => {
                let out = self.out.as_ref()?;
                format!(
                    "{} via {}, {} -> {}",
                    lookup.dst,
                    self.egress.as_deref().unwrap_or("?"),
                    out.src_mac,
                    out.dst_mac
                )
            }
            "no_neigh" => match &self.next_hop {
                Some(h) => format!(
                    "no neighbour {} on {} (neigh_miss: dropped until the daemon resolves it)",
                    h.addr, h.iface
                ),
                None => format!("no neighbour for {} (neigh_miss)", lookup.dst),
            },
            _ => format!(
                "no usable route to {} from {} (fib_fail)",
                lookup.dst, lookup.iface
            ),
        })
    }
}

/// Counts by verdict, for the closing line.
#[derive(Debug, Default, Clone)]
pub struct Totals {
    pub packets: usize,
    pub by_verdict: Vec<(String, usize)>,
}

impl Totals {
    pub(super) fn add(&mut self, verdict: &str) {
        self.packets += 1;
        match self.by_verdict.iter_mut().find(|(v, _)| v == verdict) {
            Some((_, n)) => *n += 1,
            None => self.by_verdict.push((verdict.to_string(), 1)),
        }
    }
}

impl std::fmt::Display for Totals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .by_verdict
            .iter()
            .map(|(v, n)| format!("{n} {v}"))
            .collect();
        write!(
            f,
            "{} packet{}: {}",
            self.packets,
            if self.packets == 1 { "" } else { "s" },
            parts.join(", ")
        )
    }
}
