//! The timeout's error.

use std::fmt;
use std::time::Duration;

use crate::task::TaskId;

/// A task's execution took longer than its limit; the sidecar task was asked
/// to stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elapsed {
    /// The task.
    pub task_id: TaskId,
    /// The limit that passed.
    pub after: Duration,
    /// Whether the sidecar confirmed the task stopped.
    pub sidecar_confirmed: bool,
}

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task {} timed out after {:?}", self.task_id, self.after)?;
        if !self.sidecar_confirmed {
            f.write_str(" (the sidecar did not confirm it stopped)")?;
        }
        Ok(())
    }
}

impl std::error::Error for Elapsed {}
