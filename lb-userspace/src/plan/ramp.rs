//! Slow start's arithmetic (HAProxy's `slowstart`): how far a backend's
//! weight has ramped after some time, in steps, so that its service's ring
//! is rebuilt once a step rather than continuously.
//!
//! As in HAProxy, the ramp is linear from near 0 (one part per mille: the
//! backend takes a trickle of new flows at once) to the full weight, and is
//! re-evaluated every `max(1s, slow_start / 20)`: at most 20 ring rebuilds
//! of the ramping service per ramp, never more than one a second.

use std::time::Duration;

/// Steps of a ramp (fewer when `slow_start / STEPS` would be under
/// `MIN_STEP`).
pub const STEPS: u32 = 20;
/// The shortest step, hence the shortest useful `slow_start`.
pub const MIN_STEP: Duration = Duration::from_secs(1);
/// A ramp's progress is counted in parts per `SCALE` (per mille).
pub const SCALE: u32 = 1000;

/// Where a ramping backend is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ramp {
    /// Share of its weight in force: 1 to `SCALE - 1`.
    pub permille: u32,
    /// Until it takes its full weight.
    pub remaining: Duration,
}

impl Ramp {
    /// Whole percent reached, as shown ("slow start 35%").
    pub fn percent(&self) -> u32 {
        self.permille * 100 / SCALE
    }
}

/// How often a ramp of `slow_start` moves on.
pub fn step(slow_start: Duration) -> Duration {
    (slow_start / STEPS).max(MIN_STEP)
}

/// The ramp `elapsed` after it began; None once over (or for a zero
/// `slow_start`). The progress is that of the last step reached, so it
/// changes only at step boundaries.
pub fn ramp(slow_start: Duration, elapsed: Duration) -> Option<Ramp> {
    if elapsed >= slow_start {
        return None;
    }
    let step = step(slow_start);
    let reached = step * (elapsed.as_nanos() / step.as_nanos()) as u32;
    let permille = reached.as_nanos() * u128::from(SCALE) / slow_start.as_nanos();
    Some(Ramp {
        permille: (permille as u32).clamp(1, SCALE - 1),
        remaining: slow_start - elapsed,
    })
}

/// When, counted from its start, a ramp of `slow_start` next changes after
/// `elapsed`: its next step, or its end.
pub fn next_change(slow_start: Duration, elapsed: Duration) -> Duration {
    let step = step(slow_start);
    let next = step * (elapsed.as_nanos() / step.as_nanos() + 1) as u32;
    next.min(slow_start)
}

/// The weight Maglev gets for a backend of `weight` in a service where
/// some backend ramps: every weight is counted in parts per mille, so a
/// ramping backend of weight 1 still ramps in 20 steps. (Scaling every
/// weight of a service alike leaves its table unchanged.)
pub fn scaled_weight(weight: u32, ramp: Option<Ramp>) -> u32 {
    weight.saturating_mul(ramp.map_or(SCALE, |r| r.permille))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: f64) -> Duration {
        Duration::from_secs_f64(secs)
    }

    #[test]
    fn the_step_is_a_twentieth_but_at_least_a_second() {
        assert_eq!(step(s(30.0)), s(1.5));
        assert_eq!(step(s(10.0)), s(1.0));
        assert_eq!(step(s(5.0)), s(1.0), "floored at one second");
        assert_eq!(step(s(3600.0)), s(180.0));
    }

    #[test]
    fn the_ramp_climbs_linearly_in_steps_from_near_zero() {
        let ss = s(10.0);
        let at = |e: f64| ramp(ss, s(e)).map(|r| r.permille);
        assert_eq!(
            at(0.0),
            Some(1),
            "near 0, never 0: it takes a trickle at once"
        );
        assert_eq!(at(0.999), Some(1), "no change within the first step");
        assert_eq!(at(1.0), Some(100));
        assert_eq!(at(2.5), Some(200));
        assert_eq!(at(5.0), Some(500));
        assert_eq!(at(9.99), Some(900));
        assert_eq!(at(10.0), None, "over: full weight");
        assert_eq!(ramp(ss, s(2.5)).unwrap().remaining, s(7.5));
        assert_eq!(ramp(ss, s(2.5)).unwrap().percent(), 20);
        // 30 s: steps of 1.5 s, 5% each.
        assert_eq!(ramp(s(30.0), s(1.4)).unwrap().permille, 1);
        assert_eq!(ramp(s(30.0), s(1.5)).unwrap().permille, 50);
        assert_eq!(ramp(s(30.0), s(29.0)).unwrap().permille, 950);
        // Shorter than 20 steps of a second: fewer, longer steps.
        assert_eq!(ramp(s(4.0), s(3.5)).unwrap().permille, 750);
        assert_eq!(ramp(Duration::ZERO, Duration::ZERO), None);
    }

    #[test]
    fn the_next_change_is_the_next_step_or_the_end() {
        let ss = s(10.0);
        assert_eq!(next_change(ss, s(0.0)), s(1.0));
        assert_eq!(next_change(ss, s(1.0)), s(2.0));
        assert_eq!(next_change(ss, s(9.5)), s(10.0));
        assert_eq!(
            next_change(s(2.5), s(2.2)),
            s(2.5),
            "the end, not a step past it"
        );
        // Every step boundary changes the permille: no wasted rebuild.
        let mut e = Duration::ZERO;
        let mut seen = vec![];
        while let Some(r) = ramp(ss, e) {
            seen.push(r.permille);
            e = next_change(ss, e);
        }
        assert_eq!(seen.len(), 10);
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    }

    #[test]
    fn scaling_keeps_ratios_and_cannot_overflow() {
        let half = Ramp {
            permille: 500,
            remaining: s(1.0),
        };
        assert_eq!(scaled_weight(100, None), 100_000);
        assert_eq!(scaled_weight(100, Some(half)), 50_000);
        assert_eq!(scaled_weight(1, Some(half)), 500);
        assert_eq!(
            scaled_weight(crate::config::MAX_WEIGHT, None),
            65_535_000,
            "the largest weight fits in u32"
        );
    }
}
