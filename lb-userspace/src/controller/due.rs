//! The daemon's timed controller work (slow-start steps, rollout checks):
//! the controller publishes when the next run is due after every change,
//! a task sleeps until then and runs it.

use std::time::Instant;

use tokio::sync::watch;
use tracing::error;

/// Runs `step` whenever it is due: `next` is when (None: nothing to do
/// until it changes). Returns `name` if the controller is gone.
pub async fn run_when_due(
    mut next: watch::Receiver<Option<Instant>>,
    step: impl Fn() + Clone + Send + 'static,
    name: &'static str,
) -> &'static str {
    loop {
        let due = *next.borrow_and_update();
        let changed = match due {
            Some(at) => tokio::select! {
                _ = tokio::time::sleep_until(at.into()) => {
                    if let Err(e) = tokio::task::spawn_blocking(step.clone()).await {
                        error!("{name}: a step failed: {e}");
                    }
                    continue;
                }
                changed = next.changed() => changed,
            },
            None => next.changed().await,
        };
        if changed.is_err() {
            return name;
        }
    }
}
