//! The status guard: whether a call may go, from the task's state at the
//! finalized head and the record of sent calls; and its one way of sending.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::watch;
use tower::{BoxError, Service};

use crate::chain::{
    ChainError, ChainPort, Inclusion, MarketCall, MarketError, Pooled, SubmitError, TaskIntent,
};
use crate::task::{AccountId, TaskId, TaskStatus};

use super::sent::{Kind, Sent, SentCalls};
use super::{SubmissionError, Submitted};

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
