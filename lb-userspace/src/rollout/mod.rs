//! Canary rollouts (`xdplb rollout`, `/api/v1/rollouts`): new flows move
//! to one service's canary backends step by step, each step held for a
//! while and watched; a canary whose signals breach a condition
//! (`conditions`) is rolled back at once, the weights put back as they
//! were. The state machine is here, on a clock the caller gives (unit
//! tests fake it); the controller owns the rollouts, sets the weights
//! (`weights`) and asks `check` every second (`controller::rollouts`).
//!
//! A rollout is `running` (steps move on), `paused` (the step clock
//! stands still, the weights stay, conditions are not judged), then ends
//! `completed` (the last step, 100%, was held for `every`: the weights
//! stay), `rolled_back` (a breach) or `aborted` (the operator, or a
//! reload that removed the service or a canary).

pub mod conditions;
pub mod metrics;
pub mod weights;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

pub use conditions::{Condition, Window};

use crate::api_types::{
    self, BackendState, Handshakes, RolloutBaseline, RolloutRequest, RolloutState, RolloutWindow,
};

/// Steps without `--steps`.
pub const DEFAULT_STEPS: [u32; 5] = [1, 5, 25, 50, 100];
/// How long each step is held without `--every`.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(30);
/// How often a running rollout's conditions are judged; also the
/// shortest step.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);
/// The longest step.
pub const MAX_EVERY: Duration = Duration::from_secs(24 * 3600);

/// What a rollout does, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub service: String,
    pub canaries: Vec<SocketAddr>,
    /// Percent of new flows for the canaries, increasing, the last 100.
    pub steps: Vec<u32>,
    pub every: Duration,
    pub conditions: Vec<Condition>,
    pub min_flows: u64,
}

impl Spec {
    /// The request's spec, or why it is wrong (nothing about the
    /// service: the controller checks that).
    pub fn from_request(r: &RolloutRequest) -> Result<Spec, String> {
        if r.canaries.is_empty() {
            return Err("give at least one canary backend (ADDR:PORT)".into());
        }
        if let Some(dup) = r
            .canaries
            .iter()
            .enumerate()
            .find(|(i, c)| r.canaries[..*i].contains(c))
        {
            return Err(format!("canary {} is given twice", dup.1));
        }
        let steps = r.steps.clone().unwrap_or_else(|| DEFAULT_STEPS.to_vec());
        check_steps(&steps)?;
        let every = match &r.every {
            Some(text) => humantime::parse_duration(text)
                .map_err(|e| format!("every {text:?} is not a duration (\"30s\"): {e}"))?,
            None => DEFAULT_EVERY,
        };
        if every < CHECK_EVERY || every > MAX_EVERY {
            return Err(format!(
                "every {} is out of range: {} to {}",
                humantime::format_duration(every),
                humantime::format_duration(CHECK_EVERY),
                humantime::format_duration(MAX_EVERY)
            ));
        }
        let conditions = conditions::parse(r.abort_if.as_deref().unwrap_or(conditions::DEFAULT))?;
        let min_flows = r.min_flows.unwrap_or(conditions::DEFAULT_MIN_FLOWS);
        if min_flows == 0 {
            return Err("min_flows must be at least 1".into());
        }
        Ok(Spec {
            service: r.service.clone(),
            canaries: r.canaries.clone(),
            steps,
            every,
            conditions,
            min_flows,
        })
    }
}

/// Steps are percents from 1 to 100, increasing, ending at 100.
pub fn check_steps(steps: &[u32]) -> Result<(), String> {
    let shown = || {
        steps
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    if let Some(s) = steps.iter().find(|s| !(1..=100).contains(*s)) {
        return Err(format!("step {s} is not a percent from 1 to 100"));
    }
    if steps.windows(2).any(|w| w[0] >= w[1]) {
        return Err(format!("steps {} must increase", shown()));
    }
    if steps.last() != Some(&100) {
        return Err(format!("steps {} must end at 100", shown()));
    }
    Ok(())
}

/// The canaries' counters, summed, since the daemon started (None: not
/// seen in the service's mode).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    pub flows: u64,
    pub resets: Option<u64>,
    pub unanswered: Option<u64>,
    pub handshakes: Option<Handshakes>,
}

impl Totals {
    /// Adds one canary's.
    pub fn add(&mut self, flows: u64, s: &api_types::Signals) {
        fn sum(a: &mut Option<u64>, b: Option<u64>) {
            *a = b.map(|b| a.unwrap_or(0) + b);
        }
        self.flows += flows;
        sum(&mut self.resets, s.resets);
        sum(&mut self.unanswered, s.unanswered);
        self.handshakes = s.handshakes.as_ref().map(|h| match &self.handshakes {
            None => h.clone(),
            Some(t) => Handshakes {
                count: t.count + h.count,
                sum_us: t.sum_us + h.sum_us,
                buckets: t
                    .buckets
                    .iter()
                    .zip(&h.buckets)
                    .map(|(a, b)| a + b)
                    .collect(),
            },
        });
    }

    /// What happened between `earlier` and these.
    fn since(&self, earlier: &Totals) -> Window {
        let d = |a: Option<u64>, b: Option<u64>| Some(a?.saturating_sub(b.unwrap_or(0)));
        Window {
            new_flows: self.flows.saturating_sub(earlier.flows),
            resets: d(self.resets, earlier.resets),
            unanswered: d(self.unanswered, earlier.unanswered),
            handshakes: match (&self.handshakes, &earlier.handshakes) {
                (Some(now), Some(then)) => now.since(then),
                (Some(now), None) => Some(now.clone()),
                _ => None,
            },
            down: None,
        }
    }
}

/// What a check decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Nothing to do.
    Hold,
    /// The next step began: the weights change.
    Step(u32),
    /// The last step was held: over, the weights stay.
    Completed,
    /// A condition was breached: the weights go back (the reason).
    RollBack(String),
}

/// One rollout and where it is.
#[derive(Debug, Clone)]
pub struct Rollout {
    pub spec: Spec,
    pub state: RolloutState,
    /// Index into `spec.steps`.
    step: usize,
    started: Instant,
    /// Unix ms of the start (shown).
    pub started_unix_ms: u64,
    ended: Option<Instant>,
    /// Time in this step before the last resume, and since when it runs
    /// (None while paused or over).
    in_step_before: Duration,
    since: Option<Instant>,
    /// The canaries' counters when the step began, and the last window.
    step_start: Totals,
    window: Window,
    pub reason: Option<String>,
    /// Each backend of the service as it was at the start.
    pub baseline: Vec<RolloutBaseline>,
}

impl Rollout {
    pub fn start(
        spec: Spec,
        now: Instant,
        totals: Totals,
        baseline: Vec<RolloutBaseline>,
    ) -> Rollout {
        Rollout {
            spec,
            state: RolloutState::Running,
            step: 0,
            started: now,
            started_unix_ms: unix_ms(),
            ended: None,
            in_step_before: Duration::ZERO,
            since: Some(now),
            step_start: totals,
            window: Window::default(),
            reason: None,
            baseline,
        }
    }

    /// The canaries' percent at the current step (at the end: the last
    /// step reached).
    pub fn percent(&self) -> u32 {
        self.spec.steps[self.step]
    }

    /// Running or paused: it holds the service's weights.
    pub fn active(&self) -> bool {
        matches!(self.state, RolloutState::Running | RolloutState::Paused)
    }

    pub fn in_step(&self, now: Instant) -> Duration {
        self.in_step_before
            + self
                .since
                .map_or(Duration::ZERO, |s| now.saturating_duration_since(s))
    }

    /// When it next needs a check: within `CHECK_EVERY`, or at the end of
    /// the step if sooner; None unless running.
    pub fn next_check(&self, now: Instant) -> Option<Instant> {
        self.since?;
        let left = self.spec.every.saturating_sub(self.in_step(now));
        Some(now + left.min(CHECK_EVERY))
    }

    pub fn pause(&mut self, now: Instant) -> Result<(), String> {
        match self.state {
            RolloutState::Running => {
                self.in_step_before = self.in_step(now);
                self.since = None;
                self.state = RolloutState::Paused;
                Ok(())
            }
            RolloutState::Paused => Err(format!(
                "the rollout of {} is paused already",
                self.spec.service
            )),
            s => Err(self.over(s)),
        }
    }

    pub fn resume(&mut self, now: Instant) -> Result<(), String> {
        match self.state {
            RolloutState::Paused => {
                self.since = Some(now);
                self.state = RolloutState::Running;
                Ok(())
            }
            RolloutState::Running => Err(format!(
                "the rollout of {} is running, not paused",
                self.spec.service
            )),
            s => Err(self.over(s)),
        }
    }

    fn over(&self, s: RolloutState) -> String {
        format!(
            "the rollout of {} is over ({}): start a new one",
            self.spec.service,
            s.word()
        )
    }

    /// Ends it in `state` (completed, rolled back, aborted).
    pub fn end(&mut self, state: RolloutState, reason: Option<String>, now: Instant) {
        self.in_step_before = self.in_step(now);
        self.since = None;
        self.ended = Some(now);
        self.state = state;
        self.reason = reason;
    }

    /// Judges the step's window (`totals`: the canaries' counters now,
    /// `down`: a canary failing its checks) and moves the step clock on.
    pub fn check(&mut self, now: Instant, totals: &Totals, down: Option<String>) -> Verdict {
        if self.state != RolloutState::Running {
            return Verdict::Hold;
        }
        self.window = Window {
            down,
            ..totals.since(&self.step_start)
        };
        let breach = self
            .spec
            .conditions
            .iter()
            .find_map(|c| c.breach(&self.window, self.spec.min_flows));
        if let Some(why) = breach {
            return Verdict::RollBack(format!(
                "{why} at step {}%, {:.1} s into it, {} new flows",
                self.percent(),
                self.in_step(now).as_secs_f64(),
                self.window.new_flows
            ));
        }
        if self.in_step(now) < self.spec.every {
            return Verdict::Hold;
        }
        if self.step + 1 == self.spec.steps.len() {
            return Verdict::Completed;
        }
        self.step += 1;
        self.in_step_before = Duration::ZERO;
        self.since = Some(now);
        self.step_start = totals.clone();
        self.window = Window::default();
        Verdict::Step(self.percent())
    }

    /// The API's view; `share`: the canaries' percent of the weights now.
    pub fn view(&self, now: Instant, share: f64) -> api_types::Rollout {
        let w = &self.window;
        api_types::Rollout {
            service: self.spec.service.clone(),
            canaries: self.spec.canaries.clone(),
            steps: self.spec.steps.clone(),
            every: humantime::format_duration(self.spec.every).to_string(),
            abort_if: conditions::format(&self.spec.conditions),
            min_flows: self.spec.min_flows,
            state: self.state,
            step: self.percent(),
            step_number: self.step + 1,
            canary_share: (share * 10.0).round() / 10.0,
            in_step_ms: self.in_step(now).as_millis() as u64,
            elapsed_ms: self
                .ended
                .unwrap_or(now)
                .saturating_duration_since(self.started)
                .as_millis() as u64,
            started_unix_ms: self.started_unix_ms,
            window: RolloutWindow {
                new_flows: w.new_flows,
                resets: w.resets,
                unanswered: w.unanswered,
                handshake_p99_us: w.handshakes.as_ref().and_then(|h| h.quantile_us(0.99)),
            },
            reason: self.reason.clone(),
            baseline: self.baseline.clone(),
        }
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The baseline entry of a backend.
pub fn baseline(address: SocketAddr, state: BackendState, weight: u32) -> RolloutBaseline {
    RolloutBaseline {
        address,
        state,
        weight,
    }
}

#[cfg(test)]
mod tests;
