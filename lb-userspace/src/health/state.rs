//! The rise/fall state machine of one backend: pure, no I/O, no clock.

use std::time::Duration;

use crate::config::HealthCheck;

/// Health of one checked backend (also `check` in the API's backends).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Status {
    pub up: bool,
    /// Passed checks in a row (0 after a failure).
    pub consecutive_ok: u32,
    /// Failed checks in a row (0 after a pass).
    pub consecutive_fail: u32,
    /// How long the last check took (None before the first one).
    pub last_duration_ms: Option<f64>,
    /// Why the last check failed; None if it passed (or none ran yet).
    pub last_error: Option<String>,
    /// Checks run so far.
    pub checks: u64,
    /// When the backend last went up or down, or its checks began (Unix
    /// time in milliseconds; set by the scheduler: this module has no clock).
    #[serde(default)]
    pub last_change_ms: Option<u64>,
    /// Why: the transition's reason, or that the checks began.
    #[serde(default)]
    pub last_change_reason: Option<String>,
}

impl Status {
    /// Before any check: up, as in HAProxy (see [`crate::health`]).
    pub(super) fn new() -> Self {
        Status {
            up: true,
            consecutive_ok: 0,
            consecutive_fail: 0,
            last_duration_ms: None,
            last_error: None,
            checks: 0,
            last_change_ms: None,
            last_change_reason: None,
        }
    }

    /// Notes a change (or the start of the checks) at `at_ms`, Unix time.
    pub(super) fn changed(&mut self, at_ms: u64, reason: String) {
        self.last_change_ms = Some(at_ms);
        self.last_change_reason = Some(reason);
    }

    /// Records a check's outcome; returns the transition it causes, as
    /// (up, reason).
    pub(super) fn record(
        &mut self,
        result: Result<(), String>,
        took: Duration,
        check: &HealthCheck,
    ) -> Option<(bool, String)> {
        self.checks += 1;
        self.last_duration_ms = Some(took.as_secs_f64() * 1000.0);
        match result {
            Ok(()) => {
                self.consecutive_ok = self.consecutive_ok.saturating_add(1);
                self.consecutive_fail = 0;
                self.last_error = None;
                if !self.up && self.consecutive_ok >= check.rise {
                    self.up = true;
                    let n = self.consecutive_ok;
                    return Some((true, format!("{n} consecutive checks passed")));
                }
            }
            Err(e) => {
                self.consecutive_fail = self.consecutive_fail.saturating_add(1);
                self.consecutive_ok = 0;
                self.last_error = Some(e.clone());
                if self.up && self.consecutive_fail >= check.fall {
                    self.up = false;
                    return Some((false, e));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_follows_rise_and_fall() {
        let check = HealthCheck {
            rise: 2,
            fall: 3,
            ..HealthCheck::default()
        };
        let mut s = Status::new();
        let ms = Duration::from_millis(1);
        let fail = || Err("refused".to_string());
        assert!(s.up);
        assert_eq!(s.record(fail(), ms, &check), None);
        assert_eq!(s.record(fail(), ms, &check), None);
        assert_eq!(s.record(Ok(()), ms, &check), None); // Resets the failures.
        assert_eq!(s.record(fail(), ms, &check), None);
        assert_eq!(s.record(fail(), ms, &check), None);
        assert_eq!(
            s.record(fail(), ms, &check),
            Some((false, "refused".into()))
        );
        assert_eq!((s.up, s.consecutive_fail, s.checks), (false, 3, 6));
        assert_eq!(s.record(fail(), ms, &check), None);
        assert_eq!(s.record(Ok(()), ms, &check), None);
        assert_eq!(s.last_error, None);
        assert_eq!(
            s.record(Ok(()), ms, &check),
            Some((true, "2 consecutive checks passed".into()))
        );
        assert_eq!(s.record(Ok(()), ms, &check), None);
        assert_eq!((s.up, s.consecutive_ok, s.consecutive_fail), (true, 3, 0));
    }

    #[test]
    fn rise_and_fall_of_one_act_at_once() {
        let check = HealthCheck {
            rise: 1,
            fall: 1,
            ..HealthCheck::default()
        };
        let mut s = Status::new();
        let ms = Duration::from_millis(1);
        // Passes while up change nothing.
        assert_eq!(s.record(Ok(()), ms, &check), None);
        assert_eq!(
            s.record(Err("timed out".into()), ms, &check),
            Some((false, "timed out".into()))
        );
        assert_eq!(
            s.record(Err("refused".into()), ms, &check),
            None,
            "a down backend does not go down again"
        );
        assert_eq!(s.last_error.as_deref(), Some("refused"));
        assert_eq!(
            s.record(Ok(()), Duration::from_micros(1500), &check),
            Some((true, "1 consecutive checks passed".into()))
        );
        assert_eq!(s.last_duration_ms, Some(1.5));
        assert_eq!(s.checks, 4);
    }
}
