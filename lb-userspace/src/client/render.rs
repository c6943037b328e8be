//! The text the client commands print: the `status` tables, the line of an
//! updated backend, the `reload` summary.

use std::fmt::Write as _;

use super::rates::{Rate, Rates, SignalRates};
use crate::api_types::{
    Backend, BackendState, Effective, Handshakes, HashMode, Health, Mode, NodeState, NodeStatus,
    OnFull, Protocol, ReloadSummary, Service,
};

/// The words of the API, as in the YAML.
pub fn state_word(state: BackendState) -> &'static str {
    match state {
        BackendState::Ready => "ready",
        BackendState::Drain => "drain",
        BackendState::Maint => "maint",
    }
}

pub fn health_word(health: Health) -> &'static str {
    match health {
        Health::Up => "up",
        Health::Down => "down",
        Health::Unchecked => "unchecked",
    }
}

pub fn effective_word(effective: Effective) -> &'static str {
    match effective {
        Effective::Ready => "ready",
        Effective::Drain => "drain",
        Effective::Maint => "maint",
        Effective::Down => "down",
    }
}

fn protocol_word(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

fn mode_word(m: Mode) -> &'static str {
    match m {
        Mode::Nat => "nat",
        Mode::Dsr => "dsr",
        Mode::Tunnel => "tunnel",
    }
}

fn hash_word(h: HashMode) -> &'static str {
    match h {
        HashMode::FiveTuple => "five-tuple",
        HashMode::SourceIp => "source-ip",
    }
}

/// Packets per second, or `-` when unknown.
fn format_rate(rate: Option<Rate>) -> String {
    match rate.map(|r| r.packets_per_second) {
        None => "-".into(),
        Some(pps) if pps >= 100.0 => format!("{pps:.0}"),
        Some(pps) => format!("{pps:.1}"),
    }
}

/// A count or rate in few characters: `980`, `1.2k`, `3.4M`; `-` if
/// unknown.
fn si(v: Option<f64>) -> String {
    let Some(v) = v else {
        return "-".into();
    };
    for (scale, unit) in [(1e9, "G"), (1e6, "M"), (1e3, "k")] {
        if v >= scale {
            return format!("{:.1}{unit}", v / scale);
        }
    }
    if v >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// A handshake latency (an upper bound, microseconds) in few characters.
fn latency(us: Option<u64>) -> String {
    match us {
        None => "-".into(),
        Some(us) if us < 1000 => format!("{us}us"),
        Some(us) if us < 1_000_000 => format!("{:.1}ms", us as f64 / 1e3),
        Some(us) => format!("{:.1}s", us as f64 / 1e6),
    }
}

/// `P50/P99` of the handshakes: those of the interval if there were any,
/// else all since the daemon started.
fn handshake_cell(all: Option<&Handshakes>, interval: Option<&Handshakes>) -> String {
    let h = match (interval, all) {
        (Some(i), _) if i.count > 0 => i,
        (_, Some(a)) => a,
        _ => return "-".into(),
    };
    if h.count == 0 {
        return "-".into();
    }
    format!(
        "{}/{}",
        latency(h.quantile_us(0.5)),
        latency(h.quantile_us(0.99))
    )
}

/// `xdplb status`: per service a header line and a table of its backends.
/// Without `rates`, the per-second columns show `-`. After PKT/S come the
/// golden signals (docs/operations.md): ACTIVE flows, NEW flows/s, bytes/s
/// SENT to the backend and RECV from it, RESETS and UNANSWERED attempts
/// since the daemon started, HANDSHAKE latency p50/p99 (`-`: not seen in
/// this mode).
pub fn render_status(services: &[Service], rates: Option<&Rates>) -> String {
    if services.is_empty() {
        return "no services\n".into();
    }
    let mut out = String::new();
    for (i, svc) in services.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "{}: {} {}, mode {}, hash {}, balance {}{}, {} pkt/s",
            svc.name,
            svc.vip,
            protocol_word(svc.protocol),
            mode_word(svc.mode),
            hash_word(svc.hash),
            svc.balance,
            if svc.backends.iter().any(|b| b.max_flows.is_some()) {
                format!(", on_full {}", on_full_word(svc.on_full))
            } else {
                String::new()
            },
            format_rate(rates.and_then(|r| r.service(&svc.name))),
        );
        if svc.backends.is_empty() {
            out.push_str("  (no backends)\n");
            continue;
        }
        let mut rows = vec![
            [
                "BACKEND",
                "WEIGHT",
                "STATE",
                "HEALTH",
                "EFFECTIVE",
                "FLOWS",
                "PKT/S",
                "ACTIVE",
                "NEW/S",
                "SENT/S",
                "RECV/S",
                "RESETS",
                "UNANSWERED",
                "HANDSHAKE",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for b in &svc.backends {
            rows.push(vec![
                b.address.to_string(),
                weight_cell(b),
                state_word(b.state).into(),
                health_word(b.health).into(),
                effective_word(b.effective).into(),
                b.flows.to_string(),
                format_rate(rates.and_then(|r| r.backend(&svc.name, b.address))),
            ]);
            let sig = &b.signals;
            let r: Option<&SignalRates> = rates.and_then(|r| r.signals(&svc.name, b.address));
            let count = |v: Option<u64>| v.map_or("-".into(), |v| v.to_string());
            rows.last_mut().expect("just pushed").extend([
                active_cell(sig.active_flows, b.max_flows),
                si(r.map(|r| r.new_flows_per_second)),
                si(r.map(|r| r.bytes_sent_per_second)),
                si(r.and_then(|r| r.bytes_received_per_second)),
                count(sig.resets),
                count(sig.unanswered),
                handshake_cell(
                    sig.handshakes.as_ref(),
                    r.and_then(|r| r.handshakes.as_ref()),
                ),
            ]);
        }
        let mut right = vec![false, true, false, false, false, true, true];
        right.extend([true; 7]);
        table(&mut out, &rows, &right);
    }
    out
}

/// The active flows, and the limit if there is one ("120/500").
fn active_cell(active: u64, max_flows: Option<u32>) -> String {
    match max_flows {
        Some(max) => format!("{active}/{max}"),
        None => active.to_string(),
    }
}

fn on_full_word(o: OnFull) -> &'static str {
    match o {
        OnFull::Drop => "drop",
        OnFull::Admit => "admit",
    }
}

/// The weight, and how far slow start has ramped it ("100 (slow start
/// 35%, 6s left)").
fn weight_cell(b: &Backend) -> String {
    match b.slow_start {
        None => b.weight.to_string(),
        Some(r) => format!(
            "{} (slow start {}%, {}s left)",
            b.weight,
            r.percent,
            r.remaining_ms.div_ceil(1000)
        ),
    }
}

/// Columns as wide as their widest cell, two spaces apart; `right`: which
/// columns are right-aligned (numbers).
fn table(out: &mut String, rows: &[Vec<String>], right: &[bool]) {
    let columns = rows[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            line.push_str("  ");
            if right[c] {
                let _ = write!(line, "{cell:>w$}", w = widths[c]);
            } else {
                let _ = write!(line, "{cell:<w$}", w = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

pub fn node_word(node: NodeState) -> &'static str {
    match node {
        NodeState::Ready => "ready",
        NodeState::Drain => "drain",
    }
}

/// The head of `xdplb status` and the answer of `xdplb node`: the node
/// state, with BGP the VIPs announced and a table of the peers, with flow
/// sync a table of its peers.
pub fn render_node(status: &NodeStatus) -> String {
    let mut out = String::new();
    match &status.bgp {
        None => {
            let _ = writeln!(out, "node: {} (no bgp)", node_word(status.node));
        }
        Some(bgp) => {
            let announced = if bgp.announced.is_empty() {
                "nothing".to_string()
            } else {
                bgp.announced
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = writeln!(
                out,
                "node: {}, announcing {announced}",
                node_word(status.node)
            );
            let router_id = bgp.router_id.map_or("-".into(), |r| r.to_string());
            let _ = writeln!(out, "bgp: router id {router_id}");
            let mut rows = vec![["PEER", "AS", "STATE"].map(String::from).to_vec()];
            for p in &bgp.peers {
                rows.push(vec![
                    p.address.to_string(),
                    p.asn.to_string(),
                    p.state.clone(),
                ]);
            }
            table(&mut out, &rows, &[false, true, false]);
        }
    }
    if let Some(sync) = &status.flow_sync {
        let at = std::net::SocketAddr::new(sync.address, sync.port);
        let _ = writeln!(out, "flow sync: {at}, {} flows sent", sync.flows_sent);
        let mut rows = vec![["PEER", "UP", "HEARD", "FLOWS"].map(String::from).to_vec()];
        for p in &sync.peers {
            rows.push(vec![
                p.address.to_string(),
                if p.up { "yes" } else { "no" }.into(),
                p.last_heard_ms
                    .map_or("never".into(), |ms| format!("{ms} ms ago")),
                p.flows_received.to_string(),
            ]);
        }
        table(&mut out, &rows, &[false, false, true, true]);
    }
    out
}

/// `xdplb backend state|weight`: the updated backend on one line.
pub fn render_backend(service: &str, b: &Backend) -> String {
    format!(
        "{service} {}: state {}, weight {}, health {}, effective {}\n",
        b.address,
        state_word(b.state),
        b.weight,
        health_word(b.health),
        effective_word(b.effective),
    )
}

/// `xdplb reload`: one line per non-empty list, or "no changes".
pub fn render_reload(summary: &ReloadSummary) -> String {
    if summary.is_empty() {
        return "no changes\n".into();
    }
    let mut out = String::new();
    for (what, list) in [
        ("services added", &summary.services_added),
        ("services removed", &summary.services_removed),
        ("services changed", &summary.services_changed),
        ("backends added", &summary.backends_added),
        ("backends removed", &summary.backends_removed),
    ] {
        if !list.is_empty() {
            let _ = writeln!(out, "{what}: {}", list.join(", "));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::client::Sample;
    use crate::client::fixtures::service;

    #[test]
    fn a_limit_shows_next_to_the_active_flows_and_on_full_in_the_title() {
        let mut svc = service(1000);
        svc.backends[0].max_flows = Some(500);
        svc.on_full = OnFull::Admit;
        let text = render_status(&[svc], None);
        assert!(
            text.starts_with("web: 198.18.100.10:80 tcp, mode nat, hash five-tuple, balance maglev, on_full admit, - pkt/s\n"),
            "{text}"
        );
        assert!(text.contains(" 2/500 "), "{text}");
    }

    #[test]
    fn status_table_with_and_without_rates() {
        let t0 = Instant::now();
        let sample = |packets, secs| Sample {
            services: vec![service(packets)],
            at: t0 + Duration::from_secs(secs),
        };
        let (before, after) = (sample(1000, 0), sample(3000, 2));
        let rates = Rates::between(&before, &after);

        let text = render_status(&after.services, Some(&rates));
        assert!(
            text.starts_with(
                "web: 198.18.100.10:80 tcp, mode nat, hash five-tuple, balance maglev, 1000 pkt/s\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "198.18.1.11:8080     100  ready  unchecked  ready          1   1000       2      0   50.0k   50.0k       3           0  128us/128us"
            ),
            "{text}"
        );
        let text = render_status(&after.services, None);
        assert!(
            text.contains("ready          1      -       2      -       -       -       3           0  128us/128us\n"),
            "{text}"
        );
        assert_eq!(render_status(&[], None), "no services\n");
    }

    #[test]
    fn status_shows_a_slow_start_next_to_the_weight() {
        let mut svc = service(0);
        svc.backends[0].effective_weight = 35.0;
        svc.backends[0].slow_start = Some(crate::api_types::SlowStart {
            percent: 35,
            remaining_ms: 5_200,
        });
        let text = render_status(&[svc], None);
        assert!(
            text.contains("198.18.1.11:8080  100 (slow start 35%, 6s left)  ready"),
            "{text}"
        );
    }

    #[test]
    fn node_head() {
        use crate::api_types::{BgpStatus, PeerStatus};
        let mut status = NodeStatus {
            node: NodeState::Ready,
            bgp: None,
            flow_sync: None,
        };
        assert_eq!(render_node(&status), "node: ready (no bgp)\n");
        status.node = NodeState::Drain;
        status.bgp = Some(BgpStatus {
            router_id: Some("198.18.0.1".parse().unwrap()),
            peers: vec![PeerStatus {
                address: "198.18.0.2".parse().unwrap(),
                asn: 65000,
                state: "Established".into(),
                up: true,
            }],
            announced: vec![],
        });
        assert_eq!(
            render_node(&status),
            "node: drain, announcing nothing\nbgp: router id 198.18.0.1\n  PEER           AS  STATE\n  198.18.0.2  65000  Established\n"
        );
        status.bgp.as_mut().unwrap().announced = vec![
            "198.18.100.10".parse().unwrap(),
            "2001:db8:100::10".parse().unwrap(),
        ];
        assert!(
            render_node(&status)
                .starts_with("node: drain, announcing 198.18.100.10, 2001:db8:100::10\n")
        );
        status.flow_sync = Some(crate::api_types::SyncStatus {
            address: "198.18.2.1".parse().unwrap(),
            port: 6082,
            flows_sent: 3,
            peers: vec![crate::api_types::SyncPeerStatus {
                address: "198.18.2.2".parse().unwrap(),
                up: true,
                last_heard_ms: Some(250),
                flows_received: 12,
            }],
        });
        assert!(
            render_node(&status).ends_with(
                "flow sync: 198.18.2.1:6082, 3 flows sent\n  PEER        UP        HEARD  FLOWS\n  198.18.2.2  yes  250 ms ago     12\n"
            ),
            "{}",
            render_node(&status)
        );
    }

    #[test]
    fn backend_line() {
        let svc = service(0);
        assert_eq!(
            render_backend("web", &svc.backends[0]),
            "web 198.18.1.11:8080: state ready, weight 100, health unchecked, effective ready\n"
        );
    }

    #[test]
    fn reload_summary_lines() {
        assert_eq!(render_reload(&ReloadSummary::default()), "no changes\n");
        let s = ReloadSummary {
            services_added: vec!["dns".into(), "ntp".into()],
            backends_removed: vec!["web/198.18.1.12:8080".into()],
            ..Default::default()
        };
        assert_eq!(
            render_reload(&s),
            "services added: dns, ntp\nbackends removed: web/198.18.1.12:8080\n"
        );
    }
}
