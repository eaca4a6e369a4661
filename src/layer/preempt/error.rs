//! The preempt layer's error.

use std::fmt;

use crate::task::TaskId;

/// Why a task was preempted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PreemptReason {
    /// Lane 0 work arrived on this node.
    Lane0,
    /// The chain failed the task (`TaskFailed`), preempting it or otherwise.
    ChainFailed,
    /// The chain expired the task.
    ChainExpired,
    /// The executor is shutting down.
    Shutdown,
    /// The chain refused the task's `start_task` (the run had begun
    /// optimistically, before the start was in a block).
    StartRefused,
    /// Asked for by the node.
    Requested,
}

impl PreemptReason {
    /// A short description, sent to the sidecar as the cancel reason.
    pub const fn as_str(self) -> &'static str {
        match self {
            PreemptReason::Lane0 => "preempted by lane 0 work",
            PreemptReason::ChainFailed => "task failed on chain",
            PreemptReason::ChainExpired => "task expired on chain",
            PreemptReason::Shutdown => "executor shutting down",
            PreemptReason::StartRefused => "the chain refused the task's start",
            PreemptReason::Requested => "preempted on request",
        }
    }
}

/// A task was stopped by a preemption: its future was dropped and its
/// sidecar task cancelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preempted {
    /// The task.
    pub task_id: TaskId,
    /// Why.
    pub reason: PreemptReason,
    /// Whether the sidecar confirmed the task stopped.
    pub sidecar_confirmed: bool,
}

impl fmt::Display for Preempted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task {} {}", self.task_id, self.reason.as_str())?;
        if !self.sidecar_confirmed {
            f.write_str(" (the sidecar did not confirm it stopped)")?;
        }
        Ok(())
    }
}

impl std::error::Error for Preempted {}
