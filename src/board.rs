//! Where each task is in this node, in one place: the states a task goes
//! through ([`ExecutorState`]), how it leaves ([`TaskOutcome`], with a typed
//! [`FailCause`] or [`UnresolvedCause`]), and the board that records them
//! ([`TaskBoard`]).
//!
//! A task moves by named transitions only:
//!
//! ```text
//!   queued ──► starting ──► executing ──► submitting ──► done(outcome)
//!     ▲            │             │
//!     └────────────┴─────────────┘  requeued (preempted, held, Lane 0 first)
//! ```
//!
//! The executor moves a task to `queued` and to `done`; the lifecycle moves
//! it through `starting`, `executing` and `submitting`. Anything may end a
//! task early with `done` (the chain failed it, it is not ours, the node
//! gave up). Nothing else writes to the board.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use crate::admission::{HoldCause, RefuseCause};
use crate::chain::BlockRef;
use crate::layer::preempt::PreemptReason;
use crate::listener::InvalidIntent;
use crate::scheduler::SchedulerError;
use crate::sidecar::client::Blame;
use crate::task::{Cid, FailReason, TaskId, TaskStatus};

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
        /// Why this node gave it.
        cause: FailCause,
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
        /// Why.
        cause: UnresolvedCause,
    },
}

/// Why this node failed a task on chain: the evidence behind the
/// [`FailReason`] it gave. Each variant names who is to blame.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FailCause {
    /// Admission refused it: the task's own fault.
    #[error("not admitted: {0}")]
    Refused(RefuseCause),
    /// The chain's record of the task cannot be run.
    #[error("assigned with invalid data: {0}")]
    Invalid(InvalidIntent),
    /// The run failed, and the evidence blames `blame` (the model, the
    /// task, its time).
    #[error("the run failed ({blame:?}): {message}")]
    Run {
        /// Whom the sidecar's answer blames.
        blame: Blame,
        /// The sidecar's words, for the operator (never read to decide).
        message: String,
    },
    /// The run outlived its time limit here (the timeout layer's timer).
    #[error("the run outlived its time limit")]
    TimeLimit,
    /// Held for a fault that was not the task's until its deadline, then
    /// given back (`DeadlineExceeded`, which does not slash).
    #[error("held to its deadline ({})", .0.as_ref().map_or("no cause".to_owned(), ToString::to_string))]
    HeldToDeadline(Option<HoldCause>),
    /// The scheduler could not take it (full, or the task is too large):
    /// given back rather than kept forever.
    #[error("the scheduler cannot take it: {0}")]
    Unschedulable(SchedulerError),
    /// Given back at shutdown, as configured (`fail_on_shutdown`).
    #[error("given back at shutdown ({0:?})")]
    Shutdown(PreemptReason),
}

/// Why the executor gave up on a task without resolving it on chain.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnresolvedCause {
    /// The node shut down with the task in hand; it stays assigned and the
    /// next start resumes it.
    #[error("left assigned at shutdown; the next start resumes it")]
    LeftAtShutdown,
    /// A chain call kept failing (the submission error, for the operator).
    #[error("a chain call kept failing: {0}")]
    CallFailed(String),
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

impl TaskOutcome {
    /// A short label for metrics (`submitted`, `failed`, …).
    pub fn label(&self) -> &'static str {
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

    fn set(&self, id: TaskId, state: ExecutorState) {
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

    /// The task waits in the scheduler (new, or back after a preemption or
    /// a hold).
    pub(crate) fn queued(&self, id: TaskId) {
        self.set(id, ExecutorState::Queued);
    }

    /// The task is checked at the chain and its `start_task` sent.
    pub(crate) fn starting(&self, id: TaskId) {
        self.set(id, ExecutorState::Starting);
    }

    /// The task runs on the sidecar.
    pub(crate) fn executing(&self, id: TaskId) {
        self.set(id, ExecutorState::Executing);
    }

    /// The task's result (or failure) goes to the chain.
    pub(crate) fn submitting(&self, id: TaskId) {
        self.set(id, ExecutorState::Submitting);
    }

    /// The task left the executor.
    pub(crate) fn done(&self, outcome: TaskOutcome) {
        self.set(outcome.task_id(), ExecutorState::Done(outcome));
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

/// The run attempts of the tasks this node has run: each new run of a task
/// goes out under the next attempt's run id. Clones share one record.
#[derive(Clone, Debug, Default)]
pub struct RunAttempts(Arc<Mutex<HashMap<TaskId, u32>>>);

impl RunAttempts {
    /// The attempt for the next run of `task` (0 the first time).
    pub fn begin(&self, task: TaskId) -> u32 {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match map.get_mut(&task) {
            Some(n) => {
                *n = n.saturating_add(1);
                *n
            }
            None => {
                map.insert(task, 0);
                0
            }
        }
    }

    /// The last attempt sent for `task`, if any.
    pub fn last(&self, task: TaskId) -> Option<u32> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&task)
            .copied()
    }

    /// Forgets `task` (its end is final).
    pub fn forget(&self, task: TaskId) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&task);
    }
}
