//! Which errors are worth another try.

use std::error::Error;

use tower::BoxError;

use crate::chain::{ChainError, InvalidTransaction, SubmitError};
use crate::layer::preempt::Preempted;
use crate::layer::timeout::Elapsed;
use crate::sidecar::client::{ErrorClass, ExecutionError};
use crate::submitter::SubmissionError;

/// Decides whether an error is transient.
pub trait Classify: Clone {
    /// The error's class.
    fn classify(&self, error: &(dyn Error + 'static)) -> ErrorClass;
}

/// The crate's classifier. It walks the error's source chain and asks the
/// first error it knows:
///
/// - [`ExecutionError`]: its own [`class`](ExecutionError::class) (sidecar
///   unavailable, overloaded, aborted, connection broken, our deadline →
///   retryable; model failures and everything else → permanent);
/// - [`SubmitError`]: connection failures, drops, a full pool and nonce races
///   (`Stale`, `PriorityTooLow`) are retryable; dispatch errors (the chain
///   ran the call and said no) and bad calls are permanent;
/// - [`Elapsed`] and [`Preempted`]: permanent (the task's time or turn is over).
///
/// Anything unknown is permanent: a retry must be earned.
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultClassifier;

impl Classify for DefaultClassifier {
    fn classify(&self, error: &(dyn Error + 'static)) -> ErrorClass {
        let mut cause = Some(error);
        while let Some(e) = cause {
            if let Some(e) = e.downcast_ref::<ExecutionError>() {
                return e.class();
            }
            if let Some(e) = e.downcast_ref::<SubmitError>() {
                return classify_submit(e);
            }
            if let Some(e) = e.downcast_ref::<SubmissionError>() {
                return match e {
                    SubmissionError::Chain(e) => classify_submit(e),
                    SubmissionError::Read(ChainError::Connection(_)) => ErrorClass::Retryable,
                    _ => ErrorClass::Permanent,
                };
            }
            if e.is::<Elapsed>() || e.is::<Preempted>() {
                return ErrorClass::Permanent;
            }
            cause = e.source();
        }
        ErrorClass::Permanent
    }
}

/// The class of a chain submission error.
pub fn classify_submit(e: &SubmitError) -> ErrorClass {
    match e {
        SubmitError::Connection(_) | SubmitError::Dropped { .. } => ErrorClass::Retryable,
        SubmitError::Invalid {
            reason:
                InvalidTransaction::Stale { .. }
                | InvalidTransaction::PriorityTooLow { .. }
                | InvalidTransaction::PoolFull,
            ..
        } => ErrorClass::Retryable,
        _ => ErrorClass::Permanent,
    }
}

/// Errors the retry policy can inspect.
pub trait AsError {
    /// The error as a `dyn Error`.
    fn as_error(&self) -> &(dyn Error + 'static);
}

impl AsError for BoxError {
    fn as_error(&self) -> &(dyn Error + 'static) {
        self.as_ref()
    }
}

impl AsError for ExecutionError {
    fn as_error(&self) -> &(dyn Error + 'static) {
        self
    }
}

impl AsError for SubmitError {
    fn as_error(&self) -> &(dyn Error + 'static) {
        self
    }
}
