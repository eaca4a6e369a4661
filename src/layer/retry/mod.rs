//! Retries as a `tower::retry::Policy`: it asks a classifier ([`Classify`])
//! whether an error is transient, waits an exponentially growing, jittered
//! delay (tower's [`ExponentialBackoff`]), and draws on a shared retry budget
//! so that a failing dependency is not hammered. Permanent errors are never
//! retried.
//!
//! The layer knows no error types of its own: the classifier decides. The
//! crate's default (`stack::DefaultClassifier`) lives where the stacks are
//! composed. Chain calls are never re-sent blindly: the submit stack puts
//! the status guard under the retry, which checks the task's on-chain status
//! before every send, including re-sends.
//!
//! ```
//! use std::time::Duration;
//! use nsn_lane1::layer::retry::{Classify, ErrorClass, RetryPolicy};
//! use tower::retry::RetryLayer;
//!
//! #[derive(Clone)]
//! struct RetryResets;
//! impl Classify<std::io::Error> for RetryResets {
//!     fn classify(&self, e: &std::io::Error) -> ErrorClass {
//!         match e.kind() {
//!             std::io::ErrorKind::ConnectionReset => ErrorClass::Retryable,
//!             _ => ErrorClass::Permanent,
//!         }
//!     }
//! }
//! let policy = RetryPolicy::new(3, Duration::from_millis(50), Duration::from_secs(2), RetryResets);
//! let layer = RetryLayer::new(policy);
//! # let _ = layer;
//! ```

use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;

use tower::retry::Policy;
use tower::retry::backoff::{Backoff, ExponentialBackoff, ExponentialBackoffMaker, MakeBackoff};
use tower::retry::budget::{Budget, TpsBudget};
use tower::util::rng::HasherRng;

/// Whether an error is worth another try.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Transient: the same call may succeed later.
    Retryable,
    /// The same call would fail the same way.
    Permanent,
}

/// Decides whether an error of type `E` is transient.
pub trait Classify<E>: Clone {
    /// The error's class.
    fn classify(&self, error: &E) -> ErrorClass;
}

/// Delays that double from about `base` up to `max` (tower's exponential
/// backoff): the first is drawn from `[base/2, base)`, each next from a range
/// twice as far, never over `max`. The jitter spreads retries from many tasks
/// instead of sending them together.
pub fn backoff(base: Duration, max: Duration) -> ExponentialBackoff {
    let min = (base / 2).max(Duration::from_millis(1));
    let max = max.max(min);
    // `0 < min <= max` and a jitter ratio of 1 are valid, so the maker does
    // not refuse; were it to, its default is a safe fallback.
    let mut maker =
        ExponentialBackoffMaker::new(min, max, 1.0, HasherRng::default()).unwrap_or_default();
    maker.make_backoff()
}

/// Retries transient errors; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct RetryPolicy<C> {
    attempts_left: usize,
    backoff: ExponentialBackoff,
    budget: Arc<TpsBudget>,
    classifier: C,
}

impl<C> RetryPolicy<C> {
    /// At most `attempts` retries per request (0: none), the first after about
    /// `base`, then doubling up to `max`; a budget of 20 % extra load (and at
    /// least 10 retries a second) over a 10 s window is shared by all requests.
    pub fn new(attempts: usize, base: Duration, max: Duration, classifier: C) -> Self {
        RetryPolicy {
            attempts_left: attempts,
            backoff: backoff(base, max),
            budget: Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2)),
            classifier,
        }
    }
}

impl<C, Req, Res, E> Policy<Req, Res, E> for RetryPolicy<C>
where
    C: Classify<E>,
    Req: Clone,
    E: Display,
{
    type Future = tokio::time::Sleep;

    fn retry(&mut self, _req: &mut Req, result: &mut Result<Res, E>) -> Option<Self::Future> {
        match result {
            Ok(_) => {
                self.budget.deposit();
                None
            }
            Err(e) => {
                if self.attempts_left == 0 || self.classifier.classify(e) != ErrorClass::Retryable {
                    return None;
                }
                if !self.budget.withdraw() {
                    tracing::warn!("retry budget exhausted; not retrying");
                    return None;
                }
                self.attempts_left -= 1;
                tracing::debug!(error = %e, "retrying");
                Some(self.backoff.next_backoff())
            }
        }
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}
