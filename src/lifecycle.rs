// Over ~600 lines: one task's stages (start, run, submit) and the failure
// attribution that joins them are read top to bottom; split apart, each
// stage would lose sight of the rules that end it.
//! The life of one task, as stages that overlap across tasks:
//!
//! - **start**: the task is read at the finalized head (is it ours, still
//!   to do?) and `start_task` is sent; the model run begins as soon as the
//!   pool has accepted it — it does not wait for the block (optimistic
//!   start). If the chain then refuses the start (`Lane0Priority`, the task
//!   taken away or failed), the run is cancelled and nothing is submitted. A
//!   task resumed after a restart (`Executing` already) skips this stage.
//! - **execute**: the only stage that holds a sidecar slot — the execute
//!   stack's concurrency limit is acquired just before the run and released
//!   when it ends.
//! - **submit**: `submit_result` once the output exists and the start is in
//!   a block (or `fail_task` with the reason that is true); the sidecar slot
//!   is already free for the next task.
//!
//! [`Lifecycle`] is a `tower::Service<Task>` whose readiness is an
//! admission gate: at most `max_concurrent + prestart` tasks are in the
//! start and execute stages at once, so while the sidecar is busy the next
//! tasks are started ahead and a run begins the moment a slot frees. Tasks
//! in the submit stage do not count: the chain's waits never hold the GPU.
//!
//! Every chain call goes through the submit stack's
//! [`StatusGuard`](crate::submitter::StatusGuard): nothing is sent twice for
//! a task, nothing the chain no longer allows. A preempted run is never
//! failed here: the error goes back to the executor, which requeues the task.
//!
//! Each task's progress is published on a [`TaskBoard`].

use std::collections::BTreeMap;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::PollSemaphore;
use tower::{BoxError, Service, ServiceExt};
use tracing::Instrument;

use crate::admission::{Admission, HoldCause, Verdict};
pub use crate::board::{
    ExecutorState, FailCause, RunAttempts, TaskBoard, TaskOutcome, UnresolvedCause,
};
use crate::chain::{ChainPort, MarketCall, MarketError};
use crate::layer::cause;
use crate::layer::preempt::{PreemptReason, Preemptor};
use crate::layer::timeout::Elapsed;
use crate::sidecar::client::{Blame, ExecuteRequest, ExecutionResult, Parameters, SidecarError};
use crate::submitter::{GuardedOutcome, MarketCalls, PooledCall, SubmissionError, Submitted};
use crate::task::{AccountId, FailReason, ModelId, Task, TaskId, TaskStatus};

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
    /// The task could not run now, for no fault of its own; it is still
    /// ours and waits (see [`HoldCause`]).
    #[error("task {task_id} held: {cause}")]
    Held {
        /// The task.
        task_id: TaskId,
        /// Why.
        cause: HoldCause,
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

/// What an execution failure is, and what to tell the chain about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attribution {
    /// Tell the chain: the task failed for this (`ExecutorFailed` only on
    /// the sidecar's positive verdict that the model failed).
    Fail(FailReason),
    /// Run the task again at once, under a new run id: nothing was wrong
    /// with it.
    Rerun(Rerun),
    /// Tell the chain nothing: the task waits and is tried again while its
    /// deadline allows.
    Hold(HoldCause),
}

/// Why a run is tried again at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rerun {
    /// Another party cancelled the run: the node did not ask for it.
    ForeignCancel,
    /// The sidecar knows the run id already and will not answer this
    /// request under it.
    RunIdTaken,
}

/// The failure-attribution table: which reason a failure gives the chain.
///
/// | failure | attribution |
/// |---|---|
/// | the sidecar's verdict: the model failed on a valid input ([`Blame::Model`]) | `ExecutorFailed` |
/// | the task's input, parameters, or a model nobody serves ([`Blame::Task`]: verdict, or words such as NSN's `Invalid request: …`, `Plugin not found`) | `InvalidInput` |
/// | the task's time limit passed (`Elapsed`, `TimedOut`, [`Blame::Time`]) | `DeadlineExceeded` |
/// | a cancel the node did not ask for (`Cancelled`) | run again at once under a new run id |
/// | a run id the sidecar knows already (`RunIdTaken`) | run again at once under a new run id |
/// | the node's set-up ([`Blame::Setup`]: runner not configured, policy, VRAM, containers) or words the node does not know ([`Blame::Unknown`]) | hold this task on a backoff, node not ready; others go on |
/// | the sidecar unreachable, a transport error, no answer, an unconfirmed cancel — anything else | hold the node's intake until it answers |
///
/// Every hold ends, if it must, at the task's deadline with
/// `DeadlineExceeded`, which does not slash. The stake breaker may turn
/// `ExecutorFailed` into a hold as well ([`crate::breaker`]).
pub fn attribute(error: &BoxError) -> Attribution {
    if cause::<Elapsed>(error.as_ref()).is_some() {
        return Attribution::Fail(FailReason::DeadlineExceeded);
    }
    let Some(e) = cause::<SidecarError>(error.as_ref()) else {
        return Attribution::Hold(HoldCause::SidecarUnreachable);
    };
    match e {
        SidecarError::TimedOut { .. } => Attribution::Fail(FailReason::DeadlineExceeded),
        SidecarError::Cancelled { .. } => Attribution::Rerun(Rerun::ForeignCancel),
        SidecarError::RunIdTaken { .. } => Attribution::Rerun(Rerun::RunIdTaken),
        e => match e.blame() {
            Some(Blame::Model) => Attribution::Fail(FailReason::ExecutorFailed),
            Some(Blame::Task) => Attribution::Fail(FailReason::InvalidInput),
            Some(Blame::Time) => Attribution::Fail(FailReason::DeadlineExceeded),
            Some(blame) => Attribution::Hold(HoldCause::Setup(blame)),
            None => Attribution::Hold(HoldCause::SidecarUnreachable),
        },
    }
}

/// How many times one lifecycle runs a task again at once (foreign
/// cancels, spent run ids) before it holds the task instead.
const MAX_RERUNS: u32 = 8;

/// The per-task service; see the [module docs](self).
pub struct Lifecycle<E, C, P> {
    execute: E,
    calls: MarketCalls<C>,
    port: P,
    account: AccountId,
    board: TaskBoard,
    preemptor: Preemptor,
    parameters: Arc<BTreeMap<ModelId, Parameters>>,
    admission: Admission,
    attempts: RunAttempts,
    foreign_cancels: crate::telemetry::metrics::Counter,
    gate: PollSemaphore,
    admitted: Option<OwnedSemaphorePermit>,
    /// Waits for the sidecar to answer again, while it does not.
    recovering: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl<E, C, P> std::fmt::Debug for Lifecycle<E, C, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lifecycle")
            .field("account", &self.account)
            .field("places", &self.gate.available_permits())
            .field("healthy", &self.admission.healthy())
            .finish()
    }
}

impl<E: Clone, C: Clone, P: Clone> Clone for Lifecycle<E, C, P> {
    /// A clone shares the gate, but not a place reserved by `poll_ready`.
    fn clone(&self) -> Self {
        Lifecycle {
            execute: self.execute.clone(),
            calls: self.calls.clone(),
            port: self.port.clone(),
            account: self.account,
            board: self.board.clone(),
            preemptor: self.preemptor.clone(),
            parameters: self.parameters.clone(),
            admission: self.admission.clone(),
            attempts: self.attempts.clone(),
            foreign_cancels: self.foreign_cancels.clone(),
            gate: self.gate.clone(),
            admitted: None,
            recovering: None,
        }
    }
}

/// What a [`Lifecycle`] is made of besides its services.
#[derive(Clone, Debug)]
pub struct LifecycleParts<P> {
    /// Chain reads.
    pub port: P,
    /// Our account.
    pub account: AccountId,
    /// Most tasks in the start and execute stages at once
    /// (`max_concurrent + prestart`).
    pub admit: usize,
    /// Parameters sent with every run of a model.
    pub parameters: BTreeMap<ModelId, Parameters>,
    /// What the node's parts share; its preemptor is the one the execute
    /// stack's preempt layer listens to.
    pub handles: crate::handles::Handles,
}

impl<E, C, P> Lifecycle<E, C, P> {
    /// A lifecycle that runs models through the `execute` stack, sends calls
    /// through the `submit` stack, and admits `parts.admit` tasks at once.
    pub fn new(execute: E, submit: C, parts: LifecycleParts<P>) -> Self {
        Lifecycle {
            execute,
            calls: MarketCalls::new(submit),
            port: parts.port,
            account: parts.account,
            foreign_cancels: parts.handles.metrics.foreign_cancels.with(&[]),
            board: parts.handles.board,
            preemptor: parts.handles.preemptor,
            parameters: Arc::new(parts.parameters),
            admission: parts.handles.admission,
            attempts: parts.handles.attempts,
            recovering: None,
            gate: PollSemaphore::new(std::sync::Arc::new(Semaphore::new(parts.admit.max(1)))),
            admitted: None,
        }
    }

    /// Places left at the gate.
    pub fn available(&self) -> usize {
        self.gate.available_permits()
    }
}

/// The future of a [`Lifecycle`] call.
pub type LifecycleFuture = Pin<Box<dyn Future<Output = Result<TaskOutcome, BoxError>> + Send>>;

impl<E, C, P> Service<Task> for Lifecycle<E, C, P>
where
    E: Service<ExecuteRequest, Response = ExecutionResult> + Clone + Send + 'static,
    E::Error: Into<BoxError>,
    E::Future: Send,
    C: Service<MarketCall, Response = crate::chain::Pooled<GuardedOutcome>>
        + Clone
        + Send
        + Sync
        + 'static,
    C::Error: Into<BoxError>,
    C::Future: Send,
    P: ChainPort,
{
    type Response = TaskOutcome;
    type Error = BoxError;
    type Future = LifecycleFuture;

    /// Ready when the sidecar answers and the gate admits another task (the
    /// execute stack's own readiness is awaited inside, just before the run).
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if !self.admission.healthy() {
            let admission = self.admission.clone();
            let recovering = self
                .recovering
                .get_or_insert_with(|| Box::pin(async move { admission.wait_healthy().await }));
            ready!(recovering.as_mut().poll(cx));
        }
        self.recovering = None;
        if self.admitted.is_none() {
            let permit = ready!(self.gate.poll_acquire(cx));
            // The gate's semaphore is never closed.
            self.admitted = permit;
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, task: Task) -> Self::Future {
        let admitted = self.admitted.take();
        let execute = self.execute.clone();
        let parameters = self
            .parameters
            .get(&task.model)
            .cloned()
            .unwrap_or_default();
        let stage = Stages {
            admission: self.admission.clone(),
            calls: self.calls.clone(),
            port: self.port.clone(),
            account: self.account,
            board: self.board.clone(),
            preemptor: self.preemptor.clone(),
            attempts: self.attempts.clone(),
            foreign_cancels: self.foreign_cancels.clone(),
        };
        let span = tracing::info_span!("task", task_id = %task.id, model = %task.model);
        let attempts = self.attempts.clone();
        let task_id = task.id;
        Box::pin(
            async move {
                let result = stage.run(task, parameters, execute, admitted).await;
                if result.is_ok() {
                    // Ended here: no run of it follows.
                    attempts.forget(task_id);
                }
                result
            }
            .instrument(span),
        )
    }
}

/// One task's way through the stages.
struct Stages<C, P> {
    admission: Admission,
    calls: MarketCalls<C>,
    port: P,
    account: AccountId,
    board: TaskBoard,
    preemptor: Preemptor,
    attempts: RunAttempts,
    foreign_cancels: crate::telemetry::metrics::Counter,
}

/// How the start stage ended.
enum Start {
    /// `start_task` is in the pool; its block is still to come.
    Pooled(PooledCall),
    /// No `start_task` to wait for: the task was started already (resumed,
    /// or our earlier start landed).
    Started,
    /// Our one `start_task` for this task was refused by the chain before
    /// because Lane 0 work was open; the task is still assigned, and
    /// `submit_result` is allowed from `Assigned`: the run goes on without a
    /// second start.
    RefusedBefore,
}

impl<C, P> Stages<C, P>
where
    C: Service<MarketCall, Response = crate::chain::Pooled<GuardedOutcome>> + Clone,
    C::Error: Into<BoxError>,
    P: ChainPort,
{
    async fn run<E>(
        self,
        task: Task,
        parameters: Parameters,
        mut execute: E,
        admitted: Option<OwnedSemaphorePermit>,
    ) -> Result<TaskOutcome, BoxError>
    where
        E: Service<ExecuteRequest, Response = ExecutionResult>,
        E::Error: Into<BoxError>,
    {
        let task_id = task.id;
        self.board.starting(task_id);
        let start = match self.start(&task).await? {
            Ok(start) => start,
            Err(outcome) => return Ok(outcome),
        };

        // The run begins while the start is on its way into a block.
        self.board.executing(task_id);
        tracing::info!(%task_id, model = %task.model, "executing");
        let mut request = ExecuteRequest::for_task(&task, None);
        request.parameters = parameters;
        let attempts = self.attempts.clone();
        let foreign_cancels = self.foreign_cancels.clone();
        let run = async move {
            // Each run goes out under a run id of its own; one that another
            // party cancelled, or whose id the sidecar knows already, runs
            // again at once under the next.
            let mut reruns = 0;
            loop {
                request.attempt = attempts.begin(task_id);
                let svc = execute.ready().await.map_err(Into::into)?;
                let result: Result<ExecutionResult, BoxError> =
                    svc.call(request.clone()).await.map_err(Into::into);
                let Err(error) = &result else {
                    break result;
                };
                let Attribution::Rerun(why) = attribute(error) else {
                    break result;
                };
                if reruns >= MAX_RERUNS {
                    break result;
                }
                reruns += 1;
                let run = request.run();
                match why {
                    Rerun::ForeignCancel => {
                        foreign_cancels.inc();
                        tracing::warn!(%task_id, %run, %error, "a cancel the node did not ask for stopped the run; running it again");
                    }
                    Rerun::RunIdTaken => {
                        tracing::info!(%task_id, %run, %error, "run id spent at the sidecar; running under the next");
                    }
                }
            }
        };
        tokio::pin!(run);
        let mut start = match start {
            Start::Pooled(pooled) => Some(pooled.into_future()),
            Start::Started | Start::RefusedBefore => None,
        };
        let mut refused: Option<SubmissionError> = None;
        let result: Result<ExecutionResult, BoxError> = loop {
            tokio::select! {
                biased;
                included = async { start.as_mut().expect("pending start").await }, if start.is_some() => {
                    start = None;
                    if included.is_ok() {
                        tracing::info!(%task_id, "started on chain");
                    }
                    if let Err(e) = included {
                        tracing::info!(%task_id, error = %e, "start refused; cancelling the run");
                        self.preemptor.preempt(task_id, PreemptReason::StartRefused);
                        refused = Some(e);
                    }
                }
                result = &mut run => break result,
            }
        };
        // The run is over: its sidecar slot is free, and so is its place at
        // the gate — the submit stage holds neither.
        drop(admitted);
        let result = match result {
            // Preempted: back to the executor now. A start still on its way
            // stays on the guard's record; the re-run waits for it there.
            Err(error) if refused.is_none() && is_preempted(&error) => return Err(error),
            result => result,
        };
        if refused.is_none()
            && let Some(pending) = start
        {
            // The model finished first: the result waits for the start.
            match pending.await {
                Ok(_) => tracing::info!(%task_id, "started on chain"),
                Err(e) => refused = Some(e),
            }
        }
        if let Some(e) = refused {
            return start_refused(task_id, e);
        }

        self.board.submitting(task_id);
        match result {
            Ok(output) => {
                self.admission.breaker().record_success();
                tracing::info!(
                    %task_id,
                    output_cid = %output.output_cid,
                    run_ms = output.execution_time.as_millis() as u64,
                    "output ready; submitting"
                );
                self.submit(task_id, output).await
            }
            // Never failed on chain from here: the executor requeues it.
            Err(error) if is_preempted(&error) => Err(error),
            Err(error) => self.fail(task_id, error).await,
        }
    }

    /// The start stage: the chain's word on the task, then `start_task` in
    /// the pool. `Err` is an outcome that ends the task here.
    async fn start(&self, task: &Task) -> Result<Result<Start, TaskOutcome>, BoxError> {
        let task_id = task.id;
        // The chain is the truth: is the task ours, and still to do?
        let head = self.port.finalized_head().await?;
        let Some(on_chain) = self.port.task(head.hash, task_id).await? else {
            return Ok(Err(TaskOutcome::AlreadyResolved {
                task_id,
                status: None,
            }));
        };
        if on_chain.executor != Some(self.account) {
            tracing::warn!(%task_id, "task is not assigned to us; not running it");
            return Ok(Err(TaskOutcome::NotOurs { task_id }));
        }
        // Calls of ours may be in blocks that are not final yet (sent before
        // a restart, whose record is gone): what the best block already
        // holds is not sent again.
        let mut on_chain = on_chain;
        if matches!(
            on_chain.status,
            TaskStatus::Assigned | TaskStatus::Executing
        ) {
            let best = self.port.best_head().await?;
            if best.hash != head.hash
                && let Some(ahead) = self.port.task(best.hash, task_id).await?
                && ahead.executor == Some(self.account)
                && ahead.status != on_chain.status
            {
                match ahead.status {
                    TaskStatus::Executing => {
                        tracing::info!(%task_id, "started in a block not yet final");
                        on_chain = ahead;
                    }
                    TaskStatus::Assigned => {}
                    status => {
                        tracing::info!(%task_id, ?status, "already moved on in a block not yet final");
                        return Ok(Err(TaskOutcome::AlreadyResolved {
                            task_id,
                            status: Some(status),
                        }));
                    }
                }
            }
        }
        if on_chain.status == TaskStatus::Assigned {
            // Nothing is started that the node cannot or should not run.
            let verdict = self.admission.check(task, head.number);
            match verdict {
                Verdict::Admit => tracing::info!(
                    %task_id,
                    model = %task.model,
                    deadline = task.deadline,
                    escrow = task.escrow,
                    "admitted; starting"
                ),
                Verdict::Refuse { reason, cause } => {
                    tracing::info!(%task_id, ?reason, %cause, "not admitted");
                    return self
                        .fail_with(task_id, reason, FailCause::Refused(cause))
                        .await
                        .map(Err);
                }
                Verdict::Hold { cause } => {
                    return Err(LifecycleError::Held { task_id, cause }.into());
                }
            }
        }
        match on_chain.status {
            TaskStatus::Assigned => match self.calls.start_task_pooled(task_id).await {
                Ok(pooled) => Ok(Ok(Start::Pooled(pooled))),
                Err(e) => match resolution(task_id, e) {
                    Resolved::Outcome(outcome) => Ok(Err(outcome)),
                    Resolved::Lane0 => Ok(Ok(Start::RefusedBefore)),
                    Resolved::Error(e) => Err(e),
                },
            },
            // Resuming after a restart: it was started already.
            TaskStatus::Executing => {
                tracing::info!(%task_id, "started before; running it again");
                Ok(Ok(Start::Started))
            }
            status => Ok(Err(TaskOutcome::AlreadyResolved {
                task_id,
                status: Some(status),
            })),
        }
    }

    async fn submit(
        &self,
        task_id: TaskId,
        output: ExecutionResult,
    ) -> Result<TaskOutcome, BoxError> {
        match self
            .calls
            .submit_result(task_id, &output.output_cid, None)
            .await
        {
            Ok(Submitted::Included(inc)) => {
                tracing::info!(%task_id, output_cid = %output.output_cid, block = inc.block.number, "result submitted");
                Ok(TaskOutcome::Submitted {
                    task_id,
                    output_cid: output.output_cid,
                    block: Some(inc.block),
                })
            }
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

    async fn fail(&self, task_id: TaskId, error: BoxError) -> Result<TaskOutcome, BoxError> {
        let held = |cause| -> Result<TaskOutcome, BoxError> {
            Err(LifecycleError::Held { task_id, cause }.into())
        };
        match attribute(&error) {
            Attribution::Fail(FailReason::ExecutorFailed)
                if !self.admission.breaker().permit_slash() =>
            {
                tracing::error!(%task_id, %error, "the model failed, but the stake breaker is open: holding the task, not failing it");
                held(HoldCause::BreakerOpen)
            }
            Attribution::Fail(reason) => {
                tracing::warn!(%task_id, %error, ?reason, "execution failed");
                self.fail_with(task_id, reason, fail_cause(&error)).await
            }
            Attribution::Hold(cause @ HoldCause::SidecarUnreachable) => {
                // The sidecar's trouble, not the task's: hold the node's
                // intake and try the task again once it answers.
                tracing::warn!(%task_id, %error, "sidecar failed; holding the task");
                self.admission.set_healthy(false);
                held(cause)
            }
            Attribution::Hold(cause) => {
                tracing::warn!(%task_id, %error, %cause, "held, not failed: not the task's fault");
                held(cause)
            }
            Attribution::Rerun(_) => {
                // Reruns ran out: wait, as for the set-up's faults.
                tracing::warn!(%task_id, %error, "run stopped again and again; holding the task");
                held(HoldCause::Setup(Blame::Unknown))
            }
        }
    }

    async fn fail_with(
        &self,
        task_id: TaskId,
        reason: FailReason,
        cause: FailCause,
    ) -> Result<TaskOutcome, BoxError> {
        match self.calls.fail_task(task_id, reason).await {
            Ok(_) => {
                tracing::info!(%task_id, ?reason, %cause, "failed by this node");
                Ok(TaskOutcome::Failed {
                    task_id,
                    reason,
                    cause,
                })
            }
            Err(SubmissionError::Inapplicable { status, .. }) => {
                Ok(TaskOutcome::AlreadyResolved { task_id, status })
            }
            Err(source) => Err(LifecycleError::Submission { task_id, source }.into()),
        }
    }
}

/// The evidence behind a run failure that [`attribute`] says to fail.
fn fail_cause(error: &BoxError) -> FailCause {
    if cause::<Elapsed>(error.as_ref()).is_some() {
        return FailCause::TimeLimit;
    }
    match cause::<SidecarError>(error.as_ref()) {
        Some(SidecarError::TimedOut { .. }) => FailCause::Run {
            blame: Blame::Time,
            message: error.to_string(),
        },
        Some(e) => FailCause::Run {
            blame: e.blame().unwrap_or(Blame::Unknown),
            message: e.to_string(),
        },
        None => FailCause::Run {
            blame: Blame::Unknown,
            message: error.to_string(),
        },
    }
}

fn is_preempted(error: &BoxError) -> bool {
    cause::<crate::layer::preempt::Preempted>(error.as_ref()).is_some()
}

/// What a refused or failed start means for the task.
enum Resolved {
    /// The task ends here.
    Outcome(TaskOutcome),
    /// Our start was refused for open Lane 0 work; the task stays assigned.
    Lane0,
    /// Something to retry later.
    Error(BoxError),
}

fn resolution(task_id: TaskId, e: SubmissionError) -> Resolved {
    match e {
        SubmissionError::Inapplicable { status, .. } => {
            Resolved::Outcome(TaskOutcome::AlreadyResolved { task_id, status })
        }
        SubmissionError::NotOurs { .. } => Resolved::Outcome(TaskOutcome::NotOurs { task_id }),
        e if e.market_error() == Some(MarketError::Lane0Priority) => {
            if matches!(e, SubmissionError::AlreadySent { .. }) {
                Resolved::Lane0
            } else {
                Resolved::Error(LifecycleError::Lane0Priority { task_id }.into())
            }
        }
        source => Resolved::Error(LifecycleError::Submission { task_id, source }.into()),
    }
}

/// A run cancelled because the chain refused its start.
fn start_refused(task_id: TaskId, e: SubmissionError) -> Result<TaskOutcome, BoxError> {
    match resolution(task_id, e) {
        Resolved::Outcome(outcome) => Ok(outcome),
        // Refused for Lane 0 (now, or before): wait until it is settled.
        Resolved::Lane0 => Err(LifecycleError::Lane0Priority { task_id }.into()),
        Resolved::Error(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::RunId;

    fn model(message: &str, blame: Blame) -> BoxError {
        SidecarError::Model {
            task_id: TaskId(1),
            message: message.into(),
            blame,
        }
        .into()
    }

    #[test]
    fn the_attribution_table() {
        let cases: Vec<(BoxError, Attribution)> = vec![
            (
                model("out of ideas", Blame::Model),
                Attribution::Fail(FailReason::ExecutorFailed),
            ),
            (
                model(
                    "Invalid request: parameters must be a JSON object",
                    Blame::Task,
                ),
                Attribution::Fail(FailReason::InvalidInput),
            ),
            (
                model("timed out after 10 ms", Blame::Time),
                Attribution::Fail(FailReason::DeadlineExceeded),
            ),
            (
                model(
                    "Task execution failed: plugin runner not configured",
                    Blame::Setup,
                ),
                Attribution::Hold(HoldCause::Setup(Blame::Setup)),
            ),
            (
                model("Task execution failed: segfault", Blame::Unknown),
                Attribution::Hold(HoldCause::Setup(Blame::Unknown)),
            ),
            (
                SidecarError::Cancelled {
                    task_id: TaskId(1),
                    message: "Task was cancelled: 1".into(),
                }
                .into(),
                Attribution::Rerun(Rerun::ForeignCancel),
            ),
            (
                SidecarError::RunIdTaken {
                    run: RunId::first(TaskId(1)),
                    message: "Task already running: 1".into(),
                }
                .into(),
                Attribution::Rerun(Rerun::RunIdTaken),
            ),
            (
                SidecarError::Rpc {
                    task_id: Some(TaskId(1)),
                    code: tonic::Code::NotFound,
                    message: "Plugin not found: llama".into(),
                }
                .into(),
                Attribution::Fail(FailReason::InvalidInput),
            ),
            (
                SidecarError::Transport {
                    task_id: Some(TaskId(1)),
                    message: "connection refused".into(),
                }
                .into(),
                Attribution::Hold(HoldCause::SidecarUnreachable),
            ),
        ];
        for (error, want) in cases {
            assert_eq!(attribute(&error), want, "{error}");
        }
    }

    #[test]
    fn run_attempts_count_up_per_task() {
        let attempts = RunAttempts::default();
        assert_eq!(attempts.begin(TaskId(1)), 0);
        assert_eq!(attempts.begin(TaskId(1)), 1);
        assert_eq!(attempts.begin(TaskId(2)), 0);
        assert_eq!(attempts.last(TaskId(1)), Some(1));
        attempts.forget(TaskId(1));
        assert_eq!(attempts.last(TaskId(1)), None);
    }
}
