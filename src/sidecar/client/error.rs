//! Why a sidecar call failed, and how that is classified.

use std::error::Error as StdError;
use std::time::Duration;

use tonic::Code;

use super::SidecarStatus;
use crate::layer::cause;
use crate::layer::retry::ErrorClass;
use crate::task::{CidError, TaskId};

/// Why a sidecar call failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SidecarError {
    /// The sidecar ran the task and reports it failed (body-level failure).
    #[error("task {task_id}: model failed: {message}")]
    Model {
        /// The task.
        task_id: TaskId,
        /// The sidecar's `error_message`.
        message: String,
    },
    /// The sidecar reported success with an output CID that is not a CID.
    #[error("task {task_id}: sidecar returned an invalid output CID: {reason}")]
    InvalidOutput {
        /// The task.
        task_id: TaskId,
        /// Why the CID was rejected.
        reason: CidError,
    },
    /// Our deadline for the call passed.
    #[error("task {task_id}: no answer from the sidecar within {after:?}")]
    TimedOut {
        /// The task.
        task_id: TaskId,
        /// The deadline.
        after: Duration,
    },
    /// The call failed with a gRPC status.
    #[error("sidecar call failed: {code:?}: {message}")]
    Rpc {
        /// The task, if the call was about one.
        task_id: Option<TaskId>,
        /// The status code.
        code: Code,
        /// The status message.
        message: String,
    },
    /// The connection to the sidecar failed or broke.
    #[error("sidecar connection failed: {message}")]
    Transport {
        /// The task, if the call was about one.
        task_id: Option<TaskId>,
        /// What broke.
        message: String,
    },
    /// The sidecar does not know the task.
    #[error("sidecar does not know task {task_id}")]
    UnknownTask {
        /// The task.
        task_id: TaskId,
    },
    /// The sidecar's status report does not make sense.
    #[error("task {task_id}: sidecar sent a bad status report: {reason}")]
    BadReport {
        /// The task.
        task_id: TaskId,
        /// What was wrong.
        reason: String,
    },
    /// The sidecar refused to cancel a task that is still running.
    #[error("task {task_id}: sidecar refused to cancel: {message}")]
    CancelRefused {
        /// The task.
        task_id: TaskId,
        /// The sidecar's `error_message`.
        message: String,
    },
    /// The sidecar did not report the task stopped within the wait.
    #[error("task {task_id}: not confirmed cancelled within {waited:?} (last status {last})")]
    CancelUnconfirmed {
        /// The task.
        task_id: TaskId,
        /// How long we waited.
        waited: Duration,
        /// The last status seen.
        last: SidecarStatus,
    },
}

/// How a sidecar says, in a body failure's `error_message`, that the task
/// itself was at fault — its model, input or parameters — rather than the
/// model failing on a valid input. The reference sidecar begins such
/// messages with one of these; the interface has no error codes, so a
/// sidecar that does not is read as a model failure.
pub const TASK_FAULT_PREFIXES: &[&str] = &[
    "unknown model",
    "unsupported lane",
    "invalid input",
    "invalid parameters",
    "not found:",
];

impl SidecarError {
    /// True for a body failure that blames the task (its model, input or
    /// parameters: see [`TASK_FAULT_PREFIXES`]).
    pub fn blames_task(&self) -> bool {
        match self {
            SidecarError::Model { message, .. } => TASK_FAULT_PREFIXES
                .iter()
                .any(|prefix| message.starts_with(prefix)),
            _ => false,
        }
    }

    /// Whether trying again may help.
    pub fn class(&self) -> ErrorClass {
        match self {
            SidecarError::Rpc {
                code: Code::Unavailable | Code::ResourceExhausted | Code::Aborted,
                ..
            } => ErrorClass::Retryable,
            SidecarError::TimedOut { .. } | SidecarError::Transport { .. } => ErrorClass::Retryable,
            _ => ErrorClass::Permanent,
        }
    }

    /// True when [`class`](Self::class) is `Retryable`.
    pub fn is_retryable(&self) -> bool {
        self.class() == ErrorClass::Retryable
    }

    /// The task the error is about, if any.
    pub fn task_id(&self) -> Option<TaskId> {
        match self {
            SidecarError::Model { task_id, .. }
            | SidecarError::InvalidOutput { task_id, .. }
            | SidecarError::TimedOut { task_id, .. }
            | SidecarError::UnknownTask { task_id }
            | SidecarError::BadReport { task_id, .. }
            | SidecarError::CancelRefused { task_id, .. }
            | SidecarError::CancelUnconfirmed { task_id, .. } => Some(*task_id),
            SidecarError::Rpc { task_id, .. } | SidecarError::Transport { task_id, .. } => *task_id,
        }
    }

    /// Maps a gRPC status. A status caused by a broken or refused connection
    /// becomes [`Transport`](Self::Transport).
    pub(super) fn from_status(task_id: Option<TaskId>, status: tonic::Status) -> Self {
        if let Some(message) = transport_cause(&status) {
            return SidecarError::Transport { task_id, message };
        }
        match (status.code(), task_id) {
            (Code::NotFound, Some(task_id)) => SidecarError::UnknownTask { task_id },
            (code, _) => SidecarError::Rpc {
                task_id,
                code,
                message: status.message().to_owned(),
            },
        }
    }

    pub(super) fn from_transport(task_id: Option<TaskId>, e: &tonic::transport::Error) -> Self {
        SidecarError::Transport {
            task_id,
            message: error_chain(e),
        }
    }
}

/// The message of a transport-level cause behind a status (a connection
/// refused, reset or closed), if there is one.
fn transport_cause(status: &tonic::Status) -> Option<String> {
    let source = status.source()?;
    let transport = cause::<tonic::transport::Error>(source).is_some()
        || cause::<std::io::Error>(source).is_some()
        || status.code() == Code::Unavailable;
    transport.then(|| error_chain(source))
}

pub(super) fn error_chain(e: &dyn StdError) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cause = c.source();
    }
    out
}
