//! The record of sent calls: what the status guard has sent for each task
//! (pooled, in a best block, landed, refused), and the calls in best blocks
//! not yet final.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use crate::chain::{BlockHash, BlockRef, MarketCall, MarketError};
use crate::task::{BlockNumber, TaskId, TaskStatus};

/// The kinds of call the guard keeps a record of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Kind {
    Start,
    Submit,
    Fail,
}

impl Kind {
    pub(super) fn of(call: &MarketCall) -> Option<(TaskId, Kind)> {
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
pub(super) enum Sent {
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
    pub(super) fn lock(&self) -> MutexGuard<'_, Records> {
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
    pub(super) fn has_result(&self, task_id: TaskId) -> bool {
        self.lock()
            .get(&(task_id, Kind::Submit))
            .is_some_and(|s| !matches!(*s.borrow(), Sent::Refused { .. }))
    }

    /// Claims the right to send: `Ok` with the record's sender if nothing
    /// was sent yet for this task and kind, or the record of the earlier one.
    pub(super) fn claim(
        &self,
        key: (TaskId, Kind),
    ) -> Result<watch::Sender<Sent>, watch::Receiver<Sent>> {
        let mut calls = self.lock();
        if let Some(sent) = calls.get(&key) {
            return Err(sent.subscribe());
        }
        let (tx, _) = watch::channel(Sent::InFlight);
        calls.insert(key, tx.clone());
        Ok(tx)
    }

    /// Gives the claim back: nothing reached a block.
    pub(super) fn release(&self, key: (TaskId, Kind)) {
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
