//! [`ExecutionRunner`]: the sidecar as the original plan named it — run one
//! task, ask for its progress — built on the [`Execute`](crate::sidecar::client::Execute)
//! service with a timeout.

use std::time::Duration;

use tower::ServiceExt;

use crate::sidecar::client::{
    ExecuteRequest, ExecutionError, ExecutionResult, SidecarClient, TaskProgress,
};
use crate::task::{Task, TaskId};

/// Runs tasks on the sidecar.
#[derive(Clone, Debug)]
pub struct ExecutionRunner {
    sidecar: SidecarClient,
    timeout: Duration,
}

impl ExecutionRunner {
    /// A runner over `sidecar` that gives each task at most `timeout`.
    pub fn new(sidecar: SidecarClient, timeout: Duration) -> Self {
        ExecutionRunner { sidecar, timeout }
    }

    /// Runs a task to its end.
    pub async fn execute(&self, task: &Task) -> Result<ExecutionResult, ExecutionError> {
        self.sidecar
            .execute()
            .oneshot(ExecuteRequest::for_task(task, Some(self.timeout)))
            .await
    }

    /// A task's progress on the sidecar.
    pub async fn poll_status(&self, task_id: TaskId) -> Result<TaskProgress, ExecutionError> {
        self.sidecar.status(task_id).await
    }
}
