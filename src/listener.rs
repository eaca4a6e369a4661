//! Chain events → [`TaskEvent`]s for the executor.
//!
//! The listener follows finalized blocks. It passes on what concerns this
//! node: a task is run only after `TaskAssigned { executor: us }`, and then
//! its input CID and deadline are read from `Tasks(id)` *at that event's
//! block* (events are hints; storage is the truth). `TaskCreated` for a model
//! we serve is a candidate, which the listener may claim with
//! `accept_assignment` (the chain then picks an executor, perhaps another).
//! Lane 0 arrivals are passed on so Lane 1 work can yield at once.
//!
//! On start it reconciles: every Lane 1 task assigned to us that is still
//! `Assigned` or `Executing` is handed to the executor again.

use std::collections::{HashMap, HashSet};

use futures::StreamExt;
use tokio::sync::mpsc;

use crate::chain::{BlockHash, BlockRef, ChainError, ChainPort, MarketEvent, TaskIntent};
use tower::retry::backoff::{Backoff as _, ExponentialBackoff};

use crate::layer::retry::backoff;
use crate::task::{
    AccountId, Balance, BlockNumber, Cid, FailReason, Lane, ModelId, Priority, Task, TaskId,
};
use crate::telemetry::metrics::Lane1Metrics;

/// What the executor hears about tasks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskEvent {
    /// A Lane 1 task for a model we serve was created (a candidate only).
    Created {
        /// The task.
        task_id: TaskId,
        /// Its model.
        model_id: ModelId,
        /// Its priority.
        priority: Priority,
    },
    /// A Lane 1 task was assigned to us; its data was read at that block.
    AssignedToMe {
        /// The task, validated.
        task: Task,
    },
    /// A task was assigned to us but its chain data is unusable.
    AssignedInvalid {
        /// The task.
        task_id: TaskId,
        /// What is wrong with it.
        reason: InvalidIntent,
    },
    /// A task was assigned to another node.
    AssignedToOther {
        /// The task.
        task_id: TaskId,
    },
    /// Lane 0 work arrived (created, or assigned to us): Lane 1 must yield.
    Lane0Arrived {
        /// The Lane 0 task.
        task_id: TaskId,
    },
    /// A Lane 0 task left the open list (assigned, failed or expired).
    Lane0Settled {
        /// The Lane 0 task.
        task_id: TaskId,
    },
    /// A task was started.
    Started {
        /// The task.
        task_id: TaskId,
    },
    /// A result was submitted for a task.
    Submitted {
        /// The task.
        task_id: TaskId,
    },
    /// A task of ours was verified and paid.
    Verified {
        /// The task.
        task_id: TaskId,
        /// What we were paid.
        payment: Balance,
    },
    /// A task's result was rejected.
    Rejected {
        /// The task.
        task_id: TaskId,
    },
    /// A task failed on chain.
    Failed {
        /// The task.
        task_id: TaskId,
        /// Why.
        reason: FailReason,
    },
    /// An open task expired.
    Expired {
        /// The task.
        task_id: TaskId,
    },
    /// A finalized block was fully processed (for progress tracking and
    /// persistence of the last processed block).
    BlockDone {
        /// The block's number.
        number: BlockNumber,
    },
}

/// Why the listener stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListenerError {
    /// Reading the chain failed.
    #[error("chain read failed: {0}")]
    Chain(#[from] ChainError),
    /// The block stream ended (the chain shut down).
    #[error("the chain's block stream ended")]
    StreamEnded,
    /// The executor stopped taking events.
    #[error("the executor is gone")]
    ExecutorGone,
    /// The checkpoint to resume from could not be read.
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    /// The checkpoint records a block the chain has not finalized.
    #[error("the checkpoint records block #{recorded}, past the finalized head #{finalized}")]
    CheckpointAhead {
        /// The recorded block.
        recorded: BlockNumber,
        /// The finalized head.
        finalized: BlockNumber,
    },
}

/// First delay after a lost chain connection (doubling, with jitter).
pub const RECONNECT_BASE: std::time::Duration = std::time::Duration::from_millis(100);
/// Longest delay between reconnection attempts.
pub const RECONNECT_MAX: std::time::Duration = std::time::Duration::from_secs(10);

/// Best blocks a starting node waits, at most, for transactions of an
/// earlier run to land (the real-chain backend's transaction mortality).
pub const POOL_SETTLE_BLOCKS: u32 = 64;
/// Longest wait for a best block while they do (then the pool is asked
/// again; only blocks count towards [`POOL_SETTLE_BLOCKS`]).
const POOL_SETTLE_LOOK: std::time::Duration = std::time::Duration::from_secs(30);

/// The listener; see the [module docs](self).
#[derive(Debug)]
pub struct ChainListener<P> {
    port: P,
    account: AccountId,
    models: Option<HashSet<ModelId>>,
    tx: mpsc::Sender<TaskEvent>,
    metrics: Lane1Metrics,
    /// Lane 0 tasks open on chain (finalized), to report when they settle:
    /// the one record of them, rebuilt from `OpenLane0Tasks` at start.
    lane0_open: HashSet<TaskId>,
    /// Lane 0 tasks seen created in a best block and not yet in a finalized
    /// one, with that best block's number: announced early as a hint.
    hints: HashMap<TaskId, BlockNumber>,
    /// Whether best blocks are followed for Lane 0 hints.
    follow_best: bool,
    /// The last best block seen (a block at or below it is a re-org).
    last_best: Option<BlockNumber>,
    /// Lane 1 tasks assigned to us and not yet ended on chain: whose
    /// failures and rejections slash our account.
    ours: HashSet<TaskId>,
    /// Told the first block followed, once reconciliation is done.
    following: Option<tokio::sync::watch::Sender<Option<BlockNumber>>>,
    /// Delays between attempts after a lost connection.
    reconnects: ExponentialBackoff,
    /// Attempts since the connection was last good.
    lost: u32,
    /// The calls the node sent (to tell its `fail_task` from the
    /// requester's).
    sent: Option<crate::submitter::SentCalls>,
    /// Where an unreadable chain is reported.
    admission: Option<crate::admission::Admission>,
}

/// Every this many finalized blocks the listener compares the chain's
/// assigned Lane 1 tasks with what it has heard of.
pub const RECONCILE_EVERY: BlockNumber = 10;

impl<P: ChainPort> ChainListener<P> {
    /// A listener for `account`'s tasks, sending to `tx`. With `models`, only
    /// candidates for those models are reported.
    pub fn new(
        port: P,
        account: AccountId,
        models: Option<HashSet<ModelId>>,
        tx: mpsc::Sender<TaskEvent>,
        metrics: Lane1Metrics,
    ) -> Self {
        ChainListener {
            port,
            account,
            models,
            tx,
            metrics,
            lane0_open: HashSet::new(),
            hints: HashMap::new(),
            follow_best: true,
            last_best: None,
            ours: HashSet::new(),
            following: None,
            reconnects: backoff(RECONNECT_BASE, RECONNECT_MAX),
            lost: 0,
            sent: None,
            admission: None,
        }
    }

    /// Reports through `admission` when the chain cannot be read (the node
    /// is not ready while a block does not decode).
    pub fn admission(mut self, admission: crate::admission::Admission) -> Self {
        self.admission = Some(admission);
        self
    }

    /// Tells our own `fail_task` from the requester's by this record of the
    /// calls the node sent (without it, every `ExecutorFailed` of our tasks
    /// is counted as our own).
    pub fn sent_calls(mut self, sent: crate::submitter::SentCalls) -> Self {
        self.sent = Some(sent);
        self
    }

    /// Follows best blocks for Lane 0 hints (the default), or not.
    pub fn lane0_hints(mut self, on: bool) -> Self {
        self.follow_best = on;
        self
    }

    /// Publishes, once reconciliation is done, the first block the listener
    /// follows (so callers can wait until no event can be missed).
    pub fn report_following(mut self, tx: tokio::sync::watch::Sender<Option<BlockNumber>>) -> Self {
        self.following = Some(tx);
        self
    }

    async fn send(&self, event: TaskEvent) -> Result<(), ListenerError> {
        self.tx
            .send(event)
            .await
            .map_err(|_| ListenerError::ExecutorGone)
    }

    /// Hands every Lane 1 task still in our hands on chain to the executor
    /// (and announces the Lane 0 work that is open).
    pub async fn reconcile(&mut self) -> Result<BlockNumber, ListenerError> {
        let head = self.port.finalized_head().await?;
        self.reconcile_at(head).await
    }

    async fn reconcile_at(&mut self, head: BlockRef) -> Result<BlockNumber, ListenerError> {
        self.lane0_at(head).await?;
        for task_id in self.port.assigned_lane1_tasks(head.hash).await? {
            let Some(intent) = self.port.task(head.hash, task_id).await? else {
                continue;
            };
            if intent.executor == Some(self.account) && intent.status.is_in_hand() {
                tracing::info!(%task_id, status = ?intent.status, "resuming task assigned to us");
                self.ours.insert(task_id);
                self.send(assigned(task_id, &intent)).await?;
            }
        }
        Ok(head.number)
    }

    /// Reports every Lane 1 task open at block `head` for a model we serve
    /// as a candidate, as its `TaskCreated` event would have: those created
    /// before the listener followed the chain would otherwise never be seen.
    pub async fn report_open_candidates(&self, head: BlockRef) -> Result<(), ListenerError> {
        for task_id in self.port.open_lane1_tasks(head.hash).await? {
            let Some(intent) = self.port.task(head.hash, task_id).await? else {
                continue;
            };
            if let Ok(model_id) = ModelId::from_bytes(&intent.model_requirements)
                && self.serves(&model_id)
            {
                self.send(TaskEvent::Created {
                    task_id,
                    model_id,
                    priority: intent.priority,
                })
                .await?;
            }
        }
        Ok(())
    }

    /// Follows finalized blocks after reconciling, from `from` (a block to
    /// backfill from) or from the block after the current head. A lost
    /// connection is waited out with backoff and the stream reopened at the
    /// next unhandled block, so nothing is skipped. Runs until the stream
    /// ends, a read fails for another reason, or the executor goes away.
    pub async fn run(mut self, from: Option<BlockNumber>) -> Result<(), ListenerError> {
        // Reconciled at one head; the stream starts right after it.
        let head = loop {
            let step = async {
                self.settle_own_pool().await?;
                let head = self.port.finalized_head().await?;
                self.reconcile_at(head).await?;
                if from.is_none() {
                    // Without a backfill, candidates created before now have
                    // no event left to be seen by; with one, their events
                    // are replayed.
                    self.report_open_candidates(head).await?;
                }
                Ok::<_, ListenerError>(head.number)
            };
            match step.await {
                Ok(head) => break head,
                Err(ListenerError::Chain(ChainError::Connection(e))) => {
                    self.wait_out(&e.to_string()).await;
                }
                Err(e) => return Err(e),
            }
        };
        if let Some(from) = from
            && from > head + 1
        {
            // A recorded block the chain has not finalized: a checkpoint of
            // another chain, or one written ahead of finality. Following
            // from it would skip blocks.
            return Err(ListenerError::CheckpointAhead {
                recorded: from - 1,
                finalized: head,
            });
        }
        let mut next = from.unwrap_or(head + 1);
        if let Some(tx) = self.following.take() {
            tx.send_replace(Some(next));
        }
        let mut best: Option<crate::chain::BlockStream> = None;
        loop {
            let mut blocks = self.port.finalized_blocks(Some(next));
            loop {
                if best.is_none() && self.follow_best {
                    best = Some(self.port.best_blocks(None));
                }
                tokio::select! {
                    biased;
                    block = blocks.next() => {
                        let block = match block {
                            Some(Ok(b)) => b,
                            Some(Err(ChainError::Connection(e))) => {
                                self.wait_out(&e.to_string()).await;
                                break;
                            }
                            // A block whose task-market events the node cannot
                            // read (a runtime upgrade it does not know): no
                            // progress past it — skipping it would skip our
                            // work, and the hook would slash it. Loudly: not
                            // ready, counted, tried again on a backoff.
                            Some(Err(e @ ChainError::Decode { .. })) => {
                                self.undecodable(next, &e).await;
                                break;
                            }
                            // Blocks the chain node no longer holds (it
                            // pruned their state while the node was away):
                            // their events are gone from it for good, so
                            // retrying cannot help. Resumed at the
                            // finalized head from the chain's state.
                            Some(Err(ChainError::Pruned { block })) => {
                                match self.skip_pruned(block).await {
                                    Ok(head) => next = head + 1,
                                    Err(ListenerError::Chain(ChainError::Connection(e))) => {
                                        self.wait_out(&e.to_string()).await;
                                    }
                                    Err(e) => return Err(e),
                                }
                                break;
                            }
                            Some(Err(e)) => return Err(e.into()),
                            // Ended without an error: the chain shut down.
                            None if self.lost == 0 => return Err(ListenerError::StreamEnded),
                            None => break,
                        };
                        if self.lost > 0 {
                            self.reconnects = backoff(RECONNECT_BASE, RECONNECT_MAX);
                            self.lost = 0;
                        }
                        if let Some(admission) = &self.admission {
                            admission.set_chain_unreadable(None);
                        }
                        // The block's reads may meet a lost connection as
                        // well as the stream may: waited out the same way,
                        // and the block handled again from the start (it is
                        // not marked handled until it is whole).
                        match self.handle_block(&block).await {
                            Ok(()) => {}
                            Err(ListenerError::Chain(ChainError::Connection(e))) => {
                                self.wait_out(&e.to_string()).await;
                                break;
                            }
                            Err(e) => return Err(e),
                        }
                        self.handled(block.number).await?;
                        next = block.number + 1;
                    }
                    hint = async { best.as_mut().expect("opened above").next().await }, if best.is_some() => match hint {
                        Some(Ok(block)) => {
                            self.metrics.best_block.with(&[]).set(i64::from(block.number));
                            match self.on_best_block(&block, next).await {
                                Ok(()) => {}
                                // Hints are only hints: reopen the stream later.
                                Err(ListenerError::Chain(ChainError::Connection(_))) => best = None,
                                Err(e) => return Err(e),
                            }
                        }
                        // Hints are only hints: reopen the stream later.
                        Some(Err(_)) | None => best = None,
                    },
                }
            }
        }
    }

    /// Skips the blocks from `from` to the finalized head, whose state the
    /// chain node has pruned, and resumes from the chain's state at the
    /// head: Lane 0 work settled meanwhile is announced settled, the Lane 0
    /// work open now announced, every task assigned to us that we did not
    /// know of handed over, the open Lane 1 tasks reported as candidates;
    /// the head is then marked handled. What only the skipped events said
    /// (a result verified, a task of ours failed) is not seen; the status
    /// guard reads a task's status before any call for it. Returns the head.
    async fn skip_pruned(&mut self, from: BlockNumber) -> Result<BlockNumber, ListenerError> {
        let head = self.port.finalized_head().await?;
        tracing::error!(
            from,
            to = head.number,
            "the chain node has pruned these blocks' state: their events are skipped, and \
             the node resumes from the chain's state at the finalized head (run the chain \
             node with more state kept, or an archive node, to backfill long absences)"
        );
        self.lane0_at(head).await?;
        self.find_lost(head).await?;
        self.report_open_candidates(head).await?;
        let skipped = head.number.saturating_add(1).saturating_sub(from);
        self.metrics
            .skipped_blocks
            .with(&[])
            .add(u64::from(skipped));
        self.handled(head.number).await?;
        Ok(head.number)
    }

    /// Lane 0 work as the chain has it at `head`: what we knew open and is
    /// no longer is announced settled, what is open and new to us
    /// announced (Lane 1 waits until it is settled).
    async fn lane0_at(&mut self, head: BlockRef) -> Result<(), ListenerError> {
        let open: HashSet<TaskId> = self
            .port
            .open_lane0_tasks(head.hash)
            .await?
            .into_iter()
            .collect();
        let settled: Vec<TaskId> = self.lane0_open.difference(&open).copied().collect();
        for task_id in settled {
            self.lane0_open.remove(&task_id);
            self.send(TaskEvent::Lane0Settled { task_id }).await?;
        }
        for task_id in open {
            if self.lane0_open.insert(task_id) {
                self.send(TaskEvent::Lane0Arrived { task_id }).await?;
            }
        }
        Ok(())
    }

    /// Marks finalized block `number` handled (the executor records it).
    async fn handled(&mut self, number: BlockNumber) -> Result<(), ListenerError> {
        self.metrics.handled_block.with(&[]).set(i64::from(number));
        self.send(TaskEvent::BlockDone { number }).await
    }

    /// A finalized block's events, then its hints' and reconciliation's
    /// reads.
    async fn handle_block(&mut self, block: &crate::chain::Block) -> Result<(), ListenerError> {
        for record in block.events.iter() {
            self.metrics.chain_events.with(&[record.event.name()]).inc();
            self.on_event(block.hash, &record.event).await?;
        }
        self.drop_stale_hints(block.number).await?;
        if block.number.is_multiple_of(RECONCILE_EVERY) {
            self.find_lost(block.block_ref()).await?;
        }
        Ok(())
    }

    /// Reconciliation at finality: a task the chain has assigned to us
    /// whose `TaskAssigned` the node never heard of (an event lost, a
    /// decoding gap) is picked up now, not left to the chain's preemption
    /// hook, which would slash it at the next Lane 0 burst.
    async fn find_lost(&mut self, at: BlockRef) -> Result<(), ListenerError> {
        for task_id in self.port.assigned_lane1_tasks(at.hash).await? {
            if self.ours.contains(&task_id) {
                continue;
            }
            let Some(intent) = self.port.task(at.hash, task_id).await? else {
                continue;
            };
            if intent.executor == Some(self.account) && intent.status.is_in_hand() {
                tracing::warn!(%task_id, block = at.number, status = ?intent.status, "assigned to us without our hearing of it; picking it up");
                self.ours.insert(task_id);
                self.send(assigned(task_id, &intent)).await?;
            }
        }
        Ok(())
    }

    /// Lane 0 work seen in a best block, before finality: announced at once
    /// so that Lane 1 yields the GPU without waiting for finality. Only
    /// reversible actions follow (runs cancelled, starts held); what sends
    /// a transaction waits for finalized state. A best block the finalized
    /// stream has already delivered (`next` is the first it has not) says
    /// nothing new: its Lane 0 work may be settled since, and a hint from it
    /// would hold Lane 1 until a later block — which an idle chain may never
    /// make.
    async fn on_best_block(
        &mut self,
        block: &crate::chain::Block,
        next: BlockNumber,
    ) -> Result<(), ListenerError> {
        if self.last_best.is_some_and(|last| block.number <= last) {
            // A re-org: the best chain now goes through this block, and
            // the blocks at its height and above that gave hints are gone.
            // Their Lane 0 work is withdrawn (and announced again if the
            // new branch holds it too).
            self.withdraw_hints(|at| at >= block.number).await?;
        }
        self.last_best = Some(block.number);
        if block.number < next {
            return Ok(());
        }
        for record in block.events.iter() {
            if let MarketEvent::TaskCreated {
                task_id,
                lane: Lane::Lane0,
                ..
            } = record.event
                && !self.lane0_open.contains(&task_id)
                && !self.hints.contains_key(&task_id)
            {
                tracing::debug!(%task_id, block = block.number, "lane 0 work in a best block");
                self.hints.insert(task_id, block.number);
                self.send(TaskEvent::Lane0Arrived { task_id }).await?;
            }
        }
        Ok(())
    }

    /// Settles hints from best blocks up to `finalized` that no finalized
    /// block confirmed (a reorganisation dropped them).
    async fn drop_stale_hints(&mut self, finalized: BlockNumber) -> Result<(), ListenerError> {
        self.withdraw_hints(|at| at <= finalized).await
    }

    /// Withdraws the hints from best blocks that `gone` selects (by their
    /// block's number): their Lane 0 work is settled for the executor.
    async fn withdraw_hints(
        &mut self,
        gone: impl Fn(BlockNumber) -> bool,
    ) -> Result<(), ListenerError> {
        let stale: Vec<TaskId> = self
            .hints
            .iter()
            .filter(|(_, at)| gone(**at))
            .map(|(id, _)| *id)
            .collect();
        for task_id in stale {
            self.hints.remove(&task_id);
            tracing::debug!(%task_id, "lane 0 hint withdrawn: its block is not on the chain");
            self.send(TaskEvent::Lane0Settled { task_id }).await?;
        }
        Ok(())
    }

    /// Waits until no transaction of our account waits in the pool: what a
    /// previous run of the node (killed, or crashed) sent and did not see
    /// land is in a block before this run decides what to send — a
    /// `start_task` still pooled is invisible in every block, and deciding
    /// without it would send it twice. Each best block is a new look; after
    /// [`POOL_SETTLE_BLOCKS`] of them (a real transaction's mortality) the
    /// rest cannot land and the node goes on.
    async fn settle_own_pool(&mut self) -> Result<(), ListenerError> {
        let mut best = self.port.best_blocks(None);
        // Counted in blocks, as mortality is: a chain that builds none for
        // a while only makes the wait longer (the pool is asked again).
        let mut blocks = 0;
        let mut told = false;
        while blocks <= POOL_SETTLE_BLOCKS {
            // The pool's view first: a block that lands between the two
            // reads can only make the chain's count catch up.
            let next = self.port.account_nonce(self.account).await?;
            let head = self.port.best_head().await?;
            let included = self.port.account_nonce_at(head.hash, self.account).await?;
            if next <= included {
                return Ok(());
            }
            if !told {
                told = true;
                tracing::info!(
                    pending = next - included,
                    "waiting for transactions of an earlier run to land before acting"
                );
            }
            match tokio::time::timeout(POOL_SETTLE_LOOK, best.next()).await {
                Ok(Some(Ok(_))) => blocks += 1,
                Err(_) => {}
                Ok(Some(Err(e))) => return Err(e.into()),
                Ok(None) => return Err(ListenerError::StreamEnded),
            }
        }
        tracing::warn!("transactions of an earlier run did not land; going on");
        Ok(())
    }

    /// Sleeps before the next attempt after a lost connection.
    /// Block `number` cannot be read: counted, reported (not ready), and
    /// tried again after a pause that grows.
    async fn undecodable(&mut self, number: BlockNumber, error: &ChainError) {
        self.metrics.chain_decode_errors.with(&[]).inc();
        let why = format!("block {number}: {error}");
        tracing::error!(block = number, %error, "chain data the node cannot decode: not going past this block");
        if let Some(admission) = &self.admission {
            admission.set_chain_unreadable(Some(why));
        }
        let sleep = self.reconnects.next_backoff();
        self.lost += 1;
        sleep.await;
    }

    async fn wait_out(&mut self, error: &str) {
        let sleep = self.reconnects.next_backoff();
        self.lost += 1;
        let delay = sleep.deadline() - tokio::time::Instant::now();
        self.metrics.chain_reconnects.with(&[]).inc();
        tracing::warn!(error, ?delay, "chain connection lost; retrying");
        sleep.await;
    }

    async fn on_event(&mut self, at: BlockHash, event: &MarketEvent) -> Result<(), ListenerError> {
        let out = match event {
            MarketEvent::TaskCreated {
                task_id,
                lane: Lane::Lane0,
                ..
            } => {
                let hinted = self.hints.remove(task_id).is_some();
                // Announced already if a best block showed it first.
                (self.lane0_open.insert(*task_id) && !hinted)
                    .then_some(TaskEvent::Lane0Arrived { task_id: *task_id })
            }
            MarketEvent::TaskCreated {
                task_id,
                lane: Lane::Lane1,
                priority,
                model_requirements,
                ..
            } => match ModelId::from_bytes(model_requirements) {
                Ok(model_id) if self.serves(&model_id) => Some(TaskEvent::Created {
                    task_id: *task_id,
                    model_id,
                    priority: *priority,
                }),
                _ => None,
            },
            MarketEvent::TaskAssigned { task_id, executor } => {
                if self.lane0_open.remove(task_id) {
                    self.send(TaskEvent::Lane0Settled { task_id: *task_id })
                        .await?;
                    None
                } else if *executor == self.account {
                    match self.port.task(at, *task_id).await? {
                        Some(intent) if intent.lane == Lane::Lane1 => {
                            self.ours.insert(*task_id);
                            Some(assigned(*task_id, &intent))
                        }
                        // A Lane 0 task for this node's Lane 0 side: it is
                        // assigned, so no longer open; Lane 1 need not wait.
                        Some(_) => None,
                        None => Some(TaskEvent::AssignedInvalid {
                            task_id: *task_id,
                            reason: InvalidIntent::Missing,
                        }),
                    }
                } else {
                    Some(TaskEvent::AssignedToOther { task_id: *task_id })
                }
            }
            MarketEvent::TaskStarted { task_id, .. } => {
                Some(TaskEvent::Started { task_id: *task_id })
            }
            MarketEvent::TaskSubmitted { task_id, .. } => {
                Some(TaskEvent::Submitted { task_id: *task_id })
            }
            MarketEvent::TaskVerified {
                task_id,
                executor,
                payment,
                ..
            } if *executor == self.account => {
                self.ours.remove(task_id);
                self.metrics
                    .payments
                    .with(&[])
                    .add(u64::try_from(*payment).unwrap_or(u64::MAX));
                Some(TaskEvent::Verified {
                    task_id: *task_id,
                    payment: *payment,
                })
            }
            MarketEvent::TaskVerified { .. } => None,
            MarketEvent::TaskRejected { task_id, .. } => {
                if self.ours.remove(task_id) {
                    // A rejection slashes the executor (a low score, or no
                    // quorum by the verification deadline).
                    self.metrics.slashes.with(&["rejected"]).inc();
                }
                Some(TaskEvent::Rejected { task_id: *task_id })
            }
            MarketEvent::TaskFailed { task_id, reason } => {
                if self.ours.remove(task_id) {
                    // The pallet slashes the executor for these two: the
                    // hook's preemption (the node never sends it), and the
                    // node's own ExecutorFailed.
                    let cause = match reason {
                        FailReason::Preempted => Some("preemption_hook"),
                        // The requester may fail a running task itself,
                        // and the pallet slashes the executor for it: not
                        // a fault of ours.
                        FailReason::ExecutorFailed
                            if self
                                .sent
                                .as_ref()
                                .is_some_and(|sent| !sent.sent_fail(*task_id)) =>
                        {
                            Some("requester")
                        }
                        FailReason::ExecutorFailed => Some("own_fail_task"),
                        _ => None,
                    };
                    if let Some(cause) = cause {
                        self.metrics.slashes.with(&[cause]).inc();
                    }
                }
                if self.lane0_open.remove(task_id) {
                    self.send(TaskEvent::Lane0Settled { task_id: *task_id })
                        .await?;
                }
                Some(TaskEvent::Failed {
                    task_id: *task_id,
                    reason: *reason,
                })
            }
            MarketEvent::TaskExpired { task_id } => {
                self.ours.remove(task_id);
                if self.lane0_open.remove(task_id) {
                    self.send(TaskEvent::Lane0Settled { task_id: *task_id })
                        .await?;
                }
                Some(TaskEvent::Expired { task_id: *task_id })
            }
            _ => None,
        };
        match out {
            Some(e) => self.send(e).await,
            None => Ok(()),
        }
    }

    fn serves(&self, model: &ModelId) -> bool {
        self.models.as_ref().is_none_or(|m| m.contains(model))
    }
}

/// The event for a task assigned to us, with its chain data validated.
fn assigned(task_id: TaskId, intent: &TaskIntent) -> TaskEvent {
    match task_from_intent(intent) {
        Ok(task) => TaskEvent::AssignedToMe { task },
        Err(reason) => TaskEvent::AssignedInvalid { task_id, reason },
    }
}

/// Why a task assigned to us cannot be run as it is on chain: the
/// requester's fault (`InvalidInput`), never ours.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidIntent {
    /// Its model id is not one.
    #[error("model_requirements: {0}")]
    Model(crate::task::ModelIdError),
    /// Its input is not a CID.
    #[error("input_cid: {0}")]
    InputCid(crate::task::CidError),
    /// `Tasks(id)` holds nothing at the assignment's block.
    #[error("Tasks(id) is empty at the assignment's block")]
    Missing,
}

/// Validates a `Tasks(id)` value into a [`Task`].
pub fn task_from_intent(intent: &TaskIntent) -> Result<Task, InvalidIntent> {
    let model = ModelId::from_bytes(&intent.model_requirements).map_err(InvalidIntent::Model)?;
    let input_cid = Cid::from_bytes(&intent.input_cid).map_err(InvalidIntent::InputCid)?;
    Ok(Task {
        id: intent.id,
        lane: intent.lane,
        priority: intent.priority,
        model,
        input_cid,
        deadline: intent.deadline,
        compute_budget: intent.compute_budget,
        escrow: intent.escrow,
        requester: intent.requester,
    })
}
