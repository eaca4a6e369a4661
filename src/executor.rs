// Over ~600 lines: the event loop and its handlers for every event kind;
// the stages of a task live in `lifecycle.rs`.
//! The executor: a thin event loop over a Tower stack.
//!
//! The loop selects over four things, and never sleeps or polls on a timer:
//! chain events from the listener, completions of in-flight tasks (a
//! `FuturesUnordered`), resolutions of preempted tasks, and the stack's
//! readiness — which is how a slow sidecar or a full concurrency limit slows
//! intake instead of filling memory. A task is taken from the scheduler only
//! when the stack is ready for it.
//!
//! The stack it drives is composed in the `stack` module (`build_stack`).
//!
//! Preemption: a Lane 0 arrival cancels every running Lane 1 model at the
//! sidecar at once (the GPU is Lane 0's) and holds Lane 1 runs until all
//! open Lane 0 work is settled. The executor never reports a preemption to
//! the chain itself: `fail_task(Preempted)` slashes, and the chain's own hook
//! decides what fails while Lane 0 work is open. A preempted task goes back
//! to the queue; once Lane 0 is settled it runs again if the chain left it
//! ours (a re-run: the earlier run was cancelled), and is dropped if the
//! chain failed it. A submission is never preempted. A task the chain fails
//! or expires is dropped from the queue, or its run cancelled.
//!
//! Shutdown: intake stops; in-flight tasks get [`ExecutorConfig::shutdown_grace`]
//! to finish; then their runs are cancelled at the sidecar and they are left
//! assigned on chain for the next start to resume (or failed with `Other`
//! with [`ExecutorConfig::fail_unfinished_on_shutdown`]). Queued tasks stay
//! assigned on chain and are resumed by the next start's reconciliation.

use std::collections::{HashMap, HashSet};
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::mpsc;
use tower::{BoxError, Service};

use crate::admission::HoldCause;
use crate::board::{FailCause, TaskBoard, TaskOutcome, UnresolvedCause};
use crate::chain::{MarketCall, Pooled};
use crate::layer::cause;
use crate::layer::preempt::{PreemptReason, Preempted, Preemptor};
use crate::lifecycle::LifecycleError;
use crate::listener::TaskEvent;
use crate::scheduler::{Scheduler, SchedulerError};
use crate::submitter::{GuardedOutcome, MarketCalls, SentCalls, SubmissionError};
use crate::task::{Balance, FailReason, Lane, Task, TaskId, TaskStatus};
use crate::telemetry::metrics::Lane1Metrics;

/// The executor's settings. [`Default`] follows the original plan: a 300 s
/// execution timeout, one task at a time, no retries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecutorConfig {
    /// Longest a task may run on the sidecar.
    pub execution_timeout: Duration,
    /// Most model runs at the sidecar at once.
    pub max_concurrent: usize,
    /// Tasks started ahead while the sidecar is busy, so that the next run
    /// begins the moment a slot frees (`None`: `max_concurrent`).
    pub prestart: Option<usize>,
    /// Retries of a retryable sidecar error per task.
    pub retry_attempts: usize,
    /// Retries of a retryable chain submission error per call.
    pub submit_retry_attempts: usize,
    /// First retry delay (doubling, with jitter).
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Most tasks waiting in the scheduler.
    pub queue_capacity: usize,
    /// How long in-flight tasks may finish at shutdown before they are cancelled.
    pub shutdown_grace: Duration,
    /// Claim candidates with `accept_assignment` when they are created.
    pub claim_assignments: bool,
    /// Preempt running Lane 1 work as soon as a Lane 0 task appears on chain.
    /// Turn off when the node's Lane 0 side preempts through the
    /// [`Preemptor`] itself; the chain's preemption hook still applies.
    pub preempt_on_lane0: bool,
    /// What is checked before a task is started.
    pub admission: crate::admission::AdmissionPolicy,
    /// When the stake breaker opens.
    pub breaker: crate::breaker::BreakerPolicy,
    /// Parameters sent to the sidecar with every run of a model (chain tasks
    /// carry none: these are the node's choice, e.g. a sampler's settings).
    pub model_parameters:
        std::collections::BTreeMap<crate::task::ModelId, crate::sidecar::client::Parameters>,
    /// Yield to Lane 0 work seen in best blocks, before finality (a hint:
    /// only reversible actions follow). Off: on finalized blocks only.
    pub lane0_hints: bool,
    /// At shutdown, fail tasks whose runs did not finish in the grace period
    /// with `fail_task(Other)` (refunding their requesters) instead of
    /// leaving them assigned for the next start to resume.
    pub fail_unfinished_on_shutdown: bool,
}

impl ExecutorConfig {
    /// Tasks started ahead while the sidecar is busy.
    pub fn prestart(&self) -> usize {
        self.prestart.unwrap_or(self.max_concurrent.max(1))
    }

    /// Most tasks in the start and execute stages at once: those at the
    /// sidecar and those started ahead.
    pub fn admitted(&self) -> usize {
        self.max_concurrent.max(1) + self.prestart()
    }
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            execution_timeout: Duration::from_secs(300),
            max_concurrent: 1,
            prestart: None,
            retry_attempts: 0,
            submit_retry_attempts: 0,
            retry_base: Duration::from_millis(200),
            retry_max: Duration::from_secs(10),
            queue_capacity: 10_000,
            shutdown_grace: Duration::from_secs(30),
            claim_assignments: false,
            preempt_on_lane0: true,
            fail_unfinished_on_shutdown: false,
            lane0_hints: true,
            model_parameters: Default::default(),
            admission: Default::default(),
            breaker: Default::default(),
        }
    }
}

/// What the executor did, from start to stop.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecutorReport {
    /// Results submitted.
    pub submitted: u64,
    /// Tasks failed on chain by us.
    pub failed: u64,
    /// Tasks with nothing to do (the chain had moved on, or not ours).
    pub skipped: u64,
    /// Runs cancelled by a preemption (Lane 0, the chain, shutdown).
    pub preempted: u64,
    /// Tasks put back in the queue.
    pub requeued: u64,
    /// Our tasks verified on chain.
    pub verified: u64,
    /// Our tasks rejected on chain.
    pub rejected: u64,
    /// Payment received.
    pub paid: Balance,
    /// Tasks this executor could not resolve (see the logs).
    pub errors: u64,
}

impl ExecutorReport {
    /// Adds another executor's counts to these (one figure for several
    /// nodes).
    pub fn absorb(&mut self, other: &ExecutorReport) {
        self.submitted += other.submitted;
        self.failed += other.failed;
        self.skipped += other.skipped;
        self.preempted += other.preempted;
        self.requeued += other.requeued;
        self.verified += other.verified;
        self.rejected += other.rejected;
        self.paid = self.paid.saturating_add(other.paid);
        self.errors += other.errors;
    }
}

/// Why the executor stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecutorError {
    /// The stack failed to become ready (it can no longer take tasks).
    #[error("the service stack failed: {0}")]
    Stack(#[source] StackFailure),
}

/// The error a service stack stopped with. A stack is built of layers the
/// node builder chooses, so its error can be of any type: this keeps it
/// whole, reachable as the [`source`](std::error::Error::source) chain and
/// by [`StackFailure::downcast_ref`].
#[derive(Debug)]
pub struct StackFailure(BoxError);

impl StackFailure {
    /// The error as `E`, if it is one (or wraps one as its source).
    pub fn downcast_ref<E: std::error::Error + 'static>(&self) -> Option<&E> {
        crate::layer::cause::<E>(self.0.as_ref())
    }
}

impl std::fmt::Display for StackFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for StackFailure {
    // Transparent: it displays as its error, so its source is that error's.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// How a chain call made by the executor itself ended.
enum Resolution {
    Done(TaskOutcome),
    Error(TaskId, SubmissionError),
    /// A held task's `fail_task` at its deadline did not go out: it waits
    /// and is tried again at the next block.
    Again(Deferred, SubmissionError),
    Nothing,
}

type ResolveFuture = Pin<Box<dyn Future<Output = Resolution> + Send>>;
/// A run through the stack; it hands its task back with the outcome, so a
/// completion is never without its task.
type Completion = Pin<Box<dyn Future<Output = (Task, Result<TaskOutcome, BoxError>)> + Send>>;

struct Core<C> {
    /// Every task in hand, queued or running: the one record of what runs.
    scheduler: Scheduler<Task>,
    deferred: Vec<Deferred>,
    /// How many times in a row each task's lifecycle was held or failed
    /// (its backoff doubles with each).
    holds: HashMap<TaskId, u32>,
    admission: crate::admission::Admission,
    /// The gauges the loop sets after every event, looked up once.
    gauges: LoopGauges,
    /// Blocks kept free before a deadline for a call to land.
    submission_margin: crate::task::BlockNumber,
    lane0_open: HashSet<TaskId>,
    lane0_wait: bool,
    /// Tasks the chain ended (failed, expired) while they were in flight:
    /// when their lifecycle comes back, they are done, not deferred.
    ended: HashMap<TaskId, TaskStatus>,
    board: TaskBoard,
    preemptor: Preemptor,
    submitter: MarketCalls<C>,
    sent: SentCalls,
    claim: bool,
    preempt_on_lane0: bool,
    fail_on_shutdown: bool,
    shutting_down: bool,
    resolving: FuturesUnordered<ResolveFuture>,
    report: ExecutorReport,
    checkpoint: Option<crate::checkpoint::Checkpoint>,
    /// The last handled block, for the checkpoint's writer.
    handled: Option<tokio::sync::watch::Sender<Option<crate::task::BlockNumber>>>,
}

/// A task waiting to be queued again.
struct Deferred {
    task: Task,
    /// Blocks still to wait.
    blocks: u32,
    /// Why it waits (`None`: its lifecycle failed, or Lane 0 work).
    cause: Option<HoldCause>,
}

/// The series the loop sets after every event (queued by lane, held by
/// cause, the breaker), looked up once rather than on every event.
struct LoopGauges {
    queued: [crate::telemetry::metrics::Gauge; 2],
    held: [crate::telemetry::metrics::Gauge; 3],
    breaker_open: crate::telemetry::metrics::Gauge,
}

impl LoopGauges {
    fn new(metrics: &Lane1Metrics) -> Self {
        let held = crate::telemetry::metrics::HOLD_CAUSES;
        LoopGauges {
            queued: [
                metrics.queued.with(&["lane0"]),
                metrics.queued.with(&["lane1"]),
            ],
            held: [
                metrics.held.with(&[held[0]]),
                metrics.held.with(&[held[1]]),
                metrics.held.with(&[held[2]]),
            ],
            breaker_open: metrics.stake_breaker_open.with(&[]),
        }
    }
}

/// The longest a held task waits between tries, in blocks.
const MAX_HOLD_BLOCKS: u32 = 32;

/// What an executor works with besides its stack.
#[derive(Debug)]
pub struct ExecutorParts<C> {
    /// Chain events from the listener.
    pub events: mpsc::Receiver<TaskEvent>,
    /// The submit stack for our account (claims, and failing tasks that
    /// cannot run), sharing its record of sent calls (`handles.sent`) with
    /// the lifecycle's; tasks whose end is final are forgotten from it.
    pub submit: C,
    /// What the node's parts share (board, preemptor, metrics, admission:
    /// tasks held for set-up faults make the node not ready).
    pub handles: crate::handles::Handles,
}

/// The executor; see the [module docs](self).
pub struct Executor<S, C> {
    stack: S,
    events: mpsc::Receiver<TaskEvent>,
    config: ExecutorConfig,
    core: Core<C>,
}

impl<S, C> std::fmt::Debug for Executor<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("config", &self.config)
            .field("report", &self.core.report)
            .finish()
    }
}

impl<S, C> Executor<S, C>
where
    S: Service<Task, Response = TaskOutcome, Error = BoxError>,
    S::Future: Send + 'static,
    C: Service<MarketCall, Response = Pooled<GuardedOutcome>> + Clone + Send + Sync + 'static,
    C::Error: Into<BoxError>,
    C::Future: Send,
{
    /// An executor that runs tasks through `stack` and hears about them
    /// through `parts.events`.
    pub fn new(config: ExecutorConfig, stack: S, parts: ExecutorParts<C>) -> Self {
        Executor {
            stack,
            events: parts.events,
            core: Core {
                scheduler: Scheduler::new(config.queue_capacity),
                deferred: Vec::new(),
                holds: HashMap::new(),
                submission_margin: config.admission.submission_margin,
                gauges: LoopGauges::new(&parts.handles.metrics),
                admission: parts.handles.admission,
                lane0_open: HashSet::new(),
                lane0_wait: false,
                ended: HashMap::new(),
                board: parts.handles.board,
                preemptor: parts.handles.preemptor,
                submitter: MarketCalls::new(parts.submit),
                sent: parts.handles.sent,
                claim: config.claim_assignments,
                preempt_on_lane0: config.preempt_on_lane0,
                fail_on_shutdown: config.fail_unfinished_on_shutdown,
                shutting_down: false,
                resolving: FuturesUnordered::new(),
                report: ExecutorReport::default(),
                checkpoint: None,
                handled: None,
            },
            config,
        }
    }

    /// Records in `checkpoint` each finalized block whose events have all
    /// been handled, so that a restart can backfill from the block after it.
    pub fn checkpoint(mut self, checkpoint: crate::checkpoint::Checkpoint) -> Self {
        self.core.checkpoint = Some(checkpoint);
        self
    }

    /// The board where task states are published.
    pub fn board(&self) -> &TaskBoard {
        &self.core.board
    }

    /// Runs until `shutdown` resolves or the listener stops, then shuts down
    /// gracefully (see the [module docs](self)).
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<ExecutorReport, ExecutorError> {
        let Executor {
            mut stack,
            mut events,
            config,
            mut core,
        } = self;
        let mut in_flight: FuturesUnordered<Completion> = FuturesUnordered::new();
        tokio::pin!(shutdown);
        let writer = core.checkpoint.take().map(|cp| {
            let (handled, writer) = cp.spawn_writer();
            core.handled = Some(handled);
            writer
        });

        loop {
            let can_start =
                !core.scheduler.is_empty() && core.lane0_open.is_empty() && !core.lane0_wait;
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                event = events.recv() => match event {
                    Some(event) => core.on_event(event),
                    None => break,
                },
                Some((task, result)) = in_flight.next(), if !in_flight.is_empty() => {
                    core.on_done(task, result);
                }
                Some(resolution) = core.resolving.next(), if !core.resolving.is_empty() => {
                    core.on_resolution(resolution);
                }
                ready = poll_fn(|cx| stack.poll_ready(cx)), if can_start => {
                    ready.map_err(|e| ExecutorError::Stack(StackFailure(e)))?;
                    if let Some(task) = core.scheduler.next_task() {
                        let call = stack.call(task.clone());
                        in_flight.push(Box::pin(async move { (task, call.await) }));
                    }
                }
            }
            core.update_gauges();
        }

        // Graceful shutdown: intake has stopped.
        core.shutting_down = true;
        tracing::info!(
            in_flight = in_flight.len(),
            "shutting down; letting in-flight tasks finish"
        );
        let grace = tokio::time::sleep(config.shutdown_grace);
        tokio::pin!(grace);
        let mut preempted = false;
        while !in_flight.is_empty() || !core.resolving.is_empty() {
            tokio::select! {
                biased;
                Some((task, result)) = in_flight.next(), if !in_flight.is_empty() => {
                    core.on_done(task, result);
                }
                Some(resolution) = core.resolving.next(), if !core.resolving.is_empty() => {
                    core.on_resolution(resolution);
                }
                () = &mut grace, if !preempted => {
                    preempted = true;
                    let ids = core.preemptor.preempt_all(PreemptReason::Shutdown);
                    tracing::warn!(?ids, "grace period over; cancelling in-flight tasks");
                }
            }
        }
        core.update_gauges();
        // The last handled block is on disk before the executor returns.
        core.handled = None;
        if let Some(writer) = writer {
            let _ = writer.await;
        }
        Ok(core.report)
    }
}

impl<C> Core<C>
where
    C: Service<MarketCall, Response = Pooled<GuardedOutcome>> + Clone + Send + Sync + 'static,
    C::Error: Into<BoxError>,
    C::Future: Send,
{
    fn update_gauges(&self) {
        let mut held = [0i64; 3];
        for d in &self.deferred {
            match d.cause {
                Some(HoldCause::SidecarUnreachable) => held[0] += 1,
                Some(HoldCause::Setup(_)) => held[1] += 1,
                Some(HoldCause::BreakerOpen) => held[2] += 1,
                _ => {}
            }
        }
        let g = &self.gauges;
        for (gauge, n) in g.held.iter().zip(held) {
            gauge.set(n);
        }
        g.breaker_open
            .set(i64::from(self.admission.breaker().is_open()));
        let st = self.scheduler.stats();
        g.queued[0].set(st.queued_lane0 as i64);
        g.queued[1].set(st.queued_lane1 as i64);
    }

    fn enqueue(&mut self, task: Task) {
        let task_id = task.id;
        match self.scheduler.enqueue(task) {
            Ok(()) => self.board.queued(task_id),
            Err(rejected) => match rejected.error {
                SchedulerError::DuplicateTask(_) => {}
                error => {
                    // Refusing silently would leave the task assigned to us
                    // forever: give it back to the market.
                    tracing::error!(%task_id, %error, "cannot queue assigned task; failing it on chain");
                    self.resolve_fail(task_id, FailReason::Other, FailCause::Unschedulable(error));
                }
            },
        }
    }

    fn on_event(&mut self, event: TaskEvent) {
        match event {
            TaskEvent::AssignedToMe { task } => {
                tracing::info!(
                    task_id = %task.id,
                    model = %task.model,
                    deadline = task.deadline,
                    escrow = task.escrow,
                    "assigned to this node"
                );
                // In hand already (running, or waiting to try again): one
                // copy of a task at a time.
                let waiting = self.deferred.iter().any(|d| d.task.id == task.id);
                if !self.scheduler.is_running(task.id) && !waiting {
                    self.enqueue(task);
                }
            }
            TaskEvent::AssignedInvalid { task_id, reason } => {
                tracing::warn!(%task_id, %reason, "assigned task has invalid data");
                self.resolve_fail(
                    task_id,
                    FailReason::InvalidInput,
                    FailCause::Invalid(reason),
                );
            }
            TaskEvent::Created { task_id, .. } if self.claim => {
                let submitter = self.submitter.clone();
                self.resolving.push(Box::pin(async move {
                    if let Err(e) = submitter.accept_assignment(task_id).await {
                        tracing::debug!(%task_id, error = %e, "claim not taken");
                    }
                    Resolution::Nothing
                }));
            }
            TaskEvent::Lane0Arrived { task_id } => {
                self.lane0_open.insert(task_id);
                if !self.preempt_on_lane0 {
                    return;
                }
                // Runs of Lane 1 stop now and none starts until Lane 0 is
                // settled; the chain decides what fails meanwhile.
                self.preemptor.hold(Lane::Lane1);
                let preempted = self.preemptor.preempt_for_lane0();
                if !preempted.is_empty() {
                    tracing::info!(lane0 = %task_id, ?preempted, "lane 0 work arrived; yielding");
                }
            }
            TaskEvent::Lane0Settled { task_id } => {
                self.lane0_open.remove(&task_id);
                if self.lane0_open.is_empty() {
                    self.preemptor.release(Lane::Lane1);
                }
            }
            TaskEvent::Failed { task_id, .. } | TaskEvent::Expired { task_id } => {
                if self.board.get(task_id).is_some() {
                    match &event {
                        TaskEvent::Failed { reason, .. } => {
                            tracing::info!(%task_id, ?reason, "failed on chain");
                        }
                        _ => tracing::info!(%task_id, "expired on chain"),
                    }
                }
                let reason = if matches!(event, TaskEvent::Expired { .. }) {
                    PreemptReason::ChainExpired
                } else {
                    PreemptReason::ChainFailed
                };
                self.sent.forget(task_id);
                let waiting = self.deferred.len();
                self.deferred.retain(|d| d.task.id != task_id);
                let was_deferred = self.deferred.len() < waiting;
                self.release_hold(task_id);
                if was_deferred || self.scheduler.cancel(task_id).is_ok() {
                    let status = match reason {
                        PreemptReason::ChainExpired => TaskStatus::Expired,
                        _ => TaskStatus::Failed,
                    };
                    self.board.done(TaskOutcome::AlreadyResolved {
                        task_id,
                        status: Some(status),
                    });
                    self.report.skipped += 1;
                } else if self.scheduler.is_running(task_id) {
                    // Running: cancel it; on its way to the sidecar: it
                    // never gets there. Whatever its lifecycle says when it
                    // comes back, the task is over.
                    let status = match reason {
                        PreemptReason::ChainExpired => TaskStatus::Expired,
                        _ => TaskStatus::Failed,
                    };
                    self.ended.insert(task_id, status);
                    self.preemptor.forbid(task_id, reason);
                }
            }
            TaskEvent::Verified { task_id, payment } => {
                tracing::info!(%task_id, payment, "verified and paid");
                self.sent.forget(task_id);
                self.report.verified += 1;
                self.report.paid = self.report.paid.saturating_add(payment);
            }
            TaskEvent::Rejected { task_id } => {
                self.sent.forget(task_id);
                if self.board.get(task_id).is_some() {
                    tracing::info!(%task_id, "rejected by the validators");
                    self.report.rejected += 1;
                }
            }
            TaskEvent::BlockDone { number } => {
                if let Some(handled) = &self.handled {
                    handled.send_replace(Some(number));
                }
                // The chain moved on: tasks that had to wait may try again
                // (a held one once its backoff has passed).
                self.lane0_wait = false;
                let margin = self.submission_margin;
                for mut d in std::mem::take(&mut self.deferred) {
                    if number.saturating_add(margin) >= d.task.deadline {
                        // Waited to its end for faults not its own: given
                        // back, with the reason that is true and does not
                        // slash.
                        let task_id = d.task.id;
                        tracing::warn!(%task_id, cause = ?d.cause, "held until its deadline; failing it as DeadlineExceeded");
                        self.release_hold(task_id);
                        self.fail_held(d);
                        continue;
                    }
                    if d.blocks > 1 {
                        d.blocks -= 1;
                        self.deferred.push(d);
                    } else {
                        self.enqueue(d.task);
                    }
                }
            }
            TaskEvent::Created { .. }
            | TaskEvent::AssignedToOther { .. }
            | TaskEvent::Started { .. }
            | TaskEvent::Submitted { .. } => {}
        }
    }

    fn on_done(&mut self, task: Task, result: Result<TaskOutcome, BoxError>) {
        let task_id = task.id;
        if !self.scheduler.is_running(task_id) {
            // Something ended it in the scheduler while it ran: its outcome
            // still counts, and a failure still waits to be tried again.
            tracing::warn!(%task_id, "completion for a task the scheduler no longer runs");
        }
        self.preemptor.allow(task_id);
        let lifecycle_error = result
            .as_ref()
            .err()
            .filter(|e| cause::<Preempted>(e.as_ref()).is_none());
        let setup_held = lifecycle_error
            .and_then(|e| cause::<LifecycleError>(e.as_ref()))
            .is_some_and(|e| {
                matches!(
                    e,
                    LifecycleError::Held {
                        cause: HoldCause::Setup(_),
                        ..
                    }
                )
            });
        self.admission.set_setup_held(task_id, setup_held);
        if lifecycle_error.is_none() {
            self.holds.remove(&task_id);
        }
        let ended = self.ended.remove(&task_id);
        match result {
            Ok(outcome) => self.finish(outcome),
            Err(error) => {
                if let Some(p) = cause::<Preempted>(error.as_ref()) {
                    self.report.preempted += 1;
                    self.preempted(task, p.reason);
                    return;
                }
                // The chain ended it while it was in flight: nothing to try
                // again (a lifecycle that failed meanwhile, for Lane 0 work
                // or a call refused, would otherwise wait to its deadline).
                if let Some(status) = ended {
                    self.release_hold(task_id);
                    let _ = self.scheduler.fail(task_id);
                    self.finish(TaskOutcome::AlreadyResolved {
                        task_id,
                        status: Some(status),
                    });
                    return;
                }
                let _ = self.scheduler.fail(task_id);
                // Nothing is given up while the task is ours: it waits and
                // is tried again, on a backoff for what may last, until its
                // deadline gives it back (`DeadlineExceeded`, no slash).
                match cause::<LifecycleError>(error.as_ref()) {
                    // Lane 0 work, or a sidecar that does not answer: the
                    // intake waits for the next block (and for the sidecar).
                    Some(LifecycleError::Lane0Priority { .. }) => {
                        self.lane0_wait = true;
                        self.defer(task, None, 1);
                    }
                    Some(LifecycleError::Held {
                        cause: cause @ HoldCause::SidecarUnreachable,
                        ..
                    }) => {
                        self.lane0_wait = true;
                        self.defer(task, Some(*cause), 1);
                    }
                    // A fault that is not the task's, for this task only:
                    // it waits on a backoff that doubles, the others go on.
                    Some(LifecycleError::Held { cause, .. }) => {
                        let cause = *cause;
                        let blocks = self.backoff(task_id);
                        tracing::warn!(%task_id, %cause, blocks, "task held; trying again later");
                        self.defer(task, Some(cause), blocks);
                    }
                    _ => {
                        let blocks = self.backoff(task_id);
                        tracing::warn!(%task_id, %error, blocks, "task lifecycle failed; trying again later");
                        self.defer(task, None, blocks);
                    }
                }
            }
        }
    }

    /// Blocks to wait before the next try of a task held or failed again:
    /// 1, 2, 4, … up to [`MAX_HOLD_BLOCKS`].
    fn backoff(&mut self, task_id: TaskId) -> u32 {
        let n = self.holds.entry(task_id).or_insert(0);
        *n = n.saturating_add(1);
        1u32.checked_shl(n.saturating_sub(1))
            .unwrap_or(MAX_HOLD_BLOCKS)
            .min(MAX_HOLD_BLOCKS)
    }

    /// A task is no longer held (it ran, or it ended).
    fn release_hold(&mut self, task_id: TaskId) {
        self.holds.remove(&task_id);
        self.admission.set_setup_held(task_id, false);
    }

    /// Records a task this executor could not resolve.
    fn give_up(&mut self, task_id: TaskId, cause: UnresolvedCause) {
        self.report.errors += 1;
        self.board.done(TaskOutcome::Unresolved { task_id, cause });
    }

    fn defer(&mut self, task: Task, cause: Option<HoldCause>, blocks: u32) {
        self.report.requeued += 1;
        self.board.queued(task.id);
        self.deferred.push(Deferred {
            task,
            blocks: blocks.max(1),
            cause,
        });
    }

    fn finish(&mut self, outcome: TaskOutcome) {
        let task_id = outcome.task_id();
        match &outcome {
            TaskOutcome::Submitted { .. } => {
                self.report.submitted += 1;
                let _ = self.scheduler.complete(task_id);
            }
            TaskOutcome::Failed { .. } => {
                self.report.failed += 1;
                let _ = self.scheduler.fail(task_id);
            }
            TaskOutcome::AlreadyResolved { .. } | TaskOutcome::NotOurs { .. } => {
                self.report.skipped += 1;
                let _ = self.scheduler.complete(task_id);
            }
            TaskOutcome::Unresolved { .. } => {
                let _ = self.scheduler.fail(task_id);
            }
        }
        self.board.done(outcome);
    }

    /// A run cancelled by a preemption. Nothing is reported to the chain:
    /// the task goes back to the queue and runs again when it may (the chain
    /// may have failed it meanwhile; the re-run then finds it so). At
    /// shutdown it stays assigned for the next start, or is failed with
    /// `Other` if configured so.
    fn preempted(&mut self, task: Task, reason: PreemptReason) {
        let task_id = task.id;
        if self.shutting_down || reason == PreemptReason::Shutdown {
            let _ = self.scheduler.fail(task_id);
            if self.fail_on_shutdown {
                self.resolve_fail(task_id, FailReason::Other, FailCause::Shutdown(reason));
            } else {
                self.board.done(TaskOutcome::Unresolved {
                    task_id,
                    cause: UnresolvedCause::LeftAtShutdown,
                });
            }
            return;
        }
        let ended = match reason {
            PreemptReason::ChainFailed => Some(TaskStatus::Failed),
            PreemptReason::ChainExpired => Some(TaskStatus::Expired),
            _ => None,
        };
        if let Some(status) = ended {
            // The chain ended it (in a finalized block): nothing to run again.
            let _ = self.scheduler.fail(task_id);
            self.finish(TaskOutcome::AlreadyResolved {
                task_id,
                status: Some(status),
            });
            return;
        }
        self.report.requeued += 1;
        if let Err(rejected) = self.scheduler.requeue(task) {
            tracing::error!(%task_id, error = %rejected.error, "requeue refused");
            self.enqueue(rejected.item);
        } else {
            self.board.queued(task_id);
        }
    }

    fn on_resolution(&mut self, resolution: Resolution) {
        match resolution {
            Resolution::Done(outcome) => self.finish(outcome),
            Resolution::Again(deferred, error) => {
                let task_id = deferred.task.id;
                tracing::warn!(%task_id, %error, "could not give the held task back yet; trying again");
                self.deferred.push(deferred);
            }
            Resolution::Error(task_id, error) => {
                tracing::error!(%task_id, %error, "could not resolve task on chain");
                let _ = self.scheduler.fail(task_id);
                self.give_up(task_id, UnresolvedCause::CallFailed(error.to_string()));
            }
            Resolution::Nothing => {}
        }
    }

    /// Gives a task held to its deadline back to the chain
    /// (`DeadlineExceeded`, which does not slash); a call that does not go
    /// out is tried again at the next block, never given up.
    fn fail_held(&mut self, held: Deferred) {
        let submitter = self.submitter.clone();
        self.resolving.push(Box::pin(async move {
            let task_id = held.task.id;
            let reason = FailReason::DeadlineExceeded;
            match submitter.fail_task(task_id, reason).await {
                // The chain ended it first (a hook, the requester): not ours.
                Ok(crate::submitter::Submitted::AlreadyApplied { status, .. }) => {
                    Resolution::Done(TaskOutcome::AlreadyResolved {
                        task_id,
                        status: Some(status),
                    })
                }
                Ok(_) => Resolution::Done(TaskOutcome::Failed {
                    task_id,
                    reason,
                    cause: FailCause::HeldToDeadline(held.cause),
                }),
                Err(SubmissionError::Inapplicable { status, .. }) => {
                    Resolution::Done(TaskOutcome::AlreadyResolved { task_id, status })
                }
                Err(e) => Resolution::Again(held, e),
            }
        }));
    }

    /// Fails a task on chain without running it.
    fn resolve_fail(&mut self, task_id: TaskId, reason: FailReason, cause: FailCause) {
        let submitter = self.submitter.clone();
        self.resolving.push(Box::pin(async move {
            match submitter.fail_task(task_id, reason).await {
                Ok(crate::submitter::Submitted::AlreadyApplied { status, .. }) => {
                    Resolution::Done(TaskOutcome::AlreadyResolved {
                        task_id,
                        status: Some(status),
                    })
                }
                Ok(_) => Resolution::Done(TaskOutcome::Failed {
                    task_id,
                    reason,
                    cause,
                }),
                Err(SubmissionError::Inapplicable { status, .. }) => {
                    Resolution::Done(TaskOutcome::AlreadyResolved { task_id, status })
                }
                Err(e) => Resolution::Error(task_id, e),
            }
        }));
    }
}
