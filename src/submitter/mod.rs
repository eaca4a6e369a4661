//! Chain submission for one account: the [`StatusGuard`] service in front of
//! every `start_task`, `submit_result` and `fail_task`, and [`MarketCalls`],
//! the typed front of the submit stack.
//!
//! By concept: `guard.rs` decides whether a call may go (the task's state
//! at the finalized head, then the record) and sends it; `sent.rs` is the
//! record of sent calls and of the calls in best blocks not yet final;
//! `counted.rs` counts every call of the node and keeps the nonces it
//! signs; this file holds what a caller sees (`MarketCalls`, `Submitted`,
//! `SubmissionError`).
//!
//! The guard makes two promises. **Nothing is sent twice for one task**: it
//! keeps a record of the calls it has sent ([`SentCalls`]) — pooled, in a
//! best block, landed or refused — so a second `start_task`,
//! `submit_result` or `fail_task` for the same task waits for the first one's
//! outcome instead of being sent (a retry, a requeued task, a resumed run
//! all meet the record). **Nothing is sent that the chain no longer
//! allows**: before a first send it reads the task at the finalized head; a
//! call whose effect is already there answers [`Submitted::AlreadyApplied`]
//! without sending, and one the state no longer allows fails with
//! [`SubmissionError::Inapplicable`] — in particular `fail_task` for a task
//! that has a result (ours, on chain or on its way). A dispatch failure is
//! judged again at the block it happened in (a hook or another signer may
//! have moved the task meanwhile).
//!
//! Submission has two steps, as the chain has: the guard answers when the
//! pool has accepted the call, with a [`Pooled`] that resolves to what the
//! call achieved once it is in a block.
//!
//! ```
//! use nsn_lane1::chain::dev::{DevChain, DevConfig};
//! use nsn_lane1::submitter::{MarketCalls, StatusGuard};
//! use nsn_lane1::task::{AccountId, TaskId};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let chain = DevChain::new(DevConfig::default()).unwrap();
//! let guarded = StatusGuard::new(chain.submitter(AccountId::BOB), chain.clone(), AccountId::BOB);
//! let calls = MarketCalls::new(guarded);
//! // There is no task 9: the guard refuses before anything is sent.
//! let err = calls.start_task(TaskId(9)).await.unwrap_err();
//! assert!(err.to_string().contains("not found"));
//! # }
//! ```

use tower::{BoxError, Service, ServiceExt};

use crate::chain::{ChainError, Inclusion, MarketCall, MarketError, Pooled, SubmitError};
use crate::task::{Cid, FailReason, TaskId, TaskStatus};

mod counted;
mod guard;
mod sent;

pub use counted::CountedCalls;
pub use guard::{GuardedOutcome, StatusGuard, StatusGuardFuture};
pub(crate) use guard::{Precondition, guarded, precondition};
pub(crate) use sent::Pending;
pub use sent::SentCalls;

/// What a guarded submission achieved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Submitted {
    /// The call was included (in a best block) and dispatched.
    Included(Inclusion),
    /// The chain already shows the call's effect, or the same call sent
    /// before has landed; nothing was sent.
    AlreadyApplied {
        /// The task.
        task_id: TaskId,
        /// Its status on chain (as the call leaves it).
        status: TaskStatus,
    },
}

/// Why a submission failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubmissionError {
    /// The chain's state no longer allows the call (the task was failed,
    /// expired, has a result, …); nothing was sent.
    #[error("{call} for task {task_id} no longer applies: task is {}", status.map_or("not found".to_owned(), |s| format!("{s:?}")))]
    Inapplicable {
        /// The call.
        call: &'static str,
        /// The task.
        task_id: TaskId,
        /// Its status on chain (`None`: no such task).
        status: Option<TaskStatus>,
    },
    /// The task is not assigned to this executor.
    #[error("task {task_id} is not assigned to this executor")]
    NotOurs {
        /// The task.
        task_id: TaskId,
    },
    /// The same call was sent for this task before and did not take effect
    /// (the chain refused it in a block); it is not sent again.
    #[error("{call} for task {task_id} was sent once and refused ({error}); not sent again")]
    AlreadySent {
        /// The call.
        call: &'static str,
        /// The task.
        task_id: TaskId,
        /// The task-market error the first one met, if it was one.
        error: String,
        /// That error by variant, if it was a task-market error.
        market: Option<MarketError>,
    },
    /// The chain refused or failed the call.
    #[error(transparent)]
    Chain(#[from] SubmitError),
    /// The task's status could not be read.
    #[error("could not read the task's status: {0}")]
    Read(#[from] ChainError),
    /// Any other failure in the submit stack.
    #[error("submission failed: {0}")]
    Other(BoxError),
}

impl SubmissionError {
    /// The task-market error behind a dispatch failure (this call's, or the
    /// first one's for [`AlreadySent`](Self::AlreadySent)).
    pub fn market_error(&self) -> Option<MarketError> {
        match self {
            SubmissionError::Chain(e) => e.market_error(),
            SubmissionError::AlreadySent { market, .. } => *market,
            _ => None,
        }
    }

    /// Recovers the typed error from the submit stack's boxed one.
    pub fn from_box(e: BoxError) -> Self {
        let e = match e.downcast::<SubmissionError>() {
            Ok(e) => return *e,
            Err(e) => e,
        };
        let e = match e.downcast::<SubmitError>() {
            Ok(e) => return SubmissionError::Chain(*e),
            Err(e) => e,
        };
        match e.downcast::<ChainError>() {
            Ok(e) => SubmissionError::Read(*e),
            Err(e) => SubmissionError::Other(e),
        }
    }
}

/// The typed front of a submit stack: the calls an executor makes, each in
/// two steps (pooled, then in a block) or in one.
#[derive(Clone, Debug)]
pub struct MarketCalls<S> {
    stack: S,
}

impl<S> MarketCalls<S> {
    /// Submits through `stack`.
    pub fn new(stack: S) -> Self {
        MarketCalls { stack }
    }
}

/// A call the pool accepted, resolving to what it achieved in its block.
pub type PooledCall = Pooled<Result<Submitted, SubmissionError>>;

impl<S> MarketCalls<S>
where
    S: Service<MarketCall, Response = Pooled<GuardedOutcome>> + Clone,
    S::Error: Into<BoxError>,
{
    /// Sends `call` and answers once the pool has it.
    pub async fn send(&self, call: MarketCall) -> Result<PooledCall, SubmissionError> {
        let name = call.name();
        match self.stack.clone().oneshot(call).await {
            Ok(pooled) => Ok(pooled.map(move |r| {
                r.map_err(|e| {
                    let e = SubmissionError::from_box(e);
                    tracing::debug!(call = name, error = %e, "call failed in its block");
                    e
                })
            })),
            Err(e) => {
                let e = SubmissionError::from_box(e.into());
                tracing::debug!(call = name, error = %e, "submission failed");
                Err(e)
            }
        }
    }

    /// Sends `call` and waits until it is in a block.
    pub async fn send_included(&self, call: MarketCall) -> Result<Submitted, SubmissionError> {
        self.send(call).await?.await
    }

    /// `start_task(task_id)`, answered once the pool has it.
    pub async fn start_task_pooled(&self, task_id: TaskId) -> Result<PooledCall, SubmissionError> {
        self.send(MarketCall::StartTask { task_id }).await
    }

    /// `start_task(task_id)`, in a block.
    pub async fn start_task(&self, task_id: TaskId) -> Result<Submitted, SubmissionError> {
        self.send_included(MarketCall::StartTask { task_id }).await
    }

    /// `submit_result(task_id, output_cid, attestation_cid)`, in a block.
    pub async fn submit_result(
        &self,
        task_id: TaskId,
        output_cid: &Cid,
        attestation_cid: Option<&Cid>,
    ) -> Result<Submitted, SubmissionError> {
        self.send_included(MarketCall::SubmitResult {
            task_id,
            output_cid: output_cid.as_bytes().to_vec(),
            attestation_cid: attestation_cid.map(|c| c.as_bytes().to_vec()),
        })
        .await
    }

    /// `fail_task(task_id, reason)`, in a block.
    pub async fn fail_task(
        &self,
        task_id: TaskId,
        reason: FailReason,
    ) -> Result<Submitted, SubmissionError> {
        self.send_included(MarketCall::FailTask { task_id, reason })
            .await
    }

    /// `accept_assignment(task_id)`: asks the chain to pick an executor.
    pub async fn accept_assignment(&self, task_id: TaskId) -> Result<Submitted, SubmissionError> {
        self.send_included(MarketCall::AcceptAssignment { task_id })
            .await
    }
}
