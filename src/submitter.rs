//! Chain submission for one account: the [`StatusGuard`] service that checks a
//! task's on-chain status before every send (so a retry never re-sends a call
//! whose effect has landed), and [`MarketCalls`], the typed front of the
//! submit stack (`start_task`, `submit_result`, `fail_task`).
//!
//! ```
//! use nsn_lane1::chain::dev::{DevChain, DevConfig};
//! use nsn_lane1::submitter::{StatusGuard, MarketCalls};
//! use nsn_lane1::task::{AccountId, TaskId};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let chain = DevChain::new(DevConfig::default()).unwrap();
//! let guarded = StatusGuard::new(chain.submitter(AccountId::BOB), chain.clone(), AccountId::BOB);
//! let submitter = MarketCalls::new(guarded);
//! // There is no task 9: the guard refuses before anything is sent.
//! let err = submitter.start_task(TaskId(9)).await.unwrap_err();
//! assert!(err.to_string().contains("not found"));
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tower::{BoxError, Service, ServiceExt};

use crate::chain::{
    ChainError, ChainPort, Inclusion, MarketCall, MarketError, SubmitError, TaskIntent,
};
use crate::task::{AccountId, Cid, FailReason, TaskId, TaskStatus};

/// What a guarded submission achieved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Submitted {
    /// The call was included and dispatched.
    Included(Inclusion),
    /// The chain already shows the call's effect; nothing was sent.
    AlreadyApplied {
        /// The task.
        task_id: TaskId,
        /// Its status on chain.
        status: TaskStatus,
    },
}

/// Why a submission failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubmissionError {
    /// The chain's state no longer allows the call (the task was failed,
    /// expired, taken by another executor, …); nothing was sent.
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
    /// The task-market error behind a dispatch failure, if that is what this is.
    pub fn market_error(&self) -> Option<MarketError> {
        match self {
            SubmissionError::Chain(e) => e.market_error(),
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

/// What the guard decided.
enum Precondition {
    Send,
    Applied(TaskStatus),
    Refuse(Option<TaskStatus>),
    NotOurs,
}

fn precondition(call: &MarketCall, task: Option<&TaskIntent>, account: AccountId) -> Precondition {
    let Some(task) = task else {
        return Precondition::Refuse(None);
    };
    let ours = task.executor == Some(account);
    let status = task.status;
    match call {
        MarketCall::StartTask { .. } => match status {
            _ if !ours => Precondition::NotOurs,
            TaskStatus::Assigned => Precondition::Send,
            TaskStatus::Executing => Precondition::Applied(status),
            _ => Precondition::Refuse(Some(status)),
        },
        MarketCall::SubmitResult { output_cid, .. } => match status {
            _ if !ours => Precondition::NotOurs,
            TaskStatus::Assigned | TaskStatus::Executing => Precondition::Send,
            s if s.has_result() && task.output_cid.as_ref() == Some(output_cid) => {
                Precondition::Applied(s)
            }
            _ => Precondition::Refuse(Some(status)),
        },
        MarketCall::FailTask { .. } => match status {
            TaskStatus::Failed => Precondition::Applied(status),
            s if s.is_terminal() => Precondition::Refuse(Some(s)),
            _ => Precondition::Send,
        },
        _ => Precondition::Send,
    }
}

/// Checks the task's on-chain status (at the finalized head) before sending
/// `start_task`, `submit_result` or `fail_task`: a call whose effect is
/// already on chain answers [`Submitted::AlreadyApplied`] without sending,
/// and a call the chain's state no longer allows fails with
/// [`SubmissionError::Inapplicable`]. Other calls pass straight through.
#[derive(Clone, Debug)]
pub struct StatusGuard<S, P> {
    inner: S,
    port: P,
    account: AccountId,
}

impl<S, P> StatusGuard<S, P> {
    /// Guards `inner`, which signs as `account`, reading state from `port`.
    pub fn new(inner: S, port: P, account: AccountId) -> Self {
        StatusGuard {
            inner,
            port,
            account,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// The future of a [`StatusGuard`] submission.
pub type StatusGuardFuture = Pin<Box<dyn Future<Output = Result<Submitted, BoxError>> + Send>>;

impl<S, P> Service<MarketCall> for StatusGuard<S, P>
where
    S: Service<MarketCall, Response = Inclusion, Error = SubmitError> + Clone + Send + 'static,
    S::Future: Send,
    P: ChainPort,
{
    type Response = Submitted;
    type Error = BoxError;
    type Future = StatusGuardFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, call: MarketCall) -> Self::Future {
        let fresh = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, fresh);
        let port = self.port.clone();
        let account = self.account;
        Box::pin(async move {
            if let (
                Some(task_id),
                MarketCall::StartTask { .. }
                | MarketCall::SubmitResult { .. }
                | MarketCall::FailTask { .. },
            ) = (call.task_id(), &call)
            {
                let head = port.finalized_head().await?;
                let task = port.task(head.hash, task_id).await?;
                match precondition(&call, task.as_ref(), account) {
                    Precondition::Send => {}
                    Precondition::Applied(status) => {
                        tracing::debug!(%task_id, call = call.name(), ?status, "already on chain");
                        return Ok(Submitted::AlreadyApplied { task_id, status });
                    }
                    Precondition::Refuse(status) => {
                        return Err(SubmissionError::Inapplicable {
                            call: call.name(),
                            task_id,
                            status,
                        }
                        .into());
                    }
                    Precondition::NotOurs => {
                        return Err(SubmissionError::NotOurs { task_id }.into());
                    }
                }
            }
            // `ready` was polled ready by this service's `poll_ready`.
            let task_id = call.task_id();
            let name = call.name();
            match ready.call(call.clone()).await {
                Ok(inclusion) => Ok(Submitted::Included(inclusion)),
                Err(SubmitError::Dispatch {
                    error,
                    block,
                    call: c,
                }) => {
                    let Some(task_id) = task_id else {
                        return Err(SubmissionError::Chain(SubmitError::Dispatch {
                            call: c,
                            error,
                            block,
                        })
                        .into());
                    };
                    // The state may have changed between the check and the
                    // block (a hook, another signer): judge again at that block.
                    let task = port.task(block.hash, task_id).await?;
                    match precondition(&call, task.as_ref(), account) {
                        Precondition::Applied(status) => {
                            Ok(Submitted::AlreadyApplied { task_id, status })
                        }
                        Precondition::Refuse(status) => Err(SubmissionError::Inapplicable {
                            call: name,
                            task_id,
                            status,
                        }
                        .into()),
                        Precondition::NotOurs => Err(SubmissionError::NotOurs { task_id }.into()),
                        Precondition::Send => Err(SubmissionError::Chain(SubmitError::Dispatch {
                            call: c,
                            error,
                            block,
                        })
                        .into()),
                    }
                }
                Err(e) => Err(SubmissionError::Chain(e).into()),
            }
        })
    }
}

/// The typed front of a submit stack: the calls an executor makes.
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

impl<S> MarketCalls<S>
where
    S: Service<MarketCall, Response = Submitted> + Clone,
    S::Error: Into<BoxError>,
{
    async fn send(&self, call: MarketCall) -> Result<Submitted, SubmissionError> {
        let name = call.name();
        let result = self
            .stack
            .clone()
            .oneshot(call)
            .await
            .map_err(|e| SubmissionError::from_box(e.into()));
        if let Err(e) = &result {
            tracing::debug!(call = name, error = %e, "submission failed");
        }
        result
    }

    /// `start_task(task_id)`.
    pub async fn start_task(&self, task_id: TaskId) -> Result<Submitted, SubmissionError> {
        self.send(MarketCall::StartTask { task_id }).await
    }

    /// `submit_result(task_id, output_cid, attestation_cid)`.
    pub async fn submit_result(
        &self,
        task_id: TaskId,
        output_cid: &Cid,
        attestation_cid: Option<&Cid>,
    ) -> Result<Submitted, SubmissionError> {
        self.send(MarketCall::SubmitResult {
            task_id,
            output_cid: output_cid.as_bytes().to_vec(),
            attestation_cid: attestation_cid.map(|c| c.as_bytes().to_vec()),
        })
        .await
    }

    /// `fail_task(task_id, reason)`.
    pub async fn fail_task(
        &self,
        task_id: TaskId,
        reason: FailReason,
    ) -> Result<Submitted, SubmissionError> {
        self.send(MarketCall::FailTask { task_id, reason }).await
    }

    /// `accept_assignment(task_id)`: asks the chain to pick an executor.
    pub async fn accept_assignment(&self, task_id: TaskId) -> Result<Submitted, SubmissionError> {
        self.send(MarketCall::AcceptAssignment { task_id }).await
    }
}
