//! A rollout step's arithmetic: the weights that give the canaries a share
//! of new flows. Maglev gives each backend a share of the ring equal to
//! its share of the sum of weights, so at step `p` percent the canaries
//! (together) get `O * p / (100 - p)`, `O` being the sum of the weights of
//! the other backends taking new flows; the others keep their weights. At
//! 100 the others get weight 0: their flows stay (the flow table), every
//! new flow goes to a canary.
//!
//! Weights are integers, so a share is exact to within the rounding of one
//! weight: with the default weight (100) a 1% step lands within 0.5% of
//! it. A canary never gets weight 0 (it would take nothing at all), nor
//! more than the config's largest weight.

use crate::config::MAX_WEIGHT;

/// Each canary's weight at 100% (the others then have 0): the config's
/// default weight.
pub const FULL_WEIGHT: u32 = 100;

/// Each of `canaries` canaries' weight at `percent` (1..=100), the other
/// backends taking new flows weighing `others` together.
pub fn canary_weight(others: u64, canaries: usize, percent: u32) -> u32 {
    if percent >= 100 || others == 0 {
        return FULL_WEIGHT;
    }
    let total = others as f64 * f64::from(percent) / f64::from(100 - percent);
    let each = (total / canaries.max(1) as f64).round();
    (each as u32).clamp(1, MAX_WEIGHT)
}

/// The canaries' share of new flows (0..=100 percent) with these weights.
pub fn share(others: u64, canaries: usize, weight: u32) -> f64 {
    let c = canaries as f64 * f64::from(weight);
    if c + others as f64 == 0.0 {
        return 0.0;
    }
    100.0 * c / (c + others as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_canaries_get_the_step_percent_of_the_weights() {
        // Two others at 100: 1% of 200/0.99 is 2.02.
        assert_eq!(canary_weight(200, 1, 1), 2);
        assert_eq!(canary_weight(200, 1, 50), 200);
        assert_eq!(canary_weight(200, 1, 25), 67);
        assert_eq!(canary_weight(100, 1, 10), 11);
        // Two canaries share it.
        assert_eq!(canary_weight(200, 2, 50), 100);
        assert_eq!(canary_weight(300, 2, 25), 50);
        for (others, n, p) in [(200, 1, 1), (200, 1, 5), (300, 2, 25), (100, 1, 99)] {
            let s = share(others, n, canary_weight(others, n, p));
            assert!((s - f64::from(p)).abs() < 0.5, "{others} {n} {p}: {s}");
        }
    }

    #[test]
    fn never_zero_never_above_the_largest_weight() {
        assert_eq!(canary_weight(2, 1, 1), 1, "rounds to 0: takes 1");
        assert_eq!(canary_weight(3 * 65535, 1, 99), MAX_WEIGHT);
        assert_eq!(canary_weight(200, 1, 100), FULL_WEIGHT);
        assert_eq!(
            canary_weight(0, 1, 10),
            FULL_WEIGHT,
            "no other backend: the canary takes all anyway"
        );
        assert_eq!(share(0, 1, 100), 100.0);
        assert_eq!(share(0, 0, 0), 0.0);
        // Small weights round coarsely: the share says so.
        assert_eq!(share(2, 1, canary_weight(2, 1, 1)), 100.0 / 3.0);
    }
}
