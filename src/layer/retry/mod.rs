//! Retries as a `tower::retry::Policy`: it asks a [classifier](classify) whether
//! an error is transient, waits an exponentially growing, jittered delay, and
//! draws on a shared retry budget so that a failing dependency is not
//! hammered. Permanent errors are never retried.
//!
//! Chain calls are never re-sent blindly: the submit stack puts the
//! guarded submit service of the lifecycle under the retry, which checks
//! the task's on-chain status before every send, including re-sends.
//!
//! ```
//! use std::time::Duration;
//! use nsn_lane1::layer::retry::{RetryPolicy, classify::DefaultClassifier};
//! use tower::retry::RetryLayer;
//!
//! let policy = RetryPolicy::new(3, Duration::from_millis(50), Duration::from_secs(2), DefaultClassifier);
//! let layer = RetryLayer::new(policy);
//! # let _ = layer;
//! ```

use std::sync::Arc;
use std::time::Duration;

use tower::retry::Policy;
use tower::retry::budget::{Budget, TpsBudget};

use crate::sidecar::client::ErrorClass;

pub mod backoff;
pub mod classify;

use backoff::Backoff;
use classify::{AsError, Classify};

/// Retries transient errors; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct RetryPolicy<C> {
    attempts_left: usize,
    backoff: Backoff,
    budget: Arc<TpsBudget>,
    classifier: C,
}

impl<C> RetryPolicy<C> {
    /// At most `attempts` retries per request, the first after about `base`,
    /// then doubling up to `max`; a budget of 20 % extra load (and at least
    /// 10 retries a second) over a 10 s window is shared by all requests.
    pub fn new(attempts: usize, base: Duration, max: Duration, classifier: C) -> Self {
        RetryPolicy {
            attempts_left: attempts,
            backoff: Backoff::new(base, max),
            budget: Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2)),
            classifier,
        }
    }

    /// No retries at all (the executor's default).
    pub fn never(classifier: C) -> Self {
        RetryPolicy::new(0, Duration::ZERO, Duration::ZERO, classifier)
    }
}

impl<C, Req, Res, E> Policy<Req, Res, E> for RetryPolicy<C>
where
    C: Classify,
    Req: Clone,
    E: AsError,
{
    type Future = tokio::time::Sleep;

    fn retry(&mut self, _req: &mut Req, result: &mut Result<Res, E>) -> Option<Self::Future> {
        match result {
            Ok(_) => {
                self.budget.deposit();
                None
            }
            Err(e) => {
                if self.attempts_left == 0
                    || self.classifier.classify(e.as_error()) != ErrorClass::Retryable
                {
                    return None;
                }
                if !self.budget.withdraw() {
                    tracing::warn!("retry budget exhausted; not retrying");
                    return None;
                }
                self.attempts_left -= 1;
                let delay = self.backoff.next_delay();
                tracing::debug!(?delay, error = %e.as_error(), "retrying");
                Some(tokio::time::sleep(delay))
            }
        }
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}
