//! The handles a node's parts share: one bundle, cloned into the stack,
//! the lifecycle and the executor, so that each part sees the same board,
//! record of sent calls, admission and metrics as every other.

use crate::admission::Admission;
use crate::board::{RunAttempts, TaskBoard};
use crate::layer::preempt::Preemptor;
use crate::submitter::SentCalls;
use crate::telemetry::metrics::Lane1Metrics;

/// What the parts of one node share. Clones share the same handles.
#[derive(Clone, Debug)]
pub struct Handles {
    /// Where each task's state is published.
    pub board: TaskBoard,
    /// Cancels runs (the execute stack's preempt layer listens to it).
    pub preemptor: Preemptor,
    /// Where metrics go.
    pub metrics: Lane1Metrics,
    /// The record of calls sent for the node's account: every submit
    /// stack of the account shares it, so nothing is sent twice between
    /// them.
    pub sent: SentCalls,
    /// What is checked before a task is started, the sidecar's health, and
    /// the node's readiness.
    pub admission: Admission,
    /// The run attempts of every task (each new run goes out under the next
    /// run id).
    pub attempts: RunAttempts,
}

impl Handles {
    /// Fresh handles around the node's metrics and admission.
    pub fn new(metrics: Lane1Metrics, admission: Admission) -> Self {
        Handles {
            board: TaskBoard::default(),
            preemptor: Preemptor::new(),
            metrics,
            sent: SentCalls::default(),
            admission,
            attempts: RunAttempts::default(),
        }
    }
}
