//! The per-task service: `start_task` → `ExecuteTask` → `submit_result`, or
//! `fail_task` with the right [`FailReason`].
//!
//! It is idempotent. Before anything, it reads the task at the finalized head
//! and runs it only if the task is assigned to this executor and still
//! `Assigned` or `Executing` (a restart resumes an `Executing` task without a
//! second `start_task`). Every chain call goes through the submit stack's
//! [`StatusGuard`](crate::submitter::StatusGuard) service, which checks the on-chain
//! status again before sending, so a result is never submitted twice and a
//! task the chain has already failed or expired is never failed again.
//!
//! Each task's progress is published on a [`TaskBoard`].

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use tokio::sync::watch;
use tower::{BoxError, Service, ServiceExt};
use tracing::Instrument;

use crate::chain::{BlockRef, ChainPort, MarketError};
use crate::layer::cause;
use crate::layer::metrics::Outcome;
use crate::layer::timeout::Elapsed;
use crate::sidecar::client::{ExecuteRequest, ExecutionResult, SidecarError};
use crate::submitter::{MarketCalls, SubmissionError, Submitted};
use crate::task::{AccountId, Cid, FailReason, Task, TaskId, TaskStatus};

/// Where a task is in this executor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecutorState {
    /// Waiting in the scheduler.
    Queued,
    /// Checking the chain and calling `start_task`.
    Starting,
    /// Running on the sidecar.
    Executing,
    /// Submitting its result (or its failure).
    Submitting,
    /// Finished here.
    Done(TaskOutcome),
}

/// How a task left the executor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskOutcome {
    /// The result is on chain.
    Submitted {
        /// The task.
        task_id: TaskId,
        /// The result's CID.
        output_cid: Cid,
        /// The block it was included in (`None` if it was already there).
        block: Option<BlockRef>,
    },
    /// The task was failed on chain with this reason.
    Failed {
        /// The task.
        task_id: TaskId,
        /// The reason given to the chain.
        reason: FailReason,
        /// What went wrong here.
        cause: String,
    },
    /// Nothing to do: the chain had already moved the task on (or it is gone).
    AlreadyResolved {
        /// The task.
        task_id: TaskId,
        /// Its status on chain (`None`: not found).
        status: Option<TaskStatus>,
    },
    /// The task is not assigned to this executor; it was not run.
    NotOurs {
        /// The task.
        task_id: TaskId,
    },
    /// The executor gave up on the task without resolving it on chain (it
    /// is still assigned there; a restart's reconciliation resumes it).
    Unresolved {
        /// The task.
        task_id: TaskId,
        /// What kept failing.
        cause: String,
    },
}

impl TaskOutcome {
    /// The task.
    pub fn task_id(&self) -> TaskId {
        match self {
            TaskOutcome::Submitted { task_id, .. }
            | TaskOutcome::Failed { task_id, .. }
            | TaskOutcome::AlreadyResolved { task_id, .. }
            | TaskOutcome::NotOurs { task_id }
            | TaskOutcome::Unresolved { task_id, .. } => *task_id,
        }
    }
}

impl Outcome for TaskOutcome {
    fn outcome(&self) -> &'static str {
        match self {
            TaskOutcome::Submitted { .. } => "submitted",
            TaskOutcome::Failed { .. } => "failed",
            TaskOutcome::AlreadyResolved { .. } => "already_resolved",
            TaskOutcome::NotOurs { .. } => "not_ours",
            TaskOutcome::Unresolved { .. } => "unresolved",
        }
    }
}

/// How many finished tasks a board remembers.
const DONE_KEPT: usize = 100_000;

#[derive(Debug, Default)]
struct Board {
    states: HashMap<TaskId, ExecutorState>,
    done: VecDeque<TaskId>,
}

/// The observable state of every task the executor holds. Clones share one
/// board.
#[derive(Clone, Debug)]
pub struct TaskBoard {
    board: Arc<Mutex<Board>>,
    changed: watch::Sender<u64>,
}

impl Default for TaskBoard {
    fn default() -> Self {
        TaskBoard {
            board: Arc::default(),
            changed: watch::channel(0).0,
        }
    }
}

impl TaskBoard {
    fn lock(&self) -> MutexGuard<'_, Board> {
        // Critical sections leave the map whole.
        self.board
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sets a task's state.
    pub fn set(&self, id: TaskId, state: ExecutorState) {
        let mut b = self.lock();
        if matches!(state, ExecutorState::Done(_)) {
            b.done.push_back(id);
            while b.done.len() > DONE_KEPT {
                if let Some(old) = b.done.pop_front()
                    && matches!(b.states.get(&old), Some(ExecutorState::Done(_)))
                {
                    b.states.remove(&old);
                }
            }
        }
        b.states.insert(id, state);
        drop(b);
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A task's state.
    pub fn get(&self, id: TaskId) -> Option<ExecutorState> {
        self.lock().states.get(&id).cloned()
    }

    /// Every task's state.
    pub fn snapshot(&self) -> HashMap<TaskId, ExecutorState> {
        self.lock().states.clone()
    }

    /// Waits until `pred` holds for the board (without polling: it wakes on
    /// every change).
    pub async fn wait_until(&self, mut pred: impl FnMut(&HashMap<TaskId, ExecutorState>) -> bool) {
        let mut rx = self.changed.subscribe();
        loop {
            if pred(&self.lock().states) {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Waits until the task is done, and returns how.
    pub async fn wait_done(&self, id: TaskId) -> TaskOutcome {
        let mut rx = self.changed.subscribe();
        loop {
            if let Some(ExecutorState::Done(outcome)) = self.get(id) {
                return outcome;
            }
            // The sender lives in `self`, so this only fails if it was dropped.
            let _ = rx.changed().await;
        }
    }
}

/// Why the lifecycle could not finish a task.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LifecycleError {
    /// `start_task` was refused because Lane 0 tasks are open; the task is
    /// still assigned and should wait.
    #[error("task {task_id} must wait: lane 0 tasks are open")]
    Lane0Priority {
        /// The task.
        task_id: TaskId,
    },
    /// A chain call failed, so the task could not be resolved on chain.
    #[error("task {task_id}: {source}")]
    Submission {
        /// The task.
        task_id: TaskId,
        /// What failed.
        #[source]
        source: SubmissionError,
    },
}

/// The reason to give the chain for an execution failure.
pub fn fail_reason(error: &BoxError) -> FailReason {
    if cause::<Elapsed>(error.as_ref()).is_some()
        || matches!(
            cause::<SidecarError>(error.as_ref()),
            Some(SidecarError::TimedOut { .. })
        )
    {
        FailReason::DeadlineExceeded
    } else {
        FailReason::ExecutorFailed
    }
}

/// The per-task service; see the [module docs](self).
#[derive(Debug)]
pub struct Lifecycle<E, C, P> {
    execute: E,
    submitter: MarketCalls<C>,
    port: P,
    account: AccountId,
    board: TaskBoard,
}

impl<E: Clone, C: Clone, P: Clone> Clone for Lifecycle<E, C, P> {
    fn clone(&self) -> Self {
        Lifecycle {
            execute: self.execute.clone(),
            submitter: self.submitter.clone(),
            port: self.port.clone(),
            account: self.account,
            board: self.board.clone(),
        }
    }
}

impl<E, C, P> Lifecycle<E, C, P> {
    /// A lifecycle that executes through `execute`, submits through
    /// `submit` (signing as `account`), reads state from `port`, and
    /// publishes task states on `board`.
    pub fn new(execute: E, submit: C, port: P, account: AccountId, board: TaskBoard) -> Self {
        Lifecycle {
            execute,
            submitter: MarketCalls::new(submit),
            port,
            account,
            board,
        }
    }
}

/// The future of a [`Lifecycle`] call.
pub type LifecycleFuture = Pin<Box<dyn Future<Output = Result<TaskOutcome, BoxError>> + Send>>;

impl<E, C, P> Service<Task> for Lifecycle<E, C, P>
where
    E: Service<ExecuteRequest, Response = ExecutionResult> + Clone + Send + 'static,
    E::Error: Into<BoxError>,
    E::Future: Send,
    C: Service<crate::chain::MarketCall, Response = Submitted> + Clone + Send + Sync + 'static,
    C::Error: Into<BoxError>,
    C::Future: Send,
    P: ChainPort,
{
    type Response = TaskOutcome;
    type Error = BoxError;
    type Future = LifecycleFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The sidecar's readiness is the stack's backpressure.
        self.execute.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, task: Task) -> Self::Future {
        let fresh = self.execute.clone();
        let execute = std::mem::replace(&mut self.execute, fresh);
        let submitter = self.submitter.clone();
        let port = self.port.clone();
        let account = self.account;
        let board = self.board.clone();
        let span = tracing::info_span!("task", task_id = %task.id, model = %task.model);
        Box::pin(run(task, execute, submitter, port, account, board).instrument(span))
    }
}

async fn run<E, C, P>(
    task: Task,
    mut execute: E,
    submitter: MarketCalls<C>,
    port: P,
    account: AccountId,
    board: TaskBoard,
) -> Result<TaskOutcome, BoxError>
where
    E: Service<ExecuteRequest, Response = ExecutionResult>,
    E::Error: Into<BoxError>,
    C: Service<crate::chain::MarketCall, Response = Submitted> + Clone,
    C::Error: Into<BoxError>,
    P: ChainPort,
{
    let task_id = task.id;
    board.set(task_id, ExecutorState::Starting);

    // The chain is the truth: is the task ours, and still to do?
    let head = port.finalized_head().await?;
    let Some(on_chain) = port.task(head.hash, task_id).await? else {
        return Ok(TaskOutcome::AlreadyResolved {
            task_id,
            status: None,
        });
    };
    if on_chain.executor != Some(account) {
        tracing::warn!(%task_id, "task is not assigned to us; not running it");
        return Ok(TaskOutcome::NotOurs { task_id });
    }
    match on_chain.status {
        TaskStatus::Assigned => match submitter.start_task(task_id).await {
            Ok(_) => {}
            Err(e) if e.market_error() == Some(MarketError::Lane0Priority) => {
                return Err(LifecycleError::Lane0Priority { task_id }.into());
            }
            Err(SubmissionError::Inapplicable { status, .. }) => {
                return Ok(TaskOutcome::AlreadyResolved { task_id, status });
            }
            Err(source) => return Err(LifecycleError::Submission { task_id, source }.into()),
        },
        // Resuming after a restart: it was started already.
        TaskStatus::Executing => {}
        status => {
            return Ok(TaskOutcome::AlreadyResolved {
                task_id,
                status: Some(status),
            });
        }
    }

    board.set(task_id, ExecutorState::Executing);
    let request = ExecuteRequest::for_task(&task, None);
    let ready: Result<&mut E, BoxError> = execute.ready().await.map_err(Into::into);
    let result = match ready {
        Ok(svc) => svc.call(request).await.map_err(Into::into),
        Err(e) => Err(e),
    };

    board.set(task_id, ExecutorState::Submitting);
    match result {
        Ok(output) => {
            match submitter
                .submit_result(task_id, &output.output_cid, None)
                .await
            {
                Ok(Submitted::Included(inc)) => Ok(TaskOutcome::Submitted {
                    task_id,
                    output_cid: output.output_cid,
                    block: Some(inc.block),
                }),
                Ok(Submitted::AlreadyApplied { .. }) => Ok(TaskOutcome::Submitted {
                    task_id,
                    output_cid: output.output_cid,
                    block: None,
                }),
                Err(SubmissionError::Inapplicable { status, .. }) => {
                    Ok(TaskOutcome::AlreadyResolved { task_id, status })
                }
                Err(source) => Err(LifecycleError::Submission { task_id, source }.into()),
            }
        }
        Err(error) => {
            let reason = fail_reason(&error);
            tracing::warn!(%task_id, %error, ?reason, "execution failed");
            match submitter.fail_task(task_id, reason).await {
                Ok(_) => Ok(TaskOutcome::Failed {
                    task_id,
                    reason,
                    cause: error.to_string(),
                }),
                Err(SubmissionError::Inapplicable { status, .. }) => {
                    Ok(TaskOutcome::AlreadyResolved { task_id, status })
                }
                Err(source) => Err(LifecycleError::Submission { task_id, source }.into()),
            }
        }
    }
}
