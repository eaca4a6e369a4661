//! The stake breaker: a bound on what slashing verdicts can cost.
//!
//! The node signs `fail_task(ExecutorFailed)` — which slashes it — only on
//! the sidecar's positive verdict that the model failed on a valid input.
//! A broken model, or a sidecar that says so wrongly, would still drain the
//! stake one task at a time. The breaker opens after
//! [`BreakerPolicy::consecutive`] such verdicts in a row, or once the
//! amount they cost within an hour reaches [`BreakerPolicy::hourly_limit`].
//! While it is open the node admits no new work, reports not ready, and
//! holds failures instead of signing them; a run of the model that
//! succeeds closes it, and so does a restart (the operator's decision).
//!
//! ```
//! use nsn_lane1::breaker::{BreakerPolicy, StakeBreaker};
//!
//! let breaker = StakeBreaker::new(BreakerPolicy { consecutive: 2, ..BreakerPolicy::default() });
//! assert!(breaker.permit_slash());
//! assert!(breaker.permit_slash()); // the second is signed, then it opens
//! assert!(breaker.is_open());
//! assert!(!breaker.permit_slash());
//! breaker.record_success();
//! assert!(!breaker.is_open());
//! ```

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::task::{Balance, UNIT};

/// When the breaker opens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Slashing verdicts in a row (no successful run between them) that
    /// open it. 0 turns this bound off.
    pub consecutive: u32,
    /// The most the node's own slashing calls may cost within an hour.
    pub hourly_limit: Balance,
    /// What one slashing call costs (the pallet's `TaskAbandonmentSlash`).
    pub slash: Balance,
}

impl Default for BreakerPolicy {
    /// 3 in a row, at most 15 UNIT an hour, 5 UNIT a slash (the NSN
    /// runtime's slash).
    fn default() -> Self {
        BreakerPolicy {
            consecutive: 3,
            hourly_limit: 15 * UNIT,
            slash: 5 * UNIT,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    in_a_row: u32,
    /// When each slashing call of the last hour was permitted.
    recent: VecDeque<Instant>,
}

/// The breaker; clones share one.
#[derive(Clone, Debug)]
pub struct StakeBreaker {
    policy: Arc<BreakerPolicy>,
    state: Arc<Mutex<State>>,
    open: watch::Sender<bool>,
}

const HOUR: Duration = Duration::from_secs(3600);

impl StakeBreaker {
    /// A closed breaker.
    pub fn new(policy: BreakerPolicy) -> Self {
        StakeBreaker {
            policy: Arc::new(policy),
            state: Arc::default(),
            open: watch::channel(false).0,
        }
    }

    /// Its policy.
    pub fn policy(&self) -> &BreakerPolicy {
        &self.policy
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state whole.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// True while it is open.
    pub fn is_open(&self) -> bool {
        *self.open.borrow()
    }

    /// Asks to sign one slashing call. `false`: the breaker is open (or
    /// this call would pass the hourly limit, which opens it) — hold the
    /// failure instead. `true`: sign it; the breaker opens once this call
    /// reaches a bound.
    pub fn permit_slash(&self) -> bool {
        if self.is_open() {
            return false;
        }
        let mut state = self.lock();
        let now = Instant::now();
        while state
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= HOUR)
        {
            state.recent.pop_front();
        }
        let slash = self.policy.slash;
        let spent = slash.saturating_mul(state.recent.len() as Balance);
        if spent.saturating_add(slash) > self.policy.hourly_limit {
            drop(state);
            self.trip("the hourly limit of slashing calls is reached");
            return false;
        }
        state.recent.push_back(now);
        state.in_a_row = state.in_a_row.saturating_add(1);
        let in_a_row = state.in_a_row;
        let next_passes = spent.saturating_add(slash.saturating_mul(2)) > self.policy.hourly_limit;
        drop(state);
        if self.policy.consecutive > 0 && in_a_row >= self.policy.consecutive {
            self.trip("slashing verdicts in a row");
        } else if next_passes {
            self.trip("the hourly limit of slashing calls is reached");
        }
        true
    }

    /// A run of the model succeeded: the count in a row starts again and
    /// an open breaker closes.
    pub fn record_success(&self) {
        self.lock().in_a_row = 0;
        let closed = self
            .open
            .send_if_modified(|open| std::mem::replace(open, false));
        if closed {
            tracing::warn!("stake breaker closed: a run of the model succeeded");
        }
    }

    fn trip(&self, why: &str) {
        if self
            .open
            .send_if_modified(|open| !std::mem::replace(open, true))
        {
            tracing::error!(
                why,
                "stake breaker open: no new work is admitted and failures are held, not signed, until a run succeeds or the node is restarted"
            );
        }
    }

    /// Waits until the breaker's state changes.
    pub async fn changed(&self) {
        let mut rx = self.open.subscribe();
        let _ = rx.changed().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_k_in_a_row_and_closes_on_success() {
        let b = StakeBreaker::new(BreakerPolicy {
            consecutive: 3,
            hourly_limit: 1000 * UNIT,
            slash: 5 * UNIT,
        });
        assert!(b.permit_slash());
        b.record_success();
        assert!(b.permit_slash());
        assert!(b.permit_slash());
        assert!(!b.is_open());
        assert!(b.permit_slash());
        assert!(b.is_open());
        assert!(!b.permit_slash(), "no 4th slashing call while open");
        b.record_success();
        assert!(!b.is_open());
        assert!(b.permit_slash());
    }

    #[tokio::test(start_paused = true)]
    async fn bounds_the_amount_within_an_hour() {
        let b = StakeBreaker::new(BreakerPolicy {
            consecutive: 0,
            hourly_limit: 10 * UNIT,
            slash: 5 * UNIT,
        });
        assert!(b.permit_slash());
        b.record_success();
        assert!(b.permit_slash());
        assert!(b.is_open(), "a third would pass 10 UNIT");
        b.record_success();
        assert!(!b.permit_slash(), "still two within the hour");
        tokio::time::advance(HOUR).await;
        b.record_success();
        assert!(b.permit_slash(), "the hour has passed");
    }
}
