//! What `xdplb rollout` and `xdplb status` print of rollouts.

use std::fmt::Write as _;

use crate::api_types::{Rollout, RolloutState};

fn secs(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

fn canaries(r: &Rollout) -> String {
    r.canaries
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// One line: `xdplb status`'s, and the head of `rollout status`.
pub fn render_rollout_line(r: &Rollout) -> String {
    let at = format!("step {}/{} ({}%)", r.step_number, r.steps.len(), r.step);
    let how = match r.state {
        RolloutState::Running | RolloutState::Paused => format!(
            "{} at {at}, {} of {} in it",
            r.state.word(),
            secs(r.in_step_ms),
            r.every
        ),
        RolloutState::Completed => format!("completed after {}", secs(r.elapsed_ms)),
        RolloutState::RolledBack | RolloutState::Aborted => format!(
            "{} at {at} after {}: {}",
            r.state.word().replace('_', " "),
            secs(r.elapsed_ms),
            r.reason.as_deref().unwrap_or("-")
        ),
    };
    format!(
        "rollout {}: {how}; canaries {} have {:.1}% of the weights\n",
        r.service,
        canaries(r),
        r.canary_share
    )
}

/// `xdplb rollout status|start|pause|resume|abort`: the line, the step's
/// window, the conditions and the baseline.
pub fn render_rollout(r: &Rollout) -> String {
    let mut out = render_rollout_line(r);
    let w = &r.window;
    let opt = |v: Option<u64>| v.map_or("-".into(), |v| v.to_string());
    let _ = writeln!(
        out,
        "  this step: {} new flows, {} resets, {} unanswered, handshake p99 {}",
        w.new_flows,
        opt(w.resets),
        opt(w.unanswered),
        w.handshake_p99_us
            .map_or("-".into(), |us| format!("<= {} ms", us as f64 / 1000.0))
    );
    let steps: Vec<String> = r.steps.iter().map(|s| format!("{s}%")).collect();
    let _ = writeln!(
        out,
        "  steps {} every {}; abort if {} (ratios judged from {} new flows)",
        steps.join(" "),
        r.every,
        r.abort_if,
        r.min_flows
    );
    let baseline: Vec<String> = r
        .baseline
        .iter()
        .map(|b| format!("{} {:?} {}", b.address, b.state, b.weight).to_lowercase())
        .collect();
    let _ = writeln!(out, "  baseline: {}", baseline.join(", "));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api_types::{BackendState, RolloutBaseline, RolloutWindow};

    fn rollout(state: RolloutState, reason: Option<&str>) -> Rollout {
        Rollout {
            service: "web".into(),
            canaries: vec!["198.18.1.13:8080".parse().unwrap()],
            steps: vec![10, 50, 100],
            every: "30s".into(),
            abort_if: "health=down,rst_ratio>0.05".into(),
            min_flows: 20,
            state,
            step: 50,
            step_number: 2,
            canary_share: 50.0,
            in_step_ms: 4200,
            elapsed_ms: 34_200,
            started_unix_ms: 0,
            window: RolloutWindow {
                new_flows: 120,
                resets: Some(0),
                unanswered: Some(1),
                handshake_p99_us: Some(512),
            },
            reason: reason.map(Into::into),
            baseline: vec![RolloutBaseline {
                address: "198.18.1.13:8080".parse().unwrap(),
                state: BackendState::Ready,
                weight: 0,
            }],
        }
    }

    #[test]
    fn lines_say_where_it_is_and_why_it_ended() {
        assert_eq!(
            render_rollout_line(&rollout(RolloutState::Running, None)),
            "rollout web: running at step 2/3 (50%), 4.2 s of 30s in it; \
             canaries 198.18.1.13:8080 have 50.0% of the weights\n"
        );
        let back = rollout(RolloutState::RolledBack, Some("rst_ratio 0.83 > 0.05"));
        assert!(
            render_rollout_line(&back).starts_with(
                "rollout web: rolled back at step 2/3 (50%) after 34.2 s: rst_ratio 0.83 > 0.05;"
            ),
            "{}",
            render_rollout_line(&back)
        );
        let full = render_rollout(&rollout(RolloutState::Paused, None));
        assert!(
            full.contains(
                "  this step: 120 new flows, 0 resets, 1 unanswered, handshake p99 <= 0.512 ms\n"
            ),
            "{full}"
        );
        assert!(full.contains("steps 10% 50% 100% every 30s; abort if health=down,rst_ratio>0.05 (ratios judged from 20 new flows)"), "{full}");
        assert!(
            full.contains("baseline: 198.18.1.13:8080 ready 0\n"),
            "{full}"
        );
    }
}
