//! One tokio task per checked backend: when checks run, what they share
//! with the checker, and how a set of targets is replaced.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::{BackendKey, HealthMetrics, Status, Target, Transition, probe};
use crate::{config::HealthCheck, history::unix_ms};

/// What the checker and a key's task share.
struct Shared {
    status: Status,
    /// The generation of the one task allowed to record results; bumped
    /// when the task is replaced or stopped, so that a task being aborted
    /// cannot record, send or count anything after that.
    generation: u64,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // Every update leaves `Shared` consistent: a panic cannot corrupt it.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Entry {
    check: HealthCheck,
    shared: Arc<Mutex<Shared>>,
    task: JoinHandle<()>,
}

impl Entry {
    /// Stops the task (at once: it records nothing more); returns the
    /// generation a new task may use.
    fn retire(&self) -> u64 {
        let generation = {
            let mut shared = lock(&self.shared);
            shared.generation += 1;
            shared.generation
        };
        self.task.abort();
        generation
    }
}

/// Runs the health checks of a set of backends (see [`crate::health`]).
pub struct HealthChecker {
    spawner: Spawner,
    entries: HashMap<BackendKey, Entry>,
}

/// What a new task needs from the checker.
struct Spawner {
    events: UnboundedSender<Transition>,
    metrics: HealthMetrics,
    runtime: Handle,
}

impl Spawner {
    fn spawn(
        &self,
        key: &BackendKey,
        check: &HealthCheck,
        shared: &Arc<Mutex<Shared>>,
        generation: u64,
    ) -> JoinHandle<()> {
        let task = Task {
            key: key.clone(),
            check: check.clone(),
            shared: shared.clone(),
            generation,
            events: self.events.clone(),
            metrics: self.metrics.clone(),
        };
        self.runtime.spawn(task.run())
    }
}

impl HealthChecker {
    /// Must be called inside a tokio runtime (its tasks run there, even if
    /// `set_targets` is called from outside). Transitions are sent on
    /// `events`; a closed receiver is not an error.
    pub fn new(events: UnboundedSender<Transition>, metrics: HealthMetrics) -> Self {
        HealthChecker {
            spawner: Spawner {
                events,
                metrics,
                runtime: Handle::current(),
            },
            entries: HashMap::new(),
        }
    }

    /// Replaces the set of checked backends: starts tasks for new keys,
    /// stops removed ones (and drops their metrics series), restarts a key
    /// whose check settings changed (keeping its current status, up or
    /// down, and its counters), leaves unchanged ones running untouched.
    /// If a key appears twice, the last target wins.
    pub fn set_targets(&mut self, targets: Vec<Target>) {
        let wanted: HashMap<BackendKey, HealthCheck> =
            targets.into_iter().map(|t| (t.key, t.check)).collect();
        self.entries.retain(|key, entry| {
            let keep = wanted.contains_key(key);
            if !keep {
                entry.retire();
                self.spawner.metrics.remove(key);
            }
            keep
        });
        for (key, check) in wanted {
            match self.entries.get_mut(&key) {
                Some(entry) if entry.check == check => {}
                Some(entry) => {
                    let generation = entry.retire();
                    entry.task = self.spawner.spawn(&key, &check, &entry.shared, generation);
                    entry.check = check;
                }
                None => {
                    let mut status = Status::new();
                    status.changed(
                        unix_ms(),
                        format!("checks began (up until {} fail in a row)", check.fall),
                    );
                    let shared = Arc::new(Mutex::new(Shared {
                        status,
                        generation: 0,
                    }));
                    let task = self.spawner.spawn(&key, &check, &shared, 0);
                    self.entries.insert(
                        key,
                        Entry {
                            check,
                            shared,
                            task,
                        },
                    );
                }
            }
        }
    }

    /// The status of `key`; None if it is not checked.
    pub fn status(&self, key: &BackendKey) -> Option<Status> {
        let entry = self.entries.get(key)?;
        Some(lock(&entry.shared).status.clone())
    }

    /// Whether `key` is up; a backend that is not checked is up.
    pub fn is_up(&self, key: &BackendKey) -> bool {
        self.entries
            .get(key)
            .is_none_or(|entry| lock(&entry.shared).status.up)
    }
}

impl Drop for HealthChecker {
    fn drop(&mut self) {
        for entry in self.entries.values() {
            entry.retire();
        }
    }
}

/// One backend's check loop.
struct Task {
    key: BackendKey,
    check: HealthCheck,
    shared: Arc<Mutex<Shared>>,
    generation: u64,
    events: UnboundedSender<Transition>,
    metrics: HealthMetrics,
}

impl Task {
    async fn run(self) {
        let (service, backend) = (self.key.0.as_str(), self.key.1.to_string());
        let addr = SocketAddr::new(
            self.key.1.ip(),
            self.check.port.unwrap_or(self.key.1.port()),
        );
        let first = tokio::time::Instant::now() + jitter(&self.key, self.check.interval);
        let mut ticks = tokio::time::interval_at(first, self.check.interval);
        // A late check (busy runtime) pushes the next ones back rather than
        // firing a burst.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let began = Instant::now();
            let result = probe::run(&self.check, addr).await;
            let took = began.elapsed();

            let mut shared = lock(&self.shared);
            if shared.generation != self.generation {
                return; // Replaced or removed while checking.
            }
            self.metrics.observe(service, &backend, took);
            let Some((up, reason)) = shared.status.record(result, took, &self.check) else {
                continue;
            };
            shared.status.changed(unix_ms(), reason.clone());
            if up {
                tracing::info!(service, %backend, %reason, "backend is UP");
            } else {
                let fall = self.check.fall;
                tracing::warn!(service, %backend, %reason, fall, "backend is DOWN");
            }
            self.metrics.transition(service, &backend, up);
            // Sent under the lock: a retired task sends nothing.
            let _ = self.events.send(Transition {
                key: self.key.clone(),
                up,
                reason,
            });
        }
    }
}

/// Delay before the first check: random, below a quarter of
/// `min(interval, 1s)`.
fn jitter(key: &BackendKey, interval: Duration) -> Duration {
    let spread = interval.min(Duration::from_secs(1)) / 4;
    let nanos = spread.as_nanos() as u64;
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(RandomState::new().hash_one(key) % nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_is_small() {
        let key = ("web".to_string(), SocketAddr::from(([127, 0, 0, 1], 80)));
        for interval in [10, 50, 1000, 60_000] {
            let interval = Duration::from_millis(interval);
            let cap = interval.min(Duration::from_secs(1)) / 4;
            assert!(jitter(&key, interval) < cap);
        }
    }
}
