//! `--abort-if`: the conditions that roll a canary back, judged on its
//! golden signals (docs/operations.md, "Golden signals") over the current
//! step's window: counter deltas since the step began, all canaries
//! summed.
//!
//! Syntax: comma-separated, each `rst_ratio>X` (resets / new flows),
//! `unanswered_ratio>X` (connection attempts never answered / new flows),
//! `handshake_p99>DURATION` (the 99th percentile of handshake latency,
//! the upper bound of its power-of-two bucket, so within a factor 2 above
//! the truth) or `health=down` (a canary failing its checks). Ratios are
//! judged once the window holds `min_flows` new flows, the latency once it
//! holds as many handshakes: a handful of flows says little.

use std::{fmt, time::Duration};

use crate::api_types::Handshakes;

/// Without `--abort-if`: a canary that fails its checks, resets more than
/// one new flow in 20 or leaves as many unanswered (those the service can
/// measure: resets and answers are seen in nat mode over TCP).
pub const DEFAULT: &str = "health=down,rst_ratio>0.05,unanswered_ratio>0.05";

/// New flows (or handshakes) a window needs before ratios (or the
/// latency) are judged, unless the rollout says otherwise.
pub const DEFAULT_MIN_FLOWS: u64 = 20;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Condition {
    RstRatio(f64),
    UnansweredRatio(f64),
    HandshakeP99(Duration),
    HealthDown,
}

/// What a canary did in a window (all canaries summed). None: the
/// service's mode cannot see it (resets, answers and handshakes are seen
/// in nat mode over TCP only).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Window {
    pub new_flows: u64,
    pub resets: Option<u64>,
    pub unanswered: Option<u64>,
    pub handshakes: Option<Handshakes>,
    /// A canary failing its health checks, if any (now, not in the window).
    pub down: Option<String>,
}

impl Window {
    fn ratio(&self, n: Option<u64>) -> Option<f64> {
        Some(n? as f64 / self.new_flows as f64)
    }
}

impl Condition {
    /// Whether the service can measure it: `nat_tcp`, it is in nat mode
    /// over TCP.
    pub fn measurable(&self, nat_tcp: bool) -> bool {
        matches!(self, Condition::HealthDown) || nat_tcp
    }

    /// Why `w` breaches this condition, if it does ("rst_ratio 0.83 >
    /// 0.05").
    pub fn breach(&self, w: &Window, min_flows: u64) -> Option<String> {
        let enough = w.new_flows >= min_flows.max(1);
        match *self {
            Condition::HealthDown => w.down.as_ref().map(|b| format!("health=down ({b})")),
            Condition::RstRatio(x) => {
                let r = w.ratio(w.resets).filter(|_| enough)?;
                (r > x).then(|| format!("rst_ratio {r:.2} > {x}"))
            }
            Condition::UnansweredRatio(x) => {
                let r = w.ratio(w.unanswered).filter(|_| enough)?;
                (r > x).then(|| format!("unanswered_ratio {r:.2} > {x}"))
            }
            Condition::HandshakeP99(limit) => {
                let h = w.handshakes.as_ref()?;
                if h.count < min_flows.max(1) {
                    return None;
                }
                let limit_us = limit.as_micros() as u64;
                let shown = humantime::format_duration(limit);
                match h.quantile_us(0.99) {
                    Some(us) if us > limit_us => Some(format!(
                        "handshake_p99 {} > {shown}",
                        humantime::format_duration(Duration::from_micros(us))
                    )),
                    Some(_) => None,
                    // In the last, unbounded bucket: longer than any limit.
                    None => Some(format!("handshake_p99 over 4s > {shown}")),
                }
            }
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Condition::RstRatio(x) => write!(f, "rst_ratio>{x}"),
            Condition::UnansweredRatio(x) => write!(f, "unanswered_ratio>{x}"),
            Condition::HandshakeP99(d) => {
                write!(f, "handshake_p99>{}", humantime::format_duration(*d))
            }
            Condition::HealthDown => f.write_str("health=down"),
        }
    }
}

/// Parses `--abort-if`: one condition or more, comma-separated.
pub fn parse(text: &str) -> Result<Vec<Condition>, String> {
    let conditions = text
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(parse_one)
        .collect::<Result<Vec<_>, _>>()?;
    if conditions.is_empty() {
        return Err(format!("no condition in {text:?} ({SYNTAX})"));
    }
    Ok(conditions)
}

const SYNTAX: &str = "conditions are rst_ratio>X, unanswered_ratio>X (X from 0 to 1), \
                      handshake_p99>DURATION (\"200ms\") or health=down, comma-separated";

fn parse_one(c: &str) -> Result<Condition, String> {
    let compact: String = c.chars().filter(|ch| !ch.is_whitespace()).collect();
    if compact == "health=down" {
        return Ok(Condition::HealthDown);
    }
    let bad = || format!("bad condition {c:?}: {SYNTAX}");
    let (name, value) = compact.split_once('>').ok_or_else(bad)?;
    let ratio = || {
        value
            .parse::<f64>()
            .ok()
            .filter(|x| (0.0..=1.0).contains(x))
            .ok_or_else(|| format!("bad condition {c:?}: {name} takes a ratio from 0 to 1"))
    };
    match name {
        "rst_ratio" => Ok(Condition::RstRatio(ratio()?)),
        "unanswered_ratio" => Ok(Condition::UnansweredRatio(ratio()?)),
        "handshake_p99" => humantime::parse_duration(value)
            .ok()
            .filter(|d| !d.is_zero())
            .map(Condition::HandshakeP99)
            .ok_or_else(|| {
                format!("bad condition {c:?}: handshake_p99 takes a duration (\"200ms\")")
            }),
        _ => Err(bad()),
    }
}

/// `conditions` as written back (normalised).
pub fn format(conditions: &[Condition]) -> String {
    conditions
        .iter()
        .map(Condition::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn conditions_parse_and_print_back() {
        let c = parse(" rst_ratio > 0.05, unanswered_ratio>0.1,handshake_p99>200ms ,health=down")
            .unwrap();
        assert_eq!(
            c,
            [
                Condition::RstRatio(0.05),
                Condition::UnansweredRatio(0.1),
                Condition::HandshakeP99(ms(200)),
                Condition::HealthDown
            ]
        );
        assert_eq!(
            format(&c),
            "rst_ratio>0.05,unanswered_ratio>0.1,handshake_p99>200ms,health=down"
        );
        assert_eq!(parse(DEFAULT).unwrap().len(), 3);
    }

    #[test]
    fn bad_conditions_are_named() {
        for (text, says) in [
            ("", "no condition"),
            ("rst_ratio<0.5", "bad condition \"rst_ratio<0.5\""),
            ("rst_ratio>1.5", "takes a ratio from 0 to 1"),
            ("rst_ratio>x", "takes a ratio"),
            ("latency>5ms", "bad condition \"latency>5ms\""),
            ("handshake_p99>fast", "takes a duration"),
            ("handshake_p99>0s", "takes a duration"),
            ("health=up", "bad condition"),
            ("rst_ratio>0.1,,bogus", "bad condition \"bogus\""),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(says), "{text:?}: {e}");
        }
    }

    fn window(new_flows: u64, resets: u64, unanswered: u64) -> Window {
        Window {
            new_flows,
            resets: Some(resets),
            unanswered: Some(unanswered),
            ..Window::default()
        }
    }

    #[test]
    fn ratios_are_judged_once_there_are_enough_flows() {
        let rst = Condition::RstRatio(0.05);
        assert_eq!(rst.breach(&window(19, 19, 0), 20), None, "too few flows");
        assert_eq!(
            rst.breach(&window(40, 33, 0), 20).as_deref(),
            Some("rst_ratio 0.82 > 0.05")
        );
        assert_eq!(
            rst.breach(&window(100, 5, 0), 20),
            None,
            "0.05 is not > 0.05"
        );
        let un = Condition::UnansweredRatio(0.1);
        assert_eq!(
            un.breach(&window(20, 0, 3), 20).as_deref(),
            Some("unanswered_ratio 0.15 > 0.1")
        );
        // Not measured (dsr, tunnel, udp): never a breach.
        let blind = Window {
            new_flows: 100,
            ..Window::default()
        };
        assert_eq!(rst.breach(&blind, 20), None);
        assert!(!rst.measurable(false) && rst.measurable(true));
        assert!(Condition::HealthDown.measurable(false));
    }

    #[test]
    fn health_and_latency() {
        let down = Window {
            down: Some("198.18.1.13:8080".into()),
            ..Window::default()
        };
        assert_eq!(
            Condition::HealthDown.breach(&down, 20).as_deref(),
            Some("health=down (198.18.1.13:8080)"),
            "no flows needed"
        );
        assert_eq!(Condition::HealthDown.breach(&Window::default(), 20), None);
        // 30 handshakes of up to 2^10 us, 1 of up to 2^18 us (262 ms).
        let mut buckets = vec![0; 24];
        buckets[10] = 30;
        buckets[18] = 1;
        let slow = Window {
            new_flows: 31,
            handshakes: Some(Handshakes {
                count: 31,
                sum_us: 0,
                buckets,
            }),
            ..Window::default()
        };
        let p99 = Condition::HandshakeP99(ms(100));
        assert_eq!(
            p99.breach(&slow, 20).as_deref(),
            Some("handshake_p99 262ms 144us > 100ms")
        );
        assert_eq!(Condition::HandshakeP99(ms(300)).breach(&slow, 20), None);
        assert_eq!(p99.breach(&slow, 40), None, "too few handshakes");
        let mut hung = slow.clone();
        hung.handshakes.as_mut().unwrap().buckets[23] = 31;
        hung.handshakes.as_mut().unwrap().count = 62;
        assert!(p99.breach(&hung, 20).unwrap().contains("over 4s"));
    }
}
