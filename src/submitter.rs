// Over ~600 lines: the status guard and its record of sent calls decide
// together whether a call may go; `MarketCalls` is their typed front.
//! Chain submission for one account: the [`StatusGuard`] service in front of
//! every `start_task`, `submit_result` and `fail_task`, and [`MarketCalls`],
//! the typed front of the submit stack.
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

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use tokio::sync::watch;
use tower::{BoxError, Service, ServiceExt};

use crate::chain::{
    BlockHash, BlockRef, ChainError, ChainPort, Inclusion, MarketCall, MarketError, Pooled,
    SubmitError, TaskIntent,
};
use crate::task::{AccountId, BlockNumber, Cid, FailReason, TaskId, TaskStatus};

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

/// The kinds of call the guard keeps a record of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Start,
    Submit,
    Fail,
}

impl Kind {
    fn of(call: &MarketCall) -> Option<(TaskId, Kind)> {
        match call {
            MarketCall::StartTask { task_id } => Some((*task_id, Kind::Start)),
            MarketCall::SubmitResult { task_id, .. } => Some((*task_id, Kind::Submit)),
            MarketCall::FailTask { task_id, .. } => Some((*task_id, Kind::Fail)),
            _ => None,
        }
    }
}

/// Where a sent call stands.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Sent {
    /// In the pool or on its way there.
    InFlight,
    /// In a block, dispatched; the task is left in this status.
    Landed(TaskStatus),
    /// In a block, refused by the chain.
    Refused {
        error: String,
        market: Option<MarketError>,
    },
}

/// Each sent call's record, by task and kind.
type Records = HashMap<(TaskId, Kind), watch::Sender<Sent>>;

/// The calls a guard has sent, by task and kind. Clones share one record;
/// every guard for an account must share it (a node builds one).
#[derive(Clone, Debug, Default)]
pub struct SentCalls {
    calls: Arc<Mutex<Records>>,
    /// Calls in best blocks not yet final, kept while a
    /// [`Confirmer`](crate::confirm::Confirmer) watches finality.
    unconfirmed: Arc<Mutex<Unconfirmed>>,
}

impl SentCalls {
    fn lock(&self) -> MutexGuard<'_, Records> {
        // Each critical section is one map operation: never half-done.
        self.calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Forgets a task whose end is final (verified, rejected, failed or
    /// expired in a finalized block): nothing more will be sent for it.
    pub fn forget(&self, task_id: TaskId) {
        self.lock().retain(|(t, _), _| *t != task_id);
        self.pending().forget(task_id);
    }

    /// The calls waiting for finality.
    pub(crate) fn pending(&self) -> MutexGuard<'_, Unconfirmed> {
        // One critical section per operation, as above.
        self.unconfirmed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Lets a call sent again after its block was retracted go out: the
    /// record no longer holds it.
    pub(crate) fn reopen(&self, task_id: TaskId, call: &MarketCall) {
        if let Some(key) = Kind::of(call) {
            debug_assert_eq!(key.0, task_id);
            self.release(key);
        }
    }

    /// Tasks with a record.
    pub fn len(&self) -> usize {
        let mut tasks: Vec<TaskId> = self.lock().keys().map(|(t, _)| *t).collect();
        tasks.sort();
        tasks.dedup();
        tasks.len()
    }

    /// True when no call is on record.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// True when this node sent `fail_task` for the task and the chain did
    /// not refuse it (to tell our own failing of a task from its
    /// requester's, whose event is the same).
    pub fn sent_fail(&self, task_id: TaskId) -> bool {
        self.lock()
            .get(&(task_id, Kind::Fail))
            .is_some_and(|s| !matches!(*s.borrow(), Sent::Refused { .. }))
    }

    /// True when a result for the task was sent and has not been refused.
    fn has_result(&self, task_id: TaskId) -> bool {
        self.lock()
            .get(&(task_id, Kind::Submit))
            .is_some_and(|s| !matches!(*s.borrow(), Sent::Refused { .. }))
    }

    /// Claims the right to send: `Ok` with the record's sender if nothing
    /// was sent yet for this task and kind, or the record of the earlier one.
    fn claim(&self, key: (TaskId, Kind)) -> Result<watch::Sender<Sent>, watch::Receiver<Sent>> {
        let mut calls = self.lock();
        if let Some(sent) = calls.get(&key) {
            return Err(sent.subscribe());
        }
        let (tx, _) = watch::channel(Sent::InFlight);
        calls.insert(key, tx.clone());
        Ok(tx)
    }

    /// Gives the claim back: nothing reached a block.
    fn release(&self, key: (TaskId, Kind)) {
        self.lock().remove(&key);
    }
}

// Calls in best blocks, kept until finality confirms them (the
// `confirm` module watches them).

/// How many finalized blocks' hashes are kept to confirm calls by.
const FINALIZED_KEPT: BlockNumber = 4096;

/// A call in a best block, not yet final.
#[derive(Clone, Debug)]
pub(crate) struct Pending {
    pub(crate) task_id: TaskId,
    pub(crate) call: MarketCall,
    pub(crate) nonce: u64,
    /// The block that held it (`None`: not known, judged by state).
    pub(crate) block: Option<BlockRef>,
}

/// The calls waiting for finality, and the finalized blocks seen lately.
#[derive(Debug, Default)]
pub(crate) struct Unconfirmed {
    /// Kept only while a confirmer watches.
    on: bool,
    calls: Vec<Pending>,
    finalized: BTreeMap<BlockNumber, BlockHash>,
}

impl Unconfirmed {
    /// Keeps calls from now on (a confirmer watches them).
    pub(crate) fn watch(&mut self) {
        self.on = true;
    }

    /// A call included in a best block.
    pub(crate) fn landed(&mut self, task_id: TaskId, call: &MarketCall, nonce: u64, at: BlockRef) {
        if !self.on || self.finalized.get(&at.number) == Some(&at.hash) {
            return;
        }
        self.calls.push(Pending {
            task_id,
            call: call.clone(),
            nonce,
            block: Some(at),
        });
    }

    /// A task whose end is final needs nothing more.
    pub(crate) fn forget(&mut self, task_id: TaskId) {
        self.calls.retain(|p| p.task_id != task_id);
    }

    pub(crate) fn put_back(&mut self, pending: Pending) {
        self.calls.push(Pending {
            block: None,
            ..pending
        });
    }

    /// Block `at` is final: calls it confirms are dropped; those whose
    /// block at a final height was another (or is not known) are returned,
    /// to be looked at.
    pub(crate) fn finalized(&mut self, at: BlockRef) -> Vec<Pending> {
        self.finalized.insert(at.number, at.hash);
        let keep_from = at.number.saturating_sub(FINALIZED_KEPT);
        while self
            .finalized
            .first_key_value()
            .is_some_and(|(n, _)| *n < keep_from)
        {
            self.finalized.pop_first();
        }
        let Unconfirmed {
            calls, finalized, ..
        } = self;
        let mut suspects = Vec::new();
        calls.retain(|p| match p.block {
            Some(b) if b.number > at.number => true,
            Some(b) if finalized.get(&b.number) == Some(&b.hash) => false,
            _ => {
                suspects.push(p.clone());
                false
            }
        });
        suspects
    }

    /// Calls not yet confirmed.
    pub(crate) fn len(&self) -> usize {
        self.calls.len()
    }
}

/// What the guard decided from the task's state.
pub(crate) enum Precondition {
    Send,
    Applied(TaskStatus),
    Refuse(Option<TaskStatus>),
    NotOurs,
}

pub(crate) fn precondition(
    call: &MarketCall,
    task: Option<&TaskIntent>,
    account: AccountId,
) -> Precondition {
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
            // A task with a result is never failed by us: the result stands.
            s if s.is_terminal() || s.has_result() => Precondition::Refuse(Some(s)),
            _ => Precondition::Send,
        },
        _ => Precondition::Send,
    }
}

/// The status a call leaves its task in when it lands.
fn status_after(call: &MarketCall) -> TaskStatus {
    match call {
        MarketCall::StartTask { .. } => TaskStatus::Executing,
        MarketCall::SubmitResult { .. } => TaskStatus::Submitted,
        _ => TaskStatus::Failed,
    }
}

/// The guard in front of every chain call; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct StatusGuard<S, P> {
    inner: S,
    port: P,
    account: AccountId,
    sent: SentCalls,
}

impl<S, P> StatusGuard<S, P> {
    /// Guards `inner`, which signs as `account`, reading state from `port`,
    /// with a record of its own.
    pub fn new(inner: S, port: P, account: AccountId) -> Self {
        StatusGuard::with_record(inner, port, account, SentCalls::default())
    }

    /// Guards `inner` with a record shared with other guards of the account.
    pub fn with_record(inner: S, port: P, account: AccountId, sent: SentCalls) -> Self {
        StatusGuard {
            inner,
            port,
            account,
            sent,
        }
    }

    /// The record of sent calls.
    pub fn sent(&self) -> &SentCalls {
        &self.sent
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

/// What a guarded call achieved, once it is in a block.
pub type GuardedOutcome = Result<Submitted, BoxError>;

/// The future of a [`StatusGuard`] submission: the pool's verdict.
pub type StatusGuardFuture =
    Pin<Box<dyn Future<Output = Result<Pooled<GuardedOutcome>, BoxError>> + Send>>;

impl<S, P> Service<MarketCall> for StatusGuard<S, P>
where
    S: Service<MarketCall, Response = Pooled, Error = SubmitError> + Clone + Send + 'static,
    S::Future: Send,
    P: ChainPort,
{
    type Response = Pooled<GuardedOutcome>;
    type Error = BoxError;
    type Future = StatusGuardFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, call: MarketCall) -> Self::Future {
        let fresh = self.inner.clone();
        // `ready` was polled ready by this service's `poll_ready`.
        let ready = std::mem::replace(&mut self.inner, fresh);
        let port = self.port.clone();
        let account = self.account;
        let sent = self.sent.clone();
        Box::pin(guarded(call, ready, port, account, sent))
    }
}

pub(crate) async fn guarded<S, P>(
    call: MarketCall,
    mut ready: S,
    port: P,
    account: AccountId,
    sent: SentCalls,
) -> Result<Pooled<GuardedOutcome>, BoxError>
where
    S: Service<MarketCall, Response = Pooled, Error = SubmitError> + Send + 'static,
    S::Future: Send,
    P: ChainPort,
{
    let Some((task_id, kind)) = Kind::of(&call) else {
        let pooled = ready.call(call).await?;
        return Ok(pooled.map(|r| r.map(Submitted::Included).map_err(Into::into)));
    };
    let name = call.name();
    if kind == Kind::Fail && sent.has_result(task_id) {
        return Err(SubmissionError::Inapplicable {
            call: name,
            task_id,
            status: Some(TaskStatus::Submitted),
        }
        .into());
    }
    let record = match sent.claim((task_id, kind)) {
        Ok(record) => record,
        Err(earlier) => {
            tracing::debug!(%task_id, call = name, "sent before: waiting for that one");
            return Ok(Pooled::ready(()).then(move |()| join(earlier, name, task_id)));
        }
    };
    let release = |e: BoxError| {
        sent.release((task_id, kind));
        e
    };
    let head = port.finalized_head().await.map_err(|e| release(e.into()))?;
    let task = port
        .task(head.hash, task_id)
        .await
        .map_err(|e| release(e.into()))?;
    match precondition(&call, task.as_ref(), account) {
        Precondition::Send => {}
        Precondition::Applied(status) => {
            tracing::debug!(%task_id, call = name, ?status, "already on chain");
            sent.release((task_id, kind));
            return Ok(Pooled::ready(Ok(Submitted::AlreadyApplied {
                task_id,
                status,
            })));
        }
        Precondition::Refuse(status) => {
            return Err(release(
                SubmissionError::Inapplicable {
                    call: name,
                    task_id,
                    status,
                }
                .into(),
            ));
        }
        Precondition::NotOurs => return Err(release(SubmissionError::NotOurs { task_id }.into())),
    }
    let pooled = match ready.call(call.clone()).await {
        Ok(p) => p,
        Err(e) => return Err(release(SubmissionError::Chain(e).into())),
    };
    // What the call achieves is judged and recorded as the caller waits for
    // it; a caller that stops waiting hands the rest to a task of its own,
    // so the record is kept either way.
    let nonce = pooled.nonce();
    let work = async move {
        let included = match (pooled.await, nonce) {
            // The answer was lost, not the call: it may still land. The
            // chain says which before the record lets the call go again.
            (
                Err(lost @ (SubmitError::Connection(_) | SubmitError::Dropped { .. })),
                Some(nonce),
            ) => match fate(&call, task_id, nonce, &port, account).await {
                Some(status) => {
                    tracing::info!(%task_id, call = name, "its answer was lost, but it landed");
                    record.send_replace(Sent::Landed(status));
                    return Ok(Submitted::AlreadyApplied { task_id, status });
                }
                None => Err(lost),
            },
            (included, _) => included,
        };
        let outcome = judge(&call, task_id, included, &port, account).await;
        match &outcome {
            Ok(Submitted::Included(inclusion)) => {
                record.send_replace(Sent::Landed(status_after(&call)));
                sent.pending()
                    .landed(task_id, &call, inclusion.nonce, inclusion.block);
            }
            Ok(Submitted::AlreadyApplied { status, .. }) => {
                record.send_replace(Sent::Landed(*status));
            }
            Err(e) => match SubmissionError::from_box_ref(e) {
                // Refused for a while (Lane 0 work open, the verification
                // list full): the call had no effect and is due again once
                // that passes.
                Some((_, Some(market))) if market.can_pass() => sent.release((task_id, kind)),
                Some((error, market)) => {
                    record.send_replace(Sent::Refused { error, market });
                }
                // Not in any block: the call may be sent again.
                None => sent.release((task_id, kind)),
            },
        }
        outcome
    };
    Ok(Pooled::new(nonce, Finish(Some(Box::pin(work)))))
}

/// How often the chain is asked about a call whose answer was lost.
const FATE_LOOK: std::time::Duration = std::time::Duration::from_millis(250);
/// How long, at most, a call whose answer was lost is looked for (then it is
/// taken as gone: a real transaction's mortality is shorter).
const FATE_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// Finds out from the chain what became of a call sent with `nonce` whose
/// answer was lost: `Some(status)` if its effect is in the best block's
/// state, `None` once it cannot land any more (the account's nonce in a
/// block passed it without its effect, or the pool no longer holds it).
/// Until then, and while the chain cannot be read, it waits.
async fn fate<P: ChainPort>(
    call: &MarketCall,
    task_id: TaskId,
    nonce: u64,
    port: &P,
    account: AccountId,
) -> Option<TaskStatus> {
    let deadline = tokio::time::Instant::now() + FATE_WAIT;
    loop {
        match fate_look(call, task_id, nonce, port, account).await {
            Ok(Some(known)) => return known,
            Ok(None) | Err(_) if tokio::time::Instant::now() >= deadline => return None,
            Ok(None) | Err(_) => tokio::time::sleep(FATE_LOOK).await,
        }
    }
}

/// One look for [`fate`]: `Ok(None)` while the call may still land.
async fn fate_look<P: ChainPort>(
    call: &MarketCall,
    task_id: TaskId,
    nonce: u64,
    port: &P,
    account: AccountId,
) -> Result<Option<Option<TaskStatus>>, ChainError> {
    // The pool's view first: a block landing between the reads only makes
    // the chain's count catch up.
    let pooled = port.account_nonce(account).await?;
    let best = port.best_head().await?;
    let included = port.account_nonce_at(best.hash, account).await?;
    if included > nonce {
        let task = port.task(best.hash, task_id).await?;
        return Ok(Some(match precondition(call, task.as_ref(), account) {
            Precondition::Applied(status) => Some(status),
            // The slot was used without this call's effect: it landed and
            // failed, or another transaction took it.
            _ => None,
        }));
    }
    Ok((pooled <= nonce).then_some(None))
}

/// A call's remaining work — its block, the judgement, the record — run as
/// it is awaited, and by a task of its own if it is dropped first.
struct Finish(Option<Pin<Box<dyn Future<Output = GuardedOutcome> + Send>>>);

impl Future for Finish {
    type Output = GuardedOutcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<GuardedOutcome> {
        let Some(work) = self.0.as_mut() else {
            return Poll::Ready(Err(SubmissionError::Chain(SubmitError::Closed).into()));
        };
        let outcome = std::task::ready!(work.as_mut().poll(cx));
        self.0 = None;
        Poll::Ready(outcome)
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        if let Some(work) = self.0.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                let _ = work.await;
            });
        }
    }
}

/// The account's submitter with its calls counted:
/// `lane1_chain_calls_total{call,outcome}` once each call's fate is known
/// (`refused` by the pool, `included`, `failed` in its block, `lost`), and
/// `lane1_chain_calls_outstanding` while it is between the pool and a block.
///
/// With [`own_nonces`](Self::own_nonces) it also records every nonce it
/// signs with, and signs nothing more once another process was seen to sign
/// with the key ([`crate::signer`]).
#[derive(Clone, Debug)]
pub struct CountedCalls<S> {
    inner: S,
    metrics: crate::telemetry::metrics::Lane1Metrics,
    nonces: Option<crate::signer::OwnNonces>,
}

impl<S> CountedCalls<S> {
    /// Counts `inner`'s calls into `metrics`.
    pub fn new(inner: S, metrics: crate::telemetry::metrics::Lane1Metrics) -> Self {
        CountedCalls {
            inner,
            metrics,
            nonces: None,
        }
    }

    /// Records the nonces signed in `nonces`, and refuses every call once
    /// it has seen another signer.
    pub fn own_nonces(mut self, nonces: crate::signer::OwnNonces) -> Self {
        self.nonces = Some(nonces);
        self
    }
}

/// One transaction between the pool and a block, for as long as it lives.
struct Outstanding(crate::telemetry::metrics::Gauge);

impl Outstanding {
    fn new(gauge: crate::telemetry::metrics::Gauge) -> Self {
        gauge.inc();
        Outstanding(gauge)
    }
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl<S> Service<MarketCall> for CountedCalls<S>
where
    S: Service<MarketCall, Response = Pooled, Error = SubmitError>,
    S::Future: Send + 'static,
{
    type Response = Pooled;
    type Error = SubmitError;
    type Future = Pin<Box<dyn Future<Output = Result<Pooled, SubmitError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), SubmitError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: MarketCall) -> Self::Future {
        let name = call.name();
        let metrics = self.metrics.clone();
        if let Some(nonce) = self.nonces.as_ref().and_then(|n| n.foreign()) {
            metrics.chain_calls.with(&[name, "refused"]).inc();
            return Box::pin(std::future::ready(Err(SubmitError::ForeignSigner {
                nonce,
            })));
        }
        let nonces = self.nonces.clone();
        let pooled = self.inner.call(call);
        Box::pin(async move {
            let pooled = match pooled.await {
                Ok(p) => p,
                Err(e) => {
                    metrics.chain_calls.with(&[name, "refused"]).inc();
                    return Err(e);
                }
            };
            if let (Some(nonces), Some(nonce)) = (&nonces, pooled.nonce()) {
                nonces.signed(nonce);
            }
            let outstanding = Outstanding::new(metrics.chain_outstanding.with(&[]));
            Ok(pooled.map(move |result| {
                drop(outstanding);
                let outcome = match &result {
                    Ok(_) => "included",
                    Err(SubmitError::Dispatch { .. }) => "failed",
                    Err(_) => "lost",
                };
                metrics.chain_calls.with(&[name, outcome]).inc();
                result
            }))
        })
    }
}

impl SubmissionError {
    /// A dispatch failure's description and market error, if the boxed
    /// error is one (the call reached a block and was refused there).
    fn from_box_ref(e: &BoxError) -> Option<(String, Option<MarketError>)> {
        let dispatch = |e: &SubmitError| match e {
            SubmitError::Dispatch { .. } => Some((e.to_string(), e.market_error())),
            _ => None,
        };
        if let Some(e) = e.downcast_ref::<SubmitError>() {
            return dispatch(e);
        }
        match e.downcast_ref::<SubmissionError>()? {
            SubmissionError::Chain(e) => dispatch(e),
            SubmissionError::Inapplicable { .. } | SubmissionError::NotOurs { .. } => {
                Some((e.to_string(), None))
            }
            _ => None,
        }
    }
}

/// Waits for the outcome of a call sent before, and answers for it.
async fn join(
    mut earlier: watch::Receiver<Sent>,
    call: &'static str,
    task_id: TaskId,
) -> GuardedOutcome {
    let sent = match earlier.wait_for(|s| !matches!(s, Sent::InFlight)).await {
        Ok(s) => s.clone(),
        // The earlier call was given back (it reached no block): the caller
        // may try again.
        Err(_) => {
            return Err(SubmissionError::Chain(SubmitError::Dropped { call }).into());
        }
    };
    match sent {
        Sent::Landed(status) => Ok(Submitted::AlreadyApplied { task_id, status }),
        Sent::Refused { error, market } => Err(SubmissionError::AlreadySent {
            call,
            task_id,
            error,
            market,
        }
        .into()),
        Sent::InFlight => Err(SubmissionError::Chain(SubmitError::Dropped { call }).into()),
    }
}

/// What an included call achieved. A dispatch failure is judged again in
/// the state of its block: its effect may be there already (a retried call),
/// or the task moved on (a hook, the requester).
async fn judge<P: ChainPort>(
    call: &MarketCall,
    task_id: TaskId,
    included: Result<Inclusion, SubmitError>,
    port: &P,
    account: AccountId,
) -> GuardedOutcome {
    let name = call.name();
    match included {
        Ok(inclusion) => Ok(Submitted::Included(inclusion)),
        Err(SubmitError::Dispatch {
            error,
            block,
            call: c,
        }) => {
            let refused = || SubmitError::Dispatch {
                call: c,
                error: error.clone(),
                block,
            };
            let task = match port.task(block.hash, task_id).await {
                Ok(t) => t,
                Err(_) => return Err(SubmissionError::Chain(refused()).into()),
            };
            match precondition(call, task.as_ref(), account) {
                Precondition::Applied(status) => Ok(Submitted::AlreadyApplied { task_id, status }),
                Precondition::Refuse(status) => Err(SubmissionError::Inapplicable {
                    call: name,
                    task_id,
                    status,
                }
                .into()),
                Precondition::NotOurs => Err(SubmissionError::NotOurs { task_id }.into()),
                Precondition::Send => Err(SubmissionError::Chain(refused()).into()),
            }
        }
        Err(e) => Err(SubmissionError::Chain(e).into()),
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
