//! Calls confirmed at finality: a call counts once a finalized block holds
//! it, not when a best block does.
//!
//! The status guard records a call as landed as soon as a best block
//! includes it — that is what lets a model run start before finality. But
//! best blocks can be retracted (slot races, re-orgs before finality); a
//! call whose block goes, and that the new branch lacks, never happened,
//! and a node that believed it would wait on nothing while the chain's
//! hooks slash the task. The [`Confirmer`] follows finalized blocks by
//! hash: every call in a best block is kept as *unconfirmed* until the
//! finalized block at its height is the one that held it. When that block
//! was another, the chain is asked what became of the call:
//!
//! - its nonce is final and the task shows its effect: confirmed (the pool
//!   put it in the new branch);
//! - it is still in the pool, or in a best block again: looked at again at
//!   the next finalized block;
//! - it is nowhere and the task still needs it: it is **sent again**, once,
//!   through the same guard (which reads the task first, so at most one
//!   effect per task and kind reaches the chain);
//! - the task moved on (ended, or a later call made this one moot):
//!   forgotten.
//!
//! Retracted calls are counted in `lane1_calls_retracted_total{call}`.

use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::chain::{BlockRef, ChainError, ChainPort, MarketCall, Pooled, SubmitError};
use crate::submitter::{Pending, Precondition, SentCalls, SubmissionError, guarded, precondition};
use crate::task::{AccountId, BlockNumber};
use crate::telemetry::metrics::Lane1Metrics;

/// Longest pause before the finalized stream is opened again after it
/// failed.
const REOPEN_MAX: Duration = Duration::from_secs(10);

/// What the chain says of a call whose block is not the final one.
#[derive(Debug, PartialEq, Eq)]
enum Look {
    /// Confirmed, or no longer needed.
    Done,
    /// It may still land (pooled, or in a best block again).
    Wait,
    /// Nowhere, and the task still needs it.
    Lost,
}

/// Follows finalized blocks and confirms, or sends again, the account's
/// calls; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct Confirmer<S, P> {
    inner: S,
    port: P,
    account: AccountId,
    sent: SentCalls,
    metrics: Lane1Metrics,
    /// The nonces this process signed, checked at every finalized block,
    /// and where a second signer is reported.
    signers: Option<(crate::signer::OwnNonces, crate::admission::Admission)>,
}

impl<S, P> Confirmer<S, P>
where
    S: tower::Service<MarketCall, Response = Pooled, Error = SubmitError> + Clone + Send + 'static,
    S::Future: Send,
    P: ChainPort,
{
    /// A confirmer for `account`'s calls in `sent`, sending again through
    /// `inner` (the account's chain submitter). From now on the guards
    /// sharing `sent` keep their calls until they are final.
    pub fn new(
        inner: S,
        port: P,
        account: AccountId,
        sent: SentCalls,
        metrics: Lane1Metrics,
    ) -> Self {
        sent.pending().watch();
        Confirmer {
            inner,
            port,
            account,
            sent,
            metrics,
            signers: None,
        }
    }

    /// Also checks, at every finalized block, that each nonce the account
    /// used since this process first signed was signed here; one that was
    /// not makes `admission` not ready and stops signing (see
    /// [`crate::signer`]).
    pub fn watch_signers(
        mut self,
        nonces: crate::signer::OwnNonces,
        admission: crate::admission::Admission,
    ) -> Self {
        self.signers = Some((nonces, admission));
        self
    }

    /// The account's nonce at `at`, against the nonces signed here.
    async fn check_signers(&self, at: BlockRef) {
        let Some((nonces, admission)) = &self.signers else {
            return;
        };
        let nonce = match self.port.account_nonce_at(at.hash, self.account).await {
            Ok(n) => n,
            Err(error) => {
                tracing::debug!(%error, "cannot read the account's nonce; checking at the next block");
                return;
            }
        };
        if let Some(foreign) = nonces.finalized(nonce) {
            tracing::error!(
                nonce = foreign,
                block = at.number,
                "another process signs with this key: the account used a nonce this node did not sign; not signing any more, not ready (restart once only one process holds the key)"
            );
            admission.set_foreign_signer(foreign);
            self.metrics.foreign_signer.with(&[]).set(1);
        }
    }

    /// Calls in best blocks not yet confirmed by finality.
    pub fn unconfirmed(&self) -> usize {
        self.sent.pending().len()
    }

    /// Follows finalized blocks from the next one until `shutdown`; a
    /// stream that fails is opened again (after a pause that grows) at the
    /// first block not yet seen.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut next: Option<BlockNumber> = None;
        let mut pause = Duration::from_millis(100);
        loop {
            let mut blocks = self.port.finalized_blocks(next);
            loop {
                let block = tokio::select! {
                    () = shutdown.cancelled() => return,
                    block = blocks.next() => block,
                };
                match block {
                    Some(Ok(block)) => {
                        pause = Duration::from_millis(100);
                        next = Some(block.number + 1);
                        self.on_finalized(block.block_ref()).await;
                    }
                    Some(Err(error)) => {
                        tracing::debug!(%error, "finalized blocks unavailable; confirming later");
                        break;
                    }
                    None => break,
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(REOPEN_MAX);
        }
    }

    /// Block `at` is final: confirms what it holds and looks after what a
    /// retracted block held.
    pub async fn on_finalized(&self, at: BlockRef) {
        self.check_signers(at).await;
        let suspects = self.sent.pending().finalized(at);
        for pending in suspects {
            let task_id = pending.task_id;
            let name = pending.call.name();
            match self.look(&pending, at).await {
                Ok(Look::Done) => {}
                Ok(Look::Wait) => self.sent.pending().put_back(pending),
                Err(error) => {
                    tracing::debug!(%task_id, call = name, %error, "cannot read the chain; looking again later");
                    self.sent.pending().put_back(pending);
                }
                Ok(Look::Lost) => {
                    tracing::warn!(%task_id, call = name, block = ?pending.block, "the block that held this call was retracted and no branch has it; sending it again");
                    self.metrics.calls_retracted.with(&[name]).inc();
                    if let Err(again) = self.resend(&pending).await {
                        tracing::warn!(%task_id, call = name, error = %again, "could not send it again yet; trying at the next final block");
                        self.sent.pending().put_back(pending);
                    }
                }
            }
        }
    }

    /// What the chain says of `pending`, whose block was not final at its
    /// height.
    async fn look(&self, pending: &Pending, at: BlockRef) -> Result<Look, ChainError> {
        let account = self.account;
        let needed = |task| match precondition(&pending.call, task, account) {
            Precondition::Send => Look::Lost,
            Precondition::Applied(_) => Look::Wait,
            Precondition::Refuse(_) | Precondition::NotOurs => Look::Done,
        };
        if self.port.account_nonce_at(at.hash, account).await? > pending.nonce {
            // Its nonce is final: the finalized state has the call's
            // effect, or never will from this transaction.
            let task = self.port.task(at.hash, pending.task_id).await?;
            return Ok(match needed(task.as_ref()) {
                Look::Wait => Look::Done,
                look => look,
            });
        }
        // Not final yet. The pool's view first: a block that lands between
        // the reads only makes the chain's count catch up.
        let pooled = self.port.account_nonce(account).await?;
        let best = self.port.best_head().await?;
        let included = self.port.account_nonce_at(best.hash, account).await?;
        if included > pending.nonce || pooled > pending.nonce {
            return Ok(Look::Wait);
        }
        let task = self.port.task(best.hash, pending.task_id).await?;
        Ok(needed(task.as_ref()))
    }

    /// Sends `pending`'s call again through the guard; its inclusion is
    /// then recorded (and confirmed) as any call's is.
    async fn resend(&self, pending: &Pending) -> Result<(), SubmissionError> {
        self.sent.reopen(pending.task_id, &pending.call);
        let ready = self
            .inner
            .clone()
            .ready_oneshot()
            .await
            .map_err(SubmissionError::Chain)?;
        match guarded(
            pending.call.clone(),
            ready,
            self.port.clone(),
            self.account,
            self.sent.clone(),
        )
        .await
        {
            // Its outcome is recorded whether or not it is awaited here.
            Ok(_pooled) => Ok(()),
            Err(e) => match SubmissionError::from_box(e) {
                SubmissionError::Inapplicable { .. } | SubmissionError::NotOurs { .. } => Ok(()),
                e => Err(e),
            },
        }
    }
}
